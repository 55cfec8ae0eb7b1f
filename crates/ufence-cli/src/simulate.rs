//! `ufence simulate`: a fleet on a simulated clock, running ufence's own sampling decisions
//! (`ufence_fleet::simulate`), beside the model's prediction for the same scenario.

use crate::plan::{duration, kind, number};
use clap::ArgMatches;
use serde_json::json;
use std::fmt::Write;
use std::time::Instant;
use ufence_fleet::plan::{self, human, Bug, Settings, Workload};
use ufence_fleet::simulate::{self, Scenario};

fn whole(m: &ArgMatches, name: &str, default: u64) -> Result<u64, String> {
    match number(m, name)? {
        None => Ok(default),
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= 1e15 => Ok(x as u64),
        Some(x) => Err(format!("--{name}: {x} is not a whole number >= 0")),
    }
}

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let machines = number(m, "machines")?.ok_or("give the fleet's size: --machines N")?;
    if machines < 1.0 || machines.fract() != 0.0 || machines > 10_000_000.0 {
        return Err(format!(
            "the fleet must be a whole number of machines from 1 to 10,000,000 (got {machines})"
        ));
    }
    let workload = Workload {
        rate: number(m, "rate")?.ok_or("give the allocation rate: --rate ALLOCS_PER_S")?,
        long_lived: number(m, "long-lived")?.unwrap_or(0.0),
        lifetime_s: match m.get_one::<String>("lifetime") {
            Some(l) => duration(l)?,
            None => 0.01,
        },
        long_lived_sites: whole(m, "long-lived-sites", 4)?,
    };
    let per_hour = number(m, "bug-per-hour")?.unwrap_or(0.0);
    if per_hour < 0.0 {
        return Err(format!("--bug-per-hour must be >= 0 (got {per_hour})"));
    }
    let bug = Bug {
        rate: per_hour / 3600.0,
        kind: kind(m)?,
        size: whole(m, "object-size", 64)?,
        align: whole(m, "align", 16)?,
    };
    let d = Settings::DEFAULT;
    let settings = Settings {
        sample_interval_ms: whole(m, "sample-interval", d.sample_interval_ms)?,
        sample_rate: whole(m, "sample-rate", d.sample_rate)?,
        num_objects: whole(m, "num-objects", d.num_objects)?.min(plan::MAX_SLOTS),
        burst: whole(m, "burst", d.burst)?,
        adaptive: whole(m, "adaptive", 0)? != 0,
        adaptive_max_ms: whole(m, "adaptive-max", d.adaptive_max_ms)?,
        skip_covered_thresh: whole(m, "skip-covered-thresh", d.skip_covered_thresh)?.min(100),
    };
    plan::check(machines, &workload, &settings, &bug)?;
    let horizon = duration(m.get_one::<String>("horizon").map_or("1d", String::as_str))?;
    let seed = whole(m, "seed", 1)?;
    let runs = whole(m, "runs", 1)?.max(1);
    let threads = match whole(m, "threads", 0)? {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    };
    let checkpoints: Vec<f64> = [60.0, 600.0, 3600.0, 6.0 * 3600.0, 86_400.0, 7.0 * 86_400.0]
        .into_iter()
        .filter(|&t| t <= horizon)
        .collect();
    let sc = Scenario {
        machines: machines as u64,
        workload,
        settings,
        bug,
        horizon_s: horizon,
        seed,
        checkpoints: checkpoints.clone(),
        fleet_first_only: false,
        exact: m.get_flag("exact"),
    };
    let model = plan::predict(
        machines,
        &workload,
        &settings,
        &bug,
        horizon,
        plan::SAMPLE_COST_S,
    );
    let started = Instant::now();
    let json_out = m.get_one::<String>("format").map(String::as_str) == Some("json");
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} machines, {} allocations/s, {:.1} % long-lived ({} sites), bug path {per_hour}/h ({}); sample_interval={} sample_rate={} num_objects={} burst={} adaptive={} skip_covered_thresh={}; horizon {}, seed {seed}",
        sc.machines,
        workload.rate,
        workload.long_lived * 100.0,
        workload.long_lived_sites,
        plan::describe(&bug.kind),
        settings.sample_interval_ms,
        settings.sample_rate,
        settings.num_objects,
        settings.burst,
        u8::from(settings.adaptive),
        settings.skip_covered_thresh,
        human(horizon)
    );
    let opt = |v: Option<f64>| v.map_or("beyond horizon".to_string(), human);
    let value = if runs == 1 {
        let out = simulate::run(&sc, threads);
        let secs = started.elapsed().as_secs_f64();
        let found = out.detections.len() as f64 / sc.machines as f64;
        let per_machine: Vec<Option<f64>> = out
            .detections
            .iter()
            .map(|&d| Some(d))
            .chain(std::iter::repeat_n(
                None,
                sc.machines as usize - out.detections.len(),
            ))
            .collect();
        let _ = writeln!(
            o,
            "simulated in {secs:.1} s on {threads} threads: {} samples ({:.3}/s per machine), {} refused (pool full), {} refused (covered), {} of the bug's executions sampled",
            out.samples,
            out.samples as f64 / sc.machines as f64 / horizon,
            out.refused_full,
            out.refused_covered,
            out.bug_samples
        );
        let _ = writeln!(o, "{:<40} {:>16} {:>16}", "", "simulated", "model");
        let _ = writeln!(
            o,
            "{:<40} {:>16} {:>16}",
            "fleet's first detection",
            opt(out.fleet_first_s),
            opt(model.median_s).to_string() + " (median)"
        );
        let _ = writeln!(
            o,
            "{:<40} {:>16} {:>16}",
            "machines that found it by the horizon",
            format!("{:.2} %", found * 100.0),
            format!(
                "{:.2} %",
                100.0 * (1.0 - (-model.cumulative_hazard / machines).exp())
            )
        );
        let model_one = plan::predict(
            1.0,
            &workload,
            &settings,
            &bug,
            horizon,
            plan::SAMPLE_COST_S,
        );
        let _ = writeln!(
            o,
            "{:<40} {:>16} {:>16}",
            "one machine's first detection, median",
            opt(simulate::quantile(&per_machine, 0.5)),
            opt(model_one.median_s)
        );
        for (t, occ) in checkpoints.iter().zip(&out.occupancy) {
            let pred = model
                .occupancy
                .iter()
                .take_while(|p| p.t_s <= *t)
                .last()
                .map_or(0.0, |p| p.occupied);
            let _ = writeln!(
                o,
                "{:<40} {:>16} {:>16}",
                format!("mean pool occupancy at {}", human(*t)),
                format!("{occ:.1}/{}", settings.num_objects),
                format!("{pred:.1}")
            );
        }
        json!({
            "machines": sc.machines, "horizon_seconds": horizon, "seed": seed, "threads": threads,
            "wall_seconds": secs,
            "samples": out.samples, "refused_full": out.refused_full, "refused_covered": out.refused_covered,
            "bug_samples": out.bug_samples,
            "fleet_first_seconds": out.fleet_first_s,
            "machines_found": out.detections.len(),
            "machine_median_seconds": simulate::quantile(&per_machine, 0.5),
            "occupancy": checkpoints.iter().zip(&out.occupancy).map(|(t, v)| json!({"t_seconds": t, "mean_occupied": v})).collect::<Vec<_>>(),
            "model": {"fleet_median_seconds": model.median_s, "fleet_p90_seconds": model.p90_s, "machine_median_seconds": model_one.median_s, "fill_seconds": model.fill_s},
        })
    } else {
        let firsts = simulate::fleet_firsts(&sc, runs, threads);
        let secs = started.elapsed().as_secs_f64();
        let found = firsts.iter().filter(|f| f.is_some()).count();
        let _ = writeln!(
            o,
            "{runs} fleets simulated in {secs:.1} s on {threads} threads; {found} found the bug within the horizon"
        );
        let _ = writeln!(
            o,
            "{:<40} {:>16} {:>16}",
            "fleet's first detection", "simulated", "model"
        );
        for (name, q, pred) in [
            ("median", 0.5, model.median_s),
            ("90th percentile", 0.9, model.p90_s),
        ] {
            let _ = writeln!(
                o,
                "{:<40} {:>16} {:>16}",
                name,
                opt(simulate::quantile(&firsts, q)),
                opt(pred)
            );
        }
        json!({
            "machines": sc.machines, "horizon_seconds": horizon, "seed": seed, "runs": runs,
            "threads": threads, "wall_seconds": secs,
            "fleet_firsts_seconds": firsts,
            "median_seconds": simulate::quantile(&firsts, 0.5),
            "p90_seconds": simulate::quantile(&firsts, 0.9),
            "found_by_horizon": found as f64 / runs as f64,
            "model": {"median_seconds": model.median_s, "p90_seconds": model.p90_s, "mean_seconds": model.mean_s, "found_by_horizon": model.found_by_horizon},
        })
    };
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
        );
    } else {
        print!("{o}");
    }
    Ok(0)
}
