//! In-call controls through the shard: keys as RFC 4733 events in, what each member
//! hears out, in virtual time.

use super::tests::{addr, level, media, prompts, seed, sent, share, tone_frames, Tx, TICK};
use super::*;
use crate::media::g711::{ulaw_decode, ulaw_encode};

/// A shard with members in rooms, each sending a constant level every tick.
struct Bridge {
    conf: Conference,
    now: Instant,
    /// Call, slot, phone, level sent, number (address 127.0.0.n).
    members: Vec<(CallToken, usize, Tx, i16, u8)>,
    heard: HashMap<SocketAddr, Vec<i16>>,
    hangups: Vec<(CallToken, HangupReason)>,
}

impl Bridge {
    fn new(options: &[(RoomKey, RoomOptions)]) -> Bridge {
        let mut all = vec![RoomOptions::default(); 16];
        for &(k, o) in options {
            all[k] = o;
        }
        let settings = ConferenceSettings {
            rtp_timeout: Duration::from_secs(60),
            room_options: Arc::from(all),
            ..ConferenceSettings::default()
        };
        Bridge {
            conf: Conference::new(settings, prompts()),
            now: Instant::now(),
            members: Vec::new(),
            heard: HashMap::new(),
            hangups: Vec::new(),
        }
    }

    /// Adds member `n` (1-based, its address 127.0.0.n) to `room` as `role`.
    fn join(&mut self, n: u8, room: RoomKey, role: Role) -> CallToken {
        let call = CallToken::from_raw(u64::from(n));
        let slot = self
            .conf
            .add_member(self.now, call, media(n), seed(n))
            .unwrap();
        self.conf.join_as(self.now, call, room, role);
        self.members.push((call, slot, Tx::new(n), 0, n));
        call
    }

    fn index(&self, n: u8) -> usize {
        self.members
            .iter()
            .position(|(c, ..)| *c == CallToken::from_raw(u64::from(n)))
            .unwrap()
    }

    fn talk(&mut self, n: u8, level: i16) {
        let i = self.index(n);
        self.members[i].3 = ulaw_decode(ulaw_encode(level));
    }

    /// `ticks` ticks of everyone's audio.
    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.now += TICK;
            for (_, slot, tx, level, n) in self.members.iter_mut() {
                let mut pkt = tx.audio(*level);
                self.conf.handle_rtp(self.now, *slot, addr(*n), &mut pkt);
            }
            self.conf.handle_tick(self.now);
            self.heard = sent(&mut self.conf);
            while let Some(ev) = self.conf.poll_event() {
                if let ConferenceEvent::Hangup { call, reason } = ev {
                    self.hangups.push((call, reason));
                }
            }
        }
    }

    /// Member `n` sends these µ-law frames, one a tick (the others their levels);
    /// returns what member `listener` heard meanwhile.
    fn send_frames(&mut self, n: u8, frames: &[[u8; 160]], listener: u8) -> Vec<i16> {
        let i = self.index(n);
        let mut heard = Vec::new();
        for f in frames {
            self.now += TICK;
            for (j, (_, slot, tx, level, k)) in self.members.iter_mut().enumerate() {
                let mut pkt = if j == i {
                    tx.frame(f)
                } else {
                    tx.audio(*level)
                };
                self.conf.handle_rtp(self.now, *slot, addr(*k), &mut pkt);
            }
            self.conf.handle_tick(self.now);
            self.heard = sent(&mut self.conf);
            heard.extend_from_slice(&self.heard[&addr(listener)]);
        }
        heard
    }

    /// Member `n` types `keys` (RFC 4733 events), then a tick passes per key.
    fn press(&mut self, n: u8, keys: &str) {
        let i = self.index(n);
        for k in keys.chars() {
            let event = Digit::from_char(k).unwrap().event();
            let (_, slot, tx, _, n) = &mut self.members[i];
            let from = addr(*n);
            for mut pkt in tx.digit(event) {
                self.conf.handle_rtp(self.now, *slot, from, &mut pkt);
            }
            self.run(1);
        }
    }

    /// The level member `n` heard in the last tick (constant frames only).
    fn heard(&self, n: u8) -> i16 {
        level(&self.heard[&addr(n)])
    }
}

/// Level of every prompt but the PIN-entry ones and the join tone in `prompts()`.
const HINT_LEVEL: i16 = 732;

fn q(x: i32) -> i16 {
    ulaw_decode(ulaw_encode(x.clamp(-32_000, 32_000) as i16))
}

#[test]
fn star_six_takes_a_member_out_of_the_mix_and_back() {
    let mut b = Bridge::new(&[]);
    b.join(1, 0, Role::Member);
    b.join(2, 0, Role::Member);
    b.talk(1, 2000);
    b.run(60);
    assert_eq!(b.heard(2), q(2000));
    b.press(1, "*6");
    b.run(10);
    assert_eq!(b.heard(2), 0, "muted: nobody hears it");
    b.press(1, "*6");
    b.run(10);
    assert_eq!(b.heard(2), q(2000), "unmuted: heard again");
    assert_eq!(b.conf.counters().digits, 4);
}

#[test]
fn a_locked_room_refuses_a_caller_after_its_pin() {
    let mut b = Bridge::new(&[]);
    b.join(1, 1, Role::Moderator);
    b.run(30);
    b.press(1, "*5");
    let late = b.join(2, 1, Role::Member);
    assert_eq!(b.conf.room_size(1), 1);
    b.run(10);
    assert_eq!(
        b.hangups,
        vec![(late, HangupReason::Room(Dismissal::Locked))]
    );
    // A moderator still gets in.
    b.join(3, 1, Role::Moderator);
    assert_eq!(b.conf.room_size(1), 2);
}

#[test]
fn a_full_room_refuses_the_fourth_caller_and_the_node_limit_refuses_any() {
    let full = RoomOptions {
        max_members: 3,
        ..RoomOptions::default()
    };
    let mut b = Bridge::new(&[(2, full)]);
    for n in 1..=3 {
        b.join(n, 2, Role::Member);
    }
    let fourth = b.join(4, 2, Role::Member);
    b.run(10);
    assert_eq!(b.conf.room_size(2), 3);
    assert_eq!(
        b.hangups,
        vec![(fourth, HangupReason::Room(Dismissal::Full))]
    );
    let call = CallToken::from_raw(9);
    b.conf.add_member(b.now, call, media(9), seed(9)).unwrap();
    b.conf.refuse_full(call);
    b.run(10);
    assert_eq!(b.hangups[1], (call, HangupReason::Room(Dismissal::Full)));
}

#[test]
fn louder_and_quieter_change_what_one_listener_hears_only() {
    let mut b = Bridge::new(&[]);
    b.join(1, 0, Role::Member);
    b.join(2, 0, Role::Member);
    b.join(3, 0, Role::Member);
    b.talk(1, 2000);
    b.run(60);
    b.press(2, "*3*3");
    b.run(10);
    assert_eq!(b.heard(3), q(2000));
    // +6 dB: about twice the amplitude (µ-law steps around it).
    let louder = i32::from(b.heard(2));
    assert!((3700..=4300).contains(&louder), "{louder}");
    b.press(2, "*1*1*1");
    b.run(10);
    let quieter = i32::from(b.heard(2));
    assert!((1300..=1500).contains(&quieter), "{quieter}");
}

#[test]
fn members_wait_in_silence_until_the_moderator_comes() {
    let wait = RoomOptions {
        wait_for_moderator: true,
        ..RoomOptions::default()
    };
    let mut b = Bridge::new(&[(3, wait)]);
    b.join(1, 3, Role::Member);
    b.join(2, 3, Role::Member);
    b.talk(1, 2000);
    b.run(80);
    assert_eq!(b.heard(2), 0, "waiting members are not mixed");
    b.join(3, 3, Role::Moderator);
    b.run(60);
    assert_eq!(b.heard(2), q(2000));
    assert_eq!(b.heard(3), q(2000));
}

#[test]
fn the_room_ends_its_grace_after_the_last_moderator_hung_up() {
    let ends = RoomOptions {
        end_with_moderator: true,
        end_grace: Duration::from_secs(1),
        ..RoomOptions::default()
    };
    let mut b = Bridge::new(&[(4, ends)]);
    let m = b.join(1, 4, Role::Moderator);
    let a = b.join(2, 4, Role::Member);
    b.run(20);
    b.conf.remove(b.now, m);
    b.members.retain(|(c, ..)| *c != m);
    b.run(45);
    assert!(b.hangups.is_empty(), "within the grace");
    b.run(10);
    assert_eq!(b.hangups, vec![(a, HangupReason::Room(Dismissal::Ended))]);
}

#[test]
fn a_muted_talker_is_told_once_how_to_unmute() {
    let muted = RoomOptions {
        start_muted: true,
        join_leave_tones: false,
        ..RoomOptions::default()
    };
    let mut b = Bridge::new(&[(5, muted)]);
    b.join(1, 5, Role::Member);
    b.join(2, 5, Role::Member);
    b.run(40);
    b.talk(1, 2000);
    let hint = q(i32::from(HINT_LEVEL));
    let mut runs = 0;
    let mut in_run = false;
    for _ in 0..400 {
        b.run(1);
        assert_eq!(b.heard(2), 0, "a muted member is never mixed");
        let prompting = b.heard(1) == hint;
        if prompting && !in_run {
            runs += 1;
        }
        in_run = prompting;
    }
    assert_eq!(runs, 1, "the hint is said once");
}

#[test]
fn keys_as_tones_work_in_the_room_and_nobody_hears_them() {
    let mut b = Bridge::new(&[]);
    let call = CallToken::from_raw(1);
    let slot = b
        .conf
        .add_member(
            b.now,
            call,
            MediaParams {
                inband_dtmf: InbandDtmf::On,
                ..media(1)
            },
            seed(1),
        )
        .unwrap();
    b.conf.join(b.now, call, 0);
    b.members.push((call, slot, Tx::new(1), 0, 1));
    b.join(2, 0, Role::Member);
    b.talk(1, 2000);
    b.run(60);
    assert_eq!(b.heard(2), q(2000));
    let keys = tone_frames("*6", 0);
    let heard = b.send_frames(1, &keys, 2);
    // '*' is 941 + 1209 Hz, '6' 770 + 1477 Hz: none of it reaches the listener.
    for hz in [941.0, 1209.0, 770.0, 1477.0] {
        let s = share(&heard, hz, 8000);
        assert!(s < 0.01, "{hz} Hz share {s}");
    }
    assert_eq!(b.conf.counters().inband_digits, 2);
    b.run(20);
    assert_eq!(b.heard(2), 0, "*6 as tones muted the member");
    b.send_frames(1, &keys, 2);
    b.run(20);
    assert_eq!(b.heard(2), q(2000), "and *6 again unmuted it");
}
