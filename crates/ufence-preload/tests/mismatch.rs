//! Alloc-dealloc mismatch: a sampled object remembers which family of routines allocated it
//! (malloc, operator new, operator new[]) and is reported when another family releases it.
//! The program is `tests/c/mismatch.cc`; its marked lines (`LINE:tag`) give expected lines.

#[path = "support/reports.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::{library, parse_report, target_dir, EVERY};

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/mismatch.cc")
}

fn program() -> &'static Path {
    static PROG: OnceLock<PathBuf> = OnceLock::new();
    PROG.get_or_init(|| {
        let dir = target_dir().join("preload-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join(format!("mismatch-{}", std::process::id()));
        let out = Command::new(ufence_testkit::require_command("g++", "g++"))
            .args(["-g", "-O1", "-Wno-mismatched-new-delete", "-o"])
            .arg(&prog)
            .arg(source())
            .output()
            .expect("running g++");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        prog
    })
}

fn line_of(tag: &str) -> String {
    let text = std::fs::read_to_string(source()).unwrap();
    let needle = format!("LINE:{tag}");
    let i = text.lines().position(|l| l.contains(&needle)).unwrap();
    format!("mismatch.cc:{}", i + 1)
}

fn run(args: &[&str], options: Option<&str>) -> Output {
    let mut cmd = Command::new(program());
    cmd.args(args).env_remove("UFENCE_OPTIONS");
    if let Some(o) = options {
        cmd.env("LD_PRELOAD", library())
            .env("UFENCE_OPTIONS", format!("{EVERY}:{o}"));
    }
    cmd.output().expect("running the test program")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn each_mismatch_names_both_routines_and_both_stacks() {
    let cases = [
        (
            "new_free",
            "operator new",
            "free",
            "make_scalar",
            "release_free",
        ),
        (
            "malloc_delete",
            "malloc",
            "operator delete",
            "make_malloc",
            "release_scalar",
        ),
        (
            "newarr_delete",
            "operator new[]",
            "operator delete",
            "make_array",
            "release_scalar",
        ),
        (
            "new_deletearr",
            "operator new",
            "operator delete[]",
            "make_scalar",
            "release_array",
        ),
        (
            "alignedarr_delete",
            "operator new[](align_val_t)",
            "operator delete",
            "make_aligned_array",
            "release_scalar",
        ),
        (
            "new_realloc",
            "operator new",
            "realloc",
            "make_scalar",
            "release_realloc",
        ),
    ];
    for (mode, alloc, dealloc, maker, releaser) in cases {
        let out = run(&[mode], Some(""));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{mode}\n{err}");
        let r = parse_report(&err);
        assert_eq!(
            r.title,
            format!("alloc-dealloc mismatch in {releaser}(void*)"),
            "{err}"
        );
        assert!(
            r.headline.starts_with(&format!(
                "Alloc-dealloc mismatch ({alloc} vs {dealloc}) of 0x"
            )),
            "{err}"
        );
        assert!(r.headline.contains("(in ufence-#"), "{err}");
        assert!(r.access[0].function.starts_with(releaser), "{err}");
        assert_eq!(
            r.access[0].short_location(),
            Some(line_of(releaser)),
            "{err}"
        );
        assert!(r.alloc[0].function.starts_with(maker), "{err}");
        assert_eq!(r.alloc[0].short_location(), Some(line_of(maker)), "{err}");
        assert_eq!(text(&out.stdout), "done\n", "{mode}");
    }
}

#[test]
fn a_mismatched_object_is_released_all_the_same() {
    // One slot: the next sampled malloc lands on the same page only if the slot was released.
    let out = run(&["newarr_delete", "again"], Some("num_objects=1"));
    let err = text(&out.stderr);
    assert_eq!(
        parse_report(&err).title,
        "alloc-dealloc mismatch in release_scalar(void*)"
    );
    assert_eq!(text(&out.stdout), "same page 1\ndone\n", "{err}");
}

#[test]
fn the_check_can_be_turned_off_and_aborts_under_on_error_abort() {
    for mode in ["new_free", "newarr_delete", "malloc_delete"] {
        let out = run(&[mode], Some("alloc_dealloc_mismatch=0"));
        assert_eq!(text(&out.stderr), "", "{mode}");
        assert_eq!(text(&out.stdout), "done\n");
        assert_eq!(out.status.code(), Some(0));
        let out = run(&[mode], Some("on_error=abort"));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{mode}");
        assert!(text(&out.stderr).contains("BUG: UFENCE: alloc-dealloc mismatch"));
        assert_eq!(text(&out.stdout), "");
    }
}

#[test]
fn every_operator_form_used_correctly_stays_clean_and_identical() {
    let plain = run(&["clean"], None);
    assert!(plain.status.success());
    for opts in ["", "num_objects=8", "sample_rate=3"] {
        let out = run(&["clean"], Some(opts));
        assert_eq!(text(&out.stderr), "", "{opts}");
        assert_eq!(out.stdout, plain.stdout, "{opts}");
        assert!(out.status.success());
    }
}

#[test]
fn the_json_report_says_the_same() {
    let dir = support::report_dir("mismatch");
    let out = run(
        &["newarr_delete"],
        Some(&format!("report_dir={}", dir.display())),
    );
    let err = text(&out.stderr);
    let files = support::files_in(&dir);
    assert_eq!(files.len(), 1, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(v["kind"], "alloc-dealloc-mismatch");
    assert_eq!(v["title"], "alloc-dealloc mismatch");
    assert_eq!(v["function"], "release_scalar(void*)");
    assert_eq!(v["access"]["type"], "free");
    let desc = v["access"]["description"].as_str().unwrap();
    assert!(
        desc.starts_with("Alloc-dealloc mismatch (operator new[] vs operator delete) of 0x"),
        "{desc}"
    );
    assert_eq!(v["object"]["state"], "allocated");
    assert!(err.contains(desc), "{err}");
}
