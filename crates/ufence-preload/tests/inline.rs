//! Reports name inlined functions, as the sanitizers' do: the frames go to the symbolizer
//! process (`ufence __symbolize-frames`) at report time, and each function inlined at a frame
//! gets a line of its own (`#0 get_value (inline.c:29, inlined)`, then `#1 run_bug+0x23
//! (inline.c:47, ...)`). Without it (missing, failing, garbage, late) the report comes out all
//! the same from the in-process line tables. And the symbolizer must be invisible to the
//! program: from a second thread, under `on_error=abort`, with the standard descriptors closed
//! and no environment, with SIGCHLD ignored or counted, it leaves no child, sends no SIGCHLD,
//! inherits no descriptor.
//!
//! The C program is `tests/c/inline.c` (built with -O2), the Rust one `tests/rust/inline_uaf.rs`
//! (built with -O); their marked lines (`LINE:tag`) give the expected line numbers.

#[path = "support/reports.rs"]
mod support;

use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::{files_in, library, parse_report, report_dir, target_dir, Frame, TextReport};

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The line of `file` (under tests/) marked `LINE:tag`.
fn line_of(file: &str, tag: &str) -> u32 {
    let text = std::fs::read_to_string(tests_dir().join(file)).unwrap();
    let needle = format!("LINE:{tag} ");
    let alt = format!("LINE:{tag}\n");
    let i = text
        .lines()
        .position(|l| l.contains(&needle) || format!("{l}\n").ends_with(&alt))
        .unwrap_or_else(|| panic!("no LINE:{tag} in {file}"));
    i as u32 + 1
}

fn work_dir() -> PathBuf {
    let dir = target_dir()
        .join("inline-tests")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `tests/c/inline.c` at -O2, once per test process.
fn c_program() -> &'static Path {
    static PROG: OnceLock<PathBuf> = OnceLock::new();
    PROG.get_or_init(|| {
        let out = work_dir().join("inline");
        let gcc = ufence_testkit::require_command("gcc", "gcc");
        let st = Command::new(gcc)
            .args(["-O2", "-g", "-pthread", "-Wl,--build-id", "-o"])
            .arg(&out)
            .arg(tests_dir().join("c/inline.c"))
            .status()
            .expect("gcc");
        assert!(st.success(), "gcc failed");
        out
    })
}

/// The `ufence` binary beside the library the tests preload (the symbolizer it finds itself).
fn ufence_binary() -> PathBuf {
    let p = library().parent().unwrap().join("ufence");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build --release`",
        p.display()
    );
    p
}

/// Options for every run: sample every 16-byte request (the objects of the programs; the
/// threads' churn allocates 32 bytes and so never takes the bug's slot), and give the
/// symbolizer the longest wait there is: under `cargo test` it may be a debug build, on a
/// machine busy with other tests.
const EVERY16: &str =
    "sample_rate=1:max_overhead=0:skip_covered_thresh=100:sample_sizes=16:symbolizer_timeout=4000";

fn run(prog: &Path, mode: &str, extra: &str) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(prog)
        .arg(mode)
        .env_remove("UFENCE_OPTIONS")
        .env("LD_PRELOAD", library())
        .env("UFENCE_OPTIONS", format!("{EVERY16}:{extra}"))
        .output()
        .expect("running the test program");
    (out, start.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_frame(
    f: Option<&Frame>,
    function: &str,
    file: &str,
    tag: &str,
    inlined: bool,
    ctx: &str,
) {
    let f = f.unwrap_or_else(|| panic!("no frame for {function}\n{ctx}"));
    assert_eq!(f.function, function, "{ctx}");
    assert_eq!(
        f.short_location(),
        Some(format!(
            "{}:{}",
            file.rsplit('/').next().unwrap(),
            line_of(file, tag)
        )),
        "{function}\n{ctx}"
    );
    assert_eq!(f.inlined, inlined, "{function} inlined?\n{ctx}");
    // The inlined function's line carries no module (it is the same address as the next).
    assert_eq!(f.module.is_some(), !inlined, "{function}\n{ctx}");
}

/// The report of the C program with the symbolizer at work: the accessor and the constructor
/// have frames of their own, marked inlined, above the function they were inlined into.
#[track_caller]
fn assert_inline_report(r: &TextReport, ctx: &str) {
    assert_eq!(r.title, "use-after-free read in get_value", "{ctx}");
    assert_frame(
        r.access.first(),
        "get_value",
        "c/inline.c",
        "get_value",
        true,
        ctx,
    );
    assert_frame(
        r.access.get(1),
        "run_bug",
        "c/inline.c",
        "call_get",
        false,
        ctx,
    );
    assert_frame(
        r.alloc.first(),
        "new_obj",
        "c/inline.c",
        "new_obj",
        true,
        ctx,
    );
    assert_frame(
        r.alloc.get(1),
        "run_bug",
        "c/inline.c",
        "call_new",
        false,
        ctx,
    );
    assert_eq!(
        r.free.first().map(|f| f.function.as_str()),
        Some("run_bug"),
        "{ctx}"
    );
    assert!(!r.free[0].inlined, "{ctx}");
}

/// The same report from the in-process line tables alone, as before: the caller's name with
/// the inlined accessor's line.
#[track_caller]
fn assert_fallback_report(r: &TextReport, ctx: &str) {
    assert_eq!(r.title, "use-after-free read in run_bug", "{ctx}");
    let top = &r.access[0];
    assert_eq!(top.function, "run_bug", "{ctx}");
    assert!(!top.inlined, "{ctx}");
    assert_eq!(
        top.short_location(),
        Some(format!("inline.c:{}", line_of("c/inline.c", "get_value"))),
        "{ctx}"
    );
    assert!(
        r.access
            .iter()
            .chain(&r.alloc)
            .chain(&r.free)
            .all(|f| !f.inlined),
        "{ctx}"
    );
}

#[test]
fn inlined_functions_have_frames_of_their_own() {
    ufence_binary();
    // No symbolizer option: the preload finds the `ufence` beside itself.
    let (out, _) = run(c_program(), "plain", "");
    let text = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(42),
        "a child was left behind\n{text}"
    );
    let r = parse_report(&text);
    assert_inline_report(&r, &text);
    // Numbered as the sanitizers number them: each function its own #N.
    let numbers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(" #"))
        .take(3)
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(numbers, ["#0", "#1", "#2"], "{text}");
}

#[test]
fn without_a_symbolizer_the_line_tables_stand() {
    for (what, option) in [
        ("disabled", "symbolizer=0".to_string()),
        (
            "missing",
            format!("symbolizer={}/no-such-ufence", work_dir().display()),
        ),
        (
            "not executable",
            format!("symbolizer={}", tests_dir().join("c/inline.c").display()),
        ),
    ] {
        let (out, _) = run(c_program(), "plain", &option);
        let text = stderr(&out);
        let ctx = format!("{what}:\n{text}");
        assert_eq!(out.status.code(), Some(42), "{ctx}");
        assert_fallback_report(&parse_report(&text), &ctx);
    }
}

/// Writes an executable shell script (run with no environment: absolute paths only).
fn script(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = work_dir().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn a_symbolizer_that_hangs_is_killed_at_the_deadline() {
    let pid_file = work_dir().join("hang.pid");
    let _ = std::fs::remove_file(&pid_file);
    let fake = script(
        "hang.sh",
        &format!("echo $$ > {}\nexec /bin/sleep 60\n", pid_file.display()),
    );
    let (out, took) = run(
        c_program(),
        "plain",
        &format!("symbolizer={}:symbolizer_timeout=300", fake.display()),
    );
    let text = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(42),
        "a child was left behind\n{text}"
    );
    assert_fallback_report(&parse_report(&text), &text);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "took {took:?}\n{text}"
    );
    // The fake ran, and is gone: killed and reaped, not left to sleep.
    let pid = std::fs::read_to_string(&pid_file).expect("the fake symbolizer ran");
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the fake symbolizer {} is still there",
        pid.trim()
    );
}

#[test]
fn a_symbolizer_that_answers_garbage_is_ignored_and_sees_nothing_of_the_program() {
    let fds = work_dir().join("fds");
    let env = work_dir().join("env");
    let fake = script(
        "garbage.sh",
        &format!(
            "/bin/ls /proc/self/fd > {}\n/usr/bin/env > {}\necho 'ufence-frames 1'\necho '0\tF\tnot a number'\n",
            fds.display(),
            env.display()
        ),
    );
    let (out, _) = run(
        c_program(),
        "plain",
        &format!("symbolizer={}", fake.display()),
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(42), "{text}");
    assert_fallback_report(&parse_report(&text), &text);
    // Its stdin, stdout and stderr, plus the directory ls reads: not the program's 77.
    let fds = std::fs::read_to_string(&fds).expect("the fake symbolizer ran");
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert!(
        !fds.contains(&"77"),
        "inherited the program's descriptor: {fds:?}"
    );
    assert!(fds.len() <= 4, "{fds:?}");
    let env = std::fs::read_to_string(&env).unwrap();
    assert!(
        !env.contains("LD_PRELOAD") && !env.contains("UFENCE_OPTIONS"),
        "the symbolizer must not run under the preload: {env}"
    );
}

#[test]
fn a_fault_in_a_second_thread_while_others_allocate() {
    let sym = format!("symbolizer={}", ufence_binary().display());
    let (out, _) = run(c_program(), "threads", &sym);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(42), "{text}");
    let r = parse_report(&text);
    assert_inline_report(&r, &text);
    assert_eq!(
        r.access.get(2).map(|f| f.function.as_str()),
        Some("bug_thread"),
        "{text}"
    );
}

#[test]
fn on_error_abort_reports_inlined_functions_then_aborts() {
    let sym = format!("symbolizer={}", ufence_binary().display());
    let (out, _) = run(c_program(), "plain", &format!("{sym}:on_error=abort"));
    let text = stderr(&out);
    assert_eq!(out.status.signal(), Some(libc_sigabrt()), "{text}");
    assert_inline_report(&parse_report(&text), &text);
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn sigchld_ignored_or_counted_by_the_program() {
    let sym = format!("symbolizer={}", ufence_binary().display());
    for mode in ["sigign", "sigcount"] {
        let (out, _) = run(c_program(), mode, &sym);
        let text = stderr(&out);
        let ctx = format!("{mode}:\n{text}");
        assert_eq!(out.status.code(), Some(42), "{ctx}");
        assert_inline_report(&parse_report(&text), &ctx);
        // The program's handler never ran: no SIGCHLD came from ufence's processes.
        assert!(text.contains("sigchld=0\n"), "{ctx}");
    }
}

#[test]
fn standard_descriptors_closed_and_no_environment() {
    let dir = report_dir("inline-closed");
    let sym = format!("symbolizer={}", ufence_binary().display());
    let (out, _) = run(
        c_program(),
        "closed",
        &format!("{sym}:report_dir={}", dir.display()),
    );
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    let files = files_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let v: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(v["function"], "get_value", "{v:#}");
    let top = &v["access"]["stack"][0];
    assert_eq!(top["function"], "run_bug", "{v:#}");
    assert_eq!(top["line"], line_of("c/inline.c", "call_get"), "{v:#}");
    let inl = &top["inlined"];
    assert_eq!(inl.as_array().map(Vec::len), Some(1), "{v:#}");
    assert_eq!(inl[0]["function"], "get_value");
    assert_eq!(inl[0]["line"], line_of("c/inline.c", "get_value"));
    assert!(inl[0]["file"].as_str().unwrap().ends_with("inline.c"));
    let alloc = &v["object"]["allocated"]["stack"][0];
    assert_eq!(alloc["inlined"][0]["function"], "new_obj", "{v:#}");
    assert_eq!(alloc["line"], line_of("c/inline.c", "call_new"), "{v:#}");
    // A frame with nothing inlined says so: an empty list, not null (null = not asked).
    let free = &v["object"]["freed"]["stack"][0];
    assert_eq!(free["inlined"], serde_json::json!([]), "{v:#}");
}

#[test]
fn rust_release_build_titles_the_inlined_accessor() {
    let src = tests_dir().join("rust/inline_uaf.rs");
    let bin = work_dir().join("inline_uaf");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let st = Command::new(rustc)
        .args(["-O", "-g", "--edition", "2021", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("rustc");
    assert!(st.success());
    let sym = format!("symbolizer={}", ufence_binary().display());
    let (out, _) = run(&bin, "", &sym);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(42), "{text}");
    let r = parse_report(&text);
    assert_eq!(
        r.title, "use-after-free read in inline_uaf::expiry",
        "{text}"
    );
    // Innermost first: std's read_volatile, then the accessor, then the function holding them.
    assert_eq!(r.access[0].function, "core::ptr::read_volatile", "{text}");
    assert!(r.access[0].inlined, "{text}");
    assert_frame(
        r.access.get(1),
        "inline_uaf::expiry",
        "rust/inline_uaf.rs",
        "expiry",
        true,
        &text,
    );
    assert_frame(
        r.access.get(2),
        "inline_uaf::check",
        "rust/inline_uaf.rs",
        "call_expiry",
        false,
        &text,
    );
    let open = r
        .alloc
        .iter()
        .position(|f| f.function == "inline_uaf::open_session")
        .unwrap_or_else(|| panic!("no open_session frame\n{text}"));
    assert_frame(
        r.alloc.get(open),
        "inline_uaf::open_session",
        "rust/inline_uaf.rs",
        "open_session",
        true,
        &text,
    );
    assert_frame(
        r.alloc.get(open + 1),
        "inline_uaf::check",
        "rust/inline_uaf.rs",
        "call_open",
        false,
        &text,
    );
}
