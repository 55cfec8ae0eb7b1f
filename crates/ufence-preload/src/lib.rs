//! libufence.so: the C ABI of ufence for `LD_PRELOAD`.
//!
//! Exports the whole malloc family. Each entry point does the sampling check (a thread-local
//! decrement and a branch) and otherwise forwards to the allocator behind ufence in the
//! program's lookup order (glibc's, or jemalloc, tcmalloc, mimalloc: see [`next`]), and so do
//! the other allocators' own entry points that take a pointer ([`extended`]) and the C++
//! operators ([`cxx`]). Sampled requests are served from the guarded pool by the `ufence`
//! crate. Semantics (return values, `errno`, edge cases) are the next allocator's: the sampled
//! path only takes requests it can serve exactly as glibc would (size 0 too: a unique pointer
//! that no access may use), and leaves everything unusual (bad alignments, sizes over
//! `max_object_size`) to the next allocator.
//!
//! The crate is built with `panic = "abort"`, and nothing here can panic: no unwinding ever
//! crosses the C ABI.

// The exported functions are the C library's malloc family: their callers are C programs bound
// by the C contract (pass pointers these functions returned), not Rust code that could be
// protected by an `unsafe` marker.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use ufence_core as uf;

mod cxx;
mod extended;
mod next;

pub(crate) static DEFAULTS: uf::Options = uf::Options::DEFAULT;

/// The alignment malloc gives `size` bytes: glibc's MALLOC_ALIGNMENT, 16, whatever the size.
/// C17 would allow less for small sizes (and less would let the guard page sit right after
/// more small objects), but glibc documents 16, GCC folds `(uintptr_t)malloc(n) & 7` to 0, and
/// programs keep tags in the low bits of malloc'd pointers: a detector must not break them.
/// Overflows into the slack this leaves are writes caught by the canary at free.
#[inline]
fn natural_align(_size: usize) -> usize {
    16
}

// Every entry point is the sampling check (or, for `free`, the pool range check) followed by a
// tail call into the next allocator; whatever else a sampled request needs lives in the
// `#[cold]` functions below, out of line, so the fast path needs no stack frame.

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    if uf::sample_tick() {
        return malloc_sampled(size);
    }
    // SAFETY: the next allocator's malloc accepts any size.
    unsafe { next::MALLOC.get()(size) }
}

#[cold]
#[inline(never)]
fn malloc_sampled(size: usize) -> *mut c_void {
    let p = uf::alloc_slow(size, natural_align(size), uf::routine::MALLOC, &DEFAULTS);
    if !p.is_null() {
        return p.cast();
    }
    // SAFETY: as in malloc.
    unsafe { next::MALLOC.get()(size) }
}

#[no_mangle]
pub extern "C" fn free(p: *mut c_void) {
    if uf::owns(p.cast()) {
        return free_pool_as(p, uf::routine::FREE);
    }
    // SAFETY: not a pool pointer, so it is the next allocator's (or null, which it accepts).
    unsafe { next::FREE.get()(p) }
}

/// Releases a pool object through an entry point of no family (the other allocators' own
/// APIs): never an alloc-dealloc mismatch.
#[cold]
#[inline(never)]
pub(crate) fn free_pool(p: *mut c_void) {
    free_pool_as(p, uf::routine::ANY)
}

/// Releases a pool object through `routine` (`uf::routine`), which the detector checks against
/// the routine that allocated it.
#[cold]
#[inline(never)]
pub(crate) fn free_pool_as(p: *mut c_void, routine: u8) {
    let e = uf::sys::errno();
    uf::free_slow(p.cast(), routine);
    uf::sys::set_errno(e);
}

/// glibc's `cfree`, an old alias of `free` some programs still call.
#[no_mangle]
pub extern "C" fn cfree(p: *mut c_void) {
    free(p)
}

#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    if uf::sample_tick() {
        return calloc_sampled(n, size);
    }
    // SAFETY: the next allocator's calloc checks the overflow itself and sets ENOMEM.
    unsafe { next::CALLOC.get()(n, size) }
}

#[cold]
#[inline(never)]
fn calloc_sampled(n: usize, size: usize) -> *mut c_void {
    if let Some(total) = n.checked_mul(size) {
        let p = uf::alloc_slow(total, natural_align(total), uf::routine::CALLOC, &DEFAULTS);
        if !p.is_null() {
            // SAFETY: p is a fresh pool object of `total` writable bytes.
            unsafe { core::ptr::write_bytes(p, 0, total) };
            return p.cast();
        }
    }
    // SAFETY: as in calloc.
    unsafe { next::CALLOC.get()(n, size) }
}

#[no_mangle]
pub extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    if uf::owns(p.cast()) {
        return realloc_pool(p, size);
    }
    if size != 0 && uf::sample_tick() {
        return realloc_sampled(p, size);
    }
    // SAFETY: p is the next allocator's.
    unsafe { next::REALLOC.get()(p, size) }
}

/// realloc of a pool object: it always moves, so the old address is a use-after-free trap.
#[cold]
#[inline(never)]
fn realloc_pool(p: *mut c_void, size: usize) -> *mut c_void {
    if size == 0 {
        // glibc frees and returns NULL for realloc(p, 0).
        free_pool_as(p, uf::routine::REALLOC);
        return core::ptr::null_mut();
    }
    let Some(old) = uf::object_size(p.cast()) else {
        // Not a live object: let free() report the double or invalid free. In continue mode
        // the program gets fresh memory, as if the bad pointer had been NULL.
        free_pool_as(p, uf::routine::REALLOC);
        return malloc(size);
    };
    let new = malloc(size);
    if !new.is_null() {
        // SAFETY: both objects are live and at least min(old, size) bytes long.
        unsafe { core::ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast(), old.min(size)) };
        free_pool_as(p, uf::routine::REALLOC);
    }
    new
}

/// realloc of the next allocator's chunk that the sampler picked: it moves into the pool, if
/// that allocator can say how many bytes the chunk holds.
#[cold]
#[inline(never)]
fn realloc_sampled(p: *mut c_void, size: usize) -> *mut c_void {
    let (new, old) = match next::usable_size(p) {
        Some(old) => (
            uf::alloc_slow(size, natural_align(size), uf::routine::REALLOC, &DEFAULTS),
            old,
        ),
        None => (core::ptr::null_mut(), 0),
    };
    if new.is_null() {
        // SAFETY: p is the next allocator's.
        return unsafe { next::REALLOC.get()(p, size) };
    }
    // SAFETY: p is a live chunk of the next allocator with `old` usable bytes; new has `size`
    // bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(p.cast::<u8>(), new, old.min(size));
        next::FREE.get()(p);
    }
    new.cast()
}

#[no_mangle]
pub extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => realloc(p, total),
        None => {
            uf::sys::set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

#[inline]
fn valid_power_of_two(align: usize) -> bool {
    align != 0 && align & (align - 1) == 0
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    memalign_as(align, size, uf::routine::MEMALIGN)
}

/// `memalign` on behalf of `routine` (which the object remembers).
#[inline(always)]
fn memalign_as(align: usize, size: usize, routine: u8) -> *mut c_void {
    if uf::sample_tick() {
        return memalign_sampled(align, size, routine);
    }
    // SAFETY: the next allocator handles odd alignments (glibc rounds up) and sets errno.
    unsafe { next::MEMALIGN.get()(align, size) }
}

/// Only requests glibc would serve as asked (a power-of-two alignment) go to the pool;
/// everything unusual keeps glibc's own answer.
#[cold]
#[inline(never)]
fn memalign_sampled(align: usize, size: usize, routine: u8) -> *mut c_void {
    if valid_power_of_two(align) {
        let p = uf::alloc_slow(size, align.max(natural_align(size)), routine, &DEFAULTS);
        if !p.is_null() {
            return p.cast();
        }
    }
    // SAFETY: as in memalign.
    unsafe { next::MEMALIGN.get()(align, size) }
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    memalign_as(align, size, uf::routine::ALIGNED_ALLOC)
}

#[no_mangle]
pub extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    let word = core::mem::size_of::<usize>();
    if !align.is_multiple_of(word) || !valid_power_of_two(align / word) {
        return libc::EINVAL;
    }
    let e = uf::sys::errno();
    let p = memalign_as(align, size, uf::routine::POSIX_MEMALIGN);
    uf::sys::set_errno(e);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a valid out-pointer, as posix_memalign requires.
    unsafe { *out = p };
    0
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    if uf::sample_tick() {
        let p = uf::alloc_slow(size, uf::sys::page_size(), uf::routine::VALLOC, &DEFAULTS);
        if !p.is_null() {
            return p.cast();
        }
    }
    // SAFETY: the next allocator's valloc accepts any size.
    unsafe { next::VALLOC.get()(size) }
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    if uf::sample_tick() {
        let page = uf::sys::page_size();
        // pvalloc(0) stays glibc's (a minimum chunk the program may use), not a 0-byte object.
        if let Some(rounded) = size.checked_next_multiple_of(page).filter(|&r| r > 0) {
            let p = uf::alloc_slow(rounded, page, uf::routine::PVALLOC, &DEFAULTS);
            if !p.is_null() {
                return p.cast();
            }
        }
    }
    // SAFETY: the next allocator's pvalloc accepts any size.
    unsafe { next::PVALLOC.get()(size) }
}

#[no_mangle]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    if uf::owns(p.cast()) {
        // The requested size, so that a program filling its usable size stays in bounds.
        return uf::object_size(p.cast()).unwrap_or(0);
    }
    // SAFETY: p is the next allocator's, and this its malloc_usable_size (or the one the
    // program would have called without ufence).
    unsafe { next::USABLE_SIZE.get()(p) }
}

/// The next definition of `name` in the program's lookup order, looked up once into `cache`;
/// 0 when there is none. For the few non-allocator functions the preload wraps (never called
/// from an allocator or signal path, so `dlsym` may allocate here).
fn next_symbol(cache: &AtomicUsize, name: &core::ffi::CStr) -> usize {
    let mut f = cache.load(Ordering::Relaxed);
    if f == 0 {
        // SAFETY: dlsym with a NUL-terminated name.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        cache.store(f, Ordering::Relaxed);
    }
    f
}

/// `dlclose`, then ufence forgets the unwind rules it cached: the library's code is gone, and
/// the next library loaded may be mapped at its addresses with other rules.
#[no_mangle]
pub extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    type Real = unsafe extern "C" fn(*mut c_void) -> c_int;
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let f = next_symbol(&REAL, c"dlclose");
    if f == 0 {
        return -1;
    }
    // SAFETY: the C library's dlclose, which has this signature; the caller's handle.
    let r = unsafe { core::mem::transmute::<usize, Real>(f)(handle) };
    uf::forget_unwind_rules();
    r
}

/// `prctl`: the next definition's (another interposer's, or the C library's), and a thread
/// renaming itself (`PR_SET_NAME`) is noted, so that ufence's records, which keep each
/// thread's name, read it again. Declared with the five integer arguments the system call
/// takes: on x86-64 a variadic caller passes them in the same registers, and the callee reads
/// them the same way.
#[no_mangle]
pub extern "C" fn prctl(
    option: c_int,
    a2: libc::c_ulong,
    a3: libc::c_ulong,
    a4: libc::c_ulong,
    a5: libc::c_ulong,
) -> c_int {
    type Real = unsafe extern "C" fn(
        c_int,
        libc::c_ulong,
        libc::c_ulong,
        libc::c_ulong,
        libc::c_ulong,
    ) -> c_int;
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let f = next_symbol(&REAL, c"prctl");
    let r = if f == 0 {
        // SAFETY: the system call with the caller's arguments, as glibc's prctl makes it (it
        // sets errno on failure the same way).
        unsafe { libc::syscall(libc::SYS_prctl, option, a2, a3, a4, a5) as c_int }
    } else {
        // SAFETY: the next prctl, called with the integer arguments its variadic callers pass.
        unsafe { core::mem::transmute::<usize, Real>(f)(option, a2, a3, a4, a5) }
    };
    if option == libc::PR_SET_NAME {
        uf::thread_renamed();
    }
    r
}

/// `pthread_setname_np`: the C library's, then ufence reads thread names again (see `prctl`).
#[no_mangle]
pub extern "C" fn pthread_setname_np(thread: libc::pthread_t, name: *const c_char) -> c_int {
    type Real = unsafe extern "C" fn(libc::pthread_t, *const c_char) -> c_int;
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let f = next_symbol(&REAL, c"pthread_setname_np");
    if f == 0 {
        return libc::ENOSYS;
    }
    // SAFETY: the C library's pthread_setname_np, which has this signature; the caller's args.
    let r = unsafe { core::mem::transmute::<usize, Real>(f)(thread, name) };
    uf::thread_renamed();
    r
}

extern "C" {
    /// glibc's `signal` (BSD semantics), under the name the preload does not replace.
    fn bsd_signal(sig: i32, handler: libc::sighandler_t) -> libc::sighandler_t;
}

/// Keeps ufence's SIGSEGV/SIGBUS (and SIGABRT) handler in front: a program (or a runtime such as Rust's std)
/// that installs its own gets it recorded as the handler ufence passes foreign faults to, and
/// reads back what it would have found without ufence. Other signals are untouched.
#[no_mangle]
pub extern "C" fn sigaction(
    sig: i32,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> i32 {
    // SAFETY: the caller passes null or valid pointers, as sigaction(2) requires.
    let (new, old_ref) = unsafe { (act.as_ref(), old.as_mut()) };
    if uf::chained_sigaction(sig, new, old_ref) {
        return 0;
    }
    // SAFETY: the caller's pointers, passed on unchanged.
    unsafe { uf::sys::real_sigaction(sig, act, old) }
}

/// `signal` for SIGSEGV/SIGBUS/SIGABRT, as `sigaction` above (glibc's own `signal` would not come
/// through our `sigaction`).
#[no_mangle]
pub extern "C" fn signal(sig: i32, handler: libc::sighandler_t) -> libc::sighandler_t {
    if sig == libc::SIGSEGV || sig == libc::SIGBUS || sig == libc::SIGABRT {
        // SAFETY: building a sigaction as glibc's BSD-style signal() does.
        let act = unsafe {
            let mut act: libc::sigaction = core::mem::zeroed();
            act.sa_sigaction = handler;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaddset(&mut act.sa_mask, sig);
            act
        };
        // SAFETY: a zeroed sigaction is a valid out-value.
        let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
        if uf::chained_sigaction(sig, Some(&act), Some(&mut old)) {
            return old.sa_sigaction;
        }
    }
    // SAFETY: glibc's signal with the caller's arguments.
    unsafe { bsd_signal(sig, handler) }
}

/// `_exit` and `_Exit` skip `atexit` handlers, and shells (dash's `exit`), forked children and
/// many daemons end that way: without this, every such process would leave its control file
/// behind as if it had crashed. Removes the file (only the process that owns it: a `vfork`
/// child shares its parent's block) and ends the process as glibc's `_exit` does, with
/// `exitcode` applied when this process reported a bug and would have exited 0.
#[no_mangle]
pub extern "C" fn _exit(status: i32) -> ! {
    uf::check_at_exit();
    uf::control::at_exit();
    let status = uf::exit_status(status);
    loop {
        // SAFETY: exit_group ends every thread of the process; it does not return.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
}

/// As [`_exit`] (C99's name for it).
#[no_mangle]
pub extern "C" fn _Exit(status: i32) -> ! {
    _exit(status)
}

/// The `exec` family: the new image may not run under ufence (a setuid or static program, a
/// cleaned environment), and could then never remove this process's control file, which
/// `ufence ps` would show as stale. The name is withdrawn first and published again if the
/// exec fails. (The variadic `execl*` cannot be written in stable Rust; glibc's own go to its
/// internal `execve`, so those still leave the file, as does a raw `execve` system call.)
///
/// The C library's functions are found when the library is loaded, as the allocator's are
/// ([`next`]): a forked child of a threaded program (Rust's `Command` does this) calls
/// `execvp`, and must not take the loader's lock there.
macro_rules! exec_wrappers {
    ($($name:ident, $cname:literal, ($($arg:ident: $ty:ty),*);)+) => {
        /// The C library's exec functions, in the order of the wrappers below.
        static REAL_EXEC: [AtomicUsize; [$($cname),+].len()] =
            [const { AtomicUsize::new(0) }; [$($cname),+].len()];

        fn resolve_exec() {
            for (slot, name) in REAL_EXEC.iter().zip([$($cname),+]) {
                // SAFETY: dlsym with a NUL-terminated name, from the library's constructor.
                let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
                slot.store(f as usize, Ordering::Relaxed);
            }
        }

        exec_wrappers!(@each 0usize, $($name, $cname, ($($arg: $ty),*);)+);
    };
    (@each $i:expr, $name:ident, $cname:literal, ($($arg:ident: $ty:ty),*); $($rest:tt)*) => {
        #[no_mangle]
        pub extern "C" fn $name($($arg: $ty),*) -> c_int {
            type Real = extern "C" fn($($ty),*) -> c_int;
            let mut f = REAL_EXEC[$i].load(Ordering::Relaxed) as *mut c_void;
            if f.is_null() {
                // Called before the constructor ran (from another library's).
                // SAFETY: dlsym with a NUL-terminated name.
                f = unsafe { libc::dlsym(libc::RTLD_NEXT, $cname.as_ptr()) };
            }
            if f.is_null() {
                uf::sys::set_errno(libc::ENOSYS);
                return -1;
            }
            // SAFETY: the C library's function of this name has exactly this signature.
            let real: Real = unsafe { core::mem::transmute::<*mut c_void, Real>(f) };
            let withdrawn = uf::control::before_exec();
            let r = real($($arg),*);
            if withdrawn {
                let e = uf::sys::errno();
                uf::control::after_failed_exec();
                uf::sys::set_errno(e);
            }
            r
        }
        exec_wrappers!(@each $i + 1, $($rest)*);
    };
    (@each $i:expr, ) => {};
}

type Args = *const *const c_char;
exec_wrappers! {
    execve, c"execve", (path: *const c_char, argv: Args, envp: Args);
    execv, c"execv", (path: *const c_char, argv: Args);
    execvp, c"execvp", (file: *const c_char, argv: Args);
    execvpe, c"execvpe", (file: *const c_char, argv: Args, envp: Args);
    fexecve, c"fexecve", (fd: c_int, argv: Args, envp: Args);
}

extern "C" {
    /// glibc's `dladdr` with the symbol's ELF entry (`RTLD_DL_SYMENT`), for its size.
    fn dladdr1(
        addr: *const c_void,
        info: *mut libc::Dl_info,
        extra: *mut *mut c_void,
        flags: c_int,
    ) -> c_int;
}
const RTLD_DL_SYMENT: c_int = 1;

/// `[start, end)` of the code of the function that starts at `f`, from its dynamic symbol;
/// `(0, 0)` when that cannot be known.
fn function_range(f: usize) -> (usize, usize) {
    // SAFETY: dladdr1 with valid out-pointers; it fills `info` and points `sym` at the symbol's
    // entry in the module's dynamic symbol table, which stays mapped while the module is.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let mut sym: *mut c_void = core::ptr::null_mut();
        if dladdr1(f as *const c_void, &mut info, &mut sym, RTLD_DL_SYMENT) == 0 || sym.is_null() {
            return (0, 0);
        }
        let size = (*sym.cast::<libc::Elf64_Sym>()).st_size as usize;
        if info.dli_saddr as usize != f || size == 0 {
            return (0, 0);
        }
        (f, f + size)
    }
}

/// Marks the process as running under the preload (so reports cut this library's frames) and
/// starts ufence early, before `main`, so that option warnings come first. Tells ufence where
/// the allocator's `free` and `realloc` are, for the invalid frees it can only catch there.
extern "C" fn on_load() {
    uf::mark_preload();
    next::ensure();
    uf::set_forwarded_frees(
        function_range(next::FREE.get() as usize),
        function_range(next::REALLOC.get() as usize),
    );
    resolve_exec();
    uf::start(&DEFAULTS);
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
