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

use super::algorithm::{AlgorithmId, AuthTag, Cipher, HashType, KeyAgreement, SasType};
use super::cache::{CachedSecrets, RetainedSecrets, Secret};
pub use super::config::{Config, Role, RoleHint};
use super::dh::KeyPair;
pub use super::event::{
    Discarded, ErrorCode, Failure, SecureInfo, SrtpKeys, ZrtpEvent, ZrtpHashError,
};
use super::kdf::{self, DerivedKeys, HashChain, HASH_LEN};
use super::packet::{
    self, Commit, ConfirmBody, DhPart, Hello, Message, MessageType, PingAck, MAC_LEN, VERSION,
};
use super::timer::{Fired, Retransmit, Schedule};
use super::Zid;

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

/// Longest `handshake_timeout` or `responder_commit_delay` honoured: a day is far
/// longer than any call setup, and short enough to add to any `Instant`.
const MAX_CONFIGURED_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

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
        // Bounded so that `now + duration` cannot overflow (an `Instant` panics then).
        config.handshake_timeout = config.handshake_timeout.min(MAX_CONFIGURED_WAIT);
        config.responder_commit_delay = config.responder_commit_delay.min(MAX_CONFIGURED_WAIT);
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

mod confirm;
mod discovery;
mod key_agreement;

#[cfg(test)]
mod tests;
