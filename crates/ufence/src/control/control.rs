//! The control block: each process under ufence publishes its identity, counters, knobs and
//! slot table in a small shared-memory file, `<runtime dir>/<pid>.ufence`, the way KFENCE
//! publishes `/sys/kernel/debug/kfence/{stats,objects}` and
//! `/sys/module/kfence/parameters/sample_interval`. The `ufence` command reads it for `ps`,
//! `stats`, `objects` and `top`, and writes the knobs for `set`: no thread in the target, no
//! signal, no restart. The process reads its knobs on the sampling slow path, so a change takes
//! effect within one interval.
//!
//! The runtime directory is `$UFENCE_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/ufence`, else
//! `/dev/shm/ufence-<uid>`; it must be a private directory of ours (mode 0700). A file is
//! created unnamed (`O_TMPFILE`, mode 0600) and takes its name by a hard link once it is
//! complete and mapped. It is sparse: each page gets its storage before its first write (so a
//! full tmpfs means a slot left unpublished, never a SIGBUS), and a process pays memory only
//! for the slots it has used.
//! A file is removed at normal exit and left behind after a crash on purpose, so that a
//! crashed process's last counters and objects can still be read; the command tells such a
//! stale file from a live one by whether its process still maps it.
//!
//! A forked child gets a block of its own at once (see [`fork_child`]), but as an unnamed file
//! that takes its name at the child's first sampling slow path: most children exec or exit
//! before that, and then they cost no file name, no removal, and leave nothing behind.
//!
//! If the file cannot be created, the block is an anonymous mapping: the process runs on, only
//! invisible to the command. The layout is `#[repr(C)]`, made of integers only (any bytes are
//! a valid block, so a reader need not trust the writer), and versioned with a magic number.

use crate::fmt::BufWriter;
use crate::options::Options;

use crate::sys;
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*,
};

pub use crate::pool::{Record, Slot, ALLOCATED, FREED, FREEING, UNUSED};
pub use crate::sampler::{Flag, Knobs};
pub use crate::stack::{Packed, Stack, MAX_FRAMES};
pub use crate::stats::Counters;

/// `ufence-1` in the first word of every control block.
pub const MAGIC: u64 = u64::from_le_bytes(*b"UFENCE\x00\x01");
/// Bumped whenever the layout below changes (2: [`Workload`] added).
pub const VERSION: u32 = 2;

/// `Header::state` while the process runs (or after it crashed).
pub const RUNNING: u32 = 1;
/// `Header::state` once the process has exited normally (the file is then removed too).
pub const EXITED: u32 = 2;

/// `Header::mode`: loaded by `LD_PRELOAD=libufence.so`.
pub const MODE_PRELOAD: u32 = 1;
/// `Header::mode`: a Rust program using `ufence::Guarded` as its global allocator.
pub const MODE_ALLOCATOR: u32 = 2;

/// Who the block belongs to and where its parts are.
#[repr(C)]
pub struct Header {
    pub magic: u64,
    pub version: u32,
    /// `size_of::<Block>()` of the writer: a reader checks it against its own.
    pub block_len: u32,
    /// Length of the whole file.
    pub file_len: u64,
    pub pid: u32,
    pub uid: u32,
    /// [`RUNNING`] or [`EXITED`].
    pub state: AtomicU32,
    /// [`MODE_PRELOAD`] or [`MODE_ALLOCATOR`].
    pub mode: u32,
    pub nslots: u32,
    /// `size_of::<Slot>()` of the writer.
    pub slot_len: u32,
    pub slots_offset: u64,
    pub page_size: u64,
    /// Where the pool starts in the process's address space.
    pub pool_base: AtomicU64,
    /// When ufence started (in this process, or in the parent it was forked from):
    /// CLOCK_REALTIME and CLOCK_MONOTONIC, in ns. Record times in slots count from it.
    pub start_unix_ns: u64,
    pub start_mono_ns: u64,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), which
    /// tells a reused pid from the process that wrote the block.
    pub proc_start_ticks: u64,
    /// `/proc/self/exe`, NUL-padded (truncated if longer).
    pub exe: [u8; 256],
    /// `/proc/self/cmdline`: arguments separated by NULs (truncated if longer).
    pub cmdline: [u8; 512],
    /// The options in force at start, as `key=value` pairs separated by spaces.
    pub options: [u8; 1024],
}

/// The whole block; the slot table follows at `header.slots_offset`.
#[repr(C)]
pub struct Block {
    pub header: Header,
    pub knobs: Knobs,
    pub counters: Counters,
    pub check: CheckRequest,
    pub workload: Workload,
}

/// A canary check of every live object, asked for from outside (`ufence objects PID --check`):
/// the asker bumps `asked`; the first thread of the process on the sampling slow path claims
/// it (`taken`), checks, stores `found`, then `done` = the request it served.
#[repr(C)]
pub struct CheckRequest {
    pub asked: AtomicU64,
    pub taken: AtomicU64,
    pub done: AtomicU64,
    /// Damaged live objects found by the check that `done` names.
    pub found: AtomicU64,
}

/// What the process tells about its workload, for `ufence stats` and `ufence plan`. Written
/// from the sampling slow path only (never the fast path), with relaxed atomics.
#[repr(C)]
pub struct Workload {
    /// Allocations seen by the sampler: the countdown consumed at each replan, summed over
    /// threads. An estimate: a thread's allocations since its last slow path are not in yet, and
    /// those ufence makes itself are never counted.
    pub allocations_seen: AtomicU64,
    /// Time the pool spent full, in ns, over the periods that have ended: from the first sample
    /// refused for capacity to the next sample that found a free slot.
    pub full_ns: AtomicU64,
    /// When the current full period began, in ns since ufence started (at least 1); 0 while
    /// the pool is not full.
    pub full_since_ns: AtomicU64,
}

/// Adds `n` allocations to [`Workload::allocations_seen`] (the sampler's replan).
pub fn note_allocations(n: u64) {
    if let Some(b) = block() {
        b.workload.allocations_seen.fetch_add(n, Relaxed);
    }
}

/// A sample found the pool full (`full`) or took a slot: opens or closes a full period.
pub fn note_pool_full(full: bool) {
    let Some(b) = block() else { return };
    let w = &b.workload;
    let since = w.full_since_ns.load(Relaxed);
    if full && since == 0 {
        let now = crate::since_start_ns().max(1);
        let _ = w.full_since_ns.compare_exchange(0, now, Relaxed, Relaxed);
    } else if !full
        && since != 0
        && w.full_since_ns
            .compare_exchange(since, 0, Relaxed, Relaxed)
            .is_ok()
    {
        let now = crate::since_start_ns();
        w.full_ns.fetch_add(now.saturating_sub(since), Relaxed);
    }
}

impl Block {
    /// The counters as KFENCE shows them.
    pub fn stats(&self) -> crate::Stats {
        self.counters
            .snapshot(self.knobs.enabled.load(Relaxed), &self.knobs)
    }
}

/// Where the slot table starts and how long the file is, for `nslots` slots.
pub fn layout(nslots: usize) -> (usize, usize) {
    let slots_offset = core::mem::size_of::<Block>().next_multiple_of(64);
    let len = slots_offset + nslots * core::mem::size_of::<Slot>();
    (slots_offset, len.next_multiple_of(sys::page_size()))
}

/// Writes the runtime directory's path (see the module's doc) into `out`.
pub fn runtime_dir(out: &mut dyn Write) {
    runtime_dir_for(out, false)
}

/// The directory under `/dev/shm` of this user: `ufence-<uid>`, unless someone else holds that
/// name (another user created it first, or a symbolic link stands there). Then it is the
/// first by name of this user's private `ufence-<uid>.<random>` directories, which no one can
/// take ahead of time as the name cannot be guessed; with `create`, one is made when there is
/// none. The process and the command choose alike, so the command finds the process.
fn shm_dir(out: &mut dyn Write, create: bool) {
    let uid = sys::geteuid();
    let mut primary = BufWriter::<64>::new();
    let _ = write!(primary, "/dev/shm/ufence-{uid}\0");
    let ours =
        core::ffi::CStr::from_bytes_with_nul(primary.as_bytes()).is_ok_and(sys::dir_ours_or_absent);
    if ours {
        let _ = write!(out, "/dev/shm/ufence-{uid}");
        return;
    }
    let mut prefix = BufWriter::<32>::new();
    let _ = write!(prefix, "ufence-{uid}.");
    let first = |best: &mut BufWriter<64>| {
        best.clear();
        sys::for_each_entry(c"/dev/shm", &mut |name| {
            let Some(rest) = name.strip_prefix(prefix.as_bytes()) else {
                return;
            };
            if rest.is_empty() || !rest.iter().all(u8::is_ascii_hexdigit) || name.len() > 48 {
                return;
            }
            let mut path = BufWriter::<64>::new();
            let _ = path.write_str("/dev/shm/");
            let _ = path.write_str(core::str::from_utf8(name).unwrap_or(""));
            let _ = path.write_str("\0");
            let private = core::ffi::CStr::from_bytes_with_nul(path.as_bytes())
                .is_ok_and(|p| sys::dir_ours_or_absent(p) && sys::path_exists(p));
            if private && (best.is_empty() || name < best.as_bytes()) {
                best.clear();
                let _ = best.write_str(core::str::from_utf8(name).unwrap_or(""));
            }
        });
    };
    let mut best = BufWriter::<64>::new();
    first(&mut best);
    if best.is_empty() && create {
        let mut path = BufWriter::<64>::new();
        let _ = write!(path, "/dev/shm/ufence-{uid}.{:016x}\0", sys::random_u64());
        if let Ok(p) = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()) {
            sys::mkdir_private(p);
        }
        // Another process of ours may have made one at the same time: the first by name wins.
        first(&mut best);
    }
    if best.is_empty() {
        // None yet: the squatted name, which both sides then refuse in words.
        let _ = write!(out, "/dev/shm/ufence-{uid}");
    } else {
        let _ = out.write_str("/dev/shm/");
        let _ = out.write_str(core::str::from_utf8(best.as_bytes()).unwrap_or(""));
    }
}

/// As [`runtime_dir`]; with `create`, a fallback directory is made if the default name is
/// taken (see [`shm_dir`]).
fn runtime_dir_for(out: &mut dyn Write, create: bool) {
    if sys::secure_execution() {
        // A setuid or setgid program: where it creates files is not its caller's to choose.
        shm_dir(out, create);
    } else if let Some(d) = sys::getenv(c"UFENCE_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        let _ = out.write_str(core::str::from_utf8(d).unwrap_or("/nonexistent"));
    } else if let Some(d) = sys::getenv(c"XDG_RUNTIME_DIR").filter(|d| d.starts_with(b"/")) {
        let _ = write!(
            out,
            "{}/ufence",
            core::str::from_utf8(d).unwrap_or("/nonexistent")
        );
    } else {
        shm_dir(out, create);
    }
}

/// A path, NUL-terminated, held without an allocator.
struct PathBuf {
    buf: BufWriter<512>,
}

impl PathBuf {
    /// The runtime directory this process published in: resolved once, at start, so that a
    /// program that changes its environment later still removes its own file at exit.
    fn dir() -> PathBuf {
        // SAFETY: DIR is written once, by `remember_dir` at start, before any reader runs
        // (readers are exit, fork and later starts, all after `create`).
        let saved = unsafe { &*DIR.0.get() };
        if !saved.is_empty() {
            let mut buf = BufWriter::new();
            let _ = buf.write_str(core::str::from_utf8(saved.as_bytes()).unwrap_or(""));
            return PathBuf { buf };
        }
        let mut buf = BufWriter::new();
        runtime_dir_for(&mut buf, true);
        let _ = buf.write_str("\0");
        PathBuf { buf }
    }
    fn file_name(pid: u32) -> PathBuf {
        let mut buf = BufWriter::new();
        let _ = write!(buf, "{pid}.ufence\0");
        PathBuf { buf }
    }
    fn c_str(&self) -> Option<&core::ffi::CStr> {
        core::ffi::CStr::from_bytes_with_nul(self.buf.as_bytes()).ok()
    }
}

struct SavedDir(UnsafeCell<BufWriter<512>>);
// SAFETY: written once at start by the starting thread, before the block is published.
unsafe impl Sync for SavedDir {}
static DIR: SavedDir = SavedDir(UnsafeCell::new(BufWriter::new()));

/// This process's block, once created.
static BLOCK: AtomicPtr<Block> = AtomicPtr::new(core::ptr::null_mut());
/// How the block is backed, in [`FILE`].
/// Anonymous memory: nothing to name or remove (the file could not be had).
const ANONYMOUS: u8 = 0;
/// An unnamed file (a forked child's, see [`fork_child`]), open as [`FD`]; named at the child's
/// first visit to the sampling slow path.
const UNNAMED: u8 = 1;
/// A thread is naming it.
const NAMING: u8 = 2;
/// `<dir>/<pid>.ufence`: removed at exit.
const NAMED: u8 = 3;
static FILE: AtomicU8 = AtomicU8::new(ANONYMOUS);
/// The unnamed file's descriptor while [`FILE`] is [`UNNAMED`] or [`NAMING`], and its device
/// and inode: the program may close that number and open another file under it.
static FD: AtomicI32 = AtomicI32::new(-1);
static FD_DEV: AtomicU64 = AtomicU64::new(0);
static FD_INO: AtomicU64 = AtomicU64::new(0);

/// The process that owns the block: set at start, and taken over by a forked child.
static OWNER: AtomicU32 = AtomicU32::new(0);
/// A page that a fork wipes and a vfork shares (see `sys::map_wiped_on_fork`): 1 in a process
/// that owns its block, so that a child that still reads 1 shares its parent's memory.
static PROBE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
/// The block's geometry, kept privately: the published header can be written by anyone with
/// our uid, and must not steer where ufence writes.
static LEN: AtomicUsize = AtomicUsize::new(0);
static NSLOTS: AtomicUsize = AtomicUsize::new(0);
static SLOTS_OFFSET: AtomicUsize = AtomicUsize::new(0);
/// When a forked child took its block; it is named no sooner than [`NAME_AFTER_NS`] later.
static BORN_NS: AtomicU64 = AtomicU64::new(0);
/// A forked child that execs or exits within this time (most do, within a millisecond) never
/// names its file.
const NAME_AFTER_NS: u64 = 100_000_000;

/// Which pages of the block's file have their storage (one bit per page; see [`back`]). The
/// file is created sparse and each page is backed before its first write, so that a process
/// pays memory for the slots it uses, not for the whole table (160 KiB at 255 slots).
static BACKED: [AtomicU64; 160] = [const { AtomicU64::new(0) }; 160];
/// Every page is backed (the kernel lacks `MADV_POPULATE_WRITE`, so the file was reserved
/// whole with `fallocate`; or the block is anonymous memory).
static ALL_BACKED: AtomicBool = AtomicBool::new(true);

/// This process's block, once ufence has started.
pub fn block() -> Option<&'static Block> {
    // SAFETY: BLOCK is null or points at a block mapped for the life of the process.
    unsafe { BLOCK.load(Acquire).as_ref() }
}

/// Creates this process's block for `nslots` slots and the options `o`, as a file in the
/// runtime directory when it can be had, else anonymous memory (with one warning line). The
/// slot table comes zeroed. None only if no memory can be mapped at all.
pub fn create(nslots: usize, o: &Options, preload: bool) -> Option<&'static Block> {
    let (slots_offset, len) = layout(nslots);
    // SAFETY: start runs once, on one thread, before anything reads DIR.
    unsafe { *DIR.0.get() = PathBuf::dir().buf };
    LEN.store(len, Relaxed);
    NSLOTS.store(nslots, Relaxed);
    SLOTS_OFFSET.store(slots_offset, Relaxed);
    OWNER.store(sys::getpid(), Relaxed);
    if let Some(p) = sys::map_wiped_on_fork() {
        // SAFETY: a fresh private page of ours.
        unsafe { *p = 1 };
        PROBE.store(p, Relaxed);
    }
    let (mem, fd) = match new_file(len, false, true) {
        Ok((fd, p, all)) => {
            reset_backing(all);
            (p, Some(fd))
        }
        Err(why) => {
            warn_unpublished(why);
            reset_backing(true);
            (sys::map_rw(len)?, None)
        }
    };
    let b = mem.cast::<Block>();
    // SAFETY: `mem` is a fresh, zeroed, writable mapping of `len` bytes, larger than a Block;
    // every field of a Block is valid zeroed, and nothing else refers to it yet.
    unsafe {
        let h = &mut (*b).header;
        h.version = VERSION;
        h.block_len = core::mem::size_of::<Block>() as u32;
        h.file_len = len as u64;
        h.uid = sys::geteuid();
        h.mode = if preload {
            MODE_PRELOAD
        } else {
            MODE_ALLOCATOR
        };
        h.nslots = nslots as u32;
        h.slot_len = core::mem::size_of::<Slot>() as u32;
        h.slots_offset = slots_offset as u64;
        h.page_size = sys::page_size() as u64;
        // Record times count from ufence's start (a forked child keeps its parent's).
        let since = crate::since_start_ns();
        h.start_mono_ns = sys::now_ns() - since;
        h.start_unix_ns = sys::realtime_ns() - since;
        sys::readlink(c"/proc/self/exe", &mut h.exe[..255]);
        sys::read_file(c"/proc/self/cmdline", &mut h.cmdline[..511]);
        let mut text = BufWriter::<1024>::new();
        let _ = o.write_all(&mut text);
        h.options[..text.as_bytes().len()].copy_from_slice(text.as_bytes());
        h.pid = sys::getpid();
        h.proc_start_ticks = proc_start_ticks();
        h.state.store(RUNNING, Relaxed);

        // A reader in another process that sees the magic sees the rest.
        core::sync::atomic::fence(Release);
        (*b).header.magic = MAGIC;
        BLOCK.store(b, Release);
    }
    // Named only now, complete and mapped: a reader never sees a half-written file.
    if let Some(fd) = fd {
        match link(fd, sys::getpid(), sys::file_id(fd)) {
            Ok(()) => {
                FILE.store(NAMED, Relaxed);
                sweep_stale();
            }
            Err(why) => warn_unpublished(why),
        }
        sys::close(fd);
    }
    // SAFETY: just written above.
    Some(unsafe { &*b })
}

/// One warning line: the process runs on, invisible to the command's verbs.
fn warn_unpublished(why: &str) {
    let dir = PathBuf::dir();
    let mut line = BufWriter::<640>::new();
    let _ = writeln!(
        line,
        "ufence: warning: cannot publish stats in {}: {why}; `ufence ps` will not see this process",
        crate::fmt::Escaped(dir.buf.as_bytes().strip_suffix(b"\0").unwrap_or(b"?"))
    );
    sys::write_all(2, line.as_bytes());
}

/// Field 22 of `/proc/self/stat`: when the process started, in clock ticks since boot.
fn proc_start_ticks() -> u64 {
    let mut buf = [0u8; 1024];
    let n = sys::read_file(c"/proc/self/stat", &mut buf);
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let Some(close) = buf[..n].iter().rposition(|&c| c == b')') else {
        return 0;
    };
    buf[close + 1..n]
        .split(|&c| c == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)
        .and_then(|f| core::str::from_utf8(f).ok()?.parse().ok())
        .unwrap_or(0)
}

/// A new unnamed file of `len` bytes in the runtime directory (created first with
/// `create_dir`), mapped, with storage for the header part or, with `all`, for everything (see
/// [`map_backed`]). Returns its descriptor, the mapping, and whether every page is backed.
/// [`link`] names it once it is complete.
fn new_file(len: usize, all: bool, create_dir: bool) -> Result<(i32, *mut u8, bool), &'static str> {
    let dir = PathBuf::dir();
    let dir_path = dir.c_str().ok_or("path too long")?;
    if !dir_path.to_bytes().starts_with(b"/") {
        // A relative path would mean another directory after the program's next chdir.
        return Err("not an absolute path");
    }
    let dirfd = sys::open_private_dir(dir_path, create_dir)?;
    let fd = sys::create_unnamed_file(dirfd, len);
    sys::close(dirfd);
    let fd = fd?;
    match map_backed(fd, len, all) {
        Ok((p, all)) => Ok((fd, p, all)),
        Err(why) => {
            sys::close(fd);
            Err(why)
        }
    }
}

/// Maps the sparse file `fd` of `len` bytes and backs the pages of the header, knobs and
/// counters (or, with `all`, every page) before anything is written there. Where the kernel
/// cannot back pages of a mapping, the whole file is reserved instead. Returns the mapping and
/// whether every page is backed.
fn map_backed(fd: i32, len: usize, all: bool) -> Result<(*mut u8, bool), &'static str> {
    let p = sys::map_shared(fd, len).ok_or("cannot map the file")?;
    let part = if all {
        len
    } else {
        core::mem::size_of::<Block>()
    };
    let backed = match sys::back_pages(p, part) {
        Ok(()) => Ok(all),
        Err(sys::NoBacking::Unsupported) if sys::reserve_file(fd, len) => Ok(true),
        Err(_) => Err("no room for the file"),
    };
    if backed.is_err() {
        // SAFETY: the mapping made above; nothing refers to it.
        unsafe { sys::unmap(p, len) };
    }
    backed.map(|all| (p, all))
}

/// Forgets which pages are backed, for a new file whose header part (or, with `all`, whole
/// length) is.
fn reset_backing(all: bool) {
    for w in &BACKED {
        w.store(0, Relaxed);
    }
    ALL_BACKED.store(all, Relaxed);
    mark_backed(0, (core::mem::size_of::<Block>() - 1) / sys::page_size());
}

/// Records that pages `first..=last` of the file have storage.
fn mark_backed(first: usize, last: usize) {
    for pg in first..=last {
        if let Some(w) = BACKED.get(pg / 64) {
            w.fetch_or(1 << (pg % 64), Relaxed);
        }
    }
}

/// Makes sure bytes `[off, off + len)` of block `b`'s file have storage before they are
/// written: a system call the first time a page is used, a load after. False if there is no
/// room, and then the caller must not write there.
fn back(b: &Block, off: usize, len: usize) -> bool {
    let page = sys::page_size();
    let (first, last) = (off / page, (off + len - 1) / page);
    if (first..=last).all(page_backed) {
        return true;
    }
    let base = b as *const Block as *mut u8;
    // SAFETY: `off + len` lies within the block's mapping (callers pass table offsets).
    if sys::back_pages(unsafe { base.add(off) }, len).is_err() {
        return false;
    }
    mark_backed(first, last);
    true
}

/// Whether page `pg` of the file is known to have storage.
fn page_backed(pg: usize) -> bool {
    ALL_BACKED.load(Relaxed)
        || BACKED
            .get(pg / 64)
            .is_some_and(|w| w.load(Relaxed) & (1 << (pg % 64)) != 0)
}

/// Where slot `i` lies in the file.
fn slot_range(i: usize) -> (usize, usize) {
    let size = core::mem::size_of::<Slot>();
    (SLOTS_OFFSET.load(Relaxed) + i * size, size)
}

/// True when the control block is this process's own (not a `vfork` child's view of its
/// parent's).
pub fn owned_here() -> bool {
    OWNER.load(Relaxed) == sys::getpid()
}

/// Removes this process's file at normal exit (registered at start). The block itself stays
/// mapped: destructors that run after this may still allocate and free.
pub extern "C" fn at_exit() {
    let Some(b) = block() else { return };
    let me = sys::getpid();
    if FILE.load(Acquire) != NAMED || OWNER.load(Relaxed) != me {
        // Nothing to remove (an unnamed file vanishes by itself), or not ours: a vfork child
        // shares its parent's block, which must stay live.
        return;
    }
    b.header.state.store(EXITED, Relaxed);
    withdraw(me);
}

/// Before an `exec`: withdraws this process's name, since the new image may not run under
/// ufence (a setuid or static program, a cleaned environment) and could not remove it. True if
/// it did, so that [`after_failed_exec`] publishes again when the exec returns.
pub fn before_exec() -> bool {
    let me = sys::getpid();
    if OWNER.load(Relaxed) != me
        || FILE
            .compare_exchange(NAMED, NAMING, Acquire, Relaxed)
            .is_err()
    {
        // A vfork child (its parent's name stays), or nothing named.
        return false;
    }
    withdraw(me);
    true
}

/// The exec after [`before_exec`] failed and the process goes on: published again, by a copy
/// into a new file (the old one has no name nor descriptor left).
pub fn after_failed_exec() {
    let named = block().map_or(Err("no block"), republish);
    FILE.store(if named.is_ok() { NAMED } else { ANONYMOUS }, Release);
}

/// Removes `<dir>/<pid>.ufence`.
fn withdraw(pid: u32) {
    let dir = PathBuf::dir();
    let name = PathBuf::file_name(pid);
    if let (Some(d), Some(n)) = (dir.c_str(), name.c_str()) {
        if let Ok(fd) = sys::open_private_dir(d, false) {
            sys::unlink_at(fd, n);
            sys::close(fd);
        }
    }
}

/// Copies slot `i` (the pool's own, private and authoritative) into the published table, inside
/// a `seq` write section so that a reader can tell a torn copy. The pool keeps its slots in
/// private memory so that nothing another process does to the file, and no child sharing the
/// file after a raw fork, can change what ufence decides.
pub fn mirror(i: usize, slot: &Slot) {
    let Some(b) = block() else { return };
    if i >= NSLOTS.load(Relaxed) {
        return;
    }
    let (off, size) = slot_range(i);
    if !back(b, off, size) {
        // No room on the runtime file system: this slot stays unpublished.
        return;
    }
    // SAFETY: slot i of the published table lies inside the block's mapping (i < nslots); it is
    // written only here, by the thread that owns the slot's current transition in the pool. The
    // bytes after `seq` are plain integers, copied from a slot of the same layout.
    unsafe {
        let dst = (b as *const Block as *mut u8).add(off).cast::<Slot>();
        let seq = (*dst).seq.load(Relaxed);
        (*dst).seq.store(seq | 1, Relaxed);
        core::sync::atomic::fence(Release);
        let skip = core::mem::size_of::<AtomicU32>();
        core::ptr::copy_nonoverlapping(
            (slot as *const Slot).cast::<u8>().add(skip),
            dst.cast::<u8>().add(skip),
            core::mem::size_of::<Slot>() - skip,
        );
        (*dst).seq.store((seq | 1) + 1, Release);
    }
}

/// Whether this block belongs to another process: a child made without the fork handlers
/// (glibc's `_Fork`, a raw `clone`) still shares its parent's, and would count into its
/// parent's counters and published slots until it calls [`fork_child`].
pub fn inherited() -> bool {
    // The probe first: it reads 1 in the owner (and in a vfork child, which is not one either),
    // so that the owner's sampled operations cost no `getpid`.
    block().is_some() && !shares_parents_memory() && OWNER.load(Relaxed) != sys::getpid()
}

/// In a child that does not own the block: whether it is a vfork child, running in its
/// parent's memory, where the block is the parent's and must be left alone.
fn shares_parents_memory() -> bool {
    let p = PROBE.load(Relaxed);
    // SAFETY: PROBE is null or our page, mapped for the life of the process.
    !p.is_null() && unsafe { p.read_volatile() } != 0
}

/// In a forked child: the block is a shared mapping of the parent's file, so the child would
/// count into its parent's counters. Gives the child a block of its own, mapped at the same
/// address so that every pointer into it stays valid: the header, knobs and counters are
/// copied; the slot table starts empty, for the caller to fill from the pool's own slots (a
/// copy of the parent's table would read every page of it). The new block is an unnamed file,
/// named at the child's first sampling slow path ([`name_if_unnamed`]): most children exec or
/// exit first, and then it costs no name, no removal, and leaves nothing after an exec.
///
/// Only system calls and copies. `single_threaded` (the fork handler's case) allows closing
/// the descriptor of the parent's file, if it had one; after a raw fork, threads may already
/// run and that number may be the program's by now. (A named file's descriptor stays open for
/// the same reason: between checking and closing it, another thread could reuse the number.)
/// Returns whether the child has its own block.
pub fn fork_child(single_threaded: bool) -> bool {
    let Some(b) = block() else { return false };
    let me = sys::getpid();
    let prev = OWNER.load(Relaxed);
    if prev == me {
        return false;
    }
    if single_threaded {
        OWNER.store(me, Relaxed);
    } else if OWNER.compare_exchange(prev, me, Relaxed, Relaxed).is_err() {
        // After a raw fork, another thread of this child is taking the block.
        return false;
    }
    crate::sampler::note_fork();
    let probe = PROBE.load(Relaxed);
    if !probe.is_null() {
        // SAFETY: our page (wiped by the fork): 1 again, for this process's own children.
        unsafe { probe.write_volatile(1) };
    }
    let inherited_fd = FD.load(Relaxed);
    if single_threaded && owns_fd(inherited_fd) {
        sys::close(inherited_fd);
    }
    FILE.store(ANONYMOUS, Relaxed);
    FD.store(-1, Relaxed);
    let len = LEN.load(Relaxed);
    let file = new_file(len, false, false);
    let (fresh, all_backed) = match file {
        Ok((_, p, all)) => (p, all),
        Err(_) => match sys::map_rw(len) {
            Some(p) => (p, true),
            None => return false,
        },
    };
    // Other threads (after a raw fork) may bump counters during the copy: a count may be
    // lost, nothing is torn.
    let moved = replace_block(b, fresh, all_backed, |old, fresh| {
        // SAFETY: both mappings hold a whole Block and do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(old, fresh, core::mem::size_of::<Block>());
            let h = &mut (*fresh.cast::<Block>()).header;
            h.pid = me;
            // Read when the file is named: a file read, and only a named file is read.
            h.proc_start_ticks = 0;
            h.state.store(RUNNING, Relaxed);
        }
    });
    if !moved {
        if let Ok((fd, _, _)) = file {
            sys::close(fd);
        }
        return false;
    }
    if let Ok((fd, _, _)) = file {
        let (dev, ino) = sys::file_id(fd).unwrap_or((0, 0));
        FD_DEV.store(dev, Relaxed);
        FD_INO.store(ino, Relaxed);
        // Kept open until the file is named; far from the numbers the program uses. Without
        // it the file is published by a copy (see `name`).
        FD.store(sys::move_fd_high(fd).unwrap_or(-1), Relaxed);
        BORN_NS.store(sys::now_ns(), Relaxed);
        FILE.store(UNNAMED, Release);
    }
    true
}

/// Whether `fd` is still the unnamed file this process created.
fn owns_fd(fd: i32) -> bool {
    fd >= 0 && sys::file_id(fd) == Some((FD_DEV.load(Relaxed), FD_INO.load(Relaxed)))
}

/// Called on every visit to the sampling slow path (once per interval, or on the idle
/// recheck): one load, unless a forked child's file still waits for its name.
pub fn name_if_unnamed() {
    if FILE.load(Relaxed) == UNNAMED
        && sys::now_ns().saturating_sub(BORN_NS.load(Relaxed)) >= NAME_AFTER_NS
    {
        name();
    }
}

#[cold]
fn name() {
    let Some(b) = block() else { return };
    if OWNER.load(Relaxed) != sys::getpid() {
        // A vfork child sharing its parent's memory: the naming is the parent's to do.
        return;
    }
    if FILE
        .compare_exchange(UNNAMED, NAMING, Acquire, Relaxed)
        .is_err()
    {
        return;
    }
    let ticks = proc_start_ticks();
    // SAFETY: through the block's own raw pointer (the mapping is writable): proc_start_ticks
    // is a plain integer, written only here (one thread won NAMING) and by fork_child before
    // the block was this child's; readers outside copy it.
    unsafe { (*BLOCK.load(Relaxed)).header.proc_start_ticks = ticks };
    let fd = FD.load(Relaxed);
    let id = (FD_DEV.load(Relaxed), FD_INO.load(Relaxed));
    let named = if owns_fd(fd) {
        link(fd, b.header.pid, Some(id))
    } else {
        Err("the descriptor is gone")
    };
    // The program closed the descriptor (daemons close every descriptor after their forks) or
    // put another file under its number, or the link failed: publish a copy instead. Another
    // thread's counter bump or slot change during the copy may be missing from the file; the
    // pool itself is private and unaffected.
    let named = named.or_else(|_| {
        FD.store(-1, Relaxed);
        republish(b)
    });
    // No warning here: a forked child's standard error may be anything by now (a daemon's
    // data file), and its parent has said what there was to say at start.
    FILE.store(if named.is_ok() { NAMED } else { ANONYMOUS }, Release);
}

/// Gives the unnamed file `fd` its name, `<dir>/<pid>.ufence`, then checks that the name is
/// the file `id` (the device and inode it had when created): another thread may have closed
/// `fd` and opened a file of its own under that number in between, and that file must not stay
/// linked in the runtime directory.
fn link(fd: i32, pid: u32, id: Option<(u64, u64)>) -> Result<(), &'static str> {
    let dir = PathBuf::dir();
    let name = PathBuf::file_name(pid);
    let (Some(d), Some(n)) = (dir.c_str(), name.c_str()) else {
        return Err("path too long");
    };
    let dirfd = sys::open_private_dir(d, false)?;
    let r = if !sys::link_fd(fd, dirfd, n) {
        Err("cannot name the file")
    } else if id.is_none() || sys::file_id_at(dirfd, n) != id {
        sys::unlink_at(dirfd, n);
        Err("the descriptor changed while naming")
    } else {
        Ok(())
    };
    sys::close(dirfd);
    r
}

/// Moves the block into a new file: a copy, mapped over the old block's address, then named.
fn republish(b: &Block) -> Result<(), &'static str> {
    let (fd, fresh, _) = new_file(LEN.load(Relaxed), true, false)?;
    let id = sys::file_id(fd);
    let page = sys::page_size();
    // Only backed pages of the old block are read: touching a hole of a shared tmpfs mapping
    // allocates it, which on a full tmpfs is a SIGBUS (the rest are zero in both). Concurrent
    // writers of the old block may be lost (see `name`), never torn beyond one slot's copy.
    let moved = replace_block(b, fresh, true, |old, fresh| {
        for pg in (0..LEN.load(Relaxed) / page).filter(|&pg| page_backed(pg)) {
            // SAFETY: page `pg` lies inside both mappings, which do not overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(old.add(pg * page), fresh.add(pg * page), page)
            };
        }
    });
    let linked = if moved {
        link(fd, b.header.pid, id)
    } else {
        Err("cannot map the file")
    };
    sys::close(fd);
    linked
}

/// Fills `fresh`, a new mapping of the block's length, with `fill(old, fresh)`, then moves it
/// over the block's own mapping so that every pointer into the block stays valid; its pages
/// are tracked from then on as `all_backed` says. False, with `fresh` unmapped, if the move
/// failed and the old block stays.
fn replace_block(
    b: &Block,
    fresh: *mut u8,
    all_backed: bool,
    fill: impl FnOnce(*const u8, *mut u8),
) -> bool {
    let len = LEN.load(Relaxed);
    let old = b as *const Block as *mut u8;
    fill(old, fresh);
    // SAFETY: `fresh` is a mapping of `len` bytes that this crate made, `old` the block's own
    // mapping of the same length; the move replaces `old` atomically, at the same address.
    let moved = unsafe { sys::move_mapping(fresh, len, old) };
    if moved {
        reset_backing(all_backed);
    } else {
        // SAFETY: the mapping made by the caller for this move; nothing refers to it.
        unsafe { sys::unmap(fresh, len) };
    }
    moved
}

/// Stale files (of processes that are gone: crashed or killed) kept per runtime directory by a
/// sweep, the newest by the time they were named. A crash loop must not fill `/dev/shm`; the
/// last crashes are the ones worth a look.
pub const KEEP_STALE: usize = 64;
/// A start sweeps when the directory holds more control files than this: twice
/// [`KEEP_STALE`], so that in a crash loop one start in [`KEEP_STALE`] pays for a sweep and
/// the others only count names (measured: a sweep at every start cost 0.3 ms a start).
pub const SWEEP_ABOVE: usize = 2 * KEEP_STALE;

/// The pid a control file's name gives (`<pid>.ufence`).
fn pid_of_name(name: &[u8]) -> Option<u32> {
    let digits = name.strip_suffix(b".ufence")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(digits).ok()?.parse().ok()
}

/// At start, after naming this process's file: when the directory holds more than
/// [`SWEEP_ABOVE`] control files, removes the stale ones beyond the newest [`KEEP_STALE`]. A
/// file is stale here only when no process of its pid exists (one whose pid was reused is left
/// to `ufence ps --gc`), so no live process's file is ever touched. Costs one `getdents` when
/// the directory is small; no allocation (fixed buffers on the stack).
fn sweep_stale() {
    let dir = PathBuf::dir();
    let Some(d) = dir.c_str() else { return };
    let mut files = 0;
    sys::for_each_entry(d, &mut |n| files += usize::from(pid_of_name(n).is_some()));
    if files <= SWEEP_ABOVE {
        return;
    }
    let Ok(dirfd) = sys::open_private_dir(d, false) else {
        return;
    };
    let me = sys::getpid();
    let stale_ctime = |name: &[u8]| -> Option<u64> {
        let pid = pid_of_name(name)?;
        if pid == me || sys::process_exists(pid) {
            return None;
        }
        let mut c = [0u8; 24];
        c[..name.len()].copy_from_slice(name);
        let c = core::ffi::CStr::from_bytes_until_nul(&c).ok()?;
        sys::own_file_ctime_at(dirfd, c)
    };
    // The newest KEEP_STALE times, newest first.
    let mut newest = [0u64; KEEP_STALE];
    let mut kept = 0;
    sys::for_each_entry(d, &mut |name| {
        let Some(t) = stale_ctime(name) else { return };
        if kept == KEEP_STALE && t <= newest[KEEP_STALE - 1] {
            return;
        }
        let at = newest[..kept].iter().position(|&x| t > x).unwrap_or(kept);
        let end = kept.min(KEEP_STALE - 1);
        newest.copy_within(at..end, at + 1);
        newest[at] = t;
        kept = (kept + 1).min(KEEP_STALE);
    });
    if kept == KEEP_STALE {
        let oldest_kept = newest[KEEP_STALE - 1];
        sys::for_each_entry(d, &mut |name| {
            if stale_ctime(name).is_some_and(|t| t < oldest_kept) {
                let mut c = [0u8; 24];
                c[..name.len()].copy_from_slice(name);
                if let Ok(c) = core::ffi::CStr::from_bytes_until_nul(&c) {
                    sys::unlink_at(dirfd, c);
                }
            }
        });
    }
    sys::close(dirfd);
}
