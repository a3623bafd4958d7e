//! `rehearse`: proves an upgrade on copies of the site's own data before the maintenance window.
//!
//! It verifies and plans exactly as `apply` does (same refusals, same exit 4), then builds a scratch
//! site under `ROOT/state/rehearse/<id>/site/`: the running release's manifest and config, a copy of
//! every database (SQLite: a consistent file copy; PostgreSQL: `CREATE DATABASE … TEMPLATE` when no
//! other session uses the live database, else `pg_dump | pg_restore`; MariaDB/MySQL: dump and load
//! into a scratch schema) and a private `site.yaml` naming the copies. `apply`'s own forward steps
//! then run there — staging, config conversion, `pre_apply` (with `BUNDLE_REHEARSAL=1`), backup,
//! every migration, the swap of the scratch `current`, `health_check` — each timed, with the rows
//! and bytes of the migrated database's tables before and after. `post_apply` (it would start the
//! service) and the commit are not run. The live site — databases, `current`, history of applies —
//! is only read; the rehearsal's result is recorded in `state/history.jsonl` as `command:
//! "rehearse"`.
//!
//! Cleanup: `state/rehearse/<id>.json` names every scratch server database *before* it is created,
//! so a rehearsal that is killed leaves nothing `recover` (run first by every command) does not
//! drop. A rehearsal that ends, well or badly, removes its copies itself.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bundle_core::manifest::Manifest;
use bundle_core::verify::{self, Limits, VerifiedBundle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::{self, TableStat};
use crate::error::{ErrorKind, InstallError, Result};
use crate::fs::durable;
use crate::python::interpreter::Interpreter;
use crate::report::Reporter;
use crate::site::Site;
use crate::transaction::apply::{self, ApplyOptions, Ctx};
use crate::transaction::hooks;
use crate::transaction::journal::{self, Action};
use crate::transaction::plan::{self, Plan, PlanKind};

/// Where rehearsals keep their scratch sites and records, under `state/`.
pub(crate) const DIR: &str = "rehearse";

/// The environment variable hooks see during a rehearsal.
pub(crate) const ENV: &str = "BUNDLE_REHEARSAL";

/// One table of a step's database, before and after the step.
#[derive(Debug, Clone, Serialize)]
pub struct TableChange {
    pub table: String,
    pub rows_before: Option<u64>,
    pub rows_after: Option<u64>,
    pub bytes_before: Option<u64>,
    pub bytes_after: Option<u64>,
}

/// One step of the rehearsed apply.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The journal's name of the step (`migrate:client:2.0:up`, `pre_apply`, …), as `apply` names it.
    pub step: String,
    pub description: String,
    /// `ok`, `failed`, or `not_run` (after a failure).
    pub outcome: String,
    pub millis: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How one database was copied for the rehearsal.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub database: String,
    pub engine: db::EngineKind,
    /// `file` (SQLite), `template` or `dump` (servers), `absent` (nothing to copy).
    pub method: String,
    /// The scratch file (relative to the site root) or database (URL, password masked).
    pub scratch: String,
    pub millis: u64,
    pub tables: Vec<TableStat>,
}

/// What the real apply should take, from what the rehearsal measured on the copies.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub verify_ms: u64,
    /// Staging the release and converting the config (the service still runs).
    pub staging_ms: u64,
    pub backup_ms: u64,
    pub migration_ms: u64,
    /// From `pre_apply` (the stop) to the end of `health_check`: backup, migrations and swap.
    pub downtime_ms: u64,
    /// Verify, staging and downtime: the whole apply.
    pub apply_ms: u64,
    /// Parts of a real apply the rehearsal does not run, so not in the figures.
    pub not_measured: Vec<String>,
}

/// Disk the real apply needs under the site root, against what is free there now.
#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    /// The plan's estimate (what `apply` checks before it starts).
    pub estimated_bytes: u64,
    /// What the rehearsal really wrote: the staged release and the backup.
    pub measured_bytes: u64,
    pub free_bytes: Option<u64>,
    pub fits: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
    pub id: String,
    pub app: String,
    pub from: Option<String>,
    pub to: String,
    pub bundle_sha256: String,
    pub key_id: String,
    /// `true` when `apply` would succeed on today's data.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RehearsalError>,
    pub plan: Plan,
    pub copies: Vec<CopyReport>,
    pub steps: Vec<StepReport>,
    pub prediction: Prediction,
    pub disk: Disk,
    /// Every scratch copy was removed.
    pub cleaned_up: bool,
}

/// The failing step's error, as `apply` would report it.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsalError {
    pub kind: ErrorKind,
    pub message: String,
}

/// `state/rehearse/<id>.json`: what a rehearsal created, written before each creation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    id: String,
    pid: u32,
    started_at: String,
    /// Scratch server databases: (spec name, engine, spec path, scratch database name).
    databases: Vec<(String, db::EngineKind, String, String)>,
}

fn record_path(site: &Site, id: &str) -> PathBuf {
    site.state().join(DIR).join(format!("{id}.json"))
}

fn save(site: &Site, r: &Record) -> Result<()> {
    let p = record_path(site, &r.id);
    durable::write_atomic(&p, &serde_json::to_vec_pretty(r).expect("serialises"))
        .map_err(|e| InstallError::io(p.display(), e))
}

/// Removes what a rehearsal left (a killed one): its scratch server databases, its scratch site,
/// its record. Called by `recover` under the site lock, so no rehearsal is running. A database
/// that cannot be dropped now keeps its record for the next `recover`.
pub(crate) fn clean_leftovers(site: &Site, reporter: &dyn Reporter) {
    let dir = site.state().join(DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut kept = Vec::new();
    let mut records = Vec::new();
    let mut dirs = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            records.push(p);
        } else {
            dirs.push(p);
        }
    }
    for p in records {
        let Ok(r) =
            std::fs::read(&p).map_err(|_| ()).and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|_| ()))
        else {
            let _ = std::fs::remove_file(&p);
            continue;
        };
        reporter.step(&format!("removing the copies of interrupted rehearsal {}", r.id));
        match drop_databases(site, &r) {
            Ok(()) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(e) => {
                reporter.warn(&format!(
                    "rehearsal {}: {}; run `bundle-install recover` again once the server answers",
                    r.id, e.message
                ));
                kept.push(r.id.clone());
            }
        }
    }
    for d in dirs {
        if !kept.iter().any(|k| d.file_name().is_some_and(|n| n.to_string_lossy() == *k)) {
            let _ = durable::remove_tree(&d);
        }
    }
    if kept.is_empty() {
        let _ = std::fs::remove_dir(&dir);
    }
}

fn drop_databases(site: &Site, r: &Record) -> Result<()> {
    let mut first_err = None;
    for (name, engine, path, scratch) in &r.databases {
        let res = db::open(name, *engine, &site.root, path).and_then(|mut e| {
            let dropped = e.drop_rehearsal_db(scratch);
            let _ = e.close();
            dropped
        });
        if let Err(e) = res {
            first_err.get_or_insert(InstallError::from(e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Removes a finished rehearsal's copies; `true` when nothing was left.
fn cleanup(site: &Site, r: &Record, dir: &Path) -> bool {
    let dbs = drop_databases(site, r).is_ok();
    let tree = durable::remove_tree(dir).is_ok();
    if dbs && tree {
        let _ = std::fs::remove_file(record_path(site, &r.id));
        let _ = std::fs::remove_dir(site.state().join(DIR));
    }
    dbs && tree
}

/// Runs the rehearsal. `Err` is a refusal or a failure before the copies ran (as `apply` would
/// report it); a step that fails on the copies gives `Ok` with `ok: false`.
pub fn rehearse(site: &Site, bundle: &Path, opts: &ApplyOptions, reporter: &dyn Reporter) -> Result<Rehearsal> {
    let (keys, _) = apply::keys_for(site, &opts.trust)?;
    // A bundle signed by a key its rotation statements bring in verifies as in apply; the trust
    // store itself is never changed by a rehearsal.
    let keys = apply::rotations_for(site, bundle, &keys).keys_for_bundle(&keys);
    reporter.step("checking the bundle's signature");
    let (manifest, bundle_id, key_id, _) =
        verify::read_verified_manifest(bundle, &keys).map_err(|e| crate::site::trust::verify_error(site, e))?;
    let mut plan = plan::plan(site, &manifest, &bundle_id, &opts.plan)?;
    if plan.kind == PlanKind::NothingToDo {
        // As `apply`: success, nothing to do (and nothing recorded).
        return Ok(Rehearsal {
            id: String::new(),
            app: plan.app.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            bundle_sha256: String::new(),
            key_id: key_id.to_string(),
            ok: true,
            failed_step: None,
            error: None,
            copies: Vec::new(),
            steps: Vec::new(),
            prediction: predict(&[], 0, Vec::new()),
            disk: Disk { estimated_bytes: 0, measured_bytes: 0, free_bytes: plan.space.free_bytes, fits: true },
            cleaned_up: true,
            plan,
        });
    }
    // As apply: the interpreter first, its wheels size the venv in the space check.
    let interp = apply::probe_interpreter(&opts.python, &manifest)?;
    plan.choose_wheels(site, &manifest, &interp)?;
    apply::refuse_unless_it_fits(site, &plan)?;

    let tag = db::server::random_suffix();
    let id = format!("{}-{tag}", bundle_core::time::now_compact_millis());
    let dir = site.state().join(DIR).join(&id);
    durable::ensure_real_dir(&site.state().join(DIR)).map_err(|e| InstallError::io("state/rehearse/", e))?;
    let mut record = Record {
        id: id.clone(),
        pid: std::process::id(),
        started_at: bundle_core::time::now_rfc3339(),
        databases: Vec::new(),
    };
    save(site, &record)?;
    let rehearsal = Rehearse {
        site,
        bundle,
        opts,
        reporter,
        manifest: &manifest,
        bundle_id: &bundle_id,
        interp: &interp,
        keys: &keys,
        id: &id,
        tag: &tag,
        dir: &dir,
    };
    let result = rehearsal.run(plan, &mut record);
    reporter.step("removing the scratch copies");
    let cleaned = cleanup(site, &record, &dir);
    if !cleaned {
        reporter.warn(&format!(
            "some scratch copies of rehearsal {id} could not be removed; `bundle-install recover --root {}` retries",
            site.root.display()
        ));
    }
    let mut report = result?;
    report.cleaned_up = cleaned;
    crate::site::history::append_rehearsal(site, &history_record(&report, &manifest, &record.started_at))?;
    Ok(report)
}

fn history_record(r: &Rehearsal, m: &Manifest, started_at: &str) -> serde_json::Value {
    json!({
        "id": r.id,
        "command": "rehearse",
        "app": r.app,
        "from": r.from,
        "to": r.to,
        "sequence": m.sequence,
        "bundle_sha256": r.bundle_sha256,
        "key_id": r.key_id,
        "outcome": if r.ok { "success" } else { "failed" },
        "failed_step": r.failed_step,
        "error": r.error,
        "started_at": started_at,
        "finished_at": bundle_core::time::now_rfc3339(),
        "steps": r.steps.iter().map(|s| json!({ "step": s.step, "status": s.outcome, "millis": s.millis })).collect::<Vec<_>>(),
        "prediction": r.prediction,
    })
}

/// What a rehearsal runs with: the live site, the bundle as verified and planned there, and the
/// rehearsal's own scratch directory.
struct Rehearse<'a> {
    site: &'a Site,
    bundle: &'a Path,
    opts: &'a ApplyOptions,
    reporter: &'a dyn Reporter,
    manifest: &'a Manifest,
    bundle_id: &'a str,
    interp: &'a Interpreter,
    keys: &'a [bundle_core::signature::PublicKey],
    /// The rehearsal's id, which names its directory and record.
    id: &'a str,
    /// The random part of its scratch server databases' names.
    tag: &'a str,
    /// `state/rehearse/<id>/`.
    dir: &'a Path,
}

impl Rehearse<'_> {
    /// Copies, then the forward steps on the scratch site.
    fn run(&self, plan: Plan, record: &mut Record) -> Result<Rehearsal> {
        let (site, manifest, reporter) = (self.site, self.manifest, self.reporter);
        let scratch = Site::new(&self.dir.join("site"));
        build_scratch_site(site, &scratch, &plan)?;
        let copies = copy_databases(site, &scratch, manifest, self.dir, self.tag, record, reporter)?;
        journal::checkpoint("rehearse:copied", "after")?;
        let splan = self.replan(&scratch, &plan)?;
        let (staging, verified, verify_ms) = self.verify(&scratch)?;

        let run_id = format!("{}-{}", self.id, manifest.version);
        let actions: Vec<Action> =
            apply::actions(&scratch, manifest, &splan, &run_id, self.opts, &verified, &Default::default())
                .into_iter()
                .filter(|a| !matches!(a, Action::Commit { .. } | Action::RetireRelease { .. }))
                .filter(|a| !matches!(a, Action::Hook { call, .. } if call.hook == "post_apply"))
                .collect();
        let script_limit = std::time::Duration::from_secs(self.opts.hook_timeout_secs);
        let ctx = Ctx {
            site: &scratch,
            manifest,
            plan: &splan,
            interp: self.interp,
            staging: &staging,
            verified: &verified,
            reporter,
            id: &run_id,
            script_limit,
        };
        let (steps, failure) = run_steps(&ctx, &actions, reporter);

        let mut not_measured = vec!["commit (history, pruning old releases)".to_string()];
        if manifest.hooks.post_apply.is_some() {
            not_measured.insert(0, "post_apply (it would start the service)".into());
        }
        let prediction = predict(&steps, verify_ms, not_measured);
        let disk = measure_disk(&scratch, manifest, &plan);
        // Steps that all passed still fail the rehearsal when the real apply would run out of disk.
        let failure = match failure {
            None if !disk.fits => Some(("disk_space".to_string(), self.disk_full(&disk))),
            f => f,
        };
        Ok(Rehearsal {
            id: self.id.to_string(),
            app: manifest.app.clone(),
            from: plan.from.clone(),
            to: manifest.version.clone(),
            bundle_sha256: verified.bundle_sha256().to_string(),
            key_id: verified.key_id().to_string(),
            ok: failure.is_none(),
            failed_step: failure.as_ref().map(|(s, _)| s.clone()),
            error: failure.map(|(_, e)| RehearsalError { kind: e.kind, message: e.message }),
            plan,
            copies,
            steps,
            prediction,
            disk,
            cleaned_up: false,
        })
    }

    /// Plans afresh on the scratch site, so every path (step files, venv) points there; the copies
    /// must plan as the live site did.
    fn replan(&self, scratch: &Site, plan: &Plan) -> Result<Plan> {
        let mut splan = plan::plan(scratch, self.manifest, self.bundle_id, &self.opts.plan)?;
        splan.choose_wheels(scratch, self.manifest, self.interp)?;
        let names = |p: &Plan| {
            p.databases
                .iter()
                .map(|d| (d.name.clone(), d.steps.iter().map(|s| s.file.file.clone()).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
        if splan.kind != plan.kind || names(&splan) != names(plan) {
            return Err(InstallError::failed(
                ErrorKind::RehearsalPlanMismatch,
                "the copies plan differently from the live site (were they changed while being copied?)",
            )
            .with_hint("run the rehearsal again"));
        }
        Ok(splan)
    }

    /// Verifies the bundle into the scratch site's staging, as `apply` does: the staging
    /// directory, the verified bundle, and how long verifying took (milliseconds).
    fn verify(&self, scratch: &Site) -> Result<(PathBuf, VerifiedBundle, u64)> {
        let (bundle, reporter) = (self.bundle, self.reporter);
        reporter.step(&format!("verifying {}", bundle.display()));
        let staging = scratch.staging().join(format!("{}-{}", self.manifest.version, std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| InstallError::io(staging.display(), e))?;
        let t = Instant::now();
        let total = verify::bundle_size(bundle);
        let verified =
            verify::verify_file_with_progress(bundle, self.keys, Some(&staging), &Limits::default(), &|done| {
                reporter.progress(done, total)
            })?;
        if verified.id() != self.bundle_id {
            return Err(InstallError::new(
                crate::error::Outcome::Verification,
                ErrorKind::BundleChanged,
                "the bundle file changed while it was being read",
            ));
        }
        Ok((staging, verified, t.elapsed().as_millis() as u64))
    }

    /// The failure of a rehearsal whose steps passed but whose writes would not fit on the site.
    fn disk_full(&self, disk: &Disk) -> InstallError {
        InstallError::failed(
            ErrorKind::DiskFull,
            format!(
                "disk_space: the apply wrote {} MiB on the copies; {} MiB are free under {}",
                disk.measured_bytes >> 20,
                disk.free_bytes.unwrap_or(0) >> 20,
                self.site.root.display()
            ),
        )
    }
}

/// What the rehearsal wrote (the staged release and the backup) against the plan's estimate and
/// the free space on the live site.
fn measure_disk(scratch: &Site, manifest: &Manifest, plan: &Plan) -> Disk {
    let measured = dir_size(&scratch.release_dir(&manifest.version)) + dir_size(&scratch.backups());
    let free = plan.space.free_bytes;
    Disk {
        estimated_bytes: plan.space.needed_bytes,
        measured_bytes: measured,
        free_bytes: free,
        fits: free.is_none_or(|f| f >= measured.max(plan.space.needed_bytes)),
    }
}

/// The scratch site: the layout, the running release's manifest, release record and config (all
/// the conversion reads), `current` pointing at it, and the rehearsal mark.
fn build_scratch_site(site: &Site, scratch: &Site, plan: &Plan) -> Result<()> {
    let io = |what: &Path, e: std::io::Error| {
        InstallError::io(format!("preparing the rehearsal's scratch site ({})", what.display()), e)
    };
    scratch.ensure_layout().map_err(|e| io(&scratch.root, e))?;
    std::fs::write(scratch.root.join(db::server::REHEARSAL_MARK), b"").map_err(|e| io(&scratch.root, e))?;
    let Some(from) = &plan.from else { return Ok(()) };
    let (src, dst) = (site.release_dir(from), scratch.release_dir(from));
    std::fs::create_dir_all(dst.join("bundle")).map_err(|e| io(&dst, e))?;
    for f in [PathBuf::from("bundle").join(bundle_core::manifest::MANIFEST_NAME), PathBuf::from("release.json")] {
        std::fs::copy(src.join(&f), dst.join(&f)).map_err(|e| io(&src.join(&f), e))?;
    }
    if let Ok(entries) = std::fs::read_dir(src.join("config")) {
        std::fs::create_dir_all(dst.join("config")).map_err(|e| io(&dst, e))?;
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::copy(e.path(), dst.join("config").join(e.file_name())).map_err(|err| io(&e.path(), err))?;
            }
        }
    }
    std::os::unix::fs::symlink(Path::new("releases").join(from), scratch.current_link())
        .map_err(|e| io(&scratch.current_link(), e))
}

/// Copies every database of the manifest into the scratch site; server copies are recorded
/// before they are created. Writes the scratch site's `site.yaml` (mode 0600: it holds passwords).
fn copy_databases(
    site: &Site,
    scratch: &Site,
    m: &Manifest,
    dir: &Path,
    tag: &str,
    record: &mut Record,
    reporter: &dyn Reporter,
) -> Result<Vec<CopyReport>> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| InstallError::io(work.display(), e))?;
    let mut yaml = serde_yaml::Mapping::new();
    let mut out = Vec::new();
    for d in &m.databases {
        reporter.step(&format!("database {}: copying it for the rehearsal", d.name));
        let t = Instant::now();
        let engine = db::EngineKind::of(&d.name, &d.engine)?;
        let mut live = db::open(&d.name, engine, &site.root, &d.path)?;
        let (method, where_) = if engine == db::EngineKind::Sqlite {
            let rec = live.backup(&work)?;
            live.close()?;
            match rec.file {
                Some(f) => {
                    let to = scratch.root.join(&d.path);
                    if let Some(p) = to.parent() {
                        std::fs::create_dir_all(p).map_err(|e| InstallError::io(p.display(), e))?;
                    }
                    std::fs::rename(work.join(&f), &to).map_err(|e| InstallError::io(to.display(), e))?;
                    (
                        "file".to_string(),
                        format!(
                            "state/{DIR}/{}/site/{}",
                            dir.file_name().unwrap_or_default().to_string_lossy(),
                            d.path
                        ),
                    )
                }
                None => ("absent".to_string(), String::new()),
            }
        } else {
            let live_name = live.server_dbname().unwrap_or_else(|| d.name.clone());
            let name = db::rehearsal_db_name(&live_name, tag);
            record.databases.push((d.name.clone(), engine, d.path.clone(), name.clone()));
            save(site, record)?;
            let copy = live.copy_to_scratch(&name, &work)?;
            live.close()?;
            let mut entry = serde_yaml::Mapping::new();
            entry.insert("url".into(), copy.url.into());
            yaml.insert(d.name.clone().into(), entry.into());
            (copy.method, copy.masked)
        };
        out.push(CopyReport {
            database: d.name.clone(),
            engine,
            method,
            scratch: where_,
            millis: t.elapsed().as_millis() as u64,
            tables: Vec::new(),
        });
    }
    let mut top = serde_yaml::Mapping::new();
    top.insert("databases".into(), yaml.into());
    let text = serde_yaml::to_string(&top).expect("serialises");
    let path = scratch.root.join(db::server::SITE_FILE);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| InstallError::io(path.display(), e))?;
        f.write_all(text.as_bytes()).map_err(|e| InstallError::io(path.display(), e))?;
    }
    for (c, d) in out.iter_mut().zip(&m.databases) {
        c.tables = stats(scratch, &d.name, c.engine, &d.path)?;
    }
    Ok(out)
}

fn stats(scratch: &Site, name: &str, engine: db::EngineKind, path: &str) -> Result<Vec<TableStat>> {
    let mut e = db::open(name, engine, &scratch.root, path)?;
    let s = e.table_stats();
    e.close()?;
    Ok(s?)
}

/// Runs the steps in order, timing each; stops at the first failure, the rest `not_run`.
fn run_steps(
    ctx: &Ctx,
    actions: &[Action],
    reporter: &dyn Reporter,
) -> (Vec<StepReport>, Option<(String, InstallError)>) {
    let mut steps = Vec::new();
    let mut failure: Option<(String, InstallError)> = None;
    for a in actions {
        let name = a.name();
        let description = apply::step_message(a);
        let dbr = match a {
            Action::Migrate { db, .. } | Action::Baseline { db, .. } => Some(db.clone()),
            _ => None,
        };
        let mut report = StepReport {
            step: name.clone(),
            description: description.clone(),
            outcome: "not_run".into(),
            millis: 0,
            database: dbr.as_ref().map(|d| d.name.clone()),
            tables: Vec::new(),
            error: None,
        };
        if failure.is_some() {
            steps.push(report);
            continue;
        }
        let before = dbr.as_ref().map(|d| stats(ctx.site, &d.name, d.engine, &d.path).unwrap_or_default());
        let t = Instant::now();
        let result = journal::checkpoint(&format!("rehearse:{name}"), "before").and_then(|_| match a {
            Action::Hook { call, .. } => {
                reporter.step_with_output(&format!("{description} (rehearsal)"));
                hooks::run_with_env(ctx.site, call, &[(ENV, "1")])
            }
            other => {
                reporter.step(&description);
                apply::forward(ctx, other)
            }
        });
        report.millis = t.elapsed().as_millis() as u64;
        if let (Some(d), Some(before)) = (&dbr, before) {
            let after = stats(ctx.site, &d.name, d.engine, &d.path).unwrap_or_default();
            report.tables = table_changes(&before, &after);
        }
        match result {
            Ok(()) => report.outcome = "ok".into(),
            Err(e) => {
                // Named as `apply` names a failing step.
                let e = InstallError { message: format!("{name}: {}", e.message), ..e };
                report.outcome = "failed".into();
                report.error = Some(e.message.clone());
                failure = Some((name, e));
            }
        }
        steps.push(report);
    }
    (steps, failure)
}

fn table_changes(before: &[TableStat], after: &[TableStat]) -> Vec<TableChange> {
    let mut names: Vec<&str> = before.iter().chain(after).map(|t| t.table.as_str()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let b = before.iter().find(|t| t.table == n);
            let a = after.iter().find(|t| t.table == n);
            TableChange {
                table: n.into(),
                rows_before: b.map(|t| t.rows),
                rows_after: a.map(|t| t.rows),
                bytes_before: b.map(|t| t.bytes),
                bytes_after: a.map(|t| t.bytes),
            }
        })
        .collect()
}

fn predict(steps: &[StepReport], verify_ms: u64, not_measured: Vec<String>) -> Prediction {
    let sum = |f: &dyn Fn(&str) -> bool| steps.iter().filter(|s| f(&s.step)).map(|s| s.millis).sum::<u64>();
    let staging_ms = sum(&|n| {
        matches!(
            n,
            "stage_release" | "create_venv" | "install_wheels" | "compile_bytecode" | "write_config" | "mark_complete"
        )
    });
    let backup_ms = sum(&|n| n == "backup");
    let migration_ms = sum(&|n| n.starts_with("migrate:") || n.starts_with("baseline:"));
    let downtime_ms = backup_ms + migration_ms + sum(&|n| matches!(n, "pre_apply" | "swap" | "health_check"));
    Prediction {
        verify_ms,
        staging_ms,
        backup_ms,
        migration_ms,
        downtime_ms,
        apply_ms: verify_ms + staging_ms + downtime_ms,
        not_measured,
    }
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

impl Rehearsal {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let mut s = format!(
            "rehearsal {} of {} {} → {} on copies of this site's data\n",
            self.id,
            self.app,
            self.from.as_deref().unwrap_or("(clean)"),
            self.to
        );
        for c in &self.copies {
            s.push_str(&format!("  copy   {:<10} {} ({}) in {} ms\n", c.database, c.method, c.engine, c.millis));
            for t in &c.tables {
                s.push_str(&format!("           {:<24} {:>10} rows {:>12} bytes\n", t.table, t.rows, t.bytes));
            }
        }
        for st in &self.steps {
            s.push_str(&format!("  {:<7} {:<40} {:>8} ms\n", st.outcome, st.step, st.millis));
            for t in &st.tables {
                let n = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
                s.push_str(&format!(
                    "           {:<24} rows {} → {}, bytes {} → {}\n",
                    t.table,
                    n(t.rows_before),
                    n(t.rows_after),
                    n(t.bytes_before),
                    n(t.bytes_after)
                ));
            }
            if let Some(e) = &st.error {
                s.push_str(&format!("           error: {e}\n"));
            }
        }
        let p = &self.prediction;
        s.push_str(&format!(
            "prediction for the real apply: about {:.1} s in all (verify {:.1} s, staging {:.1} s while the service runs); downtime {:.1} s (backup {:.1} s, migrations {:.1} s); not measured: {}\n",
            p.apply_ms as f64 / 1000.0,
            p.verify_ms as f64 / 1000.0,
            p.staging_ms as f64 / 1000.0,
            p.downtime_ms as f64 / 1000.0,
            p.backup_ms as f64 / 1000.0,
            p.migration_ms as f64 / 1000.0,
            p.not_measured.join(", ")
        ));
        s.push_str(&format!(
            "disk: the apply needs about {} MiB (estimate {} MiB), {} MiB free: {}\n",
            self.disk.measured_bytes >> 20,
            self.disk.estimated_bytes >> 20,
            self.disk.free_bytes.unwrap_or(0) >> 20,
            if self.disk.fits { "enough" } else { "NOT ENOUGH" }
        ));
        s
    }
}
