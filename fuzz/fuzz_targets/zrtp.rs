//! Fuzz target: ZRTP (`sotto::media::zrtp`), the packets that share the RTP port.
//!
//! 1. The input as one packet to `packet::parse_packet`; whatever parses re-encodes to
//!    a message that parses the same.
//! 2. The input drives a responder `Session` that has already taken a real Linphone
//!    Hello (and, if the first byte is odd, its Commit, so the session waits for
//!    DHPart2): first
//!    the raw input as a packet, then the input cut into messages that the target
//!    frames itself (preamble, length, type block chosen by the input, and a correct
//!    CRC), so that the fuzzer reaches the state machine instead of the CRC check.
//!    The virtual clock advances between messages and every deadline is run.
//!
//! Checked: no panic; everything the session sends parses as ZRTP; the session never
//! reaches Secure (that needs the initiator's hash chain and a DHPart2 matching the
//! committed hvi, i.e. a SHA-256 preimage); it computes at most one DH result; its
//! deadlines move forward (no timer fires forever).

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use sotto::media::zrtp::packet::{encode_packet, parse_packet, Message, MessageType};
use sotto::media::zrtp::session::State;
use sotto::media::zrtp::{Config, RetainedSecrets, RoleHint, Session, Zid, ZrtpEvent};

/// A Hello and a DH3k Commit from a Linphone endpoint (SSRC 0x87654321), from the
/// Wireshark capture published in bzrtp's test/bzrtpParserTest.c.
const LINPHONE_HELLO: &str = "\
    100002ce5a52545087654321505a001e48656c6c6f202020312e31304c494e50484f4e452d5a5254504350508d0f5a20\
    79974201994545f70e3106e105c0b924e9c978c738f59748ef426a3e9242c2cf44ee9c65ca5878f10001123153323536\
    4145533148533332485338304448336b4448326b4d756c7442333220b3909195e467a321e35f9c92";
const LINPHONE_COMMIT: &str = "\
    100002d05a52545087654321505a001d436f6d6d69742020d9ff148b34aa69e933c162e66be8cd9de30fb76ae86a622b\
    cbe46b9105c7c87e9242c2cf44ee9c65ca5878f15332353641455331485333324448336b423332201ec0fe2e72064dfb\
    fc92028c030fb8f891b4e796ac25fdf968c6e967a942b15bbb6d9cd24b13a9ae255ca9c1";

/// Most messages carved from one input.
const MAX_MESSAGES: usize = 64;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let nibble = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            nibble(pair[0]) << 4 | nibble(pair.get(1).copied().unwrap_or(b'0'))
        })
        .collect()
}

/// Frames `[type index, body words, body...]` chunks of the input as ZRTP packets.
fn carve(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut sequence = 0u16;
    while out.len() < MAX_MESSAGES && rest.len() >= 2 {
        let kind = MessageType::ALL[usize::from(rest[0]) % MessageType::ALL.len()];
        let words = usize::from(rest[1]);
        let body_len = (words * 4).min(rest.len() - 2);
        let body = &rest[2..2 + body_len];
        rest = &rest[2 + body_len..];
        let mut message = vec![0x50, 0x5a];
        let total_words = ((12 + body.len()).div_ceil(4)) as u16;
        message.extend_from_slice(&total_words.to_be_bytes());
        message.extend_from_slice(kind.block());
        message.extend_from_slice(body);
        while message.len() % 4 != 0 {
            message.push(0);
        }
        out.push(encode_packet(sequence, 0x8765_4321, &message));
        sequence = sequence.wrapping_add(1);
    }
    out
}

fn drain(session: &mut Session<rand::rngs::StdRng>) {
    while let Some(packet) = session.poll_transmit() {
        assert!(
            parse_packet(&packet).is_ok(),
            "the session sent a malformed packet"
        );
    }
    while let Some(event) = session.poll_event() {
        assert!(
            !matches!(event, ZrtpEvent::Secure(_)),
            "fuzz input completed a ZRTP exchange"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The parser.
    if let Ok(packet) = parse_packet(data) {
        let again = Message::parse(&packet.message.encode());
        assert_eq!(
            again.as_ref(),
            Ok(&packet.message),
            "parse/encode/parse differs"
        );
    }

    // 2. A responder session.
    let hello = hex(LINPHONE_HELLO);
    let commit = hex(LINPHONE_COMMIT);
    // The first byte picks the starting state: the Commit makes the session generate
    // a DH3k key pair, which is slow under the sanitizer, so not every input does.
    let with_commit = data.first().is_some_and(|b| b & 1 == 1);
    {
        #[allow(clippy::disallowed_methods)] // the virtual clock's origin
        let start = Instant::now();
        let mut now = start;
        let mut session = Session::new(
            RoleHint::Responder,
            Zid([0x42; 12]),
            0x1234_5678,
            Config::default(),
            RetainedSecrets::new(4),
            start,
            rand::rngs::StdRng::seed_from_u64(7),
        );
        assert!(session.handle_packet(now, &hello).is_ok());
        if with_commit {
            assert!(session.handle_packet(now, &commit).is_ok());
            assert_eq!(session.state(), State::DhPart1Sent);
        }
        drain(&mut session);
        let _ = session.handle_packet(now, data);
        drain(&mut session);
        for (i, packet) in carve(data).iter().enumerate() {
            let _ = session.handle_packet(now, packet);
            drain(&mut session);
            now += Duration::from_millis(u64::from(data[i % data.len()]) * 4);
            session.handle_timeout(now);
            drain(&mut session);
        }
        // Run out every timer: each deadline must move on or go away.
        for _ in 0..64 {
            let Some(at) = session.poll_timeout() else {
                break;
            };
            now = now.max(at);
            session.handle_timeout(now);
            drain(&mut session);
            if let Some(next) = session.poll_timeout() {
                assert!(next > now, "a ZRTP deadline did not move forward");
            }
        }
        assert!(session.dh_agreements() <= 1);
        assert_ne!(session.state(), State::Secure);
    }
});
