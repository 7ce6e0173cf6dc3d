//! What a ZRTP session is configured with: the algorithms we offer, the timeouts, and
//! which role we try for.

use std::time::Duration;

use super::algorithm::{AuthTag, Cipher, KeyAgreement, SasType};

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
    /// The peer's `a=zrtp-hash` value from its SDP, if it sent one (RFC 6189 §8.1),
    /// e.g. "1.10 3be3…0815". A value that does not parse is ignored here; validate it
    /// with [`Session::set_peer_hello_hash`](super::Session::set_peer_hello_hash),
    /// which reports why.
    pub peer_hello_hash: Option<String>,
    /// The cache expiration interval we put in Confirm (RFC 6189 §5.7), in seconds;
    /// `u32::MAX` means "keep until evicted".
    pub cache_expiry: u32,
    /// Longest time from start to Secure; then the session fails with a timeout
    /// (at most a day).
    pub handshake_timeout: Duration,
    /// With [`RoleHint::Responder`], how long to wait for the peer's Commit (at most a
    /// day).
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
