//! `ufence demo`: a small workload with two planted heap bugs, run under libufence.so so that
//! a new user sees real reports within seconds of building.
//!
//! The workload is this same binary re-executed with a hidden verb: it needs no compiler and
//! exercises the real preload exactly as any C program would, through `malloc` and `free`.

use crate::preload;
use std::process::Command;

pub const WORKLOAD_VERB: &str = "__demo-workload";

pub fn main(lib: Option<&str>) -> Result<u8, String> {
    let lib = preload::find(lib)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    println!(
        "ufence demo: a session cache with two planted bugs, run under {}",
        lib.display()
    );
    println!("  bug 1: a closed session is read after free (use-after-free)");
    println!("  bug 2: a name is copied into a buffer one byte too small (off-by-one)");
    println!("  options: sample_rate=1 max_overhead=0 skip_covered_thresh=100 (sample every");
    println!("           allocation whatever the cost; the production default samples one");
    println!("           allocation every 100 ms and costs nothing measurable)\n");
    let mut cmd = Command::new(&exe);
    cmd.arg(WORKLOAD_VERB).arg("all");
    cmd.env_remove("UFENCE_OPTIONS");
    let every = [
        ("sample_rate", "1"),
        ("max_overhead", "0"),
        ("skip_covered_thresh", "100"),
    ];
    let every: Vec<(String, String)> = every
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    preload::apply(&mut cmd, &lib, &every)?;
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run the workload: {e}"))?;
    // The workload narrates on stderr, so its lines and ufence's reports keep their order.
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stderr}");
    let titles: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("BUG: UFENCE: "))
        .collect();
    let uaf = titles.iter().any(|t| t.starts_with("use-after-free"));
    let off_by_one = titles
        .iter()
        .any(|t| t.starts_with("out-of-bounds write") || t.starts_with("memory corruption"));
    println!();
    for t in &titles {
        println!("caught: {t}");
    }
    if uaf && off_by_one && out.status.success() {
        println!(
            "ufence demo: both bugs caught, and the program ran to its end (on_error=continue)"
        );
        Ok(0)
    } else {
        println!(
            "ufence demo: FAILED to catch both bugs (workload {})",
            out.status
        );
        Ok(1)
    }
}

/// A session as a C program would lay it out.
#[repr(C)]
struct Session {
    id: u64,
    user: [u8; 24],
    expires: u64,
}

extern "C" {
    fn malloc(n: usize) -> *mut u8;
    fn free(p: *mut u8);
}

#[inline(never)]
fn open_session(id: u64) -> *mut Session {
    // SAFETY: malloc returns memory for one Session or null (checked).
    unsafe {
        let s = malloc(std::mem::size_of::<Session>()) as *mut Session;
        assert!(!s.is_null());
        s.write(Session {
            id,
            user: *b"alice\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            expires: 3600,
        });
        s
    }
}

#[inline(never)]
fn close_session(s: *mut Session) {
    // SAFETY: s came from open_session.
    unsafe { free(s.cast()) }
}

#[inline(never)]
fn session_expiry(s: *const Session) -> u64 {
    // SAFETY: deliberately not: this is the planted use-after-free.
    unsafe { std::ptr::read_volatile(&(*s).expires) }
}

#[inline(never)]
fn copy_name(name: &[u8]) -> *mut u8 {
    // SAFETY: deliberately not: the buffer has no room for the terminating NUL (the planted
    // off-by-one); the copy itself is in bounds.
    unsafe {
        let p = malloc(name.len());
        assert!(!p.is_null());
        std::ptr::copy_nonoverlapping(name.as_ptr(), p, name.len());
        std::ptr::write_volatile(p.add(name.len()), 0);
        p
    }
}

/// The workload itself, run under the preload by `main`.
pub fn workload(bug: &str) -> Result<u8, String> {
    if bug == "uaf" || bug == "all" {
        let s = open_session(7);
        close_session(s);
        eprintln!(
            "workload: session 7 expires in {}s (read after close)",
            session_expiry(s)
        );
    }
    if bug == "off-by-one" || bug == "all" {
        let name = copy_name(b"service-account-");
        eprintln!("workload: copied a 16-byte name");
        // SAFETY: name came from malloc in copy_name.
        unsafe { free(name) };
    }
    Ok(0)
}
