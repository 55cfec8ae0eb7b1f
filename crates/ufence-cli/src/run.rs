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
    let lib = preload::find(m.get_one::<String>("lib").map(String::as_str))?;
    let mut argv = m.get_many::<String>("command").expect("required");
    let program = argv.next().expect("at least one");
    let mut cmd = Command::new(program);
    cmd.args(argv);
    preload::apply(&mut cmd, &lib, &pairs);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run '{program}': {e}"))?;
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
