// A use-after-free inside an accessor that a release build inlines (`#[inline(always)]`), the
// object made by a constructor inlined the same way, both into `check`. Run under
// libufence.so at sample_rate=1 (Rust's System allocator calls malloc): the report's title must
// name the accessor, `inline_uaf::expiry`, not `check` nor core::ptr::read_volatile.
use std::alloc::{alloc, dealloc, Layout};

#[repr(C)]
struct Session {
    id: u64,
    expires: u64,
}

#[inline(always)]
fn expiry(s: *const Session) -> u64 {
    // SAFETY: deliberately not: the caller passes a freed session.
    unsafe { std::ptr::read_volatile(&(*s).expires) } // LINE:expiry
}

#[inline(always)]
fn open_session(id: u64) -> *mut Session {
    // SAFETY: a non-zero-sized layout; the result is checked.
    unsafe {
        let s = alloc(Layout::new::<Session>()) as *mut Session; // LINE:open_session
        assert!(!s.is_null());
        s.write(Session { id, expires: 3600 });
        s
    }
}

#[inline(never)]
fn check() -> u64 {
    let s = open_session(7); // LINE:call_open
    // SAFETY: s came from alloc with this layout.
    unsafe { dealloc(s.cast(), Layout::new::<Session>()) };
    std::hint::black_box(expiry(std::hint::black_box(s))) // LINE:call_expiry
}

fn main() {
    let v = check();
    eprintln!("read {v}");
    std::process::exit(42);
}
