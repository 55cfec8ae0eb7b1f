//! ufence: a sampling heap memory-safety error detector, KFENCE for user space.
//!
//! A small random sample of heap allocations goes to a fixed pool of objects, each alone on a
//! page between two inaccessible guard pages. An out-of-bounds access to a sampled object
//! faults on a guard page; a use-after-free faults on the freed object's inaccessible page;
//! a bad free or a write into the unused part of the page is caught when the object is freed.
//! Every other allocation goes straight to the wrapped allocator at the cost of a
//! decrement and a branch, so ufence can stay on in production.
//!
//! ```no_run
//! #[global_allocator]
//! static A: ufence::Guarded<std::alloc::System> = ufence::Guarded::new(std::alloc::System);
//! ```
//!
//! Options come from `UFENCE_OPTIONS` (see [`options::SPECS`]) over the defaults given in code
//! with [`Guarded::with_options`].

// The detector's parts, one folder each (the module paths stay flat: `crate::sampler`, ...).
// `detector.rs` ties them together behind the allocation entry points below.

// Sampling: which allocation gets a slot (interval, rate, burst, adaptive interval), covered
// sites, the `sample_only`/`skip` filters, and the maths the draws need without libm.
#[path = "sampling/covered.rs"]
mod covered;
#[path = "sampling/math.rs"]
mod math;
#[path = "sampling/sampler.rs"]
mod sampler;
#[path = "sampling/site_filter.rs"]
mod site_filter;

// The pool and its faults: slots, placement and canary, the fault handler, and the
// allocation routines an object remembers.
#[path = "pool/fault.rs"]
mod fault;
#[path = "pool/pool.rs"]
mod pool;
#[path = "pool/routine.rs"]
pub mod routine;

// Stack capture: the cached-CFI walk, its rules, and the stored (packed) stacks.
#[path = "capture/cfi.rs"]
mod cfi;
#[doc(hidden)]
#[path = "capture/stack.rs"]
pub mod stack;
#[doc(hidden)]
#[path = "capture/unwind.rs"]
pub mod unwind;

// Reports: text and JSON, in-process symbolization (ELF symbols, `.debug_line`), the
// symbolizer process for inlined functions, allocation-free formatting.
#[path = "report/dwarf.rs"]
pub mod dwarf;
#[path = "report/fmt.rs"]
pub mod fmt;
#[path = "report/json_report.rs"]
mod json_report;
#[path = "report/report.rs"]
mod report;
#[path = "report/symbolize.rs"]
pub mod symbolize;
#[path = "report/symbolizer_process.rs"]
mod symbolizer_process;

// Control: options, counters, and the control block other processes read and write.
#[path = "control/control.rs"]
pub mod control;
#[path = "control/options.rs"]
pub mod options;
#[path = "control/stats.rs"]
pub mod stats;

// The platform layer: every system call and libc/loader interface in one place.
#[path = "platform/sys.rs"]
pub mod sys;

mod detector;

use core::alloc::{GlobalAlloc, Layout};

pub use detector::{exit_status, is_preload, mark_preload, options_in_force, owns};
pub use options::{OnError, Options};
pub use report::write_object_line;
pub use stats::Stats;

pub(crate) use detector::since_start_ns;

/// The sampling decisions as pure functions of their inputs, for the fleet simulator
/// (`ufence-fleet`'s `simulate`): the live sampler and pool call these same functions.
pub mod decisions {
    pub use crate::covered::{site_hash, skips as skips_covered, Covered};
    pub use crate::pool::{object_offset, shuffled_order};
    pub use crate::sampler::{first_deadline, geometric, occupancy_permille, Knobs};
}

/// The fast-path sampling check: true (rarely) when the allocation must go to [`alloc_slow`].
#[inline(always)]
pub fn sample_tick() -> bool {
    sampler::tick()
}

/// The slow path of an allocation after [`sample_tick`] returned true: a pool object of `size`
/// bytes aligned to `align`, allocated by `routine` (see [`routine`]), or null when this
/// allocation is not sampled after all.
#[inline]
pub fn alloc_slow(size: usize, align: usize, routine: u8, defaults: &Options) -> *mut u8 {
    detector::alloc_slow(size, align, routine, defaults)
}

/// Forgets the stack-walk rules cached for code addresses. Call it after unloading a library
/// (`dlclose`): another may be mapped at the same addresses. The preload does it from its
/// `dlclose`; a program using [`Guarded`] that unloads libraries calls it itself. Until then
/// stacks through such a library may be wrong (never unsafe: walks read only the stack).
pub fn forget_unwind_rules() {
    unwind::forget()
}

/// Tells ufence that a thread may have been renamed (the preload's `prctl(PR_SET_NAME)` and
/// `pthread_setname_np`): records read thread names again.
pub fn thread_renamed() {
    sampler::note_thread_renamed()
}

/// Marks the calling thread as looking up the allocator a preload forwards to; false if it
/// already is (a call made by that lookup). See `ufence-preload`'s `next` module.
#[inline]
pub fn begin_lookup() -> bool {
    sampler::begin_lookup()
}

/// Ends a [`begin_lookup`] that returned true.
#[inline]
pub fn end_lookup() {
    sampler::end_lookup()
}

/// Frees a pointer for which [`owns`] is true, released by `routine` (see [`routine`]).
#[inline]
pub fn free_slow(p: *mut u8, routine: u8) {
    detector::free_slow(p, routine)
}

/// Checks the canaries of the live sampled objects, as at normal exit: for a preload's `_exit`.
pub fn check_at_exit() {
    detector::check_at_exit();
}

/// Where the allocator behind a preload has its `free` and `realloc` (`[start, end)` of their
/// code), so that an abort or fault inside them, on a pointer ufence forwarded, is reported as
/// an invalid free.
pub fn set_forwarded_frees(free: (usize, usize), realloc: (usize, usize)) {
    fault::set_forwarded(free, realloc)
}

/// `sigaction` for a preload that keeps ufence's fault handler in front: see
/// `fault::chained_sigaction`. Returns false when the caller must make the real call.
pub fn chained_sigaction(
    sig: i32,
    new: Option<&libc::sigaction>,
    old: Option<&mut libc::sigaction>,
) -> bool {
    fault::chained_sigaction(sig, new, old)
}

/// The requested size of a live pool object starting at `p`.
pub fn object_size(p: *const u8) -> Option<usize> {
    detector::object_size(p)
}

/// The counters, as KFENCE's stats file shows them.
pub fn stats() -> Stats {
    detector::stats()
}

/// Changes one runtime option in this process's knobs, as `ufence set` does from outside.
fn set_knob(key: &str, o: &Options) {
    sampler::knobs().apply(key, o);
    // The calling thread looks at the knobs on its next allocation; others within their
    // current plan (at most one interval, or 65536 allocations while sampling is off).
    sampler::reset_thread();
}

/// Changes the time-based sample interval (milliseconds; 0 turns it off) while running.
pub fn set_sample_interval(ms: u64) {
    set_knob("sample_interval", &Options::DEFAULT.sample_interval(ms));
}

/// Changes the count-based sample rate (1/N; 0 turns it off) while running.
pub fn set_sample_rate(n: u64) {
    set_knob("sample_rate", &Options::DEFAULT.sample_rate(n));
}

/// Turns sampling on or off while running.
pub fn set_enabled(on: bool) {
    set_knob("enabled", &Options::DEFAULT.enabled(on));
}

/// Changes the covered-sites threshold (percent of the pool in use; 100 turns it off).
pub fn set_skip_covered_thresh(percent: u64) {
    set_knob(
        "skip_covered_thresh",
        &Options::DEFAULT.skip_covered_thresh(percent),
    );
}

/// Turns the occupancy-driven interval on or off, with its upper bound in milliseconds.
pub fn set_adaptive(on: bool, max_ms: u64) {
    let o = Options::DEFAULT.adaptive(on).adaptive_max(max_ms);
    set_knob("adaptive_max", &o);
    set_knob("adaptive", &o);
}

/// Restricts sampling to requests whose size is in the range.
pub fn set_sample_sizes(range: options::SizeRange) {
    set_knob("sample_sizes", &Options::DEFAULT.sample_sizes(range));
}

/// Changes `burst` (extra consecutive samples after each interval's sample).
pub fn set_burst(n: u64) {
    set_knob("burst", &Options::DEFAULT.burst(n));
}

/// Changes what happens after an error while running.
pub fn set_on_error(mode: OnError) {
    set_knob("on_error", &Options::DEFAULT.on_error(mode));
}

/// Starts the detector now rather than at the first sampled allocation (for example so that
/// its start-up warnings come first). Returns false if it is disabled.
pub fn start(defaults: &Options) -> bool {
    let prev = sampler::hold();
    let ok = detector::ensure_started(defaults);
    sampler::release(prev);
    ok
}

/// A global allocator that sends a sample of allocations to ufence's guarded pool and the rest
/// to `A`.
pub struct Guarded<A> {
    inner: A,
    defaults: Options,
}

impl<A> Guarded<A> {
    /// Wraps `inner` with the default options (overridden by `UFENCE_OPTIONS`).
    pub const fn new(inner: A) -> Self {
        Guarded {
            inner,
            defaults: Options::DEFAULT,
        }
    }

    /// Wraps `inner` with options set in code; `UFENCE_OPTIONS` still overrides them, as a
    /// sanitizer's environment overrides its compiled-in defaults.
    pub const fn with_options(inner: A, defaults: Options) -> Self {
        Guarded { inner, defaults }
    }
}

// SAFETY: every pointer handed out is either from `inner` (and returned to it) or a pool object
// of at least `layout.size()` bytes aligned to `layout.align()`, live until dealloc; `owns`
// tells the two apart by address range.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Guarded<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if sampler::tick() {
            let p =
                detector::alloc_slow(layout.size(), layout.align(), routine::ANY, &self.defaults);
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: forwarded unchanged; the caller upholds GlobalAlloc's contract.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if sampler::tick() {
            let p =
                detector::alloc_slow(layout.size(), layout.align(), routine::ANY, &self.defaults);
            if !p.is_null() {
                // SAFETY: p is a fresh pool object of layout.size() writable bytes.
                unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
                return p;
            }
        }
        // SAFETY: forwarded unchanged.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if detector::owns(ptr) {
            detector::free_slow(ptr, routine::ANY);
        } else {
            // SAFETY: not a pool pointer, so it came from inner with this layout.
            unsafe { self.inner.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !detector::owns(ptr) && !sampler::tick() {
            // SAFETY: forwarded unchanged.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // A sampled object moves to a new allocation (sampled again or not) so the old address
        // becomes a use-after-free trap; an unsampled one may move into the pool.
        // SAFETY: new_size is non-zero and fits isize per GlobalAlloc::realloc's contract.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout; the copy is of the smaller size, both regions are live.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
