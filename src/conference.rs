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
//! never on the per-tick path.

use crate::config::Codec;
use crate::media::codec::{Decoder, Encoder, EncoderKey, Format, Unheard, MAX_FRAME, MAX_PAYLOAD};
use crate::media::dtmf::{Digit, DtmfReceiver};
use crate::media::gate::{level_dbov, Voice, SILENCE_DBOV};
use crate::media::inband_dtmf::InbandDtmfDetector;
use crate::media::playout::{Playout, PlayoutBuffer};
use crate::media::resample::Resampler;
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

/// Rate of the prompts (espeak-ng output, resampled when loaded): 8 kHz.
pub const PROMPT_RATE: u32 = 8000;

/// Samples of a 20 ms prompt frame.
const PROMPT_FRAME: usize = PROMPT_RATE as usize / 50;

/// Largest RTP packet we write: header, the largest payload, an SRTP tag, and room to spare.
const MAX_PACKET: usize = 12 + MAX_PAYLOAD + 64;

/// How much louder (smoothed level, dB) a candidate must be than the quietest current
/// speaker to take its place: the hysteresis that keeps speakers from flapping.
const SWITCH_MARGIN_DB: f32 = 6.0;

/// Ticks a speaker keeps its place at least (400 ms) before a louder one may take it.
const MIN_SPEAKER_TICKS: u64 = 20;

/// Ticks an RFC 6464 level report stays good for: a packet or two may be late.
const LEVEL_FRESH_TICKS: u64 = 3;

/// How long packets from a caller's old media source are not latched after a
/// re-INVITE moved its media: longer than any jitter buffer holds a straggler.
const STALE_SOURCE_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// Index of a room in the config's room list.
pub type RoomKey = usize;

/// Shard settings.
#[derive(Debug, Clone, Copy)]
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
        }
    }
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
    /// The caller's fmtp parameters for it (Opus reads them).
    pub fmtp: Option<String>,
    /// Header extension ID of the caller's RFC 6464 audio levels, if it sends them.
    pub audio_level_id: Option<u8>,
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
    /// Whether keys are listened for as tones in the audio while the PIN is typed.
    pub inband_dtmf: InbandDtmf,
    /// Whether RFC 4733 events are taken as keys (a trunk may say its keys come
    /// another way; the packets are then dropped, never played as audio).
    pub rfc4733_keys: bool,
}

/// Listening for keys as tones in the audio (for gateways that send neither RFC 4733
/// events nor INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InbandDtmf {
    /// Keys come as RFC 4733 events or INFO only.
    #[default]
    Off,
    /// Keys come as tones.
    On,
    /// Tones until the caller sends a key out of band: many gateways send RFC 4733 or
    /// INFO *and* leave the tones in the audio, and one key must count once.
    UntilOutOfBand,
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
    /// The negotiated media could not be set up (unusable SRTP keys or codec).
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
}

enum Phase {
    Ivr(Box<Ivr>),
    Joined(RoomKey),
}

struct Playback {
    queue: VecDeque<Prompt>,
    current: Option<(Arc<[i16]>, usize)>,
}

/// An in-band DTMF detector at the format's decode rate, when wanted (every rate a
/// format decodes at is one the detector takes; `None` would only come from a bug).
fn inband_detector(wanted: bool, format: Format) -> Option<Box<InbandDtmfDetector>> {
    wanted
        .then(|| InbandDtmfDetector::new(format.rate).ok())
        .flatten()
        .map(Box::new)
}

/// A resampler between two supported rates (Format guarantees them); `None` would only
/// come from a bug, and then the member's audio is left out rather than the thread lost.
fn resampler(from: u32, to: u32) -> Option<Resampler> {
    Resampler::new(from, to).ok()
}

/// One caller's media state; it moves with the caller between shards.
pub struct Member {
    token: CallToken,
    format: Format,
    payload_type: u8,
    telephone_event: Option<u8>,
    remote: Option<SocketAddr>,
    latched: Option<(SocketAddr, u32)>,
    /// The media address the caller's last SDP named.
    sdp_remote: Option<SocketAddr>,
    /// After a re-INVITE moved the caller's media: its old source, whose packets still
    /// in flight must not win the new latch, and until when they are ignored.
    stale_source: Option<(SocketAddr, Instant)>,
    /// Whether signalling has been told that media arrived (once per call).
    media_verified: bool,
    /// SRTP: the keys, and the inbound and outbound contexts made from them.
    srtp: Option<(SrtpKeys, SrtpContext, SrtpContext)>,
    send: bool,
    receive: bool,
    sender: RtpSender,
    playout: PlayoutBuffer,
    /// The playout buffer's resync count when the decoder last started afresh.
    seen_resyncs: u64,
    decoder: Decoder,
    /// RFC 6464: the extension ID, the loudest level (-dBov) reported in the last
    /// packets and the tick it came in, and whether decoding is being skipped.
    level_id: Option<u8>,
    reported: Option<(u8, u64)>,
    skipping: bool,
    /// In-band DTMF detector at the member's decode rate, for callers whose keys come
    /// as tones; fed while the PIN is typed.
    inband: Option<Box<InbandDtmfDetector>>,
    /// Whether a key out of band (RFC 4733, INFO) switches the detector off.
    inband_until_out_of_band: bool,
    /// Whether RFC 4733 events count as keys.
    rfc4733_keys: bool,
    /// Own encoder: prompts, and the mix minus own while speaking.
    encoder: Encoder,
    dtmf: DtmfReceiver,
    last_rx: Instant,
    timed_out: bool,
    phase: Phase,
    playback: Playback,
    /// Prompts (8 kHz) to the member's rate.
    prompt_up: Option<Resampler>,
    /// The member's rate to its room's (speakers only), and back.
    up: Option<Resampler>,
    down: Option<Resampler>,
    voice: Voice,
    /// This tick's decoded frame at the member's rate.
    native: Box<[i16]>,
    /// The same frame at the room's rate (speakers only).
    mixed: Box<[i16]>,
    /// What the member hears this tick at its rate, when it needs its own encode.
    out: Box<[i16]>,
    has_audio: bool,
    /// No packet went out last tick: the next one starts a talk-spurt (marker bit).
    paused: bool,
    packet: Box<[u8]>,
    packet_len: usize,
}

impl Member {
    /// The call this member belongs to.
    pub fn token(&self) -> CallToken {
        self.token
    }

    /// Wipes the per-tick audio (frames and the last packet) and the digit state.
    fn wipe(&mut self) {
        self.native.zeroize();
        self.mixed.zeroize();
        self.out.zeroize();
        self.packet.zeroize();
        self.dtmf.reset();
    }

    fn phase_room(&self) -> Option<RoomKey> {
        match self.phase {
            Phase::Joined(r) => Some(r),
            Phase::Ivr(_) => None,
        }
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
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A playout buffer for a member speaking `format`.
fn playout_for(settings: &ConferenceSettings, format: Format) -> PlayoutBuffer {
    PlayoutBuffer::new(
        format.codec.clock_rate(),
        format.rate,
        format.frame_samples(),
        settings.jitter_min,
        settings.jitter_max,
    )
}

/// Builds the inbound and outbound contexts for a call's keys.
fn srtp_contexts(keys: SrtpKeys) -> Option<(SrtpKeys, SrtpContext, SrtpContext)> {
    let inbound = SrtpContext::inbound_for(&keys.remote).ok()?;
    let outbound = SrtpContext::outbound_for(&keys.local).ok()?;
    Some((keys, inbound, outbound))
}

/// The room's one encode of the full mix for all listeners of one format.
struct SharedEncode {
    key: EncoderKey,
    encoder: Encoder,
    /// Room rate to the format's rate.
    down: Option<Resampler>,
    pcm: Box<[i16]>,
    payload: Box<[u8]>,
    len: usize,
    /// Encoded this tick.
    ready: bool,
    /// Encoded last tick: if not, the resampler's and encoder's history is stale.
    fresh: bool,
}

impl SharedEncode {
    fn new(key: EncoderKey, room_rate: u32) -> Option<SharedEncode> {
        Some(SharedEncode {
            key,
            encoder: Encoder::new(key).ok()?,
            down: resampler(room_rate, key.rate),
            pcm: vec![0; MAX_FRAME].into_boxed_slice(),
            payload: vec![0; MAX_PAYLOAD].into_boxed_slice(),
            len: 0,
            ready: false,
            fresh: false,
        })
    }

    fn wipe(&mut self) {
        self.pcm.zeroize();
        self.payload.zeroize();
        self.encoder.reset();
    }
}

impl Drop for SharedEncode {
    fn drop(&mut self) {
        // The room's mix and its encode are everyone's voice (architecture §5).
        self.wipe();
    }
}

struct Room {
    members: Vec<usize>,
    /// Mixing rate: the highest any member needs.
    rate: u32,
    /// Slots of the members mixed this tick.
    speakers: Vec<usize>,
    /// The full mix of this tick at the room's rate.
    full: Box<[i16]>,
    shared: Vec<SharedEncode>,
}

impl Room {
    fn wipe(&mut self) {
        self.full.zeroize();
        for s in &mut self.shared {
            s.wipe();
        }
    }

    fn frame(&self) -> usize {
        self.rate as usize / 50
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.wipe();
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

fn mixer_index(rate: u32) -> usize {
    match rate {
        0..=8000 => 0,
        8001..=16_000 => 1,
        _ => 2,
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
        let format = Format::new(media.codec, media.fmtp.as_deref());
        let srtp = match media.srtp {
            Some(keys) => Some(srtp_contexts(keys)?),
            None => None,
        };
        let member = Member {
            token: call,
            format,
            payload_type: media.payload_type,
            telephone_event: media.telephone_event,
            remote: media.remote,
            latched: None,
            sdp_remote: media.remote,
            stale_source: None,
            media_verified: false,
            srtp,
            send: media.send,
            receive: media.receive,
            sender: RtpSender::new(seed.ssrc, seed.sequence, seed.timestamp, media.payload_type),
            playout: playout_for(&self.settings, format),
            seen_resyncs: 0,
            decoder: Decoder::new(format).ok()?,
            level_id: media.audio_level_id,
            reported: None,
            skipping: false,
            inband: inband_detector(media.inband_dtmf != InbandDtmf::Off, format),
            inband_until_out_of_band: media.inband_dtmf == InbandDtmf::UntilOutOfBand,
            rfc4733_keys: media.rfc4733_keys,
            encoder: Encoder::new(format).ok()?,
            dtmf: DtmfReceiver::new(),
            last_rx: now,
            timed_out: false,
            phase: Phase::Ivr(Box::new(Ivr::new(self.settings.ivr))),
            playback: Playback {
                queue: VecDeque::with_capacity(4),
                current: None,
            },
            prompt_up: resampler(PROMPT_RATE, format.rate),
            up: None,
            down: None,
            voice: Voice::new(),
            native: vec![0; MAX_FRAME].into_boxed_slice(),
            mixed: vec![0; MAX_FRAME].into_boxed_slice(),
            out: vec![0; MAX_FRAME].into_boxed_slice(),
            has_audio: false,
            paused: false,
            packet: vec![0; MAX_PACKET].into_boxed_slice(),
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
        let mut member = self.slots.get_mut(slot)?.take()?;
        if let Phase::Joined(room) = member.phase {
            self.leave_room(room, slot);
        }
        member.voice = Voice::new();
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
        let members: Vec<usize> = r.members.clone();
        let formats: Vec<Format> = members
            .iter()
            .filter_map(|&s| self.slots.get(s)?.as_ref().map(|m| m.format))
            .collect();
        let rate = formats.iter().map(|f| f.rate).max().unwrap_or(8000);
        let rate_changed = rate != r.rate;
        r.rate = rate;
        if rate_changed {
            // Only the conversion depends on the room's rate: the encoders stay, so
            // the listeners' decoders see no new stream.
            r.full.zeroize();
            for s in &mut r.shared {
                s.down = resampler(rate, s.key.rate);
                s.fresh = false;
                if s.down.is_none() {
                    self.counters.codec_errors += 1;
                }
            }
        }
        // Dropping a SharedEncode wipes it.
        r.shared.retain(|s| formats.contains(&s.key));
        for f in &formats {
            if !r.shared.iter().any(|s| s.key == *f) {
                match SharedEncode::new(*f, rate) {
                    Some(s) => r.shared.push(s),
                    None => self.counters.codec_errors += 1,
                }
            }
        }
        // Speaker selection must not allocate on the tick: room for every member here.
        self.candidates.clear();
        self.candidates.reserve(members.len());
        for s in members {
            if let Some(m) = self.slots.get_mut(s).and_then(Option::as_mut) {
                let stale = m.up.as_ref().is_none_or(|u| u.to_hz() != rate)
                    || m.up.as_ref().is_none_or(|u| u.from_hz() != m.format.rate);
                if stale {
                    m.up = resampler(m.format.rate, rate);
                    m.down = resampler(rate, m.format.rate);
                    if m.up.is_none() || m.down.is_none() {
                        self.counters.codec_errors += 1;
                    }
                }
            }
        }
    }

    /// The PIN was right and the room lives here: the member joins it.
    pub fn join(&mut self, _now: Instant, call: CallToken, room: RoomKey) {
        let Some(&slot) = self.by_token.get(&call) else {
            return;
        };
        let previous = self
            .slots
            .get(slot)
            .and_then(Option::as_ref)
            .and_then(Member::phase_room);
        if let Some(old) = previous.filter(|&old| old != room) {
            self.leave_room(old, slot);
        }
        let alone = self.rooms.get(&room).is_none_or(|r| r.members.is_empty());
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            members: Vec::new(),
            rate: 0,
            speakers: Vec::new(),
            full: vec![0; MAX_FRAME].into_boxed_slice(),
            shared: Vec::new(),
        });
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
        m.playback.current = None;
        m.playback.queue.clear();
        m.playback.queue.push_back(Prompt::JoinTone);
        if alone {
            m.playback.queue.push_back(Prompt::FirstParticipant);
        }
        self.refresh_room(room);
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
    ///
    /// An offer without keys while the call has SRTP keeps the contexts: signalling
    /// refuses such a downgrade (488) before it gets here.
    pub fn update_media(&mut self, now: Instant, call: CallToken, media: MediaParams) -> bool {
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
        let format = Format::new(media.codec, media.fmtp.as_deref());
        let Some(&slot) = self.by_token.get(&call) else {
            return false;
        };
        let settings = self.settings;
        let Some(m) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        let mut usable = true;
        if format != m.format {
            match (Decoder::new(format), Encoder::new(format)) {
                (Ok(decoder), Ok(encoder)) => {
                    if format.codec.clock_rate() != m.format.codec.clock_rate() {
                        // Another RTP clock on the same SSRC: tell the far end's
                        // jitter buffer that the timeline starts anew.
                        m.sender.mark_talkspurt();
                    }
                    m.format = format;
                    m.decoder = decoder;
                    m.encoder = encoder;
                    m.playout = playout_for(&settings, format);
                    m.seen_resyncs = 0;
                    m.prompt_up = resampler(PROMPT_RATE, format.rate);
                    m.up = None;
                    m.down = None;
                    m.inband = inband_detector(m.inband.is_some(), format);
                }
                _ => {
                    usable = false;
                    self.counters.codec_errors += 1;
                }
            }
        }
        m.payload_type = media.payload_type;
        m.sender.set_payload_type(media.payload_type);
        m.telephone_event = media.telephone_event;
        m.level_id = media.audio_level_id;
        m.reported = None;
        if media.remote != m.sdp_remote {
            // The caller moved its media (transfer, another device, unhold to a new
            // port): latch afresh on what comes next, but not on stragglers from the
            // old source.
            if let Some((old, _)) = m.latched.take() {
                m.stale_source = Some((old, now + STALE_SOURCE_HOLD));
            }
            m.sdp_remote = media.remote;
            m.remote = media.remote;
        } else if m.latched.is_none() {
            m.remote = media.remote;
        }
        m.send = media.send && usable;
        m.receive = media.receive && usable;
        match new_srtp {
            Some(Some(contexts)) => m.srtp = Some(contexts),
            // Keys that cannot be used: stop the media rather than fall back to plain.
            Some(None) => {
                m.send = false;
                m.receive = false;
            }
            None => {}
        }
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
        if let Phase::Ivr(ivr) = &mut m.phase {
            ivr.handle_digit(now, digit);
            self.run_ivr(now, slot);
        }
        // Digits in the room are for in-call controls (not yet built).
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
        if let Some((old, until)) = m.stale_source {
            if now >= until {
                m.stale_source = None;
            } else if m.latched.is_none() && source == old {
                self.counters.foreign_source += 1;
                return;
            }
        }
        match m.latched {
            None => {
                // Symmetric RTP (RFC 4961): answer where the packets really come from.
                m.latched = Some((source, header.ssrc));
                m.remote = Some(source);
                if !m.media_verified {
                    m.media_verified = true;
                    self.events
                        .push_back(ConferenceEvent::MediaVerified { call: m.token });
                }
            }
            Some((addr, _)) if addr != source => {
                self.counters.foreign_source += 1;
                return;
            }
            Some((_, ssrc)) if ssrc != header.ssrc => {
                // Same source, another SSRC: a phone restarting its sender, or digits
                // on their own SSRC, or a straggler of the old stream. The playout
                // buffer decides whether the audio stream really changed (the codec
                // starts afresh when it resynchronises, below); digits are told apart
                // by their timestamps whatever the SSRC, so one receiver serves.
                m.latched = Some((source, header.ssrc));
            }
            Some(_) => {}
        }
        m.last_rx = now;
        if Some(header.payload_type) == m.telephone_event {
            if !m.rfc4733_keys {
                return;
            }
            match m.dtmf.handle_packet(header.timestamp, payload) {
                Ok(Some(digit)) => {
                    self.out_of_band_key(slot);
                    self.on_digit(now, slot, digit)
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
        // Audio is buffered for the mix, and before that only where keys are listened
        // for in it.
        let listening = matches!(m.phase, Phase::Ivr(_)) && m.inband.is_some();
        if !m.receive || !(matches!(m.phase, Phase::Joined(_)) || listening) {
            return;
        }
        if let Some(id) = m.level_id {
            if let Some(level) = rtp::audio_level(&packet[..len], id) {
                // The loudest of this tick's packets (a smaller -dBov is louder).
                let tick = self.ticks;
                m.reported = Some(match m.reported {
                    Some((previous, t)) if t == tick => (previous.min(level.minus_dbov), tick),
                    _ => (level.minus_dbov, tick),
                });
            }
        }
        m.playout.push(
            now,
            header.sequence,
            header.timestamp,
            header.ssrc,
            header.marker,
            payload,
        );
        if m.playout.resyncs() != m.seen_resyncs {
            // A new stream (SSRC, timestamp jump): the decoder's history is the old one's.
            m.seen_resyncs = m.playout.resyncs();
            m.decoder.reset();
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
        for m in self.slots.iter_mut().flatten() {
            m.has_audio = false;
            if !(matches!(m.phase, Phase::Joined(_)) && m.receive) {
                continue;
            }
            let n = m.format.frame_samples();
            let reported = m
                .reported
                .filter(|&(_, t)| ticks.saturating_sub(t) <= LEVEL_FRESH_TICKS)
                .map(|(minus_dbov, _)| -f32::from(minus_dbov));
            let quiet = reported.filter(|&db| !m.voice.speaking && db <= gate);
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
            let db = match (quiet, m.has_audio) {
                (Some(db), true) => db,
                (None, true) => level_dbov(&m.native[..n]),
                (_, false) => SILENCE_DBOV,
            };
            m.voice.update(db, gate, auto_gain);
        }
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
            for s in &mut room.shared {
                s.fresh = s.ready;
                s.ready = false;
            }
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
            let (prompting, prompt_done) = play_prompt(prompts, m);
            if prompt_done {
                finished.push(slot);
            }
            let step = m.format.timestamp_step();
            if !m.send || m.remote.is_none() {
                m.sender.skip(step);
                m.paused = true;
                continue;
            }
            let room = if prompting { None } else { m.phase_room() };
            let shared = match room {
                Some(r) if !m.voice.speaking => rooms
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
                    if !prompting && !m.voice.speaking {
                        // In the IVR between prompts, or a listener whose shared encode
                        // failed: silence, never the last frame again.
                        m.out[..n].fill(0);
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

/// Keeps the room's speakers: those whose gate closed leave; free places go to the
/// loudest candidates; a full set changes only for a candidate clearly louder than a
/// speaker who has held its place for a while (hysteresis against flapping).
fn select_speakers(
    room: &mut Room,
    slots: &mut [Option<Member>],
    candidates: &mut Vec<usize>,
    max_speakers: usize,
    tick: u64,
) {
    let voice = |slots: &[Option<Member>], s: usize| {
        slots
            .get(s)
            .and_then(Option::as_ref)
            .filter(|m| m.receive)
            .map(|m| m.voice)
    };
    let dropped = |slots: &mut [Option<Member>], s: usize| {
        if let Some(m) = slots.get_mut(s).and_then(Option::as_mut) {
            m.voice.speaking = false;
        }
    };
    let mut i = 0;
    while i < room.speakers.len() {
        let s = room.speakers[i];
        if voice(slots, s).is_some_and(|v| v.audible()) {
            i += 1;
        } else {
            room.speakers.swap_remove(i);
            dropped(slots, s);
        }
    }
    candidates.clear();
    for &s in &room.members {
        if let Some(v) = voice(slots, s) {
            if v.audible() && !v.speaking {
                candidates.push(s);
            }
        }
    }
    let level =
        |slots: &[Option<Member>], s: usize| voice(slots, s).map_or(SILENCE_DBOV, |v| v.level_db);
    // Unstable: no allocation (a stable sort buffers beyond 20 elements).
    candidates.sort_unstable_by(|&a, &b| level(slots, b).total_cmp(&level(slots, a)));
    for &c in candidates.iter() {
        let place = if room.speakers.len() < max_speakers {
            Some(room.speakers.len())
        } else {
            // The quietest speaker that has held its place long enough.
            room.speakers
                .iter()
                .enumerate()
                .filter(|(_, &s)| {
                    voice(slots, s)
                        .is_some_and(|v| tick.saturating_sub(v.since) >= MIN_SPEAKER_TICKS)
                })
                .min_by(|(_, &a), (_, &b)| level(slots, a).total_cmp(&level(slots, b)))
                .filter(|(_, &s)| level(slots, c) > level(slots, s) + SWITCH_MARGIN_DB)
                .map(|(i, _)| i)
        };
        let Some(place) = place else {
            // Candidates are sorted: a quieter one will not do better.
            break;
        };
        if place < room.speakers.len() {
            let old = room.speakers[place];
            dropped(slots, old);
            room.speakers[place] = c;
        } else {
            room.speakers.push(c);
        }
        if let Some(m) = slots.get_mut(c).and_then(Option::as_mut) {
            m.voice.speaking = true;
            m.voice.since = tick;
            // The conversions' history is from before: start them clean.
            if let Some(up) = m.up.as_mut() {
                up.reset();
            }
            if let Some(down) = m.down.as_mut() {
                down.reset();
            }
        }
    }
}

/// The room's encode of its full mix for listeners of `format`, made on first use in
/// a tick.
fn shared_encode<'a>(
    room: &'a mut Room,
    format: Format,
    counters: &mut MediaCounters,
) -> Option<&'a [u8]> {
    let n_room = room.frame();
    let shared = room.shared.iter_mut().find(|s| s.key == format)?;
    if !shared.ready {
        if !shared.fresh {
            // Not used last tick: its history belongs to another moment.
            if let Some(down) = shared.down.as_mut() {
                down.reset();
            }
        }
        let n = format.frame_samples();
        let converted = match shared.down.as_mut() {
            Some(down) => down.process(&room.full[..n_room], &mut shared.pcm[..n]),
            None => 0,
        };
        shared.pcm[converted..n].fill(0);
        counters.encoder_runs += 1;
        shared.len = match shared.encoder.encode(&shared.pcm[..n], &mut shared.payload) {
            Ok(len) => len,
            Err(_) => {
                counters.codec_errors += 1;
                0
            }
        };
        shared.ready = true;
    }
    if shared.len == 0 {
        return None;
    }
    Some(&shared.payload[..shared.len])
}

/// Fills `m.out` from the prompt queue at the member's rate. Returns whether a prompt
/// is playing this tick, and whether the last one ended this tick.
fn play_prompt(prompts: &Prompts, m: &mut Member) -> (bool, bool) {
    if m.playback.current.is_none() {
        if let Some(next) = m.playback.queue.pop_front() {
            m.playback.current = Some((prompts.get(next).clone(), 0));
            if let Some(up) = m.prompt_up.as_mut() {
                up.reset();
            }
        }
    }
    let Some((audio, pos)) = m.playback.current.as_mut() else {
        return (false, false);
    };
    let mut frame = [0i16; PROMPT_FRAME];
    let end = (*pos + PROMPT_FRAME).min(audio.len());
    let k = end - *pos;
    frame[..k].copy_from_slice(&audio[*pos..end]);
    *pos = end;
    let n = m.format.frame_samples();
    let converted = match m.prompt_up.as_mut() {
        Some(up) => up.process(&frame, &mut m.out[..n]),
        None => 0,
    };
    m.out[converted..n].fill(0);
    if *pos >= audio.len() {
        m.playback.current = None;
        return (true, m.playback.queue.is_empty());
    }
    (true, false)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;
    use crate::media::g711::{ulaw_decode, ulaw_encode};
    use std::f64::consts::PI;

    const TICK: Duration = Duration::from_millis(20);
    const FRAME_SAMPLES: usize = 160;

    fn settings() -> ConferenceSettings {
        ConferenceSettings {
            rtp_timeout: Duration::from_secs(2),
            ..ConferenceSettings::default()
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
            fmtp: None,
            audio_level_id: None,
            payload_type: 0,
            telephone_event: Some(101),
            remote: Some(addr(n)),
            send: true,
            receive: true,
            srtp: None,
            inband_dtmf: InbandDtmf::Off,
            rfc4733_keys: true,
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

    /// 20 ms µ-law frames of the DTMF keys in `keys` (70 ms tone, 70 ms pause, each
    /// tone at about -10 dBm0), with low noise, after `lead` silent frames.
    fn tone_frames(keys: &str, lead: usize) -> Vec<[u8; FRAME_SAMPLES]> {
        let freqs = |k: char| -> (f64, f64) {
            let rows = [697.0, 770.0, 852.0, 941.0];
            let cols = [1209.0, 1336.0, 1477.0, 1633.0];
            let (r, c) = match k {
                '1' => (0, 0),
                '2' => (0, 1),
                '3' => (0, 2),
                '4' => (1, 0),
                '5' => (1, 1),
                '6' => (1, 2),
                '7' => (2, 0),
                '8' => (2, 1),
                '9' => (2, 2),
                '*' => (3, 0),
                '0' => (3, 1),
                _ => (3, 2),
            };
            (rows[r], cols[c])
        };
        let mut pcm = vec![0i16; lead * FRAME_SAMPLES];
        let mut noise = 0x2545_f491u32;
        for k in keys.chars() {
            let (f1, f2) = freqs(k);
            for n in 0..1120 {
                let t = n as f64 / 8000.0;
                let on = n < 560;
                let tone = if on {
                    5000.0 * ((2.0 * PI * f1 * t).sin() + (2.0 * PI * f2 * t).sin())
                } else {
                    0.0
                };
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                let hiss = f64::from((noise >> 24) as u8) - 128.0;
                pcm.push((tone + hiss) as i16);
            }
        }
        pcm.resize(
            pcm.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES + 10 * FRAME_SAMPLES,
            0,
        );
        pcm.chunks(FRAME_SAMPLES)
            .map(|c| {
                let mut f = [0u8; FRAME_SAMPLES];
                for (o, &x) in f.iter_mut().zip(c) {
                    *o = ulaw_encode(x);
                }
                f
            })
            .collect()
    }

    /// Plays `frames` as RTP into `slot` from `from`, one per tick, with the ticks.
    fn play(
        conf: &mut Conference,
        slot: usize,
        from: u8,
        frames: &[[u8; FRAME_SAMPLES]],
        t0: Instant,
    ) {
        let mut sender = RtpSender::new(4242, 1, 8000, 0);
        let mut now = t0;
        for f in frames {
            now += TICK;
            let mut buf = [0u8; 256];
            let n = sender.write(f, FRAME_SAMPLES as u32, &mut buf).unwrap();
            conf.handle_rtp(now, slot, addr(from), &mut buf[..n]);
            conf.handle_tick(now);
            conf.drain_transmits(|_, _, _| {});
        }
    }

    fn pin_attempts(conf: &mut Conference) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| conf.poll_event())
            .filter_map(|e| match e {
                ConferenceEvent::PinEntered { attempt, .. } => Some(attempt.0.to_vec()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_pin_typed_as_tones_is_heard_where_the_trunk_says_so() {
        let t0 = Instant::now();
        let frames = tone_frames("31415926#", 10);
        // Keys as tones: the PIN is read from the audio.
        let mut conf = Conference::new(settings(), prompts());
        let slot = conf
            .add_member(
                t0,
                CallToken::from_raw(21),
                MediaParams {
                    inband_dtmf: InbandDtmf::On,
                    ..media(1)
                },
                seed(1),
            )
            .unwrap();
        play(&mut conf, slot, 1, &frames, t0);
        assert_eq!(pin_attempts(&mut conf), [b"31415926".to_vec()]);
        assert_eq!(conf.counters().inband_digits, 9);
        // Without: the same audio types nothing.
        let mut conf = Conference::new(settings(), prompts());
        let slot = conf
            .add_member(t0, CallToken::from_raw(22), media(1), seed(1))
            .unwrap();
        play(&mut conf, slot, 1, &frames, t0);
        assert!(pin_attempts(&mut conf).is_empty());
        assert_eq!(conf.counters().digits, 0);
    }

    #[test]
    fn a_key_out_of_band_stops_the_tone_listener_where_it_was_only_a_fallback() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let call = CallToken::from_raw(23);
        let slot = conf
            .add_member(
                t0,
                call,
                MediaParams {
                    inband_dtmf: InbandDtmf::UntilOutOfBand,
                    ..media(1)
                },
                seed(1),
            )
            .unwrap();
        // One key by INFO: from then on the tones in the audio are not keys.
        conf.handle_digit(t0, call, Digit::from_event(7).unwrap());
        play(&mut conf, slot, 1, &tone_frames("123#", 5), t0);
        conf.handle_digit(t0 + TICK * 100, call, Digit::from_event(11).unwrap());
        assert_eq!(pin_attempts(&mut conf), [b"7".to_vec()]);
        assert_eq!(conf.counters().inband_digits, 0);
    }

    #[test]
    fn rfc_4733_events_are_ignored_where_the_trunk_says_keys_come_otherwise() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let slot = conf
            .add_member(
                t0,
                CallToken::from_raw(24),
                MediaParams {
                    rfc4733_keys: false,
                    ..media(1)
                },
                seed(1),
            )
            .unwrap();
        let mut tx = Tx::new(1);
        let mut now = t0;
        for ev in [1u8, 11] {
            for pkt in tx.digit(ev) {
                conf.handle_rtp(now, slot, addr(1), &mut pkt.clone());
            }
            now += TICK;
            conf.handle_tick(now);
        }
        assert!(pin_attempts(&mut conf).is_empty());
        assert_eq!(conf.counters().digits, 0);
    }

    #[test]
    fn a_reinvite_to_a_new_address_moves_the_latch_and_the_audio_keeps_flowing() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let (a, b) = (CallToken::from_raw(31), CallToken::from_raw(32));
        let sa = conf.add_member(t0, a, media(1), seed(1)).unwrap();
        conf.add_member(t0, b, media(2), seed(2)).unwrap();
        conf.join(t0, a, 0);
        conf.join(t0, b, 0);
        let level = ulaw_decode(ulaw_encode(4000));
        let mut tx = Tx::new(1);
        let mut now = t0;
        // Heard by b: packets of a's level; sent to: where a's packets go.
        let mut run = |conf: &mut Conference, now: &mut Instant, from: &[u8], ticks: usize| {
            let (mut heard, mut to_a) = (0, Vec::new());
            for _ in 0..ticks {
                *now += TICK;
                for &f in from {
                    conf.handle_rtp(*now, sa, addr(f), &mut tx.audio(4000));
                }
                conf.handle_tick(*now);
                conf.drain_transmits(|_, dest, bytes| {
                    if dest == addr(2) {
                        if let Ok((_, p)) = rtp::parse(bytes) {
                            if p.iter().all(|&c| ulaw_decode(c) == level) {
                                heard += 1;
                            }
                        }
                    } else if dest != addr(2) {
                        to_a.push(dest);
                    }
                });
            }
            (heard, to_a)
        };
        let (heard, _) = run(&mut conf, &mut now, &[1], 30);
        assert!(heard > 15, "b hears a before the move ({heard})");
        // a's phone moves to a new port (transfer, unhold elsewhere): re-INVITE.
        assert!(conf.update_media(now, a, media(7)));
        // Stragglers from the old port arrive first: they must not win the latch.
        let (_, _) = run(&mut conf, &mut now, &[1], 2);
        let (heard, to_a) = run(&mut conf, &mut now, &[7], 40);
        assert!(heard > 25, "b stopped hearing a after the move ({heard})");
        assert!(
            to_a.iter().skip(5).all(|&d| d == addr(7)),
            "a's audio goes to the old port"
        );
        // The old port is now foreign.
        let before = conf.counters().foreign_source;
        run(&mut conf, &mut now, &[1], 1);
        assert_eq!(conf.counters().foreign_source, before + 1);
    }

    #[test]
    fn keys_from_sip_info_type_the_pin_like_rfc_4733_events() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let call = CallToken::from_raw(11);
        conf.add_member(t0, call, media(1), seed(1)).unwrap();
        let mut now = t0;
        for ev in [4u8, 2, 11] {
            now += TICK;
            conf.handle_digit(now, call, Digit::from_event(ev).unwrap());
            conf.handle_tick(now);
        }
        // An unknown call's key is ignored.
        conf.handle_digit(now, CallToken::from_raw(99), Digit::from_event(1).unwrap());
        let Some(ConferenceEvent::PinEntered { call: c, attempt }) = conf.poll_event() else {
            panic!("no PIN attempt");
        };
        assert_eq!(c, call);
        assert_eq!(&attempt.0[..], b"42");
        assert_eq!(conf.counters().digits, 3);
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
        // The first packet latched the caller: signalling hears of it once.
        let Some(ConferenceEvent::MediaVerified { call: c }) = conf.poll_event() else {
            panic!("no media verification");
        };
        assert_eq!(c, call);
        let Some(ConferenceEvent::PinEntered { call: c, attempt }) = conf.poll_event() else {
            panic!("no PIN attempt");
        };
        assert_eq!(c, call);
        assert!(conf.poll_event().is_none(), "media verified once");
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
            if i == 0 {
                // A forged packet verifies nothing at signalling.
                assert!(conf.poll_event().is_none());
            }
            conf.handle_rtp(now, sa, addr(1), &mut good.clone());
            if i == 0 {
                assert!(matches!(
                    conf.poll_event(),
                    Some(ConferenceEvent::MediaVerified { call }) if call == a
                ));
            }
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

    // ---- multi-codec rooms, speaker selection, shared encodes ----

    use crate::media::codec::{Decoder, Encoder, Format};
    use crate::media::playout::FrameDecoder;

    /// A phone of any codec: encodes PCM frames at its rate into RTP.
    struct CodecPhone {
        format: Format,
        pt: u8,
        encoder: Encoder,
        decoder: Decoder,
        sender: RtpSender,
        phase: f64,
        heard: Vec<i16>,
    }

    impl CodecPhone {
        fn new(n: u8, codec: Codec) -> CodecPhone {
            let format = Format::new(codec, None);
            let pt = match codec {
                Codec::Opus => 111,
                c => c.payload_type().unwrap(),
            };
            CodecPhone {
                format,
                pt,
                encoder: Encoder::new(format).unwrap(),
                decoder: Decoder::new(format).unwrap(),
                sender: RtpSender::new(500 + n as u32, 1, 0, pt),
                phase: 0.0,
                heard: Vec::new(),
            }
        }

        fn params(&self, n: u8) -> MediaParams {
            MediaParams {
                codec: self.format.codec,
                fmtp: None,
                payload_type: self.pt,
                telephone_event: Some(101),
                ..media(n)
            }
        }

        /// One 20 ms packet of a tone (`amplitude` 0 for digital silence).
        fn tone(&mut self, hz: f64, amplitude: f64) -> Vec<u8> {
            let n = self.format.frame_samples();
            let rate = self.format.rate as f64;
            let pcm: Vec<i16> = (0..n)
                .map(|i| {
                    let t = self.phase + i as f64 / rate;
                    (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            self.phase += n as f64 / rate;
            let mut payload = [0u8; MAX_PAYLOAD];
            let len = self.encoder.encode(&pcm, &mut payload).unwrap();
            let mut out = [0u8; MAX_PACKET];
            let n = self
                .sender
                .write(&payload[..len], self.format.timestamp_step(), &mut out)
                .unwrap();
            out[..n].to_vec()
        }

        fn receive(&mut self, packet: &[u8]) {
            let (h, payload) = rtp::parse(packet).unwrap();
            assert_eq!(h.payload_type, self.pt);
            let mut out = Vec::with_capacity(MAX_FRAME);
            self.decoder.decode(payload, &mut out).unwrap();
            assert_eq!(out.len(), self.format.frame_samples(), "20 ms per packet");
            self.heard.extend_from_slice(&out);
        }
    }

    /// Share of the power of `x` at `hz` (one DFT bin, Goertzel), 0..1.
    fn share(x: &[i16], hz: f64, rate: u32) -> f64 {
        let n = x.len() as f64;
        let k = (n * hz / rate as f64).round();
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * k / n).cos();
        let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
        for &v in x {
            let v = v as f64;
            energy += v * v;
            let s0 = v + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        if energy == 0.0 {
            return 0.0;
        }
        ((s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / (n * energy)).min(1.0)
    }

    #[test]
    fn g711_g722_and_opus_members_share_a_48_khz_room_and_hear_each_other() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let codecs = [Codec::Pcmu, Codec::G722, Codec::Opus];
        // Tones each codec carries well, on exact 1 s DFT bins.
        let tones = [500.0, 1300.0, 2300.0];
        let mut phones: Vec<CodecPhone> = (0..3)
            .map(|i| CodecPhone::new(i as u8 + 1, codecs[i]))
            .collect();
        let calls: Vec<CallToken> = (1..=3).map(CallToken::from_raw).collect();
        let mut slots = Vec::new();
        for i in 0..3 {
            let params = phones[i].params(i as u8 + 1);
            slots.push(
                conf.add_member(t0, calls[i], params, seed(i as u8))
                    .unwrap(),
            );
            conf.join(t0, calls[i], 4);
        }
        assert_eq!(conf.room_rate(4), 48_000, "Opus makes the room fullband");
        let mut now = t0;
        for _ in 0..150 {
            now += TICK;
            for i in 0..3 {
                let mut pkt = phones[i].tone(tones[i], 6000.0);
                conf.handle_rtp(now, slots[i], addr(i as u8 + 1), &mut pkt);
            }
            conf.handle_tick(now);
            let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
            conf.drain_transmits(|_, dest, bytes| out.push((dest, bytes.to_vec())));
            for (dest, bytes) in out {
                let i = (0..3).find(|&i| addr(i as u8 + 1) == dest).unwrap();
                phones[i].receive(&bytes);
            }
        }
        assert_eq!(conf.speakers(4), 3);
        for (i, phone) in phones.iter().enumerate() {
            let rate = phone.format.rate;
            // The last second.
            let last = &phone.heard[phone.heard.len() - rate as usize..];
            let others: f64 = (0..3)
                .filter(|&j| j != i)
                .map(|j| share(last, tones[j], rate))
                .sum();
            let own = share(last, tones[i], rate);
            assert!(
                others > 0.8,
                "{:?} member hears the others at {others:.2} of its power",
                codecs[i]
            );
            assert!(own < 0.01, "{:?} member hears itself ({own:.3})", codecs[i]);
            for j in (0..3).filter(|&j| j != i) {
                let s = share(last, tones[j], rate);
                assert!(
                    s > 0.3,
                    "{:?} hears {:?} only at {s:.2}",
                    codecs[i],
                    codecs[j]
                );
            }
        }
    }

    #[test]
    fn encoder_runs_per_tick_are_bounded_by_speakers_and_formats_not_room_size() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let codecs = [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus];
        let mut phones = Vec::new();
        let mut slots = Vec::new();
        for n in 0..60u8 {
            let phone = CodecPhone::new(n, codecs[n as usize % 4]);
            let call = CallToken::from_raw(100 + n as u64);
            let mut params = phone.params(n);
            params.remote = Some(SocketAddr::new(addr(1).ip(), 20_000 + n as u16));
            slots.push(conf.add_member(t0, call, params, seed(n)).unwrap());
            conf.join(t0, call, 1);
            phones.push(phone);
        }
        // Five talk (more than max_speakers), the other 55 listen.
        let mut now = t0;
        let mut runs = Vec::new();
        for tick in 0..80 {
            now += TICK;
            for (i, phone) in phones.iter_mut().enumerate() {
                let amplitude = if i < 5 {
                    3000.0 + 1000.0 * i as f64
                } else {
                    0.0
                };
                let mut pkt = phone.tone(300.0 + 100.0 * i as f64, amplitude);
                let source = SocketAddr::new(addr(1).ip(), 20_000 + i as u16);
                conf.handle_rtp(now, slots[i], source, &mut pkt);
            }
            let before = conf.counters().encoder_runs;
            conf.handle_tick(now);
            conf.drain_transmits(|_, _, _| {});
            if tick >= 40 {
                runs.push(conf.counters().encoder_runs - before);
            }
        }
        let speakers = conf.speakers(1);
        assert_eq!(speakers, 3);
        let bound = (speakers as u64 + 1) * codecs.len() as u64;
        // Exactly: each speaker's own encode, and one shared encode per listener format.
        assert!(runs.iter().all(|&r| r == speakers as u64 + 4), "{runs:?}");
        assert!(runs.iter().all(|&r| r <= bound));
        // The loudest three (members 2, 3 and 4) are the speakers.
        for (n, slot) in slots.iter().enumerate() {
            let m = conf.slots[*slot].as_ref().unwrap();
            assert_eq!(m.voice.speaking, (2..5).contains(&n), "member {n}");
        }
    }

    #[test]
    fn speaker_selection_has_hysteresis_and_a_noise_gate() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let calls: Vec<CallToken> = (1..=5).map(CallToken::from_raw).collect();
        let slots: Vec<usize> = (0..5)
            .map(|i| {
                let s = conf
                    .add_member(t0, calls[i], media(i as u8 + 1), seed(i as u8))
                    .unwrap();
                conf.join(t0, calls[i], 2);
                s
            })
            .collect();
        let mut txs: Vec<Tx> = (0..5).map(|i| Tx::new(i as u8)).collect();
        let mut now = t0;
        // Constant (DC) levels: dBov = 20 log10(level / 32768).
        let mut run = |conf: &mut Conference, levels: [i16; 5], ticks: usize, now: &mut Instant| {
            for _ in 0..ticks {
                *now += TICK;
                for i in 0..5 {
                    let mut pkt = txs[i].audio(levels[i]);
                    conf.handle_rtp(*now, slots[i], addr(i as u8 + 1), &mut pkt);
                }
                conf.handle_tick(*now);
                conf.drain_transmits(|_, _, _| {});
            }
            (0..5)
                .map(|i| conf.is_speaker(calls[i]))
                .collect::<Vec<bool>>()
        };
        // Member 4 is a hissing idle line at about -60 dBov (below the -50 dBov gate):
        // it stays out even though there is room for a speaker.
        let speaking = run(&mut conf, [3000, 2500, 0, 0, 32], 50, &mut now);
        assert_eq!(speaking, [true, true, false, false, false]);
        let speaking = run(&mut conf, [3000, 2500, 2000, 0, 32], 50, &mut now);
        assert_eq!(speaking, [true, true, true, false, false]);
        // A fourth, louder than the quietest speaker by less than the switching margin,
        // does not displace anyone.
        let speaking = run(&mut conf, [3000, 2500, 2000, 2400, 32], 50, &mut now);
        assert_eq!(speaking, [true, true, true, false, false]);
        // Much louder (+12 dB): it takes the quietest speaker's place.
        let speaking = run(&mut conf, [3000, 2500, 2000, 8000, 32], 50, &mut now);
        assert_eq!(speaking, [true, true, false, true, false]);
        // Everyone stops: speakers leave after the gate's 400 ms hold and 80 ms fade
        // (24 ticks, plus the playout delay; the old gate's 200 ms hangover cut quiet
        // word endings).
        let speaking = run(&mut conf, [0, 0, 0, 0, 32], 23, &mut now);
        assert_eq!(speaking, [true, true, false, true, false]);
        let speaking = run(&mut conf, [0, 0, 0, 0, 32], 7, &mut now);
        assert_eq!(speaking, [false; 5]);
    }

    #[test]
    fn automatic_gain_lifts_a_quiet_talker_only_when_asked() {
        let heard = |auto_gain: bool| {
            let t0 = Instant::now();
            let mut conf = Conference::new(
                ConferenceSettings {
                    auto_gain,
                    ..settings()
                },
                prompts(),
            );
            let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
            let sa = conf.add_member(t0, a, media(1), seed(1)).unwrap();
            conf.add_member(t0, b, media(2), seed(2)).unwrap();
            conf.join(t0, a, 0);
            conf.join(t0, b, 0);
            let mut tx = Tx::new(1);
            let mut now = t0;
            let mut last = 0;
            // A quiet talker at about -40 dBov, for 4 s.
            for _ in 0..200 {
                now += TICK;
                conf.handle_rtp(now, sa, addr(1), &mut tx.audio(330));
                conf.handle_tick(now);
                if let Some(frame) = sent(&mut conf).get(&addr(2)) {
                    last = frame[80];
                }
            }
            last
        };
        let plain = heard(false);
        let lifted = heard(true);
        assert!((300..=360).contains(&plain), "without gain: {plain}");
        // +12 dB at most (4x): the target (-26 dBov) is 14 dB above the talker.
        assert!((1100..=1400).contains(&lifted), "with gain: {lifted}");
    }

    #[test]
    fn a_reinvite_to_another_codec_moves_the_member_and_the_room_rate() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
        let mut pa = CodecPhone::new(1, Codec::Pcmu);
        let mut pb = CodecPhone::new(2, Codec::Pcmu);
        let sa = conf.add_member(t0, a, pa.params(1), seed(1)).unwrap();
        let sb = conf.add_member(t0, b, pb.params(2), seed(2)).unwrap();
        conf.join(t0, a, 5);
        conf.join(t0, b, 5);
        assert_eq!(conf.room_rate(5), 8000);
        let mut now = t0;
        let mut step = |conf: &mut Conference, pa: &mut CodecPhone, pb: &mut CodecPhone, ticks| {
            pb.heard.clear();
            pa.heard.clear();
            for _ in 0..ticks {
                now += TICK;
                conf.handle_rtp(now, sa, addr(1), &mut pa.tone(500.0, 6000.0));
                conf.handle_rtp(now, sb, addr(2), &mut pb.tone(1300.0, 6000.0));
                conf.handle_tick(now);
                let mut out = Vec::new();
                conf.drain_transmits(|_, dest, bytes| out.push((dest, bytes.to_vec())));
                for (dest, bytes) in out {
                    if dest == addr(1) {
                        pa.receive(&bytes);
                    } else {
                        pb.receive(&bytes);
                    }
                }
            }
        };
        step(&mut conf, &mut pa, &mut pb, 100);
        let last = |p: &CodecPhone| p.heard[p.heard.len() - p.format.rate as usize..].to_vec();
        assert!(share(&last(&pb), 500.0, 8000) > 0.5);
        // a switches to Opus mid-call (a new sender: new SSRC and payload type).
        let mut pa2 = CodecPhone::new(9, Codec::Opus);
        conf.update_media(t0, a, pa2.params(1));
        assert_eq!(
            conf.room_rate(5),
            48_000,
            "the room follows its fullband member"
        );
        step(&mut conf, &mut pa2, &mut pb, 100);
        assert!(
            share(&last(&pb), 500.0, 8000) > 0.5,
            "b lost a after the switch"
        );
        assert!(
            share(&last(&pa2), 1300.0, 48_000) > 0.5,
            "a does not hear b in Opus"
        );
        // And back: the room returns to 8 kHz.
        let mut pa3 = CodecPhone::new(10, Codec::Pcmu);
        conf.update_media(t0, a, pa3.params(1));
        assert_eq!(conf.room_rate(5), 8000);
        step(&mut conf, &mut pa3, &mut pb, 100);
        assert!(
            share(&last(&pb), 500.0, 8000) > 0.5,
            "b lost a after switching back"
        );
        assert!(share(&last(&pa3), 1300.0, 8000) > 0.5);
    }

    #[test]
    fn digits_on_their_own_ssrc_count_once_and_audio_keeps_its_decoder() {
        // Some phones and SBCs send RFC 4733 events on another SSRC than the audio,
        // from the same address: every packet then "changes" the SSRC.
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let call = CallToken::from_raw(1);
        let slot = conf.add_member(t0, call, media(1), seed(1)).unwrap();
        let mut audio = RtpSender::new(0xA, 1, 8000, 0);
        let mut events = RtpSender::new(0xD, 1, 16_000, 101);
        let packet = |s: &mut RtpSender, pt: u8, payload: &[u8], step: u32| {
            s.set_payload_type(pt);
            let mut b = [0u8; 512];
            let n = s.write(payload, step, &mut b).unwrap();
            b[..n].to_vec()
        };
        let now = t0 + TICK;
        conf.handle_rtp(
            now,
            slot,
            addr(1),
            &mut packet(&mut audio, 0, &[0xff; 160], 160),
        );
        // Digit 5: start, end, (audio), end, (audio), end: one event timestamp.
        for (i, end) in [false, true, true, true].into_iter().enumerate() {
            let duration = (160 * (i as u16 + 1)).to_be_bytes();
            let payload = [5, if end { 0x8a } else { 10 }, duration[0], duration[1]];
            conf.handle_rtp(
                now,
                slot,
                addr(1),
                &mut packet(&mut events, 101, &payload, 0),
            );
            if end {
                conf.handle_rtp(
                    now,
                    slot,
                    addr(1),
                    &mut packet(&mut audio, 0, &[0xff; 160], 160),
                );
            }
        }
        assert_eq!(conf.counters().digits, 1, "one key press");
        assert_eq!(conf.counters().foreign_source, 0);
    }

    #[test]
    fn a_format_that_leaves_takes_its_shared_encode_and_the_rate_follows() {
        // The Opus member leaves: its shared encode goes (SharedEncode's Drop wipes it)
        // and the room falls back to 8 kHz with the G.711 encode kept.
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
        let pb = CodecPhone::new(2, Codec::Opus);
        conf.add_member(t0, a, media(1), seed(1)).unwrap();
        conf.add_member(t0, b, pb.params(2), seed(2)).unwrap();
        conf.join(t0, a, 3);
        conf.join(t0, b, 3);
        assert_eq!(conf.rooms[&3].shared.len(), 2);
        assert_eq!(conf.room_rate(3), 48_000);
        conf.remove(b);
        let room = &conf.rooms[&3];
        assert_eq!(room.rate, 8000);
        assert_eq!(
            room.shared.len(),
            1,
            "the Opus encode went with its last listener"
        );
        assert_eq!(room.shared[0].key.codec, Codec::Pcmu);
        assert_eq!(conf.counters().codec_errors, 0);
    }

    #[test]
    fn quiet_members_with_rfc_6464_levels_are_not_decoded_until_they_speak() {
        let t0 = Instant::now();
        let mut conf = Conference::new(settings(), prompts());
        let with_level = |mut packet: Vec<u8>, minus_dbov: u8| {
            packet[0] |= 0x10;
            packet.splice(12..12, [0xBE, 0xDE, 0, 1, 0x10, minus_dbov, 0, 0]);
            packet
        };
        let mut phones = Vec::new();
        let mut slots = Vec::new();
        for n in 0..6u8 {
            let phone = CodecPhone::new(n, Codec::Opus);
            let call = CallToken::from_raw(200 + n as u64);
            let mut params = phone.params(n + 1);
            params.audio_level_id = Some(1);
            slots.push(conf.add_member(t0, call, params, seed(n)).unwrap());
            conf.join(t0, call, 9);
            phones.push(phone);
        }
        let mut now = t0;
        let mut run =
            |conf: &mut Conference, phones: &mut Vec<CodecPhone>, talkers: usize, ticks| {
                let before = conf.counters();
                for _ in 0..ticks {
                    now += TICK;
                    for (i, phone) in phones.iter_mut().enumerate() {
                        let talking = i < talkers;
                        let amplitude = if talking { 6000.0 } else { 0.0 };
                        let packet = phone.tone(400.0 + 200.0 * i as f64, amplitude);
                        let mut packet = with_level(packet, if talking { 0x80 | 18 } else { 90 });
                        conf.handle_rtp(now, slots[i], addr(i as u8 + 1), &mut packet);
                    }
                    conf.handle_tick(now);
                    let mut out = Vec::new();
                    conf.drain_transmits(|_, dest, bytes| out.push((dest, bytes.to_vec())));
                    for (dest, bytes) in out {
                        let i = (0..phones.len())
                            .find(|&i| addr(i as u8 + 1) == dest)
                            .unwrap();
                        phones[i].receive(&bytes);
                    }
                }
                let after = conf.counters();
                (
                    after.frames_decoded - before.frames_decoded,
                    after.frames_skipped - before.frames_skipped,
                )
            };
        // Two talk, four are quiet: after the first ticks only the talkers are decoded.
        run(&mut conf, &mut phones, 2, 50);
        let (decoded, skipped) = run(&mut conf, &mut phones, 2, 50);
        assert_eq!(decoded, 2 * 50, "only the talkers are decoded");
        assert_eq!(skipped, 4 * 50, "the quiet ones are skipped");
        // A third starts talking: decoded again, it becomes a speaker and is heard.
        for p in phones.iter_mut() {
            p.heard.clear();
        }
        let (decoded, _) = run(&mut conf, &mut phones, 3, 50);
        assert!(decoded >= 3 * 45, "{decoded}");
        assert!(conf.is_speaker(CallToken::from_raw(202)));
        let last = &phones[0].heard[phones[0].heard.len() - 48_000 / 2..];
        assert!(
            share(last, 800.0, 48_000) > 0.2,
            "the new talker is not heard"
        );
        assert_eq!(conf.counters().codec_errors, 0);
    }
}
