//! A load run's figures, as a short table for people and as JSON for scripts.
//!
//! [`Report`] holds everything the run measured; [`Report::table`] and
//! [`Report::to_json`] print the same figures. The JSON is written by hand (a few
//! dozen fields do not need a serializer): numbers that could not be measured are
//! `null`.

use super::stats::Summary;
use std::fmt::Write as _;

/// Everything a load run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What was run.
    pub settings: Settings,
    /// Call setup and admission.
    pub setup: Setup,
    /// Continuity heard by members already in the room while others joined.
    pub ramp: RampContinuity,
    /// The steady window.
    pub hold: Hold,
    /// Added delay through the bridge (marker bursts).
    pub delay: Delay,
    /// The bridge's CPU and memory (with `--bridge-pid` only).
    pub bridge: Option<Bridge>,
    /// Hang-up.
    pub hangup: Hangup,
    /// The load generator's own health (is it the bottleneck?).
    pub generator: Generator,
}

/// The run's settings, echoed.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The bridge's SIP address.
    pub target: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// `none` or the SRTP suite.
    pub srtp: String,
    /// The codec.
    pub codec: String,
    /// Calls placed.
    pub calls: u64,
    /// Calls per second during the ramp.
    pub rate: f64,
    /// Length of the steady window, seconds.
    pub hold_secs: f64,
    /// Members that talk (the marker member included).
    pub talkers: u64,
    /// Distinct source addresses.
    pub sources: u64,
}

/// Call setup: from INVITE to 200, and from the PIN's `#` to hearing the room.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Calls placed.
    pub placed: u64,
    /// Calls answered 2xx.
    pub answered: u64,
    /// Final responses ≥ 300, by status code.
    pub refused: Vec<(u16, u64)>,
    /// No final response within Timer B.
    pub timed_out: u64,
    /// Other failures (a socket that would not open, an answer we could not use).
    pub errors: u64,
    /// What the first of those failures was.
    pub first_error: Option<String>,
    /// INVITE to 2xx, ms.
    pub latency_ms: Option<Summary>,
    /// Members in the room (answered, PIN sent, audio flowing) when the hold began.
    pub up: u64,
    /// Members who heard the room (join tone, prompt or mix) after `#`.
    pub admission_heard: u64,
    /// The first end packet of `#` to the first audible packet, ms.
    pub admission_ms: Option<Summary>,
}

/// Continuity during the ramp, for members already in the room.
#[derive(Debug, Clone, Default)]
pub struct RampContinuity {
    /// How long the run waited after the ramp for the delay probes to hear the room
    /// (queued prompts to end), seconds; at least 2.
    pub settle_secs: f64,
    /// Member-minutes measured.
    pub member_minutes: f64,
    /// Gaps over 40 ms.
    pub gaps: u64,
    /// Longest silence, ms.
    pub longest_gap_ms: f64,
}

impl RampContinuity {
    /// Gaps per member-minute; `None` when nothing was measured.
    pub fn gaps_per_member_minute(&self) -> Option<f64> {
        (self.member_minutes > 0.0).then(|| self.gaps as f64 / self.member_minutes)
    }
}

/// The steady window.
#[derive(Debug, Clone, Default)]
pub struct Hold {
    /// Its length, seconds.
    pub seconds: f64,
    /// Members measured (those up when it began).
    pub members: u64,
    /// Packets a member gets in the window at 50 per second, summed.
    pub expected: u64,
    /// Audio packets received.
    pub received: u64,
    /// Sequence numbers never received.
    pub lost: u64,
    /// Packets over 40 ms behind their due time.
    pub late: u64,
    /// Packets out of order.
    pub reordered: u64,
    /// Gaps over 40 ms.
    pub gaps: u64,
    /// Longest silence, ms.
    pub longest_gap_ms: f64,
    /// Calls the bridge ended (BYE) during the window.
    pub dropped: u64,
}

impl Hold {
    /// Gaps per member-minute; `None` when nothing was measured.
    pub fn gaps_per_member_minute(&self) -> Option<f64> {
        let minutes = self.members as f64 * self.seconds / 60.0;
        (minutes > 0.0).then(|| self.gaps as f64 / minutes)
    }

    /// Received over expected, 0–1 (a little more when the bridge catches up after a
    /// late tick, or sends duplicates).
    pub fn received_share(&self) -> Option<f64> {
        (self.expected > 0).then(|| self.received as f64 / self.expected as f64)
    }
}

/// Added delay through the bridge.
#[derive(Debug, Clone, Default)]
pub struct Delay {
    /// Listeners that time bursts.
    pub probes: u64,
    /// Bursts the marker sent during the window.
    pub bursts_sent: u64,
    /// Burst arrivals matched to a send.
    pub heard: u64,
    /// Onsets that matched no burst.
    pub unmatched: u64,
    /// Onset at the listener minus send, ms.
    pub ms: Option<Summary>,
}

/// The bridge process over the steady window.
#[derive(Debug, Clone, Default)]
pub struct Bridge {
    /// Its PID.
    pub pid: u32,
    /// CPU time used in the window (user + system), seconds.
    pub cpu_seconds: f64,
    /// CPU µs per member-second.
    pub cpu_us_per_member_second: Option<f64>,
    /// Share of one core, 0–1 (and more with several threads busy).
    pub core_share: f64,
    /// Resident memory before the first call, KiB.
    pub rss_before_kib: u64,
    /// Resident memory at the end of the window, KiB.
    pub rss_steady_kib: u64,
    /// (steady − before) / members, KiB.
    pub rss_per_member_kib: Option<f64>,
}

/// Hang-up.
#[derive(Debug, Clone, Default)]
pub struct Hangup {
    /// BYEs we sent.
    pub byes_sent: u64,
    /// BYEs answered 2xx.
    pub answered_ok: u64,
    /// BYEs answered otherwise.
    pub refused: u64,
    /// BYEs without a final response.
    pub unanswered: u64,
    /// Calls the bridge ended itself (BYE from the bridge) at any time.
    pub ended_by_bridge: u64,
}

/// The generator's own health.
#[derive(Debug, Clone, Default)]
pub struct Generator {
    /// RTP packets sent.
    pub packets_out: u64,
    /// RTP packets received.
    pub packets_in: u64,
    /// Send ticks.
    pub ticks: u64,
    /// Send ticks more than 5 ms late.
    pub late_ticks: u64,
    /// Latest send tick, ms.
    pub max_tick_late_ms: f64,
    /// The generator's own CPU over the steady window, share of one core.
    pub cpu_share: Option<f64>,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn summary_text(s: &Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
            s.p50, s.p99, s.max, s.count
        ),
        None => "not measured".into(),
    }
}

impl Report {
    /// A short table for people.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sotto-load: calls {} to {} over {}; SRTP {}; {}; {} calls/s; hold {:.0} s; talking {}; sources {}",
            s.calls, s.target, s.transport, s.srtp, s.codec, s.rate, s.hold_secs, s.talkers, s.sources
        );
        let u = &self.setup;
        let refused: Vec<String> = u
            .refused
            .iter()
            .map(|(code, n)| format!("{n}×{code}"))
            .collect();
        let row = |out: &mut String, label: &str, text: String| {
            let _ = writeln!(out, "  {label:<18} {text}");
        };
        row(
            &mut out,
            "setup",
            format!(
                "{}/{} answered (refused: {}; timed out: {}; errors: {})",
                u.answered,
                u.placed,
                if refused.is_empty() {
                    "0".into()
                } else {
                    refused.join(", ")
                },
                u.timed_out,
                u.errors
            ),
        );
        if let Some(e) = &u.first_error {
            row(&mut out, "first error", e.clone());
        }
        row(&mut out, "INVITE → 200", summary_text(&u.latency_ms));
        row(
            &mut out,
            "in the room",
            format!(
                "{} up at hold start, {} heard the room after '#'",
                u.up, u.admission_heard
            ),
        );
        row(&mut out, "'#' → room heard", summary_text(&u.admission_ms));
        let h = &self.hold;
        row(
            &mut out,
            "hold",
            format!(
                "{} members × {:.1} s: {} of {} packets ({} %), lost {}, late {}, reordered {}, dropped calls {}",
                h.members,
                h.seconds,
                h.received,
                h.expected,
                opt(h.received_share().map(|r| r * 100.0), 2),
                h.lost,
                h.late,
                h.reordered,
                h.dropped
            ),
        );
        row(
            &mut out,
            "gaps > 40 ms",
            format!(
                "hold: {} ({} per member-minute, longest {:.0} ms)",
                h.gaps,
                opt(h.gaps_per_member_minute(), 3),
                h.longest_gap_ms
            ),
        );
        let r = &self.ramp;
        row(
            &mut out,
            "",
            format!(
                "ramp and settle ({:.1} s), members already in: {} in {:.1} member-minutes ({} per member-minute, longest {:.0} ms)",
                r.settle_secs,
                r.gaps,
                r.member_minutes,
                opt(r.gaps_per_member_minute(), 3),
                r.longest_gap_ms
            ),
        );
        let d = &self.delay;
        row(
            &mut out,
            "added delay",
            format!(
                "{} ({} of {} bursts heard by {} listeners, {} unmatched)",
                summary_text(&d.ms),
                d.heard,
                d.bursts_sent * d.probes,
                d.probes,
                d.unmatched
            ),
        );
        match &self.bridge {
            Some(b) => {
                row(
                    &mut out,
                    "bridge CPU",
                    format!(
                        "{} µs per member-second ({:.1} % of a core, pid {})",
                        opt(b.cpu_us_per_member_second, 0),
                        b.core_share * 100.0,
                        b.pid
                    ),
                );
                row(
                    &mut out,
                    "bridge RSS",
                    format!(
                        "{} KiB before, {} KiB steady: {} KiB per member",
                        b.rss_before_kib,
                        b.rss_steady_kib,
                        opt(b.rss_per_member_kib, 1)
                    ),
                );
            }
            None => row(&mut out, "bridge", "not measured (no --bridge-pid)".into()),
        }
        let x = &self.hangup;
        row(
            &mut out,
            "hang-up",
            format!(
                "{} BYEs: {} answered 2xx, {} refused, {} unanswered; {} calls ended by the bridge",
                x.byes_sent, x.answered_ok, x.refused, x.unanswered, x.ended_by_bridge
            ),
        );
        let g = &self.generator;
        row(
            &mut out,
            "generator",
            format!(
                "{} packets out, {} in; {} of {} send ticks > 5 ms late (latest {:.1} ms); CPU {} % of a core",
                g.packets_out,
                g.packets_in,
                g.late_ticks,
                g.ticks,
                g.max_tick_late_ms,
                opt(g.cpu_share.map(|c| c * 100.0), 1)
            ),
        );
        out
    }

    /// The same figures as JSON.
    pub fn to_json(&self) -> String {
        let s = &self.settings;
        let u = &self.setup;
        let h = &self.hold;
        let r = &self.ramp;
        let d = &self.delay;
        let x = &self.hangup;
        let g = &self.generator;
        let bridge = match &self.bridge {
            Some(b) => Json::Obj(vec![
                ("pid", Json::Int(u64::from(b.pid))),
                ("cpu_seconds", Json::Num(b.cpu_seconds)),
                (
                    "cpu_us_per_member_second",
                    b.cpu_us_per_member_second.into(),
                ),
                ("core_share", Json::Num(b.core_share)),
                ("rss_before_kib", Json::Int(b.rss_before_kib)),
                ("rss_steady_kib", Json::Int(b.rss_steady_kib)),
                ("rss_per_member_kib", b.rss_per_member_kib.into()),
            ]),
            None => Json::Null,
        };
        let root = Json::Obj(vec![
            (
                "settings",
                Json::Obj(vec![
                    ("target", Json::Str(s.target.clone())),
                    ("transport", Json::Str(s.transport.clone())),
                    ("srtp", Json::Str(s.srtp.clone())),
                    ("codec", Json::Str(s.codec.clone())),
                    ("calls", Json::Int(s.calls)),
                    ("rate", Json::Num(s.rate)),
                    ("hold_secs", Json::Num(s.hold_secs)),
                    ("talkers", Json::Int(s.talkers)),
                    ("sources", Json::Int(s.sources)),
                ]),
            ),
            (
                "setup",
                Json::Obj(vec![
                    ("placed", Json::Int(u.placed)),
                    ("answered", Json::Int(u.answered)),
                    (
                        "refused",
                        Json::Arr(
                            u.refused
                                .iter()
                                .map(|&(code, n)| {
                                    Json::Obj(vec![
                                        ("code", Json::Int(u64::from(code))),
                                        ("calls", Json::Int(n)),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                    ("timed_out", Json::Int(u.timed_out)),
                    ("errors", Json::Int(u.errors)),
                    (
                        "first_error",
                        u.first_error.clone().map_or(Json::Null, Json::Str),
                    ),
                    ("latency_ms", u.latency_ms.into()),
                    ("up", Json::Int(u.up)),
                    ("admission_heard", Json::Int(u.admission_heard)),
                    ("admission_ms", u.admission_ms.into()),
                ]),
            ),
            (
                "ramp",
                Json::Obj(vec![
                    ("settle_secs", Json::Num(r.settle_secs)),
                    ("member_minutes", Json::Num(r.member_minutes)),
                    ("gaps_over_40ms", Json::Int(r.gaps)),
                    ("gaps_per_member_minute", r.gaps_per_member_minute().into()),
                    ("longest_gap_ms", Json::Num(r.longest_gap_ms)),
                ]),
            ),
            (
                "hold",
                Json::Obj(vec![
                    ("seconds", Json::Num(h.seconds)),
                    ("members", Json::Int(h.members)),
                    ("packets_expected", Json::Int(h.expected)),
                    ("packets_received", Json::Int(h.received)),
                    ("received_share", h.received_share().into()),
                    ("lost", Json::Int(h.lost)),
                    ("late", Json::Int(h.late)),
                    ("reordered", Json::Int(h.reordered)),
                    ("gaps_over_40ms", Json::Int(h.gaps)),
                    ("gaps_per_member_minute", h.gaps_per_member_minute().into()),
                    ("longest_gap_ms", Json::Num(h.longest_gap_ms)),
                    ("dropped", Json::Int(h.dropped)),
                ]),
            ),
            (
                "delay",
                Json::Obj(vec![
                    ("probes", Json::Int(d.probes)),
                    ("bursts_sent", Json::Int(d.bursts_sent)),
                    ("heard", Json::Int(d.heard)),
                    ("unmatched", Json::Int(d.unmatched)),
                    ("ms", d.ms.into()),
                ]),
            ),
            ("bridge", bridge),
            (
                "hangup",
                Json::Obj(vec![
                    ("byes_sent", Json::Int(x.byes_sent)),
                    ("answered_ok", Json::Int(x.answered_ok)),
                    ("refused", Json::Int(x.refused)),
                    ("unanswered", Json::Int(x.unanswered)),
                    ("ended_by_bridge", Json::Int(x.ended_by_bridge)),
                ]),
            ),
            (
                "generator",
                Json::Obj(vec![
                    ("packets_out", Json::Int(g.packets_out)),
                    ("packets_in", Json::Int(g.packets_in)),
                    ("ticks", Json::Int(g.ticks)),
                    ("late_ticks", Json::Int(g.late_ticks)),
                    ("max_tick_late_ms", Json::Num(g.max_tick_late_ms)),
                    ("cpu_share", g.cpu_share.into()),
                ]),
            ),
        ]);
        let mut out = String::new();
        root.write(&mut out, 0);
        out.push('\n');
        out
    }
}

/// A JSON value, just enough for the report.
enum Json {
    Null,
    Int(u64),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl From<Option<f64>> for Json {
    fn from(v: Option<f64>) -> Json {
        v.map_or(Json::Null, Json::Num)
    }
}

impl From<Option<Summary>> for Json {
    fn from(s: Option<Summary>) -> Json {
        match s {
            Some(s) => Json::Obj(vec![
                ("count", Json::Int(s.count as u64)),
                ("p50", Json::Num(s.p50)),
                ("p99", Json::Num(s.p99)),
                ("max", Json::Num(s.max)),
            ]),
            None => Json::Null,
        }
    }
}

impl Json {
    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            // JSON has no NaN or infinity.
            Json::Num(x) if !x.is_finite() => out.push_str("null"),
            Json::Num(x) => {
                let _ = write!(out, "{}", (x * 1000.0).round() / 1000.0);
            }
            Json::Str(s) => write_string(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out, indent);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    out.push_str(if i > 0 { ",\n" } else { "\n" });
                    out.push_str(&"  ".repeat(indent + 1));
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out, indent + 1);
                }
                out.push('\n');
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            settings: Settings {
                target: "127.0.0.1:5060".into(),
                transport: "udp".into(),
                srtp: "none".into(),
                codec: "pcma".into(),
                calls: 10,
                rate: 5.0,
                hold_secs: 5.0,
                talkers: 2,
                sources: 10,
            },
            setup: Setup {
                placed: 10,
                answered: 9,
                refused: vec![(503, 1)],
                latency_ms: Summary::of(&[1.0, 2.0]),
                up: 9,
                ..Setup::default()
            },
            hold: Hold {
                seconds: 6.0,
                members: 10,
                expected: 3000,
                received: 2990,
                gaps: 2,
                ..Hold::default()
            },
            delay: Delay {
                ms: Summary::of(&[40.0]),
                ..Delay::default()
            },
            bridge: Some(Bridge {
                pid: 7,
                cpu_seconds: 0.5,
                cpu_us_per_member_second: Some(f64::NAN),
                ..Bridge::default()
            }),
            ..Report::default()
        }
    }

    #[test]
    fn the_table_names_the_main_figures() {
        let t = sample().table();
        assert!(t.contains("9/10 answered (refused: 1×503"), "{t}");
        assert!(t.contains("2990 of 3000 packets (99.67 %)"), "{t}");
        // 2 gaps in 10 members × 0.1 minute.
        assert!(t.contains("hold: 2 (2.000 per member-minute"), "{t}");
        assert!(t.contains("p50 40.0 ms"), "{t}");
        assert!(t.contains("pid 7"), "{t}");
    }

    #[test]
    fn json_is_well_formed_with_nulls_for_the_unmeasured() {
        let j = sample().to_json();
        assert!(j.contains("\"refused\": [{\n"), "{j}");
        assert!(j.contains("\"admission_ms\": null"), "{j}");
        assert!(j.contains("\"cpu_us_per_member_second\": null"), "{j}");
        assert!(j.contains("\"gaps_per_member_minute\": 2"), "{j}");
        // Balanced braces and brackets, and no trailing commas.
        let opens = j.matches(['{', '[']).count();
        let closes = j.matches(['}', ']']).count();
        assert_eq!(opens, closes);
        assert!(!j.contains(",\n}") && !j.contains(", ]"));
        let mut s = String::new();
        write_string(&mut s, "a\"b\\c\n");
        assert_eq!(s, "\"a\\\"b\\\\c\\u000a\"");
    }
}
