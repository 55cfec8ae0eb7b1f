//! `ufence symbolize`: JSON reports printed as text, symbolized offline by build-id, including
//! for a stripped binary given its debug file; bad input gets one clear line, never a panic.

#[path = "../../ufence-preload/tests/support/reports.rs"]
mod support;

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use support::*;

fn ufence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(args)
        .output()
        .expect("run ufence")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A stripped copy of the program (no .symtab, no DWARF) with its debug file beside, and the
/// JSON report of its use-after-free.
struct Stripped {
    prog: PathBuf,
    debug: PathBuf,
    report: PathBuf,
}

fn stripped() -> &'static Stripped {
    static S: std::sync::OnceLock<Stripped> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let b = build("cli", &["-O1"]);
        let prog = b.dir.join("reports-stripped");
        let debug = b.dir.join("debug").join("reports.debug");
        std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        ok(
            Command::new(ufence_testkit::require_command("objcopy", "binutils"))
                .arg("--only-keep-debug")
                .arg(&b.prog)
                .arg(&debug),
        );
        ok(
            Command::new(ufence_testkit::require_command("strip", "binutils"))
                .arg("--strip-all")
                .arg("-o")
                .arg(&prog)
                .arg(&b.prog),
        );
        let dir = report_dir("cli-stripped");
        let out = run(&prog, "uaf", &format!("report_dir={}", dir.display()));
        assert_eq!(out.status.code(), Some(42), "{}", text(&out.stderr));
        // In the process, the stripped program's frames have no names.
        assert!(
            text(&out.stderr).contains("BUG: UFENCE: use-after-free read in reports-stripped+0x"),
            "{}",
            text(&out.stderr)
        );
        let files = files_in(&dir);
        assert_eq!(files.len(), 1);
        Stripped {
            prog,
            debug,
            report: files[0].clone(),
        }
    })
}

fn assert_symbolized(stdout: &str) {
    let r = parse_report(stdout);
    assert_eq!(r.title, "use-after-free read in use_object", "{stdout}");
    let want = |tag| format!("reports.c:{}", line_of("reports.c", tag));
    let top = &r.access[0];
    assert_eq!(top.function, "use_object", "{stdout}");
    assert_eq!(top.short_location(), Some(want("use_object")), "{stdout}");
    assert_eq!(top.module_name(), Some("reports-stripped"), "{stdout}");
    let main = r
        .access
        .iter()
        .find(|f| f.function == "main")
        .expect("main");
    assert_eq!(main.short_location(), Some(want("main_uaf")), "{stdout}");
    assert_eq!(r.alloc[0].function, "make_object", "{stdout}");
    assert_eq!(r.alloc[0].short_location(), Some(want("make_object")));
    assert_eq!(r.free[0].function, "drop_object", "{stdout}");
    assert_eq!(r.free[0].short_location(), Some(want("drop_object")));
    assert!(
        stdout.contains("Use-after-free read at 0x"),
        "the headline is kept: {stdout}"
    );
}

#[test]
fn a_stripped_binarys_report_symbolizes_with_its_debug_file() {
    let s = stripped();
    let dir = s.debug.parent().unwrap().to_str().unwrap();
    let out = ufence(&["symbolize", s.report.to_str().unwrap(), "--debug-dir", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_symbolized(&text(&out.stdout));
}

#[test]
fn the_build_id_tree_layout_is_searched() {
    let s = stripped();
    let id = build_id(&s.prog);
    let root = s.debug.parent().unwrap().parent().unwrap().join("tree");
    let _ = std::fs::remove_dir_all(&root);
    let at = root
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(&s.debug, &at).unwrap();
    let out = ufence(&[
        "symbolize",
        s.report.to_str().unwrap(),
        "--debug-dir",
        root.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_symbolized(&text(&out.stdout));
}

#[test]
fn an_unstripped_binary_in_the_debug_dir_works_too() {
    let s = stripped();
    let b = build("cli", &["-O1"]);
    let only = b.dir.join("unstripped-only");
    let _ = std::fs::remove_dir_all(&only);
    std::fs::create_dir_all(&only).unwrap();
    std::fs::copy(&b.prog, only.join("reports")).unwrap();
    let out = ufence(&[
        "symbolize",
        s.report.to_str().unwrap(),
        "--debug-dir",
        only.to_str().unwrap(),
    ]);
    assert_symbolized(&text(&out.stdout));
}

/// The report with every frame of the program's module changed by `f`.
fn edited(name: &str, f: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let s = stripped();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.report).unwrap()).unwrap();
    fn walk(v: &mut serde_json::Value, module: &str, f: &dyn Fn(&mut serde_json::Value)) {
        match v {
            serde_json::Value::Object(o) => {
                if o.get("module").and_then(|m| m.as_str()) == Some(module) {
                    f(v);
                    return;
                }
                for (_, x) in o.iter_mut() {
                    walk(x, module, f);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, module, f)),
            _ => {}
        }
    }
    walk(&mut v, s.prog.to_str().unwrap(), &f);
    let path = s.report.with_file_name(name);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    path
}

#[test]
fn a_wrong_build_id_is_named_and_frames_stay_raw() {
    let s = stripped();
    let path = edited("wrong-id.json", |f| {
        f["build_id"] = "00112233445566778899aabbccddeeff00112233".into();
    });
    let dir = s.debug.parent().unwrap().to_str().unwrap();
    let out = ufence(&["symbolize", path.to_str().unwrap(), "--debug-dir", dir]);
    let err = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "the report still prints: {err}");
    assert_eq!(err.lines().count(), 1, "one note per module: {err}");
    assert!(
        err.contains(&format!(
            "{} has build-id {}, not the report's 00112233445566778899aabbccddeeff00112233",
            s.prog.display(),
            build_id(&s.prog)
        )),
        "{err}"
    );
    let r = parse_report(&stdout);
    assert!(r.access[0].function.starts_with("0x"), "{stdout}");
    assert!(r.access[0]
        .module
        .as_ref()
        .unwrap()
        .contains("reports-stripped+0x"));
}

#[test]
fn a_missing_module_is_named_and_frames_stay_raw() {
    let path = edited("missing.json", |f| {
        f["module"] = "/no/such/dir/reports".into();
    });
    let out = ufence(&["symbolize", path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("module /no/such/dir/reports (build-id "),
        "{err}"
    );
    assert!(err.contains("not found"), "{err}");
    let r = parse_report(&text(&out.stdout));
    assert_eq!(
        r.access[0]
            .module
            .as_deref()
            .map(|m| m.starts_with("/no/such/dir/reports+0x")),
        Some(true)
    );
}

#[test]
fn bad_files_get_one_line_each_and_the_others_still_print() {
    let s = stripped();
    let dir = s.debug.parent().unwrap();
    let good = std::fs::read(&s.report).unwrap();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.json", good[..good.len() / 2].to_vec(), "invalid JSON"),
        ("deep.json", "[".repeat(100_000).into_bytes(), "invalid JSON"),
        ("binary.json", vec![0xff, 0xfe, 0, 1, 2], "invalid JSON"),
        ("other.json", br#"{"hello": "world"}"#.to_vec(), "not a ufence report"),
        (
            "future.json",
            br#"{"schema": "ufence-report", "version": 99}"#.to_vec(),
            "version 99 is not supported",
        ),
        (
            "hostile.json",
            br#"{"schema":"ufence-report","version":1,"kind":"x","title":"y","access":{"stack":[{"module":5,"offset":"0xzz","build_id":[]},7,null]},"object":{"index":"a","allocated":{"stack":"no"}}}"#.to_vec(),
            "",
        ),
    ];
    let mut args = vec![
        "symbolize".to_string(),
        s.report.to_str().unwrap().to_string(),
    ];
    for (name, bytes, _) in &bad {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        args.push(p.to_str().unwrap().to_string());
    }
    args.push("/no/such/report.json".into());
    args.push(s.report.to_str().unwrap().to_string());
    args.extend(["--debug-dir".to_string(), dir.to_str().unwrap().to_string()]);
    let out = Command::new(env!("CARGO_BIN_EXE_ufence"))
        .args(&args)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a file failed: {err}");
    // The good report printed twice, and the hostile but well-formed one printed as far as
    // it goes.
    assert_eq!(
        stdout
            .matches("BUG: UFENCE: use-after-free read in use_object")
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("BUG: UFENCE: y in "), "{stdout}");
    let lines: Vec<&str> = err.lines().collect();
    for (name, _, why) in bad.iter().filter(|b| !b.2.is_empty()) {
        let mine: Vec<_> = lines.iter().filter(|l| l.contains(name)).collect();
        assert_eq!(mine.len(), 1, "{name}: {err}");
        assert!(mine[0].contains(why), "{name}: {err}");
    }
    assert!(
        err.contains("ufence: /no/such/report.json: cannot read it"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn symbolize_needs_a_file() {
    let out = ufence(&["symbolize"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("REPORT.json"));
}

/// `ufence symbolize *.json | head -1`: ends quietly (SIGPIPE) when the reader has gone.
#[test]
fn symbolize_ends_quietly_on_a_closed_pipe() {
    let s = stripped();
    let dir = s.debug.parent().unwrap().to_str().unwrap();
    common::assert_quiet_on_closed_pipe(Command::new(env!("CARGO_BIN_EXE_ufence")).args([
        "symbolize",
        s.report.to_str().unwrap(),
        "--debug-dir",
        dir,
    ]));
}

/// A report whose thread name, title, module path, function and file carry escape sequences
/// and newlines (the program chose them, or the file was written by someone else): printed
/// escaped, each on the line it belongs to.
#[test]
fn symbolize_escapes_what_the_report_holds() {
    let s = stripped();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.report).unwrap()).unwrap();
    v["title"] = "use-after-free read\x1b]0;TITLE\x07".into();
    v["object"]["allocated"]["thread"]["name"] = "\x1b[2J\nEVIL".into();
    let frame = serde_json::json!({
        "module": "/no/such\x1b[31m\nlib.so",
        "offset": "0x10",
        "pc": "0x1010",
        "function": "evil\x1b[2J\nfn",
        "file": "x\u{9b}31m.c",
        "line": 3
    });
    v["access"]["stack"]
        .as_array_mut()
        .unwrap()
        .insert(0, frame);
    let path = s.report.with_file_name("hostile.json");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let out = ufence(&["symbolize", path.to_str().unwrap()]);
    let shown = text(&out.stdout);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for (what, t) in [("stdout", &shown), ("stderr", &err)] {
        let bad = t
            .chars()
            .find(|&c| (c.is_control() && c != '\n') || ('\u{80}'..='\u{9f}').contains(&c));
        assert!(bad.is_none(), "{what}: {bad:?} in\n{t}");
    }
    assert!(
        shown.contains(
            "BUG: UFENCE: use-after-free read\\x1b]0;TITLE\\x07 in evil\\x1b[2J\\x0afn\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            " #0 evil\\x1b[2J\\x0afn (x\\u{009b}31m.c:3, /no/such\\x1b[31m\\x0alib.so+0x10)\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("allocated by thread ") && shown.contains(" (\\x1b[2J\\x0aEVIL) at "),
        "{shown}"
    );
    assert!(err.contains("/no/such\\x1b[31m\\x0alib.so"), "{err}");
}

/// A frame whose module is not at hand keeps what the process's symbolizer knew: the functions
/// inlined there (innermost first, each its own number, marked inlined), then the function
/// holding them; the title names the innermost one that is not a Rust pointer helper.
#[test]
fn inlined_functions_from_the_process_survive_a_missing_module() {
    let s = stripped();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.report).unwrap()).unwrap();
    let frame = serde_json::json!({
        "module": "/no/such/prog",
        "offset": "0x14b3",
        "pc": "0x14b3",
        "function": "run_bug",
        "function_offset": 35,
        "file": "prog.c",
        "line": 45,
        "inlined": [
            {"function": "core::ptr::read_volatile", "file": "ptr/mod.rs", "line": 2091},
            {"function": "get_value", "file": "prog.c", "line": 27}
        ]
    });
    v["access"]["stack"] = serde_json::json!([frame]);
    let path = s.report.with_file_name("inlined.json");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let out = ufence(&["symbolize", path.to_str().unwrap()]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        shown.contains("BUG: UFENCE: use-after-free read in get_value\n"),
        "{shown}"
    );
    assert!(
        shown.contains(
            " #0 core::ptr::read_volatile (ptr/mod.rs:2091, inlined)\n \
             #1 get_value (prog.c:27, inlined)\n \
             #2 run_bug+0x23 (prog.c:45, /no/such/prog+0x14b3)\n"
        ),
        "{shown}"
    );
}
