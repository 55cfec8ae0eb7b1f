//! Damage to objects that are never freed: the canaries of live sampled objects are checked at
//! normal exit (`exit` and `_exit`), and on request from `ufence objects|stats PID --check`
//! (through the control block, served on the process's sampling slow path). Reports name the
//! object as still allocated. Program: `tests/c/live.c`.

mod common;
use common::{lib, text};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EVERY: &str = "sample_rate=1:max_overhead=0:skip_covered_thresh=100";

fn program() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| common::c_program("live"))
}

fn make_record_line() -> String {
    let src = include_str!("c/live.c");
    let n = 1 + src
        .lines()
        .position(|l| l.contains("LINE:make_record"))
        .unwrap();
    format!("live.c:{n}")
}

fn run(mode: &str, options: Option<&str>) -> Output {
    let mut cmd = Command::new(program());
    cmd.arg(mode).env_remove("UFENCE_OPTIONS");
    if let Some(o) = options {
        cmd.env("LD_PRELOAD", lib())
            .env("UFENCE_OPTIONS", format!("{EVERY}:{o}"));
    }
    cmd.output().expect("running live")
}

/// The one report in `err`: its title, headline and the allocation stack's first frame.
fn check_report(err: &str) {
    assert_eq!(err.matches("BUG: UFENCE:").count(), 1, "{err}");
    // Titled by the allocating function: where the check ran says nothing about the bug.
    assert!(
        err.contains("BUG: UFENCE: memory corruption in make_record\n"),
        "{err}"
    );
    let headline = err
        .lines()
        .find(|l| l.starts_with("Corrupted memory at "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        headline.ends_with(", still allocated):") && headline.contains("[ ! "),
        "{headline}"
    );
    let alloc = err
        .split("allocated by thread")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    let first = alloc.lines().nth(1).unwrap();
    assert!(first.starts_with(" #0 make_record+"), "{first}");
    assert!(first.contains(&make_record_line()), "{first}\n{err}");
    assert!(!err.contains("freed by thread"), "{err}");
}

#[test]
fn a_damaged_object_alive_at_exit_is_reported() {
    for mode in ["leak", "_exit"] {
        let out = run(mode, Some(""));
        let err = text(&out.stderr);
        check_report(&err);
        assert_eq!(out.status.code(), Some(0), "{mode}: {err}");
        // exitcode applies to a bug found at exit as to any other.
        let out = run(mode, Some("exitcode=23"));
        assert_eq!(out.status.code(), Some(23), "{mode}: {}", text(&out.stderr));
    }
}

#[test]
fn many_live_objects_at_exit_stay_clean_and_identical() {
    let plain = run("many", None);
    assert!(plain.status.success());
    for opts in ["", "num_objects=1000"] {
        let out = run("many", Some(opts));
        assert_eq!(text(&out.stderr), "", "{opts}");
        assert_eq!(out.stdout, plain.stdout);
        assert!(out.status.success());
    }
}

#[test]
fn ufence_objects_check_asks_a_live_process() {
    let rt = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rt-live-check");
    let _ = std::fs::remove_dir_all(&rt);
    let mut child = Command::new(program())
        .arg("serve")
        .env("LD_PRELOAD", lib())
        .env("UFENCE_OPTIONS", format!("{EVERY}:num_objects=64"))
        .env("UFENCE_RUNTIME_DIR", &rt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid = line.trim().strip_prefix("ready ").unwrap().to_string();
    let file = rt.join(format!("{pid}.ufence"));
    let t = Instant::now();
    while !file.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "no control file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ufence = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ufence"))
            .args(args)
            .env("UFENCE_RUNTIME_DIR", &rt)
            .env_remove("UFENCE_OPTIONS")
            .output()
            .unwrap()
    };
    // Without --check nothing is asked: the program stays silent.
    let plain = ufence(&["stats", &pid]);
    assert!(plain.status.success());
    assert!(
        text(&plain.stdout).contains("total bugs: 0"),
        "{}",
        text(&plain.stdout)
    );
    let o = ufence(&["objects", &pid, "--check"]);
    let said = text(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("canary check: 1 damaged live object (reported"),
        "{said}"
    );
    assert!(text(&o.stdout).contains("ufence-#"), "{}", text(&o.stdout));
    // A second check finds the same damage but the object is reported only once.
    let s = ufence(&["stats", &pid, "--check"]);
    assert!(text(&s.stderr).contains("canary check: 1 damaged live object"));
    assert!(
        text(&s.stdout).contains("total bugs: 1"),
        "{}",
        text(&s.stdout)
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    check_report(&err);
}
