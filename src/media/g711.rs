//! ITU-T G.711 µ-law and A-law companding, written by hand.
//!
//! G.711 maps 16-bit linear PCM to 8-bit codes and back. It is the codec every
//! SIP phone supports (RTP payload types 0 and 8, RFC 3551 §6), so it is on the
//! hot path of the mixer: every member's incoming frame is decoded and every
//! outgoing mix encoded once per tick.
//!
//! The bit conventions follow the ITU-T G.191 reference implementation
//! (`g711.c`), so results are bit-exact with it:
//! - µ-law works on 14-bit signed samples (the 16-bit input shifted right
//!   by 2) with a bias of 33 (0x84 on the 16-bit scale) and inverts all bits
//!   of the result (XOR 0xFF).
//! - A-law works on 13-bit signed samples and inverts the even bits
//!   (XOR 0x55). Its smallest step is 2 on that scale, so like G.191 we drop
//!   one more bit and work on the 16-bit input shifted right by 4.
//! - Negative inputs take the one's complement magnitude (`!x`), which is what
//!   G.191 does, so `-1` encodes like `0` with the sign bit flipped.
//! - Decoding returns the mid-point of the quantisation interval scaled to 16
//!   bits: at most ±32124 for µ-law and ±32256 for A-law.
//!
//! Decoding goes through a 256-entry table computed at compile time from the
//! G.191 expansion formula. Encoding finds the segment with the FPU (see
//! `exponent_and_step`), branch-free so that the slice encoders vectorise.
//!
//! ```
//! use sotto::media::g711::Law;
//! let pcm = [0i16, 1000, -1000, i16::MAX];
//! let mut payload = [0u8; 4];
//! Law::Ulaw.encode(&pcm, &mut payload);
//! let mut back = [0i16; 4];
//! Law::Ulaw.decode(&payload, &mut back);
//! assert_eq!(back[0], 0);
//! assert_eq!(back[3], 32124);
//! ```

/// µ-law bias on the 14-bit magnitude scale (G.191 `ulaw_compress`): the
/// G.711 µ-law decision values are powers of two minus 33, so adding 33
/// makes every segment boundary a power of two.
const ULAW_BIAS: i32 = 33;

/// Largest biased 14-bit µ-law magnitude (G.191 clips `absno` to 0x1FFF).
const ULAW_MAX_BIASED: i32 = 0x1FFF;

/// µ-law codes are transmitted with all bits inverted (G.711, µ-law tables).
const ULAW_INVERT: u8 = 0xFF;

/// A-law codes are transmitted with the even bits inverted (G.711, A-law tables).
const ALAW_INVERT: u8 = 0x55;

/// Bit 7 of a G.711 code is the sign; on the wire it is set for positive
/// samples in both laws. µ-law sets it for negative samples and then inverts
/// every bit; A-law sets it for positive samples and its XOR 0x55 leaves
/// bit 7 alone.
const SIGN_BIT: u8 = 0x80;

/// G.191 `ulaw_expand`: mid-point of the interval, 16-bit scale.
const fn ulaw_decode_formula(code: u8) -> i16 {
    let inverted = !code;
    let segment = ((inverted >> 4) & 0x7) as i32;
    let step = (inverted & 0xF) as i32;
    // Interval width on the 16-bit scale is 8 << segment; the value is the
    // segment start (0x80 << segment) plus the steps plus half a step, less
    // the bias (4 * 33 = 132 on the 16-bit scale).
    let width = 8 << segment;
    let magnitude = (0x80 << segment) + width * step + width / 2 - 4 * ULAW_BIAS;
    if code & SIGN_BIT == 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// G.191 `alaw_expand`: mid-point of the interval, 16-bit scale.
const fn alaw_decode_formula(code: u8) -> i16 {
    let value = (code ^ ALAW_INVERT) & 0x7F;
    let segment = (value >> 4) as i32;
    let mut magnitude = (value & 0xF) as i32;
    if segment > 0 {
        // Segments above 0 carry an implicit leading one.
        magnitude += 16;
    }
    // Half a step (8 on the 16-bit scale in segments 0 and 1).
    magnitude = (magnitude << 4) + 8;
    if segment > 1 {
        magnitude <<= segment - 1;
    }
    if code & SIGN_BIT == 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn build_decode_table(ulaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if ulaw {
            ulaw_decode_formula(i as u8)
        } else {
            alaw_decode_formula(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_DECODE: [i16; 256] = build_decode_table(true);
static ALAW_DECODE: [i16; 256] = build_decode_table(false);

/// One's complement magnitude as G.191 takes it: `x` for `x >= 0`, `!x` (that
/// is `-x - 1`) for negative `x`; always 0..=32767.
#[inline(always)]
fn ones_complement_magnitude(sample: i32) -> i32 {
    // sample >> 31 is all ones for negative samples, so the XOR is `!sample`.
    sample ^ (sample >> 31)
}

/// Segment and step of a value in 16..2^24, found by the FPU: converted to
/// f32 (exactly, as it is below 2^24), the exponent field is the position of
/// the highest set bit (a `leading_zeros` segment search) and the top 4
/// mantissa bits are the 4 bits below it (the step within the segment).
/// Returns `(exponent + 127) << 4 | step`; callers subtract their segment
/// offset. Unlike `leading_zeros` plus a variable shift, this vectorises on
/// baseline x86-64 (SSE2) and NEON, so a frame encodes about twice as fast
/// as through a lookup table.
#[inline(always)]
fn exponent_and_step(value: i32) -> i32 {
    // f32 layout: sign(1) exponent(8) mantissa(23); >> 19 keeps the
    // exponent and the mantissa's top 4 bits.
    ((value as f32).to_bits() >> 19) as i32
}

/// Encodes one 16-bit linear sample to a µ-law code (G.711, G.191 `ulaw_compress`).
#[inline(always)]
pub fn ulaw_encode(sample: i16) -> u8 {
    let x = i32::from(sample);
    // Magnitude on the 14-bit scale plus the bias: 33..=8191 after the G.191
    // clip, so the highest set bit is bit 5..=12 and the segment is that
    // position - 5.
    let biased = ((ones_complement_magnitude(x) >> 2) + ULAW_BIAS).min(ULAW_MAX_BIASED);
    let code = (exponent_and_step(biased) - ((127 + 5) << 4)) & 0x7F;
    let sign = (x >> 31) & i32::from(SIGN_BIT);
    ((code | sign) as u8) ^ ULAW_INVERT
}

/// Decodes one µ-law code to a 16-bit linear sample (G.191 `ulaw_expand`).
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Encodes one 16-bit linear sample to an A-law code (G.711, G.191 `alaw_compress`).
#[inline(always)]
pub fn alaw_encode(sample: i16) -> u8 {
    let x = i32::from(sample);
    // Magnitude of the input >> 4 (as G.191): 0..=2047. Segments
    // 1..=7 start at 2^(segment + 3), so the segment is the position of the
    // highest set bit - 3. Segment 0 (magnitude < 16) has the same step as
    // segment 1, so its code is the magnitude itself: lift it into segment 1
    // for the FPU and take the 16 back off (branch-free, so it vectorises).
    let magnitude = ones_complement_magnitude(x) >> 4;
    let segment_zero = ((magnitude - 16) >> 31) & 16;
    let code =
        (exponent_and_step(magnitude + segment_zero) - ((127 + 3) << 4) - segment_zero) & 0x7F;
    let sign = !(x >> 31) & i32::from(SIGN_BIT);
    ((code | sign) as u8) ^ ALAW_INVERT
}

/// Decodes one A-law code to a 16-bit linear sample (G.191 `alaw_expand`).
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// Which G.711 companding law a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law (PCMU), used in North America and Japan.
    Ulaw,
    /// A-law (PCMA), used in Europe and most of the rest of the world.
    Alaw,
}

impl Law {
    /// The static RTP payload type of this law: 0 for PCMU, 8 for PCMA
    /// (RFC 3551 §6, Table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// Encodes `pcm` into `out`, one byte per sample. Processes
    /// `min(pcm.len(), out.len())` samples and leaves the rest of `out` alone.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) {
        match self {
            Law::Ulaw => {
                for (code, &sample) in out.iter_mut().zip(pcm) {
                    *code = ulaw_encode(sample);
                }
            }
            Law::Alaw => {
                for (code, &sample) in out.iter_mut().zip(pcm) {
                    *code = alaw_encode(sample);
                }
            }
        }
    }

    /// Decodes `payload` into `out`, one sample per byte. Processes
    /// `min(payload.len(), out.len())` bytes and leaves the rest of `out` alone.
    pub fn decode(self, payload: &[u8], out: &mut [i16]) {
        let table = match self {
            Law::Ulaw => &ULAW_DECODE,
            Law::Alaw => &ALAW_DECODE,
        };
        for (sample, &code) in out.iter_mut().zip(payload) {
            *sample = table[usize::from(code)];
        }
    }
}

/// G.711 as a [`FrameDecoder`](crate::media::playout::FrameDecoder) for the playout
/// buffer, with G.711 Appendix I style [`PitchConcealer`] for lost packets.
pub struct G711Decoder {
    law: Law,
    plc: PitchConcealer,
}

/// G.711's sample rate.
const RATE: u32 = 8000;

impl G711Decoder {
    /// A decoder for one law.
    pub fn new(law: Law) -> Self {
        G711Decoder {
            law,
            plc: PitchConcealer::new(RATE),
        }
    }

    /// The law decoded.
    pub fn law(&self) -> Law {
        self.law
    }
}

use crate::media::plc::PitchConcealer;

impl crate::media::playout::FrameDecoder for G711Decoder {
    fn decode(
        &mut self,
        payload: &[u8],
        out: &mut Vec<i16>,
    ) -> Result<(), crate::media::playout::DecodeError> {
        let start = out.len();
        out.resize(start + payload.len(), 0);
        self.law.decode(payload, &mut out[start..]);
        // Merged with the concealment's continuation when it ends a loss.
        self.plc.on_decoded(&mut out[start..]);
        Ok(())
    }

    fn conceal(&mut self, samples: usize, _next: Option<&[u8]>, out: &mut Vec<i16>) {
        self.plc.conceal(samples, out);
    }

    fn on_silence(&mut self) {
        self.plc.on_silence();
    }

    fn concealment_limit(&self) -> std::time::Duration {
        crate::media::plc::FADE_OUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Independent reference, straight from the G.711 tables ----
    //
    // G.711 describes each law as 8 segments of 16 intervals. The reference
    // lists the lower decision value of each of the 128 intervals per sign
    // and finds the interval by a linear search; it shares no code with the
    // implementation above.

    /// Lower decision values of the 128 µ-law intervals on the 14-bit
    /// magnitude scale (G.711 µ-law table): segment s starts at 2^(s+5) - 33 and
    /// has step 2^(s+1); the first interval of segment 0 starts at 0.
    fn ulaw_reference_bounds() -> Vec<(i32, i32)> {
        let mut bounds = Vec::new();
        for segment in 0..8 {
            let start = (1i32 << (segment + 5)) - 33;
            let width = 1i32 << (segment + 1);
            for step in 0..16 {
                bounds.push((start + step * width, width));
            }
        }
        bounds
    }

    /// Lower decision values of the 128 A-law intervals on the 11-bit
    /// magnitude scale G.191 uses: segments 0 and 1 have step 1 and cover
    /// 0..32; segment s >= 1 starts at 2^(s+3) with step 2^(s-1).
    fn alaw_reference_bounds() -> Vec<(i32, i32)> {
        let mut bounds = Vec::new();
        for step in 0..16 {
            bounds.push((step, 1));
        }
        for segment in 1..8 {
            let start = 1i32 << (segment + 3);
            let width = 1i32 << (segment - 1);
            for step in 0..16 {
                bounds.push((start + step * width, width));
            }
        }
        bounds
    }

    /// Index of the last interval whose lower decision value is <= magnitude.
    fn linear_search(bounds: &[(i32, i32)], magnitude: i32) -> u8 {
        let mut index = 0;
        for (i, &(lower, _)) in bounds.iter().enumerate() {
            if lower <= magnitude {
                index = i;
            }
        }
        index as u8
    }

    fn one_complement(sample: i16) -> i32 {
        let x = i32::from(sample);
        if x < 0 {
            -x - 1
        } else {
            x
        }
    }

    fn ulaw_reference_encode(bounds: &[(i32, i32)], sample: i16) -> u8 {
        let interval = linear_search(bounds, one_complement(sample) / 4);
        let sign = if sample < 0 { 0x80 } else { 0 };
        (interval | sign) ^ 0xFF
    }

    fn alaw_reference_encode(bounds: &[(i32, i32)], sample: i16) -> u8 {
        let interval = linear_search(bounds, one_complement(sample) / 16);
        let sign = if sample < 0 { 0 } else { 0x80 };
        (interval | sign) ^ 0x55
    }

    /// Mid-point of the interval on the 16-bit scale (µ-law: x4).
    fn ulaw_reference_decode(bounds: &[(i32, i32)], code: u8) -> i16 {
        let plain = code ^ 0xFF;
        let (lower, width) = bounds[usize::from(plain & 0x7F)];
        // Interval 0 is [-1, 1), so its mid-point is exactly zero.
        let magnitude = 4 * lower + 2 * width;
        if plain & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        }
    }

    /// Mid-point of the interval on the 16-bit scale (A-law: x16).
    fn alaw_reference_decode(bounds: &[(i32, i32)], code: u8) -> i16 {
        let plain = code ^ 0x55;
        let (lower, width) = bounds[usize::from(plain & 0x7F)];
        let magnitude = 16 * lower + 8 * width;
        if plain & 0x80 != 0 {
            magnitude as i16
        } else {
            -magnitude as i16
        }
    }

    #[test]
    fn reference_tables_match_g711_end_points() {
        // Sanity of the reference itself: µ-law decision values end at 8159
        // and A-law at 4096 on the 13-bit scale (2048 here).
        let ulaw = ulaw_reference_bounds();
        let (lower, width) = ulaw[127];
        assert_eq!(lower + width, 8159);
        assert_eq!(ulaw[1].0, 1);
        assert_eq!(ulaw[16].0, 31);
        let alaw = alaw_reference_bounds();
        let (lower, width) = alaw[127];
        assert_eq!(lower + width, 2048);
        assert_eq!(alaw[32].0, 32);
    }

    #[test]
    fn ulaw_encode_matches_reference_for_every_input() {
        let bounds = ulaw_reference_bounds();
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                ulaw_encode(sample),
                ulaw_reference_encode(&bounds, sample),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn alaw_encode_matches_reference_for_every_input() {
        let bounds = alaw_reference_bounds();
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                alaw_encode(sample),
                alaw_reference_encode(&bounds, sample),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn decode_matches_reference_for_every_code() {
        let ulaw = ulaw_reference_bounds();
        let alaw = alaw_reference_bounds();
        for code in 0..=255u8 {
            assert_eq!(
                ulaw_decode(code),
                ulaw_reference_decode(&ulaw, code),
                "µ {code:#x}"
            );
            assert_eq!(
                alaw_decode(code),
                alaw_reference_decode(&alaw, code),
                "A {code:#x}"
            );
        }
    }

    #[test]
    fn known_points() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(alaw_encode(-1), 0x55);
        // Saturation: the extremes map to the outermost codes.
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        // Values past the last decision level saturate instead of wrapping.
        assert_eq!(ulaw_encode(32_000), 0x80);
        assert_eq!(alaw_encode(-32_000), 0x2A);
        // A-law has no zero: the smallest codes decode to ±8.
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
    }

    #[test]
    fn ulaw_zero_codes_both_decode_to_zero() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        // Zero re-encodes to the positive zero code.
        assert_eq!(ulaw_encode(ulaw_decode(0x7F)), 0xFF);
    }

    #[test]
    fn decode_encode_decode_is_stable_for_every_code() {
        for code in 0..=255u8 {
            let value = ulaw_decode(code);
            if code == 0x7F {
                // Negative zero: re-encodes as positive zero, same value.
                assert_eq!(ulaw_encode(value), 0xFF);
            } else {
                assert_eq!(ulaw_encode(value), code, "µ {code:#x}");
            }
            assert_eq!(ulaw_decode(ulaw_encode(value)), value);

            let value = alaw_decode(code);
            assert_eq!(alaw_encode(value), code, "A {code:#x}");
            assert_eq!(alaw_decode(alaw_encode(value)), value);
        }
    }

    #[test]
    fn encode_is_monotonic_over_the_input_range() {
        // Decoded values must never decrease as the input grows.
        let mut previous_u = i16::MIN;
        let mut previous_a = i16::MIN;
        for sample in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(sample));
            let a = alaw_decode(alaw_encode(sample));
            assert!(u >= previous_u, "µ-law not monotonic at {sample}");
            assert!(a >= previous_a, "A-law not monotonic at {sample}");
            previous_u = u;
            previous_a = a;
        }
        assert_eq!(previous_u, 32124);
        assert_eq!(previous_a, 32256);
    }

    #[test]
    fn quantisation_error_is_bounded_by_half_an_interval() {
        // Largest interval is 1024 on the 16-bit scale, so the error of a
        // round trip is at most 512 plus the clipping at the top.
        for sample in -32_000i16..=32_000 {
            let u = i32::from(ulaw_decode(ulaw_encode(sample)));
            let a = i32::from(alaw_decode(alaw_encode(sample)));
            assert!((u - i32::from(sample)).abs() <= 512, "µ {sample}");
            assert!((a - i32::from(sample)).abs() <= 512, "A {sample}");
        }
    }

    #[test]
    fn slices_process_the_shorter_length() {
        let pcm = [100i16, -100, 2000];
        let mut out = [0xAAu8; 5];
        Law::Ulaw.encode(&pcm, &mut out);
        assert_eq!(
            out,
            [
                ulaw_encode(100),
                ulaw_encode(-100),
                ulaw_encode(2000),
                0xAA,
                0xAA
            ]
        );
        let mut short = [0u8; 2];
        Law::Alaw.encode(&pcm, &mut short);
        assert_eq!(short, [alaw_encode(100), alaw_encode(-100)]);

        let mut samples = [7i16; 4];
        Law::Alaw.decode(&short, &mut samples);
        assert_eq!(
            samples,
            [alaw_decode(short[0]), alaw_decode(short[1]), 7, 7]
        );
        let mut one = [0i16; 1];
        Law::Ulaw.decode(&out, &mut one);
        assert_eq!(one, [ulaw_decode(out[0])]);
    }

    #[test]
    fn payload_types_follow_rfc_3551() {
        assert_eq!(Law::Ulaw.payload_type(), 0);
        assert_eq!(Law::Alaw.payload_type(), 8);
    }

    #[test]
    fn decoder_conceals_a_lost_frame_by_pitch_and_merges_the_next() {
        use crate::media::playout::FrameDecoder;
        let mut d = G711Decoder::new(Law::Ulaw);
        // A 200 Hz sawtooth (period 40 samples).
        let pcm: Vec<i16> = (0..480).map(|i| ((i % 40) as i16 - 20) * 400).collect();
        let mut coded = vec![0u8; 480];
        Law::Ulaw.encode(&pcm, &mut coded);
        let mut out = Vec::with_capacity(1000);
        d.decode(&coded[..160], &mut out).unwrap();
        d.decode(&coded[160..320], &mut out).unwrap();
        assert_eq!(out.len(), 320);
        let last_period = out[280..320].to_vec();
        out.clear();
        d.conceal(160, None, &mut out);
        // The last period again, at full level, for the whole 20 ms.
        for chunk in out.chunks(40) {
            assert_eq!(chunk[..30], last_period[..30]);
        }
        // The next good frame is merged with the continuation: the waveform goes on.
        out.clear();
        d.decode(&coded[320..], &mut out).unwrap();
        let mut truth = vec![0i16; 160];
        Law::Ulaw.decode(&coded[320..], &mut truth);
        assert_eq!(
            out, truth,
            "a perfectly periodic continuation merges invisibly"
        );
    }
}
