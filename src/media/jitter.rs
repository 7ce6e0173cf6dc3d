//! Fixed-delay jitter buffer on decoded PCM, indexed by RTP timestamp.
//!
//! Packets may carry 10, 20, 30 or 40 ms of audio while the mixer takes 20 ms
//! per tick, so the buffer stores *samples*, not packets: a ring of decoded
//! samples where the sample with RTP timestamp `t` lives in slot
//! `t mod capacity`, plus a flag per slot saying whether it was received.
//!
//! Driven by the media session, without a clock:
//! - [`JitterBuffer::push`] with each received packet's RTP timestamp and its
//!   decoded samples, in whatever order the network delivers them;
//! - [`JitterBuffer::pop`] once per mixer tick, which always returns the next
//!   `out.len()` samples of playout (zeros where nothing arrived) and always
//!   advances, so a lost packet never stalls the room.
//!
//! The playout point starts `target_delay` samples behind the first packet's
//! timestamp. Samples that arrive after their turn are dropped as late. The
//! buffer resynchronises (discarding everything it holds, so nothing stale is
//! ever played) when the sender's timeline and ours no longer meet: a packet
//! that does not fit in the ring, one more than 4 frames beyond the target
//! delay, one more than a ring's length behind, or only late packets for
//! 4 ticks in a row.
//!
//! ```
//! use sotto::media::jitter::JitterBuffer;
//! let mut buffer = JitterBuffer::new(8192, 320); // 1 s ring, 40 ms delay
//! let mut frame = [0i16; 160];
//! buffer.push(1000, &[7; 160]);
//! assert!(!buffer.pop(&mut frame)); // 40 ms of delay first
//! assert!(!buffer.pop(&mut frame));
//! assert!(buffer.pop(&mut frame));
//! assert_eq!(frame, [7; 160]);
//! ```

use zeroize::Zeroize;

/// How far the sender's timeline may drift from ours, in frames (ticks),
/// before the buffer resynchronises instead of waiting or dropping: the
/// architecture's "flush when a buffer falls more than 4 ticks behind", used
/// in both directions.
const RESYNC_FRAMES: u32 = 4;

/// Largest ring the buffer accepts, so that every offset inside it fits the
/// signed 32-bit timestamp differences used below (RFC 3550 §5.1 timestamps
/// wrap at 2^32).
const MAX_CAPACITY: usize = 1 << 30;

/// A fixed-delay jitter buffer for one RTP stream; see the module docs.
///
/// All memory is allocated in [`JitterBuffer::new`]; `push` and `pop` never
/// allocate. Audio is wiped on [`JitterBuffer::reset`] and on drop.
pub struct JitterBuffer {
    /// Decoded samples; slot `t & mask` holds the sample of timestamp `t`.
    samples: Vec<i16>,
    /// Whether the slot holds a received sample not yet played.
    present: Vec<bool>,
    /// `samples.len() - 1`; the length is a power of two.
    mask: usize,
    /// Samples between a packet's arrival and its playout (see `new`).
    target_delay: u32,
    /// Timestamp of the next sample `pop` returns.
    playout: u32,
    /// Whether a packet has set the playout point since creation or reset.
    started: bool,
    /// Length of the last `pop`, the tick size in samples; 0 until then.
    frame_len: u32,
    /// A packet placed at least one sample since the last `pop`.
    placed_since_pop: bool,
    /// A wholly late packet was dropped since the last `pop`.
    late_since_pop: bool,
    /// Ticks in a row in which only late packets arrived.
    late_ticks: u32,
    late_dropped: u64,
    overflow_dropped: u64,
    missing_samples: u64,
    resyncs: u64,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counters only: the samples are a caller's voice.
        f.debug_struct("JitterBuffer")
            .field("capacity", &self.capacity())
            .field("target_delay", &self.target_delay)
            .field("late_dropped", &self.late_dropped)
            .field("resyncs", &self.resyncs)
            .finish_non_exhaustive()
    }
}

impl JitterBuffer {
    /// A buffer holding at least `capacity_samples` samples (rounded up to a
    /// power of two and to more than `target_delay_samples`; at most 2^30),
    /// playing out `target_delay_samples` behind the first packet.
    ///
    /// The capacity should cover the target delay, the longest packet and
    /// the jitter to tolerate: one second (8000 samples at 8 kHz) is a
    /// sensible choice. It is also the limit beyond which a packet from the
    /// past is taken as a restarted sender rather than a late packet.
    pub fn new(capacity_samples: usize, target_delay_samples: u32) -> Self {
        let wanted = capacity_samples.max(target_delay_samples as usize + 1);
        let capacity = wanted.min(MAX_CAPACITY).next_power_of_two();
        let target_delay = target_delay_samples.min(capacity as u32 - 1);
        Self {
            samples: vec![0; capacity],
            present: vec![false; capacity],
            mask: capacity - 1,
            target_delay,
            playout: 0,
            started: false,
            frame_len: 0,
            placed_since_pop: false,
            late_since_pop: false,
            late_ticks: 0,
            late_dropped: 0,
            overflow_dropped: 0,
            missing_samples: 0,
            resyncs: 0,
        }
    }

    /// Ring size in samples.
    pub fn capacity(&self) -> usize {
        self.samples.len()
    }

    /// The playout delay in samples.
    pub fn target_delay(&self) -> u32 {
        self.target_delay
    }

    /// Stores the decoded `samples` of a packet whose first sample has RTP
    /// timestamp `timestamp`. Late samples are dropped; a packet that does
    /// not fit the current timeline resynchronises the buffer to it.
    pub fn push(&mut self, timestamp: u32, samples: &[i16]) {
        if samples.is_empty() {
            return;
        }
        if !self.started {
            self.start(timestamp);
        }
        let capacity = self.samples.len() as i64;
        let len = samples.len() as i64;
        let mut offset = self.offset_of(timestamp);

        if offset + len <= 0 {
            // Wholly late. Far behind means the sender restarted its
            // timestamps (or we fell behind for long); late for several ticks
            // in a row means our timeline no longer meets the sender's.
            let far_behind = -offset > capacity;
            let stuck = self.late_ticks >= RESYNC_FRAMES;
            if !(far_behind || stuck) {
                self.late_dropped += len as u64;
                self.late_since_pop = true;
                return;
            }
            self.resync(timestamp);
            offset = i64::from(self.target_delay);
        } else if offset + len > capacity || offset > self.max_ahead() {
            // The sender jumped ahead (timestamp jump, clock drift, or the
            // first packet was unusually delayed).
            self.resync(timestamp);
            offset = i64::from(self.target_delay);
        }

        // Drop the late head of a partly late packet, and whatever does not
        // fit the ring (only possible when one packet is longer than the
        // ring minus the target delay).
        let skip = (-offset).clamp(0, len);
        let fits = (capacity - offset).clamp(0, len);
        self.late_dropped += skip as u64;
        self.overflow_dropped += (len - fits) as u64;
        if let Some(kept) = samples.get(skip as usize..fits as usize) {
            if !kept.is_empty() {
                let first = self.playout.wrapping_add((offset + skip) as u32);
                self.write(first, kept);
                self.placed_since_pop = true;
            }
        }
    }

    /// Fills `out` with the next `out.len()` samples of playout and advances
    /// by that much. Positions never received are zeros. Returns whether at
    /// least one received sample was in the frame; before the first packet
    /// it returns `false` with zeros.
    pub fn pop(&mut self, out: &mut [i16]) -> bool {
        if !self.started || out.is_empty() {
            out.fill(0);
            return false;
        }
        self.frame_len = u32::try_from(out.len()).unwrap_or(u32::MAX);
        if self.placed_since_pop {
            self.late_ticks = 0;
        } else if self.late_since_pop {
            self.late_ticks = self.late_ticks.saturating_add(1);
        }
        self.placed_since_pop = false;
        self.late_since_pop = false;

        let mut any = false;
        let mut missing = 0u64;
        let mut position = self.playout;
        let mut rest = out;
        while !rest.is_empty() {
            let start = position as usize & self.mask;
            let run = rest.len().min(self.samples.len() - start);
            let (chunk, tail) = rest.split_at_mut(run);
            let end = start + run;
            if let (Some(samples), Some(present)) = (
                self.samples.get_mut(start..end),
                self.present.get_mut(start..end),
            ) {
                for ((dst, sample), present) in
                    chunk.iter_mut().zip(samples.iter()).zip(present.iter())
                {
                    *dst = if *present { *sample } else { 0 };
                }
                let received = present.iter().filter(|&&p| p).count();
                any |= received > 0;
                missing += (run - received) as u64;
                // Played slots are free again; wipe them (privacy, and
                // nothing stale can come back after a wrap).
                present.fill(false);
                samples.fill(0);
            }
            position = position.wrapping_add(run as u32);
            rest = tail;
        }
        self.playout = position;
        self.missing_samples += missing;
        any
    }

    /// Forgets the stream: the next packet sets the playout point again, as
    /// for a new buffer (e.g. after an SSRC change). Counters are kept.
    pub fn reset(&mut self) {
        self.clear();
        self.started = false;
        self.frame_len = 0;
    }

    /// Samples dropped because they arrived after their playout time.
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// Samples dropped because a single packet was longer than the ring
    /// leaves room for.
    pub fn overflow_dropped(&self) -> u64 {
        self.overflow_dropped
    }

    /// Samples played as zeros because they were never received (loss, or
    /// silence the sender did not transmit).
    pub fn missing_samples(&self) -> u64 {
        self.missing_samples
    }

    /// How often the playout point was moved to follow the sender (not
    /// counting the first packet or the first after `reset`).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Signed distance from the playout point to `timestamp`, handling the
    /// u32 wrap (RFC 3550 §5.1).
    fn offset_of(&self, timestamp: u32) -> i64 {
        i64::from(timestamp.wrapping_sub(self.playout) as i32)
    }

    /// Largest offset a packet may start at before it counts as the sender
    /// jumping ahead; only the ring bounds it until the tick size is known.
    fn max_ahead(&self) -> i64 {
        if self.frame_len == 0 {
            i64::MAX
        } else {
            i64::from(self.target_delay) + i64::from(RESYNC_FRAMES) * i64::from(self.frame_len)
        }
    }

    fn start(&mut self, timestamp: u32) {
        self.started = true;
        self.playout = timestamp.wrapping_sub(self.target_delay);
        self.late_ticks = 0;
    }

    fn resync(&mut self, timestamp: u32) {
        self.clear();
        self.start(timestamp);
        self.resyncs += 1;
    }

    fn clear(&mut self) {
        self.samples.fill(0);
        self.present.fill(false);
        self.placed_since_pop = false;
        self.late_since_pop = false;
        self.late_ticks = 0;
    }

    /// Copies `data` (at most one ring long) to the slots from timestamp
    /// `first` on, wrapping at the end of the ring.
    fn write(&mut self, first: u32, data: &[i16]) {
        let mut position = first;
        let mut rest = data;
        while !rest.is_empty() {
            let start = position as usize & self.mask;
            let run = rest.len().min(self.samples.len() - start);
            let (chunk, tail) = rest.split_at(run);
            let end = start + run;
            if let (Some(samples), Some(present)) = (
                self.samples.get_mut(start..end),
                self.present.get_mut(start..end),
            ) {
                samples.copy_from_slice(chunk);
                present.fill(true);
            }
            position = position.wrapping_add(run as u32);
            rest = tail;
        }
    }
}

impl Drop for JitterBuffer {
    fn drop(&mut self) {
        // Audio buffers are wiped when freed (architecture §5, invariant 5).
        self.samples.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 160;

    /// A recognisable signal: sample value = its timestamp, folded into i16
    /// and never 0 (so a zero always means "nothing received").
    fn signal(timestamp: u32) -> i16 {
        (timestamp % 30_000) as i16 + 1
    }

    fn packet(timestamp: u32, len: usize) -> Vec<i16> {
        (0..len as u32)
            .map(|i| signal(timestamp.wrapping_add(i)))
            .collect()
    }

    fn pop(buffer: &mut JitterBuffer) -> (bool, Vec<i16>) {
        let mut frame = vec![0i16; FRAME];
        let real = buffer.pop(&mut frame);
        (real, frame)
    }

    #[test]
    fn nothing_before_the_first_push() {
        let mut buffer = JitterBuffer::new(8192, 320);
        let mut frame = [5i16; FRAME];
        assert!(!buffer.pop(&mut frame));
        assert_eq!(frame, [0; FRAME]);
    }

    #[test]
    fn capacity_is_rounded_up() {
        let buffer = JitterBuffer::new(8000, 320);
        assert_eq!(buffer.capacity(), 8192);
        let small = JitterBuffer::new(10, 1000);
        assert!(small.capacity() > 1000);
        assert_eq!(small.target_delay(), 1000);
    }

    #[test]
    fn in_order_packets_come_out_unchanged_after_the_target_delay() {
        let mut buffer = JitterBuffer::new(8192, 320);
        let start = 123_456u32;
        let mut output = Vec::new();
        // Real time: packet k arrives, then a tick pops one frame.
        for k in 0..20u32 {
            let timestamp = start + k * FRAME as u32;
            buffer.push(timestamp, &packet(timestamp, FRAME));
            output.push(pop(&mut buffer));
        }
        // Two frames (320 samples) of delay, then the signal, unchanged.
        assert!(!output[0].0 && !output[1].0);
        assert!(output[0].1.iter().chain(&output[1].1).all(|&s| s == 0));
        for (k, (real, frame)) in output.iter().enumerate().skip(2) {
            let timestamp = start + (k as u32 - 2) * FRAME as u32;
            assert!(real);
            assert_eq!(frame, &packet(timestamp, FRAME), "frame {k}");
        }
        assert_eq!(buffer.late_dropped(), 0);
        assert_eq!(buffer.resyncs(), 0);
    }

    #[test]
    fn reordered_packets_within_the_target_come_out_in_order() {
        let mut buffer = JitterBuffer::new(8192, 480);
        let order = [0u32, 2, 1, 3, 5, 4, 6, 7];
        for &k in &order {
            let timestamp = k * FRAME as u32;
            buffer.push(timestamp, &packet(timestamp, FRAME));
        }
        let mut played = Vec::new();
        for _ in 0..(3 + order.len()) {
            played.extend(pop(&mut buffer).1);
        }
        let expected: Vec<i16> = std::iter::repeat_n(0, 480)
            .chain(packet(0, order.len() * FRAME))
            .collect();
        assert_eq!(played, expected);
    }

    #[test]
    fn thirty_ms_packets_through_twenty_ms_pops() {
        let mut buffer = JitterBuffer::new(8192, 480);
        let packet_len = 240usize;
        let mut played = Vec::new();
        let mut next_packet = 0u32;
        // Simulate time in samples: a 30 ms packet is complete every 240
        // samples, a tick happens every 160.
        for tick in 0..30u32 {
            let now = (tick + 1) * FRAME as u32;
            while (next_packet + 1) * packet_len as u32 <= now {
                let timestamp = 7_000 + next_packet * packet_len as u32;
                buffer.push(timestamp, &packet(timestamp, packet_len));
                next_packet += 1;
            }
            played.extend(pop(&mut buffer).1);
        }
        let first_real = played.iter().position(|&s| s != 0).unwrap();
        // One tick before the first packet is complete, then the target
        // delay of 480 samples.
        assert_eq!(first_real, FRAME + 480);
        let reconstructed = &played[first_real..];
        assert_eq!(reconstructed, &packet(7_000, reconstructed.len())[..]);
        assert!(reconstructed.len() > 4000);
        assert_eq!(buffer.missing_samples(), 480);
    }

    #[test]
    fn lost_packet_is_one_zero_frame() {
        let mut buffer = JitterBuffer::new(8192, 320);
        let mut results = Vec::new();
        for k in 0..10u32 {
            let timestamp = k * FRAME as u32;
            if k != 4 {
                buffer.push(timestamp, &packet(timestamp, FRAME));
            }
            results.push(pop(&mut buffer));
        }
        // Frame index 6 plays packet 4 (two frames of delay).
        let reals: Vec<bool> = results.iter().map(|(real, _)| *real).collect();
        assert_eq!(
            reals,
            vec![false, false, true, true, true, true, false, true, true, true]
        );
        assert!(results[6].1.iter().all(|&s| s == 0));
        assert_eq!(results[7].1, packet(5 * FRAME as u32, FRAME));
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let mut buffer = JitterBuffer::new(8192, 320);
        buffer.push(0, &packet(0, FRAME));
        // Skip packet 1, play until its time has passed.
        for _ in 0..4 {
            pop(&mut buffer);
        }
        buffer.push(FRAME as u32, &packet(FRAME as u32, FRAME));
        assert_eq!(buffer.late_dropped(), FRAME as u64);
        // A packet straddling the playout point keeps its on-time tail.
        // Playout is now at 640 - 320 = 320.
        buffer.push(240, &packet(240, FRAME));
        assert_eq!(buffer.late_dropped(), FRAME as u64 + 80);
        let (real, frame) = pop(&mut buffer);
        assert!(real);
        assert_eq!(&frame[..80], &packet(320, 80)[..]);
        assert!(frame[80..].iter().all(|&s| s == 0));
        assert_eq!(buffer.resyncs(), 0);
    }

    #[test]
    fn timestamps_wrap_around() {
        let mut buffer = JitterBuffer::new(8192, 320);
        let start = u32::MAX - 5 * FRAME as u32 + 17;
        let mut played = Vec::new();
        for k in 0..12u32 {
            let timestamp = start.wrapping_add(k * FRAME as u32);
            buffer.push(timestamp, &packet(timestamp, FRAME));
            played.extend(pop(&mut buffer).1);
        }
        let expected: Vec<i16> = std::iter::repeat_n(0, 320)
            .chain(packet(start, 10 * FRAME))
            .collect();
        assert_eq!(played, expected);
        assert_eq!(buffer.late_dropped(), 0);
        assert_eq!(buffer.resyncs(), 0);
    }

    /// Feeds `count` packets from `first` in real time and returns whether
    /// each tick's frame was real, and the frames.
    fn run(buffer: &mut JitterBuffer, first: u32, count: u32) -> Vec<(bool, Vec<i16>)> {
        (0..count)
            .map(|k| {
                let timestamp = first.wrapping_add(k * FRAME as u32);
                buffer.push(timestamp, &packet(timestamp, FRAME));
                pop(buffer)
            })
            .collect()
    }

    #[test]
    fn jump_forward_ten_seconds_resyncs() {
        let mut buffer = JitterBuffer::new(8192, 320);
        // Packets are held in the ring when the jump comes.
        buffer.push(0, &packet(0, FRAME));
        buffer.push(160, &packet(160, FRAME));
        pop(&mut buffer);
        let jumped = 80_000 + 160;
        let after = run(&mut buffer, jumped, 5);
        assert_eq!(buffer.resyncs(), 1);
        // Audio resumes after the target delay, with the new stream only.
        assert!(!after[0].0 && !after[1].0);
        assert!(after[0].1.iter().chain(&after[1].1).all(|&s| s == 0));
        assert_eq!(after[2].1, packet(jumped, FRAME));
        assert_eq!(after[4].1, packet(jumped + 2 * FRAME as u32, FRAME));
    }

    #[test]
    fn jump_backward_ten_seconds_resyncs() {
        let mut buffer = JitterBuffer::new(8192, 320);
        let start = 100_000u32;
        run(&mut buffer, start, 10);
        let back = start - 80_000;
        let after = run(&mut buffer, back, 5);
        assert_eq!(buffer.resyncs(), 1);
        assert!(!after[0].0 && !after[1].0);
        assert_eq!(after[2].1, packet(back, FRAME));
        assert_eq!(after[3].1, packet(back + FRAME as u32, FRAME));
    }

    #[test]
    fn small_jump_ahead_beyond_four_frames_resyncs() {
        let mut buffer = JitterBuffer::new(8192, 320);
        run(&mut buffer, 0, 5);
        // 1 s ahead still fits the ring but is far beyond the target.
        let ahead = 5 * FRAME as u32 + 8000 - 2000;
        let after = run(&mut buffer, ahead, 4);
        assert_eq!(buffer.resyncs(), 1);
        assert_eq!(after[2].1, packet(ahead, FRAME));
    }

    #[test]
    fn constantly_late_stream_resyncs_after_four_ticks() {
        let mut buffer = JitterBuffer::new(8192, 320);
        run(&mut buffer, 10_000, 5);
        // The sender's timestamps step back by 0.25 s (less than the ring):
        // every packet is late. After 4 ticks of only late packets, resync.
        let back = 10_000 + 5 * FRAME as u32 - 2000;
        let after = run(&mut buffer, back, 9);
        assert_eq!(buffer.resyncs(), 1);
        let reals: Vec<bool> = after.iter().map(|(real, _)| *real).collect();
        // Two real frames still buffered, four ticks of dropped packets, the
        // fifth late packet resyncs and plays after the target delay.
        assert_eq!(
            reals,
            vec![true, true, false, false, false, false, true, true, true]
        );
        assert_eq!(buffer.late_dropped(), 4 * FRAME as u64);
        assert_eq!(after[6].1, packet(back + 4 * FRAME as u32, FRAME));
    }

    #[test]
    fn burst_after_a_stall_does_not_resync() {
        let mut buffer = JitterBuffer::new(8192, 320);
        run(&mut buffer, 0, 5);
        // The network stalls for 10 ticks, then delivers everything at once.
        for _ in 0..10 {
            pop(&mut buffer);
        }
        for k in 5..16u32 {
            let timestamp = k * FRAME as u32;
            buffer.push(timestamp, &packet(timestamp, FRAME));
        }
        assert_eq!(buffer.resyncs(), 0);
        // Playout is at 15 * 160 - 320 = 2080: packets 13 on play on time.
        assert_eq!(pop(&mut buffer).1, packet(2080, FRAME));
        assert_eq!(buffer.late_dropped(), 8 * FRAME as u64);
    }

    #[test]
    fn no_stale_samples_after_resync() {
        let mut buffer = JitterBuffer::new(8192, 320);
        // Buffer holds 0..800 not yet played.
        for k in 0..5u32 {
            buffer.push(k * FRAME as u32, &packet(k * FRAME as u32, FRAME));
        }
        // The new timeline maps onto the same ring slots (a multiple of the
        // capacity away): stale samples would show if not cleared.
        let jumped = 8192 * 10;
        buffer.push(jumped, &[-1; FRAME]);
        let mut played = Vec::new();
        for _ in 0..6 {
            played.extend(pop(&mut buffer).1);
        }
        assert!(played[..320].iter().all(|&s| s == 0));
        assert!(played[320..480].iter().all(|&s| s == -1));
        assert!(played[480..].iter().all(|&s| s == 0));
    }

    #[test]
    fn duplicates_are_harmless() {
        let mut buffer = JitterBuffer::new(8192, 320);
        let mut played = Vec::new();
        for k in 0..8u32 {
            let timestamp = k * FRAME as u32;
            buffer.push(timestamp, &packet(timestamp, FRAME));
            buffer.push(timestamp, &packet(timestamp, FRAME));
            if k >= 3 {
                // A stale duplicate of an already played packet.
                let old = (k - 3) * FRAME as u32;
                buffer.push(old, &packet(old, FRAME));
            }
            played.extend(pop(&mut buffer).1);
        }
        let expected: Vec<i16> = std::iter::repeat_n(0, 320)
            .chain(packet(0, 6 * FRAME))
            .collect();
        assert_eq!(played, expected);
        assert_eq!(buffer.late_dropped(), 5 * FRAME as u64);
        assert_eq!(buffer.resyncs(), 0);
    }

    #[test]
    fn reset_restarts_the_timeline() {
        let mut buffer = JitterBuffer::new(8192, 320);
        run(&mut buffer, 0, 3);
        buffer.push(480, &packet(480, FRAME));
        buffer.reset();
        // A new SSRC with unrelated timestamps starts afresh, no resync.
        let after = run(&mut buffer, 5_000_000, 3);
        assert_eq!(buffer.resyncs(), 0);
        assert!(!after[0].0 && !after[1].0);
        assert_eq!(after[2].1, packet(5_000_000, FRAME));
    }

    #[test]
    fn oversized_packet_is_truncated_without_panic() {
        let mut buffer = JitterBuffer::new(1024, 320);
        buffer.push(0, &packet(0, 5000));
        assert_eq!(buffer.overflow_dropped(), 5000 - (1024 - 320));
        let mut frame = vec![0i16; 3000];
        assert!(buffer.pop(&mut frame));
        // The target delay, then the part that fitted, then nothing: a frame
        // longer than the ring must not play a slot twice.
        assert!(frame[..320].iter().all(|&s| s == 0));
        assert_eq!(&frame[320..1024], &packet(0, 704)[..]);
        assert!(frame[1024..].iter().all(|&s| s == 0));
    }

    #[test]
    fn empty_packets_and_frames_are_ignored() {
        let mut buffer = JitterBuffer::new(1024, 320);
        buffer.push(0, &[]);
        assert!(!buffer.pop(&mut [0i16; 4]));
        buffer.push(0, &[1]);
        assert!(!buffer.pop(&mut []));
        let mut frame = [0i16; 321];
        assert!(buffer.pop(&mut frame));
        assert_eq!(frame[320], 1);
    }
}
