#!/usr/bin/env python3
"""CPU per member-second against members, one line per way of running the bridge.

    bench/load/plot.py [RESULTS_DIR] [OUT.svg]
        (defaults: bench/load/results, docs/performance-cpu.svg)

Reads the JSON that `bench/load/run` (sotto-load) and `bench/load/sipp-run` (SIPp)
write, groups the cases by name without the member count (e.g.
`single-srtp-pcma-200` and `single-srtp-pcma-500` make the line
`single-srtp-pcma`), and draws them with the Asterisk ConfBridge anchor of issue 13
(SIPp, same load, same machine type: 2,400-2,800 µs plain, ~4,200 µs SRTP) as bands.
Plain SVG written by hand: no plotting library needed.
"""

import json
import os
import re
import sys

RESULTS = sys.argv[1] if len(sys.argv) > 1 else "bench/load/results"
OUT = sys.argv[2] if len(sys.argv) > 2 else "docs/performance-cpu.svg"

W, H = 760, 460
LEFT, RIGHT, TOP, BOTTOM = 70, 230, 30, 50
COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
           "#a6761d", "#666666", "#1f78b4", "#b2df8a"]


def cpu_of(doc):
    """µs per member-second from either generator's JSON."""
    bridge = doc.get("bridge") or {}
    value = bridge.get("cpu_us_per_member_second", doc.get("cpu_us_per_member_second"))
    members = (doc.get("settings") or {}).get("calls", doc.get("members"))
    return members, value


def load_series():
    series = {}
    for name in sorted(os.listdir(RESULTS)):
        m = re.fullmatch(r"(.+)-(\d+)\.json", name)
        if not m or name.startswith(("meeting", "tls-setup", "spread")):
            continue
        line = m.group(1)
        if line.startswith("run"):
            # The first load runs (2026-12-07), of a bridge since made faster.
            continue
        with open(os.path.join(RESULTS, name)) as f:
            doc = json.load(f)
        if doc.get("result", "ok") != "ok":
            # A SIPp case that failed its own checks (e.g. a busy core) is no figure.
            continue
        members, cpu = cpu_of(doc)
        if members and cpu:
            series.setdefault(line, {}).setdefault(int(members), []).append(float(cpu))
    # The mean of repeated runs per point.
    return {k: sorted((n, sum(v) / len(v)) for n, v in pts.items()) for k, pts in series.items()}


def main():
    series = load_series()
    if not series:
        sys.exit(f"plot: no results in {RESULTS}")
    xs = [n for pts in series.values() for n, _ in pts]
    x_max = max(max(xs) * 1.1, 600)
    y_max = 4600.0

    def px(x):
        return LEFT + (W - LEFT - RIGHT) * x / x_max

    def py(y):
        return H - BOTTOM - (H - TOP - BOTTOM) * min(y, y_max) / y_max

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    # Asterisk anchor bands (issue 13).
    for lo, hi, label in [(2400, 2800, "Asterisk ConfBridge, plain (SIPp)"),
                          (4100, 4300, "Asterisk ConfBridge, SRTP (SIPp)")]:
        out.append(f'<rect x="{LEFT}" y="{py(hi):.1f}" width="{W - LEFT - RIGHT}" '
                   f'height="{py(lo) - py(hi):.1f}" fill="#eeeeee"/>')
        out.append(f'<text x="{LEFT + 6}" y="{py(hi) - 4:.1f}" fill="#777">{label}</text>')
    # Target line.
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(150):.1f}" y2="{py(150):.1f}" '
               f'stroke="#c00" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{W - RIGHT - 150}" y="{py(150) - 4:.1f}" fill="#c00">'
               f'target G.711+SRTP: 150</text>')
    # Axes and ticks.
    out.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="black"/>')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="black"/>')
    step = 100 if x_max <= 1000 else 500
    for x in range(0, int(x_max) + 1, step):
        out.append(f'<text x="{px(x):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{x}</text>')
    for y in range(0, int(y_max) + 1, 500):
        out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y}</text>')
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   f'stroke="#f4f4f4"/>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">'
               f'members in one room</text>')
    out.append(f'<text transform="translate(16 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
               f'text-anchor="middle">bridge CPU, µs per member-second</text>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n, v in pts:
            out.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3.5" fill="{colour}"/>')
        ly = TOP + 16 * i
        out.append(f'<rect x="{W - RIGHT + 12}" y="{ly}" width="12" height="3" fill="{colour}"/>')
        out.append(f'<text x="{W - RIGHT + 30}" y="{ly + 5}">{name}</text>')
    out.append("</svg>")
    with open(OUT, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"plot: {len(series)} series -> {OUT}")


if __name__ == "__main__":
    main()
