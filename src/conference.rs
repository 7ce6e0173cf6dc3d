//! A shard of the conference: the members and rooms one mixer thread owns, sans-IO.
//!
//! The shard's I/O thread feeds it received RTP ([`Conference::handle_rtp`]) and a tick
//! every 20 ms ([`Conference::handle_tick`]); after each tick it drains the packets to
//! send ([`Conference::drain_transmits`]) and the events for signalling
//! ([`Conference::poll_event`]). Members are kept in slots so that the I/O thread can
//! keep their sockets in a parallel table; a member (with its state) can be taken out
//! and adopted by another shard when the PIN puts it in a room that lives there.
//!
//! Per tick, in order: IVR timers; jitter buffers give one frame per member; each room
//! sums its members' frames once; each member gets a prompt frame, or the room's sum
//! minus its own frame, or (if it did not speak) the shared full mix, encoded once per
//! codec; then the RTP packet is written into the member's send buffer. No allocation
//! and no lock on this path.

use crate::config::Codec;
use crate::media::dtmf::DtmfReceiver;
use crate::media::g711::Law;
use crate::media::jitter::JitterBuffer;
use crate::media::rtp::{self, RtpSender};
use crate::media::srtp::{CryptoAttribute, SrtpContext};
use crate::mixer::Mixer;
use crate::redact::CallToken;
use crate::room::ivr::{Ivr, IvrAction, IvrSettings, PinAttempt, Prompt};
use crate::room::prompts::Prompts;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// Largest RTP packet we write: 12-byte header plus a 160-byte G.711 frame, with room to spare.
const MAX_PACKET: usize = 512;

/// Largest decoded payload we accept in one packet (120 ms of G.711; RFC 3551 §4.5 frames).
const MAX_DECODE: usize = 960;

/// Index of a room in the config's room list.
pub type RoomKey = usize;

/// Shard settings.
#[derive(Debug, Clone, Copy)]
pub struct ConferenceSettings {
    /// Jitter-buffer delay in samples.
    pub jitter_delay_samples: u32,
    /// No RTP for this long ends the call.
    pub rtp_timeout: Duration,
    /// IVR settings.
    pub ivr: IvrSettings,
}

/// SDES keys of an SRTP call: the caller's (to unprotect) and ours (to protect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The caller's `a=crypto` line (inbound).
    pub remote: CryptoAttribute,
    /// Our answer's `a=crypto` line (outbound).
    pub local: CryptoAttribute,
}

/// Media parameters of a member, as negotiated in SDP.
#[derive(Debug, Clone)]
pub struct MediaParams {
    /// Codec.
    pub codec: Codec,
    /// Payload type the caller uses for it.
    pub payload_type: u8,
    /// telephone-event payload type.
    pub telephone_event: Option<u8>,
    /// Where to send before the first packet arrives (SDP address).
    pub remote: Option<SocketAddr>,
    /// Whether we send to this member.
    pub send: bool,
    /// Whether we take this member's audio.
    pub receive: bool,
    /// SRTP keys; `None` for plain RTP.
    pub srtp: Option<SrtpKeys>,
}

/// Random initial RTP values for a member's outgoing stream (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy)]
pub struct RtpSeed {
    /// SSRC.
    pub ssrc: u32,
    /// First sequence number.
    pub sequence: u16,
    /// First timestamp.
    pub timestamp: u32,
}

/// Why the shard wants a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// Too many wrong PINs, or no PIN at all.
    PinFailed,
    /// No RTP for the configured time.
    MediaTimeout,
    /// The negotiated media could not be set up (unusable SRTP keys).
    MediaSetupFailed,
}

/// What the shard tells signalling.
#[derive(Debug)]
pub enum ConferenceEvent {
    /// A PIN attempt to verify; answer with [`Conference::handle_pin_result`] or a join.
    PinEntered {
        /// The call.
        call: CallToken,
        /// The digits.
        attempt: PinAttempt,
    },
    /// The call should be ended.
    Hangup {
        /// The call.
        call: CallToken,
        /// Why.
        reason: HangupReason,
    },
}

/// Aggregate media counters of a shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct MediaCounters {
    /// Packets that were not RTP, or of an unknown payload type.
    pub malformed: u64,
    /// Packets from another address than the latched one.
    pub foreign_source: u64,
    /// Digits received (counted, never stored).
    pub digits: u64,
    /// Packets sent.
    pub sent: u64,
    /// SRTP packets that failed authentication or the replay check (dropped).
    pub srtp_rejected: u64,
}

enum Phase {
    Ivr(Box<Ivr>),
    Joined(RoomKey),
}

struct Playback {
    queue: VecDeque<Prompt>,
    current: Option<(Arc<[i16]>, usize)>,
}

/// One caller's media state; it moves with the caller between shards.
pub struct Member {
    token: CallToken,
    law: Law,
    payload_type: u8,
    telephone_event: Option<u8>,
    remote: Option<SocketAddr>,
    latched: Option<(SocketAddr, u32)>,
    /// SRTP: the keys, and the inbound and outbound contexts made from them.
    srtp: Option<(SrtpKeys, SrtpContext, SrtpContext)>,
    send: bool,
    receive: bool,
    sender: RtpSender,
    jitter: JitterBuffer,
    dtmf: DtmfReceiver,
    last_rx: Instant,
    timed_out: bool,
    phase: Phase,
    playback: Playback,
    in_frame: [i16; FRAME_SAMPLES],
    has_audio: bool,
    out_frame: [i16; FRAME_SAMPLES],
    packet: [u8; MAX_PACKET],
    packet_len: usize,
}

impl Member {
    /// The call this member belongs to.
    pub fn token(&self) -> CallToken {
        self.token
    }

    /// Wipes the per-tick audio (frames and the last packet) and the digit state.
    fn wipe(&mut self) {
        self.in_frame.zeroize();
        self.out_frame.zeroize();
        self.packet.zeroize();
        self.dtmf.reset();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Audio is wiped when freed (architecture §5, invariant 5).
        self.wipe();
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Builds the inbound and outbound contexts for a call's keys.
fn srtp_contexts(keys: SrtpKeys) -> Option<(SrtpKeys, SrtpContext, SrtpContext)> {
    let inbound = SrtpContext::inbound_for(&keys.remote).ok()?;
    let outbound = SrtpContext::outbound_for(&keys.local).ok()?;
    Some((keys, inbound, outbound))
}

fn law_of(codec: Codec) -> Law {
    match codec {
        Codec::Pcmu => Law::Ulaw,
        Codec::Pcma => Law::Alaw,
    }
}

struct Room {
    members: Vec<usize>,
    /// The full mix of this tick, encoded once per law for every listener.
    full_pcm: [i16; FRAME_SAMPLES],
    full_encoded: [[u8; FRAME_SAMPLES]; 2],
    encoded_ready: [bool; 2],
}

impl Room {
    fn wipe(&mut self) {
        self.full_pcm.zeroize();
        self.full_encoded.zeroize();
    }
}

impl Drop for Conference {
    fn drop(&mut self) {
        for r in self.rooms.values_mut() {
            r.wipe();
        }
        self.decode.zeroize();
    }
}

/// One shard's members and rooms.
pub struct Conference {
    settings: ConferenceSettings,
    prompts: Arc<Prompts>,
    slots: Vec<Option<Member>>,
    free: Vec<usize>,
    by_token: HashMap<CallToken, usize>,
    rooms: HashMap<RoomKey, Room>,
    mixer: Mixer,
    decode: Vec<i16>,
    events: VecDeque<ConferenceEvent>,
    counters: MediaCounters,
}

impl Conference {
    /// An empty shard.
    pub fn new(settings: ConferenceSettings, prompts: Arc<Prompts>) -> Conference {
        Conference {
            settings,
            prompts,
            slots: Vec::new(),
            free: Vec::new(),
            by_token: HashMap::new(),
            rooms: HashMap::new(),
            mixer: Mixer::new(FRAME_SAMPLES),
            decode: vec![0; MAX_DECODE],
            events: VecDeque::new(),
            counters: MediaCounters::default(),
        }
    }

    /// Aggregate counters.
    pub fn counters(&self) -> MediaCounters {
        self.counters
    }

    /// Number of members in this shard.
    pub fn members(&self) -> usize {
        self.by_token.len()
    }

    /// Number of rooms with members in this shard.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Members of one room in this shard.
    pub fn room_size(&self, room: RoomKey) -> usize {
        self.rooms.get(&room).map_or(0, |r| r.members.len())
    }

    /// The slot a call's member occupies.
    pub fn slot_of(&self, call: CallToken) -> Option<usize> {
        self.by_token.get(&call).copied()
    }

    fn insert(&mut self, member: Member) -> usize {
        let token = member.token;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(member);
                s
            }
            None => {
                self.slots.push(Some(member));
                self.slots.len() - 1
            }
        };
        self.by_token.insert(token, slot);
        slot
    }
    /// A new caller: the IVR starts and the PIN prompt plays. Returns the member's slot,
    /// or `None` when the SRTP keys cannot be used (the caller should hang up).
    pub fn add_member(
        &mut self,
        now: Instant,
        call: CallToken,
        media: MediaParams,
        seed: RtpSeed,
    ) -> Option<usize> {
        let law = law_of(media.codec);
        let srtp = match media.srtp {
            Some(keys) => Some(srtp_contexts(keys)?),
            None => None,
        };
        let member = Member {
            token: call,
            law,
            payload_type: media.payload_type,
            telephone_event: media.telephone_event,
            remote: media.remote,
            latched: None,
            srtp,
            send: media.send,
            receive: media.receive,
            sender: RtpSender::new(seed.ssrc, seed.sequence, seed.timestamp, media.payload_type),
            // One second of ring: far more than any sane jitter, bounded memory.
            jitter: JitterBuffer::new(8000, self.settings.jitter_delay_samples),
            dtmf: DtmfReceiver::new(),
            last_rx: now,
            timed_out: false,
            phase: Phase::Ivr(Box::new(Ivr::new(self.settings.ivr))),
            playback: Playback {
                queue: VecDeque::with_capacity(4),
                current: None,
            },
            in_frame: [0; FRAME_SAMPLES],
            has_audio: false,
            out_frame: [0; FRAME_SAMPLES],
            packet: [0; MAX_PACKET],
            packet_len: 0,
        };
        let slot = self.insert(member);
        self.run_ivr(now, slot);
        Some(slot)
    }

    /// Removes a member (hang-up); returns its slot so the caller can drop its socket.
    pub fn remove(&mut self, call: CallToken) -> Option<usize> {
        let slot = self.by_token.remove(&call)?;
        // Wipe in place first: moving the member out leaves its bytes in the slot.
        self.slots.get_mut(slot)?.as_mut()?.wipe();
        let member = self.slots.get_mut(slot)?.take()?;
        if let Phase::Joined(room) = member.phase {
            self.leave_room(room, slot);
        }
        self.free.push(slot);
        Some(slot)
    }

    /// Takes a member out to move it to another shard.
    pub fn take(&mut self, call: CallToken) -> Option<(usize, Box<Member>)> {
        let slot = self.by_token.remove(&call)?;
        // The frames are per tick and need not travel; wiping them first means the copy
        // the move leaves in the slot holds no audio.
        self.slots.get_mut(slot)?.as_mut()?.wipe();
        let member = self.slots.get_mut(slot)?.take()?;
        if let Phase::Joined(room) = member.phase {
            self.leave_room(room, slot);
        }
        self.free.push(slot);
        Some((slot, Box::new(member)))
    }

    /// Takes in a member from another shard and puts it in `room`. Returns its slot.
    pub fn adopt(&mut self, now: Instant, member: Box<Member>, room: RoomKey) -> usize {
        let call = member.token;
        let slot = self.insert(*member);
        self.join(now, call, room);
        slot
    }

    fn leave_room(&mut self, room: RoomKey, slot: usize) {
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.retain(|&s| s != slot);
            if r.members.is_empty() {
                r.wipe();
                self.rooms.remove(&room);
            }
        }
    }

    /// The PIN was right and the room lives here: the member joins it.
    pub fn join(&mut self, _now: Instant, call: CallToken, room: RoomKey) {
        let Some(&slot) = self.by_token.get(&call) else {
            return;
        };
        let alone = self.rooms.get(&room).is_none_or(|r| r.members.is_empty());
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            members: Vec::new(),
            full_pcm: [0; FRAME_SAMPLES],
            full_encoded: [[0; FRAME_SAMPLES]; 2],
            encoded_ready: [false; 2],
        });
        if !r.members.contains(&slot) {
            r.members.push(slot);
        }
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        m.phase = Phase::Joined(room);
        m.jitter.reset();
        m.playback.current = None;
        m.playback.queue.clear();
        m.playback.queue.push_back(Prompt::JoinTone);
        if alone {
            m.playback.queue.push_back(Prompt::FirstParticipant);
        }
    }

    /// The verification of the member's PIN attempt: `ok` false means wrong PIN.
    pub fn handle_pin_result(&mut self, now: Instant, call: CallToken, ok: bool) {
        let Some(&slot) = self.by_token.get(&call) else {
            return;
        };
        if let Some(Member {
            phase: Phase::Ivr(ivr),
            ..
        }) = self.slots.get_mut(slot).and_then(Option::as_mut)
        {
            ivr.handle_verify_result(now, ok);
        }
        self.run_ivr(now, slot);
    }
    /// A re-INVITE changed the member's media.
    pub fn update_media(&mut self, call: CallToken, media: MediaParams) {
        let new_srtp = match media.srtp {
            // Same keys: keep the contexts (and their rollover counters and replay windows).
            Some(keys) => match self
                .by_token
                .get(&call)
                .and_then(|&s| self.slots.get(s)?.as_ref())
            {
                Some(Member {
                    srtp: Some((current, _, _)),
                    ..
                }) if *current == keys => None,
                _ => Some(srtp_contexts(keys)),
            },
            None => None,
        };
        let Some(&slot) = self.by_token.get(&call) else {
            return;
        };
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        m.law = law_of(media.codec);
        m.payload_type = media.payload_type;
        m.sender.set_payload_type(media.payload_type);
        m.telephone_event = media.telephone_event;
        if m.latched.is_none() {
            m.remote = media.remote;
        }
        m.send = media.send;
        m.receive = media.receive;
        match new_srtp {
            Some(Some(contexts)) => m.srtp = Some(contexts),
            // Keys that cannot be used: stop the media rather than fall back to plain.
            Some(None) => {
                m.send = false;
                m.receive = false;
            }
            None => {}
        }
    }

    /// Next event for signalling.
    pub fn poll_event(&mut self) -> Option<ConferenceEvent> {
        self.events.pop_front()
    }

    fn run_ivr(&mut self, now: Instant, slot: usize) {
        let prompts = &self.prompts;
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Phase::Ivr(ivr) = &mut m.phase else {
            return;
        };
        while let Some(action) = ivr.poll_action() {
            match action {
                IvrAction::Play(p) => {
                    m.playback.queue.clear();
                    m.playback.current = Some((prompts.get(p).clone(), 0));
                }
                IvrAction::StopPrompt => {
                    m.playback.queue.clear();
                    m.playback.current = None;
                }
                IvrAction::Verify(attempt) => self.events.push_back(ConferenceEvent::PinEntered {
                    call: m.token,
                    attempt,
                }),
                // Signalling moves the member into the room (maybe to another shard).
                IvrAction::Admit => {}
                IvrAction::Hangup => self.events.push_back(ConferenceEvent::Hangup {
                    call: m.token,
                    reason: HangupReason::PinFailed,
                }),
            }
        }
        let _ = now;
    }
    /// One received datagram on the member's RTP port (decrypted in place for SRTP).
    pub fn handle_rtp(&mut self, now: Instant, slot: usize, source: SocketAddr, packet: &mut [u8]) {
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let len = match &mut m.srtp {
            Some((_, inbound, _)) => {
                // Nothing about a packet is believed, and nothing is latched, before it
                // authenticates (RTP bleed).
                let len = packet.len();
                match inbound.unprotect_rtp(packet, len) {
                    Ok(n) => n,
                    Err(_) => {
                        self.counters.srtp_rejected += 1;
                        return;
                    }
                }
            }
            None => packet.len(),
        };
        let Ok((header, payload)) = rtp::parse(&packet[..len]) else {
            self.counters.malformed += 1;
            return;
        };
        match m.latched {
            None => {
                // Symmetric RTP (RFC 4961): answer where the packets really come from.
                m.latched = Some((source, header.ssrc));
                m.remote = Some(source);
            }
            Some((addr, _)) if addr != source => {
                self.counters.foreign_source += 1;
                return;
            }
            Some((_, ssrc)) if ssrc != header.ssrc => {
                // Same source, new stream (a phone restarting its sender): start over.
                m.latched = Some((source, header.ssrc));
                m.jitter.reset();
                m.dtmf = DtmfReceiver::new();
            }
            Some(_) => {}
        }
        m.last_rx = now;
        if Some(header.payload_type) == m.telephone_event {
            match m.dtmf.handle_packet(header.timestamp, payload) {
                Ok(Some(digit)) => {
                    self.counters.digits += 1;
                    if let Phase::Ivr(ivr) = &mut m.phase {
                        ivr.handle_digit(now, digit);
                        self.run_ivr(now, slot);
                    }
                    // Digits in the room are for in-call controls (not yet built).
                }
                Ok(None) => {}
                Err(_) => self.counters.malformed += 1,
            }
            return;
        }
        if header.payload_type != m.payload_type {
            // Comfort noise (PT 13) and anything not negotiated is not audio for us.
            return;
        }
        if !m.receive || !matches!(m.phase, Phase::Joined(_)) {
            return;
        }
        let n = payload.len().min(self.decode.len());
        m.law.decode(&payload[..n], &mut self.decode[..n]);
        m.jitter.push(header.timestamp, &self.decode[..n]);
    }

    /// One mixing tick: every member gets its next frame written as an RTP packet.
    pub fn handle_tick(&mut self, now: Instant) {
        // IVR timers and media timeouts.
        for slot in 0..self.slots.len() {
            let Some(m) = self.slots[slot].as_mut() else {
                continue;
            };
            if !m.timed_out
                && m.receive
                && now.saturating_duration_since(m.last_rx) >= self.settings.rtp_timeout
            {
                m.timed_out = true;
                self.events.push_back(ConferenceEvent::Hangup {
                    call: m.token,
                    reason: HangupReason::MediaTimeout,
                });
            }
            if let Phase::Ivr(ivr) = &mut m.phase {
                if ivr.poll_timeout().is_some_and(|t| t <= now) {
                    ivr.handle_timeout(now);
                    self.run_ivr(now, slot);
                }
            }
        }

        // Input: one frame per joined member.
        for m in self.slots.iter_mut().flatten() {
            m.has_audio = false;
            if matches!(m.phase, Phase::Joined(_)) && m.receive {
                m.has_audio = m.jitter.pop(&mut m.in_frame);
            }
        }

        // Mix each room, then give each member its output frame.
        for room in self.rooms.values_mut() {
            self.mixer.clear();
            for &s in &room.members {
                if let Some(m) = self.slots.get(s).and_then(Option::as_ref) {
                    if m.has_audio {
                        self.mixer.add(&m.in_frame);
                    }
                }
            }
            self.mixer.full_mix(&mut room.full_pcm);
            room.encoded_ready = [false; 2];
            for &s in &room.members {
                let Some(m) = self.slots.get_mut(s).and_then(Option::as_mut) else {
                    continue;
                };
                if m.has_audio {
                    self.mixer.minus_own(&m.in_frame, &mut m.out_frame);
                } else {
                    m.out_frame = room.full_pcm;
                }
            }
        }

        // Prompts override the mix; then encode and packetise.
        let mut finished = Vec::new();
        for slot in 0..self.slots.len() {
            let Some(m) = self.slots[slot].as_mut() else {
                continue;
            };
            m.packet_len = 0;
            let prompt_done = Self::play_prompt(&self.prompts, m);
            if prompt_done {
                finished.push(slot);
            }
            if !matches!(m.phase, Phase::Joined(_)) && m.playback.current.is_none() && !prompt_done
            {
                m.out_frame = [0; FRAME_SAMPLES];
            }
            if !m.send || m.remote.is_none() {
                m.sender.skip(FRAME_SAMPLES as u32);
                continue;
            }
            let mut payload = [0u8; FRAME_SAMPLES];
            let shared = match (
                m.phase_room(),
                m.has_audio,
                m.playback.current.is_some() || prompt_done,
            ) {
                (Some(room), false, false) => self.rooms.get_mut(&room),
                _ => None,
            };
            match shared {
                Some(room) => {
                    // A listener: the room's one encode of the full mix serves everyone
                    // with the same codec.
                    let li = m.law.index();
                    if !room.encoded_ready[li] {
                        m.law.encode(&room.full_pcm, &mut room.full_encoded[li]);
                        room.encoded_ready[li] = true;
                    }
                    payload = room.full_encoded[li];
                }
                None => m.law.encode(&m.out_frame, &mut payload),
            }
            m.packet_len = match m
                .sender
                .write(&payload, FRAME_SAMPLES as u32, &mut m.packet)
            {
                Ok(n) => match &mut m.srtp {
                    Some((_, _, outbound)) => outbound.protect_rtp(&mut m.packet, n).unwrap_or(0),
                    None => n,
                },
                Err(_) => 0,
            };
        }
        for slot in finished {
            if let Some(Member {
                phase: Phase::Ivr(ivr),
                ..
            }) = self.slots[slot].as_mut()
            {
                ivr.handle_prompt_finished(now);
            }
            self.run_ivr(now, slot);
        }
    }

    /// Fills `m.out_frame` from the prompt queue; returns true when a prompt ended this tick.
    fn play_prompt(prompts: &Prompts, m: &mut Member) -> bool {
        if m.playback.current.is_none() {
            if let Some(next) = m.playback.queue.pop_front() {
                m.playback.current = Some((prompts.get(next).clone(), 0));
            }
        }
        let Some((audio, pos)) = m.playback.current.as_mut() else {
            return false;
        };
        let end = (*pos + FRAME_SAMPLES).min(audio.len());
        let n = end - *pos;
        m.out_frame[..n].copy_from_slice(&audio[*pos..end]);
        m.out_frame[n..].fill(0);
        *pos = end;
        if *pos >= audio.len() {
            m.playback.current = None;
            return m.playback.queue.is_empty();
        }
        false
    }

    /// Hands every packet written by the last tick to `send(slot, destination, bytes)`.
    pub fn drain_transmits(&mut self, mut send: impl FnMut(usize, SocketAddr, &[u8])) {
        for (slot, m) in self.slots.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else { continue };
            if m.packet_len == 0 {
                continue;
            }
            if let Some(dest) = m.remote {
                send(slot, dest, &m.packet[..m.packet_len]);
                self.counters.sent += 1;
            }
            m.packet_len = 0;
        }
    }
}

impl Member {
    fn phase_room(&self) -> Option<RoomKey> {
        match self.phase {
            Phase::Joined(r) => Some(r),
            Phase::Ivr(_) => None,
        }
    }
}

impl Law {
    fn index(self) -> usize {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 1,
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;
    use crate::media::g711::{ulaw_decode, ulaw_encode};

    const TICK: Duration = Duration::from_millis(20);

    fn settings() -> ConferenceSettings {
        ConferenceSettings {
            jitter_delay_samples: 320,
            rtp_timeout: Duration::from_secs(2),
            ivr: IvrSettings::default(),
        }
    }

    /// Prompts of constant, recognisable levels (µ-law exact values).
    fn prompts() -> Arc<Prompts> {
        Arc::new(Prompts::from_fn(|p| {
            let level = match p {
                Prompt::EnterPin => 3004,
                Prompt::WrongPin => 2492,
                Prompt::Goodbye => 1980,
                Prompt::FirstParticipant => 1468,
                Prompt::JoinTone => 988,
            };
            vec![level; 480]
        }))
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)),
            40_000,
        )
    }

    fn media(n: u8) -> MediaParams {
        MediaParams {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote: Some(addr(n)),
            send: true,
            receive: true,
            srtp: None,
        }
    }

    fn seed(n: u8) -> RtpSeed {
        RtpSeed {
            ssrc: 1000 + n as u32,
            sequence: 100,
            timestamp: 5000,
        }
    }

    /// A phone's outgoing stream: constant level frames and RFC 4733 digits.
    struct Tx {
        sender: RtpSender,
        ts: u32,
    }

    impl Tx {
        fn new(n: u8) -> Tx {
            Tx {
                sender: RtpSender::new(77 + n as u32, 1, 8000, 0),
                ts: 8000,
            }
        }

        fn audio(&mut self, level: i16) -> Vec<u8> {
            let payload = [ulaw_encode(level); FRAME_SAMPLES];
            let mut out = [0u8; 256];
            self.sender.set_payload_type(0);
            let n = self
                .sender
                .write(&payload, FRAME_SAMPLES as u32, &mut out)
                .unwrap();
            self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
            out[..n].to_vec()
        }

        fn digit(&mut self, event: u8) -> Vec<Vec<u8>> {
            // Start packet, then the end packet three times, one event timestamp (RFC 4733 §2.5.1.4).
            let mut out = Vec::new();
            self.sender.set_payload_type(101);
            for (i, end) in [false, true, true, true].into_iter().enumerate() {
                let duration = (160 * (i as u16 + 1)).to_be_bytes();
                let payload = [
                    event,
                    if end { 0x80 | 10 } else { 10 },
                    duration[0],
                    duration[1],
                ];
                let mut buf = [0u8; 64];
                let n = self.sender.write(&payload, 0, &mut buf).unwrap();
                out.push(buf[..n].to_vec());
            }
            self.sender.skip(FRAME_SAMPLES as u32);
            out
        }
    }

    fn sent(conf: &mut Conference) -> HashMap<SocketAddr, Vec<i16>> {
        let mut out = HashMap::new();
        conf.drain_transmits(|_, dest, bytes| {
            let (h, payload) = rtp::parse(bytes).unwrap();
            assert_eq!(h.payload_type, 0);
            out.insert(
                dest,
                payload
                    .iter()
                    .map(|&c| ulaw_decode(c))
                    .collect::<Vec<i16>>(),
            );
        });
        out
    }

    fn level(frame: &[i16]) -> i16 {
        assert!(
            frame.iter().all(|&s| s == frame[0]),
            "frame not constant: {:?}",
            &frame[..4]
        );
        frame[0]
    }

    #[test]
    fn members_hear_the_others_never_themselves_and_listeners_share_the_mix() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let levels = [
            ulaw_decode(ulaw_encode(1000)),
            ulaw_decode(ulaw_encode(2000)),
            ulaw_decode(ulaw_encode(4000)),
        ];
        let calls: Vec<CallToken> = (1..=4).map(|n| CallToken::from_raw(n as u64)).collect();
        let slots: Vec<usize> = (0..4)
            .map(|i| {
                conf.add_member(t0, calls[i], media(i as u8 + 1), seed(i as u8))
                    .unwrap()
            })
            .collect();
        for c in &calls {
            conf.join(t0, *c, 7);
        }
        assert_eq!(conf.room_size(7), 4);
        let mut txs: Vec<Tx> = (0..3).map(Tx::new).collect();
        let mut now = t0;
        let mut last = HashMap::new();
        // Long enough for the join tone and "first participant" to finish and the
        // jitter buffers to fill.
        for _ in 0..60 {
            now += TICK;
            for i in 0..3 {
                let pkt = txs[i].audio(levels[i]);
                conf.handle_rtp(now, slots[i], addr(i as u8 + 1), &mut pkt.clone());
            }
            conf.handle_tick(now);
            last = sent(&mut conf);
        }
        let heard = |i: u8| level(&last[&addr(i)]);
        let q = |x: i32| ulaw_decode(ulaw_encode(x as i16)) as i32;
        let (a, b, c) = (levels[0] as i32, levels[1] as i32, levels[2] as i32);
        assert_eq!(heard(1) as i32, q(b + c));
        assert_eq!(heard(2) as i32, q(a + c));
        assert_eq!(heard(3) as i32, q(a + b));
        // The silent fourth member is a listener: the full mix.
        assert_eq!(heard(4) as i32, q(a + b + c));
    }

    #[test]
    fn ivr_prompt_digits_and_pin_result() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let call = CallToken::from_raw(9);
        let slot = conf.add_member(t0, call, media(1), seed(1)).unwrap();
        conf.handle_tick(t0 + TICK);
        // The PIN prompt plays from the first tick.
        assert_eq!(
            level(&sent(&mut conf)[&addr(1)]),
            ulaw_decode(ulaw_encode(3004))
        );
        let mut tx = Tx::new(1);
        let mut now = t0 + TICK;
        for ev in [1u8, 2, 11] {
            for pkt in tx.digit(ev) {
                conf.handle_rtp(now, slot, addr(1), &mut pkt.clone());
            }
            now += TICK;
            conf.handle_tick(now);
        }
        let Some(ConferenceEvent::PinEntered { call: c, attempt }) = conf.poll_event() else {
            panic!("no PIN attempt");
        };
        assert_eq!(c, call);
        assert_eq!(&attempt.0[..], b"12");
        assert_eq!(conf.counters().digits, 3);
        // Barge-in stopped the prompt: silence now.
        assert_eq!(level(&sent(&mut conf)[&addr(1)]), 0);
        conf.handle_pin_result(now, call, false);
        now += TICK;
        conf.handle_tick(now);
        assert_eq!(
            level(&sent(&mut conf)[&addr(1)]),
            ulaw_decode(ulaw_encode(2492)),
            "wrong-PIN prompt"
        );
    }

    #[test]
    fn foreign_packets_do_not_reach_the_mix_and_silence_times_out() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
        let sa = conf.add_member(t0, a, media(1), seed(1)).unwrap();
        let _sb = conf.add_member(t0, b, media(2), seed(2)).unwrap();
        conf.join(t0, a, 0);
        conf.join(t0, b, 0);
        let mut tx = Tx::new(1);
        let mut spoof = Tx::new(9);
        let mut now = t0;
        for _ in 0..40 {
            now += TICK;
            conf.handle_rtp(now, sa, addr(1), &mut tx.audio(0));
            // A spray from another address at a's port.
            conf.handle_rtp(now, sa, addr(99), &mut spoof.audio(8000));
            conf.handle_tick(now);
            let out = sent(&mut conf);
            assert_ne!(
                out.get(&addr(2)).map(|f| f[0]),
                Some(ulaw_decode(ulaw_encode(8000)))
            );
        }
        assert_eq!(conf.counters().foreign_source, 40);
        // b never sent anything: after rtp_timeout (2 s) it is reported, exactly once.
        let mut hangups = Vec::new();
        while let Some(ev) = conf.poll_event() {
            if let ConferenceEvent::Hangup { call, reason } = ev {
                hangups.push((call, reason));
            }
        }
        for _ in 0..100 {
            now += TICK;
            conf.handle_rtp(now, sa, addr(1), &mut tx.audio(0));
            conf.handle_tick(now);
            while let Some(ev) = conf.poll_event() {
                if let ConferenceEvent::Hangup { call, reason } = ev {
                    hangups.push((call, reason));
                }
            }
        }
        assert_eq!(hangups, vec![(b, HangupReason::MediaTimeout)]);
        assert!(conf.remove(b).is_some());
        assert_eq!(conf.room_size(0), 1);
        assert!(conf.remove(a).is_some());
        assert_eq!(conf.rooms(), 0, "an empty room disappears");
    }

    #[test]
    fn a_member_moves_between_shards_with_its_stream() {
        let t0 = Instant::now();
        let mut one = Conference::new(settings(), prompts());
        let mut two = Conference::new(settings(), prompts());
        let call = CallToken::from_raw(5);
        one.add_member(t0, call, media(1), seed(1)).unwrap();
        one.handle_tick(t0 + TICK);
        let mut seq_before = 0;
        one.drain_transmits(|_, _, b| seq_before = rtp::parse(b).unwrap().0.sequence);
        let (_, member) = one.take(call).unwrap();
        assert_eq!(one.members(), 0);
        two.adopt(t0 + TICK, member, 3);
        assert_eq!(two.room_size(3), 1);
        two.handle_tick(t0 + TICK * 2);
        let mut seq_after = 0;
        let mut ssrc = 0;
        two.drain_transmits(|_, _, b| {
            let h = rtp::parse(b).unwrap().0;
            seq_after = h.sequence;
            ssrc = h.ssrc;
        });
        // Same RTP stream: the sequence continues and the SSRC stays.
        assert_eq!(seq_after, seq_before.wrapping_add(1));
        assert_eq!(ssrc, seed(1).ssrc);
    }

    #[test]
    fn srtp_members_latch_only_on_authenticated_packets_and_count_the_rest() {
        use crate::media::srtp::{CryptoAttribute, KeyMaterial, Suite};
        let t0 = Instant::now();
        let mut rng = rand::rngs::OsRng;
        let suite = Suite::AesCm128HmacSha1_80;
        let phone_key = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{}",
            KeyMaterial::generate(suite, &mut rng).to_sdes_inline()
        ))
        .unwrap();
        let bridge_key = CryptoAttribute::answer_to(&phone_key, &mut rng);
        let keys = SrtpKeys {
            remote: phone_key.clone(),
            local: bridge_key.clone(),
        };
        let mut conf = Conference::new(settings(), prompts());
        let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
        let sa = conf
            .add_member(
                t0,
                a,
                MediaParams {
                    srtp: Some(keys),
                    ..media(1)
                },
                seed(1),
            )
            .unwrap();
        conf.add_member(t0, b, media(2), seed(2)).unwrap();
        conf.join(t0, a, 0);
        conf.join(t0, b, 0);
        let mut phone_out = SrtpContext::outbound_for(&phone_key).unwrap();
        let mut phone_in = SrtpContext::inbound_for(&bridge_key).unwrap();
        let mut tx = Tx::new(1);
        let mut spoof = Tx::new(9);
        let level = ulaw_decode(ulaw_encode(4000));
        let protect = |ctx: &mut SrtpContext, pkt: Vec<u8>| {
            let mut buf = pkt.clone();
            buf.resize(pkt.len() + 16, 0);
            let n = ctx.protect_rtp(&mut buf, pkt.len()).unwrap();
            buf.truncate(n);
            buf
        };

        let mut now = t0;
        let mut heard_by_b = 0;
        let mut a_out = Vec::new();
        for i in 0..40 {
            now += TICK;
            let good = protect(&mut phone_out, tx.audio(level));
            // A forged packet from elsewhere, sent before the real one: with plain RTP it
            // would win the latch; with SRTP it never authenticates.
            conf.handle_rtp(now, sa, addr(99), &mut spoof.audio(8000));
            conf.handle_rtp(now, sa, addr(1), &mut good.clone());
            if i == 10 {
                // A replay and a tampered copy: both dropped.
                conf.handle_rtp(now, sa, addr(1), &mut good.clone());
                let mut bad = good.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                conf.handle_rtp(now, sa, addr(1), &mut bad);
            }
            conf.handle_tick(now);
            conf.drain_transmits(|_, dest, bytes| {
                if dest == addr(2) {
                    if let Ok((_, payload)) = rtp::parse(bytes) {
                        if payload.iter().all(|&c| ulaw_decode(c) == level) {
                            heard_by_b += 1;
                        }
                    }
                } else if dest == addr(1) {
                    a_out.push(bytes.to_vec());
                }
            });
        }
        // 40 forged + 1 replay + 1 tampered.
        assert_eq!(conf.counters().srtp_rejected, 42);
        assert_eq!(
            conf.counters().foreign_source,
            0,
            "a forged packet reached the latch"
        );
        assert!(
            heard_by_b > 30,
            "the SRTP member's audio did not reach the room ({heard_by_b})"
        );
        // What the bridge sends to the SRTP member is SRTP the phone can open.
        assert!(a_out.len() >= 40);
        for pkt in &a_out {
            let mut buf = pkt.clone();
            let n = phone_in
                .unprotect_rtp(&mut buf, pkt.len())
                .expect("bridge output authenticates");
            assert_eq!(n + 10, pkt.len(), "AES-CM-80 adds a 10-byte tag");
        }
    }
}
