//! Finding libufence.so and building the environment that preloads it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use ufence_core::fmt::Escaped;
use ufence_core::options::{parse_into, quote_value, OptionError, Options};

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
/// option pairs appended to any existing `UFENCE_OPTIONS` (later pairs win), each value quoted
/// as the parser reads it back, so that a path with spaces, `:` or `,` stays one value and a
/// value can never inject another option. Errs, changing nothing, on a value that cannot be
/// passed faithfully, or when the inherited `UFENCE_OPTIONS` has an unbalanced quote (which
/// would swallow the pairs appended after it).
pub fn apply(cmd: &mut Command, lib: &Path, extra: &[(String, String)]) -> Result<(), String> {
    let mut quoted = Vec::new();
    for (k, v) in extra {
        let q = quote_value(v).ok_or_else(|| {
            format!("the value of --{k} cannot be passed in UFENCE_OPTIONS: it holds both ' and \"")
        })?;
        quoted.push(format!("{k}={q}"));
    }
    let mut opts = std::env::var("UFENCE_OPTIONS").unwrap_or_default();
    if !quoted.is_empty() {
        let mut unbalanced = None;
        parse_into(&mut Options::default(), opts.as_bytes(), &mut |pair, e| {
            if e == OptionError::BadQuote {
                unbalanced = Some(String::from_utf8_lossy(pair).into_owned());
            }
        });
        if let Some(pair) = unbalanced {
            return Err(format!(
                "UFENCE_OPTIONS has an unbalanced quote in '{}'; fix it or unset it",
                Escaped(pair.as_bytes())
            ));
        }
    }
    let mut preload = OsString::from(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload);
    if !quoted.is_empty() {
        for pair in quoted {
            if !opts.is_empty() {
                opts.push(':');
            }
            opts.push_str(&pair);
        }
        cmd.env("UFENCE_OPTIONS", opts);
    }
    Ok(())
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
