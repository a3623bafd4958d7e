//! Running the bundle's hooks (`pre_apply`, `post_apply`, `health_check`): working directory at the
//! site root, the documented `BUNDLE_*` environment, output sent to stderr (stdout belongs to
//! `--json`), and a time limit after which the hook is killed and counts as failed.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{InstallError, Result};
use crate::site::Site;

/// Default time a hook may run.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// A hook invocation, complete enough to be replayed from the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCall {
    /// `pre_apply`, `post_apply` or `health_check`.
    pub hook: String,
    pub script: PathBuf,
    pub release_dir: PathBuf,
    pub from: Option<String>,
    pub to: String,
    pub timeout_secs: u64,
}

pub(crate) fn run(site: &Site, call: &HookCall) -> Result<()> {
    run_with_env(site, call, &[])
}

/// [`run`] with more environment variables (a rehearsal adds `BUNDLE_REHEARSAL=1`).
pub(crate) fn run_with_env(site: &Site, call: &HookCall, extra: &[(&str, &str)]) -> Result<()> {
    let fail =
        |m: String| InstallError::failed("hook_failed", format!("hook {} ({}) {m}", call.hook, call.script.display()));
    let stderr = std::io::stderr();
    let out = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned().map_err(|e| fail(format!("cannot start: {e}")))?;
    let err = out.try_clone().map_err(|e| fail(format!("cannot start: {e}")))?;
    let mut child = crate::child::die_with_parent(&mut Command::new(&call.script))
        .current_dir(&site.root)
        .env("BUNDLE_ROOT", &site.root)
        .env("BUNDLE_RELEASE_DIR", &call.release_dir)
        .env("BUNDLE_FROM_VERSION", call.from.as_deref().unwrap_or(""))
        .env("BUNDLE_TO_VERSION", &call.to)
        .env("BUNDLE_HOOK", &call.hook)
        // Only a rehearsal says it is one, whatever the admin's shell has set.
        .env_remove("BUNDLE_REHEARSAL")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("could not be started: {e}")))?;
    match crate::child::wait_or_kill(&mut child, Duration::from_secs(call.timeout_secs)) {
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(fail(format!("failed with {status}"))),
        Ok(None) => Err(fail(format!("did not finish within {} s and was killed", call.timeout_secs))
            .with_hint("raise --hook-timeout if the hook is slow on purpose")),
        Err(e) => Err(fail(format!("could not be waited for: {e}"))),
    }
}
