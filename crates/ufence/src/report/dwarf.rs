//! Reading ELF files for file:line without an allocator: sections by name, the GNU build-id,
//! and the DWARF line-number program (`.debug_line`, versions 2 to 5).
//!
//! Everything works on a byte slice (a mapped file) and every read is bounds-checked, so a
//! truncated, hostile or unexpected file yields `None`, never a fault, a panic or an
//! allocation. The work is bounded by the size of `.debug_line`: one lookup decodes each line
//! program at most once, without recursion. Compressed debug sections (`SHF_COMPRESSED`) are
//! not decoded in process: they give no line (the offline `ufence symbolize` reads them).

/// N bytes at `base + off`; None when out of the slice (or the sum overflows: hostile input).
pub(crate) fn rd<const N: usize>(d: &[u8], base: usize, off: usize) -> Option<[u8; N]> {
    let at = base.checked_add(off)?;
    d.get(at..at.checked_add(N)?)?.try_into().ok()
}
pub(crate) fn u8_at(d: &[u8], base: usize, off: usize) -> Option<u8> {
    rd::<1>(d, base, off).map(|b| b[0])
}
pub(crate) fn u16_at(d: &[u8], base: usize, off: usize) -> Option<u16> {
    rd::<2>(d, base, off).map(u16::from_le_bytes)
}
pub(crate) fn u32_at(d: &[u8], base: usize, off: usize) -> Option<u32> {
    rd::<4>(d, base, off).map(u32::from_le_bytes)
}
pub(crate) fn u64_at(d: &[u8], base: usize, off: usize) -> Option<u64> {
    rd::<8>(d, base, off).map(u64::from_le_bytes)
}

/// A NUL-terminated string starting at `at` (without the NUL).
fn cstr_at(d: &[u8], at: usize) -> Option<&[u8]> {
    let s = d.get(at..)?;
    let end = s.iter().position(|&c| c == 0)?;
    Some(&s[..end])
}

const SHT_NOTE: u32 = 7;
const SHT_NOBITS: u32 = 8;
const SHF_COMPRESSED: u64 = 0x800;
const NT_GNU_BUILD_ID: u32 = 3;

/// One section header's useful fields.
#[derive(Clone, Copy)]
pub struct Section {
    pub ty: u32,
    pub flags: u64,
    pub offset: usize,
    pub size: usize,
    name: u32,
}

/// An ELF64 little-endian file's section headers.
pub struct Elf<'a> {
    pub data: &'a [u8],
    shoff: usize,
    shentsize: usize,
    pub shnum: usize,
    shstrndx: usize,
}

impl<'a> Elf<'a> {
    pub fn parse(d: &'a [u8]) -> Option<Elf<'a>> {
        if d.get(..4)? != b"\x7fELF" || *d.get(4)? != 2 || *d.get(5)? != 1 {
            return None;
        }
        let shentsize = u16_at(d, 0, 0x3a)? as usize;
        if shentsize < 64 {
            return None;
        }
        Some(Elf {
            data: d,
            shoff: u64_at(d, 0, 0x28)? as usize,
            shentsize,
            shnum: u16_at(d, 0, 0x3c)? as usize,
            shstrndx: u16_at(d, 0, 0x3e)? as usize,
        })
    }

    pub fn section(&self, i: usize) -> Option<Section> {
        let h = self.shoff.checked_add(i.checked_mul(self.shentsize)?)?;
        let d = self.data;
        Some(Section {
            name: u32_at(d, h, 0)?,
            ty: u32_at(d, h, 4)?,
            flags: u64_at(d, h, 8)?,
            offset: u64_at(d, h, 0x18)? as usize,
            size: u64_at(d, h, 0x20)? as usize,
        })
    }

    /// A section's bytes, if it is in the file (not NOBITS, not past its end).
    pub fn bytes(&self, s: &Section) -> Option<&'a [u8]> {
        if s.ty == SHT_NOBITS {
            return None;
        }
        self.data.get(s.offset..s.offset.checked_add(s.size)?)
    }

    /// The contents of the section called `name`, unless it is compressed or absent.
    pub fn section_by_name(&self, name: &[u8]) -> Option<&'a [u8]> {
        let strtab = self.section(self.shstrndx)?;
        let strtab = self.bytes(&strtab)?;
        (0..self.shnum).find_map(|i| {
            let s = self.section(i)?;
            if cstr_at(strtab, s.name as usize)? != name || s.flags & SHF_COMPRESSED != 0 {
                return None;
            }
            self.bytes(&s)
        })
    }

    /// The GNU build-id note, from the section headers (present in every file the linker made,
    /// including separate debug files, whose notes are kept).
    pub fn build_id(&self) -> Option<&'a [u8]> {
        for i in 0..self.shnum {
            let Some(s) = self.section(i) else { continue };
            if s.ty != SHT_NOTE {
                continue;
            }
            let Some(notes) = self.bytes(&s) else {
                continue;
            };
            let mut at = 0usize;
            while at + 12 <= notes.len() {
                let namesz = u32_at(notes, at, 0)? as usize;
                let descsz = u32_at(notes, at, 4)? as usize;
                let ty = u32_at(notes, at, 8)?;
                let name_at = at + 12;
                let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
                let next = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
                if ty == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
                    return notes.get(desc_at..desc_at.checked_add(descsz)?);
                }
                at = next;
            }
        }
        None
    }

    /// The `.gnu_debuglink` file name, if any.
    pub fn debuglink(&self) -> Option<&'a [u8]> {
        cstr_at(self.section_by_name(b".gnu_debuglink")?, 0)
    }
}

/// A source position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The directory of the file as the line table names it (empty when it is the compilation
    /// directory and the file name is relative to it, or when the name is absolute).
    pub dir: &'a [u8],
    pub file: &'a [u8],
    pub line: u32,
}

/// Where a lookup found an address: enough to name the file again without re-running the
/// line program (kept in a report's cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub unit: u32,
    pub file: u32,
    pub line: u32,
}

struct Reader<'a> {
    d: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.d.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        let v = u16_at(self.d, self.at, 0)?;
        self.at += 2;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let v = u32_at(self.d, self.at, 0)?;
        self.at += 4;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let v = u64_at(self.d, self.at, 0)?;
        self.at += 8;
        Some(v)
    }
    fn uleb(&mut self) -> Option<u64> {
        read_uleb(|| self.u8())
    }
    fn sleb(&mut self) -> Option<i64> {
        read_sleb(|| self.u8())
    }
    fn cstr(&mut self) -> Option<&'a [u8]> {
        let s = cstr_at(self.d, self.at)?;
        self.at += s.len() + 1;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self.at.checked_add(n)?;
        (self.at <= self.d.len()).then_some(())
    }
    /// An offset of the unit's size (4 bytes, or 8 in 64-bit DWARF).
    fn offset(&mut self, wide: bool) -> Option<usize> {
        if wide {
            self.u64().map(|v| v as usize)
        } else {
            self.u32().map(|v| v as usize)
        }
    }
}

/// The sections a line table refers to for its strings.
#[derive(Clone, Copy, Default)]
pub struct DebugSections<'a> {
    pub line: &'a [u8],
    pub line_str: &'a [u8],
    pub str: &'a [u8],
}

impl<'a> DebugSections<'a> {
    /// The line-table sections of an ELF file; None when it has no (readable) `.debug_line`.
    pub fn of(data: &'a [u8]) -> Option<DebugSections<'a>> {
        let elf = Elf::parse(data)?;
        Some(DebugSections {
            line: elf.section_by_name(b".debug_line")?,
            line_str: elf.section_by_name(b".debug_line_str").unwrap_or(b""),
            str: elf.section_by_name(b".debug_str").unwrap_or(b""),
        })
    }
}

/// A parsed line-program header.
struct Header<'a> {
    version: u16,
    wide: bool,
    addr_size: u8,
    min_inst: u8,
    default_is_stmt: bool,
    line_base: i8,
    line_range: u8,
    opcode_base: u8,
    std_lengths: &'a [u8],
    /// Offsets of the directory and file tables (right after the standard opcode lengths).
    tables: usize,
    program: usize,
    end: usize,
}

fn header(d: &[u8], unit: usize) -> Option<Header<'_>> {
    let mut r = Reader { d, at: unit };
    let mut len = r.u32()? as u64;
    let wide = len == 0xffff_ffff;
    if wide {
        len = r.u64()?;
    }
    let end = r.at.checked_add(usize::try_from(len).ok()?)?;
    if end > d.len() {
        return None;
    }
    let version = r.u16()?;
    if !(2..=5).contains(&version) {
        return None;
    }
    let mut addr_size = 8;
    if version >= 5 {
        addr_size = r.u8()?;
        let _seg = r.u8()?;
    }
    let hlen = r.offset(wide)?;
    let program = r.at.checked_add(hlen)?;
    let min_inst = r.u8()?;
    if version >= 4 {
        let _max_ops = r.u8()?;
    }
    let default_is_stmt = r.u8()? != 0;
    let line_base = r.u8()? as i8;
    let line_range = r.u8()?;
    let opcode_base = r.u8()?;
    if line_range == 0 || opcode_base == 0 {
        return None;
    }
    let std_lengths = d.get(r.at..r.at.checked_add(opcode_base as usize - 1)?)?;
    r.skip(opcode_base as usize - 1)?;
    if program > end {
        return None;
    }
    Some(Header {
        version,
        wide,
        addr_size,
        min_inst,
        default_is_stmt,
        line_base,
        line_range,
        opcode_base,
        std_lengths,
        tables: r.at,
        program,
        end,
    })
}

const DW_LNCT_PATH: u64 = 1;
const DW_LNCT_DIRECTORY_INDEX: u64 = 2;

/// Reads one attribute of a DWARF 5 entry format: a string (for paths), a number, or nothing.
fn form_value<'a>(
    r: &mut Reader<'a>,
    form: u64,
    wide: bool,
    s: &DebugSections<'a>,
) -> Option<(Option<&'a [u8]>, u64)> {
    Some(match form {
        0x08 => (Some(r.cstr()?), 0),                      // string
        0x1f => (cstr_at(s.line_str, r.offset(wide)?), 0), // line_strp
        0x0e => (cstr_at(s.str, r.offset(wide)?), 0),      // strp
        0x0b => (None, r.u8()? as u64),                    // data1
        0x05 => (None, r.u16()? as u64),                   // data2
        0x06 => (None, r.u32()? as u64),                   // data4
        0x07 => (None, r.u64()?),                          // data8
        0x0f => (None, r.uleb()?),                         // udata
        0x1e => (None, r.skip(16).map(|_| 0)?),            // data16 (MD5)
        0x09 => (None, r.uleb().and_then(|n| r.skip(n as usize)).map(|_| 0)?), // block
        0x25 => (None, r.u8()? as u64),                    // strx1 (unresolvable here)
        0x26 => (None, r.u16()? as u64),                   // strx2
        0x1a => (None, r.uleb()?),                         // strx
        _ => return None,
    })
}

/// Entry `idx` of a DWARF 5 directory or file table at `r`: its path and directory index.
/// Leaves `r` after the table.
fn v5_table<'a>(
    r: &mut Reader<'a>,
    wide: bool,
    s: &DebugSections<'a>,
    idx: u64,
) -> Option<(Option<&'a [u8]>, u64)> {
    let nformats = r.u8()? as usize;
    let mut formats = [(0u64, 0u64); 8];
    if nformats > formats.len() {
        return None;
    }
    for f in formats.iter_mut().take(nformats) {
        *f = (r.uleb()?, r.uleb()?);
    }
    let count = r.uleb()?;
    // Every entry takes at least one byte: a larger count is hostile (and, with no formats,
    // would loop for ever without reading).
    if count > r.d.len().saturating_sub(r.at) as u64 || (nformats == 0 && count > 0) {
        return None;
    }
    let mut found = (None, 0);
    for i in 0..count {
        let mut path = None;
        let mut dir = 0;
        for &(ct, form) in &formats[..nformats] {
            let (text, num) = form_value(r, form, wide, s)?;
            match ct {
                DW_LNCT_PATH => path = text,
                DW_LNCT_DIRECTORY_INDEX => dir = num,
                _ => {}
            }
        }
        if i == idx {
            found = (path, dir);
        }
    }
    Some(found)
}

/// Names file `file` of the unit at offset `unit`.
pub fn file_name<'a>(s: &DebugSections<'a>, unit: u32, file: u32) -> Option<(&'a [u8], &'a [u8])> {
    let h = header(s.line, unit as usize)?;
    let mut r = Reader {
        d: s.line,
        at: h.tables,
    };
    if h.version >= 5 {
        let mut dirs = Reader {
            d: s.line,
            at: h.tables,
        };
        // Walk the directory table to reach the file table, then look the file up.
        v5_table(&mut r, h.wide, s, u64::MAX)?;
        let (name, dir) = v5_table(&mut r, h.wide, s, file as u64)?;
        let name = name?;
        let (dir_name, _) = v5_table(&mut dirs, h.wide, s, dir)?;
        // Directory 0 is the compilation directory: a name relative to it is shown as given
        // to the compiler.
        let dir_name = if dir == 0 || name.first() == Some(&b'/') {
            b""
        } else {
            dir_name.unwrap_or(b"")
        };
        return Some((dir_name, name));
    }
    // DWARF 2-4: directories 1.. as strings, then files 1.. as (name, dir, mtime, length).
    let dirs_at = r.at;
    while !r.cstr()?.is_empty() {}
    let mut n = 1u32;
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            return None;
        }
        let dir = r.uleb()?;
        r.uleb()?;
        r.uleb()?;
        if n == file {
            let mut dir_name: &[u8] = b"";
            if dir > 0 && name.first() != Some(&b'/') {
                let mut d = Reader {
                    d: s.line,
                    at: dirs_at,
                };
                for _ in 0..dir {
                    dir_name = d.cstr()?;
                    if dir_name.is_empty() {
                        return None;
                    }
                }
            }
            return Some((dir_name, name));
        }
        n += 1;
    }
}

/// Finds the row covering virtual address `addr`: its unit, file index and line. Decodes each
/// line program once at most; stops at the first sequence that covers `addr`.
pub fn find(s: &DebugSections, addr: u64) -> Option<Hit> {
    let mut unit = 0usize;
    while unit < s.line.len() {
        let h = header(s.line, unit)?;
        if let Some(hit) = run_program(s.line, &h, addr) {
            return Some(Hit {
                unit: unit as u32,
                file: hit.0,
                line: hit.1,
            });
        }
        unit = h.end;
    }
    None
}

/// Looks up `addr` and names its file: the whole answer in one call.
pub fn lookup<'a>(s: &DebugSections<'a>, addr: u64) -> Option<Line<'a>> {
    let hit = find(s, addr)?;
    let (dir, file) = file_name(s, hit.unit, hit.file)?;
    Some(Line {
        dir,
        file,
        line: hit.line,
    })
}

/// Runs one line program; returns (file, line) of the row covering `target`.
fn run_program(d: &[u8], h: &Header, target: u64) -> Option<(u32, u32)> {
    let mut r = Reader { d, at: h.program };
    let r_end = h.end;
    let min_inst = h.min_inst as u64;
    let line_range = h.line_range as u64;
    let (mut addr, mut file, mut line) = (0u64, 1u32, 1i64);
    let mut seq_start = true;
    let mut skip_seq = false;
    // The previous row of this sequence: (address, file, line).
    let mut prev: Option<(u64, u32, i64)> = None;
    let mut _is_stmt = h.default_is_stmt;
    // Checks a new row against the previous one; Some when the previous row covers target.
    let row = |addr: u64, file: u32, line: i64, end: bool, prev: &mut Option<(u64, u32, i64)>| {
        let mut hit = None;
        if let Some((pa, pf, pl)) = *prev {
            if pa <= target && target < addr {
                hit = Some((pf, pl.clamp(0, u32::MAX as i64) as u32));
            }
        }
        *prev = if end { None } else { Some((addr, file, line)) };
        hit
    };
    while r.at < r_end {
        let op = r.u8()?;
        if op >= h.opcode_base {
            let adj = (op - h.opcode_base) as u64;
            addr = addr.wrapping_add(adj / line_range * min_inst);
            line += h.line_base as i64 + (adj % line_range) as i64;
            seq_start = false;
            if !skip_seq {
                if let Some(hit) = row(addr, file, line, false, &mut prev) {
                    return Some(hit);
                }
            }
            continue;
        }
        match op {
            0 => {
                let len = r.uleb()? as usize;
                let next = r.at.checked_add(len)?;
                if len == 0 {
                    continue;
                }
                match r.u8()? {
                    1 => {
                        if !skip_seq {
                            if let Some(hit) = row(addr, file, line, true, &mut prev) {
                                return Some(hit);
                            }
                        }
                        prev = None;
                        (addr, file, line) = (0, 1, 1);
                        _is_stmt = h.default_is_stmt;
                        seq_start = true;
                        skip_seq = false;
                    }
                    2 => {
                        addr = match len - 1 {
                            8 => r.u64()?,
                            4 => r.u32()? as u64,
                            _ => return None,
                        };
                        // A sequence at address 0 is code the linker discarded.
                        if seq_start && addr == 0 {
                            skip_seq = true;
                        }
                        let _ = h.addr_size;
                    }
                    _ => {}
                }
                r.at = next;
            }
            1 => {
                seq_start = false;
                if !skip_seq {
                    if let Some(hit) = row(addr, file, line, false, &mut prev) {
                        return Some(hit);
                    }
                }
            }
            2 => addr = addr.wrapping_add(r.uleb()?.wrapping_mul(min_inst)),
            3 => line += r.sleb()?,
            4 => file = r.uleb()? as u32,
            5 => {
                r.uleb()?;
            }
            6 => _is_stmt = !_is_stmt,
            7 | 10 | 11 => {}
            8 => {
                let adj = (255 - h.opcode_base) as u64;
                addr = addr.wrapping_add(adj / line_range * min_inst);
            }
            9 => addr = addr.wrapping_add(r.u16()? as u64),
            _ => {
                // An opcode this reader does not know: skip its arguments as declared.
                let n = *h.std_lengths.get(op as usize - 1)?;
                for _ in 0..n {
                    r.uleb()?;
                }
            }
        }
    }
    None
}

/// An unsigned LEB128 number from `byte`, as DWARF encodes them; bits past the 64th are
/// dropped. Shared by the `.debug_line` reader and the `.eh_frame` reader (`cfi`).
pub(crate) fn read_uleb(mut byte: impl FnMut() -> Option<u8>) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = byte()?;
        if shift < 64 {
            v |= ((b & 0x7f) as u64) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// A signed LEB128 number from `byte` (see [`read_uleb`]).
pub(crate) fn read_sleb(mut byte: impl FnMut() -> Option<u8>) -> Option<i64> {
    let mut v = 0i64;
    let mut shift = 0;
    loop {
        let b = byte()?;
        if shift < 64 {
            v |= ((b & 0x7f) as i64) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            if shift < 64 && b & 0x40 != 0 {
                v |= -1i64 << shift;
            }
            return Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128() {
        let d = [0xe5, 0x8e, 0x26, 0x7f, 0x80, 0x7f];
        let mut r = Reader { d: &d, at: 0 };
        assert_eq!(r.uleb(), Some(624485));
        assert_eq!(r.sleb(), Some(-1));
        assert_eq!(r.sleb(), Some(-128));
        assert_eq!(r.uleb(), None);
    }

    #[test]
    fn hostile_line_tables_are_rejected() {
        let mut junk = [0u8; 64];
        junk[0..4].copy_from_slice(&60u32.to_le_bytes());
        junk[4..6].copy_from_slice(&4u16.to_le_bytes());
        junk[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        let s = DebugSections {
            line: &junk,
            ..Default::default()
        };
        assert_eq!(find(&s, 0x1000), None);
        let s = DebugSections {
            line: &[0xff; 7],
            ..Default::default()
        };
        assert_eq!(find(&s, 0x1000), None);
        assert!(Elf::parse(b"\x7fELF").is_none());
    }

    #[test]
    fn a_huge_entry_count_is_refused_not_looped() {
        // A DWARF 5 directory table with no formats and 2^63 entries.
        let mut r = Reader {
            d: &[0u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            at: 0,
        };
        let s = DebugSections::default();
        assert_eq!(v5_table(&mut r, false, &s, 0), None);
    }
}
