//! Which member a datagram on the shard's shared RTP port belongs to
//! (`rtp_ports = "single:PORT"`).
//!
//! With a port per call the socket says whose a packet is. On a shared port the source
//! address does: a latched member is found by the address it latched on; a member not
//! yet latched by the address its SDP named (the usual case: phones and PBXs send from
//! where they said). Anything else is an unknown source, which the shard may try
//! against members still waiting for their first packet ([`Demux::waiting`]): an SRTP
//! member's keys authenticate its packets wherever they come from (a NAT), and a plain
//! member is taken from an unknown port only when it is the one waiting member with
//! that IP address. Never from an address nobody named: that is today's defence of
//! per-call ports (no audio from an unlatched source) kept on a port everyone knows.

use std::collections::HashMap;
use std::net::SocketAddr;

/// The addresses a member is found by: where it latched, or (until then) where its SDP
/// said it sends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Route {
    /// The latched source.
    pub latched: Option<SocketAddr>,
    /// The SDP address, while nothing is latched.
    pub expected: Option<SocketAddr>,
}

/// The shared port's routing table.
#[derive(Debug, Default)]
pub(super) struct Demux {
    latched: HashMap<SocketAddr, usize>,
    expected: HashMap<SocketAddr, usize>,
    /// Unknown-source datagrams still allowed this tick (each may cost a scan and SRTP
    /// trials; a flood from unknown sources is cut here).
    pub unknown_budget: usize,
    /// Where the next scan of waiting members starts, so that repeated packets of one
    /// unknown source reach every waiting member in turn.
    pub rotation: usize,
}

/// Unknown-source datagrams examined per tick.
pub(super) const UNKNOWN_PER_TICK: usize = 64;

/// SRTP members tried per unknown-source datagram.
pub(super) const SRTP_TRIALS: usize = 16;

impl Demux {
    /// An empty table.
    pub fn new() -> Demux {
        Demux {
            unknown_budget: UNKNOWN_PER_TICK,
            ..Demux::default()
        }
    }

    /// The member a datagram from `source` belongs to, if its address says so.
    pub fn find(&self, source: SocketAddr) -> Option<usize> {
        self.latched
            .get(&source)
            .or_else(|| self.expected.get(&source))
            .copied()
    }

    /// Members waiting for their first packet, by the address their SDP named.
    pub fn waiting(&self) -> impl Iterator<Item = (SocketAddr, usize)> + '_ {
        self.expected.iter().map(|(a, s)| (*a, *s))
    }

    /// Members waiting for their first packet.
    pub fn waiting_count(&self) -> usize {
        self.expected.len()
    }

    /// A member's addresses changed from `before` to `after` (added: `before` empty;
    /// gone: `after` empty).
    pub fn update(&mut self, slot: usize, before: Route, after: Route) {
        if before == after {
            return;
        }
        for (table, old, new) in [
            (&mut self.latched, before.latched, after.latched),
            (&mut self.expected, before.expected, after.expected),
        ] {
            if old == new {
                continue;
            }
            if let Some(old) = old {
                // Only our own entry: another member may have claimed the address since.
                if table.get(&old) == Some(&slot) {
                    table.remove(&old);
                }
            }
            if let Some(new) = new {
                // The first claim keeps an address: a second member naming the same
                // source (a misconfigured PBX) must not take over the first one's audio.
                table.entry(new).or_insert(slot);
            }
        }
    }

    /// A new tick: the unknown-source allowance is renewed.
    pub fn tick(&mut self) {
        self.unknown_budget = UNKNOWN_PER_TICK;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_member_is_found_by_its_sdp_address_then_by_its_latch() {
        let mut d = Demux::new();
        let waiting = Route {
            latched: None,
            expected: Some(a("10.0.0.1:4000")),
        };
        d.update(3, Route::default(), waiting);
        assert_eq!(d.find(a("10.0.0.1:4000")), Some(3));
        assert_eq!(d.find(a("10.0.0.1:4002")), None);
        assert_eq!(d.waiting_count(), 1);
        // It latched elsewhere (a NAT): found there, no longer by its SDP address.
        let latched = Route {
            latched: Some(a("192.0.2.7:61000")),
            expected: None,
        };
        d.update(3, waiting, latched);
        assert_eq!(d.find(a("192.0.2.7:61000")), Some(3));
        assert_eq!(d.find(a("10.0.0.1:4000")), None);
        assert_eq!(d.waiting_count(), 0);
        d.update(3, latched, Route::default());
        assert_eq!(d.find(a("192.0.2.7:61000")), None);
    }

    #[test]
    fn the_first_claim_on_an_address_keeps_it() {
        let mut d = Demux::new();
        let r = Route {
            latched: Some(a("10.0.0.1:4000")),
            expected: None,
        };
        d.update(1, Route::default(), r);
        d.update(2, Route::default(), r);
        assert_eq!(d.find(a("10.0.0.1:4000")), Some(1));
        // The second leaving does not remove the first one's entry.
        d.update(2, r, Route::default());
        assert_eq!(d.find(a("10.0.0.1:4000")), Some(1));
    }
}
