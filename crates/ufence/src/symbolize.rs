//! In-process symbolization for text reports: the module a frame is in (via the loader's
//! lock-free lookup) and the function around it (from the module's ELF `.symtab`, or
//! `.dynsym` for stripped files), read by mapping the file. No allocation, no locks.

use crate::sys::{self, MappedFile};
use core::ffi::CStr;

/// What is known of one program counter.
pub struct Frame<'a> {
    pub pc: usize,
    /// The module's path ("" when unknown).
    pub module: &'a [u8],
    /// `pc` relative to the module's load base: the ELF virtual address.
    pub offset: usize,
    /// The function's (mangled) name and `pc`'s distance from its start.
    pub function: Option<(&'a [u8], usize)>,
}

const CACHE: usize = 8;

/// Maps module files as frames need them and keeps them mapped for the rest of one report.
pub struct Symbolizer {
    modules: [Option<(usize, &'static CStr, Option<MappedFile>)>; CACHE],
    used: usize,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        Symbolizer {
            modules: [const { None }; CACHE],
            used: 0,
        }
    }

    /// Describes `pc`. Never fails: unknown parts are left empty.
    pub fn lookup(&mut self, pc: usize) -> Frame<'_> {
        let Some((base, name)) = sys::module_of(pc) else {
            return Frame {
                pc,
                module: b"",
                offset: pc,
                function: None,
            };
        };
        let offset = pc.wrapping_sub(base);
        let idx = match self.modules[..self.used]
            .iter()
            .position(|m| matches!(m, Some((b, _, _)) if *b == base))
        {
            Some(i) => i,
            None => {
                // The main executable has an empty name in the link map.
                let path = if name.is_empty() {
                    c"/proc/self/exe"
                } else {
                    name
                };
                let file = MappedFile::open(path);
                let slot = if self.used < CACHE {
                    self.used += 1;
                    self.used - 1
                } else {
                    CACHE - 1
                };
                self.modules[slot] = Some((base, name, file));
                slot
            }
        };
        let (_, name, file) = self.modules[idx].as_ref().expect("slot just filled");
        let module = if name.is_empty() {
            exe_path()
        } else {
            name.to_bytes()
        };
        let function = file.as_ref().and_then(|f| elf_function(f.data, offset));
        Frame {
            pc,
            module,
            offset,
            function,
        }
    }
}

/// The executable's path, read once from /proc/self/exe into a static buffer.
fn exe_path() -> &'static [u8] {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicUsize, Ordering};
    struct Buf(UnsafeCell<[u8; 512]>);
    // SAFETY: written before LEN is published with Release; racing writers write the same bytes.
    unsafe impl Sync for Buf {}
    static BUF: Buf = Buf(UnsafeCell::new([0; 512]));
    static LEN: AtomicUsize = AtomicUsize::new(usize::MAX);
    let mut len = LEN.load(Ordering::Acquire);
    if len == usize::MAX {
        // SAFETY: readlink writes at most 511 bytes into BUF.
        let n = unsafe { libc::readlink(c"/proc/self/exe".as_ptr(), BUF.0.get().cast(), 511) };
        len = n.max(0) as usize;
        LEN.store(len, Ordering::Release);
    }
    // SAFETY: the first `len` bytes were written before LEN was published.
    unsafe { core::slice::from_raw_parts(BUF.0.get().cast::<u8>(), len) }
}

/// N bytes at `base + off`; None when out of the file (or the sum overflows: hostile input).
fn rd<const N: usize>(d: &[u8], base: usize, off: usize) -> Option<[u8; N]> {
    let at = base.checked_add(off)?;
    d.get(at..at.checked_add(N)?)?.try_into().ok()
}
fn u8_at(d: &[u8], base: usize, off: usize) -> Option<u8> {
    rd::<1>(d, base, off).map(|b| b[0])
}
fn u16_at(d: &[u8], base: usize, off: usize) -> Option<u16> {
    rd::<2>(d, base, off).map(u16::from_le_bytes)
}
fn u32_at(d: &[u8], base: usize, off: usize) -> Option<u32> {
    rd::<4>(d, base, off).map(u32::from_le_bytes)
}
fn u64_at(d: &[u8], base: usize, off: usize) -> Option<u64> {
    rd::<8>(d, base, off).map(u64::from_le_bytes)
}

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const STT_FUNC: u8 = 2;

/// Finds the function containing virtual address `addr` in an ELF64 little-endian file.
/// Every read is bounds-checked: a truncated or hostile file yields None, never a fault.
pub fn elf_function(d: &[u8], addr: usize) -> Option<(&[u8], usize)> {
    if d.get(..4)? != b"\x7fELF" || *d.get(4)? != 2 || *d.get(5)? != 1 {
        return None;
    }
    let shoff = u64_at(d, 0, 0x28)? as usize;
    let shentsize = u16_at(d, 0, 0x3a)? as usize;
    let shnum = u16_at(d, 0, 0x3c)? as usize;
    if shentsize < 64 {
        return None;
    }
    let section = |i: usize| -> Option<(u32, usize, usize, u32, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(d, h, 4)?,             // sh_type
            u64_at(d, h, 0x18)? as usize, // sh_offset
            u64_at(d, h, 0x20)? as usize, // sh_size
            u32_at(d, h, 0x28)?,          // sh_link
            u64_at(d, h, 0x38)? as usize, // sh_entsize
        ))
    };
    for wanted in [SHT_SYMTAB, SHT_DYNSYM] {
        for i in 0..shnum {
            let Some((ty, off, size, link, entsize)) = section(i) else {
                continue;
            };
            if ty != wanted || entsize < 24 {
                continue;
            }
            let Some((_, stroff, strsize, _, _)) = section(link as usize) else {
                continue;
            };
            let strtab = d.get(stroff..stroff.checked_add(strsize)?)?;
            if let Some(hit) = scan_symbols(d, off, size, entsize, strtab, addr) {
                return Some(hit);
            }
        }
    }
    None
}

fn scan_symbols<'a>(
    d: &'a [u8],
    off: usize,
    size: usize,
    entsize: usize,
    strtab: &'a [u8],
    addr: usize,
) -> Option<(&'a [u8], usize)> {
    let mut best: Option<(usize, u32)> = None;
    for k in 0..size / entsize {
        let s = off.checked_add(k * entsize)?;
        let info = u8_at(d, s, 4)?;
        let value = u64_at(d, s, 8)? as usize;
        let sz = u64_at(d, s, 16)? as usize;
        if info & 0xf != STT_FUNC || value == 0 || addr < value {
            continue;
        }
        let inside = if sz == 0 {
            addr - value < 4096
        } else {
            addr - value < sz
        };
        if inside && best.is_none_or(|(v, _)| value > v) {
            best = Some((value, u32_at(d, s, 0)?));
        }
    }
    let (value, name_off) = best?;
    let name = strtab.get(name_off as usize..)?;
    let end = name.iter().position(|&c| c == 0)?;
    Some((&name[..end], addr - value))
}

/// Shows a symbol demangled (Rust without its hash, C++ as `name(args)`), as is otherwise.
///
/// Rust demangling does not allocate. C++ demangling does, through the wrapped allocator:
/// reports run with the thread held (`sampler::hold`), so those allocations never come back
/// into ufence, and the faulting thread cannot be inside the C library's allocator (which
/// never touches pool memory), so its locks are free.
pub struct Demangled<'a>(pub &'a [u8]);

impl core::fmt::Display for Demangled<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Ok(s) = core::str::from_utf8(self.0) else {
            return write!(f, "{}", crate::fmt::Escaped(self.0));
        };
        if let Ok(d) = rustc_demangle::try_demangle(s) {
            return write!(f, "{d:#}");
        }
        if s.starts_with("_Z") {
            if let Ok(sym) = cpp_demangle::Symbol::new(s) {
                let mut text = crate::fmt::BufWriter::<256>::new();
                if core::fmt::Write::write_fmt(&mut text, format_args!("{sym}")).is_ok()
                    && !text.is_empty()
                {
                    return f.write_str(core::str::from_utf8(text.as_bytes()).unwrap_or(s));
                }
            }
        }
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_named_function() -> usize {
        a_named_function as *const () as usize
    }

    #[test]
    fn finds_own_function() {
        let pc = a_named_function() + 1;
        let mut s = Symbolizer::new();
        let f = s.lookup(pc);
        let (name, off) = f.function.expect("symbol found");
        let shown = format!("{}", Demangled(name));
        assert!(shown.contains("a_named_function"), "{shown}");
        assert_eq!(off, 1);
        assert!(!f.module.is_empty());
    }

    #[test]
    fn hostile_elf_is_rejected_not_crashed() {
        let mut d = vec![0u8; 128];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        d[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        d[0x3c..0x3e].copy_from_slice(&100u16.to_le_bytes());
        assert!(elf_function(&d, 0x1000).is_none());
        assert!(elf_function(&d[..10], 0x1000).is_none());
        assert!(elf_function(b"", 0).is_none());
    }
}
