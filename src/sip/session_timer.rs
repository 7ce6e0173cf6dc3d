//! Session timers (RFC 4028) on the UAS side: a call whose refreshes stop is ended, so
//! that a crashed PBX leaves no ghost member in a room.
//!
//! [`negotiate`] reads an INVITE (or a refreshing re-INVITE/UPDATE) and decides the
//! interval and who refreshes; [`SessionTimer`] then says when the next thing is due:
//! - the caller refreshes (`refresher=uac`, our choice whenever the caller supports
//!   timers): if no refresh arrives, we end the call with BYE at
//!   `interval - min(32 s, interval / 3)` after the last one (RFC 4028 §10);
//! - we refresh (`refresher=uas`: the caller asked for it, or does not support timers
//!   and a proxy put the header in): an UPDATE without a body at half the interval
//!   (§10); a failed refresh ends the call. We refresh only by UPDATE, so where the
//!   peer does not allow UPDATE no timer is run on our side (the caller's own expiry
//!   still applies), and the answer carries no Session-Expires.
//!
//! Pure: headers in, decisions and deadlines out.

use super::message::Request;
use ezk_sip_types::Name;
use std::time::{Duration, Instant};

/// Our own smallest acceptable interval (RFC 4028 §4: at least 90 s).
pub const MIN_SE: Duration = Duration::from_secs(90);

/// The interval we propose when the caller supports timers but names none
/// (RFC 4028 §4 recommends 1800 s).
pub const DEFAULT_SE: Duration = Duration::from_secs(1800);

/// The longest interval we accept; beyond it the answer lowers it, so a ghost call is
/// cleaned up within hours, not days.
pub const MAX_SE: Duration = Duration::from_secs(7200);

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller.
    Uac,
    /// We do.
    Uas,
}

impl Refresher {
    fn token(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A session timer agreed for a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// The session interval.
    pub interval: Duration,
    /// Who refreshes.
    pub refresher: Refresher,
    /// Whether the caller supports timers (then our answers say `Require: timer`).
    pub peer_supports: bool,
    /// When the session was last refreshed (our 2xx to the INVITE, re-INVITE or UPDATE,
    /// or the sending of our own UPDATE).
    pub refreshed: Instant,
}

/// What the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// No session timer for this dialog.
    None,
    /// A session timer with these terms.
    Timer(SessionTimer),
    /// The interval asked for is below [`MIN_SE`]: answer 422 with `Min-SE`.
    TooSmall,
}

/// The option tags of a header (`Supported`, `Require`), lower-cased.
fn tags(req: &Request, name: &Name) -> Vec<String> {
    req.headers
        .get_raw(name)
        .flat_map(|v| {
            v.as_str()
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// `Session-Expires: delta-seconds[;refresher=uac|uas]` (compact form `x`).
fn session_expires(req: &Request) -> Option<(u64, Option<Refresher>)> {
    // The name's parse forms include the compact `x`.
    let raw = req.headers.get_raw(&Name::SESSION_EXPIRES).next()?;
    let mut parts = raw.as_str().split(';');
    let secs = parts.next()?.trim().parse::<u64>().ok()?;
    let mut refresher = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("refresher") {
                refresher = match v.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                };
            }
        }
    }
    Some((secs, refresher))
}

/// Decides the session timer for an INVITE (or a refresh) received at `now`.
/// `peer_allows_update` says whether we could refresh by UPDATE.
pub fn negotiate(req: &Request, now: Instant, peer_allows_update: bool) -> Negotiation {
    let supported = tags(req, &Name::SUPPORTED);
    let required = tags(req, &Name::REQUIRE);
    let peer_supports = supported.iter().chain(&required).any(|t| t == "timer");
    let asked = session_expires(req);
    let (secs, refresher) = match asked {
        Some((secs, _)) if Duration::from_secs(secs) < MIN_SE => return Negotiation::TooSmall,
        Some((secs, r)) => (secs, r),
        // A caller that supports timers but proposes none gets ours; one that does not
        // support them, none.
        None if peer_supports => (DEFAULT_SE.as_secs(), None),
        None => return Negotiation::None,
    };
    let refresher = match (refresher, peer_supports) {
        (Some(r), true) => r,
        // The caller left the choice to us: it refreshes, so we send nothing.
        (None, true) => Refresher::Uac,
        // A caller that does not support timers cannot refresh (RFC 4028 §9).
        (_, false) => Refresher::Uas,
    };
    if refresher == Refresher::Uas && !peer_allows_update {
        // We refresh only by UPDATE: no timer we could keep.
        return Negotiation::None;
    }
    Negotiation::Timer(SessionTimer {
        interval: Duration::from_secs(secs).min(MAX_SE),
        refresher,
        peer_supports,
        refreshed: now,
    })
}

/// Whether a request's `Allow` lists UPDATE.
pub fn allows_update(req: &Request) -> bool {
    req.headers.get_raw(&Name::ALLOW).any(|v| {
        v.as_str()
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
    })
}

impl SessionTimer {
    /// When we act next: send our refresh (`refresher=uas`), or end the call for want
    /// of one (`refresher=uac`).
    pub fn deadline(&self) -> Instant {
        match self.refresher {
            Refresher::Uas => self.refreshed + self.interval / 2,
            Refresher::Uac => {
                let margin = (self.interval / 3).min(Duration::from_secs(32));
                self.refreshed + self.interval - margin
            }
        }
    }

    /// The headers of a 2xx that agrees to this timer.
    pub fn response_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![(
            "Session-Expires",
            format!(
                "{};refresher={}",
                self.interval.as_secs(),
                self.refresher.token()
            ),
        )];
        if self.peer_supports {
            h.push(("Require", "timer".to_string()));
        }
        h
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;
    use crate::sip::message::{parse, Limits, Message};
    use bytes::Bytes;

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:conf@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:conf@127.0.0.1>\r\n\
             Call-ID: st@x\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse(Bytes::from(text), &Limits::default()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn timer(n: Negotiation) -> SessionTimer {
        match n {
            Negotiation::Timer(t) => t,
            other => panic!("no timer: {other:?}"),
        }
    }

    #[test]
    fn the_caller_refreshes_when_it_supports_timers_and_leaves_us_the_choice() {
        let t0 = Instant::now();
        let t = timer(negotiate(
            &invite("Supported: timer, 100rel\r\nSession-Expires: 600\r\n"),
            t0,
            true,
        ));
        assert_eq!(t.interval, Duration::from_secs(600));
        assert_eq!(t.refresher, Refresher::Uac);
        // BYE at 600 - min(32, 200) = 568 s without a refresh.
        assert_eq!(t.deadline(), t0 + Duration::from_secs(568));
        let h = t.response_headers();
        assert_eq!(h[0], ("Session-Expires", "600;refresher=uac".to_string()));
        assert_eq!(h[1], ("Require", "timer".to_string()));
        // Compact form, our default when none is named.
        let t = timer(negotiate(&invite("k: timer\r\nx: 120\r\n"), t0, false));
        assert_eq!(t.interval, Duration::from_secs(120));
        assert_eq!(
            t.deadline(),
            t0 + Duration::from_secs(88),
            "120 - min(32, 40)"
        );
        let t = timer(negotiate(&invite("Supported: timer\r\n"), t0, false));
        assert_eq!(t.interval, DEFAULT_SE);
    }

    #[test]
    fn we_refresh_when_asked_to_or_when_the_caller_cannot() {
        let t0 = Instant::now();
        let t = timer(negotiate(
            &invite("Supported: timer\r\nSession-Expires: 1800;refresher=uas\r\n"),
            t0,
            true,
        ));
        assert_eq!(t.refresher, Refresher::Uas);
        assert_eq!(
            t.deadline(),
            t0 + Duration::from_secs(900),
            "half the interval"
        );
        // A proxy added the header; the caller knows nothing of timers.
        let t = timer(negotiate(&invite("Session-Expires: 300\r\n"), t0, true));
        assert_eq!(t.refresher, Refresher::Uas);
        assert_eq!(t.response_headers().len(), 1, "no Require: timer");
        // ... and without UPDATE we could not refresh: no timer at all.
        assert_eq!(
            negotiate(&invite("Session-Expires: 300\r\n"), t0, false),
            Negotiation::None
        );
    }

    #[test]
    fn small_intervals_get_422_and_none_means_none() {
        let t0 = Instant::now();
        assert_eq!(
            negotiate(
                &invite("Supported: timer\r\nSession-Expires: 60\r\n"),
                t0,
                true
            ),
            Negotiation::TooSmall
        );
        assert_eq!(negotiate(&invite(""), t0, true), Negotiation::None);
        let t = timer(negotiate(
            &invite("Supported: timer\r\nSession-Expires: 86400\r\n"),
            t0,
            true,
        ));
        assert_eq!(t.interval, MAX_SE, "a day is lowered to two hours");
        // Junk in the header: as if it were not there.
        assert_eq!(
            negotiate(&invite("Session-Expires: soon\r\n"), t0, true),
            Negotiation::None
        );
    }

    #[test]
    fn allow_update_is_read_from_the_allow_header() {
        assert!(allows_update(&invite(
            "Allow: INVITE, ACK, update, BYE\r\n"
        )));
        assert!(!allows_update(&invite("Allow: INVITE, ACK, BYE\r\n")));
        assert!(!allows_update(&invite("")));
    }
}
