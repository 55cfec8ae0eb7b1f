//! `ufence stats`: the counters of one process or of all, in KFENCE's format, JSON, or the
//! Prometheus text format (for a node exporter's textfile directory).

use crate::runtime::{self, Snapshot};
use clap::ArgMatches;
use serde_json::{json, Map, Value};
use std::fmt::Write;
use ufence_core::options::SPECS;

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
        let s = runtime::for_pid(pid)?;
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
        "prometheus" => prometheus(&snaps),
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

/// One Prometheus metric family per counter, every process a sample labelled with its pid and
/// executable (families must not be split across the output).
pub fn prometheus(snaps: &[Snapshot]) -> String {
    struct Family {
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        /// The KFENCE field and, for the skipped counters, the `reason` label.
        fields: &'static [(&'static str, Option<&'static str>)],
    }
    const FAMILIES: &[Family] = &[
        Family {
            name: "ufence_enabled",
            kind: "gauge",
            help: "1 while sampling is on",
            fields: &[("enabled", None)],
        },
        Family {
            name: "ufence_currently_allocated",
            kind: "gauge",
            help: "Objects in the guarded pool now",
            fields: &[("currently allocated", None)],
        },
        Family {
            name: "ufence_allocations_total",
            kind: "counter",
            help: "Sampled allocations placed in the guarded pool",
            fields: &[("total allocations", None)],
        },
        Family {
            name: "ufence_frees_total",
            kind: "counter",
            help: "Frees of guarded objects",
            fields: &[("total frees", None)],
        },
        Family {
            name: "ufence_bugs_total",
            kind: "counter",
            help: "Memory-safety errors reported",
            fields: &[("total bugs", None)],
        },
        Family {
            name: "ufence_skipped_allocations_total",
            kind: "counter",
            help: "Samples given up, by reason",
            fields: &[
                ("skipped allocations (incompatible)", Some("incompatible")),
                ("skipped allocations (capacity)", Some("capacity")),
                ("skipped allocations (covered)", Some("covered")),
                ("skipped allocations (budget)", Some("budget")),
                ("skipped allocations (filtered)", Some("filtered")),
            ],
        },
        Family {
            name: "ufence_sample_interval_milliseconds",
            kind: "gauge",
            help: "Time-based sample interval in force (0: off)",
            fields: &[("sample interval (ms)", None)],
        },
    ];
    let mut out = String::new();
    let label = |s: &Snapshot| {
        let exe = s.exe();
        let base = exe.rsplit('/').next().unwrap_or("").to_string();
        format!("pid=\"{}\",exe=\"{}\"", s.pid(), escape(&base))
    };
    for f in FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for s in snaps {
            let stats = s.stats();
            let values = stats.fields();
            for (field, reason) in f.fields {
                let v = values.iter().find(|(n, _)| n == field).map_or(0, |p| p.1);
                let extra = reason.map_or(String::new(), |r| format!(",reason=\"{r}\""));
                let _ = writeln!(out, "{}{{{}{extra}}} {v}", f.name, label(s));
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP ufence_pool_slots Slots in the guarded pool\n# TYPE ufence_pool_slots gauge"
    );
    for s in snaps {
        let _ = writeln!(
            out,
            "ufence_pool_slots{{{}}} {}",
            label(s),
            s.header().nslots
        );
    }
    out
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
