//! The exporter's scrape: every control file of the runtime directories it may read, live and
//! stale, rendered as Prometheus metrics with host-level sums, the starvation signal, the
//! workload of live processes (allocation rate, time the pool spent full, sampled lifetimes:
//! what `ufence plan` reads), and the reports found in report directories.
//!
//! Nothing here trusts a file: a control file that cannot be read or validated (hostile,
//! truncated, another user's, another version's) is left out of that scrape and counted in
//! `ufence_exporter_control_file_errors`; the scrape itself never fails.
//!
//! State kept between scrapes (the exporter is long-running):
//! - **Starvation**, computed from consecutive scrapes: for each process, when its
//!   `total allocations` last moved. A process starves when its pool is full
//!   (`currently allocated` = slots) and no allocation was sampled for `starve_after`: long-lived
//!   objects hold every slot and ufence has stopped looking at new ones.
//! - **Retired counts**: the bugs and samples of processes whose files went away (a normal exit
//!   removes the file; so does `ps --gc`) are kept in the host totals, so that
//!   `ufence_host_bugs_total` only grows while the exporter runs. A crashed process's file
//!   stays, and with it its counts (as a `stale` process).
//! - **Reports**: each report file is read once (they are written whole and never change) and
//!   counted by kind; a file that is moved away later (a log shipper) stays counted.

use crate::metrics::{self, header};
use crate::report::Report;
use crate::runtime::{self, Snapshot};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Report files larger than this are not reports.
const MAX_REPORT: u64 = 16 << 20;

struct Track {
    pid: u32,
    start_unix_ns: u64,
    allocations: u64,
    bugs: u64,
    /// When `allocations` was last seen to change (or the process first seen).
    changed: Instant,
}

#[derive(Default)]
struct Reports {
    seen: HashSet<PathBuf>,
    /// The files met by the walk in progress: `seen` keeps only those, so that it does not
    /// grow with files a shipper has moved away (their counts stay).
    walked: HashSet<PathBuf>,
    by_kind: BTreeMap<String, u64>,
    bad: u64,
}

pub struct Exporter {
    /// Runtime directories to scan; empty: [`runtime::all_dirs`] at each scrape.
    pub runtime_dirs: Vec<PathBuf>,
    pub report_dirs: Vec<PathBuf>,
    pub starve_after: Duration,
    tracks: HashMap<PathBuf, Track>,
    retired_bugs: u64,
    retired_allocations: u64,
    reports: Reports,
    buf: Vec<u8>,
}

/// One process in a scrape.
struct Proc {
    snap: Snapshot,
    labels: String,
    starving: bool,
    since_sample: f64,
}

impl Exporter {
    pub fn new(
        runtime_dirs: Vec<PathBuf>,
        report_dirs: Vec<PathBuf>,
        starve_after: Duration,
    ) -> Exporter {
        Exporter {
            runtime_dirs,
            report_dirs,
            starve_after,
            tracks: HashMap::new(),
            retired_bugs: 0,
            retired_allocations: 0,
            reports: Reports::default(),
            buf: Vec::new(),
        }
    }

    /// Reads everything and renders `/metrics`.
    pub fn scrape(&mut self) -> String {
        let t0 = Instant::now();
        let now = t0;
        let dirs = if self.runtime_dirs.is_empty() {
            runtime::all_dirs()
        } else {
            self.runtime_dirs.clone()
        };
        let mut errors = 0u64;
        let mut dir_errors = 0u64;
        let mut procs: Vec<Proc> = Vec::new();
        let mut present: HashSet<PathBuf> = HashSet::new();
        for dir in &dirs {
            let owner = match runtime::check_dir(dir) {
                Ok(o) => o,
                Err(_) => {
                    dir_errors += 1;
                    continue;
                }
            };
            for (path, snap) in runtime::list_as(dir, owner) {
                present.insert(path.clone());
                let snap = match snap {
                    Ok(s) => s,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                let stats = snap.stats();
                let (pid, start) = (snap.pid(), snap.header().start_unix_ns);
                let track = self.tracks.entry(path).or_insert(Track {
                    pid,
                    start_unix_ns: start,
                    allocations: stats.total_allocations,
                    bugs: stats.total_bugs,
                    changed: now,
                });
                if track.pid != pid || track.start_unix_ns != start {
                    // Another process now has this file's name: the old one's counts retire.
                    self.retired_bugs += track.bugs;
                    self.retired_allocations += track.allocations;
                    *track = Track {
                        pid,
                        start_unix_ns: start,
                        allocations: stats.total_allocations,
                        bugs: stats.total_bugs,
                        changed: now,
                    };
                }
                if track.allocations != stats.total_allocations {
                    track.allocations = stats.total_allocations;
                    track.changed = now;
                }
                track.bugs = stats.total_bugs;
                let since = now.duration_since(track.changed);
                // Full as far as the small slots go (most objects are small; a large object
                // counted here only makes it look fuller, and starving also needs no sample).
                let full = stats.currently_allocated >= snap.small_slots();
                let starving = snap.live() && full && since >= self.starve_after;
                let labels = metrics::process_labels(&snap, true);
                procs.push(Proc {
                    snap,
                    labels,
                    starving,
                    since_sample: since.as_secs_f64(),
                });
            }
        }
        // Files gone since the last scrape: their processes' counts stay in the totals.
        let gone: Vec<PathBuf> = self
            .tracks
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(t) = self.tracks.remove(&p) {
                self.retired_bugs += t.bugs;
                self.retired_allocations += t.allocations;
            }
        }
        self.read_reports();
        let mut out = self.render(&procs, errors, dir_errors);
        header(
            &mut out,
            "ufence_exporter_scrape_duration_seconds",
            "gauge",
            "Time this scrape took to read every control file and report",
        );
        let _ = writeln!(
            out,
            "ufence_exporter_scrape_duration_seconds {:.6}",
            t0.elapsed().as_secs_f64()
        );
        out
    }

    fn render(&self, procs: &[Proc], errors: u64, dir_errors: u64) -> String {
        let labelled: Vec<(&Snapshot, String)> =
            procs.iter().map(|p| (&p.snap, p.labels.clone())).collect();
        let mut out = metrics::processes(&labelled);
        let live: Vec<&Proc> = procs.iter().filter(|p| p.snap.live()).collect();
        // The workload (the planner's inputs) of live processes: a dead one's slot table
        // describes its last moments, and its ages would keep growing.
        let live_labelled: Vec<(&Snapshot, String)> = labelled
            .iter()
            .filter(|(s, _)| s.live())
            .map(|(s, l)| (*s, l.clone()))
            .collect();
        metrics::workload(&live_labelled, &mut out);
        header(
            &mut out,
            "ufence_seconds_since_last_sample",
            "gauge",
            "Seconds since the exporter last saw the process's sampled allocations grow (live processes)",
        );
        for p in &live {
            let _ = writeln!(
                out,
                "ufence_seconds_since_last_sample{{{}}} {:.3}",
                p.labels, p.since_sample
            );
        }
        header(
            &mut out,
            "ufence_starving",
            "gauge",
            "1 when the pool is full and no allocation was sampled for the exporter's --starve-after (live processes)",
        );
        for p in &live {
            let _ = writeln!(out, "ufence_starving{{{}}} {}", p.labels, p.starving as u8);
        }
        let sum =
            |f: &dyn Fn(&Proc) -> u64, which: &[&Proc]| -> u64 { which.iter().map(|p| f(p)).sum() };
        let all: Vec<&Proc> = procs.iter().collect();
        header(
            &mut out,
            "ufence_host_processes",
            "gauge",
            "Processes with a control file here: live, or stale (crashed, killed, exec'd; their last counts stay)",
        );
        let _ = writeln!(
            out,
            "ufence_host_processes{{state=\"live\"}} {}",
            live.len()
        );
        let _ = writeln!(
            out,
            "ufence_host_processes{{state=\"stale\"}} {}",
            procs.len() - live.len()
        );
        header(
            &mut out,
            "ufence_host_bugs_total",
            "counter",
            "Memory-safety errors reported by every process here, live or stale, and by those whose files went away while the exporter ran",
        );
        let _ = writeln!(
            out,
            "ufence_host_bugs_total {}",
            sum(&|p| p.snap.stats().total_bugs, &all) + self.retired_bugs
        );
        header(
            &mut out,
            "ufence_host_allocations_total",
            "counter",
            "Sampled allocations of every process here, counted as ufence_host_bugs_total is",
        );
        let _ = writeln!(
            out,
            "ufence_host_allocations_total {}",
            sum(&|p| p.snap.stats().total_allocations, &all) + self.retired_allocations
        );
        header(
            &mut out,
            "ufence_host_currently_allocated",
            "gauge",
            "Objects in the guarded pools of live processes",
        );
        let _ = writeln!(
            out,
            "ufence_host_currently_allocated {}",
            sum(&|p| p.snap.stats().currently_allocated, &live)
        );
        header(
            &mut out,
            "ufence_host_pool_slots",
            "gauge",
            "Slots in the guarded pools of live processes",
        );
        let _ = writeln!(
            out,
            "ufence_host_pool_slots {}",
            sum(&|p| u64::from(p.snap.header().nslots), &live)
        );
        header(
            &mut out,
            "ufence_host_starving_processes",
            "gauge",
            "Live processes whose pool is full and that sampled nothing for --starve-after",
        );
        let _ = writeln!(
            out,
            "ufence_host_starving_processes {}",
            live.iter().filter(|p| p.starving).count()
        );
        header(
            &mut out,
            "ufence_exporter_control_file_errors",
            "gauge",
            "Control files left out of this scrape: unreadable, damaged, truncated, foreign or another user's",
        );
        let _ = writeln!(out, "ufence_exporter_control_file_errors {errors}");
        header(
            &mut out,
            "ufence_exporter_runtime_dir_errors",
            "gauge",
            "Runtime directories left out of this scrape (missing, not a directory, writable by others)",
        );
        let _ = writeln!(out, "ufence_exporter_runtime_dir_errors {dir_errors}");
        if !self.report_dirs.is_empty() {
            header(
                &mut out,
                "ufence_reports_total",
                "counter",
                "JSON reports found in --report-dir, by kind",
            );
            for (kind, n) in &self.reports.by_kind {
                let _ = writeln!(
                    out,
                    "ufence_reports_total{{kind=\"{}\"}} {n}",
                    metrics::label_value(kind)
                );
            }
            header(
                &mut out,
                "ufence_exporter_report_file_errors_total",
                "counter",
                "Files in --report-dir that are not ufence reports (damaged, truncated, foreign)",
            );
            let _ = writeln!(
                out,
                "ufence_exporter_report_file_errors_total {}",
                self.reports.bad
            );
        }
        out
    }

    /// Reads the report files not seen before.
    fn read_reports(&mut self) {
        self.reports.walked.clear();
        for dir in self.report_dirs.clone() {
            self.walk_reports(&dir, 0);
        }
        let walked = std::mem::take(&mut self.reports.walked);
        self.reports.seen.retain(|p| walked.contains(p));
        self.reports.walked = walked;
    }

    fn walk_reports(&mut self, dir: &Path, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(ty) = e.file_type() else { continue };
            let path = e.path();
            if ty.is_dir() {
                if depth < 8 {
                    self.walk_reports(&path, depth + 1);
                }
                continue;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !ty.is_file() || name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            self.reports.walked.insert(path.clone());
            if self.reports.seen.contains(&path) {
                continue;
            }
            let kind = self.report_kind(&path);
            match kind {
                Some(k) => *self.reports.by_kind.entry(k).or_insert(0) += 1,
                None => self.reports.bad += 1,
            }
            self.reports.seen.insert(path);
        }
    }

    fn report_kind(&mut self, path: &Path) -> Option<String> {
        use std::io::Read;
        let f = std::fs::File::open(path).ok()?;
        self.buf.clear();
        f.take(MAX_REPORT).read_to_end(&mut self.buf).ok()?;
        Report::parse(&self.buf).ok().map(|r| r.kind.to_string())
    }
}
