//! Fuzz target: SIP stream framing (`sotto::sip::framing::check`), as `io::stream`
//! drives it on TCP and TLS connections.
//!
//! The first two bytes pick a size limit (so that `TooLarge` is reached), the rest is
//! the stream. Checked on the prefixes of the stream (every short one, and every one
//! where the answer could change: around each line end, the limit and the message
//! length): while `Incomplete`, more bytes may change the answer; once `check` has
//! given a frame or an error, more bytes never change it. Then the
//! stream is consumed frame by frame as the connection task does: a frame is never
//! longer than the buffer nor the limit, and never empty, so the loop always ends.
//! Each framed message also goes to the message parser, as the endpoint would.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sotto::sip::framing::{check, Frame};
use sotto::sip::message::{parse, Limits};

/// The connection task's default limit (`sip.max_message_size`).
const DEFAULT_MAX: usize = 16 * 1024;
/// Prefixes up to this length are all checked.
const SHORT: usize = 64;

fuzz_target!(|data: &[u8]| {
    let (max, stream) = match data {
        [a, b, rest @ ..] => {
            let chosen = usize::from(u16::from_be_bytes([*a, *b]));
            // Half the inputs use the real limit; the others a small one.
            // (At least 16: below 4 a lone CRLF would be "incomplete" at the limit, which
            // the configuration's minimum of 1024 rules out.)
            let max = if chosen & 0x8000 != 0 {
                DEFAULT_MAX
            } else {
                (chosen & 0x3ff) + 16
            };
            (max, rest)
        }
        _ => (DEFAULT_MAX, data),
    };

    // Prefixes: the first definitive answer must stand for every longer prefix. The
    // answer can only change where a line ends, where the buffer reaches the limit or
    // the announced length, so those prefixes (and all short ones) are the ones tried.
    let whole = check(stream, max);
    let mut ends: Vec<usize> = (0..=stream.len().min(SHORT)).collect();
    ends.extend(
        stream
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    ends.extend([max - 1, max, max + 1]);
    if let Ok(Frame::Message(n)) = whole {
        ends.extend([n - 1, n, n + 1]);
    }
    ends.push(stream.len());
    ends.retain(|&end| end <= stream.len());
    ends.sort_unstable();
    ends.dedup();
    let mut first_definitive = None;
    for &end in &ends {
        let answer = check(&stream[..end], max);
        match (first_definitive, answer) {
            (None, Ok(Frame::Incomplete)) => {}
            (None, definitive) => first_definitive = Some((end, definitive)),
            (Some((at, before)), now) => assert_eq!(
                now, before,
                "the answer at {at} bytes changed when the buffer grew to {end}"
            ),
        }
    }
    match first_definitive {
        Some((_, answer)) => assert_eq!(answer, whole),
        None => assert_eq!(whole, Ok(Frame::Incomplete)),
    }
    // An empty buffer is never anything but incomplete.
    assert_eq!(check(&[], max), Ok(Frame::Incomplete));

    // Consume the stream as io::stream does.
    let limits = Limits {
        max_size: max,
        max_headers: 100,
    };
    let mut buf = stream;
    // Each round consumes at least one byte, so this bound is never reached.
    for _ in 0..=stream.len() {
        match check(buf, max) {
            Ok(Frame::Message(len)) => {
                assert!(len > 0, "an empty message frame would loop forever");
                assert!(len <= buf.len(), "a frame longer than the buffer");
                assert!(len <= max, "a frame longer than the limit");
                let _ = parse(Bytes::copy_from_slice(&buf[..len]), &limits);
                buf = &buf[len..];
            }
            Ok(Frame::KeepAlive { len, ping }) => {
                assert!(len == 2 || len == 4, "keep-alive of {len} bytes");
                assert!(len <= buf.len());
                assert_eq!(ping, len == 4);
                assert!(buf[..len].iter().all(|b| matches!(b, b'\r' | b'\n')));
                buf = &buf[len..];
            }
            Ok(Frame::Incomplete) => {
                assert!(
                    buf.len() < max,
                    "incomplete with a full buffer: the connection would stall"
                );
                return;
            }
            Err(_) => return,
        }
    }
    panic!("the framing loop did not end");
});
