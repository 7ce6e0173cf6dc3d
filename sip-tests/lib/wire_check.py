#!/usr/bin/env python3
"""Judge a loopback capture (tshark pcapng): is the audio on the wire encrypted,
and is the SIP on the TLS port really TLS?  Part of sotto's sip-tests; the
per-stream entropy / first-byte / clear-tone ideas come from the loopback test
recipes' srtp_check.py, extended to per-packet checks.

  wire_check.py --pcap wire.pcapng --expect encrypted|plain --rtp-ports 30000-30999 \
      [--suite AES_CM_128_HMAC_SHA1_80] [--tones "440 620"] [--amp 0.25] \
      [--ref-wav a.wav ...] [--min-flows 4] [--sip-tls-port 5061] [--json out.json]

Media: every UDP packet to or from --rtp-ports (the bridge's side) is parsed as
RTP (RTCP, PT 72-76, is only counted).  A flow (src -> dst) with at least
--min-packets RTP packets is judged.  For each packet of G.711 payload type
(0/8) the payload after the RTP header (CSRCs, extension) is
  * decoded as G.711 and looked at by FFT for each --tones frequency: a packet
    with more than half its energy at a tone (+-60 Hz) is a CLEAR-TONE frame.
    The FFT does not care about the tone's phase;
  * searched at every offset for any 16-byte run of known audio bytes: the
    tones as G.711 u-law at every sample phase (amplitude --amp, as the test
    callers send them) and the u-law encoding of --ref-wav recordings (what the
    callers actually sent and received, 8 kHz).  16 bytes of a 160-byte tone
    frame are enough: a whole frame in the clear contains ten such runs;
  * length-checked: with --suite, the payload must be exactly 160 (20 ms G.711)
    + the suite's tag (HMAC-SHA1-80: 10, -32: 4, AES-GCM: 16) bytes, i.e. a UDP
    payload of 172 + tag; telephone-events 4 + tag.
Per flow: Shannon entropy of all payload bytes (SRTP ~7.9-8.0 bit/byte, G.711
speech/tone far lower), and the entropy / most common value of the first
payload byte across packets (ciphertext: near uniform).
A flow is ENCRYPTED when its entropy >= 7.8, first-byte entropy >= 6.0, the
first byte's commonest value <= 10 % of packets, no clear-tone frame and no
known-bytes run, and (with --suite) every length is right; WRONG-LENGTH when
only the lengths are off (encrypted, but not with that suite); else PLAINTEXT.
--expect encrypted: every judged flow must be ENCRYPTED, at least --min-flows;
--expect plain: every judged flow must be PLAINTEXT (a detector self-check).

SIP (--sip-tls-port P): the TCP payloads on port P must contain no cleartext
SIP ("SIP/2.0", "INVITE ", "a=crypto", ...), must hold a TLS ClientHello and
ServerHello and application-data records, in both directions.

Exit 0 when the expectation holds, 1 when not, 3 when no judged flow was
captured, 2 on a tool error.  Human-readable lines on stdout; --json writes
the details.
"""
import argparse
import collections
import json
import math
import re
import subprocess
import sys
import wave

import numpy as np

TAGS = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4,
        "AEAD_AES_128_GCM": 16, "AEAD_AES_256_GCM": 16}
NGRAM = 16


def ulaw_dec():
    t = np.zeros(256)
    for i in range(256):
        u = ~i & 0xFF
        s = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
        s -= 0x84
        t[i] = -s if u & 0x80 else s
    return t / 32768.0


def alaw_dec():
    t = np.zeros(256)
    for i in range(256):
        a = i ^ 0x55
        e, m = (a >> 4) & 7, a & 0x0F
        s = (m << 4) + 8 if e == 0 else ((m << 4) + 0x108) << (e - 1)
        t[i] = s if a & 0x80 else -s
    return t / 32768.0


DEC = {0: ulaw_dec(), 8: alaw_dec()}


def lin2ulaw(x):
    x = np.asarray(x, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    m = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.clip(np.floor(np.log2(m)).astype(np.int32) - 7, 0, 7)
    mant = (m >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def entropy(b):
    if not b:
        return 0.0
    n = len(b)
    return -sum(v / n * math.log2(v / n) for v in collections.Counter(b).values())


def add_ngrams(ref, data):
    for i in range(len(data) - NGRAM + 1):
        g = data[i:i + NGRAM]
        if len(set(g)) >= 6:          # skip silence-like runs
            ref.add(g)


def tone_ref(ref, freq, amp):
    period = 8000 // math.gcd(8000, int(round(freq)))   # samples until the phase repeats
    n = period + 160
    i = np.arange(n)
    x = np.round(amp * 32767 * np.sin(2 * np.pi * freq * i / 8000.0))
    add_ngrams(ref, lin2ulaw(x))


def wav_ref(ref, path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getframerate() != 8000:
            return f"{path}: not 8 kHz 16 bit, ignored"
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            x = x.reshape(-1, w.getnchannels())[:, 0]
    add_ngrams(ref, lin2ulaw(x))
    return None


def tone_share(samples, freqs, bw=60):
    x = samples * np.hanning(len(samples))
    p = np.abs(np.fft.rfft(x)) ** 2
    fr = np.fft.rfftfreq(len(samples), 1 / 8000)
    tot = p[fr > 50].sum()
    if tot <= 0:
        return {f: 0.0 for f in freqs}
    return {f: float(p[(fr >= f - bw) & (fr <= f + bw)].sum() / tot) for f in freqs}


def tshark(args, timeout=120):
    r = subprocess.run(["tshark", "-n"] + args, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"tshark {' '.join(args)}: {r.stderr.strip()[-300:]}")
    return r.stdout


def rtp_header_len(p):
    cc = p[0] & 0x0F
    off = 12 + 4 * cc
    if p[0] & 0x10 and len(p) >= off + 4:
        off += 4 + 4 * int.from_bytes(p[off + 2:off + 4], "big")
    return off


def check_media(a, out):
    lo, hi = (int(x) for x in a.rtp_ports.split("-"))
    txt = tshark(["-r", a.pcap, "-Y", f"udp.port >= {lo} && udp.port <= {hi}", "-T", "fields",
                  "-E", "separator=\t", "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst",
                  "-e", "udp.dstport", "-e", "udp.payload"])
    tag = TAGS.get(a.suite) if a.suite else None
    ref = set()
    for f in a.tones:
        tone_ref(ref, f, a.amp)
    for p in a.ref_wav:
        err = wav_ref(ref, p)
        if err:
            print("note: " + err)
    out["known_runs"] = len(ref)
    flows = collections.OrderedDict()
    udp_total = rtcp = nonrtp = 0
    for line in txt.splitlines():
        parts = line.split("\t")
        if len(parts) < 5 or not parts[4]:
            continue
        udp_total += 1
        sport, dport = int(parts[1]), int(parts[3])
        pl = bytes.fromhex(parts[4].replace(":", ""))
        if len(pl) < 12 or pl[0] >> 6 != 2:
            nonrtp += 1
            continue
        if 72 <= (pl[1] & 0x7F) <= 76:
            rtcp += 1
            continue
        to_bridge = lo <= dport <= hi
        key = f"{parts[0]}:{sport} -> {parts[2]}:{dport}" + (" (to bridge)" if to_bridge else " (from bridge)")
        flows.setdefault(key, []).append(pl)
    out.update(udp_packets=udp_total, rtcp_packets=rtcp, non_rtp_packets=nonrtp)
    print(f"media: {udp_total} UDP packets on ports {a.rtp_ports} ({rtcp} RTCP, {nonrtp} not RTP), "
          f"{len(ref)} known 16-byte audio runs to look for")
    judged, bad = [], []
    for key, pkts in flows.items():
        f = {"flow": key, "packets": len(pkts)}
        out["flows"].append(f)
        if len(pkts) < a.min_packets:
            f["verdict"] = "skipped (too few packets)"
            print(f"  {key}: {len(pkts)} packets, too few to judge")
            continue
        pts = collections.Counter(p[1] & 0x7F for p in pkts)
        ulen = collections.Counter(len(p) for p in pkts)
        bodies = []
        clear_tone = known = badlen = 0
        firsts = []
        examples = []
        for p in pkts:
            pt = p[1] & 0x7F
            body = p[rtp_header_len(p):]
            if not body:
                continue
            firsts.append(body[0])
            bodies.append(body)
            if pt in (0, 8):
                if tag is not None and len(body) != 160 + tag:
                    badlen += 1
                if len(body) >= 160:
                    sh = tone_share(DEC[pt][np.frombuffer(body[:160], dtype=np.uint8)], a.tones) if a.tones else {}
                    if any(v > 0.5 for v in sh.values()):
                        clear_tone += 1
                        if len(examples) < 2:
                            examples.append({k: round(v, 2) for k, v in sh.items()})
            elif pt == 101 and tag is not None and len(body) != 4 + tag:
                badlen += 1
            if ref:
                for i in range(len(body) - NGRAM + 1):
                    if body[i:i + NGRAM] in ref:
                        known += 1
                        break
        allb = b"".join(bodies)
        ent = entropy(allb)
        fent = entropy(bytes(firsts))
        fmode = collections.Counter(firsts).most_common(1)[0][1] / len(firsts) if firsts else 1.0
        reasons = []
        if ent < 7.8:
            reasons.append(f"payload entropy {ent:.2f} < 7.8 bit/byte")
        if fent < 6.0:
            reasons.append(f"first-byte entropy {fent:.2f} < 6.0")
        if fmode > 0.10:
            reasons.append(f"first byte repeats in {fmode:.0%} of packets")
        if clear_tone:
            reasons.append(f"{clear_tone} packets decode to a clear {'/'.join(f'{t:g}' for t in a.tones)} Hz tone (e.g. {examples})")
        if known:
            reasons.append(f"{known} packets contain known audio bytes (tone / recording)")
        if badlen:
            reasons.append(f"{badlen} packets not 160+{tag} (G.711) / 4+{tag} (event) bytes after the header")
        # only the length is off: encrypted, but not with the expected suite's tag
        verdict = ("ENCRYPTED" if not reasons else
                   "WRONG-LENGTH" if reasons == reasons[-1:] and badlen else "PLAINTEXT")
        f.update(payload_types=dict(pts), udp_payload_lengths=dict(ulen.most_common(4)),
                 entropy=round(ent, 3), first_byte_entropy=round(fent, 2),
                 first_byte_mode=round(fmode, 3), clear_tone_packets=clear_tone,
                 known_bytes_packets=known, wrong_length_packets=badlen,
                 first_payload_bytes=[b.hex() for b in bodies[10:13]],
                 verdict=verdict, reasons=reasons)
        judged.append(f)
        print(f"  {key}: {len(pkts)} pkts PT {dict(pts)} UDP payload lengths {dict(ulen.most_common(3))} "
              f"entropy {ent:.3f} first-byte entropy {fent:.2f} (mode {fmode:.0%}) "
              f"clear-tone pkts {clear_tone} known-bytes pkts {known} wrong-length pkts {badlen} "
              f"first bytes {bodies[10][:8].hex() if len(bodies) > 10 else '-'} => {verdict}")
        for r in reasons:
            print(f"      {r}")
        if a.expect == "encrypted" and verdict != "ENCRYPTED":
            bad.append(f"{key} looks {verdict}: {'; '.join(reasons)}")
        if a.expect == "plain" and verdict != "PLAINTEXT":
            bad.append(f"{key} looks {verdict} although plain RTP was expected")
    if not judged:
        return 3, [f"no RTP flow with >= {a.min_packets} packets on ports {a.rtp_ports}"]
    if a.expect == "encrypted" and len(judged) < a.min_flows:
        bad.append(f"only {len(judged)} RTP flows judged, expected at least {a.min_flows}")
    if a.suite and a.expect == "encrypted":
        want = 172 + tag
        print(f"  expected UDP payload of a 20 ms PCMU packet with {a.suite}: 12 + 160 + {tag} = {want}")
    return (1 if bad else 0), bad


def check_sip_tls(a, out):
    port = a.sip_tls_port
    txt = tshark(["-r", a.pcap, "-d", f"tcp.port=={port},tls", "-Y", f"tcp.port=={port} && tcp.len>0",
                  "-T", "fields", "-E", "separator=\t", "-e", "tcp.srcport", "-e", "tcp.dstport",
                  "-e", "tcp.payload", "-e", "tls.record.content_type", "-e", "tls.record.opaque_type",
                  "-e", "tls.handshake.type", "-e", "tls.handshake.extensions.supported_version"])
    segs = up = down = 0
    hs = set()
    appdata = {"to": 0, "from": 0}
    clear = []
    version = None
    conns = set()
    pat = re.compile(rb"SIP/2\.0|INVITE sip|ACK sip|BYE sip|a=crypto|m=audio|Call-ID:", re.I)
    for line in txt.splitlines():
        p = line.split("\t")
        if len(p) < 3 or not p[2]:
            continue
        segs += 1
        to_bridge = int(p[1]) == port
        conns.add(p[0] if to_bridge else p[1])
        if to_bridge:
            up += 1
        else:
            down += 1
        data = bytes.fromhex(p[2].replace(":", ""))
        m = pat.search(data)
        if m:
            clear.append(data[max(0, m.start() - 20):m.end() + 40].decode("latin-1"))
        types = set(p[3].split(",")) | set(p[4].split(",") if len(p) > 4 else [])
        if "23" in types:
            appdata["to" if to_bridge else "from"] += 1
        if len(p) > 5 and p[5]:
            hs.update(p[5].split(","))
        if len(p) > 6 and p[6] and not to_bridge:
            version = p[6]
    out["sip_tls"] = {"port": port, "segments": segs, "to_bridge": up, "from_bridge": down,
                      "connections": len(conns), "handshake_types": sorted(hs),
                      "application_data": appdata, "server_version": version,
                      "cleartext_sip": clear[:3]}
    vname = {"0x0304": "TLS 1.3", "0x0303": "TLS 1.2"}.get(version or "", version or "TLS 1.2 or older (no supported_versions)")
    print(f"sip: {segs} TCP segments with data on port {port} ({up} to the bridge, {down} back) in "
          f"{len(conns)} connection(s); TLS handshake types {sorted(hs)}; "
          f"application-data records {appdata['to']} to / {appdata['from']} from the bridge; "
          f"server chose {vname}; cleartext SIP found: {len(clear)}")
    bad = []
    if segs == 0:
        bad.append(f"no TCP payload on port {port} captured (no SIP over TLS?)")
    if clear:
        bad.append(f"cleartext SIP on TCP port {port}: {clear[0]!r}")
    if not {"1", "2"} <= hs:
        bad.append(f"no TLS ClientHello+ServerHello on port {port} (handshake types {sorted(hs)})")
    if appdata["to"] == 0 or appdata["from"] == 0:
        bad.append(f"no TLS application data in both directions on port {port}")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--expect", choices=["encrypted", "plain"], required=True)
    ap.add_argument("--rtp-ports", default="30000-30999")
    ap.add_argument("--suite", choices=sorted(TAGS))
    ap.add_argument("--tones", default="440 620")
    ap.add_argument("--amp", type=float, default=0.25)
    ap.add_argument("--ref-wav", action="append", default=[])
    ap.add_argument("--min-packets", type=int, default=100)
    ap.add_argument("--min-flows", type=int, default=2)
    ap.add_argument("--sip-tls-port", type=int)
    ap.add_argument("--json")
    a = ap.parse_args()
    a.tones = [float(t) for t in a.tones.split()]
    out = {"pcap": a.pcap, "expect": a.expect, "suite": a.suite, "flows": []}
    try:
        rc, bad = check_media(a, out)
        if a.sip_tls_port:
            sbad = check_sip_tls(a, out)
            bad += sbad
            if sbad and rc == 0:
                rc = 1
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: wire check: {e}", file=sys.stderr)
        return 2
    out["ok"] = rc == 0
    out["failures"] = bad
    judged = [f for f in out["flows"] if "reasons" in f]
    want = "ENCRYPTED" if a.expect == "encrypted" else "PLAINTEXT"
    wrong = [f for f in judged if f["verdict"] != want]
    summ = []
    if wrong:
        summ.append(f"{len(wrong)} of {len(judged)} RTP flows look "
                    + "/".join(sorted({f['verdict'] for f in wrong})))
        if a.expect == "encrypted":
            det = [("clear-tone pkts", "clear_tone_packets"), ("known-bytes pkts", "known_bytes_packets"),
                   ("wrong-length pkts", "wrong_length_packets")]
            parts = [f"{lab} {'+'.join(str(f[k]) for f in wrong)}" for lab, k in det
                     if any(f[k] for f in wrong)]
            parts.append("entropy " + "/".join(f"{f['entropy']:.2f}" for f in wrong))
            summ[-1] += " (" + ", ".join(parts) + ")"
    summ += [b for b in bad if "looks" not in b]
    if summ:
        print("SUMMARY: " + "; ".join(summ), file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    for b in bad:
        print("FAIL: " + b, file=sys.stderr)
    if rc == 0:
        print(f"OK: media {a.expect.upper()} in all {sum(1 for f in out['flows'] if 'reasons' in f)} judged flows"
              + (f"; SIP on TCP {a.sip_tls_port} is TLS only" if a.sip_tls_port else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())
