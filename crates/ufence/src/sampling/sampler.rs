//! Which allocations go to the pool.
//!
//! The fast path is one decrement of a per-thread counter and one branch ([`tick`]). When the
//! counter runs out, the slow path ([`decide`]) looks at the clock and at the runtime knobs,
//! decides whether this allocation is sampled, and sets the counter for the next visit:
//!
//! - `sample_rate=N`: a geometric draw, so each allocation is sampled with probability 1/N
//!   (a memoryless version of GWP-ASan's per-thread countdown, seeded per thread).
//! - `sample_interval=MS`: KFENCE's semantics without KFENCE's timer. A global deadline is
//!   claimed with one compare-and-swap by the first thread to see it pass; the allocation that
//!   claims it is sampled and the next deadline is one interval later. Threads look at the clock
//!   every `stride` allocations, where `stride` adapts to the thread's allocation rate so that it
//!   checks about sixteen times per interval and lands close to the deadline: a thread
//!   allocating ten million times a second reads the clock a few hundred times a second, a thread
//!   allocating rarely checks on every allocation, and neither costs anything measurable.
//!
//! No helper thread, no timer signal, no shared cache line written on the fast path.

use crate::options::Options;
use crate::stats::Counters;
use crate::sys;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering, Ordering::Relaxed};

/// The per-thread block, viewed as named fields (see `sys::thread_block`).
#[repr(C)]
struct ThreadState {
    /// Allocations left before the slow path runs again.
    countdown: i64,
    /// The value `countdown` was last set to: allocations done since then, on arrival.
    planned: u64,
    /// Allocations left until the next count-based sample.
    rate_left: i64,
    /// The `sample_rate` that `rate_left` was drawn for.
    rate_seen: u64,
    /// Allocations between clock checks.
    stride: u64,
    /// When this thread last read the clock.
    last_check: u64,
    /// xorshift state; 0 until the thread's first slow path.
    rng: u64,
    /// Samples still owed by the current burst.
    burst_left: u64,
    /// The last address this thread faulted on inside a live object's page (see `fault`).
    last_fault: u64,
    /// Non-zero while this thread looks up the allocator a preload forwards to (see
    /// [`begin_lookup`]).
    looking_up: u64,
    /// The countdown that lookup set aside.
    lookup_countdown: i64,
    /// This thread's id, with the fork generation it was read in (see [`thread_id`]); 0 until
    /// read.
    tid: u64,
    /// This thread's name as last read (see [`thread_name`]), when (ns since ufence started,
    /// 0 = never) and in which naming generation.
    name: [u8; 16],
    name_at: u64,
    name_gen: u64,
}

const _: () = assert!(core::mem::size_of::<ThreadState>() == 128);

/// Set while the slow path runs, so that allocations made underneath it (by the C library, the
/// unwinder) take the fast path instead of recursing.
const BUSY: i64 = 1 << 62;
/// At most this many allocations between looks at the knobs while sampling is off...
const IDLE_RECHECK: u64 = 1 << 16;
/// ...and about this often by the clock (a clock read per look: nothing at these rates).
const IDLE_RECHECK_NS: u64 = 50_000_000;
const MAX_STRIDE: u64 = 1 << 16;
/// While the interval's sample waits for a request that fits, how far apart a thread looks.
const OWED_RECHECK: u64 = 64;

#[inline(always)]
fn state() -> *mut ThreadState {
    sys::thread_block().cast()
}

/// Forks seen by this process (its own, and its ancestors' before it was forked): a thread id
/// cached in another generation is a parent's.
static FORK_GEN: AtomicU32 = AtomicU32::new(1);

/// Called in a forked child once it owns its control block (`control::fork_child`), before
/// its first sampled allocation or free records a thread id.
pub fn note_fork() {
    FORK_GEN.fetch_add(1, Relaxed);
}

/// The calling thread's id, read once per thread (and again in a forked child): a record of an
/// allocation or free costs no `gettid`.
pub fn thread_id() -> u32 {
    let gen = FORK_GEN.load(Relaxed) as u64;
    // SAFETY: the calling thread's own block.
    let t = unsafe { &mut (*state()).tid };
    if *t >> 32 != gen {
        *t = gen << 32 | sys::gettid() as u64;
    }
    *t as u32
}

/// Bumped whenever a thread of the process may have been renamed (the preload's `prctl` and
/// `pthread_setname_np`): every thread reads its name again at its next record.
static NAME_GEN: AtomicU64 = AtomicU64::new(1);

/// How long a thread's name is taken as read, for renames that do not go through the preload
/// (a program using `Guarded`, a write to `/proc/self/task/N/comm`).
const NAME_FRESH_NS: u64 = 10_000_000;

pub fn note_thread_renamed() {
    NAME_GEN.fetch_add(1, Relaxed);
}

/// The calling thread's name at `now` (ns since ufence started), read with `prctl` only when
/// it may have changed: a sampled allocation and its free would otherwise make two calls.
pub fn thread_name(now: u64) -> [u8; 16] {
    let gen = NAME_GEN.load(Relaxed);
    // SAFETY: the calling thread's own block.
    let t = unsafe { &mut *state() };
    if t.name_at == 0 || t.name_gen != gen || now.saturating_sub(t.name_at) >= NAME_FRESH_NS {
        t.name = sys::thread_name();
        t.name_at = now.max(1);
        t.name_gen = gen;
    }
    t.name
}

/// The fast path: true when this allocation must go to [`decide`].
#[inline(always)]
pub fn tick() -> bool {
    // `countdown` is the block's first word.
    sys::thread_count_down()
}

/// An on/off knob stored as a whole word, so that every bit pattern is a valid value: knobs
/// live in the control block, which the command-line tool writes from another process.
#[repr(transparent)]
pub struct Flag(AtomicU64);

impl Flag {
    pub const fn new(on: bool) -> Flag {
        Flag(AtomicU64::new(on as u64))
    }
    pub fn load(&self, order: Ordering) -> bool {
        self.0.load(order) != 0
    }
    pub fn store(&self, on: bool, order: Ordering) {
        self.0.store(on as u64, order)
    }
}

/// Runtime knobs, read on the slow path. Part of the control block (`#[repr(C)]`, words only):
/// `ufence set` changes them from outside the process; [`knobs`] finds them.
#[repr(C)]
pub struct Knobs {
    pub enabled: Flag,
    pub interval_ns: AtomicU64,
    pub rate: AtomicU64,
    pub burst: AtomicU64,
    pub max_overhead: AtomicU64,
    pub skip_covered_thresh: AtomicU64,
    pub adaptive: Flag,
    pub adaptive_max_ns: AtomicU64,
    /// `sample_sizes`, as its bounds.
    pub size_min: AtomicU64,
    pub size_max: AtomicU64,
    /// The interval in force: `interval_ns`, or what `adaptive` made of it at the last sample.
    pub current_ns: AtomicU64,
    /// The next time-based sample is due at this many ns of CLOCK_MONOTONIC (system-wide, so
    /// another process can set it).
    pub deadline: AtomicU64,
    /// `on_error=abort`.
    pub abort_on_error: Flag,
}

impl Default for Knobs {
    fn default() -> Self {
        Self::new()
    }
}

impl Knobs {
    pub const fn new() -> Knobs {
        Knobs {
            enabled: Flag::new(false),
            interval_ns: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            burst: AtomicU64::new(0),
            max_overhead: AtomicU64::new(0),
            skip_covered_thresh: AtomicU64::new(100),
            adaptive: Flag::new(false),
            adaptive_max_ns: AtomicU64::new(0),
            size_min: AtomicU64::new(0),
            size_max: AtomicU64::new(u64::MAX),
            current_ns: AtomicU64::new(0),
            deadline: AtomicU64::new(u64::MAX),
            abort_on_error: Flag::new(false),
        }
    }
}

/// The knobs until the control block exists (and for good if it cannot be had).
static EARLY_KNOBS: Knobs = Knobs::new();
static KNOBS: AtomicPtr<Knobs> = AtomicPtr::new(&EARLY_KNOBS as *const Knobs as *mut Knobs);

/// The knobs in force: in the control block once ufence has started.
#[inline]
pub fn knobs() -> &'static Knobs {
    // SAFETY: KNOBS points at EARLY_KNOBS or at the control block's knobs, which are mapped
    // for the life of the process (see `control`).
    unsafe { &*KNOBS.load(Relaxed) }
}

/// Moves the knobs into the control block, carrying their values over. Called once at start,
/// before the detector is published as ready.
pub fn move_knobs(to: &'static Knobs) {
    let from = knobs();
    to.copy_from(from);
    KNOBS.store(to as *const Knobs as *mut Knobs, Ordering::Release);
}

impl Knobs {
    /// Loads the options in force at start; the first deadline is random within the interval,
    /// so that the machines of a fleet sample different allocations.
    pub fn load(&self, o: &Options, seed: u64) {
        self.rate.store(o.sample_rate, Relaxed);
        self.burst.store(o.burst, Relaxed);
        self.max_overhead.store(o.max_overhead, Relaxed);
        self.skip_covered_thresh
            .store(o.skip_covered_thresh, Relaxed);
        self.adaptive.store(o.adaptive, Relaxed);
        self.adaptive_max_ns
            .store(o.adaptive_max.saturating_mul(1_000_000), Relaxed);
        self.size_min.store(o.sample_sizes.min as u64, Relaxed);
        self.size_max.store(o.sample_sizes.max as u64, Relaxed);
        self.enabled.store(o.enabled, Relaxed);
        self.abort_on_error
            .store(o.on_error == crate::options::OnError::Abort, Relaxed);
        self.set_interval_ms(o.sample_interval, seed);
    }

    /// Changes the runtime option `key` to its value in `o` (which the caller parsed and
    /// validated against the option table). The one place a runtime change is made, from inside
    /// the process (`ufence::set_*`) or from `ufence set`. False if `key` is not a runtime
    /// option.
    pub fn apply(&self, key: &str, o: &Options) -> bool {
        match key {
            "enabled" => self.enabled.store(o.enabled, Relaxed),
            "sample_interval" => self.set_interval_ms(o.sample_interval, sys::random_u64()),
            "sample_rate" => self.rate.store(o.sample_rate, Relaxed),
            "on_error" => self
                .abort_on_error
                .store(o.on_error == crate::options::OnError::Abort, Relaxed),
            "max_overhead" => self.max_overhead.store(o.max_overhead, Relaxed),
            "skip_covered_thresh" => self
                .skip_covered_thresh
                .store(o.skip_covered_thresh.min(100), Relaxed),
            "adaptive" => {
                self.adaptive.store(o.adaptive, Relaxed);
                if !o.adaptive {
                    // Drop a deadline that adaptive pushed out: the plain interval applies now.
                    let base = self.interval_ns.load(Relaxed);
                    self.current_ns.store(base, Relaxed);
                    if base > 0 {
                        self.deadline.fetch_min(sys::now_ns() + base, Relaxed);
                    }
                }
            }
            "adaptive_max" => self
                .adaptive_max_ns
                .store(o.adaptive_max.saturating_mul(1_000_000), Relaxed),
            "sample_sizes" => {
                self.size_min.store(o.sample_sizes.min as u64, Relaxed);
                self.size_max.store(o.sample_sizes.max as u64, Relaxed);
            }
            "burst" => self.burst.store(o.burst, Relaxed),
            _ => return false,
        }
        true
    }

    /// The runtime options as the knobs hold them now, over `base` for the others.
    pub fn read_into(&self, base: &Options) -> Options {
        let mut o = *base;
        o.enabled = self.enabled.load(Relaxed);
        o.sample_interval = self.interval_ns.load(Relaxed) / 1_000_000;
        o.sample_rate = self.rate.load(Relaxed);
        o.on_error = if self.abort_on_error.load(Relaxed) {
            crate::options::OnError::Abort
        } else {
            crate::options::OnError::Continue
        };
        o.max_overhead = self.max_overhead.load(Relaxed);
        o.skip_covered_thresh = self.skip_covered_thresh.load(Relaxed);
        o.adaptive = self.adaptive.load(Relaxed);
        o.adaptive_max = self.adaptive_max_ns.load(Relaxed) / 1_000_000;
        let (min, max) = (self.size_min.load(Relaxed), self.size_max.load(Relaxed));
        o.sample_sizes = crate::options::SizeRange {
            min: usize::try_from(min).unwrap_or(usize::MAX),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        };
        o.burst = self.burst.load(Relaxed);
        o
    }

    fn copy_from(&self, o: &Knobs) {
        let pairs = [
            (&self.interval_ns, &o.interval_ns),
            (&self.rate, &o.rate),
            (&self.burst, &o.burst),
            (&self.max_overhead, &o.max_overhead),
            (&self.skip_covered_thresh, &o.skip_covered_thresh),
            (&self.adaptive_max_ns, &o.adaptive_max_ns),
            (&self.size_min, &o.size_min),
            (&self.size_max, &o.size_max),
            (&self.current_ns, &o.current_ns),
            (&self.deadline, &o.deadline),
        ];
        for (to, from) in pairs {
            to.store(from.load(Relaxed), Relaxed);
        }
        for (to, from) in [
            (&self.enabled, &o.enabled),
            (&self.adaptive, &o.adaptive),
            (&self.abort_on_error, &o.abort_on_error),
        ] {
            to.store(from.load(Relaxed), Relaxed);
        }
    }

    /// The interval to the next time-based sample, given the pool's occupancy (per mille):
    /// with `adaptive`, `sample_interval` while at most half the pool is in use, then growing
    /// geometrically to `adaptive_max` as the pool fills. The seed's "dynamic policy": fewer new
    /// objects while long-lived ones hold the pool, so that it drains and keeps sampling.
    pub fn effective_interval(&self, base: u64, occupancy_permille: u64) -> u64 {
        let max = self.adaptive_max_ns.load(Relaxed);
        if !self.adaptive.load(Relaxed) || occupancy_permille <= 500 || max <= base {
            return base;
        }
        let x = (occupancy_permille.min(1000) - 500) as f64 / 500.0;
        let ratio = max as f64 / base.max(1) as f64;
        ((base as f64) * crate::math::pow(ratio, x)) as u64
    }

    /// The deadline in force at `now` for one that was set to `due`: with `adaptive`, a
    /// deadline set while the pool was fuller is brought in to what the interval is now
    /// (`occupancy` per mille), rather than waiting out an interval chosen for a full pool.
    pub fn due_at(&self, interval: u64, due: u64, now: u64, occupancy_permille: u64) -> u64 {
        if self.adaptive.load(Relaxed) && due > now {
            let sooner = now.saturating_add(self.effective_interval(interval, occupancy_permille));
            if sooner < due {
                return sooner;
            }
        }
        due
    }

    /// Changes the interval; a shorter interval takes effect at once.
    pub fn set_interval_ms(&self, ms: u64, seed: u64) {
        let ns = ms.saturating_mul(1_000_000);
        self.interval_ns.store(ns, Relaxed);
        self.current_ns.store(ns, Relaxed);
        if ns > 0 {
            self.deadline
                .fetch_min(first_deadline(sys::now_ns(), seed, ns), Relaxed);
        }
    }
}

/// The first deadline of an interval of `ns` set at `now`: random within the interval (from
/// `seed`), so that the machines of a fleet sample different allocations.
pub fn first_deadline(now: u64, seed: u64, ns: u64) -> u64 {
    now + seed % ns.max(1)
}

/// The pool's occupancy per mille with `free` of `n` slots free, as the sampler sees it.
pub fn occupancy_permille(free: usize, n: usize) -> u64 {
    (1000 - free * 1000 / n.max(1)) as u64
}

/// Allocations until the next count-based sample, from 64 random bits: geometric with mean
/// `rate` (at least 1), so each allocation is sampled with probability 1/rate.
pub fn geometric(random: u64, rate: u64) -> i64 {
    if rate <= 1 {
        return 1;
    }
    let u = ((random >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let p = 1.0 / rate as f64;
    let q = (crate::math::ln(u) / crate::math::ln_1p(-p)).clamp(1.0, (i64::MAX / 4) as f64);
    // The ceiling, by truncation (`ceil` would be a libm call on baseline x86-64).
    let n = q as i64;
    n + i64::from((n as f64) < q)
}

impl Knobs {}

/// Whether a request may go to the pool, as far as the slow path is concerned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fit {
    Yes,
    /// Fits no slot class (over `max_object_size`, or too aligned for a large slot): counted
    /// as "skipped (incompatible)".
    Incompatible,
    /// Outside the sizes the user asked for (`sample_sizes`): not counted.
    Filtered,
}

/// What the slow path decided for this allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Sample it; `timed` when the sample is the interval's (so a refusal can hand it on).
    Sample {
        timed: bool,
    },
    Pass,
}

/// Marks the calling thread as inside ufence: allocations it makes until [`resume`] or
/// [`release`] take the fast path (the wrapped allocator). Returns the previous countdown.
#[inline]
pub fn hold() -> i64 {
    // SAFETY: the calling thread's own block.
    unsafe {
        let t = state();
        let prev = (*t).countdown;
        (*t).countdown = BUSY;
        prev
    }
}

/// Marks the calling thread as looking up the allocator behind the preload (with `dlsym`,
/// whose failures allocate an error message). Returns false if it already is: an allocation
/// made by the lookup itself, which must not start another one. Until [`end_lookup`], the
/// thread's allocations are not sampled, as under [`hold`].
#[inline]
pub fn begin_lookup() -> bool {
    // SAFETY: the calling thread's own block.
    unsafe {
        let t = state();
        if (*t).looking_up != 0 {
            return false;
        }
        (*t).looking_up = 1;
        (*t).lookup_countdown = hold();
    }
    true
}

/// Ends a [`begin_lookup`] that returned true.
#[inline]
pub fn end_lookup() {
    // SAFETY: the calling thread's own block.
    unsafe {
        let t = state();
        release((*t).lookup_countdown);
        (*t).looking_up = 0;
    }
}

/// Ends a [`hold`] that did not run [`decide`], restoring the countdown it returned.
#[inline]
pub fn release(prev: i64) {
    // SAFETY: the calling thread's own block.
    unsafe { (*state()).countdown = prev };
}

/// Ends the slow path of an allocation: the countdown [`decide`] planned takes effect.
#[inline]
pub fn resume() {
    // SAFETY: the calling thread's own block.
    unsafe {
        let t = state();
        (*t).countdown = (*t).planned as i64;
    }
}

/// The slow path, called between [`hold`] and [`resume`]. `ready` says whether the detector is
/// usable (false while it starts or after it was disabled); `fit` whether this request could go
/// to the pool; `occupancy` the share of the pool in use, per mille (for `adaptive`).
#[cold]
#[inline(never)]
pub fn decide(ready: bool, fit: Fit, counters: &Counters, occupancy: u64) -> Verdict {
    let compatible = fit == Fit::Yes;
    // SAFETY: the calling thread's own block.
    let t = unsafe { &mut *state() };
    let done = t.planned.max(1);
    if !ready {
        return t.plan(64);
    }
    crate::control::note_allocations(done);
    if t.rng == 0 {
        t.rng = sys::random_u64() ^ ((sys::gettid() as u64) << 17) | 1;
        t.stride = 1;
        t.last_check = sys::now_ns();
    }
    let k = knobs();
    if !k.enabled.load(Relaxed)
        || (k.interval_ns.load(Relaxed) == 0 && k.rate.load(Relaxed) == 0 && t.burst_left == 0)
    {
        let n = t.idle_plan(done);
        return t.plan(n);
    }
    let mut sample = false;
    let mut timed = false;
    let mut owed = false;

    // A burst continues with the allocations right after a time-based sample.
    if t.burst_left > 0 {
        t.burst_left -= 1;
        sample = true;
    }

    let rate = k.rate.load(Relaxed);
    if rate > 0 {
        if t.rate_seen != rate {
            // A new rate: draw afresh, counting this allocation as the first of the draw.
            t.rate_seen = rate;
            t.rate_left = t.draw(rate) - 1;
        } else {
            t.rate_left -= done as i64;
        }
        if t.rate_left <= 0 {
            t.rate_left = t.draw(rate);
            sample = true;
        }
    }

    let interval = k.interval_ns.load(Relaxed);
    let mut until_due = u64::MAX;
    if interval > 0 {
        let now = sys::now_ns();
        let mut due = k.deadline.load(Relaxed);
        let sooner = k.due_at(interval, due, now, occupancy);
        if sooner < due {
            k.deadline.fetch_min(sooner, Relaxed);
            k.current_ns
                .store(k.effective_interval(interval, occupancy), Relaxed);
            due = sooner;
        }
        if now >= due {
            if !compatible {
                // Keep the deadline for the next compatible allocation, as KFENCE keeps its
                // gate open when it refuses a request.
                owed = true;
            } else {
                let next = k.effective_interval(interval, occupancy);
                if k.deadline
                    .compare_exchange(due, now.saturating_add(next), Relaxed, Relaxed)
                    .is_ok()
                {
                    k.current_ns.store(next, Relaxed);
                    sample = true;
                    timed = true;
                    t.burst_left = k.burst.load(Relaxed);
                }
            }
        } else {
            until_due = due - now;
        }
        // Adapt the stride: about sixteen clock checks per interval at this thread's rate,
        // growing at most twofold per step so that one idle period does not fling it wide.
        let per_alloc = (now.saturating_sub(t.last_check) / done).max(1);
        let ideal = (interval / 16 / per_alloc).clamp(1, MAX_STRIDE);
        t.stride = ideal.min(t.stride * 2 + 1);
        t.last_check = now;
        // Land near the deadline rather than up to a stride after it.
        until_due = (until_due / per_alloc).max(1);
    }

    if sample && fit == Fit::Incompatible {
        crate::stats::Counters::bump(&counters.skipped_incompatible);
    }
    if !compatible {
        sample = false;
    }

    let mut next = IDLE_RECHECK;
    if interval > 0 {
        next = next.min(t.stride).min(until_due);
    }
    if rate > 0 {
        next = next.min(t.rate_left.max(1) as u64);
    }
    if owed {
        // Look again within the next 64 allocations, at a random distance so that a program's
        // own rhythm cannot hide the fitting requests: cheap when none ever fits, prompt when
        // some do.
        next = next.min(1 + t.next_random() % OWED_RECHECK);
    }
    if t.burst_left > 0 {
        next = 1;
    }
    t.plan(next);
    if sample {
        Verdict::Sample { timed }
    } else {
        Verdict::Pass
    }
}

impl ThreadState {
    /// Records how many allocations to let through before the next slow path; [`resume`]
    /// applies it once the caller has finished its own slow work.
    fn plan(&mut self, n: u64) -> Verdict {
        self.planned = n;
        Verdict::Pass
    }

    /// While sampling is off: allocations until this thread looks at the knobs again, about
    /// every `IDLE_RECHECK_NS` at its own allocation rate, so that `ufence set PID enabled=1`
    /// takes effect promptly in a quiet process as in a busy one.
    fn idle_plan(&mut self, done: u64) -> u64 {
        let now = sys::now_ns();
        let per_alloc = (now.saturating_sub(self.last_check) / done).max(1);
        self.last_check = now;
        // Growing at most twofold per look, as the interval's stride does: the first
        // measurement, just after the thread's clock was first read, says nothing.
        let ideal = (IDLE_RECHECK_NS / per_alloc).clamp(1, IDLE_RECHECK);
        self.stride = ideal.min(self.stride * 2 + 1);
        self.stride
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Allocations until the next count-based sample: geometric with mean `rate`.
    fn draw(&mut self, rate: u64) -> i64 {
        if rate <= 1 {
            return 1;
        }
        geometric(self.next_random(), rate)
    }
}

/// Makes the plan of the current slow path at least `n` allocations long.
pub fn pause(n: u64) {
    // SAFETY: the calling thread's own block.
    let t = unsafe { &mut *state() };
    t.planned = t.planned.max(n);
}

/// A random bit for the calling thread (object placement), after its first slow path.
pub fn random_bit() -> bool {
    // SAFETY: the calling thread's own block.
    let t = unsafe { &mut *state() };
    if t.rng == 0 {
        t.rng = sys::random_u64() | 1;
    }
    t.next_random() >> 40 & 1 == 1
}

/// Records a fault at `addr` on a live object's page; true the first time in a row, false
/// when the thread faults at the same address again (so it is not a transient race).
pub fn first_fault_at(addr: usize) -> bool {
    // SAFETY: the calling thread's own block; a signal handler runs on the faulting thread.
    let t = unsafe { &mut *state() };
    if t.last_fault == addr as u64 {
        t.last_fault = 0;
        false
    } else {
        t.last_fault = addr as u64;
        true
    }
}

/// Caps the calling thread's current plan at `max` more allocations, keeping the count of those
/// already done (so the next look still measures the thread's rate right). In a forked child:
/// the parent's plan may be tens of thousands of allocations long and the child's rate quite
/// different, yet a child that allocates a few times and execs should not pay a slow path.
pub fn cap_plan(max: u64) {
    // SAFETY: the calling thread's own block.
    let t = unsafe { &mut *state() };
    let max = max as i64;
    if t.countdown > max && t.countdown < BUSY {
        let done = (t.planned as i64 - t.countdown).max(0);
        t.countdown = max;
        t.planned = (done + max) as u64;
    }
}

/// Forgets the calling thread's plan, so its next allocation runs the slow path (after a knob
/// changes, or in a forked child).
pub fn reset_thread() {
    // SAFETY: the calling thread's own block.
    unsafe {
        (*state()).countdown = 0;
        (*state()).planned = 1;
    }
}
