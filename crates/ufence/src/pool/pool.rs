//! The guarded pool: `[guard][object 0][guard][object 1]...[guard]`, reserved once, followed
//! by the large slots' region `[guard][large slot 0][guard][large slot 1]...[guard]`.
//!
//! Page `2i + 1` holds small object `i`; even pages are guards shared by neighbours. A large slot
//! spans `large_pages` pages (`max_object_size` rounded up) between its two guards, and takes
//! objects over a page, or aligned to more than a page; the object sits at the left or the right
//! edge of the slot, only the pages it touches are made accessible, and the rest of the slot
//! stays inaccessible like a guard. The whole range is mapped inaccessible at start; an object's
//! pages are made accessible while the object lives and inaccessible again when it is freed (a
//! large object's are also given back to the kernel), so only live objects' pages are ever
//! touchable. The slot metadata lives in a separate mapping so that no bug in the program can
//! reach it through an object's neighbourhood.
//!
//! Each class reuses its slots in FIFO order (least recently freed first), which keeps a freed
//! object's pages inaccessible for as long as possible and so maximises the window for catching
//! a use-after-free.

use crate::stack::{Packed, Stack};
use crate::sys;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Never used since start.
pub const UNUSED: u8 = 0;
/// Holds a live object.
pub const ALLOCATED: u8 = 1;
/// Held an object that has been freed; its page is inaccessible.
pub const FREED: u8 = 2;
/// Being freed: the free record is being written and the canary checked.
pub const FREEING: u8 = 3;
/// Holds a live object whose canary is being checked (at exit, or on request): a free waits.
pub const CHECKING: u8 = 4;

/// True for a slot holding a live object.
#[inline]
pub fn is_live(state: u8) -> bool {
    state == ALLOCATED || state == CHECKING
}

/// Who allocated or freed an object, when, and from where. `#[repr(C)]` and made of integers
/// only: slots live in the control block, which another process reads (`ufence objects`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Record {
    pub tid: u32,
    pub thread_name: [u8; 16],
    _pad: u32,
    /// Nanoseconds since ufence started.
    pub time_ns: u64,
    pub packed: Packed,
}

impl Record {
    pub const EMPTY: Record = Record {
        tid: 0,
        thread_name: [0; 16],
        _pad: 0,
        time_ns: 0,
        packed: Packed::EMPTY,
    };

    pub fn here(stack: &Stack) -> Record {
        let now = crate::since_start_ns();
        Record {
            tid: crate::sampler::thread_id(),
            thread_name: crate::sampler::thread_name(now),
            _pad: 0,
            time_ns: now,
            packed: Packed::pack(stack),
        }
    }

    /// The stack, unpacked.
    pub fn stack(&self) -> Stack {
        self.packed.unpack()
    }
}

/// Metadata of one slot. `state` and `reported` are atomics because the fault handler reads
/// them without the pool lock; the rest is written only by the thread that owns the slot's
/// transition (allocation or free) before `state` is published with Release. `seq` is used in
/// the published copy only (see `control::mirror`): odd while the copy is being written, so
/// that a reader in another process can tell a torn copy.
///
/// `#[repr(C)]`, integers only (no `bool`): any bytes are a valid `Slot`, which lets the
/// command-line tool copy slots out of a control block it does not trust.
#[repr(C)]
pub struct Slot {
    /// Odd while the slot's metadata is being written (a sequence lock for outside readers).
    pub seq: AtomicU32,
    pub state: AtomicU8,
    /// Set once an error about the current object has been reported (one report per object).
    pub reported: AtomicU8,
    /// 1 when the object ends at the right edge of its page.
    pub right: u8,
    /// The routine that allocated the object (`routine`), for the alloc-dealloc mismatch check.
    pub routine: u8,
    pub addr: usize,
    pub size: usize,
    pub align: usize,
    /// The allocation site's hash, in the covered-sites filter while the object lives.
    pub site: u64,
    pub alloc: Record,
    pub free: Record,
}

impl Slot {
    /// Marks the current object reported; true if it was not already.
    pub fn mark_reported(&self) -> bool {
        self.reported.swap(1, Ordering::AcqRel) == 0
    }
}

/// A tiny spin lock for ufence's own short critical sections (popping or pushing a slot index).
/// It is never held while calling out of ufence, so the only way to wait on it is another
/// thread inside the same few instructions.
pub struct SpinLock(AtomicBool);

impl SpinLock {
    pub const fn new() -> SpinLock {
        SpinLock(AtomicBool::new(false))
    }
    pub fn lock(&self) {
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins > 64 {
                sys::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
    }
    /// Tries for at most `ns` nanoseconds; used by reporters, which must never wait forever.
    pub fn try_lock_for_ns(&self, ns: u64) -> bool {
        let start = sys::now_ns();
        while sys::now_ns().saturating_sub(start) < ns {
            if self
                .0
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
            sys::yield_now();
        }
        false
    }
    pub fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
    /// Forces the lock open (in a forked child, whose other threads no longer exist).
    pub fn reset(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Where a pool address falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the page of this slot.
    Object(usize),
    /// On the guard page between slots `left` and `right` (either may be absent at the ends).
    Guard {
        left: Option<usize>,
        right: Option<usize>,
    },
}

/// The pool's initial order of slots: `0..order.len()` shuffled by `seed` (Fisher-Yates on
/// xorshift), so that the first objects of a fleet's processes do not all land in the same
/// slots.
pub fn shuffled_order(seed: u64, order: &mut [u32]) {
    for (i, o) in order.iter_mut().enumerate() {
        *o = i as u32;
    }
    let mut r = seed | 1;
    for i in (1..order.len()).rev() {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        let j = (r % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// Where an object of `size` bytes aligned to `align` starts on its page of `page` bytes: at
/// the page's start when left-placed; when right-placed, ending at the page's end, rounded
/// down to its alignment (so up to `align - 1` bytes of slack can follow it). The placement of
/// every sampled object, and the fleet model's (`ufence-fleet`'s `plan`).
#[inline]
pub fn object_offset(page: usize, size: usize, align: usize, right: bool) -> usize {
    if right {
        (page - size) & !(align - 1)
    } else {
        0
    }
}

/// The byte expected at `addr` in the unused part of an object's page.
#[inline]
pub fn canary_byte(addr: usize) -> u8 {
    0xaa ^ (addr & 7) as u8
}

/// The canary for a whole 8-byte-aligned word.
const CANARY_WORD: u64 = u64::from_le_bytes([0xaa, 0xab, 0xa8, 0xa9, 0xae, 0xaf, 0xac, 0xad]);

/// One class's free list: a ring of slot indices, allocate from the head, free to the tail.
struct Ring {
    fifo: *mut u32,
    cap: usize,
    /// Head index of the ring, under the pool's lock.
    head: UnsafeCell<usize>,
    /// Entries in the ring: written under the lock, read without it to see a full class cheaply.
    len: AtomicUsize,
}

impl Ring {
    /// A ring holding `first..first + cap` in an order shuffled by `seed`.
    ///
    /// # Safety
    /// `fifo` must point at `cap` writable u32s that nothing else uses.
    unsafe fn new(fifo: *mut u32, first: usize, cap: usize, seed: u64) -> Ring {
        // SAFETY: the caller's promise: cap writable u32s that nothing else uses.
        let order = unsafe { core::slice::from_raw_parts_mut(fifo, cap) };
        // The same shuffle as the fleet simulator's (`shuffled_order`), offset to this class.
        shuffled_order(seed, order);
        for o in order.iter_mut() {
            *o += first as u32;
        }
        Ring {
            fifo,
            cap,
            head: UnsafeCell::new(0),
            len: AtomicUsize::new(cap),
        }
    }
}

/// The two classes of slots: one page, or up to `max_object_size` bytes (and page-overaligned
/// requests) in a region of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Small,
    Large,
}

pub struct Pool {
    pub base: usize,
    pub len: usize,
    pub page: usize,
    slots: *mut Slot,
    /// All slots: the small ones (`0..nsmall`), then the large ones.
    pub nslots: usize,
    pub nsmall: usize,
    pub nlarge: usize,
    /// Pages of a large slot (guards excluded).
    pub large_pages: usize,
    /// Where the large slots' region starts: `[guard][large_pages][guard]...[guard]`.
    pub large_base: usize,
    rings: [Ring; 2],
    /// One flag per guard page: set when the fault handler opened it to let a program go on.
    /// Guards `0..=nsmall` are the small region's, then `nlarge + 1` of the large region.
    guards: *const AtomicBool,
    /// One flag per slot: set when the fault handler opened a page of the slot that its next
    /// object may not use (a large slot's), so that the next allocation closes the slot first.
    opened: *const AtomicBool,
    /// One bit per slot, set when the slot is first handed out: a forked child republishes the
    /// slots in use without reading (and faulting in) the whole table.
    ever_used: *const AtomicU64,
    pub lock: SpinLock,
    /// The allocation sites of the objects in the pool (see `covered`).
    pub covered: crate::covered::Covered,
}

// SAFETY: every mutable field is reached either under `lock` (the FIFO) or by the single thread
// that owns a slot's current transition; the raw pointers point into mappings that live forever.
unsafe impl Sync for Pool {}
// SAFETY: as above; the pool is a process-wide singleton.
unsafe impl Send for Pool {}

impl Pool {
    /// Maps the pool and its private metadata (the free rings, the guard flags). The slot table
    /// is the caller's (private, zeroed, `nsmall + nlarge` long; `control::mirror` publishes
    /// each change). None if the address space cannot be had.
    pub fn new(
        nsmall: usize,
        nlarge: usize,
        large_pages: usize,
        seed: u64,
        slots: *mut Slot,
    ) -> Option<Pool> {
        let page = sys::page_size();
        let nslots = nsmall + nlarge;
        let small_len = (2 * nsmall + 1) * page;
        let large_len = if nlarge > 0 {
            (nlarge * (large_pages + 1) + 1) * page
        } else {
            0
        };
        let len = small_len + large_len;
        let nguards = nsmall + 1 + nlarge + 1;
        // The rings (nslots u32s), the guard flags, the slots' opened flags, then the used-slot
        // bits.
        let bits_offset = (nslots * 4 + nguards + nslots).next_multiple_of(8);
        let meta_len = (bits_offset + nslots.div_ceil(64) * 8).div_ceil(page) * page;
        let meta = sys::map_rw(meta_len)?;
        let covered = crate::covered::Covered::new(nslots);
        let base = covered.as_ref().and_then(|_| sys::map_pool(len));
        let (Some(covered), Some(base)) = (covered, base) else {
            // SAFETY: meta was just mapped with this length and nothing refers to it.
            unsafe { sys::unmap(meta, meta_len) };
            return None;
        };
        let fifo = meta.cast::<u32>();
        // SAFETY: the guard flags follow the rings inside the same zeroed private mapping.
        let guards = unsafe { fifo.add(nslots).cast::<AtomicBool>() };
        // SAFETY: the slots' flags follow the guard flags inside the same mapping.
        let opened = unsafe { guards.add(nguards) };
        // SAFETY: the words start at an 8-aligned offset inside the same mapping.
        let ever_used = unsafe { meta.add(bits_offset).cast::<AtomicU64>() };
        // The initial order is shuffled (as newer kernels do) so that the first objects of a
        // fleet's processes do not all land in the same slots.
        // SAFETY: the mapping holds nsmall u32s for the first ring, then nlarge for the second.
        let rings = unsafe {
            [
                Ring::new(fifo, 0, nsmall, seed),
                Ring::new(fifo.add(nsmall), nsmall, nlarge, seed.rotate_left(17)),
            ]
        };
        Some(Pool {
            base: base as usize,
            len,
            page,
            slots,
            nslots,
            nsmall,
            nlarge,
            large_pages,
            large_base: base as usize + small_len,
            rings,
            guards,
            opened,
            ever_used,
            lock: SpinLock::new(),
            covered,
        })
    }

    #[inline(always)]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.len
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.nslots);
        // SAFETY: i is in bounds; the metadata mapping lives forever.
        unsafe { &*self.slots.add(i) }
    }

    /// # Safety
    /// The caller must own slot `i`'s current transition (it popped the slot from the FIFO, or
    /// won the ALLOCATED -> FREEING exchange), so no other thread writes it concurrently.
    /// The table is private; `control::mirror` publishes each change. Known gap: a fault handler serving a *stale*
    /// access on another thread (a use-after-free racing with the slot's reuse) may read the
    /// plain fields while they are written. Only the text of that report can be affected, but
    /// it is a data race by Rust's rules.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slot_mut(&self, i: usize) -> &mut Slot {
        assert!(i < self.nslots);
        // SAFETY: in bounds; exclusivity is the caller's obligation.
        unsafe { &mut *self.slots.add(i) }
    }

    /// The flag of guard page `k` (see [`guard_addr`](Self::guard_addr)).
    pub fn guard_opened(&self, k: usize) -> &AtomicBool {
        assert!(k < self.nsmall + self.nlarge + 2);
        // SAFETY: nsmall + nlarge + 2 flags were reserved in the metadata mapping.
        unsafe { &*self.guards.add(k) }
    }

    /// The flag of slot `i`: the fault handler opened one of its pages (see `opened`).
    pub fn slot_opened(&self, i: usize) -> &AtomicBool {
        assert!(i < self.nslots);
        // SAFETY: nslots flags were reserved in the metadata mapping.
        unsafe { &*self.opened.add(i) }
    }

    /// The address of guard page `k`: `0..=nsmall` in the small region, then the large one's.
    pub fn guard_addr(&self, k: usize) -> usize {
        if k <= self.nsmall {
            self.base + 2 * k * self.page
        } else {
            self.large_base + (k - self.nsmall - 1) * self.large_stride()
        }
    }

    /// The guard left of slot `i` (the one right of it is the next).
    pub fn left_guard(&self, i: usize) -> usize {
        if i < self.nsmall {
            i
        } else {
            i + 1
        }
    }

    fn large_stride(&self) -> usize {
        (self.large_pages + 1) * self.page
    }

    pub fn is_large(&self, i: usize) -> bool {
        i >= self.nsmall
    }

    /// The first byte of slot `i`'s pages (the page after its left guard).
    pub fn page_of_slot(&self, i: usize) -> usize {
        if i < self.nsmall {
            self.base + (2 * i + 1) * self.page
        } else {
            self.large_base + self.page + (i - self.nsmall) * self.large_stride()
        }
    }

    /// Bytes between slot `i`'s guards.
    pub fn slot_len(&self, i: usize) -> usize {
        if i < self.nsmall {
            self.page
        } else {
            self.large_pages * self.page
        }
    }

    /// The pages an object uses, `[first, end)`: empty for a 0-byte object, whose pages all stay
    /// inaccessible.
    pub fn object_pages(&self, s: &Slot) -> (usize, usize) {
        let lo = s.addr & !(self.page - 1);
        let hi = (s.addr + s.size).next_multiple_of(self.page);
        (lo, hi)
    }

    /// The class of slot a request of `size` bytes aligned to `align` fits, if any.
    pub fn class_for(&self, size: usize, align: usize) -> Option<Class> {
        if size <= self.page && align <= self.page {
            Some(Class::Small)
        } else if self.nlarge > 0
            && size
                .checked_add(align.saturating_sub(self.page))
                .is_some_and(|n| n <= self.large_pages * self.page)
        {
            Some(Class::Large)
        } else {
            None
        }
    }

    /// Which slot page or guard page `addr` (inside the pool) is on.
    pub fn place(&self, addr: usize) -> Place {
        if addr < self.large_base {
            let p = (addr - self.base) / self.page;
            if p % 2 == 1 {
                Place::Object((p - 1) / 2)
            } else {
                let k = p / 2;
                Place::Guard {
                    left: k.checked_sub(1),
                    right: (k < self.nsmall).then_some(k),
                }
            }
        } else {
            let off = addr - self.large_base;
            let q = off / self.large_stride();
            if off % self.large_stride() < self.page {
                Place::Guard {
                    left: q.checked_sub(1).map(|j| self.nsmall + j),
                    right: (q < self.nlarge).then_some(self.nsmall + q),
                }
            } else {
                Place::Object(self.nsmall + q)
            }
        }
    }

    /// The guard page `addr` is on, when it is on one.
    pub fn guard_at(&self, addr: usize) -> Option<usize> {
        if !matches!(self.place(addr), Place::Guard { .. }) {
            return None;
        }
        Some(if addr < self.large_base {
            (addr - self.base) / self.page / 2
        } else {
            self.nsmall + 1 + (addr - self.large_base) / self.large_stride()
        })
    }

    fn ring(&self, class: Class) -> &Ring {
        &self.rings[(class == Class::Large) as usize]
    }

    /// The slots of a class, free and in use.
    pub fn class_slots(&self, class: Class) -> usize {
        self.ring(class).cap
    }

    /// Number of slots of `class` currently free for allocation (a snapshot).
    pub fn free_slots(&self, class: Class) -> usize {
        self.ring(class).len.load(Ordering::Relaxed)
    }

    /// Takes the least recently freed slot of `class`, if any.
    pub fn pop(&self, class: Class) -> Option<usize> {
        let ring = self.ring(class);
        self.lock.lock();
        let len = ring.len.load(Ordering::Relaxed);
        let r = if len == 0 {
            None
        } else {
            // SAFETY: the ring and its head are only touched under `lock`; head < cap.
            unsafe {
                let head = &mut *ring.head.get();
                let i = *ring.fifo.add(*head);
                *head = (*head + 1) % ring.cap;
                ring.len.store(len - 1, Ordering::Relaxed);
                (*self.ever_used.add(i as usize / 64)).fetch_or(1 << (i % 64), Ordering::Relaxed);
                Some(i as usize)
            }
        };
        self.lock.unlock();
        r
    }

    /// The slots that have ever been handed out (the others are still all zero), in order.
    pub fn ever_used(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nslots.div_ceil(64)).flat_map(move |w| {
            // SAFETY: w < nslots.div_ceil(64), the number of words reserved in `new`.
            let bits = unsafe { (*self.ever_used.add(w)).load(Ordering::Relaxed) };
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }

    /// Returns a slot to the tail of its class's FIFO.
    pub fn push(&self, i: usize) {
        let ring = self.ring(if self.is_large(i) {
            Class::Large
        } else {
            Class::Small
        });
        self.lock.lock();
        let len = ring.len.load(Ordering::Relaxed);
        // SAFETY: under `lock`; the ring never holds more than cap entries because each slot
        // is pushed once per pop, so the tail index is in bounds.
        unsafe {
            let tail = (*ring.head.get() + len) % ring.cap;
            *ring.fifo.add(tail) = i as u32;
        }
        ring.len.store(len + 1, Ordering::Relaxed);
        self.lock.unlock();
    }

    /// Fills the first and the last page of `[lo, hi)` (the partial pages around an object,
    /// which the caller made accessible) with the canary pattern.
    pub fn fill_canary(&self, lo: usize, hi: usize) {
        if lo == hi {
            return;
        }
        for first in [lo, hi - self.page] {
            let page = first as *mut u64;
            // SAFETY: the page is accessible (just unprotected by the allocating thread, which
            // owns the slot) and 8-byte aligned.
            unsafe {
                for w in 0..self.page / 8 {
                    page.add(w).write(CANARY_WORD);
                }
            }
            if hi - lo == self.page {
                break;
            }
        }
    }

    /// The first byte outside the object on its pages that no longer holds the canary.
    pub fn first_damaged(&self, s: &Slot) -> Option<usize> {
        let (lo, hi) = self.object_pages(s);
        if lo == hi {
            return None;
        }
        first_damaged_in(lo, s.addr).or_else(|| first_damaged_in(s.addr + s.size, hi))
    }
}

/// Checks `[from, to)` against the canary: word at a time where aligned, bytes at the edges.
fn first_damaged_in(from: usize, to: usize) -> Option<usize> {
    let mut a = from;
    // SAFETY (all reads below): [from, to) lies on an accessible object page owned by the caller.
    while a < to && !a.is_multiple_of(8) {
        if unsafe { *(a as *const u8) } != canary_byte(a) {
            return Some(a);
        }
        a += 1;
    }
    // 64 bytes at a time (the compiler makes vector compares of it), then the word that
    // differs is found word by word.
    while a + 64 <= to {
        let mut diff = 0u64;
        for k in 0..8 {
            diff |= unsafe { *((a + 8 * k) as *const u64) } ^ CANARY_WORD;
        }
        if diff != 0 {
            break;
        }
        a += 64;
    }
    while a + 8 <= to {
        if unsafe { *(a as *const u64) } != CANARY_WORD {
            break;
        }
        a += 8;
    }
    while a < to {
        if unsafe { *(a as *const u8) } != canary_byte(a) {
            return Some(a);
        }
        a += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_slots(n: usize) -> *mut Slot {
        sys::map_rw(n * core::mem::size_of::<Slot>())
            .unwrap()
            .cast()
    }

    #[test]
    fn canary_word_matches_bytes() {
        let bytes = CANARY_WORD.to_le_bytes();
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(*b, canary_byte(0x1000 + i));
        }
    }

    #[test]
    fn layout_places() {
        let pool = Pool::new(3, 0, 1, 42, test_slots(3)).unwrap();
        let pg = pool.page;
        assert_eq!(pool.len, 7 * pg);
        assert_eq!(
            pool.place(pool.base),
            Place::Guard {
                left: None,
                right: Some(0)
            }
        );
        assert_eq!(pool.place(pool.base + pg + 5), Place::Object(0));
        assert_eq!(
            pool.place(pool.base + 2 * pg),
            Place::Guard {
                left: Some(0),
                right: Some(1)
            }
        );
        assert_eq!(
            pool.place(pool.base + 6 * pg + 1),
            Place::Guard {
                left: Some(2),
                right: None
            }
        );
        assert!(!pool.contains(pool.base + 7 * pg));
        assert!(!pool.contains(pool.base - 1));
    }

    #[test]
    fn fifo_reuses_least_recently_freed() {
        let pool = Pool::new(4, 0, 1, 7, test_slots(4)).unwrap();
        let mut got: Vec<usize> = (0..4).map(|_| pool.pop(Class::Small).unwrap()).collect();
        assert!(pool.pop(Class::Small).is_none());
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
        pool.push(2);
        pool.push(0);
        assert_eq!(pool.pop(Class::Small), Some(2));
        pool.push(3);
        assert_eq!(pool.pop(Class::Small), Some(0));
        assert_eq!(pool.pop(Class::Small), Some(3));
    }

    #[test]
    fn canary_detects_damage_on_both_sides() {
        let pool = Pool::new(1, 0, 1, 1, test_slots(1)).unwrap();
        let i = pool.pop(Class::Small).unwrap();
        let page = pool.page_of_slot(i);
        assert!(sys::protect(page as *mut u8, pool.page, true));
        pool.fill_canary(page, page + pool.page);
        // SAFETY: single-threaded test owning slot i.
        let s = unsafe { pool.slot_mut(i) };
        s.addr = page + 100;
        s.size = 13;
        assert_eq!(pool.first_damaged(s), None);
        // SAFETY: the page is accessible.
        unsafe { *((page + 99) as *mut u8) = 0 };
        assert_eq!(pool.first_damaged(s), Some(page + 99));
        unsafe { *((page + 99) as *mut u8) = canary_byte(page + 99) };
        unsafe { *((page + 113) as *mut u8) = 1 };
        assert_eq!(pool.first_damaged(s), Some(page + 113));
    }

    #[test]
    fn large_region_layout() {
        // 2 small slots, 3 large slots of 4 pages.
        let pool = Pool::new(2, 3, 4, 9, test_slots(5)).unwrap();
        let pg = pool.page;
        assert_eq!(pool.len, 5 * pg + (3 * 5 + 1) * pg);
        assert_eq!(pool.large_base, pool.base + 5 * pg);
        // The small region ends with its own guard; the large one starts with another.
        assert_eq!(
            pool.place(pool.large_base - 1),
            Place::Guard {
                left: Some(1),
                right: None
            }
        );
        assert_eq!(
            pool.place(pool.large_base),
            Place::Guard {
                left: None,
                right: Some(2)
            }
        );
        for j in 0..3 {
            let start = pool.page_of_slot(2 + j);
            assert_eq!(start, pool.large_base + pg + j * 5 * pg);
            assert_eq!(pool.slot_len(2 + j), 4 * pg);
            assert_eq!(pool.place(start), Place::Object(2 + j));
            assert_eq!(pool.place(start + 4 * pg - 1), Place::Object(2 + j));
            // Its guards, by index and address.
            let left = pool.left_guard(2 + j);
            assert_eq!(pool.guard_addr(left), start - pg);
            assert_eq!(pool.guard_addr(left + 1), start + 4 * pg);
            assert_eq!(pool.guard_at(start - 1), Some(left));
            assert_eq!(pool.guard_at(start + 4 * pg), Some(left + 1));
            assert_eq!(pool.guard_at(start), None);
        }
        assert_eq!(
            pool.place(pool.base + pool.len - 1),
            Place::Guard {
                left: Some(4),
                right: None
            }
        );
        // Small guards keep their numbers.
        assert_eq!(pool.guard_at(pool.base + 2 * pg), Some(1));
        assert_eq!(pool.guard_addr(2), pool.base + 4 * pg);
    }

    #[test]
    fn classes_and_their_rings() {
        let pool = Pool::new(2, 2, 4, 3, test_slots(4)).unwrap();
        let pg = pool.page;
        assert_eq!(pool.class_for(0, 16), Some(Class::Small));
        assert_eq!(pool.class_for(pg, pg), Some(Class::Small));
        assert_eq!(pool.class_for(pg + 1, 16), Some(Class::Large));
        assert_eq!(pool.class_for(16, 2 * pg), Some(Class::Large));
        assert_eq!(pool.class_for(4 * pg, 16), Some(Class::Large));
        assert_eq!(pool.class_for(4 * pg + 1, 16), None);
        // Aligned to 2 pages, 3 pages fit 4 only if the slack before them is at most a page.
        assert_eq!(pool.class_for(3 * pg, 2 * pg), Some(Class::Large));
        assert_eq!(pool.class_for(3 * pg + 1, 2 * pg), None);
        assert_eq!(pool.class_for(usize::MAX - 8, 16), None);
        // Each class has its own FIFO: the large slots never serve a small request.
        let mut small = [
            pool.pop(Class::Small).unwrap(),
            pool.pop(Class::Small).unwrap(),
        ];
        small.sort();
        assert_eq!(small, [0, 1]);
        assert_eq!(pool.pop(Class::Small), None);
        assert_eq!(pool.free_slots(Class::Large), 2);
        let a = pool.pop(Class::Large).unwrap();
        let b = pool.pop(Class::Large).unwrap();
        assert!(a >= 2 && b >= 2 && a != b);
        pool.push(b);
        pool.push(a);
        pool.push(0);
        assert_eq!(pool.pop(Class::Large), Some(b));
        assert_eq!(pool.pop(Class::Large), Some(a));
        assert_eq!(pool.pop(Class::Small), Some(0));
        let none = Pool::new(1, 0, 4, 1, test_slots(1)).unwrap();
        assert_eq!(none.class_for(pg + 1, 16), None);
        assert_eq!(none.len, 3 * pg);
    }
}
