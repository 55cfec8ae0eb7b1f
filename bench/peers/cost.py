#!/usr/bin/env python3
"""The cost half of bench/peers.sh: runs every workload plain and under ufence and its peers,
K interleaved rounds, and writes the wall time, CPU time and peak RSS of every run.

usage: cost.py --out DIR --runrss BIN --bin DIR --ufence SO --scudo SO --efence SO --duma SO
               [--quick] [--k K] [--timeout S] [--peer-timeout S] [--as-kb N]

Each run goes through bench/peers/runrss (wall, CPU and ru_maxrss from wait4, see runrss.c).
In each round every workload runs in every variant, the variants' order rotated from round to
round and per workload (as bench/run.sh does), so a neighbour's load hurts all variants alike.
Electric Fence and DUMA run under an address-space limit (--as-kb, as `ulimit -v`) and a
shorter timeout (--peer-timeout; in --quick mode every peer gets it): they are expected to crash at the map-count limit or to take
minutes. A peer variant that failed on a workload (crash, timeout, non-zero exit) is not run on
it again in later rounds: its failure is the result. ufence variants always run, and any of
their runs that exits non-zero or prints "BUG: UFENCE" (the workloads are clean, so a report is
a false positive) makes this script exit 1 after writing everything.

Writes DIR/cost.tsv (one line per run), DIR/cost.md (the tables), DIR/cost.json (medians for
plot.py) and every run's stdout/stderr under DIR/logs/.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WL = os.path.join(ROOT, "bench", "workloads")
PWL = os.path.join(ROOT, "bench", "peers", "workloads")
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

VARIANTS = ["plain", "uf-default", "uf-rate100", "uf-rate1", "scudo", "scudo-gwp", "scudo-gwp-rate1",
            "efence", "duma"]
TITLE = {
    "plain": "plain glibc",
    "uf-default": "ufence defaults",
    "uf-rate100": "ufence sample_rate=100",
    "uf-rate1": "ufence sample_rate=1",
    "scudo": "Scudo, GWP-ASan off",
    "scudo-gwp": "Scudo+GWP-ASan defaults",
    "scudo-gwp-rate1": "Scudo+GWP-ASan SampleRate=1",
    "efence": "Electric Fence",
    "duma": "DUMA",
}
SHORT = {
    "plain": "plain",
    "uf-default": "ufence default",
    "uf-rate100": "ufence rate=100",
    "uf-rate1": "ufence rate=1",
    "scudo": "Scudo (no GWP)",
    "scudo-gwp": "Scudo+GWP default",
    "scudo-gwp-rate1": "Scudo+GWP rate=1",
    "efence": "efence",
    "duma": "DUMA",
}
PEER_LIMITED = {"efence", "duma"}


def env_of(variant, a):
    if variant == "uf-default":
        return {"LD_PRELOAD": a.ufence}
    if variant == "uf-rate100":
        return {"LD_PRELOAD": a.ufence, "UFENCE_OPTIONS": "sample_rate=100"}
    if variant == "uf-rate1":
        return {"LD_PRELOAD": a.ufence, "UFENCE_OPTIONS": "sample_rate=1"}
    if variant == "scudo":
        return {"LD_PRELOAD": a.scudo, "SCUDO_OPTIONS": "GWP_ASAN_Enabled=false"}
    if variant == "scudo-gwp":
        return {"LD_PRELOAD": a.scudo}
    if variant == "scudo-gwp-rate1":
        return {"LD_PRELOAD": a.scudo,
                "SCUDO_OPTIONS": "GWP_ASAN_SampleRate=1:GWP_ASAN_MaxSimultaneousAllocations=256"}
    if variant == "efence":
        return {"LD_PRELOAD": a.efence, "EF_ALLOW_MALLOC_0": "1"}
    if variant == "duma":
        return {"LD_PRELOAD": a.duma, "DUMA_DISABLE_BANNER": "1"}
    return {}


def workloads(a):
    """name -> (argv, stdin, description). Sizes as bench/run.sh (full / --quick)."""
    q = a.quick
    w = {
        "trees": ([os.path.join(a.bin, "trees"), "1" if q else "14"], "/dev/null"),
        "prodcons": ([os.path.join(a.bin, "prodcons"), "100000" if q else "1500000"], "/dev/null"),
        "strings": ([os.path.join(a.bin, "strings"), "1" if q else "32"], "/dev/null"),
        "churn": ([os.path.join(a.bin, "churn"), "300000" if q else "3000000"], "/dev/null"),
        "python-dicts": ([PYTHON, os.path.join(WL, "dicts.py"), "1" if q else "3"], "/dev/null"),
    }
    if a.perl:
        w["perl-hashes"] = ([a.perl, os.path.join(WL, "hashes.pl"), "1" if q else "3"], "/dev/null")
    w["sqlite"] = ([a.sqlite, ":memory:"], os.path.join(a.out, "bench.sql"))
    w["jq"] = ([a.jq, "-f", os.path.join(PWL, "report.jq")], os.path.join(a.out, "big.json"))
    # Quick mode compiles the small C++ bug program instead (a tenth of a second).
    src = os.path.join(ROOT, "bench", "peers", "bugs", "cpp.cc") if q else os.path.join(PWL, "compile_me.cc")
    w["g++"] = ([a.gxx, "-std=c++17", "-O2", "-c", src, "-o", os.path.join(a.out, "compile_me.o")], "/dev/null")
    return w


def failure_kind(rc, err, wall, cpu, timeout):
    """A short description of how a run failed, from its status and stderr."""
    if rc == 124:
        return f"timeout >{timeout:g} s"
    e = err
    if "mprotect() failed" in e or "page mappings" in e:
        return "crash: map-count limit"
    if "Cannot allocate memory" in e or "out of memory" in e.lower() or "Out of memory" in e:
        return "out of memory"
    if "Fatal Python error" in e:
        return "Python fatal error at start"
    if "BUG: UFENCE" in e:
        return "ufence report (false positive)"
    if rc >= 128:
        sig = {134: "SIGABRT", 132: "SIGILL", 135: "SIGBUS", 139: "SIGSEGV", 137: "SIGKILL"}.get(rc, f"signal {rc - 128}")
        return f"crash: {sig}"
    return f"exit {rc}"


def summarize(a, rows, W, K, timeout, ptimeout, loads, elapsed):
    """Writes OUT/cost.json and OUT/cost.md from the runs (workload, variant, round, wall, cpu,
    exit, maxrss_kb, status)."""
    # Summaries.
    def vals(wl, var, idx):
        return [r[idx] for r in rows if r[0] == wl and r[1] == var and r[7] == "ok"]

    def status_of(wl, var):
        bad = [r[7] for r in rows if r[0] == wl and r[1] == var and r[7] != "ok"]
        return bad[0] if bad else None

    summary = {"K": K, "quick": a.quick, "variants": VARIANTS, "titles": SHORT, "workloads": {},
               "loads": loads, "elapsed_s": elapsed, "timeout": timeout, "peer_timeout": ptimeout,
               "as_kb": a.as_kb}
    for wl in W:
        pw, pr = vals(wl, "plain", 3), vals(wl, "plain", 6)
        pwm = statistics.median(pw) if pw else None
        prm = statistics.median(pr) if pr else None
        d = {}
        for var in VARIANTS:
            w, r = vals(wl, var, 3), vals(wl, var, 6)
            st = status_of(wl, var)
            e = {"n_ok": len(w), "status": st}
            if w:
                e["wall"] = statistics.median(w)
                e["wall_min"], e["wall_max"] = min(w), max(w)
                e["rss_kb"] = statistics.median(r)
                if pwm:
                    e["wall_ratio"] = e["wall"] / pwm
                if prm:
                    e["rss_ratio"] = e["rss_kb"] / prm
                # Paired ratios: each round's run over the same round's plain run.
                pk = {x[2]: x[3] for x in rows if x[0] == wl and x[1] == "plain" and x[7] == "ok"}
                pr_ = [x[3] / pk[x[2]] for x in rows if x[0] == wl and x[1] == var and x[7] == "ok"
                       and x[2] in pk and pk[x[2]] > 0]
                if pr_:
                    e["paired"] = statistics.median(pr_)
            d[var] = e
        summary["workloads"][wl] = d
    with open(os.path.join(a.out, "cost.json"), "w") as f:
        json.dump(summary, f, indent=1)

    out = []
    P = out.append
    shown = VARIANTS[1:]

    def fcell(e, key, fmt):
        if e.get(key) is None:
            st = e.get("status") or "n/a"
            return st
        s = fmt(e[key])
        if e.get("status"):  # ok in some rounds, failed in another
            s += f" ({e['n_ok']}/{K} ok; {e['status']})"
        return s

    P(f"**Wall time**: median of {K} interleaved run{'s' if K > 1 else ''}, as a ratio to plain glibc's median "
      f"(plain in seconds). A failed run is named instead; a peer that failed on a workload was not run on it again.\n")
    P("| workload | plain s | " + " | ".join(SHORT[v] for v in shown) + " |")
    P("| --- | ---: |" + " ---: |" * len(shown))
    for wl, d in summary["workloads"].items():
        P(f"| {wl} | {fcell(d['plain'], 'wall', lambda x: f'{x:.3f}')} | "
          + " | ".join(fcell(d[v], "wall_ratio", lambda x: f"{x:.2f}×") for v in shown) + " |")
    # Geometric means over the workloads each variant completed.
    gm = []
    for v in shown:
        rs = [d[v]["wall_ratio"] for d in summary["workloads"].values() if d[v].get("wall_ratio") and not d[v].get("status")]
        gm.append(f"{math.exp(sum(map(math.log, rs)) / len(rs)):.2f}× ({len(rs)}/{len(W)})" if rs else "–")
    P("| **geometric mean** (workloads completed) | | " + " | ".join(gm) + " |")
    P("")
    P(f"**Peak RSS** (ru_maxrss of the process and the children it waited for; median of the runs), "
      f"as a ratio to plain glibc's (plain in MiB).\n")
    P("| workload | plain MiB | " + " | ".join(SHORT[v] for v in shown) + " |")
    P("| --- | ---: |" + " ---: |" * len(shown))
    for wl, d in summary["workloads"].items():
        P(f"| {wl} | {fcell(d['plain'], 'rss_kb', lambda x: f'{x / 1024:.1f}')} | "
          + " | ".join(fcell(d[v], "rss_ratio", lambda x: f"{x:.2f}×") if d[v].get("rss_ratio") is not None
                       else "–" for v in shown) + " |")
    gm = []
    for v in shown:
        rs = [d[v]["rss_ratio"] for d in summary["workloads"].values() if d[v].get("rss_ratio") and not d[v].get("status")]
        gm.append(f"{math.exp(sum(map(math.log, rs)) / len(rs)):.2f}× ({len(rs)}/{len(W)})" if rs else "–")
    P("| **geometric mean** (workloads completed) | | " + " | ".join(gm) + " |")
    P("")
    P("**Paired wall-time ratios** (median over rounds of run / the same round's plain run; "
      "more robust to load that changes during the run) and the plain runs' spread:\n")
    P("| workload | plain min–max s | " + " | ".join(SHORT[v] for v in shown) + " |")
    P("| --- | ---: |" + " ---: |" * len(shown))
    for wl, d in summary["workloads"].items():
        p = d["plain"]
        spread = f"{p['wall_min']:.3f}–{p['wall_max']:.3f}" if p.get("wall") else "n/a"
        P(f"| {wl} | {spread} | " + " | ".join(f"{d[v]['paired']:.2f}×" if d[v].get("paired") else "–" for v in shown) + " |")
    gm = []
    for v in shown:
        rs = [d[v]["paired"] for d in summary["workloads"].values() if d[v].get("paired") and not d[v].get("status")]
        gm.append(f"{math.exp(sum(map(math.log, rs)) / len(rs)):.2f}× ({len(rs)}/{len(W)})" if rs else "–")
    P("| **geometric mean** (workloads completed) | | " + " | ".join(gm) + " |")
    P("")
    with open(os.path.join(a.out, "cost.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    for o in ("out", "runrss", "bin", "ufence", "scudo", "efence", "duma"):
        ap.add_argument("--" + o, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--peer-timeout", type=float, default=None)
    ap.add_argument("--as-kb", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--only", default="", help="comma-separated workloads (debugging)")
    ap.add_argument("--summarize-only", action="store_true",
                    help="rewrite OUT/cost.json and OUT/cost.md from OUT/cost.tsv (and the old cost.json) without running")
    a = ap.parse_args()
    if a.summarize_only:
        old = json.load(open(os.path.join(a.out, "cost.json")))
        rows = []
        for l in list(open(os.path.join(a.out, "cost.tsv")))[1:]:
            wl, var, k, wall, cpu, rc, rss, status = l.rstrip("\n").split("\t")
            rows.append((wl, var, int(k), float(wall), float(cpu), int(rc), int(rss), status))
        a.quick, a.as_kb = old["quick"], old["as_kb"]
        summarize(a, rows, list(old["workloads"]), old["K"], old["timeout"], old["peer_timeout"],
                  old["loads"], old["elapsed_s"])
        return
    K = a.k or (1 if a.quick else 5)
    timeout = a.timeout or (60 if a.quick else 600)
    ptimeout = a.peer_timeout or (1 if a.quick else 60)
    a.perl = subprocess.run(["sh", "-c", "command -v perl"], capture_output=True, text=True).stdout.strip()
    a.sqlite = subprocess.run(["sh", "-c", "command -v sqlite3"], capture_output=True, text=True).stdout.strip()
    a.jq = subprocess.run(["sh", "-c", "command -v jq"], capture_output=True, text=True).stdout.strip()
    a.gxx = subprocess.run(["sh", "-c", "command -v g++"], capture_output=True, text=True).stdout.strip()
    for need in ("sqlite", "jq", "gxx"):
        if not getattr(a, need):
            sys.exit(f"cost.py: {need} is not installed")
    logs = os.path.join(a.out, "logs")
    os.makedirs(logs, exist_ok=True)
    with open(os.path.join(a.out, "bench.sql"), "w") as f:
        subprocess.run([PYTHON, os.path.join(WL, "gen_sql.py"), "2000" if a.quick else "30000"], stdout=f, check=True)
    with open(os.path.join(a.out, "big.json"), "w") as f:
        subprocess.run([PYTHON, os.path.join(PWL, "gen_json.py"), "1500" if a.quick else "12000"], stdout=f, check=True)

    W = workloads(a)
    if a.only:
        W = {k: v for k, v in W.items() if k in a.only.split(",")}
    base_env = dict(os.environ)
    for v in ("LD_PRELOAD", "UFENCE_OPTIONS", "SCUDO_OPTIONS", "GWP_ASAN_OPTIONS", "PYTHONMALLOC"):
        base_env.pop(v, None)
    # Fixed hash seeds, as bench/run.sh: randomised hashing changes the work done run to run.
    base_env.update(PYTHONHASHSEED="0", PERL_HASH_SEED="0", PERL_PERTURB_KEYS="0")

    rows = []  # (workload, variant, round, wall, cpu, rc, rss_kb, status)
    failed_peer = {}  # (workload, variant) -> status of the failure
    ufence_bad = []
    loads = []
    t_start = time.time()
    tsv = open(os.path.join(a.out, "cost.tsv"), "w")
    tsv.write("workload\tvariant\tround\twall_s\tcpu_s\texit\tmaxrss_kb\tstatus\n")
    for k in range(1, K + 1):
        loads.append(open("/proc/loadavg").read().split()[:3])
        print(f"== round {k}/{K} (load average {' '.join(loads[-1])})", file=sys.stderr)
        for wl, (argv, stdin) in W.items():
            n = len(VARIANTS)
            for j in range(n):
                var = VARIANTS[(j + k + len(wl)) % n]
                if (wl, var) in failed_peer:
                    continue
                limited = var in PEER_LIMITED
                # Quick mode (a smoke test) gives every peer the short timeout.
                to = ptimeout if limited or (a.quick and var not in ("plain",) and not var.startswith("uf-")) else timeout
                log = os.path.join(logs, f"{wl}.{var}.{k}")
                env = dict(base_env)
                env.update(env_of(var, a))
                cmd = [a.runrss, str(to), stdin, log + ".out", log + ".err"]
                if limited:
                    cmd.append(f"--as-kb={a.as_kb}")
                # runrss puts the variables into the child only; it runs without the preload.
                cmd += [f"{kk}={vv}" for kk, vv in env_of(var, a).items()] + ["--"] + argv
                r = subprocess.run(cmd, env=base_env, capture_output=True, text=True)
                try:
                    wall, cpu, rc, rss = r.stdout.split()
                    wall, cpu, rc, rss = float(wall), float(cpu), int(rc), int(rss)
                except ValueError:
                    wall, cpu, rc, rss = 0.0, 0.0, 255, 0
                err = open(log + ".err", errors="replace").read()
                status = "ok"
                if rc != 0 or (var.startswith("uf-") and "BUG: UFENCE" in err):
                    status = failure_kind(rc, err, wall, cpu, to)
                    if var.startswith("uf-"):
                        ufence_bad.append(f"{wl} [{var}] round {k}: {status} (see {log}.err)")
                    elif var != "plain":
                        failed_peer[wl, var] = status
                    else:
                        ufence_bad.append(f"{wl} [plain] round {k}: {status} (see {log}.err)")
                rows.append((wl, var, k, wall, cpu, rc, rss, status))
                tsv.write(f"{wl}\t{var}\t{k}\t{wall:.4f}\t{cpu:.4f}\t{rc}\t{rss}\t{status}\n")
                tsv.flush()
                print(f"  {wl:13s} {var:16s} round {k}: {wall:8.3f} s wall {cpu:8.3f} s cpu "
                      f"{rss / 1024:8.1f} MiB  {status}", file=sys.stderr)
    tsv.close()
    loads.append(open("/proc/loadavg").read().split()[:3])
    elapsed = time.time() - t_start

    summarize(a, rows, list(W), K, timeout, ptimeout, loads, elapsed)
    print(f"cost.py: {len(rows)} runs in {elapsed:.0f} s; load average before the rounds: "
          + ", ".join(" ".join(l) for l in loads[:-1]) + f"; after: {' '.join(loads[-1])}", file=sys.stderr)
    if ufence_bad:
        print("cost.py: FAILED: a ufence (or plain) run exited non-zero, timed out or printed a report:", file=sys.stderr)
        for b in ufence_bad:
            print("  " + b, file=sys.stderr)
        sys.exit(1)
    n_uf = sum(1 for r in rows if r[1].startswith("uf-"))
    print(f"cost.py: all {n_uf} ufence runs exited 0 with no ufence report", file=sys.stderr)


if __name__ == "__main__":
    main()
