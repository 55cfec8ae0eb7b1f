//! The `ufence` command from the outside: exit statuses, errors, the demo, and the docs.

mod common;
use common::{assert_quiet_on_closed_pipe, lib, root, text};

use std::path::Path;
use std::process::{Command, Output};

fn ufence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(args)
        .env("UFENCE_LIB", lib())
        .env_remove("UFENCE_OPTIONS")
        .output()
        .expect("run ufence")
}

#[test]
fn run_returns_the_programs_status() {
    let out = ufence(&["run", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let out = ufence(&["run", "--", "sh", "-c", "kill -SEGV $$"]);
    assert_eq!(out.status.code(), Some(128 + 11), "{}", text(&out.stderr));
    let out = ufence(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_preloads_and_passes_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(["run", "--sample_rate", "1", "--on-error", "abort", "--"])
        .args(["sh", "-c", "echo \"$LD_PRELOAD|$UFENCE_OPTIONS\""])
        .env("UFENCE_LIB", lib())
        .env("LD_PRELOAD", "")
        .env("UFENCE_OPTIONS", "num_objects=9")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    let lib = lib().canonicalize().unwrap();
    // Reports name inlined functions through this very binary (option `symbolizer`).
    let exe = Path::new(env!("CARGO_BIN_EXE_ufence"))
        .canonicalize()
        .unwrap();
    assert_eq!(
        shown.trim(),
        format!(
            "{}|num_objects=9:sample_rate=1:on_error=abort:symbolizer={}",
            lib.display(),
            exe.display()
        )
    );
    // A symbolizer chosen on the command line or in UFENCE_OPTIONS stands.
    for (args, env, expected) in [
        (&["--symbolizer", "0"][..], "", "symbolizer=0"),
        (&[][..], "symbolizer=/opt/ufence", "symbolizer=/opt/ufence"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
            .arg("run")
            .args(args)
            .args(["--", "sh", "-c", "echo \"$UFENCE_OPTIONS\""])
            .env("UFENCE_LIB", lib.as_os_str())
            .env("UFENCE_OPTIONS", env)
            .output()
            .unwrap();
        assert_eq!(text(&out.stdout).trim(), expected, "{args:?} {env}");
    }
}

#[test]
fn run_catches_a_bug_in_a_program() {
    // The demo's workload, run as any program would be; every allocation sampled, whatever the
    // cost (its own start-up allocates a lot, which could use up the governor's grace).
    let exe = env!("CARGO_BIN_EXE_ufence");
    let every = ["run", "--sample_rate", "1", "--max_overhead", "0"];
    let out = ufence(&[&every[..], &["--", exe, "__demo-workload", "uaf"]].concat());
    let err = text(&out.stderr);
    assert!(
        err.contains("BUG: UFENCE: use-after-free read in ufence::demo::session_expiry"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(0), "continue mode: {err}");
    let abort = ["--on_error", "abort", "--", exe, "__demo-workload", "uaf"];
    let out = ufence(&[&every[..], &abort].concat());
    assert_eq!(out.status.code(), Some(128 + 6), "abort mode");
}

/// As env(1) and timeout(1): 127 when the program is not there, 126 when it cannot be run, so
/// that a script tells them from the program's own statuses; one line each.
#[test]
fn run_not_found_is_127_not_executable_is_126() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("run-126");
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    let plain = plain.to_str().unwrap();
    for (args, code, line) in [
        (
            &["run", "--", "/no/such/program"][..],
            127,
            "ufence: cannot run '/no/such/program': No such file or directory (os error 2)",
        ),
        (
            &["run", "no-such-program-anywhere"][..],
            127,
            "ufence: cannot run 'no-such-program-anywhere': No such file or directory (os error 2)",
        ),
        (
            &["run", "--", plain][..],
            126,
            &format!("ufence: cannot run '{plain}': Permission denied (os error 13)"),
        ),
        (
            &["run", "--", "/etc"][..],
            126,
            "ufence: cannot run '/etc': Permission denied (os error 13)",
        ),
    ] {
        let out = ufence(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert_eq!(text(&out.stderr), format!("{line}\n"), "{args:?}");
    }
    // After --, a leading '-' is a program's name, not an option.
    let out = ufence(&["run", "--", "-no-such"]);
    assert_eq!(out.status.code(), Some(127));
}

/// `--exitcode` through `ufence run`: the demo's workload finds a use-after-free and exits 0;
/// with exitcode=23 the run fails with 23, and `run --help` tells how to use it in tests.
#[test]
fn run_exitcode_fails_a_run_that_found_a_bug() {
    let exe = env!("CARGO_BIN_EXE_ufence");
    let every = ["run", "--sample_rate", "1", "--max_overhead", "0"];
    let out = ufence(
        &[
            &every[..],
            &["--exitcode", "23", "--", exe, "__demo-workload", "uaf"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(23), "{}", text(&out.stderr));
    let out = ufence(&[&every[..], &["--exitcode", "23", "--", "true"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let help = text(&ufence(&["run", "--help"]).stdout);
    assert!(
        help.contains("ufence run --sample_rate 1 --max_overhead 0 --exitcode 23 -- ./my-tests"),
        "{help}"
    );
    assert!(
        help.contains("127 if PROGRAM is not found, 126 if it"),
        "{help}"
    );
}

/// Option values with spaces, `:`, `,` and quotes pass through `ufence run` whole (quoted in
/// UFENCE_OPTIONS): a report_dir at such a path receives the JSON report, and a value that
/// looks like more options stays one value.
#[test]
fn run_passes_values_with_separators_and_quotes_whole() {
    let exe = env!("CARGO_BIN_EXE_ufence");
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quoted dirs");
    let _ = std::fs::remove_dir_all(&base);
    let every = ["run", "--sample_rate", "1", "--max_overhead", "0"];
    for name in [
        "my reports",
        "a:b,c",
        "it's here",
        "say \"hi\"",
        "x=1:enabled=0",
    ] {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        let out = ufence(
            &[
                &every[..],
                &["--report_dir", d, "--", exe, "__demo-workload", "uaf"],
            ]
            .concat(),
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {err}");
        assert!(!err.contains("warning"), "{name}: {err}");
        assert!(
            err.contains("BUG: UFENCE: use-after-free read"),
            "{name}: {err}"
        );
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(files.len(), 1, "{name}: no report in {d}\n{err}");
        // Reports hold command lines and host names: the owner's only, whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        let mode = files[0].metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // A value cannot switch detection off by carrying an option inside it.
    let out = ufence(
        &[
            &every[..],
            &[
                "--skip",
                "zzz:enabled=0",
                "--",
                exe,
                "__demo-workload",
                "uaf",
            ],
        ]
        .concat(),
    );
    let err = text(&out.stderr);
    assert!(err.contains("BUG: UFENCE: use-after-free read"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // The same through UFENCE_OPTIONS written by hand.
    let dir = base.join("by hand, quoted");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(exe)
        .args(["__demo-workload", "uaf"])
        .env("LD_PRELOAD", lib())
        .env(
            "UFENCE_OPTIONS",
            format!(
                "sample_rate=1 max_overhead=0 report_dir='{}'",
                dir.display()
            ),
        )
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("BUG: UFENCE"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

/// A value `ufence run` cannot quote (it holds both quote characters), or an inherited
/// UFENCE_OPTIONS whose open quote would swallow the options appended after it: one line,
/// status 2, the program never runs.
#[test]
fn run_refuses_values_it_cannot_pass() {
    let out = ufence(&["run", "--skip", "a'b\"c", "--", "sh", "-c", "echo ran"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "ufence: the value of --skip cannot be passed in UFENCE_OPTIONS: it holds both ' and \"\n"
    );
    assert_eq!(text(&out.stdout), "");
    let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(["run", "--sample_rate", "1", "--", "sh", "-c", "echo ran"])
        .env("UFENCE_LIB", lib())
        .env("UFENCE_OPTIONS", "skip='abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "ufence: UFENCE_OPTIONS has an unbalanced quote in 'skip='abc'; fix it or unset it\n"
    );
    assert_eq!(text(&out.stdout), "");
}

/// A `sample_sizes` range above max_object_size, where nothing is ever sampled, is accepted but
/// said in one warning line; a range that reaches below it is not.
#[test]
fn sample_sizes_beyond_a_page_warn() {
    let out = ufence(&["run", "--sample_sizes", "65537-70000", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "ufence: warning: sample_sizes=65537-70000 can never be sampled (objects over 65536 bytes never are: max_object_size, num_large_objects): nothing will be sampled\n"
    );
    let out = ufence(&[
        "run",
        "--num_large_objects",
        "0",
        "--sample_sizes",
        "4097-5000",
        "--",
        "true",
    ]);
    assert!(text(&out.stderr).contains("objects over 4096 bytes never are"));
    for fine in ["100-5000", "4096", "4097-65536"] {
        let out = ufence(&["run", "--sample_sizes", fine, "--", "true"]);
        assert_eq!(text(&out.stderr), "", "{fine}");
    }
}

#[test]
fn bad_input_is_one_clear_line() {
    for (args, needle) in [
        (
            &["run", "--sample_rate", "often", "--", "true"][..],
            "bad value 'often' for --sample_rate (expects an integer from 0 to 1000000000)",
        ),
        (
            &["run", "--bogus", "1", "--", "true"][..],
            "unknown option '--bogus' for run",
        ),
        (
            &["run", "--sample-rat=1", "--", "true"][..],
            "unknown option '--sample-rat' for run",
        ),
        (
            &["run", "--lib", "/no/such/libufence.so", "--", "true"][..],
            "/no/such/libufence.so not found",
        ),
    ] {
        let out = ufence(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn demo_catches_both_bugs() {
    let out = ufence(&["demo"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("caught: use-after-free read in ufence::demo::session_expiry"));
    assert!(
        shown.contains("caught: out-of-bounds write in ufence::demo::copy_name")
            // A left-placed buffer: the damaged canary is found where it is freed.
            || shown.contains("caught: memory corruption in ufence::demo::workload"),
        "{shown}"
    );
    assert!(shown.contains("both bugs caught"));
}

#[test]
fn readme_lists_every_option_as_declared() {
    let out = ufence(&["options", "--markdown"]);
    let table = text(&out.stdout);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for row in table.lines().skip(2) {
        assert!(
            readme.contains(row),
            "README is missing or has another text for:\n{row}"
        );
    }
}

/// `ufence options | head -1`, `ufence demo | head -1`: quiet on a closed pipe (SIGPIPE).
#[test]
fn options_and_demo_end_quietly_on_a_closed_pipe() {
    for args in [&["options"][..], &["options", "--markdown"], &["demo"]] {
        assert_quiet_on_closed_pipe(
            Command::new(env!("CARGO_BIN_EXE_ufence"))
                .args(args)
                .env("UFENCE_LIB", lib()),
        );
    }
}
