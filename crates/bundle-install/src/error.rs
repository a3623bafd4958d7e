//! The installer's error: what failed, how the site was left (which decides the exit code), a stable
//! kind for `--json`, and the next thing the admin should do.

use bundle_core::exit::Exit;
use bundle_core::verify::VerifyError;

/// How a failed command left the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Bad arguments or input files (exit 2).
    Usage,
    /// Operation failed; the site was put back as it was (exit 1).
    Failed,
    /// Verification failed; nothing was written (exit 3).
    Verification,
    /// Refused by policy before anything changed (exit 4).
    Refused,
    /// An interrupted or failed run could be neither completed nor undone (exit 5).
    Attention,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InstallError {
    pub outcome: Outcome,
    pub kind: String,
    pub message: String,
    pub hint: Option<String>,
}

impl InstallError {
    pub fn new(outcome: Outcome, kind: impl Into<String>, message: impl Into<String>) -> Self {
        InstallError { outcome, kind: kind.into(), message: message.into(), hint: None }
    }
    pub fn usage(kind: &str, message: impl Into<String>) -> Self {
        Self::new(Outcome::Usage, kind, message)
    }
    pub fn failed(kind: &str, message: impl Into<String>) -> Self {
        Self::new(Outcome::Failed, kind, message)
    }
    pub fn refused(kind: &str, message: impl Into<String>) -> Self {
        Self::new(Outcome::Refused, kind, message)
    }
    pub fn attention(kind: &str, message: impl Into<String>) -> Self {
        Self::new(Outcome::Attention, kind, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::failed("io", format!("{what}: {e}"))
    }

    pub fn exit(&self) -> Exit {
        match self.outcome {
            Outcome::Usage => Exit::Usage,
            Outcome::Failed => Exit::Failed,
            Outcome::Verification => Exit::Verification,
            Outcome::Refused => Exit::Policy,
            Outcome::Attention => Exit::Attention,
        }
    }
}

impl From<VerifyError> for InstallError {
    fn from(e: VerifyError) -> Self {
        match e {
            // The bundle was fine; the site's disk was not.
            VerifyError::Write { .. } => InstallError::failed("staging_write_failed", e.to_string())
                .with_hint("free disk space under the site root and run the command again"),
            _ => InstallError::new(Outcome::Verification, e.kind(), e.to_string())
                .with_hint("nothing was installed; get a fresh copy of the bundle (or check the site's trusted keys)"),
        }
    }
}

impl From<crate::db::DbError> for InstallError {
    fn from(e: crate::db::DbError) -> Self {
        // Nothing has changed when a rollback is found not to be one: a refusal, not a failure.
        let outcome = if e.is_policy() || e.kind() == "not_a_rollback" { Outcome::Refused } else { Outcome::Failed };
        InstallError::new(outcome, e.kind(), e.to_string())
    }
}

pub type Result<T, E = InstallError> = std::result::Result<T, E>;
