//! The installer's error: what failed, how the site was left (which decides the exit code), a stable
//! kind for `--json`, the next thing the admin should do, and the lower error it came from.
//!
//! The kind strings are a public interface (`error.kind` in every `--json` envelope, listed in
//! bundle-spec/cli.md): scripts match on them, so a string never changes once released.

use bundle_core::exit::Exit;
use bundle_core::signature::SignatureError;
use bundle_core::verify::VerifyError;

use crate::config::ConfigError;
use crate::db::DbError;
use crate::python::interpreter::PythonError;
use crate::python::wheel::WheelError;

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

/// Declares [`ErrorKind`]'s own variants, their strings and [`ErrorKind::OWN`] from one table, so a
/// new kind cannot be left out of the list the uniqueness test walks.
macro_rules! error_kinds {
    ($($variant:ident => $text:literal,)*) => {
        /// The `error.kind` of an installer failure. The installer's own kinds are one variant each
        /// (bundle-spec/cli.md says where each occurs and with which exit code); a failure passed up
        /// from a lower layer keeps that layer's own kind, in the variant naming the layer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $(#[doc = concat!("`", $text, "`")] $variant,)*
            /// A bundle that failed verification or signature checks ([`VerifyError::kind`]).
            Verify(&'static str),
            /// A key file that could not be read ([`SignatureError::kind`]).
            Key(&'static str),
            /// A database ([`DbError::kind`]).
            Db(&'static str),
            /// Installing a wheel ([`WheelError::kind`]).
            Wheel(&'static str),
            /// The interpreter or the environment ([`PythonError::kind`]).
            Python(&'static str),
            /// Converting the config (`ConfigError::kind`).
            Config(&'static str),
        }

        impl ErrorKind {
            /// Every kind the installer names itself (the delegated ones are the lower errors' own).
            pub const OWN: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            /// The stable snake_case string of `error.kind`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => $text,)*
                    ErrorKind::Verify(k)
                    | ErrorKind::Key(k)
                    | ErrorKind::Db(k)
                    | ErrorKind::Wheel(k)
                    | ErrorKind::Python(k)
                    | ErrorKind::Config(k) => k,
                }
            }
        }
    };
}

error_kinds! {
    AbsurdSequence => "absurd_sequence",
    AlreadyCurrent => "already_current",
    BackupMissingDb => "backup_missing_db",
    BackupRecord => "backup_record",
    BadCurrent => "bad_current",
    BadJournal => "bad_journal",
    BadVersion => "bad_version",
    BadWheelName => "bad_wheel_name",
    BaselineNotNeeded => "baseline_not_needed",
    BundleChanged => "bundle_changed",
    CommitFailed => "commit_failed",
    ConfigNewer => "config_newer",
    ConfirmRestore => "confirm_restore",
    CurrentReleaseUnreadable => "current_release_unreadable",
    DataNotWritable => "data_not_writable",
    DeltaBaseDamaged => "delta_base_damaged",
    DeltaBaseMissing => "delta_base_missing",
    DiskFull => "disk_full",
    Downgrade => "downgrade",
    DuplicateDistribution => "duplicate_distribution",
    FileConflict => "file_conflict",
    ForeignReleaseDir => "foreign_release_dir",
    HookFailed => "hook_failed",
    Incompatible => "incompatible",
    IncompatibleWheel => "incompatible_wheel",
    InjectedFailure => "injected_failure",
    Interrupted => "interrupted",
    Io => "io",
    Journal => "journal",
    JournalUnreadable => "journal_unreadable",
    Lock => "lock",
    Locked => "locked",
    LowerSequence => "lower_sequence",
    NeedsRestore => "needs_restore",
    NoBackup => "no_backup",
    NoPreviousRelease => "no_previous_release",
    NoSite => "no_site",
    NoTrustedKeys => "no_trusted_keys",
    NotInstalled => "not_installed",
    PlantedSymlink => "planted_symlink",
    RecoverFailed => "recover_failed",
    RehearsalPlanMismatch => "rehearsal_plan_mismatch",
    ReinstallUnsupported => "reinstall_unsupported",
    ReleaseNotKept => "release_not_kept",
    ReleaseUnreadable => "release_unreadable",
    RevokedKey => "revoked_key",
    SameVersionDifferentContent => "same_version_different_content",
    SiteLayout => "site_layout",
    SiteStateUnreadable => "site_state_unreadable",
    StagingWriteFailed => "staging_write_failed",
    StoreDamaged => "store_damaged",
    StorePath => "store_path",
    TooOld => "too_old",
    TrustStore => "trust_store",
    UndoFailed => "undo_failed",
    UnknownDatabase => "unknown_database",
    UnknownKey => "unknown_key",
    UnsafePermissions => "unsafe_permissions",
    UntrustedCliKey => "untrusted_cli_key",
    WrongApp => "wrong_app",
    WrongBaseBundle => "wrong_base_bundle",
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A lower error the installer passes up: its message becomes the installer's, its kind is kept,
/// and the error itself stays reachable through [`std::error::Error::source`].
pub(crate) trait Cause: std::error::Error + Send + Sync + 'static {
    fn error_kind(&self) -> ErrorKind;
}

impl Cause for VerifyError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Verify(self.kind())
    }
}
impl Cause for SignatureError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Key(self.kind())
    }
}
impl Cause for DbError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Db(self.kind())
    }
}
impl Cause for WheelError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Wheel(self.kind())
    }
}
impl Cause for PythonError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Python(self.kind())
    }
}
impl Cause for ConfigError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Config(self.kind())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InstallError {
    pub outcome: Outcome,
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// The lower error this one reports, for logs and debugging; `message` already says it in words.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl InstallError {
    pub fn new(outcome: Outcome, kind: ErrorKind, message: impl Into<String>) -> Self {
        InstallError { outcome, kind, message: message.into(), hint: None, source: None }
    }
    pub fn usage(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(Outcome::Usage, kind, message)
    }
    pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(Outcome::Failed, kind, message)
    }
    pub fn refused(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(Outcome::Refused, kind, message)
    }
    pub fn attention(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(Outcome::Attention, kind, message)
    }
    /// A lower error passed up with its own kind and message, when the outcome is not the one its
    /// `From` impl picks (a Python requirement not met is a refusal, a bad key file a usage error).
    pub(crate) fn caused_by(outcome: Outcome, e: impl Cause) -> Self {
        InstallError::new(outcome, e.error_kind(), e.to_string()).with_source(e)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Keeps `e` as the [`std::error::Error::source`]; the message and kind stay as they are.
    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::failed(ErrorKind::Io, format!("{what}: {e}")).with_source(e)
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
            VerifyError::Write { .. } => InstallError::failed(ErrorKind::StagingWriteFailed, e.to_string())
                .with_hint("free disk space under the site root and run the command again")
                .with_source(e),
            _ => InstallError::caused_by(Outcome::Verification, e)
                .with_hint("nothing was installed; get a fresh copy of the bundle (or check the site's trusted keys)"),
        }
    }
}

impl From<DbError> for InstallError {
    fn from(e: DbError) -> Self {
        // Nothing has changed when a rollback is found not to be one: a refusal, not a failure.
        let outcome =
            if e.is_policy() || matches!(e, DbError::NotARollback { .. }) { Outcome::Refused } else { Outcome::Failed };
        InstallError::caused_by(outcome, e)
    }
}

impl From<WheelError> for InstallError {
    fn from(e: WheelError) -> Self {
        InstallError::caused_by(Outcome::Failed, e)
    }
}

impl From<PythonError> for InstallError {
    fn from(e: PythonError) -> Self {
        InstallError::caused_by(Outcome::Failed, e)
    }
}

impl From<ConfigError> for InstallError {
    fn from(e: ConfigError) -> Self {
        InstallError::caused_by(Outcome::Failed, e)
    }
}

pub type Result<T, E = InstallError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every own kind is documented in the error-kind tables users' scripts are written against.
    #[test]
    fn every_kind_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bundle-spec/cli.md")).unwrap();
        let tables = &doc[doc.find("## Error kinds").unwrap()..];
        let missing: Vec<&str> =
            ErrorKind::OWN.iter().map(|k| k.as_str()).filter(|k| !tables.contains(&format!("`{k}`"))).collect();
        assert!(missing.is_empty(), "not in bundle-spec/cli.md's error kinds: {missing:?}");
    }

    /// The strings are the `--json` `error.kind` scripts match on: each own kind has its own,
    /// snake_case, and the list below is today's, so renaming a variant cannot change one.
    #[test]
    fn own_kinds_are_unique_snake_case_and_unchanged() {
        let strings: Vec<&str> = ErrorKind::OWN.iter().map(|k| k.as_str()).collect();
        let mut seen = std::collections::BTreeSet::new();
        for s in &strings {
            assert!(seen.insert(*s), "`{s}` names two kinds");
            assert!(
                !s.is_empty()
                    && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
                    && !s.starts_with('_')
                    && !s.ends_with('_')
                    && !s.contains("__"),
                "`{s}` is not snake_case"
            );
        }
        let expected = [
            "absurd_sequence",
            "already_current",
            "backup_missing_db",
            "backup_record",
            "bad_current",
            "bad_journal",
            "bad_version",
            "bad_wheel_name",
            "baseline_not_needed",
            "bundle_changed",
            "commit_failed",
            "config_newer",
            "confirm_restore",
            "current_release_unreadable",
            "data_not_writable",
            "delta_base_damaged",
            "delta_base_missing",
            "disk_full",
            "downgrade",
            "duplicate_distribution",
            "file_conflict",
            "foreign_release_dir",
            "hook_failed",
            "incompatible",
            "incompatible_wheel",
            "injected_failure",
            "interrupted",
            "io",
            "journal",
            "journal_unreadable",
            "lock",
            "locked",
            "lower_sequence",
            "needs_restore",
            "no_backup",
            "no_previous_release",
            "no_site",
            "no_trusted_keys",
            "not_installed",
            "planted_symlink",
            "recover_failed",
            "rehearsal_plan_mismatch",
            "reinstall_unsupported",
            "release_not_kept",
            "release_unreadable",
            "revoked_key",
            "same_version_different_content",
            "site_layout",
            "site_state_unreadable",
            "staging_write_failed",
            "store_damaged",
            "store_path",
            "too_old",
            "trust_store",
            "undo_failed",
            "unknown_database",
            "unknown_key",
            "unsafe_permissions",
            "untrusted_cli_key",
            "wrong_app",
            "wrong_base_bundle",
        ];
        assert_eq!(strings, expected);
    }

    #[test]
    fn delegated_kinds_are_the_lower_errors_own() {
        let e = DbError::NotARollback {
            db: "client".into(),
            current: "1.0".parse().unwrap(),
            target: "2.0".parse().unwrap(),
        };
        let err = InstallError::from(e);
        assert_eq!(err.kind, ErrorKind::Db("not_a_rollback"));
        assert_eq!(err.kind.as_str(), "not_a_rollback");
        assert_eq!(err.outcome, Outcome::Refused);
        let source = std::error::Error::source(&err).expect("the database error is kept");
        assert!(source.downcast_ref::<DbError>().is_some_and(|d| matches!(d, DbError::NotARollback { .. })));
        assert_eq!(serde_json::to_value(err.kind).unwrap(), serde_json::json!("not_a_rollback"));
    }

    #[test]
    fn io_keeps_its_cause_and_message() {
        let err = InstallError::io("releases/", std::io::Error::other("disk on fire"));
        assert_eq!(err.kind.as_str(), "io");
        assert_eq!(err.to_string(), "releases/: disk on fire");
        assert!(std::error::Error::source(&err).is_some());
    }
}
