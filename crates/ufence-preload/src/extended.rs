//! The other allocators' own entry points that take a pointer ufence may have handed out.
//!
//! A program on jemalloc, tcmalloc or mimalloc gets its memory from `malloc` (ufence's, which
//! samples) but may give it back through that allocator's own API: jemalloc's `sdallocx`,
//! tcmalloc's `tc_free`, mimalloc's `mi_free`, and so on. A pool object must never reach them,
//! so ufence exports the same names: a pool pointer is handled here, anything else goes to the
//! next definition of the name (the allocator's). Where no allocator behind ufence defines a
//! name (a program on glibc never calls these unless it probes for them), the call gets the
//! standard function it stands for: `sdallocx` frees, `sallocx` is `malloc_usable_size`, and
//! so on. Functions that only allocate (`mallocx`, `mi_malloc`) are not interposed: what they
//! return is never a pool object, and sampling them would mean knowing their flags.

use crate::next::{lookup, Next};
use core::ffi::{c_int, c_void};
use ufence_core as uf;

/// Declares each forwarded function: the exported entry point (pool pointers are handled by
/// `pool`, others go to the next definition), the next definition's slot, and `missing`, what
/// the name does when nothing behind ufence defines it. The first argument is the pointer.
macro_rules! forwarded {
    (fill: $fill:ident; $(
        $(#[$doc:meta])*
        fn $name:ident($p:ident: *mut c_void $(, $a:ident: $t:ty)*) -> $r:ty {
            pool: $pool:expr,
            missing: $missing:expr $(,)?
        }
    )*) => {
        $(
            #[allow(non_snake_case)]
            mod $name {
                use super::*;
                pub static NEXT: Next<unsafe extern "C" fn(*mut c_void $(, $t)*) -> $r> =
                    Next::new(missing as *mut c_void);
                #[allow(unused_variables)]
                pub unsafe extern "C" fn missing($p: *mut c_void $(, $a: $t)*) -> $r {
                    $missing
                }
            }

            $(#[$doc])*
            #[no_mangle]
            #[allow(unused_variables)]
            pub extern "C" fn $name($p: *mut c_void $(, $a: $t)*) -> $r {
                if uf::owns($p.cast()) {
                    return $pool;
                }
                // SAFETY: not a pool pointer, so it belongs to the allocator behind ufence, whose
                // function of this name (or the standard one it stands for) takes it unchanged.
                unsafe { $name::NEXT.get()($p $(, $a)*) }
            }
        )*

        /// Points each forwarded name of this group at its next definition, where there is one.
        fn $fill() {
            $(
                $name::NEXT.set(lookup(
                    // The name as a C string.
                    match core::ffi::CStr::from_bytes_with_nul(
                        concat!(stringify!($name), "\0").as_bytes(),
                    ) {
                        Ok(c) => c,
                        Err(_) => c"",
                    },
                ));
            )*
        }
    };
}

/// jemalloc's `MALLOCX_ZERO` flag and the mask of `MALLOCX_LG_ALIGN`.
const MALLOCX_ZERO: c_int = 0x40;
const MALLOCX_LG_ALIGN_MASK: c_int = 0x3f;

/// The alignment a jemalloc `flags` word asks for (at least malloc's 16).
fn mallocx_align(flags: c_int) -> usize {
    let lg = flags & MALLOCX_LG_ALIGN_MASK;
    if lg == 0 {
        16
    } else {
        (1usize << lg.min(63)).max(16)
    }
}

/// A pool object resized into memory of the allocator behind ufence (or the pool again, if
/// sampled): aligned to `align`, the new tail zeroed if `zero`. Null when out of memory (the
/// pool object is then left as it was).
fn pool_resize(p: *mut c_void, size: usize, align: usize, zero: bool) -> *mut c_void {
    let Some(old) = uf::object_size(p.cast()) else {
        // Not a live object: free() reports the double or invalid free, and the program gets
        // fresh memory as if the bad pointer had been NULL (as realloc does).
        crate::free(p);
        return crate::memalign(align, size);
    };
    let new = if align <= 16 {
        crate::malloc(size)
    } else {
        crate::memalign(align, size)
    };
    if new.is_null() {
        return new;
    }
    // SAFETY: both objects are live; the copy is of the smaller size; the zeroed tail is
    // within the new object.
    unsafe {
        core::ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast(), old.min(size));
        if zero && size > old {
            core::ptr::write_bytes(new.cast::<u8>().add(old), 0, size - old);
        }
    }
    crate::free(p);
    new
}

/// The size of a pool object, as the allocators' size functions give it.
fn pool_size(p: *mut c_void) -> usize {
    uf::object_size(p.cast()).unwrap_or(0)
}

forwarded! {
    fill: fill_jemalloc;

    /// jemalloc: frees `p`.
    fn dallocx(p: *mut c_void, flags: c_int) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// jemalloc: frees `p` of `size` bytes.
    fn sdallocx(p: *mut c_void, size: usize, flags: c_int) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// jemalloc: the usable size of `p`.
    fn sallocx(p: *mut c_void, flags: c_int) -> usize {
        pool: pool_size(p),
        missing: crate::malloc_usable_size(p),
    }
    /// jemalloc: resizes `p` (moving it if need be).
    fn rallocx(p: *mut c_void, size: usize, flags: c_int) -> *mut c_void {
        pool: pool_resize(p, size, mallocx_align(flags), flags & MALLOCX_ZERO != 0),
        missing: if flags == 0 {
            crate::realloc(p, size)
        } else {
            // Only a program probing for jemalloc gets here: keep the flags' meaning.
            resize_foreign(p, size, mallocx_align(flags), flags & MALLOCX_ZERO != 0)
        },
    }
    /// jemalloc: resizes `p` in place if it can, and returns its size (a pool object never
    /// grows in place: its size is its size).
    fn xallocx(p: *mut c_void, size: usize, extra: usize, flags: c_int) -> usize {
        pool: pool_size(p),
        missing: crate::malloc_usable_size(p),
    }

}

forwarded! {
    fill: fill_tcmalloc;

    /// tcmalloc: `free`.
    fn tc_free(p: *mut c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: `free` with the size.
    fn tc_free_sized(p: *mut c_void, size: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: `cfree`.
    fn tc_cfree(p: *mut c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: `operator delete`.
    fn tc_delete(p: *mut c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: `operator delete[]`.
    fn tc_deletearray(p: *mut c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: sized `operator delete`.
    fn tc_delete_sized(p: *mut c_void, size: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: sized `operator delete[]`.
    fn tc_deletearray_sized(p: *mut c_void, size: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: nothrow `operator delete`.
    fn tc_delete_nothrow(p: *mut c_void, nothrow: *const c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: nothrow `operator delete[]`.
    fn tc_deletearray_nothrow(p: *mut c_void, nothrow: *const c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: aligned `operator delete`.
    fn tc_delete_aligned(p: *mut c_void, align: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: aligned `operator delete[]`.
    fn tc_deletearray_aligned(p: *mut c_void, align: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: sized aligned `operator delete`.
    fn tc_delete_sized_aligned(p: *mut c_void, size: usize, align: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: sized aligned `operator delete[]`.
    fn tc_deletearray_sized_aligned(p: *mut c_void, size: usize, align: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: aligned nothrow `operator delete`.
    fn tc_delete_aligned_nothrow(p: *mut c_void, align: usize, nothrow: *const c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: aligned nothrow `operator delete[]`.
    fn tc_deletearray_aligned_nothrow(
        p: *mut c_void,
        align: usize,
        nothrow: *const c_void
    ) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// tcmalloc: `realloc`.
    fn tc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
        pool: crate::realloc(p, size),
        missing: crate::realloc(p, size),
    }
    /// tcmalloc: `malloc_usable_size`.
    fn tc_malloc_size(p: *mut c_void) -> usize {
        pool: pool_size(p),
        missing: crate::malloc_usable_size(p),
    }
}

forwarded! {
    fill: fill_mimalloc;

    /// mimalloc: `free`.
    fn mi_free(p: *mut c_void) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// mimalloc: `free` with the size.
    fn mi_free_size(p: *mut c_void, size: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// mimalloc: `free` of an aligned object.
    fn mi_free_aligned(p: *mut c_void, align: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// mimalloc: `free` of an aligned object with its size.
    fn mi_free_size_aligned(p: *mut c_void, size: usize, align: usize) -> () {
        pool: crate::free_pool(p),
        missing: crate::free(p),
    }
    /// mimalloc: `malloc_usable_size`.
    fn mi_usable_size(p: *mut c_void) -> usize {
        pool: pool_size(p),
        missing: crate::malloc_usable_size(p),
    }
    /// mimalloc: `realloc`.
    fn mi_realloc(p: *mut c_void, size: usize) -> *mut c_void {
        pool: crate::realloc(p, size),
        missing: crate::realloc(p, size),
    }
    /// mimalloc: `realloc` that frees `p` when it fails.
    fn mi_reallocf(p: *mut c_void, size: usize) -> *mut c_void {
        pool: reallocf_impl(p, size),
        missing: reallocf_impl(p, size),
    }
    /// mimalloc: `realloc` of an array.
    fn mi_reallocn(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
        pool: crate::reallocarray(p, count, size),
        missing: crate::reallocarray(p, count, size),
    }
    /// mimalloc: `reallocarray`.
    fn mi_reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
        pool: crate::reallocarray(p, count, size),
        missing: crate::reallocarray(p, count, size),
    }
    /// mimalloc: `realloc` to an aligned object.
    fn mi_realloc_aligned(p: *mut c_void, size: usize, align: usize) -> *mut c_void {
        pool: pool_resize(p, size, align.max(16), false),
        missing: resize_foreign(p, size, align, false),
    }
}

forwarded! {
    fill: fill_bsd;

    /// tcmalloc and mimalloc (macOS's name): `malloc_usable_size`.
    fn malloc_size(p: *mut c_void) -> usize {
        pool: pool_size(p),
        missing: crate::malloc_usable_size(p),
    }
    /// BSD's `reallocf` (mimalloc exports it): `realloc` that frees `p` when it fails.
    fn reallocf(p: *mut c_void, size: usize) -> *mut c_void {
        pool: reallocf_impl(p, size),
        missing: reallocf_impl(p, size),
    }
}

/// Looks up each allocator's names only where that allocator is there (one name tells): a
/// failed `dlsym` costs a formatted error message, and a program on glibc would pay some forty.
pub fn fill() {
    let present = |probe: &core::ffi::CStr| !lookup(probe).is_null();
    if present(c"sdallocx") {
        fill_jemalloc();
    }
    if present(c"tc_free") {
        fill_tcmalloc();
    }
    if present(c"mi_free") {
        fill_mimalloc();
    }
    if present(c"malloc_size") || present(c"reallocf") {
        fill_bsd();
    }
}

/// `reallocf`: a failed resize frees the old object.
fn reallocf_impl(p: *mut c_void, size: usize) -> *mut c_void {
    let new = crate::realloc(p, size);
    if new.is_null() && size != 0 {
        crate::free(p);
    }
    new
}

/// An aligned resize where no allocator behind ufence has one: a copy into `memalign`, the
/// new tail zeroed if `zero`.
fn resize_foreign(p: *mut c_void, size: usize, align: usize, zero: bool) -> *mut c_void {
    let old = crate::malloc_usable_size(p);
    let new = crate::memalign(align.max(16), size.max(1));
    if !new.is_null() {
        // SAFETY: p is live with at least `old` usable bytes; new has `size`, and the zeroed
        // tail is within it.
        unsafe {
            core::ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast(), old.min(size));
            if zero && size > old {
                core::ptr::write_bytes(new.cast::<u8>().add(old), 0, size - old);
            }
        }
        crate::free(p);
    }
    new
}

/// mimalloc and NetBSD: `reallocarr(&p, count, size)` resizes `*pp` in place of the pointer.
#[no_mangle]
pub extern "C" fn mi_reallocarr(pp: *mut c_void, count: usize, size: usize) -> c_int {
    reallocarr_impl(pp, count, size)
}

/// NetBSD's `reallocarr` (mimalloc exports it): as [`mi_reallocarr`].
#[no_mangle]
pub extern "C" fn reallocarr(pp: *mut c_void, count: usize, size: usize) -> c_int {
    reallocarr_impl(pp, count, size)
}

fn reallocarr_impl(pp: *mut c_void, count: usize, size: usize) -> c_int {
    let pp = pp.cast::<*mut c_void>();
    if pp.is_null() {
        return libc::EINVAL;
    }
    let Some(total) = count.checked_mul(size) else {
        return libc::EOVERFLOW;
    };
    let e = uf::sys::errno();
    // SAFETY: the caller passes the address of a pointer it owns, as reallocarr requires.
    let old = unsafe { *pp };
    let new = crate::realloc(old, total.max(1));
    if new.is_null() {
        uf::sys::set_errno(e);
        return libc::ENOMEM;
    }
    // SAFETY: as above.
    unsafe { *pp = new };
    uf::sys::set_errno(e);
    0
}
