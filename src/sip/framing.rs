//! Framing SIP messages on a byte stream (TCP, TLS): RFC 3261 §18.3.
//!
//! A cheap [`check`] runs before any parsing: it finds the end of the head and reads
//! Content-Length, and says whether the buffer holds a whole message (and how long it
//! is), a keep-alive (RFC 5626 §3.5.1 CRLF ping), or not enough yet. It never parses
//! more than it must and never panics, whatever the bytes.

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete message of this many bytes.
    Message(usize),
    /// A keep-alive of this many bytes: `\r\n\r\n` is a ping (answer `\r\n`), a lone
    /// `\r\n` a pong or stray line break (answer nothing).
    KeepAlive {
        /// Bytes to consume.
        len: usize,
        /// Whether to answer with a pong.
        ping: bool,
    },
    /// Read more.
    Incomplete,
}

/// Why a stream cannot be framed; the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The head, or head plus body, exceeds the limit.
    #[error("message too large")]
    TooLarge,
    /// Content-Length is missing its value or not a number.
    #[error("bad Content-Length")]
    BadContentLength,
}

/// Checks whether `buf` starts with a complete message no larger than `max`.
pub fn check(buf: &[u8], max: usize) -> Result<Frame, FramingError> {
    if buf.starts_with(b"\r\n\r\n") {
        return Ok(Frame::KeepAlive { len: 4, ping: true });
    }
    if buf.starts_with(b"\r\n") {
        if buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
            // Could still become a ping.
            return Ok(Frame::Incomplete);
        }
        return Ok(Frame::KeepAlive {
            len: 2,
            ping: false,
        });
    }
    let window = &buf[..buf.len().min(max)];
    let Some(head_end) = find(window, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() >= max {
            Err(FramingError::TooLarge)
        } else {
            Ok(Frame::Incomplete)
        };
    };
    let body = content_length(&buf[..head_end])?;
    let total = head_end.checked_add(body).ok_or(FramingError::TooLarge)?;
    if total > max {
        return Err(FramingError::TooLarge);
    }
    if buf.len() < total {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message(total))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length (or its compact form `l`) from a message head; 0 when absent. Two
/// different values make the stream unframeable (RFC 4475 §3.3.9).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim(&line[colon + 1..]);
            if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::BadContentLength);
            }
            let n = value
                .iter()
                .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err(FramingError::BadContentLength);
            }
            found = Some(n);
        }
    }
    if let Some(n) = found {
        return Ok(n);
    }
    // RFC 3261 §18.3 makes Content-Length mandatory on streams; a message without it
    // is taken as having no body, which is what every sender that omits it means.
    Ok(0)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nl: 5\r\n\r\nhello";

    #[test]
    fn complete_incomplete_and_pipelined() {
        assert_eq!(check(MSG, 4096), Ok(Frame::Message(MSG.len())));
        for cut in 1..MSG.len() {
            assert_eq!(check(&MSG[..cut], 4096), Ok(Frame::Incomplete), "cut {cut}");
        }
        let mut two = MSG.to_vec();
        two.extend_from_slice(MSG);
        assert_eq!(check(&two, 4096), Ok(Frame::Message(MSG.len())));
    }

    #[test]
    fn keepalives() {
        assert_eq!(
            check(b"\r\n\r\n", 100),
            Ok(Frame::KeepAlive { len: 4, ping: true })
        );
        assert_eq!(check(b"\r\n", 100), Ok(Frame::Incomplete));
        assert_eq!(
            check(b"\r\nINVITE", 100),
            Ok(Frame::KeepAlive {
                len: 2,
                ping: false
            })
        );
    }

    #[test]
    fn limits_and_bad_lengths() {
        assert_eq!(check(MSG, 20), Err(FramingError::TooLarge));
        let big = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999\r\n\r\n";
        assert_eq!(check(big, 4096), Err(FramingError::TooLarge));
        let huge = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n";
        assert_eq!(check(huge, 4096), Err(FramingError::BadContentLength));
        let neg = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(check(neg, 4096), Err(FramingError::BadContentLength));
        let none = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\nrest";
        assert_eq!(check(none, 4096), Ok(Frame::Message(none.len() - 4)));
        assert_eq!(check(&[b'a'; 5000], 4096), Err(FramingError::TooLarge));
        assert_eq!(check(&[b'a'; 100], 4096), Ok(Frame::Incomplete));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator: every prefix of many pseudo-random streams.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut v = Vec::new();
            for _ in 0..64 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                v.push(b"\r\n:l0123456789 Content-Length"[(x >> 16) as usize % 29]);
            }
            for cut in 0..v.len() {
                let _ = check(&v[..cut], 48);
            }
        }
    }
}
