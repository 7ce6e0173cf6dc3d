//! A member's voice as the mixer sees it: frame level, noise gate, automatic gain and
//! speaker state.
//!
//! The conference calls [`Voice::update`] once per tick with the level of the member's
//! frame (measured by [`level_dbov`], or as reported by RFC 6464), picks its speakers
//! among the members whose voice is [`Voice::audible`] (loudest smoothed
//! [`Voice::level_db`] first), and scales each speaker's frame with [`Voice::apply`]
//! before it is summed.
//!
//! The [`NoiseGate`] keeps an idle line's hiss out of the mix without cutting a
//! talker's quiet syllables, breaths and word endings:
//! - it opens when a frame is louder than the open threshold (the room's
//!   `noise_gate_dbov`, -50 dBov by default), and ramps the member in within 5 ms of
//!   that frame, so an onset is not clipped;
//! - while open, a frame above the close threshold, 8 dB lower (hysteresis), keeps it
//!   open: quiet speech between -58 and -50 dBov is not gated at all;
//! - after the last such frame it holds for 400 ms (the pause between words and
//!   phrases), then ramps the member's contribution down over 80 ms rather than
//!   muting it at once: the frame is still mixed while the ramp lasts.
//!
//! A line hissing at -60 dBov never reaches the open threshold, so it stays out of the
//! mix (and, with RFC 6464 levels, is not even decoded).

/// Level of digital silence in the level estimates, dB below full scale.
pub const SILENCE_DBOV: f32 = -96.0;

/// How far below the open threshold the close threshold is, dB: speech that opened the
/// gate keeps it open down to here (hysteresis, as in a studio gate's range).
const CLOSE_BELOW_OPEN_DB: f32 = 8.0;

/// Ticks (20 ms) the gate holds open after the last frame above the close threshold:
/// 400 ms, longer than the pauses inside a phrase, so that quiet word endings and
/// breaths that follow speech are kept.
const HOLD_TICKS: u16 = 20;

/// Ticks over which a closing gate ramps the member's contribution down (80 ms): a
/// fade, not a click.
const RELEASE_TICKS: f32 = 4.0;

/// Share of the frame over which an opening gate ramps up (a quarter: 5 ms of 20 ms).
const ATTACK_SHARE: usize = 4;

/// Speech level automatic gain aims at (ITU-T P.56 active speech level of a typical
/// telephone talker), and the most it may amplify or attenuate.
const AUTO_GAIN_TARGET_DBOV: f32 = -26.0;
const AUTO_GAIN_MAX_DB: f32 = 12.0;
const AUTO_GAIN_MIN_DB: f32 = -6.0;

/// Gain change per tick, dB: 5 dB/s, slow enough not to pump.
const AUTO_GAIN_STEP_DB: f32 = 0.1;

/// The noise gate of one member; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseGate {
    /// Ticks left to hold open.
    hold: u16,
    /// Gain at the start and at the end of this tick's frame (0 closed, 1 open).
    from: f32,
    to: f32,
}

impl Default for NoiseGate {
    fn default() -> Self {
        NoiseGate::new()
    }
}

impl NoiseGate {
    /// A closed gate.
    pub fn new() -> NoiseGate {
        NoiseGate {
            hold: 0,
            from: 0.0,
            to: 0.0,
        }
    }

    /// Takes this tick's frame level against the open threshold `open_db`.
    pub fn update(&mut self, frame_db: f32, open_db: f32) {
        let open = self.hold > 0;
        if frame_db > open_db || (open && frame_db > open_db - CLOSE_BELOW_OPEN_DB) {
            self.hold = HOLD_TICKS;
        } else {
            self.hold = self.hold.saturating_sub(1);
        }
        self.from = self.to;
        self.to = if self.hold > 0 {
            1.0
        } else {
            (self.to - 1.0 / RELEASE_TICKS).max(0.0)
        };
    }

    /// Whether the member is heard at all this tick (open, or ramping down).
    pub fn audible(&self) -> bool {
        self.from > 0.0 || self.to > 0.0
    }

    /// Whether the gate is fully open this tick.
    pub fn is_open(&self) -> bool {
        self.hold > 0
    }

    /// The gain of sample `i` of an `n`-sample frame: a ramp from the last tick's gain
    /// to this tick's, over the first quarter of the frame when opening, over the whole
    /// frame when closing.
    fn gain(&self, i: usize, n: usize) -> f32 {
        let span = if self.to > self.from {
            (n / ATTACK_SHARE).max(1)
        } else {
            n.max(1)
        };
        let t = ((i + 1) as f32 / span as f32).min(1.0);
        self.from + (self.to - self.from) * t
    }
}

/// A member's level, noise gate, automatic gain and speaker state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Voice {
    /// Smoothed level (fast attack, slow release), dBov: what speakers are ranked by.
    pub level_db: f32,
    /// The noise gate.
    pub gate: NoiseGate,
    /// Whether the member is one of its room's speakers.
    pub speaking: bool,
    /// Tick at which it became a speaker.
    pub since: u64,
    /// Automatic gain in dB (0 when off).
    pub gain_db: f32,
}

impl Default for Voice {
    fn default() -> Self {
        Voice::new()
    }
}

impl Voice {
    /// Silent, gate closed, not speaking.
    pub fn new() -> Voice {
        Voice {
            level_db: SILENCE_DBOV,
            gate: NoiseGate::new(),
            speaking: false,
            since: 0,
            gain_db: 0.0,
        }
    }

    /// Whether the member may be mixed this tick: its gate is open or ramping down.
    pub fn audible(&self) -> bool {
        self.gate.audible()
    }

    /// Takes this tick's frame level: smoothed level, gate (open threshold `gate_db`),
    /// and, when `auto_gain`, the automatic gain (moved only by frames above the open
    /// threshold, so that noise is not amplified).
    pub fn update(&mut self, frame_db: f32, gate_db: f32, auto_gain: bool) {
        self.level_db = if frame_db > self.level_db {
            // Attack within a couple of ticks: a new talker is heard at once.
            0.5 * (self.level_db + frame_db)
        } else {
            0.9 * self.level_db + 0.1 * frame_db
        };
        self.gate.update(frame_db, gate_db);
        if frame_db > gate_db && auto_gain {
            let wanted =
                (AUTO_GAIN_TARGET_DBOV - frame_db).clamp(AUTO_GAIN_MIN_DB, AUTO_GAIN_MAX_DB);
            let step = (wanted - self.gain_db).clamp(-AUTO_GAIN_STEP_DB, AUTO_GAIN_STEP_DB);
            self.gain_db += step;
        }
    }

    /// Scales this tick's frame (at any rate) by the gate's ramp and, when `auto_gain`,
    /// the automatic gain. Leaves a fully open frame without gain untouched.
    pub fn apply(&self, frame: &mut [i16], auto_gain: bool) {
        let gain = if auto_gain && self.gain_db != 0.0 {
            10f32.powf(self.gain_db / 20.0)
        } else {
            1.0
        };
        if gain == 1.0 && self.gate.from == 1.0 && self.gate.to == 1.0 {
            return;
        }
        let n = frame.len();
        for (i, x) in frame.iter_mut().enumerate() {
            let g = gain * self.gate.gain(i, n);
            *x = (f32::from(*x) * g).clamp(-32768.0, 32767.0) as i16;
        }
    }
}

/// RMS level of a frame in dB below full scale ([`SILENCE_DBOV`] for digital silence).
pub fn level_dbov(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return SILENCE_DBOV;
    }
    let energy: i64 = frame.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
    let mean = energy as f64 / frame.len() as f64;
    if mean < 1.0 {
        return SILENCE_DBOV;
    }
    (10.0 * (mean / (32768.0 * 32768.0)).log10()).max(f64::from(SILENCE_DBOV)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATE: f32 = -50.0;

    /// The gate before this one: open above -50 dBov, 200 ms hangover, then muted.
    struct OldGate {
        hang: u16,
    }

    impl OldGate {
        fn update(&mut self, db: f32) -> bool {
            if db > GATE {
                self.hang = 10;
            } else {
                self.hang = self.hang.saturating_sub(1);
            }
            self.hang > 0
        }
    }

    /// Gain of a whole frame through the gate (RMS of a full-scale-ish DC frame).
    fn frame_gain(voice: &Voice) -> f32 {
        let mut frame = [10_000i16; 160];
        voice.apply(&mut frame, false);
        let rms = (frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 160.0).sqrt();
        (rms / 10_000.0) as f32
    }

    fn db(gain: f32) -> f32 {
        20.0 * gain.max(1e-5).log10()
    }

    #[test]
    fn quiet_word_endings_after_speech_are_kept() {
        let mut voice = Voice::new();
        // 300 ms of speech at -30 dBov, then a word ending at -55 and a breath at -59.
        for _ in 0..15 {
            voice.update(-30.0, GATE, false);
            assert!(voice.audible());
        }
        for (db_in, ticks) in [(-55.0, 10), (-59.0, 15), (-62.0, 4)] {
            for t in 0..ticks {
                voice.update(db_in, GATE, false);
                let g = db(frame_gain(&voice));
                assert!(g > -2.0, "{db_in} dBov, tick {t}: {g:.1} dB");
            }
        }
        // Then a long quiet: it fades out, and stays out.
        let gains: Vec<f32> = (0..20)
            .map(|_| {
                voice.update(-70.0, GATE, false);
                frame_gain(&voice)
            })
            .collect();
        assert!(gains.iter().any(|&g| g > 0.0 && g < 1.0), "{gains:?}");
        assert_eq!(*gains.last().unwrap(), 0.0);
        assert!(!voice.audible());
    }

    #[test]
    fn a_hissing_line_at_minus_60_dbov_never_opens_it() {
        let mut voice = Voice::new();
        for _ in 0..1000 {
            voice.update(-60.0, GATE, true);
            assert!(!voice.audible());
            assert_eq!(frame_gain(&voice), 0.0);
        }
        // Nor does noise just below the open threshold.
        for _ in 0..1000 {
            voice.update(-50.5, GATE, false);
            assert!(!voice.audible());
        }
        assert_eq!(voice.gain_db, 0.0);
    }

    #[test]
    fn closing_is_a_ramp_and_opening_is_within_5_ms() {
        let mut voice = Voice::new();
        voice.update(-20.0, GATE, false);
        let mut frame = [10_000i16; 160];
        voice.apply(&mut frame, false);
        // Up from silence in the first 40 samples (5 ms), full level after.
        assert!(frame[0] < 1000);
        assert!(frame[39..].iter().all(|&s| s == 10_000));
        assert!(frame.windows(2).all(|w| w[1] >= w[0]));
        for _ in 0..HOLD_TICKS {
            voice.update(SILENCE_DBOV, GATE, false);
        }
        // Down over 80 ms, no step larger than a ramp's.
        let mut out = Vec::new();
        while voice.audible() {
            let mut frame = [10_000i16; 160];
            voice.apply(&mut frame, false);
            out.extend_from_slice(&frame);
            voice.update(SILENCE_DBOV, GATE, false);
        }
        assert!(out.len() >= 4 * 160, "{} samples", out.len());
        let steepest = out
            .windows(2)
            .map(|w| (i32::from(w[0]) - i32::from(w[1])).abs())
            .max()
            .unwrap();
        assert!(steepest <= 20, "steepest step {steepest}");
        assert_eq!(*out.last().unwrap(), 0);
    }

    /// A lone talker: phrases of loud syllables with quiet word endings, breaths and
    /// pauses between -62 and -50 dBov. Counts the frames between -60 and -50 dBov that
    /// are attenuated by more than 2 dB, with the old gate and this one.
    #[test]
    fn a_lone_talkers_quiet_frames_are_not_cut() {
        // Frame levels of a phrase (20 ms each): syllables at -28..-35, endings, breaths.
        let phrase: Vec<f32> = [
            (-30.0, 10),
            (-56.0, 4),
            (-28.0, 8),
            (-53.0, 3),
            (-58.0, 6),
            (-35.0, 12),
            (-57.0, 8),
            (-59.0, 10),
            (-62.0, 5),
            (-31.0, 9),
            (-54.0, 12),
            (-60.0, 8),
        ]
        .iter()
        .flat_map(|&(db, n)| std::iter::repeat_n(db, n))
        .collect();
        let (mut old, mut new) = (OldGate { hang: 0 }, Voice::new());
        let (mut quiet, mut old_cut, mut new_cut) = (0, 0, 0);
        for _ in 0..20 {
            for &level in &phrase {
                let old_open = old.update(level);
                new.update(level, GATE, false);
                if (-60.0..=-50.0).contains(&level) {
                    quiet += 1;
                    old_cut += usize::from(!old_open);
                    new_cut += usize::from(db(frame_gain(&new)) < -2.0);
                }
            }
        }
        let share = |cut: usize| 100.0 * cut as f64 / quiet as f64;
        println!(
            "quiet frames (-60..-50 dBov) cut: old gate {:.0} %, new gate {:.0} %",
            share(old_cut),
            share(new_cut)
        );
        assert!(share(old_cut) > 10.0);
        assert_eq!(new_cut, 0);
    }

    #[test]
    fn levels_of_frames() {
        assert_eq!(level_dbov(&[]), SILENCE_DBOV);
        assert_eq!(level_dbov(&[0; 160]), SILENCE_DBOV);
        assert!((level_dbov(&[32; 160]) + 60.2).abs() < 0.1);
        assert!((level_dbov(&[i16::MIN; 160])).abs() < 0.01);
    }
}
