//! The retransmission timers of RFC 6189 §6, written down once.
//!
//! Only one message is ever being retransmitted at a time: Hello until HelloACK (or a
//! Commit), then, by the initiator, Commit until DHPart1, DHPart2 until Confirm1 and
//! Confirm2 until Conf2ACK; and Error until ErrorACK. The responder never retransmits
//! on its own: it answers each retransmission of the initiator.

use std::time::{Duration, Instant};

/// Which of the two timers of RFC 6189 §6 a message uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schedule {
    /// T1, for Hello: starts at 50 ms, doubles, capped at 200 ms, 20 retransmissions.
    Hello,
    /// T2, for Commit, DHPart2, Confirm2, Error and GoClear: starts at 150 ms, doubles,
    /// capped at 1200 ms, 10 retransmissions.
    Other,
}

impl Schedule {
    fn initial(self) -> Duration {
        match self {
            Schedule::Hello => Duration::from_millis(50),
            Schedule::Other => Duration::from_millis(150),
        }
    }

    fn cap(self) -> Duration {
        match self {
            Schedule::Hello => Duration::from_millis(200),
            Schedule::Other => Duration::from_millis(1200),
        }
    }

    fn max_retransmissions(self) -> u32 {
        match self {
            Schedule::Hello => 20,
            Schedule::Other => 10,
        }
    }
}

/// What to do when the retransmission timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fired {
    /// Send the message again; the timer is rearmed.
    Resend,
    /// Every retransmission was spent: the exchange has timed out.
    GiveUp,
}

/// The timer of the one message being retransmitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retransmit {
    schedule: Schedule,
    interval: Duration,
    retransmissions: u32,
    deadline: Instant,
}

impl Retransmit {
    /// Armed when the message is first sent at `now`.
    pub(crate) fn start(schedule: Schedule, now: Instant) -> Retransmit {
        let interval = schedule.initial();
        Retransmit {
            schedule,
            interval,
            retransmissions: 0,
            deadline: now + interval,
        }
    }

    /// When the timer next fires.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Called when `now` has reached the deadline.
    pub(crate) fn fire(&mut self, now: Instant) -> Fired {
        if self.retransmissions >= self.schedule.max_retransmissions() {
            return Fired::GiveUp;
        }
        self.retransmissions += 1;
        self.interval = (self.interval * 2).min(self.schedule.cap());
        self.deadline = now + self.interval;
        Fired::Resend
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    /// Send times in ms after the first send, if every timer fires on time.
    fn send_times(schedule: Schedule) -> (Vec<u64>, u64) {
        let start = Instant::now();
        let mut timer = Retransmit::start(schedule, start);
        let mut times = vec![0];
        loop {
            let now = timer.deadline();
            let at = (now - start).as_millis() as u64;
            match timer.fire(now) {
                Fired::Resend => times.push(at),
                Fired::GiveUp => return (times, at),
            }
        }
    }

    #[test]
    fn hello_schedule_is_t1() {
        let (times, give_up) = send_times(Schedule::Hello);
        assert_eq!(&times[..5], &[0, 50, 150, 350, 550]);
        assert_eq!(times.len(), 21, "first send plus 20 retransmissions");
        assert_eq!(give_up, 350 + 18 * 200);
    }

    #[test]
    fn other_schedule_is_t2() {
        let (times, give_up) = send_times(Schedule::Other);
        assert_eq!(&times[..6], &[0, 150, 450, 1050, 2250, 3450]);
        assert_eq!(times.len(), 11, "first send plus 10 retransmissions");
        assert_eq!(give_up, 1050 + 8 * 1200);
    }
}
