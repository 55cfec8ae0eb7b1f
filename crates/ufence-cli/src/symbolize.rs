//! `ufence symbolize REPORT.json... [--debug-dir DIR]...`: prints JSON reports (`report_dir`) as
//! KFENCE-style text, symbolized offline from their raw frames.
//!
//! A raw frame is (module path, GNU build-id, offset), where the offset is the frame's address
//! minus the module's load bias: the ELF virtual address, as `addr2line -e MODULE` takes it.
//! The module is found by its build-id, in this order: in each `--debug-dir` and in
//! `/usr/lib/debug`, under `.build-id/xx/rest.debug` or as any ELF file in the directory tree
//! with that build-id (an unstripped binary, or the debug file `objcopy --only-keep-debug`
//! makes); then at the recorded path if its build-id matches. Symbols, file:line and inlined
//! functions come from blazesym. A frame whose module cannot be found keeps what the process
//! knew (function, file:line) and its module+offset, with one note per module saying why.
//!
//! A file that cannot be read or is not a report gets a one-line error; the others still
//! print; the exit status is 1 if any file failed.

use blazesym::symbolize::{self, source, Input, Symbolized};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use ufence_core::dwarf::Elf;
use ufence_core::fmt::escape;
use ufence_core::sys::MappedFile;

/// Reports bigger than this are refused (a report is a few kilobytes).
const MAX_REPORT: u64 = 16 << 20;
/// How deep a `--debug-dir` tree is searched for files with a wanted build-id.
const MAX_DEPTH: usize = 4;
const RULE: &str = "==================================================================";

pub fn main(files: &[String], debug_dirs: &[PathBuf]) -> Result<u8, String> {
    let mut s = Offline::new(debug_dirs);
    let mut failed = false;
    for (n, file) in files.iter().enumerate() {
        match load(Path::new(file)) {
            Ok(report) => {
                if n > 0 {
                    println!();
                }
                print!("{}", s.render(&report));
            }
            Err(msg) => {
                eprintln!(
                    "ufence: {}: {}",
                    escape(file.as_bytes()),
                    escape(msg.as_bytes())
                );
                failed = true;
            }
        }
    }
    Ok(failed as u8)
}

/// The hidden verb of the symbolizer process.
pub const FRAMES_VERB: &str = "__symbolize-frames";

/// `ufence __symbolize-frames`: the symbolizer process a report runs (see the detector's
/// `symbolizer_process`). Reads `INDEX\tOFFSET_HEX\tBUILD_ID_HEX|-\tMODULE` lines on stdin
/// until EOF and answers `ufence-frames 1`, then `INDEX\tI|F\tLINE\tFILE\tFUNCTION` per
/// function (inlined ones innermost first, then the one holding them), then `end`. A module
/// whose build-id differs from the request's is not read (its frames get no lines).
pub fn frames_main() -> u8 {
    use std::io::{Read, Write};
    let mut input = Vec::new();
    if std::io::stdin()
        .lock()
        .take(1 << 20)
        .read_to_end(&mut input)
        .is_err()
    {
        return 1;
    }
    let mut s = Offline::new(&[]);
    let mut out = String::from("ufence-frames 1\n");
    let clean = |t: &str| t.replace(['\t', '\n', '\r'], " ");
    for line in String::from_utf8_lossy(&input).lines() {
        let mut f = line.splitn(4, '\t');
        let (Some(idx), Some(off), Some(id), Some(module)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let (Ok(idx), Ok(off)) = (idx.parse::<u32>(), u64::from_str_radix(off, 16)) else {
            continue;
        };
        let frame = RawFrame {
            module: Some(module),
            build_id: Some(id).filter(|s| s.len() >= 4 && s.chars().all(|c| c.is_ascii_hexdigit())),
            offset: Some(off),
            pc: None,
            v: &Value::Null,
        };
        for p in s.symbolize_parts(&frame).unwrap_or_default() {
            let _ = writeln!(
                out,
                "{idx}\t{}\t{}\t{}\t{}",
                if p.inlined { "I" } else { "F" },
                p.line.unwrap_or(0),
                clean(p.file.as_deref().unwrap_or("")),
                if p.name.is_empty() {
                    "??".to_string()
                } else {
                    clean(&p.name)
                }
            );
        }
    }
    out.push_str("end\n");
    let mut stdout = std::io::stdout().lock();
    (stdout.write_all(out.as_bytes()).is_err() || stdout.flush().is_err()) as u8
}

/// Reads and checks one report file.
fn load(path: &Path) -> Result<Value, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if meta.len() > MAX_REPORT {
        return Err(format!("too big for a report ({} bytes)", meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("not a ufence report: invalid JSON ({e})"))?;
    if v.get("schema").and_then(Value::as_str) != Some("ufence-report") {
        return Err("not a ufence report: no \"schema\": \"ufence-report\"".into());
    }
    match v.get("version").and_then(Value::as_u64) {
        Some(1) => {}
        Some(n) => return Err(format!("report schema version {n} is not supported (1 is)")),
        None => return Err("not a ufence report: no schema version".into()),
    }
    for key in ["kind", "title"] {
        if v.get(key).and_then(Value::as_str).is_none() {
            return Err(format!("malformed report: no \"{key}\""));
        }
    }
    if v.pointer("/access/stack")
        .and_then(Value::as_array)
        .is_none()
    {
        return Err("malformed report: no access stack".into());
    }
    Ok(v)
}

/// One frame as the report recorded it.
struct RawFrame<'a> {
    module: Option<&'a str>,
    build_id: Option<&'a str>,
    offset: Option<u64>,
    pc: Option<u64>,
    v: &'a Value,
}

impl<'a> RawFrame<'a> {
    fn of(v: &'a Value) -> RawFrame<'a> {
        let hex = |k: &str| v.get(k).and_then(Value::as_str).and_then(parse_hex);
        RawFrame {
            module: v.get("module").and_then(Value::as_str),
            build_id: v
                .get("build_id")
                .and_then(Value::as_str)
                .filter(|s| s.len() >= 4 && s.chars().all(|c| c.is_ascii_hexdigit())),
            offset: hex("offset"),
            pc: hex("pc"),
            v,
        }
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// Where a module's symbols are read from, or why they are not.
#[derive(Clone)]
enum Found {
    File(PathBuf),
    Missing(String),
}

/// One symbolized frame, innermost inlined function first.
struct Line {
    function: String,
    location: Option<String>,
    inlined: bool,
}

/// One function at a frame, in parts (see `Offline::symbolize_parts`).
struct Part {
    name: String,
    /// The frame's distance from the symbol's start (the holding function only).
    offset: Option<usize>,
    file: Option<String>,
    line: Option<u32>,
    inlined: bool,
}

pub struct Offline {
    debug_dirs: Vec<PathBuf>,
    /// build-id -> files found with it, from scanning the debug directories once.
    index: Option<HashMap<String, PathBuf>>,
    modules: HashMap<(String, String), Found>,
    noted: BTreeSet<(String, String)>,
    symbolizer: symbolize::Symbolizer,
}

impl Offline {
    pub fn new(dirs: &[PathBuf]) -> Offline {
        let mut debug_dirs = dirs.to_vec();
        debug_dirs.push(PathBuf::from("/usr/lib/debug"));
        let symbolizer = symbolize::Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .set_debug_dirs(Some(debug_dirs.clone()))
            .build();
        Offline {
            debug_dirs,
            index: None,
            modules: HashMap::new(),
            noted: BTreeSet::new(),
            symbolizer,
        }
    }

    /// Finds the file to symbolize a module with.
    fn find(&mut self, module: &str, build_id: Option<&str>) -> Found {
        let key = (module.to_string(), build_id.unwrap_or("").to_string());
        if let Some(f) = self.modules.get(&key) {
            return f.clone();
        }
        let found = self.search(module, build_id);
        if let Found::Missing(why) = &found {
            if self.noted.insert(key.clone()) {
                // `why` names the module, a path the report chose.
                eprintln!(
                    "ufence: note: {}; its frames show module+offset",
                    escape(why.as_bytes())
                );
            }
        }
        self.modules.insert(key, found.clone());
        found
    }

    fn search(&mut self, module: &str, build_id: Option<&str>) -> Found {
        let Some(id) = build_id else {
            // No build-id recorded: the recorded path is all there is.
            return if Path::new(module).is_file() {
                Found::File(module.into())
            } else {
                Found::Missing(format!("module {module} (no build-id) not found"))
            };
        };
        let id = id.to_ascii_lowercase();
        for dir in &self.debug_dirs {
            let p = dir
                .join(".build-id")
                .join(&id[..2])
                .join(format!("{}.debug", &id[2..]));
            if build_id_of(&p).as_deref() == Some(id.as_str()) {
                return Found::File(p);
            }
        }
        let dirs = self.debug_dirs.clone();
        let index = self.index.get_or_insert_with(|| {
            let mut index = HashMap::new();
            // Directories given on the command line only: /usr/lib/debug is searched by its
            // .build-id tree above.
            for dir in &dirs[..dirs.len() - 1] {
                scan(dir, 0, &mut index);
            }
            index
        });
        if let Some(p) = index.get(&id) {
            return Found::File(p.clone());
        }
        match build_id_of(Path::new(module)) {
            Some(theirs) if theirs == id => Found::File(module.into()),
            Some(theirs) => Found::Missing(format!(
                "{module} has build-id {theirs}, not the report's {id} (a different build); \
                 pass the right binary or its debug file with --debug-dir"
            )),
            None if Path::new(module).exists() => Found::Missing(format!(
                "{module} has no build-id, the report's is {id}; pass the right binary or its \
                 debug file with --debug-dir"
            )),
            None => Found::Missing(format!(
                "module {module} (build-id {id}) not found; pass it or its debug file with \
                 --debug-dir"
            )),
        }
    }

    /// Symbolizes one frame offline; None when its module is not available.
    fn symbolize(&mut self, f: &RawFrame) -> Option<Vec<Line>> {
        let parts = self.symbolize_parts(f)?;
        Some(
            parts
                .into_iter()
                .map(|p| Line {
                    function: match p.offset {
                        Some(off) => format!("{}+{off:#x}", p.name),
                        None => p.name,
                    },
                    location: p.file.map(|file| match p.line {
                        Some(l) => format!("{file}:{l}"),
                        None => file,
                    }),
                    inlined: p.inlined,
                })
                .collect(),
        )
    }

    /// The functions at one frame, innermost first: those inlined there, then the symbol
    /// that holds them (whose position is the call site of the first inlined function). Empty
    /// when the module has no symbol there; None when the module is not available.
    fn symbolize_parts(&mut self, f: &RawFrame) -> Option<Vec<Part>> {
        let module = f.module?;
        let offset = f.offset?;
        let Found::File(path) = self.find(module, f.build_id) else {
            return None;
        };
        let src = source::Source::Elf(source::Elf::new(&path));
        let sym = match self
            .symbolizer
            .symbolize_single(&src, Input::VirtOffset(offset))
        {
            Ok(Symbolized::Sym(sym)) => sym,
            Ok(Symbolized::Unknown(_)) => return Some(Vec::new()),
            Err(e) => {
                if self.noted.insert((module.to_string(), "error".into())) {
                    eprintln!("ufence: note: cannot read {}: {e}", path.display());
                }
                return None;
            }
        };
        let file = |ci: &symbolize::CodeInfo| ci.to_path().display().to_string();
        let mut out = Vec::new();
        // blazesym lists inlined functions outermost first; each one's location is inside it.
        for inl in sym.inlined.iter().rev() {
            out.push(Part {
                name: inl.name.to_string(),
                offset: None,
                file: inl.code_info.as_ref().map(file),
                line: inl.code_info.as_ref().and_then(|ci| ci.line),
                inlined: true,
            });
        }
        out.push(Part {
            name: sym.name.to_string(),
            offset: Some(sym.offset),
            file: sym.code_info.as_deref().map(file),
            line: sym.code_info.as_deref().and_then(|ci| ci.line),
            inlined: false,
        });
        Some(out)
    }

    /// The text of one report.
    fn render(&mut self, r: &Value) -> String {
        let mut t = String::new();
        // Everything in a report is the program's or the file's to choose: escaped for the
        // terminal, each field on its own, so that a newline in one cannot forge a line.
        let s =
            |v: &Value, k: &str| escape(v.get(k).and_then(Value::as_str).unwrap_or("?").as_bytes());
        let empty = Vec::new();
        let access = r
            .pointer("/access/stack")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let mut lines = Vec::new();
        for f in access {
            lines.push(self.frame_lines(&RawFrame::of(f)));
        }
        // The innermost function inlined where the fault happened (Rust's pointer helpers
        // aside), else the symbol holding it: as the live report titles it.
        let title_fn = lines.first().and_then(|l| {
            l.iter()
                .find(|(l, _)| {
                    l.inlined
                        && !l.function.starts_with("core::ptr::")
                        && !l.function.starts_with("core::intrinsics::")
                })
                .or(l.last())
                .map(|l| l.0.function.clone())
        });
        let title_fn = title_fn
            .map(|f| match f.rfind("+0x") {
                Some(i) if f[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => f[..i].to_string(),
                _ => f,
            })
            .unwrap_or_else(|| "(unknown)".into());
        let _ = writeln!(t, "{RULE}");
        let _ = writeln!(
            t,
            "BUG: UFENCE: {} in {}\n",
            s(r, "title"),
            escape(title_fn.as_bytes())
        );
        let desc = r.pointer("/access/description").and_then(Value::as_str);
        let _ = writeln!(
            t,
            "{}",
            escape(desc.unwrap_or("(no description)").as_bytes())
        );
        write_frames(&mut t, &lines);
        if let Some(o) = r.get("object").filter(|o| o.is_object()) {
            let n = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
            let _ = writeln!(
                t,
                "\nufence-#{}: {}-{}, size={}, align={}, side={}\n",
                n("index"),
                s(o, "start"),
                s(o, "end"),
                n("size"),
                n("alignment"),
                s(o, "side")
            );
            for (key, verb) in [("allocated", "allocated"), ("freed", "freed")] {
                let Some(rec) = o.get(key).filter(|v| v.is_object()) else {
                    continue;
                };
                if key == "freed" {
                    let _ = writeln!(t);
                }
                let ns = rec
                    .get("since_start_ns")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let th = rec.get("thread").unwrap_or(&Value::Null);
                let _ = writeln!(
                    t,
                    "{verb} by thread {} ({}) at {}.{:06}s:",
                    th.get("tid").and_then(Value::as_u64).unwrap_or(0),
                    s(th, "name"),
                    ns / 1_000_000_000,
                    ns % 1_000_000_000 / 1000
                );
                let frames = rec.get("stack").and_then(Value::as_array).unwrap_or(&empty);
                let lines: Vec<_> = frames
                    .iter()
                    .map(|f| self.frame_lines(&RawFrame::of(f)))
                    .collect();
                write_frames(&mut t, &lines);
            }
        }
        let _ = writeln!(t, "{RULE}");
        t
    }

    /// The lines of one frame: offline symbols, else what the process knew, else raw.
    fn frame_lines(&mut self, f: &RawFrame) -> Vec<(Line, String)> {
        let raw = match (f.module, f.offset) {
            (Some(m), Some(off)) => format!("{m}+{off:#x}"),
            _ => String::new(),
        };
        if let Some(lines) = self.symbolize(f).filter(|l| !l.is_empty()) {
            return lines.into_iter().map(|l| (l, raw.clone())).collect();
        }
        let function = match (
            f.v.get("function").and_then(Value::as_str),
            f.v.get("function_offset").and_then(Value::as_u64),
        ) {
            (Some(name), Some(off)) => format!("{name}+{off:#x}"),
            (Some(name), None) => name.to_string(),
            _ => format!("{:#x}", f.pc.unwrap_or(0)),
        };
        let location = |v: &Value| match (
            v.get("file").and_then(Value::as_str),
            v.get("line").and_then(Value::as_u64),
        ) {
            (Some(file), Some(line)) => Some(format!("{file}:{line}")),
            (Some(file), None) => Some(file.to_string()),
            _ => None,
        };
        // The functions the process's symbolizer found inlined there, innermost first.
        let empty = Vec::new();
        let inlined =
            f.v.get("inlined")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
        let mut lines: Vec<(Line, String)> = inlined
            .iter()
            .filter_map(|i| {
                let function = i.get("function").and_then(Value::as_str)?.to_string();
                let line = Line {
                    function,
                    location: location(i),
                    inlined: true,
                };
                Some((line, raw.clone()))
            })
            .collect();
        lines.push((
            Line {
                function,
                location: location(f.v),
                inlined: false,
            },
            raw,
        ));
        lines
    }
}

/// Triage names the frames a report could not (a stripped binary's) the same way.
impl ufence_fleet::triage::Resolve for Offline {
    fn function(&mut self, module: &str, build_id: Option<&str>, offset: u64) -> Option<String> {
        let frame = RawFrame {
            module: Some(module),
            build_id,
            offset: Some(offset),
            pc: None,
            v: &Value::Null,
        };
        // The last line is the ELF symbol the inlined functions sit in: the report's `function`.
        let name = self.symbolize(&frame)?.pop()?.function;
        Some(match name.rfind("+0x") {
            Some(i) => name[..i].to_string(),
            None => name,
        })
    }
}

/// ` #N function+0xoff (file:line, module+0xoff)`, with inlined functions on lines of their
/// own above the function they were inlined into, each with a number of its own, as the live
/// report (and the sanitizers) number them.
fn write_frames(t: &mut String, frames: &[Vec<(Line, String)>]) {
    if frames.is_empty() {
        let _ = writeln!(t, " (no stack)");
    }
    let mut n = 0;
    for lines in frames {
        for (l, raw) in lines {
            let mut paren: Vec<String> = Vec::new();
            if let Some(loc) = &l.location {
                paren.push(escape(loc.as_bytes()));
            }
            if l.inlined {
                paren.push("inlined".into());
            } else if !raw.is_empty() {
                paren.push(escape(raw.as_bytes()));
            }
            let _ = write!(t, " #{n} {}", escape(l.function.as_bytes()));
            n += 1;
            if !paren.is_empty() {
                let _ = write!(t, " ({})", paren.join(", "));
            }
            let _ = writeln!(t);
        }
    }
}

/// The GNU build-id of an ELF file, as lowercase hex.
fn build_id_of(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    if !path.is_file() {
        return None;
    }
    let file = MappedFile::open(&c)?;
    let id = Elf::parse(file.data)?.build_id()?;
    Some(id.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Indexes the ELF files under `dir` by build-id (regular files, bounded depth, no symlinked
/// directories).
fn scan(dir: &Path, depth: usize, index: &mut HashMap<String, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ty) = e.file_type() else { continue };
        let path = e.path();
        if ty.is_dir() && depth < MAX_DEPTH {
            scan(&path, depth + 1, index);
        } else if ty.is_file() || ty.is_symlink() {
            if let Some(id) = build_id_of(&path) {
                // The first found wins; a debug file and its binary carry the same id.
                index.entry(id).or_insert(path);
            }
        }
    }
}
