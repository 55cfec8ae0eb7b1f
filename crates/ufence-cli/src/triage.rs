//! `ufence triage PATH... [--format text|json|markdown] [--new-since DATE] [--debug-dir DIR]`:
//! a fleet's JSON reports grouped by bug (the grouping is `ufence_fleet::triage`).

use crate::symbolize::Offline;
use clap::ArgMatches;
use std::path::PathBuf;
use ufence_fleet::triage::{self, Resolve, Triage};

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let paths: Vec<&String> = m.get_many::<String>("paths").unwrap().collect();
    let format = m.get_one::<String>("format").map_or("text", String::as_str);
    let new_since = m
        .get_one::<String>("new-since")
        .map(|d| ufence_fleet::time::parse_utc(d))
        .transpose()?;
    let dirs: Vec<PathBuf> = m
        .get_many::<PathBuf>("debug-dir")
        .map(|d| d.cloned().collect())
        .unwrap_or_default();
    // Every path must exist before any work starts: a typo is one line, not a partial answer.
    for p in paths.iter().filter(|p| p.as_str() != "-") {
        std::fs::metadata(p).map_err(|e| {
            format!(
                "cannot read {}: {e}",
                ufence_core::fmt::escape(p.as_bytes())
            )
        })?;
    }
    let mut offline = (!dirs.is_empty()).then(|| Offline::new(&dirs));
    let mut t = Triage::new(offline.as_mut().map(|o| o as &mut dyn Resolve));
    t.verbose = m.get_flag("verbose");
    for p in paths {
        if p == "-" {
            t.add_lines(std::io::stdin().lock(), "stdin");
        } else {
            t.add_path(std::path::Path::new(p))?;
        }
    }
    if t.skipped > 0 {
        eprintln!(
            "ufence: skipped {} file{} or line{} that are not ufence reports (damaged, truncated, foreign or unreadable){}",
            t.skipped,
            if t.skipped == 1 { "" } else { "s" },
            if t.skipped == 1 { "" } else { "s" },
            if t.verbose { "" } else { "; -v lists them" }
        );
    }
    let groups = t.groups(new_since);
    let out = match format {
        "json" => triage::json(&t, &groups),
        "markdown" => triage::markdown(&t, &groups),
        _ => triage::text(&t, &groups),
    };
    print!("{out}");
    Ok(0)
}
