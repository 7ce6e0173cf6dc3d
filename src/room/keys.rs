//! In-call keys: which key sequence means which control, and reading sequences from
//! a caller's keypad one digit at a time.
//!
//! Bindings are short sequences (`*6`, `*#`) set in `[controls]`; none may be a prefix
//! of another, so a sequence is complete the moment it matches. A digit that fits no
//! binding discards what was typed (and may start a new sequence); a half-typed
//! sequence is forgotten after the digit timeout.

use crate::media::dtmf::Digit;
use std::time::{Duration, Instant};

/// Longest key sequence a binding may have.
pub const MAX_SEQUENCE: usize = 4;

/// What a caller can do from the keypad once in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    /// Mute or unmute oneself.
    Mute,
    /// Raise or lower one's hand.
    Hand,
    /// Hear how many are in the room.
    Count,
    /// Hear the room quieter.
    Quieter,
    /// Hear the room louder.
    Louder,
    /// Hear the keys one may use now.
    Help,
    /// Moderator: lock or unlock the room.
    Lock,
    /// Moderator: lecture mode on or off.
    Lecture,
    /// Moderator: give the floor to the hand raised longest.
    Floor,
    /// Moderator: remove the member who joined last.
    RemoveLast,
    /// Moderator: mute everyone but moderators, once.
    MuteAll,
}

impl Control {
    /// Every control, in the order the spoken help lists them.
    pub const ALL: [Control; 11] = [
        Control::Mute,
        Control::Hand,
        Control::Count,
        Control::Quieter,
        Control::Louder,
        Control::Lock,
        Control::Lecture,
        Control::Floor,
        Control::RemoveLast,
        Control::MuteAll,
        Control::Help,
    ];

    /// Its key in `[controls]` and the default binding.
    pub fn config_key(self) -> (&'static str, &'static str) {
        match self {
            Control::Mute => ("mute", "*6"),
            Control::Hand => ("hand", "*9"),
            Control::Count => ("count", "*#"),
            Control::Quieter => ("quieter", "*1"),
            Control::Louder => ("louder", "*3"),
            Control::Help => ("help", "*0"),
            Control::Lock => ("lock", "*5"),
            Control::Lecture => ("lecture", "*7"),
            Control::Floor => ("floor", "*2"),
            Control::RemoveLast => ("remove_last", "*8"),
            Control::MuteAll => ("mute_all", "*4"),
        }
    }

    /// Whether only moderators may use it.
    pub fn moderator_only(self) -> bool {
        matches!(
            self,
            Control::Lock
                | Control::Lecture
                | Control::Floor
                | Control::RemoveLast
                | Control::MuteAll
        )
    }
}

/// A key sequence (at most [`MAX_SEQUENCE`] keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequence {
    keys: [u8; MAX_SEQUENCE],
    len: usize,
}

/// Why a binding is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// Empty, too long, or a character that is not a key.
    #[error("{0:?} is not a key sequence: 1 to 4 of 0-9, * and #")]
    Invalid(String),
    /// One binding starts another, so the longer one could never be typed.
    #[error("{0:?} and {1:?} overlap: one starts the other")]
    Prefix(String, String),
    /// The key that confirms a ZRTP SAS starts a control's binding.
    #[error("the SAS confirmation key {0:?} starts the binding {1:?}")]
    SasConfirm(char, String),
}

impl Sequence {
    /// Parses `*6`-style text.
    pub fn parse(text: &str) -> Result<Sequence, BindingError> {
        let mut s = Sequence::default();
        if text.is_empty() || text.len() > MAX_SEQUENCE {
            return Err(BindingError::Invalid(text.to_string()));
        }
        for c in text.bytes() {
            if !(c.is_ascii_digit() || c == b'*' || c == b'#') {
                return Err(BindingError::Invalid(text.to_string()));
            }
            s.keys[s.len] = c;
            s.len += 1;
        }
        Ok(s)
    }

    /// The keys, as ASCII (`0`-`9`, `*`, `#`).
    pub fn keys(&self) -> &[u8] {
        &self.keys[..self.len]
    }

    fn starts_with(&self, other: &Sequence) -> bool {
        self.keys().starts_with(other.keys())
    }

    fn push(&mut self, key: u8) -> bool {
        if self.len == MAX_SEQUENCE {
            return false;
        }
        self.keys[self.len] = key;
        self.len += 1;
        true
    }
}

impl std::fmt::Display for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(self.keys()).unwrap_or("?"))
    }
}

/// The room's key bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    bindings: Vec<(Control, Sequence)>,
    timeout: Duration,
    /// The key that confirms a ZRTP SAS right after it was read (`#`).
    sas_confirm: Digit,
}

impl Default for KeyMap {
    fn default() -> Self {
        let bindings = Control::ALL
            .iter()
            .map(|&c| {
                let seq = Sequence::parse(c.config_key().1).unwrap_or_default();
                (c, seq)
            })
            .collect();
        KeyMap {
            bindings,
            timeout: Duration::from_secs(3),
            sas_confirm: Digit::HASH,
        }
    }
}

impl KeyMap {
    /// Bindings for some controls (the others keep their defaults) and the digit
    /// timeout; refuses sequences that are not keys or that overlap.
    pub fn new(
        overrides: &[(Control, Sequence)],
        timeout: Duration,
    ) -> Result<KeyMap, BindingError> {
        let mut map = KeyMap {
            timeout,
            ..KeyMap::default()
        };
        for &(control, seq) in overrides {
            if let Some(b) = map.bindings.iter_mut().find(|(c, _)| *c == control) {
                b.1 = seq;
            }
        }
        for (i, (_, a)) in map.bindings.iter().enumerate() {
            for (_, b) in &map.bindings[i + 1..] {
                if a.starts_with(b) || b.starts_with(a) {
                    return Err(BindingError::Prefix(a.to_string(), b.to_string()));
                }
            }
        }
        Ok(map)
    }

    /// The same map with `key` confirming a ZRTP SAS; refused when a control's
    /// binding starts with it (the window after the read-out would take that key).
    pub fn with_sas_confirm(self, key: Digit) -> Result<KeyMap, BindingError> {
        if let Some((_, seq)) = self
            .bindings
            .iter()
            .find(|(_, s)| s.keys().first().map(|&k| char::from(k)) == Some(key.as_char()))
        {
            return Err(BindingError::SasConfirm(key.as_char(), seq.to_string()));
        }
        Ok(KeyMap {
            sas_confirm: key,
            ..self
        })
    }

    /// The key that confirms a ZRTP SAS.
    pub fn sas_confirm(&self) -> Digit {
        self.sas_confirm
    }

    /// The sequence bound to `control`.
    pub fn binding(&self, control: Control) -> Sequence {
        self.bindings
            .iter()
            .find(|(c, _)| *c == control)
            .map(|&(_, s)| s)
            .unwrap_or_default()
    }

    /// How long a half-typed sequence waits for its next key.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn complete(&self, typed: &Sequence) -> Option<Control> {
        self.bindings
            .iter()
            .find(|(_, s)| s == typed)
            .map(|&(c, _)| c)
    }

    fn is_prefix(&self, typed: &Sequence) -> bool {
        self.bindings.iter().any(|(_, s)| s.starts_with(typed))
    }
}

/// One caller's half-typed sequence.
#[derive(Debug, Clone, Default)]
pub struct KeyReader {
    typed: Sequence,
    deadline: Option<Instant>,
}

impl KeyReader {
    /// A key from the caller; returns the control it completes, if any.
    pub fn handle_digit(&mut self, now: Instant, map: &KeyMap, digit: Digit) -> Option<Control> {
        self.handle_timeout(now);
        let key = digit.as_char() as u8;
        if !self.typed.push(key) || !map.is_prefix(&self.typed) {
            // Not a binding's start: the key may begin a new sequence.
            self.typed = Sequence::default();
            self.typed.push(key);
            if !map.is_prefix(&self.typed) {
                self.typed = Sequence::default();
                self.deadline = None;
                return None;
            }
        }
        if let Some(control) = map.complete(&self.typed) {
            self.typed = Sequence::default();
            self.deadline = None;
            return Some(control);
        }
        self.deadline = Some(now + map.timeout());
        None
    }

    /// When a half-typed sequence will be forgotten.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Forgets a half-typed sequence whose time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.typed = Sequence::default();
            self.deadline = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    fn keys(reader: &mut KeyReader, map: &KeyMap, now: Instant, text: &str) -> Vec<Control> {
        text.chars()
            .filter_map(|c| reader.handle_digit(now, map, Digit::from_char(c).unwrap()))
            .collect()
    }

    #[test]
    fn default_bindings_are_the_issue_s_and_complete_on_the_last_key() {
        let map = KeyMap::default();
        let mut r = KeyReader::default();
        let t = Instant::now();
        assert_eq!(keys(&mut r, &map, t, "*6"), vec![Control::Mute]);
        assert_eq!(keys(&mut r, &map, t, "*#"), vec![Control::Count]);
        assert_eq!(
            keys(&mut r, &map, t, "*9*0*1*3*5*7*2*8*4"),
            vec![
                Control::Hand,
                Control::Help,
                Control::Quieter,
                Control::Louder,
                Control::Lock,
                Control::Lecture,
                Control::Floor,
                Control::RemoveLast,
                Control::MuteAll
            ]
        );
    }

    #[test]
    fn a_stray_key_restarts_and_a_half_typed_sequence_times_out() {
        let map = KeyMap::default();
        let mut r = KeyReader::default();
        let t = Instant::now();
        // "5" fits nothing; "**6": the second star starts afresh.
        assert_eq!(keys(&mut r, &map, t, "5**6"), vec![Control::Mute]);
        assert!(keys(&mut r, &map, t, "*").is_empty());
        assert_eq!(r.poll_timeout(), Some(t + map.timeout()));
        let later = t + map.timeout();
        // The star was forgotten: "6" alone is nothing.
        assert!(keys(&mut r, &map, later, "6").is_empty());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn bindings_are_configurable_and_overlaps_refused() {
        let hash = Sequence::parse("#").unwrap();
        let map = KeyMap::new(
            &[(Control::Mute, Sequence::parse("##").unwrap())],
            Duration::from_secs(2),
        )
        .unwrap();
        let mut r = KeyReader::default();
        assert_eq!(
            keys(&mut r, &map, Instant::now(), "##"),
            vec![Control::Mute]
        );
        assert!(matches!(
            KeyMap::new(
                &[
                    (Control::Mute, hash),
                    (Control::Hand, Sequence::parse("#1").unwrap())
                ],
                Duration::from_secs(2)
            ),
            Err(BindingError::Prefix(..))
        ));
        // "*" alone would start every default binding.
        assert!(KeyMap::new(
            &[(Control::Help, Sequence::parse("*").unwrap())],
            Duration::from_secs(2)
        )
        .is_err());
        for bad in ["", "*12345", "a", "*6 "] {
            assert!(Sequence::parse(bad).is_err(), "{bad:?}");
        }
    }
}
