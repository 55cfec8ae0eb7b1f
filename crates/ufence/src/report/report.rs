//! Error reports in KFENCE's shape, written to stderr line by line from a small stack buffer,
//! so that a report can be produced inside a signal handler running on a small alternate stack.

use crate::fmt::{cstr_bytes, BufWriter, Escaped};
use crate::pool::{Pool, Record, Slot, CHECKING, FREED};
use crate::stack::Stack;
use crate::symbolize::{Demangled, LineCache, Symbolizer};
use crate::symbolizer_process::Resolved;
use crate::sys;
use core::fmt::Write;

/// The error classes ufence reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OutOfBounds,
    UseAfterFree,
    DoubleFree,
    InvalidFree,
    Corruption,
    Invalid,
    /// Released by a routine of another family than the one that allocated it.
    Mismatch,
}

/// Everything a report says.
pub struct Error<'a> {
    pub kind: Kind,
    /// The faulting or freed address.
    pub addr: usize,
    pub is_write: bool,
    /// The object concerned and its slot number, when there is one.
    pub object: Option<(usize, &'a Slot)>,
    /// Where it happened: the faulting instruction's stack, or the bad free's.
    pub stack: &'a Stack,
    /// For a corruption: the first damaged byte.
    pub damaged: usize,
    /// For a mismatch: the releasing routine (`routine`); the slot holds the allocating one.
    pub dealloc: u8,
}

impl Kind {
    /// The kind's name in JSON reports (`docs/report-schema.md`).
    pub(crate) fn json_name(self) -> &'static str {
        match self {
            Kind::OutOfBounds => "out-of-bounds",
            Kind::UseAfterFree => "use-after-free",
            Kind::DoubleFree => "double-free",
            Kind::InvalidFree => "invalid-free",
            Kind::Corruption => "memory-corruption",
            Kind::Invalid => "invalid-access",
            Kind::Mismatch => "alloc-dealloc-mismatch",
        }
    }

    pub(crate) fn title(self, is_write: bool) -> &'static str {
        match (self, is_write) {
            (Kind::OutOfBounds, false) => "out-of-bounds read",
            (Kind::OutOfBounds, true) => "out-of-bounds write",
            (Kind::UseAfterFree, false) => "use-after-free read",
            (Kind::UseAfterFree, true) => "use-after-free write",
            (Kind::DoubleFree, _) => "double free",
            (Kind::InvalidFree, _) => "invalid free",
            (Kind::Corruption, _) => "memory corruption",
            (Kind::Invalid, false) => "invalid read",
            (Kind::Invalid, true) => "invalid write",
            (Kind::Mismatch, _) => "alloc-dealloc mismatch",
        }
    }
}

const RULE: &str = "==================================================================";

/// One output line at a time: flushed to stderr whenever it ends.
struct Out {
    line: BufWriter<512>,
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                self.line.write_char('\n')?;
                sys::write_all(2, self.line.as_bytes());
                self.line.clear();
            }
            self.line.write_str(part)?;
        }
        Ok(())
    }
}

/// Function names of allocator entry points and of ufence itself: frames cut from the top of a
/// stack so that it starts where the program called in.
fn is_allocator_frame(name: &[u8]) -> bool {
    const EXACT: &[&[u8]] = &[
        b"malloc",
        b"free",
        b"calloc",
        b"realloc",
        b"reallocarray",
        b"posix_memalign",
        b"aligned_alloc",
        b"memalign",
        b"valloc",
        b"pvalloc",
        b"cfree",
    ];
    const PREFIX: &[&[u8]] = &[
        // The detector's own entry points and modules (legacy mangling); not any crate that
        // happens to be called ufence.
        b"_ZN6ufence8detector",
        b"_ZN6ufence7sampler",
        b"_ZN6ufence5stack",
        b"_ZN6ufence9alloc_slow",
        b"_ZN6ufence9free_slow",
        b"_RN",
        b"__rust_alloc",
        b"__rust_dealloc",
        b"__rust_realloc",
        b"__rdl_",
        b"__rg_",
        b"__libc_malloc",
        b"__libc_free",
        b"__libc_calloc",
        b"__libc_realloc",
        b"_Znw",
        b"_Zna",
        b"_ZdlPv",
        b"_ZdaPv",
        b"_ZN5alloc5alloc",
        b"_ZN3std3sys5alloc",
        b"_ZN63_$LT$alloc..alloc..Global",
    ];
    if EXACT.contains(&name) {
        return true;
    }
    if PREFIX.iter().any(|p| name.starts_with(p)) {
        // Rust v0 symbols (`_RN`) are only cut when they are ufence's own.
        return !name.starts_with(b"_RN") || contains(name, b"6ufence8detector");
    }
    contains(name, b"ufence..Guarded") || contains(name, b"ufence6Guarded")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// How many leading frames of `stack` are ufence's or the allocator's.
pub(crate) fn frames_to_cut(sym: &mut Symbolizer, stack: &Stack) -> usize {
    let own = sys::module_of(frames_to_cut as *const () as usize).map(|m| m.0);
    let mut cut = 0;
    for &pc in stack.frames() {
        let module = sys::module_of(pc).map(|m| m.0);
        let f = sym.lookup(pc);
        let ours_by_module = own.is_some() && module == own && crate::is_preload();
        let ours_by_name = f.function.is_some_and(|(n, _)| is_allocator_frame(n));
        if ours_by_module || ours_by_name {
            cut += 1;
        } else {
            break;
        }
    }
    // Never cut everything: an all-ufence stack is shown whole.
    if cut == stack.frames().len() {
        0
    } else {
        cut
    }
}

fn write_stack(
    out: &mut Out,
    sym: &mut Symbolizer,
    lines: &mut LineCache,
    res: Option<&Resolved>,
    stack: &Stack,
    cut: usize,
) {
    // Each function gets a line and a number of its own, as in the sanitizers' reports: the
    // functions inlined at a frame first (innermost first, marked `inlined`), then the
    // function that holds them, with its module and offset.
    let mut n = 0;
    for &pc in &stack.frames()[cut..] {
        let outer_line = res.and_then(|r| r.outer(pc)).map(|o| (o.file, o.line));
        if let Some(r) = res {
            for f in r.inlined(pc) {
                let _ = write!(out, " #{n} {}", Escaped(f.function));
                if f.file.is_empty() {
                    let _ = writeln!(out, " (inlined)");
                } else {
                    let _ = writeln!(out, " ({}:{}, inlined)", Escaped(f.file), f.line);
                }
                n += 1;
            }
        }
        let _ = write!(out, " #{n} ");
        n += 1;
        {
            let f = sym.lookup(pc);
            match f.function {
                Some((name, off)) => {
                    let _ = write!(out, "{}+{:#x}", Demangled(name), off);
                }
                None => match res.and_then(|r| r.outer(pc)) {
                    Some(o) => {
                        let _ = write!(out, "{}", Escaped(o.function));
                    }
                    None => {
                        let _ = write!(out, "{:#x}", pc);
                    }
                },
            }
        }
        // ` (file:line, module+offset)`: the source position when known (from the symbolizer,
        // else the module's line table), and always the module and offset, which symbolize
        // offline.
        let mut open = false;
        match outer_line {
            Some((file, line)) if !file.is_empty() => {
                let _ = write!(out, " ({}:{}", Escaped(file), line);
                open = true;
            }
            // The symbolizer answered but knows no line: the line table's would be the
            // innermost inlined function's, under this function's name.
            Some(_) => {}
            None => {
                if let Some(l) = sym.line(pc, lines) {
                    let _ = write!(out, " ({}:{}", SourcePath(l.dir, l.file), l.line);
                    open = true;
                }
            }
        }
        let f = sym.lookup(pc);
        if !f.module.is_empty() {
            let sep = if open { ", " } else { " (" };
            let _ = write!(out, "{sep}{}+{:#x}", Escaped(f.module), f.offset);
            open = true;
        }
        if open {
            let _ = write!(out, ")");
        }
        let _ = writeln!(out);
    }
    if stack.frames().is_empty() {
        let _ = writeln!(out, " (no stack)");
    }
}

/// A source file as a line table names it: `dir/file`, or `file` alone when it is absolute or
/// relative to the compilation directory.
pub(crate) struct SourcePath<'a>(pub &'a [u8], pub &'a [u8]);

impl core::fmt::Display for SourcePath<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if !self.0.is_empty() {
            write!(f, "{}", Escaped(self.0))?;
            if !self.0.ends_with(b"/") {
                f.write_str("/")?;
            }
        }
        write!(f, "{}", Escaped(self.1))
    }
}

fn write_record(
    out: &mut Out,
    sym: &mut Symbolizer,
    lines: &mut LineCache,
    res: Option<&Resolved>,
    what: &str,
    r: &Record,
) {
    let _ = writeln!(
        out,
        "{what} by thread {} ({}) at {}.{:06}s:",
        r.tid,
        Escaped(cstr_bytes(&r.thread_name)),
        r.time_ns / 1_000_000_000,
        r.time_ns % 1_000_000_000 / 1000
    );
    let stack = r.stack();
    let cut = frames_to_cut(sym, &stack);
    write_stack(out, sym, lines, res, &stack, cut);
}

/// Writes the report for `e` to stderr and, when `report_dir` is set, as a JSON file (see
/// `json_report`). Both share one symbolizer, so each module is mapped and each address looked
/// up once, and one answer of the symbolizer process (inlined functions), asked once.
pub fn print(e: &Error, pool: &Pool) {
    let mut sym = Symbolizer::for_report();
    let mut lines = LineCache::new();
    let res = ask_symbolizer(e, &mut sym);
    print_text(e, pool, &mut sym, &mut lines, res.as_ref());
    if let Some(opts) = crate::options_in_force() {
        if !opts.report_dir.is_empty() {
            crate::json_report::write(
                opts.report_dir.as_bytes(),
                e,
                pool,
                &mut sym,
                &mut lines,
                res.as_ref(),
            );
        }
    }
}

/// The distinct frames the report shows (its stacks past the cut), sent to the symbolizer
/// process.
fn ask_symbolizer(e: &Error, sym: &mut Symbolizer) -> Option<Resolved> {
    let mut pcs = [0usize; crate::symbolizer_process::MAX_PCS];
    let mut n = 0;
    let mut add = |sym: &mut Symbolizer, st: &Stack| {
        let cut = frames_to_cut(sym, st);
        for &pc in &st.frames()[cut..] {
            if n < pcs.len() && !pcs[..n].contains(&pc) {
                pcs[n] = pc;
                n += 1;
            }
        }
    };
    add(sym, e.stack);
    if let Some((_, s)) = e.object {
        add(sym, &s.alloc.stack());
        if s.state.load(core::sync::atomic::Ordering::Acquire) == FREED {
            add(sym, &s.free.stack());
        }
    }
    crate::symbolizer_process::resolve(sym, &pcs[..n])
}

/// Rust's pointer helpers (`core::ptr::read_volatile`, `<*mut T>::add`, ...), never the
/// function a title should name: the fault happened in their caller.
fn is_helper_name(demangled: &[u8]) -> bool {
    demangled.starts_with(b"core::ptr::") || demangled.starts_with(b"core::intrinsics::")
}

/// What a title names: the innermost function inlined at the top frame that is not one of
/// Rust's pointer helpers, when the symbolizer process named it; else the top frame's symbol.
pub(crate) enum TitleFunction<'a> {
    Inlined(&'a [u8]),
    Frame(usize),
}

pub(crate) fn title_function<'a>(
    sym: &mut Symbolizer,
    res: Option<&'a Resolved>,
    stack: &Stack,
    cut: usize,
) -> Option<TitleFunction<'a>> {
    let top = top_frame(sym, stack, cut)?;
    if let Some(f) = res.and_then(|r| r.inlined(top).find(|f| !is_helper_name(f.function))) {
        return Some(TitleFunction::Inlined(f.function));
    }
    Some(TitleFunction::Frame(top))
}

/// The frame the title names: the first that is the program's own, past ufence's and the
/// allocator's frames (`cut`) and Rust's pointer helpers, which unoptimised builds keep as
/// functions of their own.
pub(crate) fn top_frame(sym: &mut Symbolizer, stack: &Stack, cut: usize) -> Option<usize> {
    let helpers = stack.frames()[cut..]
        .iter()
        .take_while(|&&pc| {
            sym.lookup(pc).function.is_some_and(|(n, _)| {
                n.starts_with(b"_ZN4core3ptr") || n.starts_with(b"_ZN4core10intrinsics")
            })
        })
        .count();
    stack
        .frames()
        .get(cut + helpers)
        .or(stack.frames().get(cut))
        .copied()
}

/// Frames that go into a report's signature (after the cut).
const SIGNATURE_FRAMES: usize = 3;

/// A bug's signature for deduplication across runs and machines: FNV-1a (64 bits) of the
/// error's title (kind and access type) and of the top frames of its stack, each as the
/// module's file name and the function's symbol (or, without a symbol, the offset in the
/// module). Addresses never enter it, so it is the same under ASLR and across runs.
pub(crate) fn signature(e: &Error, sym: &mut Symbolizer, cut: usize) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.eat(e.kind.title(e.is_write).as_bytes());
    for &pc in e.stack.frames()[cut..].iter().take(SIGNATURE_FRAMES) {
        let f = sym.lookup(pc);
        let base = f.module.rsplit(|&c| c == b'/').next().unwrap_or(f.module);
        h.eat(base);
        match f.function {
            Some((name, _)) => h.eat(name),
            None => h.eat(&(f.offset as u64).to_le_bytes()),
        }
    }
    h.0
}

struct Fnv(u64);

impl Fnv {
    /// Hashes `bytes` followed by a separator, so that ("ab","c") and ("a","bc") differ.
    fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&[0xff]) {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The headline after the title (`Out-of-bounds read at 0x... (1B right of ufence-#3):`),
/// without its line end.
pub(crate) fn write_headline(out: &mut dyn Write, e: &Error, pool: &Pool) {
    match (e.kind, e.object) {
        (Kind::OutOfBounds, Some((i, s))) => {
            let (dist, side) = if e.addr < s.addr {
                (s.addr - e.addr, "left")
            } else {
                (e.addr + 1 - (s.addr + s.size), "right")
            };
            let what = if e.is_write { "write" } else { "read" };
            let zero = if s.size == 0 {
                ", a 0-byte allocation"
            } else {
                ""
            };
            let _ = write!(
                out,
                "Out-of-bounds {what} at {:#x} ({dist}B {side} of ufence-#{i}{zero}):",
                e.addr
            );
        }
        (Kind::UseAfterFree, Some((i, _))) => {
            let what = if e.is_write { "write" } else { "read" };
            let _ = write!(
                out,
                "Use-after-free {what} at {:#x} (in ufence-#{i}):",
                e.addr
            );
        }
        (Kind::DoubleFree, Some((i, _))) => {
            let _ = write!(out, "Double free of {:#x} (in ufence-#{i}):", e.addr);
        }
        (Kind::InvalidFree, Some((i, s))) => {
            let _ = write!(out, "Invalid free of {:#x} (", e.addr);
            if e.addr >= s.addr && e.addr < s.addr + s.size.max(1) {
                let _ = write!(out, "{}B inside ", e.addr - s.addr);
            } else {
                let _ = write!(out, "in ");
            }
            let _ = write!(out, "ufence-#{i}):");
        }
        (Kind::Mismatch, Some((i, s))) => {
            let _ = write!(
                out,
                "Alloc-dealloc mismatch ({} vs {}) of {:#x} (in ufence-#{i}):",
                crate::routine::name(s.routine),
                crate::routine::name(e.dealloc),
                e.addr
            );
        }
        (Kind::Corruption, Some((i, s))) => {
            let _ = write!(out, "Corrupted memory at {:#x} [", e.damaged);
            write_damage(out, e.damaged, s, pool);
            // Found by a check of the live objects (at exit, or on request), not by a free.
            let live = s.state.load(core::sync::atomic::Ordering::Acquire) == CHECKING;
            let still = if live { ", still allocated" } else { "" };
            let _ = write!(out, " ] (in ufence-#{i}{still}):");
        }
        (Kind::InvalidFree, None) if e.dealloc != crate::routine::ANY => {
            // Caught by the C library behind ufence (`detector::report_foreign_free`): the
            // pointer was never its memory.
            let routine = crate::routine::name(e.dealloc);
            if e.addr == 0 {
                let _ = write!(
                    out,
                    "Invalid free: the C library's {routine} rejected the pointer and aborted:"
                );
            } else {
                let _ = write!(
                    out,
                    "Invalid free: the C library's {routine} faulted at {:#x} (",
                    e.addr
                );
                describe_address(out, e.addr);
                let _ = write!(out, "):");
            }
        }
        (kind, _) => {
            let what = match kind {
                Kind::InvalidFree => "Invalid free of",
                _ if e.is_write => "Invalid write at",
                _ => "Invalid read at",
            };
            let _ = write!(out, "{what} {:#x}:", e.addr);
        }
    }
}

/// What memory `addr` is: a thread's stack, a module's static data, the heap, another mapping,
/// or nothing mapped (from `/proc/self/maps`, read without allocating).
fn describe_address(out: &mut dyn Write, addr: usize) {
    let Some(m) = sys::mapping_of(addr) else {
        let _ = write!(out, "not mapped");
        return;
    };
    let perms = core::str::from_utf8(&m.perms).unwrap_or("?");
    if m.name() == b"[stack]" {
        let _ = write!(out, "on the stack of the main thread");
    } else if m.name() == b"[heap]" {
        let _ = write!(out, "in the heap");
    } else if let Some((base, path)) = sys::module_of(addr) {
        let what = if m.perms[2] == b'x' {
            "code"
        } else {
            "static data"
        };
        let path = path.to_bytes();
        let path: &[u8] = if path.is_empty() {
            crate::symbolize::exe_path()
        } else {
            path
        };
        let _ = write!(out, "in the {what} of {}+{:#x}", Escaped(path), addr - base);
    } else if m.name().is_empty() {
        let _ = write!(
            out,
            "in an anonymous mapping {:#x}-{:#x} {perms}: mmap, or a thread's stack",
            m.start, m.end
        );
    } else {
        let _ = write!(
            out,
            "in a mapping of {} {:#x}-{:#x} {perms}",
            Escaped(m.name()),
            m.start,
            m.end
        );
    }
}

fn print_text(
    e: &Error,
    pool: &Pool,
    sym: &mut Symbolizer,
    lines: &mut LineCache,
    res: Option<&Resolved>,
) {
    let mut out = Out {
        line: BufWriter::new(),
    };
    let sym = &mut *sym;
    let cut = frames_to_cut(sym, e.stack);
    let _ = writeln!(out, "{RULE}");
    let _ = write!(out, "BUG: UFENCE: {} in ", e.kind.title(e.is_write));
    match title_function(sym, res, e.stack, cut) {
        Some(TitleFunction::Inlined(name)) => {
            let _ = write!(out, "{}", Escaped(name));
        }
        Some(TitleFunction::Frame(pc)) => write_title_frame(&mut out, sym, Some(pc)),
        None => write_title_frame(&mut out, sym, None),
    }
    let _ = writeln!(out, "\n");

    write_headline(&mut out, e, pool);
    let _ = writeln!(out);
    write_stack(&mut out, sym, lines, res, e.stack, cut);

    if let Some((i, s)) = e.object {
        let _ = writeln!(out);
        write_object_line(&mut out, i, s, pool.page);
        let _ = writeln!(out, "\n");
        write_record(&mut out, sym, lines, res, "allocated", &s.alloc);
        if s.state.load(core::sync::atomic::Ordering::Acquire) == FREED {
            let _ = writeln!(out);
            write_record(&mut out, sym, lines, res, "freed", &s.free);
        }
    }
    let _ = writeln!(out, "{RULE}");
}

/// The title's function from the top frame's symbol (or module+offset, or address).
fn write_title_frame(out: &mut Out, sym: &mut Symbolizer, top: Option<usize>) {
    match top.map(|pc| sym.lookup(pc)) {
        Some(f) => match f.function {
            Some((name, _)) => {
                let _ = write!(out, "{}", Demangled(name));
            }
            // No symbol (e.g. inside a stripped libc): the module and offset, which stay the
            // same from run to run, unlike the address.
            None if !f.module.is_empty() => {
                let base = f.module.rsplit(|&c| c == b'/').next().unwrap_or(f.module);
                let _ = write!(out, "{}+{:#x}", Escaped(base), f.offset);
            }
            None => {
                let _ = write!(out, "{:#x}", f.pc);
            }
        },
        None => {
            let _ = write!(out, "(unknown)");
        }
    }
}

/// The object line, without its line end: `ufence-#3: 0xA-0xB, size=S, align=A, side=left`,
/// with `, pages=N` for an object over a page and `(0-byte allocation)` for size 0. The same
/// line as `ufence objects` prints.
pub fn write_object_line(out: &mut dyn Write, i: usize, s: &Slot, page: usize) {
    let end = s.addr + s.size.max(1) - 1;
    let side = if s.right != 0 { "right" } else { "left" };
    let _ = write!(out, "ufence-#{i}: {:#x}-{end:#x}, size={}", s.addr, s.size);
    if s.size == 0 {
        let _ = write!(out, " (0-byte allocation)");
    }
    let _ = write!(out, ", align={}, side={side}", s.align);
    let pages = object_pages(s, page);
    if pages > 1 {
        let _ = write!(out, ", pages={pages}");
    }
}

/// The pages an object touches (0 for a 0-byte object).
pub fn object_pages(s: &Slot, page: usize) -> usize {
    if s.size == 0 {
        0
    } else {
        (s.addr + s.size).div_ceil(page) - s.addr / page
    }
}

/// The report in one line, without symbols: for when the full report cannot be printed safely.
pub fn print_brief(e: &Error) {
    let mut line = BufWriter::<200>::new();
    let _ = write!(
        line,
        "BUG: UFENCE: {} at {:#x}",
        e.kind.title(e.is_write),
        e.addr
    );
    if let Some((i, _)) = e.object {
        let _ = write!(line, " (ufence-#{i})");
    }
    if let Some(pc) = e.stack.frames().first() {
        let _ = write!(line, " pc {pc:#x}");
    }
    let _ = writeln!(
        line,
        " [brief report: the full one could not be printed safely]"
    );
    sys::write_all(2, line.as_bytes());
}

/// KFENCE's view of damaged canary bytes: up to 16 bytes from the first damaged one, `!` for a
/// damaged byte and `.` for an intact one, within the canary area on that side of the object.
fn write_damage(out: &mut dyn Write, first: usize, s: &Slot, pool: &Pool) {
    let limit = if first < s.addr {
        s.addr
    } else {
        pool.object_pages(s).1
    };
    let end = (first + 16).min(limit);
    for a in first..end {
        // SAFETY: [first, end) is on the object's page, which is accessible while it is freed
        // (the caller checks the canary before protecting the page).
        let b = unsafe { *(a as *const u8) };
        let mark = if b == crate::pool::canary_byte(a) {
            " ."
        } else {
            " !"
        };
        let _ = out.write_str(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_frames_are_recognised() {
        assert!(is_allocator_frame(b"malloc"));
        assert!(is_allocator_frame(b"_Znwm"));
        assert!(is_allocator_frame(b"__rust_alloc"));
        assert!(is_allocator_frame(
            b"_ZN6ufence8detector11alloc_slow17h0123456789abcdefE"
        ));
        assert!(!is_allocator_frame(b"main"));
        assert!(!is_allocator_frame(
            b"_ZN6ufence4demo12open_session17h0123456789abcdefE"
        ));
        assert!(!is_allocator_frame(b"make_object"));
        assert!(!is_allocator_frame(b"_RNvCs1234_7myprog4main"));
    }
}
