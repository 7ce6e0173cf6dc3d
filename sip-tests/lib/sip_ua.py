#!/usr/bin/env python3
"""A tiny SIP user agent for sotto's sip-tests: SIP over TLS (or UDP), SDES-SRTP
through libsrtp2 (ctypes shim, lib/srtp_shim.c), G.711 u-law, RFC 4733 digits.

It exists for what the packaged peers cannot do here: SIPp 3.6 has no TLS and no
SRTP, and Debian's baresip 1.0 always offers exactly one suite,
AES_CM_128_HMAC_SHA1_80 (see sip-tests/README.md).  The SRTP itself is libsrtp2's,
so a pass means interop with the reference SRTP library, not with this script.

Modes
  probe  one INVITE with the SDP asked for (--offer plain | sdes), check the final
         response: --expect-status 488 [--expect-warning TEXT]; or --expect-status
         200 [--expect-suite S]: ACK, then BYE at once.  No media.
  call   INVITE offering --suites; 200 must answer one of them (--expect-suite);
         ACK; send silence for --prompt-wait s, --dtmf as RFC 4733 events, then
         --tone Hz until --hangup-at (unix time); record what arrives
         (SRTP-authenticated by libsrtp2, decoded from PCMU) to received.wav and
         what was sent to sent.wav; BYE.  The audio is judged by audio_check.py.
         As soon as the 200 arrives, answer.json says where the bridge wants the
         media ("addr", "port"; sip-tests/lib/flood.py sprays forged RTP there).
         --gap-window START,END (unix times): the longest gap between PCMU packets
         from the bridge that arrive in that window is reported (result.json
         media.max_gap_ms); with --max-gap-ms a longer gap fails the call.

Keys in the call: --keys-file FILE: every line appended to FILE once the call is up is
sent as RFC 4733 events, like the PIN (100 ms each, --dtmf-gap s of the caller's audio
between keys); a line "hangup" ends the call (our BYE).  Each sequence sent is logged
to FILE.sent ("t_start t_done keys", unix times) and to result.json "keys_sent".
Refused callers: --expect-bye-within S: the bridge must send BYE within S s of the
PIN's last key (result.json "bye_after_dtmf_s"); the BYE then is no failure, its
absence is.  media.t_first_rx: when the first PCMU packet arrived (received.wav's
start: one payload per packet, in arrival order).

Lost ACKs: --drop-acks N withholds the ACK for the first N copies of the 2xx (as if
the network lost them; media starts at the first copy, as a phone's does) and ACKs the
next copy; result.json "t_2xx" lists when each copy arrived (seconds after the
first).  The call must survive: no BYE from the bridge, and our BYE gets 200.

Common: --transport tls|udp --host 127.0.0.1 (or ::1) --port 5061 --room conference
  --bridge-log FILE (TLS: the peer certificate's SHA-256 must equal the
  "fingerprint=" the bridge logged) --out DIR (messages.log, result.json, wavs)
  --shim PATH (srtp_shim.so).  Exit 0 = every check held; 1 = a check failed
  ("FAIL: ..." lines on stderr); 2 = usage / environment error.
"""
import argparse
import base64
import ctypes
import hashlib
import json
import os
import queue
import random
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time
import wave

import numpy as np

SUITES = {"AES_CM_128_HMAC_SHA1_80": (0, 30, 10), "AES_CM_128_HMAC_SHA1_32": (1, 30, 4),
          "AEAD_AES_128_GCM": (2, 28, 16), "AEAD_AES_256_GCM": (3, 44, 16)}
DIGITS = {**{str(i): i for i in range(10)}, "*": 10, "#": 11}
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type"}


# Our own address: 127.0.0.1, or ::1 when the bridge is called on ::1 (IPv6 tests).
LOCAL_IP = "127.0.0.1"


def uri_host(ip):
    """An address as it stands in a URI or Via: IPv6 in brackets (RFC 3261 §25.1)."""
    return f"[{ip}]" if ":" in ip else ip


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def log(msg):
    print(f"[sip_ua {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ G.711
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
    """numpy int array (16 bit) -> u-law bytes (ITU-T G.711, as libre/sox do)"""
    x = np.asarray(x, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    m = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(m)).astype(np.int32) - 7
    exp = np.clip(exp, 0, 7)
    mant = (m >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def tone_samples(freq, start, n, amp):
    i = np.arange(start, start + n)
    return np.round(amp * 32767 * np.sin(2 * np.pi * freq * i / 8000.0)).astype(np.int32)


# ------------------------------------------------------------------ SRTP (libsrtp2)
class Srtp:
    lib = None

    @classmethod
    def load(cls, path):
        if cls.lib is None:
            lib = ctypes.CDLL(path)
            lib.shim_new.restype = ctypes.c_void_p
            lib.shim_new.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            for f in (lib.shim_protect, lib.shim_unprotect):
                f.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
                f.restype = ctypes.c_int
            lib.shim_free.argtypes = [ctypes.c_void_p]
            if lib.shim_init() != 0:
                raise RuntimeError("srtp_init failed")
            cls.lib = lib
        return cls.lib

    def __init__(self, shim, suite, key, inbound):
        self.lib = Srtp.load(shim)
        self.s = self.lib.shim_new(SUITES[suite][0], key, 1 if inbound else 0)
        if not self.s:
            raise RuntimeError(f"libsrtp2 refused the {suite} key")
        self.trailer = self.lib.shim_max_trailer()

    def protect(self, pkt):
        buf = ctypes.create_string_buffer(pkt, len(pkt) + self.trailer)
        n = self.lib.shim_protect(self.s, buf, len(pkt))
        if n < 0:
            raise RuntimeError(f"srtp_protect error {-n}")
        return buf.raw[:n]

    def unprotect(self, pkt):
        buf = ctypes.create_string_buffer(pkt, len(pkt))
        n = self.lib.shim_unprotect(self.s, buf, len(pkt))
        return (None, -n) if n < 0 else (buf.raw[:n], 0)


# ------------------------------------------------------------------ SIP
class Msg:
    def __init__(self, raw):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.first = lines[0]
        self.hdrs = []
        for ln in lines[1:]:
            if ln[:1] in (" ", "\t") and self.hdrs:
                self.hdrs[-1] = (self.hdrs[-1][0], self.hdrs[-1][1] + " " + ln.strip())
                continue
            k, _, v = ln.partition(":")
            k = k.strip().lower()
            self.hdrs.append((COMPACT.get(k, k), v.strip()))
        self.is_response = self.first.startswith("SIP/2.0 ")
        self.status = int(self.first.split()[1]) if self.is_response else None
        self.method = None if self.is_response else self.first.split()[0]

    def get(self, name):
        name = name.lower()
        return [v for k, v in self.hdrs if k == name]

    def one(self, name, default=""):
        v = self.get(name)
        return v[0] if v else default


class Transport:
    """SIP over TLS (a stream, one connection) or UDP; a reader thread puts
    every received message into self.q; requests from the far end are
    answered 200 (BYE also sets self.bye_received)."""

    def __init__(self, kind, host, port, trace):
        self.kind, self.host, self.port, self.trace = kind, host, port, trace
        self.q = queue.Queue()
        self.bye_received = None
        self.closed = False
        self.peer_cert_sha256 = None
        self.tls_version = self.tls_cipher = None
        if kind == "tls":
            raw = socket.create_connection((host, port), timeout=5)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE   # self-signed; pinned by --bridge-log instead
            self.sock = ctx.wrap_socket(raw, server_hostname=None)
            der = self.sock.getpeercert(binary_form=True)
            self.peer_cert_sha256 = hashlib.sha256(der).hexdigest().upper() if der else None
            self.tls_version = self.sock.version()
            self.tls_cipher = self.sock.cipher()[0]
            # one SSL object must not be used by two threads at once: the reader
            # polls without blocking and both sides take self.lock
            self.sock.setblocking(False)
        else:
            self.sock = socket.socket(family(host), socket.SOCK_DGRAM)
            self.sock.bind((LOCAL_IP, 0))
            self.sock.connect((host, port))
        self.local_port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._reader, daemon=True).start()

    def via_proto(self):
        return "TLS" if self.kind == "tls" else "UDP"

    def send(self, data):
        self._trace(">>>", data)
        if self.kind != "tls":
            self.sock.send(data)
            return
        view = memoryview(data)
        deadline = time.time() + 5
        while view:
            with self.lock:
                try:
                    n = self.sock.send(view)
                    view = view[n:]
                    continue
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            if time.time() > deadline:
                raise OSError("TLS send timed out")
            select.select([], [self.sock], [], 0.05)

    def _trace(self, d, data):
        with open(self.trace, "ab") as f:
            f.write(f"{d} {time.strftime('%H:%M:%S')} {self.kind}\n".encode() + data + b"\n\n")

    def _reader(self):
        buf = b""
        try:
            while not self.closed:
                if self.kind == "udp":
                    r, _, _ = select.select([self.sock], [], [], 0.2)
                    if not r:
                        continue
                    self._got(self.sock.recv(65535))
                    continue
                with self.lock:
                    try:
                        data = self.sock.recv(65535)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        data = None
                if data is None:
                    select.select([self.sock], [], [], 0.1)
                    continue
                if not data:
                    break
                buf += data
                while True:
                    buf = buf.lstrip(b"\r\n")          # keep-alive CRLFs
                    i = buf.find(b"\r\n\r\n")
                    if i < 0:
                        break
                    m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", buf[:i])
                    n = int(m.group(1)) if m else 0
                    if len(buf) < i + 4 + n:
                        break
                    self._got(buf[:i + 4 + n])
                    buf = buf[i + 4 + n:]
        except (OSError, ValueError):
            pass
        self.q.put(None)

    def _got(self, raw):
        self._trace("<<<", raw)
        m = Msg(raw)
        if not m.is_response and m.method != "ACK":
            if m.method == "BYE":
                self.bye_received = time.time()
            resp = "SIP/2.0 200 OK\r\n"
            for v in m.get("via"):
                resp += f"Via: {v}\r\n"
            for h in ("from", "to", "call-id", "cseq"):
                resp += f"{h.title()}: {m.one(h)}\r\n"
            resp += "Content-Length: 0\r\n\r\n"
            try:
                self.send(resp.encode())
            except OSError:
                pass
        self.q.put(m)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class Dialog:
    def __init__(self, tp, room, host, port, user):
        self.tp, self.user = tp, user
        sch = ";transport=tls" if tp.kind == "tls" else ""
        self.ruri = f"sip:{room}@{uri_host(host)}:{port}{sch}"
        self.to = f"<sip:{room}@{uri_host(host)}:{port}>"
        self.ftag = "%08x" % random.getrandbits(32)
        self.call_id = "%016x@sotto-sip-tests" % random.getrandbits(64)
        self.contact = f"<sip:{user}@{uri_host(LOCAL_IP)}:{tp.local_port}{sch}>"
        self.remote_target = self.ruri
        self.to_tag = None
        self.cseq = 0
        self.invite_branch = None

    def request(self, method, body=b"", ctype=None, branch=None, cseq=None, uri=None):
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK%016x" % random.getrandbits(64)
        to = self.to + (f";tag={self.to_tag}" if self.to_tag else "")
        msg = (f"{method} {uri or self.remote_target} SIP/2.0\r\n"
               f"Via: SIP/2.0/{self.tp.via_proto()} {uri_host(LOCAL_IP)}:{self.tp.local_port};branch={branch};rport\r\n"
               f"Max-Forwards: 70\r\n"
               f"From: <sip:{self.user}@{uri_host(LOCAL_IP)}>;tag={self.ftag}\r\n"
               f"To: {to}\r\n"
               f"Call-ID: {self.call_id}\r\n"
               f"CSeq: {cseq} {method}\r\n"
               f"Contact: {self.contact}\r\n"
               f"User-Agent: sotto-sip-tests sip_ua.py\r\n")
        if ctype:
            msg += f"Content-Type: {ctype}\r\n"
        msg += f"Content-Length: {len(body)}\r\n\r\n"
        data = msg.encode() + body
        self.tp.send(data)
        return branch, cseq, data

    def wait_response(self, cseq, method, timeout, resend=None):
        """final response to (cseq, method); UDP: resend until any response"""
        end = time.time() + timeout
        t1, next_tx, got_any = 0.5, time.time() + 0.5, False
        while time.time() < end:
            try:
                m = self.tp.q.get(timeout=0.1)
            except queue.Empty:
                m = False
            if m is None:
                return None, "connection closed"
            if m and m.is_response and m.one("cseq").split() == [str(cseq), method]:
                got_any = True
                if m.status >= 200:
                    return m, None
            if resend and not got_any and time.time() >= next_tx:
                self.tp.send(resend)
                t1 = min(t1 * 2, 4.0)
                next_tx = time.time() + t1
        return None, f"no final response to {method} within {timeout}s"

    def await_2xx_copies(self, first, drop, timeout, out):
        """Withholds the ACK for `drop` copies of the 2xx `first` (counting it), ACKs the
        next copy; appends each copy's arrival time to out["t_2xx"]."""
        t0 = time.time()
        out["t_2xx"] = [0.0]
        cseq = first.one("cseq").split()
        end = t0 + timeout
        while len(out["t_2xx"]) <= drop and time.time() < end:
            try:
                m = self.tp.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if m is None:
                return "connection closed"
            if m.is_response and m.status == first.status and m.one("cseq").split() == cseq:
                out["t_2xx"].append(round(time.time() - t0, 3))
                log(f"2xx copy {len(out['t_2xx'])} at +{out['t_2xx'][-1]} s")
        if len(out["t_2xx"]) <= drop:
            return (f"only {len(out['t_2xx'])} copies of the 2xx in {timeout} s "
                    f"(needed {drop + 1}: the lost ACKs were not repaired)")
        self.ack(first)
        return None

    def ack(self, resp):
        tag = re.search(r";\s*tag=([^;>\s]+)", resp.one("to"))
        self.to_tag = tag.group(1) if tag else None
        if 200 <= resp.status < 300:
            c = re.search(r"<([^>]+)>", resp.one("contact"))
            if c:
                self.remote_target = c.group(1)
            self.request("ACK", cseq=1)
        else:     # non-2xx: same branch and Request-URI as the INVITE
            self.request("ACK", cseq=1, branch=self.invite_branch, uri=self.ruri)


# ------------------------------------------------------------------ SDP
def make_sdp(rtp_port, proto, cryptos):
    sid = random.randint(1, 2**31)
    fam = "IP6" if ":" in LOCAL_IP else "IP4"
    s = (f"v=0\r\no=- {sid} {sid} IN {fam} {LOCAL_IP}\r\ns=sotto-sip-tests\r\n"
         f"c=IN {fam} {LOCAL_IP}\r\nt=0 0\r\nm=audio {rtp_port} {proto} 0 101\r\n"
         "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
         "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")
    for tag, suite, key in cryptos:
        s += f"a=crypto:{tag} {suite} inline:{base64.b64encode(key).decode()}\r\n"
    return s.encode()


def parse_sdp(body):
    txt = body.decode("utf-8", "replace")
    r = {"addr": None, "port": None, "proto": None, "fmts": [], "crypto": []}
    m = re.search(r"(?m)^c=IN IP[46] (\S+)", txt)
    r["addr"] = m.group(1) if m else None
    m = re.search(r"(?m)^m=audio (\d+) (\S+) ([\d ]+)", txt)
    if m:
        r["port"], r["proto"], r["fmts"] = int(m.group(1)), m.group(2), m.group(3).split()
    for m in re.finditer(r"(?m)^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", txt):
        r["crypto"].append((int(m.group(1)), m.group(2), m.group(3)))
    return r


def fingerprint_from_log(path):
    try:
        txt = open(path, errors="replace").read()
    except OSError:
        return None
    m = re.findall(r"fingerprint=([0-9A-Fa-f:]{95})", txt)
    return m[-1].replace(":", "").upper() if m else None


# ------------------------------------------------------------------ media
class Media:
    def __init__(self, a, tx_srtp, rx_srtp, dest):
        self.a, self.tx, self.rx, self.dest = a, tx_srtp, rx_srtp, dest
        self.sock = socket.socket(family(LOCAL_IP), socket.SOCK_DGRAM)
        self.sock.bind((LOCAL_IP, a.rtp_port))
        self.stop = threading.Event()
        self.received = []           # u-law payload bytes, in arrival order
        self.sent = []
        self.stats = {"tx_packets": 0, "tx_events": 0, "rx_packets": 0, "rx_audio": 0,
                      "rx_events": 0, "rx_auth_fail": 0, "rx_other": 0, "rx_pts": {},
                      "rx_len": {}, "rx_ssrcs": []}
        self.dtmf_sent = ""
        self.t_dtmf_done = None
        self.t_last_pin_key = None   # when the end of the PIN's last key was sent
        self.arrivals = []           # time.time() of each PCMU packet
        # --keys-file: key sequences sent in the call, each {"keys", "t_start", "t_done"}
        self.keys_sent = []
        self.keys_pos = 0            # bytes of the keys file already read
        self.hangup_requested = None

    def run(self, t_end):
        rx = threading.Thread(target=self._rx, daemon=True)
        rx.start()
        try:
            self._tx(t_end)
        finally:
            self.stop.set()
            rx.join(2)
            self.sock.close()

    def _rx(self):
        while not self.stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            try:
                pkt, _ = self.sock.recvfrom(4096)
            except OSError:
                break
            if len(pkt) < 12 or pkt[0] >> 6 != 2:
                self.stats["rx_other"] += 1
                continue
            if 72 <= (pkt[1] & 0x7F) <= 76:        # RTCP (RFC 5761)
                self.stats["rx_other"] += 1
                continue
            self.stats["rx_packets"] += 1
            self.stats["rx_len"][len(pkt)] = self.stats["rx_len"].get(len(pkt), 0) + 1
            if self.rx:
                pkt, err = self.rx.unprotect(pkt)
                if pkt is None:
                    self.stats["rx_auth_fail"] += 1
                    continue
            cc = pkt[0] & 0x0F
            off = 12 + 4 * cc
            if pkt[0] & 0x10 and len(pkt) >= off + 4:
                off += 4 + 4 * struct.unpack("!H", pkt[off + 2:off + 4])[0]
            pt = pkt[1] & 0x7F
            ssrc = struct.unpack("!I", pkt[8:12])[0]
            if ssrc not in self.stats["rx_ssrcs"]:
                self.stats["rx_ssrcs"].append(ssrc)
            self.stats["rx_pts"][str(pt)] = self.stats["rx_pts"].get(str(pt), 0) + 1
            if pt == 0:
                self.arrivals.append(time.time())
                self.stats["rx_audio"] += 1
                self.received.append(pkt[off:])
            elif pt == 101:
                self.stats["rx_events"] += 1

    def _tx(self, t_end):
        a = self.a
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        silence = lin2ulaw(np.zeros(160, dtype=np.int32))
        t0 = time.monotonic()
        slot = 0
        phase = 0
        plan = []              # (kind, data) per 20 ms slot before the tone
        plan += [("audio", None)] * int(a.prompt_wait * 50)
        for d in a.dtmf:
            ev = DIGITS[d]
            for i in range(5):             # 100 ms event, M bit on the first
                plan.append(("event", (ev, False, (i + 1) * 160, i == 0)))
            plan.append(("event", (ev, True, 800, False)))
            plan += [("audio", None)] * int(a.dtmf_gap * 50)
        plan.append(("dtmf_done", None))
        ev_ts = None
        tone_on = False

        def send(pt, marker, stamp, payload):
            nonlocal seq
            hdr = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                              stamp & 0xFFFFFFFF, ssrc)
            seq += 1
            pkt = hdr + payload
            if self.tx:
                pkt = self.tx.protect(pkt)
            self.sock.sendto(pkt, self.dest)
            self.stats["tx_packets"] += 1

        inject = []            # (kind, data) slots of keys typed in the call (--keys-file)
        while time.time() < t_end and not self.stop.is_set():
            if self.a.stop_on_bye and self.a.tp.bye_received:
                break
            if a.keys_file and slot % 10 == 0 and not inject:
                for line in self._new_key_lines():
                    if line == "hangup":
                        self.hangup_requested = time.time()
                        log(f"{a.user}: hangup asked for in {a.keys_file}")
                        break
                    inject += self._key_slots(line)
                if self.hangup_requested:
                    break
            if inject:
                kind, data = inject.pop(0)
            else:
                kind, data = plan[slot] if slot < len(plan) else ("tone", None)
            if kind == "keys_done":
                rec = {"keys": data[0], "t_start": round(data[1], 3), "t_done": round(time.time(), 3)}
                self.keys_sent.append(rec)
                with open(a.keys_file + ".sent", "a") as f:
                    f.write(f"{rec['t_start']:.3f} {rec['t_done']:.3f} {rec['keys']}\n")
                log(f"{a.user}: sent keys '{data[0]}' as RFC 4733 events")
                kind = "tone" if slot >= len(plan) else "audio"
            if kind == "keys_start":
                data[1] = time.time()
                kind = "tone" if slot >= len(plan) else "audio"
            if kind == "dtmf_done":
                self.t_dtmf_done = time.time()
                plan[slot] = ("audio", None)
                kind = "audio"
            if kind == "event":
                ev, end, dur, first = data[:4]
                if first:
                    ev_ts = ts
                pl = struct.pack("!BBH", ev, (0x80 if end else 0) | 10, dur)
                for _ in range(3 if end else 1):   # end packet three times
                    send(101, first, ev_ts, pl)
                self.stats["tx_events"] += 1
                if end and len(data) == 4:          # the PIN (--dtmf), not --keys-file keys
                    self.dtmf_sent += [k for k, v in DIGITS.items() if v == ev][0]
                    self.t_last_pin_key = time.time()
                self.sent.append(silence)
                ts += 160
            else:
                if kind == "tone":
                    tone_on = True
                    pl = lin2ulaw(tone_samples(a.tone, phase, 160, a.amp))
                    phase += 160
                else:
                    pl = silence
                send(0, False, ts, pl)
                self.sent.append(pl)
                ts += 160
            slot += 1
            delay = t0 + slot * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.stats["tone_sent"] = tone_on

    def _new_key_lines(self):
        """Lines appended to --keys-file since the last look (complete lines only)."""
        try:
            with open(self.a.keys_file, "rb") as f:
                f.seek(self.keys_pos)
                data = f.read()
        except OSError:
            return []
        n = data.rfind(b"\n") + 1
        self.keys_pos += n
        return [ln.strip() for ln in data[:n].decode("ascii", "replace").splitlines() if ln.strip()]

    def _key_slots(self, keys):
        """20 ms slots that send KEYS as RFC 4733 events (as the PIN is sent), with
        --dtmf-gap s of the caller's audio between them; bad characters are skipped."""
        keys = "".join(k for k in keys if k in DIGITS)
        if not keys:
            return []
        marker = [keys, None]
        slots = [("keys_start", marker)]
        for d in keys:
            ev = DIGITS[d]
            for i in range(5):
                slots.append(("event", (ev, False, (i + 1) * 160, i == 0, "key")))
            slots.append(("event", (ev, True, 800, False, "key")))
            slots += [("tone", None)] * int(self.a.dtmf_gap * 50)
        slots.append(("keys_done", marker))
        return slots


def gap_stats(arrivals, start, end):
    """Longest gap (ms) between PCMU arrivals in [start, end], counting the time from
    start to the first packet and from the last packet to end (a stall at either
    edge counts too); and how many gaps exceeded 60 ms."""
    times = [start] + [t for t in arrivals if start <= t <= end] + [end]
    gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
    return {"max_gap_ms": round(max(gaps), 1) if gaps else None,
            "gaps_over_60ms": sum(1 for g in gaps if g > 60),
            "window_packets": len(times) - 2,
            "window_secs": round(end - start, 2)}


def write_wav(path, ulaw_chunks):
    b = np.frombuffer(b"".join(ulaw_chunks), dtype=np.uint8)
    pcm = ULAW_DEC[b].astype("<i2").tobytes()
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["probe", "call"])
    ap.add_argument("--transport", choices=["tls", "udp"], default="tls")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5061)
    ap.add_argument("--room", default="conference")
    ap.add_argument("--user", default="sipua")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shim", help="srtp_shim.so (call mode with --offer sdes)")
    ap.add_argument("--bridge-log", help="bridge stderr log holding 'fingerprint=' (TLS pin)")
    ap.add_argument("--offer", choices=["plain", "sdes"], default="sdes")
    ap.add_argument("--proto", help="m= protocol (default: RTP/AVP for plain, RTP/SAVP for sdes)")
    ap.add_argument("--suites", default="AEAD_AES_128_GCM",
                    help="comma-separated a=crypto suites to offer, in this order")
    ap.add_argument("--expect-status", type=int, default=200)
    ap.add_argument("--expect-warning", default=None)
    ap.add_argument("--expect-suite", default=None)
    ap.add_argument("--rtp-port", type=int, default=37000)
    ap.add_argument("--tone", type=float, default=440.0)
    ap.add_argument("--amp", type=float, default=0.25)
    ap.add_argument("--prompt-wait", type=float, default=4.0)
    ap.add_argument("--dtmf", default="")
    ap.add_argument("--dtmf-gap", type=float, default=0.2)
    ap.add_argument("--hangup-at", type=float, default=0.0)
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--gap-window", default=None, help="START,END unix times")
    ap.add_argument("--max-gap-ms", type=float, default=None)
    ap.add_argument("--drop-acks", type=int, default=0,
                    help="withhold the ACK for this many copies of the 2xx")
    ap.add_argument("--keys-file", default=None,
                    help="send each line appended to this file (after the PIN) as RFC 4733 "
                         "keys; 'hangup' ends the call; FILE.sent logs what was sent")
    ap.add_argument("--expect-bye-within", type=float, default=None,
                    help="the bridge must hang up (BYE) within this many seconds after "
                         "the last --dtmf key; then the BYE is no failure")
    a = ap.parse_args()
    if not (a.host.startswith("127.") or a.host == "::1"):
        sys.exit("sip_ua.py: loopback (127.0.0.0/8 or ::1) targets only")
    global LOCAL_IP
    LOCAL_IP = "::1" if a.host == "::1" else "127.0.0.1"
    if any(d not in DIGITS for d in a.dtmf):
        sys.exit(f"sip_ua.py: bad DTMF digits {a.dtmf!r}")
    os.makedirs(a.out, exist_ok=True)
    trace = os.path.join(a.out, "messages.log")
    open(trace, "w").close()
    fails = []
    res = {"mode": a.mode, "transport": a.transport, "target": f"{a.host}:{a.port}",
           "offer": a.offer, "suites_offered": [], "status": None}

    suites = [s.strip() for s in a.suites.split(",") if s.strip()] if a.offer == "sdes" else []
    for s in suites:
        if s not in SUITES:
            sys.exit(f"sip_ua.py: unknown suite {s} (known: {', '.join(SUITES)})")
    if suites and a.mode == "call" and not a.shim:
        sys.exit("sip_ua.py: call with --offer sdes needs --shim srtp_shim.so")
    proto = a.proto or ("RTP/SAVP" if suites else "RTP/AVP")
    cryptos = [(i + 1, s, os.urandom(SUITES[s][1])) for i, s in enumerate(suites)]
    res["suites_offered"] = suites

    try:
        tp = Transport(a.transport, a.host, a.port, trace)
    except OSError as e:
        print(f"FAIL: cannot connect ({a.transport}) to {a.host}:{a.port}: {e}", file=sys.stderr)
        res["error"] = str(e)
        json.dump(res, open(os.path.join(a.out, "result.json"), "w"), indent=1)
        return 1
    a.tp = tp
    a.stop_on_bye = True
    if a.transport == "tls":
        res.update(tls_version=tp.tls_version, tls_cipher=tp.tls_cipher,
                   peer_cert_sha256=tp.peer_cert_sha256)
        log(f"TLS {tp.tls_version} {tp.tls_cipher}, server cert SHA-256 {tp.peer_cert_sha256}")
        if a.bridge_log:
            fp = fingerprint_from_log(a.bridge_log)
            res["logged_fingerprint"] = fp
            if fp != tp.peer_cert_sha256:
                fails.append(f"server certificate SHA-256 {tp.peer_cert_sha256} != fingerprint "
                             f"in the bridge log ({fp})")

    dlg = Dialog(tp, a.room, a.host, a.port, a.user)
    sdp = make_sdp(a.rtp_port, proto, cryptos)
    if a.mode == "call":
        s = socket.socket(family(LOCAL_IP), socket.SOCK_DGRAM)
        try:
            s.bind((LOCAL_IP, a.rtp_port))
        except OSError as e:
            sys.exit(f"sip_ua.py: RTP port {a.rtp_port}: {e}")
        finally:
            s.close()
    log(f"INVITE {dlg.ruri} over {a.transport}: m=audio {proto}, "
        f"crypto {', '.join(suites) or 'none'}")
    acker = None
    dlg.invite_branch, cseq, data = dlg.request("INVITE", sdp, "application/sdp")
    resp, err = dlg.wait_response(cseq, "INVITE", 15, resend=data if a.transport == "udp" else None)
    if resp is None:
        fails.append(f"INVITE: {err}")
    else:
        res["status"] = resp.status
        res["status_line"] = resp.first
        res["warning"] = resp.get("warning")
        log(f"INVITE -> {resp.first}; Warning: {res['warning'] or '-'}")
        if a.drop_acks and 200 <= resp.status < 300:
            log(f"withholding the ACK for {a.drop_acks} cop{'y' if a.drop_acks == 1 else 'ies'} of the 2xx")
            acker = threading.Thread(target=lambda: res.__setitem__(
                "ack_error", dlg.await_2xx_copies(resp, a.drop_acks, 40, res)), daemon=True)
            acker.start()
            if a.mode != "call":
                acker.join()
        else:
            dlg.ack(resp)
        if resp.status != a.expect_status:
            fails.append(f"INVITE answered '{resp.first}'"
                         + (f" (Warning: {'; '.join(res['warning'])})" if res["warning"] else "")
                         + f", expected {a.expect_status}")
        if a.expect_warning is not None and resp.status == a.expect_status:
            if not any(a.expect_warning in w and re.match(r"\s*399 ", w) for w in res["warning"]):
                fails.append(f"no 'Warning: 399 ... \"{a.expect_warning}\"' header "
                             f"(got {res['warning'] or 'none'})")

    if resp is not None and 200 <= resp.status < 300:
        ans = parse_sdp(resp.body)
        res["answer"] = {"addr": ans["addr"], "port": ans["port"], "proto": ans["proto"],
                         "fmts": ans["fmts"],
                         "crypto": [(t, s) for t, s, _ in ans["crypto"]]}
        log(f"answer: m=audio {ans['port']} {ans['proto']} {' '.join(ans['fmts'])}; "
            f"crypto {res['answer']['crypto']}")
        with open(os.path.join(a.out, "answer.json.tmp"), "w") as f:
            json.dump({"addr": ans["addr"], "port": ans["port"]}, f)
        os.replace(os.path.join(a.out, "answer.json.tmp"), os.path.join(a.out, "answer.json"))
        chosen = None
        if suites:
            if len(ans["crypto"]) != 1:
                fails.append(f"answer has {len(ans['crypto'])} a=crypto lines, expected 1")
            if ans["crypto"]:
                tag, suite, key_b64 = ans["crypto"][0]
                offered = {t: (s, k) for t, s, k in cryptos}
                res["answer_suite"] = suite
                if tag not in offered or offered[tag][0] != suite:
                    fails.append(f"answer a=crypto:{tag} {suite} matches no offered tag/suite")
                else:
                    try:
                        bkey = base64.b64decode(key_b64, validate=True)
                    except ValueError:
                        bkey = b""
                    if len(bkey) != SUITES[suite][1]:
                        fails.append(f"answer key for {suite} has {len(bkey)} bytes, "
                                     f"expected {SUITES[suite][1]}")
                    elif bkey == offered[tag][1]:
                        fails.append("the bridge answered with OUR key (must be a fresh one)")
                    else:
                        chosen = (suite, offered[tag][1], bkey)
            if a.expect_suite and res.get("answer_suite") != a.expect_suite:
                fails.append(f"answer suite {res.get('answer_suite')}, expected {a.expect_suite}")
        elif ans["crypto"]:
            fails.append("plain offer, but the answer carries a=crypto")
        if "0" not in ans["fmts"]:
            fails.append("answer does not accept PCMU (PT 0)")

        if a.mode == "call" and not fails:
            tx = rx = None
            if chosen:
                tx = Srtp(a.shim, chosen[0], chosen[1], inbound=False)
                rx = Srtp(a.shim, chosen[0], chosen[2], inbound=True)
            res["t_established"] = time.time()
            t_end = a.hangup_at if a.hangup_at else time.time() + a.prompt_wait + a.hold
            if a.expect_bye_within is not None:
                # The PIN's slots plus the wait for the BYE (the loop ends at the BYE).
                pin_secs = a.prompt_wait + len(a.dtmf) * (0.12 + a.dtmf_gap) + 1
                t_end = min(t_end, time.time() + pin_secs + a.expect_bye_within)
            med = Media(a, tx, rx, (ans["addr"], ans["port"]))
            log(f"media to {ans['addr']}:{ans['port']} from {uri_host(LOCAL_IP)}:{a.rtp_port}, "
                f"SRTP {chosen[0] if chosen else 'off'}; hang up in {t_end - time.time():.1f}s")
            med.run(t_end)
            res["media"] = med.stats
            if a.gap_window:
                start, end = (float(x) for x in a.gap_window.split(","))
                g = gap_stats(med.arrivals, start, min(end, time.time()))
                med.stats.update(g)
                log(f"longest gap between packets from the bridge in the window: "
                    f"{g['max_gap_ms']} ms ({g['window_packets']} packets in "
                    f"{g['window_secs']} s, {g['gaps_over_60ms']} gaps over 60 ms)")
                if a.max_gap_ms is not None and (g["max_gap_ms"] or 0) > a.max_gap_ms:
                    fails.append(f"audio from the bridge stalled: a gap of {g['max_gap_ms']} ms "
                                 f"(bound {a.max_gap_ms:.0f} ms)")
            res["dtmf_sent"] = med.dtmf_sent
            res["t_dtmf_done"] = med.t_dtmf_done
            res["keys_sent"] = med.keys_sent
            res["t_last_pin_key"] = med.t_last_pin_key
            res["t_hangup_asked"] = med.hangup_requested
            # received.wav holds the PCMU payloads in arrival order (one per 20 ms tick of
            # the bridge): its first sample arrived at t_first_rx
            med.stats["t_first_rx"] = round(med.arrivals[0], 3) if med.arrivals else None
            med.stats["t_last_rx"] = round(med.arrivals[-1], 3) if med.arrivals else None
            write_wav(os.path.join(a.out, "received.wav"), med.received)
            write_wav(os.path.join(a.out, "sent.wav"), med.sent)
            res["received_wav"] = os.path.join(a.out, "received.wav")
            res["sent_wav"] = os.path.join(a.out, "sent.wav")
            log(f"media: {json.dumps(med.stats)}")
            if med.stats["tx_packets"] and a.drop_acks:
                res["media_before_ack"] = True
            if med.dtmf_sent != a.dtmf:
                fails.append(f"sent DTMF '{med.dtmf_sent}' instead of '{a.dtmf}'")
            if med.stats["rx_audio"] < 50:
                fails.append(f"only {med.stats['rx_audio']} authenticated PCMU packets "
                             f"from the bridge ({med.stats['rx_auth_fail']} failed SRTP checks)")
            if chosen and med.stats["rx_auth_fail"] > 0:
                fails.append(f"{med.stats['rx_auth_fail']} packets from the bridge failed "
                             f"libsrtp2's {chosen[0]} authentication")
        if acker is not None:
            acker.join(45)
            if res.get("ack_error"):
                fails.append(res["ack_error"])
        if a.expect_bye_within is not None and a.mode == "call" and not fails:
            t_pin = res.get("t_last_pin_key")
            if tp.bye_received and t_pin:
                res["bye_after_dtmf_s"] = round(tp.bye_received - t_pin, 3)
                log(f"the bridge hung up {res['bye_after_dtmf_s']} s after our last key")
                if res["bye_after_dtmf_s"] > a.expect_bye_within:
                    fails.append(f"the bridge's BYE came {res['bye_after_dtmf_s']} s after the "
                                 f"PIN (bound {a.expect_bye_within:g} s)")
            elif tp.bye_received:
                fails.append("the bridge hung up (BYE) before the PIN was sent")
            else:
                fails.append(f"no BYE from the bridge within {a.expect_bye_within:g} s after the PIN")
        if tp.bye_received:
            res["closed_by_peer"] = True
            if a.mode == "call" and a.expect_bye_within is None:
                fails.append("the bridge hung up (BYE) before we did")
        else:
            res["closed_by_peer"] = False
            _, cseq, data = dlg.request("BYE")
            bye, err = dlg.wait_response(cseq, "BYE", 5, resend=data if a.transport == "udp" else None)
            res["bye_status"] = bye.status if bye else err
            if not bye or bye.status != 200:
                fails.append(f"BYE: {bye.first if bye else err}")
    tp.close()
    res["ok"] = not fails
    res["failures"] = fails
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    for msg in fails:
        print(f"FAIL: {a.user}: {msg}", file=sys.stderr)
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main())
