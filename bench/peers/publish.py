#!/usr/bin/env python3
"""Writes sections 4 and 5 of BENCHMARKS.md from the results of a full bench/peers.sh run.

usage: publish.py RESULTS_DIR BENCHMARKS_MD

RESULTS_DIR holds cost.json, cost.md, catches.tsv, catches.md and meta.txt (bench/peers/results/).
The sections go between the markers <!-- peers:begin --> and <!-- peers:end -->, appended at the
end of the file the first time; nothing outside the markers is touched. Every number in the text
is computed from the results, so a rerun rewrites the text consistently.
"""
import collections
import json
import math
import os
import re
import sys

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"


def main():
    R, md_path = sys.argv[1], sys.argv[2]
    meta = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(R, "meta.txt")) if "=" in l)
    cost = json.load(open(os.path.join(R, "cost.json")))
    cost_md = open(os.path.join(R, "cost.md")).read().strip()
    catches_md = open(os.path.join(R, "catches.md")).read().strip()
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(R, "catches.tsv"))][1:]
    text = section4(meta, cost, cost_md) + "\n\n" + section5(meta, rows, catches_md)

    md = open(md_path).read()
    block = f"{BEGIN}\n{text.strip()}\n{END}"
    if BEGIN in md and END in md:
        md = md[: md.index(BEGIN)] + block + md[md.index(END) + len(END):]
    else:
        md = md.rstrip("\n") + "\n\n" + block + "\n"
    open(md_path, "w").write(md)


def gm(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def section4(meta, cost, cost_md):
    W = cost["workloads"]
    K = cost["K"]
    n_wl = len(W)

    def ratios(var, key="wall_ratio"):
        return {wl: d[var][key] for wl, d in W.items() if d[var].get(key) is not None and not d[var].get("status")}

    def fails(var):
        return {wl: d[var]["status"] for wl, d in W.items() if d[var].get("status")}

    def fmt_range(var, key="wall_ratio"):
        r = ratios(var, key)
        if not r:
            return "–"
        lo, hi = min(r, key=r.get), max(r, key=r.get)
        if len(r) == 1:
            return f"{r[lo]:.2f}× ({lo})"
        return f"{r[lo]:.2f}× ({lo}) to {r[hi]:.2f}× ({hi}), geometric mean {gm(list(r.values())):.2f}×"

    loads = cost["loads"]
    load_txt = "; ".join(" ".join(l) for l in loads)
    ef, du = fails("efence"), fails("duma")

    def fail_summary(f):
        c = collections.Counter(re.sub(r" \(.*", "", s) for s in f.values())
        return ", ".join(f"{v} × {k}" for k, v in c.most_common())

    s = []
    P = s.append
    P("## 4. Against the peers: cost")
    P("")
    P("`bench/peers.sh` measures ufence and the tools a user would pick instead, on the same machine in the "
      "same run: the workloads of section 3 plus two more real programs, under ufence at three settings, "
      "under Scudo (LLVM's hardened allocator, which carries GWP-ASan) at three settings, and under Electric "
      "Fence and DUMA, with plain glibc as the baseline. valgrind memcheck is in section 5 only (detection).")
    P("")
    P("```sh")
    P("bench/peers.sh            # full: cost (K=5) and scoreboard (N=20), then writes sections 4-5, bench/peers/cost.svg, bench/peers/results/ (~35 min)")
    P("bench/peers.sh --quick    # CI smoke test (K=1, small sizes, N=3); writes only bench/out/peers/ (under a minute)")
    P("bench/peers.sh --publish  # rewrites these sections and the plot from bench/peers/results/")
    P("```")
    P("")
    P("It installs what is missing with `apt-get` (`jq sqlite3 g++ perl valgrind libclang-rt-19-dev "
      "electric-fence duma`). Raw data of the run below: `bench/peers/results/` (`cost.tsv`: every run's wall "
      "time, CPU time, peak RSS and status; `catches.tsv`: every bug run's outcome and the tool's own words).")
    P("")
    P(f"**This run:** {meta.get('commit')} (libufence.so sha256 `{meta.get('libufence_sha256')}`), "
      f"started {meta.get('started')}, cost part {int(meta.get('cost_s', 0)) // 60} min, scoreboard "
      f"{int(meta.get('catches_s', 0)) // 60} min. Peers: Scudo and GWP-ASan from {meta.get('scudo')}, "
      f"{meta.get('efence')}, {meta.get('duma')}, {meta.get('valgrind')}; {meta.get('jq')}, g++ {meta.get('gxx')}, "
      f"SQLite {meta.get('sqlite3')}, Python {meta.get('python')}, Perl {meta.get('perl')}; glibc {meta.get('glibc')}, "
      f"Linux {meta.get('kernel')}, `vm.max_map_count` = {meta.get('max_map_count')}. The machine is the 2-core VM "
      f"of section 3, shared with another developer's builds: load average (1, 5, 15 min) before each round and "
      f"at the end: {load_txt}. Wall times are therefore noisy (see the plain min–max column); ratios within "
      f"about 10 % of each other are not distinguishable here, and the instruction counts of section 1 are "
      f"the measure for ufence's small costs.")
    P("")
    P("| variant | how it is run |")
    P("| --- | --- |")
    P("| plain glibc | nothing preloaded |")
    P("| ufence defaults | `LD_PRELOAD=libufence.so` (`sample_interval=100` ms, `max_overhead=50`) |")
    P("| ufence sample_rate=100 | `UFENCE_OPTIONS=sample_rate=100` (interval sampling stays on) |")
    P("| ufence sample_rate=1 | `UFENCE_OPTIONS=sample_rate=1`: every allocation while slots last, the cost governor at its default 50 % |")
    P("| Scudo, GWP-ASan off | `LD_PRELOAD=…/libclang_rt.scudo_standalone-x86_64.so SCUDO_OPTIONS=GWP_ASAN_Enabled=false`: the allocator alone, to separate its cost from GWP-ASan's |")
    P("| Scudo+GWP-ASan defaults | the same preload, no options: GWP-ASan samples 1 in 5000 into 16 slots |")
    P("| Scudo+GWP-ASan SampleRate=1 | `SCUDO_OPTIONS=GWP_ASAN_SampleRate=1:GWP_ASAN_MaxSimultaneousAllocations=256` (ufence has 255 slots) |")
    P(f"| Electric Fence | `LD_PRELOAD=/usr/lib/libefence.so.0 EF_ALLOW_MALLOC_0=1`, defaults otherwise; address space limited to "
      f"{cost['as_kb'] // (1024 * 1024)} GiB (`ulimit -v`), {cost['peer_timeout']:g} s timeout |")
    P(f"| DUMA | `LD_PRELOAD=/usr/lib/libduma.so.0 DUMA_DISABLE_BANNER=1`, defaults otherwise; the same limits |")
    P("")
    P("Workloads: the seven of section 3 at the same full sizes (`bench/workloads/`), plus")
    P("")
    P("| workload | what it does |")
    P("| --- | --- |")
    P("| `jq` | `jq -f bench/peers/workloads/report.jq` on a generated array of 12,000 user records (4.8 MB, "
      "`bench/peers/workloads/gen_json.py`): filter, compute per-record totals, `group_by`, `sort_by`, reshape |")
    P("| `g++` | `g++ -std=c++17 -O2 -c bench/peers/workloads/compile_me.cc`: a unit heavy on templates and standard "
      "containers (maps, unordered maps, deques of `std::function`, `std::variant`, a Dijkstra over `std::set`). "
      "The preload is inherited by `cc1plus` and `as`, whose allocations dominate |")
    P("")
    mult = {wl: cost["peer_timeout"] / d["plain"]["wall"] for wl, d in W.items() if d["plain"].get("wall")}
    lo_wl = min(mult, key=mult.get)
    tmo_txt = (f"{mult[lo_wl]:.0f}× the plain time of {lo_wl}, over {sorted(mult.values())[1]:.0f}× that of the "
               "others") if len(mult) > 1 else ""
    P("Method:")
    P("")
    P(f"- {K} round{'s' if K > 1 else ''}; each round runs every workload in every variant, the order of the variants rotated per "
      "round and per workload (as `bench/run.sh`). Hash seeds fixed (`PYTHONHASHSEED=0`, `PERL_HASH_SEED=0`).")
    P("- Each run goes through `bench/peers/runrss.c`, a small C version of `bench/timeit.py` (same arguments) "
      "that also prints the peak RSS from `wait4`'s `ru_maxrss`, which covers the children the program waited "
      "for (`cc1plus` under `g++`). It is C because `ru_maxrss` keeps the high-water mark of the memory image "
      "the process had before `exec`: a child forked from Python starts with 5 MiB of the interpreter counted "
      "(8 MiB if vforked), one forked from the C program with about 1 MiB. `bench/timeit.py` is unchanged.")
    P("- A peer that crashed, timed out or exited non-zero on a workload is not run on it again in later "
      "rounds: that failure is its result (its cell names it). Electric Fence and DUMA get the address-space "
      f"limit and a {cost['peer_timeout']:g}-second timeout ({tmo_txt}); the others {cost['timeout']:g} s.")
    P("- Every ufence run must exit 0 without a report (the workloads are clean): the script fails otherwise. "
      f"All {sum(d[v]['n_ok'] for d in W.values() for v in ('uf-default', 'uf-rate100', 'uf-rate1'))} ufence "
      "runs of this table did.")
    P("")
    P("![Wall time and peak RSS of each tool relative to plain glibc, one row per workload](bench/peers/cost.svg)")
    P("")
    P(cost_md)
    P("")
    P("**Instruction counts** are not rerun here: section 1 measured ufence at defaults at 7.9 extra "
      "instructions per malloc/free pair through the preload (glibc: 147) and +0.4 % (python) to +3.5 % "
      "(strings) instructions on whole workloads. That is the resolution the wall times above lack.")
    P("")
    P("Reading the numbers:")
    P("")
    def paired_gm(var):
        return gm([d[var]["paired"] for d in W.values() if d[var].get("paired") and not d[var].get("status")])

    def extra_mib(var):
        xs = sorted((d[var]["rss_kb"] - d["plain"]["rss_kb"]) / 1024 for d in W.values()
                    if d[var].get("rss_kb") and d["plain"].get("rss_kb") and not d[var].get("status"))
        return xs[len(xs) // 2] if xs else 0.0

    P(f"- **ufence defaults**: {fmt_range('uf-default')}; the paired ratios' geometric mean is "
      f"{paired_gm('uf-default'):.2f}×. That is within the noise of this machine, as expected from section 1's "
      f"instruction counts (+0.4 % to +3.5 %). Peak RSS {fmt_range('uf-default', 'rss_ratio')}: ufence "
      f"adds about the same memory to every program (median {extra_mib('uf-default'):.1f} MiB at defaults, "
      f"{extra_mib('uf-rate1'):.1f} MiB with the pool in full use at sample_rate=1: the object pages, canaries "
      "and metadata of a fixed pool), so the ratio is large only for programs of a few MiB.")
    r100, r1 = ratios("uf-rate100"), ratios("uf-rate1")
    worse = [w for w in r100 if w in r1 and r100[w] > 1.3 * r1[w] and r100[w] > 1.3]
    P(f"- **ufence sample_rate=100**: {fmt_range('uf-rate100')}. **sample_rate=1**: {fmt_range('uf-rate1')}. "
      "Both are held by the governor (`max_overhead=50`: ufence may spend half of the wall time on sampled "
      "allocations), so even sampling every allocation stays near or under 2× on programs that do nothing but "
      "allocate."
      + (f" sample_rate=100 costs more than sample_rate=1 on {', '.join(f'{w} ({r100[w]:.2f}× vs {r1[w]:.2f}×)' for w in worse)}. "
         "The reason is the covered-site check (KFENCE's `skip_covered_thresh`): once the pool is more than 75 % "
         "full of long-lived objects, a sampled allocation from a site that already has an object in the pool is "
         "skipped, and to know its site ufence first unwinds the stack. At 1 in 100 that is an unwind for every "
         "100th allocation, most of them then skipped, until the governor's budget is used up. sample_rate=1 is "
         "test mode, which has no covered check: it fills the pool, then looks at the full pool only every 64 "
         "allocations. Checked by hand on c0b54ff: perl-hashes at sample_rate=100 took 3.8 s, with "
         "`skip_covered_thresh=100` 1.95 s, as at sample_rate=1 (plain 2.0 s on the loaded machine), and "
         "callgrind puts 43 % of its instructions in `_Unwind_Backtrace` called from `alloc_slow`. A cheaper "
         "site key for this check (a few return addresses by frame pointer), or a back-off after a covered "
         "skip, would remove that cost." if worse else ""))
    noisy = {wl: d["plain"] for wl, d in W.items() if d["plain"].get("wall_min") and d["plain"]["wall_max"] > 1.8 * d["plain"]["wall_min"]}
    if noisy:
        P("- **Noise**: " + "; ".join(f"{wl}'s plain runs ranged from {p['wall_min']:.2f} to {p['wall_max']:.2f} s" for wl, p in noisy.items())
          + (". prodcons is bimodal here: its four threads either run in parallel (CPU time about twice the wall "
             "time) or, when the other developer's build holds a core, one after another (CPU time equal to wall "
             "time, and faster, with less lock contention), whatever the variant. Its ratios, and any ratio "
             "below 1, are noise" if "prodcons" in noisy else "") + "; the paired ratios and the instruction "
          "counts are the better guide there.")
    sc, sg, sg1 = ratios("scudo"), ratios("scudo-gwp"), ratios("scudo-gwp-rate1")
    both = [wl for wl in sc if wl in sg]
    share = gm([sg[w] / sc[w] for w in both]) if both else None
    P(f"- **Scudo, GWP-ASan off**: {fmt_range('scudo')}; **with GWP-ASan at its defaults**: {fmt_range('scudo-gwp')}. "
      f"GWP-ASan's own share (GWP-ASan on / off, geometric mean) is {share:.2f}×: the cost of Scudo+GWP-ASan is "
      "Scudo's hardened allocator replacing glibc's, not the sampling. A program cannot have GWP-ASan this way "
      "without also switching allocators; ufence keeps glibc's allocator." if share else "")
    f1 = fails("scudo-gwp-rate1")
    P(f"- **Scudo+GWP-ASan SampleRate=1**: {fmt_range('scudo-gwp-rate1')}"
      + (f"; failed on {', '.join(f'{k} ({v})' for k, v in f1.items())}" if f1 else "")
      + ". GWP-ASan has no cost cap: every allocation that finds a free slot pays for its guard-page mapping "
      "changes and stack collection, which is what ufence's governor bounds.")
    P(f"- **Electric Fence** failed on {len(ef)} of {n_wl} workloads ({fail_summary(ef)})"
      + (f" and ran {fmt_range('efence')} where it finished" if ratios("efence") else "")
      + f". **DUMA** failed on {len(du)} of {n_wl} ({fail_summary(du)})"
      + (f" and ran {fmt_range('duma')} where it finished" if ratios("duma") else "")
      + ". Both put every allocation on its own page(s) with an `mprotect`ed neighbour: each allocation splits "
      f"a mapping, and at `vm.max_map_count` = {meta.get('max_map_count')} mappings `mprotect` fails with ENOMEM "
      "(both then abort with their own message: `mprotect() failed`), or the work of a system call per "
      "allocation runs past the timeout. Python is the exception for Electric Fence: its object allocator takes "
      "arenas from `mmap` and calls `malloc` rarely. DUMA stops Python at start-up (`Fatal Python error: error "
      "reading frozen getpath.py`).")
    return "\n".join(s)


def section5(meta, rows, catches_md):
    # rows: bug tool run exit survived caught kind detail
    by = collections.defaultdict(list)
    for r in rows:
        by[r[0], r[1]].append(r)
    N = max(len(v) for (b, t), v in by.items() if t == "ufence")

    def rate(bug, tool):
        v = by.get((bug, tool), [])
        return (sum(int(x[5]) for x in v), len(v))

    def tot(bugs, tool):
        c = n = 0
        for b in bugs:
            x, y = rate(b, tool)
            c, n = c + x, n + y
        return f"{c}/{n}"

    bugs = []
    for r in rows:
        if r[0] not in bugs:
            bugs.append(r[0])
    real = [b for b in bugs if b != "clean"]

    def pct(bug, tool):
        c, n = rate(bug, tool)
        return c / n if n else None

    wins = [b for b in real if pct(b, "ufence") is not None and pct(b, "gwp-asan") is not None
            and pct(b, "ufence") - pct(b, "gwp-asan") >= 0.25]
    losses = [b for b in real if pct(b, "ufence") is not None and pct(b, "gwp-asan") is not None
              and pct(b, "gwp-asan") - pct(b, "ufence") >= 0.25]
    uf_missed = [b for b in real if pct(b, "ufence") == 0]
    uf_partial = [b for b in real if pct(b, "ufence") is not None and 0 < pct(b, "ufence") < 1]

    def lst(bs, tools=("ufence", "gwp-asan")):
        return ", ".join(f"`{b}` (" + " vs ".join(f"{rate(b, t)[0]}/{rate(b, t)[1]}" for t in tools) + ")"
                         for b in bs) or "none"

    small_writes = [b for b in real if re.fullmatch(r"overflow-write-(13|24|100)-by1", b)] + \
        [b for b in ("strcpy-off-by-one", "memalign64-write", "memalign4096-write", "cxx-array-overflow") if b in real]
    slack_reads = [b for b in real if re.fullmatch(r"overflow-read-(13|24|100)-by1|overflow-read-(24|100)-by8", b)] + \
        [b for b in ("memalign64-read",) if b in real]
    under_reads = [b for b in real if b.startswith("underflow-read-")]
    big_over = [b for b in real if re.fullmatch(r"overflow-(read|write)-(13|24|100)-by64|overflow-(read|write)-64-by1", b)]
    frees = [b for b in real if b in ("uaf-read", "uaf-write", "realloc-old-read", "realloc-old-write", "double-free",
                                      "invalid-free", "cxx-uaf-read", "cxx-uaf-write", "cxx-delete-twice")]

    # The most common wording of each tool for a few bugs.
    def wording(bug, tool):
        c = collections.Counter(x[7] for x in by.get((bug, tool), []) if x[5] == "1" and len(x) > 7 and x[7])
        return c.most_common(1)[0][0] if c else "(not caught)"

    s = []
    P = s.append
    P("## 5. Against the peers: what each catches")
    P("")
    P(f"Small programs in `bench/peers/bugs/`, each doing exactly one heap bug and then printing `survived` and "
      f"exiting 0, so a silent miss is told apart from a detection. Built with `-O0 -fno-builtin` (the bad access "
      f"stays as written; `memcpy`/`strcpy` are calls into the C library). Each is run {N} times under each tool "
      "in its most thorough mode; a run counts as caught when the tool itself says so:")
    P("")
    P("| tool | mode | caught when |")
    P("| --- | --- | --- |")
    P("| glibc alone | nothing preloaded: what the program gets for free | glibc's own abort message (`free(): double free detected in tcache 2`, `free(): invalid pointer`, …) or SIGSEGV |")
    P("| ufence | `UFENCE_OPTIONS=sample_rate=1:max_overhead=0` (every allocation sampled, no cost cap), `on_error=continue` | a `BUG: UFENCE: <kind> in …` report; the kind is shown |")
    P("| Scudo+GWP-ASan | `SCUDO_OPTIONS=GWP_ASAN_SampleRate=1:GWP_ASAN_MaxSimultaneousAllocations=256` (not recoverable: it crashes after its report) | `*** GWP-ASan detected a memory error ***` and its kind, or Scudo's own `Scudo ERROR:` |")
    P("| Electric Fence | `EF_ALIGNMENT=1 EF_PROTECT_FREE=1 EF_ALLOW_MALLOC_0=1`: byte-exact (the default alignment of 16 misses overflows into that slack), freed memory never reused | SIGSEGV/SIGBUS, or `ElectricFence Aborting: …` |")
    P("| DUMA | defaults (already byte-exact for these sizes, freed memory never reused, no man's land checked at free) | SIGSEGV/SIGBUS, or `DUMA Aborting: …` |")
    P("| valgrind memcheck | `valgrind --tool=memcheck --leak-check=no` | `Invalid read/write of size …`, `Invalid free()` |")
    P("")
    P("Kinds: ufence's own (`oob-read` = out-of-bounds read, `uaf-write` = use-after-free write, `corruption` = "
      "canary damaged, found at free, …); GWP-ASan's (`overflow`, `underflow`, `uaf`, `double-free`, "
      "`invalid-free`: it does not say read or write); valgrind's from its wording (`oob-` when the address is "
      "before or after a block, `uaf-` when inside a freed block, `invalid-` elsewhere); Electric Fence and DUMA "
      "either fault (`SIGSEGV`) or abort with a message (`bad-free`: \"address not from malloc()\", "
      "`corruption`: \"detected overwrite of no mans land\"); glibc alone by its own abort message.")
    P("")
    P(catches_md)
    P("")
    P("What each tool says (the most frequent wording, addresses elided):")
    P("")
    P("| bug | ufence | Scudo+GWP-ASan | valgrind memcheck |")
    P("| --- | --- | --- | --- |")
    for b in ("uaf-read", "realloc-old-write", "invalid-free", "double-free", "overflow-write-13-by1", "underflow-read-13-by1",
              "memcpy-write"):
        if b in real:
            P(f"| `{b}` | " + " | ".join(wording(b, t).replace("|", "\\|") for t in ("ufence", "gwp-asan", "valgrind")) + " |")
    P("")
    T = ("glibc", "ufence", "gwp-asan", "efence", "duma", "valgrind")
    NAMES = {"glibc": "glibc alone", "ufence": "ufence", "gwp-asan": "GWP-ASan", "efence": "Electric Fence",
             "duma": "DUMA", "valgrind": "valgrind"}
    uaf_like = set(frees) | {"malloc0-write", "malloc0-read"}
    writes = [b for b in real if b not in uaf_like and ("write" in b or b in (
        "strcpy-off-by-one", "cxx-array-overflow", "cxx-array-underflow"))]
    reads = [b for b in real if b not in uaf_like and b not in writes]
    in_page_reads = [b for b in reads if pct(b, "ufence") == 0 and pct(b, "gwp-asan") == 0]
    coin_reads = [b for b in reads if b not in in_page_reads and b != "memalign4096-underflow"]
    gwp_zero_writes = [b for b in writes if pct(b, "gwp-asan") == 0]

    def pc(bs, t):
        c = sum(rate(b, t)[0] for b in bs)
        n = sum(rate(b, t)[1] for b in bs)
        return f"{c}/{n} ({100 * c / n:.0f} %)" if n else "–"

    P("Reading the scoreboard (ufence and GWP-ASan sample every allocation here; in production each samples a "
      "tiny fraction, so these are the chances of a catch *given that the object was sampled*):")
    P("")
    P(f"- **All {len(real)} bugs**: " + ", ".join(f"{NAMES[t]} {pc(real, t)}" for t in T) + ".")
    P(f"- **Every write, every time, for ufence** ({len(writes)} rows: overflows and underflows of 1 to 64 bytes, "
      f"writes done by `memcpy` and `strcpy`, past aligned allocations and past `new[]`): ufence {pc(writes, 'ufence')}, "
      f"GWP-ASan {pc(writes, 'gwp-asan')}. A write that leaves a sampled object either faults on a guard page "
      "(`oob-write`) or lands on the object's own page outside it, where ufence's canary is, and is found when "
      "the object is freed (`corruption`, with the damaged bytes marked). GWP-ASan has no canary and catches a "
      "write only when it crosses into a guard page. It places an object at the left or the right end of its "
      "page, but a right-placed one stays 16-byte aligned, so up to 15 bytes after it are never checked (seen "
      "here: `malloc(13)` right-placed 16 bytes before the guard), and after a left-placed object the whole rest "
      "of the page is unchecked. So it caught none of "
      + ", ".join(f"`{b}`" for b in gwp_zero_writes)
      + " (0/20 each, ufence 20/20), and the others only when the object happened to sit on the side the write "
      "left by. This is the expected win of the canary, and it holds on every such row.")
    P(f"- **Reads: half the time for both, or never** ({len(reads)} rows): ufence {pc(reads, 'ufence')}, GWP-ASan "
      f"{pc(reads, 'gwp-asan')}. A read leaves no trace, so only a fault catches it: both tools catch it when "
      "the object sits against the guard on the side the read leaves by, about half the time "
      f"({', '.join(f'`{b}`' for b in coin_reads)}: ufence {pc(coin_reads, 'ufence')}, GWP-ASan "
      f"{pc(coin_reads, 'gwp-asan')}), always for a 4096-aligned object, which can only be left-placed "
      f"(`memalign4096-underflow`), and never when the read stays on the object's page, in the alignment slack "
      f"or the unused rest ({', '.join(f'`{b}`' for b in in_page_reads)}: 0 for both). KFENCE has the same "
      "blind spot. Electric Fence (`EF_ALIGNMENT=1`), DUMA and valgrind catch those: they end every object "
      "exactly at a guard or track every byte.")
    P("- **Where ufence loses** to GWP-ASan by 25 points or more on a row: "
      + (lst(losses) + ". The mechanism is the same coin for both (left or right placement); 20 fair coin "
         "flips land outside 6–14 only 4 % of the time, and GWP-ASan's flips are not fair: its generator is an "
         "xorshift seeded with the time in seconds plus the thread id, so runs started within the same second "
         "with neighbouring pids draw correlated sides (its underflow writes, caught only when left-placed, "
         f"came out {pc([b for b in writes if b.startswith('underflow-write')], 'gwp-asan')}). No row shows a "
         "detection mechanism that GWP-ASan has and ufence lacks." if losses else "none."))
    P(f"- **Use-after-free, realloc's old pointer, double and invalid free** ({len(frees)} rows): "
      + ", ".join(f"{NAMES[t]} {pc(frees, t)}" for t in T[1:])
      + ". The difference is in the words (table above): GWP-ASan describes a use-after-free at a non-zero "
      "offset with a warning that it may be an overflow and places the address \"N bytes to the right of\" the "
      "allocation, and an interior free as \"Invalid (Wild) Free … N bytes to the right of\"; Electric Fence "
      "calls a double free \"address not from malloc()\"; ufence names the access (read or write) and the offset "
      "inside the object.")
    if uf_missed:
        P(f"- **Rows ufence never caught**: {', '.join(f'`{b}`' for b in uf_missed)}. "
          + ("For `malloc(0)`, ufence does not sample zero-size requests at all (`alloc_slow` counts them as "
             "incompatible, like requests over a page), so they go to glibc, which hands out 16 usable bytes: "
             "nothing to catch. GWP-ASan samples them but turns them into 1-byte allocations (its reports say "
             "\"1-byte allocation\"), so `p[0]` is in bounds for it too. Electric Fence, DUMA and valgrind catch "
             "both rows. Sampling `malloc(0)` as a zero-byte object (right-placed, any access faults; left-placed, "
             "a write hits the canary) would close them. "
             if any(b.startswith("malloc0") for b in uf_missed) else "")
          + "The others are the reads that stay on the page (above).")
    P("- **Faults inside the C library** are caught (`memcpy-write`, `memcpy-read`), but on c0b54ff the title "
      "names no function: `BUG: UFENCE: out-of-bounds write in libc.so.6+0x16d87e`. The faulting frame is "
      "glibc's `__memmove_avx_unaligned_erms`, a local symbol that Debian's stripped `libc.so.6` does not "
      "export, and the caller (`main`) is only frame #1. Titling such a report by the first frame that has a "
      "name, or by the exported name the address falls in, would read better.")
    P(f"- **The page-per-allocation tools** catch more overflows than either sampler. Electric Fence with "
      f"`EF_ALIGNMENT=1` faults on the first byte past any `malloc` object but guards only the end "
      f"(underflow writes and reads {pc([b for b in real if b.startswith('underflow-')], 'efence')}; "
      "`EF_PROTECT_BELOW=1` swaps the two sides), and it misses a write 1 byte past `posix_memalign` objects, "
      "whose end it cannot put at the guard. DUMA also finds underflow writes at `free` through its no man's "
      f"land (as ufence's canary) but no underflow read ({pc(under_reads, 'duma')}). Section 4 shows why "
      "neither is an option outside a test: they crash or time out on most real programs. valgrind catches "
      f"every row ({pc(real, 'valgrind')}), at a cost not measured here (its manual says memcheck runs programs "
      "20 to 30 times slower).")
    P("- **glibc alone** aborts on double frees and on writes that damage its chunk headers: underflows of "
      "1 and 8 bytes, overflows of 8 bytes into the next chunk's size. Its messages do not point at the bug: "
      "an underflow by 1 byte says `double free or corruption (out)`, an overflow says `malloc(): corrupted "
      "top size`, at the next allocation.")
    P("- **The control row** (an in-bounds write) was clean under every tool: "
      + ", ".join(f"{NAMES[t]} {rate('clean', t)[0]}/{rate('clean', t)[1]}" for t in T) + ".")
    return "\n".join(s)


if __name__ == "__main__":
    main()
