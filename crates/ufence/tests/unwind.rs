//! The fast unwinder (cached CFI rules, `ufence::unwind`) against libgcc's, which it replaces
//! on the sampled path: the same frames from C at -O0/-O2 with and without frame pointers, C++,
//! Rust, through the C library, through a signal frame and from a fault's registers; a clean
//! fallback where its rules do not apply; a clean end on a corrupt stack.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use ufence::stack;
use ufence::unwind::{Step, Walker};

/// The tests share the give-up counter and the fault handler: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Two walks of one stack: the fast one's frames, libgcc's, and a number (fast walks given up
/// meanwhile, or the faulting instruction).
type Seen<N> = Mutex<Option<(Vec<usize>, Vec<usize>, N)>>;

/// What the callback saw.
static SEEN: Seen<u64> = Mutex::new(None);

#[inline(never)]
extern "C" fn compare_here() {
    let entry = stack::approx_sp();
    let before = stack::fast_walks_given_up();
    let fast = stack::capture(entry);
    let gave_up = stack::fast_walks_given_up() - before;
    let slow = stack::capture_libgcc(entry);
    *SEEN.lock().unwrap() = Some((fast.frames().to_vec(), slow.frames().to_vec(), gave_up));
}

fn take_seen() -> (Vec<usize>, Vec<usize>, u64) {
    SEEN.lock().unwrap().take().expect("the callback ran")
}

fn build(src: &str, out: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    let cc =
        ufence_testkit::require_command(compiler, if compiler == "g++" { "g++" } else { "gcc" });
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unwind");
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join(out);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/unwind")
        .join(src);
    let st = Command::new(cc)
        .args(flags)
        .args(["-g", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "{compiler} {flags:?} {src:?} failed");
    so
}

type Chain = unsafe extern "C" fn(i32, extern "C" fn());

/// Loads `so` and returns its `chain` (the library stays loaded: later tests reuse addresses).
fn chain_of(so: &Path) -> Chain {
    let path = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: dlopen/dlsym with valid strings; `chain` has the Chain signature in both sources.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!h.is_null(), "dlopen {so:?}");
        let f = libc::dlsym(h, c"chain".as_ptr());
        assert!(!f.is_null());
        std::mem::transmute::<*mut libc::c_void, Chain>(f)
    }
}

fn module_of(pc: usize) -> String {
    ufence::sys::module_of(pc)
        .map(|(_, n)| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn same_frames_through(src: &str, out: &str, compiler: &str, flags: &[&str]) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let so = build(src, out, compiler, flags);
    let chain = chain_of(&so);
    // SAFETY: chain calls back compare_here, then returns.
    unsafe { chain(3, compare_here) };
    let (fast, slow, gave_up) = take_seen();
    assert_eq!(fast, slow, "{out}: fast frames differ from libgcc's");
    assert_eq!(gave_up, 0, "{out}: the fast walk gave up");
    // The walk went through the library and the C library's qsort, and on out of both to this
    // test's own frames.
    let modules: Vec<String> = fast.iter().map(|&pc| module_of(pc)).collect();
    let lib = so.to_str().unwrap();
    assert!(
        modules.iter().filter(|m| *m == lib).count() >= 4,
        "{modules:?}"
    );
    if src.ends_with(".c") {
        assert!(modules.iter().any(|m| m.contains("libc.so")), "{modules:?}");
    }
    let last_lib = modules.iter().rposition(|m| m == lib).unwrap();
    assert!(
        fast.len() > last_lib + 3,
        "the walk stopped in the library: {modules:?}"
    );
}

#[test]
fn c_o0() {
    same_frames_through("chain.c", "c-O0.so", "gcc", &["-O0"]);
}
#[test]
fn c_o0_with_frame_pointers() {
    same_frames_through(
        "chain.c",
        "c-O0-fp.so",
        "gcc",
        &["-O0", "-fno-omit-frame-pointer"],
    );
}
#[test]
fn c_o2() {
    same_frames_through("chain.c", "c-O2.so", "gcc", &["-O2"]);
}
#[test]
fn c_o2_without_frame_pointers() {
    same_frames_through(
        "chain.c",
        "c-O2-nofp.so",
        "gcc",
        &["-O2", "-fomit-frame-pointer"],
    );
}
#[test]
fn c_o2_with_frame_pointers() {
    same_frames_through(
        "chain.c",
        "c-O2-fp.so",
        "gcc",
        &["-O2", "-fno-omit-frame-pointer"],
    );
}
#[test]
fn cplusplus_o2() {
    same_frames_through("chain.cc", "cc-O2.so", "g++", &["-O2"]);
}
#[test]
fn cplusplus_o0() {
    same_frames_through("chain.cc", "cc-O0.so", "g++", &["-O0"]);
}

#[inline(never)]
fn rust_level(n: u32) -> u32 {
    if n == 0 {
        compare_here();
        0
    } else {
        std::hint::black_box(rust_level(n - 1)) + 1
    }
}

#[test]
fn rust_frames() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::hint::black_box(rust_level(5));
    let (fast, slow, gave_up) = take_seen();
    assert_eq!(fast, slow);
    assert_eq!(gave_up, 0);
    // Six rust_level frames, then the test harness's and the thread's start.
    assert!(fast.len() >= 10, "{}", fast.len());
}

/// A library built without unwind tables: the fast walk cannot go through it, hands the walk
/// to libgcc (counted), and the frames are libgcc's.
#[test]
fn falls_back_where_there_are_no_unwind_tables() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let so = build(
        "chain.c",
        "c-O2-notables.so",
        "gcc",
        &[
            "-O2",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
    );
    let chain = chain_of(&so);
    // SAFETY: as above.
    unsafe { chain(2, compare_here) };
    let (fast, slow, gave_up) = take_seen();
    assert_eq!(fast, slow);
    assert_eq!(
        gave_up, 1,
        "the fast walk should have handed over to libgcc"
    );
    assert!(!fast.is_empty());
}

extern "C" fn on_usr1(_: i32) {
    compare_here();
}

/// A capture inside a signal handler crosses the kernel's signal frame: the fast walk hands it
/// to libgcc, which steps through `__restore_rt` to the interrupted code.
#[test]
fn through_a_signal_frame() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: installs a plain handler for SIGUSR1 and raises it on this thread.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        libc::raise(libc::SIGUSR1);
    }
    let (fast, slow, gave_up) = take_seen();
    assert_eq!(fast, slow);
    assert_eq!(gave_up, 1);
    // Past the signal frame: raise's caller, this test, is on the stack.
    let me = through_a_signal_frame as *const () as usize;
    assert!(
        fast.iter().any(|&pc| pc > me && pc < me + 4096),
        "{fast:x?}"
    );
}

static FAULT_SEEN: Seen<usize> = Mutex::new(None);

extern "C" fn on_segv(_: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: SA_SIGINFO handler arguments: a siginfo and a ucontext.
    let (addr, pc, sp, bp) = unsafe {
        let uc = &*(ctx as *const libc::ucontext_t);
        let g = &uc.uc_mcontext.gregs;
        (
            (*info).si_addr() as usize,
            g[libc::REG_RIP as usize] as usize,
            g[libc::REG_RSP as usize] as usize,
            g[libc::REG_RBP as usize] as usize,
        )
    };
    let mut fast = stack::Stack::EMPTY;
    stack::capture_from_fault(&mut fast, pc, sp, bp, true);
    let mut slow = stack::Stack::EMPTY;
    stack::capture_from_fault_libgcc(&mut slow, pc);
    *FAULT_SEEN.lock().unwrap() = Some((fast.frames().to_vec(), slow.frames().to_vec(), pc));
    // SAFETY: opens the page the test protected, so that the access completes.
    unsafe {
        libc::mprotect(
            (addr & !4095) as *mut _,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
}

type FaultIn = unsafe extern "C" fn(*mut u8, i32);

/// A fault's access stack starts at the faulting instruction, from the registers the kernel
/// saved, and matches libgcc's walk through the signal frame.
#[test]
fn from_a_fault() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (out, flags) in [("f-O2.so", &["-O2"][..]), ("f-O0.so", &["-O0"][..])] {
        let so = build("chain.c", out, "gcc", flags);
        let path = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
        // SAFETY: dlopen/dlsym/mmap/sigaction with valid arguments; fault_in writes one byte of
        // the page, which the handler opens.
        unsafe {
            let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
            let f: FaultIn = std::mem::transmute(libc::dlsym(h, c"fault_in".as_ptr()));
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_segv as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO;
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGSEGV, &act, &mut old);
            let before = stack::fast_walks_given_up();
            f(page, 2);
            assert_eq!(
                stack::fast_walks_given_up(),
                before,
                "{out}: fast walk gave up"
            );
            libc::sigaction(libc::SIGSEGV, &old, std::ptr::null_mut());
            assert_eq!(*page.add(3), 1);
            libc::munmap(page.cast(), 4096);
        }
        let (fast, slow, pc) = FAULT_SEEN.lock().unwrap().take().unwrap();
        assert_eq!(fast, slow, "{out}");
        assert_eq!(fast[0], pc);
        // fault_in three times, then this test.
        assert!(fast.len() >= 5);
        assert_eq!(module_of(fast[2]), so.to_str().unwrap());
    }
}

#[inline(never)]
fn corrupt_walk(words: &mut [usize; 1024]) -> usize {
    let code = [
        corrupt_walk as *const () as usize,
        rust_level as *const () as usize,
        compare_here as *const () as usize,
        libc::qsort as *const () as usize,
    ];
    let base = words.as_ptr() as usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for w in words.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *w = match seed % 4 {
            // Return addresses into real code, stack addresses here and anywhere, junk.
            0 => code[(seed >> 8) as usize % 4] + (seed >> 16) as usize % 64,
            1 => base + (seed >> 8) as usize % (8 * 1024),
            2 => (seed >> 3) as usize,
            _ => 0xdead_beef,
        };
    }
    let mut longest = 0;
    for (i, &pc) in code.iter().enumerate() {
        for bp in [0, base + 64 * i, usize::MAX - 7] {
            let mut w = Walker::new(pc + 7, base + 8 * i, bp).expect("on this thread's stack");
            let mut n = 0;
            while let Step::Frame { .. } = w.step() {
                n += 1;
                assert!(n < 100_000, "the walk does not end");
            }
            longest = longest.max(n);
        }
    }
    longest
}

/// A stack of garbage (return addresses into real code, pointers into the stack, junk) ends
/// the walk cleanly: no fault, no endless loop.
#[test]
fn corrupt_stack_ends_cleanly() {
    let mut words = [0usize; 1024];
    let n = corrupt_walk(&mut words);
    std::hint::black_box(&words);
    assert!(n >= 1);
}

/// Forgetting the rules (what `dlclose` does under the preload) empties the cache, and the
/// next walk fills it again with the same frames.
#[test]
fn forgetting_rules_refills_the_same() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::hint::black_box(rust_level(2));
    let (first, _, _) = take_seen();
    assert!(ufence::unwind::cached_rules() > 0);
    ufence::unwind::forget();
    assert_eq!(ufence::unwind::cached_rules(), 0);
    std::hint::black_box(rust_level(2));
    let (again, slow, gave_up) = take_seen();
    assert_eq!(again, slow);
    assert_eq!(gave_up, 0);
    assert_eq!(first.len(), again.len());
    assert!(ufence::unwind::cached_rules() > 0);
}
