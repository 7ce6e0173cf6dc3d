//! Key presses carried in SIP INFO requests, the de-facto way many PBXs and gateways
//! relay DTMF out of band: `application/dtmf-relay` (`Signal=5` / `Duration=160` lines,
//! as Cisco and Asterisk send it) and `application/dtmf` (the key alone).
//!
//! Legacy INFO (RFC 2976 style, no `Info-Package` header) is what these devices send;
//! RFC 6086 packages are not negotiated. The digit is a PIN digit: it is returned as a
//! [`Digit`], whose `Debug` hides it, and never logged.

use crate::media::dtmf::Digit;

/// Why an INFO body was not taken as a key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// A content type that carries no key press we read (answered 415).
    #[error("unsupported INFO content type")]
    UnsupportedType,
    /// The body names no DTMF key.
    #[error("INFO body names no key")]
    NoKey,
}

/// Longest INFO body read; a key press is a few dozen bytes.
const MAX_BODY: usize = 1024;

/// The media type of a Content-Type value, lower-cased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether an INFO with this content type carries DTMF.
pub fn is_dtmf_type(content_type: &str) -> bool {
    matches!(
        media_type(content_type).as_str(),
        "application/dtmf-relay" | "application/dtmf"
    )
}

/// Reads the key of a DTMF INFO body with this Content-Type value.
pub fn parse_dtmf(content_type: &str, body: &[u8]) -> Result<Digit, InfoError> {
    let kind = media_type(content_type);
    if body.len() > MAX_BODY {
        return Err(InfoError::NoKey);
    }
    let text = std::str::from_utf8(body).map_err(|_| InfoError::NoKey)?;
    let signal = match kind.as_str() {
        "application/dtmf-relay" => text
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
            .map(|(_, v)| v.trim())
            .ok_or(InfoError::NoKey)?,
        "application/dtmf" => text.trim(),
        _ => return Err(InfoError::UnsupportedType),
    };
    key(signal).ok_or(InfoError::NoKey)
}

/// A key written as a character (`0`–`9`, `*`, `#`, `A`–`D`) or as its RFC 4733 event
/// number (`10` for `*`, `11` for `#`, as some gateways write it).
fn key(s: &str) -> Option<Digit> {
    let mut chars = s.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return match s.parse::<u8>() {
            Ok(n) => Digit::from_event(n),
            Err(_) => None,
        };
    };
    Digit::from_char(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(r: Result<Digit, InfoError>) -> Result<char, InfoError> {
        r.map(Digit::as_char)
    }

    #[test]
    fn dtmf_relay_bodies_as_pbxs_send_them() {
        let t = "application/dtmf-relay";
        assert_eq!(ch(parse_dtmf(t, b"Signal=5\r\nDuration=160\r\n")), Ok('5'));
        assert_eq!(ch(parse_dtmf(t, b"Signal= #\nDuration= 250\n")), Ok('#'));
        assert_eq!(ch(parse_dtmf(t, b"signal=*\r\n")), Ok('*'));
        assert_eq!(ch(parse_dtmf(t, b"Signal=11\r\nDuration=100\r\n")), Ok('#'));
        assert_eq!(ch(parse_dtmf(t, b"Signal=d\r\n")), Ok('D'));
        assert_eq!(
            ch(parse_dtmf("Application/DTMF-Relay; x=1", b"Signal=0")),
            Ok('0')
        );
        assert_eq!(parse_dtmf(t, b"Duration=160\r\n"), Err(InfoError::NoKey));
        assert_eq!(parse_dtmf(t, b"Signal=E\r\n"), Err(InfoError::NoKey));
        assert_eq!(parse_dtmf(t, b"Signal=16\r\n"), Err(InfoError::NoKey));
        assert_eq!(parse_dtmf(t, b"Signal=55\r\n"), Err(InfoError::NoKey));
        assert_eq!(parse_dtmf(t, &[0xff, 0xfe]), Err(InfoError::NoKey));
        assert_eq!(parse_dtmf(t, &[b'1'; 2000]), Err(InfoError::NoKey));
    }

    #[test]
    fn plain_dtmf_bodies_and_other_types() {
        assert_eq!(ch(parse_dtmf("application/dtmf", b"7")), Ok('7'));
        assert_eq!(ch(parse_dtmf("application/dtmf", b" 7\r\n")), Ok('7'));
        assert_eq!(parse_dtmf("application/dtmf", b""), Err(InfoError::NoKey));
        assert_eq!(
            parse_dtmf("application/media_control+xml", b"<x/>"),
            Err(InfoError::UnsupportedType)
        );
        assert!(is_dtmf_type("application/dtmf-relay;charset=utf-8"));
        assert!(!is_dtmf_type("text/plain"));
    }
}
