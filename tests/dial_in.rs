//! Dial-in numbers and trunks end to end over loopback: a call to a room's `dial_in`
//! target from a trunk joins without a PIN when the room says so; the same target from
//! a stranger still needs the PIN; a target that needs its room's PIN takes only that
//! room's PIN; an unknown target gets 404 when the config says `reject`; a PBX's
//! INVITE without SDP gets the bridge's offer and talks once it answers in the ACK.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{runtime, tone_prompts, tone_share, Identity, Phone};
use std::time::Duration;

const BOARD_PIN: &str = "27182818";
const TEAM_PIN: &str = "31415926";

/// Two rooms: `board` (DID +49 30 123456, no PIN from a trunk) and `team` (alias
/// `team`, its PIN required); one trunk, 127.0.0.2.
fn config(unknown_target: &str) -> sotto::config::Config {
    let hash = |pin: &str, salt: &str| sotto::room::pin::cheap_hash_for_tests(pin, salt.as_bytes());
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nunknown_target = \"{unknown_target}\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n[mixer]\nshards = 2\n\
         [media]\nrtp_ports = \"41400-41599\"\nencryption = \"off\"\n\
         [[room]]\nid = \"board\"\npin = \"{}\"\ndial_in = [\"+49 30 123456\"]\npin_required = false\n\
         [[room]]\nid = \"team\"\npin = \"{}\"\ndial_in = [\"team\"]\n\
         [[trunk]]\nname = \"office-pbx\"\nnetworks = [\"127.0.0.2/32\"]\n",
        hash(BOARD_PIN, "salt-board-salt"),
        hash(TEAM_PIN, "salt-team-salt"),
    );
    sotto::config::Config::parse(&text, "dial_in.toml".as_ref(), ".".as_ref()).expect("config")
}

fn phone(bridge: std::net::SocketAddr, tone: f64, ip: &str, target: &str) -> Phone {
    let mut p = Phone::new_at(bridge, tone, ip);
    p.set_identity(Identity {
        request_user: target.to_string(),
        ..Identity::default()
    });
    p
}

fn hears(p: &Phone, freq: f64) -> f64 {
    tone_share(&p.last_heard(1.0), freq, 8000.0)
}

#[test]
fn a_did_from_the_trunk_joins_at_once_and_other_targets_need_their_pin() {
    let rt = runtime();
    let server = rt
        .block_on(sotto::server::start(config("pin"), tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();

    // Two callers through the PBX dial the board's number, written two ways: in.
    let mut a = phone(bridge, 440.0, "127.0.0.2", "004930123456");
    let mut b = phone(bridge, 620.0, "127.0.0.2", "+49-30-123456");
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    // A stranger (not the trunk, plain UDP) dials the same number: asked for the PIN.
    let mut stranger = phone(bridge, 1040.0, "127.0.0.3", "+4930123456");
    assert_eq!(stranger.call(), 200);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hears(&a, 620.0) > 0.15,
        "a does not hear b: no PIN-free join"
    );
    assert!(hears(&b, 440.0) > 0.15, "b does not hear a");
    assert!(
        hears(&a, 1040.0) < 0.01,
        "the stranger got in without a PIN"
    );
    assert!(
        tone_share(&stranger.received()[..8000], 300.0, 8000.0) > 0.3,
        "the stranger was not asked for the PIN"
    );
    stranger.dial_digits(&format!("{BOARD_PIN}#"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hears(&a, 1040.0) > 0.1,
        "the stranger's right PIN did not admit it"
    );

    // The team's alias takes the team's PIN only: the board's PIN is wrong there.
    let mut t = phone(bridge, 1700.0, "127.0.0.4", "TEAM");
    assert_eq!(t.call(), 200);
    std::thread::sleep(Duration::from_millis(500));
    t.dial_digits(&format!("{BOARD_PIN}#"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hears(&a, 1700.0) < 0.01,
        "another room's PIN opened the board"
    );
    assert!(
        tone_share(&t.last_heard(2.5), 350.0, 8000.0) > 0.01,
        "no wrong-PIN prompt"
    );
    t.dial_digits(&format!("{TEAM_PIN}#"));
    let mut u = phone(bridge, 2600.0, "127.0.0.5", "team");
    assert_eq!(u.call(), 200);
    std::thread::sleep(Duration::from_millis(300));
    u.dial_digits(&format!("{TEAM_PIN}#"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hears(&t, 2600.0) > 0.15,
        "the team's PIN did not admit both"
    );
    assert!(hears(&t, 440.0) < 0.01, "the team hears the board");

    for p in [&mut a, &mut b, &mut stranger, &mut t, &mut u] {
        assert_eq!(p.hangup(), 200);
    }
    rt.block_on(server.stop());
}

#[test]
fn an_unknown_target_gets_404_when_the_config_says_reject() {
    let rt = runtime();
    let server = rt
        .block_on(sotto::server::start(config("reject"), tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    let mut nobody = phone(bridge, 0.0, "127.0.0.1", "conference");
    assert_eq!(nobody.call(), 404);
    let mut team = phone(bridge, 0.0, "127.0.0.1", "team");
    assert_eq!(team.call(), 200);
    assert_eq!(team.hangup(), 200);
    rt.block_on(server.stop());
}

#[test]
fn a_pbx_invite_without_offer_gets_ours_and_talks_after_answering_in_the_ack() {
    let rt = runtime();
    let server = rt
        .block_on(sotto::server::start(config("pin"), tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    // From the trunk, to the board's DID (no PIN), without SDP in the INVITE.
    let mut a = phone(bridge, 440.0, "127.0.0.2", "+4930123456");
    let mut b = phone(bridge, 620.0, "127.0.0.2", "+4930123456");
    assert_eq!(a.call_without_offer(), 200);
    assert_eq!(b.call(), 200);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hears(&a, 620.0) > 0.15,
        "the offer-less caller does not hear the other"
    );
    assert!(
        hears(&b, 440.0) > 0.15,
        "the other does not hear the offer-less caller"
    );
    // A re-INVITE without SDP (as after a transfer): our offer, its answer in the ACK,
    // and the call goes on.
    assert_eq!(b.reinvite_without_offer(), 200);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        hears(&a, 620.0) > 0.15,
        "audio stopped after the offer-less re-INVITE"
    );
    assert!(
        hears(&b, 440.0) > 0.15,
        "audio stopped after the offer-less re-INVITE"
    );
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
    rt.block_on(server.stop());
}
