//! Fuzz target: a member's receive path past RTP parsing: the adaptive playout buffer
//! (`sotto::media::playout`) with a real codec decoder (`sotto::media::codec`: G.711,
//! G.722 or Opus, chosen by the first byte), fed arbitrary packets at arbitrary times.
//!
//! The input is a script: each step is a push (sequence, timestamp, SSRC, marker,
//! payload of a given length) or a pop after a time advance. Checked: nothing panics,
//! every pop fills exactly one frame, and the counters stay consistent (a packet is
//! counted at most once as received).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto::config::Codec;
use sotto::media::codec::{Decoder, Format};
use sotto::media::playout::PlayoutBuffer;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let codec = match first % 4 {
        0 => Codec::Pcmu,
        1 => Codec::Pcma,
        2 => Codec::G722,
        _ => Codec::Opus,
    };
    let fmtp = (first & 0x80 != 0).then_some("maxplaybackrate=16000;useinbandfec=1");
    let format = Format::new(codec, fmtp);
    let Ok(mut decoder) = Decoder::new(format) else {
        return;
    };
    let n = format.frame_samples();
    let mut buffer = PlayoutBuffer::new(
        format.codec.clock_rate(),
        format.rate,
        n,
        Duration::from_millis(20),
        Duration::from_millis(200),
    );
    // One fixed origin: the buffer only compares instants.
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut now = Duration::ZERO;
    let mut frame = vec![0i16; n];
    let mut pushes = 0u64;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op & 1 == 0 {
            // Pop after advancing 0..=63 ms.
            now += Duration::from_millis(u64::from(op >> 2));
            frame.fill(i16::MIN);
            let _ = buffer.pop(t0 + now, &mut decoder, &mut frame);
            assert!(frame.len() == n);
        } else {
            // Push: 2 bytes seq, 4 ts, 1 ssrc selector, 1 length, then the payload.
            if rest.len() < 8 {
                return;
            }
            let seq = u16::from_be_bytes([rest[0], rest[1]]);
            let ts = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
            let ssrc = u32::from(rest[6] & 3);
            let len = usize::from(rest[7]).min(rest.len() - 8);
            let payload = &rest[8..8 + len];
            buffer.push(t0 + now, seq, ts, ssrc, op & 2 != 0, payload);
            pushes += 1;
            rest = &rest[8 + len..];
        }
    }
    let stats = buffer.stats();
    assert_eq!(stats.received, pushes);
    assert!(stats.late + stats.duplicate + stats.discarded <= stats.received);
});
