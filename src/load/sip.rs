//! One load-generator call's SIP, as a sans-IO user agent client: INVITE, ACK, BYE,
//! and answers to what the bridge sends inside the dialog.
//!
//! Driven like the bridge's own core: [`Call::new`] queues the INVITE;
//! [`Call::handle_message`] takes what arrived (no time: a message only moves the
//! state) and [`Call::handle_timeout`] the time;
//! [`Call::poll_transmit`] gives bytes to send, [`Call::poll_event`] what happened,
//! [`Call::poll_timeout`] when to call again. It never reads the clock.
//!
//! Timers (RFC 3261 §17.1, Table 4): over UDP the INVITE is repeated from T1 doubling
//! until a response (Timer A) and given up after 64·T1 (Timer B); the BYE is repeated
//! from T1 doubling up to T2 (Timer E) and given up after 64·T1 (Timer F). Over TCP
//! and TLS nothing is repeated, the same timeouts apply. A 2xx that comes again (the
//! bridge repeats it until our ACK arrives) is ACKed again.
//!
//! ```
//! # #[allow(clippy::disallowed_methods)]
//! # fn main() {
//! use sotto::load::sip::{Call, CallSetup, SipTransport};
//! let now = std::time::Instant::now();
//! let mut call = Call::new(CallSetup {
//!     transport: SipTransport::Udp,
//!     local: "127.0.1.1:5070".parse().unwrap(),
//!     target: "127.0.0.1:5060".parse().unwrap(),
//!     room: "conference".into(),
//!     user: "load-1".into(),
//!     call_id: "abc@sotto-load".into(),
//!     from_tag: "f1".into(),
//!     sdp: String::new(),
//! }, now);
//! let invite = call.poll_transmit().unwrap();
//! assert!(invite.starts_with(b"INVITE sip:conference@127.0.0.1:5060 SIP/2.0\r\n"));
//! // Timer A: the INVITE goes again after T1 unless a response came.
//! assert_eq!(call.poll_timeout(), Some(now + std::time::Duration::from_millis(500)));
//! # }
//! ```

use crate::sip::message::{build_response, HeaderAccess, Message, Request, Response};
use bytes::Bytes;
use ezk_sip_types::Method;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 3261 Table 4: the round-trip estimate.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 Table 4: the longest interval between retransmissions of a non-INVITE
/// request.
pub const T2: Duration = Duration::from_secs(4);
/// Timers B and F: 64·T1, after which a transaction without a final response fails.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);

/// How the call's SIP travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    /// Datagrams: we repeat requests ourselves.
    Udp,
    /// TCP: reliable, no repeats.
    Tcp,
    /// TLS over TCP: reliable, no repeats.
    Tls,
}

impl SipTransport {
    /// The Via transport token.
    pub fn via(self) -> &'static str {
        match self {
            SipTransport::Udp => "UDP",
            SipTransport::Tcp => "TCP",
            SipTransport::Tls => "TLS",
        }
    }

    /// Whether requests must be repeated (RFC 3261 §17.1.1.2, §17.1.2.2).
    pub fn is_unreliable(self) -> bool {
        self == SipTransport::Udp
    }
}

/// What a call is set up with.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The transport.
    pub transport: SipTransport,
    /// Our SIP address (Via and Contact).
    pub local: SocketAddr,
    /// The bridge's SIP address.
    pub target: SocketAddr,
    /// The Request-URI's user part (the bridge sends any to the PIN prompt).
    pub room: String,
    /// Our From/Contact user part.
    pub user: String,
    /// The Call-ID.
    pub call_id: String,
    /// Our From tag.
    pub from_tag: String,
    /// The SDP offer.
    pub sdp: String,
}

/// What happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// The bridge answered 2xx; the body is its SDP answer. Reported once.
    Answered {
        /// The answer.
        sdp: Bytes,
    },
    /// A final response of 300 or above to the INVITE.
    Refused {
        /// Its status code.
        code: u16,
    },
    /// No final response to the INVITE within Timer B.
    SetupTimedOut,
    /// The bridge sent BYE (answered 200): it ended the call.
    RemoteBye,
    /// Our BYE got its final response.
    ByeAnswered {
        /// Its status code.
        code: u16,
    },
    /// Our BYE got no final response within Timer F.
    ByeTimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// INVITE sent, nothing heard (Timer A repeats it over UDP).
    Calling { next: Instant, interval: Duration },
    /// A provisional response came: wait for the final one.
    Proceeding,
    /// 2xx received and ACKed.
    Confirmed,
    /// Our BYE is out (Timer E repeats it over UDP).
    Terminating { next: Instant, interval: Duration },
    /// Over: nothing more to send but answers to repeated requests.
    Terminated,
}

/// One call; see the module docs.
#[derive(Debug)]
pub struct Call {
    setup: CallSetup,
    state: State,
    invite: Vec<u8>,
    invite_branch: String,
    /// Timer B, then Timer F for the BYE.
    deadline: Instant,
    to_tag: Option<String>,
    ack: Option<Vec<u8>>,
    bye: Option<Vec<u8>>,
    cseq: u32,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<CallEvent>,
}

fn branch() -> String {
    // RFC 3261 §8.1.1.7: the magic cookie, then something unique.
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

impl Call {
    /// A call whose INVITE is queued now.
    pub fn new(setup: CallSetup, now: Instant) -> Call {
        let invite_branch = branch();
        let mut call = Call {
            state: State::Calling {
                next: now + T1,
                interval: T1,
            },
            invite: Vec::new(),
            invite_branch,
            deadline: now + TRANSACTION_TIMEOUT,
            to_tag: None,
            ack: None,
            bye: None,
            cseq: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            setup,
        };
        let body = call.setup.sdp.clone();
        let branch = call.invite_branch.clone();
        call.invite = call.request("INVITE", &branch, 1, Some(&body));
        call.transmits.push_back(call.invite.clone());
        call
    }

    fn request(&self, method: &str, branch: &str, cseq: u32, sdp: Option<&str>) -> Vec<u8> {
        let s = &self.setup;
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let contact_transport = match s.transport {
            SipTransport::Udp => "",
            SipTransport::Tcp => ";transport=tcp",
            SipTransport::Tls => ";transport=tls",
        };
        let mut text = format!(
            "{method} sip:{room}@{target} SIP/2.0\r\n\
             Via: SIP/2.0/{via} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{local}>;tag={from_tag}\r\n\
             To: <sip:{room}@{target}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{local}{contact_transport}>\r\n\
             User-Agent: sotto-load\r\n",
            room = s.room,
            target = s.target,
            via = s.transport.via(),
            local = s.local,
            user = s.user,
            from_tag = s.from_tag,
            call_id = s.call_id,
        );
        match sdp {
            Some(body) => {
                text.push_str("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO\r\n");
                text.push_str(&format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ));
            }
            None => text.push_str("Content-Length: 0\r\n\r\n"),
        }
        text.into_bytes()
    }

    /// Takes a message the bridge sent (from `source`).
    pub fn handle_message(&mut self, message: &Message, source: SocketAddr) {
        match message {
            Message::Response(r) => self.handle_response(r),
            Message::Request(r) => self.handle_request(r, source),
        }
    }

    fn handle_response(&mut self, r: &Response) {
        if r.call_id().ok().as_deref() != Some(self.setup.call_id.as_str()) {
            return;
        }
        let Ok(cseq) = r.cseq() else { return };
        if cseq.method == Method::INVITE && cseq.cseq == 1 {
            self.handle_invite_response(r);
        } else if cseq.method == Method::BYE
            && cseq.cseq == self.cseq
            && r.code >= 200
            && matches!(self.state, State::Terminating { .. })
        {
            self.state = State::Terminated;
            self.events
                .push_back(CallEvent::ByeAnswered { code: r.code });
        }
    }

    fn handle_invite_response(&mut self, r: &Response) {
        match (self.state, r.code) {
            (State::Calling { .. } | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
            }
            (State::Calling { .. } | State::Proceeding, 200..=299) => {
                self.to_tag = r.to().ok().and_then(|t| t.tag).map(|t| t.to_string());
                // The ACK of a 2xx is its own transaction (RFC 3261 §13.2.2.4).
                let ack = self.request("ACK", &branch(), 1, None);
                self.transmits.push_back(ack.clone());
                self.ack = Some(ack);
                self.state = State::Confirmed;
                self.events.push_back(CallEvent::Answered {
                    sdp: r.body.clone(),
                });
            }
            (State::Calling { .. } | State::Proceeding, 300..) => {
                // The ACK of a failure belongs to the INVITE transaction: same branch
                // (RFC 3261 §17.1.1.3), To with the response's tag.
                self.to_tag = r.to().ok().and_then(|t| t.tag).map(|t| t.to_string());
                let branch = self.invite_branch.clone();
                let ack = self.request("ACK", &branch, 1, None);
                self.transmits.push_back(ack);
                self.state = State::Terminated;
                self.events.push_back(CallEvent::Refused { code: r.code });
            }
            (State::Confirmed | State::Terminating { .. } | State::Terminated, 200..=299) => {
                // The bridge repeats its 2xx until our ACK arrives: ACK again.
                if let Some(ack) = &self.ack {
                    self.transmits.push_back(ack.clone());
                }
            }
            _ => {}
        }
    }

    fn handle_request(&mut self, r: &Request, source: SocketAddr) {
        if r.call_id().ok().as_deref() != Some(self.setup.call_id.as_str()) {
            return;
        }
        let code = match r.method {
            Method::ACK => return,
            Method::BYE => {
                if !matches!(self.state, State::Terminated) {
                    self.state = State::Terminated;
                    self.events.push_back(CallEvent::RemoteBye);
                }
                200
            }
            // We make no new offers: a re-INVITE with one gets "not acceptable".
            Method::INVITE => 488,
            // Session refreshes (UPDATE), OPTIONS pings, INFO: fine.
            _ => 200,
        };
        if let Ok(response) = build_response(r, source, code, None, &[], None) {
            self.transmits.push_back(response);
        }
    }

    /// Ends the call: BYE when it is up; a call still being set up is dropped quietly
    /// (the bridge's Timer B and our missing ACK take care of it).
    pub fn hang_up(&mut self, now: Instant) {
        match self.state {
            State::Confirmed => {
                self.cseq += 1;
                let bye = self.request("BYE", &branch(), self.cseq, None);
                self.transmits.push_back(bye.clone());
                self.bye = Some(bye);
                self.deadline = now + TRANSACTION_TIMEOUT;
                self.state = State::Terminating {
                    next: now + T1,
                    interval: T1,
                };
            }
            State::Calling { .. } | State::Proceeding => self.state = State::Terminated,
            State::Terminating { .. } | State::Terminated => {}
        }
    }

    /// Takes the time: repeats requests and gives up on them when their timers say so.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = now >= self.deadline;
        match self.state {
            State::Calling { .. } | State::Proceeding if expired => {
                self.state = State::Terminated;
                self.events.push_back(CallEvent::SetupTimedOut);
            }
            State::Terminating { .. } if expired => {
                self.state = State::Terminated;
                self.events.push_back(CallEvent::ByeTimedOut);
            }
            State::Calling { next, interval } if now >= next => {
                if self.setup.transport.is_unreliable() {
                    self.transmits.push_back(self.invite.clone());
                }
                // Timer A doubles without a cap (RFC 3261 §17.1.1.2).
                let interval = interval * 2;
                self.state = State::Calling {
                    next: now + interval,
                    interval,
                };
            }
            State::Terminating { next, interval } if now >= next => {
                if self.setup.transport.is_unreliable() {
                    if let Some(bye) = &self.bye {
                        self.transmits.push_back(bye.clone());
                    }
                }
                // Timer E doubles up to T2 (RFC 3261 §17.1.2.2).
                let interval = (interval * 2).min(T2);
                self.state = State::Terminating {
                    next: now + interval,
                    interval,
                };
            }
            _ => {}
        }
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next thing that happened, if any.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// When [`Call::handle_timeout`] wants to be called next; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Calling { next, .. } | State::Terminating { next, .. } => {
                // Over TCP and TLS there is nothing to repeat: only the deadline.
                if self.setup.transport.is_unreliable() {
                    Some(next.min(self.deadline))
                } else {
                    Some(self.deadline)
                }
            }
            State::Proceeding => Some(self.deadline),
            State::Confirmed | State::Terminated => None,
        }
    }

    /// Whether the call is over.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// Whether the call was answered and is not yet being ended.
    pub fn is_confirmed(&self) -> bool {
        self.state == State::Confirmed
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;
    use crate::sip::message::{parse, Limits};

    const BRIDGE: &str = "127.0.0.1:5060";

    fn setup(transport: SipTransport) -> CallSetup {
        CallSetup {
            transport,
            local: "127.0.1.9:41234".parse().unwrap(),
            target: BRIDGE.parse().unwrap(),
            room: "conference".into(),
            user: "load-9".into(),
            call_id: "c9@sotto-load".into(),
            from_tag: "t9".into(),
            sdp: "v=0\r\n".into(),
        }
    }

    fn request_of(bytes: &[u8]) -> Request {
        match parse(Bytes::copy_from_slice(bytes), &Limits::default()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("not a request"),
        }
    }

    /// The bridge's response to one of our requests.
    fn respond(request: &[u8], code: u16, body: Option<&str>) -> Message {
        let req = request_of(request);
        let src: SocketAddr = "127.0.1.9:41234".parse().unwrap();
        let bytes = build_response(
            &req,
            src,
            code,
            Some("bridge-tag"),
            &[],
            body.map(|b| ("application/sdp", b.as_bytes())),
        )
        .unwrap();
        parse(Bytes::from(bytes), &Limits::default()).unwrap()
    }

    fn drain(call: &mut Call) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| call.poll_transmit()).collect()
    }

    fn starts(bytes: &[u8], prefix: &str) -> bool {
        bytes.starts_with(prefix.as_bytes())
    }

    #[test]
    fn invite_is_repeated_per_timer_a_until_a_provisional_response() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Udp), t0);
        let invite = drain(&mut call).remove(0);
        let text = String::from_utf8(invite.clone()).unwrap();
        assert!(text.contains("Via: SIP/2.0/UDP 127.0.1.9:41234;branch=z9hG4bK"));
        assert!(text.contains("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
        // 0.5, 1.5, 3.5 s: each repeat identical to the first.
        let mut at = Vec::new();
        while let Some(t) = call.poll_timeout() {
            if t > t0 + Duration::from_secs(4) {
                break;
            }
            call.handle_timeout(t);
            assert_eq!(drain(&mut call), vec![invite.clone()]);
            at.push((t - t0).as_millis());
        }
        assert_eq!(at, vec![500, 1500, 3500]);
        call.handle_message(&respond(&invite, 100, None), BRIDGE.parse().unwrap());
        call.handle_timeout(t0 + Duration::from_secs(10));
        assert!(drain(&mut call).is_empty());
        // Timer B still bounds the wait for a final response.
        assert_eq!(call.poll_timeout(), Some(t0 + TRANSACTION_TIMEOUT));
        call.handle_timeout(t0 + TRANSACTION_TIMEOUT);
        assert_eq!(call.poll_event(), Some(CallEvent::SetupTimedOut));
        assert!(call.is_terminated());
    }

    #[test]
    fn a_2xx_is_acked_and_acked_again_when_repeated() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Udp), t0);
        let invite = drain(&mut call).remove(0);
        let ok = respond(&invite, 200, Some("v=0\r\n"));
        call.handle_message(&ok, BRIDGE.parse().unwrap());
        assert_eq!(
            call.poll_event(),
            Some(CallEvent::Answered {
                sdp: Bytes::from_static(b"v=0\r\n")
            })
        );
        let acks = drain(&mut call);
        assert_eq!(acks.len(), 1);
        let ack = request_of(&acks[0]);
        assert_eq!(ack.method, Method::ACK);
        assert_eq!(ack.to().unwrap().tag.unwrap().as_str(), "bridge-tag");
        assert_eq!(ack.cseq().unwrap().cseq, 1);
        // A 2xx ACK is a new transaction: another branch than the INVITE's.
        assert_ne!(
            ack.top_via().unwrap().params.get_val("branch").cloned(),
            request_of(&invite)
                .top_via()
                .unwrap()
                .params
                .get_val("branch")
                .cloned()
        );
        assert!(call.is_confirmed());
        assert_eq!(call.poll_timeout(), None);
        call.handle_message(&ok, BRIDGE.parse().unwrap());
        assert_eq!(drain(&mut call), acks);
        assert_eq!(call.poll_event(), None);
    }

    #[test]
    fn a_refusal_is_acked_in_its_transaction() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Udp), t0);
        let invite = drain(&mut call).remove(0);
        call.handle_message(&respond(&invite, 503, None), BRIDGE.parse().unwrap());
        assert_eq!(call.poll_event(), Some(CallEvent::Refused { code: 503 }));
        let ack = request_of(&drain(&mut call)[0]);
        assert_eq!(ack.method, Method::ACK);
        assert_eq!(
            ack.top_via().unwrap().params.get_val("branch").cloned(),
            request_of(&invite)
                .top_via()
                .unwrap()
                .params
                .get_val("branch")
                .cloned()
        );
        assert!(call.is_terminated());
    }

    #[test]
    fn bye_is_repeated_per_timer_e_up_to_t2_and_ends_on_its_200() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Udp), t0);
        let invite = drain(&mut call).remove(0);
        call.handle_message(
            &respond(&invite, 200, Some("v=0\r\n")),
            BRIDGE.parse().unwrap(),
        );
        assert!(matches!(
            call.poll_event(),
            Some(CallEvent::Answered { .. })
        ));
        drain(&mut call);
        call.hang_up(t0);
        let bye = drain(&mut call).remove(0);
        assert!(starts(&bye, "BYE sip:conference@127.0.0.1:5060 SIP/2.0"));
        let req = request_of(&bye);
        assert_eq!(req.cseq().unwrap().cseq, 2);
        assert_eq!(req.to().unwrap().tag.unwrap().as_str(), "bridge-tag");
        let mut at = Vec::new();
        while let Some(t) = call.poll_timeout() {
            if t > t0 + Duration::from_secs(16) {
                break;
            }
            call.handle_timeout(t);
            assert_eq!(drain(&mut call), vec![bye.clone()]);
            at.push((t - t0).as_millis());
        }
        // T1 doubling, capped at T2 = 4 s.
        assert_eq!(at, vec![500, 1500, 3500, 7500, 11_500, 15_500]);
        call.handle_message(&respond(&bye, 200, None), BRIDGE.parse().unwrap());
        assert_eq!(
            call.poll_event(),
            Some(CallEvent::ByeAnswered { code: 200 })
        );
        assert!(call.is_terminated());
        assert_eq!(call.poll_timeout(), None);
    }

    #[test]
    fn an_unanswered_bye_times_out_per_timer_f() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Tcp), t0);
        let invite = drain(&mut call).remove(0);
        call.handle_message(
            &respond(&invite, 200, Some("v=0\r\n")),
            BRIDGE.parse().unwrap(),
        );
        call.poll_event();
        drain(&mut call);
        let t1 = t0 + Duration::from_secs(3);
        call.hang_up(t1);
        assert_eq!(drain(&mut call).len(), 1);
        // Over TCP: no repeats, only the deadline.
        assert_eq!(call.poll_timeout(), Some(t1 + TRANSACTION_TIMEOUT));
        call.handle_timeout(t1 + TRANSACTION_TIMEOUT);
        assert!(drain(&mut call).is_empty());
        assert_eq!(call.poll_event(), Some(CallEvent::ByeTimedOut));
    }

    #[test]
    fn nothing_is_repeated_over_streams() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Tls), t0);
        let invite = drain(&mut call).remove(0);
        let text = String::from_utf8(invite).unwrap();
        assert!(text.contains("Via: SIP/2.0/TLS "));
        assert!(text.contains(";transport=tls>"));
        assert_eq!(call.poll_timeout(), Some(t0 + TRANSACTION_TIMEOUT));
        call.handle_timeout(t0 + Duration::from_secs(5));
        assert!(drain(&mut call).is_empty());
    }

    #[test]
    fn a_bye_from_the_bridge_is_answered_and_reported_once() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Udp), t0);
        let invite = drain(&mut call).remove(0);
        call.handle_message(
            &respond(&invite, 200, Some("v=0\r\n")),
            BRIDGE.parse().unwrap(),
        );
        call.poll_event();
        drain(&mut call);
        let bye = format!(
            "BYE sip:load-9@127.0.1.9:41234 SIP/2.0\r\nVia: SIP/2.0/UDP {BRIDGE};branch=z9hG4bKb1\r\n\
             From: <sip:conference@{BRIDGE}>;tag=bridge-tag\r\nTo: <sip:load-9@127.0.1.9:41234>;tag=t9\r\n\
             Call-ID: c9@sotto-load\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = parse(Bytes::from(bye), &Limits::default()).unwrap();
        for _ in 0..2 {
            call.handle_message(&msg, BRIDGE.parse().unwrap());
            let out = drain(&mut call);
            assert_eq!(out.len(), 1);
            assert!(
                starts(&out[0], "SIP/2.0 200"),
                "{:?}",
                String::from_utf8_lossy(&out[0])
            );
        }
        assert_eq!(call.poll_event(), Some(CallEvent::RemoteBye));
        assert_eq!(call.poll_event(), None);
        // Hanging up after the bridge did sends nothing.
        call.hang_up(t0);
        assert!(drain(&mut call).is_empty());
    }

    #[test]
    fn messages_of_other_calls_are_ignored() {
        let t0 = Instant::now();
        let mut call = Call::new(setup(SipTransport::Udp), t0);
        let invite = drain(&mut call).remove(0);
        let other = String::from_utf8(invite)
            .unwrap()
            .replace("c9@sotto-load", "other");
        call.handle_message(
            &respond(other.as_bytes(), 200, Some("v=0\r\n")),
            BRIDGE.parse().unwrap(),
        );
        assert_eq!(call.poll_event(), None);
        assert!(!call.is_confirmed());
    }
}
