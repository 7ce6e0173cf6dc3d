//! Rooms in the config file: `[[room]]`, `[room_defaults]` and the in-call key
//! bindings of `[controls]`.

use super::{ConfigError, Validator};
use crate::media::dtmf::Digit;
use crate::room::dial_in::DialIn;
use crate::room::keys::{Control, KeyMap, Sequence};
use crate::room::pin::PinHash;
use crate::room::RoomOptions;
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// Longest grace after the last moderator left (`end_grace_secs`).
const MAX_END_GRACE_SECS: u64 = 3600;

/// Longest in-call digit timeout (`[controls] digit_timeout_secs`).
const MAX_KEY_TIMEOUT_SECS: u64 = 30;

/// One conference room.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Operator's name for the room (never logged).
    pub id: String,
    /// argon2id hash of the room PIN.
    pub pin: PinHash,
    /// argon2id hash of the moderator PIN: typing it instead makes the caller a moderator.
    pub moderator_pin: Option<PinHash>,
    /// Request-URI users that lead straight to this room (see `room::dial_in`).
    pub dial_in: Vec<String>,
    /// Whether a call to a `dial_in` target must still type the room's PIN. When false,
    /// a call from a trunk or over TLS joins at once (the PBX authenticated its users);
    /// any other caller is asked for the PIN all the same.
    pub pin_required: bool,
    /// Moderation and announcements (its own keys over `[room_defaults]`).
    pub options: RoomOptions,
}

/// Room options as written: in `[room_defaults]`, or in a `[[room]]` over them.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoomOptions {
    wait_for_moderator: Option<bool>,
    end_with_moderator: Option<bool>,
    end_grace_secs: Option<Spanned<u64>>,
    start_muted: Option<bool>,
    max_members: Option<usize>,
    join_leave_tones: Option<bool>,
    announce_count: Option<bool>,
    lecture_self_unmute: Option<bool>,
    encryption: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoom {
    id: Spanned<String>,
    pin: Spanned<String>,
    moderator_pin: Option<Spanned<String>>,
    #[serde(default)]
    dial_in: Vec<Spanned<String>>,
    #[serde(default = "default_true")]
    pin_required: Spanned<bool>,
    // The room options, each over [room_defaults] (serde cannot flatten with
    // deny_unknown_fields).
    wait_for_moderator: Option<bool>,
    end_with_moderator: Option<bool>,
    end_grace_secs: Option<Spanned<u64>>,
    start_muted: Option<bool>,
    max_members: Option<usize>,
    join_leave_tones: Option<bool>,
    announce_count: Option<bool>,
    lecture_self_unmute: Option<bool>,
    encryption: Option<Spanned<String>>,
}

impl RawRoom {
    fn options(&self) -> RawRoomOptions {
        RawRoomOptions {
            wait_for_moderator: self.wait_for_moderator,
            end_with_moderator: self.end_with_moderator,
            end_grace_secs: self.end_grace_secs.clone(),
            start_muted: self.start_muted,
            max_members: self.max_members,
            join_leave_tones: self.join_leave_tones,
            announce_count: self.announce_count,
            lecture_self_unmute: self.lecture_self_unmute,
            encryption: self.encryption.clone(),
        }
    }
}

fn default_true() -> Spanned<bool> {
    Spanned::new(0..0, true)
}

/// `[controls]`: a key sequence per control, and the digit timeout.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControls {
    mute: Option<Spanned<String>>,
    hand: Option<Spanned<String>>,
    count: Option<Spanned<String>>,
    quieter: Option<Spanned<String>>,
    louder: Option<Spanned<String>>,
    help: Option<Spanned<String>>,
    lock: Option<Spanned<String>>,
    lecture: Option<Spanned<String>>,
    floor: Option<Spanned<String>>,
    remove_last: Option<Spanned<String>>,
    mute_all: Option<Spanned<String>>,
    digit_timeout_secs: Option<Spanned<u64>>,
    sas_confirm: Option<Spanned<String>>,
}

impl RawControls {
    fn binding(&self, c: Control) -> Option<&Spanned<String>> {
        match c {
            Control::Mute => self.mute.as_ref(),
            Control::Hand => self.hand.as_ref(),
            Control::Count => self.count.as_ref(),
            Control::Quieter => self.quieter.as_ref(),
            Control::Louder => self.louder.as_ref(),
            Control::Help => self.help.as_ref(),
            Control::Lock => self.lock.as_ref(),
            Control::Lecture => self.lecture.as_ref(),
            Control::Floor => self.floor.as_ref(),
            Control::RemoveLast => self.remove_last.as_ref(),
            Control::MuteAll => self.mute_all.as_ref(),
        }
    }
}

/// The key bindings of `[controls]`.
pub(super) fn key_map(raw: &RawControls, v: &Validator) -> Result<KeyMap, ConfigError> {
    let mut overrides = Vec::new();
    let mut first_span = None;
    for c in Control::ALL {
        if let Some(text) = raw.binding(c) {
            let key = format!("controls.{}", c.config_key().0);
            let seq = Sequence::parse(text.get_ref().trim())
                .map_err(|e| v.invalid(text.span(), &key, &e.to_string()))?;
            first_span.get_or_insert(text.span());
            overrides.push((c, seq));
        }
    }
    let timeout = match &raw.digit_timeout_secs {
        Some(t) if !(1..=MAX_KEY_TIMEOUT_SECS).contains(t.get_ref()) => {
            return Err(v.invalid(
                t.span(),
                "controls.digit_timeout_secs",
                &format!("must be 1 to {MAX_KEY_TIMEOUT_SECS}"),
            ))
        }
        Some(t) => Duration::from_secs(*t.get_ref()),
        None => KeyMap::default().timeout(),
    };
    let map = KeyMap::new(&overrides, timeout).map_err(|e| {
        v.invalid(
            first_span.unwrap_or(0..0),
            "controls",
            &format!("{e}; every binding must be complete before another could start"),
        )
    })?;
    let Some(text) = &raw.sas_confirm else {
        return Ok(map);
    };
    let key = match text.get_ref().trim() {
        k if k.chars().count() == 1 => k.chars().next().and_then(Digit::from_char),
        _ => None,
    }
    .ok_or_else(|| {
        v.invalid(
            text.span(),
            "controls.sas_confirm",
            "expected one key: 0-9, * or #",
        )
    })?;
    map.with_sas_confirm(key)
        .map_err(|e| v.invalid(text.span(), "controls.sas_confirm", &e.to_string()))
}

/// Options of one room: its own keys over the defaults over the built-in defaults.
fn options(
    room: &RawRoomOptions,
    defaults: &RawRoomOptions,
    key: &str,
    v: &Validator,
) -> Result<RoomOptions, ConfigError> {
    let builtin = RoomOptions::default();
    let pick = |a: Option<bool>, b: Option<bool>, c: bool| a.or(b).unwrap_or(c);
    let grace = room
        .end_grace_secs
        .as_ref()
        .or(defaults.end_grace_secs.as_ref());
    let end_grace = match grace {
        Some(g) if *g.get_ref() > MAX_END_GRACE_SECS => {
            return Err(v.invalid(
                g.span(),
                &format!("{key}.end_grace_secs"),
                &format!("must be 0 to {MAX_END_GRACE_SECS}"),
            ))
        }
        Some(g) => Duration::from_secs(*g.get_ref()),
        None => builtin.end_grace,
    };
    Ok(RoomOptions {
        wait_for_moderator: pick(
            room.wait_for_moderator,
            defaults.wait_for_moderator,
            builtin.wait_for_moderator,
        ),
        end_with_moderator: pick(
            room.end_with_moderator,
            defaults.end_with_moderator,
            builtin.end_with_moderator,
        ),
        end_grace,
        start_muted: pick(room.start_muted, defaults.start_muted, builtin.start_muted),
        max_members: room
            .max_members
            .or(defaults.max_members)
            .unwrap_or(builtin.max_members),
        join_leave_tones: pick(
            room.join_leave_tones,
            defaults.join_leave_tones,
            builtin.join_leave_tones,
        ),
        announce_count: pick(
            room.announce_count,
            defaults.announce_count,
            builtin.announce_count,
        ),
        lecture_self_unmute: pick(
            room.lecture_self_unmute,
            defaults.lecture_self_unmute,
            builtin.lecture_self_unmute,
        ),
        zrtp_required: match room.encryption.as_ref().or(defaults.encryption.as_ref()) {
            None => builtin.zrtp_required,
            Some(e) if e.get_ref() == "zrtp-required" => true,
            // The node's policy ([media] encryption) applies.
            Some(e) if e.get_ref() == "media" => false,
            Some(e) => {
                return Err(v.invalid(
                    e.span(),
                    &format!("{key}.encryption"),
                    "expected \"zrtp-required\" or \"media\" (the [media] policy)",
                ))
            }
        },
    })
}

fn pin_hash(text: &Spanned<String>, key: &str, v: &Validator) -> Result<PinHash, ConfigError> {
    PinHash::parse(text.get_ref()).map_err(|e| {
        v.invalid(
            text.span(),
            key,
            &format!("{e}; make one with `sotto hash-pin`"),
        )
    })
}

/// The rooms and their dial-in targets.
pub(super) fn room_configs(
    raw: &[RawRoom],
    defaults: &RawRoomOptions,
    v: &Validator,
) -> Result<(Vec<RoomConfig>, DialIn), ConfigError> {
    // Defaults are checked even with no room, so a wrong value never waits for one.
    options(defaults, &RawRoomOptions::default(), "room_defaults", v)?;
    let mut rooms: Vec<RoomConfig> = Vec::new();
    let mut pins: Vec<PinHash> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let id = r.id.get_ref().trim().to_string();
        if id.is_empty() {
            return Err(v.invalid(r.id.span(), &format!("room[{i}].id"), "must not be empty"));
        }
        if rooms.iter().any(|o| o.id == id) {
            return Err(v.invalid(
                r.id.span(),
                &format!("room[{i}].id"),
                "another room has this id",
            ));
        }
        let pin = pin_hash(&r.pin, &format!("room[{i}].pin"), v)?;
        if pins.iter().any(|o| o.same_hash(&pin)) {
            return Err(v.invalid(
                r.pin.span(),
                &format!("room[{i}].pin"),
                "another room's PIN or moderator PIN has the same hash; every PIN must be \
                 its own",
            ));
        }
        pins.push(pin.clone());
        let moderator_pin = match &r.moderator_pin {
            Some(text) => {
                let key = format!("room[{i}].moderator_pin");
                let hash = pin_hash(text, &key, v)?;
                if pins.iter().any(|o| o.same_hash(&hash)) {
                    return Err(v.invalid(
                        text.span(),
                        &key,
                        "the same hash as a room PIN or another moderator PIN; hash the \
                         moderator PIN on its own",
                    ));
                }
                pins.push(hash.clone());
                Some(hash)
            }
            None => None,
        };
        rooms.push(RoomConfig {
            id,
            pin,
            moderator_pin,
            dial_in: r.dial_in.iter().map(|a| a.get_ref().clone()).collect(),
            pin_required: *r.pin_required.get_ref(),
            options: options(&r.options(), defaults, &format!("room[{i}]"), v)?,
        });
    }
    let mut dial_in = DialIn::new();
    for (i, r) in raw.iter().enumerate() {
        for (j, alias) in r.dial_in.iter().enumerate() {
            let key = format!("room[{i}].dial_in[{j}]");
            match dial_in.add(alias.get_ref(), i) {
                Ok(true) => {}
                Ok(false) => return Err(v.invalid(alias.span(), &key, "must not be empty")),
                Err(e) => {
                    return Err(v.invalid(
                        alias.span(),
                        &key,
                        &format!(
                            "already leads to room `{}`; a dial-in target names one room \
                             (numbers compare by their digits: + and 00 and separators \
                             do not count)",
                            rooms[e.first].id
                        ),
                    ))
                }
            }
        }
    }
    Ok((rooms, dial_in))
}

/// `pin_required = false` needs a way to know callers other than the PIN.
pub(super) fn check_pin_free(
    raw: &[RawRoom],
    trusted_path: bool,
    v: &Validator,
) -> Result<(), ConfigError> {
    for (i, r) in raw.iter().enumerate() {
        if !*r.pin_required.get_ref() && !trusted_path {
            return Err(v.invalid(
                r.pin_required.span(),
                &format!("room[{i}].pin_required"),
                "false needs a [[trunk]] or a sip.tls listener to admit callers without \
                 a PIN (anyone reaching plain UDP/TCP would otherwise walk in)",
            ));
        }
        if !*r.pin_required.get_ref() && r.dial_in.is_empty() {
            return Err(v.invalid(
                r.pin_required.span(),
                &format!("room[{i}].pin_required"),
                "false only applies to calls to the room's dial_in targets; list some",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use crate::room::keys::Control;
    use crate::room::pin::cheap_hash_for_tests;
    use std::path::Path;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, super::ConfigError> {
        Config::parse(text, Path::new("t.toml"), Path::new("/etc/sotto"))
    }

    fn hash(pin: &str) -> String {
        cheap_hash_for_tests(pin, b"saltsalt")
    }

    #[test]
    fn the_sas_confirmation_key_is_one_key_that_starts_no_control() {
        let c = parse("[controls]\nsas_confirm = \"0\"\n").unwrap();
        assert_eq!(c.controls.sas_confirm().as_char(), '0');
        assert_eq!(parse("").unwrap().controls.sas_confirm().as_char(), '#');
        // Every control starts with '*': it cannot confirm.
        let e = parse("[controls]\nsas_confirm = \"*\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("controls.sas_confirm") && e.contains("starts"),
            "{e}"
        );
        let e = parse("[controls]\nsas_confirm = \"##\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("one key"), "{e}");
    }

    #[test]
    fn a_room_may_require_zrtp_and_nonsense_is_named() {
        let text = format!(
            "[[room]]\nid = \"a\"\npin = \"{}\"\nencryption = \"zrtp-required\"\n\
             [[room]]\nid = \"b\"\npin = \"{}\"\n",
            hash("11223344"),
            hash("55667788")
        );
        let c = parse(&text).unwrap();
        assert!(c.rooms[0].options.zrtp_required);
        assert!(!c.rooms[1].options.zrtp_required);
        let bad = text.replace("zrtp-required", "zrtp");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("room[0].encryption") && e.contains("zrtp-required"),
            "{e}"
        );
    }

    #[test]
    fn room_options_come_from_the_room_then_the_defaults_then_built_in() {
        let text = format!(
            "[limits]\nmax_members_total = 500\n\
             [room_defaults]\nstart_muted = true\nmax_members = 20\nend_grace_secs = 30\n\
             [[room]]\nid = \"a\"\npin = \"{}\"\nmoderator_pin = \"{}\"\nmax_members = 3\n\
             wait_for_moderator = true\nend_with_moderator = true\nannounce_count = true\n\
             join_leave_tones = false\nlecture_self_unmute = true\n\
             [[room]]\nid = \"b\"\npin = \"{}\"\n",
            hash("11111111"),
            hash("22222222"),
            hash("33333333")
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.limits.max_members_total, 500);
        let a = &c.rooms[0].options;
        assert!(a.start_muted && a.wait_for_moderator && a.end_with_moderator);
        assert!(a.announce_count && a.lecture_self_unmute && !a.join_leave_tones);
        assert_eq!(a.max_members, 3);
        assert_eq!(a.end_grace, Duration::from_secs(30));
        assert!(c.rooms[0]
            .moderator_pin
            .as_ref()
            .unwrap()
            .verify(b"22222222"));
        let b = &c.rooms[1].options;
        assert!(b.start_muted && !b.wait_for_moderator && b.join_leave_tones);
        assert_eq!(b.max_members, 20);
        assert!(c.rooms[1].moderator_pin.is_none());
    }

    #[test]
    fn a_moderator_pin_must_not_be_a_room_pin_and_values_are_checked() {
        let h = hash("11111111");
        let e = parse(&format!(
            "[[room]]\nid = \"a\"\npin = \"{h}\"\nmoderator_pin = \"{h}\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("room[0].moderator_pin"), "{e}");
        let e = parse("[room_defaults]\nend_grace_secs = 99999\n").unwrap_err();
        assert!(
            e.to_string().contains("room_defaults.end_grace_secs"),
            "{e}"
        );
        let e = parse("[room_defaults]\nmute = \"*6\"\n").unwrap_err();
        assert!(e.to_string().contains("mute"), "{e}");
    }

    #[test]
    fn key_bindings_are_configurable_and_checked() {
        let c = parse("[controls]\nmute = \"#6\"\ndigit_timeout_secs = 5\n").unwrap();
        assert_eq!(c.controls.binding(Control::Mute).to_string(), "#6");
        assert_eq!(c.controls.binding(Control::Hand).to_string(), "*9");
        assert_eq!(c.controls.timeout(), Duration::from_secs(5));
        let e = parse("[controls]\nmute = \"*x\"\n").unwrap_err();
        assert!(e.to_string().contains("controls.mute"), "{e}");
        let e = parse("[controls]\nhelp = \"*\"\n").unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = parse("[controls]\ndigit_timeout_secs = 0\n").unwrap_err();
        assert!(e.to_string().contains("digit_timeout_secs"), "{e}");
        let e = parse("[controls]\nsing = \"*1\"\n").unwrap_err();
        assert!(e.to_string().contains("sing"), "{e}");
    }
}
