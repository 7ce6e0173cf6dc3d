//! The codecs a member can speak, behind one decoder type and one encoder type.
//!
//! A member's [`Format`] says which codec it negotiated and at which PCM rate it is
//! decoded and encoded: 8 kHz for G.711, 16 kHz for G.722, and for Opus the highest of
//! 8, 16 or 48 kHz its `maxplaybackrate` allows. The room resamples between that rate
//! and its own. [`Decoder`] is what the playout buffer calls at playout time (with the
//! next packet at hand, so Opus can use its in-band FEC); [`Encoder`] turns one 20 ms
//! frame into one RTP payload. Listeners that share an [`EncoderKey`] share one encode
//! of the room's mix.

use crate::config::Codec;
use crate::media::g711::{G711Decoder, Law};
use crate::media::g722::{G722Decoder, G722Encoder};
use crate::media::opus::{OpusDecoder, OpusEncoder, OpusError, OpusFmtp};
use crate::media::playout::{DecodeError, FrameDecoder};
use crate::media::plc::PitchConcealer;

/// G.722's sample rate (its RTP clock is 8,000 all the same, RFC 3551 §4.5.2).
const G722_RATE: u32 = 16_000;

/// Samples in 20 ms at the highest rate (48 kHz): the size of every frame buffer.
pub const MAX_FRAME: usize = 960;

/// Largest payload an [`Encoder`] writes for 20 ms (one Opus packet, RFC 6716 §3.2.1).
pub const MAX_PAYLOAD: usize = crate::media::opus::MAX_PACKET_BYTES;

/// What a member speaks: codec, PCM rate and the codec's encoder parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The negotiated codec.
    pub codec: Codec,
    /// PCM rate the member's audio is decoded to and encoded from, in Hz.
    pub rate: u32,
    /// Opus: send in-band FEC (the far end said `useinbandfec=1`).
    pub fec: bool,
    /// Opus: bitrate we send at, in bit/s (0 for the other codecs).
    pub bitrate: u32,
}

/// Listeners whose encoders are configured alike share one encode of the mix.
pub type EncoderKey = Format;

/// The Opus bitrates we send at (bit/s): a far end's `maxaveragebitrate` is rounded
/// down to one of these, which bounds the number of distinct Opus encoders a room
/// can need (with rate and FEC) to 36 whatever its callers ask for.
pub const BITRATE_CLASSES: [u32; 6] = [6000, 8000, 12_000, 16_000, 24_000, 32_000];

impl Format {
    /// The format for a codec as negotiated, with the far end's fmtp for Opus.
    pub fn new(codec: Codec, fmtp: Option<&str>) -> Format {
        match codec {
            Codec::Pcmu | Codec::Pcma => Format {
                codec,
                rate: 8000,
                fec: false,
                bitrate: 0,
            },
            Codec::G722 => Format {
                codec,
                rate: 16_000,
                fec: false,
                bitrate: 0,
            },
            Codec::Opus => {
                let f = fmtp.map(OpusFmtp::parse).unwrap_or_default();
                // The highest rate the far end plays, among those the room mixes at.
                let rate = match f.max_playback_rate {
                    0..=8000 => 8000,
                    8001..=16_000 => 16_000,
                    _ => 48_000,
                };
                // Speech bitrates that leave room for FEC (RFC 7587 §3.1.1 figures).
                let wanted = match rate {
                    8000 => 16_000,
                    16_000 => 24_000,
                    _ => 32_000,
                };
                let capped = f.max_average_bitrate.map_or(wanted, |m| wanted.min(m));
                // A few bitrate classes, not any number: listeners of one class share
                // an encode, so callers with odd caps must not each get their own.
                let bitrate = BITRATE_CLASSES
                    .iter()
                    .copied()
                    .rev()
                    .find(|&c| c <= capped)
                    .unwrap_or(BITRATE_CLASSES[0]);
                Format {
                    codec,
                    rate,
                    fec: f.use_inband_fec,
                    bitrate,
                }
            }
        }
    }

    /// Samples in one 20 ms frame at this format's rate.
    pub fn frame_samples(&self) -> usize {
        self.rate as usize / 50
    }

    /// RTP timestamp advance of one 20 ms frame (in the codec's RTP clock).
    pub fn timestamp_step(&self) -> u32 {
        self.codec.clock_rate() / 50
    }
}

/// Why a codec could not be set up or could not encode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus refused the parameters or the frame.
    #[error(transparent)]
    Opus(#[from] OpusError),
}

/// A member's decoder; see the module docs.
pub enum Decoder {
    /// PCMU or PCMA, with its PLC.
    G711(G711Decoder),
    /// G.722 at 16 kHz, with the pitch-based PLC G.711 uses (at 16 kHz).
    G722(Box<(G722Decoder, PitchConcealer)>),
    /// Opus, with FEC and libopus's PLC.
    Opus(Box<OpusDecoder>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Decoder::G711(_) => "G711",
            Decoder::G722(_) => "G722",
            Decoder::Opus(_) => "Opus",
        };
        f.debug_tuple("Decoder").field(&name).finish()
    }
}

impl Decoder {
    /// A decoder for `format`, giving PCM at `format.rate`.
    pub fn new(format: Format) -> Result<Decoder, CodecError> {
        Ok(match format.codec {
            Codec::Pcmu => Decoder::G711(G711Decoder::new(Law::Ulaw)),
            Codec::Pcma => Decoder::G711(G711Decoder::new(Law::Alaw)),
            Codec::G722 => Decoder::G722(Box::new((
                G722Decoder::new(),
                PitchConcealer::new(G722_RATE),
            ))),
            Codec::Opus => Decoder::Opus(Box::new(OpusDecoder::new(format.rate)?)),
        })
    }

    /// Forgets the stream (a new SSRC): no history, no audio left in the state.
    pub fn reset(&mut self) {
        match self {
            Decoder::G711(d) => *d = G711Decoder::new(d.law()),
            Decoder::G722(b) => {
                b.0.reset();
                **b = (G722Decoder::new(), PitchConcealer::new(G722_RATE));
            }
            Decoder::Opus(d) => {
                let _ = d.reset();
            }
        }
    }
}

impl Decoder {
    /// How many samples `payload` decodes to, without decoding it (`None` for an
    /// Opus packet whose framing is invalid).
    pub fn samples_in(&self, payload: &[u8]) -> Option<usize> {
        match self {
            Decoder::G711(_) => Some(payload.len()),
            Decoder::G722(_) => Some(2 * payload.len()),
            Decoder::Opus(d) => d.packet_samples(payload).ok(),
        }
    }
}

/// Plays a member's packets as silence of the right length without decoding them:
/// what the conference uses for a listener whose RFC 6464 level says it is quiet.
/// The decoder's state is left behind; it starts afresh when decoding resumes.
pub struct Unheard<'a>(pub &'a Decoder);

impl FrameDecoder for Unheard<'_> {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        let samples = self.0.samples_in(payload).ok_or(DecodeError::Malformed)?;
        out.resize(out.len() + samples, 0);
        Ok(())
    }

    fn conceal(&mut self, samples: usize, _next: Option<&[u8]>, out: &mut Vec<i16>) {
        out.resize(out.len() + samples, 0);
    }
}

impl FrameDecoder for Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        match self {
            Decoder::G711(d) => d.decode(payload, out),
            Decoder::G722(b) => {
                let (d, plc) = &mut **b;
                let start = out.len();
                // Two samples per byte at 16 kHz.
                out.resize(start + 2 * payload.len(), 0);
                let n = d.decode(payload, &mut out[start..]);
                out.truncate(start + n);
                // Merged with the concealment's continuation when it ends a loss.
                plc.on_decoded(&mut out[start..]);
                Ok(())
            }
            Decoder::Opus(d) => {
                let start = out.len();
                // Exactly the packet's duration: zero-filling a whole 120 ms buffer per
                // packet would cost more than the decode for small packets.
                let Ok(samples) = d.packet_samples(payload) else {
                    return Err(DecodeError::Malformed);
                };
                out.resize(start + samples, 0);
                let result = d.decode(payload, &mut out[start..]);
                match result {
                    Ok(n) => {
                        out.truncate(start + n);
                        Ok(())
                    }
                    Err(e) => {
                        out.truncate(start);
                        Err(if e.is_expected() {
                            DecodeError::Malformed
                        } else {
                            DecodeError::Unsupported
                        })
                    }
                }
            }
        }
    }

    fn conceal(&mut self, samples: usize, next: Option<&[u8]>, out: &mut Vec<i16>) {
        match self {
            Decoder::G711(d) => d.conceal(samples, next, out),
            Decoder::G722(b) => b.1.conceal(samples, out),
            Decoder::Opus(d) => {
                let start = out.len();
                out.resize(start + samples, 0);
                let slot = &mut out[start..];
                // FEC from the next packet when it is there, PLC otherwise; a length
                // libopus cannot conceal in one go stays silent rather than failing.
                let done = match next {
                    Some(p) => d.decode_fec(p, slot).or_else(|_| d.conceal(slot)),
                    None => d.conceal(slot),
                };
                if done.is_err() {
                    slot.fill(0);
                }
            }
        }
    }

    fn on_silence(&mut self) {
        // Opus keeps its own PLC state: libopus handles what follows a loss itself.
        match self {
            Decoder::G711(d) => d.on_silence(),
            Decoder::G722(b) => b.1.on_silence(),
            Decoder::Opus(_) => {}
        }
    }

    fn concealment_limit(&self) -> std::time::Duration {
        match self {
            Decoder::G711(_) | Decoder::G722(_) => crate::media::plc::FADE_OUT,
            // libopus fades within about 60 ms: the buffer's default, as before.
            Decoder::Opus(_) => std::time::Duration::from_millis(60),
        }
    }

    fn holds_in_speech(&self) -> bool {
        // Opus's FEC rebuilds a lost frame from the packet after it, so waiting for
        // late packets pays (measured: concealing them as lost cost 2-3 dB of waveform
        // SNR at 10 % loss and 40 ms of jitter); G.711 and G.722 gain nothing by it.
        matches!(self, Decoder::Opus(_))
    }
}
/// One outgoing stream's encoder (a speaker's own, or a room's shared one).
pub enum Encoder {
    /// G.711: stateless.
    G711(Law),
    /// G.722 at 16 kHz.
    G722(Box<G722Encoder>),
    /// Opus at the format's rate and bitrate.
    Opus(Box<OpusEncoder>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Encoder::G711(_) => "G711",
            Encoder::G722(_) => "G722",
            Encoder::Opus(_) => "Opus",
        };
        f.debug_tuple("Encoder").field(&name).finish()
    }
}

impl Encoder {
    /// An encoder for `format`, taking 20 ms frames at `format.rate`.
    pub fn new(format: Format) -> Result<Encoder, CodecError> {
        Ok(match format.codec {
            Codec::Pcmu => Encoder::G711(Law::Ulaw),
            Codec::Pcma => Encoder::G711(Law::Alaw),
            Codec::G722 => Encoder::G722(Box::default()),
            Codec::Opus => {
                let bitrate = format.bitrate.clamp(6000, 510_000);
                Encoder::Opus(Box::new(OpusEncoder::new(
                    format.rate,
                    bitrate,
                    format.fec,
                )?))
            }
        })
    }

    /// Encodes one 20 ms frame into `out`; returns the payload length. Only Opus can
    /// fail (a frame of the wrong length: a bug of ours, which the caller counts).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        Ok(match self {
            Encoder::G711(law) => {
                let n = pcm.len().min(out.len());
                law.encode(&pcm[..n], &mut out[..n]);
                n
            }
            Encoder::G722(e) => e.encode(pcm, out),
            Encoder::Opus(e) => e.encode(pcm, out)?,
        })
    }

    /// Back to the initial state (a stream restarts from this encoder).
    pub fn reset(&mut self) {
        match self {
            Encoder::G711(_) => {}
            Encoder::G722(e) => e.reset(),
            Encoder::Opus(e) => {
                let _ = e.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                (8000.0 * (2.0 * std::f64::consts::PI * hz * n as f64 / rate as f64).sin()) as i16
            })
            .collect()
    }

    /// Correlation-free level check: RMS of the second half of `x`.
    fn rms(x: &[i16]) -> f64 {
        let tail = &x[x.len() / 2..];
        (tail.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / tail.len() as f64).sqrt()
    }

    #[test]
    fn formats_follow_the_negotiation() {
        assert_eq!(Format::new(Codec::Pcma, None).rate, 8000);
        assert_eq!(Format::new(Codec::G722, None).rate, 16_000);
        assert_eq!(Format::new(Codec::G722, None).timestamp_step(), 160);
        let opus = Format::new(Codec::Opus, Some("maxplaybackrate=16000;useinbandfec=1"));
        assert_eq!((opus.rate, opus.fec, opus.bitrate), (16_000, true, 24_000));
        assert_eq!(opus.timestamp_step(), 960);
        let full = Format::new(Codec::Opus, Some("maxaveragebitrate=20000"));
        assert_eq!((full.rate, full.fec, full.bitrate), (48_000, false, 16_000));
        let tiny = Format::new(Codec::Opus, Some("maxaveragebitrate=6000"));
        assert_eq!(tiny.bitrate, 6000);
    }

    #[test]
    fn every_codec_round_trips_a_tone() {
        for (codec, fmtp) in [
            (Codec::Pcmu, None),
            (Codec::Pcma, None),
            (Codec::G722, None),
            (Codec::Opus, Some("useinbandfec=1")),
            (Codec::Opus, Some("maxplaybackrate=16000")),
        ] {
            let format = Format::new(codec, fmtp);
            let mut enc = Encoder::new(format).unwrap();
            let mut dec = Decoder::new(format).unwrap();
            let n = format.frame_samples();
            let input = tone(440.0, format.rate, n * 25);
            let mut output = Vec::with_capacity(MAX_FRAME);
            let mut all = Vec::new();
            let mut payload = [0u8; MAX_PAYLOAD];
            for frame in input.chunks(n) {
                let len = enc.encode(frame, &mut payload).unwrap();
                assert!(len > 0, "{codec:?}: empty payload");
                output.clear();
                dec.decode(&payload[..len], &mut output).unwrap();
                assert_eq!(output.len(), n, "{codec:?}: frame length");
                all.extend_from_slice(&output);
            }
            let (a, b) = (rms(&input), rms(&all));
            assert!(
                (b / a - 1.0).abs() < 0.2,
                "{codec:?}: level {b:.0} after the round trip, {a:.0} before"
            );
            // Concealment gives the asked length.
            output.clear();
            dec.conceal(n, None, &mut output);
            assert_eq!(output.len(), n);
        }
    }
}
