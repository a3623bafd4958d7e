//! The on-disk journal of a run (`state/journal.json`) and the state machine that drives it.
//!
//! A run (apply or rollback) is planned as a list of [`Action`]s, written to the journal before the
//! first change. Each step is durably marked `started` before it does anything, so at any moment —
//! kill -9 and power loss included — the journal says how far the run got. The rule for an
//! interrupted run is simple: if its `commit` step had started, it is completed; otherwise every
//! started step is undone in reverse order. Undo actions are idempotent (they may have to run again
//! after a crash while undoing), and each needs only what the journal records, never the bundle.
//!
//! Nothing reads a `done` from disk that a `started` would not do as well (undo treats them alike,
//! the commit rule looks for `started` or `done`, and a committed run redoes only its `commit`), so
//! `done` is not written on its own: it goes to disk with the next step's `started` (one atomic
//! write per step), and the last step's is followed by the removal of the journal. The first
//! step's `started` goes out with the journal itself. A step's `millis` thus reach the journal
//! before the `commit` step, which copies them into the history record, begins.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bundle_core::version::SchemaVersion;
use serde::{Deserialize, Serialize};

use crate::db::{self, BackupRecord, Direction};
use crate::error::{InstallError, Result};
use crate::fs::durable;
use crate::report::Reporter;
use crate::site::Site;
use crate::transaction::hooks::{self, HookCall};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Started,
    Done,
    Undone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Forward,
    Undoing,
    Completing,
}

/// A database as the journal needs it to undo a step without the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRef {
    pub name: String,
    pub engine: String,
    pub path: String,
}

/// One step of a run, with what undoing it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Applies a bundle's key rotation statements: trusts `add`, retires `retire` (`.pub` texts).
    /// Undo: forget the added keys, trust the retired ones again.
    RotateKeys {
        add: Vec<String>,
        retire: Vec<String>,
    },
    /// Moves a kept `releases/<version>` aside to `releases/<aside>` so the version can be staged
    /// afresh. Undo: move it back. The commit deletes it.
    RetireRelease {
        version: String,
        aside: String,
    },
    /// Creates `releases/<version>/` (marked incomplete) holding the verified payload.
    /// Undo: remove the directory.
    StageRelease {
        version: String,
    },
    /// Makes sure the site's store (`store/wheels/<sha256>/`) holds an intact, sealed entry for
    /// every wheel of the release, building missing or damaged ones from the verified wheels.
    /// Undo: remove the entries built by run `run` (`created_by` in their `entry.json`).
    StoreWheels {
        version: String,
        run: String,
    },
    /// The next five happen inside the release directory; undoing `stage_release` covers them.
    /// `install_wheels` hardlinks the store's entries into the venv; `compile_bytecode` compiles
    /// only what has no `.pyc` yet (the store's entries are compiled when built).
    CreateVenv {
        version: String,
    },
    InstallWheels {
        version: String,
    },
    CompileBytecode {
        version: String,
    },
    WriteConfig {
        version: String,
    },
    MarkComplete {
        version: String,
    },
    /// Runs a hook. Undo: runs `undo` (e.g. starting the old release again after `pre_apply` stopped it).
    Hook {
        call: HookCall,
        undo: Option<HookCall>,
    },
    /// Takes `backups/<id>/` of every database and the config. Undo: remove it.
    Backup {
        id: String,
        dbs: Vec<DbRef>,
    },
    /// Records that an existing database without history is at `version` (`--baseline`).
    /// Undo: restore the database from backup `restore_from`.
    Baseline {
        db: DbRef,
        version: SchemaVersion,
        restore_from: String,
    },
    /// Runs one migration file. Undo: restore the database from backup `restore_from`.
    Migrate {
        db: DbRef,
        version: SchemaVersion,
        file: String,
        direction: Direction,
        restore_from: String,
    },
    /// Restores a database from backup `source` (rollback --restore-data). Undo: restore from `restore_from`.
    RestoreData {
        db: DbRef,
        source: String,
        restore_from: String,
    },
    /// Points `current` at `releases/<to>`. Undo: point it back at `from` (remove it when none).
    Swap {
        from: Option<String>,
        to: String,
    },
    /// The point of no return: records history, trims old releases and backups. Redone, never undone.
    Commit {
        history: serde_json::Value,
        keep_releases: u32,
        protect: Vec<String>,
    },
}

impl Action {
    /// Short stable name, used in messages, history and the test fault hooks.
    pub fn name(&self) -> String {
        match self {
            Action::RotateKeys { .. } => "rotate_keys".into(),
            Action::RetireRelease { .. } => "retire_release".into(),
            Action::StageRelease { .. } => "stage_release".into(),
            Action::StoreWheels { .. } => "store_wheels".into(),
            Action::CreateVenv { .. } => "create_venv".into(),
            Action::InstallWheels { .. } => "install_wheels".into(),
            Action::CompileBytecode { .. } => "compile_bytecode".into(),
            Action::WriteConfig { .. } => "write_config".into(),
            Action::MarkComplete { .. } => "mark_complete".into(),
            Action::Hook { call, .. } => call.hook.clone(),
            Action::Backup { .. } => "backup".into(),
            // A `.py` data script shares its version with the `.sql` before it; name it apart.
            Action::Migrate { db, version, direction, file, .. } if file.ends_with(".py") => {
                format!("migrate:{}:{}:{}-data", db.name, version, direction.as_str())
            }
            Action::Migrate { db, version, direction, .. } => {
                format!("migrate:{}:{}:{}", db.name, version, direction.as_str())
            }
            Action::RestoreData { db, .. } => format!("restore_data:{}", db.name),
            Action::Baseline { db, .. } => format!("baseline:{}", db.name),
            Action::Swap { .. } => "swap".into(),
            Action::Commit { .. } => "commit".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalStep {
    #[serde(flatten)]
    pub action: Action,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub command: String,
    pub from: Option<String>,
    pub to: String,
    pub started_at: String,
    pub pid: u32,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<JournalStep>,
}

impl Journal {
    pub fn new(id: String, command: &str, from: Option<String>, to: String, actions: Vec<Action>) -> Journal {
        Journal {
            id,
            command: command.into(),
            from,
            to,
            started_at: bundle_core::time::now_rfc3339(),
            pid: std::process::id(),
            phase: Phase::Forward,
            error: None,
            steps: actions
                .into_iter()
                .map(|action| JournalStep { action, status: Status::Pending, millis: None })
                .collect(),
        }
    }

    pub fn load(site: &Site) -> Result<Option<Journal>> {
        match std::fs::read(site.journal()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                InstallError::attention(
                    "journal_unreadable",
                    format!("{} is unreadable: {e}", site.journal().display()),
                )
                .with_hint(
                    "restore the site from backups/ by hand, then remove the journal; see bundle-spec/recovery.md",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InstallError::io(site.journal().display(), e)),
        }
    }

    fn persist(&self, site: &Site) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("journal serialises");
        durable::write_atomic(&site.journal(), &bytes)
            .map_err(|e| InstallError::io(format!("writing {}", site.journal().display()), e))
    }

    /// Whether the run passed its point of no return: its commit step started while going forward.
    /// A run already being undone stays undone, whatever its commit step says.
    pub fn committed(&self) -> bool {
        self.phase != Phase::Undoing
            && self.steps.iter().any(|s| {
                matches!(s.action, Action::Commit { .. }) && matches!(s.status, Status::Started | Status::Done)
            })
    }
}

/// Test-only fault injection, driven by the environment so integration tests can stop the real
/// binary at any step: `BUNDLE_INSTALL_TEST_FAIL=<step>` makes that step fail;
/// `BUNDLE_INSTALL_TEST_KILL=<step>:<before|after>` sends SIGKILL to this process at that point
/// (`undo:<step>:<before|after>` while undoing). Harmless in production: whoever sets the
/// environment of a root process can already kill it.
#[allow(unsafe_code)]
pub(crate) fn checkpoint(step: &str, when: &str) -> Result<()> {
    if let Ok(dir) = std::env::var("BUNDLE_INSTALL_TEST_PAUSE") {
        pause(Path::new(&dir), &format!("{step}:{when}"));
    }
    if let Ok(target) = std::env::var("BUNDLE_INSTALL_TEST_KILL") {
        if target == format!("{step}:{when}") {
            // SAFETY: kill(2) on our own pid; it does not return.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
    if when == "before" {
        if let Ok(target) = std::env::var("BUNDLE_INSTALL_TEST_FAIL") {
            if target == step {
                return Err(InstallError::failed(
                    "injected_failure",
                    format!("step {step} failed (injected by BUNDLE_INSTALL_TEST_FAIL)"),
                ));
            }
        }
    }
    Ok(())
}

/// `BUNDLE_INSTALL_TEST_PAUSE=<dir>`: at each step boundary, writes the point into `<dir>/at` and
/// waits until a test driver (a helper process that, say, swaps a file) creates `<dir>/go`.
fn pause(dir: &Path, point: &str) {
    let go = dir.join("go");
    if std::fs::write(dir.join(".at"), point).and_then(|()| std::fs::rename(dir.join(".at"), dir.join("at"))).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = std::fs::remove_file(&go);
}

/// Drives a journal: persists each transition before acting on it.
pub(crate) struct Runner<'a> {
    pub site: &'a Site,
    pub journal: Journal,
    pub reporter: &'a dyn Reporter,
    /// `begin` wrote the journal with its first step already `started`: running that step need
    /// not write it again.
    first_started: bool,
}

impl<'a> Runner<'a> {
    /// Writes the journal, its first step already marked `started` (the caller runs the steps in
    /// order from the first, and does nothing to the site before): from here on the run is
    /// recoverable. Also makes sure a little disk space is set aside (`state/.reserve`, kept between
    /// runs, given back when an undo finds the disk full) so the journal can always be written while
    /// undoing; it is only allocated when missing or short, before the journal, whose fsync of
    /// `state/` then also makes the new file's entry durable.
    pub(crate) fn begin(site: &'a Site, mut journal: Journal, reporter: &'a dyn Reporter) -> Result<Runner<'a>> {
        let made_reserve = ensure_reserve(site);
        if let Some(first) = journal.steps.first_mut() {
            first.status = Status::Started;
        }
        if let Err(e) = journal.persist(site) {
            // No run: leave state/ as it was (a first install that fails here removes it).
            if made_reserve {
                let _ = std::fs::remove_file(reserve_path(site));
            }
            return Err(e);
        }
        let first_started = !journal.steps.is_empty();
        Ok(Runner { site, journal, reporter, first_started })
    }

    pub(crate) fn resume(site: &'a Site, journal: Journal, reporter: &'a dyn Reporter) -> Runner<'a> {
        Runner { site, journal, reporter, first_started: false }
    }

    /// Runs step `i` with `work`. Its `started` is on disk before `work` begins, in the same write
    /// as the previous step's `done` (or in `begin`'s, for the first step); its own `done` and
    /// `millis` stay in memory until the next step's write, or [`Runner::finish`] (see the module
    /// documentation for why that is enough).
    pub(crate) fn run(&mut self, i: usize, work: impl FnOnce(&Action) -> Result<()>) -> Result<()> {
        let name = self.journal.steps[i].action.name();
        let before = self.journal.steps[i].status;
        self.journal.steps[i].status = Status::Started;
        let on_disk = std::mem::take(&mut self.first_started) && i == 0;
        if !on_disk {
            if let Err(e) = self.journal.persist(self.site) {
                // The step's work never began: the undo that follows must not undo it (a hook's
                // undo would run the old release's post_apply for a pre_apply that never ran).
                self.journal.steps[i].status = before;
                return Err(e);
            }
        }
        let t = Instant::now();
        checkpoint(&name, "before")?;
        work(&self.journal.steps[i].action.clone())?;
        checkpoint(&name, "after")?;
        self.journal.steps[i].status = Status::Done;
        self.journal.steps[i].millis = Some(t.elapsed().as_millis() as u64);
        Ok(())
    }

    /// Undoes every started step in reverse order after `cause`, then removes the journal. Returns
    /// the error to report: `cause` (exit 1) when undo succeeded, an attention error (exit 5) if not.
    /// Also returns the journal as it ended, for the history record.
    pub(crate) fn undo(mut self, cause: InstallError) -> (InstallError, Journal) {
        self.journal.error.get_or_insert_with(|| cause.message.clone());
        let err = match self.undo_all() {
            Ok(()) => {
                let mut cause = cause;
                if cause.outcome != crate::error::Outcome::Attention {
                    let back = self
                        .journal
                        .from
                        .clone()
                        .map(|f| format!("the site is back on {f}"))
                        .unwrap_or_else(|| "the site is back to empty".into());
                    cause.message = format!("{}; {back}", cause.message);
                }
                cause
            }
            // Whatever stopped the undo (a failed restore, a full disk while writing the journal),
            // the site is now between two states: only `recover` may touch it.
            Err(e) if e.outcome == crate::error::Outcome::Attention => e,
            Err(e) => InstallError::attention(
                "undo_failed",
                format!("could not finish undoing after `{}`: {}", cause.message, e.message),
            )
            .with_hint(format!("fix the cause, then run `bundle-install recover --root {}`", self.site.root.display())),
        };
        (err, self.journal)
    }

    /// Undoes what was started, newest first. Safe to call again after a crash part-way.
    pub(crate) fn undo_all(&mut self) -> Result<()> {
        // Databases another node carried further are left as they are (see `moved_on`).
        let mut restored: Vec<String> = self.moved_on()?;
        // Undoing must be possible on a full disk (often the very reason for the failure). Before
        // the swap the staged release is nobody's and the largest thing the run wrote: it goes first.
        let swapped = self
            .journal
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Swap { .. }) && matches!(s.status, Status::Started | Status::Done));
        if !swapped {
            for s in &self.journal.steps {
                if let (Action::StageRelease { version }, Status::Started | Status::Done) = (&s.action, s.status) {
                    let _ = durable::remove_tree(&self.site.release_dir(version));
                }
            }
        }
        self.journal.phase = Phase::Undoing;
        if self.journal.persist(self.site).is_err() {
            let _ = std::fs::remove_file(reserve_path(self.site));
            self.journal.persist(self.site)?;
        }
        for i in (0..self.journal.steps.len()).rev() {
            if !matches!(self.journal.steps[i].status, Status::Started | Status::Done) {
                continue;
            }
            let action = self.journal.steps[i].action.clone();
            let name = action.name();
            match &action {
                Action::Hook { .. } => self.reporter.step_with_output(&format!("undoing {name}")),
                _ => self.reporter.step(&format!("undoing {name}")),
            }
            checkpoint(&format!("undo:{name}"), "before")?;
            undo_action(self.site, &action, &mut restored, self.reporter).map_err(|e| {
                InstallError::attention(
                    "undo_failed",
                    format!(
                        "could not undo step {name} after `{}`: {}",
                        self.journal.error.clone().unwrap_or_default(),
                        e.message
                    ),
                )
                .with_hint(format!(
                    "fix the cause, then run `bundle-install recover --root {}`",
                    self.site.root.display()
                ))
            })?;
            checkpoint(&format!("undo:{name}"), "after")?;
            self.journal.steps[i].status = Status::Undone;
            if self.journal.persist(self.site).is_err() {
                let _ = std::fs::remove_file(reserve_path(self.site));
                self.journal.persist(self.site)?;
            }
        }
        self.finish()
    }

    /// A server database is shared by several nodes. If this run died and another node then carried
    /// the schema further than this run ever took it, restoring this run's backup would throw that
    /// node's work away underneath it. Such databases are not restored: the undo puts this node's
    /// code back and the admin brings the node up to the database with `apply` (`check` says so).
    fn moved_on(&self) -> Result<Vec<String>> {
        let mut reached: Vec<(DbRef, SchemaVersion)> = Vec::new();
        for step in &self.journal.steps {
            if let Action::Migrate { db, version, .. } = &step.action {
                if db.engine != "sqlite" && matches!(step.status, Status::Started | Status::Done) {
                    match reached.iter_mut().find(|(d, _)| d.name == db.name) {
                        Some((_, v)) => *v = (*v).max(*version),
                        None => reached.push((db.clone(), *version)),
                    }
                }
            }
        }
        let mut leave = Vec::new();
        for (db, ours) in reached {
            let mut engine = open_db(self.site, &db)?;
            let live = engine.inspect()?.version();
            engine.close()?;
            if let Some(live) = live.filter(|l| *l > ours) {
                self.reporter.warn(&format!(
                    "database `{}` is at {live}, beyond {ours} where this interrupted run left it: another node migrated it since, so it is left as it is; run `bundle-install apply` with the same bundle to bring this node up to it",
                    db.name
                ));
                leave.push(db.name);
            }
        }
        Ok(leave)
    }

    /// Removes the journal: the run is over. The reserve stays for the next run, unless this was a
    /// first install that ended undone: then there is no site to protect, and state/ must be
    /// removable with the rest of the empty layout.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if self.journal.phase == Phase::Undoing && self.journal.from.is_none() {
            let _ = std::fs::remove_file(reserve_path(self.site));
        }
        match std::fs::remove_file(self.site.journal()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(InstallError::io("removing the journal", e)),
        }
        durable::sync_dir(&self.site.state()).map_err(|e| InstallError::io("syncing state/", e))
    }
}

/// Takes the run lock of every server database the journal touches (for `recover`, which may
/// restore them; see `db::lock_run`).
pub(crate) fn lock_dbs(site: &Site, journal: &Journal) -> Result<Vec<db::RunLock>> {
    let mut dbs: Vec<&DbRef> = Vec::new();
    for s in &journal.steps {
        match &s.action {
            Action::Backup { dbs: d, .. } => dbs.extend(d.iter()),
            Action::Migrate { db, .. } | Action::RestoreData { db, .. } => dbs.push(db),
            _ => {}
        }
    }
    Ok(db::lock_run(&site.root, dbs.iter().map(|d| (d.name.as_str(), d.engine.as_str(), d.path.as_str())))?)
}

/// Space held back for writing the journal while undoing on a full disk.
const RESERVE_BYTES: u64 = 1 << 20;

fn reserve_path(site: &Site) -> std::path::PathBuf {
    site.state().join(".reserve")
}

/// Allocates `state/.reserve` if it is missing or short; true if it was made now. Best effort: a
/// disk too full for it fails later, at the journal, if at all.
fn ensure_reserve(site: &Site) -> bool {
    matches!(durable::ensure_allocated(&reserve_path(site), RESERVE_BYTES), Ok(true))
}

fn open_db(site: &Site, db: &DbRef) -> Result<Box<dyn db::Engine>> {
    Ok(db::open(&db.name, &db.engine, &site.root, &db.path)?)
}

/// Reads `backups/<id>/record.json`.
pub(crate) fn read_backup_records(site: &Site, id: &str) -> Result<Vec<BackupRecord>> {
    let path = site.backups().join(id).join("record.json");
    let bytes = std::fs::read(&path).map_err(|e| InstallError::io(path.display(), e))?;
    #[derive(Deserialize)]
    struct Record {
        databases: Vec<BackupRecord>,
    }
    let r: Record = serde_json::from_slice(&bytes)
        .map_err(|e| InstallError::failed("backup_record", format!("{}: {e}", path.display())))?;
    Ok(r.databases)
}

/// Restores one database from a backup directory.
pub(crate) fn restore_db(site: &Site, db: &DbRef, backup_id: &str) -> Result<()> {
    let records = read_backup_records(site, backup_id)?;
    let record = records.iter().find(|r| r.db == db.name).ok_or_else(|| {
        InstallError::failed("backup_missing_db", format!("backup {backup_id} has no copy of database `{}`", db.name))
    })?;
    let mut engine = open_db(site, db)?;
    engine.restore(record, &site.backups().join(backup_id))?;
    engine.close()?;
    Ok(())
}

fn undo_action(site: &Site, action: &Action, restored: &mut Vec<String>, reporter: &dyn Reporter) -> Result<()> {
    match action {
        Action::RotateKeys { add, retire } => {
            for k in parse_keys(add)? {
                crate::site::trust::remove_rotated(site, &k)?;
            }
            for k in parse_keys(retire)? {
                crate::site::trust::unretire(site, &k)?;
            }
            Ok(())
        }
        Action::StageRelease { version } => durable::remove_tree(&site.release_dir(version))
            .map_err(|e| InstallError::io(format!("removing releases/{version}"), e)),
        Action::StoreWheels { run, .. } => crate::python::store::remove_run(site, run),
        Action::RetireRelease { version, aside } => {
            let from = site.releases().join(aside);
            if from.symlink_metadata().is_ok() {
                durable::remove_tree(&site.release_dir(version))
                    .map_err(|e| InstallError::io(format!("removing releases/{version}"), e))?;
                std::fs::rename(&from, site.release_dir(version))
                    .map_err(|e| InstallError::io(format!("restoring releases/{version}"), e))?;
                durable::sync_dir(&site.releases()).map_err(|e| InstallError::io("releases/", e))?;
            }
            Ok(())
        }
        Action::CreateVenv { .. }
        | Action::InstallWheels { .. }
        | Action::CompileBytecode { .. }
        | Action::WriteConfig { .. }
        | Action::MarkComplete { .. } => Ok(()),
        Action::Hook { undo, .. } => {
            if let Some(call) = undo {
                // The release the undo hook belongs to may already be gone (it was the one being
                // installed); then there is nothing to stop or start.
                if call.script.exists() {
                    if let Err(e) = hooks::run(site, call) {
                        reporter.warn(&format!("while undoing: {}", e.message));
                    }
                }
            }
            Ok(())
        }
        Action::Backup { id, .. } => durable::remove_tree(&site.backups().join(id))
            .map_err(|e| InstallError::io(format!("removing backups/{id}"), e)),
        Action::Migrate { db, restore_from, .. }
        | Action::RestoreData { db, restore_from, .. }
        | Action::Baseline { db, restore_from, .. } => {
            // Several steps of one database restore the same backup; once is enough.
            if restored.contains(&db.name) {
                return Ok(());
            }
            reporter.step(&format!("restoring database `{}` from backups/{restore_from}", db.name));
            restore_db(site, db, restore_from)?;
            restored.push(db.name.clone());
            Ok(())
        }
        Action::Swap { from, .. } => {
            let link = site.current_link();
            match from {
                Some(v) => durable::swap_symlink(&link, &PathBuf::from("releases").join(v)),
                None => durable::remove_symlink(&link),
            }
            .map_err(|e| InstallError::io("restoring `current`", e))
        }
        Action::Commit { .. } => Ok(()),
    }
}

/// The `.pub` texts of a [`Action::RotateKeys`].
pub(crate) fn parse_keys(texts: &[String]) -> Result<Vec<bundle_core::signature::PublicKey>> {
    texts
        .iter()
        .map(|t| {
            bundle_core::signature::PublicKey::from_minisign(t)
                .map_err(|e| InstallError::failed("journal", format!("a key in the journal is damaged: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Silent;
    use std::os::unix::fs::MetadataExt;

    fn site() -> (tempfile::TempDir, Site) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("state")).unwrap();
        let site = Site::new(d.path());
        (d, site)
    }

    fn on_disk(site: &Site) -> Vec<Status> {
        Journal::load(site).unwrap().expect("a journal on disk").steps.iter().map(|s| s.status).collect()
    }

    fn actions() -> Vec<Action> {
        vec![
            Action::StageRelease { version: "2.0.0".into() },
            Action::Swap { from: Some("1.0.0".into()), to: "2.0.0".into() },
            Action::Commit { history: serde_json::json!({}), keep_releases: 2, protect: vec![] },
        ]
    }

    /// Each step's `started` is on disk before its work, carrying the previous step's `done` and
    /// millis; a `done` is never the only news of a write.
    #[test]
    fn started_is_durable_before_work_and_carries_the_previous_done() {
        let (_d, site) = site();
        let journal = Journal::new("t".into(), "apply", Some("1.0.0".into()), "2.0.0".into(), actions());
        let mut r = Runner::begin(&site, journal, &Silent).unwrap();
        assert_eq!(on_disk(&site), [Status::Started, Status::Pending, Status::Pending]);
        r.run(0, |_| {
            assert_eq!(on_disk(&site), [Status::Started, Status::Pending, Status::Pending]);
            Ok(())
        })
        .unwrap();
        r.run(1, |_| {
            assert_eq!(on_disk(&site), [Status::Done, Status::Started, Status::Pending]);
            Ok(())
        })
        .unwrap();
        r.run(2, |_| {
            let j = Journal::load(&site).unwrap().unwrap();
            assert_eq!(
                j.steps.iter().map(|s| s.status).collect::<Vec<_>>(),
                [Status::Done, Status::Done, Status::Started]
            );
            assert!(j.steps[0].millis.is_some() && j.steps[1].millis.is_some() && j.steps[2].millis.is_none());
            assert!(j.committed());
            Ok(())
        })
        .unwrap();
        r.finish().unwrap();
        assert!(Journal::load(&site).unwrap().is_none());
    }

    /// A failed step is undone from what is in memory, whatever reached the disk.
    #[test]
    fn failure_undoes_every_step_run_so_far() {
        let (_d, site) = site();
        std::fs::create_dir_all(site.release_dir("2.0.0")).unwrap();
        let journal = Journal::new("t".into(), "apply", Some("1.0.0".into()), "2.0.0".into(), actions());
        let mut r = Runner::begin(&site, journal, &Silent).unwrap();
        r.run(0, |_| Ok(())).unwrap();
        let e = r.run(1, |_| Err(InstallError::failed("x", "x"))).unwrap_err();
        assert!(!r.journal.committed());
        let (_, j) = r.undo(e);
        assert_eq!(
            j.steps.iter().map(|s| s.status).collect::<Vec<_>>(),
            [Status::Undone, Status::Undone, Status::Pending]
        );
        assert!(!site.release_dir("2.0.0").exists());
        assert!(Journal::load(&site).unwrap().is_none());
    }

    /// A step whose `started` could not be written never ran: the undo leaves it alone.
    #[test]
    fn a_step_whose_start_was_not_written_is_not_undone() {
        let (_d, site) = site();
        std::fs::create_dir_all(site.release_dir("2.0.0")).unwrap();
        let journal = Journal::new("t".into(), "apply", Some("1.0.0".into()), "2.0.0".into(), actions());
        let mut r = Runner::begin(&site, journal, &Silent).unwrap();
        r.run(0, |_| Ok(())).unwrap();
        // The journal cannot be replaced (a non-empty directory in its place): the next write fails.
        let blocker = site.journal();
        let aside = site.state().join("journal.aside");
        std::fs::rename(&blocker, &aside).unwrap();
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("x"), b"").unwrap();
        let mut ran = false;
        let e = r
            .run(1, |_| {
                ran = true;
                Ok(())
            })
            .unwrap_err();
        assert!(!ran);
        assert_eq!(
            r.journal.steps.iter().map(|s| s.status).collect::<Vec<_>>(),
            [Status::Done, Status::Pending, Status::Pending]
        );
        std::fs::remove_dir_all(&blocker).unwrap();
        std::fs::rename(&aside, &blocker).unwrap();
        let (_, j) = r.undo(e);
        assert_eq!(
            j.steps.iter().map(|s| s.status).collect::<Vec<_>>(),
            [Status::Undone, Status::Pending, Status::Pending]
        );
    }

    fn allocated(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
    }

    /// The reserve is made once and kept between runs; an undo that needs the space frees it, the
    /// next run makes it again; an undone first install takes it away with the empty layout.
    #[test]
    fn reserve_is_kept_between_runs() {
        let (_d, site) = site();
        let reserve = reserve_path(&site);
        let mut r = Runner::begin(
            &site,
            Journal::new("a".into(), "apply", Some("1.0.0".into()), "2.0.0".into(), actions()),
            &Silent,
        )
        .unwrap();
        assert!(allocated(&reserve) >= RESERVE_BYTES);
        let ino = std::fs::metadata(&reserve).unwrap().ino();
        for i in 0..3 {
            r.run(i, |_| Ok(())).unwrap();
        }
        r.finish().unwrap();
        assert!(allocated(&reserve) >= RESERVE_BYTES, "a finished run keeps the reserve");
        let mut r = Runner::begin(
            &site,
            Journal::new("b".into(), "apply", Some("2.0.0".into()), "3.0.0".into(), actions()),
            &Silent,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&reserve).unwrap().ino(), ino, "an existing reserve is reused");
        r.finish().unwrap();

        std::fs::remove_file(&reserve).unwrap(); // as an undo on a full disk does
        let mut r = Runner::begin(
            &site,
            Journal::new("c".into(), "apply", Some("2.0.0".into()), "3.0.0".into(), actions()),
            &Silent,
        )
        .unwrap();
        assert!(allocated(&reserve) >= RESERVE_BYTES, "the next run makes it again");
        r.finish().unwrap();

        std::fs::remove_file(&reserve).unwrap();
        let mut r =
            Runner::begin(&site, Journal::new("d".into(), "apply", None, "1.0.0".into(), actions()), &Silent).unwrap();
        assert!(reserve.exists());
        let e = r.run(0, |_| Err(InstallError::failed("x", "x"))).unwrap_err();
        let _ = r.undo(e);
        assert!(!reserve.exists(), "an undone first install leaves no reserve");
    }
}
