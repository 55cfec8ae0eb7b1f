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
            metrics::processes(&labelled)
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
    }
    out
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
    json!({
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
