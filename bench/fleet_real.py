#!/usr/bin/env python3
"""Simulator against real processes (issue 11): N concurrent instances of a small C service
(bench/fleet/uaf_service.c: ~1000 allocations/s, a planted use-after-free on a path run every
BUG_EVERY allocations) under ufence with a scaled-down interval, each run until SECONDS; the
time of each instance's first report against `ufence simulate`'s distribution for the same
scenario (the allocation rate measured from the instances' control blocks).

    python3 bench/fleet_real.py [N=16] [INTERVAL_MS=10] [BUG_EVERY=5000] [SECONDS=150] [SHADOWED=0]"""
import json, os, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 16
INTERVAL = int(sys.argv[2]) if len(sys.argv) > 2 else 10
EVERY = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
SECS = float(sys.argv[4]) if len(sys.argv) > 4 else 150
SHADOWED = sys.argv[5] if len(sys.argv) > 5 else "0"
UF = os.path.abspath("target/release/ufence")
tmp = tempfile.mkdtemp(prefix="ufence-fleet-real-")
exe = os.path.join(tmp, "uaf_service")
subprocess.run(["gcc", "-O1", "-g", "-o", exe, "bench/fleet/uaf_service.c"], check=True)
rt = os.path.join(tmp, "rt")
env = dict(os.environ, UFENCE_RUNTIME_DIR=rt, LD_PRELOAD=os.path.abspath("target/release/libufence.so"),
           UFENCE_OPTIONS=f"sample_interval={INTERVAL}")
procs = []
for i in range(N):
    err = open(os.path.join(tmp, f"err{i}"), "w+")
    p = subprocess.Popen([exe, "1000", str(EVERY), str(SECS), SHADOWED],
                         stdout=subprocess.DEVNULL, stderr=err, env=env)
    procs.append((p, err, time.time()))
# Measure the allocation rate from the control blocks halfway through.
time.sleep(min(20, SECS / 2))
rates = []
for p, _, _ in procs:
    out = subprocess.run([UF, "stats", str(p.pid), "--format", "json"], capture_output=True, text=True,
                         env=dict(env, LD_PRELOAD=""))
    if out.returncode == 0:
        rates.append(json.loads(out.stdout)["workload"]["allocation_rate_per_second"])
firsts = []
for p, err, t0 in procs:
    p.wait()
firsts = []
for p, err, t0 in procs:
    err.seek(0)
    text = err.read()
    # The report's first line carries no time: take the alloc record's time of the object
    # reported first ("allocated by thread ... at T s"), i.e. seconds since ufence started.
    t = None
    for line in text.splitlines():
        if line.startswith("allocated by thread") and " at " in line:
            t = float(line.rsplit(" at ", 1)[1].rstrip("s:").rstrip("s"))
            break
    firsts.append(t)
rate = sum(rates) / len(rates) if rates else 1000.0
bug_per_hour = rate / EVERY * 3600
found = sorted(x for x in firsts if x is not None)
print(f"{N} instances{' (rare path shadowed)' if SHADOWED != '0' else ''}, sample_interval={INTERVAL} ms, measured {rate:.0f} allocations/s, bug path every {EVERY} allocations ({bug_per_hour:.0f}/h), {SECS:.0f} s each")
print("first detection per instance (s):", ", ".join(f"{x:.1f}" for x in found) or "none", f"({len(found)} of {N} found)")
sim = json.loads(subprocess.run([UF, "simulate", "--machines", "20000", "--rate", f"{rate:.1f}", "--bug-per-hour", f"{bug_per_hour:.3f}",
                                 "--sample-interval", str(INTERVAL), "--horizon", f"{SECS:.0f}s", "--lifetime", "0.00001",
                                 "--format", "json"], check=True, capture_output=True, text=True, env=dict(env, LD_PRELOAD="")).stdout)
print(f"simulated (20,000 machines): median first detection per machine {sim['machine_median_seconds']}, found by {SECS:.0f} s: {100 * sim['machines_found'] / 20000:.1f} %; model: machine median {sim['model']['machine_median_seconds']}")
med = found[(N + 1) // 2 - 1] if len(found) >= (N + 1) // 2 else None
print(f"measured: median first detection per instance {med} s, found by {SECS:.0f} s: {100 * len(found) / N:.1f} %")
