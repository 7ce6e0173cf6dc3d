//! The engine of `sotto-load`, the load generator: it dials N callers into a bridge
//! over loopback, has them type the room PIN and talk, and measures what an operator
//! cares about (setup, audio continuity, added delay, the bridge's CPU and memory).
//!
//! It lives in the library so that an integration test can run it against a bridge
//! started in the same process (`tests/load.rs`); `src/bin/sotto-load/main.rs` only
//! reads the command line and prints. Driven by [`run`], which needs a tokio runtime:
//!
//! ```no_run
//! # async fn example() -> Result<(), sotto::load::LoadError> {
//! let mut config = sotto::load::LoadConfig::new("127.0.0.1:5060".parse().unwrap());
//! config.calls = 100;
//! let report = sotto::load::run(config, |p| eprintln!("{}", p.line())).await?;
//! println!("{}", report.table());
//! # Ok(()) }
//! ```
//!
//! A run has three phases, each bounded in time:
//! 1. **Ramp**: calls are placed at `rate` per second from the configured source
//!    addresses; each member is answered, waits [`member::PIN_DELAY`], types the PIN
//!    and `#` as RFC 4733 events, and is *up* once it hears the room (its join tone, a
//!    prompt or the mix) or, failing that, still receives audio 5 s after `#`. The ramp
//!    ends when every member is up or has failed (at most 15 s after the last call was
//!    placed). Then the room **settles**: 2 s, and until the delay probes hear the
//!    marker's bursts (at most 45 s more): a bridge that queues a join tone per join
//!    plays early members tones, not the room, for a while after a big ramp.
//! 2. **Hold**: the steady window. Every member's received stream is measured
//!    ([`stats::ReceiveStats`]), listeners time the marker's bursts ([`audio`]), and
//!    the bridge's CPU and memory are read from `/proc` at both ends ([`procfs`]).
//! 3. **Hang-up**: BYEs at `rate` per second; each waits at most 8 s for its answer.
//!
//! Modules: [`sip`] (the caller's SIP as a sans-IO state machine), [`sdp`] (offer and
//! answer), [`telephone_event`] (typing the PIN), [`audio`] (what members send, burst
//! detection), [`stats`] (percentiles, continuity), [`procfs`], [`report`] (table and
//! JSON); the I/O edges are `transport` (SIP sockets) and `member` (one task per
//! caller), driven by [`run`] in `engine`.
//!
//! Every socket is on loopback: [`LoadConfig::validate`] refuses any other target or
//! source, and a member refuses an answer that puts media elsewhere.

pub mod audio;
mod engine;
mod member;
pub mod procfs;
pub mod report;
pub mod sdp;
pub mod sip;
pub mod stats;
pub mod telephone_event;
mod transport;

pub use engine::run;
pub use member::Phase;
pub use report::Report;
pub use sip::SipTransport;
pub use transport::loopback_tls_config;

use crate::config::Codec;
use crate::media::codec::{CodecError, Format};
use crate::media::srtp::Suite;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Most calls one run may place (each takes two sockets and a task).
pub const MAX_CALLS: usize = 20_000;

/// Highest ramp rate, calls per second.
pub const MAX_RATE: f64 = 2_000.0;

/// Longest steady window.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);

/// Listeners that time the marker's bursts: enough for a p99 from a minute of hold
/// (32 × 60 = 1,920 bursts), few enough that their decoding (Opus: ~25 µs a frame)
/// stays a small share of the generator's CPU.
pub const DELAY_PROBES: usize = 32;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The bridge's SIP address (loopback only).
    pub target: SocketAddr,
    /// SIP over UDP, TCP or TLS.
    pub transport: SipTransport,
    /// SDES-SRTP suite, or plain RTP.
    pub srtp: Option<Suite>,
    /// The one codec every member offers.
    pub codec: Codec,
    /// Calls to place.
    pub calls: usize,
    /// Calls per second during the ramp.
    pub rate: f64,
    /// Length of the steady window.
    pub hold: Duration,
    /// Share of members (0–1) that talk; the marker member always does.
    pub talkers: f64,
    /// The room PIN (digits; `#` is appended when typed).
    pub pin: String,
    /// The Request-URI's user part.
    pub room: String,
    /// The bridge's process, for CPU and memory figures.
    pub bridge_pid: Option<u32>,
    /// Source addresses, used in turn (loopback only; the bridge limits per source).
    pub sources: Vec<IpAddr>,
}

impl LoadConfig {
    /// Defaults: UDP, plain RTP, PCMA, 10 calls at 10/s, 10 s hold, 10 % talkers, PIN
    /// 31415926 (the demo room's), room `conference`, from 127.0.0.1.
    pub fn new(target: SocketAddr) -> LoadConfig {
        LoadConfig {
            target,
            transport: SipTransport::Udp,
            srtp: None,
            codec: Codec::Pcma,
            calls: 10,
            rate: 10.0,
            hold: Duration::from_secs(10),
            talkers: 0.1,
            pin: "31415926".into(),
            room: "conference".into(),
            bridge_pid: None,
            sources: vec![IpAddr::from([127, 0, 0, 1])],
        }
    }

    /// Checks bounds and that everything stays on loopback.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.target.ip().is_loopback() {
            return Err(ConfigError::NotLoopback(self.target.ip()));
        }
        if let Some(ip) = self.sources.iter().find(|ip| !ip.is_loopback()) {
            return Err(ConfigError::NotLoopback(*ip));
        }
        if self.sources.is_empty() {
            return Err(ConfigError::NoSources);
        }
        if self.calls == 0 || self.calls > MAX_CALLS {
            return Err(ConfigError::Calls(self.calls));
        }
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(ConfigError::Rate(self.rate));
        }
        if self.hold.is_zero() || self.hold > MAX_HOLD {
            return Err(ConfigError::Hold(self.hold));
        }
        if !(0.0..=1.0).contains(&self.talkers) {
            return Err(ConfigError::Talkers(self.talkers));
        }
        if self.pin.is_empty()
            || self.pin.len() > 32
            || self.pin.contains('#')
            || telephone_event::DigitSender::new(&self.pin, 160).is_err()
        {
            return Err(ConfigError::Pin);
        }
        let uri_safe = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()+".contains(c);
        if self.room.is_empty() || self.room.len() > 64 || !self.room.chars().all(uri_safe) {
            return Err(ConfigError::Room);
        }
        Ok(())
    }

    /// The format members encode and decode in (Opus at 48 kHz with FEC, as offered).
    pub fn format(&self) -> Format {
        Format::new(
            self.codec,
            (self.codec == Codec::Opus).then_some(sdp::OPUS_FMTP),
        )
    }

    /// Members that talk, the marker member included.
    pub fn talking_members(&self) -> usize {
        ((self.talkers * self.calls as f64).round() as usize).clamp(1, self.calls)
    }
}

/// Why a run's settings were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A target or source outside 127.0.0.0/8 (or ::1).
    #[error("{0} is not a loopback address: sotto-load runs on loopback only")]
    NotLoopback(IpAddr),
    /// No source address.
    #[error("no source address")]
    NoSources,
    /// Calls out of range.
    #[error("calls must be 1..={MAX_CALLS}, not {0}")]
    Calls(usize),
    /// Rate out of range.
    #[error("rate must be above 0 and at most {MAX_RATE} calls/s, not {0}")]
    Rate(f64),
    /// Hold out of range.
    #[error("hold must be above 0 and at most an hour, not {0:?}")]
    Hold(Duration),
    /// Talkers out of range.
    #[error("talkers must be a share from 0 to 1, not {0}")]
    Talkers(f64),
    /// The PIN is not 1–32 DTMF keys.
    #[error("the PIN must be 1 to 32 DTMF keys (0-9, *, A-D)")]
    Pin,
    /// The room is not a plain URI user part.
    #[error("the room must be 1 to 64 letters, digits or -_.!~*'()+")]
    Room,
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The settings were refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The codec could not encode the members' audio.
    #[error("encoding the members' audio: {0}")]
    Codec(#[from] CodecError),
    /// The TLS client could not be set up.
    #[error("TLS client: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
    /// The bridge's `/proc` figures could not be read.
    #[error("bridge process: {0}")]
    Proc(#[from] procfs::ProcError),
}

/// A once-a-second snapshot for the progress line.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Since the run began.
    pub elapsed: Duration,
    /// The phase.
    pub phase: Phase,
    /// Calls placed so far.
    pub placed: u64,
    /// Calls answered.
    pub answered: u64,
    /// Members in the room.
    pub up: u64,
    /// Calls that failed to set up.
    pub failed: u64,
    /// Calls the bridge ended.
    pub ended_by_bridge: u64,
    /// RTP packets received per second over the last second.
    pub packets_in_per_second: f64,
    /// RTP packets sent per second over the last second.
    pub packets_out_per_second: f64,
    /// Gaps over 40 ms counted so far (ramp and hold).
    pub gaps: u64,
}

impl Progress {
    /// One line for people.
    pub fn line(&self) -> String {
        let phase = match self.phase {
            Phase::Ramp => "ramp",
            Phase::Settle => "settle",
            Phase::Hold => "hold",
            Phase::HangUp => "hang-up",
        };
        format!(
            "[{:6.1} s] {phase:<7} placed {} answered {} up {} failed {} ended-by-bridge {} | in {:.0} pkt/s out {:.0} pkt/s | gaps>40ms {}",
            self.elapsed.as_secs_f64(),
            self.placed,
            self.answered,
            self.up,
            self.failed,
            self.ended_by_bridge,
            self.packets_in_per_second,
            self.packets_out_per_second,
            self.gaps
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig::new("127.0.0.1:5060".parse().unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
        assert_eq!(config().talking_members(), 1);
    }

    #[test]
    fn anything_off_loopback_is_refused() {
        let mut c = config();
        c.target = "192.0.2.1:5060".parse().unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::NotLoopback(_))));
        let mut c = config();
        c.sources.push("10.0.0.1".parse().unwrap());
        assert!(matches!(c.validate(), Err(ConfigError::NotLoopback(_))));
        let mut c = config();
        c.target = "[::1]:5060".parse().unwrap();
        c.sources = vec!["::1".parse().unwrap()];
        c.validate().unwrap();
    }

    #[test]
    fn bounds_are_checked() {
        let bad: [fn(&mut LoadConfig); 9] = [
            |c| c.calls = 0,
            |c| c.calls = MAX_CALLS + 1,
            |c| c.rate = 0.0,
            |c| c.rate = f64::NAN,
            |c| c.hold = Duration::ZERO,
            |c| c.talkers = 1.5,
            |c| c.pin = "12x4".into(),
            |c| c.room = "a b".into(),
            |c| c.sources.clear(),
        ];
        for (i, change) in bad.iter().enumerate() {
            let mut c = config();
            change(&mut c);
            assert!(c.validate().is_err(), "case {i} passed");
        }
    }

    #[test]
    fn talkers_are_a_share_of_the_calls_with_the_marker_among_them() {
        let mut c = config();
        c.calls = 200;
        c.talkers = 0.1;
        assert_eq!(c.talking_members(), 20);
        c.talkers = 0.0;
        assert_eq!(c.talking_members(), 1);
        c.talkers = 1.0;
        assert_eq!(c.talking_members(), 200);
    }
}
