//! Tests of the ZRTP state machine: two sessions in virtual time over a simulated link
//! (seeded loss, duplication and reordering), an attacker in the middle, forged and
//! tampered packets, and the timers.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::captured;
use super::super::packet::tests::hex;
use super::super::packet::{crc32c, encode_packet, parse_packet, CommitMode};
use super::*;
use crate::media::srtp::Suite;

/// The origin of virtual time.
fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
    Instant::now()
}

const ZID_A: Zid = Zid([0xaa; 12]);
const ZID_B: Zid = Zid([0xbb; 12]);

fn session(
    hint: RoleHint,
    zid: Zid,
    config: Config,
    cache: &RetainedSecrets,
    seed: u64,
    now: Instant,
) -> Session<StdRng> {
    let ssrc = u32::from(zid.0[0]) << 24 | 0x0012_3456;
    Session::new(
        hint,
        zid,
        ssrc,
        config,
        cache.clone(),
        now,
        StdRng::seed_from_u64(seed),
    )
}

/// How the simulated link treats packets.
#[derive(Clone, Copy, Default)]
struct LinkModel {
    loss: f64,
    duplicate: f64,
    /// Extra random delay up to this many ms, which reorders packets.
    jitter_ms: u64,
}

/// What a run produced.
#[derive(Default)]
struct Outcome {
    a_events: Vec<ZrtpEvent>,
    b_events: Vec<ZrtpEvent>,
    /// Message types each side sent (including retransmissions).
    a_sent: Vec<MessageType>,
    b_sent: Vec<MessageType>,
    end: Option<Instant>,
}

impl Outcome {
    fn secure(events: &[ZrtpEvent]) -> Option<&SecureInfo> {
        events.iter().find_map(|e| match e {
            ZrtpEvent::Secure(info) => Some(info),
            _ => None,
        })
    }

    fn failed(events: &[ZrtpEvent]) -> Option<Failure> {
        events.iter().find_map(|e| match e {
            ZrtpEvent::Failed(f) => Some(*f),
            _ => None,
        })
    }

    fn a_secure(&self) -> &SecureInfo {
        Outcome::secure(&self.a_events).expect("A did not go secure")
    }

    fn b_secure(&self) -> &SecureInfo {
        Outcome::secure(&self.b_events).expect("B did not go secure")
    }
}

/// Delivers one packet: `(to_b, packet, receiving session, now)`. The plain hook hands
/// it over; others drop, change or add packets, or inspect the receiver around it.
type Hook<'a> = dyn FnMut(bool, Vec<u8>, &mut Session<StdRng>, Instant) + 'a;

/// Delivers every packet unchanged.
fn pass() -> impl FnMut(bool, Vec<u8>, &mut Session<StdRng>, Instant) {
    |_, p, s, now| {
        let _ = s.handle_packet(now, &p);
    }
}

/// Delivers what `f` makes of each packet (nothing to drop it, a changed one to tamper).
fn rewrite(
    mut f: impl FnMut(bool, Vec<u8>) -> Vec<Vec<u8>>,
) -> impl FnMut(bool, Vec<u8>, &mut Session<StdRng>, Instant) {
    move |to_b, p, s, now| {
        for q in f(to_b, p) {
            let _ = s.handle_packet(now, &q);
        }
    }
}

fn message_type(packet: &[u8]) -> MessageType {
    parse_packet(packet)
        .expect("sessions send well-formed packets")
        .message
        .message_type()
}

/// Runs two sessions over the link until both are done or `limit` of virtual time has
/// passed. `to_b` in the hook is true for packets from A to B.
fn run(
    a: &mut Session<StdRng>,
    b: &mut Session<StdRng>,
    start: Instant,
    link: LinkModel,
    seed: u64,
    limit: Duration,
    deliver: &mut Hook<'_>,
) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Outcome::default();
    // In flight: (delivery time, order) -> (to B?, packet).
    let mut flight: BTreeMap<(Instant, u64), (bool, Vec<u8>)> = BTreeMap::new();
    let mut order = 0u64;
    let mut now = start;
    let done = |events: &[ZrtpEvent]| {
        events
            .iter()
            .any(|e| matches!(e, ZrtpEvent::Secure(_) | ZrtpEvent::Failed(_)))
    };
    // Bounded: each step advances virtual time or delivers a packet.
    for _ in 0..100_000 {
        for (to_b, s) in [(true, &mut *a), (false, &mut *b)] {
            while let Some(p) = s.poll_transmit() {
                if to_b {
                    out.a_sent.push(message_type(&p));
                } else {
                    out.b_sent.push(message_type(&p));
                }
                if rng.gen_bool(link.loss) {
                    continue;
                }
                let copies = if rng.gen_bool(link.duplicate) { 2 } else { 1 };
                for _ in 0..copies {
                    let delay = 5 + if link.jitter_ms > 0 {
                        rng.gen_range(0..link.jitter_ms)
                    } else {
                        0
                    };
                    order += 1;
                    flight.insert(
                        (now + Duration::from_millis(delay), order),
                        (to_b, p.clone()),
                    );
                }
            }
        }
        while let Some(e) = a.poll_event() {
            out.a_events.push(e);
        }
        while let Some(e) = b.poll_event() {
            out.b_events.push(e);
        }
        if done(&out.a_events) && done(&out.b_events) && flight.is_empty() {
            break;
        }
        let next = [
            flight.keys().next().map(|k| k.0),
            a.poll_timeout(),
            b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { break };
        if next > start + limit {
            break;
        }
        now = now.max(next);
        while let Some(entry) = flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (to_b, packet) = entry.remove();
            let target = if to_b { &mut *b } else { &mut *a };
            deliver(to_b, packet, target, now);
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    out.end = Some(now);
    out
}

/// A complete handshake between fresh sessions; returns the outcome.
fn handshake(
    config_a: Config,
    config_b: Config,
    hint_a: RoleHint,
    hint_b: RoleHint,
    seed: u64,
) -> Outcome {
    let start = t0();
    let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
    let mut a = session(hint_a, ZID_A, config_a, &cache_a, seed, start);
    let mut b = session(hint_b, ZID_B, config_b, &cache_b, seed + 1, start);
    run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        seed,
        Duration::from_secs(60),
        &mut pass(),
    )
}

fn assert_mirrored(out: &Outcome) {
    let (a, b) = (out.a_secure(), out.b_secure());
    assert_eq!(a.sas.text(), b.sas.text());
    assert_eq!(a.sas.kind(), b.sas.kind());
    assert_ne!(a.role, b.role);
    assert_eq!(
        (a.cipher, a.auth_tag, a.key_agreement),
        (b.cipher, b.auth_tag, b.key_agreement)
    );
    assert_eq!(a.keys.local_key, b.keys.remote_key);
    assert_eq!(a.keys.local_salt, b.keys.remote_salt);
    assert_eq!(a.keys.remote_key, b.keys.local_key);
    assert_eq!(a.keys.remote_salt, b.keys.local_salt);
    assert_ne!(a.keys.local_key, a.keys.remote_key);
    assert_eq!(a.keys.local_key.len(), a.cipher.key_len());
    assert_eq!(a.keys.local_salt.len(), 14);
    assert_eq!(a.peer_zid, ZID_B);
    assert_eq!(b.peer_zid, ZID_A);
}

#[test]
fn x255_handshake_initiator_and_responder() {
    let out = handshake(
        Config::default(),
        Config::default(),
        RoleHint::Initiator,
        RoleHint::Responder,
        1,
    );
    assert_mirrored(&out);
    let (a, b) = (out.a_secure(), out.b_secure());
    assert_eq!(a.role, Role::Initiator);
    assert_eq!(b.role, Role::Responder);
    assert_eq!(a.key_agreement, KeyAgreement::X255);
    assert_eq!(a.cipher, Cipher::Aes1);
    assert_eq!(a.auth_tag, AuthTag::Hs80);
    assert_eq!(a.sas.kind(), SasType::B32);
    assert_eq!(a.srtp_suite(), Some(Suite::AesCm128HmacSha1_80));
    assert_eq!(a.keys.local_key_and_salt().len(), 30);
    assert!(!a.sas_verified_previously && !a.cache_mismatch);
    // The exchange on the wire, for the initiator: Hello, HelloACK, Commit, DHPart2,
    // Confirm2 and nothing else without loss.
    assert_eq!(
        out.a_sent,
        [
            MessageType::Hello,
            MessageType::HelloAck,
            MessageType::Commit,
            MessageType::DhPart2,
            MessageType::Confirm2
        ]
    );
    assert_eq!(
        out.b_sent,
        [
            MessageType::Hello,
            MessageType::HelloAck,
            MessageType::DhPart1,
            MessageType::Confirm1,
            MessageType::Conf2Ack
        ]
    );
    // The peer's Hello was reported.
    assert!(out
        .a_events
        .iter()
        .any(|e| matches!(e, ZrtpEvent::PeerHello { zid, .. } if *zid == ZID_B)));
}

#[test]
fn dh3k_handshake_with_b256_and_the_roles_swapped() {
    let config = Config {
        key_agreements: vec![KeyAgreement::Dh3k],
        sas_types: vec![SasType::B256],
        auth_tags: vec![AuthTag::Hs32],
        ciphers: vec![Cipher::Aes3, Cipher::Aes1],
        ..Config::default()
    };
    let out = handshake(
        config.clone(),
        config,
        RoleHint::Responder,
        RoleHint::Initiator,
        2,
    );
    assert_mirrored(&out);
    let (a, b) = (out.a_secure(), out.b_secure());
    assert_eq!(a.role, Role::Responder);
    assert_eq!(b.role, Role::Initiator);
    assert_eq!(a.key_agreement, KeyAgreement::Dh3k);
    assert_eq!(a.sas.kind(), SasType::B256);
    assert_eq!(a.sas.tokens().len(), 2);
    assert_eq!(a.cipher, Cipher::Aes3);
    assert_eq!(a.keys.local_key.len(), 32);
    assert_eq!(a.srtp_suite(), None);
}

#[test]
fn key_agreement_negotiation_picks_the_faster_first_choice() {
    // A prefers DH3k, B prefers X255: both first choices are common, X255 is faster.
    let a = Config {
        key_agreements: vec![KeyAgreement::Dh3k, KeyAgreement::X255],
        ..Config::default()
    };
    let out = handshake(
        a.clone(),
        Config::default(),
        RoleHint::Initiator,
        RoleHint::Responder,
        3,
    );
    assert_eq!(out.a_secure().key_agreement, KeyAgreement::X255);
    // Only one side has X255: the mandatory DH3k.
    let b = Config {
        key_agreements: vec![KeyAgreement::Dh3k],
        sas_types: vec![SasType::B256, SasType::B32],
        ..Config::default()
    };
    let out = handshake(
        Config::default(),
        b,
        RoleHint::Initiator,
        RoleHint::Responder,
        4,
    );
    assert_mirrored(&out);
    assert_eq!(out.a_secure().key_agreement, KeyAgreement::Dh3k);
    // The initiator's SAS preference wins among the common ones.
    assert_eq!(out.a_secure().sas.kind(), SasType::B32);
}

#[test]
fn two_responder_hints_still_complete_after_the_commit_delay() {
    let out = handshake(
        Config::default(),
        Config::default(),
        RoleHint::Responder,
        RoleHint::Responder,
        5,
    );
    assert_mirrored(&out);
}

#[test]
fn commit_contention_is_resolved_by_hvi() {
    let mut contended = 0;
    for seed in 10..20 {
        let out = handshake(
            Config::default(),
            Config::default(),
            RoleHint::Initiator,
            RoleHint::Initiator,
            seed,
        );
        assert_mirrored(&out);
        let both_committed =
            out.a_sent.contains(&MessageType::Commit) && out.b_sent.contains(&MessageType::Commit);
        if both_committed {
            contended += 1;
            // The loser became the responder and answered with DHPart1.
            let loser = if out.a_secure().role == Role::Responder {
                &out.a_sent
            } else {
                &out.b_sent
            };
            assert!(loser.contains(&MessageType::DhPart1));
            assert!(!loser.contains(&MessageType::DhPart2));
        }
    }
    assert_eq!(
        contended, 10,
        "both initiators commit at the same moment on a symmetric link"
    );
}

#[test]
fn lossy_duplicating_reordering_link_still_completes() {
    for seed in 100..130 {
        let start = t0();
        let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
        let mut a = session(
            RoleHint::Initiator,
            ZID_A,
            Config::default(),
            &cache_a,
            seed,
            start,
        );
        let mut b = session(
            RoleHint::Responder,
            ZID_B,
            Config::default(),
            &cache_b,
            seed + 1000,
            start,
        );
        let link = LinkModel {
            loss: 0.25,
            duplicate: 0.2,
            jitter_ms: 80,
        };
        let out = run(
            &mut a,
            &mut b,
            start,
            link,
            seed,
            Duration::from_secs(60),
            &mut pass(),
        );
        assert!(
            Outcome::failed(&out.a_events).is_none(),
            "seed {seed}: {:?}",
            out.a_events
        );
        assert_mirrored(&out);
        assert_eq!(a.dh_agreements(), 1);
        assert_eq!(b.dh_agreements(), 1);
    }
}

#[test]
fn a_man_in_the_middle_gets_different_sas_at_the_two_ends() {
    // Mallory runs one exchange with Alice and another with Bob, impersonating each
    // one's ZID to the other; she relays nothing, she substitutes her own DH values.
    for seed in 0..5 {
        let start = t0();
        let caches: Vec<RetainedSecrets> = (0..4).map(|_| RetainedSecrets::new(8)).collect();
        let mut alice = session(
            RoleHint::Initiator,
            ZID_A,
            Config::default(),
            &caches[0],
            seed * 10,
            start,
        );
        let mut mallory_as_bob = session(
            RoleHint::Responder,
            ZID_B,
            Config::default(),
            &caches[1],
            seed * 10 + 1,
            start,
        );
        let mut mallory_as_alice = session(
            RoleHint::Initiator,
            ZID_A,
            Config::default(),
            &caches[2],
            seed * 10 + 2,
            start,
        );
        let mut bob = session(
            RoleHint::Responder,
            ZID_B,
            Config::default(),
            &caches[3],
            seed * 10 + 3,
            start,
        );
        let left = run(
            &mut alice,
            &mut mallory_as_bob,
            start,
            LinkModel::default(),
            seed,
            Duration::from_secs(10),
            &mut pass(),
        );
        let right = run(
            &mut mallory_as_alice,
            &mut bob,
            start,
            LinkModel::default(),
            seed,
            Duration::from_secs(10),
            &mut pass(),
        );
        let alice_sas = left.a_secure().sas.text();
        let bob_sas = right.b_secure().sas.text();
        assert_ne!(
            alice_sas, bob_sas,
            "seed {seed}: the SAS must expose Mallory"
        );
        assert_ne!(
            left.a_secure().keys.local_key,
            right.b_secure().keys.remote_key
        );
    }
}

/// Flips 1 to 3 bytes of the message body (after the type block) and fixes the CRC,
/// so that the packet parses as far as the message and is rejected for what it says.
fn mutate(packet: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut p = packet.to_vec();
    let body_start = 12 + 12;
    let body_end = p.len() - 4;
    if body_end > body_start {
        for _ in 0..rng.gen_range(1..=3) {
            let at = rng.gen_range(body_start..body_end);
            p[at] ^= rng.gen::<u8>() | 1;
        }
    }
    let n = p.len();
    let crc = crc32c(&p[..n - 4]).to_le_bytes();
    p[n - 4..].copy_from_slice(&crc);
    p
}

/// Packets of an unrelated exchange (another pair of sessions), by type: what an
/// attacker who runs ZRTP himself can send.
fn foreign_packets(seed: u64) -> Vec<Vec<u8>> {
    let start = t0();
    let (c1, c2) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
    let mut c = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &c1,
        seed,
        start,
    );
    let mut d = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &c2,
        seed + 1,
        start,
    );
    let mut seen = Vec::new();
    run(
        &mut c,
        &mut d,
        start,
        LinkModel::default(),
        seed,
        Duration::from_secs(10),
        &mut rewrite(|_, p| {
            seen.push(p.clone());
            vec![p]
        }),
    );
    seen.into_iter()
        .filter(|p| {
            matches!(
                message_type(p),
                MessageType::Commit
                    | MessageType::DhPart1
                    | MessageType::DhPart2
                    | MessageType::Confirm1
                    | MessageType::Confirm2
            )
        })
        .collect()
}

#[test]
fn forged_and_tampered_packets_change_nothing_and_the_result_is_the_same() {
    for (key_agreement, seed) in [(KeyAgreement::X255, 40), (KeyAgreement::Dh3k, 41)] {
        let config = Config {
            key_agreements: vec![key_agreement],
            ..Config::default()
        };
        let start = t0();
        let fresh = |seed_offset: u64| {
            let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
            (
                session(
                    RoleHint::Initiator,
                    ZID_A,
                    config.clone(),
                    &cache_a,
                    seed + seed_offset,
                    start,
                ),
                session(
                    RoleHint::Responder,
                    ZID_B,
                    config.clone(),
                    &cache_b,
                    seed + seed_offset + 1,
                    start,
                ),
            )
        };
        // The reference run.
        let (mut a, mut b) = fresh(0);
        let reference = run(
            &mut a,
            &mut b,
            start,
            LinkModel::default(),
            seed,
            Duration::from_secs(10),
            &mut pass(),
        );
        let reference_sas = reference.a_secure().sas.text();

        // The same run, with forgeries delivered right after every genuine packet.
        // Each must be refused and leave the receiving session exactly as it was.
        let (mut a, mut b) = fresh(0);
        let foreign = foreign_packets(seed + 7);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut refused = 0;
        let mut inject = |_: bool, p: Vec<u8>, target: &mut Session<StdRng>, now: Instant| {
            let _ = target.handle_packet(now, &p);
            let mut forgeries: Vec<Vec<u8>> = (0..8).map(|_| mutate(&p, &mut rng)).collect();
            for _ in 0..3 {
                let mut junk = vec![0u8; rng.gen_range(0..200)];
                rng.fill(&mut junk[..]);
                if junk.len() >= 8 {
                    junk[0] = 0x10;
                    junk[4..8].copy_from_slice(b"ZRTP");
                }
                forgeries.push(junk);
            }
            forgeries.extend(foreign.iter().cloned());
            for forged in forgeries {
                let before = format!("{target:?}");
                match target.handle_packet(now, &forged) {
                    Err(_) => {
                        refused += 1;
                        assert_eq!(
                            before,
                            format!("{target:?}"),
                            "a refused packet changed the session"
                        );
                    }
                    Ok(()) => panic!(
                        "a forged {:?} was accepted",
                        parse_packet(&forged).map(|p| p.message.message_type())
                    ),
                }
            }
        };
        let out = run(
            &mut a,
            &mut b,
            start,
            LinkModel::default(),
            seed,
            Duration::from_secs(10),
            &mut inject,
        );
        assert!(refused > 100, "only {refused} forgeries were tried");
        assert_eq!(out.a_secure().sas.text(), reference_sas);
        assert_eq!(out.b_secure().sas.text(), reference_sas);
        assert_eq!(
            out.a_secure().keys.local_key,
            reference.a_secure().keys.local_key
        );
        assert_eq!(a.dh_agreements(), 1);
        assert_eq!(b.dh_agreements(), 1);
    }
}

/// Runs A (initiator) against B (responder) with `tamper` applied; returns the outcome
/// and the sessions for inspection.
fn tampered_run(
    seed: u64,
    tamper: impl FnMut(bool, Vec<u8>) -> Vec<Vec<u8>>,
) -> (Outcome, Session<StdRng>, Session<StdRng>) {
    let start = t0();
    let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache_a,
        seed,
        start,
    );
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &cache_b,
        seed + 1,
        start,
    );
    let out = run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        seed,
        Duration::from_secs(30),
        &mut rewrite(tamper),
    );
    (out, a, b)
}

/// Re-frames a changed message with a correct CRC.
fn reframe(packet: &[u8], message: &Message) -> Vec<u8> {
    let parsed = parse_packet(packet).unwrap();
    encode_packet(parsed.sequence, parsed.ssrc, &message.encode())
}

#[test]
fn a_dhpart2_that_breaks_the_hvi_commitment_is_refused_before_any_dh_work() {
    // The initiator's DHPart2 arrives with a different public value but the right H1:
    // it passes the hash-chain check and fails the commitment.
    let tamper = |to_b: bool, p: Vec<u8>| {
        if to_b {
            if let Message::DhPart2(mut part) = parse_packet(&p).unwrap().message {
                part.public_value[0] ^= 0x40;
                return vec![reframe(&p, &Message::DhPart2(part))];
            }
        }
        vec![p]
    };
    let (out, _a, b) = tampered_run(50, tamper);
    assert_eq!(
        Outcome::failed(&out.b_events),
        Some(Failure {
            code: ErrorCode::HviMismatch,
            from_peer: false
        })
    );
    assert_eq!(
        b.dh_agreements(),
        0,
        "no DH result before the commitment holds"
    );
    // B told A, which fails too.
    assert_eq!(
        Outcome::failed(&out.a_events),
        Some(Failure {
            code: ErrorCode::HviMismatch,
            from_peer: true
        })
    );
    assert!(out.b_sent.contains(&MessageType::Error));
}

#[test]
fn a_dhpart2_with_a_wrong_h1_is_dropped_without_dh_work_and_the_real_one_completes() {
    let start = t0();
    let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache_a,
        60,
        start,
    );
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &cache_b,
        61,
        start,
    );
    let mut saw = 0;
    let mut tamper = |to_b: bool, p: Vec<u8>| {
        if to_b && saw == 0 {
            if let Message::DhPart2(mut part) = parse_packet(&p).unwrap().message {
                saw += 1;
                part.h1[0] ^= 1;
                // The forged one first, then the genuine one.
                return vec![reframe(&p, &Message::DhPart2(part)), p];
            }
        }
        vec![p]
    };
    let out = run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        60,
        Duration::from_secs(10),
        &mut rewrite(&mut tamper),
    );
    assert_eq!(saw, 1);
    assert_mirrored(&out);
    assert_eq!(b.dh_agreements(), 1);

    // And directly: the forged DHPart2 is refused as such, the state is untouched.
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache_a,
        62,
        start,
    );
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &cache_b,
        63,
        start,
    );
    let mut dhpart2 = None;
    let mut capture = |to_b: bool, p: Vec<u8>| {
        if to_b && message_type(&p) == MessageType::DhPart2 {
            dhpart2 = Some(p);
            return vec![];
        }
        vec![p]
    };
    run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        62,
        Duration::from_millis(100),
        &mut rewrite(&mut capture),
    );
    let genuine = dhpart2.expect("A sent DHPart2");
    let Message::DhPart2(mut part) = parse_packet(&genuine).unwrap().message else {
        unreachable!()
    };
    part.h1 = [0x55; 32];
    let before = format!("{b:?}");
    assert_eq!(
        b.handle_packet(start, &reframe(&genuine, &Message::DhPart2(part))),
        Err(Discarded::Forged(MessageType::DhPart2))
    );
    assert_eq!(before, format!("{b:?}"));
    assert_eq!(b.dh_agreements(), 0);
    assert_eq!(b.handle_packet(start, &genuine), Ok(()));
    assert_eq!(b.dh_agreements(), 1);
}

#[test]
fn a_tampered_hello_fails_once_its_mac_key_is_revealed() {
    // An on-path attacker changes A's Hello to B (here the client id; it could be a
    // downgrade of the algorithm lists). H3 is intact, so B takes it; A's Commit
    // reveals H2 and B finds the Hello MAC wrong.
    let mut done = false;
    let mut tamper = |to_b: bool, p: Vec<u8>| {
        if to_b && !done {
            if let Message::Hello(mut hello) = parse_packet(&p).unwrap().message {
                done = true;
                hello.client_id = *b"evil            ";
                return vec![reframe(&p, &Message::Hello(hello))];
            }
        }
        vec![p]
    };
    let (out, _, b) = tampered_run(70, &mut tamper);
    assert_eq!(
        Outcome::failed(&out.b_events),
        Some(Failure {
            code: ErrorCode::HelloComponentsMismatch,
            from_peer: false
        })
    );
    assert_eq!(b.dh_agreements(), 0);
    assert!(Outcome::secure(&out.a_events).is_none());
}

#[test]
fn a_tampered_commit_fails_once_its_mac_key_is_revealed() {
    // The SAS type in A's Commit is changed in flight (both are supported, so B
    // accepts the Commit); DHPart2 reveals H1 and the Commit MAC fails.
    let mut tamper = |to_b: bool, p: Vec<u8>| {
        if to_b {
            if let Message::Commit(mut commit) = parse_packet(&p).unwrap().message {
                commit.sas_type = SasType::B256.id();
                return vec![reframe(&p, &Message::Commit(commit))];
            }
        }
        vec![p]
    };
    let (out, _, b) = tampered_run(80, &mut tamper);
    assert_eq!(
        Outcome::failed(&out.b_events),
        Some(Failure {
            code: ErrorCode::BadConfirmMac,
            from_peer: false
        })
    );
    assert_eq!(
        b.dh_agreements(),
        0,
        "the Commit MAC is checked before the DH result"
    );
}

#[test]
fn a_tampered_dhpart1_never_goes_secure() {
    // total_hash covers DHPart1, so the two ends derive different keys; every Confirm1
    // fails its MAC at A and is dropped, and A times out.
    let mut tamper = |to_b: bool, p: Vec<u8>| {
        if !to_b {
            if let Message::DhPart1(mut part) = parse_packet(&p).unwrap().message {
                part.rs1_id[0] ^= 1;
                return vec![reframe(&p, &Message::DhPart1(part))];
            }
        }
        vec![p]
    };
    let (out, _, _) = tampered_run(90, &mut tamper);
    assert!(Outcome::secure(&out.a_events).is_none());
    assert!(Outcome::secure(&out.b_events).is_none());
    assert_eq!(
        Outcome::failed(&out.a_events),
        Some(Failure {
            code: ErrorCode::ProtocolTimeout,
            from_peer: false
        })
    );
}

#[test]
fn hello_retransmissions_run_out_after_t1() {
    let start = t0();
    let cache = RetainedSecrets::new(1);
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache,
        1,
        start,
    );
    let mut hellos = 0;
    let mut failed_at = None;
    while let Some(at) = a.poll_timeout() {
        while let Some(p) = a.poll_transmit() {
            if message_type(&p) == MessageType::Hello {
                hellos += 1;
            }
        }
        if failed_at.is_some() {
            break;
        }
        a.handle_timeout(at);
        if let Some(ZrtpEvent::Failed(f)) = a.poll_event() {
            assert_eq!(
                f,
                Failure {
                    code: ErrorCode::ProtocolTimeout,
                    from_peer: false
                }
            );
            failed_at = Some(at);
        }
    }
    assert_eq!(hellos, 21, "one Hello and 20 retransmissions");
    assert_eq!(failed_at, Some(start + Duration::from_millis(3950)));
    assert_eq!(a.state(), State::Failed);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn commit_retransmissions_run_out_after_t2() {
    // B answers discovery, then goes silent.
    let mut silent = false;
    let mut tamper = |to_b: bool, p: Vec<u8>| {
        if to_b && message_type(&p) == MessageType::Commit {
            silent = true;
        }
        if silent {
            vec![]
        } else {
            vec![p]
        }
    };
    let (out, a, _) = tampered_run(100, &mut tamper);
    let commits = out
        .a_sent
        .iter()
        .filter(|t| **t == MessageType::Commit)
        .count();
    assert_eq!(commits, 11, "one Commit and 10 retransmissions");
    assert_eq!(
        Outcome::failed(&out.a_events),
        Some(Failure {
            code: ErrorCode::ProtocolTimeout,
            from_peer: false
        })
    );
    assert_eq!(a.state(), State::Failed);
}

#[test]
fn a_silent_initiator_lets_the_responder_time_out() {
    let config = Config {
        handshake_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let start = t0();
    let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache_a,
        110,
        start,
    );
    let mut b = session(RoleHint::Responder, ZID_B, config, &cache_b, 111, start);
    let mut drop_after_dhpart1 = |to_b: bool, p: Vec<u8>| {
        if !to_b && message_type(&p) == MessageType::DhPart1 {
            return vec![];
        }
        if to_b && message_type(&p) == MessageType::Commit {
            return vec![p];
        }
        if to_b
            && message_type(&p) != MessageType::Hello
            && message_type(&p) != MessageType::HelloAck
        {
            return vec![];
        }
        vec![p]
    };
    let out = run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        110,
        Duration::from_secs(20),
        &mut rewrite(&mut drop_after_dhpart1),
    );
    assert_eq!(
        Outcome::failed(&out.b_events),
        Some(Failure {
            code: ErrorCode::ProtocolTimeout,
            from_peer: false
        })
    );
    assert_eq!(b.dh_agreements(), 0);
}

#[test]
fn multistream_and_preshared_commits_are_refused_with_an_error() {
    for (mode, code) in [
        (
            CommitMode::Multistream { nonce: [1; 16] },
            ErrorCode::UnsupportedKeyAgreement,
        ),
        (
            CommitMode::Preshared {
                nonce: [1; 16],
                key_id: [2; 8],
            },
            ErrorCode::NoSharedSecret,
        ),
    ] {
        let mut tamper = |to_b: bool, p: Vec<u8>| {
            if to_b {
                if let Message::Commit(mut commit) = parse_packet(&p).unwrap().message {
                    commit.key_agreement = match mode {
                        CommitMode::Multistream { .. } => super::super::algorithm::MULTISTREAM,
                        _ => super::super::algorithm::PRESHARED,
                    };
                    commit.mode = mode.clone();
                    return vec![reframe(&p, &Message::Commit(commit))];
                }
            }
            vec![p]
        };
        let (out, a, b) = tampered_run(120, &mut tamper);
        assert_eq!(
            Outcome::failed(&out.b_events),
            Some(Failure {
                code,
                from_peer: false
            })
        );
        assert_eq!(
            Outcome::failed(&out.a_events),
            Some(Failure {
                code,
                from_peer: true
            })
        );
        // The Error was acknowledged, so B stopped retransmitting it.
        assert_eq!(
            out.b_sent
                .iter()
                .filter(|t| **t == MessageType::Error)
                .count(),
            1
        );
        assert!(out.a_sent.contains(&MessageType::ErrorAck));
        assert_eq!((a.state(), b.state()), (State::Failed, State::Failed));
    }
}

/// Two sessions taken to Secure; returns them with the time.
fn secure_pair(seed: u64) -> (Session<StdRng>, Session<StdRng>, Instant, Outcome) {
    let start = t0();
    let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache_a,
        seed,
        start,
    );
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &cache_b,
        seed + 1,
        start,
    );
    let out = run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        seed,
        Duration::from_secs(10),
        &mut pass(),
    );
    let now = out.end.unwrap_or(start);
    (a, b, now, out)
}

#[test]
fn goclear_is_refused_and_ping_is_answered_when_secure() {
    let (_a, mut b, now, _) = secure_pair(130);
    assert_eq!(b.state(), State::Secure);
    let go_clear = encode_packet(
        1,
        0xaa12_3456,
        &Message::GoClear { clear_mac: [0; 8] }.encode(),
    );
    assert_eq!(b.handle_packet(now, &go_clear), Ok(()));
    let answer = b.poll_transmit().expect("an answer to GoClear");
    assert_eq!(
        parse_packet(&answer).unwrap().message,
        Message::Error { code: 0x100 }
    );
    assert_eq!(b.state(), State::Secure);
    assert!(b.poll_event().is_none());

    let ping = Message::Ping(super::super::packet::Ping {
        version: VERSION,
        endpoint_hash: [7; 8],
    });
    assert_eq!(
        b.handle_packet(now, &encode_packet(2, 0x0102_0304, &ping.encode())),
        Ok(())
    );
    let Message::PingAck(ack) = parse_packet(&b.poll_transmit().unwrap()).unwrap().message else {
        panic!("not a PingACK")
    };
    assert_eq!(ack.received_endpoint_hash, [7; 8]);
    assert_eq!(ack.ssrc, 0x0102_0304);
    assert_eq!(ack.version, VERSION);

    // An Error after Secure is acknowledged and changes nothing.
    let error = encode_packet(3, 1, &Message::Error { code: 0x10 }.encode());
    assert_eq!(
        b.handle_packet(now, &error),
        Err(Discarded::Unexpected(MessageType::Error))
    );
    assert_eq!(
        parse_packet(&b.poll_transmit().unwrap()).unwrap().message,
        Message::ErrorAck
    );
    assert_eq!(b.state(), State::Secure);
}

#[test]
fn hello_hash_is_published_and_checked() {
    let start = t0();
    let cache = RetainedSecrets::new(8);
    let a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache,
        140,
        start,
    );
    let hash = a.hello_hash();
    assert!(hash.starts_with("1.10 "));
    assert_eq!(hash.len(), 5 + 64);
    drop(a);

    // B knows A's hash from the SDP: the handshake completes.
    let a_config = Config::default();
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        a_config.clone(),
        &cache,
        140,
        start,
    );
    let b_config = Config {
        peer_hello_hash: Some(a.hello_hash()),
        ..Config::default()
    };
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        b_config,
        &RetainedSecrets::new(8),
        141,
        start,
    );
    let out = run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        140,
        Duration::from_secs(10),
        &mut pass(),
    );
    assert_mirrored(&out);

    // A wrong hash fails the session as soon as the Hello arrives.
    let mut a = session(RoleHint::Initiator, ZID_A, a_config, &cache, 142, start);
    let wrong = Config {
        peer_hello_hash: Some(format!("1.10 {}", "00".repeat(32))),
        ..Config::default()
    };
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        wrong,
        &RetainedSecrets::new(8),
        143,
        start,
    );
    let out = run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        142,
        Duration::from_secs(10),
        &mut pass(),
    );
    assert_eq!(
        Outcome::failed(&out.b_events),
        Some(Failure {
            code: ErrorCode::HelloComponentsMismatch,
            from_peer: false
        })
    );

    // Set late, after the Hello: checked then.
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &RetainedSecrets::new(8),
        144,
        start,
    );
    let hello = hex(captured::HELLO_INITIATOR);
    assert_eq!(b.handle_packet(start, &hello), Ok(()));
    assert_eq!(
        b.set_peer_hello_hash(start, "1.10 zz"),
        Err(ZrtpHashError::Malformed)
    );
    assert_eq!(
        b.set_peer_hello_hash(start, &format!("1.2 {}", "00".repeat(32))),
        Err(ZrtpHashError::UnsupportedVersion)
    );
    assert_eq!(b.state(), State::Discovery);
    assert_eq!(
        b.set_peer_hello_hash(start, captured::HELLO_HASH_INITIATOR),
        Ok(())
    );
    assert_eq!(b.state(), State::Discovery);
    assert_eq!(
        b.set_peer_hello_hash(start, captured::HELLO_HASH_RESPONDER),
        Ok(())
    );
    assert_eq!(b.state(), State::Failed);
}

#[test]
fn retained_secrets_carry_verification_and_detect_a_lost_cache() {
    let (cache_a, cache_b) = (RetainedSecrets::new(8), RetainedSecrets::new(8));
    let call = |seed: u64| {
        let start = t0();
        let mut a = session(
            RoleHint::Initiator,
            ZID_A,
            Config::default(),
            &cache_a,
            seed,
            start,
        );
        let mut b = session(
            RoleHint::Responder,
            ZID_B,
            Config::default(),
            &cache_b,
            seed + 1,
            start,
        );
        let out = run(
            &mut a,
            &mut b,
            start,
            LinkModel::default(),
            seed,
            Duration::from_secs(10),
            &mut pass(),
        );
        assert_mirrored(&out);
        (a, b, out)
    };
    // First call: nothing cached; both compare the SAS and say so.
    let (mut a, mut b, out) = call(150);
    assert!(!out.a_secure().sas_verified_previously && !out.a_secure().cache_mismatch);
    let now = out.end.unwrap();
    a.set_sas_verified(now, true);
    b.set_sas_verified(now, true);
    assert!(cache_a.is_verified(&ZID_B) && cache_b.is_verified(&ZID_A));

    // Second call: rs1 matches on both sides, V is set by both.
    let (_, _, out) = call(160);
    assert!(out.a_secure().sas_verified_previously);
    assert!(out.b_secure().sas_verified_previously);
    assert!(!out.a_secure().cache_mismatch);

    // B restarts (its RAM-only cache is gone): A sees a cache mismatch, the SAS must be
    // compared again, and A keeps its old secret until it is.
    cache_b.clear();
    let (mut a, _, out) = call(170);
    assert!(out.a_secure().cache_mismatch);
    assert!(!out.a_secure().sas_verified_previously);
    assert!(
        !out.b_secure().cache_mismatch,
        "B has nothing cached, so nothing mismatches"
    );
    assert!(!cache_a.is_verified(&ZID_B));
    a.set_sas_verified(out.end.unwrap(), true);
    assert!(cache_a.is_verified(&ZID_B));

    // Fourth call: in sync again (B stored the third call's rs1, A did once verified).
    let (_, _, out) = call(180);
    assert!(!out.a_secure().cache_mismatch);
    assert!(!out.b_secure().cache_mismatch);
}

#[test]
fn equal_zids_and_foreign_versions_fail() {
    let start = t0();
    let cache = RetainedSecrets::new(8);
    let mut a = session(
        RoleHint::Initiator,
        ZID_A,
        Config::default(),
        &cache,
        190,
        start,
    );
    let mut b = session(
        RoleHint::Responder,
        ZID_A,
        Config::default(),
        &cache,
        191,
        start,
    );
    let out = run(
        &mut a,
        &mut b,
        start,
        LinkModel::default(),
        190,
        Duration::from_secs(10),
        &mut pass(),
    );
    assert_eq!(
        Outcome::failed(&out.b_events).map(|f| f.code),
        Some(ErrorCode::EqualZids)
    );

    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &cache,
        192,
        start,
    );
    let Message::Hello(mut hello) = parse_packet(&hex(captured::HELLO_INITIATOR))
        .unwrap()
        .message
    else {
        unreachable!()
    };
    hello.version = *b"2.00";
    assert_eq!(
        b.handle_packet(start, &encode_packet(1, 2, &Message::Hello(hello).encode())),
        Ok(())
    );
    assert_eq!(b.state(), State::Failed);
    assert!(matches!(
        b.poll_event(),
        Some(ZrtpEvent::Failed(Failure {
            code: ErrorCode::UnsupportedVersion,
            ..
        }))
    ));
}

#[test]
fn captured_linphone_packets_drive_a_responder_until_the_commitment_fails() {
    // A real Linphone Hello and Commit (DH3k) reach our responder; the captured DHPart2
    // was committed to *another* responder's Hello, so hvi fails before any DH work.
    let start = t0();
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &RetainedSecrets::new(8),
        200,
        start,
    );
    assert_eq!(
        b.handle_packet(start, &hex(captured::HELLO_INITIATOR)),
        Ok(())
    );
    assert!(matches!(b.poll_event(), Some(ZrtpEvent::PeerHello { .. })));
    // Commit before HelloACK: taken as the acknowledgement (§4.1).
    assert_eq!(b.handle_packet(start, &hex(captured::COMMIT)), Ok(()));
    assert_eq!(b.state(), State::DhPart1Sent);
    assert_eq!(b.role(), Some(Role::Responder));
    let sent: Vec<MessageType> = std::iter::from_fn(|| b.poll_transmit())
        .map(|p| message_type(&p))
        .collect();
    assert_eq!(
        sent,
        [
            MessageType::Hello,
            MessageType::HelloAck,
            MessageType::DhPart1
        ]
    );
    // A retransmitted Commit gets the same DHPart1 again.
    assert_eq!(b.handle_packet(start, &hex(captured::COMMIT)), Ok(()));
    assert_eq!(
        b.poll_transmit().map(|p| message_type(&p)),
        Some(MessageType::DhPart1)
    );
    // Packets out of place are refused.
    assert_eq!(
        b.handle_packet(start, &hex(captured::CONFIRM2)),
        Err(Discarded::Unexpected(MessageType::Confirm2))
    );
    assert_eq!(
        b.handle_packet(start, &hex(captured::DHPART1)),
        Err(Discarded::Unexpected(MessageType::DhPart1))
    );
    assert_eq!(b.handle_packet(start, &hex(captured::DHPART2)), Ok(()));
    assert_eq!(b.dh_agreements(), 0);
    assert!(matches!(
        b.poll_event(),
        Some(ZrtpEvent::Failed(Failure {
            code: ErrorCode::HviMismatch,
            from_peer: false
        }))
    ));
}

#[test]
fn time_going_backwards_is_ignored_and_random_input_never_panics() {
    let start = t0();
    let mut b = session(
        RoleHint::Responder,
        ZID_B,
        Config::default(),
        &RetainedSecrets::new(8),
        210,
        start,
    );
    let later = start + Duration::from_secs(1);
    b.handle_timeout(later);
    let deadline = b.poll_timeout();
    b.handle_timeout(start);
    assert_eq!(b.poll_timeout(), deadline);

    let mut rng = StdRng::seed_from_u64(211);
    let valid: Vec<Vec<u8>> = [
        captured::HELLO_INITIATOR,
        captured::COMMIT,
        captured::DHPART2,
        captured::CONFIRM2,
    ]
    .iter()
    .map(|h| hex(h))
    .collect();
    for i in 0..3000 {
        let packet = if i % 3 == 0 {
            let mut junk = vec![0u8; rng.gen_range(0..600)];
            rng.fill(&mut junk[..]);
            junk
        } else {
            mutate(&valid[rng.gen_range(0..valid.len())], &mut rng)
        };
        let _ = b.handle_packet(later, &packet);
        while b.poll_transmit().is_some() {}
        while b.poll_event().is_some() {}
    }
}

#[test]
fn huge_configured_waits_do_not_overflow() {
    let config = Config {
        handshake_timeout: Duration::MAX,
        responder_commit_delay: Duration::MAX,
        ..Config::default()
    };
    let out = handshake(
        config.clone(),
        config,
        RoleHint::Initiator,
        RoleHint::Responder,
        220,
    );
    assert_mirrored(&out);
}
