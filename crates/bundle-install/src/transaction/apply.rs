//! `apply`: verify, plan, then run the plan as a journaled transaction — stage the release side by
//! side, convert the config, stop the service, back up and migrate the databases, swap `current`,
//! start and health-check the new release — undoing everything on any failure.

use std::path::{Path, PathBuf};

use bundle_core::manifest::Manifest;
use bundle_core::rotation::{self, RotationPlan};
use bundle_core::signature::PublicKey;
use bundle_core::verify::{self, Limits, VerifiedBundle};
use serde_json::json;

use crate::config;
use crate::db;
use crate::error::{ErrorKind, InstallError, Outcome, Result};
use crate::fs::durable;
use crate::python::interpreter::{self, Interpreter};
use crate::python::store;
use crate::report::Reporter;
use crate::site::{ReleaseInfo, Site, INCOMPLETE};
use crate::transaction::delta;
use crate::transaction::hooks::{self, HookCall};
use crate::transaction::journal::{Action, DbRef, Journal, Runner};
use crate::transaction::plan::{self, Plan, PlanKind, PlanOptions};

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub plan: PlanOptions,
    /// Keys given on the command line (`--trust`): the trust store of a first install.
    pub trust: Vec<PathBuf>,
    pub python: PathBuf,
    pub hook_timeout_secs: u64,
    /// `--base-bundle`: the full bundle a delta bundle was built on.
    pub base_bundle: Option<PathBuf>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            plan: PlanOptions::default(),
            trust: Vec::new(),
            python: "python3".into(),
            hook_timeout_secs: hooks::DEFAULT_TIMEOUT_SECS,
            base_bundle: None,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub plan: Plan,
    pub changed: bool,
    pub journal_id: Option<String>,
    pub key_id: String,
    pub bundle_id: String,
}

pub(crate) use crate::site::trust::keys_for;

/// What the bundle's key rotation statements would do to `trusted`. They are read from the
/// manifest before its signature is checked (a statement is checked on its own signatures, by keys
/// the site trusts); a bundle that cannot even be read has none, and fails verification next.
pub fn rotations_for(site: &Site, bundle: &Path, trusted: &[PublicKey]) -> RotationPlan {
    match verify::read_unverified(bundle) {
        Ok((m, _)) => {
            rotation::plan(&m.key_rotations, &m.app, trusted, &|id| crate::site::trust::site_revokes(site, id))
        }
        Err(_) => RotationPlan::default(),
    }
}

/// Plans without changing anything (for `plan`).
pub fn plan_only(site: &Site, bundle: &Path, opts: &ApplyOptions) -> Result<Plan> {
    let (keys, _) = keys_for(site, &opts.trust)?;
    let rotations = rotations_for(site, bundle, &keys);
    let (manifest, bundle_id, key_id, _) = verify::read_verified_manifest(bundle, &rotations.keys_for_bundle(&keys))
        .map_err(|e| crate::site::trust::verify_error(site, e))?;
    let mut plan = plan::plan(site, &manifest, &bundle_id, &opts.plan)?;
    plan.key_rotations = checked_rotations(site, &keys, &manifest, &key_id)?.outcomes;
    if plan.kind != PlanKind::NothingToDo {
        let interp = probe_interpreter(&opts.python, &manifest)?;
        plan.choose_wheels(site, &manifest, &interp)?;
        let base = delta::find_base_bundle(&manifest, bundle, opts.base_bundle.as_deref(), &keys)?;
        plan.delta = delta::locate(site, &manifest, base.as_ref())?;
    }
    Ok(plan)
}

/// The rotation plan of the *verified* manifest (the file may have changed since the statements were
/// first read): recomputed from it, and the key that signed the bundle must be reachable through it.
fn checked_rotations(
    site: &Site,
    trusted: &[PublicKey],
    verified: &Manifest,
    signer: &bundle_core::signature::KeyId,
) -> Result<RotationPlan> {
    let rotations = rotation::plan(&verified.key_rotations, &verified.app, trusted, &|id| {
        crate::site::trust::site_revokes(site, id)
    });
    if !rotations.keys_for_bundle(trusted).iter().any(|k| k.key_id() == signer) {
        return Err(InstallError::new(
            crate::error::Outcome::Verification,
            ErrorKind::BundleChanged,
            "the bundle file changed while it was being read",
        )
        .with_hint("copy the bundle to local disk and run the command again"));
    }
    Ok(rotations)
}

/// The site's interpreter, probed once, and checked against the bundle's `python:` requirement.
pub(crate) fn probe_interpreter(python: &Path, manifest: &Manifest) -> Result<Interpreter> {
    let interp = Interpreter::probe(python).map_err(|e| {
        InstallError::caused_by(Outcome::Failed, e).with_hint("pass --python PATH to the site's Python interpreter")
    })?;
    interp.require(&manifest.python).map_err(|e| {
        InstallError::caused_by(Outcome::Refused, e).with_hint("install a matching Python or pass --python PATH")
    })?;
    Ok(interp)
}

pub fn apply(site: &Site, bundle: &Path, opts: &ApplyOptions, reporter: &dyn Reporter) -> Result<Applied> {
    let (site_keys, first_install_keys) = keys_for(site, &opts.trust)?;
    let rotations = rotations_for(site, bundle, &site_keys);
    let keys = rotations.keys_for_bundle(&site_keys);
    reporter.step("checking the bundle's signature");
    let (manifest, bundle_id, key_id, _) =
        verify::read_verified_manifest(bundle, &keys).map_err(|e| crate::site::trust::verify_error(site, e))?;
    let rotations = checked_rotations(site, &site_keys, &manifest, &key_id)?;
    // Server databases: one run at a time across every node sharing them, held until this function
    // returns (undo included); a node that waited plans afresh and finds the schema migrated.
    let _db_locks = crate::transaction::journal::lock_declared(site, &manifest.databases)?;
    let mut plan = plan::plan(site, &manifest, &bundle_id, &opts.plan)?;
    plan.key_rotations = rotations.outcomes.clone();
    if plan.kind == PlanKind::NothingToDo {
        return Ok(Applied { plan, changed: false, journal_id: None, key_id: key_id.to_string(), bundle_id });
    }
    // The interpreter first: the wheels it selects size the venv in the space check.
    let interp = probe_interpreter(&opts.python, &manifest)?;
    plan.choose_wheels(site, &manifest, &interp)?;
    // A delta bundle whose omitted files the site lacks is refused before anything is written.
    let base_bundle = delta::find_base_bundle(&manifest, bundle, opts.base_bundle.as_deref(), &keys)?;
    plan.delta = delta::locate(site, &manifest, base_bundle.as_ref())?;
    refuse_unless_it_fits(site, &plan)?;

    let (staging, verified) = verify_into_staging(site, bundle, &manifest, &keys, &bundle_id, reporter)?;

    if let Some(d) = &plan.delta {
        if let Err(e) = fill_delta(site, &manifest, d, &staging, base_bundle.as_ref(), &keys, reporter) {
            let _ = durable::remove_tree(&staging);
            return Err(e);
        }
    }
    if first_install_keys {
        // The admin named these keys explicitly and they verified the bundle: the site trusts them
        // from now on, whatever happens to this run.
        if let Err(e) = crate::site::trust::store_keys(site, &opts.trust) {
            let _ = durable::remove_tree(&staging);
            return Err(e);
        }
    }
    let id = format!("{}-{}", bundle_core::time::now_compact_millis(), manifest.version);
    let journal = Journal::new(
        id.clone(),
        "apply",
        plan.from.clone(),
        manifest.version.clone(),
        actions(site, &manifest, &plan, &id, opts, &verified, &rotations),
    );
    let script_limit = std::time::Duration::from_secs(opts.hook_timeout_secs);
    let ctx = Ctx {
        site,
        manifest: &manifest,
        plan: &plan,
        interp: &interp,
        staging: &staging,
        verified: &verified,
        reporter,
        id: &id,
        script_limit,
    };
    let result = execute(journal, &ctx);
    // Staging is empty once stage_release moved the payload; a run that failed earlier (or could
    // not begin) leaves it.
    let _ = durable::remove_tree(&staging);
    let journal_id = result?;
    Ok(Applied { plan, changed: true, journal_id: Some(journal_id), key_id: key_id.to_string(), bundle_id })
}

/// Verifies every byte of `bundle`, streaming into a private staging directory (only these bytes
/// are used), and checks that it is the bundle whose manifest was planned; nothing is left on failure.
fn verify_into_staging(
    site: &Site,
    bundle: &Path,
    manifest: &Manifest,
    keys: &[PublicKey],
    bundle_id: &str,
    reporter: &dyn Reporter,
) -> Result<(PathBuf, VerifiedBundle)> {
    let staging = site.staging().join(format!("{}-{}", manifest.version, std::process::id()));
    durable::remove_tree(&staging).map_err(|e| InstallError::io(staging.display(), e))?;
    std::fs::create_dir(&staging).map_err(|e| InstallError::io(staging.display(), e))?;
    reporter.step(&format!(
        "verifying {} ({} files, {} bytes)",
        bundle.display(),
        manifest.payload.entries,
        manifest.payload.bytes
    ));
    let total = verify::bundle_size(bundle);
    match verify::verify_file_with_progress(bundle, keys, Some(&staging), &Limits::default(), &|done| {
        reporter.progress(done, total)
    }) {
        Ok(v) if v.id() == bundle_id => Ok((staging, v)),
        Ok(_) => {
            let _ = durable::remove_tree(&staging);
            Err(InstallError::new(
                crate::error::Outcome::Verification,
                ErrorKind::BundleChanged,
                "the bundle file changed while it was being read",
            )
            .with_hint("copy the bundle to local disk and run the command again"))
        }
        Err(e) => {
            let _ = durable::remove_tree(&staging);
            Err(crate::site::trust::verify_error(site, e))
        }
    }
}

/// Adds a delta bundle's omitted files to `staging`, verifying the full base bundle first when
/// some come only from it.
fn fill_delta(
    site: &Site,
    m: &Manifest,
    d: &delta::DeltaPlan,
    staging: &Path,
    base: Option<&delta::BaseBundle>,
    keys: &[PublicKey],
    reporter: &dyn Reporter,
) -> Result<()> {
    let Some(b) = base.filter(|_| delta::needs_base_bundle(d)) else { return delta::fill(m, d, staging, None) };
    let scratch = site.staging().join(format!("base-{}", std::process::id()));
    durable::remove_tree(&scratch).map_err(|e| InstallError::io(scratch.display(), e))?;
    std::fs::create_dir(&scratch).map_err(|e| InstallError::io(scratch.display(), e))?;
    reporter.step(&format!("verifying the base bundle {}", b.file.display()));
    let r = verify::verify_file(&b.file, keys, Some(&scratch), &Limits::default())
        .map_err(InstallError::from)
        .and_then(|v| match v.id() == d.base_bundle_id {
            true => delta::fill(m, d, staging, Some((b, &scratch))),
            false => Err(InstallError::new(
                crate::error::Outcome::Verification,
                ErrorKind::BundleChanged,
                "the base bundle file changed while it was being read",
            )),
        });
    let _ = durable::remove_tree(&scratch);
    r
}

/// Everything the forward steps need (a rehearsal builds one for its scratch site).
pub(crate) struct Ctx<'a> {
    pub site: &'a Site,
    pub manifest: &'a Manifest,
    pub plan: &'a Plan,
    pub interp: &'a Interpreter,
    pub staging: &'a Path,
    pub verified: &'a VerifiedBundle,
    pub reporter: &'a dyn Reporter,
    /// The run's id, which also names its backup.
    pub id: &'a str,
    /// How long a config converter script may run (`--hook-timeout`).
    pub script_limit: std::time::Duration,
}

fn db_ref(d: &plan::DbPlan) -> DbRef {
    DbRef { name: d.name.clone(), engine: d.engine, path: d.path.clone() }
}

/// The journal of an apply: every step, in order, with what undoing it needs.
pub(crate) fn actions(
    site: &Site,
    m: &Manifest,
    plan: &Plan,
    id: &str,
    opts: &ApplyOptions,
    verified: &VerifiedBundle,
    rotations: &RotationPlan,
) -> Vec<Action> {
    let v = m.version.clone();
    let new_dir = site.release_dir(&v);
    let hook =
        |name: &str, script: &Option<String>, dir: &Path, bundle_dir: &Path, from: Option<String>, to: String| {
            script.as_ref().map(|s| HookCall {
                hook: name.into(),
                script: bundle_dir.join(s),
                release_dir: dir.to_path_buf(),
                from,
                to,
                timeout_secs: opts.hook_timeout_secs,
            })
        };
    // The old release's own hooks undo ours: its post_apply starts it again after our pre_apply
    // stopped it.
    let old = plan.from.as_ref().and_then(|f| site.release_manifest(f).ok().map(|om| (f.clone(), om)));
    let old_start = old.as_ref().and_then(|(f, om)| {
        let dir = site.release_dir(f);
        hook("post_apply", &om.hooks.post_apply, &dir, &dir.join("bundle"), Some(v.clone()), f.clone())
    });
    let new_bundle = new_dir.join("bundle");
    let mut a = Vec::new();
    if rotations.changes_anything() {
        let texts = |keys: &[PublicKey]| keys.iter().map(PublicKey::to_minisign).collect();
        a.push(Action::RotateKeys { add: texts(&rotations.add), retire: texts(&rotations.retire) });
    }
    if plan.replaces_kept {
        a.push(Action::RetireRelease { version: v.clone(), aside: format!(".retired-{v}-{id}") });
    }
    a.extend(staging_actions(&v, id));
    if let Some(call) = hook("pre_apply", &m.hooks.pre_apply, &new_dir, &new_bundle, plan.from.clone(), v.clone()) {
        a.push(Action::Hook { call, undo: old_start });
    }
    a.extend(database_actions(plan, id));
    a.push(Action::Swap { from: plan.from.clone(), to: v.clone() });
    if let Some(call) = hook("post_apply", &m.hooks.post_apply, &new_dir, &new_bundle, plan.from.clone(), v.clone()) {
        // Undone by stopping the new release with its own pre_apply.
        let stop = hook(
            "pre_apply",
            &m.hooks.pre_apply,
            &new_dir,
            &new_bundle,
            Some(v.clone()),
            plan.from.clone().unwrap_or_default(),
        );
        a.push(Action::Hook { call, undo: stop });
    }
    if let Some(call) = hook("health_check", &m.hooks.health_check, &new_dir, &new_bundle, plan.from.clone(), v.clone())
    {
        a.push(Action::Hook { call, undo: None });
    }
    let mut protect = vec![v.clone()];
    protect.extend(plan.from.clone());
    a.push(Action::Commit { history: apply_history(m, plan, id, verified), keep_releases: m.keep_releases, protect });
    a
}

/// The steps that build release `v` beside the running one, up to marking it complete.
fn staging_actions(v: &str, id: &str) -> [Action; 7] {
    [
        Action::StageRelease { version: v.to_string() },
        Action::StoreWheels { version: v.to_string(), run: id.to_string() },
        Action::CreateVenv { version: v.to_string() },
        Action::InstallWheels { version: v.to_string() },
        Action::CompileBytecode { version: v.to_string() },
        Action::WriteConfig { version: v.to_string() },
        Action::MarkComplete { version: v.to_string() },
    ]
}

/// The backup of every planned database, then each one's baseline and migrations, restored from
/// that backup (`id`) on undo.
fn database_actions(plan: &Plan, id: &str) -> Vec<Action> {
    let mut a = Vec::new();
    if plan.backup {
        a.push(Action::Backup { id: id.to_string(), dbs: plan.databases.iter().map(db_ref).collect() });
    }
    for d in &plan.databases {
        if let Some(version) = d.baseline {
            a.push(Action::Baseline { db: db_ref(d), version, restore_from: id.to_string() });
        }
        for s in &d.steps {
            a.push(Action::Migrate {
                db: db_ref(d),
                version: s.version,
                file: s.file.file.clone(),
                direction: s.direction,
                restore_from: id.to_string(),
            });
        }
    }
    a
}

/// The history record the commit appends: what was installed, from which verified bundle.
fn apply_history(m: &Manifest, plan: &Plan, id: &str, verified: &VerifiedBundle) -> serde_json::Value {
    let mut history = json!({
        "id": id,
        "command": "apply",
        "app": m.app,
        "from": plan.from,
        "to": m.version,
        "kind": plan.kind,
        "bundle_id": verified.id(),
        "bundle_sha256": verified.bundle_sha256(),
        "bundle_bytes": verified.compressed_bytes(),
        "bundle_parts": verified.parts(),
        "key_id": verified.key_id().to_string(),
        "sequence": m.sequence,
        "signature": "verified",
    });
    if !plan.key_rotations.is_empty() {
        history["key_rotations"] = json!(plan.key_rotations);
    }
    history
}

/// Begins the journal and runs its steps; a step that fails before the commit undoes every step
/// done, one that fails after it leaves the run for `recover` to finish.
fn execute(journal: Journal, ctx: &Ctx) -> Result<String> {
    let mut runner = Runner::begin(ctx.site, journal, ctx.reporter)?;
    let id = runner.journal.id.clone();
    for i in 0..runner.journal.steps.len() {
        let name = runner.journal.steps[i].action.name();
        match &runner.journal.steps[i].action {
            Action::Hook { .. } => ctx.reporter.step_with_output(&step_message(&runner.journal.steps[i].action)),
            other => ctx.reporter.step(&step_message(other)),
        }
        if let Err(e) = runner.run(i, |action| forward(ctx, action)) {
            let e = InstallError { message: format!("{name}: {}", e.message), ..e };
            if runner.journal.committed() {
                // Past the point of no return the new release is in place: finish, never undo.
                return Err(InstallError::attention(
                    ErrorKind::CommitFailed,
                    format!("the new release is in place but finishing failed: {}", e.message),
                )
                .with_hint(format!(
                    "fix the cause, then run `bundle-install recover --root {}` to finish",
                    ctx.site.root.display()
                ))
                .with_source(e));
            }
            let (err, journal) = runner.undo(e);
            crate::site::history::append_failure(ctx.site, &journal, &err);
            return Err(err);
        }
    }
    runner.finish()?;
    Ok(id)
}

pub(crate) fn step_message(a: &Action) -> String {
    match a {
        Action::StageRelease { version } => format!("staging releases/{version}"),
        Action::CreateVenv { .. } => "creating the Python environment".into(),
        Action::StoreWheels { .. } => "unpacking new wheels into store/".into(),
        Action::InstallWheels { .. } => "installing wheels".into(),
        Action::CompileBytecode { .. } => "byte-compiling".into(),
        Action::WriteConfig { .. } => "writing the config".into(),
        Action::MarkComplete { .. } => "syncing the staged release to disk".into(),
        Action::Hook { call, .. } => format!("running hook {}", call.hook),
        Action::Backup { id, .. } => format!("backing up the databases to backups/{id}"),
        Action::RetireRelease { version, .. } => format!("setting aside the kept releases/{version}"),
        Action::Baseline { db, version, .. } => format!("database {}: recording baseline {version}", db.name),
        Action::Migrate { db, file, direction, .. } => format!("database {}: {} {file}", db.name, direction.as_str()),
        Action::RestoreData { db, source, .. } => format!("database {}: restoring backups/{source}", db.name),
        Action::Swap { to, .. } => format!("switching current → releases/{to}"),
        Action::Commit { .. } => "recording history".into(),
        Action::RotateKeys { add, retire } => format!("trusting {} new key(s), retiring {}", add.len(), retire.len()),
    }
}

/// Does one step of an apply (a rehearsal runs them on its scratch site).
pub(crate) fn forward(ctx: &Ctx, action: &Action) -> Result<()> {
    let site = ctx.site;
    let m = ctx.manifest;
    let dir = site.release_dir(&m.version);
    match action {
        Action::RetireRelease { version, aside } => retire_release(site, version, aside),
        Action::StageRelease { .. } => stage_release(ctx, &dir),
        Action::CreateVenv { .. } => {
            interpreter::create_venv(ctx.interp, &dir.join("venv"))
                .map_err(|e| InstallError::caused_by(Outcome::Failed, e))?;
            Ok(())
        }
        Action::StoreWheels { run, .. } => {
            let done = store::ensure_entries(site, &chosen_wheels(ctx, &dir), ctx.interp, run)?;
            for (sha, why) in &done.repaired {
                ctx.reporter
                    .warn(&format!("store entry {sha} could not be used ({why}); unpacked again from the bundle"));
            }
            Ok(())
        }
        Action::InstallWheels { .. } => {
            let venv =
                interpreter::Venv::open(dir.join("venv")).map_err(|e| InstallError::caused_by(Outcome::Failed, e))?;
            store::link_into(site, &venv, &chosen_wheels(ctx, &dir))?;
            Ok(())
        }
        Action::CompileBytecode { .. } => compile_bytecode(ctx, &dir),
        Action::WriteConfig { .. } => write_config(ctx, &dir),
        Action::MarkComplete { .. } => mark_complete(ctx, &dir),
        Action::Hook { call, .. } => hooks::run(site, call),
        Action::Backup { id, dbs } => crate::transaction::backup::take(
            site,
            id,
            dbs,
            ctx.plan.from.as_deref(),
            &format!("upgrade to {}", m.version),
        ),
        Action::Migrate { db: dbr, version, direction, file, .. } => {
            let dp = ctx.plan.databases.iter().find(|d| d.name == dbr.name).expect("planned database");
            let step = dp
                .steps
                .iter()
                .find(|s| s.version == *version && s.direction == *direction && s.file.file == *file)
                .expect("planned step");
            migrate(ctx, &dir, dbr, step)
        }
        Action::RestoreData { .. } => unreachable!("apply never restores data"),
        Action::Baseline { db: dbr, version, .. } => {
            let mut engine = db::open(&dbr.name, dbr.engine, &site.root, &dbr.path)?;
            let result = engine.baseline(*version, &m.version);
            engine.close()?;
            result.map_err(|e| InstallError::caused_by(Outcome::Failed, e))
        }
        Action::Swap { to, .. } => durable::swap_symlink(&site.current_link(), &Path::new("releases").join(to))
            .map_err(|e| InstallError::io("switching `current`", e)),
        Action::Commit { history, keep_releases, protect } => {
            commit(site, history, *keep_releases, protect, ctx.reporter)
        }
        Action::RotateKeys { add, retire } => rotate_keys(site, add, retire),
    }
}

/// Sets the kept `releases/<version>` aside as `aside` (deleted on commit).
fn retire_release(site: &Site, version: &str, aside: &str) -> Result<()> {
    std::fs::rename(site.release_dir(version), site.releases().join(aside))
        .map_err(|e| InstallError::io(format!("setting aside releases/{version}"), e))?;
    durable::sync_dir(&site.releases()).map_err(|e| InstallError::io("releases/", e))
}

/// Creates the release directory `dir`, marked incomplete, and moves the verified payload in.
fn stage_release(ctx: &Ctx, dir: &Path) -> Result<()> {
    let site = ctx.site;
    durable::ensure_real_dir(&site.releases()).map_err(|e| InstallError::io("releases/", e))?;
    std::fs::create_dir(dir).map_err(|e| InstallError::io(format!("creating {}", dir.display()), e))?;
    std::fs::write(dir.join(INCOMPLETE), b"").map_err(|e| InstallError::io(dir.display(), e))?;
    std::fs::rename(ctx.staging, dir.join("bundle"))
        .map_err(|e| InstallError::io("moving the verified payload into the release", e))
}

/// Byte-compiles what the new venv's wheels did not bring compiled.
fn compile_bytecode(ctx: &Ctx, dir: &Path) -> Result<()> {
    let venv = interpreter::Venv::open(dir.join("venv")).map_err(|e| InstallError::caused_by(Outcome::Failed, e))?;
    // The store's entries bring their `.pyc`; only what lacks one is compiled here.
    interpreter::compile_trees(
        &venv.python,
        std::slice::from_ref(&venv.site_packages),
        Some(&ctx.interp.cache_tag),
        false,
        cores(),
    )
    .map_err(|e| InstallError::caused_by(Outcome::Failed, e))?;
    Ok(())
}

/// Writes `release.json`, makes the staged release durable, then removes its incomplete mark.
fn mark_complete(ctx: &Ctx, dir: &Path) -> Result<()> {
    let m = ctx.manifest;
    let info = ReleaseInfo {
        app: m.app.clone(),
        version: m.version.clone(),
        sequence: m.sequence,
        bundle_id: ctx.verified.id(),
        key_id: ctx.verified.key_id().to_string(),
        installed_at: bundle_core::time::now_rfc3339(),
        from: ctx.plan.from.clone(),
        backup: ctx.plan.backup.then(|| ctx.id.to_string()),
    };
    std::fs::write(dir.join("release.json"), serde_json::to_vec_pretty(&info).expect("serialises"))
        .map_err(|e| InstallError::io("writing release.json", e))?;
    // One syncfs makes the whole staged tree durable before anything points at it.
    durable::sync_filesystem(dir).map_err(|e| InstallError::io("syncing the staged release", e))?;
    std::fs::remove_file(dir.join(INCOMPLETE)).map_err(|e| InstallError::io("marking the release complete", e))?;
    durable::sync_dir(dir).map_err(|e| InstallError::io(dir.display(), e))
}

/// Runs one planned migration `step` of database `dbr`, with the new release's Python for its
/// data steps.
fn migrate(ctx: &Ctx, dir: &Path, dbr: &DbRef, step: &db::PlannedStep) -> Result<()> {
    let mut engine = db::open(&dbr.name, dbr.engine, &ctx.site.root, &dbr.path)?;
    let python = dir.join("venv").join("bin").join("python");
    let result = engine.apply(step, &ctx.manifest.version, Some(&python));
    engine.close()?;
    result.map_err(|e| InstallError::caused_by(Outcome::Failed, e))
}

/// Trusts the keys a rotation adds and retires the ones it replaces (`.pub` texts).
fn rotate_keys(site: &Site, add: &[String], retire: &[String]) -> Result<()> {
    for k in crate::transaction::journal::parse_keys(add)? {
        crate::site::trust::add_rotated(site, &k)?;
    }
    for k in crate::transaction::journal::parse_keys(retire)? {
        crate::site::trust::retire(site, &k)?;
    }
    Ok(())
}

/// `disk_full` (exit 4) when the plan's space estimate exceeds the free space: checked before any
/// change, by `apply` and by `rehearse` for the real run it predicts.
pub(crate) fn refuse_unless_it_fits(site: &Site, plan: &Plan) -> Result<()> {
    if plan.space.fits() {
        return Ok(());
    }
    Err(InstallError::refused(
        ErrorKind::DiskFull,
        format!(
            "not enough disk space under {}: the apply needs about {} MiB, {} MiB are free",
            site.root.display(),
            plan.space.needed_bytes >> 20,
            plan.space.free_bytes.unwrap_or(0) >> 20
        ),
    )
    .with_hint("free space (old backups/ can go once you no longer need them) and run the command again"))
}

/// The wheels chosen for the site's interpreter, with their sha256 from the signed manifest.
fn chosen_wheels(ctx: &Ctx, dir: &Path) -> Vec<store::WheelRef> {
    store::refs(ctx.manifest, ctx.plan.wheels.iter().map(|w| w.wheel.as_str()), &dir.join("bundle"))
}

/// Worker threads and processes for unpacking and byte-compiling: one per core.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Writes the new release's config: defaults on a clean install, otherwise the running release's
/// config converted step by step. The old release's file is only read.
fn write_config(ctx: &Ctx, dir: &Path) -> Result<()> {
    let Some(c) = &ctx.manifest.config else { return Ok(()) };
    let plan = ctx.plan.config.as_ref().expect("config planned with the manifest");
    let out_dir = dir.join("config");
    std::fs::create_dir_all(&out_dir).map_err(|e| InstallError::io(out_dir.display(), e))?;
    let out = out_dir.join(&c.file);
    let bundle_dir = dir.join("bundle");
    let old_file = ctx.plan.from.as_ref().and_then(|f| {
        let om = ctx.site.release_manifest(f).ok()?;
        Some(ctx.site.release_dir(f).join("config").join(&om.config?.file))
    });
    match (plan.from_version, old_file) {
        (Some(from), Some(old)) if old.exists() => {
            let converters: Vec<config::Converter> = c
                .converters
                .iter()
                .map(|x| config::Converter { from: x.from, to: x.to, kind: x.kind, path: bundle_dir.join(&x.path) })
                .collect();
            let python = dir.join("venv").join("bin").join("python");
            config::convert_within(&old, &out, from, c.version, &converters, &python, ctx.script_limit).map_err(
                |e| {
                    // The config's own kind and error, with a message that names the user's file.
                    let message = format!("converting {}: {}", old.display(), name_user_config(&e.to_string(), &old));
                    InstallError { message, ..InstallError::from(e) }.with_hint(format!(
                        "fix what it reports in {} (the running release's config), then apply again",
                        old.display()
                    ))
                },
            )?;
        }
        (from, _) => {
            if from.is_some() {
                ctx.reporter.warn("the running release has no config file; writing the new release's defaults");
            }
            std::fs::copy(bundle_dir.join(&c.defaults), &out)
                .map_err(|e| InstallError::io("writing config defaults", e))?;
        }
    }
    Ok(())
}

/// Converter scripts see temporary copies (`…/bundle-config-XXXX/config-v2.yaml`) and name them in
/// their errors; the admin needs the file they can edit instead.
fn name_user_config(message: &str, user_file: &Path) -> String {
    message
        .split(' ')
        .map(|word| match word.find("/bundle-config-") {
            Some(_) => {
                let trail: String = word
                    .chars()
                    .rev()
                    .take_while(|c| !c.is_alphanumeric())
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let version = word.rsplit("config-v").next().and_then(|r| r.split('.').next()).unwrap_or("?");
                format!("{} (as converted to config version {version}){trail}", user_file.display())
            }
            None => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The point of no return: the highest sequence seen, history, then trimming old releases.
/// Idempotent, so `recover` can redo it from the journal alone.
pub(crate) fn commit(
    site: &Site,
    history: &serde_json::Value,
    keep: u32,
    protect: &[String],
    reporter: &dyn Reporter,
) -> Result<()> {
    if let (Some(app), Some(seq)) = (history["app"].as_str(), history["sequence"].as_u64()) {
        if history["command"] == "apply" {
            let mut st = crate::site::state::load(site)?;
            st.app = Some(app.to_string());
            st.highest_sequence = Some(st.highest_sequence.unwrap_or(0).max(seq));
            crate::site::state::save(site, &st)?;
        }
    }
    crate::site::history::append_success(site, history)?;
    // Releases set aside for this run (and any a crash left behind) go now.
    if let Ok(entries) = std::fs::read_dir(site.releases()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".retired-") {
                durable::remove_tree(&e.path())
                    .map_err(|err| InstallError::io(format!("removing {}", e.path().display()), err))?;
            }
        }
    }
    crate::site::prune::prune(site, keep, protect, reporter)?;
    // Store entries only pruned releases used go with them (kept releases hold their own links).
    store::prune(site)?;
    Ok(())
}
