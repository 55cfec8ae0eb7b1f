//! Every call into the operating system and the C library lives here, so that the rest of the
//! crate reads as plain logic and the unsafe surface is small and audited in one place.
//!
//! Everything in this module is usable from an allocator's slow path and from a signal handler:
//! nothing allocates, nothing takes a lock another thread might hold, nothing panics.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The machine's page size (4096 on every x86-64 Linux we target); read once at start.
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions and is async-signal-safe in practice.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let v = if v > 0 { v as usize } else { 4096 };
    PAGE.store(v, Ordering::Relaxed);
    v
}

/// Reserves `len` bytes of inaccessible, private, anonymous address space, as the guarded pool.
///
/// Without `MAP_NORESERVE`, on purpose: the kernel then charges a page to the commit limit the
/// first time it is made writable and marks that part of the mapping accounted, so a slot's
/// page stays a mapping of its own once used (its flags differ from the guards' beside it) and
/// every later `mprotect` of it only flips its protection. With `MAP_NORESERVE` each sampled
/// allocation split the pool's mapping and each free merged it back: measured here, 5.6 µs for
/// the two calls instead of 2.0 (bench/samples.sh). The charge is bounded by the pool (the
/// pages of every slot), and the mappings by the 2N+1 that `within_map_limit` already allows.
pub fn map_pool(len: usize) -> Option<*mut u8> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// Maps `len` bytes of readable and writable private anonymous memory.
pub fn map_rw(len: usize) -> Option<*mut u8> {
    map(len, libc::PROT_READ | libc::PROT_WRITE)
}

fn map(len: usize, prot: i32) -> Option<*mut u8> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        Some(p.cast())
    }
}

/// Unmaps a region obtained from [`map_pool`] or [`map_rw`].
///
/// # Safety
/// `p..p+len` must be a mapping this crate created and nothing may use it afterwards.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(p.cast(), len) };
}

/// Changes the protection of whole pages inside the pool. Returns false on failure (for example
/// ENOMEM at the map-count limit), which callers treat as "disable ufence", never as a crash.
pub fn protect(p: *mut u8, len: usize, accessible: bool) -> bool {
    let prot = if accessible {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_NONE
    };
    // SAFETY: callers only pass page-aligned ranges inside the pool, which this crate owns;
    // changing their protection cannot affect memory of anyone else.
    unsafe { libc::mprotect(p.cast(), len, prot) == 0 }
}

/// Gives the pages of a pool range back to the kernel (`MADV_DONTNEED`): their memory is freed
/// at once, and should they ever be made accessible again they read as zero. Used on the pages
/// of a freed large object, already made inaccessible.
pub fn discard(p: *mut u8, len: usize) {
    // SAFETY: callers only pass page-aligned ranges inside the pool, which this crate owns and
    // whose contents nobody needs any more (a freed object's pages).
    unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) };
}

/// Writes all of `buf` to a file descriptor, retrying on EINTR and short writes; false on any
/// other failure (callers writing to stderr ignore it, the JSON report writer does not).
pub fn write_all(fd: i32, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n > 0 {
            buf = &buf[n as usize..];
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            return false;
        }
    }
    true
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno` (the C ABI layer restores it around `free`).
pub fn set_errno(v: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = v };
}

/// Nanoseconds of CLOCK_MONOTONIC; served by the vDSO, so no system call on Linux.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel thread id of the caller.
pub fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// The process id (a system call, so it is right in a forked child without any bookkeeping).
pub fn getpid() -> u32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// The calling thread's name (`comm`, at most 15 bytes), NUL-padded. The raw system call, not
/// `prctl`: the preload defines `prctl` itself, and this runs on the sampled path.
pub fn thread_name() -> [u8; 16] {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer it is given.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_GET_NAME,
            name.as_mut_ptr(),
            0,
            0,
            0,
        )
    };
    name
}

/// 64 random bits from the kernel, or a mix of clock, pid and an address when that fails.
pub fn random_u64() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: getrandom writes at most 8 bytes into v; GRND_NONBLOCK keeps it from blocking early
    // in boot.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getrandom,
            (&mut v as *mut u64).cast::<u8>(),
            8usize,
            libc::GRND_NONBLOCK,
        )
    };
    if n != 8 {
        v = now_ns() ^ ((getpid() as u64) << 32) ^ (&v as *const u64 as u64);
    }
    v
}

/// Reads an environment variable without allocating: a view into the process's environment.
pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv returns NULL or a pointer into the environment block, which lives as long as
    // the process unless the program calls setenv on that same name (we read it once, at start).
    unsafe {
        let p = libc::getenv(name.as_ptr());
        if p.is_null() {
            None
        } else {
            Some(core::ffi::CStr::from_ptr(p).to_bytes())
        }
    }
}

extern "C" {
    /// glibc's own `sigaction`. ufence calls it by this name because the preload exports a
    /// `sigaction` of its own (to stay in front of the program's SIGSEGV handlers), which a
    /// plain call from inside the library would reach.
    fn __sigaction(sig: i32, act: *const libc::sigaction, old: *mut libc::sigaction) -> i32;
}

/// The system's `sigaction`, never the preload's.
///
/// # Safety
/// `act` and `old` must each be null or valid, as for sigaction(2).
pub unsafe fn real_sigaction(
    sig: i32,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> i32 {
    // SAFETY: the caller's obligation.
    unsafe { __sigaction(sig, act, old) }
}

/// Installs `handler` for `sig` with SA_SIGINFO | SA_ONSTACK | SA_RESTART and returns the
/// previous disposition, or None if sigaction failed.
pub fn install_handler(
    sig: i32,
    handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void),
) -> Option<libc::sigaction> {
    // SAFETY: both structs are fully initialised; sigaction only reads `new` and writes `old`.
    unsafe {
        let mut new: libc::sigaction = core::mem::zeroed();
        new.sa_sigaction = handler as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = core::mem::zeroed();
        if real_sigaction(sig, &new, &mut old) != 0 {
            return None;
        }
        Some(old)
    }
}

/// The current disposition of `sig`.
pub fn current_handler(sig: i32) -> Option<libc::sigaction> {
    // SAFETY: a zeroed sigaction is a valid out-value; a null new action only queries.
    unsafe {
        let mut cur: libc::sigaction = core::mem::zeroed();
        (real_sigaction(sig, ptr::null(), &mut cur) == 0).then_some(cur)
    }
}

/// Sets the disposition of `sig` back to its default action.
pub fn reset_to_default(sig: i32) {
    // SAFETY: as in install_handler.
    unsafe {
        let mut act: libc::sigaction = core::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut act.sa_mask);
        real_sigaction(sig, &act, ptr::null_mut());
    }
}

/// Changes the calling thread's signal mask (`how` as for pthread_sigmask); returns the old one.
pub fn sigmask(how: i32, set: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: valid set pointers; pthread_sigmask is async-signal-safe.
    unsafe {
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::pthread_sigmask(how, set, &mut old);
        old
    }
}

/// Ends the process with SIGABRT even if the program blocks or handles it.
pub fn abort_now() -> ! {
    reset_to_default(libc::SIGABRT);
    // SAFETY: unblocking SIGABRT and raising it are always allowed; abort() is the fallback.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGABRT);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut());
        libc::raise(libc::SIGABRT);
        libc::abort()
    }
}

/// Gives the calling thread a 64 KiB alternate signal stack if it has none, so that ufence's
/// handler (and any handler chained behind it) can run even when the thread's own stack is
/// exhausted. The stack is deliberately never freed: it is made once, for the thread that
/// starts ufence, not per thread.
pub fn ensure_altstack() {
    const SIZE: usize = 64 * 1024;
    // SAFETY: querying with a null new-stack pointer only writes `cur`.
    unsafe {
        let mut cur: libc::stack_t = core::mem::zeroed();
        if libc::sigaltstack(ptr::null(), &mut cur) != 0 || cur.ss_flags & libc::SS_DISABLE == 0 {
            return;
        }
        let Some(mem) = map_rw(SIZE) else { return };
        let st = libc::stack_t {
            ss_sp: mem.cast(),
            ss_flags: 0,
            ss_size: SIZE,
        };
        if libc::sigaltstack(&st, ptr::null_mut()) != 0 {
            unmap(mem, SIZE);
        }
    }
}

/// Reads a small decimal number from a file such as `/proc/sys/vm/max_map_count`.
pub fn read_number(path: &core::ffi::CStr) -> Option<u64> {
    let mut buf = [0u8; 32];
    // SAFETY: open/read/close into a stack buffer of the given length.
    let n = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = buf.get(..usize::try_from(n).ok()?)?;
    let digits = text.split(|c| !c.is_ascii_digit()).next()?;
    core::str::from_utf8(digits).ok()?.parse().ok()
}

/// A file opened read-only and mapped whole, for reading ELF symbol tables in a report.
pub struct MappedFile {
    pub data: &'static [u8],
}

impl MappedFile {
    /// Opens and maps a file by NUL-terminated path; None if it cannot be read.
    pub fn open(path: &core::ffi::CStr) -> Option<MappedFile> {
        // SAFETY: open/fstat/mmap/close on a path we own; the mapping is private and read-only
        // and is unmapped in Drop.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return None;
            }
            let mut st: libc::stat = core::mem::zeroed();
            let ok = libc::fstat(fd, &mut st) == 0 && st.st_size > 0;
            let len = st.st_size as usize;
            let p = if ok {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    fd,
                    0,
                )
            } else {
                libc::MAP_FAILED
            };
            libc::close(fd);
            if p == libc::MAP_FAILED {
                return None;
            }
            Some(MappedFile {
                data: core::slice::from_raw_parts(p as *const u8, len),
            })
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: data is exactly the mapping created in open and is not used after drop.
        unsafe { libc::munmap(self.data.as_ptr() as *mut _, self.data.len()) };
    }
}

/// Registers fork handlers (glibc may allocate here; callers tolerate the re-entry).
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: the three callbacks are plain functions with the C ABI and live forever.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Yields the CPU while spinning on one of ufence's own short critical sections.
pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

/// What `_dl_find_object` says about the module holding an address.
pub struct FoundObject {
    /// The module's load base (`l_addr`).
    pub base: usize,
    /// Its path ("" for the main program).
    pub name: &'static core::ffi::CStr,
    /// Its `PT_GNU_EH_FRAME` segment (`.eh_frame_hdr`), 0 if it has none.
    pub eh_frame_hdr: usize,
}

/// The module holding `pc`, from glibc's lock-free `_dl_find_object` (2.35+), which is safe
/// in a signal handler and takes no lock the interrupted code may hold. None when `pc` is in
/// no module, or the C library has no such function (resolved at start, see `detector`).
pub fn find_object(pc: usize) -> Option<FoundObject> {
    #[repr(C)]
    struct DlFindObject {
        flags: libc::c_ulonglong,
        map_start: *mut libc::c_void,
        map_end: *mut libc::c_void,
        link_map: *mut LinkMap,
        eh_frame: *mut libc::c_void,
        reserved: [*mut libc::c_void; 7],
    }
    #[repr(C)]
    struct LinkMap {
        l_addr: usize,
        l_name: *const libc::c_char,
    }
    type FindFn = unsafe extern "C" fn(*mut libc::c_void, *mut DlFindObject) -> i32;
    static FIND: AtomicUsize = AtomicUsize::new(1);
    let mut f = FIND.load(Ordering::Relaxed);
    if f == 1 {
        // SAFETY: dlsym with a NUL-terminated name; the result is a function pointer or null.
        f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) } as usize;
        FIND.store(f, Ordering::Relaxed);
    }
    if f == 0 {
        return None;
    }
    // SAFETY: f is glibc's _dl_find_object, whose signature is FindFn; the out-struct is sized
    // as glibc documents it; a link map's first two fields are l_addr and l_name (<link.h>).
    unsafe {
        let find: FindFn = core::mem::transmute::<usize, FindFn>(f);
        let mut out: DlFindObject = core::mem::zeroed();
        if find(pc as *mut _, &mut out) != 0 || out.link_map.is_null() {
            return None;
        }
        let lm = &*out.link_map;
        let name = if lm.l_name.is_null() {
            c""
        } else {
            core::ffi::CStr::from_ptr(lm.l_name)
        };
        Some(FoundObject {
            base: lm.l_addr,
            name,
            eh_frame_hdr: out.eh_frame as usize,
        })
    }
}

/// Where code at address `pc` was loaded from: the module's load base and its path.
/// Uses [`find_object`]; falls back to `dladdr` (which takes the loader lock) when
/// `_dl_find_object` is not available.
pub fn module_of(pc: usize) -> Option<(usize, &'static core::ffi::CStr)> {
    if let Some(o) = find_object(pc) {
        return Some((o.base, o.name));
    }
    // SAFETY: dladdr only writes the Dl_info out-struct.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(pc as *const _, &mut info) != 0 && !info.dli_fname.is_null() {
            return Some((
                info.dli_fbase as usize,
                core::ffi::CStr::from_ptr(info.dli_fname),
            ));
        }
    }
    None
}

/// The bounds `[lo, hi)` of the stack holding `sp`, as far as a stack walk may read: from `sp`
/// up to the thread's descriptor (glibc puts it at the top of every thread's stack, its own or
/// one the program gave), or for the main thread up to the page holding `__libc_stack_end`.
/// None when `sp` is on neither (an alternate signal stack, a coroutine's stack).
pub fn stack_bounds(sp: usize) -> Option<(usize, usize)> {
    extern "C" {
        static __libc_stack_end: *const libc::c_void;
    }
    const MAX_STACK: usize = 1 << 30;
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer's self-reference, the first word of the TCB.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
                options(pure, readonly, nostack, preserves_flags));
        }
        if sp < tp && tp - sp <= MAX_STACK {
            return Some((sp, tp));
        }
    }
    // SAFETY: a word the loader sets before any code runs.
    let end = unsafe { __libc_stack_end } as usize;
    if sp < end && end - sp <= MAX_STACK {
        return Some((sp, (end | 4095) + 1));
    }
    None
}

/// ufence's per-thread state: sixteen words of initial-exec TLS, zero in every new thread.
///
/// Rust's `thread_local!` in a shared library goes through `__tls_get_addr`, which may call
/// `malloc` (re-entering the preload) and costs a call on every allocation. glibc asks
/// replacement allocators for initial-exec TLS instead: a fixed offset from `%fs`, resolved once
/// by the loader. Stable Rust has no attribute for that, so the variable is declared in assembly.
#[cfg(target_arch = "x86_64")]
mod thread_block {
    core::arch::global_asm!(
        ".pushsection .tbss.ufence_thread_block,\"awT\",@nobits",
        ".p2align 6",
        ".globl ufence_thread_block_v1",
        ".hidden ufence_thread_block_v1",
        ".type ufence_thread_block_v1,@object",
        ".size ufence_thread_block_v1,128",
        "ufence_thread_block_v1:",
        ".zero 128",
        ".popsection",
    );

    /// The calling thread's block.
    #[inline(always)]
    pub fn get() -> *mut [u64; 16] {
        let p: *mut [u64; 16];
        // SAFETY: reads the thread pointer and adds the loader-resolved TLS offset of a 64-byte
        // object that exists in every thread; touches no other memory.
        unsafe {
            core::arch::asm!(
                "mov {p}, qword ptr fs:[0]",
                "add {p}, qword ptr [rip + ufence_thread_block_v1@GOTTPOFF]",
                p = out(reg) p,
                options(pure, readonly, nostack, preserves_flags)
            );
        }
        p
    }

    /// Counts one allocation down in the block's first word and says whether it reached zero:
    /// a GOT load, `sub qword ptr fs:[off], 1` and a conditional jump, the whole sampling cost
    /// of an allocation. (Written in Rust, the same update compiles to a load, a decrement, a
    /// store and a test; with an asm output instead of a jump, to a `setle` and a test.)
    #[inline(always)]
    pub fn count_down() -> bool {
        let off: usize;
        // SAFETY: loads the loader-resolved TLS offset of the block from the GOT.
        unsafe {
            core::arch::asm!(
                "mov {off}, qword ptr [rip + ufence_thread_block_v1@GOTTPOFF]",
                off = out(reg) off,
                options(pure, readonly, nostack, preserves_flags)
            );
        }
        // SAFETY: decrements the first word of the calling thread's own block (see `get`);
        // no other memory is touched.
        unsafe {
            core::arch::asm!(
                "sub qword ptr fs:[{off}], 1",
                "jle {expired}",
                off = in(reg) off,
                expired = label { return true; },
                options(nostack)
            );
        }
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod thread_block {
    use core::cell::UnsafeCell;
    std::thread_local! {
        static BLOCK: UnsafeCell<[u64; 16]> = const { UnsafeCell::new([0; 16]) };
    }
    /// The calling thread's block (portable fallback; slower in a shared library).
    #[inline(always)]
    pub fn get() -> *mut [u64; 16] {
        BLOCK.with(|b| b.get())
    }
    /// Counts one allocation down; true when the countdown reached zero.
    #[inline(always)]
    pub fn count_down() -> bool {
        // SAFETY: the calling thread's own block.
        unsafe {
            let b = get();
            (*b)[0] = ((*b)[0] as i64 - 1) as u64;
            (*b)[0] as i64 <= 0
        }
    }
}

pub use thread_block::count_down as thread_count_down;
pub use thread_block::get as thread_block;

/// Runs `f` on the stack whose highest address is `top` and comes back to the current one.
///
/// Reports symbolize and format on a stack of ufence's own, because the fault handler may be
/// running on a small alternate signal stack (Rust's std gives its threads about 12 KiB).
/// Nothing unwinds across this switch: the crate is built with `panic = "abort"` and `f` must
/// not panic.
pub fn run_on_stack(top: usize, f: &mut dyn FnMut()) {
    extern "C" fn trampoline(arg: *mut core::ffi::c_void) {
        // SAFETY: arg is the `&mut &mut dyn FnMut()` passed below, alive for the call.
        let f = unsafe { &mut *(arg as *mut &mut dyn FnMut()) };
        f();
    }
    let mut f = f;
    let arg = (&mut f as *mut &mut dyn FnMut()).cast::<core::ffi::c_void>();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `top` is the end of a writable mapping reserved for this purpose and used by one
    // thread at a time (under the report lock). The old stack pointer is kept in r12, which the
    // callee preserves by the C ABI; the call sees a 16-byte aligned stack as the ABI requires.
    unsafe {
        core::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "and rsp, -16",
            "call {tramp}",
            "mov rsp, r12",
            top = in(reg) top,
            tramp = in(reg) trampoline as extern "C" fn(*mut core::ffi::c_void),
            in("rdi") arg,
            out("r12") _,
            clobber_abi("C"),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = top;
        trampoline(arg);
    }
}

/// The effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME), for timestamps people read.
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// The host's name (`uname`'s nodename), written into `buf`; returns its length.
pub fn hostname(buf: &mut [u8; 65]) -> usize {
    // SAFETY: a zeroed utsname is a valid out-value; uname is a plain system call.
    let u = unsafe {
        let mut u: libc::utsname = core::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return 0;
        }
        u
    };
    let mut n = 0;
    for (dst, &c) in buf.iter_mut().zip(u.nodename.iter()) {
        if c == 0 {
            break;
        }
        *dst = c as u8;
        n += 1;
    }
    n
}

/// Reads up to `buf.len()` bytes of a small file (such as `/proc/self/cmdline`); returns the
/// length read (0 when it cannot be read).
pub fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> usize {
    // SAFETY: open/read/close into the caller's buffer, within its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let mut len = 0;
        while len < buf.len() {
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if n > 0 {
                len += n as usize;
            } else if n < 0 && errno() == libc::EINTR {
                continue;
            } else {
                break;
            }
        }
        libc::close(fd);
        len
    }
}

/// Reads a symbolic link (such as `/proc/self/exe`) into `buf`; the length, 0 on failure.
pub fn readlink(path: &core::ffi::CStr, buf: &mut [u8]) -> usize {
    // SAFETY: readlink writes at most buf.len() bytes into buf.
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).unwrap_or(0)
}

/// Opens the directory at `path`, creating it (mode 0700) if it is missing and `create` says
/// so, and checks that it
/// is private: a real directory (not a symbolic link), owned by us, that no one else can
/// write to (created 0700). Returns its descriptor, or why it is not usable.
pub fn open_private_dir(path: &core::ffi::CStr, create: bool) -> Result<i32, &'static str> {
    // SAFETY: mkdir/open/fstat with a valid path and out-struct; the descriptor is closed on
    // every failure path.
    unsafe {
        if create {
            libc::mkdir(path.as_ptr(), 0o700);
        }
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if fd < 0 {
            let e = errno();
            let mut st: libc::stat = core::mem::zeroed();
            let is_link = libc::lstat(path.as_ptr(), &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFLNK;
            return Err(match e {
                _ if is_link => "it is a symbolic link, which ufence does not follow",
                libc::ENOENT => "no such directory",
                libc::ENOTDIR => "it is not a directory",
                libc::EACCES => "permission denied",
                _ => "cannot open the directory",
            });
        }
        let mut st: libc::stat = core::mem::zeroed();
        let why = if libc::fstat(fd, &mut st) != 0 {
            Some("cannot stat the directory")
        } else if st.st_uid != geteuid() {
            Some("the directory belongs to another user")
        } else if st.st_mode & 0o022 != 0 {
            Some("the directory is writable by other users (want mode 0700)")
        } else {
            None
        };
        match why {
            Some(w) => {
                libc::close(fd);
                Err(w)
            }
            None => Ok(fd),
        }
    }
}

/// Creates an unnamed file in the directory `dir` (`O_TMPFILE`, mode 0600), `len` bytes long
/// and sparse. It has no name until `link_fd` gives it one (so no reader sees it half
/// written, and no symbolic link planted under its name is followed), and vanishes with its
/// last descriptor and mapping: a forked child that execs or exits at once leaves nothing.
pub fn create_unnamed_file(dir: i32, len: usize) -> Result<i32, &'static str> {
    // SAFETY: openat/ftruncate/close on a directory descriptor we hold; the new descriptor is
    // closed on the failure path.
    unsafe {
        let fd = libc::openat(
            dir,
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        );
        if fd < 0 {
            return Err("cannot create an unnamed file");
        }
        if libc::ftruncate(fd, len as libc::off_t) != 0 {
            libc::close(fd);
            return Err("cannot size the file");
        }
        Ok(fd)
    }
}

/// Why `back_pages` could not back a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBacking {
    /// The kernel predates `MADV_POPULATE_WRITE` (Linux 5.14): reserve with `fallocate`.
    Unsupported,
    /// No room (a full tmpfs), or no memory.
    NoRoom,
}

/// Gives the pages of `[p, p + len)`, a shared mapping of a sparse file, their storage now,
/// with an error if there is no room. Writing to a page of a sparse shared file on a full tmpfs
/// would instead raise SIGBUS in the writer (the host program's allocator, for ufence).
pub fn back_pages(p: *mut u8, len: usize) -> Result<(), NoBacking> {
    let page = page_size();
    let start = p as usize / page * page;
    let end = (p as usize + len).next_multiple_of(page);
    // SAFETY: the range lies within a mapping the caller owns; populating only faults pages
    // in, as writing to them would, and reports failure instead of raising a signal.
    let r = unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            end - start,
            libc::MADV_POPULATE_WRITE,
        )
    };
    match (r, errno()) {
        (0, _) => Ok(()),
        (_, libc::EINVAL) => Err(NoBacking::Unsupported),
        _ => Err(NoBacking::NoRoom),
    }
}

/// Reserves storage for the first `len` bytes of the file `fd` (the fallback of `back_pages`).
pub fn reserve_file(fd: i32, len: usize) -> bool {
    // SAFETY: fallocate on a descriptor the caller owns.
    unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) == 0 }
}

/// Gives the unnamed file `fd` the name `name` in the directory `dir`, replacing a file of that
/// name left by an earlier process. Goes through `/proc/self/fd`, as linkat(2) documents for
/// `O_TMPFILE` files (`AT_EMPTY_PATH` would need CAP_DAC_READ_SEARCH).
pub fn link_fd(fd: i32, dir: i32, name: &core::ffi::CStr) -> bool {
    let mut path = crate::fmt::BufWriter::<32>::new();
    if core::fmt::Write::write_fmt(&mut path, format_args!("/proc/self/fd/{fd}\0")).is_err() {
        return false;
    }
    let link = || {
        // SAFETY: two NUL-terminated paths and a directory descriptor we hold.
        unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                path.as_bytes().as_ptr().cast(),
                dir,
                name.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            ) == 0
        }
    };
    let link_empty_path = || {
        // Without /proc (a chroot, a sandbox): needs CAP_DAC_READ_SEARCH.
        // SAFETY: an open descriptor, an empty path, a directory descriptor and a name.
        unsafe { libc::linkat(fd, c"".as_ptr(), dir, name.as_ptr(), libc::AT_EMPTY_PATH) == 0 }
    };
    let once = || link() || (errno() == libc::ENOENT && link_empty_path());
    once()
        || (errno() == libc::EEXIST && {
            unlink_at(dir, name);
            once()
        })
}

/// The device and inode of `name` in the directory `dir` (not following a symbolic link).
pub fn file_id_at(dir: i32, name: &core::ffi::CStr) -> Option<(u64, u64)> {
    // SAFETY: fstatat into a zeroed out-struct, with a NUL-terminated name.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0)
            .then_some((st.st_dev, st.st_ino))
    }
}

/// Moves descriptor `fd` to a number of 512 or more (closing `fd`), out of the way of numbers a
/// program opens, reuses or writes to by habit (0 to 2 after it closed its standard streams, 3
/// and up, the 9 of shell scripts). None, with `fd` closed, if that cannot be had and `fd` is
/// one of the standard streams' numbers.
pub fn move_fd_high(fd: i32) -> Option<i32> {
    // SAFETY: fcntl and close on a descriptor the caller owns and gives up here.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 512);
        if high >= 0 {
            libc::close(fd);
            Some(high)
        } else if fd > 2 {
            Some(fd)
        } else {
            libc::close(fd);
            None
        }
    }
}

/// A page of memory that a forked child sees zeroed (`MADV_WIPEONFORK`, Linux 4.14), while a
/// vfork child, sharing the parent's memory, sees what the parent wrote: the way to tell them
/// apart. None where the kernel cannot wipe.
pub fn map_wiped_on_fork() -> Option<*mut u8> {
    let page = page_size();
    let p = map_rw(page)?;
    // SAFETY: a private anonymous page just mapped.
    if unsafe { libc::madvise(p.cast(), page, libc::MADV_WIPEONFORK) } != 0 {
        // SAFETY: the page mapped above, not referred to.
        unsafe { unmap(p, page) };
        return None;
    }
    Some(p)
}

/// The device and inode of the open file `fd`, to tell it from a file the program opened later
/// under the same number; None if `fd` is not open.
pub fn file_id(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: fstat into a zeroed out-struct.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some((st.st_dev, st.st_ino))
    }
}

/// Maps `len` bytes of the file `fd` shared, readable and writable.
pub fn map_shared(fd: i32, len: usize) -> Option<*mut u8> {
    // SAFETY: a new shared mapping of a file we own at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// Closes a descriptor.
pub fn close(fd: i32) {
    // SAFETY: closing a descriptor this crate opened.
    unsafe { libc::close(fd) };
}

/// Removes the file `name` from the directory `dir`.
pub fn unlink_at(dir: i32, name: &core::ffi::CStr) {
    // SAFETY: unlinkat with a NUL-terminated name; no flags.
    unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
}

/// Moves the mapping at `from` onto `to` (both `len` bytes), replacing what was mapped there.
///
/// # Safety
/// Both must be mappings this crate created, of `len` bytes; `from` is gone afterwards.
pub unsafe fn move_mapping(from: *mut u8, len: usize, to: *mut u8) -> bool {
    // SAFETY: the caller's obligation; MREMAP_FIXED replaces `to` atomically.
    unsafe {
        libc::mremap(
            from.cast(),
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to.cast::<libc::c_void>(),
        ) != libc::MAP_FAILED
    }
}

extern "C" {
    /// glibc's `on_exit`: as `atexit`, and the handler is told the exit status.
    fn on_exit(f: extern "C" fn(i32, *mut libc::c_void), arg: *mut libc::c_void) -> i32;
}

/// Runs `f` at normal process exit, with the status passed to `exit` (or returned by `main`).
pub fn at_exit(f: extern "C" fn(i32, *mut libc::c_void)) {
    // SAFETY: f is a plain function with the C ABI that lives forever; its argument is unused.
    unsafe { on_exit(f, ptr::null_mut()) };
}

/// Flushes every C stdio stream, then ends the process with `status` at once (no exit handlers
/// run after this: used from the last of them).
pub fn flush_and_exit(status: i32) -> ! {
    // SAFETY: fflush(NULL) flushes all open output streams; exit_group does not return.
    unsafe {
        libc::fflush(ptr::null_mut());
        loop {
            libc::syscall(libc::SYS_exit_group, status);
        }
    }
}

/// A new file for writing (O_EXCL, O_CLOEXEC, mode 0600: a report holds the command line and
/// host name, readable by its owner only whatever the umask); None when it cannot be created.
pub fn create_new(path: &core::ffi::CStr) -> Option<i32> {
    // SAFETY: open with a NUL-terminated path; the descriptor is owned by the caller.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o600 as libc::c_uint,
        )
    };
    (fd >= 0).then_some(fd)
}

/// Flushes a file to its device and closes it; false if either fails.
pub fn sync_and_close(fd: i32) -> bool {
    // SAFETY: fd is a descriptor the caller owns and gives up here.
    unsafe {
        let synced = libc::fsync(fd) == 0;
        libc::close(fd) == 0 && synced
    }
}

/// Renames `from` to `to` (atomically replacing `to` in the same file system).
pub fn rename(from: &core::ffi::CStr, to: &core::ffi::CStr) -> bool {
    // SAFETY: two NUL-terminated paths.
    unsafe { libc::rename(from.as_ptr(), to.as_ptr()) == 0 }
}

/// Removes a file, ignoring failure (cleaning up a temporary file).
pub fn unlink(path: &core::ffi::CStr) {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::unlink(path.as_ptr()) };
}

/// Whether `path` is a directory usable as this user's runtime directory, or absent: not a
/// symbolic link, owned by the effective user, writable by no one else.
pub fn dir_ours_or_absent(path: &core::ffi::CStr) -> bool {
    // SAFETY: lstat with a NUL-terminated path and a zeroed out-struct.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::lstat(path.as_ptr(), &mut st) != 0 {
            return errno() == libc::ENOENT;
        }
        st.st_mode & libc::S_IFMT == libc::S_IFDIR
            && st.st_uid == geteuid()
            && st.st_mode & 0o022 == 0
    }
}

/// Calls `f` with the name of each entry of directory `path` (raw `getdents64` into a stack
/// buffer: usable where nothing may allocate). False if the directory cannot be read.
pub fn for_each_entry(path: &core::ffi::CStr, f: &mut dyn FnMut(&[u8])) -> bool {
    // SAFETY: open/getdents64/close on a descriptor this function owns; entries are parsed
    // within the byte count the kernel returned.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 19 < n as usize {
                // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name...
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                if reclen == 0 || off + reclen > n as usize {
                    break;
                }
                let name = &buf[off + 19..off + reclen];
                let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                f(&name[..end]);
                off += reclen;
            }
        }
        libc::close(fd);
        true
    }
}

/// Creates directory `path` with mode 0700; true if it was created.
pub fn mkdir_private(path: &core::ffi::CStr) -> bool {
    // SAFETY: mkdir with a NUL-terminated path.
    unsafe { libc::mkdir(path.as_ptr(), 0o700) == 0 }
}

/// Whether something (anything, a dangling symbolic link too) stands at `path`.
pub fn path_exists(path: &core::ffi::CStr) -> bool {
    // SAFETY: lstat with a NUL-terminated path and a zeroed out-struct.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        libc::lstat(path.as_ptr(), &mut st) == 0
    }
}

/// Whether this process runs in secure-execution mode (`AT_SECURE`: setuid or setgid, or file
/// capabilities), where the environment belongs to a less privileged caller.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions; it returns 0 for an absent entry.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Whether process `pid` exists (any user's).
pub fn process_exists(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 || errno() == libc::EPERM }
}

/// The status-change time (ns since the epoch) of `name` in directory `dir`, if it is a
/// regular file of the effective user (not followed if a symbolic link).
pub fn own_file_ctime_at(dir: i32, name: &core::ffi::CStr) -> Option<u64> {
    // SAFETY: fstatat into a zeroed out-struct, with a NUL-terminated name.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_uid == geteuid())
        .then(|| st.st_ctime as u64 * 1_000_000_000 + st.st_ctime_nsec as u64)
    }
}

/// One line of `/proc/self/maps`: a mapping's range, permissions (`rw-p`) and name (a path,
/// `[stack]`, `[heap]`, or empty for anonymous memory; truncated to 200 bytes).
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub perms: [u8; 4],
    name: [u8; 200],
    name_len: usize,
}

impl Mapping {
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }
}

/// The mapping that holds `addr`, read from `/proc/self/maps` a buffer at a time: no
/// allocation, so it can be used while reporting from a signal handler.
pub fn mapping_of(addr: usize) -> Option<Mapping> {
    // SAFETY: open/read/close into stack buffers within their lengths.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut line = [0u8; 512];
    let mut len = 0usize;
    let mut found = None;
    'read: loop {
        // SAFETY: as above.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        for &c in &buf[..n as usize] {
            if c != b'\n' {
                if len < line.len() {
                    line[len] = c;
                }
                len += 1;
                continue;
            }
            if let Some(m) = parse_maps_line(&line[..len.min(line.len())]) {
                if m.start <= addr && addr < m.end {
                    found = Some(m);
                    break 'read;
                }
            }
            len = 0;
        }
    }
    // SAFETY: fd was opened above.
    unsafe { libc::close(fd) };
    found
}

/// `start-end perms offset dev inode   name`.
fn parse_maps_line(l: &[u8]) -> Option<Mapping> {
    let hex = |s: &[u8]| -> Option<usize> {
        let mut v = 0usize;
        for &c in s {
            v = v.checked_mul(16)? + (c as char).to_digit(16)? as usize;
        }
        Some(v)
    };
    let mut fields = l.splitn(6, |&c| c == b' ');
    let range = fields.next()?;
    let dash = range.iter().position(|&c| c == b'-')?;
    let perms = fields.next()?;
    let (_, _, _) = (fields.next()?, fields.next()?, fields.next()?);
    let rest = fields.next().unwrap_or(b"");
    let name = match rest.iter().position(|&c| c != b' ') {
        Some(i) => &rest[i..],
        None => b"",
    };
    let mut m = Mapping {
        start: hex(&range[..dash])?,
        end: hex(&range[dash + 1..])?,
        perms: [0; 4],
        name: [0; 200],
        name_len: name.len().min(200),
    };
    m.perms[..perms.len().min(4)].copy_from_slice(&perms[..perms.len().min(4)]);
    m.name[..m.name_len].copy_from_slice(&name[..m.name_len]);
    Some(m)
}

/// What the two helper processes of [`with_helper`] share with the caller's thread: they run
/// in its memory (`CLONE_VM`) until the second one execs, so everything is prepared here and
/// nothing is allocated.
struct HelperArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The helper's end of the socket (its stdin and stdout) and its stderr (`/dev/null`, or
    /// the socket when that cannot be opened).
    sock: i32,
    err: i32,
    /// Top of the exec'd process's stack until it execs.
    exec_stack: usize,
    /// Set by the reaper once the helper is started: its pid, and a pidfd of it (-1 without).
    pid: core::sync::atomic::AtomicI32,
    pidfd: core::sync::atomic::AtomicI32,
}

/// Stack of each helper process before exec: a handful of system calls.
pub const HELPER_STACK: usize = 8 * 1024;

/// The two pre-exec stacks of [`with_helper`]'s processes. The caller provides them (from
/// static memory) so that a report made on a small alternate signal stack does not spend
/// 16 KiB of it.
pub type HelperStacks = [u8; 2 * HELPER_STACK];

/// Runs `path` with `argv` and `envp` (null-terminated arrays the caller keeps alive) as a
/// helper, calls `talk` with the caller's end of a Unix socket that is the helper's stdin and
/// stdout, and makes sure, before returning, that the helper has ended: by `deadline_ns` (of
/// [`now_ns`]) it is killed (SIGKILL, with its process group). None if it could not be
/// started. The helper has `/dev/null` as stderr, no other descriptor of the program's, every
/// signal at its default action and unblocked, and a process group of its own; it is killed
/// if the calling thread dies meanwhile (`PR_SET_PDEATHSIG`, through the reaper).
///
/// Usable from a signal handler of a multi-threaded program: no allocation, no lock, and
/// nothing the program can notice. A process that execs always gets exit signal SIGCHLD (the
/// kernel resets it at exec), so the helper is not the program's child: a reaper is, made with
/// `clone(CLONE_VM | CLONE_FILES)` and exit signal 0, which never execs. It starts the helper
/// (`CLONE_VM | CLONE_VFORK`: no copy of a large program's page tables, no overcommit failure;
/// `CLONE_PIDFD` where the kernel has it, so that killing it can never hit a recycled pid),
/// waits for it with `__WALL` (its SIGCHLD goes to the reaper, which blocks every signal), and
/// exits. The program gets no SIGCHLD; its `wait`/`waitpid(-1)` cannot reap the reaper (they
/// wait for SIGCHLD children only) and the kernel never reaps it behind ufence's back when the
/// program ignores SIGCHLD; ufence reaps it with `__WALL`. Every signal is blocked in the
/// calling thread while the helper is started, so that no handler of the program runs on the
/// helper's side of the shared memory.
pub fn with_helper<R>(
    path: &core::ffi::CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    deadline_ns: u64,
    stacks: &mut HelperStacks,
    talk: impl FnOnce(i32) -> R,
) -> Option<R> {
    use core::sync::atomic::{AtomicI32, Ordering::Acquire};
    if argv.last() != Some(&ptr::null()) || envp.last() != Some(&ptr::null()) {
        return None;
    }
    let mut sv = [-1i32; 2];
    // SAFETY: sv is a valid out-array of two descriptors.
    let ok = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    if ok != 0 {
        return None;
    }
    // SAFETY: opening /dev/null has no preconditions; -1 is handled.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    let base = stacks.as_mut_ptr() as usize;
    let args = HelperArgs {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        sock: sv[1],
        err: if null >= 0 { null } else { sv[1] },
        exec_stack: (base + 2 * HELPER_STACK) & !15,
        pid: AtomicI32::new(0),
        pidfd: AtomicI32::new(-1),
    };
    // SAFETY: a filled sigset_t is valid; blocking every signal is always allowed (the kernel
    // ignores SIGKILL and SIGSTOP in it).
    let old = unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        sigmask(libc::SIG_SETMASK, &all)
    };
    // SAFETY: `helper_reaper` only reads `args`, writes its two atomics and makes system calls;
    // `args` and `stacks` outlive both processes, because this function waits for the reaper
    // (which outlives the helper) before returning. Exit signal 0: no SIGCHLD in the flags.
    let reaper = unsafe {
        libc::clone(
            helper_reaper,
            ((base + HELPER_STACK) & !15) as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_FILES,
            &args as *const HelperArgs as *mut libc::c_void,
        )
    };
    sigmask(libc::SIG_SETMASK, &old);
    if reaper <= 0 {
        close(sv[1]);
        if null >= 0 {
            close(null);
        }
        close(sv[0]);
        return None;
    }
    // The reaper shares our descriptor table: the helper's end of the socket and /dev/null
    // stay open in it until the helper has its own copy (it has exec'd, or failed to start).
    let mut reaped = false;
    while args.pid.load(Acquire) == 0 && now_ns() < deadline_ns {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        if unsafe { libc::waitpid(reaper, &mut status, libc::WNOHANG | libc::__WALL) } == reaper {
            reaped = true;
            break;
        }
        nap(100_000);
    }
    close(sv[1]);
    if null >= 0 {
        close(null);
    }
    // Only the caller's end: it is a socket of its own, so the helper's stays blocking.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(sv[0], libc::F_GETFL);
        libc::fcntl(sv[0], libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let r = talk(sv[0]);
    close(sv[0]);
    // The helper answered (or not): it has until the deadline to exit, the reaper with it.
    if !reaped && !wait_exit(reaper, deadline_ns) {
        let pid = args.pid.load(Acquire);
        let pidfd = args.pidfd.load(Acquire);
        // SAFETY: signals to the helper: through its pidfd when there is one (it names that
        // process and no other); else by pid and process group, which cannot have been reused
        // while the reaper, alive, has not reaped it.
        unsafe {
            if pidfd >= 0 {
                libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, 0, 0);
            }
            if pid > 0 {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if !wait_exit(reaper, now_ns() + 500_000_000) {
            // SAFETY: the reaper is our unreaped child. Killed, it leaves the helper (if any
            // is left) to init.
            unsafe { libc::kill(reaper, libc::SIGKILL) };
            wait_exit(reaper, u64::MAX);
        }
    }
    // The reaper shared our descriptor table: the pidfd it made is ours to close.
    let pidfd = args.pidfd.load(Acquire);
    if pidfd >= 0 {
        close(pidfd);
    }
    core::hint::black_box(stacks);
    Some(r)
}

/// Waits for our `__WALL` child `pid` to exit until `deadline_ns`; true once it is reaped (or
/// cannot be waited for any more: ECHILD).
fn wait_exit(pid: i32, deadline_ns: u64) -> bool {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if r == pid || (r < 0 && errno() != libc::EINTR) {
            return true;
        }
        if now_ns() >= deadline_ns {
            return false;
        }
        nap(1_000_000);
    }
}

/// Sleeps `ns` nanoseconds (under a second); async-signal-safe.
fn nap(ns: u64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ns.min(999_999_999) as i64,
    };
    // SAFETY: a valid timespec; nanosleep is async-signal-safe.
    unsafe { libc::nanosleep(&ts, ptr::null_mut()) };
}

/// The reaper of [`with_helper`]: starts the helper, publishes its pid (and pidfd), waits for
/// it, exits. Runs in the caller's memory with every signal blocked: raw system calls only, and
/// the caller thread's `errno` is its too (the caller restores it afterwards).
extern "C" fn helper_reaper(arg: *mut libc::c_void) -> i32 {
    use core::sync::atomic::Ordering::Release;
    // SAFETY: arg is the HelperArgs of with_helper, alive until this process has exited.
    unsafe {
        let a = &*(arg as *const HelperArgs);
        // Should the reporting thread die (the program killed meanwhile), so does the reaper,
        // and with it the helper (below).
        libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let mut pidfd: i32 = -1;
        let mut pid = libc::clone(
            helper_exec,
            a.exec_stack as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            arg,
            &mut pidfd as *mut i32,
        );
        if pid <= 0 {
            // A kernel without CLONE_PIDFD (before 5.2).
            pidfd = -1;
            pid = libc::clone(
                helper_exec,
                a.exec_stack as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                arg,
            );
        }
        if pid > 0 {
            a.pidfd.store(pidfd, Release);
            a.pid.store(pid, Release);
            // One blocking wait: with every signal blocked it cannot be interrupted, and no one
            // else can reap this process's child.
            let mut status = 0;
            libc::syscall(
                libc::SYS_wait4,
                pid,
                &mut status as *mut i32,
                libc::__WALL,
                ptr::null_mut::<libc::rusage>(),
            );
        }
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

/// The helper before exec: its descriptors, signals and process group, then `execve`. Runs in
/// the caller's memory while the reaper waits (vfork): raw system calls only.
extern "C" fn helper_exec(arg: *mut libc::c_void) -> i32 {
    // SAFETY: arg is the HelperArgs of with_helper, alive while the reaper is suspended; every
    // call is a plain system call on values prepared by the caller.
    unsafe {
        let a = &*(arg as *const HelperArgs);
        let sys = |n: libc::c_long, a1: usize, a2: usize, a3: usize| -> libc::c_long {
            libc::syscall(n, a1, a2, a3)
        };
        // A process group of its own: a late helper is killed with whatever it started. Killed
        // too if the reaper dies (kept across execve).
        sys(libc::SYS_setpgid, 0, 0, 0);
        sys(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG as usize,
            libc::SIGKILL as usize,
            0,
        );
        // Move both descriptors above 2 first: when the program closed its standard streams,
        // the socket may itself be 0, 1 or 2, and dup2 onto itself would keep it close-on-exec.
        let sock = sys(libc::SYS_fcntl, a.sock as usize, libc::F_DUPFD as usize, 3);
        let err = sys(libc::SYS_fcntl, a.err as usize, libc::F_DUPFD as usize, 3);
        if sock < 0 || err < 0 {
            sys(libc::SYS_exit, 127, 0, 0);
        }
        sys(libc::SYS_dup2, sock as usize, 0, 0);
        sys(libc::SYS_dup2, sock as usize, 1, 0);
        sys(libc::SYS_dup2, err as usize, 2, 0);
        // Nothing else of the program's: its descriptors without O_CLOEXEC too.
        if sys(libc::SYS_close_range, 3, u32::MAX as usize, 0) != 0 {
            for fd in 3..4096 {
                sys(libc::SYS_close, fd, 0, 0);
            }
        }
        // Handlers are the program's code in memory this process shares: back to the defaults
        // (ignored signals stay ignored, as across exec), then unblock everything. The kernel's
        // own sigaction: glibc's refuses its internal signals (and would write errno).
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: u64,
            restorer: usize,
            mask: u64,
        }
        for sig in 1..65usize {
            let mut cur = KernelSigaction {
                handler: 0,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            let q = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                ptr::null::<KernelSigaction>(),
                &mut cur as *mut KernelSigaction,
                8usize,
            );
            if q == 0 && cur.handler != libc::SIG_IGN && cur.handler != libc::SIG_DFL {
                let dfl = KernelSigaction {
                    handler: libc::SIG_DFL,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let none = 0u64;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            ptr::null_mut::<u64>(),
            8usize,
        );
        libc::syscall(libc::SYS_execve, a.path, a.argv, a.envp);
        sys(libc::SYS_exit, 127, 0, 0);
    }
    127
}

/// Why [`exchange`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeError {
    /// The deadline passed first.
    Timeout,
    /// The answer did not fit in the buffer.
    TooLong,
    /// A system call failed.
    Failed,
}

/// Writes `request` to the helper's socket, then closes its writing side, and reads the answer
/// into `answer` until the helper closes the socket: both at once, so that neither side can
/// block the other on a full socket buffer. Gives up at `deadline_ns` (of [`now_ns`]). Writes
/// with MSG_NOSIGNAL: a helper that dies early costs no SIGPIPE. Returns the answer's length.
pub fn exchange(
    fd: i32,
    request: &[u8],
    answer: &mut [u8],
    deadline_ns: u64,
) -> Result<usize, ExchangeError> {
    let mut sent = 0;
    let mut got = 0;
    let mut shut = false;
    loop {
        if sent == request.len() && !shut {
            // SAFETY: shutdown on a socket we own.
            unsafe { libc::shutdown(fd, libc::SHUT_WR) };
            shut = true;
        }
        let now = now_ns();
        if now >= deadline_ns {
            return Err(ExchangeError::Timeout);
        }
        let wait_ms = (deadline_ns - now).div_ceil(1_000_000).min(i32::MAX as u64) as i32;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN | if shut { 0 } else { libc::POLLOUT },
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(ExchangeError::Failed);
        }
        if n == 0 {
            continue;
        }
        if pfd.revents & libc::POLLOUT != 0 && !shut {
            let rest = &request[sent..];
            // SAFETY: rest is a valid readable slice.
            let w = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if w > 0 {
                sent += w as usize;
            } else if w < 0 && !matches!(errno(), libc::EAGAIN | libc::EINTR) {
                return Err(ExchangeError::Failed);
            }
        }
        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            if got == answer.len() {
                return Err(ExchangeError::TooLong);
            }
            let room = &mut answer[got..];
            // SAFETY: room is a valid writable slice.
            let r = unsafe { libc::read(fd, room.as_mut_ptr().cast(), room.len()) };
            if r > 0 {
                got += r as usize;
            } else if r == 0 {
                return Ok(got);
            } else if !matches!(errno(), libc::EAGAIN | libc::EINTR) {
                return Err(ExchangeError::Failed);
            }
        }
    }
}
