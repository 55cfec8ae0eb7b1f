//! The Prometheus text format of processes' counters: `ufence stats --format prometheus` (one
//! host's processes, for a node exporter's textfile directory) and `ufence exporter` (which adds
//! its host-level families, see [`crate::exporter`]) render processes the same way.

use crate::runtime::{Liveness, Snapshot};
use std::fmt::Write;
use ufence_core::fmt::escape;

/// A Prometheus label value from raw text: control characters shown as text (the shared
/// [`escape`]), then `\`, `"` and newlines escaped as the exposition format requires.
pub fn label_value(s: &str) -> String {
    escape(s.as_bytes())
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels of one process: its pid and executable's file name; with `fleet`, also the
/// user it runs as and whether it is `live` or `stale` (crashed, killed, exec'd: the file it
/// left keeps its last counters).
pub fn process_labels(s: &Snapshot, fleet: bool) -> String {
    // Raw: label_value escapes it once (exe() is already escaped for a terminal).
    let exe = s.exe_raw();
    let base = exe.rsplit('/').next().unwrap_or("");
    let mut l = format!("pid=\"{}\",exe=\"{}\"", s.pid(), label_value(base));
    if fleet {
        let state = if s.liveness == Liveness::Live {
            "live"
        } else {
            "stale"
        };
        let _ = write!(l, ",uid=\"{}\",state=\"{state}\"", s.header().uid);
    }
    l
}

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

/// Writes a family's `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One metric family per counter, every process a sample with its labels (families are never
/// split across the output, as the format requires).
pub fn processes(procs: &[(&Snapshot, String)]) -> String {
    let mut out = String::with_capacity(256 + procs.len() * 1024);
    let stats: Vec<_> = procs.iter().map(|(s, _)| s.stats().fields()).collect();
    for f in FAMILIES {
        header(&mut out, f.name, f.kind, f.help);
        for ((_, labels), values) in procs.iter().zip(&stats) {
            for (field, reason) in f.fields {
                let v = values.iter().find(|(n, _)| n == field).map_or(0, |p| p.1);
                let extra = reason.map_or(String::new(), |r| format!(",reason=\"{r}\""));
                let _ = writeln!(out, "{}{{{labels}{extra}}} {v}", f.name);
            }
        }
    }
    header(
        &mut out,
        "ufence_pool_slots",
        "gauge",
        "Slots in the guarded pool",
    );
    for (s, labels) in procs {
        let _ = writeln!(out, "ufence_pool_slots{{{labels}}} {}", s.header().nslots);
    }
    out
}

/// A summary family of durations in seconds (p50, p90, the longest; their sum and count), one
/// series set per process whose slot table could be read. The values describe the slot table
/// as it is now (the last object of each slot), so `_sum` and `_count` can go down: read them
/// as gauges, not with `rate()`.
fn summary(out: &mut String, name: &str, help: &str, rows: &[(&str, &[u64])]) {
    header(out, name, "summary", help);
    for (labels, v) in rows {
        for q in [0.5, 0.9, 1.0] {
            if let Some(x) = crate::runtime::Lifetimes::quantile(v, q) {
                let _ = writeln!(
                    out,
                    "{name}{{{labels},quantile=\"{q}\"}} {}",
                    x as f64 / 1e9
                );
            }
        }
        let sum: u64 = v.iter().fold(0u64, |a, &x| a.saturating_add(x));
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", v.len());
    }
}

/// The workload families (what `ufence plan` reads from a process): allocations seen, the
/// allocation rate, the time the pool spent full, and the lifetimes of the sampled objects
/// (freed ones, and the ages of those still allocated) from the slot table. A process whose
/// slot table cannot be read (it went away meanwhile, a damaged file) has no lifetime series.
pub fn workload(procs: &[(&Snapshot, String)], out: &mut String) {
    let w: Vec<_> = procs.iter().map(|(s, _)| s.workload()).collect();
    type Value = dyn Fn(&crate::runtime::Workload) -> String;
    let families: [(&str, &str, &str, &Value); 4] = [
        (
            "ufence_allocations_seen_total",
            "counter",
            "Allocations the sampler has seen, sampled or not (an estimate, updated at each sample)",
            &|w| w.allocations_seen.to_string(),
        ),
        (
            "ufence_allocation_rate_per_second",
            "gauge",
            "Allocations seen per second since ufence started in the process (0 in its first second)",
            &|w| format!("{:.3}", w.rate_per_s),
        ),
        (
            "ufence_pool_full_seconds_total",
            "counter",
            "Time the pool spent full (samples refused for capacity), the current full period included",
            &|w| format!("{:.3}", w.full_s),
        ),
        (
            "ufence_pool_full",
            "gauge",
            "1 while the pool is full (its last sample found no free slot)",
            &|w| u8::from(w.full_now).to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        for ((_, labels), w) in procs.iter().zip(&w) {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(w));
        }
    }
    let lifetimes: Vec<_> = procs
        .iter()
        .map(|(s, l)| (l.as_str(), crate::runtime::lifetimes(s)))
        .collect();
    let freed: Vec<(&str, &[u64])> = lifetimes
        .iter()
        .filter_map(|(l, r)| r.as_ref().ok().map(|r| (*l, r.freed_ns.as_slice())))
        .collect();
    summary(
        out,
        "ufence_sampled_lifetime_seconds",
        "Lifetimes of the freed sampled objects the slot table describes now (the last of each slot)",
        &freed,
    );
    let alive: Vec<(&str, &[u64])> = lifetimes
        .iter()
        .filter_map(|(l, r)| r.as_ref().ok().map(|r| (*l, r.alive_ns.as_slice())))
        .collect();
    summary(
        out,
        "ufence_sampled_alive_age_seconds",
        "Ages of the sampled objects still allocated (long-lived objects show here as old ages)",
        &alive,
    );
}
