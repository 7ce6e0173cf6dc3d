//! Privacy by construction: the OS sandbox that makes recording impossible.

pub mod sandbox;
