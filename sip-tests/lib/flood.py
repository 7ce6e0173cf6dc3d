#!/usr/bin/env python3
"""A small flood tool for sotto's sip-tests (scenario sipp_flood): hostile SIP and
RTP traffic on loopback, at a bounded rate for a bounded time.

SIP: --rate datagrams a second to --target, spread round robin over --sources
source addresses (127.0.0.S, S = --first-source ...), each a mix of
  * garbage: random bytes, an RTP-looking packet, truncated INVITEs, header
    lines without a colon, a Content-Length longer than the body, NULs, a bad
    start line;
  * INVITEs with an SDP offer and a fresh Call-ID and branch (they reach the
    transaction layer unless the per-source rate limit drops them first);
  * OPTIONS from a known scanner (User-Agent: friendly-scanner), which the
    bridge must drop without an answer.
RTP: once the files given by --rtp-targets exist (JSON with "addr" and "port",
written by sip_ua.py as soon as its call is answered), --rtp-rate forged PCMU
packets a second to each of those bridge ports, from --rtp-source: the bridge
has latched on the member's own address and must drop them all.

Every answer the bridge sends to a flooding source is read and counted (so the
amplification guard can be judged). Writes --out (JSON): what was sent and
received. Exit 0 unless the arguments are bad (2); loopback targets only.
"""
import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time


def garbage(rng, n):
    kinds = [
        lambda: os.urandom(rng.randint(1, 1400)),
        lambda: bytes([0x80, 0x00]) + os.urandom(170),
        lambda: invite(rng, n)[: rng.randint(10, 300)],
        lambda: b"INVITE sip:conference@127.0.0.1 SIP/2.0\r\nno colon here\r\n\r\n",
        lambda: invite(rng, n).replace(b"Content-Length: ", b"Content-Length: 9", 1),
        lambda: b"\x00" * rng.randint(1, 200),
        lambda: b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda: invite(rng, n).replace(b"SIP/2.0\r\n", b"SIP/2.x\r\n", 1),
    ]
    return rng.choice(kinds)()


def invite(rng, n, room="conference", host="127.0.0.1", port=5060, src="127.0.0.10", sport=5099):
    body = (f"v=0\r\no=- {n} {n} IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\n"
            f"m=audio {20000 + 2 * (n % 1000)} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n").encode()
    head = (f"INVITE sip:{room}@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{sport};branch=z9hG4bKflood{n:x}{rng.getrandbits(32):x};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:flood@{src}>;tag=f{n:x}\r\n"
            f"To: <sip:{room}@{host}>\r\nCall-ID: flood{n:x}.{rng.getrandbits(48):x}@{src}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:flood@{src}:{sport}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def scanner_options(rng, n, src, sport):
    return (f"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{sport};branch=z9hG4bKscan{n:x};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:100@{src}>;tag=s{n:x}\r\nTo: <sip:100@127.0.0.1>\r\n"
            f"Call-ID: scan{n:x}.{rng.getrandbits(32):x}\r\nCSeq: 1 OPTIONS\r\n"
            f"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n").encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="127.0.0.1:5060")
    ap.add_argument("--room", default="conference")
    ap.add_argument("--rate", type=int, default=1000, help="SIP datagrams per second, all sources")
    ap.add_argument("--secs", type=float, default=30.0)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--first-source", type=int, default=10, help="127.0.0.N of the first source")
    ap.add_argument("--rtp-targets", default="", help="comma-separated answer.json files")
    ap.add_argument("--rtp-rate", type=int, default=500, help="forged RTP packets/s per target")
    ap.add_argument("--rtp-source", default="127.0.0.30")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=4475)
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    if not host.startswith("127.") or not a.rtp_source.startswith("127."):
        sys.exit("flood.py: loopback (127.0.0.0/8) only")
    if not (0 < a.rate <= 5000 and 0 < a.secs <= 120 and 0 < a.sources <= 64
            and 0 <= a.rtp_rate <= 2000 and 1 <= a.first_source <= 254 - a.sources):
        sys.exit("flood.py: rate, time or sources out of the bounded range")
    rng = random.Random(a.seed)

    socks = []
    for i in range(a.sources):
        src = f"127.0.0.{a.first_source + i}"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setblocking(False)
        socks.append((src, s.getsockname()[1], s))
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind((a.rtp_source, 0))
    rtp.setblocking(False)
    rtp_files = [f for f in a.rtp_targets.split(",") if f]
    rtp_dests = {}

    sent = {"garbage": 0, "invite": 0, "scanner": 0}
    sent_bytes = 0
    rtp_sent = 0
    recv = {"datagrams": 0, "bytes": 0, "by_status": {}}
    errors = 0
    tick = 0.01
    t0 = time.monotonic()
    n = 0
    owed = 0.0
    rtp_owed = 0.0
    while True:
        now = time.monotonic()
        if now - t0 >= a.secs:
            break
        # what the bridge answered, if anything
        r, _, _ = select.select([s for _, _, s in socks], [], [], 0)
        for s in r:
            for _ in range(64):
                try:
                    d = s.recv(65535)
                except (BlockingIOError, OSError):
                    break
                recv["datagrams"] += 1
                recv["bytes"] += len(d)
                if d.startswith(b"SIP/2.0 "):
                    code = d[8:11].decode("ascii", "replace")
                    recv["by_status"][code] = recv["by_status"].get(code, 0) + 1
        owed += a.rate * tick
        while owed >= 1:
            owed -= 1
            src, sport, s = socks[n % len(socks)]
            k = rng.random()
            if k < 0.5:
                msg, kind = garbage(rng, n), "garbage"
            elif k < 0.85:
                msg, kind = invite(rng, n, a.room, host, port, src, sport), "invite"
            else:
                msg, kind = scanner_options(rng, n, src, sport), "scanner"
            try:
                s.sendto(msg, (host, port))
                sent[kind] += 1
                sent_bytes += len(msg)
            except OSError:
                errors += 1
            n += 1
        for f in rtp_files:
            if f not in rtp_dests and os.path.exists(f):
                try:
                    d = json.load(open(f))
                    rtp_dests[f] = (d["addr"], int(d["port"]))
                except (OSError, ValueError, KeyError):
                    pass
        if rtp_dests:
            rtp_owed += a.rtp_rate * tick
            while rtp_owed >= 1:
                rtp_owed -= 1
                for dest in rtp_dests.values():
                    hdr = struct.pack("!BBHII", 0x80, 0, rng.getrandbits(16),
                                      rng.getrandbits(32), rng.getrandbits(32))
                    try:
                        rtp.sendto(hdr + os.urandom(160), dest)
                        rtp_sent += 1
                    except OSError:
                        errors += 1
        delay = tick - (time.monotonic() - now)
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - t0
    total = sum(sent.values())
    res = {"secs": round(elapsed, 2), "sip_sent": total, "sip_rate": round(total / elapsed),
           "sip_by_kind": sent, "sip_bytes": sent_bytes, "sources": len(socks),
           "rtp_targets": len(rtp_dests), "rtp_sent": rtp_sent, "send_errors": errors,
           "received": recv}
    json.dump(res, open(a.out, "w"), indent=1)
    print(f"flood.py: {total} SIP datagrams in {elapsed:.1f}s ({res['sip_rate']}/s) from "
          f"{len(socks)} sources {sent}; {rtp_sent} forged RTP packets to {len(rtp_dests)} "
          f"member ports; got back {recv['datagrams']} datagrams, {recv['bytes']} bytes "
          f"({recv['by_status']}) for {sent_bytes} bytes sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
