//! SIP signalling: message parsing, transactions, dialogs, SDP and the UAS core.
//!
//! Sans-IO throughout: [`endpoint::Endpoint`] takes datagrams and time and hands back
//! datagrams, events and its next deadline.

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod framing;
pub mod info;
pub mod message;
pub mod reflection;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
pub mod transport;

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Tables at or below this capacity are never shrunk: a few kilobytes, not worth the
/// rehash.
const SHRINK_FLOOR: usize = 64;

/// Gives back the memory of a table a burst has grown and that has emptied since.
///
/// A hash map keeps its largest capacity for good: after an INVITE flood the
/// transaction table alone would hold megabytes of empty slots (and with the process
/// memory locked, the allocator cannot hand freed pages back piecemeal). A table is
/// shrunk once it is less than a quarter full, to twice what it holds, so a steady load
/// never reallocates back and forth.
fn shrink_map<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > SHRINK_FLOOR && map.capacity() > 4 * map.len() {
        map.shrink_to((2 * map.len()).max(SHRINK_FLOOR));
    }
}

/// [`shrink_map`] for a queue.
fn shrink_queue<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > SHRINK_FLOOR && queue.capacity() > 4 * queue.len() {
        queue.shrink_to((2 * queue.len()).max(SHRINK_FLOOR));
    }
}
