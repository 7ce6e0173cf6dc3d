//! One member of a load run: a tokio task that dials in, types the PIN, streams its
//! role's audio every 20 ms and measures what the bridge sends back.
//!
//! An I/O edge: it owns a SIP socket, an RTP socket and the clock, and drives the
//! sans-IO pieces ([`super::sip::Call`], [`super::telephone_event::DigitSender`],
//! [`super::stats::ReceiveStats`], [`super::audio::BurstDetector`]). Everything it
//! learns goes into its [`MemberOutcome`]; live counters for the progress line go into
//! [`Shared`].
#![allow(clippy::disallowed_methods)] // an I/O edge: it owns the clock

use super::audio::{is_audible, BurstDetector, Payloads, Role, MARKER_PERIOD_TICKS};
use super::sdp::{self, AnswerMedia, OfferParams};
use super::sip::{Call, CallEvent, CallSetup};
use super::stats::ReceiveStats;
use super::telephone_event::{DigitSender, Tick};
use super::transport::SipSocket;
use super::LoadConfig;
use crate::media::codec::{Decoder, Format};
use crate::media::playout::FrameDecoder;
use crate::media::rtp::{parse, RtpSender};
use crate::media::srtp::{CryptoAttribute, SrtpContext};
use crate::sip::message::{parse as parse_sip, Limits};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_rustls::TlsConnector;

/// The pause between the answer and the first key, as a person takes to start typing
/// (and long enough for the bridge's PIN prompt to have started).
pub(super) const PIN_DELAY: Duration = Duration::from_secs(1);

/// How long after `#` a member waits to hear the room before it decides without.
pub(super) const ADMISSION_WAIT: Duration = Duration::from_secs(5);

/// A member's continuity during the ramp is measured from this long after it joined:
/// its own join (prompt, move to the room's shard) is not what the ramp measures.
pub(super) const UP_SETTLE: Duration = Duration::from_secs(1);

/// After our BYE, how long a member waits for its answer before it reports none
/// (shorter than Timer F, to keep the hang-up phase bounded).
pub(super) const BYE_WAIT: Duration = Duration::from_secs(8);

/// A send tick later than this is counted as late in the generator's own figures.
pub(super) const LATE_TICK: Duration = Duration::from_millis(5);

/// The 20 ms frame interval.
const TICK: Duration = Duration::from_millis(20);

/// Largest RTP packet we send or receive (an Opus payload, header, SRTP tag).
const RTP_BUFFER: usize = 2048;

/// The run's phase, shared with every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Calls are being placed.
    Ramp = 0,
    /// Every call is settled; waiting until the delay probes hear the room rather than
    /// queued prompts.
    Settle = 1,
    /// The steady window: measurements count.
    Hold = 2,
    /// Calls are being ended.
    HangUp = 3,
}

/// What every member and the engine share: the phase and live counters (the
/// progress line reads them; the report is made from the members' outcomes).
#[derive(Debug, Default)]
pub(super) struct Shared {
    phase: AtomicU8,
    /// When the hold began; set once, before the phase changes.
    pub hold_start: OnceLock<Instant>,
    /// When the hold ended; set once, before the phase changes.
    pub hold_end: OnceLock<Instant>,
    /// Members started.
    pub placed: AtomicU64,
    /// Calls answered 2xx.
    pub answered: AtomicU64,
    /// Calls that did not come up.
    pub failed: AtomicU64,
    /// Members in the room.
    pub up: AtomicU64,
    /// Members that are up, failed, ended or gave up waiting: the ramp is over when
    /// all are settled.
    pub settled: AtomicU64,
    /// Calls the bridge ended with a BYE.
    pub ended_by_bridge: AtomicU64,
    /// Audio packets received.
    pub packets_in: AtomicU64,
    /// RTP packets sent.
    pub packets_out: AtomicU64,
    /// Gaps over 40 ms counted so far.
    pub gaps: AtomicU64,
    /// Delay probes that are up.
    pub probes_up: AtomicU64,
    /// Delay probes that heard a burst while the run settled (each counts once).
    pub probes_hearing: AtomicU64,
    /// When the marker member sent each burst.
    pub marker_sends: Mutex<Vec<Instant>>,
}

impl Shared {
    pub(super) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Ramp,
            1 => Phase::Settle,
            2 => Phase::Hold,
            _ => Phase::HangUp,
        }
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Whether the marker member has sent a burst yet.
    pub(super) fn marker_sends_is_empty(&self) -> bool {
        self.marker_sends.lock().map_or(true, |s| s.is_empty())
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What all members of a run use.
pub(super) struct Common {
    /// The run's settings.
    pub config: LoadConfig,
    /// The codec format members encode and decode in.
    pub format: Format,
    /// Every role's audio, encoded once.
    pub payloads: Payloads,
    /// The TLS client, for `--transport tls`.
    pub tls: Option<TlsConnector>,
    /// The phase and live counters.
    pub shared: Shared,
}

/// One member's part in the run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// Its place in the order of calls (0 is the marker).
    pub index: usize,
    /// What it sends once in the room.
    pub role: Role,
    /// Times the marker's bursts.
    pub probe: bool,
    /// Its source address.
    pub source: IpAddr,
}

/// How the call's setup went.
#[derive(Debug, Default)]
pub(super) enum SetupOutcome {
    /// Still going (only while the member runs).
    #[default]
    Pending,
    /// 2xx after this long.
    Answered(Duration),
    /// A final response ≥ 300.
    Refused(u16),
    /// No final response within Timer B.
    TimedOut,
    /// Something on our side, or an answer we cannot use.
    Error(MemberError),
}

/// Why a member's call did not come up (or went down) other than by the bridge's
/// refusal or silence.
#[derive(Debug, thiserror::Error)]
pub(super) enum MemberError {
    /// The SIP socket (or TCP/TLS connection) could not be opened.
    #[error("SIP socket from {source_ip}: {error}")]
    SipSocket {
        /// The source address.
        source_ip: IpAddr,
        /// What the OS or TLS said.
        error: std::io::Error,
    },
    /// The RTP socket could not be opened.
    #[error("RTP socket on {source_ip}: {error}")]
    RtpSocket {
        /// The source address.
        source_ip: IpAddr,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Our own decoder could not be built.
    #[error("decoder: {0}")]
    Decoder(#[from] crate::media::codec::CodecError),
    /// The SIP connection broke before the call was answered.
    #[error("SIP: {0}")]
    Sip(std::io::Error),
    /// The answer's SDP is unusable.
    #[error(transparent)]
    Answer(#[from] sdp::AnswerError),
    /// The SRTP contexts for the keys could not be made.
    #[error("SRTP: {0}")]
    Srtp(#[from] crate::media::srtp::SrtpError),
    /// The answer put media off loopback.
    #[error("the answer puts media on {0}, outside loopback")]
    MediaOffLoopback(IpAddr),
    /// A second 2xx with another dialog (a forking proxy would do that; the bridge
    /// never does).
    #[error("answered twice")]
    AnsweredTwice,
    /// Still ringing when the run ended.
    #[error("not answered by the end of the run")]
    NotAnswered,
    /// The member's task failed (a bug of ours).
    #[error("member task: {0}")]
    Task(String),
}

/// How our BYE went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum ByeOutcome {
    /// None was sent (the call never came up, or the bridge ended it).
    #[default]
    NotSent,
    /// Answered with this code.
    Answered(u16),
    /// No answer within [`BYE_WAIT`] (or Timer F).
    Unanswered,
}

/// Everything one member measured.
#[derive(Debug, Default)]
pub(super) struct MemberOutcome {
    /// How the call's setup went.
    pub setup: SetupOutcome,
    /// In the room (admission heard, or audio flowing after [`ADMISSION_WAIT`]).
    pub up_at: Option<Instant>,
    /// `#` to the first audible packet, when that was heard.
    pub admission: Option<Duration>,
    /// Continuity while others joined (from [`UP_SETTLE`] after this member did).
    pub ramp: Option<ReceiveStats>,
    /// Continuity in the hold (members up when it began).
    pub hold: Option<ReceiveStats>,
    /// Burst onsets heard in the hold (probes only).
    pub onsets: Vec<Instant>,
    /// When the bridge ended the call (a BYE, or closing our TCP/TLS connection).
    pub ended_by_bridge: Option<Instant>,
    /// A probe that heard a burst while the run settled.
    pub heard_room: bool,
    /// How our BYE went.
    pub bye: ByeOutcome,
    /// Send ticks.
    pub ticks: u64,
    /// Send ticks later than [`LATE_TICK`].
    pub late_ticks: u64,
    /// The latest send tick.
    pub max_tick_late: Duration,
    /// Audio packets received.
    pub packets_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
}

/// Runs one member until its call is over; `hangup` says when to end it.
pub(super) async fn run(
    plan: Plan,
    common: std::sync::Arc<Common>,
    hangup: oneshot::Receiver<()>,
) -> MemberOutcome {
    let mut out = MemberOutcome::default();
    Shared::count(&common.shared.placed);
    match Member::start(plan, &common).await {
        Ok(mut member) => member.run(&mut out, hangup).await,
        Err(e) => {
            out.setup = SetupOutcome::Error(e);
            Shared::count(&common.shared.failed);
            Shared::count(&common.shared.settled);
        }
    }
    out
}

/// The media half of a member, once the call is answered.
struct Media {
    remote: SocketAddr,
    sender: RtpSender,
    audio_pt: u8,
    event_pt: u8,
    outbound: Option<SrtpContext>,
    inbound: Option<SrtpContext>,
    decoder: Decoder,
    pin_at: Instant,
    digits: Option<DigitSender>,
    /// When the first end packet of `#` went out.
    hash_at: Option<Instant>,
    role_tick: usize,
    quiet_tick: usize,
    detector: BurstDetector,
    pcm: Vec<i16>,
    last_packet: Option<Instant>,
}

struct Member<'a> {
    plan: Plan,
    common: &'a Common,
    sip: SipSocket,
    rtp: UdpSocket,
    call: Call,
    invite_at: Instant,
    our_key: Option<CryptoAttribute>,
    /// Made at the start so that a codec problem shows before the call; moves into
    /// the media once the call is answered.
    decoder: Option<Decoder>,
    media: Option<Media>,
    settled: bool,
    /// The hold's statistics were closed (the member takes no new ones).
    hold_done: bool,
    buffer: Box<[u8]>,
}

impl<'a> Member<'a> {
    async fn start(plan: Plan, common: &'a Common) -> Result<Member<'a>, MemberError> {
        let config = &common.config;
        let sip = SipSocket::open(
            config.transport,
            plan.source,
            config.target,
            common.tls.as_ref(),
        )
        .await
        .map_err(|error| MemberError::SipSocket {
            source_ip: plan.source,
            error,
        })?;
        let rtp = UdpSocket::bind(SocketAddr::new(plan.source, 0))
            .await
            .map_err(|error| MemberError::RtpSocket {
                source_ip: plan.source,
                error,
            })?;
        let rtp_addr = rtp.local_addr().map_err(|error| MemberError::RtpSocket {
            source_ip: plan.source,
            error,
        })?;
        let decoder = Decoder::new(common.format)?;
        let local = sip.local().map_err(|error| MemberError::SipSocket {
            source_ip: plan.source,
            error,
        })?;
        let our_key = config
            .srtp
            .map(|suite| CryptoAttribute::offer(suite, &mut rand::rngs::OsRng));
        let sdp = sdp::offer(&OfferParams {
            address: rtp_addr.ip(),
            port: rtp_addr.port(),
            codec: config.codec,
            crypto: our_key.as_ref(),
            session_id: rand::random::<u32>().into(),
        });
        let now = Instant::now();
        let call = Call::new(
            CallSetup {
                transport: config.transport,
                local,
                target: config.target,
                room: config.room.clone(),
                user: format!("load-{}", plan.index),
                call_id: format!("{:016x}@sotto-load", rand::random::<u64>()),
                from_tag: format!("{:08x}", rand::random::<u32>()),
                sdp,
            },
            now,
        );
        Ok(Member {
            plan,
            common,
            sip,
            rtp,
            call,
            invite_at: now,
            our_key,
            decoder: Some(decoder),
            media: None,
            settled: false,
            hold_done: false,
            buffer: vec![0u8; RTP_BUFFER].into_boxed_slice(),
        })
    }

    fn settle(&mut self) {
        if !self.settled {
            self.settled = true;
            Shared::count(&self.common.shared.settled);
        }
    }

    async fn run(&mut self, out: &mut MemberOutcome, mut hangup: oneshot::Receiver<()>) {
        // Made when the media starts: an interval ticking unpolled before that would
        // fire all its missed ticks at once.
        let mut ticker: Option<Interval> = None;
        let mut hanging_since: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400);
        loop {
            if !self.flush(out).await {
                break;
            }
            if self.media.is_some() && ticker.is_none() {
                let mut t = tokio::time::interval(TICK);
                // A stalled generator catches up, keeping the stream on its clock as a
                // phone's would be; the lateness shows in the generator's figures.
                t.set_missed_tick_behavior(MissedTickBehavior::Burst);
                ticker = Some(t);
            }
            let timer = self.call.poll_timeout();
            let bye_deadline = hanging_since.map(|t| t + BYE_WAIT);
            let sending = self.media.is_some() && hanging_since.is_none();
            tokio::select! {
                received = self.sip.recv() => {
                    match received {
                        Ok((bytes, from)) => {
                            if let Ok(message) = parse_sip(bytes, &Limits::default()) {
                                self.call.handle_message(&message, from);
                            }
                        }
                        Err(e) => {
                            // The connection is gone: the call with it.
                            if matches!(out.setup, SetupOutcome::Pending) {
                                out.setup = SetupOutcome::Error(MemberError::Sip(e));
                                Shared::count(&self.common.shared.failed);
                            } else if hanging_since.is_some() {
                                out.bye = ByeOutcome::Unanswered;
                            } else {
                                // The bridge closed our connection: it ended the call.
                                out.ended_by_bridge = Some(Instant::now());
                                Shared::count(&self.common.shared.ended_by_bridge);
                            }
                            break;
                        }
                    }
                }
                received = self.rtp.recv_from(&mut self.buffer), if self.media.is_some() => {
                    if let Ok((n, from)) = received {
                        self.on_rtp(Instant::now(), n, from, out);
                    }
                }
                scheduled = next_tick(&mut ticker), if sending => {
                    self.on_tick(scheduled.into_std(), out).await;
                }
                _ = tokio::time::sleep_until(timer.unwrap_or(far).into()), if timer.is_some() => {
                    self.call.handle_timeout(Instant::now());
                }
                _ = tokio::time::sleep_until(bye_deadline.unwrap_or(far).into()), if bye_deadline.is_some() => {
                    out.bye = ByeOutcome::Unanswered;
                    break;
                }
                _ = &mut hangup, if hanging_since.is_none() => {
                    let now = Instant::now();
                    self.sync_phase(now, out);
                    hanging_since = Some(now);
                    let was_up = self.call.is_confirmed();
                    self.call.hang_up(now);
                    if !was_up {
                        // Still ringing (or already over): nothing to wait for.
                        if matches!(out.setup, SetupOutcome::Pending) {
                            out.setup = SetupOutcome::Error(MemberError::NotAnswered);
                            Shared::count(&self.common.shared.failed);
                        }
                        let _ = self.flush(out).await;
                        break;
                    }
                }
            }
        }
        self.settle();
        self.close_windows(Instant::now(), out);
    }

    /// Sends what the call queued and acts on its events; false when the member is done.
    async fn flush(&mut self, out: &mut MemberOutcome) -> bool {
        while let Some(bytes) = self.call.poll_transmit() {
            // A lost datagram is repaired by the timers; a broken stream shows in recv.
            let _ = self.sip.send(&bytes).await;
        }
        let mut go_on = true;
        let common = self.common;
        let shared = &common.shared;
        while let Some(event) = self.call.poll_event() {
            let now = Instant::now();
            match event {
                CallEvent::Answered { sdp } => {
                    out.setup = SetupOutcome::Answered(now - self.invite_at);
                    Shared::count(&shared.answered);
                    let media = read_answer(&sdp, common, self.our_key.as_ref())
                        .and_then(|answer| self.media_for(answer, now));
                    match media {
                        Ok(media) => self.media = Some(media),
                        Err(e) => {
                            out.setup = SetupOutcome::Error(e);
                            Shared::count(&shared.failed);
                            self.settle();
                            self.call.hang_up(now);
                            while let Some(bytes) = self.call.poll_transmit() {
                                let _ = self.sip.send(&bytes).await;
                            }
                            go_on = false;
                        }
                    }
                }
                CallEvent::Refused { code } => {
                    out.setup = SetupOutcome::Refused(code);
                    Shared::count(&shared.failed);
                    go_on = false;
                }
                CallEvent::SetupTimedOut => {
                    out.setup = SetupOutcome::TimedOut;
                    Shared::count(&shared.failed);
                    go_on = false;
                }
                CallEvent::RemoteBye => {
                    out.ended_by_bridge = Some(now);
                    Shared::count(&shared.ended_by_bridge);
                    // The 200 for the BYE was queued with the event: send it.
                    while let Some(bytes) = self.call.poll_transmit() {
                        let _ = self.sip.send(&bytes).await;
                    }
                    go_on = false;
                }
                CallEvent::ByeAnswered { code } => {
                    out.bye = ByeOutcome::Answered(code);
                    go_on = false;
                }
                CallEvent::ByeTimedOut => {
                    out.bye = ByeOutcome::Unanswered;
                    go_on = false;
                }
            }
        }
        go_on && !self.call.is_terminated()
    }

    fn media_for(&mut self, answer: AnswerMedia, now: Instant) -> Result<Media, MemberError> {
        let outbound = self
            .our_key
            .as_ref()
            .map(SrtpContext::outbound_for)
            .transpose()?;
        let inbound = answer
            .crypto
            .as_ref()
            .map(SrtpContext::inbound_for)
            .transpose()?;
        let format = self.common.format;
        let decoder = self.decoder.take().ok_or(MemberError::AnsweredTwice)?;
        Ok(Media {
            remote: answer.remote,
            // RFC 3550 §5.1: random initial sequence number and timestamp.
            sender: RtpSender::new(
                rand::random(),
                rand::random(),
                rand::random(),
                answer.payload_type,
            ),
            audio_pt: answer.payload_type,
            event_pt: answer.event_payload_type,
            outbound,
            inbound,
            decoder,
            pin_at: now + PIN_DELAY,
            digits: None,
            hash_at: None,
            role_tick: 0,
            quiet_tick: 0,
            detector: BurstDetector::new(format.rate),
            pcm: Vec::with_capacity(crate::media::codec::MAX_FRAME),
            last_packet: None,
        })
    }

    /// Opens and closes the member's measurement windows as the run's phase moves.
    fn sync_phase(&mut self, now: Instant, out: &mut MemberOutcome) {
        let common = self.common;
        let shared = &common.shared;
        let phase = shared.phase();
        let clock = self.common.config.codec.clock_rate();
        match phase {
            // Ramp statistics run on while the room settles: still "while others join"
            // as far as queued join tones go.
            Phase::Ramp | Phase::Settle => {
                if let Some(up) = out.up_at {
                    if out.ramp.is_none() && now >= up + UP_SETTLE {
                        out.ramp = Some(ReceiveStats::new(now, clock));
                    }
                }
            }
            Phase::Hold | Phase::HangUp => {
                let start = shared.hold_start.get().copied().unwrap_or(now);
                if out.ramp.as_mut().is_some_and(|ramp| ramp.finish(start)) {
                    Shared::count(&shared.gaps);
                }
                // Members that came up after the hold began are not measured in it.
                if phase == Phase::Hold
                    && out.up_at.is_some_and(|up| up <= start)
                    && out.hold.is_none()
                    && !self.hold_done
                    && out.ended_by_bridge.is_none()
                {
                    out.hold = Some(ReceiveStats::new(start, clock));
                }
                if phase == Phase::HangUp {
                    self.close_hold(now, out);
                }
            }
        }
    }

    fn close_hold(&mut self, now: Instant, out: &mut MemberOutcome) {
        if let Some(hold) = out.hold.as_mut() {
            let end = self.common.shared.hold_end.get().copied().unwrap_or(now);
            if hold.finish(end.min(now)) {
                Shared::count(&self.common.shared.gaps);
            }
        }
        self.hold_done = true;
    }

    /// Closes whatever window is open when the member ends.
    fn close_windows(&mut self, now: Instant, out: &mut MemberOutcome) {
        if let Some(ramp) = out.ramp.as_mut() {
            let end = self.common.shared.hold_start.get().copied().unwrap_or(now);
            ramp.finish(end.min(now));
        }
        self.close_hold(now, out);
    }

    fn on_rtp(&mut self, now: Instant, n: usize, from: SocketAddr, out: &mut MemberOutcome) {
        self.sync_phase(now, out);
        let common = self.common;
        let shared = &common.shared;
        let Some(media) = self.media.as_mut() else {
            return;
        };
        // Only the bridge's media address counts (we latch to the answer, RFC 3264).
        if from != media.remote {
            return;
        }
        let len = match media.inbound.as_mut() {
            Some(srtp) => match srtp.unprotect_rtp(&mut self.buffer, n) {
                Ok(len) => len,
                Err(_) => return,
            },
            None => n,
        };
        let Some(packet) = self.buffer.get(..len) else {
            return;
        };
        let Ok((header, payload)) = parse(packet) else {
            return;
        };
        if header.payload_type != media.audio_pt {
            return;
        }
        out.packets_in += 1;
        Shared::count(&shared.packets_in);
        media.last_packet = Some(now);

        let waiting = media.hash_at.is_some() && out.up_at.is_none();
        // Probes decode all along (codec state must run on); others only until they hear
        // the room, which keeps Opus and G.722 decoding off the generator's CPU.
        let up = out.up_at.is_some();
        if waiting || (self.plan.probe && up) {
            media.pcm.clear();
            if media.decoder.decode(payload, &mut media.pcm).is_ok() {
                if waiting && is_audible(&media.pcm) {
                    out.up_at = Some(now);
                    out.admission = media.hash_at.map(|h| now - h);
                    Shared::count(&shared.up);
                    if self.plan.probe {
                        Shared::count(&shared.probes_up);
                    }
                    if !self.settled {
                        self.settled = true;
                        Shared::count(&shared.settled);
                    }
                }
                if self.plan.probe && up {
                    if let Some(i) = media.detector.feed(&media.pcm) {
                        match shared.phase() {
                            Phase::Hold => {
                                let offset = i as f64 / f64::from(common.format.rate);
                                out.onsets.push(now + Duration::from_secs_f64(offset));
                            }
                            Phase::Settle if !out.heard_room => {
                                out.heard_room = true;
                                Shared::count(&shared.probes_hearing);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        for stats in [out.ramp.as_mut(), out.hold.as_mut()].into_iter().flatten() {
            if stats.on_packet(now, header.sequence, header.timestamp) {
                Shared::count(&shared.gaps);
            }
        }
    }

    async fn on_tick(&mut self, scheduled: Instant, out: &mut MemberOutcome) {
        let now = Instant::now();
        let late = now.saturating_duration_since(scheduled);
        out.ticks += 1;
        if late > LATE_TICK {
            out.late_ticks += 1;
        }
        out.max_tick_late = out.max_tick_late.max(late);
        self.sync_phase(now, out);
        let common = self.common;
        let format = common.format;
        let Some(media) = self.media.as_mut() else {
            return;
        };

        // Not heard the room some time after '#': in with the audio flowing, else not.
        if let Some(hash_at) = media.hash_at {
            if out.up_at.is_none() && !self.settled && now >= hash_at + ADMISSION_WAIT {
                let flowing = media
                    .last_packet
                    .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(200));
                if flowing {
                    out.up_at = Some(now);
                    Shared::count(&common.shared.up);
                    if self.plan.probe {
                        Shared::count(&common.shared.probes_up);
                    }
                }
                self.settled = true;
                Shared::count(&common.shared.settled);
            }
        }

        if media.digits.is_none() && now >= media.pin_at {
            let keys = format!("{}#", common.config.pin);
            // The PIN was checked when the run was configured.
            media.digits = DigitSender::new(&keys, format.timestamp_step()).ok();
        }
        let tick = media
            .digits
            .as_mut()
            .map_or(Tick::Audio, DigitSender::next_tick);
        let typed = media.digits.as_ref().is_some_and(DigitSender::is_done);
        let mut packet = [0u8; RTP_BUFFER];
        let written = match tick {
            Tick::Event {
                payload,
                marker,
                advance,
                completes_entry,
            } => {
                if completes_entry {
                    media.hash_at = Some(now);
                }
                media.sender.set_payload_type(media.event_pt);
                if marker {
                    media.sender.mark_talkspurt();
                }
                let written = media.sender.write(&payload, advance, &mut packet);
                media.sender.set_payload_type(media.audio_pt);
                written
            }
            Tick::Audio => {
                let payload = if typed {
                    let role_tick = media.role_tick;
                    media.role_tick += 1;
                    if self.plan.role == Role::Marker && role_tick % MARKER_PERIOD_TICKS == 0 {
                        if let Ok(mut sends) = common.shared.marker_sends.lock() {
                            sends.push(now);
                        }
                    }
                    common.payloads.frame(self.plan.role, role_tick)
                } else {
                    media.quiet_tick += 1;
                    common.payloads.quiet(media.quiet_tick)
                };
                media
                    .sender
                    .write(payload, format.timestamp_step(), &mut packet)
            }
        };
        let Ok(mut len) = written else { return };
        if let Some(srtp) = media.outbound.as_mut() {
            match srtp.protect_rtp(&mut packet, len) {
                Ok(protected) => len = protected,
                Err(_) => return,
            }
        }
        if self.rtp.send_to(&packet[..len], media.remote).await.is_ok() {
            out.packets_out += 1;
            Shared::count(&common.shared.packets_out);
        }
    }
}

/// The next tick of the media clock; never, before the media starts.
async fn next_tick(ticker: &mut Option<Interval>) -> tokio::time::Instant {
    match ticker {
        Some(t) => t.tick().await,
        None => std::future::pending().await,
    }
}

/// Reads the answer and checks that its media stays on loopback.
fn read_answer(
    body: &[u8],
    common: &Common,
    our_key: Option<&CryptoAttribute>,
) -> Result<AnswerMedia, MemberError> {
    let answer = sdp::read_answer(body, common.config.codec, our_key)?;
    if !answer.remote.ip().is_loopback() {
        return Err(MemberError::MediaOffLoopback(answer.remote.ip()));
    }
    Ok(answer)
}
