//! Prompt audio: WAV files read once at start, held in memory, shared by all shards.
//!
//! Files are 8 kHz mono 16-bit PCM WAV (see `prompts/README.md`); an operator may
//! replace any of them with a recording in that format. Nothing is read after start.

use super::keys::Control;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The prompts the bridge plays (file names in `prompts/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prompt {
    /// "Please enter the conference PIN, followed by the hash key."
    EnterPin,
    /// "That PIN is not correct. Please try again."
    WrongPin,
    /// "Too many wrong attempts. Goodbye."
    Goodbye,
    /// "You are the first participant."
    FirstParticipant,
    /// A short rising two-tone: someone joined.
    JoinTone,
    /// The join tone falling: someone left.
    LeaveTone,
    /// "You are muted."
    Muted,
    /// "You are no longer muted."
    Unmuted,
    /// "Your hand is raised."
    HandRaised,
    /// "Your hand is lowered."
    HandLowered,
    /// "Participants in this conference:" (a number follows).
    Participants,
    /// "Quieter."
    Quieter,
    /// "Louder."
    Louder,
    /// "You can use these keys."
    HelpIntro,
    /// What a control does, said after its keys in the help.
    Help(Control),
    /// "star"
    KeyStar,
    /// "hash"
    KeyHash,
    /// "The conference is now locked."
    Locked,
    /// "The conference is now unlocked."
    Unlocked,
    /// "This conference is locked. Goodbye."
    RoomLocked,
    /// "This conference is full. Goodbye."
    RoomFull,
    /// "Lecture mode is on. Only moderators can speak."
    LectureOn,
    /// "Lecture mode is off."
    LectureOff,
    /// "You cannot unmute yourself during the lecture. Raise your hand…"
    UnmuteNotAllowed,
    /// "You have the floor."
    FloorGiven,
    /// "No hands are raised."
    NoHands,
    /// "You have been removed from the conference. Goodbye."
    Removed,
    /// "A participant has been removed."
    ParticipantRemoved,
    /// "There is nobody to remove."
    NobodyToRemove,
    /// "Everyone except moderators is now muted."
    AllMuted,
    /// "The moderator has muted you."
    MutedByModerator,
    /// "You are a moderator."
    Moderator,
    /// "Please wait. The conference starts when the moderator joins."
    WaitForModerator,
    /// "The moderator has joined. The conference begins."
    ConferenceStarts,
    /// "The moderator has left. The conference will end shortly. Goodbye."
    ConferenceEnding,
    /// "You are the only participant."
    OnlyParticipant,
    /// "You are muted. To unmute, press" (the keys follow).
    MutedHint,
    /// "That key is not available."
    NotAllowed,
    /// "more than ninety-nine"
    MoreThan99,
    /// "Your security code is:" (ZRTP's SAS follows).
    SasIntro,
    /// "If your phone shows the same code, press hash."
    SasConfirm,
    /// "Code confirmed."
    SasConfirmed,
    /// "This conference requires a phone with ZRTP encryption."
    ZrtpRequired,
    /// A number, 0 to 99.
    Number(u8),
    /// A letter of the SAS alphabet (ZRTP B32), by its ASCII code.
    SasLetter(u8),
    /// A word of the PGP word list (ZRTP B256): 0–255 the even list, 256–511 the odd.
    SasWord(u16),
}

/// Words of the PGP word list (ZRTP B256 SAS): 256 even and 256 odd.
const SAS_WORDS: usize = 512;

/// The letters of ZRTP's B32 SAS alphabet (its digits are read as numbers).
pub const SAS_LETTERS: &[u8; 24] = b"ybndrfgejkmcpqxotuwiszah";

/// Every prompt but the numbers, in file order.
const FIXED: [Prompt; 54] = [
    Prompt::EnterPin,
    Prompt::WrongPin,
    Prompt::Goodbye,
    Prompt::FirstParticipant,
    Prompt::JoinTone,
    Prompt::LeaveTone,
    Prompt::Muted,
    Prompt::Unmuted,
    Prompt::HandRaised,
    Prompt::HandLowered,
    Prompt::Participants,
    Prompt::Quieter,
    Prompt::Louder,
    Prompt::HelpIntro,
    Prompt::Help(Control::Mute),
    Prompt::Help(Control::Hand),
    Prompt::Help(Control::Count),
    Prompt::Help(Control::Quieter),
    Prompt::Help(Control::Louder),
    Prompt::Help(Control::Help),
    Prompt::Help(Control::Lock),
    Prompt::Help(Control::Lecture),
    Prompt::Help(Control::Floor),
    Prompt::Help(Control::RemoveLast),
    Prompt::Help(Control::MuteAll),
    Prompt::KeyStar,
    Prompt::KeyHash,
    Prompt::Locked,
    Prompt::Unlocked,
    Prompt::RoomLocked,
    Prompt::RoomFull,
    Prompt::LectureOn,
    Prompt::LectureOff,
    Prompt::UnmuteNotAllowed,
    Prompt::FloorGiven,
    Prompt::NoHands,
    Prompt::Removed,
    Prompt::ParticipantRemoved,
    Prompt::NobodyToRemove,
    Prompt::AllMuted,
    Prompt::MutedByModerator,
    Prompt::Moderator,
    Prompt::WaitForModerator,
    Prompt::ConferenceStarts,
    Prompt::ConferenceEnding,
    Prompt::OnlyParticipant,
    Prompt::MutedHint,
    Prompt::NotAllowed,
    Prompt::MoreThan99,
    Prompt::SasIntro,
    Prompt::SasConfirm,
    Prompt::SasConfirmed,
    Prompt::ZrtpRequired,
    Prompt::Number(0),
];

/// Spoken numbers: 0 to this.
pub const MAX_NUMBER: u8 = 99;

impl Prompt {
    /// Number of prompts (numbers, SAS letters and words included).
    pub const COUNT: usize =
        FIXED.len() - 1 + MAX_NUMBER as usize + 1 + SAS_LETTERS.len() + SAS_WORDS;

    /// Every prompt, in file order.
    pub fn all() -> impl Iterator<Item = Prompt> {
        FIXED[..FIXED.len() - 1]
            .iter()
            .copied()
            .chain((0..=MAX_NUMBER).map(Prompt::Number))
            .chain(SAS_LETTERS.iter().map(|&c| Prompt::SasLetter(c)))
            .chain((0..SAS_WORDS as u16).map(Prompt::SasWord))
    }

    /// Its place in [`Prompt::all`].
    fn index(self) -> usize {
        let numbers = FIXED.len() - 1;
        match self {
            Prompt::Number(n) => numbers + usize::from(n.min(MAX_NUMBER)),
            Prompt::SasLetter(c) => {
                let letter = SAS_LETTERS.iter().position(|&x| x == c).unwrap_or(0);
                numbers + usize::from(MAX_NUMBER) + 1 + letter
            }
            Prompt::SasWord(w) => {
                numbers
                    + usize::from(MAX_NUMBER)
                    + 1
                    + SAS_LETTERS.len()
                    + usize::from(w).min(SAS_WORDS - 1)
            }
            p => FIXED.iter().position(|&x| x == p).unwrap_or(0),
        }
    }

    /// The prompts that read a ZRTP SAS aloud: B32 letters as spelling words, digits
    /// as numbers, B256 as its two PGP words.
    pub fn sas(sas: &crate::media::zrtp::Sas) -> Option<Vec<Prompt>> {
        use crate::media::zrtp::sas::SasToken;
        sas.tokens()
            .into_iter()
            .map(|t| match t {
                SasToken::Letter(c) => u8::try_from(c)
                    .ok()
                    .filter(|b| SAS_LETTERS.contains(b))
                    .map(Prompt::SasLetter),
                SasToken::Digit(c) => c.to_digit(10).map(|d| Prompt::Number(d as u8)),
                SasToken::Word(w) => crate::media::zrtp::sas::word_index(w)
                    .and_then(|i| u16::try_from(i).ok())
                    .map(Prompt::SasWord),
            })
            .collect()
    }

    /// File name (without directory) of this prompt.
    pub fn file_name(self) -> Cow<'static, str> {
        let name = match self {
            Prompt::Number(n) => return Cow::Owned(format!("number_{n}.wav")),
            Prompt::Help(c) => return Cow::Owned(format!("help_{}.wav", c.config_key().0)),
            Prompt::EnterPin => "enter_pin.wav",
            Prompt::WrongPin => "wrong_pin.wav",
            Prompt::Goodbye => "goodbye.wav",
            Prompt::FirstParticipant => "first_participant.wav",
            Prompt::JoinTone => "join.wav",
            Prompt::LeaveTone => "leave.wav",
            Prompt::Muted => "muted.wav",
            Prompt::Unmuted => "unmuted.wav",
            Prompt::HandRaised => "hand_raised.wav",
            Prompt::HandLowered => "hand_lowered.wav",
            Prompt::Participants => "participants.wav",
            Prompt::Quieter => "quieter.wav",
            Prompt::Louder => "louder.wav",
            Prompt::HelpIntro => "help_intro.wav",
            Prompt::KeyStar => "key_star.wav",
            Prompt::KeyHash => "key_hash.wav",
            Prompt::Locked => "locked.wav",
            Prompt::Unlocked => "unlocked.wav",
            Prompt::RoomLocked => "room_locked.wav",
            Prompt::RoomFull => "room_full.wav",
            Prompt::LectureOn => "lecture_on.wav",
            Prompt::LectureOff => "lecture_off.wav",
            Prompt::UnmuteNotAllowed => "unmute_not_allowed.wav",
            Prompt::FloorGiven => "floor_given.wav",
            Prompt::NoHands => "no_hands.wav",
            Prompt::Removed => "removed.wav",
            Prompt::ParticipantRemoved => "participant_removed.wav",
            Prompt::NobodyToRemove => "nobody_to_remove.wav",
            Prompt::AllMuted => "all_muted.wav",
            Prompt::MutedByModerator => "muted_by_moderator.wav",
            Prompt::Moderator => "moderator.wav",
            Prompt::WaitForModerator => "wait_for_moderator.wav",
            Prompt::ConferenceStarts => "conference_starts.wav",
            Prompt::ConferenceEnding => "conference_ending.wav",
            Prompt::OnlyParticipant => "only_participant.wav",
            Prompt::MutedHint => "muted_hint.wav",
            Prompt::NotAllowed => "not_allowed.wav",
            Prompt::MoreThan99 => "more_than_99.wav",
            Prompt::SasIntro => "sas_intro.wav",
            Prompt::SasConfirm => "sas_confirm.wav",
            Prompt::SasConfirmed => "sas_confirmed.wav",
            Prompt::ZrtpRequired => "zrtp_required.wav",
            Prompt::SasLetter(c) => return Cow::Owned(format!("sas_{}.wav", char::from(c))),
            Prompt::SasWord(w) => {
                let word = crate::media::zrtp::sas::word(usize::from(w)).unwrap_or("aardvark");
                return Cow::Owned(format!("pgp_{}.wav", word.to_ascii_lowercase()));
            }
        };
        Cow::Borrowed(name)
    }
}

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
    audio: Vec<Arc<[i16]>>,
}

impl Prompts {
    /// Loads `<dir>/<language>/<file>` for every prompt.
    pub fn load(dir: &Path, language: &str) -> Result<Prompts, PromptError> {
        let base = dir.join(language);
        let mut audio: Vec<Arc<[i16]>> = Vec::with_capacity(Prompt::COUNT);
        for p in Prompt::all() {
            audio.push(load_wav(&base.join(p.file_name().as_ref()))?.into());
        }
        Ok(Prompts { audio })
    }

    /// Builds prompts from samples (tests, simulations).
    pub fn from_fn(mut f: impl FnMut(Prompt) -> Vec<i16>) -> Prompts {
        Prompts {
            audio: Prompt::all().map(|p| f(p).into()).collect(),
        }
    }

    /// The samples of one prompt.
    pub fn get(&self, p: Prompt) -> &Arc<[i16]> {
        // `audio` holds every prompt (built from `Prompt::all`), so the index is in range.
        &self.audio[p.index().min(self.audio.len().saturating_sub(1))]
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
    fn a_sas_is_read_as_spelling_words_and_numbers_or_as_two_pgp_words() {
        use crate::media::zrtp::{Sas, SasType};
        // Every B32 character: the first of four, five bits each.
        for v in 0..32u32 {
            let sas = Sas::new(SasType::B32, v << 27);
            let read = Prompt::sas(&sas).unwrap();
            assert_eq!(read.len(), 4);
            let first = sas.text().chars().next().unwrap();
            let expected = match first.to_digit(10) {
                Some(d) => Prompt::Number(d as u8),
                None => Prompt::SasLetter(first as u8),
            };
            assert_eq!(read[0], expected, "{}", sas.text());
        }
        for v in [0x0000_0000, 0x01fe_0000, 0xffff_0000u32] {
            let sas = Sas::new(SasType::B256, v);
            let read = Prompt::sas(&sas).unwrap();
            let names: Vec<String> = read.iter().map(|p| p.file_name().into_owned()).collect();
            let words: Vec<String> = sas
                .text()
                .split(' ')
                .map(|w| format!("pgp_{}.wav", w.to_ascii_lowercase()))
                .collect();
            assert_eq!(names, words);
            assert!(
                matches!(read[..], [Prompt::SasWord(a), Prompt::SasWord(b)] if a < 256 && b >= 256)
            );
        }
    }

    #[test]
    fn shipped_prompts_load_in_both_languages() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        for lang in ["de", "en"] {
            let p = Prompts::load(&dir, lang).unwrap();
            for prompt in Prompt::all() {
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
    fn every_prompt_has_its_own_file_and_place() {
        let names: std::collections::HashSet<_> = Prompt::all().map(Prompt::file_name).collect();
        assert_eq!(names.len(), Prompt::COUNT);
        for (i, p) in Prompt::all().enumerate() {
            assert_eq!(p.index(), i, "{p:?}");
        }
        assert_eq!(Prompt::Number(42).file_name(), "number_42.wav");
        assert_eq!(
            Prompt::Help(Control::RemoveLast).file_name(),
            "help_remove_last.wav"
        );
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
