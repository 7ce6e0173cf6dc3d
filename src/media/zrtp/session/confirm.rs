//! Confirmation (RFC 6189 §4.6): Confirm1, Confirm2 and Conf2ACK, the SAS and the
//! SRTP keys, and the update of the retained secrets.

use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::super::cache::Secret;
use super::super::kdf::{self, CFB_IV_LEN, RETAINED_SECRET_LEN};
use super::super::packet::{Confirm, ConfirmBody, Message, MessageType};
use super::super::sas::Sas;
use super::super::timer::Schedule;
use super::{Discarded, ErrorCode, Role, SecureInfo, Session, SrtpKeys, State, ZrtpEvent};

impl<R: RngCore + CryptoRng> Session<R> {
    /// Builds our Confirm1 (responder) or Confirm2 (initiator): H0 and flags encrypted
    /// with our zrtpkey under a fresh IV, MACed with our mackey.
    pub(super) fn build_confirm(&mut self, role: Role) -> Option<Vec<u8>> {
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
    pub(super) fn open_confirm(
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

    pub(super) fn on_confirm1(&mut self, confirm: &Confirm, now: Instant) -> Result<(), Discarded> {
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

    pub(super) fn on_confirm2(
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

    pub(super) fn on_conf2ack(&mut self, now: Instant) -> Result<(), Discarded> {
        if self.state != State::Confirm2Sent {
            return Err(Discarded::Unexpected(MessageType::Conf2Ack));
        }
        self.reliable = None;
        self.enter_secure(now);
        Ok(())
    }

    pub(super) fn enter_secure(&mut self, now: Instant) {
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
        if let Some(derived) = keys.new_rs1.get(..RETAINED_SECRET_LEN) {
            new_rs1.copy_from_slice(derived);
        }
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
}
