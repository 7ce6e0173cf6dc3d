#!/usr/bin/env bash
# One conference participant (baresip, headless): dial URI, listen PROMPT_WAIT s
# (the PIN prompt), send PIN as RFC 4733 events, play TONE Hz until HANGUP_AT,
# record what it receives, hang up; then check the recording.
# Exit 0 when every check holds, 1 otherwise (reasons as "FAIL: ..." on stderr).
# Checks: call established; media encryption as MEDIAENC asks; EXPECT_PROMPT=1:
#   something audible in the first PROMPT_WAIT s; far end did not hang up;
#   in the last TAIL s: every EXPECT_TONES present, every ABSENT_TONES absent.
#   SIP_TRACE=1 and SRTP on: the SDES answer (from baresip's SIP trace) has one
#   a=crypto with the offer's tag and suite and a different key; EXPECT_SUITE=S:
#   baresip reports "SRTP is Enabled (cryptosuite=S)".
# Env: URI (sip:conference@127.0.0.1:5060, ";transport=tls" for TLS)  NAME  TONE  PIN
#   PROMPT_WAIT  HANGUP_AT  TAIL  EXPECT_TONES  ABSENT_TONES(=TONE)  EXPECT_PROMPT(=1)
#   PROMPT_MIN_DB(=-45)  MEDIAENC(none|srtp|srtp-mand|srtp-mandf)  CODECS(pcmu)
#   LOCAL_PORT  CTRL_PORT  RTP_PORTS  OUT (directory)  SIP_TRACE(=0)  EXPECT_SUITE
#   AUDIO_LEVEL(=0; 1: baresip sends RFC 6464 audio levels)  TONE=0: a silent caller
#   KEYS_FILE: after the PIN, every line appended to it is sent as keys (RFC 4733);
#   "hangup" hangs up before HANGUP_AT (bsip.py --keys-file; KEYS_FILE.sent says when)
# Leaves OUT/received.wav and OUT/sent.wav (8 kHz, what baresip decoded / encoded).
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
fail() { echo "FAIL: $NAME: $*" >&2; fails=$((fails + 1)); }
die() { echo "FAIL: $NAME: $*" >&2; exit 1; }

: "${URI:?}" "${NAME:?}" "${TONE:?}" "${HANGUP_AT:?}" "${LOCAL_PORT:?}" "${CTRL_PORT:?}" "${RTP_PORTS:?}" "${OUT:?}"
PIN=${PIN-31415926#}; PROMPT_WAIT=${PROMPT_WAIT:-4}; TAIL=${TAIL:-7}
EXPECT_TONES=${EXPECT_TONES:-}; ABSENT_TONES=${ABSENT_TONES-$TONE}
EXPECT_PROMPT=${EXPECT_PROMPT:-1}; PROMPT_MIN_DB=${PROMPT_MIN_DB:--45}
MEDIAENC=${MEDIAENC:-none}; CODECS=${CODECS:-pcmu}
SIP_TRACE=${SIP_TRACE:-0}; EXPECT_SUITE=${EXPECT_SUITE:-}; AUDIO_LEVEL=${AUDIO_LEVEL:-0}
fails=0
trace=()
[ "$SIP_TRACE" = 1 ] && trace=(--sip-trace)
[ "$AUDIO_LEVEL" = 1 ] && trace+=(--audio-level)
[ -n "${KEYS_FILE:-}" ] && trace+=(--keys-file "$KEYS_FILE")

mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
for p in "$LOCAL_PORT" "$((LOCAL_PORT + 1))" "$CTRL_PORT"; do
  port_free "$p" || die "local port $p is busy"
done

# tone source must outlast the call (baresip's aufile ends the call at EOF)
CALL_SECS=$(( HANGUP_AT - $(date +%s) + 15 ))
mk_tone "$TONE" "$CALL_SECS" "$OUT/source.wav" || die "sox could not make the tone"

"$PY" "$SIPT_LIB/bsip.py" --role call --dir "$OUT/ua" --user "$NAME" \
   --sip-port "$LOCAL_PORT" --ctrl-port "$CTRL_PORT" --rtp-ports "$RTP_PORTS" \
   --target "$URI" --mediaenc "$MEDIAENC" --codecs "$CODECS" \
   --source "$OUT/source.wav" --prompt-wait "$PROMPT_WAIT" --dtmf "$PIN" \
   --hangup-at "$HANGUP_AT" --result "$OUT/result.json" "${trace[@]}" > "$OUT/bsip.out" 2> "$OUT/bsip.err"

R="$OUT/result.json"
[ -s "$R" ] || die "driver produced no result (see $OUT/bsip.err)"
get() {
  "$PY" -c 'import json,sys
v = json.load(open(sys.argv[1])).get(sys.argv[2])
print("" if v is None else (v[-1] if isinstance(v, list) and v else v))' "$R" "$1"
}
if [ "$(get established)" != True ]; then
  grep -E 'SIP Progress|session closed|terminated|Not Acceptable|Warning:|crypto' "$OUT/ua/baresip.log" 2>/dev/null | tail -3 >&2
  die "call to $URI not established ($(get closed_reason))"
fi
echo "$NAME: established, rx codec $(get rx_codec), SRTP=$(get srtp_enabled) $(get cryptosuite), sent DTMF '$(get dtmf_sent)'"
[ "$(get dtmf_sent)" = "$PIN" ] || fail "sent DTMF '$(get dtmf_sent)' instead of '$PIN'"
case "$MEDIAENC" in
  srtp-mand|srtp-mandf) [ "$(get srtp_enabled)" = True ] || fail "SRTP not active" ;;
  none) [ "$(get srtp_enabled)" = True ] && fail "SRTP active although MEDIAENC=none" ;;
esac
if [ -n "$EXPECT_SUITE" ] && [ "$(get cryptosuite)" != "$EXPECT_SUITE" ]; then
  fail "SRTP suite '$(get cryptosuite)', expected $EXPECT_SUITE"
fi
if [ "$SIP_TRACE" = 1 ] && [ "$MEDIAENC" != none ]; then
  # offer/answer a=crypto lines as "tag suite key#<sha256 prefix>"
  sdes=$("$PY" -c 'import json,sys
r = json.load(open(sys.argv[1]))
o, a = r.get("sdp_offer_crypto") or [], r.get("sdp_answer_crypto") or []
print("offered: " + (", ".join(x.rsplit(" ", 1)[0] for x in o) or "none")
      + "; answered: " + (", ".join(x.rsplit(" ", 1)[0] for x in a) or "none"))
if len(a) != 1:
    print(f"FAIL the answer has {len(a)} a=crypto lines, expected 1")
elif a[0].rsplit(" ", 1)[0] not in [x.rsplit(" ", 1)[0] for x in o]:
    print("FAIL the answer a=crypto tag/suite is not one of the offered ones")
elif a[0].rsplit(" ", 1)[1] in [x.rsplit(" ", 1)[1] for x in o]:
    print("FAIL the answer repeats our key instead of a fresh one")' "$R")
  echo "$NAME: SDES $(echo "$sdes" | head -1)"
  while read -r l; do fail "SDES: ${l#FAIL }"; done < <(echo "$sdes" | grep '^FAIL')
fi
[ "$(get closed_by_peer)" = True ] && fail "far end hung up early ($(get closed_reason))"

REC=$(get rec_dec)
if [ -z "$REC" ] || [ ! -s "$REC" ]; then die "no recording of the received audio"; fi
cp "$REC" "$OUT/received.wav"
ENC=$(get rec_enc)
[ -n "$ENC" ] && [ -s "$ENC" ] && cp "$ENC" "$OUT/sent.wav"
if [ "$EXPECT_PROMPT" = 1 ]; then
  "$PY" "$SIPT_LIB/audio_check.py" "$OUT/received.wav" --head "$PROMPT_WAIT" \
     --min-rms "$PROMPT_MIN_DB" --label "$NAME prompt" || fails=$((fails + 1))
fi
args=()
for t in $EXPECT_TONES; do args+=(--expect "$t"); done
for t in $ABSENT_TONES; do args+=(--absent "$t"); done
"$PY" "$SIPT_LIB/audio_check.py" "$OUT/received.wav" --tail "$TAIL" "${args[@]}" \
   --label "$NAME" || fails=$((fails + 1))
[ "$fails" = 0 ] && echo "$NAME: OK, heard [${EXPECT_TONES}] and not [${ABSENT_TONES}] in the last ${TAIL}s"
[ "$fails" = 0 ]
