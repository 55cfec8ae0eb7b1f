//! Allocation micro-benchmark: `ufence::Guarded<System>` against bare `System`, in one process.
//!
//! A binary has one `#[global_allocator]`, so the workload does not go through it: it calls
//! `GlobalAlloc::alloc`/`dealloc` directly, either on `System` or on a second
//! `Guarded<System>` instance `G`. Both share ufence's process-wide state (pool, per-thread
//! sampler, options from `UFENCE_OPTIONS`) with the global allocator, exactly as a program using
//! `Guarded` as its global allocator would. The two variants are interleaved round by round (the
//! order alternates) so that a noisy neighbour hurts both alike.
//!
//! ```text
//! cargo run --release -p ufence --example alloc_bench                 # the benchmark
//! cargo run --release -p ufence --example alloc_bench -- --rounds 31 --ops 2000000
//! alloc_bench --callgrind-plain N     # exactly N malloc/free pairs via System, nothing else
//! alloc_bench --callgrind-guarded N   # the same via Guarded<System>
//! ```
//!
//! The workload: mixed sizes 8..=512 bytes (mostly small, as `Box`es and short `Vec`s are),
//! three of four freed at once, one of four held in a 512-entry ring buffer and freed when its
//! slot comes round again, every block touched at both ends. One "pair" is one allocation and
//! its eventual free.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::null_mut;
use std::sync::Barrier;
use std::time::Instant;

#[global_allocator]
static A: ufence::Guarded<System> = ufence::Guarded::new(System);

/// The instance the guarded variant calls directly.
static G: ufence::Guarded<System> = ufence::Guarded::new(System);

const RING: usize = 512;
const NSIZES: usize = 4096;

/// A fixed pseudo-random size sequence, the same for both variants: 3/4 of requests are 8..=64
/// bytes in steps of 8, 1/4 are 65..=512 bytes.
fn sizes() -> Vec<u16> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..NSIZES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x >> 16) as usize;
            if r & 3 != 0 {
                (8 + (r >> 2) % 8 * 8) as u16
            } else {
                (65 + (r >> 2) % 448) as u16
            }
        })
        .collect()
}

/// The mixed workload: `ops` allocations, each freed (most at once, some later).
/// Returns a checksum so nothing can be optimised away.
#[inline(always)]
unsafe fn workload<X: GlobalAlloc>(a: &X, ops: usize, sizes: &[u16]) -> usize {
    let mut ring: [(*mut u8, usize); RING] = [(null_mut(), 0); RING];
    let mut sum = 0usize;
    for i in 0..ops {
        let size = sizes[i % NSIZES] as usize;
        // SAFETY: size is 8..=512 and the alignment a power of two.
        let layout = unsafe { Layout::from_size_align_unchecked(size, 8) };
        // SAFETY: a non-zero-size layout.
        let p = unsafe { a.alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: p has `size` writable bytes.
        unsafe {
            p.write(i as u8);
            p.add(size - 1).write(size as u8);
        }
        let p = black_box(p);
        if i & 3 == 0 {
            let slot = &mut ring[(i >> 2) % RING];
            if !slot.0.is_null() {
                // SAFETY: slot.0 is live with layout (slot.1, 8), allocated by `a`.
                unsafe {
                    sum = sum.wrapping_add(*slot.0 as usize);
                    a.dealloc(slot.0, Layout::from_size_align_unchecked(slot.1, 8));
                }
            }
            *slot = (p, size);
        } else {
            // SAFETY: p is live, allocated by `a` with `layout`.
            unsafe {
                sum = sum.wrapping_add(*p.add(size - 1) as usize);
                a.dealloc(p, layout);
            }
        }
    }
    for slot in ring.iter() {
        if !slot.0.is_null() {
            // SAFETY: as above.
            unsafe { a.dealloc(slot.0, Layout::from_size_align_unchecked(slot.1, 8)) };
        }
    }
    sum
}

#[inline(never)]
fn run_plain(ops: usize, sizes: &[u16]) -> usize {
    // SAFETY: System is a valid allocator; the workload frees what it allocates.
    unsafe { workload(&System, ops, sizes) }
}

#[inline(never)]
fn run_guarded(ops: usize, sizes: &[u16]) -> usize {
    // SAFETY: as above; G forwards unsampled requests to System.
    unsafe { workload(&G, ops, sizes) }
}

/// Exactly `n` immediate alloc/free pairs of a fixed size cycle, for instruction counting.
#[inline(always)]
unsafe fn pairs<X: GlobalAlloc>(a: &X, n: usize) -> usize {
    const CYCLE: [usize; 8] = [16, 24, 32, 48, 64, 96, 128, 256];
    let mut sum = 0usize;
    for i in 0..n {
        // SAFETY: non-zero sizes, power-of-two alignment.
        let layout = unsafe { Layout::from_size_align_unchecked(CYCLE[i & 7], 8) };
        // SAFETY: as in `workload`.
        unsafe {
            let p = a.alloc(layout);
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            p.write(i as u8);
            let p = black_box(p);
            sum = sum.wrapping_add(*p as usize);
            a.dealloc(p, layout);
        }
    }
    sum
}

#[inline(never)]
fn pairs_plain(n: usize) -> usize {
    // SAFETY: see `pairs`.
    unsafe { pairs(&System, n) }
}

#[inline(never)]
fn pairs_guarded(n: usize) -> usize {
    // SAFETY: see `pairs`.
    unsafe { pairs(&G, n) }
}

/// Runs `f(ops)` on `threads` threads started together; returns the wall time in ns from the
/// first start to the last end (thread creation excluded).
fn timed(threads: usize, ops: usize, sizes: &[u16], f: fn(usize, &[u16]) -> usize) -> f64 {
    if threads == 1 {
        let t = Instant::now();
        black_box(f(ops, sizes));
        return t.elapsed().as_nanos() as f64;
    }
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let t0 = Instant::now();
                    black_box(f(ops, sizes));
                    (t0, Instant::now())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    (end - start).as_nanos() as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Result {
    plain: Vec<f64>,
    guarded: Vec<f64>,
}

fn bench(threads: usize, rounds: usize, ops: usize, sizes: &[u16]) -> Result {
    // Warm-up: both variants once (page faults, glibc arenas, tcache, the sampler's stride).
    timed(threads, ops / 4, sizes, run_plain);
    timed(threads, ops / 4, sizes, run_guarded);
    let mut r = Result {
        plain: Vec::new(),
        guarded: Vec::new(),
    };
    for round in 0..rounds {
        // Alternate the order so neither variant always runs second.
        let (p, g) = if round % 2 == 0 {
            let p = timed(threads, ops, sizes, run_plain);
            (p, timed(threads, ops, sizes, run_guarded))
        } else {
            let g = timed(threads, ops, sizes, run_guarded);
            (timed(threads, ops, sizes, run_plain), g)
        };
        r.plain.push(p / ops as f64);
        r.guarded.push(g / ops as f64);
    }
    r
}

fn report(name: &str, r: &Result) -> f64 {
    let mut ratios: Vec<f64> = r.plain.iter().zip(&r.guarded).map(|(p, g)| g / p).collect();
    let mut p = r.plain.clone();
    let mut g = r.guarded.clone();
    let (mp, mg) = (median(&mut p), median(&mut g));
    let mr = median(&mut ratios);
    println!(
        "| {name} | {mp:.2} | {mg:.2} | {:.4} | {mr:.4} | {:.4} | {:.4} |",
        mg / mp,
        ratios[0],
        ratios[ratios.len() - 1]
    );
    mg / mp
}

fn arg_value(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    let v = args.get(i + 1).unwrap_or_else(|| {
        eprintln!("alloc_bench: {name} needs a number");
        std::process::exit(2)
    });
    Some(v.parse().unwrap_or_else(|_| {
        eprintln!("alloc_bench: {name}: not a number: {v}");
        std::process::exit(2)
    }))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(n) = arg_value(&args, "--callgrind-plain") {
        black_box(pairs_plain(n));
        return;
    }
    if let Some(n) = arg_value(&args, "--callgrind-guarded") {
        black_box(pairs_guarded(n));
        return;
    }
    let rounds = arg_value(&args, "--rounds").unwrap_or(21).max(1);
    let ops = arg_value(&args, "--ops").unwrap_or(2_000_000).max(RING * 8);
    let sizes = sizes();

    // Start ufence now so that its options are known (and its start-up is not timed).
    ufence::start(&ufence::Options::DEFAULT);
    match ufence::options_in_force() {
        Some(o) => println!(
            "ufence options in force: enabled={} sample_interval={} ms, sample_rate={}, num_objects={}",
            o.enabled as u8, o.sample_interval, o.sample_rate, o.num_objects
        ),
        None => println!("ufence options in force: (detector not started: disabled)"),
    }
    println!(
        "{rounds} interleaved rounds of {ops} alloc/free pairs per thread; sizes 8..=512 B; \
         1 in 4 held in a {RING}-slot ring\n"
    );
    println!("| workload | plain ns/pair (median) | guarded ns/pair (median) | ratio of medians | median of per-round ratios | min round ratio | max round ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let st = bench(1, rounds, ops, &sizes);
    let r1 = report("1 thread", &st);
    let mt = bench(2, rounds, ops, &sizes);
    let r2 = report("2 threads (wall ns per pair per thread)", &mt);
    let s = ufence::stats();
    println!(
        "\nufence counters at the end: total allocations {}, total frees {}, currently allocated {}, \
         skipped (capacity) {}, total bugs {}",
        s.total_allocations,
        s.total_frees,
        s.currently_allocated,
        s.skipped_capacity,
        s.total_bugs
    );
    let worst = r1.max(r2);
    println!(
        "target guarded/plain <= 1.005 (ratio of medians): {} (worst {worst:.4})",
        if worst <= 1.005 { "met" } else { "NOT met" }
    );
}
