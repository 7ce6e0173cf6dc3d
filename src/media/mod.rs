//! Media plane building blocks: RTP, RFC 4733 events, in-band DTMF, codecs, loss
//! concealment, the jitter buffer, the noise gate, SRTP and ZRTP key agreement.
//!
//! Everything here is sans-IO: packets and samples in, packets and samples out.

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod g722;
pub mod gate;
pub mod inband_dtmf;
pub mod opus;
pub mod playout;
pub mod plc;
pub mod resample;
pub mod rtp;
pub mod srtp;
pub mod zrtp;
