//! The shard's tick: timers, one frame in from every member, the rooms' mixes, and one
//! packet out to every member (see the module docs of `conference` for the order).

use super::member::Phase;
use super::mix::{mixer_index, select_speakers, shared_encode};
use super::{
    Conference, ConferenceEvent, HangupReason, Member, RoomKey, LEVEL_FRESH_TICKS, MUTED_TALK_TICKS,
};
use crate::media::codec::Unheard;
use crate::media::gate::{level_dbov, SILENCE_DBOV};
use crate::media::playout::Playout;
use std::time::Instant;
use zeroize::Zeroize;

impl Conference {
    /// One mixing tick: every member gets its next frame written as an RTP packet.
    pub fn handle_tick(&mut self, now: Instant) {
        self.ticks += 1;
        if let Some(demux) = self.demux.as_mut() {
            demux.tick();
        }
        self.take_mail();
        self.timers(now);
        self.take_input(now);
        let index = self.node.tick_index(now);
        self.mix_rooms(index);
        self.write_output(now);
    }

    /// IVR timers and media timeouts.
    fn timers(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let Some(m) = self.slots[slot].as_mut() else {
                continue;
            };
            if !m.timed_out
                && m.receive
                && now.saturating_duration_since(m.last_rx) >= self.settings.rtp_timeout
            {
                m.timed_out = true;
                self.events.push_back(ConferenceEvent::Hangup {
                    call: m.token,
                    reason: HangupReason::MediaTimeout,
                });
            }
            m.zrtp_timer(now, &mut self.counters);
            if let Phase::Ivr(ivr) = &mut m.phase {
                if ivr.poll_timeout().is_some_and(|t| t <= now) {
                    ivr.handle_timeout(now);
                    self.run_ivr(now, slot);
                }
            }
        }
        // Rooms with a timer set (the grace after the last moderator left): rare, so
        // their keys are collected only when one is. Any shard of the room may run it.
        if self.controls.values().any(|h| h.has_timer()) {
            let due: Vec<RoomKey> = self
                .controls
                .iter()
                .filter(|(_, h)| h.has_timer())
                .map(|(&k, _)| k)
                .collect();
            let shard = self.shard;
            for room in due {
                if let Some(h) = self.controls.get(&room).cloned() {
                    h.with_state(shard, &mut self.actions, |s| {
                        if s.room.poll_timeout().is_some_and(|t| t <= now) {
                            s.room.handle_timeout(now);
                        }
                    });
                }
                self.run_room(room);
            }
        }
        // A room across shards whose agreed rate moved (a member elsewhere needs more,
        // or left): resamplers and encodes follow.
        if self.controls.values().any(|h| h.is_spread()) {
            let moved: Vec<RoomKey> = self
                .rooms
                .iter()
                .filter(|(k, r)| {
                    self.controls
                        .get(k)
                        .is_some_and(|h| h.is_spread() && h.rate() != r.rate && h.rate() != 0)
                })
                .map(|(&k, _)| k)
                .collect();
            for room in moved {
                self.refresh_room(room);
            }
        }
    }

    /// Members typing their PIN as tones: one decoded frame each into their detector
    /// (never into the mix).
    fn listen_for_tones(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let Some(m) = self.slots[slot].as_mut() else {
                continue;
            };
            if !(matches!(m.phase, Phase::Ivr(_)) && m.receive) {
                continue;
            }
            let Some(detector) = m.inband.as_mut() else {
                continue;
            };
            let n = m.format.frame_samples();
            if m.playout.pop(now, &mut m.decoder, &mut m.native[..n]) == Playout::Silence {
                continue;
            }
            let mut digit = detector.handle_samples(&m.native[..n]);
            // At most one key completes per 20 ms frame; the queue is drained anyway.
            while let Some(d) = digit {
                self.counters.inband_digits += 1;
                self.on_digit(now, slot, d);
                digit = self.slots[slot]
                    .as_mut()
                    .and_then(|m| m.inband.as_mut())
                    .and_then(|d| d.poll_digit());
            }
        }
    }

    /// One frame per joined member from its playout buffer, and its level.
    ///
    /// A member that is not speaking and whose RFC 6464 level says it is below the
    /// noise gate is not decoded: its packets play as silence of the right length,
    /// and the reported level feeds the gate. Decoding (with a fresh decoder) resumes
    /// as soon as it reports a level above the gate, which arrives with the packet,
    /// a jitter-buffer delay before the audio plays.
    fn take_input(&mut self, now: Instant) {
        self.listen_for_tones(now);
        let gate = self.settings.noise_gate_dbov;
        let auto_gain = self.settings.auto_gain;
        let ticks = self.ticks;
        let hints = &mut self.hints;
        let tone_keys = &mut self.tone_keys;
        for (slot, m) in self.slots.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else {
                continue;
            };
            m.has_audio = false;
            if !(matches!(m.phase, Phase::Joined(_)) && m.receive) {
                continue;
            }
            let n = m.format.frame_samples();
            let reported = m
                .reported
                .filter(|&(_, t)| ticks.saturating_sub(t) <= LEVEL_FRESH_TICKS)
                .map(|(minus_dbov, _)| -f32::from(minus_dbov));
            // Keys as tones need every frame decoded.
            let quiet =
                reported.filter(|&db| !m.voice.speaking && db <= gate && m.inband.is_none());
            let played = match quiet {
                Some(_) => {
                    m.skipping = true;
                    m.playout
                        .pop(now, &mut Unheard(&m.decoder), &mut m.native[..n])
                }
                None => {
                    if m.skipping {
                        // Its history is from before the skipped packets.
                        m.decoder.reset();
                        m.skipping = false;
                    }
                    m.playout.pop(now, &mut m.decoder, &mut m.native[..n])
                }
            };
            match (played, quiet) {
                (Playout::Silence, _) => {}
                (_, Some(_)) => self.counters.frames_skipped += 1,
                (Playout::Audio, None) => self.counters.frames_decoded += 1,
                (Playout::Concealed, None) => self.counters.frames_concealed += 1,
            }
            m.has_audio = played != Playout::Silence;
            m.screen_tones(n, |d| tone_keys.push((slot, d)));
            let db = match (quiet, m.has_audio) {
                (Some(db), true) => db,
                (None, true) => level_dbov(&m.native[..n]),
                (_, false) => SILENCE_DBOV,
            };
            m.voice.update(db, gate, auto_gain);
            if m.muted && !m.waiting && m.talk < MUTED_TALK_TICKS {
                // Net speech while muted: a few seconds of it and the member is told
                // (once, by its room) how to unmute.
                m.talk = if m.voice.audible() {
                    m.talk + 1
                } else {
                    m.talk.saturating_sub(1)
                };
                if m.talk == MUTED_TALK_TICKS {
                    if let Phase::Joined(room) = m.phase {
                        hints.push((room, m.token));
                    }
                }
            }
        }
        for i in 0..self.tone_keys.len() {
            let (slot, digit) = self.tone_keys[i];
            self.counters.inband_digits += 1;
            self.on_digit(now, slot, digit);
        }
        self.tone_keys.clear();
        for i in 0..self.hints.len() {
            let (room, call) = self.hints[i];
            let shard = self.shard;
            if let Some(h) = self.controls.get(&room).cloned() {
                h.with_state(shard, &mut self.actions, |s| s.room.handle_muted_talk(call));
            }
            self.run_room(room);
        }
        self.hints.clear();
    }

    /// Speaker selection, the sum of the speakers, and each speaker's own mix; a room
    /// across shards adds the other shards' parts of grid tick `index - 1` (`span`).
    fn mix_rooms(&mut self, index: u64) {
        let Conference {
            settings,
            slots,
            rooms,
            controls,
            mixers,
            candidates,
            scratch,
            ticks,
            shard,
            ..
        } = self;
        for (key, room) in rooms.iter_mut() {
            select_speakers(room, slots, candidates, settings.max_speakers, *ticks);
            let n_room = room.frame();
            let mixer = &mut mixers[mixer_index(room.rate)];
            mixer.clear();
            for &s in &room.speakers {
                let Some(m) = slots.get_mut(s).and_then(Option::as_mut) else {
                    continue;
                };
                let n = m.format.frame_samples();
                let converted = match m.up.as_mut() {
                    Some(up) => up.process(&m.native[..n], &mut m.mixed[..n_room]),
                    None => 0,
                };
                m.mixed[converted..n_room].fill(0);
                // The gate's ramp (a closing gate fades the speaker out) and auto gain.
                m.voice.apply(&mut m.mixed[..n_room], settings.auto_gain);
                mixer.add(&m.mixed[..n_room]);
            }
            mixer.full_mix(&mut room.full[..n_room]);
            if let Some(h) = controls.get(key).filter(|h| h.is_spread()) {
                // Ours goes out as it is (only our speakers); the others' come in.
                let ours = (!room.speakers.is_empty()).then_some(&room.full[..n_room]);
                h.exchange(*shard, index, room.rate, ours, |part| mixer.add(part));
                mixer.full_mix(&mut room.full[..n_room]);
            }
            room.start_tick();
            for &s in &room.speakers {
                let Some(m) = slots.get_mut(s).and_then(Option::as_mut) else {
                    continue;
                };
                mixer.minus_own(&m.mixed[..n_room], &mut scratch[..n_room]);
                let n = m.format.frame_samples();
                let converted = match m.down.as_mut() {
                    Some(down) => down.process(&scratch[..n_room], &mut m.out[..n]),
                    None => 0,
                };
                m.out[converted..n].fill(0);
            }
            scratch.zeroize();
        }
    }

    /// Prompts, own and shared encodes, and the RTP packets.
    fn write_output(&mut self, now: Instant) {
        let Conference {
            prompts,
            slots,
            rooms,
            counters,
            payload,
            finished,
            silence,
            ..
        } = self;
        finished.clear();
        for (slot, m) in slots.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else {
                continue;
            };
            m.packet_len = 0;
            if m.zrtp_pending() {
                // Nothing but ZRTP before its keys; the prompts wait for it.
                m.sender.skip(m.format.timestamp_step());
                m.paused = true;
                continue;
            }
            let n = m.format.frame_samples();
            let played = m.playback.next_frame(prompts, &mut m.out[..n]);
            let prompting = played.playing;
            if played.finished {
                finished.push(slot);
            }
            let step = m.format.timestamp_step();
            if !m.send || m.remote.is_none() {
                m.sender.skip(step);
                m.paused = true;
                continue;
            }
            let room = if prompting || m.waiting {
                None
            } else {
                m.phase_room()
            };
            let shared = match room {
                Some(r) if !m.voice.speaking && m.gain_db == 0 => rooms
                    .get_mut(&r)
                    .and_then(|room| shared_encode(room, m.format, counters)),
                _ => None,
            };
            if m.paused {
                // Sending resumes after a gap (hold, no address yet, a failed encode):
                // a new talk-spurt for the far end's jitter buffer (RFC 3551 §4.1).
                m.sender.mark_talkspurt();
                m.paused = false;
            }
            let written = match shared {
                // A listener: the room's one encode for its format.
                Some(bytes) => m.sender.write(bytes, step, &mut m.packet),
                None => {
                    let mut silent = false;
                    if !prompting {
                        let heard = match room.and_then(|r| rooms.get(&r)) {
                            // A speaker hears the mix minus itself (made by the mix).
                            Some(_) if m.voice.speaking => true,
                            // A listener with its own level: the room's mix at its rate.
                            Some(r) if m.gain_db != 0 => {
                                let n_room = r.frame();
                                let converted = match m.down.as_mut() {
                                    Some(down) => down.process(&r.full[..n_room], &mut m.out[..n]),
                                    None => 0,
                                };
                                m.out[converted..n].fill(0);
                                true
                            }
                            _ => false,
                        };
                        if heard {
                            apply_gain(&mut m.out[..n], m.gain_db);
                        } else {
                            // In the IVR between prompts, waiting for the moderator, or a
                            // listener whose shared encode failed: silence, never the
                            // last frame again.
                            m.out[..n].fill(0);
                            silent = true;
                        }
                    }
                    // Silence is encoded once per format and sent to everyone who
                    // hears nothing: a meeting start has many callers between prompts,
                    // and an Opus encode each was what overloaded it.
                    let cached = silent
                        .then(|| silence.iter().find(|(f, _)| *f == m.format))
                        .flatten();
                    match cached {
                        Some((_, bytes)) => m.sender.write(bytes, step, &mut m.packet),
                        None => {
                            counters.encoder_runs += 1;
                            let len = match m.encoder.encode(&m.out[..n], payload) {
                                Ok(len) if len > 0 => len,
                                _ => {
                                    counters.codec_errors += 1;
                                    m.sender.skip(step);
                                    m.paused = true;
                                    continue;
                                }
                            };
                            m.sender.write(&payload[..len], step, &mut m.packet)
                        }
                    }
                }
            };
            m.packet_len = match written {
                Ok(len) => match &mut m.srtp {
                    Some((_, _, outbound)) => outbound.protect_rtp(&mut m.packet, len).unwrap_or(0),
                    None => len,
                },
                Err(_) => 0,
            };
        }
        payload.zeroize();
        for i in 0..self.finished.len() {
            let slot = self.finished[i];
            match self.slots[slot].as_mut() {
                Some(Member {
                    phase: Phase::Ivr(ivr),
                    ..
                }) => ivr.handle_prompt_finished(now),
                Some(Member {
                    phase: Phase::Leaving(reason),
                    token,
                    ..
                }) => self.events.push_back(ConferenceEvent::Hangup {
                    call: *token,
                    reason: HangupReason::Room(*reason),
                }),
                _ => {}
            }
            self.run_ivr(now, slot);
        }
    }
}

/// A listener's own level: `db` (a few 3 dB steps either way) on its frame.
fn apply_gain(frame: &mut [i16], db: i8) {
    if db == 0 {
        return;
    }
    let g = 10f32.powf(f32::from(db) / 20.0);
    for x in frame {
        *x = (f32::from(*x) * g).clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
    }
}
