//! `free` of memory that was never on the heap: the C library behind ufence aborts (`free():
//! invalid pointer`) or faults inside the `free` ufence forwarded to it. ufence reports an
//! `invalid free` with the freeing stack, then the process ends exactly as it would have (same
//! signal); a program's own SIGABRT handler still runs, and still reads back as its own.
//! Program: `tests/c/nonheap.c`.

#[path = "support/reports.rs"]
mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::{library, parse_report, target_dir};

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/nonheap.c")
}

fn program() -> &'static Path {
    static PROG: OnceLock<PathBuf> = OnceLock::new();
    PROG.get_or_init(|| {
        let dir = target_dir().join("preload-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join(format!("nonheap-{}", std::process::id()));
        let out = Command::new(ufence_testkit::require_command("gcc", "gcc"))
            .args(["-g", "-O1", "-Wno-free-nonheap-object", "-o"])
            .arg(&prog)
            .arg(source())
            .output()
            .expect("running gcc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        prog
    })
}

/// Runs the program plain (`None`) or under the preload, sampling nothing: these pointers are
/// the C library's business.
fn run(args: &[&str], preload: bool) -> Output {
    let mut cmd = Command::new(program());
    cmd.args(args).env_remove("UFENCE_OPTIONS");
    if preload {
        cmd.env("LD_PRELOAD", library())
            .env("UFENCE_OPTIONS", "sample_interval=0");
    }
    cmd.output().expect("running the test program")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn release_line() -> String {
    let text = std::fs::read_to_string(source()).unwrap();
    let i = text
        .lines()
        .position(|l| l.contains("LINE:release"))
        .unwrap();
    format!("nonheap.c:{}", i + 1)
}

#[test]
fn free_of_stack_static_mmap_and_interior_memory_is_named_and_ends_as_before() {
    for (mode, faulted) in [
        ("stack", None),
        ("static", None),
        ("mmap", Some("not mapped")),
        ("interior", None),
    ] {
        let plain = run(&[mode], false);
        let out = run(&[mode], true);
        let err = text(&out.stderr);
        assert_eq!(text(&out.stdout), "", "{mode}");
        let r = parse_report(&err);
        assert_eq!(r.title, "invalid free in release", "{mode}: {err}");
        assert_eq!(r.access[0].function, "release", "{err}");
        assert_eq!(r.access[0].short_location(), Some(release_line()), "{err}");
        assert_eq!(r.access[1].function, "main", "{err}");
        if mode == "interior" {
            // What glibc makes of an interior pointer depends on the bytes before it, which
            // differ from run to run: it aborts or faults, and so does the process.
            assert!(
                matches!(out.status.signal(), Some(libc::SIGABRT | libc::SIGSEGV)),
                "{err}"
            );
            continue;
        }
        // The same end: the signal the C library's free ended the plain run with.
        assert!(plain.status.signal().is_some(), "{mode}: {plain:?}");
        assert_eq!(out.status.signal(), plain.status.signal(), "{mode}: {err}");
        match faulted {
            None => assert_eq!(
                r.headline, "Invalid free: the C library's free rejected the pointer and aborted:",
                "{mode}"
            ),
            Some(what) => {
                assert!(
                    r.headline
                        .starts_with("Invalid free: the C library's free faulted at 0x")
                        && r.headline.ends_with(&format!("({what}):")),
                    "{mode}: {}",
                    r.headline
                )
            }
        }
        // The C library's own message is still there, before the report.
        if faulted.is_none() {
            assert_eq!(
                err.lines().next(),
                text(&plain.stderr).lines().next(),
                "{mode}"
            );
        }
    }
}

#[test]
fn a_programs_own_sigabrt_handler_still_runs_and_reads_back() {
    // A plain abort: no report, the handler runs, as without ufence.
    for args in [&["abort", "handler"][..], &["static", "handler"][..]] {
        let plain = run(args, false);
        let out = run(args, true);
        assert_eq!(plain.status.code(), Some(7), "{args:?}");
        assert_eq!(
            out.status.code(),
            Some(7),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(out.stdout, plain.stdout);
        let reported = text(&out.stderr).contains("BUG: UFENCE: invalid free in release");
        assert_eq!(
            reported,
            args[0] == "static",
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["abort"], true);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    assert!(!text(&out.stderr).contains("UFENCE"));
    let plain = run(&["readback"], false);
    let out = run(&["readback"], true);
    assert_eq!(text(&plain.stdout), "default 1\nours 1\n");
    assert_eq!(out.stdout, plain.stdout, "{}", text(&out.stderr));
}

#[test]
fn cxx_delete_of_static_memory_is_named() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/nonheap.cc");
    let prog = target_dir()
        .join("preload-tests")
        .join(format!("nonheap-cxx-{}", std::process::id()));
    std::fs::create_dir_all(prog.parent().unwrap()).unwrap();
    let out = Command::new(ufence_testkit::require_command("g++", "g++"))
        .args(["-g", "-O1", "-Wno-free-nonheap-object", "-o"])
        .arg(&prog)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plain = Command::new(&prog).output().unwrap();
    let out = Command::new(&prog)
        .env("LD_PRELOAD", library())
        .env("UFENCE_OPTIONS", "sample_interval=0")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.signal(), plain.status.signal(), "{err}");
    let r = parse_report(&err);
    // C++ names stay mangled in this report: demangling allocates, and the C library may hold
    // its allocator's lock where it aborted.
    assert!(
        r.title.starts_with("invalid free in ") && r.title.contains("destroy"),
        "{err}"
    );
    let line = std::fs::read_to_string(&src)
        .unwrap()
        .lines()
        .position(|l| l.contains("LINE:destroy"))
        .unwrap();
    assert_eq!(
        r.access[0].short_location(),
        Some(format!("nonheap.cc:{}", line + 1)),
        "{err}"
    );
}
