//! `ufence triage`: a fleet's JSON reports grouped by bug.
//!
//! A bug's identity is its kind, its title words (`use-after-free read`) and the names of the
//! top [`KEY_FRAMES`](crate::report::KEY_FRAMES) functions of its access stack: no address and
//! no offset, so two builds of one program (another compiler flag, an unrelated function added)
//! and two machines put the same bug in one group. Names come from the report (the process read
//! them from the module's symbols) or, for frames it could not name (a stripped binary), from a
//! [`Resolve`]r that symbolizes offline. A frame that stays unnamed enters the identity as
//! build-id and offset, and its group says so: such a group splits at the next rebuild.
//!
//! Input streams: one report is parsed at a time into a reused buffer, and only the groups stay
//! in memory (their sets of hosts, executables and builds grow with the distinct values, not
//! with the reports).

use crate::report::{Frame, Report};
use crate::time::format_utc;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, Read};
use std::path::Path;

/// A single report larger than this is not one of ours (they take a few kilobytes).
const MAX_REPORT: u64 = 16 << 20;

/// Offline symbolization of a frame the report could not name: the function containing
/// `offset` (an ELF virtual address) in the module with this path and build-id.
pub trait Resolve {
    fn function(&mut self, module: &str, build_id: Option<&str>, offset: u64) -> Option<String>;
}

/// One bug: every report with the same identity.
#[derive(Debug)]
pub struct Group {
    pub kind: String,
    /// The title's words, e.g. `use-after-free read`.
    pub title: String,
    /// The function the title names.
    pub function: String,
    /// The top frames' names (or `build-id+0xoffset` where unnamed), innermost first.
    pub frames: Vec<String>,
    /// Some frame is known by build-id and offset only.
    pub by_offset: bool,
    pub count: u64,
    pub hosts: HashSet<String>,
    pub executables: HashSet<String>,
    /// Build-id of the executable -> reports from that build.
    pub builds: BTreeMap<String, u64>,
    /// Report times (nanoseconds since the epoch); 0 when no report had one.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Where the first report of the group was read.
    pub example: String,
    /// The reports' own `signature`s.
    pub signatures: HashSet<String>,
}

/// The grouping, fed with reports one at a time.
pub struct Triage<'r> {
    groups: HashMap<String, Group>,
    resolver: Option<&'r mut dyn Resolve>,
    resolved: HashMap<(String, u64), Option<String>>,
    /// Reports grouped.
    pub reports: u64,
    /// Inputs that were not reports (bad JSON, foreign, truncated, unreadable).
    pub skipped: u64,
    /// Print each skipped input with its reason (to stderr) as it is met.
    pub verbose: bool,
    buf: Vec<u8>,
}

fn is_report_name(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".json") || name.ends_with(".ndjson") || name.ends_with(".jsonl"))
}

fn is_lines_name(name: &str) -> bool {
    name.ends_with(".ndjson") || name.ends_with(".jsonl")
}

impl<'r> Triage<'r> {
    pub fn new(resolver: Option<&'r mut dyn Resolve>) -> Triage<'r> {
        Triage {
            groups: HashMap::new(),
            resolver,
            resolved: HashMap::new(),
            reports: 0,
            skipped: 0,
            verbose: false,
            buf: Vec::with_capacity(64 << 10),
        }
    }

    fn skip(&mut self, origin: &str, why: &str) {
        self.skipped += 1;
        if self.verbose {
            eprintln!("ufence: skipped {}: {why}", esc(origin));
        }
    }

    /// Reads a file (one report, or one per line for `.ndjson`/`.jsonl`) or, recursively, a
    /// directory's `*.json`, `*.ndjson` and `*.jsonl` files (in name order; hidden files, such
    /// as reports still being written, and symbolic links to directories are left out). Fails
    /// only when `path` itself cannot be read.
    pub fn add_path(&mut self, path: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", esc(&path.to_string_lossy())))?;
        if meta.is_dir() {
            self.walk(path);
        } else {
            let lines = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_lines_name);
            self.add_file(path, lines);
        }
        Ok(())
    }

    fn walk(&mut self, dir: &Path) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return self.skip(&dir.to_string_lossy(), &format!("cannot list it: {e}")),
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(ty) = e.file_type() else { continue };
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if ty.is_dir() {
                self.walk(&path);
            } else if is_report_name(&name) && (ty.is_file() || ty.is_symlink()) {
                if ty.is_symlink() && !path.is_file() {
                    continue;
                }
                self.add_file(&path, is_lines_name(&name));
            }
        }
    }

    fn add_file(&mut self, path: &Path, lines: bool) {
        let origin = path.to_string_lossy();
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) => return self.skip(&origin, &format!("cannot open it: {e}")),
        };
        if lines {
            return self.add_lines(std::io::BufReader::new(f), &origin);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match f.take(MAX_REPORT + 1).read_to_end(&mut buf) {
            Ok(n) if n as u64 > MAX_REPORT => self.skip(&origin, "too large for a report"),
            Ok(_) => self.add_bytes(&buf, &origin),
            Err(e) => self.skip(&origin, &format!("cannot read it: {e}")),
        }
        self.buf = buf;
    }

    /// Newline-delimited JSON: one report per line (blank lines ignored).
    pub fn add_lines(&mut self, mut r: impl BufRead, name: &str) {
        let mut line = Vec::with_capacity(64 << 10);
        let mut n = 0u64;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.skip(name, &format!("cannot read it: {e}"));
                    break;
                }
            }
            n += 1;
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            self.add_bytes(&line, &format!("{name}:{n}"));
        }
    }

    /// One report's bytes; `origin` names it (a path, or `path:line`).
    pub fn add_bytes(&mut self, bytes: &[u8], origin: &str) {
        match Report::parse(bytes) {
            Ok(r) => self.add(&r, origin),
            Err(why) => self.skip(origin, &why),
        }
    }

    /// The name of a frame for the bug's identity, and whether it is an offset.
    fn frame_name(&mut self, f: &Frame) -> (String, bool) {
        if let Some(name) = f.function.as_deref().filter(|n| !n.is_empty()) {
            return (name.to_string(), false);
        }
        let offset = f.offset();
        if let (Some(resolver), Some(module), Some(off)) =
            (self.resolver.as_mut(), f.module.as_deref(), offset)
        {
            let who = f.build_id.as_deref().unwrap_or(module).to_string();
            let name = self
                .resolved
                .entry((who, off))
                .or_insert_with(|| resolver.function(module, f.build_id.as_deref(), off));
            if let Some(name) = name {
                return (name.clone(), false);
            }
        }
        let module = match (f.build_id.as_deref(), f.module.as_deref()) {
            (Some(b), _) => b.to_string(),
            (None, Some(m)) => m.rsplit('/').next().unwrap_or(m).to_string(),
            (None, None) => "?".into(),
        };
        (format!("{module}+{:#x}", offset.unwrap_or(0)), true)
    }

    /// Adds one parsed report.
    pub fn add(&mut self, r: &Report, origin: &str) {
        self.reports += 1;
        let mut frames = Vec::with_capacity(r.access.stack.top.len());
        let mut by_offset = false;
        for f in &r.access.stack.top {
            let (name, off) = self.frame_name(f);
            by_offset |= off;
            frames.push(name);
        }
        let mut key = String::with_capacity(128);
        let _ = write!(key, "{}\u{1f}{}", r.kind, r.title);
        for f in &frames {
            key.push('\u{1f}');
            key.push_str(f);
        }
        let time = r.unix_ns().unwrap_or(0);
        let g = self.groups.entry(key).or_insert_with(|| Group {
            kind: r.kind.to_string(),
            title: r.title.to_string(),
            function: r
                .function
                .as_deref()
                .map(str::to_string)
                .or_else(|| frames.iter().find(|f| !f.contains("+0x")).cloned())
                .or_else(|| frames.first().cloned())
                .unwrap_or_else(|| "(unknown)".into()),
            frames,
            by_offset,
            count: 0,
            hosts: HashSet::new(),
            executables: HashSet::new(),
            builds: BTreeMap::new(),
            first_ns: time,
            last_ns: time,
            example: origin.to_string(),
            signatures: HashSet::new(),
        });
        g.count += 1;
        if let Some(h) = r.hostname() {
            if !g.hosts.contains(h) {
                g.hosts.insert(h.to_string());
            }
        }
        if let Some(e) = r.executable() {
            if !g.executables.contains(e) {
                g.executables.insert(e.to_string());
            }
        }
        if let Some(b) = r.exe_build_id() {
            match g.builds.get_mut(b) {
                Some(n) => *n += 1,
                None => {
                    g.builds.insert(b.to_string(), 1);
                }
            }
        }
        if let Some(s) = r.signature.as_deref() {
            if !g.signatures.contains(s) {
                g.signatures.insert(s.to_string());
            }
        }
        if time != 0 {
            if g.first_ns == 0 || time < g.first_ns {
                g.first_ns = time;
                g.example = origin.to_string();
            }
            g.last_ns = g.last_ns.max(time);
        }
    }

    /// The groups, most reports first; with `new_since` (nanoseconds since the epoch) only
    /// those first seen at or after it, in the order they appeared.
    pub fn groups(&self, new_since: Option<u64>) -> Vec<&Group> {
        let mut v: Vec<&Group> = self.groups.values().collect();
        match new_since {
            None => v.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then(a.first_ns.cmp(&b.first_ns))
                    .then(a.frames.cmp(&b.frames))
            }),
            Some(t) => {
                v.retain(|g| g.first_ns >= t);
                v.sort_by(|a, b| {
                    a.first_ns
                        .cmp(&b.first_ns)
                        .then(b.count.cmp(&a.count))
                        .then(a.frames.cmp(&b.frames))
                });
            }
        }
        v
    }

    /// How many distinct hosts sent reports.
    pub fn all_hosts(&self) -> usize {
        let mut all: HashSet<&str> = HashSet::new();
        for g in self.groups.values() {
            all.extend(g.hosts.iter().map(String::as_str));
        }
        all.len()
    }
}

/// `1 host`, `2 hosts`.
fn count(n: impl Into<u64>, what: &str) -> String {
    let n = n.into();
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn when(ns: u64) -> String {
    if ns == 0 {
        "-".into()
    } else {
        format_utc(ns)
    }
}

/// Builds as `id (count)`, most reports first; ids cut to 12 digits in text.
fn builds_text(g: &Group, cut: bool) -> String {
    let mut b: Vec<(&String, &u64)> = g.builds.iter().collect();
    b.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    let parts: Vec<String> = b
        .iter()
        .map(|(id, n)| {
            let id = if cut && id.len() > 12 { &id[..12] } else { id };
            format!("{} ({n})", esc(id))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn sorted(set: &HashSet<String>) -> Vec<&str> {
    let mut v: Vec<&str> = set.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// The grouping as text: a summary line, then one block per group.
pub fn text(t: &Triage, groups: &[&Group]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} from {} in {}{}",
        count(t.reports, "report"),
        count(t.all_hosts() as u64, "host"),
        count(t.groups.len() as u64, "group"),
        if groups.len() != t.groups.len() {
            format!(" ({} shown)", groups.len())
        } else {
            String::new()
        }
    );
    for (i, g) in groups.iter().enumerate() {
        let exes = sorted(&g.executables);
        let _ = writeln!(
            out,
            "\n#{} {} in {}: {}, {}, {}",
            i + 1,
            esc(&g.title),
            esc(&g.function),
            count(g.count, "report"),
            count(g.hosts.len() as u64, "host"),
            count(exes.len() as u64, "executable"),
        );
        let _ = writeln!(out, "    kind:       {}", esc(&g.kind));
        let frames: Vec<String> = g.frames.iter().map(|f| esc(f)).collect();
        let _ = writeln!(out, "    stack:      {}", frames.join(" < "));
        if g.by_offset {
            let _ = writeln!(
                out,
                "    grouped by: build-id+offset (some frames have no symbols; --debug-dir can name them)"
            );
        }
        let _ = writeln!(out, "    builds:     {}", builds_text(g, true));
        let _ = writeln!(
            out,
            "    seen:       {} .. {}",
            when(g.first_ns),
            when(g.last_ns)
        );
        let shown: Vec<String> = exes.iter().take(3).map(|e| esc(e)).collect();
        let more = if exes.len() > 3 {
            format!(" (+{} more)", exes.len() - 3)
        } else {
            String::new()
        };
        let _ = writeln!(out, "    executable: {}{more}", shown.join(", "));
        let _ = writeln!(out, "    example:    {}", esc(&g.example));
    }
    out
}

/// The grouping as one JSON document.
pub fn json(t: &Triage, groups: &[&Group]) -> String {
    let gs: Vec<serde_json::Value> = groups
        .iter()
        .map(|g| {
            let mut builds: Vec<(&String, &u64)> = g.builds.iter().collect();
            builds.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
            let mut sigs: Vec<&str> = g.signatures.iter().map(String::as_str).collect();
            sigs.sort_unstable();
            json!({
                "kind": g.kind,
                "title": g.title,
                "function": g.function,
                "frames": g.frames,
                "grouped_by": if g.by_offset { "build-id+offset" } else { "function" },
                "count": g.count,
                "hosts": g.hosts.len(),
                "executables": sorted(&g.executables),
                "builds": builds.iter().map(|(id, n)| json!({"build_id": id, "count": n})).collect::<Vec<_>>(),
                "first_seen": if g.first_ns == 0 { serde_json::Value::Null } else { json!(format_utc(g.first_ns)) },
                "last_seen": if g.last_ns == 0 { serde_json::Value::Null } else { json!(format_utc(g.last_ns)) },
                "first_seen_unix_ns": g.first_ns,
                "last_seen_unix_ns": g.last_ns,
                "example": g.example,
                "signatures": sigs,
            })
        })
        .collect();
    let doc = json!({
        "reports": t.reports,
        "skipped": t.skipped,
        "hosts": t.all_hosts(),
        "groups_total": t.groups.len(),
        "groups": gs,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// A markdown table cell: escaped, with `|` and line breaks neutralised.
fn cell(s: &str) -> String {
    esc(s).replace('|', "\\|")
}

/// The grouping as a markdown table (for a ticket or a wiki page).
pub fn markdown(t: &Triage, groups: &[&Group]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} from {} in {}.\n",
        count(t.reports, "report"),
        count(t.all_hosts() as u64, "host"),
        count(t.groups.len() as u64, "group"),
    );
    let _ = writeln!(
        out,
        "| # | count | hosts | executables | kind | bug | stack | builds | first seen | last seen | example |"
    );
    let _ = writeln!(
        out,
        "| ---: | ---: | ---: | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (i, g) in groups.iter().enumerate() {
        let exes: Vec<String> = sorted(&g.executables)
            .iter()
            .map(|e| format!("`{}`", cell(e)))
            .collect();
        let stack = cell(&g.frames.join(" < "));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} in `{}` | {}{} | {} | {} | {} | `{}` |",
            i + 1,
            g.count,
            g.hosts.len(),
            exes.join(", "),
            cell(&g.kind),
            cell(&g.title),
            cell(&g.function),
            stack,
            if g.by_offset {
                " (by build-id+offset)"
            } else {
                ""
            },
            cell(&builds_text(g, true)),
            when(g.first_ns),
            when(g.last_ns),
            cell(&g.example)
        );
    }
    out
}

/// Text from a report (a program's names and paths), escaped for a terminal by the shared
/// function every verb uses.
fn esc(s: &str) -> String {
    ufence_core::fmt::escape(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal report of schema 1: `frames` are (module, build-id, offset, function).
    fn report(
        kind: &str,
        title: &str,
        frames: &[(&str, &str, u64, Option<&str>)],
        host: &str,
        secs: u64,
    ) -> Vec<u8> {
        let stack: Vec<serde_json::Value> = frames
            .iter()
            .map(|(m, b, o, f)| {
                json!({"pc": "0x1", "module": m, "build_id": b, "offset": format!("{o:#x}"),
                       "symbol": f, "function": f, "function_offset": null, "file": null, "line": null})
            })
            .collect();
        json!({
            "schema": "ufence-report", "version": 1, "kind": kind, "title": title,
            "function": frames.iter().find_map(|f| f.3), "signature": "0123456789abcdef",
            "access": {"address": "0x10", "type": "read", "description": "x", "damaged_address": null, "stack": stack},
            "object": null, "thread": {"tid": 1, "name": "t"},
            "time": {"unix_ns": secs * 1_000_000_000, "since_start_ns": 5},
            "process": {"pid": 7, "executable": "/bin/app", "cmdline": ["app"], "hostname": host},
            "options": {}, "stats": {}
        })
        .to_string()
        .into_bytes()
    }

    struct Names;
    impl Resolve for Names {
        fn function(&mut self, _: &str, build_id: Option<&str>, offset: u64) -> Option<String> {
            (build_id == Some("bbbb") && offset == 0x40).then(|| "resolved_fn".to_string())
        }
    }

    #[test]
    fn groups_by_names_not_offsets_and_counts_hosts_builds_and_times() {
        let mut t = Triage::new(None);
        let a = [
            ("/bin/app", "aaaa", 0x10, Some("bad")),
            ("/bin/app", "aaaa", 0x90, Some("main")),
        ];
        let b = [
            ("/bin/app", "bbbb", 0x20, Some("bad")),
            ("/bin/app", "bbbb", 0x99, Some("main")),
        ];
        t.add_bytes(
            &report("use-after-free", "use-after-free read", &a, "h1", 200),
            "r1",
        );
        t.add_bytes(
            &report("use-after-free", "use-after-free read", &b, "h2", 100),
            "r2",
        );
        t.add_bytes(
            &report("use-after-free", "use-after-free write", &b, "h2", 300),
            "r3",
        );
        t.add_bytes(b"{\"schema\": \"ufence-report\", \"version\": 1", "r4");
        assert_eq!((t.reports, t.skipped), (3, 1));
        let gs = t.groups(None);
        assert_eq!(gs.len(), 2, "a read and a write are two bugs");
        let g = gs[0];
        assert_eq!((g.count, g.hosts.len(), g.by_offset), (2, 2, false));
        assert_eq!(g.frames, ["bad", "main"]);
        assert_eq!(
            g.builds.iter().collect::<Vec<_>>(),
            [(&"aaaa".into(), &1), (&"bbbb".into(), &1)]
        );
        assert_eq!((g.first_ns, g.last_ns), (100_000_000_000, 200_000_000_000));
        assert_eq!(g.example, "r2", "the first seen");
        let new = t.groups(Some(250_000_000_000));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].title, "use-after-free write");
    }

    #[test]
    fn unnamed_frames_group_by_build_id_and_offset_unless_resolved() {
        let f = [
            ("/bin/app", "bbbb", 0x40, None),
            ("/bin/app", "bbbb", 0x99, Some("main")),
        ];
        let mut t = Triage::new(None);
        t.add_bytes(
            &report("out-of-bounds", "out-of-bounds read", &f, "h", 1),
            "r",
        );
        let g = t.groups(None)[0];
        assert!(g.by_offset);
        assert_eq!(g.frames, ["bbbb+0x40", "main"]);
        assert_eq!(g.function, "main", "the first named frame");

        let mut names = Names;
        let mut t = Triage::new(Some(&mut names));
        t.add_bytes(
            &report("out-of-bounds", "out-of-bounds read", &f, "h", 1),
            "r",
        );
        let g = t.groups(None)[0];
        assert!(!g.by_offset);
        assert_eq!(g.frames, ["resolved_fn", "main"]);
    }

    #[test]
    fn foreign_truncated_and_future_reports_say_why() {
        let ok = report(
            "double-free",
            "double free",
            &[("/a", "cc", 1, Some("f"))],
            "h",
            1,
        );
        assert!(Report::parse(&ok).is_ok());
        let why = |b: &[u8]| Report::parse(b).unwrap_err();
        assert!(why(br#"{"msg": "hello"}"#).starts_with("not a ufence report"));
        assert!(why(&ok[..ok.len() / 2]).starts_with("truncated JSON"));
        assert!(why(b"\xff\xfe").starts_with("invalid JSON"));
        let future = String::from_utf8(ok.clone())
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        assert_eq!(
            why(future.as_bytes()),
            "report schema version 2 is not supported (1 is)"
        );
        let no_stack = String::from_utf8(ok)
            .unwrap()
            .replace("\"stack\"", "\"stacks\"");
        assert!(why(no_stack.as_bytes()).starts_with("malformed ufence report"));
    }
}
