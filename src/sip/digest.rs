//! Digest authentication of inbound requests from a trunk (RFC 3261 §22.4 with the
//! RFC 7616 parameters, RFC 8760 SHA-256), sans-IO.
//!
//! The bridge is the server: an INVITE from a trunk with `digest` credentials must
//! carry an `Authorization` that answers one of our challenges, or it gets 401 with
//! fresh challenges (SHA-256 offered before MD5, `qop="auth"` only).
//!
//! Nonces are stateless and bound to time and source: `hex(t ‖ r ‖ mac)` where `t` is
//! the issue time (milliseconds since this authenticator started), `r` eight random
//! bytes, and `mac` a truncated HMAC-SHA-256 over both and the source address under a
//! key made at start. A nonce from another source, a forged one, or one older than
//! [`NONCE_LIFETIME`] is refused without a table lookup (an old one with
//! `stale=true`, so a client retries without asking its user). Replays are caught by
//! the nonce count: each (nonce, nc) is accepted once and nc must grow, in a bounded
//! table of recently used nonces.
//!
//! Only HA1 (`H(user:realm:password)`) is configured, never the password.
//!
//! ```
//! use sotto::sip::digest::{parse_authorization, Algorithm};
//! let a = parse_authorization(r#"Digest username="pbx", realm="sotto", nonce="abc",
//!     uri="sip:conf@bridge", response="00", algorithm=SHA-256, qop=auth, nc=00000001,
//!     cnonce="x""#).unwrap();
//! assert_eq!(a.algorithm, Algorithm::Sha256);
//! assert_eq!(a.nc, Some(1));
//! ```

use crate::config::DigestCredentials;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a nonce is good for. Long enough for a PBX to answer the challenge and to
/// reuse the nonce for the next calls (with growing nc), short enough that a captured
/// one is soon worthless.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// Nonces whose counts are remembered; beyond it the oldest is forgotten (and with it
/// any further use of that nonce is refused as stale, never accepted twice).
const MAX_TRACKED_NONCES: usize = 16_384;

/// Length of the random part of a nonce.
const NONCE_RANDOM: usize = 8;
/// Length of the truncated MAC in a nonce: 128 bits cannot be forged by guessing.
const NONCE_MAC: usize = 16;
/// Longest Authorization header value we read; real ones are a few hundred bytes.
const MAX_AUTHORIZATION: usize = 4096;

/// A digest algorithm (RFC 8760 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 3261; the default when no algorithm is named).
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token used in the `algorithm` parameter.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash_hex(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 => {
                let mut h = Md5::new();
                for p in parts {
                    h.update(p);
                }
                hex(&h.finalize())
            }
            Algorithm::Sha256 => {
                let mut h = Sha256::new();
                for p in parts {
                    h.update(p);
                }
                hex(&h.finalize())
            }
        }
    }
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No Authorization header for our realm: the normal first request.
    #[error("no credentials")]
    Missing,
    /// The header could not be read.
    #[error("malformed Authorization header")]
    Malformed,
    /// An algorithm or qop we did not offer.
    #[error("unsupported algorithm or qop")]
    Unsupported,
    /// Not our nonce, or not for this source.
    #[error("unknown nonce")]
    UnknownNonce,
    /// Our nonce, but expired: the client may retry with a fresh one (`stale=true`).
    #[error("stale nonce")]
    Stale,
    /// A nonce count already seen: a replay.
    #[error("replayed nonce count")]
    Replay,
    /// Wrong user or realm.
    #[error("wrong user or realm")]
    WrongUser,
    /// The response does not match: a wrong password.
    #[error("wrong response")]
    WrongResponse,
}

impl DigestError {
    /// Whether this counts as a wrong guess (against the source's failure budget), as
    /// opposed to a client that has not tried yet or holds an expired nonce.
    pub fn is_wrong_credentials(self) -> bool {
        matches!(
            self,
            DigestError::WrongUser | DigestError::WrongResponse | DigestError::Replay
        )
    }
}

/// The parameters of one `Authorization: Digest ...` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri` (the digest-uri).
    pub uri: String,
    /// `response`, as hex.
    pub response: String,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// `qop`, if present.
    pub qop: Option<String>,
    /// `nc`, parsed from its 8 hex digits.
    pub nc: Option<u32>,
    /// `cnonce`.
    pub cnonce: Option<String>,
}

/// Parses one Authorization (or Proxy-Authorization) header value.
pub fn parse_authorization(value: &str) -> Result<Authorization, DigestError> {
    if value.len() > MAX_AUTHORIZATION {
        return Err(DigestError::Malformed);
    }
    let value = value.trim();
    let scheme_end = value
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case("digest") {
        return Err(DigestError::Malformed);
    }
    let mut params: HashMap<String, String> = HashMap::new();
    let mut rest = value[scheme_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or(DigestError::Malformed)?;
        let name = rest[..eq].trim().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(DigestError::Malformed);
        }
        rest = rest[eq + 1..].trim_start();
        let val;
        if let Some(quoted) = rest.strip_prefix('"') {
            // quoted-string with backslash escapes (RFC 3261 §25.1).
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => return Err(DigestError::Malformed),
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end.ok_or(DigestError::Malformed)?;
            val = out;
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            val = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(DigestError::Malformed);
        }
        if params.insert(name, val).is_some() {
            // A parameter given twice is ambiguous: refuse rather than pick one.
            return Err(DigestError::Malformed);
        }
    }
    let mut take = |k: &str| params.remove(k);
    let algorithm = match take("algorithm") {
        None => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
        Some(_) => return Err(DigestError::Unsupported),
    };
    let nc = match take("nc") {
        None => None,
        Some(n) if n.len() == 8 => {
            Some(u32::from_str_radix(&n, 16).map_err(|_| DigestError::Malformed)?)
        }
        Some(_) => return Err(DigestError::Malformed),
    };
    Ok(Authorization {
        username: take("username").ok_or(DigestError::Malformed)?,
        realm: take("realm").ok_or(DigestError::Malformed)?,
        nonce: take("nonce").ok_or(DigestError::Malformed)?,
        uri: take("uri").ok_or(DigestError::Malformed)?,
        response: take("response").ok_or(DigestError::Malformed)?,
        algorithm,
        qop: take("qop"),
        nc,
        cnonce: take("cnonce"),
    })
}

/// Issues challenges and checks answers; one per endpoint.
pub struct Authenticator {
    key: [u8; 32],
    origin: Instant,
    /// Highest nc accepted per nonce, with the nonces in first-use order for eviction.
    counts: HashMap<String, u32>,
    order: VecDeque<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tracked", &self.counts.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator whose nonces are keyed by `key` and timed from `origin`.
    pub fn new(key: [u8; 32], origin: Instant) -> Authenticator {
        Authenticator {
            key,
            origin,
            counts: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn mac(&self, t: u64, random: &[u8], source: IpAddr) -> [u8; NONCE_MAC] {
        // Keyed hash over the nonce's own fields and the source it was issued to.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        m.update(&t.to_be_bytes());
        m.update(random);
        match source {
            IpAddr::V4(a) => m.update(&a.octets()),
            IpAddr::V6(a) => m.update(&a.octets()),
        }
        let full = m.finalize().into_bytes();
        let mut out = [0u8; NONCE_MAC];
        out.copy_from_slice(&full[..NONCE_MAC]);
        out
    }

    /// A fresh nonce for `source`.
    pub fn nonce(&self, now: Instant, source: IpAddr, random: [u8; NONCE_RANDOM]) -> String {
        let t = now.saturating_duration_since(self.origin).as_millis() as u64;
        let mac = self.mac(t, &random, source);
        let mut s = String::with_capacity(2 * (8 + NONCE_RANDOM + NONCE_MAC));
        s.push_str(&hex(&t.to_be_bytes()));
        s.push_str(&hex(&random));
        s.push_str(&hex(&mac));
        s
    }

    /// The `WWW-Authenticate` values for a 401: one per algorithm the credentials
    /// allow, SHA-256 first (RFC 8760 §2.4: the server lists its preference first).
    pub fn challenges(
        &self,
        now: Instant,
        source: IpAddr,
        creds: &DigestCredentials,
        stale: bool,
        random: [u8; NONCE_RANDOM],
    ) -> Vec<String> {
        let nonce = self.nonce(now, source, random);
        let mut out = Vec::with_capacity(2);
        let algorithms = [
            (Algorithm::Sha256, creds.ha1_sha256.is_some()),
            (Algorithm::Md5, creds.ha1_md5.is_some()),
        ];
        for (alg, offered) in algorithms {
            if !offered {
                continue;
            }
            let mut v = format!(
                "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                creds.realm,
                alg.token()
            );
            if stale {
                v.push_str(", stale=true");
            }
            out.push(v);
        }
        out
    }

    /// Checks the `Authorization` values of a request with `method` from `source`
    /// against `creds`; a success consumes the nonce count.
    pub fn verify<'a>(
        &mut self,
        now: Instant,
        source: IpAddr,
        method: &str,
        authorizations: impl IntoIterator<Item = &'a str>,
        creds: &DigestCredentials,
    ) -> Result<(), DigestError> {
        // A client may send several (one per realm); ours is the one with our realm.
        let mut result = Err(DigestError::Missing);
        for value in authorizations {
            let a = match parse_authorization(value) {
                Ok(a) => a,
                Err(e) => {
                    result = Err(e);
                    continue;
                }
            };
            if a.realm != creds.realm {
                continue;
            }
            return self.verify_one(now, source, method, &a, creds);
        }
        result
    }

    fn verify_one(
        &mut self,
        now: Instant,
        source: IpAddr,
        method: &str,
        a: &Authorization,
        creds: &DigestCredentials,
    ) -> Result<(), DigestError> {
        // Our nonce for this source? (No state touched before the MAC holds.)
        let raw = unhex(&a.nonce).ok_or(DigestError::UnknownNonce)?;
        if raw.len() != 8 + NONCE_RANDOM + NONCE_MAC {
            return Err(DigestError::UnknownNonce);
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&raw[..8]);
        let t = u64::from_be_bytes(t);
        let mac = self.mac(t, &raw[8..8 + NONCE_RANDOM], source);
        if !bool::from(mac.ct_eq(&raw[8 + NONCE_RANDOM..])) {
            return Err(DigestError::UnknownNonce);
        }
        let issued = self.origin + Duration::from_millis(t);
        if now.saturating_duration_since(issued) > NONCE_LIFETIME || issued > now {
            return Err(DigestError::Stale);
        }
        if a.qop.as_deref() != Some("auth") {
            return Err(DigestError::Unsupported);
        }
        let (Some(nc), Some(cnonce)) = (a.nc, a.cnonce.as_deref()) else {
            return Err(DigestError::Malformed);
        };
        let ha1 = match a.algorithm {
            Algorithm::Sha256 => creds.ha1_sha256.as_ref().map(|h| hex(h)),
            Algorithm::Md5 => creds.ha1_md5.as_ref().map(|h| hex(h)),
        }
        .ok_or(DigestError::Unsupported)?;
        if a.username != creds.user {
            return Err(DigestError::WrongUser);
        }
        let ha2 = a
            .algorithm
            .hash_hex(&[method.as_bytes(), b":", a.uri.as_bytes()]);
        let nc_text = format!("{nc:08x}");
        let expected = a.algorithm.hash_hex(&[
            ha1.as_bytes(),
            b":",
            a.nonce.as_bytes(),
            b":",
            nc_text.as_bytes(),
            b":",
            cnonce.as_bytes(),
            b":auth:",
            ha2.as_bytes(),
        ]);
        let given = a.response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(DigestError::WrongResponse);
        }
        // Right answer: accepted once per nonce count, counts growing.
        match self.counts.get_mut(&a.nonce) {
            Some(last) if nc <= *last => return Err(DigestError::Replay),
            Some(last) => *last = nc,
            None => {
                while self.counts.len() >= MAX_TRACKED_NONCES {
                    match self.order.pop_front() {
                        Some(old) => {
                            self.counts.remove(&old);
                        }
                        None => break,
                    }
                }
                self.counts.insert(a.nonce.clone(), nc);
                self.order.push_back(a.nonce.clone());
            }
        }
        Ok(())
    }

    /// Forgets the counts of nonces that can no longer be used (call now and then).
    pub fn expire(&mut self, now: Instant) {
        let origin = self.origin;
        let live = |nonce: &String| {
            unhex(nonce.get(..16).unwrap_or_default())
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .is_some_and(|t| {
                    now.saturating_duration_since(origin + Duration::from_millis(t))
                        <= NONCE_LIFETIME
                })
        };
        self.order.retain(live);
        let order = &self.order;
        self.counts.retain(|k, _| order.contains(k));
    }
}

impl Drop for Authenticator {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// The HA1 lines `sotto hash-digest` prints for a trunk's config.
pub fn ha1_lines(user: &str, realm: &str, password: &str) -> (String, String) {
    let parts: [&[u8]; 5] = [
        user.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ];
    (
        Algorithm::Sha256.hash_hex(&parts),
        Algorithm::Md5.hash_hex(&parts),
    )
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    fn creds() -> DigestCredentials {
        let (sha, md5) = ha1_lines("pbx", "sotto", "s3cret");
        DigestCredentials {
            user: "pbx".into(),
            realm: "sotto".into(),
            ha1_sha256: crate::config::trunk::parse_hex::<32>(&sha),
            ha1_md5: crate::config::trunk::parse_hex::<16>(&md5),
        }
    }

    /// A client's answer, computed independently of `verify_one` from the password.
    fn answer(alg: Algorithm, nonce: &str, nc: u32, password: &str, method: &str) -> String {
        let h = |s: String| alg.hash_hex(&[s.as_bytes()]);
        let ha1 = h(format!("pbx:sotto:{password}"));
        let ha2 = h(format!("{method}:sip:conf@bridge"));
        let resp = h(format!("{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}"));
        format!(
            "Digest username=\"pbx\", realm=\"sotto\", nonce=\"{nonce}\", \
             uri=\"sip:conf@bridge\", response=\"{resp}\", algorithm={}, qop=auth, \
             nc={nc:08x}, cnonce=\"c0ffee\"",
            alg.token()
        )
    }

    fn nonce_of(challenge: &str) -> String {
        challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string()
    }

    fn setup() -> (Authenticator, Instant, IpAddr) {
        let t0 = Instant::now();
        (
            Authenticator::new([7; 32], t0),
            t0,
            "10.0.0.5".parse().unwrap(),
        )
    }

    #[test]
    fn rfc_7616_sha256_example_response() {
        // RFC 7616 §3.9.1 (HTTP, but the same arithmetic): user Mufasa, realm
        // http-auth@example.org, password "Circle of Life", GET /dir/index.html.
        let alg = Algorithm::Sha256;
        let ha1 = alg.hash_hex(&[b"Mufasa:http-auth@example.org:Circle of Life"]);
        let ha2 = alg.hash_hex(&[b"GET:/dir/index.html"]);
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let resp =
            alg.hash_hex(&[format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}").as_bytes()]);
        assert_eq!(
            resp,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        // And the MD5 one from the same section.
        let alg = Algorithm::Md5;
        let ha1 = alg.hash_hex(&[b"Mufasa:http-auth@example.org:Circle of Life"]);
        let ha2 = alg.hash_hex(&[b"GET:/dir/index.html"]);
        let resp =
            alg.hash_hex(&[format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}").as_bytes()]);
        assert_eq!(resp, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn both_algorithms_are_accepted_sha256_offered_first() {
        let (mut auth, t0, src) = setup();
        let ch = auth.challenges(t0, src, &creds(), false, [1; 8]);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256") && ch[0].contains("qop=\"auth\""));
        assert!(ch[1].contains("algorithm=MD5"));
        let nonce = nonce_of(&ch[0]);
        for (i, alg) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
            let a = answer(alg, &nonce, i as u32 + 1, "s3cret", "INVITE");
            assert_eq!(
                auth.verify(t0, src, "INVITE", [a.as_str()], &creds()),
                Ok(())
            );
        }
    }

    #[test]
    fn wrong_password_user_method_and_missing_are_told_apart() {
        let (mut auth, t0, src) = setup();
        let nonce = auth.nonce(t0, src, [2; 8]);
        let c = creds();
        let wrong = answer(Algorithm::Sha256, &nonce, 1, "guess", "INVITE");
        let e = auth.verify(t0, src, "INVITE", [wrong.as_str()], &c);
        assert_eq!(e, Err(DigestError::WrongResponse));
        assert!(e.unwrap_err().is_wrong_credentials());
        let other_method = answer(Algorithm::Sha256, &nonce, 1, "s3cret", "BYE");
        assert_eq!(
            auth.verify(t0, src, "INVITE", [other_method.as_str()], &c),
            Err(DigestError::WrongResponse)
        );
        let user = answer(Algorithm::Md5, &nonce, 1, "s3cret", "INVITE")
            .replace("username=\"pbx\"", "username=\"admin\"");
        assert_eq!(
            auth.verify(t0, src, "INVITE", [user.as_str()], &c),
            Err(DigestError::WrongUser)
        );
        let none: [&str; 0] = [];
        let e = auth.verify(t0, src, "INVITE", none, &c);
        assert_eq!(e, Err(DigestError::Missing));
        assert!(!e.unwrap_err().is_wrong_credentials());
        let other_realm = answer(Algorithm::Md5, &nonce, 1, "s3cret", "INVITE")
            .replace("realm=\"sotto\"", "realm=\"elsewhere\"");
        assert_eq!(
            auth.verify(t0, src, "INVITE", [other_realm.as_str()], &c),
            Err(DigestError::Missing)
        );
    }

    #[test]
    fn a_replayed_nonce_count_is_refused_and_counts_must_grow() {
        let (mut auth, t0, src) = setup();
        let nonce = auth.nonce(t0, src, [3; 8]);
        let c = creds();
        let first = answer(Algorithm::Sha256, &nonce, 1, "s3cret", "INVITE");
        assert_eq!(auth.verify(t0, src, "INVITE", [first.as_str()], &c), Ok(()));
        let e = auth.verify(t0, src, "INVITE", [first.as_str()], &c);
        assert_eq!(e, Err(DigestError::Replay));
        assert!(e.unwrap_err().is_wrong_credentials());
        let next = answer(Algorithm::Sha256, &nonce, 5, "s3cret", "INVITE");
        assert_eq!(auth.verify(t0, src, "INVITE", [next.as_str()], &c), Ok(()));
        let back = answer(Algorithm::Sha256, &nonce, 4, "s3cret", "INVITE");
        assert_eq!(
            auth.verify(t0, src, "INVITE", [back.as_str()], &c),
            Err(DigestError::Replay)
        );
    }

    #[test]
    fn nonces_are_bound_to_source_time_and_key() {
        let (mut auth, t0, src) = setup();
        let c = creds();
        let nonce = auth.nonce(t0, src, [4; 8]);
        let a = answer(Algorithm::Sha256, &nonce, 1, "s3cret", "INVITE");
        let elsewhere: IpAddr = "10.0.0.6".parse().unwrap();
        assert_eq!(
            auth.verify(t0, elsewhere, "INVITE", [a.as_str()], &c),
            Err(DigestError::UnknownNonce)
        );
        let later = t0 + NONCE_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            auth.verify(later, src, "INVITE", [a.as_str()], &c),
            Err(DigestError::Stale)
        );
        let mut other = Authenticator::new([8; 32], t0);
        assert_eq!(
            other.verify(t0, src, "INVITE", [a.as_str()], &c),
            Err(DigestError::UnknownNonce)
        );
        let forged = answer(Algorithm::Sha256, "00", 1, "s3cret", "INVITE");
        assert_eq!(
            auth.verify(t0, src, "INVITE", [forged.as_str()], &c),
            Err(DigestError::UnknownNonce)
        );
        let ch = auth.challenges(later, src, &c, true, [5; 8]);
        assert!(ch.iter().all(|v| v.ends_with(", stale=true")));
        // Expiry forgets counts of dead nonces only.
        assert_eq!(auth.verify(t0, src, "INVITE", [a.as_str()], &c), Ok(()));
        auth.expire(t0 + Duration::from_secs(1));
        assert_eq!(auth.counts.len(), 1);
        auth.expire(later);
        assert!(auth.counts.is_empty() && auth.order.is_empty());
    }

    #[test]
    fn only_the_configured_algorithms_are_offered_and_accepted() {
        let (mut auth, t0, src) = setup();
        let mut c = creds();
        c.ha1_md5 = None;
        let ch = auth.challenges(t0, src, &c, false, [6; 8]);
        assert_eq!(ch.len(), 1);
        let nonce = nonce_of(&ch[0]);
        let md5 = answer(Algorithm::Md5, &nonce, 1, "s3cret", "INVITE");
        assert_eq!(
            auth.verify(t0, src, "INVITE", [md5.as_str()], &c),
            Err(DigestError::Unsupported)
        );
        let no_qop =
            answer(Algorithm::Sha256, &nonce, 1, "s3cret", "INVITE").replace(", qop=auth", "");
        assert_eq!(
            auth.verify(t0, src, "INVITE", [no_qop.as_str()], &c),
            Err(DigestError::Unsupported)
        );
    }

    #[test]
    fn authorization_parsing_handles_quoting_and_refuses_junk() {
        let a = parse_authorization(
            "digest  USERNAME=\"p\\\"b\\\\x\",realm=\"r\" , nonce=n,uri=\"sip:a@b;x=\\\"y\\\"\",\
             response=\"AB\",qop=auth,nc=0000000a,cnonce=\"c,d\"",
        )
        .unwrap();
        assert_eq!(a.username, "p\"b\\x");
        assert_eq!(a.nonce, "n");
        assert_eq!(a.uri, "sip:a@b;x=\"y\"");
        assert_eq!(a.nc, Some(10));
        assert_eq!(a.cnonce.as_deref(), Some("c,d"));
        assert_eq!(a.algorithm, Algorithm::Md5);
        for bad in [
            "",
            "Basic dXNlcjpwdw==",
            "Digest username=\"unterminated",
            "Digest username=\"a\" realm=\"b\"",
            "Digest =x",
            "Digest username=a, username=b, realm=r, nonce=n, uri=u, response=r",
            "Digest realm=r, nonce=n, uri=u, response=r",
            "Digest username=a, realm=r, nonce=n, uri=u, response=r, nc=1",
            "Digest username=a, realm=r, nonce=n, uri=u, response=r, algorithm=SHA-512",
            "Digest username=\"\\",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
        assert!(parse_authorization(&format!("Digest username=\"{}\"", "a".repeat(5000))).is_err());
    }

    #[test]
    fn hash_digest_lines_match_the_definition() {
        let (sha, md5) = ha1_lines("pbx", "sotto", "s3cret");
        assert_eq!(sha, Algorithm::Sha256.hash_hex(&[b"pbx:sotto:s3cret"]));
        assert_eq!(md5.len(), 32);
        // MD5("Mufasa:testrealm@host.com:Circle Of Life"), RFC 2617 §3.5.
        let (_, md5) = ha1_lines("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(md5, "939e7578ed9e3c518a452acee763bce9");
    }
}
