#!/usr/bin/env python3
"""Turns bench/out/times.tsv (written by bench/run.sh) into the markdown tables of results.md.

usage: summarize.py TIMES_TSV K QUICK(0|1)

For each workload and variant: the median of the K runs (min–max), the ratio of medians to
plain, and the median of the per-round ratios (each round's run divided by the same round's
plain run, which ran right next to it: more robust to a neighbour's load changing over time).
"""
import statistics
import sys

path, K, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rows = [l.rstrip("\n").split("\t") for l in open(path)][1:]
order, t, bad = [], {}, set()
for wl, var, k, wall, cpu, status in rows:
    if wl not in order:
        order.append(wl)
    t.setdefault((wl, var, "wall"), {})[k] = float(wall)
    t.setdefault((wl, var, "cpu"), {})[k] = float(cpu)
    if status != "ok":
        bad.add((wl, var))


def vals(wl, var, m):
    return list(t.get((wl, var, m), {}).values())


def med(wl, var, m):
    v = vals(wl, var, m)
    return statistics.median(v) if v else None


def cell(wl, var, m):
    v = vals(wl, var, m)
    if not v:
        return "n/a"
    s = f"{statistics.median(v):.3f}"
    if K > 1:
        s += f" ({min(v):.3f}–{max(v):.3f})"
    return s + (" FAILED" if (wl, var) in bad else "")


def ratio(wl, var, m):
    p, x = med(wl, "plain", m), med(wl, var, m)
    return x / p if (p and x is not None) else None


def paired(wl, var, m):
    p, x = t.get((wl, "plain", m), {}), t.get((wl, var, m), {})
    r = [x[k] / p[k] for k in x if k in p and p[k] > 0]
    return statistics.median(r) if r else None


f = lambda x: "n/a" if x is None else f"{x:.3f}"
if quick:
    print("QUICK MODE: reduced sizes, one run each; the timings are not meaningful.\n")
for m, what in (("wall", "Wall-clock seconds"), ("cpu", "CPU seconds (user+system, all threads)")):
    print(f"**{what}**: median of {K} interleaved run{'s' if K > 1 else ''}"
          + (" (min–max in parentheses)" if K > 1 else "")
          + "; ratio = median / plain median; paired = median over rounds of run / same round's plain run.\n")
    print("| workload | plain | ufence default | ratio | paired | ufence sample_rate=1 | ratio | paired |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for wl in order:
        print(f"| {wl} | {cell(wl, 'plain', m)} | {cell(wl, 'default', m)} | {f(ratio(wl, 'default', m))} "
              f"| {f(paired(wl, 'default', m))} | {cell(wl, 'rate1', m)} | {f(ratio(wl, 'rate1', m))} "
              f"| {f(paired(wl, 'rate1', m))} |")
    print()
if not quick:
    def over(var, lim):
        return [f"{wl} ({ratio(wl, var, 'wall'):.3f}x)" for wl in order
                if ratio(wl, var, "wall") is not None and ratio(wl, var, "wall") > lim]
    d, r = over("default", 1.005), over("rate1", 3.0)
    print("Targets (wall-clock ratio of medians): default <= 1.005x plain: "
          + ("met on all" if not d else "NOT met on " + ", ".join(d))
          + "; sample_rate=1 <= 3x plain: "
          + ("met on all" if not r else "NOT met on " + ", ".join(r)) + ".")
