//! A shard of the conference: the members and rooms one mixer thread owns, sans-IO.
//!
//! The shard's I/O thread feeds it received RTP ([`Conference::handle_rtp`]) and a tick
//! every 20 ms ([`Conference::handle_tick`]); after each tick it drains the packets to
//! send ([`Conference::drain_transmits`]) and the events for signalling
//! ([`Conference::poll_event`]). Members are kept in slots so that the I/O thread can
//! keep their sockets in a parallel table; a member (with its state) can be taken out
//! and adopted by another shard when the PIN puts it in a room that lives there.
//!
//! Per tick, in order:
//! 1. IVR timers and media timeouts;
//! 2. each joined member's adaptive playout buffer gives one 20 ms frame at the
//!    member's own rate (decoding, or concealing a loss with PLC or Opus FEC), and its
//!    level feeds the noise gate and the speaker selection;
//! 3. each room keeps its loudest `max_speakers` members (with hysteresis) as speakers,
//!    resamples only their frames to the room's rate (the highest rate any member
//!    needs: 8, 16 or 48 kHz) and sums them once; each speaker gets the sum minus its
//!    own frame, resampled back to its rate and encoded by its own encoder;
//! 4. every listener hears the full sum, resampled and encoded ONCE per distinct
//!    format ([`EncoderKey`]: codec, rate, Opus parameters) in the room, so encoder
//!    runs per tick are at most (speakers + 1) × formats, whatever the room's size;
//!    prompts (IVR, join tone) override the mix with the member's own encode;
//! 5. each member's RTP packet (own SSRC, sequence, timestamp and SRTP context) is
//!    written into its send buffer.
//!
//! Allocation happens only when membership or formats change (join, leave, re-INVITE),

mod member;
mod mix;

pub use member::{InbandDtmf, MediaParams, Member, RtpSeed, SrtpKeys};

use crate::media::codec::{Unheard, MAX_FRAME, MAX_PAYLOAD};
use crate::media::dtmf::Digit;
use crate::media::gate::{level_dbov, Voice, SILENCE_DBOV};
use crate::media::playout::Playout;
use crate::mixer::Mixer;
use crate::redact::CallToken;
use crate::room::ivr::{IvrAction, IvrSettings, PinAttempt};
use crate::room::keys::{Control, KeyMap};
use crate::room::prompts::Prompts;
use crate::room::{Dismissal, Role, Room, RoomAction, RoomOptions};
use member::Phase;
use mix::{mixer_index, select_speakers, shared_encode, RoomMix};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// Ticks an RFC 6464 level report stays good for: a packet or two may be late.
const LEVEL_FRESH_TICKS: u64 = 3;

/// Net ticks of speech (2 s) after which a muted member is told how to unmute.
const MUTED_TALK_TICKS: u16 = 100;

/// Index of a room in the config's room list.
pub type RoomKey = usize;

/// Shard settings.
#[derive(Debug, Clone)]
pub struct ConferenceSettings {
    /// Lower bound of the playout buffers' target delay.
    pub jitter_min: Duration,
    /// Upper bound of the playout buffers' target delay.
    pub jitter_max: Duration,
    /// No RTP for this long ends the call.
    pub rtp_timeout: Duration,
    /// IVR settings.
    pub ivr: IvrSettings,
    /// Most members mixed at once per room.
    pub max_speakers: usize,
    /// Frames quieter than this (RMS, dBov) do not open a member's noise gate.
    pub noise_gate_dbov: f32,
    /// Per-member automatic gain.
    pub auto_gain: bool,
    /// In-call key bindings.
    pub keys: Arc<KeyMap>,
    /// Options of each room, by room key (a room beyond the list has the defaults).
    pub room_options: Arc<[RoomOptions]>,
}

impl Default for ConferenceSettings {
    fn default() -> Self {
        ConferenceSettings {
            jitter_min: Duration::from_millis(20),
            jitter_max: Duration::from_millis(200),
            rtp_timeout: Duration::from_secs(30),
            ivr: IvrSettings::default(),
            max_speakers: 3,
            noise_gate_dbov: -50.0,
            auto_gain: false,
            keys: Arc::new(KeyMap::default()),
            room_options: Arc::from(Vec::new()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// Too many wrong PINs, or no PIN at all.
    PinFailed,
    /// No RTP for the configured time.
    MediaTimeout,
    /// The negotiated media could not be set up (unusable SRTP keys or codec).
    MediaSetupFailed,
    /// The room ended the call (locked, full, removed, ended with its moderator).
    Room(Dismissal),
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
    /// The caller's first media packet arrived (authenticated, for SRTP) on the port
    /// our answer named: its signalling address is verified (return routability).
    MediaVerified {
        /// The call.
        call: CallToken,
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
    /// Of these, digits recognised as tones in the audio.
    pub inband_digits: u64,
    /// Packets sent.
    pub sent: u64,
    /// SRTP packets that failed authentication or the replay check (dropped).
    pub srtp_rejected: u64,
    /// Encoder runs (one per encoded 20 ms frame, shared or own).
    pub encoder_runs: u64,
    /// Frames played from received audio.
    pub frames_decoded: u64,
    /// Frames concealed (PLC or FEC) in place of lost or late packets.
    pub frames_concealed: u64,
    /// Frames not decoded because the caller's RFC 6464 level said they were quiet
    /// and the caller was not a speaker.
    pub frames_skipped: u64,
    /// Encoder, resampler or codec set-up failures (a bug of ours: counted, never fatal).
    pub codec_errors: u64,
    /// In-call controls used, by [`Control::ALL`] position.
    pub controls: [u64; Control::ALL.len()],
}

/// One shard's members and rooms.
pub struct Conference {
    settings: ConferenceSettings,
    prompts: Arc<Prompts>,
    slots: Vec<Option<Member>>,
    free: Vec<usize>,
    by_token: HashMap<CallToken, usize>,
    rooms: HashMap<RoomKey, RoomMix>,
    /// What each room is: members' roles, mute, lock, lecture (see `room::state`).
    controls: HashMap<RoomKey, Room>,
    /// Scratch: muted talkers to hint this tick.
    hints: Vec<(RoomKey, CallToken)>,
    /// Scratch: keys found as tones in room members' audio this tick.
    tone_keys: Vec<(usize, Digit)>,
    /// One mixer per frame length (8, 16 and 48 kHz).
    mixers: [Mixer; 3],
    /// Scratch: candidates for speaker selection, and one frame of audio.
    candidates: Vec<usize>,
    scratch: Box<[i16]>,
    /// Scratch: one encoded payload.
    payload: Box<[u8]>,
    /// Scratch: slots whose prompt ended this tick.
    finished: Vec<usize>,
    events: VecDeque<ConferenceEvent>,
    counters: MediaCounters,
    ticks: u64,
}

impl Drop for Conference {
    fn drop(&mut self) {
        self.scratch.zeroize();
    }
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
            controls: HashMap::new(),
            hints: Vec::with_capacity(8),
            tone_keys: Vec::with_capacity(8),
            mixers: [Mixer::new(160), Mixer::new(320), Mixer::new(MAX_FRAME)],
            candidates: Vec::with_capacity(64),
            scratch: vec![0; MAX_FRAME].into_boxed_slice(),
            payload: vec![0; MAX_PAYLOAD].into_boxed_slice(),
            finished: Vec::with_capacity(64),
            events: VecDeque::new(),
            counters: MediaCounters::default(),
            ticks: 0,
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

    /// The rate a room mixes at (0 if it has no members here).
    pub fn room_rate(&self, room: RoomKey) -> u32 {
        self.rooms.get(&room).map_or(0, |r| r.rate)
    }

    /// How many members of a room are mixed this tick.
    pub fn speakers(&self, room: RoomKey) -> usize {
        self.rooms.get(&room).map_or(0, |r| r.speakers.len())
    }

    /// Whether a call is one of its room's speakers this tick.
    pub fn is_speaker(&self, call: CallToken) -> bool {
        self.by_token
            .get(&call)
            .and_then(|&s| self.slots.get(s)?.as_ref())
            .is_some_and(|m| m.voice.speaking)
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
    /// or `None` when the SRTP keys or the codec cannot be used (the caller should hang up).
    pub fn add_member(
        &mut self,
        now: Instant,
        call: CallToken,
        media: MediaParams,
        seed: RtpSeed,
    ) -> Option<usize> {
        let member = Member::new(now, call, media, seed, &self.settings)?;
        let slot = self.insert(member);
        self.run_ivr(now, slot);
        Some(slot)
    }

    /// Removes a member (hang-up); returns its slot so the caller can drop its socket.
    pub fn remove(&mut self, now: Instant, call: CallToken) -> Option<usize> {
        let slot = self.by_token.remove(&call)?;
        // Wipe in place first: moving the member out leaves its bytes in the slot.
        self.slots.get_mut(slot)?.as_mut()?.wipe();
        let member = self.slots.get_mut(slot)?.take()?;
        if let Phase::Joined(room) = member.phase {
            self.leave_room(room, slot);
            self.leave_control(now, room, call);
        }
        self.free.push(slot);
        Some(slot)
    }

    /// Takes a member out to move it to another shard.
    pub fn take(&mut self, now: Instant, call: CallToken) -> Option<(usize, Box<Member>)> {
        let slot = self.by_token.remove(&call)?;
        // The frames are per tick and need not travel; wiping them first means the copy
        // the move leaves in the slot holds no audio.
        self.slots.get_mut(slot)?.as_mut()?.wipe();
        let mut member = self.slots.get_mut(slot)?.take()?;
        if let Phase::Joined(room) = member.phase {
            self.leave_room(room, slot);
            self.leave_control(now, room, call);
        }
        member.voice = Voice::new();
        self.free.push(slot);
        Some((slot, Box::new(member)))
    }

    /// Takes in a member from another shard and puts it in `room` as `role`. Returns
    /// its slot.
    pub fn adopt(&mut self, now: Instant, member: Box<Member>, room: RoomKey, role: Role) -> usize {
        let call = member.token;
        let slot = self.insert(*member);
        self.join_as(now, call, room, role);
        slot
    }

    /// A member left `room`: the room's state hears of it (and forgets an empty room).
    fn leave_control(&mut self, now: Instant, room: RoomKey, call: CallToken) {
        if let Some(c) = self.controls.get_mut(&room) {
            c.handle_leave(now, call);
        }
        self.run_room(room);
    }

    /// Carries out what a room asks.
    fn run_room(&mut self, room: RoomKey) {
        while let Some(action) = self.controls.get_mut(&room).and_then(Room::poll_action) {
            let member = match &action {
                RoomAction::Used { control } => {
                    if let Some(i) = Control::ALL.iter().position(|c| c == control) {
                        self.counters.controls[i] += 1;
                    }
                    continue;
                }
                RoomAction::Say { member, .. }
                | RoomAction::Mute { member, .. }
                | RoomAction::Wait { member, .. }
                | RoomAction::Gain { member, .. }
                | RoomAction::Dismiss { member, .. } => *member,
            };
            let Some(&slot) = self.by_token.get(&member) else {
                continue;
            };
            let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            match action {
                RoomAction::Say { prompts, .. } => {
                    for p in prompts {
                        m.playback.enqueue(p);
                    }
                }
                RoomAction::Mute { muted, .. } => {
                    m.muted = muted;
                    m.talk = 0;
                }
                RoomAction::Wait { waiting, .. } => m.waiting = waiting,
                RoomAction::Gain { db, .. } => m.gain_db = db,
                RoomAction::Used { .. } => {}
                RoomAction::Dismiss { reason, .. } => {
                    let was = std::mem::replace(&mut m.phase, Phase::Leaving(reason));
                    if m.playback.is_idle() {
                        self.events.push_back(ConferenceEvent::Hangup {
                            call: member,
                            reason: HangupReason::Room(reason),
                        });
                    }
                    if let Phase::Joined(r) = was {
                        self.leave_room(r, slot);
                    }
                }
            }
        }
        if self.controls.get(&room).is_some_and(Room::is_empty) && !self.rooms.contains_key(&room) {
            self.controls.remove(&room);
        }
    }

    /// Refuses a caller whose PIN was right because the node is full: it hears why,
    /// then its call ends.
    pub fn refuse_full(&mut self, call: CallToken) {
        let Some(&slot) = self.by_token.get(&call) else {
            return;
        };
        if let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            m.phase = Phase::Leaving(Dismissal::Full);
            m.playback.play_now(crate::room::prompts::Prompt::RoomFull);
        }
    }

    fn leave_room(&mut self, room: RoomKey, slot: usize) {
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.retain(|&s| s != slot);
            r.speakers.retain(|&s| s != slot);
            if r.members.is_empty() {
                self.rooms.remove(&room);
            } else {
                self.refresh_room(room);
            }
        }
    }

    /// After a membership or format change: the room's rate, every member's resamplers
    /// to and from it, and one shared encode per format its members use.
    fn refresh_room(&mut self, room: RoomKey) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let formats: Vec<_> = r
            .members
            .iter()
            .filter_map(|&s| self.slots.get(s)?.as_ref().map(|m| m.format))
            .collect();
        self.counters.codec_errors += r.refresh_formats(&formats);
        let rate = r.rate;
        // Speaker selection must not allocate on the tick: room for every member here.
        self.candidates.clear();
        self.candidates.reserve(r.members.len());
        for &s in &r.members {
            if let Some(m) = self.slots.get_mut(s).and_then(Option::as_mut) {
                let stale = m.up.as_ref().is_none_or(|u| u.to_hz() != rate)
                    || m.up.as_ref().is_none_or(|u| u.from_hz() != m.format.rate);
                if stale {
                    m.up = member::resampler(m.format.rate, rate);
                    m.down = member::resampler(rate, m.format.rate);
                    if m.up.is_none() || m.down.is_none() {
                        self.counters.codec_errors += 1;
                    }
                }
            }
        }
    }

    /// The PIN was right and the room lives here: the member joins it.
    pub fn join(&mut self, now: Instant, call: CallToken, room: RoomKey) {
        self.join_as(now, call, room, Role::Member);
    }

    /// The member joins `room` as `role` (unless the room refuses it: locked, full).
    pub fn join_as(&mut self, now: Instant, call: CallToken, room: RoomKey, role: Role) {
        let Some(&slot) = self.by_token.get(&call) else {
            return;
        };
        let previous = self
            .slots
            .get(slot)
            .and_then(Option::as_ref)
            .and_then(Member::phase_room);
        if previous == Some(room) {
            return;
        }
        if let Some(old) = previous {
            self.leave_room(old, slot);
            self.leave_control(now, old, call);
        }
        if let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            // The PIN prompt (or its echo) stops; the room says what comes next.
            m.playback.stop();
            m.muted = false;
            m.waiting = false;
            m.gain_db = 0;
            m.talk = 0;
        }
        let settings = &self.settings;
        let control = self.controls.entry(room).or_insert_with(|| {
            let options = settings.room_options.get(room).copied().unwrap_or_default();
            Room::new(options, settings.keys.clone())
        });
        if !control.handle_join(now, call, role) {
            self.run_room(room);
            return;
        }
        let r = self.rooms.entry(room).or_insert_with(RoomMix::new);
        if !r.members.contains(&slot) {
            r.members.push(slot);
        }
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        m.phase = Phase::Joined(room);
        m.playout.reset();
        m.seen_resyncs = m.playout.resyncs();
        m.decoder.reset();
        m.voice = Voice::new();
        self.refresh_room(room);
        self.run_room(room);
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

    /// A re-INVITE changed the member's media. Returns false when the call is not
    /// (or not yet) in this shard, so that the caller can keep the update for later.
    pub fn update_media(&mut self, now: Instant, call: CallToken, media: MediaParams) -> bool {
        let Some(&slot) = self.by_token.get(&call) else {
            return false;
        };
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        m.update_media(now, media, &self.settings, &mut self.counters);
        if let Some(room) = m.phase_room() {
            self.refresh_room(room);
        }
        true
    }

    /// Next event for signalling.
    pub fn poll_event(&mut self) -> Option<ConferenceEvent> {
        self.events.pop_front()
    }

    fn run_ivr(&mut self, now: Instant, slot: usize) {
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Phase::Ivr(ivr) = &mut m.phase else {
            return;
        };
        while let Some(action) = ivr.poll_action() {
            match action {
                IvrAction::Play(p) => m.playback.play_now(p),
                IvrAction::StopPrompt => m.playback.stop(),
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

    /// A key pressed by `call` that arrived outside its RTP stream (SIP INFO).
    pub fn handle_digit(&mut self, now: Instant, call: CallToken, digit: Digit) {
        if let Some(&slot) = self.by_token.get(&call) {
            self.out_of_band_key(slot);
            self.on_digit(now, slot, digit);
        }
    }

    /// A key came out of band: where tones were listened for only until then, stop.
    fn out_of_band_key(&mut self, slot: usize) {
        if let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            if m.inband_until_out_of_band {
                m.inband = None;
            }
        }
    }

    /// A key of the member in `slot`, however it came (RFC 4733, INFO, in-band).
    fn on_digit(&mut self, now: Instant, slot: usize, digit: Digit) {
        self.counters.digits += 1;
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match &mut m.phase {
            Phase::Ivr(ivr) => {
                ivr.handle_digit(now, digit);
                self.run_ivr(now, slot);
            }
            Phase::Joined(room) => {
                let (room, call) = (*room, m.token);
                if let Some(c) = self.controls.get_mut(&room) {
                    c.handle_key(now, call, digit);
                }
                self.run_room(room);
            }
            Phase::Leaving(_) => {}
        }
    }

    /// One received datagram on the member's RTP port (decrypted in place for SRTP).
    pub fn handle_rtp(&mut self, now: Instant, slot: usize, source: SocketAddr, packet: &mut [u8]) {
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let received = m.receive(now, self.ticks, source, packet, &mut self.counters);
        if received.verified {
            self.events
                .push_back(ConferenceEvent::MediaVerified { call: m.token });
        }
        if let Some(digit) = received.digit {
            self.out_of_band_key(slot);
            self.on_digit(now, slot, digit);
        }
    }

    /// One mixing tick: every member gets its next frame written as an RTP packet.
    pub fn handle_tick(&mut self, now: Instant) {
        self.ticks += 1;
        self.timers(now);
        self.take_input(now);
        self.mix_rooms();
        self.write_output(now);
    }

    /// IVR timers and media timeouts.
    fn timers(&mut self, now: Instant) {
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
        // Rooms with a timer due (the grace after the last moderator left): rare, so
        // the keys are collected only when one is.
        if self
            .controls
            .values()
            .any(|c| c.poll_timeout().is_some_and(|t| t <= now))
        {
            let due: Vec<RoomKey> = self
                .controls
                .iter()
                .filter(|(_, c)| c.poll_timeout().is_some_and(|t| t <= now))
                .map(|(&k, _)| k)
                .collect();
            for room in due {
                if let Some(c) = self.controls.get_mut(&room) {
                    c.handle_timeout(now);
                }
                self.run_room(room);
            }
        }
    }

    /// Members typing their PIN as tones: one decoded frame each into their detector
    /// (never into the mix).
    fn listen_for_tones(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let Some(m) = self.slots[slot].as_mut() else {
                continue;
            };
            if !(matches!(m.phase, Phase::Ivr(_)) && m.receive) {
                continue;
            }
            let Some(detector) = m.inband.as_mut() else {
                continue;
            };
            let n = m.format.frame_samples();
            if m.playout.pop(now, &mut m.decoder, &mut m.native[..n]) == Playout::Silence {
                continue;
            }
            let mut digit = detector.handle_samples(&m.native[..n]);
            // At most one key completes per 20 ms frame; the queue is drained anyway.
            while let Some(d) = digit {
                self.counters.inband_digits += 1;
                self.on_digit(now, slot, d);
                digit = self.slots[slot]
                    .as_mut()
                    .and_then(|m| m.inband.as_mut())
                    .and_then(|d| d.poll_digit());
            }
        }
    }

    /// One frame per joined member from its playout buffer, and its level.
    ///
    /// A member that is not speaking and whose RFC 6464 level says it is below the
    /// noise gate is not decoded: its packets play as silence of the right length,
    /// and the reported level feeds the gate. Decoding (with a fresh decoder) resumes
    /// as soon as it reports a level above the gate, which arrives with the packet,
    /// a jitter-buffer delay before the audio plays.
    fn take_input(&mut self, now: Instant) {
        self.listen_for_tones(now);
        let gate = self.settings.noise_gate_dbov;
        let auto_gain = self.settings.auto_gain;
        let ticks = self.ticks;
        let hints = &mut self.hints;
        let tone_keys = &mut self.tone_keys;
        for (slot, m) in self.slots.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else {
                continue;
            };
            m.has_audio = false;
            if !(matches!(m.phase, Phase::Joined(_)) && m.receive) {
                continue;
            }
            let n = m.format.frame_samples();
            let reported = m
                .reported
                .filter(|&(_, t)| ticks.saturating_sub(t) <= LEVEL_FRESH_TICKS)
                .map(|(minus_dbov, _)| -f32::from(minus_dbov));
            // Keys as tones need every frame decoded.
            let quiet =
                reported.filter(|&db| !m.voice.speaking && db <= gate && m.inband.is_none());
            let played = match quiet {
                Some(_) => {
                    m.skipping = true;
                    m.playout
                        .pop(now, &mut Unheard(&m.decoder), &mut m.native[..n])
                }
                None => {
                    if m.skipping {
                        // Its history is from before the skipped packets.
                        m.decoder.reset();
                        m.skipping = false;
                    }
                    m.playout.pop(now, &mut m.decoder, &mut m.native[..n])
                }
            };
            match (played, quiet) {
                (Playout::Silence, _) => {}
                (_, Some(_)) => self.counters.frames_skipped += 1,
                (Playout::Audio, None) => self.counters.frames_decoded += 1,
                (Playout::Concealed, None) => self.counters.frames_concealed += 1,
            }
            m.has_audio = played != Playout::Silence;
            m.screen_tones(n, |d| tone_keys.push((slot, d)));
            let db = match (quiet, m.has_audio) {
                (Some(db), true) => db,
                (None, true) => level_dbov(&m.native[..n]),
                (_, false) => SILENCE_DBOV,
            };
            m.voice.update(db, gate, auto_gain);
            if m.muted && !m.waiting && m.talk < MUTED_TALK_TICKS {
                // Net speech while muted: a few seconds of it and the member is told
                // (once, by its room) how to unmute.
                m.talk = if m.voice.audible() {
                    m.talk + 1
                } else {
                    m.talk.saturating_sub(1)
                };
                if m.talk == MUTED_TALK_TICKS {
                    if let Phase::Joined(room) = m.phase {
                        hints.push((room, m.token));
                    }
                }
            }
        }
        for i in 0..self.tone_keys.len() {
            let (slot, digit) = self.tone_keys[i];
            self.counters.inband_digits += 1;
            self.on_digit(now, slot, digit);
        }
        self.tone_keys.clear();
        for i in 0..self.hints.len() {
            let (room, call) = self.hints[i];
            if let Some(c) = self.controls.get_mut(&room) {
                c.handle_muted_talk(call);
            }
            self.run_room(room);
        }
        self.hints.clear();
    }

    /// Speaker selection, the sum of the speakers, and each speaker's own mix.
    fn mix_rooms(&mut self) {
        let Conference {
            settings,
            slots,
            rooms,
            mixers,
            candidates,
            scratch,
            ticks,
            ..
        } = self;
        for room in rooms.values_mut() {
            select_speakers(room, slots, candidates, settings.max_speakers, *ticks);
            let n_room = room.frame();
            let mixer = &mut mixers[mixer_index(room.rate)];
            mixer.clear();
            for &s in &room.speakers {
                let Some(m) = slots.get_mut(s).and_then(Option::as_mut) else {
                    continue;
                };
                let n = m.format.frame_samples();
                let converted = match m.up.as_mut() {
                    Some(up) => up.process(&m.native[..n], &mut m.mixed[..n_room]),
                    None => 0,
                };
                m.mixed[converted..n_room].fill(0);
                // The gate's ramp (a closing gate fades the speaker out) and auto gain.
                m.voice.apply(&mut m.mixed[..n_room], settings.auto_gain);
                mixer.add(&m.mixed[..n_room]);
            }
            mixer.full_mix(&mut room.full[..n_room]);
            room.start_tick();
            for &s in &room.speakers {
                let Some(m) = slots.get_mut(s).and_then(Option::as_mut) else {
                    continue;
                };
                mixer.minus_own(&m.mixed[..n_room], &mut scratch[..n_room]);
                let n = m.format.frame_samples();
                let converted = match m.down.as_mut() {
                    Some(down) => down.process(&scratch[..n_room], &mut m.out[..n]),
                    None => 0,
                };
                m.out[converted..n].fill(0);
            }
            scratch.zeroize();
        }
    }

    /// Prompts, own and shared encodes, and the RTP packets.
    fn write_output(&mut self, now: Instant) {
        let Conference {
            prompts,
            slots,
            rooms,
            counters,
            payload,
            finished,
            ..
        } = self;
        finished.clear();
        for (slot, m) in slots.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else {
                continue;
            };
            m.packet_len = 0;
            let n = m.format.frame_samples();
            let played = m.playback.next_frame(prompts, &mut m.out[..n]);
            let prompting = played.playing;
            if played.finished {
                finished.push(slot);
            }
            let step = m.format.timestamp_step();
            if !m.send || m.remote.is_none() {
                m.sender.skip(step);
                m.paused = true;
                continue;
            }
            let room = if prompting || m.waiting {
                None
            } else {
                m.phase_room()
            };
            let shared = match room {
                Some(r) if !m.voice.speaking && m.gain_db == 0 => rooms
                    .get_mut(&r)
                    .and_then(|room| shared_encode(room, m.format, counters)),
                _ => None,
            };
            if m.paused {
                // Sending resumes after a gap (hold, no address yet, a failed encode):
                // a new talk-spurt for the far end's jitter buffer (RFC 3551 §4.1).
                m.sender.mark_talkspurt();
                m.paused = false;
            }
            let written = match shared {
                // A listener: the room's one encode for its format.
                Some(bytes) => m.sender.write(bytes, step, &mut m.packet),
                None => {
                    if !prompting {
                        let heard = match room.and_then(|r| rooms.get(&r)) {
                            // A speaker hears the mix minus itself (made by the mix).
                            Some(_) if m.voice.speaking => true,
                            // A listener with its own level: the room's mix at its rate.
                            Some(r) if m.gain_db != 0 => {
                                let n_room = r.frame();
                                let converted = match m.down.as_mut() {
                                    Some(down) => down.process(&r.full[..n_room], &mut m.out[..n]),
                                    None => 0,
                                };
                                m.out[converted..n].fill(0);
                                true
                            }
                            _ => false,
                        };
                        if heard {
                            apply_gain(&mut m.out[..n], m.gain_db);
                        } else {
                            // In the IVR between prompts, waiting for the moderator, or a
                            // listener whose shared encode failed: silence, never the
                            // last frame again.
                            m.out[..n].fill(0);
                        }
                    }
                    counters.encoder_runs += 1;
                    let len = match m.encoder.encode(&m.out[..n], payload) {
                        Ok(len) if len > 0 => len,
                        _ => {
                            counters.codec_errors += 1;
                            m.sender.skip(step);
                            m.paused = true;
                            continue;
                        }
                    };
                    m.sender.write(&payload[..len], step, &mut m.packet)
                }
            };
            m.packet_len = match written {
                Ok(len) => match &mut m.srtp {
                    Some((_, _, outbound)) => outbound.protect_rtp(&mut m.packet, len).unwrap_or(0),
                    None => len,
                },
                Err(_) => 0,
            };
        }
        payload.zeroize();
        for i in 0..self.finished.len() {
            let slot = self.finished[i];
            match self.slots[slot].as_mut() {
                Some(Member {
                    phase: Phase::Ivr(ivr),
                    ..
                }) => ivr.handle_prompt_finished(now),
                Some(Member {
                    phase: Phase::Leaving(reason),
                    token,
                    ..
                }) => self.events.push_back(ConferenceEvent::Hangup {
                    call: *token,
                    reason: HangupReason::Room(*reason),
                }),
                _ => {}
            }
            self.run_ivr(now, slot);
        }
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

/// A listener's own level: `db` (a few 3 dB steps either way) on its frame.
fn apply_gain(frame: &mut [i16], db: i8) {
    if db == 0 {
        return;
    }
    let g = 10f32.powf(f32::from(db) / 20.0);
    for x in frame {
        *x = (f32::from(*x) * g).clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod control_tests;
