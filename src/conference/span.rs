//! Rooms across shards: one state per room for the whole node, and each shard's part of
//! a room's mix handed to the others once per tick.
//!
//! A member lives in one shard (its media thread) for its whole call; a room is where
//! its members are. The room's state (`room::state::Room`: roles, lock, lecture, the
//! floor) is one value for the node behind a lock that is taken only when something
//! happens (a join, a leave, a key, a timer), never per packet. What it asks of a
//! member in another shard waits in that shard's inbox until its next tick (at most a
//! tick later).
//!
//! The audio: every shard mixes the speakers it holds into its part of the room's mix
//! and publishes it stamped with the tick's index on the node's common tick grid
//! ([`Rooms::tick_index`]); every shard adds the other parts of the previous index to
//! its own. A speaker in another shard is therefore heard one tick (20 ms) later than
//! one in the same shard, with no waiting between threads: a late shard costs the
//! others that part for one tick, never a stall. Only rooms with members in more than
//! one shard exchange anything; the others take no lock on the tick. Each shard keeps
//! up to `max_speakers` speakers of its own, so a room spread over N shards mixes up
//! to N × `max_speakers`.

use crate::redact::CallToken;
use crate::room::{Room, RoomAction};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

use super::RoomKey;
use crate::media::codec::MAX_FRAME;

/// The tick grid's step.
const TICK: Duration = Duration::from_millis(20);

/// Every room of the node that has members, shared by the shards.
pub struct Rooms {
    /// The tick grid's origin: every shard ticks at `base + k × 20 ms`.
    base: OnceLock<Instant>,
    shards: usize,
    map: Mutex<HashMap<RoomKey, Arc<SharedRoom>>>,
}

/// One room as the whole node sees it.
pub(super) struct SharedRoom {
    state: Mutex<RoomState>,
    /// Shards with members in the room: more than one means the mix is exchanged.
    spread: AtomicUsize,
    /// Per shard: actions wait in its inbox.
    mail: Box<[AtomicBool]>,
    /// Whether the room has a timer set (so that ticks look only then).
    timer: AtomicBool,
    /// Per shard: the highest rate its members need; the room mixes at the highest.
    need: Box<[AtomicU32]>,
    exchange: Mutex<Box<[Part]>>,
}

/// The room's state and the bookkeeping around it.
pub(super) struct RoomState {
    /// Roles, lock, lecture, floor (`room::state`).
    pub(super) room: Room,
    /// The shard each member of the room lives in.
    home: HashMap<CallToken, usize>,
    /// Per shard: actions for its members, applied at its next tick.
    inbox: Box<[Vec<RoomAction>]>,
    /// Per shard: whether it holds a handle on the room.
    parts: Box<[bool]>,
}

/// One shard's part of a room's mix: its last two ticks (a reader one tick behind
/// finds the one it wants even when the writer has already moved on).
struct Part {
    frames: [(u64, u32, Box<[i16]>); 2],
}

impl Part {
    fn new() -> Part {
        Part {
            frames: [
                (u64::MAX, 0, vec![0; MAX_FRAME].into_boxed_slice()),
                (u64::MAX, 0, vec![0; MAX_FRAME].into_boxed_slice()),
            ],
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        // A part of the mix is people's voices.
        for (_, _, f) in &mut self.frames {
            f.zeroize();
        }
    }
}

impl Rooms {
    /// The rooms of a node of `shards` shards; the tick grid starts at `base`, or at the
    /// first tick when `None`.
    pub fn new(shards: usize, base: Option<Instant>) -> Arc<Rooms> {
        let cell = OnceLock::new();
        if let Some(b) = base {
            let _ = cell.set(b);
        }
        Arc::new(Rooms {
            base: cell,
            shards: shards.max(1),
            map: Mutex::new(HashMap::new()),
        })
    }

    /// The grid's origin (fixed at the first call when none was given).
    pub fn base(&self, now: Instant) -> Instant {
        *self.base.get_or_init(|| now)
    }

    /// The index of the grid tick nearest `now`: the same for every shard ticking
    /// within half a tick of it.
    pub fn tick_index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.base(now));
        let nanos = since.as_nanos() + TICK.as_nanos() / 2;
        u64::try_from(nanos / TICK.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The next grid tick after `now` (where a shard's loop should wake).
    pub fn next_tick(&self, now: Instant) -> Instant {
        let base = self.base(now);
        let since = now.saturating_duration_since(base);
        let k = since.as_nanos() / TICK.as_nanos() + 1;
        base + TICK * u32::try_from(k).unwrap_or(u32::MAX)
    }

    /// Number of rooms with members on the node.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no room has members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shard `shard` takes a handle on `room` (made with `make` if it is new).
    pub(super) fn enter(
        &self,
        room: RoomKey,
        shard: usize,
        make: impl FnOnce() -> Room,
    ) -> Arc<SharedRoom> {
        // The part is marked while the map is held (the order `exit` takes them in
        // too): a shard letting go at the same moment must not drop a room another
        // shard is entering.
        let mut map = lock(&self.map);
        let shared = map
            .entry(room)
            .or_insert_with(|| Arc::new(SharedRoom::new(make(), self.shards)))
            .clone();
        let mut state = lock(&shared.state);
        if let Some(p) = state.parts.get_mut(shard) {
            if !*p {
                *p = true;
                shared.spread.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(state);
        drop(map);
        shared
    }

    /// Shard `shard` lets go of `room`; the room is forgotten once no shard holds it and
    /// nobody is in it.
    pub(super) fn exit(&self, room: RoomKey, shard: usize) {
        let mut map = lock(&self.map);
        let Some(shared) = map.get(&room).cloned() else {
            return;
        };
        let mut state = lock(&shared.state);
        if let Some(p) = state.parts.get_mut(shard) {
            if *p {
                *p = false;
                shared.spread.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(inbox) = state.inbox.get_mut(shard) {
            inbox.clear();
        }
        if let Some(n) = shared.need.get(shard) {
            n.store(0, Ordering::Relaxed);
        }
        let gone = !state.parts.iter().any(|&p| p) && state.room.is_empty();
        drop(state);
        if gone {
            map.remove(&room);
        }
    }
}

impl SharedRoom {
    fn new(room: Room, shards: usize) -> SharedRoom {
        SharedRoom {
            state: Mutex::new(RoomState {
                room,
                home: HashMap::new(),
                inbox: (0..shards).map(|_| Vec::new()).collect(),
                parts: vec![false; shards].into_boxed_slice(),
            }),
            spread: AtomicUsize::new(0),
            mail: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            timer: AtomicBool::new(false),
            need: (0..shards).map(|_| AtomicU32::new(0)).collect(),
            exchange: Mutex::new((0..shards).map(|_| Part::new()).collect()),
        }
    }

    /// Runs `f` on the room's state, then sorts what it asked: actions for members of
    /// `shard` (and counters) come back, the others go to their shards' inboxes.
    pub(super) fn with_state<R>(
        &self,
        shard: usize,
        out: &mut Vec<RoomAction>,
        f: impl FnOnce(&mut RoomState) -> R,
    ) -> R {
        let mut state = lock(&self.state);
        let r = f(&mut state);
        let RoomState {
            room, home, inbox, ..
        } = &mut *state;
        while let Some(action) = room.poll_action() {
            let target = match &action {
                RoomAction::Used { .. } => shard,
                RoomAction::Say { member, .. }
                | RoomAction::Mute { member, .. }
                | RoomAction::Wait { member, .. }
                | RoomAction::Gain { member, .. }
                | RoomAction::Dismiss { member, .. } => home.get(member).copied().unwrap_or(shard),
            };
            if target == shard {
                out.push(action);
            } else if let Some(b) = inbox.get_mut(target) {
                b.push(action);
                if let Some(m) = self.mail.get(target) {
                    m.store(true, Ordering::Release);
                }
            }
        }
        self.timer
            .store(room.poll_timeout().is_some(), Ordering::Relaxed);
        r
    }

    /// Takes the actions waiting for shard `shard`'s members (cheap when none wait).
    pub(super) fn take_mail(&self, shard: usize, out: &mut Vec<RoomAction>) {
        let Some(flag) = self.mail.get(shard) else {
            return;
        };
        if !flag.swap(false, Ordering::Acquire) {
            return;
        }
        let mut state = lock(&self.state);
        if let Some(b) = state.inbox.get_mut(shard) {
            out.append(b);
        }
    }

    /// Whether a timer may be due (look under the lock only then).
    pub(super) fn has_timer(&self) -> bool {
        self.timer.load(Ordering::Relaxed)
    }

    /// Whether the room has members in more than one shard.
    pub(super) fn is_spread(&self) -> bool {
        self.spread.load(Ordering::Relaxed) > 1
    }

    /// Shard `shard`'s members need `rate`; returns the rate the room mixes at.
    pub(super) fn agree_rate(&self, shard: usize, rate: u32) -> u32 {
        if let Some(n) = self.need.get(shard) {
            n.store(rate, Ordering::Relaxed);
        }
        self.rate()
    }

    /// The rate the room mixes at: the highest any shard's members need.
    pub(super) fn rate(&self) -> u32 {
        self.need
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Publishes shard `shard`'s part of tick `index` (`None`: no speaker there) and
    /// hands `add` every other shard's part of the tick before, at `rate`.
    pub(super) fn exchange(
        &self,
        shard: usize,
        index: u64,
        rate: u32,
        ours: Option<&[i16]>,
        mut add: impl FnMut(&[i16]),
    ) {
        let mut parts = lock(&self.exchange);
        if let Some(part) = parts.get_mut(shard) {
            // The same tick again replaces itself; otherwise the older frame goes.
            let older = match (part.frames[0].0, part.frames[1].0) {
                (a, _) if a == index => 0,
                (_, b) if b == index => 1,
                (u64::MAX, _) => 0,
                (_, u64::MAX) => 1,
                (a, b) => usize::from(b < a),
            };
            let (i, r, frame) = &mut part.frames[older];
            match ours {
                Some(samples) => {
                    let n = samples.len().min(frame.len());
                    frame[..n].copy_from_slice(&samples[..n]);
                    frame[n..].fill(0);
                    *i = index;
                    *r = rate;
                }
                // Nothing to add: marked so that readers skip it.
                None => {
                    *i = index;
                    *r = 0;
                }
            }
        }
        let want = index.wrapping_sub(1);
        let n = rate as usize / 50;
        for (s, part) in parts.iter().enumerate() {
            if s == shard {
                continue;
            }
            for (i, r, frame) in &part.frames {
                if *i == want && *r == rate {
                    add(&frame[..n.min(frame.len())]);
                }
            }
        }
    }
}

impl RoomState {
    /// Records that `call` lives in `shard` (on joining).
    pub(super) fn place(&mut self, call: CallToken, shard: usize) {
        self.home.insert(call, shard);
    }

    /// Forgets where `call` lives (on leaving).
    pub(super) fn forget(&mut self, call: CallToken) {
        self.home.remove(&call);
    }
}

/// A poisoned lock means another shard panicked mid-update; the room's state is still
/// the best there is (every update is a few field writes), so it is used on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;
    use crate::room::keys::KeyMap;
    use crate::room::RoomOptions;

    fn room() -> Room {
        Room::new(RoomOptions::default(), Arc::new(KeyMap::default()))
    }

    #[test]
    fn a_room_is_kept_while_a_shard_holds_it_or_someone_is_in_it() {
        let rooms = Rooms::new(2, None);
        let a = rooms.enter(7, 0, room);
        let b = rooms.enter(7, 1, room);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.is_spread());
        rooms.exit(7, 1);
        assert!(!a.is_spread());
        assert_eq!(rooms.len(), 1);
        rooms.exit(7, 0);
        assert!(rooms.is_empty());
    }

    #[test]
    fn each_shard_hears_the_other_parts_of_the_tick_before() {
        let rooms = Rooms::new(2, None);
        let r = rooms.enter(1, 0, room);
        rooms.enter(1, 1, room);
        let loud = [1000i16; 160];
        let mut heard = Vec::new();
        // Tick 10: shard 1 publishes; shard 0 (same tick) finds nothing of tick 9.
        r.exchange(1, 10, 8000, Some(&loud), |f| heard.push(f[0]));
        r.exchange(0, 10, 8000, None, |f| heard.push(f[0]));
        assert!(heard.is_empty());
        // Tick 11: shard 0 hears shard 1's part of tick 10, also after shard 1 moved on.
        r.exchange(1, 11, 8000, Some(&[2000; 160]), |_| {});
        r.exchange(0, 11, 8000, None, |f| heard.push(f[0]));
        assert_eq!(heard, vec![1000]);
        // A part at another rate (a format change under way) is skipped for a tick.
        r.exchange(1, 12, 16000, Some(&[3000; 320]), |_| {});
        r.exchange(0, 13, 8000, None, |f| heard.push(f[0]));
        assert_eq!(heard, vec![1000]);
    }

    #[test]
    fn the_tick_grid_is_common_to_every_shard() {
        let t0 = Instant::now();
        let rooms = Rooms::new(2, Some(t0));
        assert_eq!(rooms.tick_index(t0 + Duration::from_millis(39)), 2);
        assert_eq!(rooms.tick_index(t0 + Duration::from_millis(41)), 2);
        assert_eq!(rooms.tick_index(t0 + Duration::from_millis(51)), 3);
        assert_eq!(
            rooms.next_tick(t0 + Duration::from_millis(41)),
            t0 + Duration::from_millis(60)
        );
    }

    #[test]
    fn actions_for_another_shards_members_wait_in_its_inbox() {
        use crate::room::Role;
        let rooms = Rooms::new(2, None);
        let r = rooms.enter(3, 0, room);
        let t0 = Instant::now();
        let (a, b) = (CallToken::from_raw(1), CallToken::from_raw(2));
        let mut mine = Vec::new();
        r.with_state(0, &mut mine, |s| {
            s.place(a, 0);
            s.room.handle_join(t0, a, Role::Member)
        });
        mine.clear();
        r.with_state(1, &mut mine, |s| {
            s.place(b, 1);
            s.room.handle_join(t0, b, Role::Member)
        });
        // The join tone for a (shard 0) waits for shard 0.
        let mut mail = Vec::new();
        r.take_mail(0, &mut mail);
        assert!(
            mail.iter()
                .any(|x| matches!(x, RoomAction::Say { member, .. } if *member == a)),
            "{mail:?}"
        );
        mail.clear();
        r.take_mail(0, &mut mail);
        assert!(mail.is_empty());
    }
}
