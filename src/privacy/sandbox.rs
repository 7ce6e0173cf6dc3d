//! Placeholder until the sandbox lands: reports that nothing is enforced.

/// Sandbox options.
pub struct SandboxOptions {
    /// Start without Landlock.
    pub allow_unsandboxed: bool,
}

/// Landlock state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockStatus {
    /// Every requested right enforced.
    FullyEnforced,
    /// Some rights enforced.
    PartiallyEnforced,
    /// Nothing enforced.
    NotEnforced,
}

/// What was enforced.
pub struct SandboxReport {
    /// Landlock.
    pub landlock: LandlockStatus,
    /// Warnings.
    pub warnings: Vec<String>,
}

impl SandboxReport {
    /// One line.
    pub fn summary(&self) -> String {
        "sandbox: landlock=off seccomp=off".to_string()
    }
    /// Whether it is active.
    pub fn is_active(&self) -> bool {
        false
    }
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No landlock.
    #[error("no landlock")]
    Unsupported,
}

/// Locks down.
pub fn lock_down(opts: &SandboxOptions) -> Result<SandboxReport, SandboxError> {
    if !opts.allow_unsandboxed {
        return Err(SandboxError::Unsupported);
    }
    Ok(SandboxReport {
        landlock: LandlockStatus::NotEnforced,
        warnings: vec![],
    })
}
