#!/usr/bin/env python3
"""Speech quality through sotto over a lossy, jittery uplink (issue 18, item 5).

One trial = two SIP callers on loopback UDP in one room of a running bridge:
  talker    streams a speech file in its codec (20 ms frames); after its PIN, every
            packet goes through a seeded impairment model applied in the talker's own
            send schedule (dropped, or sent late by a random extra delay so packets
            reorder naturally). For the bridge this is exactly an impaired uplink.
  listener  clean link, same codec; records every RTP packet it receives, with its
            arrival time, and decodes the stream by RTP timestamp.
Both type the PIN as RFC 4733 digits first.

Scoring (offline, after each trial): the listener's audio is aligned on the source
by cross-correlation (piecewise, ~3 s chunks, so a jitter buffer that grows or shrinks
its delay between utterances does not smear STOI), then PESQ P.862 NB (8 kHz), PESQ
P.862.2 WB (16 kHz, G.722 and Opus) and STOI against the clean source. The same scores
for two offline references:
  codec alone     source -> encode -> decode, no bridge, no network (the ceiling);
                  also "tandem" (two passes), the ceiling of any transcoding bridge.
  no concealment  the talker's own packets as the impaired link delivered them,
                  decoded with silence for every lost packet, no PLC, no FEC, an
                  unbounded reorder buffer (so jitter alone costs it nothing).
Added delay: from the talker's nominal (unimpaired) send time of a packet to the
arrival at the listener of the packet carrying the same audio (median over chunks).

Usage: sq.py --sip-port P [--codecs pcmu,g722,opus] [--conditions ...] [--quick]
             --out DIR
"""
import argparse
import json
import math
import os
import queue
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings

warnings.filterwarnings("ignore", category=SyntaxWarning)   # opuslib 3.0.1 on Python 3.11

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly, correlate

HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL_IP = "127.0.0.1"
PIN = "31415926#"
DIGITS = {**{str(i): i for i in range(10)}, "*": 10, "#": 11}
EV_PT = 101


def log(msg):
    print(f"[sq {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ codecs
def _ulaw_dec_table():
    t = np.zeros(256, dtype=np.int16)
    for i in range(256):
        u = ~i & 0xFF
        s = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
        s -= 0x84
        t[i] = -s if u & 0x80 else s
    return t


ULAW_DEC = _ulaw_dec_table()


def lin2ulaw(x):
    x = np.asarray(x, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    m = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.clip(np.floor(np.log2(m)).astype(np.int32) - 7, 0, 7)
    mant = (m >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


class Pcmu:
    name, rate, frame, ts_step, pt = "pcmu", 8000, 160, 160, 0
    rtpmap = ["a=rtpmap:0 PCMU/8000"]
    ev_rate = 8000

    def encoder(self):
        return lambda pcm: lin2ulaw(pcm)

    def decoder(self):
        return lambda data: ULAW_DEC[np.frombuffer(data, dtype=np.uint8)].astype(np.int16)


class G722c:
    name, rate, frame, ts_step, pt = "g722", 16000, 320, 160, 9
    rtpmap = ["a=rtpmap:9 G722/8000"]
    ev_rate = 8000

    def encoder(self):
        import G722
        c = G722.G722(16000, 64000)
        return lambda pcm: c.encode(np.asarray(pcm, dtype=np.int16))

    def decoder(self):
        import G722
        c = G722.G722(16000, 64000)
        return lambda data: np.asarray(c.decode(data), dtype=np.int16)


class OpusC:
    """Opus at 16 kHz (we offer maxplaybackrate=16000, so the bridge sends us
    wideband at 24 kbit/s with FEC); we send 24 kbit/s VBR, in-band FEC on,
    expected loss 10 % (fixed, as a client without RTCP feedback would), complexity 10."""
    name, rate, frame, ts_step, pt = "opus", 16000, 320, 960, 111
    rtpmap = ["a=rtpmap:111 opus/48000/2",
              "a=fmtp:111 maxplaybackrate=16000;sprop-maxcapturerate=16000;useinbandfec=1"]
    ev_rate = 48000

    def encoder(self):
        import warnings
        warnings.filterwarnings("ignore", category=SyntaxWarning)
        import opuslib
        import opuslib.api.ctl as ctl
        import opuslib.api.encoder as api
        e = opuslib.Encoder(16000, 1, "voip")
        e.bitrate = 24000
        e.complexity = 10
        # opuslib 3.0.1's inband_fec / packet_loss_perc setters are broken: the raw ctl
        api.encoder_ctl(e.encoder_state, ctl.set_inband_fec, 1)
        api.encoder_ctl(e.encoder_state, ctl.set_packet_loss_perc, 10)
        assert api.encoder_ctl(e.encoder_state, ctl.get_inband_fec) == 1
        return lambda pcm: e.encode(np.asarray(pcm, dtype=np.int16).tobytes(), 320)

    def decoder(self):
        import opuslib
        d = opuslib.Decoder(16000, 1)
        return lambda data: np.frombuffer(d.decode(data, 320), dtype=np.int16).copy()


CODECS = {"pcmu": Pcmu(), "g722": G722c(), "opus": OpusC()}


def codec_pass(codec, x, warm_s=3.0):
    """encode -> decode; the encoder first codes warm_s of silence, as the live
    talker's does before its speech (Opus adapts its mode to the signal)."""
    enc, dec = codec.encoder(), codec.decoder()
    F = codec.frame
    sil = np.zeros(F, dtype=np.int16)
    for _ in range(int(warm_s * 50)):
        enc(sil)
    n = len(x) // F
    out = [dec(enc(x[i * F:(i + 1) * F])) for i in range(n)]
    return np.concatenate(out)


def opus_fec_plc(sent, n):
    """Offline libopus receiver over the delivered frames (dict index -> payload):
    FEC from the next packet when it arrived, libopus PLC otherwise; unbounded buffer."""
    import opuslib
    d = opuslib.Decoder(16000, 1)
    out = np.zeros(n * 320, dtype=np.int16)
    for i in range(n):
        if i in sent:
            y = d.decode(sent[i], 320)
        elif i + 1 in sent:
            y = d.decode(sent[i + 1], 320, decode_fec=True)
        else:
            y = d.decode(b"", 320)
        out[i * 320:(i + 1) * 320] = np.frombuffer(y, dtype=np.int16)[:320]
    return out


# ------------------------------------------------------------------ impairments
CONDITIONS = {
    "clean": {},
    "loss5": {"loss": 0.05},
    "loss10": {"loss": 0.10},
    "bursty10": {"ge": (0.10, 3.0)},            # Gilbert-Elliott: mean loss, mean burst
    "jitter_normal": {"jitter": ("normal", 40.0, 30.0)},
    "jitter_uniform": {"jitter": ("uniform", 0.0, 120.0)},
    "loss10_jitter": {"loss": 0.10, "jitter": ("normal", 40.0, 30.0)},
}


def impairment(cond, n, seed):
    """-> (lost[n] bool, extra_delay_s[n]) for n packets, seeded."""
    rng = np.random.default_rng(seed)
    c = CONDITIONS[cond]
    lost = np.zeros(n, dtype=bool)
    if "loss" in c:
        lost = rng.random(n) < c["loss"]
    if "ge" in c:
        mean, burst = c["ge"]
        r = 1.0 / burst                      # P(bad -> good)
        p = r * mean / (1.0 - mean)          # P(good -> bad): stationary loss = mean
        bad = rng.random() < mean
        u = rng.random(n)
        for i in range(n):
            bad = (u[i] >= r) if bad else (u[i] < p)
            lost[i] = bad
    delay = np.zeros(n)
    if "jitter" in c:
        kind, a, b = c["jitter"]
        if kind == "normal":
            delay = np.clip(rng.normal(a, b, n), 0, None) / 1000.0
        else:
            delay = rng.uniform(a, b, n) / 1000.0
    return lost, delay


# ------------------------------------------------------------------ SIP (UDP)
class Sip:
    def __init__(self, port, user, room="demo"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCAL_IP, 0))
        self.sock.connect((LOCAL_IP, port))
        self.lport = self.sock.getsockname()[1]
        self.port, self.user, self.room = port, user, room
        self.q = queue.Queue()
        self.closed = False
        self.ftag = "%08x" % random.getrandbits(32)
        self.call_id = "%016x@sotto-sq" % random.getrandbits(64)
        self.to_tag = None
        self.cseq = 0
        self.ruri = f"sip:{room}@{LOCAL_IP}:{port}"
        self.target = self.ruri
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        while not self.closed:
            try:
                self.sock.settimeout(0.2)
                raw = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                break
            head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
            first = head[0]
            hdrs = {}
            for ln in head[1:]:
                k, _, v = ln.partition(":")
                hdrs.setdefault(k.strip().lower(), []).append(v.strip())
            body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
            if first.startswith("SIP/2.0"):
                self.q.put((int(first.split()[1]), hdrs, body))
            elif not first.startswith("ACK"):
                resp = "SIP/2.0 200 OK\r\n"
                for v in hdrs.get("via", []) + hdrs.get("v", []):
                    resp += f"Via: {v}\r\n"
                for h in ("from", "to", "call-id", "cseq"):
                    resp += f"{h.title()}: {(hdrs.get(h) or [''])[0]}\r\n"
                resp += "Content-Length: 0\r\n\r\n"
                try:
                    self.sock.send(resp.encode())
                except OSError:
                    pass

    def request(self, method, body=b"", cseq=None):
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to = f"<sip:{self.room}@{LOCAL_IP}:{self.port}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        msg = (f"{method} {self.target} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {LOCAL_IP}:{self.lport};branch=z9hG4bK{random.getrandbits(64):016x};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@{LOCAL_IP}>;tag={self.ftag}\r\n"
               f"To: {to}\r\nCall-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
               f"Contact: <sip:{self.user}@{LOCAL_IP}:{self.lport}>\r\nUser-Agent: sotto-bench-sq\r\n")
        if body:
            msg += "Content-Type: application/sdp\r\n"
        msg += f"Content-Length: {len(body)}\r\n\r\n"
        data = msg.encode() + body
        self.sock.send(data)
        return cseq, data

    def wait_final(self, cseq, method, timeout, resend=None):
        end, nxt, t1 = time.time() + timeout, time.time() + 0.5, 0.5
        got_any = False
        while time.time() < end:
            try:
                st, h, body = self.q.get(timeout=0.1)
            except queue.Empty:
                if resend and not got_any and time.time() >= nxt:
                    self.sock.send(resend)
                    t1 = min(2 * t1, 4)
                    nxt = time.time() + t1
                continue
            if (h.get("cseq") or [""])[0].split() != [str(cseq), method]:
                continue
            got_any = True
            if st >= 200:
                return st, h, body
        return None, None, None

    def invite(self, codec, rtp_port):
        sid = random.randint(1, 2**31)
        sdp = (f"v=0\r\no=- {sid} {sid} IN IP4 {LOCAL_IP}\r\ns=sq\r\nc=IN IP4 {LOCAL_IP}\r\n"
               f"t=0 0\r\nm=audio {rtp_port} RTP/AVP {codec.pt} {EV_PT}\r\n"
               + "".join(l + "\r\n" for l in codec.rtpmap)
               + f"a=rtpmap:{EV_PT} telephone-event/{codec.ev_rate}\r\na=fmtp:{EV_PT} 0-15\r\n"
               "a=ptime:20\r\na=sendrecv\r\n").encode()
        cseq, data = self.request("INVITE", sdp)
        st, h, body = self.wait_final(cseq, "INVITE", 10, resend=data)
        if st is None or st >= 300:
            raise RuntimeError(f"INVITE failed: {st}")
        m = re.search(r";\s*tag=([^;>\s]+)", (h.get("to") or h.get("t"))[0])
        self.to_tag = m.group(1) if m else None
        c = re.search(r"<([^>]+)>", (h.get("contact") or h.get("m") or [""])[0])
        if c:
            self.target = c.group(1)
        self.request("ACK", cseq=cseq)
        txt = body.decode()
        addr = re.search(r"(?m)^c=IN IP4 (\S+)", txt).group(1)
        mm = re.search(r"(?m)^m=audio (\d+) \S+ ([\d ]+)", txt)
        fmts = mm.group(2).split()
        if str(codec.pt) not in fmts:
            raise RuntimeError(f"bridge answered {fmts}, not PT {codec.pt}")
        return addr, int(mm.group(1))

    def bye(self):
        cseq, data = self.request("BYE")
        self.wait_final(cseq, "BYE", 3, resend=data)
        self.closed = True
        self.sock.close()


# ------------------------------------------------------------------ RTP endpoints
def rtp(pt, marker, seq, ts, ssrc, payload):
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def build_stream(codec, pre_s, speech, post_s, wait_s):
    """The caller's packets in nominal order: silence pre_s, PIN, silence wait_s,
    speech, silence post_s. -> list of dict(slot, pkt, kind, sframe), index of the
    first packet after the PIN, slot of the first speech frame."""
    enc = codec.encoder()
    ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
    F = codec.frame
    sil = np.zeros(F, dtype=np.int16)
    ev_unit = codec.ev_rate // 50
    out, slot = [], 0

    def audio(frame, sframe=None):
        nonlocal seq, ts, slot
        out.append({"slot": slot, "pkt": rtp(codec.pt, False, seq, ts, ssrc, enc(frame)),
                    "kind": "audio", "sframe": sframe})
        seq, ts, slot = seq + 1, ts + codec.ts_step, slot + 1

    for _ in range(int(pre_s * 50)):
        audio(sil)
    for d in PIN:
        ev, ev_ts = DIGITS[d], ts
        for i in range(6):
            end = i == 5
            pl = struct.pack("!BBH", ev, (0x80 if end else 0) | 10, (min(i, 4) + 1) * ev_unit)
            for _ in range(3 if end else 1):
                out.append({"slot": slot, "pkt": rtp(EV_PT, i == 0, seq, ev_ts, ssrc, pl),
                            "kind": "event", "sframe": None})
                seq += 1
            ts, slot = ts + codec.ts_step, slot + 1
        for _ in range(8):                  # 160 ms between digits
            audio(sil)
    first_impaired = len(out)
    for _ in range(int(wait_s * 50)):
        audio(sil)
    speech_slot = slot
    n = len(speech) // F
    for i in range(n):
        audio(speech[i * F:(i + 1) * F], i)
    for _ in range(int(post_s * 50)):
        audio(sil)
    return out, first_impaired, speech_slot


class Endpoint:
    """Sends a precomputed (time, packet) schedule to the bridge; records what arrives."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCAL_IP, 0))
        self.port = self.sock.getsockname()[1]
        self.rx = []
        self.stop = threading.Event()
        self.t0 = None

    def start_rx(self):
        def loop():
            self.sock.settimeout(0.1)
            while not self.stop.is_set():
                try:
                    pkt = self.sock.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    break
                self.rx.append((time.monotonic(), pkt))
        self.rxt = threading.Thread(target=loop, daemon=True)
        self.rxt.start()

    def send_schedule(self, dest, sched, t0, deadline):
        """sched: list of (t_rel, pkt) sorted by t_rel; returns when done.
        self.late: how late each packet left (s), our own scheduling jitter."""
        self.late = []
        for t_rel, pkt in sched:
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            d = t0 + t_rel - time.monotonic()
            if d > 0:
                time.sleep(d)
            self.late.append(time.monotonic() - t0 - t_rel)
            try:
                self.sock.sendto(pkt, dest)
            except OSError:
                pass

    def close(self):
        self.stop.set()
        time.sleep(0.15)
        self.sock.close()


def parse_rtp(pkt):
    if len(pkt) < 12 or pkt[0] >> 6 != 2:
        return None
    cc = pkt[0] & 0x0F
    off = 12 + 4 * cc
    if pkt[0] & 0x10 and len(pkt) >= off + 4:
        off += 4 + 4 * struct.unpack("!H", pkt[off + 2:off + 4])[0]
    pt = pkt[1] & 0x7F
    seq, ts = struct.unpack("!HI", pkt[2:8])
    return pt, seq, ts, pkt[off:]


def decode_received(codec, rx):
    """Listener's packets -> (pcm at codec.rate, index of first frame, arrival offset
    s.t. frame k arrived at off + k*0.02, stats)."""
    pk = []
    for t, raw in rx:
        p = parse_rtp(raw)
        if p and p[0] == codec.pt:
            pk.append((t,) + p)
    if not pk:
        return None
    # unwrap timestamps relative to the first packet
    ts0 = pk[0][3]
    frames = {}
    for t, pt, seq, ts, pl in pk:
        d = (ts - ts0) & 0xFFFFFFFF
        if d >= 2**31:
            d -= 2**32
        k = d // codec.ts_step
        frames.setdefault(k, (t, pl))
    ks = sorted(frames)
    kmin, kmax = ks[0], ks[-1]
    dec = codec.decoder()
    F = codec.frame
    out = np.zeros((kmax - kmin + 1) * F, dtype=np.int16)
    gaps = 0
    for k in range(kmin, kmax + 1):
        if k in frames:
            y = dec(frames[k][1])
            out[(k - kmin) * F:(k - kmin) * F + len(y[:F])] = y[:F]
        else:
            gaps += 1
    arr = np.array([frames[k][0] - (k - kmin) * 0.02 for k in ks])
    return out, float(np.median(arr)), {"rx_frames": len(ks), "rx_gaps": gaps,
                                       "arrival_offset_spread_ms": float((np.percentile(arr, 95) - np.percentile(arr, 5)) * 1000)}


# ------------------------------------------------------------------ trial
def run_trial(codec, cond, seed, speech, sip_port, wait_s=2.5, post_s=1.0):
    F = codec.frame
    lis_ep, tal_ep = Endpoint(), Endpoint()
    lis_sip, tal_sip = Sip(sip_port, "listener"), Sip(sip_port, "talker")
    lis_dest = lis_sip.invite(codec, lis_ep.port)
    lis_ep.start_rx()
    tal_dest = tal_sip.invite(codec, tal_ep.port)
    tal_ep.start_rx()
    # talker stream + impairment after its PIN
    tal_pk, first_imp, speech_slot = build_stream(codec, 0.6, speech, post_s, wait_s)
    n_imp = len(tal_pk) - first_imp
    lost, delay = impairment(cond, n_imp, seed)
    sched, sent_audio = [], {}
    for i, p in enumerate(tal_pk):
        t = p["slot"] * 0.02
        if i >= first_imp:
            j = i - first_imp
            if lost[j]:
                continue
            t += delay[j]
        sched.append((t, p["pkt"]))
        if p["sframe"] is not None:
            sent_audio[p["sframe"]] = p["pkt"][12:]
    sched.sort(key=lambda x: x[0])
    total_s = tal_pk[-1]["slot"] * 0.02 + 0.5
    # listener: silence + PIN then silence until the talker is done
    lis_pk, _, _ = build_stream(codec, 0.3, np.zeros(0, dtype=np.int16),
                                total_s + 1.0, 0.0)
    lis_sched = [(p["slot"] * 0.02, p["pkt"]) for p in lis_pk]
    t0 = time.monotonic() + 0.1
    th = threading.Thread(target=lis_ep.send_schedule,
                          args=(lis_dest, lis_sched, t0 - 0.3, t0 + total_s + 5), daemon=True)
    th.start()
    tal_ep.send_schedule(tal_dest, sched, t0, t0 + total_s + 5)
    time.sleep(max(0.0, t0 + total_s - time.monotonic()) + 0.4)
    lis_ep.stop.set()
    th.join(3)
    tal_sip.bye()
    lis_sip.bye()
    lis_ep.close()
    tal_ep.close()
    dec = decode_received(codec, lis_ep.rx)
    t_speech = t0 + speech_slot * 0.02       # nominal send time of speech frame 0
    # no-concealment reference: talker's delivered speech frames, silence for lost
    d2 = codec.decoder()
    n = len(speech) // F
    ref = np.zeros(n * F, dtype=np.int16)
    # (a fresh decoder: the speech starts after 0.4 s of silence)
    for i in range(n):
        if i in sent_audio:
            ref[i * F:(i + 1) * F] = d2(sent_audio[i])[:F]
    fec = opus_fec_plc(sent_audio, n) if codec.name == "opus" else None
    speech_lost = n - len(sent_audio)
    meta = {"speech_frames": n, "speech_frames_lost": speech_lost,
            "loss_rate": round(speech_lost / max(n, 1), 4),
            "impaired_packets": int(n_imp), "impaired_lost": int(lost.sum()),
            "link_mean_delay_ms": round(float(np.mean(delay[~lost])) * 1000, 1),
            "send_late_ms_p50_p99_max": [round(float(np.percentile(tal_ep.late, q)) * 1000, 2)
                                         for q in (50, 99, 100)] if tal_ep.late else None}
    return dec, t_speech, ref, fec, meta


# ------------------------------------------------------------------ scoring
def to8k(x, rate):
    return x if rate == 8000 else resample_poly(x.astype(np.float64), 1, rate // 8000)


def find_lag(src, deg, lo, hi):
    """Best lag L (deg[L+i] ~ src[i]) with lo <= L <= hi, by normalized xcorr."""
    lo = max(lo, 0)
    hi = min(hi, len(deg) - 1)
    if hi <= lo:
        return None, 0.0
    seg = deg[lo:hi + len(src)].astype(np.float64)
    s = src.astype(np.float64)
    c = correlate(seg, s, mode="valid", method="fft")
    if len(c) == 0:
        return None, 0.0
    k = int(np.argmax(c))
    e = math.sqrt(np.sum(s * s) * np.sum(seg[k:k + len(s)] ** 2)) + 1e-9
    return lo + k, float(c[k] / e)


def align(src, deg, rate, lag0, search_s=1.5, chunk_s=3.0, local_s=0.15):
    """Global lag near lag0 then per-chunk lags; -> aligned deg (len(src)), lags."""
    L, corr = find_lag(src, deg, lag0 - int(search_s * rate), lag0 + int(search_s * rate))
    if L is None:
        return None, [], corr
    out = np.zeros(len(src))
    lags = []
    step = int(chunk_s * rate)
    for a in range(0, len(src), step):
        b = min(len(src), a + step)
        if b - a < rate // 2:                  # short tail: previous lag
            la = lags[-1] if lags else L
        else:
            la, _ = find_lag(src[a:b], deg, L + a - int(local_s * rate), L + a + int(local_s * rate))
            la = (la - a) if la is not None else L
        if np.sqrt(np.mean(src[a:b].astype(np.float64) ** 2)) > 100 and b - a >= rate // 2:
            lags.append(la)
        seg = deg[max(0, la + a):max(0, la + b)]
        out[a:a + len(seg)] = seg
    return out, lags or [L], corr


def scores(codec, src, deg):
    from pesq import pesq
    from pystoi import stoi
    r = {}
    s8, d8 = to8k(src, codec.rate), to8k(deg, codec.rate)
    try:
        r["pesq_nb"] = round(float(pesq(8000, s8, d8, "nb")), 3)
    except Exception as e:
        r["pesq_nb"] = None
        r["pesq_err"] = str(e)
    if codec.rate == 16000:
        try:
            r["pesq_wb"] = round(float(pesq(16000, src.astype(np.float64), deg.astype(np.float64), "wb")), 3)
        except Exception as e:
            r["pesq_wb"] = None
            r["pesq_err"] = str(e)
    r["stoi"] = round(float(stoi(src.astype(np.float64), deg.astype(np.float64), codec.rate)), 4)
    return r


def offline_lag(src, deg, rate):
    L, _ = find_lag(src, deg, 0, int(0.2 * rate))
    return L or 0


# ------------------------------------------------------------------ material
SYNTH_TEXT = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
              "background. It is easy to tell the depth of a well. Rice is often served in round bowls.")
LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-{}.wav"


def level(x, target_db=-26.0):
    """Scale to an active speech level of target dBov (20 ms frames within 35 dB of
    the loudest, a simple stand-in for P.56)."""
    x = x.astype(np.float64)
    fr = x[:len(x) // 320 * 320].reshape(-1, 320)
    e = 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-9)
    act = fr[e > e.max() - 35]
    rms = math.sqrt(np.mean(act ** 2))
    g = 10 ** (target_db / 20) * 32768 / rms
    return np.clip(np.round(x * g), -32767, 32767).astype(np.int16)


def materials(work):
    """-> {name: int16 @16 kHz}: natural (LibriVox, public domain, from Debian's
    pocketsphinx-testdata) and synthetic (espeak-ng)."""
    os.makedirs(work, exist_ok=True)
    gap = np.zeros(int(0.4 * 16000), dtype=np.int16)
    parts = []
    for k in ("0870", "0880"):
        sr, x = wavfile.read(LIBRIVOX.format(k))
        assert sr == 16000
        parts += [x.astype(np.int16), gap]
    nat = np.concatenate([gap] + parts)
    raw = os.path.join(work, "synth_raw.wav")
    s16 = os.path.join(work, "synth16.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, SYNTH_TEXT], check=True)
    subprocess.run(["sox", raw, "-r", "16000", "-c", "1", "-b", "16", s16], check=True)
    sr, syn = wavfile.read(s16)
    syn = np.concatenate([gap, syn.astype(np.int16), gap])
    return {"natural": level(nat), "espeak": level(syn)}


def src_for(codec, x16):
    if codec.rate == 16000:
        return x16
    y = resample_poly(x16.astype(np.float64), 1, 2)
    return np.clip(np.round(y), -32767, 32767).astype(np.int16)


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--codecs", default="pcmu,g722,opus")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--materials", default="natural,espeak")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--repeats", type=int, default=1, help="talks per material and cell")
    ap.add_argument("--from-repeat", type=int, default=0, help="skip the first repeats")
    ap.add_argument("--append", action="store_true", help="add to an existing trials.json")
    a = ap.parse_args()
    raw = os.path.join(a.out, "raw")
    os.makedirs(raw, exist_ok=True)
    mats = materials(raw)
    mats = {k: mats[k] for k in a.materials.split(",")}
    results = []
    tj = os.path.join(a.out, "trials.json")
    if a.append and os.path.exists(tj):
        results = json.load(open(tj))
    t_start = time.time()
    for cname in a.codecs.split(","):
        codec = CODECS[cname]
        refs = {}
        for mname, x16 in mats.items():
            src = src_for(codec, x16)
            src = src[:len(src) // codec.frame * codec.frame]
            one = codec_pass(codec, src)
            two = codec_pass(codec, one)
            refs[mname] = {"src": src}
            # codec delay (G.722 QMF, Opus lookahead): align before scoring
            for key, y in (("alone", one), ("tandem", two)):
                L = offline_lag(src, np.concatenate([y, np.zeros(codec.rate // 5, np.int16)]), codec.rate)
                refs[mname][key] = scores(codec, src, np.concatenate([y[L:], np.zeros(L, np.int16)])[:len(src)])
            wavfile.write(os.path.join(raw, f"{cname}_{mname}_source.wav"), codec.rate, src)
        for ci, cond in enumerate(a.conditions.split(",")):
            for r, (mi, mname) in [(r, mm) for r in range(a.from_repeat, a.repeats)
                                    for mm in enumerate(mats)]:
                src = refs[mname]["src"]
                ci = list(CONDITIONS).index(cond)
                seed = a.seed * 1000 + ci * 10 + mi + 100 * r
                tag = f"{cname}_{cond}_{mname}" + (f"_r{r}" if r else "")
                log(f"trial {tag} seed {seed}")
                row = {"codec": cname, "condition": cond, "material": mname, "seed": seed}
                try:
                    dec, t_speech, nocon, fec, meta = run_trial(codec, cond, seed, src, a.sip_port)
                    row.update(meta)
                    if dec is None:
                        raise RuntimeError("listener received no audio")
                    pcm, arr_off, st = dec
                    row.update(st)
                    wavfile.write(os.path.join(raw, f"{tag}_listener.wav"), codec.rate, pcm)
                    lag0 = int(round((t_speech - arr_off) * codec.rate))
                    al, lags, corr = align(src, pcm, codec.rate, lag0)
                    if al is None:
                        raise RuntimeError("speech not found in the listener's audio")
                    row["xcorr"] = round(corr, 3)
                    delays = [(arr_off + la / codec.rate - t_speech) * 1000 for la in lags]
                    row["delay_ms"] = round(float(np.median(delays)), 1)
                    row["delay_ms_min_max"] = [round(min(delays), 1), round(max(delays), 1)]
                    row["bridge"] = scores(codec, src, al)
                    L = offline_lag(src, np.concatenate([nocon, np.zeros(codec.rate // 5, np.int16)]), codec.rate)
                    nc = np.concatenate([nocon[L:], np.zeros(L, np.int16)])[:len(src)]
                    row["no_concealment"] = scores(codec, src, nc)
                    if fec is not None:
                        L = offline_lag(src, np.concatenate([fec, np.zeros(codec.rate // 5, np.int16)]), codec.rate)
                        row["libopus_fec_plc"] = scores(codec, src, np.concatenate([fec[L:], np.zeros(L, np.int16)])[:len(src)])
                    row["codec_alone"] = refs[mname]["alone"]
                    row["codec_tandem"] = refs[mname]["tandem"]
                    wavfile.write(os.path.join(raw, f"{tag}_aligned.wav"), codec.rate,
                                  np.clip(al, -32767, 32767).astype(np.int16))
                    log(f"  {tag}: bridge {row['bridge']} noconc {row['no_concealment']} "
                        f"alone {row['codec_alone']} delay {row['delay_ms']} ms loss {row['loss_rate']}")
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {e}"
                    log(f"  {tag}: ERROR {row['error']}")
                results.append(row)
                with open(tj, "w") as f:
                    json.dump(results, f, indent=1)
                time.sleep(0.5)
    log(f"done in {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
