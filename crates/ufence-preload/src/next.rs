//! The allocator behind ufence: where every unsampled call goes.
//!
//! That is whatever follows libufence.so in the program's symbol lookup order: glibc's malloc
//! for most programs, but jemalloc, tcmalloc or mimalloc for a program linked against one of
//! them as a shared library (redis on `libjemalloc.so.2`), or another preloaded library. Memory
//! from one allocator must never reach another, so each function of the family is looked up
//! with `dlsym(RTLD_NEXT)`, as the program itself would have found it without ufence. Where
//! the allocator that provides `malloc` lacks a function (jemalloc has no `pvalloc`), it is
//! made from that allocator's `memalign` rather than taken from the next library (glibc's
//! `pvalloc` would hand glibc memory to jemalloc's `free`).
//!
//! The lookup runs in the library's constructor; a call that comes earlier (from another
//! library's constructor, or from the loader) finds the table still pointing at the
//! `boot_*` functions below, which do the lookup first. Each entry point then costs what the
//! jump through the GOT to `__libc_malloc` cost before: one indirect jump through a pointer.

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use ufence_core as uf;

extern "C" {
    // glibc's own allocator, under names no other allocator replaces (tcmalloc and mimalloc
    // define them too, and then these are theirs, which is as good). Used only when the lookup
    // finds nothing, or for a call the lookup itself makes.
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
}

pub type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
pub type FreeFn = unsafe extern "C" fn(*mut c_void);
pub type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type MemalignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;

/// One function of the next allocator: a pointer, written at lookup, read on every call.
///
/// Read with a plain load rather than an atomic one, so that the call compiles to a single
/// `jmp *ptr(%rip)`, as the jump through the GOT did (a relaxed atomic load is not folded into
/// the jump and costs an instruction more on every allocation and free).
#[repr(C)]
pub struct Next<F> {
    ptr: UnsafeCell<*mut c_void>,
    _f: PhantomData<F>,
}

// SAFETY: the pointer is an aligned machine word, written by `set` with a volatile store and
// read by `get`: on x86-64 each is a single instruction, so a reader sees the old function or
// the new one, never a torn value, and both are functions of type F (see `get`).
unsafe impl<F> Sync for Next<F> {}

impl<F: Copy> Next<F> {
    /// An entry that starts at `boot` (a function of type `F`).
    pub const fn new(boot: *mut c_void) -> Self {
        Next {
            ptr: UnsafeCell::new(boot),
            _f: PhantomData,
        }
    }

    /// The function to call.
    #[inline(always)]
    pub fn get(&self) -> F {
        const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<*mut c_void>()) };
        // SAFETY: the entry only ever holds a non-null function of type F: its `boot` function,
        // then what `set` stored (checked non-null there, and of the type F by construction);
        // the load is a single aligned word (see the Sync impl).
        unsafe { core::mem::transmute_copy::<*mut c_void, F>(&*self.ptr.get()) }
    }

    /// Points the entry at `f`, a function of type `F` (or leaves it alone if `f` is null).
    pub fn set(&self, f: *mut c_void) {
        if !f.is_null() {
            // SAFETY: an aligned word of this static; see the Sync impl for concurrent readers.
            unsafe { core::ptr::write_volatile(self.ptr.get(), f) };
        }
    }
}

pub static MALLOC: Next<MallocFn> = Next::new(boot_malloc as *mut c_void);
pub static FREE: Next<FreeFn> = Next::new(boot_free as *mut c_void);
pub static CALLOC: Next<CallocFn> = Next::new(boot_calloc as *mut c_void);
pub static REALLOC: Next<ReallocFn> = Next::new(boot_realloc as *mut c_void);
pub static MEMALIGN: Next<MemalignFn> = Next::new(boot_memalign as *mut c_void);
pub static VALLOC: Next<MallocFn> = Next::new(boot_valloc as *mut c_void);
pub static PVALLOC: Next<MallocFn> = Next::new(boot_pvalloc as *mut c_void);
pub static USABLE_SIZE: Next<UsableFn> = Next::new(boot_usable_size as *mut c_void);
/// The allocator's `posix_memalign`, when its `memalign` is made from it.
static POSIX_MEMALIGN: Next<PosixMemalignFn> = Next::new(boot_posix_memalign as *mut c_void);

/// Whether `USABLE_SIZE` belongs to the allocator that provides `malloc`, so that ufence may
/// use it to learn how many bytes of one of its chunks it can copy.
static USABLE_SIZE_KNOWN: AtomicBool = AtomicBool::new(false);

/// Set once the table has been filled.
static DONE: AtomicBool = AtomicBool::new(false);

/// The base address of the object that provides `malloc` (0 until looked up).
static MALLOC_OBJECT: AtomicUsize = AtomicUsize::new(0);

/// The allocator's usable size of `p`, one of its own chunks, if ufence may ask it.
pub fn usable_size(p: *mut c_void) -> Option<usize> {
    ensure();
    if !USABLE_SIZE_KNOWN.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: p is a live chunk of the next allocator (the caller's contract), and this is
    // that allocator's own malloc_usable_size.
    Some(unsafe { USABLE_SIZE.get()(p) })
}

/// The load address of the object (executable or library) that holds `f`, 0 if none. Through
/// `_dl_find_object` (`sys::module_of`): `dladdr` would also look for the nearest symbol, which
/// cost more than half a million instructions over the lookups of one start.
fn object_of(f: *mut c_void) -> usize {
    if f.is_null() {
        return 0;
    }
    uf::sys::module_of(f as usize).map_or(0, |(base, _)| base)
}

/// The next definition of `name` after this library, or null.
pub fn lookup(name: &core::ffi::CStr) -> *mut c_void {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT is relative to this library, whose
    // code makes the call.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) }
}

/// The next definition of `name` if it belongs to the allocator that provides `malloc`.
pub fn lookup_same(name: &core::ffi::CStr) -> *mut c_void {
    let f = lookup(name);
    let base = MALLOC_OBJECT.load(Ordering::Relaxed);
    if base != 0 && object_of(f) == base {
        f
    } else {
        core::ptr::null_mut()
    }
}

/// Whether `f` is defined in the object that provides `malloc`, or in the C++ runtime
/// (whose `operator new` is `malloc` and a retry loop).
pub fn with_malloc_or_cxx_runtime(f: *mut c_void) -> bool {
    if f.is_null() {
        return false;
    }
    let Some((base, path)) = uf::sys::module_of(f as usize) else {
        return false;
    };
    if base == MALLOC_OBJECT.load(Ordering::Relaxed) {
        return true;
    }
    let name = path.to_bytes();
    let file = name.rsplit(|&c| c == b'/').next().unwrap_or(name);
    file.starts_with(b"libstdc++.so") || file.starts_with(b"libc++.so")
}

/// Fills the table once (from the constructor, or from the first call that comes before it).
/// Returns false for a call made by the lookup itself, which must go to glibc directly.
pub fn ensure() -> bool {
    if DONE.load(Ordering::Acquire) {
        return true;
    }
    if !uf::begin_lookup() {
        return false;
    }
    // Several threads may look up at once (only before the constructor has run): each writes
    // the same values.
    fill();
    DONE.store(true, Ordering::Release);
    uf::end_lookup();
    true
}

fn fill() {
    let malloc = lookup(c"malloc");
    MALLOC_OBJECT.store(object_of(malloc), Ordering::Relaxed);
    MALLOC.set(or(malloc, __libc_malloc as *mut c_void));
    FREE.set(or(lookup(c"free"), __libc_free as *mut c_void));
    CALLOC.set(or(lookup(c"calloc"), __libc_calloc as *mut c_void));
    REALLOC.set(or(lookup(c"realloc"), __libc_realloc as *mut c_void));

    // The aligned functions: the allocator's own, else made from what it has.
    let memalign = lookup_same(c"memalign");
    let posix = lookup_same(c"posix_memalign");
    if !memalign.is_null() {
        MEMALIGN.set(memalign);
    } else if !posix.is_null() {
        POSIX_MEMALIGN.set(posix);
        MEMALIGN.set(memalign_from_posix as *mut c_void);
    } else {
        MEMALIGN.set(or(lookup(c"memalign"), __libc_memalign as *mut c_void));
    }
    VALLOC.set(or(
        lookup_same(c"valloc"),
        valloc_from_memalign as *mut c_void,
    ));
    PVALLOC.set(or(
        lookup_same(c"pvalloc"),
        pvalloc_from_memalign as *mut c_void,
    ));

    let usable = lookup(c"malloc_usable_size");
    USABLE_SIZE.set(or(usable, usable_size_unknown as *mut c_void));
    let known = !usable.is_null() && object_of(usable) == MALLOC_OBJECT.load(Ordering::Relaxed);
    USABLE_SIZE_KNOWN.store(known, Ordering::Relaxed);

    crate::extended::fill();
    crate::cxx::fill();
}

fn or(f: *mut c_void, fallback: *mut c_void) -> *mut c_void {
    if f.is_null() {
        fallback
    } else {
        f
    }
}

// The made-up functions, for an allocator that lacks them.

unsafe extern "C" fn memalign_from_posix(align: usize, size: usize) -> *mut c_void {
    let align = align
        .max(core::mem::size_of::<usize>())
        .checked_next_power_of_two()
        .unwrap_or(0);
    if align == 0 {
        uf::sys::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    let mut p = core::ptr::null_mut();
    // SAFETY: the allocator's posix_memalign with a valid out-pointer and alignment.
    match unsafe { POSIX_MEMALIGN.get()(&mut p, align, size) } {
        0 => p,
        e => {
            uf::sys::set_errno(e);
            core::ptr::null_mut()
        }
    }
}

unsafe extern "C" fn valloc_from_memalign(size: usize) -> *mut c_void {
    // SAFETY: the allocator's memalign with a power-of-two alignment.
    unsafe { MEMALIGN.get()(uf::sys::page_size(), size) }
}

unsafe extern "C" fn pvalloc_from_memalign(size: usize) -> *mut c_void {
    let page = uf::sys::page_size();
    // glibc's pvalloc(0) gives one page.
    let Some(rounded) = size.max(1).checked_next_multiple_of(page) else {
        uf::sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    // SAFETY: as in valloc_from_memalign.
    unsafe { MEMALIGN.get()(page, rounded) }
}

unsafe extern "C" fn usable_size_unknown(_p: *mut c_void) -> usize {
    0
}

// The entries before the lookup: look up, then call what was found (or glibc's own function
// when the lookup itself is calling).

unsafe extern "C" fn boot_malloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded unchanged to an allocator's malloc.
    unsafe {
        if ensure() {
            MALLOC.get()(size)
        } else {
            __libc_malloc(size)
        }
    }
}

unsafe extern "C" fn boot_free(p: *mut c_void) {
    // SAFETY: forwarded unchanged to the allocator that gave out p.
    unsafe {
        if ensure() {
            FREE.get()(p)
        } else {
            __libc_free(p)
        }
    }
}

unsafe extern "C" fn boot_calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded unchanged.
    unsafe {
        if ensure() {
            CALLOC.get()(n, size)
        } else {
            __libc_calloc(n, size)
        }
    }
}

unsafe extern "C" fn boot_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded unchanged.
    unsafe {
        if ensure() {
            REALLOC.get()(p, size)
        } else {
            __libc_realloc(p, size)
        }
    }
}

unsafe extern "C" fn boot_memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded unchanged.
    unsafe {
        if ensure() {
            MEMALIGN.get()(align, size)
        } else {
            __libc_memalign(align, size)
        }
    }
}

unsafe extern "C" fn boot_valloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded unchanged.
    unsafe {
        if ensure() {
            VALLOC.get()(size)
        } else {
            __libc_memalign(uf::sys::page_size(), size)
        }
    }
}

unsafe extern "C" fn boot_pvalloc(size: usize) -> *mut c_void {
    if !ensure() {
        // SAFETY: glibc's memalign; pvalloc_from_memalign does the rounding.
        return unsafe { pvalloc_from_memalign(size) };
    }
    // SAFETY: forwarded unchanged.
    unsafe { PVALLOC.get()(size) }
}

unsafe extern "C" fn boot_usable_size(p: *mut c_void) -> usize {
    if !ensure() {
        return 0;
    }
    // SAFETY: forwarded unchanged.
    unsafe { USABLE_SIZE.get()(p) }
}

/// Never called: `fill` stores the allocator's `posix_memalign` before it points `MEMALIGN`
/// at `memalign_from_posix`, the only caller.
unsafe extern "C" fn boot_posix_memalign(_: *mut *mut c_void, _: usize, _: usize) -> c_int {
    libc::ENOMEM
}
