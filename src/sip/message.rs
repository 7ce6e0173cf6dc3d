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
use ezk_sip_types::header::DecodeValues;
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::{AppendCtx, PrintCtx};
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Headers, Method, Name};
use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddr};

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
    /// False when the request line names another SIP version than 2.0 (`SIP/7.0`): such a
    /// request is read only far enough to answer it with 505 (RFC 4475 §3.1.2.16).
    pub version_supported: bool,
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
    let (start, version_supported) = start_line(&data, first)?;

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

    Ok(match start {
        StartLine::Parsed(MessageLine::Request(line)) => Message::Request(Request {
            method: line.method,
            uri: Some(line.uri),
            headers,
            body,
            version_supported,
        }),
        StartLine::Parsed(MessageLine::Response(line)) => Message::Response(Response {
            code: line.code.into_u16(),
            headers,
            body,
        }),
        StartLine::ForeignUri(method) => Message::Request(Request {
            method,
            uri: None,
            headers,
            body,
            version_supported,
        }),
    })
}

/// What the first line of a message turned out to be.
enum StartLine {
    /// A request or status line `ezk-sip-types` understood.
    Parsed(MessageLine),
    /// A request whose Request-URI has a scheme other than sip/sips.
    ForeignUri(Method),
}

/// Parses the start line, and says whether it names SIP/2.0.
///
/// When the crate refuses the line as written, one second attempt is made on a tolerant
/// copy (see [`tolerant_start_line`]); anything the crate refuses in both forms stays a
/// [`ParseError::BadStartLine`].
fn start_line(data: &Bytes, first: &str) -> Result<(StartLine, bool), ParseError> {
    if let Ok((remaining, line)) = MessageLine::parse(data)(first) {
        if remaining.trim().is_empty() {
            return Ok((StartLine::Parsed(line), true));
        }
    }
    if let Some(method) = foreign_uri_request(first) {
        return Ok((StartLine::ForeignUri(method), true));
    }
    let (copy, version_supported) = tolerant_start_line(first).ok_or(ParseError::BadStartLine)?;
    // The crate's values borrow from the buffer they were parsed from: give the copy one.
    let copy = Bytes::from(copy);
    let text = std::str::from_utf8(&copy).map_err(|_| ParseError::NotUtf8)?;
    let parsed = match MessageLine::parse(&copy)(text) {
        Ok((remaining, line @ MessageLine::Request(_))) if remaining.trim().is_empty() => {
            Some(line)
        }
        _ => None,
    };
    match parsed {
        Some(line) => Ok((StartLine::Parsed(line), version_supported)),
        None => foreign_uri_request(text)
            .map(|m| (StartLine::ForeignUri(m), version_supported))
            .ok_or(ParseError::BadStartLine),
    }
}

/// A copy of a request line the crate refused, with the two forms the RFCs call
/// acceptable rewritten; `None` when neither occurs. The flag is false when the version
/// was rewritten.
///
/// - Another version (`OPTIONS sip:a@b SIP/7.0`): the crate knows only `SIP/2.0`; the copy
///   says `SIP/2.0` so that the request can be read far enough to answer 505 (RFC 4475
///   §3.1.2.16). [`Request::version_supported`] carries the truth.
/// - An IPv6 reference with three colons before an embedded IPv4 address
///   (`[2001:db8:::192.0.2.1]`), which RFC 3261's ABNF allows by mistake; RFC 5118 §4.10
///   says to tolerate it (see [`tolerant_copy`]).
fn tolerant_start_line(line: &str) -> Option<(String, bool)> {
    let (rest, version) = line.trim_end().rsplit_once(' ')?;
    let other_version = is_sip_version(version) && version != "SIP/2.0";
    let rest = match tolerant_copy(rest) {
        Some(copy) => copy,
        None if other_version => rest.to_string(),
        None => return None,
    };
    Some((format!("{rest} SIP/2.0"), !other_version))
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT` (RFC 3261 §25.1; "SIP" in any case).
fn is_sip_version(v: &str) -> bool {
    let Some((name, number)) = v.split_once('/') else {
        return false;
    };
    let Some((major, minor)) = number.split_once('.') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.eq_ignore_ascii_case("SIP") && digits(major) && digits(minor)
}

/// A copy of a header value (or request line) with what `ezk-sip-types` cannot read but
/// RFC 3261 allows rewritten into an equivalent it can; `None` when there is nothing to
/// rewrite. Used only for a second attempt after the crate refused the original, and only
/// to read the fields this bridge needs (tags, URIs); responses copy the original bytes.
///
/// - A quoted-pair inside a quoted string (`"J Rosenberg \\\""`, RFC 4475 §3.1.1.1): the
///   crate ends a quoted string at the first `"`, escaped or not. Each pair becomes the
///   character it stands for, an escaped `"` becomes `'`: the display name changes (this
///   bridge never reads it), and the string ends where RFC 3261 §25.1 says it does.
/// - `:::` inside `[...]`, when `::` there makes a valid IPv6 address (RFC 5118 §4.10).
fn tolerant_copy(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut changed = false;
    let mut chars = value.char_indices();
    let mut in_quotes = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                out.push(c);
            }
            '\\' if in_quotes => {
                changed = true;
                match chars.next() {
                    Some((_, '"')) => out.push('\''),
                    Some((_, escaped)) => out.push(escaped),
                    None => out.push(c),
                }
            }
            '[' if !in_quotes => {
                let Some(len) = value[i..].find(']') else {
                    out.push(c);
                    continue;
                };
                let inside = &value[i + 1..i + len];
                let fixed = inside.replacen(":::", "::", 1);
                if fixed != inside && fixed.parse::<Ipv6Addr>().is_ok() {
                    changed = true;
                    out.push('[');
                    out.push_str(&fixed);
                    out.push(']');
                    // Skip what was just copied: `inside` parsed as an address, so it is
                    // ASCII and its byte length is its length in chars.
                    for _ in 0..len {
                        chars.next();
                    }
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    changed.then_some(out)
}

/// Decodes header `name`; when the crate refuses the values as written (or what it reads
/// is not `usable`: its lists drop values they cannot parse instead of failing), decodes a
/// [`tolerant_copy`] of them instead. `None` when absent or when both attempts fail.
fn decode_tolerant<H: DecodeValues>(
    headers: &Headers,
    name: Name,
    usable: impl Fn(&H) -> bool,
) -> Option<H> {
    if let Ok(h) = headers.get::<H>(name.clone()) {
        if usable(&h) {
            return Some(h);
        }
    }
    let mut copy = Headers::new();
    let mut changed = false;
    for value in headers.get_raw(&name) {
        match tolerant_copy(value.as_str()) {
            Some(v) => {
                changed = true;
                copy.insert(name.clone(), BytesStr::from(v));
            }
            None => copy.insert(name.clone(), value.clone()),
        }
    }
    if !changed {
        return None;
    }
    copy.get::<H>(name).ok().filter(usable)
}

/// Whether a header value has an empty element: nothing between two separators (`;;`,
/// `,,`, `;,`) or after the last one. RFC 3261's grammar has no empty Via parameter or
/// value (§25.1: `via-parm *(COMMA via-parm)`, `via-params *(SEMI via-params)`), but
/// `ezk-sip-types` skips them, which would let RFC 4475 §3.1.2.1 (badinv01) through.
fn has_empty_element(value: &str) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut segment_empty = false;
    for c in value.chars() {
        if in_quotes {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                segment_empty = false;
            }
            ';' | ',' if segment_empty => return true,
            ';' | ',' => segment_empty = true,
            c if c.is_whitespace() => {}
            _ => segment_empty = false,
        }
    }
    segment_empty
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

    /// All Via values, top first (several per line allowed). A Via with an empty
    /// parameter or value (`;;`, `,,`) is malformed (see `has_empty_element`).
    fn vias(&self) -> Result<Vec<Via>, HeaderMissing> {
        if self
            .headers()
            .get_raw(&Name::VIA)
            .any(|v| has_empty_element(v.as_str()))
        {
            return Err(HeaderMissing("Via"));
        }
        let vias: Vec<Via> = self
            .headers()
            .get_named()
            .map_err(|_| HeaderMissing("Via"))?;
        if vias.is_empty() {
            return Err(HeaderMissing("Via"));
        }
        // The crate reads some garbage (a control character in a parameter) as an empty
        // parameter, which our responses would then print as `;;` and which we refuse
        // on the way in: what we accept must print back as a Via we accept (fuzz finding).
        if vias
            .iter()
            .any(|v| has_empty_element(&v.print_ctx(PrintCtx::default()).to_string()))
        {
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

    /// From (read tolerantly: escaped quotes in the display name, RFC 5118 §4.10 IPv6).
    fn from(&self) -> Result<FromTo, HeaderMissing> {
        decode_tolerant(self.headers(), Name::FROM, |_| true).ok_or(HeaderMissing("From"))
    }

    /// To (read as tolerantly as From).
    fn to(&self) -> Result<FromTo, HeaderMissing> {
        decode_tolerant(self.headers(), Name::TO, |_| true).ok_or(HeaderMissing("To"))
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
        let c: Vec<Contact> =
            decode_tolerant(self.headers(), Name::CONTACT, |c: &Vec<Contact>| {
                !c.is_empty()
            })?;
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
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
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
    let via_lines: Vec<String> = vias
        .iter()
        .enumerate()
        .map(|(i, via)| {
            let via = if i == 0 {
                stamped_top_via(via, source)
            } else {
                via.clone()
            };
            via.print_ctx(PrintCtx::default()).to_string()
        })
        .collect();
    Ok(response_with_vias(
        req,
        &via_lines,
        code,
        to_tag,
        extra_headers,
        body,
    ))
}

/// The 505 for a request of another SIP version (RFC 3261 §21.5.6, RFC 4475 §3.1.2.16),
/// and where it goes; `None` when there is no Via to answer on.
///
/// Its Vias name the other version, which the crate cannot read: they are copied as
/// written, and the top one is read for the destination only after its version has been
/// rewritten to 2.0.
pub fn build_version_not_supported(
    req: &Request,
    source: SocketAddr,
    transport: super::transport::Transport,
) -> Option<(SocketAddr, Vec<u8>)> {
    let via_lines: Vec<String> = req
        .headers
        .get_raw(&Name::VIA)
        .map(|v| v.as_str().trim().to_string())
        .collect();
    let (protocol, rest) = via_lines.first()?.split_once('/')?;
    let (_version, rest) = rest.split_once('/')?;
    if !protocol.trim().eq_ignore_ascii_case("SIP") {
        return None;
    }
    let mut top = Headers::new();
    top.insert(
        Name::VIA,
        BytesStr::from(format!("SIP/2.0/{}", rest.trim_start())),
    );
    let via = top.get_named::<Vec<Via>>().ok()?.into_iter().next()?;
    let dest = response_destination(&via, source, transport);
    let tag = random_token();
    Some((
        dest,
        response_with_vias(req, &via_lines, 505, Some(&tag), &[], None),
    ))
}

/// A response to `req` with these Via values (already printed), the request's From, To
/// (plus `to_tag` when it had none), Call-ID and CSeq, `extra_headers` and `body`.
fn response_with_vias(
    req: &Request,
    via_lines: &[String],
    code: u16,
    to_tag: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let has_to_tag = req.to().map(|t| t.tag.is_some()).unwrap_or(false);
    let mut out = String::with_capacity(512 + body.map_or(0, |b| b.1.len()));
    let _ = write!(out, "SIP/2.0 {} {}\r\n", code, reason_phrase(code));
    for via in via_lines {
        let _ = write!(out, "Via: {via}\r\n");
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
    bytes
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

    #[test]
    fn quoted_pairs_in_display_names_are_read() {
        // RFC 4475 §3.1.1.1: `\\` and `\"` inside a quoted display name.
        let r = req("OPTIONS sip:a@127.0.0.1 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKq\n\
From: \"J Rosenberg \\\\\\\"\" <sip:j@example.com>;tag=98asjd8\n\
To: \"a \\\"b\\\" c\" <sip:a@127.0.0.1>\n\
Contact: \"x\\\"\" <sip:x@127.0.0.1:5070>\n\
Call-ID: q@x\nCSeq: 1 OPTIONS\nMax-Forwards: 70\n\n");
        assert_eq!(r.from().unwrap().tag.unwrap().as_str(), "98asjd8");
        assert!(r.to().unwrap().tag.is_none());
        assert_eq!(r.contact().unwrap().host_port.port, Some(5070));
        // The raw value, which responses copy, is untouched.
        assert!(r
            .raw(&Name::FROM)
            .unwrap()
            .starts_with("\"J Rosenberg \\\\\\\"\""));
    }

    #[test]
    fn tolerant_copy_rewrites_only_what_it_must() {
        assert_eq!(tolerant_copy("\"plain\" <sip:a@b>;tag=1"), None);
        assert_eq!(tolerant_copy("<sip:a@[2001:db8::1]>"), None);
        assert_eq!(
            tolerant_copy("\"a\\\"b\\\\\" <sip:a@b>").as_deref(),
            Some("\"a'b\\\" <sip:a@b>")
        );
        assert_eq!(
            tolerant_copy("sip:user@[2001:db8:::192.0.2.1]").as_deref(),
            Some("sip:user@[2001:db8::192.0.2.1]")
        );
        // Three colons that do not make an address once folded stay as they are.
        assert_eq!(tolerant_copy("sip:user@[2001:::db8:::1]"), None);
        assert_eq!(tolerant_copy("sip:user@[:::"), None);
        // A backslash outside quotes is no quoted-pair.
        assert_eq!(tolerant_copy("a\\\"b"), None);
    }

    #[test]
    fn rfc5118_three_colon_reference_parses() {
        let r = req("OPTIONS sip:user@[2001:db8:::192.0.2.1] SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK3c\n\
To: sip:user@[2001:db8:::192.0.2.1]\nFrom: sip:u@example.com;tag=1\n\
Call-ID: c@x\nCSeq: 1 OPTIONS\nMax-Forwards: 70\n\n");
        assert!(r.version_supported);
        assert_eq!(
            r.uri.as_ref().unwrap().host_port.host.to_string(),
            "[2001:db8::c000:201]"
        );
        assert!(r.to().is_ok());
        // A request line that is broken in another way is still refused.
        let bad = "OPTIONS sip:user@[2001:db8:::192.0.2.1 SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(
            parse(Bytes::from(bad), &Limits::default()).unwrap_err(),
            ParseError::BadStartLine
        );
    }

    #[test]
    fn other_sip_versions_are_read_far_enough_for_a_505() {
        let text = "OPTIONS sip:t@example.org SIP/7.0\n\
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\n\
From: A <sip:a@example.com>;tag=q\nTo: T <sip:t@example.org>\n\
Call-ID: v@c\nCSeq: 1 OPTIONS\nl: 0\n\n";
        let r = req(text);
        assert!(!r.version_supported);
        assert_eq!(r.method, Method::OPTIONS);
        let src: SocketAddr = "192.0.2.9:5999".parse().unwrap();
        let (dest, bytes) =
            build_version_not_supported(&r, src, crate::sip::transport::Transport::Udp).unwrap();
        // No rport: the sent-by port, 5060 by default (RFC 3261 §18.2.2).
        assert_eq!(dest, "192.0.2.9:5060".parse::<SocketAddr>().unwrap());
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("SIP/2.0 505 Version Not Supported\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nVia: SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nTo: T <sip:t@example.org>;tag="),
            "{text}"
        );
        // Only SIP/<digits>.<digits> counts as a version; SIP/2.0 itself parses as usual.
        for line in [
            "OPTIONS sip:a@b HTTP/1.1",
            "OPTIONS sip:a@b SIP/x.0",
            "OPTIONS sip:a@b SIP/7",
        ] {
            let m = format!("{line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKv\r\n\r\n");
            assert_eq!(
                parse(Bytes::from(m), &Limits::default()).unwrap_err(),
                ParseError::BadStartLine,
                "{line}"
            );
        }
        // Nothing to answer on: no 505.
        let r = req("OPTIONS sip:a@b SIP/3.0\nFrom: <sip:a@b>;tag=1\n\n");
        assert!(
            build_version_not_supported(&r, src, crate::sip::transport::Transport::Udp).is_none()
        );
    }

    #[test]
    fn empty_via_parameters_are_malformed() {
        for via in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKa;",
            "SIP/2.0/UDP h;branch=z9hG4bKa,",
            "SIP/2.0/UDP h;branch=z9hG4bKa, ,SIP/2.0/UDP i;branch=z9hG4bKb",
            // The crate reads the NULs as an empty parameter (fuzz finding).
            "SIP/2.0/TCP [2001:db8::9]:5060;\u{0}\u{0}\u{0}560;0branch=z9hG4bKv6",
        ] {
            let r = req(&format!("OPTIONS sip:a@b SIP/2.0\nVia: {via}\n\n"));
            assert_eq!(r.vias().unwrap_err(), HeaderMissing("Via"), "{via}");
        }
        for via in [
            "SIP/2.0/UDP h;branch=z9hG4bKa;rport",
            "SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP/2.0/UDP 192.168.255.111   ; branch= z9hG4bK30239",
            "SIP/2.0/UDP [2001:db8::10]:5070;branch=z9hG4bKa;x=\";;,\"",
        ] {
            let r = req(&format!("OPTIONS sip:a@b SIP/2.0\nVia: {via}\n\n"));
            assert!(r.vias().is_ok(), "{via}");
        }
    }
}
