//! KFENCE's counters, under KFENCE's names. Updated with relaxed atomics on the slow path only
//! (a sampled allocation, a pool free, a skip, a report); the fast path never touches them.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub enabled: bool,
    pub currently_allocated: u64,
    pub total_allocations: u64,
    pub total_frees: u64,
    pub zombie_allocations: u64,
    pub total_bugs: u64,
    pub skipped_incompatible: u64,
    pub skipped_capacity: u64,
    pub skipped_covered: u64,
    /// Not in KFENCE: samples given up because ufence had used its time budget (`max_overhead`).
    pub skipped_budget: u64,
    /// Not in KFENCE: samples given up because the site did not pass `sample_only`/`skip`.
    pub skipped_filtered: u64,
    /// Not in KFENCE: the time-based interval in force, in milliseconds (it moves with
    /// `adaptive=1`); 0 when time-based sampling is off.
    pub sample_interval_ms: u64,
}

impl Stats {
    /// The counters as `name: value` lines, in KFENCE's order and words.
    pub fn write_kfence(&self, out: &mut dyn Write) -> core::fmt::Result {
        for (name, v) in self.fields() {
            writeln!(out, "{name}: {v}")?;
        }
        Ok(())
    }

    /// Name and value of every counter, in KFENCE's order.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        [
            ("enabled", self.enabled as u64),
            ("currently allocated", self.currently_allocated),
            ("total allocations", self.total_allocations),
            ("total frees", self.total_frees),
            ("zombie allocations", self.zombie_allocations),
            ("total bugs", self.total_bugs),
            (
                "skipped allocations (incompatible)",
                self.skipped_incompatible,
            ),
            ("skipped allocations (capacity)", self.skipped_capacity),
            ("skipped allocations (covered)", self.skipped_covered),
            ("skipped allocations (budget)", self.skipped_budget),
            ("skipped allocations (filtered)", self.skipped_filtered),
            ("sample interval (ms)", self.sample_interval_ms),
        ]
    }
}

/// The live counters of this process. Part of the control block (`#[repr(C)]`, words only), so
/// that `ufence stats` reads them from outside.
#[repr(C)]
pub struct Counters {
    pub allocations: AtomicU64,
    pub frees: AtomicU64,
    pub bugs: AtomicU64,
    pub skipped_incompatible: AtomicU64,
    pub skipped_capacity: AtomicU64,
    pub skipped_covered: AtomicU64,
    pub skipped_budget: AtomicU64,
    pub skipped_filtered: AtomicU64,
    /// Nanoseconds spent in sampled allocations and pool frees, all threads together.
    pub pool_ns: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    pub const fn new() -> Counters {
        Counters {
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            bugs: AtomicU64::new(0),
            skipped_incompatible: AtomicU64::new(0),
            skipped_capacity: AtomicU64::new(0),
            skipped_covered: AtomicU64::new(0),
            skipped_budget: AtomicU64::new(0),
            skipped_filtered: AtomicU64::new(0),
            pool_ns: AtomicU64::new(0),
        }
    }

    /// Copies every counter from `o` (when the counters move into the control block).
    pub fn copy_from(&self, o: &Counters) {
        for (to, from) in self.all().into_iter().zip(o.all()) {
            to.store(from.load(Relaxed), Relaxed);
        }
    }

    fn all(&self) -> [&AtomicU64; 9] {
        [
            &self.allocations,
            &self.frees,
            &self.bugs,
            &self.skipped_incompatible,
            &self.skipped_capacity,
            &self.skipped_covered,
            &self.skipped_budget,
            &self.skipped_filtered,
            &self.pool_ns,
        ]
    }

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// The counters as KFENCE shows them, with the interval in force from `knobs`.
    pub fn snapshot(&self, enabled: bool, knobs: &crate::sampler::Knobs) -> Stats {
        let allocations = self.allocations.load(Relaxed);
        let frees = self.frees.load(Relaxed);
        Stats {
            enabled,
            currently_allocated: allocations.saturating_sub(frees),
            total_allocations: allocations,
            total_frees: frees,
            zombie_allocations: 0,
            total_bugs: self.bugs.load(Relaxed),
            skipped_incompatible: self.skipped_incompatible.load(Relaxed),
            skipped_capacity: self.skipped_capacity.load(Relaxed),
            skipped_covered: self.skipped_covered.load(Relaxed),
            skipped_budget: self.skipped_budget.load(Relaxed),
            skipped_filtered: self.skipped_filtered.load(Relaxed),
            sample_interval_ms: if knobs.interval_ns.load(Relaxed) > 0 {
                knobs.current_ns.load(Relaxed) / 1_000_000
            } else {
                0
            },
        }
    }
}
