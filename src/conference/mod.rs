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

mod demux;
mod member;
mod mix;
mod span;
mod tick;

pub use member::{InbandDtmf, MediaParams, Member, RtpSeed, SrtpKeys, ZrtpSession};
pub use span::Rooms;

use crate::media::codec::{Encoder, Format, MAX_FRAME, MAX_PAYLOAD};
use crate::media::dtmf::Digit;
use crate::media::gate::Voice;
use crate::mixer::Mixer;
use crate::redact::CallToken;
use crate::room::ivr::{IvrAction, IvrSettings, PinAttempt};
use crate::room::keys::{Control, KeyMap};
use crate::room::prompts::Prompts;
use crate::room::{Dismissal, Role, Room, RoomAction, RoomOptions};
use demux::{Demux, Route, SRTP_TRIALS};
use member::Phase;
use mix::RoomMix;
use span::SharedRoom;
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
    /// Whether members' RTP comes to one shared port ([`Conference::handle_shared_rtp`])
    /// rather than to a port each.
    pub shared_port: bool,
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
            shared_port: false,
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
    /// The room took the caller in (after its PIN, unless locked or full).
    Joined {
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
    /// Calls whose ZRTP exchange went secure.
    pub zrtp_secure: u64,
    /// Calls whose ZRTP exchange failed (they go on without it).
    pub zrtp_failed: u64,
}

/// One shard's members and rooms.
pub struct Conference {
    settings: ConferenceSettings,
    prompts: Arc<Prompts>,
    slots: Vec<Option<Member>>,
    free: Vec<usize>,
    by_token: HashMap<CallToken, usize>,
    rooms: HashMap<RoomKey, RoomMix>,
    /// What each room with members here is: roles, mute, lock, lecture (see
    /// `room::state`), shared with the other shards that hold members of it.
    controls: HashMap<RoomKey, Arc<SharedRoom>>,
    /// Every room of the node, and the node's tick grid.
    node: Arc<Rooms>,
    /// This shard's index in the node.
    shard: usize,
    /// Scratch: what rooms asked of members here.
    actions: Vec<RoomAction>,
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
    /// The shared port's routing table (`None` with a port per call).
    demux: Option<Demux>,
    /// Scratch: a copy of an unknown source's datagram for SRTP trials.
    trial: Box<[u8]>,
    /// One encoded 20 ms frame of silence per format members here use (made when a
    /// member with a new format arrives, never on the tick).
    silence: Vec<(Format, Box<[u8]>)>,
}

impl Drop for Conference {
    fn drop(&mut self) {
        self.scratch.zeroize();
        self.trial.zeroize();
    }
}

/// Largest datagram tried against waiting SRTP members (RTP over UDP stays far below).
const TRIAL_BYTES: usize = 2048;

impl Conference {
    /// An empty shard, alone on its node.
    pub fn new(settings: ConferenceSettings, prompts: Arc<Prompts>) -> Conference {
        Conference::in_node(settings, prompts, Rooms::new(1, None), 0)
    }

    /// An empty shard, number `shard` of the node whose rooms are `node`.
    pub fn in_node(
        settings: ConferenceSettings,
        prompts: Arc<Prompts>,
        node: Arc<Rooms>,
        shard: usize,
    ) -> Conference {
        let settings_shared = settings.shared_port;
        Conference {
            settings,
            prompts,
            slots: Vec::new(),
            free: Vec::new(),
            by_token: HashMap::new(),
            rooms: HashMap::new(),
            controls: HashMap::new(),
            node,
            shard,
            actions: Vec::with_capacity(16),
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
            demux: settings_shared.then(Demux::new),
            trial: vec![0; if settings_shared { TRIAL_BYTES } else { 0 }].into_boxed_slice(),
            silence: Vec::new(),
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
        self.retrack(slot, Route::default());
        self.encode_silence(slot);
        slot
    }

    /// Makes the shared silence frame for the format of the member in `slot`, if this
    /// shard has none for it yet.
    fn encode_silence(&mut self, slot: usize) {
        let Some(format) = self
            .slots
            .get(slot)
            .and_then(Option::as_ref)
            .map(|m| m.format)
        else {
            return;
        };
        if self.silence.iter().any(|(f, _)| *f == format) {
            return;
        }
        let zeros = vec![0i16; format.frame_samples()];
        let mut out = vec![0u8; MAX_PAYLOAD];
        match Encoder::new(format).map(|mut e| e.encode(&zeros, &mut out)) {
            Ok(Ok(len)) if len > 0 => self.silence.push((format, out[..len].into())),
            // Without it the member's own encoder makes its silence, as before.
            _ => self.counters.codec_errors += 1,
        }
    }

    /// The member in `slot` was found by `before`; the shared port's table follows it.
    fn retrack(&mut self, slot: usize, before: Route) {
        let Some(demux) = self.demux.as_mut() else {
            return;
        };
        let after = self
            .slots
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(Route::default(), Member::route);
        demux.update(slot, before, after);
    }

    /// The member in `slot` is leaving the shard: nothing routes to it any more.
    fn untrack(&mut self, slot: usize) {
        if let Some(demux) = self.demux.as_mut() {
            if let Some(m) = self.slots.get(slot).and_then(Option::as_ref) {
                demux.update(slot, m.route(), Route::default());
            }
        }
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

    /// Gives a member its call's ZRTP session (the caller offered ZRTP): from now on its
    /// media waits for the exchange, whose first Hello goes out with the next packets.
    pub fn attach_zrtp(&mut self, call: CallToken, session: Box<ZrtpSession>) {
        let Some(&slot) = self.by_token.get(&call) else {
            return;
        };
        if let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            m.zrtp = Some(session);
            m.pump_zrtp(&mut self.counters);
        }
    }

    /// Removes a member (hang-up); returns its slot so the caller can drop its socket.
    pub fn remove(&mut self, now: Instant, call: CallToken) -> Option<usize> {
        let slot = self.by_token.remove(&call)?;
        self.untrack(slot);
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
        self.untrack(slot);
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
        let shared = self.room_handle(room);
        shared.with_state(self.shard, &mut self.actions, |s| {
            s.forget(call);
            s.room.handle_leave(now, call);
        });
        self.run_room(room);
    }

    /// This shard's handle on `room`'s shared state (taken on first use).
    fn room_handle(&mut self, room: RoomKey) -> Arc<SharedRoom> {
        if let Some(h) = self.controls.get(&room) {
            return h.clone();
        }
        let settings = &self.settings;
        let handle = self.node.enter(room, self.shard, || {
            let options = settings.room_options.get(room).copied().unwrap_or_default();
            Room::new(options, settings.keys.clone())
        });
        self.controls.insert(room, handle.clone());
        handle
    }

    /// Carries out what `room` asked of members here; lets go of the room once no
    /// member here is in it.
    fn run_room(&mut self, room: RoomKey) {
        self.apply_actions();
        if !self.rooms.contains_key(&room) && self.controls.remove(&room).is_some() {
            self.node.exit(room, self.shard);
        }
    }

    /// Carries out the actions in `self.actions` (for members of this shard).
    fn apply_actions(&mut self) {
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
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
        self.actions = actions;
    }

    /// What rooms asked of members here from other shards; rooms no member here is in
    /// any more are let go.
    fn take_mail(&mut self) {
        for handle in self.controls.values() {
            handle.take_mail(self.shard, &mut self.actions);
        }
        if self.actions.is_empty() {
            return;
        }
        self.apply_actions();
        let (rooms, node, shard) = (&self.rooms, &self.node, self.shard);
        self.controls.retain(|room, _| {
            let keep = rooms.contains_key(room);
            if !keep {
                node.exit(*room, shard);
            }
            keep
        });
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
        // A room in several shards mixes at one rate: the highest any shard needs.
        let here = formats.iter().map(|f| f.rate).max().unwrap_or(8000);
        let agreed = self
            .controls
            .get(&room)
            .map_or(here, |h| h.agree_rate(self.shard, here).max(here));
        self.counters.codec_errors += r.refresh_formats(&formats, agreed);
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
        let zrtp_required = self
            .settings
            .room_options
            .get(room)
            .is_some_and(|o| o.zrtp_required);
        if let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            if zrtp_required && !m.zrtp_secure {
                // The room takes only media no SIP hop could key: the caller hears why.
                m.phase = Phase::Leaving(Dismissal::NoZrtp);
                m.playback
                    .play_now(crate::room::prompts::Prompt::ZrtpRequired);
                return;
            }
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
        let shard = self.shard;
        let admitted = self
            .room_handle(room)
            .with_state(shard, &mut self.actions, |s| {
                let admitted = s.room.handle_join(now, call, role);
                if admitted {
                    s.place(call, shard);
                }
                admitted
            });
        if !admitted {
            self.run_room(room);
            return;
        }
        self.events.push_back(ConferenceEvent::Joined { call });
        let r = self.rooms.entry(room).or_insert_with(RoomMix::new);
        if !r.members.contains(&slot) {
            r.members.push(slot);
        }
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        m.phase = Phase::Joined(room);
        // A ZRTP caller hears its security code first (then the room's welcome).
        m.read_sas(now);
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
        let before = m.route();
        m.update_media(now, media, &self.settings, &mut self.counters);
        let room = m.phase_room();
        self.retrack(slot, before);
        self.encode_silence(slot);
        if let Some(room) = room {
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
                if m.confirm_sas(now, digit, self.settings.keys.sas_confirm()) {
                    return;
                }
                let shard = self.shard;
                self.room_handle(room)
                    .with_state(shard, &mut self.actions, |s| {
                        s.room.handle_key(now, call, digit)
                    });
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
        let before = m.route();
        let received = m.receive(now, self.ticks, source, packet, &mut self.counters);
        let (token, after) = (m.token, m.route());
        if before != after {
            self.retrack(slot, before);
        }
        if received.verified {
            self.events
                .push_back(ConferenceEvent::MediaVerified { call: token });
        }
        if let Some(digit) = received.digit {
            self.out_of_band_key(slot);
            self.on_digit(now, slot, digit);
        }
    }

    /// One received datagram on the shard's shared port (`rtp_ports = "single:PORT"`):
    /// routed to its member by source address (see `demux`), decrypted in place.
    pub fn handle_shared_rtp(&mut self, now: Instant, source: SocketAddr, packet: &mut [u8]) {
        let Some(demux) = self.demux.as_mut() else {
            return;
        };
        if let Some(slot) = demux.find(source) {
            self.handle_rtp(now, slot, source, packet);
            return;
        }
        if demux.unknown_budget == 0 || demux.waiting_count() == 0 {
            self.counters.foreign_source += 1;
            return;
        }
        demux.unknown_budget -= 1;
        // A waiting member this source may be: its SRTP keys authenticate the packet
        // (tried on a copy: a failed trial must leave the packet for the next), or it
        // is the only waiting plain member with this IP address (a NAT changed the port).
        let start = demux.rotation % demux.waiting_count();
        demux.rotation = demux.rotation.wrapping_add(1);
        let mut srtp = Vec::new();
        let mut same_ip = None;
        let mut same_ip_count = 0;
        for (i, (expected, slot)) in demux.waiting().enumerate() {
            let Some(m) = self.slots.get(slot).and_then(Option::as_ref) else {
                continue;
            };
            if m.has_srtp() {
                // Rotated, so that a source's repeated packets reach every member.
                srtp.push((
                    (i + demux.waiting_count() - start) % demux.waiting_count(),
                    slot,
                ));
            } else if expected.ip() == source.ip() {
                same_ip = Some(slot);
                same_ip_count += 1;
            }
        }
        srtp.sort_unstable();
        let rejected = self.counters.srtp_rejected;
        for &(_, slot) in srtp.iter().take(SRTP_TRIALS) {
            let len = packet.len().min(self.trial.len());
            let Some(trial) = self.trial.get_mut(..len) else {
                break;
            };
            trial.copy_from_slice(&packet[..len]);
            let mut trial = std::mem::take(&mut self.trial);
            self.handle_rtp(now, slot, source, &mut trial[..len]);
            trial[..len].fill(0);
            self.trial = trial;
            let latched = self
                .slots
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|m| m.route().latched == Some(source));
            if latched {
                // The failed trials before this one were not forgeries.
                self.counters.srtp_rejected = rejected;
                return;
            }
        }
        self.counters.srtp_rejected = rejected;
        match same_ip {
            Some(slot) if same_ip_count == 1 => self.handle_rtp(now, slot, source, packet),
            _ => self.counters.foreign_source += 1,
        }
    }

    /// Hands every packet written by the last tick to `send(slot, destination, bytes)`.
    pub fn drain_transmits(&mut self, mut send: impl FnMut(usize, SocketAddr, &[u8])) {
        for (slot, m) in self.slots.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else { continue };
            if !m.zrtp_out.is_empty() {
                if let Some(dest) = m.remote {
                    for packet in &m.zrtp_out {
                        send(slot, dest, packet);
                    }
                }
                m.zrtp_out.clear();
            }
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

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod control_tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod shared_port_tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod span_tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod zrtp_tests;
