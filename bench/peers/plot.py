#!/usr/bin/env python3
"""Draws bench/peers' cost results (cost.json from cost.py) as an SVG, with no dependency.

usage: plot.py COST_JSON OUT_SVG [SUBTITLE]

Two panels, wall time and peak RSS, each a ratio to plain glibc on a log scale: one row per
workload, one thin bar per tool from 1x to its median ratio. A tool that crashed or timed
out on a workload gets a cross at the right edge instead of a bar.
"""
import html
import json
import math
import sys

COLORS = {
    "uf-default": "#08519c",
    "uf-rate100": "#3182bd",
    "uf-rate1": "#6baed6",
    "scudo": "#fdae6b",
    "scudo-gwp": "#e6550d",
    "scudo-gwp-rate1": "#a63603",
    "efence": "#756bb1",
    "duma": "#636363",
}


def main():
    data = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    subtitle = sys.argv[3] if len(sys.argv) > 3 else ""
    variants = [v for v in data["variants"] if v != "plain"]
    titles = data["titles"]
    wls = list(data["workloads"])
    nv = len(variants)

    bar_h, gap = 4.0, 1.2
    row_h = nv * (bar_h + gap) + 10
    left, top = 110, 92
    panel_w, panel_gap = 430, 60
    fail_w = 26
    height = top + len(wls) * row_h + 70
    width = left + 2 * panel_w + panel_gap + 2 * fail_w + 20

    def ratios(key):
        r = [e[key] for d in data["workloads"].values() for v, e in d.items()
             if v != "plain" and e.get(key) is not None]
        return r or [1.0]

    s = []
    A = s.append
    A(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
      f'viewBox="0 0 {width} {height:.0f}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">')
    A(f'<rect width="{width}" height="{height:.0f}" fill="white"/>')
    A(f'<text x="{left}" y="22" font-size="15" font-weight="bold">Cost of ufence and of the tools users would pick '
      f'instead, relative to plain glibc</text>')
    A(f'<text x="{left}" y="40" fill="#444">{html.escape(subtitle)}</text>')
    # Legend.
    lx, ly = left, 58
    for i, v in enumerate(variants):
        x = lx + (i % 4) * 205
        y = ly + (i // 4) * 15
        A(f'<rect x="{x}" y="{y - 8}" width="14" height="8" fill="{COLORS.get(v, "#999")}"/>')
        A(f'<text x="{x + 19}" y="{y}">{html.escape(titles[v])}</text>')
    A(f'<text x="{lx + 4 * 205 - 5}" y="{ly}" fill="#c00" font-weight="bold">×</text>'
      f'<text x="{lx + 4 * 205 + 6}" y="{ly}">crashed or timed</text>'
      f'<text x="{lx + 4 * 205 + 6}" y="{ly + 15}">out (tool colour)</text>')

    for pi, (key, name) in enumerate((("wall_ratio", "wall time / plain"), ("rss_ratio", "peak RSS / plain"))):
        x0 = left + pi * (panel_w + fail_w + panel_gap)
        rs = ratios(key)
        lo = min(0.5, min(rs) * 0.9)
        hi = max(2.0, max(rs) * 1.15)
        llo, lhi = math.log10(lo), math.log10(hi)

        def X(r):
            return x0 + (math.log10(r) - llo) / (lhi - llo) * panel_w

        y_end = top + len(wls) * row_h
        A(f'<text x="{x0 + panel_w / 2}" y="{y_end + 36}" text-anchor="middle" font-weight="bold">'
          f'{name} (log scale)</text>')
        A(f'<text x="{x0 + panel_w + fail_w / 2}" y="{y_end + 15}" text-anchor="middle" fill="#c00" font-size="9">fail</text>')
        if hi / lo > 12:
            ticks = [t * 10 ** e for e in range(-1, 4) for t in (1, 2, 5) if lo <= t * 10 ** e <= hi]
        else:
            ticks = [t for t in (0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 5, 7, 10) if lo <= t <= hi]
        for t in ticks:
            xt = X(t)
            A(f'<line x1="{xt:.1f}" y1="{top - 4}" x2="{xt:.1f}" y2="{y_end}" stroke="{"#000" if t == 1 else "#ddd"}" '
              f'stroke-width="{1.2 if t == 1 else 0.8}"/>')
            lab = f"{t:g}×"
            A(f'<text x="{xt:.1f}" y="{y_end + 15}" text-anchor="middle" fill="#444">{lab}</text>')
        A(f'<rect x="{x0}" y="{top - 4}" width="{panel_w}" height="{y_end - top + 4}" fill="none" stroke="#888"/>')
        for wi, wl in enumerate(wls):
            y = top + wi * row_h
            if wi % 2 == 1:
                A(f'<rect x="{x0 + 0.5}" y="{y - 2}" width="{panel_w - 1}" height="{row_h}" fill="#f4f4f4" fill-opacity="0.6"/>')
            if pi == 0:
                A(f'<text x="{left - 8}" y="{y + row_h / 2}" text-anchor="end" font-weight="bold">{html.escape(wl)}</text>')
                plain = data["workloads"][wl]["plain"]
                if plain.get("wall") is not None:
                    A(f'<text x="{left - 8}" y="{y + row_h / 2 + 13}" text-anchor="end" fill="#666" font-size="9">'
                      f'plain {plain["wall"]:.2f} s, {plain["rss_kb"] / 1024:.0f} MiB</text>')
            for vi, v in enumerate(variants):
                e = data["workloads"][wl][v]
                yb = y + 3 + vi * (bar_h + gap)
                c = COLORS.get(v, "#999")
                r = e.get(key)
                if r is None or e.get("status"):
                    if e.get("status"):
                        A(f'<text x="{x0 + panel_w + fail_w / 2}" y="{yb + bar_h + 1}" text-anchor="middle" '
                          f'fill="{c}" font-size="12" font-weight="bold">×<title>{html.escape(titles[v] + ": " + e["status"])}</title></text>')
                    continue
                xa, xb = sorted((X(1.0), X(r)))
                A(f'<rect x="{xa:.1f}" y="{yb:.1f}" width="{max(xb - xa, 1.2):.1f}" height="{bar_h}" fill="{c}">'
                  f'<title>{html.escape(f"{wl}, {titles[v]}: {r:.2f}×")}</title></rect>')
    A("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


if __name__ == "__main__":
    main()
