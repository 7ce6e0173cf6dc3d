#!/usr/bin/env python3
"""trials.json -> summary.json + summary.md (medians over the talks of a cell) and the
issue-18 targets, met or not. Usage: report.py RESULTS_DIR [--seconds N]"""
import json
import os
import platform
import statistics
import subprocess
import sys

COND_LABEL = {
    "clean": "clean",
    "loss5": "5 % random loss",
    "loss10": "10 % random loss",
    "bursty10": "bursty loss (10 %, bursts ~3)",
    "jitter_normal": "jitter normal 40±30 ms",
    "jitter_uniform": "jitter uniform 0–120 ms",
    "loss10_jitter": "10 % loss + jitter 40±30 ms",
}
CODEC_LABEL = {"pcmu": "G.711 µ-law", "g722": "G.722", "opus": "Opus 16 kHz 24 kbit/s, FEC"}


def med(rows, *path):
    """Median per material, then the mean over the materials (the natural and the
    synthetic talk score on different scales: a median across them would pick one)."""
    mats = {}
    for r in rows:
        mats.setdefault(r.get("material"), []).append(r)
    if len(mats) > 1:
        per = [med1(v, *path) for v in mats.values()]
        per = [x for x in per if x is not None]
        return round(sum(per) / len(per), 3) if per else None
    return med1(rows, *path)


def med1(rows, *path):
    vals = []
    for r in rows:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    return round(statistics.median(vals), 3) if vals else None


def f(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def main():
    out = sys.argv[1]
    secs = int(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else None
    trials = json.load(open(os.path.join(out, "trials.json")))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for t in trials:                       # older trials.json: recompute from the seed
        if "link_mean_delay_ms" not in t and "impaired_packets" in t:
            import numpy as np
            from sq import impairment
            lost, delay = impairment(t["condition"], t["impaired_packets"], t["seed"])
            t["link_mean_delay_ms"] = round(float(np.mean(delay[~lost])) * 1000, 1)
    cells = {}
    for t in trials:
        cells.setdefault((t["codec"], t["condition"]), []).append(t)
    summary = []
    for (codec, cond), rows in cells.items():
        ok = [r for r in rows if "error" not in r]
        s = {"codec": codec, "condition": cond, "talks": len(ok),
             "errors": [r["error"] for r in rows if "error" in r],
             "loss_rate": med(ok, "loss_rate"), "delay_ms": med(ok, "delay_ms"),
             "link_delay_ms": med(ok, "link_mean_delay_ms")}
        for col in ("bridge", "no_concealment", "codec_alone", "codec_tandem", "libopus_fec_plc"):
            s[col] = {m: med(ok, col, m) for m in ("pesq_nb", "pesq_wb", "stoi")}
        summary.append(s)
    by = {(s["codec"], s["condition"]): s for s in summary}

    def per_mat(codec, cond, m):
        """' (natural 2.70, espeak 2.20)': the cell's median per material."""
        ok = [r for r in cells.get((codec, cond), []) if "error" not in r]
        mats = sorted({r["material"] for r in ok}, key=lambda x: x != "natural")
        if len(mats) < 2:
            return ""
        return " (" + ", ".join(f"{k} {med([r for r in ok if r['material'] == k], 'bridge', m):.2f}"
                                for k in mats) + ")"

    md = []
    for codec in ("pcmu", "g722", "opus"):
        rows = [s for s in summary if s["codec"] == codec]
        if not rows:
            continue
        wb = codec != "pcmu"
        md.append(f"**{CODEC_LABEL[codec]}** — each score: bridge / no-concealment reference / codec alone")
        md.append("")
        op = codec == "opus"
        hdr = ("| condition | loss | PESQ NB | " + ("PESQ WB | " if wb else "") + "STOI | delay ms (link's share) |"
               + (" offline libopus FEC+PLC: NB / WB / STOI |" if op else ""))
        md.append(hdr)
        md.append("|" + "---|" * (hdr.count("|") - 1))
        for s in rows:
            b, n, a = s["bridge"], s["no_concealment"], s["codec_alone"]
            line = (f"| {COND_LABEL.get(s['condition'], s['condition'])} | "
                    f"{f(100 * s['loss_rate'], 1) if s['loss_rate'] is not None else '–'} % | "
                    f"**{f(b['pesq_nb'])}** / {f(n['pesq_nb'])} / {f(a['pesq_nb'])} | ")
            if wb:
                line += f"**{f(b['pesq_wb'])}** / {f(n['pesq_wb'])} / {f(a['pesq_wb'])} | "
            line += f"**{f(b['stoi'], 3)}** / {f(n['stoi'], 3)} / {f(a['stoi'], 3)} | {f(s['delay_ms'], 0)} ({f(s['link_delay_ms'], 0)}) |"
            if op:
                o = s["libopus_fec_plc"]
                line += f" {f(o['pesq_nb'])} / {f(o['pesq_wb'])} / {f(o['stoi'], 3)} |"
            if s["errors"]:
                line += f" ({len(s['errors'])} failed)"
            md.append(line)
        t = rows[0]["codec_tandem"]
        md.append("")
        md.append(f"Codec tandem (encode→decode twice, no bridge, the ceiling of any transcoding "
                  f"bridge): PESQ NB {f(t['pesq_nb'])}"
                  + (f", WB {f(t['pesq_wb'])}" if wb else "") + f", STOI {f(t['stoi'], 3)}.")
        md.append("")

    # targets
    tg = []

    def tline(name, ok, detail):
        tg.append({"target": name, "met": ok, "detail": detail})

    for codec in ("pcmu", "g722", "opus"):
        c = by.get((codec, "clean"))
        if c:
            for m in ("pesq_nb", "pesq_wb"):
                a, b = c["codec_alone"][m], c["bridge"][m]
                if a is None or b is None:
                    continue
                gap = a - b
                tline(f"{CODEC_LABEL[codec]} clean within 0.05 PESQ ({m[5:].upper()}) of the codec alone",
                      gap <= 0.05, f"bridge {b:.2f}, codec alone {a:.2f}: gap {gap:+.2f}; "
                      f"tandem ceiling {c['codec_tandem'][m]:.2f}")
        j = by.get((codec, "jitter_normal"))
        if c and j:
            for m in ("pesq_nb", "pesq_wb"):
                a, b = c["bridge"][m], j["bridge"][m]
                if a is None or b is None:
                    continue
                gap = a - b
                tline(f"{CODEC_LABEL[codec]} jitter 40±30 ms within 0.1 of clean ({m[5:].upper()})",
                      gap <= 0.1, f"jitter {b:.2f}{per_mat(codec, 'jitter_normal', m)}, clean {a:.2f}"
                      f"{per_mat(codec, 'clean', m)}: gap {gap:+.2f}")
    for cond, lim in (("loss10", 3.0), ("bursty10", 2.7)):
        s = by.get(("pcmu", cond))
        if s and s["bridge"]["pesq_nb"] is not None:
            v = s["bridge"]["pesq_nb"]
            tline(f"G.711 {COND_LABEL[cond]} ≥ {lim} (NB)", v >= lim,
                  f"{v:.2f} ({v - lim:+.2f}){per_mat('pcmu', cond, 'pesq_nb')}")
    s = by.get(("opus", "loss10"))
    if s and s["bridge"]["pesq_wb"] is not None:
        v = s["bridge"]["pesq_wb"]
        tline("Opus with FEC, 10 % random loss ≥ 3.5 (P.862.2 WB)", v >= 3.5,
              f"{v:.2f} ({v - 3.5:+.2f}){per_mat('opus', 'loss10', 'pesq_wb')}; offline libopus "
              f"FEC+PLC on the same packets {s['libopus_fec_plc']['pesq_wb']:.2f}")
    md.append("| target | met | measured |")
    md.append("|---|---|---|")
    for t in tg:
        md.append(f"| {t['target']} | {'yes' if t['met'] else '**no**'} | {t['detail']} |")
    md.append("")
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
    except Exception:
        cpu = platform.processor()
    machine = f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    rev = os.environ.get("SQ_REV") or subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    md.append(f"Machine: {machine}; sotto {rev}" + (f"; run time {secs // 60} min {secs % 60} s." if secs else "."))
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump({"cells": summary, "targets": tg, "machine": machine, "sotto": rev,
                   "seconds": secs}, fh, indent=1)
    print(text)


if __name__ == "__main__":
    main()
