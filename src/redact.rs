//! Redaction and per-call tokens: the types that keep personal data out of logs.
//!
//! Anything that came from a caller (URIs, display names, addresses, digits) is
//! wrapped in [`Redacted`] before it can reach a formatter; a call is named in logs
//! only by its [`CallToken`], a random number drawn for that call and never reused.

use std::fmt;

/// A value that came from a caller; `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Redacted<T>(pub T);

impl<T> Redacted<T> {
    /// Borrows the inner value for processing (never for logging).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Random per-call identifier; the only way a call appears in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallToken(u64);

impl CallToken {
    /// Draws a fresh random token.
    pub fn random() -> Self {
        CallToken(rand::random())
    }

    /// Builds a token from a known value (tests and simulations).
    pub fn from_raw(raw: u64) -> Self {
        CallToken(raw)
    }
}

impl fmt::Display for CallToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{:012x}", self.0 & 0xffff_ffff_ffff)
    }
}

impl fmt::Debug for CallToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_never_prints_its_value() {
        let r = Redacted("sip:alice@example.com".to_string());
        assert_eq!(format!("{r}"), "<redacted>");
        assert_eq!(format!("{r:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(r)), "Some(<redacted>)");
    }

    #[test]
    fn tokens_are_random_and_short() {
        let a = CallToken::random();
        let b = CallToken::random();
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 13);
    }
}
