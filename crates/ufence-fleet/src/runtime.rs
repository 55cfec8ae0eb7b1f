//! Finding and reading the control blocks that processes under ufence publish (see
//! `ufence::control`). Nothing here trusts a file: each is opened without following symbolic
//! links, must be a regular file of ours, and is validated (magic, version, layout, lengths)
//! before any field is used. Reads use `pread`, never a mapping, so a file that shrinks under
//! us is an error, not a SIGBUS.

use std::fs::{self, File};
use std::mem::size_of;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use ufence_core::control::{self, Block, Header, Slot};
use ufence_core::fmt::{cstr_bytes, escape};
use ufence_core::options::Options;
use ufence_core::Stats;

/// Larger files are not control blocks (65,535 slots take 40 MiB).
const MAX_FILE: u64 = 64 << 20;

/// The runtime directory, checked to be private to us.
pub fn dir() -> Result<PathBuf, String> {
    let mut text = ufence_core::fmt::BufWriter::<512>::new();
    control::runtime_dir(&mut text);
    let path = PathBuf::from(String::from_utf8_lossy(text.as_bytes()).into_owned());
    match fs::symlink_metadata(&path) {
        Ok(meta) => vet(&path, &meta, false).map(|_| path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A runtime directory to scan: a directory, not writable by group or others, and belonging
/// to us (or to anyone when we are root). Returns its owner, whose files it must hold.
pub fn check_dir(path: &Path) -> Result<u32, String> {
    let meta =
        fs::symlink_metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    vet(path, &meta, euid() == 0)
}

/// What every runtime directory must be: a directory (not a link to one), ours unless
/// `any_owner`, and not writable by others. Returns its owner.
fn vet(path: &Path, meta: &fs::Metadata, any_owner: bool) -> Result<u32, String> {
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symbolic link; refusing to follow it to a runtime directory",
            path.display()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    if meta.uid() != euid() && !any_owner {
        return Err(format!(
            "{} belongs to uid {}, not to you; refusing to use it",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by other users (mode {:o}); refusing to use it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(meta.uid())
}

/// A live process's control block, mapped shared to write its knobs or requests (`ufence set`,
/// `plan --apply`, `--check`): the file is validated again before it is mapped, and unmapped
/// when this is dropped.
pub struct LiveBlock {
    map: *mut u8,
    len: usize,
}

impl LiveBlock {
    /// Maps `snap`'s block; `doing` says what for, in the refusal of a process that is gone.
    pub fn map(snap: &Snapshot, doing: &str) -> Result<LiveBlock, String> {
        if !snap.live() {
            return Err(format!(
                "process {} is {}: nothing to {doing}",
                snap.pid(),
                snap.liveness.word()
            ));
        }
        let f = open(&snap.path, true)?;
        // Re-validate the file we are about to map: it is the one we write through.
        let (block, _) = read_block(&f, &snap.path)?;
        let len = block.header.file_len as usize;
        let map = ufence_core::sys::map_shared(std::os::fd::AsRawFd::as_raw_fd(&f), len)
            .ok_or_else(|| format!("cannot map {}", snap.path.display()))?;
        Ok(LiveBlock { map, len })
    }

    /// The block, touched only through atomic operations, as the process itself does.
    pub fn block(&self) -> &Block {
        // SAFETY: the mapping is `len` bytes of a file whose header was validated, so it starts
        // with a whole Block, whose fields are atomics and integers valid for any bytes.
        unsafe { &*self.map.cast::<Block>() }
    }
}

impl Drop for LiveBlock {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer borrowed (block() borrows self).
        unsafe { ufence_core::sys::unmap(self.map, self.len) };
    }
}

/// Every runtime directory this user may read: our own, and for root every user's (the
/// default places: `/dev/shm/ufence-UID` and `/run/user/UID/ufence`).
pub fn all_dirs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir().into_iter().collect();
    if euid() == 0 {
        if let Ok(entries) = fs::read_dir("/dev/shm") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("ufence-") {
                    out.push(e.path());
                }
            }
        }
        if let Ok(entries) = fs::read_dir("/run/user") {
            for e in entries.flatten() {
                out.push(e.path().join("ufence"));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| p.exists() && seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())));
    out
}

pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether the process that wrote a block still runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Live,
    /// Exited normally but its file was not removed.
    Exited,
    /// No such process any more: it crashed or was killed.
    Gone,
    /// The pid belongs to another process now.
    Reused,
    /// The same process runs another program now (it called exec).
    Execd,
}

impl Liveness {
    pub fn word(self) -> &'static str {
        match self {
            Liveness::Live => "live",
            Liveness::Exited => "exited",
            Liveness::Gone => "stale (process gone)",
            Liveness::Reused => "stale (pid reused)",
            Liveness::Execd => "stale (exec'd)",
        }
    }
}

/// A validated copy of one control block.
pub struct Snapshot {
    pub path: PathBuf,
    pub block: Block,
    pub liveness: Liveness,
}

impl Snapshot {
    pub fn header(&self) -> &Header {
        &self.block.header
    }
    pub fn pid(&self) -> u32 {
        self.block.header.pid
    }
    pub fn stats(&self) -> Stats {
        self.block.stats()
    }
    /// The executable's path, escaped for a terminal (the program chose it).
    pub fn exe(&self) -> String {
        escape(cstr_bytes(&self.block.header.exe))
    }
    /// The executable's path as recorded (for JSON, which escapes by itself).
    pub fn exe_raw(&self) -> String {
        text(&self.block.header.exe)
    }
    /// The command line, arguments joined by spaces, each escaped for a terminal; the
    /// executable if it could not be read.
    pub fn cmdline(&self) -> String {
        let args: Vec<String> = self.raw_args().iter().map(|a| escape(a)).collect();
        if args.is_empty() {
            self.exe()
        } else {
            args.join(" ")
        }
    }
    /// The command line as recorded (for JSON).
    pub fn cmdline_raw(&self) -> String {
        let args: Vec<String> = self
            .raw_args()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.is_empty() {
            self.exe_raw()
        } else {
            args.join(" ")
        }
    }
    /// The command line with argv[0] cut to its file name, as `top` shows it: the arguments are
    /// what tell two instances of a service apart, and a long install path would push them off
    /// the screen.
    pub fn short_command(&self) -> String {
        let mut args = self.args();
        match args.first_mut() {
            Some(a0) => {
                if let Some((_, name)) = a0.rsplit_once('/') {
                    *a0 = name.to_string();
                }
                args.join(" ")
            }
            None => self
                .exe()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }
    /// `/proc/PID/cmdline` as the process recorded it at start (at most 511 bytes), escaped.
    fn args(&self) -> Vec<String> {
        self.raw_args().iter().map(|a| escape(a)).collect()
    }
    fn raw_args(&self) -> Vec<&[u8]> {
        let c = &self.block.header.cmdline;
        let end = c.windows(2).position(|w| w == [0, 0]).unwrap_or(c.len());
        c[..end]
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .collect()
    }
    pub fn options_text(&self) -> String {
        text(&self.block.header.options)
    }
    /// The small slots (`num_objects` in force): the first of the header's `nslots`, the rest
    /// being large slots for objects over a page. All of them for a block that does not say.
    pub fn small_slots(&self) -> u64 {
        let all = u64::from(self.block.header.nslots);
        self.options_text()
            .split(' ')
            .find_map(|kv| kv.strip_prefix("num_objects="))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(all, |n| n.min(all))
    }
    /// The runtime options as the process holds them now.
    pub fn knob_options(&self) -> Options {
        self.block.knobs.read_into(&Options::DEFAULT)
    }
    pub fn live(&self) -> bool {
        self.liveness == Liveness::Live
    }
    /// Nanoseconds since ufence started in the process (by the system-wide monotonic clock).
    pub fn uptime_ns(&self) -> u64 {
        ufence_core::sys::now_ns().saturating_sub(self.block.header.start_mono_ns)
    }
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The file of process `pid`.
pub fn file_of(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.ufence"))
}

/// Opens a control file for reading (or writing), refusing symbolic links, non-regular files
/// and other users' files.
pub fn open(path: &Path, write: bool) -> Result<File, String> {
    open_as(path, write, euid())
}

/// As [`open`], for a file that must belong to user `owner` (root's exporter reads every
/// user's directory, and a file there must belong to the directory's owner).
pub fn open_as(path: &Path, write: bool, owner: u32) -> Result<File, String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!(
                "{} is a symbolic link; refusing to follow it to a control file",
                path.display()
            ),
            _ => format!("cannot open {}: {e}", path.display()),
        })?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.uid() != owner {
        let whose = if owner == euid() {
            "you".to_string()
        } else {
            format!("uid {owner}, the directory's owner")
        };
        return Err(format!(
            "{} belongs to uid {}, not to {whose}",
            path.display(),
            meta.uid()
        ));
    }
    Ok(f)
}

/// Reads and validates the control block at `path`.
pub fn read(path: &Path) -> Result<Snapshot, String> {
    read_as(path, euid())
}

/// As [`read`], for a file that must belong to user `owner`.
pub fn read_as(path: &Path, owner: u32) -> Result<Snapshot, String> {
    let f = open_as(path, false, owner)?;
    let (block, inode) = read_block(&f, path)?;
    let liveness = liveness(&block.header, inode);
    Ok(Snapshot {
        path: path.to_path_buf(),
        block,
        liveness,
    })
}

/// Reads the block of an open control file and checks it is one this tool can read.
pub fn read_block(f: &File, path: &Path) -> Result<(Block, u64), String> {
    let shown = path.display();
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?;
    let len = meta.len();
    if len > MAX_FILE {
        return Err(format!(
            "{shown}: {len} bytes is too large for a ufence control block"
        ));
    }
    let mut bytes = vec![0u8; size_of::<Block>()];
    let got = read_at(f, &mut bytes, 0).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if got < 8 || bytes[..8] != control::MAGIC.to_le_bytes() {
        return Err(format!("{shown}: not a ufence control block (bad magic)"));
    }
    if got < bytes.len() {
        return Err(format!(
            "{shown}: truncated ({got} bytes; a control block header takes {})",
            bytes.len()
        ));
    }
    // SAFETY: `bytes` holds size_of::<Block>() bytes, and a Block is made of integers and
    // atomics of integers only, for which every bit pattern is a valid value.
    let block: Block = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let h = &block.header;
    if h.version != control::VERSION {
        return Err(format!(
            "{shown}: control block version {}, this ufence reads version {}",
            h.version,
            control::VERSION
        ));
    }
    if h.block_len as usize != size_of::<Block>() || h.slot_len as usize != size_of::<Slot>() {
        return Err(format!(
            "{shown}: control block layout differs from this ufence's (built from another version?)"
        ));
    }
    let (slots_offset, want_len) = control::layout(h.nslots as usize);
    if h.nslots == 0 || h.nslots > 65_535 || h.slots_offset != slots_offset as u64 {
        return Err(format!("{shown}: damaged control block (slot table)"));
    }
    if h.file_len != want_len as u64 {
        return Err(format!("{shown}: damaged control block (length)"));
    }
    if len < want_len as u64 {
        return Err(format!(
            "{shown}: truncated ({len} bytes, {} slots need {want_len})",
            h.nslots
        ));
    }
    Ok((block, meta.ino()))
}

fn read_at(f: &File, buf: &mut [u8], mut off: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = f.read_at(&mut buf[got..], off)?;
        if n == 0 {
            break;
        }
        got += n;
        off += n as u64;
    }
    Ok(got)
}

/// One slot, copied consistently (see `Slot::seq`): None if it kept changing under us.
/// Every slot of the table, as [`read_slot`] would read each, in two reads of the whole table
/// rather than three per slot (an exporter reads every live process's table at each scrape):
/// a slot whose two copies are the same, with an even sequence, was not being written across
/// the first copy (a write changes its sequence, to odd and then to the next even number); the
/// others are read again one by one.
pub fn read_slots(f: &File, h: &Header) -> Vec<Option<Slot>> {
    let n = h.nslots as usize;
    let size = size_of::<Slot>();
    let mut a = vec![0u8; n * size];
    let mut b = vec![0u8; n * size];
    let whole = |buf: &mut [u8]| read_at(f, buf, h.slots_offset).is_ok_and(|r| r == buf.len());
    if !(whole(&mut a) && whole(&mut b)) {
        return (0..n).map(|i| read_slot(f, h, i)).collect();
    }
    (0..n)
        .map(|i| {
            let (x, y) = (&a[i * size..][..size], &b[i * size..][..size]);
            let seq = u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            if seq.is_multiple_of(2) && x == y {
                // SAFETY: a Slot is made of integers only (any bytes are valid), and `x` is
                // exactly one Slot long.
                Some(unsafe { std::ptr::read_unaligned(x.as_ptr().cast::<Slot>()) })
            } else {
                read_slot(f, h, i)
            }
        })
        .collect()
}

pub fn read_slot(f: &File, h: &Header, i: usize) -> Option<Slot> {
    let off = h.slots_offset + (i * size_of::<Slot>()) as u64;
    for _ in 0..16 {
        let mut seq = [0u8; 4];
        read_at(f, &mut seq, off).ok()?;
        let before = u32::from_le_bytes(seq);
        if before % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let mut bytes = vec![0u8; size_of::<Slot>()];
        if read_at(f, &mut bytes, off).ok()? < bytes.len() {
            return None;
        }
        read_at(f, &mut seq, off).ok()?;
        // SAFETY: a Slot is made of integers only (any bytes are valid), and `bytes` is
        // exactly one Slot long.
        let slot: Slot = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if u32::from_le_bytes(seq) == before
            && slot.seq.load(std::sync::atomic::Ordering::Relaxed) == before
        {
            return Some(slot);
        }
    }
    None
}

/// Is the process that wrote the block still running it? The pid must exist, not be a
/// zombie, have the start time the block recorded (else the pid was reused), and still map
/// the file (else it exec'd another program): a bare "is the pid alive" is fooled by all three.
pub fn liveness(h: &Header, inode: u64) -> Liveness {
    if h.state.load(std::sync::atomic::Ordering::Relaxed) == control::EXITED {
        return Liveness::Exited;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", h.pid)) else {
        return Liveness::Gone;
    };
    // Fields after the command name, which may itself hold spaces and parentheses.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, r)| r.split_ascii_whitespace().collect());
    if matches!(rest.first(), Some(&"Z") | Some(&"X")) {
        return Liveness::Gone;
    }
    let started: Option<u64> = rest.get(19).and_then(|s| s.parse().ok());
    if h.proc_start_ticks != 0 && started != Some(h.proc_start_ticks) {
        return Liveness::Reused;
    }
    let Ok(maps) = fs::read_to_string(format!("/proc/{}/maps", h.pid)) else {
        // Unreadable (a non-dumpable process): the pid and its start time match, so count it
        // live rather than risk `ps --gc` removing a running process's file.
        return Liveness::Live;
    };
    let mapped = maps.lines().any(|l| map_inode(l) == Some(inode));
    if mapped {
        Liveness::Live
    } else {
        Liveness::Execd
    }
}

/// The inode of a `/proc/PID/maps` line's file (0 for anonymous mappings).
fn map_inode(line: &str) -> Option<u64> {
    line.split_ascii_whitespace().nth(4)?.parse().ok()
}

/// The path of a `/proc/PID/maps` line's file: everything after the fifth field (it may hold
/// spaces).
fn map_path(line: &str) -> Option<&str> {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace)?..];
    }
    Some(rest.trim())
}

/// Where process `n` published its block, from its `/proc/PID/maps`: the mapped file's
/// directory holds `<n>.ufence` with the mapped inode. Files are created unnamed and linked
/// later, so maps shows them as `<dir>/#INODE (deleted)`; a file created by name shows that name.
fn published_by(n: u32) -> Option<PathBuf> {
    let maps = fs::read_to_string(format!("/proc/{n}/maps")).ok()?;
    let name = format!("{n}.ufence");
    maps.lines().find_map(|line| {
        let inode: u64 = line.split_whitespace().nth(4)?.parse().ok()?;
        let (dir, last) = map_path(line)?.rsplit_once('/')?;
        let unnamed = last
            .strip_prefix('#')
            .and_then(|l| l.strip_suffix(" (deleted)"))
            .is_some();
        if last != name && !unnamed {
            return None;
        }
        let candidate = Path::new(dir).join(&name);
        (candidate.symlink_metadata().ok()?.ino() == inode).then_some(candidate)
    })
}

/// Every control file in the runtime directory, read (or the reason it could not be).
pub fn list(dir: &Path) -> Vec<(PathBuf, Result<Snapshot, String>)> {
    list_as(dir, euid())
}

/// As [`list`], for a directory of user `owner`, whose files must all be theirs.
pub fn list_as(dir: &Path, owner: u32) -> Vec<(PathBuf, Result<Snapshot, String>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".ufence"))
            .filter(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        let path = e.path();
        let snap = read_as(&path, owner).and_then(|s| {
            if pid.parse() == Ok(s.pid()) {
                Ok(s)
            } else {
                Err(format!(
                    "{}: names pid {pid} but holds pid {}",
                    path.display(),
                    s.pid()
                ))
            }
        });
        out.push((path, snap));
    }
    out.sort_by_key(|(p, _)| {
        p.file_stem()
            .and_then(|s| s.to_str()?.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    out
}

/// The control block of process `pid`, or a one-line reason why there is none to read.
pub fn for_pid(pid: &str) -> Result<Snapshot, String> {
    let n: u32 = pid
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("'{pid}' is not a process id"))?;
    // Our own directory first; then wherever the process says it published (it may have
    // been started with another environment: cron, sudo, a service manager).
    let mut path = file_of(&dir()?, n);
    if path.symlink_metadata().is_err() {
        if let Some(found) = published_by(n) {
            path = found;
        }
    }
    if path.symlink_metadata().is_ok() {
        let s = read(&path)?;
        if s.pid() != n {
            return Err(format!(
                "{}: names pid {n} but holds pid {}",
                path.display(),
                s.pid()
            ));
        }
        return Ok(s);
    }
    match fs::metadata(format!("/proc/{n}")) {
        Err(_) => Err(format!("no process {n}")),
        Ok(m) if m.uid() != euid() => Err(format!(
            "process {n} belongs to uid {}; ufence shows only your own processes",
            m.uid()
        )),
        Ok(_) => Err(format!(
            "process {n} is not running under ufence (no {})",
            path.display()
        )),
    }
}

/// What a process published about its workload (see `ufence::control::Workload`), as rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// Allocations the sampler has seen (an estimate: see the block's doc).
    pub allocations_seen: u64,
    /// Seconds since ufence started in the process.
    pub uptime_s: f64,
    /// `allocations_seen / uptime_s`; 0 before the first second.
    pub rate_per_s: f64,
    /// Seconds the pool spent full, the current full period included.
    pub full_s: f64,
    /// Whether the pool is full now (its last sample found no free slot).
    pub full_now: bool,
}

impl Snapshot {
    /// The workload figures of the block, as of now. A damaged or hostile block can make them
    /// wrong, never make this fail: times are clamped to the process's uptime.
    pub fn workload(&self) -> Workload {
        use std::sync::atomic::Ordering::Relaxed;
        let w = &self.block.workload;
        let up = self.uptime_ns();
        let seen = w.allocations_seen.load(Relaxed);
        let since = w.full_since_ns.load(Relaxed);
        let open = if since != 0 {
            up.saturating_sub(since)
        } else {
            0
        };
        let full = w.full_ns.load(Relaxed).saturating_add(open).min(up);
        let uptime_s = up as f64 / 1e9;
        Workload {
            allocations_seen: seen,
            uptime_s,
            rate_per_s: if uptime_s >= 1.0 {
                seen as f64 / uptime_s
            } else {
                0.0
            },
            full_s: full as f64 / 1e9,
            full_now: since != 0,
        }
    }
}

/// The lifetimes of the sampled objects the slot table still describes: one per slot that has
/// ever held an object (its last object; a slot's earlier objects are not kept).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lifetimes {
    /// Objects freed: how long each stayed allocated, in ns, sorted.
    pub freed_ns: Vec<u64>,
    /// Objects still allocated: their age now, in ns, sorted (a lower bound of their lifetime).
    pub alive_ns: Vec<u64>,
    /// Slots that could not be read consistently (they kept changing) and are left out.
    pub unread: usize,
    /// Allocation sites of the objects still allocated (their site hashes), sorted, repeated.
    pub alive_sites: Vec<u64>,
}

impl Lifetimes {
    /// The `q` quantile (0..=1) of `v` by nearest rank; None when empty.
    pub fn quantile(v: &[u64], q: f64) -> Option<u64> {
        if v.is_empty() {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }
}

/// Reads the slot table of `snap`'s file and returns the lifetimes it describes.
pub fn lifetimes(snap: &Snapshot) -> Result<Lifetimes, String> {
    let f = open(&snap.path, false)?;
    let (block, _) = read_block(&f, &snap.path)?;
    let h = &block.header;
    let now = snap.uptime_ns();
    let mut out = Lifetimes::default();
    for s in read_slots(&f, h) {
        let Some(s) = s else {
            out.unread += 1;
            continue;
        };
        match s.state.load(std::sync::atomic::Ordering::Relaxed) {
            control::FREED => out
                .freed_ns
                .push(s.free.time_ns.saturating_sub(s.alloc.time_ns)),
            control::ALLOCATED | control::FREEING => {
                out.alive_ns.push(now.saturating_sub(s.alloc.time_ns));
                out.alive_sites.push(s.site);
            }
            _ => {}
        }
    }
    out.freed_ns.sort_unstable();
    out.alive_ns.sort_unstable();
    out.alive_sites.sort_unstable();
    Ok(out)
}
