//! The fast stack walk (cached unwind rules, `fast_unwind=1`, the default) against libgcc's
//! (`fast_unwind=0`) on real programs under the preload: the same report, frame for frame, for
//! C at -O0/-O1/-O2 with and without frame pointers (through the C library's qsort and memcpy,
//! and a shared library) and for C++; and right stacks after a library is unloaded and another
//! loaded at its address. Also what the sampled path caches besides unwind rules: thread ids
//! (right in forked children) and names (right after a rename).

#[path = "support/reports.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

/// Reports of `prog MODE` with the fast walk and with libgcc's: the same title and stacks.
fn same_reports(what: &str, prog: &Path, mode: &str) {
    let report = |fast: u8| {
        let out = run(prog, mode, &format!("fast_unwind={fast}"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(42), "{what} {mode}:\n{stderr}");
        (parse_report(&stderr), stderr)
    };
    let (fast, fast_text) = report(1);
    let (slow, slow_text) = report(0);
    let ctx =
        format!("{what} {mode}\n--- fast_unwind=1\n{fast_text}\n--- fast_unwind=0\n{slow_text}");
    assert_eq!(fast.title, slow.title, "{ctx}");
    assert_eq!(fast.access, slow.access, "{ctx}");
    assert_eq!(fast.alloc, slow.alloc, "{ctx}");
    assert_eq!(fast.free, slow.free, "{ctx}");
    assert!(fast.alloc.len() >= 2 && !fast.access.is_empty(), "{ctx}");
    assert!(fast.alloc.iter().any(|f| f.function == "main"), "{ctx}");
}

#[test]
fn c_programs_get_the_same_stacks_from_both_walks() {
    for (variant, flags) in [
        ("fp", &["-O1", "-fno-omit-frame-pointer"][..]),
        ("nofp", &["-O2", "-fomit-frame-pointer"][..]),
        ("O0", &["-O0"][..]),
    ] {
        let b = build(variant, flags);
        for mode in ["uaf", "oob", "memcpy", "qsort", "helper"] {
            same_reports(variant, &b.prog, mode);
        }
    }
}

fn compile(compiler: &str, out: &Path, args: &[&str]) {
    let st = Command::new(ufence_testkit::require_command(compiler, compiler))
        .args(args)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "{compiler} {args:?}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = target_dir()
        .join("unwind-tests")
        .join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn c_source(path: &str) -> String {
    workspace_root()
        .join("crates/ufence-preload/tests/c")
        .join(path)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn cplusplus_gets_the_same_stacks_from_both_walks() {
    let dir = scratch("cxx");
    for (name, opt) in [("cxx-O2", "-O2"), ("cxx-O0", "-O0")] {
        let prog = dir.join(name);
        compile("g++", &prog, &["-g", opt, "-pthread", &c_source("cxx.cc")]);
        for mode in ["uaf", "array_oob", "double_delete"] {
            same_reports(name, &prog, mode);
        }
    }
}

fn line_in(file: &str, tag: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap();
    let needle = format!("LINE:{tag} ");
    text.lines().position(|l| l.contains(&needle)).expect("tag") as u32 + 1
}

/// liba.so allocates (every allocation sampled, so its unwind rules are cached), is unloaded,
/// and libb.so, the same instructions with other frame sizes, is loaded at its address: the
/// allocation stack of an object made through libb is libb's `make`, then `via`, then `main`.
/// (With liba's rules, the walk would stop inside `make`.)
#[test]
fn a_library_loaded_where_another_was_unloaded_gets_its_own_stacks() {
    let dir = scratch("dlswap");
    for lib in ["liba", "libb"] {
        compile(
            "gcc",
            &dir.join(format!("{lib}.so")),
            &["-shared", "-fPIC", &c_source(&format!("unwind/{lib}.s"))],
        );
    }
    let src = c_source("unwind/dlswap.c");
    let prog = dir.join("dlswap");
    compile("gcc", &prog, &["-g", "-O1", &src, "-ldl"]);
    let out = run(&prog, dir.to_str().unwrap(), "");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = format!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    assert!(
        stdout.contains("same_base=1"),
        "libb.so was not loaded where liba.so was: {ctx}"
    );
    let r = parse_report(&stderr);
    assert_eq!(r.title, "use-after-free read in main", "{ctx}");
    let names: Vec<&str> = r.alloc.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(
        &names[..3.min(names.len())],
        ["make", "via", "main"],
        "{ctx}"
    );
    assert_eq!(r.alloc[0].module_name(), Some("libb.so"), "{ctx}");
    let at = |tag| format!("dlswap.c:{}", line_in(&src, tag));
    assert_eq!(r.alloc[1].short_location(), Some(at("via")), "{ctx}");
    assert_eq!(r.alloc[2].short_location(), Some(at("main")), "{ctx}");
}

/// The report of `names MODE`'s use-after-free: its stderr and the pid it printed.
fn names_run(mode: &str) -> (String, String) {
    let dir = scratch(&format!("names-{mode}"));
    let prog = dir.join("names");
    compile(
        "gcc",
        &prog,
        &["-g", "-O1", "-pthread", &c_source("unwind/names.c")],
    );
    let out = run(&prog, mode, "");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid in {stdout}"))
        .to_string();
    (stderr, pid)
}

/// Thread names are read once and kept, yet a thread renamed through `prctl` or
/// `pthread_setname_np` is named by its new name in the next record.
#[test]
fn records_name_a_renamed_thread_by_its_new_name() {
    for (mode, name) in [("prctl", "renamed-prctl"), ("setname", "renamed-np")] {
        let (stderr, pid) = names_run(mode);
        let want = format!("allocated by thread {pid} ({name}) at");
        assert!(stderr.contains(&want), "{mode}: want {want:?} in\n{stderr}");
    }
}

/// Thread ids are read once per thread, yet a forked child's records carry its own id, with
/// or without the fork handlers.
#[test]
fn records_in_a_forked_child_carry_its_id() {
    for mode in ["fork", "rawfork"] {
        let (stderr, pid) = names_run(mode);
        let want = format!("allocated by thread {pid} (names) at");
        assert!(stderr.contains(&want), "{mode}: want {want:?} in\n{stderr}");
        let freed = format!("freed by thread {pid} (names) at");
        assert!(
            stderr.contains(&freed),
            "{mode}: want {freed:?} in\n{stderr}"
        );
    }
}
