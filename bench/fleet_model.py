#!/usr/bin/env python3
"""Plan against simulator on a grid of scenarios (issue 11): for each scenario, the model's
median and 90th percentile of the fleet's time to first detection (`ufence plan`'s model, as
`ufence simulate` prints it) beside the simulator's, over RUNS independent fleets.

    python3 bench/fleet_model.py [RUNS]        (default 201; needs target/release/ufence)

Prints a markdown table and the largest disagreement of the medians."""
import json, math, os, subprocess, sys, time

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 201
UF = "target/release/ufence"

# (machines, allocations/s, long-lived fraction, long-lived sites, bug path per hour, extra)
# The simulator draws every sample (not every allocation): a scenario costs about
# RUNS * allocations / bug-path executions samples, so allocation-heavy scenarios are paired
# with frequent bug paths (and rare bug paths with light allocation) to keep each under a minute.
GRID = [
    (1, 1, 0, 4, 60, []),
    (1, 100, 0, 4, 1, []),
    (1, 1, 0, 4, 1 / 168, ["--horizon", "20w"]),
    (100, 100, 0, 4, 1, []),
    (100, 10_000, 0, 4, 60, []),
    (10_000, 10_000, 0, 4, 60, ["--sample-interval", "1000"]),
    (100_000, 1, 0, 4, 1 / 168, []),
    (100_000, 1_000_000, 0, 4, 3600, ["--sample-interval", "10000"]),
    (10_000, 10, 0.1, 4, 1 / 24, []),
    (100, 1, 0.5, 4, 1, []),
    (100, 1, 0.5, 1000, 1, []),
    (1, 100, 0.5, 1000, 60, ["--horizon", "2h"]),
    (1000, 100, 0.1, 1000, 1, ["--sample-interval", "1000"]),
    (100, 100, 0.1, 1000, 1, ["--adaptive", "1", "--adaptive-max", "2000"]),
    (100, 100, 0, 4, 1, ["--delay", "0.85s", "--num-objects", "8"]),
    (100, 100, 0, 4, 1, ["--kind", "overflow", "--access", "read"]),
    (1000, 100, 0, 4, 1, ["--sample-rate", "5000", "--sample-interval", "0"]),
]


def human(s):
    if s is None:
        return "beyond horizon"
    for unit, d in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= 2 * d:
            return f"{s / d:.1f} {unit}"
    return f"{s:.1f} s"


print(f"{RUNS} fleets per scenario; times are the fleet's first detection.\n")
print("| machines | allocs/s | long-lived (sites) | bug path | settings | model median | simulated median | ratio | model p90 | simulated p90 | found by horizon, model / simulated | wall s |")
print("| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
worst = (0.0, None)
# START=K skips the first K scenarios (to finish an interrupted table).
for m, rate, f, sites, per_h, extra in GRID[int(os.environ.get("START", "0")):]:
    cmd = [UF, "simulate", "--machines", str(m), "--rate", str(rate), "--long-lived", str(f),
           "--long-lived-sites", str(sites), "--bug-per-hour", repr(per_h), "--runs", str(RUNS),
           "--format", "json"] + extra
    if "--horizon" not in extra:
        cmd += ["--horizon", "7d"]
    t = time.time()
    v = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    wall = time.time() - t
    mm, sm = v["model"]["median_seconds"], v["median_seconds"]
    mp, sp = v["model"]["p90_seconds"], v["p90_seconds"]
    if mm and sm:
        ratio = sm / mm
        dis = abs(math.log(ratio))
        if dis > worst[0]:
            worst = (dis, (m, rate, f, sites, per_h, extra, ratio))
        rs = f"{ratio:.2f}"
    else:
        rs = "both beyond" if mm is None and sm is None else "one beyond"
    bug = f"{per_h:g}/h" if per_h >= 1 else f"1/{round(1 / per_h)}h"
    settings = " ".join(extra) or "defaults"
    print(f"| {m:,} | {rate:,} | {f:g} ({sites}) | {bug} | {settings} | {human(mm)} | {human(sm)} | {rs} | {human(mp)} | {human(sp)} | {100 * v['model']['found_by_horizon']:.0f} % / {100 * v['found_by_horizon']:.0f} % | {wall:.1f} |", flush=True)
if worst[1]:
    print(f"\nLargest disagreement of the medians: simulated/model = {worst[1][-1]:.2f} at {worst[1][:-1]}")
