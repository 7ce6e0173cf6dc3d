//! RTP port allocation: random even ports from the configured range, or the shared
//! ports of `rtp_ports = "single:PORT"` (PORT, PORT + 2, … one per media shard: the
//! shard owns the socket and a call gets none of its own; calls go to the shards in
//! turn).
//!
//! Random ports make blind RTP injection harder (architecture.md §6); even ports follow
//! RFC 3550 §11 (RTP on even, RTCP on the next odd port).

use rand::Rng;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Why no port could be had.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Every port of the range is in use (or could not be bound).
    #[error("no free RTP port in the configured range")]
    Exhausted,
}

/// The pool of RTP ports.
#[derive(Debug)]
pub struct PortPool {
    address: IpAddr,
    min: u16,
    max: u16,
    in_use: HashSet<u16>,
    /// The first shared port and the number of shards, when calls share ports.
    shared: Option<(u16, u16)>,
    /// The shard the next call on shared ports goes to.
    turn: u16,
}

/// Random picks tried before walking the range in order.
const RANDOM_TRIES: usize = 32;

impl PortPool {
    /// A pool over `min..=max` on `address`.
    pub fn new(address: IpAddr, min: u16, max: u16) -> Self {
        PortPool {
            address,
            min,
            max,
            in_use: HashSet::new(),
            shared: None,
            turn: 0,
        }
    }

    /// Calls on the shared ports `port`, `port + 2`, … of `shards` media shards (their
    /// sockets belong to the shards).
    pub fn shared(address: IpAddr, port: u16, shards: usize) -> Self {
        let shards = u16::try_from(shards.max(1)).unwrap_or(u16::MAX);
        PortPool {
            shared: Some((port, shards)),
            ..PortPool::new(address, port, port)
        }
    }

    /// The shard whose shared port `port` is (`None` with a port per call).
    pub fn shard_of(&self, port: u16) -> Option<usize> {
        let (base, shards) = self.shared?;
        let i = port.checked_sub(base)? / 2;
        (i < shards).then_some(usize::from(i))
    }

    /// Number of ports handed out.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    fn try_bind(&mut self, port: u16) -> Option<UdpSocket> {
        if self.in_use.contains(&port) {
            return None;
        }
        let socket = UdpSocket::bind(SocketAddr::new(self.address, port)).ok()?;
        socket.set_nonblocking(true).ok()?;
        self.in_use.insert(port);
        Some(socket)
    }

    /// Binds a non-blocking socket on a free even port; the shared port has no socket
    /// per call.
    pub fn allocate(&mut self) -> Result<(u16, Option<UdpSocket>), PortError> {
        if let Some((base, shards)) = self.shared {
            let port = base + 2 * self.turn;
            self.turn = (self.turn + 1) % shards;
            return Ok((port, None));
        }
        let first_even = self.min + (self.min % 2);
        let count = (self.max.saturating_sub(first_even)) / 2 + 1;
        let mut rng = rand::thread_rng();
        for _ in 0..RANDOM_TRIES {
            let port = first_even + 2 * rng.gen_range(0..count);
            if let Some(s) = self.try_bind(port) {
                return Ok((port, Some(s)));
            }
        }
        // Nearly full: walk the range from a random start so we still find a gap.
        let start = rng.gen_range(0..count);
        for i in 0..count {
            let port = first_even + 2 * ((start + i) % count);
            if let Some(s) = self.try_bind(port) {
                return Ok((port, Some(s)));
            }
        }
        Err(PortError::Exhausted)
    }

    /// Returns a port to the pool.
    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_even_ports_until_exhausted() {
        // A small range high up, unlikely to collide with anything on the machine.
        let mut pool = PortPool::new("127.0.0.1".parse().unwrap(), 47_700, 47_707);
        let mut got = Vec::new();
        while let Ok((p, s)) = pool.allocate() {
            assert_eq!(p % 2, 0);
            assert!((47_700..=47_707).contains(&p));
            got.push((p, s));
        }
        let mut ports: Vec<u16> = got.iter().map(|(p, _)| *p).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), got.len());
        assert!(!got.is_empty());
        let (p, s) = got.pop().unwrap();
        drop(s);
        pool.release(p);
        assert_eq!(pool.allocate().unwrap().0, p);
    }

    #[test]
    fn the_shared_port_is_every_calls_port_and_has_no_socket_per_call() {
        let mut pool = PortPool::shared("127.0.0.1".parse().unwrap(), 47_710, 2);
        let ports: Vec<u16> = (0..4)
            .map(|_| pool.allocate().unwrap())
            .map(|(p, s)| {
                assert!(s.is_none());
                p
            })
            .collect();
        // The shards' ports in turn.
        assert_eq!(ports, vec![47_710, 47_712, 47_710, 47_712]);
        assert_eq!(pool.shard_of(47_712), Some(1));
        assert_eq!(pool.shard_of(47_714), None);
        pool.release(47_710);
        assert_eq!(pool.in_use(), 0);
    }
}
