//! `ufence stats`: the counters of one process or of all, in KFENCE's format, JSON, or the
//! Prometheus text format (for a node exporter's textfile directory).

use crate::runtime::{self, Snapshot};
use clap::ArgMatches;
use serde_json::{json, Map, Value};
use std::fmt::Write;
use ufence_core::options::SPECS;
use ufence_fleet::metrics;

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let format = m
        .get_one::<String>("format")
        .map_or("kfence", String::as_str);
    let snaps = if m.get_flag("all") {
        let dir = runtime::dir()?;
        let mut live = Vec::new();
        for (path, s) in runtime::list(&dir) {
            match s {
                Ok(s) if s.live() => live.push(s),
                Ok(_) => {}
                Err(e) => eprintln!("ufence: skipping {}: {e}", path.display()),
            }
        }
        live
    } else {
        let pid = m
            .get_one::<String>("pid")
            .ok_or("give a PID, or --all for every live process")?;
        let mut s = runtime::for_pid(pid)?;
        if m.get_flag("check") {
            crate::check::request(&s)?;
            s = runtime::for_pid(pid)?;
        }
        if !s.live() {
            eprintln!(
                "ufence: process {} is {}; these are its last counters",
                s.pid(),
                s.liveness.word()
            );
        }
        vec![s]
    };
    let text = match format {
        "kfence" => kfence(&snaps, m.get_flag("all")),
        "json" => {
            let v: Vec<Value> = snaps.iter().map(to_json).collect();
            let v = if m.get_flag("all") {
                Value::Array(v)
            } else {
                v.into_iter().next().unwrap_or(Value::Null)
            };
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n"
        }
        "prometheus" => {
            let labelled: Vec<_> = snaps
                .iter()
                .map(|s| (s, metrics::process_labels(s, false)))
                .collect();
            let mut out = metrics::processes(&labelled);
            metrics::workload(&labelled, &mut out);
            out
        }
        other => {
            return Err(format!(
                "unknown format '{other}' (kfence, json, prometheus)"
            ))
        }
    };
    print!("{text}");
    Ok(0)
}

fn kfence(snaps: &[Snapshot], all: bool) -> String {
    let mut out = String::new();
    for s in snaps {
        if all {
            let _ = writeln!(out, "# pid {} ({})", s.pid(), s.exe());
        }
        let _ = s.stats().write_kfence(&mut out);
        let w = s.workload();
        let _ = writeln!(out, "allocations seen: {}", w.allocations_seen);
        let _ = writeln!(out, "allocation rate (/s): {:.1}", w.rate_per_s);
        let _ = writeln!(
            out,
            "time pool full (s): {:.1}{}",
            w.full_s,
            if w.full_now { " (full now)" } else { "" }
        );
        match runtime::lifetimes(s) {
            Ok(l) => {
                let _ = writeln!(out, "sampled lifetimes (freed): {}", summary(&l.freed_ns));
                let _ = writeln!(out, "sampled ages (alive): {}", summary(&l.alive_ns));
            }
            Err(e) => {
                let _ = writeln!(out, "sampled lifetimes: unreadable ({e})");
            }
        }
    }
    out
}

/// `N objects, p50 X s, p90 Y s, max Z s` (or `0 objects`).
fn summary(v: &[u64]) -> String {
    let q = |p| runtime::Lifetimes::quantile(v, p).unwrap_or(0) as f64 / 1e9;
    if v.is_empty() {
        return "0 objects".to_string();
    }
    format!(
        "{} objects, p50 {} s, p90 {} s, max {} s",
        v.len(),
        secs(q(0.5)),
        secs(q(0.9)),
        secs(q(1.0))
    )
}

/// Seconds with a precision that suits their size.
fn secs(s: f64) -> String {
    if s < 0.01 {
        format!("{s:.6}")
    } else {
        format!("{s:.3}")
    }
}

fn lifetimes_json(v: &[u64]) -> Value {
    let q = |p| runtime::Lifetimes::quantile(v, p).map(|n| n as f64 / 1e9);
    json!({"count": v.len(), "p50_seconds": q(0.5), "p90_seconds": q(0.9), "max_seconds": q(1.0)})
}

/// A counter's KFENCE name as a JSON key: `skipped allocations (covered)` →
/// `skipped_allocations_covered`.
pub fn key(name: &str) -> String {
    let mut k = String::new();
    for part in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            if !k.is_empty() {
                k.push('_');
            }
            k.push_str(part);
        }
    }
    k
}

pub fn to_json(s: &Snapshot) -> Value {
    let mut stats = Map::new();
    for (name, v) in s.stats().fields() {
        stats.insert(key(name), json!(v));
    }
    let knobs = s.knob_options();
    let mut settings = Map::new();
    for spec in SPECS.iter().filter(|s| s.runtime) {
        let mut v = String::new();
        knobs.write_value(spec.name, &mut v);
        settings.insert(spec.name.to_string(), json!(v));
    }
    let h = s.header();
    let w = s.workload();
    let lifetimes = match runtime::lifetimes(s) {
        Ok(l) => {
            json!({"freed": lifetimes_json(&l.freed_ns), "alive": lifetimes_json(&l.alive_ns), "unread_slots": l.unread})
        }
        Err(e) => json!({"error": e}),
    };
    json!({
        "workload": {
            "allocations_seen": w.allocations_seen,
            "allocation_rate_per_second": w.rate_per_s,
            "pool_full_seconds": w.full_s,
            "pool_full_now": w.full_now,
            "sampled_lifetimes": lifetimes,
        },
        "pid": s.pid(),
        "exe": s.exe_raw(),
        "cmdline": s.cmdline_raw(),
        "state": s.liveness.word(),
        "live": s.live(),
        "mode": if h.mode == ufence_core::control::MODE_PRELOAD { "preload" } else { "allocator" },
        "uptime_seconds": s.uptime_ns() as f64 / 1e9,
        "started_unix_seconds": h.start_unix_ns / 1_000_000_000,
        "pool_slots": h.nslots,
        "stats": stats,
        "settings": settings,
        "options_at_start": s.options_text(),
        "control_file": s.path.display().to_string(),
    })
}
