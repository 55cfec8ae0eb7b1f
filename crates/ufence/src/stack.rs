//! Stack capture for sampled allocations, frees and faults.
//!
//! Uses libgcc's `_Unwind_Backtrace`, which walks DWARF CFI and so works through code built
//! without frame pointers (Debian's glibc has none). On glibc >= 2.35 it finds unwind tables
//! through the lock-free `_dl_find_object`, so it neither allocates nor takes a lock the
//! interrupted code may hold. It also steps through the kernel's signal frame, which is how
//! the access stack of a fault reaches the faulting instruction.

use core::ffi::c_void;

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

    fn push(&mut self, pc: usize) -> bool {
        if (self.len as usize) < MAX_FRAMES {
            self.frames[self.len as usize] = pc;
            self.len += 1;
        }
        (self.len as usize) < MAX_FRAMES
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

/// Captures the caller's stack, cutting every frame called from the frame whose locals lie at
/// `entry_sp` (pass the address of a local of the allocator entry point, or 0 to keep all).
#[inline(never)]
pub fn capture(entry_sp: usize) -> Stack {
    let mut out = Stack::EMPTY;
    let mut walk = Walk {
        out: &mut out,
        skip_below: entry_sp,
    };
    // SAFETY: on_frame matches the callback type and only uses `walk` during the call.
    unsafe { _Unwind_Backtrace(on_frame, (&mut walk as *mut Walk).cast()) };
    out
}

/// The access stack of a fault: the handler's own stack is walked through the signal frame and
/// everything above the faulting instruction `fault_pc` is dropped. If the unwinder cannot
/// cross the signal frame, the stack is just the faulting instruction.
pub fn capture_from_fault(fault_pc: usize) -> Stack {
    // One Stack, shifted in place: this runs on the signal stack, which may be small.
    let mut st = capture(0);
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
    st
}

/// The address of a local of the caller's frame, used as `entry_sp` by allocator entry points.
#[inline(always)]
pub fn approx_sp() -> usize {
    let marker = 0u8;
    core::hint::black_box(&marker) as *const u8 as usize
}
