// A Rust program that overflows its stack: std's handler must still print its message when the
// program runs under libufence.so (which installs its own SIGSEGV handler first).
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    std::hint::black_box(&buf);
    recurse(n + 1) + buf[3]
}

fn main() {
    let v: Vec<u8> = vec![1; 100];
    println!("start {}", v.len());
    let h = std::thread::Builder::new().name("deep".into()).spawn(|| recurse(0)).unwrap();
    let _ = h.join();
}
