//! The PIN-entry IVR: prompt, collect digits, ask for verification, count tries.
//!
//! A state machine per caller, driven by digits, prompt ends, verification results and
//! time; it answers with [`IvrAction`]s (play a prompt, stop it, verify an attempt, hang
//! up). It never looks at the PIN's value beyond collecting it: verification happens
//! elsewhere, so that a slow argon2 run never stalls the mixer tick.
//!
//! ```text
//! start ─▶ Collecting (enter_pin plays; digits barge in) ── '#' ─▶ Verifying
//! Verifying ── ok ─▶ Admitted
//!           ── wrong, tries left ─▶ Collecting (wrong_pin plays)
//!           ── wrong, no tries left ─▶ Farewell (goodbye plays) ─▶ hang up
//! ```

use super::prompts::Prompt;
use crate::media::dtmf::Digit;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Digits of one PIN attempt; zeroized on drop and never printed.
pub struct PinAttempt(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for PinAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinAttempt(<redacted>)")
    }
}

/// What the IVR asks its owner to do.
#[derive(Debug)]
pub enum IvrAction {
    /// Start this prompt now (replacing whatever plays).
    Play(Prompt),
    /// Stop the prompt that plays (the caller started typing).
    StopPrompt,
    /// Check this attempt and call [`Ivr::handle_verify_result`].
    Verify(PinAttempt),
    /// The PIN was right: the caller goes into the room.
    Admit,
    /// End the call.
    Hangup,
}

/// IVR settings.
#[derive(Debug, Clone, Copy)]
pub struct IvrSettings {
    /// Wrong attempts allowed before the goodbye.
    pub max_tries: u8,
    /// Keypad silence after which an entry counts as finished (or the prompt is repeated).
    pub digit_timeout: Duration,
    /// Longest entry; longer ones count as wrong without being verified.
    pub max_digits: usize,
}

impl Default for IvrSettings {
    fn default() -> Self {
        IvrSettings {
            max_tries: 3,
            digit_timeout: Duration::from_secs(10),
            max_digits: 32,
        }
    }
}

/// Times the PIN prompt is repeated to a silent caller before the goodbye.
const MAX_SILENT_REPEATS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Collecting,
    Verifying,
    Farewell,
    Admitted,
    Done,
}

/// One caller's PIN entry.
pub struct Ivr {
    settings: IvrSettings,
    state: State,
    digits: Zeroizing<Vec<u8>>,
    overflow: bool,
    wrong: u8,
    silent_repeats: u8,
    prompt_playing: bool,
    deadline: Option<Instant>,
    actions: VecDeque<IvrAction>,
}

impl std::fmt::Debug for Ivr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ivr")
            .field("state", &self.state)
            .field("wrong", &self.wrong)
            .finish_non_exhaustive()
    }
}

impl Ivr {
    /// Starts the IVR; the first action is to play the PIN prompt.
    pub fn new(settings: IvrSettings) -> Ivr {
        let mut ivr = Ivr {
            settings,
            state: State::Collecting,
            digits: Zeroizing::new(Vec::with_capacity(settings.max_digits)),
            overflow: false,
            wrong: 0,
            silent_repeats: 0,
            prompt_playing: false,
            deadline: None,
            actions: VecDeque::with_capacity(4),
        };
        ivr.play(Prompt::EnterPin);
        ivr
    }

    fn play(&mut self, p: Prompt) {
        self.prompt_playing = true;
        self.deadline = None;
        self.actions.push_back(IvrAction::Play(p));
    }

    /// True once the caller was admitted.
    pub fn is_admitted(&self) -> bool {
        self.state == State::Admitted
    }

    /// Wrong attempts so far.
    pub fn wrong_attempts(&self) -> u8 {
        self.wrong
    }

    /// Next action, if any.
    pub fn poll_action(&mut self) -> Option<IvrAction> {
        self.actions.pop_front()
    }

    /// Next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// A digit arrived (RFC 4733 event end).
    pub fn handle_digit(&mut self, now: Instant, digit: Digit) {
        if self.state != State::Collecting {
            return;
        }
        if self.prompt_playing {
            // Barge-in: typing stops the prompt, as callers expect.
            self.prompt_playing = false;
            self.actions.push_back(IvrAction::StopPrompt);
        }
        self.silent_repeats = 0;
        match digit.as_char() {
            '#' => {
                if self.digits.is_empty() && !self.overflow {
                    self.deadline = Some(now + self.settings.digit_timeout);
                    return;
                }
                self.submit(now);
            }
            '*' => {
                // Star clears the entry: a caller who mistyped can start again.
                self.digits.clear();
                self.overflow = false;
                self.deadline = Some(now + self.settings.digit_timeout);
            }
            c @ '0'..='9' => {
                if self.digits.len() < self.settings.max_digits {
                    self.digits.push(c as u8);
                } else {
                    self.overflow = true;
                }
                self.deadline = Some(now + self.settings.digit_timeout);
            }
            _ => {}
        }
    }

    fn submit(&mut self, now: Instant) {
        self.deadline = None;
        let digits = std::mem::replace(
            &mut self.digits,
            Zeroizing::new(Vec::with_capacity(self.settings.max_digits)),
        );
        if std::mem::take(&mut self.overflow) {
            // Too long to be any PIN: wrong without spending a verification on it.
            drop(digits);
            self.state = State::Verifying;
            self.handle_verify_result(now, false);
            return;
        }
        self.state = State::Verifying;
        self.actions
            .push_back(IvrAction::Verify(PinAttempt(digits)));
    }

    /// The verification of the last attempt finished.
    pub fn handle_verify_result(&mut self, _now: Instant, ok: bool) {
        if self.state != State::Verifying {
            return;
        }
        if ok {
            self.state = State::Admitted;
            self.actions.push_back(IvrAction::Admit);
            return;
        }
        self.wrong = self.wrong.saturating_add(1);
        if self.wrong >= self.settings.max_tries {
            self.state = State::Farewell;
            self.play(Prompt::Goodbye);
        } else {
            self.state = State::Collecting;
            self.play(Prompt::WrongPin);
        }
    }

    /// The prompt that was playing has ended.
    pub fn handle_prompt_finished(&mut self, now: Instant) {
        if !self.prompt_playing {
            return;
        }
        self.prompt_playing = false;
        match self.state {
            State::Farewell => {
                self.state = State::Done;
                self.actions.push_back(IvrAction::Hangup);
            }
            State::Collecting => self.deadline = Some(now + self.settings.digit_timeout),
            _ => {}
        }
    }

    /// Fires the keypad timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| d > now) || self.state != State::Collecting {
            return;
        }
        self.deadline = None;
        if !self.digits.is_empty() || self.overflow {
            // The caller typed but forgot '#': take the entry as it is.
            self.submit(now);
        } else if self.silent_repeats < MAX_SILENT_REPEATS {
            self.silent_repeats += 1;
            self.play(Prompt::EnterPin);
        } else {
            self.state = State::Farewell;
            self.play(Prompt::Goodbye);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    fn d(c: char) -> Digit {
        let code = match c {
            '*' => 10,
            '#' => 11,
            c => c.to_digit(10).unwrap() as u8,
        };
        Digit::from_event(code).unwrap()
    }

    fn actions(ivr: &mut Ivr) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(a) = ivr.poll_action() {
            v.push(match a {
                IvrAction::Play(p) => format!("play {p:?}"),
                IvrAction::StopPrompt => "stop".into(),
                IvrAction::Verify(p) => {
                    format!("verify {}", String::from_utf8(p.0.to_vec()).unwrap())
                }
                IvrAction::Admit => "admit".into(),
                IvrAction::Hangup => "hangup".into(),
            });
        }
        v
    }

    fn type_digits(ivr: &mut Ivr, now: Instant, s: &str) {
        for c in s.chars() {
            ivr.handle_digit(now, d(c));
        }
    }

    #[test]
    fn right_pin_admits() {
        let t0 = Instant::now();
        let mut ivr = Ivr::new(IvrSettings::default());
        assert_eq!(actions(&mut ivr), ["play EnterPin"]);
        type_digits(&mut ivr, t0, "31415926#");
        assert_eq!(actions(&mut ivr), ["stop", "verify 31415926"]);
        // Digits typed while verifying are ignored.
        type_digits(&mut ivr, t0, "99#");
        assert!(actions(&mut ivr).is_empty());
        ivr.handle_verify_result(t0, true);
        assert_eq!(actions(&mut ivr), ["admit"]);
        assert!(ivr.is_admitted());
    }

    #[test]
    fn three_wrong_pins_say_goodbye_and_hang_up() {
        let t0 = Instant::now();
        let mut ivr = Ivr::new(IvrSettings::default());
        actions(&mut ivr);
        for i in 0..3 {
            type_digits(&mut ivr, t0, "1111#");
            ivr.handle_verify_result(t0, false);
            let a = actions(&mut ivr);
            if i < 2 {
                assert_eq!(a.last().unwrap(), "play WrongPin", "{a:?}");
                ivr.handle_prompt_finished(t0);
            } else {
                assert_eq!(a.last().unwrap(), "play Goodbye", "{a:?}");
            }
        }
        assert_eq!(ivr.wrong_attempts(), 3);
        // Digits during the goodbye do nothing; the hangup comes when it ends.
        type_digits(&mut ivr, t0, "31415926#");
        assert!(actions(&mut ivr).is_empty());
        ivr.handle_prompt_finished(t0);
        assert_eq!(actions(&mut ivr), ["hangup"]);
    }

    #[test]
    fn star_clears_and_empty_hash_is_ignored() {
        let t0 = Instant::now();
        let mut ivr = Ivr::new(IvrSettings::default());
        actions(&mut ivr);
        type_digits(&mut ivr, t0, "#12*34#");
        assert_eq!(actions(&mut ivr), ["stop", "verify 34"]);
    }

    #[test]
    fn overlong_entry_is_wrong_without_verification() {
        let t0 = Instant::now();
        let mut ivr = Ivr::new(IvrSettings {
            max_digits: 8,
            ..IvrSettings::default()
        });
        actions(&mut ivr);
        type_digits(&mut ivr, t0, "314159260#");
        assert_eq!(actions(&mut ivr), ["stop", "play WrongPin"]);
        assert_eq!(ivr.wrong_attempts(), 1);
    }

    #[test]
    fn keypad_timeout_submits_or_repeats_then_gives_up() {
        let t0 = Instant::now();
        let s = IvrSettings::default();
        let mut ivr = Ivr::new(s);
        actions(&mut ivr);
        // No timeout while the prompt plays.
        assert_eq!(ivr.poll_timeout(), None);
        ivr.handle_prompt_finished(t0);
        assert_eq!(ivr.poll_timeout(), Some(t0 + s.digit_timeout));
        // Silence: the prompt is repeated twice, then goodbye.
        let mut now = t0;
        for _ in 0..2 {
            now += s.digit_timeout;
            ivr.handle_timeout(now);
            assert_eq!(actions(&mut ivr), ["play EnterPin"]);
            ivr.handle_prompt_finished(now);
        }
        now += s.digit_timeout;
        ivr.handle_timeout(now);
        assert_eq!(actions(&mut ivr), ["play Goodbye"]);
        ivr.handle_prompt_finished(now);
        assert_eq!(actions(&mut ivr), ["hangup"]);

        // Digits without '#' are submitted after the timeout.
        let mut ivr = Ivr::new(s);
        actions(&mut ivr);
        type_digits(&mut ivr, t0, "123456");
        ivr.handle_timeout(t0 + Duration::from_secs(9));
        assert_eq!(actions(&mut ivr), ["stop"]);
        ivr.handle_timeout(t0 + s.digit_timeout);
        assert_eq!(actions(&mut ivr), ["verify 123456"]);
    }

    #[test]
    fn attempt_debug_is_redacted() {
        let a = PinAttempt(Zeroizing::new(b"31415926".to_vec()));
        assert!(!format!("{a:?}").contains("3141"));
    }
}
