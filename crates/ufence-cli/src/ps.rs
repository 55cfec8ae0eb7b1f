//! `ufence ps`: the processes under ufence; `--all` adds stale files (a crashed process's last
//! counters), `--gc` removes them.

use crate::runtime::{self, Liveness};
use clap::ArgMatches;
use std::path::Path;

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let all = m.get_flag("all") || m.get_flag("gc");
    let gc = m.get_flag("gc");
    let dir = runtime::dir()?;
    println!(
        "{:>7}  {:<20}  {:>8}  {:>11}  {:>10}  {:>5}  {:>9}  COMMAND",
        "PID", "STATE", "UPTIME", "POOL", "SAMPLED", "BUGS", "INTERVAL"
    );
    let mut hidden = 0;
    for (path, snap) in runtime::list(&dir) {
        match snap {
            Ok(s) => {
                if !s.live() && !all {
                    hidden += 1;
                    continue;
                }
                let st = s.stats();
                let interval = if st.sample_interval_ms > 0 {
                    format!("{}ms", st.sample_interval_ms)
                } else {
                    "off".into()
                };
                println!(
                    "{:>7}  {:<20}  {:>8}  {:>11}  {:>10}  {:>5}  {:>9}  {}",
                    s.pid(),
                    s.liveness.word(),
                    if s.live() {
                        duration(s.uptime_ns())
                    } else {
                        "-".into()
                    },
                    format!("{}/{}", st.currently_allocated, s.header().nslots),
                    st.total_allocations,
                    st.total_bugs,
                    interval,
                    s.cmdline()
                );
                if gc && s.liveness != Liveness::Live {
                    remove(&path);
                }
            }
            Err(e) => {
                hidden += usize::from(!all);
                if all {
                    println!("{:>7}  {:<20}  {e}", "?", "unreadable");
                }
                if gc && pid_gone(&path) {
                    remove(&path);
                }
            }
        }
    }
    if hidden > 0 {
        eprintln!(
            "ufence: {hidden} stale or unreadable file{} not shown (ufence ps --all; --gc removes them)",
            if hidden == 1 { "" } else { "s" }
        );
    }
    Ok(0)
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => eprintln!("ufence: removed {}", path.display()),
        Err(e) => eprintln!("ufence: cannot remove {}: {e}", path.display()),
    }
}

/// For a file we cannot read: is the process its name gives gone?
fn pid_gone(path: &Path) -> bool {
    let pid = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// `1h02m`, `3m05s`, `12.3s`.
pub fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s >= 86_400 {
        format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600)
    } else if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ns as f64 / 1e9)
    }
}
