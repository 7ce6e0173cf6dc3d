//! SRTP and SRTCP (RFC 3711, RFC 7714) for the media path, keyed by SDES (RFC 4568).
//!
//! One [`SrtpContext`] protects one direction of one call: the outbound context holds
//! the key of our answer's `a=crypto` line, the inbound context the key of the offer's
//! line we accepted. Both work in place on a buffer the caller owns and are sans-IO:
//! no sockets, no clock. The packet transforms are those of the pure-Rust `libsrtp`
//! crate; this module adds SDES parsing and printing ([`CryptoAttribute`]), typed
//! errors, and one guard the crate lacks: an inbound packet from an SSRC we have not
//! seen yet is authenticated here *before* any per-SSRC state exists (see
//! [`SrtpContext::unprotect_rtp`]), so forged packets with random SSRCs cost one MAC
//! check each and leave nothing behind.
//!
//! Suites: `AES_CM_128_HMAC_SHA1_80`, `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2),
//! `AEAD_AES_128_GCM` and `AEAD_AES_256_GCM` (RFC 7714 §14.2). NULL ciphers and NULL
//! authentication are never offered nor accepted. Key derivation rate 0 only (the
//! crate implements no other, RFC 3711 §4.3.1); replay window 128 packets.
//!
//! RTP and RTCP on one port (RFC 5761) must be told apart by the caller (second byte
//! 192..=223 is RTCP) before it picks [`SrtpContext::unprotect_rtp`] or
//! [`SrtpContext::unprotect_rtcp`].
//!
//! ```
//! use sotto::media::srtp::{CryptoAttribute, SrtpContext};
//! # use rand::SeedableRng;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! // The phone's offer carries its key; our answer a fresh one, same tag and suite.
//! let offer = CryptoAttribute::parse(
//!     "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
//! )?;
//! let answer = CryptoAttribute::answer_to(&offer, &mut rng);
//! assert!(answer.render().starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
//! let mut from_phone = SrtpContext::inbound_for(&offer)?;
//! let mut to_phone = SrtpContext::outbound_for(&answer)?;
//!
//! // What the phone sends (here protected by a context keyed like the phone).
//! let mut phone = SrtpContext::outbound_for(&offer)?;
//! let mut buf = [0u8; 1500];
//! buf[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]);
//! let len = phone.protect_rtp(&mut buf, 12 + 160)?; // in place: + MKI (4) + tag (10)
//! assert_eq!(len, 12 + 160 + 4 + 10);
//! assert_eq!(from_phone.unprotect_rtp(&mut buf, len)?, 12 + 160);
//! // ... and our packet back to it.
//! let len = to_phone.protect_rtp(&mut buf, 12 + 160)?;
//! assert_eq!(len, 12 + 160 + 10);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use base64ct::{Base64, Base64Unpadded, Encoding};
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use libsrtp::{MasterKey, ProtectionProfile, RecvSession, SendSession, StreamConfig};
use rand::{CryptoRng, RngCore};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Longest master key plus master salt of any suite: AEAD_AES_256_GCM's 32 + 12 bytes
/// (RFC 7714 §12).
const MAX_KEY_AND_SALT_LEN: usize = 44;

/// Size of the fixed RTP header (RFC 3550 §5.1).
const RTP_HEADER_LEN: usize = 12;

/// Size of the RTCP header up to and including the sender's SSRC (RFC 3550 §6.4.1):
/// what SRTCP leaves unencrypted (RFC 3711 §3.4).
const RTCP_HEADER_LEN: usize = 8;

/// The SRTCP trailer word: E flag plus 31-bit SRTCP index (RFC 3711 §3.4).
const SRTCP_INDEX_LEN: usize = 4;

/// The E flag of the SRTCP index word: set when the packet is encrypted (RFC 3711 §3.4).
const SRTCP_E_FLAG: u32 = 0x8000_0000;

/// AES-GCM authentication tag length for both RFC 7714 suites (RFC 7714 §12).
const GCM_TAG_LEN: usize = 16;

/// HMAC-SHA1 tag lengths: 80 bits (RFC 3711 §5.2), 32 bits for the `_32` suite's RTP
/// (RFC 4568 §6.2.2; its SRTCP keeps 80 bits).
const HMAC_SHA1_80_TAG_LEN: usize = 10;
const HMAC_SHA1_32_TAG_LEN: usize = 4;

/// Session authentication key length for HMAC-SHA1 (RFC 3711 §4.3.2: n_a = 160 bits).
const AUTH_KEY_LEN: usize = 20;

/// Session salt length used by AES-GCM (RFC 7714 §8.1: 96 bits).
const GCM_SALT_LEN: usize = 12;

/// Key derivation labels (RFC 3711 §4.3.1 and §4.3.2; RFC 7714 §11 reuses them).
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTHENTICATION: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTHENTICATION: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// Replay window in packets, for SRTP and SRTCP. RFC 3711 §3.3.2 asks for at least 64;
/// 128 is libsrtp's default (C and Rust) and covers 2.5 s of 20 ms audio.
const REPLAY_WINDOW: u16 = 128;

/// Most remote SSRCs one inbound context keeps state for. A phone sends one SSRC per
/// call and may change it on a re-INVITE or a transfer; only packets that passed
/// authentication can add one, so this bounds what a peer holding the key can make us
/// keep. When full, the least recently used SSRC is forgotten (its replay state goes
/// with it, and it must come back with ROC 0 to be accepted again).
const MAX_REMOTE_SSRCS: usize = 8;

/// Largest SRTP key lifetime: 2^48 packets (RFC 3711 §9.2); libsrtp enforces it too.
const MAX_SRTP_LIFETIME: u64 = 1 << 48;

/// Largest SRTCP key lifetime: 2^31 packets (RFC 3711 §9.2).
const MAX_SRTCP_LIFETIME: u64 = 1 << 31;

/// libsrtp's "key nearly used up" threshold (2^16 packets). We install no handler, so
/// it has no effect beyond satisfying the crate's `limit <= lifetime` rule.
const KEY_SOFT_LIMIT: u64 = 1 << 16;

/// Capacity of the per-context scratch buffer: an Ethernet MTU plus the largest
/// trailer (GCM tag, SRTCP index, 128-byte MKI). Larger packets still work: the
/// buffer grows once and keeps its size.
const SCRATCH_CAPACITY: usize = 1500 + GCM_TAG_LEN + SRTCP_INDEX_LEN + MAX_MKI_LEN;

/// Longest MKI that SDES can announce (RFC 4568 §9.2: mki-length 1..=128 bytes).
const MAX_MKI_LEN: usize = 128;

// ---------------------------------------------------------------------------------
// Suites
// ---------------------------------------------------------------------------------

/// An SRTP crypto suite we speak (RFC 4568 §6.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 4568 §6.2.1).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit SRTP tag; SRTCP keeps 80 bits
    /// (RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
    /// AES-128 in Galois/counter mode, 16-byte tag (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// AES-256 in Galois/counter mode, 16-byte tag (RFC 7714 §14.2).
    AeadAes256Gcm,
}

impl Suite {
    /// Every suite, strongest first.
    pub const ALL: [Suite; 4] = [
        Suite::AeadAes256Gcm,
        Suite::AeadAes128Gcm,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
    ];

    /// The suite an SDES name stands for; `None` for any other suite (F8, AES-192/256
    /// counter mode, the NULL suites, typos). Case-insensitive, as ABNF literals are
    /// (RFC 4568 §9.2 uses RFC 4234); [`Suite::sdes_name`] writes the upper-case form.
    pub fn from_sdes_name(name: &str) -> Option<Suite> {
        Suite::ALL
            .into_iter()
            .find(|suite| suite.sdes_name().eq_ignore_ascii_case(name))
    }

    /// The suite's SDES name.
    pub fn sdes_name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 | Suite::AeadAes128Gcm => 16,
            Suite::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in bytes: 112 bits for AES-CM (RFC 3711 §8.2), 96 bits for
    /// AES-GCM (RFC 7714 §12).
    pub fn master_salt_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 14,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 12,
        }
    }

    /// Rank for picking "the strongest suite the offer carries": higher is stronger.
    /// 256-GCM > 128-GCM > CM with 80-bit tag > CM with 32-bit tag.
    pub fn strength(self) -> u8 {
        match self {
            Suite::AeadAes256Gcm => 4,
            Suite::AeadAes128Gcm => 3,
            Suite::AesCm128HmacSha1_80 => 2,
            Suite::AesCm128HmacSha1_32 => 1,
        }
    }

    /// Bytes an SRTP packet grows by when protected, without MKI.
    pub fn rtp_overhead(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => HMAC_SHA1_80_TAG_LEN,
            Suite::AesCm128HmacSha1_32 => HMAC_SHA1_32_TAG_LEN,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes an SRTCP packet grows by when protected, without MKI: index word plus tag.
    pub fn rtcp_overhead(self) -> usize {
        SRTCP_INDEX_LEN + self.rtcp_tag_len()
    }

    fn rtcp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => HMAC_SHA1_80_TAG_LEN,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }

    fn is_gcm(self) -> bool {
        matches!(self, Suite::AeadAes128Gcm | Suite::AeadAes256Gcm)
    }

    /// The crate's profiles for RTP and RTCP.
    fn profiles(self) -> (ProtectionProfile, ProtectionProfile) {
        match self {
            Suite::AesCm128HmacSha1_80 => (
                ProtectionProfile::Aes128CmHmacSha180,
                ProtectionProfile::Aes128CmHmacSha180,
            ),
            Suite::AesCm128HmacSha1_32 => (
                ProtectionProfile::Aes128CmHmacSha132,
                ProtectionProfile::Aes128CmHmacSha180,
            ),
            Suite::AeadAes128Gcm => (
                ProtectionProfile::AeadAes128Gcm,
                ProtectionProfile::AeadAes128Gcm,
            ),
            Suite::AeadAes256Gcm => (
                ProtectionProfile::AeadAes256Gcm,
                ProtectionProfile::AeadAes256Gcm,
            ),
        }
    }

    fn key_and_salt_len(self) -> usize {
        self.master_key_len() + self.master_salt_len()
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}

// ---------------------------------------------------------------------------------
// Key material
// ---------------------------------------------------------------------------------

/// Master key followed by master salt, as SDES carries them (RFC 4568 §6.1).
/// Zeroized on drop; `Debug` prints `<redacted>`; equality is constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyMaterial {
    bytes: [u8; MAX_KEY_AND_SALT_LEN],
    len: u8,
}

impl KeyMaterial {
    /// Key material for `suite` from `key || salt`; the length must be the suite's.
    pub fn new(suite: Suite, key_and_salt: &[u8]) -> Result<Self, SrtpError> {
        let expected = suite.key_and_salt_len();
        if key_and_salt.len() != expected {
            return Err(SrtpError::KeyLength {
                expected,
                actual: key_and_salt.len(),
            });
        }
        let mut bytes = [0u8; MAX_KEY_AND_SALT_LEN];
        bytes
            .get_mut(..expected)
            .ok_or(SrtpError::Internal("key buffer"))?
            .copy_from_slice(key_and_salt);
        // Lengths are at most 44: the cast is exact.
        Ok(KeyMaterial {
            bytes,
            len: expected as u8,
        })
    }

    /// Fresh random key material for `suite` (RFC 4568 §6.1: the key is random).
    pub fn generate(suite: Suite, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let len = suite.key_and_salt_len();
        let mut bytes = [0u8; MAX_KEY_AND_SALT_LEN];
        rng.fill_bytes(&mut bytes[..len]);
        KeyMaterial {
            bytes,
            len: len as u8,
        }
    }

    /// The `key||salt` part of `inline:` (RFC 4568 §6.1): base64 with padding.
    pub fn to_sdes_inline(&self) -> String {
        Base64::encode_string(self.as_bytes())
    }

    /// Decodes the `key||salt` part of `inline:` for `suite`. Padded base64 is the
    /// standard (RFC 4568 §6.1 refers to RFC 3548); unpadded input is accepted too.
    pub fn from_sdes_inline(suite: Suite, text: &str) -> Result<Self, SdesError> {
        let mut buf = [0u8; MAX_KEY_AND_SALT_LEN + 3];
        let result = match Base64::decode(text, &mut buf) {
            Ok(decoded) => Ok(decoded.len()),
            Err(_) => Base64Unpadded::decode(text, &mut buf).map(|decoded| decoded.len()),
        };
        let outcome = match result {
            Ok(len) => {
                let expected = suite.key_and_salt_len();
                if len == expected {
                    KeyMaterial::new(suite, buf.get(..len).unwrap_or_default()).map_err(|_| {
                        SdesError::KeyLength {
                            expected,
                            actual: len,
                        }
                    })
                } else {
                    Err(SdesError::KeyLength {
                        expected,
                        actual: len,
                    })
                }
            }
            // Too long for the buffer is a length error; anything else is bad base64.
            Err(base64ct::Error::InvalidLength) => Err(SdesError::KeyLength {
                expected: suite.key_and_salt_len(),
                actual: text.len() * 3 / 4,
            }),
            Err(base64ct::Error::InvalidEncoding) => Err(SdesError::Base64),
        };
        buf.zeroize();
        outcome
    }

    /// Total length in bytes (key plus salt).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never true for key material built by this module; here for API hygiene.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len()).unwrap_or_default()
    }

    /// Splits into master key and master salt for `suite`.
    fn split(&self, suite: Suite) -> Result<(&[u8], &[u8]), SrtpError> {
        if self.len() != suite.key_and_salt_len() {
            return Err(SrtpError::KeyLength {
                expected: suite.key_and_salt_len(),
                actual: self.len(),
            });
        }
        self.as_bytes()
            .split_at_checked(suite.master_key_len())
            .ok_or(SrtpError::Internal("key split"))
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && bool::from(self.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl Eq for KeyMaterial {}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Why a packet could not be protected or unprotected, or a context not created.
///
/// The first four are what the internet sends us and are expected; count them
/// ([`SrtpError::is_expected`]). The rest mean a bug or a call at its end of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Not an RTP/RTCP version 2 packet, shorter than its header and trailer, or an
    /// SRTCP packet without the E flag (we never accept unencrypted SRTCP).
    #[error("malformed SRTP or SRTCP packet")]
    Malformed,
    /// The authentication tag does not match: forged, corrupted, or the wrong key.
    #[error("SRTP authentication failed")]
    AuthenticationFailed,
    /// The packet index was already received, or is older than the 128-packet replay
    /// window (RFC 3711 §3.3.2).
    #[error("SRTP packet replayed or older than the replay window")]
    Replayed,
    /// The packet's MKI is not the one this context was keyed with (RFC 3711 §3.1).
    #[error("unknown SRTP master key identifier")]
    UnknownMki,
    /// Outbound: this sequence number was already protected in this roll-over cycle;
    /// SRTP must never reuse a keystream (RFC 3711 §3.3.2, §9.1).
    #[error("RTP sequence number already protected")]
    SequenceReused,
    /// The master key has protected its lifetime's worth of packets (RFC 3711 §9.2;
    /// at most 2^48 SRTP or 2^31 SRTCP packets): the call must be re-keyed.
    #[error("SRTP master key exhausted")]
    KeyExhausted,
    /// The caller's buffer cannot hold the packet plus its trailer, or `len` exceeds it.
    #[error("buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
    /// Key material of the wrong length for the suite.
    #[error("key and salt must be {expected} bytes, got {actual}")]
    KeyLength {
        /// The suite's key plus salt length.
        expected: usize,
        /// What was given.
        actual: usize,
    },
    /// Protect called on an inbound context or unprotect on an outbound one.
    #[error("SRTP context used in the wrong direction")]
    WrongDirection,
    /// The SRTP library reported something that should not happen here.
    #[error("SRTP library error: {0}")]
    Internal(&'static str),
}

impl SrtpError {
    /// True for what a packet from the network can cause (malformed, forged, replayed,
    /// wrong MKI); false for bugs and end-of-life conditions.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            SrtpError::Malformed
                | SrtpError::AuthenticationFailed
                | SrtpError::Replayed
                | SrtpError::UnknownMki
        )
    }

    fn from_library(error: libsrtp::SrtpError, direction: Direction) -> SrtpError {
        use libsrtp::SrtpError as L;
        match error {
            L::Authentication => SrtpError::AuthenticationFailed,
            L::InvalidPacket => SrtpError::Malformed,
            L::InvalidPacketIndex => match direction {
                Direction::Inbound => SrtpError::Replayed,
                Direction::Outbound => SrtpError::SequenceReused,
            },
            L::InvalidMki => SrtpError::UnknownMki,
            L::KeyLimit { .. } => SrtpError::KeyExhausted,
            L::Encryption => SrtpError::Internal("encryption"),
            L::ContextNotReady => SrtpError::Internal("context not ready"),
            L::InvalidKeySize => SrtpError::Internal("invalid key size"),
            L::TransformDispatch => SrtpError::Internal("transform dispatch"),
            L::KdfDispatch => SrtpError::Internal("key derivation"),
            L::InvalidProfile => SrtpError::Internal("invalid profile"),
            L::StreamNotFound => SrtpError::Internal("stream not found"),
        }
    }
}

/// Why an `a=crypto` attribute was refused (RFC 4568 §9.1, §6.3).
///
/// None of them carries text from the attribute: it came from a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    /// Fewer than three fields (tag, suite, key-params), or a field out of place.
    #[error("crypto attribute: {0}")]
    Syntax(&'static str),
    /// The tag is not 1 to 9 digits (RFC 4568 §9.1).
    #[error("crypto attribute: bad tag")]
    BadTag,
    /// A suite we do not speak: the caller tries the offer's next line.
    #[error("crypto attribute: unsupported crypto suite")]
    UnsupportedSuite,
    /// A key method other than `inline` (RFC 4568 §6.1 defines only that one).
    #[error("crypto attribute: unsupported key method")]
    UnsupportedKeyMethod,
    /// More than one key-param. RFC 4568 §6.1 allows several master keys told apart
    /// by MKI; we keep one master key per direction, so such a line is refused rather
    /// than half-used (the sender could switch to a key we dropped).
    #[error("crypto attribute: more than one key-param")]
    MultipleKeys,
    /// The key is not valid base64.
    #[error("crypto attribute: key is not valid base64")]
    Base64,
    /// The decoded key||salt has the wrong length for the suite.
    #[error("crypto attribute: key and salt must be {expected} bytes, got {actual}")]
    KeyLength {
        /// The suite's key plus salt length.
        expected: usize,
        /// What the attribute carried.
        actual: usize,
    },
    /// Lifetime not `1*DIGIT` or `2^1*DIGIT`, zero, or above 2^64 - 1 (RFC 4568 §6.1).
    #[error("crypto attribute: bad key lifetime")]
    BadLifetime,
    /// MKI not `value:length`, length outside 1..=128, or a value that does not fit in
    /// `length` bytes (RFC 4568 §6.1), or above 2^64 - 1.
    #[error("crypto attribute: bad MKI")]
    BadMki,
    /// A session parameter we refuse (RFC 4568 §6.3).
    #[error("crypto attribute: session parameter refused: {0}")]
    RefusedSessionParam(RefusedParam),
}

/// Session parameters that make us refuse a crypto line (RFC 4568 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedParam {
    /// `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP` or `UNAUTHENTICATED_SRTP` (§6.3.2,
    /// §6.3.3): NULL cipher or NULL authentication, never accepted.
    Unprotected,
    /// `KDR=` (§6.3.1): any value asks for a key derivation rate of 2^n, n >= 0, i.e.
    /// periodic re-derivation, which `libsrtp` does not implement.
    KeyDerivationRate,
    /// An unknown parameter without the `-` prefix: §6.3.7 says the attribute MUST
    /// then be considered invalid.
    Unknown,
}

impl fmt::Display for RefusedParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusedParam::Unprotected => "unencrypted or unauthenticated SRTP",
            RefusedParam::KeyDerivationRate => "key derivation rate",
            RefusedParam::Unknown => "unknown mandatory parameter",
        })
    }
}

// ---------------------------------------------------------------------------------
// The context
// ---------------------------------------------------------------------------------

/// Which way a context protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Outbound,
}

enum Session {
    /// Spawns one stream per SSRC we send from the template config (our own SSRCs).
    Outbound(SendSession),
    /// Holds one stream per authenticated remote SSRC; no template, so the crate never
    /// creates a stream by itself.
    Inbound(RecvSession),
}

/// A remote SSRC that has state in the inbound session.
#[derive(Debug, Clone, Copy)]
struct RemoteSsrc {
    ssrc: u32,
    /// Value of `SrtpContext::uses` when a packet from it last authenticated.
    last_used: u64,
}

/// One direction of one call's SRTP and SRTCP (a "session" in libsrtp's terms).
pub struct SrtpContext {
    suite: Suite,
    direction: Direction,
    session: Session,
    /// The stream configuration new inbound SSRCs are added with.
    config: StreamConfig,
    /// Inbound only: authenticates the first packet of an unknown SSRC.
    gate: Option<Gate>,
    /// Inbound only: the SSRCs that have a stream, at most `MAX_REMOTE_SSRCS`.
    remote: Vec<RemoteSsrc>,
    /// Count of successfully unprotected packets, the clock of the LRU above.
    uses: u64,
    /// Master key identifier carried in every packet, if the key has one.
    mki: Option<Vec<u8>>,
    /// Reused buffer: the crate transforms owned `Vec`s. Wiped on drop.
    scratch: Vec<u8>,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("direction", &self.direction)
            .field("remote_ssrcs", &self.remote.len())
            .field("mki", &self.mki.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context that unprotects what the peer sends under `key`.
    pub fn new_inbound(suite: Suite, key: &KeyMaterial) -> Result<Self, SrtpError> {
        Self::new(Direction::Inbound, suite, key, None, None)
    }

    /// A context that protects what we send under `key`.
    pub fn new_outbound(suite: Suite, key: &KeyMaterial) -> Result<Self, SrtpError> {
        Self::new(Direction::Outbound, suite, key, None, None)
    }

    /// The inbound context for the peer's accepted crypto line, with its lifetime and
    /// MKI.
    pub fn inbound_for(attribute: &CryptoAttribute) -> Result<Self, SrtpError> {
        let mki = attribute.mki_bytes();
        Self::new(
            Direction::Inbound,
            attribute.suite,
            &attribute.key,
            attribute.lifetime,
            mki,
        )
    }

    /// The outbound context for our own crypto line, with its lifetime and MKI.
    pub fn outbound_for(attribute: &CryptoAttribute) -> Result<Self, SrtpError> {
        let mki = attribute.mki_bytes();
        Self::new(
            Direction::Outbound,
            attribute.suite,
            &attribute.key,
            attribute.lifetime,
            mki,
        )
    }

    fn new(
        direction: Direction,
        suite: Suite,
        key: &KeyMaterial,
        lifetime: Option<u64>,
        mki: Option<Vec<u8>>,
    ) -> Result<Self, SrtpError> {
        let (master_key, master_salt) = key.split(suite)?;
        if mki
            .as_ref()
            .is_some_and(|mki| mki.is_empty() || mki.len() > MAX_MKI_LEN)
        {
            return Err(SrtpError::Internal("MKI length"));
        }
        let (rtp_profile, rtcp_profile) = suite.profiles();
        let mut master = MasterKey::new(master_key, master_salt, &mki);
        if let Some(lifetime) = lifetime {
            let rtp = lifetime.clamp(1, MAX_SRTP_LIFETIME);
            let rtcp = lifetime.clamp(1, MAX_SRTCP_LIFETIME);
            // rtcp <= 2^31 by the clamp: the cast is exact.
            master
                .set_keys_lifetime(
                    rtp,
                    rtp.min(KEY_SOFT_LIMIT),
                    rtcp as u32,
                    rtcp.min(KEY_SOFT_LIMIT) as u32,
                )
                .map_err(|e| SrtpError::from_library(e, direction))?;
        }
        let mut config = StreamConfig::new(vec![master], &rtp_profile, &rtcp_profile);
        config.set_replay_window_size(REPLAY_WINDOW);
        let (session, gate) = match direction {
            Direction::Outbound => {
                let mut session = SendSession::new();
                session
                    .add_stream(None, &config)
                    .map_err(|e| SrtpError::from_library(e, direction))?;
                (Session::Outbound(session), None)
            }
            Direction::Inbound => {
                // Validate the configuration now rather than at the first packet.
                config
                    .validate()
                    .map_err(|e| SrtpError::from_library(e, direction))?;
                (
                    Session::Inbound(RecvSession::new()),
                    Some(Gate::new(suite, master_key, master_salt)?),
                )
            }
        };
        Ok(SrtpContext {
            suite,
            direction,
            session,
            config,
            gate,
            remote: Vec::with_capacity(MAX_REMOTE_SSRCS),
            uses: 0,
            mki,
            scratch: Vec::with_capacity(SCRATCH_CAPACITY),
        })
    }

    /// The suite this context was keyed for.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The roll-over counter of `ssrc`'s stream (RFC 3711 §3.3.1), if it has one.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        match &self.session {
            Session::Outbound(session) => session.get_roc(ssrc).ok(),
            Session::Inbound(session) => session.get_roc(ssrc).ok(),
        }
    }

    /// How many remote SSRCs hold state in an inbound context (0 for outbound).
    pub fn remote_ssrc_count(&self) -> usize {
        self.remote.len()
    }

    fn mki_len(&self) -> usize {
        self.mki.as_ref().map_or(0, Vec::len)
    }

    /// Makes the scratch buffer hold a packet of `len` bytes plus the largest trailer,
    /// so the crate never reallocates it. Allocates only after an error consumed the
    /// buffer, or for a packet larger than any before; an outgrown buffer is wiped
    /// before it is freed.
    fn reserve_scratch(&mut self, len: usize) {
        let needed = len.saturating_add(GCM_TAG_LEN + SRTCP_INDEX_LEN + MAX_MKI_LEN);
        if self.scratch.capacity() < needed {
            self.scratch.zeroize();
            self.scratch = Vec::with_capacity(SCRATCH_CAPACITY.max(needed));
        }
    }

    /// The scratch buffer, taken out of the context, with `packet` in it.
    fn fill_scratch(&mut self, packet: &[u8]) -> Vec<u8> {
        self.reserve_scratch(packet.len());
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(packet);
        scratch
    }

    /// Copies a transformed packet back into the caller's buffer.
    fn finish(&mut self, buf: &mut [u8], out: Vec<u8>) -> Result<usize, SrtpError> {
        let len = out.len();
        let result = match buf.get_mut(..len) {
            Some(target) => {
                target.copy_from_slice(&out);
                Ok(len)
            }
            None => Err(SrtpError::BufferTooSmall {
                needed: len,
                available: buf.len(),
            }),
        };
        self.scratch = out;
        result
    }

    /// Protects the RTP packet in `buf[..len]` in place; returns the SRTP length. `buf`
    /// must have room for [`Suite::rtp_overhead`] more bytes (plus the MKI, if any).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if self.direction != Direction::Outbound {
            return Err(SrtpError::WrongDirection);
        }
        let needed = len
            .saturating_add(self.suite.rtp_overhead())
            .saturating_add(self.mki_len());
        if needed > buf.len() {
            return Err(SrtpError::BufferTooSmall {
                needed,
                available: buf.len(),
            });
        }
        let packet = buf
            .get(..len)
            .ok_or(SrtpError::Internal("length checked"))?;
        rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
        let plain = self.fill_scratch(packet);
        let Session::Outbound(session) = &mut self.session else {
            return Err(SrtpError::WrongDirection);
        };
        match session.rtp_protect_mki(plain, &self.mki) {
            Ok(out) => self.finish(buf, out),
            Err(error) => Err(SrtpError::from_library(error, Direction::Outbound)),
        }
    }

    /// Protects the RTCP compound packet in `buf[..len]` in place (always encrypted,
    /// E flag set); returns the SRTCP length. `buf` must have room for
    /// [`Suite::rtcp_overhead`] more bytes (plus the MKI, if any).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if self.direction != Direction::Outbound {
            return Err(SrtpError::WrongDirection);
        }
        let needed = len
            .saturating_add(self.suite.rtcp_overhead())
            .saturating_add(self.mki_len());
        if needed > buf.len() {
            return Err(SrtpError::BufferTooSmall {
                needed,
                available: buf.len(),
            });
        }
        let packet = buf
            .get(..len)
            .ok_or(SrtpError::Internal("length checked"))?;
        rtcp_ssrc(packet).ok_or(SrtpError::Malformed)?;
        let plain = self.fill_scratch(packet);
        let Session::Outbound(session) = &mut self.session else {
            return Err(SrtpError::WrongDirection);
        };
        match session.rtcp_protect_mki(plain, &self.mki) {
            Ok(out) => self.finish(buf, out),
            Err(error) => Err(SrtpError::from_library(error, Direction::Outbound)),
        }
    }

    /// Authenticates, replay-checks and decrypts the SRTP packet in `buf[..len]` in
    /// place; returns the RTP length.
    ///
    /// A packet from an SSRC without state is first authenticated here, assuming ROC 0
    /// as a new stream has (RFC 3711 §3.3.1), with session keys derived once per
    /// context; only if that succeeds does the SSRC get a stream. Forged packets from
    /// unknown SSRCs therefore allocate nothing and change nothing. A forged packet for
    /// a known SSRC goes to libsrtp, which consumes (frees) our scratch buffer on
    /// failure: one allocation each, no growth.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if self.direction != Direction::Inbound {
            return Err(SrtpError::WrongDirection);
        }
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall {
            needed: len,
            available: buf.len(),
        })?;
        let header_len = rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
        let mki_len = self.mki_len();
        let trailer_len = self.suite.rtp_overhead() + mki_len;
        if len < header_len + trailer_len {
            return Err(SrtpError::Malformed);
        }
        let ssrc = read_u32(packet, 8).ok_or(SrtpError::Malformed)?;
        let admitted = if self.is_known(ssrc) {
            false
        } else {
            // MKI position: before the HMAC tag (RFC 3711 §3.1), after the GCM
            // ciphertext and tag (RFC 7714 §4).
            let mki_start = if self.suite.is_gcm() {
                len - mki_len
            } else {
                len - trailer_len
            };
            self.check_mki(packet, mki_start)?;
            self.reserve_scratch(len);
            let gate = self
                .gate
                .as_ref()
                .ok_or(SrtpError::Internal("inbound gate"))?;
            gate.authenticate_rtp(packet, header_len, mki_len, &mut self.scratch)?;
            self.admit(ssrc)?;
            true
        };
        let packet = buf
            .get(..len)
            .ok_or(SrtpError::Internal("length checked"))?;
        let cipher = self.fill_scratch(packet);
        let Session::Inbound(session) = &mut self.session else {
            return Err(SrtpError::WrongDirection);
        };
        match session.rtp_unprotect(cipher) {
            Ok(out) => {
                self.touch(ssrc);
                self.finish(buf, out)
            }
            Err(error) => {
                if admitted {
                    self.forget(ssrc);
                }
                Err(SrtpError::from_library(error, Direction::Inbound))
            }
        }
    }

    /// Authenticates, replay-checks and decrypts the SRTCP packet in `buf[..len]` in
    /// place; returns the RTCP length. Same guard for unknown SSRCs as
    /// [`SrtpContext::unprotect_rtp`]. SRTCP without the E flag is refused.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if self.direction != Direction::Inbound {
            return Err(SrtpError::WrongDirection);
        }
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall {
            needed: len,
            available: buf.len(),
        })?;
        let ssrc = rtcp_ssrc(packet).ok_or(SrtpError::Malformed)?;
        let mki_len = self.mki_len();
        // Layout (RFC 3711 §3.4, RFC 7714 §9):
        //   AES-CM: header | encrypted | E+index | MKI | tag
        //   GCM:    header | encrypted+tag       | E+index | MKI
        let after_index_len = mki_len
            + if self.suite.is_gcm() {
                0
            } else {
                HMAC_SHA1_80_TAG_LEN
            };
        let minimum = RTCP_HEADER_LEN + self.suite.rtcp_overhead() + mki_len;
        if len < minimum {
            return Err(SrtpError::Malformed);
        }
        let index_at = len - after_index_len - SRTCP_INDEX_LEN;
        let index_word = read_u32(packet, index_at).ok_or(SrtpError::Malformed)?;
        if index_word & SRTCP_E_FLAG == 0 {
            return Err(SrtpError::Malformed);
        }
        let admitted = if self.is_known(ssrc) {
            false
        } else {
            self.check_mki(packet, index_at + SRTCP_INDEX_LEN)?;
            self.reserve_scratch(len);
            let gate = self
                .gate
                .as_ref()
                .ok_or(SrtpError::Internal("inbound gate"))?;
            gate.authenticate_rtcp(packet, index_at, mki_len, &mut self.scratch)?;
            self.admit(ssrc)?;
            true
        };
        let packet = buf
            .get(..len)
            .ok_or(SrtpError::Internal("length checked"))?;
        let cipher = self.fill_scratch(packet);
        let Session::Inbound(session) = &mut self.session else {
            return Err(SrtpError::WrongDirection);
        };
        match session.rtcp_unprotect(cipher) {
            Ok(out) => {
                self.touch(ssrc);
                self.finish(buf, out)
            }
            Err(error) => {
                if admitted {
                    self.forget(ssrc);
                }
                Err(SrtpError::from_library(error, Direction::Inbound))
            }
        }
    }

    fn is_known(&self, ssrc: u32) -> bool {
        self.remote.iter().any(|remote| remote.ssrc == ssrc)
    }

    fn check_mki(&self, packet: &[u8], at: usize) -> Result<(), SrtpError> {
        match &self.mki {
            None => Ok(()),
            Some(mki) => match packet.get(at..at + mki.len()) {
                Some(found) if found == mki.as_slice() => Ok(()),
                Some(_) => Err(SrtpError::UnknownMki),
                None => Err(SrtpError::Malformed),
            },
        }
    }

    /// Gives an authenticated SSRC a stream, forgetting the least recently used one
    /// when `MAX_REMOTE_SSRCS` are held.
    fn admit(&mut self, ssrc: u32) -> Result<(), SrtpError> {
        let Session::Inbound(session) = &mut self.session else {
            return Err(SrtpError::WrongDirection);
        };
        if self.remote.len() >= MAX_REMOTE_SSRCS {
            if let Some((oldest, _)) = self
                .remote
                .iter()
                .enumerate()
                .min_by_key(|(_, remote)| remote.last_used)
            {
                let evicted = self.remote.swap_remove(oldest);
                let _ = session.remove_stream(evicted.ssrc);
            }
        }
        session
            .add_stream(Some(ssrc), &self.config)
            .map_err(|e| SrtpError::from_library(e, Direction::Inbound))?;
        self.remote.push(RemoteSsrc {
            ssrc,
            last_used: self.uses,
        });
        Ok(())
    }

    fn touch(&mut self, ssrc: u32) {
        self.uses = self.uses.wrapping_add(1);
        let now = self.uses;
        if let Some(remote) = self.remote.iter_mut().find(|remote| remote.ssrc == ssrc) {
            remote.last_used = now;
        }
    }

    fn forget(&mut self, ssrc: u32) {
        if let Session::Inbound(session) = &mut self.session {
            let _ = session.remove_stream(ssrc);
        }
        self.remote.retain(|remote| remote.ssrc != ssrc);
    }

    /// Whether libsrtp itself holds a stream for `ssrc` (its stream table is private;
    /// `get_roc` is the public probe).
    #[cfg(test)]
    fn library_has_stream(&self, ssrc: u32) -> bool {
        self.roc(ssrc).is_some()
    }
}

impl Drop for SrtpContext {
    /// The scratch buffer holds the last packet, after unprotect in plaintext: wipe it
    /// (its whole capacity) before it goes back to the allocator.
    fn drop(&mut self) {
        self.scratch.zeroize();
    }
}

// ---------------------------------------------------------------------------------
// Packet layout helpers
// ---------------------------------------------------------------------------------

fn read_u32(packet: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = packet.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Length of the RTP header (fixed part, CSRCs, extension) if `packet` holds one of
/// version 2 (RFC 3550 §5.1, §5.3.1).
fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    if first >> 6 != 2 || packet.len() < RTP_HEADER_LEN {
        return None;
    }
    let mut len = RTP_HEADER_LEN + usize::from(first & 0x0f) * 4;
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + usize::from(u16::from_be_bytes([*words.first()?, *words.get(1)?])) * 4;
    }
    (len <= packet.len()).then_some(len)
}

/// The sender SSRC of an RTCP packet of version 2 (RFC 3550 §6.4.1).
fn rtcp_ssrc(packet: &[u8]) -> Option<u32> {
    if packet.first()? >> 6 != 2 {
        return None;
    }
    read_u32(packet, 4)
}

// ---------------------------------------------------------------------------------
// First-packet authentication (the gate) and key derivation
// ---------------------------------------------------------------------------------

/// The AES-CM keystream (RFC 3711 §4.1.1): AES in counter mode from `iv`, XORed into
/// `out` (zeros in, keystream out). Used here only for key derivation.
fn aes_cm_apply(key: &[u8], iv: &[u8; 16], out: &mut [u8]) -> Result<(), SrtpError> {
    match key.len() {
        16 => ctr::Ctr128BE::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| SrtpError::Internal("AES-128 key"))?
            .apply_keystream(out),
        32 => ctr::Ctr128BE::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| SrtpError::Internal("AES-256 key"))?
            .apply_keystream(out),
        _ => return Err(SrtpError::Internal("AES key length")),
    }
    Ok(())
}

/// The AES-CM PRF key derivation with key derivation rate 0 (RFC 3711 §4.3.1, §4.3.3):
/// x = label * 2^48 XOR master salt, keystream from IV = x * 2^16. RFC 7714 §11 uses
/// it unchanged, its 96-bit salt padded with zeros as libsrtp does.
fn derive(
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    iv.get_mut(..master_salt.len())
        .ok_or(SrtpError::Internal("salt length"))?
        .copy_from_slice(master_salt);
    // Byte 7 of the 14-byte salt is where the 8-bit label lands after the 48 bits of r.
    iv[7] ^= label;
    out.fill(0);
    let result = aes_cm_apply(master_key, &iv, out);
    iv.zeroize();
    result
}

/// Session keys for authenticating the first packet of an unknown SSRC. AES-CM suites
/// need only the HMAC keys; GCM suites the cipher keys and salts.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Gate {
    #[zeroize(skip)]
    suite: Suite,
    rtp_auth_key: [u8; AUTH_KEY_LEN],
    rtcp_auth_key: [u8; AUTH_KEY_LEN],
    rtp_key: [u8; 32],
    rtp_salt: [u8; GCM_SALT_LEN],
    rtcp_key: [u8; 32],
    rtcp_salt: [u8; GCM_SALT_LEN],
}

impl Gate {
    fn new(suite: Suite, master_key: &[u8], master_salt: &[u8]) -> Result<Gate, SrtpError> {
        let mut gate = Gate {
            suite,
            rtp_auth_key: [0; AUTH_KEY_LEN],
            rtcp_auth_key: [0; AUTH_KEY_LEN],
            rtp_key: [0; 32],
            rtp_salt: [0; GCM_SALT_LEN],
            rtcp_key: [0; 32],
            rtcp_salt: [0; GCM_SALT_LEN],
        };
        if suite.is_gcm() {
            let key_len = suite.master_key_len();
            let rtp_key = gate
                .rtp_key
                .get_mut(..key_len)
                .ok_or(SrtpError::Internal("key length"))?;
            derive(master_key, master_salt, LABEL_RTP_ENCRYPTION, rtp_key)?;
            derive(master_key, master_salt, LABEL_RTP_SALT, &mut gate.rtp_salt)?;
            let rtcp_key = gate
                .rtcp_key
                .get_mut(..key_len)
                .ok_or(SrtpError::Internal("key length"))?;
            derive(master_key, master_salt, LABEL_RTCP_ENCRYPTION, rtcp_key)?;
            derive(
                master_key,
                master_salt,
                LABEL_RTCP_SALT,
                &mut gate.rtcp_salt,
            )?;
        } else {
            derive(
                master_key,
                master_salt,
                LABEL_RTP_AUTHENTICATION,
                &mut gate.rtp_auth_key,
            )?;
            derive(
                master_key,
                master_salt,
                LABEL_RTCP_AUTHENTICATION,
                &mut gate.rtcp_auth_key,
            )?;
        }
        Ok(gate)
    }

    /// Checks an SRTP packet of a new SSRC (ROC 0). For GCM the payload is decrypted
    /// into `scratch` (reused, so no allocation); the packet itself is not changed.
    fn authenticate_rtp(
        &self,
        packet: &[u8],
        header_len: usize,
        mki_len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        const ROC: u32 = 0;
        let len = packet.len();
        if self.suite.is_gcm() {
            // header | ciphertext | tag | MKI; IV (RFC 7714 §8.1) = salt XOR
            // (0x0000 | SSRC | ROC | SEQ); AAD = the header (§8.2).
            let tag_at = len
                .checked_sub(mki_len + GCM_TAG_LEN)
                .ok_or(SrtpError::Malformed)?;
            let mut iv = self.rtp_salt;
            xor_into(&mut iv, 2, packet.get(8..12).ok_or(SrtpError::Malformed)?);
            xor_into(&mut iv, 6, &ROC.to_be_bytes());
            xor_into(&mut iv, 10, packet.get(2..4).ok_or(SrtpError::Malformed)?);
            let aad = packet.get(..header_len).ok_or(SrtpError::Malformed)?;
            let ciphertext = packet.get(header_len..tag_at).ok_or(SrtpError::Malformed)?;
            let tag = packet
                .get(tag_at..tag_at + GCM_TAG_LEN)
                .ok_or(SrtpError::Malformed)?;
            self.gcm_open(&self.rtp_key, &iv, aad, ciphertext, tag, scratch)
        } else {
            // header | ciphertext | MKI | tag; tag = HMAC(header | ciphertext | ROC)
            // (RFC 3711 §4.2).
            let tag_len = self.suite.rtp_overhead();
            let tag_at = len.checked_sub(tag_len).ok_or(SrtpError::Malformed)?;
            let authenticated_end = tag_at.checked_sub(mki_len).ok_or(SrtpError::Malformed)?;
            let authenticated = packet
                .get(..authenticated_end)
                .ok_or(SrtpError::Malformed)?;
            let tag = packet.get(tag_at..).ok_or(SrtpError::Malformed)?;
            hmac_sha1_check(
                &self.rtp_auth_key,
                &[authenticated, &ROC.to_be_bytes()],
                tag,
            )
        }
    }

    /// Checks an SRTCP packet of a new SSRC; `index_at` is where the E+index word is.
    fn authenticate_rtcp(
        &self,
        packet: &[u8],
        index_at: usize,
        mki_len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        let index_word = packet
            .get(index_at..index_at + SRTCP_INDEX_LEN)
            .ok_or(SrtpError::Malformed)?;
        if self.suite.is_gcm() {
            // header | ciphertext | tag | E+index | MKI; IV (RFC 7714 §9.1) = salt XOR
            // (0x0000 | SSRC | 0x0000 | 0 + 31-bit index); AAD = header | E+index (§9.2).
            let tag_at = index_at
                .checked_sub(GCM_TAG_LEN)
                .ok_or(SrtpError::Malformed)?;
            let mut iv = self.rtcp_salt;
            xor_into(&mut iv, 2, packet.get(4..8).ok_or(SrtpError::Malformed)?);
            let index = read_u32(packet, index_at).ok_or(SrtpError::Malformed)? & !SRTCP_E_FLAG;
            xor_into(&mut iv, 8, &index.to_be_bytes());
            let header = packet.get(..RTCP_HEADER_LEN).ok_or(SrtpError::Malformed)?;
            let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
            aad[..RTCP_HEADER_LEN].copy_from_slice(header);
            aad[RTCP_HEADER_LEN..].copy_from_slice(index_word);
            let ciphertext = packet
                .get(RTCP_HEADER_LEN..tag_at)
                .ok_or(SrtpError::Malformed)?;
            let tag = packet.get(tag_at..index_at).ok_or(SrtpError::Malformed)?;
            self.gcm_open(&self.rtcp_key, &iv, &aad, ciphertext, tag, scratch)
        } else {
            // header | ciphertext | E+index | MKI | tag; tag = HMAC(header | ciphertext
            // | E+index) (RFC 3711 §3.4).
            let tag_at = index_at + SRTCP_INDEX_LEN + mki_len;
            let authenticated = packet
                .get(..index_at + SRTCP_INDEX_LEN)
                .ok_or(SrtpError::Malformed)?;
            let tag = packet.get(tag_at..).ok_or(SrtpError::Malformed)?;
            if tag.len() != HMAC_SHA1_80_TAG_LEN {
                return Err(SrtpError::Malformed);
            }
            hmac_sha1_check(&self.rtcp_auth_key, &[authenticated], tag)
        }
    }

    /// AES-GCM authenticated decryption into `scratch`; Ok only if the tag verifies.
    fn gcm_open(
        &self,
        key: &[u8; 32],
        iv: &[u8; GCM_SALT_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        let tag: [u8; GCM_TAG_LEN] = tag.try_into().map_err(|_| SrtpError::Malformed)?;
        let tag = aes_gcm::Tag::from(tag);
        let nonce = aes_gcm::Nonce::from(*iv);
        scratch.clear();
        scratch.extend_from_slice(ciphertext);
        let opened = match self.suite {
            Suite::AeadAes128Gcm => {
                let key = key.get(..16).ok_or(SrtpError::Internal("key length"))?;
                Aes128Gcm::new_from_slice(key)
                    .map_err(|_| SrtpError::Internal("AES-128-GCM key"))?
                    .decrypt_in_place_detached(&nonce, aad, scratch, &tag)
            }
            Suite::AeadAes256Gcm => Aes256Gcm::new_from_slice(key)
                .map_err(|_| SrtpError::Internal("AES-256-GCM key"))?
                .decrypt_in_place_detached(&nonce, aad, scratch, &tag),
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => {
                return Err(SrtpError::Internal("GCM gate on a CM suite"));
            }
        };
        // On success `scratch` holds the plaintext, which is not used: libsrtp decrypts
        // again once the SSRC has a stream, and the next packet overwrites it.
        opened.map_err(|_| SrtpError::AuthenticationFailed)
    }
}

fn xor_into(target: &mut [u8; GCM_SALT_LEN], at: usize, bytes: &[u8]) {
    for (t, b) in target.iter_mut().skip(at).zip(bytes) {
        *t ^= *b;
    }
}

/// HMAC-SHA1 over the concatenation of `parts`, truncated to `tag.len()` and compared
/// in constant time (RFC 3711 §4.2.1).
fn hmac_sha1_check(key: &[u8; AUTH_KEY_LEN], parts: &[&[u8]], tag: &[u8]) -> Result<(), SrtpError> {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
        .map_err(|_| SrtpError::Internal("HMAC key"))?;
    for part in parts {
        mac.update(part);
    }
    let full = mac.finalize().into_bytes();
    let expected = full.get(..tag.len()).ok_or(SrtpError::Malformed)?;
    if tag.is_empty() || !bool::from(expected.ct_eq(tag)) {
        return Err(SrtpError::AuthenticationFailed);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// SDES: the a=crypto attribute (RFC 4568 §9.1)
// ---------------------------------------------------------------------------------

/// One `a=crypto` attribute for SRTP (RFC 4568 §9.1): one master key, with optional
/// lifetime and MKI.
///
/// Session parameters (RFC 4568 §6.3): `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`,
/// `UNAUTHENTICATED_SRTP` and `KDR=` refuse the line (see [`RefusedParam`]); `WSH=`
/// (a window-size hint: ours is 128, above the RFC's minimum 64), `FEC_ORDER=` and
/// `FEC_KEY=` (we negotiate no FEC, so neither applies) and any parameter starting
/// with `-` (§6.3.7: optional) are ignored; any other parameter refuses the line
/// (§6.3.7: "MUST be considered invalid"). Rendering never writes session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag that pairs offer and answer lines (1 to 9 digits).
    pub tag: u32,
    /// The crypto suite.
    pub suite: Suite,
    /// Master key and salt.
    pub key: KeyMaterial,
    /// Key lifetime in packets, if given (RFC 4568 §6.1).
    pub lifetime: Option<u64>,
    /// MKI value and its length in bytes (1..=128), if given.
    pub mki: Option<(u64, u8)>,
}

impl CryptoAttribute {
    /// Parses the value of an `a=crypto:` attribute (what follows the colon).
    /// Never panics, whatever the input.
    pub fn parse(value: &str) -> Result<CryptoAttribute, SdesError> {
        let mut fields = value
            .split([' ', '\t', '\r', '\n'])
            .filter(|field| !field.is_empty());
        let tag = parse_tag(fields.next().ok_or(SdesError::Syntax("missing tag"))?)?;
        let suite = Suite::from_sdes_name(
            fields
                .next()
                .ok_or(SdesError::Syntax("missing crypto suite"))?,
        )
        .ok_or(SdesError::UnsupportedSuite)?;
        let key_params = fields
            .next()
            .ok_or(SdesError::Syntax("missing key-params"))?;

        // Session parameters are checked before the key is decoded so a refused line
        // never decodes key material.
        for param in fields {
            check_session_param(param)?;
        }

        let mut key_params = key_params.split(';');
        let key_param = key_params.next().unwrap_or_default();
        if key_params.next().is_some() {
            return Err(SdesError::MultipleKeys);
        }
        let (method, info) = key_param
            .split_once(':')
            .ok_or(SdesError::Syntax("key-param without ':'"))?;
        if !method.eq_ignore_ascii_case("inline") {
            return Err(SdesError::UnsupportedKeyMethod);
        }

        // srtp-key-info = key-salt ["|" lifetime] ["|" mki]  (RFC 4568 §9.2)
        let mut parts = info.split('|');
        let key_salt = parts.next().unwrap_or_default();
        let mut lifetime = None;
        let mut mki = None;
        for part in parts {
            if mki.is_some() {
                return Err(SdesError::Syntax("field after the MKI"));
            }
            if part.contains(':') {
                mki = Some(parse_mki(part)?);
            } else if lifetime.is_none() {
                lifetime = Some(parse_lifetime(part)?);
            } else {
                return Err(SdesError::Syntax("two lifetimes"));
            }
        }
        let key = KeyMaterial::from_sdes_inline(suite, key_salt)?;
        Ok(CryptoAttribute {
            tag,
            suite,
            key,
            lifetime,
            mki,
        })
    }

    /// The attribute value, e.g. `1 AES_CM_128_HMAC_SHA1_80 inline:<base64>`; a
    /// lifetime that is a power of two is written `2^n`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.sdes_name(),
            self.key.to_sdes_inline()
        );
        if let Some(lifetime) = self.lifetime {
            if lifetime.is_power_of_two() {
                out.push_str(&format!("|2^{}", lifetime.trailing_zeros()));
            } else {
                out.push_str(&format!("|{lifetime}"));
            }
        }
        if let Some((value, length)) = self.mki {
            out.push_str(&format!("|{value}:{length}"));
        }
        out
    }

    /// Our answer to an accepted offer line: same tag and suite (RFC 4568 §7.1.2), a
    /// fresh key, no lifetime and no MKI.
    pub fn answer_to(
        offer: &CryptoAttribute,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> CryptoAttribute {
        CryptoAttribute {
            tag: offer.tag,
            suite: offer.suite,
            key: KeyMaterial::generate(offer.suite, rng),
            lifetime: None,
            mki: None,
        }
    }

    /// Our own line for an offer (tag 1, a fresh key), when we make the offer (an INVITE
    /// that came without one).
    pub fn offer(suite: Suite, rng: &mut (impl RngCore + CryptoRng)) -> CryptoAttribute {
        CryptoAttribute {
            tag: 1,
            suite,
            key: KeyMaterial::generate(suite, rng),
            lifetime: None,
            mki: None,
        }
    }

    /// The strongest of several offered lines (by [`Suite::strength`]); the first
    /// one wins a tie, as the offerer listed its preference first.
    pub fn strongest<'a>(
        offers: impl IntoIterator<Item = &'a CryptoAttribute>,
    ) -> Option<&'a CryptoAttribute> {
        offers
            .into_iter()
            .fold(None, |best: Option<&CryptoAttribute>, offer| match best {
                Some(best) if best.suite.strength() >= offer.suite.strength() => Some(best),
                _ => Some(offer),
            })
    }

    /// The MKI as it appears in packets: the value big-endian in `length` bytes.
    pub fn mki_bytes(&self) -> Option<Vec<u8>> {
        let (value, length) = self.mki?;
        let length = usize::from(length);
        let mut bytes = vec![0u8; length];
        for (byte, value_byte) in bytes.iter_mut().rev().zip(value.to_le_bytes()) {
            *byte = value_byte;
        }
        Some(bytes)
    }
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// tag = 1*9DIGIT (RFC 4568 §9.1).
fn parse_tag(text: &str) -> Result<u32, SdesError> {
    if !all_digits(text) || text.len() > 9 {
        return Err(SdesError::BadTag);
    }
    text.parse().map_err(|_| SdesError::BadTag)
}

/// lifetime = ["2^"] 1*(DIGIT) (RFC 4568 §9.2), at least 1, at most 2^64 - 1.
fn parse_lifetime(text: &str) -> Result<u64, SdesError> {
    let value = if let Some(exponent) = text.strip_prefix("2^") {
        if !all_digits(exponent) {
            return Err(SdesError::BadLifetime);
        }
        let exponent: u32 = exponent.parse().map_err(|_| SdesError::BadLifetime)?;
        1u64.checked_shl(exponent)
            .filter(|_| exponent < 64)
            .ok_or(SdesError::BadLifetime)?
    } else {
        if !all_digits(text) {
            return Err(SdesError::BadLifetime);
        }
        text.parse::<u64>().map_err(|_| SdesError::BadLifetime)?
    };
    if value == 0 {
        return Err(SdesError::BadLifetime);
    }
    Ok(value)
}

/// mki = mki-value ":" mki-length; mki-length 1..=128 (RFC 4568 §9.2). The value must
/// fit in `length` bytes.
fn parse_mki(text: &str) -> Result<(u64, u8), SdesError> {
    let (value, length) = text.split_once(':').ok_or(SdesError::BadMki)?;
    if !all_digits(value) || !all_digits(length) || length.len() > 3 {
        return Err(SdesError::BadMki);
    }
    let value: u64 = value.parse().map_err(|_| SdesError::BadMki)?;
    let length: u8 = length.parse().map_err(|_| SdesError::BadMki)?;
    if length == 0 || usize::from(length) > MAX_MKI_LEN {
        return Err(SdesError::BadMki);
    }
    let bits = u32::from(length) * 8;
    if bits < 64 && value >> bits != 0 {
        return Err(SdesError::BadMki);
    }
    Ok((value, length))
}

/// Applies RFC 4568 §6.3 to one session parameter: Ok to ignore it, Err to refuse.
fn check_session_param(param: &str) -> Result<(), SdesError> {
    if param.starts_with('-') {
        return Ok(());
    }
    let name = param.split_once('=').map_or(param, |(name, _)| name);
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    if is("UNENCRYPTED_SRTP") || is("UNENCRYPTED_SRTCP") || is("UNAUTHENTICATED_SRTP") {
        Err(SdesError::RefusedSessionParam(RefusedParam::Unprotected))
    } else if is("KDR") {
        Err(SdesError::RefusedSessionParam(
            RefusedParam::KeyDerivationRate,
        ))
    } else if is("WSH") || is("FEC_ORDER") || is("FEC_KEY") {
        Ok(())
    } else {
        Err(SdesError::RefusedSessionParam(RefusedParam::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    // ---------- helpers ----------

    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Master key || salt of RFC 3711 B.3, also libsrtp's srtp_driver.c test key.
    const B3_KEY_AND_SALT: &str = "E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6";
    /// libsrtp's srtp_driver.c GCM test key: 00..0f (|| 10..1f for 256) || a0..ab.
    const GCM128_KEY_AND_SALT: &str = "000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab";
    const GCM256_KEY_AND_SALT: &str =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f a0a1a2a3a4a5a6a7a8a9aaab";

    fn test_key(suite: Suite) -> KeyMaterial {
        let bytes: Vec<u8> = (0..suite.key_and_salt_len())
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
            .collect();
        KeyMaterial::new(suite, &bytes).unwrap()
    }

    fn pair(suite: Suite) -> (SrtpContext, SrtpContext) {
        let key = test_key(suite);
        (
            SrtpContext::new_outbound(suite, &key).unwrap(),
            SrtpContext::new_inbound(suite, &key).unwrap(),
        )
    }

    /// An RTP packet: optional CSRCs, extension (`ext_words` 32-bit words) and padding.
    fn rtp_packet(
        ssrc: u32,
        seq: u16,
        payload_len: usize,
        csrcs: u8,
        ext_words: u16,
        padding: u8,
    ) -> Vec<u8> {
        let mut packet = vec![
            0x80 | if padding > 0 { 0x20 } else { 0 }
                | if ext_words > 0 { 0x10 } else { 0 }
                | csrcs,
            0,
        ];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        for c in 0..csrcs {
            packet.extend_from_slice(&(0x0c0c_0000 + u32::from(c)).to_be_bytes());
        }
        if ext_words > 0 {
            packet.extend_from_slice(&[0xbe, 0xde]);
            packet.extend_from_slice(&ext_words.to_be_bytes());
            packet.extend((0..ext_words * 4).map(|i| i as u8 ^ 0x5a));
        }
        packet.extend((0..payload_len).map(|i| (i as u8).wrapping_add(seq as u8)));
        if padding > 0 {
            packet.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            packet.push(padding);
        }
        packet
    }

    fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
        rtp_packet(ssrc, seq, 160, 0, 0, 0)
    }

    /// An RTCP receiver report with `words` 32-bit words after the SSRC.
    fn rtcp_packet(ssrc: u32, words: u16) -> Vec<u8> {
        let mut packet = vec![0x81, 0xc9];
        packet.extend_from_slice(&(words + 1).to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend((0..words * 4).map(|i| (i as u8).wrapping_mul(7)));
        packet
    }

    fn protect(ctx: &mut SrtpContext, packet: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; packet.len() + 200];
        buf[..packet.len()].copy_from_slice(packet);
        let len = ctx.protect_rtp(&mut buf, packet.len()).unwrap();
        buf.truncate(len);
        buf
    }

    fn unprotect(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = packet.to_vec();
        let len = ctx.unprotect_rtp(&mut buf, packet.len())?;
        buf.truncate(len);
        Ok(buf)
    }

    fn protect_rtcp(ctx: &mut SrtpContext, packet: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; packet.len() + 200];
        buf[..packet.len()].copy_from_slice(packet);
        let len = ctx.protect_rtcp(&mut buf, packet.len()).unwrap();
        buf.truncate(len);
        buf
    }

    fn unprotect_rtcp(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = packet.to_vec();
        let len = ctx.unprotect_rtcp(&mut buf, packet.len())?;
        buf.truncate(len);
        Ok(buf)
    }

    // ---------- RFC 3711 Appendix B ----------

    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        // B.2: session key, salt already shifted, SSRC = ROC = SEQ = 0, 65282 blocks.
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let iv: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000").try_into().unwrap();
        let mut keystream = vec![0u8; 1_044_512];
        aes_cm_apply(&key, &iv, &mut keystream).unwrap();
        assert_eq!(
            keystream[..48],
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )[..]
        );
        assert_eq!(
            keystream[keystream.len() - 48..],
            hex(
                "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
                 6A2CC3787889374FBEB4C81B17BA6C44"
            )[..]
        );
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let material = hex(B3_KEY_AND_SALT);
        let (key, salt) = material.split_at(16);
        let mut cipher_key = [0u8; 16];
        let mut cipher_salt = [0u8; 14];
        let mut auth_key = [0u8; 20];
        derive(key, salt, LABEL_RTP_ENCRYPTION, &mut cipher_key).unwrap();
        derive(key, salt, LABEL_RTP_SALT, &mut cipher_salt).unwrap();
        derive(key, salt, LABEL_RTP_AUTHENTICATION, &mut auth_key).unwrap();
        assert_eq!(cipher_key[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
        assert_eq!(cipher_salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
        assert_eq!(
            auth_key[..],
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")[..]
        );
        // The gate derives the same authentication key.
        let gate = Gate::new(Suite::AesCm128HmacSha1_80, key, salt).unwrap();
        assert_eq!(gate.rtp_auth_key[..], auth_key[..]);
    }

    /// libsrtp's packet, re-computed from the RFC 3711 B.3 session keys with the B.2
    /// keystream function and HMAC-SHA1: ties libsrtp's output to the RFC, not just
    /// to another implementation.
    #[test]
    fn rfc3711_b3_session_keys_are_what_libsrtp_protects_with() {
        let key = KeyMaterial::new(Suite::AesCm128HmacSha1_80, &hex(B3_KEY_AND_SALT)).unwrap();
        let mut outbound = SrtpContext::new_outbound(Suite::AesCm128HmacSha1_80, &key).unwrap();
        let (ssrc, seq) = (0xdeca_fbad, 0xfff0);
        let plain = rtp(ssrc, seq);
        let protected = protect(&mut outbound, &plain);

        // IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16) (RFC 3711 §4.1.1).
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&hex("30CBBC08863D8C85D49DB34A9AE1"));
        for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
            iv[4 + i] ^= b;
        }
        iv[12] ^= (seq >> 8) as u8;
        iv[13] ^= seq as u8;
        let mut payload = plain[12..].to_vec();
        aes_cm_apply(&hex("C61E7A93744F39EE10734AFE3FF7A087"), &iv, &mut payload).unwrap();
        assert_eq!(protected[..12], plain[..12]);
        assert_eq!(protected[12..plain.len()], payload[..]);

        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&hex(
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4",
        ))
        .unwrap();
        mac.update(&protected[..plain.len()]);
        mac.update(&0u32.to_be_bytes());
        assert_eq!(protected[plain.len()..], mac.finalize().into_bytes()[..10]);
    }

    // ---------- known answers from C libsrtp2 ----------
    //
    // Keys and packets are those of libsrtp's test/srtp_driver.c (srtp_validate,
    // srtp_validate_gcm); the outputs were produced by tests/srtp_interop/srtp_tool.c
    // linked against Debian's libsrtp2 2.5.0-3 (`suite`, `key`, `protect`,
    // `protect_rtcp` commands). C libsrtp2 numbers SRTCP from 1, the Rust crate from
    // 0, so one throwaway SRTCP packet goes first.

    fn known_answer(suite: Suite, key_and_salt: &str, srtp: &str, srtcp: &str) {
        let key = KeyMaterial::new(suite, &hex(key_and_salt)).unwrap();
        let mut outbound = SrtpContext::new_outbound(suite, &key).unwrap();
        let mut inbound = SrtpContext::new_inbound(suite, &key).unwrap();
        let rtp = hex("800f1234decafbadcafebabe abababababababababababababababab");
        let rtcp = hex("81c8000bcafebabe abababababababababababababababab");
        assert_eq!(protect(&mut outbound, &rtp), hex(srtp), "{suite} SRTP");
        let _index_0 = protect_rtcp(&mut outbound, &rtcp);
        assert_eq!(
            protect_rtcp(&mut outbound, &rtcp),
            hex(srtcp),
            "{suite} SRTCP"
        );
        assert_eq!(unprotect(&mut inbound, &hex(srtp)).unwrap(), rtp);
        assert_eq!(unprotect_rtcp(&mut inbound, &hex(srtcp)).unwrap(), rtcp);
    }

    #[test]
    fn libsrtp2_known_answer_aes_cm_128_hmac_sha1_80() {
        known_answer(
            Suite::AesCm128HmacSha1_80,
            B3_KEY_AND_SALT,
            "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb",
            "81c8000bcafebabe7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798",
        );
    }

    #[test]
    fn libsrtp2_known_answer_aes_cm_128_hmac_sha1_32() {
        known_answer(
            Suite::AesCm128HmacSha1_32,
            B3_KEY_AND_SALT,
            "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402 b78d6acc",
            "81c8000bcafebabe7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798",
        );
    }

    #[test]
    fn libsrtp2_known_answer_aead_aes_128_gcm() {
        known_answer(
            Suite::AeadAes128Gcm,
            GCM128_KEY_AND_SALT,
            "800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e d2976826f796b201df3131a127e8a392",
            "81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025 c52c6fbea2b3b446ea31123ba88ce61e 80000001",
        );
    }

    #[test]
    fn libsrtp2_known_answer_aead_aes_256_gcm() {
        known_answer(
            Suite::AeadAes256Gcm,
            GCM256_KEY_AND_SALT,
            "800f1234decafbadcafebabe 0af7f21e8a90bdad7a425c9c31ed4bb1 d90238917e7390a2793500e1681acaea",
            "81c8000bcafebabe 8abfafa780070a90e80f9161cf4aac08 1ed93aaa53c15b0f3ed1a3b984167b03 80000001",
        );
    }

    // ---------- RFC 7714 §16 and §17 ----------
    //
    // The RFC's vectors give session keys, not master keys, so they check the gate's
    // AES-GCM IV and AAD construction (the code that authenticates a new SSRC's first
    // packet). libsrtp's own GCM output passes that same gate in every round-trip test
    // below, which ties it to these vectors.

    const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
        20646976 69736120 696e2070 61727465 73207472 6573";
    const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
    const RFC7714_SALT: &str = "517569642070726f2071756f";

    fn rfc7714_gate(suite: Suite, key: &str) -> Gate {
        let key = hex(key);
        let mut gate = Gate::new(suite, &key, &hex(RFC7714_SALT)).unwrap();
        // Replace the derived keys with the RFC's session key and salt.
        gate.rtp_key = [0; 32];
        gate.rtp_key[..key.len()].copy_from_slice(&key);
        gate.rtcp_key = gate.rtp_key;
        gate.rtp_salt.copy_from_slice(&hex(RFC7714_SALT));
        gate.rtcp_salt = gate.rtp_salt;
        gate
    }

    fn check_rfc7714(suite: Suite, key: &str, srtp: &str, srtcp: &str) {
        let gate = rfc7714_gate(suite, key);
        let mut scratch = Vec::new();
        let srtp = hex(srtp);
        assert_eq!(srtp[..12], hex(RFC7714_RTP)[..12]);
        assert_eq!(srtp.len(), hex(RFC7714_RTP).len() + GCM_TAG_LEN);
        gate.authenticate_rtp(&srtp, 12, 0, &mut scratch).unwrap();
        assert_eq!(scratch[..], hex(RFC7714_RTP)[12..], "decrypted payload");
        let srtcp = hex(srtcp);
        assert_eq!(srtcp[srtcp.len() - 4..], hex("800005d4")[..]);
        gate.authenticate_rtcp(&srtcp, srtcp.len() - 4, 0, &mut scratch)
            .unwrap();
        assert_eq!(
            scratch[..],
            hex(RFC7714_RTCP)[8..],
            "decrypted compound packet"
        );
        // Any flipped bit, in header, ciphertext, tag or index, fails.
        for at in [0, 5, 12, srtp.len() - 1] {
            let mut forged = srtp.clone();
            forged[at] ^= 0x01;
            assert_eq!(
                gate.authenticate_rtp(&forged, 12, 0, &mut scratch),
                Err(SrtpError::AuthenticationFailed)
            );
        }
        for at in [1, 9, srtcp.len() - 5, srtcp.len() - 1] {
            let mut forged = srtcp.clone();
            forged[at] ^= 0x01;
            assert_eq!(
                gate.authenticate_rtcp(&forged, srtcp.len() - 4, 0, &mut scratch),
                Err(SrtpError::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn rfc7714_aead_aes_128_gcm_vectors() {
        check_rfc7714(
            Suite::AeadAes128Gcm,
            "000102030405060708090a0b0c0d0e0f",
            // §16.1.1
            "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce",
            // §17.1.1
            "81c8000d4d617273 63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade 800005d4",
        );
    }

    #[test]
    fn rfc7714_aead_aes_256_gcm_vectors() {
        check_rfc7714(
            Suite::AeadAes256Gcm,
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            // §16.2.1
            "8040f17b8041f8d35501a0b2 32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13",
            // §17.2.1
            "81c8000d4d617273 d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be 800005d4",
        );
    }

    // ---------- round trips ----------

    #[test]
    fn round_trip_every_suite_rtp_and_rtcp() {
        for suite in Suite::ALL {
            let (mut outbound, mut inbound) = pair(suite);
            let packets = [
                rtp_packet(0x1111_2222, 7, 160, 0, 0, 0),
                rtp_packet(0x1111_2222, 8, 160, 2, 0, 0),
                rtp_packet(0x1111_2222, 9, 160, 0, 3, 0),
                rtp_packet(0x1111_2222, 10, 157, 0, 0, 4),
                rtp_packet(0x1111_2222, 11, 33, 15, 2, 255),
                rtp_packet(0x1111_2222, 12, 0, 0, 0, 0),
                rtp_packet(0x3333_4444, 1, 20, 1, 1, 1),
            ];
            for plain in &packets {
                let protected = protect(&mut outbound, plain);
                assert_eq!(
                    protected.len(),
                    plain.len() + suite.rtp_overhead(),
                    "{suite}"
                );
                let header_len = rtp_header_len(plain).unwrap();
                assert_eq!(
                    protected[..header_len],
                    plain[..header_len],
                    "{suite}: header in the clear"
                );
                if plain.len() > header_len + 4 {
                    assert_ne!(
                        protected[header_len..plain.len()],
                        plain[header_len..],
                        "{suite}: encrypted"
                    );
                }
                assert_eq!(
                    unprotect(&mut inbound, &protected).unwrap(),
                    *plain,
                    "{suite}"
                );
            }
            for words in [0, 1, 6, 100] {
                let plain = rtcp_packet(0x1111_2222, words);
                let protected = protect_rtcp(&mut outbound, &plain);
                assert_eq!(
                    protected.len(),
                    plain.len() + suite.rtcp_overhead(),
                    "{suite}"
                );
                assert_eq!(
                    unprotect_rtcp(&mut inbound, &protected).unwrap(),
                    plain,
                    "{suite}"
                );
            }
            assert_eq!(inbound.remote_ssrc_count(), 2);
        }
    }

    #[test]
    fn sequence_wrap_advances_the_roc() {
        for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
            let (mut outbound, mut inbound) = pair(suite);
            let ssrc = 0x0bad_cafe;
            let start: u16 = 65_000;
            let count = 70_000u32;
            let mut buf = [0u8; 300];
            let mut before_wrap = None;
            for i in 0..count {
                let seq = start.wrapping_add(i as u16);
                let plain = rtp(ssrc, seq);
                buf[..plain.len()].copy_from_slice(&plain);
                let len = outbound.protect_rtp(&mut buf, plain.len()).unwrap();
                if seq == 100 && before_wrap.is_none() {
                    before_wrap = Some(buf[..len].to_vec());
                }
                let plain_len = inbound.unprotect_rtp(&mut buf, len).unwrap();
                assert_eq!(buf[..plain_len], plain[..], "{suite}: packet {i}");
            }
            // 65,000 + 70,000 crosses 65,536 twice: ROC 2 at both ends.
            assert_eq!(outbound.roc(ssrc), Some(2), "{suite}");
            assert_eq!(inbound.roc(ssrc), Some(2), "{suite}");

            // The same RTP packet under ROC 0 and ROC 2: same header, different
            // ciphertext and tag, and a ROC-0 receiver does not accept the later one.
            let (mut fresh_outbound, mut fresh_inbound) = pair(suite);
            let roc0 = protect(&mut fresh_outbound, &rtp(ssrc, 100));
            let roc1 = before_wrap.unwrap(); // seq 100 was first seen after one wrap
            assert_eq!(roc0[..12], roc1[..12]);
            assert_ne!(
                roc0[12..],
                roc1[12..],
                "{suite}: ROC enters the keystream and tag"
            );
            assert_eq!(
                unprotect(&mut fresh_inbound, &roc1),
                Err(SrtpError::AuthenticationFailed)
            );
            assert_eq!(
                unprotect(&mut fresh_inbound, &roc0).unwrap(),
                rtp(ssrc, 100)
            );
        }
    }

    // ---------- replay ----------

    #[test]
    fn a_replayed_packet_is_rejected() {
        for suite in Suite::ALL {
            let (mut outbound, mut inbound) = pair(suite);
            let protected = protect(&mut outbound, &rtp(1, 1));
            assert!(unprotect(&mut inbound, &protected).is_ok());
            assert_eq!(
                unprotect(&mut inbound, &protected),
                Err(SrtpError::Replayed),
                "{suite}"
            );
            let protected = protect_rtcp(&mut outbound, &rtcp_packet(1, 6));
            assert!(unprotect_rtcp(&mut inbound, &protected).is_ok());
            assert_eq!(
                unprotect_rtcp(&mut inbound, &protected),
                Err(SrtpError::Replayed),
                "{suite}"
            );
        }
    }

    #[test]
    fn a_packet_older_than_the_replay_window_is_rejected() {
        let (mut outbound, mut inbound) = pair(Suite::AesCm128HmacSha1_80);
        let protected: Vec<Vec<u8>> = (0..300u16)
            .map(|seq| protect(&mut outbound, &rtp(9, seq)))
            .collect();
        for (seq, packet) in protected.iter().enumerate() {
            if seq != 20 && seq != 250 {
                unprotect(&mut inbound, packet).unwrap();
            }
        }
        // Newest is 299: 250 is 49 behind (inside the 128 window), 20 is 279 behind.
        assert_eq!(
            unprotect(&mut inbound, &protected[250]).unwrap(),
            rtp(9, 250)
        );
        assert_eq!(
            unprotect(&mut inbound, &protected[20]),
            Err(SrtpError::Replayed)
        );
        // Exactly at the edge: 299 - 128 = 171 is out, 172 was delivered (replay).
        assert_eq!(
            unprotect(&mut inbound, &protected[171]),
            Err(SrtpError::Replayed)
        );
    }

    #[test]
    fn outbound_refuses_to_reuse_a_sequence_number() {
        let (mut outbound, _) = pair(Suite::AeadAes128Gcm);
        protect(&mut outbound, &rtp(5, 40));
        let mut buf = [0u8; 400];
        let plain = rtp(5, 40);
        buf[..plain.len()].copy_from_slice(&plain);
        assert_eq!(
            outbound.protect_rtp(&mut buf, plain.len()),
            Err(SrtpError::SequenceReused)
        );
        assert!(!SrtpError::SequenceReused.is_expected());
    }

    // ---------- tampering, truncation, forgery ----------

    /// Flips every byte of a protected packet in turn, for the gate (new SSRC) and for
    /// libsrtp (known SSRC): every copy is refused, payload and tag with
    /// AuthenticationFailed.
    #[test]
    fn every_tampered_byte_is_rejected() {
        for suite in Suite::ALL {
            let (mut outbound, _) = pair(suite);
            let plain = rtp_packet(0x5555_6666, 500, 160, 1, 1, 0);
            let header_len = rtp_header_len(&plain).unwrap();
            let protected = protect(&mut outbound, &plain);
            let rtcp = protect_rtcp(&mut outbound, &rtcp_packet(0x5555_6666, 6));
            for known in [false, true] {
                let (_, mut inbound) = pair(suite);
                if known {
                    // Give the SSRC a stream with another packet first.
                    let (mut other, _) = pair(suite);
                    unprotect(&mut inbound, &protect(&mut other, &rtp(0x5555_6666, 499))).unwrap();
                }
                for at in 0..protected.len() {
                    let mut forged = protected.clone();
                    forged[at] ^= 0x10;
                    let result = unprotect(&mut inbound, &forged);
                    assert!(result.is_err(), "{suite} known={known}: byte {at} accepted");
                    if at >= header_len {
                        assert_eq!(
                            result,
                            Err(SrtpError::AuthenticationFailed),
                            "{suite} byte {at}"
                        );
                    }
                }
                for at in 0..rtcp.len() {
                    let mut forged = rtcp.clone();
                    forged[at] ^= 0x10;
                    assert!(
                        unprotect_rtcp(&mut inbound, &forged).is_err(),
                        "{suite}: SRTCP byte {at}"
                    );
                }
                // The untouched packets still pass: failures changed no state.
                assert_eq!(unprotect(&mut inbound, &protected).unwrap(), plain);
                assert!(unprotect_rtcp(&mut inbound, &rtcp).is_ok());
            }
        }
    }

    #[test]
    fn truncated_packets_are_rejected_without_panic() {
        for suite in Suite::ALL {
            let (mut outbound, mut inbound) = pair(suite);
            let protected = protect(&mut outbound, &rtp(77, 1));
            let rtcp = protect_rtcp(&mut outbound, &rtcp_packet(77, 1));
            let (_, mut fresh) = pair(suite);
            unprotect(&mut inbound, &protect(&mut outbound, &rtp(77, 2))).unwrap();
            for len in 0..=40 {
                for ctx in [&mut fresh, &mut inbound] {
                    let mut buf = protected[..len].to_vec();
                    assert!(
                        ctx.unprotect_rtp(&mut buf, len).is_err(),
                        "{suite}: SRTP length {len}"
                    );
                    if len < rtcp.len() {
                        let mut buf = rtcp[..len].to_vec();
                        assert!(
                            ctx.unprotect_rtcp(&mut buf, len).is_err(),
                            "{suite}: SRTCP length {len}"
                        );
                    }
                    // And the tail end of the packet, which keeps the tag but not the header.
                    let mut buf = protected[protected.len() - len..].to_vec();
                    assert!(
                        ctx.unprotect_rtp(&mut buf, len).is_err(),
                        "{suite}: tail length {len}"
                    );
                }
                let mut buf = vec![0u8; 100];
                buf[..len.min(12)].copy_from_slice(&rtp(1, 1)[..len.min(12)]);
                if len < 12 {
                    assert_eq!(
                        outbound.protect_rtp(&mut buf, len),
                        Err(SrtpError::Malformed)
                    );
                }
                if len < 8 {
                    assert_eq!(
                        outbound.protect_rtcp(&mut buf, len),
                        Err(SrtpError::Malformed)
                    );
                }
            }
            // len beyond the buffer is refused, not sliced.
            let mut buf = [0u8; 10];
            assert!(inbound.unprotect_rtp(&mut buf, 11).is_err());
            assert!(inbound.unprotect_rtcp(&mut buf, 11).is_err());
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for suite in Suite::ALL {
            let (_, mut inbound) = pair(suite);
            for _ in 0..20_000 {
                let len = rng.gen_range(0..200);
                let mut buf: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if rng.gen_bool(0.7) && len > 0 {
                    buf[0] = 0x80 | (buf[0] & 0x3f); // mostly version 2
                }
                assert!(inbound.unprotect_rtp(&mut buf, len).is_err());
                assert!(inbound.unprotect_rtcp(&mut buf, len).is_err());
            }
            assert_eq!(inbound.remote_ssrc_count(), 0);
        }
    }

    /// 100,000 well-formed packets with random SSRCs, sequence numbers, payloads and
    /// tags: all refused, and neither our table nor libsrtp's stream table (probed per
    /// SSRC with its public `get_roc`) holds any of their SSRCs afterwards.
    #[test]
    fn forged_packets_with_random_ssrcs_leave_no_state() {
        let mut rng = StdRng::seed_from_u64(42);
        for (suite, count) in [
            (Suite::AesCm128HmacSha1_80, 100_000),
            (Suite::AeadAes128Gcm, 20_000),
        ] {
            let (mut outbound, mut inbound) = pair(suite);
            let legit_ssrc = 0x1234_5678;
            unprotect(&mut inbound, &protect(&mut outbound, &rtp(legit_ssrc, 1))).unwrap();
            let mut forged_ssrcs = Vec::with_capacity(count);
            let mut buf = vec![0u8; 12 + 160 + suite.rtp_overhead()];
            for _ in 0..count {
                rng.fill(&mut buf[..]);
                buf[0] = 0x80;
                let ssrc = read_u32(&buf, 8).unwrap();
                forged_ssrcs.push(ssrc);
                let len = buf.len();
                assert_eq!(
                    inbound.unprotect_rtp(&mut buf, len),
                    Err(SrtpError::AuthenticationFailed)
                );
                // SRTCP too, with the E flag set.
                let mut rtcp = buf[..60].to_vec();
                rtcp[0] = 0x80;
                rtcp[60 - 4 - suite.rtcp_tag_len()] |= 0x80;
                if suite.is_gcm() {
                    rtcp[56] |= 0x80;
                }
                assert_eq!(
                    inbound.unprotect_rtcp(&mut rtcp, 60),
                    Err(SrtpError::AuthenticationFailed)
                );
            }
            assert_eq!(inbound.remote_ssrc_count(), 1, "{suite}");
            for ssrc in forged_ssrcs.iter().filter(|&&ssrc| ssrc != legit_ssrc) {
                assert!(
                    !inbound.library_has_stream(*ssrc),
                    "{suite}: forged SSRC {ssrc:#x} has a stream"
                );
            }
            // The legitimate stream is unaffected.
            assert_eq!(
                unprotect(&mut inbound, &protect(&mut outbound, &rtp(legit_ssrc, 2))).unwrap(),
                rtp(legit_ssrc, 2)
            );
        }
    }

    #[test]
    fn remote_ssrcs_are_capped_least_recently_used_first() {
        let (mut outbound, mut inbound) = pair(Suite::AesCm128HmacSha1_80);
        for ssrc in 1..=MAX_REMOTE_SSRCS as u32 {
            unprotect(&mut inbound, &protect(&mut outbound, &rtp(ssrc, 1))).unwrap();
        }
        // SSRC 1 is used again, so SSRC 2 is the least recently used.
        unprotect(&mut inbound, &protect(&mut outbound, &rtp(1, 2))).unwrap();
        unprotect(&mut inbound, &protect(&mut outbound, &rtp(1000, 1))).unwrap();
        assert_eq!(inbound.remote_ssrc_count(), MAX_REMOTE_SSRCS);
        assert!(!inbound.library_has_stream(2));
        assert!(inbound.library_has_stream(1));
        assert!(inbound.library_has_stream(1000));
    }

    // ---------- MKI, lifetime, buffers, direction ----------

    #[test]
    fn mki_round_trip_and_wrong_mki() {
        for suite in Suite::ALL {
            let mut rng = StdRng::seed_from_u64(3);
            let mut attribute = CryptoAttribute::answer_to(
                &CryptoAttribute {
                    tag: 1,
                    suite,
                    key: test_key(suite),
                    lifetime: None,
                    mki: None,
                },
                &mut rng,
            );
            attribute.mki = Some((0x0102_0304, 4));
            let mut outbound = SrtpContext::outbound_for(&attribute).unwrap();
            let mut inbound = SrtpContext::inbound_for(&attribute).unwrap();
            let protected = protect(&mut outbound, &rtp(8, 8));
            assert_eq!(protected.len(), 172 + suite.rtp_overhead() + 4);
            let mki_at = if suite.is_gcm() {
                protected.len() - 4
            } else {
                protected.len() - 4 - suite.rtp_overhead()
            };
            assert_eq!(protected[mki_at..mki_at + 4], [1, 2, 3, 4]);
            let mut wrong = protected.clone();
            wrong[mki_at + 3] = 9;
            assert_eq!(
                unprotect(&mut inbound, &wrong),
                Err(SrtpError::UnknownMki),
                "{suite}"
            );
            assert_eq!(unprotect(&mut inbound, &protected).unwrap(), rtp(8, 8));
            // Known SSRC now: the wrong MKI is libsrtp's to refuse.
            let protected = protect(&mut outbound, &rtp(8, 9));
            let mut wrong = protected.clone();
            wrong[mki_at] = 0xff;
            assert_eq!(
                unprotect(&mut inbound, &wrong),
                Err(SrtpError::UnknownMki),
                "{suite}"
            );
            let rtcp = protect_rtcp(&mut outbound, &rtcp_packet(8, 2));
            assert_eq!(rtcp.len(), 16 + suite.rtcp_overhead() + 4);
            assert_eq!(
                unprotect_rtcp(&mut inbound, &rtcp).unwrap(),
                rtcp_packet(8, 2)
            );
        }
    }

    #[test]
    fn an_exhausted_key_stops_protecting() {
        let attribute = CryptoAttribute {
            tag: 1,
            suite: Suite::AesCm128HmacSha1_80,
            key: test_key(Suite::AesCm128HmacSha1_80),
            lifetime: Some(3),
            mki: None,
        };
        let mut outbound = SrtpContext::outbound_for(&attribute).unwrap();
        for seq in 0..3 {
            protect(&mut outbound, &rtp(1, seq));
        }
        let mut buf = [0u8; 300];
        buf[..172].copy_from_slice(&rtp(1, 3));
        assert_eq!(
            outbound.protect_rtp(&mut buf, 172),
            Err(SrtpError::KeyExhausted)
        );
        // 2^48 and more are accepted and clamped (RFC 3711 §9.2).
        for lifetime in [1 << 48, u64::MAX] {
            let attribute = CryptoAttribute {
                lifetime: Some(lifetime),
                ..attribute.clone()
            };
            let mut outbound = SrtpContext::outbound_for(&attribute).unwrap();
            let mut inbound = SrtpContext::inbound_for(&attribute).unwrap();
            assert!(unprotect(&mut inbound, &protect(&mut outbound, &rtp(1, 1))).is_ok());
        }
    }

    #[test]
    fn a_small_buffer_is_refused_before_any_state_changes() {
        for suite in Suite::ALL {
            let (mut outbound, mut inbound) = pair(suite);
            let plain = rtp(3, 3);
            let mut buf = vec![0u8; plain.len() + suite.rtp_overhead() - 1];
            buf[..plain.len()].copy_from_slice(&plain);
            assert_eq!(
                outbound.protect_rtp(&mut buf, plain.len()),
                Err(SrtpError::BufferTooSmall {
                    needed: plain.len() + suite.rtp_overhead(),
                    available: buf.len()
                })
            );
            // The same sequence number still protects: nothing was consumed.
            assert_eq!(
                unprotect(&mut inbound, &protect(&mut outbound, &plain)).unwrap(),
                plain
            );
            let rtcp = rtcp_packet(3, 1);
            let mut buf = vec![0u8; rtcp.len() + suite.rtcp_overhead() - 1];
            buf[..rtcp.len()].copy_from_slice(&rtcp);
            assert!(matches!(
                outbound.protect_rtcp(&mut buf, rtcp.len()),
                Err(SrtpError::BufferTooSmall { .. })
            ));
        }
    }

    #[test]
    fn a_context_works_in_one_direction_only() {
        let (mut outbound, mut inbound) = pair(Suite::AeadAes256Gcm);
        let mut buf = [0u8; 300];
        buf[..172].copy_from_slice(&rtp(1, 1));
        assert_eq!(
            inbound.protect_rtp(&mut buf, 172),
            Err(SrtpError::WrongDirection)
        );
        assert_eq!(
            inbound.protect_rtcp(&mut buf, 20),
            Err(SrtpError::WrongDirection)
        );
        assert_eq!(
            outbound.unprotect_rtp(&mut buf, 172),
            Err(SrtpError::WrongDirection)
        );
        assert_eq!(
            outbound.unprotect_rtcp(&mut buf, 20),
            Err(SrtpError::WrongDirection)
        );
    }

    #[test]
    fn unencrypted_srtcp_is_refused() {
        let (mut outbound, mut inbound) = pair(Suite::AesCm128HmacSha1_80);
        let mut protected = protect_rtcp(&mut outbound, &rtcp_packet(4, 2));
        let e_at = protected.len() - 14;
        protected[e_at] &= 0x7f;
        assert_eq!(
            unprotect_rtcp(&mut inbound, &protected),
            Err(SrtpError::Malformed)
        );
    }

    #[test]
    fn key_length_must_match_the_suite() {
        let key = test_key(Suite::AesCm128HmacSha1_80);
        assert_eq!(
            SrtpContext::new_inbound(Suite::AeadAes128Gcm, &key).unwrap_err(),
            SrtpError::KeyLength {
                expected: 28,
                actual: 30
            }
        );
        assert_eq!(
            KeyMaterial::new(Suite::AeadAes256Gcm, &[0; 43]).unwrap_err(),
            SrtpError::KeyLength {
                expected: 44,
                actual: 43
            }
        );
        // CM-80 and CM-32 share lengths: the same key material serves both.
        assert!(SrtpContext::new_outbound(Suite::AesCm128HmacSha1_32, &key).is_ok());
    }

    // ---------- suites and key material ----------

    #[test]
    fn suite_names_lengths_and_strength() {
        for suite in Suite::ALL {
            assert_eq!(Suite::from_sdes_name(suite.sdes_name()), Some(suite));
        }
        let lengths: Vec<_> = Suite::ALL
            .iter()
            .map(|s| (s.master_key_len(), s.master_salt_len()))
            .collect();
        assert_eq!(lengths, [(32, 12), (16, 12), (16, 14), (16, 14)]);
        let mut by_strength = Suite::ALL;
        by_strength.sort_by_key(|s| std::cmp::Reverse(s.strength()));
        assert_eq!(by_strength, Suite::ALL);
        for name in [
            "NULL",
            "AES_CM_128_NULL_AUTH",
            "F8_128_HMAC_SHA1_80",
            "AES_256_CM_HMAC_SHA1_80",
            "AES_CM_128_HMAC_SHA1_8",
            "",
        ] {
            assert_eq!(Suite::from_sdes_name(name), None, "{name}");
        }
        assert_eq!(
            Suite::from_sdes_name("aead_aes_128_gcm"),
            Some(Suite::AeadAes128Gcm)
        );
    }

    #[test]
    fn key_material_is_redacted_generated_and_round_trips() {
        let mut rng = StdRng::seed_from_u64(1);
        for suite in Suite::ALL {
            let a = KeyMaterial::generate(suite, &mut rng);
            let b = KeyMaterial::generate(suite, &mut rng);
            assert_eq!(a.len(), suite.master_key_len() + suite.master_salt_len());
            assert_ne!(a, b);
            assert_eq!(format!("{a:?}"), "KeyMaterial(<redacted>)");
            let inline = a.to_sdes_inline();
            assert_eq!(KeyMaterial::from_sdes_inline(suite, &inline).unwrap(), a);
            assert!(!format!("{a:?}").contains(&inline));
            let unpadded = inline.trim_end_matches('=');
            assert_eq!(KeyMaterial::from_sdes_inline(suite, unpadded).unwrap(), a);
        }
        // 30 bytes encode to 40 characters, 28 to 40 with one '=', 44 to 60.
        assert_eq!(
            test_key(Suite::AesCm128HmacSha1_80).to_sdes_inline().len(),
            40
        );
        assert!(test_key(Suite::AeadAes128Gcm)
            .to_sdes_inline()
            .ends_with('='));
        assert_eq!(test_key(Suite::AeadAes256Gcm).to_sdes_inline().len(), 60);
    }

    // ---------- SDES ----------

    /// RFC 4568 §4's example key (30 bytes).
    const RFC4568_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    #[test]
    fn sdes_parses_the_rfc4568_example() {
        let attribute = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:32"
        ))
        .unwrap();
        assert_eq!(attribute.tag, 1);
        assert_eq!(attribute.suite, Suite::AesCm128HmacSha1_80);
        assert_eq!(attribute.key.to_sdes_inline(), RFC4568_KEY);
        assert_eq!(attribute.lifetime, Some(1 << 20));
        assert_eq!(attribute.mki, Some((1, 32)));
        let mki = attribute.mki_bytes().unwrap();
        assert_eq!(mki.len(), 32);
        assert_eq!(mki[31], 1);
        assert!(mki[..31].iter().all(|&b| b == 0));
        assert_eq!(
            attribute.render(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:32")
        );
    }

    #[test]
    fn sdes_parse_render_round_trips() {
        let mut rng = StdRng::seed_from_u64(9);
        for suite in Suite::ALL {
            for (lifetime, mki) in [
                (None, None),
                (Some(1 << 31), None),
                (None, Some((7, 2))),
                (Some(1000), Some((u64::MAX, 8))),
            ] {
                let attribute = CryptoAttribute {
                    tag: 999_999_999,
                    suite,
                    key: KeyMaterial::generate(suite, &mut rng),
                    lifetime,
                    mki,
                };
                let rendered = attribute.render();
                assert_eq!(
                    CryptoAttribute::parse(&rendered).unwrap(),
                    attribute,
                    "{rendered}"
                );
            }
        }
        let answer = CryptoAttribute::answer_to(
            &CryptoAttribute::parse(&format!(
                "5 AES_CM_128_HMAC_SHA1_32 inline:{RFC4568_KEY}|2^31|9:1"
            ))
            .unwrap(),
            &mut rng,
        );
        assert_eq!(
            (answer.tag, answer.suite, answer.lifetime, answer.mki),
            (5, Suite::AesCm128HmacSha1_32, None, None)
        );
        assert!(answer
            .render()
            .starts_with("5 AES_CM_128_HMAC_SHA1_32 inline:"));
        assert_ne!(answer.key.to_sdes_inline(), RFC4568_KEY);
    }

    #[test]
    fn sdes_whitespace_and_case() {
        let a = CryptoAttribute::parse(&format!(
            "  2\tAES_CM_128_HMAC_SHA1_80  INLINE:{RFC4568_KEY}\r\n"
        ))
        .unwrap();
        assert_eq!(a.tag, 2);
        assert_eq!(
            a.render(),
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}")
        );
    }

    fn parse_with(info_suffix: &str) -> Result<CryptoAttribute, SdesError> {
        CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}{info_suffix}"
        ))
    }

    #[test]
    fn sdes_lifetimes() {
        assert_eq!(parse_with("|2^48").unwrap().lifetime, Some(1 << 48));
        assert_eq!(parse_with("|2^0").unwrap().lifetime, Some(1));
        assert_eq!(parse_with("|2^63").unwrap().lifetime, Some(1 << 63));
        assert_eq!(
            parse_with("|18446744073709551615").unwrap().lifetime,
            Some(u64::MAX)
        );
        assert_eq!(parse_with("|1024").unwrap().lifetime, Some(1024));
        assert_eq!(
            parse_with("|2^48|1:4").unwrap().render(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^48|1:4")
        );
        for bad in [
            "|2^64",
            "|2^4294967296",
            "|2^99999999999999999999",
            "|18446744073709551616",
            "|0",
            "|2^",
            "|2^-1",
            "|+5",
            "|-5",
            "|",
            "|2^4|",
            "|1e9",
            "|0x10",
            "|2^48|2^20",
            "|2^ 3",
        ] {
            assert!(parse_with(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_with("|2^64"), Err(SdesError::BadLifetime));
        assert_eq!(parse_with("|0"), Err(SdesError::BadLifetime));
        assert_eq!(
            parse_with("|2^48|2^20"),
            Err(SdesError::Syntax("two lifetimes"))
        );
    }

    #[test]
    fn sdes_mkis() {
        assert_eq!(parse_with("|1:1").unwrap().mki, Some((1, 1)));
        assert_eq!(parse_with("|255:1").unwrap().mki, Some((255, 1)));
        assert_eq!(parse_with("|0:1").unwrap().mki_bytes(), Some(vec![0]));
        assert_eq!(
            parse_with("|65535:2").unwrap().mki_bytes(),
            Some(vec![0xff, 0xff])
        );
        assert_eq!(
            parse_with("|1:128").unwrap().mki_bytes().unwrap().len(),
            128
        );
        assert_eq!(
            parse_with("|18446744073709551615:8").unwrap().mki,
            Some((u64::MAX, 8))
        );
        assert_eq!(
            parse_with("|18446744073709551615:9")
                .unwrap()
                .mki_bytes()
                .unwrap()[0],
            0
        );
        for bad in [
            "|256:1",
            "|65536:2",
            "|1:0",
            "|1:129",
            "|1:1000",
            "|1:255",
            "|1:256",
            "|18446744073709551616:8",
            "|1:",
            "|:1",
            "|1:1:1",
            "|a:1",
            "|1:b",
            "|1:01000",
            "|1:1|2^20",
            "|1:1|1:1",
        ] {
            assert!(parse_with(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_with("|256:1"), Err(SdesError::BadMki));
        assert_eq!(parse_with("|1:129"), Err(SdesError::BadMki));
        assert_eq!(
            parse_with("|1:1|2^20"),
            Err(SdesError::Syntax("field after the MKI"))
        );
    }

    #[test]
    fn sdes_session_params() {
        for ignored in [
            "WSH=128",
            "FEC_ORDER=FEC_SRTP",
            "FEC_KEY=inline:abc",
            "-FOO",
            "-FOO=1",
            "wsh=64",
        ] {
            assert!(parse_with(&format!(" {ignored}")).is_ok(), "{ignored}");
        }
        for (param, why) in [
            ("UNENCRYPTED_SRTP", RefusedParam::Unprotected),
            ("UNENCRYPTED_SRTCP", RefusedParam::Unprotected),
            ("UNAUTHENTICATED_SRTP", RefusedParam::Unprotected),
            ("unauthenticated_srtp", RefusedParam::Unprotected),
            ("KDR=0", RefusedParam::KeyDerivationRate),
            ("KDR=24", RefusedParam::KeyDerivationRate),
            ("FOO", RefusedParam::Unknown),
            ("FOO=1", RefusedParam::Unknown),
        ] {
            assert_eq!(
                parse_with(&format!(" WSH=128 {param}")),
                Err(SdesError::RefusedSessionParam(why)),
                "{param}"
            );
        }
    }

    #[test]
    fn sdes_malformed_lines() {
        let cases: &[(&str, SdesError)] = &[
            ("", SdesError::Syntax("missing tag")),
            ("1", SdesError::Syntax("missing crypto suite")),
            ("1 AES_CM_128_HMAC_SHA1_80", SdesError::Syntax("missing key-params")),
            ("x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::BadTag),
            ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::BadTag),
            ("-1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::BadTag),
            ("1 NULL inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::UnsupportedSuite),
            ("1 AES_CM_128_NULL_AUTH inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::UnsupportedSuite),
            ("1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::UnsupportedSuite),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:https://example.invalid/k", SdesError::UnsupportedKeyMethod),
            ("1 AES_CM_128_HMAC_SHA1_80 PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::Syntax("key-param without ':'")),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4;inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|2:4", SdesError::MultipleKeys),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR;", SdesError::MultipleKeys),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaV!!", SdesError::Base64),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVB", SdesError::Base64),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:", SdesError::KeyLength { expected: 30, actual: 0 }),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0m", SdesError::KeyLength { expected: 30, actual: 24 }),
            ("1 AEAD_AES_128_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::KeyLength { expected: 28, actual: 30 }),
            ("1 AEAD_AES_256_GCM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", SdesError::KeyLength { expected: 44, actual: 30 }),
        ];
        for (line, expected) in cases {
            assert_eq!(
                CryptoAttribute::parse(line).as_ref().map(|_| ()),
                Err(expected),
                "{line}"
            );
        }
        // Far too long a key is a length error, not a panic or a buffer overrun.
        let long = "A".repeat(10_000);
        assert!(matches!(
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{long}")),
            Err(SdesError::KeyLength { .. })
        ));
    }

    /// Mutations of valid lines (byte flips, truncations, insertions of the
    /// separators the parser splits on, non-ASCII): parse returns, never panics.
    #[test]
    fn sdes_parse_never_panics() {
        let mut rng = StdRng::seed_from_u64(77);
        let seeds = [
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:32 WSH=64 -X"),
            format!(
                "2 AEAD_AES_256_GCM inline:{}|18446744073709551615|255:1",
                test_key(Suite::AeadAes256Gcm).to_sdes_inline()
            ),
        ];
        let alphabet = [
            " ", "|", ":", ";", "^", "2^", "=", "-", "\t", "é", "\u{0}", "9", "A", "/", "+",
        ];
        for _ in 0..20_000 {
            let mut line = seeds[rng.gen_range(0..seeds.len())].clone().into_bytes();
            for _ in 0..rng.gen_range(1..6) {
                match rng.gen_range(0..4) {
                    0 if !line.is_empty() => {
                        let at = rng.gen_range(0..line.len());
                        line[at] = rng.gen();
                    }
                    1 => line.truncate(rng.gen_range(0..=line.len())),
                    2 => {
                        let at = rng.gen_range(0..=line.len());
                        let piece = alphabet[rng.gen_range(0..alphabet.len())].as_bytes();
                        line.splice(at..at, piece.iter().copied());
                    }
                    _ if !line.is_empty() => {
                        let at = rng.gen_range(0..line.len());
                        line.remove(at);
                    }
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&line);
            if let Ok(attribute) = CryptoAttribute::parse(&text) {
                // Whatever parses renders to something that parses to the same.
                assert_eq!(
                    CryptoAttribute::parse(&attribute.render()).unwrap(),
                    attribute
                );
            }
        }
    }

    #[test]
    fn the_strongest_offer_wins_and_ties_keep_the_offer_order() {
        let line = |tag: u32, suite: Suite| CryptoAttribute {
            tag,
            suite,
            key: test_key(suite),
            lifetime: None,
            mki: None,
        };
        let offers = [
            line(1, Suite::AesCm128HmacSha1_80),
            line(2, Suite::AeadAes128Gcm),
            line(3, Suite::AesCm128HmacSha1_32),
            line(4, Suite::AeadAes128Gcm),
        ];
        assert_eq!(CryptoAttribute::strongest(&offers).map(|a| a.tag), Some(2));
        assert_eq!(
            CryptoAttribute::strongest(&offers[..1]).map(|a| a.tag),
            Some(1)
        );
        assert_eq!(CryptoAttribute::strongest(&[]).map(|a| a.tag), None);
    }

    #[test]
    fn contexts_and_keys_can_move_to_a_media_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SrtpContext>();
        assert_send::<KeyMaterial>();
        assert_send::<CryptoAttribute>();
    }

    #[test]
    fn errors_split_expected_from_bugs() {
        for expected in [
            SrtpError::Malformed,
            SrtpError::AuthenticationFailed,
            SrtpError::Replayed,
            SrtpError::UnknownMki,
        ] {
            assert!(expected.is_expected());
        }
        for bug in [
            SrtpError::WrongDirection,
            SrtpError::KeyExhausted,
            SrtpError::Internal("x"),
            SrtpError::BufferTooSmall {
                needed: 1,
                available: 0,
            },
        ] {
            assert!(!bug.is_expected());
        }
    }
}
