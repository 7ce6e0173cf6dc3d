//! Key agreement (RFC 6189 §4.2 to §4.4): the responder's side of the Commit, commit
//! contention, DHPart1 and DHPart2 with their hash-chain and hvi checks, the shared
//! secret match and s0.

use std::time::Instant;

use rand::{CryptoRng, RngCore};

use super::super::algorithm::{AuthTag, Cipher, HashType, KeyAgreement, SasType};
use super::super::cache::Secret;
use super::super::dh::{check_public_value, KeyPair};
use super::super::kdf::{self, DerivedKeys, HASH_LEN};
use super::super::packet::{Commit, CommitMode, DhPart, MessageType};
use super::super::timer::Schedule;
use super::super::Zid;
use super::{Discarded, ErrorCode, Negotiated, Received, Role, SecretMatch, Session, State};

impl<R: RngCore + CryptoRng> Session<R> {
    pub(super) fn on_commit(
        &mut self,
        commit: Commit,
        raw: &[u8],
        now: Instant,
    ) -> Result<(), Discarded> {
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
    pub(super) fn accept_algorithms(&self, commit: &Commit) -> Result<Negotiated, ErrorCode> {
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

    pub(super) fn on_dhpart1(
        &mut self,
        part: DhPart,
        raw: &[u8],
        now: Instant,
    ) -> Result<(), Discarded> {
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

    pub(super) fn on_dhpart2(
        &mut self,
        part: DhPart,
        raw: &[u8],
        now: Instant,
    ) -> Result<(), Discarded> {
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
    pub(super) fn match_secrets(
        &self,
        peer_is_initiator: bool,
        part: &DhPart,
    ) -> Option<SecretMatch> {
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

    pub(super) fn derive_keys(
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
}
