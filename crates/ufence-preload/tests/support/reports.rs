//! Shared by the report tests (`ufence-preload/tests/reports.rs`) and the offline
//! symbolization tests (`ufence-cli/tests/symbolize.rs`): locating libufence.so, building the
//! test program of `tests/c/reports/` (with its shared library) in several variants, running
//! it, and reading text reports.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

pub fn sources() -> PathBuf {
    workspace_root().join("crates/ufence-preload/tests/c/reports")
}

fn newest(paths: impl Iterator<Item = PathBuf>) -> Option<(SystemTime, PathBuf)> {
    paths
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
}

fn sources_modified() -> Option<SystemTime> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    for krate in ["crates/ufence", "crates/ufence-preload"] {
        walk(&workspace_root().join(krate).join("src"), &mut files);
        files.push(workspace_root().join(krate).join("Cargo.toml"));
    }
    newest(files.into_iter()).map(|(t, _)| t)
}

/// libufence.so: the newest of the debug and release builds, (re)built with cargo when there
/// is none or it is older than the sources (cargo cannot depend on a cdylib).
pub fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let candidates = || {
            ["debug", "release"]
                .into_iter()
                .map(|p| target_dir().join(p).join("libufence.so"))
        };
        let fresh = newest(candidates()).filter(|(t, _)| Some(*t) >= sources_modified());
        if fresh.is_none() {
            let release = newest(candidates())
                .is_some_and(|(_, p)| p.starts_with(target_dir().join("release")));
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "ufence-preload"])
                .current_dir(workspace_root());
            if release {
                cmd.arg("--release");
            }
            let out = cmd.output().expect("cargo build -p ufence-preload");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        newest(candidates())
            .expect("libufence.so after cargo build")
            .1
    })
}

/// A built variant of the test program.
#[derive(Clone, Debug)]
pub struct Built {
    pub dir: PathBuf,
    /// The program, `reports`, linked against `libreports_helper.so` beside it.
    pub prog: PathBuf,
    pub helper: PathBuf,
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles the program with `flags` (plus `-g`), once per variant name and test process.
pub fn build(variant: &str, flags: &[&str]) -> Built {
    static BUILT: OnceLock<Mutex<HashMap<String, Built>>> = OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = map.get(variant) {
        return b.clone();
    }
    let dir = target_dir()
        .join("report-tests")
        .join(format!("{}-{variant}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = sources();
    let helper = dir.join("libreports_helper.so");
    sh(Command::new(ufence_testkit::require_command("gcc", "gcc"))
        .args(["-g", "-fPIC", "-shared", "-Wl,--build-id"])
        .args(flags)
        .arg("-o")
        .arg(&helper)
        .arg(src.join("helper.c")));
    let prog = dir.join("reports");
    sh(Command::new(ufence_testkit::require_command("gcc", "gcc"))
        .args(["-g", "-fno-optimize-sibling-calls", "-Wl,--build-id"])
        .args(flags)
        .arg("-o")
        .arg(&prog)
        .arg(src.join("reports.c"))
        .arg("-L")
        .arg(&dir)
        .args(["-lreports_helper", "-Wl,-rpath,$ORIGIN"]));
    let b = Built { dir, prog, helper };
    map.insert(variant.to_string(), b.clone());
    b
}

/// The line of the source file marked `LINE:tag`.
pub fn line_of(file: &str, tag: &str) -> u32 {
    let text = std::fs::read_to_string(sources().join(file)).unwrap();
    let needle = format!("LINE:{tag} ");
    let i = text
        .lines()
        .position(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no LINE:{tag} in {file}"));
    i as u32 + 1
}

/// Sampling every allocation, whatever the cost.
pub const EVERY: &str = "sample_rate=1:max_overhead=0:skip_covered_thresh=100";

/// Runs `prog MODE` under the preload with `EVERY` plus `extra` options.
pub fn run(prog: &Path, mode: &str, extra: &str) -> Output {
    Command::new(prog)
        .arg(mode)
        .env_remove("UFENCE_OPTIONS")
        .env("LD_PRELOAD", library())
        .env("UFENCE_OPTIONS", format!("{EVERY}:{extra}"))
        .output()
        .expect("running the test program")
}

/// One frame of a text report: ` #N function+0xOFF (file:line, module+0xOFF)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    /// `file:line` when shown.
    pub location: Option<String>,
    /// `module+0xoff`, when shown.
    pub module: Option<String>,
    pub inlined: bool,
}

impl Frame {
    /// `file_name:line` (the file's last component) for comparisons.
    pub fn short_location(&self) -> Option<String> {
        let loc = self.location.as_ref()?;
        Some(loc.rsplit('/').next().unwrap_or(loc).to_string())
    }
    pub fn module_name(&self) -> Option<&str> {
        let m = self.module.as_ref()?;
        let m = &m[..m.rfind("+0x")?];
        Some(m.rsplit('/').next().unwrap_or(m))
    }
}

pub fn parse_frame(line: &str) -> Option<Frame> {
    let rest = line.strip_prefix(" #")?;
    let (num, rest) = rest.split_once(' ')?;
    num.parse::<u32>().ok()?;
    let (head, paren) = match rest.find(" (") {
        Some(i) if rest.ends_with(')') => (&rest[..i], Some(&rest[i + 2..rest.len() - 1])),
        _ => (rest, None),
    };
    let function = match head.rfind("+0x") {
        Some(i) if head[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &head[..i],
        _ => head,
    };
    let mut f = Frame {
        function: function.to_string(),
        location: None,
        module: None,
        inlined: false,
    };
    for part in paren.into_iter().flat_map(|p| p.split(", ")) {
        if part == "inlined" {
            f.inlined = true;
        } else if part.contains("+0x") && !part.contains(':') {
            f.module = Some(part.to_string());
        } else {
            f.location = Some(part.to_string());
        }
    }
    Some(f)
}

/// The sections of a text report: title, headline, access, allocation and free stacks.
#[derive(Debug, Default)]
pub struct TextReport {
    pub title: String,
    pub headline: String,
    pub access: Vec<Frame>,
    pub alloc: Vec<Frame>,
    pub free: Vec<Frame>,
}

/// Parses the one report in `text` (panics if there is not exactly one).
pub fn parse_report(text: &str) -> TextReport {
    let rule = "==================================================================";
    let starts = text
        .lines()
        .filter(|l| l.starts_with("BUG: UFENCE: "))
        .count();
    assert_eq!(starts, 1, "expected one report:\n{text}");
    let mut r = TextReport::default();
    let mut section = 0;
    for line in text.lines() {
        if line == rule {
            continue;
        }
        if let Some(t) = line.strip_prefix("BUG: UFENCE: ") {
            r.title = t.to_string();
        } else if line.starts_with("allocated by thread") {
            section = 2;
        } else if line.starts_with("freed by thread") {
            section = 3;
        } else if let Some(f) = parse_frame(line) {
            match section {
                1 => r.access.push(f),
                2 => r.alloc.push(f),
                3 => r.free.push(f),
                _ => {}
            }
        } else if !r.title.is_empty() && r.headline.is_empty() && !line.is_empty() {
            r.headline = line.to_string();
            section = 1;
        }
    }
    r
}

/// The GNU build-id of a file, as hex (from ufence's own ELF reader).
pub fn build_id(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    let elf = ufence_core::dwarf::Elf::parse(&data).expect("an ELF file");
    elf.build_id()
        .expect("a build-id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh empty directory under target/ for one test's JSON reports.
pub fn report_dir(name: &str) -> PathBuf {
    let dir = target_dir()
        .join("report-tests")
        .join(format!("{}-out-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The files in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
