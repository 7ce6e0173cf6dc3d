//! SDP (RFC 8866) parsing and offer/answer (RFC 3264) for one audio stream.
//!
//! [`SessionDescription::parse`] reads the parts of an offer this bridge acts on;
//! [`negotiate`] picks the stream, codec and telephone-event payload type and reports
//! the direction; [`Answer::render`] writes the answer. Streams we do not take are
//! answered with port 0 in the same order (RFC 3264 §6).

use crate::config::{Codec, Encryption};
use crate::media::srtp::CryptoAttribute;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Why an SDP body could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// Not UTF-8 or a line without `x=`.
    #[error("malformed SDP")]
    Malformed,
    /// No `m=` line.
    #[error("no media stream")]
    NoMedia,
    /// An `m=` line that cannot be read.
    #[error("malformed m= line")]
    BadMedia,
    /// No connection address for a stream we would take.
    #[error("no usable connection address")]
    NoConnection,
    /// No audio stream with a codec and profile we speak (488).
    #[error("no common codec")]
    NoCommonCodec,
    /// The policy requires SRTP and the offer has none we can use (488).
    #[error("SRTP required")]
    EncryptionRequired,
    /// SRTP was offered with SDES keys over an unencrypted signalling hop (488).
    #[error("SDES keys need SIP over TLS")]
    SdesNeedsTls,
    /// Only SRTP was offered and this bridge is configured for plain RTP (488).
    #[error("SRTP is turned off here")]
    SrtpOff,
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The sender of the description only sends.
    SendOnly,
    /// The sender of the description only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// The direction an answer takes to this offered direction (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the side that wrote this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, ...
    pub kind: String,
    /// Port (0: stream disabled).
    pub port: u16,
    /// Transport profile, e.g. `RTP/AVP`.
    pub proto: String,
    /// The format list as written.
    pub formats: Vec<String>,
    /// `a=rtpmap` entries: payload type, encoding name, clock rate.
    pub rtpmaps: Vec<(u8, String, u32)>,
    /// Media-level connection address.
    pub connection: Option<IpAddr>,
    /// Direction (media-level, else session-level, else sendrecv).
    pub direction: Direction,
    /// `a=ptime`, if given.
    pub ptime: Option<u32>,
    /// `a=crypto` values (after `crypto:`), in offer order (RFC 4568).
    pub crypto: Vec<String>,
    /// `a=fmtp` entries: payload type and the parameter string.
    pub fmtps: Vec<(u8, String)>,
    /// `a=extmap` entries (RFC 8285) the offerer will send: ID and extension URI.
    pub extmaps: Vec<(u8, String)>,
    /// `a=zrtp-hash` value (after `zrtp-hash:`): the offerer speaks ZRTP and binds its
    /// Hello to this signalling (RFC 6189 §8).
    pub zrtp_hash: Option<String>,
}

/// The parts of a session description this bridge uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Session-level connection address.
    pub connection: Option<IpAddr>,
    /// Media sections in order.
    pub media: Vec<Media>,
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut it = value.split_whitespace();
    let (net, _addrtype, addr) = (it.next()?, it.next()?, it.next()?);
    if net != "IN" {
        return None;
    }
    addr.split('/').next()?.parse().ok()
}

fn parse_direction(attr: &str) -> Option<Direction> {
    Some(match attr {
        "sendrecv" => Direction::SendRecv,
        "sendonly" => Direction::SendOnly,
        "recvonly" => Direction::RecvOnly,
        "inactive" => Direction::Inactive,
        _ => return None,
    })
}

impl SessionDescription {
    /// Parses an SDP body; unknown lines are ignored.
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed)?;
        let mut connection = None;
        let mut session_direction = None;
        let mut media: Vec<Media> = Vec::new();
        let mut media_direction: Vec<Option<Direction>> = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or(SdpError::Malformed)?;
            if key.len() != 1 {
                return Err(SdpError::Malformed);
            }
            let current = media.last_mut();
            match (key, current) {
                ("m", _) => {
                    let mut it = value.split_whitespace();
                    let kind = it.next().ok_or(SdpError::BadMedia)?.to_string();
                    let port_field = it.next().ok_or(SdpError::BadMedia)?;
                    // Port may carry "/count" (RFC 8866 §5.14).
                    let port = port_field
                        .split('/')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or(SdpError::BadMedia)?;
                    let proto = it.next().ok_or(SdpError::BadMedia)?.to_string();
                    let formats: Vec<String> = it.map(str::to_string).collect();
                    if media.len() >= 16 {
                        return Err(SdpError::BadMedia);
                    }
                    media.push(Media {
                        kind,
                        port,
                        proto,
                        formats,
                        rtpmaps: Vec::new(),
                        fmtps: Vec::new(),
                        extmaps: Vec::new(),
                        connection: None,
                        direction: Direction::SendRecv,
                        ptime: None,
                        crypto: Vec::new(),
                        zrtp_hash: None,
                    });
                    media_direction.push(None);
                }
                ("c", None) => connection = parse_connection(value),
                ("c", Some(m)) => m.connection = parse_connection(value),
                ("a", current) => {
                    let (name, arg) = match value.split_once(':') {
                        Some((n, a)) => (n, Some(a)),
                        None => (value, None),
                    };
                    if let Some(d) = parse_direction(name) {
                        match current {
                            Some(_) => {
                                if let Some(last) = media_direction.last_mut() {
                                    *last = Some(d);
                                }
                            }
                            None => session_direction = Some(d),
                        }
                        continue;
                    }
                    let Some(m) = current else { continue };
                    match (name, arg) {
                        ("rtpmap", Some(arg)) => {
                            if let Some(map) = parse_rtpmap(arg) {
                                if m.rtpmaps.len() < 64 {
                                    m.rtpmaps.push(map);
                                }
                            }
                        }
                        ("ptime", Some(arg)) => m.ptime = arg.trim().parse().ok(),
                        ("extmap", Some(arg)) if m.extmaps.len() < 16 => {
                            if let Some(map) = parse_extmap(arg) {
                                m.extmaps.push(map);
                            }
                        }
                        ("fmtp", Some(arg)) if m.fmtps.len() < 64 => {
                            if let Some((pt, params)) = arg.trim().split_once(' ') {
                                if let Ok(pt) = pt.parse::<u8>() {
                                    // Bounded: no codec we speak needs a long fmtp.
                                    let params = params.trim();
                                    if pt <= 127 && params.len() <= 256 {
                                        m.fmtps.push((pt, params.to_string()));
                                    }
                                }
                            }
                        }
                        // Bounded: a phone offers a handful of suites.
                        ("crypto", Some(arg)) if m.crypto.len() < 16 => {
                            m.crypto.push(arg.trim().to_string())
                        }
                        // "1.10 " and 64 hex digits; anything much longer is not one.
                        ("zrtp-hash", Some(arg)) if arg.trim().len() <= 100 => {
                            m.zrtp_hash = Some(arg.trim().to_string())
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if media.is_empty() {
            return Err(SdpError::NoMedia);
        }
        for (m, d) in media.iter_mut().zip(media_direction) {
            m.direction = d.or(session_direction).unwrap_or(Direction::SendRecv);
        }
        Ok(SessionDescription { connection, media })
    }
}

/// `a=extmap:<id>[/<direction>] <URI> [<attributes>]` (RFC 8285 §8), kept only when
/// the offerer will send the extension (not `recvonly` or `inactive`).
fn parse_extmap(arg: &str) -> Option<(u8, String)> {
    let mut it = arg.split_whitespace();
    let first = it.next()?;
    let (id, direction) = match first.split_once('/') {
        Some((id, direction)) => (id, Some(direction)),
        None => (first, None),
    };
    let id: u8 = id.parse().ok()?;
    if id == 0 || matches!(direction, Some("recvonly" | "inactive")) {
        return None;
    }
    let uri = it.next()?;
    (uri.len() <= 128).then(|| (id, uri.to_string()))
}

fn parse_rtpmap(arg: &str) -> Option<(u8, String, u32)> {
    // a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]
    let (pt, rest) = arg.trim().split_once(' ')?;
    let pt: u8 = pt.parse().ok()?;
    if pt > 127 {
        return None;
    }
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.to_ascii_lowercase();
    let rate: u32 = parts.next()?.parse().ok()?;
    Some((pt, name, rate))
}

impl Codec {
    /// Static RTP payload type (RFC 3551 Table 4); `None` for a dynamic one (Opus).
    pub fn payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// Encoding name as in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// RTP clock rate: 8000 for G.722 although it samples at 16 kHz (RFC 3551 §4.5.2),
    /// 48000 for Opus whatever rate it codes (RFC 7587 §4.1).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::Opus => crate::media::opus::RTP_CLOCK_RATE,
        }
    }

    /// The `a=rtpmap` value after the payload type, e.g. `opus/48000/2` (RFC 7587 §7).
    pub fn rtpmap(self) -> String {
        match self {
            Codec::Opus => crate::media::opus::RTPMAP_ENCODING.to_string(),
            c => format!("{}/{}", c.encoding_name(), c.clock_rate()),
        }
    }
}

/// What negotiation decided for the one audio stream we take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the accepted `m=` section.
    pub media_index: usize,
    /// The codec.
    pub codec: Codec,
    /// Payload type the offer used for it.
    pub payload_type: u8,
    /// telephone-event payload type, if offered (at the codec's clock rate if offered
    /// so, else at any rate).
    pub telephone_event: Option<u8>,
    /// The clock rate the offer gave telephone-event.
    pub telephone_event_rate: u32,
    /// The offer's fmtp parameters for the chosen codec (Opus reads them).
    pub fmtp: Option<String>,
    /// The header extension ID of RFC 6464 audio levels, if the offerer sends them.
    pub audio_level_id: Option<u8>,
    /// Where the offerer wants our RTP (None: it does not want any yet).
    pub remote_rtp: Option<std::net::SocketAddr>,
    /// The offerer's direction.
    pub offered_direction: Direction,
    /// The transport profile, answered as offered (`RTP/AVP`, `RTP/SAVP`, `RTP/SAVPF`).
    pub proto: String,
    /// The offerer's SDES key we take (the strongest usable suite), if SRTP.
    pub crypto: Option<CryptoAttribute>,
    /// The offerer's `a=zrtp-hash`, if it speaks ZRTP.
    pub zrtp_hash: Option<String>,
}

/// What the media policy allows for one offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityPolicy {
    /// required / preferred / off.
    pub encryption: Encryption,
    /// Whether SDES keys may be used: the offer came over TLS, or the operator allowed
    /// keys over an unencrypted hop.
    pub sdes_allowed: bool,
}

impl SecurityPolicy {
    /// Plain RTP only.
    pub const PLAIN: SecurityPolicy = SecurityPolicy {
        encryption: Encryption::Off,
        sdes_allowed: false,
    };
}

/// Picks the first audio stream the policy allows with a codec from `codecs`.
///
/// Our codec order (the config's) wins among those the offer lists. With SRTP,
/// the strongest suite among the offer's usable `a=crypto` lines is taken. `RTP/AVP`
/// with `a=crypto` (best-effort SRTP, as some PBXs offer it) counts as SRTP.
pub fn negotiate(
    offer: &SessionDescription,
    codecs: &[Codec],
    policy: &SecurityPolicy,
) -> Result<Negotiated, SdpError> {
    // Why no stream fitted, most telling first.
    let mut refusal = SdpError::NoCommonCodec;
    for (i, m) in offer.media.iter().enumerate() {
        let profile_ok = matches!(m.proto.as_str(), "RTP/AVP" | "RTP/SAVP" | "RTP/SAVPF");
        if m.kind != "audio" || m.port == 0 || !profile_ok {
            continue;
        }
        let secure_profile = m.proto != "RTP/AVP";
        let offered: Vec<CryptoAttribute> = m
            .crypto
            .iter()
            .filter_map(|c| CryptoAttribute::parse(c).ok())
            .collect();
        let crypto = match policy.encryption {
            Encryption::Off => {
                if secure_profile {
                    if refusal == SdpError::NoCommonCodec {
                        refusal = SdpError::SrtpOff;
                    }
                    continue;
                }
                None
            }
            Encryption::Required | Encryption::Preferred => {
                let strongest = CryptoAttribute::strongest(offered.iter()).cloned();
                match (strongest, policy.sdes_allowed) {
                    (Some(c), true) => Some(c),
                    (Some(_), false) => {
                        refusal = SdpError::SdesNeedsTls;
                        if secure_profile || policy.encryption == Encryption::Required {
                            continue;
                        }
                        None
                    }
                    (None, _) => {
                        if secure_profile || policy.encryption == Encryption::Required {
                            if refusal == SdpError::NoCommonCodec {
                                refusal = SdpError::EncryptionRequired;
                            }
                            continue;
                        }
                        None
                    }
                }
            }
        };
        // Our preference order wins among what the offer lists (RFC 3264 §6.1 lets the
        // answerer choose): the operator decides whether wideband beats G.711.
        let offered_pts: Vec<u8> = m.formats.iter().filter_map(|f| f.parse().ok()).collect();
        let chosen = codecs.iter().copied().find_map(|c| {
            offered_pts
                .iter()
                .copied()
                .find(|&pt| {
                    match m.rtpmaps.iter().find(|(p, _, _)| *p == pt) {
                        Some((_, name, rate)) => {
                            name.eq_ignore_ascii_case(c.encoding_name()) && *rate == c.clock_rate()
                        }
                        // RFC 3551 static types need no rtpmap.
                        None => Some(pt) == c.payload_type(),
                    }
                })
                .map(|pt| (c, pt))
        });
        let Some((codec, payload_type)) = chosen else {
            continue;
        };
        let events: Vec<(u8, u32)> = m
            .rtpmaps
            .iter()
            .filter(|(pt, name, _)| name == "telephone-event" && offered_pts.contains(pt))
            .map(|(pt, _, rate)| (*pt, *rate))
            .collect();
        // Digits at the audio's clock rate when offered (RFC 4733 §2.1), else any.
        let event = events
            .iter()
            .find(|(_, rate)| *rate == codec.clock_rate())
            .or_else(|| events.first())
            .copied();
        let fmtp = m
            .fmtps
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, f)| f.clone());
        let addr = m.connection.or(offer.connection);
        let remote_rtp = match addr {
            Some(ip) if !ip.is_unspecified() => Some(std::net::SocketAddr::new(ip, m.port)),
            // c=0.0.0.0 is the old way of putting a call on hold (RFC 3264 §8.4).
            Some(_) => None,
            None => return Err(SdpError::NoConnection),
        };
        return Ok(Negotiated {
            media_index: i,
            codec,
            payload_type,
            telephone_event: event.map(|(pt, _)| pt),
            telephone_event_rate: event.map_or(8000, |(_, rate)| rate),
            fmtp,
            audio_level_id: m
                .extmaps
                .iter()
                .find(|(_, uri)| uri == crate::media::rtp::AUDIO_LEVEL_URI)
                .map(|(id, _)| *id),
            remote_rtp,
            offered_direction: m.direction,
            proto: m.proto.clone(),
            crypto,
            zrtp_hash: m.zrtp_hash.clone(),
        });
    }
    Err(refusal)
}

/// Our answer for one offer.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// The offer being answered.
    pub offer: &'a SessionDescription,
    /// The negotiation result.
    pub negotiated: &'a Negotiated,
    /// Our RTP address.
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// o= session id.
    pub session_id: u64,
    /// o= version (incremented when the answer changes in a dialog).
    pub version: u64,
    /// Direction we answer with.
    pub direction: Direction,
    /// Our SDES key, when the stream is SRTP.
    pub crypto: Option<&'a CryptoAttribute>,
    /// Our `a=zrtp-hash` (the hash of our ZRTP Hello), when we answer ZRTP.
    pub zrtp_hash: Option<&'a str>,
}

/// An address as SDP writes it after `IN` (RFC 8866 §5.7): `IP4 a.b.c.d` or `IP6 …`.
fn address_spec(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => format!("IP4 {a}"),
        IpAddr::V6(a) => format!("IP6 {a}"),
    }
}

/// Payload type we offer Opus on (dynamic, RFC 3551 §3).
pub const OFFER_OPUS_PT: u8 = 111;
/// Payload types we offer telephone-event on: at 8000 Hz (G.711, G.722) and at
/// 48000 Hz (Opus), so that the answer can keep the one matching its codec.
pub const OFFER_EVENT_PTS: [(u8, u32); 2] = [(101, 8000), (102, 48_000)];

/// Our SDP offer, for an INVITE that came without one (RFC 3264 §5: the offer goes in
/// our 2xx and the answer comes in the ACK): every codec we take, in our order, and
/// telephone-event; `RTP/SAVP` with our key when the stream is to be SRTP.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    /// Codecs, in our order of preference.
    pub codecs: &'a [Codec],
    /// Our RTP address.
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// o= session id.
    pub session_id: u64,
    /// o= version.
    pub version: u64,
    /// Our SDES key, when the stream is to be SRTP.
    pub crypto: Option<&'a CryptoAttribute>,
}

impl Offer<'_> {
    /// Writes the SDP offer.
    pub fn render(&self) -> String {
        let ip = address_spec(self.address);
        let pt = |c: Codec| c.payload_type().unwrap_or(OFFER_OPUS_PT);
        let proto = if self.crypto.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        };
        let mut s = String::with_capacity(400);
        let _ = write!(
            s,
            "v=0\r\no=sotto {} {} IN {ip}\r\ns=sotto\r\nc=IN {ip}\r\nt=0 0\r\nm=audio {} {proto}",
            self.session_id, self.version, self.port
        );
        for c in self.codecs {
            let _ = write!(s, " {}", pt(*c));
        }
        for (te, _) in OFFER_EVENT_PTS {
            let _ = write!(s, " {te}");
        }
        s.push_str("\r\n");
        for c in self.codecs {
            let _ = write!(s, "a=rtpmap:{} {}\r\n", pt(*c), c.rtpmap());
            if *c == Codec::Opus {
                let _ = write!(
                    s,
                    "a=fmtp:{} {}\r\n",
                    OFFER_OPUS_PT,
                    crate::media::opus::OpusFmtp::ours(48_000)
                );
            }
        }
        for (te, rate) in OFFER_EVENT_PTS {
            let _ = write!(
                s,
                "a=rtpmap:{te} telephone-event/{rate}\r\na=fmtp:{te} 0-15\r\n"
            );
        }
        s.push_str("a=ptime:20\r\na=sendrecv\r\n");
        if let Some(c) = self.crypto {
            let _ = write!(s, "a=crypto:{}\r\n", c.render());
        }
        s
    }
}

impl Answer<'_> {
    /// Writes the SDP answer.
    pub fn render(&self) -> String {
        let ip = address_spec(self.address);
        let mut s = String::with_capacity(300);
        let _ = write!(
            s,
            "v=0\r\no=sotto {} {} IN {ip}\r\ns=sotto\r\nc=IN {ip}\r\nt=0 0\r\n",
            self.session_id, self.version
        );
        for (i, m) in self.offer.media.iter().enumerate() {
            if i != self.negotiated.media_index {
                // RFC 3264 §6: a rejected stream keeps its place with port 0.
                let fmt = m.formats.first().map(String::as_str).unwrap_or("0");
                let _ = write!(s, "m={} 0 {} {}\r\n", m.kind, m.proto, fmt);
                continue;
            }
            let n = self.negotiated;
            let _ = write!(s, "m=audio {} {} {}", self.port, n.proto, n.payload_type);
            if let Some(te) = n.telephone_event {
                let _ = write!(s, " {te}");
            }
            s.push_str("\r\n");
            let _ = write!(s, "a=rtpmap:{} {}\r\n", n.payload_type, n.codec.rtpmap());
            if n.codec == Codec::Opus {
                // What we want to receive: mono, up to fullband, FEC welcome (RFC 7587 §6.1).
                let _ = write!(
                    s,
                    "a=fmtp:{} {}\r\n",
                    n.payload_type,
                    crate::media::opus::OpusFmtp::ours(48_000)
                );
            }
            if let Some(te) = n.telephone_event {
                let _ = write!(
                    s,
                    "a=rtpmap:{te} telephone-event/{}\r\na=fmtp:{te} 0-15\r\n",
                    n.telephone_event_rate
                );
            }
            let _ = write!(s, "a=ptime:20\r\na={}\r\n", self.direction.attribute());
            if let Some(id) = n.audio_level_id {
                // We take the levels and send none (RFC 8285 §6: direction as we see it).
                let _ = write!(
                    s,
                    "a=extmap:{id}/recvonly {}\r\n",
                    crate::media::rtp::AUDIO_LEVEL_URI
                );
            }
            if let Some(c) = self.crypto {
                let _ = write!(s, "a=crypto:{}\r\n", c.render());
            }
            if let Some(h) = self.zrtp_hash {
                let _ = write!(s, "a=zrtp-hash:{h}\r\n");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_offer_lists_every_codec_and_reads_back_as_an_offer() {
        use crate::media::srtp::{CryptoAttribute, KeyMaterial, Suite};
        let codecs = [Codec::Opus, Codec::G722, Codec::Pcma, Codec::Pcmu];
        let key = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{}",
            KeyMaterial::generate(Suite::AesCm128HmacSha1_80, &mut rand::rngs::OsRng)
                .to_sdes_inline()
        ))
        .unwrap();
        for crypto in [None, Some(&key)] {
            let text = Offer {
                codecs: &codecs,
                address: "192.0.2.5".parse().unwrap(),
                port: 30_002,
                session_id: 7,
                version: 1,
                crypto,
            }
            .render();
            let sdp = SessionDescription::parse(text.as_bytes()).unwrap();
            assert_eq!(sdp.media.len(), 1);
            let m = &sdp.media[0];
            assert_eq!(m.port, 30_002);
            assert_eq!(
                m.proto,
                if crypto.is_some() {
                    "RTP/SAVP"
                } else {
                    "RTP/AVP"
                }
            );
            assert_eq!(m.formats, ["111", "9", "8", "0", "101", "102"]);
            // A peer answering it with our own rules would pick Opus with its events.
            let policy = SecurityPolicy {
                encryption: if crypto.is_some() {
                    Encryption::Required
                } else {
                    Encryption::Off
                },
                sdes_allowed: true,
            };
            let n = negotiate(&sdp, &codecs, &policy).unwrap();
            assert_eq!((n.codec, n.payload_type), (Codec::Opus, 111));
            assert_eq!(
                (n.telephone_event, n.telephone_event_rate),
                (Some(102), 48_000)
            );
            assert_eq!(n.crypto.is_some(), crypto.is_some());
            let n = negotiate(&sdp, &[Codec::Pcmu], &policy).unwrap();
            assert_eq!(
                (n.codec, n.payload_type, n.telephone_event),
                (Codec::Pcmu, 0, Some(101))
            );
        }
    }

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=video 0 RTP/AVP 31\r\n\
m=audio 49170 RTP/AVP 9 0 8 101\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    /// Our plain-RTP answer on 127.0.0.1:30000, sendrecv.
    fn plain_answer(sdp: &SessionDescription, n: &Negotiated) -> String {
        plain(sdp, n).render()
    }

    #[test]
    fn a_zrtp_hash_is_read_from_the_offer_and_ours_goes_in_the_answer() {
        let hash = "1.10 fe30efd02423cb054e50efd0248742ac7a52c8f91bc2df881ae642c371ba46df";
        let offer = OFFER.replace(
            "a=sendrecv\r\n",
            &format!("a=sendrecv\r\na=zrtp-hash:{hash}\r\n"),
        );
        let sdp = SessionDescription::parse(offer.as_bytes()).unwrap();
        let n = negotiate(&sdp, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!(n.zrtp_hash.as_deref(), Some(hash));
        let ours = "1.10 0000000000000000000000000000000000000000000000000000000000000000";
        let answer = Answer {
            zrtp_hash: Some(ours),
            ..plain(&sdp, &n)
        }
        .render();
        assert!(
            answer.contains(&format!("a=zrtp-hash:{ours}\r\n")),
            "{answer}"
        );
        // Without one in the offer there is none in the answer, and nonsense is ignored.
        let plain = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let n = negotiate(&plain, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
        assert!(n.zrtp_hash.is_none());
        assert!(!plain_answer(&plain, &n).contains("zrtp-hash"));
        let long = OFFER.replace(
            "a=sendrecv\r\n",
            &format!("a=sendrecv\r\na=zrtp-hash:1.10 {}\r\n", "a".repeat(200)),
        );
        let sdp = SessionDescription::parse(long.as_bytes()).unwrap();
        assert!(sdp.media[1].zrtp_hash.is_none());
    }

    fn plain<'a>(sdp: &'a SessionDescription, n: &'a Negotiated) -> Answer<'a> {
        Answer {
            offer: sdp,
            negotiated: n,
            address: "127.0.0.1".parse().unwrap(),
            port: 30000,
            session_id: 1,
            version: 1,
            direction: Direction::SendRecv,
            crypto: None,
            zrtp_hash: None,
        }
    }

    #[test]
    fn our_preference_wins_among_the_offered_codecs() {
        let sdp = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.media.len(), 2);
        let n = negotiate(&sdp, &[Codec::Pcmu, Codec::Pcma], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!(n.media_index, 1);
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.remote_rtp, Some("127.0.0.1:49170".parse().unwrap()));
        // The offer lists PCMU before PCMA; our order decides.
        let n = negotiate(&sdp, &[Codec::Pcma, Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        // Opus is not offered: the next in our list.
        let n = negotiate(&sdp, &[Codec::Opus, Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        // G.722 (offered first, static type 9) when we prefer it.
        let n = negotiate(&sdp, &[Codec::G722, Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::G722, 9));
        assert_eq!(n.telephone_event_rate, 8000);
    }

    #[test]
    fn opus_is_negotiated_with_its_fmtp_and_digits_at_48_khz() {
        let offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 111 9 0 101 102\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 maxplaybackrate=16000; useinbandfec=1\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=rtpmap:102 telephone-event/48000\r\n";
        let sdp = SessionDescription::parse(offer.as_bytes()).unwrap();
        let all = [Codec::Opus, Codec::G722, Codec::Pcma, Codec::Pcmu];
        let n = negotiate(&sdp, &all, &SecurityPolicy::PLAIN).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 111));
        assert_eq!(
            n.fmtp.as_deref(),
            Some("maxplaybackrate=16000; useinbandfec=1")
        );
        assert_eq!(
            (n.telephone_event, n.telephone_event_rate),
            (Some(102), 48_000)
        );
        let a = plain_answer(&sdp, &n);
        let lines: Vec<&str> = a.lines().collect();
        assert!(lines.contains(&"m=audio 30000 RTP/AVP 111 102"), "{a}");
        assert!(lines.contains(&"a=rtpmap:111 opus/48000/2"), "{a}");
        assert!(
            lines.contains(&"a=fmtp:111 maxplaybackrate=48000;stereo=0;useinbandfec=1;usedtx=1"),
            "{a}"
        );
        assert!(lines.contains(&"a=rtpmap:102 telephone-event/48000"), "{a}");
        // G.722 when Opus is not wanted; its digits at 8000 (its RTP clock).
        let n = negotiate(&sdp, &all[1..], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!((n.codec, n.telephone_event), (Codec::G722, Some(101)));
        // An Opus rtpmap at another clock rate is not Opus (RFC 7587 §7).
        let wrong = SessionDescription::parse(
            b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/16000\r\n",
        )
        .unwrap();
        assert_eq!(
            negotiate(&wrong, &all, &SecurityPolicy::PLAIN).unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn no_common_codec_is_an_error() {
        let sdp = SessionDescription::parse(
            b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 9 18\r\na=rtpmap:9 G722/8000\r\n",
        )
        .unwrap();
        assert_eq!(
            negotiate(&sdp, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap_err(),
            SdpError::NoCommonCodec
        );
        let savp =
            SessionDescription::parse(b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/SAVP 0\r\n")
                .unwrap();
        assert_eq!(
            negotiate(&savp, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap_err(),
            SdpError::SrtpOff
        );
    }

    #[test]
    fn the_policy_decides_between_srtp_and_plain() {
        let key = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let crypto_offer = |proto: &str| {
            SessionDescription::parse(
                format!(
                    "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 {proto} 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_32 {key}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 {key}\r\n"
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let plain =
            SessionDescription::parse(b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n")
                .unwrap();
        let policy = |encryption, sdes_allowed| SecurityPolicy {
            encryption,
            sdes_allowed,
        };
        let codecs = [Codec::Pcmu];

        // Required: SRTP over TLS takes the strongest suite; a plain offer is refused.
        let n = negotiate(
            &crypto_offer("RTP/SAVP"),
            &codecs,
            &policy(Encryption::Required, true),
        )
        .unwrap();
        let c = n.crypto.unwrap();
        assert_eq!((c.tag, c.suite.sdes_name()), (2, "AES_CM_128_HMAC_SHA1_80"));
        assert_eq!(n.proto, "RTP/SAVP");
        assert_eq!(
            negotiate(&plain, &codecs, &policy(Encryption::Required, true)).unwrap_err(),
            SdpError::EncryptionRequired
        );
        // SDES keys that came over an unencrypted hop are refused.
        assert_eq!(
            negotiate(
                &crypto_offer("RTP/SAVP"),
                &codecs,
                &policy(Encryption::Required, false)
            )
            .unwrap_err(),
            SdpError::SdesNeedsTls
        );
        // Best-effort SRTP (RTP/AVP with a=crypto) counts as SRTP.
        let n = negotiate(
            &crypto_offer("RTP/AVP"),
            &codecs,
            &policy(Encryption::Required, true),
        )
        .unwrap();
        assert!(n.crypto.is_some());
        // Preferred: plain is fine, SRTP is taken when offered.
        assert!(
            negotiate(&plain, &codecs, &policy(Encryption::Preferred, true))
                .unwrap()
                .crypto
                .is_none()
        );
        assert!(negotiate(
            &crypto_offer("RTP/SAVP"),
            &codecs,
            &policy(Encryption::Preferred, true)
        )
        .unwrap()
        .crypto
        .is_some());
        // Off: a=crypto on RTP/AVP is ignored; RTP/SAVP alone is refused.
        assert!(
            negotiate(&crypto_offer("RTP/AVP"), &codecs, &SecurityPolicy::PLAIN)
                .unwrap()
                .crypto
                .is_none()
        );
    }

    #[test]
    fn answer_keeps_rejected_streams_in_place() {
        let sdp = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let n = negotiate(&sdp, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
        let a = plain_answer(&sdp, &n);
        let lines: Vec<&str> = a.lines().collect();
        assert!(lines.contains(&"m=video 0 RTP/AVP 31"), "{a}");
        assert!(lines.contains(&"m=audio 30000 RTP/AVP 0 101"), "{a}");
        assert!(lines.contains(&"a=rtpmap:101 telephone-event/8000"), "{a}");
        // Our answer parses back to the same choice.
        let back = SessionDescription::parse(a.as_bytes()).unwrap();
        assert_eq!(
            negotiate(&back, &[Codec::Pcmu], &SecurityPolicy::PLAIN)
                .unwrap()
                .remote_rtp,
            Some("127.0.0.1:30000".parse().unwrap())
        );
    }

    #[test]
    fn directions_and_hold() {
        let sdp = SessionDescription::parse(
            b"v=0\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 8\r\n",
        )
        .unwrap();
        let n = negotiate(&sdp, &[Codec::Pcma], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!(n.offered_direction, Direction::SendOnly);
        assert_eq!(n.offered_direction.answer(), Direction::RecvOnly);
        assert_eq!(n.remote_rtp, None);
        let inactive = SessionDescription::parse(
            b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 8\r\na=inactive\r\n",
        )
        .unwrap();
        assert_eq!(inactive.media[0].direction, Direction::Inactive);
    }

    #[test]
    fn port_zero_stream_is_skipped() {
        let sdp = SessionDescription::parse(
            b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 0 RTP/AVP 0\r\nm=audio 5000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(
            negotiate(&sdp, &[Codec::Pcmu], &SecurityPolicy::PLAIN)
                .unwrap()
                .media_index,
            1
        );
    }

    #[test]
    fn malformed_sdp_errors() {
        assert_eq!(
            SessionDescription::parse(b"v=0\r\n").unwrap_err(),
            SdpError::NoMedia
        );
        assert_eq!(
            SessionDescription::parse(b"garbage").unwrap_err(),
            SdpError::Malformed
        );
        assert_eq!(
            SessionDescription::parse(b"m=audio x RTP/AVP 0").unwrap_err(),
            SdpError::BadMedia
        );
        assert_eq!(
            SessionDescription::parse(&[0xff, 0xfe]).unwrap_err(),
            SdpError::Malformed
        );
        let no_c = SessionDescription::parse(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        assert_eq!(
            negotiate(&no_c, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap_err(),
            SdpError::NoConnection
        );
    }

    #[test]
    fn audio_levels_are_taken_when_the_offerer_sends_them() {
        let offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n\
a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:1/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n";
        let sdp = SessionDescription::parse(offer.as_bytes()).unwrap();
        let n = negotiate(&sdp, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
        assert_eq!(n.audio_level_id, Some(1));
        let a = plain_answer(&sdp, &n);
        assert!(
            a.lines()
                .any(|l| l == "a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
            "{a}"
        );
        assert!(!a.contains("sdes:mid"), "{a}");
        // An offerer that only receives them, or a bad ID: not taken.
        for bad in [
            "a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:0 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:300 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:x urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        ] {
            let offer = format!("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n{bad}\r\n");
            let sdp = SessionDescription::parse(offer.as_bytes()).unwrap();
            let n = negotiate(&sdp, &[Codec::Pcmu], &SecurityPolicy::PLAIN).unwrap();
            assert_eq!(n.audio_level_id, None, "{bad}");
        }
    }
}
