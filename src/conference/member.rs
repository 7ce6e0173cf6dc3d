//! One caller's media in a shard: what signalling negotiated, the latch, SRTP, the
//! jitter buffer and codecs, the keys it types, and its prompt queue. A member moves
//! with all of this between shards.

use super::{ConferenceSettings, MediaCounters, RoomKey};
use crate::config::Codec;
use crate::media::codec::{Decoder, Encoder, Format, MAX_FRAME, MAX_PAYLOAD};
use crate::media::dtmf::{Digit, DtmfReceiver};
use crate::media::gate::Voice;
use crate::media::inband_dtmf::InbandDtmfDetector;
use crate::media::playout::PlayoutBuffer;
use crate::media::resample::Resampler;
use crate::media::rtp::{self, RtpSender};
use crate::media::srtp::{CryptoAttribute, KeyMaterial, SrtpContext};
use crate::media::zrtp::{Sas, SecureInfo, Session, ZrtpEvent};
use crate::redact::CallToken;
use crate::room::ivr::Ivr;
use crate::room::playback::Playback;
use crate::room::prompts::Prompt;
use crate::room::Dismissal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// Largest RTP packet we write: header, the largest payload, an SRTP tag, and room to spare.
pub(super) const MAX_PACKET: usize = 12 + MAX_PAYLOAD + 64;

/// Frames silenced after a key's tone was last seen in a room member's audio (60 ms:
/// the detector's release and the tone's tail).
const TONE_HOLD_TICKS: u8 = 3;

/// How long packets from a caller's old media source are not latched after a
/// re-INVITE moved its media: longer than any jitter buffer holds a straggler.
const STALE_SOURCE_HOLD: Duration = Duration::from_secs(2);

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

/// Where a member is: typing its PIN, or in a room.
pub(super) enum Phase {
    Ivr(Box<Ivr>),
    Joined(RoomKey),
    /// Out of its room (refused, removed, the room ended): hears what it is told, then
    /// its call ends.
    Leaving(Dismissal),
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
pub(super) fn resampler(from: u32, to: u32) -> Option<Resampler> {
    Resampler::new(from, to).ok()
}

/// One caller's media state; it moves with the caller between shards.
pub struct Member {
    pub(super) token: CallToken,
    pub(super) format: Format,
    pub(super) payload_type: u8,
    pub(super) telephone_event: Option<u8>,
    pub(super) remote: Option<SocketAddr>,
    pub(super) latched: Option<(SocketAddr, u32)>,
    /// The media address the caller's last SDP named.
    pub(super) sdp_remote: Option<SocketAddr>,
    /// After a re-INVITE moved the caller's media: its old source, whose packets still
    /// in flight must not win the new latch, and until when they are ignored.
    pub(super) stale_source: Option<(SocketAddr, Instant)>,
    /// Whether signalling has been told that media arrived (once per call).
    pub(super) media_verified: bool,
    /// SRTP: the keys, and the inbound and outbound contexts made from them.
    /// SRTP: the SDES keys they came from (`None`: from ZRTP), inbound, outbound.
    pub(super) srtp: Option<(Option<SrtpKeys>, SrtpContext, SrtpContext)>,
    /// The call's ZRTP exchange (RFC 6189), when the caller offered ZRTP. Until it is
    /// secure the member's RTP is neither taken nor sent.
    pub(super) zrtp: Option<Box<ZrtpSession>>,
    /// ZRTP packets to send (the handshake's, a few).
    pub(super) zrtp_out: Vec<Vec<u8>>,
    /// The SRTP keys came from ZRTP: the SDP's keys no longer apply.
    pub(super) zrtp_secure: bool,
    /// The SAS of the ZRTP exchange, to read to the caller (never logged).
    pub(super) sas: Option<Sas>,
    /// The SAS was confirmed in an earlier call (the retained secret matched).
    pub(super) sas_known: bool,
    /// The SAS was read to the caller (once per call).
    pub(super) sas_read: bool,
    /// Until when `#` confirms the SAS just read.
    pub(super) sas_confirm_until: Option<Instant>,
    pub(super) send: bool,
    pub(super) receive: bool,
    pub(super) sender: RtpSender,
    pub(super) playout: PlayoutBuffer,
    /// The playout buffer's resync count when the decoder last started afresh.
    pub(super) seen_resyncs: u64,
    pub(super) decoder: Decoder,
    /// RFC 6464: the extension ID, the loudest level (-dBov) reported in the last
    /// packets and the tick it came in, and whether decoding is being skipped.
    pub(super) level_id: Option<u8>,
    pub(super) reported: Option<(u8, u64)>,
    pub(super) skipping: bool,
    /// In-band DTMF detector at the member's decode rate, for callers whose keys come
    /// as tones; fed while the PIN is typed.
    pub(super) inband: Option<Box<InbandDtmfDetector>>,
    /// Whether a key out of band (RFC 4733, INFO) switches the detector off.
    pub(super) inband_until_out_of_band: bool,
    /// Whether RFC 4733 events count as keys.
    rfc4733_keys: bool,
    /// Own encoder: prompts, and the mix minus own while speaking.
    pub(super) encoder: Encoder,
    pub(super) dtmf: DtmfReceiver,
    pub(super) last_rx: Instant,
    pub(super) timed_out: bool,
    pub(super) phase: Phase,
    /// Prompts to this caller.
    pub(super) playback: Playback,
    /// Muted by itself or its room: heard by nobody, but listened to for the hint.
    pub(super) muted: bool,
    /// Waiting for the room's moderator: neither heard nor hearing.
    pub(super) waiting: bool,
    /// Its own listening level (dB over the room's mix).
    pub(super) gain_db: i8,
    /// Net ticks of speech while muted (for the muted-talker hint).
    pub(super) talk: u16,
    /// Keys as tones in a room: the previous frame (played one frame late, so that a
    /// tone found now silences it too), whether it held audio, and how many more
    /// frames stay silent after a tone.
    tone_delay: Option<Box<[i16]>>,
    tone_delay_audio: bool,
    tone_hold: u8,
    /// The member's rate to its room's (speakers only), and back.
    pub(super) up: Option<Resampler>,
    pub(super) down: Option<Resampler>,
    pub(super) voice: Voice,
    /// This tick's decoded frame at the member's rate.
    pub(super) native: Box<[i16]>,
    /// The same frame at the room's rate (speakers only).
    pub(super) mixed: Box<[i16]>,
    /// What the member hears this tick at its rate, when it needs its own encode.
    pub(super) out: Box<[i16]>,
    pub(super) has_audio: bool,
    /// No packet went out last tick: the next one starts a talk-spurt (marker bit).
    pub(super) paused: bool,
    pub(super) packet: Box<[u8]>,
    pub(super) packet_len: usize,
}

impl Member {
    /// The call this member belongs to.
    pub fn token(&self) -> CallToken {
        self.token
    }

    /// Wipes the per-tick audio (frames and the last packet) and the digit state.
    pub(super) fn wipe(&mut self) {
        self.native.zeroize();
        self.mixed.zeroize();
        self.out.zeroize();
        self.packet.zeroize();
        self.dtmf.reset();
        if let Some(d) = self.tone_delay.as_mut() {
            d.zeroize();
        }
    }

    /// Keys typed as tones by a member in a room (a trunk with `dtmf = "inband"`):
    /// this tick's decoded frame goes to the detector (`found` gets each key), and the
    /// member's audio is played one frame late so that the frames around a key's tone
    /// are silenced before anyone hears them: keys are never mixed.
    pub(super) fn screen_tones(&mut self, n: usize, mut found: impl FnMut(Digit)) {
        let Some(detector) = self.inband.as_mut() else {
            return;
        };
        if !self.has_audio {
            self.native[..n].fill(0);
        }
        let mut tone = detector.tone_present();
        let mut digit = detector.handle_samples(&self.native[..n]);
        tone |= detector.tone_present();
        while let Some(d) = digit {
            tone = true;
            found(d);
            digit = detector.poll_digit();
        }
        if tone {
            self.tone_hold = TONE_HOLD_TICKS;
        }
        let Some(delay) = self.tone_delay.as_mut() else {
            return;
        };
        delay[..n].swap_with_slice(&mut self.native[..n]);
        std::mem::swap(&mut self.has_audio, &mut self.tone_delay_audio);
        if self.tone_hold > 0 {
            self.tone_hold -= 1;
            self.native[..n].fill(0);
            self.has_audio = false;
        }
    }

    pub(super) fn phase_room(&self) -> Option<RoomKey> {
        match self.phase {
            Phase::Joined(r) => Some(r),
            Phase::Ivr(_) | Phase::Leaving(_) => None,
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
fn srtp_contexts(keys: SrtpKeys) -> Option<(Option<SrtpKeys>, SrtpContext, SrtpContext)> {
    let inbound = SrtpContext::inbound_for(&keys.remote).ok()?;
    let outbound = SrtpContext::outbound_for(&keys.local).ok()?;
    Some((Some(keys), inbound, outbound))
}

/// The inbound and outbound contexts for keys a ZRTP exchange agreed.
fn zrtp_contexts(info: &SecureInfo) -> Option<(SrtpContext, SrtpContext)> {
    let suite = info.srtp_suite()?;
    let remote = KeyMaterial::new(suite, &info.keys.remote_key_and_salt()).ok()?;
    let local = KeyMaterial::new(suite, &info.keys.local_key_and_salt()).ok()?;
    let inbound = SrtpContext::new_inbound(suite, &remote).ok()?;
    let outbound = SrtpContext::new_outbound(suite, &local).ok()?;
    Some((inbound, outbound))
}

/// A call's ZRTP session (the bridge draws from the OS's generator).
pub type ZrtpSession = Session<rand::rngs::OsRng>;

/// ZRTP packets held for sending at most (a handshake sends one or two at a time).
const ZRTP_QUEUE: usize = 8;

/// How long after the SAS read-out starts `#` confirms it: the read-out takes about
/// 10 s, then the caller has a few seconds to compare and press.
const SAS_CONFIRM_WINDOW: Duration = Duration::from_secs(20);

/// What a received datagram meant for the member's call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    /// The first media of the call arrived: its signalling address is verified.
    pub verified: bool,
    /// A key completed (RFC 4733).
    pub digit: Option<Digit>,
}

impl Member {
    /// A new caller in the PIN-entry IVR, or `None` when the SRTP keys or the codec
    /// cannot be used.
    pub(super) fn new(
        now: Instant,
        call: CallToken,
        media: MediaParams,
        seed: RtpSeed,
        settings: &ConferenceSettings,
    ) -> Option<Member> {
        let format = Format::new(media.codec, media.fmtp.as_deref());
        let srtp = match media.srtp {
            Some(keys) => Some(srtp_contexts(keys)?),
            None => None,
        };
        Some(Member {
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
            zrtp: None,
            zrtp_out: Vec::new(),
            zrtp_secure: false,
            sas: None,
            sas_known: false,
            sas_read: false,
            sas_confirm_until: None,
            send: media.send,
            receive: media.receive,
            sender: RtpSender::new(seed.ssrc, seed.sequence, seed.timestamp, media.payload_type),
            playout: playout_for(settings, format),
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
            phase: Phase::Ivr(Box::new(Ivr::new(settings.ivr))),
            playback: Playback::new(format.rate),
            muted: false,
            waiting: false,
            gain_db: 0,
            talk: 0,
            // The frame delay of keys as tones, made with the detector (never on the tick).
            tone_delay: (media.inband_dtmf != InbandDtmf::Off)
                .then(|| vec![0; MAX_FRAME].into_boxed_slice()),
            tone_delay_audio: false,
            tone_hold: 0,
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
        })
    }

    /// A re-INVITE changed the media.
    ///
    /// An offer without keys while the call has SRTP keeps the contexts: signalling
    /// refuses such a downgrade (488) before it gets here.
    pub(super) fn update_media(
        &mut self,
        now: Instant,
        media: MediaParams,
        settings: &ConferenceSettings,
        counters: &mut MediaCounters,
    ) {
        let new_srtp = match media.srtp {
            // Same keys: keep the contexts (and their rollover counters and replay windows).
            Some(keys) => match &self.srtp {
                Some((Some(current), _, _)) if *current == keys => None,
                // Keys agreed by ZRTP stay: the SDP's would be weaker (seen by every hop).
                _ if self.zrtp_secure => None,
                _ => Some(srtp_contexts(keys)),
            },
            None => None,
        };
        let format = Format::new(media.codec, media.fmtp.as_deref());
        let mut usable = true;
        if format != self.format {
            match (Decoder::new(format), Encoder::new(format)) {
                (Ok(decoder), Ok(encoder)) => {
                    if format.codec.clock_rate() != self.format.codec.clock_rate() {
                        // Another RTP clock on the same SSRC: tell the far end's
                        // jitter buffer that the timeline starts anew.
                        self.sender.mark_talkspurt();
                    }
                    self.format = format;
                    self.decoder = decoder;
                    self.encoder = encoder;
                    self.playout = playout_for(settings, format);
                    self.seen_resyncs = 0;
                    self.playback.set_rate(format.rate);
                    self.up = None;
                    self.down = None;
                    self.inband = inband_detector(self.inband.is_some(), format);
                }
                _ => {
                    usable = false;
                    counters.codec_errors += 1;
                }
            }
        }
        self.payload_type = media.payload_type;
        self.sender.set_payload_type(media.payload_type);
        self.telephone_event = media.telephone_event;
        self.level_id = media.audio_level_id;
        self.reported = None;
        if media.remote != self.sdp_remote {
            // The caller moved its media (transfer, another device, unhold to a new
            // port): latch afresh on what comes next, but not on stragglers from the
            // old source.
            if let Some((old, _)) = self.latched.take() {
                self.stale_source = Some((old, now + STALE_SOURCE_HOLD));
            }
            self.sdp_remote = media.remote;
            self.remote = media.remote;
        } else if self.latched.is_none() {
            self.remote = media.remote;
        }
        self.send = media.send && usable;
        self.receive = media.receive && usable;
        match new_srtp {
            Some(Some(contexts)) => self.srtp = Some(contexts),
            // Keys that cannot be used: stop the media rather than fall back to plain.
            Some(None) => {
                self.send = false;
                self.receive = false;
            }
            None => {}
        }
    }

    /// Whether the member waits for its ZRTP exchange (no audio either way until then).
    pub(super) fn zrtp_pending(&self) -> bool {
        self.zrtp.is_some() && !self.zrtp_secure
    }

    /// Takes what the ZRTP session has to send and what it has to say: on `Secure` the
    /// member's SRTP keys are ZRTP's; on failure the call goes on as negotiated
    /// (without ZRTP's guarantee).
    pub(super) fn pump_zrtp(&mut self, counters: &mut MediaCounters) {
        let Some(z) = self.zrtp.as_mut() else {
            return;
        };
        while let Some(packet) = z.poll_transmit() {
            if self.zrtp_out.len() < ZRTP_QUEUE {
                self.zrtp_out.push(packet);
            }
        }
        let mut failed = false;
        while let Some(event) = z.poll_event() {
            match event {
                ZrtpEvent::Secure(info) => match zrtp_contexts(&info) {
                    Some((inbound, outbound)) => {
                        self.srtp = Some((None, inbound, outbound));
                        self.zrtp_secure = true;
                        self.sas = Some(info.sas);
                        self.sas_known = info.sas_verified_previously;
                        counters.zrtp_secure += 1;
                    }
                    None => {
                        counters.codec_errors += 1;
                        failed = true;
                    }
                },
                ZrtpEvent::Failed(_) => failed = true,
                ZrtpEvent::PeerHello { .. } => {}
            }
        }
        if failed && !self.zrtp_secure {
            counters.zrtp_failed += 1;
            self.zrtp = None;
            self.zrtp_out.clear();
        }
    }

    /// Queues the read-out of the SAS (once per call, unless a retained secret says the
    /// caller confirmed it before) and opens the window in which `#` confirms it.
    pub(super) fn read_sas(&mut self, now: Instant) {
        if self.sas_read || self.sas_known {
            return;
        }
        let Some(prompts) = self.sas.as_ref().and_then(Prompt::sas) else {
            return;
        };
        self.sas_read = true;
        self.playback.enqueue(Prompt::SasIntro);
        for p in prompts {
            self.playback.enqueue(p);
        }
        self.playback.enqueue(Prompt::SasConfirm);
        self.sas_confirm_until = Some(now + SAS_CONFIRM_WINDOW);
    }

    /// A key while the SAS may be confirmed: `confirm` (`#`, `[controls] sas_confirm`)
    /// as the first key confirms it (true: the key is used up); any other key closes
    /// the window and goes on to the room.
    pub(super) fn confirm_sas(&mut self, now: Instant, digit: Digit, confirm: Digit) -> bool {
        let Some(until) = self.sas_confirm_until.take() else {
            return false;
        };
        if now > until || digit != confirm {
            return false;
        }
        if let Some(z) = self.zrtp.as_mut() {
            z.set_sas_verified(now, true);
        }
        self.sas_known = true;
        self.playback.enqueue(Prompt::SasConfirmed);
        true
    }

    /// The ZRTP session's timer, if due.
    pub(super) fn zrtp_timer(&mut self, now: Instant, counters: &mut MediaCounters) {
        if let Some(z) = self.zrtp.as_mut() {
            if z.poll_timeout().is_some_and(|t| t <= now) {
                z.handle_timeout(now);
                self.pump_zrtp(counters);
            }
        }
    }

    /// The addresses the shared port finds this member by.
    pub(super) fn route(&self) -> super::demux::Route {
        super::demux::Route {
            latched: self.latched.map(|(a, _)| a),
            expected: if self.latched.is_none() {
                self.sdp_remote
            } else {
                None
            },
        }
    }

    /// Whether its media is SRTP (its packets prove whose they are).
    pub(super) fn has_srtp(&self) -> bool {
        self.srtp.is_some()
    }

    /// One received datagram on the member's RTP port (decrypted in place for SRTP).
    /// `tick` is the shard's tick count (RFC 6464 levels are kept per tick).
    pub(super) fn receive(
        &mut self,
        now: Instant,
        tick: u64,
        source: SocketAddr,
        packet: &mut [u8],
        counters: &mut MediaCounters,
    ) -> Received {
        let mut received = Received::default();
        if crate::media::zrtp::is_zrtp(packet) {
            // ZRTP shares the RTP port (RFC 6189 §5); it never latches and never plays.
            if let Some(z) = self.zrtp.as_mut() {
                if z.handle_packet(now, packet).is_ok() {
                    self.last_rx = now;
                }
                self.pump_zrtp(counters);
            }
            return received;
        }
        if self.zrtp_pending() {
            // Nothing of the caller's media is taken before ZRTP has keyed it.
            return received;
        }
        let len = match &mut self.srtp {
            Some((_, inbound, _)) => {
                // Nothing about a packet is believed, and nothing is latched, before it
                // authenticates (RTP bleed).
                let len = packet.len();
                match inbound.unprotect_rtp(packet, len) {
                    Ok(n) => n,
                    Err(_) => {
                        counters.srtp_rejected += 1;
                        return received;
                    }
                }
            }
            None => packet.len(),
        };
        let Ok((header, payload)) = rtp::parse(&packet[..len]) else {
            counters.malformed += 1;
            return received;
        };
        if let Some((old, until)) = self.stale_source {
            if now >= until {
                self.stale_source = None;
            } else if self.latched.is_none() && source == old {
                counters.foreign_source += 1;
                return received;
            }
        }
        match self.latched {
            None => {
                // Symmetric RTP (RFC 4961): answer where the packets really come from.
                self.latched = Some((source, header.ssrc));
                self.remote = Some(source);
                if !self.media_verified {
                    self.media_verified = true;
                    received.verified = true;
                }
            }
            Some((addr, _)) if addr != source => {
                counters.foreign_source += 1;
                return received;
            }
            Some((_, ssrc)) if ssrc != header.ssrc => {
                // Same source, another SSRC: a phone restarting its sender, or digits
                // on their own SSRC, or a straggler of the old stream. The playout
                // buffer decides whether the audio stream really changed (the codec
                // starts afresh when it resynchronises, below); digits are told apart
                // by their timestamps whatever the SSRC, so one receiver serves.
                self.latched = Some((source, header.ssrc));
            }
            Some(_) => {}
        }
        self.last_rx = now;
        if Some(header.payload_type) == self.telephone_event {
            if !self.rfc4733_keys {
                return received;
            }
            match self.dtmf.handle_packet(header.timestamp, payload) {
                Ok(digit) => received.digit = digit,
                Err(_) => counters.malformed += 1,
            }
            return received;
        }
        if header.payload_type != self.payload_type {
            // Comfort noise (PT 13) and anything not negotiated is not audio for us.
            return received;
        }
        // Audio is buffered for the mix, and before that only where keys are listened
        // for in it.
        let listening = matches!(self.phase, Phase::Ivr(_)) && self.inband.is_some();
        if !self.receive || !(matches!(self.phase, Phase::Joined(_)) || listening) {
            return received;
        }
        if let Some(id) = self.level_id {
            if let Some(level) = rtp::audio_level(&packet[..len], id) {
                // The loudest of this tick's packets (a smaller -dBov is louder).
                self.reported = Some(match self.reported {
                    Some((previous, t)) if t == tick => (previous.min(level.minus_dbov), tick),
                    _ => (level.minus_dbov, tick),
                });
            }
        }
        self.playout.push(
            now,
            header.sequence,
            header.timestamp,
            header.ssrc,
            header.marker,
            payload,
        );
        if self.playout.resyncs() != self.seen_resyncs {
            // A new stream (SSRC, timestamp jump): the decoder's history is the old one's.
            self.seen_resyncs = self.playout.resyncs();
            self.decoder.reset();
        }
        received
    }
}
