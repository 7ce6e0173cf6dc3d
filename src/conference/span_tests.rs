//! One room across two shards, in virtual time: each shard's speakers reach the other
//! shard's listeners a tick later, and the room's state (keys, lock) is one.

use super::tests::{addr, level, media, prompts, seed, sent, settings, Tx, TICK};
use super::*;
use crate::media::g711::{ulaw_decode, ulaw_encode};

/// Two shards of one node, members in rooms, each sending a constant level every tick.
struct Node {
    shards: [Conference; 2],
    now: Instant,
    /// Shard, call, slot, phone, level sent, number (address 127.0.0.n).
    members: Vec<(usize, CallToken, usize, Tx, i16, u8)>,
    heard: HashMap<SocketAddr, Vec<i16>>,
    hangups: Vec<(CallToken, HangupReason)>,
}

impl Node {
    fn new() -> Node {
        let now = Instant::now();
        let rooms = Rooms::new(2, Some(now));
        let make = |i| Conference::in_node(settings(), prompts(), rooms.clone(), i);
        Node {
            shards: [make(0), make(1)],
            now,
            members: Vec::new(),
            heard: HashMap::new(),
            hangups: Vec::new(),
        }
    }

    /// Member `n` (address 127.0.0.n) in `shard` joins `room` as `role`.
    fn join(&mut self, shard: usize, n: u8, room: RoomKey, role: Role) -> CallToken {
        let call = CallToken::from_raw(u64::from(n));
        let conf = &mut self.shards[shard];
        let slot = conf.add_member(self.now, call, media(n), seed(n)).unwrap();
        conf.join_as(self.now, call, room, role);
        self.members.push((shard, call, slot, Tx::new(n), 0, n));
        call
    }

    fn talk(&mut self, n: u8, level: i16) {
        let m = self.members.iter_mut().find(|m| m.5 == n).unwrap();
        m.4 = ulaw_decode(ulaw_encode(level));
    }

    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.now += TICK;
            for (shard, _, slot, tx, level, n) in self.members.iter_mut() {
                let mut pkt = tx.audio(*level);
                self.shards[*shard].handle_rtp(self.now, *slot, addr(*n), &mut pkt);
            }
            self.heard.clear();
            for conf in &mut self.shards {
                conf.handle_tick(self.now);
                self.heard.extend(sent(conf));
                while let Some(ev) = conf.poll_event() {
                    if let ConferenceEvent::Hangup { call, reason } = ev {
                        self.hangups.push((call, reason));
                    }
                }
            }
        }
    }

    fn press(&mut self, n: u8, keys: &str) {
        for k in keys.chars() {
            let event = Digit::from_char(k).unwrap().event();
            let m = self.members.iter_mut().find(|m| m.5 == n).unwrap();
            let (shard, slot, from) = (m.0, m.2, addr(m.5));
            for mut pkt in m.3.digit(event) {
                self.shards[shard].handle_rtp(self.now, slot, from, &mut pkt);
            }
            self.run(1);
        }
    }

    fn heard(&self, n: u8) -> i16 {
        level(&self.heard[&addr(n)])
    }
}

fn q(x: i32) -> i16 {
    ulaw_decode(ulaw_encode(x.clamp(-32_000, 32_000) as i16))
}

#[test]
fn a_room_across_two_shards_sums_both_parts_for_everyone() {
    let mut node = Node::new();
    node.join(0, 1, 0, Role::Member);
    node.join(1, 2, 0, Role::Member);
    node.join(0, 3, 0, Role::Member);
    node.join(1, 4, 0, Role::Member);
    assert_eq!(
        (node.shards[0].room_size(0), node.shards[1].room_size(0)),
        (2, 2)
    );
    node.talk(1, 2000);
    node.talk(2, 1000);
    node.run(60);
    // Each hears everyone but itself, from both shards.
    assert_eq!(node.heard(1), q(1000));
    assert_eq!(node.heard(2), q(2000));
    assert_eq!(node.heard(3), q(3000));
    assert_eq!(node.heard(4), q(3000));
    // The other shard's part arrives one tick later: a change shows in the same shard
    // first.
    node.talk(1, 0);
    node.run(12);
    assert_eq!(node.heard(4), q(1000));
    assert_eq!(node.heard(3), q(1000));
}

#[test]
fn keys_and_the_lock_act_on_the_whole_room_across_shards() {
    let mut node = Node::new();
    node.join(0, 1, 5, Role::Moderator);
    node.join(1, 2, 5, Role::Member);
    node.join(0, 3, 5, Role::Member);
    node.talk(2, 2000);
    node.run(60);
    assert_eq!(node.heard(3), q(2000));
    // The moderator (shard 0) mutes everyone: the member in shard 1 is muted.
    node.press(1, "*4");
    node.run(10);
    assert_eq!(node.heard(3), 0, "the other shard's member is still heard");
    // The moderator locks the room: a caller in shard 1 is refused after its PIN.
    node.press(1, "*5");
    let late = node.join(1, 4, 5, Role::Member);
    node.run(10);
    assert!(
        node.hangups
            .contains(&(late, HangupReason::Room(Dismissal::Locked))),
        "{:?}",
        node.hangups
    );
    assert_eq!(node.shards[1].room_size(5), 1);
}

#[test]
fn a_room_is_forgotten_when_its_last_member_in_any_shard_leaves() {
    let mut node = Node::new();
    let a = node.join(0, 1, 2, Role::Member);
    let b = node.join(1, 2, 2, Role::Member);
    node.run(5);
    node.shards[0].remove(node.now, a);
    node.run(2);
    assert_eq!(node.shards[0].rooms(), 0);
    assert_eq!(node.shards[0].node.len(), 1);
    node.shards[1].remove(node.now, b);
    node.run(2);
    assert!(node.shards[1].node.is_empty());
}
