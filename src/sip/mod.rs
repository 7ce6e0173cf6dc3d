//! SIP signalling: message parsing, transactions, dialogs, SDP and the UAS core.
//!
//! Sans-IO throughout: [`endpoint::Endpoint`] takes datagrams and time and hands back
//! datagrams, events and its next deadline.

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod framing;
pub mod info;
pub mod message;
pub mod reflection;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
pub mod transport;
