//! Dial-in numbers: which room a call's Request-URI user leads to.
//!
//! A PBX or carrier hands the bridge the number the caller dialled (a DID such as
//! `+49 30 123456`) or a name (`board`) as the user part of the Request-URI. Each room
//! lists the targets that lead to it (`dial_in`). Matching rule:
//!
//! - URI parameters after `;` (`+4930123456;npdi`) are ignored;
//! - a target made only of digits, visual separators (space, `-`, `.`, `(`, `)`, `/`)
//!   and a leading `+` or `00` is a **number**: the separators and the `+`/`00` are
//!   dropped and the remaining digits must be equal (`+49 30 123456`, `0049-30-123456`
//!   and `4930123456` are one number; a national `030 123456` is another: list each
//!   form your trunk sends);
//! - anything else is a **name**, compared without regard to ASCII case.
//!
//! The user part came from a caller: it is never logged, and lookup does not allocate
//! beyond one short normalised copy.

use std::collections::HashMap;

/// A normalised dial-in target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Digits only, without `+`/`00` and separators.
    Number(String),
    /// A name, lower-cased.
    Name(String),
}

/// Visual separators allowed inside numbers (RFC 3966 §5.1.1 `visual-separator`, plus
/// space and `/` as people write them).
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')' | '/')
}

impl Target {
    /// Normalises a configured alias or a Request-URI user part; `None` for an empty one.
    pub fn parse(user: &str) -> Option<Target> {
        let user = user.split(';').next().unwrap_or_default().trim();
        if user.is_empty() {
            return None;
        }
        let compact: String = user.chars().filter(|&c| !is_separator(c)).collect();
        let digits = compact
            .strip_prefix('+')
            .or_else(|| compact.strip_prefix("00"))
            .unwrap_or(&compact);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Target::Number(digits.to_string()));
        }
        Some(Target::Name(user.to_ascii_lowercase()))
    }
}

/// Alias → room index, built from the rooms' `dial_in` lists.
#[derive(Debug, Clone, Default)]
pub struct DialIn {
    targets: HashMap<Target, usize>,
}

/// Two rooms (or one room twice) claim the same target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dial-in target used twice (rooms {first} and {second})")]
pub struct DuplicateTarget {
    /// The room that listed it first.
    pub first: usize,
    /// The room that listed it again.
    pub second: usize,
}

impl DialIn {
    /// An empty table.
    pub fn new() -> DialIn {
        DialIn::default()
    }

    /// Adds `alias` for `room`; refuses a target that is already taken, and ignores an
    /// empty one (reported as `Ok(false)`).
    pub fn add(&mut self, alias: &str, room: usize) -> Result<bool, DuplicateTarget> {
        let Some(t) = Target::parse(alias) else {
            return Ok(false);
        };
        if let Some(&first) = self.targets.get(&t) {
            return Err(DuplicateTarget {
                first,
                second: room,
            });
        }
        self.targets.insert(t, room);
        Ok(true)
    }

    /// The room `user` (a Request-URI user part) leads to.
    pub fn lookup(&self, user: &str) -> Option<usize> {
        Target::parse(user).and_then(|t| self.targets.get(&t).copied())
    }

    /// Whether no room has a dial-in target.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_on_digits_whatever_the_writing() {
        let mut d = DialIn::new();
        assert_eq!(d.add("+49 30 123456", 0), Ok(true));
        assert_eq!(d.add("board", 1), Ok(true));
        for user in [
            "+4930123456",
            "004930123456",
            "4930123456",
            "+49-30-123456",
            "+49 (30) 123.456",
            "+4930123456;npdi;rn=+4930999",
        ] {
            assert_eq!(d.lookup(user), Some(0), "{user}");
        }
        assert_eq!(
            d.lookup("030123456"),
            None,
            "a national form is another number"
        );
        assert_eq!(d.lookup("+4930123457"), None);
        assert_eq!(d.lookup("BOARD"), Some(1));
        assert_eq!(d.lookup("Board;x=1"), Some(1));
        assert_eq!(d.lookup("boardroom"), None);
        assert_eq!(d.lookup(""), None);
        assert_eq!(d.lookup("+"), None);
    }

    #[test]
    fn a_target_used_twice_is_refused() {
        let mut d = DialIn::new();
        d.add("+4930123456", 0).unwrap();
        assert_eq!(
            d.add("0049 30 123456", 2),
            Err(DuplicateTarget {
                first: 0,
                second: 2
            })
        );
        d.add("Sales", 1).unwrap();
        assert_eq!(
            d.add("sales", 1),
            Err(DuplicateTarget {
                first: 1,
                second: 1
            })
        );
        assert_eq!(d.add("  ", 3), Ok(false));
    }

    #[test]
    fn names_keep_their_characters() {
        assert_eq!(Target::parse("conf-1"), Some(Target::Name("conf-1".into())));
        assert_eq!(Target::parse("12a"), Some(Target::Name("12a".into())));
        assert_eq!(Target::parse("+"), Some(Target::Name("+".into())));
        assert_eq!(Target::parse("00"), Some(Target::Name("00".into())));
        assert_eq!(Target::parse("0"), Some(Target::Number("0".into())));
    }
}
