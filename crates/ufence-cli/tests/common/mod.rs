//! Helpers shared by the command's integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// libufence.so of this build profile, built if needed (cargo cannot depend on a cdylib).
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "ufence-preload"])
            .current_dir(root())
            .status()
            .expect("cargo build");
        assert!(status.success());
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_ufence"));
        let lib = exe.parent().unwrap().join("libufence.so");
        assert!(lib.is_file(), "{}", lib.display());
        lib
    })
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with its stdout a pipe whose reader has already gone (as `| head -1` once head
/// has its line), and checks it ends as Unix tools do: killed by SIGPIPE, nothing on stderr.
#[allow(dead_code)] // not every test binary that includes this module checks pipes
pub fn assert_quiet_on_closed_pipe(cmd: &mut Command) {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = cmd
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run ufence");
    assert_eq!(
        (out.status.code(), out.status.signal(), text(&out.stderr)),
        (None, Some(libc::SIGPIPE), String::new()),
        "{cmd:?}"
    );
}

/// `tests/c/NAME.c` compiled with debug info (`-g -O1`, so that reports and `objects` name file
/// and line), once per test process, into `CARGO_TARGET_TMPDIR/NAME/NAME`.
#[allow(dead_code)] // not every test binary that includes this module builds a C program
pub fn c_program(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let bin = dir.join(name);
    if built.iter().any(|b| b == name) {
        return bin;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out = Command::new(ufence_testkit::require_command("gcc", "gcc"))
        .args(["-g", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc");
    assert!(out.status.success(), "{}", text(&out.stderr));
    built.push(name.to_string());
    bin
}
