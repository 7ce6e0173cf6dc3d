//! Retained secrets (RFC 6189 §4.6.1, §4.9): what ZRTP remembers about a peer, by ZID,
//! between calls. In RAM only.
//!
//! After a completed exchange both ends keep rs1 (and the previous one as rs2). In the
//! next call between the same ZIDs the secrets are mixed into s0, so a man in the
//! middle who was not there in the first call is detected even if nobody compares the
//! SAS, and the "SAS verified" flag can be carried over. Nothing here is ever written
//! to disk: after a restart every peer is new again, and the SAS must be compared
//! again (docs/zrtp.md says so).
//!
//! One [`RetainedSecrets`] is shared by all sessions of the process (it is a cheap
//! handle to one table); its size is bounded and the least recently used peer is
//! forgotten first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::kdf::RETAINED_SECRET_LEN;
use super::Zid;

/// A retained secret, zeroized when dropped.
pub(crate) type Secret = Zeroizing<[u8; RETAINED_SECRET_LEN]>;

/// What is cached for one peer.
#[derive(Clone, Default)]
pub(crate) struct CachedSecrets {
    /// The newest retained secret.
    pub rs1: Option<Secret>,
    /// The one before.
    pub rs2: Option<Secret>,
    /// The SAS was verified by a person in an earlier call.
    pub verified: bool,
}

impl CachedSecrets {
    /// Whether anything is cached (a miss on a non-empty entry is a cache mismatch).
    pub fn is_empty(&self) -> bool {
        self.rs1.is_none() && self.rs2.is_none()
    }
}

struct Entry {
    // Boxed so that the table's rehashing moves a pointer, not the secrets.
    secrets: Box<CachedSecrets>,
    expires: Option<Instant>,
    last_used: u64,
}

struct Table {
    capacity: usize,
    entries: HashMap<Zid, Entry>,
    clock: u64,
}

/// The table of retained secrets, keyed by peer ZID; clones share one table.
#[derive(Clone)]
pub struct RetainedSecrets {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for RetainedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedSecrets")
            .field("peers", &self.len())
            .finish_non_exhaustive()
    }
}

impl RetainedSecrets {
    /// An empty table that remembers at most `capacity` peers (at least one).
    pub fn new(capacity: usize) -> RetainedSecrets {
        RetainedSecrets {
            table: Arc::new(Mutex::new(Table {
                capacity: capacity.max(1),
                entries: HashMap::new(),
                clock: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves the table consistent (every
        // update is a single insert or remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets one peer.
    pub fn forget(&self, zid: &Zid) {
        self.lock().entries.remove(zid);
    }

    /// Forgets every peer.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// Whether a person verified the SAS with this peer in an earlier call.
    pub fn is_verified(&self, zid: &Zid) -> bool {
        self.lock()
            .entries
            .get(zid)
            .is_some_and(|e| e.secrets.verified)
    }

    /// The secrets cached for `zid`, or none; an expired entry is dropped here.
    pub(crate) fn lookup(&self, zid: &Zid, now: Instant) -> CachedSecrets {
        let mut table = self.lock();
        table.clock += 1;
        let clock = table.clock;
        match table.entries.get_mut(zid) {
            Some(entry) if entry.expires.is_none_or(|at| now < at) => {
                entry.last_used = clock;
                (*entry.secrets).clone()
            }
            Some(_) => {
                table.entries.remove(zid);
                CachedSecrets::default()
            }
            None => CachedSecrets::default(),
        }
    }

    /// After a completed exchange: the new rs1 replaces rs1, which becomes rs2 (RFC
    /// 6189 §4.6.1). `lifetime` is the shorter of the two ends' cache expiration
    /// intervals: zero forgets the peer, `None` keeps the secret until evicted.
    pub(crate) fn store(
        &self,
        zid: &Zid,
        new_rs1: Secret,
        verified: bool,
        lifetime: Option<Duration>,
        now: Instant,
    ) {
        let mut table = self.lock();
        if lifetime == Some(Duration::ZERO) {
            table.entries.remove(zid);
            return;
        }
        table.clock += 1;
        let clock = table.clock;
        let expires = lifetime.and_then(|l| now.checked_add(l));
        if let Some(entry) = table.entries.get_mut(zid) {
            let previous = entry.secrets.rs1.take();
            entry.secrets.rs2 = previous;
            entry.secrets.rs1 = Some(new_rs1);
            entry.secrets.verified = verified;
            entry.expires = expires;
            entry.last_used = clock;
            return;
        }
        if table.entries.len() >= table.capacity {
            if let Some(oldest) = table
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(z, _)| *z)
            {
                table.entries.remove(&oldest);
            }
        }
        table.entries.insert(
            *zid,
            Entry {
                secrets: Box::new(CachedSecrets {
                    rs1: Some(new_rs1),
                    rs2: None,
                    verified,
                }),
                expires,
                last_used: clock,
            },
        );
    }

    /// Sets or clears the "SAS verified" flag of a remembered peer.
    pub(crate) fn set_verified(&self, zid: &Zid, verified: bool) {
        if let Some(entry) = self.lock().entries.get_mut(zid) {
            entry.secrets.verified = verified;
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    fn secret(b: u8) -> Secret {
        Zeroizing::new([b; 32])
    }

    #[test]
    fn store_shifts_rs1_to_rs2_and_lookup_returns_them() {
        let cache = RetainedSecrets::new(4);
        let now = Instant::now();
        let zid = Zid([1; 12]);
        assert!(cache.lookup(&zid, now).is_empty());
        cache.store(&zid, secret(1), false, None, now);
        cache.store(&zid, secret(2), true, None, now);
        let got = cache.lookup(&zid, now);
        assert_eq!(got.rs1.as_deref(), Some(&[2; 32]));
        assert_eq!(got.rs2.as_deref(), Some(&[1; 32]));
        assert!(got.verified);
        assert!(cache.is_verified(&zid));
        cache.set_verified(&zid, false);
        assert!(!cache.is_verified(&zid));
        cache.forget(&zid);
        assert!(cache.is_empty());
    }

    #[test]
    fn expiry_and_zero_lifetime() {
        let cache = RetainedSecrets::new(4);
        let now = Instant::now();
        let zid = Zid([1; 12]);
        cache.store(&zid, secret(1), false, Some(Duration::from_secs(10)), now);
        assert!(!cache.lookup(&zid, now + Duration::from_secs(9)).is_empty());
        assert!(cache.lookup(&zid, now + Duration::from_secs(10)).is_empty());
        assert!(cache.is_empty());
        cache.store(&zid, secret(1), false, None, now);
        cache.store(&zid, secret(2), false, Some(Duration::ZERO), now);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_least_recently_used_peer_is_evicted() {
        let cache = RetainedSecrets::new(2);
        let now = Instant::now();
        let (a, b, c) = (Zid([1; 12]), Zid([2; 12]), Zid([3; 12]));
        cache.store(&a, secret(1), false, None, now);
        cache.store(&b, secret(2), false, None, now);
        let _ = cache.lookup(&a, now); // a is now more recent than b
        cache.store(&c, secret(3), false, None, now);
        assert_eq!(cache.len(), 2);
        assert!(!cache.lookup(&a, now).is_empty());
        assert!(cache.lookup(&b, now).is_empty());
        assert!(!cache.lookup(&c, now).is_empty());
    }
}
