#!/usr/bin/env python3
"""Generate an RTP pcap for SIPp's play_pcap_audio (sotto sip-tests; adapted from the
loopback test recipes).

One SSRC, monotonic sequence numbers and timestamps (unlike concatenating
SIPp's shipped dtmf_2833_N.pcap files, whose fixed seq/timestamps go
backwards for PINs like "21" and collapse repeated digits like "11").

Layout:   [silence --pre s] [RFC 4733 digits --dtmf] [silence --post-dtmf s]
          [tone --tone Hz for --secs s] [silence --tail s]
          --dtmf may hold several entries separated by spaces ("1111# 2222#"):
          --group-gap s of silence between them.
Info:     --info FILE writes JSON {"duration_ms", "dtmf_end_ms": [end of each
          entry, ms from the first packet], "packets"} (no tshark needed).
Codec:    PCMU (PT 0) or PCMA (PT 8), 8 kHz, --ptime ms; events PT --dtmf-pt.
In-band:  --dtmf-inband sends the digits as DTMF tone pairs in the audio instead
          (ITU-T Q.23 frequencies, --dtmf-ms on, --dtmf-gap-ms off, each tone at
          about -10 dBm0, over low noise), for gateways that send no events.
Optional: --srtp-key <base64 30 bytes>: encrypt every packet as SRTP
          (AES_CM_128_HMAC_SHA1_80, RFC 3711) with that master key+salt, so
          SIPp can "speak" SRTP-SDES: put the same key in the SDP a=crypto.

Link type Ethernet, 127.0.0.1:6000 -> 127.0.0.1:6000 (SIPp rewrites
addresses/ports; every packet uses the same port so audio and events land
on the negotiated m=audio port).
"""
import argparse
import base64
import math
import struct
import sys


def lin2ulaw(s):
    BIAS, CLIP = 0x84, 32635
    sign = 0x80 if s < 0 else 0
    if s < 0:
        s = -s
    s = min(s, CLIP) + BIAS
    exp = 7
    mask = 0x4000
    while exp > 0 and not (s & mask):
        exp -= 1
        mask >>= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def lin2alaw(s):
    sign = 0x80 if s >= 0 else 0
    if s < 0:
        s = -s - 1 if s > -32768 else 32767
    s = min(s, 32767)
    if s >= 256:
        exp = int(math.log2(s)) - 7
        exp = min(exp, 7)
        mant = (s >> (exp + 3)) & 0x0F
        v = (exp << 4) | mant
    else:
        v = s >> 4
    return (v | sign) ^ 0x55


DIGITS = {**{str(i): i for i in range(10)}, "*": 10, "#": 11,
          "A": 12, "B": 13, "C": 14, "D": 15}


class SRTP:
    """Minimal RFC 3711 sender: AES_CM_128_HMAC_SHA1_80, ROC handling."""

    def __init__(self, b64):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        self.Cipher, self.algorithms, self.modes = Cipher, algorithms, modes
        km = base64.b64decode(b64)
        if len(km) != 30:
            sys.exit("--srtp-key must be base64 of 30 bytes (16 key + 14 salt)")
        mk, ms = km[:16], km[16:]
        self.k_e = self._prf(mk, ms, 0, 16)
        self.k_a = self._prf(mk, ms, 1, 20)
        self.k_s = self._prf(mk, ms, 2, 14)
        self.roc = 0
        self.last_seq = None

    def _ctr(self, key, iv16, n):
        c = self.Cipher(self.algorithms.AES(key), self.modes.CTR(iv16)).encryptor()
        return c.update(b"\0" * n) + c.finalize()

    def _prf(self, mk, ms, label, n):
        x = int.from_bytes(ms, "big") ^ (label << 48)     # key_id = label || r (r=0)
        iv = (x << 16).to_bytes(16, "big")
        return self._ctr(mk, iv, n)

    def protect(self, pkt):
        import hashlib
        import hmac
        seq = struct.unpack("!H", pkt[2:4])[0]
        ssrc = struct.unpack("!I", pkt[8:12])[0]
        if self.last_seq is not None and seq < self.last_seq and self.last_seq - seq > 0x8000:
            self.roc += 1
        self.last_seq = seq
        idx = (self.roc << 16) | seq
        iv = (int.from_bytes(self.k_s, "big") << 16) ^ (ssrc << 64) ^ (idx << 16)
        hdr, pl = pkt[:12], pkt[12:]
        ks = self._ctr(self.k_e, iv.to_bytes(16, "big"), len(pl))
        enc = bytes(a ^ b for a, b in zip(pl, ks))
        tag = hmac.new(self.k_a, hdr + enc + struct.pack("!I", self.roc),
                       hashlib.sha1).digest()[:10]
        return hdr + enc + tag


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--codec", choices=["pcmu", "pcma"], default="pcmu")
    ap.add_argument("--pre", type=float, default=2.0, help="seconds of silence before DTMF")
    ap.add_argument("--dtmf", default="", help="digits 0-9*#A-D; spaces separate entries")
    ap.add_argument("--group-gap", type=float, default=3.0,
                    help="seconds of silence between space-separated DTMF entries")
    ap.add_argument("--dtmf-pt", type=int, default=101)
    ap.add_argument("--dtmf-inband", action="store_true",
                    help="digits as tones in the audio, not RFC 4733 events")
    ap.add_argument("--dtmf-ms", type=int, default=160, help="event duration per digit")
    ap.add_argument("--dtmf-gap-ms", type=int, default=100, help="silence between digits")
    ap.add_argument("--post-dtmf", type=float, default=0.5, help="silence after the digits")
    ap.add_argument("--tone", type=float, default=440.0)
    ap.add_argument("--amp", type=float, default=0.5)
    ap.add_argument("--secs", type=float, default=10.0, help="tone duration")
    ap.add_argument("--tail", type=float, default=0.0, help="seconds of silence after the tone")
    ap.add_argument("--info", help="write timing info as JSON to this file")
    ap.add_argument("--ptime", type=int, default=20)
    ap.add_argument("--ssrc", type=lambda s: int(s, 0), default=0x5EED1234)
    ap.add_argument("--srtp-key", help="base64 master key||salt (30 bytes) -> SRTP pcap")
    a = ap.parse_args()

    pt = 0 if a.codec == "pcmu" else 8
    enc = lin2ulaw if a.codec == "pcmu" else lin2alaw
    spp = 8 * a.ptime                       # samples per packet
    silence = bytes([enc(0)]) * spp
    srtp = SRTP(a.srtp_key) if a.srtp_key else None

    pkts = []                                # (time_s, rtp bytes)
    st = {"seq": 1000, "ts": 160000, "t": 0.0, "phase": 0}

    def rtp(ptype, marker, ts, payload):
        b0 = 0x80
        b1 = (0x80 if marker else 0) | ptype
        h = struct.pack("!BBHII", b0, b1, st["seq"] & 0xFFFF, ts & 0xFFFFFFFF, a.ssrc)
        st["seq"] += 1
        return h + payload

    def audio(n_pkts, gen):
        for _ in range(n_pkts):
            pkts.append((st["t"], rtp(pt, False, st["ts"], gen())))
            st["ts"] += spp
            st["t"] += a.ptime / 1000.0

    def tone_payload():
        out = bytearray()
        for i in range(spp):
            v = int(a.amp * 32767 * math.sin(2 * math.pi * a.tone * (st["phase"] + i) / 8000))
            out.append(enc(v))
        st["phase"] += spp
        return bytes(out)

    rows, cols = [697, 770, 852, 941], [1209, 1336, 1477, 1633]
    keypad = ["123A", "456B", "789C", "*0#D"]
    rng = [12345]

    def hiss():
        # A small LCG: low noise (about -60 dBm0) so the tones are not on pure silence.
        rng[0] = (rng[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (rng[0] >> 16) % 65 - 32

    def inband_digit(d):
        r = next(i for i, row in enumerate(keypad) if d in row)
        f1, f2 = rows[r], cols[keypad[r].index(d)]
        on = max(1, a.dtmf_ms // a.ptime)
        off = max(1, a.dtmf_gap_ms // a.ptime)
        for k in range(on + off):
            out = bytearray()
            for i in range(spp):
                n = k * spp + i
                v = hiss()
                if k < on:
                    v += int(5000 * (math.sin(2 * math.pi * f1 * n / 8000)
                                     + math.sin(2 * math.pi * f2 * n / 8000)))
                out.append(enc(v))
            pkts.append((st["t"], rtp(pt, False, st["ts"], bytes(out))))
            st["ts"] += spp
            st["t"] += a.ptime / 1000.0

    audio(int(a.pre * 1000 / a.ptime), lambda: silence)
    groups = a.dtmf.split()
    dtmf_end_ms = []
    for gi, group in enumerate(groups):
        if gi:
            audio(int(a.group_gap * 1000 / a.ptime), lambda: silence)
        for d in group:
            if d.upper() not in DIGITS:
                sys.exit(f"bad DTMF digit {d!r}")
            ev = DIGITS[d.upper()]
            if a.dtmf_inband:
                inband_digit(d.upper())
                continue
            ts0 = st["ts"]
            n = max(1, a.dtmf_ms // a.ptime)
            for i in range(n):
                dur = (i + 1) * spp
                pl = struct.pack("!BBH", ev, 10, dur)          # E=0, vol 10
                pkts.append((st["t"], rtp(a.dtmf_pt, i == 0, ts0, pl)))
                st["t"] += a.ptime / 1000.0
            for i in range(3):                  # 3 x end packet, 5 ms apart, before the next
                pl = struct.pack("!BBH", ev, 0x80 | 10, n * spp)   # audio packet (monotonic times)
                pkts.append((st["t"] - 0.015 + i * 0.005, rtp(a.dtmf_pt, False, ts0, pl)))
            st["ts"] = ts0 + n * spp
            audio(max(1, a.dtmf_gap_ms // a.ptime), lambda: silence)
        dtmf_end_ms.append(int(round(st["t"] * 1000)))
    audio(int(a.post_dtmf * 1000 / a.ptime), lambda: silence)
    audio(int(a.secs * 1000 / a.ptime), tone_payload)
    audio(int(a.tail * 1000 / a.ptime), lambda: silence)

    with open(a.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, r in pkts:
            if srtp:
                r = srtp.protect(r)
            udp = struct.pack("!HHHH", 6000, 6000, 8 + len(r), 0) + r
            tot = 20 + len(udp)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, 0, 0x4000, 64, 17, 0,
                             bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
            s = sum(struct.unpack("!10H", ip))
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
            frame = b"\0" * 12 + b"\x08\x00" + ip + udp
            sec, usec = divmod(int(round(t * 1e6)), 1000000)   # usec always < 1e6
            f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            f.write(frame)
    dur = pkts[-1][0] if pkts else 0
    if a.info:
        import json
        with open(a.info, "w") as f:
            json.dump({"duration_ms": int(round(dur * 1000)), "dtmf_end_ms": dtmf_end_ms,
                       "packets": len(pkts)}, f)
    print(f"{a.out}: {len(pkts)} packets, {dur:.2f} s, codec {a.codec}/PT{pt}, "
          f"dtmf '{a.dtmf}' " + ("in-band" if a.dtmf_inband else f"PT{a.dtmf_pt}")
          + f", tone {a.tone:g} Hz {a.secs:g}s"
          + (", SRTP" if srtp else ""))


if __name__ == "__main__":
    main()
