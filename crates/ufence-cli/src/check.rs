//! `--check` of `ufence objects` and `ufence stats`: asks a live process to check the canaries
//! of all its live sampled objects, through its control block (no signal, no thread: the
//! process serves the request on its next sampling slow path), and waits a bounded time for
//! the answer. The process reports each damaged object itself, on its stderr (and in its
//! `report_dir`), as still allocated.

use crate::runtime::{self, Snapshot};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::time::{Duration, Instant};

/// How long the process may take to come by its slow path.
const WAIT: Duration = Duration::from_secs(5);

/// Asks for the check and waits for it; says on stderr what came of it. An error only when
/// the request cannot be made at all.
pub fn request(snap: &Snapshot) -> Result<(), String> {
    let mapped = runtime::LiveBlock::map(snap, "check")?;
    let live = mapped.block();
    let mine = live.check.asked.fetch_add(1, AcqRel) + 1;
    let start = Instant::now();
    let served = loop {
        if live.check.done.load(Acquire) >= mine {
            break true;
        }
        if start.elapsed() > WAIT {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let found = live.check.found.load(Relaxed);
    drop(mapped);
    if served {
        let s = if found == 1 { "" } else { "s" };
        eprintln!(
            "ufence: pid {}: canary check: {found} damaged live object{s}{}",
            snap.pid(),
            if found > 0 {
                " (reported by the process on its stderr)"
            } else {
                ""
            }
        );
    } else {
        eprintln!(
            "ufence: pid {}: canary check asked; not served within {} s (the process checks on its next allocation that reaches the sampling slow path)",
            snap.pid(),
            WAIT.as_secs()
        );
    }
    Ok(())
}
