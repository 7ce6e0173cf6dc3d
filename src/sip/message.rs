//! SIP messages: size limits, parsing on top of `ezk-sip-types`, and building responses.
//!
//! [`parse`] takes one datagram (or one framed stream message) and returns a [`Message`]
//! whose headers stay raw until asked for; the accessors parse the few headers the
//! transaction and dialog layers need and return typed errors, never panics. Limits are
//! checked before any parsing: size, header count, and Content-Length against the bytes
//! that really arrived (RFC 3261 §18.3).

use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{CSeq, CallID, Contact, FromTo, MaxForwards, Routing, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::{AppendCtx, PrintCtx};
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Headers, Method, Name};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Bounds applied before a message is parsed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message in bytes.
    pub max_size: usize,
    /// Most header lines.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Larger than [`Limits::max_size`].
    #[error("message too large")]
    TooLarge,
    /// More header lines than [`Limits::max_headers`].
    #[error("too many header lines")]
    TooManyHeaders,
    /// The head is not complete (no blank line).
    #[error("incomplete message head")]
    Incomplete,
    /// The head is not UTF-8.
    #[error("message head is not UTF-8")]
    NotUtf8,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line")]
    BadStartLine,
    /// A header line has no `name:`.
    #[error("bad header line")]
    BadHeaderLine,
    /// Content-Length is not a number.
    #[error("bad Content-Length")]
    BadContentLength,
    /// Content-Length announces more bytes than arrived.
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    /// Only whitespace (a keep-alive, RFC 5626 §3.5.1): not an error worth answering.
    #[error("keep-alive")]
    KeepAlive,
}

/// A header the caller needed is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("missing or malformed {0} header")]
pub struct HeaderMissing(pub &'static str);

/// A parsed SIP request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method from the request line.
    pub method: Method,
    /// The Request-URI; `None` when it is not a `sip:`/`sips:` URI (e.g. `tel:`), which
    /// a UAS answers with 416 (RFC 3261 §8.2.2.1).
    pub uri: Option<SipUri>,
    /// All headers, raw until asked for.
    pub headers: Headers,
    /// The body (exactly Content-Length bytes when that header is present).
    pub body: Bytes,
}

/// A parsed SIP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// All headers.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// A request or a response.
#[derive(Debug, Clone)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Parses one complete message (datagram semantics: a missing Content-Length means "the rest").
pub fn parse(data: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if data.len() > limits.max_size {
        return Err(ParseError::TooLarge);
    }
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::KeepAlive);
    }
    // RFC 3261 §7.5: implementations should ignore empty lines before the start line.
    let skip = data
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(data.len());
    let data = data.slice(skip..);

    let mut parser = PullParser::new(&data, 0);
    let mut lines: Vec<&[u8]> = Vec::new();
    for line in parser.by_ref() {
        let line = line.map_err(|_| ParseError::Incomplete)?;
        if lines.len() > limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        lines.push(line);
    }
    let head_end = parser.head_end();
    if head_end == parser.progress() && !data[head_end..].is_empty() {
        // The iterator stopped without finding the blank line.
        return Err(ParseError::Incomplete);
    }
    let (first, rest) = lines.split_first().ok_or(ParseError::BadStartLine)?;

    let first = std::str::from_utf8(first).map_err(|_| ParseError::NotUtf8)?;
    let start = match MessageLine::parse(&data)(first) {
        Ok((remaining, line)) if remaining.trim().is_empty() => Some(line),
        _ => None,
    };
    let foreign_method = match start {
        Some(_) => None,
        None => Some(foreign_uri_request(first).ok_or(ParseError::BadStartLine)?),
    };

    let mut headers = Headers::with_capacity(rest.len());
    for raw in rest {
        let text = std::str::from_utf8(raw).map_err(|_| ParseError::NotUtf8)?;
        match Line::parse(&data, text) {
            Ok((_, line)) if !line.name.as_print_str().is_empty() => {
                headers.insert(line.name, line.value);
            }
            _ => return Err(ParseError::BadHeaderLine),
        }
    }

    let available = data.len().saturating_sub(head_end);
    // Two different Content-Length values (RFC 4475 §3.3.9, mcl01): no way to know
    // where the body ends, so the message is refused.
    let mut lengths = headers
        .get_raw(&Name::CONTENT_LENGTH)
        .map(|v| v.as_str().trim());
    if let Some(first) = lengths.next() {
        if lengths.any(|other| other != first) {
            return Err(ParseError::BadContentLength);
        }
    }
    let body = match headers.get_raw(&Name::CONTENT_LENGTH).next() {
        Some(v) => {
            let len: usize = v
                .as_str()
                .trim()
                .parse()
                .map_err(|_| ParseError::BadContentLength)?;
            if len > available {
                return Err(ParseError::BodyTruncated);
            }
            data.slice(head_end..head_end + len)
        }
        None => data.slice(head_end..),
    };

    Ok(match (start, foreign_method) {
        (Some(MessageLine::Request(line)), _) => Message::Request(Request {
            method: line.method,
            uri: Some(line.uri),
            headers,
            body,
        }),
        (Some(MessageLine::Response(line)), _) => Message::Response(Response {
            code: line.code.into_u16(),
            headers,
            body,
        }),
        (None, Some(method)) => Message::Request(Request {
            method,
            uri: None,
            headers,
            body,
        }),
        (None, None) => return Err(ParseError::BadStartLine),
    })
}

/// A request line whose URI has another scheme than sip/sips (`INVITE tel:+49... SIP/2.0`):
/// well-formed enough to answer, with 416.
fn foreign_uri_request(line: &str) -> Option<Method> {
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "SIP/2.0" {
        return None;
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c);
    if method.is_empty() || !method.chars().all(token) {
        return None;
    }
    let (scheme, rest) = uri.split_once(':')?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !scheme.eq_ignore_ascii_case("sip")
        && !scheme.eq_ignore_ascii_case("sips");
    (scheme_ok && !rest.is_empty()).then(|| Method::from(method))
}

/// Accessors shared by requests and responses.
pub trait HeaderAccess {
    /// The message's headers.
    fn headers(&self) -> &Headers;

    /// All Via values, top first (several per line allowed).
    fn vias(&self) -> Result<Vec<Via>, HeaderMissing> {
        let vias: Vec<Via> = self
            .headers()
            .get_named()
            .map_err(|_| HeaderMissing("Via"))?;
        if vias.is_empty() {
            return Err(HeaderMissing("Via"));
        }
        Ok(vias)
    }

    /// The top Via.
    fn top_via(&self) -> Result<Via, HeaderMissing> {
        self.vias()?.into_iter().next().ok_or(HeaderMissing("Via"))
    }

    /// Call-ID.
    fn call_id(&self) -> Result<BytesStr, HeaderMissing> {
        let c: CallID = self
            .headers()
            .get_named()
            .map_err(|_| HeaderMissing("Call-ID"))?;
        if c.0.is_empty() {
            return Err(HeaderMissing("Call-ID"));
        }
        Ok(c.0)
    }

    /// CSeq.
    fn cseq(&self) -> Result<CSeq, HeaderMissing> {
        self.headers()
            .get_named()
            .map_err(|_| HeaderMissing("CSeq"))
    }

    /// From.
    fn from(&self) -> Result<FromTo, HeaderMissing> {
        self.headers()
            .get(Name::FROM)
            .map_err(|_| HeaderMissing("From"))
    }

    /// To.
    fn to(&self) -> Result<FromTo, HeaderMissing> {
        self.headers()
            .get(Name::TO)
            .map_err(|_| HeaderMissing("To"))
    }

    /// Max-Forwards, `None` when absent.
    fn max_forwards(&self) -> Result<Option<u8>, HeaderMissing> {
        match self.headers().try_get_named::<MaxForwards>() {
            None => Ok(None),
            Some(Ok(m)) => Ok(Some(m.0)),
            Some(Err(_)) => Err(HeaderMissing("Max-Forwards")),
        }
    }

    /// The first Contact URI, if any.
    fn contact(&self) -> Option<SipUri> {
        let c: Vec<Contact> = self.headers().get_named().ok()?;
        c.into_iter().next().map(|c| c.uri.uri)
    }

    /// Record-Route entries, printed, in message order.
    fn record_route(&self) -> Vec<String> {
        let r: Vec<Routing> = self.headers().get(Name::RECORD_ROUTE).unwrap_or_default();
        r.iter()
            .map(|r| r.print_ctx(PrintCtx::default()).to_string())
            .collect()
    }

    /// One raw header value (first occurrence).
    fn raw(&self, name: &Name) -> Option<&str> {
        self.headers().get_raw(name).next().map(|v| v.as_str())
    }
}

impl HeaderAccess for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}

impl HeaderAccess for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}

/// The standard reason phrase for the codes this bridge sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The top Via with `received` and `rport` filled in (RFC 3261 §18.2.1, RFC 3581 §4).
pub fn stamped_top_via(via: &Via, source: SocketAddr) -> Via {
    let mut via = via.clone();
    let has_rport = via.params.get("rport").is_some();
    let sent_by_ip = via.sent_by.ip();
    if has_rport || sent_by_ip != Some(source.ip()) {
        via.params
            .push_or_edit("received", BytesStr::from(source.ip().to_string()));
    }
    if has_rport {
        via.params
            .push_or_edit("rport", BytesStr::from(source.port().to_string()));
    }
    via
}

/// Where a response to a request from `source` goes (RFC 3261 §18.2.2, RFC 3581 §4):
/// on a stream, back where it came from (the same connection); over UDP, to the source
/// port when rport was asked for, else to the sent-by port.
pub fn response_destination(
    top_via: &Via,
    source: SocketAddr,
    transport: super::transport::Transport,
) -> SocketAddr {
    if transport.is_reliable() || top_via.params.get("rport").is_some() {
        source
    } else {
        SocketAddr::new(source.ip(), top_via.sent_by.port.unwrap_or(5060))
    }
}

/// Builds a response to `req`; `to_tag` is added to To when the request had none.
///
/// Via, From, Call-ID and CSeq are copied as RFC 3261 §8.2.6.2 requires; the top Via
/// gets `received`/`rport`. The caller decides which extra headers (Contact, Allow,
/// Content-Type) a response carries.
pub fn build_response(
    req: &Request,
    source: SocketAddr,
    code: u16,
    to_tag: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<Vec<u8>, HeaderMissing> {
    // Only Via is indispensable (it says where the response goes); the others are
    // copied when present so that even a 400 for a request missing one can be sent.
    let vias = req.vias()?;
    let has_to_tag = req.to().map(|t| t.tag.is_some()).unwrap_or(false);

    let mut out = String::with_capacity(512 + body.map_or(0, |b| b.1.len()));
    let _ = write!(out, "SIP/2.0 {} {}\r\n", code, reason_phrase(code));
    for (i, via) in vias.iter().enumerate() {
        let via = if i == 0 {
            stamped_top_via(via, source)
        } else {
            via.clone()
        };
        let _ = write!(out, "Via: {}\r\n", via.print_ctx(PrintCtx::default()));
    }
    if let Some(from) = req.raw(&Name::FROM) {
        let _ = write!(out, "From: {from}\r\n");
    }
    if let Some(to) = req.raw(&Name::TO) {
        match (has_to_tag, to_tag) {
            (false, Some(tag)) if code > 100 => {
                let _ = write!(out, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(out, "To: {to}\r\n");
            }
        }
    }
    if let Some(call_id) = req.raw(&Name::CALL_ID) {
        let _ = write!(out, "Call-ID: {call_id}\r\n");
    }
    if let Some(cseq) = req.raw(&Name::CSEQ) {
        let _ = write!(out, "CSeq: {cseq}\r\n");
    }
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    // No Server header: it tells scanners what we are and costs bytes.
    let mut bytes = match body {
        Some((content_type, body)) => {
            let _ = write!(
                out,
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let mut b = out.into_bytes();
            b.extend_from_slice(body);
            b
        }
        None => {
            out.push_str("Content-Length: 0\r\n\r\n");
            out.into_bytes()
        }
    };
    bytes.shrink_to_fit();
    Ok(bytes)
}

/// Draws a random token for tags and branches (RFC 3261 §19.3: at least 32 bits of randomness).
pub fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse(Bytes::from(text.replace('\n', "\r\n")), &Limits::default()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("expected a request"),
        }
    }

    const INVITE: &str = "INVITE sip:conference@127.0.0.1 SIP/2.0\n\
v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother\n\
Max-Forwards: 70\n\
t: <sip:conference@127.0.0.1>\n\
f: \"Alice\" <sip:alice@127.0.0.1>;tag=1928301774\n\
i: a84b4c76e66710@127.0.0.1\n\
CSeq: 314159 INVITE\n\
m: <sip:alice@127.0.0.1:5070>\n\
c: application/sdp\n\
l: 4\n\
\n\
v=0\n";

    #[test]
    fn compact_headers_and_multi_via() {
        let r = req(INVITE);
        assert_eq!(r.method, Method::INVITE);
        let vias = r.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(
            vias[0].params.get_val("branch").unwrap().as_str(),
            "z9hG4bK776asdhds"
        );
        assert_eq!(r.call_id().unwrap().as_str(), "a84b4c76e66710@127.0.0.1");
        assert_eq!(r.cseq().unwrap().cseq, 314159);
        assert_eq!(r.from().unwrap().tag.unwrap().as_str(), "1928301774");
        assert!(r.to().unwrap().tag.is_none());
        assert_eq!(r.max_forwards().unwrap(), Some(70));
        assert!(r.contact().is_some());
        // Content-Length 4 of the 5 bytes that follow ("v=0\r\n").
        assert_eq!(&r.body[..], b"v=0\r");
    }

    #[test]
    fn limits_are_checked_before_parsing() {
        let big = Bytes::from(vec![b'a'; 20_000]);
        assert_eq!(
            parse(big, &Limits::default()).unwrap_err(),
            ParseError::TooLarge
        );
        let mut many = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..200 {
            many.push_str(&format!("X-H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse(Bytes::from(many), &Limits::default()).unwrap_err(),
            ParseError::TooManyHeaders
        );
    }

    #[test]
    fn content_length_longer_than_body_is_refused() {
        let text = INVITE.replace("l: 4", "l: 400").replace('\n', "\r\n");
        assert_eq!(
            parse(Bytes::from(text), &Limits::default()).unwrap_err(),
            ParseError::BodyTruncated
        );
        let text = INVITE.replace("l: 4", "l: four").replace('\n', "\r\n");
        assert_eq!(
            parse(Bytes::from(text), &Limits::default()).unwrap_err(),
            ParseError::BadContentLength
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in [
            &b"\r\n\r\n"[..],
            b"hello",
            b"INVITE\r\n\r\n",
            b"SIP/2.0 abc\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nVia: \xff\xfe\r\n\r\n",
            b"\x00\x01\x02\x03",
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP",
        ] {
            assert!(parse(Bytes::copy_from_slice(g), &Limits::default()).is_err());
        }
    }

    #[test]
    fn malformed_headers_give_typed_errors() {
        let r =
            req("OPTIONS sip:a@127.0.0.1 SIP/2.0\nVia: garbage\nCSeq: x\nMax-Forwards: lots\n\n");
        assert_eq!(r.vias().unwrap_err(), HeaderMissing("Via"));
        assert_eq!(r.cseq().unwrap_err(), HeaderMissing("CSeq"));
        assert_eq!(r.call_id().unwrap_err(), HeaderMissing("Call-ID"));
        assert_eq!(r.max_forwards().unwrap_err(), HeaderMissing("Max-Forwards"));
    }

    #[test]
    fn response_copies_headers_and_stamps_via() {
        let r = req(INVITE);
        let src: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let bytes = build_response(
            &r,
            src,
            200,
            Some("abc"),
            &[("Contact", "<sip:x@y>")],
            Some(("application/sdp", b"v=0\r\n")),
        )
        .unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains("received=127.0.0.5"), "{text}");
        assert!(text.contains("rport=40000"), "{text}");
        assert!(text.contains("branch=z9hG4bKother"), "{text}");
        assert!(text.contains(";tag=abc\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n\r\nv=0\r\n"), "{text}");
        // What we build, we can parse.
        match parse(Bytes::from(bytes), &Limits::default()).unwrap() {
            Message::Response(resp) => {
                assert_eq!(resp.code, 200);
                assert_eq!(resp.to().unwrap().tag.unwrap().as_str(), "abc");
                assert_eq!(resp.cseq().unwrap().cseq, 314159);
            }
            Message::Request(_) => panic!("expected response"),
        }
        assert_eq!(
            response_destination(
                &r.top_via().unwrap(),
                src,
                crate::sip::transport::Transport::Udp
            ),
            src
        );
    }

    #[test]
    fn leading_blank_lines_and_keepalives() {
        let r = parse(
            Bytes::from(format!("\r\n\r\n{}", INVITE.replace('\n', "\r\n"))),
            &Limits::default(),
        );
        assert!(r.is_ok());
        assert_eq!(
            parse(Bytes::from_static(b"\r\n\r\n"), &Limits::default()).unwrap_err(),
            ParseError::KeepAlive
        );
    }
}
