//! Shard scenarios in virtual time: real RTP in, real RTP out.

use super::member::MAX_PACKET;
use super::*;
use crate::config::Codec;
use crate::media::g711::{ulaw_decode, ulaw_encode};
use crate::media::rtp::{self, RtpSender};
use crate::media::srtp::SrtpContext;
use crate::room::prompts::Prompt;
use std::f64::consts::PI;

pub(super) const TICK: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: usize = 160;

/// Rooms 0-15 without join and leave tones (so that mixes can be measured right after
/// joins); the controls' scenarios set their own.
pub(super) fn settings() -> ConferenceSettings {
    let quiet = RoomOptions {
        join_leave_tones: false,
        ..RoomOptions::default()
    };
    ConferenceSettings {
        rtp_timeout: Duration::from_secs(2),
        room_options: Arc::from(vec![quiet; 16]),
        ..ConferenceSettings::default()
    }
}

/// Prompts of constant, recognisable levels (µ-law exact values).
pub(super) fn prompts() -> Arc<Prompts> {
    Arc::new(Prompts::from_fn(|p| {
        let level = match p {
            Prompt::EnterPin => 3004,
            Prompt::WrongPin => 2492,
            Prompt::Goodbye => 1980,
            Prompt::FirstParticipant => 1468,
            Prompt::JoinTone => 988,
            _ => 732,
        };
        vec![level; 480]
    }))
}

pub(super) fn addr(n: u8) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)),
        40_000,
    )
}

pub(super) fn media(n: u8) -> MediaParams {
    MediaParams {
        codec: Codec::Pcmu,
        fmtp: None,
        audio_level_id: None,
        payload_type: 0,
        telephone_event: Some(101),
        remote: Some(addr(n)),
        send: true,
        receive: true,
        srtp: None,
        inband_dtmf: InbandDtmf::Off,
        rfc4733_keys: true,
    }
}

pub(super) fn seed(n: u8) -> RtpSeed {
    RtpSeed {
        ssrc: 1000 + n as u32,
        sequence: 100,
        timestamp: 5000,
    }
}

/// A phone's outgoing stream: constant level frames and RFC 4733 digits.
pub(super) struct Tx {
    sender: RtpSender,
    ts: u32,
}

impl Tx {
    pub(super) fn new(n: u8) -> Tx {
        Tx {
            sender: RtpSender::new(77 + n as u32, 1, 8000, 0),
            ts: 8000,
        }
    }

    pub(super) fn audio(&mut self, level: i16) -> Vec<u8> {
        self.frame(&[ulaw_encode(level); FRAME_SAMPLES])
    }

    /// One packet of µ-law payload.
    pub(super) fn frame(&mut self, payload: &[u8; FRAME_SAMPLES]) -> Vec<u8> {
        let mut out = [0u8; 256];
        self.sender.set_payload_type(0);
        let n = self
            .sender
            .write(payload, FRAME_SAMPLES as u32, &mut out)
            .unwrap();
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        out[..n].to_vec()
    }

    pub(super) fn digit(&mut self, event: u8) -> Vec<Vec<u8>> {
        // Start packet, then the end packet three times, one event timestamp (RFC 4733 §2.5.1.4).
        let mut out = Vec::new();
        self.sender.set_payload_type(101);
        for (i, end) in [false, true, true, true].into_iter().enumerate() {
            let duration = (160 * (i as u16 + 1)).to_be_bytes();
            let payload = [
                event,
                if end { 0x80 | 10 } else { 10 },
                duration[0],
                duration[1],
            ];
            let mut buf = [0u8; 64];
            let n = self.sender.write(&payload, 0, &mut buf).unwrap();
            out.push(buf[..n].to_vec());
        }
        self.sender.skip(FRAME_SAMPLES as u32);
        out
    }
}

pub(super) fn sent(conf: &mut Conference) -> HashMap<SocketAddr, Vec<i16>> {
    let mut out = HashMap::new();
    conf.drain_transmits(|_, dest, bytes| {
        let (h, payload) = rtp::parse(bytes).unwrap();
        assert_eq!(h.payload_type, 0);
        out.insert(
            dest,
            payload
                .iter()
                .map(|&c| ulaw_decode(c))
                .collect::<Vec<i16>>(),
        );
    });
    out
}

pub(super) fn level(frame: &[i16]) -> i16 {
    assert!(
        frame.iter().all(|&s| s == frame[0]),
        "frame not constant: {:?}",
        &frame[..4]
    );
    frame[0]
}

#[test]
fn members_hear_the_others_never_themselves_and_listeners_share_the_mix() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let levels = [
        ulaw_decode(ulaw_encode(1000)),
        ulaw_decode(ulaw_encode(2000)),
        ulaw_decode(ulaw_encode(4000)),
    ];
    let calls: Vec<CallToken> = (1..=4).map(|n| CallToken::from_raw(n as u64)).collect();
    let slots: Vec<usize> = (0..4)
        .map(|i| {
            conf.add_member(t0, calls[i], media(i as u8 + 1), seed(i as u8))
                .unwrap()
        })
        .collect();
    for c in &calls {
        conf.join(t0, *c, 7);
    }
    assert_eq!(conf.room_size(7), 4);
    let mut txs: Vec<Tx> = (0..3).map(Tx::new).collect();
    let mut now = t0;
    let mut last = HashMap::new();
    // Long enough for the join tone and "first participant" to finish and the
    // jitter buffers to fill.
    for _ in 0..60 {
        now += TICK;
        for i in 0..3 {
            let pkt = txs[i].audio(levels[i]);
            conf.handle_rtp(now, slots[i], addr(i as u8 + 1), &mut pkt.clone());
        }
        conf.handle_tick(now);
        last = sent(&mut conf);
    }
    let heard = |i: u8| level(&last[&addr(i)]);
    let q = |x: i32| ulaw_decode(ulaw_encode(x as i16)) as i32;
    let (a, b, c) = (levels[0] as i32, levels[1] as i32, levels[2] as i32);
    assert_eq!(heard(1) as i32, q(b + c));
    assert_eq!(heard(2) as i32, q(a + c));
    assert_eq!(heard(3) as i32, q(a + b));
    // The silent fourth member is a listener: the full mix.
    assert_eq!(heard(4) as i32, q(a + b + c));
}

/// 20 ms µ-law frames of the DTMF keys in `keys` (70 ms tone, 70 ms pause, each
/// tone at about -10 dBm0), with low noise, after `lead` silent frames.
pub(super) fn tone_frames(keys: &str, lead: usize) -> Vec<[u8; FRAME_SAMPLES]> {
    let freqs = |k: char| -> (f64, f64) {
        let rows = [697.0, 770.0, 852.0, 941.0];
        let cols = [1209.0, 1336.0, 1477.0, 1633.0];
        let (r, c) = match k {
            '1' => (0, 0),
            '2' => (0, 1),
            '3' => (0, 2),
            '4' => (1, 0),
            '5' => (1, 1),
            '6' => (1, 2),
            '7' => (2, 0),
            '8' => (2, 1),
            '9' => (2, 2),
            '*' => (3, 0),
            '0' => (3, 1),
            _ => (3, 2),
        };
        (rows[r], cols[c])
    };
    let mut pcm = vec![0i16; lead * FRAME_SAMPLES];
    let mut noise = 0x2545_f491u32;
    for k in keys.chars() {
        let (f1, f2) = freqs(k);
        for n in 0..1120 {
            let t = n as f64 / 8000.0;
            let on = n < 560;
            let tone = if on {
                5000.0 * ((2.0 * PI * f1 * t).sin() + (2.0 * PI * f2 * t).sin())
            } else {
                0.0
            };
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let hiss = f64::from((noise >> 24) as u8) - 128.0;
            pcm.push((tone + hiss) as i16);
        }
    }
    pcm.resize(
        pcm.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES + 10 * FRAME_SAMPLES,
        0,
    );
    pcm.chunks(FRAME_SAMPLES)
        .map(|c| {
            let mut f = [0u8; FRAME_SAMPLES];
            for (o, &x) in f.iter_mut().zip(c) {
                *o = ulaw_encode(x);
            }
            f
        })
        .collect()
}

/// Plays `frames` as RTP into `slot` from `from`, one per tick, with the ticks.
fn play(conf: &mut Conference, slot: usize, from: u8, frames: &[[u8; FRAME_SAMPLES]], t0: Instant) {
    let mut sender = RtpSender::new(4242, 1, 8000, 0);
    let mut now = t0;
    for f in frames {
        now += TICK;
        let mut buf = [0u8; 256];
        let n = sender.write(f, FRAME_SAMPLES as u32, &mut buf).unwrap();
        conf.handle_rtp(now, slot, addr(from), &mut buf[..n]);
        conf.handle_tick(now);
        conf.drain_transmits(|_, _, _| {});
    }
}

fn pin_attempts(conf: &mut Conference) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| conf.poll_event())
        .filter_map(|e| match e {
            ConferenceEvent::PinEntered { attempt, .. } => Some(attempt.0.to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pin_typed_as_tones_is_heard_where_the_trunk_says_so() {
    let t0 = Instant::now();
    let frames = tone_frames("31415926#", 10);
    // Keys as tones: the PIN is read from the audio.
    let mut conf = Conference::new(settings(), prompts());
    let slot = conf
        .add_member(
            t0,
            CallToken::from_raw(21),
            MediaParams {
                inband_dtmf: InbandDtmf::On,
                ..media(1)
            },
            seed(1),
        )
        .unwrap();
    play(&mut conf, slot, 1, &frames, t0);
    assert_eq!(pin_attempts(&mut conf), [b"31415926".to_vec()]);
    assert_eq!(conf.counters().inband_digits, 9);
    // Without: the same audio types nothing.
    let mut conf = Conference::new(settings(), prompts());
    let slot = conf
        .add_member(t0, CallToken::from_raw(22), media(1), seed(1))
        .unwrap();
    play(&mut conf, slot, 1, &frames, t0);
    assert!(pin_attempts(&mut conf).is_empty());
    assert_eq!(conf.counters().digits, 0);
}

#[test]
fn a_key_out_of_band_stops_the_tone_listener_where_it_was_only_a_fallback() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let call = CallToken::from_raw(23);
    let slot = conf
        .add_member(
            t0,
            call,
            MediaParams {
                inband_dtmf: InbandDtmf::UntilOutOfBand,
                ..media(1)
            },
            seed(1),
        )
        .unwrap();
    // One key by INFO: from then on the tones in the audio are not keys.
    conf.handle_digit(t0, call, Digit::from_event(7).unwrap());
    play(&mut conf, slot, 1, &tone_frames("123#", 5), t0);
    conf.handle_digit(t0 + TICK * 100, call, Digit::from_event(11).unwrap());
    assert_eq!(pin_attempts(&mut conf), [b"7".to_vec()]);
    assert_eq!(conf.counters().inband_digits, 0);
}

#[test]
fn rfc_4733_events_are_ignored_where_the_trunk_says_keys_come_otherwise() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let slot = conf
        .add_member(
            t0,
            CallToken::from_raw(24),
            MediaParams {
                rfc4733_keys: false,
                ..media(1)
            },
            seed(1),
        )
        .unwrap();
    let mut tx = Tx::new(1);
    let mut now = t0;
    for ev in [1u8, 11] {
        for pkt in tx.digit(ev) {
            conf.handle_rtp(now, slot, addr(1), &mut pkt.clone());
        }
        now += TICK;
        conf.handle_tick(now);
    }
    assert!(pin_attempts(&mut conf).is_empty());
    assert_eq!(conf.counters().digits, 0);
}

#[test]
fn a_reinvite_to_a_new_address_moves_the_latch_and_the_audio_keeps_flowing() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let (a, b) = (CallToken::from_raw(31), CallToken::from_raw(32));
    let sa = conf.add_member(t0, a, media(1), seed(1)).unwrap();
    conf.add_member(t0, b, media(2), seed(2)).unwrap();
    conf.join(t0, a, 0);
    conf.join(t0, b, 0);
    let level = ulaw_decode(ulaw_encode(4000));
    let mut tx = Tx::new(1);
    let mut now = t0;
    // Heard by b: packets of a's level; sent to: where a's packets go.
    let mut run = |conf: &mut Conference, now: &mut Instant, from: &[u8], ticks: usize| {
        let (mut heard, mut to_a) = (0, Vec::new());
        for _ in 0..ticks {
            *now += TICK;
            for &f in from {
                conf.handle_rtp(*now, sa, addr(f), &mut tx.audio(4000));
            }
            conf.handle_tick(*now);
            conf.drain_transmits(|_, dest, bytes| {
                if dest == addr(2) {
                    if let Ok((_, p)) = rtp::parse(bytes) {
                        if p.iter().all(|&c| ulaw_decode(c) == level) {
                            heard += 1;
                        }
                    }
                } else if dest != addr(2) {
                    to_a.push(dest);
                }
            });
        }
        (heard, to_a)
    };
    let (heard, _) = run(&mut conf, &mut now, &[1], 30);
    assert!(heard > 15, "b hears a before the move ({heard})");
    // a's phone moves to a new port (transfer, unhold elsewhere): re-INVITE.
    assert!(conf.update_media(now, a, media(7)));
    // Stragglers from the old port arrive first: they must not win the latch.
    let (_, _) = run(&mut conf, &mut now, &[1], 2);
    let (heard, to_a) = run(&mut conf, &mut now, &[7], 40);
    assert!(heard > 25, "b stopped hearing a after the move ({heard})");
    assert!(
        to_a.iter().skip(5).all(|&d| d == addr(7)),
        "a's audio goes to the old port"
    );
    // The old port is now foreign.
    let before = conf.counters().foreign_source;
    run(&mut conf, &mut now, &[1], 1);
    assert_eq!(conf.counters().foreign_source, before + 1);
}

#[test]
fn keys_from_sip_info_type_the_pin_like_rfc_4733_events() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let call = CallToken::from_raw(11);
    conf.add_member(t0, call, media(1), seed(1)).unwrap();
    let mut now = t0;
    for ev in [4u8, 2, 11] {
        now += TICK;
        conf.handle_digit(now, call, Digit::from_event(ev).unwrap());
        conf.handle_tick(now);
    }
    // An unknown call's key is ignored.
    conf.handle_digit(now, CallToken::from_raw(99), Digit::from_event(1).unwrap());
    let Some(ConferenceEvent::PinEntered { call: c, attempt }) = conf.poll_event() else {
        panic!("no PIN attempt");
    };
    assert_eq!(c, call);
    assert_eq!(&attempt.0[..], b"42");
    assert_eq!(conf.counters().digits, 3);
}

#[test]
fn ivr_prompt_digits_and_pin_result() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let call = CallToken::from_raw(9);
    let slot = conf.add_member(t0, call, media(1), seed(1)).unwrap();
    conf.handle_tick(t0 + TICK);
    // The PIN prompt plays from the first tick.
    assert_eq!(
        level(&sent(&mut conf)[&addr(1)]),
        ulaw_decode(ulaw_encode(3004))
    );
    let mut tx = Tx::new(1);
    let mut now = t0 + TICK;
    for ev in [1u8, 2, 11] {
        for pkt in tx.digit(ev) {
            conf.handle_rtp(now, slot, addr(1), &mut pkt.clone());
        }
        now += TICK;
        conf.handle_tick(now);
    }
    // The first packet latched the caller: signalling hears of it once.
    let Some(ConferenceEvent::MediaVerified { call: c }) = conf.poll_event() else {
        panic!("no media verification");
    };
    assert_eq!(c, call);
    let Some(ConferenceEvent::PinEntered { call: c, attempt }) = conf.poll_event() else {
        panic!("no PIN attempt");
    };
    assert_eq!(c, call);
    assert!(conf.poll_event().is_none(), "media verified once");
    assert_eq!(&attempt.0[..], b"12");
    assert_eq!(conf.counters().digits, 3);
    // Barge-in stopped the prompt: silence now.
    assert_eq!(level(&sent(&mut conf)[&addr(1)]), 0);
    conf.handle_pin_result(now, call, false);
    now += TICK;
    conf.handle_tick(now);
    assert_eq!(
        level(&sent(&mut conf)[&addr(1)]),
        ulaw_decode(ulaw_encode(2492)),
        "wrong-PIN prompt"
    );
}

#[test]
fn foreign_packets_do_not_reach_the_mix_and_silence_times_out() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
    let sa = conf.add_member(t0, a, media(1), seed(1)).unwrap();
    let _sb = conf.add_member(t0, b, media(2), seed(2)).unwrap();
    conf.join(t0, a, 0);
    conf.join(t0, b, 0);
    let mut tx = Tx::new(1);
    let mut spoof = Tx::new(9);
    let mut now = t0;
    for _ in 0..40 {
        now += TICK;
        conf.handle_rtp(now, sa, addr(1), &mut tx.audio(0));
        // A spray from another address at a's port.
        conf.handle_rtp(now, sa, addr(99), &mut spoof.audio(8000));
        conf.handle_tick(now);
        let out = sent(&mut conf);
        assert_ne!(
            out.get(&addr(2)).map(|f| f[0]),
            Some(ulaw_decode(ulaw_encode(8000)))
        );
    }
    assert_eq!(conf.counters().foreign_source, 40);
    // b never sent anything: after rtp_timeout (2 s) it is reported, exactly once.
    let mut hangups = Vec::new();
    while let Some(ev) = conf.poll_event() {
        if let ConferenceEvent::Hangup { call, reason } = ev {
            hangups.push((call, reason));
        }
    }
    for _ in 0..100 {
        now += TICK;
        conf.handle_rtp(now, sa, addr(1), &mut tx.audio(0));
        conf.handle_tick(now);
        while let Some(ev) = conf.poll_event() {
            if let ConferenceEvent::Hangup { call, reason } = ev {
                hangups.push((call, reason));
            }
        }
    }
    assert_eq!(hangups, vec![(b, HangupReason::MediaTimeout)]);
    assert!(conf.remove(now, b).is_some());
    assert_eq!(conf.room_size(0), 1);
    assert!(conf.remove(now, a).is_some());
    assert_eq!(conf.rooms(), 0, "an empty room disappears");
}

#[test]
fn a_member_moves_between_shards_with_its_stream() {
    let t0 = Instant::now();
    let mut one = Conference::new(settings(), prompts());
    let mut two = Conference::new(settings(), prompts());
    let call = CallToken::from_raw(5);
    one.add_member(t0, call, media(1), seed(1)).unwrap();
    one.handle_tick(t0 + TICK);
    let mut seq_before = 0;
    one.drain_transmits(|_, _, b| seq_before = rtp::parse(b).unwrap().0.sequence);
    let (_, member) = one.take(t0, call).unwrap();
    assert_eq!(one.members(), 0);
    two.adopt(t0 + TICK, member, 3, Role::Member);
    assert_eq!(two.room_size(3), 1);
    two.handle_tick(t0 + TICK * 2);
    let mut seq_after = 0;
    let mut ssrc = 0;
    two.drain_transmits(|_, _, b| {
        let h = rtp::parse(b).unwrap().0;
        seq_after = h.sequence;
        ssrc = h.ssrc;
    });
    // Same RTP stream: the sequence continues and the SSRC stays.
    assert_eq!(seq_after, seq_before.wrapping_add(1));
    assert_eq!(ssrc, seed(1).ssrc);
}

#[test]
fn srtp_members_latch_only_on_authenticated_packets_and_count_the_rest() {
    use crate::media::srtp::{CryptoAttribute, KeyMaterial, Suite};
    let t0 = Instant::now();
    let mut rng = rand::rngs::OsRng;
    let suite = Suite::AesCm128HmacSha1_80;
    let phone_key = CryptoAttribute::parse(&format!(
        "1 AES_CM_128_HMAC_SHA1_80 inline:{}",
        KeyMaterial::generate(suite, &mut rng).to_sdes_inline()
    ))
    .unwrap();
    let bridge_key = CryptoAttribute::answer_to(&phone_key, &mut rng);
    let keys = SrtpKeys {
        remote: phone_key.clone(),
        local: bridge_key.clone(),
    };
    let mut conf = Conference::new(settings(), prompts());
    let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
    let sa = conf
        .add_member(
            t0,
            a,
            MediaParams {
                srtp: Some(keys),
                ..media(1)
            },
            seed(1),
        )
        .unwrap();
    conf.add_member(t0, b, media(2), seed(2)).unwrap();
    conf.join(t0, a, 0);
    conf.join(t0, b, 0);
    // The room took both in.
    let joined: Vec<_> = std::iter::from_fn(|| conf.poll_event()).collect();
    assert!(
        matches!(joined[..], [ConferenceEvent::Joined { call: x }, ConferenceEvent::Joined { call: y }] if x == a && y == b),
        "{joined:?}"
    );
    let mut phone_out = SrtpContext::outbound_for(&phone_key).unwrap();
    let mut phone_in = SrtpContext::inbound_for(&bridge_key).unwrap();
    let mut tx = Tx::new(1);
    let mut spoof = Tx::new(9);
    let level = ulaw_decode(ulaw_encode(4000));
    let protect = |ctx: &mut SrtpContext, pkt: Vec<u8>| {
        let mut buf = pkt.clone();
        buf.resize(pkt.len() + 16, 0);
        let n = ctx.protect_rtp(&mut buf, pkt.len()).unwrap();
        buf.truncate(n);
        buf
    };

    let mut now = t0;
    let mut heard_by_b = 0;
    let mut a_out = Vec::new();
    for i in 0..40 {
        now += TICK;
        let good = protect(&mut phone_out, tx.audio(level));
        // A forged packet from elsewhere, sent before the real one: with plain RTP it
        // would win the latch; with SRTP it never authenticates.
        conf.handle_rtp(now, sa, addr(99), &mut spoof.audio(8000));
        if i == 0 {
            // A forged packet verifies nothing at signalling.
            assert!(conf.poll_event().is_none());
        }
        conf.handle_rtp(now, sa, addr(1), &mut good.clone());
        if i == 0 {
            assert!(matches!(
                conf.poll_event(),
                Some(ConferenceEvent::MediaVerified { call }) if call == a
            ));
        }
        if i == 10 {
            // A replay and a tampered copy: both dropped.
            conf.handle_rtp(now, sa, addr(1), &mut good.clone());
            let mut bad = good.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            conf.handle_rtp(now, sa, addr(1), &mut bad);
        }
        conf.handle_tick(now);
        conf.drain_transmits(|_, dest, bytes| {
            if dest == addr(2) {
                if let Ok((_, payload)) = rtp::parse(bytes) {
                    if payload.iter().all(|&c| ulaw_decode(c) == level) {
                        heard_by_b += 1;
                    }
                }
            } else if dest == addr(1) {
                a_out.push(bytes.to_vec());
            }
        });
    }
    // 40 forged + 1 replay + 1 tampered.
    assert_eq!(conf.counters().srtp_rejected, 42);
    assert_eq!(
        conf.counters().foreign_source,
        0,
        "a forged packet reached the latch"
    );
    assert!(
        heard_by_b > 30,
        "the SRTP member's audio did not reach the room ({heard_by_b})"
    );
    // What the bridge sends to the SRTP member is SRTP the phone can open.
    assert!(a_out.len() >= 40);
    for pkt in &a_out {
        let mut buf = pkt.clone();
        let n = phone_in
            .unprotect_rtp(&mut buf, pkt.len())
            .expect("bridge output authenticates");
        assert_eq!(n + 10, pkt.len(), "AES-CM-80 adds a 10-byte tag");
    }
}

// ---- multi-codec rooms, speaker selection, shared encodes ----

use crate::media::codec::{Decoder, Encoder, Format};
use crate::media::playout::FrameDecoder;

/// A phone of any codec: encodes PCM frames at its rate into RTP.
struct CodecPhone {
    format: Format,
    pt: u8,
    encoder: Encoder,
    decoder: Decoder,
    sender: RtpSender,
    phase: f64,
    heard: Vec<i16>,
}

impl CodecPhone {
    fn new(n: u8, codec: Codec) -> CodecPhone {
        let format = Format::new(codec, None);
        let pt = match codec {
            Codec::Opus => 111,
            c => c.payload_type().unwrap(),
        };
        CodecPhone {
            format,
            pt,
            encoder: Encoder::new(format).unwrap(),
            decoder: Decoder::new(format).unwrap(),
            sender: RtpSender::new(500 + n as u32, 1, 0, pt),
            phase: 0.0,
            heard: Vec::new(),
        }
    }

    fn params(&self, n: u8) -> MediaParams {
        MediaParams {
            codec: self.format.codec,
            fmtp: None,
            payload_type: self.pt,
            telephone_event: Some(101),
            ..media(n)
        }
    }

    /// One 20 ms packet of a tone (`amplitude` 0 for digital silence).
    fn tone(&mut self, hz: f64, amplitude: f64) -> Vec<u8> {
        let n = self.format.frame_samples();
        let rate = self.format.rate as f64;
        let pcm: Vec<i16> = (0..n)
            .map(|i| {
                let t = self.phase + i as f64 / rate;
                (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect();
        self.phase += n as f64 / rate;
        let mut payload = [0u8; MAX_PAYLOAD];
        let len = self.encoder.encode(&pcm, &mut payload).unwrap();
        let mut out = [0u8; MAX_PACKET];
        let n = self
            .sender
            .write(&payload[..len], self.format.timestamp_step(), &mut out)
            .unwrap();
        out[..n].to_vec()
    }

    fn receive(&mut self, packet: &[u8]) {
        let (h, payload) = rtp::parse(packet).unwrap();
        assert_eq!(h.payload_type, self.pt);
        let mut out = Vec::with_capacity(MAX_FRAME);
        self.decoder.decode(payload, &mut out).unwrap();
        assert_eq!(out.len(), self.format.frame_samples(), "20 ms per packet");
        self.heard.extend_from_slice(&out);
    }
}

/// Share of the power of `x` at `hz` (one DFT bin, Goertzel), 0..1.
pub(super) fn share(x: &[i16], hz: f64, rate: u32) -> f64 {
    let n = x.len() as f64;
    let k = (n * hz / rate as f64).round();
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * k / n).cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for &v in x {
        let v = v as f64;
        energy += v * v;
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if energy == 0.0 {
        return 0.0;
    }
    ((s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / (n * energy)).min(1.0)
}

#[test]
fn g711_g722_and_opus_members_share_a_48_khz_room_and_hear_each_other() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let codecs = [Codec::Pcmu, Codec::G722, Codec::Opus];
    // Tones each codec carries well, on exact 1 s DFT bins.
    let tones = [500.0, 1300.0, 2300.0];
    let mut phones: Vec<CodecPhone> = (0..3)
        .map(|i| CodecPhone::new(i as u8 + 1, codecs[i]))
        .collect();
    let calls: Vec<CallToken> = (1..=3).map(CallToken::from_raw).collect();
    let mut slots = Vec::new();
    for i in 0..3 {
        let params = phones[i].params(i as u8 + 1);
        slots.push(
            conf.add_member(t0, calls[i], params, seed(i as u8))
                .unwrap(),
        );
        conf.join(t0, calls[i], 4);
    }
    assert_eq!(conf.room_rate(4), 48_000, "Opus makes the room fullband");
    let mut now = t0;
    for _ in 0..150 {
        now += TICK;
        for i in 0..3 {
            let mut pkt = phones[i].tone(tones[i], 6000.0);
            conf.handle_rtp(now, slots[i], addr(i as u8 + 1), &mut pkt);
        }
        conf.handle_tick(now);
        let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        conf.drain_transmits(|_, dest, bytes| out.push((dest, bytes.to_vec())));
        for (dest, bytes) in out {
            let i = (0..3).find(|&i| addr(i as u8 + 1) == dest).unwrap();
            phones[i].receive(&bytes);
        }
    }
    assert_eq!(conf.speakers(4), 3);
    for (i, phone) in phones.iter().enumerate() {
        let rate = phone.format.rate;
        // The last second.
        let last = &phone.heard[phone.heard.len() - rate as usize..];
        let others: f64 = (0..3)
            .filter(|&j| j != i)
            .map(|j| share(last, tones[j], rate))
            .sum();
        let own = share(last, tones[i], rate);
        assert!(
            others > 0.8,
            "{:?} member hears the others at {others:.2} of its power",
            codecs[i]
        );
        assert!(own < 0.01, "{:?} member hears itself ({own:.3})", codecs[i]);
        for j in (0..3).filter(|&j| j != i) {
            let s = share(last, tones[j], rate);
            assert!(
                s > 0.3,
                "{:?} hears {:?} only at {s:.2}",
                codecs[i],
                codecs[j]
            );
        }
    }
}

#[test]
fn encoder_runs_per_tick_are_bounded_by_speakers_and_formats_not_room_size() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let codecs = [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus];
    let mut phones = Vec::new();
    let mut slots = Vec::new();
    for n in 0..60u8 {
        let phone = CodecPhone::new(n, codecs[n as usize % 4]);
        let call = CallToken::from_raw(100 + n as u64);
        let mut params = phone.params(n);
        params.remote = Some(SocketAddr::new(addr(1).ip(), 20_000 + n as u16));
        slots.push(conf.add_member(t0, call, params, seed(n)).unwrap());
        conf.join(t0, call, 1);
        phones.push(phone);
    }
    // Five talk (more than max_speakers), the other 55 listen.
    let mut now = t0;
    let mut runs = Vec::new();
    for tick in 0..80 {
        now += TICK;
        for (i, phone) in phones.iter_mut().enumerate() {
            let amplitude = if i < 5 {
                3000.0 + 1000.0 * i as f64
            } else {
                0.0
            };
            let mut pkt = phone.tone(300.0 + 100.0 * i as f64, amplitude);
            let source = SocketAddr::new(addr(1).ip(), 20_000 + i as u16);
            conf.handle_rtp(now, slots[i], source, &mut pkt);
        }
        let before = conf.counters().encoder_runs;
        conf.handle_tick(now);
        conf.drain_transmits(|_, _, _| {});
        if tick >= 40 {
            runs.push(conf.counters().encoder_runs - before);
        }
    }
    let speakers = conf.speakers(1);
    assert_eq!(speakers, 3);
    let bound = (speakers as u64 + 1) * codecs.len() as u64;
    // Exactly: each speaker's own encode, and one shared encode per listener format.
    assert!(runs.iter().all(|&r| r == speakers as u64 + 4), "{runs:?}");
    assert!(runs.iter().all(|&r| r <= bound));
    // The loudest three (members 2, 3 and 4) are the speakers.
    for (n, slot) in slots.iter().enumerate() {
        let m = conf.slots[*slot].as_ref().unwrap();
        assert_eq!(m.voice.speaking, (2..5).contains(&n), "member {n}");
    }
}

#[test]
fn speaker_selection_has_hysteresis_and_a_noise_gate() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let calls: Vec<CallToken> = (1..=5).map(CallToken::from_raw).collect();
    let slots: Vec<usize> = (0..5)
        .map(|i| {
            let s = conf
                .add_member(t0, calls[i], media(i as u8 + 1), seed(i as u8))
                .unwrap();
            conf.join(t0, calls[i], 2);
            s
        })
        .collect();
    let mut txs: Vec<Tx> = (0..5).map(|i| Tx::new(i as u8)).collect();
    let mut now = t0;
    // Constant (DC) levels: dBov = 20 log10(level / 32768).
    let mut run = |conf: &mut Conference, levels: [i16; 5], ticks: usize, now: &mut Instant| {
        for _ in 0..ticks {
            *now += TICK;
            for i in 0..5 {
                let mut pkt = txs[i].audio(levels[i]);
                conf.handle_rtp(*now, slots[i], addr(i as u8 + 1), &mut pkt);
            }
            conf.handle_tick(*now);
            conf.drain_transmits(|_, _, _| {});
        }
        (0..5)
            .map(|i| conf.is_speaker(calls[i]))
            .collect::<Vec<bool>>()
    };
    // Member 4 is a hissing idle line at about -60 dBov (below the -50 dBov gate):
    // it stays out even though there is room for a speaker.
    let speaking = run(&mut conf, [3000, 2500, 0, 0, 32], 50, &mut now);
    assert_eq!(speaking, [true, true, false, false, false]);
    let speaking = run(&mut conf, [3000, 2500, 2000, 0, 32], 50, &mut now);
    assert_eq!(speaking, [true, true, true, false, false]);
    // A fourth, louder than the quietest speaker by less than the switching margin,
    // does not displace anyone.
    let speaking = run(&mut conf, [3000, 2500, 2000, 2400, 32], 50, &mut now);
    assert_eq!(speaking, [true, true, true, false, false]);
    // Much louder (+12 dB): it takes the quietest speaker's place.
    let speaking = run(&mut conf, [3000, 2500, 2000, 8000, 32], 50, &mut now);
    assert_eq!(speaking, [true, true, false, true, false]);
    // Everyone stops: speakers leave after the gate's 400 ms hold and 80 ms fade
    // (24 ticks, plus the playout delay; the old gate's 200 ms hangover cut quiet
    // word endings).
    let speaking = run(&mut conf, [0, 0, 0, 0, 32], 23, &mut now);
    assert_eq!(speaking, [true, true, false, true, false]);
    let speaking = run(&mut conf, [0, 0, 0, 0, 32], 7, &mut now);
    assert_eq!(speaking, [false; 5]);
}

#[test]
fn automatic_gain_lifts_a_quiet_talker_only_when_asked() {
    let heard = |auto_gain: bool| {
        let t0 = Instant::now();
        let mut conf = Conference::new(
            ConferenceSettings {
                auto_gain,
                ..settings()
            },
            prompts(),
        );
        let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
        let sa = conf.add_member(t0, a, media(1), seed(1)).unwrap();
        conf.add_member(t0, b, media(2), seed(2)).unwrap();
        conf.join(t0, a, 0);
        conf.join(t0, b, 0);
        let mut tx = Tx::new(1);
        let mut now = t0;
        let mut last = 0;
        // A quiet talker at about -40 dBov, for 4 s.
        for _ in 0..200 {
            now += TICK;
            conf.handle_rtp(now, sa, addr(1), &mut tx.audio(330));
            conf.handle_tick(now);
            if let Some(frame) = sent(&mut conf).get(&addr(2)) {
                last = frame[80];
            }
        }
        last
    };
    let plain = heard(false);
    let lifted = heard(true);
    assert!((300..=360).contains(&plain), "without gain: {plain}");
    // +12 dB at most (4x): the target (-26 dBov) is 14 dB above the talker.
    assert!((1100..=1400).contains(&lifted), "with gain: {lifted}");
}

#[test]
fn a_reinvite_to_another_codec_moves_the_member_and_the_room_rate() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
    let mut pa = CodecPhone::new(1, Codec::Pcmu);
    let mut pb = CodecPhone::new(2, Codec::Pcmu);
    let sa = conf.add_member(t0, a, pa.params(1), seed(1)).unwrap();
    let sb = conf.add_member(t0, b, pb.params(2), seed(2)).unwrap();
    conf.join(t0, a, 5);
    conf.join(t0, b, 5);
    assert_eq!(conf.room_rate(5), 8000);
    let mut now = t0;
    let mut step = |conf: &mut Conference, pa: &mut CodecPhone, pb: &mut CodecPhone, ticks| {
        pb.heard.clear();
        pa.heard.clear();
        for _ in 0..ticks {
            now += TICK;
            conf.handle_rtp(now, sa, addr(1), &mut pa.tone(500.0, 6000.0));
            conf.handle_rtp(now, sb, addr(2), &mut pb.tone(1300.0, 6000.0));
            conf.handle_tick(now);
            let mut out = Vec::new();
            conf.drain_transmits(|_, dest, bytes| out.push((dest, bytes.to_vec())));
            for (dest, bytes) in out {
                if dest == addr(1) {
                    pa.receive(&bytes);
                } else {
                    pb.receive(&bytes);
                }
            }
        }
    };
    step(&mut conf, &mut pa, &mut pb, 100);
    let last = |p: &CodecPhone| p.heard[p.heard.len() - p.format.rate as usize..].to_vec();
    assert!(share(&last(&pb), 500.0, 8000) > 0.5);
    // a switches to Opus mid-call (a new sender: new SSRC and payload type).
    let mut pa2 = CodecPhone::new(9, Codec::Opus);
    conf.update_media(t0, a, pa2.params(1));
    assert_eq!(
        conf.room_rate(5),
        48_000,
        "the room follows its fullband member"
    );
    step(&mut conf, &mut pa2, &mut pb, 100);
    assert!(
        share(&last(&pb), 500.0, 8000) > 0.5,
        "b lost a after the switch"
    );
    assert!(
        share(&last(&pa2), 1300.0, 48_000) > 0.5,
        "a does not hear b in Opus"
    );
    // And back: the room returns to 8 kHz.
    let mut pa3 = CodecPhone::new(10, Codec::Pcmu);
    conf.update_media(t0, a, pa3.params(1));
    assert_eq!(conf.room_rate(5), 8000);
    step(&mut conf, &mut pa3, &mut pb, 100);
    assert!(
        share(&last(&pb), 500.0, 8000) > 0.5,
        "b lost a after switching back"
    );
    assert!(share(&last(&pa3), 1300.0, 8000) > 0.5);
}

#[test]
fn digits_on_their_own_ssrc_count_once_and_audio_keeps_its_decoder() {
    // Some phones and SBCs send RFC 4733 events on another SSRC than the audio,
    // from the same address: every packet then "changes" the SSRC.
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let call = CallToken::from_raw(1);
    let slot = conf.add_member(t0, call, media(1), seed(1)).unwrap();
    let mut audio = RtpSender::new(0xA, 1, 8000, 0);
    let mut events = RtpSender::new(0xD, 1, 16_000, 101);
    let packet = |s: &mut RtpSender, pt: u8, payload: &[u8], step: u32| {
        s.set_payload_type(pt);
        let mut b = [0u8; 512];
        let n = s.write(payload, step, &mut b).unwrap();
        b[..n].to_vec()
    };
    let now = t0 + TICK;
    conf.handle_rtp(
        now,
        slot,
        addr(1),
        &mut packet(&mut audio, 0, &[0xff; 160], 160),
    );
    // Digit 5: start, end, (audio), end, (audio), end: one event timestamp.
    for (i, end) in [false, true, true, true].into_iter().enumerate() {
        let duration = (160 * (i as u16 + 1)).to_be_bytes();
        let payload = [5, if end { 0x8a } else { 10 }, duration[0], duration[1]];
        conf.handle_rtp(
            now,
            slot,
            addr(1),
            &mut packet(&mut events, 101, &payload, 0),
        );
        if end {
            conf.handle_rtp(
                now,
                slot,
                addr(1),
                &mut packet(&mut audio, 0, &[0xff; 160], 160),
            );
        }
    }
    assert_eq!(conf.counters().digits, 1, "one key press");
    assert_eq!(conf.counters().foreign_source, 0);
}

#[test]
fn a_format_that_leaves_takes_its_shared_encode_and_the_rate_follows() {
    // The Opus member leaves: its shared encode goes (SharedEncode's Drop wipes it)
    // and the room falls back to 8 kHz with the G.711 encode kept.
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
    let pb = CodecPhone::new(2, Codec::Opus);
    conf.add_member(t0, a, media(1), seed(1)).unwrap();
    conf.add_member(t0, b, pb.params(2), seed(2)).unwrap();
    conf.join(t0, a, 3);
    conf.join(t0, b, 3);
    assert_eq!(conf.rooms[&3].shared.len(), 2);
    assert_eq!(conf.room_rate(3), 48_000);
    conf.remove(t0, b);
    let room = &conf.rooms[&3];
    assert_eq!(room.rate, 8000);
    assert_eq!(
        room.shared.len(),
        1,
        "the Opus encode went with its last listener"
    );
    assert_eq!(room.shared[0].key.codec, Codec::Pcmu);
    assert_eq!(conf.counters().codec_errors, 0);
}

#[test]
fn quiet_members_with_rfc_6464_levels_are_not_decoded_until_they_speak() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let with_level = |mut packet: Vec<u8>, minus_dbov: u8| {
        packet[0] |= 0x10;
        packet.splice(12..12, [0xBE, 0xDE, 0, 1, 0x10, minus_dbov, 0, 0]);
        packet
    };
    let mut phones = Vec::new();
    let mut slots = Vec::new();
    for n in 0..6u8 {
        let phone = CodecPhone::new(n, Codec::Opus);
        let call = CallToken::from_raw(200 + n as u64);
        let mut params = phone.params(n + 1);
        params.audio_level_id = Some(1);
        slots.push(conf.add_member(t0, call, params, seed(n)).unwrap());
        conf.join(t0, call, 9);
        phones.push(phone);
    }
    let mut now = t0;
    let mut run = |conf: &mut Conference, phones: &mut Vec<CodecPhone>, talkers: usize, ticks| {
        let before = conf.counters();
        for _ in 0..ticks {
            now += TICK;
            for (i, phone) in phones.iter_mut().enumerate() {
                let talking = i < talkers;
                let amplitude = if talking { 6000.0 } else { 0.0 };
                let packet = phone.tone(400.0 + 200.0 * i as f64, amplitude);
                let mut packet = with_level(packet, if talking { 0x80 | 18 } else { 90 });
                conf.handle_rtp(now, slots[i], addr(i as u8 + 1), &mut packet);
            }
            conf.handle_tick(now);
            let mut out = Vec::new();
            conf.drain_transmits(|_, dest, bytes| out.push((dest, bytes.to_vec())));
            for (dest, bytes) in out {
                let i = (0..phones.len())
                    .find(|&i| addr(i as u8 + 1) == dest)
                    .unwrap();
                phones[i].receive(&bytes);
            }
        }
        let after = conf.counters();
        (
            after.frames_decoded - before.frames_decoded,
            after.frames_skipped - before.frames_skipped,
        )
    };
    // Two talk, four are quiet: after the first ticks only the talkers are decoded.
    run(&mut conf, &mut phones, 2, 50);
    let (decoded, skipped) = run(&mut conf, &mut phones, 2, 50);
    assert_eq!(decoded, 2 * 50, "only the talkers are decoded");
    assert_eq!(skipped, 4 * 50, "the quiet ones are skipped");
    // A third starts talking: decoded again, it becomes a speaker and is heard.
    for p in phones.iter_mut() {
        p.heard.clear();
    }
    let (decoded, _) = run(&mut conf, &mut phones, 3, 50);
    assert!(decoded >= 3 * 45, "{decoded}");
    assert!(conf.is_speaker(CallToken::from_raw(202)));
    let last = &phones[0].heard[phones[0].heard.len() - 48_000 / 2..];
    assert!(
        share(last, 800.0, 48_000) > 0.2,
        "the new talker is not heard"
    );
    assert_eq!(conf.counters().codec_errors, 0);
}

#[test]
fn callers_between_prompts_share_one_encode_of_silence() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    for n in 1..=10 {
        conf.add_member(t0, CallToken::from_raw(u64::from(n)), media(n), seed(n))
            .unwrap();
    }
    // The PIN prompt (three frames here) plays, then the IVR waits in silence.
    let mut now = t0;
    for _ in 0..5 {
        now += TICK;
        conf.handle_tick(now);
        let _ = sent(&mut conf);
    }
    let before = conf.counters().encoder_runs;
    for _ in 0..10 {
        now += TICK;
        conf.handle_tick(now);
        let out = sent(&mut conf);
        assert_eq!(out.len(), 10, "every caller gets a packet each tick");
        for frame in out.values() {
            assert_eq!(level(frame), 0, "silence");
        }
    }
    assert_eq!(
        conf.counters().encoder_runs,
        before,
        "silence was encoded per caller"
    );
}
