//! Privacy: with logging at its most verbose, nothing a caller sent or is known by
//! (caller ID, display name, User-Agent, source address, Call-ID, tags, PIN digits,
//! room id) appears in the log output or on the metrics page.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{test_config, tone_prompts, Identity, Phone};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Log output of this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fetch(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn no_caller_data_in_logs_or_metrics() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .without_time()
            .with_ansi(false)
            .finish(),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let room_id = "bluebird-conference-room";
    let pin = "73195604";
    let config = test_config(&[(room_id, pin)], "41600-41799", "");
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    let metrics = server.metrics_addr().expect("metrics endpoint");

    let mut secrets: Vec<String> = vec![pin.into(), "58206147".into(), room_id.into()];
    let mut phones = Vec::new();
    for i in 0..4u8 {
        let ip = format!("127.0.{}.{}", 7 + i, 20 + i);
        let mut p = Phone::new_at(bridge, 440.0 + 180.0 * i as f64, &ip);
        let id = Identity {
            display_name: format!("Erika Mustermann{i}"),
            user: format!("+4930555012{i}"),
            user_agent: format!("Snom-D785-uniqueUA{i}"),
            request_user: format!("dialled-number-{i}"),
        };
        secrets.extend([
            id.display_name.clone(),
            id.user.clone(),
            id.user_agent.clone(),
            id.request_user.clone(),
            ip.clone(),
            p.call_id().to_string(),
            p.local_tag().to_string(),
        ]);
        p.set_identity(id);
        assert_eq!(p.call(), 200);
        // One caller first types a wrong PIN, then the right one.
        if i == 0 {
            p.dial_digits("58206147#");
        }
        p.dial_digits(&format!("{pin}#"));
        phones.push(p);
    }
    std::thread::sleep(Duration::from_secs(4));
    let page = fetch(metrics, "/metrics");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("sotto_calls_total 4"), "{page}");
    assert!(page.contains("sotto_active_rooms 1"), "{page}");
    assert!(page.contains("sotto_pin_failures_total 1"), "{page}");
    assert!(fetch(metrics, "/").starts_with("HTTP/1.1 404"));
    for p in phones.iter_mut() {
        assert_eq!(p.hangup(), 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let page_after = fetch(metrics, "/metrics");
    assert!(page_after.contains("sotto_active_calls 0"), "{page_after}");
    assert!(
        page_after.contains("sotto_room_size_count 1"),
        "{page_after}"
    );
    rt.block_on(server.stop());

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("caller admitted"),
        "logging was not captured:\n{logs}"
    );
    assert!(logs.contains("wrong PIN"), "{logs}");
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "log output contains caller data {s:?}:\n{logs}"
        );
        assert!(
            !page.contains(s.as_str()),
            "metrics contain caller data {s:?}"
        );
        assert!(
            !page_after.contains(s.as_str()),
            "metrics contain caller data {s:?}"
        );
    }
    // Nor any source port of a phone in address form.
    assert!(!logs.contains("127.0."), "{logs}");
}
