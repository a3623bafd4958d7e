//! `rollback`: puts `current` back on a kept release, whose config is used as it was left.
//! Databases follow the compatibility rule: on the same major the rollback is code-only and keeps
//! every row; across a major, the shipped down scripts run in reverse order, or — only with
//! `--restore-data` — the backup taken before the upgrade is restored, after reporting per table
//! what that loses.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::db::{self, DbError, PlannedStep, TableDiff};
use crate::error::{ErrorKind, InstallError, Outcome, Result};
use crate::fs::durable;
use crate::report::Reporter;
use crate::site::Site;
use crate::transaction::hooks::{self, HookCall};
use crate::transaction::journal::{self, Action, DbRef, Journal, Runner};
use crate::transaction::plan::db_steps;

#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    pub to: Option<String>,
    pub restore_data: bool,
    /// Confirms a data restore after its loss report (without it, `--restore-data` only reports).
    pub yes: bool,
    pub hook_timeout_secs: u64,
}

/// What happens to one database.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum DbRollback {
    /// Same major: nothing runs, data stays.
    CodeOnly { db: String },
    /// Down scripts, newest first.
    Down { db: String, steps: Vec<String> },
    /// Restore of the pre-upgrade backup; `lost` is what it throws away.
    Restore { db: String, backup: String, lost: Vec<TableDiff> },
}

#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    pub from: String,
    pub to: String,
    pub databases: Vec<DbRollback>,
}

/// Picks the target: `--to`, else the release the current one replaced, else the newest other one.
fn target(site: &Site, current: &str, to: Option<&str>) -> Result<String> {
    let kept = site.releases_installed().map_err(|e| InstallError::io("listing releases/", e))?;
    let pick = match to {
        Some(t) => Some(t.to_string()),
        None => site
            .release_info(current)
            .ok()
            .and_then(|i| i.from)
            .filter(|f| kept.iter().any(|k| &k.version == f))
            .or_else(|| kept.iter().rev().find(|k| k.version != current).map(|k| k.version.clone())),
    };
    let Some(t) = pick else {
        return Err(InstallError::refused(
            ErrorKind::NoPreviousRelease,
            "no other release is kept on this site to roll back to",
        ));
    };
    if t == current {
        return Err(InstallError::refused(ErrorKind::AlreadyCurrent, format!("{t} is already the current release")));
    }
    if !kept.iter().any(|k| k.version == t) {
        return Err(InstallError::refused(
            ErrorKind::ReleaseNotKept,
            format!("release {t} is not kept under releases/"),
        )
        .with_hint(format!("kept: {}", kept.iter().map(|k| k.version.as_str()).collect::<Vec<_>>().join(", "))));
    }
    Ok(t)
}

/// The newest backup taken while `release` was running (before upgrading away from it).
fn backup_taken_on(site: &Site, release: &str) -> Option<String> {
    let mut ids: Vec<String> = std::fs::read_dir(site.backups())
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids.into_iter().rev().find(|id| {
        std::fs::read(site.backups().join(id).join("record.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|r| {
                r["release"].as_str() == Some(release)
                    && r["purpose"].as_str().is_some_and(|p| p.starts_with("upgrade"))
            })
    })
}

pub fn rollback(site: &Site, opts: &RollbackOptions, reporter: &dyn Reporter) -> Result<RolledBack> {
    let current = site
        .current_version()
        .map_err(|e| InstallError::io("reading `current`", e))?
        .ok_or_else(|| InstallError::refused(ErrorKind::NotInstalled, "nothing is installed on this site"))?;
    let to = target(site, &current, opts.to.as_deref())?;
    let cur_m = site
        .release_manifest(&current)
        .map_err(|e| InstallError::attention(ErrorKind::CurrentReleaseUnreadable, e.to_string()).with_source(e))?;
    let to_m = site.release_manifest(&to).map_err(|e| {
        InstallError::failed(ErrorKind::ReleaseUnreadable, format!("releases/{to}: {e}")).with_source(e)
    })?;
    // Server databases: no other node migrates while this rollback decides and runs.
    let _db_locks = crate::transaction::journal::lock_declared(site, &cur_m.databases)?;

    let rb = Rollback { site, opts, reporter, current, to, cur_m, to_m };
    let decided = rb.decide()?;
    rb.confirm_restores(&decided.decisions)?;
    let id = format!("{}-rollback-{}", bundle_core::time::now_compact_millis(), rb.to);
    let actions = rb.actions(&decided, &id);
    rb.run(id, actions, &decided.downs)?;
    Ok(RolledBack { from: rb.current, to: rb.to, databases: decided.decisions })
}

/// A rollback from the current release to a kept one.
struct Rollback<'a> {
    site: &'a Site,
    opts: &'a RollbackOptions,
    reporter: &'a dyn Reporter,
    /// The release `current` points at now.
    current: String,
    /// The kept release `current` goes back to.
    to: String,
    /// The current release's manifest.
    cur_m: bundle_core::manifest::Manifest,
    /// The target release's manifest.
    to_m: bundle_core::manifest::Manifest,
}

/// What a rollback does to the databases, decided before anything changes.
#[derive(Default)]
struct Decided {
    /// Per database, as reported and recorded in the history.
    decisions: Vec<DbRollback>,
    /// The down steps to run, per database.
    downs: Vec<(DbRef, Vec<PlannedStep>)>,
    /// The backup to restore, per database.
    restores: Vec<(DbRef, String)>,
}

impl Rollback<'_> {
    /// Decides per database (code only, down scripts, or a restore), refusing before anything
    /// changes when one would break the data.
    fn decide(&self) -> Result<Decided> {
        let (site, to) = (self.site, &self.to);
        let cur_bundle = site.release_dir(&self.current).join("bundle");
        let mut decided = Decided::default();
        let mut refusals = Vec::new();
        for d in &self.cur_m.databases {
            let Some(target_db) = self.to_m.database(&d.name) else { continue };
            let dbr = DbRef::declared(d)?;
            let mut engine = db::open(&d.name, dbr.engine, &site.root, &d.path)?;
            let state = engine.inspect()?;
            let steps = db_steps(&self.cur_m, d, &cur_bundle);
            match db::plan_down(&d.name, &steps, &state, target_db.schema) {
                Ok(p) if p.is_empty() => decided.decisions.push(DbRollback::CodeOnly { db: d.name.clone() }),
                Ok(p) => {
                    engine.preflight()?;
                    decided.decisions.push(DbRollback::Down {
                        db: d.name.clone(),
                        steps: p.iter().map(|s| s.file.file.clone()).collect(),
                    });
                    decided.downs.push((dbr, p));
                }
                Err(DbError::NeedsRestore { missing, .. }) => {
                    let backup = backup_taken_on(site, to);
                    match (self.opts.restore_data, backup) {
                        (false, _) => refusals.push(format!(
                            "database `{}` is at a newer major schema than {to} needs and {} no down script",
                            d.name,
                            missing.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
                                + if missing.len() == 1 { " has" } else { " have" }
                        )),
                        (true, None) => {
                            return Err(InstallError::refused(
                                ErrorKind::NoBackup,
                                format!("no backup of database `{}` taken while {to} was running is kept", d.name),
                            ))
                        }
                        (true, Some(b)) => {
                            engine.preflight()?;
                            let live_version = state.version().unwrap_or(bundle_core::version::SchemaVersion::CLEAN);
                            let lost = self.restore_loss(d, &steps, &b, live_version, &mut *engine)?;
                            decided.decisions.push(DbRollback::Restore { db: d.name.clone(), backup: b.clone(), lost });
                            decided.restores.push((dbr, b));
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
            engine.close()?;
        }
        if !refusals.is_empty() {
            return Err(InstallError::refused(ErrorKind::NeedsRestore, format!("rolling back to {to} would break the data: {}", refusals.join("; ")))
                .with_hint(format!("`bundle-install rollback --root {} --to {to} --restore-data` restores the pre-upgrade backup; when rows written since would be lost it only reports them and asks for --yes", site.root.display())));
        }
        Ok(decided)
    }

    /// What restoring backup `b` of database `d` loses: the rows written since the upgrade, or
    /// (with a warning) the raw difference when the upgrade cannot be replayed on a copy.
    fn restore_loss(
        &self,
        d: &bundle_core::manifest::Database,
        steps: &[db::Step],
        b: &str,
        live_version: bundle_core::version::SchemaVersion,
        engine: &mut dyn db::Engine,
    ) -> Result<Vec<TableDiff>> {
        let site = self.site;
        let records = journal::read_backup_records(site, b)?;
        let record = records.iter().find(|r| r.db == d.name).ok_or_else(|| {
            InstallError::refused(ErrorKind::NoBackup, format!("backup {b} has no copy of `{}`", d.name))
        })?;
        match rows_written_since(site, d, steps, record, b, live_version, &self.current, engine) {
            Ok(l) => Ok(l),
            Err(e) => {
                self.reporter.warn(&format!("database `{}`: could not replay the upgrade on a copy of the backup ({}); reporting the raw difference, which also counts rows the migrations changed", d.name, e.message));
                Ok(engine.diff_since(record, &site.backups().join(b))?)
            }
        }
    }

    /// Reports what each restore loses; refuses, unless `--yes`, when any rows would go.
    fn confirm_restores(&self, decisions: &[DbRollback]) -> Result<()> {
        let mut losses = Vec::new();
        for d in decisions {
            if let DbRollback::Restore { db, backup, lost } = d {
                let line = format!("database `{db}`: restoring backups/{backup} loses: {}", describe_loss(lost));
                self.reporter.warn(&line);
                losses.push(line);
            }
        }
        let loses_rows = decisions.iter().any(
            |d| matches!(d, DbRollback::Restore { lost, .. } if lost.iter().any(|t| t.added + t.changed + t.removed > 0)),
        );
        if loses_rows && !self.opts.yes {
            return Err(InstallError::refused(ErrorKind::ConfirmRestore, format!("restoring data would lose rows written since the upgrade: {}", losses.join("; ")))
                .with_hint(format!("nothing changed; add --yes to restore anyway: `bundle-install rollback --root {} --to {} --restore-data --yes`", self.site.root.display(), self.to)));
        }
        Ok(())
    }

    /// The journal of the rollback: stop, back up, down steps or restores, swap, start, check,
    /// commit.
    fn actions(&self, decided: &Decided, id: &str) -> Vec<Action> {
        let (site, current, to, cur_m, to_m) = (self.site, &self.current, &self.to, &self.cur_m, &self.to_m);
        let hook = |name: &str,
                    m: &bundle_core::manifest::Manifest,
                    version: &str,
                    script: &Option<String>,
                    from: &str,
                    to: &str| {
            let dir = site.release_dir(version);
            script
                .as_ref()
                .map(|s| HookCall {
                    hook: name.into(),
                    script: dir.join("bundle").join(s),
                    release_dir: dir.clone(),
                    from: Some(from.into()),
                    to: to.into(),
                    timeout_secs: self.opts.hook_timeout_secs,
                })
                .filter(|_| m.app == cur_m.app)
        };
        let mut actions = Vec::new();
        if let Some(call) = hook("pre_apply", cur_m, current, &cur_m.hooks.pre_apply, current, to) {
            actions.push(Action::Hook {
                call,
                undo: hook("post_apply", cur_m, current, &cur_m.hooks.post_apply, to, current),
            });
        }
        let touching: Vec<DbRef> = decided
            .downs
            .iter()
            .map(|(d, _)| d.clone())
            .chain(decided.restores.iter().map(|(d, _)| d.clone()))
            .collect();
        if !touching.is_empty() {
            actions.push(Action::Backup { id: id.to_string(), dbs: touching });
        }
        for (dbr, steps) in &decided.downs {
            for s in steps {
                actions.push(Action::Migrate {
                    db: dbr.clone(),
                    version: s.version,
                    file: s.file.file.clone(),
                    direction: s.direction,
                    restore_from: id.to_string(),
                });
            }
        }
        for (dbr, b) in &decided.restores {
            actions.push(Action::RestoreData { db: dbr.clone(), source: b.clone(), restore_from: id.to_string() });
        }
        actions.push(Action::Swap { from: Some(current.clone()), to: to.clone() });
        if let Some(call) = hook("post_apply", to_m, to, &to_m.hooks.post_apply, current, to) {
            actions.push(Action::Hook { call, undo: hook("pre_apply", to_m, to, &to_m.hooks.pre_apply, to, current) });
        }
        if let Some(call) = hook("health_check", to_m, to, &to_m.hooks.health_check, current, to) {
            actions.push(Action::Hook { call, undo: None });
        }
        let history = json!({ "id": id, "command": "rollback", "app": cur_m.app, "from": current, "to": to, "databases": decided.decisions });
        actions.push(Action::Commit { history, keep_releases: u32::MAX, protect: vec![to.clone(), current.clone()] });
        actions
    }

    /// Runs the journal `id` of `actions`, undoing every step done when one fails before the
    /// commit; after it, the run is left for `recover` to finish.
    fn run(&self, id: String, actions: Vec<Action>, downs: &[(DbRef, Vec<PlannedStep>)]) -> Result<()> {
        let (site, reporter, current) = (self.site, self.reporter, &self.current);
        let mut runner = Runner::begin(
            site,
            Journal::new(id, "rollback", Some(current.clone()), self.to.clone(), actions),
            reporter,
        )?;
        for i in 0..runner.journal.steps.len() {
            let name = runner.journal.steps[i].action.name();
            if matches!(runner.journal.steps[i].action, Action::Hook { .. }) {
                reporter.step_with_output(&format!("rollback: {name}"));
            } else {
                reporter.step(&format!("rollback: {name}"));
            }
            let r = runner.run(i, |a| forward(site, a, downs, current, reporter));
            if let Err(e) = r {
                let e = InstallError { message: format!("{name}: {}", e.message), ..e };
                if runner.journal.committed() {
                    return Err(InstallError::attention(
                        ErrorKind::CommitFailed,
                        format!("the rollback is in place but finishing failed: {}", e.message),
                    )
                    .with_hint(format!(
                        "fix the cause, then run `bundle-install recover --root {}` to finish",
                        site.root.display()
                    )));
                }
                let (err, journal) = runner.undo(e);
                crate::site::history::append_failure(site, &journal, &err);
                return Err(err);
            }
        }
        runner.finish()?;
        Ok(())
    }
}

fn forward(
    site: &Site,
    action: &Action,
    downs: &[(DbRef, Vec<PlannedStep>)],
    current: &str,
    reporter: &dyn Reporter,
) -> Result<()> {
    match action {
        Action::Hook { call, .. } => hooks::run(site, call),
        Action::Backup { id, dbs } => {
            crate::transaction::backup::take(site, id, dbs, Some(current), "rollback safety copy")
        }
        Action::Migrate { db: dbr, version, file, .. } => {
            let step = downs
                .iter()
                .find(|(d, _)| d.name == dbr.name)
                .and_then(|(_, s)| s.iter().find(|s| s.version == *version && s.file.file == *file))
                .expect("planned down step");
            let mut engine = db::open(&dbr.name, dbr.engine, &site.root, &dbr.path)?;
            let python = site.release_dir(current).join("venv").join("bin").join("python");
            let r = engine.apply(step, current, Some(&python));
            engine.close()?;
            r.map_err(|e| InstallError::caused_by(Outcome::Failed, e))
        }
        Action::RestoreData { db, source, .. } => journal::restore_db(site, db, source),
        Action::Swap { to, .. } => durable::swap_symlink(&site.current_link(), &Path::new("releases").join(to))
            .map_err(|e| InstallError::io("switching `current`", e)),
        Action::Commit { history, keep_releases, protect } => {
            crate::transaction::apply::commit(site, history, *keep_releases, protect, reporter)
        }
        other => Err(InstallError::failed(ErrorKind::BadJournal, format!("rollback cannot run step {}", other.name()))),
    }
}

/// What restoring `record` loses: the rows written since the upgrade. A raw diff of live data against
/// the backup would also count every row the migrations themselves reshaped (a renamed table looks
/// like all rows removed and added), so the backup is first copied aside and migrated forward with
/// the same steps to the live version; only what differs from that was written by the application.
#[allow(clippy::too_many_arguments)]
fn rows_written_since(
    site: &Site,
    d: &bundle_core::manifest::Database,
    steps: &[db::Step],
    record: &db::BackupRecord,
    backup_id: &str,
    live_version: bundle_core::version::SchemaVersion,
    current: &str,
    live: &mut dyn db::Engine,
) -> Result<Vec<TableDiff>> {
    let scratch = site.staging().join(format!("replay-{}-{}", d.name, std::process::id()));
    durable::remove_tree(&scratch).map_err(|e| InstallError::io(scratch.display(), e))?;
    std::fs::create_dir_all(&scratch).map_err(|e| InstallError::io(scratch.display(), e))?;
    let result = (|| {
        // A server database is copied into a scratch database on its server: opening the same name at
        // another root would reach the live database (its connection comes from the environment).
        let mut copy = if live.engine() == db::EngineKind::Sqlite {
            db::open(&d.name, db::EngineKind::Sqlite, &scratch.join("root"), &d.path)?
        } else {
            live.scratch()?
        };
        copy.restore(record, &site.backups().join(backup_id))?;
        let state = copy.inspect()?;
        let plan = db::plan_up(&d.name, steps, &state, live_version)?;
        let python = site.release_dir(current).join("venv").join("bin").join("python");
        for s in &plan {
            copy.apply(s, current, Some(&python))?;
        }
        let replayed = scratch.join("replayed");
        std::fs::create_dir_all(&replayed).map_err(|e| InstallError::io(replayed.display(), e))?;
        let replayed_record = copy.backup(&replayed)?;
        copy.close()?;
        Ok(live.diff_since(&replayed_record, &replayed)?)
    })();
    let _ = durable::remove_tree(&scratch);
    result
}

/// "table notes: 3 added, 1 changed, 0 removed; …" — or "nothing".
pub(crate) fn describe_loss(lost: &[TableDiff]) -> String {
    let parts: Vec<String> = lost
        .iter()
        .filter(|t| t.added + t.changed + t.removed > 0)
        .map(|t| {
            format!(
                "table {}: {} row(s) added, {} changed, {} removed since the backup",
                t.table, t.added, t.changed, t.removed
            )
        })
        .collect();
    if parts.is_empty() {
        "nothing (no rows changed since the backup)".into()
    } else {
        parts.join("; ")
    }
}
