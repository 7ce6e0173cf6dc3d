//! Checks of a request's headers that decide an answer before anything else happens.

use super::*;

/// The option tags of `Require` we do not support, if any (RFC 3261 §8.2.2.3 → 420):
/// all but `timer` (RFC 4028) and `100rel` (RFC 3262: we send no provisional response
/// that would need to be reliable).
pub(super) fn unsupported_requirements(req: &Request) -> Option<String> {
    let tags: Vec<&str> = req
        .headers
        .get_raw(&Name::REQUIRE)
        .flat_map(|v| v.as_str().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter(|t| !t.eq_ignore_ascii_case("timer") && !t.eq_ignore_ascii_case("100rel"))
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}

/// Whether the caller can read an SDP answer: no Accept header means `application/sdp`
/// (RFC 3261 §20.1); otherwise one of its media ranges must cover it. An Accept with no
/// ranges at all accepts nothing. A range with `q=0` is refused (RFC 3261 §20.1 borrows
/// HTTP's q-values: 0 means "not acceptable").
pub(super) fn accepts_sdp(req: &Request) -> bool {
    let mut values = req.headers.get_raw(&Name::ACCEPT).peekable();
    if values.peek().is_none() {
        return true;
    }
    values.flat_map(|v| v.as_str().split(',')).any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p.strip_prefix("q")
                .map(|rest| rest.trim_start())
                .and_then(|rest| rest.strip_prefix('='))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && matches!(media.as_str(), "application/sdp" | "application/*" | "*/*")
    })
}

pub(super) fn is_known_method(m: &Method) -> bool {
    [
        Method::REGISTER,
        Method::MESSAGE,
        Method::UPDATE,
        Method::PRACK,
        Method::SUBSCRIBE,
        Method::NOTIFY,
        Method::PUBLISH,
        Method::INFO,
        Method::REFER,
    ]
    .contains(m)
}
