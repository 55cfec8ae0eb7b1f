//! The SIGSEGV/SIGBUS handler.
//!
//! A fault inside the pool is ufence's: it is attributed (KFENCE's rules: a guard-page fault
//! belongs to the nearest allocated neighbour, a fault on a freed object's page is a
//! use-after-free, anything else in the pool is an invalid access), reported once per object,
//! and then either the page is made accessible so the program goes on (`on_error=continue`) or
//! the process aborts. Every other fault goes to whatever handler was installed before ours, or
//! gets the default action, exactly as if ufence were not there.

use crate::detector::{self, is_freed};
use crate::pool::{Place, Pool, ALLOCATED};
use crate::report::{Error, Kind};
use crate::{stack, sys};
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering::Acquire;

struct Previous(UnsafeCell<[libc::sigaction; 2]>);
// SAFETY: written once in `install` before any fault can reach the handler (the pool is not
// published yet), read-only afterwards.
unsafe impl Sync for Previous {}
// SAFETY: an all-zero sigaction is SIG_DFL with no flags, a valid value.
static PREVIOUS: Previous = Previous(UnsafeCell::new(unsafe { core::mem::zeroed() }));

const SIGNALS: [i32; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// Installs the handler for SIGSEGV and SIGBUS, remembering what was there before.
pub fn install() -> bool {
    sys::ensure_altstack();
    for (n, sig) in SIGNALS.into_iter().enumerate() {
        let Some(old) = sys::install_handler(sig, on_fault) else {
            return false;
        };
        // SAFETY: see `Previous`.
        unsafe { (*PREVIOUS.0.get())[n] = old };
    }
    true
}

/// Puts ufence's handler back if the program (or a runtime such as Rust's std, which installs
/// its stack-overflow handler without looking at what is there) replaced it after ufence
/// started; the replacement becomes the handler ufence chains to. Called on the sampled
/// allocation path, so a pool object never exists without ufence's handler in front.
pub fn ensure_installed() {
    for (n, sig) in SIGNALS.into_iter().enumerate() {
        let Some(cur) = sys::current_handler(sig) else {
            continue;
        };
        if cur.sa_sigaction == on_fault as *const () as usize {
            continue;
        }
        if let Some(old) = sys::install_handler(sig, on_fault) {
            if old.sa_sigaction != on_fault as *const () as usize {
                // SAFETY: see `Previous`: a racing fault may see the old or the new value,
                // both valid handlers to chain to.
                unsafe { (*PREVIOUS.0.get())[n] = old };
            }
        }
    }
}

extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let saved_errno = sys::errno();
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let handled = match detector::pool() {
        Some(pool) if pool.contains(addr) => handle(pool, addr, ctx),
        _ => false,
    };
    if !handled {
        chain(sig, info, ctx);
    }
    sys::set_errno(saved_errno);
}

/// The faulting instruction and whether the access was a write, from the CPU context.
fn fault_context(ctx: *mut libc::c_void) -> (usize, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: for SA_SIGINFO handlers the third argument is a ucontext_t.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        // Bit 1 of the page-fault error code: the access was a write.
        let write = uc.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0;
        (pc, write)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ctx;
        (0, false)
    }
}

fn handle(pool: &Pool, addr: usize, ctx: *mut libc::c_void) -> bool {
    let (pc, is_write) = fault_context(ctx);
    let (kind, object) = match pool.place(addr) {
        Place::Object(i) => {
            let st = pool.slot(i).state.load(Acquire);
            if is_freed(st) {
                (Kind::UseAfterFree, Some(i))
            } else if st == ALLOCATED {
                // Raced with the allocation that is opening this page: just retry the access.
                return true;
            } else {
                (Kind::Invalid, None)
            }
        }
        Place::Guard { left, right } => match nearest_allocated(pool, addr, left, right) {
            Some(i) => (Kind::OutOfBounds, Some(i)),
            None => (Kind::Invalid, None),
        },
    };
    let prev = crate::sampler::hold();
    let here = stack::capture_from_fault(pc);
    detector::report_error(
        pool,
        &Error {
            kind,
            addr,
            is_write,
            object: object.map(|i| (i, pool.slot(i))),
            stack: &here,
            damaged: 0,
        },
    );
    crate::sampler::release(prev);
    // Continue mode: open the page so the access completes and the program goes on. A guard
    // is closed again when one of its neighbours is next allocated; an object page when its
    // slot is reused.
    let page = addr & !(pool.page - 1);
    if !sys::protect(page as *mut u8, pool.page, true) {
        sys::abort_now();
    }
    match pool.place(addr) {
        Place::Guard { .. } => {
            let k = (page - pool.base) / pool.page / 2;
            pool.guard_opened(k)
                .store(true, core::sync::atomic::Ordering::Release);
        }
        Place::Object(i) => pool
            .slot(i)
            .page_opened
            .store(true, core::sync::atomic::Ordering::Release),
    }
    true
}

/// KFENCE's attribution of a guard-page fault: the allocated neighbour nearest to `addr`.
fn nearest_allocated(
    pool: &Pool,
    addr: usize,
    left: Option<usize>,
    right: Option<usize>,
) -> Option<usize> {
    let live = |i: usize| pool.slot(i).state.load(Acquire) == ALLOCATED;
    let l = left.filter(|&i| live(i)).map(|i| {
        let s = pool.slot(i);
        (i, addr.saturating_sub(s.addr + s.size))
    });
    let r = right
        .filter(|&i| live(i))
        .map(|i| (i, pool.slot(i).addr.saturating_sub(addr)));
    match (l, r) {
        (Some(a), Some(b)) => Some(if b.1 < a.1 { b.0 } else { a.0 }),
        (Some(a), None) => Some(a.0),
        (None, Some(b)) => Some(b.0),
        (None, None) => None,
    }
}

/// Passes a fault that is not ours to the handler installed before ours, or to the default
/// action: for a real fault, returning re-executes the instruction under the default action.
fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let n = if sig == libc::SIGBUS { 1 } else { 0 };
    // SAFETY: PREVIOUS is read-only after install.
    let prev = unsafe { (*PREVIOUS.0.get())[n] };
    // SAFETY: info is valid for the duration of the handler.
    let sent_by_user = unsafe { (*info).si_code } <= 0;
    match prev.sa_sigaction {
        libc::SIG_DFL => {
            sys::reset_to_default(sig);
            if sent_by_user {
                // SAFETY: raising a signal is always allowed; it stays pending until we return.
                unsafe { libc::raise(sig) };
            }
        }
        libc::SIG_IGN => {
            if !sent_by_user {
                // The kernel never lets a fault be ignored: it kills. Do the same.
                sys::reset_to_default(sig);
            }
        }
        h => {
            // SAFETY: h is the handler the program installed for this signal, called with the
            // arguments its flags ask for, as the kernel would have.
            unsafe {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
                        core::mem::transmute(h);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(i32) = core::mem::transmute(h);
                    f(sig);
                }
            }
        }
    }
}
