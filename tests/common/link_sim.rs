//! Test kit: a seeded, simulated lossy and jittery link for packets of any type.
//!
//! The sender hands packets to [`SimLink::send`] at its own (virtual) send times; the
//! link decides each packet's fate (lost, delayed, held back behind later packets,
//! duplicated) and keeps the survivors in an event queue; the receiver collects them
//! in arrival order with [`SimLink::poll_arrivals`]. Nothing reads a clock: time is
//! whatever `Instant`s the test passes in, so a ten-minute call runs in milliseconds.
//! The same seed and the same calls always give the same arrivals.
//!
//! `send` may be called ahead of the receiver's time (the queue keeps the packet until
//! its arrival), which is what a test with a drifting sender clock needs: send a little
//! ahead, poll at each receiver tick.
//!
//! ```ignore
//! let mut link = SimLink::new(7, LinkParams { loss: 0.1, jitter_ms: 40.0, ..LinkParams::default() });
//! link.send(t0, packet);
//! for (arrival, packet) in link.poll_arrivals(t0 + Duration::from_millis(100)) { /* ... */ }
//! ```
//!
//! Needs only `std` and `rand` 0.8 (`StdRng`, seeded). Its own checks are in
//! `media::playout`'s unit tests, which use it too (so that they run once, not once per
//! integration test that includes the test kit).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// How the random part of the delay is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spread {
    /// Uniform between 0 and `jitter_ms`: every delay in the range equally likely.
    #[default]
    Uniform,
    /// Pareto-like heavy tail (shape 2.5): most packets are barely delayed, a few a lot.
    /// The median extra delay is about a third of `jitter_ms`, 1 % exceed 5 × `jitter_ms`;
    /// capped at 10 × `jitter_ms` so that one draw cannot stall a test.
    Pareto,
    /// Normal with mean `jitter_ms` and standard deviation `jitter_sd_ms` (cut at zero
    /// and at mean + 5 deviations): the "40 ± 30 ms" of a busy Wi-Fi or mobile link.
    Normal,
}

/// The link's behaviour; every probability is per packet, in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkParams {
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Spread of the random part of the one-way delay, in milliseconds (see `spread`).
    pub jitter_ms: f64,
    /// Standard deviation of the random part with [`Spread::Normal`], in milliseconds.
    pub jitter_sd_ms: f64,
    /// Probability that a packet is held back by one to three send intervals more, so
    /// that it arrives after packets sent after it.
    pub reorder: f64,
    /// Probability that a packet arrives twice (the copy has its own random delay).
    pub duplicate: f64,
    /// How much faster the sender's clock runs than the receiver's, in parts per
    /// million: at +125 a sender that believes it sends every 20 ms sends every
    /// 19.9975 ms of receiver time (an 8,001 Hz clock against 8,000 Hz).
    pub clock_drift_ppm: f64,
    /// The fixed part of the one-way delay, in milliseconds.
    pub base_delay_ms: f64,
    /// Shape of the random delay.
    pub spread: Spread,
}

/// What the link did with one sent packet (ground truth for the test's checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped.
    Lost,
    /// Delivered at `arrival` (receiver time), and a second time at `duplicate` if duplicated.
    Delivered {
        /// When the packet arrives.
        arrival: Instant,
        /// When its duplicate arrives, if there is one.
        duplicate: Option<Instant>,
    },
}

/// Counters of what the link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Packets handed to `send`.
    pub sent: u64,
    /// Packets dropped.
    pub lost: u64,
    /// Packets held back on purpose (`reorder`).
    pub held_back: u64,
    /// Extra copies scheduled (`duplicate`).
    pub duplicated: u64,
    /// Packets (copies included) handed out by `poll_arrivals`.
    pub delivered: u64,
}

/// A packet in flight. Ordered by arrival, then by the order it was scheduled in, so
/// that equal arrival times come out first-in first-out and the order is deterministic.
struct InFlight<P> {
    arrival: Instant,
    order: u64,
    packet: P,
}

impl<P> PartialEq for InFlight<P> {
    fn eq(&self, other: &Self) -> bool {
        self.arrival == other.arrival && self.order == other.order
    }
}

impl<P> Eq for InFlight<P> {}

impl<P> PartialOrd for InFlight<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P> Ord for InFlight<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.arrival, self.order).cmp(&(other.arrival, other.order))
    }
}

/// Send interval assumed for `reorder` before two packets have been sent (one 20 ms frame).
const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);

/// Shape of the Pareto spread: finite mean and variance, a visible tail.
const PARETO_SHAPE: f64 = 2.5;

/// Cap of the Pareto spread, in multiples of `jitter_ms`.
const PARETO_CAP: f64 = 10.0;

/// A seeded simulated link; see the module docs.
pub struct SimLink<P> {
    rng: StdRng,
    params: LinkParams,
    queue: BinaryHeap<Reverse<InFlight<P>>>,
    order: u64,
    /// The first send time: sender and receiver clocks agree there.
    origin: Option<Instant>,
    /// The previous send time (sender clock), for the `reorder` hold-back.
    last_send: Option<Instant>,
    interval: Duration,
    stats: LinkStats,
}

impl<P> std::fmt::Debug for SimLink<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLink")
            .field("params", &self.params)
            .field("in_flight", &self.queue.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Clone> SimLink<P> {
    /// A link whose every random choice comes from `seed`. Probabilities outside 0..=1
    /// are clamped; negative delays count as zero.
    pub fn new(seed: u64, params: LinkParams) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            params,
            queue: BinaryHeap::new(),
            order: 0,
            origin: None,
            last_send: None,
            interval: DEFAULT_INTERVAL,
            stats: LinkStats::default(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> LinkParams {
        self.params
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Packets in flight (sent, not yet polled).
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// When the next packet arrives, if any is in flight (to jump virtual time).
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(p)| p.arrival)
    }

    /// The receiver-clock instant of the sender-clock instant `sender_now`.
    pub fn receiver_time(&self, sender_now: Instant) -> Instant {
        let Some(origin) = self.origin else {
            return sender_now;
        };
        // The sender's clock runs (1 + ppm/1e6) times as fast as ours: a second of its
        // time is 1 / (1 + ppm/1e6) seconds of ours.
        let scale = 1.0 / (1.0 + self.params.clock_drift_ppm * 1e-6);
        if sender_now >= origin {
            origin + scaled(sender_now.duration_since(origin), scale)
        } else {
            origin
                .checked_sub(scaled(origin.duration_since(sender_now), scale))
                .unwrap_or(sender_now)
        }
    }

    /// Sends `packet` at `now` (the sender's clock) and returns its fate.
    pub fn send(&mut self, now: Instant, packet: P) -> Fate {
        self.stats.sent += 1;
        if self.origin.is_none() {
            self.origin = Some(now);
        }
        if let Some(last) = self.last_send {
            if now > last {
                self.interval = now - last;
            }
        }
        self.last_send = Some(now);
        // Draw every random number in the same order whatever the outcome, so that
        // changing one probability does not reshuffle the other decisions.
        let lost = self.chance(self.params.loss);
        let held = self.chance(self.params.reorder);
        let hold_factor = self.rng.gen_range(1.0..3.0);
        let duplicated = self.chance(self.params.duplicate);
        let delay = self.draw_delay();
        let copy_delay = self.draw_delay();
        if lost {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let sent_at = self.receiver_time(now);
        let mut first = delay;
        if held {
            self.stats.held_back += 1;
            first += scaled(self.interval, hold_factor);
        }
        let arrival = sent_at + first;
        let duplicate = duplicated.then(|| sent_at + copy_delay);
        if let Some(at) = duplicate {
            self.stats.duplicated += 1;
            self.schedule(at, packet.clone());
        }
        self.schedule(arrival, packet);
        Fate::Delivered { arrival, duplicate }
    }

    /// Every packet that has arrived by `now` (receiver clock), in arrival order, with
    /// its arrival time.
    pub fn poll_arrivals(&mut self, now: Instant) -> Vec<(Instant, P)> {
        let mut arrived = Vec::new();
        while self.queue.peek().is_some_and(|Reverse(p)| p.arrival <= now) {
            if let Some(Reverse(p)) = self.queue.pop() {
                arrived.push((p.arrival, p.packet));
            }
        }
        self.stats.delivered += arrived.len() as u64;
        arrived
    }

    fn schedule(&mut self, arrival: Instant, packet: P) {
        self.order += 1;
        self.queue.push(Reverse(InFlight {
            arrival,
            order: self.order,
            packet,
        }));
    }

    fn chance(&mut self, probability: f64) -> bool {
        let draw: f64 = self.rng.gen();
        draw < probability.clamp(0.0, 1.0)
    }

    /// Base delay plus one draw of the random spread.
    fn draw_delay(&mut self) -> Duration {
        let draw: f64 = self.rng.gen();
        let jitter = self.params.jitter_ms.max(0.0);
        let extra = match self.params.spread {
            Spread::Uniform => draw * jitter,
            Spread::Pareto => {
                // Inverse CDF of a Pareto with scale 1, shifted to start at zero.
                let tail = (1.0 - draw)
                    .max(f64::MIN_POSITIVE)
                    .powf(-1.0 / PARETO_SHAPE)
                    - 1.0;
                (tail * jitter).min(PARETO_CAP * jitter)
            }
            Spread::Normal => {
                // Box–Muller from two uniform draws.
                let other: f64 = self.rng.gen();
                let z = (-2.0 * (1.0 - draw).max(f64::MIN_POSITIVE).ln()).sqrt()
                    * (2.0 * std::f64::consts::PI * other).cos();
                let sd = self.params.jitter_sd_ms.max(0.0);
                (jitter + z.min(5.0) * sd).max(0.0)
            }
        };
        millis(self.params.base_delay_ms.max(0.0) + extra)
    }
}

/// `d` times `factor` (non-negative), to the nanosecond.
fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::from_nanos((d.as_nanos() as f64 * factor.max(0.0)) as u64)
}

fn millis(ms: f64) -> Duration {
    Duration::from_nanos((ms * 1e6) as u64)
}
