//! C++ `operator new` and `operator delete`, every form (plain, array, sized, aligned, nothrow).
//!
//! jemalloc, tcmalloc and mimalloc define the operators themselves, without going through
//! `malloc`: without these entry points a C++ program on one of them would never have an
//! object sampled. On glibc the operators come from libstdc++, which calls `malloc` and `free`;
//! ufence then serves them straight from the allocator behind it (`malloc`, or `memalign` for
//! the aligned forms, and `free`), which skips libstdc++'s hop and is what its operators do.
//! That shortcut (`DIRECT`) is taken only when the next operators are libstdc++'s (or libc++'s)
//! or the allocator's own; a library with operators of its own gets its calls forwarded.
//!
//! When the allocator runs out of memory, the throwing forms must throw `std::bad_alloc` after
//! trying the program's new-handler: they jump to the next `operator new`, which does both. An
//! exception must not unwind through a Rust frame (the crate aborts on unwinding), so these
//! four forms are naked functions whose frame is gone before that jump, with call-frame
//! information so that stack captures walk through them.

use crate::next::{lookup, with_malloc_or_cxx_runtime, Next, FREE, MALLOC, MEMALIGN};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use ufence_core as uf;

type NewFn = unsafe extern "C" fn(usize) -> *mut c_void;
type NewAlignedFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type NewNothrowFn = unsafe extern "C" fn(usize, *const c_void) -> *mut c_void;
type NewAlignedNothrowFn = unsafe extern "C" fn(usize, usize, *const c_void) -> *mut c_void;
type DeleteFn = unsafe extern "C" fn(*mut c_void);
type Delete2Fn = unsafe extern "C" fn(*mut c_void, usize);
type DeleteNothrowFn = unsafe extern "C" fn(*mut c_void, *const c_void);
type Delete3Fn = unsafe extern "C" fn(*mut c_void, usize, usize);
type DeleteAlignedNothrowFn = unsafe extern "C" fn(*mut c_void, usize, *const c_void);

/// Whether the operators may be served by the allocator behind ufence directly (see the
/// module's doc). True until the lookup says otherwise, which suits glibc and the three
/// allocators alike. A byte read with a plain load, which folds into one `cmpb` on the fast
/// paths (an atomic load takes a load, a test and the jump).
static DIRECT: Direct = Direct(UnsafeCell::new(1));

#[repr(transparent)]
struct Direct(UnsafeCell<u8>);

// SAFETY: one byte, written once by `fill` with a volatile store and read whole: a reader sees
// the old value or the new one, and either is a valid choice (see `fill`).
unsafe impl Sync for Direct {}

impl Direct {
    #[inline(always)]
    fn get(&self) -> bool {
        // SAFETY: a byte of this static; see the Sync impl.
        unsafe { *self.0.get() != 0 }
    }

    fn set(&self, on: bool) {
        // SAFETY: as in get.
        unsafe { core::ptr::write_volatile(self.0.get(), on as u8) };
    }
}

static NEW: Next<NewFn> = Next::new(missing_new as *mut c_void);
static NEW_ARRAY: Next<NewFn> = Next::new(missing_new as *mut c_void);
static NEW_ALIGNED: Next<NewAlignedFn> = Next::new(missing_new_aligned as *mut c_void);
static NEW_ARRAY_ALIGNED: Next<NewAlignedFn> = Next::new(missing_new_aligned as *mut c_void);
static NEW_NOTHROW: Next<NewNothrowFn> = Next::new(missing_new_nothrow as *mut c_void);
static NEW_ARRAY_NOTHROW: Next<NewNothrowFn> = Next::new(missing_new_nothrow as *mut c_void);
static NEW_ALIGNED_NOTHROW: Next<NewAlignedNothrowFn> =
    Next::new(missing_new_aligned_nothrow as *mut c_void);
static NEW_ARRAY_ALIGNED_NOTHROW: Next<NewAlignedNothrowFn> =
    Next::new(missing_new_aligned_nothrow as *mut c_void);

static DELETE: Next<DeleteFn> = Next::new(missing_delete as *mut c_void);
static DELETE_ARRAY: Next<DeleteFn> = Next::new(missing_delete as *mut c_void);
static DELETE_SIZED: Next<Delete2Fn> = Next::new(missing_delete2 as *mut c_void);
static DELETE_ARRAY_SIZED: Next<Delete2Fn> = Next::new(missing_delete2 as *mut c_void);
static DELETE_ALIGNED: Next<Delete2Fn> = Next::new(missing_delete2 as *mut c_void);
static DELETE_ARRAY_ALIGNED: Next<Delete2Fn> = Next::new(missing_delete2 as *mut c_void);
static DELETE_NOTHROW: Next<DeleteNothrowFn> = Next::new(missing_delete_nothrow as *mut c_void);
static DELETE_ARRAY_NOTHROW: Next<DeleteNothrowFn> =
    Next::new(missing_delete_nothrow as *mut c_void);
static DELETE_SIZED_ALIGNED: Next<Delete3Fn> = Next::new(missing_delete3 as *mut c_void);
static DELETE_ARRAY_SIZED_ALIGNED: Next<Delete3Fn> = Next::new(missing_delete3 as *mut c_void);
static DELETE_ALIGNED_NOTHROW: Next<DeleteAlignedNothrowFn> =
    Next::new(missing_delete_aligned_nothrow as *mut c_void);
static DELETE_ARRAY_ALIGNED_NOTHROW: Next<DeleteAlignedNothrowFn> =
    Next::new(missing_delete_aligned_nothrow as *mut c_void);

/// Looks up the next operators (from `next::fill`).
pub fn fill() {
    let new = lookup(c"_Znwm");
    if new.is_null() {
        // No C++ runtime (yet): every form keeps its `missing_*` function, and a failed lookup
        // of each of the twenty names would cost a formatted error message.
        return;
    }
    let delete = lookup(c"_ZdlPv");
    let direct = (new.is_null() || with_malloc_or_cxx_runtime(new))
        && (delete.is_null() || with_malloc_or_cxx_runtime(delete));
    NEW.set(new);
    NEW_ARRAY.set(lookup(c"_Znam"));
    NEW_ALIGNED.set(lookup(c"_ZnwmSt11align_val_t"));
    NEW_ARRAY_ALIGNED.set(lookup(c"_ZnamSt11align_val_t"));
    NEW_NOTHROW.set(lookup(c"_ZnwmRKSt9nothrow_t"));
    NEW_ARRAY_NOTHROW.set(lookup(c"_ZnamRKSt9nothrow_t"));
    NEW_ALIGNED_NOTHROW.set(lookup(c"_ZnwmSt11align_val_tRKSt9nothrow_t"));
    NEW_ARRAY_ALIGNED_NOTHROW.set(lookup(c"_ZnamSt11align_val_tRKSt9nothrow_t"));
    DELETE.set(delete);
    DELETE_ARRAY.set(lookup(c"_ZdaPv"));
    DELETE_SIZED.set(lookup(c"_ZdlPvm"));
    DELETE_ARRAY_SIZED.set(lookup(c"_ZdaPvm"));
    DELETE_ALIGNED.set(lookup(c"_ZdlPvSt11align_val_t"));
    DELETE_ARRAY_ALIGNED.set(lookup(c"_ZdaPvSt11align_val_t"));
    DELETE_NOTHROW.set(lookup(c"_ZdlPvRKSt9nothrow_t"));
    DELETE_ARRAY_NOTHROW.set(lookup(c"_ZdaPvRKSt9nothrow_t"));
    DELETE_SIZED_ALIGNED.set(lookup(c"_ZdlPvmSt11align_val_t"));
    DELETE_ARRAY_SIZED_ALIGNED.set(lookup(c"_ZdaPvmSt11align_val_t"));
    DELETE_ALIGNED_NOTHROW.set(lookup(c"_ZdlPvSt11align_val_tRKSt9nothrow_t"));
    DELETE_ARRAY_ALIGNED_NOTHROW.set(lookup(c"_ZdaPvSt11align_val_tRKSt9nothrow_t"));
    DIRECT.set(direct);
}

/// The fast path of the aligned and nothrow forms of `operator new`: a sampled object, or
/// (when `DIRECT`) the allocator's memory, or null: then the caller goes to the next
/// `operator new`, which tries the new-handler and throws or returns null as its form
/// requires. `align` 0 is the plain forms'; `routine` is the form's (`uf::routine`), which a
/// sampled object remembers.
extern "C" fn new_try(size: usize, align: usize, routine: u8) -> *mut c_void {
    if uf::sample_tick() {
        return new_expired(size, align, routine);
    }
    new_unsampled(size, align)
}

/// `new_try` once the countdown has expired (the plain forms' slow path).
#[cold]
#[inline(never)]
extern "C" fn new_expired(size: usize, align: usize, routine: u8) -> *mut c_void {
    let p = new_sampled(size, align, routine);
    if !p.is_null() {
        return p;
    }
    new_unsampled(size, align)
}

#[inline(always)]
fn new_unsampled(size: usize, align: usize) -> *mut c_void {
    if !DIRECT.get() {
        return core::ptr::null_mut();
    }
    // SAFETY: the allocator's malloc and memalign accept any size; `align` is the power of two
    // the program passed as std::align_val_t.
    unsafe {
        if align == 0 {
            MALLOC.get()(size)
        } else {
            MEMALIGN.get()(align, size)
        }
    }
}

#[cold]
#[inline(never)]
fn new_sampled(size: usize, align: usize, routine: u8) -> *mut c_void {
    uf::alloc_slow(size, align.max(16), routine, &crate::DEFAULTS).cast()
}

/// Defines a throwing `operator new` as a naked function: the sampling check and the
/// allocator's memory (`new_try`, inlined in assembly for the plain forms, which are most of a
/// C++ program's allocations), then the next operator (through `$next`) if that gave nothing.
macro_rules! throwing_new {
    ($(#[$doc:meta])* $name:ident, $next:ident, plain, $routine:path) => {
        $(#[$doc])*
        #[unsafe(naked)]
        #[no_mangle]
        pub extern "C" fn $name(size: usize) -> *mut c_void {
            // The sampling countdown (as `sample_tick`), then the allocator's malloc when
            // `DIRECT`; the next operator when either says no. Entry: rsp is 8 mod 16; one push
            // makes each call 16-byte aligned.
            core::arch::naked_asm!(
                ".cfi_startproc",
                "mov rax, qword ptr [rip + ufence_thread_block_v1@GOTTPOFF]",
                "sub qword ptr fs:[rax], 1",
                "jle 3f",
                "cmp byte ptr [rip + {direct}], 0",
                "je 2f",
                "push rdi",
                ".cfi_adjust_cfa_offset 8",
                "call qword ptr [rip + {malloc}]",
                "pop rdi",
                ".cfi_adjust_cfa_offset -8",
                "test rax, rax",
                "jz 2f",
                "ret",
                "3:",
                "push rdi",
                ".cfi_adjust_cfa_offset 8",
                "xor esi, esi",
                "mov edx, {routine}",
                "call {expired}",
                "pop rdi",
                ".cfi_adjust_cfa_offset -8",
                "test rax, rax",
                "jz 2f",
                "ret",
                "2:",
                "jmp qword ptr [rip + {next}]",
                ".cfi_endproc",
                direct = sym DIRECT,
                malloc = sym MALLOC,
                expired = sym new_expired,
                next = sym $next,
                routine = const $routine,
            )
        }
    };
    ($(#[$doc:meta])* $name:ident, $next:ident, aligned, $routine:path) => {
        $(#[$doc])*
        #[unsafe(naked)]
        #[no_mangle]
        pub extern "C" fn $name(size: usize, align: usize) -> *mut c_void {
            // Two pushes and 8 bytes keep the call 16-byte aligned.
            core::arch::naked_asm!(
                ".cfi_startproc",
                "push rdi",
                ".cfi_adjust_cfa_offset 8",
                "push rsi",
                ".cfi_adjust_cfa_offset 8",
                "sub rsp, 8",
                ".cfi_adjust_cfa_offset 8",
                "mov edx, {routine}",
                "call {try_}",
                "add rsp, 8",
                ".cfi_adjust_cfa_offset -8",
                "pop rsi",
                ".cfi_adjust_cfa_offset -8",
                "pop rdi",
                ".cfi_adjust_cfa_offset -8",
                "test rax, rax",
                "jz 2f",
                "ret",
                "2:",
                "jmp qword ptr [rip + {next}]",
                ".cfi_endproc",
                try_ = sym new_try,
                next = sym $next,
                routine = const $routine,
            )
        }
    };
}

// `Next` is `#[repr(C)]` with the pointer first, so `[rip + NEXT]` is the function to jump to,
// and `Direct` is one byte.
throwing_new!(
    /// `operator new(size_t)`.
    _Znwm, NEW, plain, uf::routine::NEW
);
throwing_new!(
    /// `operator new[](size_t)`.
    _Znam, NEW_ARRAY, plain, uf::routine::NEW_ARRAY
);
throwing_new!(
    /// `operator new(size_t, align_val_t)`.
    _ZnwmSt11align_val_t, NEW_ALIGNED, aligned, uf::routine::NEW_ALIGNED
);
throwing_new!(
    /// `operator new[](size_t, align_val_t)`.
    _ZnamSt11align_val_t, NEW_ARRAY_ALIGNED, aligned, uf::routine::NEW_ARRAY_ALIGNED
);

/// `operator new(size_t, const nothrow_t&)`.
#[no_mangle]
pub extern "C" fn _ZnwmRKSt9nothrow_t(size: usize, nt: *const c_void) -> *mut c_void {
    let p = new_try(size, 0, uf::routine::NEW);
    if !p.is_null() {
        return p;
    }
    // SAFETY: the next nothrow operator new, with the caller's arguments; it does not throw.
    unsafe { NEW_NOTHROW.get()(size, nt) }
}

/// `operator new[](size_t, const nothrow_t&)`.
#[no_mangle]
pub extern "C" fn _ZnamRKSt9nothrow_t(size: usize, nt: *const c_void) -> *mut c_void {
    let p = new_try(size, 0, uf::routine::NEW_ARRAY);
    if !p.is_null() {
        return p;
    }
    // SAFETY: as above.
    unsafe { NEW_ARRAY_NOTHROW.get()(size, nt) }
}

/// `operator new(size_t, align_val_t, const nothrow_t&)`.
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    nt: *const c_void,
) -> *mut c_void {
    let p = new_try(size, align, uf::routine::NEW_ALIGNED);
    if !p.is_null() {
        return p;
    }
    // SAFETY: as above.
    unsafe { NEW_ALIGNED_NOTHROW.get()(size, align, nt) }
}

/// `operator new[](size_t, align_val_t, const nothrow_t&)`.
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    nt: *const c_void,
) -> *mut c_void {
    let p = new_try(size, align, uf::routine::NEW_ARRAY_ALIGNED);
    if !p.is_null() {
        return p;
    }
    // SAFETY: as above.
    unsafe { NEW_ARRAY_ALIGNED_NOTHROW.get()(size, align, nt) }
}

/// Defines an `operator delete`: pool objects go back to the pool; others to the allocator's
/// `free` (when `DIRECT`) or the next operator of the same form.
macro_rules! delete {
    ($(#[$doc:meta])* $name:ident, $next:ident, $routine:path, ($($a:ident: $t:ty),*)) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "C" fn $name(p: *mut c_void $(, $a: $t)*) {
            if uf::owns(p.cast()) {
                // Without `DIRECT`, the next `operator new` may have got its memory from
                // `malloc` (sampled as such): no family can be told then.
                let r = if DIRECT.get() { $routine } else { uf::routine::ANY };
                return crate::free_pool_as(p, r);
            }
            // SAFETY: not a pool pointer, so the allocator's: its free, or the next operator
            // of this form, takes it with the caller's arguments.
            unsafe {
                if DIRECT.get() {
                    FREE.get()(p)
                } else {
                    $next.get()(p $(, $a)*)
                }
            }
        }
    };
}

delete!(
    /// `operator delete(void*)`.
    _ZdlPv, DELETE, uf::routine::DELETE, ()
);
delete!(
    /// `operator delete[](void*)`.
    _ZdaPv, DELETE_ARRAY, uf::routine::DELETE_ARRAY, ()
);
delete!(
    /// `operator delete(void*, size_t)`.
    _ZdlPvm, DELETE_SIZED, uf::routine::DELETE, (size: usize)
);
delete!(
    /// `operator delete[](void*, size_t)`.
    _ZdaPvm, DELETE_ARRAY_SIZED, uf::routine::DELETE_ARRAY, (size: usize)
);
delete!(
    /// `operator delete(void*, align_val_t)`.
    _ZdlPvSt11align_val_t, DELETE_ALIGNED, uf::routine::DELETE_ALIGNED, (align: usize)
);
delete!(
    /// `operator delete[](void*, align_val_t)`.
    _ZdaPvSt11align_val_t, DELETE_ARRAY_ALIGNED, uf::routine::DELETE_ARRAY_ALIGNED, (align: usize)
);
delete!(
    /// `operator delete(void*, const nothrow_t&)`.
    _ZdlPvRKSt9nothrow_t, DELETE_NOTHROW, uf::routine::DELETE, (nt: *const c_void)
);
delete!(
    /// `operator delete[](void*, const nothrow_t&)`.
    _ZdaPvRKSt9nothrow_t, DELETE_ARRAY_NOTHROW, uf::routine::DELETE_ARRAY, (nt: *const c_void)
);
delete!(
    /// `operator delete(void*, size_t, align_val_t)`.
    _ZdlPvmSt11align_val_t, DELETE_SIZED_ALIGNED, uf::routine::DELETE_ALIGNED, (size: usize, align: usize)
);
delete!(
    /// `operator delete[](void*, size_t, align_val_t)`.
    _ZdaPvmSt11align_val_t, DELETE_ARRAY_SIZED_ALIGNED, uf::routine::DELETE_ARRAY_ALIGNED, (size: usize, align: usize)
);
delete!(
    /// `operator delete(void*, align_val_t, const nothrow_t&)`.
    _ZdlPvSt11align_val_tRKSt9nothrow_t, DELETE_ALIGNED_NOTHROW, uf::routine::DELETE_ALIGNED, (align: usize, nt: *const c_void)
);
delete!(
    /// `operator delete[](void*, align_val_t, const nothrow_t&)`.
    _ZdaPvSt11align_val_tRKSt9nothrow_t,
    DELETE_ARRAY_ALIGNED_NOTHROW,
    uf::routine::DELETE_ARRAY_ALIGNED,
    (align: usize, nt: *const c_void)
);

// What a form does when no C++ runtime was loaded at lookup (a C program that later loads C++
// code): the allocator's functions, as libstdc++'s operators would call them.

/// A throwing `operator new` with nothing to throw for it: out of memory ends the process, with
/// a line that says why, where libstdc++ would have thrown `std::bad_alloc` into a program
/// that has no C++ runtime in its global scope.
unsafe extern "C" fn missing_new(size: usize) -> *mut c_void {
    // SAFETY: the allocator's malloc.
    let p = unsafe { MALLOC.get()(size) };
    if p.is_null() {
        out_of_memory();
    }
    p
}

unsafe extern "C" fn missing_new_aligned(size: usize, align: usize) -> *mut c_void {
    // SAFETY: the allocator's memalign.
    let p = unsafe { MEMALIGN.get()(align, size) };
    if p.is_null() {
        out_of_memory();
    }
    p
}

unsafe extern "C" fn missing_new_nothrow(size: usize, _nt: *const c_void) -> *mut c_void {
    // SAFETY: the allocator's malloc.
    unsafe { MALLOC.get()(size) }
}

unsafe extern "C" fn missing_new_aligned_nothrow(
    size: usize,
    align: usize,
    _nt: *const c_void,
) -> *mut c_void {
    // SAFETY: the allocator's memalign.
    unsafe { MEMALIGN.get()(align, size) }
}

unsafe extern "C" fn missing_delete(p: *mut c_void) {
    // SAFETY: the allocator's free, of its own pointer.
    unsafe { FREE.get()(p) }
}

unsafe extern "C" fn missing_delete2(p: *mut c_void, _: usize) {
    // SAFETY: as above.
    unsafe { FREE.get()(p) }
}

unsafe extern "C" fn missing_delete_nothrow(p: *mut c_void, _: *const c_void) {
    // SAFETY: as above.
    unsafe { FREE.get()(p) }
}

unsafe extern "C" fn missing_delete3(p: *mut c_void, _: usize, _: usize) {
    // SAFETY: as above.
    unsafe { FREE.get()(p) }
}

unsafe extern "C" fn missing_delete_aligned_nothrow(p: *mut c_void, _: usize, _: *const c_void) {
    // SAFETY: as above.
    unsafe { FREE.get()(p) }
}

fn out_of_memory() -> ! {
    uf::sys::write_all(
        2,
        b"ufence: operator new: out of memory, and no C++ runtime to throw std::bad_alloc\n",
    );
    uf::sys::abort_now()
}
