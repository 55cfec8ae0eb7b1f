//! `ufence exporter`: real programs under ufence with planted bugs, scraped over HTTP. Hostile
//! control files are counted and skipped; a crashed process's bugs stay in the totals, and so
//! do those of a process that exits; a full pool that stops sampling is starving. And a fleet
//! in one test: three "hosts" (each its runtime and report directory, and its exporter) scraped
//! by a real Prometheus, whose totals agree with `ufence triage` over the collected reports and
//! with the bugs planted.

mod common;
mod fleet;
use common::{lib, text};
use fleet::*;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use ufence_testkit::{free_port, http_get, require_command, url_encode};

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("exporter")
        .join(name)
}

/// The fleet program, built once per test process.
fn app() -> &'static Path {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| build(&tmp("bin"), &[]))
}

/// Runs `app BUG` to its end with `options` (e.g. on_error=abort: a crash that leaves its
/// control file behind); returns its exit signal.
fn run_to_end(bug: &str, options: &str, rt: &Path, reports: &Path) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let out = command(lib(), app(), bug, options, rt, reports)
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("BUG: UFENCE:"),
        "{}",
        text(&out.stderr)
    );
    out.status.signal()
}

/// `app BUG stay`, running after its bug.
fn stay(bug: &str, options: &str, rt: &Path, reports: &Path) -> Proc {
    let mut c = command(lib(), app(), bug, options, rt, reports);
    c.arg("stay");
    let (p, _) = spawn_until(c, "ready ");
    let file = rt.join(format!("{}.ufence", p.pid));
    eventually(10, &|| format!("{} never appeared", file.display()), || {
        file.exists()
    });
    p
}

fn scrape(addr: &str) -> String {
    let (status, body) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn value(exposition: &str, series: &str) -> f64 {
    metric(exposition, series).unwrap_or_else(|| panic!("no {series} in\n{exposition}"))
}

#[test]
fn hostile_and_truncated_control_files_are_counted_and_never_fail_the_scrape() {
    let rt = private_dir(&tmp("hostile-rt"));
    let reports = tmp("hostile-reports");
    let p = stay("uaf", "", &rt, &reports);
    let real = std::fs::read(rt.join(format!("{}.ufence", p.pid))).unwrap();
    let plant = |name: &str, bytes: &[u8]| {
        use std::os::unix::fs::PermissionsExt;
        let f = rt.join(name);
        std::fs::write(&f, bytes).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    plant("1.ufence", b"\x7fELF not a control block at all");
    plant("2.ufence", &real[..200]);
    plant("3.ufence", &real); // names pid 3, holds another
    let mut damaged = real.clone();
    damaged[8..12].copy_from_slice(&99u32.to_le_bytes()); // version 99
    plant("4.ufence", &damaged);
    std::os::unix::fs::symlink(rt.join(format!("{}.ufence", p.pid)), rt.join("5.ufence")).unwrap();
    std::fs::create_dir(rt.join("6.ufence")).unwrap();
    plant("notes.txt", b"not looked at");

    let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(["exporter", "--once", "--runtime-dir"])
        .arg(&rt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = text(&out.stdout);
    assert_eq!(value(&m, "ufence_exporter_control_file_errors"), 6.0, "{m}");
    let me = format!("ufence_bugs_total{{pid=\"{}\",exe=\"app\",", p.pid);
    assert_eq!(value(&m, &me), 1.0, "{m}");
    assert_eq!(value(&m, "ufence_host_processes{state=\"live\"}"), 1.0);
    assert_eq!(value(&m, "ufence_host_processes{state=\"stale\"}"), 0.0);
    assert_eq!(value(&m, "ufence_host_bugs_total"), 1.0);
    assert_eq!(
        value(&m, "ufence_pool_slots{"),
        319.0,
        "one process only (255 small slots, 64 large): {m}"
    );

    // A directory others can write to is refused in one line.
    let open = tmp("open-rt");
    let _ = std::fs::remove_dir_all(&open);
    std::fs::create_dir_all(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(["exporter", "--once", "--runtime-dir"])
        .arg(&open)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is writable by other users"), "{err}");
}

#[test]
fn a_crashed_processs_bugs_stay_in_the_totals_and_an_exited_ones_too() {
    let rt = private_dir(&tmp("stale-rt"));
    let reports = tmp("stale-reports");
    let _ = std::fs::remove_dir_all(&reports);
    assert_eq!(
        run_to_end("uaf", "on_error=abort", &rt, &reports),
        Some(libc::SIGABRT)
    );
    let mut live = stay("oob", "", &rt, &reports);
    let (_exporter, addr) = exporter(&[&rt], &[&reports], &[]);
    let m = scrape(&addr);
    assert_eq!(
        value(&m, "ufence_host_processes{state=\"live\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(value(&m, "ufence_host_processes{state=\"stale\"}"), 1.0);
    assert_eq!(value(&m, "ufence_host_bugs_total"), 2.0);
    let stale: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("ufence_bugs_total{") && l.contains("state=\"stale\""))
        .collect();
    assert_eq!(stale.len(), 1, "{m}");
    assert!(stale[0].ends_with(" 1"), "the crashed process's bug: {m}");
    assert_eq!(
        value(&m, "ufence_reports_total{kind=\"use-after-free\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "ufence_reports_total{kind=\"out-of-bounds\"}"),
        1.0
    );
    let allocs = value(&m, "ufence_host_allocations_total");

    // A normal exit removes the file; the exporter keeps what it last saw in the totals.
    live.stop();
    assert!(!rt.join(format!("{}.ufence", live.pid)).exists());
    let m = scrape(&addr);
    assert_eq!(
        value(&m, "ufence_host_processes{state=\"live\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(value(&m, "ufence_host_bugs_total"), 2.0, "{m}");
    assert!(value(&m, "ufence_host_allocations_total") >= allocs);
    assert_eq!(
        value(&m, "ufence_reports_total{kind=\"out-of-bounds\"}"),
        1.0
    );

    // A log shipper moves the reports away: they stay counted.
    let shipped = tmp("stale-shipped");
    let _ = std::fs::remove_dir_all(&shipped);
    std::fs::rename(&reports, &shipped).unwrap();
    std::fs::create_dir_all(&reports).unwrap();
    let m = scrape(&addr);
    let kind = |m: &str, k: &str| value(m, &format!("ufence_reports_total{{kind=\"{k}\"}}"));
    assert_eq!(kind(&m, "out-of-bounds"), 1.0, "{m}");
    assert_eq!(kind(&m, "use-after-free"), 1.0, "{m}");
    // A new one in a subdirectory is counted once, however many scrapes see it.
    let day = reports.join("2026-12-01");
    std::fs::create_dir_all(&day).unwrap();
    let one = std::fs::read_dir(&shipped)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::copy(one.path(), day.join("ufence-1-2-3.json")).unwrap();
    scrape(&addr);
    let m = scrape(&addr);
    assert_eq!(
        kind(&m, "out-of-bounds") + kind(&m, "use-after-free"),
        3.0,
        "{m}"
    );
    assert_eq!(value(&m, "ufence_exporter_report_file_errors_total"), 0.0);

    assert_eq!(http_get(&addr, "/other").unwrap().0, 404);
}

#[test]
fn a_full_pool_that_stops_sampling_is_starving() {
    let rt = private_dir(&tmp("starve-rt"));
    let reports = tmp("starve-reports");
    let full = stay("leak", "num_objects=16", &rt, &reports);
    let busy = stay("uaf", "num_objects=16", &rt, &reports);
    let (_exporter, addr) = exporter(&[&rt], &[], &["--starve-after", "1"]);
    let series = |pid: u32| format!("ufence_starving{{pid=\"{pid}\",");
    let mut last = String::new();
    eventually(
        20,
        &|| "the leaking process never starved".to_string(),
        || {
            last = scrape(&addr);
            metric(&last, &series(full.pid)) == Some(1.0)
        },
    );
    let m = last;
    assert_eq!(
        value(
            &m,
            &format!("ufence_currently_allocated{{pid=\"{}\",", full.pid)
        ),
        16.0
    );
    assert!(
        value(
            &m,
            &format!("ufence_seconds_since_last_sample{{pid=\"{}\",", full.pid)
        ) >= 1.0
    );
    assert_eq!(value(&m, &series(busy.pid)), 0.0, "{m}");
    assert_eq!(value(&m, "ufence_host_starving_processes"), 1.0);
    // The workload families say why: the pool is full, has been for a while, and the leaking
    // process's 16 sampled objects are all still allocated (a summary of their ages).
    let of = |name: &str, pid: u32| value(&m, &format!("{name}{{pid=\"{pid}\","));
    assert_eq!(of("ufence_pool_full", full.pid), 1.0, "{m}");
    assert_eq!(of("ufence_pool_full", busy.pid), 0.0, "{m}");
    assert!(of("ufence_pool_full_seconds_total", full.pid) > 0.0, "{m}");
    assert!(of("ufence_allocations_seen_total", full.pid) >= 16.0, "{m}");
    assert_eq!(
        of("ufence_sampled_alive_age_seconds_count", full.pid),
        16.0,
        "{m}"
    );
    assert!(m.contains("# TYPE ufence_sampled_alive_age_seconds summary\n"));
    assert!(m.contains("# TYPE ufence_allocations_seen_total counter\n"));
}

/// A Prometheus server on loopback, with its data in a temporary directory; killed and reaped
/// when dropped.
struct Prometheus {
    proc: Proc,
    addr: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[String]) -> Prometheus {
        let bin = require_command("prometheus", "prometheus");
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: ufence\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("start prometheus");
        let pid = child.id();
        let p = Prometheus {
            proc: Proc { child, pid },
            addr,
        };
        let log = dir.join("log");
        eventually(
            60,
            &|| {
                format!(
                    "prometheus never became ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
            || matches!(http_get(&p.addr, "/-/ready"), Ok((200, _))),
        );
        p
    }

    /// An instant query's samples: labels and value.
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let (status, body) = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", url_encode(q)),
        )
        .unwrap();
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let val: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), val)
            })
            .collect()
    }

    /// The value of a query that yields one sample.
    fn scalar(&self, q: &str) -> Option<f64> {
        match self.query(q).as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

#[test]
fn a_fleet_scraped_by_prometheus_agrees_with_triage_and_the_bugs_planted() {
    let root = tmp("fleet");
    let _ = std::fs::remove_dir_all(&root);
    let collected = root.join("collected");
    // host -> the bugs it runs: (bug, crashes?)
    let hosts: [(&str, &[(&str, bool)]); 3] = [
        ("h1", &[("uaf", false), ("oob", true)]),
        ("h2", &[("dfree", false)]),
        ("h3", &[("oob", true), ("uaf", false)]),
    ];
    let mut running = Vec::new();
    let mut exporters = Vec::new();
    let mut targets = Vec::new();
    for (host, bugs) in hosts {
        let rt = private_dir(&root.join(host).join("rt"));
        let reports = collected.join(host).join("2026-12-01");
        for (bug, crash) in bugs {
            if *crash {
                assert_eq!(
                    run_to_end(bug, "on_error=abort", &rt, &reports),
                    Some(libc::SIGABRT)
                );
            } else {
                running.push(stay(bug, "", &rt, &reports));
            }
        }
        if host == "h3" {
            std::fs::write(rt.join("7.ufence"), b"garbage").unwrap();
        }
        let (e, addr) = exporter(&[&rt], &[&collected.join(host)], &[]);
        exporters.push(e);
        targets.push(addr);
    }
    let planted = 5.0;

    let prom = Prometheus::start(&root.join("prometheus"), &targets);
    eventually(
        60,
        &|| {
            format!(
                "prometheus did not scrape all three exporters: {:?}",
                prom.query("up")
            )
        },
        || {
            prom.scalar("count(up == 1)") == Some(3.0)
                && prom.scalar("count(ufence_host_bugs_total)") == Some(3.0)
        },
    );
    assert_eq!(prom.scalar("sum(ufence_host_bugs_total)"), Some(planted));
    assert_eq!(prom.scalar("sum(ufence_bugs_total)"), Some(planted));
    assert_eq!(prom.scalar("sum(ufence_reports_total)"), Some(planted));
    assert_eq!(
        prom.scalar("sum(ufence_bugs_total{state=\"stale\"})"),
        Some(2.0),
        "the two crashed processes' bugs"
    );
    assert_eq!(
        prom.scalar("sum(ufence_host_processes{state=\"live\"})"),
        Some(3.0)
    );
    assert_eq!(
        prom.scalar("sum(ufence_host_processes{state=\"stale\"})"),
        Some(2.0)
    );
    let mut by_kind: Vec<(String, f64)> = prom
        .query("sum by (kind) (ufence_reports_total)")
        .into_iter()
        .map(|(m, v)| (m["kind"].as_str().unwrap().to_string(), v))
        .collect();
    by_kind.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        by_kind,
        [
            ("double-free".to_string(), 1.0),
            ("out-of-bounds".to_string(), 2.0),
            ("use-after-free".to_string(), 2.0)
        ]
    );
    // The workload of every live process, as Prometheus parsed it (a malformed family would
    // fail the whole scrape): one age summary each, and its counters.
    assert_eq!(
        prom.scalar("count(ufence_sampled_alive_age_seconds_count)"),
        Some(3.0)
    );
    assert_eq!(prom.scalar("count(ufence_pool_full == 0)"), Some(3.0));
    assert_eq!(
        prom.scalar("count(ufence_allocations_seen_total > 0)"),
        Some(3.0)
    );
    let errors = prom.query("ufence_exporter_control_file_errors > 0");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0["instance"], targets[2].as_str());
    assert_eq!(errors[0].1, 1.0);

    // Triage over the collected reports: the same total, three bugs.
    let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(["triage", "--format", "json"])
        .arg(&collected)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reports"].as_f64(), Some(planted));
    assert_eq!(doc["skipped"], 0);
    let mut counts: Vec<(String, u64)> = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap().to_string(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("double-free".to_string(), 1),
            ("out-of-bounds".to_string(), 2),
            ("use-after-free".to_string(), 2)
        ]
    );
    let total: u64 = counts.iter().map(|c| c.1).sum();
    assert_eq!(
        total as f64,
        prom.scalar("sum(ufence_host_bugs_total)").unwrap()
    );
    drop(prom);
    drop(exporters);
    drop(running);
}

#[test]
fn the_documented_scrape_config_and_alert_rules_are_valid_and_fire() {
    let promtool = require_command("promtool", "prometheus");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let docs = docs.canonicalize().unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(&promtool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    check(&[
        "check",
        "config",
        docs.join("prometheus.yml").to_str().unwrap(),
    ]);
    // The alerts, fed with series shaped as the exporter writes them.
    let dir = tmp("promtool");
    std::fs::create_dir_all(&dir).unwrap();
    let labels = r#"instance: "h1:9477", job: ufence"#;
    let proc_labels =
        r#"instance: "h1:9477", job: ufence, pid: "42", exe: app, uid: "0", state: live"#;
    let tests = format!(
        r#"rule_files: ["{rules}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'ufence_starving{{instance="h1:9477",job="ufence",pid="42",exe="app",uid="0",state="live"}}'
        values: '0 1x30'
      - series: 'ufence_host_bugs_total{{instance="h1:9477",job="ufence"}}'
        values: '0 0 0 1x30'
      - series: 'ufence_exporter_control_file_errors{{instance="h1:9477",job="ufence"}}'
        values: '0x40'
      - series: 'ufence_pool_full_seconds_total{{instance="h1:9477",job="ufence",pid="42",exe="app",uid="0",state="live"}}'
        values: '0+60x60'
      - series: 'ufence_allocations_seen_total{{instance="h1:9477",job="ufence",pid="42",exe="app",uid="0",state="live"}}'
        values: '0+6000x60'
      - series: 'ufence_pool_full_seconds_total{{instance="h1:9477",job="ufence",pid="43",exe="half",uid="0",state="live"}}'
        values: '0+30x60'
      - series: 'ufence_allocations_seen_total{{instance="h1:9477",job="ufence",pid="43",exe="half",uid="0",state="live"}}'
        values: '0+6000x60'
      - series: 'ufence_pool_full_seconds_total{{instance="h1:9477",job="ufence",pid="44",exe="idle",uid="0",state="live"}}'
        values: '0+60x60'
      - series: 'ufence_allocations_seen_total{{instance="h1:9477",job="ufence",pid="44",exe="idle",uid="0",state="live"}}'
        values: '5x60'
    alert_rule_test:
      - eval_time: 10m
        alertname: UfencePoolStarving
        exp_alerts: []
      - eval_time: 20m
        alertname: UfencePoolStarving
        exp_alerts:
          - exp_labels: {{severity: warning, {proc_labels}}}
            exp_annotations:
              summary: "ufence pool full and not sampling: app (pid 42) on h1:9477"
              description: "Restart it with adaptive=1 (the interval follows pool use) or a lower skip_covered_thresh, or raise num_objects."
      - eval_time: 2m
        alertname: UfenceBugReported
        exp_alerts: []
      - eval_time: 5m
        alertname: UfenceBugReported
        exp_alerts:
          - exp_labels: {{severity: warning, {labels}}}
            exp_annotations:
              summary: "ufence reported a memory-safety bug on h1:9477"
              description: "Collect the JSON reports of report_dir and run `ufence triage` on them."
      - eval_time: 25m
        alertname: UfenceBugReported
        exp_alerts: []
      - eval_time: 40m
        alertname: UfenceUnreadableControlFiles
        exp_alerts: []
      - eval_time: 35m
        alertname: UfencePoolFullWhileAllocating
        exp_alerts: []
      - eval_time: 50m
        alertname: UfencePoolFullWhileAllocating
        exp_alerts:
          - exp_labels: {{severity: warning, {proc_labels}}}
            exp_annotations:
              summary: "ufence pool full 100% of the time: app (pid 42) on h1:9477"
              description: "Samples are refused for capacity. Run `ufence plan --from 42` on the host; usually adaptive=1, a lower skip_covered_thresh or a larger num_objects."
"#,
        rules = docs.join("ufence-alerts.yml").display()
    );
    let file = dir.join("alerts.test.yml");
    std::fs::write(&file, tests).unwrap();
    check(&["test", "rules", file.to_str().unwrap()]);
}

/// Removes a directory when dropped.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of a real control file, claiming pid `pid` and user `uid`, owned by `owner`.
fn forge(real: &[u8], dir: &Path, pid: u32, uid: u32, owner: u32) {
    use std::os::unix::fs::PermissionsExt;
    let mut block = real.to_vec();
    block[24..28].copy_from_slice(&pid.to_le_bytes());
    block[28..32].copy_from_slice(&uid.to_le_bytes());
    let f = dir.join(format!("{pid}.ufence"));
    std::fs::write(&f, block).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&f, Some(owner), None).unwrap();
}

#[test]
fn by_default_it_reads_its_own_directory_and_as_root_every_users() {
    let rt = private_dir(&tmp("default-rt"));
    let reports = tmp("default-reports");
    let p = stay("uaf", "", &rt, &reports);
    let real = std::fs::read(rt.join(format!("{}.ufence", p.pid))).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut _cleanup = Vec::new();
    if root {
        // Another user's default directory, with one of their files and one that is not theirs.
        let theirs = PathBuf::from(format!("/dev/shm/ufence-test-{}", std::process::id()));
        _cleanup.push(Cleanup(theirs.clone()));
        private_dir(&theirs);
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
        forge(&real, &theirs, 3_999_001, 4242, 4242);
        forge(&real, &theirs, 3_999_002, 4242, 0);
    } else {
        eprintln!("note: not root: only the own-directory half of this test runs");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(["exporter", "--once"])
        .env("UFENCE_RUNTIME_DIR", &rt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = text(&out.stdout);
    let mine = format!("ufence_bugs_total{{pid=\"{}\",exe=\"app\",", p.pid);
    assert_eq!(value(&m, &mine), 1.0, "{m}");
    if root {
        let series = "ufence_bugs_total{pid=\"3999001\",exe=\"app\",uid=\"4242\",state=\"stale\"}";
        assert_eq!(value(&m, series), 1.0, "{m}");
        assert!(
            !m.contains("pid=\"3999002\""),
            "a file that is not the directory owner's is refused: {m}"
        );
    }
}
