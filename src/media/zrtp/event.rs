//! What a ZRTP session reports: the result of a completed exchange (keys, SAS), its
//! failures and their RFC 6189 error codes, and why a packet was dropped.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::algorithm::{AuthTag, Cipher, KeyAgreement};
use super::config::Role;
use super::packet::{MessageType, PacketError};
use super::sas::Sas;
use super::Zid;
use crate::media::srtp::Suite;
use crate::redact::Redacted;

/// The error codes of RFC 6189 §5.9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0x10: malformed packet (CRC OK, but wrong structure).
    MalformedPacket,
    /// 0x20: critical software error.
    CriticalSoftwareError,
    /// 0x30: unsupported ZRTP version.
    UnsupportedVersion,
    /// 0x40: Hello components mismatch. We also send it when the Hello does not match
    /// the `a=zrtp-hash` of the signalling or its MAC fails once H2 is known.
    HelloComponentsMismatch,
    /// 0x51: hash type not supported.
    UnsupportedHash,
    /// 0x52: cipher type not supported.
    UnsupportedCipher,
    /// 0x53: public key exchange not supported (also our answer to Multistream).
    UnsupportedKeyAgreement,
    /// 0x54: SRTP auth tag not supported.
    UnsupportedAuthTag,
    /// 0x55: SAS rendering scheme not supported.
    UnsupportedSas,
    /// 0x56: no shared secret available, DH mode required (our answer to Preshared).
    NoSharedSecret,
    /// 0x61: DH error, bad pvi or pvr (== 1, 0, or p−1).
    BadPublicValue,
    /// 0x62: DH error, hvi != hashed data.
    HviMismatch,
    /// 0x63: received relayed SAS from untrusted MiTM.
    UntrustedMitm,
    /// 0x70: auth error, bad Confirm packet MAC. We also send it when a Commit or
    /// DHPart MAC fails once its key is revealed.
    BadConfirmMac,
    /// 0x80: nonce reuse.
    NonceReuse,
    /// 0x90: equal ZIDs in Hello.
    EqualZids,
    /// 0x91: SSRC collision.
    SsrcCollision,
    /// 0xA0: service unavailable.
    ServiceUnavailable,
    /// 0xB0: protocol timeout error.
    ProtocolTimeout,
    /// 0x100: GoClear received, but not allowed.
    GoClearNotAllowed,
    /// A code RFC 6189 does not define.
    Other(u32),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::MalformedPacket => 0x10,
            ErrorCode::CriticalSoftwareError => 0x20,
            ErrorCode::UnsupportedVersion => 0x30,
            ErrorCode::HelloComponentsMismatch => 0x40,
            ErrorCode::UnsupportedHash => 0x51,
            ErrorCode::UnsupportedCipher => 0x52,
            ErrorCode::UnsupportedKeyAgreement => 0x53,
            ErrorCode::UnsupportedAuthTag => 0x54,
            ErrorCode::UnsupportedSas => 0x55,
            ErrorCode::NoSharedSecret => 0x56,
            ErrorCode::BadPublicValue => 0x61,
            ErrorCode::HviMismatch => 0x62,
            ErrorCode::UntrustedMitm => 0x63,
            ErrorCode::BadConfirmMac => 0x70,
            ErrorCode::NonceReuse => 0x80,
            ErrorCode::EqualZids => 0x90,
            ErrorCode::SsrcCollision => 0x91,
            ErrorCode::ServiceUnavailable => 0xa0,
            ErrorCode::ProtocolTimeout => 0xb0,
            ErrorCode::GoClearNotAllowed => 0x100,
            ErrorCode::Other(code) => code,
        }
    }

    /// The code a wire value stands for.
    pub fn from_code(code: u32) -> ErrorCode {
        const KNOWN: [ErrorCode; 20] = [
            ErrorCode::MalformedPacket,
            ErrorCode::CriticalSoftwareError,
            ErrorCode::UnsupportedVersion,
            ErrorCode::HelloComponentsMismatch,
            ErrorCode::UnsupportedHash,
            ErrorCode::UnsupportedCipher,
            ErrorCode::UnsupportedKeyAgreement,
            ErrorCode::UnsupportedAuthTag,
            ErrorCode::UnsupportedSas,
            ErrorCode::NoSharedSecret,
            ErrorCode::BadPublicValue,
            ErrorCode::HviMismatch,
            ErrorCode::UntrustedMitm,
            ErrorCode::BadConfirmMac,
            ErrorCode::NonceReuse,
            ErrorCode::EqualZids,
            ErrorCode::SsrcCollision,
            ErrorCode::ServiceUnavailable,
            ErrorCode::ProtocolTimeout,
            ErrorCode::GoClearNotAllowed,
        ];
        KNOWN
            .into_iter()
            .find(|known| known.code() == code)
            .unwrap_or(ErrorCode::Other(code))
    }
}

/// Why a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The error code.
    pub code: ErrorCode,
    /// True if the peer sent the Error; false if we detected the problem (and, except
    /// for timeouts, sent the Error).
    pub from_peer: bool,
}

/// SRTP master keys and salts of both directions, from our point of view.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SrtpKeys {
    /// The master key we protect outbound SRTP with (srtpkeyi if we are the
    /// initiator, srtpkeyr if the responder).
    pub local_key: Vec<u8>,
    /// The master salt we protect outbound SRTP with (112 bits).
    pub local_salt: Vec<u8>,
    /// The master key the peer protects its SRTP with.
    pub remote_key: Vec<u8>,
    /// The peer's master salt.
    pub remote_salt: Vec<u8>,
}

impl SrtpKeys {
    /// Key then salt for our outbound context (`srtp::KeyMaterial::new` takes this).
    pub fn local_key_and_salt(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new([self.local_key.as_slice(), &self.local_salt].concat())
    }

    /// Key then salt for the inbound context.
    pub fn remote_key_and_salt(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new([self.remote_key.as_slice(), &self.remote_salt].concat())
    }
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SrtpKeys(<secret>)")
    }
}

/// The result of a completed exchange.
#[derive(Debug, Clone)]
pub struct SecureInfo {
    /// Our role.
    pub role: Role,
    /// The peer's ZID.
    pub peer_zid: Zid,
    /// Negotiated cipher (AES1: 128-bit keys, AES3: 256-bit keys).
    pub cipher: Cipher,
    /// Negotiated SRTP authentication tag.
    pub auth_tag: AuthTag,
    /// The key agreement used.
    pub key_agreement: KeyAgreement,
    /// The SAS to compare.
    pub sas: Sas,
    /// A retained secret matched and both ends flagged the SAS as verified in an
    /// earlier call (V flag): the SAS need not be compared again.
    pub sas_verified_previously: bool,
    /// We had retained secrets for this ZID but none matched: either end lost its
    /// cache, or someone is in the middle. The SAS must be compared.
    pub cache_mismatch: bool,
    /// The SRTP keys.
    pub keys: SrtpKeys,
}

impl SecureInfo {
    /// The SRTP suite of `crate::media::srtp` these keys are for, if it has one (it
    /// has no AES-256 counter-mode suite, so AES3 gives `None`).
    pub fn srtp_suite(&self) -> Option<Suite> {
        match (self.cipher, self.auth_tag) {
            (Cipher::Aes1, AuthTag::Hs80) => Some(Suite::AesCm128HmacSha1_80),
            (Cipher::Aes1, AuthTag::Hs32) => Some(Suite::AesCm128HmacSha1_32),
            (Cipher::Aes3, _) => None,
        }
    }
}

/// What a session reports.
#[derive(Debug, Clone)]
pub enum ZrtpEvent {
    /// The peer's first Hello arrived (not yet authenticated: its MAC is checked when
    /// the peer reveals H2).
    PeerHello {
        /// The peer's ZID.
        zid: Zid,
        /// Its client identifier, caller data.
        client_id: Redacted<String>,
        /// It will not send a Commit (P flag).
        passive: bool,
        /// It claims to be a trusted MiTM, e.g. a PBX (M flag).
        mitm: bool,
    },
    /// The exchange completed: SRTP can start.
    Secure(SecureInfo),
    /// The exchange failed; the session is finished.
    Failed(Failure),
}

/// Why [`Session::handle_packet`](super::Session::handle_packet) dropped a packet without acting on it. None of these
/// change the session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discarded {
    /// Not a well-formed ZRTP packet.
    #[error("malformed ZRTP packet: {0}")]
    Malformed(#[from] PacketError),
    /// A message that is not expected now (wrong state, or a stray retransmission).
    #[error("unexpected ZRTP {0:?} message")]
    Unexpected(MessageType),
    /// A message whose hash-chain image or MAC does not authenticate it.
    #[error("unauthenticated ZRTP {0:?} message")]
    Forged(MessageType),
    /// A message we parse but do not act on (SASrelay, PingACK, ClearACK).
    #[error("ZRTP {0:?} message ignored")]
    Ignored(MessageType),
    /// The session has failed; only ErrorACK is still read.
    #[error("ZRTP session has failed")]
    Finished,
}

/// Why a zrtp-hash attribute value could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ZrtpHashError {
    /// Not "`<version> <64 hex digits>`".
    #[error("malformed zrtp-hash attribute")]
    Malformed,
    /// A version other than 1.10.
    #[error("zrtp-hash for an unsupported ZRTP version")]
    UnsupportedVersion,
}
