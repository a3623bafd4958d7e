//! Planning: what an apply would do on this site, derived from what the site actually has (the
//! installed release, its config version, each database's recorded history) and the verified
//! manifest. `plan` prints it; `apply` executes it. Every refusal (exit 4) happens here, before
//! anything on the site changes.

use std::path::Path;

use bundle_core::manifest::Manifest;
use bundle_core::version::{parse_release, SchemaVersion};
use serde::Serialize;

use crate::db::{self, DbState, PlannedStep, Step, StepFile, StepKind};
use crate::error::{ErrorKind, InstallError, Result};
use crate::site::Site;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    CleanInstall,
    Upgrade,
    Downgrade,
    Reinstall,
    NothingToDo,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigPlan {
    pub file: String,
    /// Config version of the installed release (none on a clean install: defaults are written).
    pub from_version: Option<u32>,
    pub to_version: u32,
    /// Converter files to run, in order.
    pub converters: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbPlan {
    pub name: String,
    pub engine: db::EngineKind,
    pub path: String,
    /// `clean`, or the version recorded in the database.
    pub current: String,
    pub target: SchemaVersion,
    pub steps: Vec<PlannedStep>,
    /// Recorded as the database's version before the steps (`--baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<SchemaVersion>,
    /// Whether the release being replaced can still run on the database afterwards (same major):
    /// then a later code rollback keeps all data.
    pub old_release_compatible: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub app: String,
    pub from: Option<String>,
    pub to: String,
    pub kind: PlanKind,
    pub config: Option<ConfigPlan>,
    pub databases: Vec<DbPlan>,
    pub hooks: Vec<String>,
    pub backup: bool,
    pub space: Space,
    /// `releases/<to>` exists (a release kept after a rollback) and is replaced.
    pub replaces_kept: bool,
    /// A delta bundle: its base and where each file it leaves out comes from on this site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<crate::transaction::delta::DeltaPlan>,
    /// What the bundle's key rotation statements do here (none: not shown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_rotations: Vec<bundle_core::rotation::RotationOutcome>,
    /// The site interpreter's tags (filled by [`Plan::choose_wheels`]; absent when nothing is to do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_tags: Option<crate::python::select::SiteTags>,
    /// The wheel installed for each distribution, chosen for the site's interpreter.
    pub wheels: Vec<crate::python::select::ChosenWheel>,
}

/// Disk space the apply needs under the site root, against what is free there.
#[derive(Debug, Clone, Serialize)]
pub struct Space {
    /// The verified payload, kept in the release (wheels the store holds and files a delta bundle
    /// leaves out excepted: they are linked or come from the site).
    pub payload_bytes: u64,
    /// The venv, estimated as three times the size of the wheels the store does not hold yet:
    /// wheels are deflated zips, and byte-compiled files come on top of the unpacked sources.
    pub venv_estimate_bytes: u64,
    /// Backups of every database that will be migrated.
    pub backup_bytes: u64,
    pub needed_bytes: u64,
    pub free_bytes: Option<u64>,
}

impl Space {
    pub fn fits(&self) -> bool {
        self.free_bytes.is_none_or(|f| f >= self.needed_bytes)
    }
}

/// Whether this process may write `path` (access(2) sees read-only mounts and immutable files even
/// for root).
#[allow(unsafe_code)]
fn writable(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: access only reads the C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Free bytes for an unprivileged writer on the file system holding `path` (or its nearest
/// existing ancestor, for a site that does not exist yet).
#[allow(unsafe_code)]
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we pass for a valid C path.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Highest release sequence accepted at all.
pub(crate) const MAX_SEQUENCE: u64 = 1_000_000_000_000_000_000;
/// Largest step forward from the highest sequence a site has installed (a thousand major versions
/// in the derived numbering of `bundle-spec/spec.md`).
pub const MAX_SEQUENCE_JUMP: u64 = 1_000_000_000_000_000;

/// Options that change what is allowed.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub allow_downgrade: bool,
    pub reinstall: bool,
    /// `--baseline DB=VERSION`: declare an existing database without history to be at VERSION.
    pub baseline: Vec<(String, SchemaVersion)>,
}

/// The steps of each database as shipped, with their files at their place in the new release.
pub(crate) fn db_steps(
    manifest: &Manifest,
    db: &bundle_core::manifest::Database,
    release_bundle_dir: &Path,
) -> Vec<Step> {
    let file = |path: &Option<String>, kind: StepKind, version: SchemaVersion| -> Option<StepFile> {
        let path = path.as_ref()?;
        let entry = manifest.file(path)?;
        Some(StepFile {
            version,
            file: path.rsplit('/').next().unwrap_or(path).to_string(),
            path: release_bundle_dir.join(path),
            sha256: entry.sha256.clone(),
            kind,
        })
    };
    db.steps
        .iter()
        .map(|s| Step {
            version: s.version,
            up: file(&s.up, StepKind::Sql, s.version),
            data: file(&s.data, StepKind::Python, s.version),
            down: file(&s.down, StepKind::Sql, s.version),
        })
        .collect()
}

/// Plans applying `manifest` (identified by `bundle_id`) to `site`.
pub(crate) fn plan(site: &Site, manifest: &Manifest, bundle_id: &str, opts: &PlanOptions) -> Result<Plan> {
    let installed = against_installed(site, manifest, bundle_id, opts)?;
    let kind = installed.kind;
    let replaces_kept = kept_release_replaced(site, manifest, kind)?;
    check_sequence(site, manifest, kind, opts)?;
    let config = config_plan(manifest, installed.manifest.as_ref())?;
    let databases = plan_databases(site, manifest, kind, installed.manifest.as_ref(), opts)?;
    let hooks = hook_names(manifest);
    let backup = databases.iter().any(|d| !d.steps.is_empty() || d.baseline.is_some());
    check_data_writable(site, &databases)?;
    let space = space_needed(site, manifest, &databases, backup, kind);
    Ok(Plan {
        app: manifest.app.clone(),
        from: installed.current,
        to: manifest.version.clone(),
        kind,
        config,
        databases,
        hooks,
        backup,
        space,
        replaces_kept,
        key_rotations: Vec::new(),
        site_tags: None,
        wheels: Vec::new(),
        delta: None,
    })
}

/// The installed release as the bundle meets it.
struct Installed {
    /// The version `current` points at (none on a clean install).
    current: Option<String>,
    /// Its manifest.
    manifest: Option<Manifest>,
    /// What installing the bundle over it amounts to.
    kind: PlanKind,
}

/// Checks the bundle against the installed release: the same application, and a version step the
/// options allow (downgrades, bundles that cannot upgrade it and second builds are refused).
fn against_installed(site: &Site, manifest: &Manifest, bundle_id: &str, opts: &PlanOptions) -> Result<Installed> {
    let current = site.current_version().map_err(|e| InstallError::io("reading `current`", e))?;
    let new_version = parse_release(&manifest.version).map_err(|e| InstallError::refused(ErrorKind::BadVersion, e))?;
    let Some(cur) = current else {
        return Ok(Installed { current: None, manifest: None, kind: PlanKind::CleanInstall });
    };
    let old = site.release_manifest(&cur).map_err(|e| {
        InstallError::attention(
            ErrorKind::CurrentReleaseUnreadable,
            format!("the installed release {cur} has no readable manifest: {e}"),
        )
        .with_source(e)
    })?;
    if old.app != manifest.app {
        return Err(InstallError::refused(
            ErrorKind::WrongApp,
            format!("this site runs `{}`, the bundle is for `{}`", old.app, manifest.app),
        ));
    }
    let cur_v = parse_release(&cur).map_err(|e| InstallError::attention(ErrorKind::BadVersion, e))?;
    let from_v = parse_release(&manifest.upgrades_from).map_err(|e| InstallError::refused(ErrorKind::BadVersion, e))?;
    let kind = if cur_v == new_version {
        same_version(site, manifest, bundle_id, opts, &cur)?
    } else if cur_v > new_version {
        if !opts.allow_downgrade {
            return Err(InstallError::refused(
                ErrorKind::Downgrade,
                format!("the site runs {cur}, newer than the bundle's {}", manifest.version),
            )
            .with_hint(
                "pass --allow-downgrade to install an older release on purpose, or use `bundle-install rollback`",
            ));
        }
        PlanKind::Downgrade
    } else {
        if cur_v < from_v {
            return Err(InstallError::refused(
                ErrorKind::TooOld,
                format!(
                    "the site runs {cur}, older than {}, the oldest release this bundle upgrades",
                    manifest.upgrades_from
                ),
            )
            .with_hint(format!("install an intermediate bundle that upgrades from {cur} first")));
        }
        PlanKind::Upgrade
    };
    Ok(Installed { current: Some(cur), manifest: Some(old), kind })
}

/// The bundle carries the installed version `cur`: nothing to do when it is the very bundle
/// installed, refused when it is another build of that version.
fn same_version(site: &Site, manifest: &Manifest, bundle_id: &str, opts: &PlanOptions, cur: &str) -> Result<PlanKind> {
    let info = site.release_info(cur).ok();
    if info.as_ref().map(|i| i.bundle_id.as_str()) == Some(bundle_id) {
        Ok(PlanKind::NothingToDo)
    } else if opts.reinstall {
        // Releases live at releases/<version> and venvs are tied to their path, so a second
        // build of the same version cannot be staged beside the running one yet.
        Err(InstallError::refused(
            ErrorKind::ReinstallUnsupported,
            format!(
                "{} {cur} is installed from a different bundle; reinstalling a version in place is not supported yet",
                manifest.app
            ),
        )
        .with_hint("release the fix under a new version number"))
    } else {
        Err(InstallError::refused(
            ErrorKind::SameVersionDifferentContent,
            format!("{} {cur} is installed from a different bundle than this one", manifest.app),
        )
        .with_hint("release the change under a new version number; installing a second build of the same version is not supported"))
    }
}

/// Whether `releases/<to>` holds a kept copy of this version that the apply sets aside; a directory
/// there that this installer did not complete is refused.
fn kept_release_replaced(site: &Site, manifest: &Manifest, kind: PlanKind) -> Result<bool> {
    // A kept copy of this version (left by a rollback) is stale: its config was converted from an
    // older config and its place is needed for the venv. It is set aside, and deleted on commit.
    let existing = site.release_dir(&manifest.version);
    let replaces_kept = kind != PlanKind::NothingToDo && existing.symlink_metadata().is_ok();
    if replaces_kept {
        let ours = !existing.join(crate::site::INCOMPLETE).exists()
            && site
                .release_info(&manifest.version)
                .is_ok_and(|i| i.app == manifest.app && i.version == manifest.version);
        if !ours {
            return Err(InstallError::refused(
                ErrorKind::ForeignReleaseDir,
                format!(
                    "{} exists but is not a release this installer completed; it is left alone",
                    existing.display()
                ),
            )
            .with_hint("move it out of releases/ (it may hold someone's files), then apply again"));
        }
    }
    Ok(replaces_kept)
}

/// Refuses an implausible sequence number and, unless downgrading on purpose, one below the
/// highest this site has installed.
fn check_sequence(site: &Site, manifest: &Manifest, kind: PlanKind, opts: &PlanOptions) -> Result<()> {
    let highest = crate::site::state::highest_sequence(site)?;
    // A fast-forward attack (a stolen key signing sequence u64::MAX) would lock the site out of every
    // later release; no flag overrides this.
    let jump = highest.map(|h| manifest.sequence.saturating_sub(h)).unwrap_or(0);
    if manifest.sequence > MAX_SEQUENCE || jump > MAX_SEQUENCE_JUMP {
        return Err(InstallError::refused(
            ErrorKind::AbsurdSequence,
            format!(
                "bundle sequence {} is implausible (the site is at {}; at most {MAX_SEQUENCE_JUMP} ahead and {MAX_SEQUENCE} in all are accepted)",
                manifest.sequence,
                highest.map(|h| h.to_string()).unwrap_or_else(|| "none".into())
            ),
        )
        .with_hint("this bundle may be signed with a stolen key; report it to the release engineer"));
    }
    if let Some(highest) = highest {
        if manifest.sequence < highest && !opts.allow_downgrade && kind != PlanKind::NothingToDo {
            return Err(InstallError::refused(
                ErrorKind::LowerSequence,
                format!(
                    "bundle sequence {} is lower than {highest}, the highest this site has installed",
                    manifest.sequence
                ),
            )
            .with_hint("pass --allow-downgrade to install an older release on purpose"));
        }
    }
    Ok(())
}

/// How the new release's config comes about: defaults, or the installed config through the
/// converters between the two versions. A config newer than the bundle's is refused.
fn config_plan(manifest: &Manifest, old_manifest: Option<&Manifest>) -> Result<Option<ConfigPlan>> {
    let config = manifest.config.as_ref().map(|c| {
        let from_version = old_manifest.and_then(|m| m.config.as_ref()).map(|oc| oc.version);
        let converters = match from_version {
            Some(f) => {
                c.converters.iter().filter(|x| x.from >= f && x.to <= c.version).map(|x| x.path.clone()).collect()
            }
            None => Vec::new(),
        };
        ConfigPlan { file: c.file.clone(), from_version, to_version: c.version, converters }
    });
    if let Some(cp) = &config {
        if let Some(f) = cp.from_version {
            if f > cp.to_version {
                return Err(InstallError::refused(
                    ErrorKind::ConfigNewer,
                    format!(
                        "the installed config is version {f}, newer than the bundle's {}; converters only go forward",
                        cp.to_version
                    ),
                ));
            }
        }
    }
    Ok(config)
}

/// Chooses the steps of every declared database from what it records, checking `--baseline`
/// against what each holds and what backing up will need (server engines).
fn plan_databases(
    site: &Site,
    manifest: &Manifest,
    kind: PlanKind,
    old_manifest: Option<&Manifest>,
    opts: &PlanOptions,
) -> Result<Vec<DbPlan>> {
    for (name, _) in &opts.baseline {
        if manifest.database(name).is_none() {
            return Err(InstallError::usage(
                ErrorKind::UnknownDatabase,
                format!("--baseline names `{name}`, which the bundle does not declare"),
            ));
        }
    }
    let release_bundle = site.release_dir(&manifest.version).join("bundle");
    let mut databases = Vec::new();
    for db in &manifest.databases {
        let engine_kind = db::EngineKind::of(&db.name, &db.engine)?;
        let mut engine = db::open(&db.name, engine_kind, &site.root, &db.path)?;
        let mut state = engine.inspect()?;
        engine.close()?;
        let requested = opts.baseline.iter().find(|(n, _)| n == &db.name).map(|(_, v)| *v);
        let baseline = baseline(&db.name, &mut state, requested)?;
        let steps = db_steps(manifest, db, &release_bundle);
        let planned =
            if kind == PlanKind::NothingToDo { Vec::new() } else { db::plan_up(&db.name, &steps, &state, db.schema)? };
        if !planned.is_empty() {
            // Before anything changes: what backing up and restoring will need (server engines).
            db::open(&db.name, engine_kind, &site.root, &db.path)?.preflight()?;
        }
        let after = planned.last().map(|s| s.schema_after).or(state.version());
        let old_schema = old_manifest.and_then(|m| m.database(&db.name)).map(|d| d.schema);
        databases.push(DbPlan {
            name: db.name.clone(),
            engine: engine_kind,
            path: db.path.clone(),
            current: match &state {
                DbState::Clean => "clean".into(),
                DbState::Unversioned { .. } => "unversioned".into(),
                DbState::Versioned { version, .. } => version.to_string(),
            },
            target: db.schema,
            steps: planned,
            baseline,
            old_release_compatible: old_schema.zip(after).map(|(o, a)| o.runs_on(a)),
        });
    }
    Ok(databases)
}

/// The `--baseline` version `requested` for database `name`, accepted only for a database with
/// tables but no history; `state` then reads as if it were recorded.
fn baseline(name: &str, state: &mut DbState, requested: Option<SchemaVersion>) -> Result<Option<SchemaVersion>> {
    match (&*state, requested) {
        (DbState::Unversioned { .. }, Some(v)) => {
            // Plan as if the baseline were recorded; the apply records it after the backup.
            *state = DbState::Versioned { version: v, history: Vec::new() };
            Ok(Some(v))
        }
        (_, Some(v)) => Err(InstallError::usage(
            ErrorKind::BaselineNotNeeded,
            format!(
                "database `{}` is {}; --baseline {}={v} only applies to a database with tables but no history",
                name,
                if matches!(state, DbState::Clean) { "empty" } else { "already versioned" },
                name
            ),
        )),
        _ => Ok(None),
    }
}

/// The hooks the bundle ships, in the order the plan lists them.
fn hook_names(manifest: &Manifest) -> Vec<String> {
    [
        ("pre_apply", &manifest.hooks.pre_apply),
        ("post_apply", &manifest.hooks.post_apply),
        ("health_check", &manifest.hooks.health_check),
    ]
    .into_iter()
    .filter(|(_, h)| h.is_some())
    .map(|(n, _)| n.to_string())
    .collect()
}

/// Refuses when an SQLite database the apply changes, or the directory it is made in, cannot be
/// written.
fn check_data_writable(site: &Site, databases: &[DbPlan]) -> Result<()> {
    // A database that cannot be written would fail its first step and then its restore: say so now.
    for d in
        databases.iter().filter(|d| d.engine == db::EngineKind::Sqlite && (!d.steps.is_empty() || d.baseline.is_some()))
    {
        let file = site.root.join(&d.path);
        // The nearest existing directory is where the file (and any missing parents) will be made.
        let mut dir = file.parent().map(Path::to_path_buf).unwrap_or_else(|| site.root.clone());
        while !dir.exists() {
            match dir.parent() {
                Some(p) => dir = p.to_path_buf(),
                None => break,
            }
        }
        for p in [Some(dir), file.exists().then_some(file)].into_iter().flatten() {
            if !writable(&p) {
                return Err(InstallError::failed(
                    ErrorKind::DataNotWritable,
                    format!("database `{}`: {} is not writable (read-only mount or immutable?)", d.name, p.display()),
                )
                .with_hint("make the site's data/ writable, then apply again; nothing was changed"));
            }
        }
    }
    Ok(())
}

/// The disk space the apply needs: payload, venv estimate and backups, against what is free.
fn space_needed(site: &Site, manifest: &Manifest, databases: &[DbPlan], backup: bool, kind: PlanKind) -> Space {
    // Wheels the site's store already holds cost neither payload (the release links the stored
    // wheel) nor venv space (their files are linked); nor do files a delta bundle leaves out.
    let stored = |f: &&bundle_core::manifest::FileEntry| {
        site.store().join("wheels").join(&f.sha256).join("entry.json").is_file()
    };
    let wheel_bytes: u64 =
        manifest.wheels.iter().filter_map(|w| manifest.file(w)).filter(|f| !stored(f)).map(|f| f.size).sum();
    let payload_bytes: u64 =
        manifest.files.iter().filter(|f| !manifest.is_omitted(&f.path) && !stored(f)).map(|f| f.size).sum();
    let backup_bytes = if backup {
        databases
            .iter()
            .filter(|d| d.engine == db::EngineKind::Sqlite)
            .filter_map(|d| std::fs::metadata(site.root.join(&d.path)).ok())
            .map(|m| m.len())
            .sum()
    } else {
        0
    };
    let mut space = Space {
        payload_bytes,
        venv_estimate_bytes: 3 * wheel_bytes,
        backup_bytes,
        needed_bytes: 0,
        free_bytes: free_bytes(&site.root),
    };
    space.needed_bytes = if kind == PlanKind::NothingToDo {
        0
    } else {
        space.payload_bytes + space.venv_estimate_bytes + space.backup_bytes
    };
    space
}

impl Plan {
    /// Picks the wheels for the site's interpreter (`incompatible_wheel`, exit 4, when a
    /// distribution has none) and sizes the venv from the chosen wheels only.
    pub fn choose_wheels(
        &mut self,
        site: &Site,
        manifest: &Manifest,
        interp: &crate::python::interpreter::Interpreter,
    ) -> Result<()> {
        let env = interp.tags.environment();
        self.wheels = crate::python::select::choose(manifest, &env)?;
        self.site_tags = Some(crate::python::select::SiteTags::of(&env));
        // Only the chosen wheels are unpacked (three times their size, as in `plan`).
        // Those the site's store holds are linked, not unpacked.
        let stored = |f: &&bundle_core::manifest::FileEntry| {
            site.store().join("wheels").join(&f.sha256).join("entry.json").is_file()
        };
        let chosen: u64 =
            self.wheels.iter().filter_map(|w| manifest.file(&w.wheel)).filter(|f| !stored(f)).map(|f| f.size).sum();
        self.space.needed_bytes -= self.space.venv_estimate_bytes;
        self.space.venv_estimate_bytes = 3 * chosen;
        self.space.needed_bytes += self.space.venv_estimate_bytes;
        Ok(())
    }

    /// The plan as a readable checklist.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let what = match self.kind {
            PlanKind::CleanInstall => format!("clean install of {} {}", self.app, self.to),
            PlanKind::Upgrade => format!("upgrade {} {} → {}", self.app, self.from.as_deref().unwrap_or("?"), self.to),
            PlanKind::Downgrade => {
                format!("DOWNGRADE {} {} → {}", self.app, self.from.as_deref().unwrap_or("?"), self.to)
            }
            PlanKind::Reinstall => format!("reinstall {} {}", self.app, self.to),
            PlanKind::NothingToDo => return format!("{} {} is already installed: nothing to do\n", self.app, self.to),
        };
        out.push_str(&format!("{what}\n"));
        self.render_staging(&mut out);
        self.render_config(&mut out);
        self.render_switch(&mut out);
        self.render_disk(&mut out);
        self.render_rollback_note(&mut out);
        out
    }

    /// The steps taken while the old release still runs: trust changes, the kept release set
    /// aside, and the new release staged with the wheels chosen for the site.
    fn render_staging(&self, out: &mut String) {
        for r in &self.key_rotations {
            let mark = if r.status == "applied" { "[ ]" } else { " - " };
            out.push_str(&format!("  {mark} trust: {} ({})\n", r.reason, r.status));
        }
        if self.replaces_kept {
            out.push_str(&format!("  [ ] set aside the kept releases/{} (replaced by this bundle's)\n", self.to));
        }
        if let Some(d) = &self.delta {
            out.push_str(&format!(
                "  delta bundle on {} {}: {} files it leaves out are taken from this site (store/ or a kept release)\n",
                d.base_app,
                d.base_version,
                d.files.len()
            ));
        }
        out.push_str(&format!(
            "  [ ] stage releases/{} (venv, wheels, bytecode) beside the running release\n",
            self.to
        ));
        if let Some(t) = &self.site_tags {
            out.push_str(&format!("      wheels for {}:\n", t.summary));
        }
        for w in &self.wheels {
            let file = w.wheel.rsplit('/').next().unwrap_or(&w.wheel);
            let others =
                if w.passed_over.is_empty() { String::new() } else { format!(" (of {})", w.passed_over.len() + 1) };
            out.push_str(&format!("        {} {}: {file} [{}]{others}\n", w.name, w.version, w.tag));
        }
    }

    /// How the new release's config is written: defaults, a copy, or a conversion.
    fn render_config(&self, out: &mut String) {
        if let Some(c) = &self.config {
            match c.from_version {
                None => out.push_str(&format!("  [ ] config {}: write defaults (version {})\n", c.file, c.to_version)),
                Some(f) if c.converters.is_empty() => {
                    out.push_str(&format!("  [ ] config {}: copy as is (version {f})\n", c.file))
                }
                Some(f) => out.push_str(&format!(
                    "  [ ] config {}: convert {f} → {} via {}\n",
                    c.file,
                    c.to_version,
                    c.converters.iter().map(|p| p.rsplit('/').next().unwrap_or(p)).collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }

    /// The switch itself: `pre_apply`, backup, every database step, the swap of `current`, then
    /// the remaining hooks.
    fn render_switch(&self, out: &mut String) {
        if self.hooks.iter().any(|h| h == "pre_apply") {
            out.push_str("  [ ] hook pre_apply\n");
        }
        if self.backup {
            out.push_str("  [ ] back up every database to backups/\n");
        }
        for db in &self.databases {
            if let Some(b) = db.baseline {
                out.push_str(&format!("  [ ] database {}: record baseline {b} (tables exist, no history)\n", db.name));
            }
            if db.steps.is_empty() {
                out.push_str(&format!(
                    "  [ ] database {} ({}): at {}, nothing to migrate (release needs {})\n",
                    db.name, db.engine, db.current, db.target
                ));
            }
            for s in &db.steps {
                let kind = if s.version.minor == 0 { "major" } else { "minor" };
                out.push_str(&format!(
                    "  [ ] database {}: {} {} ({kind}) {}\n",
                    db.name,
                    s.direction.as_str(),
                    s.version,
                    s.file.file
                ));
            }
        }
        out.push_str(&format!("  [ ] switch current → releases/{}\n", self.to));
        for h in self.hooks.iter().filter(|h| *h != "pre_apply") {
            out.push_str(&format!("  [ ] hook {h}\n"));
        }
    }

    /// The disk line: what the apply needs against what is free.
    fn render_disk(&self, out: &mut String) {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
        out.push_str(&format!(
            "disk: needs about {} (payload {}, venv ~{}, backups {}), {} free{}\n",
            mib(self.space.needed_bytes),
            mib(self.space.payload_bytes),
            mib(self.space.venv_estimate_bytes),
            mib(self.space.backup_bytes),
            self.space.free_bytes.map(mib).unwrap_or_else(|| "unknown".into()),
            if self.space.fits() { "" } else { "  — DOES NOT FIT" }
        ));
    }

    /// What rolling back to the replaced release would take afterwards (none on a clean install).
    fn render_rollback_note(&self, out: &mut String) {
        if let Some(from) = &self.from {
            let breaking: Vec<&str> = self
                .databases
                .iter()
                .filter(|d| d.old_release_compatible == Some(false))
                .map(|d| d.name.as_str())
                .collect();
            if breaking.is_empty() {
                out.push_str(&format!("rollback to {from} later: code only, data written after the upgrade is kept\n"));
            } else {
                out.push_str(&format!(
                    "rollback to {from} later: needs down scripts or a restore for {} (major schema change)\n",
                    breaking.join(", ")
                ));
            }
        }
    }
}
