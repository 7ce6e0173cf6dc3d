//! The signalling edge: the SIP UDP socket, the [`Endpoint`], and call control.
#![allow(clippy::disallowed_methods)] // an I/O edge: it owns the clock
//!
//! One tokio task owns the socket, the endpoint and the call table. It turns endpoint
//! events into media actions (allocate a port, negotiate SDP, hand the call to a shard)
//! and shard events into SIP actions (hang up), and verifies PINs on the blocking pool
//! so that argon2 never runs on the mixer threads or this loop.

use crate::conference::{
    ConferenceEvent, HangupReason, InbandDtmf, MediaParams, RoomKey, RtpSeed, SrtpKeys,
};
use crate::config::Encryption;
use crate::config::{Config, DtmfMode, TrunkId, UnknownTarget};
use crate::guard::{Guard, GuardCounters, GuardSettings, PinVerdict, SourceKey};
use crate::io::media::{ShardCommand, ShardHandle};
use crate::io::pin_verifier::{PinChecked, PinJob, PinVerifier};
use crate::io::rtp_ports::PortPool;
use crate::io::stream::{Connections, StreamEvent};
use crate::media::srtp::{CryptoAttribute, Suite};
use crate::metrics::{DropReason, Metrics, RejectReason, SecurityLabels, SecurityMode};
use crate::redact::CallToken;
use crate::room::pin::VerifiedPins;
use crate::room::{Dismissal, Role};
use crate::sip::endpoint::{EndReason, Endpoint, Event};
use crate::sip::sdp::SecurityPolicy;
use crate::sip::sdp::{negotiate, Answer, Direction, Offer, SdpError, SessionDescription};
use crate::sip::transaction::Transmit;
use crate::sip::transport::Transport;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;

/// Datagrams handled per wake-up before timers and events get their turn.
const RECV_BATCH: usize = 64;

/// Longest the loop sleeps when nothing is due (bounds the cost of a lost wake-up).
const IDLE_WAKE: Duration = Duration::from_millis(500);

struct CallEntry {
    shard: usize,
    port: u16,
    /// The SDES keys in use (theirs and ours), kept so a re-INVITE can keep them.
    srtp: Option<SrtpKeys>,
    session_id: u64,
    sdp_version: u64,
    room: Option<RoomKey>,
    /// The room took it in (counted in the room's members).
    joined: bool,
    verifying: bool,
    /// When the call was answered: held in memory for the duration histogram only.
    answered: Instant,
    /// The keyed hash of the caller's signalling source (never the address).
    source: SourceKey,
    /// The trunk the call came through.
    trunk: Option<TrunkId>,
    /// The room its dial-in target leads to: its PIN is checked against that room only.
    target_room: Option<RoomKey>,
    /// Our `a=zrtp-hash`, when the call speaks ZRTP (repeated in re-INVITE answers).
    zrtp_hash: Option<String>,
}

/// Peers whose ZRTP secrets are kept (the least recently seen is forgotten first).
const ZRTP_PEERS_REMEMBERED: usize = 10_000;

/// Members per room as signalling sees them, for the aggregate gauges.
#[derive(Default)]
struct RoomCount {
    members: usize,
    peak: usize,
}

/// Aggregate call counters (no per-call data).
#[derive(Debug, Default, Clone, Copy)]
pub struct CallCounters {
    /// Calls answered.
    pub calls: u64,
    /// Calls refused (no codec, no port).
    pub rejected: u64,
    /// Wrong PIN attempts.
    pub pin_failures: u64,
    /// Callers admitted to a room.
    pub admitted: u64,
}

/// The signalling task's state.
pub struct Signalling {
    config: Arc<Config>,
    endpoint: Endpoint,
    socket: Option<Arc<UdpSocket>>,
    connections: Arc<Connections>,
    calls: HashMap<CallToken, CallEntry>,
    ports: PortPool,
    shards: Vec<ShardHandle>,
    /// Checks PIN attempts on its own thread (argon2 never runs here or on a mixer).
    verifier: PinVerifier,
    /// Digests of correct PINs of rooms in use.
    verified: VerifiedPins,
    /// The bridge's ZRTP identity: drawn at start, in RAM only (docs/zrtp.md).
    zid: crate::media::zrtp::Zid,
    /// ZRTP secrets retained from earlier calls, in RAM only, shared by the calls.
    zrtp_cache: crate::media::zrtp::RetainedSecrets,
    counters: CallCounters,
    metrics: Arc<Metrics>,
    guard: Guard,
    guard_published: GuardCounters,
    rooms: HashMap<RoomKey, RoomCount>,
    published: crate::sip::endpoint::Counters,
    /// Calls per trunk, for its `max_calls`.
    trunk_calls: HashMap<TrunkId, usize>,
    /// Offer-less calls waiting for the answer in their ACK.
    offers: HashMap<CallToken, PendingOffer>,
    /// Offer-less re-INVITEs waiting for the answer in their ACK, with the key we
    /// offered (if SRTP).
    reoffers: HashMap<CallToken, Option<CryptoAttribute>>,
}

/// An offer-less call: our offer went out in the 2xx; its answer comes in the ACK.
struct PendingOffer {
    port: u16,
    socket: Option<std::net::UdpSocket>,
    /// Our SDES key, when we offered SRTP.
    crypto: Option<CryptoAttribute>,
    session_id: u64,
    incoming: Incoming,
}

/// What signalling needs to know of a new call besides its offer.
#[derive(Clone, Copy)]
struct Incoming {
    transport: Transport,
    source: SourceKey,
    trunk: Option<TrunkId>,
    /// The room the Request-URI's user leads to, if any.
    target: Option<RoomKey>,
}

impl Signalling {
    /// Builds the task state.
    pub fn new(
        config: Arc<Config>,
        endpoint: Endpoint,
        socket: Option<Arc<UdpSocket>>,
        connections: Arc<Connections>,
        shards: Vec<ShardHandle>,
        verifier: PinVerifier,
        metrics: Arc<Metrics>,
    ) -> Signalling {
        let verified = VerifiedPins::new(rand::random());
        let ports = match config.media.rtp_single_port {
            Some(port) => PortPool::shared(config.media.rtp_address, port, shards.len()),
            None => PortPool::new(
                config.media.rtp_address,
                config.media.rtp_port_min,
                config.media.rtp_port_max,
            ),
        };
        let guard = Guard::new(config_guard_settings(&config));
        Signalling {
            config,
            endpoint,
            socket,
            connections,
            calls: HashMap::new(),
            ports,
            shards,
            verifier,
            verified,
            zid: crate::media::zrtp::Zid::random(&mut rand::rngs::OsRng),
            zrtp_cache: crate::media::zrtp::RetainedSecrets::new(ZRTP_PEERS_REMEMBERED),
            counters: CallCounters::default(),
            metrics,
            guard,
            guard_published: GuardCounters::default(),
            rooms: HashMap::new(),
            published: Default::default(),
            trunk_calls: HashMap::new(),
            offers: HashMap::new(),
            reoffers: HashMap::new(),
        }
    }

    /// Runs until `shutdown` turns true; then hangs up every call and stops the shards.
    pub async fn run(
        mut self,
        mut shard_events: UnboundedReceiver<ConferenceEvent>,
        mut pin_results: UnboundedReceiver<PinChecked>,
        mut stream_events: mpsc::Receiver<StreamEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; self.config.sip.max_message_size + 1];
        loop {
            let deadline = self
                .endpoint
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + IDLE_WAKE);
            let udp = self.socket.clone();
            let recv = async {
                match &udp {
                    Some(s) => s.recv_from(&mut buf).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = recv => {
                    if let (Ok((n, src)), Some(udp)) = (r, &udp) {
                        self.on_datagram(src, &buf[..n]);
                        // Drain what else is queued without waking again.
                        for _ in 0..RECV_BATCH {
                            match udp.try_recv_from(&mut buf) {
                                Ok((n, src)) => self.on_datagram(src, &buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                }
                Some(ev) = stream_events.recv() => match ev {
                    StreamEvent::Message { flow, data } => {
                        let now = Instant::now();
                        if self.allow_message(now, flow.remote.ip()) {
                            self.endpoint.handle_message(now, flow, data);
                        }
                    }
                    // Dialogs on a closed connection can no longer be reached; their
                    // calls end by BYE on a new connection, or by media timeout.
                    StreamEvent::Closed(_) => {}
                },
                _ = tokio::time::sleep_until(deadline) => {
                    self.endpoint.handle_timeout(Instant::now());
                }
                Some(ev) = shard_events.recv() => self.on_shard_event(ev),
                Some(checked) = pin_results.recv() => self.on_pin_checked(checked),
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
            self.pump().await;
        }
        self.shutdown().await;
    }

    async fn send(&self, t: Transmit) {
        match (t.connection, &self.socket) {
            // Streams: on the connection the request came on, never a new one.
            (Some(c), _) => {
                self.connections.send(c, t.bytes);
            }
            (None, Some(udp)) => {
                let _ = udp.send_to(&t.bytes, t.dest).await;
            }
            (None, None) => {}
        }
    }

    fn on_datagram(&mut self, src: SocketAddr, data: &[u8]) {
        if data.len() > self.config.sip.max_message_size {
            // Truncated by our buffer: too large to be ours; dropped before parsing.
            return;
        }
        let now = Instant::now();
        // Per-source rate limit before any parsing: a flood costs a hash and a counter.
        if !self.allow_message(now, src.ip()) {
            return;
        }
        self.endpoint
            .handle_datagram(now, src, Bytes::copy_from_slice(data));
    }

    /// The message rate limit of `ip`: its trunk's, or the strict per-source one.
    fn allow_message(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = self.guard.key(ip);
        let trunk = self
            .config
            .trunks
            .match_source(ip)
            .and_then(|t| self.config.trunks.get(t));
        match trunk {
            // A burst of two seconds' worth: a PBX's retransmissions after a hiccup.
            Some(t) => self.guard.allow_message_at(
                now,
                key,
                t.messages_per_second,
                t.messages_per_second.saturating_mul(2),
            ),
            None => self.guard.allow_message(now, key),
        }
    }

    /// Sends what the endpoint queued and handles its events (which may queue more).
    async fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.endpoint.poll_event() {
                progressed = true;
                self.on_endpoint_event(ev);
            }
            while let Some(t) = self.endpoint.poll_transmit() {
                progressed = true;
                self.send(t).await;
            }
            if !progressed {
                break;
            }
        }
        self.publish_sip_counters();
        self.publish_guard_counters();
    }
    fn publish_guard_counters(&mut self) {
        let now = self.guard.counters();
        let then = self.guard_published;
        self.metrics.lockouts.inc_by(now.lockouts - then.lockouts);
        self.metrics
            .pin_refused
            .inc_by(now.refused_attempts - then.refused_attempts);
        self.metrics.dropped(
            DropReason::RateLimited,
            now.rate_limited - then.rate_limited,
        );
        self.guard_published = now;
    }

    fn publish_sip_counters(&mut self) {
        let now = self.endpoint.counters();
        let then = self.published;
        let m = &self.metrics;
        m.dropped(DropReason::Malformed, now.malformed - then.malformed);
        m.dropped(DropReason::BadRequest, now.bad_requests - then.bad_requests);
        m.dropped(DropReason::Overload, now.overloaded - then.overloaded);
        m.dropped(
            DropReason::StrayResponse,
            now.stray_responses - then.stray_responses,
        );
        m.dropped(DropReason::Scanner, now.scanners - then.scanners);
        m.dropped(
            DropReason::ForeignDomain,
            now.foreign_domain - then.foreign_domain,
        );
        m.dropped(
            DropReason::Amplification,
            now.amplification - then.amplification,
        );
        self.published = now;
    }

    fn on_endpoint_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Incoming {
                call,
                offer,
                transport,
                source,
                request_user,
                trunk,
            } => {
                let source = self.guard.key(source.expose().ip());
                let target = self.config.dial_in.lookup(request_user.expose());
                let incoming = Incoming {
                    transport,
                    source,
                    trunk,
                    target,
                };
                self.on_incoming(now, call, &offer, incoming)
            }
            Event::AuthFailed { source } => {
                // A wrong digest answer costs the source what a wrong PIN costs.
                let key = self.guard.key(source.expose().ip());
                self.guard.pin_failed(now, key);
                self.metrics.auth_failures.inc();
            }
            Event::Reinvite {
                call,
                offer,
                transport,
            } => self.on_reinvite(now, call, &offer, transport),
            Event::Answer { call, answer } => self.on_answer(now, call, &answer),
            Event::Dtmf { call, digit } => {
                let Some(entry) = self.calls.get(&call) else {
                    return;
                };
                // A trunk that says its keys come another way has its INFO ignored.
                let mode = entry
                    .trunk
                    .and_then(|t| self.config.trunks.get(t))
                    .map_or(DtmfMode::Auto, |t| t.dtmf);
                if matches!(mode, DtmfMode::Info | DtmfMode::Auto) {
                    self.shards[entry.shard].send(ShardCommand::Digit { call, digit });
                }
            }
            Event::Cancelled { call } => {
                tracing::info!(%call, "call cancelled");
                self.drop_call(call);
            }
            Event::Ended { call, reason } => {
                match reason {
                    EndReason::RemoteBye => tracing::info!(%call, "caller hung up"),
                    EndReason::NoAck => tracing::info!(%call, "no ACK for our answer; call ended"),
                    EndReason::SessionExpired => {
                        tracing::info!(%call, "session timer ran out; call ended")
                    }
                    EndReason::LocalHangup => {}
                }
                self.drop_call(call);
            }
        }
    }

    fn negotiate(
        &self,
        offer: &[u8],
        transport: Transport,
        trunk: Option<TrunkId>,
    ) -> Result<(SessionDescription, crate::sip::sdp::Negotiated), SdpError> {
        let sdp = SessionDescription::parse(offer)?;
        let n = negotiate(
            &sdp,
            &self.config.media.codecs,
            &self.policy(transport, trunk),
        )?;
        Ok((sdp, n))
    }

    /// The media policy for a call over `transport` from `trunk`.
    fn policy(&self, transport: Transport, trunk: Option<TrunkId>) -> SecurityPolicy {
        // A trunk may override the media policy for its own calls.
        let trunk = trunk.and_then(|t| self.config.trunks.get(t));
        SecurityPolicy {
            encryption: trunk
                .and_then(|t| t.encryption)
                .unwrap_or(self.config.media.encryption),
            // SDES keys travel inside SIP: only over TLS, unless the operator says the
            // network is trusted.
            sdes_allowed: transport == Transport::Tls
                || trunk
                    .and_then(|t| t.allow_sdes_without_tls)
                    .unwrap_or(self.config.media.allow_sdes_without_tls),
        }
    }

    /// Reads the answer to our offer: the negotiated stream and, when we offered our
    /// SDES key `ours`, the call's keys (theirs must answer ours: same tag and suite,
    /// RFC 4568 §5.1.2). `None` when the answer is missing or does not fit.
    fn read_answer(
        &self,
        answer: &[u8],
        ours: Option<&CryptoAttribute>,
    ) -> Option<(crate::sip::sdp::Negotiated, Option<SrtpKeys>)> {
        let policy = SecurityPolicy {
            encryption: if ours.is_some() {
                Encryption::Required
            } else {
                Encryption::Off
            },
            sdes_allowed: true,
        };
        let sdp = SessionDescription::parse(answer).ok()?;
        let n = negotiate(&sdp, &self.config.media.codecs, &policy).ok()?;
        let keys = match (ours, &n.crypto) {
            (None, _) => None,
            (Some(ours), Some(theirs)) if theirs.tag == ours.tag && theirs.suite == ours.suite => {
                Some(SrtpKeys {
                    local: ours.clone(),
                    remote: theirs.clone(),
                })
            }
            (Some(_), _) => return None,
        };
        Some((n, keys))
    }

    fn media_params(
        &self,
        n: &crate::sip::sdp::Negotiated,
        srtp: Option<SrtpKeys>,
        trunk: Option<TrunkId>,
    ) -> MediaParams {
        let answer = n.offered_direction.answer();
        // Tones are listened for only on trunks (a phone sends RFC 4733): always for
        // `inband`; for `auto` only when the offer has no telephone-event (a gateway
        // that negotiates it sends it, and may leave the tones in the audio as well:
        // one key must count once), and then until a key comes by INFO.
        let mode = trunk
            .and_then(|t| self.config.trunks.get(t))
            .map(|t| t.dtmf);
        let inband_dtmf = match mode {
            Some(DtmfMode::Inband) => InbandDtmf::On,
            Some(DtmfMode::Auto) if n.telephone_event.is_none() => InbandDtmf::UntilOutOfBand,
            _ => InbandDtmf::Off,
        };
        MediaParams {
            codec: n.codec,
            fmtp: n.fmtp.clone(),
            audio_level_id: n.audio_level_id,
            payload_type: n.payload_type,
            telephone_event: n.telephone_event,
            remote: n.remote_rtp,
            send: answer.sends(),
            receive: answer.receives(),
            srtp,
            inband_dtmf,
            rfc4733_keys: matches!(mode, None | Some(DtmfMode::Rfc4733 | DtmfMode::Auto)),
        }
    }

    fn pick_shard(&self) -> usize {
        // The least loaded shard takes the IVR; the room's own shard takes the member later.
        self.shards
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.members.load(Ordering::Relaxed))
            .map(|(i, _)| i)
            .unwrap_or(0)
    }

    fn refuse(&mut self, now: Instant, call: CallToken, e: &SdpError) {
        tracing::info!(%call, reason = %e, "call refused: SDP not acceptable");
        self.counters.rejected += 1;
        let (code, reason) = match e {
            SdpError::NoCommonCodec | SdpError::NoConnection => (488, RejectReason::NoCodec),
            SdpError::EncryptionRequired | SdpError::SdesNeedsTls | SdpError::SrtpOff => {
                (488, RejectReason::NotEncrypted)
            }
            _ => (400, RejectReason::BadSdp),
        };
        self.metrics.reject(reason);
        self.endpoint.reject(now, call, code, Some(&e.to_string()));
    }
    fn on_incoming(&mut self, now: Instant, call: CallToken, offer: &[u8], incoming: Incoming) {
        let Incoming {
            transport,
            trunk,
            target,
            ..
        } = incoming;
        if target.is_none() && self.config.sip.unknown_target == UnknownTarget::Reject {
            self.counters.rejected += 1;
            self.metrics.reject(RejectReason::UnknownTarget);
            self.endpoint.reject(now, call, 404, None);
            return;
        }
        if let Some(t) = trunk {
            let max = self
                .config
                .trunks
                .get(t)
                .map_or(usize::MAX, |c| c.max_calls);
            if self.trunk_calls.get(&t).copied().unwrap_or(0) >= max {
                tracing::info!(%call, "call refused: the trunk's max_calls is reached");
                self.counters.rejected += 1;
                self.metrics.reject(RejectReason::TrunkFull);
                self.endpoint
                    .reject(now, call, 503, Some("trunk at max_calls"));
                return;
            }
        }
        if offer.is_empty() {
            return self.on_offerless(now, call, incoming);
        }
        let (sdp, n) = match self.negotiate(offer, transport, trunk) {
            Ok(x) => x,
            Err(e) => return self.refuse(now, call, &e),
        };
        let Some((port, socket)) = self.allocate_port(now, call) else {
            return;
        };
        // Fresh keys for every call (RFC 4568 §6.1: same tag and suite as the offer).
        let srtp = n.crypto.as_ref().map(|remote| SrtpKeys {
            local: CryptoAttribute::answer_to(remote, &mut rand::rngs::OsRng),
            remote: remote.clone(),
        });
        let session_id = rand::random::<u32>() as u64;
        let crypto = srtp.as_ref().map(|k| k.local.clone());
        let zrtp_hash = self.start_media(now, call, &n, srtp, (port, socket), session_id, incoming);
        let answer = Answer {
            offer: &sdp,
            negotiated: &n,
            address: self.config.media.public_address,
            port,
            session_id,
            version: 1,
            direction: n.offered_direction.answer(),
            crypto: crypto.as_ref(),
            zrtp_hash: zrtp_hash.as_deref(),
        }
        .render();
        self.endpoint.accept(now, call, &answer);
        self.admit_pin_free(call, incoming);
    }

    /// An RTP port for a new call, or the 503 that says there is none.
    fn allocate_port(
        &mut self,
        now: Instant,
        call: CallToken,
    ) -> Option<(u16, Option<std::net::UdpSocket>)> {
        match self.ports.allocate() {
            Ok(x) => Some(x),
            Err(_) => {
                tracing::warn!(%call, "call refused: RTP port range exhausted");
                self.counters.rejected += 1;
                self.metrics.reject(RejectReason::NoPort);
                self.endpoint
                    .reject(now, call, 503, Some("no media port free"));
                None
            }
        }
    }

    /// An INVITE without an offer (RFC 3264 §5, as several PBXs send it): our offer goes
    /// in the 2xx, with every codec we take, and SRTP with our key where the policy wants
    /// it; the media starts when the answer comes in the ACK ([`Self::on_answer`]).
    fn on_offerless(&mut self, now: Instant, call: CallToken, incoming: Incoming) {
        let policy = self.policy(incoming.transport, incoming.trunk);
        let srtp = match (policy.encryption, policy.sdes_allowed) {
            (Encryption::Off, _) | (Encryption::Preferred, false) => false,
            (_, true) => true,
            (Encryption::Required, false) => {
                return self.refuse(now, call, &SdpError::SdesNeedsTls);
            }
        };
        let Some((port, socket)) = self.allocate_port(now, call) else {
            return;
        };
        let crypto = srtp
            .then(|| CryptoAttribute::offer(Suite::AesCm128HmacSha1_80, &mut rand::rngs::OsRng));
        let session_id = rand::random::<u32>() as u64;
        let offer = Offer {
            codecs: &self.config.media.codecs,
            address: self.config.media.public_address,
            port,
            session_id,
            version: 1,
            crypto: crypto.as_ref(),
        }
        .render();
        self.offers.insert(
            call,
            PendingOffer {
                port,
                socket,
                crypto,
                session_id,
                incoming,
            },
        );
        tracing::info!(%call, "INVITE without offer: ours goes in the 2xx");
        self.endpoint.accept(now, call, &offer);
    }

    /// The answer to our offer arrived in the ACK: the media starts, or the call ends
    /// when the answer is missing or does not fit the offer.
    fn on_answer(&mut self, now: Instant, call: CallToken, answer: &[u8]) {
        if let Some(ours) = self.reoffers.remove(&call) {
            return self.on_reanswer(now, call, answer, ours);
        }
        let Some(pending) = self.offers.remove(&call) else {
            return;
        };
        let Some((n, srtp)) = self.read_answer(answer, pending.crypto.as_ref()) else {
            tracing::info!(%call, "no usable answer in the ACK; hanging up");
            self.ports.release(pending.port);
            self.counters.rejected += 1;
            self.metrics.reject(RejectReason::BadSdp);
            self.endpoint.hangup(now, call);
            return;
        };
        let incoming = pending.incoming;
        self.start_media(
            now,
            call,
            &n,
            srtp,
            (pending.port, pending.socket),
            pending.session_id,
            incoming,
        );
        self.admit_pin_free(call, incoming);
    }

    /// The answer to our offer in a 2xx to an offer-less re-INVITE: the media follows
    /// it; an unusable one ends the call (the session has no agreed state any more).
    fn on_reanswer(
        &mut self,
        now: Instant,
        call: CallToken,
        answer: &[u8],
        ours: Option<CryptoAttribute>,
    ) {
        let Some((trunk, previous)) = self.calls.get(&call).map(|e| (e.trunk, e.srtp.clone()))
        else {
            return;
        };
        let Some((n, keys)) = self.read_answer(answer, ours.as_ref()) else {
            tracing::info!(%call, "no usable answer to our re-offer; hanging up");
            self.endpoint.hangup(now, call);
            self.drop_call(call);
            return;
        };
        // Their key unchanged: keep the contexts (and their rollover counters).
        let srtp = keys.map(|k| match previous {
            Some(p) if p.remote == k.remote => p,
            _ => k,
        });
        let media = self.media_params(&n, srtp.clone(), trunk);
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.srtp = srtp;
            self.shards[entry.shard].send(ShardCommand::UpdateMedia { call, media });
        }
        tracing::info!(%call, "session updated by the answer to our offer");
    }

    /// A dial-in room without PIN admits at once, but only a call its PBX vouched for
    /// (from a trunk) or that came over TLS; anyone else types the room's PIN.
    fn admit_pin_free(&mut self, call: CallToken, incoming: Incoming) {
        if let Some(room) = incoming.target {
            let pin_free = self.config.rooms.get(room).is_some_and(|r| !r.pin_required);
            if pin_free && (incoming.trunk.is_some() || incoming.transport == Transport::Tls) {
                tracing::info!(%call, "dial-in without PIN");
                self.on_pin_result(call, Some((room, Role::Member)));
            }
        }
    }

    /// Hands a call with negotiated media to a shard (in the IVR) and counts it.
    #[allow(clippy::too_many_arguments)]
    fn start_media(
        &mut self,
        now: Instant,
        call: CallToken,
        n: &crate::sip::sdp::Negotiated,
        srtp: Option<SrtpKeys>,
        (port, socket): (u16, Option<std::net::UdpSocket>),
        session_id: u64,
        incoming: Incoming,
    ) -> Option<String> {
        let Incoming {
            source,
            trunk,
            target,
            ..
        } = incoming;
        let mode = if srtp.is_some() {
            SecurityMode::Sdes
        } else {
            SecurityMode::Plain
        };
        let suite = srtp.as_ref().map(|k| k.local.suite.sdes_name());
        let media = self.media_params(n, srtp.clone(), trunk);
        // On a shared port the port is the shard: the caller sends there for good.
        let shard = self
            .ports
            .shard_of(port)
            .filter(|&s| s < self.shards.len())
            .unwrap_or_else(|| self.pick_shard());
        let seed = RtpSeed {
            ssrc: rand::random(),
            sequence: rand::random(),
            timestamp: rand::random(),
        };
        // The caller speaks ZRTP: the exchange runs in the media path, keyed to this
        // signalling by the hashes of the two Hellos (ours goes in the answer).
        let zrtp = (self.config.media.zrtp && n.zrtp_hash.is_some()).then(|| {
            let mut session = Box::new(crate::media::zrtp::Session::new(
                crate::media::zrtp::RoleHint::Responder,
                self.zid,
                seed.ssrc,
                crate::media::zrtp::Config::default(),
                self.zrtp_cache.clone(),
                now,
                rand::rngs::OsRng,
            ));
            if let Some(theirs) = &n.zrtp_hash {
                // A hash we cannot read binds nothing; the exchange still protects.
                let _ = session.set_peer_hello_hash(now, theirs);
            }
            session
        });
        let zrtp_hash = zrtp.as_ref().map(|z| z.hello_hash());
        self.shards[shard].send(ShardCommand::Add {
            call,
            media,
            seed,
            socket,
            zrtp,
        });
        self.calls.insert(
            call,
            CallEntry {
                shard,
                port,
                srtp,
                session_id,
                sdp_version: 1,
                room: None,
                joined: false,
                verifying: false,
                answered: now,
                source,
                trunk,
                target_room: target,
                zrtp_hash: zrtp_hash.clone(),
            },
        );
        if let Some(t) = trunk {
            *self.trunk_calls.entry(t).or_insert(0) += 1;
        }
        self.counters.calls += 1;
        self.metrics.calls.inc();
        self.metrics.active_calls.inc();
        self.metrics
            .media_security
            .get_or_create(&SecurityLabels { mode })
            .inc();
        tracing::info!(%call, codec = ?n.codec, media = ?mode, suite, zrtp = zrtp_hash.is_some(), "call answered");
        zrtp_hash
    }

    fn on_reinvite(&mut self, now: Instant, call: CallToken, offer: &[u8], transport: Transport) {
        let Some(entry) = self.calls.get(&call) else {
            self.endpoint.reject(now, call, 481, None);
            return;
        };
        let (port, session_id, version) = (entry.port, entry.session_id, entry.sdp_version + 1);
        let previous = entry.srtp.clone();
        let trunk = entry.trunk;
        let zrtp_hash = entry.zrtp_hash.clone();
        if offer.is_empty() {
            // An offer-less re-INVITE (a PBX after a transfer, or refreshing): our offer,
            // the codecs we take with the port and key the call already has; the answer
            // comes in the ACK (`on_answer`).
            let ours = previous.as_ref().map(|k| k.local.clone());
            let offer = Offer {
                codecs: &self.config.media.codecs,
                address: self.config.media.public_address,
                port,
                session_id,
                version,
                crypto: ours.as_ref(),
            }
            .render();
            if let Some(entry) = self.calls.get_mut(&call) {
                entry.sdp_version = version;
            }
            self.reoffers.insert(call, ours);
            self.endpoint.accept(now, call, &offer);
            return;
        }
        let (sdp, n) = match self.negotiate(offer, transport, trunk) {
            Ok(x) => x,
            Err(e) => {
                // RFC 3264 §8: a refused re-offer leaves the session as it was.
                self.endpoint.reject(now, call, 488, Some(&e.to_string()));
                return;
            }
        };
        if previous.is_some() && n.crypto.is_none() {
            // No downgrade inside a call: an SRTP call stays SRTP.
            self.endpoint
                .reject(now, call, 488, Some("SRTP cannot be turned off in a call"));
            return;
        }
        // Keep our key when the caller keeps theirs: a new context would restart the
        // rollover counter and break the stream after its next sequence wrap.
        let srtp = n.crypto.as_ref().map(|remote| match &previous {
            Some(p) if p.remote == *remote => p.clone(),
            Some(p) if p.local.suite == remote.suite && p.local.tag == remote.tag => SrtpKeys {
                local: p.local.clone(),
                remote: remote.clone(),
            },
            _ => SrtpKeys {
                local: CryptoAttribute::answer_to(remote, &mut rand::rngs::OsRng),
                remote: remote.clone(),
            },
        });
        let answer = Answer {
            offer: &sdp,
            negotiated: &n,
            address: self.config.media.public_address,
            port,
            session_id,
            version,
            direction: n.offered_direction.answer(),
            crypto: srtp.as_ref().map(|k| &k.local),
            zrtp_hash: zrtp_hash.as_deref(),
        }
        .render();
        let media = self.media_params(&n, srtp.clone(), trunk);
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.srtp = srtp;
            entry.sdp_version = version;
            self.shards[entry.shard].send(ShardCommand::UpdateMedia { call, media });
        }
        tracing::info!(%call, direction = ?Direction::answer(n.offered_direction), "session updated");
        self.endpoint.accept(now, call, &answer);
    }

    fn drop_call(&mut self, call: CallToken) {
        if let Some(pending) = self.offers.remove(&call) {
            // Cancelled or ended before its ACK brought the answer.
            self.ports.release(pending.port);
        }
        self.reoffers.remove(&call);
        if let Some(entry) = self.calls.remove(&call) {
            if let Some(t) = entry.trunk {
                if let Some(n) = self.trunk_calls.get_mut(&t) {
                    *n = n.saturating_sub(1);
                }
            }
            self.shards[entry.shard].send(ShardCommand::Remove { call });
            self.ports.release(entry.port);
            self.metrics.active_calls.dec();
            self.metrics
                .call_duration
                .observe(entry.answered.elapsed().as_secs_f64());
            if let Some(room) = entry.room.filter(|_| entry.joined) {
                self.leave_room(room);
            }
        }
    }

    fn leave_room(&mut self, room: RoomKey) {
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members = r.members.saturating_sub(1);
            if r.members == 0 {
                self.metrics.room_size.observe(r.peak as f64);
                self.rooms.remove(&room);
                self.verified.forget_room(room);
            }
        }
        self.metrics.active_rooms.set(self.rooms.len() as i64);
    }

    fn on_shard_event(&mut self, ev: ConferenceEvent) {
        match ev {
            ConferenceEvent::PinEntered { call, attempt } => {
                let Some((source, shard, verifying, target)) = self
                    .calls
                    .get(&call)
                    .map(|e| (e.source, e.shard, e.verifying, e.target_room))
                else {
                    return;
                };
                if verifying {
                    return;
                }
                let verdict = self.guard.pin_attempt(Instant::now(), source);
                self.publish_guard_counters();
                let at = match verdict {
                    PinVerdict::Refuse => {
                        // A throttled source: the attempt counts against the call's
                        // tries but is never checked (no oracle, no CPU spent).
                        drop(attempt);
                        tracing::info!(%call, "PIN attempt refused: source throttled");
                        self.shards[shard].send(ShardCommand::PinResult { call, ok: false });
                        return;
                    }
                    PinVerdict::Check => None,
                    PinVerdict::CheckAt(t) => Some(t),
                };
                // The same correct PIN typed by a room's many callers is checked once.
                let digest = self.verified.digest(target, &attempt.0);
                if let Some(opened) = self.verified.get(&digest) {
                    drop(attempt);
                    self.metrics.pin_cache_hits.inc();
                    self.on_pin_result(call, Some(opened));
                    return;
                }
                let job = PinJob {
                    call,
                    target,
                    attempt,
                    digest,
                    not_before: at,
                };
                match self.verifier.submit(job) {
                    Ok(()) => {
                        if let Some(e) = self.calls.get_mut(&call) {
                            e.verifying = true;
                        }
                    }
                    Err(job) => {
                        // More attempts waiting than the queue holds: this one is not
                        // checked; the caller hears the wrong-PIN prompt and may retry.
                        drop(job);
                        self.metrics.pin_busy.inc();
                        tracing::warn!(%call, "PIN attempt not checked: verification queue full");
                        self.shards[shard].send(ShardCommand::PinResult { call, ok: false });
                    }
                }
            }
            ConferenceEvent::MediaVerified { call } => self.endpoint.handle_media_verified(call),
            ConferenceEvent::Joined { call } => self.on_joined(call),
            ConferenceEvent::Hangup { call, reason } => {
                match reason {
                    HangupReason::PinFailed => tracing::info!(%call, "no valid PIN; hanging up"),
                    HangupReason::MediaTimeout => tracing::info!(%call, "no media; hanging up"),
                    HangupReason::MediaSetupFailed => {
                        tracing::warn!(%call, "media could not be set up; hanging up")
                    }
                    HangupReason::Room(Dismissal::Locked) => {
                        tracing::info!(%call, "room locked; hanging up")
                    }
                    HangupReason::Room(Dismissal::Full) => {
                        tracing::info!(%call, "room full; hanging up")
                    }
                    HangupReason::Room(Dismissal::Removed) => {
                        tracing::info!(%call, "removed by a moderator; hanging up")
                    }
                    HangupReason::Room(Dismissal::Ended) => {
                        tracing::info!(%call, "room ended with its moderator; hanging up")
                    }
                    HangupReason::Room(Dismissal::NoZrtp) => {
                        tracing::info!(%call, "room requires ZRTP; hanging up")
                    }
                }
                self.endpoint.hangup(Instant::now(), call);
                self.drop_call(call);
            }
        }
    }

    fn on_pin_checked(&mut self, checked: PinChecked) {
        self.metrics.pin_checks.inc();
        if let Some((room, role)) = checked.result {
            // Only while the room is in use (or about to be): forgotten when it empties.
            self.verified.insert(checked.digest, room, role);
        }
        self.on_pin_result(checked.call, checked.result);
    }

    fn on_pin_result(&mut self, call: CallToken, room: Option<(RoomKey, Role)>) {
        let limit = self.config.limits.max_members_total;
        let total: usize = self.rooms.values().map(|r| r.members).sum();
        let shards = self.shards.len().max(1);
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        entry.verifying = false;
        match room {
            None => {
                self.counters.pin_failures += 1;
                self.metrics.pin_failures.inc();
                self.guard.pin_failed(Instant::now(), entry.source);
                tracing::info!(%call, "wrong PIN");
                self.shards[entry.shard].send(ShardCommand::PinResult { call, ok: false });
            }
            Some(_) if limit > 0 && total >= limit => {
                tracing::info!(%call, "node full (limits.max_members_total)");
                self.shards[entry.shard].send(ShardCommand::RefuseFull { call });
            }
            Some((room, role)) => {
                // Counted as a member when the room takes it (ConferenceEvent::Joined):
                // a locked or full room may still refuse it.
                entry.room = Some(room);
                // With a port per call, every member of a room moves to the room's
                // home shard, so that its mix is one loop over local memory. On a
                // shared port a member stays where its port is, and the room spans
                // the shards its members are in (conference::span).
                let home = room % shards;
                if home == entry.shard || self.config.media.rtp_single_port.is_some() {
                    let home = entry.shard;
                    self.shards[home].send(ShardCommand::Join { call, room, role });
                } else {
                    let to = self.shards[home].commands.clone();
                    self.shards[entry.shard].send(ShardCommand::Transfer {
                        call,
                        room,
                        role,
                        to,
                    });
                    entry.shard = home;
                }
            }
        }
    }

    /// The room took the caller in.
    fn on_joined(&mut self, call: CallToken) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(room) = entry.room.filter(|_| !entry.joined) else {
            return;
        };
        entry.joined = true;
        self.counters.admitted += 1;
        let r = self.rooms.entry(room).or_default();
        r.members += 1;
        r.peak = r.peak.max(r.members);
        self.metrics.active_rooms.set(self.rooms.len() as i64);
        tracing::info!(%call, "caller admitted to a room");
    }

    async fn shutdown(&mut self) {
        let now = Instant::now();
        let calls: Vec<CallToken> = self.calls.keys().copied().collect();
        for call in calls {
            self.endpoint.hangup(now, call);
            self.drop_call(call);
        }
        while let Some(t) = self.endpoint.poll_transmit() {
            self.send(t).await;
        }
        for s in &mut self.shards {
            s.shutdown();
        }
        tracing::info!(
            calls = self.counters.calls,
            rejected = self.counters.rejected,
            pin_failures = self.counters.pin_failures,
            admitted = self.counters.admitted,
            "stopped"
        );
    }
}

/// Events from the shards to signalling.
pub type ShardEvents = (
    UnboundedSender<ConferenceEvent>,
    UnboundedReceiver<ConferenceEvent>,
);

/// PIN verification results.
pub type PinResults = (UnboundedSender<PinChecked>, UnboundedReceiver<PinChecked>);

/// Channels the server wires between shards, signalling and the PIN pool.
pub fn channels() -> (ShardEvents, PinResults) {
    (unbounded_channel(), unbounded_channel())
}

/// The guard's limits from the config.
fn config_guard_settings(config: &Config) -> GuardSettings {
    let l = &config.limits;
    GuardSettings {
        source_free_failures: l.source_free_failures,
        source_backoff: std::time::Duration::from_secs(l.source_backoff_secs),
        source_backoff_max: std::time::Duration::from_secs(l.source_backoff_max_secs),
        global_failures_per_hour: l.global_failures_per_hour,
        source_messages_per_second: l.source_messages_per_second,
        source_message_burst: l.source_message_burst,
        ..GuardSettings::default()
    }
}
