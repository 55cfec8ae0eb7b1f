//! `ufence plan`: sampling settings for a fleet, from its size, its workload (described, or
//! measured from this host's live processes) and a detection target; the model is
//! `ufence_fleet::plan` (docs/fleet-model.md). `--apply` writes the recommended runtime knobs
//! into the live processes, as `ufence set` does.

use crate::runtime::{self, Snapshot};
use clap::ArgMatches;
use serde_json::{json, Value};
use std::fmt::Write;
use ufence_fleet::plan::{self, human, Budget, Bug, Kind, Prediction, Settings, Workload};

/// Seconds from `90`, `90s`, `15m`, `2h`, `7d`, `2w`.
pub fn duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (90, 90s, 15m, 2h, 7d, 2w)"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (s, m, h, d, w)")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("'{text}': a duration must be > 0"));
    }
    Ok(n * scale)
}

pub fn number(m: &ArgMatches, name: &str) -> Result<Option<f64>, String> {
    let Some(v) = m.get_one::<String>(name) else {
        return Ok(None);
    };
    let (body, pct) = match v.strip_suffix('%') {
        Some(b) => (b, true),
        None => (v.as_str(), false),
    };
    let x: f64 = body
        .trim()
        .parse()
        .map_err(|_| format!("--{name}: '{v}' is not a number"))?;
    if !x.is_finite() {
        return Err(format!("--{name}: '{v}' is not a finite number"));
    }
    Ok(Some(if pct { x / 100.0 } else { x }))
}

pub fn kind(m: &ArgMatches) -> Result<Kind, String> {
    let bytes = number(m, "bytes")?.unwrap_or(1.0);
    if bytes < 1.0 || bytes.fract() != 0.0 {
        return Err(format!(
            "--bytes: {bytes} is not a whole number of bytes >= 1"
        ));
    }
    let write = m.get_one::<String>("access").map(String::as_str) != Some("read");
    let delay = match m.get_one::<String>("delay") {
        Some(d) => duration(d).or_else(|e| if d.trim() == "0" { Ok(0.0) } else { Err(e) })?,
        None => 0.0,
    };
    Ok(
        match m.get_one::<String>("kind").map_or("uaf", String::as_str) {
            "uaf" | "use-after-free" => Kind::UseAfterFree { delay_s: delay },
            "double-free" => Kind::DoubleFree { delay_s: delay },
            "overflow" => Kind::Overflow {
                bytes: bytes as u64,
                write,
            },
            "underflow" => Kind::Underflow {
                bytes: bytes as u64,
                write,
            },
            other => {
                return Err(format!(
                    "unknown bug kind '{other}' (uaf, overflow, underflow, double-free)"
                ))
            }
        },
    )
}

/// The settings in force in a live process, as the model reads them.
fn settings_of(s: &Snapshot) -> Settings {
    let o = s.knob_options();
    Settings {
        sample_interval_ms: if o.enabled { o.sample_interval } else { 0 },
        sample_rate: if o.enabled { o.sample_rate } else { 0 },
        // The small slots: the plan's num_objects (large slots are a class of their own).
        num_objects: s.small_slots(),
        burst: o.burst,
        adaptive: o.adaptive,
        adaptive_max_ms: o.adaptive_max,
        skip_covered_thresh: o.skip_covered_thresh,
    }
}

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let machines = number(m, "machines")?.ok_or("give the fleet's size: --machines N")?;
    if machines < 1.0 {
        return Err(format!(
            "the fleet must have at least 1 machine (got {machines})"
        ));
    }
    let per_hour = number(m, "bug-per-hour")?
        .ok_or("give how often the bug path runs: --bug-per-hour R (per machine)")?;
    if per_hour <= 0.0 {
        return Err(format!("--bug-per-hour must be > 0 (got {per_hour})"));
    }
    let within = duration(m.get_one::<String>("within").map_or("7d", String::as_str))?;
    let budget = Budget {
        cpu_percent: number(m, "cpu")?.unwrap_or(1.0),
        mib: number(m, "mib")?.unwrap_or(16.0),
    };
    let cost_s = number(m, "sample-cost-us")?.map_or(plan::SAMPLE_COST_S, |us| us * 1e-6);
    if cost_s <= 0.0 {
        return Err("--sample-cost-us must be > 0".into());
    }

    // The workload: measured from live processes, or described.
    let live: Vec<Snapshot> = if let Some(pid) = m.get_one::<String>("from") {
        let s = runtime::for_pid(pid)?;
        if !s.live() {
            return Err(format!(
                "process {} is {}: nothing to measure",
                s.pid(),
                s.liveness.word()
            ));
        }
        vec![s]
    } else if m.get_flag("all") {
        let dir = runtime::dir()?;
        runtime::list(&dir)
            .into_iter()
            .filter_map(|(_, s)| s.ok())
            .filter(Snapshot::live)
            .collect()
    } else {
        Vec::new()
    };
    let described = m.get_one::<String>("rate").is_some();
    let mut workload = if described || live.is_empty() {
        if m.get_flag("all") && live.is_empty() && !described {
            return Err("no live process under ufence on this host to measure".into());
        }
        Workload {
            rate: number(m, "rate")?.ok_or(
                "describe the workload (--rate ALLOCS_PER_S) or measure it (--from PID, --all)",
            )?,
            long_lived: 0.0,
            lifetime_s: 0.01,
            long_lived_sites: 4,
        }
    } else {
        let mut with = Vec::new();
        for s in &live {
            // A process that exits while we read it is left out, in words.
            match runtime::lifetimes(s) {
                Ok(l) => with.push((s, l)),
                Err(e) => eprintln!("ufence: skipping process {}: {e}", s.pid()),
            }
        }
        plan::measured(&with)?
    };
    if let Some(f) = number(m, "long-lived")? {
        workload.long_lived = f;
    }
    if let Some(l) = m.get_one::<String>("lifetime") {
        workload.lifetime_s = duration(l)?;
    }
    if let Some(k) = number(m, "long-lived-sites")? {
        workload.long_lived_sites = k.max(0.0) as u64;
    }
    let bug = Bug {
        rate: per_hour / 3600.0,
        kind: kind(m)?,
        size: number(m, "object-size")?.unwrap_or(64.0).max(0.0) as u64,
        align: number(m, "align")?.unwrap_or(16.0).max(0.0) as u64,
    };
    let current = live.first().map_or(Settings::DEFAULT, settings_of);
    plan::check(machines, &workload, &current, &bug)?;
    let rec = plan::recommend(machines, &workload, &bug, within, &budget, cost_s)?;
    let horizon = rec.prediction.horizon_s;
    let now = plan::predict(machines, &workload, &current, &bug, horizon, cost_s);

    let mut warnings = Vec::new();
    if let Some(fill) = now.fill_s {
        warnings.push(format!(
            "the settings in force fill the pool after {} and then accept {:.0} % of samples{}",
            human(fill),
            now.accepted_at_end * 100.0,
            if now.accepted_at_end < 0.01 {
                " (starved: no samples, no bugs found)"
            } else {
                ""
            }
        ));
    }
    if now.p90_s.is_none_or(|p| p > within) {
        warnings.push(format!(
            "the settings in force do not meet the target: their 90th percentile is {} (target {})",
            now.p90_s
                .map_or(format!("beyond the horizon of {}", human(horizon)), human),
            human(within)
        ));
    }
    if now.cpu_percent > budget.cpu_percent {
        warnings.push(format!(
            "the settings in force use {:.2} % CPU, over the budget of {} %",
            now.cpu_percent, budget.cpu_percent
        ));
    }
    // `--all` averages the workload over its processes, whatever their programs: say so, and
    // which programs, so that a mixed host is not read as one workload.
    let mut programs: Vec<String> = live
        .iter()
        .map(|s| s.exe_raw().rsplit('/').next().unwrap_or("").to_string())
        .collect();
    programs.sort();
    programs.dedup();
    let source = if described || live.is_empty() {
        "described".to_string()
    } else if live.len() == 1 {
        "measured from 1 live process".to_string()
    } else {
        format!(
            "measured from {} live processes of {} program{} ({}), averaged over them; plan one program with --from PID",
            live.len(),
            programs.len(),
            if programs.len() == 1 { "" } else { "s" },
            programs.join(", ")
        )
    };
    let format = m.get_one::<String>("format").map_or("text", String::as_str);
    match format {
        "json" => {
            let v = json!({
                "machines": machines,
                "workload": {
                    "source": source,
                    "programs": if described { Vec::new() } else { programs.clone() },
                    "allocations_per_second": workload.rate,
                    "long_lived_fraction": workload.long_lived,
                    "lifetime_seconds": workload.lifetime_s,
                    "long_lived_sites": workload.long_lived_sites,
                },
                "bug": {"executions_per_hour": per_hour, "kind": plan::describe(&bug.kind), "size": bug.size, "align": bug.align},
                "target_p90_seconds": within,
                "budget": {"cpu_percent": budget.cpu_percent, "mib": budget.mib},
                "recommended": {"settings": settings_json(&rec.settings), "prediction": prediction_json(&rec.prediction)},
                "current": {"settings": settings_json(&current), "prediction": prediction_json(&now)},
                "notes": rec.notes,
                "warnings": warnings,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
        }
        "text" => print!(
            "{}",
            text(
                machines, &workload, &source, per_hour, &bug, within, &budget, &rec, &current,
                &now, &warnings
            )
        ),
        other => return Err(format!("unknown format '{other}' (text, json)")),
    }
    if m.get_flag("apply") {
        apply(&live, &rec.settings)?;
    }
    Ok(0)
}

/// The runtime knobs a recommendation sets (num_objects is fixed at start).
fn runtime_pairs(s: &Settings) -> Vec<String> {
    vec![
        format!("sample_interval={}", s.sample_interval_ms),
        format!("sample_rate={}", s.sample_rate),
        format!("adaptive={}", u8::from(s.adaptive)),
        format!("skip_covered_thresh={}", s.skip_covered_thresh),
    ]
}

fn apply(live: &[Snapshot], s: &Settings) -> Result<(), String> {
    if live.is_empty() {
        return Err("--apply needs live processes: --from PID or --all".into());
    }
    let pairs = runtime_pairs(s);
    let (wanted, keys) = crate::set::validate(pairs.iter().map(String::as_str))?;
    let mut failed = 0;
    for snap in live {
        match crate::set::apply(snap, &wanted, &keys) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                if snap.small_slots() != s.num_objects {
                    println!(
                        "pid {}: num_objects {} (fixed at start; restart with UFENCE_OPTIONS=num_objects={})",
                        snap.pid(),
                        snap.small_slots(),
                        s.num_objects
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("ufence: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {} processes were not changed",
            live.len()
        ));
    }
    Ok(())
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "sample_interval": s.sample_interval_ms,
        "sample_rate": s.sample_rate,
        "num_objects": s.num_objects,
        "burst": s.burst,
        "adaptive": s.adaptive,
        "adaptive_max": s.adaptive_max_ms,
        "skip_covered_thresh": s.skip_covered_thresh,
    })
}

fn prediction_json(p: &Prediction) -> Value {
    let occ: Vec<Value> = p
        .occupancy
        .iter()
        .map(|o| json!({"t_seconds": o.t_s, "occupied": o.occupied, "accepted": o.accepted}))
        .collect();
    json!({
        "p_sampled_per_execution": p.p_sample,
        "p_caught_if_sampled": p.p_catch,
        "samples_per_second": p.samples_per_s,
        "median_seconds": p.median_s,
        "p90_seconds": p.p90_s,
        "mean_seconds": p.mean_s,
        "found_by_horizon": p.found_by_horizon,
        "horizon_seconds": p.horizon_s,
        "pool_fills_seconds": p.fill_s,
        "accepted_at_horizon": p.accepted_at_end,
        "cpu_percent": p.cpu_percent,
        "mib_when_full": p.mib,
        "occupancy": occ,
    })
}

fn settings_line(s: &Settings) -> String {
    format!(
        "sample_interval={} sample_rate={} num_objects={} adaptive={} skip_covered_thresh={}{}",
        s.sample_interval_ms,
        s.sample_rate,
        s.num_objects,
        u8::from(s.adaptive),
        s.skip_covered_thresh,
        if s.burst > 0 {
            format!(" burst={}", s.burst)
        } else {
            String::new()
        }
    )
}

fn opt(v: Option<f64>) -> String {
    v.map_or("beyond horizon".to_string(), human)
}

#[allow(clippy::too_many_arguments)]
fn text(
    machines: f64,
    w: &Workload,
    source: &str,
    per_hour: f64,
    bug: &Bug,
    within: f64,
    budget: &Budget,
    rec: &plan::Recommendation,
    current: &Settings,
    now: &Prediction,
    warnings: &[String],
) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "fleet: {machines} machines; workload ({source}): {:.1} allocations/s, {:.1} % long-lived from {} sites, others live {:.3} s",
        w.rate,
        w.long_lived * 100.0,
        w.long_lived_sites,
        w.lifetime_s
    );
    let _ = writeln!(
        o,
        "bug: {} on a {}-byte object, its path run {per_hour} times an hour per machine",
        plan::describe(&bug.kind),
        bug.size
    );
    let _ = writeln!(
        o,
        "target: 90 % found within {}; budget: {} % CPU, {} MiB per process",
        human(within),
        budget.cpu_percent,
        budget.mib
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "recommended: {}", settings_line(&rec.settings));
    let _ = writeln!(o, "in force:    {}", settings_line(current));
    let _ = writeln!(o);
    let r = &rec.prediction;
    let _ = writeln!(o, "{:<38} {:>16} {:>16}", "", "recommended", "in force");
    let mut row = |name: &str, a: String, b: String| {
        let _ = writeln!(o, "{name:<38} {a:>16} {b:>16}");
    };
    row(
        "P(one execution sampled)",
        format!("{:.3e}", r.p_sample),
        format!("{:.3e}", now.p_sample),
    );
    row(
        "P(caught | sampled)",
        format!("{:.2}", r.p_catch),
        format!("{:.2}", now.p_catch),
    );
    row(
        "first detection, median",
        opt(r.median_s),
        opt(now.median_s),
    );
    row(
        "first detection, 90th percentile",
        opt(r.p90_s),
        opt(now.p90_s),
    );
    row("first detection, mean", opt(r.mean_s), opt(now.mean_s));
    row(
        "pool fills after",
        r.fill_s.map_or("never".into(), human),
        now.fill_s.map_or("never".into(), human),
    );
    let occ_at = |p: &Prediction, t: f64| {
        p.occupancy
            .iter()
            .take_while(|x| x.t_s <= t)
            .last()
            .map_or(0.0, |x| x.occupied)
    };
    for (label, t) in [
        ("pool occupancy after 1 h", 3600.0),
        ("pool occupancy after 1 day", 86_400.0),
    ] {
        if t <= r.horizon_s {
            row(
                label,
                format!("{:.0}/{}", occ_at(r, t), rec.settings.num_objects),
                format!("{:.0}/{}", occ_at(now, t), current.num_objects),
            );
        }
    }
    row(
        "samples/s per process",
        format!("{:.3}", r.samples_per_s),
        format!("{:.3}", now.samples_per_s),
    );
    row(
        "CPU per process",
        format!("{:.3} %", r.cpu_percent),
        format!("{:.3} %", now.cpu_percent),
    );
    row(
        "memory per process (pool full)",
        format!("{:.1} MiB", r.mib),
        format!("{:.1} MiB", now.mib),
    );
    for n in &rec.notes {
        let _ = writeln!(o, "note: {n}");
    }
    for w in warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    o
}
