//! The run's phases: place the calls, hold, hang up, then sum the members' figures
//! into a [`Report`]. See the module docs of [`crate::load`].
#![allow(clippy::disallowed_methods)] // an I/O edge: it owns the clock

use super::audio::{Payloads, Role, VOICES};
use super::member::{
    self, ByeOutcome, Common, MemberError, MemberOutcome, Phase, Plan, SetupOutcome, Shared,
};
use super::report::{self, Report};
use super::stats::{match_onsets, Summary};
use super::{procfs, transport, LoadConfig, LoadError, Progress, SipTransport, DELAY_PROBES};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// After the last call is placed, how long the ramp waits for every member to be up
/// or to have failed: PIN delay (1 s) + typing (about 1.1 s) + the admission wait
/// (5 s), with room for a slow answer.
const RAMP_GRACE: Duration = Duration::from_secs(15);

/// Quiet time between the ramp and the hold: the last join tones end, the room
/// settles.
const SETTLE: Duration = Duration::from_secs(2);

/// A burst onset further than this from the burst before it is no burst of ours
/// (bursts are 1 s apart; a bridge that adds half a second is broken anyway).
const MATCH_WINDOW: Duration = Duration::from_millis(500);

/// Longest settle phase: the bridge queues at most 64 prompts per member (about 37 s
/// of join tones), plus room for the bursts to be heard.
const SETTLE_MAX: Duration = Duration::from_secs(45);

/// How often the ramp checks whether everyone has settled.
const POLL: Duration = Duration::from_millis(50);

/// Runs a load test; see the module docs of [`crate::load`]. `on_progress` is called
/// about once a second from a task of its own.
pub async fn run(
    config: LoadConfig,
    mut on_progress: impl FnMut(&Progress) + Send + 'static,
) -> Result<Report, LoadError> {
    config.validate()?;
    let format = config.format();
    // Encoding the loops once takes up to a few hundred ms (Opus); nothing else runs yet.
    let payloads = Payloads::encode(format)?;
    let tls = match config.transport {
        SipTransport::Tls => Some(transport::tls_connector()?),
        _ => None,
    };
    let rss_before = config.bridge_pid.map(procfs::read_rss_kib).transpose()?;
    let common = Arc::new(Common {
        config: config.clone(),
        format,
        payloads,
        tls,
        shared: Shared::default(),
    });

    let started = Instant::now();
    let progress = {
        let common = common.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            let (mut last_in, mut last_out) = (0, 0);
            let mut last = Instant::now();
            loop {
                ticker.tick().await;
                let s = &common.shared;
                let now = Instant::now();
                let secs = now.duration_since(last).as_secs_f64().max(1e-3);
                let (packets_in, packets_out) = (
                    s.packets_in.load(Ordering::Relaxed),
                    s.packets_out.load(Ordering::Relaxed),
                );
                on_progress(&Progress {
                    elapsed: now - started,
                    phase: s.phase(),
                    placed: s.placed.load(Ordering::Relaxed),
                    answered: s.answered.load(Ordering::Relaxed),
                    up: s.up.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    ended_by_bridge: s.ended_by_bridge.load(Ordering::Relaxed),
                    packets_in_per_second: (packets_in - last_in) as f64 / secs,
                    packets_out_per_second: (packets_out - last_out) as f64 / secs,
                    gaps: s.gaps.load(Ordering::Relaxed),
                });
                (last_in, last_out, last) = (packets_in, packets_out, now);
            }
        })
    };

    // Ramp.
    let pace = Duration::from_secs_f64(1.0 / config.rate);
    let mut members = Vec::with_capacity(config.calls);
    let mut hangups = Vec::with_capacity(config.calls);
    for (i, plan) in plans(&config).into_iter().enumerate() {
        tokio::time::sleep_until((started + pace * i as u32).into()).await;
        let (tx, rx) = oneshot::channel();
        members.push(tokio::spawn(member::run(plan, common.clone(), rx)));
        hangups.push(tx);
    }
    let last_placed = Instant::now();
    let shared = &common.shared;
    while shared.settled.load(Ordering::Relaxed) < config.calls as u64
        && last_placed.elapsed() < RAMP_GRACE
    {
        tokio::time::sleep(POLL).await;
    }
    // Settle: at least SETTLE, then until every probe that is up hears the marker's
    // bursts (a bridge that queues a join tone per join for everyone keeps early
    // members on tones for a while after a big ramp: that is not the steady state).
    let settle_start = Instant::now();
    shared.set_phase(Phase::Settle);
    tokio::time::sleep(SETTLE).await;
    loop {
        let probes_up = shared.probes_up.load(Ordering::Relaxed);
        let hearing = shared.probes_hearing.load(Ordering::Relaxed);
        // Without a marker sending there is nothing to hear: do not wait for it.
        let no_marker = shared.marker_sends_is_empty();
        if hearing >= probes_up || no_marker || settle_start.elapsed() >= SETTLE_MAX {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let settle_secs = settle_start.elapsed().as_secs_f64();

    // Hold.
    let cpu_before = config.bridge_pid.map(procfs::read_cpu).transpose()?;
    // Our own CPU too: a generator near a full core is what a run measures instead.
    let own_before = procfs::read_cpu(std::process::id()).ok();
    let hold_start = Instant::now();
    let _ = shared.hold_start.set(hold_start);
    shared.set_phase(Phase::Hold);
    tokio::time::sleep(config.hold).await;
    let hold_end = Instant::now();
    let cpu_after = config.bridge_pid.map(procfs::read_cpu).transpose()?;
    let own_after = procfs::read_cpu(std::process::id()).ok();
    let rss_steady = config.bridge_pid.map(procfs::read_rss_kib).transpose()?;
    let _ = shared.hold_end.set(hold_end);
    shared.set_phase(Phase::HangUp);

    // Hang-up, at the ramp's rate.
    let hangup_start = Instant::now();
    for (i, tx) in hangups.into_iter().enumerate() {
        tokio::time::sleep_until((hangup_start + pace * i as u32).into()).await;
        // A member whose call already ended has dropped its receiver: nothing to do.
        let _ = tx.send(());
    }
    let mut outcomes = Vec::with_capacity(members.len());
    for handle in members {
        outcomes.push(handle.await.unwrap_or_else(|e| MemberOutcome {
            setup: SetupOutcome::Error(MemberError::Task(e.to_string())),
            ..MemberOutcome::default()
        }));
    }
    progress.abort();

    let marker_sends = shared
        .marker_sends
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let window = Window {
        start: hold_start,
        end: hold_end,
    };
    let mut report = summarise(&config, &outcomes, &marker_sends, window);
    report.ramp.settle_secs = settle_secs;
    if let (Some(before), Some(after)) = (own_before, own_after) {
        report.generator.cpu_share =
            Some(after.saturating_sub(before).as_secs_f64() / window.seconds());
    }
    if let (Some(pid), Some(before), Some(after), Some(rss_before), Some(rss_steady)) = (
        config.bridge_pid,
        cpu_before,
        cpu_after,
        rss_before,
        rss_steady,
    ) {
        let cpu = after.saturating_sub(before).as_secs_f64();
        let seconds = window.seconds();
        let members = report.hold.members as f64;
        report.bridge = Some(report::Bridge {
            pid,
            cpu_seconds: cpu,
            cpu_us_per_member_second: (members > 0.0).then(|| cpu * 1e6 / (members * seconds)),
            core_share: cpu / seconds,
            rss_before_kib: rss_before,
            rss_steady_kib: rss_steady,
            rss_per_member_kib: (members > 0.0)
                .then(|| (rss_steady as f64 - rss_before as f64) / members),
        });
    }
    Ok(report)
}

/// The steady window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64().max(1e-3)
    }

    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t <= self.end
    }
}

/// Who does what: member 0 is the marker, the next `talking_members() - 1` talk, the
/// rest are quiet; the first [`DELAY_PROBES`] after the marker time its bursts;
/// sources are used in turn.
fn plans(config: &LoadConfig) -> Vec<Plan> {
    let talkers = config.talking_members();
    (0..config.calls)
        .map(|index| Plan {
            index,
            role: match index {
                0 => Role::Marker,
                i if i < talkers => Role::Talker(i % VOICES),
                _ => Role::Quiet,
            },
            probe: (1..=DELAY_PROBES).contains(&index),
            source: config.sources[index % config.sources.len()],
        })
        .collect()
}

/// Sums what the members measured.
fn summarise(
    config: &LoadConfig,
    outcomes: &[MemberOutcome],
    marker_sends: &[Instant],
    window: Window,
) -> Report {
    let mut r = Report::default();
    let sources: std::collections::BTreeSet<_> = config.sources.iter().collect();
    r.settings = report::Settings {
        target: config.target.to_string(),
        transport: config.transport.via().to_ascii_lowercase(),
        srtp: config
            .srtp
            .map_or_else(|| "none".into(), |s| s.sdes_name().to_string()),
        codec: config.codec.encoding_name().to_ascii_lowercase(),
        calls: config.calls as u64,
        rate: config.rate,
        hold_secs: window.seconds(),
        talkers: config.talking_members() as u64,
        sources: sources.len().min(config.calls) as u64,
    };

    let mut latencies = Vec::new();
    let mut admissions = Vec::new();
    let mut refused: BTreeMap<u16, u64> = BTreeMap::new();
    let u = &mut r.setup;
    u.placed = outcomes.len() as u64;
    for o in outcomes {
        match &o.setup {
            SetupOutcome::Answered(latency) => {
                u.answered += 1;
                latencies.push(*latency);
            }
            SetupOutcome::Refused(code) => *refused.entry(*code).or_default() += 1,
            SetupOutcome::TimedOut => u.timed_out += 1,
            SetupOutcome::Error(e) => {
                u.errors += 1;
                u.first_error.get_or_insert_with(|| e.to_string());
            }
            SetupOutcome::Pending => u.errors += 1,
        }
        if o.up_at.is_some_and(|t| t <= window.start) {
            u.up += 1;
        }
        if let Some(a) = o.admission {
            u.admission_heard += 1;
            admissions.push(a);
        }
    }
    u.refused = refused.into_iter().collect();
    u.latency_ms = Summary::of_durations(&latencies);
    u.admission_ms = Summary::of_durations(&admissions);

    let mut onsets = Vec::new();
    for o in outcomes {
        if let Some(ramp) = &o.ramp {
            r.ramp.member_minutes += ramp.span().as_secs_f64() / 60.0;
            r.ramp.gaps += ramp.gaps();
            r.ramp.longest_gap_ms = r
                .ramp
                .longest_gap_ms
                .max(ramp.longest_gap().as_secs_f64() * 1e3);
        }
        if let Some(hold) = &o.hold {
            let h = &mut r.hold;
            h.members += 1;
            h.received += hold.received();
            h.lost += hold.lost();
            h.late += hold.late();
            h.reordered += hold.reordered();
            h.gaps += hold.gaps();
            h.longest_gap_ms = h.longest_gap_ms.max(hold.longest_gap().as_secs_f64() * 1e3);
        }
        if o.ended_by_bridge.is_some_and(|t| window.contains(t)) {
            r.hold.dropped += 1;
        }
        onsets.extend(o.onsets.iter().copied());
        let x = &mut r.hangup;
        match o.bye {
            ByeOutcome::NotSent => {}
            ByeOutcome::Answered(code) => {
                x.byes_sent += 1;
                if (200..300).contains(&code) {
                    x.answered_ok += 1;
                } else {
                    x.refused += 1;
                }
            }
            ByeOutcome::Unanswered => {
                x.byes_sent += 1;
                x.unanswered += 1;
            }
        }
        if o.ended_by_bridge.is_some() {
            x.ended_by_bridge += 1;
        }
        let g = &mut r.generator;
        g.packets_in += o.packets_in;
        g.packets_out += o.packets_out;
        g.ticks += o.ticks;
        g.late_ticks += o.late_ticks;
        g.max_tick_late_ms = g.max_tick_late_ms.max(o.max_tick_late.as_secs_f64() * 1e3);
    }
    r.hold.seconds = window.seconds();
    // 50 packets a second (20 ms frames) to each member measured.
    r.hold.expected = (r.hold.members as f64 * r.hold.seconds * 50.0).round() as u64;

    onsets.sort();
    let (delays, unmatched) = match_onsets(marker_sends, &onsets, MATCH_WINDOW);
    r.delay = report::Delay {
        probes: outcomes
            .iter()
            .enumerate()
            .filter(|(i, o)| (1..=DELAY_PROBES).contains(i) && o.hold.is_some())
            .count() as u64,
        bursts_sent: marker_sends.iter().filter(|&&t| window.contains(t)).count() as u64,
        heard: delays.len() as u64,
        unmatched: unmatched as u64,
        ms: Summary::of_durations(&delays),
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_comes_first_then_talkers_then_quiet_members() {
        let mut c = LoadConfig::new("127.0.0.1:5060".parse().unwrap());
        c.calls = 50;
        c.talkers = 0.1;
        c.sources = vec!["127.0.1.1".parse().unwrap(), "127.0.1.2".parse().unwrap()];
        let p = plans(&c);
        assert_eq!(p[0].role, Role::Marker);
        assert!(matches!(p[1].role, Role::Talker(_)));
        assert!(matches!(p[4].role, Role::Talker(_)));
        assert_eq!(p[5].role, Role::Quiet);
        assert!(!p[0].probe && p[1].probe && p[32].probe && !p[33].probe);
        assert_eq!(p[0].source, c.sources[0]);
        assert_eq!(p[3].source, c.sources[1]);
    }
}
