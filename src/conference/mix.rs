//! A room's audio in one shard: speaker selection with hysteresis, and the room's
//! shared encodes of its mix (one per format its listeners use).

use super::member::{resampler, Member};
use super::MediaCounters;
use crate::media::codec::{Encoder, EncoderKey, Format, MAX_FRAME, MAX_PAYLOAD};
use crate::media::gate::SILENCE_DBOV;
use crate::media::resample::Resampler;
use zeroize::Zeroize;

/// How much louder (smoothed level, dB) a candidate must be than the quietest current
/// speaker to take its place: the hysteresis that keeps speakers from flapping.
const SWITCH_MARGIN_DB: f32 = 6.0;

/// Ticks a speaker keeps its place at least (400 ms) before a louder one may take it.
const MIN_SPEAKER_TICKS: u64 = 20;

/// The room's one encode of the full mix for all listeners of one format.
pub(super) struct SharedEncode {
    /// The format it encodes for.
    pub(super) key: EncoderKey,
    encoder: Encoder,
    /// Room rate to the format's rate.
    down: Option<Resampler>,
    pcm: Box<[i16]>,
    payload: Box<[u8]>,
    len: usize,
    /// Encoded this tick.
    ready: bool,
    /// Encoded last tick: if not, the resampler's and encoder's history is stale.
    fresh: bool,
}

impl SharedEncode {
    pub(super) fn new(key: EncoderKey, room_rate: u32) -> Option<SharedEncode> {
        Some(SharedEncode {
            key,
            encoder: Encoder::new(key).ok()?,
            down: resampler(room_rate, key.rate),
            pcm: vec![0; MAX_FRAME].into_boxed_slice(),
            payload: vec![0; MAX_PAYLOAD].into_boxed_slice(),
            len: 0,
            ready: false,
            fresh: false,
        })
    }

    fn wipe(&mut self) {
        self.pcm.zeroize();
        self.payload.zeroize();
        self.encoder.reset();
    }
}

impl Drop for SharedEncode {
    fn drop(&mut self) {
        // The room's mix and its encode are everyone's voice (architecture §5).
        self.wipe();
    }
}

/// A room's audio in this shard: who is in it, who is mixed, the sum, and one encode
/// of the sum per format its listeners use.
pub(super) struct RoomMix {
    /// Slots of the members in this shard.
    pub(super) members: Vec<usize>,
    /// Mixing rate: the highest any member needs.
    pub(super) rate: u32,
    /// Slots of the members mixed this tick.
    pub(super) speakers: Vec<usize>,
    /// The full mix of this tick at the room's rate.
    pub(super) full: Box<[i16]>,
    pub(super) shared: Vec<SharedEncode>,
}

impl RoomMix {
    /// An empty room.
    pub(super) fn new() -> RoomMix {
        RoomMix {
            members: Vec::new(),
            rate: 0,
            speakers: Vec::new(),
            full: vec![0; MAX_FRAME].into_boxed_slice(),
            shared: Vec::new(),
        }
    }

    /// After a membership or format change: the room's rate (the highest its members
    /// need, and at least `at_least`: the rate the room's other shards mix at) and one
    /// shared encode per format in `formats`. Returns how many encoders or resamplers
    /// could not be made.
    pub(super) fn refresh_formats(&mut self, formats: &[Format], at_least: u32) -> u64 {
        let mut errors = 0;
        let rate = formats
            .iter()
            .map(|f| f.rate)
            .max()
            .unwrap_or(8000)
            .max(at_least);
        if rate != self.rate {
            self.rate = rate;
            // Only the conversion depends on the room's rate: the encoders stay, so
            // the listeners' decoders see no new stream.
            self.full.zeroize();
            for s in &mut self.shared {
                s.down = resampler(rate, s.key.rate);
                s.fresh = false;
                if s.down.is_none() {
                    errors += 1;
                }
            }
        }
        // Dropping a SharedEncode wipes it.
        self.shared.retain(|s| formats.contains(&s.key));
        for f in formats {
            if !self.shared.iter().any(|s| s.key == *f) {
                match SharedEncode::new(*f, rate) {
                    Some(s) => self.shared.push(s),
                    None => errors += 1,
                }
            }
        }
        errors
    }

    /// A new tick: no shared encode is made yet; those made last tick keep their history.
    pub(super) fn start_tick(&mut self) {
        for s in &mut self.shared {
            s.fresh = s.ready;
            s.ready = false;
        }
    }

    fn wipe(&mut self) {
        self.full.zeroize();
        for s in &mut self.shared {
            s.wipe();
        }
    }

    pub(super) fn frame(&self) -> usize {
        self.rate as usize / 50
    }
}

impl Drop for RoomMix {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// The mixer (by frame length) for a room rate.
pub(super) fn mixer_index(rate: u32) -> usize {
    match rate {
        0..=8000 => 0,
        8001..=16_000 => 1,
        _ => 2,
    }
}

/// Keeps the room's speakers: those whose gate closed leave; free places go to the
/// loudest candidates; a full set changes only for a candidate clearly louder than a
/// speaker who has held its place for a while (hysteresis against flapping).
pub(super) fn select_speakers(
    room: &mut RoomMix,
    slots: &mut [Option<Member>],
    candidates: &mut Vec<usize>,
    max_speakers: usize,
    tick: u64,
) {
    let voice = |slots: &[Option<Member>], s: usize| {
        slots
            .get(s)
            .and_then(Option::as_ref)
            .filter(|m| m.receive && !m.muted && !m.waiting)
            .map(|m| m.voice)
    };
    let dropped = |slots: &mut [Option<Member>], s: usize| {
        if let Some(m) = slots.get_mut(s).and_then(Option::as_mut) {
            m.voice.speaking = false;
        }
    };
    let mut i = 0;
    while i < room.speakers.len() {
        let s = room.speakers[i];
        if voice(slots, s).is_some_and(|v| v.audible()) {
            i += 1;
        } else {
            room.speakers.swap_remove(i);
            dropped(slots, s);
        }
    }
    candidates.clear();
    for &s in &room.members {
        if let Some(v) = voice(slots, s) {
            if v.audible() && !v.speaking {
                candidates.push(s);
            }
        }
    }
    let level =
        |slots: &[Option<Member>], s: usize| voice(slots, s).map_or(SILENCE_DBOV, |v| v.level_db);
    // Unstable: no allocation (a stable sort buffers beyond 20 elements).
    candidates.sort_unstable_by(|&a, &b| level(slots, b).total_cmp(&level(slots, a)));
    for &c in candidates.iter() {
        let place = if room.speakers.len() < max_speakers {
            Some(room.speakers.len())
        } else {
            // The quietest speaker that has held its place long enough.
            room.speakers
                .iter()
                .enumerate()
                .filter(|(_, &s)| {
                    voice(slots, s)
                        .is_some_and(|v| tick.saturating_sub(v.since) >= MIN_SPEAKER_TICKS)
                })
                .min_by(|(_, &a), (_, &b)| level(slots, a).total_cmp(&level(slots, b)))
                .filter(|(_, &s)| level(slots, c) > level(slots, s) + SWITCH_MARGIN_DB)
                .map(|(i, _)| i)
        };
        let Some(place) = place else {
            // Candidates are sorted: a quieter one will not do better.
            break;
        };
        if place < room.speakers.len() {
            let old = room.speakers[place];
            dropped(slots, old);
            room.speakers[place] = c;
        } else {
            room.speakers.push(c);
        }
        if let Some(m) = slots.get_mut(c).and_then(Option::as_mut) {
            m.voice.speaking = true;
            m.voice.since = tick;
            // The conversions' history is from before: start them clean.
            if let Some(up) = m.up.as_mut() {
                up.reset();
            }
            if let Some(down) = m.down.as_mut() {
                down.reset();
            }
        }
    }
}

/// The room's encode of its full mix for listeners of `format`, made on first use in
/// a tick.
pub(super) fn shared_encode<'a>(
    room: &'a mut RoomMix,
    format: Format,
    counters: &mut MediaCounters,
) -> Option<&'a [u8]> {
    let n_room = room.frame();
    let shared = room.shared.iter_mut().find(|s| s.key == format)?;
    if !shared.ready {
        if !shared.fresh {
            // Not used last tick: its history belongs to another moment.
            if let Some(down) = shared.down.as_mut() {
                down.reset();
            }
        }
        let n = format.frame_samples();
        let converted = match shared.down.as_mut() {
            Some(down) => down.process(&room.full[..n_room], &mut shared.pcm[..n]),
            None => 0,
        };
        shared.pcm[converted..n].fill(0);
        counters.encoder_runs += 1;
        shared.len = match shared.encoder.encode(&shared.pcm[..n], &mut shared.payload) {
            Ok(len) => len,
            Err(_) => {
                counters.codec_errors += 1;
                0
            }
        };
        shared.ready = true;
    }
    if shared.len == 0 {
        return None;
    }
    Some(&shared.payload[..shared.len])
}
