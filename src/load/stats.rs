//! The load generator's arithmetic: percentiles, and what one member's received
//! stream says about continuity (gaps, loss, late and reordered packets).
//!
//! Pure: arrival times come in as arguments. A member feeds every audio packet it
//! receives in a measurement window to [`ReceiveStats::on_packet`] and closes the
//! window with [`ReceiveStats::finish`]; the engine sums the members' figures.
//!
//! ```
//! use sotto::load::stats::{percentile, ReceiveStats};
//! use std::time::{Duration, Instant};
//! let start = Instant::now();
//! let mut stats = ReceiveStats::new(start, 8000);
//! for i in 0..10u16 {
//!     // Packet 5 never arrives: one lost packet and one 40 ms silence (not over 40 ms).
//!     if i != 5 {
//!         stats.on_packet(start + Duration::from_millis(20 * u64::from(i)), i, u32::from(i) * 160);
//!     }
//! }
//! stats.finish(start + Duration::from_millis(200));
//! assert_eq!((stats.received(), stats.lost(), stats.gaps()), (9, 1, 0));
//! assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
//! ```

use std::time::{Duration, Instant};

/// A silence between two received packets longer than this is a gap: two missing
/// 20 ms packets in a row, which a listener hears as a dropout (the issue's measure).
pub const GAP_THRESHOLD: Duration = Duration::from_millis(40);

/// A packet arriving later than this after the time its RTP timestamp says it is due
/// (measured against the earliest arrival of the stream so far) is late: a playout
/// buffer of 40 ms would already have played past it.
pub const LATE_THRESHOLD: Duration = Duration::from_millis(40);

/// A transit-time jump larger than this is a timestamp discontinuity (the bridge
/// restarted its stream), not lateness: the due-time reference starts again.
const DISCONTINUITY: Duration = Duration::from_secs(1);

/// The `p`-th percentile (0–100) of `values` by the nearest-rank method (the smallest
/// value with at least `p` % of the values at or below it); `None` when empty.
/// Sorts a copy: the load generator has at most a few hundred thousand values.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted_percentile(&sorted, p))
}

/// Nearest-rank percentile of an already sorted, non-empty slice.
fn sorted_percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Count, median, 99th percentile and maximum of a set of values (milliseconds in
/// the report).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// The summary of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            count: sorted.len(),
            p50: sorted_percentile(&sorted, 50.0),
            p99: sorted_percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }

    /// The summary of durations, in milliseconds.
    pub fn of_durations(values: &[Duration]) -> Option<Summary> {
        let ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Summary::of(&ms)
    }
}

/// Continuity of one received RTP stream over one measurement window.
///
/// - **Gaps**: silences longer than [`GAP_THRESHOLD`] between consecutive arrivals,
///   including the one from the window's start to the first packet and from the last
///   packet to the window's end (a member that hears nothing has one long gap).
/// - **Lost**: sequence numbers never received (RFC 3550 §6.4.1: expected minus
///   received, from the first to the highest extended sequence number).
/// - **Reordered**: packets with a lower sequence number than one already received.
/// - **Late**: packets more than [`LATE_THRESHOLD`] after their due time by RTP
///   timestamp, relative to the stream's earliest arrival.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    start: Instant,
    clock_rate: u32,
    last_arrival: Instant,
    /// Extended sequence number of the first and of the highest packet.
    first_sequence: Option<i64>,
    highest_sequence: i64,
    received: u64,
    reordered: u64,
    late: u64,
    gaps: u64,
    longest_gap: Duration,
    /// Reference for due times: an arrival and its extended timestamp.
    anchor: Option<(Instant, i64)>,
    last_timestamp: i64,
    /// Smallest transit seen (arrival minus due time, relative to the anchor), in µs.
    min_transit_us: i64,
    end: Option<Instant>,
}

impl ReceiveStats {
    /// A window that opens at `start`, for a stream whose RTP clock runs at `clock_rate`.
    pub fn new(start: Instant, clock_rate: u32) -> ReceiveStats {
        ReceiveStats {
            start,
            clock_rate: clock_rate.max(1),
            last_arrival: start,
            first_sequence: None,
            highest_sequence: 0,
            received: 0,
            reordered: 0,
            late: 0,
            gaps: 0,
            longest_gap: Duration::ZERO,
            anchor: None,
            last_timestamp: 0,
            min_transit_us: 0,
            end: None,
        }
    }

    /// Takes one packet that arrived at `arrival`; returns true when the silence before
    /// it was a gap. Arrivals before the window's start or the previous arrival (time
    /// that went backwards) count as no silence; packets after [`ReceiveStats::finish`]
    /// are not counted at all.
    pub fn on_packet(&mut self, arrival: Instant, sequence: u16, timestamp: u32) -> bool {
        if self.end.is_some() {
            return false;
        }
        let silence = arrival.saturating_duration_since(self.last_arrival);
        let gap = self.note_silence(silence);
        self.last_arrival = self.last_arrival.max(arrival);
        self.received += 1;

        // Extended sequence number: the one closest to the highest so far (RFC 3550
        // Appendix A.1 in spirit, without probation: the bridge is a known source).
        let sequence = match self.first_sequence {
            None => {
                self.first_sequence = Some(i64::from(sequence));
                self.highest_sequence = i64::from(sequence);
                i64::from(sequence)
            }
            Some(_) => {
                let delta = i64::from(sequence.wrapping_sub(self.highest_sequence as u16) as i16);
                self.highest_sequence + delta
            }
        };
        if sequence > self.highest_sequence {
            self.highest_sequence = sequence;
        } else if self.received > 1 {
            self.reordered += 1;
        }

        self.check_due_time(arrival, timestamp);
        gap
    }

    fn note_silence(&mut self, silence: Duration) -> bool {
        self.longest_gap = self.longest_gap.max(silence);
        let gap = silence > GAP_THRESHOLD;
        if gap {
            self.gaps += 1;
        }
        gap
    }

    fn check_due_time(&mut self, arrival: Instant, timestamp: u32) {
        let Some((anchor_arrival, anchor_timestamp)) = self.anchor else {
            self.anchor = Some((arrival, i64::from(timestamp)));
            self.last_timestamp = i64::from(timestamp);
            self.min_transit_us = 0;
            return;
        };
        // Extended timestamp, closest to the last one (wraps at 2^32).
        let delta = i64::from(timestamp.wrapping_sub(self.last_timestamp as u32) as i32);
        let extended = self.last_timestamp + delta;
        self.last_timestamp = extended;
        let due_us = (extended - anchor_timestamp) * 1_000_000 / i64::from(self.clock_rate);
        let elapsed_us = arrival
            .saturating_duration_since(anchor_arrival)
            .as_micros() as i64;
        let transit_us = elapsed_us - due_us;
        if (transit_us - self.min_transit_us).unsigned_abs() > DISCONTINUITY.as_micros() as u64 {
            // The stream's timestamps jumped: start the reference again here.
            self.anchor = Some((arrival, extended));
            self.min_transit_us = 0;
            return;
        }
        if transit_us < self.min_transit_us {
            self.min_transit_us = transit_us;
        } else if transit_us - self.min_transit_us > LATE_THRESHOLD.as_micros() as i64 {
            self.late += 1;
        }
    }

    /// Closes the window at `end`: the silence after the last packet counts too.
    /// Returns true when that silence was a gap. Only the first call counts.
    pub fn finish(&mut self, end: Instant) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.end = Some(end);
        let silence = end.saturating_duration_since(self.last_arrival);
        self.note_silence(silence)
    }

    /// Packets received (duplicates included).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Sequence numbers missing between the first and the highest received.
    pub fn lost(&self) -> u64 {
        let Some(first) = self.first_sequence else {
            return 0;
        };
        let expected = (self.highest_sequence - first + 1).max(0) as u64;
        expected.saturating_sub(self.received)
    }

    /// Packets that came after a packet with a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Packets more than [`LATE_THRESHOLD`] behind their due time.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Silences longer than [`GAP_THRESHOLD`].
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// The longest silence between packets (or the window's ends).
    pub fn longest_gap(&self) -> Duration {
        self.longest_gap
    }

    /// How long the window was open (up to [`ReceiveStats::finish`], or to the last
    /// arrival while it is still open).
    pub fn span(&self) -> Duration {
        self.end
            .unwrap_or(self.last_arrival)
            .saturating_duration_since(self.start)
    }
}

/// Pairs each burst onset a listener heard with the burst that caused it: the latest
/// send at or before the onset, no more than `window` before it. Returns the delays
/// (onset minus send) and the number of onsets that matched no send.
///
/// `sends` must be in increasing order (the marker member records them as it sends).
pub fn match_onsets(
    sends: &[Instant],
    onsets: &[Instant],
    window: Duration,
) -> (Vec<Duration>, usize) {
    let mut delays = Vec::with_capacity(onsets.len());
    let mut unmatched = 0;
    for &onset in onsets {
        // Index of the first send after the onset; the one before it is the candidate.
        let after = sends.partition_point(|&s| s <= onset);
        match after.checked_sub(1).and_then(|i| sends.get(i)) {
            Some(&send) if onset.duration_since(send) <= window => {
                delays.push(onset.duration_since(send));
            }
            _ => unmatched += 1,
        }
    }
    (delays, unmatched)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        // Order does not matter; one value is every percentile.
        assert_eq!(percentile(&[5.0, 1.0, 9.0, 3.0], 50.0), Some(3.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.count, s.p50, s.p99, s.max), (4, 2.0, 4.0, 4.0));
        let d = Summary::of_durations(&[ms(10), ms(30)]).unwrap();
        assert_eq!((d.p50, d.max), (10.0, 30.0));
    }

    #[test]
    fn a_steady_stream_has_no_gaps_loss_or_lateness() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(t0, 8000);
        for i in 0..500u32 {
            let gap = s.on_packet(
                t0 + ms(5 + 20 * u64::from(i)),
                60_000u16.wrapping_add(i as u16),
                i * 160,
            );
            assert!(!gap);
        }
        assert!(!s.finish(t0 + ms(10_000)));
        assert_eq!(s.received(), 500);
        assert_eq!((s.lost(), s.reordered(), s.late(), s.gaps()), (0, 0, 0, 0));
        assert_eq!(s.longest_gap(), ms(20));
        assert_eq!(s.span(), ms(10_000));
    }

    #[test]
    fn gaps_over_40_ms_are_counted_and_40_ms_is_not() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(t0, 8000);
        let arrivals = [0u64, 20, 60, 101, 121, 300];
        for (i, &a) in arrivals.iter().enumerate() {
            s.on_packet(t0 + ms(a), i as u16, i as u32 * 160);
        }
        // 40 (no), 41 (yes), 179 (yes).
        assert_eq!(s.gaps(), 2);
        assert_eq!(s.longest_gap(), ms(179));
        // The tail to the window's end counts.
        assert!(s.finish(t0 + ms(400)));
        assert_eq!(s.gaps(), 3);
        // A second finish changes nothing, nor do packets after the window.
        assert!(!s.finish(t0 + ms(900)));
        assert!(!s.on_packet(t0 + ms(950), 9, 9 * 160));
        assert_eq!((s.gaps(), s.received()), (3, 6));
    }

    #[test]
    fn a_member_that_hears_nothing_has_one_long_gap() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(t0, 8000);
        assert!(s.finish(t0 + ms(5000)));
        assert_eq!((s.gaps(), s.received(), s.lost()), (1, 0, 0));
        assert_eq!(s.longest_gap(), ms(5000));
    }

    #[test]
    fn loss_and_reordering_across_the_sequence_wrap() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(t0, 8000);
        // 65534, 65535, [0 lost], 2, 1 (reordered), 3
        let seqs = [65534u16, 65535, 2, 1, 3];
        for (i, &q) in seqs.iter().enumerate() {
            s.on_packet(
                t0 + ms(20 * i as u64),
                q,
                u32::from(q.wrapping_add(2)) * 160,
            );
        }
        assert_eq!(s.received(), 5);
        assert_eq!(s.lost(), 1);
        assert_eq!(s.reordered(), 1);
    }

    #[test]
    fn late_packets_are_measured_against_their_timestamps() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(t0, 8000);
        // Packets 0..10 on time, packet 10 arrives 60 ms late, 11 on time again.
        for i in 0..12u32 {
            let extra = if i == 10 { 60 } else { 0 };
            s.on_packet(t0 + ms(20 * u64::from(i) + extra), i as u16, i * 160);
        }
        assert_eq!(s.late(), 1);
        // 30 ms late is within the threshold.
        let mut s = ReceiveStats::new(t0, 8000);
        for i in 0..12u32 {
            let extra = if i == 10 { 30 } else { 0 };
            s.on_packet(t0 + ms(20 * u64::from(i) + extra), i as u16, i * 160);
        }
        assert_eq!(s.late(), 0);
    }

    #[test]
    fn a_timestamp_jump_restarts_the_due_times_instead_of_making_everything_late() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(t0, 48_000);
        for i in 0..10u32 {
            s.on_packet(t0 + ms(20 * u64::from(i)), i as u16, i * 960);
        }
        // The timestamps restart far away (a stream moved); arrivals stay regular.
        for i in 10..20u32 {
            s.on_packet(
                t0 + ms(20 * u64::from(i)),
                i as u16,
                3_000_000_000 + i * 960,
            );
        }
        assert_eq!(s.late(), 0);
    }

    #[test]
    fn onsets_match_the_latest_burst_before_them() {
        let t0 = Instant::now();
        let sends = [t0, t0 + ms(1000), t0 + ms(2000)];
        let onsets = [
            t0 + ms(45),   // burst 0, 45 ms
            t0 + ms(1060), // burst 1, 60 ms
            t0 + ms(1700), // 700 ms after burst 1: no match
            t0 + ms(2030), // burst 2, 30 ms
        ];
        let (delays, unmatched) = match_onsets(&sends, &onsets, ms(500));
        assert_eq!(delays, vec![ms(45), ms(60), ms(30)]);
        assert_eq!(unmatched, 1);
        // An onset before any send matches nothing.
        let (delays, unmatched) = match_onsets(&sends[1..], &[t0 + ms(10)], ms(500));
        assert!(delays.is_empty());
        assert_eq!(unmatched, 1);
    }
}
