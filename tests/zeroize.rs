//! Key, digit and audio buffers are wiped when dropped.
//!
//! A checking global allocator looks at every block as it is freed: while armed, a
//! freed block that still holds the marker bytes is recorded. A control case (a plain
//! `Vec` holding the marker) proves the detector sees what it should.
#![allow(clippy::disallowed_methods)]

use sotto::media::dtmf::Digit;
use sotto::media::playout::{DecodeError, FrameDecoder, PlayoutBuffer};
use sotto::media::plc::PitchConcealer;
use sotto::room::ivr::{Ivr, IvrSettings, PinAttempt};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use zeroize::{Zeroize, Zeroizing};

/// Eight bytes that appear nowhere by accident: digits of a PIN, or audio samples
/// 0x3331, 0x3534, ... in little-endian i16.
const MARKER: &[u8; 8] = b"13459265";

static ARMED: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicBool = AtomicBool::new(false);

struct Checking;

unsafe impl GlobalAlloc for Checking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) {
            // SAFETY: the block is still ours until System.dealloc below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if block.windows(MARKER.len()).any(|w| w == MARKER) {
                FOUND.store(true, Ordering::Relaxed);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Checking = Checking;

/// Runs `f` (which builds and drops something) with the detector armed; true if a freed
/// block still held the marker.
fn leaves_marker(f: impl FnOnce()) -> bool {
    FOUND.store(false, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    f();
    ARMED.store(false, Ordering::Relaxed);
    FOUND.load(Ordering::Relaxed)
}

/// A "codec" whose samples are the payload's bytes, so decoded audio carries the marker.
struct Passthrough;

impl FrameDecoder for Passthrough {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        out.extend(payload.chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
        out.extend(payload.chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
        Ok(())
    }
    fn conceal(&mut self, samples: usize, _next: Option<&[u8]>, out: &mut Vec<i16>) {
        out.resize(out.len() + samples, 0);
    }
}

fn marker_samples() -> Vec<i16> {
    MARKER
        .chunks(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect::<Vec<_>>()
        .repeat(40)
}

fn digit(c: u8) -> Digit {
    Digit::from_event(c - b'0').unwrap()
}

// One test function: the allocator's flags are process-wide, so the cases must not run
// on parallel test threads.
#[test]
fn buffers_holding_digits_keys_and_audio_are_wiped_on_drop() {
    // Control: an ordinary Vec keeps its bytes when freed, and the detector sees them.
    assert!(leaves_marker(|| drop(std::hint::black_box(
        MARKER.to_vec()
    ))));

    // A PIN attempt.
    assert!(!leaves_marker(|| {
        let a = PinAttempt(Zeroizing::new(MARKER.to_vec()));
        drop(std::hint::black_box(a));
    }));

    // Digits typed into the IVR but not yet submitted.
    assert!(!leaves_marker(|| {
        let t0 = Instant::now();
        let mut ivr = Ivr::new(IvrSettings::default());
        for &c in MARKER {
            ivr.handle_digit(t0, digit(c));
        }
        drop(std::hint::black_box(ivr));
    }));

    // The input audio itself is made (and later freed) outside the armed region.
    let samples = marker_samples();

    // Audio in a playout buffer: the encoded packets it holds, and (after a pop) the
    // decoded samples in its FIFO.
    let payload: Vec<u8> = MARKER.repeat(20);
    assert!(!leaves_marker(|| {
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut pb = PlayoutBuffer::new(8000, 8000, 160, ms(20), ms(200));
        for k in 0..4u16 {
            pb.push(
                t0 + ms(20) * u32::from(k),
                k,
                160 * u32::from(k),
                7,
                k == 0,
                &payload,
            );
        }
        let mut frame = [0i16; 160];
        let _ = pb.pop(t0 + ms(80), &mut Passthrough, &mut frame);
        drop(std::hint::black_box(pb));
    }));

    // Audio history in the pitch-based loss concealment, during a loss.
    assert!(!leaves_marker(|| {
        let mut plc = PitchConcealer::new(8000);
        let mut frame = samples.clone();
        plc.on_decoded(&mut frame);
        let mut out = Vec::with_capacity(160);
        plc.conceal(160, &mut out);
        Zeroize::zeroize(&mut frame);
        Zeroize::zeroize(&mut out);
        drop(std::hint::black_box(plc));
    }));

    // Control for the audio cases: the same samples in a plain Vec are seen.
    assert!(leaves_marker(|| drop(std::hint::black_box(samples))));
}
