//! Discovery (RFC 6189 §4.1): Hello and HelloACK, algorithm negotiation, and the
//! initiator's Commit with the DHPart2 it commits to.

use std::time::Instant;

use rand::{CryptoRng, RngCore};

use super::super::algorithm::{AlgorithmId, AuthTag, Cipher, HashType, KeyAgreement, SasType};
use super::super::dh::KeyPair;
use super::super::kdf;
use super::super::packet::{
    Commit, CommitMode, DhPart, Hello, Message, MessageType, MAC_LEN, VERSION,
};
use super::super::timer::Schedule;
use super::{
    Discarded, ErrorCode, Negotiated, Received, Role, RoleHint, Session, State, ZrtpEvent,
};
use crate::redact::Redacted;

impl<R: RngCore + CryptoRng> Session<R> {
    pub(super) fn on_hello(
        &mut self,
        hello: Hello,
        raw: &[u8],
        now: Instant,
    ) -> Result<(), Discarded> {
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

    pub(super) fn on_hello_ack(&mut self, now: Instant) -> Result<(), Discarded> {
        if self.state != State::Discovery || self.hello_acked {
            return Err(Discarded::Unexpected(MessageType::HelloAck));
        }
        self.hello_acked = true;
        self.reliable = None;
        self.maybe_commit(now);
        Ok(())
    }

    /// Once both Hellos are acknowledged, commit now or after the responder's grace.
    pub(super) fn maybe_commit(&mut self, now: Instant) {
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
    pub(super) fn negotiate(&self, peer: &Hello) -> Result<Negotiated, ErrorCode> {
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
    pub(super) fn shared_secret_ids(&mut self, initiator: bool) -> [[u8; 8]; 4] {
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
    pub(super) fn build_dhpart(&mut self, initiator: bool, public_value: Vec<u8>) -> Vec<u8> {
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

    pub(super) fn send_commit(&mut self, now: Instant) {
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
}
