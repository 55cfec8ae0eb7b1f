//! `ufence triage`: real reports from two builds of one C program (differing only in an
//! unrelated function) fall into one group; a stripped build's frames group by build-id and
//! offset until `--debug-dir` names them; damaged and foreign files are counted and skipped;
//! newline-delimited JSON on stdin, `--new-since` and the three formats.

mod common;
mod fleet;
use common::{lib, text};
use fleet::{build, sh};

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Runs `prog BUG` under the preload, sampling everything, writing its report into `dir`;
/// returns the report's path.
fn report(prog: &Path, bug: &str, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let before: Vec<PathBuf> = files(dir);
    let out = Command::new(prog)
        .arg(bug)
        .env("LD_PRELOAD", lib())
        .env(
            "UFENCE_OPTIONS",
            format!("sample_rate=1:max_overhead=0:report_dir={}", dir.display()),
        )
        .env("UFENCE_RUNTIME_DIR", dir.join(".rt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("BUG: UFENCE:"),
        "{}",
        text(&out.stderr)
    );
    let new: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(new.len(), 1, "one report per run: {new:?}");
    new[0].clone()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

struct Fleet {
    root: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
    /// host-a: v1's use-after-free and out-of-bounds read; host-b: v2's use-after-free.
    reports: PathBuf,
    uaf1: PathBuf,
    uaf2: PathBuf,
    oob1: PathBuf,
    /// v2 stripped (no symbols), and its use-after-free.
    stripped_uaf: PathBuf,
}

fn fleet() -> &'static Fleet {
    static F: OnceLock<Fleet> = OnceLock::new();
    F.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("triage");
        let _ = std::fs::remove_dir_all(&root);
        let v1 = build(&root.join("v1"), &[]);
        let v2 = build(&root.join("v2"), &["-DV2"]);
        let reports = root.join("reports");
        let a = reports.join("host-a").join("2026-11-30");
        let b = reports.join("host-b").join("2026-12-01");
        let uaf1 = report(&v1, "uaf", &a);
        let oob1 = report(&v1, "oob", &a);
        let uaf2 = report(&v2, "uaf", &b);
        let sdir = root.join("stripped");
        std::fs::create_dir_all(&sdir).unwrap();
        let s = sdir.join("app");
        sh(Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&s)
            .arg(&v2));
        let stripped_uaf = report(&s, "uaf", &root.join("stripped-reports"));
        Fleet {
            root,
            v1,
            v2,
            reports,
            uaf1,
            uaf2,
            oob1,
            stripped_uaf,
        }
    })
}

fn triage(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .arg("triage")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// `triage --format json ARGS`, checked to succeed with nothing on stderr.
fn triage_json(args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = triage(&all, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "nothing skipped, no notes");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn load(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The build-id of `prog`, as its report's frames in the executable record it.
fn exe_build_id(report: &Value) -> String {
    let exe = report["process"]["executable"].as_str().unwrap();
    report["access"]["stack"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["module"] == exe)
        .and_then(|f| f["build_id"].as_str())
        .unwrap()
        .to_string()
}

fn top_offset(report: &Value) -> String {
    report["access"]["stack"][0]["offset"]
        .as_str()
        .unwrap()
        .to_string()
}

fn group<'a>(doc: &'a Value, title: &str) -> &'a Value {
    let gs = doc["groups"].as_array().unwrap();
    let found: Vec<&Value> = gs.iter().filter(|g| g["title"] == title).collect();
    assert_eq!(found.len(), 1, "one group titled {title}: {doc:#}");
    found[0]
}

#[test]
fn two_builds_of_one_program_with_the_same_bug_fall_into_one_group() {
    let f = fleet();
    let (r1, r2) = (load(&f.uaf1), load(&f.uaf2));
    // The builds differ, and so do the bug's offsets: grouping by offset would split them.
    let (id1, id2) = (exe_build_id(&r1), exe_build_id(&r2));
    assert_ne!(id1, id2);
    assert_ne!(top_offset(&r1), top_offset(&r2));
    assert_eq!(r1["process"]["executable"], f.v1.to_str().unwrap());
    assert_eq!(r2["process"]["executable"], f.v2.to_str().unwrap());

    let doc = triage_json(&[f.reports.to_str().unwrap()]);
    assert_eq!(doc["reports"], 3);
    assert_eq!(doc["skipped"], 0);
    assert_eq!(doc["groups_total"], 2, "{doc:#}");
    let uaf = group(&doc, "use-after-free read");
    assert_eq!(uaf["count"], 2);
    assert_eq!(uaf["kind"], "use-after-free");
    assert_eq!(uaf["function"], "read_freed");
    assert_eq!(uaf["grouped_by"], "function");
    assert_eq!(uaf["frames"][0], "read_freed");
    assert_eq!(uaf["frames"][1], "main");
    let mut builds: Vec<String> = uaf["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["count"], 1);
            b["build_id"].as_str().unwrap().to_string()
        })
        .collect();
    builds.sort();
    let mut want = vec![id1.clone(), id2];
    want.sort();
    assert_eq!(builds, want);
    assert_eq!(
        uaf["executables"],
        serde_json::json!([f.v1.to_str().unwrap(), f.v2.to_str().unwrap()])
    );
    let oob = group(&doc, "out-of-bounds read");
    assert_eq!(oob["count"], 1);
    assert_eq!(oob["function"], "read_around");
    assert_eq!(oob["builds"][0]["build_id"], id1.as_str());
    assert_eq!(oob["example"], f.oob1.to_str().unwrap());
    // Sorted by count: the group of two first.
    assert_eq!(doc["groups"][0]["title"], "use-after-free read");
}

#[test]
fn a_stripped_builds_frames_group_by_offset_until_debug_dir_names_them() {
    let f = fleet();
    let s = load(&f.stripped_uaf);
    assert!(
        s["access"]["stack"][0]["function"].is_null(),
        "stripped: {s:#}"
    );
    let both = [f.uaf2.to_str().unwrap(), f.stripped_uaf.to_str().unwrap()];

    let doc = triage_json(&both);
    assert_eq!(doc["groups_total"], 2, "{doc:#}");
    let by_offset: Vec<&Value> = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["grouped_by"] == "build-id+offset")
        .collect();
    assert_eq!(by_offset.len(), 1);
    let want = format!("{}+{}", exe_build_id(&s), top_offset(&s));
    assert_eq!(by_offset[0]["frames"][0], want.as_str());
    // Text output says so.
    let out = triage(&both, None);
    assert!(
        text(&out.stdout).contains("grouped by: build-id+offset"),
        "{}",
        text(&out.stdout)
    );

    // The unstripped v2 has the stripped binary's build-id: with it, the frames get names and
    // the stripped build's report joins its group.
    let dir = f.v2.parent().unwrap().to_str().unwrap();
    let doc = triage_json(&[both[0], both[1], "--debug-dir", dir]);
    assert_eq!(doc["groups_total"], 1, "{doc:#}");
    let g = &doc["groups"][0];
    assert_eq!(g["count"], 2);
    assert_eq!(g["grouped_by"], "function");
    assert_eq!(g["function"], "read_freed");
    assert_eq!(g["frames"][0], "read_freed");
}

#[test]
fn damaged_and_foreign_files_are_counted_skipped_and_listed_with_v() {
    let f = fleet();
    let dir = f.root.join("mixed");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let good = std::fs::read(&f.uaf1).unwrap();
    std::fs::write(dir.join("good.json"), &good).unwrap();
    std::fs::write(dir.join("sub/truncated.json"), &good[..good.len() / 2]).unwrap();
    std::fs::write(
        dir.join("foreign.json"),
        br#"{"level":"info","msg":"hello"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("garbage.json"), b"\x00\x01not json").unwrap();
    let mut v2 = load(&f.uaf1);
    v2["version"] = 2.into();
    std::fs::write(dir.join("future.json"), v2.to_string()).unwrap();
    // Not looked at: a report still being written, and files of other kinds.
    std::fs::write(dir.join(".ufence-1-0.json.tmp"), b"{").unwrap();
    std::fs::write(dir.join("notes.txt"), b"{").unwrap();

    let out = triage(&["--format", "json", dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert_eq!(
        err,
        "ufence: skipped 4 files or lines that are not ufence reports (damaged, truncated, foreign or unreadable); -v lists them\n"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reports"], 1);
    assert_eq!(doc["skipped"], 4);

    let out = triage(&["-v", dir.to_str().unwrap()], None);
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not listed: {err}"))
    };
    assert!(line("truncated.json").contains("truncated JSON"), "{err}");
    assert!(
        line("foreign.json").contains("not a ufence report"),
        "{err}"
    );
    assert!(line("garbage.json").contains("invalid JSON"), "{err}");
    assert!(
        line("future.json").contains("version 2 is not supported"),
        "{err}"
    );
    assert!(text(&out.stdout).starts_with("1 report from 1 host in 1 group\n"));
}

/// The reports as newline-delimited JSON, each moved to another host and time.
fn ndjson(entries: &[(&Path, &str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, host, when) in entries {
        let mut r = load(path);
        r["process"]["hostname"] = (*host).into();
        let ns: u64 = when.parse().unwrap();
        r["time"]["unix_ns"] = ns.into();
        out.extend_from_slice(r.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[test]
fn stdin_new_since_and_the_three_formats() {
    let f = fleet();
    // 2026-11-01T00:00:00Z = 1793491200, 2026-11-20T12:00:00Z = 1795176000.
    const NOV1: &str = "1793491200000000000";
    const NOV20: &str = "1795176000000000000";
    let input = ndjson(&[
        (&f.uaf1, "web-1", NOV1),
        (&f.uaf2, "web-2", NOV20),
        (&f.uaf1, "web-3", NOV20),
        (&f.oob1, "db-1\x1b[2J", NOV20),
    ]);
    let mut with_blank = input.clone();
    with_blank.extend_from_slice(b"\n{\"not\": \"a report\"}\n");

    let out = triage(&["--format", "json", "-"], Some(&with_blank));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).starts_with("ufence: skipped 1 file or line "));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reports"], 4);
    assert_eq!(doc["hosts"], 4);
    let uaf = group(&doc, "use-after-free read");
    assert_eq!(uaf["count"], 3);
    assert_eq!(uaf["hosts"], 3);
    assert_eq!(uaf["first_seen"], "2026-11-01T00:00:00Z");
    assert_eq!(uaf["last_seen"], "2026-11-20T12:00:00Z");
    assert_eq!(uaf["example"], "stdin:1");

    // Only what appeared after the 15th: the out-of-bounds read.
    let out = triage(
        &["--format", "json", "--new-since", "2026-11-15", "-"],
        Some(&input),
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gs = doc["groups"].as_array().unwrap();
    assert_eq!(gs.len(), 1, "{doc:#}");
    assert_eq!(gs[0]["title"], "out-of-bounds read");
    assert_eq!(gs[0]["example"], "stdin:4");

    let out = triage(&["--format", "markdown", "-"], Some(&input));
    let md = text(&out.stdout);
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
        .collect();
    assert_eq!(rows.len(), 3, "header and two groups: {md}");
    assert!(rows[1].starts_with("| 1 | 3 | 3 | "), "{md}");

    let out = triage(&["-"], Some(&input));
    let t = text(&out.stdout);
    assert!(t.starts_with("4 reports from 4 hosts in 2 groups\n"), "{t}");
    assert!(
        t.contains("#1 use-after-free read in read_freed: 3 reports, 3 hosts, 2 executables\n"),
        "{t}"
    );
    assert!(t.contains("    seen:       2026-11-01T00:00:00Z .. 2026-11-20T12:00:00Z\n"));
    // A host name is the watched machine's: its control characters are shown, not obeyed.
    assert!(!t.contains('\x1b'), "{t}");
}

#[test]
fn bad_arguments_get_one_line() {
    for (args, want) in [
        (vec!["/no/such/dir"], "ufence: cannot read /no/such/dir: "),
        (
            vec!["--new-since", "last tuesday", "-"],
            "ufence: 'last tuesday' is not a date",
        ),
    ] {
        let out = triage(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(want), "{err}");
    }
}
