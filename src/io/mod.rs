//! The I/O edges: sockets, threads and clocks. Nothing clever lives here; each edge
//! feeds a sans-IO core and sends what it returns.

pub mod batch;
pub mod media;
pub mod metrics_http;
pub mod pin_verifier;
pub mod rtp_ports;
pub mod signalling;
pub mod stream;
pub mod tls;
