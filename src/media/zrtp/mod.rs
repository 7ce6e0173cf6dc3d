//! ZRTP (RFC 6189): media-path key agreement for SRTP, sans-IO.
//!
//! A [`Session`] runs one ZRTP exchange on one media stream: it takes the ZRTP
//! packets that arrive on the RTP port (tell them apart with [`is_zrtp`]) and the
//! time, and returns packets to send, the next deadline, and events. When the
//! exchange completes it reports [`ZrtpEvent::Secure`] with the SRTP master keys of
//! both directions and the Short Authentication String that the two people (or the
//! bridge and its caller) compare to rule out a man in the middle.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sotto::media::zrtp::{Config, RetainedSecrets, RoleHint, Session, Zid, ZrtpEvent};
//! # use rand::SeedableRng;
//! # #[allow(clippy::disallowed_methods)]
//! let start = Instant::now(); // in tests only: the session itself never reads the clock
//! let cache = RetainedSecrets::new(16);
//! # let rng_a = rand::rngs::StdRng::seed_from_u64(1);
//! # let rng_b = rand::rngs::StdRng::seed_from_u64(2);
//! // In production the RNG is rand::rngs::OsRng.
//! let mut alice = Session::new(RoleHint::Initiator, Zid([1; 12]), 0x1111, Config::default(),
//!     cache.clone(), start, rng_a);
//! let mut bob = Session::new(RoleHint::Responder, Zid([2; 12]), 0x2222, Config::default(),
//!     cache.clone(), start, rng_b);
//! let mut now = start;
//! let mut secure = 0;
//! while secure < 2 && now < start + Duration::from_secs(5) {
//!     while let Some(p) = alice.poll_transmit() { let _ = bob.handle_packet(now, &p); }
//!     while let Some(p) = bob.poll_transmit() { let _ = alice.handle_packet(now, &p); }
//!     for s in [&mut alice, &mut bob] {
//!         while let Some(event) = s.poll_event() {
//!             if let ZrtpEvent::Secure(info) = event {
//!                 println!("SAS {}", info.sas.text());
//!                 secure += 1;
//!             }
//!         }
//!     }
//!     now += Duration::from_millis(10);
//!     alice.handle_timeout(now);
//!     bob.handle_timeout(now);
//! }
//! assert_eq!(secure, 2);
//! ```
//!
//! Files, by concept: [`packet`] (framing, CRC-32C, message codecs), [`algorithm`]
//! (the names on the wire), [`kdf`] (hashes, MACs, the KDF, key derivation, Confirm
//! encryption), [`dh`] (X25519 and DH3k), [`sas`] (B32 and B256 rendering),
//! [`cache`] (retained secrets, in RAM only), [`config`] and [`event`] (what goes in
//! and comes out), [`session`] (the state machine, with one file per phase:
//! discovery, key agreement, confirmation) and `timer` (the retransmission schedules
//! of §6). docs/zrtp.md describes what is and is
//! not implemented and which security invariants the tests pin down.

pub mod algorithm;
pub mod cache;
pub mod config;
pub mod dh;
pub mod event;
pub mod kdf;
pub mod packet;
mod pgp_words;
pub mod sas;
pub mod session;
mod timer;

#[cfg(test)]
mod captured;

use std::fmt;

pub use algorithm::{AuthTag, Cipher, HashType, KeyAgreement, SasType};
pub use cache::RetainedSecrets;
pub use packet::{is_zrtp, PacketError};
pub use sas::Sas;
pub use session::{
    Config, Discarded, ErrorCode, Failure, Role, RoleHint, SecureInfo, Session, SrtpKeys, ZrtpEvent,
};

/// A ZRTP identifier (RFC 6189 §4.9): 96 random bits naming an endpoint's retained
/// secrets. Ours is drawn at start-up and lives in RAM only. `Debug` does not print it:
/// a peer's ZID identifies a phone across calls.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Zid(pub [u8; 12]);

impl Zid {
    /// Draws a random ZID.
    pub fn random(rng: &mut (impl rand::RngCore + rand::CryptoRng)) -> Zid {
        let mut zid = [0u8; 12];
        rng.fill_bytes(&mut zid);
        Zid(zid)
    }
}

impl fmt::Debug for Zid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Zid(<redacted>)")
    }
}
