//! Fuzz target: RFC 4733 telephone events (`sotto::media::dtmf`): `parse_event` on the
//! whole input, then a `DtmfReceiver` fed a sequence of packets carved from it.
//!
//! Records of 5 bytes: a timestamp selector, then a 4-byte payload. The selector's low
//! 7 bits pick the RTP timestamp (times 160, so that packets of one event and late
//! retransmissions share timestamps); its high bit makes the packet arrive three
//! times; the selector 0xff resets the receiver instead (an SSRC change). A trailing
//! record of 1–4 bytes is fed as a short payload.
//!
//! Checked: parse_event reads the fields where RFC 4733 §2.3 puts them and fails only
//! on short payloads; a receiver reports at most one digit per packet, only for
//! event codes it was fed, and a packet repeated three times reports nothing the
//! third time; digits and events never print their value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto::media::dtmf::{parse_event, DtmfError, DtmfReceiver};

const RECORD: usize = 5;
const RESET: u8 = 0xff;

fuzz_target!(|data: &[u8]| {
    match parse_event(data) {
        Ok(event) => {
            assert!(data.len() >= 4);
            assert_eq!(event.event, data[0]);
            assert_eq!(event.end, data[1] & 0x80 != 0);
            assert_eq!(event.volume, data[1] & 0x3f);
            assert_eq!(event.duration, u16::from_be_bytes([data[2], data[3]]));
            assert!(format!("{event:?}").contains("<redacted>"));
        }
        Err(DtmfError::TooShort { len }) => {
            assert!(data.len() < 4);
            assert_eq!(len, data.len());
        }
    }

    let mut receiver = DtmfReceiver::new();
    // Event codes fed since the last reset: a digit must be one of them.
    let mut fed = [false; 256];
    let mut packets = 0usize;
    let mut digits = 0usize;
    for record in data.chunks(RECORD) {
        let (&selector, payload) = record.split_first().expect("chunks are not empty");
        if selector == RESET {
            receiver.reset();
            fed = [false; 256];
            continue;
        }
        let timestamp = u32::from(selector & 0x7f) * 160;
        let times = if selector & 0x80 != 0 { 3 } else { 1 };
        for round in 0..times {
            let result = receiver.handle_packet(timestamp, payload);
            if payload.len() < 4 {
                assert_eq!(result, Err(DtmfError::TooShort { len: payload.len() }));
                continue;
            }
            packets += 1;
            fed[usize::from(payload[0])] = true;
            let Some(digit) = result.expect("a 4-byte payload parses") else {
                continue;
            };
            digits += 1;
            assert!(round < 2, "the third copy of a packet reported a digit");
            assert!(digit.event() < 16);
            assert!(fed[usize::from(digit.event())], "a digit nobody sent");
            assert!("0123456789*#ABCD".contains(digit.as_char()));
            assert_eq!(format!("{digit:?}"), "Digit(<redacted>)");
        }
    }
    assert!(digits <= packets);
    assert!(!format!("{receiver:?}").contains("event"));
});
