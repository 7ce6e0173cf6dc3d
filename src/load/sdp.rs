//! The load generator's SDP: the offer in its INVITE and what it needs from the answer.
//!
//! The offer names one codec and `telephone-event` (RFC 4733) on [`EVENT_PT`] at the
//! codec's RTP clock rate (8 kHz for G.711 and G.722, 48 kHz for Opus, as RFC 4733
//! §2.1 recommends), `a=ptime:20`, and with SRTP one `a=crypto` line on `RTP/SAVP`.
//! The answer is read with the bridge's own SDP parser ([`crate::sip::sdp`]).
//!
//! ```
//! use sotto::config::Codec;
//! use sotto::load::sdp::{offer, read_answer, OfferParams};
//! let ip = "127.0.0.1".parse().unwrap();
//! let sdp = offer(&OfferParams { address: ip, port: 4000, codec: Codec::Pcma, crypto: None, session_id: 1 });
//! assert!(sdp.contains("m=audio 4000 RTP/AVP 8 101\r\n"));
//! let answer = read_answer(sdp.as_bytes(), Codec::Pcma, None).unwrap();
//! assert_eq!((answer.remote.port(), answer.payload_type, answer.event_payload_type), (4000, 8, 101));
//! ```

use crate::config::Codec;
use crate::media::srtp::{CryptoAttribute, SdesError};
use crate::sip::sdp::{SdpError, SessionDescription};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Our telephone-event payload type (the value most phones use).
pub const EVENT_PT: u8 = 101;

/// Our Opus payload type (dynamic, RFC 7587 §7; the value most phones use).
pub const OPUS_PT: u8 = 111;

/// Our Opus parameters: in-band FEC on, everything else at RFC 7587's defaults, so the
/// bridge decodes and encodes us at 48 kHz (its most expensive Opus path).
pub const OPUS_FMTP: &str = "useinbandfec=1";

/// The payload type we offer `codec` on.
pub fn payload_type(codec: Codec) -> u8 {
    codec.payload_type().unwrap_or(OPUS_PT)
}

/// What goes into an offer.
#[derive(Debug, Clone, Copy)]
pub struct OfferParams<'a> {
    /// Our RTP address.
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// The one codec we offer.
    pub codec: Codec,
    /// Our SDES key, when the call is SRTP.
    pub crypto: Option<&'a CryptoAttribute>,
    /// `o=` session id.
    pub session_id: u64,
}

/// The offer's SDP body.
pub fn offer(p: &OfferParams<'_>) -> String {
    let family = if p.address.is_ipv6() { "IP6" } else { "IP4" };
    let pt = payload_type(p.codec);
    let proto = if p.crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut sdp = format!(
        "v=0\r\no=- {id} 1 IN {family} {ip}\r\ns=sotto-load\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {port} {proto} {pt} {EVENT_PT}\r\na=rtpmap:{pt} {rtpmap}\r\n",
        id = p.session_id,
        ip = p.address,
        port = p.port,
        rtpmap = p.codec.rtpmap(),
    );
    if p.codec == Codec::Opus {
        let _ = write!(sdp, "a=fmtp:{pt} {OPUS_FMTP}\r\n");
    }
    let _ = write!(
        sdp,
        "a=rtpmap:{EVENT_PT} telephone-event/{rate}\r\na=fmtp:{EVENT_PT} 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
        rate = p.codec.clock_rate()
    );
    if let Some(crypto) = p.crypto {
        let _ = write!(sdp, "a=crypto:{}\r\n", crypto.render());
    }
    sdp
}

/// Why an answer cannot carry the load generator's media.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The body is no SDP the bridge's parser reads.
    #[error("answer SDP: {0}")]
    Sdp(#[from] SdpError),
    /// No audio stream with a port.
    #[error("the answer has no active audio stream")]
    NoAudio,
    /// Neither the stream nor the session names an address.
    #[error("the answer has no connection address")]
    NoConnection,
    /// The answer did not take our codec.
    #[error("the answer does not use the offered codec")]
    WrongCodec,
    /// We offered SRTP and the answer has no usable key.
    #[error("the answer has no a=crypto line matching our offer")]
    NoCrypto,
    /// The answer's key line does not parse.
    #[error("the answer's a=crypto: {0}")]
    Crypto(#[from] SdesError),
    /// We offered plain RTP and the answer wants SRTP.
    #[error("the answer wants SRTP for a plain RTP offer")]
    UnexpectedCrypto,
}

/// What the load generator needs from an answer.
#[derive(Debug, Clone)]
pub struct AnswerMedia {
    /// Where the bridge wants our RTP (and where it sends from).
    pub remote: SocketAddr,
    /// The audio payload type (ours: RFC 3264 §6.1 answers with the offer's).
    pub payload_type: u8,
    /// The telephone-event payload type (ours unless the answer maps another).
    pub event_payload_type: u8,
    /// The bridge's SDES key for what it sends, when SRTP.
    pub crypto: Option<CryptoAttribute>,
}

/// Reads the answer to an offer of `codec` (with `offered` as our key when SRTP).
pub fn read_answer(
    body: &[u8],
    codec: Codec,
    offered: Option<&CryptoAttribute>,
) -> Result<AnswerMedia, AnswerError> {
    let sdp = SessionDescription::parse(body)?;
    let m = sdp
        .media
        .iter()
        .find(|m| m.kind == "audio" && m.port != 0)
        .ok_or(AnswerError::NoAudio)?;
    let ip = m
        .connection
        .or(sdp.connection)
        .ok_or(AnswerError::NoConnection)?;
    let ours = payload_type(codec);
    let payload_type = m
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .find(|&pt| match m.rtpmaps.iter().find(|(p, _, _)| *p == pt) {
            Some((_, name, rate)) => {
                name.eq_ignore_ascii_case(codec.encoding_name()) && *rate == codec.clock_rate()
            }
            None => pt == ours && codec.payload_type() == Some(pt),
        })
        .ok_or(AnswerError::WrongCodec)?;
    let event_payload_type = m
        .rtpmaps
        .iter()
        .find(|(_, name, _)| name.eq_ignore_ascii_case("telephone-event"))
        .map_or(EVENT_PT, |(pt, _, _)| *pt);
    let crypto = match offered {
        Some(ours) => {
            let mut usable = None;
            for line in &m.crypto {
                let attribute = CryptoAttribute::parse(line)?;
                // RFC 4568 §7.1.3: the answer's line carries the tag and suite it took.
                if attribute.tag == ours.tag && attribute.suite == ours.suite {
                    usable = Some(attribute);
                    break;
                }
            }
            Some(usable.ok_or(AnswerError::NoCrypto)?)
        }
        None if !m.crypto.is_empty() => return Err(AnswerError::UnexpectedCrypto),
        None => None,
    };
    Ok(AnswerMedia {
        remote: SocketAddr::new(ip, m.port),
        payload_type,
        event_payload_type,
        crypto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::srtp::Suite;

    fn ip() -> IpAddr {
        "127.0.1.7".parse().unwrap()
    }

    #[test]
    fn offers_parse_as_the_bridge_reads_them() {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus] {
            let sdp = offer(&OfferParams {
                address: ip(),
                port: 40_002,
                codec,
                crypto: None,
                session_id: 9,
            });
            let parsed = SessionDescription::parse(sdp.as_bytes()).unwrap();
            let policy = crate::sip::sdp::SecurityPolicy::PLAIN;
            let n = crate::sip::sdp::negotiate(&parsed, &[codec], &policy).unwrap();
            assert_eq!(n.codec, codec);
            assert_eq!(n.payload_type, payload_type(codec));
            assert_eq!(n.telephone_event, Some(EVENT_PT));
            assert_eq!(n.telephone_event_rate, codec.clock_rate());
            assert_eq!(n.remote_rtp, Some(SocketAddr::new(ip(), 40_002)));
            assert_eq!(
                n.fmtp.as_deref(),
                (codec == Codec::Opus).then_some(OPUS_FMTP)
            );
        }
    }

    #[test]
    fn an_srtp_offer_is_savp_with_one_key_the_bridge_takes() {
        let key = CryptoAttribute::offer(Suite::AeadAes128Gcm, &mut rand::rngs::OsRng);
        let sdp = offer(&OfferParams {
            address: ip(),
            port: 4000,
            codec: Codec::Pcma,
            crypto: Some(&key),
            session_id: 1,
        });
        assert!(sdp.contains("m=audio 4000 RTP/SAVP 8 101\r\n"), "{sdp}");
        let parsed = SessionDescription::parse(sdp.as_bytes()).unwrap();
        let policy = crate::sip::sdp::SecurityPolicy {
            encryption: crate::config::Encryption::Required,
            sdes_allowed: true,
        };
        let n = crate::sip::sdp::negotiate(&parsed, &[Codec::Pcma], &policy).unwrap();
        assert_eq!(n.crypto.as_ref(), Some(&key));
    }

    const ANSWER: &str = "v=0\r\no=sotto 5 2 IN IP4 127.0.0.1\r\ns=sotto\r\nc=IN IP4 127.0.0.1\r\n\
        t=0 0\r\nm=audio 30042 RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n";

    #[test]
    fn the_answer_gives_address_payload_types_and_key() {
        let ours = CryptoAttribute::offer(Suite::AesCm128HmacSha1_80, &mut rand::rngs::OsRng);
        let theirs = CryptoAttribute::answer_to(&ours, &mut rand::rngs::OsRng);
        let body = format!("{ANSWER}a=crypto:{}\r\n", theirs.render());
        let a = read_answer(body.as_bytes(), Codec::Pcma, Some(&ours)).unwrap();
        assert_eq!(a.remote, "127.0.0.1:30042".parse().unwrap());
        assert_eq!((a.payload_type, a.event_payload_type), (8, 101));
        assert_eq!(a.crypto, Some(theirs));
    }

    #[test]
    fn answers_we_cannot_use_are_typed_errors() {
        let ours = CryptoAttribute::offer(Suite::AesCm128HmacSha1_80, &mut rand::rngs::OsRng);
        assert!(matches!(
            read_answer(ANSWER.as_bytes(), Codec::Pcma, Some(&ours)),
            Err(AnswerError::NoCrypto)
        ));
        // A key for another suite does not do.
        let other = CryptoAttribute::offer(Suite::AeadAes128Gcm, &mut rand::rngs::OsRng);
        let body = format!("{ANSWER}a=crypto:{}\r\n", other.render());
        assert!(matches!(
            read_answer(body.as_bytes(), Codec::Pcma, Some(&ours)),
            Err(AnswerError::NoCrypto)
        ));
        assert!(matches!(
            read_answer(body.as_bytes(), Codec::Pcma, None),
            Err(AnswerError::UnexpectedCrypto)
        ));
        assert!(matches!(
            read_answer(ANSWER.as_bytes(), Codec::Pcmu, None),
            Err(AnswerError::WrongCodec)
        ));
        let no_port = ANSWER.replace("30042", "0");
        assert!(matches!(
            read_answer(no_port.as_bytes(), Codec::Pcma, None),
            Err(AnswerError::NoAudio)
        ));
        let no_c = ANSWER.replace("c=IN IP4 127.0.0.1\r\n", "");
        assert!(matches!(
            read_answer(no_c.as_bytes(), Codec::Pcma, None),
            Err(AnswerError::NoConnection)
        ));
        assert!(matches!(
            read_answer(b"\xff\xfe", Codec::Pcma, None),
            Err(AnswerError::Sdp(_))
        ));
    }

    #[test]
    fn an_opus_answer_is_matched_by_its_rtpmap() {
        let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                    m=audio 30000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\n\
                    a=rtpmap:101 telephone-event/48000\r\n";
        let a = read_answer(body.as_bytes(), Codec::Opus, None).unwrap();
        assert_eq!((a.payload_type, a.event_payload_type), (111, 101));
    }
}
