//! Aggregate counters in Prometheus/OpenMetrics text, via `prometheus-client`.
//!
//! Privacy rule: no series per room, per call or per source. Labels come only from the
//! fixed enums below; nothing a caller sent can become a label value. Counters are
//! atomics, so any thread may update them; the HTTP edge (`io::metrics_http`) encodes
//! the registry on each scrape.

use crate::room::keys::Control;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// No codec in common (488).
    NoCodec,
    /// The SDP could not be read (400/488).
    BadSdp,
    /// No RTP port free (503).
    NoPort,
    /// The policy requires SRTP (or SDES over TLS) and the offer had none (488).
    NotEncrypted,
    /// The Request-URI leads to no room and `sip.unknown_target = "reject"` (404).
    UnknownTarget,
    /// The trunk holds its `max_calls` already (503).
    TrunkFull,
}

/// `calls_rejected_total` label set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// The reason.
    pub reason: RejectReason,
}

/// How a call's media is protected.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SecurityMode {
    /// Plain RTP.
    Plain,
    /// SRTP keyed by SDES.
    Sdes,
    /// SRTP keyed by ZRTP.
    Zrtp,
}

/// `media_security_total` label set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecurityLabels {
    /// The mode.
    pub mode: SecurityMode,
}

/// Why SIP input was dropped or refused before a call existed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// Could not be parsed.
    Malformed,
    /// Parsed, but refused with 400.
    BadRequest,
    /// Refused with 503: the tables were full.
    Overload,
    /// A response matching no transaction.
    StrayResponse,
    /// Over the per-source message rate.
    RateLimited,
    /// A known scanner's User-Agent.
    Scanner,
    /// A request for a domain that is not ours.
    ForeignDomain,
    /// A response that would have sent more bytes to an unverified source than it sent us.
    Amplification,
}

/// `sip_dropped_total` label set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// The reason.
    pub reason: DropReason,
}

/// `controls_used_total` label set: the control's config key (a fixed word).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControlLabels {
    /// The control.
    pub control: Control,
}

impl EncodeLabelValue for Control {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.config_key().0)
    }
}

/// Label values are fixed snake_case words (Prometheus convention).
macro_rules! label_values {
    ($($ty:ident { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                use std::fmt::Write as _;
                encoder.write_str(match self { $($ty::$variant => $text),+ })
            }
        }
    )+};
}

label_values! {
    RejectReason {
        NoCodec => "no_codec",
        BadSdp => "bad_sdp",
        NoPort => "no_port",
        NotEncrypted => "not_encrypted",
        UnknownTarget => "unknown_target",
        TrunkFull => "trunk_full",
    }
    SecurityMode { Plain => "plain", Sdes => "sdes", Zrtp => "zrtp" }
    DropReason {
        Malformed => "malformed",
        BadRequest => "bad_request",
        Overload => "overload",        StrayResponse => "stray_response",
        RateLimited => "rate_limited",
        Scanner => "scanner",
        ForeignDomain => "foreign_domain",
        Amplification => "amplification",}
}

/// Every metric the bridge exports.
pub struct Metrics {
    registry: Registry,
    /// Calls answered.
    pub calls: Counter,
    /// Calls refused, by reason.
    pub calls_rejected: Family<RejectLabels, Counter>,
    /// Calls up now.
    pub active_calls: Gauge,
    /// Rooms with members now.
    pub active_rooms: Gauge,
    /// Wrong PIN attempts.
    pub pin_failures: Counter,
    /// INVITEs from trunks refused for wrong digest credentials.
    pub auth_failures: Counter,
    /// Sources locked out for guessing (set by the guessing limits).
    pub lockouts: Counter,
    /// PIN attempts refused unchecked because their source was throttled.
    pub pin_refused: Counter,
    /// Answered calls by media protection.
    pub media_security: Family<SecurityLabels, Counter>,
    /// SIP input dropped or refused, by reason.
    pub sip_dropped: Family<DropLabels, Counter>,
    /// SRTP packets that failed authentication or replay checks.
    pub srtp_auth_failures: Counter,
    /// RTP packets from another address than the latched one.
    pub rtp_foreign_source: Counter,
    /// Received audio frames concealed (PLC or Opus FEC) for lost or late packets.
    pub frames_concealed: Counter,
    /// Encoder, resampler or codec set-up failures (a bug if it ever counts).
    pub codec_errors: Counter,
    /// Received frames not decoded: a quiet non-speaker's RFC 6464 level said so.
    pub frames_unheard: Counter,
    /// PIN attempts not checked because the verification queue was full.
    pub pin_busy: Counter,
    /// PIN attempts checked by argon2.
    pub pin_checks: Counter,
    /// PIN attempts answered from the cache of correct PINs (no argon2 run).
    pub pin_cache_hits: Counter,
    /// In-call controls used, by control (never by room or caller).
    pub controls_used: Family<ControlLabels, Counter>,
    /// Members of a room at the moment it emptied (its peak size).
    pub room_size: Histogram,
    /// Call durations in seconds, observed at hang-up.
    pub call_duration: Histogram,
    /// How late each mixer tick ran after its due time, in seconds.
    pub tick_lateness: Histogram,
    /// Mixer ticks skipped because a shard fell more than five ticks behind (a mix
    /// nobody heard).
    pub ticks_lost: Counter,
    /// 1 when the OS sandbox is active.
    pub sandbox_active: Gauge,
    /// Process CPU time in seconds (updated at each scrape).
    pub process_cpu_seconds: Gauge<f64, AtomicU64>,
    /// Resident memory in bytes (updated at each scrape).
    pub process_resident_memory_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sotto");
        let m = Metrics {
            calls: Counter::default(),
            calls_rejected: Family::default(),
            active_calls: Gauge::default(),
            active_rooms: Gauge::default(),
            pin_failures: Counter::default(),
            auth_failures: Counter::default(),
            lockouts: Counter::default(),
            pin_refused: Counter::default(),
            media_security: Family::default(),
            sip_dropped: Family::default(),
            srtp_auth_failures: Counter::default(),
            rtp_foreign_source: Counter::default(),
            frames_concealed: Counter::default(),
            codec_errors: Counter::default(),
            frames_unheard: Counter::default(),
            controls_used: Family::default(),
            pin_busy: Counter::default(),
            pin_checks: Counter::default(),
            pin_cache_hits: Counter::default(),
            // Coarse on purpose: small, medium, large rooms; nothing that singles one out.
            room_size: Histogram::new([2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0]),
            // Coarse on purpose: minutes, not seconds.
            call_duration: Histogram::new([60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0]),
            // Around the 2 ms a tick may be late before anyone could hear it.
            tick_lateness: Histogram::new([
                0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
            ]),
            ticks_lost: Counter::default(),
            sandbox_active: Gauge::default(),
            process_cpu_seconds: Gauge::default(),
            process_resident_memory_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("calls", "Calls answered", m.calls.clone());
        registry.register(
            "calls_rejected",
            "Calls refused, by reason",
            m.calls_rejected.clone(),
        );
        registry.register("active_calls", "Calls up now", m.active_calls.clone());
        registry.register(
            "active_rooms",
            "Rooms with members now",
            m.active_rooms.clone(),
        );
        registry.register("pin_failures", "Wrong PIN attempts", m.pin_failures.clone());
        registry.register(
            "auth_failures",
            "INVITEs from trunks refused for wrong digest credentials",
            m.auth_failures.clone(),
        );
        registry.register(
            "lockouts",
            "Sources locked out for PIN guessing",
            m.lockouts.clone(),
        );
        registry.register(
            "pin_refused",
            "PIN attempts refused unchecked: the source was throttled",
            m.pin_refused.clone(),
        );
        registry.register(
            "media_security",
            "Answered calls by media protection",
            m.media_security.clone(),
        );
        registry.register(
            "sip_dropped",
            "SIP input dropped or refused",
            m.sip_dropped.clone(),
        );
        registry.register(
            "srtp_auth_failures",
            "SRTP packets failing authentication or replay checks",
            m.srtp_auth_failures.clone(),
        );
        registry.register(
            "rtp_foreign_source",
            "RTP packets from an address other than the latched one",
            m.rtp_foreign_source.clone(),
        );
        registry.register(
            "frames_concealed",
            "Received audio frames concealed (PLC or Opus FEC) for lost or late packets",
            m.frames_concealed.clone(),
        );
        registry.register(
            "codec_errors",
            "Encoder, resampler or codec set-up failures",
            m.codec_errors.clone(),
        );
        registry.register(
            "frames_unheard",
            "Received frames not decoded because the caller's RFC 6464 level was below the noise gate",
            m.frames_unheard.clone(),
        );
        registry.register(
            "pin_busy",
            "PIN attempts not checked because the verification queue was full",
            m.pin_busy.clone(),
        );
        registry.register(
            "pin_checks",
            "PIN attempts checked by argon2",
            m.pin_checks.clone(),
        );
        registry.register(
            "pin_cache_hits",
            "PIN attempts answered from the cache of correct PINs",
            m.pin_cache_hits.clone(),
        );
        registry.register(
            "controls_used",
            "In-call controls used (keys), by control",
            m.controls_used.clone(),
        );
        registry.register(
            "room_size",
            "Peak members of rooms that emptied",
            m.room_size.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "Durations of ended calls",
            m.call_duration.clone(),
        );
        registry.register(
            "mixer_tick_lateness_seconds",
            "How late mixer ticks ran after their due time",
            m.tick_lateness.clone(),
        );
        registry.register(
            "mixer_ticks_lost",
            "Mixer ticks skipped because a shard fell more than five ticks behind",
            m.ticks_lost.clone(),
        );
        registry.register(
            "sandbox_active",
            "1 when the OS sandbox is active",
            m.sandbox_active.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time used by the process",
            m.process_cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            m.process_resident_memory_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one refused call.
    pub fn reject(&self, reason: RejectReason) {
        self.calls_rejected
            .get_or_create(&RejectLabels { reason })
            .inc();
    }

    /// Counts SIP input dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.sip_dropped
                .get_or_create(&DropLabels { reason })
                .inc_by(n);
        }
    }

    /// Refreshes the process gauges and encodes everything as OpenMetrics text.
    pub fn render(&self) -> String {
        if let Some((cpu, rss)) = process_usage() {
            self.process_cpu_seconds.set(cpu);
            self.process_resident_memory_bytes.set(rss as i64);
        }
        let mut out = String::with_capacity(4096);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// CPU seconds and resident bytes of this process, from /proc (Linux).
fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5), i.e. 11 and 12 after the state.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Clock ticks and page size: the Linux defaults everywhere we run (100 Hz, 4 KiB).
    Some(((utime + stime) / 100.0, resident_pages * 4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_fixed_labels_only() {
        let m = Metrics::new();
        m.calls.inc();
        m.reject(RejectReason::NoCodec);
        m.dropped(DropReason::Malformed, 3);
        m.media_security
            .get_or_create(&SecurityLabels {
                mode: SecurityMode::Plain,
            })
            .inc();
        m.call_duration.observe(42.0);
        m.room_size.observe(3.0);
        let text = m.render();
        for name in [
            "sotto_calls_total 1",
            "sotto_calls_rejected_total{reason=\"no_codec\"} 1",
            "sotto_active_calls 0",
            "sotto_active_rooms 0",
            "sotto_pin_failures_total 0",
            "sotto_auth_failures_total 0",
            "sotto_lockouts_total 0",
            "sotto_pin_refused_total 0",
            "sotto_media_security_total{mode=\"plain\"} 1",
            "sotto_sip_dropped_total{reason=\"malformed\"} 3",
            "sotto_srtp_auth_failures_total 0",
            "sotto_call_duration_seconds_count 1",
            "sotto_room_size_count 1",
            "sotto_mixer_tick_lateness_seconds_count 0",
            "sotto_mixer_ticks_lost_total 0",
            "sotto_sandbox_active 0",
            "sotto_process_resident_memory_bytes",
            "# EOF",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
        assert!(
            !text.contains("sotto_process_resident_memory_bytes 0\n"),
            "{text}"
        );
    }
}
