//! Transports and flows: how a SIP message arrived and how its answer must leave.

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// A TCP connection.
    Tcp,
    /// A TLS connection.
    Tls,
}

impl Transport {
    /// The Via transport token.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// Whether the transport is reliable (stream): Timers A/E/G do not retransmit and
    /// D, I, J, K are zero (RFC 3261 Table 4).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_name())
    }
}

/// Identifies one accepted stream connection for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// Where a message came from, and so where its responses and in-dialog requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The transport.
    pub transport: Transport,
    /// The peer's address.
    pub remote: SocketAddr,
    /// For streams: the connection to answer on.
    pub connection: Option<ConnectionId>,
}

impl Flow {
    /// A UDP flow from `remote`.
    pub fn udp(remote: SocketAddr) -> Flow {
        Flow {
            transport: Transport::Udp,
            remote,
            connection: None,
        }
    }

    /// A stream flow on `connection`.
    pub fn stream(transport: Transport, remote: SocketAddr, connection: ConnectionId) -> Flow {
        Flow {
            transport,
            remote,
            connection: Some(connection),
        }
    }
}
