//! Mixer throughput: how many members one core can mix at 20 ms ticks.
//!
//! Run with `cargo bench --bench mixer`. Uses only std (no criterion): each
//! case runs ticks for about two seconds of wall time and prints one table
//! row. Rooms of 10, 100 and 1,000 members, with everyone contributing
//! ("all talk") or 3 speakers and the rest listening ("3 speakers"). The
//! "mix + G.711" rows add a µ-law decode of every member's incoming frame
//! and a µ-law encode of every member's outgoing frame, a conservative
//! figure: listeners on one codec can share a single encode.

// A benchmark must read the clock; the sans-IO rule is for the library.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use sotto::media::g711::Law;
use sotto::mixer::Mixer;

/// 20 ms at 8 kHz.
const FRAME: usize = 160;
/// Ticks per second at 20 ms.
const TICKS_PER_SECOND: f64 = 50.0;
/// Wall time per case.
const RUN_TIME: Duration = Duration::from_secs(2);
/// Speakers in the "3 speakers" scenario (architecture §3: K = 3).
const SPEAKERS: usize = 3;

#[derive(Clone, Copy)]
enum Scenario {
    AllTalk,
    ThreeSpeakers,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::AllTalk => "all talk",
            Scenario::ThreeSpeakers => "3 speakers",
        }
    }

    fn speakers(self, members: usize) -> usize {
        match self {
            Scenario::AllTalk => members,
            Scenario::ThreeSpeakers => SPEAKERS.min(members),
        }
    }
}

/// One room's buffers, allocated before timing starts.
struct Room {
    /// Each member's decoded incoming frame.
    pcm_in: Vec<Vec<i16>>,
    /// Each member's incoming G.711 payload.
    payload_in: Vec<Vec<u8>>,
    /// Each member's outgoing frame.
    pcm_out: Vec<Vec<i16>>,
    /// Each member's outgoing G.711 payload.
    payload_out: Vec<Vec<u8>>,
    /// The shared full mix for listeners.
    full: Vec<i16>,
    mixer: Mixer,
}

impl Room {
    fn new(members: usize) -> Self {
        // Speech-like levels from a simple generator, different per member.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as i32 % 8000) as i16
        };
        let pcm_in: Vec<Vec<i16>> = (0..members)
            .map(|_| (0..FRAME).map(|_| next()).collect())
            .collect();
        let payload_in = pcm_in
            .iter()
            .map(|pcm| {
                let mut payload = vec![0u8; FRAME];
                Law::Ulaw.encode(pcm, &mut payload);
                payload
            })
            .collect();
        Self {
            pcm_in,
            payload_in,
            pcm_out: vec![vec![0; FRAME]; members],
            payload_out: vec![vec![0; FRAME]; members],
            full: vec![0; FRAME],
            mixer: Mixer::new(FRAME),
        }
    }

    /// One tick: (decode), mix, (encode).
    fn tick(&mut self, speakers: usize, codec: bool) {
        if codec {
            for (payload, pcm) in self.payload_in.iter().zip(self.pcm_in.iter_mut()) {
                Law::Ulaw.decode(black_box(payload), pcm);
            }
        }
        self.mixer.clear();
        for frame in &self.pcm_in[..speakers] {
            self.mixer.add(black_box(frame));
        }
        for (own, out) in self.pcm_in[..speakers]
            .iter()
            .zip(self.pcm_out[..speakers].iter_mut())
        {
            self.mixer.minus_own(own, out);
        }
        let listeners = self.pcm_in.len() - speakers;
        if listeners > 0 {
            self.mixer.full_mix(&mut self.full);
        }
        if codec {
            for (pcm, payload) in self.pcm_out[..speakers]
                .iter()
                .zip(self.payload_out[..speakers].iter_mut())
            {
                Law::Ulaw.encode(pcm, payload);
            }
            for payload in &mut self.payload_out[speakers..] {
                Law::Ulaw.encode(&self.full, payload);
            }
        }
        black_box(&self.pcm_out);
        black_box(&self.payload_out);
        black_box(&self.full);
    }
}

/// Runs ticks for `RUN_TIME` and returns nanoseconds per member per tick.
fn measure(members: usize, scenario: Scenario, codec: bool) -> f64 {
    let mut room = Room::new(members);
    let speakers = scenario.speakers(members);
    // Warm up caches and branch predictors.
    for _ in 0..100 {
        room.tick(speakers, codec);
    }
    // Check the clock every batch only, so reading it costs nothing.
    let batch = (20_000 / members).max(1);
    let start = Instant::now();
    let mut ticks = 0u64;
    while start.elapsed() < RUN_TIME {
        for _ in 0..batch {
            room.tick(speakers, codec);
        }
        ticks += batch as u64;
    }
    let elapsed = start.elapsed();
    elapsed.as_nanos() as f64 / ticks as f64 / members as f64
}

fn main() {
    println!(
        "{:<12} {:>7} {:<11} {:>18} {:>22} {:>20}",
        "work",
        "members",
        "scenario",
        "ns/member/tick",
        "µs CPU/member-second",
        "members/core @20ms"
    );
    for codec in [false, true] {
        for members in [10usize, 100, 1000] {
            for scenario in [Scenario::AllTalk, Scenario::ThreeSpeakers] {
                let ns = measure(members, scenario, codec);
                let us_per_member_second = ns * TICKS_PER_SECOND / 1000.0;
                let per_core = 20_000_000.0 / ns;
                println!(
                    "{:<12} {:>7} {:<11} {:>18.1} {:>22.2} {:>20.0}",
                    if codec { "mix + G.711" } else { "mix" },
                    members,
                    scenario.name(),
                    ns,
                    us_per_member_second,
                    per_core
                );
            }
        }
    }
}
