//! sotto: a private telephone conference bridge.
//!
//! The protocol core (`sip`, `media`, `mixer`, `room`, `conference`) is sans-IO: it
//! takes bytes and time and returns bytes, events and deadlines. The `io` module holds
//! the thin tokio and thread edges that own sockets and clocks; `server` wires them.
//! `load` is the engine of the `sotto-load` load generator (a client, not part of the
//! bridge).

pub mod conference;
pub mod config;
pub mod guard;
pub mod io;
pub mod load;
pub mod media;
pub mod metrics;
pub mod mixer;
pub mod privacy;
pub mod redact;
pub mod room;
pub mod server;
pub mod sip;
