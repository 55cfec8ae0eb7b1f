//! Integration tests of `libufence.so`: C and C++ programs (under `tests/c/`) with one
//! memory-safety bug each, correct programs that must behave exactly as without ufence, and
//! real programs not written by us, all run under `LD_PRELOAD`.
//!
//! Cargo cannot link a test against a cdylib, so the library is found on disk:
//! `target/{debug,release}/libufence.so`, the newest of the two, built with
//! `cargo build -p ufence-preload` when neither exists. The test programs are compiled with
//! gcc/g++ once per test process into `target/preload-tests/`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------------------
// Locating the library and building the programs
// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

fn newest_library() -> Option<PathBuf> {
    ["debug", "release"]
        .iter()
        .map(|profile| target_dir().join(profile).join("libufence.so"))
        .filter_map(|p| {
            let modified = p.metadata().ok()?.modified().ok()?;
            Some((modified, p))
        })
        .max()
        .map(|(_, p)| p)
}

/// The newest modification time of the library's sources (both crates' `src/` and manifests).
fn sources_modified() -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(m));
            }
        }
    }
    let root = workspace_root();
    let mut newest = None;
    for krate in ["crates/ufence", "crates/ufence-preload"] {
        walk(&root.join(krate).join("src"), &mut newest);
        if let Ok(m) = root
            .join(krate)
            .join("Cargo.toml")
            .metadata()
            .and_then(|m| m.modified())
        {
            newest = newest.max(Some(m));
        }
    }
    newest
}

fn cargo_build(release: bool) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "ufence-preload"])
        .current_dir(workspace_root());
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("running cargo build -p ufence-preload");
    assert!(
        out.status.success(),
        "cargo build -p ufence-preload failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The preload library: the newest of the debug and release builds. `cargo test` does not
/// build a cdylib, so when there is none, or the newest is older than the sources, it is
/// (re)built here with `cargo build -p ufence-preload` (the tests run after cargo has released
/// its build lock).
fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let stale = |lib: &Path| {
            let built = lib.metadata().and_then(|m| m.modified()).ok();
            built < sources_modified()
        };
        match newest_library() {
            Some(lib) if !stale(&lib) => {}
            Some(lib) => cargo_build(lib.parent().is_some_and(|d| d.ends_with("release"))),
            None => cargo_build(false),
        }
        let lib = newest_library().expect("libufence.so not found after cargo build");
        eprintln!("preload tests: using {}", lib.display());
        lib
    })
}

/// The test programs, by name, compiled from `tests/c/`.
struct Programs {
    dir: PathBuf,
}

impl Programs {
    fn get(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

const SOURCES: &[(&str, &str)] = &[
    ("bugs", "bugs.c"),
    ("large", "large.c"),
    ("aligned", "aligned.c"),
    ("clean", "clean.c"),
    ("churn", "churn.c"),
    ("sigsegv", "sigsegv.c"),
    ("cxx", "cxx.cc"),
    ("hostile", "hostile.c"),
];

fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
        let dir = target_dir().join("preload-tests");
        std::fs::create_dir_all(&dir).expect("creating target/preload-tests");
        let pid = std::process::id();
        // All compilers at once; each writes a temporary file renamed into place, so that
        // concurrent test processes never run a half-written program.
        let jobs: Vec<_> = SOURCES
            .iter()
            .map(|&(name, file)| {
                let compiler = if file.ends_with(".cc") {
                    require_command("g++", "g++")
                } else {
                    require_command("gcc", "gcc")
                };
                let tmp = dir.join(format!(".{name}.{pid}.tmp"));
                let child = Command::new(&compiler)
                    .args(["-g", "-O1", "-pthread", "-o"])
                    .arg(&tmp)
                    .arg(src.join(file))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("running {}: {e}", compiler.display()));
                (name, file, tmp, child)
            })
            .collect();
        for (name, file, tmp, child) in jobs {
            let out = child.wait_with_output().expect("waiting for the compiler");
            assert!(
                out.status.success(),
                "compiling {file} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, dir.join(name)).expect("renaming the compiled program");
        }
        Programs { dir }
    })
}

fn program(name: &str) -> PathBuf {
    programs().get(name)
}

/// The outside tools these tests run: found, installed (as root), or a one-line failure.
use ufence_testkit::require_command;

// ---------------------------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------------------------

/// How a program is run.
#[derive(Clone, Copy, Debug)]
enum Under {
    /// Without the preload.
    Plain,
    /// Under the preload, with no `UFENCE_OPTIONS`: the defaults.
    Defaults,
    /// Under the preload with these `UFENCE_OPTIONS`.
    Options(&'static str),
}

struct Exec {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    under: Under,
}

fn exec(program: impl AsRef<Path>, args: &[&str]) -> Exec {
    Exec {
        program: program.as_ref().to_path_buf(),
        args: args.iter().map(OsString::from).collect(),
        env: Vec::new(),
        stdin: Vec::new(),
        under: Under::Plain,
    }
}

/// A finished run.
struct Out {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

const TIMEOUT: Duration = Duration::from_secs(60);

impl Exec {
    fn under(mut self, under: Under) -> Self {
        self.under = under;
        self
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = data.to_vec();
        self
    }

    fn run(&self) -> Out {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_remove("LD_PRELOAD")
            .env_remove("UFENCE_OPTIONS")
            .env(
                "UFENCE_RUNTIME_DIR",
                concat!(env!("CARGO_TARGET_TMPDIR"), "/rt-preload"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        match self.under {
            Under::Plain => {}
            Under::Defaults => {
                cmd.env("LD_PRELOAD", library());
            }
            Under::Options(opts) => {
                cmd.env("LD_PRELOAD", library()).env("UFENCE_OPTIONS", opts);
            }
        }
        let what = format!(
            "{} {} ({:?})",
            self.program.display(),
            self.args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            self.under
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = self.stdin.clone();
        let feeder = std::thread::spawn(move || {
            // The program may exit without reading: a broken pipe is fine.
            let _ = stdin.write_all(&input);
        });
        let mut out_pipe = child.stdout.take().unwrap();
        let mut err_pipe = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out_pipe.read_to_end(&mut v);
            v
        });
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err_pipe.read_to_end(&mut v);
            v
        });
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the program") {
                break status;
            }
            if start.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish in {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let _ = feeder.join();
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
        Out {
            what,
            status,
            stdout,
            stderr,
        }
    }
}

/// Runs several programs at once.
fn run_all(execs: &[Exec]) -> Vec<Out> {
    std::thread::scope(|s| {
        let handles: Vec<_> = execs.iter().map(|e| s.spawn(|| e.run())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

impl Out {
    fn context(&self) -> String {
        format!(
            "{}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }

    fn reports(&self) -> Vec<Report> {
        parse_reports(&self.stderr).unwrap_or_else(|e| panic!("{e}\n{}", self.context()))
    }

    /// The one report this run must have produced.
    fn single_report(&self) -> Report {
        let mut reports = self.reports();
        assert_eq!(
            reports.len(),
            1,
            "expected exactly one report\n{}",
            self.context()
        );
        reports.pop().unwrap()
    }

    fn assert_exit_code(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit status {code}\n{}",
            self.context()
        );
    }

    fn assert_signal(&self, signal: i32) {
        assert_eq!(
            self.status.signal(),
            Some(signal),
            "expected death by signal {signal}\n{}",
            self.context()
        );
    }

    fn assert_no_report(&self) {
        assert!(
            !self.stderr.contains("BUG: UFENCE"),
            "unexpected ufence report\n{}",
            self.context()
        );
    }

    fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }

    fn assert_line(&self, line: &str) {
        assert!(
            self.has_line(line),
            "no line {line:?} in stdout\n{}",
            self.context()
        );
    }

    /// Every `key=0x...` value printed on stdout, in order.
    fn addresses(&self, key: &str) -> Vec<u64> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|w| w.strip_prefix(&prefix))
            .map(|v| parse_hex(v).unwrap_or_else(|| panic!("bad address {v}\n{}", self.context())))
            .collect()
    }

    fn address(&self, key: &str) -> u64 {
        let v = self.addresses(key);
        assert_eq!(
            v.len(),
            1,
            "expected one {key}= in stdout\n{}",
            self.context()
        );
        v[0]
    }

    /// A decimal `key=N` printed on stdout.
    fn number(&self, key: &str) -> u64 {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .flat_map(|l| l.split_whitespace())
            .find_map(|w| w.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in stdout\n{}", self.context()))
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

// ---------------------------------------------------------------------------------------------
// Parsing reports
// ---------------------------------------------------------------------------------------------

const RULE: &str = "==================================================================";

#[derive(Debug)]
struct Object {
    index: u64,
    start: u64,
    end: u64,
    size: u64,
    align: u64,
    side: String,
}

#[derive(Debug)]
struct Record {
    tid: u64,
    name: String,
    frames: Vec<String>,
}

#[derive(Debug)]
struct Report {
    /// `out-of-bounds read`, `double free`, ...
    kind: String,
    /// The function named in the title.
    function: String,
    /// The line after the title: `Out-of-bounds read at 0x... (1B right of ufence-#3):`.
    headline: String,
    /// Function names of the access (or bad free) stack, innermost first.
    access: Vec<String>,
    object: Option<Object>,
    alloc: Option<Record>,
    free: Option<Record>,
    text: String,
}

/// The function of a stack line ` #0 bug_site+0x0 (/tmp/uaf+0x1187)` (or
/// ` #0 bug_site (uaf.c:4)`): `bug_site`, or `0x...` when it has no name.
fn frame_function(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (num, rest) = rest.split_once(' ')?;
    num.parse::<u32>().ok()?;
    let mut f = rest.trim();
    if f.ends_with(')') {
        if let Some(i) = f.rfind(" (") {
            f = &f[..i];
        }
    }
    if let Some(i) = f.rfind("+0x") {
        if f[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) {
            f = &f[..i];
        }
    }
    Some(f.to_string())
}

fn parse_object(line: &str) -> Option<Object> {
    // ufence-#241: 0x7fe7ab2c5fc0-0x7fe7ab2c5fff, size=64, align=16, side=right
    let rest = line.strip_prefix("ufence-#")?;
    let (index, rest) = rest.split_once(": ")?;
    let mut parts = rest.split(", ");
    let (start, end) = parts.next()?.split_once('-')?;
    let mut field = |name: &str| parts.next()?.strip_prefix(name).map(str::to_string);
    let size = field("size=")?;
    let size = size.strip_suffix(" (0-byte allocation)").unwrap_or(&size);
    let align = field("align=")?;
    let side = field("side=")?;
    Some(Object {
        index: index.parse().ok()?,
        start: parse_hex(start)?,
        end: parse_hex(end)?,
        size: size.parse().ok()?,
        align: align.parse().ok()?,
        side,
    })
}

fn parse_record_header(line: &str, verb: &str) -> Option<(u64, String)> {
    // allocated by thread 2698 (uaf) at 0.000173s:
    let rest = line.strip_prefix(verb)?.strip_prefix(" by thread ")?;
    let (tid, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('(')?;
    let close = rest.rfind(") at ")?;
    Some((tid.parse().ok()?, rest[..close].to_string()))
}

fn parse_reports(stderr: &str) -> Result<Vec<Report>, String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let rules: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == RULE).collect();
    if !rules.len().is_multiple_of(2) {
        return Err(format!(
            "unbalanced report rules ({} rule lines)",
            rules.len()
        ));
    }
    let mut reports = Vec::new();
    for pair in rules.chunks(2) {
        let body = &lines[pair[0] + 1..pair[1]];
        let text = body.join("\n");
        let bad = |why: &str| format!("malformed report ({why}):\n{text}");
        let title = body
            .first()
            .and_then(|l| l.strip_prefix("BUG: UFENCE: "))
            .ok_or_else(|| bad("title"))?;
        let (kind, function) = title.split_once(" in ").ok_or_else(|| bad("title"))?;
        let mut i = 1;
        while i < body.len() && body[i].is_empty() {
            i += 1;
        }
        let headline = body.get(i).ok_or_else(|| bad("headline"))?.to_string();
        i += 1;
        let mut access = Vec::new();
        while i < body.len() {
            match frame_function(body[i]) {
                Some(f) => access.push(f),
                None => break,
            }
            i += 1;
        }
        let mut report = Report {
            kind: kind.to_string(),
            function: function.to_string(),
            headline,
            access,
            object: None,
            alloc: None,
            free: None,
            text: text.clone(),
        };
        let mut current: Option<&mut Record> = None;
        for line in &body[i..] {
            if line.starts_with("ufence-#") {
                report.object = Some(parse_object(line).ok_or_else(|| bad("object line"))?);
                current = None;
            } else if line.starts_with("allocated by") {
                let (tid, name) =
                    parse_record_header(line, "allocated").ok_or_else(|| bad("allocated by"))?;
                report.alloc = Some(Record {
                    tid,
                    name,
                    frames: Vec::new(),
                });
                current = report.alloc.as_mut();
            } else if line.starts_with("freed by") {
                let (tid, name) =
                    parse_record_header(line, "freed").ok_or_else(|| bad("freed by"))?;
                report.free = Some(Record {
                    tid,
                    name,
                    frames: Vec::new(),
                });
                current = report.free.as_mut();
            } else if let Some(f) = frame_function(line) {
                match current.as_deref_mut() {
                    Some(r) => r.frames.push(f),
                    None => return Err(bad("stack line outside a stack")),
                }
            } else if !line.trim().is_empty() && line.trim() != "..." {
                current = None;
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Whether a frame's displayed function is `name`: plain C, demangled C++ (`name(...)`), or
/// Itanium-mangled C++ (`_Z<len><name>...`).
fn is_function(shown: &str, name: &str) -> bool {
    shown == name
        || shown.strip_prefix(name).is_some_and(|r| r.starts_with('('))
        || shown.starts_with(&format!("_Z{}{}", name.len(), name))
}

/// Asserts that `names`, in this order, are consecutive frames of `stack` (the first of them
/// anywhere in it).
fn assert_frames(report: &Report, which: &str, stack: &[String], names: &[&str]) {
    let found = (0..stack.len()).any(|start| {
        names
            .iter()
            .enumerate()
            .all(|(k, n)| stack.get(start + k).is_some_and(|f| is_function(f, n)))
    });
    assert!(
        found,
        "the {which} stack should have the consecutive frames {names:?}; it is {stack:?}\n{}",
        report.text
    );
}

impl Report {
    fn assert_title(&self, kind: &str, function: &str) {
        assert!(
            self.kind == kind && is_function(&self.function, function),
            "expected title `{kind} in {function}`\n{}",
            self.text
        );
    }

    fn assert_headline(&self, expected: &str) {
        assert_eq!(self.headline, expected, "headline\n{}", self.text);
    }

    fn object(&self) -> &Object {
        self.object
            .as_ref()
            .unwrap_or_else(|| panic!("report has no object line\n{}", self.text))
    }

    fn alloc(&self) -> &Record {
        self.alloc
            .as_ref()
            .unwrap_or_else(|| panic!("report has no allocation record\n{}", self.text))
    }

    fn free(&self) -> &Record {
        self.free
            .as_ref()
            .unwrap_or_else(|| panic!("report has no free record\n{}", self.text))
    }

    /// The object line names `start`..`start + size`, with this alignment and side.
    fn assert_object(&self, start: u64, size: u64, align: u64, side: Option<&str>) {
        let o = self.object();
        assert_eq!(
            (o.start, o.end, o.size, o.align),
            (start, start + size.max(1) - 1, size, align),
            "object line (start, end, size, align)\n{}",
            self.text
        );
        if let Some(side) = side {
            assert_eq!(o.side, side, "object side\n{}", self.text);
        }
        assert!(
            self.headline.contains(&format!("ufence-#{})", o.index))
                || self.headline.contains(&format!("ufence-#{}):", o.index))
                || self
                    .headline
                    .contains(&format!("ufence-#{}, a 0-byte", o.index)),
            "the headline should name ufence-#{}\n{}",
            o.index,
            self.text
        );
    }

    fn assert_access(&self, names: &[&str]) {
        assert_frames(self, "access", &self.access, names);
    }

    fn assert_alloc(&self, names: &[&str]) {
        assert_frames(self, "allocation", &self.alloc().frames, names);
    }

    fn assert_freed(&self, names: &[&str]) {
        assert_frames(self, "free", &self.free().frames, names);
    }
}

// ---------------------------------------------------------------------------------------------
// The bug programs
// ---------------------------------------------------------------------------------------------

// Without the cost governor (max_overhead) or the covered-sites skip, so that every allocation
// is sampled however slow the machine: detection in these tests must be deterministic.
const RATE1: &str = "sample_rate=1:max_overhead=0:skip_covered_thresh=100";
const RATE1_ABORT: &str = "sample_rate=1:max_overhead=0:skip_covered_thresh=100:on_error=abort";

/// Runs `bugs MODE` under `sample_rate=1` in both error modes. In `continue` mode there must be
/// exactly one report and the program must run to its end with its own status (42); in `abort`
/// mode the same report, then death by SIGABRT before the end. Returns the continue-mode run
/// and its report.
fn bug(program_name: &str, mode: &str) -> (Out, Report) {
    let prog = program(program_name);
    let mut outs = run_all(&[
        exec(&prog, &[mode]).under(Under::Options(RATE1)),
        exec(&prog, &[mode]).under(Under::Options(RATE1_ABORT)),
    ]);
    let aborted = outs.pop().unwrap();
    let cont = outs.pop().unwrap();

    let report = cont.single_report();
    cont.assert_exit_code(42);
    cont.assert_line("end");

    let abort_report = aborted.single_report();
    aborted.assert_signal(libc_sigabrt());
    assert!(
        !aborted.has_line("end"),
        "on_error=abort: the program went on after the report\n{}",
        aborted.context()
    );
    // A nameless function is shown as module+offset (or an address when even the module is
    // unknown); the offset depends on where in the function the fault hit, which differs
    // between runs with the object's placement.
    let function = |r: &Report| {
        if r.function.starts_with("0x") {
            "0x...".to_string()
        } else if let Some((module, _)) = r.function.split_once("+0x") {
            format!("{module}+...")
        } else {
            r.function.clone()
        }
    };
    assert_eq!(
        (abort_report.kind.as_str(), function(&abort_report)),
        (report.kind.as_str(), function(&report)),
        "on_error=abort reported something else\n{}",
        aborted.context()
    );
    (cont, report)
}

/// `exitcode`: a process that reported a bug and would have exited 0 exits with it, whether it
/// returns from main, calls exit or _exit, with its buffered output flushed; a status of its
/// own is kept, a forked child that found nothing keeps its 0, and 0 (the default) changes
/// nothing.
#[test]
fn exitcode_makes_a_found_bug_fail_the_run() {
    let prog = program("bugs");
    const WITH: &str = "sample_rate=1:max_overhead=0:skip_covered_thresh=100:exitcode=23";
    let cases: [(&str, &'static str, i32); 6] = [
        ("return0", WITH, 23),
        ("_exit0", WITH, 23),
        ("exit3", WITH, 3),
        ("child_exit0", WITH, 23),
        ("clean_return0", WITH, 0),
        ("return0", RATE1, 0),
    ];
    let execs: Vec<Exec> = cases
        .iter()
        .map(|&(how, opts, _)| exec(&prog, &["exit_after_uaf", how]).under(Under::Options(opts)))
        .collect();
    for (out, (how, opts, want)) in run_all(&execs).iter().zip(cases) {
        assert_eq!(
            out.status.code(),
            Some(want),
            "{how} {opts}\n{}",
            out.context()
        );
        out.assert_line("buffered line");
        if how == "child_exit0" {
            out.assert_line("child exited 0");
        }
        if how != "clean_return0" {
            out.single_report();
        }
    }
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn out_of_bounds_read_right() {
    let (out, r) = bug("bugs", "oob_read_right");
    let obj = out.address("obj");
    r.assert_title("out-of-bounds read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds read at {:#x} (1B right of ufence-#{n}):",
        obj + 32
    ));
    r.assert_object(obj, 32, 16, Some("right"));
    r.assert_access(&["read_at", "main"]);
    r.assert_alloc(&["alloc_right", "main"]);
    assert!(
        r.free.is_none(),
        "a live object has no free record\n{}",
        r.text
    );
    assert_eq!(
        r.alloc().tid,
        out.number("pid"),
        "allocating thread\n{}",
        r.text
    );
    assert_eq!(
        r.alloc().name,
        "bugs",
        "allocating thread's name\n{}",
        r.text
    );
}

#[test]
fn out_of_bounds_read_left() {
    let (out, r) = bug("bugs", "oob_read_left");
    let obj = out.address("obj");
    r.assert_title("out-of-bounds read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds read at {:#x} (1B left of ufence-#{n}):",
        obj - 1
    ));
    r.assert_object(obj, 32, 16, Some("left"));
    r.assert_access(&["read_at", "main"]);
    r.assert_alloc(&["alloc_left", "main"]);
}

#[test]
fn out_of_bounds_read_far_right() {
    let (out, r) = bug("bugs", "oob_read_right_far");
    let obj = out.address("obj");
    r.assert_title("out-of-bounds read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds read at {:#x} (100B right of ufence-#{n}):",
        obj + 131
    ));
    r.assert_object(obj, 32, 16, Some("right"));
}

#[test]
fn out_of_bounds_write_right() {
    let (out, r) = bug("bugs", "oob_write_right");
    let obj = out.address("obj");
    r.assert_title("out-of-bounds write", "write_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds write at {:#x} (1B right of ufence-#{n}):",
        obj + 32
    ));
    r.assert_object(obj, 32, 16, Some("right"));
    r.assert_access(&["write_at", "main"]);
    r.assert_alloc(&["alloc_right", "main"]);
}

#[test]
fn out_of_bounds_write_left() {
    let (out, r) = bug("bugs", "oob_write_left");
    let obj = out.address("obj");
    r.assert_title("out-of-bounds write", "write_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds write at {:#x} (1B left of ufence-#{n}):",
        obj - 1
    ));
    r.assert_object(obj, 32, 16, Some("left"));
    r.assert_access(&["write_at", "main"]);
    r.assert_alloc(&["alloc_left", "main"]);
}

#[test]
fn use_after_free_read() {
    let (out, r) = bug("bugs", "uaf_read");
    let obj = out.address("obj");
    r.assert_title("use-after-free read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Use-after-free read at {:#x} (in ufence-#{n}):",
        obj + 10
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["read_at", "main"]);
    r.assert_alloc(&["make_object", "main"]);
    r.assert_freed(&["free_object", "main"]);
    let pid = out.number("pid");
    assert_eq!(
        (r.alloc().tid, r.free().tid),
        (pid, pid),
        "threads\n{}",
        r.text
    );
}

#[test]
fn use_after_free_write() {
    let (out, r) = bug("bugs", "uaf_write");
    let obj = out.address("obj");
    r.assert_title("use-after-free write", "write_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Use-after-free write at {:#x} (in ufence-#{n}):",
        obj + 20
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["write_at", "main"]);
    r.assert_alloc(&["make_object", "main"]);
    r.assert_freed(&["free_object", "main"]);
}

#[test]
fn use_after_realloc() {
    let (out, r) = bug("bugs", "uaf_after_realloc");
    let (obj, new) = (out.address("obj"), out.address("new"));
    assert_ne!(obj, new, "realloc of a sampled object should move it");
    r.assert_title("use-after-free read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Use-after-free read at {obj:#x} (in ufence-#{n}):"
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_alloc(&["make_object", "main"]);
    // realloc is an allocator frame: the free stack starts at its caller.
    assert!(
        is_function(&r.free().frames[0], "grow_object"),
        "the free stack should start at grow_object\n{}",
        r.text
    );
    r.assert_freed(&["grow_object", "main"]);
}

#[test]
fn double_free() {
    let (out, r) = bug("bugs", "double_free");
    let obj = out.address("obj");
    r.assert_title("double free", "free_again");
    let n = r.object().index;
    r.assert_headline(&format!("Double free of {obj:#x} (in ufence-#{n}):"));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["free_again", "main"]);
    r.assert_alloc(&["make_object", "main"]);
    r.assert_freed(&["free_object", "main"]);
}

#[test]
fn invalid_free_one_past_start() {
    let (out, r) = bug("bugs", "invalid_free_plus1");
    let obj = out.address("obj");
    r.assert_title("invalid free", "free_interior");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Invalid free of {:#x} (1B inside ufence-#{n}):",
        obj + 1
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["free_interior", "main"]);
    r.assert_alloc(&["make_object", "main"]);
    assert!(r.free.is_none(), "the object was never freed\n{}", r.text);
}

#[test]
fn invalid_free_interior() {
    let (out, r) = bug("bugs", "invalid_free_interior");
    let obj = out.address("obj");
    r.assert_title("invalid free", "free_interior");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Invalid free of {:#x} (40B inside ufence-#{n}):",
        obj + 40
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["free_interior", "main"]);
    r.assert_alloc(&["make_object", "main"]);
}

/// Splits `Corrupted memory at 0x... [ ! . . ] (in ufence-#N):` into the address, the marks
/// and the object number.
fn parse_corruption(r: &Report) -> (u64, Vec<String>, u64) {
    let parsed = (|| {
        let rest = r.headline.strip_prefix("Corrupted memory at ")?;
        let (addr, rest) = rest.split_once(" [")?;
        let (marks, rest) = rest.split_once(" ] (in ufence-#")?;
        let n = rest.strip_suffix("):")?;
        Some((
            parse_hex(addr)?,
            marks.split_whitespace().map(str::to_string).collect(),
            n.parse().ok()?,
        ))
    })();
    parsed.unwrap_or_else(|| panic!("bad corruption headline\n{}", r.text))
}

#[test]
fn memory_corruption_right_of_object() {
    let (out, r) = bug("bugs", "corrupt_right");
    let obj = out.address("obj");
    r.assert_title("memory corruption", "free_object");
    let (addr, marks, n) = parse_corruption(&r);
    assert_eq!(addr, obj + 13, "first damaged byte\n{}", r.text);
    assert_eq!(n, r.object().index, "object number\n{}", r.text);
    assert!(
        marks.first().is_some_and(|m| m == "!")
            && marks[1..].iter().all(|m| m == ".")
            && marks.len() > 1
            && marks.len() <= 16,
        "damage marks should be `! . . ...` (up to 16)\n{}",
        r.text
    );
    // malloc aligns to 16, as glibc does, whatever the size.
    r.assert_object(obj, 13, 16, Some("left"));
    r.assert_access(&["free_object", "main"]);
    r.assert_alloc(&["alloc_left", "main"]);
}

#[test]
fn memory_corruption_left_of_object() {
    let (out, r) = bug("bugs", "corrupt_left");
    let obj = out.address("obj");
    r.assert_title("memory corruption", "free_object");
    let (addr, marks, n) = parse_corruption(&r);
    assert_eq!(addr, obj - 1, "first damaged byte\n{}", r.text);
    assert_eq!(n, r.object().index, "object number\n{}", r.text);
    // The canary on the left ends where the object starts: one byte to show.
    assert_eq!(marks, ["!"], "damage marks\n{}", r.text);
    r.assert_object(obj, 13, 16, Some("right"));
    r.assert_access(&["free_object", "main"]);
    r.assert_alloc(&["alloc_right_slack", "main"]);
}

// ---------------------------------------------------------------------------------------------
// Objects over a page, 0-byte objects and page-overaligned requests (tests/c/large.c)
// ---------------------------------------------------------------------------------------------

/// The object line names the pages a large object uses.
fn assert_pages(r: &Report, pages: u64) {
    let line = format!(", pages={pages}");
    assert!(
        r.text
            .lines()
            .any(|l| l.starts_with("ufence-#") && l.ends_with(&line)),
        "the object line should end with {line:?}\n{}",
        r.text
    );
}

#[test]
fn large_out_of_bounds_read_and_write_right() {
    for (mode, kind, f) in [
        ("oob_read_right", "read", "read_at"),
        ("oob_write_right", "write", "write_at"),
    ] {
        let (out, r) = bug("large", mode);
        let obj = out.address("obj");
        r.assert_title(&format!("out-of-bounds {kind}"), f);
        let n = r.object().index;
        assert!(n >= 255, "a large object is in a large slot\n{}", r.text);
        r.assert_headline(&format!(
            "Out-of-bounds {kind} at {:#x} (1B right of ufence-#{n}):",
            obj + 10000
        ));
        r.assert_object(obj, 10000, 16, Some("right"));
        assert_pages(&r, 3);
        r.assert_access(&[f, "main"]);
        r.assert_alloc(&["big_right", "main"]);
    }
}

#[test]
fn large_out_of_bounds_read_and_write_left() {
    for (mode, kind, f) in [
        ("oob_read_left", "read", "read_at"),
        ("oob_write_left", "write", "write_at"),
    ] {
        let (out, r) = bug("large", mode);
        let obj = out.address("obj");
        r.assert_title(&format!("out-of-bounds {kind}"), f);
        let n = r.object().index;
        r.assert_headline(&format!(
            "Out-of-bounds {kind} at {:#x} (1B left of ufence-#{n}):",
            obj - 1
        ));
        r.assert_object(obj, 10000, 16, Some("left"));
        assert_pages(&r, 3);
        r.assert_alloc(&["big_left", "main"]);
    }
}

/// The pages of a large slot that its object does not use are inaccessible: an underflow
/// past a right-placed object's first page, an overflow past a left-placed one's last page.
#[test]
fn large_slot_unused_pages_fault() {
    let (out, r) = bug("large", "underflow_unused_page");
    let obj = out.address("obj");
    let n = r.object().index;
    let dist = obj % 4096 + 1;
    r.assert_title("out-of-bounds read", "read_at");
    r.assert_headline(&format!(
        "Out-of-bounds read at {:#x} ({dist}B left of ufence-#{n}):",
        obj - dist
    ));
    r.assert_object(obj, 10000, 16, Some("right"));

    let (out, r) = bug("large", "overflow_unused_page");
    let obj = out.address("obj");
    let n = r.object().index;
    r.assert_title("out-of-bounds write", "write_at");
    r.assert_headline(&format!(
        "Out-of-bounds write at {:#x} (2289B right of ufence-#{n}):",
        obj + 3 * 4096
    ));
    r.assert_object(obj, 10000, 16, Some("left"));
}

#[test]
fn large_use_after_free_anywhere() {
    for (mode, kind, f, offset) in [
        ("uaf_read", "read", "read_at", 5000),
        ("uaf_write_end", "write", "write_at", 9999),
    ] {
        let (out, r) = bug("large", mode);
        let obj = out.address("obj");
        r.assert_title(&format!("use-after-free {kind}"), f);
        let n = r.object().index;
        r.assert_headline(&format!(
            "Use-after-free {kind} at {:#x} (in ufence-#{n}):",
            obj + offset
        ));
        r.assert_object(obj, 10000, 16, None);
        assert_pages(&r, 3);
        r.assert_alloc(&["make_big", "main"]);
        r.assert_freed(&["free_big", "main"]);
    }
}

#[test]
fn large_double_and_invalid_free() {
    let (out, r) = bug("large", "double_free");
    let obj = out.address("obj");
    r.assert_title("double free", "free_again");
    let n = r.object().index;
    r.assert_headline(&format!("Double free of {obj:#x} (in ufence-#{n}):"));
    r.assert_object(obj, 10000, 16, None);
    r.assert_freed(&["free_big", "main"]);

    let (out, r) = bug("large", "invalid_free");
    let obj = out.address("obj");
    r.assert_title("invalid free", "free_big");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Invalid free of {:#x} (4096B inside ufence-#{n}):",
        obj + 4096
    ));
    r.assert_object(obj, 10000, 16, None);
}

/// In continue mode the fault handler opens the page a use-after-free touched; when the slot
/// is reused the page is closed again, so a second stale access still faults.
#[test]
fn reused_large_slot_is_closed_again() {
    let out = exec(program("large"), &["reopened"])
        .under(Under::Options(
            "sample_rate=1:max_overhead=0:skip_covered_thresh=100:num_large_objects=1",
        ))
        .run();
    out.assert_exit_code(42);
    let (obj, new) = (out.address("obj"), out.address("new"));
    let reports = parse_reports(&out.stderr).unwrap_or_else(|e| panic!("{e}\n{}", out.context()));
    assert_eq!(reports.len(), 2, "{}", out.context());
    reports[0].assert_title("use-after-free write", "write_at");
    reports[0].assert_headline(&format!(
        "Use-after-free write at {:#x} (in ufence-#{}):",
        obj + 9000,
        reports[0].object().index
    ));
    // The slot now holds the new object: the stale write is outside it, in its slot.
    reports[1].assert_title("out-of-bounds write", "write_at");
    assert_eq!(reports[1].object().start, new, "{}", out.context());
}

/// The partial pages of a large object hold the canary: a write there is found at free.
#[test]
fn large_memory_corruption_in_partial_pages() {
    let (out, r) = bug("large", "corrupt_right");
    let obj = out.address("obj");
    r.assert_title("memory corruption", "free_big");
    let (addr, marks, n) = parse_corruption(&r);
    assert_eq!(addr, obj + 10003, "first damaged byte\n{}", r.text);
    assert_eq!(n, r.object().index, "object number\n{}", r.text);
    assert_eq!(marks.first().map(String::as_str), Some("!"), "{}", r.text);
    assert_eq!(marks.len(), 16, "{}", r.text);
    r.assert_object(obj, 10000, 16, Some("left"));

    let (out, r) = bug("large", "corrupt_left");
    let obj = out.address("obj");
    let (addr, marks, _) = parse_corruption(&r);
    assert_eq!(addr, obj - 5, "first damaged byte\n{}", r.text);
    assert_eq!(marks, ["!", ".", ".", ".", "."], "damage marks\n{}", r.text);
    r.assert_object(obj, 10000, 16, Some("right"));
}

/// `malloc(0)` and `calloc(0, n)`: any access to the object faults, and the report says it is
/// a 0-byte allocation.
#[test]
fn zero_size_objects_catch_any_access() {
    for (mode, kind, f) in [
        ("zero_read", "out-of-bounds read", "read_at"),
        ("zero_calloc_write", "out-of-bounds write", "write_at"),
    ] {
        let (out, r) = bug("large", mode);
        let obj = out.address("obj");
        r.assert_title(kind, f);
        let n = r.object().index;
        let access = if kind.ends_with("read") {
            "read"
        } else {
            "write"
        };
        r.assert_headline(&format!(
            "Out-of-bounds {access} at {obj:#x} (1B right of ufence-#{n}, a 0-byte allocation):"
        ));
        r.assert_object(obj, 0, 16, Some("left"));
        assert!(
            r.text.contains(", size=0 (0-byte allocation), "),
            "object line\n{}",
            r.text
        );
    }
    let (out, r) = bug("large", "zero_uaf");
    let obj = out.address("obj");
    r.assert_title("use-after-free read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Use-after-free read at {obj:#x} (in ufence-#{n}):"
    ));
    r.assert_freed(&["free_big", "main"]);
}

/// A request aligned beyond a page is sampled, aligned, and guarded.
#[test]
fn overaligned_object_is_guarded() {
    let (out, r) = bug("large", "aligned_overflow");
    let obj = out.address("obj");
    assert_eq!(obj % 16384, 0, "alignment\n{}", r.text);
    r.assert_title("out-of-bounds read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds read at {:#x} (1B right of ufence-#{n}):",
        obj + 3 * 16384
    ));
    r.assert_object(obj, 3 * 16384, 16384, None);
    assert_pages(&r, 12);
}

/// Runs `large ARGS` plain, at sample_rate=1 and at the defaults: the same stdout and status,
/// no report; at sample_rate=1, `exact` of its objects had exactly their requested usable size
/// (pool objects: the allocator's chunks hold more), so they were in the pool.
fn same_output_sampled(args: &[&str], exact: u64) -> Vec<Out> {
    let e = || exec(program("large"), args);
    let outs = run_all(&[
        e().under(Under::Plain),
        e().under(Under::Options(RATE1)),
        e().under(Under::Defaults),
    ]);
    let plain = &outs[0];
    for out in &outs[1..] {
        out.assert_no_report();
        assert_eq!(
            (out.status.code(), &out.stdout),
            (plain.status.code(), &plain.stdout),
            "status or stdout differ from the plain run\n{}\n=== plain ===\n{}",
            out.context(),
            plain.context()
        );
    }
    let want = format!("exact={exact}");
    assert!(
        outs[1].stderr.lines().any(|l| l == want),
        "{want}: not every object was in the pool\n{}",
        outs[1].context()
    );
    outs
}

/// Every aligned function with alignments up to 32 KiB and sizes 0 to 20000, valloc and
/// pvalloc: aligned and usable, the same output as without ufence.
#[test]
fn aligned_requests_beyond_a_page() {
    let outs = same_output_sampled(&["aligned_check"], 180);
    outs[0].assert_exit_code(42);
    outs[0].assert_line("aligned: 182 requests, 0 bad");
}

/// `malloc_usable_size` of each kind of pool object is the size asked for (0 for a 0-byte
/// object); a request too large for a slot with its alignment stays the allocator's.
#[test]
fn usable_size_of_every_kind() {
    let out = exec(program("large"), &["usable_sizes"])
        .under(Under::Options(RATE1))
        .run();
    out.assert_exit_code(42);
    for line in [
        "usable 0: 0 0",
        "usable 1: 1 1",
        "usable 4096: 4096 4096",
        "usable 4097: 4097 4097",
    ] {
        assert!(
            out.stderr.lines().any(|l| l == line),
            "no {line:?}\n{}",
            out.context()
        );
    }
    // 65536 bytes fit a large slot; aligned to 8192 they would need one more page.
    let last = out
        .stderr
        .lines()
        .find(|l| l.starts_with("usable 65536: "))
        .unwrap_or_else(|| panic!("no 65536 line\n{}", out.context()));
    assert!(
        last.starts_with("usable 65536: 65536 "),
        "{}",
        out.context()
    );
    assert_ne!(last, "usable 65536: 65536 65536", "{}", out.context());
}

/// realloc chains through small and large sizes and back keep the data, with and without
/// ufence alike.
#[test]
fn realloc_across_classes_keeps_data() {
    // Every step but 70000 bytes (over max_object_size) ends in the pool.
    let outs = same_output_sampled(&["realloc_chain"], 8);
    outs[0].assert_exit_code(42);
    for out in &outs {
        out.assert_line("realloc 100 -> 5000: kept");
        out.assert_line("realloc 4097 -> 65536: kept");
    }
}

/// Many large buffers (and 0-byte ones) allocated, written, checked and freed, every one in the
/// pool: the output is byte for byte the plain run's.
#[test]
fn clean_large_buffers() {
    let outs = same_output_sampled(&["churn", "3000"], 6000);
    outs[0].assert_exit_code(42);
}

/// Freed large objects' pages go back to the kernel: a thousand 1 MiB buffers, each sampled
/// into a slot of its own, never use more than a few of them at once.
#[test]
fn freed_large_objects_give_their_memory_back() {
    let out = exec(program("large"), &["rss", "1000"])
        .under(Under::Options(
            "sample_rate=1:max_overhead=0:skip_covered_thresh=100:num_large_objects=1000:max_object_size=1048576",
        ))
        .run();
    out.assert_exit_code(42);
    out.assert_no_report();
    let field = |key: &str| -> u64 {
        out.stderr
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}\n{}", out.context()))
    };
    assert_eq!(
        field("exact="),
        1000,
        "every buffer sampled\n{}",
        out.context()
    );
    let peak = field("peak_rss_kib=");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB for 1 MiB at a time\n{}",
        out.context()
    );
}

/// A libc function overflowing a right-placed 32-byte object: the fault is inside libc, the
/// report must still say which access it was, and the stack must go on into the program.
fn libc_overflow(mode: &str, kind: &str, caller: &str, max_past: u64) {
    let (out, r) = bug("bugs", mode);
    let obj = out.address("obj");
    assert_eq!(r.kind, kind, "title kind\n{}", r.text);
    let n = r.object().index;
    let what = if kind.ends_with("write") {
        "write"
    } else {
        "read"
    };
    let rest = r
        .headline
        .strip_prefix(&format!("Out-of-bounds {what} at "))
        .unwrap_or_else(|| panic!("headline\n{}", r.text));
    let (addr, dist) = rest
        .split_once(" (")
        .unwrap_or_else(|| panic!("headline\n{}", r.text));
    let addr = parse_hex(addr).unwrap_or_else(|| panic!("headline\n{}", r.text));
    assert!(
        addr >= obj + 32 && addr < obj + 32 + max_past,
        "fault address {addr:#x} should be just past the object at {obj:#x}\n{}",
        r.text
    );
    assert_eq!(
        dist,
        format!("{}B right of ufence-#{n}):", addr - (obj + 32) + 1),
        "distance\n{}",
        r.text
    );
    r.assert_object(obj, 32, 16, Some("right"));
    // Frames inside libc come first; then the program's caller and main.
    r.assert_access(&[caller, "main"]);
    r.assert_alloc(&["alloc_right", "main"]);
}

#[test]
fn libc_strcpy_overflow() {
    libc_overflow("strcpy_overflow", "out-of-bounds write", "copy_string", 9);
}

#[test]
fn libc_memcpy_overflow() {
    libc_overflow("memcpy_overflow", "out-of-bounds write", "copy_bytes", 16);
}

#[test]
fn libc_memset_overflow() {
    libc_overflow("memset_overflow", "out-of-bounds write", "fill_bytes", 1);
}

#[test]
fn libc_strlen_overread() {
    libc_overflow(
        "strlen_overread",
        "out-of-bounds read",
        "measure_string",
        64,
    );
}

#[test]
fn use_after_free_across_threads() {
    let (out, r) = bug("bugs", "uaf_thread");
    let obj = out.address("obj");
    r.assert_title("use-after-free read", "read_at");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Use-after-free read at {:#x} (in ufence-#{n}):",
        obj + 3
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["read_at", "main"]);
    r.assert_alloc(&["make_object", "thread_alloc_and_free"]);
    r.assert_freed(&["free_object", "thread_alloc_and_free"]);
    let worker = out.number("alloc_tid");
    let user = out.number("use_tid");
    assert_ne!(
        worker, user,
        "the program should use the object in another thread"
    );
    assert_eq!(r.alloc().tid, worker, "allocating thread\n{}", r.text);
    assert_eq!(r.free().tid, worker, "freeing thread\n{}", r.text);
}

#[test]
fn use_after_free_three_threads() {
    let (out, r) = bug("bugs", "uaf_thread3");
    let obj = out.address("obj");
    r.assert_title("use-after-free read", "read_at");
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["read_at", "thread_use"]);
    r.assert_alloc(&["make_object", "thread_alloc"]);
    r.assert_freed(&["free_object", "thread_free"]);
    let (a, f, m, u) = (
        out.number("alloc_tid"),
        out.number("free_tid"),
        out.number("main_tid"),
        out.number("use_tid"),
    );
    assert_eq!(
        BTreeSet::from([a, f, m, u]).len(),
        4,
        "four distinct threads\n{}",
        out.context()
    );
    assert_eq!(r.alloc().tid, a, "allocating thread\n{}", r.text);
    assert_eq!(r.free().tid, f, "freeing thread\n{}", r.text);
}

#[test]
fn bug_in_forked_child() {
    let prog = program("bugs");
    let mut outs = run_all(&[
        exec(&prog, &["fork_child"]).under(Under::Options(RATE1)),
        exec(&prog, &["fork_child"]).under(Under::Options(RATE1_ABORT)),
    ]);
    let aborted = outs.pop().unwrap();
    let cont = outs.pop().unwrap();

    for out in [&cont, &aborted] {
        // One report, the child's: the parent's own use and free of its copy are fine.
        let r = out.single_report();
        out.assert_exit_code(0);
        out.assert_line("parent end");
        let obj = out.address("obj");
        let (parent, child) = (out.number("pid"), out.number("child"));
        r.assert_title("use-after-free read", "read_at");
        r.assert_object(obj, 64, 16, None);
        r.assert_access(&["read_at", "main"]);
        r.assert_alloc(&["make_object", "main"]);
        r.assert_freed(&["free_object", "main"]);
        assert_eq!(r.alloc().tid, parent, "allocated by the parent\n{}", r.text);
        assert_eq!(r.free().tid, child, "freed by the child\n{}", r.text);
    }
    cont.assert_line("child end");
    cont.assert_line("child exited 7");
    assert!(!aborted.has_line("child end"), "{}", aborted.context());
    aborted.assert_line("child killed by signal 6");
}

#[test]
fn one_report_per_object() {
    let out = exec(program("bugs"), &["three_touches"])
        .under(Under::Options(RATE1))
        .run();
    out.assert_exit_code(42);
    out.assert_line("end");
    let objs = out.addresses("obj");
    assert_eq!(objs.len(), 2);
    let reports = out.reports();
    assert_eq!(
        reports.len(),
        2,
        "two freed objects, each touched three times (and one freed again): two reports\n{}",
        out.context()
    );
    // The first touch of each object is the one reported: a read.
    for (r, (obj, size, off)) in reports.iter().zip([(objs[0], 64, 0), (objs[1], 128, 100)]) {
        r.assert_title("use-after-free read", "read_at");
        let n = r.object().index;
        r.assert_headline(&format!(
            "Use-after-free read at {:#x} (in ufence-#{n}):",
            obj + off
        ));
        r.assert_object(obj, size, 16, None);
    }
}

#[test]
fn exit_status_in_both_modes() {
    let prog = program("bugs");
    let outs = run_all(&[
        exec(&prog, &["uaf_read"]).under(Under::Options(RATE1)),
        exec(&prog, &["uaf_read"]).under(Under::Options("sample_rate=1:on_error=continue")),
        exec(&prog, &["uaf_read"]).under(Under::Options(RATE1_ABORT)),
        exec(&prog, &["uaf_read"]).under(Under::Plain),
    ]);
    // continue (the default, and explicit): the program's own status.
    for out in &outs[..2] {
        out.single_report();
        out.assert_exit_code(42);
        out.assert_line("end");
    }
    // abort: killed by SIGABRT after a complete report.
    outs[2].single_report();
    outs[2].assert_signal(libc_sigabrt());
    assert!(!outs[2].has_line("end"), "{}", outs[2].context());
    assert!(
        outs[2].stderr.trim_end().ends_with(RULE),
        "the report should be complete before the abort\n{}",
        outs[2].context()
    );
    // Without ufence the bug goes unnoticed.
    outs[3].assert_no_report();
    outs[3].assert_exit_code(42);
}

// ---------------------------------------------------------------------------------------------
// C++
// ---------------------------------------------------------------------------------------------

#[test]
fn cxx_use_after_delete() {
    let (out, r) = bug("cxx", "uaf");
    let obj = out.address("obj");
    r.assert_title("use-after-free read", "read_field");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Use-after-free read at {:#x} (in ufence-#{n}):",
        obj + 24
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["read_field", "main"]);
    // operator new and delete are allocator frames: the stacks start in the program.
    r.assert_alloc(&["make_obj", "main"]);
    r.assert_freed(&["destroy_obj", "main"]);
    assert!(is_function(&r.alloc().frames[0], "make_obj"), "{}", r.text);
    assert!(
        is_function(&r.free().frames[0], "destroy_obj"),
        "{}",
        r.text
    );
}

#[test]
fn cxx_double_delete() {
    let (out, r) = bug("cxx", "double_delete");
    let obj = out.address("obj");
    r.assert_title("double free", "destroy_obj");
    let n = r.object().index;
    r.assert_headline(&format!("Double free of {obj:#x} (in ufence-#{n}):"));
    r.assert_object(obj, 64, 16, None);
    r.assert_access(&["destroy_obj", "main"]);
    r.assert_alloc(&["make_obj", "main"]);
    r.assert_freed(&["destroy_obj", "main"]);
}

#[test]
fn cxx_new_array_out_of_bounds() {
    let (out, r) = bug("cxx", "array_oob");
    let obj = out.address("obj");
    r.assert_title("out-of-bounds read", "read_elem");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds read at {:#x} (1B right of ufence-#{n}):",
        obj + 32
    ));
    r.assert_object(obj, 32, 16, Some("right"));
    r.assert_alloc(&["make_array", "make_array_right", "main"]);
}

/// `new char[0]`: a 0-byte object that no access may touch.
#[test]
fn cxx_new_zero_length_array() {
    let (out, r) = bug("cxx", "new_zero");
    let obj = out.address("obj");
    r.assert_title("out-of-bounds read", "read_elem");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds read at {obj:#x} (1B right of ufence-#{n}, a 0-byte allocation):"
    ));
    r.assert_object(obj, 0, 16, Some("left"));
    r.assert_alloc(&["make_array", "main"]);
}

/// C++17 aligned `new` of a type aligned to 8 KiB (16 KiB long): sampled, aligned,
/// and an underflow before it faults.
#[test]
fn cxx_aligned_new_beyond_a_page() {
    let (out, r) = bug("cxx", "aligned_new_oob");
    let obj = out.address("obj");
    assert_eq!(obj % 8192, 0, "alignment\n{}", r.text);
    r.assert_title("out-of-bounds read", "read_elem");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Out-of-bounds read at {:#x} (1B left of ufence-#{n}):",
        obj - 1
    ));
    // alignas pads the type to a multiple of its alignment: 16384 bytes.
    r.assert_object(obj, 16384, 8192, None);
    r.assert_alloc(&["make_paged", "main"]);
}

#[test]
fn cxx_use_after_delete_array() {
    let (out, r) = bug("cxx", "array_uaf");
    let obj = out.address("obj");
    r.assert_title("use-after-free write", "write_int");
    let n = r.object().index;
    r.assert_headline(&format!(
        "Use-after-free write at {:#x} (in ufence-#{n}):",
        obj + 20
    ));
    r.assert_object(obj, 64, 16, None);
    r.assert_alloc(&["make_ints", "main"]);
    r.assert_freed(&["destroy_ints", "main"]);
}

#[test]
fn cxx_double_delete_array() {
    let (out, r) = bug("cxx", "array_double_delete");
    let obj = out.address("obj");
    r.assert_title("double free", "destroy_array");
    r.assert_object(obj, 100, 16, None);
    r.assert_alloc(&["make_array", "main"]);
    r.assert_freed(&["destroy_array", "main"]);
}

/// C++ function names are shown demangled, as by AddressSanitizer and the kernel.
#[test]
fn cxx_names_are_demangled() {
    let out = exec(program("cxx"), &["uaf"])
        .under(Under::Options(RATE1))
        .run();
    let r = out.single_report();
    assert_eq!(
        r.function, "read_field(Obj volatile*, int)",
        "the title's function\n{}",
        r.text
    );
    assert_eq!(
        r.alloc().frames.first().map(String::as_str),
        Some("make_obj()"),
        "{}",
        r.text
    );
    assert_eq!(
        r.free().frames.first().map(String::as_str),
        Some("destroy_obj(Obj*)"),
        "{}",
        r.text
    );
}

// ---------------------------------------------------------------------------------------------
// Aligned allocations
// ---------------------------------------------------------------------------------------------

/// Runs a correct program plain, under `sample_rate=1` and at the defaults: same status, same
/// stdout, same stderr, no report. Returns the three runs.
fn same_as_plain(e: impl Fn() -> Exec) -> Vec<Out> {
    let outs = run_all(&[
        e().under(Under::Plain),
        e().under(Under::Options(RATE1)),
        e().under(Under::Defaults),
    ]);
    let plain = &outs[0];
    for out in &outs[1..] {
        out.assert_no_report();
        assert_eq!(
            out.status.code(),
            plain.status.code(),
            "exit status differs from the plain run\n{}\n=== plain ===\n{}",
            out.context(),
            plain.context()
        );
        assert_eq!(
            out.stdout,
            plain.stdout,
            "stdout differs from the plain run\n{}\n=== plain ===\n{}",
            out.context(),
            plain.context()
        );
        assert_eq!(
            out.stderr,
            plain.stderr,
            "stderr differs from the plain run\n{}\n=== plain ===\n{}",
            out.context(),
            plain.context()
        );
    }
    outs
}

#[test]
fn aligned_allocations_are_aligned() {
    let outs = same_as_plain(|| exec(program("aligned"), &["check"]));
    outs[0].assert_exit_code(0);
    outs[0].assert_line("allocations=1134 bad=0");
    for f in ["posix_memalign", "aligned_alloc", "memalign"] {
        let mut align = if f == "posix_memalign" { 8 } else { 1 };
        while align <= 16384 {
            outs[0].assert_line(&format!("{f} align={align}: ok"));
            align *= 2;
        }
    }
}

#[test]
fn aligned_overflow_is_caught() {
    let out = exec(program("aligned"), &["overflow"])
        .under(Under::Options(RATE1))
        .run();
    out.assert_exit_code(0);
    let cases: Vec<(String, u64, u64)> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("case ")?.split_whitespace();
            let f = w.next()?.to_string();
            let align = w.next()?.strip_prefix("align=")?.parse().ok()?;
            let obj = parse_hex(w.next()?.strip_prefix("obj=")?)?;
            Some((f, align, obj))
        })
        .collect();
    // posix_memalign 8..4096, aligned_alloc and memalign 1..4096.
    assert_eq!(cases.len(), 10 + 13 + 13, "{}", out.context());
    out.assert_line(&format!("cases={}", cases.len()));
    let reports = out.reports();
    assert_eq!(
        reports.len(),
        cases.len(),
        "one report per overflowed object\n{}",
        out.context()
    );
    for (f, align, obj) in &cases {
        let (f, align, obj) = (f.as_str(), *align, *obj);
        assert_eq!(
            obj % align,
            0,
            "{f}({align}) returned a misaligned {obj:#x}"
        );
        let r = reports
            .iter()
            .find(|r| r.object.as_ref().is_some_and(|o| o.start == obj))
            .unwrap_or_else(|| panic!("no report for {f}({align}) at {obj:#x}\n{}", out.context()));
        r.assert_object(obj, 48, align.max(16), None);
        r.assert_alloc(&["alloc_aligned", "overflow", "main"]);
        let n = r.object().index;
        if (obj + 48) % 4096 == 0 {
            // The object ends at its page's end: the write hits the guard page.
            r.assert_title("out-of-bounds write", "poke_past_end");
            r.assert_headline(&format!(
                "Out-of-bounds write at {:#x} (1B right of ufence-#{n}):",
                obj + 48
            ));
        } else {
            // Alignment left slack after the object: the canary catches it at free.
            r.assert_title("memory corruption", "free_aligned");
            let (addr, marks, m) = parse_corruption(r);
            assert_eq!((addr, m), (obj + 48, n), "corruption headline\n{}", r.text);
            assert_eq!(marks.first().map(String::as_str), Some("!"), "{}", r.text);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Correct programs
// ---------------------------------------------------------------------------------------------

#[test]
fn clean_malloc_api_edge_cases() {
    let outs = same_as_plain(|| exec(program("clean"), &[]));
    outs[0].assert_exit_code(0);
    outs[0].assert_line(&format!("{:<44} {}", "failures", 0));
    // With CLEAN_DIAG the program tells whether allocations look like ufence's: sampling must
    // really have been on for this test to mean anything.
    let outs = run_all(&[
        exec(program("clean"), &[])
            .env("CLEAN_DIAG", "1")
            .under(Under::Plain),
        exec(program("clean"), &[])
            .env("CLEAN_DIAG", "1")
            .under(Under::Options(RATE1)),
    ]);
    let exact = |o: &Out| -> u64 {
        o.stderr
            .lines()
            .find_map(|l| l.strip_prefix("diag: exact_usable="))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no diag line\n{}", o.context()))
    };
    assert_eq!(exact(&outs[0]), 0, "{}", outs[0].context());
    assert!(
        exact(&outs[1]) >= 90,
        "with sample_rate=1 the first small allocations should be sampled\n{}",
        outs[1].context()
    );
    outs[1].assert_exit_code(0);
    assert_eq!(outs[0].stdout, outs[1].stdout);
}

#[test]
fn clean_threaded_churn() {
    let outs = same_as_plain(|| exec(program("churn"), &[]));
    outs[0].assert_exit_code(0);
    outs[0].assert_line("handed over: 1500 ok, all bad: 0");
}

#[test]
fn clean_cxx_containers() {
    let outs = same_as_plain(|| exec(program("cxx"), &["clean"]));
    outs[0].assert_exit_code(0);
    assert!(
        outs[0].stdout.starts_with("keys=1000 "),
        "{}",
        outs[0].context()
    );
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// The warning lines of a run: lines of stderr outside reports that mention ufence.
fn warnings(out: &Out) -> Vec<String> {
    let mut inside = false;
    let mut v = Vec::new();
    for l in out.stderr.lines() {
        if l == RULE {
            inside = !inside;
        } else if !inside && l.to_ascii_lowercase().contains("ufence") {
            v.push(l.to_string());
        }
    }
    v
}

fn assert_one_warning(out: &Out, names: &[&str]) {
    let w = warnings(out);
    assert_eq!(w.len(), 1, "expected one warning line\n{}", out.context());
    for n in names {
        assert!(
            w[0].contains(n),
            "the warning should name {n:?}\n{}",
            out.context()
        );
    }
}

#[test]
fn options_unknown_key_warns_and_goes_on() {
    let out = exec(program("bugs"), &["uaf_read"])
        .under(Under::Options("sample_rate=1:frobnicate=7"))
        .run();
    assert_one_warning(&out, &["frobnicate"]);
    // The other option still applies: the bug is caught; the program runs to its end.
    let r = out.single_report();
    r.assert_title("use-after-free read", "read_at");
    out.assert_exit_code(42);
    out.assert_line("end");
}

#[test]
fn options_key_without_value_warns() {
    let out = exec(program("clean"), &[])
        .under(Under::Options("verbose"))
        .run();
    assert_one_warning(&out, &["verbose"]);
    out.assert_no_report();
    out.assert_exit_code(0);
}

#[test]
fn options_bad_value_keeps_default() {
    // A bad on_error keeps the default, continue: the program's own exit status.
    let out = exec(program("bugs"), &["uaf_read"])
        .under(Under::Options("sample_rate=1,on_error=explode"))
        .run();
    assert_one_warning(&out, &["on_error", "explode"]);
    out.single_report();
    out.assert_exit_code(42);
    out.assert_line("end");
}

#[test]
fn options_bad_value_leaves_other_options() {
    // Separated by white space; the bad sample_interval does not undo on_error=abort.
    let out = exec(program("bugs"), &["uaf_read"])
        .under(Under::Options(
            "sample_rate=1 on_error=abort sample_interval=-5",
        ))
        .run();
    assert_one_warning(&out, &["sample_interval"]);
    out.single_report();
    out.assert_signal(libc_sigabrt());
}

#[test]
fn options_bad_sample_rate_program_runs() {
    let prog = program("clean");
    let outs = run_all(&[
        exec(&prog, &[]).under(Under::Plain),
        exec(&prog, &[]).under(Under::Options("sample_rate=banana")),
        exec(&prog, &[]).under(Under::Options("sample_rate=-1:num_objects=lots")),
    ]);
    outs[1].assert_exit_code(0);
    assert_one_warning(&outs[1], &["sample_rate", "banana"]);
    let w = warnings(&outs[2]);
    assert_eq!(
        w.len(),
        2,
        "one warning per bad option\n{}",
        outs[2].context()
    );
    assert!(
        w[0].contains("sample_rate") && w[1].contains("num_objects"),
        "{}",
        outs[2].context()
    );
    for out in &outs[1..] {
        out.assert_no_report();
        out.assert_exit_code(0);
        assert_eq!(out.stdout, outs[0].stdout, "{}", out.context());
    }
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

fn own_handler(mode: &str) {
    let outs = same_as_plain(|| exec(program("sigsegv"), &[mode]));
    for out in &outs {
        out.assert_exit_code(0);
        out.assert_line("round 0: caught signal 11 at (nil)");
        out.assert_line("round 1: caught signal 11 at (nil)");
        out.assert_line("caught 2");
    }
}

#[test]
fn own_sigsegv_handler_installed_before_first_malloc() {
    own_handler("before");
}

#[test]
fn own_sigsegv_handler_installed_after_malloc() {
    own_handler("after");
}

#[test]
fn unhandled_null_dereference_still_crashes() {
    let prog = program("sigsegv");
    let outs = run_all(&[
        exec(&prog, &["unhandled"]).under(Under::Plain),
        exec(&prog, &["unhandled"]).under(Under::Options(RATE1)),
        exec(&prog, &["unhandled"]).under(Under::Defaults),
    ]);
    for out in &outs {
        out.assert_signal(11);
        out.assert_no_report();
    }
}

// ---------------------------------------------------------------------------------------------
// Real programs
// ---------------------------------------------------------------------------------------------

/// Runs a real program plain, under `sample_rate=1` and at the defaults: stdout byte-identical,
/// same status, no report.
fn real_program(e: impl Fn() -> Exec) {
    let outs = run_all(&[
        e().under(Under::Plain),
        e().under(Under::Options(RATE1)),
        e().under(Under::Defaults),
    ]);
    let plain = &outs[0];
    assert!(
        plain.status.success(),
        "the plain run failed\n{}",
        plain.context()
    );
    assert!(!plain.stdout.is_empty(), "no output\n{}", plain.context());
    for out in &outs[1..] {
        out.assert_no_report();
        assert!(
            warnings(out).is_empty(),
            "unexpected ufence output\n{}",
            out.context()
        );
        assert_eq!(out.status.code(), plain.status.code(), "{}", out.context());
        assert!(
            out.stdout == plain.stdout,
            "stdout differs from the plain run\n{}\n=== plain ===\n{}",
            out.context(),
            plain.context()
        );
    }
}

const PYTHON_SCRIPT: &str = r#"
import json, hashlib, collections, re
d = {}
for i in range(3000):
    d["k%d" % i] = [i, str(i) * 3, {"x": i * i, "y": [float(i) / 7] * (i % 5)}]
s = json.dumps(d, sort_keys=True)
d2 = json.loads(s)
words = re.findall(r"[a-z]\d+", s)
c = collections.Counter(w[:2] for w in words)
top = sorted(d2.items(), key=lambda kv: (-len(kv[1][1]), kv[0]))[:3]
print(len(s), hashlib.sha256(s.encode()).hexdigest(), d2 == d)
print(sorted(c.items())[:4], [k for k, _ in top])
"#;

#[test]
fn real_python3() {
    let python = require_command("python3", "python3");
    for pymalloc in ["malloc", "pymalloc"] {
        // PYTHONMALLOC=malloc sends every object through malloc, not just the large ones.
        real_program(|| exec(&python, &["-c", PYTHON_SCRIPT]).env("PYTHONMALLOC", pymalloc));
    }
}

const PERL_SCRIPT: &str = r#"
use strict; use warnings;
my %h; my @a;
for my $i (0..20000) {
    my $k = sprintf("key%05d", ($i * 7919) % 20011);
    $h{$k} .= chr(65 + $i % 26);
    push @a, [$i, "$k:" . length($h{$k})];
}
my @s = sort { $h{$a} cmp $h{$b} or $a cmp $b } keys %h;
my $j = join(",", map { "$_=$h{$_}" } @s[0..9]);
(my $t = $j) =~ s/key(\d+)/K[$1]/g;
my %cnt; $cnt{length $h{$_}}++ for keys %h;
my $sum = 0; $sum += $_->[0] for grep { $_->[1] =~ /:1$/ } @a;
print scalar(keys %h), " $sum\n$t\n", join(" ", map { "$_:$cnt{$_}" } sort { $a <=> $b } keys %cnt), "\n";
"#;

#[test]
fn real_perl() {
    let perl = require_command("perl", "perl");
    real_program(|| exec(&perl, &["-e", PERL_SCRIPT]));
}

const SQL: &str = r#"
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL, grp INTEGER);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000)
INSERT INTO t SELECT x, printf('name-%05d-%s', x, hex(x * 2654435761 % 65536)), x * 1.5 / 7, x % 37 FROM c;
CREATE INDEX t_name ON t(name);
SELECT grp, count(*), printf('%.3f', sum(v)), min(name), max(name) FROM t GROUP BY grp ORDER BY grp LIMIT 5;
SELECT name FROM t WHERE name LIKE 'name-012%' ORDER BY name DESC;
SELECT group_concat(substr(name, 12), '') FROM (SELECT name FROM t ORDER BY v DESC LIMIT 50);
UPDATE t SET name = upper(name) WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
SELECT count(*), sum(length(name)), printf('%.2f', avg(v)) FROM t;
"#;

#[test]
fn real_sqlite3() {
    let sqlite = require_command("sqlite3", "sqlite3");
    real_program(|| exec(&sqlite, &[":memory:"]).stdin(SQL.as_bytes()));
}

#[test]
fn real_gcc_compiles() {
    let gcc = require_command("gcc", "gcc");
    // gcc runs cc1 as a child process, which inherits the preload. The assembly goes to
    // stdout, so a miscompilation under ufence shows as a difference.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/clean.c");
    let src = src.to_str().unwrap().to_string();
    real_program(|| exec(&gcc, &["-O2", "-S", "-o", "-", &src]));
}

// ---------------------------------------------------------------------------------------------
// Healthy programs doing unusual things with protection, signals and pointers. Each was a
// hang, a crash or a wrong result under an earlier ufence; each must now behave as without it.
// ---------------------------------------------------------------------------------------------

/// Runs `hostile MODE` plain and under the preload with `options`, in parallel.
fn hostile(mode: &str, options: &'static str) -> (Out, Out) {
    let prog = program("hostile");
    let mut outs = run_all(&[
        exec(&prog, &[mode]),
        exec(&prog, &[mode]).under(Under::Options(options)),
    ]);
    let under = outs.pop().unwrap();
    (outs.pop().unwrap(), under)
}

/// A page the program made read-only itself (write tracking with its own handler) faults to the
/// program's handler, not into an endless retry inside ufence.
#[test]
fn program_protected_page_faults_to_the_program() {
    let (plain, under) = hostile("write_tracking", RATE1);
    plain.assert_exit_code(0);
    under.assert_exit_code(0);
    under.assert_no_report();
    assert_eq!(plain.stdout, "dirty=1 value=1\n");
    assert_eq!(under.stdout, plain.stdout, "{}", under.context());
}

/// A one-shot (SA_RESETHAND) crash handler runs once; the second fault kills, as without ufence.
#[test]
fn one_shot_crash_handler_runs_once() {
    let (plain, under) = hostile("resethand", "sample_rate=1");
    plain.assert_signal(11);
    under.assert_signal(11);
    assert_eq!(
        under.stderr.matches("crash handler call").count(),
        1,
        "{}",
        under.context()
    );
    assert_eq!(under.stderr, plain.stderr);
}

/// A handler installed for a moment and then restored is not called for a later crash.
#[test]
fn restored_handler_is_the_one_in_force() {
    let (plain, under) = hostile("restore", "sample_rate=1");
    plain.assert_signal(11);
    under.assert_signal(11);
    assert_eq!(plain.stdout, "old handler was default: 1\n");
    assert_eq!(under.stdout, plain.stdout, "{}", under.context());
    under.assert_no_report();
}

/// Objects sampled before the program installs its crash reporter are still ufence's.
#[test]
fn objects_before_the_programs_handler_stay_guarded() {
    let (_, under) = hostile("late_handler", RATE1);
    let r = under.single_report();
    r.assert_title("out-of-bounds read", "main");
    assert!(
        !under.stderr.contains("crash reporter called"),
        "{}",
        under.context()
    );
    under.assert_exit_code(0);
    under.assert_line("end");
}

/// Pointer tagging in the low four bits works: every malloc is 16-byte aligned, as glibc's.
#[test]
fn malloc_keeps_glibcs_16_byte_alignment() {
    let (plain, under) = hostile("tagged", RATE1);
    assert_eq!(plain.stdout, "misaligned=0\n");
    assert_eq!(under.stdout, plain.stdout, "{}", under.context());
    under.assert_no_report();
}

/// dlopen/dlclose of a library at run time, allocating in between, behaves as without ufence.
#[test]
fn dlopen_and_dlclose_work() {
    let (plain, under) = hostile("dlopen", RATE1);
    plain.assert_exit_code(0);
    under.assert_exit_code(0);
    assert!(
        plain.stdout.contains("cos(10/2)=0.283662"),
        "{}",
        plain.context()
    );
    assert_eq!(under.stdout, plain.stdout, "{}", under.context());
    under.assert_no_report();
}

/// ufence's own lookups never clear the program's pending dlerror().
#[test]
fn dlerror_survives_sampled_realloc() {
    let (plain, under) = hostile("dlerror", RATE1);
    assert!(plain.stdout.contains("error kept=1"), "{}", plain.context());
    assert!(under.stdout.contains("error kept=1"), "{}", under.context());
    under.assert_no_report();
}

/// A stale free of a slot's earlier occupant is reported without using up the report of the
/// object living in the slot now: its own overflow is reported too.
#[test]
fn stale_free_does_not_hide_the_next_bug() {
    let under = exec(program("hostile"), &["stale_free"])
        .under(Under::Options("sample_rate=1:max_overhead=0:num_objects=1"))
        .run();
    let reports = under.reports();
    assert_eq!(reports.len(), 2, "{}", under.context());
    assert_eq!(reports[0].kind, "invalid free", "{}", under.context());
    assert_eq!(reports[1].kind, "out-of-bounds read", "{}", under.context());
    under.assert_line("end");
    under.assert_exit_code(0);
}

/// Rust's std installs its stack-overflow handler only where it finds the default; under the
/// preload it still does, and its message still appears.
#[test]
fn rust_stack_overflow_message_survives_the_preload() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rust/overflow.rs");
    let dir = target_dir().join("preload-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join(format!("overflow-{}", std::process::id()));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let st = Command::new(rustc)
        .args(["-O", "--edition", "2021", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("rustc");
    assert!(st.success());
    let outs = run_all(&[
        exec(&bin, &[]),
        exec(&bin, &[]).under(Under::Options(RATE1)),
    ]);
    let _ = std::fs::remove_file(&bin);
    for out in &outs {
        assert!(
            out.stderr.contains("thread 'deep'") && out.stderr.contains("has overflowed its stack"),
            "{}",
            out.context()
        );
        out.assert_signal(6);
    }
}

/// Every library the preload needs is loaded into every process it is put into, at every
/// start: it needs only the C library, the loader and libgcc_s (the unwinder for stacks). In
/// particular not libm, which a C program may not link otherwise (the sampler's logarithms are
/// ufence's own).
#[test]
fn the_preload_needs_no_library_beyond_libc_and_the_unwinder() {
    let out = Command::new(require_command("readelf", "binutils"))
        .arg("-dW")
        .arg(library())
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success());
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let mut needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.strip_suffix(']'))
        .collect();
    needed.sort();
    assert_eq!(
        needed,
        ["ld-linux-x86-64.so.2", "libc.so.6", "libgcc_s.so.1"],
        "{dynamic}"
    );
}
