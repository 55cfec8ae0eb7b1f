#!/usr/bin/env python3
"""The scoreboard of bench/peers.sh: runs every bug program of bench/peers/bugs N times under
every tool in its most thorough mode and counts how often each tool catches the bug, and how.

usage: catches.py --bin DIR --out DIR --n N [--valgrind-n N] [--valgrind-rows all|first-per-class] [--jobs J]
                  --ufence SO --scudo SO --efence SO --duma SO

DIR holds the compiled bug programs (bench/peers.sh builds them). Writes OUT/catches.tsv (one
line per run: its outcome and the first lines of its stderr are in OUT/catch-logs/) and
OUT/catches.md (the tables). Detection is decided from what each tool itself prints or does:

  glibc     nothing preloaded: glibc's own checks (an abort with its message) or a SIGSEGV/SIGBUS
  ufence    a "BUG: UFENCE: <kind> in" line (sample_rate=1:max_overhead=0, on_error=continue)
  gwp-asan  Scudo with GWP-ASan sampling every allocation: "*** GWP-ASan detected a memory
            error ***" followed by its kind, or a "Scudo ERROR:" of Scudo's own checks
  efence    a SIGSEGV/SIGBUS, or "ElectricFence Aborting: <why>"
  duma      a SIGSEGV/SIGBUS, or "DUMA Aborting: <why>"
  valgrind  memcheck's "Invalid read|write of size", "Invalid free()"

A run that ends in some other way (another signal, a timeout, a non-zero exit) without those
counts as missed and is listed in the notes. Runs go J at a time (timing does not matter here).
"""
import argparse
import collections
import concurrent.futures
import os
import re
import subprocess
import sys

# id, group, description, argv (program and arguments)
BUGS = []


def bug(bid, group, desc, *argv):
    BUGS.append((bid, group, desc, list(argv)))


bug("clean", "control", "no bug: in-bounds write to malloc(13) (control row: any catch is a false positive)",
    "oob", "13", "12", "w")
for direction in ("overflow", "underflow"):
    for rw in ("write", "read"):
        for size in (13, 24, 100):
            for by in (1, 8, 64):
                off = size - 1 + by if direction == "overflow" else -by
                bug(f"{direction}-{rw}-{size}-by{by}", f"heap {direction} {rw}",
                    f"malloc({size}), {rw} {by} B {'past the end' if direction == 'overflow' else 'before the start'} (p[{off}])",
                    "oob", str(size), str(off), rw[0])
        if direction == "overflow":
            bug(f"overflow-{rw}-64-by1", f"heap {direction} {rw}",
                f"malloc(64) (a multiple of 16: no alignment slack), {rw} 1 B past the end (p[64])",
                "oob", "64", "64", rw[0])
bug("uaf-read", "use-after-free", "free(malloc(24)), then read p[12]", "uaf", "24", "r")
bug("uaf-write", "use-after-free", "free(malloc(24)), then write p[12]", "uaf", "24", "w")
bug("realloc-old-read", "use-after-free", "realloc(malloc(24), 1000), then read through the old pointer",
    "realloc_old", "r")
bug("realloc-old-write", "use-after-free", "realloc(malloc(24), 1000), then write through the old pointer",
    "realloc_old", "w")
bug("double-free", "bad free", "free(p) twice, p = malloc(24)", "double_free")
bug("invalid-free", "bad free", "free(p + 8), p = malloc(24) (interior pointer)", "invalid_free")
bug("memcpy-write", "inside libc", "memcpy 24 B into malloc(16): 8 B overflow written by libc", "libc_memcpy", "w")
bug("memcpy-read", "inside libc", "memcpy 24 B out of malloc(16): 8 B overflow read by libc", "libc_memcpy", "r")
bug("strcpy-off-by-one", "inside libc", "strcpy of a 13-character string into malloc(13): its NUL lands 1 B past",
    "libc_strcpy")
bug("memalign64-write", "aligned / zero-size", "posix_memalign(64, 100), write p[100] (1 B past)",
    "memalign", "64", "100", "100", "w")
bug("memalign64-read", "aligned / zero-size", "posix_memalign(64, 100), read p[100] (1 B past)",
    "memalign", "64", "100", "100", "r")
bug("memalign4096-write", "aligned / zero-size", "posix_memalign(4096, 100), write p[100] (1 B past)",
    "memalign", "4096", "100", "100", "w")
bug("memalign4096-underflow", "aligned / zero-size", "posix_memalign(4096, 100), read p[-1]",
    "memalign", "4096", "100", "-1", "r")
bug("malloc0-write", "aligned / zero-size", "p = malloc(0), write p[0]", "malloc0", "w")
bug("malloc0-read", "aligned / zero-size", "p = malloc(0), read p[0]", "malloc0", "r")
# Objects over a page (issue 13): 10000 bytes (three pages, the last partial), 64 KiB.
for rw in ("write", "read"):
    bug(f"large-overflow-{rw}-10000-by1", "large objects",
        f"malloc(10000), {rw} 1 B past the end (p[10000])", "oob", "10000", "10000", rw[0])
    bug(f"large-underflow-{rw}-10000-by1", "large objects",
        f"malloc(10000), {rw} 1 B before the start (p[-1])", "oob", "10000", "-1", rw[0])
    bug(f"large-overflow-{rw}-10000-by3000", "large objects",
        f"malloc(10000), {rw} 3000 B past the end (p[12999], past its last page)", "oob", "10000", "12999", rw[0])
    bug(f"large-overflow-{rw}-65536-by1", "large objects",
        f"malloc(65536), {rw} 1 B past the end (p[65536])", "oob", "65536", "65536", rw[0])
    bug(f"large-uaf-{rw}", "large objects", f"free(malloc(10000)), then {rw} p[5000]", "uaf", "10000", rw[0])
bug("large-memalign8192-read", "large objects", "posix_memalign(8192, 10000), read p[10000] (1 B past)",
    "memalign", "8192", "10000", "10000", "r")
bug("cxx-uaf-read", "C++ new/delete", "delete of a 40-byte object, then read a member", "cpp", "uaf-read")
bug("cxx-uaf-write", "C++ new/delete", "delete of a 40-byte object, then write a member", "cpp", "uaf-write")
bug("cxx-delete-twice", "C++ new/delete", "delete the same object twice", "cpp", "delete-twice")
bug("cxx-array-overflow", "C++ new/delete", "new int[25] (100 B), write a[25]", "cpp", "array-overflow")
bug("cxx-array-underflow", "C++ new/delete", "new int[25] (100 B), write a[-1]", "cpp", "array-underflow")
bug("cxx-new-array-delete", "C++ mismatch", "new int[25], released by delete (not delete[])", "cpp", "new-array-delete")
bug("cxx-new-free", "C++ mismatch", "new Session, released by free()", "cpp", "new-free")
bug("cxx-malloc-delete", "C++ mismatch", "malloc(100), released by delete", "cpp", "malloc-delete")
bug("leak-overflow-13-by2", "never freed", "malloc(13), write p[14], never freed, normal exit", "leak")
bug("free-stack", "never on the heap", "free() of a stack buffer", "nonheap", "stack")
bug("free-static", "never on the heap", "free() of a static array", "nonheap", "static")

TOOLS = ["glibc", "ufence", "gwp-asan", "efence", "duma", "valgrind"]
TOOL_TITLE = {
    "glibc": "glibc alone",
    "ufence": "ufence",
    "gwp-asan": "Scudo+GWP-ASan",
    "efence": "Electric Fence",
    "duma": "DUMA",
    "valgrind": "valgrind memcheck",
}

SIG = {134: "abort", 132: "SIGILL", 135: "SIGBUS", 136: "SIGFPE", 139: "SIGSEGV", 124: "timeout"}


def tool_env(tool, a):
    """(environment additions, command prefix) of a tool in its most thorough mode."""
    if tool == "ufence":
        return {"LD_PRELOAD": a.ufence, "UFENCE_OPTIONS": "sample_rate=1:max_overhead=0"}, []
    if tool == "gwp-asan":
        return {"LD_PRELOAD": a.scudo,
                "SCUDO_OPTIONS": "GWP_ASAN_SampleRate=1:GWP_ASAN_MaxSimultaneousAllocations=256"
                                 ":dealloc_type_mismatch=true"}, []
    if tool == "efence":
        # EF_ALIGNMENT=1: byte-exact overflow detection (the default aligns sizes up to 16 B and
        # misses overflows into that slack); EF_PROTECT_FREE=1: freed memory is never reused.
        return {"LD_PRELOAD": a.efence, "EF_ALLOW_MALLOC_0": "1", "EF_ALIGNMENT": "1",
                "EF_PROTECT_FREE": "1"}, []
    if tool == "duma":
        # DUMA's defaults are already its thorough mode here (byte-exact alignment for odd
        # sizes, freed memory never reused, no man's land checked at free).
        return {"LD_PRELOAD": a.duma, "DUMA_DISABLE_BANNER": "1"}, []
    if tool == "valgrind":
        return {}, ["valgrind", "--tool=memcheck", "--leak-check=no"]
    return {}, []


def glibc_label(msg):
    """A short kind for one of glibc's own abort messages: its words, as they do not always say
    what happened ("double free or corruption (out)" for a write before an object)."""
    msg = msg.strip()
    if "double free detected in tcache" in msg:
        return "double free (tcache)"
    return re.sub(r"^[a-z_]+\(\): ", "", msg)


def classify(tool, rc, err):
    """(caught, kind) of one run from its exit code and stderr."""
    sig = SIG.get(rc, f"exit {rc}" if rc < 128 else f"signal {rc - 128}")
    if tool == "ufence":
        kinds = re.findall(r"BUG: UFENCE: (.+?) in ", err)
        if kinds:
            k = kinds[0]
            k = (k.replace("out-of-bounds ", "oob-").replace("use-after-free ", "uaf-")
                 .replace("memory corruption", "corruption").replace(" ", "-"))
            return True, k
        return False, sig if rc else ""
    if tool == "gwp-asan":
        m = re.search(r"\*\*\* GWP-ASan detected a memory error \*\*\*\n(.+?) at 0x", err)
        if m:
            k = m.group(1)
            k = re.sub(r" \(warning:.*", "", k)
            return True, {"Buffer Overflow": "overflow", "Buffer Underflow": "underflow",
                          "Use After Free": "uaf", "Double Free": "double-free",
                          "Invalid (Wild) Free": "invalid-free"}.get(k, k.lower().replace(" ", "-"))
        m = re.search(r"Scudo ERROR: ([a-z ]+)", err)
        if m:
            w = m.group(1)
            k = ("chunk-state" if "chunk state" in w else "misaligned-ptr" if "misaligned" in w
                 else "chunk-header" if "header" in w else w.strip().replace(" ", "-"))
            return True, "scudo:" + k
        return False, sig if rc else ""
    if tool in ("efence", "duma"):
        m = re.search(r"(?:ElectricFence|DUMA) Aborting: (.*)", err)
        if m:
            w = m.group(1)
            k = ("double-free" if "already freed" in w and "not from" not in w
                 else "bad-free" if "not from" in w
                 else "corruption" if "no mans land" in w
                 else re.sub(r"[0-9a-fx]{6,}", "", w)[:30].strip())
            return True, k
        if rc in (139, 135):
            return True, "SIGSEGV" if rc == 139 else "SIGBUS"
        return False, sig if rc else ""
    if tool == "valgrind":
        m = re.search(r"== (Invalid (read|write) of size \d+|Invalid free\(\)[^\n]*)\n(?:==\d+==\s+at [^\n]*\n|==\d+==\s+by [^\n]*\n)*==\d+==\s+Address [^\n]* is ([^\n]*)", err)
        if m:
            what, rw, where = m.group(1), m.group(2), m.group(3)
            if rw:
                k = ("uaf-" if "free'd" in where else "oob-" if ("after" in where or "before" in where)
                     else "invalid-") + rw
            else:
                k = "double-free" if "free'd" in where else "invalid-free"
            return True, k
        if re.search(r"== Invalid (read|write|free)", err):
            return True, "invalid"
        if re.search(r"== Mismatched free\(\) / delete / delete \[\]", err):
            return True, "mismatch"
        return False, sig if rc else ""
    # glibc alone
    m = re.search(r"^(free\(\)|double free|malloc\(\)|realloc\(\)|munmap_chunk\(\)|corrupted|malloc_consolidate\(\))[^\n]*", err, re.M)
    if m:
        return True, glibc_label(m.group(0))
    if rc in (139, 135):
        return True, "SIGSEGV" if rc == 139 else "SIGBUS"
    return False, sig if rc else ""


def detail(tool, rc, err):
    """The line in which the tool describes the error (addresses and thread ids elided), for
    showing each tool's exact wording."""
    d = ""
    if tool == "ufence":
        m = re.search(r"^(Out-of-bounds|Use-after-free|Corrupted memory|Invalid free|Double free|Invalid read|Invalid write|Alloc-dealloc mismatch)[^\n]*", err, re.M)
        d = m.group(0) if m else ""
    elif tool == "gwp-asan":
        m = re.search(r"\*\*\* GWP-ASan detected a memory error \*\*\*\n([^\n]*)", err) or re.search(r"Scudo ERROR:[^\n]*", err)
        d = (m.group(1) if m.lastindex else m.group(0)) if m else ""
    elif tool in ("efence", "duma"):
        m = re.search(r"(?:ElectricFence|DUMA) Aborting:[^\n]*", err)
        d = m.group(0) if m else ("SIGSEGV (no message)" if rc == 139 else "SIGBUS (no message)" if rc == 135 else "")
    elif tool == "valgrind":
        m = re.search(r"== ((?:Invalid|Mismatched) [^\n]*)\n(?:==\d+==\s+(?:at|by) [^\n]*\n)*==\d+==\s+(Address [^\n]*)", err)
        d = f"{m.group(1)}; {m.group(2)}" if m else ""
    else:
        m = re.search(r"^(free\(\)|double free|malloc\(\)|realloc\(\)|munmap_chunk\(\)|corrupted|malloc_consolidate\(\))[^\n]*", err, re.M)
        d = m.group(0) if m else ("SIGSEGV" if rc == 139 else "")
    d = re.sub(r"(\(warning: [^.]*\.)[^)]*\)", r"\1 …)", d)
    d = re.sub(r"0x[0-9a-fA-F]+", "0x…", d)
    d = re.sub(r"\b[0-9a-f]{8,}\b", "…", d)
    d = re.sub(r"thread \d+", "thread N", d)
    return d.replace("\t", " ").strip()[:300]


def run_one(job):
    bid, tool, k, argv, a = job
    env = dict(os.environ)
    add, prefix = tool_env(tool, a)
    env.update(add)
    cmd = prefix + [os.path.join(a.bin, argv[0])] + argv[1:]
    timeout = 120 if tool == "valgrind" else 30
    try:
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        rc = p.returncode if p.returncode >= 0 else 128 - p.returncode
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace")
    caught, kind = classify(tool, rc, err)
    survived = "survived" in out
    log = os.path.join(a.out, "catch-logs", f"{bid}.{tool}.{k}.err")
    with open(log, "w") as f:
        f.write(err[:20000])
    return bid, tool, k, rc, survived, caught, kind, detail(tool, rc, err)


def main():
    ap = argparse.ArgumentParser()
    for o in ("bin", "out", "ufence", "scudo", "efence", "duma"):
        ap.add_argument("--" + o, required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--valgrind-n", type=int, default=None)
    ap.add_argument("--valgrind-rows", choices=("all", "first-per-class"), default="all",
                    help="first-per-class: valgrind only on the first bug of each class (quick mode)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated bug ids (for debugging)")
    ap.add_argument("--summarize-only", action="store_true",
                    help="rewrite OUT/catches.md (and glibc's kinds in OUT/catches.tsv) from OUT/catches.tsv without running")
    a = ap.parse_args()
    if a.summarize_only:
        rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(a.out, "catches.tsv"))][1:]
        res = []
        for bid, t, k, rc, sv, c, kind, det in rows:
            if t == "glibc" and c == "1" and det and det != "SIGSEGV":
                kind = glibc_label(det)
            res.append((bid, t, int(k), int(rc), sv == "1", c == "1", kind, det))
        n = max(k for _, t, k, *_ in res if t != "valgrind")
        vn = max(k for _, t, k, *_ in res if t == "valgrind")
        ids = {r[0] for r in res}
        summarize(a, [b for b in BUGS if b[0] in ids], res, n, vn)
        return
    vn = a.n if a.valgrind_n is None else a.valgrind_n
    os.makedirs(os.path.join(a.out, "catch-logs"), exist_ok=True)
    bugs = [b for b in BUGS if not a.only or b[0] in a.only.split(",")]
    runs = {t: (vn if t == "valgrind" else a.n) for t in TOOLS}
    vrows = set()
    for b in bugs:
        if a.valgrind_rows == "all" or not any(x[1] == b[1] for x in bugs if x[0] in vrows):
            vrows.add(b[0])
    jobs = []
    # Round-major order, so that every tool's runs are spread over the whole scoreboard.
    for k in range(1, max(runs.values()) + 1):
        for bid, _, _, argv in bugs:
            for t in TOOLS:
                if k <= runs[t] and (t != "valgrind" or bid in vrows):
                    jobs.append((bid, t, k, argv, a))
    res = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        for i, r in enumerate(ex.map(run_one, jobs)):
            res.append(r)
            if (i + 1) % 200 == 0:
                print(f"  catches: {i + 1}/{len(jobs)} runs", file=sys.stderr)
    summarize(a, bugs, res, a.n, vn)


def summarize(a, bugs, res, N, vn):
    """Writes OUT/catches.tsv and OUT/catches.md from the runs' results."""
    with open(os.path.join(a.out, "catches.tsv"), "w") as f:
        f.write("bug\ttool\trun\texit\tsurvived\tcaught\tkind\tdetail\n")
        for bid, t, k, rc, sv, c, kind, det in res:
            f.write(f"{bid}\t{t}\t{k}\t{rc}\t{int(sv)}\t{int(c)}\t{kind}\t{det}\n")

    caught = collections.defaultdict(collections.Counter)  # (bug, tool) -> kind counts
    missed = collections.defaultdict(collections.Counter)  # (bug, tool) -> outcome counts
    total = collections.Counter()
    for bid, t, k, rc, sv, c, kind, det in res:
        total[bid, t] += 1
        if c:
            caught[bid, t][kind] += 1
        else:
            missed[bid, t][kind or ("exit 0" if sv else "exit 0, no 'survived'")] += 1

    def cell(bid, t):
        n = total[bid, t]
        if n == 0:
            return "–"
        cs = caught[bid, t]
        got = sum(cs.values())
        s = f"{got}/{n}"
        if cs:
            if len(cs) == 1:
                s += " " + next(iter(cs))
            else:
                s += " (" + ", ".join(f"{kk} {v}" for kk, v in cs.most_common()) + ")"
        if bid == "clean" and got:
            s = "**" + s + " FALSE**"
        return s

    out = []
    P = out.append
    P(f"Each bug program run {N} times under each tool"
      + (f" ({vn} under valgrind, which does not sample: its result is the same every run)" if vn != N else "")
      + "; a cell gives the runs in which the tool caught the bug and the kind it reported"
      " (several kinds: how many runs each). `glibc alone` is the program without any tool.\n")
    # Summary by group.
    groups = []
    for b in bugs:
        if b[1] not in groups:
            groups.append(b[1])
    P("**By class** (caught runs / runs, summed over the rows of the class; rows in the class in parentheses)\n")
    P("| class | " + " | ".join(TOOL_TITLE[t] for t in TOOLS) + " |")
    P("| --- |" + " ---: |" * len(TOOLS))
    allc, alln = collections.Counter(), collections.Counter()
    for g in groups:
        rows = [b[0] for b in bugs if b[1] == g]
        cells = []
        for t in TOOLS:
            c = sum(sum(caught[r, t].values()) for r in rows)
            n = sum(total[r, t] for r in rows)
            if g != "control":
                allc[t] += c
                alln[t] += n
            pct = f" ({100 * c / n:.0f} %)" if n else ""
            cells.append(f"{c}/{n}{pct}")
        P(f"| {g} ({len(rows)}) | " + " | ".join(cells) + " |")
    P("| **all bugs** | " + " | ".join(
        f"**{allc[t]}/{alln[t]} ({100 * allc[t] / max(alln[t], 1):.0f} %)**" for t in TOOLS) + " |")
    P("")
    P("**Per bug**\n")
    P("| bug | what the program does | " + " | ".join(TOOL_TITLE[t] for t in TOOLS) + " |")
    P("| --- | --- |" + " --- |" * len(TOOLS))
    for bid, g, desc, argv in bugs:
        P(f"| `{bid}` | {desc} | " + " | ".join(cell(bid, t) for t in TOOLS) + " |")
    P("")
    # What the misses were (exit 0 = silently went on; other outcomes named).
    notes = []
    for bid, g, desc, argv in bugs:
        for t in TOOLS:
            m = {k: v for k, v in missed[bid, t].items() if k != "exit 0"}
            if m:
                notes.append(f"`{bid}` under {TOOL_TITLE[t]}: " + ", ".join(f"{k} ×{v}" for k, v in m.items()))
    if notes:
        P("Misses that did not end in a silent `exit 0` (counted as not caught): " + "; ".join(notes) + ".\n")
    with open(os.path.join(a.out, "catches.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
