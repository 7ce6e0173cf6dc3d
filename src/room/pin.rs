//! Room PINs: argon2id hashes in the config, and the lookup from typed digits to a room.
//!
//! A caller types a PIN without saying which room it is for, so the PIN itself selects
//! the room. Hashing the attempt once per room would make each wrong guess cost
//! more CPU the more rooms there are (and leak, through timing, how many exist). The
//! [`PinIndex`] therefore groups rooms by their hash parameters and salt: one argon2
//! run per group, then a constant-time comparison against every hash in the group.
//! `sotto hash-pin --salt` lets an operator give all rooms one salt, so an attempt costs
//! exactly one argon2 run whatever the number of rooms.

use super::state::Role;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

/// Why a PIN hash string or a PIN was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    /// Not a PHC string (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`).
    #[error("not an argon2id hash string")]
    NotAHash,
    /// Another algorithm than argon2id, or another version than 0x13.
    #[error("only argon2id version 19 hashes are accepted")]
    WrongAlgorithm,
    /// The parameters are outside what argon2 accepts.
    #[error("argon2 parameters out of range")]
    BadParams,
    /// A PIN must be digits only.
    #[error("a PIN is made of the digits 0-9 only")]
    NotDigits,
    /// Too short to resist guessing.
    #[error("a PIN needs at least {0} digits")]
    TooShort(usize),
    /// The salt could not be used.
    #[error("the salt must be 8 to 48 bytes of base64 without padding")]
    BadSalt,
}

/// Shortest PIN `hash-pin` accepts: 6 digits (1,000,000 combinations).
pub const MIN_PIN_DIGITS: usize = 6;

/// Shortest PIN `check-config` accepts without a warning: at the default guessing budget
/// an 8-digit PIN holds about 57 years, a 6-digit one about 7 months (docs/security.md).
pub const RECOMMENDED_PIN_DIGITS: usize = 8;

/// Longest PIN whose length a hash may record (the IVR collects at most 64 digits).
const MAX_RECORDED_DIGITS: usize = 64;

/// The PHC parameter in which `hash-pin` records the PIN's length (`...,p=1,d=8$...`).
///
/// The hash cannot tell how long the PIN was, and `check-config` must refuse PINs under
/// [`MIN_PIN_DIGITS`] and warn under [`RECOMMENDED_PIN_DIGITS`]. The length is no secret
/// worth keeping: whoever reads the hash can already try every PIN offline, and knowing
/// the length narrows that search by at most a factor of about 1.1.
const DIGITS_PARAM: &str = "d";

/// What `check-config` makes of a room PIN's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinLength {
    /// The hash does not record it (made before `hash-pin` recorded lengths).
    Unknown,
    /// Shorter than [`RECOMMENDED_PIN_DIGITS`] (never shorter than [`MIN_PIN_DIGITS`]:
    /// such a hash does not parse).
    Short(usize),
    /// [`RECOMMENDED_PIN_DIGITS`] or more.
    Enough(usize),
}

/// A parsed argon2id PIN hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PinHash {
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
    /// How many digits the PIN has, when the hash records it.
    digits: Option<usize>,
}

impl std::fmt::Debug for PinHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinHash(<redacted>)")
    }
}

impl PinHash {
    /// Parses a PHC string as written by `sotto hash-pin`. A recorded length under
    /// [`MIN_PIN_DIGITS`] is refused like a short PIN is by `hash-pin`.
    pub fn parse(s: &str) -> Result<PinHash, PinError> {
        let (s, digits) = take_digits_param(s.trim())?;
        if digits.is_some_and(|d| d < MIN_PIN_DIGITS) {
            return Err(PinError::TooShort(MIN_PIN_DIGITS));
        }
        let phc = PasswordHash::new(&s).map_err(|_| PinError::NotAHash)?;
        if phc.algorithm.as_str() != "argon2id" || phc.version.unwrap_or(0x13) != 0x13 {
            return Err(PinError::WrongAlgorithm);
        }
        let params = Params::try_from(&phc).map_err(|_| PinError::BadParams)?;
        let salt = phc.salt.ok_or(PinError::NotAHash)?;
        let mut salt_buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut salt_buf)
            .map_err(|_| PinError::NotAHash)?
            .to_vec();
        let hash = phc.hash.ok_or(PinError::NotAHash)?.as_bytes().to_vec();
        if hash.len() < 16 {
            return Err(PinError::BadParams);
        }
        Ok(PinHash {
            m_cost: params.m_cost(),
            t_cost: params.t_cost(),
            p_cost: params.p_cost(),
            salt,
            hash,
            digits,
        })
    }

    /// How long the PIN is, as far as the hash says.
    pub fn length(&self) -> PinLength {
        match self.digits {
            None => PinLength::Unknown,
            Some(d) if d < RECOMMENDED_PIN_DIGITS => PinLength::Short(d),
            Some(d) => PinLength::Enough(d),
        }
    }

    /// True when both hashes are the same string (two rooms with one PIN).
    pub fn same_hash(&self, other: &PinHash) -> bool {
        self == other
    }

    fn group_key(&self) -> (u32, u32, u32, usize, &[u8]) {
        (
            self.m_cost,
            self.t_cost,
            self.p_cost,
            self.hash.len(),
            &self.salt,
        )
    }

    fn derive(&self, pin: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; self.hash.len()]);
        // Parameters were validated in `parse`, so these cannot fail; if they did the
        // attempt simply does not match.
        if let Ok(params) =
            Params::new(self.m_cost, self.t_cost, self.p_cost, Some(self.hash.len()))
        {
            let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            if a.hash_password_into(pin, &self.salt, &mut out).is_err() {
                out.iter_mut().for_each(|b| *b = 0xff);
            }
        }
        out
    }

    /// Checks one PIN against this hash (one argon2 run).
    pub fn verify(&self, pin: &[u8]) -> bool {
        constant_time_eq(&self.derive(pin), &self.hash)
    }
}

/// Splits our `d=<digits>` parameter off a PHC string (argon2 refuses parameters it does
/// not know): the string argon2 reads, and the recorded length if there was one.
fn take_digits_param(s: &str) -> Result<(String, Option<usize>), PinError> {
    let mut parts: Vec<String> = s.split('$').map(str::to_string).collect();
    // `$argon2id$v=19$m=..,t=..,p=..$salt$hash`: the parameters follow the version.
    let Some(params) = parts.iter_mut().skip(2).find(|p| p.starts_with("m=")) else {
        return Ok((s.to_string(), None));
    };
    let mut digits = None;
    let mut kept = Vec::new();
    for item in params.split(',') {
        match item.split_once('=') {
            Some((DIGITS_PARAM, value)) => {
                let ok = digits.is_none()
                    && !value.is_empty()
                    && value.len() <= 2
                    && value.bytes().all(|b| b.is_ascii_digit());
                let d: usize = value.parse().map_err(|_| PinError::NotAHash)?;
                if !ok || d == 0 || d > MAX_RECORDED_DIGITS {
                    return Err(PinError::NotAHash);
                }
                digits = Some(d);
            }
            _ => kept.push(item.to_string()),
        }
    }
    *params = kept.join(",");
    Ok((parts.join("$"), digits))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Hashes a PIN for the config file; `salt` of `None` draws a random 16-byte salt.
pub fn hash_pin(pin: &str, salt: Option<&str>) -> Result<String, PinError> {
    let pin = pin.trim();
    if pin.is_empty() || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PinError::NotDigits);
    }
    if pin.len() < MIN_PIN_DIGITS {
        return Err(PinError::TooShort(MIN_PIN_DIGITS));
    }
    let salt = match salt {
        Some(s) => SaltString::from_b64(s).map_err(|_| PinError::BadSalt)?,
        None => SaltString::generate(&mut rand::rngs::OsRng),
    };
    use argon2::PasswordHasher;
    // OWASP's argon2id recommendation (m = 19 MiB, t = 2, p = 1): about 20-40 ms a try
    // on a server core, which bounds online and offline guessing together with the
    // per-call and per-source limits.
    let params = Params::new(19 * 1024, 2, 1, Some(32)).map_err(|_| PinError::BadParams)?;
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let h = a
        .hash_password(pin.as_bytes(), &salt)
        .map_err(|_| PinError::BadSalt)?
        .to_string();
    // Record the length beside the argon2 parameters, for `check-config`.
    let mut parts: Vec<&str> = h.split('$').collect();
    let params = match parts.get(3) {
        Some(p) if p.starts_with("m=") => format!("{p},{DIGITS_PARAM}={}", pin.len()),
        _ => return Err(PinError::BadParams),
    };
    parts[3] = &params;
    Ok(parts.join("$"))
}

/// Rooms sharing one (parameters, salt) group: the group's parameters and each room's index and hash.
type PinGroup = (PinHash, Vec<(usize, Vec<u8>)>);

/// Room lookup by PIN: one argon2 run per (parameters, salt) group.
#[derive(Debug, Clone)]
pub struct PinIndex {
    groups: Vec<PinGroup>,
}

impl PinIndex {
    /// Builds the index over rooms' hashes; the position in `hashes` is the room index returned.
    pub fn new<'a>(hashes: impl IntoIterator<Item = &'a PinHash>) -> PinIndex {
        let mut groups: Vec<PinGroup> = Vec::new();
        for (i, h) in hashes.into_iter().enumerate() {
            match groups
                .iter_mut()
                .find(|(g, _)| g.group_key() == h.group_key())
            {
                Some((_, members)) => members.push((i, h.hash.clone())),
                None => groups.push((h.clone(), vec![(i, h.hash.clone())])),
            }
        }
        PinIndex { groups }
    }

    /// Number of argon2 runs one attempt costs.
    pub fn cost_per_attempt(&self) -> usize {
        self.groups.len()
    }

    /// Whether `pin` is the PIN of room `room` (one argon2 run, for a dial-in call that
    /// already named its room).
    pub fn verify_room(&self, room: usize, pin: &[u8]) -> bool {
        for (params, members) in &self.groups {
            if let Some((_, hash)) = members.iter().find(|(r, _)| *r == room) {
                return constant_time_eq(&params.derive(pin), hash);
            }
        }
        false
    }

    /// Returns the index of the room whose PIN this is; the work done does not depend on which room matches.
    pub fn lookup(&self, pin: &[u8]) -> Option<usize> {
        let mut found = None;
        for (params, members) in &self.groups {
            let derived = params.derive(pin);
            for (room, hash) in members {
                if constant_time_eq(&derived, hash) && found.is_none() {
                    found = Some(*room);
                }
            }
        }
        found
    }
}

/// Every room's PIN and moderator PIN: which room a PIN opens, and as what.
#[derive(Debug, Clone)]
pub struct RoomPins {
    index: PinIndex,
    rooms: usize,
    /// The room of each moderator PIN, in index order after the rooms' PINs.
    moderators: Vec<usize>,
}

impl RoomPins {
    /// Builds the lookup over each room's PIN and optional moderator PIN.
    pub fn new<'a>(
        rooms: impl IntoIterator<Item = (&'a PinHash, Option<&'a PinHash>)>,
    ) -> RoomPins {
        let rooms: Vec<_> = rooms.into_iter().collect();
        let moderators: Vec<usize> = rooms
            .iter()
            .enumerate()
            .filter_map(|(i, (_, m))| m.map(|_| i))
            .collect();
        let hashes = rooms
            .iter()
            .map(|(p, _)| *p)
            .chain(rooms.iter().filter_map(|(_, m)| *m));
        RoomPins {
            index: PinIndex::new(hashes),
            rooms: rooms.len(),
            moderators,
        }
    }

    fn role_of(&self, i: usize) -> Option<(usize, Role)> {
        if i < self.rooms {
            return Some((i, Role::Member));
        }
        self.moderators
            .get(i - self.rooms)
            .map(|&r| (r, Role::Moderator))
    }

    /// The room `pin` opens and the role it gives; the work does not depend on which
    /// PIN matches.
    pub fn lookup(&self, pin: &[u8]) -> Option<(usize, Role)> {
        self.index.lookup(pin).and_then(|i| self.role_of(i))
    }

    /// The role `pin` gives in `room` (a dial-in call that already named its room).
    pub fn verify_room(&self, room: usize, pin: &[u8]) -> Option<Role> {
        if self.index.verify_room(room, pin) {
            return Some(Role::Member);
        }
        let k = self.moderators.iter().position(|&r| r == room)?;
        self.index
            .verify_room(self.rooms + k, pin)
            .then_some(Role::Moderator)
    }
}

/// Digest of a PIN attempt under the process's cache key.
pub type AttemptDigest = [u8; 32];

/// Correct PINs already verified, so that the many callers of one meeting who type the
/// same PIN cost one argon2 run between them, not one each.
///
/// Holds only keyed digests (HMAC-SHA-256 under a key drawn at start and never stored)
/// of attempts that *were* correct, with the room and role they opened; a wrong PIN is
/// never cached, so guessing costs a full argon2 run every time. Entries go when their
/// room empties. RAM only; the key is wiped on drop, and without it a digest says
/// nothing. See docs/security.md for the trade-off.
pub struct VerifiedPins {
    key: Zeroizing<[u8; 32]>,
    entries: std::collections::HashMap<AttemptDigest, (usize, Role)>,
}

impl VerifiedPins {
    /// An empty cache under `key` (draw it at random; it must never be written).
    pub fn new(key: [u8; 32]) -> VerifiedPins {
        VerifiedPins {
            key: Zeroizing::new(key),
            entries: std::collections::HashMap::new(),
        }
    }

    /// The digest of `pin` typed towards `target` (a dial-in call's room, or any room).
    pub fn digest(&self, target: Option<usize>, pin: &[u8]) -> AttemptDigest {
        use hmac::Mac;
        // HMAC-SHA-256 takes a key of any length; `new_from_slice` cannot fail for it.
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&*self.key) else {
            return [0; 32];
        };
        let tag = target.map_or(0u64, |r| r as u64 + 1);
        mac.update(&tag.to_be_bytes());
        mac.update(pin);
        mac.finalize().into_bytes().into()
    }

    /// The room and role a correct PIN with this digest opened, if cached.
    pub fn get(&self, digest: &AttemptDigest) -> Option<(usize, Role)> {
        self.entries.get(digest).copied()
    }

    /// Remembers a correct PIN's digest.
    pub fn insert(&mut self, digest: AttemptDigest, room: usize, role: Role) {
        self.entries.insert(digest, (room, role));
    }

    /// Forgets every PIN of `room` (it emptied).
    pub fn forget_room(&mut self, room: usize) {
        self.entries.retain(|_, (r, _)| *r != room);
    }

    /// Entries held (at most two PINs per room in use, each for PIN and dial-in entry).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A PHC string with the cheapest argon2id parameters (m = 8 KiB, t = 1): for tests only,
/// where the code path matters and the cost does not.
pub fn cheap_hash_for_tests(pin: &str, salt: &[u8]) -> String {
    use argon2::PasswordHasher;
    let params = Params::new(8, 1, 1, Some(32)).expect("constant parameters are valid");
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::encode_b64(salt).expect("test salts are 8..48 bytes");
    a.hash_password(pin.as_bytes(), &salt)
        .expect("hashing with valid parameters succeeds")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_hash(pin: &str, salt: &[u8]) -> PinHash {
        PinHash::parse(&cheap_hash_for_tests(pin, salt)).unwrap()
    }

    #[test]
    fn hash_pin_round_trip() {
        let s = hash_pin("31415926", Some("c290dG90ZXN0c2FsdA")).unwrap();
        assert!(s.starts_with("$argon2id$v=19$m=19456,t=2,p=1,d=8$"), "{s}");
        let h = PinHash::parse(&s).unwrap();
        assert!(h.verify(b"31415926"));
        assert!(!h.verify(b"31415927"));
        assert_eq!(h.length(), PinLength::Enough(8));
        let six = PinHash::parse(&hash_pin("314159", Some("c290dG90ZXN0c2FsdA")).unwrap());
        assert_eq!(six.unwrap().length(), PinLength::Short(6));
    }

    #[test]
    fn the_recorded_length_is_checked() {
        let h = cheap_hash_for_tests("12345678", b"saltsalt");
        // Hashes made before lengths were recorded still parse, length unknown.
        assert_eq!(PinHash::parse(&h).unwrap().length(), PinLength::Unknown);
        let with = |d: &str| h.replacen(",p=1$", &format!(",p=1,d={d}$"), 1);
        let parsed = PinHash::parse(&with("8")).unwrap();
        assert_eq!(parsed.length(), PinLength::Enough(8));
        // The parameter changes nothing about the hash itself.
        assert!(parsed.verify(b"12345678"));
        assert_eq!(
            PinHash::parse(&with("7")).unwrap().length(),
            PinLength::Short(7)
        );
        // Shorter than hash-pin allows: refused, as hash-pin refuses such a PIN.
        assert_eq!(PinHash::parse(&with("4")), Err(PinError::TooShort(6)));
        for bad in ["", "x", "0", "65", "123", "-8", "8,d=8"] {
            assert_eq!(
                PinHash::parse(&with(bad)),
                Err(PinError::NotAHash),
                "d={bad}"
            );
        }
    }

    #[test]
    fn hash_pin_refuses_weak_input() {
        assert_eq!(hash_pin("12345", None), Err(PinError::TooShort(6)));
        assert_eq!(hash_pin("12a456", None), Err(PinError::NotDigits));
        assert_eq!(hash_pin("", None), Err(PinError::NotDigits));
        assert_eq!(hash_pin("123456", Some("!")), Err(PinError::BadSalt));
    }

    #[test]
    fn parse_refuses_other_strings() {
        assert_eq!(PinHash::parse("31415926"), Err(PinError::NotAHash));
        assert_eq!(
            PinHash::parse("$argon2i$v=19$m=8,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            Err(PinError::WrongAlgorithm)
        );
        assert!(format!("{:?}", cheap_hash("123456", b"saltsalt")).contains("redacted"));
    }

    #[test]
    fn index_finds_room_with_one_run_per_salt() {
        let shared = b"sharedsalt";
        let rooms = [
            cheap_hash("11111111", shared),
            cheap_hash("22222222", shared),
            cheap_hash("33333333", b"othersalt"),
        ];
        let idx = PinIndex::new(rooms.iter());
        assert_eq!(idx.cost_per_attempt(), 2);
        assert_eq!(idx.lookup(b"22222222"), Some(1));
        assert_eq!(idx.lookup(b"33333333"), Some(2));
        assert_eq!(idx.lookup(b"11111111"), Some(0));
        assert_eq!(idx.lookup(b"44444444"), None);
        assert_eq!(idx.lookup(b""), None);
    }

    #[test]
    fn a_moderator_pin_opens_its_room_as_moderator() {
        let a = PinHash::parse(&cheap_hash_for_tests("11111111", b"saltsalt")).unwrap();
        let b = PinHash::parse(&cheap_hash_for_tests("22222222", b"othersalt")).unwrap();
        let bm = PinHash::parse(&cheap_hash_for_tests("99999999", b"modsalt1")).unwrap();
        let pins = RoomPins::new([(&a, None), (&b, Some(&bm))]);
        assert_eq!(pins.lookup(b"11111111"), Some((0, Role::Member)));
        assert_eq!(pins.lookup(b"22222222"), Some((1, Role::Member)));
        assert_eq!(pins.lookup(b"99999999"), Some((1, Role::Moderator)));
        assert_eq!(pins.lookup(b"12345678"), None);
        assert_eq!(pins.verify_room(1, b"99999999"), Some(Role::Moderator));
        assert_eq!(pins.verify_room(1, b"22222222"), Some(Role::Member));
        assert_eq!(pins.verify_room(0, b"99999999"), None);
        assert_eq!(pins.verify_room(0, b"22222222"), None);
    }

    #[test]
    fn only_what_is_inserted_is_cached_and_a_room_takes_its_pins_along() {
        let mut c = VerifiedPins::new([7; 32]);
        let d = c.digest(None, b"24681357");
        assert_ne!(
            d,
            c.digest(Some(0), b"24681357"),
            "the target is part of the key"
        );
        assert_ne!(d, c.digest(None, b"24681358"));
        assert_ne!(d, VerifiedPins::new([8; 32]).digest(None, b"24681357"));
        assert_eq!(c.get(&d), None);
        c.insert(d, 3, Role::Moderator);
        assert_eq!(c.get(&d), Some((3, Role::Moderator)));
        let e = c.digest(Some(4), b"11111111");
        c.insert(e, 4, Role::Member);
        c.forget_room(3);
        assert_eq!(c.get(&d), None);
        assert_eq!(c.get(&e), Some((4, Role::Member)));
        assert_eq!(c.len(), 1);
    }
}
