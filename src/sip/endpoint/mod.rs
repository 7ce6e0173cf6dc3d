//! The SIP user-agent server core: transactions and dialogs for every call, sans-IO.
//!
//! Drive it like this:
//!
//! ```text
//! endpoint.handle_datagram(now, source, bytes);  // for each datagram
//! endpoint.handle_timeout(now);                     // when poll_timeout() has passed
//! while let Some(t) = endpoint.poll_transmit() { socket.send_to(&t.bytes, t.dest) }
//! while let Some(e) = endpoint.poll_event() { ... accept()/reject()/hangup() ... }
//! ```
//!
//! The application learns of calls through [`Event`]s and answers with
//! [`Endpoint::accept`], [`Endpoint::reject`] and [`Endpoint::hangup`]. Everything a
//! caller sent stays inside; events carry only the call's random token and the SDP.

mod checks;
mod in_dialog;
mod invite;

use super::dialog::{Dialog, DialogKey, DialogState};
use super::digest::{Authenticator, DigestError};
use super::info;
use super::message::{
    build_response, build_version_not_supported, parse, response_destination, HeaderAccess, Limits,
    Message, ParseError, Request, Response,
};
use super::reflection::ReflectionGuard;
pub use super::reflection::AMPLIFICATION_FACTOR;
use super::session_timer::{self, Negotiation, Refresher};
use super::transaction::{
    InviteServer, InviteServerEvent, InviteServerState, NonInviteClient, NonInviteClientEvent,
    NonInviteServer, Timers, Transmit,
};
use super::transport::{Flow, Transport};
use crate::config::{TrunkId, Trunks};
use crate::media::dtmf::Digit;
use crate::redact::{CallToken, Redacted};
use bytes::Bytes;
use checks::{accepts_sdp, is_known_method, unsupported_requirements};
use ezk_sip_types::{Headers, Method, Name};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Methods this bridge implements (RFC 3261 §20.5 Allow).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK";

/// Extensions we support (RFC 3261 §20.37): session timers (RFC 4028); reliable
/// provisional responses (RFC 3262) trivially, as we send no provisional response.
pub const SUPPORTED: &str = "timer, 100rel";

/// Most Via values a request may carry: one per hop, and Max-Forwards starts at 70
/// (RFC 3261 §8.1.1.6), so more than 70 cannot be an honest path.
const MAX_VIAS: usize = 70;

/// Identity of an initial INVITE for merged-request detection (RFC 3261 §8.2.2.2):
/// Call-ID, From tag, CSeq number.
type MergeKey = (String, String, u32);

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Our SIP address over UDP (Via of requests we send, Contact).
    pub local: SocketAddr,
    /// Our SIP address over TCP, if we listen there.
    pub local_tcp: Option<SocketAddr>,
    /// Our SIP address over TLS, if we listen there.
    pub local_tls: Option<SocketAddr>,
    /// RFC 3261 timers.
    pub timers: Timers,
    /// Message limits.
    pub limits: Limits,
    /// Most server transactions and dialogs held at once; beyond it new requests get 503.
    pub max_transactions: usize,
    /// PBXs and gateways: their own limit on unconfirmed calls, and digest
    /// authentication of their INVITEs where configured.
    pub trunks: Trunks,
    /// Cap what goes to unverified UDP sources at [`AMPLIFICATION_FACTOR`] times what
    /// they sent (see `poll_transmit`).
    /// On in the bridge; tests of RFC timer schedules turn it off.
    pub amplification_guard: bool,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// Our 2xx was never acknowledged.
    NoAck,
    /// We hung up.
    LocalHangup,
    /// The session timer ran out: no refresh came, or ours failed (RFC 4028 §10).
    SessionExpired,
}

/// What the endpoint tells the application.
#[derive(Debug)]
pub enum Event {
    /// A new call; answer with [`Endpoint::accept`] or [`Endpoint::reject`].
    Incoming {
        /// The call.
        call: CallToken,
        /// The SDP offer.
        offer: Bytes,
        /// The transport the INVITE came over (decides whether SDES keys may be used).
        transport: Transport,
        /// Where it came from (for the guessing limits, which keep only a keyed hash).
        source: Redacted<SocketAddr>,
        /// User part of the Request-URI (for alias lookup; never logged).
        request_user: Redacted<String>,
        /// The trunk the INVITE came from (authenticated, if the trunk asks for it).
        trunk: Option<TrunkId>,
    },
    /// An INVITE from a trunk carried wrong digest credentials (answered with 401); it
    /// counts against its source's failure budget like a wrong PIN.
    AuthFailed {
        /// Where it came from (for the guessing limits, which keep only a keyed hash).
        source: Redacted<SocketAddr>,
    },
    /// A re-INVITE inside a call; answer with accept or reject.
    Reinvite {
        /// The call.
        call: CallToken,
        /// The new offer (may be empty: then re-send the last answer).
        offer: Bytes,
        /// The transport the re-INVITE came over.
        transport: Transport,
    },
    /// The caller cancelled before we answered.
    Cancelled {
        /// The call.
        call: CallToken,
    },
    /// The ACK of an offer-less INVITE or re-INVITE, with the answer to the offer our
    /// 2xx carried (empty when the caller sent none: then the call is to be ended).
    Answer {
        /// The call.
        call: CallToken,
        /// The SDP answer.
        answer: Bytes,
    },
    /// A key press relayed by SIP INFO inside a call (already answered with 200).
    Dtmf {
        /// The call.
        call: CallToken,
        /// The key (its `Debug` hides it).
        digit: Digit,
    },
    /// The call is over; its media can go.
    Ended {
        /// The call.
        call: CallToken,
        /// Why.
        reason: EndReason,
    },
}

/// Counters of what was dropped or refused, for aggregate metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Datagrams that could not be parsed.
    pub malformed: u64,
    /// Requests answered with 400.
    pub bad_requests: u64,
    /// Responses that matched no transaction.
    pub stray_responses: u64,
    /// Requests refused because the tables were full.
    pub overloaded: u64,
    /// Requests from known scanners, dropped silently.
    pub scanners: u64,
    /// Requests for domains that are not ours, dropped silently.
    pub foreign_domain: u64,
    /// Messages not sent because an unverified UDP source had not sent us enough bytes.
    pub amplification: u64,
    /// INVITEs from trunks refused for wrong digest credentials.
    pub auth_failures: u64,
}

/// Which requests are dropped silently, before any answer.
#[derive(Debug, Clone, Default)]
pub struct RequestFilters {
    /// Lower-case User-Agent fragments of known scanners.
    pub scanner_user_agents: Vec<String>,
    /// Lower-case domains we serve (Request-URI host); empty accepts any.
    pub domains: Vec<String>,
}

/// Unconfirmed calls (no ACK yet) one source address may hold; a phone or a PBX rarely
/// has more than a few INVITEs answered and not yet acknowledged at the same moment.
const MAX_PENDING_PER_SOURCE: usize = 16;

/// Unconfirmed calls, all sources together.
const MAX_PENDING_TOTAL: usize = 256;

/// What a request we sent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPurpose {
    /// Ending the call.
    Bye,
    /// A session refresh (UPDATE) of this call.
    Refresh(CallToken),
}

/// Whom an unconfirmed call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PendingKey {
    /// A caller that belongs to no trunk: its address.
    Source(IpAddr),
    /// A trunk, whatever its address.
    Trunk(TrunkId),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxKey {
    branch: String,
    sent_by: String,
    method: String,
}

impl TxKey {
    fn of(req: &Request, method: &Method) -> Option<TxKey> {
        let via = req.top_via().ok()?;
        let branch = via.params.get_val("branch").map(|b| b.to_string());
        let sent_by = format!("{}:{}", via.sent_by.host, via.sent_by.port.unwrap_or(0));
        let branch = match branch {
            // RFC 3261 §17.2.3: the magic cookie makes the branch unique.
            Some(b) if b.starts_with("z9hG4bK") => b,
            // RFC 2543 peers: fall back on the Call-ID, CSeq number and From tag.
            _ => {
                let cseq = req.cseq().ok()?.cseq;
                let from_tag = req
                    .from()
                    .ok()?
                    .tag
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                format!("2543|{}|{cseq}|{from_tag}", req.call_id().ok()?)
            }
        };
        Some(TxKey {
            branch,
            sent_by,
            method: method.to_string(),
        })
    }
}

struct InviteEntry {
    tx: InviteServer,
    call: CallToken,
    request: Request,
    flow: Flow,
    /// CSeq number of the INVITE: the ACK of its 2xx carries the same (RFC 3261 §13.2.2.4).
    cseq: u32,
    /// Set for initial INVITEs, so that a merged copy can be recognised.
    merge_key: Option<MergeKey>,
    /// An initial INVITE without an offer: the answer comes in the ACK.
    offerless: bool,
}

/// The UAS core.
pub struct Endpoint {
    cfg: EndpointConfig,
    invites: HashMap<TxKey, InviteEntry>,
    non_invites: HashMap<TxKey, NonInviteServer>,
    /// Our BYEs and session refreshes, with the verified sources each keeps verified
    /// while it runs and what it is for.
    clients: HashMap<String, (NonInviteClient, Vec<IpAddr>, ClientPurpose)>,
    /// UPDATEs with an SDP offer waiting for the application's answer.
    updates: HashMap<CallToken, (TxKey, Request, Flow)>,
    dialogs: HashMap<CallToken, Dialog>,
    by_key: HashMap<DialogKey, CallToken>,
    /// Per call: the INVITE transaction that is pending or whose 2xx awaits its ACK.
    invite_of: HashMap<CallToken, TxKey>,
    /// Initial INVITEs still held, by Call-ID, From tag and CSeq.
    merged: HashMap<MergeKey, TxKey>,
    /// Calls we want to end once the ACK arrives (RFC 3261 §15).
    bye_after_ack: Vec<CallToken>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    filters: RequestFilters,
    /// What may go to unverified UDP sources.
    reflection: ReflectionGuard,
    /// Calls whose dialog is not confirmed yet, per source address or per trunk.
    pending: HashMap<PendingKey, usize>,
    /// Digest challenges and checks; made at the first challenge.
    authenticator: Option<Authenticator>,
}

impl Endpoint {
    /// A new endpoint.
    pub fn new(cfg: EndpointConfig) -> Self {
        let reflection = ReflectionGuard::new(cfg.amplification_guard, cfg.timers.timeout());
        Endpoint {
            cfg,
            invites: HashMap::new(),
            non_invites: HashMap::new(),
            clients: HashMap::new(),
            updates: HashMap::new(),
            dialogs: HashMap::new(),
            by_key: HashMap::new(),
            invite_of: HashMap::new(),
            merged: HashMap::new(),
            bye_after_ack: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            filters: RequestFilters::default(),
            reflection,
            pending: HashMap::new(),
            authenticator: None,
        }
    }

    /// Our address on `transport` (for Via and Contact).
    fn local(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.cfg.local,
            Transport::Tcp => self.cfg.local_tcp.unwrap_or(self.cfg.local),
            Transport::Tls => self.cfg.local_tls.unwrap_or(self.cfg.local),
        }
    }

    fn new_invite_server(&self, req: &Request, flow: Flow) -> InviteServer {
        let dest = match req.top_via() {
            Ok(via) => response_destination(&via, flow.remote, flow.transport),
            Err(_) => flow.remote,
        };
        InviteServer::new(dest, flow.transport.is_reliable(), self.cfg.timers)
            .with_connection(flow.connection)
    }

    /// Aggregate counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of live dialogs.
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }
    /// Sets the silent-drop filters (scanners, foreign domains).
    pub fn set_filters(&mut self, filters: RequestFilters) {
        self.filters = filters;
    }

    /// Next message to send.
    ///
    /// No amplification: to a UDP source whose address is not verified we never send
    /// more than [`AMPLIFICATION_FACTOR`] times the bytes it sent (retransmissions
    /// included); what does not fit is dropped and counted. An address is verified by
    /// return routability: the caller ACKs our 2xx, or its media reaches the port our
    /// answer named ([`Endpoint::handle_media_verified`]); a spoofed source can do
    /// neither, since our answer went to the victim. A real caller also retransmits its
    /// request, which adds to its budget.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(t) = self.transmits.pop_front() {
            if t.connection.is_some() || self.reflection.allow(t.dest.ip(), t.bytes.len()) {
                return Some(t);
            }
            self.counters.amplification += 1;
        }
        None
    }

    /// Whom an unconfirmed call from `ip` counts against: its trunk, or the address.
    fn pending_key(&self, ip: IpAddr) -> PendingKey {
        match self.cfg.trunks.match_source(ip) {
            Some(t) => PendingKey::Trunk(t),
            None => PendingKey::Source(ip),
        }
    }

    fn pending_done(&mut self, ip: IpAddr) {
        let key = self.pending_key(ip);
        if let Some(n) = self.pending.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(&key);
            }
        }
    }

    /// The addresses a confirmed UDP dialog talks to: where it came from, and where our
    /// in-dialog requests go (the first route hop, when there is one).
    fn dialog_peers(d: &Dialog) -> Vec<IpAddr> {
        if d.flow.connection.is_some() {
            return Vec::new();
        }
        let mut v = vec![d.flow.remote.ip()];
        let hop = d.next_hop().0.ip();
        if hop != v[0] {
            v.push(hop);
        }
        v
    }

    /// Marks the peers of an answered UDP dialog as verified, once per dialog.
    fn verify_dialog(&mut self, call: CallToken) {
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        if d.verified || d.state == DialogState::Early {
            return;
        }
        d.verified = true;
        for ip in Self::dialog_peers(d) {
            self.reflection.verify(ip);
        }
    }

    /// The caller's media reached the port our answer named (an RTP packet latched, or
    /// an SRTP packet authenticated with the keys our answer carried): only whoever
    /// received our 2xx knows that port, so the address the call came from is verified
    /// as an ACK would verify it, and our 2xx retransmissions and BYE to it are no longer
    /// capped. A lost ACK then costs nothing: the 2xx keeps going until one arrives.
    pub fn handle_media_verified(&mut self, call: CallToken) {
        self.verify_dialog(call);
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self
            .invites
            .values()
            .filter_map(|e| e.tx.poll_timeout())
            .min();
        let b = self
            .non_invites
            .values()
            .filter_map(|t| t.poll_timeout())
            .min();
        let c = self
            .clients
            .values()
            .filter_map(|(t, _, _)| t.poll_timeout())
            .min();
        let d = self
            .dialogs
            .values()
            .filter_map(|d| d.session.map(|s| s.deadline()))
            .min();
        [a, b, c, d].into_iter().flatten().min()
    }

    /// Gives back the memory of tables a burst has grown and that have emptied since
    /// (see [`super::shrink_map`]).
    fn shrink_tables(&mut self) {
        use super::shrink_map as shrink;
        shrink(&mut self.invites);
        shrink(&mut self.non_invites);
        shrink(&mut self.clients);
        shrink(&mut self.dialogs);
        shrink(&mut self.by_key);
        shrink(&mut self.invite_of);
        shrink(&mut self.merged);
        shrink(&mut self.pending);
        self.reflection.shrink();
        if self.transmits.capacity() > super::SHRINK_FLOOR && self.transmits.is_empty() {
            self.transmits.shrink_to(super::SHRINK_FLOOR);
        }
    }

    /// Feeds one received UDP datagram.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: Bytes) {
        self.handle_message(now, Flow::udp(source), data);
    }

    /// Feeds one complete message from any transport (streams frame it first, see
    /// [`super::framing`]).
    pub fn handle_message(&mut self, now: Instant, flow: Flow, data: Bytes) {
        if flow.connection.is_none() {
            // Keyed by address only: a reply may go to another port (no rport).
            self.reflection.credit(now, flow.remote.ip(), data.len());
        }
        // The parser is a third-party crate: a panic inside it must cost one message,
        // not the process (and not the calls that are up).
        let limits = self.cfg.limits;
        let parsed = std::panic::catch_unwind(move || parse(data, &limits))
            .unwrap_or(Err(ParseError::BadStartLine));
        match parsed {
            Ok(Message::Request(req)) => self.handle_request(now, flow, req),
            Ok(Message::Response(resp)) => self.handle_response(now, resp),
            Err(ParseError::KeepAlive) => {}
            Err(_) => self.counters.malformed += 1,
        }
    }

    fn respond_stateless(&mut self, req: &Request, flow: Flow, code: u16, extra: &[(&str, &str)]) {
        let Ok(via) = req.top_via() else { return };
        if let Ok(bytes) = build_response(
            req,
            flow.remote,
            code,
            Some(&super::message::random_token()),
            extra,
            None,
        ) {
            self.transmits.push_back(Transmit {
                dest: response_destination(&via, flow.remote, flow.transport),
                connection: flow.connection,
                bytes: Bytes::from(bytes),
            });
        }
    }

    /// Whether a request is to be dropped without an answer (and counted): scanners and
    /// strangers get nothing at all, since any answer tells them we exist.
    fn filtered(&mut self, req: &Request) -> bool {
        if let Some(ua) = req.raw(&Name::USER_AGENT) {
            let ua = ua.to_ascii_lowercase();
            if self
                .filters
                .scanner_user_agents
                .iter()
                .any(|s| ua.contains(s.as_str()))
            {
                self.counters.scanners += 1;
                return true;
            }
        }
        if !self.filters.domains.is_empty() {
            let host = req
                .uri
                .as_ref()
                .map(|u| u.host_port.host.to_string().to_ascii_lowercase());
            let ours = host.as_deref().is_some_and(|h| {
                self.filters.domains.iter().any(|d| d == h)
                    || [Some(self.cfg.local), self.cfg.local_tcp, self.cfg.local_tls]
                        .into_iter()
                        .flatten()
                        .any(|a| a.ip().to_string() == h)
            });
            if !ours {
                self.counters.foreign_domain += 1;
                return true;
            }
        }
        false
    }

    fn handle_request(&mut self, now: Instant, flow: Flow, req: Request) {
        if !req.version_supported {
            // Another SIP version (RFC 4475 §3.1.2.16): 505, statelessly, as nothing of
            // it can be understood further; its Vias are read by their own rules.
            if self.filtered(&req) || req.method == Method::ACK {
                return;
            }
            self.counters.bad_requests += 1;
            match build_version_not_supported(&req, flow.remote, flow.transport) {
                Some((dest, bytes)) => self.transmits.push_back(Transmit {
                    dest,
                    connection: flow.connection,
                    bytes: Bytes::from(bytes),
                }),
                None => self.counters.malformed += 1,
            }
            return;
        }
        // Without a Via there is nowhere to send a response: drop.
        let Ok(_) = req.top_via() else {
            self.counters.malformed += 1;
            return;
        };
        if req.vias().map_or(0, |v| v.len()) > MAX_VIAS {
            self.counters.malformed += 1;
            return;
        }
        if self.filtered(&req) {
            return;
        }
        let method = req.method.clone();
        let is_ack = method == Method::ACK;

        // Mandatory headers (RFC 3261 §8.1.1), each exactly once, and CSeq method
        // agreement (§20.16); RFC 4475 §3.3.8 (multi01) wants 400 for duplicates.
        let single = [
            Name::CALL_ID,
            Name::CSEQ,
            Name::FROM,
            Name::TO,
            Name::MAX_FORWARDS,
        ]
        .iter()
        .all(|n| req.headers.get_raw(n).count() <= 1);
        let mandatory_ok = single
            && req.call_id().is_ok()
            && req.from().is_ok()
            && req.to().is_ok()
            && req.cseq().map(|c| c.method == method).unwrap_or(false);
        if !mandatory_ok {
            self.counters.bad_requests += 1;
            if !is_ack {
                self.respond_stateless(&req, flow, 400, &[]);
            }
            return;
        }
        if req.max_forwards().is_err() {
            self.counters.bad_requests += 1;
            if !is_ack {
                self.respond_stateless(&req, flow, 400, &[]);
            }
            return;
        }

        if is_ack {
            self.handle_ack(now, &req);
            return;
        }

        // Retransmissions of a request we already have a transaction for.
        let key_method = if method == Method::CANCEL {
            Method::CANCEL
        } else {
            method.clone()
        };
        let Some(key) = TxKey::of(&req, &key_method) else {
            self.counters.bad_requests += 1;
            return;
        };
        if let Some(e) = self.invites.get_mut(&key) {
            if let Some(t) = e.tx.handle_request_retransmit() {
                self.transmits.push_back(t);
            }
            return;
        }
        if let Some(t) = self.non_invites.get(&key) {
            if let Some(t) = t.handle_request_retransmit() {
                self.transmits.push_back(t);
            }
            return;
        }

        // Requests for calls that exist always get through: a full table must never
        // keep a caller from hanging up.
        let in_dialog = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied());
        let cancels_ours = method == Method::CANCEL
            && self.invites.contains_key(&TxKey {
                method: Method::INVITE.to_string(),
                ..key.clone()
            });
        let full = self.invites.len() + self.non_invites.len() >= self.cfg.max_transactions
            || (method == Method::INVITE && self.dialogs.len() >= self.cfg.max_transactions);
        if in_dialog.is_none() && !cancels_ours && full {
            self.counters.overloaded += 1;
            self.respond_stateless(&req, flow, 503, &[("Retry-After", "5")]);
            return;
        }

        // RFC 3261 §16.3 step 3 is a proxy's job, but a UAS seeing 0 knows a loop or a
        // misconfigured hop; answer as the issue asks.
        if req.max_forwards() == Ok(Some(0)) {
            self.non_invite_response(now, key, &req, flow, 483, &[]);
            return;
        }

        if req.uri.as_ref().is_some_and(|u| u.sips) && flow.transport != Transport::Tls {
            // RFC 5630: a sips URI means TLS on every hop; one that arrived in the clear
            // is refused rather than served over a weaker transport.
            let warning = [("Warning", "399 sotto \"sips: needs TLS\"")];
            self.refuse(now, key, &req, flow, 416, &warning);
            return;
        }

        if req.uri.is_none() {
            // RFC 3261 §8.2.2.1: a URI scheme we do not serve.
            self.refuse(now, key, &req, flow, 416, &[]);
            return;
        }

        if req
            .uri
            .as_ref()
            .is_some_and(|u| !u.header_params.is_empty())
        {
            // RFC 3261 §19.1.1 Table 1: headers (`?Route=...`) are not allowed in a
            // Request-URI; RFC 4475 §3.1.2.11 (escruri) asks for 400.
            self.counters.bad_requests += 1;
            self.refuse(now, key, &req, flow, 400, &[]);
            return;
        }

        if method != Method::INVITE && method != Method::CANCEL {
            if let Some(unsupported) = unsupported_requirements(&req) {
                self.non_invite_response(
                    now,
                    key,
                    &req,
                    flow,
                    420,
                    &[("Unsupported", &unsupported)],
                );
                return;
            }
            // RFC 3261 §12.2.2: an in-dialog request older than the last one is out of order.
            if let Some(call) = in_dialog {
                let cseq = req.cseq().map(|c| c.cseq).unwrap_or(0);
                if let Some(d) = self.dialogs.get_mut(&call) {
                    if cseq < d.remote_cseq {
                        self.non_invite_response(now, key, &req, flow, 500, &[]);
                        return;
                    }
                    d.remote_cseq = cseq;
                }
            }
        }

        match method {
            Method::INVITE => self.handle_invite(now, flow, key, req),
            Method::CANCEL => self.handle_cancel(now, flow, key, req),
            Method::BYE => self.handle_bye(now, flow, key, req),
            Method::INFO => self.handle_info(now, flow, key, req),
            Method::UPDATE => self.handle_update(now, flow, key, req),
            // RFC 3262 §3: a PRACK for a provisional response we never sent.
            Method::PRACK => self.non_invite_response(now, key, &req, flow, 481, &[]),
            Method::OPTIONS => {
                let extra = [
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", SUPPORTED),
                ];
                self.non_invite_response(now, key, &req, flow, 200, &extra);
            }
            m if is_known_method(&m) => {
                self.non_invite_response(now, key, &req, flow, 405, &[("Allow", ALLOW)]);
            }
            _ => self.non_invite_response(now, key, &req, flow, 501, &[("Allow", ALLOW)]),
        }
    }

    /// Refuses a new request with `code`: through an INVITE server transaction for an
    /// INVITE (so that its ACK is absorbed), else as a non-INVITE response.
    fn refuse(
        &mut self,
        now: Instant,
        key: TxKey,
        req: &Request,
        flow: Flow,
        code: u16,
        extra: &[(&str, &str)],
    ) {
        if req.method == Method::INVITE {
            let tx = self.new_invite_server(req, flow);
            self.reject_new(now, tx, key, CallToken::random(), req, flow, code, extra);
        } else {
            self.non_invite_response(now, key, req, flow, code, extra);
        }
    }

    fn non_invite_response(
        &mut self,
        now: Instant,
        key: TxKey,
        req: &Request,
        flow: Flow,
        code: u16,
        extra: &[(&str, &str)],
    ) {
        self.non_invite_response_tagged(now, key, req, flow, code, extra, None, None);
    }

    /// A non-INVITE response with our To tag (`tag`, else the dialog's, else a fresh
    /// one) and, for an UPDATE's answer, an SDP body.
    #[allow(clippy::too_many_arguments)]
    fn non_invite_response_tagged(
        &mut self,
        now: Instant,
        key: TxKey,
        req: &Request,
        flow: Flow,
        code: u16,
        extra: &[(&str, &str)],
        tag: Option<String>,
        sdp: Option<&str>,
    ) {
        let Ok(via) = req.top_via() else { return };
        let dest = response_destination(&via, flow.remote, flow.transport);
        let to_tag = tag
            .or_else(|| self.dialog_of(req).map(|d| d.key.local_tag.clone()))
            .unwrap_or_else(super::message::random_token);
        let body = sdp.map(|s| ("application/sdp", s.as_bytes()));
        let Ok(bytes) = build_response(req, flow.remote, code, Some(&to_tag), extra, body) else {
            return;
        };
        let mut tx = NonInviteServer::new(dest, flow.transport.is_reliable(), self.cfg.timers)
            .with_connection(flow.connection);
        if let Some(t) = tx.send(now, code, Bytes::from(bytes)) {
            self.transmits.push_back(t);
        }
        self.non_invites.insert(key, tx);
    }

    fn dialog_key_of(req: &Request) -> Option<DialogKey> {
        let to_tag = req.to().ok()?.tag?.to_string();
        let from_tag = req
            .from()
            .ok()?
            .tag
            .map(|t| t.to_string())
            .unwrap_or_default();
        Some(DialogKey {
            call_id: req.call_id().ok()?.to_string(),
            local_tag: to_tag,
            remote_tag: from_tag,
        })
    }

    fn dialog_of(&self, req: &Request) -> Option<&Dialog> {
        let key = Self::dialog_key_of(req)?;
        self.by_key.get(&key).and_then(|t| self.dialogs.get(t))
    }

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let branch = resp
            .top_via()
            .ok()
            .and_then(|v| v.params.get_val("branch").map(|b| b.to_string()));
        let Some(client) = branch.and_then(|b| self.clients.get_mut(&b)) else {
            self.counters.stray_responses += 1;
            return;
        };
        let purpose = client.2;
        let event = client.0.handle_response(now, resp.code);
        // Whatever the answer to our BYE, the call is already gone on our side.
        if let (Some(NonInviteClientEvent::Final(code)), ClientPurpose::Refresh(call)) =
            (event, purpose)
        {
            // A 2xx: the session goes on (the next refresh is counted from when this
            // one was sent). 408, 481 and the like: the peer no longer has it.
            if !(200..300).contains(&code) {
                self.end_expired(now, call);
            }
        }
    }

    /// Fires all due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut no_ack = Vec::new();
        for e in self.invites.values_mut() {
            if e.tx.poll_timeout().is_some_and(|t| t <= now) {
                let (out, ev) = e.tx.handle_timeout(now);
                if let Some(t) = out {
                    self.transmits.push_back(t);
                }
                if ev == Some(InviteServerEvent::NoAckFor2xx) {
                    no_ack.push(e.call);
                }
            }
        }
        let merged = &mut self.merged;
        self.invites.retain(|_, e| {
            let keep = !e.tx.is_terminated();
            if !keep {
                if let Some(k) = &e.merge_key {
                    merged.remove(k);
                }
            }
            keep
        });
        for t in self.non_invites.values_mut() {
            t.handle_timeout(now);
        }
        self.non_invites.retain(|_, t| !t.is_terminated());
        let mut failed_refreshes = Vec::new();
        for (c, _, purpose) in self.clients.values_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                let (out, event) = c.handle_timeout(now);
                if let Some(t) = out {
                    self.transmits.push_back(t);
                }
                if let (ClientPurpose::Refresh(call), Some(NonInviteClientEvent::TimedOut)) =
                    (*purpose, event)
                {
                    failed_refreshes.push(call);
                }
            }
        }
        let mut released = Vec::new();
        self.clients.retain(|_, (c, verified, _)| {
            let keep = !c.is_terminated();
            if !keep {
                released.append(verified);
            }
            keep
        });
        for call in failed_refreshes {
            // No answer to our refresh: the session is gone (RFC 4028 §10).
            self.end_expired(now, call);
        }
        self.on_session_timers(now);
        for source in released {
            self.reflection.unverify(source);
        }
        self.reflection.expire(now);
        self.shrink_tables();
        for call in no_ack {
            let wanted_bye = self.bye_after_ack.contains(&call);
            let confirmed = self
                .dialogs
                .get(&call)
                .is_some_and(|d| d.state == DialogState::Confirmed);
            if confirmed {
                // A re-INVITE's 2xx went unacknowledged; the call itself stands.
                continue;
            }
            // RFC 3261 §13.3.1.4: no ACK for the 2xx: end the dialog with a BYE.
            self.send_bye(now, call);
            if !wanted_bye {
                self.events.push_back(Event::Ended {
                    call,
                    reason: EndReason::NoAck,
                });
            }
        }
    }
}
