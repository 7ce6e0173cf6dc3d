//! The algorithm names of ZRTP (RFC 6189 §5.1.2 to §5.1.6) and the ones we speak.
//!
//! On the wire every algorithm is a four-character block ([`AlgorithmId`]); a Hello
//! lists them per category and a Commit names one of each. The typed enums here are
//! the subset this implementation supports; anything else stays an [`AlgorithmId`]
//! so that a peer's Hello round-trips unchanged.

use std::fmt;

/// A four-octet algorithm name as it appears on the wire (e.g. `b"S256"`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlgorithmId(pub [u8; 4]);

impl fmt::Debug for AlgorithmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for AlgorithmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Peer-chosen bytes: print only printable ASCII so a log line stays one line.
        for &b in &self.0 {
            let c = if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Generates a typed enum over a closed set of four-character names.
macro_rules! algorithm_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $code:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value this implementation supports, in our default preference order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The wire name.
            pub fn id(self) -> AlgorithmId {
                match self {
                    $( $name::$variant => AlgorithmId(*$code), )+
                }
            }

            /// The value a wire name stands for, if we support it.
            pub fn from_id(id: AlgorithmId) -> Option<$name> {
                match &id.0 {
                    $( $code => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.id(), f)
            }
        }
    };
}

algorithm_enum! {
    /// Hash type (RFC 6189 §5.1.2). Only the mandatory SHA-256.
    HashType {
        /// SHA-256, also the implicit hash of the hash chain and the Hello/Commit/DHPart MACs.
        S256 = b"S256",
    }
}

algorithm_enum! {
    /// Block cipher for SRTP and the Confirm messages (RFC 6189 §5.1.3).
    Cipher {
        /// AES with a 128-bit key (mandatory).
        Aes1 = b"AES1",
        /// AES with a 256-bit key.
        Aes3 = b"AES3",
    }
}

algorithm_enum! {
    /// SRTP authentication tag (RFC 6189 §5.1.4).
    AuthTag {
        /// HMAC-SHA1 with an 80-bit tag (RFC 3711); mandatory.
        Hs80 = b"HS80",
        /// HMAC-SHA1 with a 32-bit tag (RFC 3711); mandatory.
        Hs32 = b"HS32",
    }
}

algorithm_enum! {
    /// Key agreement (RFC 6189 §5.1.5, plus X25519 from the IANA ZRTP registry).
    KeyAgreement {
        /// X25519 (RFC 7748), named "X255" as bzrtp and the IANA registry do.
        X255 = b"X255",
        /// Finite-field DH over the RFC 3526 3072-bit MODP group (mandatory).
        Dh3k = b"DH3k",
    }
}

algorithm_enum! {
    /// SAS rendering (RFC 6189 §5.1.6).
    SasType {
        /// Four base-32 characters (20 bits); mandatory.
        B32 = b"B32 ",
        /// Two PGP words (16 bits).
        B256 = b"B256",
    }
}

/// The Multistream key agreement name (RFC 6189 §5.1.5): recognised, not supported.
pub const MULTISTREAM: AlgorithmId = AlgorithmId(*b"Mult");
/// The Preshared key agreement name (RFC 6189 §5.1.5): recognised, not supported.
pub const PRESHARED: AlgorithmId = AlgorithmId(*b"Prsh");

impl Cipher {
    /// Key length in bytes: of the SRTP master key and of zrtpkeyi/zrtpkeyr (RFC 6189
    /// §4.5.3).
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes1 => 16,
            Cipher::Aes3 => 32,
        }
    }
}

impl KeyAgreement {
    /// Length of the public value in DHPart1/DHPart2, in bytes (RFC 6189 §5.5: 384 for
    /// DH3k; RFC 7748: 32 for X25519).
    pub fn public_value_len(self) -> usize {
        match self {
            KeyAgreement::X255 => 32,
            KeyAgreement::Dh3k => 384,
        }
    }

    /// Rank by speed, fastest first, as the tie-break of RFC 6189 §4.1.2 needs
    /// (X25519 is far faster than a 3072-bit exponentiation).
    pub(crate) fn speed_rank(self) -> u8 {
        match self {
            KeyAgreement::X255 => 0,
            KeyAgreement::Dh3k => 1,
        }
    }
}

impl AuthTag {
    /// The SRTP authentication tag length in bytes (RFC 3711: 10 or 4 for SRTP;
    /// SRTCP always uses 10).
    pub fn tag_len(self) -> usize {
        match self {
            AuthTag::Hs80 => 10,
            AuthTag::Hs32 => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_stay_unknown() {
        for &c in Cipher::ALL {
            assert_eq!(Cipher::from_id(c.id()), Some(c));
        }
        for &k in KeyAgreement::ALL {
            assert_eq!(KeyAgreement::from_id(k.id()), Some(k));
        }
        assert_eq!(SasType::from_id(AlgorithmId(*b"B32 ")), Some(SasType::B32));
        assert_eq!(KeyAgreement::from_id(AlgorithmId(*b"EC25")), None);
        assert_eq!(KeyAgreement::from_id(MULTISTREAM), None);
        assert_eq!(AlgorithmId(*b"a\nb\x00").to_string(), "a?b?");
    }
}
