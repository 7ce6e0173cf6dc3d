//! Fuzz target: SDES `a=crypto` values (`sotto::media::srtp::CryptoAttribute::parse`),
//! with the input read as UTF-8 (lossily, as the SDP parser hands over `&str`).
//!
//! Checked: an accepted line renders to a line that parses back to the same attribute
//! (tag, suite, key, lifetime, MKI), both contexts can be built from it, and a packet
//! protected under it (MKI included) unprotects under it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto::media::srtp::{CryptoAttribute, SrtpContext, SrtpError};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(attribute) = CryptoAttribute::parse(&text) else {
        return;
    };
    assert!(attribute.tag <= 999_999_999, "the tag has at most 9 digits");
    assert_eq!(
        attribute.key.len(),
        attribute.suite.master_key_len() + attribute.suite.master_salt_len()
    );
    if let Some((value, length)) = attribute.mki {
        assert!((1..=128).contains(&length));
        let mki = attribute.mki_bytes().expect("an MKI has bytes");
        assert_eq!(mki.len(), usize::from(length));
        if length < 8 {
            assert_eq!(
                value >> (8 * u32::from(length)),
                0,
                "MKI value wider than its length"
            );
        }
    }

    let rendered = attribute.render();
    let back = CryptoAttribute::parse(&rendered)
        .unwrap_or_else(|e| panic!("our rendering does not parse ({e}): {rendered}"));
    assert_eq!(back, attribute, "render and parse disagree: {rendered}");
    assert_eq!(back.render(), rendered);

    let mut outbound = SrtpContext::outbound_for(&attribute)
        .unwrap_or_else(|e| panic!("an accepted line gives no outbound context: {e:?}"));
    let mut inbound = SrtpContext::inbound_for(&attribute)
        .unwrap_or_else(|e| panic!("an accepted line gives no inbound context: {e:?}"));
    let plain = [
        0x80, 0x00, 0x12, 0x34, 0, 0, 0x03, 0x20, 0xca, 0xfe, 0xf0, 0x0d, 0xd5, 0xd5, 0xd5, 0xd5,
    ];
    let mut buf = vec![0u8; plain.len() + 32 + 128];
    buf[..plain.len()].copy_from_slice(&plain);
    match outbound.protect_rtp(&mut buf, plain.len()) {
        Ok(len) => {
            let mki_len = attribute.mki.map_or(0, |(_, l)| usize::from(l));
            assert_eq!(len, plain.len() + attribute.suite.rtp_overhead() + mki_len);
            match inbound.unprotect_rtp(&mut buf, len) {
                Ok(n) => assert_eq!(&buf[..n], &plain[..]),
                // A lifetime of one packet may run out on either side.
                Err(SrtpError::KeyExhausted) => {}
                Err(e) => panic!("our own packet under an accepted line was refused: {e:?}"),
            }
        }
        Err(SrtpError::KeyExhausted) => {}
        Err(e) => panic!("cannot protect under an accepted line: {e:?}"),
    }
});
