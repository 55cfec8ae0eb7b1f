//! The simulator's fast path (jumping over runs of quiet samples) against the step-by-step
//! reference (`exact`): the same law on scenarios that exercise every part of it (short-lived
//! objects outliving the interval, long-lived ones filling the pool, covered-site skipping,
//! the adaptive interval, a pending use-after-free, a pool full while frees are pending).
//!
//! Each simulator runs `GROUPS` fleets (different seeds); every statistic's mean over the
//! groups must agree within 4.5 standard errors of the difference.

use ufence_fleet::plan::{Bug, Kind, Settings, Workload};
use ufence_fleet::simulate::{run, Outcome, Scenario};

const GROUPS: u64 = 16;
const MACHINES: u64 = 100;

/// Per-machine statistics of one fleet, by name.
fn stats(o: &Outcome, sc: &Scenario) -> Vec<(String, f64)> {
    let m = sc.machines as f64;
    let mut v = vec![
        ("samples".to_string(), o.samples as f64 / m),
        ("refused (full)".into(), o.refused_full as f64 / m),
        ("refused (covered)".into(), o.refused_covered as f64 / m),
        ("bug samples".into(), o.bug_samples as f64 / m),
        ("found".into(), o.detections.len() as f64 / m),
        (
            "time to detection, capped at the horizon".into(),
            (o.detections.iter().sum::<f64>() + (m - o.detections.len() as f64) * sc.horizon_s) / m,
        ),
    ];
    for (t, occ) in sc.checkpoints.iter().zip(&o.occupancy) {
        v.push((format!("occupancy at {t} s"), *occ));
    }
    v
}

/// Means and standard errors of each statistic over the groups; and the jumped share.
fn groups(sc: &Scenario, exact: bool) -> (Vec<(String, f64, f64)>, f64) {
    let mut all: Vec<Vec<(String, f64)>> = Vec::new();
    let (mut jumped, mut samples) = (0u64, 0u64);
    for g in 0..GROUPS {
        let one = Scenario {
            seed: sc.seed + 1000 * g,
            exact,
            ..sc.clone()
        };
        let o = run(&one, 2);
        jumped += o.jumped;
        samples += o.samples + o.refused_full + o.refused_covered;
        all.push(stats(&o, &one));
    }
    let k = GROUPS as f64;
    let out = (0..all[0].len())
        .map(|i| {
            let xs: Vec<f64> = all.iter().map(|s| s[i].1).collect();
            let mean = xs.iter().sum::<f64>() / k;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0);
            (all[0][i].0.clone(), mean, (var / k).sqrt())
        })
        .collect();
    (out, jumped as f64 / samples.max(1) as f64)
}

fn agree(name: &str, sc: &Scenario, min_jumped: f64) {
    let (fast, jumped) = groups(sc, false);
    let (exact, exact_jumped) = groups(sc, true);
    assert_eq!(exact_jumped, 0.0, "{name}: the reference jumped");
    assert!(
        jumped >= min_jumped,
        "{name}: the fast path jumped over only {:.1} % of the samples (want {:.0} %)",
        jumped * 100.0,
        min_jumped * 100.0
    );
    for ((stat, a, sa), (_, b, sb)) in fast.iter().zip(&exact) {
        let se = (sa * sa + sb * sb).sqrt();
        // A statistic the same in every group (0 refusals, a full pool) must be equal.
        let z = if se > 0.0 {
            (a - b).abs() / se
        } else if a == b {
            0.0
        } else {
            f64::INFINITY
        };
        assert!(
            z <= 4.5,
            "{name}: {stat}: fast {a:.4} ± {sa:.4}, exact {b:.4} ± {sb:.4} (z = {z:.1})"
        );
    }
}

fn scenario(w: Workload, s: Settings, kind: Kind, bug_per_h: f64, horizon_s: f64) -> Scenario {
    Scenario {
        machines: MACHINES,
        workload: w,
        settings: s,
        bug: Bug {
            rate: bug_per_h / 3600.0,
            kind,
            size: 64,
            align: 16,
        },
        horizon_s,
        seed: 11,
        checkpoints: vec![30.0, 120.0, horizon_s],
        fleet_first_only: false,
        exact: false,
    }
}

#[test]
fn short_lived_objects_that_outlive_the_interval_and_a_pending_use_after_free() {
    // Lifetimes of 40 ms at 100 ms: 8 % of the short-lived samples outlive the interval;
    // 16 slots, 2 % long-lived from 6 sites, so covered-site skipping holds the pool at 75 %;
    // the use-after-free is read 0.5 s after the free (5 samples may reuse its slot).
    let sc = scenario(
        Workload {
            rate: 200.0,
            long_lived: 0.02,
            lifetime_s: 0.04,
            long_lived_sites: 6,
        },
        Settings {
            num_objects: 16,
            ..Settings::DEFAULT
        },
        Kind::UseAfterFree { delay_s: 0.5 },
        40.0,
        600.0,
    );
    agree("uaf", &sc, 0.6);
}

#[test]
fn the_adaptive_interval_as_long_lived_objects_fill_the_pool() {
    // 3 % long-lived from 400 sites fill 32 slots in about 2 minutes at 100 ms; the adaptive
    // interval stretches from half full, and shortens again when short-lived objects
    // (lifetime 50 ms, 14 % of them outliving the 100 ms interval) are freed.
    let sc = scenario(
        Workload {
            rate: 50.0,
            long_lived: 0.03,
            lifetime_s: 0.05,
            long_lived_sites: 400,
        },
        Settings {
            num_objects: 32,
            adaptive: true,
            adaptive_max_ms: 2000,
            ..Settings::DEFAULT
        },
        Kind::Overflow {
            bytes: 1,
            write: false,
        },
        60.0,
        600.0,
    );
    agree("adaptive", &sc, 0.4);
}

#[test]
fn a_full_pool_with_frees_pending() {
    // 8 slots: 2 % long-lived from 4 sites hold 6 or 7 of them (covered-site skipping at 75 %),
    // and the short-lived objects that outlive the interval (lifetime 40 ms: 8 %) take the
    // rest, so the pool is often full while frees are pending and samples are refused.
    let sc = scenario(
        Workload {
            rate: 1000.0,
            long_lived: 0.02,
            lifetime_s: 0.04,
            long_lived_sites: 4,
        },
        Settings {
            num_objects: 8,
            ..Settings::DEFAULT
        },
        Kind::DoubleFree { delay_s: 0.0 },
        30.0,
        300.0,
    );
    agree("full", &sc, 0.6);
}

#[test]
fn long_quiet_runs_taken_in_parts_before_near_stops() {
    // Lifetimes of 20 ms at 100 ms, nothing long-lived: about one sample in 150 is special, so
    // runs are long and mostly cut (by the checkpoints and the horizon) or taken in parts, and
    // the object of the last quiet sample is often still alive at a checkpoint.
    let mut sc = scenario(
        Workload {
            rate: 20.0,
            long_lived: 0.0,
            lifetime_s: 0.02,
            long_lived_sites: 4,
        },
        Settings {
            num_objects: 4,
            ..Settings::DEFAULT
        },
        Kind::UseAfterFree { delay_s: 0.0 },
        20.0,
        400.0,
    );
    sc.checkpoints = vec![10.0, 10.03, 10.06, 10.09, 30.0, 30.05, 400.0];
    agree("parts", &sc, 0.9);
}
