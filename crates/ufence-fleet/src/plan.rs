//! The fleet planner's model: how sampling, pool occupancy, object placement and the chance of
//! a fault combine into a time to first detection across N machines (`docs/fleet-model.md`
//! explains every formula for an operator; the tests below check them by hand).
//!
//! Everything is a rate per second of one machine, then multiplied by the fleet. The pieces:
//!
//! - [`sample_probability`]: the chance that one given allocation is sampled, from the knobs and
//!   the allocation rate (KFENCE's interval samples the first allocation after each deadline;
//!   GWP-ASan's rate samples each with probability 1/N).
//! - [`catch_probability`]: the chance that a sampled execution of the bug path faults or is
//!   caught at free, from the object's placement (left or right at random) and its slack.
//! - [`predict`]: pool occupancy over time (long-lived objects accumulate, short-lived ones
//!   occupy by Little's law), the share of samples the pool can still accept, and from the
//!   fleet's hazard rate the median, 90th percentile and mean time to the first detection.
//! - [`recommend`]: settings that meet a target within a CPU and memory budget.

use std::fmt::Write;

/// Page size the model assumes (x86-64).
pub const PAGE: u64 = 4096;
/// A sampled allocation plus its free, in seconds of CPU: two `mprotect`s and two stack walks.
/// Measured 3.3 µs for 16-frame stacks (BENCHMARKS.md, "What one sample costs"); deeper stacks
/// and objects over a page cost more, hence 5. `--sample-cost-us` overrides it.
pub const SAMPLE_COST_S: f64 = 5e-6;
/// The most slots ufence allows with the default `vm.max_map_count` (65530): an eighth of it,
/// two mappings per live object.
pub const MAX_SLOTS: u64 = 4095;

/// The runtime knobs that decide sampling, as `ufence set` names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub sample_interval_ms: u64,
    pub sample_rate: u64,
    pub num_objects: u64,
    pub burst: u64,
    pub adaptive: bool,
    pub adaptive_max_ms: u64,
    pub skip_covered_thresh: u64,
}

impl Settings {
    /// ufence's defaults (the option table's).
    pub const DEFAULT: Settings = Settings {
        sample_interval_ms: 100,
        sample_rate: 0,
        num_objects: 255,
        burst: 0,
        adaptive: false,
        adaptive_max_ms: 10_000,
        skip_covered_thresh: 75,
    };
}

/// What one process does, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// Allocations per second (Poisson arrivals).
    pub rate: f64,
    /// Fraction of allocations that are never freed (caches): sampled alike, they stay.
    pub long_lived: f64,
    /// Mean lifetime of the other objects, seconds (exponential).
    pub lifetime_s: f64,
    /// Distinct allocation sites of the long-lived objects (what covered-site skipping sees).
    pub long_lived_sites: u64,
}

/// The kind of bug, and what decides whether a sampled execution of it is caught.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// The object is accessed `delay_s` after its free.
    UseAfterFree { delay_s: f64 },
    /// `bytes` bytes past the end are touched (1 = the byte just past it).
    Overflow { bytes: u64, write: bool },
    /// `bytes` bytes before the start are touched.
    Underflow { bytes: u64, write: bool },
    /// The object is freed twice, `delay_s` apart.
    DoubleFree { delay_s: f64 },
}

/// The bug to find.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bug {
    /// Executions of the bug path per second on one machine.
    pub rate: f64,
    pub kind: Kind,
    /// The object's size and alignment (malloc: 16).
    pub size: u64,
    pub align: u64,
}

/// Probability that one allocation is sampled while the pool has room, with the interval `t_s`
/// seconds in force: `(1 + burst) / (rate * t + 1)` for the interval (a deadline every `t`,
/// then the next allocation and `burst` more: `rate * t + 1` allocations per cycle), `1/N` for
/// `sample_rate=N`, and either when both are set.
pub fn sample_probability(rate: f64, t_s: f64, sample_rate: u64, burst: u64) -> f64 {
    let interval = if t_s > 0.0 && rate > 0.0 {
        ((1 + burst) as f64 / (rate * t_s + 1.0)).min(1.0)
    } else {
        0.0
    };
    let counted = if sample_rate > 0 {
        1.0 / sample_rate as f64
    } else {
        0.0
    };
    // 1 - (1 - a)(1 - b), written so that either alone is exact.
    interval + counted - interval * counted
}

/// The interval in force at `occupancy` (0..=1): with `adaptive`, `base` up to half full, then
/// geometric to `max` when full (as `ufence::sampler::Knobs::effective_interval`).
pub fn effective_interval_s(s: &Settings, occupancy: f64) -> f64 {
    let base = s.sample_interval_ms as f64 / 1e3;
    let max = s.adaptive_max_ms as f64 / 1e3;
    if !s.adaptive || occupancy <= 0.5 || max <= base {
        return base;
    }
    let x = (occupancy.min(1.0) - 0.5) / 0.5;
    base * (max / base.max(1e-3)).powf(x)
}

/// Where a sampled object starts on its page: page start when left-placed; when right-placed,
/// its end at the page's end, rounded down to its alignment (`ufence::decisions::object_offset`).
pub fn offset(size: u64, align: u64, right: bool) -> u64 {
    ufence_core::decisions::object_offset(PAGE as usize, size as usize, align as usize, right)
        as u64
}

/// Probability that a sampled execution of the bug is caught, with `free_slots` slots ahead of
/// the freed one and `accept_rate` samples taken per second (for the reuse of a freed slot).
pub fn catch_probability(bug: &Bug, free_slots: f64, accept_rate: f64) -> f64 {
    let size = bug.size.clamp(1, PAGE);
    let align = bug.align.clamp(1, PAGE);
    // Per side: 1 if it faults, 1 for a write inside the slack (the canary, at free), else 0.
    let side = |faults: bool, write: bool| if faults || write { 1.0 } else { 0.0 };
    match bug.kind {
        Kind::Overflow { bytes, write } => {
            let right_gap = PAGE - offset(size, align, true) - size;
            let left_gap = PAGE - size;
            0.5 * side(bytes > right_gap, write) + 0.5 * side(bytes > left_gap, write)
        }
        Kind::Underflow { bytes, write } => {
            let right_before = offset(size, align, true);
            0.5 * side(bytes > right_before, write) + 0.5 * side(bytes > 0, write)
        }
        Kind::UseAfterFree { delay_s } | Kind::DoubleFree { delay_s } => {
            not_reused(free_slots, accept_rate, delay_s)
        }
    }
}

/// Probability that a freed slot is still not reused `delay_s` later: slots are reused least
/// recently freed first, so the `free` slots ahead of it go first; samples arrive as a Poisson
/// process of rate `accept`: P(Poisson(accept * delay) <= free).
pub fn not_reused(free: f64, accept: f64, delay_s: f64) -> f64 {
    let mu = accept * delay_s;
    if mu <= 0.0 {
        return 1.0;
    }
    let n = free.max(0.0).floor() as u64;
    // Sum in logs, term by term, until the terms stop mattering.
    let mut term = (-mu).exp();
    let mut sum = term;
    if term == 0.0 {
        // Underflow: a normal approximation of the Poisson.
        let z = (n as f64 + 0.5 - mu) / mu.sqrt();
        return 0.5 * erfc(-z / std::f64::consts::SQRT_2);
    }
    for j in 1..=n {
        term *= mu / j as f64;
        sum += term;
        if term < 1e-17 * sum && j as f64 > mu {
            break;
        }
    }
    sum.min(1.0)
}

/// As [`not_reused`], when samples come from the interval `interval_s` alone: the `free`
/// slots ahead and then the freed one are taken by the next `free + 1` samples, each an
/// interval plus an exponential wait (mean `1/rate`) for the next allocation, so the slot is
/// still not reused after `delay_s` if `(free + 1) * interval + Gamma(free + 1, 1/rate) >
/// delay_s`: certain within `(free + 1)` intervals, then P(Poisson(rate * slack) <= free).
pub fn not_reused_periodic(free: f64, interval_s: f64, rate: f64, delay_s: f64) -> f64 {
    let m = free.max(0.0).floor() + 1.0;
    let slack = delay_s - m * interval_s;
    if slack <= 0.0 {
        return 1.0;
    }
    not_reused(m - 1.0, rate, slack)
}

fn erfc(x: f64) -> f64 {
    // Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7).
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let e = y * (-x * x).exp();
    if x >= 0.0 {
        e
    } else {
        2.0 - e
    }
}

/// One point of the predicted pool occupancy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub t_s: f64,
    /// Objects in the pool (expected).
    pub occupied: f64,
    /// Share of samples the pool accepts (1 until it fills).
    pub accepted: f64,
}

/// What the model predicts for one set of settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Probability that one execution of the bug path is sampled, pool permitting (at start).
    pub p_sample: f64,
    /// Probability that a sampled execution is caught (at start).
    pub p_catch: f64,
    /// Samples per second per process at start.
    pub samples_per_s: f64,
    /// When the pool first refuses samples for capacity, if within the horizon.
    pub fill_s: Option<f64>,
    /// Share of samples still accepted at the horizon (0: starved).
    pub accepted_at_end: f64,
    /// Time to the first detection across the fleet; None beyond the horizon.
    pub median_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub mean_s: Option<f64>,
    /// Probability that the fleet has found the bug by the horizon.
    pub found_by_horizon: f64,
    /// The fleet's expected detections by the horizon (the integral of its hazard): one
    /// machine's share of the fleet's chance is `1 - exp(-this / machines)`.
    pub cumulative_hazard: f64,
    pub horizon_s: f64,
    /// CPU share of one process spent on samples, percent (at start).
    pub cpu_percent: f64,
    /// Memory of one process's pool when full, MiB (object pages and published slots).
    pub mib: f64,
    pub occupancy: Vec<Point>,
}

/// Bytes of memory one occupied slot costs: its object page and its published slot record.
pub fn slot_bytes() -> f64 {
    (PAGE as usize + std::mem::size_of::<ufence_core::control::Slot>()) as f64
}

/// Validates a model input; a one-line error names the first bad value.
pub fn check(machines: f64, w: &Workload, s: &Settings, bug: &Bug) -> Result<(), String> {
    let finite = |name: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(format!("{name} must be a number >= 0 (got {v})"))
        }
    };
    if !(machines.is_finite() && machines >= 1.0) {
        return Err(format!(
            "the fleet must have at least 1 machine (got {machines})"
        ));
    }
    finite("allocation rate", w.rate)?;
    finite("lifetime", w.lifetime_s)?;
    finite("bug path rate", bug.rate)?;
    if !(0.0..=1.0).contains(&w.long_lived) {
        return Err(format!(
            "the long-lived fraction must be within 0..1 (got {})",
            w.long_lived
        ));
    }
    if s.num_objects == 0 {
        return Err("num_objects must be at least 1".into());
    }
    if bug.size == 0 || bug.size > PAGE || !bug.align.is_power_of_two() || bug.align > PAGE {
        return Err(format!(
            "the object must be 1..={PAGE} bytes with a power-of-two alignment up to {PAGE} (got size {}, align {}): larger objects are never sampled",
            bug.size, bug.align
        ));
    }
    match bug.kind {
        Kind::UseAfterFree { delay_s } | Kind::DoubleFree { delay_s } => finite("delay", delay_s)?,
        Kind::Overflow { bytes, .. } | Kind::Underflow { bytes, .. } if bytes == 0 => {
            return Err("an overflow touches at least 1 byte".into())
        }
        _ => {}
    }
    if w.rate > 0.0 && bug.rate > w.rate {
        return Err(format!(
            "the bug path ({:.3} /s) cannot allocate more often than the process does ({:.3} /s)",
            bug.rate, w.rate
        ));
    }
    Ok(())
}

/// The model, integrated over `[0, horizon_s]` on a geometric time grid (1e-3 s to the horizon,
/// 400 steps a decade). `machines` processes start together; `cost_s` is the CPU cost of a
/// sample.
pub fn predict(
    machines: f64,
    w: &Workload,
    s: &Settings,
    bug: &Bug,
    horizon_s: f64,
    cost_s: f64,
) -> Prediction {
    let n = s.num_objects as f64;
    let f = w.long_lived;
    let life = w.lifetime_s;
    let sample_rate_at = |occ: f64| {
        let t = effective_interval_s(s, occ);
        w.rate * sample_probability(w.rate, t, s.sample_rate, s.burst)
    };
    // Past the threshold, a long-lived sample from a site already in the pool is given up
    // (the bug's own site is never covered: its objects are freed).
    let covering = s.skip_covered_thresh < 100;
    let thresh = s.skip_covered_thresh as f64 / 100.0;
    let sites = (w.long_lived_sites as f64).max(1.0);
    // Accepted samples per second with `k` long-lived objects in the pool: all of them until
    // the short-lived ones (Little: accepted * (1 - f) * life) fill what is left; then only as
    // many as short-lived ones leave.
    let state = |k: f64| {
        let free_for_short = (n - k).max(0.0);
        let guess = sample_rate_at((k + sample_rate_at(k / n) * (1.0 - f) * life) / n);
        let limit = if (1.0 - f) * life > 0.0 {
            free_for_short / ((1.0 - f) * life)
        } else if free_for_short >= 1.0 {
            f64::INFINITY
        } else {
            0.0
        };
        let a = guess.min(limit);
        let occ = (k + a * (1.0 - f) * life).min(n);
        (a, guess, occ)
    };
    // Past the threshold, a long-lived sample is kept only if its site has no object in the
    // pool: a share u/K of them, with u of the K sites uncovered. Below it every one is kept
    // and covers an uncovered site with probability u/K, so u = K exp(-k/K); above it each one
    // kept covers a site, so k + u stays constant: the long-lived objects stop at the
    // threshold's count plus the sites still uncovered then.
    let above = |occ: f64| covering && occ / n > thresh;
    let long_growth = |_k: f64, a: f64, occ: f64, u: f64| {
        if above(occ) {
            f * a * (u / sites).min(1.0)
        } else {
            f * a
        }
    };
    let mut uncovered = sites;
    // The chance a sampled execution is caught. A use-after-free's slot is reused after the
    // free slots ahead of it: under the interval alone (pool not full) samples come every
    // interval plus the wait for the next allocation, nearly periodic, not Poisson.
    let periodic = s.sample_interval_ms > 0 && s.sample_rate == 0 && s.burst == 0;
    let q_at = |a: f64, occ: f64| {
        let free_ahead = (n - occ).max(0.0);
        match bug.kind {
            Kind::UseAfterFree { delay_s } | Kind::DoubleFree { delay_s }
                if periodic && a >= sample_rate_at(occ / n) * (1.0 - 1e-9) =>
            {
                not_reused_periodic(
                    free_ahead,
                    effective_interval_s(s, occ / n),
                    w.rate,
                    delay_s,
                )
            }
            _ => catch_probability(bug, free_ahead, a),
        }
    };
    let hazard =
        |a: f64, occ: f64| machines * bug.rate * (a / w.rate.max(f64::MIN_POSITIVE)) * q_at(a, occ);

    let (a0, s0, occ0) = state(0.0);
    let mut k = 0.0f64;
    let mut t = 0.0f64;
    let mut lambda = 0.0f64; // cumulative hazard
    let mut mean = 0.0f64;
    let (mut median, mut p90) = (None, None);
    let mut fill = None;
    let mut occupancy = vec![Point {
        t_s: 0.0,
        occupied: occ0,
        accepted: if s0 > 0.0 { a0 / s0 } else { 1.0 },
    }];
    let mut h_prev = hazard(a0, occ0);
    let steps_per_decade = 400.0;
    let ratio = 10f64.powf(1.0 / steps_per_decade);
    let mut next_t = 1e-3f64.min(horizon_s);
    let mut last_record = 0.0;
    let mut last_accept = if s0 > 0.0 { a0 / s0 } else { 1.0 };
    while t < horizon_s {
        let dt = next_t - t;
        // The long-lived count. While the pool has room: a midpoint step, stopped at the
        // boundary where the short-lived ones fill the rest (k = N - s (1 - f) life). Once
        // full, only departures make room: N - k decays as exp(-f t / ((1 - f) life)).
        let (a1, g1, occ1) = state(k);
        let short_hold = (1.0 - f) * life;
        let full = short_hold > 0.0 && k >= n - g1 * short_hold - 1e-9;
        let k_new = if full {
            if long_growth(k, a1, occ1, uncovered) == 0.0 {
                k
            } else {
                let cap = if above(occ1) { k + uncovered } else { n };
                (n - (n - k) * (-f * dt / short_hold).exp()).min(cap)
            }
        } else {
            let boundary = (n - g1 * short_hold).max(k);
            let mid = (k + 0.5 * dt * long_growth(k, a1, occ1, uncovered)).min(boundary);
            let (am, _, occm) = state(mid);
            (k + dt * long_growth(mid, am, occm, uncovered)).min(boundary)
        }
        .min(n);
        let (a2, s2, occ2) = state(k_new);
        let h_new = hazard(a2, occ2);
        let before = lambda;
        lambda += 0.5 * (h_prev + h_new) * dt;
        // Survival exp(-lambda) integrated for the mean (trapezoid).
        mean += 0.5 * ((-before).exp() + (-lambda).exp()) * dt;
        let cross = |target: f64| {
            if lambda > before {
                t + dt * (target - before) / (lambda - before)
            } else {
                next_t
            }
        };
        if median.is_none() && lambda >= std::f64::consts::LN_2 {
            median = Some(cross(std::f64::consts::LN_2));
        }
        if p90.is_none() && lambda >= std::f64::consts::LN_10 {
            p90 = Some(cross(std::f64::consts::LN_10));
        }
        let accepted = if s2 > 0.0 { a2 / s2 } else { 1.0 };
        if fill.is_none() && accepted < 0.999 && s2 > 0.0 {
            fill = Some(next_t);
        }
        if next_t >= last_record * 1.25 || next_t >= horizon_s {
            occupancy.push(Point {
                t_s: next_t,
                occupied: occ2,
                accepted,
            });
            last_record = next_t;
        }
        last_accept = accepted;
        let dk = (k_new - k).max(0.0);
        if above(occ1) {
            uncovered = (uncovered - dk).max(0.0);
        } else {
            uncovered *= (-dk / sites).exp();
        }
        k = k_new;
        h_prev = h_new;
        t = next_t;
        next_t = (next_t * ratio).min(horizon_s);
    }
    let survive = (-lambda).exp();
    let mean = if survive < 1e-9 {
        Some(mean)
    } else if h_prev > 0.0 {
        // Beyond the horizon the hazard stays as it ended.
        Some(mean + survive / h_prev)
    } else {
        None
    };
    let cpu = s0 * cost_s * 100.0;
    Prediction {
        p_sample: if w.rate > 0.0 { s0 / w.rate } else { 0.0 },
        p_catch: q_at(a0, occ0),
        samples_per_s: s0,
        fill_s: fill,
        accepted_at_end: last_accept,
        median_s: median,
        p90_s: p90,
        mean_s: mean,
        found_by_horizon: 1.0 - survive,
        cumulative_hazard: lambda,
        horizon_s,
        cpu_percent: cpu,
        mib: n * slot_bytes() / (1 << 20) as f64,
        occupancy,
    }
}

/// The budget a recommendation must keep to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub cpu_percent: f64,
    pub mib: f64,
}

/// Settings that meet the target, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub settings: Settings,
    pub prediction: Prediction,
    /// Plain sentences: a binding constraint, an assumption, a target that cannot be met.
    pub notes: Vec<String>,
}

/// Chooses the longest interval (the least overhead) whose 90th-percentile time to the first
/// detection is within `within_s`, then a pool that does not fill within that time; caps both
/// by the budget and says which constraint binds.
pub fn recommend(
    machines: f64,
    w: &Workload,
    bug: &Bug,
    within_s: f64,
    budget: &Budget,
    cost_s: f64,
) -> Result<Recommendation, String> {
    check(machines, w, &Settings::DEFAULT, bug)?;
    if !(within_s.is_finite() && within_s > 0.0) {
        return Err(format!("the target time must be > 0 (got {within_s})"));
    }
    if !(budget.cpu_percent > 0.0 && budget.mib > 0.0) {
        return Err("the CPU and memory budgets must be > 0".into());
    }
    if w.rate <= 0.0 || bug.rate <= 0.0 {
        return Err(
            "nothing to plan: the allocation rate and the bug path rate must be > 0".into(),
        );
    }
    let mut notes = Vec::new();
    let q = catch_probability(bug, 1e9, 0.0);
    if q <= 0.0 {
        return Err(format!(
            "this bug is never caught by ufence: an access inside the object's slack that only reads (see docs/fleet-model.md){}",
            ""
        ));
    }
    // Sampling probability needed for a p90 within the target: M r p q within = ln 10.
    let p_need = std::f64::consts::LN_10 / (within_s * machines * bug.rate * q);
    let mut p = p_need;
    if p_need > 1.0 {
        notes.push(format!(
            "the target cannot be met: even sampling every execution gives a 90th percentile of {} (binding: fleet size and bug rate)",
            human(std::f64::consts::LN_10 / (machines * bug.rate * q))
        ));
        p = 1.0;
    }
    let p_cpu = budget.cpu_percent / 100.0 / (cost_s * w.rate);
    if p > p_cpu {
        notes.push(format!(
            "the CPU budget binds: {}% allows {:.3} samples/s per process, fewer than the target needs",
            budget.cpu_percent,
            p_cpu * w.rate
        ));
        p = p_cpu;
    }
    // p = 1 / (rate t + 1) => t = (1/p - 1) / rate, in whole milliseconds, at least 1.
    let t_ms = (((1.0 / p - 1.0) / w.rate) * 1e3).floor().max(1.0);
    let interval_ms = t_ms.min(1e9) as u64;
    let mut settings = Settings {
        sample_interval_ms: interval_ms,
        ..Settings::DEFAULT
    };
    let s_rate = w.rate * sample_probability(w.rate, t_ms / 1e3, 0, 0);
    let n_mem = (budget.mib * (1 << 20) as f64 / slot_bytes())
        .floor()
        .min(MAX_SLOTS as f64);
    if n_mem < 1.0 {
        return Err(format!(
            "a memory budget of {} MiB holds no slot (one takes {:.1} KiB)",
            budget.mib,
            slot_bytes() / 1024.0
        ));
    }
    // Long-lived samples accumulate at s f per second; short-lived ones hold s (1 - f) life.
    let want = s_rate * w.long_lived * within_s + s_rate * (1.0 - w.long_lived) * w.lifetime_s;
    let want = (want * 1.25 + 8.0)
        .ceil()
        .max(Settings::DEFAULT.num_objects as f64);
    let default_n = (Settings::DEFAULT.num_objects as f64).min(n_mem);
    if w.long_lived > 0.0 && (w.long_lived_sites as f64) < 0.25 * default_n && want > default_n {
        // Covered-site skipping holds the long-lived objects at 75 % of the pool; the rest
        // keeps cycling, so the default pool does.
        settings.num_objects = default_n as u64;
        notes.push(format!(
            "long-lived objects would fill the pool; skip_covered_thresh=75 holds them at 75 % (assumes they come from {} sites, fewer than a quarter of the pool)",
            w.long_lived_sites
        ));
    } else if want <= n_mem {
        settings.num_objects = want as u64;
    } else {
        settings.num_objects = n_mem as u64;
        settings.adaptive = w.long_lived > 0.0;
        notes.push(format!(
            "the memory budget binds: {} MiB holds {} slots, {} wanted{}",
            budget.mib,
            n_mem,
            want,
            if settings.adaptive {
                "; adaptive=1 slows sampling as long-lived objects fill the pool rather than stop (the prediction includes the slowdown)"
            } else {
                ""
            }
        ));
    }
    let prediction = predict(
        machines,
        w,
        &settings,
        bug,
        (within_s * 10.0).max(86_400.0),
        cost_s,
    );
    if prediction.p90_s.is_none_or(|p| p > within_s * 1.05) && p_need <= 1.0 && p >= p_need {
        notes.push(format!(
            "with the pool's limits the 90th percentile is {} (target {})",
            prediction
                .p90_s
                .map_or("beyond the horizon".to_string(), human),
            human(within_s)
        ));
    }
    Ok(Recommendation {
        settings,
        prediction,
        notes,
    })
}

/// The bug kind in words: `use-after-free (accessed 0 s after the free)`, `overflow write by 1 B`.
pub fn describe(k: &Kind) -> String {
    match *k {
        Kind::UseAfterFree { delay_s } => {
            format!("use-after-free (accessed {delay_s} s after the free)")
        }
        Kind::DoubleFree { delay_s } => format!("double free ({delay_s} s apart)"),
        Kind::Overflow { bytes, write } => {
            format!(
                "overflow {} by {bytes} B",
                if write { "write" } else { "read" }
            )
        }
        Kind::Underflow { bytes, write } => {
            format!(
                "underflow {} by {bytes} B",
                if write { "write" } else { "read" }
            )
        }
    }
}

/// A duration for people: `45 s`, `12.5 min`, `3.2 h`, `4.1 days`, `2.3 years`.
pub fn human(s: f64) -> String {
    let mut out = String::new();
    let _ = if s < 120.0 {
        write!(out, "{s:.1} s")
    } else if s < 7_200.0 {
        write!(out, "{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        write!(out, "{:.1} h", s / 3_600.0)
    } else if s < 2.0 * 31_557_600.0 {
        write!(out, "{:.1} days", s / 86_400.0)
    } else {
        write!(out, "{:.1} years", s / 31_557_600.0)
    };
    out
}

/// A workload measured from live processes' control blocks: the mean allocation rate; the
/// long-lived fraction as the objects still allocated that are older than `max(10 s, 100 x the
/// 90th percentile of freed lifetimes)` over the samples taken; the mean freed lifetime; the
/// distinct sites of those old objects. Refuses processes that ran for less than 10 s or
/// sampled nothing (a stated error, not a guess).
pub fn measured(
    procs: &[(&crate::runtime::Snapshot, crate::runtime::Lifetimes)],
) -> Result<Workload, String> {
    if procs.is_empty() {
        return Err("no live process under ufence to measure".into());
    }
    let (mut rate, mut samples, mut long, mut freed_sum, mut freed_n) =
        (0.0, 0u64, 0u64, 0u128, 0u64);
    let mut sites = Vec::new();
    for (snap, l) in procs {
        let w = snap.workload();
        if w.uptime_s < 10.0 || w.allocations_seen == 0 {
            return Err(format!(
                "process {} has run {:.1} s and seen {} allocations: too little to measure; wait, or describe the workload with --rate",
                snap.pid(),
                w.uptime_s,
                w.allocations_seen
            ));
        }
        rate += w.rate_per_s;
        samples += snap.stats().total_allocations;
        let p90 = crate::runtime::Lifetimes::quantile(&l.freed_ns, 0.9).unwrap_or(0);
        let old = (100 * p90).max(10_000_000_000);
        long += l.alive_ns.iter().filter(|&&age| age >= old).count() as u64;
        sites.extend(l.alive_sites.iter().copied());
        freed_sum += l.freed_ns.iter().map(|&x| x as u128).sum::<u128>();
        freed_n += l.freed_ns.len() as u64;
    }
    sites.sort_unstable();
    sites.dedup();
    Ok(Workload {
        rate: rate / procs.len() as f64,
        long_lived: if samples > 0 {
            (long as f64 / samples as f64).min(1.0)
        } else {
            0.0
        },
        lifetime_s: if freed_n > 0 {
            freed_sum as f64 / freed_n as f64 / 1e9
        } else {
            0.0
        },
        long_lived_sites: sites.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-sample cost the hand-checked numbers below use (the default before issue 17).
    const COST: f64 = 30e-6;

    const NO_LONG: Workload = Workload {
        rate: 99.0,
        long_lived: 0.0,
        lifetime_s: 0.0,
        long_lived_sites: 0,
    };

    fn uaf(rate: f64) -> Bug {
        Bug {
            rate,
            kind: Kind::UseAfterFree { delay_s: 0.0 },
            size: 64,
            align: 16,
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn sampling_probability_by_hand() {
        // 99 allocations a second, a deadline every second: one sample per 100 allocations.
        assert_eq!(sample_probability(99.0, 1.0, 0, 0), 0.01);
        // burst=4: five per cycle.
        assert_eq!(sample_probability(99.0, 1.0, 0, 4), 0.05);
        // sample_rate=50 alone, and with the interval: 1 - 0.99 * 0.98.
        assert_eq!(sample_probability(99.0, 0.0, 50, 0), 0.02);
        assert!(close(
            sample_probability(99.0, 1.0, 50, 0),
            1.0 - 0.99 * 0.98,
            1e-12
        ));
        // An interval shorter than the gap between allocations samples every one.
        assert_eq!(sample_probability(1.0, 0.0001, 0, 0), 1.0 / 1.0001);
        assert_eq!(sample_probability(0.0, 1.0, 0, 0), 0.0);
    }

    #[test]
    fn one_machine_no_long_lived_closed_form() {
        // p = 1/100, bug path 36 times an hour (0.01/s): hazard 1e-4/s.
        let s = Settings {
            sample_interval_ms: 1000,
            ..Settings::DEFAULT
        };
        let p = predict(1.0, &NO_LONG, &s, &uaf(0.01), 1e7, COST);
        assert_eq!(p.p_sample, 0.01);
        assert_eq!(p.p_catch, 1.0);
        assert!(
            close(p.median_s.unwrap(), 6931.47, 1e-3),
            "{:?}",
            p.median_s
        );
        assert!(close(p.p90_s.unwrap(), 23025.85, 1e-3), "{:?}", p.p90_s);
        assert!(close(p.mean_s.unwrap(), 10_000.0, 1e-3), "{:?}", p.mean_s);
        assert_eq!(p.fill_s, None);
        // 0.99 samples a second at 30 µs each.
        assert!(close(p.cpu_percent, 0.99 * 30e-6 * 100.0, 1e-9));
        // A fleet of 1000 divides every time by 1000.
        let f = predict(1000.0, &NO_LONG, &s, &uaf(0.01), 1e7, COST);
        assert!(
            close(f.median_s.unwrap(), 6.93147, 1e-3),
            "{:?}",
            f.median_s
        );
    }

    #[test]
    fn pool_fills_at_n_over_s_f() {
        // 9 allocations a second, 1 s interval: 0.9 samples a second; half stay for ever,
        // the others are freed at once: 255 slots full after 255 / 0.45 = 566.7 s.
        let w = Workload {
            rate: 9.0,
            long_lived: 0.5,
            lifetime_s: 0.0,
            long_lived_sites: 1000,
        };
        let s = Settings {
            sample_interval_ms: 1000,
            skip_covered_thresh: 100,
            ..Settings::DEFAULT
        };
        let p = predict(1.0, &w, &s, &uaf(0.001), 1e5, COST);
        assert!(close(p.fill_s.unwrap(), 566.67, 0.01), "{:?}", p.fill_s);
        assert_eq!(p.accepted_at_end, 0.0);
        // After that nothing is caught: the fleet's chance stops growing. Up to the fill,
        // hazard 0.001 * 0.1 = 1e-4/s for 566.7 s.
        assert!(close(p.found_by_horizon, 1.0 - (-0.056_667f64).exp(), 0.01));
        assert_eq!(p.median_s, None);
        // Covered skipping with 4 long-lived sites: held at 75 %, never full.
        let c = Settings {
            skip_covered_thresh: 75,
            ..s
        };
        let w4 = Workload {
            long_lived_sites: 4,
            ..w
        };
        let p = predict(1.0, &w4, &c, &uaf(0.001), 1e5, COST);
        assert_eq!(p.fill_s, None);
        let last = p.occupancy.last().unwrap();
        assert!(close(last.occupied, 0.75 * 255.0, 0.02), "{last:?}");
        // 100 sites: past 75 % only the sites still uncovered add one each:
        // 191.25 + 100 exp(-1.9125) = 206.0.
        let w100 = Workload {
            long_lived_sites: 100,
            ..w
        };
        let p = predict(1.0, &w100, &c, &uaf(0.001), 1e5, COST);
        let last = p.occupancy.last().unwrap();
        assert!(close(last.occupied, 206.0, 0.01), "{last:?}");
        assert_eq!(p.fill_s, None);
    }

    #[test]
    fn placement_decides_overflows() {
        // 64 bytes, 16-aligned: right-placed objects end at the page's end, so 1 byte past
        // faults there; left-placed ones have 4032 bytes of slack.
        let b = |bytes, write| Bug {
            rate: 1.0,
            kind: Kind::Overflow { bytes, write },
            size: 64,
            align: 16,
        };
        assert_eq!(catch_probability(&b(1, false), 0.0, 0.0), 0.5);
        assert_eq!(catch_probability(&b(1, true), 0.0, 0.0), 1.0);
        assert_eq!(catch_probability(&b(4033, false), 0.0, 0.0), 1.0);
        // 73 bytes, 16-aligned: 7 bytes of gap after a right-placed object (KFENCE's
        // aligned case): a 1..7-byte read is missed on both sides, an 8-byte one faults right.
        let odd = |bytes, write| Bug {
            size: 73,
            ..b(bytes, write)
        };
        assert_eq!(offset(73, 16, true), 4096 - 80);
        assert_eq!(catch_probability(&odd(7, false), 0.0, 0.0), 0.0);
        assert_eq!(catch_probability(&odd(8, false), 0.0, 0.0), 0.5);
        assert_eq!(catch_probability(&odd(3, true), 0.0, 0.0), 1.0);
        // Underflow: left-placed objects fault at once; right-placed ones after their offset.
        let u = Bug {
            kind: Kind::Underflow {
                bytes: 1,
                write: false,
            },
            ..b(1, false)
        };
        assert_eq!(catch_probability(&u, 0.0, 0.0), 0.5);
    }

    #[test]
    fn use_after_free_until_the_slot_is_reused() {
        // No delay: always caught. 10 slots ahead, 1 sample a second, 10 s delay:
        // P(Poisson(10) <= 10) = 0.58304.
        assert_eq!(not_reused(10.0, 1.0, 0.0), 1.0);
        assert!(close(not_reused(10.0, 1.0, 10.0), 0.583_040, 1e-5));
        assert!(close(not_reused(0.0, 2.0, 1.0), (-2f64).exp(), 1e-12));
        // Far out: the normal tail, small.
        assert!(not_reused(100.0, 1.0, 2000.0) < 1e-6);
        // Under the interval, samples are nearly periodic: 7 slots ahead, 100 ms, 100
        // allocations/s: safe for 8 intervals (0.8 s); at 0.85 s, P(Poisson(5) <= 7) = 0.8666;
        // at 1 s, P(Poisson(20) <= 7) = 0.000779.
        assert_eq!(not_reused_periodic(7.0, 0.1, 100.0, 0.5), 1.0);
        assert!(close(
            not_reused_periodic(7.0, 0.1, 100.0, 0.85),
            0.866_628,
            1e-4
        ));
        assert!(close(
            not_reused_periodic(7.0, 0.1, 100.0, 1.0),
            0.000_779,
            1e-2
        ));
    }

    #[test]
    fn bad_input_is_refused_in_words() {
        let s = Settings::DEFAULT;
        let e = check(-5.0, &NO_LONG, &s, &uaf(1.0)).unwrap_err();
        assert!(e.contains("at least 1 machine"), "{e}");
        let e = check(
            1.0,
            &Workload {
                long_lived: 1.5,
                ..NO_LONG
            },
            &s,
            &uaf(1.0),
        )
        .unwrap_err();
        assert!(e.contains("long-lived fraction"), "{e}");
        let e = check(1.0, &NO_LONG, &s, &uaf(1000.0)).unwrap_err();
        assert!(e.contains("cannot allocate more often"), "{e}");
        let e = check(
            1.0,
            &NO_LONG,
            &s,
            &Bug {
                size: 8192,
                ..uaf(1.0)
            },
        )
        .unwrap_err();
        assert!(e.contains("never sampled"), "{e}");
        let e = check(
            1.0,
            &Workload {
                rate: f64::NAN,
                ..NO_LONG
            },
            &s,
            &uaf(1.0),
        )
        .unwrap_err();
        assert!(e.contains("allocation rate"), "{e}");
    }

    #[test]
    fn recommendation_meets_the_target_or_says_why() {
        // 1000 machines, 1000 allocations/s, a bug path once an hour, p90 within a day.
        let w = Workload {
            rate: 1000.0,
            ..NO_LONG
        };
        let budget = Budget {
            cpu_percent: 1.0,
            mib: 64.0,
        };
        let r = recommend(1000.0, &w, &uaf(1.0 / 3600.0), 86_400.0, &budget, COST).unwrap();
        // p = ln 10 / (86400 * 1000 / 3600) = 9.594e-5 => t = (1/p - 1) / 1000 = 10.42 s.
        assert_eq!(r.settings.sample_interval_ms, 10_422);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let p90 = r.prediction.p90_s.unwrap();
        assert!(p90 <= 86_400.0 && p90 > 86_000.0, "{p90}");
        // One machine cannot: the target is out of reach even sampling everything, and the
        // CPU budget binds first.
        let r = recommend(1.0, &w, &uaf(1.0 / 3600.0), 3600.0, &budget, COST).unwrap();
        assert!(
            r.notes.iter().any(|n| n.contains("cannot be met")),
            "{:?}",
            r.notes
        );
        assert!(
            r.notes.iter().any(|n| n.contains("CPU budget binds")),
            "{:?}",
            r.notes
        );
        // 1 % of CPU at 30 µs a sample: 333 samples/s of 1000 allocations => t = 2 ms.
        assert_eq!(r.settings.sample_interval_ms, 2);
        // A read inside the slack is never caught: an error, not a plan.
        let never = Bug {
            kind: Kind::Overflow {
                bytes: 3,
                write: false,
            },
            size: 73,
            ..uaf(1.0)
        };
        assert!(recommend(10.0, &w, &never, 86_400.0, &budget, COST).is_err());
    }
}
