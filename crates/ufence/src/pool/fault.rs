//! The SIGSEGV/SIGBUS (and, under the preload, SIGABRT) handler.
//!
//! A fault inside the pool is ufence's: it is attributed (KFENCE's rules: a guard-page fault
//! belongs to the nearest allocated neighbour, a fault on a freed object's page is a
//! use-after-free, anything else in the pool is an invalid access), reported once per object,
//! and then either the page is made accessible so the program goes on (`on_error=continue`) or
//! the process aborts. Every other fault goes to whatever handler was installed before ours, or
//! gets the default action, exactly as if ufence were not there.

use crate::detector::{self, is_freed};
use crate::pool::{is_live, Place, Pool};
use crate::report::{Error, Kind};
use crate::{stack, sys};
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

/// The dispositions ufence chains to for SIGSEGV and SIGBUS: what was installed before it, or
/// what the program installed since (through the preload's `sigaction`, or found by
/// `ensure_installed`). Guarded by a sequence lock, because the fault handler reads them while
/// another thread may be changing them: the handler never waits for long and never tears a
/// copy unless a writer stalls in the middle of one for thousands of retries.
struct Previous {
    seq: AtomicU32,
    acts: UnsafeCell<[libc::sigaction; 3]>,
}
// SAFETY: `acts` is written only under the odd phase of `seq` and read with a seqlock retry.
unsafe impl Sync for Previous {}
static PREVIOUS: Previous = Previous {
    seq: AtomicU32::new(0),
    // SAFETY: an all-zero sigaction is SIG_DFL with no flags, a valid value.
    acts: UnsafeCell::new(unsafe { core::mem::zeroed() }),
};
/// Set once ufence's handler is in place (from then on the preload answers `sigaction` for
/// SIGSEGV/SIGBUS from PREVIOUS).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// SIGABRT is handled under the preload only, to name the bad pointer when the C library aborts
/// inside a `free` or `realloc` that ufence forwarded (see [`foreign_free`]); chained exactly
/// as the other two.
const SIGNALS: [i32; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGABRT];

/// Whether ufence handles `sig` in this process.
fn ours(sig: i32) -> bool {
    sig != libc::SIGABRT || crate::is_preload()
}

fn slot_of(sig: i32) -> Option<usize> {
    SIGNALS.iter().position(|&s| s == sig)
}

impl Previous {
    fn get(&self, n: usize) -> libc::sigaction {
        for _ in 0..10_000 {
            let s = self.seq.load(Acquire);
            if s & 1 == 0 {
                // SAFETY: a plain copy of an in-bounds element; a racing writer is detected by
                // the sequence check below and the copy is then discarded.
                let v = unsafe { core::ptr::read_volatile(&(*self.acts.get())[n]) };
                core::sync::atomic::fence(Acquire);
                if self.seq.load(Relaxed) == s {
                    return v;
                }
            }
            core::hint::spin_loop();
        }
        // SAFETY: as above; after this many retries a stalled writer is better than a hang.
        unsafe { core::ptr::read_volatile(&(*self.acts.get())[n]) }
    }

    fn set(&self, n: usize, v: &libc::sigaction) {
        loop {
            let s = self.seq.load(Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(s, s + 1, Acquire, Relaxed)
                    .is_ok()
            {
                // SAFETY: this thread holds the odd phase; readers retry around it.
                unsafe { core::ptr::write_volatile(&mut (*self.acts.get())[n], *v) };
                self.seq.store(s + 2, Release);
                return;
            }
            core::hint::spin_loop();
        }
    }
}

/// Installs the handler for SIGSEGV and SIGBUS, remembering what was there before.
pub fn install() -> bool {
    sys::ensure_altstack();
    for (n, sig) in SIGNALS.into_iter().enumerate() {
        if !ours(sig) {
            continue;
        }
        // Record what is there first, so that no fault can find an empty chain.
        if let Some(cur) = sys::current_handler(sig) {
            PREVIOUS.set(n, &cur);
        }
        let Some(old) = sys::install_handler(sig, on_fault) else {
            return false;
        };
        if old.sa_sigaction != on_fault as *const () as usize {
            PREVIOUS.set(n, &old);
        }
    }
    ACTIVE.store(true, Release);
    true
}

/// When the preload last looked for a replaced handler (see [`ensure_installed`]).
static LAST_CHECK_NS: AtomicU64 = AtomicU64::new(0);
const CHECK_EVERY_NS: u64 = 10_000_000;

/// Puts ufence's handler back if something replaced it behind ufence's back (a Rust program's
/// std, which installs its stack-overflow handler when it finds none of its own; a program
/// calling the kernel directly); the replacement becomes the handler ufence chains to. Called
/// on the sampled allocation path. Under the preload, `sigaction` itself is answered by
/// [`chained_sigaction`], so this rarely finds anything to do.
pub fn ensure_installed() {
    if !ACTIVE.load(Acquire) {
        return;
    }
    if crate::is_preload() {
        // The preload answers `sigaction` and `signal` itself: only a program going around the
        // C library (or through one of its rarer entry points) can replace the handler. Looked
        // at every 10 ms rather than on every sample, which at sample_rate=1 would cost three
        // system calls a sample.
        let now = sys::now_ns();
        let last = LAST_CHECK_NS.load(Relaxed);
        if now.saturating_sub(last) < CHECK_EVERY_NS
            || LAST_CHECK_NS
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
    }
    for (n, sig) in SIGNALS.into_iter().enumerate() {
        if !ours(sig) {
            continue;
        }
        let Some(cur) = sys::current_handler(sig) else {
            continue;
        };
        if cur.sa_sigaction == on_fault as *const () as usize {
            continue;
        }
        if let Some(old) = sys::install_handler(sig, on_fault) {
            if old.sa_sigaction != on_fault as *const () as usize {
                PREVIOUS.set(n, &old);
            }
        }
    }
}

/// `sigaction` as the program sees it once ufence's handler is in place: for SIGSEGV and
/// SIGBUS, the program's handler becomes the one ufence chains to, and the "old" action it is
/// told about is the one it would have found without ufence. Returns false for any other
/// signal, or before ufence is active, so the caller does the real call.
pub fn chained_sigaction(
    sig: i32,
    new: Option<&libc::sigaction>,
    old: Option<&mut libc::sigaction>,
) -> bool {
    let Some(n) = slot_of(sig) else {
        return false;
    };
    if !ACTIVE.load(Acquire) || !ours(sig) {
        return false;
    }
    if let Some(old) = old {
        *old = PREVIOUS.get(n);
    }
    if let Some(new) = new {
        PREVIOUS.set(n, new);
    }
    true
}

/// The handler. SIGABRT takes a path of small frames of its own: it may arrive nested on a
/// small alternate stack that is nearly used up (Rust's std aborts from its stack-overflow
/// handler), where the fault path's frame would not fit.
extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if sig == libc::SIGABRT {
        on_abort(info, ctx)
    } else {
        on_segv(sig, info, ctx)
    }
}

#[inline(never)]
fn on_abort(info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let saved_errno = sys::errno();
    if room_to_report() {
        foreign_free(libc::SIGABRT, 0, ctx);
    }
    chain(libc::SIGABRT, info, ctx);
    sys::set_errno(saved_errno);
}

#[inline(never)]
fn on_segv(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let saved_errno = sys::errno();
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let handled = match detector::pool() {
        Some(pool) if pool.contains(addr) => handle(pool, addr, ctx),
        _ => false,
    };
    if !handled {
        if room_to_report() {
            foreign_free(sig, addr, ctx);
        }
        chain(sig, info, ctx);
    }
    sys::set_errno(saved_errno);
}

/// Unwinding and reporting need room: not on a small alternate stack someone else gave the
/// thread, nor deep in one.
fn room_to_report() -> bool {
    altstack_room().is_none_or(|room| room >= 48 * 1024)
}

/// Whether the fault's stack walk may parse unwind tables on a cache miss: not on a small
/// alternate stack (Rust's std gives its threads 8 KiB, of which the kernel's signal frame
/// takes up to 3), where only cached rules are used and a miss goes to libgcc.
fn room_to_parse() -> bool {
    altstack_room().is_none_or(|room| room >= 32 * 1024)
}

/// The next allocator's `free` and `realloc` as `[start, end)` ranges (from the preload, see
/// [`set_forwarded`]), and the load base of its module; 0 until set.
static FORWARDED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
static FORWARDED_MODULE: AtomicUsize = AtomicUsize::new(0);
/// One such report per process: several threads may crash in the same bad free.
static FOREIGN_REPORTED: AtomicBool = AtomicBool::new(false);

/// Tells the handler where the allocator behind the preload has its `free` and `realloc`.
pub fn set_forwarded(free: (usize, usize), realloc: (usize, usize)) {
    for (slot, v) in FORWARDED.iter().zip([free.0, free.1, realloc.0, realloc.1]) {
        slot.store(v, Relaxed);
    }
    let base = sys::module_of(free.0).map_or(0, |m| m.0);
    FORWARDED_MODULE.store(base, Release);
    // ufence may have started before the preload's constructor said it is one (a C++
    // runtime's constructor allocates first): then SIGABRT is taken now.
    ensure_installed();
}

/// The routine (`routine::FREE` or `REALLOC`) whose code holds `pc`, if either.
fn forwarded_at(pc: usize) -> Option<u8> {
    let r = |i: usize| FORWARDED[i].load(Relaxed);
    if r(0) <= pc && pc < r(1) {
        Some(crate::routine::FREE)
    } else if r(2) <= pc && pc < r(3) {
        Some(crate::routine::REALLOC)
    } else {
        None
    }
}

/// A SIGABRT, or a fault outside the pool: if the thread is inside the C library's `free` or
/// `realloc`, called from outside that library (so through ufence, whose entry points jump
/// there), the program freed something that was never the allocator's. Reported as an invalid
/// free with the stack of the call; the caller then lets the signal take its course. Nothing
/// here runs unless such a signal arrives: the fast path is untouched.
#[cold]
#[inline(never)]
fn foreign_free(sig: i32, fault_addr: usize, ctx: *mut libc::c_void) {
    let module = FORWARDED_MODULE.load(Acquire);
    let Some(pool) = detector::pool() else { return };
    if module == 0 || FOREIGN_REPORTED.load(Relaxed) {
        return;
    }
    let (pc, _) = fault_context(ctx);
    let module_of = |pc: usize| sys::module_of(pc).map_or(0, |m| m.0);
    // A fault anywhere but in that library's code is not ours to look at (and costs no unwind:
    // some runtimes take faults on purpose, often).
    if sig != libc::SIGABRT && module_of(pc) != module {
        return;
    }
    let prev = crate::sampler::hold();
    let (sp, bp) = fault_sp_bp(ctx);
    let mut st = stack::Stack::EMPTY;
    stack::capture_from_fault(&mut st, pc, sp, bp, room_to_parse());
    let frames = st.frames();
    // The innermost frame is the interrupted instruction; the others are return addresses,
    // which point just past their call.
    let hit = frames.iter().enumerate().find_map(|(i, &f)| {
        let at = if i == 0 { f } else { f.wrapping_sub(1) };
        forwarded_at(at).map(|r| (i, r))
    });
    if let Some((i, routine)) = hit {
        let caller = frames.get(i + 1).copied();
        if caller.is_some_and(|c| module_of(c) != module) && !FOREIGN_REPORTED.swap(true, Relaxed) {
            st.drop_innermost(i + 1);
            detector::report_foreign_free(pool, &st, fault_addr, routine);
        }
    }
    crate::sampler::release(prev);
}

/// The room left below the current stack pointer when the handler runs on an alternate signal
/// stack; None on the thread's own stack.
#[inline(never)]
fn altstack_room() -> Option<usize> {
    // SAFETY: sigaltstack with a null new stack only reads the current one into `ss`.
    let ss = unsafe {
        let mut ss: libc::stack_t = core::mem::zeroed();
        if libc::sigaltstack(core::ptr::null(), &mut ss) != 0 {
            return None;
        }
        ss
    };
    (ss.ss_flags & libc::SS_ONSTACK != 0)
        .then(|| stack::approx_sp().saturating_sub(ss.ss_sp as usize))
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

/// The stack and frame pointers of the interrupted code, from the CPU context (where the fast
/// walk of a fault's stack starts).
fn fault_sp_bp(ctx: *mut libc::c_void) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: for SA_SIGINFO handlers the third argument is a ucontext_t.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        let g = &uc.uc_mcontext.gregs;
        (
            g[libc::REG_RSP as usize] as usize,
            g[libc::REG_RBP as usize] as usize,
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ctx;
        (0, 0)
    }
}

fn handle(pool: &Pool, addr: usize, ctx: *mut libc::c_void) -> bool {
    let (pc, is_write) = fault_context(ctx);
    let place = pool.place(addr);
    let (kind, object) = match place {
        Place::Object(i) => {
            let s = pool.slot(i);
            let st = s.state.load(Acquire);
            let (lo, hi) = pool.object_pages(s);
            if is_live(st) && addr >= lo && addr < hi {
                // A stale access that raced with the slot's reuse finds the page open when it
                // retries. A second fault at the same address means the page's protection was
                // changed by the program itself (mprotect): that fault is the program's.
                return crate::sampler::first_fault_at(addr);
            }
            // A freed object's pages (at least one: a 0-byte object's first).
            if is_freed(st) && addr >= lo && addr < hi.max(lo + pool.page) {
                (Kind::UseAfterFree, Some(i))
            } else if is_live(st) || pool.is_large(i) {
                // The inaccessible part of a slot: the unused pages of a large slot, the page
                // of a 0-byte object. KFENCE's rule for guards applies.
                let same = |j: usize| pool.is_large(j) == pool.is_large(i);
                let left = i.checked_sub(1).filter(|&j| same(j));
                let right = Some(i + 1).filter(|&j| j < pool.nslots && same(j));
                match nearest_allocated(pool, addr, &[left, Some(i), right]) {
                    Some(j) => (Kind::OutOfBounds, Some(j)),
                    None => (Kind::Invalid, None),
                }
            } else {
                (Kind::Invalid, None)
            }
        }
        Place::Guard { left, right } => match nearest_allocated(pool, addr, &[left, right]) {
            Some(i) => (Kind::OutOfBounds, Some(i)),
            None => (Kind::Invalid, None),
        },
    };
    let prev = crate::sampler::hold();
    let (sp, bp) = fault_sp_bp(ctx);
    let mut here = stack::Stack::EMPTY;
    stack::capture_from_fault(&mut here, pc, sp, bp, room_to_parse());
    detector::report_error(
        pool,
        &Error {
            kind,
            addr,
            is_write,
            object: object.map(|i| (i, pool.slot(i))),
            stack: &here,
            damaged: 0,
            dealloc: crate::routine::ANY,
        },
    );
    crate::sampler::release(prev);
    // Continue mode: open the page so the access completes and the program goes on.
    let page = addr & !(pool.page - 1);
    if !sys::protect(page as *mut u8, pool.page, true) {
        sys::abort_now();
    }
    // A guard is closed again when one of its neighbours is next allocated; a slot's page when
    // the slot is freed (the whole slot is closed), or, opened after the free, before the slot
    // is next used.
    match place {
        Place::Guard { .. } => {
            if let Some(k) = pool.guard_at(page) {
                pool.guard_opened(k).store(true, Release);
            }
        }
        Place::Object(i) => pool.slot_opened(i).store(true, Release),
    }
    true
}

/// KFENCE's attribution of a guard-page fault: the allocated object nearest to `addr` among
/// the candidate slots (the guard's neighbours; for an inaccessible part of a slot, the slot
/// and its neighbours).
fn nearest_allocated(pool: &Pool, addr: usize, candidates: &[Option<usize>]) -> Option<usize> {
    candidates
        .iter()
        .flatten()
        .copied()
        .filter(|&i| is_live(pool.slot(i).state.load(Acquire)))
        .min_by_key(|&i| {
            let s = pool.slot(i);
            if addr < s.addr {
                s.addr - addr
            } else {
                addr.saturating_sub(s.addr + s.size)
            }
        })
}

/// Passes a fault that is not ours to the handler installed before ours (or since), as the
/// kernel would have called it, or to the default action: for a real fault, returning
/// re-executes the instruction under the default action.
fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let n = slot_of(sig).unwrap_or(0);
    let prev = PREVIOUS.get(n);
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
            // What the kernel does on delivery: a one-shot handler reverts to the default, and
            // the handler runs with its sa_mask (and, unless SA_NODEFER, the signal) blocked.
            if prev.sa_flags & libc::SA_RESETHAND != 0 {
                // SAFETY: a zeroed sigaction is SIG_DFL.
                let dfl: libc::sigaction = unsafe { core::mem::zeroed() };
                PREVIOUS.set(n, &dfl);
            }
            let mut mask = prev.sa_mask;
            // SAFETY: mask is a valid sigset_t.
            unsafe {
                if prev.sa_flags & libc::SA_NODEFER == 0 {
                    libc::sigaddset(&mut mask, sig);
                }
            }
            let saved = sys::sigmask(libc::SIG_BLOCK, &mask);
            if prev.sa_flags & libc::SA_NODEFER != 0 {
                // SAFETY: building a one-signal set.
                let one = unsafe {
                    let mut one: libc::sigset_t = core::mem::zeroed();
                    libc::sigaddset(&mut one, sig);
                    one
                };
                sys::sigmask(libc::SIG_UNBLOCK, &one);
            }
            // While the program's fault handler runs, SIGABRT is the program's own: a handler
            // that aborts (Rust's std does, from a small alternate stack nearly used up) must
            // not need room for ufence's SIGABRT frame there, nor get a report about it.
            let abrt = slot_of(libc::SIGABRT).unwrap_or(0);
            let swap = sig != libc::SIGABRT && ours(libc::SIGABRT);
            if swap {
                let own = PREVIOUS.get(abrt);
                // SAFETY: a valid sigaction, the program's own for SIGABRT.
                unsafe { sys::real_sigaction(libc::SIGABRT, &own, core::ptr::null_mut()) };
            }
            // SAFETY: h is the handler the program installed for this signal, called with the
            // arguments its flags ask for.
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
            if swap {
                // Back in front (a handler that never returns leaves it to `ensure_installed`
                // at the next sampled allocation).
                sys::install_handler(libc::SIGABRT, on_fault);
            }
            sys::sigmask(libc::SIG_SETMASK, &saved);
        }
    }
}
