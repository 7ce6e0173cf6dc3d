//! Fuzz target: SDP offers (`sotto::sip::sdp`): parse, negotiate under every security
//! policy and codec preference, render the answer.
//!
//! Checked: a negotiated stream is one the offer really has (audio, port not 0, the
//! payload type among its formats), SRTP keys are taken only when the policy allows
//! them, and the rendered answer parses back with every stream in its place, ours
//! with our port, and negotiates to the same codec, payload types and stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto::config::{Codec, Encryption};
use sotto::media::srtp::{CryptoAttribute, KeyMaterial};
use sotto::sip::sdp::{negotiate, Answer, SecurityPolicy, SessionDescription};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Codec preferences the bridge can be configured with.
const CODECS: [&[Codec]; 3] = [&[Codec::Pcmu, Codec::Pcma], &[Codec::Pcma], &[Codec::Pcmu]];

/// Our RTP port in answers.
const PORT: u16 = 30_000;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = SessionDescription::parse(data) else {
        return;
    };
    assert!(!offer.media.is_empty(), "parse is Ok only with an m= line");
    assert!(offer.media.len() <= 16, "at most 16 streams are kept");

    for encryption in [Encryption::Off, Encryption::Preferred, Encryption::Required] {
        for sdes_allowed in [false, true] {
            let policy = SecurityPolicy {
                encryption,
                sdes_allowed,
            };
            for (i, codecs) in CODECS.into_iter().enumerate() {
                let Ok(n) = negotiate(&offer, codecs, &policy) else {
                    continue;
                };
                let m = offer
                    .media
                    .get(n.media_index)
                    .expect("media_index points into the offer");
                assert_eq!(m.kind, "audio");
                assert_ne!(m.port, 0);
                assert!(codecs.contains(&n.codec));
                assert!(m
                    .formats
                    .iter()
                    .any(|f| f.parse::<u8>() == Ok(n.payload_type)));
                assert!(n.payload_type <= 127);
                if let Some(te) = n.telephone_event {
                    assert!(te <= 127);
                }
                match (&n.crypto, encryption) {
                    (Some(_), Encryption::Off) => panic!("SRTP keys taken with encryption off"),
                    (Some(_), _) => assert!(sdes_allowed, "SDES keys taken without TLS"),
                    (None, Encryption::Required) => panic!("plain RTP with encryption required"),
                    (None, _) => {}
                }

                // Our own key: same tag and suite, fixed bytes (no randomness here).
                let ours = n.crypto.as_ref().map(|offered| {
                    let len = offered.suite.master_key_len() + offered.suite.master_salt_len();
                    CryptoAttribute {
                        tag: offered.tag,
                        suite: offered.suite,
                        key: KeyMaterial::new(offered.suite, &vec![0x5a; len])
                            .expect("key of the suite's length"),
                        lifetime: None,
                        mki: None,
                    }
                });
                let address = if i % 2 == 0 {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
                } else {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
                };
                let text = Answer {
                    offer: &offer,
                    negotiated: &n,
                    address,
                    port: PORT,
                    session_id: u64::MAX,
                    version: u64::MAX,
                    direction: n.offered_direction.answer(),
                    crypto: ours.as_ref(),
                    zrtp_hash: None,
                }
                .render();
                check_answer(&text, &offer, &n, codecs, &policy);
            }
        }
    }
});

/// The answer must parse back, keep every stream in its place, and negotiate to what
/// we decided.
fn check_answer(
    text: &str,
    offer: &SessionDescription,
    n: &sotto::sip::sdp::Negotiated,
    codecs: &[Codec],
    policy: &SecurityPolicy,
) {
    let answer = SessionDescription::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("our answer does not parse ({e}):\n{text}"));
    assert_eq!(answer.media.len(), offer.media.len(), "answer:\n{text}");
    for (i, m) in answer.media.iter().enumerate() {
        if i == n.media_index {
            assert_eq!(m.port, PORT, "answer:\n{text}");
            assert_eq!(m.proto, n.proto);
        } else {
            assert_eq!(m.port, 0, "a rejected stream keeps port 0:\n{text}");
        }
    }
    let again = negotiate(&answer, codecs, policy)
        .unwrap_or_else(|e| panic!("our answer does not negotiate ({e}):\n{text}"));
    assert_eq!(again.media_index, n.media_index, "answer:\n{text}");
    assert_eq!(again.codec, n.codec, "answer:\n{text}");
    assert_eq!(again.payload_type, n.payload_type, "answer:\n{text}");
    assert_eq!(again.telephone_event, n.telephone_event, "answer:\n{text}");
    assert_eq!(
        again.crypto.is_some(),
        n.crypto.is_some(),
        "answer:\n{text}"
    );
}
