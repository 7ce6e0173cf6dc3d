//! Fuzz target: the SIP UAS core (`sotto::sip::endpoint::Endpoint`) behind the parser:
//! transactions, dialogs, timers and the anti-amplification budget.
//!
//! Input layout: one control byte, then up to four messages separated by [`SEPARATOR`].
//! Each message is fed, in order, to a fresh UDP endpoint (as a datagram) and to a fresh
//! stream endpoint (as a framed TCP or TLS message); between messages the virtual clock
//! moves on and every deadline on the way fires. After the last message the clock runs
//! past every RFC 3261 timer, with one step back in time on the way.
//!
//! Our To tags and BYE branches are random, so a fuzzer could never guess them: in the
//! second and later messages `$TAG` is replaced by the To tag of the last response we
//! sent and `$BRANCH` by the branch of the last request we sent, which lets inputs reach
//! ACKs, BYEs and re-INVITEs inside a dialog and responses to our BYE.
//!
//! Control byte:
//! - bits 0–1: what the application does with an offer: accept, reject with 488, leave
//!   it pending, accept and hang up at once;
//! - bit 2: hang up every call after the last message;
//! - bit 3: the stream endpoint's transport is TLS (else TCP);
//! - bits 4–5: time between messages: 0, 20 ms, 600 ms, 40 s;
//! - bit 6: at most one transaction (overload paths);
//! - bit 7: every message arrives twice (retransmissions).
//!
//! Both endpoints drop known scanners' User-Agents; the UDP one serves only
//! `conf.example.org` (and its own addresses), the stream one any domain.
//!
//! Checked: everything we send parses as SIP, stays within a bound of what came in,
//! goes on the caller's connection when the call came on a stream, and over UDP we
//! send no more than 3× the bytes we received until the caller has acknowledged a 2xx
//! (anti-amplification); timers that are due always clear.

#![no_main]

use bytes::Bytes;
use ezk_sip_types::Method;
use libfuzzer_sys::fuzz_target;
use sotto::redact::CallToken;
use sotto::sip::endpoint::{
    Endpoint, EndpointConfig, Event, RequestFilters, AMPLIFICATION_FACTOR,
};
use sotto::sip::message::{parse, HeaderAccess, Limits, Message};
use sotto::sip::transaction::{Timers, Transmit};
use sotto::sip::transport::{ConnectionId, Flow, Transport};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Separates the messages of one input.
const SEPARATOR: &[u8] = b"\n<=>\n";
/// Most messages per input.
const MAX_MESSAGES: usize = 4;
/// The connection a stream endpoint's messages arrive on.
const CONNECTION: ConnectionId = ConnectionId(7);
/// What the application answers offers with.
const ANSWER: &str = "v=0\r\no=sotto 1 1 IN IP4 127.0.0.1\r\ns=sotto\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
/// Limits for parsing what we send back (it may be a little larger than what came in).
const GENEROUS: Limits = Limits {
    max_size: 1 << 20,
    max_headers: 10_000,
};
/// Bound on one deadline-firing run: each iteration fires at least one timer, and no
/// input arms more than a few dozen.
const TIMER_ROUNDS: usize = 10_000;

/// Whether to print the first line of every message in and out (for writing seeds:
/// `SOTTO_FUZZ_TRACE=1 fuzz/target/.../sip_endpoint INPUT`).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SOTTO_FUZZ_TRACE").is_some())
}

fn first_line(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).trim_end().to_string()
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5060))
}

fn caller() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 40001))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Accept,
    Reject,
    Ignore,
    AcceptThenHangUp,
}

/// One endpoint on a virtual clock, with what the checks need to remember.
struct Bench {
    ep: Endpoint,
    flow: Flow,
    now: Instant,
    policy: Policy,
    calls: Vec<CallToken>,
    /// Largest message fed so far.
    largest_in: usize,
    /// Bytes fed and bytes sent, for the anti-amplification check (UDP only).
    bytes_in: usize,
    bytes_out: usize,
    /// Whether an ACK was fed: after one the caller may be verified and the budget ends.
    acked: bool,
    /// Substitutions for `$TAG` and `$BRANCH`.
    last_tag: Option<String>,
    last_branch: Option<String>,
    /// Messages already parsed back (retransmissions need no second look).
    checked: HashSet<Bytes>,
}

impl Bench {
    fn new(flow: Flow, t0: Instant, policy: Policy, max_transactions: usize) -> Bench {
        let mut ep = Endpoint::new(EndpointConfig {
            local: local(),
            local_tcp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            local_tls: Some(SocketAddr::from(([127, 0, 0, 1], 5061))),
            timers: Timers::default(),
            limits: Limits::default(),
            max_transactions,
            // As the bridge runs it (the check below relies on it).
            amplification_guard: true,
            trunks: Default::default(),
        });
        // The shipped scanner list's first entries; a domain list on UDP only, so that
        // both the "any domain" and the "our domains" paths run.
        let domains = match flow.connection {
            None => vec!["conf.example.org".to_string()],
            Some(_) => Vec::new(),
        };
        ep.set_filters(RequestFilters {
            scanner_user_agents: vec!["friendly-scanner".to_string(), "sipvicious".to_string()],
            domains,
        });
        Bench {
            ep,
            flow,
            now: t0,
            policy,
            calls: Vec::new(),
            largest_in: 0,
            bytes_in: 0,
            bytes_out: 0,
            acked: false,
            last_tag: None,
            last_branch: None,
            checked: HashSet::new(),
        }
    }

    fn feed(&mut self, message: &[u8]) {
        let message = substitute(message, b"$TAG", self.last_tag.as_deref());
        let message = substitute(&message, b"$BRANCH", self.last_branch.as_deref());
        self.largest_in = self.largest_in.max(message.len());
        self.bytes_in += message.len();
        if is_ack(&message) {
            self.acked = true;
        }
        if trace() {
            eprintln!("{:?} in:  {}", self.flow.transport, first_line(&message));
        }
        let data = Bytes::from(message);
        if self.flow.connection.is_some() {
            self.ep.handle_message(self.now, self.flow, data);
        } else {
            self.ep.handle_datagram(self.now, self.flow.remote, data);
        }
        self.settle();
    }

    /// Drains transmits and events, answering events as the policy says, until quiet.
    fn settle(&mut self) {
        // Each round answers what the last one produced; accept and hangup produce
        // transmits but no events, so two rounds suffice and four are plenty.
        for _ in 0..4 {
            while let Some(t) = self.ep.poll_transmit() {
                self.check_transmit(&t);
            }
            let events: Vec<Event> = std::iter::from_fn(|| self.ep.poll_event()).collect();
            if events.is_empty() {
                return;
            }
            for event in events {
                self.on_event(event);
            }
        }
        while let Some(t) = self.ep.poll_transmit() {
            self.check_transmit(&t);
        }
    }

    fn on_event(&mut self, event: Event) {
        if trace() {
            eprintln!("{:?} event: {event:?}", self.flow.transport);
        }
        let (call, offer) = match event {
            Event::Incoming { call, offer, .. } => (call, offer),
            Event::Reinvite { call, offer, .. } => (call, offer),
            Event::Cancelled { call } | Event::Ended { call, .. } => {
                self.calls.retain(|c| *c != call);
                return;
            }
            Event::Dtmf { call, .. } => {
                assert!(self.calls.contains(&call), "a key for a call we never saw");
                return;
            }
            Event::AuthFailed { .. } => return,
            Event::Answer { call, answer } => {
                assert!(self.calls.contains(&call), "an answer for a call we never saw");
                assert!(answer.len() <= self.largest_in, "an answer larger than its message");
                return;
            }
        };
        assert!(
            offer.len() <= self.largest_in,
            "an offer larger than its message"
        );
        if !self.calls.contains(&call) {
            self.calls.push(call);
        }
        match self.policy {
            Policy::Accept => self.ep.accept(self.now, call, ANSWER),
            Policy::Reject => self
                .ep
                .reject(self.now, call, 488, Some("fuzz \"says\" no")),
            Policy::Ignore => {}
            Policy::AcceptThenHangUp => {
                self.ep.accept(self.now, call, ANSWER);
                self.ep.hangup(self.now, call);
            }
        }
    }

    fn check_transmit(&mut self, t: &Transmit) {
        if trace() {
            eprintln!("{:?} out: {}", self.flow.transport, first_line(&t.bytes));
        }
        assert!(!t.bytes.is_empty(), "an empty transmit");
        assert_eq!(
            t.connection, self.flow.connection,
            "a stream call must be answered on its connection, a UDP call never on one"
        );
        assert!(
            t.bytes.len() <= 2 * self.largest_in + 4096,
            "sent {} bytes for messages of at most {}",
            t.bytes.len(),
            self.largest_in
        );
        if self.flow.connection.is_none() {
            self.bytes_out += t.bytes.len();
            if !self.acked {
                assert!(
                    self.bytes_out <= AMPLIFICATION_FACTOR * self.bytes_in,
                    "amplification: sent {} bytes to an unverified source that sent {}",
                    self.bytes_out,
                    self.bytes_in
                );
            }
        }
        if !self.checked.insert(t.bytes.clone()) {
            return;
        }
        let parsed = parse(t.bytes.clone(), &GENEROUS);
        match parsed {
            Ok(Message::Response(r)) => {
                if let Some(tag) = r.to().ok().and_then(|to| to.tag) {
                    self.last_tag = Some(tag.to_string());
                }
            }
            Ok(Message::Request(r)) => {
                let branch = r
                    .top_via()
                    .ok()
                    .and_then(|v| v.params.get_val("branch").map(|b| b.to_string()));
                if branch.is_some() {
                    self.last_branch = branch;
                }
                if let Ok(from) = r.from() {
                    if let Some(tag) = from.tag {
                        self.last_tag = Some(tag.to_string());
                    }
                }
            }
            Err(e) => panic!(
                "the endpoint sent something unparseable ({e}):\n{}",
                String::from_utf8_lossy(&t.bytes)
            ),
        }
    }

    /// Moves the clock to `target`, firing every deadline on the way.
    fn run_until(&mut self, target: Instant) {
        for _ in 0..TIMER_ROUNDS {
            match self.ep.poll_timeout() {
                Some(deadline) if deadline <= target => {
                    self.now = self.now.max(deadline);
                    self.ep.handle_timeout(self.now);
                    self.settle();
                }
                _ => {
                    self.now = self.now.max(target);
                    return;
                }
            }
        }
        panic!("a deadline keeps firing: timers do not clear");
    }

    /// After the last message: hang up if asked, then let every timer run out.
    fn finish(&mut self, hang_up: bool) {
        if hang_up {
            for call in self.calls.clone() {
                self.ep.hangup(self.now, call);
            }
            self.settle();
        }
        let start = self.now;
        for ms in [1, 500, 4_000, 32_000, 33_000, 64_000, 200_000] {
            self.run_until(start + Duration::from_millis(ms));
            // handle_timeout at an instant no deadline asked for must be harmless.
            self.ep.handle_timeout(self.now);
            self.settle();
        }
        // Time that goes backwards is ignored.
        self.ep.handle_timeout(start);
        self.settle();
        self.run_until(start + Duration::from_secs(400));
    }
}

fn is_ack(message: &[u8]) -> bool {
    matches!(
        parse(Bytes::copy_from_slice(message), &GENEROUS),
        Ok(Message::Request(r)) if r.method == Method::ACK
    )
}

/// `haystack` with every `needle` replaced by `with` (left alone without a value).
fn substitute(haystack: &[u8], needle: &[u8], with: Option<&str>) -> Vec<u8> {
    let Some(with) = with else {
        return haystack.to_vec();
    };
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with.as_bytes());
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Splits `data` on [`SEPARATOR`] into at most [`MAX_MESSAGES`] parts.
fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < MAX_MESSAGES {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let policy = match control & 0b11 {
        0 => Policy::Accept,
        1 => Policy::Reject,
        2 => Policy::Ignore,
        _ => Policy::AcceptThenHangUp,
    };
    let hang_up = control & 0b100 != 0;
    let stream_transport = if control & 0b1000 != 0 {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    let step = [0, 20, 600, 40_000][usize::from((control >> 4) & 0b11)];
    let step = Duration::from_millis(step);
    let max_transactions = if control & 0b100_0000 != 0 { 1 } else { 100 };
    let twice = control & 0b1000_0000 != 0;
    let messages = split(rest);

    #[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
    let t0 = Instant::now();
    let flows = [
        Flow::udp(caller()),
        Flow::stream(stream_transport, caller(), CONNECTION),
    ];
    for flow in flows {
        let mut bench = Bench::new(flow, t0, policy, max_transactions);
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                let target = bench.now + step;
                bench.run_until(target);
            }
            bench.feed(message);
            if twice {
                bench.feed(message);
            }
        }
        bench.finish(hang_up);
    }
});
