//! KFENCE's covered allocation sites (`skip_covered_thresh`): once the pool is fuller than the
//! threshold, an allocation from a site that already has an object in the pool is skipped, so
//! that the remaining slots go to sites not seen yet. A site is the hash of the allocation's top
//! frames; the set of sites in the pool is a counting Bloom filter (two counters per site, four
//! counters per slot), incremented when a sampled object is allocated and decremented when it
//! is freed. False positives (a new site taken for a covered one) are possible and rare; false
//! negatives are not.

use crate::sys;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Frames that make up a site: ufence's own entry frames plus the program's innermost callers.
pub const SITE_FRAMES: usize = 16;

pub struct Covered {
    counters: *const AtomicU32,
    mask: usize,
}

// SAFETY: the counters are atomics in a mapping that lives forever.
unsafe impl Sync for Covered {}
// SAFETY: as above.
unsafe impl Send for Covered {}

impl Covered {
    /// A filter sized for a pool of `nslots`: four counters per slot, a power of two.
    pub fn new(nslots: usize) -> Option<Covered> {
        let n = (nslots * 4).next_power_of_two();
        let mem = sys::map_rw(n * core::mem::size_of::<AtomicU32>())?;
        Some(Covered {
            counters: mem.cast(),
            mask: n - 1,
        })
    }

    fn counter(&self, i: usize) -> &AtomicU32 {
        // SAFETY: i is masked into the mapping's n counters, zeroed by the kernel.
        unsafe { &*self.counters.add(i & self.mask) }
    }

    /// The site's two counters. The site hash is mixed again first (MurmurHash3's 64-bit
    /// finaliser): its low bit is always set and hashes of neighbouring sites are correlated, so
    /// taken as it is it used half the counters for the first index and gave about twice an
    /// ideal filter's false positives (measured by the fleet simulator against the model).
    fn indices(h: u64) -> [usize; 2] {
        let mut m = h;
        m ^= m >> 33;
        m = m.wrapping_mul(0xff51_afd7_ed55_8ccd);
        m ^= m >> 33;
        m = m.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        m ^= m >> 33;
        [m as usize, (m >> 32) as usize]
    }

    pub fn add(&self, h: u64) {
        for i in Self::indices(h) {
            self.counter(i).fetch_add(1, Relaxed);
        }
    }

    pub fn remove(&self, h: u64) {
        for i in Self::indices(h) {
            let _ = self
                .counter(i)
                .fetch_update(Relaxed, Relaxed, |c| c.checked_sub(1));
        }
    }

    /// Forgets every site (the fleet simulator reuses one filter for many machines).
    pub fn clear(&self) {
        for i in 0..=self.mask {
            self.counter(i).store(0, Relaxed);
        }
    }

    pub fn contains(&self, h: u64) -> bool {
        Self::indices(h)
            .iter()
            .all(|&i| self.counter(i).load(Relaxed) > 0)
    }
}

/// Whether a sample from a site is given up as covered: the pool is fuller than `thresh`
/// percent (`occupancy` is per mille), this is not test mode (`sample_rate=1`), and the site
/// already has an object in the pool (`in_pool`, asked last: it reads the filter).
pub fn skips(thresh: u64, occupancy: u64, test_mode: bool, in_pool: impl FnOnce() -> bool) -> bool {
    !test_mode && thresh < 100 && occupancy > thresh * 10 && in_pool()
}

/// The site of an allocation: a hash of its top frames.
pub fn site_hash(frames: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &pc in frames.iter().take(SITE_FRAMES) {
        h = (h ^ pc as u64).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    // Never 0, so that 0 can mean "no site" in a slot.
    h | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_and_out() {
        let c = Covered::new(16).unwrap();
        let a = site_hash(&[1, 2, 3]);
        let b = site_hash(&[1, 2, 4]);
        assert_ne!(a, b);
        assert!(!c.contains(a));
        c.add(a);
        c.add(a);
        assert!(c.contains(a));
        assert!(!c.contains(b));
        c.remove(a);
        assert!(c.contains(a), "one object of the site is still in the pool");
        c.remove(a);
        assert!(!c.contains(a));
        c.remove(a); // never below zero
        c.add(b);
        assert!(c.contains(b) && !c.contains(a));
    }

    /// Sites shaped like real ones: the same outer frames, inner frames at nearby call sites of
    /// one module; and the fleet simulator's one-frame sites at consecutive addresses.
    fn sites(shape: usize, i: usize) -> u64 {
        let base = 0x5555_5555_0000usize;
        match shape {
            0 => site_hash(&[
                base + 0x1140 + 0x30 * (i % 37),
                base + 0x2200 + 0x18 * (i / 37),
                base + 0x3000,
                0x7fff_f7c2_7249,
            ]),
            _ => site_hash(&[1000 + i]),
        }
    }

    #[test]
    fn false_positives_close_to_an_ideal_filter() {
        // 255 slots: 1024 counters. With 200 sites in, an ideal filter with two independent
        // hashes takes (1 - e^(-400/1024))^2 = 10.4 % of new sites for covered ones.
        for shape in 0..2 {
            let c = Covered::new(255).unwrap();
            for i in 0..200 {
                c.add(sites(shape, i));
            }
            let probes = 200..20_200;
            let fp = probes
                .clone()
                .filter(|&i| c.contains(sites(shape, i)))
                .count();
            let rate = fp as f64 / probes.len() as f64;
            eprintln!("shape {shape}: false-positive rate {rate:.3}");
            assert!(
                rate < 0.13,
                "shape {shape}: false-positive rate {rate:.3} (ideal 0.104)"
            );
        }
    }
}
