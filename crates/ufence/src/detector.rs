//! The detector's process-wide state and its slow paths: start-up, a sampled allocation, the
//! free of a pool object (with the errors found there), and reporting.

use crate::options::{self, Options};
use crate::pool::{
    is_live, Class, Pool, Record, SpinLock, ALLOCATED, CHECKING, FREED, FREEING, UNUSED,
};
use crate::report::{self, Error, Kind};
use crate::sampler::{self, Fit, Verdict};
use crate::stack::{self, Stack};
use crate::stats::Counters;
use crate::{control, covered, fault, site_filter, sys};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*,
};

const UNINIT: u8 = 0;
const STARTING: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// The pool's range, `[POOL_START, POOL_END)`, duplicated here so that `owns` is two
/// comparisons against memory. Both 0 until ufence starts: then nothing is in range.
static POOL_START: AtomicUsize = AtomicUsize::new(0);
static POOL_END: AtomicUsize = AtomicUsize::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);
static PRELOAD: AtomicBool = AtomicBool::new(false);
static REPORT_LOCK: SpinLock = SpinLock::new();
/// The top of the stack reports are printed on (held under REPORT_LOCK); 0 if none could be had.
static REPORT_STACK: AtomicUsize = AtomicUsize::new(0);
const REPORT_STACK_SIZE: usize = 256 * 1024;
/// How long a second report waits for the first: long enough for a full report of a program
/// with a large symbol table, bounded so that a reporter stuck elsewhere cannot hang others.
const REPORT_WAIT_NS: u64 = 5_000_000_000;
/// The counters until the control block exists (and for good if it cannot be had).
static EARLY_COUNTERS: Counters = Counters::new();
static COUNTERS: AtomicPtr<Counters> =
    AtomicPtr::new(&EARLY_COUNTERS as *const Counters as *mut Counters);

/// Moves the counters into the control block, carrying their values over.
fn move_counters(to: &'static Counters) {
    to.copy_from(counters());
    COUNTERS.store(to as *const Counters as *mut Counters, Release);
}

/// The live counters: in the control block once ufence has started.
#[inline]
pub(crate) fn counters() -> &'static Counters {
    // SAFETY: COUNTERS points at EARLY_COUNTERS or into the control block, which stays mapped
    // for the life of the process.
    unsafe { &*COUNTERS.load(Relaxed) }
}

struct Once<T>(UnsafeCell<MaybeUninit<T>>);
// SAFETY: written once by the thread that wins STARTING, before READY is published with Release;
// read only after READY is observed with Acquire.
unsafe impl<T> Sync for Once<T> {}

static POOL: Once<Pool> = Once(UnsafeCell::new(MaybeUninit::uninit()));
static OPTIONS: Once<Options> = Once(UnsafeCell::new(MaybeUninit::uninit()));

/// The pool, once ufence has started.
#[inline]
pub fn pool() -> Option<&'static Pool> {
    if STATE.load(Acquire) == READY {
        // SAFETY: READY is published after POOL is written (see `start`).
        Some(unsafe { (*POOL.0.get()).assume_init_ref() })
    } else {
        None
    }
}

/// The options ufence started with (after `UFENCE_OPTIONS` was applied).
pub fn options_in_force() -> Option<Options> {
    // SAFETY: as for `pool`.
    pool().map(|_| unsafe { *(*OPTIONS.0.get()).assume_init_ref() })
}

/// True if `p` points into the pool: the whole cost of `free` for an unsampled pointer.
#[inline(always)]
pub fn owns(p: *const u8) -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: two reads of word-sized statics, as atomic on x86-64 as a relaxed load, and two
    // conditional jumps; no register or memory is written. (Compiled from Rust, the loads
    // would each take a register and an instruction of their own.)
    unsafe {
        core::arch::asm!(
            "cmp {p}, qword ptr [rip + {start}]",
            "jb {outside}",
            "cmp {p}, qword ptr [rip + {end}]",
            "jb {inside}",
            p = in(reg) p,
            start = sym POOL_START,
            end = sym POOL_END,
            inside = label { return true; },
            outside = label { return false; },
            options(nostack, readonly)
        );
        false
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let p = p as usize;
        p >= POOL_START.load(Relaxed) && p < POOL_END.load(Relaxed)
    }
}

pub fn since_start_ns() -> u64 {
    sys::now_ns().saturating_sub(START_NS.load(Relaxed))
}

pub fn mark_preload() {
    PRELOAD.store(true, Relaxed);
}

pub fn is_preload() -> bool {
    PRELOAD.load(Relaxed)
}

fn warn(msg: &str) {
    let mut line = crate::fmt::BufWriter::<256>::new();
    let _ = core::fmt::Write::write_fmt(&mut line, format_args!("ufence: warning: {msg}\n"));
    sys::write_all(2, line.as_bytes());
}

/// Starts ufence if nobody has yet. Returns true when the pool is usable. Called with the
/// thread held (see `sampler::hold`), so allocations made while starting go to the wrapped
/// allocator; other threads arriving meanwhile are told "not ready" rather than made to wait.
pub fn ensure_started(defaults: &Options) -> bool {
    match STATE.compare_exchange(UNINIT, STARTING, Acquire, Acquire) {
        Ok(_) => start(defaults),
        Err(s) => s == READY,
    }
}

fn start(defaults: &Options) -> bool {
    START_NS.store(sys::now_ns(), Relaxed);
    let mut opts = *defaults;
    options::apply_env(&mut opts);
    let seed = sys::random_u64();
    (opts.num_objects, opts.num_large_objects) =
        within_map_limit(opts.num_objects, opts.num_large_objects);
    let nsmall = opts.num_objects as usize;
    let nlarge = opts.num_large_objects as usize;
    let nslots = nsmall + nlarge;
    let block = control::create(nslots, &opts, is_preload());
    // The pool's slots are private; the control block gets a copy of each change (see
    // `control::mirror`).
    let slots = sys::map_rw(nslots * core::mem::size_of::<crate::pool::Slot>());
    let pool = block
        .and(slots)
        .and_then(|t| Pool::new(nsmall, nlarge, opts.large_pages(), seed, t.cast()));
    let (Some(block), Some(pool)) = (block, pool) else {
        if block.is_some() {
            // The process runs on without ufence: it must not look like a crash later.
            control::at_exit();
        }
        warn("cannot reserve the guarded pool; ufence is disabled, the program runs on");
        STATE.store(OFF, Release);
        return false;
    };
    block.header.pool_base.store(pool.base as u64, Relaxed);
    sampler::move_knobs(&block.knobs);
    move_counters(&block.counters);
    sys::at_exit(on_exit);
    // Resolve the loader's lookup now, not first inside a signal handler.
    let _ = sys::module_of(start as *const () as usize);
    stack::set_fast_unwind(opts.fast_unwind);
    // One walk through libgcc now: its lazily bound calls are resolved here, not first in a
    // fault handler on a small alternate stack (the loader's resolver saves the whole vector
    // state there, several KiB), now that sampled captures rarely need it.
    let _ = core::hint::black_box(stack::capture_libgcc(0));
    // SAFETY: only the thread that won STARTING writes these, before publishing READY.
    unsafe {
        (*POOL.0.get()).write(pool);
        (*OPTIONS.0.get()).write(opts);
    }
    if !fault::install() {
        warn("cannot install the fault handler; ufence is disabled, the program runs on");
        STATE.store(OFF, Release);
        return false;
    }
    // Lazily backed by the kernel: costs address space, not memory, until a report is printed.
    if let Some(st) = sys::map_rw(REPORT_STACK_SIZE) {
        REPORT_STACK.store(st as usize + REPORT_STACK_SIZE, Relaxed);
    }
    sampler::knobs().load(&opts, seed);
    sys::at_fork(fork_prepare, fork_parent, fork_child);
    // SAFETY: just written above.
    let p = unsafe { (*POOL.0.get()).assume_init_ref() };
    POOL_END.store(p.base + p.len, Relaxed);
    POOL_START.store(p.base, Relaxed);
    STATE.store(READY, Release);
    true
}

/// Every live object splits the pool's mapping in three (a large one too: only its pages are
/// made accessible), so N live objects cost up to 2N+1 of the process's `vm.max_map_count`
/// mappings (65530 by default), and the two regions 2 more. ufence keeps to an eighth of the
/// limit, so that the program's own mmap, malloc and fopen never fail because of it: small
/// slots first, the large ones get what is left.
fn within_map_limit(small: u64, large: u64) -> (u64, u64) {
    let limit = sys::read_number(c"/proc/sys/vm/max_map_count").unwrap_or(65530);
    let max = (limit / 8).saturating_sub(2) / 2;
    if small + large <= max {
        return (small, large);
    }
    let small_ok = small.min(max).max(1);
    let large_ok = large.min(max.saturating_sub(small_ok));
    let mut line = crate::fmt::BufWriter::<200>::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "num_objects={small} and num_large_objects={large} need up to {} mappings, over an eighth of vm.max_map_count={limit}; using {small_ok} and {large_ok}",
            2 * (small + large) + 2
        ),
    );
    warn(core::str::from_utf8(line.as_bytes()).unwrap_or("num_objects lowered"));
    (small_ok, large_ok)
}

extern "C" fn fork_prepare() {
    if let Some(p) = pool() {
        p.lock.lock();
    }
    REPORT_LOCK.lock();
}
extern "C" fn fork_parent() {
    REPORT_LOCK.unlock();
    if let Some(p) = pool() {
        p.lock.unlock();
    }
}
extern "C" fn fork_child() {
    // The child has only the forking thread: nobody else can be inside these sections.
    REPORT_LOCK.reset();
    if let Some(p) = pool() {
        p.lock.reset();
        // A canary check another thread was running is over here: a free would wait for it.
        for i in p.ever_used() {
            let _ = p
                .slot(i)
                .state
                .compare_exchange(CHECKING, ALLOCATED, Relaxed, Relaxed);
        }
    }
    if control::fork_child(true) {
        mirror_all();
    }
    // The parent's plan may be tens of thousands of allocations long (a busy parent, a quiet
    // child): within 64 allocations the child plans afresh at its own rate, so that it
    // samples, and names its file, on its own schedule.
    sampler::cap_plan(64);
}

/// After a raw fork (no fork handlers ran), on the child's first sampled operation: take a
/// block of its own, as `fork_child` does. A system call against the microseconds a sample
/// costs anyway.
fn ensure_own() {
    if control::inherited() && control::fork_child(false) {
        mirror_all();
    }
}

/// Fills a forked child's fresh slot table from the pool's own slots: only those ever handed
/// out, as the rest are zero (unused) in both; reading them all would fault in the whole
/// private table in every child.
fn mirror_all() {
    if let Some(p) = pool() {
        for i in p.ever_used() {
            control::mirror(i, p.slot(i));
        }
    }
}

/// The slow path of an allocation, after `sampler::tick` said so. Returns a pool object, or
/// null when this allocation is not sampled and must go to the wrapped allocator.
#[cold]
#[inline(never)]
pub fn alloc_slow(size: usize, align: usize, routine: u8, defaults: &Options) -> *mut u8 {
    sampler::hold();
    let ready = ensure_started(defaults);
    control::name_if_unnamed();
    if let Some(pool) = pool() {
        serve_check_request(pool);
    }
    let class = pool().and_then(|p| p.class_for(size, align.max(1)));
    let fit = if ready && class.is_none() {
        Fit::Incompatible
    } else if size as u64 >= sampler::knobs().size_min.load(Relaxed)
        && size as u64 <= sampler::knobs().size_max.load(Relaxed)
    {
        Fit::Yes
    } else {
        Fit::Filtered
    };
    // The share of the request's class in use, per mille.
    let occupancy = match (pool(), class) {
        (Some(p), Some(c)) => sampler::occupancy_permille(p.free_slots(c), p.class_slots(c)),
        _ => 0,
    };
    let mut p = core::ptr::null_mut();
    if let Verdict::Sample { timed } = sampler::decide(ready, fit, counters(), occupancy) {
        if let (Some(pool), Some(class)) = (pool(), class) {
            let t0 = sys::now_ns();
            if pool.free_slots(class) == 0 {
                // A pool full of long-lived objects stays full until some are freed: look
                // again a little later rather than on every allocation.
                Counters::bump(&counters().skipped_capacity);
                control::note_pool_full(true);
                sampler::pause(64);
            } else if within_budget(t0) {
                control::note_pool_full(false);
                p = sampled_alloc(pool, class, size, align.max(1), routine, occupancy, timed);
                counters().pool_ns.fetch_add(sys::now_ns() - t0, Relaxed);
            } else {
                // Over budget: let this thread's next allocations through untouched rather
                // than have each of them come here to be refused.
                Counters::bump(&counters().skipped_budget);
                sampler::pause(1024);
            }
        }
    }
    sampler::resume();
    p
}

/// A sampled allocation: its stack first (the site decides whether it is covered), then a slot.
#[inline(never)]
fn sampled_alloc(
    pool: &Pool,
    class: Class,
    size: usize,
    align: usize,
    routine: u8,
    occupancy: u64,
    timed: bool,
) -> *mut u8 {
    // The site needs only the innermost frames: a sample given up below never walks further.
    let mut capture = stack::Capture::begin(stack::approx_sp());
    let site = covered::site_hash(capture.fill(covered::SITE_FRAMES).frames());
    // A refusal below gives up this sample, as KFENCE does: handing it on to the next
    // allocation would make every allocation of a covered or filtered site unwind its stack.
    // Test mode (sample_rate=1) samples every allocation while slots last: no covered skips.
    let thresh = sampler::knobs().skip_covered_thresh.load(Relaxed);
    let test_mode = !timed && sampler::knobs().rate.load(Relaxed) == 1;
    if covered::skips(thresh, occupancy, test_mode, || pool.covered.contains(site)) {
        Counters::bump(&counters().skipped_covered);
        return core::ptr::null_mut();
    }
    // SAFETY: OPTIONS is written before READY, which the caller observed through `pool()`.
    let opts = unsafe { (*OPTIONS.0.get()).assume_init_ref() };
    if !site_filter::keep(
        site,
        capture.fill(covered::SITE_FRAMES),
        &opts.sample_only,
        &opts.skip,
    ) {
        Counters::bump(&counters().skipped_filtered);
        return core::ptr::null_mut();
    }
    let stack = capture.finish();
    pool_alloc(pool, class, size, align, routine, stack, site)
}

/// Time sampled operations may use freely before the budget applies (several thousand
/// samples): short programs and test binaries at `sample_rate=1` sample everything.
const BUDGET_GRACE_NS: u64 = 50_000_000;

/// The cost governor: has ufence used less than `max_overhead` percent of the wall time since
/// it started? A sampled allocation and its free cost microseconds (two `mprotect`s and two
/// stack walks), so a program allocating millions of times a second would otherwise run tens
/// of times slower at `sample_rate=1`; at the default interval it never applies.
fn within_budget(now: u64) -> bool {
    let pct = sampler::knobs().max_overhead.load(Relaxed);
    if pct == 0 {
        return true;
    }
    let spent = counters().pool_ns.load(Relaxed);
    let elapsed = now.saturating_sub(START_NS.load(Relaxed));
    spent < BUDGET_GRACE_NS.max(elapsed / 100 * pct)
}

fn pool_alloc(
    pool: &Pool,
    class: Class,
    size: usize,
    align: usize,
    routine: u8,
    stack: Stack,
    site: u64,
) -> *mut u8 {
    ensure_own();
    let Some(i) = pool.pop(class) else {
        Counters::bump(&counters().skipped_capacity);
        return core::ptr::null_mut();
    };
    fault::ensure_installed();
    let start = pool.page_of_slot(i);
    let end = start + pool.slot_len(i);
    // A 0-byte object sits at the slot's start with every page of the slot inaccessible, so
    // that any access to it faults. Others go to the left or the right edge at random; the
    // class was chosen so that the object fits either way with its alignment.
    let right = size > 0 && sampler::random_bit();
    let addr = if right {
        (end - size) & !(align - 1)
    } else {
        start.next_multiple_of(align)
    };
    let (lo, hi) = (
        addr & !(pool.page - 1),
        (addr + size).next_multiple_of(pool.page),
    );
    if pool.slot_opened(i).swap(false, AcqRel) {
        // The fault handler opened a page of this slot after its last free (an access to the
        // freed object, or to an unused page): closed again before the slot is used.
        sys::protect(start as *mut u8, end - start, false);
    }
    if lo < hi && !sys::protect(lo as *mut u8, hi - lo, true) {
        // Most likely the map-count limit: give the slot back and stop sampling for good.
        pool.push(i);
        sampler::knobs().enabled.store(false, Relaxed);
        warn("mprotect failed (map-count limit?); sampling is off, the program runs on");
        return core::ptr::null_mut();
    }
    let left = pool.left_guard(i);
    for k in [left, left + 1] {
        if pool.guard_opened(k).swap(false, AcqRel) {
            sys::protect(pool.guard_addr(k) as *mut u8, pool.page, false);
        }
    }
    pool.fill_canary(lo, hi);
    // SAFETY: slot i was popped from the FIFO by this thread, which owns it until it publishes
    // ALLOCATED below.
    let s = unsafe { pool.slot_mut(i) };
    s.addr = addr;
    s.size = size;
    s.align = align;
    s.right = right as u8;
    s.routine = routine;
    s.alloc = Record::here(&stack);
    s.site = site;
    pool.covered.add(site);
    s.free = Record::EMPTY;
    s.reported.store(0, Relaxed);
    s.state.store(ALLOCATED, Release);
    control::mirror(i, s);
    Counters::bump(&counters().allocations);
    addr as *mut u8
}

/// Frees a pointer that `owns` said is in the pool, released by `routine`. Bad frees are
/// reported and, in continue mode, ignored; a corrupted object, or one released by a routine
/// of another family than its allocation's, is reported and still released.
#[cold]
#[inline(never)]
pub fn free_slow(p: *mut u8, routine: u8) {
    let prev = sampler::hold();
    let entry_sp = stack::approx_sp();
    if let Some(pool) = pool() {
        let t0 = sys::now_ns();
        ensure_own();
        free_in_pool(pool, p as usize, routine, entry_sp);
        counters().pool_ns.fetch_add(sys::now_ns() - t0, Relaxed);
    }
    sampler::release(prev);
}

fn free_in_pool(pool: &Pool, p: usize, routine: u8, entry_sp: usize) {
    let i = match pool.place(p) {
        crate::pool::Place::Object(i) => i,
        crate::pool::Place::Guard { .. } => {
            return bad_free(pool, Kind::InvalidFree, p, None, entry_sp);
        }
    };
    let s = pool.slot(i);
    let state = s.state.load(Acquire);
    if p != s.addr || state == UNUSED {
        // A pointer inside the object is a bad free of that object. Anything else on its page
        // is a stale pointer to an earlier occupant of the slot: it is reported without
        // charging the current object, whose one report must stay available for its own bugs.
        let inside = is_live(state) && p > s.addr && p < s.addr + s.size;
        let obj = inside.then_some(i);
        return bad_free(pool, Kind::InvalidFree, p, obj, entry_sp);
    }
    // An object whose canary another thread is checking is freed once the check is over (a
    // few microseconds per object).
    let won = loop {
        match s
            .state
            .compare_exchange(ALLOCATED, FREEING, AcqRel, Acquire)
        {
            Err(CHECKING) => sys::yield_now(),
            other => break other,
        }
    };
    if let Err(st) = won {
        let kind = if st == FREED || st == FREEING {
            Kind::DoubleFree
        } else {
            Kind::InvalidFree
        };
        return bad_free(pool, kind, p, Some(i), entry_sp);
    }
    // SAFETY: this thread won ALLOCATED -> FREEING and owns the slot until FREED is published.
    let s = unsafe { pool.slot_mut(i) };
    let here = stack::capture(entry_sp);
    s.free = Record::here(&here);
    // SAFETY: OPTIONS is written before READY, which the caller observed through `pool()`.
    let check = unsafe { (*OPTIONS.0.get()).assume_init_ref() }.alloc_dealloc_mismatch;
    if check && crate::routine::mismatched(s.routine, routine) {
        // Reported, then released all the same (in continue mode): the program meant to give
        // the memory back, and keeping it would leak the slot for good.
        report_error(
            pool,
            &Error {
                kind: Kind::Mismatch,
                addr: p,
                is_write: false,
                object: Some((i, s)),
                stack: &here,
                damaged: 0,
                dealloc: routine,
            },
        );
    }
    if let Some(damaged) = pool.first_damaged(s) {
        report_error(
            pool,
            &Error {
                kind: Kind::Corruption,
                addr: p,
                is_write: true,
                object: Some((i, s)),
                stack: &here,
                damaged,
                dealloc: routine,
            },
        );
    }
    // The whole slot: the fault handler may have opened one of its unused pages. A large
    // object's pages are also given back to the kernel; they stay inaccessible.
    let (start, len) = (pool.page_of_slot(i), pool.slot_len(i));
    sys::protect(start as *mut u8, len, false);
    if pool.is_large(i) {
        sys::discard(start as *mut u8, len);
    }
    pool.covered.remove(s.site);
    s.state.store(FREED, Release);
    control::mirror(i, s);
    Counters::bump(&counters().frees);
    pool.push(i);
}

fn bad_free(pool: &Pool, kind: Kind, p: usize, obj: Option<usize>, entry_sp: usize) {
    let here = stack::capture(entry_sp);
    report_error(
        pool,
        &Error {
            kind,
            addr: p,
            is_write: false,
            object: obj.map(|i| (i, pool.slot(i))),
            stack: &here,
            damaged: 0,
            dealloc: crate::routine::ANY,
        },
    );
}

/// The process that reported a bug (0: none). A pid, not a flag: a forked child inherits the
/// parent's memory but not its bugs.
static BUG_PID: AtomicU32 = AtomicU32::new(0);

/// The status a process ending with `status` should end with: `exitcode` when this process
/// reported a bug and would have exited 0, else `status` unchanged.
pub fn exit_status(status: i32) -> i32 {
    let code = options_in_force().map_or(0, |o| o.exitcode);
    if status == 0 && code != 0 && BUG_PID.load(Relaxed) == sys::getpid() {
        code as i32
    } else {
        status
    }
}

/// At normal exit (registered at start, so it runs after the program's own handlers and, under
/// the preload, after the libraries' destructors): removes the control file, and applies
/// `exitcode` as the sanitizers do, by ending the process from here once stdio is flushed.
extern "C" fn on_exit(status: i32, _: *mut core::ffi::c_void) {
    check_at_exit();
    control::at_exit();
    let wanted = exit_status(status);
    if wanted != status {
        sys::flush_and_exit(wanted);
    }
}

/// A check of every live object's canary asked for from outside (`ufence objects PID --check`,
/// through the control block), run by the first thread to come by the sampling slow path.
fn serve_check_request(pool: &Pool) {
    let Some(b) = control::block() else { return };
    let req = &b.check;
    let asked = req.asked.load(Acquire);
    let taken = req.taken.load(Relaxed);
    // A raw-forked or vfork child still sees its parent's block: the request is the parent's.
    // (Asked only when there is a request: it costs a system call.)
    if asked == taken
        || !control::owned_here()
        || req
            .taken
            .compare_exchange(taken, asked, AcqRel, Relaxed)
            .is_err()
    {
        return;
    }
    let found = check_live(pool);
    req.found.store(found, Relaxed);
    req.done.store(asked, Release);
}

/// At normal exit (`exit`, and `_exit` under the preload): the canaries of the objects still
/// allocated, which no free will ever check. Not in a `vfork` child, whose objects are its
/// parent's and still in use.
pub fn check_at_exit() {
    if let Some(pool) = pool() {
        if control::owned_here() {
            check_live(pool);
        }
    }
}

/// Checks the canary of every live object and reports each damaged one (once per object, as
/// ever), naming it as still allocated. Returns how many are damaged.
fn check_live(pool: &Pool) -> u64 {
    let prev = sampler::hold();
    let mut found = 0;
    for i in pool.ever_used() {
        let s = pool.slot(i);
        // Holding the slot in CHECKING keeps a concurrent free from protecting the page under
        // the reads below (it waits).
        if s.state
            .compare_exchange(ALLOCATED, CHECKING, Acquire, Relaxed)
            .is_err()
        {
            continue;
        }
        if let Some(damaged) = pool.first_damaged(s) {
            found += 1;
            // Where the check ran (the exit path, or whichever allocation served a request)
            // says nothing about the bug, and would give every such report the same title and
            // signature: the report is told from the object's allocation stack.
            let here = s.alloc.stack();
            report_error(
                pool,
                &Error {
                    kind: Kind::Corruption,
                    addr: s.addr,
                    is_write: true,
                    object: Some((i, s)),
                    stack: &here,
                    damaged,
                    dealloc: crate::routine::ANY,
                },
            );
        }
        s.state.store(ALLOCATED, Release);
    }
    sampler::release(prev);
    found
}

/// An invalid free that the C library itself caught (it aborted or faulted inside the `free` or
/// `realloc` ufence forwarded to it): reported from the signal handler, without `on_error`'s
/// abort, since the process goes on to end as it would have. `fault_addr` is what the library
/// faulted on (0 when it aborted). C++ names stay mangled: the library may hold its own lock,
/// and demangling allocates.
pub fn report_foreign_free(pool: &Pool, stack: &Stack, fault_addr: usize, routine: u8) {
    crate::symbolize::set_demangle_cpp(false);
    report_once(
        pool,
        &Error {
            kind: Kind::InvalidFree,
            addr: fault_addr,
            is_write: false,
            object: None,
            stack,
            damaged: 0,
            dealloc: routine,
        },
    );
    crate::symbolize::set_demangle_cpp(true);
}

/// Reports an error once per object, counts it, and aborts when `on_error=abort`.
pub fn report_error(pool: &Pool, e: &Error) {
    report_once(pool, e);
    if sampler::knobs().abort_on_error.load(Relaxed) {
        sys::abort_now();
    }
}

fn report_once(pool: &Pool, e: &Error) {
    let first = match e.object {
        Some((_, s)) => s.mark_reported(),
        None => true,
    };
    if first {
        // A report is printed whole before the next one starts. The wait is bounded: a thread
        // stuck elsewhere while holding it must not hang this one forever.
        let locked = REPORT_LOCK.try_lock_for_ns(REPORT_WAIT_NS);
        Counters::bump(&counters().bugs);
        BUG_PID.store(sys::getpid(), Relaxed);
        let top = REPORT_STACK.load(Relaxed);
        if locked && top != 0 {
            sys::run_on_stack(top, &mut || report::print(e, pool));
        } else {
            // The reporter is stuck elsewhere (or no report stack could be mapped): a one-line
            // summary needs almost no stack, where a symbolized report might overflow a small
            // alternate signal stack.
            report::print_brief(e);
        }
        if locked {
            REPORT_LOCK.unlock();
        }
    }
}

/// The size the program asked for, if `p` is a live pool object's start.
pub fn object_size(p: *const u8) -> Option<usize> {
    let pool = pool()?;
    if !pool.contains(p as usize) {
        return None;
    }
    match pool.place(p as usize) {
        crate::pool::Place::Object(i) => {
            let s = pool.slot(i);
            (is_live(s.state.load(Acquire)) && s.addr == p as usize).then_some(s.size)
        }
        _ => None,
    }
}

/// A snapshot of the counters.
pub fn stats() -> crate::Stats {
    let enabled = pool().is_some() && sampler::knobs().enabled.load(Relaxed);
    counters().snapshot(enabled, sampler::knobs())
}

/// Used by the fault handler: is slot `i` holding a freed object?
pub fn is_freed(state: u8) -> bool {
    state == FREED || state == FREEING
}
