#!/usr/bin/env python3
"""Reads the bridge's metrics endpoint (OpenMetrics text) for sotto's sip-tests.

  metrics.py snapshot URL OUT.json      every sample as {"name{labels}": value}
  metrics.py get URL NAME               one sample's value (0 when absent)
  metrics.py diff BEFORE.json AFTER.json NAME...   AFTER - BEFORE for each NAME

A NAME is written as the endpoint writes it, e.g. lockouts_total or
sip_dropped_total{reason="rate_limited"}. Exit 1 when the endpoint cannot be read
(the scenario then fails loudly), 2 on bad arguments. Loopback URLs only.
"""
import json
import sys
import urllib.request


def scrape(url):
    if not url.startswith("http://127."):
        sys.exit("metrics.py: loopback (http://127.x) URLs only")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError as e:
        print(f"FAIL: cannot read {url}: {e}", file=sys.stderr)
        sys.exit(1)
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def main(argv):
    if len(argv) >= 3 and argv[0] == "snapshot":
        json.dump(scrape(argv[1]), open(argv[2], "w"), indent=1, sort_keys=True)
    elif len(argv) == 3 and argv[0] == "get":
        print(f"{scrape(argv[1]).get(argv[2], 0):.0f}")
    elif len(argv) >= 4 and argv[0] == "diff":
        before, after = json.load(open(argv[1])), json.load(open(argv[2]))
        print(" ".join(f"{after.get(n, 0) - before.get(n, 0):.0f}" for n in argv[3:]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
