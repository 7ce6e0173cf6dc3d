//! Rooms and the way into them: dial-in numbers, PIN hashes, the PIN-entry IVR and the
//! prompts.

pub mod dial_in;
pub mod ivr;
pub mod keys;
pub mod pin;
pub mod playback;
pub mod prompts;
pub mod state;

pub use state::{Dismissal, Role, Room, RoomAction, RoomOptions};
