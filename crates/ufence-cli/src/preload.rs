//! Finding libufence.so and building the environment that preloads it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The library to preload: `--lib`, then `$UFENCE_LIB`, then `libufence.so` next to this
/// binary (where `cargo build --release` puts both).
pub fn find(explicit: Option<&str>) -> Result<PathBuf, String> {
    let candidate = match explicit {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("UFENCE_LIB") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find this executable: {e}"))?;
                exe.parent().unwrap_or(Path::new(".")).join("libufence.so")
            }
        },
    };
    if !candidate.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release`, or pass --lib PATH or set UFENCE_LIB",
            candidate.display()
        ));
    }
    // LD_PRELOAD needs a path the loader can open from any working directory.
    candidate
        .canonicalize()
        .map_err(|e| format!("{}: {e}", candidate.display()))
}

/// Sets up `cmd` to run under `lib`: prepended to any existing `LD_PRELOAD`, with `extra`
/// option pairs appended to any existing `UFENCE_OPTIONS` (later pairs win).
pub fn apply(cmd: &mut Command, lib: &Path, extra: &[(String, String)]) {
    let mut preload = OsString::from(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload);
    if !extra.is_empty() {
        let mut opts = std::env::var("UFENCE_OPTIONS").unwrap_or_default();
        for (k, v) in extra {
            if !opts.is_empty() {
                opts.push(':');
            }
            opts.push_str(&format!("{k}={v}"));
        }
        cmd.env("UFENCE_OPTIONS", opts);
    }
}

/// The shell's convention for a child's end: its exit code, or 128+N when signal N killed it.
pub fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => (128 + s) as u8,
        _ => 1,
    }
}
