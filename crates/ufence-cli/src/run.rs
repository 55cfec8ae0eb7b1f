//! `ufence run [--OPTION VALUE]... -- PROGRAM [ARGS]...`

use crate::preload;
use clap::ArgMatches;
use std::process::Command;
use ufence_core::options::{Options, SPECS};

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    // Validate every option here, with the detector's own parser, so that a typo is a clear
    // error before the program starts rather than a warning inside it.
    let mut pairs = Vec::new();
    let mut check = Options::DEFAULT;
    for spec in SPECS {
        if let Some(v) = m.get_one::<String>(spec.name) {
            check
                .set(spec.name.as_bytes(), v.as_bytes())
                .map_err(|_| format!("bad value '{v}' for --{} (expects {spec})", spec.name))?;
            pairs.push((spec.name.to_string(), v.clone()));
        }
    }
    let mut argv = m.get_many::<String>("command").expect("required");
    let program = argv.next().expect("at least one");
    if program.starts_with('-') && !after_dashdash(program) {
        // clap takes anything after the known flags as the program (so that `ufence run ls -l`
        // works): a misspelt option would otherwise be "cannot run '--bogus'".
        let name = program.split('=').next().unwrap_or(program);
        return Err(format!(
            "unknown option '{name}' for run (`ufence options` lists them; a program whose name starts with '-' goes after --)"
        ));
    }
    // Before looking for the library: the refusal is about the program, whatever the library.
    if let Some(why) = secure_exec(program) {
        return Err(format!(
            "'{program}' is {why}: the loader ignores LD_PRELOAD in such a program, so ufence cannot watch it; not run (a Rust program can link ufence::Guarded)"
        ));
    }
    let lib = preload::find(m.get_one::<String>("lib").map(String::as_str))?;
    // Reports name inlined functions through this binary (`symbolizer`), wherever the library
    // came from, unless the command line or UFENCE_OPTIONS chose one.
    if !pairs.iter().any(|(k, _)| k == "symbolizer") && !env_sets("symbolizer") {
        if let Ok(exe) = std::env::current_exe() {
            if let Some(exe) = exe.to_str() {
                pairs.push(("symbolizer".to_string(), exe.to_string()));
            }
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(argv);
    preload::apply(&mut cmd, &lib, &pairs)?;
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            // As env(1), timeout(1) and the shells: 127 when there is no such program, 126
            // when it is there but cannot be run, so that a script tells them from the
            // program's own statuses.
            eprintln!("ufence: cannot run '{program}': {e}");
            return Ok(match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            });
        }
    };
    // Like system(3): while the program runs, the terminal's SIGINT/SIGQUIT are its business,
    // not ours (set after spawning: an ignored signal would be inherited across exec).
    // SAFETY: setting a signal to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for '{program}': {e}"))?;
    Ok(preload::exit_code(status))
}

/// Whether the inherited UFENCE_OPTIONS sets option `key`.
fn env_sets(key: &str) -> bool {
    let Ok(text) = std::env::var("UFENCE_OPTIONS") else {
        return false;
    };
    let mut a = Options::DEFAULT;
    let _ = a.set(key.as_bytes(), b"0");
    let mut b = Options::DEFAULT;
    let _ = b.set(key.as_bytes(), b"1");
    // Set by the text if the text makes both starting points agree on its value.
    ufence_core::options::parse_into(&mut a, text.as_bytes(), &mut |_, _| {});
    ufence_core::options::parse_into(&mut b, text.as_bytes(), &mut |_, _| {});
    let (mut va, mut vb) = (String::new(), String::new());
    a.write_value(key, &mut va);
    b.write_value(key, &mut vb);
    va == vb
}

/// Whether `program` came after a `--` on the command line (then a leading '-' is its name).
fn after_dashdash(program: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let run = args.iter().position(|a| a == "run").unwrap_or(0);
    let rest = &args[run + 1..];
    match (
        rest.iter().position(|a| a == "--"),
        rest.iter().position(|a| a == program),
    ) {
        (Some(d), Some(p)) => d < p,
        _ => false,
    }
}

/// Why `program` would run in secure-execution mode for us (setuid to another user, setgid to
/// another group), where glibc drops LD_PRELOAD: then `ufence run` would run it unwatched.
fn secure_exec(program: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = if program.contains('/') {
        std::path::PathBuf::from(program)
    } else {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())?
    };
    let meta = std::fs::metadata(path).ok()?;
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if meta.mode() & libc::S_ISUID != 0 && meta.uid() != euid {
        Some(format!("setuid (runs as uid {})", meta.uid()))
    } else if meta.mode() & libc::S_ISGID != 0 && meta.mode() & 0o010 != 0 && meta.gid() != egid {
        Some(format!("setgid (runs as gid {})", meta.gid()))
    } else {
        None
    }
}
