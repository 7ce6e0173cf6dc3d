#!/usr/bin/env python3
"""Summarise a SIPp -trace_err error log in one line: the most frequent
messages, with counts ("20x answer SDP did not match 'a=rtpmap:101 ...'").

  sipp_errors.py errors.log [--top 2]
Entries start with "DATE<TAB>TIME<TAB>EPOCH: " and may span several lines
(SIPp includes whole SIP messages); they are not newline-terminated.
"""
import collections
import re
import sys

ENTRY = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ")


def short(msg):
    m = re.search(r"Failed regexp match: looking in .*?, with regexp '(.*?)'", msg, re.S)
    if m:
        return f"answer did not match regexp '{m.group(1)}'"
    m = re.search(r"Aborting call on unexpected message for Call-Id '[^']*': while expecting '([^']*)' \((index \d+)\), received '([^\r\n]*)",
                  msg, re.S)
    if m:
        return f"unexpected message while expecting {m.group(1)} ({m.group(2)}): {m.group(3).strip()}"
    m = re.search(r"unexpected (\S+) for call", msg)
    if m:
        return f"unexpected {m.group(1)} from the far end"
    m = re.search(r"receive timeout on message .*?:(\d+)", msg)
    if m:
        return f"receive timeout at scenario index {m.group(1)}"
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    first = re.sub(r"\S+@[0-9.]+(:\d+)?", "<call>", first)       # Call-IDs
    return first[:140]


def main():
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 2
    try:
        txt = open(sys.argv[1], errors="replace").read()
    except OSError:
        return
    parts = ENTRY.split(txt)[1:]
    # "Dead call ... received ..." lines are only the echo of an earlier abort
    c = collections.Counter(short(p) for p in parts
                            if p.strip() and not p.startswith("Dead call"))
    print("; ".join(f"{n}x {m}" for m, n in c.most_common(top)))


if __name__ == "__main__":
    main()
