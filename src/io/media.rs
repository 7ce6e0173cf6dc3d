//! Media shard threads: each owns its members' RTP sockets and one [`Conference`].
#![allow(clippy::disallowed_methods)] // an I/O edge: it owns the clock
//!
//! The loop, once per 20 ms tick: take commands from signalling, drain the sockets
//! (non-blocking, bounded), run the conference tick, send what it wrote, report
//! events, sleep until the next tick. A shard owns its rooms outright, so nothing on
//! this path takes a lock; signalling talks to it only through a channel.
//!
//! With a port per call (`rtp_ports = "MIN-MAX"`) each member's socket is read and
//! written one datagram per system call. With the shared port (`"single:PORT"`) the
//! shard owns one socket for all its members and moves datagrams in batches of
//! [`BATCH`] per system call (`recvmmsg`/`sendmmsg`, [`DatagramBatch`]); the
//! conference tells members apart by source address.

use crate::conference::{
    Conference, ConferenceEvent, ConferenceSettings, HangupReason, MediaParams, Member, RoomKey,
    Rooms, RtpSeed, ZrtpSession,
};
use crate::io::batch::{DatagramBatch, BATCH};
use crate::metrics::ControlLabels;
use crate::metrics::Metrics;
use crate::redact::CallToken;
use crate::room::keys::Control;
use crate::room::prompts::Prompts;
use crate::room::Role;
use std::collections::{HashMap, HashSet};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Mixing interval.
pub const TICK: Duration = Duration::from_millis(20);

/// Datagrams read from one socket per tick: a 20 ms phone sends one, a 10 ms one two;
/// the bound keeps a flooded port from starving the others (excess waits in the kernel).
const RECV_BOUND: usize = 16;

/// Commands handled per loop turn, so a burst of call set-ups cannot delay a tick.
const COMMAND_BOUND: usize = 256;

/// Remembered removals of members not (yet) here; bounded so it cannot grow.
const TOMBSTONE_BOUND: usize = 4096;

/// What signalling asks of a shard.
pub enum ShardCommand {
    /// A new caller (IVR starts).
    Add {
        /// The call.
        call: CallToken,
        /// Negotiated media.
        media: MediaParams,
        /// RTP initial values.
        seed: RtpSeed,
        /// The caller's RTP socket (non-blocking); `None` on the shard's shared port.
        socket: Option<UdpSocket>,
        /// The call's ZRTP exchange, when the caller offered ZRTP.
        zrtp: Option<Box<ZrtpSession>>,
    },
    /// The call ended.
    Remove {
        /// The call.
        call: CallToken,
    },
    /// The PIN attempt was wrong (`ok` false) or right but the member stays (unused).
    PinResult {
        /// The call.
        call: CallToken,
        /// Whether the PIN was right.
        ok: bool,
    },
    /// A key pressed outside the RTP stream (SIP INFO).
    Digit {
        /// The call.
        call: CallToken,
        /// The key.
        digit: crate::media::dtmf::Digit,
    },
    /// The PIN was right and the room lives in this shard.
    Join {
        /// The call.
        call: CallToken,
        /// The room.
        room: RoomKey,
        /// What its PIN made it.
        role: Role,
    },
    /// The PIN was right but the node holds as many members as it may: the caller is
    /// told so and its call ends.
    RefuseFull {
        /// The call.
        call: CallToken,
    },
    /// The PIN was right and the room lives in another shard: move the member there.
    Transfer {
        /// The call.
        call: CallToken,
        /// The room.
        room: RoomKey,
        /// What its PIN made it.
        role: Role,
        /// The shard that owns the room.
        to: Sender<ShardCommand>,
    },
    /// A member moved here from another shard.
    Adopt {
        /// Its state.
        member: Box<Member>,
        /// Its socket (`None` on the shared port).
        socket: Option<UdpSocket>,
        /// The room to join.
        room: RoomKey,
        /// What its PIN made it.
        role: Role,
    },
    /// A re-INVITE changed the media.
    UpdateMedia {
        /// The call.
        call: CallToken,
        /// New parameters.
        media: MediaParams,
    },
    /// Stop the thread.
    Shutdown,
}

/// Signalling's handle on a shard.
pub struct ShardHandle {
    /// Command channel.
    pub commands: Sender<ShardCommand>,
    /// Members currently in the shard (for balancing).
    pub members: Arc<AtomicUsize>,
    /// Rooms currently in the shard.
    pub rooms: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl ShardHandle {
    /// Starts a shard thread.
    pub fn spawn(
        index: usize,
        settings: ConferenceSettings,
        prompts: Arc<Prompts>,
        events: UnboundedSender<ConferenceEvent>,
        metrics: Arc<Metrics>,
        (node, shared): (Arc<Rooms>, Option<UdpSocket>),
    ) -> std::io::Result<ShardHandle> {
        let (tx, rx) = mpsc::channel();
        let members = Arc::new(AtomicUsize::new(0));
        let rooms = Arc::new(AtomicUsize::new(0));
        let (m, r) = (members.clone(), rooms.clone());
        let thread = std::thread::Builder::new()
            .name(format!("mixer-{index}"))
            .spawn(move || {
                let conference = Conference::in_node(settings, prompts, node.clone(), index);
                let shared = shared.map(|socket| SharedPort {
                    socket,
                    batch: Box::new(DatagramBatch::new()),
                });
                run(conference, rx, events, (m, r), metrics, shared, &node);
            })?;
        Ok(ShardHandle {
            commands: tx,
            members,
            rooms,
            thread: Some(thread),
        })
    }

    /// Sends a command (a dead shard is ignored: signalling will clean up).
    pub fn send(&self, cmd: ShardCommand) {
        let _ = self.commands.send(cmd);
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(&mut self) {
        let _ = self.commands.send(ShardCommand::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn place(sockets: &mut Vec<Option<UdpSocket>>, slot: usize, socket: Option<UdpSocket>) {
    if sockets.len() <= slot {
        sockets.resize_with(slot + 1, || None);
    }
    sockets[slot] = socket;
}

/// The shard's shared RTP port and its batch buffers.
struct SharedPort {
    socket: UdpSocket,
    batch: Box<DatagramBatch>,
}

impl SharedPort {
    /// Reads what waits, in batches, bounded so that a flood waits in the kernel
    /// rather than delaying the tick: two datagrams per member (10 ms senders) and some.
    fn receive(&mut self, now: Instant, conf: &mut Conference) {
        let batches = (2 * conf.members() + 4 * BATCH) / BATCH;
        for _ in 0..batches {
            let n = self.batch.recv(&self.socket);
            for i in 0..n {
                if let Some((source, bytes)) = self.batch.received(i) {
                    conf.handle_shared_rtp(now, source, bytes);
                }
            }
            self.batch.wipe_received();
            if n < BATCH {
                break;
            }
        }
    }
}

fn run(
    mut conf: Conference,
    rx: Receiver<ShardCommand>,
    events: UnboundedSender<ConferenceEvent>,
    (members, rooms): (Arc<AtomicUsize>, Arc<AtomicUsize>),
    metrics: Arc<Metrics>,
    mut shared: Option<SharedPort>,
    node: &Rooms,
) {
    let mut published = conf.counters();
    let mut sockets: Vec<Option<UdpSocket>> = Vec::new();
    let mut tombstones: HashSet<CallToken> = HashSet::new();
    // Re-INVITE media for calls on their way here from another shard: applied on adoption.
    let mut pending: HashMap<CallToken, MediaParams> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    // Every shard ticks on the node's grid, so that the parts of a room across shards
    // are of the same moment (conference::span).
    let mut next_tick = node.next_tick(Instant::now());
    loop {
        let now = Instant::now();
        for _ in 0..COMMAND_BOUND {
            let cmd = match rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            };
            match cmd {
                ShardCommand::Add {
                    call,
                    media,
                    seed,
                    socket,
                    zrtp,
                } => {
                    if tombstones.remove(&call) {
                        continue;
                    }
                    match conf.add_member(now, call, media, seed) {
                        Some(slot) => {
                            place(&mut sockets, slot, socket);
                            if let Some(z) = zrtp {
                                conf.attach_zrtp(call, z);
                            }
                        }
                        None => {
                            let _ = events.send(ConferenceEvent::Hangup {
                                call,
                                reason: HangupReason::MediaSetupFailed,
                            });
                        }
                    }
                }
                ShardCommand::Remove { call } => match conf.remove(now, call) {
                    Some(slot) => {
                        if let Some(s) = sockets.get_mut(slot) {
                            *s = None;
                        }
                    }
                    None => {
                        // The member may be on its way here from another shard.
                        if tombstones.len() >= TOMBSTONE_BOUND {
                            tombstones.clear();
                        }
                        tombstones.insert(call);
                        pending.remove(&call);
                    }
                },
                ShardCommand::PinResult { call, ok } => conf.handle_pin_result(now, call, ok),
                ShardCommand::Digit { call, digit } => conf.handle_digit(now, call, digit),
                ShardCommand::Join { call, room, role } => conf.join_as(now, call, room, role),
                ShardCommand::RefuseFull { call } => conf.refuse_full(call),
                ShardCommand::Transfer {
                    call,
                    room,
                    role,
                    to,
                } => {
                    if let Some((slot, member)) = conf.take(now, call) {
                        let socket = sockets.get_mut(slot).and_then(Option::take);
                        let _ = to.send(ShardCommand::Adopt {
                            member,
                            socket,
                            room,
                            role,
                        });
                    }
                }
                ShardCommand::Adopt {
                    member,
                    socket,
                    room,
                    role,
                } => {
                    if tombstones.remove(&member.token()) {
                        continue;
                    }
                    let call = member.token();
                    let slot = conf.adopt(now, member, room, role);
                    place(&mut sockets, slot, socket);
                    if let Some(media) = pending.remove(&call) {
                        conf.update_media(now, call, media);
                    }
                }
                ShardCommand::UpdateMedia { call, media } => {
                    if conf.slot_of(call).is_some() {
                        conf.update_media(now, call, media);
                    } else {
                        // Signalling already points at this shard while the member is
                        // still in transit from the other one (or gone: then the entry
                        // is dropped on its Remove, or with the bound).
                        if pending.len() >= TOMBSTONE_BOUND {
                            pending.clear();
                        }
                        pending.insert(call, media);
                    }
                }
                ShardCommand::Shutdown => return,
            }
        }

        let now = Instant::now();
        for (slot, socket) in sockets.iter().enumerate() {
            let Some(socket) = socket else { continue };
            for _ in 0..RECV_BOUND {
                match socket.recv_from(&mut buf) {
                    Ok((n, src)) => conf.handle_rtp(now, slot, src, &mut buf[..n]),
                    Err(_) => break,
                }
            }
        }
        if let Some(port) = shared.as_mut() {
            port.receive(now, &mut conf);
        }

        if now >= next_tick {
            metrics
                .tick_lateness
                .observe((now - next_tick).as_secs_f64());
            conf.handle_tick(now);
            conf.drain_transmits(|slot, dest, bytes| match sockets.get(slot) {
                // A full send buffer or an unreachable peer loses one frame, nothing more.
                Some(Some(s)) => {
                    let _ = s.send_to(bytes, dest);
                }
                _ => {
                    if let Some(port) = shared.as_mut() {
                        port.batch.queue(&port.socket, dest, bytes);
                    }
                }
            });
            if let Some(port) = shared.as_mut() {
                port.batch.flush(&port.socket);
            }
            next_tick += TICK;
            if now > next_tick + 5 * TICK {
                // We fell far behind (machine suspended, overload): do not burst to catch
                // up. The ticks skipped are mixes nobody hears: counted.
                let behind = (now - next_tick).as_nanos() / TICK.as_nanos() + 1;
                metrics.ticks_lost.inc_by(behind as u64);
                next_tick = node.next_tick(now);
            }
        }
        while let Some(ev) = conf.poll_event() {
            let _ = events.send(ev);
        }
        let c = conf.counters();
        // Counters only grow: publish what each grew by since the last turn.
        for (counter, now, before) in [
            (
                &metrics.rtp_foreign_source,
                c.foreign_source,
                published.foreign_source,
            ),
            (
                &metrics.srtp_auth_failures,
                c.srtp_rejected,
                published.srtp_rejected,
            ),
            (
                &metrics.frames_concealed,
                c.frames_concealed,
                published.frames_concealed,
            ),
            (
                &metrics.frames_unheard,
                c.frames_skipped,
                published.frames_skipped,
            ),
            (
                &metrics.codec_errors,
                c.codec_errors,
                published.codec_errors,
            ),
        ] {
            if now > before {
                counter.inc_by(now - before);
            }
        }
        for (i, control) in Control::ALL.iter().enumerate() {
            if c.controls[i] > published.controls[i] {
                metrics
                    .controls_used
                    .get_or_create(&ControlLabels { control: *control })
                    .inc_by(c.controls[i] - published.controls[i]);
            }
        }
        published = c;
        members.store(conf.members(), Ordering::Relaxed);
        rooms.store(conf.rooms(), Ordering::Relaxed);

        let now = Instant::now();
        if next_tick > now {
            // Commands wait at most one tick; that is the latency of a call set-up step.
            std::thread::sleep(next_tick - now);
        }
    }
}
