//! What one caller is being told: a queue of prompts played 20 ms at a time.
//!
//! Prompts are 8 kHz; each frame is resampled to the caller's rate. A prompt plays
//! instead of the room's mix for that caller only; the queue lets a sentence be built
//! from parts ("participants:" then a number).

use super::prompts::{Prompt, Prompts, PROMPT_RATE};
use crate::media::resample::Resampler;
use std::collections::VecDeque;
use std::sync::Arc;

/// Samples of a 20 ms prompt frame.
const PROMPT_FRAME: usize = PROMPT_RATE as usize / 50;

/// Longest queue: the spoken help is the longest sentence (about 30 parts).
const MAX_QUEUE: usize = 64;

/// One caller's prompt queue and the prompt playing now.
pub struct Playback {
    queue: VecDeque<Prompt>,
    /// The prompt playing, its samples and how far it has played.
    current: Option<(Prompt, Arc<[i16]>, usize)>,
    /// Prompts (8 kHz) to the caller's rate.
    up: Option<Resampler>,
}

/// What a frame of playback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Played {
    /// A prompt filled the frame (the caller hears it instead of the room).
    pub playing: bool,
    /// The last queued prompt ended with this frame.
    pub finished: bool,
}

impl Playback {
    /// Nothing queued, for a caller at `rate` Hz.
    pub fn new(rate: u32) -> Playback {
        Playback {
            queue: VecDeque::with_capacity(8),
            current: None,
            up: Resampler::new(PROMPT_RATE, rate).ok(),
        }
    }

    /// The caller's codec changed rate.
    pub fn set_rate(&mut self, rate: u32) {
        self.up = Resampler::new(PROMPT_RATE, rate).ok();
    }

    /// Stops what plays and forgets the queue.
    pub fn stop(&mut self) {
        self.queue.clear();
        self.current = None;
    }

    /// Stops what plays and plays `p` instead.
    pub fn play_now(&mut self, p: Prompt) {
        self.stop();
        self.enqueue(p);
    }

    /// Plays `p` after what is queued (dropped beyond a bound: a key held down must not
    /// grow memory). A join or leave tone is dropped while another one plays or waits:
    /// when many join at once (a meeting start), those already in hear a few tones, not
    /// one per joiner back to back.
    pub fn enqueue(&mut self, p: Prompt) {
        let tone = |x: Prompt| matches!(x, Prompt::JoinTone | Prompt::LeaveTone);
        let tone_due = self.current.as_ref().is_some_and(|(c, ..)| tone(*c))
            || self.queue.iter().any(|&q| tone(q));
        if self.queue.len() < MAX_QUEUE && !(tone(p) && tone_due) {
            self.queue.push_back(p);
        }
    }

    /// What plays and what waits, in order (tests look).
    #[cfg(test)]
    pub fn queued(&self) -> Vec<Prompt> {
        self.current
            .iter()
            .map(|c| c.0)
            .chain(self.queue.iter().copied())
            .collect()
    }

    /// Whether nothing plays or waits.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Fills `out` (one frame at the caller's rate) from the queue.
    pub fn next_frame(&mut self, prompts: &Prompts, out: &mut [i16]) -> Played {
        if self.current.is_none() {
            if let Some(next) = self.queue.pop_front() {
                self.current = Some((next, prompts.get(next).clone(), 0));
                if let Some(up) = self.up.as_mut() {
                    up.reset();
                }
            }
        }
        let Some((_, audio, pos)) = self.current.as_mut() else {
            return Played {
                playing: false,
                finished: false,
            };
        };
        let mut frame = [0i16; PROMPT_FRAME];
        let end = (*pos + PROMPT_FRAME).min(audio.len());
        let k = end - *pos;
        frame[..k].copy_from_slice(&audio[*pos..end]);
        *pos = end;
        let converted = match self.up.as_mut() {
            Some(up) => up.process(&frame, out),
            None => 0,
        };
        out[converted..].fill(0);
        let mut finished = false;
        if *pos >= audio.len() {
            self.current = None;
            finished = self.queue.is_empty();
        }
        Played {
            playing: true,
            finished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_plays_in_order_and_reports_its_end_once() {
        let prompts = Prompts::from_fn(|p| match p {
            Prompt::JoinTone => vec![100; 200],
            _ => vec![7; 160],
        });
        let mut pb = Playback::new(8000);
        assert!(pb.is_idle());
        pb.enqueue(Prompt::JoinTone);
        pb.enqueue(Prompt::FirstParticipant);
        let mut out = [0i16; 160];
        let mut log = Vec::new();
        for _ in 0..4 {
            let played = pb.next_frame(&prompts, &mut out);
            log.push((played.playing, played.finished, out[0]));
        }
        // 200 samples: two frames (the second padded), then the 160-sample prompt.
        assert_eq!(log[0], (true, false, 100));
        assert!(log[1].0);
        assert_eq!(log[2], (true, true, 7));
        assert_eq!(log[3], (false, false, 7));
        assert!(pb.is_idle());
    }

    #[test]
    fn tones_from_a_burst_of_joins_coalesce() {
        let prompts = Prompts::from_fn(|_| vec![3; 480]);
        let mut pb = Playback::new(8000);
        pb.enqueue(Prompt::JoinTone);
        pb.enqueue(Prompt::JoinTone);
        pb.enqueue(Prompt::LeaveTone);
        assert_eq!(pb.queue.len(), 1);
        let mut out = [0i16; 160];
        pb.next_frame(&prompts, &mut out);
        // One is playing: another is not queued behind it.
        pb.enqueue(Prompt::JoinTone);
        assert!(pb.queue.is_empty());
        pb.enqueue(Prompt::Muted);
        pb.next_frame(&prompts, &mut out);
        pb.next_frame(&prompts, &mut out);
        // The tone ended: a new one may wait (behind "muted").
        pb.enqueue(Prompt::LeaveTone);
        assert_eq!(pb.queue.len(), 2);
    }

    #[test]
    fn play_now_replaces_the_queue() {
        let prompts = Prompts::from_fn(|p| match p {
            Prompt::WrongPin => vec![5; 160],
            _ => vec![9; 1600],
        });
        let mut pb = Playback::new(8000);
        pb.enqueue(Prompt::EnterPin);
        let mut out = [0i16; 160];
        pb.next_frame(&prompts, &mut out);
        pb.play_now(Prompt::WrongPin);
        let played = pb.next_frame(&prompts, &mut out);
        assert_eq!((played.playing, played.finished, out[0]), (true, true, 5));
    }
}
