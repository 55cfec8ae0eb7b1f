//! A setuid-root program built with `Guarded`, started by an ordinary user: its environment
//! (UFENCE_OPTIONS, UFENCE_RUNTIME_DIR, XDG_RUNTIME_DIR) is the caller's and must not steer
//! it (report files into /etc, sample_rate=1, a control file in the caller's directory).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The probe example, built once, and two copies: setuid root, and plain.
fn probes() -> &'static (PathBuf, PathBuf) {
    static P: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    P.get_or_init(|| {
        // SAFETY: geteuid cannot fail.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "needs root: the test installs a setuid-root program (README's test command runs as root in CI)"
        );
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "ufence", "--example", "setuid_probe"])
            .current_dir(&root)
            .status()
            .expect("cargo build");
        assert!(st.success());
        let built =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../debug/examples/setuid_probe");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("setuid");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let suid = dir.join("probe-setuid");
        let plain = dir.join("probe-plain");
        std::fs::copy(&built, &suid).unwrap();
        std::fs::copy(&built, &plain).unwrap();
        std::os::unix::fs::chown(&suid, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        (suid, plain)
    })
}

/// Runs `probe` as the second user with a hostile environment; returns (stdout, stderr) and
/// the runtime directory the caller offered.
fn run_as_user(probe: &Path, name: &str) -> (String, String, PathBuf) {
    let (uid, gid) = ufence_testkit::second_user();
    let offered = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("setuid-rt-{name}"));
    let _ = std::fs::remove_dir_all(&offered);
    std::fs::create_dir_all(&offered).unwrap();
    std::os::unix::fs::chown(&offered, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&offered, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = ufence_testkit::as_second_user(probe)
        .env(
            "UFENCE_OPTIONS",
            "sample_rate=1:max_overhead=0:report_dir=/etc:num_objects=7",
        )
        .env("UFENCE_RUNTIME_DIR", &offered)
        .env("XDG_RUNTIME_DIR", &offered)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        offered,
    )
}

#[test]
fn a_setuid_program_ignores_its_callers_environment() {
    let (suid, _) = probes();
    let (uid, _) = ufence_testkit::second_user();
    let (out, err, offered) = run_as_user(suid, "setuid");
    assert!(out.starts_with(&format!("uid={uid} euid=0\n")), "{out}");
    // The program's defaults, not the caller's options.
    assert!(
        out.contains("sample_rate=0 ") && out.contains("num_objects=255 "),
        "{out}"
    );
    assert!(out.contains("report_dir=(unset)"), "{out}");
    assert_eq!(
        err,
        "ufence: note: setuid/setgid program (secure execution): UFENCE_OPTIONS ignored\n"
    );
    // Its control file did not go to the directory the caller offered.
    assert_eq!(std::fs::read_dir(&offered).unwrap().count(), 0);
    assert_eq!(std::fs::metadata(suid).unwrap().uid(), 0);
}

/// The same program without the setuid bit takes the same environment: the test above
/// sees a difference only secure execution explains.
#[test]
fn the_same_program_not_setuid_takes_its_environment() {
    let (_, plain) = probes();
    let (out, err, _) = run_as_user(plain, "plain");
    assert!(
        out.contains("sample_rate=1 ") && out.contains("num_objects=7 "),
        "{out}"
    );
    assert!(out.contains("report_dir=/etc"), "{out}");
    assert_eq!(err, "");
}

/// `ufence run` on a setuid program, which the loader would run without the preload: one line
/// saying so, status 2, and the program does not run.
#[test]
fn ufence_run_refuses_a_setuid_program() {
    let (suid, _) = probes();
    let ufence = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../debug/ufence");
    let st = Command::new(env!("CARGO"))
        .args(["build", "-p", "ufence-cli"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .status()
        .unwrap();
    assert!(st.success());
    let out = ufence_testkit::as_second_user(&ufence)
        .args(["run", "--"])
        .arg(suid)
        .env_remove("UFENCE_OPTIONS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "ufence: '{}' is setuid (runs as uid 0): the loader ignores LD_PRELOAD in such a program, so ufence cannot watch it; not run (a Rust program can link ufence::Guarded)\n",
            suid.display()
        )
    );
}
