//! The shared RTP port (`rtp_ports = "single:PORT"`): datagrams find their member by
//! source address, in virtual time.

use super::tests::{addr, media, prompts, seed, settings, Tx, TICK};
use super::*;
use crate::media::g711::{ulaw_decode, ulaw_encode};
use crate::media::rtp;
use crate::media::srtp::{CryptoAttribute, KeyMaterial, SrtpContext, Suite};

fn shared() -> Conference {
    Conference::new(
        ConferenceSettings {
            shared_port: true,
            ..settings()
        },
        prompts(),
    )
}

fn at(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Ticks the conference `ticks` times; each tick `feed` may hand it datagrams. Returns
/// how many frames each destination got at `level`.
fn run(
    conf: &mut Conference,
    now: &mut Instant,
    ticks: usize,
    level: i16,
    mut feed: impl FnMut(&mut Conference, Instant),
) -> HashMap<SocketAddr, usize> {
    let mut heard = HashMap::new();
    for _ in 0..ticks {
        *now += TICK;
        feed(conf, *now);
        conf.handle_tick(*now);
        conf.drain_transmits(|_, dest, bytes| {
            if let Ok((_, payload)) = rtp::parse(bytes) {
                if payload.iter().all(|&c| ulaw_decode(c) == level) {
                    *heard.entry(dest).or_insert(0) += 1;
                }
            }
        });
    }
    heard
}

fn join_two(conf: &mut Conference, t0: Instant, a: MediaParams, b: MediaParams) {
    let (ta, tb) = (CallToken::from_raw(1), CallToken::from_raw(2));
    conf.add_member(t0, ta, a, seed(1)).unwrap();
    conf.add_member(t0, tb, b, seed(2)).unwrap();
    conf.join(t0, ta, 0);
    conf.join(t0, tb, 0);
    while conf.poll_event().is_some() {}
}

#[test]
fn members_are_told_apart_by_the_address_their_sdp_named() {
    let t0 = Instant::now();
    let mut conf = shared();
    join_two(&mut conf, t0, media(1), media(2));
    let level = ulaw_decode(ulaw_encode(4000));
    let (mut one, mut stranger) = (Tx::new(1), Tx::new(9));
    let mut now = t0;
    let heard = run(&mut conf, &mut now, 40, level, |c, now| {
        c.handle_shared_rtp(now, addr(1), &mut one.audio(level));
        // Someone nobody named, sending louder: never heard, never latched.
        c.handle_shared_rtp(now, at([192, 0, 2, 1], 5004), &mut stranger.audio(8000));
    });
    assert!(heard.get(&addr(2)).copied().unwrap_or(0) > 30, "{heard:?}");
    assert_eq!(conf.counters().foreign_source, 40);
    // Latched: another port of the same address is a foreign source from now on.
    let before = conf.counters().foreign_source;
    let mut other_port = Tx::new(1);
    conf.handle_shared_rtp(
        now,
        at([127, 0, 0, 1], 40_002),
        &mut other_port.audio(level),
    );
    assert_eq!(conf.counters().foreign_source, before + 1);
}

#[test]
fn a_plain_member_behind_a_nat_latches_only_when_it_is_the_one_waiting_with_that_ip() {
    let t0 = Instant::now();
    let mut conf = shared();
    // Two members whose SDP names the same IP (one PBX) and other ports than they use.
    let a = MediaParams {
        remote: Some(at([10, 0, 0, 1], 4000)),
        ..media(1)
    };
    let b = MediaParams {
        remote: Some(at([10, 0, 0, 1], 4002)),
        ..media(2)
    };
    join_two(&mut conf, t0, a, b);
    let level = ulaw_decode(ulaw_encode(4000));
    let mut tx = Tx::new(1);
    let mut now = t0;
    // Ambiguous: two members wait with this IP; neither is taken.
    run(&mut conf, &mut now, 5, level, |c, now| {
        c.handle_shared_rtp(now, at([10, 0, 0, 1], 7000), &mut tx.audio(level));
    });
    assert_eq!(conf.counters().foreign_source, 5);
    // The second member's packets come from where its SDP said: it latches there, and
    // the first is then the one waiting member with that IP.
    let mut two = Tx::new(2);
    let heard = run(&mut conf, &mut now, 40, level, |c, now| {
        c.handle_shared_rtp(now, at([10, 0, 0, 1], 4002), &mut two.audio(0));
        c.handle_shared_rtp(now, at([10, 0, 0, 1], 7000), &mut tx.audio(level));
    });
    assert!(
        heard.get(&at([10, 0, 0, 1], 4002)).copied().unwrap_or(0) > 30,
        "the NAT'd member was not heard: {heard:?}"
    );
    assert_eq!(conf.counters().foreign_source, 5);
}

#[test]
fn an_srtp_member_is_found_by_its_keys_from_any_address_and_forgeries_are_not() {
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
        local: bridge_key,
    };
    let mut conf = shared();
    let a = MediaParams {
        srtp: Some(keys),
        ..media(1)
    };
    join_two(&mut conf, t0, a, media(2));
    let mut phone_out = SrtpContext::outbound_for(&phone_key).unwrap();
    let level = ulaw_decode(ulaw_encode(4000));
    let (mut tx, mut forger) = (Tx::new(1), Tx::new(9));
    let nat = at([198, 51, 100, 7], 61_000);
    let mut now = t0;
    let heard = run(&mut conf, &mut now, 40, level, |c, now| {
        // A forger at another unknown address, first: its packets fail the trial.
        c.handle_shared_rtp(now, at([203, 0, 113, 5], 9), &mut forger.audio(8000));
        let pkt = tx.audio(level);
        let mut buf = pkt.clone();
        buf.resize(pkt.len() + 16, 0);
        let n = phone_out.protect_rtp(&mut buf, pkt.len()).unwrap();
        buf.truncate(n);
        c.handle_shared_rtp(now, nat, &mut buf);
    });
    assert!(heard.get(&addr(2)).copied().unwrap_or(0) > 30, "{heard:?}");
    // Audio back goes where the SRTP member really is.
    let mut sent_to_nat = 0;
    now += TICK;
    conf.handle_tick(now);
    conf.drain_transmits(|_, dest, _| sent_to_nat += usize::from(dest == nat));
    assert_eq!(sent_to_nat, 1);
    // The forger: tried once while the member waited, then plain foreign; the trials
    // are not counted as SRTP forgeries on the member.
    assert_eq!(conf.counters().foreign_source, 40);
    assert_eq!(conf.counters().srtp_rejected, 0);
}
