#!/usr/bin/env python3
"""Did the bridge read this ZRTP SAS to the caller? Finds, in what the caller recorded,
the prompt files that read SAS (sas_intro.wav, then one file per character, then
sas_confirm.wav) in that order, each where no other character's file fits better.

    sas_check.py RECORDING.wav PROMPTS_DIR SAS

SAS as the phone shows it (B32, e.g. "3tmd"): letters are sas_<c>.wav, digits
number_<d>.wav (the prompts read letters as spelling words). The recording may be at any rate (linphonec writes 48 kHz); it is
brought to the prompts' 8 kHz. Matching is normalised cross-correlation (the codec
changes the waveform a little, not its shape). Exit 0 when the SAS was read, 1 with
the reason otherwise; prints one line per prompt found.
"""
import sys
import wave

import numpy as np

PROMPT_RATE = 8000
# Normalised correlation a prompt must reach where it is found (1.0 = identical).
MATCH = 0.55
# How much better the right character must fit its place than any other character.
MARGIN = 0.05
ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"


def read(path):
    with wave.open(path) as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    if width != 2:
        sys.exit(f"sas_check: {path}: not 16-bit")
    x = np.frombuffer(data, dtype=np.int16).astype(np.float64)
    if ch > 1:
        x = x[::ch]
    return x, rate


def to_8k(x, rate):
    if rate == PROMPT_RATE:
        return x
    # Band-limit and resample in the frequency domain (exact for whole ratios).
    n = len(x)
    m = int(round(n * PROMPT_RATE / rate))
    spectrum = np.fft.rfft(x)
    keep = m // 2 + 1
    return np.fft.irfft(spectrum[:keep], m) * (m / n)


def xcorr(rec, tmpl):
    """Normalised cross-correlation of tmpl at every offset of rec."""
    n, k = len(rec), len(tmpl)
    if k >= n:
        return np.zeros(1)
    t = tmpl - tmpl.mean()
    size = 1 << int(np.ceil(np.log2(n + k)))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(t, size)), size)[: n - k + 1]
    c1 = np.concatenate(([0.0], np.cumsum(rec)))
    c2 = np.concatenate(([0.0], np.cumsum(rec * rec)))
    s1 = c1[k:] - c1[:-k]
    s2 = c2[k:] - c2[:-k]
    var = np.maximum(s2 - s1 * s1 / k, 1e-9)
    return corr / (np.sqrt(var) * np.linalg.norm(t) + 1e-9)


def aligned(seg, tmpl):
    """Normalised correlation of tmpl with the start of seg, without any shift."""
    n = min(len(seg), len(tmpl))
    if n == 0:
        return 0.0
    a = seg[:n] - seg[:n].mean()
    b = tmpl[:n] - tmpl[:n].mean()
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def prompt_file(directory, c):
    return f"{directory}/number_{c}.wav" if c.isdigit() else f"{directory}/sas_{c}.wav"


def trimmed(directory, name):
    x, rate = read(name)
    x = to_8k(x, rate)
    # The files carry 150 ms of silence at each end: match the speech only.
    loud = np.nonzero(np.abs(x) > 0.02 * np.abs(x).max())[0]
    return x[loud[0] : loud[-1] + 1] if len(loud) else x


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    rec_path, directory, sas = sys.argv[1], sys.argv[2], sys.argv[3].strip().lower()
    if len(sas) != 4 or any(c not in ALPHABET for c in sas):
        print(f"FAIL: {sas!r} is not a B32 SAS")
        return 1
    rec, rate = read(rec_path)
    rec = to_8k(rec, rate)
    pos = 0
    sequence = [("intro", f"{directory}/sas_intro.wav")]
    sequence += [(c, prompt_file(directory, c)) for c in sas]
    sequence += [("confirm", f"{directory}/sas_confirm.wav")]
    others = {c: trimmed(directory, prompt_file(directory, c)) for c in ALPHABET}
    for label, path in sequence:
        tmpl = trimmed(directory, path)
        # The introduction anywhere; each next prompt within 5 s of the one before.
        span = len(rec) if label == "intro" else 5 * PROMPT_RATE + len(tmpl)
        window = rec[pos : pos + span]
        c = xcorr(window, tmpl)
        # The first place it fits (a later, similar word must not be taken for it),
        # at the peak of that stretch.
        above = np.nonzero(c >= MATCH)[0]
        if len(above):
            start = int(above[0])
            at = start + int(np.argmax(c[start : start + len(tmpl)]))
        else:
            at = int(np.argmax(c))
        score = float(c[at])
        if score < MATCH:
            print(f"FAIL: {label} ({path}) not found after {pos / PROMPT_RATE:.2f} s: best {score:.2f}")
            return 1
        if label in ALPHABET:
            # No other character's prompt fits this very place as well: the same start,
            # sample by sample (similar-sounding letter names correlate well at some
            # shift, never at the alignment where the right file was played).
            seg = window[at:]
            rivals = []
            for o, t in others.items():
                if o != label:
                    rivals.append((aligned(seg, t), o))
            best_rival = max(rivals) if rivals else (0.0, "-")
            if best_rival[0] > score - MARGIN:
                print(
                    f"FAIL: {label}: {score:.2f}, but '{best_rival[1]}' fits as well ({best_rival[0]:.2f})"
                )
                return 1
            print(f"  {label}: at {(pos + at) / PROMPT_RATE:.2f} s, {score:.2f} (best other: '{best_rival[1]}' {best_rival[0]:.2f})")
        else:
            print(f"  {label}: at {(pos + at) / PROMPT_RATE:.2f} s, {score:.2f}")
        pos += at + len(tmpl)
    print(f"the bridge read the SAS {sas}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
