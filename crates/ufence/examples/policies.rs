//! Evidence for the sampling policies (issue 6): does a long-running process keep sampling
//! after long-lived objects have filled the pool?
//!
//! The workload makes a fixed number of allocations: an eighth from 4 "cache" sites whose
//! objects are kept for the whole run (a growing set of long-lived objects), the rest from 64
//! "request" sites whose objects are freed soon after. One allocation in 1,000 runs a rarely
//! executed path with a planted use-after-free. Each policy runs in its own child process
//! (options are read at start) and reports, per tenth of the run, the pool's occupancy and the
//! samples per 1,000 allocations, and at the end the distinct sites sampled and how many of the
//! planted bugs were caught.
//!
//! `cargo run --release -p ufence --example policies [-- --allocations N]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::Command;
use ufence::Guarded;

#[global_allocator]
static A: Guarded<System> = Guarded::new(System);

const WINDOWS: usize = 10;
const CACHE_SITES: usize = 4;
const REQUEST_SITES: usize = 64;
const RARE_EVERY: u64 = 1000;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// One allocation site per instantiation: each has its own code address, so its own stack.
#[inline(never)]
fn site<const K: usize>(size: usize) -> *mut u8 {
    // SAFETY: a valid non-zero layout; the caller frees with the same layout.
    let p = unsafe { A.alloc(layout(size)) };
    // SAFETY: p has `size` writable bytes.
    unsafe { p.write_bytes(K as u8, size) };
    black_box(p)
}

macro_rules! sites {
    ($($k:literal)*) => { [$(site::<$k> as fn(usize) -> *mut u8,)*] };
}
static SITES: [fn(usize) -> *mut u8; CACHE_SITES + REQUEST_SITES] = sites!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
    62 63 64 65 66 67
);

/// The rarely executed path: a session object read after it was closed.
#[inline(never)]
fn rare_path() -> bool {
    let p = site::<1000>(40);
    let sampled = ufence::owns(p);
    // SAFETY: p came from A with this layout.
    unsafe { A.dealloc(p, layout(40)) };
    // SAFETY: deliberately not: the planted use-after-free.
    black_box(unsafe { std::ptr::read_volatile(p.add(8)) });
    sampled
}

fn workload(allocations: u64) {
    let mut cache: Vec<(*mut u8, usize)> = Vec::with_capacity(allocations as usize / 7);
    let mut requests: Vec<(*mut u8, usize)> = Vec::with_capacity(64);
    let mut sampled_sites = [false; CACHE_SITES + REQUEST_SITES];
    let (mut rng, mut planted, mut rare_sampled) = (0x2545_f491_4f6c_dd1du64, 0u64, 0u64);
    let window = allocations / WINDOWS as u64;
    let mut last = ufence::stats();
    for i in 1..=allocations {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = 16 + (rng >> 40) as usize % 240;
        if i % RARE_EVERY == 0 {
            planted += 1;
            rare_sampled += rare_path() as u64;
        } else if rng % 8 == 0 {
            let s = (rng >> 8) as usize % CACHE_SITES;
            let p = SITES[s](size);
            sampled_sites[s] |= ufence::owns(p);
            cache.push((p, size));
        } else {
            let s = CACHE_SITES + (rng >> 8) as usize % REQUEST_SITES;
            let p = SITES[s](size);
            sampled_sites[s] |= ufence::owns(p);
            requests.push((p, size));
            if requests.len() > 48 {
                let (q, n) = requests.swap_remove((rng >> 20) as usize % requests.len());
                // SAFETY: q came from A with this layout.
                unsafe { A.dealloc(q, layout(n)) };
            }
        }
        if i % window == 0 {
            let now = ufence::stats();
            let slots = ufence::options_in_force().map_or(255, |o| o.num_objects);
            println!(
                "window\t{}\t{}\t{:.2}\t{}",
                i / window,
                now.currently_allocated * 100 / slots,
                (now.total_allocations - last.total_allocations) as f64 * 1000.0 / window as f64,
                now.sample_interval_ms
            );
            last = now;
        }
    }
    let s = ufence::stats();
    println!(
        "total\t{}\t{}\t{}\t{}\t{}",
        sampled_sites.iter().filter(|&&b| b).count(),
        rare_sampled,
        planted,
        s.skipped_covered,
        s.skipped_capacity
    );
    for (p, n) in cache.into_iter().chain(requests) {
        // SAFETY: each came from A with this layout.
        unsafe { A.dealloc(p, layout(n)) };
    }
}

struct Outcome {
    name: &'static str,
    windows: Vec<(u64, f64, u64)>,
    sites: u64,
    rare_sampled: u64,
    planted: u64,
    caught: usize,
    covered: u64,
    seconds: f64,
}

fn run(name: &'static str, options: &str, allocations: u64) -> Outcome {
    let start = std::time::Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("UFENCE_POLICY_CHILD", allocations.to_string())
        .env("UFENCE_OPTIONS", options)
        .output()
        .expect("run child");
    let seconds = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {}\n{stderr}", out.status);
    let mut o = Outcome {
        name,
        windows: Vec::new(),
        sites: 0,
        rare_sampled: 0,
        planted: 0,
        caught: stderr
            .matches("BUG: UFENCE: use-after-free read in ")
            .count(),
        covered: 0,
        seconds,
    };
    for line in stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "window" => o.windows.push((
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )),
            "total" => {
                o.sites = f[1].parse().unwrap();
                o.rare_sampled = f[2].parse().unwrap();
                o.planted = f[3].parse().unwrap();
                o.covered = f[4].parse().unwrap();
            }
            _ => {}
        }
    }
    o
}

fn main() {
    if let Ok(n) = std::env::var("UFENCE_POLICY_CHILD") {
        workload(n.parse().unwrap());
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let allocations: u64 = args
        .iter()
        .position(|a| a == "--allocations")
        .and_then(|i| args.get(i + 1))
        .map_or(25_000_000, |v| v.parse().expect("--allocations N"));
    // The same interval for all; max_overhead=0 so the governor does not confound the policies.
    let base = "sample_interval=1:max_overhead=0";
    let policies = [
        ("fixed", format!("{base}:skip_covered_thresh=100")),
        ("burst=4", format!("{base}:skip_covered_thresh=100:burst=4")),
        ("covered (75 %)", format!("{base}:skip_covered_thresh=75")),
        (
            "adaptive (1..50 ms)",
            format!("{base}:skip_covered_thresh=100:adaptive=1:adaptive_max=50"),
        ),
        (
            "covered + adaptive",
            format!("{base}:skip_covered_thresh=75:adaptive=1:adaptive_max=50"),
        ),
    ];
    let outcomes: Vec<Outcome> = policies
        .iter()
        .map(|(name, opts)| run(name, opts, allocations))
        .collect();

    println!(
        "{allocations} allocations: 1/8 kept for the whole run from {CACHE_SITES} sites, \
         7/8 freed soon from {REQUEST_SITES} sites, 1 in {RARE_EVERY} a planted use-after-free \
         on a rare path; sample_interval=1 ms, 255 slots.\n"
    );
    let header: String = (1..=WINDOWS).map(|w| format!(" {w} |")).collect();
    let rule: String = (1..=WINDOWS).map(|_| " ---: |").collect();
    println!("**Pool occupancy (% of slots) at the end of each tenth of the run**\n");
    println!("| policy |{header}\n| --- |{rule}");
    for o in &outcomes {
        let cells: String = o.windows.iter().map(|w| format!(" {} |", w.0)).collect();
        println!("| {} |{cells}", o.name);
    }
    println!("\n**Samples per 1,000 allocations in each tenth**\n");
    println!("| policy |{header}\n| --- |{rule}");
    for o in &outcomes {
        let cells: String = o.windows.iter().map(|w| format!(" {:.2} |", w.1)).collect();
        println!("| {} |{cells}", o.name);
    }
    println!("\n**Totals**\n");
    println!(
        "| policy | distinct sites sampled (of {}) | planted bugs sampled / caught (of {}) | skipped as covered | interval at the end (ms) | run time (s) |",
        CACHE_SITES + REQUEST_SITES,
        outcomes[0].planted
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for o in &outcomes {
        println!(
            "| {} | {} | {} / {} | {} | {} | {:.1} |",
            o.name,
            o.sites,
            o.rare_sampled,
            o.caught,
            o.covered,
            o.windows.last().map_or(0, |w| w.2),
            o.seconds
        );
    }
}
