#!/usr/bin/env bash
# Regenerate the bridge's prompts (prompts/de/*.wav, prompts/en/*.wav) with
# espeak-ng + sox.  Output: WAV, 8000 Hz, mono, signed 16-bit PCM, speech
# normalised to -3 dBFS peak, 150 ms of silence at the start and the end.
# join.wav is a two-beep tone (600 Hz then 900 Hz) at -12 dBFS peak.
#
# Usage: prompts/make-prompts.sh [OUTDIR]      (default: the script's directory)
# Needs: espeak-ng, sox (Debian: apt-get install espeak-ng sox).
# Output is deterministic (no dither), so regenerating gives identical files
# for the same espeak-ng/sox versions.
set -euo pipefail

OUTDIR="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
RATE_WPM="${RATE_WPM:-150}"   # espeak-ng speed, words per minute
PAD="0.15"                    # seconds of silence at start and end
SPEECH_PEAK_DB="-3"
TONE_PEAK_DB="-12"

for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "make-prompts: '$tool' not found (apt-get install espeak-ng sox)" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Final format for every file.  -D: no dither (clean digital silence, reproducible).
FMT=(-D -r 8000 -c 1 -b 16 -e signed-integer -t wav)

# say VOICE OUT.wav "text"
say() {
  local voice="$1" out="$2" text="$3" raw="$TMP/raw.wav"
  espeak-ng -v "$voice" -s "$RATE_WPM" -w "$raw" -- "$text"
  # trim espeak's own leading/trailing silence, band-limit for telephony,
  # resample, normalise the peak, then add exactly PAD s of silence each side
  sox "$raw" "${FMT[@]}" "$out" \
      silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse \
      highpass 120 lowpass 3400 rate -v 8000 norm "$SPEECH_PEAK_DB" pad "$PAD" "$PAD"
}

# Join tone: 600 Hz 120 ms, 40 ms gap, 900 Hz 120 ms, 5 ms fades.
join_tone() {
  local out="$1"
  sox -D -n -r 8000 -c 1 -b 16 "$TMP/b1.wav" synth 0.12 sine 600 fade h 0.005 0.12 0.005
  sox -D -n -r 8000 -c 1 -b 16 "$TMP/gap.wav" trim 0 0.04
  sox -D -n -r 8000 -c 1 -b 16 "$TMP/b2.wav" synth 0.12 sine 900 fade h 0.005 0.12 0.005
  sox "$TMP/b1.wav" "$TMP/gap.wav" "$TMP/b2.wav" "${FMT[@]}" "$out" \
      norm "$TONE_PEAK_DB" pad "$PAD" "$PAD"
}

# German.  "PIN" is written "Pinn" because espeak-ng would otherwise spell it
# out (P-I-N) or say a long "Piin"; German speakers say [pɪn].
mkdir -p "$OUTDIR/de" "$OUTDIR/en"
say de "$OUTDIR/de/enter_pin.wav" \
  "Willkommen in der Telefonkonferenz. Bitte geben Sie die Konferenz-Pinn ein und drücken Sie anschließend die Raute-Taste."
say de "$OUTDIR/de/wrong_pin.wav" \
  "Diese Pinn ist nicht korrekt. Bitte versuchen Sie es noch einmal."
say de "$OUTDIR/de/goodbye.wav" \
  "Zu viele falsche Versuche. Auf Wiederhören."
say de "$OUTDIR/de/first_participant.wav" \
  "Sie sind der erste Teilnehmer."

# English.  "pin" in lower case: espeak-ng spells out an upper-case "PIN".
say en-gb "$OUTDIR/en/enter_pin.wav" \
  "Welcome to the conference. Please enter the conference pin, followed by the hash key."
say en-gb "$OUTDIR/en/wrong_pin.wav" \
  "That pin is not correct. Please try again."
say en-gb "$OUTDIR/en/goodbye.wav" \
  "Too many wrong attempts. Goodbye."
say en-gb "$OUTDIR/en/first_participant.wav" \
  "You are the first participant."

join_tone "$OUTDIR/de/join.wav"
cp "$OUTDIR/de/join.wav" "$OUTDIR/en/join.wav"

for f in "$OUTDIR"/de/*.wav "$OUTDIR"/en/*.wav; do
  printf '%-40s %6.2f s\n' "${f#"$OUTDIR"/}" "$(soxi -D "$f")"
done
