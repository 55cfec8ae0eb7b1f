//! The simulator's fast path: jumping over the runs of samples that change nothing.
//!
//! Under the timed interval alone (no `sample_rate`, no `burst`) consecutive samples are at
//! least the interval in force `T` apart (`T` plus the wait for the next allocation). A
//! short-lived sample whose lifetime `L` is at most `T` is therefore freed before the next
//! sample: it takes the slot at the head of the free FIFO and gives it back at the tail before
//! anything else looks at the pool. A run of `j` such *quiet* samples only rotates the FIFO by
//! `j` (the covered-sites filter gets and loses the same site; occupancy, and with it the
//! adaptive interval and covered-site skipping, does not move), so it is applied in O(1).
//!
//! Every other sample is *special* and goes through the step-by-step code
//! ([`Sim::sample`]): the bug path, a long-lived object, a short-lived one refused as covered,
//! and a short-lived one with `L > T` (memoryless: `L = T + Exp`). Each sample is special
//! independently with the same probability `p` while the pool's state is fixed, so the
//! number of quiet samples before the next special one is geometric; the time of the `k`-th
//! sample after the start is `ready + (k - 1)·T + Gamma(k)` (the waits for the next
//! allocation after each deadline are exponential). When that time passes the next thing
//! the run must stop at (a pending free, a checkpoint, the horizon), the run is cut there
//! exactly: the partial sums of the waits between two known ones follow a beta law (the
//! bridge), so a bisection finds the last sample before the stop and its time, and by
//! memorylessness the rest of the run is redrawn afterwards. The last quiet sample's object
//! may still be alive at the stop: its lifetime (exponential, at most `T`) is drawn then, and
//! if it outlives the stop it is put back in the pool as an ordinary short-lived object.
//!
//! What this gives up against the step-by-step simulator is the identity of the draws, not
//! their law: the two agree in distribution (tested in `simulate.rs`), not sample for sample.
//! Not covered here (the step-by-step code runs instead): `sample_rate`, `burst`, and the
//! time a use-after-free is pending (the freed slot's reuse decides it).

use super::{Life, Sim, What, NS, SHORT_SITES};
use std::cmp::Reverse;
use ufence_core::decisions;

/// Where a quiet run ended.
pub(super) enum Step {
    /// At a special sample, simulated; `stop` when the machine can stop (its first detection).
    Sampled { stop: bool },
    /// At the next event the run must not pass (the clock is there, and no sample between):
    /// the step-by-step code takes that event.
    Bridged,
    /// Nothing done: runs would be a sample or two, where stepping is cheaper than jumping;
    /// the step-by-step code takes the next events (`DENSE_STEPS` of them).
    Dense,
}

/// Above this chance that a sample is special, the step-by-step code takes the next
/// `DENSE_STEPS` events before the fast path looks again.
const DENSE: f64 = 0.2;
pub(super) const DENSE_STEPS: u32 = 64;

/// Samples in a run without any special one (beyond any horizon at any interval >= 1 ms).
const NEVER: u64 = 1 << 52;

impl Sim<'_> {
    /// Runs quiet samples up to the next special sample, or up to the next event (a pending
    /// free, checkpoint `checkpoint`, `limit`), whichever comes first.
    pub(super) fn quiet_run(&mut self, limit: u64, checkpoint: usize) -> Step {
        let w = &self.sc.workload;
        let occ = decisions::occupancy_permille(self.m.fifo.len(), self.n);
        let due = self.m.knobs.due_at(self.interval, self.due, self.t, occ);
        self.due = due;
        let ready = due.max(self.t) as f64;
        let t_ns = self.m.knobs.effective_interval(self.interval, occ);
        let t_eff = t_ns as f64;
        let full = self.m.fifo.is_empty();
        let life = w.lifetime_s * NS;
        // Short-lived sites that covered-site skipping would refuse now.
        let skipping =
            decisions::skips_covered(self.sc.settings.skip_covered_thresh, occ, false, || true);
        let refused = if skipping && !full {
            self.short_sites_covered() as f64 / SHORT_SITES as f64
        } else {
            0.0
        };
        let outlives = if life > 0.0 {
            (-t_eff / life).exp()
        } else {
            0.0
        };
        let p_bug = self.p_bug.min(1.0);
        let w_bug = p_bug;
        let w_long = (1.0 - p_bug) * w.long_lived;
        let short = (1.0 - p_bug) * (1.0 - w.long_lived);
        let w_refused = short * refused;
        let w_outlives = short * (1.0 - refused) * outlives;
        // With the pool full every sample is refused alike: none is special.
        let p = if full {
            0.0
        } else {
            (w_bug + w_long + w_refused + w_outlives).min(1.0)
        };
        if p > DENSE {
            return Step::Dense;
        }
        let quiet = if p <= 0.0 {
            NEVER
        } else if p >= 1.0 {
            0
        } else {
            (self.rng.unit().ln() / (-p).ln_1p()).min(NEVER as f64) as u64
        };
        let cp = self
            .sc
            .checkpoints
            .get(checkpoint)
            .map_or(u64::MAX, |c| ((c * NS) as u64).saturating_add(1));
        let stop = self.free_at().min(limit).min(cp);
        // A run much longer than the samples that fit before `stop` is taken in parts (the
        // geometric count is memoryless): the bisection below then costs a few steps, not
        // fifty, where only a few samples come before a near stop.
        let fit = (stop as f64 - ready).max(0.0) / (t_eff + self.mean_gap);
        let cap = (2.0 * fit + 16.0).min(NEVER as f64) as u64;
        let partial = quiet >= cap;
        let k = if partial { cap } else { quiet + 1 };
        let s_k = self.rng.gamma(k, self.mean_gap);
        let at = |j: u64, s: f64| ready + (j - 1) as f64 * t_eff + s;
        let t_k = at(k, s_k);
        if partial && t_k < stop as f64 {
            // `k` quiet samples, all before the stop; the last one's object becomes an
            // ordinary short-lived one (its lifetime at most the interval), so that nothing
            // about it is left pending for the next run.
            self.quiet(k, full);
            self.t = t_k as u64;
            self.due = self.t.saturating_add(t_ns);
            if !full {
                self.last_quiet(t_k, None, t_eff, life, skipping);
            }
            return Step::Sampled { stop: false };
        }
        if !partial && t_k < stop as f64 {
            self.quiet(quiet, full);
            self.t = t_k as u64;
            self.due = self.t.saturating_add(t_ns);
            let x = self.rng.unit() * p;
            let stop = if x <= w_bug {
                self.sample(occ, true, What::Bug, self.bug_site, Life::Draw)
            } else if x <= w_bug + w_long {
                let site = self.long_site();
                self.sample(occ, true, What::Long, site, Life::Draw)
            } else if x <= w_bug + w_long + w_refused {
                self.r.refused_covered += 1;
                false
            } else {
                let site = self.uncovered_short_site(skipping);
                let l = t_eff + self.rng.exp(life);
                self.sample(occ, true, What::Short, site, Life::Given(l as u64))
            };
            return Step::Sampled { stop };
        }
        // Cut the run at `stop`: bisect on the bridge for the last sample before it.
        let (mut lo, mut s_lo, mut hi, mut s_hi) = (0u64, 0.0f64, k, s_k);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let a = self.rng.gamma(mid - lo, 1.0);
            let b = self.rng.gamma(hi - mid, 1.0);
            let s_mid = s_lo + (s_hi - s_lo) * (a / (a + b));
            if at(mid, s_mid) < stop as f64 {
                (lo, s_lo) = (mid, s_mid);
            } else {
                (hi, s_hi) = (mid, s_mid);
            }
        }
        self.quiet(lo, full);
        if lo > 0 {
            let last = at(lo, s_lo);
            self.due = (last as u64).saturating_add(t_ns);
            if !full {
                self.last_quiet(last, Some(stop), t_eff, life, skipping);
            }
        }
        self.t = self.t.max(stop);
        Step::Bridged
    }

    /// `j` quiet samples: each takes the FIFO's head and gives it back at the tail (or, with
    /// the pool full, is refused). Slot generations are not bumped: no pending free or check
    /// names a slot in the FIFO while a run lasts (checks stop runs; frees name live slots).
    fn quiet(&mut self, j: u64, full: bool) {
        if j == 0 {
            return;
        }
        self.r.jumped += j;
        if full {
            self.r.refused_full += j;
        } else {
            self.r.samples += j;
            let len = self.m.fifo.len() as u64;
            self.m.fifo.rotate_left((j % len) as usize);
        }
    }

    /// The last quiet sample (at `last`, lifetime exponential with mean `life` but at most
    /// `t_eff`): its lifetime is drawn now, and the object becomes an ordinary short-lived one,
    /// back in its slot (the FIFO's tail, where the rotation put it) until its free; at a cut
    /// (`stop`), only if it is still alive there.
    fn last_quiet(&mut self, last: f64, stop: Option<u64>, t_eff: f64, life: f64, skipping: bool) {
        if life <= 0.0 || stop.is_some_and(|s| s as f64 - last >= t_eff) {
            return;
        }
        // Inverse of the exponential's distribution truncated to (0, t_eff].
        let u = self.rng.unit();
        let l = -life * (-u * -(-t_eff / life).exp_m1()).ln_1p();
        let free = last + l;
        if stop.is_some_and(|s| free <= s as f64) {
            return;
        }
        let site = self.uncovered_short_site(skipping);
        let slot = self.m.fifo.pop_back().expect("the run's pool had room");
        let generation = self.m.occupy(slot, site);
        self.m.frees.push(Reverse((free as u64, slot, generation)));
    }

    /// A short-lived site, uniform among those covered-site skipping lets through now.
    fn uncovered_short_site(&mut self, skipping: bool) -> u64 {
        for _ in 0..10_000 {
            let site = self.m.short_sites[(self.rng.bits() % SHORT_SITES) as usize];
            if !skipping || !self.m.covered.contains(site) {
                return site;
            }
        }
        // Unreachable in practice: called only when some short-lived site is uncovered.
        self.m.short_sites[0]
    }

    /// How many of the short-lived sites the covered-sites filter holds, counted again only
    /// after the filter changed.
    fn short_sites_covered(&mut self) -> u32 {
        let m = &mut *self.m;
        if m.short_covered.0 != m.covered_changes {
            let count = m
                .short_sites
                .iter()
                .filter(|&&h| m.covered.contains(h))
                .count() as u32;
            m.short_covered = (m.covered_changes, count);
        }
        m.short_covered.1
    }
}
