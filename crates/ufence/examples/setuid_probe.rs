//! A program built with `Guarded` that prints the options ufence started with and its uids:
//! the setuid test installs a copy setuid root and runs it as an ordinary user, whose
//! environment must not steer it.

use std::alloc::System;
use std::fmt::Write as _;

#[global_allocator]
static A: ufence::Guarded<System> = ufence::Guarded::new(System);

fn main() {
    // The first allocation starts ufence.
    let v: Vec<u8> = std::hint::black_box(vec![1; 64]);
    drop(v);
    let mut text = ufence::fmt::BufWriter::<2048>::new();
    match ufence::options_in_force() {
        Some(o) => {
            let _ = o.write_all(&mut text);
        }
        None => {
            let _ = text.write_str("(ufence not started)");
        }
    }
    // SAFETY: getuid/geteuid cannot fail.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    println!("uid={uid} euid={euid}");
    println!("{}", String::from_utf8_lossy(text.as_bytes()));
}
