//! `ufence set PID KEY=VALUE...`: changes runtime options of a running process through its
//! control block, as `echo 500 > /sys/module/kfence/parameters/sample_interval` does for
//! KFENCE. Every pair is validated against the option table before anything is written.

use crate::runtime::{self, Snapshot};
use clap::ArgMatches;
use ufence_core::options::{Options, SPECS};

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let pid = m.get_one::<String>("pid").expect("required");
    let pairs: Vec<&String> = m
        .get_many::<String>("settings")
        .expect("required")
        .collect();
    let (wanted, keys) = validate(pairs.iter().map(|p| p.as_str()))?;
    let snap = runtime::for_pid(pid)?;
    for line in apply(&snap, &wanted, &keys)? {
        println!("{line}");
    }
    Ok(0)
}

/// Checks `KEY=VALUE` pairs against the option table: the options they make and their keys,
/// or a one-line error naming the first bad pair (then nothing may be written).
pub fn validate<'a>(
    pairs: impl Iterator<Item = &'a str>,
) -> Result<(Options, Vec<&'static str>), String> {
    let mut wanted = Options::DEFAULT;
    let mut keys = Vec::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("'{pair}' is not KEY=VALUE"))?;
        let spec = SPECS
            .iter()
            .find(|s| s.name == key)
            .ok_or_else(|| format!("unknown option '{key}' (see `ufence options`)"))?;
        if !spec.runtime {
            return Err(format!(
                "{key} cannot change while the process runs (set it at start)"
            ));
        }
        wanted
            .set(key.as_bytes(), value.as_bytes())
            .map_err(|_| format!("bad value '{value}' for {key} (expects {spec})"))?;
        keys.push(spec.name);
    }
    // The largest size a process at the default max_object_size samples.
    let largest = Options::DEFAULT.largest_sampled();
    if keys.contains(&"sample_sizes") && wanted.sample_sizes.beyond(largest) {
        let mut why = String::new();
        let _ = wanted.sample_sizes.write_beyond(largest, &mut why);
        eprintln!("ufence: warning: {why}");
    }
    Ok((wanted, keys))
}

/// Writes the options `keys` of `wanted` into the live process of `snap`; returns one
/// `pid P: KEY OLD -> NEW` line per key. The one place a knob is changed from outside
/// (`ufence set`, `ufence plan --apply`).
pub fn apply(snap: &Snapshot, wanted: &Options, keys: &[&str]) -> Result<Vec<String>, String> {
    let mapped = runtime::LiveBlock::map(snap, "change")?;
    let live = mapped.block();
    let old = live.knobs.read_into(&Options::DEFAULT);
    for key in keys {
        live.knobs.apply(key, wanted);
    }
    let new = live.knobs.read_into(&Options::DEFAULT);
    let mut lines = Vec::new();
    for key in keys {
        let (mut before, mut after) = (String::new(), String::new());
        old.write_value(key, &mut before);
        new.write_value(key, &mut after);
        lines.push(format!("pid {}: {key} {before} -> {after}", snap.pid()));
    }
    Ok(lines)
}
