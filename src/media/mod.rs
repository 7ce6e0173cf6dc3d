//! Media plane building blocks: RTP, RFC 4733 events, codecs and the jitter buffer.
//!
//! Everything here is sans-IO: packets and samples in, packets and samples out.

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod rtp;
pub mod srtp;
