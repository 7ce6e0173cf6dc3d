//! The load generator's engine (`sotto::load`, the core of `sotto-load`) against a
//! bridge in this process: every call is set up and admitted, audio flows both ways,
//! the marker's bursts are timed, and every call is hung up cleanly; over plain UDP,
//! SDES-SRTP (AES-CM) over UDP, and TLS with AEAD-GCM and Opus.
//!
//! What is asserted is what breaks when the generator or the bridge is broken, with
//! margins for a loaded 2-core CI machine: no timing is asserted tighter than
//! "audio arrives" (received ≥ 80 % of what 20 ms packets would bring, delay under
//! 500 ms, no silence of a second). The figures are printed (`--nocapture`).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{runtime, test_config, test_config_with, tone_prompts};
use sotto::config::Codec;
use sotto::load::{LoadConfig, Report, SipTransport};
use sotto::media::srtp::Suite;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const PIN: &str = "31415926";

/// Runs the engine on a runtime of its own (the bridge has its own too) with a
/// generous overall bound.
fn run_load(config: LoadConfig) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(150),
                sotto::load::run(config, |p| eprintln!("{}", p.line())),
            )
            .await
        })
        .expect("the load run is bounded")
        .expect("the load run");
    println!("{}", report.table());
    report
}

fn sources(third: u8, n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::from([127, 0, third, i])).collect()
}

/// The assertions every run must pass, for `calls` calls.
fn assert_healthy(r: &Report, calls: u64) {
    let u = &r.setup;
    assert_eq!(u.placed, calls);
    assert_eq!(u.answered, calls, "first error: {:?}", u.first_error);
    assert_eq!(u.up, calls, "members in the room at hold start");
    assert_eq!(
        u.admission_heard, calls,
        "every member hears the room after '#'"
    );
    assert!(u.latency_ms.is_some() && u.admission_ms.is_some());

    let h = &r.hold;
    assert_eq!(h.members, calls);
    assert!(
        h.received as f64 >= 0.8 * h.expected as f64,
        "received {} of {} packets",
        h.received,
        h.expected
    );
    assert!(
        h.longest_gap_ms < 1000.0,
        "a silence of {} ms",
        h.longest_gap_ms
    );
    assert_eq!(h.dropped, 0);

    // The marker's bursts crossed the bridge and were timed.
    let d = &r.delay;
    assert!(d.bursts_sent >= 2, "bursts sent: {}", d.bursts_sent);
    let delay = d.ms.expect("delay measured");
    assert!(d.heard >= d.bursts_sent, "heard {} bursts", d.heard);
    assert!(
        delay.p50 > 0.0 && delay.p99 < 500.0,
        "delay p50 {} p99 {}",
        delay.p50,
        delay.p99
    );

    // Everyone sent and heard audio; everyone hung up and got a 200.
    let g = &r.generator;
    assert!(g.packets_out as f64 >= 0.8 * (calls as f64 * r.hold.seconds * 50.0));
    assert!(g.packets_in >= h.received);
    assert_eq!(r.hangup.byes_sent, calls);
    assert_eq!(r.hangup.answered_ok, calls);
    assert_eq!(r.hangup.ended_by_bridge, 0);
}

#[test]
fn ten_callers_over_plain_udp_are_set_up_heard_timed_and_hung_up() {
    let rt = runtime();
    let config = test_config(&[("team", PIN)], "43000-43199", "");
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let mut load = LoadConfig::new(server.sip_addr());
    load.calls = 10;
    load.rate = 10.0;
    load.hold = Duration::from_secs(5);
    load.talkers = 0.3;
    load.pin = PIN.into();
    load.sources = sources(2, 10);
    // In process, our own figures include the generator's work: this only checks
    // that /proc is read.
    load.bridge_pid = Some(std::process::id());
    let r = run_load(load);
    assert_healthy(&r, 10);
    assert_eq!(r.settings.talkers, 3);
    assert_eq!(r.settings.sources, 10);
    let b = r.bridge.as_ref().expect("process figures");
    assert!(b.rss_steady_kib > 0 && b.cpu_us_per_member_second.is_some());
    assert!(r.to_json().contains("\"packets_received\""));
    rt.block_on(server.stop());
}

#[test]
fn srtp_aes_cm_over_udp() {
    let rt = runtime();
    let config = test_config(
        &[("team", PIN)],
        "43200-43399",
        "encryption = \"required\"\nallow_sdes_without_tls = true",
    );
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let mut load = LoadConfig::new(server.sip_addr());
    load.calls = 4;
    load.hold = Duration::from_secs(3);
    load.pin = PIN.into();
    load.srtp = Some(Suite::AesCm128HmacSha1_80);
    load.sources = sources(3, 4);
    let r = run_load(load);
    assert_healthy(&r, 4);
    assert_eq!(r.settings.srtp, "AES_CM_128_HMAC_SHA1_80");

    // A plain offer to this bridge is refused, and counted as such.
    let mut plain = LoadConfig::new(server.sip_addr());
    plain.calls = 1;
    plain.hold = Duration::from_secs(1);
    plain.sources = sources(3, 1);
    let r = run_load(plain);
    assert_eq!(r.setup.answered, 0);
    assert_eq!(r.setup.refused, vec![(488, 1)]);
    rt.block_on(server.stop());
}

#[test]
fn opus_with_aead_gcm_over_tls() {
    let rt = runtime();
    let config = test_config_with(
        &[("team", PIN)],
        "43400-43599",
        "encryption = \"required\"",
        "tls = [\"127.0.0.1:0\"]",
    );
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let tls: SocketAddr = server.tls_addr().expect("TLS listener");
    let mut load = LoadConfig::new(tls);
    load.transport = SipTransport::Tls;
    load.srtp = Some(Suite::AeadAes128Gcm);
    load.codec = Codec::Opus;
    load.calls = 3;
    load.hold = Duration::from_secs(3);
    load.pin = PIN.into();
    load.sources = sources(4, 3);
    let r = run_load(load);
    assert_healthy(&r, 3);
    assert_eq!(
        (r.settings.transport.as_str(), r.settings.codec.as_str()),
        ("tls", "opus")
    );
    rt.block_on(server.stop());
}

#[test]
fn every_call_on_one_shared_rtp_port_plain_and_srtp() {
    // `rtp_ports = "single:PORT"`: the shard tells members apart by source address and
    // moves their datagrams in batches; audio, delay and hang-up as with a port each.
    let rt = runtime();
    let config = test_config(&[("team", PIN)], "single:43600", "");
    assert_eq!(config.media.rtp_single_port, Some(43600));
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let mut load = LoadConfig::new(server.sip_addr());
    load.calls = 10;
    load.rate = 10.0;
    load.hold = Duration::from_secs(4);
    load.talkers = 0.3;
    load.pin = PIN.into();
    load.sources = sources(5, 10);
    let r = run_load(load);
    assert_healthy(&r, 10);
    rt.block_on(server.stop());

    let config = test_config(
        &[("team", PIN)],
        "single:43602",
        "encryption = \"required\"\nallow_sdes_without_tls = true",
    );
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let mut load = LoadConfig::new(server.sip_addr());
    load.calls = 4;
    load.hold = Duration::from_secs(3);
    load.pin = PIN.into();
    load.srtp = Some(Suite::AesCm128HmacSha1_80);
    load.sources = sources(6, 4);
    let r = run_load(load);
    assert_healthy(&r, 4);
    rt.block_on(server.stop());
}
