//! Fuzz target: the SIP message parser (`sotto::sip::message::parse`) and everything
//! the transaction and dialog layers then ask of a message.
//!
//! Each input is one datagram. On success every `HeaderAccess` accessor runs, and a
//! request is answered with `build_response`, whose output must parse back as the
//! response it claims to be (a bridge that sends unparseable answers is broken too).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sotto::sip::message::{build_response, parse, HeaderAccess, Limits, Message};
use std::net::SocketAddr;

/// Limits for parsing our own responses back: they may be somewhat larger than the
/// request they answer (received/rport on the top Via, a To tag, extra headers).
const GENEROUS: Limits = Limits {
    max_size: 1 << 20,
    max_headers: 10_000,
};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let input = Bytes::copy_from_slice(data);
    let Ok(message) = parse(input, &limits) else {
        // Tight limits take the other early exits on the same bytes.
        let _ = parse(
            Bytes::copy_from_slice(data),
            &Limits {
                max_size: 256,
                max_headers: 2,
            },
        );
        return;
    };
    assert!(data.len() <= limits.max_size);
    match message {
        Message::Request(request) => {
            assert!(request.body.len() <= data.len());
            let accessors = exercise(&request);
            let sources: [SocketAddr; 2] = [
                SocketAddr::from(([192, 0, 2, 10], 40001)),
                SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 5062)),
            ];
            for (i, source) in sources.into_iter().enumerate() {
                let (code, to_tag, body) = if i == 0 {
                    (
                        200,
                        Some("fuzztag"),
                        Some(("application/sdp", &b"v=0\r\n"[..])),
                    )
                } else {
                    (100, None, None)
                };
                let result = build_response(
                    &request,
                    source,
                    code,
                    to_tag,
                    &[
                        ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
                        ("Supported", ""),
                    ],
                    body,
                );
                // Only Via is indispensable to build_response.
                assert_eq!(result.is_ok(), accessors.vias.is_some());
                if let Ok(bytes) = result {
                    check_response(&bytes, code, accessors.vias.unwrap_or_default());
                }
            }
        }
        Message::Response(response) => {
            assert!(response.body.len() <= data.len());
            exercise(&response);
        }
    }
});

/// What the accessors returned that later checks need.
struct Accessed {
    /// Number of Via values, if the Via headers parse.
    vias: Option<usize>,
}

/// Calls every accessor, as the transaction and dialog layers would.
fn exercise(m: &impl HeaderAccess) -> Accessed {
    let vias = m.vias().ok().map(|v| {
        assert!(!v.is_empty(), "vias() is Ok only with at least one Via");
        v.len()
    });
    assert_eq!(m.top_via().is_ok(), vias.is_some());
    if let Ok(call_id) = m.call_id() {
        assert!(!call_id.is_empty());
    }
    let _ = m.cseq();
    let _ = m.from().map(|f| f.tag);
    let _ = m.to().map(|t| t.tag);
    let _ = m.max_forwards();
    let _ = m.contact();
    let _ = m.record_route();
    Accessed { vias }
}

/// Our response must parse back as a response with the code we gave and every Via.
fn check_response(bytes: &[u8], code: u16, vias: usize) {
    let parsed = parse(Bytes::copy_from_slice(bytes), &GENEROUS);
    let response = match parsed {
        Ok(Message::Response(r)) => r,
        other => panic!(
            "build_response wrote something that does not parse as a response ({:?}):\n{}",
            other.map(|_| "a request"),
            String::from_utf8_lossy(bytes)
        ),
    };
    assert_eq!(response.code, code);
    let back = response.vias().unwrap_or_else(|e| {
        panic!(
            "our response's Via does not parse ({e}):\n{}",
            String::from_utf8_lossy(bytes)
        )
    });
    assert_eq!(back.len(), vias, "Via count changed in the response");
}
