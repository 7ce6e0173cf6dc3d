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
    /// The ACK of an offer-less call, with the answer to the offer our 2xx carried
    /// (empty when the caller sent none: then the call is to be ended).
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

/// Tables at or below this capacity are never shrunk: a few kilobytes, not worth the
/// rehash (see `Endpoint::shrink_tables`).
const SHRINK_FLOOR: usize = 64;

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

    /// Gives back the memory of tables a burst has grown and that have emptied since.
    ///
    /// A hash map keeps its largest capacity for good: after an INVITE flood the
    /// transaction table alone would hold megabytes of empty slots (and with the process
    /// memory locked, the allocator cannot hand freed pages back piecemeal). A table is
    /// shrunk once it is less than a quarter full, to twice what it holds, so a steady
    /// load never reallocates back and forth.
    fn shrink_tables(&mut self) {
        fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > SHRINK_FLOOR && map.capacity() > 4 * map.len() {
                map.shrink_to((2 * map.len()).max(SHRINK_FLOOR));
            }
        }
        shrink(&mut self.invites);
        shrink(&mut self.non_invites);
        shrink(&mut self.clients);
        shrink(&mut self.dialogs);
        shrink(&mut self.by_key);
        shrink(&mut self.invite_of);
        shrink(&mut self.merged);
        shrink(&mut self.pending);
        self.reflection.shrink();
        if self.transmits.capacity() > SHRINK_FLOOR && self.transmits.is_empty() {
            self.transmits.shrink_to(SHRINK_FLOOR);
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
        self.non_invite_response_tagged(now, key, req, flow, code, extra, None);
    }

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
    ) {
        let Ok(via) = req.top_via() else { return };
        let dest = response_destination(&via, flow.remote, flow.transport);
        let to_tag = tag
            .or_else(|| self.dialog_of(req).map(|d| d.key.local_tag.clone()))
            .unwrap_or_else(super::message::random_token);
        let Ok(bytes) = build_response(req, flow.remote, code, Some(&to_tag), extra, None) else {
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

    fn handle_invite(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let has_to_tag = req.to().map(|t| t.tag.is_some()).unwrap_or(false);
        if has_to_tag {
            self.handle_reinvite(now, flow, key, req);
            return;
        }

        let tx = self.new_invite_server(&req, flow);
        let call = CallToken::random();

        // Calls not yet confirmed by an ACK hold a port and a mixer slot for up to 64·T1:
        // cap them per source and in total, so an INVITE flood cannot exhaust either.
        // A trunk carries many callers from one address: its own limit (counted across
        // its addresses) replaces the per-source one, and raises the total.
        let trunk = self.cfg.trunks.match_source(flow.remote.ip());
        let pending_key = self.pending_key(flow.remote.ip());
        let pending_here = self.pending.get(&pending_key).copied().unwrap_or(0);
        let pending_total: usize = self.pending.values().sum();
        let limit_here = trunk
            .and_then(|t| self.cfg.trunks.get(t))
            .map_or(MAX_PENDING_PER_SOURCE, |t| t.max_calls_in_setup);
        let limit_total = MAX_PENDING_TOTAL + self.cfg.trunks.calls_in_setup();
        if pending_here >= limit_here || pending_total >= limit_total {
            self.counters.overloaded += 1;
            self.reject_new(now, tx, key, call, &req, flow, 503, &[("Retry-After", "5")]);
            return;
        }

        // Extensions we do not support (RFC 3261 §8.2.2.3).
        if let Some(list) = unsupported_requirements(&req) {
            self.reject_new(
                now,
                tx,
                key,
                call,
                &req,
                flow,
                420,
                &[("Unsupported", &list)],
            );
            return;
        }
        // A merged request: the same INVITE reached us twice by different paths.
        let merge_key: Option<MergeKey> = match (req.call_id(), req.from(), req.cseq()) {
            (Ok(id), Ok(from), Ok(cseq)) => Some((
                id.to_string(),
                from.tag.map(|t| t.to_string()).unwrap_or_default(),
                cseq.cseq,
            )),
            _ => None,
        };
        if merge_key
            .as_ref()
            .is_some_and(|k| self.merged.contains_key(k))
        {
            self.reject_new(now, tx, key, call, &req, flow, 482, &[]);
            return;
        }
        let content_type = req.raw(&Name::CONTENT_TYPE).map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        // An INVITE without a body wants our offer in the 2xx and answers in the ACK
        // (RFC 3264 §5); the application sees an empty offer.
        if !req.body.is_empty() && content_type.as_deref() != Some("application/sdp") {
            self.reject_new(
                now,
                tx,
                key,
                call,
                &req,
                flow,
                415,
                &[("Accept", "application/sdp")],
            );
            return;
        }

        if !accepts_sdp(&req) {
            // Our 200 must carry an SDP answer the caller said it cannot read (RFC 3261
            // §21.4.7; RFC 4475 §3.3.15, sdp01).
            self.reject_new(
                now,
                tx,
                key,
                call,
                &req,
                flow,
                406,
                &[("Accept", "application/sdp")],
            );
            return;
        }

        if let Some(creds) = trunk
            .and_then(|t| self.cfg.trunks.get(t))
            .and_then(|t| t.digest.clone())
        {
            let auth = self
                .authenticator
                .get_or_insert_with(|| Authenticator::new(rand::random(), now));
            let values = req.headers.get_raw(&Name::AUTHORIZATION);
            let verdict = auth.verify(
                now,
                flow.remote.ip(),
                &req.method.to_string(),
                values.map(|v| v.as_str()),
                &creds,
            );
            if let Err(e) = verdict {
                if e.is_wrong_credentials() {
                    self.counters.auth_failures += 1;
                    self.events.push_back(Event::AuthFailed {
                        source: Redacted(flow.remote),
                    });
                }
                let challenges = auth.challenges(
                    now,
                    flow.remote.ip(),
                    &creds,
                    e == DigestError::Stale,
                    rand::random(),
                );
                let extra: Vec<(&str, &str)> = challenges
                    .iter()
                    .map(|c| ("WWW-Authenticate", c.as_str()))
                    .collect();
                self.reject_new(now, tx, key, call, &req, flow, 401, &extra);
                return;
            }
        }

        let session = match session_timer::negotiate(&req, now, session_timer::allows_update(&req))
        {
            Negotiation::TooSmall => {
                // RFC 4028 §8.1: our smallest interval, so the caller can try again.
                let min = session_timer::MIN_SE.as_secs().to_string();
                self.reject_new(now, tx, key, call, &req, flow, 422, &[("Min-SE", &min)]);
                return;
            }
            Negotiation::Timer(t) => Some(t),
            Negotiation::None => None,
        };
        let dialog = match Dialog::from_invite(call, &req, flow) {
            Ok(mut d) => {
                d.session = session;
                d
            }
            Err(_) => {
                self.counters.bad_requests += 1;
                self.reject_new(now, tx, key, call, &req, flow, 400, &[]);
                return;
            }
        };
        // No 100 Trying: the application answers within the same turn, far inside the
        // 200 ms of RFC 3261 §17.2.1, and every byte to an unverified source counts.
        let request_user = match req.uri.as_ref().map(|u| &u.user_part) {
            Some(ezk_sip_types::uri::SipUriUserPart::User(u)) => u.to_string(),
            Some(ezk_sip_types::uri::SipUriUserPart::UserPw(u)) => u.user.to_string(),
            _ => String::new(),
        };
        let offer = req.body.clone();
        let cseq = req.cseq().map(|c| c.cseq).unwrap_or(0);
        *self.pending.entry(pending_key).or_insert(0) += 1;
        self.by_key.insert(dialog.key.clone(), call);
        self.dialogs.insert(call, dialog);
        self.invite_of.insert(call, key.clone());
        if let Some(k) = &merge_key {
            self.merged.insert(k.clone(), key.clone());
        }
        self.invites.insert(
            key,
            InviteEntry {
                tx,
                call,
                request: req,
                flow,
                cseq,
                merge_key,
                offerless: offer.is_empty(),
            },
        );
        self.events.push_back(Event::Incoming {
            call,
            offer,
            transport: flow.transport,
            source: Redacted(flow.remote),
            request_user: Redacted(request_user),
            trunk,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn reject_new(
        &mut self,
        now: Instant,
        mut tx: InviteServer,
        key: TxKey,
        call: CallToken,
        req: &Request,
        flow: Flow,
        code: u16,
        extra: &[(&str, &str)],
    ) {
        let tag = super::message::random_token();
        if let Ok(bytes) = build_response(req, flow.remote, code, Some(&tag), extra, None) {
            if let Some(t) = tx.send_final(now, code, Bytes::from(bytes)) {
                self.transmits.push_back(t);
            }
        }
        // The transaction is completed: from here on it only retransmits its response
        // and absorbs the ACK, which needs no part of the request. Keeping the parsed
        // request (and the datagram its headers point into) for the 32 s of Timer H
        // is what made an INVITE flood's 503s cost ~3 KiB each; without it ~1 KiB.
        let request = Request {
            method: req.method.clone(),
            uri: None,
            headers: Headers::new(),
            body: Bytes::new(),
            version_supported: req.version_supported,
        };
        self.invites.insert(
            key,
            InviteEntry {
                tx,
                call,
                request,
                flow,
                cseq: req.cseq().map(|c| c.cseq).unwrap_or(0),
                merge_key: None,
                offerless: false,
            },
        );
    }

    fn handle_reinvite(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let Some(call) = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied())
        else {
            let tx = self.new_invite_server(&req, flow);
            self.reject_new(now, tx, key, CallToken::random(), &req, flow, 481, &[]);
            return;
        };
        let cseq = req.cseq().map(|c| c.cseq).unwrap_or(0);
        let pending = self
            .invite_of
            .get(&call)
            .and_then(|k| self.invites.get(k))
            .is_some_and(|e| e.tx.state() == InviteServerState::Proceeding);
        let tx = self.new_invite_server(&req, flow);
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        if pending {
            // RFC 3261 §14.2: a second INVITE while one is pending gets 500 + Retry-After.
            self.reject_new(now, tx, key, call, &req, flow, 500, &[("Retry-After", "2")]);
            return;
        }
        if cseq <= dialog.remote_cseq {
            self.reject_new(now, tx, key, call, &req, flow, 500, &[]);
            return;
        }
        if session_timer::negotiate(&req, now, dialog.peer_allows_update) == Negotiation::TooSmall {
            let min = session_timer::MIN_SE.as_secs().to_string();
            self.reject_new(now, tx, key, call, &req, flow, 422, &[("Min-SE", &min)]);
            return;
        }
        dialog.remote_cseq = cseq;
        let offer = req.body.clone();
        self.invite_of.insert(call, key.clone());
        self.invites.insert(
            key,
            InviteEntry {
                tx,
                call,
                request: req,
                flow,
                cseq,
                merge_key: None,
                offerless: false,
            },
        );
        self.events.push_back(Event::Reinvite {
            call,
            offer,
            transport: flow.transport,
        });
    }

    fn handle_ack(&mut self, now: Instant, req: &Request) {
        // ACK for a non-2xx: same branch as the INVITE (RFC 3261 §17.2.3).
        if let Some(key) = TxKey::of(req, &Method::INVITE) {
            if let Some(e) = self.invites.get_mut(&key) {
                if e.tx.state() == InviteServerState::Completed {
                    e.tx.handle_ack(now);
                    return;
                }
            }
        }
        // ACK for a 2xx: its own transaction, matched to the dialog (RFC 3261 §13.3.1.4).
        let Some(call) = Self::dialog_key_of(req).and_then(|k| self.by_key.get(&k).copied()) else {
            return;
        };
        let cseq = req.cseq().map(|c| c.cseq).unwrap_or(0);
        if let Some(k) = self.invite_of.get(&call) {
            if let Some(e) = self.invites.get_mut(k) {
                if e.cseq != cseq {
                    // The ACK of an earlier INVITE (a retransmission): not for this 2xx.
                    return;
                }
                e.tx.handle_2xx_ack();
            }
        }
        let mut newly_confirmed = None;
        if let Some(d) = self.dialogs.get_mut(&call) {
            if d.state == DialogState::Accepted {
                d.state = DialogState::Confirmed;
                newly_confirmed = Some(d.flow.remote.ip());
            }
        }
        if let Some(source) = newly_confirmed {
            let offerless = self
                .invite_of
                .get(&call)
                .and_then(|k| self.invites.get(k))
                .is_some_and(|e| e.offerless);
            if offerless {
                self.events.push_back(Event::Answer {
                    call,
                    answer: req.body.clone(),
                });
            }
            self.pending_done(source);
            // The source answered our 2xx: it is who it claims to be (the ACK is our
            // return-routability check), so messages to it are no longer capped.
            self.verify_dialog(call);
        }
        if let Some(pos) = self.bye_after_ack.iter().position(|c| *c == call) {
            self.bye_after_ack.swap_remove(pos);
            self.send_bye(now, call);
        }
    }

    fn handle_cancel(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let invite_key = TxKey {
            method: Method::INVITE.to_string(),
            ..key.clone()
        };
        let Some(entry) = self.invites.get_mut(&invite_key) else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        let call = entry.call;
        let proceeding = entry.tx.state() == InviteServerState::Proceeding;
        let tag = self.dialogs.get(&call).map(|d| d.key.local_tag.clone());
        let initial = self
            .dialogs
            .get(&call)
            .is_some_and(|d| d.state == DialogState::Early);
        // RFC 3261 §9.2: the 200 to the CANCEL carries the To tag the 487 will carry.
        self.non_invite_response_tagged(now, key, &req, flow, 200, &[], tag.clone());
        if !proceeding {
            // Already answered: the CANCEL has no effect (RFC 3261 §9.2).
            return;
        }
        if let Some(entry) = self.invites.get_mut(&invite_key) {
            if let Ok(bytes) = build_response(
                &entry.request,
                entry.flow.remote,
                487,
                tag.as_deref(),
                &[],
                None,
            ) {
                if let Some(t) = entry.tx.send_final(now, 487, Bytes::from(bytes)) {
                    self.transmits.push_back(t);
                }
            }
        }
        // Cancelling a re-INVITE ends only that transaction; the call stays.
        if initial && self.remove_dialog(call) {
            self.events.push_back(Event::Cancelled { call });
        }
    }

    fn handle_bye(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let call = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied());
        let Some(call) = call else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        self.non_invite_response(now, key, &req, flow, 200, &[]);
        // A BYE before we answered also ends the pending INVITE (RFC 3261 §15.1.2).
        self.terminate_pending_invite(now, call);
        if self.remove_dialog(call) {
            self.events.push_back(Event::Ended {
                call,
                reason: EndReason::RemoteBye,
            });
        }
    }

    /// INFO inside a call: DTMF relay bodies become [`Event::Dtmf`]; an empty INFO (a
    /// keep-alive some PBXs send) gets 200; other bodies 415.
    fn handle_info(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let call = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied());
        let Some(call) = call else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        if req.body.is_empty() {
            self.non_invite_response(now, key, &req, flow, 200, &[]);
            return;
        }
        let content_type = req.raw(&Name::CONTENT_TYPE).unwrap_or_default();
        match info::parse_dtmf(content_type, &req.body) {
            Ok(digit) => {
                self.non_invite_response(now, key, &req, flow, 200, &[]);
                self.events.push_back(Event::Dtmf { call, digit });
            }
            // A body we read but that names no key: acknowledged, nothing happens.
            Err(info::InfoError::NoKey) => self.non_invite_response(now, key, &req, flow, 200, &[]),
            Err(info::InfoError::UnsupportedType) => self.non_invite_response(
                now,
                key,
                &req,
                flow,
                415,
                &[("Accept", "application/dtmf-relay, application/dtmf")],
            ),
        }
    }

    fn terminate_pending_invite(&mut self, now: Instant, call: CallToken) {
        let tag = self.dialogs.get(&call).map(|d| d.key.local_tag.clone());
        if let Some(k) = self.invite_of.get(&call) {
            if let Some(e) = self.invites.get_mut(k) {
                if e.tx.state() == InviteServerState::Proceeding {
                    if let Ok(b) =
                        build_response(&e.request, e.flow.remote, 487, tag.as_deref(), &[], None)
                    {
                        if let Some(t) = e.tx.send_final(now, 487, Bytes::from(b)) {
                            self.transmits.push_back(t);
                        }
                    }
                }
                e.tx.handle_2xx_ack();
            }
        }
    }

    fn remove_dialog(&mut self, call: CallToken) -> bool {
        self.invite_of.remove(&call);
        self.updates.remove(&call);
        self.bye_after_ack.retain(|c| *c != call);
        match self.dialogs.remove(&call) {
            Some(d) => {
                self.by_key.remove(&d.key);
                if d.verified {
                    for ip in Self::dialog_peers(&d) {
                        self.reflection.unverify(ip);
                    }
                }
                if d.state != DialogState::Confirmed {
                    self.pending_done(d.flow.remote.ip());
                }
                true
            }
            None => false,
        }
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

    /// Answers the pending INVITE or re-INVITE of `call` with 200 OK and this SDP.
    pub fn accept(&mut self, now: Instant, call: CallToken, sdp: &str) {
        if let Some((key, req, flow)) = self.updates.remove(&call) {
            if let Some(s) = self.dialogs.get_mut(&call).and_then(|d| d.session.as_mut()) {
                s.refreshed = now;
            }
            let headers = self.session_headers(call);
            self.answer_update(now, key, &req, flow, 200, &headers, Some(sdp));
            return;
        }
        let Some(key) = self.invite_of.get(&call).cloned() else {
            return;
        };
        let Some((transport, sips)) = self.invites.get(&key).map(|e| {
            let sips = e.request.uri.as_ref().is_some_and(|u| u.sips);
            (e.flow.transport, sips)
        }) else {
            return;
        };
        let local = self.local(transport);
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        let Some(entry) = self.invites.get_mut(&key) else {
            return;
        };
        if entry.tx.state() != InviteServerState::Proceeding {
            return;
        }
        if dialog.state == DialogState::Confirmed {
            // A re-INVITE is a session refresh too, and may change its terms.
            dialog.session =
                match session_timer::negotiate(&entry.request, now, dialog.peer_allows_update) {
                    Negotiation::Timer(t) => Some(t),
                    _ => None,
                };
        }
        if let Some(s) = dialog.session.as_mut() {
            s.refreshed = now;
        }
        let session_headers = dialog
            .session
            .map(|s| s.response_headers())
            .unwrap_or_default();
        // RFC 5630 §3.1.3: a sips dialog gets a sips Contact; otherwise say which
        // transport to come back on.
        let contact = match (sips, transport) {
            (true, _) => format!("<sips:sotto@{local}>"),
            (false, Transport::Udp) => format!("<sip:sotto@{local}>"),
            (false, t) => format!(
                "<sip:sotto@{local};transport={}>",
                t.via_name().to_ascii_lowercase()
            ),
        };
        // Lean on purpose: a 2xx to an unverified UDP source must fit in the budget the
        // INVITE bought (see poll_transmit) with room for its retransmissions, so
        // optional headers stay out.
        let extra = [("Contact", contact.as_str())];
        let mut extra_rr: Vec<(&str, &str)> = extra.to_vec();
        // RFC 3261 §12.1.1: a UAS copies Record-Route into its 2xx.
        let rr: Vec<String> = entry.request.record_route();
        for r in &rr {
            extra_rr.push(("Record-Route", r));
        }
        for (name, value) in &session_headers {
            extra_rr.push((name, value));
        }
        let Ok(bytes) = build_response(
            &entry.request,
            entry.flow.remote,
            200,
            Some(&dialog.key.local_tag),
            &extra_rr,
            Some(("application/sdp", sdp.as_bytes())),
        ) else {
            return;
        };
        if let Some(t) = entry.tx.send_final(now, 200, Bytes::from(bytes)) {
            self.transmits.push_back(t);
        }
        if dialog.state == DialogState::Early {
            dialog.state = DialogState::Accepted;
        }
    }

    /// Refuses the pending INVITE or re-INVITE of `call`. A refused initial INVITE ends the call
    /// (no [`Event::Ended`] follows: the application already knows).
    pub fn reject(&mut self, now: Instant, call: CallToken, code: u16, warning: Option<&str>) {
        if let Some((key, req, flow)) = self.updates.remove(&call) {
            // An UPDATE's offer refused: the session stays as it was (RFC 3311 §5.2).
            self.answer_update(now, key, &req, flow, code, &[], None);
            return;
        }
        let Some(key) = self.invite_of.get(&call).cloned() else {
            return;
        };
        let tag = self.dialogs.get(&call).map(|d| d.key.local_tag.clone());
        let initial = self
            .dialogs
            .get(&call)
            .is_some_and(|d| d.state == DialogState::Early);
        let Some(entry) = self.invites.get_mut(&key) else {
            return;
        };
        let warning = warning.map(|w| format!("399 sotto \"{}\"", w.replace('"', "'")));
        let extra: Vec<(&str, &str)> = warning.iter().map(|w| ("Warning", w.as_str())).collect();
        if let Ok(bytes) = build_response(
            &entry.request,
            entry.flow.remote,
            code,
            tag.as_deref(),
            &extra,
            None,
        ) {
            if let Some(t) = entry.tx.send_final(now, code, Bytes::from(bytes)) {
                self.transmits.push_back(t);
            }
        }
        if initial {
            self.remove_dialog(call);
        }
    }

    /// Ends `call` from our side: BYE once the dialog allows it. No [`Event::Ended`] follows.
    pub fn hangup(&mut self, now: Instant, call: CallToken) {
        let Some(state) = self.dialogs.get(&call).map(|d| d.state) else {
            return;
        };
        match state {
            DialogState::Early => {
                self.reject(now, call, 480, None);
            }
            DialogState::Accepted => {
                let acked = self
                    .invite_of
                    .get(&call)
                    .and_then(|k| self.invites.get(k))
                    .is_none_or(|e| e.tx.is_acked());
                if acked {
                    self.send_bye(now, call);
                } else if !self.bye_after_ack.contains(&call) {
                    // RFC 3261 §15: no BYE before the ACK or the 2xx's timeout.
                    self.bye_after_ack.push(call);
                }
            }
            DialogState::Confirmed => self.send_bye(now, call),
        }
    }

    fn send_bye(&mut self, now: Instant, call: CallToken) {
        // A re-INVITE still waiting for our answer gets its 487 before the call goes.
        self.terminate_pending_invite(now, call);
        let Some(mut dialog) = self.dialogs.remove(&call) else {
            return;
        };
        self.by_key.remove(&dialog.key);
        self.invite_of.remove(&call);
        self.updates.remove(&call);
        self.bye_after_ack.retain(|c| *c != call);
        if dialog.state != DialogState::Confirmed {
            self.pending_done(dialog.flow.remote.ip());
        }
        // The source stays verified until our BYE's transaction ends (retransmissions).
        let verified = if dialog.verified {
            Self::dialog_peers(&dialog)
        } else {
            Vec::new()
        };
        let local = self.local(dialog.flow.transport);
        let (branch, bytes) = dialog.build_bye(local);
        let (dest, connection) = dialog.next_hop();
        let (client, first) = NonInviteClient::new(
            now,
            Transmit {
                dest,
                connection,
                bytes: Bytes::from(bytes),
            },
            dialog.flow.transport.is_reliable(),
            self.cfg.timers,
        );
        self.transmits.push_back(first);
        self.clients
            .insert(branch, (client, verified, ClientPurpose::Bye));
    }

    /// Session timers that are due: our refresh goes out (UPDATE, RFC 4028 §10), or a
    /// session whose caller stopped refreshing is ended with BYE.
    fn on_session_timers(&mut self, now: Instant) {
        let due: Vec<(CallToken, Refresher)> = self
            .dialogs
            .iter()
            .filter_map(|(c, d)| {
                let s = d.session?;
                (s.deadline() <= now && d.state == DialogState::Confirmed)
                    .then_some((*c, s.refresher))
            })
            .collect();
        for (call, refresher) in due {
            match refresher {
                Refresher::Uac => self.end_expired(now, call),
                Refresher::Uas => self.send_refresh(now, call),
            }
        }
    }

    /// Sends our session refresh: an UPDATE without a body.
    fn send_refresh(&mut self, now: Instant, call: CallToken) {
        let Some(transport) = self.dialogs.get(&call).map(|d| d.flow.transport) else {
            return;
        };
        let local = self.local(transport);
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        let Some(session) = dialog.session.as_mut() else {
            return;
        };
        // Counted from now: the next one is due half an interval on, whatever the
        // answer; a failed one ends the call.
        session.refreshed = now;
        let headers = [
            (
                "Session-Expires",
                format!("{};refresher=uas", session.interval.as_secs()),
            ),
            ("Supported", SUPPORTED.to_string()),
        ];
        let (branch, bytes) = dialog.build_request("UPDATE", local, &headers);
        let (dest, connection) = dialog.next_hop();
        let verified = if dialog.verified && connection.is_none() {
            Self::dialog_peers(dialog)
        } else {
            Vec::new()
        };
        for ip in &verified {
            // Kept verified while the refresh runs, like a BYE's.
            self.reflection.verify(*ip);
        }
        let (client, first) = NonInviteClient::new(
            now,
            Transmit {
                dest,
                connection,
                bytes: Bytes::from(bytes),
            },
            transport.is_reliable(),
            self.cfg.timers,
        );
        self.transmits.push_back(first);
        self.clients
            .insert(branch, (client, verified, ClientPurpose::Refresh(call)));
    }

    /// Ends a call whose session timer ran out (RFC 4028 §10): BYE, and the
    /// application hears of it.
    fn end_expired(&mut self, now: Instant, call: CallToken) {
        if !self.dialogs.contains_key(&call) {
            return;
        }
        self.send_bye(now, call);
        self.events.push_back(Event::Ended {
            call,
            reason: EndReason::SessionExpired,
        });
    }

    /// UPDATE inside a call (RFC 3311): without a body it refreshes the session timer
    /// (answered at once); with an SDP offer the application answers it through
    /// [`Endpoint::accept`] as it answers a re-INVITE.
    fn handle_update(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let call = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied());
        let Some(call) = call else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        // A peer that sends UPDATE can take ours: we may be the refresher.
        match session_timer::negotiate(&req, now, true) {
            Negotiation::TooSmall => {
                let min = session_timer::MIN_SE.as_secs().to_string();
                self.non_invite_response(now, key, &req, flow, 422, &[("Min-SE", &min)]);
                return;
            }
            Negotiation::Timer(t) => {
                if let Some(d) = self.dialogs.get_mut(&call) {
                    d.session = Some(t);
                }
            }
            Negotiation::None => {}
        }
        if req.body.is_empty() {
            let headers = self.session_headers(call);
            let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            self.non_invite_response(now, key, &req, flow, 200, &extra);
            return;
        }
        let offer = req.body.clone();
        self.updates.insert(call, (key, req, flow));
        self.events.push_back(Event::Reinvite {
            call,
            offer,
            transport: flow.transport,
        });
    }

    /// Answers an UPDATE (with an SDP answer when it carried an offer).
    #[allow(clippy::too_many_arguments)]
    fn answer_update(
        &mut self,
        now: Instant,
        key: TxKey,
        req: &Request,
        flow: Flow,
        code: u16,
        headers: &[(&'static str, String)],
        sdp: Option<&str>,
    ) {
        let Ok(via) = req.top_via() else { return };
        let dest = response_destination(&via, flow.remote, flow.transport);
        let tag = self.dialog_of(req).map(|d| d.key.local_tag.clone());
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = sdp.map(|s| ("application/sdp", s.as_bytes()));
        let Ok(bytes) = build_response(req, flow.remote, code, tag.as_deref(), &extra, body) else {
            return;
        };
        let mut tx = NonInviteServer::new(dest, flow.transport.is_reliable(), self.cfg.timers)
            .with_connection(flow.connection);
        if let Some(t) = tx.send(now, code, Bytes::from(bytes)) {
            self.transmits.push_back(t);
        }
        self.non_invites.insert(key, tx);
    }

    /// The session-timer headers of a 2xx for `call`, if it has a timer.
    fn session_headers(&self, call: CallToken) -> Vec<(&'static str, String)> {
        self.dialogs
            .get(&call)
            .and_then(|d| d.session)
            .map(|s| s.response_headers())
            .unwrap_or_default()
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

/// The option tags of `Require` we do not support, if any (RFC 3261 §8.2.2.3 → 420):
/// all but `timer` (RFC 4028) and `100rel` (RFC 3262: we send no provisional response
/// that would need to be reliable).
fn unsupported_requirements(req: &Request) -> Option<String> {
    let tags: Vec<&str> = req
        .headers
        .get_raw(&Name::REQUIRE)
        .flat_map(|v| v.as_str().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter(|t| !t.eq_ignore_ascii_case("timer") && !t.eq_ignore_ascii_case("100rel"))
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}

/// Whether the caller can read an SDP answer: no Accept header means `application/sdp`
/// (RFC 3261 §20.1); otherwise one of its media ranges must cover it. An Accept with no
/// ranges at all accepts nothing. A range with `q=0` is refused (RFC 3261 §20.1 borrows
/// HTTP's q-values: 0 means "not acceptable").
fn accepts_sdp(req: &Request) -> bool {
    let mut values = req.headers.get_raw(&Name::ACCEPT).peekable();
    if values.peek().is_none() {
        return true;
    }
    values.flat_map(|v| v.as_str().split(',')).any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p.strip_prefix("q")
                .map(|rest| rest.trim_start())
                .and_then(|rest| rest.strip_prefix('='))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && matches!(media.as_str(), "application/sdp" | "application/*" | "*/*")
    })
}

fn is_known_method(m: &Method) -> bool {
    [
        Method::REGISTER,
        Method::MESSAGE,
        Method::UPDATE,
        Method::PRACK,
        Method::SUBSCRIBE,
        Method::NOTIFY,
        Method::PUBLISH,
        Method::INFO,
        Method::REFER,
    ]
    .contains(m)
}
