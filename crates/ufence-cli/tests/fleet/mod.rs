//! Shared by the fleet tests (`triage.rs`, `exporter.rs`): the planted-bug program
//! `tests/c/fleet.c` built in variants, run under the preload, and the servers the exporter
//! tests start (the exporter itself, a real Prometheus), stopped when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::text;

pub fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
}

/// Builds `tests/c/fleet.c` into `dir/app` with extra compiler flags.
pub fn build(dir: &Path, flags: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let prog = dir.join("app");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/fleet.c");
    sh(Command::new("gcc")
        .args(["-g", "-O1", "-fno-optimize-sibling-calls", "-Wl,--build-id"])
        .args(flags)
        .arg("-o")
        .arg(&prog)
        .arg(src));
    prog
}

/// Every allocation sampled, whatever the cost.
pub const EVERY: &str = "sample_rate=1:max_overhead=0";

/// `prog BUG [stay]` under the preload with `options`, its control file in `rt` and its JSON
/// reports in `reports`.
pub fn command(
    lib: &Path,
    prog: &Path,
    bug: &str,
    options: &str,
    rt: &Path,
    reports: &Path,
) -> Command {
    std::fs::create_dir_all(reports).unwrap();
    let mut c = Command::new(prog);
    c.arg(bug)
        .env("LD_PRELOAD", lib)
        .env(
            "UFENCE_OPTIONS",
            format!("{EVERY}:{options}:report_dir={}", reports.display()),
        )
        .env("UFENCE_RUNTIME_DIR", rt);
    c
}

/// A process killed (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub pid: u32,
}

impl Proc {
    /// Asks it to end (SIGTERM) and waits: a normal exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Starts `cmd` (stdout piped) and waits for a line starting with `ready` (returned).
pub fn spawn_until(mut cmd: Command, ready: &str) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with(ready), "{cmd:?} said {line:?}");
    // Keep reading so that the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    (Proc { child, pid }, line)
}

/// `ufence exporter ARGS --listen 127.0.0.1:0`, running; its address.
pub fn exporter(rt_dirs: &[&Path], report_dirs: &[&Path], extra: &[&str]) -> (Proc, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ufence"));
    c.args(["exporter", "--listen", "127.0.0.1:0"]).args(extra);
    for d in rt_dirs {
        c.arg("--runtime-dir").arg(d);
    }
    for d in report_dirs {
        c.arg("--report-dir").arg(d);
    }
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ufence exporter");
    let pid = child.id();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("ufence: exporter serving http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("exporter said {line:?}"))
        .to_string();
    (Proc { child, pid }, addr)
}

/// A metric's value in a Prometheus text exposition: the sample whose name and labels start
/// with `series` (e.g. `ufence_bugs_total{pid="42",`), summed over the matches.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for l in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = l.rsplit_once(' ')?;
        if name == series || (series.ends_with([',', '{']) && name.starts_with(series)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

/// Polls `done` every 50 ms until it holds; fails with `what()` after `secs` seconds.
pub fn eventually(secs: u64, what: &dyn Fn() -> String, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(secs), "{}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private directory (mode 0700, as runtime directories must be).
pub fn private_dir(p: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(p);
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    p.to_path_buf()
}
