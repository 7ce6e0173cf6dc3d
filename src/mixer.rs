//! Sum-minus-own audio mixer for one room and one tick.
//!
//! Each tick (20 ms by default: 160 samples at 8 kHz) the room adds every
//! contributing member's frame into one 32-bit sum. A contributor then hears
//! `sum - own`, so nobody hears themselves; every other member (a listener)
//! hears the whole sum, which is computed once and shared, so that listeners
//! on the same codec can also share one encode. Results are clamped to i16.
//! This is the scheme of Asterisk's `bridge_softmix` and FreeSWITCH's
//! `mod_conference` (docs/style.md).
//!
//! Driven by the room's tick, with no clock, lock or allocation:
//!
//! ```
//! use sotto::mixer::Mixer;
//! let mut mixer = Mixer::new(4);
//! let alice = [100i16, 200, 300, 400];
//! let bob = [10i16, 20, 30, 40];
//! mixer.clear();
//! mixer.add(&alice);
//! mixer.add(&bob);
//! let mut out = [0i16; 4];
//! mixer.minus_own(&alice, &mut out);
//! assert_eq!(out, bob); // Alice hears Bob only
//! mixer.full_mix(&mut out);
//! assert_eq!(out, [110, 220, 330, 440]); // listeners hear both
//! ```
//!
//! The inner loops run over zipped slices of equal length so that LLVM drops
//! the bounds checks and vectorises them.

use zeroize::Zeroize;

/// Mixes the frames of one room for one tick; see the module docs.
///
/// The 32-bit sum is exact for up to 65,536 full-scale contributors
/// (2^31 / 2^15); beyond that it wraps rather than panicking. Rooms mix only
/// their loudest few speakers (architecture §3), far below that.
pub struct Mixer {
    /// Sum of the contributors' frames, one i32 per sample.
    sum: Vec<i32>,
    /// Frames added since the last `clear`.
    contributors: usize,
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No samples: they are the members' voices.
        f.debug_struct("Mixer")
            .field("frame_len", &self.sum.len())
            .field("contributors", &self.contributors)
            .finish_non_exhaustive()
    }
}

/// Saturates a 32-bit sample to the i16 range.
#[inline(always)]
fn clamp(sample: i32) -> i16 {
    sample.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

impl Mixer {
    /// A mixer for frames of `frame_len` samples (160 for 20 ms at 8 kHz).
    /// This is the only allocation.
    pub fn new(frame_len: usize) -> Self {
        Self {
            sum: vec![0; frame_len],
            contributors: 0,
        }
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.sum.len()
    }

    /// Starts a new tick: no contributors, silence.
    pub fn clear(&mut self) {
        self.sum.fill(0);
        self.contributors = 0;
    }

    /// Adds one contributor's frame. A shorter frame counts as padded with
    /// zeros; samples beyond `frame_len` are ignored.
    pub fn add(&mut self, frame: &[i16]) {
        let n = frame.len().min(self.sum.len());
        let (sum, frame) = (&mut self.sum[..n], &frame[..n]);
        for (total, &sample) in sum.iter_mut().zip(frame) {
            *total = total.wrapping_add(i32::from(sample));
        }
        self.contributors += 1;
    }

    /// Number of frames added since the last `clear`.
    pub fn contributors(&self) -> usize {
        self.contributors
    }

    /// Writes the whole mix, clamped, for listeners. Computed once per tick
    /// and shared by all of them. Samples of `out` beyond `frame_len` are
    /// set to zero.
    pub fn full_mix(&self, out: &mut [i16]) {
        let n = out.len().min(self.sum.len());
        let (head, tail) = out.split_at_mut(n);
        for (dst, &total) in head.iter_mut().zip(&self.sum[..n]) {
            *dst = clamp(total);
        }
        tail.fill(0);
    }

    /// Writes the mix without `own` (the frame this contributor added),
    /// clamped: what a speaker hears. A shorter `own` counts as padded with
    /// zeros; samples of `out` beyond `frame_len` are set to zero.
    pub fn minus_own(&self, own: &[i16], out: &mut [i16]) {
        let n = out.len().min(self.sum.len());
        let (head, tail) = out.split_at_mut(n);
        let m = own.len().min(n);
        let (with_own, without_own) = head.split_at_mut(m);
        let (sum_own, sum_rest) = self.sum[..n].split_at(m);
        for ((dst, &total), &mine) in with_own.iter_mut().zip(sum_own).zip(&own[..m]) {
            *dst = clamp(total.wrapping_sub(i32::from(mine)));
        }
        for (dst, &total) in without_own.iter_mut().zip(sum_rest) {
            *dst = clamp(total);
        }
        tail.fill(0);
    }
}

impl Drop for Mixer {
    fn drop(&mut self) {
        // The sum is everyone's voice: wipe it when freed (architecture §5, invariant 5).
        self.sum.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a small seeded generator, enough for test frames.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn sample(&mut self, amplitude: i16) -> i16 {
            let span = 2 * i64::from(amplitude) + 1;
            ((self.next() >> 11) as i64 % span - i64::from(amplitude)) as i16
        }
    }

    fn clamped_sum(frames: &[&[i16]], len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| {
                let total: i64 = frames.iter().map(|f| i64::from(f[i])).sum();
                total.clamp(-32768, 32767) as i16
            })
            .collect()
    }

    #[test]
    fn nobody_hears_themselves() {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let len = 160;
        let mut mixer = Mixer::new(len);
        for members in [1usize, 2, 3, 5, 17] {
            for amplitude in [300i16, 12_000, i16::MAX] {
                let frames: Vec<Vec<i16>> = (0..members)
                    .map(|_| (0..len).map(|_| rng.sample(amplitude)).collect())
                    .collect();
                mixer.clear();
                for frame in &frames {
                    mixer.add(frame);
                }
                assert_eq!(mixer.contributors(), members);
                for (me, own) in frames.iter().enumerate() {
                    let others: Vec<&[i16]> = frames
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| i != me)
                        .map(|(_, f)| f.as_slice())
                        .collect();
                    let mut out = vec![1i16; len];
                    mixer.minus_own(own, &mut out);
                    assert_eq!(out, clamped_sum(&others, len), "{members} members");
                    if members == 1 {
                        assert!(out.iter().all(|&s| s == 0), "alone hears silence");
                    }
                }
            }
        }
    }

    #[test]
    fn listeners_get_the_full_mix() {
        let mut rng = Rng(42);
        let len = 80;
        let mut mixer = Mixer::new(len);
        let frames: Vec<Vec<i16>> = (0..3)
            .map(|_| (0..len).map(|_| rng.sample(20_000)).collect())
            .collect();
        for frame in &frames {
            mixer.add(frame);
        }
        let all: Vec<&[i16]> = frames.iter().map(Vec::as_slice).collect();
        let mut out = vec![0i16; len];
        mixer.full_mix(&mut out);
        assert_eq!(out, clamped_sum(&all, len));
        // A listener is someone who added nothing: minus an empty frame.
        let mut listener = vec![0i16; len];
        mixer.minus_own(&[], &mut listener);
        assert_eq!(listener, out);
    }

    #[test]
    fn clamps_at_both_ends() {
        let mut mixer = Mixer::new(2);
        mixer.add(&[30_000, -30_000]);
        mixer.add(&[30_000, -30_000]);
        mixer.add(&[-1_000, 1_000]);
        let mut out = [0i16; 2];
        mixer.full_mix(&mut out);
        assert_eq!(out, [i16::MAX, i16::MIN]);
        mixer.minus_own(&[30_000, -30_000], &mut out);
        assert_eq!(out, [29_000, -29_000]);
        mixer.minus_own(&[-1_000, 1_000], &mut out);
        assert_eq!(out, [i16::MAX, i16::MIN]);
    }

    #[test]
    fn no_contributors_is_silence() {
        let mut mixer = Mixer::new(160);
        mixer.add(&[500; 160]);
        mixer.clear();
        assert_eq!(mixer.contributors(), 0);
        let mut out = [7i16; 160];
        mixer.full_mix(&mut out);
        assert_eq!(out, [0; 160]);
    }

    #[test]
    fn short_and_long_frames() {
        let mut mixer = Mixer::new(4);
        assert_eq!(mixer.frame_len(), 4);
        mixer.add(&[1, 2]); // zero-padded
        mixer.add(&[10, 20, 30, 40, 50, 60]); // truncated
        let mut out = [9i16; 6];
        mixer.full_mix(&mut out);
        assert_eq!(out, [11, 22, 30, 40, 0, 0]);
        mixer.minus_own(&[1, 2], &mut out);
        assert_eq!(out, [10, 20, 30, 40, 0, 0]);
        let mut short = [0i16; 3];
        mixer.minus_own(&[10, 20, 30, 40], &mut short);
        assert_eq!(short, [1, 2, 0]);
    }
}
