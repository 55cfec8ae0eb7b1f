//! The fleet simulator: M machines on a simulated clock, each running ufence's own sampling
//! decisions (`ufence::decisions`) on a workload model, to measure the time to the first
//! detection of a planted bug and the pool's occupancy over time: the check of the model in
//! [`crate::plan`], and of the settings it recommends.
//!
//! Called from the detector as they are: the interval in force with `adaptive`
//! (`Knobs::effective_interval`), the adaptive deadline brought in as the pool drains
//! (`Knobs::due_at`), the random first deadline (`first_deadline`), the count-based gap
//! (`geometric`), the occupancy the sampler sees (`occupancy_permille`), covered-site skipping
//! (`skips_covered` on a real counting Bloom filter, `Covered`, with `site_hash`), the pool's
//! shuffled initial order (`shuffled_order`) and object placement (`object_offset`).
//! Re-implemented here, each a few lines: the reuse order (a FIFO of free slots, least recently
//! freed first, as `Pool::pop`/`push`, tested in `pool.rs`), `burst` (the next `burst`
//! allocations after a timed sample), and the refusal of a sample that finds the pool full
//! (its deadline is spent, as in `alloc_slow`). Not modelled: the per-thread clock-check stride
//! (the live sampler lands within a few allocations of the deadline; here exactly on the first
//! allocation after it), the CPU budget (`max_overhead`) and the site filters.
//!
//! Allocations are a Poisson process, so the allocations between two samples are never
//! iterated: the first allocation after a deadline comes an exponential time later, and the
//! time of the N-th allocation (a count-based gap) is a gamma draw. Each sampled allocation is
//! the bug path's with probability `bug_rate / rate`, else long-lived with probability `f`,
//! else short-lived (exponential lifetime). Same seed, same result: each machine draws from
//! its own generator, seeded from the run's seed and the machine's index.
//!
//! Under the interval alone the samples that change nothing (short-lived objects freed before
//! the next sample) are not even drawn one by one: the fast path (module `quiet`) jumps over
//! their runs, and this step-by-step code takes every other sample and event. `exact` turns the
//! fast path off (the reference it is tested against: the same law, not the same draws; and
//! since the fast path cuts its runs at checkpoints, a run with checkpoints and one without
//! draw different fleets).

use crate::plan::{Bug, Kind, Settings, Workload, PAGE};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use ufence_core::decisions::{self, Covered, Knobs};

mod quiet;

/// Distinct allocation sites of the short-lived objects.
pub const SHORT_SITES: u64 = 1000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub machines: u64,
    pub workload: Workload,
    pub settings: Settings,
    pub bug: Bug,
    pub horizon_s: f64,
    pub seed: u64,
    /// Times at which to record each machine's occupancy (seconds, ascending). Without any,
    /// a machine stops at its first detection (nothing more to learn from it).
    pub checkpoints: Vec<f64>,
    /// Stop every machine at the fleet's first detection so far (only the fleet's first
    /// detection is wanted; machines' own times and occupancy are then not reported).
    pub fleet_first_only: bool,
    /// Step through every sample (the reference) instead of jumping over the runs of
    /// short-lived samples that change nothing (module `quiet`).
    pub exact: bool,
}

/// What one run found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Each machine's first detection (seconds), for machines that found the bug; unsorted
    /// unless `fleet_first_only` is off, then sorted.
    pub detections: Vec<f64>,
    /// The fleet's first detection.
    pub fleet_first_s: Option<f64>,
    /// Mean occupancy (objects) over machines at each checkpoint.
    pub occupancy: Vec<f64>,
    /// Samples taken (objects placed in pools), all machines.
    pub samples: u64,
    /// Samples refused because the pool was full, and as covered.
    pub refused_full: u64,
    pub refused_covered: u64,
    /// Executions of the bug path that were sampled.
    pub bug_samples: u64,
    /// Of the samples taken or refused, those the fast path jumped over (module `quiet`).
    pub jumped: u64,
}

/// splitmix64: small, fast, and good enough for the draws of a simulation.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn bits(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.bits() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Exponential with mean `mean`.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// The sum of `n` exponentials of mean `mean` (the time of the n-th Poisson arrival):
    /// a gamma draw, by Marsaglia and Tsang's method for large `n`.
    pub fn gamma(&mut self, n: u64, mean: f64) -> f64 {
        if n < 12 {
            let mut p = 1.0;
            for _ in 0..n {
                p *= self.unit();
            }
            return -p.ln() * mean;
        }
        let d = n as f64 - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * mean;
            }
        }
    }
}

const NS: f64 = 1e9;

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    Short,
    Long,
    Bug,
}

/// One slot of a simulated pool.
#[derive(Clone, Copy)]
struct SimSlot {
    /// Bumped at every allocation into the slot: tells a reused slot from the freed object.
    generation: u32,
    site: u64,
    alive: bool,
}

/// A simulated machine's pool and knobs, reused from one machine to the next by a worker.
struct Machine {
    knobs: Knobs,
    covered: Covered,
    slots: Vec<SimSlot>,
    fifo: VecDeque<u32>,
    order: Vec<u32>,
    /// (time ns, slot, generation): a short-lived or bug object's free.
    frees: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// (time ns, slot, generation): the bug's use after free (or second free).
    checks: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// The short-lived objects' sites, hashed once.
    short_sites: Vec<u64>,
    /// Bumped at every change of `covered`, so that a count made on it can be kept until then.
    covered_changes: u64,
    /// (`covered_changes` when counted, short-lived sites `covered` holds).
    short_covered: (u64, u32),
}

impl Machine {
    fn new(s: &Settings) -> Machine {
        let n = s.num_objects as usize;
        let knobs = Knobs::new();
        knobs
            .interval_ns
            .store(s.sample_interval_ms.saturating_mul(1_000_000), Relaxed);
        knobs.adaptive.store(s.adaptive, Relaxed);
        knobs
            .adaptive_max_ns
            .store(s.adaptive_max_ms.saturating_mul(1_000_000), Relaxed);
        knobs.burst.store(s.burst, Relaxed);
        knobs.rate.store(s.sample_rate, Relaxed);
        knobs
            .skip_covered_thresh
            .store(s.skip_covered_thresh, Relaxed);
        Machine {
            knobs,
            covered: Covered::new(n).expect("map the covered-sites filter"),
            slots: vec![
                SimSlot {
                    generation: 0,
                    site: 0,
                    alive: false,
                };
                n
            ],
            fifo: VecDeque::with_capacity(n),
            order: vec![0; n],
            frees: BinaryHeap::new(),
            checks: BinaryHeap::new(),
            short_sites: (0..SHORT_SITES)
                .map(|i| decisions::site_hash(&[1_000_000 + i as usize]))
                .collect(),
            covered_changes: 0,
            short_covered: (u64::MAX, 0),
        }
    }
}

/// Runs the scenario on `threads` worker threads (the result does not depend on their number).
pub fn run(sc: &Scenario, threads: usize) -> Outcome {
    let next = AtomicUsize::new(0);
    let best = AtomicU64::new(u64::MAX);
    let results: Vec<Vec<(usize, MachineResult)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut m = Machine::new(&sc.settings);
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Relaxed);
                        if i as u64 >= sc.machines {
                            break;
                        }
                        out.push((i, machine(sc, i as u64, &mut m, &best)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut all: Vec<(usize, MachineResult)> = results.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    let mut o = Outcome {
        occupancy: vec![0.0; sc.checkpoints.len()],
        ..Outcome::default()
    };
    for (_, r) in &all {
        if let Some(d) = r.detected_ns {
            o.detections.push(d as f64 / NS);
        }
        for (acc, v) in o.occupancy.iter_mut().zip(&r.occupancy) {
            *acc += *v as f64;
        }
        o.samples += r.samples;
        o.refused_full += r.refused_full;
        o.refused_covered += r.refused_covered;
        o.bug_samples += r.bug_samples;
        o.jumped += r.jumped;
    }
    for v in &mut o.occupancy {
        *v /= sc.machines.max(1) as f64;
    }
    o.detections.sort_by(f64::total_cmp);
    o.fleet_first_s = o.detections.first().copied();
    if sc.fleet_first_only {
        // Machines stopped at the running minimum: only the minimum is meaningful.
        o.detections.truncate(1);
        o.occupancy.clear();
    }
    o
}

#[derive(Default)]
struct MachineResult {
    detected_ns: Option<u64>,
    occupancy: Vec<u32>,
    samples: u64,
    refused_full: u64,
    refused_covered: u64,
    bug_samples: u64,
    jumped: u64,
}

/// Whether a sampled execution of the bug, placed `right` or not, is caught at once (a fault
/// or, for a write in the slack, the canary at its free, which follows at once); None for a
/// use-after-free or double free, caught later if the slot is not reused.
fn caught_by_placement(bug: &Bug, right: bool) -> Option<bool> {
    let size = bug.size.clamp(1, PAGE) as usize;
    let align = bug.align.clamp(1, PAGE) as usize;
    let off = decisions::object_offset(PAGE as usize, size, align, right) as u64;
    match bug.kind {
        Kind::Overflow { bytes, write } => Some(bytes > PAGE - off - size as u64 || write),
        Kind::Underflow { bytes, write } => Some(bytes > off || write),
        Kind::UseAfterFree { .. } | Kind::DoubleFree { .. } => None,
    }
}

/// How a sampled allocation's lifetime is decided.
enum Life {
    /// Drawn now, exponential with the workload's mean (the step-by-step simulator).
    Draw,
    /// Already drawn, in nanoseconds (the fast path's long-lived short objects).
    Given(u64),
}

/// One machine's run in progress.
struct Sim<'a> {
    sc: &'a Scenario,
    m: &'a mut Machine,
    r: MachineResult,
    rng: Rng,
    best: &'a AtomicU64,
    n: usize,
    /// The simulated clock and the timed deadline (ns).
    t: u64,
    due: u64,
    interval: u64,
    mean_gap: f64,
    p_bug: f64,
    bug_site: u64,
    test_mode: bool,
}

impl Sim<'_> {
    /// Records the first detection at `self.t`; true when the machine can stop there.
    fn detect(&mut self) -> bool {
        if self.r.detected_ns.is_some() {
            return false;
        }
        self.r.detected_ns = Some(self.t);
        self.best.fetch_min(self.t, Relaxed);
        self.sc.checkpoints.is_empty()
    }

    /// The kind and site of a sampled allocation, drawn as the workload says.
    fn draw_what(&mut self) -> (What, u64) {
        let w = &self.sc.workload;
        let u = self.rng.unit();
        let what = if u < self.p_bug {
            What::Bug
        } else if self.rng.unit() < w.long_lived {
            What::Long
        } else {
            What::Short
        };
        let site = match what {
            What::Bug => self.bug_site,
            What::Long => self.long_site(),
            What::Short => self.m.short_sites[(self.rng.bits() % SHORT_SITES) as usize],
        };
        (what, site)
    }

    fn long_site(&mut self) -> u64 {
        let sites = self.sc.workload.long_lived_sites.max(1);
        decisions::site_hash(&[1000 + (self.rng.bits() % sites) as usize])
    }

    /// A sampled allocation of `what` from `site` at `self.t`, with the pool's occupancy
    /// (per mille) as the sampler saw it: refused (pool full, or covered), or placed in the
    /// slot at the head of the free FIFO. True when the machine can stop (its first detection).
    fn sample(&mut self, occupancy: u64, timed: bool, what: What, site: u64, life: Life) -> bool {
        if self.m.fifo.is_empty() {
            self.r.refused_full += 1;
            return false;
        }
        let m = &mut *self.m;
        if decisions::skips_covered(
            self.sc.settings.skip_covered_thresh,
            occupancy,
            self.test_mode && !timed,
            || m.covered.contains(site),
        ) {
            self.r.refused_covered += 1;
            return false;
        }
        let slot = m.fifo.pop_front().expect("not empty");
        let generation = m.occupy(slot, site);
        self.r.samples += 1;
        let t = self.t;
        match what {
            What::Long => false,
            What::Short => {
                let life = match life {
                    Life::Draw => self.rng.exp(self.sc.workload.lifetime_s * NS) as u64,
                    Life::Given(ns) => ns,
                };
                m.frees
                    .push(Reverse((t.saturating_add(life), slot, generation)));
                false
            }
            What::Bug => {
                self.r.bug_samples += 1;
                let right = self.rng.bits() >> 40 & 1 == 1;
                // The bug's object is freed at once; then the bad access.
                m.frees.push(Reverse((t, slot, generation)));
                match caught_by_placement(&self.sc.bug, right) {
                    Some(true) => self.detect(),
                    Some(false) => false,
                    None => {
                        let delay = match self.sc.bug.kind {
                            Kind::UseAfterFree { delay_s } | Kind::DoubleFree { delay_s } => {
                                delay_s
                            }
                            _ => 0.0,
                        };
                        // After the free (processed first at equal times: add 1 ns).
                        let at = t.saturating_add((delay * NS) as u64).saturating_add(1);
                        m.checks.push(Reverse((at, slot, generation)));
                        false
                    }
                }
            }
        }
    }

    /// The earliest pending free (ns), or `u64::MAX`.
    fn free_at(&self) -> u64 {
        self.m.frees.peek().map_or(u64::MAX, |Reverse(f)| f.0)
    }
}

impl Machine {
    /// Puts an object from `site` in the free `slot`; its new generation.
    fn occupy(&mut self, slot: u32, site: u64) -> u32 {
        let sl = &mut self.slots[slot as usize];
        sl.generation = sl.generation.wrapping_add(1);
        sl.alive = true;
        sl.site = site;
        self.covered.add(site);
        self.covered_changes += 1;
        sl.generation
    }
}

fn machine(sc: &Scenario, index: u64, m: &mut Machine, best: &AtomicU64) -> MachineResult {
    let w = &sc.workload;
    let s = &sc.settings;
    let n = s.num_objects as usize;
    let mut rng =
        Rng::new(sc.seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ 0x5555_5555_5555_5555);
    // The pool of a new process: every slot free, in the shuffled order.
    decisions::shuffled_order(rng.bits(), &mut m.order);
    m.fifo.clear();
    m.fifo.extend(m.order.iter().copied());
    for sl in &mut m.slots {
        *sl = SimSlot {
            generation: 0,
            site: 0,
            alive: false,
        };
    }
    m.covered.clear();
    m.covered_changes += 1;
    m.frees.clear();
    m.checks.clear();

    let horizon = (sc.horizon_s * NS) as u64;
    let mean_gap = if w.rate > 0.0 {
        NS / w.rate
    } else {
        f64::INFINITY
    };
    let interval = m.knobs.interval_ns.load(Relaxed);
    let due = if interval > 0 {
        decisions::first_deadline(0, rng.bits(), interval)
    } else {
        u64::MAX
    };
    let rate = s.sample_rate;
    let mut sim = Sim {
        sc,
        m,
        r: MachineResult {
            occupancy: Vec::with_capacity(sc.checkpoints.len()),
            ..MachineResult::default()
        },
        rng,
        best,
        n,
        t: 0,
        due,
        interval,
        mean_gap,
        p_bug: if w.rate > 0.0 {
            sc.bug.rate / w.rate
        } else {
            0.0
        },
        bug_site: decisions::site_hash(&[1]),
        test_mode: rate == 1,
    };
    // Time of the next count-based sample.
    let gap = |rng: &mut Rng| {
        let n = decisions::geometric(rng.bits(), rate) as u64;
        rng.gamma(n, mean_gap) as u64
    };
    let mut counted_at = if rate > 0 && w.rate > 0.0 {
        gap(&mut sim.rng)
    } else {
        u64::MAX
    };
    let mut burst_left = 0u64;
    let mut checkpoint = 0usize;
    // The fast path (module `quiet`) covers the timed interval alone; the step-by-step
    // simulator everything, and it takes over for one event after each of the fast path's
    // bridges and while a use-after-free is pending.
    let fast = !sc.exact && interval > 0 && rate == 0 && s.burst == 0 && w.rate > 0.0;
    let mut step_once = false;
    let mut dense = 0u32;

    loop {
        let limit = if sc.fleet_first_only {
            horizon.min(best.load(Relaxed))
        } else {
            horizon
        };
        if dense > 0 {
            dense -= 1;
        } else if fast && !step_once && sim.m.checks.is_empty() {
            if sim.m.fifo.is_empty() && sim.m.frees.is_empty() {
                break; // stuck full: as below
            }
            match sim.quiet_run(limit, checkpoint) {
                quiet::Step::Sampled { stop: true } => break,
                quiet::Step::Sampled { stop: false } => continue,
                quiet::Step::Bridged => {
                    step_once = true;
                    continue;
                }
                quiet::Step::Dense => dense = quiet::DENSE_STEPS,
            }
        }
        step_once = false;
        let occupancy = decisions::occupancy_permille(sim.m.fifo.len(), n);
        let t = sim.t;
        // The next sampled allocation: right after the deadline in force (or the next one
        // while a burst lasts), or the count-based one.
        let timed_at = if w.rate <= 0.0 {
            u64::MAX
        } else if burst_left > 0 {
            t + sim.rng.exp(mean_gap) as u64
        } else if interval > 0 {
            let d = sim.m.knobs.due_at(interval, sim.due, t, occupancy);
            sim.due = d;
            d.max(t).saturating_add(sim.rng.exp(mean_gap) as u64)
        } else {
            u64::MAX
        };
        let sample_at = timed_at.min(counted_at);
        let free_at = sim.free_at();
        let check_at = sim.m.checks.peek().map_or(u64::MAX, |Reverse(c)| c.0);
        let next_event = sample_at.min(free_at).min(check_at);
        // Record the occupancy at each checkpoint passed.
        while checkpoint < sc.checkpoints.len()
            && ((sc.checkpoints[checkpoint] * NS) as u64)
                < next_event.min(horizon.saturating_add(1))
        {
            sim.r.occupancy.push((n - sim.m.fifo.len()) as u32);
            checkpoint += 1;
        }
        if next_event >= limit || next_event == u64::MAX {
            break;
        }
        if sim.m.fifo.is_empty() && sim.m.frees.is_empty() && sim.m.checks.is_empty() {
            // Full of objects that are never freed: every later sample is refused and nothing
            // can be found any more (the seed's silent failure). Nothing left to simulate.
            break;
        }
        sim.t = next_event;
        if check_at == next_event {
            let Reverse((_, slot, generation)) = sim.m.checks.pop().expect("peeked");
            // Caught if the slot still holds the freed bug object (not reused since).
            let sl = sim.m.slots[slot as usize];
            if sl.generation == generation && !sl.alive && sim.detect() {
                break;
            }
            continue;
        }
        if free_at == next_event {
            sim.m.free();
            continue;
        }
        // A sampled allocation.
        let timed = timed_at <= counted_at;
        if timed {
            if burst_left > 0 {
                burst_left -= 1;
            } else {
                let next = sim.m.knobs.effective_interval(interval, occupancy);
                sim.due = sim.t.saturating_add(next);
                burst_left = s.burst;
            }
        } else {
            counted_at = sim.t.saturating_add(gap(&mut sim.rng));
        }
        let (what, site) = sim.draw_what();
        if sim.sample(occupancy, timed, what, site, Life::Draw) {
            break;
        }
    }
    let (mut r, m) = (sim.r, sim.m);
    while r.occupancy.len() < sc.checkpoints.len() && !sc.fleet_first_only {
        r.occupancy.push((n - m.fifo.len()) as u32);
    }
    r
}

impl Machine {
    /// The earliest pending free: the object leaves its slot, which goes to the FIFO's tail
    /// (least recently freed first), unless the entry is stale.
    fn free(&mut self) {
        let Reverse((_, slot, generation)) = self.frees.pop().expect("peeked");
        let sl = &mut self.slots[slot as usize];
        if sl.generation == generation && sl.alive {
            sl.alive = false;
            self.covered.remove(sl.site);
            self.covered_changes += 1;
            self.fifo.push_back(slot);
        }
    }
}

/// The fleet's first detection over `runs` independent fleets (seeds `seed`, `seed + 1`, ...):
/// sorted times, `None` for fleets that found nothing within the horizon (sorted last).
pub fn fleet_firsts(sc: &Scenario, runs: u64, threads: usize) -> Vec<Option<f64>> {
    let mut out: Vec<Option<f64>> = (0..runs)
        .map(|k| {
            // Iterative deepening: the fleet up to 60 s, then twice as long until a machine
            // finds the bug (a machine's draws do not depend on where it stops, so each pass
            // replays the same fleet). Without it the first machine would run alone to its own
            // detection, as long as the fleet's times its size.
            let mut cap = sc.horizon_s.min(60.0);
            loop {
                let one = Scenario {
                    seed: sc.seed.wrapping_add(k),
                    fleet_first_only: true,
                    checkpoints: Vec::new(),
                    horizon_s: cap,
                    ..sc.clone()
                };
                let first = run(&one, threads).fleet_first_s;
                if first.is_some() || cap >= sc.horizon_s {
                    break first;
                }
                cap = (cap * 2.0).min(sc.horizon_s);
            }
        })
        .collect();
    out.sort_by(|a, b| match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    out
}

/// The `q` quantile of sorted times where `None` means "beyond the horizon".
pub fn quantile(sorted: &[Option<f64>], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(
        machines: u64,
        rate: f64,
        interval_ms: u64,
        bug_per_s: f64,
        horizon: f64,
    ) -> Scenario {
        Scenario {
            machines,
            workload: Workload {
                rate,
                long_lived: 0.0,
                lifetime_s: 0.001,
                long_lived_sites: 4,
            },
            settings: Settings {
                sample_interval_ms: interval_ms,
                ..Settings::DEFAULT
            },
            bug: Bug {
                rate: bug_per_s,
                kind: Kind::UseAfterFree { delay_s: 0.0 },
                size: 64,
                align: 16,
            },
            horizon_s: horizon,
            seed: 7,
            checkpoints: vec![10.0, 100.0],
            fleet_first_only: false,
            exact: false,
        }
    }

    #[test]
    fn same_seed_same_result_whatever_the_threads() {
        let sc = scenario(50, 100.0, 100, 0.05, 1000.0);
        let a = run(&sc, 1);
        let b = run(&sc, 2);
        assert_eq!(a, b);
        assert!(a.samples > 0 && !a.detections.is_empty());
        let c = run(&Scenario { seed: 8, ..sc }, 2);
        assert_ne!(a, c);
    }

    #[test]
    fn sample_rate_matches_the_interval() {
        // 99 allocations a second, 1 s interval: a sample every 1 + 1/99 s, so 0.99 a second.
        let sc = scenario(50, 99.0, 1000, 0.0, 2000.0);
        let o = run(&sc, 2);
        let per_s = o.samples as f64 / 50.0 / 2000.0;
        assert!((per_s - 0.99).abs() < 0.01, "{per_s}");
    }

    #[test]
    fn count_based_gaps_are_geometric() {
        // sample_rate=100 at 1000 allocations a second: 10 samples a second.
        let mut sc = scenario(20, 1000.0, 0, 0.0, 500.0);
        sc.settings.sample_interval_ms = 0;
        sc.settings.sample_rate = 100;
        let o = run(&sc, 2);
        let per_s = o.samples as f64 / 20.0 / 500.0;
        assert!((per_s - 10.0).abs() < 0.2, "{per_s}");
        let mut rng = Rng::new(3);
        let n = 200_000;
        let mean = (0..n).map(|_| rng.gamma(50, 2.0)).sum::<f64>() / n as f64;
        assert!((mean - 100.0).abs() < 0.5, "{mean}");
    }

    #[test]
    fn detection_time_matches_the_closed_form() {
        // p = 1/100, 0.01 executions of the bug path a second: 1e-4 per second per machine,
        // a median of ln 2 / 1e-4 = 6931 s for each machine.
        let mut sc = scenario(2000, 99.0, 1000, 0.01, 7000.0);
        sc.checkpoints.clear();
        let o = run(&sc, 2);
        // Per-machine first detections: the share found by 6931 s is one half.
        let found = o.detections.iter().filter(|&&d| d <= 6931.0).count() as f64 / 2000.0;
        assert!((found - 0.5).abs() < 0.04, "{found}");
    }

    #[test]
    fn long_lived_objects_fill_the_pool_and_covered_sites_hold_it() {
        let mut sc = scenario(20, 9.0, 1000, 0.0, 2000.0);
        sc.workload.lifetime_s = 100.0;
        sc.workload.long_lived = 0.5;
        sc.workload.long_lived_sites = 1000;
        sc.settings.skip_covered_thresh = 100;
        sc.checkpoints = vec![283.0, 1500.0];
        let o = run(&sc, 2);
        // 0.45 long-lived objects a second: half the pool at 283 s, plus 0.45/s short-lived
        // ones living 100 s (45 by Little's law); full by 1500 s.
        assert!((o.occupancy[0] - 172.5).abs() < 8.0, "{:?}", o.occupancy);
        assert!(o.occupancy[1] >= 254.0, "{:?}", o.occupancy);
        // With short-lived objects still in the pools, samples were refused while it was full.
        assert!(o.refused_full > 0);
        // Four long-lived sites and covered skipping at 75 %: held near 75 %.
        sc.workload.long_lived_sites = 4;
        sc.workload.lifetime_s = 0.001;
        sc.settings.skip_covered_thresh = 75;
        let o = run(&sc, 2);
        assert!((o.occupancy[1] - 192.0).abs() < 3.0, "{:?}", o.occupancy);
        assert!(o.refused_covered > 0 && o.refused_full == 0);
    }

    #[test]
    fn fleet_first_stops_early_and_agrees() {
        // Checkpoints cut the fast path's runs (different draws): compare without them.
        for exact in [false, true] {
            let mut sc = scenario(5, 100.0, 100, 0.01, 5000.0);
            sc.exact = exact;
            sc.checkpoints.clear();
            sc.seed = 3;
            let full = run(&sc, 2);
            let first = run(
                &Scenario {
                    fleet_first_only: true,
                    ..sc.clone()
                },
                2,
            );
            assert!(full.fleet_first_s.is_some_and(|t| t > 60.0), "{full:?}");
            assert_eq!(full.fleet_first_s, first.fleet_first_s);
            assert!(first.samples < full.samples, "{first:?} {full:?}");
            // Iterative deepening (from 60 s) replays the same fleet: the same first detection.
            assert_eq!(fleet_firsts(&sc, 1, 2), vec![full.fleet_first_s]);
        }
    }
}
