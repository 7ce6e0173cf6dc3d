//! Typing a PIN as RFC 4733 telephone-events, one 20 ms tick at a time.
//!
//! Per key: a start packet (marker bit, E = 0), then the end packet three times
//! (E = 1, RFC 4733 §2.5.1.4), every packet of the event carrying the event's own
//! timestamp (the stream's timestamp when the key went down, §2.5.1.2); then a pause
//! of [`PAUSE_TICKS`] audio ticks so the next key is a new event. The stream's
//! timestamp keeps running underneath: after the last end packet it jumps to where
//! the audio would be.
//!
//! [`DigitSender::next_tick`] says for each tick whether to send audio or an event
//! packet, and how far the RTP timestamp advances after it; the member writes the
//! packet with its [`crate::media::rtp::RtpSender`].
//!
//! ```
//! use sotto::load::telephone_event::{DigitSender, Tick};
//! let mut keys = DigitSender::new("1#", 160).unwrap();
//! let Tick::Event { payload, marker, .. } = keys.next_tick() else { panic!() };
//! assert_eq!((payload[0], marker), (1, true));
//! ```

use crate::media::dtmf::Digit;

/// Audio ticks between two keys, so that two equal keys are two events (RFC 4733
/// §2.5.1.2: a new event needs a new timestamp) and slow receivers see a key-up.
pub const PAUSE_TICKS: u32 = 2;

/// Volume of our tones, in -dBm0 (RFC 4733 §2.3.2): 10, a typical phone's.
pub const VOLUME: u8 = 10;

/// Copies of the end packet (RFC 4733 §2.5.1.4: "three", against loss).
const END_PACKETS: u32 = 3;

/// Ticks one key takes: the start packet and the end packets.
const EVENT_TICKS: u32 = 1 + END_PACKETS;

/// Why a key string cannot be typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigitError {
    /// A character that is no DTMF key (0–9, `*`, `#`, A–D).
    #[error("{0:?} is not a DTMF key (0-9, *, #, A-D)")]
    NotAKey(char),
}

/// The 4-byte telephone-event payload (RFC 4733 §2.3): event code, E bit and volume,
/// duration in timestamp units.
pub fn payload(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
    let [high, low] = duration.to_be_bytes();
    [event, u8::from(end) << 7 | (volume & 0x3f), high, low]
}

/// What to send in one 20 ms tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// An audio packet (no key is being sent, or between keys).
    Audio,
    /// A telephone-event packet.
    Event {
        /// Its payload.
        payload: [u8; 4],
        /// Set the RTP marker bit (the first packet of an event, RFC 4733 §2.5.1.3).
        marker: bool,
        /// How far the stream's RTP timestamp advances after this packet: 0 while the
        /// event lasts (its packets share one timestamp), the whole event's ticks after
        /// its last packet.
        advance: u32,
        /// This packet is the first end packet of the last key: the bridge has the
        /// whole entry when it arrives.
        completes_entry: bool,
    },
}

/// Sends a string of keys, one tick at a time; see the module docs.
#[derive(Debug, Clone)]
pub struct DigitSender {
    keys: Vec<u8>,
    /// Timestamp units in one tick (160 at 8 kHz, 960 at 48 kHz).
    tick_units: u32,
    /// Index of the key being sent.
    key: usize,
    /// Tick within the key's event and pause.
    step: u32,
}

impl DigitSender {
    /// A sender for `keys` (e.g. `"31415926#"`) on a stream whose RTP timestamp advances
    /// `tick_units` per 20 ms tick.
    pub fn new(keys: &str, tick_units: u32) -> Result<DigitSender, DigitError> {
        let keys = keys
            .chars()
            .map(|c| {
                Digit::from_char(c)
                    .map(Digit::event)
                    .ok_or(DigitError::NotAKey(c))
            })
            .collect::<Result<Vec<u8>, DigitError>>()?;
        Ok(DigitSender {
            keys,
            tick_units,
            key: 0,
            step: 0,
        })
    }

    /// Whether every key has been sent (pauses included).
    pub fn is_done(&self) -> bool {
        self.key >= self.keys.len()
    }

    /// What to send this tick; [`Tick::Audio`] once every key is sent.
    pub fn next_tick(&mut self) -> Tick {
        let Some(&event) = self.keys.get(self.key) else {
            return Tick::Audio;
        };
        let step = self.step;
        self.step += 1;
        if self.step >= EVENT_TICKS + PAUSE_TICKS {
            self.step = 0;
            self.key += 1;
        }
        if step >= EVENT_TICKS {
            return Tick::Audio;
        }
        // The start packet tells one tick of key-down; the key went up one tick later,
        // which is what every end packet says.
        let (end, duration) = if step == 0 {
            (false, self.tick_units)
        } else {
            (true, 2 * self.tick_units)
        };
        // `self.key` moves on only after the pause, so it is still this event's key.
        let last_key = self.key + 1 == self.keys.len();
        Tick::Event {
            payload: payload(event, end, VOLUME, duration.min(u32::from(u16::MAX)) as u16),
            marker: step == 0,
            advance: if step + 1 == EVENT_TICKS {
                EVENT_TICKS * self.tick_units
            } else {
                0
            },
            completes_entry: step == 1 && last_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::DtmfReceiver;

    #[test]
    fn payload_layout_follows_rfc_4733_section_2_3() {
        // Event 11 (#), E bit, volume 10, duration 320.
        assert_eq!(payload(11, true, 10, 320), [11, 0x80 | 10, 0x01, 0x40]);
        assert_eq!(payload(5, false, 63, 160), [5, 63, 0, 160]);
        // The reserved R bit stays clear even if a volume is too large.
        assert_eq!(payload(0, false, 0xff, 0)[1], 0x3f);
    }

    #[test]
    fn one_key_is_a_start_and_three_ends_on_one_timestamp_then_a_pause() {
        let mut s = DigitSender::new("7", 160).unwrap();
        let ticks: Vec<Tick> = (0..8).map(|_| s.next_tick()).collect();
        assert_eq!(
            ticks[0],
            Tick::Event {
                payload: [7, 10, 0, 160],
                marker: true,
                advance: 0,
                completes_entry: false
            }
        );
        for (i, t) in ticks[1..4].iter().enumerate() {
            let Tick::Event {
                payload,
                marker,
                advance,
                completes_entry,
            } = *t
            else {
                panic!("tick {} is not an event", i + 1)
            };
            assert_eq!(payload, [7, 0x80 | 10, 1, 64]);
            assert!(!marker);
            // The timestamp stands still during the event, then catches up by 4 ticks.
            assert_eq!(advance, if i == 2 { 640 } else { 0 });
            assert_eq!(completes_entry, i == 0);
        }
        assert_eq!(&ticks[4..], &[Tick::Audio; 4]);
        assert!(s.is_done());
    }

    #[test]
    fn the_bridges_receiver_reads_each_key_once() {
        let keys = "31415926#";
        let mut s = DigitSender::new(keys, 160).unwrap();
        let mut receiver = DtmfReceiver::new();
        let mut timestamp = 1000u32;
        let mut heard = String::new();
        let mut completions = 0;
        while !s.is_done() {
            match s.next_tick() {
                Tick::Audio => timestamp += 160,
                Tick::Event {
                    payload,
                    advance,
                    completes_entry,
                    ..
                } => {
                    if let Some(d) = receiver.handle_packet(timestamp, &payload).unwrap() {
                        heard.push(d.as_char());
                        // The entry is complete exactly when '#' is read.
                        assert_eq!(completes_entry, d.as_char() == '#');
                    }
                    completions += usize::from(completes_entry);
                    timestamp += advance;
                }
            }
        }
        assert_eq!(heard, keys);
        assert_eq!(completions, 1);
        // Nine keys of 6 ticks each.
        assert_eq!(timestamp, 1000 + 9 * 6 * 160);
    }

    #[test]
    fn opus_streams_count_in_48_khz_units() {
        let mut s = DigitSender::new("1", 960).unwrap();
        let Tick::Event { payload, .. } = s.next_tick() else {
            panic!()
        };
        assert_eq!(u16::from_be_bytes([payload[2], payload[3]]), 960);
        let Tick::Event { payload, .. } = s.next_tick() else {
            panic!()
        };
        assert_eq!(u16::from_be_bytes([payload[2], payload[3]]), 1920);
    }

    #[test]
    fn keys_that_are_not_dtmf_are_refused() {
        assert_eq!(
            DigitSender::new("12x", 160).unwrap_err(),
            DigitError::NotAKey('x')
        );
        assert!(DigitSender::new("", 160).unwrap().is_done());
    }
}
