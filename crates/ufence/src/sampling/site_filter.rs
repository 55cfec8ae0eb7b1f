//! The user's site filters, `sample_only=TEXT` and `skip=TEXT`, for hunting one crash: a
//! sampled allocation is kept only if one of its top frames (or, for `skip`, none of them) has
//! TEXT in its module's file name or its function's demangled name.
//!
//! Deciding means symbolizing the allocation's stack, which maps files and scans symbol tables:
//! far too slow to do for every sample. Each site (the hash of its top frames, as for covered
//! sites) is judged once and the verdict cached in a small lock-free table.

use crate::covered::SITE_FRAMES;
use crate::fmt::BufWriter;
use crate::options::InlineText;
use crate::stack::Stack;
use crate::symbolize::{Demangled, Symbolizer};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

const CACHE: usize = 1024;
const PROBES: usize = 4;

/// Cached verdicts: the site hash with its low bit replaced by the verdict (1 = keep). Site
/// hashes always have their low bit set, so 0 marks an empty entry.
static VERDICTS: [AtomicU64; CACHE] = [const { AtomicU64::new(0) }; CACHE];

/// True when the sampled allocation with this stack may go to the pool.
pub fn keep(site: u64, stack: &Stack, only: &InlineText, skip: &InlineText) -> bool {
    if only.is_empty() && skip.is_empty() {
        return true;
    }
    let key = site & !1;
    let start = (site >> 1) as usize % CACHE;
    for k in 0..PROBES {
        let v = VERDICTS[(start + k) % CACHE].load(Relaxed);
        if v != 0 && v & !1 == key {
            return v & 1 == 1;
        }
    }
    let verdict = judge(stack, only, skip);
    let entry = key | verdict as u64;
    let free = (0..PROBES).any(|k| {
        VERDICTS[(start + k) % CACHE]
            .compare_exchange(0, entry, Relaxed, Relaxed)
            .is_ok()
    });
    if !free {
        // Full around here: the newest site replaces the first, so that a program with more
        // sites than the table still finds most of its verdicts.
        VERDICTS[start].store(entry, Relaxed);
    }
    verdict
}

/// Judges exactly the frames the site hash covers (`covered::SITE_FRAMES`), less ufence's and
/// the allocator's own at the top: two stacks with one hash always get the same verdict.
fn judge(stack: &Stack, only: &InlineText, skip: &InlineText) -> bool {
    let mut sym = Symbolizer::new();
    let mut site = *stack;
    site.len = site.len.min(SITE_FRAMES as u32);
    let cut = crate::report::frames_to_cut(&mut sym, &site);
    let (mut matched_only, mut matched_skip) = (false, false);
    for &pc in site.frames().iter().skip(cut) {
        let f = sym.lookup(pc);
        let base = f.module.rsplit(|&c| c == b'/').next().unwrap_or(f.module);
        let mut name = BufWriter::<512>::new();
        if let Some((n, _)) = f.function {
            let _ = write!(name, "{}", Demangled(n));
        }
        let has = |t: &InlineText| {
            !t.is_empty()
                && (contains(base, t.as_bytes()) || contains(name.as_bytes(), t.as_bytes()))
        };
        matched_only |= has(only);
        matched_skip |= has(skip);
    }
    (only.is_empty() || matched_only) && !matched_skip
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}
