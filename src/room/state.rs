//! What a room is and what can happen to it: its members and their roles, mute and
//! hands, the lock, lecture mode, waiting for the moderator and ending without one.
//!
//! Sans-IO: joins, leaves, keys and time go in; [`RoomAction`]s come out (tell a
//! member something, mute or hold it, change what it hears, end its call). The shard
//! that mixes the room carries them out. Members are known by their random call token
//! only; nothing here names a person, and nobody is told who else is in the room:
//! counts and tones only.

use super::keys::{Control, KeyMap, KeyReader, Sequence};
use super::prompts::{Prompt, MAX_NUMBER};
use crate::media::dtmf::Digit;
use crate::redact::CallToken;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Listening gain steps (3 dB each) either way from the room's level.
const MAX_GAIN_STEPS: i8 = 3;

/// dB per listening gain step.
const GAIN_STEP_DB: i8 = 3;

/// A room's options (per room, defaults in `[room_defaults]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomOptions {
    /// Members wait (not mixed, hearing silence) until a moderator is in.
    pub wait_for_moderator: bool,
    /// When the last moderator leaves, the others are told and disconnected.
    pub end_with_moderator: bool,
    /// How long after the last moderator left the others are disconnected.
    pub end_grace: Duration,
    /// Members join muted.
    pub start_muted: bool,
    /// Most members at once; 0: no limit.
    pub max_members: usize,
    /// Everyone hears a tone when someone joins or leaves.
    pub join_leave_tones: bool,
    /// A joining member hears how many are in the room.
    pub announce_count: bool,
    /// In lecture mode, members may unmute themselves.
    pub lecture_self_unmute: bool,
    /// Only callers whose media is keyed by ZRTP get in (`encryption = "zrtp-required"`).
    pub zrtp_required: bool,
}

impl Default for RoomOptions {
    fn default() -> Self {
        RoomOptions {
            wait_for_moderator: false,
            end_with_moderator: false,
            end_grace: Duration::from_secs(10),
            start_muted: false,
            max_members: 0,
            join_leave_tones: true,
            announce_count: false,
            lecture_self_unmute: false,
            zrtp_required: false,
        }
    }
}

/// A member's role, set by the PIN it typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Typed the room's PIN (or needed none).
    #[default]
    Member,
    /// Typed the room's moderator PIN.
    Moderator,
}

/// Why a member's call is ended by the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dismissal {
    /// The room was locked when it came in.
    Locked,
    /// The room (or the node) was full.
    Full,
    /// A moderator removed it.
    Removed,
    /// The last moderator left a room that ends with its moderator.
    Ended,
    /// The room requires ZRTP and the caller's media is not keyed by it.
    NoZrtp,
}

/// What the room asks of the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAction {
    /// Play these prompts to a member, after what it hears now.
    Say {
        /// The member.
        member: CallToken,
        /// The prompts, in order.
        prompts: Vec<Prompt>,
    },
    /// Whether a member's voice may go into the mix.
    Mute {
        /// The member.
        member: CallToken,
        /// Muted.
        muted: bool,
    },
    /// Whether a member waits for the moderator (not mixed, hears silence).
    Wait {
        /// The member.
        member: CallToken,
        /// Waiting.
        waiting: bool,
    },
    /// A member's listening gain.
    Gain {
        /// The member.
        member: CallToken,
        /// Gain in dB (0: the room's level).
        db: i8,
    },
    /// A control was used (for the aggregate counters; says nothing of who).
    Used {
        /// The control.
        control: Control,
    },
    /// End a member's call once what it is being told has played. It is no longer in
    /// the room.
    Dismiss {
        /// The member.
        member: CallToken,
        /// Why.
        reason: Dismissal,
    },
}

/// One member's place in the room.
#[derive(Debug)]
struct Seat {
    call: CallToken,
    role: Role,
    /// Joining order (the most recent is removed first).
    order: u64,
    muted: bool,
    /// Muted by lecture mode (and unmuted when it ends).
    lecture_muted: bool,
    /// Given the floor during a lecture.
    floor: bool,
    /// When the hand went up (in raise order).
    hand: Option<u64>,
    gain_steps: i8,
    waiting: bool,
    /// The muted-talker hint has been given.
    hinted: bool,
    keys: KeyReader,
}

/// A room's state; see the module docs.
pub struct Room {
    options: RoomOptions,
    keys: Arc<KeyMap>,
    seats: Vec<Seat>,
    locked: bool,
    lecture: bool,
    /// A moderator has been in (a waiting room has started).
    started: bool,
    /// When the members are disconnected after the last moderator left.
    ending: Option<Instant>,
    counter: u64,
    actions: VecDeque<RoomAction>,
}

impl Room {
    /// An empty room.
    pub fn new(options: RoomOptions, keys: Arc<KeyMap>) -> Room {
        Room {
            options,
            keys,
            seats: Vec::new(),
            locked: false,
            lecture: false,
            started: false,
            ending: None,
            counter: 0,
            actions: VecDeque::new(),
        }
    }

    /// Members in the room.
    pub fn len(&self) -> usize {
        self.seats.len()
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    /// Whether new members are refused.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Whether lecture mode is on.
    pub fn lecture(&self) -> bool {
        self.lecture
    }

    /// A member's role, if it is in the room.
    pub fn role(&self, call: CallToken) -> Option<Role> {
        self.seat(call).map(|s| self.seats[s].role)
    }

    /// Whether a member is muted.
    pub fn is_muted(&self, call: CallToken) -> bool {
        self.seat(call).is_some_and(|s| self.seats[s].muted)
    }

    /// Whether a member waits for the moderator.
    pub fn is_waiting(&self, call: CallToken) -> bool {
        self.seat(call).is_some_and(|s| self.seats[s].waiting)
    }

    /// Next action for the shard.
    pub fn poll_action(&mut self) -> Option<RoomAction> {
        self.actions.pop_front()
    }

    /// When the room next needs [`Room::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ending
    }

    fn seat(&self, call: CallToken) -> Option<usize> {
        self.seats.iter().position(|s| s.call == call)
    }

    fn has_moderator(&self) -> bool {
        self.seats.iter().any(|s| s.role == Role::Moderator)
    }

    fn tick(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn say(&mut self, member: CallToken, prompts: Vec<Prompt>) {
        self.actions.push_back(RoomAction::Say { member, prompts });
    }

    fn say_to_all_but(&mut self, except: Option<CallToken>, p: Prompt) {
        let calls: Vec<CallToken> = self
            .seats
            .iter()
            .map(|s| s.call)
            .filter(|&c| Some(c) != except)
            .collect();
        for c in calls {
            self.say(c, vec![p]);
        }
    }

    fn set_muted(&mut self, seat: usize, muted: bool) {
        let s = &mut self.seats[seat];
        if s.muted != muted {
            s.muted = muted;
            self.actions.push_back(RoomAction::Mute {
                member: s.call,
                muted,
            });
        }
    }

    /// A caller whose PIN (or dial-in) opened this room comes in. Returns false when it
    /// is refused (locked, full): it is then told why and dismissed.
    pub fn handle_join(&mut self, _now: Instant, call: CallToken, role: Role) -> bool {
        if self.seat(call).is_some() {
            return true;
        }
        let refusal = if self.locked && role == Role::Member {
            Some((Prompt::RoomLocked, Dismissal::Locked))
        } else if self.options.max_members > 0 && self.seats.len() >= self.options.max_members {
            Some((Prompt::RoomFull, Dismissal::Full))
        } else {
            None
        };
        if let Some((prompt, reason)) = refusal {
            self.say(call, vec![prompt]);
            self.actions.push_back(RoomAction::Dismiss {
                member: call,
                reason,
            });
            return false;
        }
        if self.options.join_leave_tones {
            self.say_to_all_but(None, Prompt::JoinTone);
        }
        let alone = self.seats.is_empty();
        let member = role == Role::Member;
        let waiting = member && self.options.wait_for_moderator && !self.started;
        let lecture_muted = member && self.lecture;
        let muted = lecture_muted || (member && self.options.start_muted);
        let order = self.tick();
        self.seats.push(Seat {
            call,
            role,
            order,
            muted: false,
            lecture_muted,
            floor: false,
            hand: None,
            gain_steps: 0,
            waiting,
            hinted: false,
            keys: KeyReader::default(),
        });
        let seat = self.seats.len() - 1;
        self.set_muted(seat, muted);
        let mut told = vec![Prompt::JoinTone];
        if role == Role::Moderator {
            told.push(Prompt::Moderator);
        }
        if waiting {
            self.actions.push_back(RoomAction::Wait {
                member: call,
                waiting: true,
            });
            told.push(Prompt::WaitForModerator);
        } else if alone {
            told.push(Prompt::FirstParticipant);
        } else if self.options.announce_count {
            told.push(Prompt::Participants);
            told.extend(number(self.seats.len()));
        }
        if muted {
            told.push(if lecture_muted {
                Prompt::LectureOn
            } else {
                Prompt::Muted
            });
        }
        self.say(call, told);
        if role == Role::Moderator {
            self.ending = None;
            if !self.started {
                self.started = true;
                self.release_waiting();
            }
        }
        true
    }

    /// The moderator is in: everyone waiting joins the meeting.
    fn release_waiting(&mut self) {
        for i in 0..self.seats.len() {
            if self.seats[i].waiting {
                self.seats[i].waiting = false;
                let call = self.seats[i].call;
                self.actions.push_back(RoomAction::Wait {
                    member: call,
                    waiting: false,
                });
                self.say(call, vec![Prompt::ConferenceStarts]);
            }
        }
    }

    /// A member left (hung up, timed out, moved away).
    pub fn handle_leave(&mut self, now: Instant, call: CallToken) {
        let Some(seat) = self.seat(call) else {
            return;
        };
        let gone = self.seats.remove(seat);
        if self.seats.is_empty() {
            self.ending = None;
            return;
        }
        if self.options.join_leave_tones {
            self.say_to_all_but(None, Prompt::LeaveTone);
        }
        if gone.role == Role::Moderator && !self.has_moderator() {
            if self.options.end_with_moderator {
                self.ending = Some(now + self.options.end_grace);
                self.say_to_all_but(None, Prompt::ConferenceEnding);
                return;
            }
            if self.lecture {
                // Nobody is left to give the floor: the lecture ends with its moderator.
                self.set_lecture(false);
            }
        }
        if self.seats.len() == 1 && !self.seats[0].waiting {
            let last = self.seats[0].call;
            self.say(last, vec![Prompt::OnlyParticipant]);
        }
    }

    /// Time passed: the grace after the last moderator left may be over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ending.is_some_and(|t| t <= now) {
            self.ending = None;
            for s in std::mem::take(&mut self.seats) {
                self.actions.push_back(RoomAction::Dismiss {
                    member: s.call,
                    reason: Dismissal::Ended,
                });
            }
        }
    }

    /// A key pressed by a member in the room.
    pub fn handle_key(&mut self, now: Instant, call: CallToken, digit: Digit) {
        let Some(seat) = self.seat(call) else {
            return;
        };
        let keys = self.keys.clone();
        if let Some(control) = self.seats[seat].keys.handle_digit(now, &keys, digit) {
            self.control(now, seat, control);
        }
    }

    /// A muted member has been talking for a while: tell it once how to unmute.
    pub fn handle_muted_talk(&mut self, call: CallToken) {
        let Some(seat) = self.seat(call) else {
            return;
        };
        let s = &mut self.seats[seat];
        if s.hinted || !s.muted || s.waiting {
            return;
        }
        s.hinted = true;
        let told = if self.may_unmute(seat) {
            let mut p = vec![Prompt::MutedHint];
            p.extend(spoken_keys(self.keys.binding(Control::Mute)));
            p
        } else {
            vec![Prompt::UnmuteNotAllowed]
        };
        self.say(call, told);
    }

    fn may_unmute(&self, seat: usize) -> bool {
        let s = &self.seats[seat];
        // In a lecture, a member speaks only if it was given the floor or may unmute.
        !self.lecture || s.role != Role::Member || self.options.lecture_self_unmute || s.floor
    }

    /// Whether a member may use a control now.
    fn may_use(&self, seat: usize, control: Control) -> bool {
        let s = &self.seats[seat];
        if control.moderator_only() {
            return s.role == Role::Moderator;
        }
        match control {
            Control::Mute => !s.muted || self.may_unmute(seat),
            _ => true,
        }
    }

    fn control(&mut self, now: Instant, seat: usize, control: Control) {
        self.actions.push_back(RoomAction::Used { control });
        let call = self.seats[seat].call;
        if control.moderator_only() && self.seats[seat].role != Role::Moderator {
            self.say(call, vec![Prompt::NotAllowed]);
            return;
        }
        match control {
            Control::Mute => {
                if !self.seats[seat].muted {
                    self.seats[seat].floor = false;
                    self.set_muted(seat, true);
                    self.say(call, vec![Prompt::Muted]);
                } else if self.may_unmute(seat) {
                    self.seats[seat].lecture_muted = false;
                    self.set_muted(seat, false);
                    self.say(call, vec![Prompt::Unmuted]);
                } else {
                    self.say(call, vec![Prompt::UnmuteNotAllowed]);
                }
            }
            Control::Hand => {
                let raised = self.seats[seat].hand.is_none();
                let t = self.tick();
                self.seats[seat].hand = raised.then_some(t);
                let p = if raised {
                    Prompt::HandRaised
                } else {
                    Prompt::HandLowered
                };
                self.say(call, vec![p]);
            }
            Control::Count => {
                let mut p = vec![Prompt::Participants];
                p.extend(number(self.seats.len()));
                self.say(call, p);
            }
            Control::Quieter | Control::Louder => {
                let step = if control == Control::Louder { 1 } else { -1 };
                let s = &mut self.seats[seat];
                s.gain_steps = (s.gain_steps + step).clamp(-MAX_GAIN_STEPS, MAX_GAIN_STEPS);
                let db = s.gain_steps * GAIN_STEP_DB;
                self.actions
                    .push_back(RoomAction::Gain { member: call, db });
                let p = if control == Control::Louder {
                    Prompt::Louder
                } else {
                    Prompt::Quieter
                };
                self.say(call, vec![p]);
            }
            Control::Help => {
                let help = self.help(seat);
                self.say(call, help);
            }
            Control::Lock => {
                self.locked = !self.locked;
                let p = if self.locked {
                    Prompt::Locked
                } else {
                    Prompt::Unlocked
                };
                self.say(call, vec![p]);
            }
            Control::Lecture => {
                let on = !self.lecture;
                self.set_lecture(on);
            }
            Control::Floor => self.give_floor(call),
            Control::RemoveLast => self.remove_last(now, call),
            Control::MuteAll => {
                for i in 0..self.seats.len() {
                    if self.seats[i].role == Role::Member && !self.seats[i].muted {
                        self.set_muted(i, true);
                        let c = self.seats[i].call;
                        self.say(c, vec![Prompt::MutedByModerator]);
                    }
                }
                self.say(call, vec![Prompt::AllMuted]);
            }
        }
    }

    fn set_lecture(&mut self, on: bool) {
        self.lecture = on;
        for i in 0..self.seats.len() {
            let s = &mut self.seats[i];
            s.floor = false;
            if s.role != Role::Member {
                continue;
            }
            if on && !s.muted {
                s.lecture_muted = true;
                self.set_muted(i, true);
            } else if !on && s.lecture_muted {
                s.lecture_muted = false;
                self.set_muted(i, false);
            }
        }
        let p = if on {
            Prompt::LectureOn
        } else {
            Prompt::LectureOff
        };
        self.say_to_all_but(None, p);
    }

    fn give_floor(&mut self, moderator: CallToken) {
        let next = self
            .seats
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.hand.map(|t| (t, i)))
            .min()
            .map(|(_, i)| i);
        let Some(seat) = next else {
            self.say(moderator, vec![Prompt::NoHands]);
            return;
        };
        let s = &mut self.seats[seat];
        s.hand = None;
        s.floor = self.lecture;
        s.lecture_muted = false;
        let call = s.call;
        self.set_muted(seat, false);
        self.say(call, vec![Prompt::FloorGiven]);
    }

    fn remove_last(&mut self, now: Instant, moderator: CallToken) {
        let last = self
            .seats
            .iter()
            .filter(|s| s.role == Role::Member)
            .max_by_key(|s| s.order)
            .map(|s| s.call);
        let Some(call) = last else {
            self.say(moderator, vec![Prompt::NobodyToRemove]);
            return;
        };
        self.say(call, vec![Prompt::Removed]);
        self.actions.push_back(RoomAction::Dismiss {
            member: call,
            reason: Dismissal::Removed,
        });
        self.say(moderator, vec![Prompt::ParticipantRemoved]);
        self.handle_leave(now, call);
    }

    /// The spoken help: the keys this member may use now, each with what it does.
    fn help(&self, seat: usize) -> Vec<Prompt> {
        let mut p = vec![Prompt::HelpIntro];
        for c in Control::ALL {
            if self.may_use(seat, c) {
                p.extend(spoken_keys(self.keys.binding(c)));
                p.push(Prompt::Help(c));
            }
        }
        p
    }
}

/// A count as prompts: the number, or "more than 99".
fn number(n: usize) -> Vec<Prompt> {
    match u8::try_from(n) {
        Ok(n) if n <= MAX_NUMBER => vec![Prompt::Number(n)],
        _ => vec![Prompt::MoreThan99],
    }
}

/// A key sequence as prompts: "star", "six".
fn spoken_keys(seq: Sequence) -> Vec<Prompt> {
    seq.keys()
        .iter()
        .filter_map(|&k| match k {
            b'*' => Some(Prompt::KeyStar),
            b'#' => Some(Prompt::KeyHash),
            d @ b'0'..=b'9' => Some(Prompt::Number(d - b'0')),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
