//! RTP (RFC 3550): parsing received packets and writing one outgoing stream.
//!
//! Built on the `rtp-types` crate, which parses without copying. This module
//! adds what the bridge needs around it: typed errors, rejection of RTCP that
//! arrives on the RTP port (RFC 5761 §4), and [`RtpSender`], which keeps the
//! sequence number, timestamp and marker bit of one outgoing stream.
//!
//! Driven by the media session: [`parse`] is called on every packet after
//! SRTP unprotect; [`RtpSender::write`] once per outgoing frame, into a
//! buffer the caller owns (then SRTP protect in place, then the socket).
//!
//! ```
//! use sotto::media::rtp::{parse, RtpSender};
//! let mut sender = RtpSender::new(0x1234_5678, 1000, 160_000, 0);
//! let mut buf = [0u8; 200];
//! let len = sender.write(&[0xFF; 160], 160, &mut buf).unwrap();
//! let (header, payload) = parse(&buf[..len]).unwrap();
//! assert_eq!((header.sequence, header.timestamp, header.marker), (1000, 160_000, true));
//! assert_eq!(payload.len(), 160);
//! assert_eq!(sender.sequence(), 1001);
//! ```

use rtp_types::{RtpPacket, RtpPacketBuilder, RtpParseError, RtpWriteError};

/// Size of the fixed RTP header (RFC 3550 §5.1).
pub const HEADER_LEN: usize = 12;

/// The only RTP version in use (RFC 3550 §5.1).
const RTP_VERSION: u8 = 2;

/// Largest RTP payload type: the field has 7 bits (RFC 3550 §5.1).
const MAX_PAYLOAD_TYPE: u8 = 127;

/// Second-byte values that mark an RTCP packet when RTP and RTCP share a port:
/// RTCP packet types 192–223 (RFC 5761 §4), which read as RTP would be the
/// marker bit plus payload types 64–95. This covers SR, RR, SDES, BYE, APP
/// (200–204), the feedback messages (205, 206) and XR (207).
const RTCP_PACKET_TYPES: std::ops::RangeInclusive<u8> = 192..=223;

/// Errors from parsing or writing RTP packets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The packet is shorter than its header, CSRC list, extension or padding
    /// say it must be.
    #[error("RTP packet truncated: need {expected} bytes, have {actual}")]
    Truncated {
        /// Bytes the header promised.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// The version field is not 2 (RFC 3550 §5.1).
    #[error("unsupported RTP version {0}")]
    UnsupportedVersion(u8),
    /// An RTCP packet arrived on the RTP port (RFC 5761 §4): the caller hands
    /// it to RTCP instead. Carries the RTCP packet type.
    #[error("RTCP packet type {0} on the RTP port")]
    Rtcp(u8),
    /// The padding count is zero or longer than the packet (RFC 3550 §5.1).
    #[error("invalid RTP padding")]
    InvalidPadding,
    /// The output buffer cannot hold the packet.
    #[error("output buffer too small: need {0} bytes")]
    OutputTooSmall(usize),
    /// The payload type does not fit in 7 bits.
    #[error("invalid RTP payload type {0}")]
    InvalidPayloadType(u8),
    /// The packet could not be written for another reason (too large).
    #[error("cannot write RTP packet")]
    Write,
}

impl From<RtpParseError> for RtpError {
    fn from(error: RtpParseError) -> Self {
        match error {
            RtpParseError::UnsupportedVersion(version) => RtpError::UnsupportedVersion(version),
            RtpParseError::Truncated { expected, actual } => {
                RtpError::Truncated { expected, actual }
            }
            RtpParseError::PaddingInvalid(_) => RtpError::InvalidPadding,
        }
    }
}

impl From<RtpWriteError> for RtpError {
    fn from(error: RtpWriteError) -> Self {
        match error {
            RtpWriteError::OutputTooSmall(needed) => RtpError::OutputTooSmall(needed),
            RtpWriteError::InvalidPayloadType(payload_type) => {
                RtpError::InvalidPayloadType(payload_type)
            }
            _ => RtpError::Write,
        }
    }
}

/// The header fields of a received RTP packet that the media path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeaderView {
    /// Payload type (RFC 3550 §5.1), 0–127.
    pub payload_type: u8,
    /// Marker bit: start of a talk-spurt for audio (RFC 3551 §4.1).
    pub marker: bool,
    /// Sequence number, wraps at 65535.
    pub sequence: u16,
    /// RTP timestamp in clock-rate units, wraps at u32::MAX.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// Parses one RTP packet: its header fields and its payload with any padding
/// removed. CSRCs and header extensions are skipped.
///
/// Rejects version other than 2 and RTCP multiplexed on the port (check for
/// [`RtpError::Rtcp`] to demultiplex).
pub fn parse(packet: &[u8]) -> Result<(RtpHeaderView, &[u8]), RtpError> {
    // RTCP first: an RTCP receiver report can be shorter than an RTP header,
    // and must not be reported as a truncated RTP packet.
    if let [first, second, ..] = *packet {
        if first >> 6 == RTP_VERSION && RTCP_PACKET_TYPES.contains(&second) {
            return Err(RtpError::Rtcp(second));
        }
    }
    let rtp = RtpPacket::parse(packet)?;
    let header = RtpHeaderView {
        payload_type: rtp.payload_type(),
        marker: rtp.marker_bit(),
        sequence: rtp.sequence_number(),
        timestamp: rtp.timestamp(),
        ssrc: rtp.ssrc(),
    };
    // rtp-types checked the lengths, so this slice is in bounds; `get` keeps
    // a bug there from becoming a panic on network input.
    let start = rtp.payload_offset();
    let end = start + rtp.payload_len();
    let payload = packet.get(start..end).ok_or(RtpError::Truncated {
        expected: end,
        actual: packet.len(),
    })?;
    Ok((header, payload))
}

/// The RFC 6464 client-to-mixer audio level of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The sender's voice activity flag (V bit).
    pub voice: bool,
    /// The level in dB below full scale, 0 (loudest) to 127 (silence).
    pub minus_dbov: u8,
}

/// The RFC 8285 extension URI of the RFC 6464 audio level.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The RFC 6464 audio level a packet carries in header extension element `id`
/// (negotiated by `a=extmap`), in the one-byte or two-byte form of RFC 8285. `None`
/// when the packet has no such element or the extension is malformed.
pub fn audio_level(packet: &[u8], id: u8) -> Option<AudioLevel> {
    let rtp = RtpPacket::parse(packet).ok()?;
    let (profile, data) = rtp.extension()?;
    let element = extension_element(profile, data, id)?;
    let byte = *element.first()?;
    Some(AudioLevel {
        voice: byte & 0x80 != 0,
        minus_dbov: byte & 0x7f,
    })
}

/// Finds element `id` in an RFC 8285 header extension block.
fn extension_element(profile: u16, data: &[u8], id: u8) -> Option<&[u8]> {
    let mut i = 0;
    if profile == 0xBEDE {
        // One-byte headers: ID (4 bits) and length - 1 (4 bits); 0 is padding, ID 15
        // ends the block (RFC 8285 §4.2).
        while let Some(&b) = data.get(i) {
            if b == 0 {
                i += 1;
                continue;
            }
            let (element_id, len) = (b >> 4, usize::from(b & 0x0f) + 1);
            if element_id == 15 {
                return None;
            }
            let value = data.get(i + 1..i + 1 + len)?;
            if element_id == id {
                return Some(value);
            }
            i += 1 + len;
        }
    } else if profile & 0xfff0 == 0x1000 {
        // Two-byte headers: ID and length bytes; ID 0 is padding (RFC 8285 §4.3).
        while let Some(&element_id) = data.get(i) {
            if element_id == 0 {
                i += 1;
                continue;
            }
            let len = usize::from(*data.get(i + 1)?);
            let value = data.get(i + 2..i + 2 + len)?;
            if element_id == id {
                return Some(value);
            }
            i += 2 + len;
        }
    }
    None
}

/// The state of one outgoing RTP stream: SSRC, next sequence number, next
/// timestamp, payload type and whether the next packet starts a talk-spurt.
///
/// Sequence and timestamp start from values the caller draws at random
/// (RFC 3550 §5.1: the initial values SHOULD be random, to make known-plaintext
/// attacks on SRTP harder); this type never draws randomness itself.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    payload_type: u8,
    /// Set the marker bit on the next packet (RFC 3551 §4.1: first packet of
    /// a talk-spurt, and so the first packet of the stream).
    talkspurt_start: bool,
}

impl RtpSender {
    /// A stream whose first packet will carry `initial_sequence` and
    /// `initial_timestamp` and the marker bit.
    pub fn new(ssrc: u32, initial_sequence: u16, initial_timestamp: u32, payload_type: u8) -> Self {
        Self {
            ssrc,
            sequence: initial_sequence,
            timestamp: initial_timestamp,
            payload_type,
            talkspurt_start: true,
        }
    }

    /// Writes one packet with `payload` into `out` and returns its length;
    /// then advances the sequence number by 1 and the timestamp by `samples`
    /// (the payload's duration in clock-rate units).
    ///
    /// On error nothing is advanced.
    pub fn write(
        &mut self,
        payload: &[u8],
        samples: u32,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        if self.payload_type > MAX_PAYLOAD_TYPE {
            return Err(RtpError::InvalidPayloadType(self.payload_type));
        }
        let len = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .marker_bit(self.talkspurt_start)
            .payload_type(self.payload_type)
            .sequence_number(self.sequence)
            .timestamp(self.timestamp)
            .ssrc(self.ssrc)
            .payload(payload)
            .write_into(out)?;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.talkspurt_start = false;
        Ok(len)
    }

    /// Advances the timestamp by `samples` without sending: silence that is
    /// not transmitted (RFC 3551 §4.1). The sequence number stays, so the
    /// receiver sees no loss.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Sets the marker bit on the next packet: a new talk-spurt begins after
    /// silence was suppressed (RFC 3551 §4.1).
    pub fn mark_talkspurt(&mut self) {
        self.talkspurt_start = true;
    }

    /// Changes the payload type of the following packets (e.g. to send
    /// telephone-events, or after a re-INVITE changed the codec).
    pub fn set_payload_type(&mut self, payload_type: u8) {
        self.payload_type = payload_type;
    }

    /// The stream's synchronisation source.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Sequence number of the next packet.
    pub fn sequence(&self) -> u16 {
        self.sequence
    }

    /// Timestamp of the next packet.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Payload type of the next packet.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_one(sender: &mut RtpSender, payload: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let len = sender.write(payload, 160, &mut buf).unwrap();
        buf.get(..len).unwrap().to_vec()
    }

    #[test]
    fn write_then_parse_round_trips() {
        let mut sender = RtpSender::new(0xDEAD_BEEF, 4242, 99_000, 8);
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let packet = write_one(&mut sender, &payload);
        assert_eq!(packet.len(), HEADER_LEN + 160);
        let (header, body) = parse(&packet).unwrap();
        assert_eq!(
            header,
            RtpHeaderView {
                payload_type: 8,
                marker: true,
                sequence: 4242,
                timestamp: 99_000,
                ssrc: 0xDEAD_BEEF,
            }
        );
        assert_eq!(body, payload.as_slice());
    }

    #[test]
    fn sequence_and_timestamp_advance_and_wrap() {
        let mut sender = RtpSender::new(1, 65_534, u32::MAX - 100, 0);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let packet = write_one(&mut sender, &[0; 160]);
            let (header, _) = parse(&packet).unwrap();
            seen.push((header.sequence, header.timestamp));
        }
        assert_eq!(
            seen,
            vec![(65_534, u32::MAX - 100), (65_535, 59), (0, 219),]
        );
        assert_eq!(sender.sequence(), 1);
        assert_eq!(sender.timestamp(), 379);
    }

    #[test]
    fn skip_advances_timestamp_only() {
        let mut sender = RtpSender::new(1, 10, 1000, 0);
        write_one(&mut sender, &[0; 160]);
        sender.skip(480);
        assert_eq!(sender.sequence(), 11);
        assert_eq!(sender.timestamp(), 1000 + 160 + 480);
        let (header, _) = parse(&write_one(&mut sender, &[0; 160])).unwrap();
        assert_eq!(header.sequence, 11);
        assert_eq!(header.timestamp, 1640);
    }

    #[test]
    fn marker_on_first_packet_and_after_mark_talkspurt() {
        let mut sender = RtpSender::new(7, 0, 0, 0);
        let mut markers = Vec::new();
        for i in 0..6 {
            if i == 3 {
                sender.skip(1600);
                sender.mark_talkspurt();
            }
            let (header, _) = parse(&write_one(&mut sender, &[0; 160])).unwrap();
            markers.push(header.marker);
        }
        assert_eq!(markers, vec![true, false, false, true, false, false]);
    }

    #[test]
    fn payload_type_changes_and_is_validated() {
        let mut sender = RtpSender::new(7, 0, 0, 0);
        sender.set_payload_type(101);
        assert_eq!(sender.payload_type(), 101);
        let (header, _) = parse(&write_one(&mut sender, &[1, 0x80, 0, 160])).unwrap();
        assert_eq!(header.payload_type, 101);

        sender.set_payload_type(128);
        let mut buf = [0u8; 100];
        assert_eq!(
            sender.write(&[0; 4], 160, &mut buf),
            Err(RtpError::InvalidPayloadType(128))
        );
        // A failed write does not advance the stream.
        assert_eq!(sender.sequence(), 1);
    }

    #[test]
    fn small_output_buffer_is_an_error() {
        let mut sender = RtpSender::new(7, 5, 0, 0);
        let mut buf = [0u8; 100];
        assert_eq!(
            sender.write(&[0; 160], 160, &mut buf),
            Err(RtpError::OutputTooSmall(172))
        );
        assert_eq!(sender.sequence(), 5);
        assert_eq!(sender.timestamp(), 0);
    }

    #[test]
    fn ssrc_getter() {
        assert_eq!(RtpSender::new(0xABCD, 0, 0, 0).ssrc(), 0xABCD);
    }

    #[test]
    fn rejects_short_packets() {
        for len in 0..HEADER_LEN {
            let packet = vec![0x80u8; len];
            assert!(
                matches!(parse(&packet), Err(RtpError::Truncated { .. })),
                "len {len}"
            );
        }
    }

    #[test]
    fn rejects_other_versions() {
        let mut packet = write_one(&mut RtpSender::new(1, 0, 0, 0), &[0; 20]);
        for version in [0u8, 1, 3] {
            packet[0] = (packet[0] & 0x3F) | (version << 6);
            assert_eq!(parse(&packet), Err(RtpError::UnsupportedVersion(version)));
        }
    }

    #[test]
    fn rejects_rtcp_on_the_rtp_port() {
        // A receiver report with no report blocks: 8 bytes (RFC 3550 §6.4.2).
        let rr = [0x80, 201, 0, 1, 0x12, 0x34, 0x56, 0x78];
        assert_eq!(parse(&rr), Err(RtpError::Rtcp(201)));
        for packet_type in 200..=206u8 {
            let mut packet = [0u8; 28];
            packet[0] = 0x81;
            packet[1] = packet_type;
            assert_eq!(parse(&packet), Err(RtpError::Rtcp(packet_type)));
        }
        // Payload type 72 without the marker is not RTCP's range.
        let mut packet = [0u8; 20];
        packet[0] = 0x80;
        packet[1] = 72;
        assert!(parse(&packet).is_ok());
    }

    #[test]
    fn padding_is_removed() {
        // Header with P bit, 4 payload bytes, 4 padding bytes (last = count).
        let mut packet = vec![0xA0, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
        packet.extend_from_slice(&[1, 2, 3, 4]);
        packet.extend_from_slice(&[0, 0, 0, 4]);
        let (header, payload) = parse(&packet).unwrap();
        assert_eq!(header.sequence, 1);
        assert_eq!(payload, &[1, 2, 3, 4]);

        // Padding count of zero and padding longer than the packet.
        let mut zero = packet.clone();
        if let Some(last) = zero.last_mut() {
            *last = 0;
        }
        assert_eq!(parse(&zero), Err(RtpError::InvalidPadding));
        let mut long = packet.clone();
        if let Some(last) = long.last_mut() {
            *last = 200;
        }
        assert!(matches!(parse(&long), Err(RtpError::Truncated { .. })));
    }

    #[test]
    fn csrc_and_extension_are_skipped() {
        // CC = 2, X bit, marker, PT 0.
        let mut packet = vec![0x92, 0x80, 0x12, 0x34, 0, 0, 0x10, 0, 0, 0, 0, 5];
        packet.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // two CSRCs
        packet.extend_from_slice(&[0xBE, 0xDE, 0, 1]); // one-byte ext, 1 word
        packet.extend_from_slice(&[0x10, 0xAA, 0, 0]);
        packet.extend_from_slice(&[9, 8, 7]);
        let (header, payload) = parse(&packet).unwrap();
        assert_eq!(header.sequence, 0x1234);
        assert_eq!(header.timestamp, 0x1000);
        assert_eq!(header.ssrc, 5);
        assert!(header.marker);
        assert_eq!(payload, &[9, 8, 7]);

        // An extension whose length runs past the end is an error.
        let mut truncated = packet.clone();
        truncated.truncate(22);
        assert!(matches!(parse(&truncated), Err(RtpError::Truncated { .. })));
    }

    #[test]
    fn empty_payload_is_fine() {
        let packet = write_one(&mut RtpSender::new(1, 0, 0, 13), &[]);
        let (header, payload) = parse(&packet).unwrap();
        assert_eq!(header.payload_type, 13);
        assert!(payload.is_empty());
    }

    /// A PCMU packet with a header extension block of `profile` and `data`.
    fn with_extension(profile: u16, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&((data.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(data);
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn rfc_6464_levels_are_read_from_both_extension_forms() {
        // One-byte form: padding, an element with ID 3 (2 bytes), then the level (ID 1).
        let p = with_extension(0xBEDE, &[0, 0x31, 9, 9, 0x10, 0x80 | 42, 0, 0]);
        assert_eq!(
            audio_level(&p, 1),
            Some(AudioLevel {
                voice: true,
                minus_dbov: 42
            })
        );
        assert_eq!(audio_level(&p, 2), None);
        // Two-byte form.
        let p = with_extension(0x1000, &[0, 5, 1, 127, 0, 0, 0, 0]);
        assert_eq!(
            audio_level(&p, 5),
            Some(AudioLevel {
                voice: false,
                minus_dbov: 127
            })
        );
        // ID 15 ends a one-byte block; an element running past the block is malformed.
        let p = with_extension(0xBEDE, &[0xf0, 0x10, 30, 0]);
        assert_eq!(audio_level(&p, 1), None);
        let p = with_extension(0xBEDE, &[0x13, 1, 2, 3]);
        assert_eq!(audio_level(&p, 1), None);
        // No extension at all, or not RTP.
        let mut plain = with_extension(0xBEDE, &[0x10, 20, 0, 0]);
        plain[0] = 0x80;
        assert_eq!(audio_level(&plain[..12], 1), None);
        assert_eq!(audio_level(&[1, 2, 3], 1), None);
    }
}
