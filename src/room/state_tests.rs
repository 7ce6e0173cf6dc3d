//! Every control and option as transitions of one room, in virtual time.

use super::*;

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
    Instant::now()
}

fn c(n: u64) -> CallToken {
    CallToken::from_raw(n)
}

fn room(options: RoomOptions) -> Room {
    Room::new(options, Arc::new(KeyMap::default()))
}

fn quiet() -> RoomOptions {
    RoomOptions {
        join_leave_tones: false,
        ..RoomOptions::default()
    }
}

/// The actions, without the usage counts (checked on their own).
fn drain(r: &mut Room) -> Vec<RoomAction> {
    std::iter::from_fn(|| r.poll_action())
        .filter(|a| !matches!(a, RoomAction::Used { .. }))
        .collect()
}

/// What one member was told, in order, from a batch of actions.
fn told(actions: &[RoomAction], who: CallToken) -> Vec<Prompt> {
    actions
        .iter()
        .filter_map(|a| match a {
            RoomAction::Say { member, prompts } if *member == who => Some(prompts.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn press(r: &mut Room, now: Instant, who: CallToken, keys: &str) -> Vec<RoomAction> {
    for k in keys.chars() {
        r.handle_key(now, who, Digit::from_char(k).unwrap());
    }
    drain(r)
}

fn muted(actions: &[RoomAction], who: CallToken) -> Option<bool> {
    actions.iter().rev().find_map(|a| match a {
        RoomAction::Mute { member, muted } if *member == who => Some(*muted),
        _ => None,
    })
}

fn dismissed(actions: &[RoomAction]) -> Vec<(CallToken, Dismissal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            RoomAction::Dismiss { member, reason } => Some((*member, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn joining_tells_the_first_the_rest_hear_a_tone_and_the_count_when_asked() {
    let t = t0();
    let mut r = room(RoomOptions {
        announce_count: true,
        ..RoomOptions::default()
    });
    assert!(r.handle_join(t, c(1), Role::Member));
    let a = drain(&mut r);
    assert_eq!(
        told(&a, c(1)),
        vec![Prompt::JoinTone, Prompt::FirstParticipant]
    );
    assert!(r.handle_join(t, c(2), Role::Member));
    let a = drain(&mut r);
    assert_eq!(told(&a, c(1)), vec![Prompt::JoinTone]);
    assert_eq!(
        told(&a, c(2)),
        vec![Prompt::JoinTone, Prompt::Participants, Prompt::Number(2)]
    );
    r.handle_leave(t, c(2));
    let a = drain(&mut r);
    assert_eq!(
        told(&a, c(1)),
        vec![Prompt::LeaveTone, Prompt::OnlyParticipant]
    );
}

#[test]
fn mute_unmute_hand_count_and_gain() {
    let t = t0();
    let mut r = room(quiet());
    for n in 1..=3 {
        r.handle_join(t, c(n), Role::Member);
    }
    drain(&mut r);
    let a = press(&mut r, t, c(1), "*6");
    assert_eq!(muted(&a, c(1)), Some(true));
    assert_eq!(told(&a, c(1)), vec![Prompt::Muted]);
    let a = press(&mut r, t, c(1), "*6");
    assert_eq!(muted(&a, c(1)), Some(false));
    assert_eq!(told(&a, c(1)), vec![Prompt::Unmuted]);
    assert_eq!(
        told(&press(&mut r, t, c(2), "*9"), c(2)),
        vec![Prompt::HandRaised]
    );
    assert_eq!(
        told(&press(&mut r, t, c(2), "*9"), c(2)),
        vec![Prompt::HandLowered]
    );
    assert_eq!(
        told(&press(&mut r, t, c(3), "*#"), c(3)),
        vec![Prompt::Participants, Prompt::Number(3)]
    );
    let gains: Vec<i8> = (0..5)
        .flat_map(|_| press(&mut r, t, c(3), "*3"))
        .filter_map(|a| match a {
            RoomAction::Gain { db, .. } => Some(db),
            _ => None,
        })
        .collect();
    assert_eq!(gains, vec![3, 6, 9, 9, 9], "a few steps, then no louder");
    let a = press(&mut r, t, c(3), "*1");
    assert!(a.contains(&RoomAction::Gain {
        member: c(3),
        db: 6
    }));
    assert_eq!(told(&a, c(3)), vec![Prompt::Quieter]);
}

#[test]
fn every_control_used_is_counted_even_when_refused() {
    let t = t0();
    let mut r = room(quiet());
    r.handle_join(t, c(1), Role::Member);
    r.handle_key(t, c(1), Digit::from_char('*').unwrap());
    r.handle_key(t, c(1), Digit::from_char('5').unwrap());
    let used: Vec<_> = std::iter::from_fn(|| r.poll_action())
        .filter_map(|a| match a {
            RoomAction::Used { control } => Some(control),
            _ => None,
        })
        .collect();
    assert_eq!(used, vec![Control::Lock]);
}

#[test]
fn more_than_99_is_said_as_such() {
    assert_eq!(number(99), vec![Prompt::Number(99)]);
    assert_eq!(number(100), vec![Prompt::MoreThan99]);
}

#[test]
fn help_lists_exactly_the_keys_a_caller_may_use_now() {
    let t = t0();
    let mut r = room(quiet());
    r.handle_join(t, c(1), Role::Moderator);
    r.handle_join(t, c(2), Role::Member);
    drain(&mut r);
    let member = told(&press(&mut r, t, c(2), "*0"), c(2));
    let helps = |p: &[Prompt]| -> Vec<Control> {
        p.iter()
            .filter_map(|p| match p {
                Prompt::Help(c) => Some(*c),
                _ => None,
            })
            .collect()
    };
    assert_eq!(member[0], Prompt::HelpIntro);
    assert_eq!(
        member[1..4],
        [
            Prompt::KeyStar,
            Prompt::Number(6),
            Prompt::Help(Control::Mute)
        ]
    );
    assert_eq!(
        helps(&member),
        vec![
            Control::Mute,
            Control::Hand,
            Control::Count,
            Control::Quieter,
            Control::Louder,
            Control::Help
        ]
    );
    let moderator = told(&press(&mut r, t, c(1), "*0"), c(1));
    assert_eq!(helps(&moderator).len(), Control::ALL.len());
    // In a lecture without self-unmute, a muted member cannot use the mute key.
    press(&mut r, t, c(1), "*7");
    let lectured = told(&press(&mut r, t, c(2), "*0"), c(2));
    assert!(!helps(&lectured).contains(&Control::Mute));
    assert!(helps(&lectured).contains(&Control::Hand));
    // A member pressing a moderator's key is told it is not available.
    assert_eq!(
        told(&press(&mut r, t, c(2), "*5"), c(2)),
        vec![Prompt::NotAllowed]
    );
    assert!(!r.is_locked());
}

#[test]
fn lock_refuses_new_members_but_not_moderators_even_one_typing_a_pin_meanwhile() {
    let t = t0();
    let mut r = room(quiet());
    r.handle_join(t, c(1), Role::Moderator);
    drain(&mut r);
    // c(2) is typing its PIN while the moderator locks: the room decides at admission.
    assert_eq!(
        told(&press(&mut r, t, c(1), "*5"), c(1)),
        vec![Prompt::Locked]
    );
    assert!(!r.handle_join(t, c(2), Role::Member));
    let a = drain(&mut r);
    assert_eq!(told(&a, c(2)), vec![Prompt::RoomLocked]);
    assert_eq!(dismissed(&a), vec![(c(2), Dismissal::Locked)]);
    assert_eq!(r.len(), 1);
    assert!(r.handle_join(t, c(3), Role::Moderator));
    assert_eq!(
        told(&press(&mut r, t, c(1), "*5"), c(1)),
        vec![Prompt::Unlocked]
    );
    assert!(r.handle_join(t, c(4), Role::Member));
}

#[test]
fn a_full_room_refuses_the_next_caller() {
    let t = t0();
    let mut r = room(RoomOptions {
        max_members: 3,
        ..quiet()
    });
    for n in 1..=3 {
        assert!(r.handle_join(t, c(n), Role::Member));
    }
    drain(&mut r);
    assert!(!r.handle_join(t, c(4), Role::Moderator));
    let a = drain(&mut r);
    assert_eq!(told(&a, c(4)), vec![Prompt::RoomFull]);
    assert_eq!(dismissed(&a), vec![(c(4), Dismissal::Full)]);
    r.handle_leave(t, c(1));
    assert!(r.handle_join(t, c(4), Role::Member));
}

#[test]
fn lecture_mutes_members_floor_unmutes_the_longest_hand_and_self_unmute_is_an_option() {
    let t = t0();
    let mut r = room(quiet());
    r.handle_join(t, c(1), Role::Moderator);
    for n in 2..=4 {
        r.handle_join(t, c(n), Role::Member);
    }
    drain(&mut r);
    let a = press(&mut r, t, c(1), "*7");
    assert!(r.lecture());
    for n in 2..=4 {
        assert_eq!(muted(&a, c(n)), Some(true));
        assert_eq!(told(&a, c(n)), vec![Prompt::LectureOn]);
    }
    assert_eq!(muted(&a, c(1)), None, "moderators keep talking");
    let a = press(&mut r, t, c(2), "*6");
    assert_eq!(told(&a, c(2)), vec![Prompt::UnmuteNotAllowed]);
    assert!(r.is_muted(c(2)));
    // Hands: 3 first, then 2.
    press(&mut r, t, c(3), "*9");
    press(&mut r, t, c(2), "*9");
    let a = press(&mut r, t, c(1), "*2");
    assert_eq!(muted(&a, c(3)), Some(false));
    assert_eq!(told(&a, c(3)), vec![Prompt::FloorGiven]);
    assert!(r.is_muted(c(2)));
    let a = press(&mut r, t, c(1), "*2");
    assert_eq!(muted(&a, c(2)), Some(false));
    assert_eq!(
        told(&press(&mut r, t, c(1), "*2"), c(1)),
        vec![Prompt::NoHands]
    );
    // Lecture off: who was muted by it is unmuted.
    let a = press(&mut r, t, c(1), "*7");
    assert_eq!(muted(&a, c(4)), Some(false));
    assert!(!r.is_muted(c(2)) && !r.is_muted(c(3)));

    let mut r = room(RoomOptions {
        lecture_self_unmute: true,
        ..quiet()
    });
    r.handle_join(t, c(1), Role::Moderator);
    r.handle_join(t, c(2), Role::Member);
    press(&mut r, t, c(1), "*7");
    let a = press(&mut r, t, c(2), "*6");
    assert_eq!(muted(&a, c(2)), Some(false));
}

#[test]
fn a_moderator_leaving_mid_lecture_ends_the_lecture() {
    let t = t0();
    let mut r = room(quiet());
    r.handle_join(t, c(1), Role::Moderator);
    r.handle_join(t, c(2), Role::Member);
    r.handle_join(t, c(3), Role::Member);
    press(&mut r, t, c(1), "*7");
    r.handle_leave(t, c(1));
    let a = drain(&mut r);
    assert!(!r.lecture());
    for n in 2..=3 {
        assert_eq!(muted(&a, c(n)), Some(false));
        assert_eq!(told(&a, c(n)), vec![Prompt::LectureOff]);
    }
}

#[test]
fn remove_last_and_mute_all() {
    let t = t0();
    let mut r = room(quiet());
    r.handle_join(t, c(1), Role::Moderator);
    r.handle_join(t, c(2), Role::Member);
    r.handle_join(t, c(3), Role::Member);
    r.handle_join(t, c(4), Role::Moderator);
    drain(&mut r);
    let a = press(&mut r, t, c(1), "*8");
    assert_eq!(dismissed(&a), vec![(c(3), Dismissal::Removed)]);
    assert_eq!(told(&a, c(3)), vec![Prompt::Removed]);
    assert_eq!(told(&a, c(1)), vec![Prompt::ParticipantRemoved]);
    assert_eq!(r.role(c(3)), None);
    let a = press(&mut r, t, c(1), "*4");
    assert_eq!(muted(&a, c(2)), Some(true));
    assert_eq!(told(&a, c(2)), vec![Prompt::MutedByModerator]);
    assert_eq!(muted(&a, c(4)), None);
    assert_eq!(told(&a, c(1)), vec![Prompt::AllMuted]);
    // Once: the member may unmute itself again.
    assert_eq!(muted(&press(&mut r, t, c(2), "*6"), c(2)), Some(false));
    press(&mut r, t, c(1), "*8");
    assert_eq!(
        told(&press(&mut r, t, c(1), "*8"), c(1)),
        vec![Prompt::NobodyToRemove]
    );
}

#[test]
fn members_wait_for_the_moderator_then_the_conference_starts() {
    let t = t0();
    let mut r = room(RoomOptions {
        wait_for_moderator: true,
        ..quiet()
    });
    r.handle_join(t, c(1), Role::Member);
    r.handle_join(t, c(2), Role::Member);
    let a = drain(&mut r);
    assert!(a.contains(&RoomAction::Wait {
        member: c(1),
        waiting: true
    }));
    assert_eq!(
        told(&a, c(2)),
        vec![Prompt::JoinTone, Prompt::WaitForModerator]
    );
    assert!(r.is_waiting(c(1)));
    r.handle_join(t, c(3), Role::Moderator);
    let a = drain(&mut r);
    for n in 1..=2 {
        assert!(a.contains(&RoomAction::Wait {
            member: c(n),
            waiting: false
        }));
        assert_eq!(told(&a, c(n)), vec![Prompt::ConferenceStarts]);
    }
    assert_eq!(told(&a, c(3)), vec![Prompt::JoinTone, Prompt::Moderator]);
    // Once started, a later member does not wait.
    r.handle_join(t, c(4), Role::Member);
    assert!(!r.is_waiting(c(4)));
}

#[test]
fn the_room_ends_a_grace_period_after_its_last_moderator_left() {
    let t = t0();
    let grace = Duration::from_secs(10);
    let mut r = room(RoomOptions {
        end_with_moderator: true,
        end_grace: grace,
        ..quiet()
    });
    r.handle_join(t, c(1), Role::Moderator);
    r.handle_join(t, c(2), Role::Member);
    r.handle_join(t, c(3), Role::Member);
    drain(&mut r);
    r.handle_leave(t, c(1));
    let a = drain(&mut r);
    assert_eq!(told(&a, c(2)), vec![Prompt::ConferenceEnding]);
    assert_eq!(r.poll_timeout(), Some(t + grace));
    r.handle_timeout(t + grace - Duration::from_millis(20));
    assert!(dismissed(&drain(&mut r)).is_empty());
    r.handle_timeout(t + grace);
    let gone = dismissed(&drain(&mut r));
    assert_eq!(gone.len(), 2);
    assert!(gone.contains(&(c(2), Dismissal::Ended)) && gone.contains(&(c(3), Dismissal::Ended)));
    assert!(r.is_empty());

    // A moderator back within the grace keeps the room.
    let mut r = room(RoomOptions {
        end_with_moderator: true,
        end_grace: grace,
        ..quiet()
    });
    r.handle_join(t, c(1), Role::Moderator);
    r.handle_join(t, c(2), Role::Member);
    r.handle_leave(t, c(1));
    r.handle_join(t + Duration::from_secs(5), c(5), Role::Moderator);
    r.handle_timeout(t + grace);
    assert!(dismissed(&drain(&mut r)).is_empty());
    assert_eq!(r.len(), 2);
}

#[test]
fn start_muted_and_the_muted_talker_hint_said_once() {
    let t = t0();
    let mut r = room(RoomOptions {
        start_muted: true,
        ..quiet()
    });
    r.handle_join(t, c(1), Role::Member);
    let a = drain(&mut r);
    assert_eq!(muted(&a, c(1)), Some(true));
    assert_eq!(*told(&a, c(1)).last().unwrap(), Prompt::Muted);
    r.handle_muted_talk(c(1));
    assert_eq!(
        told(&drain(&mut r), c(1)),
        vec![Prompt::MutedHint, Prompt::KeyStar, Prompt::Number(6)]
    );
    r.handle_muted_talk(c(1));
    assert!(drain(&mut r).is_empty(), "the hint is said once");
    // Moderators are not muted on joining.
    r.handle_join(t, c(2), Role::Moderator);
    assert_eq!(muted(&drain(&mut r), c(2)), None);
}
