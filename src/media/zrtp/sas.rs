//! The Short Authentication String (RFC 6189 §5.1.6, §7): what the two ends read to
//! each other to rule out a man in the middle.
//!
//! The SAS comes from sasvalue, the leftmost 32 bits of sashash. B32 renders its first
//! 20 bits as four characters of a base-32 alphabet chosen to be unambiguous when
//! spoken; B256 renders its first 16 bits as two words of the PGP word list. The bridge
//! reads the SAS to the caller, so [`Sas::tokens`] splits it into the units a prompt
//! player speaks one by one.

use std::fmt;

use super::algorithm::SasType;
use super::pgp_words;

/// The B32 alphabet (RFC 6189 §5.1.6), z-base-32: no 0/o, 1/l or 2/z confusion.
const B32_ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Characters a B32 SAS shows: 20 bits, 5 per character.
const B32_CHARS: usize = 4;

/// Word `i` of the PGP word list: 0–255 the even words, 256–511 the odd ones.
pub fn word(i: usize) -> Option<&'static str> {
    match i {
        0..=255 => pgp_words::EVEN.get(i).copied(),
        _ => pgp_words::ODD.get(i - 256).copied(),
    }
}

/// Where `w` is in the PGP word list, as [`word`] counts.
pub fn word_index(w: &str) -> Option<usize> {
    pgp_words::EVEN
        .iter()
        .position(|&x| x == w)
        .or_else(|| pgp_words::ODD.iter().position(|&x| x == w).map(|i| 256 + i))
}

/// A rendered SAS.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sas {
    kind: SasType,
    value: u32,
}

/// One spoken unit of a SAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasToken {
    /// A lower-case letter of the B32 alphabet.
    Letter(char),
    /// A digit of the B32 alphabet.
    Digit(char),
    /// A word of the PGP word list (B256).
    Word(&'static str),
}

impl Sas {
    /// The SAS of a sasvalue, rendered as `kind`.
    pub fn new(kind: SasType, sas_value: u32) -> Sas {
        Sas {
            kind,
            value: sas_value,
        }
    }

    /// The rendering scheme.
    pub fn kind(&self) -> SasType {
        self.kind
    }

    /// The text to show: four characters ("3zu9") or two words ("spindle truncated").
    pub fn text(&self) -> String {
        let tokens = self.tokens();
        let mut out = String::new();
        for (i, token) in tokens.iter().enumerate() {
            match token {
                SasToken::Letter(c) | SasToken::Digit(c) => out.push(*c),
                SasToken::Word(w) => {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(w);
                }
            }
        }
        out
    }

    /// The units to speak, in order.
    pub fn tokens(&self) -> Vec<SasToken> {
        match self.kind {
            SasType::B32 => (0..B32_CHARS)
                .map(|i| {
                    let index = (self.value >> (27 - 5 * i)) & 0x1f;
                    let c = char::from(B32_ALPHABET[index as usize]);
                    if c.is_ascii_digit() {
                        SasToken::Digit(c)
                    } else {
                        SasToken::Letter(c)
                    }
                })
                .collect(),
            SasType::B256 => {
                let [first, second, _, _] = self.value.to_be_bytes();
                vec![
                    SasToken::Word(pgp_words::EVEN[usize::from(first)]),
                    SasToken::Word(pgp_words::ODD[usize::from(second)]),
                ]
            }
        }
    }
}

impl fmt::Debug for Sas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Per-call data stays out of logs (docs/architecture.md §5).
        write!(f, "Sas({}, <redacted>)", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b32_renders_the_first_20_bits() {
        // Expected values computed independently (vectors.py's alphabet indexing).
        for (value, text) in [
            (0xcde7_ff45, "3zu9"),
            (0, "yyyy"),
            (0xffff_ffff, "9999"),
            (0x1234_5678, "ne4f"),
        ] {
            assert_eq!(Sas::new(SasType::B32, value).text(), text);
        }
        // Only the first 20 bits count.
        assert_eq!(
            Sas::new(SasType::B32, 0x1234_5000).text(),
            Sas::new(SasType::B32, 0x1234_5fff).text()
        );
        assert_eq!(
            Sas::new(SasType::B32, 0xcde7_ff45).tokens(),
            vec![
                SasToken::Digit('3'),
                SasToken::Letter('z'),
                SasToken::Letter('u'),
                SasToken::Digit('9')
            ]
        );
    }

    #[test]
    fn b256_renders_two_pgp_words() {
        for (value, text) in [
            (0xcde7_ff45, "spindle truncated"),
            (0, "aardvark adroitness"),
            (0xffff_ffff, "Zulu Yucatan"),
            (0x1234_5678, "atlas confidence"),
        ] {
            assert_eq!(Sas::new(SasType::B256, value).text(), text);
        }
        assert_eq!(
            Sas::new(SasType::B256, 0).tokens(),
            vec![SasToken::Word("aardvark"), SasToken::Word("adroitness")]
        );
    }

    #[test]
    fn word_lists_are_complete_and_distinct() {
        let mut all: Vec<&str> = pgp_words::EVEN
            .iter()
            .chain(pgp_words::ODD.iter())
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 512);
        assert!(all
            .iter()
            .all(|w| w.chars().all(|c| c.is_ascii_alphabetic())));
    }

    #[test]
    fn debug_does_not_show_the_sas() {
        let text = format!("{:?}", Sas::new(SasType::B32, 0xcde7_ff45));
        assert!(!text.contains("3zu9"), "{text}");
    }
}
