//! Prompt audio: WAV files read once at start, held in memory, shared by all shards.
//!
//! Files are 8 kHz mono 16-bit PCM WAV (see `prompts/README.md`); an operator may
//! replace any of them with a recording in that format. Nothing is read after start.

pub use super::ivr::Prompt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the prompts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The file could not be opened or is not a WAV file.
    #[error("{path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is a WAV file in another format.
    #[error("{path}: must be 8000 Hz mono 16-bit PCM, found {found}")]
    WrongFormat {
        /// The file.
        path: PathBuf,
        /// What the file is.
        found: String,
    },
}

/// Sample rate of prompt files and of the mixer (narrowband).
pub const PROMPT_RATE: u32 = 8000;

/// Longest prompt accepted (60 s), so a wrong file cannot eat memory.
const MAX_PROMPT_SAMPLES: usize = 60 * PROMPT_RATE as usize;

/// All prompts of one language.
#[derive(Debug, Clone)]
pub struct Prompts {
    audio: [Arc<[i16]>; Prompt::ALL.len()],
}

impl Prompts {
    /// Loads `<dir>/<language>/<file>` for every prompt.
    pub fn load(dir: &Path, language: &str) -> Result<Prompts, PromptError> {
        let base = dir.join(language);
        let mut audio: Vec<Arc<[i16]>> = Vec::with_capacity(Prompt::ALL.len());
        for p in Prompt::ALL {
            audio.push(load_wav(&base.join(p.file_name()))?.into());
        }
        let audio: [Arc<[i16]>; Prompt::ALL.len()] =
            audio.try_into().map_err(|_| PromptError::Unreadable {
                path: base.clone(),
                message: "internal: prompt count".into(),
            })?;
        Ok(Prompts { audio })
    }

    /// Builds prompts from samples (tests, simulations).
    pub fn from_fn(mut f: impl FnMut(Prompt) -> Vec<i16>) -> Prompts {
        Prompts {
            audio: Prompt::ALL.map(|p| f(p).into()),
        }
    }

    /// The samples of one prompt.
    pub fn get(&self, p: Prompt) -> &Arc<[i16]> {
        let i = Prompt::ALL.iter().position(|x| *x == p).unwrap_or(0);
        &self.audio[i]
    }
}

fn load_wav(path: &Path) -> Result<Vec<i16>, PromptError> {
    let reader = hound::WavReader::open(path).map_err(|e| PromptError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let spec = reader.spec();
    if spec.sample_rate != PROMPT_RATE
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(PromptError::WrongFormat {
            path: path.to_path_buf(),
            found: format!(
                "{} Hz, {} channel(s), {}-bit {:?}",
                spec.sample_rate, spec.channels, spec.bits_per_sample, spec.sample_format
            ),
        });
    }
    let mut out = Vec::with_capacity((reader.duration() as usize).min(MAX_PROMPT_SAMPLES));
    for s in reader.into_samples::<i16>().take(MAX_PROMPT_SAMPLES) {
        out.push(s.map_err(|e| PromptError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_prompts_load_in_both_languages() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        for lang in ["de", "en"] {
            let p = Prompts::load(&dir, lang).unwrap();
            for prompt in Prompt::ALL {
                let len = p.get(prompt).len();
                // Between 0.1 s and 15 s: a real prompt, not an empty or runaway file.
                assert!(
                    (800..120_000).contains(&len),
                    "{lang} {prompt:?}: {len} samples"
                );
            }
        }
    }

    #[test]
    fn missing_or_wrong_files_are_named() {
        let e = Prompts::load(Path::new("/nonexistent"), "de").unwrap_err();
        assert!(e.to_string().contains("enter_pin.wav"), "{e}");
        let dir = std::env::temp_dir().join(format!("sotto-prompt-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("xx")).unwrap();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(dir.join("xx").join("enter_pin.wav"), spec).unwrap();
        w.write_sample(0i16).unwrap();
        w.write_sample(0i16).unwrap();
        w.finalize().unwrap();
        let e = Prompts::load(&dir, "xx").unwrap_err();
        assert!(e.to_string().contains("44100 Hz, 2 channel"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
