//! SIP over UDP, TCP and TLS into one room; `sips:` only over TLS; the bridge's own BYE
//! travels back on the caller's TLS connection.
#![allow(clippy::disallowed_methods)]

mod common;

use common::link::LinkKind;
use common::{
    assert_each_hears_the_others, runtime, test_config_with, tone_prompts, tone_share, Identity,
    Phone,
};
use std::time::Duration;

const PIN: &str = "55512345";

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
    assert_each_hears_the_others(&[&a, &b, &c], &[440.0, 620.0, 1040.0]);
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

/// Opens `n` TCP connections to `addr` from 127.0.<a>.<b> sources, `per` per source.
async fn open_many(addr: std::net::SocketAddr, n: usize, per: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let src = format!("127.0.{}.{}:0", 100 + (i / per) / 200, 1 + (i / per) % 200);
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(src.parse().unwrap()).unwrap();
        if let Ok(s) = sock.connect(addr).await {
            out.push(s);
        }
    }
    out
}

/// Waits until the server side has closed the connection (EOF or error), up to `limit`.
async fn closed_within(mut s: tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 64];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[test]
fn idle_connections_and_a_slow_loris_are_cut_off_while_a_call_keeps_its_audio() {
    let rt = runtime();
    let config = test_config_with(
        &[("team", PIN)],
        "42200-42399",
        "",
        "tls = [\"127.0.0.1:0\"]\nmax_connections = 200\nmax_connections_per_source = 20\nmessage_timeout_secs = 2",
    );
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let tls = server.tls_addr().unwrap();
    let mut a = Phone::with_link(server.sip_addr(), 440.0, "127.0.0.1", LinkKind::Udp);
    let mut b = Phone::with_link(tls, 620.0, "127.0.0.1", LinkKind::Tls);
    for p in [&mut a, &mut b] {
        assert_eq!(p.call(), 200);
        p.dial_digits(&format!("{PIN}#"));
    }
    std::thread::sleep(Duration::from_secs(2));

    let (idle_closed, loris_closed) = rt.block_on(async {
        // 500 connections that never speak, from 25 sources: most hit a cap at once,
        // the rest the 2 s deadline.
        let idle = open_many(tls, 500, 20).await;
        // A slow-loris: starts a message, then one byte every 300 ms, never finishing.
        let mut loris = tokio::net::TcpStream::connect(tls).await.unwrap();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                .iter()
                .cycle()
                .take(40)
            {
                if loris.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            false
        });
        let mut closed = 0;
        let checks: Vec<_> = idle
            .into_iter()
            .map(|s| tokio::spawn(closed_within(s, Duration::from_secs(5))))
            .collect();
        for c in checks {
            if c.await.unwrap() {
                closed += 1;
            }
        }
        (closed, writer.await.unwrap())
    });
    assert_eq!(idle_closed, 500, "idle connections left open");
    assert!(loris_closed, "the slow-loris connection was not cut off");

    // The TLS caller's call went on: it still hears the other side.
    assert!(
        tone_share(&b.last_heard(1.0), 440.0, 8000.0) > 0.3,
        "TLS caller lost audio"
    );
    assert!(
        tone_share(&a.last_heard(1.0), 620.0, 8000.0) > 0.3,
        "UDP caller lost audio"
    );
    assert_eq!(b.hangup(), 200, "TLS connection of the call was dropped");
    assert_eq!(a.hangup(), 200);
    rt.block_on(server.stop());
}

#[test]
fn behind_nat_the_contact_names_the_public_address() {
    let rt = runtime();
    let config = test_config_with(
        &[("team", PIN)],
        "42000-42099",
        "public_address = \"203.0.113.7\"",
        "",
    );
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let me = sock.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:team@{bridge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKnat;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@{me}>;tag=n1\r\nTo: <sip:team@{bridge}>\r\n\
         Call-ID: nat@test\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{me}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(invite.as_bytes(), bridge).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 200"), "{text}");
    let contact = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .expect("Contact");
    assert!(
        contact.contains(&format!("203.0.113.7:{}", bridge.port())),
        "{contact}"
    );
    assert!(
        text.contains("c=IN IP4 203.0.113.7"),
        "SDP names it too: {text}"
    );
    rt.block_on(server.stop());
}
