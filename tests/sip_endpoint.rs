//! Scenario tests of the sans-IO SIP UAS core, [`sotto::sip::endpoint::Endpoint`].
//!
//! Each test plays one caller against one endpoint on a virtual clock: datagrams go in
//! with `handle_datagram(now, ..)`, the clock only moves to the deadlines the endpoint
//! asks for (`poll_timeout`), and everything it sends is parsed back with
//! `sotto::sip::message::parse` to assert on status codes, headers and send times.
//! Nothing sleeps and nothing touches a socket.

use bytes::Bytes;
use ezk_sip_types::Name;
use sotto::config::{Cidr, DigestCredentials, DtmfMode, TrunkConfig, Trunks};
use sotto::redact::CallToken;
use sotto::sip::endpoint::{EndReason, Endpoint, EndpointConfig, Event, RequestFilters};
use sotto::sip::message::{parse, HeaderAccess, Limits, Message, Request, Response};
use sotto::sip::transaction::{Timers, Transmit};
use sotto::sip::transport::{ConnectionId, Flow, Transport};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::{Duration, Instant};

// ---- the testkit ----------------------------------------------------------------------

/// Our address, as configured.
const LOCAL: &str = "127.0.0.1:5060";
/// Where the caller's datagrams come from: a NAT in front of the phone, so the source
/// differs from the Via sent-by (`10.0.0.2:5070`) and only rport gets answers back.
const CALLER: &str = "192.0.2.10:40001";
/// The caller's Via sent-by, as written in its requests.
const CALLER_VIA: &str = "10.0.0.2:5070";
/// The caller's From header (with its tag) in every request it sends.
const CALLER_FROM: &str = "\"Alice\" <sip:alice@example.org>;tag=alice-tag";
/// The To header of the initial INVITE (before we add our tag).
const CONF_TO: &str = "<sip:conf@127.0.0.1>";
/// The caller's Contact URI (the remote target of the dialog).
const CALLER_CONTACT: &str = "sip:alice@10.0.0.2:5070;transport=udp";

/// An SDP offer as a phone would send it (CRLF line ends).
const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 10.0.0.2\r\n\
s=-\r\n\
c=IN IP4 10.0.0.2\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

/// The answer the application gives to `accept`.
const ANSWER: &str = "v=0\r\n\
o=sotto 1 1 IN IP4 127.0.0.1\r\n\
s=sotto\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// One endpoint on a virtual clock, plus what it sent and when.
struct Bench {
    ep: Endpoint,
    t0: Instant,
    now: Instant,
}

impl Bench {
    fn new() -> Self {
        Self::with_max_transactions(100)
    }

    fn with_max_transactions(max_transactions: usize) -> Self {
        Self::with_config(max_transactions, false)
    }

    /// With the amplification guard on, as in the bridge.
    fn guarded() -> Self {
        Self::with_config(100, true)
    }

    /// The RFC timer schedules are checked with the amplification guard off (it would
    /// drop retransmissions to a caller that has not sent as many bytes); the guard has
    /// its own tests (section 14).
    fn with_config(max_transactions: usize, amplification_guard: bool) -> Self {
        Self::with_trunks(max_transactions, amplification_guard, Trunks::default())
    }

    fn with_trunks(max_transactions: usize, amplification_guard: bool, trunks: Trunks) -> Self {
        let ep = Endpoint::new(EndpointConfig {
            local: addr(LOCAL),
            timers: Timers::default(),
            limits: Limits::default(),
            max_transactions,
            amplification_guard,
            trunks,
            local_tcp: None,
            local_tls: None,
        });
        #[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
        let t0 = Instant::now();
        Bench { ep, t0, now: t0 }
    }

    /// Virtual time `ms` milliseconds after the start.
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Milliseconds since the start.
    fn elapsed_ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    /// Moves the clock to `at_ms`, firing every deadline on the way; returns what was sent
    /// by the timers, each with the millisecond it was sent at.
    fn run_until(&mut self, at_ms: u64) -> Vec<(u64, Transmit)> {
        let target = self.at(at_ms);
        assert!(target >= self.now, "the virtual clock only moves forward");
        let mut sent = Vec::new();
        // Each iteration fires at least one timer; 10 000 is far more than any scenario
        // here arms, so hitting the bound means a deadline that never clears.
        for _ in 0..10_000 {
            match self.ep.poll_timeout() {
                Some(deadline) if deadline <= target => {
                    self.now = self.now.max(deadline);
                    self.ep.handle_timeout(self.now);
                    let t = self.elapsed_ms();
                    sent.extend(self.drain().into_iter().map(|m| (t, m)));
                }
                _ => {
                    self.now = target;
                    return sent;
                }
            }
        }
        panic!("a deadline at or before {at_ms} ms keeps firing");
    }

    /// Delivers one datagram from `source` at `at_ms` (timers due before it fire first).
    fn deliver_from(&mut self, at_ms: u64, source: &str, data: Bytes) -> Vec<Transmit> {
        let earlier = self.run_until(at_ms);
        assert!(
            earlier.is_empty(),
            "unexpected timer sends before {at_ms} ms: {:?}",
            texts(earlier.iter().map(|(_, t)| t))
        );
        self.ep.handle_datagram(self.now, addr(source), data);
        self.drain()
    }

    /// Delivers a datagram from the caller.
    fn deliver(&mut self, at_ms: u64, data: Bytes) -> Vec<Transmit> {
        self.deliver_from(at_ms, CALLER, data)
    }

    fn drain(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.ep.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }

    /// The single `Incoming` event that must be waiting.
    fn incoming(&mut self) -> (CallToken, Bytes, String) {
        let mut events = self.events();
        assert_eq!(events.len(), 1, "expected one Incoming, got {events:?}");
        match events.remove(0) {
            Event::Incoming {
                call,
                offer,
                request_user,
                ..
            } => (call, offer, request_user.expose().clone()),
            other => panic!("expected Incoming, got {other:?}"),
        }
    }

    /// Moves the clock to `at_ms` (no timer may send on the way) and accepts `call`.
    fn accept(&mut self, at_ms: u64, call: CallToken, sdp: &str) -> Vec<Transmit> {
        let earlier = self.run_until(at_ms);
        assert!(earlier.is_empty(), "unexpected timer sends before accept");
        self.ep.accept(self.now, call, sdp);
        self.drain()
    }

    /// Moves the clock to `at_ms` (no timer may send on the way) and calls
    /// `handle_timeout` there, as the I/O loop does when it wakes with nothing due.
    fn idle_wake(&mut self, at_ms: u64) {
        let earlier = self.run_until(at_ms);
        assert!(
            earlier.is_empty(),
            "unexpected timer sends before {at_ms} ms"
        );
        self.ep.handle_timeout(self.now);
        assert!(self.drain().is_empty(), "nothing was due at {at_ms} ms");
    }

    fn hangup(&mut self, at_ms: u64, call: CallToken) -> Vec<Transmit> {
        let earlier = self.run_until(at_ms);
        assert!(earlier.is_empty(), "unexpected timer sends before hangup");
        self.ep.hangup(self.now, call);
        self.drain()
    }

    /// INVITE (no 100 Trying: the answer follows within the turn), Incoming, accept at
    /// 100 ms, 200, ACK at 200 ms: a confirmed call. Returns the call and our To tag.
    fn confirmed_call(&mut self, invite: Req) -> (CallToken, String) {
        let out = self.deliver(0, invite.build());
        assert!(out.is_empty(), "no 100 Trying for an INVITE (§17.2.1)");
        let (call, _, _) = self.incoming();
        let out = self.accept(100, call, ANSWER);
        assert_eq!(codes(&out), [200]);
        let tag = to_tag(&response(&out[0])).expect("200 has a To tag");
        let out = self.deliver(200, ack_2xx(&invite, &tag).build());
        assert!(out.is_empty(), "nothing answers an ACK");
        assert!(self.events().is_empty());
        (call, tag)
    }
}

/// A request as the caller builds it; `build()` adds Content-Length and CRLF line ends.
#[derive(Clone)]
struct Req {
    method: String,
    uri: String,
    /// Via header values, one line each, top first.
    vias: Vec<String>,
    from: String,
    to: String,
    call_id: String,
    cseq: String,
    max_forwards: String,
    contact: Option<String>,
    /// Further header lines, written as they are.
    extra: Vec<String>,
    content_type: Option<String>,
    body: String,
    /// Header names (as written above) to leave out.
    omit: Vec<&'static str>,
}

impl Req {
    fn new(method: &str, branch: &str, call_id: &str, cseq: u32) -> Req {
        Req {
            method: method.to_string(),
            uri: "sip:conf@127.0.0.1:5060".to_string(),
            vias: vec![format!("SIP/2.0/UDP {CALLER_VIA};branch={branch};rport")],
            from: CALLER_FROM.to_string(),
            to: CONF_TO.to_string(),
            call_id: call_id.to_string(),
            cseq: format!("{cseq} {method}"),
            max_forwards: "70".to_string(),
            contact: None,
            extra: Vec::new(),
            content_type: None,
            body: String::new(),
            omit: Vec::new(),
        }
    }

    /// An initial INVITE with an SDP offer.
    fn invite(branch: &str, call_id: &str) -> Req {
        let mut r = Req::new("INVITE", branch, call_id, 1);
        r.contact = Some(format!("<{CALLER_CONTACT}>"));
        r.content_type = Some("application/sdp".to_string());
        r.body = OFFER.to_string();
        r
    }

    /// A request inside the dialog: To carries our tag, the Request-URI is our Contact.
    fn in_dialog(method: &str, branch: &str, call_id: &str, cseq: u32, our_tag: &str) -> Req {
        let mut r = Req::new(method, branch, call_id, cseq);
        r.uri = format!("sip:sotto@{LOCAL}");
        r.to = format!("{CONF_TO};tag={our_tag}");
        r
    }

    fn header(mut self, line: &str) -> Req {
        self.extra.push(line.to_string());
        self
    }

    fn without(mut self, name: &'static str) -> Req {
        self.omit.push(name);
        self
    }

    fn build(&self) -> Bytes {
        Bytes::from(self.text())
    }

    fn text(&self) -> String {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        let mut line = |name: &'static str, value: &str| {
            if !self.omit.contains(&name) {
                s.push_str(&format!("{name}: {value}\r\n"));
            }
        };
        for v in &self.vias {
            line("Via", v);
        }
        line("Max-Forwards", &self.max_forwards);
        line("From", &self.from);
        line("To", &self.to);
        line("Call-ID", &self.call_id);
        line("CSeq", &self.cseq);
        if let Some(c) = &self.contact {
            line("Contact", c);
        }
        if let Some(c) = &self.content_type {
            line("Content-Type", c);
        }
        for e in &self.extra {
            s.push_str(e);
            s.push_str("\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        s.push_str(&self.body);
        s
    }
}

/// The ACK for our 2xx to `invite`: a new transaction (new branch), To with our tag.
fn ack_2xx(invite: &Req, our_tag: &str) -> Req {
    let cseq: u32 = invite.cseq.split(' ').next().unwrap().parse().unwrap();
    let mut ack = Req::in_dialog("ACK", "z9hG4bKack2xx", &invite.call_id, cseq, our_tag);
    ack.uri = format!("sip:sotto@{LOCAL}");
    ack.from = invite.from.clone();
    ack.to = format!("{};tag={our_tag}", invite.to);
    ack
}

/// The ACK for a non-2xx final response to `invite`: same branch, To from the response.
fn ack_error(invite: &Req, response_to_tag: &str) -> Req {
    let mut ack = invite.clone();
    ack.method = "ACK".to_string();
    ack.cseq = ack.cseq.replace("INVITE", "ACK");
    ack.to = format!("{};tag={response_to_tag}", invite.to);
    ack.contact = None;
    ack.content_type = None;
    ack.body.clear();
    ack
}

/// The CANCEL for `invite` (RFC 3261 §9.1: same Request-URI, Call-ID, To, From, CSeq
/// number and top Via).
fn cancel_of(invite: &Req) -> Req {
    let mut c = invite.clone();
    c.method = "CANCEL".to_string();
    c.cseq = c.cseq.replace("INVITE", "CANCEL");
    c.contact = None;
    c.content_type = None;
    c.body.clear();
    c
}

fn parse_message(t: &Transmit) -> Message {
    parse(t.bytes.clone(), &Limits::default())
        .unwrap_or_else(|e| panic!("endpoint sent unparseable bytes ({e}): {}", text(t)))
}

fn response(t: &Transmit) -> Response {
    match parse_message(t) {
        Message::Response(r) => r,
        Message::Request(_) => panic!("expected a response, got {}", text(t)),
    }
}

fn request(t: &Transmit) -> Request {
    match parse_message(t) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request, got {}", text(t)),
    }
}

fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.bytes).into_owned()
}

/// The start of each message, enough to recognise it in a failure report.
fn texts<'a>(ts: impl Iterator<Item = &'a Transmit>) -> Vec<String> {
    ts.map(|t| text(t).chars().take(200).collect()).collect()
}

/// Status codes of responses, in order.
fn codes(out: &[Transmit]) -> Vec<u16> {
    out.iter().map(|t| response(t).code).collect()
}

fn to_tag(r: &impl HeaderAccess) -> Option<String> {
    r.to().ok()?.tag.map(|t| t.to_string())
}

fn raw(r: &impl HeaderAccess, name: Name) -> Option<String> {
    r.raw(&name).map(|v| v.trim().to_string())
}

fn all_raw(r: &impl HeaderAccess, name: Name) -> Vec<String> {
    r.headers()
        .get_raw(&name)
        .map(|v| v.as_str().trim().to_string())
        .collect()
}

fn cseq_method(r: &impl HeaderAccess) -> String {
    r.cseq().expect("CSeq").method.to_string()
}

fn via_param(r: &impl HeaderAccess, name: &str) -> Option<String> {
    r.top_via()
        .expect("Via")
        .params
        .get_val(name)
        .map(|v| v.to_string())
}

/// Names of the header lines of a message as sent, lower-case, in order.
fn header_names(t: &Transmit) -> Vec<String> {
    let text = text(t);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .skip(1)
        .map(|line| {
            let name = line.split(':').next().unwrap_or_default();
            name.trim().to_ascii_lowercase()
        })
        .collect()
}

/// Total bytes of what was sent.
fn bytes_of<'a>(ts: impl IntoIterator<Item = &'a Transmit>) -> usize {
    ts.into_iter().map(|t| t.bytes.len()).sum()
}

/// Comma-separated tokens of a header value.
fn tokens(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|t| t.trim().to_ascii_uppercase())
        .filter(|t| !t.is_empty())
        .collect()
}

// ---- 1. the basic call -----------------------------------------------------------------

/// RFC 3261 §7.3.3 compact forms, as some phones send them.
fn compact_invite() -> String {
    let body = OFFER;
    format!(
        "INVITE sip:conf@127.0.0.1:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP {CALLER_VIA};branch=z9hG4bKcompact1;rport\r\n\
Max-Forwards: 70\r\n\
f: {CALLER_FROM}\r\n\
t: {CONF_TO}\r\n\
i: compact-call@10.0.0.2\r\n\
CSeq: 4711 INVITE\r\n\
m: <{CALLER_CONTACT}>\r\n\
c: application/sdp\r\n\
l: {}\r\n\
\r\n{body}",
        body.len()
    )
}

#[test]
fn invite_gets_no_trying_but_an_incoming_event_with_offer_user_transport_and_source() {
    let mut b = Bench::new();
    let out = b.deliver(0, Bytes::from(compact_invite()));
    // RFC 3261 §17.2.1: the 100 is only needed when the TU will not answer within
    // 200 ms; the application answers within the same turn.
    assert!(out.is_empty(), "no 100 Trying: {:?}", texts(out.iter()));
    let events = b.events();
    match events.as_slice() {
        [Event::Incoming {
            offer,
            transport,
            source,
            request_user,
            ..
        }] => {
            assert_eq!(&offer[..], OFFER.as_bytes());
            assert_eq!(request_user.expose(), "conf");
            assert_eq!(*transport, Transport::Udp);
            assert_eq!(*source.expose(), addr(CALLER), "the datagram's source");
        }
        other => panic!("expected one Incoming, got {other:?}"),
    }
    assert_eq!(b.ep.dialogs(), 1);
    // Nothing is sent until the application answers.
    assert!(b.run_until(10_000).is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn accept_sends_200_with_tag_contact_sdp_and_stamped_via() {
    let mut b = Bench::new();
    b.deliver(0, Bytes::from(compact_invite()));
    let (call, _, _) = b.incoming();
    let out = b.accept(100, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    assert_eq!(out[0].dest, addr(CALLER));
    let ok = response(&out[0]);

    let tag = to_tag(&ok).expect("the 2xx To has our tag (§8.2.6.2)");
    assert!(tag.len() >= 8, "a tag has at least 32 random bits: {tag}");
    assert_eq!(
        raw(&ok, Name::TO).unwrap(),
        format!("{CONF_TO};tag={tag}"),
        "To = the INVITE's To plus our tag"
    );
    assert_eq!(raw(&ok, Name::FROM).as_deref(), Some(CALLER_FROM));
    assert_eq!(ok.call_id().unwrap().as_str(), "compact-call@10.0.0.2");
    assert_eq!(ok.cseq().unwrap().cseq, 4711);
    assert_eq!(cseq_method(&ok), "INVITE");
    assert_eq!(
        raw(&ok, Name::CONTACT).as_deref(),
        Some("<sip:sotto@127.0.0.1:5060>")
    );
    assert_eq!(
        raw(&ok, Name::CONTENT_TYPE).as_deref(),
        Some("application/sdp")
    );
    assert_eq!(&ok.body[..], ANSWER.as_bytes());
    assert_eq!(
        raw(&ok, Name::CONTENT_LENGTH).as_deref(),
        Some(ANSWER.len().to_string().as_str())
    );

    // RFC 3261 §18.2.1 and RFC 3581 §4: received = source IP, rport = source port.
    let vias = ok.vias().unwrap();
    assert_eq!(vias.len(), 1);
    assert_eq!(via_param(&ok, "branch").as_deref(), Some("z9hG4bKcompact1"));
    assert_eq!(via_param(&ok, "received").as_deref(), Some("192.0.2.10"));
    assert_eq!(via_param(&ok, "rport").as_deref(), Some("40001"));
    assert_eq!(vias[0].sent_by.port, Some(5070), "sent-by is left alone");

    // Lean: exactly the copied headers, Contact and the body's; no Allow, Supported
    // or Server (a 2xx to an unverified source may not outgrow the INVITE).
    let mut names = header_names(&out[0]);
    names.sort();
    assert_eq!(
        names,
        [
            "call-id",
            "contact",
            "content-length",
            "content-type",
            "cseq",
            "from",
            "to",
            "via"
        ],
        "{}",
        text(&out[0])
    );
}

#[test]
fn responses_copy_every_via_in_order_and_stamp_only_the_top_one() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKtop", "two-vias@x");
    invite
        .vias
        .push("SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKproxy".to_string());
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();
    let out = b.accept(100, call, ANSWER);
    let ok = response(&out[0]);
    let vias = ok.vias().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(
        vias[0].params.get_val("branch").map(|v| v.as_str()),
        Some("z9hG4bKtop")
    );
    assert_eq!(
        vias[1].params.get_val("branch").map(|v| v.as_str()),
        Some("z9hG4bKproxy")
    );
    assert!(vias[1].params.get("received").is_none());
    assert!(vias[1].params.get("rport").is_none());
}

#[test]
fn response_without_rport_goes_to_source_ip_and_sent_by_port() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKnorport", "no-rport@x");
    invite.vias = vec![format!("SIP/2.0/UDP {CALLER_VIA};branch=z9hG4bKnorport")];
    assert!(b.deliver(0, invite.build()).is_empty(), "no 100 Trying");
    let (call, _, _) = b.incoming();
    let out = b.accept(100, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    // RFC 3261 §18.2.2: "received" differs from sent-by, so the source IP with the
    // sent-by port.
    assert_eq!(out[0].dest, addr("192.0.2.10:5070"));
    let ok = response(&out[0]);
    assert_eq!(via_param(&ok, "received").as_deref(), Some("192.0.2.10"));
    assert_eq!(via_param(&ok, "rport"), None);
}

#[test]
fn the_2xx_is_retransmitted_from_t1_doubling_to_t2_until_the_ack() {
    let mut b = Bench::new();
    b.deliver(0, Bytes::from(compact_invite()));
    let (call, _, _) = b.incoming();
    let first = b.accept(100, call, ANSWER);
    assert_eq!(codes(&first), [200]);
    let tag = to_tag(&response(&first[0])).unwrap();

    let sent = b.run_until(9_000);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    // 100 ms + 0.5, 1.5, 3.5, 7.5 s (RFC 3261 §13.3.1.4).
    assert_eq!(times, [600, 1_600, 3_600, 7_600]);
    for (_, t) in &sent {
        assert_eq!(t.bytes, first[0].bytes, "a retransmission is the same 2xx");
        assert_eq!(t.dest, addr(CALLER));
    }

    // The ACK: new branch, To with our tag.
    let ack = format!(
        "ACK sip:sotto@127.0.0.1:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP {CALLER_VIA};branch=z9hG4bKack-compact;rport\r\n\
Max-Forwards: 70\r\n\
f: {CALLER_FROM}\r\n\
t: {CONF_TO};tag={tag}\r\n\
i: compact-call@10.0.0.2\r\n\
CSeq: 4711 ACK\r\n\
l: 0\r\n\r\n"
    );
    let out = b.deliver(9_000, Bytes::from(ack));
    assert!(out.is_empty(), "nothing answers an ACK");
    assert!(b.run_until(60_000).is_empty(), "no 2xx after its ACK");
    assert!(b.events().is_empty(), "the call stands");
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn the_2xx_retransmission_interval_caps_at_t2() {
    let mut b = Bench::new();
    b.deliver(0, Req::invite("z9hG4bKcap", "cap@x").build());
    let (call, _, _) = b.incoming();
    b.accept(0, call, ANSWER);
    let times: Vec<u64> = b.run_until(20_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500]);
}

#[test]
fn a_second_accept_or_a_late_reject_sends_nothing() {
    let mut b = Bench::new();
    b.deliver(0, Req::invite("z9hG4bKtwice", "twice@x").build());
    let (call, _, _) = b.incoming();
    assert_eq!(codes(&b.accept(100, call, ANSWER)), [200]);
    b.ep.accept(b.now, call, ANSWER);
    b.ep.reject(b.now, call, 486, None);
    assert!(b.drain().is_empty(), "one final response per INVITE");
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn reject_sends_the_final_response_and_forgets_the_call() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKreject", "reject@x");
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();
    b.run_until(300);
    b.ep.reject(b.now, call, 486, Some("room \"full\""));
    let out = b.drain();
    assert_eq!(codes(&out), [486]);
    let busy = response(&out[0]);
    let tag = to_tag(&busy).expect("To tag");
    let warning = raw(&busy, Name::WARNING).expect("Warning");
    assert!(warning.starts_with("399 sotto \""), "{warning}");
    assert_eq!(
        warning.matches('"').count(),
        2,
        "quotes inside are replaced: {warning}"
    );
    assert_eq!(b.ep.dialogs(), 0);
    assert!(b.events().is_empty(), "the application knows already");
    // Timer G until the ACK, as for any error response.
    let times: Vec<u64> = b.run_until(2_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [800, 1_800]);
    assert!(b
        .deliver(2_000, ack_error(&invite, &tag).build())
        .is_empty());
    assert!(b.run_until(60_000).is_empty());
}

#[test]
fn a_clock_that_steps_back_changes_nothing() {
    let mut b = Bench::new();
    b.deliver(0, Req::invite("z9hG4bKback", "back@x").build());
    let (call, _, _) = b.incoming();
    b.accept(1_000, call, ANSWER);
    b.ep.handle_timeout(b.at(0));
    b.ep.handle_timeout(b.at(999));
    assert!(b.drain().is_empty());
    let times: Vec<u64> = b.run_until(4_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [1_500, 2_500]);
}

#[test]
fn bye_before_the_ack_ends_the_call_and_stops_the_2xx() {
    let mut b = Bench::new();
    b.deliver(0, Req::invite("z9hG4bKbyeearly", "byeearly@x").build());
    let (call, _, _) = b.incoming();
    let ok = b.accept(100, call, ANSWER);
    let tag = to_tag(&response(&ok[0])).unwrap();
    let bye = Req::in_dialog("BYE", "z9hG4bKbyeearly2", "byeearly@x", 2, &tag);
    assert_eq!(codes(&b.deliver(300, bye.build())), [200]);
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
    ));
    assert!(b.run_until(60_000).is_empty(), "no 2xx, no BYE of ours");
    assert!(b.events().is_empty(), "no NoAck after a BYE");
}

#[test]
fn an_rfc_2543_invite_without_branch_is_matched_by_call_id_cseq_and_tag() {
    let mut b = Bench::new();
    let mut invite = Req::invite("unused", "rfc2543@x");
    invite.vias = vec![format!("SIP/2.0/UDP {CALLER_VIA}")];
    assert!(b.deliver(0, invite.build()).is_empty(), "no 100 Trying");
    b.incoming();
    // Its retransmission is recognised (absorbed: no second call) ...
    assert!(b.deliver(500, invite.build()).is_empty());
    assert!(b.events().is_empty(), "one INVITE, one call");
    assert_eq!(b.ep.dialogs(), 1);
    // ... and so is its CANCEL.
    let out = b.deliver(600, cancel_of(&invite).build());
    assert_eq!(codes(&out), [200, 487]);
    // No rport: the source IP with the sent-by port.
    assert!(out.iter().all(|t| t.dest == addr("192.0.2.10:5070")));
    assert!(matches!(b.events().as_slice(), [Event::Cancelled { .. }]));
}

// ---- 2. no ACK ----------------------------------------------------------------------------

#[test]
fn without_ack_the_2xx_stops_at_64_t1_then_bye_and_ended_no_ack() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKnoack", "noack@x");
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();
    let ok = b.accept(1_000, call, ANSWER);
    let tag = to_tag(&response(&ok[0])).unwrap();

    let sent = b.run_until(33_000);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    // 1 s + 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5; at 1 s + 32 s the BYE.
    assert_eq!(
        times,
        [1_500, 2_500, 4_500, 8_500, 12_500, 16_500, 20_500, 24_500, 28_500, 32_500, 33_000]
    );
    for (_, t) in &sent[..10] {
        assert_eq!(t.bytes, ok[0].bytes);
    }
    let (_, bye) = &sent[10];
    assert_eq!(bye.dest, addr(CALLER));
    let bye = request(bye);
    assert_eq!(bye.method.to_string(), "BYE");
    assert_eq!(bye.call_id().unwrap().as_str(), "noack@x");
    assert_eq!(to_tag(&bye).as_deref(), Some("alice-tag"));
    assert_eq!(
        bye.from().unwrap().tag.map(|t| t.to_string()),
        Some(tag),
        "From carries our tag"
    );

    let events = b.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Ended { call: c, reason: EndReason::NoAck }] if *c == call
        ),
        "{events:?}"
    );
    assert_eq!(b.ep.dialogs(), 0);
}

// ---- 3. INVITE retransmissions --------------------------------------------------------------

#[test]
fn a_retransmitted_invite_before_the_answer_gets_nothing_and_no_new_event() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKretx", "retx@x");
    let first = b.deliver(0, invite.build());
    assert!(first.is_empty(), "no 100 Trying");
    let (call, _, _) = b.incoming();
    for at in [500, 1_500, 3_500] {
        let again = b.deliver(at, invite.build());
        // Nothing was sent yet, so there is nothing to repeat (Figure 7, Proceeding).
        assert!(
            again.is_empty(),
            "retransmission at {at} ms: {:?}",
            texts(again.iter())
        );
    }
    assert!(b.events().is_empty(), "one INVITE, one call");
    assert_eq!(b.ep.dialogs(), 1);
    // The call is still the first INVITE's: the answer goes once, to the caller.
    let out = b.accept(3_600, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    assert_eq!(out[0].dest, addr(CALLER));
    // A late copy after the answer is absorbed too (RFC 6026 §8.5): the 2xx schedule
    // covers it.
    assert!(b.deliver(3_700, invite.build()).is_empty());
    assert!(b.events().is_empty());
}

#[test]
fn a_retransmitted_invite_after_a_final_error_gets_that_error_again() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKretx415", "retx415@x");
    invite.content_type = Some("text/plain".to_string());
    let first = b.deliver(0, invite.build());
    assert_eq!(codes(&first), [415]);
    let again = b.deliver(200, invite.build());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, first[0].bytes);
    assert!(b.events().is_empty());
}

// ---- 4. BYE -----------------------------------------------------------------------------------

#[test]
fn bye_in_the_dialog_gets_200_and_ended_remote_bye() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKbye", "bye@x");
    let (call, tag) = b.confirmed_call(invite);
    let out = b.deliver(
        5_000,
        Req::in_dialog("BYE", "z9hG4bKbye2", "bye@x", 2, &tag).build(),
    );
    assert_eq!(codes(&out), [200]);
    assert_eq!(out[0].dest, addr(CALLER));
    let ok = response(&out[0]);
    assert_eq!(cseq_method(&ok), "BYE");
    assert_eq!(to_tag(&ok).as_deref(), Some(tag.as_str()));
    assert_eq!(all_raw(&ok, Name::TO).len(), 1);
    let events = b.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
        ),
        "{events:?}"
    );
    assert_eq!(b.ep.dialogs(), 0);
}

#[test]
fn a_retransmitted_bye_gets_the_same_200_and_no_second_event() {
    let mut b = Bench::new();
    let (_, tag) = b.confirmed_call(Req::invite("z9hG4bKbyer", "byer@x"));
    let bye = Req::in_dialog("BYE", "z9hG4bKbyer2", "byer@x", 2, &tag);
    let first = b.deliver(1_000, bye.build());
    assert_eq!(b.events().len(), 1);
    let again = b.deliver(1_500, bye.build());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, first[0].bytes);
    assert!(b.events().is_empty());
}

#[test]
fn bye_with_unknown_tag_or_call_id_gets_481() {
    let mut b = Bench::new();
    let (_, tag) = b.confirmed_call(Req::invite("z9hG4bKbye481", "bye481@x"));

    let wrong_tag = Req::in_dialog("BYE", "z9hG4bKw1", "bye481@x", 2, "not-our-tag");
    assert_eq!(codes(&b.deliver(1_000, wrong_tag.build())), [481]);

    let wrong_call = Req::in_dialog("BYE", "z9hG4bKw2", "other-call@x", 2, &tag);
    assert_eq!(codes(&b.deliver(1_000, wrong_call.build())), [481]);

    let mut wrong_from = Req::in_dialog("BYE", "z9hG4bKw3", "bye481@x", 2, &tag);
    wrong_from.from = "<sip:mallory@example.org>;tag=mallory".to_string();
    assert_eq!(codes(&b.deliver(1_000, wrong_from.build())), [481]);

    let no_to_tag = Req::new("BYE", "z9hG4bKw4", "bye481@x", 2);
    assert_eq!(codes(&b.deliver(1_000, no_to_tag.build())), [481]);

    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1, "the real call is untouched");
}

#[test]

fn bye_with_a_lower_cseq_than_the_invite_gets_500() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKlowbye", "lowbye@x");
    invite.cseq = "10 INVITE".to_string();
    let (_, tag) = b.confirmed_call(invite);
    let bye = Req::in_dialog("BYE", "z9hG4bKlowbye2", "lowbye@x", 9, &tag);
    assert_eq!(codes(&b.deliver(1_000, bye.build())), [500]);
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

// ---- 5. CANCEL --------------------------------------------------------------------------------

#[test]
fn cancel_before_the_answer_gets_200_then_487_and_cancelled() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKcancel", "cancel@x");
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();

    let out = b.deliver(1_000, cancel_of(&invite).build());
    assert_eq!(codes(&out), [200, 487]);
    let ok = response(&out[0]);
    assert_eq!(cseq_method(&ok), "CANCEL");
    assert_eq!(via_param(&ok, "branch").as_deref(), Some("z9hG4bKcancel"));
    let terminated = response(&out[1]);
    assert_eq!(cseq_method(&terminated), "INVITE");
    assert_eq!(terminated.cseq().unwrap().cseq, 1);
    assert!(
        to_tag(&terminated).is_some(),
        "a final response has a To tag"
    );
    assert!(out.iter().all(|t| t.dest == addr(CALLER)));

    let events = b.events();
    assert!(
        matches!(events.as_slice(), [Event::Cancelled { call: c }] if *c == call),
        "{events:?}"
    );
    assert_eq!(b.ep.dialogs(), 0);
    // The application may still answer; a cancelled call must stay silent.
    b.ep.accept(b.now, call, ANSWER);
    assert!(b.drain().is_empty());
}

#[test]
fn the_487_is_retransmitted_per_timer_g_until_its_ack() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKtimerg", "timerg@x");
    b.deliver(0, invite.build());
    b.incoming();
    let out = b.deliver(1_000, cancel_of(&invite).build());
    let tag = to_tag(&response(&out[1])).unwrap();
    assert!(matches!(b.events().as_slice(), [Event::Cancelled { .. }]));

    let sent = b.run_until(5_000);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    // Timer G from the 487 at 1 s: +0.5, +1.5, +3.5 s (RFC 3261 §17.2.1).
    assert_eq!(times, [1_500, 2_500, 4_500]);
    for (_, t) in &sent {
        assert_eq!(t.bytes, out[1].bytes, "the 487 again, same To tag");
    }

    let ack = b.deliver(5_000, ack_error(&invite, &tag).build());
    assert!(ack.is_empty());
    // Confirmed (Timer I = T4): a late copy of the INVITE is absorbed, not a new call.
    assert!(b.deliver(6_000, invite.build()).is_empty());
    assert!(b.events().is_empty());
    assert!(b.run_until(60_000).is_empty(), "no 487 after its ACK");
    assert!(b.ep.poll_timeout().is_none(), "the transaction is gone");
}

#[test]
fn the_487_without_ack_stops_at_timer_h() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKtimerh", "timerh@x");
    b.deliver(0, invite.build());
    b.incoming();
    b.deliver(0, cancel_of(&invite).build());
    let times: Vec<u64> = b.run_until(60_000).iter().map(|(t, _)| *t).collect();
    // G: 0.5, 1.5, 3.5, 7.5, then every T2; H = 64·T1 = 32 s ends it.
    assert_eq!(
        times,
        [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
}

#[test]

fn the_200_for_cancel_and_the_487_share_the_to_tag() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKcanceltag", "canceltag@x");
    b.deliver(0, invite.build());
    b.incoming();
    let out = b.deliver(1_000, cancel_of(&invite).build());
    assert_eq!(codes(&out), [200, 487]);
    assert_eq!(to_tag(&response(&out[0])), to_tag(&response(&out[1])));
}

#[test]
fn cancel_after_the_answer_gets_200_only_and_the_call_stays() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKlatecancel", "latecancel@x");
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();
    let ok = b.accept(100, call, ANSWER);
    let tag = to_tag(&response(&ok[0])).unwrap();

    let out = b.deliver(200, cancel_of(&invite).build());
    assert_eq!(codes(&out), [200]);
    assert_eq!(cseq_method(&response(&out[0])), "CANCEL");
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);

    // The call goes on: the ACK confirms it and a BYE ends it normally.
    assert!(b.deliver(300, ack_2xx(&invite, &tag).build()).is_empty());
    let bye = Req::in_dialog("BYE", "z9hG4bKlc-bye", "latecancel@x", 2, &tag);
    assert_eq!(codes(&b.deliver(1_000, bye.build())), [200]);
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended {
            reason: EndReason::RemoteBye,
            ..
        }]
    ));
}

#[test]
fn cancel_matching_no_invite_gets_481() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKreal", "real@x");
    b.deliver(0, invite.build());
    b.incoming();
    // Same call, but a different branch: matches no server transaction (§9.2).
    let mut stray = cancel_of(&invite);
    stray.vias = vec![format!(
        "SIP/2.0/UDP {CALLER_VIA};branch=z9hG4bKother;rport"
    )];
    let out = b.deliver(100, stray.build());
    assert_eq!(codes(&out), [481]);
    assert_eq!(cseq_method(&response(&out[0])), "CANCEL");
    // And a CANCEL for a call that never existed.
    let nothing = cancel_of(&Req::invite("z9hG4bKnever", "never@x"));
    assert_eq!(codes(&b.deliver(100, nothing.build())), [481]);
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

// ---- 6. OPTIONS and Max-Forwards ------------------------------------------------------------------

#[test]
fn options_outside_a_dialog_gets_200_with_allow_accept_supported() {
    let mut b = Bench::new();
    let out = b.deliver(0, Req::new("OPTIONS", "z9hG4bKopt", "opt@x", 1).build());
    assert_eq!(codes(&out), [200]);
    assert_eq!(out[0].dest, addr(CALLER));
    let ok = response(&out[0]);
    assert_eq!(cseq_method(&ok), "OPTIONS");
    assert!(to_tag(&ok).is_some());
    let allow = tokens(&raw(&ok, Name::ALLOW).expect("Allow"));
    for m in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO"] {
        assert!(allow.contains(&m.to_string()), "Allow lacks {m}: {allow:?}");
    }
    let accept = raw(&ok, Name::ACCEPT).expect("Accept");
    assert!(accept.contains("application/sdp"), "{accept}");
    assert!(
        ok.headers().get_raw(&Name::SUPPORTED).next().is_some(),
        "Supported present (may be empty)"
    );
    let names = header_names(&out[0]);
    assert!(
        !names
            .iter()
            .any(|n| n == "accept-language" || n == "server"),
        "{names:?}"
    );
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 0);
}

#[test]
fn options_inside_the_dialog_gets_200_with_our_tag() {
    let mut b = Bench::new();
    let (_, tag) = b.confirmed_call(Req::invite("z9hG4bKoptd", "optd@x"));
    let opt = Req::in_dialog("OPTIONS", "z9hG4bKoptd2", "optd@x", 2, &tag);
    let out = b.deliver(1_000, opt.build());
    assert_eq!(codes(&out), [200]);
    let ok = response(&out[0]);
    assert_eq!(to_tag(&ok).as_deref(), Some(tag.as_str()));
    assert!(raw(&ok, Name::ALLOW).is_some());
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn max_forwards_zero_gets_483() {
    let mut b = Bench::new();
    let mut opt = Req::new("OPTIONS", "z9hG4bKmf0", "mf0@x", 1);
    opt.max_forwards = "0".to_string();
    let out = b.deliver(0, opt.build());
    assert_eq!(codes(&out), [483]);

    let mut invite = Req::invite("z9hG4bKmf0i", "mf0i@x");
    invite.max_forwards = "0".to_string();
    assert_eq!(codes(&b.deliver(0, invite.build())), [483]);
    assert!(b.events().is_empty(), "no call from a looping INVITE");
    assert_eq!(b.ep.dialogs(), 0);
}

#[test]
fn malformed_max_forwards_gets_400() {
    let mut b = Bench::new();
    let mut opt = Req::new("OPTIONS", "z9hG4bKmfbad", "mfbad@x", 1);
    opt.max_forwards = "lots".to_string();
    assert_eq!(codes(&b.deliver(0, opt.build())), [400]);
}

// ---- 7. methods we do not do -----------------------------------------------------------------------

#[test]
fn unknown_method_gets_501() {
    let mut b = Bench::new();
    let out = b.deliver(0, Req::new("FOO", "z9hG4bKfoo", "foo@x", 1).build());
    assert_eq!(codes(&out), [501]);
    assert_eq!(cseq_method(&response(&out[0])), "FOO");
    assert!(b.events().is_empty());
}

#[test]
fn known_but_unsupported_methods_get_405_with_allow() {
    let mut b = Bench::new();
    for (i, m) in ["REGISTER", "SUBSCRIBE", "MESSAGE", "REFER"]
        .iter()
        .enumerate()
    {
        let out = b.deliver(
            0,
            Req::new(m, &format!("z9hG4bK405-{i}"), &format!("m405-{i}@x"), 1).build(),
        );
        assert_eq!(codes(&out), [405], "{m}");
        let r = response(&out[0]);
        let allow = tokens(&raw(&r, Name::ALLOW).unwrap_or_default());
        assert!(
            allow.contains(&"INVITE".to_string()),
            "{m}: Allow {allow:?}"
        );
        assert!(
            !allow.contains(&m.to_string()),
            "{m} cannot be both refused and allowed"
        );
    }
    assert!(b.events().is_empty());
}

// ---- 8. malformed requests and garbage ------------------------------------------------------

#[test]
fn a_request_missing_a_mandatory_header_gets_400() {
    for missing in ["Call-ID", "From", "CSeq", "To"] {
        let mut b = Bench::new();
        let invite = Req::invite("z9hG4bKmissing", "missing@x").without(missing);
        let out = b.deliver(0, invite.build());
        assert_eq!(codes(&out), [400], "without {missing}");
        assert_eq!(out[0].dest, addr(CALLER));
        let r = response(&out[0]);
        assert_eq!(via_param(&r, "branch").as_deref(), Some("z9hG4bKmissing"));
        assert!(b.events().is_empty(), "without {missing}");
        assert_eq!(b.ep.dialogs(), 0);
        assert_eq!(b.ep.counters().bad_requests, 1);
    }
}

#[test]
fn a_cseq_method_that_differs_from_the_request_method_gets_400() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKcseqm", "cseqm@x");
    invite.cseq = "1 OPTIONS".to_string();
    assert_eq!(codes(&b.deliver(0, invite.build())), [400]);
    let mut bye = Req::new("BYE", "z9hG4bKcseqm2", "cseqm@x", 1);
    bye.cseq = "2 INVITE".to_string();
    assert_eq!(codes(&b.deliver(0, bye.build())), [400]);
    assert!(b.events().is_empty());
}

#[test]
fn a_malformed_ack_is_dropped_not_answered() {
    let mut b = Bench::new();
    let ack = Req::new("ACK", "z9hG4bKbadack", "badack@x", 1).without("Call-ID");
    assert!(b.deliver(0, ack.build()).is_empty());
}

#[test]
fn a_request_without_via_gets_nothing() {
    let mut b = Bench::new();
    for method in ["INVITE", "OPTIONS", "BYE", "FOO"] {
        let mut r = Req::invite("z9hG4bKnovia", "novia@x").without("Via");
        r.method = method.to_string();
        r.cseq = format!("1 {method}");
        assert!(b.deliver(0, r.build()).is_empty(), "{method} without Via");
        let mut r = Req::invite("z9hG4bKbadvia", "badvia@x");
        r.vias = vec!["garbage".to_string()];
        r.method = method.to_string();
        r.cseq = format!("1 {method}");
        assert!(
            b.deliver(0, r.build()).is_empty(),
            "{method} with a bad Via"
        );
    }
    assert!(b.events().is_empty());
    assert!(b.ep.poll_timeout().is_none(), "no state kept for them");
}

thread_local! {
    /// Panics on this thread, including those caught inside the endpoint.
    static PANICS: Cell<u32> = const { Cell::new(0) };
}

/// Counts every panic per thread, then reports it as usual.
fn count_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

fn nasty_datagrams() -> Vec<(&'static str, Vec<u8>)> {
    let invite = Req::invite("z9hG4bKnasty", "nasty@x").text();
    let head_end = invite.find("\r\n\r\n").unwrap();
    let mut thousand_via_lines = String::from("OPTIONS sip:conf@127.0.0.1 SIP/2.0\r\n");
    for i in 0..1000 {
        thousand_via_lines.push_str(&format!("v: SIP/2.0/UDP h{i}\r\n"));
    }
    thousand_via_lines.push_str("\r\n");
    let mut binary: Vec<u8> = (0..=255u8).cycle().take(1500).collect();
    binary[0] = 0x80; // an RTP header, as a confused phone sends to the SIP port
    vec![
        ("empty", Vec::new()),
        ("lone CRLF", b"\r\n".to_vec()),
        ("CRLFCRLF keep-alive", b"\r\n\r\n".to_vec()),
        ("lone LFs", b"\n\n\n\n\n".to_vec()),
        ("binary RTP-ish", binary),
        ("NUL bytes", vec![0u8; 64]),
        (
            "start line only",
            b"INVITE sip:conf@127.0.0.1 SIP/2.0".to_vec(),
        ),
        ("truncated head", invite.as_bytes()[..head_end / 2].to_vec()),
        (
            "head without blank line",
            invite.as_bytes()[..head_end].to_vec(),
        ),
        (
            "truncated body",
            invite.as_bytes()[..invite.len() - 10].to_vec(),
        ),
        (
            "huge Content-Length",
            invite
                .replacen(
                    &format!("Content-Length: {}", OFFER.len()),
                    "Content-Length: 4294967296000",
                    1,
                )
                .into_bytes(),
        ),
        (
            "negative Content-Length",
            invite
                .replacen(
                    &format!("Content-Length: {}", OFFER.len()),
                    "Content-Length: -1",
                    1,
                )
                .into_bytes(),
        ),
        (
            "NUL in the start line",
            invite
                .replacen("INVITE sip:", "INVITE\0sip:", 1)
                .into_bytes(),
        ),
        (
            "NUL in a header name",
            invite.replacen("Call-ID:", "Call\0ID:", 1).into_bytes(),
        ),
        (
            "header without colon",
            invite
                .replacen("Max-Forwards: 70", "Max-Forwards 70", 1)
                .into_bytes(),
        ),
        ("invalid UTF-8 in the head", {
            let mut v = invite.clone().into_bytes();
            let at = invite.find("Alice").unwrap();
            v[at] = 0xff;
            v[at + 1] = 0xfe;
            v
        }),
        // Not a version at all (another version, SIP/7.0, gets a 505: see below).
        (
            "bad SIP version",
            invite
                .replacen("SIP/2.0\r\n", "SIP/2.x\r\n", 1)
                .into_bytes(),
        ),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "status line garbage",
            b"SIP/2.0 99999 What\r\n\r\n".to_vec(),
        ),
        ("too large", vec![b'A'; 70_000]),
        ("1000 Via lines", thousand_via_lines.into_bytes()),
    ]
}

#[test]
fn another_sip_version_gets_505_and_nothing_else() {
    // RFC 4475 §3.1.2.16: a request of SIP/7.0 is answered 505, whatever its method.
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKv7", "v7@x")
        .text()
        .replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1);
    let out = b.deliver(0, Bytes::from(invite.clone()));
    assert_eq!(codes(&out), [505]);
    assert!(b.events().is_empty(), "no call in another version");
    assert_eq!(b.ep.dialogs(), 0);
    // Its Via says SIP/7.0 too: copied as written.
    let out = b.deliver(0, Bytes::from(invite.replace("SIP/2.0/UDP", "SIP/7.0/UDP")));
    assert_eq!(codes(&out), [505]);
    assert!(texts(out.iter())[0].contains("\r\nVia: SIP/7.0/UDP "));
    // An ACK gets nothing, and a scanner nothing either.
    let ack =
        Req::new("ACK", "z9hG4bKv7a", "v7a@x", 1)
            .text()
            .replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
    assert!(b.deliver(0, Bytes::from(ack)).is_empty());
}

#[test]
fn an_invite_that_cannot_read_sdp_gets_406() {
    // RFC 3261 §20.1, §21.4.7; RFC 4475 §3.3.15 (sdp01).
    let mut b = Bench::new();
    for (i, accept) in [
        "Accept: text/nobodyKnowsThis",
        "Accept: ",
        "Accept: application/sdp;q=0, text/plain",
    ]
    .iter()
    .enumerate()
    {
        let invite = Req::invite(&format!("z9hG4bK406n{i}"), &format!("n406-{i}@x")).header(accept);
        let out = b.deliver(0, invite.build());
        assert_eq!(codes(&out), [406], "{accept}");
        assert_eq!(
            raw(&response(&out[0]), Name::ACCEPT).as_deref(),
            Some("application/sdp")
        );
    }
    assert!(b.events().is_empty());
    // Ranges that cover SDP, and no Accept at all, bring the call up.
    for (i, accept) in [
        "Accept: application/sdp",
        "Accept: text/plain, Application/SDP;level=1",
        "Accept: application/*;q=0.5",
        "Accept: */*",
    ]
    .iter()
    .enumerate()
    {
        let invite = Req::invite(&format!("z9hG4bK406y{i}"), &format!("y406-{i}@x")).header(accept);
        b.deliver(0, invite.build());
        assert_eq!(b.events().len(), 1, "{accept}");
    }
}

#[test]
fn headers_in_the_request_uri_get_400() {
    // RFC 3261 §19.1.1 Table 1; RFC 4475 §3.1.2.11 (escruri).
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKescruri", "escruri@x");
    invite.uri = "sip:conf@127.0.0.1:5060?Route=%3Csip:example.com%3E".to_string();
    assert_eq!(codes(&b.deliver(0, invite.build())), [400]);
    assert!(b.events().is_empty());
    let mut opt = Req::new("OPTIONS", "z9hG4bKescruo", "escruo@x", 1);
    opt.uri = "sip:conf@127.0.0.1?Subject=hi".to_string();
    assert_eq!(codes(&b.deliver(0, opt.build())), [400]);
}

#[test]
fn garbage_datagrams_get_nothing_and_do_not_panic() {
    count_panics();
    let mut b = Bench::new();
    for (name, data) in nasty_datagrams() {
        let out = b.deliver(0, Bytes::from(data));
        assert!(out.is_empty(), "{name}: sent {:?}", texts(out.iter()));
        assert!(b.events().is_empty(), "{name}");
    }
    assert_eq!(b.ep.dialogs(), 0);
    assert_eq!(PANICS.with(|p| p.get()), 0, "a parser panicked (caught)");
    assert!(b.ep.counters().malformed >= 15);
    // The endpoint still works afterwards.
    let out = b.deliver(0, Req::new("OPTIONS", "z9hG4bKafter", "after@x", 1).build());
    assert_eq!(codes(&out), [200]);
}

#[test]

fn a_thousand_via_values_do_not_get_a_response_larger_than_the_request() {
    count_panics();
    let mut b = Bench::new();
    let mut head = String::from("OPTIONS sip:conf@127.0.0.1 SIP/2.0\r\nv: ");
    head.push_str(&vec!["SIP/2.0/UDP h"; 1000].join(","));
    head.push_str("\r\n\r\n");
    let request_len = head.len();
    let out = b.deliver(0, Bytes::from(head));
    assert_eq!(PANICS.with(|p| p.get()), 0);
    // Dropped as malformed: nothing at all, not even a 400.
    assert!(
        out.is_empty(),
        "{} bytes answered with {:?}",
        request_len,
        out.iter().map(|t| t.bytes.len()).collect::<Vec<_>>()
    );
    assert_eq!(b.ep.counters().malformed, 1);
}

/// Well-framed requests with a usable Via but broken or odd other headers: each gets the
/// expected answer, and nothing panics (not even inside the endpoint's catch_unwind).
#[test]
fn broken_headers_behind_a_good_via_get_the_right_answer() {
    count_panics();
    let base = || Req::invite("z9hG4bKbroken", "broken@x");
    let edit = |f: fn(&mut Req)| {
        let mut r = base();
        f(&mut r);
        r
    };
    // The expected response, or None: the call goes ahead (an Incoming, and no 100).
    let cases: Vec<(&str, Req, Option<u16>)> = vec![
        (
            "CSeq not a number",
            edit(|r| r.cseq = "one INVITE".into()),
            Some(400),
        ),
        // RFC 4475 §3.1.2.4: an overlarge CSeq gets 400.
        (
            "CSeq over 2^32",
            edit(|r| r.cseq = "99999999999999999999 INVITE".into()),
            Some(400),
        ),
        (
            "From without URI",
            edit(|r| r.from = ";tag=x".into()),
            Some(400),
        ),
        ("To garbage", edit(|r| r.to = "<<<>>>".into()), Some(400)),
        (
            "empty Call-ID",
            edit(|r| r.call_id = String::new()),
            Some(400),
        ),
        // RFC 4475 §3.1.2.4: Max-Forwards above 255 is out of range.
        (
            "Max-Forwards 100000",
            edit(|r| r.max_forwards = "100000".into()),
            Some(400),
        ),
        (
            "Content-Type empty",
            edit(|r| r.content_type = Some(String::new())),
            Some(415),
        ),
        // Tolerated: the call goes ahead.
        (
            "Contact garbage",
            edit(|r| r.contact = Some("<:::>".into())),
            None,
        ),
        (
            "Record-Route garbage",
            base().header("Record-Route: <<sip:>"),
            None,
        ),
        ("Require empty", base().header("Require: "), None),
        ("unknown header", base().header("X-Foo: \u{1f4de}"), None),
        ("folded header", base().header("Subject: one\r\n two"), None),
    ];
    for (name, req, expected) in cases {
        let mut b = Bench::new();
        let out = b.deliver(0, req.build());
        assert_eq!(codes(&out), Vec::from_iter(expected), "{name}");
        let events = b.events();
        if expected.is_none() {
            let [Event::Incoming { call, .. }] = events.as_slice() else {
                panic!("{name}: expected one Incoming, got {events:?}");
            };
            let answer = b.accept(0, *call, ANSWER);
            assert_eq!(codes(&answer), [200], "{name}: the call can be answered");
        } else {
            assert!(events.is_empty(), "{name}: {events:?}");
            assert_eq!(b.ep.dialogs(), 0, "{name}");
        }
        // Whatever happened, the endpoint stays usable.
        let out = b.deliver(1, Req::new("OPTIONS", "z9hG4bKok", "ok@x", 1).build());
        assert_eq!(codes(&out), [200], "{name}: endpoint broken afterwards");
    }
    assert_eq!(PANICS.with(|p| p.get()), 0, "a header accessor panicked");
}

#[test]

fn a_non_sip_request_uri_gets_416() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKtel", "tel@x");
    invite.uri = "tel:+4930123456".to_string();
    assert_eq!(codes(&b.deliver(0, invite.build())), [416]);
    assert!(b.events().is_empty());
}

#[test]
fn stray_responses_are_counted_and_ignored() {
    let mut b = Bench::new();
    let resp = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {LOCAL};branch=z9hG4bKnotours\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: stray@x\r\nCSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n"
    );
    assert!(b.deliver(0, Bytes::from(resp)).is_empty());
    assert_eq!(b.ep.counters().stray_responses, 1);
}

// ---- 9. re-INVITE ---------------------------------------------------------------------------------

fn reinvite(call_id: &str, branch: &str, cseq: u32, our_tag: &str) -> Req {
    let mut r = Req::in_dialog("INVITE", branch, call_id, cseq, our_tag);
    r.contact = Some(format!("<{CALLER_CONTACT}>"));
    r.content_type = Some("application/sdp".to_string());
    r.body = OFFER.replace("a=sendrecv", "a=sendonly");
    r
}

#[test]
fn reinvite_with_higher_cseq_raises_reinvite_and_accept_sends_200() {
    let mut b = Bench::new();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKre", "re@x"));
    let re = reinvite("re@x", "z9hG4bKre2", 2, &tag);
    let out = b.deliver(5_000, re.build());
    assert!(
        out.is_empty(),
        "no 100 before the answer: {:?}",
        texts(out.iter())
    );
    let events = b.events();
    match events.as_slice() {
        [Event::Reinvite { call: c, offer, .. }] => {
            assert_eq!(*c, call);
            assert!(String::from_utf8_lossy(offer).contains("a=sendonly"));
        }
        other => panic!("expected Reinvite, got {other:?}"),
    }
    let answer = ANSWER.replace("a=sendrecv", "a=recvonly");
    let out = b.accept(5_100, call, &answer);
    assert_eq!(codes(&out), [200]);
    let ok = response(&out[0]);
    assert_eq!(ok.cseq().unwrap().cseq, 2);
    assert_eq!(to_tag(&ok).as_deref(), Some(tag.as_str()));
    assert_eq!(all_raw(&ok, Name::TO).len(), 1);
    assert_eq!(&ok.body[..], answer.as_bytes());
    assert!(raw(&ok, Name::CONTACT).is_some());

    // Its ACK stops the retransmissions; the call stands.
    let mut ack = ack_2xx(&re, &tag);
    ack.vias = vec![format!(
        "SIP/2.0/UDP {CALLER_VIA};branch=z9hG4bKreack;rport"
    )];
    assert!(b.deliver(5_200, ack.build()).is_empty());
    assert!(b.run_until(60_000).is_empty());
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn reinvite_with_lower_or_equal_cseq_gets_500() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKre500", "re500@x");
    invite.cseq = "5 INVITE".to_string();
    let (_, tag) = b.confirmed_call(invite);

    let lower = reinvite("re500@x", "z9hG4bKre500a", 4, &tag);
    assert_eq!(codes(&b.deliver(1_000, lower.build())), [500]);
    let equal = reinvite("re500@x", "z9hG4bKre500b", 5, &tag);
    assert_eq!(codes(&b.deliver(1_000, equal.build())), [500]);
    assert!(b.events().is_empty());

    // A proper one after them still works, and then its own CSeq is the floor.
    let higher = reinvite("re500@x", "z9hG4bKre500c", 6, &tag);
    b.deliver(1_000, higher.build());
    assert!(matches!(b.events().as_slice(), [Event::Reinvite { .. }]));
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn reinvite_with_unknown_tags_gets_481() {
    let mut b = Bench::new();
    let (_, tag) = b.confirmed_call(Req::invite("z9hG4bKre481", "re481@x"));
    let wrong_tag = reinvite("re481@x", "z9hG4bKre481a", 2, "someone-else");
    assert_eq!(codes(&b.deliver(1_000, wrong_tag.build())), [481]);
    let wrong_call = reinvite("gone@x", "z9hG4bKre481b", 2, &tag);
    assert_eq!(codes(&b.deliver(1_000, wrong_call.build())), [481]);
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn a_second_reinvite_while_one_is_pending_gets_500_with_retry_after() {
    let mut b = Bench::new();
    let (_, tag) = b.confirmed_call(Req::invite("z9hG4bKre2p", "re2p@x"));
    b.deliver(1_000, reinvite("re2p@x", "z9hG4bKre2pa", 2, &tag).build());
    assert_eq!(b.events().len(), 1);
    let out = b.deliver(1_100, reinvite("re2p@x", "z9hG4bKre2pb", 3, &tag).build());
    assert_eq!(codes(&out), [500]);
    assert!(raw(&response(&out[0]), Name::RETRY_AFTER).is_some());
    assert!(b.events().is_empty());
}

#[test]
fn rejecting_a_reinvite_keeps_the_call() {
    let mut b = Bench::new();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKrerej", "rerej@x"));
    b.deliver(1_000, reinvite("rerej@x", "z9hG4bKrerej2", 2, &tag).build());
    b.events();
    b.ep.reject(b.now, call, 488, Some("no"));
    let out = b.drain();
    assert_eq!(codes(&out), [488]);
    assert_eq!(to_tag(&response(&out[0])).as_deref(), Some(tag.as_str()));
    assert_eq!(b.ep.dialogs(), 1);
    // The call is still ours to hang up.
    let out = b.hangup(1_200, call);
    assert_eq!(request(&out[0]).method.to_string(), "BYE");
}

#[test]

fn a_duplicate_ack_of_the_first_invite_does_not_ack_the_reinvite_2xx() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKackcseq", "ackcseq@x");
    let (call, tag) = b.confirmed_call(invite.clone());
    b.deliver(
        1_000,
        reinvite("ackcseq@x", "z9hG4bKackcseq2", 2, &tag).build(),
    );
    assert!(matches!(b.events().as_slice(), [Event::Reinvite { .. }]));
    assert_eq!(codes(&b.accept(1_000, call, ANSWER)), [200]);
    // The network duplicates the first ACK (CSeq 1); it acknowledges nothing new.
    assert!(b.deliver(1_100, ack_2xx(&invite, &tag).build()).is_empty());
    let times: Vec<u64> = b.run_until(5_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        [1_500, 2_500, 4_500],
        "the re-INVITE's 2xx still awaits its ACK"
    );
}

#[test]

fn cancel_of_a_reinvite_keeps_the_call() {
    let mut b = Bench::new();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKrecancel", "recancel@x"));
    let re = reinvite("recancel@x", "z9hG4bKrecancel2", 2, &tag);
    b.deliver(1_000, re.build());
    assert!(matches!(b.events().as_slice(), [Event::Reinvite { .. }]));

    let out = b.deliver(1_500, cancel_of(&re).build());
    assert_eq!(codes(&out), [200, 487]);
    assert!(
        b.events().is_empty(),
        "the call was not cancelled, only the re-INVITE"
    );
    assert_eq!(b.ep.dialogs(), 1);
    let bye = Req::in_dialog("BYE", "z9hG4bKrecancel3", "recancel@x", 3, &tag);
    // Before the 487's first retransmission (Timer G, 2.0 s).
    assert_eq!(codes(&b.deliver(1_900, bye.build())), [200]);
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
    ));
}

// ---- 10. hangup ---------------------------------------------------------------------------------

/// An INVITE that came through two record-routing proxies.
fn routed_invite() -> Req {
    let mut r = Req::invite("z9hG4bKrouted", "routed@x")
        .header("Record-Route: <sip:198.51.100.7:5080;lr>, <sip:proxy2.example.org;lr>")
        .header("Record-Route: <sip:proxy3.example.org;lr;ftag=abc>");
    r.vias
        .push("SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bKproxy1".to_string());
    r
}

#[test]
fn the_2xx_copies_record_route() {
    let mut b = Bench::new();
    b.deliver(0, routed_invite().build());
    let (call, _, _) = b.incoming();
    let out = b.accept(100, call, ANSWER);
    let ok = response(&out[0]);
    let rr = ok.record_route();
    assert_eq!(rr.len(), 3, "{rr:?}");
    assert!(rr[0].contains("198.51.100.7:5080"), "{rr:?}");
    assert!(rr[1].contains("proxy2.example.org"), "{rr:?}");
    assert!(rr[2].contains("proxy3.example.org") && rr[2].contains("ftag=abc"));
    // Record-Route and Contact are all the 2xx adds to the copied headers.
    let mut names = header_names(&out[0]);
    names.retain(|n| !["via", "from", "to", "call-id", "cseq"].contains(&n.as_str()));
    assert_eq!(
        names,
        [
            "contact",
            "record-route",
            "record-route",
            "record-route",
            "content-type",
            "content-length"
        ]
    );
}

#[test]
fn hangup_sends_a_bye_built_from_the_dialog() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKhang", "hang@x");
    let (call, tag) = b.confirmed_call(invite);
    let out = b.hangup(1_000, call);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].dest,
        addr(CALLER),
        "no route set: back where the INVITE came from"
    );
    let bye_text = text(&out[0]);
    assert_eq!(
        bye_text.lines().next(),
        Some(format!("BYE {CALLER_CONTACT} SIP/2.0").as_str()),
        "Request-URI = the remote target (§12.1.1)"
    );
    let bye = request(&out[0]);
    assert_eq!(bye.method.to_string(), "BYE");
    assert_eq!(
        raw(&bye, Name::FROM).unwrap(),
        format!("{CONF_TO};tag={tag}"),
        "From = the INVITE's To plus our tag"
    );
    assert_eq!(raw(&bye, Name::TO).as_deref(), Some(CALLER_FROM));
    assert_eq!(bye.call_id().unwrap().as_str(), "hang@x");
    assert_eq!(cseq_method(&bye), "BYE");
    assert!(all_raw(&bye, Name::ROUTE).is_empty());
    let branch = via_param(&bye, "branch").unwrap();
    assert!(branch.starts_with("z9hG4bK"), "{branch}");
    assert!(
        raw(&bye, Name::VIA)
            .unwrap()
            .starts_with(&format!("SIP/2.0/UDP {LOCAL};")),
        "{bye_text}"
    );
    assert!(bye.max_forwards().unwrap().is_some());
    assert!(b.events().is_empty(), "hangup raises no Ended");
    assert_eq!(b.ep.dialogs(), 0);
}

#[test]
fn hangup_routes_the_bye_along_the_record_route() {
    let mut b = Bench::new();
    let (call, _) = b.confirmed_call(routed_invite());
    let out = b.hangup(1_000, call);
    let bye = request(&out[0]);
    // RFC 3261 §12.1.1: the UAS route set is the Record-Route list in order.
    let routes = all_raw(&bye, Name::ROUTE);
    assert_eq!(routes.len(), 3, "{routes:?}");
    assert!(routes[0].contains("198.51.100.7:5080") && routes[0].contains("lr"));
    assert!(routes[1].contains("proxy2.example.org"));
    assert!(routes[2].contains("proxy3.example.org") && routes[2].contains("ftag=abc"));
    // Loose routing: the Request-URI stays the remote target, the datagram goes to
    // the first route.
    assert_eq!(
        text(&out[0]).lines().next(),
        Some(format!("BYE {CALLER_CONTACT} SIP/2.0").as_str())
    );
    assert_eq!(out[0].dest, addr("198.51.100.7:5080"));
}

#[test]
fn the_bye_is_retransmitted_per_timer_e_until_its_200() {
    let mut b = Bench::new();
    let (call, _) = b.confirmed_call(Req::invite("z9hG4bKtimere", "timere@x"));
    let first = b.hangup(1_000, call);
    let bye = request(&first[0]);
    let sent = b.run_until(14_000);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    // 1 s + 0.5, 1.5, 3.5, 7.5, 11.5 (then every T2 = 4 s).
    assert_eq!(times, [1_500, 2_500, 4_500, 8_500, 12_500]);
    for (_, t) in &sent {
        assert_eq!(t.bytes, first[0].bytes);
        assert_eq!(t.dest, first[0].dest);
    }

    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: timere@x\r\n\
CSeq: {}\r\nContent-Length: 0\r\n\r\n",
        raw(&bye, Name::VIA).unwrap(),
        raw(&bye, Name::FROM).unwrap(),
        raw(&bye, Name::TO).unwrap(),
        raw(&bye, Name::CSEQ).unwrap(),
    );
    assert!(b.deliver(14_000, Bytes::from(ok)).is_empty());
    assert!(b.run_until(60_000).is_empty(), "no BYE after its 200");
    assert_eq!(b.ep.counters().stray_responses, 0);
    assert!(b.ep.poll_timeout().is_none(), "everything has wound down");
}

#[test]
fn the_bye_without_answer_gives_up_at_timer_f() {
    let mut b = Bench::new();
    let (call, _) = b.confirmed_call(Req::invite("z9hG4bKtimerf", "timerf@x"));
    b.hangup(1_000, call);
    let times: Vec<u64> = b.run_until(100_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        [1_500, 2_500, 4_500, 8_500, 12_500, 16_500, 20_500, 24_500, 28_500, 32_500]
    );
    assert!(b.ep.poll_timeout().is_none());
}

#[test]
fn hangup_before_the_ack_waits_for_it_then_sends_the_bye() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKhangearly", "hangearly@x");
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();
    let ok = b.accept(100, call, ANSWER);
    let tag = to_tag(&response(&ok[0])).unwrap();
    assert!(
        b.hangup(200, call).is_empty(),
        "no BYE before the ACK (§15)"
    );
    // The 2xx is still retransmitted meanwhile.
    let sent = b.run_until(2_000);
    assert_eq!(sent.len(), 2, "2xx at 600 and 1600 ms");
    assert!(sent.iter().all(|(_, t)| response(t).code == 200));

    let out = b.deliver(2_000, ack_2xx(&invite, &tag).build());
    assert_eq!(out.len(), 1, "the ACK releases the BYE");
    let bye = request(&out[0]);
    assert_eq!(bye.method.to_string(), "BYE");
    assert_eq!(bye.call_id().unwrap().as_str(), "hangearly@x");
    assert_eq!(
        bye.from().unwrap().tag.map(|t| t.to_string()).as_deref(),
        Some(tag.as_str())
    );
    assert!(b.events().is_empty());
    // Only the BYE is retransmitted from now on.
    let later = b.run_until(4_000);
    assert!(later
        .iter()
        .all(|(_, t)| matches!(parse_message(t), Message::Request(_))));
}

#[test]
fn hangup_before_the_ack_that_never_comes_sends_one_bye_and_no_event() {
    let mut b = Bench::new();
    b.deliver(0, Req::invite("z9hG4bKhangnoack", "hangnoack@x").build());
    let (call, _, _) = b.incoming();
    b.accept(0, call, ANSWER);
    assert!(b.hangup(100, call).is_empty());
    let sent = b.run_until(32_000);
    let byes: Vec<u64> = sent
        .iter()
        .filter(|(_, t)| matches!(parse_message(t), Message::Request(_)))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(byes, [32_000], "the BYE goes when the 2xx times out");
    assert!(b.events().is_empty(), "we hung up: no Ended");
}

#[test]
fn hangup_before_the_answer_rejects_the_invite() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKhangring", "hangring@x");
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();
    let out = b.hangup(500, call);
    let code = codes(&out);
    assert_eq!(code.len(), 1);
    assert!((400..700).contains(&code[0]), "{code:?}");
    assert_eq!(b.ep.dialogs(), 0);
    assert!(b.events().is_empty());
}

#[test]

fn hangup_with_a_pending_reinvite_answers_it() {
    let mut b = Bench::new();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKhangre", "hangre@x"));
    b.deliver(
        1_000,
        reinvite("hangre@x", "z9hG4bKhangre2", 2, &tag).build(),
    );
    assert_eq!(b.events().len(), 1);
    let out = b.hangup(2_000, call);
    let finals: Vec<u16> = out
        .iter()
        .filter_map(|t| match parse_message(t) {
            Message::Response(r) => Some(r.code),
            Message::Request(_) => None,
        })
        .collect();
    assert_eq!(finals.len(), 1, "the re-INVITE gets a final response");
    assert!(finals[0] >= 400, "{finals:?}");
    // Its transaction ends: a late retransmission of the re-INVITE gets that final
    // response again (Completed) or a 481 (gone), never silence.
    let late = b.deliver(
        2_100,
        reinvite("hangre@x", "z9hG4bKhangre2", 2, &tag).build(),
    );
    assert_eq!(codes(&late).len(), 1, "the re-INVITE is not left hanging");
}

// ---- 11. Require, missing or foreign bodies ---------------------------------------------------

#[test]
fn require_with_an_unknown_option_gets_420_with_unsupported() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bK420", "r420@x").header("Require: frobnication");
    let out = b.deliver(0, invite.build());
    assert_eq!(codes(&out), [420]);
    let r = response(&out[0]);
    assert_eq!(raw(&r, Name::UNSUPPORTED).as_deref(), Some("frobnication"));
    assert!(to_tag(&r).is_some());
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 0);
}

#[test]

fn require_on_options_gets_420_too() {
    let mut b = Bench::new();
    let opt = Req::new("OPTIONS", "z9hG4bK420o", "r420o@x", 1).header("Require: frobnication");
    let out = b.deliver(0, opt.build());
    assert_eq!(codes(&out), [420]);
    assert_eq!(
        raw(&response(&out[0]), Name::UNSUPPORTED).as_deref(),
        Some("frobnication")
    );
}

#[test]
fn an_invite_without_offer_gets_ours_in_the_2xx_and_the_answer_comes_with_the_ack() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKnooffer", "nooffer@x");
    invite.body.clear();
    invite.content_type = None;
    assert!(b.deliver(0, invite.build()).is_empty());
    let (call, offer, _) = b.incoming();
    assert!(offer.is_empty(), "the application sees an empty offer");
    // The application puts its offer in the 2xx (the answer text stands in for it).
    let out = b.accept(0, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    assert_eq!(&response(&out[0]).body[..], ANSWER.as_bytes());
    let tag = to_tag(&response(&out[0])).unwrap();
    // The ACK carries the answer: handed over once, retransmissions ignored.
    let mut ack = ack_2xx(&invite, &tag);
    ack.content_type = Some("application/sdp".into());
    ack.body = OFFER.into();
    assert!(b.deliver(100, ack.build()).is_empty());
    let events = b.events();
    match events.as_slice() {
        [Event::Answer { call: c, answer }] => {
            assert_eq!(*c, call);
            assert_eq!(&answer[..], OFFER.as_bytes());
        }
        other => panic!("expected the answer, got {other:?}"),
    }
    assert!(b.deliver(150, ack.build()).is_empty());
    assert!(b.events().is_empty());
    // An ordinary call's ACK hands nothing over.
    let mut b = Bench::new();
    let (_, _) = b.confirmed_call(Req::invite("z9hG4bKwithoffer", "withoffer@x"));
    assert!(b.events().is_empty());
}

#[test]
fn invite_with_a_foreign_content_type_gets_415_with_accept() {
    let mut b = Bench::new();
    for (i, ct) in [
        "text/plain",
        "multipart/mixed;boundary=x",
        "application/json",
    ]
    .iter()
    .enumerate()
    {
        let mut invite = Req::invite(&format!("z9hG4bK415-{i}"), &format!("r415-{i}@x"));
        invite.content_type = Some(ct.to_string());
        let out = b.deliver(0, invite.build());
        assert_eq!(codes(&out), [415], "{ct}");
        let accept = raw(&response(&out[0]), Name::ACCEPT).expect("Accept");
        assert!(accept.contains("application/sdp"));
    }
    let mut no_type = Req::invite("z9hG4bK415-none", "r415-none@x");
    no_type.content_type = None;
    assert_eq!(codes(&b.deliver(0, no_type.build())), [415]);
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 0);
}

#[test]
fn sdp_content_type_is_matched_case_insensitively_and_with_parameters() {
    let mut b = Bench::new();
    for (i, ct) in ["Application/SDP", "application/sdp; charset=utf-8"]
        .iter()
        .enumerate()
    {
        let mut invite = Req::invite(&format!("z9hG4bKct-{i}"), &format!("ct-{i}@x"));
        invite.content_type = Some(ct.to_string());
        let out = b.deliver(0, invite.build());
        assert!(out.is_empty(), "{ct}: {:?}", texts(out.iter()));
        b.incoming();
    }
}

#[test]

fn a_content_type_that_only_starts_with_application_sdp_gets_415() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bKsdpx", "sdpx@x");
    invite.content_type = Some("application/sdpx".to_string());
    assert_eq!(codes(&b.deliver(0, invite.build())), [415]);
    assert!(b.events().is_empty());
}

#[test]
fn the_error_response_to_an_invite_is_acked_like_the_487() {
    let mut b = Bench::new();
    let mut invite = Req::invite("z9hG4bK415ack", "r415ack@x");
    invite.content_type = Some("text/plain".to_string());
    let out = b.deliver(0, invite.build());
    let tag = to_tag(&response(&out[0])).unwrap();
    let sent = b.run_until(2_000);
    assert_eq!(
        sent.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [500, 1_500]
    );
    assert!(b
        .deliver(2_000, ack_error(&invite, &tag).build())
        .is_empty());
    assert!(b.run_until(60_000).is_empty());
}

// ---- 12. the transaction table bound ---------------------------------------------------------

#[test]

fn the_sixth_concurrent_invite_gets_503_with_retry_after() {
    let mut b = Bench::with_max_transactions(5);
    for i in 0..5 {
        let out = b.deliver(
            0,
            Req::invite(&format!("z9hG4bKfull{i}"), &format!("full{i}@x")).build(),
        );
        assert!(out.is_empty(), "INVITE {}: no 100, no 503", i + 1);
        b.incoming();
    }
    let out = b.deliver(0, Req::invite("z9hG4bKfull5", "full5@x").build());
    assert_eq!(codes(&out), [503]);
    assert!(raw(&response(&out[0]), Name::RETRY_AFTER).is_some());
    assert!(b.events().is_empty());
}

#[test]
fn a_full_table_answers_503_with_retry_after_and_frees_up_later() {
    let mut b = Bench::with_max_transactions(1);
    let first = Req::invite("z9hG4bKone", "one@x");
    let (call, _) = b.confirmed_call(first);

    let out = b.deliver(300, Req::invite("z9hG4bKtwo", "two@x").build());
    assert_eq!(codes(&out), [503]);
    let r = response(&out[0]);
    let retry: u32 = raw(&r, Name::RETRY_AFTER)
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry > 0);
    assert!(b.events().is_empty(), "no call for a refused INVITE");
    assert_eq!(b.ep.counters().overloaded, 1);
    // A retransmission of the refused INVITE is refused again, still statelessly.
    assert_eq!(
        codes(&b.deliver(800, Req::invite("z9hG4bKtwo", "two@x").build())),
        [503]
    );

    // Once the call is over and its transactions have expired, there is room again.
    assert_eq!(b.hangup(1_000, call).len(), 1);
    b.run_until(40_000);
    let out = b.deliver(40_000, Req::invite("z9hG4bKthree", "three@x").build());
    assert!(
        out.is_empty(),
        "no 503 (and no 100): {:?}",
        texts(out.iter())
    );
    b.incoming();
    assert_eq!(b.ep.counters().overloaded, 2, "no further refusal");
}

#[test]

fn a_bye_is_honoured_when_the_table_is_full() {
    let mut b = Bench::with_max_transactions(2);
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKfullbye", "fullbye@x"));
    // Let the INVITE transaction expire: only the dialog remains.
    b.run_until(40_000);
    b.ep.handle_datagram(
        b.now,
        addr("192.0.2.99:5060"),
        Req::new("OPTIONS", "z9hG4bKfiller", "filler@x", 1).build(),
    );
    b.drain();
    let bye = Req::in_dialog("BYE", "z9hG4bKfullbye2", "fullbye@x", 2, &tag);
    let out = b.deliver(40_000, bye.build());
    assert_eq!(codes(&out), [200]);
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
    ));
}

#[test]

fn a_merged_invite_gets_482_not_a_second_call() {
    let mut b = Bench::new();
    b.deliver(0, Req::invite("z9hG4bKfork1", "fork@x").build());
    b.incoming();
    // The same INVITE forked by a proxy upstream and arriving over a second path.
    let mut fork = Req::invite("z9hG4bKfork2", "fork@x");
    fork.vias
        .push("SIP/2.0/UDP 198.51.100.9;branch=z9hG4bKup".to_string());
    let out = b.deliver(50, fork.build());
    assert_eq!(codes(&out), [482]);
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

// ---- 13. no Server header ----------------------------------------------------------------------

#[test]
fn no_response_carries_a_server_header() {
    let mut sent = Vec::new();
    let mut b = Bench::new();
    // A call answered, a re-INVITE refused, a BYE.
    let invite = Req::invite("z9hG4bKnosrv", "nosrv@x");
    b.deliver(0, invite.build());
    let (call, _, _) = b.incoming();
    let ok = b.accept(100, call, ANSWER);
    let tag = to_tag(&response(&ok[0])).unwrap();
    sent.extend(ok);
    b.deliver(200, ack_2xx(&invite, &tag).build());
    sent.extend(b.deliver(300, reinvite("nosrv@x", "z9hG4bKnosrv2", 2, &tag).build()));
    b.events();
    b.ep.reject(b.now, call, 488, Some("no"));
    sent.extend(b.drain());
    let bye = Req::in_dialog("BYE", "z9hG4bKnosrv3", "nosrv@x", 3, &tag);
    sent.extend(b.deliver(400, bye.build()));
    // A cancelled call, and out-of-dialog requests of every kind of answer.
    let cancelled = Req::invite("z9hG4bKnosrvc", "nosrvc@x");
    b.deliver(400, cancelled.build());
    sent.extend(b.deliver(400, cancel_of(&cancelled).build()));
    let mut mf0 = Req::new("OPTIONS", "z9hG4bKnosrv483", "nosrv483@x", 1);
    mf0.max_forwards = "0".to_string();
    let mut foreign = Req::invite("z9hG4bKnosrv415", "nosrv415@x");
    foreign.content_type = Some("text/plain".to_string());
    for r in [
        Req::new("OPTIONS", "z9hG4bKnosrvo", "nosrvo@x", 1),
        Req::new("REGISTER", "z9hG4bKnosrv405", "nosrv405@x", 1),
        Req::new("FOO", "z9hG4bKnosrv501", "nosrv501@x", 1),
        Req::new("BYE", "z9hG4bKnosrv481", "nosrv481@x", 1),
        Req::new("OPTIONS", "z9hG4bKnosrv400", "nosrv400@x", 1).without("Call-ID"),
        Req::new("OPTIONS", "z9hG4bKnosrv420", "nosrv420@x", 1).header("Require: x"),
        mf0,
        foreign,
    ] {
        sent.extend(b.deliver(400, r.build()));
    }
    let mut all = codes(&sent);
    all.sort();
    assert_eq!(
        all,
        [200, 200, 200, 200, 400, 405, 415, 420, 481, 483, 487, 488, 501]
    );
    for t in &sent {
        assert!(
            !header_names(t).iter().any(|n| n == "server"),
            "{}",
            text(t)
        );
    }
    // And a stateless 503 from a full table.
    let mut b = Bench::with_max_transactions(0);
    let out = b.deliver(0, Req::invite("z9hG4bKnosrv503", "nosrv503@x").build());
    assert_eq!(codes(&out), [503]);
    assert!(!header_names(&out[0]).iter().any(|n| n == "server"));
}

// ---- 14. the amplification guard ---------------------------------------------------------------

/// A small INVITE, as a terse phone sends it: shorter than our 2xx with `ANSWER`.
fn small_invite() -> Req {
    let mut r = Req::invite("z9hG4bKsmall", "s@x");
    r.from = "<sip:a@x>;tag=a1".to_string();
    r.to = "<sip:c@x>".to_string();
    r.contact = Some("<sip:a@10.0.0.2:5070>".to_string());
    r.body = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n"
        .to_string();
    r
}

/// The reflection bound: what an unverified UDP source may receive per byte it sent.
const FACTOR: usize = sotto::sip::endpoint::AMPLIFICATION_FACTOR;

#[test]
fn guard_a_small_invite_gets_its_larger_2xx_at_once() {
    let mut b = Bench::guarded();
    let invite = small_invite();
    let l = invite.build().len();
    assert!(b.deliver(0, invite.build()).is_empty());
    let (call, _, _) = b.incoming();
    // The first response leaves in the same turn, though it is larger than the INVITE
    // (a terse phone's INVITE used to wait for its own retransmission, 1.5 s).
    let out = b.accept(0, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    let len = out[0].bytes.len();
    assert!(
        l < len && len <= FACTOR * l,
        "INVITE {l} bytes, 2xx {len} bytes"
    );
    assert_eq!(b.ep.counters().amplification, 0);
    let tag = to_tag(&response(&out[0])).unwrap();
    assert!(b.deliver(100, ack_2xx(&invite, &tag).build()).is_empty());
    assert!(b.run_until(60_000).is_empty());
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 1);
}

#[test]
fn guard_a_lost_ack_is_recovered_by_the_2xx_retransmission() {
    let mut b = Bench::guarded();
    let invite = Req::invite("z9hG4bKlostack", "lostack@x");
    assert!(b.deliver(0, invite.build()).is_empty());
    let (call, _, _) = b.incoming();
    let first = b.accept(0, call, ANSWER);
    assert_eq!(codes(&first), [200]);
    let tag = to_tag(&response(&first[0])).unwrap();
    // The caller's ACK is lost. T1 later the 2xx goes again (within the INVITE's
    // budget, no media needed), the caller ACKs that one, and the call stands.
    let again = b.run_until(500);
    assert_eq!(again.len(), 1, "the 2xx is retransmitted at T1");
    assert_eq!(again[0].1.bytes, first[0].bytes);
    assert_eq!(b.ep.counters().amplification, 0);
    assert!(b.deliver(520, ack_2xx(&invite, &tag).build()).is_empty());
    assert!(b.run_until(100_000).is_empty(), "no more 2xx, no BYE");
    assert!(b.events().is_empty(), "the call stands");
    assert_eq!(b.ep.dialogs(), 1);
    // And it ends as the caller wants: its BYE gets 200, not 481.
    let bye = Req::in_dialog("BYE", "z9hG4bKlostack2", "lostack@x", 2, &tag);
    assert_eq!(codes(&b.deliver(100_000, bye.build())), [200]);
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
    ));
}

#[test]
fn guard_media_from_the_caller_verifies_its_address_like_an_ack() {
    for ack_at in [Some(4_000u64), None] {
        let mut b = Bench::guarded();
        let invite = small_invite();
        assert!(b.deliver(0, invite.build()).is_empty());
        let (call, _, _) = b.incoming();
        let first = b.accept(0, call, ANSWER);
        assert_eq!(codes(&first), [200]);
        let tag = to_tag(&response(&first[0])).unwrap();
        // Its first RTP packet reached the port in our answer: only the recipient of
        // the 2xx knows it, so the address is verified.
        b.run_until(60);
        b.ep.handle_media_verified(call);
        b.ep.handle_media_verified(call); // told twice: counted once
        let until = ack_at.unwrap_or(100_000);
        let sent = b.run_until(until);
        let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            b.ep.counters().amplification,
            0,
            "nothing is capped any more"
        );
        match ack_at {
            Some(at) => {
                // Every 2xx of the schedule went (T1 doubling) until the ACK came.
                assert_eq!(times, [500, 1_500, 3_500]);
                assert!(b.deliver(at, ack_2xx(&invite, &tag).build()).is_empty());
                assert!(b.run_until(100_000).is_empty());
                assert!(b.events().is_empty(), "the call stands");
                // Our BYE and its retransmissions go too: verified, not capped.
                let out = b.hangup(100_000, call);
                assert_eq!(out.len(), 1);
                let later = b.run_until(200_000);
                assert_eq!(later.len(), 10, "Timer E until Timer F");
                assert_eq!(b.ep.counters().amplification, 0);
            }
            None => {
                // No ACK ever: ten 2xx retransmissions, then the BYE (RFC 3261
                // §13.3.1.4) with its ten: none swallowed by the guard.
                let responses = sent
                    .iter()
                    .filter(|(_, t)| matches!(parse_message(t), Message::Response(_)))
                    .count();
                let byes = sent.len() - responses;
                assert_eq!((responses, byes), (10, 11));
                assert!(matches!(
                    b.events().as_slice(),
                    [Event::Ended { call: c, reason: EndReason::NoAck }] if *c == call
                ));
                assert!(b.ep.poll_timeout().is_none(), "everything has wound down");
            }
        }
    }
}

/// A spoofed INVITE accepted at once and never ACKed: every byte sent to the source
/// over the whole 64·T1 (and the BYE after it), with the time it went.
fn spoofed_invite_run(b: &mut Bench, invite: &Req) -> Vec<(u64, Transmit)> {
    let mut sent: Vec<(u64, Transmit)> = b
        .deliver(0, invite.build())
        .into_iter()
        .map(|t| (0, t))
        .collect();
    let (call, _, _) = b.incoming();
    sent.extend(b.accept(0, call, ANSWER).into_iter().map(|t| (0, t)));
    sent.extend(b.run_until(100_000));
    let events = b.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Ended { call: c, reason: EndReason::NoAck }] if *c == call
        ),
        "{events:?}"
    );
    assert_eq!(b.ep.dialogs(), 0);
    assert!(b.ep.poll_timeout().is_none(), "everything has wound down");
    sent
}

#[test]
fn guard_a_spoofed_invite_never_gets_more_than_three_times_its_bytes() {
    for (name, invite) in [
        ("small", small_invite()),
        ("full", Req::invite("z9hG4bKspoof", "spoof@x")),
    ] {
        let received = invite.build().len();
        // What the RFC schedule sends without the guard: the 2xx, its ten
        // retransmissions, the BYE and its ten.
        let unguarded = spoofed_invite_run(&mut Bench::new(), &invite);
        assert_eq!(unguarded.len(), 22, "{name}");

        let mut b = Bench::guarded();
        let sent = spoofed_invite_run(&mut b, &invite);
        assert!(sent.iter().all(|(_, t)| t.dest == addr(CALLER)), "{name}");
        let mut total = 0;
        for (at, t) in &sent {
            total += t.bytes.len();
            assert!(
                total <= FACTOR * received,
                "{name}: {total} bytes sent by {at} ms for {received} received"
            );
        }
        // The first 2xx always goes; the bound stops the schedule long before its end.
        assert_eq!(sent.first().map(|(at, _)| *at), Some(0), "{name}");
        assert!(sent.len() < 4, "{name}: {} messages", sent.len());
        // Every message of the schedule was either sent or counted as dropped.
        assert_eq!(
            sent.len() as u64 + b.ep.counters().amplification,
            unguarded.len() as u64,
            "{name}"
        );
        println!(
            "{name}: INVITE {received} bytes, sent {total} bytes ({:.2}x) in {} messages",
            total as f64 / received as f64,
            sent.len()
        );
    }
}

#[test]
fn guard_after_the_ack_the_bye_and_all_its_retransmissions_go_out() {
    let mut b = Bench::guarded();
    let invite = Req::invite("z9hG4bKverified", "verified@x");
    let ack_len = ack_2xx(&invite, "0123456789abcdef").build().len();
    let received = invite.build().len() + ack_len;
    let (call, _) = b.confirmed_call(invite);
    let mut sent = b.hangup(1_000, call);
    assert_eq!(sent.len(), 1);
    assert_eq!(request(&sent[0]).method.to_string(), "BYE");
    // Timer E until Timer F at 64·T1, long after the caller's budget would have
    // run out (it expires 64·T1 after its ACK, at 32.2 s).
    let later = b.run_until(100_000);
    assert_eq!(
        later.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [1_500, 2_500, 4_500, 8_500, 12_500, 16_500, 20_500, 24_500, 28_500, 32_500]
    );
    sent.extend(later.into_iter().map(|(_, t)| t));
    assert!(sent.iter().all(|t| t.bytes == sent[0].bytes));
    assert_eq!(b.ep.counters().amplification, 0, "nothing dropped");
    assert!(
        bytes_of(&sent) > FACTOR * received,
        "a verified source is not capped"
    );
    // Once the BYE's transaction is over, the source is a stranger again: a new
    // INVITE from it that is never ACKed gets its 2xx schedule capped.
    assert!(b.ep.poll_timeout().is_none());
    let again = Req::invite("z9hG4bKverified2", "verified2@x");
    assert!(b.deliver(100_000, again.build()).is_empty());
    let (call2, _, _) = b.incoming();
    assert_eq!(codes(&b.accept(100_000, call2, ANSWER)), [200]);
    b.run_until(200_000);
    assert!(b.ep.counters().amplification > 0, "capped again");
}

#[test]
fn guard_the_callers_bye_long_into_the_call_gets_its_200() {
    let mut b = Bench::guarded();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKlongcall", "longcall@x"));
    // Ten minutes on: whatever the caller sent during setup has expired; its BYE ends
    // the dialog (and the verification) before the 200 goes, so the BYE pays for it.
    assert!(b.run_until(600_000).is_empty());
    let bye = Req::in_dialog("BYE", "z9hG4bKlongcall2", "longcall@x", 2, &tag);
    let out = b.deliver(600_000, bye.build());
    assert_eq!(codes(&out), [200]);
    assert!(out[0].bytes.len() <= FACTOR * bye.build().len());
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
    ));
    assert_eq!(b.ep.counters().amplification, 0);
}

#[test]
fn guard_an_options_pinger_gets_every_200_at_once_within_the_bound() {
    // A pinger every 25 s (inside the 64·T1 a source's budget lasts) and one every
    // 60 s (outside it): each OPTIONS pays for its own larger 200.
    for interval in [25_000u64, 60_000] {
        let mut b = Bench::guarded();
        let (mut received, mut sent) = (0usize, 0usize);
        let (mut ping_len, mut ok_len) = (0, 0);
        for i in 0..12u64 {
            let at = i * interval;
            b.idle_wake(at.saturating_sub(1));
            let ping = Req::new(
                "OPTIONS",
                &format!("z9hG4bKping{i:02}"),
                "pinger@x",
                100 + i as u32,
            );
            ping_len = ping.build().len();
            received += ping_len;
            let out = b.deliver(at, ping.build());
            assert_eq!(codes(&out), [200], "ping {i} every {interval} ms");
            let r = response(&out[0]);
            assert_eq!(r.cseq().unwrap().cseq, 100 + i as u32);
            assert!(raw(&r, Name::ALLOW).is_some());
            ok_len = out[0].bytes.len();
            sent += ok_len;
            assert!(sent <= FACTOR * received, "ping {i}: {sent} for {received}");
        }
        assert!(
            ping_len < ok_len,
            "OPTIONS {ping_len} bytes, 200 {ok_len} bytes"
        );
        assert_eq!(b.ep.counters().amplification, 0);
    }
}

#[test]
fn guard_streams_are_never_capped() {
    let mut b = Bench::guarded();
    let peer = addr("192.0.2.30:50000");
    let flow = Flow::stream(Transport::Tcp, peer, ConnectionId(1));
    let over_tcp = |mut r: Req| {
        r.vias = vec![format!(
            "SIP/2.0/TCP 192.0.2.30:50000;branch={}",
            via_branch(&r)
        )];
        r
    };
    // A small OPTIONS gets its larger 200 at once.
    let opt = over_tcp(Req::new("OPTIONS", "z9hG4bKtcpopt", "tcpopt@x", 1));
    b.ep.handle_message(b.now, flow, opt.build());
    let out = b.drain();
    assert_eq!(codes(&out), [200]);
    assert_eq!(out[0].connection, Some(ConnectionId(1)));
    assert_eq!(out[0].dest, peer);
    assert!(out[0].bytes.len() > opt.build().len());
    // A small INVITE gets its larger 2xx at once, and the 2xx retransmissions (which
    // go on over TCP until the ACK, §13.3.1.4) go too.
    let invite = over_tcp(small_invite());
    b.ep.handle_message(b.now, flow, invite.build());
    assert!(b.drain().is_empty());
    let (call, _, _) = b.incoming();
    let out = b.accept(0, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    assert_eq!(out[0].connection, Some(ConnectionId(1)));
    assert!(out[0].bytes.len() > invite.build().len());
    let again = b.run_until(2_000);
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|(_, t)| t.bytes == out[0].bytes));
    assert_eq!(b.ep.counters().amplification, 0);
    // The same INVITE over UDP, never ACKed: its 2xx schedule is capped.
    let mut udp = small_invite();
    udp.call_id = "udp-s@x".to_string();
    let out = b.deliver_from(2_000, "192.0.2.31:5060", udp.build());
    assert!(out.is_empty());
    let (call, _, _) = b.incoming();
    assert_eq!(codes(&b.accept(2_000, call, ANSWER)), [200]);
    b.run_until(4_000);
    assert!(b.ep.counters().amplification > 0);
}

fn via_branch(r: &Req) -> String {
    r.vias[0]
        .split(";branch=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("branch")
        .to_string()
}

// ---- 15. silent drops: scanners, foreign domains, Via floods ---------------------------------

fn filters(scanners: &[&str], domains: &[&str]) -> RequestFilters {
    RequestFilters {
        scanner_user_agents: scanners.iter().map(|s| s.to_string()).collect(),
        domains: domains.iter().map(|s| s.to_string()).collect(),
    }
}

/// Requests of several kinds from one User-Agent (or to one Request-URI host).
fn probe_requests(tag: &str, user_agent: Option<&str>, uri: &str) -> Vec<Req> {
    let mut reqs = vec![
        Req::new(
            "OPTIONS",
            &format!("z9hG4bKo-{tag}"),
            &format!("o-{tag}@x"),
            1,
        ),
        Req::invite(&format!("z9hG4bKi-{tag}"), &format!("i-{tag}@x")),
        Req::new(
            "REGISTER",
            &format!("z9hG4bKr-{tag}"),
            &format!("r-{tag}@x"),
            1,
        ),
        // Broken too: still no 400, nothing at all.
        Req::new(
            "OPTIONS",
            &format!("z9hG4bKb-{tag}"),
            &format!("b-{tag}@x"),
            1,
        )
        .without("Call-ID"),
    ];
    for r in &mut reqs {
        r.uri = uri.to_string();
        if let Some(ua) = user_agent {
            r.extra.push(format!("User-Agent: {ua}"));
        }
    }
    reqs
}

#[test]
fn scanners_get_nothing_at_all_and_are_counted() {
    let mut b = Bench::new();
    b.ep.set_filters(filters(&["friendly-scanner", "sipvicious"], &[]));
    let uas = [
        "friendly-scanner",
        "SIPVicious/0.3.4",
        "Mozilla/5.0 Friendly-SCANNER build 7",
    ];
    let mut n = 0;
    for (i, ua) in uas.iter().enumerate() {
        for r in probe_requests(&format!("scan{i}"), Some(ua), "sip:100@127.0.0.1") {
            let out = b.deliver(0, r.build());
            assert!(out.is_empty(), "{ua}: {:?}", texts(out.iter()));
            n += 1;
        }
    }
    assert_eq!(b.ep.counters().scanners, n);
    assert_eq!(b.ep.counters().bad_requests, 0, "not even looked at");
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 0);
    assert!(b.ep.poll_timeout().is_none(), "no state kept for them");

    // A phone is served as before.
    let [opt, invite, register, broken] =
        probe_requests("phone", Some("Linphone/5.2"), "sip:conf@127.0.0.1")
            .try_into()
            .ok()
            .unwrap();
    assert_eq!(codes(&b.deliver(0, opt.build())), [200]);
    assert_eq!(codes(&b.deliver(0, register.build())), [405]);
    assert_eq!(codes(&b.deliver(0, broken.build())), [400]);
    assert!(b.deliver(0, invite.build()).is_empty());
    b.incoming();
    assert_eq!(b.ep.counters().scanners, n);
}

#[test]
fn requests_for_a_foreign_domain_get_nothing_and_are_counted() {
    let mut b = Bench::new();
    b.ep.set_filters(filters(&[], &["conf.example.org"]));
    let mut n = 0;
    for (i, uri) in [
        "sip:x@other.example.net",
        "sip:x@conf.example.org.other.example.net",
        "sip:x@192.0.2.99:5060",
    ]
    .iter()
    .enumerate()
    {
        for r in probe_requests(&format!("foreign{i}"), None, uri) {
            let out = b.deliver(0, r.build());
            assert!(out.is_empty(), "{uri}: {:?}", texts(out.iter()));
            n += 1;
        }
    }
    assert_eq!(b.ep.counters().foreign_domain, n);
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 0);
    assert!(b.ep.poll_timeout().is_none(), "no state kept for them");

    // Our domain (hosts compare case-insensitively) and our own address are served.
    for (i, uri) in [
        "sip:x@conf.example.org",
        "sip:x@CONF.Example.Org",
        "sip:x@127.0.0.1",
        "sip:x@127.0.0.1:5060",
    ]
    .iter()
    .enumerate()
    {
        let [opt, invite, register, broken] = probe_requests(&format!("ours{i}"), None, uri)
            .try_into()
            .ok()
            .unwrap();
        assert_eq!(codes(&b.deliver(0, opt.build())), [200], "{uri}");
        assert_eq!(codes(&b.deliver(0, register.build())), [405], "{uri}");
        assert_eq!(codes(&b.deliver(0, broken.build())), [400], "{uri}");
        assert!(b.deliver(0, invite.build()).is_empty(), "{uri}");
        let (_, _, user) = b.incoming();
        assert_eq!(user, "x");
    }
    assert_eq!(b.ep.counters().foreign_domain, n);
}

#[test]
fn a_call_to_our_domain_runs_to_its_end_under_the_domain_filter() {
    let mut b = Bench::new();
    b.ep.set_filters(filters(&["friendly-scanner"], &["conf.example.org"]));
    let mut invite = Req::invite("z9hG4bKdomcall", "domcall@x");
    invite.uri = "sip:room@conf.example.org".to_string();
    // In-dialog requests go to our Contact (our address), which is ours too.
    let (call, tag) = b.confirmed_call(invite);
    let opt = Req::in_dialog("OPTIONS", "z9hG4bKdomcall2", "domcall@x", 2, &tag);
    assert_eq!(codes(&b.deliver(1_000, opt.build())), [200]);
    let bye = Req::in_dialog("BYE", "z9hG4bKdomcall3", "domcall@x", 3, &tag);
    assert_eq!(codes(&b.deliver(2_000, bye.build())), [200]);
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
    ));
    let c = b.ep.counters();
    assert_eq!((c.scanners, c.foreign_domain), (0, 0));
}

#[test]
fn without_filters_everything_is_served() {
    let mut b = Bench::new();
    b.ep.set_filters(filters(&[], &[]));
    let [opt, invite, register, broken] =
        probe_requests("open", Some("friendly-scanner"), "sip:x@other.example.net")
            .try_into()
            .ok()
            .unwrap();
    assert_eq!(codes(&b.deliver(0, opt.build())), [200]);
    assert_eq!(codes(&b.deliver(0, register.build())), [405]);
    assert_eq!(codes(&b.deliver(0, broken.build())), [400]);
    assert!(b.deliver(0, invite.build()).is_empty());
    b.incoming();
    let c = b.ep.counters();
    assert_eq!((c.scanners, c.foreign_domain), (0, 0));
}

#[test]
fn a_request_with_more_than_70_via_values_is_dropped() {
    let hops = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("SIP/2.0/UDP 198.51.100.{}:5060;branch=z9hG4bKhop{i}", i + 1))
            .collect()
    };
    let mut b = Bench::new();
    // 70 values (one per hop that Max-Forwards 70 allows) are served.
    let mut opt = Req::new("OPTIONS", "z9hG4bKvia70", "via70@x", 1);
    opt.vias.extend(hops(69));
    let out = b.deliver(0, opt.build());
    assert_eq!(codes(&out), [200]);
    assert_eq!(response(&out[0]).vias().unwrap().len(), 70);
    assert_eq!(b.ep.counters().malformed, 0);
    // 71, on separate lines or folded into one, are not.
    let mut lines = Req::new("OPTIONS", "z9hG4bKvia71", "via71@x", 1);
    lines.vias.extend(hops(70));
    let mut one_line = Req::invite("z9hG4bKvia71i", "via71i@x");
    one_line.vias = vec![format!("{}, {}", one_line.vias[0], hops(70).join(", "))];
    for r in [lines, one_line] {
        let out = b.deliver(0, r.build());
        assert!(out.is_empty(), "{:?}", texts(out.iter()));
    }
    assert_eq!(b.ep.counters().malformed, 2);
    assert!(b.events().is_empty());
    assert_eq!(b.ep.dialogs(), 0);
}

// ---- 15. trunks: digest authentication and their own setup limit -------------------------

/// A trunk at the caller's address (`192.0.2.10`), with digest credentials for user
/// `pbx`, realm `sotto`, password `s3cret` when `digest` is set.
fn trunks(digest: bool, max_calls_in_setup: usize) -> Trunks {
    let (sha, md5) = sotto::sip::digest::ha1_lines("pbx", "sotto", "s3cret");
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    Trunks::new(vec![TrunkConfig {
        name: "office-pbx".into(),
        networks: vec!["192.0.2.0/24".parse::<Cidr>().unwrap()],
        digest: digest.then(|| DigestCredentials {
            user: "pbx".into(),
            realm: "sotto".into(),
            ha1_sha256: hex(&sha).try_into().ok(),
            ha1_md5: hex(&md5).try_into().ok(),
        }),
        encryption: None,
        allow_sdes_without_tls: None,
        dtmf: DtmfMode::Auto,
        messages_per_second: 2000,
        max_calls: 5000,
        max_calls_in_setup,
    }])
}

/// The Authorization a PBX computes for `challenge` (its nonce and algorithm).
fn authorization(challenge: &str, invite: &Req, nc: u32, password: &str) -> String {
    let param = |name: &str| {
        challenge
            .split(&format!("{name}="))
            .nth(1)
            .map(|r| r.trim_start_matches('"'))
            .and_then(|r| r.split(['"', ',']).next())
            .unwrap()
            .to_string()
    };
    let (nonce, alg) = (param("nonce"), param("algorithm"));
    let h = |s: String| -> String {
        use sha2::Digest;
        if alg == "SHA-256" {
            sha2::Sha256::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        } else {
            md5::Md5::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
    };
    let ha1 = h(format!("pbx:sotto:{password}"));
    let ha2 = h(format!("INVITE:{}", invite.uri));
    let resp = h(format!("{ha1}:{nonce}:{nc:08x}:0a4f113b:auth:{ha2}"));
    format!(
        "Authorization: Digest username=\"pbx\", realm=\"sotto\", nonce=\"{nonce}\", \
         uri=\"{}\", response=\"{resp}\", algorithm={alg}, qop=auth, nc={nc:08x}, \
         cnonce=\"0a4f113b\"",
        invite.uri
    )
}

#[test]
fn trunk_digest_challenges_sha256_first_then_admits_the_right_answer() {
    for pick in [0usize, 1] {
        let mut b = Bench::with_trunks(100, false, trunks(true, 400));
        let invite = Req::invite("z9hG4bKauth1", "auth@x");
        let out = b.deliver(0, invite.build());
        assert_eq!(codes(&out), [401]);
        let challenges = all_raw(&response(&out[0]), Name::WWW_AUTHENTICATE);
        assert_eq!(challenges.len(), 2, "{challenges:?}");
        assert!(
            challenges[0].contains("algorithm=SHA-256"),
            "SHA-256 offered first"
        );
        assert!(challenges[1].contains("algorithm=MD5"));
        assert!(challenges.iter().all(|c| c.contains("qop=\"auth\"")));
        assert!(
            b.events().is_empty(),
            "no call, and no failure for a first try"
        );
        assert_eq!(b.ep.counters().auth_failures, 0);
        // The PBX ACKs the 401 and tries again with credentials (CSeq 2).
        let tag = to_tag(&response(&out[0])).unwrap();
        assert!(b.deliver(10, ack_error(&invite, &tag).build()).is_empty());
        let mut again = Req::invite("z9hG4bKauth2", "auth@x");
        again.cseq = "2 INVITE".into();
        let again = again
            .clone()
            .header(&authorization(&challenges[pick], &again, 1, "s3cret"));
        assert!(b.deliver(20, again.build()).is_empty());
        let events = b.events();
        assert!(
            matches!(events.as_slice(), [Event::Incoming { trunk: Some(0), .. }]),
            "{events:?}"
        );
    }
}

#[test]
fn trunk_digest_refuses_a_wrong_password_and_a_replay_and_counts_them() {
    let mut b = Bench::with_trunks(100, false, trunks(true, 400));
    let first = Req::invite("z9hG4bKw1", "w1@x");
    let out = b.deliver(0, first.build());
    let challenge = all_raw(&response(&out[0]), Name::WWW_AUTHENTICATE).remove(0);
    // Wrong password: 401 again, with fresh challenges, and an AuthFailed event.
    let wrong = Req::invite("z9hG4bKw2", "w2@x");
    let wrong = wrong
        .clone()
        .header(&authorization(&challenge, &wrong, 1, "guess"));
    let out = b.deliver(10, wrong.build());
    assert_eq!(codes(&out), [401]);
    assert_eq!(all_raw(&response(&out[0]), Name::WWW_AUTHENTICATE).len(), 2);
    assert!(matches!(b.events().as_slice(), [Event::AuthFailed { .. }]));
    assert_eq!(b.ep.counters().auth_failures, 1);
    // The right answer for a new call.
    let good = Req::invite("z9hG4bKw3", "w3@x");
    let good = good
        .clone()
        .header(&authorization(&challenge, &good, 1, "s3cret"));
    assert!(b.deliver(20, good.build()).is_empty());
    assert!(matches!(b.events().as_slice(), [Event::Incoming { .. }]));
    // Replayed on another INVITE (same nonce and nc): refused and counted.
    let mut replay = good.clone();
    replay.call_id = "w4@x".into();
    replay.vias = vec![format!("SIP/2.0/UDP {CALLER_VIA};branch=z9hG4bKw4;rport")];
    let out = b.deliver(30, replay.build());
    assert_eq!(codes(&out), [401]);
    assert!(matches!(b.events().as_slice(), [Event::AuthFailed { .. }]));
    assert_eq!(b.ep.counters().auth_failures, 2);
    // The next count of the same nonce is fine (a PBX reuses a nonce for its next calls).
    let next = Req::invite("z9hG4bKw5", "w5@x");
    let next = next
        .clone()
        .header(&authorization(&challenge, &next, 2, "s3cret"));
    assert!(b.deliver(40, next.build()).is_empty());
    assert!(matches!(b.events().as_slice(), [Event::Incoming { .. }]));
}

#[test]
fn a_source_outside_every_trunk_is_not_challenged() {
    let mut b = Bench::with_trunks(100, false, trunks(true, 400));
    let out = b.deliver_from(
        0,
        "198.51.100.7:5060",
        Req::invite("z9hG4bKout", "out@x").build(),
    );
    assert!(out.is_empty());
    assert!(matches!(
        b.events().as_slice(),
        [Event::Incoming { trunk: None, .. }]
    ));
}

#[test]
fn a_trunk_holds_its_own_number_of_unconfirmed_calls() {
    // From a stranger's address the 17th unconfirmed call gets 503; from the trunk,
    // hundreds are fine up to its max_calls_in_setup.
    for (source, limit) in [("198.51.100.7:5060", 16usize), (CALLER, 300)] {
        let mut b = Bench::with_trunks(10_000, false, trunks(false, 300));
        for i in 0..=limit {
            let out = b.deliver_from(
                0,
                source,
                Req::invite(&format!("z9hG4bKs{i}"), &format!("s{i}@x")).build(),
            );
            if i < limit {
                assert!(
                    out.is_empty(),
                    "{source}: call {i} refused: {:?}",
                    codes(&out)
                );
                let (call, _, _) = b.incoming();
                assert_eq!(codes(&b.accept(0, call, ANSWER)), [200]);
            } else {
                assert_eq!(codes(&out), [503], "{source}: call {i} over the limit");
            }
        }
    }
}

// ---- 16. INFO: key presses relayed by the PBX ----------------------------------------------

#[test]
fn info_dtmf_in_a_call_is_answered_and_reported_once_per_request() {
    let mut b = Bench::new();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKinfo", "info@x"));
    let info = |branch: &str, cseq: u32, ctype: &str, body: &str| {
        let mut r = Req::in_dialog("INFO", branch, "info@x", cseq, &tag);
        r.content_type = Some(ctype.to_string());
        r.body = body.to_string();
        r
    };
    let relay = info(
        "z9hG4bKi1",
        2,
        "application/dtmf-relay",
        "Signal=#\r\nDuration=160\r\n",
    );
    assert_eq!(codes(&b.deliver(300, relay.build())), [200]);
    // Its retransmission gets the stored 200 and is not a second key press.
    assert_eq!(codes(&b.deliver(800, relay.build())), [200]);
    let plain = info("z9hG4bKi2", 3, "application/dtmf", "7");
    assert_eq!(codes(&b.deliver(900, plain.build())), [200]);
    let keys: Vec<char> = b
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Dtmf { call: c, digit } if c == call => digit.as_char(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(keys, ['#', '7']);
    // Another body type: 415 with what we read; an empty INFO (keep-alive): 200.
    let xml = info("z9hG4bKi3", 4, "application/media_control+xml", "<x/>");
    let out = b.deliver(1_000, xml.build());
    assert_eq!(codes(&out), [415]);
    assert!(raw(&response(&out[0]), Name::ACCEPT)
        .unwrap()
        .contains("application/dtmf-relay"));
    let empty = Req::in_dialog("INFO", "z9hG4bKi4", "info@x", 5, &tag);
    assert_eq!(codes(&b.deliver(1_100, empty.build())), [200]);
    assert!(b.events().is_empty());
    // Outside a dialog: 481.
    let stray = Req::in_dialog("INFO", "z9hG4bKi5", "nocall@x", 1, "nosuchtag");
    assert_eq!(codes(&b.deliver(1_200, stray.build())), [481]);
}

// ---- 17. session timers (RFC 4028), UPDATE (RFC 3311), 100rel (RFC 3262) ---------------------

/// An INVITE that supports session timers and asks for `se` (with its extra headers).
fn timer_invite(branch: &str, call_id: &str, se: &str) -> Req {
    Req::invite(branch, call_id)
        .header("Supported: timer")
        .header(&format!("Session-Expires: {se}"))
        .header("Allow: INVITE, ACK, BYE, CANCEL, UPDATE")
}

/// Accepts `invite` at 0 ms and ACKs at 10 ms; returns the call, our tag and the 2xx.
fn timed_call(b: &mut Bench, invite: &Req) -> (CallToken, String, Response) {
    assert!(b.deliver(0, invite.build()).is_empty());
    let (call, _, _) = b.incoming();
    let out = b.accept(0, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    let ok = response(&out[0]);
    let tag = to_tag(&ok).unwrap();
    assert!(b.deliver(10, ack_2xx(invite, &tag).build()).is_empty());
    (call, tag, ok)
}

fn bye_and_ended(b: &mut Bench, sent: &[(u64, Transmit)], call: CallToken) -> u64 {
    let byes: Vec<u64> = sent
        .iter()
        .filter(|(_, t)| matches!(parse_message(t), Message::Request(r) if r.method.to_string() == "BYE"))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        !byes.is_empty(),
        "no BYE: {:?}",
        texts(sent.iter().map(|(_, t)| t))
    );
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::SessionExpired }] if *c == call
    ));
    byes[0]
}

#[test]
fn a_session_whose_caller_stops_refreshing_is_ended_with_bye() {
    let mut b = Bench::new();
    let (call, _, ok) = timed_call(&mut b, &timer_invite("z9hG4bKst1", "st1@x", "120"));
    assert_eq!(
        raw(&ok, Name::SESSION_EXPIRES).as_deref(),
        Some("120;refresher=uac")
    );
    assert!(tokens(&raw(&ok, Name::REQUIRE).unwrap()).contains(&"TIMER".to_string()));
    // No refresh: BYE at 120 - min(32, 40) = 88 s after our 2xx (RFC 4028 §10).
    assert!(b.run_until(87_999).is_empty());
    let sent = b.run_until(90_000);
    assert_eq!(bye_and_ended(&mut b, &sent, call), 88_000);
    assert_eq!(b.ep.dialogs(), 0);
}

#[test]
fn refreshes_by_reinvite_and_update_keep_the_session() {
    let mut b = Bench::new();
    let invite = timer_invite("z9hG4bKst2", "st2@x", "120");
    let (call, tag, _) = timed_call(&mut b, &invite);
    // A re-INVITE refresh at 60 s: answered with the timer again.
    let mut re = Req::in_dialog("INVITE", "z9hG4bKst2r", "st2@x", 2, &tag)
        .header("Supported: timer")
        .header("Session-Expires: 120;refresher=uac");
    re.content_type = Some("application/sdp".into());
    re.body = OFFER.into();
    assert!(b.deliver(60_000, re.build()).is_empty());
    assert!(matches!(b.events().as_slice(), [Event::Reinvite { .. }]));
    let out = b.accept(60_000, call, ANSWER);
    assert_eq!(
        raw(&response(&out[0]), Name::SESSION_EXPIRES).as_deref(),
        Some("120;refresher=uac")
    );
    assert!(b.deliver(60_010, ack_2xx(&re, &tag).build()).is_empty());
    // An UPDATE without a body at 140 s: 200 with the timer.
    let up = Req::in_dialog("UPDATE", "z9hG4bKst2u", "st2@x", 3, &tag)
        .header("Supported: timer")
        .header("Session-Expires: 120;refresher=uac");
    let out = b.deliver(140_000, up.build());
    assert_eq!(codes(&out), [200]);
    assert_eq!(
        raw(&response(&out[0]), Name::SESSION_EXPIRES).as_deref(),
        Some("120;refresher=uac")
    );
    assert!(b.events().is_empty());
    // Nothing until 140 + 88 s; then the BYE.
    assert!(b.run_until(227_999).is_empty());
    let sent = b.run_until(230_000);
    assert_eq!(bye_and_ended(&mut b, &sent, call), 228_000);
}

#[test]
fn an_interval_below_min_se_gets_422_with_ours() {
    let mut b = Bench::new();
    let invite = timer_invite("z9hG4bKst3", "st3@x", "30");
    let out = b.deliver(0, invite.build());
    assert_eq!(codes(&out), [422]);
    assert_eq!(raw(&response(&out[0]), Name::MIN_SE).as_deref(), Some("90"));
    assert!(b.events().is_empty());
}

#[test]
fn when_asked_to_refresh_we_send_update_and_a_failed_refresh_ends_the_call() {
    let mut b = Bench::new();
    let (call, _, ok) = timed_call(
        &mut b,
        &timer_invite("z9hG4bKst4", "st4@x", "120;refresher=uas"),
    );
    assert_eq!(
        raw(&ok, Name::SESSION_EXPIRES).as_deref(),
        Some("120;refresher=uas")
    );
    // Our UPDATE at half the interval.
    let sent = b.run_until(60_000);
    assert_eq!(sent.len(), 1, "{:?}", texts(sent.iter().map(|(_, t)| t)));
    assert_eq!(sent[0].0, 60_000);
    let update = request(&sent[0].1);
    assert_eq!(update.method.to_string(), "UPDATE");
    assert_eq!(
        raw(&update, Name::SESSION_EXPIRES).as_deref(),
        Some("120;refresher=uas")
    );
    assert!(update.body.is_empty());
    // The caller says 200: the next refresh is due 60 s later.
    let ok = respond_to(&sent[0].1, 200);
    assert!(b.deliver(60_050, ok).is_empty());
    assert!(b.events().is_empty());
    let sent = b.run_until(120_000);
    let updates: Vec<&Transmit> = sent
        .iter()
        .map(|(_, t)| t)
        .filter(
            |t| matches!(parse_message(t), Message::Request(r) if r.method.to_string() == "UPDATE"),
        )
        .collect();
    assert_eq!(updates.len(), 1);
    // This time 481: the caller no longer has the call. BYE and the end.
    let gone = respond_to(updates[0], 481);
    let out = b.deliver(120_050, gone);
    assert_eq!(request(&out[0]).method.to_string(), "BYE");
    assert!(matches!(
        b.events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::SessionExpired }] if *c == call
    ));
}

#[test]
fn update_with_an_offer_is_answered_by_the_application_and_prack_and_100rel_are_fine() {
    let mut b = Bench::new();
    let invite = Req::invite("z9hG4bKup1", "up1@x").header("Require: 100rel");
    let (call, tag) = b.confirmed_call(invite);
    let mut up = Req::in_dialog("UPDATE", "z9hG4bKup2", "up1@x", 2, &tag);
    up.content_type = Some("application/sdp".into());
    up.body = OFFER.into();
    assert!(b.deliver(1_000, up.build()).is_empty());
    assert!(matches!(b.events().as_slice(), [Event::Reinvite { call: c, .. }] if *c == call));
    let out = b.accept(1_000, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    assert_eq!(cseq_method(&response(&out[0])), "UPDATE");
    assert_eq!(&response(&out[0]).body[..], ANSWER.as_bytes());
    // A PRACK for a provisional response we never sent.
    let prack = Req::in_dialog("PRACK", "z9hG4bKup3", "up1@x", 3, &tag);
    assert_eq!(codes(&b.deliver(1_100, prack.build())), [481]);
    // UPDATE outside a dialog.
    let stray = Req::in_dialog("UPDATE", "z9hG4bKup4", "nocall@x", 1, "nosuchtag");
    assert_eq!(codes(&b.deliver(1_200, stray.build())), [481]);
}

/// A response from the caller to the request `t` we sent: same Via, From, To, Call-ID
/// and CSeq (a To tag added).
fn respond_to(t: &Transmit, code: u16) -> Bytes {
    let r = request(t);
    let mut s = format!("SIP/2.0 {code} X\r\n");
    for v in all_raw(&r, Name::VIA) {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!("From: {}\r\n", raw(&r, Name::FROM).unwrap()));
    s.push_str(&format!("To: {}\r\n", raw(&r, Name::TO).unwrap()));
    s.push_str(&format!("Call-ID: {}\r\n", raw(&r, Name::CALL_ID).unwrap()));
    s.push_str(&format!("CSeq: {}\r\n", raw(&r, Name::CSEQ).unwrap()));
    s.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(s)
}

#[test]
fn a_reinvite_without_offer_gets_ours_and_its_ack_brings_the_answer_once() {
    let mut b = Bench::new();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKro1", "ro1@x"));
    let re = Req::in_dialog("INVITE", "z9hG4bKro2", "ro1@x", 2, &tag);
    assert!(b.deliver(1_000, re.build()).is_empty());
    match b.events().as_slice() {
        [Event::Reinvite { call: c, offer, .. }] => {
            assert_eq!(*c, call);
            assert!(offer.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let out = b.accept(1_000, call, ANSWER);
    assert_eq!(codes(&out), [200]);
    let mut ack = ack_2xx(&re, &tag);
    ack.cseq = "2 ACK".into();
    ack.content_type = Some("application/sdp".into());
    ack.body = OFFER.into();
    assert!(b.deliver(1_100, ack.build()).is_empty());
    assert!(matches!(
        b.events().as_slice(),
        [Event::Answer { call: c, answer }] if *c == call && &answer[..] == OFFER.as_bytes()
    ));
    assert!(b.deliver(1_200, ack.build()).is_empty());
    assert!(
        b.events().is_empty(),
        "a retransmitted ACK is not a second answer"
    );
    assert!(b.run_until(60_000).is_empty(), "the 2xx stopped at the ACK");
}

#[test]
fn an_update_offer_while_our_offer_waits_for_its_answer_gets_491() {
    let mut b = Bench::new();
    let (call, tag) = b.confirmed_call(Req::invite("z9hG4bKgl1", "gl1@x"));
    // A re-INVITE without offer: our offer goes in the 2xx, the answer is not back yet.
    let re = Req::in_dialog("INVITE", "z9hG4bKgl2", "gl1@x", 2, &tag);
    assert!(b.deliver(1_000, re.build()).is_empty());
    b.events();
    assert_eq!(codes(&b.accept(1_000, call, ANSWER)), [200]);
    let mut up = Req::in_dialog("UPDATE", "z9hG4bKgl3", "gl1@x", 3, &tag);
    up.content_type = Some("application/sdp".into());
    up.body = OFFER.into();
    assert_eq!(codes(&b.deliver(1_050, up.build())), [491]);
    assert!(b.events().is_empty());
    // Once the answer is in, an UPDATE offer is taken.
    let mut ack = ack_2xx(&re, &tag);
    ack.cseq = "2 ACK".into();
    ack.content_type = Some("application/sdp".into());
    ack.body = OFFER.into();
    assert!(b.deliver(1_100, ack.build()).is_empty());
    b.events();
    let mut up = Req::in_dialog("UPDATE", "z9hG4bKgl4", "gl1@x", 4, &tag);
    up.content_type = Some("application/sdp".into());
    up.body = OFFER.into();
    assert!(b.deliver(1_200, up.build()).is_empty());
    assert!(matches!(b.events().as_slice(), [Event::Reinvite { .. }]));
}
