#!/usr/bin/env bash
# Regenerate the bridge's prompts (prompts/de/*.wav, prompts/en/*.wav) with
# espeak-ng + sox.  Output: WAV, 8000 Hz, mono, signed 16-bit PCM, speech
# normalised to -3 dBFS peak, 150 ms of silence at the start and the end.
# join.wav is a two-beep tone (600 Hz then 900 Hz) at -12 dBFS peak, leave.wav
# the same reversed (900 Hz then 600 Hz).  number_0.wav .. number_99.wav are
# the numerals read out.
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

# speech_fx OUT.wav [EFFECT...]: process $TMP/raw.wav into OUT.wav; sox's
# messages go to $TMP/sox.log.  Trim espeak's own leading/trailing silence,
# (optional EFFECT), band-limit for telephony, resample, normalise the peak,
# then add exactly PAD s of silence each side.
speech_fx() {
  local out="$1"; shift
  sox "$TMP/raw.wav" "${FMT[@]}" "$out" \
      silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse "$@" \
      highpass 120 lowpass 3400 rate -v 8000 norm "$SPEECH_PEAK_DB" pad "$PAD" "$PAD" \
      2>"$TMP/sox.log" || { cat "$TMP/sox.log" >&2; return 1; }
}

# say VOICE OUT.wav "text"
say() {
  local voice="$1" out="$2" text="$3"
  espeak-ng -v "$voice" -s "$RATE_WPM" -w "$TMP/raw.wav" -- "$text"
  speech_fx "$out"
  # espeak-ng peaks near full scale and the filters can overshoot it by a few
  # samples.  If sox reports clipping, redo the file with 6 dB of headroom
  # (the final peak is the same, norm sets it).  Only then, so prompts that
  # never clipped keep their bytes.
  if grep -q clipped "$TMP/sox.log"; then speech_fx "$out" gain -6; fi
  cat "$TMP/sox.log" >&2
}

# two_tone OUT F1 F2: F1 Hz 120 ms, 40 ms gap, F2 Hz 120 ms, 5 ms fades.
two_tone() {
  local out="$1" f1="$2" f2="$3"
  sox -D -n -r 8000 -c 1 -b 16 "$TMP/b1.wav" synth 0.12 sine "$f1" fade h 0.005 0.12 0.005
  sox -D -n -r 8000 -c 1 -b 16 "$TMP/gap.wav" trim 0 0.04
  sox -D -n -r 8000 -c 1 -b 16 "$TMP/b2.wav" synth 0.12 sine "$f2" fade h 0.005 0.12 0.005
  sox "$TMP/b1.wav" "$TMP/gap.wav" "$TMP/b2.wav" "${FMT[@]}" "$out" \
      norm "$TONE_PEAK_DB" pad "$PAD" "$PAD"
}

# One call per prompt: de NAME "text" / en NAME "text" writes NAME.wav.
de() { say de    "$OUTDIR/de/$1.wav" "$2"; }
en() { say en-gb "$OUTDIR/en/$1.wav" "$2"; }

mkdir -p "$OUTDIR/de" "$OUTDIR/en"

# German.  "PIN" is written "Pinn" because espeak-ng would otherwise spell it
# out (P-I-N) or say a long "Piin"; German speakers say [pɪn].
# "stumm-geschaltet": as one word espeak-ng says "stumm-gä-schaltet" (full e
# in "ge-"); the hyphen gives the schwa.  "Vortraks-Modus": "Vortragsmodus"
# comes out with a short a and a stressed "-dus", "Vortrags-Modus" with a
# voiced g; this spelling gives long a, "ks" and the stress on "Vor"/"Mo".
de enter_pin            "Willkommen in der Telefonkonferenz. Bitte geben Sie die Konferenz-Pinn ein und drücken Sie anschließend die Raute-Taste."
de wrong_pin            "Diese Pinn ist nicht korrekt. Bitte versuchen Sie es noch einmal."
de goodbye              "Zu viele falsche Versuche. Auf Wiederhören."
de first_participant    "Sie sind der erste Teilnehmer."
de muted                "Sie sind stumm-geschaltet."
de unmuted              "Ihr Mikrofon ist eingeschaltet."
de hand_raised          "Ihre Hand ist gehoben."
de hand_lowered         "Ihre Hand ist gesenkt."
de participants         "Teilnehmende in dieser Konferenz:"
de quieter              "Leiser."
de louder               "Lauter."
de help_intro           "Sie können diese Tasten verwenden."
de help_mute            "Mikrofon aus- oder einschalten."
de help_hand            "Hand heben oder senken."
de help_count           "Anzahl der Teilnehmenden hören."
de help_quieter         "Konferenz leiser hören."
de help_louder          "Konferenz lauter hören."
de help_help            "diese Hilfe hören."
de help_lock            "Konferenz sperren oder entsperren."
de help_lecture         "Vortraks-Modus ein- oder ausschalten."
de help_floor           "der am längsten gehobenen Hand das Wort erteilen."
de help_remove_last     "die zuletzt hinzugekommene Person entfernen."
de help_mute_all        "alle außer der Moderation stummschalten."
de key_star             "Stern"
de key_hash             "Raute"
de locked               "Die Konferenz ist jetzt gesperrt."
de unlocked             "Die Konferenz ist jetzt entsperrt."
de room_locked          "Diese Konferenz ist gesperrt. Auf Wiederhören."
de room_full            "Diese Konferenz ist voll. Auf Wiederhören."
de lecture_on           "Der Vortraks-Modus ist eingeschaltet. Nur die Moderation kann sprechen."
de lecture_off          "Der Vortraks-Modus ist ausgeschaltet."
de unmute_not_allowed   "Während des Vortrags können Sie Ihr Mikrofon nicht selbst einschalten. Heben Sie die Hand, um sich zu Wort zu melden."
de floor_given          "Sie haben das Wort."
de no_hands             "Es ist keine Hand gehoben."
de removed              "Sie wurden aus der Konferenz entfernt. Auf Wiederhören."
de participant_removed  "Eine Person wurde entfernt."
de nobody_to_remove     "Es gibt niemanden zu entfernen."
de all_muted            "Alle außer der Moderation sind jetzt stumm-geschaltet."
de muted_by_moderator   "Die Moderation hat Sie stumm-geschaltet."
de moderator            "Sie moderieren diese Konferenz."
de wait_for_moderator   "Bitte warten Sie. Die Konferenz beginnt, sobald die Moderation dazukommt."
de conference_starts    "Die Moderation ist da. Die Konferenz beginnt."
de conference_ending    "Die Moderation hat die Konferenz verlassen. Die Konferenz endet gleich. Auf Wiederhören."
de only_participant     "Sie sind die einzige Person in der Konferenz."
de muted_hint           "Sie sind stumm-geschaltet. Zum Einschalten drücken Sie"
de not_allowed          "Diese Taste ist nicht verfügbar."
de more_than_99         "mehr als neunundneunzig"

# English.  "pin" in lower case: espeak-ng spells out an upper-case "PIN".
en enter_pin            "Welcome to the conference. Please enter the conference pin, followed by the hash key."
en wrong_pin            "That pin is not correct. Please try again."
en goodbye              "Too many wrong attempts. Goodbye."
en first_participant    "You are the first participant."
en muted                "You are muted."
en unmuted              "You are no longer muted."
en hand_raised          "Your hand is raised."
en hand_lowered         "Your hand is lowered."
en participants         "Participants in this conference:"
en quieter              "Quieter."
en louder               "Louder."
en help_intro           "You can use these keys."
en help_mute            "mute or unmute yourself."
en help_hand            "raise or lower your hand."
en help_count           "hear the number of participants."
en help_quieter         "hear the conference quieter."
en help_louder          "hear the conference louder."
en help_help            "hear this help."
en help_lock            "lock or unlock the conference."
en help_lecture         "lecture mode on or off."
en help_floor           "give the floor to the hand raised longest."
en help_remove_last     "remove the participant who joined last."
en help_mute_all        "mute everyone except moderators."
en key_star             "star"
en key_hash             "hash"
en locked               "The conference is now locked."
en unlocked             "The conference is now unlocked."
en room_locked          "This conference is locked. Goodbye."
en room_full            "This conference is full. Goodbye."
en lecture_on           "Lecture mode is on. Only moderators can speak."
en lecture_off          "Lecture mode is off."
en unmute_not_allowed   "You cannot unmute yourself during the lecture. Raise your hand to ask for the floor."
en floor_given          "You have the floor."
en no_hands             "No hands are raised."
en removed              "You have been removed from the conference. Goodbye."
en participant_removed  "A participant has been removed."
en nobody_to_remove     "There is nobody to remove."
en all_muted            "Everyone except moderators is now muted."
en muted_by_moderator   "The moderator has muted you."
en moderator            "You are a moderator."
en wait_for_moderator   "Please wait. The conference starts when the moderator joins."
en conference_starts    "The moderator has joined. The conference begins."
en conference_ending    "The moderator has left. The conference will end shortly. Goodbye."
en only_participant     "You are the only participant."
en muted_hint           "You are muted. To unmute, press"
en not_allowed          "That key is not available."
en more_than_99         "more than ninety-nine"

# Numbers for the participant count: espeak-ng reads the numeral
# ("21" -> "einundzwanzig" / "twenty-one", "0" -> "null" / "zero").
for n in $(seq 0 99); do
  de "number_$n" "$n"
  en "number_$n" "$n"
done

# ZRTP: the security code (SAS) read to the caller after the PIN. B32 codes are four
# characters of the alphabet ybndrfg8ejkmcpqxot1uwisza345h769: its letters as words of
# the spelling alphabet (DIN 5009 / NATO: letter names alone are too alike on a phone,
# "A" and "Ha", "C" and "P"), its digits the number_N files; an introduction, and the
# confirmation.
spell_de() {
  case $1 in
    a) echo Anton ;; b) echo Berta ;; c) echo Cäsar ;; d) echo Dora ;; e) echo Emil ;;
    f) echo Friedrich ;; g) echo Gustav ;; h) echo Heinrich ;; i) echo Ida ;;
    j) echo Julius ;; k) echo Kaufmann ;; m) echo Martha ;; n) echo Nordpol ;;
    o) echo Otto ;; p) echo Paula ;; q) echo Quelle ;; r) echo Richard ;;
    s) echo Samuel ;; t) echo Theodor ;; u) echo Ulrich ;; w) echo Wilhelm ;;
    x) echo Xanthippe ;; y) echo Ypsilon ;; z) echo Zacharias ;;
  esac
}
spell_en() {
  case $1 in
    a) echo Alfa ;; b) echo Bravo ;; c) echo Charlie ;; d) echo Delta ;; e) echo Echo ;;
    f) echo Foxtrot ;; g) echo Golf ;; h) echo Hotel ;; i) echo India ;;
    j) echo Juliett ;; k) echo Kilo ;; m) echo Mike ;; n) echo November ;;
    o) echo Oscar ;; p) echo Papa ;; q) echo Quebec ;; r) echo Romeo ;;
    s) echo Sierra ;; t) echo Tango ;; u) echo Uniform ;; w) echo Whiskey ;;
    x) echo X-ray ;; y) echo Yankee ;; z) echo Zulu ;;
  esac
}
for c in y b n d r f g e j k m c p q x o t u w i s z a h; do
  de "sas_$c" "$(spell_de "$c")"
  en "sas_$c" "$(spell_en "$c")"
done
# B256 codes are two words of the PGP word list (English in both languages, read by
# the English voice): pgp_<word>.wav, the words taken from the bridge's own list.
PGP_WORDS="$(dirname "${BASH_SOURCE[0]}")/../src/media/zrtp/pgp_words.rs"
[ -f "$PGP_WORDS" ] || { echo "make-prompts: $PGP_WORDS not found" >&2; exit 1; }
for w in $(grep -o '"[A-Za-z]*",' "$PGP_WORDS" | tr -d '",'); do
  lw=$(echo "$w" | tr '[:upper:]' '[:lower:]')
  en "pgp_$lw" "$w"
  cp "$OUTDIR/en/pgp_$lw.wav" "$OUTDIR/de/pgp_$lw.wav"
done
de sas_intro            "Ihr Sicherheitscode lautet:"
en sas_intro            "Your security code is:"
de sas_confirm          "Wenn Ihr Telefon denselben Code zeigt, drücken Sie die Raute."
en sas_confirm          "If your phone shows the same code, press hash."
de sas_confirmed        "Code bestätigt."
en sas_confirmed        "Code confirmed."
de zrtp_required        "Diese Konferenz verlangt ein Telefon mit ZRTP-Verschlüsselung."
en zrtp_required        "This conference requires a phone with ZRTP encryption."

# Tones, no speech: the same file in both directories.
two_tone "$OUTDIR/de/join.wav"  600 900   # join: rising
two_tone "$OUTDIR/de/leave.wav" 900 600   # leave: the join tone reversed
for t in join leave; do cp "$OUTDIR/de/$t.wav" "$OUTDIR/en/$t.wav"; done

for f in "$OUTDIR"/de/*.wav "$OUTDIR"/en/*.wav; do
  printf '%-40s %6.2f s\n' "${f#"$OUTDIR"/}" "$(soxi -D "$f")"
done
