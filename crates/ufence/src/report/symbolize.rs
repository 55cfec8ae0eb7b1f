//! In-process symbolization for reports: the module a frame is in (via the loader's
//! lock-free lookup), its GNU build-id, the function around it (from the module's ELF
//! `.symtab`, or `.dynsym` for stripped files, or the symbol table of its separate debug file)
//! and, best effort, the source file and line from DWARF `.debug_line` (see [`crate::dwarf`]).
//! Files are read by mapping them: no allocation, no locks, bounded work.
//!
//! Separate debug files are looked for, in reports only, where GDB looks: under
//! `/usr/lib/debug/.build-id/xx/rest.debug`, then by `.gnu_debuglink` beside the module, in its
//! `.debug/` directory and under `/usr/lib/debug`.

use crate::dwarf::{self, DebugSections, Elf, Hit, Line};
use crate::fmt::BufWriter;
use crate::sys::{self, MappedFile};
use core::ffi::CStr;
use core::fmt::Write;

/// What is known of one program counter.
pub struct Frame<'a> {
    pub pc: usize,
    /// The module's path ("" when unknown).
    pub module: &'a [u8],
    /// The module's GNU build-id ("" when it has none or is unknown).
    pub build_id: &'a [u8],
    /// `pc` relative to the module's load base: the ELF virtual address.
    pub offset: usize,
    /// The function's (mangled) name and `pc`'s distance from its start.
    pub function: Option<(&'a [u8], usize)>,
}

const CACHE: usize = 16;

/// One module mapped for the length of a report.
struct Module {
    base: usize,
    name: &'static CStr,
    file: Option<MappedFile>,
    /// The separate debug file, once looked for (`debug_tried`).
    debug: Option<MappedFile>,
    debug_tried: bool,
    build_id: [u8; 64],
    build_id_len: u8,
}

impl Module {
    fn path(&self) -> &[u8] {
        if self.name.is_empty() {
            exe_path()
        } else {
            self.name.to_bytes()
        }
    }
    /// The file that holds line tables: the debug file if one was found, else the module.
    fn lines(&self) -> Option<DebugSections<'_>> {
        if let Some(d) = &self.debug {
            if let Some(s) = DebugSections::of(d.data) {
                return Some(s);
            }
        }
        DebugSections::of(self.file.as_ref()?.data)
    }
}

/// Line lookups already made during one report, so that the text and the JSON report (and the
/// frames they share) run a module's line program once per address.
pub struct LineCache {
    entries: [(usize, Option<Hit>); 256],
    used: usize,
}

impl Default for LineCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LineCache {
    pub const fn new() -> LineCache {
        LineCache {
            entries: [(0, None); 256],
            used: 0,
        }
    }
}

/// Maps module files as frames need them and keeps them mapped for the rest of one report.
pub struct Symbolizer {
    modules: [Option<Module>; CACHE],
    used: usize,
    /// Whether to look for separate debug files (reports do; the site filter does not).
    debug_files: bool,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// Symbol tables of the modules themselves only (cheap: for the site filter).
    pub fn new() -> Symbolizer {
        Symbolizer {
            modules: [const { None }; CACHE],
            used: 0,
            debug_files: false,
        }
    }

    /// For reports: also reads separate debug files for their symbols and lines.
    pub fn for_report() -> Symbolizer {
        Symbolizer {
            debug_files: true,
            ..Symbolizer::new()
        }
    }

    /// The cache slot of the module loaded at `base`, mapping it on first use.
    fn module(&mut self, base: usize, name: &'static CStr) -> usize {
        if let Some(i) = self.modules[..self.used]
            .iter()
            .position(|m| matches!(m, Some(m) if m.base == base))
        {
            return i;
        }
        // The main executable has an empty name in the link map.
        let path = if name.is_empty() {
            c"/proc/self/exe"
        } else {
            name
        };
        let file = MappedFile::open(path);
        let mut build_id = [0u8; 64];
        let mut build_id_len = 0;
        if let Some(id) = file
            .as_ref()
            .and_then(|f| Elf::parse(f.data))
            .and_then(|e| e.build_id())
        {
            let n = id.len().min(64);
            build_id[..n].copy_from_slice(&id[..n]);
            build_id_len = n as u8;
        }
        let slot = if self.used < CACHE {
            self.used += 1;
            self.used - 1
        } else {
            CACHE - 1
        };
        self.modules[slot] = Some(Module {
            base,
            name,
            file,
            debug: None,
            debug_tried: false,
            build_id,
            build_id_len,
        });
        if self.debug_files {
            let m = self.modules[slot].as_mut().expect("slot just filled");
            m.debug = find_debug_file(m);
            m.debug_tried = true;
        }
        slot
    }

    /// Describes `pc`. Never fails: unknown parts are left empty.
    pub fn lookup(&mut self, pc: usize) -> Frame<'_> {
        let Some((base, name)) = sys::module_of(pc) else {
            return Frame {
                pc,
                module: b"",
                build_id: b"",
                offset: pc,
                function: None,
            };
        };
        let offset = pc.wrapping_sub(base);
        let idx = self.module(base, name);
        let m = self.modules[idx].as_ref().expect("slot filled");
        let function = m
            .debug
            .as_ref()
            .and_then(|d| elf_function(d.data, offset))
            .or_else(|| m.file.as_ref().and_then(|f| elf_function(f.data, offset)));
        Frame {
            pc,
            module: m.path(),
            build_id: &m.build_id[..m.build_id_len as usize],
            offset,
            function,
        }
    }

    /// The source file and line of `pc`, when the module (or its debug file) has a line table
    /// that covers it. Results are kept in `cache` for the rest of the report.
    pub fn line(&mut self, pc: usize, cache: &mut LineCache) -> Option<Line<'_>> {
        let (base, name) = sys::module_of(pc)?;
        let idx = self.module(base, name);
        let m = self.modules[idx].as_ref()?;
        let sections = m.lines()?;
        let hit = match cache.entries[..cache.used].iter().find(|e| e.0 == pc) {
            Some(e) => e.1,
            None => {
                let hit = dwarf::find(&sections, pc.wrapping_sub(base) as u64);
                let n = cache.used.min(cache.entries.len() - 1);
                cache.entries[n] = (pc, hit);
                cache.used = (n + 1).min(cache.entries.len());
                hit
            }
        }?;
        let (dir, file) = dwarf::file_name(&sections, hit.unit, hit.file)?;
        Some(Line {
            dir,
            file,
            line: hit.line,
        })
    }
}

/// Finds and maps the separate debug file of a module, if it has one installed.
fn find_debug_file(m: &Module) -> Option<MappedFile> {
    let file = m.file.as_ref()?;
    let elf = Elf::parse(file.data)?;
    if elf.section_by_name(b".debug_line").is_some() {
        return None;
    }
    let id = &m.build_id[..m.build_id_len as usize];
    let mut path = BufWriter::<1024>::new();
    if id.len() >= 2 {
        let _ = write!(path, "/usr/lib/debug/.build-id/{:02x}/", id[0]);
        for b in &id[1..] {
            let _ = write!(path, "{b:02x}");
        }
        let _ = write!(path, ".debug\0");
        if let Some(f) = open_matching(&path, id) {
            return Some(f);
        }
    }
    let link = elf.debuglink()?;
    let module = m.path();
    let dir = &module[..module.iter().rposition(|&c| c == b'/').unwrap_or(0)];
    for prefix in [&b""[..], b"/usr/lib/debug"] {
        for sub in [&b"/"[..], b"/.debug/"] {
            path.clear();
            let _ = write!(
                path,
                "{}{}{}{}\0",
                crate::fmt::Escaped(prefix),
                crate::fmt::Escaped(dir),
                crate::fmt::Escaped(sub),
                crate::fmt::Escaped(link)
            );
            if let Some(f) = open_matching(&path, id) {
                return Some(f);
            }
        }
    }
    None
}

/// Maps the file at the NUL-terminated `path` if its build-id is `id` (or either has none).
fn open_matching(path: &BufWriter<1024>, id: &[u8]) -> Option<MappedFile> {
    let path = CStr::from_bytes_with_nul(path.as_bytes()).ok()?;
    let f = MappedFile::open(path)?;
    let theirs = Elf::parse(f.data)?.build_id().unwrap_or(b"");
    (id.is_empty() || theirs.is_empty() || theirs == id).then_some(f)
}

/// The executable's path, read once from /proc/self/exe into a static buffer.
pub fn exe_path() -> &'static [u8] {
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

use crate::dwarf::{u16_at, u32_at, u64_at, u8_at};

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

/// Whether C++ names are demangled (which allocates): off while reporting from inside the C
/// library's allocator.
static DEMANGLE_CPP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

pub(crate) fn set_demangle_cpp(on: bool) {
    DEMANGLE_CPP.store(on, core::sync::atomic::Ordering::Relaxed);
}

impl core::fmt::Display for Demangled<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Ok(s) = core::str::from_utf8(self.0) else {
            return write!(f, "{}", crate::fmt::Escaped(self.0));
        };
        if let Ok(d) = rustc_demangle::try_demangle(s) {
            return write!(f, "{d:#}");
        }
        if s.starts_with("_Z") && DEMANGLE_CPP.load(core::sync::atomic::Ordering::Relaxed) {
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
    use crate::fmt::Escaped;

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
    fn finds_own_file_and_line() {
        let pc = a_named_function() + 1;
        let mut s = Symbolizer::for_report();
        let mut cache = LineCache::new();
        let l = s
            .line(pc, &mut cache)
            .expect("a line table covers the test binary");
        assert!(l.file.ends_with(b"symbolize.rs"), "{}", Escaped(l.file));
        assert!(l.line > 0);
        assert!(
            !s.lookup(pc).build_id.is_empty(),
            "rustc links with a build-id"
        );
    }

    #[test]
    fn damaged_line_tables_never_crash() {
        let exe = MappedFile::open(c"/proc/self/exe").expect("own executable");
        let real = DebugSections::of(exe.data).expect(".debug_line");
        let pc = a_named_function();
        let (base, _) = sys::module_of(pc).unwrap();
        let addr = (pc - base) as u64;
        let mut copy = real.line[..real.line.len().min(1 << 16)].to_vec();
        for cut in (0..copy.len()).step_by(997) {
            let s = DebugSections {
                line: &copy[..cut],
                ..real
            };
            let _ = dwarf::lookup(&s, addr);
        }
        let mut x = 0x9e37_79b9u32;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % copy.len();
            copy[i] ^= (x >> 24) as u8 | 1;
            let s = DebugSections {
                line: &copy,
                ..real
            };
            let _ = dwarf::lookup(&s, addr);
        }
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
