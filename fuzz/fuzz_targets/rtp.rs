//! Fuzz target: the RTP parser (`sotto::media::rtp::parse`).
//!
//! Checked against a small model of RFC 3550 §5.1 written here: the packet is accepted
//! exactly when the model accepts it, the header fields are the bytes the RFC puts
//! them in, and the payload is the slice between the header (CSRCs and extension
//! included) and the padding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto::media::rtp::{parse, RtpError, HEADER_LEN};

/// Where the payload of a valid packet starts and ends, by RFC 3550 §5.1 and §5.3.1.
/// `None` when the packet is not valid RTP for the bridge (including RTCP on the port,
/// RFC 5761 §4).
fn model(p: &[u8]) -> Option<(usize, usize)> {
    if p.len() >= 2 && p[0] >> 6 == 2 && (192..=223).contains(&p[1]) {
        return None;
    }
    if p.len() < HEADER_LEN || p[0] >> 6 != 2 {
        return None;
    }
    let csrc_count = usize::from(p[0] & 0x0f);
    let mut start = HEADER_LEN + 4 * csrc_count;
    if p.len() < start {
        return None;
    }
    if p[0] & 0x10 != 0 {
        // Extension: 16-bit profile, 16-bit length in 32-bit words, then the words.
        let words = u16::from_be_bytes([*p.get(start + 2)?, *p.get(start + 3)?]);
        start += 4 + 4 * usize::from(words);
        if p.len() < start {
            return None;
        }
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        // Padding: the last byte counts the padding bytes, itself included.
        let count = usize::from(*p.last()?);
        if count == 0 || p.len() < start + count.max(1) {
            return None;
        }
        end -= count;
    }
    Some((start, end))
}

fuzz_target!(|data: &[u8]| {
    let result = parse(data);
    let expected = model(data);
    match result {
        Ok((header, payload)) => {
            let (start, end) = expected
                .unwrap_or_else(|| panic!("parse accepted a packet RFC 3550 rejects: {data:02x?}"));
            assert_eq!(header.payload_type, data[1] & 0x7f);
            assert_eq!(header.marker, data[1] & 0x80 != 0);
            assert_eq!(header.sequence, u16::from_be_bytes([data[2], data[3]]));
            assert_eq!(
                header.timestamp,
                u32::from_be_bytes([data[4], data[5], data[6], data[7]])
            );
            assert_eq!(
                header.ssrc,
                u32::from_be_bytes([data[8], data[9], data[10], data[11]])
            );
            // The payload is exactly data[start..end], as a sub-slice of the input.
            let offset = payload.as_ptr() as usize - data.as_ptr() as usize;
            assert_eq!((offset, offset + payload.len()), (start, end));
        }
        Err(error) => {
            assert!(
                expected.is_none(),
                "parse refused a valid packet ({error}): {data:02x?}"
            );
            match error {
                RtpError::Rtcp(t) => assert!((192..=223).contains(&t)),
                RtpError::UnsupportedVersion(v) => assert_ne!(v, 2),
                RtpError::Truncated { expected, actual } => {
                    assert_eq!(actual, data.len());
                    assert!(expected > actual);
                }
                RtpError::InvalidPadding => assert_ne!(data[0] & 0x20, 0),
                other => panic!("a write error from parse: {other}"),
            }
        }
    }
});
