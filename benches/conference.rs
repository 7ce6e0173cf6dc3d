//! End-to-end media cost per member: decode → playout → speaker selection → mix →
//! resample → encode (own and shared) → RTP packetise, through one conference shard,
//! in process (no sockets, no SRTP).
//!
//! Run with `cargo bench --bench conference`. For each codec, rooms of 10, 100 and
//! 1,000 members where 3 members talk (a speech-like voiced signal) and everyone else
//! sends background noise at about -60 dBov (below the noise gate, as a quiet office
//! line does): every member's packets are decoded, as the bridge must to notice a new
//! talker. The "DTX listeners" rows have the listeners muted with Opus DTX on (what
//! our `usedtx=1` asks for), so they send a packet every 400 ms. Prints the shard thread's CPU time per member-second (median of the timed
//! seconds), and the encoder runs per tick.
//!
//! Only std and the crate; input packets are built before timing starts.

// A benchmark must read the clock; the sans-IO rule is for the library.
#![allow(clippy::disallowed_methods)]

use sotto::conference::{Conference, ConferenceSettings, MediaParams, RtpSeed};
use sotto::config::Codec;
use sotto::media::codec::{Encoder, Format, MAX_PAYLOAD};
use sotto::media::opus::{OpusEncoder, DTX_MAX_BYTES};
use sotto::media::rtp::RtpSender;
use sotto::redact::CallToken;
use sotto::room::prompts::Prompts;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(20);
/// Untimed ticks first: join tones finish, playout buffers settle, speakers are chosen.
const WARM_TICKS: usize = 50;
/// Timed seconds (50 ticks each).
const SECONDS: usize = 4;
const SPEAKERS: usize = 3;

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID: nanoseconds, unlike getrusage's
/// scheduler ticks).
fn cpu_time() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// A speech-like voiced signal (170 Hz ± 50 Hz with harmonics, syllabic envelope).
fn voiced(rate: u32, start: usize, n: usize, seed: f64) -> Vec<i16> {
    (start..start + n)
        .map(|k| {
            let t = k as f64 / rate as f64;
            let pitch = 150.0 + 30.0 * seed;
            let mut value = 0.0;
            let mut h = 1.0;
            while pitch * h < f64::from(rate) / 2.5 && h < 20.0 {
                value += (2.0 * std::f64::consts::PI * pitch * h * t).sin() / h;
                h += 1.0;
            }
            let envelope =
                (0.55 + 0.45 * (2.0 * std::f64::consts::PI * (3.0 + seed) * t).sin()).powi(2);
            (6000.0 * envelope * value) as i16
        })
        .collect()
}

/// Background noise at about -60 dBov (a small xorshift).
fn noise(n: usize, state: &mut u64) -> Vec<i16> {
    (0..n)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            ((*state >> 40) as i64 % 57 - 28) as i16
        })
        .collect()
}

struct Case {
    name: &'static str,
    codec: Codec,
    fmtp: Option<&'static str>,
    payload_type: u8,
    /// Listeners are muted and use Opus DTX (as our fmtp's `usedtx=1` asks): frames
    /// of at most 2 bytes are not sent.
    dtx: bool,
    /// Every packet carries an RFC 6464 audio level (ID 1): -20 dBov for the talkers,
    /// -66 dBov for the others.
    levels: bool,
}

/// Payloads for `ticks` frames: one sequence per speaker, one shared by the listeners.
fn payloads(format: Format, ticks: usize, dtx: bool) -> (Vec<Vec<Vec<u8>>>, Vec<Vec<u8>>) {
    let n = format.frame_samples();
    let mut buf = [0u8; MAX_PAYLOAD];
    let speakers = (0..SPEAKERS)
        .map(|s| {
            let mut enc = Encoder::new(format).expect("encoder");
            (0..ticks)
                .map(|t| {
                    let pcm = voiced(format.rate, t * n, n, s as f64);
                    let len = enc.encode(&pcm, &mut buf).expect("encode");
                    buf[..len].to_vec()
                })
                .collect()
        })
        .collect();
    let mut enc = if dtx {
        let mut e = OpusEncoder::new(format.rate, format.bitrate, format.fec).expect("opus");
        e.set_dtx(true).expect("dtx");
        Encoder::Opus(Box::new(e))
    } else {
        Encoder::new(format).expect("encoder")
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let quiet = (0..ticks)
        .map(|_| {
            // DTX listeners are muted phones (digital silence, which libopus's DTX
            // recognises); the others send background noise.
            let pcm = if dtx {
                vec![0; n]
            } else {
                noise(n, &mut state)
            };
            let len = enc.encode(&pcm, &mut buf).expect("encode");
            buf[..len].to_vec()
        })
        .collect();
    (speakers, quiet)
}

fn run(case: &Case, members: usize) -> (f64, f64, u64) {
    let t0 = Instant::now();
    let format = Format::new(case.codec, case.fmtp);
    let ticks = WARM_TICKS + SECONDS * 50;
    let (speaker_payloads, quiet) = payloads(format, ticks, case.dtx);
    let prompts = Arc::new(Prompts::from_fn(|_| vec![0; 160]));
    let mut conf = Conference::new(ConferenceSettings::default(), prompts);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut slots = Vec::new();
    let mut senders = Vec::new();
    for m in 0..members {
        let call = CallToken::from_raw(m as u64 + 1);
        let params = MediaParams {
            inband_dtmf: sotto::conference::InbandDtmf::Off,
            rfc4733_keys: true,
            codec: case.codec,
            fmtp: case.fmtp.map(str::to_string),
            audio_level_id: case.levels.then_some(1),
            payload_type: case.payload_type,
            telephone_event: Some(101),
            remote: Some(SocketAddr::new(ip, 20_000 + m as u16)),
            send: true,
            receive: true,
            srtp: None,
        };
        let seed = RtpSeed {
            ssrc: 1000 + m as u32,
            sequence: 1,
            timestamp: 0,
        };
        slots.push(conf.add_member(t0, call, params, seed).expect("member"));
        conf.join(t0, call, 1);
        senders.push(RtpSender::new(77 + m as u32, 1, 0, case.payload_type));
    }
    // Every member's packets, built before timing.
    let mut packets: Vec<Vec<(usize, Vec<u8>)>> =
        (0..ticks).map(|_| Vec::with_capacity(members)).collect();
    let mut out = vec![0u8; 12 + MAX_PAYLOAD];
    for (t, tick_packets) in packets.iter_mut().enumerate() {
        for (m, sender) in senders.iter_mut().enumerate() {
            let payload = if m < SPEAKERS {
                &speaker_payloads[m][t]
            } else {
                &quiet[t]
            };
            if payload.len() <= DTX_MAX_BYTES {
                // A DTX frame: not sent; the timestamp moves on.
                sender.skip(format.timestamp_step());
                continue;
            }
            let n = sender
                .write(payload, format.timestamp_step(), &mut out)
                .expect("rtp");
            let mut packet = out[..n].to_vec();
            if case.levels {
                // One-byte header extension (RFC 8285) with the level as element 1.
                let level: u8 = if m < SPEAKERS { 0x80 | 20 } else { 66 };
                packet[0] |= 0x10;
                packet.splice(12..12, [0xBE, 0xDE, 0, 1, 0x10, level, 0, 0]);
            }
            tick_packets.push((m, packet));
        }
    }
    let mut per_second = Vec::new();
    let mut cpu_start = cpu_time();
    let mut runs_start = 0;
    let mut runs_per_tick = 0;
    for (t, tick_packets) in packets.iter_mut().enumerate() {
        if t == WARM_TICKS {
            cpu_start = cpu_time();
            runs_start = conf.counters().encoder_runs;
        }
        let now = t0 + TICK * (t as u32 + 1);
        for (m, pkt) in tick_packets.iter_mut() {
            let source = SocketAddr::new(ip, 20_000 + *m as u16);
            conf.handle_rtp(now, slots[*m], source, pkt);
        }
        conf.handle_tick(now);
        conf.drain_transmits(|_, dest, bytes| {
            black_box((dest, bytes));
        });
        if t >= WARM_TICKS && (t - WARM_TICKS + 1).is_multiple_of(50) {
            let cpu = cpu_time();
            per_second.push((cpu - cpu_start).as_secs_f64() * 1e6 / members as f64);
            cpu_start = cpu;
        }
        if t + 1 == ticks {
            runs_per_tick = (conf.counters().encoder_runs - runs_start) / (SECONDS as u64 * 50);
        }
    }
    assert_eq!(
        conf.speakers(1),
        SPEAKERS.min(members),
        "{}: speakers",
        case.name
    );
    per_second.sort_by(f64::total_cmp);
    (
        per_second[per_second.len() / 2],
        per_second[0],
        runs_per_tick,
    )
}

fn main() {
    let cases = [
        Case {
            name: "G.711 (PCMU)",
            codec: Codec::Pcmu,
            fmtp: None,
            payload_type: 0,
            dtx: false,
            levels: false,
        },
        Case {
            name: "G.722",
            codec: Codec::G722,
            fmtp: None,
            payload_type: 9,
            dtx: false,
            levels: false,
        },
        Case {
            name: "Opus 16 kHz",
            codec: Codec::Opus,
            fmtp: Some("maxplaybackrate=16000;useinbandfec=1"),
            payload_type: 111,
            dtx: false,
            levels: false,
        },
        Case {
            name: "Opus 16 kHz, DTX listeners",
            codec: Codec::Opus,
            fmtp: Some("maxplaybackrate=16000;useinbandfec=1"),
            payload_type: 111,
            dtx: true,
            levels: false,
        },
        Case {
            name: "Opus 48 kHz",
            codec: Codec::Opus,
            fmtp: Some("useinbandfec=1"),
            payload_type: 111,
            dtx: false,
            levels: false,
        },
        Case {
            name: "Opus 48 kHz, DTX listeners",
            codec: Codec::Opus,
            fmtp: Some("useinbandfec=1"),
            payload_type: 111,
            dtx: true,
            levels: false,
        },
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .flat_map(|c| {
            let with_levels = (c.name == "G.722" || c.name == "Opus 48 kHz").then(|| Case {
                name: if c.name == "G.722" {
                    "G.722, RFC 6464 levels"
                } else {
                    "Opus 48 kHz, RFC 6464 levels"
                },
                levels: true,
                ..c
            });
            std::iter::once(c).chain(with_levels)
        })
        .collect();
    let sizes: Vec<usize> = match std::env::var("SOTTO_BENCH_SIZES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![10, 100, 1000],
    };
    println!(
        "| codec | members | µs CPU per member-second (median) | best | encoder runs per tick |"
    );
    println!("|---|---:|---:|---:|---:|");
    let only = std::env::var("SOTTO_BENCH_CODECS").unwrap_or_default();
    for case in cases
        .iter()
        .filter(|c| only.is_empty() || c.name.contains(only.as_str()))
    {
        for &members in &sizes {
            let (median, best, runs) = run(case, members);
            println!(
                "| {} | {members} | {median:.1} | {best:.1} | {runs} |",
                case.name
            );
        }
    }
}
