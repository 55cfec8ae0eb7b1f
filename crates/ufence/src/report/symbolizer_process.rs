//! Inlined functions in reports, from a symbolizer process, as the sanitizers get them: at report
//! time the frames go to `ufence __symbolize-frames` (the `ufence` binary, which reads DWARF's
//! inlining records through blazesym), and its answer names, for each frame, the functions
//! inlined at that address (innermost first) and the source position in the function that holds
//! them. Without it, or when it fails, is garbage, or is late, the report keeps the in-process
//! `.debug_line` symbolization (`crate::symbolize`), which cannot see inlining.
//!
//! Frames go as module path, build-id and ELF address (the JSON report's raw frames), not as
//! pid and addresses: the helper then needs no access to this process (a child cannot read its
//! parent's memory under Yama's ptrace scope, and `/proc/PID/map_files` needs privilege),
//! checks the build-id so that a binary rebuilt since start is not misread, and finds separate
//! debug files by build-id exactly as `ufence symbolize` does offline.
//!
//! Runs inside the report (possibly a SIGSEGV handler): the request, the answer and its index
//! live in one static area taken with a flag, the process is started with the raw `clone` of
//! `sys::with_helper` (no SIGCHLD to the program, no allocation), the exchange is bounded by
//! `symbolizer_timeout`, and the helper is always reaped, killed first if late.
//!
//! Protocol (one request line per frame, `\t`-separated):
//! `INDEX OFFSET_HEX BUILD_ID_HEX|- MODULE_PATH`; the answer starts with `ufence-frames 1`, has
//! one line per function, `INDEX I|F LINE FILE FUNCTION` (`I` inlined, innermost first, then
//! `F` the function that holds them; LINE 0 and FILE empty when unknown), grouped by frame, and
//! ends with `end`. Anything else rejects the whole answer.

use crate::fmt::BufWriter;
use crate::stack::MAX_FRAMES;
use crate::symbolize::Symbolizer;
use crate::sys;
use core::cell::UnsafeCell;
use core::ffi::CStr;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

/// Distinct frames one report asks about: its three stacks.
pub const MAX_PCS: usize = 3 * MAX_FRAMES;
const REQUEST: usize = 64 * 1024;
const ANSWER: usize = 128 * 1024;
const MAX_ENTRIES: usize = 2048;

#[derive(Clone, Copy)]
struct Entry {
    inlined: bool,
    line: u32,
    file: (u32, u32),
    function: (u32, u32),
}

const NO_ENTRY: Entry = Entry {
    inlined: false,
    line: 0,
    file: (0, 0),
    function: (0, 0),
};

struct State {
    pcs: [usize; MAX_PCS],
    npcs: usize,
    /// Each pc's entries, `[start, end)` in `entries`.
    ranges: [(u16, u16); MAX_PCS],
    entries: [Entry; MAX_ENTRIES],
    request: [u8; REQUEST],
    answer: [u8; ANSWER],
    path: [u8; 512],
    /// The symbolizer's reaper and pre-exec stacks (see `sys::with_helper`).
    stacks: sys::HelperStacks,
}

struct Area(UnsafeCell<State>);
// SAFETY: the state is only touched by the holder of BUSY.
unsafe impl Sync for Area {}

static AREA: Area = Area(UnsafeCell::new(State {
    pcs: [0; MAX_PCS],
    npcs: 0,
    ranges: [(0, 0); MAX_PCS],
    entries: [NO_ENTRY; MAX_ENTRIES],
    request: [0; REQUEST],
    answer: [0; ANSWER],
    path: [0; 512],
    stacks: [0; 2 * sys::HELPER_STACK],
}));
static BUSY: AtomicBool = AtomicBool::new(false);

/// One function at a frame, as the symbolizer named it.
pub struct Named<'a> {
    /// Demangled, as the symbolizer prints it.
    pub function: &'a [u8],
    /// The source file (empty when unknown) and line (0 when unknown).
    pub file: &'a [u8],
    pub line: u32,
    /// True for a function inlined at this frame; false for the function that holds them.
    pub inlined: bool,
}

/// The symbolizer's answer for one report; gives the static area back when dropped.
pub struct Resolved {
    st: &'static State,
}

impl Drop for Resolved {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

impl Resolved {
    /// What the symbolizer said of `pc`: the inlined functions, innermost first, then the
    /// function holding them. None when it said nothing (then the in-process symbols stand).
    pub fn frames(&self, pc: usize) -> Option<impl Iterator<Item = Named<'_>>> {
        let st = self.st;
        let i = st.pcs[..st.npcs].iter().position(|&p| p == pc)?;
        let (a, b) = st.ranges[i];
        if a == b {
            return None;
        }
        let text = |(s, e): (u32, u32)| &st.answer[s as usize..e as usize];
        Some(
            st.entries[a as usize..b as usize]
                .iter()
                .map(move |e| Named {
                    function: text(e.function),
                    file: text(e.file),
                    line: e.line,
                    inlined: e.inlined,
                }),
        )
    }

    /// The functions inlined at `pc` (innermost first), empty when none or unknown.
    pub fn inlined(&self, pc: usize) -> impl Iterator<Item = Named<'_>> {
        self.frames(pc).into_iter().flatten().filter(|n| n.inlined)
    }

    /// The function holding `pc` (the last, non-inlined entry), when the symbolizer named it.
    pub fn outer(&self, pc: usize) -> Option<Named<'_>> {
        self.frames(pc)?.last().filter(|n| !n.inlined)
    }

    /// Whether the symbolizer answered for `pc` at all.
    pub fn knows(&self, pc: usize) -> bool {
        self.frames(pc).is_some()
    }
}

/// Asks the symbolizer about `pcs` (distinct; at most [`MAX_PCS`] are used). None when there
/// is no symbolizer, it failed, answered garbage or did not answer in time, or another report
/// holds the area.
pub fn resolve(sym: &mut Symbolizer, pcs: &[usize]) -> Option<Resolved> {
    let opts = crate::options_in_force()?;
    if opts.symbolizer.as_bytes() == b"0" || pcs.is_empty() {
        return None;
    }
    if BUSY.swap(true, Ordering::Acquire) {
        return None;
    }
    // From here on the area is ours until `Resolved` (or `Busy`) is dropped.
    struct Busy;
    impl Drop for Busy {
        fn drop(&mut self) {
            BUSY.store(false, Ordering::Release);
        }
    }
    let busy = Busy;
    // SAFETY: BUSY is held: nobody else touches the area.
    let st = unsafe { &mut *AREA.0.get() };
    let errno = sys::errno();
    let ok = run(
        st,
        sym,
        pcs,
        opts.symbolizer.as_bytes(),
        opts.symbolizer_timeout,
    );
    sys::set_errno(errno);
    if !ok {
        return None;
    }
    core::mem::forget(busy);
    Some(Resolved { st })
}

/// The symbolizer's path into `st.path` (NUL-terminated): the option, else the `ufence` beside
/// libufence.so when running as the preload.
fn find_path(st: &mut State, option: &[u8]) -> Option<usize> {
    let mut n = 0;
    let parts: [&[u8]; 2] = if !option.is_empty() {
        [option, b""]
    } else if crate::is_preload() {
        // The link map's name of libufence.so: absolute when preloaded by `ufence run` or by
        // an absolute LD_PRELOAD.
        let (_, lib) = sys::module_of(find_path as *const () as usize)?;
        let lib = lib.to_bytes();
        let slash = lib.iter().rposition(|&c| c == b'/')?;
        [&lib[..slash], b"/ufence"]
    } else {
        return None;
    };
    for part in parts {
        if n + part.len() + 1 >= st.path.len() || part.contains(&0) {
            return None;
        }
        st.path[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    st.path[n] = 0;
    Some(n)
}

fn run(
    st: &mut State,
    sym: &mut Symbolizer,
    pcs: &[usize],
    option: &[u8],
    timeout_ms: u64,
) -> bool {
    let Some(n) = find_path(st, option) else {
        return false;
    };
    let Ok(path) = CStr::from_bytes_with_nul(&st.path[..n + 1]) else {
        return false;
    };
    // SAFETY: access only reads the NUL-terminated path.
    if unsafe { libc::access(path.as_ptr(), libc::X_OK) } != 0 {
        return false;
    }
    st.npcs = pcs.len().min(MAX_PCS);
    st.pcs[..st.npcs].copy_from_slice(&pcs[..st.npcs]);
    st.ranges = [(0, 0); MAX_PCS];
    let mut len = 0;
    for (i, &pc) in st.pcs[..st.npcs].iter().enumerate() {
        let f = sym.lookup(pc);
        if f.module.is_empty() || f.module.iter().any(|&c| c == b'\n' || c == b'\t' || c == 0) {
            continue;
        }
        let mut head = BufWriter::<200>::new();
        let _ = write!(head, "{i}\t{:x}\t", f.offset);
        if f.build_id.is_empty() {
            let _ = head.write_str("-");
        }
        for b in f.build_id {
            let _ = write!(head, "{b:02x}");
        }
        let _ = head.write_str("\t");
        let need = head.as_bytes().len() + f.module.len() + 1;
        if len + need > REQUEST {
            break;
        }
        for part in [head.as_bytes(), f.module, b"\n"] {
            st.request[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
    }
    if len == 0 {
        return false;
    }
    let argv = [
        path.as_ptr(),
        c"__symbolize-frames".as_ptr(),
        core::ptr::null(),
    ];
    // No environment: no LD_PRELOAD (the helper is not watched), no UFENCE_OPTIONS.
    let envp = [core::ptr::null()];
    let deadline = sys::now_ns().saturating_add(timeout_ms.saturating_mul(1_000_000));
    let (request, answer, stacks) = (&st.request[..len], &mut st.answer, &mut st.stacks);
    let got = sys::with_helper(path, &argv, &envp, deadline, stacks, |fd| {
        sys::exchange(fd, request, answer, deadline)
    });
    match got {
        Some(Ok(n)) => parse(st, n),
        _ => false,
    }
}

/// Indexes the answer's first `n` bytes; false (nothing used) unless it is well formed.
fn parse(st: &mut State, n: usize) -> bool {
    let State {
        answer,
        entries,
        ranges,
        npcs,
        ..
    } = st;
    let text = &answer[..n];
    let mut lines = text.split(|&c| c == b'\n');
    if lines.next() != Some(b"ufence-frames 1") {
        return false;
    }
    let mut used = 0usize;
    let mut current: Option<usize> = None;
    let mut ended = false;
    let mut pos = b"ufence-frames 1\n".len();
    for line in lines {
        let start = pos;
        pos += line.len() + 1;
        if ended {
            if !line.is_empty() {
                return false;
            }
            continue;
        }
        if line == b"end" {
            ended = true;
            continue;
        }
        let mut f = line.splitn(5, |&c| c == b'\t');
        let (Some(idx), Some(kind), Some(num), Some(file), Some(function)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return false;
        };
        let (Some(idx), Some(num)) = (number(idx), number(num)) else {
            return false;
        };
        let inlined = match kind {
            b"I" => true,
            b"F" => false,
            _ => return false,
        };
        if idx >= *npcs || used >= MAX_ENTRIES || function.is_empty() || num > u32::MAX as usize {
            return false;
        }
        if current != Some(idx) {
            // Frames come grouped: a frame seen before cannot start again.
            if ranges[idx].1 != 0 {
                return false;
            }
            ranges[idx] = (used as u16, used as u16);
            current = Some(idx);
        }
        let file_start = start + (file.as_ptr() as usize - line.as_ptr() as usize);
        let fn_start = start + (function.as_ptr() as usize - line.as_ptr() as usize);
        entries[used] = Entry {
            inlined,
            line: num as u32,
            file: (file_start as u32, (file_start + file.len()) as u32),
            function: (fn_start as u32, (fn_start + function.len()) as u32),
        };
        used += 1;
        ranges[idx].1 = used as u16;
    }
    ended
}

fn number(t: &[u8]) -> Option<usize> {
    if t.is_empty() || t.len() > 10 {
        return None;
    }
    t.iter().try_fold(0usize, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One function as the tests compare it: name, inlined, file, line.
    type Shown = (String, bool, String, u32);

    fn parsed(answer: &[u8], npcs: usize) -> Option<Vec<Vec<Shown>>> {
        while BUSY.swap(true, Ordering::Acquire) {}
        // SAFETY: the test holds BUSY.
        let st = unsafe { &mut *AREA.0.get() };
        st.npcs = npcs;
        for i in 0..npcs {
            st.pcs[i] = 0x1000 + i;
        }
        st.ranges = [(0, 0); MAX_PCS];
        st.answer[..answer.len()].copy_from_slice(answer);
        let ok = parse(st, answer.len());
        let r = Resolved { st };
        ok.then(|| {
            (0..npcs)
                .map(|i| {
                    r.frames(0x1000 + i)
                        .into_iter()
                        .flatten()
                        .map(|n| {
                            (
                                String::from_utf8_lossy(n.function).into_owned(),
                                n.inlined,
                                String::from_utf8_lossy(n.file).into_owned(),
                                n.line,
                            )
                        })
                        .collect()
                })
                .collect()
        })
    }

    #[test]
    fn a_well_formed_answer_is_indexed() {
        let got = parsed(
            b"ufence-frames 1\n0\tI\t4\tprog.c\taccessor\n0\tF\t9\tprog.c\tmain\n2\tF\t0\t\tstart\nend\n",
            3,
        )
        .expect("accepted");
        assert_eq!(
            got[0],
            vec![
                ("accessor".into(), true, "prog.c".into(), 4),
                ("main".into(), false, "prog.c".into(), 9)
            ]
        );
        assert!(got[1].is_empty());
        assert_eq!(got[2], vec![("start".into(), false, "".into(), 0)]);
    }

    #[test]
    fn garbage_is_rejected_whole() {
        for bad in [
            &b"hello\n"[..],
            b"ufence-frames 1\n0\tF\t9\tprog.c\tmain\n",
            b"ufence-frames 1\n0\tX\t9\tprog.c\tmain\nend\n",
            b"ufence-frames 1\n7\tF\t9\tprog.c\tmain\nend\n",
            b"ufence-frames 1\n0\tF\tnine\tprog.c\tmain\nend\n",
            b"ufence-frames 1\n0\tF\t9\tprog.c\tmain\n1\tF\t9\tp\tm\n0\tF\t1\tp\tm\nend\n",
            b"ufence-frames 1\nend\nmore\n",
            b"",
        ] {
            assert!(parsed(bad, 2).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
