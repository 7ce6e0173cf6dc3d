//! ZRTP in the media path, in virtual time: a phone's ZRTP session against a member's;
//! nothing of the call's audio flows before the exchange is secure, and afterwards
//! both sides' audio is SRTP under the keys the exchange agreed.

use super::tests::{addr, media, prompts, seed, settings, Tx, TICK};
use super::*;
use crate::media::g711::{ulaw_decode, ulaw_encode};
use crate::media::rtp;
use crate::media::srtp::{KeyMaterial, SrtpContext};
use crate::media::zrtp::{self, RoleHint, SecureInfo, Zid, ZrtpEvent};
use rand::SeedableRng;

type Phone = zrtp::Session<rand::rngs::StdRng>;

fn bridge_session(now: Instant) -> Box<ZrtpSession> {
    bridge_session_with(now, zrtp::RetainedSecrets::new(8))
}

fn bridge_session_with(now: Instant, cache: zrtp::RetainedSecrets) -> Box<ZrtpSession> {
    Box::new(zrtp::Session::new(
        RoleHint::Responder,
        Zid([1; 12]),
        seed(1).ssrc,
        zrtp::Config::default(),
        cache,
        now,
        rand::rngs::OsRng,
    ))
}

/// Runs the exchange between `phone` and the member in `slot` to Secure; returns the
/// phone's view of it.
fn exchange(
    conf: &mut Conference,
    slot: usize,
    phone: &mut Phone,
    now: &mut Instant,
) -> SecureInfo {
    for _ in 0..100 {
        *now += TICK;
        if phone.poll_timeout().is_some_and(|t| t <= *now) {
            phone.handle_timeout(*now);
        }
        while let Some(p) = phone.poll_transmit() {
            conf.handle_rtp(*now, slot, addr(1), &mut p.clone());
        }
        conf.handle_tick(*now);
        let (z, _) = split(conf, addr(1));
        for p in &z {
            let _ = phone.handle_packet(*now, p);
        }
        while let Some(ev) = phone.poll_event() {
            if let ZrtpEvent::Secure(info) = ev {
                return info;
            }
        }
    }
    panic!("the exchange did not go secure");
}

fn phone(now: Instant, seed_byte: u8) -> Phone {
    zrtp::Session::new(
        RoleHint::Initiator,
        Zid([seed_byte; 12]),
        0x5eed_0000 + u32::from(seed_byte),
        zrtp::Config::default(),
        zrtp::RetainedSecrets::new(8),
        now,
        rand::rngs::StdRng::seed_from_u64(u64::from(seed_byte)),
    )
}

/// What the bridge sent to the phone's address this tick: ZRTP packets and RTP ones.
fn split(conf: &mut Conference, to: SocketAddr) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut z, mut r) = (Vec::new(), Vec::new());
    conf.drain_transmits(|_, dest, bytes| {
        if dest == to {
            if zrtp::is_zrtp(bytes) {
                z.push(bytes.to_vec());
            } else {
                r.push(bytes.to_vec());
            }
        }
    });
    (z, r)
}

fn contexts(info: &SecureInfo) -> (SrtpContext, SrtpContext) {
    let suite = info.srtp_suite().unwrap();
    let local = KeyMaterial::new(suite, &info.keys.local_key_and_salt()).unwrap();
    let remote = KeyMaterial::new(suite, &info.keys.remote_key_and_salt()).unwrap();
    (
        SrtpContext::new_outbound(suite, &local).unwrap(),
        SrtpContext::new_inbound(suite, &remote).unwrap(),
    )
}

#[test]
fn a_zrtp_caller_hears_nothing_until_secure_then_talks_srtp_under_zrtps_keys() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
    let slot = conf.add_member(t0, a, media(1), seed(1)).unwrap();
    conf.attach_zrtp(a, bridge_session(t0));
    conf.add_member(t0, b, media(2), seed(2)).unwrap();
    conf.join(t0, a, 0);
    conf.join(t0, b, 0);
    let mut phone = phone(t0, 7);
    let mut now = t0;
    let mut phone_secure = None;
    let mut tx = Tx::new(1);
    for _ in 0..100 {
        now += TICK;
        // The phone also sends plain RTP meanwhile: it must not be taken.
        conf.handle_rtp(now, slot, addr(1), &mut tx.audio(4000));
        if phone.poll_timeout().is_some_and(|t| t <= now) {
            phone.handle_timeout(now);
        }
        while let Some(p) = phone.poll_transmit() {
            conf.handle_rtp(now, slot, addr(1), &mut p.clone());
        }
        conf.handle_tick(now);
        let (z, r) = split(&mut conf, addr(1));
        for p in &z {
            let _ = phone.handle_packet(now, p);
        }
        while let Some(ev) = phone.poll_event() {
            if let ZrtpEvent::Secure(info) = ev {
                phone_secure = Some(info);
            }
        }
        if phone_secure.is_none() {
            assert!(r.is_empty(), "RTP was sent before ZRTP was secure");
        } else {
            break;
        }
    }
    let info = phone_secure.expect("the exchange went secure");
    assert_eq!(conf.counters().zrtp_secure, 1);
    assert!(!info.sas.text().is_empty());
    let (mut phone_out, mut phone_in) = contexts(&info);
    let loud = ulaw_decode(ulaw_encode(4000));
    let mut heard_by_b = 0;
    let mut opened = 0;
    for _ in 0..40 {
        now += TICK;
        let pkt = tx.audio(loud);
        let mut buf = pkt.clone();
        buf.resize(pkt.len() + 16, 0);
        let n = phone_out.protect_rtp(&mut buf, pkt.len()).unwrap();
        buf.truncate(n);
        conf.handle_rtp(now, slot, addr(1), &mut buf);
        conf.handle_tick(now);
        conf.drain_transmits(|_, dest, bytes| {
            if dest == addr(2) {
                if let Ok((_, payload)) = rtp::parse(bytes) {
                    if payload.iter().all(|&c| ulaw_decode(c) == loud) {
                        heard_by_b += 1;
                    }
                }
            } else if dest == addr(1) && !zrtp::is_zrtp(bytes) {
                // What the bridge sends the phone opens with ZRTP's keys.
                let mut copy = bytes.to_vec();
                if phone_in.unprotect_rtp(&mut copy, bytes.len()).is_ok() {
                    opened += 1;
                }
            }
        });
    }
    assert!(
        heard_by_b > 25,
        "the ZRTP caller was not heard ({heard_by_b})"
    );
    assert!(opened > 35, "the bridge's SRTP did not open ({opened})");
}

#[test]
fn a_caller_whose_zrtp_never_answers_goes_on_without_it() {
    let t0 = Instant::now();
    let mut conf = Conference::new(settings(), prompts());
    let a = CallToken::from_raw(1);
    let slot = conf.add_member(t0, a, media(1), seed(1)).unwrap();
    conf.attach_zrtp(a, bridge_session(t0));
    let mut now = t0;
    let mut tx = Tx::new(1);
    let mut rtp_sent = 0;
    // Hello is repeated for about 4 s, then the exchange gives up.
    for _ in 0..300 {
        now += TICK;
        conf.handle_rtp(now, slot, addr(1), &mut tx.audio(0));
        conf.handle_tick(now);
        let (_, r) = split(&mut conf, addr(1));
        rtp_sent += r.len();
    }
    assert_eq!(conf.counters().zrtp_failed, 1);
    assert!(rtp_sent > 0, "the call never went on");
}

#[test]
fn the_bridge_reads_the_same_sas_after_the_pin_and_hash_confirms_it() {
    use crate::media::dtmf::Digit;
    use crate::room::prompts::Prompt;
    let t0 = Instant::now();
    let cache = zrtp::RetainedSecrets::new(8);
    let mut conf = Conference::new(settings(), prompts());
    let a = CallToken::from_raw(1);
    let slot = conf.add_member(t0, a, media(1), seed(1)).unwrap();
    conf.attach_zrtp(a, bridge_session_with(t0, cache.clone()));
    let mut phone = phone(t0, 9);
    let mut now = t0;
    let info = exchange(&mut conf, slot, &mut phone, &mut now);
    // The PIN was right: the member joins and first hears its security code.
    conf.join(now, a, 0);
    let queued = conf.slots[slot].as_ref().unwrap().playback.queued();
    let mut read = vec![Prompt::SasIntro];
    read.extend(Prompt::sas(&info.sas).unwrap());
    read.push(Prompt::SasConfirm);
    assert_eq!(
        queued[..read.len()],
        read[..],
        "the bridge read another SAS"
    );
    // `#` confirms it: the retained secret for this phone is marked verified.
    assert!(!cache.is_verified(&Zid([9; 12])));
    conf.handle_digit(now, a, Digit::from_char('#').unwrap());
    assert!(cache.is_verified(&Zid([9; 12])));
    assert!(conf.slots[slot]
        .as_ref()
        .unwrap()
        .playback
        .queued()
        .contains(&Prompt::SasConfirmed));
    // A second `#` is an ordinary key again.
    conf.handle_digit(now, a, Digit::from_char('#').unwrap());
}

#[test]
fn a_zrtp_required_room_refuses_a_caller_without_zrtp_and_takes_one_with_it() {
    use crate::room::{Dismissal, RoomOptions};
    let t0 = Instant::now();
    let required = RoomOptions {
        zrtp_required: true,
        join_leave_tones: false,
        ..RoomOptions::default()
    };
    let settings = ConferenceSettings {
        room_options: Arc::from(vec![required; 4]),
        ..settings()
    };
    let mut conf = Conference::new(settings, prompts());
    let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
    let slot = conf.add_member(t0, a, media(1), seed(1)).unwrap();
    conf.attach_zrtp(a, bridge_session(t0));
    conf.add_member(t0, b, media(2), seed(2)).unwrap();
    let mut phone = phone(t0, 3);
    let mut now = t0;
    exchange(&mut conf, slot, &mut phone, &mut now);
    conf.join(now, a, 0);
    conf.join(now, b, 0);
    assert_eq!(conf.room_size(0), 1, "only the ZRTP caller is in");
    let mut hangups = Vec::new();
    for _ in 0..20 {
        now += TICK;
        conf.handle_tick(now);
        conf.drain_transmits(|_, _, _| {});
        while let Some(ev) = conf.poll_event() {
            if let ConferenceEvent::Hangup { call, reason } = ev {
                hangups.push((call, reason));
            }
        }
    }
    assert_eq!(hangups, vec![(b, HangupReason::Room(Dismissal::NoZrtp))]);
}

#[test]
fn zrtp_upgrades_an_sdes_call_and_the_sdes_keys_stop_working() {
    use crate::media::srtp::{CryptoAttribute, KeyMaterial, Suite};
    let t0 = Instant::now();
    let mut rng = rand::rngs::OsRng;
    let phone_key = CryptoAttribute::parse(&format!(
        "1 AES_CM_128_HMAC_SHA1_80 inline:{}",
        KeyMaterial::generate(Suite::AesCm128HmacSha1_80, &mut rng).to_sdes_inline()
    ))
    .unwrap();
    let keys = SrtpKeys {
        remote: phone_key.clone(),
        local: CryptoAttribute::answer_to(&phone_key, &mut rng),
    };
    let mut conf = Conference::new(settings(), prompts());
    let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
    let sdes = MediaParams {
        srtp: Some(keys),
        ..media(1)
    };
    let slot = conf.add_member(t0, a, sdes, seed(1)).unwrap();
    conf.attach_zrtp(a, bridge_session(t0));
    conf.add_member(t0, b, media(2), seed(2)).unwrap();
    conf.join(t0, a, 0);
    conf.join(t0, b, 0);
    let mut phone = phone(t0, 5);
    let mut now = t0;
    let info = exchange(&mut conf, slot, &mut phone, &mut now);
    let (mut zrtp_out, _) = contexts(&info);
    let mut sdes_out = SrtpContext::outbound_for(&phone_key).unwrap();
    let loud = ulaw_decode(ulaw_encode(4000));
    let mut tx = Tx::new(1);
    let protect = |ctx: &mut SrtpContext, pkt: Vec<u8>| {
        let mut buf = pkt.clone();
        buf.resize(pkt.len() + 16, 0);
        let n = ctx.protect_rtp(&mut buf, pkt.len()).unwrap();
        buf.truncate(n);
        buf
    };
    let rejected = conf.counters().srtp_rejected;
    let mut heard_by_b = 0;
    for i in 0..40 {
        now += TICK;
        // The SDES keys (seen by every SIP hop) no longer open anything.
        if i % 4 == 0 {
            conf.handle_rtp(
                now,
                slot,
                addr(1),
                &mut protect(&mut sdes_out, tx.audio(8000)),
            );
        }
        conf.handle_rtp(
            now,
            slot,
            addr(1),
            &mut protect(&mut zrtp_out, tx.audio(loud)),
        );
        conf.handle_tick(now);
        conf.drain_transmits(|_, dest, bytes| {
            if dest == addr(2) {
                if let Ok((_, payload)) = rtp::parse(bytes) {
                    if payload.iter().all(|&c| ulaw_decode(c) == loud) {
                        heard_by_b += 1;
                    }
                }
            }
        });
    }
    assert!(
        heard_by_b > 25,
        "the upgraded call was not heard ({heard_by_b})"
    );
    assert_eq!(conf.counters().srtp_rejected - rejected, 10);
}
