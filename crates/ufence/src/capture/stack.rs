//! Stack capture for sampled allocations, frees and faults.
//!
//! Walks with [`unwind`]'s cached per-instruction rules (a few dozen instructions a frame),
//! and falls back to libgcc's `_Unwind_Backtrace` for any stack those rules cannot express
//! (a signal frame on the way, code without unwind tables). Both walk DWARF CFI, so both work
//! through code built without frame pointers (Debian's glibc has none), and both give the same
//! frames. libgcc finds unwind tables through the lock-free `_dl_find_object` on glibc >= 2.35,
//! so neither allocates nor takes a lock the interrupted code may hold. libgcc also steps
//! through the kernel's signal frame; the fast walk starts a fault's stack from the registers
//! the kernel saved instead.

use crate::unwind::{self, Step, Walker};
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Option `fast_unwind`: 0 makes every capture use libgcc's unwinder.
static FAST: AtomicBool = AtomicBool::new(true);

pub fn set_fast_unwind(on: bool) {
    FAST.store(on, Relaxed);
}

/// Walks the fast path handed to libgcc (for tests and benchmarks: a walk that should have
/// been fast and was not shows here).
static GAVE_UP: AtomicU64 = AtomicU64::new(0);

pub fn fast_walks_given_up() -> u64 {
    GAVE_UP.load(Relaxed)
}

/// Frames kept per stack.
pub const MAX_FRAMES: usize = 64;

/// A captured call stack: program counters, innermost first. Return addresses are stored minus
/// one so that every entry points inside its call instruction (what symbolizers expect); the
/// faulting instruction of an access stack is stored exactly.
#[derive(Clone, Copy)]
pub struct Stack {
    pub len: u32,
    pub frames: [usize; MAX_FRAMES],
}

impl Stack {
    pub const EMPTY: Stack = Stack {
        len: 0,
        frames: [0; MAX_FRAMES],
    };

    pub fn frames(&self) -> &[usize] {
        &self.frames[..self.len as usize]
    }

    /// Drops the `n` innermost frames.
    pub fn drop_innermost(&mut self, n: usize) {
        let len = self.len as usize;
        let n = n.min(len);
        self.frames.copy_within(n..len, 0);
        self.len = (len - n) as u32;
    }

    fn push(&mut self, pc: usize) -> bool {
        if (self.len as usize) < MAX_FRAMES {
            self.frames[self.len as usize] = pc;
            self.len += 1;
        }
        (self.len as usize) < MAX_FRAMES
    }
}

/// Bytes of delta-encoded frames a [`Packed`] stack holds.
pub const PACKED_BYTES: usize = 254;

/// A stack as a slot stores it: each frame as the zigzag varint of its difference from the
/// previous one. Frames of one module lie close together, so most take two or three bytes and
/// a full 64-frame stack fits in 256 bytes where the plain array takes 520 (GWP-ASan packs the
/// same way). Frames that do not fit are dropped from the outer end. `#[repr(C)]` and made of
/// bytes only: it lives in the control block, which `ufence objects` reads from another process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Packed {
    /// Frames stored.
    pub frames: u8,
    /// Bytes of `data` in use.
    pub used: u8,
    pub data: [u8; PACKED_BYTES],
}

const _: () = assert!(core::mem::size_of::<Packed>() == 256);

impl Packed {
    pub const EMPTY: Packed = Packed {
        frames: 0,
        used: 0,
        data: [0; PACKED_BYTES],
    };

    pub fn pack(st: &Stack) -> Packed {
        let mut out = Packed::EMPTY;
        let mut prev = 0u64;
        let mut used = 0usize;
        for &pc in st.frames() {
            let d = (pc as u64).wrapping_sub(prev) as i64;
            let mut z = ((d << 1) ^ (d >> 63)) as u64;
            let mut buf = [0u8; 10];
            let mut n = 0;
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    buf[n] = b;
                    n += 1;
                    break;
                }
                buf[n] = b | 0x80;
                n += 1;
            }
            if used + n > PACKED_BYTES {
                break;
            }
            out.data[used..used + n].copy_from_slice(&buf[..n]);
            used += n;
            out.frames += 1;
            prev = pc as u64;
        }
        out.used = used as u8;
        out
    }

    /// The frames, decoded. Bounded whatever the bytes say (the reader may be looking at a
    /// control block another process damaged).
    pub fn unpack(&self) -> Stack {
        let mut st = Stack::EMPTY;
        let data = &self.data[..(self.used as usize).min(PACKED_BYTES)];
        let mut prev = 0u64;
        let mut i = 0;
        while i < data.len() && (st.len as usize) < (self.frames as usize).min(MAX_FRAMES) {
            let mut z = 0u64;
            let mut shift = 0;
            loop {
                let Some(&b) = data.get(i) else { return st };
                i += 1;
                if shift < 64 {
                    z |= ((b & 0x7f) as u64) << shift;
                }
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
            prev = prev.wrapping_add(d as u64);
            st.frames[st.len as usize] = prev as usize;
            st.len += 1;
        }
        st
    }
}

#[repr(C)]
struct UnwindContext {
    _private: [u8; 0],
}

const URC_NO_REASON: i32 = 0;
const URC_END_OF_STACK: i32 = 5;

extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut UnwindContext, *mut c_void) -> i32,
        arg: *mut c_void,
    ) -> i32;
    fn _Unwind_GetIPInfo(ctx: *mut UnwindContext, ip_before_insn: *mut i32) -> usize;
    fn _Unwind_GetCFA(ctx: *mut UnwindContext) -> usize;
}

struct Walk<'a> {
    out: &'a mut Stack,
    /// Frames whose canonical frame address is at or below this are ufence's own (they were
    /// called from the allocator entry point whose locals sit at this address) and are cut.
    skip_below: usize,
}

extern "C" fn on_frame(ctx: *mut UnwindContext, arg: *mut c_void) -> i32 {
    // SAFETY: arg is the &mut Walk passed to _Unwind_Backtrace by `capture`, alive for the walk;
    // ctx is the unwinder's context for this frame.
    unsafe {
        let walk = &mut *(arg as *mut Walk);
        if _Unwind_GetCFA(ctx) <= walk.skip_below {
            return URC_NO_REASON;
        }
        let mut before = 0;
        let ip = _Unwind_GetIPInfo(ctx, &mut before);
        if ip == 0 {
            return URC_END_OF_STACK;
        }
        let pc = if before == 0 { ip - 1 } else { ip };
        if walk.out.push(pc) {
            URC_NO_REASON
        } else {
            URC_END_OF_STACK
        }
    }
}

/// A capture in progress, so that a caller may look at the innermost frames (a site's) before
/// paying for the whole walk. [`Capture::begin`], [`Capture::fill`] and [`Capture::finish`]
/// must be called from one function, whose frame the walk has stepped out to.
pub struct Capture {
    walk: Option<Walker>,
    stack: Stack,
    skip_below: usize,
    /// No more frames to take: the stack ended, is full, or libgcc took it whole.
    complete: bool,
    /// The fast walk gave up: libgcc takes the stack on the next `fill`.
    gave_up: bool,
}

impl Capture {
    /// Starts capturing the caller's stack, cutting every frame called from the frame whose
    /// locals lie at `entry_sp` (the address of a local of the allocator entry point).
    #[inline(never)]
    pub fn begin(entry_sp: usize) -> Capture {
        let mut c = Capture {
            walk: None,
            stack: Stack::EMPTY,
            skip_below: entry_sp,
            complete: false,
            gave_up: true,
        };
        if FAST.load(Relaxed) {
            let (pc, sp, bp) = unwind::here();
            c.walk = Walker::new(pc, sp, bp);
            c.gave_up = c.walk.is_none();
            // This function's own frame, then the caller's: the walk reads this frame's
            // memory, which is gone once it returns.
            for _ in 0..2 {
                c.advance();
            }
        }
        c
    }

    /// Takes one step of the fast walk.
    #[inline]
    fn advance(&mut self) {
        let Some(w) = self.walk.as_mut() else { return };
        if self.gave_up || self.complete {
            return;
        }
        match w.step() {
            Step::Frame { pc, sp } => {
                if sp > self.skip_below && !self.stack.push(pc) {
                    self.complete = true;
                }
            }
            Step::End => self.complete = true,
            Step::GiveUp => self.gave_up = true,
        }
    }

    /// Walks on until `frames` frames are kept or the stack ends.
    #[inline(never)]
    pub fn fill(&mut self, frames: usize) -> &Stack {
        while !self.complete && !self.gave_up && (self.stack.len as usize) < frames {
            self.advance();
        }
        if self.gave_up && !self.complete {
            if self.walk.is_some() {
                GAVE_UP.fetch_add(1, Relaxed);
            }
            self.stack = capture_libgcc(self.skip_below);
            self.complete = true;
        }
        &self.stack
    }

    /// The whole stack.
    pub fn finish(mut self) -> Stack {
        self.fill(MAX_FRAMES);
        self.stack
    }
}

/// Captures the caller's stack, cutting every frame called from the frame whose locals lie at
/// `entry_sp` (pass the address of a local of the allocator entry point).
#[inline(never)]
pub fn capture(entry_sp: usize) -> Stack {
    let mut c = Capture::begin(entry_sp);
    c.fill(MAX_FRAMES);
    c.stack
}

/// [`capture`] through libgcc's unwinder only (the fallback, and the reference for tests).
#[inline(never)]
pub fn capture_libgcc(entry_sp: usize) -> Stack {
    let mut out = Stack::EMPTY;
    capture_libgcc_into(&mut out, entry_sp);
    out
}

fn capture_libgcc_into(out: &mut Stack, entry_sp: usize) {
    *out = Stack::EMPTY;
    let mut walk = Walk {
        out,
        skip_below: entry_sp,
    };
    // SAFETY: on_frame matches the callback type and only uses `walk` during the call.
    unsafe { _Unwind_Backtrace(on_frame, (&mut walk as *mut Walk).cast()) };
}

/// The access stack of a fault at instruction `pc`, with the stack and frame pointers the
/// kernel saved (`sp`, `bp`), into `out`: walked from those registers, so it starts at the
/// faulting instruction. Falls back to [`capture_from_fault_libgcc`]. Unless `parse`, only
/// rules already cached are used (parsing takes more stack than a small alternate signal
/// stack may have left). One `Stack`, the caller's: this runs on the signal stack.
pub fn capture_from_fault(out: &mut Stack, pc: usize, sp: usize, bp: usize, parse: bool) {
    if FAST.load(Relaxed) && fast_from_fault(out, pc, sp, bp, parse) {
        return;
    }
    capture_from_fault_libgcc(out, pc);
}

#[inline(never)]
fn fast_from_fault(out: &mut Stack, pc: usize, sp: usize, bp: usize, parse: bool) -> bool {
    let Some(mut w) = Walker::new(pc, sp, bp) else {
        return false;
    };
    if !parse {
        w = w.cached_rules_only();
    }
    *out = Stack::EMPTY;
    loop {
        match w.step() {
            Step::Frame { pc, .. } => {
                if !out.push(pc) {
                    return true;
                }
            }
            Step::End => return true,
            Step::GiveUp => {
                GAVE_UP.fetch_add(1, Relaxed);
                return false;
            }
        }
    }
}

/// The access stack of a fault through libgcc: the handler's own stack is walked through the
/// signal frame and everything above the faulting instruction `fault_pc` is dropped. If the
/// unwinder cannot cross the signal frame, the stack is just the faulting instruction.
#[inline(never)]
pub fn capture_from_fault_libgcc(st: &mut Stack, fault_pc: usize) {
    capture_libgcc_into(st, 0);
    let n = st.len as usize;
    match st.frames[..n].iter().position(|&pc| pc == fault_pc) {
        Some(i) => {
            st.frames.copy_within(i..n, 0);
            st.len = (n - i) as u32;
        }
        None => {
            st.frames[0] = fault_pc;
            st.len = 1;
        }
    }
}

/// The address of a local of the caller's frame, used as `entry_sp` by allocator entry points.
#[inline(always)]
pub fn approx_sp() -> usize {
    let marker = 0u8;
    core::hint::black_box(&marker) as *const u8 as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_round_trip_and_size() {
        let mut st = Stack::EMPTY;
        // Frames in an executable, then in libc far away, as a real stack has them.
        for i in 0..MAX_FRAMES {
            let base = if i % 3 == 0 {
                0x7f3a_1c40_0000
            } else {
                0x5555_5555_0000
            };
            st.push(base + i * 0x1234 + 7);
        }
        let p = Packed::pack(&st);
        let back = p.unpack();
        assert!(back.len >= 32, "only {} frames fit", back.len);
        assert_eq!(back.frames(), &st.frames()[..back.len as usize]);
        // Nearby frames: all 64 fit.
        let mut near = Stack::EMPTY;
        for i in 0..MAX_FRAMES {
            near.push(0x5555_5555_0000 + i * 0x300);
        }
        let p = Packed::pack(&near);
        assert_eq!(p.unpack().frames(), near.frames());
        assert!((p.used as usize) < 64 * 4);
    }

    #[test]
    fn unpack_of_garbage_is_bounded() {
        let mut p = Packed::EMPTY;
        p.frames = 255;
        p.used = 255;
        p.data = [0xff; PACKED_BYTES];
        assert_eq!(p.unpack().len, 0);
        p.data = [0x01; PACKED_BYTES];
        assert_eq!(p.unpack().len as usize, MAX_FRAMES);
    }
}
