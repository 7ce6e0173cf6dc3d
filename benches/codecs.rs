//! Codec and resampler cost: microseconds per 20 ms frame on one core.
//!
//! Run with `cargo bench --bench codecs`. Uses only std (no criterion):
//! each case runs batches of 50 frames (one second of audio) for about a
//! second of wall time and prints one table row with the median and the
//! best batch, per frame. The best batch is the cost on an idle core; the
//! median shows what sharing the machine did. A frame costing `t` µs uses
//! `t / 200` % of a core per stream (20,000 µs per frame period).
//!
//! The input is a voiced, speech-like signal (harmonics of a gliding
//! 120–220 Hz pitch with a syllabic envelope), so that Opus runs its speech
//! paths rather than those for silence. Opus runs as sotto configures it:
//! VoIP application, 24 kbit/s, in-band FEC on.

// A benchmark must read the clock; the sans-IO rule is for the library.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use sotto::media::g711::Law;
use sotto::media::g722::{G722Decoder, G722Encoder};
use sotto::media::resample::Resampler;

/// Frames per timed batch: one second of audio.
const BATCH: usize = 50;
/// Wall time per case.
const RUN_TIME: Duration = Duration::from_secs(1);

/// One second of a speech-like signal at `rate` Hz.
fn voiced(rate: u32) -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..rate as usize)
        .map(|n| {
            let t = n as f64 / rate as f64;
            let pitch = 170.0 + 50.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * pitch / rate as f64;
            let mut value = 0.0;
            let mut harmonic = 1;
            while pitch * f64::from(harmonic) < f64::from(rate) / 2.5 && harmonic < 20 {
                value += (phase * f64::from(harmonic)).sin() / f64::from(harmonic);
                harmonic += 1;
            }
            let envelope = (0.55 + 0.45 * (2.0 * std::f64::consts::PI * 3.0 * t).sin()).powi(2);
            (6000.0 * envelope * value) as i16
        })
        .collect()
}

/// Time `frame(i)` for batches of [`BATCH`] frames; returns the median and
/// the best batch in µs per frame.
fn measure(mut frame: impl FnMut(usize)) -> (f64, f64) {
    // Warm up caches and branch predictors.
    for i in 0..BATCH {
        frame(i);
    }
    let mut batches = Vec::new();
    let start = Instant::now();
    while start.elapsed() < RUN_TIME || batches.len() < 5 {
        let batch_start = Instant::now();
        for i in 0..BATCH {
            frame(i);
        }
        batches.push(batch_start.elapsed().as_secs_f64() * 1e6 / BATCH as f64);
    }
    batches.sort_by(f64::total_cmp);
    (batches[batches.len() / 2], batches[0])
}

fn row(name: &str, (median, best): (f64, f64)) {
    println!(
        "| {name:<32} | {median:>10.2} | {best:>10.2} | {:>8.3} |",
        best / 200.0
    );
}

fn main() {
    println!(
        "| {:<32} | {:>10} | {:>10} | {:>8} |",
        "case (20 ms frame)", "median µs", "best µs", "% core"
    );
    println!("|{:-<34}|{:->12}|{:->12}|{:->10}|", "", "", "", "");

    let pcm8 = voiced(8000);
    let pcm16 = voiced(16_000);
    let pcm48 = voiced(48_000);

    // G.711: 160 samples <-> 160 bytes.
    let mut payload = vec![0u8; 160];
    let mut out = vec![0i16; 960 * 2];
    row(
        "G.711 µ-law encode",
        measure(|i| Law::Ulaw.encode(black_box(&pcm8[(i % 50) * 160..][..160]), &mut payload)),
    );
    row(
        "G.711 µ-law decode",
        measure(|_| Law::Ulaw.decode(black_box(&payload), &mut out[..160])),
    );

    // G.722: 320 samples <-> 160 bytes.
    let mut g722_encoder = G722Encoder::new();
    let mut g722_payloads = vec![[0u8; 160]; 50];
    for (i, payload) in g722_payloads.iter_mut().enumerate() {
        g722_encoder.encode(&pcm16[i * 320..][..320], payload);
    }
    row(
        "G.722 encode",
        measure(|i| {
            black_box(
                g722_encoder.encode(black_box(&pcm16[(i % 50) * 320..][..320]), &mut payload),
            );
        }),
    );
    let mut g722_decoder = G722Decoder::new();
    row(
        "G.722 decode",
        measure(|i| {
            black_box(g722_decoder.decode(black_box(&g722_payloads[i % 50]), &mut out[..320]));
        }),
    );

    // Opus rows return with the Opus module (docs/decisions.md: waiting for its build step).

    // Resampling.
    for (from, to, pcm) in [
        (8000u32, 48_000u32, &pcm8),
        (48_000, 8000, &pcm48),
        (16_000, 48_000, &pcm16),
    ] {
        let mut resampler = Resampler::new(from, to).expect("supported pair");
        let frame = from as usize / 50;
        let frame_out = to as usize / 50;
        row(
            &format!("resample {} -> {} kHz", from / 1000, to / 1000),
            measure(|i| {
                black_box(resampler.process(
                    black_box(&pcm[(i % 50) * frame..][..frame]),
                    &mut out[..frame_out],
                ));
            }),
        );
    }
}
