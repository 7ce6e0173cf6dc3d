//! RFC 4733 telephone-event receiver: turns DTMF event packets into digits.
//!
//! Phones send a key press not as tones but as a run of RTP packets with the
//! `telephone-event` payload (RFC 4733 §2.3): several packets while the key is
//! held, then (usually three) copies of the final packet with the E (end) bit.
//! All packets of one event carry the same RTP timestamp, the event's start
//! (RFC 4733 §2.5.1.2), so the timestamp identifies the event.
//!
//! The caller feeds each telephone-event packet's RTP timestamp and payload to
//! [`DtmfReceiver::handle_packet`], which returns each digit exactly once.
//! There is no clock: an event whose end packets were all lost is reported
//! when the next event begins.
//!
//! Digits are personal data (PINs): [`Digit`] never prints its value, and the
//! receiver wipes its memory when dropped.
//!
//! ```
//! use sotto::media::dtmf::DtmfReceiver;
//! let mut receiver = DtmfReceiver::new();
//! // Event 5, volume 10, duration 400, first without and then with the E bit.
//! assert_eq!(receiver.handle_packet(1000, &[5, 10, 1, 144]).unwrap(), None);
//! let digit = receiver.handle_packet(1000, &[5, 0x80 | 10, 3, 32]).unwrap();
//! assert_eq!(digit.map(|d| d.as_char()), Some('5'));
//! // The retransmitted end packets are ignored.
//! assert_eq!(receiver.handle_packet(1000, &[5, 0x80 | 10, 3, 32]).unwrap(), None);
//! ```

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Size of the fixed part of a telephone-event payload (RFC 4733 §2.3).
const EVENT_LEN: usize = 4;

/// Number of DTMF event codes: 0–9, `*`, `#`, A–D (RFC 4733 §3.2).
const DTMF_EVENTS: u8 = 16;

/// E bit in the second byte (RFC 4733 §2.3).
const END_BIT: u8 = 0x80;

/// Volume field in the second byte, 6 bits (RFC 4733 §2.3; the R bit,
/// 0x40, is reserved and ignored on receipt).
const VOLUME_MASK: u8 = 0x3F;

/// How many finished events the receiver remembers, so that their late
/// retransmissions arriving after a newer event began are not taken as new
/// events. A sender retransmits the end packet for a short while only
/// (RFC 4733 §2.5.1.4), so a handful is plenty.
const RECENT_EVENTS: usize = 4;

/// Errors from parsing a telephone-event payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// The payload is shorter than the 4 bytes of one event (RFC 4733 §2.3).
    #[error("telephone-event payload too short: {len} bytes, need 4")]
    TooShort {
        /// Length of the payload received.
        len: usize,
    },
}

/// One DTMF key: event codes 0–15 (RFC 4733 §3.2: 0–9, 10 = `*`, 11 = `#`,
/// 12–15 = A–D).
///
/// A digit is part of a PIN, so its `Debug` prints `Digit(<redacted>)` and it
/// has no `Display`; read it with [`Digit::as_char`] or [`Digit::event`] where
/// the value is really needed (PIN check, in-call controls).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digit(u8);

impl Digit {
    /// The `#` key.
    pub const HASH: Digit = Digit(11);

    /// The digit for an RFC 4733 event code, or `None` for codes 16 and up
    /// (tones and signals that are not DTMF keys).
    pub fn from_event(code: u8) -> Option<Digit> {
        (code < DTMF_EVENTS).then_some(Digit(code))
    }

    /// The key as a character: `0`–`9`, `*`, `#`, `A`–`D`.
    pub fn as_char(self) -> char {
        match self.0 {
            code @ 0..=9 => char::from(b'0' + code),
            10 => '*',
            11 => '#',
            12 => 'A',
            13 => 'B',
            14 => 'C',
            _ => 'D',
        }
    }

    /// The digit for a key character (`0`–`9`, `*`, `#`, `A`–`D`, case-blind).
    pub fn from_char(c: char) -> Option<Digit> {
        let code = match c.to_ascii_uppercase() {
            d @ '0'..='9' => d as u8 - b'0',
            '*' => 10,
            '#' => 11,
            l @ 'A'..='D' => l as u8 - b'A' + 12,
            _ => return None,
        };
        Some(Digit(code))
    }

    /// The RFC 4733 event code, 0–15.
    pub fn event(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digit(<redacted>)")
    }
}

/// One telephone event as carried in an RTP payload (RFC 4733 §2.3).
///
/// `Debug` redacts the event code, which is a PIN digit for DTMF.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (RFC 4733 §3.2 for DTMF: 0–15).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Power level of the tone in dBm0 below zero (0–63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, counted from the event's
    /// timestamp.
    pub duration: u16,
}

impl fmt::Debug for TelephoneEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelephoneEvent")
            .field("event", &format_args!("<redacted>"))
            .field("end", &self.end)
            .field("volume", &self.volume)
            .field("duration", &self.duration)
            .finish()
    }
}

/// Parses the first event of a telephone-event payload (RFC 4733 §2.3).
///
/// Extra bytes (a sender may pack several events into one packet,
/// RFC 4733 §2.5.1.5) are tolerated; only the first event is returned.
pub fn parse_event(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
    let Some(&[event, flags, duration_high, duration_low]) = payload.first_chunk::<EVENT_LEN>()
    else {
        return Err(DtmfError::TooShort { len: payload.len() });
    };
    Ok(TelephoneEvent {
        event,
        end: flags & END_BIT != 0,
        volume: flags & VOLUME_MASK,
        duration: u16::from_be_bytes([duration_high, duration_low]),
    })
}

/// Receives the telephone-event packets of one RTP stream and reports each
/// key press once.
///
/// Feed it every packet of the negotiated telephone-event payload type; call
/// [`DtmfReceiver::reset`] when the stream's SSRC changes.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub struct DtmfReceiver {
    /// Whether an event is being tracked (the fields below are meaningful).
    active: bool,
    /// RTP timestamp of the tracked event.
    timestamp: u32,
    /// Event code of the tracked event (0–15).
    event: u8,
    /// Whether the tracked event's digit was already returned.
    reported: bool,
    /// Timestamps of events that are over, newest at `recent_next - 1`.
    recent: [Option<u32>; RECENT_EVENTS],
    /// Next slot of `recent` to overwrite.
    recent_next: usize,
}

impl fmt::Debug for DtmfReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The event code is a PIN digit: show only whether one is pending.
        f.debug_struct("DtmfReceiver")
            .field("tracking", &self.active)
            .finish_non_exhaustive()
    }
}

impl DtmfReceiver {
    /// A receiver that has seen no event yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all events, e.g. when the stream's SSRC changes. A digit
    /// still waiting for its end packet is dropped.
    pub fn reset(&mut self) {
        self.zeroize();
    }

    /// Handles one telephone-event packet: its RTP timestamp and payload.
    ///
    /// Returns the digit the first time an event ends (the first packet with
    /// the E bit). If a new event starts while the previous one never showed
    /// its end (all end packets lost), the previous digit is returned now and
    /// the new event is tracked; its own digit follows with its end packet.
    /// Retransmissions and any later packet of an event already reported are
    /// ignored, as are events 16 and up (not DTMF keys).
    pub fn handle_packet(
        &mut self,
        rtp_timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<Digit>, DtmfError> {
        let packet = parse_event(payload)?;
        let Some(digit) = Digit::from_event(packet.event) else {
            return Ok(None);
        };

        if self.active && self.timestamp == rtp_timestamp {
            // Another packet of the tracked event: report it on its first end.
            if packet.end && !self.reported {
                self.reported = true;
                return Ok(Some(Digit(self.event)));
            }
            return Ok(None);
        }

        if self.recent.contains(&Some(rtp_timestamp)) {
            // A late packet (typically a retransmitted end) of an event that
            // is already over and accounted for.
            return Ok(None);
        }

        // A new event begins. A tracked event that never ended is reported
        // now, since this is the only chance left.
        let unfinished = (self.active && !self.reported).then_some(Digit(self.event));
        if self.active {
            self.remember(self.timestamp);
        }
        self.active = true;
        self.timestamp = rtp_timestamp;
        self.event = digit.event();
        self.reported = false;

        if unfinished.is_some() {
            // The new event's own end packets (normally three) will report it.
            return Ok(unfinished);
        }
        if packet.end {
            self.reported = true;
            return Ok(Some(digit));
        }
        Ok(None)
    }

    /// Records the timestamp of an event that is over.
    fn remember(&mut self, timestamp: u32) {
        if let Some(slot) = self.recent.get_mut(self.recent_next) {
            *slot = Some(timestamp);
        }
        self.recent_next = (self.recent_next + 1) % RECENT_EVENTS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payload of one event packet: code, E bit, volume 10, duration.
    fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let [high, low] = duration.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, high, low]
    }

    /// Feeds the packets of one complete event as a phone sends them: three
    /// packets without E, then three end packets, all with one timestamp.
    fn press(receiver: &mut DtmfReceiver, timestamp: u32, event: u8) -> Vec<char> {
        let mut digits = Vec::new();
        for (end, duration) in [
            (false, 160),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ] {
            if let Some(digit) = receiver
                .handle_packet(timestamp, &payload(event, end, duration))
                .unwrap()
            {
                digits.push(digit.as_char());
            }
        }
        digits
    }

    #[test]
    fn parses_rfc_4733_layout() {
        // Event 11 (#), E bit, R bit set (must be ignored), volume 63, 0x1234.
        let event = parse_event(&[11, 0x80 | 0x40 | 0x3F, 0x12, 0x34]).unwrap();
        assert_eq!(
            event,
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 63,
                duration: 0x1234
            }
        );
        let event = parse_event(&[3, 7, 0, 160, 9, 9, 9, 9]).unwrap();
        assert_eq!(event.event, 3);
        assert!(!event.end);
        assert_eq!(event.volume, 7);
        assert_eq!(event.duration, 160);
    }

    #[test]
    fn short_payload_is_an_error() {
        for len in 0..4 {
            let bytes = [1u8, 0x80, 0, 160];
            let slice = bytes.get(..len).unwrap();
            assert_eq!(parse_event(slice), Err(DtmfError::TooShort { len }));
            let mut receiver = DtmfReceiver::new();
            assert_eq!(
                receiver.handle_packet(0, slice),
                Err(DtmfError::TooShort { len })
            );
        }
    }

    #[test]
    fn typical_event_yields_one_digit() {
        let mut receiver = DtmfReceiver::new();
        assert_eq!(press(&mut receiver, 8000, 7), vec!['7']);
    }

    #[test]
    fn digit_is_reported_on_the_first_end_packet() {
        let mut receiver = DtmfReceiver::new();
        assert_eq!(
            receiver.handle_packet(10, &payload(4, false, 160)),
            Ok(None)
        );
        let digit = receiver.handle_packet(10, &payload(4, true, 320)).unwrap();
        assert_eq!(digit.map(Digit::event), Some(4));
    }

    #[test]
    fn pin_sequence_in_order() {
        let mut receiver = DtmfReceiver::new();
        let mut digits = Vec::new();
        for (i, event) in [1u8, 2, 3, 4, 11].into_iter().enumerate() {
            digits.extend(press(&mut receiver, 1000 + 2000 * i as u32, event));
        }
        assert_eq!(digits, vec!['1', '2', '3', '4', '#']);
    }

    #[test]
    fn same_digit_twice_is_two_digits() {
        let mut receiver = DtmfReceiver::new();
        let mut digits = press(&mut receiver, 500, 9);
        digits.extend(press(&mut receiver, 2500, 9));
        assert_eq!(digits, vec!['9', '9']);
    }

    #[test]
    fn lost_end_packets_are_reported_when_the_next_event_starts() {
        let mut receiver = DtmfReceiver::new();
        // Event 5 at ts 1000: only start packets arrive.
        assert_eq!(
            receiver.handle_packet(1000, &payload(5, false, 160)),
            Ok(None)
        );
        assert_eq!(
            receiver.handle_packet(1000, &payload(5, false, 320)),
            Ok(None)
        );
        // Event 6 at ts 3000 begins: 5 is reported now.
        let digit = receiver
            .handle_packet(3000, &payload(6, false, 160))
            .unwrap();
        assert_eq!(digit.map(Digit::as_char), Some('5'));
        // Then 6 is reported on its own end, once.
        let digits: Vec<_> = [
            receiver.handle_packet(3000, &payload(6, true, 480)),
            receiver.handle_packet(3000, &payload(6, true, 480)),
            receiver.handle_packet(3000, &payload(6, true, 480)),
        ]
        .into_iter()
        .filter_map(|r| r.unwrap())
        .map(Digit::as_char)
        .collect();
        assert_eq!(digits, vec!['6']);
    }

    #[test]
    fn lost_end_then_new_event_that_is_only_an_end_packet() {
        let mut receiver = DtmfReceiver::new();
        assert_eq!(
            receiver.handle_packet(1000, &payload(1, false, 160)),
            Ok(None)
        );
        // First packet of the next event already has E: 1 comes now, 2 with
        // its retransmitted end.
        let first = receiver
            .handle_packet(2000, &payload(2, true, 160))
            .unwrap();
        let second = receiver
            .handle_packet(2000, &payload(2, true, 160))
            .unwrap();
        let third = receiver
            .handle_packet(2000, &payload(2, true, 160))
            .unwrap();
        assert_eq!(first.map(Digit::as_char), Some('1'));
        assert_eq!(second.map(Digit::as_char), Some('2'));
        assert_eq!(third, None);
    }

    #[test]
    fn late_retransmissions_do_not_duplicate() {
        let mut receiver = DtmfReceiver::new();
        let mut digits = Vec::new();
        // Event 3 ends with one end packet; its two retransmissions are
        // delayed until after event 8 started.
        digits.extend(
            receiver
                .handle_packet(1000, &payload(3, true, 640))
                .unwrap()
                .map(Digit::as_char),
        );
        for (timestamp, event, end) in [
            (2000, 8, false),
            (1000, 3, true),
            (1000, 3, true),
            (1000, 3, false),
            (2000, 8, true),
            (1000, 3, true),
            (2000, 8, true),
        ] {
            digits.extend(
                receiver
                    .handle_packet(timestamp, &payload(event, end, 640))
                    .unwrap()
                    .map(Digit::as_char),
            );
        }
        assert_eq!(digits, vec!['3', '8']);
    }

    #[test]
    fn non_dtmf_events_are_ignored() {
        let mut receiver = DtmfReceiver::new();
        // Event 32 (answer tone, RFC 4734) with the E bit.
        assert_eq!(
            receiver.handle_packet(100, &payload(32, true, 800)),
            Ok(None)
        );
        assert_eq!(
            receiver.handle_packet(100, &payload(16, true, 800)),
            Ok(None)
        );
        // A DTMF event afterwards still works.
        assert_eq!(press(&mut receiver, 900, 0), vec!['0']);
    }

    #[test]
    fn timestamps_wrap() {
        let mut receiver = DtmfReceiver::new();
        let mut digits = press(&mut receiver, u32::MAX - 100, 12);
        digits.extend(press(&mut receiver, 1900, 13));
        assert_eq!(digits, vec!['A', 'B']);
    }

    #[test]
    fn reset_forgets_a_pending_event() {
        let mut receiver = DtmfReceiver::new();
        assert_eq!(
            receiver.handle_packet(1000, &payload(5, false, 160)),
            Ok(None)
        );
        receiver.reset();
        // The new stream's first event does not drag the old digit along.
        assert_eq!(press(&mut receiver, 40, 2), vec!['2']);
    }

    #[test]
    fn digits_map_to_characters() {
        let chars: String = (0..16)
            .map(|code| Digit::from_event(code).unwrap().as_char())
            .collect();
        assert_eq!(chars, "0123456789*#ABCD");
        assert_eq!(Digit::from_event(16), None);
        assert_eq!(Digit::from_event(255), None);
        assert_eq!(Digit::from_event(11).unwrap().event(), 11);
    }

    #[test]
    fn debug_output_is_redacted() {
        for code in 0..16 {
            let digit = Digit::from_event(code).unwrap();
            let text = format!("{digit:?}");
            assert_eq!(text, "Digit(<redacted>)");
            let event = parse_event(&[code, 0x80, 0, 160]).unwrap();
            let text = format!("{event:?}");
            assert!(text.contains("<redacted>"), "{text}");
            assert!(!text.contains(&format!("event: {code}")), "{text}");
        }
        let mut receiver = DtmfReceiver::new();
        receiver.handle_packet(1, &payload(7, false, 160)).unwrap();
        let text = format!("{receiver:?}");
        assert!(!text.contains('7'), "{text}");
    }
}
