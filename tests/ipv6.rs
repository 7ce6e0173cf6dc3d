//! IPv6 end to end on `::1`: SIP over UDP, TCP and TLS to bracketed listen addresses,
//! RTP with `c=IN IP6`; three phones type the PIN and hear each other.
#![allow(clippy::disallowed_methods)]

mod common;

use common::link::LinkKind;
use common::{assert_each_hears_the_others, runtime, tone_prompts, Phone};
use std::time::Duration;

const PIN: &str = "27182818";

#[test]
fn phones_over_udp_tcp_and_tls_on_ipv6_loopback_hear_each_other() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        panic!("this machine has no IPv6 loopback (::1); the IPv6 test needs it");
    }
    let rt = runtime();
    let hash = sotto::room::pin::cheap_hash_for_tests(PIN, b"salt-ipv6-salt");
    let text = format!(
        "[sip]\nudp = [\"[::1]:0\"]\ntcp = [\"[::1]:0\"]\ntls = [\"[::1]:0\"]\n[metrics]\nlisten = \"\"\n[mixer]\nshards = 2\n\
         [media]\nrtp_address = \"::1\"\nrtp_ports = \"41600-41799\"\nencryption = \"off\"\n\
         [[room]]\nid = \"v6\"\npin = \"{hash}\"\n"
    );
    let config = sotto::config::Config::parse(&text, "v6.toml".as_ref(), ".".as_ref()).unwrap();
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    assert!(bridge.is_ipv6(), "{bridge}");

    let (tcp, tls) = (server.tcp_addr().unwrap(), server.tls_addr().unwrap());
    assert!(tcp.is_ipv6() && tls.is_ipv6(), "{tcp} {tls}");
    let mut a = Phone::with_link(bridge, 440.0, "::1", LinkKind::Udp);
    let mut b = Phone::with_link(tcp, 620.0, "::1", LinkKind::Tcp);
    let mut c = Phone::with_link(tls, 1040.0, "::1", LinkKind::Tls);
    assert_eq!(a.call(), 200);
    assert!(
        a.bridge_rtp().is_some_and(|r| r.is_ipv6()),
        "answer is c=IN IP6"
    );
    assert_eq!(b.call(), 200);
    assert_eq!(c.call(), 200);
    for p in [&a, &b, &c] {
        p.dial_digits(&format!("{PIN}#"));
    }
    std::thread::sleep(Duration::from_secs(4));
    assert_each_hears_the_others(&[&a, &b, &c], &[440.0, 620.0, 1040.0]);
    for p in [&mut a, &mut b, &mut c] {
        assert_eq!(p.hangup(), 200);
    }
    rt.block_on(server.stop());
}
