//! The Prometheus text format of processes' counters: `ufence stats --format prometheus` (one
//! host's processes, for a node exporter's textfile directory) and `ufence exporter` (which adds
//! its host-level families, see [`crate::exporter`]) render processes the same way.

use crate::escape::escape;
use crate::runtime::{Liveness, Snapshot};
use std::fmt::Write;

/// A Prometheus label value: control characters shown as text ([`escape`]), then `\`, `"` and
/// newlines escaped as the exposition format requires.
pub fn label_value(s: &str) -> String {
    escape(s)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels of one process: its pid and executable's file name; with `fleet`, also the
/// user it runs as and whether it is `live` or `stale` (crashed, killed, exec'd: the file it
/// left keeps its last counters).
pub fn process_labels(s: &Snapshot, fleet: bool) -> String {
    // The recorded path: label_value escapes it (once).
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
