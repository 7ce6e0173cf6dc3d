//! Rooms and the way into them: PIN hashes, the PIN-entry IVR and the prompts.

pub mod ivr;
pub mod pin;
pub mod prompts;
