//! PIN verification off the media path: one worker thread at a lower CPU priority with
//! a bounded queue.
#![allow(clippy::disallowed_methods)] // an I/O edge: it owns the clock
//!
//! An argon2id run costs tens of milliseconds of one core. When a meeting starts,
//! hundreds of callers type their PIN within seconds; on the blocking pool every
//! attempt got its own thread and the checks took the cores the mixers need, so the
//! audio of members already in rooms stalled. One worker, niced below the mixers, takes
//! the attempts in order; correct PINs are cached by signalling (`room::pin::VerifiedPins`),
//! so the same PIN typed by a room's many callers is checked once.

use crate::conference::RoomKey;
use crate::redact::CallToken;
use crate::room::ivr::PinAttempt;
use crate::room::pin::{AttemptDigest, RoomPins};
use crate::room::Role;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Niceness of the worker: below the mixers and signalling (0), so that a burst of
/// checks waits for them rather than they for it.
const WORKER_NICE: i32 = 10;

/// One PIN attempt to check.
pub struct PinJob {
    /// The call.
    pub call: CallToken,
    /// The room a dial-in call named (its PIN opens that room only).
    pub target: Option<RoomKey>,
    /// The digits (wiped on drop).
    pub attempt: PinAttempt,
    /// Its digest for the cache of correct PINs.
    pub digest: AttemptDigest,
    /// Not before this (the global guessing budget spaces checks out).
    pub not_before: Option<Instant>,
}

/// A checked attempt.
#[derive(Debug, Clone, Copy)]
pub struct PinChecked {
    /// The call.
    pub call: CallToken,
    /// The attempt's digest (cached by signalling when the PIN was right).
    pub digest: AttemptDigest,
    /// The room it opened and the role it gives, or `None` for a wrong PIN.
    pub result: Option<(RoomKey, Role)>,
}

/// Handle on the worker.
pub struct PinVerifier {
    jobs: Option<SyncSender<PinJob>>,
    thread: Option<JoinHandle<()>>,
}

impl PinVerifier {
    /// Starts the worker; at most `queue` attempts wait at once.
    pub fn spawn(
        pins: Arc<RoomPins>,
        results: UnboundedSender<PinChecked>,
        queue: usize,
    ) -> std::io::Result<PinVerifier> {
        let (tx, rx) = sync_channel(queue.max(1));
        let thread = std::thread::Builder::new()
            .name("pin-verify".into())
            .spawn(move || work(&pins, &rx, &results))?;
        Ok(PinVerifier {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues an attempt; gives it back when the queue is full.
    pub fn submit(&self, job: PinJob) -> Result<(), PinJob> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }
}

impl Drop for PinVerifier {
    fn drop(&mut self) {
        // Closing the queue ends the worker after the attempt in hand.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn work(pins: &RoomPins, jobs: &Receiver<PinJob>, results: &UnboundedSender<PinChecked>) {
    lower_priority();
    while let Ok(job) = jobs.recv() {
        if let Some(t) = job.not_before {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
        }
        let result = match job.target {
            Some(r) => pins.verify_room(r, &job.attempt.0).map(|role| (r, role)),
            None => pins.lookup(&job.attempt.0),
        };
        let checked = PinChecked {
            call: job.call,
            digest: job.digest,
            result,
        };
        drop(job);
        if results.send(checked).is_err() {
            return;
        }
    }
}

/// Lowers this thread's CPU priority (Linux nice values are per thread).
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; on failure the worker simply
    // runs at the normal priority.
    let ok = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_NICE)
    };
    if ok != 0 {
        tracing::debug!("pin-verify: could not lower the thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::pin::{cheap_hash_for_tests, PinHash};
    use std::time::Duration;
    use zeroize::Zeroizing;

    fn job(call: u64, pin: &[u8]) -> PinJob {
        PinJob {
            call: CallToken::from_raw(call),
            target: None,
            attempt: PinAttempt(Zeroizing::new(pin.to_vec())),
            digest: [call as u8; 32],
            not_before: None,
        }
    }

    #[test]
    fn attempts_are_checked_in_order_and_a_full_queue_refuses_more() {
        let a = PinHash::parse(&cheap_hash_for_tests("11111111", b"saltsalt")).unwrap();
        let m = PinHash::parse(&cheap_hash_for_tests("99999999", b"othersalt")).unwrap();
        let pins = Arc::new(RoomPins::new([(&a, Some(&m))]));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let v = PinVerifier::spawn(pins, tx, 2).unwrap();
        // The first job sleeps, so the queue fills behind it.
        let mut first = job(1, b"11111111");
        first.not_before = Some(Instant::now() + Duration::from_millis(300));
        assert!(v.submit(first).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        assert!(v.submit(job(2, b"99999999")).is_ok());
        assert!(v.submit(job(3, b"12345678")).is_ok());
        assert!(v.submit(job(4, b"11111111")).is_err(), "queue of 2 is full");
        let got: Vec<PinChecked> = (0..3).map(|_| rx.blocking_recv().unwrap()).collect();
        assert_eq!(got[0].call, CallToken::from_raw(1));
        assert_eq!(got[0].result, Some((0, Role::Member)));
        assert_eq!(got[1].result, Some((0, Role::Moderator)));
        assert_eq!(got[1].digest, [2; 32]);
        assert_eq!(got[2].result, None);
        drop(v);
    }
}
