//! SIP over UDP, TCP and TLS into one room; `sips:` only over TLS; the bridge's own BYE
//! travels back on the caller's TLS connection.
#![allow(clippy::disallowed_methods)]

mod common;

use common::link::LinkKind;
use common::{test_config_with, tone_prompts, tone_share, Identity, Phone};
use std::time::Duration;

const PIN: &str = "55512345";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn config(rtp: &str) -> sotto::config::Config {
    test_config_with(
        &[("team", PIN)],
        rtp,
        "",
        "tcp = [\"127.0.0.1:0\"]\ntls = [\"127.0.0.1:0\"]",
    )
}

#[test]
fn udp_tcp_and_tls_callers_share_a_room() {
    let rt = runtime();
    let server = rt
        .block_on(sotto::server::start(config("41800-41999"), tone_prompts()))
        .unwrap();
    let (udp, tcp, tls) = (
        server.sip_addr(),
        server.tcp_addr().expect("tcp listener"),
        server.tls_addr().expect("tls listener"),
    );
    let mut a = Phone::with_link(udp, 440.0, "127.0.0.1", LinkKind::Udp);
    let mut b = Phone::with_link(tcp, 620.0, "127.0.0.1", LinkKind::Tcp);
    let mut c = Phone::with_link(tls, 1040.0, "127.0.0.1", LinkKind::Tls);
    for p in [&mut a, &mut b, &mut c] {
        assert_eq!(p.call(), 200);
        p.dial_digits(&format!("{PIN}#"));
    }
    std::thread::sleep(Duration::from_secs(3));
    let tones = [440.0, 620.0, 1040.0];
    for (i, p) in [&a, &b, &c].into_iter().enumerate() {
        let heard = p.last_heard(1.0);
        for (j, &f) in tones.iter().enumerate() {
            let share = tone_share(&heard, f, 8000.0);
            if i == j {
                assert!(share < 0.01, "phone {i} hears itself ({share:.3})");
            } else {
                assert!(share > 0.15, "phone {i} misses phone {j} ({share:.3})");
            }
        }
    }
    for p in [&mut a, &mut b, &mut c] {
        assert_eq!(p.hangup(), 200);
    }
    rt.block_on(server.stop());
}

#[test]
fn sips_is_refused_off_tls_and_the_bridge_bye_uses_the_tls_connection() {
    let rt = runtime();
    let server = rt
        .block_on(sotto::server::start(config("42000-42199"), tone_prompts()))
        .unwrap();
    let sips = Identity {
        request_user: "conference".into(),
        ..Identity::default()
    };
    // A sips: request over TCP is refused.
    let mut plain = Phone::with_link(server.tcp_addr().unwrap(), 0.0, "127.0.0.1", LinkKind::Tcp);
    plain.set_identity(sips.clone());
    plain.use_sips(true);
    assert_eq!(plain.call(), 416);

    // Over TLS it is accepted; three wrong PINs make the bridge hang up, on the same connection.
    let mut caller = Phone::with_link(server.tls_addr().unwrap(), 0.0, "127.0.0.1", LinkKind::Tls);
    caller.use_sips(true);
    assert_eq!(caller.call(), 200);
    caller.dial_digits("11112222#33334444#55556666#");
    assert!(
        caller.wait_for_bye(Duration::from_secs(10)),
        "no BYE over TLS"
    );
    rt.block_on(server.stop());
}
