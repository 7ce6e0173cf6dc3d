//! The reflection guard: how much the endpoint may send to a UDP source whose address
//! it has not verified.
//!
//! A request's source address can be forged, and an answer larger than the request
//! would make us an amplifier. So to an unverified UDP source we send at most
//! [`AMPLIFICATION_FACTOR`] times the bytes it sent (retransmissions included), as QUIC
//! does for an unvalidated address (RFC 9000 §8.1). An address is verified by return
//! routability: its ACK to our 2xx, or its media reaching the port our answer named;
//! a verified address is not capped while a dialog (or our last request in it) lasts.
//! Streams (TCP/TLS) are never capped: their handshake already proved the address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What an unverified UDP source may receive for each byte it sent: three, as QUIC
/// allows an unvalidated address (RFC 9000 §8.1). A reflection through us then gains an
/// attacker at most 3×, while a real caller's 2xx (larger than a terse INVITE) and its
/// retransmissions after a lost ACK fit without waiting for the caller to repeat itself.
pub const AMPLIFICATION_FACTOR: usize = 3;

/// Most unverified sources whose byte budgets are tracked; beyond it the oldest entry
/// makes room, so a flood of spoofed sources delays but never silences a real caller
/// (its retransmission re-credits), and the table cannot grow.
const MAX_BUDGETS: usize = 65_536;

/// A source's unspent budget is capped, so a long quiet flood cannot bank credit.
const MAX_BUDGET_BYTES: usize = 64 * 1024;

/// Bytes an unverified UDP source may still receive.
#[derive(Debug, Clone, Copy)]
struct Budget {
    bytes: usize,
    expires: Instant,
}

/// Byte budgets of unverified UDP sources and the set of verified ones.
#[derive(Debug)]
pub struct ReflectionGuard {
    enabled: bool,
    /// How long a source's credit lasts after its last datagram (64·T1).
    lifetime: Duration,
    budgets: HashMap<IpAddr, Budget>,
    /// Budget keys in insertion order, to evict the oldest when the table is full.
    order: VecDeque<IpAddr>,
    /// The time of the latest input, for budget expiry in `allow`.
    last_now: Option<Instant>,
    /// Verified sources, counted (several dialogs may verify one address).
    verified: HashMap<IpAddr, usize>,
}

impl ReflectionGuard {
    /// A guard (a disabled one allows everything) whose credit lasts `lifetime`.
    pub fn new(enabled: bool, lifetime: Duration) -> ReflectionGuard {
        ReflectionGuard {
            enabled,
            lifetime,
            budgets: HashMap::new(),
            order: VecDeque::new(),
            last_now: None,
            verified: HashMap::new(),
        }
    }

    /// A UDP datagram of `len` bytes arrived from `ip`: credit it, verified or not (a
    /// dialog may end, and its source stop being verified, before our answer leaves).
    pub fn credit(&mut self, now: Instant, ip: IpAddr, len: usize) {
        self.last_now = Some(self.last_now.map_or(now, |t| t.max(now)));
        let expires = now + self.lifetime;
        let add = AMPLIFICATION_FACTOR * len;
        if let Some(b) = self.budgets.get_mut(&ip) {
            let kept = if b.expires > now { b.bytes } else { 0 };
            b.bytes = (kept + add).min(MAX_BUDGET_BYTES);
            b.expires = expires;
            return;
        }
        while self.budgets.len() >= MAX_BUDGETS {
            match self.order.pop_front() {
                Some(old) => {
                    self.budgets.remove(&old);
                }
                None => break,
            }
        }
        self.budgets.insert(
            ip,
            Budget {
                bytes: add.min(MAX_BUDGET_BYTES),
                expires,
            },
        );
        self.order.push_back(ip);
    }

    /// Whether `len` bytes may go to `ip` over UDP now; if so, they are debited.
    pub fn allow(&mut self, ip: IpAddr, len: usize) -> bool {
        if !self.enabled || self.verified.contains_key(&ip) {
            return true;
        }
        let last_now = self.last_now;
        let live = |b: &&mut Budget| last_now.is_none_or(|now| b.expires > now);
        match self.budgets.get_mut(&ip).filter(live) {
            Some(b) if b.bytes >= len => {
                b.bytes -= len;
                true
            }
            _ => false,
        }
    }

    /// `ip` proved it receives what we send (one more dialog vouches for it).
    pub fn verify(&mut self, ip: IpAddr) {
        *self.verified.entry(ip).or_insert(0) += 1;
    }

    /// A dialog that vouched for `ip` is over.
    pub fn unverify(&mut self, ip: IpAddr) {
        if let Some(n) = self.verified.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.verified.remove(&ip);
            }
        }
    }

    /// Drops expired budgets.
    pub fn expire(&mut self, now: Instant) {
        self.budgets.retain(|_, b| b.expires > now);
        let budgets = &self.budgets;
        self.order.retain(|ip| budgets.contains_key(ip));
    }

    /// Gives back the memory a burst grew the tables to (see `Endpoint::shrink_tables`).
    pub fn shrink(&mut self) {
        super::shrink_map(&mut self.budgets);
        super::shrink_map(&mut self.verified);
        super::shrink_queue(&mut self.order);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    #[test]
    fn three_times_the_credit_then_nothing_until_verified() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut g = ReflectionGuard::new(true, Duration::from_secs(32));
        assert!(!g.allow(ip, 1), "nothing for a source that sent nothing");
        g.credit(t0, ip, 100);
        assert!(g.allow(ip, 250));
        assert!(!g.allow(ip, 51), "only 50 left");
        assert!(g.allow(ip, 50));
        g.verify(ip);
        assert!(g.allow(ip, 10_000));
        g.unverify(ip);
        assert!(!g.allow(ip, 1));
        // Credit expires.
        g.credit(t0, ip, 100);
        g.credit(
            t0 + Duration::from_secs(33),
            "192.0.2.2".parse().unwrap(),
            1,
        );
        assert!(!g.allow(ip, 1), "expired credit is not spent");
        g.expire(t0 + Duration::from_secs(33));
        assert_eq!(g.budgets.len(), 1);
        let mut off = ReflectionGuard::new(false, Duration::from_secs(32));
        assert!(off.allow(ip, 1_000_000));
    }
}
