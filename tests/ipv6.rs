//! IPv6 end to end on `::1`: SIP over UDP to a bracketed listen address, RTP with
//! `c=IN IP6`, two phones type the PIN and hear each other.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{runtime, tone_prompts, tone_share, Phone};
use std::time::Duration;

const PIN: &str = "27182818";

#[test]
fn two_phones_on_ipv6_loopback_hear_each_other() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        panic!("this machine has no IPv6 loopback (::1); the IPv6 test needs it");
    }
    let rt = runtime();
    let hash = sotto::room::pin::cheap_hash_for_tests(PIN, b"salt-ipv6-salt");
    let text = format!(
        "[sip]\nudp = [\"[::1]:0\"]\n[metrics]\nlisten = \"\"\n[mixer]\nshards = 2\n\
         [media]\nrtp_address = \"::1\"\nrtp_ports = \"41600-41799\"\nencryption = \"off\"\n\
         [[room]]\nid = \"v6\"\npin = \"{hash}\"\n"
    );
    let config = sotto::config::Config::parse(&text, "v6.toml".as_ref(), ".".as_ref()).unwrap();
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    assert!(bridge.is_ipv6(), "{bridge}");

    let mut a = Phone::new_at(bridge, 440.0, "::1");
    let mut b = Phone::new_at(bridge, 620.0, "::1");
    assert_eq!(a.call(), 200);
    assert!(
        a.bridge_rtp().is_some_and(|r| r.is_ipv6()),
        "answer is c=IN IP6"
    );
    assert_eq!(b.call(), 200);
    a.dial_digits(&format!("{PIN}#"));
    b.dial_digits(&format!("{PIN}#"));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        tone_share(&a.last_heard(1.0), 620.0, 8000.0) > 0.15,
        "a misses b"
    );
    assert!(
        tone_share(&b.last_heard(1.0), 440.0, 8000.0) > 0.15,
        "b misses a"
    );
    assert!(
        tone_share(&a.last_heard(1.0), 440.0, 8000.0) < 0.01,
        "a hears itself"
    );
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
    rt.block_on(server.stop());
}
