//! Stack traces that say where: text reports name functions and file:line (in the program,
//! in the C library, in a shared library of our own), with and without frame pointers; JSON
//! reports (`report_dir`) follow `docs/report-schema.json`, agree with the text, and carry a
//! signature that is stable across runs and differs between bugs.
//!
//! The program is `tests/c/reports/reports.c` (and `helper.c`, built as a shared library), whose
//! marked lines (`LINE:tag`) give the expected line numbers.

#[path = "support/reports.rs"]
mod support;

use serde_json::Value;
use std::path::Path;
use support::*;

/// The two builds every stack test runs against: unwinding must not depend on frame pointers
/// (Debian's glibc has none either way).
fn variants() -> [(&'static str, Built); 2] {
    [
        (
            "frame pointers",
            build("fp", &["-O1", "-fno-omit-frame-pointer"]),
        ),
        (
            "no frame pointers",
            build("nofp", &["-O2", "-fomit-frame-pointer"]),
        ),
    ]
}

fn report_of(prog: &Path, mode: &str, extra: &str) -> (TextReport, String) {
    let out = run(prog, mode, extra);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(42), "{mode}: {stdout}\n{stderr}");
    (parse_report(&stderr), stderr)
}

fn libc_debug_file_installed() -> bool {
    let id = build_id(Path::new("/lib/x86_64-linux-gnu/libc.so.6"));
    Path::new(&format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ))
    .is_file()
}

/// Asserts that `frame` is `function` at `file:line` (file by its last component).
#[track_caller]
fn assert_frame(frame: Option<&Frame>, function: &str, file: &str, tag: &str, ctx: &str) {
    let frame = frame.unwrap_or_else(|| panic!("no frame for {function}\n{ctx}"));
    assert_eq!(frame.function, function, "{ctx}");
    assert_eq!(
        frame.short_location(),
        Some(format!("{file}:{}", line_of(file, tag))),
        "{function}\n{ctx}"
    );
}

#[test]
fn text_reports_name_functions_and_lines() {
    for (what, b) in variants() {
        let (r, text) = report_of(&b.prog, "uaf", "");
        let ctx = format!("{what}:\n{text}");
        assert_eq!(r.title, "use-after-free read in use_object", "{ctx}");
        assert_frame(
            r.access.first(),
            "use_object",
            "reports.c",
            "use_object",
            &ctx,
        );
        assert_frame(r.access.get(1), "main", "reports.c", "main_uaf", &ctx);
        assert_frame(
            r.alloc.first(),
            "make_object",
            "reports.c",
            "make_object",
            &ctx,
        );
        assert_frame(
            r.free.first(),
            "drop_object",
            "reports.c",
            "drop_object",
            &ctx,
        );
        // Every frame keeps its module and offset, for offline symbolization.
        for f in r.access.iter().chain(&r.alloc).chain(&r.free) {
            assert!(f.module.is_some(), "{f:?}\n{ctx}");
        }
        assert_eq!(r.access[0].module_name(), Some("reports"), "{ctx}");
    }
}

#[test]
fn frames_inside_the_c_library_are_named() {
    for (what, b) in variants() {
        // A use-after-free read inside memcpy: the access stack starts in libc.
        let (r, text) = report_of(&b.prog, "memcpy", "");
        let ctx = format!("{what}:\n{text}");
        assert_eq!(r.access[0].module_name(), Some("libc.so.6"), "{ctx}");
        // memcpy's implementation is a local symbol: named from libc's separate debug file
        // (Debian's libc6-dbg) when it is installed, else shown as module+offset.
        if libc_debug_file_installed() {
            assert!(r.access[0].function.contains("mem"), "{ctx}");
        } else {
            assert!(r.access[0].function.starts_with("0x"), "{ctx}");
        }
        assert!(r.title.starts_with("use-after-free read in "), "{ctx}");
        assert_frame(r.access.get(1), "copy_from", "reports.c", "copy_from", &ctx);
        assert_frame(r.access.get(2), "main", "reports.c", "main_memcpy", &ctx);

        // A use-after-free in a qsort callback: libc frames between ours.
        let (r, text) = report_of(&b.prog, "qsort", "");
        let ctx = format!("{what}:\n{text}");
        assert_eq!(r.title, "use-after-free read in compare", "{ctx}");
        assert_frame(r.access.first(), "compare", "reports.c", "compare", &ctx);
        let sort = r
            .access
            .iter()
            .position(|f| f.function == "sort_numbers")
            .unwrap_or_else(|| panic!("no sort_numbers frame\n{ctx}"));
        assert_frame(
            r.access.get(sort),
            "sort_numbers",
            "reports.c",
            "sort_numbers",
            &ctx,
        );
        let libc = &r.access[1..sort];
        assert!(!libc.is_empty(), "{ctx}");
        // Functions inlined in libc (msort_with_tmp, with libc's debug file) have lines of
        // their own without a module: the next line, the function holding them, has it.
        assert!(
            libc.iter()
                .filter(|f| !f.inlined)
                .all(|f| f.module_name() == Some("libc.so.6")),
            "{ctx}"
        );
        assert!(
            libc.iter().any(|f| f.function.contains("qsort")),
            "qsort's frame should be named: {ctx}"
        );
    }
}

#[test]
fn frames_in_our_shared_library_are_named() {
    for (what, b) in variants() {
        let (r, text) = report_of(&b.prog, "helper", "");
        let ctx = format!("{what}:\n{text}");
        assert_eq!(r.title, "use-after-free write in helper_poke", "{ctx}");
        assert_frame(
            r.access.first(),
            "helper_poke",
            "helper.c",
            "helper_poke",
            &ctx,
        );
        assert_eq!(
            r.access[0].module_name(),
            Some("libreports_helper.so"),
            "{ctx}"
        );
        assert_frame(
            r.access.get(1),
            "main",
            "reports.c",
            "main_helper_poke",
            &ctx,
        );
        assert_frame(
            r.alloc.first(),
            "helper_alloc",
            "helper.c",
            "helper_alloc",
            &ctx,
        );
        assert_frame(
            r.alloc.get(1),
            "main",
            "reports.c",
            "main_helper_alloc",
            &ctx,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// JSON reports
// ---------------------------------------------------------------------------------------------

fn schema() -> Value {
    let text = std::fs::read_to_string(workspace_root().join("docs/report-schema.json")).unwrap();
    serde_json::from_str(&text).expect("the schema is JSON")
}

/// Validates `v` against the subset of JSON Schema (2020-12) that docs/report-schema.json
/// uses; panics on a keyword it does not know, so the schema cannot silently outgrow it.
fn validate(v: &Value, s: &Value, root: &Value, at: &str, errors: &mut Vec<String>) {
    let obj = s.as_object().expect("schema objects");
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local refs");
        return validate(v, &root["$defs"][name], root, at, errors);
    }
    for (k, want) in obj {
        match k.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" | "properties" => {}
            "type" => {
                let types: Vec<&str> = match want {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("bad type"),
                };
                let ok = types.iter().any(|t| match *t {
                    "object" => v.is_object(),
                    "array" => v.is_array(),
                    "string" => v.is_string(),
                    "integer" => v.is_u64() || v.is_i64(),
                    "null" => v.is_null(),
                    _ => panic!("type {t}"),
                });
                if !ok {
                    errors.push(format!("{at}: {v} is not {types:?}"));
                }
            }
            "const" => {
                if v != want {
                    errors.push(format!("{at}: {v} != {want}"));
                }
            }
            "enum" => {
                if !want.as_array().unwrap().contains(v) {
                    errors.push(format!("{at}: {v} not in {want}"));
                }
            }
            "required" => {
                for key in want.as_array().unwrap() {
                    if v.is_object() && v.get(key.as_str().unwrap()).is_none() {
                        errors.push(format!("{at}: missing {key}"));
                    }
                }
            }
            "additionalProperties" => {
                let Some(o) = v.as_object() else { continue };
                let props = obj.get("properties").and_then(Value::as_object);
                for (key, val) in o {
                    if let Some(p) = props.and_then(|p| p.get(key)) {
                        validate(val, p, root, &format!("{at}.{key}"), errors);
                    } else if want == &Value::Bool(false) {
                        errors.push(format!("{at}: unexpected {key}"));
                    } else {
                        validate(val, want, root, &format!("{at}.{key}"), errors);
                    }
                }
            }
            "items" => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    validate(item, want, root, &format!("{at}[{i}]"), errors);
                }
            }
            "maxItems" => {
                if v.as_array()
                    .is_some_and(|a| a.len() as u64 > want.as_u64().unwrap())
                {
                    errors.push(format!("{at}: too many items"));
                }
            }
            "minimum" => {
                if v.as_u64().is_none() && v.is_number() {
                    errors.push(format!("{at}: {v} below {want}"));
                } else if let (Some(x), Some(m)) = (v.as_u64(), want.as_u64()) {
                    if x < m {
                        errors.push(format!("{at}: {x} below {m}"));
                    }
                }
            }
            "pattern" => {
                let Some(text) = v.as_str() else { continue };
                let hex = |t: &str| {
                    !t.is_empty() && t.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
                };
                let ok = match want.as_str().unwrap() {
                    "^0x[0-9a-f]+$" => text.strip_prefix("0x").is_some_and(hex),
                    "^[0-9a-f]+$" => hex(text),
                    "^[0-9a-f]{16}$" => text.len() == 16 && hex(text),
                    p => panic!("pattern {p}"),
                };
                if !ok {
                    errors.push(format!("{at}: {text} does not match {want}"));
                }
            }
            "oneOf" => {
                let matching = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|alt| {
                        let mut e = Vec::new();
                        validate(v, alt, root, at, &mut e);
                        e.is_empty()
                    })
                    .count();
                if matching != 1 {
                    errors.push(format!("{at}: {v} matches {matching} of oneOf"));
                }
            }
            other => panic!("schema keyword {other} not supported by the test's validator"),
        }
    }
    // Properties are checked above when additionalProperties is given; otherwise here.
    if !obj.contains_key("additionalProperties") {
        if let (Some(props), Some(o)) = (
            obj.get("properties").and_then(Value::as_object),
            v.as_object(),
        ) {
            for (key, p) in props {
                if let Some(val) = o.get(key) {
                    validate(val, p, root, &format!("{at}.{key}"), errors);
                }
            }
        }
    }
}

#[track_caller]
fn assert_valid(v: &Value, file: &Path) {
    let s = schema();
    let mut errors = Vec::new();
    validate(v, &s, &s, "$", &mut errors);
    assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
}

/// Runs MODE with `report_dir` and returns the single JSON report and the text report.
fn json_report(prog: &Path, mode: &str, name: &str) -> (Value, TextReport, String) {
    let dir = report_dir(name);
    let (text, stderr) = report_of(prog, mode, &format!("report_dir={}", dir.display()));
    let files = files_in(&dir);
    assert_eq!(files.len(), 1, "one file, no temporary left: {files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("ufence-") && name.ends_with(".json"),
        "{name}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", files[0].display()));
    assert_valid(&v, &files[0]);
    (v, text, stderr)
}

/// The frames of a JSON stack as the text report shows them: each frame's inlined functions
/// (innermost first), then the frame's function.
fn as_text_frames(stack: &Value) -> Vec<(String, Option<String>)> {
    let loc = |f: &Value| match (f["file"].as_str(), f["line"].as_u64()) {
        (Some(file), Some(line)) => Some(format!("{}:{line}", file.rsplit('/').next().unwrap())),
        _ => None,
    };
    let mut out = Vec::new();
    for f in stack.as_array().unwrap() {
        for inl in f["inlined"].as_array().into_iter().flatten() {
            out.push((inl["function"].as_str().unwrap().to_string(), loc(inl)));
        }
        let function = f["function"].as_str().map(str::to_string);
        out.push((
            function.unwrap_or_else(|| f["pc"].as_str().unwrap().to_string()),
            loc(f),
        ));
    }
    out
}

fn text_frames(frames: &[Frame]) -> Vec<(String, Option<String>)> {
    frames
        .iter()
        .map(|f| (f.function.clone(), f.short_location()))
        .collect()
}

#[test]
fn json_reports_follow_the_schema_and_match_the_text() {
    let b = build("fp", &["-O1", "-fno-omit-frame-pointer"]);
    let (v, text, stderr) = json_report(&b.prog, "uaf", "uaf");
    assert_eq!(v["schema"], "ufence-report");
    assert_eq!(v["version"], 1);
    assert_eq!(v["kind"], "use-after-free");
    assert_eq!(v["title"], "use-after-free read");
    assert_eq!(v["function"], "use_object");
    assert_eq!(v["access"]["type"], "read");
    assert_eq!(
        v["access"]["description"].as_str(),
        Some(text.headline.as_str()),
        "{stderr}"
    );
    let obj = &v["object"];
    assert_eq!(obj["size"], 64);
    assert_eq!(obj["alignment"], 16);
    assert_eq!(obj["state"], "freed");
    let start =
        u64::from_str_radix(obj["start"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let end =
        u64::from_str_radix(obj["end"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(end - start, 63);
    assert_eq!(obj["pages"], 1, "a 64-byte object uses one page");
    let addr = u64::from_str_radix(
        v["access"]["address"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_eq!(addr, start + 8, "p[8] is read");
    assert!(
        stderr.contains(&format!(
            "ufence-#{}: {}-{}, size=64, align=16, side={}",
            obj["index"],
            obj["start"].as_str().unwrap(),
            obj["end"].as_str().unwrap(),
            obj["side"].as_str().unwrap()
        )),
        "{stderr}"
    );
    // The three stacks say what the text says.
    assert_eq!(
        as_text_frames(&v["access"]["stack"]),
        text_frames(&text.access)
    );
    assert_eq!(
        as_text_frames(&obj["allocated"]["stack"]),
        text_frames(&text.alloc)
    );
    assert_eq!(
        as_text_frames(&obj["freed"]["stack"]),
        text_frames(&text.free)
    );
    // Raw frames: module path, build-id and offset of the program's own frames.
    let top = &v["access"]["stack"][0];
    assert_eq!(top["module"].as_str(), Some(b.prog.to_str().unwrap()));
    assert_eq!(top["build_id"].as_str(), Some(build_id(&b.prog).as_str()));
    assert_eq!(top["symbol"], "use_object");
    assert_eq!(top["line"], line_of("reports.c", "use_object"));
    let pc = u64::from_str_radix(top["pc"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let off =
        u64::from_str_radix(top["offset"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        (pc - off) % 4096,
        0,
        "offset = pc - load bias (page aligned)"
    );
    // Threads, process, options, stats.
    let tid = obj["allocated"]["thread"]["tid"].as_u64().unwrap();
    assert_eq!(v["thread"]["tid"].as_u64(), Some(tid));
    assert_eq!(
        v["process"]["pid"].as_u64(),
        Some(tid),
        "single-threaded: tid == pid"
    );
    assert_eq!(v["thread"]["name"], "reports");
    assert_eq!(
        v["process"]["cmdline"],
        serde_json::json!([b.prog.to_str().unwrap(), "uaf"])
    );
    assert_eq!(
        v["process"]["executable"].as_str(),
        Some(b.prog.to_str().unwrap())
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(v["process"]["hostname"].as_str(), Some(host.trim()));
    assert_eq!(v["options"]["sample_rate"], "1");
    assert!(v["options"]["report_dir"]
        .as_str()
        .unwrap()
        .ends_with("-out-uaf"));
    assert_eq!(v["stats"]["total bugs"], 1);
    assert!(v["stats"]["total allocations"].as_u64().unwrap() >= 1);
    let alloc_ns = obj["allocated"]["since_start_ns"].as_u64().unwrap();
    let free_ns = obj["freed"]["since_start_ns"].as_u64().unwrap();
    assert!(alloc_ns <= free_ns && free_ns <= v["time"]["since_start_ns"].as_u64().unwrap());
}

#[test]
fn json_reports_of_other_kinds_validate() {
    let b = build("fp", &["-O1", "-fno-omit-frame-pointer"]);
    for mode in ["oob", "memcpy", "qsort", "helper"] {
        let (v, text, stderr) = json_report(&b.prog, mode, mode);
        assert_eq!(
            as_text_frames(&v["access"]["stack"]),
            text_frames(&text.access),
            "{stderr}"
        );
        if mode == "oob" {
            // One fault whichever side the object is on (see reports.c).
            assert_eq!(v["kind"], "out-of-bounds", "{stderr}");
            assert_eq!(v["access"]["type"], "write");
            assert_eq!(v["function"], "write_past");
        }
        if mode == "helper" {
            let top = &v["access"]["stack"][0];
            assert_eq!(top["module"].as_str(), Some(b.helper.to_str().unwrap()));
            assert_eq!(top["build_id"].as_str(), Some(build_id(&b.helper).as_str()));
            assert_eq!(v["access"]["type"], "write");
        }
    }
}

#[test]
fn signatures_are_stable_across_runs_and_differ_between_bugs() {
    let fp = build("fp", &["-O1", "-fno-omit-frame-pointer"]);
    let nofp = build("nofp", &["-O2", "-fomit-frame-pointer"]);
    let sig = |prog: &Path, mode: &str, name: &str| {
        let (v, _, _) = json_report(prog, mode, name);
        v["signature"].as_str().unwrap().to_string()
    };
    let a = sig(&fp.prog, "uaf", "sig-a");
    let b = sig(&fp.prog, "uaf", "sig-b");
    assert_eq!(a, b, "two runs (different ASLR layouts) of the same bug");
    // The same source built differently: names, not offsets, enter the signature.
    assert_eq!(a, sig(&nofp.prog, "uaf", "sig-c"));
    let others = [
        sig(&fp.prog, "memcpy", "sig-d"),
        sig(&fp.prog, "qsort", "sig-e"),
        sig(&fp.prog, "helper", "sig-f"),
        sig(&fp.prog, "oob", "sig-g"),
    ];
    let mut all = vec![a.clone()];
    all.extend(others.iter().cloned());
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "different bugs, different signatures: {all:?}"
    );
}

#[test]
fn an_unwritable_report_dir_costs_one_warning_line() {
    let b = build("fp", &["-O1", "-fno-omit-frame-pointer"]);
    let (r, stderr) = report_of(&b.prog, "uaf", "report_dir=/nonexistent/ufence-reports");
    assert_eq!(r.title, "use-after-free read in use_object");
    let warnings: Vec<_> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("cannot write a JSON report to /nonexistent/ufence-reports"),
        "{stderr}"
    );
}
