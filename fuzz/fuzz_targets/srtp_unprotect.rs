//! Fuzz target: SRTP and SRTCP unprotect (`sotto::media::srtp::SrtpContext`), the first
//! thing that touches a media packet from the internet.
//!
//! For each suite, under a fixed key (the test keys of libsrtp's srtp_driver.c):
//! 1. the raw input goes to `unprotect_rtp` and `unprotect_rtcp` of a fresh inbound
//!    context (this is the forged-packet path: the fuzzer cannot compute a tag);
//! 2. the input then drives a session: each step protects a valid RTP or RTCP packet
//!    with an outbound context (one of ten SSRCs, so the eight-SSRC table evicts),
//!    flips bytes and truncates as the input says, and unprotects it; this gets past
//!    authentication whenever the packet is left intact.
//!
//! Checked: network input causes only the "expected" errors (malformed, forged,
//! replayed, unknown MKI); an intact packet is accepted and decrypts to what was
//! protected; a changed one is refused (no forgery); an accepted packet sent again is
//! refused as a replay; no more than eight SSRCs hold state.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto::media::srtp::{KeyMaterial, SrtpContext, SrtpError, Suite};

/// Master key and salt of RFC 3711 B.3 (also libsrtp's srtp_driver.c test key), for
/// the AES-CM suites.
const CM_KEY_AND_SALT: [u8; 30] = [
    0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41, 0x39,
    0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
];
/// libsrtp's srtp_driver.c GCM test keys: 00..0f (AES-128) or 00..1f (AES-256), then
/// the salt a0..ab. With these keys the known-answer packets of srtp.rs's tests (the
/// seed corpus) authenticate.
fn gcm_key_and_salt(key_len: usize) -> Vec<u8> {
    (0..key_len as u8).chain(0xa0..=0xab).collect()
}
/// SSRCs the session uses: more than the inbound context keeps (8).
const SSRCS: [u32; 10] = [0xdead_beef, 1, 2, 3, 4, 5, 6, 7, 8, 0xffff_ffff];
/// Most session steps per suite (each costs one protect and one or two unprotects).
const MAX_STEPS: usize = 32;
/// Most SSRCs an inbound context keeps state for (`MAX_REMOTE_SSRCS` in srtp.rs).
const MAX_REMOTE_SSRCS: usize = 8;
/// Room for any trailer: GCM tag, SRTCP index, no MKI.
const TRAILER_ROOM: usize = 32;

fn key(suite: Suite) -> KeyMaterial {
    let bytes = match suite {
        Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => CM_KEY_AND_SALT.to_vec(),
        Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => gcm_key_and_salt(suite.master_key_len()),
    };
    KeyMaterial::new(suite, &bytes).expect("key of the suite's length")
}

fn expect_expected(result: &Result<usize, SrtpError>, what: &str) {
    if let Err(e) = result {
        assert!(
            e.is_expected(),
            "{what}: network input caused an unexpected error: {e:?}"
        );
    }
}

/// Reads the input a byte at a time, zeros after its end.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

fuzz_target!(|data: &[u8]| {
    for suite in Suite::ALL {
        let key = key(suite);

        // 1. The raw input, as RTP and as RTCP.
        let mut inbound = SrtpContext::new_inbound(suite, &key).expect("inbound context");
        for rtcp in [false, true] {
            let mut buf = data.to_vec();
            let result = if rtcp {
                inbound.unprotect_rtcp(&mut buf, data.len())
            } else {
                inbound.unprotect_rtp(&mut buf, data.len())
            };
            expect_expected(&result, "raw input");
            if let Ok(n) = result {
                assert!(n < data.len(), "unprotect did not remove a trailer");
            }
        }
        assert!(inbound.remote_ssrc_count() <= 1);

        // 2. A session of valid packets, some of them changed on the way.
        let mut outbound = SrtpContext::new_outbound(suite, &key).expect("outbound context");
        let mut inbound = SrtpContext::new_inbound(suite, &key).expect("inbound context");
        let mut cursor = Cursor { data, at: 0 };
        let start = u16::from_be_bytes([cursor.byte(), cursor.byte()]) % 60_000;
        let mut next_sequence = [start; SSRCS.len()];
        for _ in 0..MAX_STEPS {
            if cursor.done() {
                break;
            }
            let op = cursor.byte();
            let rtcp = op & 0x01 != 0;
            let replay = op & 0x02 != 0;
            let which = usize::from(op >> 4) % SSRCS.len();
            let ssrc = SSRCS[which].to_be_bytes();

            // The plain packet.
            let mut plain = Vec::with_capacity(64);
            if rtcp {
                // An empty receiver report: V=2, RC=0, PT=201, length 1 (8 bytes).
                plain.extend_from_slice(&[0x80, 201, 0, 1]);
                plain.extend_from_slice(&ssrc);
            } else {
                let sequence = next_sequence[which];
                // Sequence numbers advance by 1 to 8: never reused, never wrapping.
                next_sequence[which] = sequence + 1 + u16::from((op >> 1) & 0x07);
                let [s1, s2] = sequence.to_be_bytes();
                plain.extend_from_slice(&[0x80, 0x00, s1, s2, 0, 0, 0x03, 0x20]);
                plain.extend_from_slice(&ssrc);
                plain.extend_from_slice(&[0xd5; 20]);
            }
            let mut buf = plain.clone();
            buf.resize(plain.len() + TRAILER_ROOM, 0);
            let protected = if rtcp {
                outbound.protect_rtcp(&mut buf, plain.len())
            } else {
                outbound.protect_rtp(&mut buf, plain.len())
            };
            let Ok(len) = protected else {
                // Only running out of sequence numbers could stop us; nothing to test.
                continue;
            };
            buf.truncate(len);
            let original = buf.clone();

            // Flips and truncation, as the input says.
            let flips = cursor.byte() % 4;
            for _ in 0..flips {
                let at = usize::from(cursor.byte()) % buf.len();
                buf[at] ^= cursor.byte();
            }
            let cut = if op & 0x04 != 0 {
                usize::from(cursor.byte() % 8)
            } else {
                0
            };
            let len = buf.len() - cut.min(buf.len());
            let intact = buf[..len] == original[..];

            let mut work = buf.clone();
            let result = if rtcp {
                inbound.unprotect_rtcp(&mut work, len)
            } else {
                inbound.unprotect_rtp(&mut work, len)
            };
            expect_expected(&result, "session packet");
            match (intact, result) {
                (true, Ok(n)) => assert_eq!(&work[..n], &plain[..], "decrypted to something else"),
                (true, Err(e)) => panic!("an intact {suite} packet was refused: {e:?}"),
                (false, Ok(_)) => panic!("a changed {suite} packet was accepted (forgery)"),
                (false, Err(_)) => {}
            }
            if intact && replay {
                let mut again = original.clone();
                let result = if rtcp {
                    inbound.unprotect_rtcp(&mut again, original.len())
                } else {
                    inbound.unprotect_rtp(&mut again, original.len())
                };
                assert_eq!(result, Err(SrtpError::Replayed), "a replay was not refused");
            }
            assert!(inbound.remote_ssrc_count() <= MAX_REMOTE_SSRCS);
        }
    }
});
