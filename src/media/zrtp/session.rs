//! The ZRTP state machine (RFC 6189 §4), sans-IO: one [`Session`] per media stream.
//!
//! Driven like the rest of the media plane: [`Session::handle_packet`] for each ZRTP
//! packet that arrives, [`Session::handle_timeout`] when [`Session::poll_timeout`]'s
//! deadline passes, and after either, drain [`Session::poll_transmit`] (packets to
//! send) and [`Session::poll_event`]. The session never reads the clock; time that
//! goes backwards is ignored.
//!
//! The exchange, for the side that sends the Commit (the initiator):
//! Hello ⇄ HelloACK both ways, Commit →, ← DHPart1, DHPart2 →, ← Confirm1,
//! Confirm2 →, ← Conf2ACK. Either side may send the Commit; if both do, the one with
//! the higher hvi stays initiator (§4.2). Only DH mode is implemented (X255 and DH3k);
//! Multistream and Preshared Commits are refused with an Error.
//!
//! Security rules this file keeps (docs/zrtp.md lists the tests for each):
//! - A packet that fails parsing or authentication (hash-chain preimage, MAC) is
//!   dropped before anything in the session changes; `handle_packet` says why.
//! - The responder computes no DH result before the DHPart2 whose H1 hashes to the
//!   Commit's H2 and whose hash matches the committed hvi.
//! - The Hello, Commit and DHPart MACs are checked as soon as the next hash-chain
//!   image reveals their key; a mismatch fails the session.
//! - Secrets (hash chain, DH private values, s0-derived keys) are zeroized on drop;
//!   retained secrets go to the in-RAM [`RetainedSecrets`] table only.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use rand::{CryptoRng, Rng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::algorithm::{AlgorithmId, AuthTag, Cipher, HashType, KeyAgreement, SasType};
use super::cache::{CachedSecrets, RetainedSecrets, Secret};
use super::dh::{check_public_value, KeyPair};
use super::kdf::{self, DerivedKeys, HashChain, CFB_IV_LEN, HASH_LEN, RETAINED_SECRET_LEN};
use super::packet::{
    self, Commit, CommitMode, Confirm, ConfirmBody, DhPart, Hello, Message, MessageType,
    PacketError, PingAck, MAC_LEN, VERSION,
};
use super::sas::Sas;
use super::timer::{Fired, Retransmit, Schedule};
use super::Zid;
use crate::media::srtp::Suite;
use crate::redact::Redacted;

/// Which side we would like to be. Either side may send the Commit (RFC 6189 §4.2);
/// the hint only decides who tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleHint {
    /// Send the Commit as soon as Hello and HelloACK have been exchanged.
    Initiator,
    /// Wait [`Config::responder_commit_delay`] for the peer's Commit, then send one.
    Responder,
}

/// The role a session ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the Commit that won.
    Initiator,
    /// The peer did.
    Responder,
}

/// What we offer and how long we wait. Validated by construction: empty lists fall
/// back to the mandatory algorithm of their kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our client identifier in Hello (16 octets, space padded).
    pub client_id: [u8; 16],
    /// Ciphers, in preference order. AES3 is off by default: our SRTP module has no
    /// AES-256 counter-mode suite yet (RFC 6188).
    pub ciphers: Vec<Cipher>,
    /// SRTP authentication tags, in preference order.
    pub auth_tags: Vec<AuthTag>,
    /// Key agreements, in preference order.
    pub key_agreements: Vec<KeyAgreement>,
    /// SAS types, in preference order.
    pub sas_types: Vec<SasType>,
    /// The peer's `a=zrtp-hash` from its SDP, if it sent one (RFC 6189 §8.1).
    pub peer_hello_hash: Option<String>,
    /// The cache expiration interval we put in Confirm (RFC 6189 §5.7), in seconds;
    /// `u32::MAX` means "keep until evicted".
    pub cache_expiry: u32,
    /// Longest time from start to Secure; then the session fails with a timeout.
    pub handshake_timeout: Duration,
    /// With [`RoleHint::Responder`], how long to wait for the peer's Commit.
    pub responder_commit_delay: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            client_id: *b"sotto           ",
            ciphers: vec![Cipher::Aes1],
            auth_tags: vec![AuthTag::Hs80, AuthTag::Hs32],
            key_agreements: vec![KeyAgreement::X255, KeyAgreement::Dh3k],
            sas_types: vec![SasType::B32, SasType::B256],
            peer_hello_hash: None,
            cache_expiry: u32::MAX,
            // A person may take a while to answer, but media that has not gone
            // secure in half a minute will not.
            handshake_timeout: Duration::from_secs(30),
            responder_commit_delay: Duration::from_secs(1),
        }
    }
}

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

/// Why [`Session::handle_packet`] dropped a packet without acting on it. None of these
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
    /// Not "<version> <64 hex digits>".
    #[error("malformed zrtp-hash attribute")]
    Malformed,
    /// A version other than 1.10.
    #[error("zrtp-hash for an unsupported ZRTP version")]
    UnsupportedVersion,
}

/// Where the exchange is (RFC 6189 §4 and the figures of §4.1 to §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Hello/HelloACK discovery.
    Discovery,
    /// Initiator: Commit sent, waiting for DHPart1.
    CommitSent,
    /// Initiator: DHPart2 sent, waiting for Confirm1.
    DhPart2Sent,
    /// Initiator: Confirm2 sent, waiting for Conf2ACK.
    Confirm2Sent,
    /// Responder: DHPart1 sent, waiting for DHPart2.
    DhPart1Sent,
    /// Responder: Confirm1 sent, waiting for Confirm2.
    Confirm1Sent,
    /// Keys agreed and confirmed.
    Secure,
    /// Finished without keys.
    Failed,
}

/// The algorithms of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Negotiated {
    cipher: Cipher,
    auth_tag: AuthTag,
    key_agreement: KeyAgreement,
    sas_type: SasType,
}

/// A received message kept verbatim with its parsed form.
#[derive(Debug, Clone)]
struct Received<T> {
    message: T,
    raw: Vec<u8>,
}

/// The message being retransmitted.
#[derive(Debug)]
struct Reliable {
    timer: Retransmit,
    message: Vec<u8>,
}

/// The retained secret that matched the peer's, if any (RFC 6189 §4.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecretMatch {
    Rs1,
    Rs2,
}

/// Bound of queued outbound packets: a handful per step of the exchange. A peer that
/// floods duplicates cannot make us queue more than this between two polls.
const MAX_OUTBOX: usize = 16;

/// Bound of queued events, for the same reason (only a few can ever be raised).
const MAX_EVENTS: usize = 16;

/// One ZRTP exchange. `R` is the cryptographic RNG (`rand::rngs::OsRng` in
/// production, a seeded one in tests).
pub struct Session<R> {
    rng: R,
    config: Config,
    zid: Zid,
    ssrc: u32,
    hint: RoleHint,
    cache: RetainedSecrets,
    state: State,
    role: Option<Role>,
    chain: HashChain,
    our_hello: Vec<u8>,
    peer_hello_hash: Option<[u8; HASH_LEN]>,
    peer_hello: Option<Received<Hello>>,
    hello_acked: bool,
    cached: CachedSecrets,
    negotiated: Option<Negotiated>,
    key_pair: Option<KeyPair>,
    /// Our Commit (initiator) and the hvi in it.
    our_commit: Option<Vec<u8>>,
    our_hvi: Option<[u8; HASH_LEN]>,
    /// Our DHPart2 (initiator) or DHPart1 (responder).
    our_dhpart: Option<Vec<u8>>,
    /// Our Confirm1 (responder) or Confirm2 (initiator).
    our_confirm: Option<Vec<u8>>,
    peer_commit: Option<Received<Commit>>,
    peer_dhpart: Option<Received<DhPart>>,
    /// The raw Confirm2 we accepted (responder), to recognise its retransmissions.
    peer_confirm2: Option<Vec<u8>>,
    secret_match: Option<SecretMatch>,
    keys: Option<DerivedKeys>,
    peer_confirm: Option<ConfirmBody>,
    /// New rs1 waiting for the SAS to be verified after a cache mismatch (§4.6.1.1).
    pending_rs1: Option<Secret>,
    cache_lifetime: Option<Duration>,
    reliable: Option<Reliable>,
    commit_at: Option<Instant>,
    handshake_deadline: Instant,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<ZrtpEvent>,
    sequence: u16,
    last_now: Instant,
    dh_agreements: u32,
}

impl<R> fmt::Debug for Session<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Everything that makes up the protocol state, nothing secret: the tests compare
        // this before and after a forged packet.
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("role", &self.role)
            .field("hint", &self.hint)
            .field(
                "peer_hello",
                &self.peer_hello.as_ref().map(|h| kdf::sha256(&[&h.raw])),
            )
            .field("hello_acked", &self.hello_acked)
            .field("negotiated", &self.negotiated)
            .field("key_pair", &self.key_pair)
            .field(
                "our_commit",
                &self.our_commit.as_ref().map(|m| kdf::sha256(&[m])),
            )
            .field(
                "our_dhpart",
                &self.our_dhpart.as_ref().map(|m| kdf::sha256(&[m])),
            )
            .field(
                "our_confirm",
                &self.our_confirm.as_ref().map(|m| kdf::sha256(&[m])),
            )
            .field(
                "peer_commit",
                &self.peer_commit.as_ref().map(|c| kdf::sha256(&[&c.raw])),
            )
            .field(
                "peer_dhpart",
                &self.peer_dhpart.as_ref().map(|d| kdf::sha256(&[&d.raw])),
            )
            .field("peer_confirm2", &self.peer_confirm2.is_some())
            .field("secret_match", &self.secret_match)
            .field("keys", &self.keys.is_some())
            .field("peer_confirm", &self.peer_confirm)
            .field("reliable", &self.reliable)
            .field("commit_at", &self.commit_at)
            .field("outbox", &self.outbox.len())
            .field("events", &self.events.len())
            .field("sequence", &self.sequence)
            .field("dh_agreements", &self.dh_agreements)
            .finish_non_exhaustive()
    }
}

/// The four-character names of everything in a list, for Hello.
fn ids<T: Copy>(list: &[T], id: impl Fn(T) -> AlgorithmId) -> Vec<AlgorithmId> {
    list.iter().map(|&x| id(x)).collect()
}

/// `list`, or `fallback` if it is empty.
fn or_mandatory<T: Copy>(list: &[T], fallback: T) -> Vec<T> {
    if list.is_empty() {
        vec![fallback]
    } else {
        list.to_vec()
    }
}

/// Parses "1.10 <64 hex digits>".
fn parse_zrtp_hash(value: &str) -> Result<[u8; HASH_LEN], ZrtpHashError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some(version), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ZrtpHashError::Malformed);
    };
    if version.as_bytes() != VERSION {
        return Err(ZrtpHashError::UnsupportedVersion);
    }
    if hash.len() != HASH_LEN * 2 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ZrtpHashError::Malformed);
    }
    let mut out = [0u8; HASH_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16)
            .map_err(|_| ZrtpHashError::Malformed)?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<R: RngCore + CryptoRng> Session<R> {
    /// Starts a session: our Hello is queued at once. `zid` is our ZID (the same for
    /// every call of this process), `ssrc` the SSRC of our RTP stream (ZRTP packets
    /// carry it), `cache` the shared table of retained secrets.
    pub fn new(
        hint: RoleHint,
        zid: Zid,
        ssrc: u32,
        config: Config,
        cache: RetainedSecrets,
        now: Instant,
        mut rng: R,
    ) -> Session<R> {
        let mut config = config;
        config.ciphers = or_mandatory(&config.ciphers, Cipher::Aes1);
        config.auth_tags = or_mandatory(&config.auth_tags, AuthTag::Hs80);
        config.key_agreements = or_mandatory(&config.key_agreements, KeyAgreement::Dh3k);
        config.sas_types = or_mandatory(&config.sas_types, SasType::B32);
        let chain = HashChain::random(&mut rng);
        let mut our_hello = Message::Hello(Hello {
            version: VERSION,
            client_id: config.client_id,
            h3: *chain.h3(),
            zid,
            signature_capable: false,
            mitm: false,
            passive: false,
            hashes: vec![HashType::S256.id()],
            ciphers: ids(&config.ciphers, Cipher::id),
            auth_tags: ids(&config.auth_tags, AuthTag::id),
            key_agreements: ids(&config.key_agreements, KeyAgreement::id),
            sas_types: ids(&config.sas_types, SasType::id),
            mac: [0; MAC_LEN],
        })
        .encode();
        kdf::seal_message_mac(&mut our_hello, chain.h2());
        // A malformed attribute is the signalling's problem; without a usable hash
        // the Hello is simply not checked against one (as if none was sent).
        let peer_hello_hash = config
            .peer_hello_hash
            .as_deref()
            .and_then(|v| parse_zrtp_hash(v).ok());
        let sequence = rng.gen();
        let mut session = Session {
            rng,
            handshake_deadline: now + config.handshake_timeout,
            config,
            zid,
            ssrc,
            hint,
            cache,
            state: State::Discovery,
            role: None,
            chain,
            our_hello: our_hello.clone(),
            peer_hello_hash,
            peer_hello: None,
            hello_acked: false,
            cached: CachedSecrets::default(),
            negotiated: None,
            key_pair: None,
            our_commit: None,
            our_hvi: None,
            our_dhpart: None,
            our_confirm: None,
            peer_commit: None,
            peer_dhpart: None,
            peer_confirm2: None,
            secret_match: None,
            keys: None,
            peer_confirm: None,
            pending_rs1: None,
            cache_lifetime: None,
            reliable: None,
            commit_at: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            sequence,
            last_now: now,
            dh_agreements: 0,
        };
        session.send_reliably(our_hello, Schedule::Hello, now);
        session
    }

    /// The value of our `a=zrtp-hash` SDP attribute: version and the SHA-256 of our
    /// Hello message (RFC 6189 §8.1), e.g. "1.10 3be3…0815".
    pub fn hello_hash(&self) -> String {
        format!(
            "{} {}",
            String::from_utf8_lossy(&VERSION),
            hex(&kdf::sha256(&[&self.our_hello]))
        )
    }

    /// The peer's `a=zrtp-hash`, when it arrives after the session started (e.g. in an
    /// SDP answer). If the peer's Hello is already here and does not match, the
    /// session fails.
    pub fn set_peer_hello_hash(&mut self, now: Instant, value: &str) -> Result<(), ZrtpHashError> {
        let hash = parse_zrtp_hash(value)?;
        self.peer_hello_hash = Some(hash);
        let mismatch = self
            .peer_hello
            .as_ref()
            .is_some_and(|h| !kdf::ct_eq(&kdf::sha256(&[&h.raw]), &hash));
        if mismatch && !matches!(self.state, State::Secure | State::Failed) {
            let now = self.advance(now);
            self.fail(ErrorCode::HelloComponentsMismatch, now);
        }
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Our role, once a Commit was sent or accepted.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// How many DH results this session has computed (0 or 1 in a sound exchange).
    pub fn dh_agreements(&self) -> u32 {
        self.dh_agreements
    }

    /// Records that a person compared the SAS (`true`) or found it different or
    /// unconfirmed (`false`). Updates the retained-secret table; after a cache
    /// mismatch the new secret is only retained once the SAS is verified (RFC 6189
    /// §4.6.1.1). Has no effect before [`ZrtpEvent::Secure`].
    pub fn set_sas_verified(&mut self, now: Instant, verified: bool) {
        if self.state != State::Secure {
            return;
        }
        let Some(peer) = self.peer_hello.as_ref().map(|h| h.message.zid) else {
            return;
        };
        let now = self.advance(now);
        match (verified, self.pending_rs1.take()) {
            (true, Some(rs1)) => self.cache.store(&peer, rs1, true, self.cache_lifetime, now),
            (verified, _) => self.cache.set_verified(&peer, verified),
        }
    }

    /// The next packet to send, framed with header and CRC.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let message = self.outbox.pop_front()?;
        let packet = packet::encode_packet(self.sequence, self.ssrc, &message);
        self.sequence = self.sequence.wrapping_add(1);
        Some(packet)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ZrtpEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshake = match self.state {
            State::Secure | State::Failed => None,
            _ => Some(self.handshake_deadline),
        };
        [
            self.reliable.as_ref().map(|r| r.timer.deadline()),
            self.commit_at,
            handshake,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if !matches!(self.state, State::Secure | State::Failed) && now >= self.handshake_deadline {
            self.time_out(now);
            return;
        }
        if self.commit_at.is_some_and(|at| now >= at) {
            self.commit_at = None;
            if self.state == State::Discovery {
                self.send_commit(now);
            }
        }
        let Some(reliable) = self.reliable.as_mut() else {
            return;
        };
        if now < reliable.timer.deadline() {
            return;
        }
        match reliable.timer.fire(now) {
            Fired::Resend => {
                let message = reliable.message.clone();
                self.queue(message);
            }
            Fired::GiveUp => {
                self.reliable = None;
                // An Error that was never acknowledged needs nothing more: the session
                // has already failed.
                if self.state != State::Failed {
                    self.time_out(now);
                }
            }
        }
    }

    /// Handles one ZRTP packet (one that [`super::is_zrtp`] accepted). `Err` says why it
    /// was dropped without effect; errors of the exchange itself are reported as
    /// [`ZrtpEvent::Failed`].
    pub fn handle_packet(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Discarded> {
        let now = self.advance(now);
        let packet = packet::parse_packet(bytes)?;
        let raw = packet.raw_message;
        if self.state == State::Failed {
            return match packet.message {
                Message::ErrorAck => {
                    self.reliable = None;
                    Ok(())
                }
                Message::Error { .. } => {
                    self.queue(Message::ErrorAck.encode());
                    Ok(())
                }
                _ => Err(Discarded::Finished),
            };
        }
        match packet.message {
            Message::Hello(hello) => self.on_hello(hello, raw, now),
            Message::HelloAck => self.on_hello_ack(now),
            Message::Commit(commit) => self.on_commit(commit, raw, now),
            Message::DhPart1(part) => self.on_dhpart1(part, raw, now),
            Message::DhPart2(part) => self.on_dhpart2(part, raw, now),
            Message::Confirm1(confirm) => self.on_confirm1(&confirm, now),
            Message::Confirm2(confirm) => self.on_confirm2(&confirm, raw, now),
            Message::Conf2Ack => self.on_conf2ack(now),
            Message::Error { code } => {
                self.queue(Message::ErrorAck.encode());
                if self.state == State::Secure {
                    // Keys are agreed and confirmed; an unauthenticated Error cannot
                    // take that back.
                    return Err(Discarded::Unexpected(MessageType::Error));
                }
                self.reliable = None;
                self.enter_failed(
                    Failure {
                        code: ErrorCode::from_code(code),
                        from_peer: true,
                    },
                    now,
                );
                Ok(())
            }
            Message::ErrorAck => Err(Discarded::Unexpected(MessageType::ErrorAck)),
            Message::GoClear { .. } => {
                if self.state != State::Secure {
                    return Err(Discarded::Unexpected(MessageType::GoClear));
                }
                // We never go clear (our Confirm has A = 0): RFC 6189 §5.9's answer is
                // Error 0x100, and we stay secure. Not retransmitted: the peer
                // retransmits its GoClear, and each one gets this answer.
                self.queue(
                    Message::Error {
                        code: ErrorCode::GoClearNotAllowed.code(),
                    }
                    .encode(),
                );
                Ok(())
            }
            Message::Ping(ping) => {
                self.queue(
                    Message::PingAck(PingAck {
                        version: VERSION,
                        sender_endpoint_hash: self.endpoint_hash(),
                        received_endpoint_hash: ping.endpoint_hash,
                        ssrc: packet.ssrc,
                    })
                    .encode(),
                );
                Ok(())
            }
            Message::ClearAck
            | Message::SasRelay { .. }
            | Message::RelayAck
            | Message::PingAck(_) => Err(Discarded::Ignored(packet.message.message_type())),
        }
    }

    // --- Discovery ------------------------------------------------------------------

    fn on_hello(&mut self, hello: Hello, raw: &[u8], now: Instant) -> Result<(), Discarded> {
        if let Some(known) = &self.peer_hello {
            // A retransmission: our HelloACK was lost. A different Hello is ignored.
            if known.raw == raw {
                self.queue(Message::HelloAck.encode());
                return Ok(());
            }
            return Err(Discarded::Unexpected(MessageType::Hello));
        }
        if self.state != State::Discovery {
            return Err(Discarded::Unexpected(MessageType::Hello));
        }
        // Same major version family (1.1x) or nothing in common (RFC 6189 §4.1.1).
        if hello.version[..3] != VERSION[..3] {
            self.fail(ErrorCode::UnsupportedVersion, now);
            return Ok(());
        }
        if hello.zid == self.zid {
            self.fail(ErrorCode::EqualZids, now);
            return Ok(());
        }
        if let Some(expected) = self.peer_hello_hash {
            if !kdf::ct_eq(&kdf::sha256(&[raw]), &expected) {
                self.fail(ErrorCode::HelloComponentsMismatch, now);
                return Ok(());
            }
        }
        self.cached = self.cache.lookup(&hello.zid, now);
        let client_id = String::from_utf8_lossy(&hello.client_id)
            .trim_end()
            .to_string();
        self.push_event(ZrtpEvent::PeerHello {
            zid: hello.zid,
            client_id: Redacted(client_id),
            passive: hello.passive,
            mitm: hello.mitm,
        });
        self.peer_hello = Some(Received {
            message: hello,
            raw: raw.to_vec(),
        });
        self.queue(Message::HelloAck.encode());
        self.maybe_commit(now);
        Ok(())
    }

    fn on_hello_ack(&mut self, now: Instant) -> Result<(), Discarded> {
        if self.state != State::Discovery || self.hello_acked {
            return Err(Discarded::Unexpected(MessageType::HelloAck));
        }
        self.hello_acked = true;
        self.reliable = None;
        self.maybe_commit(now);
        Ok(())
    }

    /// Once both Hellos are acknowledged, commit now or after the responder's grace.
    fn maybe_commit(&mut self, now: Instant) {
        let Some(peer) = &self.peer_hello else {
            return;
        };
        if self.state != State::Discovery || !self.hello_acked {
            return;
        }
        // A passive peer never commits (RFC 6189 §5.2), so we do not wait for it.
        if self.hint == RoleHint::Initiator || peer.message.passive {
            self.send_commit(now);
        } else if self.commit_at.is_none() {
            self.commit_at = Some(now + self.config.responder_commit_delay);
        }
    }

    /// Picks the algorithms for our Commit from the peer's Hello (RFC 6189 §4.1.2).
    /// Mandatory algorithms count as offered even when the peer's list omits them.
    fn negotiate(&self, peer: &Hello) -> Result<Negotiated, ErrorCode> {
        fn offered<T: Copy + PartialEq>(
            list: &[AlgorithmId],
            from: impl Fn(AlgorithmId) -> Option<T>,
            mandatory: &[T],
        ) -> Vec<T> {
            let mut out: Vec<T> = list.iter().filter_map(|&id| from(id)).collect();
            for &m in mandatory {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
            out
        }
        fn first_common<T: Copy + PartialEq>(ours: &[T], theirs: &[T]) -> Option<T> {
            ours.iter().copied().find(|x| theirs.contains(x))
        }
        let hashes = offered(&peer.hashes, HashType::from_id, &[HashType::S256]);
        if !hashes.contains(&HashType::S256) {
            return Err(ErrorCode::UnsupportedHash);
        }
        let ciphers = offered(&peer.ciphers, Cipher::from_id, &[Cipher::Aes1]);
        let tags = offered(
            &peer.auth_tags,
            AuthTag::from_id,
            &[AuthTag::Hs32, AuthTag::Hs80],
        );
        let agreements = offered(
            &peer.key_agreements,
            KeyAgreement::from_id,
            &[KeyAgreement::Dh3k],
        );
        let sas = offered(&peer.sas_types, SasType::from_id, &[SasType::B32]);
        let cipher =
            first_common(&self.config.ciphers, &ciphers).ok_or(ErrorCode::UnsupportedCipher)?;
        let auth_tag =
            first_common(&self.config.auth_tags, &tags).ok_or(ErrorCode::UnsupportedAuthTag)?;
        let sas_type =
            first_common(&self.config.sas_types, &sas).ok_or(ErrorCode::UnsupportedSas)?;
        // Key agreement: each side's first choice among the common ones; the faster of
        // the two wins, so both ends pick the same before either commits (§4.1.2).
        let ours = first_common(&self.config.key_agreements, &agreements);
        let theirs = first_common(&agreements, &self.config.key_agreements);
        let key_agreement = match (ours, theirs) {
            (Some(a), Some(b)) => {
                if b.speed_rank() < a.speed_rank() {
                    b
                } else {
                    a
                }
            }
            _ => return Err(ErrorCode::UnsupportedKeyAgreement),
        };
        Ok(Negotiated {
            cipher,
            auth_tag,
            key_agreement,
            sas_type,
        })
    }

    /// The shared-secret IDs we send (RFC 6189 §4.3.1): MACs of rs1 and rs2 with our
    /// role's label, or random values for secrets we do not have. Aux and PBX secrets
    /// are never held, so their IDs are always random.
    fn shared_secret_ids(&mut self, initiator: bool) -> [[u8; 8]; 4] {
        let mut ids = [[0u8; 8]; 4];
        for id in ids.iter_mut() {
            self.rng.fill_bytes(id);
        }
        if let Some(rs1) = &self.cached.rs1 {
            ids[0] = kdf::retained_secret_id(rs1.as_ref(), initiator);
        }
        if let Some(rs2) = &self.cached.rs2 {
            ids[1] = kdf::retained_secret_id(rs2.as_ref(), initiator);
        }
        ids
    }

    /// Builds and seals one of our DHPart messages.
    fn build_dhpart(&mut self, initiator: bool, public_value: Vec<u8>) -> Vec<u8> {
        let [rs1_id, rs2_id, aux_secret_id, pbx_secret_id] = self.shared_secret_ids(initiator);
        let part = DhPart {
            h1: *self.chain.h1(),
            rs1_id,
            rs2_id,
            aux_secret_id,
            pbx_secret_id,
            public_value,
            mac: [0; MAC_LEN],
        };
        let mut raw = if initiator {
            Message::DhPart2(part)
        } else {
            Message::DhPart1(part)
        }
        .encode();
        kdf::seal_message_mac(&mut raw, self.chain.h0());
        raw
    }

    fn send_commit(&mut self, now: Instant) {
        let Some(peer) = self.peer_hello.as_ref() else {
            return;
        };
        let negotiated = match self.negotiate(&peer.message) {
            Ok(n) => n,
            Err(code) => {
                self.fail(code, now);
                return;
            }
        };
        let peer_raw = peer.raw.clone();
        let key_pair = KeyPair::generate(negotiated.key_agreement, &mut self.rng);
        let dhpart2 = self.build_dhpart(true, key_pair.public_value().to_vec());
        let hvi = kdf::hvi(&dhpart2, &peer_raw);
        let mut commit = Message::Commit(Commit {
            h2: *self.chain.h2(),
            zid: self.zid,
            hash: HashType::S256.id(),
            cipher: negotiated.cipher.id(),
            auth_tag: negotiated.auth_tag.id(),
            key_agreement: negotiated.key_agreement.id(),
            sas_type: negotiated.sas_type.id(),
            mode: CommitMode::Dh { hvi },
            mac: [0; MAC_LEN],
        })
        .encode();
        kdf::seal_message_mac(&mut commit, self.chain.h1());
        self.negotiated = Some(negotiated);
        self.key_pair = Some(key_pair);
        self.our_dhpart = Some(dhpart2);
        self.our_commit = Some(commit.clone());
        self.our_hvi = Some(hvi);
        self.role = Some(Role::Initiator);
        self.state = State::CommitSent;
        self.commit_at = None;
        self.send_reliably(commit, Schedule::Other, now);
    }

    // --- Key agreement --------------------------------------------------------------

    fn on_commit(&mut self, commit: Commit, raw: &[u8], now: Instant) -> Result<(), Discarded> {
        let unexpected = Err(Discarded::Unexpected(MessageType::Commit));
        if let Some(known) = &self.peer_commit {
            // A retransmission: our DHPart1 was lost.
            if known.raw == raw && self.state == State::DhPart1Sent {
                if let Some(dhpart1) = self.our_dhpart.clone() {
                    self.queue(dhpart1);
                }
                return Ok(());
            }
            return unexpected;
        }
        if !matches!(self.state, State::Discovery | State::CommitSent) {
            return unexpected;
        }
        // Without the peer's Hello we cannot check anything; it will retransmit.
        let Some(peer_hello) = &self.peer_hello else {
            return unexpected;
        };
        // H2 must hash to the Hello's H3: only the peer knows H2 before this Commit.
        if !kdf::is_preimage(&commit.h2, &peer_hello.message.h3)
            || commit.zid != peer_hello.message.zid
        {
            return Err(Discarded::Forged(MessageType::Commit));
        }
        // H2 is the key of the Hello's MAC: the Hello can be checked now.
        if !kdf::message_mac_is_valid(&peer_hello.raw, &commit.h2) {
            self.fail(ErrorCode::HelloComponentsMismatch, now);
            return Ok(());
        }
        let hvi = match commit.mode {
            CommitMode::Dh { hvi } => hvi,
            CommitMode::Multistream { .. } => {
                self.fail(ErrorCode::UnsupportedKeyAgreement, now);
                return Ok(());
            }
            CommitMode::Preshared { .. } => {
                self.fail(ErrorCode::NoSharedSecret, now);
                return Ok(());
            }
        };
        let negotiated = match self.accept_algorithms(&commit) {
            Ok(n) => n,
            Err(code) => {
                self.fail(code, now);
                return Ok(());
            }
        };
        if self.state == State::CommitSent {
            // Commit contention (RFC 6189 §4.2): the higher hvi, compared as a
            // big-endian unsigned number, stays initiator.
            if self.our_hvi.is_some_and(|ours| ours >= hvi) {
                return Err(Discarded::Unexpected(MessageType::Commit));
            }
            // We lost: forget our Commit and DHPart2; the key pair is kept if the
            // algorithm is the same (its public value was never used in a DHPart1).
            self.reliable = None;
            self.our_commit = None;
            self.our_hvi = None;
            self.our_dhpart = None;
            if self
                .key_pair
                .as_ref()
                .is_some_and(|k| k.algorithm() != negotiated.key_agreement)
            {
                self.key_pair = None;
            }
        }
        // We are the responder. Key generation only; the DH result waits for DHPart2.
        let key_pair = match self.key_pair.take() {
            Some(k) => k,
            None => KeyPair::generate(negotiated.key_agreement, &mut self.rng),
        };
        let dhpart1 = self.build_dhpart(false, key_pair.public_value().to_vec());
        self.key_pair = Some(key_pair);
        self.negotiated = Some(negotiated);
        self.peer_commit = Some(Received {
            message: commit,
            raw: raw.to_vec(),
        });
        self.our_dhpart = Some(dhpart1.clone());
        self.role = Some(Role::Responder);
        self.state = State::DhPart1Sent;
        // The Commit acknowledges our Hello.
        self.hello_acked = true;
        self.commit_at = None;
        if self
            .reliable
            .as_ref()
            .is_some_and(|r| r.message == self.our_hello)
        {
            self.reliable = None;
        }
        self.queue(dhpart1);
        Ok(())
    }

    /// The algorithms of a peer's Commit, if we offered them all.
    fn accept_algorithms(&self, commit: &Commit) -> Result<Negotiated, ErrorCode> {
        if HashType::from_id(commit.hash) != Some(HashType::S256) {
            return Err(ErrorCode::UnsupportedHash);
        }
        let cipher = Cipher::from_id(commit.cipher)
            .filter(|c| self.config.ciphers.contains(c))
            .ok_or(ErrorCode::UnsupportedCipher)?;
        let auth_tag = AuthTag::from_id(commit.auth_tag)
            .filter(|t| self.config.auth_tags.contains(t))
            .ok_or(ErrorCode::UnsupportedAuthTag)?;
        let key_agreement = KeyAgreement::from_id(commit.key_agreement)
            .filter(|k| self.config.key_agreements.contains(k))
            .ok_or(ErrorCode::UnsupportedKeyAgreement)?;
        let sas_type = SasType::from_id(commit.sas_type)
            .filter(|s| self.config.sas_types.contains(s))
            .ok_or(ErrorCode::UnsupportedSas)?;
        Ok(Negotiated {
            cipher,
            auth_tag,
            key_agreement,
            sas_type,
        })
    }

    fn on_dhpart1(&mut self, part: DhPart, raw: &[u8], now: Instant) -> Result<(), Discarded> {
        if self.state != State::CommitSent {
            return Err(Discarded::Unexpected(MessageType::DhPart1));
        }
        let (Some(peer_hello), Some(negotiated)) = (&self.peer_hello, self.negotiated) else {
            return Err(Discarded::Unexpected(MessageType::DhPart1));
        };
        // H1 → H2 → H3 of the responder's Hello.
        let h2 = kdf::sha256(&[&part.h1]);
        if !kdf::is_preimage(&h2, &peer_hello.message.h3) {
            return Err(Discarded::Forged(MessageType::DhPart1));
        }
        let peer_hello_raw = peer_hello.raw.clone();
        let peer_zid = peer_hello.message.zid;
        // H2 now known: the responder's Hello MAC is checked retroactively.
        if !kdf::message_mac_is_valid(&peer_hello_raw, &h2) {
            self.fail(ErrorCode::HelloComponentsMismatch, now);
            return Ok(());
        }
        if check_public_value(negotiated.key_agreement, &part.public_value).is_err() {
            self.fail(ErrorCode::BadPublicValue, now);
            return Ok(());
        }
        let (Some(key_pair), Some(commit), Some(dhpart2)) = (
            self.key_pair.take(),
            self.our_commit.clone(),
            self.our_dhpart.clone(),
        ) else {
            self.fail(ErrorCode::CriticalSoftwareError, now);
            return Ok(());
        };
        self.dh_agreements += 1;
        let Ok(dh_result) = key_pair.agree(&part.public_value) else {
            self.fail(ErrorCode::BadPublicValue, now);
            return Ok(());
        };
        let total_hash = kdf::total_hash(&peer_hello_raw, &commit, raw, &dhpart2);
        // Initiator side of §4.3.1: our IDs computed as the responder would, against
        // the responder's rs1IDr and rs2IDr.
        self.secret_match = self.match_secrets(false, &part);
        self.derive_keys(&dh_result, self.zid, peer_zid, &total_hash, negotiated);
        self.peer_dhpart = Some(Received {
            message: part,
            raw: raw.to_vec(),
        });
        self.state = State::DhPart2Sent;
        self.send_reliably(dhpart2, Schedule::Other, now);
        Ok(())
    }

    fn on_dhpart2(&mut self, part: DhPart, raw: &[u8], now: Instant) -> Result<(), Discarded> {
        if let Some(known) = &self.peer_dhpart {
            // A retransmission: our Confirm1 was lost.
            if known.raw == raw && self.state == State::Confirm1Sent {
                if let Some(confirm1) = self.our_confirm.clone() {
                    self.queue(confirm1);
                }
                return Ok(());
            }
            return Err(Discarded::Unexpected(MessageType::DhPart2));
        }
        if self.state != State::DhPart1Sent {
            return Err(Discarded::Unexpected(MessageType::DhPart2));
        }
        let (Some(commit), Some(negotiated)) = (&self.peer_commit, self.negotiated) else {
            return Err(Discarded::Unexpected(MessageType::DhPart2));
        };
        // H1 must hash to the Commit's H2, or this is not from the committer.
        if !kdf::is_preimage(&part.h1, &commit.message.h2) {
            return Err(Discarded::Forged(MessageType::DhPart2));
        }
        let CommitMode::Dh { hvi } = commit.message.mode else {
            return Err(Discarded::Unexpected(MessageType::DhPart2));
        };
        let commit_raw = commit.raw.clone();
        let peer_zid = commit.message.zid;
        // The committed hash: DHPart2 and our Hello must be what the initiator
        // committed to before it saw our public value (§4.4.1.1). No DH work before.
        if !kdf::ct_eq(&kdf::hvi(raw, &self.our_hello), &hvi) {
            self.fail(ErrorCode::HviMismatch, now);
            return Ok(());
        }
        // H1 is the key of the Commit's MAC.
        if !kdf::message_mac_is_valid(&commit_raw, &part.h1) {
            self.fail(ErrorCode::BadConfirmMac, now);
            return Ok(());
        }
        if check_public_value(negotiated.key_agreement, &part.public_value).is_err() {
            self.fail(ErrorCode::BadPublicValue, now);
            return Ok(());
        }
        let (Some(key_pair), Some(dhpart1)) = (self.key_pair.take(), self.our_dhpart.clone())
        else {
            self.fail(ErrorCode::CriticalSoftwareError, now);
            return Ok(());
        };
        self.dh_agreements += 1;
        let Ok(dh_result) = key_pair.agree(&part.public_value) else {
            self.fail(ErrorCode::BadPublicValue, now);
            return Ok(());
        };
        let total_hash = kdf::total_hash(&self.our_hello, &commit_raw, &dhpart1, raw);
        self.secret_match = self.match_secrets(true, &part);
        self.derive_keys(&dh_result, peer_zid, self.zid, &total_hash, negotiated);
        self.peer_dhpart = Some(Received {
            message: part,
            raw: raw.to_vec(),
        });
        let Some(confirm1) = self.build_confirm(Role::Responder) else {
            self.fail(ErrorCode::CriticalSoftwareError, now);
            return Ok(());
        };
        self.our_confirm = Some(confirm1.clone());
        self.state = State::Confirm1Sent;
        self.queue(confirm1);
        Ok(())
    }

    /// Which of our retained secrets matches the peer's IDs (RFC 6189 §4.3.1).
    /// `peer_is_initiator` says which label the peer's IDs were made with. Both sides
    /// try the pairs in the same order: initiator's rs1 against the responder's rs1
    /// and rs2, then the initiator's rs2 likewise.
    fn match_secrets(&self, peer_is_initiator: bool, part: &DhPart) -> Option<SecretMatch> {
        let id = |s: &Option<Secret>| {
            s.as_ref()
                .map(|s| kdf::retained_secret_id(s.as_ref(), peer_is_initiator))
        };
        let ours = [
            (id(&self.cached.rs1), SecretMatch::Rs1),
            (id(&self.cached.rs2), SecretMatch::Rs2),
        ];
        let matches = |theirs: &[u8; 8], mine: &Option<[u8; 8]>| {
            mine.as_ref().is_some_and(|m| kdf::ct_eq(m, theirs))
        };
        if peer_is_initiator {
            // We are the responder: the initiator's rs1ID first, against ours in order.
            for theirs in [&part.rs1_id, &part.rs2_id] {
                if let Some((_, which)) = ours.iter().find(|(mine, _)| matches(theirs, mine)) {
                    return Some(*which);
                }
            }
            None
        } else {
            // We are the initiator: our rs1 first, against the responder's rs1 and rs2.
            ours.iter()
                .find(|(mine, _)| matches(&part.rs1_id, mine) || matches(&part.rs2_id, mine))
                .map(|(_, which)| *which)
        }
    }

    fn derive_keys(
        &mut self,
        dh_result: &[u8],
        zid_i: Zid,
        zid_r: Zid,
        total_hash: &[u8; HASH_LEN],
        negotiated: Negotiated,
    ) {
        let s1: Option<&[u8]> = match self.secret_match {
            Some(SecretMatch::Rs1) => self.cached.rs1.as_ref().map(|s| s.as_slice()),
            Some(SecretMatch::Rs2) => self.cached.rs2.as_ref().map(|s| s.as_slice()),
            None => None,
        };
        let s0 = kdf::s0(dh_result, &zid_i, &zid_r, total_hash, [s1, None, None]);
        let context = kdf::kdf_context(&zid_i, &zid_r, total_hash);
        self.keys = Some(DerivedKeys::derive(
            s0.as_slice(),
            &context,
            negotiated.cipher,
        ));
    }

    // --- Confirmation ---------------------------------------------------------------

    /// Builds our Confirm1 (responder) or Confirm2 (initiator): H0 and flags encrypted
    /// with our zrtpkey under a fresh IV, MACed with our mackey.
    fn build_confirm(&mut self, role: Role) -> Option<Vec<u8>> {
        let verified = self.cached.verified && self.secret_match.is_some();
        let body = ConfirmBody {
            h0: *self.chain.h0(),
            pbx_enrollment: false,
            sas_verified: verified,
            allow_clear: false,
            disclosure: false,
            cache_expiry: self.config.cache_expiry,
            signature: Vec::new(),
        };
        let mut iv = [0u8; CFB_IV_LEN];
        self.rng.fill_bytes(&mut iv);
        let keys = self.keys.as_ref()?;
        let (zrtp_key, mac_key) = match role {
            Role::Initiator => (&keys.zrtp_key_initiator, &keys.mac_key_initiator),
            Role::Responder => (&keys.zrtp_key_responder, &keys.mac_key_responder),
        };
        let mut encrypted = Zeroizing::new(body.encode());
        if !kdf::confirm_cipher(zrtp_key, &iv, &mut encrypted, true) {
            return None;
        }
        let confirm = Confirm {
            confirm_mac: kdf::truncated_mac(mac_key, &encrypted),
            iv,
            encrypted: encrypted.to_vec(),
        };
        Some(
            match role {
                Role::Initiator => Message::Confirm2(confirm),
                Role::Responder => Message::Confirm1(confirm),
            }
            .encode(),
        )
    }

    /// Checks the peer's Confirm: its MAC (else it is dropped as forged), then H0
    /// against the peer's DHPart H1 and the DHPart MAC under H0 (else the session
    /// fails). Returns the body if all holds.
    fn open_confirm(
        &mut self,
        confirm: &Confirm,
        peer_role: Role,
        kind: MessageType,
        now: Instant,
    ) -> Result<Option<ConfirmBody>, Discarded> {
        let (Some(keys), Some(dhpart)) = (&self.keys, &self.peer_dhpart) else {
            return Err(Discarded::Unexpected(kind));
        };
        let (zrtp_key, mac_key) = match peer_role {
            Role::Initiator => (&keys.zrtp_key_initiator, &keys.mac_key_initiator),
            Role::Responder => (&keys.zrtp_key_responder, &keys.mac_key_responder),
        };
        let mac = kdf::truncated_mac(mac_key, &confirm.encrypted);
        if !kdf::ct_eq(&mac, &confirm.confirm_mac) {
            return Err(Discarded::Forged(kind));
        }
        let mut plain = Zeroizing::new(confirm.encrypted.clone());
        if !kdf::confirm_cipher(zrtp_key, &confirm.iv, &mut plain, false) {
            self.fail(ErrorCode::CriticalSoftwareError, now);
            return Ok(None);
        }
        let Ok(body) = ConfirmBody::decode(&plain) else {
            self.fail(ErrorCode::MalformedPacket, now);
            return Ok(None);
        };
        if !kdf::is_preimage(&body.h0, &dhpart.message.h1)
            || !kdf::message_mac_is_valid(&dhpart.raw, &body.h0)
        {
            self.fail(ErrorCode::BadConfirmMac, now);
            return Ok(None);
        }
        Ok(Some(body))
    }

    fn on_confirm1(&mut self, confirm: &Confirm, now: Instant) -> Result<(), Discarded> {
        if self.state != State::DhPart2Sent {
            return Err(Discarded::Unexpected(MessageType::Confirm1));
        }
        let Some(body) = self.open_confirm(confirm, Role::Responder, MessageType::Confirm1, now)?
        else {
            return Ok(());
        };
        self.peer_confirm = Some(body);
        let Some(confirm2) = self.build_confirm(Role::Initiator) else {
            self.fail(ErrorCode::CriticalSoftwareError, now);
            return Ok(());
        };
        self.our_confirm = Some(confirm2.clone());
        self.state = State::Confirm2Sent;
        self.send_reliably(confirm2, Schedule::Other, now);
        Ok(())
    }

    fn on_confirm2(
        &mut self,
        confirm: &Confirm,
        raw: &[u8],
        now: Instant,
    ) -> Result<(), Discarded> {
        if self.state == State::Secure && self.peer_confirm2.as_deref() == Some(raw) {
            // A retransmission: our Conf2ACK was lost.
            self.queue(Message::Conf2Ack.encode());
            return Ok(());
        }
        if self.state != State::Confirm1Sent {
            return Err(Discarded::Unexpected(MessageType::Confirm2));
        }
        let Some(body) = self.open_confirm(confirm, Role::Initiator, MessageType::Confirm2, now)?
        else {
            return Ok(());
        };
        self.peer_confirm = Some(body);
        self.peer_confirm2 = Some(raw.to_vec());
        self.queue(Message::Conf2Ack.encode());
        self.enter_secure(now);
        Ok(())
    }

    fn on_conf2ack(&mut self, now: Instant) -> Result<(), Discarded> {
        if self.state != State::Confirm2Sent {
            return Err(Discarded::Unexpected(MessageType::Conf2Ack));
        }
        self.reliable = None;
        self.enter_secure(now);
        Ok(())
    }

    fn enter_secure(&mut self, now: Instant) {
        let (Some(keys), Some(negotiated), Some(role), Some(peer)) = (
            self.keys.take(),
            self.negotiated,
            self.role,
            self.peer_hello.as_ref().map(|h| h.message.zid),
        ) else {
            self.fail(ErrorCode::CriticalSoftwareError, now);
            return;
        };
        let peer_flags = self
            .peer_confirm
            .as_ref()
            .map(|c| (c.sas_verified, c.cache_expiry));
        let (peer_verified, peer_expiry) = peer_flags.unwrap_or((false, 0));
        let matched = self.secret_match.is_some();
        let cache_mismatch = !self.cached.is_empty() && !matched;
        let sas_verified_previously = matched && self.cached.verified && peer_verified;
        let (local_key, local_salt, remote_key, remote_salt) = match role {
            Role::Initiator => (
                &keys.srtp_key_initiator,
                &keys.srtp_salt_initiator,
                &keys.srtp_key_responder,
                &keys.srtp_salt_responder,
            ),
            Role::Responder => (
                &keys.srtp_key_responder,
                &keys.srtp_salt_responder,
                &keys.srtp_key_initiator,
                &keys.srtp_salt_initiator,
            ),
        };
        let info = SecureInfo {
            role,
            peer_zid: peer,
            cipher: negotiated.cipher,
            auth_tag: negotiated.auth_tag,
            key_agreement: negotiated.key_agreement,
            sas: Sas::new(negotiated.sas_type, keys.sas_value()),
            sas_verified_previously,
            cache_mismatch,
            keys: SrtpKeys {
                local_key: local_key.clone(),
                local_salt: local_salt.clone(),
                remote_key: remote_key.clone(),
                remote_salt: remote_salt.clone(),
            },
        };
        // Retained secrets (§4.6.1): kept for the shorter of the two ends' expiration
        // intervals; after a cache mismatch only once the SAS is verified (§4.6.1.1).
        let expiry = self.config.cache_expiry.min(peer_expiry);
        self.cache_lifetime = match expiry {
            u32::MAX => None,
            seconds => Some(Duration::from_secs(u64::from(seconds))),
        };
        let mut new_rs1: Secret = Zeroizing::new([0u8; RETAINED_SECRET_LEN]);
        new_rs1.copy_from_slice(&keys.new_rs1[..RETAINED_SECRET_LEN.min(keys.new_rs1.len())]);
        if cache_mismatch {
            self.cache.set_verified(&peer, false);
            self.pending_rs1 = Some(new_rs1);
        } else {
            let verified = matched && self.cached.verified;
            self.cache
                .store(&peer, new_rs1, verified, self.cache_lifetime, now);
        }
        self.state = State::Secure;
        self.key_pair = None;
        self.commit_at = None;
        self.push_event(ZrtpEvent::Secure(info));
        // `keys` is dropped (and zeroized) here; nothing after Secure needs it.
    }

    // --- Failure, timers and output -------------------------------------------------

    /// We detected a problem: report it, tell the peer with an Error (retransmitted
    /// until ErrorACK), and drop every secret.
    fn fail(&mut self, code: ErrorCode, now: Instant) {
        self.enter_failed(
            Failure {
                code,
                from_peer: false,
            },
            now,
        );
        self.send_reliably(
            Message::Error { code: code.code() }.encode(),
            Schedule::Other,
            now,
        );
    }

    fn time_out(&mut self, now: Instant) {
        self.enter_failed(
            Failure {
                code: ErrorCode::ProtocolTimeout,
                from_peer: false,
            },
            now,
        );
        // Once, as a courtesy: the peer has stopped answering.
        self.queue(
            Message::Error {
                code: ErrorCode::ProtocolTimeout.code(),
            }
            .encode(),
        );
    }

    fn enter_failed(&mut self, failure: Failure, _now: Instant) {
        self.state = State::Failed;
        self.reliable = None;
        self.commit_at = None;
        self.key_pair = None;
        self.keys = None;
        self.pending_rs1 = None;
        self.push_event(ZrtpEvent::Failed(failure));
    }

    fn send_reliably(&mut self, message: Vec<u8>, schedule: Schedule, now: Instant) {
        self.queue(message.clone());
        self.reliable = Some(Reliable {
            timer: Retransmit::start(schedule, now),
            message,
        });
    }

    fn queue(&mut self, message: Vec<u8>) {
        if self.outbox.len() < MAX_OUTBOX {
            self.outbox.push_back(message);
        }
    }

    fn push_event(&mut self, event: ZrtpEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(event);
        }
    }

    /// Our endpoint hash for PingACK (RFC 6189 §5.16): any stable 64-bit value that
    /// names this endpoint; we use the first 64 bits of SHA-256 of our ZID.
    fn endpoint_hash(&self) -> [u8; 8] {
        let hash = kdf::sha256(&[&self.zid.0]);
        let mut out = [0u8; 8];
        out.copy_from_slice(&hash[..8]);
        out
    }

    /// `now`, or the latest time seen if `now` went backwards.
    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
