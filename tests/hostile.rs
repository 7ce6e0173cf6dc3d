//! Hostile networks, in process and on loopback only: a SIP flood plus an RTP spray must
//! not disturb established calls, and PIN guessing is throttled per source while a
//! caller with the right PIN from another source still gets in. Bounded in count and
//! time (`SOTTO_FLOOD_SECS`, default 30).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{
    metric, metrics, runtime, test_config, test_config_with, tone_prompts, tone_share, Phone,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PIN: &str = "86420975";

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One flood datagram: garbage, an INVITE, or a scanner's OPTIONS.
fn flood_message(i: u64, src: SocketAddr, bridge: SocketAddr) -> Vec<u8> {
    match i % 3 {
        0 => (0..200).map(|k| (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8).collect(),
        1 => {
            let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 9 RTP/AVP 0\r\n";
            format!(
                "INVITE sip:conference@{bridge} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bKflood{i}\r\nMax-Forwards: 70\r\nFrom: <sip:f@{src}>;tag=f{i}\r\nTo: <sip:conference@{bridge}>\r\nCall-ID: flood{i}@x\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
            .into_bytes()
        }
        _ => format!(
            "OPTIONS sip:100@{bridge} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bKscan{i}\r\nFrom: <sip:100@{src}>;tag=s{i}\r\nTo: <sip:100@{bridge}>\r\nCall-ID: scan{i}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    }
}

#[test]
fn a_sip_flood_and_an_rtp_spray_leave_established_calls_alone() {
    let secs: u64 = std::env::var("SOTTO_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let rt = runtime();
    let config = test_config(&[("team", PIN)], "42600-42799", "");
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    let tones = [440.0, 620.0, 1040.0];
    let mut phones: Vec<Phone> = tones.iter().map(|&f| Phone::new(bridge, f)).collect();
    for p in phones.iter_mut() {
        assert_eq!(p.call(), 200);
        p.dial_digits(&format!("{PIN}#"));
    }
    std::thread::sleep(Duration::from_secs(3));
    let baseline = rss_kib();
    let targets: Vec<SocketAddr> = phones.iter().map(|p| p.bridge_rtp().unwrap()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood_start = Instant::now();
    // 2,000 SIP messages a second from eight sources, for `secs` seconds.
    let sip_flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let socks: Vec<UdpSocket> = (0..8)
                .map(|i| UdpSocket::bind(format!("127.0.9.{}:0", i + 1)).unwrap())
                .collect();
            let mut i = 0u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && flood_start.elapsed() < Duration::from_secs(secs)
            {
                // 20 messages per 10 ms tick = 2,000 per second.
                for _ in 0..20 {
                    let s = &socks[(i % 8) as usize];
                    let msg = flood_message(i, s.local_addr().unwrap(), bridge);
                    let _ = s.send_to(&msg, bridge);
                    i += 1;
                }
                sent.fetch_add(20, Ordering::Relaxed);
                next += Duration::from_millis(10);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        })
    };
    // RTP spray: forged packets at every member's port from another address, 500 a second each.
    let rtp_spray = {
        let stop = stop.clone();
        let targets = targets.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.8.1:0").unwrap();
            let mut seq: u16 = 0;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && flood_start.elapsed() < Duration::from_secs(secs)
            {
                for t in &targets {
                    let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
                    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                    pkt.extend_from_slice(&[0x55; 160]);
                    let _ = s.send_to(&pkt, t);
                }
                seq = seq.wrapping_add(1);
                next += Duration::from_millis(2);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(secs.min(10)));
    // Mid-flood: everyone still hears the others and not the spray.
    for (i, p) in phones.iter().enumerate() {
        let heard = p.last_heard(1.0);
        for (j, &f) in tones.iter().enumerate() {
            let share = tone_share(&heard, f, 8000.0);
            if i == j {
                assert!(share < 0.01, "phone {i} hears itself during the flood");
            } else {
                assert!(
                    share > 0.15,
                    "phone {i} lost phone {j} during the flood ({share:.3})"
                );
            }
        }
    }
    sip_flood.join().unwrap();
    rtp_spray.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let flooded = sent.load(Ordering::Relaxed);
    assert!(
        flooded >= 1000 * secs,
        "the flood sent only {flooded} messages"
    );
    for (i, p) in phones.iter().enumerate() {
        let gap = p.max_gap_since(flood_start);
        // The figure (40-60 ms on an idle 2-core machine, see docs/security.md) is
        // printed, not asserted: timing on a shared CI machine is not a test. What is
        // asserted is that no member's audio stalled.
        println!("phone {i}: longest gap between packets during the flood: {gap:?}");
        assert!(
            gap <= Duration::from_millis(500),
            "phone {i}'s audio stalled for {gap:?}"
        );
    }
    let page = metrics(server.metrics_addr().unwrap());
    println!(
        "flood: {flooded} sent; dropped rate_limited={} scanner={} malformed={} amplification={}; rtp_foreign_source={}",
        metric(&page, "sotto_sip_dropped_total{reason=\"rate_limited\"}"),
        metric(&page, "sotto_sip_dropped_total{reason=\"scanner\"}"),
        metric(&page, "sotto_sip_dropped_total{reason=\"malformed\"}"),
        metric(&page, "sotto_sip_dropped_total{reason=\"amplification\"}"),
        metric(&page, "sotto_rtp_foreign_source_total"),
    );
    assert!(metric(&page, "sotto_sip_dropped_total{reason=\"rate_limited\"}") > 0);
    assert!(metric(&page, "sotto_rtp_foreign_source_total") > 0);

    // Flood calls that never ACK expire after 64·T1; memory returns to its baseline.
    std::thread::sleep(Duration::from_secs(34));
    let after = rss_kib();
    println!("RSS: baseline {baseline} KiB, after the flood {after} KiB");
    assert!(
        after < baseline + 32 * 1024,
        "memory grew by {} KiB and stayed",
        after.saturating_sub(baseline)
    );
    for p in phones.iter_mut() {
        assert_eq!(p.hangup(), 200);
    }
    rt.block_on(server.stop());
}

#[test]
fn pin_guessing_is_throttled_while_the_right_pin_from_elsewhere_gets_in() {
    let rt = runtime();
    let config = test_config_with(
        &[("team", PIN)],
        "42800-42999",
        "",
        "[limits]\nsource_free_failures = 2\nsource_backoff_secs = 60",
    );
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();

    // A guesser from one source: several calls, three wrong PINs each.
    for round in 0..3 {
        let mut g = Phone::new_at(bridge, 0.0, "127.0.10.1");
        assert_eq!(g.call(), 200, "guess call {round} not answered");
        g.dial_digits("11111111#22222222#33333333#");
        assert!(
            g.wait_for_bye(Duration::from_secs(15)),
            "guesser {round} not hung up"
        );
    }
    let page = metrics(server.metrics_addr().unwrap());
    let failures = metric(&page, "sotto_pin_failures_total");
    let lockouts = metric(&page, "sotto_lockouts_total");
    let refused = metric(&page, "sotto_pin_refused_total");
    println!(
        "guessing: checked failures {failures}, refused unchecked {refused}, lockouts {lockouts}"
    );
    assert!(lockouts >= 1, "the guessing source was never throttled");
    // Nine attempts were made; once throttled they are refused unchecked.
    assert!(failures < 9, "every guess was checked ({failures})");
    assert_eq!(failures + refused, 9, "every attempt is checked or refused");

    // Meanwhile a caller from another source with the right PIN gets in.
    let mut host = Phone::new_at(bridge, 440.0, "127.0.11.1");
    let mut guest = Phone::new_at(bridge, 620.0, "127.0.12.1");
    for p in [&mut host, &mut guest] {
        assert_eq!(p.call(), 200);
        p.dial_digits(&format!("{PIN}#"));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        tone_share(&guest.last_heard(1.0), 440.0, 8000.0) > 0.3,
        "right PIN refused"
    );
    for p in [&mut host, &mut guest] {
        assert_eq!(p.hangup(), 200);
    }
    rt.block_on(server.stop());
}
