//! Abuse limits: PIN guessing budgets across calls and per-source request rates, sans-IO.
//!
//! A caller's source address is never stored: it is reduced at once to a [`SourceKey`],
//! a keyed hash (SipHash with a key drawn at start), so the tables below say nothing
//! about who called even if memory were dumped, and the key dies with the process.
//! Everything expires; nothing is written anywhere.
//!
//! PIN guessing, in three layers:
//! * per call: `ivr.pin_tries` wrong PINs and the bridge hangs up (the IVR does this);
//! * per source: after `source_free_failures` wrong PINs a source is throttled for
//!   `source_backoff`, doubling with every further failure (capped); while throttled
//!   its attempts are refused without being checked (the caller still hears prompts);
//! * globally: beyond `global_failures_per_hour` wrong PINs in the last hour, PIN checks
//!   are spaced so that at most that many more per hour can be made, for everyone.
//!
//! With the defaults (100 per hour) an attacker who controls any number of sources
//! makes at most 2,400 guesses a day: an 8-digit PIN (10^8) then takes on average
//! 10^8 / 2 / 2,400 days, about 57 years, per room (docs/security.md).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A keyed hash of a source address; the address itself is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(u64);

/// Limits (all configurable; see docs/security.md for the defaults' reasoning).
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    /// Wrong PINs a source may make before it is throttled.
    pub source_free_failures: u32,
    /// First throttle period; doubles with each further failure.
    pub source_backoff: Duration,
    /// Longest throttle period.
    pub source_backoff_max: Duration,
    /// How long a source's failures are remembered after its last one.
    pub source_memory: Duration,
    /// Wrong PINs per hour, all sources together, before checks are spaced out.
    pub global_failures_per_hour: u32,
    /// SIP messages per second one source may send (sustained).
    pub source_messages_per_second: u32,
    /// Burst allowance for SIP messages.
    pub source_message_burst: u32,
    /// Most sources tracked at once (beyond it, the oldest entries are forgotten).
    pub max_sources: usize,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            source_free_failures: 5,
            source_backoff: Duration::from_secs(60),
            source_backoff_max: Duration::from_secs(24 * 3600),
            source_memory: Duration::from_secs(24 * 3600),
            global_failures_per_hour: 100,
            // A phone sends a handful per call; a PBX trunk a few per call per second.
            source_messages_per_second: 50,
            source_message_burst: 200,
            max_sources: 100_000,
        }
    }
}

/// May this PIN attempt be checked, and when?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinVerdict {
    /// Check it now.
    Check,
    /// Check it at this time (the global budget is spent: attempts are spaced).
    CheckAt(Instant),
    /// Refuse it unchecked: the source is throttled.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct SourceState {
    failures: u32,
    throttled_until: Option<Instant>,
    last_failure: Option<Instant>,
    tokens: f64,
    last_refill: Instant,
    last_seen: Instant,
}

/// Counters for aggregate metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct GuardCounters {
    /// Sources that entered a throttle period.
    pub lockouts: u64,
    /// PIN attempts refused unchecked.
    pub refused_attempts: u64,
    /// SIP messages dropped by the per-source rate limit.
    pub rate_limited: u64,
}

/// The guard's state.
pub struct Guard {
    settings: GuardSettings,
    hasher: std::collections::hash_map::RandomState,
    sources: HashMap<SourceKey, SourceState>,
    global_failures: VecDeque<Instant>,
    next_global_slot: Option<Instant>,
    counters: GuardCounters,
}

impl Guard {
    /// A guard with a fresh random hash key.
    pub fn new(settings: GuardSettings) -> Guard {
        Guard {
            settings,
            // RandomState draws its SipHash keys from the OS at creation: a keyed hash
            // whose key never leaves this process.
            hasher: std::collections::hash_map::RandomState::new(),
            sources: HashMap::new(),
            global_failures: VecDeque::new(),
            next_global_slot: None,
            counters: GuardCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> GuardCounters {
        self.counters
    }

    /// Sources tracked now.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// The keyed hash of an address.
    pub fn key(&self, ip: IpAddr) -> SourceKey {
        SourceKey(self.hasher.hash_one(ip))
    }

    fn state(&mut self, now: Instant, key: SourceKey) -> Option<&mut SourceState> {
        if !self.sources.contains_key(&key) && self.sources.len() >= self.settings.max_sources {
            self.expire(now);
            if self.sources.len() >= self.settings.max_sources {
                // Full of live entries: forget the stalest rather than grow.
                if let Some(old) = self
                    .sources
                    .iter()
                    .filter(|(_, s)| s.throttled_until.is_none_or(|t| t <= now))
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(k, _)| *k)
                {
                    self.sources.remove(&old);
                } else {
                    return None;
                }
            }
        }
        let burst = f64::from(self.settings.source_message_burst);
        let s = self.sources.entry(key).or_insert(SourceState {
            failures: 0,
            throttled_until: None,
            last_failure: None,
            tokens: burst,
            last_refill: now,
            last_seen: now,
        });
        s.last_seen = s.last_seen.max(now);
        Some(s)
    }

    /// One SIP message arrived from `key`: false means drop it (rate limit).
    pub fn allow_message(&mut self, now: Instant, key: SourceKey) -> bool {
        let rate = self.settings.source_messages_per_second;
        let burst = self.settings.source_message_burst;
        self.allow_message_at(now, key, rate, burst)
    }

    /// As [`Guard::allow_message`], at a rate of its own: a trunk carries many callers
    /// from one address and gets `rate` messages a second with a `burst`.
    pub fn allow_message_at(
        &mut self,
        now: Instant,
        key: SourceKey,
        rate: u32,
        burst: u32,
    ) -> bool {
        let rate = f64::from(rate);
        let burst = f64::from(burst);
        let Some(s) = self.state(now, key) else {
            return false;
        };
        let elapsed = now.saturating_duration_since(s.last_refill).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate).min(burst);
        s.last_refill = now.max(s.last_refill);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            self.counters.rate_limited += 1;
            false
        }
    }

    /// A PIN attempt from `key`: check now, later, or not at all.
    pub fn pin_attempt(&mut self, now: Instant, key: SourceKey) -> PinVerdict {
        self.expire(now);
        let throttled = self
            .state(now, key)
            .is_some_and(|s| s.throttled_until.is_some_and(|t| t > now));
        if throttled {
            self.counters.refused_attempts += 1;
            return PinVerdict::Refuse;
        }
        if self.global_failures.len() < self.settings.global_failures_per_hour as usize {
            return PinVerdict::Check;
        }
        // Over the global budget: one check per (hour / budget), in order of arrival.
        let spacing = Duration::from_secs(3600) / self.settings.global_failures_per_hour.max(1);
        let slot = self.next_global_slot.map_or(now, |t| t.max(now));
        self.next_global_slot = Some(slot + spacing);
        if slot <= now {
            PinVerdict::Check
        } else {
            PinVerdict::CheckAt(slot)
        }
    }

    /// A checked PIN attempt from `key` was wrong.
    pub fn pin_failed(&mut self, now: Instant, key: SourceKey) {
        self.global_failures.push_back(now);
        let (free, base, max) = (
            self.settings.source_free_failures,
            self.settings.source_backoff,
            self.settings.source_backoff_max,
        );
        let mut locked = false;
        if let Some(s) = self.state(now, key) {
            s.failures = s.failures.saturating_add(1);
            s.last_failure = Some(now);
            if s.failures > free {
                let doublings = (s.failures - free - 1).min(20);
                let period = base.saturating_mul(1 << doublings).min(max);
                s.throttled_until = Some(now + period);
                locked = true;
            }
        }
        if locked {
            self.counters.lockouts += 1;
        }
    }

    /// Forgets what has expired: global failures older than an hour, sources quiet for
    /// `source_memory` and not throttled.
    pub fn expire(&mut self, now: Instant) {
        let hour = Duration::from_secs(3600);
        while self
            .global_failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= hour)
        {
            self.global_failures.pop_front();
        }
        if self.global_failures.len() < self.settings.global_failures_per_hour as usize {
            self.next_global_slot = None;
        }
        let memory = self.settings.source_memory;
        self.sources.retain(|_, s| {
            let throttled = s.throttled_until.is_some_and(|t| t > now);
            throttled || now.saturating_duration_since(s.last_seen) < memory
        });
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant is the virtual clock's origin
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_are_keyed_hashes() {
        let g = Guard::new(GuardSettings::default());
        let other = Guard::new(GuardSettings::default());
        assert_eq!(g.key(ip("192.0.2.1")), g.key(ip("192.0.2.1")));
        assert_ne!(g.key(ip("192.0.2.1")), g.key(ip("192.0.2.2")));
        // Another process (another key) maps the same address elsewhere.
        assert_ne!(g.key(ip("192.0.2.1")), other.key(ip("192.0.2.1")));
    }

    #[test]
    fn a_source_is_throttled_with_exponential_backoff() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardSettings::default());
        let k = g.key(ip("192.0.2.1"));
        for _ in 0..5 {
            assert_eq!(g.pin_attempt(t0, k), PinVerdict::Check);
            g.pin_failed(t0, k);
        }
        // The sixth failure throttles for 60 s.
        assert_eq!(g.pin_attempt(t0, k), PinVerdict::Check);
        g.pin_failed(t0, k);
        assert_eq!(
            g.pin_attempt(t0 + Duration::from_secs(59), k),
            PinVerdict::Refuse
        );
        assert_eq!(
            g.pin_attempt(t0 + Duration::from_secs(60), k),
            PinVerdict::Check
        );
        // The next one doubles it.
        let t1 = t0 + Duration::from_secs(60);
        g.pin_failed(t1, k);
        assert_eq!(
            g.pin_attempt(t1 + Duration::from_secs(119), k),
            PinVerdict::Refuse
        );
        assert_eq!(
            g.pin_attempt(t1 + Duration::from_secs(120), k),
            PinVerdict::Check
        );
        assert_eq!(g.counters().lockouts, 2);
        assert_eq!(g.counters().refused_attempts, 2);
        // Another source is not affected.
        let other = g.key(ip("192.0.2.9"));
        assert_eq!(g.pin_attempt(t1, other), PinVerdict::Check);
    }

    #[test]
    fn the_global_budget_spaces_checks_for_everyone() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardSettings {
            global_failures_per_hour: 10,
            ..GuardSettings::default()
        });
        // Ten failures from ten sources: within budget.
        for i in 0..10 {
            let k = g.key(ip(&format!("192.0.2.{i}")));
            assert_eq!(g.pin_attempt(t0, k), PinVerdict::Check);
            g.pin_failed(t0, k);
        }
        // Beyond it, checks are spaced 6 minutes apart, in order.
        let a = g.key(ip("198.51.100.1"));
        let b = g.key(ip("198.51.100.2"));
        assert_eq!(g.pin_attempt(t0, a), PinVerdict::Check);
        assert_eq!(
            g.pin_attempt(t0, b),
            PinVerdict::CheckAt(t0 + Duration::from_secs(360))
        );
        // An hour later the window has passed and checks are immediate again.
        let later = t0 + Duration::from_secs(3601);
        assert_eq!(g.pin_attempt(later, b), PinVerdict::Check);
    }

    #[test]
    fn message_rate_limit_refills() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardSettings {
            source_messages_per_second: 10,
            source_message_burst: 20,
            ..GuardSettings::default()
        });
        let k = g.key(ip("192.0.2.1"));
        let allowed = (0..100).filter(|_| g.allow_message(t0, k)).count();
        assert_eq!(allowed, 20);
        assert!(g.allow_message(t0 + Duration::from_millis(100), k));
        assert!(!g.allow_message(t0 + Duration::from_millis(100), k));
        assert_eq!(g.counters().rate_limited, 81);
    }

    #[test]
    fn the_source_table_is_bounded_and_expires() {
        let t0 = Instant::now();
        let mut g = Guard::new(GuardSettings {
            max_sources: 100,
            ..GuardSettings::default()
        });
        for i in 0..1000u32 {
            let k = g.key(IpAddr::from(i.to_be_bytes()));
            g.allow_message(t0 + Duration::from_millis(u64::from(i)), k);
        }
        assert!(g.tracked_sources() <= 100);
        g.expire(t0 + Duration::from_secs(25 * 3600));
        assert_eq!(g.tracked_sources(), 0);
    }
}
