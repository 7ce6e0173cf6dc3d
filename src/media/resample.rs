//! Low-delay integer-ratio resampling between 8, 16 and 48 kHz.
//!
//! A room mixes at the highest rate any of its members needs (8 kHz for
//! G.711 only, 16 kHz with G.722, 48 kHz with Opus); each member's audio is
//! converted to the room's rate on the way in and back on the way out. Every
//! conversion adds its delay to the mouth-to-ear path twice per call leg, so
//! this resampler is built for delay, not for the last decibel: a
//! linear-phase polyphase FIR (a Kaiser-windowed sinc) whose impulse
//! response spans 2.5 ms, hence 1.25 ms of group delay per conversion. An
//! FFT resampler would add about 10 ms.
//!
//! The filter sits at the higher of the two rates with its cut-off (-6 dB)
//! at the lower rate's Nyquist frequency (4 kHz between 8 and 48 kHz). A
//! 2.5 ms span buys a transition band of about ±725 Hz around it: below,
//! the response is flat within ±0.012 dB up to 80 % of Nyquist (3.2 kHz
//! at 8 kHz, -0.12 dB at 3.4 kHz; 6.4 kHz at 16 kHz), and from 118 % of
//! Nyquist on (4.72 kHz, 9.44 kHz) it is at least 58 dB down, against
//! aliasing when decimating and against images when interpolating. The
//! transition band is what such a short filter cannot avoid; telephone
//! speech has little energy there (G.711 paths filter at 3.4 kHz).
//!
//! All memory is allocated in [`Resampler::new`]: [`Resampler::process`]
//! allocates nothing and carries the filter state across calls, so 20 ms
//! blocks join without clicks and any block split gives the same samples.
//! The state holds recent audio and is wiped on [`Resampler::reset`] and
//! on drop.
//!
//! ```
//! use sotto::media::resample::Resampler;
//! let mut up = Resampler::new(8000, 48000).unwrap();
//! let block = [1000i16; 160]; // 20 ms at 8 kHz
//! let mut out = [0i16; 960]; // 20 ms at 48 kHz
//! assert_eq!(up.process(&block, &mut out), 960);
//! assert_eq!(up.delay_samples(), 60); // 1.25 ms at 48 kHz
//! ```

use zeroize::Zeroize;

/// Rates the resampler converts between: G.711 (8 kHz), G.722 (16 kHz)
/// and Opus's 48 kHz (RFC 7587 §4.1).
pub const SUPPORTED_RATES: [u32; 3] = [8000, 16000, 48000];

/// Group delay of every conversion, in samples at 8 kHz: 10 samples =
/// 1.25 ms. Measured at the lower rate so that it is a whole number of
/// samples at 8, 16 and 48 kHz alike (10, 20, 60).
const DELAY_AT_8K: usize = 10;

/// Stopband attenuation the Kaiser window is designed for, in dB.
const STOPBAND_DB: f64 = 60.0;

/// Errors from [`Resampler::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    /// One of the rates is not 8000, 16000 or 48000 Hz.
    #[error("unsupported resampling {from_hz} Hz -> {to_hz} Hz (only 8000, 16000, 48000)")]
    UnsupportedRate {
        /// The input rate asked for.
        from_hz: u32,
        /// The output rate asked for.
        to_hz: u32,
    },
}

/// Which way the conversion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Same rate: a copy, no delay.
    Same,
    /// Interpolation by this factor.
    Up(usize),
    /// Decimation by this factor.
    Down(usize),
}

/// A resampler for one stream between two of [`SUPPORTED_RATES`]; see the
/// module docs.
pub struct Resampler {
    /// Input rate in Hz.
    from_hz: u32,
    /// Output rate in Hz.
    to_hz: u32,
    /// Conversion factor and direction.
    direction: Direction,
    /// Taps of one polyphase branch (up) or of the whole filter (down).
    taps: usize,
    /// Filter coefficients, time-reversed so that each output is a plain
    /// dot product with the oldest-first input window. Up: `factor`
    /// branches of `taps` each, branch `p` producing output phase `p`.
    coefficients: Vec<f32>,
    /// `taps - 1` samples of input history followed by room for one chunk
    /// of new input.
    window: Vec<f32>,
    /// Largest number of input samples converted at once (20 ms).
    chunk: usize,
    /// Down: input samples to skip before the next output sample.
    skip: usize,
}

impl Resampler {
    /// A resampler from `from_hz` to `to_hz`, both one of 8000, 16000 and
    /// 48000 (equal rates give a plain copy). Designs the filter and
    /// allocates all buffers.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        if !SUPPORTED_RATES.contains(&from_hz) || !SUPPORTED_RATES.contains(&to_hz) {
            return Err(ResampleError::UnsupportedRate { from_hz, to_hz });
        }
        let (low, high) = (from_hz.min(to_hz), from_hz.max(to_hz));
        let factor = (high / low) as usize; // 1, 2, 3 or 6: the rates divide
        let direction = match from_hz.cmp(&to_hz) {
            std::cmp::Ordering::Equal => Direction::Same,
            std::cmp::Ordering::Less => Direction::Up(factor),
            std::cmp::Ordering::Greater => Direction::Down(factor),
        };
        // Odd length with the centre tap at delay * factor high-rate samples.
        let delay_low = DELAY_AT_8K * (low / 8000) as usize;
        let length = 2 * delay_low * factor + 1;
        let prototype = design_lowpass(length, 0.5 / factor as f64);

        let (taps, coefficients) = match direction {
            Direction::Same => (1, vec![1.0]),
            Direction::Down(_) => (length, prototype.iter().rev().map(|&c| c as f32).collect()),
            Direction::Up(factor) => {
                // Branch p holds h[k * factor + p], k = 0.. (zero-padded),
                // each normalised to a DC gain of exactly 1 so that a
                // constant input gives a constant output (no image at DC
                // multiples from unequal branch gains).
                let taps = length.div_ceil(factor);
                let mut coefficients = Vec::with_capacity(taps * factor);
                for phase in 0..factor {
                    let branch: Vec<f64> = (0..taps)
                        .map(|k| prototype.get(k * factor + phase).copied().unwrap_or(0.0))
                        .collect();
                    let gain: f64 = branch.iter().sum();
                    coefficients.extend(branch.iter().rev().map(|&c| (c / gain) as f32));
                }
                (taps, coefficients)
            }
        };
        let chunk = from_hz as usize / 50;
        Ok(Self {
            from_hz,
            to_hz,
            direction,
            taps,
            coefficients,
            window: vec![0.0; taps - 1 + chunk],
            chunk,
            skip: 0,
        })
    }

    /// The input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// The output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Group delay added by the conversion, in samples at the output rate
    /// (1.25 ms: 10, 20 or 60 samples at 8, 16 or 48 kHz; 0 for equal rates).
    pub fn delay_samples(&self) -> usize {
        match self.direction {
            Direction::Same => 0,
            _ => DELAY_AT_8K * (self.to_hz / 8000) as usize,
        }
    }

    /// Convert `input` (at `from_hz`) into `out` (at `to_hz`) and return the
    /// number of samples written.
    ///
    /// A 20 ms block (`from_hz / 50` samples) gives `to_hz / 50` samples.
    /// Any block length works and the state carries across calls; when
    /// decimating, a block whose length is not a multiple of the factor
    /// gives one sample more or less, as the input's phase dictates. If
    /// `out` is too short for all of `input`, only the input whose output
    /// fits is consumed; the rest is ignored (the return value tells).
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let mut written = 0;
        match self.direction {
            Direction::Same => {
                let n = input.len().min(out.len());
                out[..n].copy_from_slice(&input[..n]);
                n
            }
            Direction::Up(factor) => {
                let fits = input.len().min(out.len() / factor);
                for block in input[..fits].chunks(self.chunk) {
                    written += self.interpolate(block, &mut out[written..], factor);
                }
                written
            }
            Direction::Down(factor) => {
                // The input that fits: `skip + out.len() * factor` samples
                // make exactly `out.len()` output samples.
                let fits = input.len().min(self.skip + out.len() * factor);
                for block in input[..fits].chunks(self.chunk) {
                    written += self.decimate(block, &mut out[written..], factor);
                }
                written
            }
        }
    }

    /// Load `block` behind the history as floats.
    fn load(&mut self, block: &[i16]) {
        let history = self.taps - 1;
        for (slot, &sample) in self.window[history..].iter_mut().zip(block) {
            *slot = sample as f32;
        }
    }

    /// Keep the last `taps - 1` samples of the window (after a block of
    /// `len` samples) as the history for the next block.
    fn keep_history(&mut self, len: usize) {
        let history = self.taps - 1;
        self.window.copy_within(len..len + history, 0);
    }

    fn interpolate(&mut self, block: &[i16], out: &mut [i16], factor: usize) -> usize {
        self.load(block);
        let taps = self.taps;
        for (n, frame) in out.chunks_exact_mut(factor).take(block.len()).enumerate() {
            let window = &self.window[n..n + taps];
            for (sample, branch) in frame.iter_mut().zip(self.coefficients.chunks_exact(taps)) {
                *sample = to_i16(dot(window, branch));
            }
        }
        self.keep_history(block.len());
        block.len() * factor
    }

    fn decimate(&mut self, block: &[i16], out: &mut [i16], factor: usize) -> usize {
        self.load(block);
        let taps = self.taps;
        let mut written = 0;
        let mut n = self.skip;
        while n < block.len() {
            let Some(slot) = out.get_mut(written) else {
                break;
            };
            *slot = to_i16(dot(&self.window[n..n + taps], &self.coefficients));
            written += 1;
            n += factor;
        }
        self.skip = n.saturating_sub(block.len());
        self.keep_history(block.len());
        written
    }

    /// Forget the stream (a new one starts): history back to silence, the
    /// old audio wiped.
    pub fn reset(&mut self) {
        self.window.zeroize();
        self.window.resize(self.taps - 1 + self.chunk, 0.0);
        self.skip = 0;
    }
}

impl Drop for Resampler {
    fn drop(&mut self) {
        self.window.zeroize();
    }
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No samples: they are a caller's audio.
        f.debug_struct("Resampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("taps", &self.taps)
            .finish_non_exhaustive()
    }
}

/// Dot product with eight independent partial sums. Float addition is not
/// associative, so LLVM keeps a single running sum scalar; eight lanes give
/// it vectors to work with, and the result still depends only on the
/// window, never on how the input was split into blocks.
#[inline(always)]
fn dot(window: &[f32], coefficients: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0.0f32; LANES];
    let split = coefficients.len() / LANES * LANES;
    for (w, c) in window[..split]
        .chunks_exact(LANES)
        .zip(coefficients[..split].chunks_exact(LANES))
    {
        for i in 0..LANES {
            lanes[i] += w[i] * c[i];
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for (w, c) in window[split..coefficients.len()]
        .iter()
        .zip(&coefficients[split..])
    {
        sum += w * c;
    }
    sum
}

/// Round to nearest and saturate (`as` saturates; NaN cannot occur).
#[inline(always)]
fn to_i16(value: f32) -> i16 {
    (value + 0.5f32.copysign(value)) as i16
}

/// A linear-phase low-pass FIR of odd `length` with its cut-off (-6 dB) at
/// `cutoff` cycles per sample, unit DC gain: the ideal response (a sinc)
/// times a Kaiser window for [`STOPBAND_DB`] (Kaiser's formula for beta).
fn design_lowpass(length: usize, cutoff: f64) -> Vec<f64> {
    let beta = 0.1102 * (STOPBAND_DB - 8.7);
    let centre = (length - 1) as f64 / 2.0;
    let mut taps: Vec<f64> = (0..length)
        .map(|n| {
            let t = n as f64 - centre;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
            };
            let ratio = t / centre;
            sinc * bessel_i0(beta * (1.0 - ratio * ratio).max(0.0).sqrt()) / bessel_i0(beta)
        })
        .collect();
    let gain: f64 = taps.iter().sum();
    for tap in &mut taps {
        *tap /= gain;
    }
    taps
}

/// Modified Bessel function of the first kind, order 0, by its power
/// series (converges fast for the arguments a Kaiser window uses).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= half / k as f64;
        sum += term * term;
        if term * term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIRS: [(u32, u32); 6] = [
        (8000, 16000),
        (8000, 48000),
        (16000, 48000),
        (16000, 8000),
        (48000, 8000),
        (48000, 16000),
    ];

    fn tone(hz: f64, rate: u32, amplitude: f64, samples: usize, delay: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                let t = n as f64 - delay as f64;
                (amplitude * (2.0 * std::f64::consts::PI * hz * t / rate as f64).sin()).round()
                    as i16
            })
            .collect()
    }

    /// Run `input` through `resampler` in 20 ms blocks.
    fn run(resampler: &mut Resampler, input: &[i16]) -> Vec<i16> {
        let block_in = resampler.from_hz() as usize / 50;
        let block_out = resampler.to_hz() as usize / 50;
        let mut output = Vec::new();
        let mut out = vec![0i16; block_out];
        for block in input.chunks(block_in) {
            let written = resampler.process(block, &mut out);
            output.extend_from_slice(&out[..written]);
        }
        output
    }

    fn snr_db(reference: &[i16], actual: &[i16], range: std::ops::Range<usize>) -> f64 {
        let mut signal = 0.0;
        let mut noise = 0.0;
        for i in range {
            let x = reference[i] as f64;
            let e = actual[i] as f64 - x;
            signal += x * x;
            noise += e * e;
        }
        10.0 * (signal / noise.max(1e-9)).log10()
    }

    fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
    }

    #[test]
    fn only_supported_pairs_construct() {
        for (from, to) in PAIRS {
            assert!(Resampler::new(from, to).is_ok(), "{from} -> {to}");
        }
        for rate in SUPPORTED_RATES {
            assert_eq!(Resampler::new(rate, rate).unwrap().delay_samples(), 0);
        }
        for (from, to) in [(44100, 48000), (8000, 24000), (0, 8000), (48000, u32::MAX)] {
            assert_eq!(
                Resampler::new(from, to).unwrap_err(),
                ResampleError::UnsupportedRate {
                    from_hz: from,
                    to_hz: to
                }
            );
        }
    }

    #[test]
    fn twenty_ms_blocks_have_the_right_lengths() {
        for (from, to) in PAIRS {
            let mut resampler = Resampler::new(from, to).unwrap();
            let input = vec![0i16; from as usize / 50];
            let mut out = vec![0i16; to as usize / 50];
            for _ in 0..3 {
                assert_eq!(
                    resampler.process(&input, &mut out),
                    out.len(),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn in_band_tones_pass_with_50_db_snr() {
        // 1 kHz at every pair, and a tone near the top of the lower rate's
        // flat band (3 kHz for 8 kHz, 6 kHz for 16 kHz). Compared with the
        // ideal tone at the output rate, delayed by the reported delay.
        for (from, to) in PAIRS {
            let low = from.min(to);
            for hz in [1000.0, if low == 8000 { 3000.0 } else { 6000.0 }] {
                let mut resampler = Resampler::new(from, to).unwrap();
                let input = tone(hz, from, 16000.0, from as usize / 2, 0);
                let output = run(&mut resampler, &input);
                let delay = resampler.delay_samples();
                let expected = tone(hz, to, 16000.0, output.len(), delay);
                // Skip the first 10 ms: the filter starts from silence.
                let snr = snr_db(&expected, &output, to as usize / 100..output.len());
                assert!(snr > 50.0, "{from} -> {to}, {hz} Hz: SNR {snr:.1} dB");
            }
        }
    }

    #[test]
    fn out_of_band_tones_are_attenuated_by_40_db() {
        // Decimation: tones above the output's Nyquist frequency that would
        // alias into the band (6 kHz -> 2 kHz at 8 kHz; 11 kHz -> 5 kHz at
        // 16 kHz). Interpolation: the images of a 1 kHz tone, which must not
        // appear above the input's band (checked by subtracting the ideal
        // tone in the SNR test; here the output of a tone at the input's
        // Nyquist edge region).
        for (from, to, hz) in [
            (48000, 8000, 6000.0),
            (16000, 8000, 6000.0),
            (48000, 16000, 11000.0),
            (48000, 8000, 20000.0),
            (48000, 16000, 23000.0),
        ] {
            let mut resampler = Resampler::new(from, to).unwrap();
            let input = tone(hz, from, 16000.0, from as usize / 2, 0);
            let output = run(&mut resampler, &input);
            let attenuation =
                20.0 * (rms(&input) / rms(&output[to as usize / 100..]).max(0.01)).log10();
            assert!(
                attenuation > 40.0,
                "{from} -> {to}, {hz} Hz: {attenuation:.1} dB"
            );
        }
    }

    #[test]
    fn interpolation_images_are_attenuated() {
        // 8 -> 48 kHz of a 3 kHz tone: the first images sit at 5, 11, 13 kHz.
        // Measure what is left after removing the ideal 3 kHz tone.
        let mut resampler = Resampler::new(8000, 48000).unwrap();
        let input = tone(3000.0, 8000, 16000.0, 4000, 0);
        let output = run(&mut resampler, &input);
        let expected = tone(
            3000.0,
            48000,
            16000.0,
            output.len(),
            resampler.delay_samples(),
        );
        let residue: Vec<i16> = output
            .iter()
            .zip(&expected)
            .map(|(a, b)| a - b)
            .skip(480)
            .collect();
        let ratio = 20.0 * (rms(&expected) / rms(&residue)).log10();
        assert!(ratio > 50.0, "image residue only {ratio:.1} dB down");
    }

    #[test]
    fn any_block_split_gives_the_same_samples() {
        // A sweep-like signal through 20 ms blocks, one call, and blocks of
        // 7 samples: bit-exact, so block edges add nothing.
        for (from, to) in PAIRS {
            let samples = from as usize / 5; // 200 ms
            let input: Vec<i16> = (0..samples)
                .map(|n| (((n * n) % 65536) as i32 - 32768) as i16 / 3)
                .collect();
            let blocks = run(&mut Resampler::new(from, to).unwrap(), &input);

            let mut whole = vec![0i16; blocks.len() + 8];
            let written = Resampler::new(from, to)
                .unwrap()
                .process(&input, &mut whole);
            assert_eq!(&whole[..written], &blocks[..], "{from} -> {to} in one call");

            let mut resampler = Resampler::new(from, to).unwrap();
            let mut odd = Vec::new();
            let mut out = [0i16; 64];
            for block in input.chunks(7) {
                let written = resampler.process(block, &mut out);
                odd.extend_from_slice(&out[..written]);
            }
            assert_eq!(odd, blocks, "{from} -> {to} in 7-sample blocks");
        }
    }

    #[test]
    fn reported_delay_is_true_and_at_most_1_5_ms() {
        for (from, to) in PAIRS {
            let mut resampler = Resampler::new(from, to).unwrap();
            let delay = resampler.delay_samples();
            assert!(
                delay as f64 / to as f64 <= 0.0015,
                "{from} -> {to}: {delay}"
            );
            // A linear-phase filter's impulse response peaks at its delay.
            // Put the impulse on a sample that the decimator keeps.
            let mut input = vec![0i16; from as usize / 50];
            input[0] = 20000;
            let mut out = vec![0i16; to as usize / 50];
            resampler.process(&input, &mut out);
            let peak = (0..out.len())
                .max_by_key(|&i| out[i].unsigned_abs())
                .unwrap();
            assert_eq!(peak, delay, "{from} -> {to}");
        }
    }

    #[test]
    fn down_and_up_again_keeps_a_tone() {
        // 16 -> 8 -> 16 kHz of 1 kHz: delays add up (10 samples at 8 kHz =
        // 20 at 16 kHz, plus 20).
        let mut down = Resampler::new(16000, 8000).unwrap();
        let mut up = Resampler::new(8000, 16000).unwrap();
        let input = tone(1000.0, 16000, 16000.0, 16000, 0);
        let output = run(&mut up, &run(&mut down, &input));
        let delay = down.delay_samples() * 2 + up.delay_samples();
        assert_eq!(delay, 40);
        let expected = tone(1000.0, 16000, 16000.0, output.len(), delay);
        let snr = snr_db(&expected, &output, 320..output.len());
        assert!(snr > 50.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn constant_input_gives_constant_output() {
        // Unit DC gain per polyphase branch: no ripple at the input rate.
        for (from, to) in PAIRS {
            let mut resampler = Resampler::new(from, to).unwrap();
            let output = run(&mut resampler, &vec![10000i16; from as usize / 10]);
            for &sample in &output[to as usize / 50..] {
                assert!((sample - 10000).abs() <= 1, "{from} -> {to}: {sample}");
            }
        }
    }

    #[test]
    fn full_scale_and_odd_buffers_do_not_panic() {
        for (from, to) in PAIRS {
            let mut resampler = Resampler::new(from, to).unwrap();
            // A full-scale square wave overshoots (Gibbs): it must saturate.
            let square: Vec<i16> = (0..from as usize / 10)
                .map(|n| if n / 3 % 2 == 0 { i16::MAX } else { i16::MIN })
                .collect();
            let output = run(&mut resampler, &square);
            assert!(!output.is_empty());
            let mut out = [0i16; 5];
            assert_eq!(resampler.process(&[], &mut out), 0);
            assert!(resampler.process(&square, &mut out) <= 5);
            assert_eq!(resampler.process(&square, &mut []), 0);
            // Too short an output: only what fits, and the stream goes on.
            let mut big = vec![0i16; 4000];
            resampler.process(&square, &mut big);
        }
    }

    #[test]
    fn reset_forgets_the_stream() {
        let input = tone(1000.0, 8000, 16000.0, 160, 0);
        let mut resampler = Resampler::new(8000, 48000).unwrap();
        let mut first = [0i16; 960];
        resampler.process(&input, &mut first);
        resampler.process(&input[..7], &mut [0i16; 42]);
        resampler.reset();
        let mut again = [0i16; 960];
        resampler.process(&input, &mut again);
        assert_eq!(first, again);

        let mut down = Resampler::new(48000, 8000).unwrap();
        let input = tone(1000.0, 48000, 16000.0, 960, 0);
        let mut first = [0i16; 160];
        down.process(&input, &mut first);
        down.process(&input[..5], &mut [0i16; 1]); // leaves a phase
        down.reset();
        let mut again = [0i16; 160];
        assert_eq!(down.process(&input, &mut again), 160);
        assert_eq!(first, again);
    }

    #[test]
    fn filter_response_meets_the_design() {
        // The prototype filter's frequency response, evaluated directly:
        // flat in the lower rate's band, 58 dB down past the transition.
        for (low, factor) in [(8000u32, 2usize), (8000, 6), (16000, 3)] {
            let length = 2 * DELAY_AT_8K * (low / 8000) as usize * factor + 1;
            let taps = design_lowpass(length, 0.5 / factor as f64);
            let rate = (low as usize * factor) as f64;
            let response_db = |hz: f64| {
                let (mut re, mut im) = (0.0, 0.0);
                for (n, tap) in taps.iter().enumerate() {
                    let w = 2.0 * std::f64::consts::PI * hz / rate * n as f64;
                    re += tap * w.cos();
                    im -= tap * w.sin();
                }
                10.0 * (re * re + im * im).log10()
            };
            let nyquist = low as f64 / 2.0;
            let passband = (0..=80).map(|i| response_db(nyquist * 0.01 * i as f64).abs());
            let ripple = passband.fold(0.0, f64::max);
            assert!(
                ripple < 0.012,
                "{low}/{factor}: passband ripple {ripple:.4} dB"
            );
            let stopband = (118..=100 * factor).map(|i| response_db(nyquist * 0.01 * i as f64));
            let leak = stopband.fold(f64::MIN, f64::max);
            assert!(leak < -58.0, "{low}/{factor}: stopband {leak:.1} dB");
            assert!(
                (response_db(nyquist) + 6.0).abs() < 0.1,
                "cut-off at Nyquist"
            );
        }
    }
}
