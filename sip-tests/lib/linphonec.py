#!/usr/bin/env python3
"""One headless linphonec caller (linphone-cli 5.1, Debian 12) for sip-tests.

    linphonec.py --dir DIR --port SIP_PORT --rtp MIN-MAX --menc zrtp|srtp|none
                 --play TONE.wav --target sip:conference@127.0.0.1:5060
                 [--mandatory 1] [--prompt-wait 4] [--dtmf 31415926#]
                 [--after-pin 10] [--keys "#"] [--hold 8 | --hangup-at UNIX_TIME]

Dials, waits --prompt-wait s, types --dtmf, waits --after-pin s, types --keys (if
any), holds --hold s (or until --hangup-at), hangs up. Records what it hears to DIR/rec.wav. Prints JSON:
connected, the ZRTP SAS linphonec shows (zrtp_sas), whether the far end hung up.

What linphonec needs, headless (learnt the hard way):
  * --pipe: without a tty it otherwise never leaves LinphoneGlobalStartup;
  * its own HOME with .local/share/linphone (its sqlite database);
  * "soundcard use files", then "play" / "record" for audio;
  * commands paced about 0.4 s apart (--pipe keeps one pending line), a PIN on one
    line (separate lines drop digits);
  * its output lines carry the "linphonec> " prompt in front: patterns are not
    anchored;
  * "quit" may hang and SIGTERM is ignored: SIGKILL after a grace period.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

RC = """[sip]
sip_port={port}
sip_tcp_port=-1
sip_tls_port=-1
guess_hostname=0
contact="{user}" <sip:{user}@127.0.0.1:{port}>
media_encryption={menc}
media_encryption_mandatory={mand}
use_rfc2833=1
use_info=0
use_ipv6=0
bind_address=127.0.0.1
register_only_when_network_is_up=0
[rtp]
audio_rtp_port={rtp}
bind_address=127.0.0.1
[sound]
echocancellation=0
tone_indications=0
[video]
automatically_initiate=0
automatically_accept=0
capture=0
display=0
[misc]
uuid=0
"""

CONNECTED = r"Call \d+ .*connected\."
ENDED = r"Call \d+ .*(ended|error)\b"
SAS = r"is fully encrypted and auth token is (\S+?)\.?$"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--user", default="lp")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rtp", required=True)
    ap.add_argument("--menc", default="zrtp", choices=["none", "srtp", "zrtp"])
    ap.add_argument("--mandatory", type=int, default=1)
    ap.add_argument("--play", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--prompt-wait", type=float, default=4)
    ap.add_argument("--dtmf", default="")
    ap.add_argument("--after-pin", type=float, default=0)
    ap.add_argument("--keys", default="")
    ap.add_argument("--hold", type=float, default=8)
    ap.add_argument("--hangup-at", type=float, default=0)
    a = ap.parse_args()

    d = os.path.abspath(a.dir)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, ".local/share/linphone"))
    with open(os.path.join(d, "rc"), "w") as f:
        f.write(RC.format(port=a.port, user=a.user, rtp=a.rtp, menc=a.menc, mand=a.mandatory))
    rec = os.path.join(d, "rec.wav")
    p = subprocess.Popen(
        ["linphonec", "-c", os.path.join(d, "rc"), "--pipe", "-d", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, HOME=d), cwd=d, text=True, bufsize=1, start_new_session=True)
    lines = []
    log = open(os.path.join(d, "out.log"), "w")

    def reader():
        for ln in p.stdout:
            lines.append(ln.rstrip())
            log.write(ln)
            log.flush()

    threading.Thread(target=reader, daemon=True).start()
    seen = [0]

    def send(s):
        p.stdin.write(s + "\n")
        p.stdin.flush()
        time.sleep(0.4)

    def wait_for(pattern, timeout):
        end = time.time() + timeout
        while True:
            while seen[0] < len(lines):
                ln = lines[seen[0]]
                seen[0] += 1
                if re.search(pattern, ln):
                    return ln
            if time.time() >= end:
                return None
            time.sleep(0.1)

    res = {"connected": False, "ended_by_peer": False, "dtmf_sent": "", "keys_sent": ""}
    t0 = time.time()
    while time.time() - t0 < 15:
        send("states global")
        if wait_for(r"LinphoneGlobalOn", 1):
            break
    send("soundcard use files")
    send("play " + os.path.abspath(a.play))
    send("record " + rec)
    send("call " + a.target)
    if wait_for(CONNECTED, 20):
        res["connected"] = True
        steps = [(a.prompt_wait, a.dtmf, "dtmf_sent"), (a.after_pin, a.keys, "keys_sent")]
        for wait, keys, field in steps:
            if wait_for(ENDED, wait):
                res["ended_by_peer"] = True
                break
            if keys:
                send(keys)
                time.sleep(1.0 * len(keys) + 0.5)
                res[field] = keys
        hold = max(0.0, a.hangup_at - time.time()) if a.hangup_at else a.hold
        if not res["ended_by_peer"] and wait_for(ENDED, hold):
            res["ended_by_peer"] = True
        send("terminate")
        time.sleep(1)
    send("quit")
    time.sleep(2)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    text = "\n".join(lines)
    m = re.search(SAS, text, re.M)
    res["zrtp_sas"] = m.group(1) if m else None
    res["record"] = rec if os.path.exists(rec) else None
    print(json.dumps(res))
    return 0 if res["connected"] else 2


if __name__ == "__main__":
    sys.exit(main())
