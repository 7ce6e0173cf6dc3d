//! What the load generator's members send, and how a listener hears the marker.
//!
//! Three roles:
//! - **Quiet** members send background noise at about -66 dBov, below the bridge's
//!   noise gate (-50 dBov): a phone on mute in a quiet office.
//! - **Talkers** send a speech-like voiced signal (a 150–240 Hz pitch with harmonics
//!   and a 3–6 Hz syllabic envelope) at about -35 dBov, frames peaking near -30 dBov.
//! - The **marker** member sends a steady 400 Hz tone at -19 dBov and, once a second,
//!   replaces it for 60 ms with a 1 kHz burst near full scale. Its steady tone keeps
//!   it among the room's speakers: a talker would have to be 6 dB louder than it to
//!   take its place (the bridge's speaker hysteresis), and talkers never are, so every
//!   burst is mixed at once rather than after a speaker change.
//!
//! Listeners find the burst's onset with [`BurstDetector`]: the first sample above
//! [`ONSET_THRESHOLD`] after a quiet spell. The tone and two talkers at their peaks
//! sum to under 9,500, the burst peaks at 26,000, so the threshold sits between.
//!
//! Encoding G.722 or Opus costs 25–330 µs per frame, far too much for hundreds of
//! members fifty times a second: [`Payloads::encode`] encodes each role's loop once
//! (1 s of noise, 4 s per talker voice, 1 s of marker) and members replay it.

use crate::media::codec::{CodecError, Encoder, Format, MAX_PAYLOAD};
use crate::media::gate::level_dbov;
use std::f64::consts::PI;

/// Ticks between two marker bursts (one a second).
pub const MARKER_PERIOD_TICKS: usize = 50;

/// Ticks a burst lasts (60 ms).
pub const BURST_TICKS: usize = 3;

/// The burst's frequency, Hz: far from the tone and the talkers' pitch.
pub const BURST_HZ: f64 = 1000.0;

/// The burst's peak amplitude (-2 dBFS).
pub const BURST_AMPLITUDE: f64 = 26_000.0;

/// The marker's steady tone, Hz (400 whole periods a second, so the loop is seamless).
pub const TONE_HZ: f64 = 400.0;

/// The steady tone's amplitude (-19 dBov RMS).
pub const TONE_AMPLITUDE: f64 = 5000.0;

/// Talkers' amplitude scale: RMS about 580 (-35 dBov), frames at most about -30 dBov,
/// so that no talker comes within 6 dB of the marker's tone (see the module docs).
pub const SPEECH_SCALE: f64 = 1200.0;

/// Distinct talker voices (pitch and syllable rate); talker `k` speaks voice `k % 4`.
pub const VOICES: usize = 4;

/// Ticks in a talker's loop: 4 s, a whole number of pitch and envelope periods.
pub const TALKER_LOOP_TICKS: usize = 200;

/// Ticks in the background noise's loop.
const QUIET_LOOP_TICKS: usize = 50;

/// A listener takes a sample above this as the burst's onset: above anything the tone
/// and the talkers can sum to, under the burst's peak after any of our codecs.
pub const ONSET_THRESHOLD: i32 = 13_000;

/// A detector re-arms after this long without a sample above the threshold (200 ms):
/// longer than the burst, shorter than the time between bursts.
pub const REARM_MS: usize = 200;

/// A decoded frame louder than this is sound (a prompt, a tone, the room), not the
/// silence a caller hears while the bridge checks the PIN.
pub const AUDIBLE_DBOV: f32 = -40.0;

/// What a member sends once in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The member whose bursts the others time.
    Marker,
    /// A talker with one of the [`VOICES`].
    Talker(usize),
    /// Background noise below the noise gate.
    Quiet,
}

/// `n` samples of talker voice `voice` at `rate`, from sample `start` on.
pub fn speech_like(rate: u32, start: usize, n: usize, voice: usize) -> Vec<i16> {
    let voice = (voice % VOICES) as f64;
    let pitch = 150.0 + 30.0 * voice;
    let syllables = 3.0 + voice;
    (start..start + n)
        .map(|k| {
            let t = k as f64 / f64::from(rate);
            let mut value = 0.0;
            let mut h = 1.0;
            while pitch * h < f64::from(rate) / 2.5 && h < 20.0 {
                value += (2.0 * PI * pitch * h * t).sin() / h;
                h += 1.0;
            }
            let envelope = (0.55 + 0.45 * (2.0 * PI * syllables * t).sin()).powi(2);
            (SPEECH_SCALE * envelope * value) as i16
        })
        .collect()
}

/// `n` samples of background noise at about -66 dBov (xorshift; `state` carries on).
pub fn background_noise(n: usize, state: &mut u64) -> Vec<i16> {
    (0..n)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            ((*state >> 40) % 57) as i16 - 28
        })
        .collect()
}

/// `n` samples of the marker at `rate` from sample `start` of its one-second period:
/// the burst during the first [`BURST_TICKS`] ticks, the steady tone otherwise.
pub fn marker(rate: u32, start: usize, n: usize) -> Vec<i16> {
    let burst_samples = rate as usize / 50 * BURST_TICKS;
    (start..start + n)
        .map(|k| {
            let t = k as f64 / f64::from(rate);
            let within = k % rate as usize;
            let value = if within < burst_samples {
                BURST_AMPLITUDE * (2.0 * PI * BURST_HZ * t).sin()
            } else {
                TONE_AMPLITUDE * (2.0 * PI * TONE_HZ * t).sin()
            };
            value as i16
        })
        .collect()
}

/// Every role's payloads, encoded once; see the module docs.
#[derive(Debug, Clone)]
pub struct Payloads {
    quiet: Vec<Vec<u8>>,
    talkers: Vec<Vec<Vec<u8>>>,
    marker: Vec<Vec<u8>>,
}

impl Payloads {
    /// Encodes the loops for `format` (each role with its own encoder, so the codec's
    /// state runs on as it would in a phone).
    pub fn encode(format: Format) -> Result<Payloads, CodecError> {
        let n = format.frame_samples();
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let mut encode = |frames: &mut dyn FnMut(usize) -> Vec<i16>, ticks: usize| {
            let mut encoder = Encoder::new(format)?;
            (0..ticks)
                .map(|tick| {
                    let len = encoder.encode(&frames(tick), &mut buf)?;
                    Ok(buf[..len].to_vec())
                })
                .collect::<Result<Vec<Vec<u8>>, CodecError>>()
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let quiet = encode(&mut |_| background_noise(n, &mut state), QUIET_LOOP_TICKS)?;
        let talkers = (0..VOICES)
            .map(|v| {
                encode(
                    &mut |tick| speech_like(format.rate, tick * n, n, v),
                    TALKER_LOOP_TICKS,
                )
            })
            .collect::<Result<Vec<_>, CodecError>>()?;
        let marker = encode(
            &mut |tick| marker(format.rate, tick * n, n),
            MARKER_PERIOD_TICKS,
        )?;
        Ok(Payloads {
            quiet,
            talkers,
            marker,
        })
    }

    /// The payload `role` sends at `tick` (ticks counted from its first frame in role;
    /// the marker's bursts are at ticks 0, 50, 100, …).
    pub fn frame(&self, role: Role, tick: usize) -> &[u8] {
        let frames = match role {
            Role::Marker => &self.marker,
            Role::Talker(v) => &self.talkers[v % self.talkers.len()],
            Role::Quiet => &self.quiet,
        };
        &frames[tick % frames.len()]
    }

    /// Background noise, what every member sends before it is in the room.
    pub fn quiet(&self, tick: usize) -> &[u8] {
        self.frame(Role::Quiet, tick)
    }
}

/// Finds burst onsets in a listener's decoded audio; see the module docs.
///
/// Starts disarmed: it must first hear [`REARM_MS`] below the threshold, so a listener
/// that starts decoding in the middle of a burst does not time its middle.
#[derive(Debug, Clone)]
pub struct BurstDetector {
    rearm_samples: usize,
    quiet_run: usize,
    armed: bool,
}

impl BurstDetector {
    /// A detector for audio at `rate` Hz.
    pub fn new(rate: u32) -> BurstDetector {
        BurstDetector {
            rearm_samples: rate as usize * REARM_MS / 1000,
            quiet_run: 0,
            armed: false,
        }
    }

    /// Takes the next decoded samples; returns the index of an onset among them.
    pub fn feed(&mut self, samples: &[i16]) -> Option<usize> {
        let mut onset = None;
        for (i, &s) in samples.iter().enumerate() {
            if i32::from(s).abs() >= ONSET_THRESHOLD {
                if self.armed && onset.is_none() {
                    onset = Some(i);
                }
                self.armed = false;
                self.quiet_run = 0;
            } else {
                self.quiet_run += 1;
                if self.quiet_run >= self.rearm_samples {
                    self.armed = true;
                }
            }
        }
        onset
    }
}

/// Whether a decoded frame is sound rather than the silence of waiting (see
/// [`AUDIBLE_DBOV`]).
pub fn is_audible(frame: &[i16]) -> bool {
    level_dbov(frame) > AUDIBLE_DBOV
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Codec;
    use crate::media::codec::Decoder;
    use crate::media::playout::FrameDecoder;

    fn decode_all(format: Format, payloads: &[Vec<u8>]) -> Vec<i16> {
        let mut decoder = Decoder::new(format).unwrap();
        let mut out = Vec::new();
        for p in payloads {
            decoder.decode(p, &mut out).unwrap();
        }
        out
    }

    /// Onsets found in `audio`, fed frame by frame as a member does.
    fn onsets(audio: &[i16], rate: u32) -> Vec<usize> {
        let n = rate as usize / 50;
        let mut d = BurstDetector::new(rate);
        audio
            .chunks(n)
            .enumerate()
            .filter_map(|(f, frame)| d.feed(frame).map(|i| f * n + i))
            .collect()
    }

    #[test]
    fn the_marker_burst_is_found_once_a_second_at_its_onset_in_g711() {
        let format = Format::new(Codec::Pcma, None);
        let p = Payloads::encode(format).unwrap();
        // Three seconds of the marker, as a listener would decode it.
        let frames: Vec<Vec<u8>> = (0..150)
            .map(|t| p.frame(Role::Marker, t).to_vec())
            .collect();
        let audio = decode_all(format, &frames);
        let found = onsets(&audio, 8000);
        // The first burst is in the first 200 ms, before the detector is armed.
        assert_eq!(found.len(), 2, "{found:?}");
        for (i, &at) in found.iter().enumerate() {
            let burst = (i + 1) * 8000;
            assert!(
                at >= burst && at <= burst + 2,
                "onset at {at}, burst at {burst}"
            );
        }
    }

    #[test]
    fn opus_and_g722_keep_the_burst_findable_within_their_codec_delay() {
        for (codec, fmtp) in [(Codec::Opus, Some("useinbandfec=1")), (Codec::G722, None)] {
            let format = Format::new(codec, fmtp);
            let p = Payloads::encode(format).unwrap();
            let frames: Vec<Vec<u8>> = (0..150)
                .map(|t| p.frame(Role::Marker, t).to_vec())
                .collect();
            let audio = decode_all(format, &frames);
            let rate = format.rate as usize;
            let found = onsets(&audio, format.rate);
            assert_eq!(found.len(), 2, "{codec:?}: {found:?}");
            for (i, &at) in found.iter().enumerate() {
                let burst = (i + 1) * rate;
                // Opus's look-ahead is 6.5 ms; G.722's QMF delay is 22 samples.
                assert!(
                    at >= burst && at <= burst + rate / 100,
                    "{codec:?}: onset at {at}, burst at {burst}"
                );
            }
        }
    }

    #[test]
    fn the_tone_and_two_loud_talkers_never_look_like_a_burst() {
        // Everything but the burst, summed as the bridge mixes three speakers.
        let rate = 8000;
        let n = 160;
        let mut mix = Vec::new();
        for tick in 0..TALKER_LOOP_TICKS {
            let a = speech_like(rate, tick * n, n, 0);
            let b = speech_like(rate, tick * n, n, 3);
            let tone = marker(rate, (tick % MARKER_PERIOD_TICKS).max(BURST_TICKS) * n, n);
            for i in 0..n {
                mix.push((i32::from(a[i]) + i32::from(b[i]) + i32::from(tone[i])) as i16);
            }
        }
        assert!(onsets(&mix, rate).is_empty());
        let peak = mix.iter().map(|&s| i32::from(s).abs()).max().unwrap();
        assert!(peak < ONSET_THRESHOLD * 3 / 4, "peak {peak}");
    }

    #[test]
    fn the_marker_stays_a_speaker_against_any_talker() {
        // The bridge replaces a speaker only for a candidate 6 dB louder (its smoothed
        // level follows the frame level up at once): talkers must stay under that.
        let tone = level_dbov(&marker(8000, 8000 / 50 * BURST_TICKS, 160));
        for voice in 0..VOICES {
            let loudest = (0..TALKER_LOOP_TICKS)
                .map(|t| level_dbov(&speech_like(8000, t * 160, 160, voice)))
                .fold(f32::MIN, f32::max);
            assert!(
                loudest + 6.0 < tone - 1.0,
                "voice {voice} peaks at {loudest:.1} dBov, the tone is {tone:.1}"
            );
            // And talkers are loud enough to open the gate (-50 dBov).
            assert!(loudest > -35.0, "voice {voice}: {loudest:.1} dBov");
        }
        let mut state = 1;
        let noise = level_dbov(&background_noise(160, &mut state));
        assert!(noise < -60.0, "background {noise:.1} dBov");
    }

    #[test]
    fn talker_loops_are_seamless() {
        // Sample after the loop's end equals its start: no click each 4 s.
        for voice in 0..VOICES {
            let total = TALKER_LOOP_TICKS * 160;
            let wrap = speech_like(8000, total, 4, voice);
            let start = speech_like(8000, 0, 4, voice);
            for (a, b) in wrap.iter().zip(&start) {
                assert!((a - b).abs() <= 1, "voice {voice}: {wrap:?} vs {start:?}");
            }
        }
    }

    #[test]
    fn silence_is_not_audible_and_a_prompt_is() {
        assert!(!is_audible(&[0; 160]));
        let mut state = 7;
        assert!(!is_audible(&background_noise(160, &mut state)));
        assert!(is_audible(&marker(8000, 4000, 160)));
    }
}
