//! Exit codes shared by both tools (the contract in `bundle-spec/exit-codes.md`). Libraries return
//! typed errors; each binary maps them to one of these once, at the top.

/// What a command's exit status tells a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, including "already installed, nothing to do".
    Ok = 0,
    /// The operation failed and the site was put back as it was.
    Failed = 1,
    /// Usage error, or invalid spec/config input.
    Usage = 2,
    /// Verification failed (signature, trust, hash, size, archive structure); nothing was written.
    Verification = 3,
    /// Refused by policy (version, compatibility, lock, rollback needing `--restore-data`).
    Policy = 4,
    /// The site needs attention: an interrupted run that could not be completed or undone.
    Attention = 5,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}
