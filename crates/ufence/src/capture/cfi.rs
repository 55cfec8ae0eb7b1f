//! Call frame information (`.eh_frame`, found through `.eh_frame_hdr`), read in place from the
//! loaded module: for one program counter, the rule that recovers its caller's registers.
//!
//! Only the rules that x86-64 compilers emit for ordinary code are expressed: the canonical
//! frame address (CFA) is `rsp + N` or `rbp + N`, the return address sits at `CFA - 8`, and
//! `rbp` is either unchanged or saved at `CFA - M`. That is every frame of C, C++ and Rust code
//! with or without frame pointers. Anything else (the kernel's signal frame, CFA expressions,
//! stack realignment through another register) is [`Found::Unknown`]: the caller falls back to
//! libgcc's unwinder, which evaluates DWARF in full.
//!
//! Reads only the module's own unwind tables (mapped read-only by the loader), allocates
//! nothing and takes no lock: it runs on the sampled allocation path and in the fault handler.

use crate::dwarf::{read_sleb, read_uleb};
use crate::sys;

/// Where the caller's `rbp` is after the frame is unwound.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bp {
    /// Unchanged by this frame.
    Same,
    /// Saved at this offset from the CFA (negative).
    At(i64),
    /// Not recoverable (kept in another register or by an expression): a caller whose CFA is
    /// based on `rbp` cannot be unwound by the fast path.
    Lost,
}

/// How to unwind one frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rule {
    /// The CFA is `rbp + cfa_off` (else `rsp + cfa_off`).
    pub cfa_bp: bool,
    pub cfa_off: i64,
    pub bp: Bp,
}

/// What the unwind tables say about one program counter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Found {
    Rule(Rule),
    /// The return address is undefined: the outermost frame (`_start`, a thread's `clone3`).
    End,
    /// A rule this format cannot express, or tables it cannot read.
    Unknown,
    /// No module, or no unwind entry, covers the address.
    NoEntry,
}

/// Bounds every loop over table contents, so that damaged tables cannot hang a walk.
const MAX_STEPS: usize = 10_000;

/// A cursor over mapped unwind data. Reads are trusted to lie in the module's mapped tables,
/// as libgcc trusts them: `end` bounds each entry by its own length field.
#[derive(Clone, Copy)]
struct Cursor {
    at: usize,
    end: usize,
}

impl Cursor {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.at.checked_add(N)? > self.end {
            return None;
        }
        // SAFETY: within the entry whose length the module's tables give (see the type doc).
        let v = unsafe { core::ptr::read_unaligned(self.at as *const [u8; N]) };
        self.at += N;
        Some(v)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn uleb(&mut self) -> Option<u64> {
        read_uleb(|| self.u8())
    }
    fn sleb(&mut self) -> Option<i64> {
        read_sleb(|| self.u8())
    }
    fn skip(&mut self, n: u64) -> Option<()> {
        let to = self.at.checked_add(usize::try_from(n).ok()?)?;
        (to <= self.end).then(|| self.at = to)
    }

    /// A pointer in `DW_EH_PE_*` encoding `enc`; `data` is the base of `datarel`.
    fn pointer(&mut self, enc: u8, data: usize) -> Option<usize> {
        if enc == 0xff {
            return None;
        }
        let here = self.at;
        let v = match enc & 0x0f {
            0x00 => self.u64()? as usize,
            0x01 => self.uleb()? as usize,
            0x02 => self.u16()? as usize,
            0x03 => self.u32()? as usize,
            0x04 => self.u64()? as usize,
            0x09 => self.sleb()? as usize,
            0x0a => self.u16()? as i16 as isize as usize,
            0x0b => self.u32()? as i32 as isize as usize,
            0x0c => self.u64()? as usize,
            _ => return None,
        };
        let base = match enc & 0x70 {
            0x00 => 0,
            0x10 => here,
            0x30 => data,
            _ => return None,
        };
        if enc & 0x80 != 0 {
            // Indirect pointers appear only for personality routines, never for code ranges.
            return None;
        }
        Some(base.wrapping_add(v))
    }
}

/// DWARF register numbers of x86-64.
const RBP: u64 = 6;
const RSP: u64 = 7;
const RA: u64 = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    Same,
    Undefined,
    At(i64),
    Other,
}

#[derive(Clone, Copy)]
struct Row {
    cfa_reg: u64,
    cfa_off: i64,
    cfa_expr: bool,
    bp: Reg,
    ra: Reg,
}

const INITIAL: Row = Row {
    cfa_reg: RSP,
    cfa_off: 8,
    cfa_expr: false,
    bp: Reg::Same,
    ra: Reg::Other,
};

/// The rule for the instruction at `pc` (the exact instruction: a caller passes a return
/// address minus one).
pub fn find(pc: usize) -> Found {
    let Some(obj) = sys::find_object(pc) else {
        return Found::NoEntry;
    };
    if obj.eh_frame_hdr == 0 {
        return Found::NoEntry;
    }
    let Some(fde) = search_hdr(obj.eh_frame_hdr, pc) else {
        return Found::Unknown;
    };
    if fde == 0 {
        return Found::NoEntry;
    }
    run_fde(fde, pc).unwrap_or(Found::Unknown)
}

/// The FDE that may cover `pc`, from `.eh_frame_hdr`'s sorted table (0 if none does); None if
/// the header has a form this reader does not know.
fn search_hdr(hdr: usize, pc: usize) -> Option<usize> {
    let mut c = Cursor {
        at: hdr,
        end: hdr + 4,
    };
    let version = c.u8()?;
    let ptr_enc = c.u8()?;
    let count_enc = c.u8()?;
    let table_enc = c.u8()?;
    // Every linker since 2004 writes datarel sdata4 pairs: 8 bytes an entry.
    if version != 1 || table_enc != 0x3b {
        return None;
    }
    c.end = hdr + 4 + 16;
    c.pointer(ptr_enc, hdr)?;
    let count = c.pointer(count_enc, hdr)?;
    let table = c.at;
    let entry = |i: usize| -> (usize, usize) {
        // SAFETY: i < count, and the table of `count` 8-byte entries follows the header.
        let (loc, fde) = unsafe {
            (
                core::ptr::read_unaligned((table + 8 * i) as *const i32),
                core::ptr::read_unaligned((table + 8 * i + 4) as *const i32),
            )
        };
        (
            hdr.wrapping_add(loc as isize as usize),
            hdr.wrapping_add(fde as isize as usize),
        )
    };
    if count == 0 || count > 1 << 28 || pc < entry(0).0 {
        return Some(0);
    }
    // The last entry starting at or below pc.
    let (mut lo, mut hi) = (0usize, count);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if entry(mid).0 <= pc {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(entry(lo).1)
}

/// A CIE's facts an FDE needs.
struct Cie {
    code_align: u64,
    data_align: i64,
    ra_reg: u64,
    fde_enc: u8,
    has_aug_data: bool,
    insns: Cursor,
}

fn entry_bounds(at: usize) -> Option<Cursor> {
    let mut c = Cursor { at, end: at + 4 };
    let len = c.u32()?;
    if len == 0 || len == u32::MAX {
        return None;
    }
    Some(Cursor {
        at: c.at,
        end: c.at.checked_add(len as usize)?,
    })
}

fn parse_cie(at: usize) -> Option<Cie> {
    let mut c = entry_bounds(at)?;
    if c.u32()? != 0 {
        return None;
    }
    let version = c.u8()?;
    if version != 1 && version != 3 {
        return None;
    }
    let mut aug = [0u8; 8];
    let mut n = 0;
    loop {
        let b = c.u8()?;
        if b == 0 {
            break;
        }
        if n == aug.len() {
            return None;
        }
        aug[n] = b;
        n += 1;
    }
    let aug = &aug[..n];
    let code_align = c.uleb()?;
    let data_align = c.sleb()?;
    let ra_reg = if version == 1 {
        c.u8()? as u64
    } else {
        c.uleb()?
    };
    let mut fde_enc = 0u8;
    let has_aug_data = aug.first() == Some(&b'z');
    if has_aug_data {
        let len = c.uleb()?;
        let data_end = c.at.checked_add(usize::try_from(len).ok()?)?;
        for &a in &aug[1..] {
            match a {
                b'R' => fde_enc = c.u8()?,
                b'L' => {
                    c.u8()?;
                }
                b'P' => {
                    let enc = c.u8()?;
                    // The personality pointer's value is not needed: read past it.
                    let enc = enc & 0x7f;
                    c.pointer(enc, 0)?;
                }
                // A signal frame (the kernel's `__restore_rt`): its rules are expressions.
                b'S' => return None,
                _ => break,
            }
        }
        c.at = data_end;
    } else if !aug.is_empty() {
        return None;
    }
    Some(Cie {
        code_align,
        data_align,
        ra_reg,
        fde_enc,
        has_aug_data,
        insns: c,
    })
}

fn run_fde(fde: usize, pc: usize) -> Option<Found> {
    let mut c = entry_bounds(fde)?;
    let cie_field = c.at;
    let cie_ptr = c.u32()?;
    if cie_ptr == 0 {
        return None;
    }
    let cie = parse_cie(cie_field.checked_sub(cie_ptr as usize)?)?;
    if cie.ra_reg != RA || cie.code_align == 0 {
        return None;
    }
    let start = c.pointer(cie.fde_enc, 0)?;
    let range = c.pointer(cie.fde_enc & 0x0f, 0)?;
    if pc < start || pc - start >= range {
        return Some(Found::NoEntry);
    }
    if cie.has_aug_data {
        let len = c.uleb()?;
        c.skip(len)?;
    }
    let mut row = INITIAL;
    let mut steps = 0;
    let mut loc = start;
    let mut cie_insns = cie.insns;
    execute(
        &mut cie_insns,
        &cie,
        &mut row,
        None,
        usize::MAX,
        &mut loc,
        &mut steps,
    )?;
    let initial = row;
    execute(
        &mut c,
        &cie,
        &mut row,
        Some(&initial),
        pc,
        &mut loc,
        &mut steps,
    )?;
    Some(express(&row))
}

/// Runs CFA instructions until the location passes `pc`.
fn execute(
    c: &mut Cursor,
    cie: &Cie,
    row: &mut Row,
    initial: Option<&Row>,
    pc: usize,
    loc: &mut usize,
    steps: &mut usize,
) -> Option<()> {
    let mut saved = [INITIAL; 4];
    let mut depth = 0usize;
    let da = cie.data_align;
    let set = |row: &mut Row, reg: u64, r: Reg| match reg {
        RBP => row.bp = r,
        RA => row.ra = r,
        _ => {}
    };
    while c.at < c.end {
        *steps += 1;
        if *steps > MAX_STEPS {
            return None;
        }
        let op = c.u8()?;
        let advance = match op >> 6 {
            1 => Some((op & 0x3f) as u64),
            2 => {
                let off = c.uleb()? as i64 * da;
                set(row, (op & 0x3f) as u64, Reg::At(off));
                None
            }
            3 => {
                let reg = (op & 0x3f) as u64;
                let r = initial.map_or(Reg::Same, |i| restored(i, reg));
                set(row, reg, r);
                None
            }
            _ => match op {
                0x00 => None,
                0x02 => Some(c.u8()? as u64),
                0x03 => Some(c.u16()? as u64),
                0x04 => Some(c.u32()? as u64),
                0x05 => {
                    let reg = c.uleb()?;
                    let off = c.uleb()? as i64 * da;
                    set(row, reg, Reg::At(off));
                    None
                }
                0x06 => {
                    let reg = c.uleb()?;
                    let r = initial.map_or(Reg::Same, |i| restored(i, reg));
                    set(row, reg, r);
                    None
                }
                0x07 => {
                    set(row, c.uleb()?, Reg::Undefined);
                    None
                }
                0x08 => {
                    set(row, c.uleb()?, Reg::Same);
                    None
                }
                0x09 => {
                    let reg = c.uleb()?;
                    c.uleb()?;
                    set(row, reg, Reg::Other);
                    None
                }
                0x0a => {
                    *saved.get_mut(depth)? = *row;
                    depth += 1;
                    None
                }
                0x0b => {
                    depth = depth.checked_sub(1)?;
                    // The CFA is not part of the remembered state in GCC's reading: restore
                    // registers and CFA together, as libgcc does.
                    *row = saved[depth];
                    None
                }
                0x0c => {
                    row.cfa_reg = c.uleb()?;
                    row.cfa_off = c.uleb()? as i64;
                    row.cfa_expr = false;
                    None
                }
                0x0d => {
                    row.cfa_reg = c.uleb()?;
                    row.cfa_expr = false;
                    None
                }
                0x0e => {
                    row.cfa_off = c.uleb()? as i64;
                    None
                }
                0x0f => {
                    let len = c.uleb()?;
                    c.skip(len)?;
                    row.cfa_expr = true;
                    None
                }
                0x10 | 0x16 => {
                    let reg = c.uleb()?;
                    let len = c.uleb()?;
                    c.skip(len)?;
                    set(row, reg, Reg::Other);
                    None
                }
                0x11 => {
                    let reg = c.uleb()?;
                    let off = c.sleb()? * da;
                    set(row, reg, Reg::At(off));
                    None
                }
                0x12 => {
                    row.cfa_reg = c.uleb()?;
                    row.cfa_off = c.sleb()? * da;
                    row.cfa_expr = false;
                    None
                }
                0x13 => {
                    row.cfa_off = c.sleb()? * da;
                    None
                }
                0x14 => {
                    let reg = c.uleb()?;
                    c.uleb()?;
                    set(row, reg, Reg::Other);
                    None
                }
                0x15 => {
                    let reg = c.uleb()?;
                    c.sleb()?;
                    set(row, reg, Reg::Other);
                    None
                }
                0x2e => {
                    c.uleb()?;
                    None
                }
                0x2f => {
                    let reg = c.uleb()?;
                    let off = -(c.uleb()? as i64) * da;
                    set(row, reg, Reg::At(off));
                    None
                }
                // DW_CFA_set_loc and anything unknown.
                _ => return None,
            },
        };
        if let Some(delta) = advance {
            let next = loc.checked_add((delta * cie.code_align) as usize)?;
            if next > pc {
                return Some(());
            }
            *loc = next;
        }
    }
    Some(())
}

fn restored(initial: &Row, reg: u64) -> Reg {
    match reg {
        RBP => initial.bp,
        RA => initial.ra,
        _ => Reg::Same,
    }
}

fn express(row: &Row) -> Found {
    match row.ra {
        Reg::Undefined => return Found::End,
        Reg::At(-8) => {}
        _ => return Found::Unknown,
    }
    if row.cfa_expr || (row.cfa_reg != RSP && row.cfa_reg != RBP) {
        return Found::Unknown;
    }
    let bp = match row.bp {
        Reg::Same => Bp::Same,
        Reg::At(off) => Bp::At(off),
        Reg::Undefined | Reg::Other => Bp::Lost,
    };
    Found::Rule(Rule {
        cfa_bp: row.cfa_reg == RBP,
        cfa_off: row.cfa_off,
        bp,
    })
}
