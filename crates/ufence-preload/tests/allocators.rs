//! Programs that bring their own allocator: jemalloc, tcmalloc and mimalloc as shared libraries
//! (Debian's `libjemalloc2`, `libtcmalloc-minimal4`, `libmimalloc2.0`), linked into the program
//! or preloaded after ufence, and Debian's `redis-server`, which is linked against jemalloc.
//! ufence must forward every unsampled call to the allocator that follows it, keep pool
//! objects away from the allocators' own entry points, and catch bugs on top of any of them.
//!
//! The program is `tests/c/allocators/alloc.c`, built once per allocator. The packages are
//! installed by `ufence-testkit` when missing (as root), or the test fails saying which.

#[path = "support/reports.rs"]
mod support;

use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::{library, parse_report, target_dir, workspace_root, EVERY};
use ufence_testkit::{require_command, require_file};

const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

/// An allocator a program can be on: its name, its shared library, its Debian package, and the
/// macro `alloc.c` is built with for it.
#[derive(Clone, Copy, Debug)]
struct Allocator {
    name: &'static str,
    lib: &'static str,
    package: &'static str,
    define: &'static str,
}

const JEMALLOC: Allocator = Allocator {
    name: "jemalloc",
    lib: "libjemalloc.so.2",
    package: "libjemalloc2",
    define: "-DON_JEMALLOC",
};
const TCMALLOC: Allocator = Allocator {
    name: "tcmalloc",
    lib: "libtcmalloc_minimal.so.4",
    package: "libtcmalloc-minimal4",
    define: "-DON_TCMALLOC",
};
const MIMALLOC: Allocator = Allocator {
    name: "mimalloc",
    lib: "libmimalloc.so.2",
    package: "libmimalloc2.0",
    define: "-DON_MIMALLOC",
};
const ALL: [Allocator; 3] = [JEMALLOC, TCMALLOC, MIMALLOC];

impl Allocator {
    /// The allocator's shared library, installed if missing.
    fn path(&self) -> PathBuf {
        require_file(&format!("{LIBDIR}/{}", self.lib), self.package)
    }
}

/// `alloc.c` built for `on` (None: plain glibc), linked against that allocator.
fn program(on: Option<Allocator>) -> PathBuf {
    build_alloc(on, false)
}

/// `alloc.c` linked against `early.c` as a shared library (whose constructor allocates before
/// ufence's runs) and the allocator `on`.
fn early_program(on: Option<Allocator>) -> PathBuf {
    build_alloc(on, true)
}

fn build_alloc(on: Option<Allocator>, early: bool) -> PathBuf {
    let c = workspace_root().join("crates/ufence-preload/tests/c/allocators");
    let name = format!(
        "alloc-{}{}",
        on.map_or("glibc", |a| a.name),
        if early { "-early" } else { "" }
    );
    compile(&name, "gcc", |dir| {
        let mut args = vec![c.join("alloc.c").into_os_string()];
        // The early library comes before the allocator in the program's DT_NEEDED list, so
        // that the allocator's own constructor runs first (the loader starts the later entries
        // first): tcmalloc answers malloc_usable_size with 0 before it, ufence or not.
        if early {
            let lib = dir.join("libearly.so");
            let built = Command::new("gcc")
                .args(["-O1", "-g", "-shared", "-fPIC", "-o"])
                .arg(&lib)
                .arg(c.join("early.c"))
                .output()
                .expect("running gcc");
            assert!(built.status.success(), "building libearly.so: {built:?}");
            // Debian links --as-needed: the program uses nothing of the library but its
            // constructor.
            args.push("-Wl,--no-as-needed".into());
            args.push(lib.into_os_string());
            args.push("-Wl,-rpath,$ORIGIN".into());
        }
        if let Some(a) = on {
            args.push(a.define.into());
            args.push(a.path().into_os_string());
        }
        args
    })
}

/// `ops.cc` (C++ operators), linked against the allocator `on` (None: glibc and libstdc++).
fn cxx_program(on: Option<Allocator>) -> PathBuf {
    let src = workspace_root().join("crates/ufence-preload/tests/c/allocators/ops.cc");
    let name = format!("ops-{}", on.map_or("glibc", |a| a.name));
    // -fsized-deallocation and -faligned-new are on by default for C++17: every form is used.
    compile(&name, "g++", |_| {
        let mut args = vec!["-std=c++17".into(), src.into_os_string()];
        if let Some(a) = on {
            args.push(a.path().into_os_string());
        }
        args
    })
}

/// Compiles `name` (once per test process) with `compiler -O2 -g -o name ARGS`, where `args`
/// is given the output directory.
fn compile(
    name: &str,
    compiler: &str,
    args: impl FnOnce(&Path) -> Vec<std::ffi::OsString>,
) -> PathBuf {
    static BUILT: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = BUILT.get_or_init(Default::default).lock().unwrap();
    let dir = target_dir()
        .join("allocator-tests")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    if out.exists() {
        return out;
    }
    let built = Command::new(require_command(compiler, compiler))
        .args(["-O2", "-g", "-o"])
        .arg(&out)
        .args(args(&dir))
        .output()
        .expect("running the compiler");
    assert!(
        built.status.success(),
        "building {name}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// Runs `prog args` with `LD_PRELOAD=preload` (None: no preload) and `UFENCE_OPTIONS=options`.
fn run(prog: &Path, args: &[&str], preload: Option<&str>, options: &str) -> Output {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_remove("LD_PRELOAD")
        .env("UFENCE_OPTIONS", options)
        .env(
            "UFENCE_RUNTIME_DIR",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/rt-allocators"),
        );
    if let Some(p) = preload {
        cmd.env("LD_PRELOAD", p);
    }
    cmd.output().expect("running the test program")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ufence() -> String {
    library().display().to_string()
}

/// The option sets a healthy program must run unchanged under: defaults, sampling off, every
/// allocation sampled, and a third of them (so that pool and allocator objects mix).
const OPTION_SETS: [&str; 4] = [
    "",
    "enabled=0",
    EVERY,
    "sample_rate=3:max_overhead=0:skip_covered_thresh=100",
];

fn assert_clean(out: &Output, expected_stdout: &str, what: &str) {
    assert!(
        out.status.success() && text(&out.stdout) == expected_stdout,
        "{what}: status {:?}, stdout {:?} (expected {expected_stdout:?}), stderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("UFENCE"),
        "{what}: ufence said something:\n{}",
        text(&out.stderr)
    );
}

/// The reproduction of redis's crash at start: `malloc`, `malloc_usable_size`, `free` with
/// jemalloc preloaded after ufence (and before it, where ufence is bypassed), and with each
/// allocator linked into the program.
#[test]
fn usable_size_goes_to_the_allocator_that_gave_the_memory() {
    let glibc = program(None);
    for a in ALL {
        let lib = a.path().display().to_string();
        for preload in [format!("{} {lib}", ufence()), format!("{lib} {}", ufence())] {
            for opts in OPTION_SETS {
                let out = run(&glibc, &["usable"], Some(&preload), opts);
                assert_clean(
                    &out,
                    "usable ok\n",
                    &format!("LD_PRELOAD='{preload}' {opts}"),
                );
            }
        }
        let linked = program(Some(a));
        for opts in OPTION_SETS {
            let out = run(&linked, &["usable"], Some(&ufence()), opts);
            assert_clean(&out, "usable ok\n", &format!("on {} {opts}", a.name));
        }
    }
}

/// A library's constructor allocates before ufence's constructor has run (the loader starts a
/// program's libraries first): the first call looks the allocator up, and memory from it goes
/// back to it (`malloc_usable_size`, `realloc`, `free` on jemalloc's memory are jemalloc's).
#[test]
fn calls_before_ufence_starts_reach_the_right_allocator() {
    for on in [None, Some(JEMALLOC), Some(TCMALLOC), Some(MIMALLOC)] {
        let prog = early_program(on);
        // Healthy without ufence: what follows tests ufence, not the program.
        let plain = run(&prog, &["usable"], None, "");
        assert_eq!(text(&plain.stderr), "early ok\n", "{on:?} without ufence");
        for opts in OPTION_SETS {
            let out = run(&prog, &["usable"], Some(&ufence()), opts);
            let what = format!("{on:?} {opts}");
            assert!(
                out.status.success() && text(&out.stdout) == "usable ok\n",
                "{what}: {out:?}"
            );
            assert_eq!(text(&out.stderr), "early ok\n", "{what}");
        }
    }
}

/// Every function of the family and each allocator's own API, on many objects: the output is
/// the same as without ufence, under every option set, and nothing is reported.
#[test]
fn clean_program_on_each_allocator_runs_unchanged() {
    for on in [None, Some(JEMALLOC), Some(TCMALLOC), Some(MIMALLOC)] {
        let prog = program(on);
        let plain = run(&prog, &["clean", "3000"], None, "");
        assert!(plain.status.success(), "{on:?} without ufence: {plain:?}");
        let expected = text(&plain.stdout);
        assert!(expected.starts_with("clean 3000 "), "{expected}");
        for opts in OPTION_SETS {
            let out = run(&prog, &["clean", "3000"], Some(&ufence()), opts);
            assert_clean(&out, &expected, &format!("{on:?} {opts}"));
        }
    }
}

/// The allocators' own size functions (`sallocx`, `tc_malloc_size`, `mi_usable_size`) and
/// frees (`sdallocx`, `tc_free_sized`, `mi_free_size`) on objects `malloc` put in the pool.
#[test]
fn allocators_own_api_accepts_pool_objects() {
    for a in ALL {
        let prog = program(Some(a));
        let out = run(&prog, &["ext-size"], Some(&ufence()), EVERY);
        assert_clean(&out, "ext-size ok\n", a.name);
    }
}

/// A use-after-free is caught on every allocator, whether the object was freed with `free` or
/// with the allocator's own function: that function handed the pool object back to ufence.
#[test]
fn use_after_free_is_caught_on_each_allocator() {
    for on in [None, Some(JEMALLOC), Some(TCMALLOC), Some(MIMALLOC)] {
        let prog = program(on);
        for (mode, freer) in [
            ("uaf", "main"),
            (
                "ext-uaf",
                match on.map(|a| a.name) {
                    Some("jemalloc") => "sdallocx",
                    Some("tcmalloc") => "tc_free_sized",
                    Some("mimalloc") => "mi_free_size",
                    _ => "main",
                },
            ),
        ] {
            let out = run(&prog, &[mode], Some(&ufence()), EVERY);
            let stderr = text(&out.stderr);
            let what = format!("{on:?} {mode}");
            assert!(out.status.success(), "{what}: {:?}\n{stderr}", out.status);
            let r = parse_report(&stderr);
            assert!(
                r.title.starts_with("use-after-free read in read_byte"),
                "{what}: {}\n{stderr}",
                r.title
            );
            assert!(r.headline.contains("Use-after-free read at"), "{what}");
            assert!(
                r.alloc.first().is_some_and(|f| f.function == "main"),
                "{what}: allocation stack {:?}",
                r.alloc
            );
            // The free stack starts in the program: ufence's own frames (its `free`, or its
            // `sdallocx`) are cut, and the allocator's are never reached.
            assert!(
                r.free.first().is_some_and(|f| f.function == "main"),
                "{what} (freed by {freer}): free stack {:?}",
                r.free
            );
            // Execution went on (on_error=continue) and read what the object held: 1 + 8 * 7.
            assert_eq!(text(&out.stdout), "read 57\n", "{what}");
        }
    }
}

/// C++ on each allocator: jemalloc, tcmalloc and mimalloc define `operator new` and `delete`
/// themselves, so ufence interposes every form of them. A clean program that uses all of them
/// prints what it prints without ufence; a new that cannot be served still runs the program's
/// new-handler and throws `std::bad_alloc` (or returns null for nothrow) through ufence's
/// operator; and a use-after-free of a `new[]`'d array is caught.
#[test]
fn cxx_operators_on_each_allocator() {
    for on in [None, Some(JEMALLOC), Some(TCMALLOC), Some(MIMALLOC)] {
        let prog = cxx_program(on);
        let plain = run(&prog, &["clean"], None, "");
        assert!(plain.status.success(), "{on:?} without ufence: {plain:?}");
        let expected = text(&plain.stdout);
        for opts in OPTION_SETS {
            let out = run(&prog, &["clean"], Some(&ufence()), opts);
            assert_clean(&out, &expected, &format!("C++ on {on:?} {opts}"));
        }

        // Out of memory ends as it does without ufence: std::bad_alloc after the handler ran
        // (glibc with libstdc++, jemalloc, tcmalloc), or mimalloc's own abort.
        let plain = run(&prog, &["huge"], None, "");
        if on.is_none() {
            assert_eq!(
                text(&plain.stdout),
                "bad_alloc after 1 handler call(s)\nnothrow: null\n"
            );
        }
        for opts in ["", EVERY] {
            let out = run(&prog, &["huge"], Some(&ufence()), opts);
            let what = format!("C++ out of memory on {on:?} {opts}");
            assert_eq!(out.status.code(), plain.status.code(), "{what}: {out:?}");
            assert_eq!(
                out.status.signal(),
                plain.status.signal(),
                "{what}: {out:?}"
            );
            assert_eq!(text(&out.stdout), text(&plain.stdout), "{what}");
            assert!(!text(&out.stderr).contains("UFENCE"), "{what}: {out:?}");
        }

        let out = run(&prog, &["uaf"], Some(&ufence()), EVERY);
        let stderr = text(&out.stderr);
        let what = format!("C++ use-after-free on {on:?}");
        assert!(out.status.success(), "{what}: {:?}\n{stderr}", out.status);
        let r = parse_report(&stderr);
        assert!(
            r.title.starts_with("use-after-free read in read_int"),
            "{what}: {}\n{stderr}",
            r.title
        );
        assert!(
            r.headline.contains("(in ufence-#"),
            "{what}: {}",
            r.headline
        );
        // The operator frames (ufence's, or the allocator's) are cut: both stacks start in main.
        for (stack, name) in [(&r.alloc, "allocation"), (&r.free, "free")] {
            assert!(
                stack.first().is_some_and(|f| f.function == "main"),
                "{what}: {name} stack {stack:?}"
            );
        }
        assert_eq!(text(&out.stdout), "read 15\n", "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// redis
// ---------------------------------------------------------------------------------------------

/// A redis-server on a loopback port, stopped (and waited for) when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(preload: Option<&str>, options: &str) -> Redis {
        let server = require_command("redis-server", "redis-server");
        let port = free_port();
        let dir = target_dir()
            .join("allocator-tests")
            .join(format!("redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(server);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .env_remove("LD_PRELOAD")
            .env("UFENCE_OPTIONS", options)
            .env("UFENCE_RUNTIME_DIR", dir.join("rt"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = preload {
            cmd.env("LD_PRELOAD", p);
        }
        let mut child = cmd.spawn().expect("starting redis-server");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "redis-server ({options}) exited at start with {status}:\n{}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port, dir }
    }

    fn cli(&self, args: &[&str]) -> String {
        let cli = require_command("redis-cli", "redis-tools");
        let out = Command::new(cli)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .env_remove("LD_PRELOAD")
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        text(&out.stdout)
    }

    /// Shuts the server down with SHUTDOWN NOSAVE and returns its exit status and output.
    fn shutdown(mut self) -> (std::process::ExitStatus, String) {
        let cli = require_command("redis-cli", "redis-tools");
        let _ = Command::new(cli)
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .output();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not shut down"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = String::new();
        use std::io::Read;
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut log);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        (status, log)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Debian's redis-server (on jemalloc) starts, serves and shuts down cleanly under ufence, at
/// the defaults and sampling every allocation, exercised by redis-cli and redis-benchmark.
#[test]
fn redis_on_jemalloc_runs_under_ufence() {
    JEMALLOC.path();
    let bench = require_command("redis-benchmark", "redis-tools");
    for options in ["", "sample_rate=1", EVERY] {
        let redis = Redis::start(Some(&ufence()), options);
        assert_eq!(redis.cli(&["set", "greeting", "hello"]), "OK\n");
        assert_eq!(redis.cli(&["get", "greeting"]), "hello\n");
        assert_eq!(redis.cli(&["rpush", "l", "a", "b", "c"]), "3\n");
        assert_eq!(redis.cli(&["lrange", "l", "0", "-1"]), "a\nb\nc\n");
        // The allocator in use is still jemalloc, not glibc's behind its back.
        let info = redis.cli(&["info", "memory"]);
        assert!(
            info.contains("mem_allocator:jemalloc"),
            "redis's allocator: {info}"
        );
        let out = Command::new(&bench)
            .args(["-p", &redis.port.to_string(), "-q", "-n", "3000"])
            .args(["-t", "set,get,lpush,lpop", "-c", "4"])
            .env_remove("LD_PRELOAD")
            .output()
            .expect("redis-benchmark");
        assert!(out.status.success(), "redis-benchmark: {out:?}");
        assert_eq!(
            text(&out.stdout).matches("requests per second").count(),
            4,
            "{}",
            text(&out.stdout)
        );
        assert_eq!(redis.cli(&["dbsize"]), "3\n");
        let (status, log) = redis.shutdown();
        assert!(
            status.success(),
            "redis-server ({options}) ended with {status}:\n{log}"
        );
        assert!(
            !log.contains("UFENCE"),
            "ufence reported ({options}):\n{log}"
        );
        assert!(
            log.contains("ready to exit, bye bye"),
            "redis did not shut down cleanly ({options}):\n{log}"
        );
    }
}
