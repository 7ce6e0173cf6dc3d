//! SIP over a lossy UDP path, in virtual time: callers with their own RFC 3261 timers
//! (Timer A for the INVITE, Timer E for the BYE, an ACK for every 2xx) talk to the
//! bridge's [`Endpoint`] through the seeded simulated link, with the amplification
//! guard on as in the bridge.
//!
//! Two kinds of runs:
//! - one lost message of each kind (INVITE, 2xx, ACK, the caller's BYE, our 200 to it,
//!   our BYE, the caller's 200 to it), duplicates and reordering, where no call may be
//!   lost and no media is needed to save it;
//! - random loss (10 % and 20 % both ways) with duplicates, reordering and jitter,
//!   callers sending media once answered (which verifies their address, see
//!   [`Endpoint::handle_media_verified`]): every call comes up and ends as its caller
//!   wants.
#![allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin

#[path = "common/link_sim.rs"]
#[allow(dead_code)]
mod link_sim;

use bytes::Bytes;
use ezk_sip_types::Name;
use link_sim::{LinkParams, SimLink};
use sotto::redact::CallToken;
use sotto::sip::endpoint::{EndReason, Endpoint, EndpointConfig, Event};
use sotto::sip::message::{parse, HeaderAccess, Limits, Message};
use sotto::sip::transaction::Timers;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BRIDGE: &str = "127.0.0.1:5060";

/// The bridge's answer (what the application gives to `accept`).
const ANSWER: &str = "v=0\r\n\
o=sotto 1 1 IN IP4 127.0.0.1\r\n\
s=sotto\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// What crosses the link.
#[derive(Clone, Debug)]
enum Packet {
    /// A SIP message between caller `n` and the bridge.
    Sip(usize, Bytes),
    /// One of caller `n`'s media packets reaching the port of our answer.
    Media(usize),
}

/// Which side hangs up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ender {
    Caller,
    Bridge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no response yet: Timer A.
    Calling,
    /// 2xx seen and ACKed.
    Confirmed,
    /// Our BYE sent: Timer E.
    Hanging,
    /// The call ended as wanted.
    Done,
    /// Something went wrong (the reason).
    Failed(String),
}

/// A caller: just enough of an RFC 3261 UAC over UDP.
struct Caller {
    n: usize,
    phase: Phase,
    invite: Bytes,
    /// The bridge's To tag, from its 2xx.
    tag: Option<String>,
    /// Next retransmission (Timer A or E), its interval, and when to give up (B or F).
    retransmit: Option<(Instant, Duration, Instant)>,
    bye: Option<Bytes>,
    hangup_at: Option<Instant>,
    next_media: Option<Instant>,
    /// When the first 2xx arrived.
    answered_at: Option<Instant>,
    started: Instant,
    acks: usize,
}

fn source(n: usize) -> SocketAddr {
    format!("192.0.2.{}:5060", 10 + n).parse().expect("address")
}

impl Caller {
    fn new(n: usize, now: Instant) -> Caller {
        let offer = format!(
            "v=0\r\no=c{n} 1 1 IN IP4 192.0.2.{ip}\r\ns=-\r\nc=IN IP4 192.0.2.{ip}\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
            ip = 10 + n
        );
        let invite = format!(
            "INVITE sip:conf@{BRIDGE} SIP/2.0\r\n\
Via: SIP/2.0/UDP {src};branch=z9hG4bKinv{n};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:c{n}@example.org>;tag=c{n}\r\n\
To: <sip:conf@{BRIDGE}>\r\n\
Call-ID: call{n}@example.org\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:c{n}@{src}>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n{offer}",
            src = source(n),
            len = offer.len()
        );
        Caller {
            n,
            phase: Phase::Calling,
            invite: Bytes::from(invite),
            tag: None,
            retransmit: None,
            bye: None,
            hangup_at: None,
            next_media: None,
            answered_at: None,
            started: now,
            acks: 0,
        }
    }

    fn ack(&self, tag: &str) -> Bytes {
        let n = self.n;
        Bytes::from(format!(
            "ACK sip:sotto@{BRIDGE} SIP/2.0\r\n\
Via: SIP/2.0/UDP {src};branch=z9hG4bKack{n}x{acks};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:c{n}@example.org>;tag=c{n}\r\n\
To: <sip:conf@{BRIDGE}>;tag={tag}\r\n\
Call-ID: call{n}@example.org\r\n\
CSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n",
            src = source(n),
            acks = self.acks
        ))
    }

    fn bye(&self, tag: &str) -> Bytes {
        let n = self.n;
        Bytes::from(format!(
            "BYE sip:sotto@{BRIDGE} SIP/2.0\r\n\
Via: SIP/2.0/UDP {src};branch=z9hG4bKbye{n};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:c{n}@example.org>;tag=c{n}\r\n\
To: <sip:conf@{BRIDGE}>;tag={tag}\r\n\
Call-ID: call{n}@example.org\r\n\
CSeq: 2 BYE\r\n\
Content-Length: 0\r\n\r\n",
            src = source(n)
        ))
    }

    fn fail(&mut self, why: &str) {
        if !matches!(self.phase, Phase::Failed(_)) {
            self.phase = Phase::Failed(why.to_string());
        }
        self.retransmit = None;
        self.next_media = None;
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit.map(|(at, _, _)| at),
            self.hangup_at,
            self.next_media,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A whole run: callers, the bridge's endpoint, a link each way.
struct Run {
    ep: Endpoint,
    now: Instant,
    up: SimLink<Packet>,
    down: SimLink<Packet>,
    callers: Vec<Caller>,
    /// Call token → caller, from the Incoming events.
    calls: HashMap<CallToken, usize>,
    /// Ended events per caller.
    ended: HashMap<usize, Vec<EndReason>>,
    hold: Duration,
    ender: Ender,
    media: bool,
    /// Drop the `k`-th (0-based) message whose start line begins with this text, in
    /// the direction given (true: caller → bridge).
    drop_rule: Option<(bool, &'static str, usize)>,
    matched: usize,
    invites_seen: usize,
}

impl Run {
    fn new(seed: u64, params: LinkParams, hold: Duration, ender: Ender, media: bool) -> Run {
        let ep = Endpoint::new(EndpointConfig {
            local: BRIDGE.parse().expect("address"),
            local_tcp: None,
            local_tls: None,
            timers: Timers::default(),
            limits: Limits::default(),
            max_transactions: 10_000,
            amplification_guard: true,
            trunks: Default::default(),
        });
        Run {
            ep,
            now: Instant::now(),
            up: SimLink::new(seed, params),
            down: SimLink::new(seed ^ 0x5eed, params),
            callers: Vec::new(),
            calls: HashMap::new(),
            ended: HashMap::new(),
            hold,
            ender,
            media,
            drop_rule: None,
            matched: 0,
            invites_seen: 0,
        }
    }

    /// Whether the drop rule takes this message.
    fn dropped(&mut self, upward: bool, bytes: &[u8]) -> bool {
        let Some((dir, prefix, k)) = self.drop_rule else {
            return false;
        };
        if dir != upward || !bytes.starts_with(prefix.as_bytes()) {
            return false;
        }
        let hit = self.matched == k;
        self.matched += 1;
        hit
    }

    fn send_to_bridge(&mut self, n: usize, bytes: Bytes) {
        if !self.dropped(true, &bytes) {
            self.up.send(self.now, Packet::Sip(n, bytes));
        }
    }

    fn start_call(&mut self, n: usize) {
        let mut c = Caller::new(n, self.now);
        c.retransmit = Some((self.now + T1, T1, self.now + 64 * T1));
        let invite = c.invite.clone();
        self.callers.push(c);
        self.send_to_bridge(n, invite);
    }

    /// Runs until `until`, starting a call every `spacing` until `calls` are placed.
    fn run(&mut self, calls: usize, spacing: Duration, until: Duration) {
        let t0 = self.now;
        let end = t0 + until;
        let mut next_call = t0;
        // Each loop handles at least one deadline or arrival; the bound only stops a
        // run whose deadlines never clear.
        for _ in 0..2_000_000 {
            if self.callers.len() < calls && next_call <= self.now {
                self.start_call(self.callers.len());
                next_call += spacing;
            }
            let next = [
                (self.callers.len() < calls).then_some(next_call),
                self.ep.poll_timeout(),
                self.up.next_arrival(),
                self.down.next_arrival(),
                self.callers.iter().filter_map(Caller::next_deadline).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|&t| t <= end) else {
                return;
            };
            self.now = self.now.max(next);
            self.step();
        }
        panic!("the run did not settle");
    }

    fn step(&mut self) {
        let now = self.now;
        for (_, p) in self.up.poll_arrivals(now) {
            match p {
                Packet::Sip(n, bytes) => {
                    if bytes.starts_with(b"INVITE") {
                        self.invites_seen += 1;
                    }
                    self.ep.handle_datagram(now, source(n), bytes)
                }
                Packet::Media(n) => {
                    let call = self.calls.iter().find(|(_, c)| **c == n).map(|(t, _)| *t);
                    if let Some(call) = call {
                        self.ep.handle_media_verified(call);
                    }
                }
            }
            self.bridge_app();
        }
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        self.bridge_app();
        for (_, p) in self.down.poll_arrivals(now) {
            if let Packet::Sip(n, bytes) = p {
                self.caller_receives(n, bytes);
            }
        }
        for n in 0..self.callers.len() {
            self.caller_timers(n);
        }
    }

    /// The application: accept every call at once; hang up ourselves when asked to.
    fn bridge_app(&mut self) {
        let now = self.now;
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                Event::Incoming { call, source, .. } => {
                    let n = self
                        .callers
                        .iter()
                        .position(|c| self::source(c.n) == *source.expose())
                        .expect("a known caller");
                    self.calls.insert(call, n);
                    self.ep.accept(now, call, ANSWER);
                }
                Event::Ended { call, reason } => {
                    let n = self.calls[&call];
                    self.ended.entry(n).or_default().push(reason);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        if self.ender == Ender::Bridge {
            let due: Vec<CallToken> = self
                .calls
                .iter()
                .filter(|(_, n)| {
                    let c = &self.callers[**n];
                    c.phase == Phase::Confirmed
                        && c.answered_at.is_some_and(|t| now >= t + self.hold)
                        && !self.ended.contains_key(n)
                })
                .map(|(t, _)| *t)
                .collect();
            for call in due {
                self.ep.hangup(now, call);
                let n = self.calls[&call];
                self.ended
                    .entry(n)
                    .or_default()
                    .push(EndReason::LocalHangup);
            }
        }
        while let Some(t) = self.ep.poll_transmit() {
            let n = self
                .callers
                .iter()
                .position(|c| source(c.n) == t.dest)
                .expect("sent to a caller");
            if !self.dropped(false, &t.bytes) {
                self.down.send(now, Packet::Sip(n, t.bytes));
            }
        }
    }

    fn caller_receives(&mut self, n: usize, bytes: Bytes) {
        let now = self.now;
        let hold = self.hold;
        let media = self.media;
        let ender = self.ender;
        match parse(bytes, &Limits::default()).expect("the bridge sends valid SIP") {
            Message::Response(r) => {
                let method = r.cseq().map(|c| c.method.to_string()).unwrap_or_default();
                let c = &mut self.callers[n];
                match (method.as_str(), r.code) {
                    ("INVITE", 200) => {
                        let tag = r.to().ok().and_then(|t| t.tag).map(|t| t.to_string());
                        let Some(tag) = tag else {
                            c.fail("2xx without a To tag");
                            return;
                        };
                        // RFC 3261 §13.2.2.4: an ACK for every 2xx, retransmissions too.
                        let ack = c.ack(&tag);
                        c.acks += 1;
                        if c.phase == Phase::Calling {
                            c.phase = Phase::Confirmed;
                            c.tag = Some(tag);
                            c.retransmit = None;
                            c.answered_at = Some(now);
                            if ender == Ender::Caller {
                                c.hangup_at = Some(now + hold);
                            }
                            if media {
                                c.next_media = Some(now + Duration::from_millis(20));
                            }
                        }
                        self.send_to_bridge(n, ack);
                    }
                    ("INVITE", code) if code < 200 => {
                        // Timer A stops on a provisional response over UDP.
                        c.retransmit = c.retransmit.map(|(_, i, g)| (g, i, g));
                    }
                    ("INVITE", code) => c.fail(&format!("INVITE refused with {code}")),
                    ("BYE", 200) if c.phase == Phase::Hanging => {
                        c.phase = Phase::Done;
                        c.retransmit = None;
                    }
                    ("BYE", 200) => {}
                    ("BYE", code) => c.fail(&format!("BYE answered with {code}")),
                    (m, code) => c.fail(&format!("unexpected {code} to {m}")),
                }
            }
            Message::Request(req) => {
                let c = &mut self.callers[n];
                if req.method.to_string() != "BYE" {
                    c.fail("unexpected request from the bridge");
                    return;
                }
                if ender == Ender::Caller {
                    c.fail("the bridge hung up");
                } else if c.phase == Phase::Confirmed {
                    c.phase = Phase::Done;
                    c.next_media = None;
                }
                // 200 to the BYE (every copy: a non-INVITE server repeats its answer).
                let mut ok = String::from("SIP/2.0 200 OK\r\n");
                for (name, header) in [
                    ("Via", Name::VIA),
                    ("From", Name::FROM),
                    ("To", Name::TO),
                    ("Call-ID", Name::CALL_ID),
                    ("CSeq", Name::CSEQ),
                ] {
                    for v in req.headers.get_raw(&header) {
                        ok.push_str(&format!("{name}: {}\r\n", v.as_str()));
                    }
                }
                ok.push_str("Content-Length: 0\r\n\r\n");
                self.send_to_bridge(n, Bytes::from(ok));
            }
        }
    }

    fn caller_timers(&mut self, n: usize) {
        let now = self.now;
        let mut send = None;
        let c = &mut self.callers[n];
        if let Some((at, interval, give_up)) = c.retransmit {
            if give_up <= now {
                let why = if c.phase == Phase::Calling {
                    "Timer B: no answer to the INVITE"
                } else {
                    "Timer F: no answer to the BYE"
                };
                c.fail(why);
            } else if at <= now {
                let next = if c.phase == Phase::Calling {
                    interval * 2
                } else {
                    (interval * 2).min(T2)
                };
                c.retransmit = Some((at + next, next, give_up));
                send = if c.phase == Phase::Calling {
                    Some(c.invite.clone())
                } else {
                    c.bye.clone()
                };
            }
        }
        if c.hangup_at.is_some_and(|t| t <= now) {
            c.hangup_at = None;
            c.next_media = None;
            if c.phase == Phase::Confirmed {
                let bye = c.bye(c.tag.as_deref().unwrap_or_default());
                c.bye = Some(bye.clone());
                c.phase = Phase::Hanging;
                c.retransmit = Some((now + T1, T1, now + 64 * T1));
                send = Some(bye);
            }
        }
        let media_due = c.next_media.is_some_and(|t| t <= now);
        if media_due {
            // One packet every 20 ms stands for the stream; only the first few matter.
            c.next_media = c
                .next_media
                .map(|t| t + Duration::from_millis(20))
                .filter(|_| {
                    c.answered_at
                        .is_some_and(|a| now < a + Duration::from_secs(2))
                });
        }
        if let Some(bytes) = send {
            self.send_to_bridge(n, bytes);
        }
        if media_due {
            self.up.send(now, Packet::Media(n));
        }
    }

    /// Asserts every call came up and ended as wanted, on both sides.
    fn assert_all_calls_survived(&self, what: &str) {
        for c in &self.callers {
            assert_eq!(c.phase, Phase::Done, "{what}: caller {}", c.n);
            let reasons = self.ended.get(&c.n).cloned().unwrap_or_default();
            let wanted = match self.ender {
                Ender::Caller => EndReason::RemoteBye,
                Ender::Bridge => EndReason::LocalHangup,
            };
            assert_eq!(reasons, [wanted], "{what}: caller {} at the bridge", c.n);
        }
        assert_eq!(self.ep.dialogs(), 0, "{what}: dialogs left");
    }

    /// Setup times (INVITE sent → first 2xx at the caller), sorted, in ms.
    fn setup_ms(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .callers
            .iter()
            .filter_map(|c| c.answered_at.map(|a| (a - c.started).as_millis() as u64))
            .collect();
        v.sort_unstable();
        v
    }
}

/// A clean link with a 10 ms one-way delay.
fn clean() -> LinkParams {
    LinkParams {
        base_delay_ms: 10.0,
        ..LinkParams::default()
    }
}

#[test]
fn a_clean_link_answers_each_invite_within_one_round_trip() {
    let mut run = Run::new(1, clean(), Duration::from_secs(5), Ender::Caller, false);
    run.run(20, Duration::from_millis(50), Duration::from_secs(120));
    run.assert_all_calls_survived("clean");
    // INVITE 10 ms up, the 2xx 10 ms down: nothing waits for a retransmission.
    assert!(
        run.setup_ms().iter().all(|&ms| ms == 20),
        "{:?}",
        run.setup_ms()
    );
    assert_eq!(run.invites_seen, 20, "no INVITE had to be repeated");
    assert_eq!(run.ep.counters().amplification, 0);
}

#[test]
fn no_call_is_lost_to_a_single_lost_message_of_any_kind() {
    // (direction caller → bridge?, start line, which one, who hangs up)
    let cases: [(&str, bool, &'static str, Ender); 8] = [
        ("INVITE", true, "INVITE", Ender::Caller),
        ("2xx to the INVITE", false, "SIP/2.0 200", Ender::Caller),
        ("ACK", true, "ACK", Ender::Caller),
        ("the caller's BYE", true, "BYE", Ender::Caller),
        ("our 200 to the BYE", false, "SIP/2.0 200", Ender::Caller),
        ("ACK, bridge hangs up", true, "ACK", Ender::Bridge),
        ("our BYE", false, "BYE", Ender::Bridge),
        (
            "the caller's 200 to our BYE",
            true,
            "SIP/2.0 200",
            Ender::Bridge,
        ),
    ];
    for (what, upward, prefix, ender) in cases {
        // For "our 200 to the BYE" the first downward 200 is the INVITE's 2xx: skip it.
        let k = usize::from(what == "our 200 to the BYE");
        for media in [false, true] {
            let mut run = Run::new(7, clean(), Duration::from_secs(3), ender, media);
            run.drop_rule = Some((upward, prefix, k));
            run.run(1, Duration::from_secs(1), Duration::from_secs(120));
            assert!(run.matched > k, "{what}: the rule never matched");
            run.assert_all_calls_survived(&format!("lost {what} (media: {media})"));
        }
    }
}

#[test]
fn a_lost_ack_costs_one_retransmission_not_the_call() {
    let mut run = Run::new(3, clean(), Duration::from_secs(40), Ender::Caller, false);
    run.drop_rule = Some((true, "ACK", 0));
    run.run(1, Duration::from_secs(1), Duration::from_secs(120));
    run.assert_all_calls_survived("lost ACK, long call");
    // The 2xx came again at T1; the caller ACKed both copies.
    assert_eq!(run.callers[0].acks, 2);
    assert_eq!(run.ep.counters().amplification, 0);
}

#[test]
fn duplicates_and_reordering_change_nothing() {
    let params = LinkParams {
        base_delay_ms: 10.0,
        jitter_ms: 40.0,
        reorder: 0.2,
        duplicate: 0.3,
        ..LinkParams::default()
    };
    let mut run = Run::new(11, params, Duration::from_secs(4), Ender::Caller, false);
    run.run(40, Duration::from_millis(100), Duration::from_secs(200));
    run.assert_all_calls_survived("duplicates and reordering");
    assert!(run.up.stats().duplicated > 0 && run.down.stats().held_back > 0);
}

#[test]
fn random_loss_both_ways_loses_no_call_of_a_caller_that_sends_media() {
    for (seed, loss) in [(21u64, 0.1), (22, 0.1), (23, 0.2), (24, 0.2)] {
        let params = LinkParams {
            loss,
            base_delay_ms: 15.0,
            jitter_ms: 30.0,
            reorder: 0.05,
            duplicate: 0.02,
            ..LinkParams::default()
        };
        for ender in [Ender::Caller, Ender::Bridge] {
            let mut run = Run::new(seed, params, Duration::from_secs(5), ender, true);
            run.run(60, Duration::from_millis(150), Duration::from_secs(300));
            run.assert_all_calls_survived(&format!("loss {loss}, seed {seed}, {ender:?}"));
            let setup = run.setup_ms();
            println!(
                "loss {loss} seed {seed} {ender:?}: setup p50 {} ms, p99 {} ms, {} INVITEs \
                 for 60 calls, {} capped",
                setup[setup.len() / 2],
                setup[setup.len() * 99 / 100],
                run.invites_seen,
                run.ep.counters().amplification
            );
        }
    }
}
