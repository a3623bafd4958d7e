//! `rollback`: puts `current` back on a kept release, whose config is used as it was left.
//! Databases follow the compatibility rule: on the same major the rollback is code-only and keeps
//! every row; across a major, the shipped down scripts run in reverse order, or — only with
//! `--restore-data` — the backup taken before the upgrade is restored, after reporting per table
//! what that loses.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::db::{self, DbError, PlannedStep, TableDiff};
use crate::error::{InstallError, Result};
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
            "no_previous_release",
            "no other release is kept on this site to roll back to",
        ));
    };
    if t == current {
        return Err(InstallError::refused("already_current", format!("{t} is already the current release")));
    }
    if !kept.iter().any(|k| k.version == t) {
        return Err(InstallError::refused("release_not_kept", format!("release {t} is not kept under releases/"))
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
        .ok_or_else(|| InstallError::refused("not_installed", "nothing is installed on this site"))?;
    let to = target(site, &current, opts.to.as_deref())?;
    let cur_m = site
        .release_manifest(&current)
        .map_err(|e| InstallError::attention("current_release_unreadable", e.to_string()))?;
    let to_m = site
        .release_manifest(&to)
        .map_err(|e| InstallError::failed("release_unreadable", format!("releases/{to}: {e}")))?;
    // Server databases: no other node migrates while this rollback decides and runs.
    let _db_locks = db::lock_run(
        &site.root,
        cur_m.databases.iter().map(|d| (d.name.as_str(), d.engine.as_str(), d.path.as_str())),
    )?;

    // Decide per database, refusing before anything changes.
    let cur_bundle = site.release_dir(&current).join("bundle");
    let mut decisions = Vec::new();
    let mut downs: Vec<(DbRef, Vec<PlannedStep>)> = Vec::new();
    let mut restores: Vec<(DbRef, String)> = Vec::new();
    let mut refusals = Vec::new();
    for d in &cur_m.databases {
        let Some(target_db) = to_m.database(&d.name) else { continue };
        let dbr = DbRef { name: d.name.clone(), engine: d.engine.clone(), path: d.path.clone() };
        let mut engine = db::open(&d.name, &d.engine, &site.root, &d.path)?;
        let state = engine.inspect()?;
        let steps = db_steps(&cur_m, d, &cur_bundle);
        match db::plan_down(&d.name, &steps, &state, target_db.schema) {
            Ok(p) if p.is_empty() => decisions.push(DbRollback::CodeOnly { db: d.name.clone() }),
            Ok(p) => {
                engine.preflight()?;
                decisions.push(DbRollback::Down {
                    db: d.name.clone(),
                    steps: p.iter().map(|s| s.file.file.clone()).collect(),
                });
                downs.push((dbr, p));
            }
            Err(DbError::NeedsRestore { missing, .. }) => {
                let backup = backup_taken_on(site, &to);
                match (opts.restore_data, backup) {
                    (false, _) => refusals.push(format!(
                        "database `{}` is at a newer major schema than {to} needs and {} no down script",
                        d.name,
                        missing.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
                            + if missing.len() == 1 { " has" } else { " have" }
                    )),
                    (true, None) => {
                        return Err(InstallError::refused(
                            "no_backup",
                            format!("no backup of database `{}` taken while {to} was running is kept", d.name),
                        ))
                    }
                    (true, Some(b)) => {
                        engine.preflight()?;
                        let records = journal::read_backup_records(site, &b)?;
                        let record = records.iter().find(|r| r.db == d.name).ok_or_else(|| {
                            InstallError::refused("no_backup", format!("backup {b} has no copy of `{}`", d.name))
                        })?;
                        let live_version = state.version().unwrap_or(bundle_core::version::SchemaVersion::CLEAN);
                        let lost = match rows_written_since(
                            site,
                            d,
                            &steps,
                            record,
                            &b,
                            live_version,
                            &current,
                            &mut *engine,
                        ) {
                            Ok(l) => l,
                            Err(e) => {
                                reporter.warn(&format!("database `{}`: could not replay the upgrade on a copy of the backup ({}); reporting the raw difference, which also counts rows the migrations changed", d.name, e.message));
                                engine.diff_since(record, &site.backups().join(&b))?
                            }
                        };
                        decisions.push(DbRollback::Restore { db: d.name.clone(), backup: b.clone(), lost });
                        restores.push((dbr, b));
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        engine.close()?;
    }
    if !refusals.is_empty() {
        return Err(InstallError::refused("needs_restore", format!("rolling back to {to} would break the data: {}", refusals.join("; ")))
            .with_hint(format!("`bundle-install rollback --root {} --to {to} --restore-data` restores the pre-upgrade backup; when rows written since would be lost it only reports them and asks for --yes", site.root.display())));
    }
    let mut losses = Vec::new();
    for d in &decisions {
        if let DbRollback::Restore { db, backup, lost } = d {
            let line = format!("database `{db}`: restoring backups/{backup} loses: {}", describe_loss(lost));
            reporter.warn(&line);
            losses.push(line);
        }
    }
    let loses_rows = decisions.iter().any(
        |d| matches!(d, DbRollback::Restore { lost, .. } if lost.iter().any(|t| t.added + t.changed + t.removed > 0)),
    );
    if loses_rows && !opts.yes {
        return Err(InstallError::refused("confirm_restore", format!("restoring data would lose rows written since the upgrade: {}", losses.join("; ")))
            .with_hint(format!("nothing changed; add --yes to restore anyway: `bundle-install rollback --root {} --to {to} --restore-data --yes`", site.root.display())));
    }

    let id = format!("{}-rollback-{to}", bundle_core::time::now_compact_millis());
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
                timeout_secs: opts.hook_timeout_secs,
            })
            .filter(|_| m.app == cur_m.app)
    };
    let mut actions = Vec::new();
    if let Some(call) = hook("pre_apply", &cur_m, &current, &cur_m.hooks.pre_apply, &current, &to) {
        actions.push(Action::Hook {
            call,
            undo: hook("post_apply", &cur_m, &current, &cur_m.hooks.post_apply, &to, &current),
        });
    }
    let touching: Vec<DbRef> =
        downs.iter().map(|(d, _)| d.clone()).chain(restores.iter().map(|(d, _)| d.clone())).collect();
    if !touching.is_empty() {
        actions.push(Action::Backup { id: id.clone(), dbs: touching });
    }
    for (dbr, steps) in &downs {
        for s in steps {
            actions.push(Action::Migrate {
                db: dbr.clone(),
                version: s.version,
                file: s.file.file.clone(),
                direction: s.direction,
                restore_from: id.clone(),
            });
        }
    }
    for (dbr, b) in &restores {
        actions.push(Action::RestoreData { db: dbr.clone(), source: b.clone(), restore_from: id.clone() });
    }
    actions.push(Action::Swap { from: Some(current.clone()), to: to.clone() });
    if let Some(call) = hook("post_apply", &to_m, &to, &to_m.hooks.post_apply, &current, &to) {
        actions.push(Action::Hook { call, undo: hook("pre_apply", &to_m, &to, &to_m.hooks.pre_apply, &to, &current) });
    }
    if let Some(call) = hook("health_check", &to_m, &to, &to_m.hooks.health_check, &current, &to) {
        actions.push(Action::Hook { call, undo: None });
    }
    let history =
        json!({ "id": id, "command": "rollback", "app": cur_m.app, "from": current, "to": to, "databases": decisions });
    actions.push(Action::Commit { history, keep_releases: u32::MAX, protect: vec![to.clone(), current.clone()] });

    let mut runner =
        Runner::begin(site, Journal::new(id, "rollback", Some(current.clone()), to.clone(), actions), reporter)?;
    for i in 0..runner.journal.steps.len() {
        let name = runner.journal.steps[i].action.name();
        if matches!(runner.journal.steps[i].action, Action::Hook { .. }) {
            reporter.step_with_output(&format!("rollback: {name}"));
        } else {
            reporter.step(&format!("rollback: {name}"));
        }
        let r = runner.run(i, |a| forward(site, a, &downs, &current, reporter));
        if let Err(e) = r {
            let e = InstallError { message: format!("{name}: {}", e.message), ..e };
            if runner.journal.committed() {
                return Err(InstallError::attention(
                    "commit_failed",
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
    Ok(RolledBack { from: current, to, databases: decisions })
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
            let mut engine = db::open(&dbr.name, &dbr.engine, &site.root, &dbr.path)?;
            let python = site.release_dir(current).join("venv").join("bin").join("python");
            let r = engine.apply(step, current, Some(&python));
            engine.close()?;
            r.map_err(|e| InstallError::failed(e.kind(), e.to_string()))
        }
        Action::RestoreData { db, source, .. } => journal::restore_db(site, db, source),
        Action::Swap { to, .. } => durable::swap_symlink(&site.current_link(), &Path::new("releases").join(to))
            .map_err(|e| InstallError::io("switching `current`", e)),
        Action::Commit { history, keep_releases, protect } => {
            crate::transaction::apply::commit(site, history, *keep_releases, protect, reporter)
        }
        other => Err(InstallError::failed("bad_journal", format!("rollback cannot run step {}", other.name()))),
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
        let mut copy = if d.engine == "sqlite" {
            db::open(&d.name, &d.engine, &scratch.join("root"), &d.path)?
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
