//! The fast stack walk: unwinds from per-instruction rules ([`cfi::Rule`]) kept in a small
//! fixed-size lock-free cache, so that a walk through code seen before costs a few dozen
//! instructions a frame instead of libgcc's thousand (which finds, parses and interprets the
//! DWARF of every frame again on every walk).
//!
//! The cache is one `AtomicU64` per entry: the program counter's high bits as the tag and the
//! rule packed beside them, so an entry is written and read whole, with no lock the interrupted
//! code could hold (the walk runs in the fault handler too) and no allocation. A miss parses the
//! module's `.eh_frame` in place (`cfi::find`) and fills the entry. Entries describe code at an
//! address: when a library is unloaded, another may be mapped at the same address, so
//! [`forget`] empties the cache (the preload calls it from `dlclose`).
//!
//! Stack memory is read only inside the bounds of the walking thread's stack
//! ([`sys::stack_bounds`]), and each frame must lie above the previous one: a corrupt stack
//! ends the walk early, it never faults. Frames the rules cannot express (signal frames,
//! realigned stacks, code without unwind tables) make the walk give up ([`Step::GiveUp`]) and
//! the caller redoes it with libgcc's full unwinder.

use crate::cfi::{self, Bp, Found, Rule};
use crate::sys;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

const ENTRIES: usize = 4096;
static CACHE: [AtomicU64; ENTRIES] = [const { AtomicU64::new(0) }; ENTRIES];

const KIND_RULE: u64 = 1;
const KIND_END: u64 = 2;
const KIND_UNKNOWN: u64 = 3;
const TAG_SHIFT: u32 = 28;

#[inline(always)]
fn index(pc: usize) -> usize {
    (pc ^ (pc >> 12) ^ (pc >> 24)) & (ENTRIES - 1)
}

/// Packs `found` for `pc`: kind (2 bits), CFA on rbp (1), rbp kind (2), CFA offset / 8 (14),
/// rbp's save slot / -8 (9), and `pc >> 12` as the tag (36 bits; with the index this names
/// the whole address). None for what does not fit: it is used, just not kept.
fn encode(pc: usize, found: Found) -> Option<u64> {
    if pc >> 48 != 0 {
        return None;
    }
    let tag = ((pc >> 12) as u64) << TAG_SHIFT;
    let body = match found {
        Found::End => KIND_END,
        Found::Unknown => KIND_UNKNOWN,
        Found::NoEntry => return None,
        Found::Rule(r) => {
            if r.cfa_off < 0 || r.cfa_off % 8 != 0 || r.cfa_off / 8 >= 1 << 14 {
                return None;
            }
            let (bk, bo) = match r.bp {
                Bp::Same => (0, 0),
                Bp::Lost => (2, 0),
                Bp::At(off) => {
                    if off >= 0 || off % 8 != 0 || -off / 8 >= 1 << 9 {
                        return None;
                    }
                    (1, (-off / 8) as u64)
                }
            };
            KIND_RULE | (r.cfa_bp as u64) << 2 | bk << 3 | ((r.cfa_off / 8) as u64) << 5 | bo << 19
        }
    };
    Some(tag | body)
}

#[inline(always)]
fn decode(w: u64) -> Found {
    match w & 3 {
        KIND_END => Found::End,
        KIND_UNKNOWN => Found::Unknown,
        _ => Found::Rule(Rule {
            cfa_bp: w & 4 != 0,
            cfa_off: (((w >> 5) & 0x3fff) * 8) as i64,
            bp: match (w >> 3) & 3 {
                0 => Bp::Same,
                1 => Bp::At(-((((w >> 19) & 0x1ff) * 8) as i64)),
                _ => Bp::Lost,
            },
        }),
    }
}

/// The rule for the instruction at `pc`, from the cache or, if `parse`, the module's tables
/// (else a miss is `Unknown`).
#[inline]
pub fn rule_for(pc: usize, parse: bool) -> Found {
    let slot = &CACHE[index(pc)];
    let w = slot.load(Relaxed);
    if w != 0 && w >> TAG_SHIFT == (pc >> 12) as u64 && pc >> 48 == 0 {
        return decode(w);
    }
    if !parse {
        return Found::Unknown;
    }
    let found = cfi::find(pc);
    if let Some(w) = encode(pc, found) {
        slot.store(w, Relaxed);
    }
    found
}

/// Empties the rule cache: code was unloaded, and other code may come at its addresses.
pub fn forget() {
    for e in &CACHE {
        e.store(0, Relaxed);
    }
}

/// Entries in use (for tests).
pub fn cached_rules() -> usize {
    CACHE.iter().filter(|e| e.load(Relaxed) != 0).count()
}

/// One step of a walk.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A frame: its program counter (the instruction itself for the first frame of a fault,
    /// else the return address minus one, as libgcc reports them) and its stack pointer.
    Frame { pc: usize, sp: usize },
    /// The stack ends here (outermost frame, or a corrupt or truncated stack).
    End,
    /// The rules cannot take the walk further: redo it with the full unwinder.
    GiveUp,
}

/// A walk in progress: the registers of the current frame.
#[derive(Clone, Copy)]
pub struct Walker {
    pc: usize,
    sp: usize,
    bp: Option<usize>,
    lo: usize,
    hi: usize,
    /// The frame's rule, looked up when the frame was reported.
    pending: Option<Rule>,
    done: bool,
    /// Parse unwind tables on a cache miss (a few KiB of stack); else give up.
    parse: bool,
}

impl Walker {
    /// A walk starting at the instruction `pc` with these registers (a fault's context, or
    /// the caller's own registers). None when `sp` is on no stack the walk can bound.
    pub fn new(pc: usize, sp: usize, bp: usize) -> Option<Walker> {
        let (lo, hi) = sys::stack_bounds(sp)?;
        Some(Walker {
            pc,
            sp,
            bp: Some(bp),
            lo,
            hi,
            pending: None,
            done: false,
            parse: true,
        })
    }

    /// Makes a cache miss give the walk up rather than parse unwind tables: for a signal
    /// handler on a small alternate stack.
    pub fn cached_rules_only(mut self) -> Walker {
        self.parse = false;
        self
    }

    fn read(&self, addr: usize) -> Option<usize> {
        if addr < self.lo || addr.checked_add(8)? > self.hi {
            return None;
        }
        // SAFETY: within the walking thread's stack, between the walk's first stack pointer
        // and the stack's top, all mapped (see `sys::stack_bounds`).
        Some(unsafe { core::ptr::read_unaligned(addr as *const usize) })
    }

    /// The next frame: reports the current one, then moves to its caller.
    #[inline]
    pub fn step(&mut self) -> Step {
        if self.done {
            return Step::End;
        }
        if let Some(rule) = self.pending.take() {
            match self.unwind(rule) {
                Some(true) => {}
                Some(false) => {
                    self.done = true;
                    return Step::End;
                }
                None => return Step::GiveUp,
            }
        }
        match rule_for(self.pc, self.parse) {
            Found::Rule(r) => self.pending = Some(r),
            Found::End => self.done = true,
            Found::Unknown | Found::NoEntry => return Step::GiveUp,
        }
        Step::Frame {
            pc: self.pc,
            sp: self.sp,
        }
    }

    /// Moves to the caller of the current frame. Some(false) at the end of the stack (a zero
    /// return address, or a frame the bounds refuse); None when only the full unwinder can go
    /// on.
    fn unwind(&mut self, rule: Rule) -> Option<bool> {
        let base = if rule.cfa_bp { self.bp? } else { self.sp };
        let cfa = base.wrapping_add(rule.cfa_off as usize);
        // Each frame lies above the last; a CFA that does not is a corrupt stack.
        if cfa <= self.sp {
            return Some(false);
        }
        let Some(ra) = self.read(cfa - 8) else {
            return Some(false);
        };
        let bp = match rule.bp {
            Bp::Same => self.bp,
            Bp::Lost => None,
            Bp::At(off) => match self.read(cfa.wrapping_add(off as usize)) {
                Some(v) => Some(v),
                None => return Some(false),
            },
        };
        if ra == 0 {
            return Some(false);
        }
        self.sp = cfa;
        self.bp = bp;
        self.pc = ra - 1;
        Some(true)
    }
}

/// The caller's registers where this is inlined: its program counter, stack pointer and
/// frame pointer, all read at one instruction so that they describe one state.
#[inline(always)]
pub fn here() -> (usize, usize, usize) {
    let (pc, sp, bp): (usize, usize, usize);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads three registers; writes only the outputs.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (pc, sp, bp) = (0, 0, 0);
    }
    (pc, sp, bp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_the_cache_word() {
        let pc = 0x7f3a_1c40_5a7b;
        for found in [
            Found::End,
            Found::Unknown,
            Found::Rule(Rule {
                cfa_bp: false,
                cfa_off: 8,
                bp: Bp::Same,
            }),
            Found::Rule(Rule {
                cfa_bp: true,
                cfa_off: 16,
                bp: Bp::At(-16),
            }),
            Found::Rule(Rule {
                cfa_bp: false,
                cfa_off: 0x1_0008,
                bp: Bp::Lost,
            }),
        ] {
            let w = encode(pc, found).unwrap();
            assert_eq!(w >> TAG_SHIFT, (pc >> 12) as u64);
            assert_eq!(decode(w), found);
        }
        // What does not fit is not cached.
        let odd = Rule {
            cfa_bp: false,
            cfa_off: 12,
            bp: Bp::Same,
        };
        assert_eq!(encode(pc, Found::Rule(odd)), None);
        let huge = Rule {
            cfa_bp: false,
            cfa_off: 1 << 20,
            bp: Bp::Same,
        };
        assert_eq!(encode(pc, Found::Rule(huge)), None);
        assert_eq!(encode(pc, Found::NoEntry), None);
    }
}
