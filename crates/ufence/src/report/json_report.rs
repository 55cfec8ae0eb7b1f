//! JSON reports (`report_dir=DIR`): each report also goes to one file in DIR, in the versioned
//! schema of `docs/report-schema.md` (and `docs/report-schema.json`).
//!
//! Written from the same place as the text report (possibly a SIGSEGV handler, on ufence's
//! report stack), so it allocates nothing: the document is formatted into a 4 KiB buffer that is
//! flushed to the file as it fills. The file appears whole or not at all: it is written to a
//! temporary file in DIR (`O_EXCL`, `O_CLOEXEC`, mode 0644), flushed with `fsync`, then renamed
//! to `ufence-SECS-PID-N.json`. A failure leaves the host program alone: the temporary file is
//! removed and one warning line is printed, once per process.

use crate::fmt::{cstr_bytes, BufWriter, Escaped};
use crate::pool::{Pool, Record, FREED};
use crate::report::{self, Error, Kind};
use crate::stack::Stack;
use crate::symbolize::{exe_path, Demangled, LineCache, Symbolizer};
use crate::symbolizer_process::Resolved;
use crate::sys;
use core::ffi::CStr;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

/// The schema's version: bumped on any change that could break a reader.
pub const SCHEMA_VERSION: u32 = 1;

static SEQ: AtomicU32 = AtomicU32::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// Writes `e` as a JSON report into the directory `dir`.
pub(crate) fn write(
    dir: &[u8],
    e: &Error,
    pool: &Pool,
    sym: &mut Symbolizer,
    lines: &mut LineCache,
    res: Option<&Resolved>,
) {
    let pid = sys::getpid();
    let seq = SEQ.fetch_add(1, Relaxed);
    let now = sys::realtime_ns();
    let mut tmp = BufWriter::<600>::new();
    let mut dest = BufWriter::<600>::new();
    let Ok(dir_text) = core::str::from_utf8(dir) else {
        return warn(dir, "the directory's name is not UTF-8");
    };
    let _ = write!(tmp, "{dir_text}/.ufence-{pid}-{seq}.json.tmp\0");
    let secs = now / 1_000_000_000;
    let _ = write!(dest, "{dir_text}/ufence-{secs}-{pid}-{seq}.json\0");
    let (Ok(tmp_path), Ok(dest_path)) = (
        CStr::from_bytes_with_nul(tmp.as_bytes()),
        CStr::from_bytes_with_nul(dest.as_bytes()),
    ) else {
        return warn(dir, "path too long");
    };
    let Some(fd) = sys::create_new(tmp_path) else {
        return warn(dir, "cannot create a file there");
    };
    let mut j = Json {
        out: FdOut {
            fd,
            buf: [0; 4096],
            len: 0,
            ok: true,
        },
        first: [true; 16],
        depth: 0,
        after_key: false,
    };
    document(&mut j, e, pool, sym, lines, res, now);
    j.out.raw("\n");
    let written = j.out.flush();
    let closed = sys::sync_and_close(fd);
    if written && closed && sys::rename(tmp_path, dest_path) {
        return;
    }
    sys::unlink(tmp_path);
    warn(dir, "write failed");
}

fn warn(dir: &[u8], why: &str) {
    if WARNED.swap(true, Relaxed) {
        return;
    }
    let mut line = BufWriter::<400>::new();
    let _ = writeln!(
        line,
        "ufence: warning: cannot write a JSON report to {} ({why}, errno {}); the text report stands",
        Escaped(&dir[..dir.len().min(256)]),
        sys::errno()
    );
    sys::write_all(2, line.as_bytes());
}

/// A buffered writer to a file descriptor that remembers whether every write succeeded.
struct FdOut {
    fd: i32,
    buf: [u8; 4096],
    len: usize,
    ok: bool,
}

impl FdOut {
    fn flush(&mut self) -> bool {
        if self.len > 0 {
            self.ok &= sys::write_all(self.fd, &self.buf[..self.len]);
            self.len = 0;
        }
        self.ok
    }
    fn raw(&mut self, s: &str) {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = b.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
        }
    }
}

impl Write for FdOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.raw(s);
        Ok(())
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct Escaping<'a>(&'a mut FdOut);

impl Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if c == '"' || c == '\\' || (c as u32) < 0x20 || c == '\u{7f}' {
                self.0.raw(&s[start..i]);
                match c {
                    '"' => self.0.raw("\\\""),
                    '\\' => self.0.raw("\\\\"),
                    '\n' => self.0.raw("\\n"),
                    '\t' => self.0.raw("\\t"),
                    _ => {
                        let _ = write!(self.0, "\\u{:04x}", c as u32);
                    }
                }
                start = i + c.len_utf8();
            }
        }
        self.0.raw(&s[start..]);
        Ok(())
    }
}

/// A JSON document written as it goes, inserting commas between members.
struct Json {
    out: FdOut,
    first: [bool; 16],
    depth: usize,
    after_key: bool,
}

impl Json {
    fn sep(&mut self) {
        if self.after_key {
            self.after_key = false;
            return;
        }
        if !self.first[self.depth] {
            self.out.raw(",");
        }
        self.first[self.depth] = false;
    }
    fn open(&mut self, c: &str) {
        self.sep();
        self.out.raw(c);
        self.depth = (self.depth + 1).min(self.first.len() - 1);
        self.first[self.depth] = true;
    }
    fn close(&mut self, c: &str) {
        self.out.raw(c);
        self.depth = self.depth.saturating_sub(1);
    }
    fn key(&mut self, k: &str) {
        self.sep();
        self.out.raw("\"");
        self.out.raw(k);
        self.out.raw("\":");
        self.after_key = true;
    }
    fn null(&mut self) {
        self.sep();
        self.out.raw("null");
    }
    fn num(&mut self, v: u64) {
        self.sep();
        let _ = write!(self.out, "{v}");
    }
    fn hex(&mut self, v: usize) {
        self.sep();
        let _ = write!(self.out, "\"{v:#x}\"");
    }
    /// Text shown through Display, as a JSON string.
    fn text(&mut self, v: impl fmt::Display) {
        self.sep();
        self.out.raw("\"");
        let _ = write!(Escaping(&mut self.out), "{v}");
        self.out.raw("\"");
    }
    /// [`Json::bytes`], or null for none (an empty module path or file name means unknown).
    fn bytes_or_null(&mut self, b: &[u8]) {
        if b.is_empty() {
            self.null();
        } else {
            self.bytes(b);
        }
    }
    /// A number, or null for 0 (a line number of 0 means unknown).
    fn num_or_null(&mut self, v: u64) {
        if v == 0 {
            self.null();
        } else {
            self.num(v);
        }
    }
    /// Bytes as a JSON string: UTF-8 as is, invalid sequences as U+FFFD.
    fn bytes(&mut self, b: &[u8]) {
        self.sep();
        self.out.raw("\"");
        for chunk in b.utf8_chunks() {
            let _ = Escaping(&mut self.out).write_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                self.out.raw("\u{fffd}");
            }
        }
        self.out.raw("\"");
    }
    /// A source path from a line table (`dir/file`, as `report::SourcePath` shows it).
    fn path(&mut self, dir: &[u8], file: &[u8]) {
        self.sep();
        self.out.raw("\"");
        for (k, part) in [dir, file].into_iter().enumerate() {
            if k == 1 && !dir.is_empty() && !dir.ends_with(b"/") {
                self.out.raw("/");
            }
            for chunk in part.utf8_chunks() {
                let _ = Escaping(&mut self.out).write_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    self.out.raw("\u{fffd}");
                }
            }
        }
        self.out.raw("\"");
    }
    fn hex_bytes(&mut self, b: &[u8]) {
        self.sep();
        self.out.raw("\"");
        for x in b {
            let _ = write!(self.out, "{x:02x}");
        }
        self.out.raw("\"");
    }
}

fn document(
    j: &mut Json,
    e: &Error,
    pool: &Pool,
    sym: &mut Symbolizer,
    lines: &mut LineCache,
    res: Option<&Resolved>,
    now: u64,
) {
    let cut = report::frames_to_cut(sym, e.stack);
    j.open("{");
    j.key("schema");
    j.text("ufence-report");
    j.key("version");
    j.num(SCHEMA_VERSION as u64);
    j.key("kind");
    j.text(e.kind.json_name());
    j.key("title");
    j.text(e.kind.title(e.is_write));
    j.key("function");
    match report::title_function(sym, res, e.stack, cut) {
        Some(report::TitleFunction::Inlined(name)) => j.bytes(name),
        Some(report::TitleFunction::Frame(pc)) => match sym.lookup(pc).function {
            Some((name, _)) => j.text(Demangled(name)),
            None => j.null(),
        },
        None => j.null(),
    }
    j.key("signature");
    let sig = report::signature(e, sym, cut);
    j.text(format_args!("{sig:016x}"));

    j.key("access");
    j.open("{");
    j.key("address");
    j.hex(e.addr);
    j.key("type");
    j.text(match e.kind {
        Kind::DoubleFree | Kind::InvalidFree | Kind::Mismatch => "free",
        _ if e.is_write => "write",
        _ => "read",
    });
    j.key("description");
    let mut headline = BufWriter::<256>::new();
    report::write_headline(&mut headline, e, pool);
    j.bytes(headline.as_bytes());
    j.key("damaged_address");
    if e.kind == Kind::Corruption {
        j.hex(e.damaged);
    } else {
        j.null();
    }
    j.key("stack");
    stack(j, sym, lines, res, e.stack, cut);
    j.close("}");

    j.key("object");
    match e.object {
        None => j.null(),
        Some((i, s)) => {
            j.open("{");
            j.key("index");
            j.num(i as u64);
            j.key("start");
            j.hex(s.addr);
            j.key("end");
            j.hex(s.addr + s.size.max(1) - 1);
            j.key("size");
            j.num(s.size as u64);
            j.key("alignment");
            j.num(s.align as u64);
            j.key("side");
            j.text(if s.right != 0 { "right" } else { "left" });
            j.key("pages");
            j.num(crate::report::object_pages(s, pool.page) as u64);
            let freed = s.state.load(core::sync::atomic::Ordering::Acquire) == FREED;
            j.key("state");
            j.text(if freed { "freed" } else { "allocated" });
            j.key("allocated");
            record(j, sym, lines, res, &s.alloc);
            j.key("freed");
            if freed {
                record(j, sym, lines, res, &s.free);
            } else {
                j.null();
            }
            j.close("}");
        }
    }

    j.key("thread");
    thread(j, sys::gettid(), &sys::thread_name());
    j.key("time");
    j.open("{");
    j.key("unix_ns");
    j.num(now);
    j.key("since_start_ns");
    j.num(crate::since_start_ns());
    j.close("}");

    j.key("process");
    j.open("{");
    j.key("pid");
    j.num(sys::getpid() as u64);
    j.key("executable");
    j.bytes(exe_path());
    j.key("cmdline");
    j.open("[");
    let mut cmdline = [0u8; 4096];
    let n = sys::read_file(c"/proc/self/cmdline", &mut cmdline);
    let args = cmdline[..n].strip_suffix(&[0]).unwrap_or(&cmdline[..n]);
    if n > 0 {
        for arg in args.split(|&c| c == 0) {
            j.bytes(arg);
        }
    }
    j.close("]");
    j.key("hostname");
    let mut host = [0u8; 65];
    let n = sys::hostname(&mut host);
    j.bytes(&host[..n]);
    j.close("}");

    j.key("options");
    j.open("{");
    if let Some(opts) = crate::options_in_force() {
        let mut text = BufWriter::<2048>::new();
        let _ = opts.write_all(&mut text);
        for pair in text.as_bytes().split(|&c| c == b' ') {
            if let Some(eq) = pair.iter().position(|&c| c == b'=') {
                j.key(core::str::from_utf8(&pair[..eq]).unwrap_or("?"));
                j.bytes(&pair[eq + 1..]);
            }
        }
    }
    j.close("}");

    j.key("stats");
    j.open("{");
    for (name, v) in crate::stats().fields() {
        j.key(name);
        j.num(v);
    }
    j.close("}");
    j.close("}");
}

fn thread(j: &mut Json, tid: u32, name: &[u8]) {
    j.open("{");
    j.key("tid");
    j.num(tid as u64);
    j.key("name");
    j.bytes(cstr_bytes(name));
    j.close("}");
}

fn record(
    j: &mut Json,
    sym: &mut Symbolizer,
    lines: &mut LineCache,
    res: Option<&Resolved>,
    r: &Record,
) {
    j.open("{");
    j.key("thread");
    thread(j, r.tid, &r.thread_name);
    j.key("since_start_ns");
    j.num(r.time_ns);
    j.key("stack");
    let st = r.stack();
    let cut = report::frames_to_cut(sym, &st);
    stack(j, sym, lines, res, &st, cut);
    j.close("}");
}

fn stack(
    j: &mut Json,
    sym: &mut Symbolizer,
    lines: &mut LineCache,
    res: Option<&Resolved>,
    st: &Stack,
    cut: usize,
) {
    j.open("[");
    for &pc in &st.frames()[cut..] {
        j.open("{");
        j.key("pc");
        j.hex(pc);
        {
            let f = sym.lookup(pc);
            j.key("module");
            j.bytes_or_null(f.module);
            j.key("build_id");
            if f.build_id.is_empty() {
                j.null();
            } else {
                j.hex_bytes(f.build_id);
            }
            j.key("offset");
            j.hex(f.offset);
            match f.function {
                Some((name, off)) => {
                    j.key("symbol");
                    j.bytes(name);
                    j.key("function");
                    j.text(Demangled(name));
                    j.key("function_offset");
                    j.num(off as u64);
                }
                None => {
                    for k in ["symbol", "function", "function_offset"] {
                        j.key(k);
                        j.null();
                    }
                }
            }
        }
        // With the symbolizer's answer, the position is the one in `function` itself (the
        // call site of the outermost inlined function); without it, the line table's.
        match res.filter(|r| r.knows(pc)).map(|r| r.outer(pc)) {
            Some(Some(o)) if !o.file.is_empty() => {
                j.key("file");
                j.bytes(o.file);
                j.key("line");
                j.num(o.line as u64);
            }
            Some(_) => {
                j.key("file");
                j.null();
                j.key("line");
                j.null();
            }
            None => match sym.line(pc, lines) {
                Some(l) => {
                    j.key("file");
                    j.path(l.dir, l.file);
                    j.key("line");
                    j.num(l.line as u64);
                }
                None => {
                    j.key("file");
                    j.null();
                    j.key("line");
                    j.null();
                }
            },
        }
        j.key("inlined");
        match res.filter(|r| r.knows(pc)) {
            Some(r) => {
                j.open("[");
                for f in r.inlined(pc) {
                    j.open("{");
                    j.key("function");
                    j.bytes(f.function);
                    j.key("file");
                    j.bytes_or_null(f.file);
                    j.key("line");
                    j.num_or_null(f.line as u64);
                    j.close("}");
                }
                j.close("]");
            }
            None => j.null(),
        }
        j.close("}");
    }
    j.close("]");
}
