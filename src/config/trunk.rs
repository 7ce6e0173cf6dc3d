//! `[[trunk]]`: a PBX, carrier gateway or proxy that sends many callers' calls from a
//! few addresses, and the per-trunk policy that differs from the global one.
//!
//! A request belongs to the first trunk whose `networks` contain its source address;
//! requests from no trunk follow the global policy. `check-config` refuses trunks whose
//! networks overlap, so "first" never has to break a tie in practice.

use super::{ConfigError, Encryption, Validator};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use toml::Spanned;

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a /32
/// or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("not an IP address")]
    Address,
    /// The prefix length is not a number within the family's width.
    #[error("prefix length out of range")]
    Prefix,
    /// Bits are set below the prefix (`10.0.0.1/8`): probably a typo.
    #[error("host bits set below the prefix; did you mean {0}?")]
    HostBits(String),
}

impl Cidr {
    /// Whether `ip` lies in this network. IPv4-mapped IPv6 sources (`::ffff:10.0.0.1`,
    /// as a dual-stack socket reports them) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(a)), 32, self.prefix) == u128::from(u32::from(n))
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(a), 128, self.prefix) == u128::from(n)
            }
            _ => false,
        }
    }

    /// Whether the two networks share any address (one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `value` (of `width` bits) with the bits below `prefix` cleared.
fn masked(value: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u32::from(width - prefix.min(width));
    (value >> keep) << keep
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        // Brackets are allowed around IPv6 addresses, as in URIs.
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| CidrError::Address)?);
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| CidrError::Prefix)?,
            None => width,
        };
        if prefix > width {
            return Err(CidrError::Prefix);
        }
        let value = match network {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let cleared = masked(value, width, prefix);
        if cleared != value {
            let fixed = match network {
                IpAddr::V4(_) => IpAddr::V4((cleared as u32).into()),
                IpAddr::V6(_) => IpAddr::V6(cleared.into()),
            };
            return Err(CidrError::HostBits(format!("{fixed}/{prefix}")));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// How a trunk's callers send their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// RFC 4733 telephone-events only.
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay`, `application/dtmf`) only.
    Info,
    /// Tones in the audio (for gateways that send neither): detected in the decoded audio.
    Inband,
    /// All three.
    #[default]
    Auto,
}

impl DtmfMode {
    /// Whether keys are looked for as tones in the audio.
    pub fn inband(self) -> bool {
        matches!(self, DtmfMode::Inband | DtmfMode::Auto)
    }
}

/// Digest credentials a trunk must present (RFC 3261 §22.4, RFC 8760): only the HA1
/// digests are stored, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// The user name the trunk authenticates as.
    pub user: String,
    /// The realm of our challenges.
    pub realm: String,
    /// SHA-256(user:realm:password), if that algorithm is accepted.
    pub ha1_sha256: Option<[u8; 32]>,
    /// MD5(user:realm:password), if that algorithm is accepted.
    pub ha1_md5: Option<[u8; 16]>,
}

impl fmt::Debug for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // HA1 is password-equivalent for this realm: never printed.
        f.debug_struct("DigestCredentials")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// One validated `[[trunk]]`.
#[derive(Debug, Clone)]
pub struct TrunkConfig {
    /// Operator's label (may appear in aggregate counters; it names no person).
    pub name: String,
    /// Source networks.
    pub networks: Vec<Cidr>,
    /// Digest authentication of its INVITEs, if required.
    pub digest: Option<DigestCredentials>,
    /// Media encryption policy for its calls (`None`: `[media] encryption`).
    pub encryption: Option<Encryption>,
    /// Accept SDES keys over UDP/TCP from it (`None`: `[media] allow_sdes_without_tls`).
    pub allow_sdes_without_tls: Option<bool>,
    /// How its callers' keys arrive.
    pub dtmf: DtmfMode,
    /// SIP messages per second accepted from each of its addresses.
    pub messages_per_second: u32,
    /// Calls it may hold at once.
    pub max_calls: usize,
    /// Calls of it that may be answered and not yet acknowledged at once.
    pub max_calls_in_setup: usize,
}

/// Default trunk message rate: 200 call setups a second (INVITE, ACK, a few digits by
/// INFO, BYE, with retransmissions) fit with room to spare.
pub const DEFAULT_TRUNK_MESSAGES_PER_SECOND: u32 = 2_000;
/// Default number of calls one trunk may hold.
pub const DEFAULT_TRUNK_MAX_CALLS: usize = 5_000;
/// Default calls of one trunk answered and not yet acknowledged: 200 setups a second
/// whose ACKs take up to two seconds (retransmitted after loss).
pub const DEFAULT_TRUNK_MAX_CALLS_IN_SETUP: usize = 400;

/// The trunks, in config order, matched by source address.
#[derive(Debug, Clone, Default)]
pub struct Trunks {
    trunks: Vec<TrunkConfig>,
}

/// A trunk's index in [`Trunks`].
pub type TrunkId = usize;

impl Trunks {
    /// A table over validated trunks.
    pub fn new(trunks: Vec<TrunkConfig>) -> Trunks {
        Trunks { trunks }
    }

    /// The first trunk whose networks contain `ip`.
    pub fn match_source(&self, ip: IpAddr) -> Option<TrunkId> {
        self.trunks
            .iter()
            .position(|t| t.networks.iter().any(|n| n.contains(ip)))
    }

    /// The trunk with this id.
    pub fn get(&self, id: TrunkId) -> Option<&TrunkConfig> {
        self.trunks.get(id)
    }

    /// All trunks, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &TrunkConfig> {
        self.trunks.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.trunks.is_empty()
    }

    /// Sum of the trunks' `max_calls_in_setup`.
    pub fn calls_in_setup(&self) -> usize {
        self.trunks.iter().map(|t| t.max_calls_in_setup).sum()
    }
}

/// Decodes `n` bytes of lower- or upper-case hex.
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

// ---- the raw `[[trunk]]` schema and its validation ---------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrunk {
    name: Spanned<String>,
    networks: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    digest: Option<Spanned<RawDigest>>,
    #[serde(default)]
    encryption: Option<Encryption>,
    #[serde(default)]
    allow_sdes_without_tls: Option<bool>,
    #[serde(default)]
    dtmf: DtmfMode,
    #[serde(default = "default_trunk_rate")]
    messages_per_second: Spanned<u32>,
    #[serde(default = "default_trunk_calls")]
    max_calls: Spanned<usize>,
    #[serde(default = "default_trunk_setup")]
    max_calls_in_setup: Spanned<usize>,
}

fn default_trunk_rate() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_TRUNK_MESSAGES_PER_SECOND)
}
fn default_trunk_calls() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_TRUNK_MAX_CALLS)
}
fn default_trunk_setup() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_TRUNK_MAX_CALLS_IN_SETUP)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    user: String,
    realm: String,
    #[serde(default)]
    ha1_sha256: Option<String>,
    #[serde(default)]
    ha1_md5: Option<String>,
    /// Accepted only to refuse it with a clear message: passwords are never stored.
    #[serde(default)]
    password: Option<String>,
}

/// Validates the `[[trunk]]` entries.
pub(super) fn trunk_configs(raw: &[RawTrunk], v: &Validator<'_>) -> Result<Trunks, ConfigError> {
    let mut trunks: Vec<TrunkConfig> = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let name = t.name.get_ref().trim().to_string();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_name {
            return Err(v.invalid(
                t.name.span(),
                &format!("trunk[{i}].name"),
                "1 to 64 characters of letters, digits, '-', '_' and '.' (it may label counters)",
            ));
        }
        if trunks.iter().any(|o| o.name == name) {
            return Err(v.invalid(
                t.name.span(),
                &format!("trunk[{i}].name"),
                "another trunk has this name",
            ));
        }
        if t.networks.get_ref().is_empty() {
            return Err(v.invalid(
                t.networks.span(),
                &format!("trunk[{i}].networks"),
                "list at least one source network, e.g. \"10.0.0.0/8\"",
            ));
        }
        let mut networks = Vec::new();
        for (j, n) in t.networks.get_ref().iter().enumerate() {
            let key = format!("trunk[{i}].networks[{j}]");
            let cidr: Cidr = n.get_ref().parse().map_err(|e| {
                v.invalid(
                    n.span(),
                    &key,
                    &format!("{e}: expected a network like \"10.0.0.0/8\" or \"2001:db8::/32\""),
                )
            })?;
            for (k, other) in trunks.iter().enumerate() {
                if let Some(o) = other.networks.iter().find(|o| o.overlaps(&cidr)) {
                    return Err(v.invalid(
                        n.span(),
                        &key,
                        &format!(
                            "{cidr} overlaps {o} of trunk `{}` (trunk[{k}]); a source must \
                             belong to one trunk",
                            other.name
                        ),
                    ));
                }
            }
            networks.push(cidr);
        }
        let digest = match &t.digest {
            None => None,
            Some(d) => Some(digest_credentials(d, i, v)?),
        };
        let rate = *t.messages_per_second.get_ref();
        if !(1..=1_000_000).contains(&rate) {
            return Err(v.invalid(
                t.messages_per_second.span(),
                &format!("trunk[{i}].messages_per_second"),
                "must be between 1 and 1000000",
            ));
        }
        let max_calls = *t.max_calls.get_ref();
        if !(1..=1_000_000).contains(&max_calls) {
            return Err(v.invalid(
                t.max_calls.span(),
                &format!("trunk[{i}].max_calls"),
                "must be between 1 and 1000000",
            ));
        }
        let in_setup = *t.max_calls_in_setup.get_ref();
        if !(1..=max_calls.min(100_000)).contains(&in_setup) {
            return Err(v.invalid(
                t.max_calls_in_setup.span(),
                &format!("trunk[{i}].max_calls_in_setup"),
                "must be between 1 and max_calls (at most 100000)",
            ));
        }
        trunks.push(TrunkConfig {
            name,
            networks,
            digest,
            encryption: t.encryption,
            allow_sdes_without_tls: t.allow_sdes_without_tls,
            dtmf: t.dtmf,
            messages_per_second: rate,
            max_calls,
            max_calls_in_setup: in_setup,
        });
    }
    Ok(Trunks::new(trunks))
}

fn digest_credentials(
    d: &Spanned<RawDigest>,
    i: usize,
    v: &Validator<'_>,
) -> Result<DigestCredentials, ConfigError> {
    let key = format!("trunk[{i}].digest");
    let raw = d.get_ref();
    if raw.password.is_some() {
        return Err(v.invalid(
            d.span(),
            &key,
            "a plaintext password is never stored: put ha1_sha256 and ha1_md5 instead, as \
             printed by `sotto hash-digest --user USER --realm REALM` (password on stdin)",
        ));
    }
    let user = raw.user.trim().to_string();
    let realm = raw.realm.trim().to_string();
    let quotable = |s: &str| !s.is_empty() && !s.contains(['"', '\\', '\r', '\n']);
    if !quotable(&user) || !quotable(&realm) {
        return Err(v.invalid(
            d.span(),
            &key,
            "user and realm must be non-empty and free of quotes, backslashes and line breaks",
        ));
    }
    let ha1_sha256 = match &raw.ha1_sha256 {
        None => None,
        Some(h) => Some(parse_hex::<32>(h).ok_or_else(|| {
            v.invalid(
                d.span(),
                &format!("{key}.ha1_sha256"),
                "expected 64 hex digits",
            )
        })?),
    };
    let ha1_md5 = match &raw.ha1_md5 {
        None => None,
        Some(h) => Some(parse_hex::<16>(h).ok_or_else(|| {
            v.invalid(
                d.span(),
                &format!("{key}.ha1_md5"),
                "expected 32 hex digits",
            )
        })?),
    };
    if ha1_sha256.is_none() && ha1_md5.is_none() {
        return Err(v.invalid(
            d.span(),
            &key,
            "give ha1_sha256 and/or ha1_md5 (from `sotto hash-digest`)",
        ));
    }
    Ok(DigestCredentials {
        user,
        realm,
        ha1_sha256,
        ha1_md5,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_contain_their_addresses_only() {
        let n = cidr("10.0.0.0/8");
        assert!(n.contains(ip("10.0.0.1")));
        assert!(n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")));
        assert!(!n.contains(ip("9.255.255.255")));
        assert!(
            n.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped sources match"
        );
        assert!(!n.contains(ip("2001:db8::1")));
        let host = cidr("192.0.2.7");
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("192.0.2.128/25").contains(ip("192.0.2.200")));
        assert!(!cidr("192.0.2.128/25").contains(ip("192.0.2.100")));
    }

    #[test]
    fn ipv6_networks_contain_their_addresses_only() {
        let n = cidr("2001:db8::/32");
        assert!(n.contains(ip("2001:db8::1")));
        assert!(n.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!n.contains(ip("2001:db9::1")));
        assert!(!n.contains(ip("10.0.0.1")));
        assert!(cidr("[::1]").contains(ip("::1")));
        assert!(!cidr("::1/128").contains(ip("::2")));
        assert!(cidr("fe80::/10").contains(ip("febf::1")));
        assert!(!cidr("fe80::/10").contains(ip("fec0::1")));
    }

    #[test]
    fn bad_cidrs_are_refused_with_a_reason() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits("10.0.0.0/8".into()))
        );
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix));
        assert_eq!("2001:db8::/129".parse::<Cidr>(), Err(CidrError::Prefix));
        assert_eq!("pbx.example".parse::<Cidr>(), Err(CidrError::Address));
        assert_eq!("10.0.0.0/x".parse::<Cidr>(), Err(CidrError::Prefix));
    }

    #[test]
    fn overlap_is_containment_either_way() {
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.1.0.0/16")));
        assert!(cidr("10.1.0.0/16").overlaps(&cidr("10.0.0.0/8")));
        assert!(!cidr("10.0.0.0/16").overlaps(&cidr("10.1.0.0/16")));
        assert!(!cidr("10.0.0.0/8").overlaps(&cidr("2001:db8::/32")));
    }

    #[test]
    fn the_first_matching_trunk_wins() {
        let trunk = |name: &str, nets: &[&str]| TrunkConfig {
            name: name.into(),
            networks: nets.iter().map(|n| cidr(n)).collect(),
            digest: None,
            encryption: None,
            allow_sdes_without_tls: None,
            dtmf: DtmfMode::Auto,
            messages_per_second: DEFAULT_TRUNK_MESSAGES_PER_SECOND,
            max_calls: DEFAULT_TRUNK_MAX_CALLS,
            max_calls_in_setup: DEFAULT_TRUNK_MAX_CALLS_IN_SETUP,
        };
        let t = Trunks::new(vec![
            trunk("pbx", &["10.0.0.0/8", "2001:db8::/32"]),
            trunk("carrier", &["192.0.2.0/24"]),
        ]);
        assert_eq!(t.match_source(ip("10.2.3.4")), Some(0));
        assert_eq!(t.match_source(ip("2001:db8::5")), Some(0));
        assert_eq!(t.match_source(ip("192.0.2.9")), Some(1));
        assert_eq!(t.match_source(ip("127.0.0.1")), None);
        assert_eq!(t.calls_in_setup(), 2 * DEFAULT_TRUNK_MAX_CALLS_IN_SETUP);
    }

    #[test]
    fn hex_digests_parse_exactly() {
        assert_eq!(parse_hex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(parse_hex::<2>("0aF"), None);
        assert_eq!(parse_hex::<2>("0aFg"), None);
        assert_eq!(parse_hex::<2>("éé"), None);
    }
}
