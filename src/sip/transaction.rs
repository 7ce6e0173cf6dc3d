//! SIP transactions (RFC 3261 §17): one state machine per figure, driven by time.
//!
//! * [`InviteServer`]: Figure 7, with the "Accepted" state of RFC 6026 in which the
//!   2xx is retransmitted (RFC 3261 §13.3.1.4) until the ACK arrives.
//! * [`NonInviteServer`]: Figure 8.
//! * [`NonInviteClient`]: Figure 6 (the BYE the bridge sends).
//!
//! Each machine is fed `now` with every input and answers with what to send; the owner
//! asks [`poll_timeout`](InviteServer::poll_timeout) for the next deadline and calls
//! `handle_timeout(now)` when it has passed. Nothing here reads a clock or a socket.

use super::transport::ConnectionId;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 3261 Table 4 base timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J and L.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Bytes to send and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination address.
    pub dest: SocketAddr,
    /// For streams: the connection to send on (never a new one: we do not connect out).
    pub connection: Option<ConnectionId>,
    /// The message.
    pub bytes: Bytes,
}

/// A retransmission timer: next firing and current interval.
#[derive(Debug, Clone, Copy)]
struct Retransmit {
    at: Instant,
    interval: Duration,
}

impl Retransmit {
    fn start(now: Instant, interval: Duration) -> Self {
        Retransmit {
            at: now + interval,
            interval,
        }
    }

    fn backoff(&mut self, cap: Duration) {
        self.interval = (self.interval * 2).min(cap);
        self.at += self.interval;
    }
}

fn earliest(times: &[Option<Instant>]) -> Option<Instant> {
    times.iter().flatten().min().copied()
}

// ---- INVITE server (Figure 7 + RFC 6026) -------------------------------------------------

/// States of Figure 7, plus RFC 6026's Accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    /// No final response sent yet.
    Proceeding,
    /// A 3xx-6xx was sent; waiting for its ACK.
    Completed,
    /// The ACK for the 3xx-6xx arrived; absorbing retransmissions.
    Confirmed,
    /// A 2xx was sent (RFC 6026); retransmitting it until the ACK.
    Accepted,
    /// Done: the owner may drop the machine.
    Terminated,
}

/// What an INVITE server transaction reports to its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerEvent {
    /// Timer H fired for a non-2xx: the ACK never came.
    NoAckForError,
    /// The 2xx was retransmitted for 64·T1 without an ACK (RFC 3261 §13.3.1.4): end the call.
    NoAckFor2xx,
}

/// INVITE server transaction.
#[derive(Debug)]
pub struct InviteServer {
    state: InviteServerState,
    dest: SocketAddr,
    connection: Option<ConnectionId>,
    reliable: bool,
    timers: Timers,
    last_response: Option<Bytes>,
    /// Timer G, and the 2xx retransmission schedule in Accepted.
    retransmit: Option<Retransmit>,
    /// Timer H (Completed), or the 2xx give-up time in Accepted.
    give_up: Option<Instant>,
    /// Timer I (Confirmed) or Timer L (Accepted): when the machine terminates.
    linger: Option<Instant>,
    acked: bool,
}

impl InviteServer {
    /// Starts in Proceeding; responses go to `dest`.
    pub fn new(dest: SocketAddr, reliable: bool, timers: Timers) -> Self {
        InviteServer {
            state: InviteServerState::Proceeding,
            dest,
            connection: None,
            reliable,
            timers,
            last_response: None,
            retransmit: None,
            give_up: None,
            linger: None,
            acked: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// True when the owner may drop this machine.
    pub fn is_terminated(&self) -> bool {
        self.state == InviteServerState::Terminated
    }

    /// Responses go on this stream connection.
    pub fn with_connection(mut self, connection: Option<ConnectionId>) -> Self {
        self.connection = connection;
        self
    }

    fn transmit(&self, bytes: &Bytes) -> Transmit {
        Transmit {
            dest: self.dest,
            connection: self.connection,
            bytes: bytes.clone(),
        }
    }

    /// Sends a provisional (1xx) response; only in Proceeding.
    pub fn send_provisional(&mut self, bytes: Bytes) -> Option<Transmit> {
        if self.state != InviteServerState::Proceeding {
            return None;
        }
        let t = self.transmit(&bytes);
        self.last_response = Some(bytes);
        Some(t)
    }

    /// Sends the final response with status `code`; only in Proceeding.
    pub fn send_final(&mut self, now: Instant, code: u16, bytes: Bytes) -> Option<Transmit> {
        if self.state != InviteServerState::Proceeding {
            return None;
        }
        let t = self.transmit(&bytes);
        self.last_response = Some(bytes);
        if (200..300).contains(&code) {
            // RFC 6026 §7.1: Accepted; Timer L bounds the state. The 2xx itself is
            // retransmitted from T1 doubling to T2 until the ACK (RFC 3261 §13.3.1.4),
            // whatever the transport, because the ACK is end to end.
            self.state = InviteServerState::Accepted;
            self.retransmit = Some(Retransmit::start(now, self.timers.t1));
            self.give_up = Some(now + self.timers.timeout());
            self.linger = Some(now + self.timers.timeout());
        } else {
            self.state = InviteServerState::Completed;
            if !self.reliable {
                self.retransmit = Some(Retransmit::start(now, self.timers.t1));
            }
            self.give_up = Some(now + self.timers.timeout());
        }
        Some(t)
    }

    /// A retransmission of the INVITE arrived: repeat the last response (Figure 7).
    pub fn handle_request_retransmit(&mut self) -> Option<Transmit> {
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => {
                self.last_response.as_ref().map(|b| self.transmit(b))
            }
            // RFC 6026 §8.5: in Accepted the retransmitted INVITE is absorbed; the
            // 2xx schedule already covers it.
            _ => None,
        }
    }

    /// The ACK for a non-2xx final response arrived (same transaction).
    pub fn handle_ack(&mut self, now: Instant) {
        if self.state == InviteServerState::Completed {
            self.state = InviteServerState::Confirmed;
            self.retransmit = None;
            self.give_up = None;
            let linger = if self.reliable {
                Duration::ZERO
            } else {
                self.timers.t4
            };
            self.linger = Some(now + linger);
        }
    }

    /// The dialog saw the ACK for our 2xx: stop retransmitting it.
    pub fn handle_2xx_ack(&mut self) {
        if self.state == InviteServerState::Accepted {
            self.acked = true;
            self.retransmit = None;
            self.give_up = None;
        }
    }

    /// Whether the 2xx (if any) has been acknowledged.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.retransmit.map(|r| r.at), self.give_up, self.linger])
    }

    /// Fires every timer due at `now`; returns what to send and what happened.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
    ) -> (Option<Transmit>, Option<InviteServerEvent>) {
        let mut out = None;
        let mut event = None;
        if let Some(g) = self.give_up.filter(|&t| t <= now) {
            let _ = g;
            self.give_up = None;
            self.retransmit = None;
            event = Some(match self.state {
                InviteServerState::Accepted => InviteServerEvent::NoAckFor2xx,
                _ => InviteServerEvent::NoAckForError,
            });
            if self.state == InviteServerState::Completed {
                self.state = InviteServerState::Terminated;
            }
        }
        if let Some(mut r) = self.retransmit.filter(|r| r.at <= now) {
            out = self.last_response.as_ref().map(|b| self.transmit(b));
            r.backoff(self.timers.t2);
            // Never fire more than once per call even if far behind: catch up to now.
            while r.at <= now {
                r.backoff(self.timers.t2);
            }
            self.retransmit = Some(r);
        }
        if self.linger.is_some_and(|t| t <= now)
            && matches!(
                self.state,
                InviteServerState::Confirmed | InviteServerState::Accepted
            )
        {
            self.state = InviteServerState::Terminated;
            self.linger = None;
            self.retransmit = None;
        }
        (out, event)
    }
}

// ---- non-INVITE server (Figure 8) -----------------------------------------------------

/// States of Figure 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    /// Nothing sent yet.
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// A final response was sent; absorbing retransmissions for Timer J.
    Completed,
    /// Done.
    Terminated,
}

/// Non-INVITE server transaction.
#[derive(Debug)]
pub struct NonInviteServer {
    state: NonInviteServerState,
    dest: SocketAddr,
    connection: Option<ConnectionId>,
    reliable: bool,
    timers: Timers,
    last_response: Option<Bytes>,
    timer_j: Option<Instant>,
}

impl NonInviteServer {
    /// Starts in Trying.
    pub fn new(dest: SocketAddr, reliable: bool, timers: Timers) -> Self {
        NonInviteServer {
            state: NonInviteServerState::Trying,
            dest,
            connection: None,
            reliable,
            timers,
            last_response: None,
            timer_j: None,
        }
    }

    /// Responses go on this stream connection.
    pub fn with_connection(mut self, connection: Option<ConnectionId>) -> Self {
        self.connection = connection;
        self
    }

    /// The current state.
    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    /// True when the owner may drop this machine.
    pub fn is_terminated(&self) -> bool {
        self.state == NonInviteServerState::Terminated
    }

    /// Sends a response with status `code`.
    pub fn send(&mut self, now: Instant, code: u16, bytes: Bytes) -> Option<Transmit> {
        match self.state {
            NonInviteServerState::Trying | NonInviteServerState::Proceeding => {}
            _ => return None,
        }
        let t = Transmit {
            dest: self.dest,
            connection: self.connection,
            bytes: bytes.clone(),
        };
        self.last_response = Some(bytes);
        if code < 200 {
            self.state = NonInviteServerState::Proceeding;
        } else {
            self.state = NonInviteServerState::Completed;
            let j = if self.reliable {
                Duration::ZERO
            } else {
                self.timers.timeout()
            };
            self.timer_j = Some(now + j);
        }
        Some(t)
    }

    /// A retransmission of the request arrived: repeat the last response, if any.
    pub fn handle_request_retransmit(&self) -> Option<Transmit> {
        match self.state {
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => {
                self.last_response.as_ref().map(|b| Transmit {
                    dest: self.dest,
                    connection: self.connection,
                    bytes: b.clone(),
                })
            }
            _ => None,
        }
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    /// Fires Timer J.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer_j.is_some_and(|t| t <= now) {
            self.timer_j = None;
            self.state = NonInviteServerState::Terminated;
        }
    }
}

// ---- non-INVITE client (Figure 6) -----------------------------------------------------

/// States of Figure 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    /// Request sent, nothing heard.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions for Timer K.
    Completed,
    /// Done.
    Terminated,
}

/// What a non-INVITE client transaction reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientEvent {
    /// A final response with this code.
    Final(u16),
    /// Timer F: no final response in 64·T1.
    TimedOut,
}

/// Non-INVITE client transaction.
#[derive(Debug)]
pub struct NonInviteClient {
    state: NonInviteClientState,
    request: Transmit,
    reliable: bool,
    timers: Timers,
    timer_e: Option<Retransmit>,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
}

impl NonInviteClient {
    /// Starts the transaction; the returned [`Transmit`] is the first send of the request.
    pub fn new(
        now: Instant,
        request: Transmit,
        reliable: bool,
        timers: Timers,
    ) -> (Self, Transmit) {
        let first = request.clone();
        let c = NonInviteClient {
            state: NonInviteClientState::Trying,
            request,
            reliable,
            timers,
            timer_e: (!reliable).then(|| Retransmit::start(now, timers.t1)),
            timer_f: Some(now + timers.timeout()),
            timer_k: None,
        };
        (c, first)
    }

    /// The current state.
    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    /// True when the owner may drop this machine.
    pub fn is_terminated(&self) -> bool {
        self.state == NonInviteClientState::Terminated
    }

    /// A response for this transaction arrived.
    pub fn handle_response(&mut self, now: Instant, code: u16) -> Option<NonInviteClientEvent> {
        match self.state {
            NonInviteClientState::Trying | NonInviteClientState::Proceeding => {}
            _ => return None,
        }
        if code < 200 {
            self.state = NonInviteClientState::Proceeding;
            return None;
        }
        self.state = NonInviteClientState::Completed;
        self.timer_e = None;
        self.timer_f = None;
        let k = if self.reliable {
            Duration::ZERO
        } else {
            self.timers.t4
        };
        self.timer_k = Some(now + k);
        Some(NonInviteClientEvent::Final(code))
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[self.timer_e.map(|r| r.at), self.timer_f, self.timer_k])
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
    ) -> (Option<Transmit>, Option<NonInviteClientEvent>) {
        if self.timer_f.is_some_and(|t| t <= now) {
            self.state = NonInviteClientState::Terminated;
            self.timer_e = None;
            self.timer_f = None;
            return (None, Some(NonInviteClientEvent::TimedOut));
        }
        if self.timer_k.is_some_and(|t| t <= now) {
            self.state = NonInviteClientState::Terminated;
            self.timer_k = None;
            return (None, None);
        }
        let mut out = None;
        if let Some(mut e) = self.timer_e.filter(|e| e.at <= now) {
            out = Some(self.request.clone());
            if self.state == NonInviteClientState::Proceeding {
                // Figure 6: in Proceeding, Timer E is reset to T2.
                e.interval = self.timers.t2;
                e.at += self.timers.t2;
            } else {
                e.backoff(self.timers.t2);
            }
            while e.at <= now {
                e.at += e.interval;
            }
            self.timer_e = Some(e);
        }
        (out, None)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    fn dest() -> SocketAddr {
        "127.0.0.1:5070".parse().unwrap()
    }

    /// Runs a machine's timers on a virtual clock and records when something was sent.
    fn schedule<F>(
        start: Instant,
        until: Duration,
        mut next: impl FnMut() -> Option<Instant>,
        mut fire: F,
    ) -> Vec<u64>
    where
        F: FnMut(Instant) -> bool,
    {
        let mut sent = Vec::new();
        while let Some(t) = next() {
            if t > start + until {
                break;
            }
            if fire(t) {
                sent.push((t - start).as_millis() as u64);
            }
        }
        sent
    }

    #[test]
    fn invite_server_2xx_retransmits_until_ack_like_timer_g() {
        let t0 = Instant::now();
        let mut ist = InviteServer::new(dest(), false, Timers::default());
        assert!(ist.send_provisional(Bytes::from_static(b"100")).is_some());
        assert!(ist
            .send_final(t0, 200, Bytes::from_static(b"200"))
            .is_some());
        assert_eq!(ist.state(), InviteServerState::Accepted);
        let ist = std::cell::RefCell::new(ist);
        let sent = schedule(
            t0,
            Duration::from_secs(10),
            || ist.borrow().poll_timeout(),
            |t| ist.borrow_mut().handle_timeout(t).0.is_some(),
        );
        // T1 doubling to T2: 0.5, 1.5, 3.5, 7.5, 11.5 ...
        assert_eq!(sent, vec![500, 1500, 3500, 7500]);
        let mut ist = ist.into_inner();
        ist.handle_2xx_ack();
        assert!(ist.is_acked());
        // After the ACK nothing is retransmitted; Timer L ends the machine at 64·T1.
        let (out, ev) = ist.handle_timeout(t0 + Duration::from_secs(20));
        assert!(out.is_none() && ev.is_none());
        assert!(!ist.is_terminated());
        ist.handle_timeout(t0 + Duration::from_secs(32));
        assert!(ist.is_terminated());
    }

    #[test]
    fn invite_server_2xx_without_ack_gives_up_at_64_t1() {
        let t0 = Instant::now();
        let mut ist = InviteServer::new(dest(), false, Timers::default());
        ist.send_final(t0, 200, Bytes::from_static(b"200"));
        let mut events = Vec::new();
        let mut sends = 0;
        while let Some(t) = ist.poll_timeout() {
            let (o, e) = ist.handle_timeout(t);
            sends += o.is_some() as u32;
            events.extend(e.map(|e| (e, (t - t0).as_millis())));
        }
        assert_eq!(events, vec![(InviteServerEvent::NoAckFor2xx, 32_000)]);
        // 0.5 1.5 3.5 7.5 11.5 15.5 19.5 23.5 27.5 31.5
        assert_eq!(sends, 10);
        assert!(ist.is_terminated());
    }

    #[test]
    fn invite_server_error_response_and_ack() {
        let t0 = Instant::now();
        let mut ist = InviteServer::new(dest(), false, Timers::default());
        ist.send_final(t0, 487, Bytes::from_static(b"487"));
        assert_eq!(ist.state(), InviteServerState::Completed);
        assert!(ist.handle_request_retransmit().is_some());
        let (o, _) = ist.handle_timeout(t0 + Duration::from_millis(500));
        assert!(o.is_some());
        ist.handle_ack(t0 + Duration::from_millis(600));
        assert_eq!(ist.state(), InviteServerState::Confirmed);
        // Timer I = T4 over UDP.
        assert_eq!(ist.poll_timeout(), Some(t0 + Duration::from_millis(5600)));
        ist.handle_timeout(t0 + Duration::from_millis(5600));
        assert!(ist.is_terminated());
    }

    #[test]
    fn invite_server_error_without_ack_times_out_with_timer_h() {
        let t0 = Instant::now();
        let mut ist = InviteServer::new(dest(), true, Timers::default());
        ist.send_final(t0, 488, Bytes::from_static(b"488"));
        // Reliable transport: no Timer G at all.
        assert_eq!(ist.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        let (o, e) = ist.handle_timeout(t0 + Duration::from_secs(32));
        assert!(o.is_none());
        assert_eq!(e, Some(InviteServerEvent::NoAckForError));
        assert!(ist.is_terminated());
    }

    #[test]
    fn non_invite_server_absorbs_retransmissions_for_timer_j() {
        let t0 = Instant::now();
        let mut nist = NonInviteServer::new(dest(), false, Timers::default());
        assert!(nist.handle_request_retransmit().is_none());
        assert!(nist.send(t0, 200, Bytes::from_static(b"200")).is_some());
        assert_eq!(
            nist.handle_request_retransmit().unwrap().bytes,
            Bytes::from_static(b"200")
        );
        assert!(nist.send(t0, 200, Bytes::from_static(b"again")).is_none());
        assert_eq!(nist.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        nist.handle_timeout(t0 + Duration::from_secs(31));
        assert!(!nist.is_terminated());
        nist.handle_timeout(t0 + Duration::from_secs(32));
        assert!(nist.is_terminated());
        let mut tcp = NonInviteServer::new(dest(), true, Timers::default());
        tcp.send(t0, 200, Bytes::new());
        tcp.handle_timeout(t0);
        assert!(tcp.is_terminated());
    }

    #[test]
    fn non_invite_client_timer_e_schedule_and_timer_f() {
        let t0 = Instant::now();
        let req = Transmit {
            dest: dest(),
            connection: None,
            bytes: Bytes::from_static(b"BYE"),
        };
        let (nict, first) = NonInviteClient::new(t0, req, false, Timers::default());
        assert_eq!(first.bytes, Bytes::from_static(b"BYE"));
        let nict = std::cell::RefCell::new(nict);
        let mut timed_out = None;
        let sent = schedule(
            t0,
            Duration::from_secs(40),
            || nict.borrow().poll_timeout(),
            |t| {
                let (o, e) = nict.borrow_mut().handle_timeout(t);
                if e.is_some() {
                    timed_out = Some((t - t0).as_millis());
                }
                o.is_some()
            },
        );
        // E: 0.5, 1.5, 3.5, 7.5 then every T2 = 4 s; F at 32 s.
        assert_eq!(
            sent,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(timed_out, Some(32_000));
        assert!(nict.borrow().is_terminated());
    }

    #[test]
    fn non_invite_client_proceeding_uses_t2_and_completes() {
        let t0 = Instant::now();
        let req = Transmit {
            dest: dest(),
            connection: None,
            bytes: Bytes::from_static(b"BYE"),
        };
        let (mut nict, _) = NonInviteClient::new(t0, req, false, Timers::default());
        assert_eq!(
            nict.handle_response(t0 + Duration::from_millis(100), 100),
            None
        );
        assert_eq!(nict.state(), NonInviteClientState::Proceeding);
        let (o, _) = nict.handle_timeout(t0 + Duration::from_millis(500));
        assert!(o.is_some());
        assert_eq!(nict.poll_timeout(), Some(t0 + Duration::from_millis(4500)));
        assert_eq!(
            nict.handle_response(t0 + Duration::from_secs(1), 200),
            Some(NonInviteClientEvent::Final(200))
        );
        assert_eq!(nict.handle_response(t0 + Duration::from_secs(1), 200), None);
        assert_eq!(nict.poll_timeout(), Some(t0 + Duration::from_secs(6)));
        nict.handle_timeout(t0 + Duration::from_secs(6));
        assert!(nict.is_terminated());
    }
}
