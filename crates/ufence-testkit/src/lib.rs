//! What ufence's tests need from outside the workspace (a real `sqlite3`, `tmux`, a Prometheus
//! server, another allocator), found or installed in one place.
//!
//! README's test command must pass on a fresh machine, and a test that silently skips because
//! a tool is missing is not a pass. So a test asks [`require_command`] or [`require_file`]:
//! what is there is used; what is not is installed from Debian's packages when the tests run as
//! root with `apt-get` at hand (quietly, once, serialised between test processes by a lock
//! file); otherwise the test fails with one line saying what to install.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The path of command `name`, installing Debian package `package` first if it is missing.
/// Panics with one line naming the package when it is neither there nor installable.
pub fn require_command(name: &str, package: &str) -> PathBuf {
    if let Some(p) = which(name) {
        return p;
    }
    install(package, &format!("command `{name}`"));
    which(name).unwrap_or_else(|| {
        panic!("needs command `{name}`: package `{package}` installed but `{name}` is not on PATH")
    })
}

/// `path`, installing Debian package `package` first if the file is missing.
pub fn require_file(path: &str, package: &str) -> PathBuf {
    let p = Path::new(path);
    if !p.exists() {
        install(package, path);
    }
    assert!(
        p.exists(),
        "needs {path}: package `{package}` installed but the file is not there"
    );
    p.to_path_buf()
}

/// Serialises installs between the threads of one test binary; the lock file does so between
/// test binaries that cargo runs one after another or side by side.
static INSTALLING: Mutex<()> = Mutex::new(());

fn install(package: &str, what: &str) {
    let _guard = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let fail = |why: &str| -> ! {
        panic!("needs {what}: install it with `apt-get install {package}` ({why})")
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        fail("not root, so the tests cannot install it themselves");
    }
    if which("apt-get").is_none() {
        fail("no apt-get on this machine");
    }
    let lock = File::create(std::env::temp_dir().join("ufence-testkit-apt.lock"))
        .unwrap_or_else(|e| fail(&format!("cannot create the install lock: {e}")));
    // SAFETY: flock on a descriptor this function owns; released when `lock` is dropped.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    if installed(package) {
        return;
    }
    eprintln!("note: installing `{package}` for the tests (apt-get)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    let mut out = apt(&["install", "-y", "-qq", "--no-install-recommends", package]);
    if !matches!(&out, Ok(o) if o.status.success()) {
        // A fresh machine's package lists may be empty or old.
        let _ = apt(&["update", "-qq"]);
        out = apt(&["install", "-y", "-qq", "--no-install-recommends", package]);
    }
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            fail(&format!("apt-get failed: {}", last.trim()))
        }
        Err(e) => fail(&format!("cannot run apt-get: {e}")),
    }
}

/// Whether dpkg has `package` installed (another test binary may have installed it while this
/// one waited for the lock).
fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The unprivileged user the tests run programs as when they need a second user (a runtime
/// directory squatted by someone else, a setuid program started by an ordinary user).
pub const SECOND_USER: &str = "ufence-tester";

/// The uid and gid of [`SECOND_USER`], created first (`useradd`, no home, no login shell) if
/// it does not exist; serialised between test processes like [`require_command`]'s installs.
/// Panics with one line when it cannot be had (tests not run as root).
pub fn second_user() -> (u32, u32) {
    // Found (or installed) before the lock below: require_command takes it too.
    let useradd = require_command("useradd", "passwd");
    let _guard = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let lookup = || -> Option<(u32, u32)> {
        let id = |flag: &str| -> Option<u32> {
            let o = Command::new("id").args([flag, SECOND_USER]).output().ok()?;
            String::from_utf8_lossy(&o.stdout).trim().parse().ok()
        };
        Some((id("-u")?, id("-g")?))
    };
    if let Some(ids) = lookup() {
        return ids;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs a second user `{SECOND_USER}`: run the tests as root, or create it with `useradd {SECOND_USER}`");
    }
    let lock = File::create(std::env::temp_dir().join("ufence-testkit-useradd.lock"))
        .unwrap_or_else(|e| panic!("cannot create the useradd lock: {e}"));
    // SAFETY: flock on a descriptor this function owns; released when `lock` is dropped.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    if let Some(ids) = lookup() {
        return ids;
    }
    let out = Command::new(useradd)
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SECOND_USER,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run useradd: {e}"));
    // 9: the user exists (another test process made it meanwhile).
    assert!(
        out.status.success() || out.status.code() == Some(9),
        "useradd {SECOND_USER} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    lookup().unwrap_or_else(|| panic!("useradd made no user {SECOND_USER}"))
}

/// A command that runs `program` as [`SECOND_USER`] (through `setpriv`: its uid, gid and no
/// supplementary groups; the environment is the caller's to set).
pub fn as_second_user(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let (uid, gid) = second_user();
    let mut cmd = Command::new(require_command("setpriv", "util-linux"));
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    cmd
}

/// A loopback port that was free a moment ago (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// `GET path` from `addr` (host:port) over plain HTTP/1.0: the status and the body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP header in {resp:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Percent-encodes a URL query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
