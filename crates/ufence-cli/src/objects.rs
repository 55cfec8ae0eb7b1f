//! `ufence objects PID`: every slot of the pool, in the shape of KFENCE's
//! `/sys/kernel/debug/kfence/objects`: `ufence-#N unused`, or the object line followed by its
//! allocation (and free) record with a symbolized stack; entries separated by a dashed line.
//!
//! Stacks are symbolized against the live process's mappings (blazesym reads its
//! `/proc/PID/maps` and the ELF and DWARF of each module: function, file and line). A stale
//! file's process is gone, so its frames are printed as raw addresses.

use crate::runtime::{self, Snapshot};
use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use clap::ArgMatches;
use std::collections::HashMap;
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use ufence_core::control::{Record, Slot, ALLOCATED, FREED, FREEING, UNUSED};
use ufence_core::fmt::escape;

const RULE: &str = "---------------------------------";

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let pid = m.get_one::<String>("pid").expect("required");
    let mut snap = runtime::for_pid(pid)?;
    if m.get_flag("check") {
        crate::check::request(&snap)?;
        // What the check changed (reported objects, counters) is read afresh.
        snap = runtime::for_pid(pid)?;
    }
    if !snap.live() {
        eprintln!(
            "ufence: process {} is {}; these are its last objects (stacks unsymbolized)",
            snap.pid(),
            snap.liveness.word()
        );
    }
    let f = runtime::open(&snap.path, false)?;
    let h = snap.header();
    let mut slots = Vec::with_capacity(h.nslots as usize);
    for i in 0..h.nslots as usize {
        slots.push(runtime::read_slot(&f, h, i));
    }
    let names = symbolize(&snap, &slots);
    let now_s = snap.uptime_ns() as f64 / 1e9;
    let mut out = String::new();
    for (i, slot) in slots.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out, "{RULE}");
        }
        let Some(s) = slot else {
            let _ = writeln!(out, "ufence-#{i} (changing too fast to read)");
            continue;
        };
        let state = s.state.load(std::sync::atomic::Ordering::Relaxed);
        if state == UNUSED {
            let _ = writeln!(out, "ufence-#{i} unused");
            continue;
        }
        ufence_core::write_object_line(&mut out, i, s, (h.page_size as usize).max(1));
        let _ = writeln!(out, "{}", if state == ALLOCATED { "" } else { " (freed)" });
        let _ = writeln!(out);
        record(&mut out, "allocated", &s.alloc, now_s, &names);
        if state == FREED || state == FREEING {
            let _ = writeln!(out);
            record(&mut out, "freed", &s.free, now_s, &names);
        }
    }
    print!("{out}");
    Ok(0)
}

/// A symbolized frame: its text, and whether it is ufence's own or the allocator's entry
/// (cut from the top of a stack, as KFENCE cuts its own frames).
struct Name {
    text: String,
    internal: bool,
}

fn is_internal(name: &str, module: Option<&std::ffi::OsStr>) -> bool {
    let m = module.map(|m| m.to_string_lossy()).unwrap_or_default();
    m.ends_with("/libufence.so")
        || name.starts_with("ufence::")
        || name.starts_with("<ufence::")
        || name.starts_with("__rust_")
        || name.starts_with("__rdl_")
        || name.starts_with("alloc::alloc::")
}

fn record(out: &mut String, what: &str, r: &Record, now_s: f64, names: &HashMap<u64, Name>) {
    let t = r.time_ns as f64 / 1e9;
    let name_end = r.thread_name.iter().position(|&c| c == 0).unwrap_or(16);
    let _ = writeln!(
        out,
        "{what} by thread {} ({}) at {t:.6}s ({:.6}s ago):",
        r.tid,
        escape(&r.thread_name[..name_end]),
        (now_s - t).max(0.0)
    );
    let st = r.stack();
    if st.frames().is_empty() {
        let _ = writeln!(out, " (no stack)");
    }
    let cut = st
        .frames()
        .iter()
        .take_while(|&&pc| names.get(&(pc as u64)).is_some_and(|n| n.internal))
        .count();
    for (n, &pc) in st.frames()[cut..].iter().enumerate() {
        match names.get(&(pc as u64)) {
            Some(name) => {
                let _ = writeln!(out, " #{n} {}", name.text);
            }
            None => {
                let _ = writeln!(out, " #{n} {pc:#x}");
            }
        }
    }
}

/// Names for every frame of every record, from the live process; empty if it is gone.
fn symbolize(snap: &Snapshot, slots: &[Option<Slot>]) -> HashMap<u64, Name> {
    let mut names = HashMap::new();
    if !snap.live() {
        return names;
    }
    let mut addrs: Vec<u64> = slots
        .iter()
        .flatten()
        .filter(|s| s.state.load(std::sync::atomic::Ordering::Relaxed) != UNUSED)
        .flat_map(|s| {
            let mut v: Vec<u64> = s.alloc.stack().frames().iter().map(|&p| p as u64).collect();
            v.extend(s.free.stack().frames().iter().map(|&p| p as u64));
            v
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return names;
    }
    let mut process = Process::new(snap.pid().into());
    // Symbolic paths from /proc/PID/maps: map_files needs CAP_SYS_ADMIN.
    process.map_files = false;
    process.perf_map = false;
    let src = Source::Process(process);
    let symbolizer = Symbolizer::new();
    // One module blazesym cannot read fails the whole batch: then go address by address, so
    // that the others still get their names.
    let found = symbolizer
        .symbolize(&src, Input::AbsAddr(&addrs))
        .unwrap_or_else(|_| {
            addrs
                .iter()
                .map(|a| {
                    symbolizer
                        .symbolize_single(&src, Input::AbsAddr(*a))
                        .unwrap_or(Symbolized::Unknown(
                            blazesym::symbolize::Reason::IgnoredError,
                        ))
                })
                .collect()
        });
    for (addr, sym) in addrs.iter().zip(found) {
        if let Symbolized::Sym(s) = sym {
            // Names and paths come from the program's files: escaped for the terminal.
            let mut text = format!("{}+{:#x}", escape(s.name.as_bytes()), s.offset);
            if let Some(ci) = &s.code_info {
                let file = ci.to_path();
                let file = escape(file.as_os_str().as_bytes());
                match ci.line {
                    Some(l) => {
                        let _ = write!(text, " ({file}:{l})");
                    }
                    None => {
                        let _ = write!(text, " ({file})");
                    }
                }
            } else if let Some(m) = &s.module {
                let m = std::path::Path::new(m);
                let _ = write!(
                    text,
                    " ({})",
                    escape(m.file_name().unwrap_or(m.as_os_str()).as_bytes())
                );
            }
            let internal = is_internal(&s.name, s.module.as_deref());
            names.insert(*addr, Name { text, internal });
        }
    }
    names
}
