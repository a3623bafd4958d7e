//! The database layer of the installer: the engine-neutral model (step files, history, state), the
//! pure planning functions that decide which migrations run (`plan_up`, `plan_down`), and the
//! [`Engine`] trait each database engine implements: SQLite (`sqlite.rs`), PostgreSQL (`postgres.rs`)
//! and MariaDB/MySQL (`mysql.rs`); the server engines share `server.rs` (connections from the site,
//! password masking, SQL splitting, dump programs).
//!
//! Semantics, in one place (bundle-spec/migrations.md):
//! - A database's schema version is `schema_after` of the last *successful* row of
//!   `bundle_schema_history`; no table or no successful row means `0.0`.
//! - Release code built for schema `R` runs on a database at `D` iff `R.runs_on(D)`
//!   (same major, `D.minor >= R.minor`).
//! - A step at version `v` may have an up `.sql`, a data `.py` (run after the `.sql`) and a
//!   `.down.sql`. When a step has both parts, its `.sql` row records the *previous* version as
//!   `schema_after` and only the `.py` row records `v`: code for `v` needs the data migrated too, so
//!   the database only "is" at `v` once both parts ran. A rerun after a failed `.py` resumes with the
//!   `.py` alone (see `plan_up`).

mod mysql;
mod pg_tls;
mod postgres;
pub mod server;
mod sqlite;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bundle_core::version::SchemaVersion;
use serde::{Deserialize, Serialize};

/// The table every engine keeps its migration history in.
pub const HISTORY_TABLE: &str = "bundle_schema_history";
/// The `file` recorded for a baseline row (no script ran).
pub const BASELINE_FILE: &str = "<baseline>";

/// What a history row (or a planned step) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    Baseline,
}

impl Direction {
    /// The text stored in the history table (stable).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Baseline => "baseline",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            "baseline" => Some(Direction::Baseline),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step file is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Sql,
    Python,
}

/// One migration file as shipped in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFile {
    pub version: SchemaVersion,
    /// The name as shipped, e.g. `1.1_add_tags.sql`; this is what history rows record.
    pub file: String,
    /// Where it is on disk.
    pub path: PathBuf,
    /// Hex sha256 of its bytes.
    pub sha256: String,
    pub kind: StepKind,
}

impl StepFile {
    /// Reads and hashes `path`; the recorded name is its file name.
    pub fn from_path(version: SchemaVersion, path: &Path, kind: StepKind) -> std::io::Result<StepFile> {
        let (sha256, _) = sha256_file(path)?;
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(StepFile { version, file, path: path.to_path_buf(), sha256, kind })
    }
}

/// Everything shipped at one schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub version: SchemaVersion,
    /// `<v>_<slug>.sql`
    pub up: Option<StepFile>,
    /// `<v>_<slug>.py`, run after `up`
    pub data: Option<StepFile>,
    /// `<v>_<slug>.down.sql`
    pub down: Option<StepFile>,
}

impl Step {
    pub fn new(version: SchemaVersion) -> Step {
        Step { version, up: None, data: None, down: None }
    }

    /// Every file of the step.
    pub fn files(&self) -> impl Iterator<Item = &StepFile> {
        self.up.iter().chain(self.data.iter()).chain(self.down.iter())
    }
}

/// Which part of a step a file name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepRole {
    Up,
    Data,
    Down,
}

/// Parses a migration file name: `<MAJOR>.<MINOR>_<slug>.sql`, `….down.sql` or `….py`.
/// `Ok(None)` for names that are not migration-like at all (README, …), an error for a `.sql`/`.py`
/// file that does not follow the naming.
pub fn parse_step_name(name: &str) -> Result<Option<(SchemaVersion, StepRole)>, String> {
    let (stem, role) = if let Some(s) = name.strip_suffix(".down.sql") {
        (s, StepRole::Down)
    } else if let Some(s) = name.strip_suffix(".sql") {
        (s, StepRole::Up)
    } else if let Some(s) = name.strip_suffix(".py") {
        (s, StepRole::Data)
    } else {
        return Ok(None);
    };
    let bad = || format!("`{name}` is not named <MAJOR>.<MINOR>_<slug>.sql / .down.sql / .py");
    let (version, slug) = stem.split_once('_').ok_or_else(bad)?;
    let version: SchemaVersion = version.parse().map_err(|_| bad())?;
    if slug.is_empty() || !slug.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
        return Err(bad());
    }
    Ok(Some((version, role)))
}

/// Reads a migrations directory into steps sorted by version, hashing every file. Other files
/// (README, `__pycache__/`) are ignored; badly named `.sql`/`.py` files, two files for the same role
/// at one version, and a `.down.sql` with nothing to revert are errors.
pub fn load_steps(db: &str, dir: &Path) -> Result<Vec<Step>, DbError> {
    let io = |e: std::io::Error| DbError::Io { db: db.into(), path: dir.display().to_string(), message: e.to_string() };
    let mut steps: BTreeMap<SchemaVersion, Step> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_type().map_err(io)?.is_file() {
            continue;
        }
        let name = entry.file_name().into_string().map_err(|n| DbError::Steps {
            db: db.into(),
            message: format!("file name {n:?} in {} is not UTF-8", dir.display()),
        })?;
        let Some((version, role)) =
            parse_step_name(&name).map_err(|message| DbError::Steps { db: db.into(), message })?
        else {
            continue;
        };
        let kind = if role == StepRole::Data { StepKind::Python } else { StepKind::Sql };
        let file = StepFile::from_path(version, &entry.path(), kind).map_err(io)?;
        let step = steps.entry(version).or_insert_with(|| Step::new(version));
        let slot = match role {
            StepRole::Up => &mut step.up,
            StepRole::Data => &mut step.data,
            StepRole::Down => &mut step.down,
        };
        if let Some(other) = slot {
            return Err(DbError::Steps {
                db: db.into(),
                message: format!("two migrations for the same part of {version}: {} and {name}", other.file),
            });
        }
        *slot = Some(file);
    }
    let steps: Vec<Step> = steps.into_values().collect();
    chain(db, &steps)?;
    Ok(steps)
}

/// One row of `bundle_schema_history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub id: i64,
    /// The version of the step the row is about.
    pub version: SchemaVersion,
    pub file: String,
    pub sha256: String,
    pub direction: Direction,
    /// UTC, RFC 3339.
    pub applied_at: String,
    /// The release that ran it.
    pub release: String,
    pub success: bool,
    /// The database's schema version once this row's work was committed.
    pub schema_after: SchemaVersion,
}

/// `schema_after` of the last successful row (rows in id order), or `0.0`.
pub fn current_version(history: &[HistoryRow]) -> SchemaVersion {
    history.iter().rev().find(|r| r.success).map(|r| r.schema_after).unwrap_or(SchemaVersion::CLEAN)
}

/// Steps that started and never finished: a `success = false` row with no later successful row of
/// the same file. On MariaDB/MySQL (DDL commits implicitly) such a row may mean a half-applied change:
/// the database needs its backup restored, and `status` must not call it healthy. On SQLite and
/// PostgreSQL a failed step was rolled back whole, so its row only says it was tried; after a
/// successful retry it is no longer unfinished.
pub fn unfinished_steps(history: &[HistoryRow]) -> Vec<&HistoryRow> {
    history
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            !r.success
                && !history[i + 1..]
                    .iter()
                    .any(|later| later.success && later.file == r.file && later.direction == r.direction)
        })
        .map(|(_, r)| r)
        .collect()
}

/// What a database looks like before planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DbState {
    /// No history table and no user tables (including: the file does not exist).
    Clean,
    /// User tables but no history: the installer refuses unless told `--baseline VERSION`.
    Unversioned { tables: Vec<String> },
    /// Has a history table (its rows in id order, failures included).
    Versioned { version: SchemaVersion, history: Vec<HistoryRow> },
}

impl DbState {
    /// The schema version, `None` for an unversioned database.
    pub fn version(&self) -> Option<SchemaVersion> {
        match self {
            DbState::Clean => Some(SchemaVersion::CLEAN),
            DbState::Unversioned { .. } => None,
            DbState::Versioned { version, .. } => Some(*version),
        }
    }

    pub fn history(&self) -> &[HistoryRow] {
        match self {
            DbState::Versioned { history, .. } => history,
            _ => &[],
        }
    }
}

/// One file to run, in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub version: SchemaVersion,
    pub file: StepFile,
    pub direction: Direction,
    /// What the history row of this file records as the database's version afterwards.
    pub schema_after: SchemaVersion,
}

/// An applied file whose shipped bytes differ from what was recorded when it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftItem {
    pub file: String,
    pub recorded: String,
    pub shipped: String,
}

/// Every drifted file: a successful `up` row whose file the bundle ships with another sha256.
/// Files the bundle does not ship at all are not drift (old steps may be pruned from a bundle).
pub fn find_drift(steps: &[Step], history: &[HistoryRow]) -> Vec<DriftItem> {
    let shipped: HashMap<&str, &str> =
        steps.iter().flat_map(Step::files).map(|f| (f.file.as_str(), f.sha256.as_str())).collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for row in history.iter().filter(|r| r.success && r.direction == Direction::Up) {
        if let Some(&sha) = shipped.get(row.file.as_str()) {
            if !sha.eq_ignore_ascii_case(&row.sha256) && seen.insert((row.file.clone(), row.sha256.clone())) {
                out.push(DriftItem { file: row.file.clone(), recorded: row.sha256.clone(), shipped: sha.to_string() });
            }
        }
    }
    out
}

/// Checks the shape of a set of steps and returns them sorted by version: one step per version,
/// files labelled with their step's version, and every step has something to run up.
fn chain<'a>(db: &str, steps: &'a [Step]) -> Result<Vec<&'a Step>, DbError> {
    let mut sorted: Vec<&Step> = steps.iter().collect();
    sorted.sort_by_key(|s| s.version);
    for pair in sorted.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(DbError::Steps {
                db: db.into(),
                message: format!("version {} is listed twice", pair[0].version),
            });
        }
    }
    for s in &sorted {
        if s.up.is_none() && s.data.is_none() {
            let what = s.down.as_ref().map(|d| d.file.clone()).unwrap_or_default();
            return Err(DbError::Steps {
                db: db.into(),
                message: format!("version {} has no .sql or .py to apply (only `{what}`)", s.version),
            });
        }
        if let Some(f) = s.files().find(|f| f.version != s.version) {
            return Err(DbError::Steps {
                db: db.into(),
                message: format!("{} is labelled {} but filed under {}", f.file, f.version, s.version),
            });
        }
    }
    Ok(sorted)
}

/// Plans an upgrade of a database in `state` to schema `target`: every step with
/// `current < v <= target`, in version order (`.sql` before `.py` at a version).
///
/// Refusals: unversioned database; a database of a newer major than `target` (`Incompatible`);
/// drift of an applied file. Nothing to do (empty plan) when `target.runs_on(current)`.
/// The chain must be complete: `X.m` (m > 0) follows `X.(m-1)`, `X.0` follows some `(X-1).n`, except
/// that a clean database may start at any `X.0` (a bundle may ship a squashed starting point).
pub fn plan_up(db: &str, steps: &[Step], state: &DbState, target: SchemaVersion) -> Result<Vec<PlannedStep>, DbError> {
    let (current, history) = match state {
        DbState::Unversioned { tables } => {
            return Err(DbError::Unversioned { db: db.into(), tables: tables.clone() });
        }
        DbState::Clean => (SchemaVersion::CLEAN, &[][..]),
        DbState::Versioned { version, history } => (*version, &history[..]),
    };
    let chain = chain(db, steps)?;
    if current.major > target.major {
        return Err(DbError::Incompatible { db: db.into(), current, target });
    }
    if let Some(d) = find_drift(steps, history).into_iter().next() {
        return Err(DbError::Drift { db: db.into(), file: d.file, recorded: d.recorded, shipped: d.shipped });
    }
    if target.runs_on(current) {
        return Ok(Vec::new());
    }
    let needed: Vec<&Step> = chain.into_iter().filter(|s| s.version > current && s.version <= target).collect();
    if needed.last().map(|s| s.version) != Some(target) {
        return Err(DbError::Gap { db: db.into(), missing: target, from: current, target });
    }
    let mut prev = current;
    for s in &needed {
        let v = s.version;
        let ok = if v.minor > 0 {
            prev == SchemaVersion::new(v.major, v.minor - 1)
        } else {
            prev == SchemaVersion::CLEAN || prev.major + 1 == v.major
        };
        if !ok {
            let missing =
                if v.minor > 0 { SchemaVersion::new(v.major, v.minor - 1) } else { SchemaVersion::new(v.major - 1, 0) };
            return Err(DbError::Gap { db: db.into(), missing, from: current, target });
        }
        prev = v;
    }
    // Resume: the `.sql` of a two-part step already committed (its row is the last success) but the
    // `.py` did not; running the `.sql` again would fail on its own DDL.
    let last_ok = history.iter().rev().find(|r| r.success);
    let mut plan = Vec::new();
    let mut prev = current;
    for (i, s) in needed.iter().enumerate() {
        if let Some(up) = &s.up {
            let already = i == 0
                && s.data.is_some()
                && last_ok.is_some_and(|r| r.direction == Direction::Up && r.file == up.file && r.sha256 == up.sha256);
            if !already {
                let schema_after = if s.data.is_some() { prev } else { s.version };
                plan.push(PlannedStep { version: s.version, file: up.clone(), direction: Direction::Up, schema_after });
            }
        }
        if let Some(data) = &s.data {
            plan.push(PlannedStep {
                version: s.version,
                file: data.clone(),
                direction: Direction::Up,
                schema_after: s.version,
            });
        }
        prev = s.version;
    }
    Ok(plan)
}

/// Plans the database side of rolling the code back to a release built for schema `target`.
///
/// Empty when `target.runs_on(current)` (a code-only rollback keeps the data). Otherwise the
/// `.down.sql` of every version from the current one down to (excluding) the highest shipped version
/// that `target` code runs on, in reverse order. Any needed down script missing, or no shipped version
/// that `target` runs on, gives `NeedsRestore` (restoring the pre-upgrade backup is the only way).
pub fn plan_down(
    db: &str,
    steps: &[Step],
    state: &DbState,
    target: SchemaVersion,
) -> Result<Vec<PlannedStep>, DbError> {
    let current = match state {
        DbState::Unversioned { tables } => {
            return Err(DbError::Unversioned { db: db.into(), tables: tables.clone() });
        }
        DbState::Clean => SchemaVersion::CLEAN,
        DbState::Versioned { version, .. } => *version,
    };
    if target.runs_on(current) {
        return Ok(Vec::new());
    }
    if current < target {
        return Err(DbError::NotARollback { db: db.into(), current, target });
    }
    let chain = chain(db, steps)?;
    let mut plan = Vec::new();
    let mut missing = Vec::new();
    let mut at = current;
    let mut reachable = true;
    while !target.runs_on(at) {
        if at < target {
            // Went below every version of `target`'s major that could run it: nothing shipped lands there.
            reachable = false;
            break;
        }
        let prev = chain.iter().rev().map(|s| s.version).find(|v| *v < at).unwrap_or(SchemaVersion::CLEAN);
        match chain.iter().find(|s| s.version == at).and_then(|s| s.down.as_ref()) {
            Some(down) => plan.push(PlannedStep {
                version: at,
                file: down.clone(),
                direction: Direction::Down,
                schema_after: prev,
            }),
            None => missing.push(at),
        }
        at = prev;
    }
    if !missing.is_empty() || !reachable {
        return Err(DbError::NeedsRestore { db: db.into(), current, target, missing, reachable });
    }
    Ok(plan)
}

/// Where a database's backup went; the installer writes both databases' records to
/// `backups/<id>/record.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub db: String,
    pub engine: String,
    /// File name inside the backup directory; `None` when the database did not exist (a clean
    /// install): restoring such a record deletes the database.
    pub file: Option<String>,
    /// Hex BLAKE3 of the backup file (`None` without `file`): see [`backup_checksum`].
    #[serde(default)]
    pub blake3: Option<String>,
    /// Hex sha256 of the backup file, in records written before backups were checked with BLAKE3;
    /// still honoured when such a backup is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub bytes: u64,
    /// The database's schema version when the backup was taken.
    pub version: SchemaVersion,
    /// UTC, RFC 3339.
    pub taken_at: String,
}

impl BackupRecord {
    pub fn is_absent(&self) -> bool {
        self.file.is_none()
    }
}

/// Rows that differ between the live database and a backup, per table, matched by primary key
/// (rowid when the table has none). `changed` compares the columns both sides have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDiff {
    pub table: String,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

/// Rows and on-disk bytes of one data table (its indexes included), for a rehearsal's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStat {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
}

/// A server database copied for a rehearsal (see [`Engine::copy_to_scratch`]).
pub struct ScratchCopy {
    /// The copy's connection URL, credentials included: written only to the rehearsal's private
    /// `site.yaml`, never printed.
    pub url: String,
    /// The same, password masked, for messages.
    pub masked: String,
    /// How it was copied: `template` (`CREATE DATABASE … TEMPLATE`) or `dump` (dump and load).
    pub method: String,
}

/// What every scratch database of a rehearsal is called: `<live name>_rehearse_<tag>` (cut to
/// fit the servers' 63/64-character limits); `recover` drops only names of this form.
pub fn rehearsal_db_name(live: &str, tag: &str) -> String {
    let suffix = format!("_rehearse_{tag}");
    let keep = 60usize.saturating_sub(suffix.len());
    let mut head: String = live.chars().take(keep).collect();
    while head.len() > keep {
        head.pop();
    }
    format!("{head}{suffix}")
}

/// Whether `name` is a rehearsal's scratch database name.
pub fn is_rehearsal_db_name(name: &str) -> bool {
    name.rsplit_once("_rehearse_").is_some_and(|(head, tag)| {
        !head.is_empty() && !tag.is_empty() && tag.bytes().all(|c| c.is_ascii_alphanumeric())
    })
}

/// One database engine. Every method names the database in its errors; none of them leaves a
/// transaction open behind it, and none prints or returns a password (server URLs are masked).
pub trait Engine: Send {
    /// The database's name in the spec (`metadata`, `client`).
    fn name(&self) -> &str;
    /// `sqlite`, `postgres` or `mysql` (the manifest's names).
    fn engine(&self) -> &'static str;
    /// Where it is, for messages (a path, or a URL with its password masked).
    fn location(&self) -> String;
    /// Checks, before anything changes, what backing up and restoring this database will need: for
    /// the server engines the connection, the dump/restore programs (present, of one major version,
    /// able to talk to this server, allowed to dump this database) and, on MariaDB/MySQL, that no step
    /// was left half-applied. The installer calls it while planning a run that migrates. SQLite:
    /// nothing to check.
    fn preflight(&mut self) -> Result<(), DbError> {
        Ok(())
    }
    /// Takes the run lock of this database, waiting up to `wait` for another run (another node) to
    /// finish: held until the returned [`RunLock`] is dropped or released, on its own connection,
    /// so the engines opened per step meanwhile do not need to be kept. PostgreSQL: a session
    /// advisory lock; MariaDB/MySQL: `GET_LOCK`. SQLite: none (the site lock covers a local file).
    fn lock_for_run(&mut self, wait: Duration) -> Result<RunLock, DbError> {
        let _ = wait;
        Ok(RunLock::none(self.name()))
    }
    /// An engine on a new, empty scratch database of the same kind next to this one (same server),
    /// removed when that engine is closed or dropped: where a backup can be restored and replayed
    /// without touching the live database. Not available for SQLite (open a path in a scratch
    /// directory instead).
    fn scratch(&mut self) -> Result<Box<dyn Engine>, DbError> {
        Err(DbError::Config {
            db: self.name().into(),
            message: format!("the {} engine has no scratch databases; open a scratch path instead", self.engine()),
        })
    }
    /// Reads the state without changing anything (a missing SQLite file stays missing).
    fn inspect(&mut self) -> Result<DbState, DbError>;
    /// A consistent online copy into `dir`, fsynced, with its sha256.
    fn backup(&mut self, dir: &Path) -> Result<BackupRecord, DbError>;
    /// Makes the live database logically identical to the backup (deletes it for an absent record),
    /// after checking the backup's sha256.
    fn restore(&mut self, backup: &BackupRecord, dir: &Path) -> Result<(), DbError>;
    /// Runs one planned file and records it in the history, atomically for SQL; on failure the
    /// step's changes are rolled back and a `success = false` row is recorded when possible.
    /// `python` is the interpreter for `.py` steps.
    fn apply(&mut self, step: &PlannedStep, release: &str, python: Option<&Path>) -> Result<(), DbError>;
    /// Records that an existing unversioned (or empty) database is at `version`.
    fn baseline(&mut self, version: SchemaVersion, release: &str) -> Result<(), DbError>;
    /// What restoring `backup` would lose or bring back (history table excluded), non-empty tables
    /// only, sorted by name.
    fn diff_since(&mut self, backup: &BackupRecord, dir: &Path) -> Result<Vec<TableDiff>, DbError>;
    /// A deterministic logical dump (schema and rows, sorted) for comparing databases.
    fn dump(&mut self) -> Result<String, DbError>;
    /// Releases connections and locks (before the swap, before handing the database back to the app).
    fn close(&mut self) -> Result<(), DbError>;
    /// Rows and bytes of each data table (history excluded), sorted by name; empty for a database
    /// that does not exist. For a rehearsal's report.
    fn table_stats(&mut self) -> Result<Vec<TableStat>, DbError> {
        Ok(Vec::new())
    }
    /// The live database's own name on its server (none for SQLite).
    fn server_dbname(&self) -> Option<String> {
        None
    }
    /// For a rehearsal: copies this database into a new database `name` on the same server (see
    /// [`rehearsal_db_name`]), using `work` for any dump file; the live database is only read.
    /// SQLite has none (a rehearsal copies the file).
    fn copy_to_scratch(&mut self, name: &str, work: &Path) -> Result<ScratchCopy, DbError> {
        let _ = (name, work);
        Err(DbError::Config {
            db: self.name().into(),
            message: format!("the {} engine has no scratch databases", self.engine()),
        })
    }
    /// Drops the rehearsal scratch database `name` on this database's server, if it exists
    /// (`recover` after a killed rehearsal). Names not of the rehearsal form are refused.
    fn drop_rehearsal_db(&mut self, name: &str) -> Result<(), DbError> {
        let _ = name;
        Ok(())
    }
}

/// Refuses to drop anything but a rehearsal's scratch database, or the live database itself.
pub(crate) fn check_rehearsal_drop(db: &str, live: &str, name: &str) -> Result<(), DbError> {
    if !is_rehearsal_db_name(name) || name == live {
        return Err(DbError::Config {
            db: db.into(),
            message: format!("`{name}` is not a rehearsal's scratch database; not dropped"),
        });
    }
    Ok(())
}

/// Applies a plan in order, stopping at the first failure; returns how many files ran.
pub fn apply_plan(
    engine: &mut dyn Engine,
    plan: &[PlannedStep],
    release: &str,
    python: Option<&Path>,
) -> Result<usize, DbError> {
    for step in plan {
        engine.apply(step, release, python)?;
    }
    Ok(plan.len())
}

/// Engines `open` knows.
pub const ENGINES: &[&str] = &["sqlite", "postgres", "mysql"];

/// A run lock (see [`Engine::lock_for_run`]); released when dropped (or when the process dies: the
/// server ends the session and with it the lock).
pub struct RunLock {
    db: String,
    holder: Option<Box<dyn RunLockHolder>>,
}

/// What an engine keeps to hold its lock (its dedicated connection).
pub(crate) trait RunLockHolder: Send {
    fn release(&mut self) -> Result<(), String>;
}

impl RunLock {
    /// No lock (engines without one).
    pub fn none(db: &str) -> RunLock {
        RunLock { db: db.into(), holder: None }
    }

    pub(crate) fn held(db: &str, holder: Box<dyn RunLockHolder>) -> RunLock {
        RunLock { db: db.into(), holder: Some(holder) }
    }

    pub fn db(&self) -> &str {
        &self.db
    }

    /// Whether a lock is really held (false for SQLite).
    pub fn is_held(&self) -> bool {
        self.holder.is_some()
    }

    /// Releases now (dropping does the same, ignoring errors).
    pub fn release(mut self) -> Result<(), DbError> {
        if let Some(mut h) = self.holder.take() {
            h.release().map_err(|message| DbError::Engine {
                db: self.db.clone(),
                path: String::new(),
                context: "releasing the run lock".into(),
                message,
            })?;
        }
        Ok(())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Some(mut h) = self.holder.take() {
            let _ = h.release();
        }
    }
}

impl fmt::Debug for RunLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunLock({}, held: {})", self.db, self.is_held())
    }
}

/// How long a run waits for another run's lock on a server database: `BUNDLE_DB_LOCK_WAIT_SECS`, or
/// 30 minutes (a whole apply of another node, staging included, may hold it).
pub fn run_lock_wait() -> Duration {
    std::env::var("BUNDLE_DB_LOCK_WAIT_SECS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30 * 60))
}

/// Takes the run lock of every database given as `(name, engine, path)`, in name order (so two
/// nodes never deadlock on two databases), waiting [`run_lock_wait`]. Keep the result alive for the
/// whole run; SQLite databases are skipped without being opened.
pub fn lock_run<'a>(
    root: &Path,
    dbs: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<Vec<RunLock>, DbError> {
    let mut dbs: Vec<(&str, &str, &str)> = dbs.into_iter().filter(|(_, engine, _)| *engine != "sqlite").collect();
    dbs.sort();
    dbs.dedup();
    let wait = run_lock_wait();
    let mut locks = Vec::new();
    for (name, engine, path) in dbs {
        let mut e = open(name, engine, root, path)?;
        locks.push(e.lock_for_run(wait)?);
        e.close()?;
    }
    Ok(locks)
}

/// Opens database `name` of engine `engine`. SQLite: `path` is relative to the site root, and
/// nothing is created here: the file (and its directory) appear when something is first written, so
/// `plan` and `status` leave a clean site untouched. PostgreSQL and MariaDB/MySQL: the connection
/// comes from the site (`BUNDLE_DB_URL_<NAME>`, else `ROOT/site.yaml`, see [`server`]), never from
/// the bundle; `path` is not used; nothing connects until a method needs it.
pub fn open(name: &str, engine: &str, root: &Path, path: &str) -> Result<Box<dyn Engine>, DbError> {
    // The name becomes a backup file name.
    if name.is_empty()
        || name.starts_with('.')
        || !name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    {
        return Err(DbError::Config {
            db: name.into(),
            message: "database names may only use letters, digits, `_`, `-` and `.`".into(),
        });
    }
    match engine {
        "sqlite" => Ok(Box::new(sqlite::SqliteEngine::new(name, root, path)?)),
        "postgres" => {
            let url = server::resolve_url(name, engine, root)?;
            Ok(Box::new(postgres::PgEngine::new(name, url, root)))
        }
        "mysql" => {
            let url = server::resolve_url(name, engine, root)?;
            Ok(Box::new(mysql::MyEngine::new(name, url, root)))
        }
        other => Err(DbError::UnknownEngine { db: name.into(), engine: other.into() }),
    }
}

/// Database errors. Messages are one line and say which database (and file) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database `{db}`: engine `{engine}` is not supported (supported: {})", ENGINES.join(", "))]
    UnknownEngine { db: String, engine: String },
    #[error("database `{db}`: {message}")]
    Config { db: String, message: String },
    #[error("database `{db}` ({path}): cannot open: {message}")]
    Open { db: String, path: String, message: String },
    #[error("database `{db}` ({path}): {context}: {message}")]
    Engine { db: String, path: String, context: String, message: String },
    #[error("database `{db}`: {path}: {message}")]
    Io { db: String, path: String, message: String },
    #[error("database `{db}`: migration {file} failed at statement `{statement}`: {message} (the whole file was rolled back)")]
    Step { db: String, file: String, statement: String, message: String },
    #[error("database `{db}`: migration {file} failed at statement `{statement}`: {message} (MariaDB/MySQL commits DDL as it goes, so what ran before that statement stayed applied; the step stays recorded as unfinished until the backup taken before it is restored)")]
    StepPartial { db: String, file: String, statement: String, message: String },
    #[error("database `{db}`: data migration {file} failed ({status}): {stderr}")]
    Script { db: String, file: String, status: String, stderr: String },
    #[error(
        "database `{db}`: {file} changed since it was verified (sha256 {actual}, expected {expected}); not running it"
    )]
    Hash { db: String, file: String, expected: String, actual: String },
    #[error("database `{db}`: backup {file} is damaged ({algo} {actual}, recorded {expected}); not restoring from it")]
    BackupCorrupt { db: String, file: String, algo: &'static str, expected: String, actual: String },
    #[error("database `{db}`: bad migration set: {message}")]
    Steps { db: String, message: String },
    #[error("database `{db}`: the bundle has no migration to {missing}, needed to go from {from} to {target}; the bundle is incomplete")]
    Gap { db: String, missing: SchemaVersion, from: SchemaVersion, target: SchemaVersion },
    #[error("database `{db}`: {HISTORY_TABLE} is unreadable: {message}")]
    History { db: String, message: String },
    #[error("database `{db}` is at schema {current}, a newer major than {target} that this release is built for; refusing (restore a backup taken before that upgrade to go back)")]
    Incompatible { db: String, current: SchemaVersion, target: SchemaVersion },
    #[error("database `{db}`: {file} was changed after it was applied (recorded sha256 {recorded}, the bundle has {shipped}); drift is not re-run, fix the bundle")]
    Drift { db: String, file: String, recorded: String, shipped: String },
    #[error("database `{db}` has tables ({}) but no {HISTORY_TABLE}; if you know its schema version, run again with `--baseline {db}=VERSION`", short_list(.tables))]
    Unversioned { db: String, tables: Vec<String> },
    #[error("database `{db}` is at schema {current} and cannot be migrated down to one that code for {target} runs on: {}; restore the backup taken before the upgrade (--restore-data)", needs_restore_reason(.missing, *.reachable, *.target))]
    NeedsRestore {
        db: String,
        current: SchemaVersion,
        target: SchemaVersion,
        missing: Vec<SchemaVersion>,
        reachable: bool,
    },
    #[error("database `{db}` is already versioned (schema {version}); a baseline is only for unversioned databases")]
    AlreadyVersioned { db: String, version: SchemaVersion },
    #[error("database `{db}` is at schema {current}, older than {target}: that is an upgrade, not a rollback")]
    NotARollback { db: String, current: SchemaVersion, target: SchemaVersion },
    #[error("database `{db}` ({location}) is locked by another run ({holder}); waited {waited_secs}s. Run again when it has finished (BUNDLE_DB_LOCK_WAIT_SECS sets the wait)")]
    Locked { db: String, location: String, holder: String, waited_secs: u64 },
    #[error("database `{db}` ({location}): {message}; nothing was changed")]
    Tools { db: String, location: String, message: String },
    #[error("database `{db}`: migration {file} started on {applied_at} and never finished; the engine cannot roll DDL back, so the database may hold half of it. Restore the backup taken before it (`bundle-install recover`, or rollback --restore-data) before migrating again")]
    Unfinished { db: String, file: String, applied_at: String },
}

impl DbError {
    /// A stable snake_case name for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            DbError::UnknownEngine { .. } => "unknown_engine",
            DbError::Config { .. } => "config",
            DbError::Open { .. } => "open",
            DbError::Engine { .. } => "engine",
            DbError::Io { .. } => "io",
            DbError::Step { .. } | DbError::StepPartial { .. } => "step_failed",
            DbError::Script { .. } => "script_failed",
            DbError::Hash { .. } => "step_hash_mismatch",
            DbError::BackupCorrupt { .. } => "backup_corrupt",
            DbError::Steps { .. } => "bad_steps",
            DbError::Gap { .. } => "gap",
            DbError::History { .. } => "history",
            DbError::Incompatible { .. } => "incompatible",
            DbError::Drift { .. } => "drift",
            DbError::Unversioned { .. } => "unversioned",
            DbError::NeedsRestore { .. } => "needs_restore",
            DbError::AlreadyVersioned { .. } => "already_versioned",
            DbError::NotARollback { .. } => "not_a_rollback",
            DbError::Locked { .. } => "db_locked",
            DbError::Tools { .. } => "db_tools",
            DbError::Unfinished { .. } => "unfinished_step",
        }
    }

    /// A refusal by policy (exit code 4) rather than a failure.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            DbError::Incompatible { .. }
                | DbError::Drift { .. }
                | DbError::Unversioned { .. }
                | DbError::NeedsRestore { .. }
                | DbError::AlreadyVersioned { .. }
                | DbError::Locked { .. }
        )
    }

    /// The database the error is about.
    pub fn db(&self) -> &str {
        match self {
            DbError::UnknownEngine { db, .. }
            | DbError::Config { db, .. }
            | DbError::Open { db, .. }
            | DbError::Engine { db, .. }
            | DbError::Io { db, .. }
            | DbError::Step { db, .. }
            | DbError::StepPartial { db, .. }
            | DbError::Script { db, .. }
            | DbError::Hash { db, .. }
            | DbError::BackupCorrupt { db, .. }
            | DbError::Steps { db, .. }
            | DbError::Gap { db, .. }
            | DbError::History { db, .. }
            | DbError::Incompatible { db, .. }
            | DbError::Drift { db, .. }
            | DbError::Unversioned { db, .. }
            | DbError::NeedsRestore { db, .. }
            | DbError::AlreadyVersioned { db, .. }
            | DbError::NotARollback { db, .. }
            | DbError::Locked { db, .. }
            | DbError::Tools { db, .. }
            | DbError::Unfinished { db, .. } => db,
        }
    }
}

fn short_list(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", … {} more", items.len() - SHOWN));
    }
    s
}

fn needs_restore_reason(missing: &[SchemaVersion], reachable: bool, target: SchemaVersion) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        let list = missing.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
        parts.push(format!("the bundle ships no down-migration for {list}"));
    }
    if !reachable {
        parts.push(format!("no shipped schema version is one that code for {target} runs on"));
    }
    parts.join("; ")
}

/// Collapses whitespace (so messages stay on one line) and cuts at `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max {
        collapsed
    } else {
        let mut cut: String = collapsed.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// A backup record must belong to this database and engine before anything is restored from it.
pub(crate) fn check_backup_record(db: &str, engine: &str, backup: &BackupRecord) -> Result<(), DbError> {
    if backup.db != db || backup.engine != engine {
        return Err(DbError::Config {
            db: db.into(),
            message: format!("backup record is for {} database `{}`", backup.engine, backup.db),
        });
    }
    Ok(())
}

/// What every engine's `apply` does first: a baseline is not a step to run, and the file must still
/// be the bytes that were verified with the bundle (nothing runs otherwise, and no failure is
/// recorded). Returns the file's bytes.
pub(crate) fn read_step_file(db: &str, step: &PlannedStep) -> Result<Vec<u8>, DbError> {
    if step.direction == Direction::Baseline {
        return Err(DbError::Config {
            db: db.into(),
            message: "a baseline is recorded with `baseline`, not applied".into(),
        });
    }
    let bytes = std::fs::read(&step.file.path).map_err(|e| DbError::Io {
        db: db.into(),
        path: step.file.path.display().to_string(),
        message: e.to_string(),
    })?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&step.file.sha256) {
        return Err(DbError::Hash {
            db: db.into(),
            file: step.file.file.clone(),
            expected: step.file.sha256.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// The backup file must still hash to what was recorded when it was taken.
pub(crate) fn verify_backup_file(db: &str, backup: &BackupRecord, path: &Path) -> Result<(), DbError> {
    let io =
        |e: std::io::Error| DbError::Io { db: db.into(), path: path.display().to_string(), message: e.to_string() };
    let (algo, expected, actual) = match (&backup.blake3, &backup.sha256) {
        (Some(want), _) => ("blake3", want.clone(), backup_checksum(path).map_err(io)?.0),
        (None, Some(want)) => ("sha256", want.clone(), sha256_file(path).map_err(io)?.0),
        (None, None) => ("blake3", String::new(), backup_checksum(path).map_err(io)?.0),
    };
    if !actual.eq_ignore_ascii_case(&expected) {
        return Err(DbError::BackupCorrupt { db: db.into(), file: path.display().to_string(), algo, expected, actual });
    }
    Ok(())
}

/// Backups are checked with BLAKE3, not SHA-256: the checksum only has to show that a backup is
/// still the bytes that were written (the record sits beside it, unsigned), and BLAKE3 hashes a
/// gigabyte in about a tenth of the time SHA-256 takes even with SHA-NI, spread over every core.
/// A restore reads the whole backup before touching the live database, so this is downtime.
pub fn backup_checksum(path: &Path) -> std::io::Result<(String, u64)> {
    // Reading (a copy out of the page cache, one core) overlaps hashing (every core): a second
    // thread fills one buffer while the other is hashed. Reading and then hashing each buffer in
    // turn took twice as long.
    use std::sync::mpsc::sync_channel;
    let mut file = std::fs::File::open(path)?;
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(1);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        empty_tx.send(vec![0u8; 4 << 20]).expect("room for both buffers");
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> std::io::Result<()> {
            for mut buf in empty_rx {
                let n = fill_buf(&mut file, &mut buf)?;
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        for (buf, n) in full_rx {
            hasher.update_rayon(&buf[..n]);
            total += n as u64;
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        reader.join().unwrap_or_else(|_| Err(std::io::Error::other("checksum reader panicked")))?;
        Ok((hasher.finalize().to_hex().to_string(), total))
    })
}

/// BLAKE3 of everything read from `r`, on the calling thread (for hashing beside another thread
/// that copies the same bytes).
pub(crate) fn checksum_reader(mut r: impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = fill_buf(&mut r, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), total))
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn fill_buf(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// Hashing and time stamps are shared with the rest of the toolkit.
pub use bundle_core::hash::{hash_file as sha256_file, sha256_hex};
pub use bundle_core::time::{now_rfc3339_millis as utc_now_rfc3339, rfc3339_millis as format_rfc3339};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v(s: &str) -> SchemaVersion {
        s.parse().unwrap()
    }

    fn file(version: &str, name: &str, kind: StepKind) -> StepFile {
        StepFile {
            version: v(version),
            file: name.into(),
            path: PathBuf::from("/nowhere").join(name),
            sha256: sha256_hex(name.as_bytes()),
            kind,
        }
    }

    /// 1.0 init, 1.1 additive, 2.0 breaking with a down, 2.1 sql + py.
    fn chain4() -> Vec<Step> {
        vec![
            Step { up: Some(file("1.0", "1.0_init.sql", StepKind::Sql)), ..Step::new(v("1.0")) },
            Step { up: Some(file("1.1", "1.1_add_tags.sql", StepKind::Sql)), ..Step::new(v("1.1")) },
            Step {
                up: Some(file("2.0", "2.0_split.sql", StepKind::Sql)),
                down: Some(file("2.0", "2.0_split.down.sql", StepKind::Sql)),
                ..Step::new(v("2.0"))
            },
            Step {
                up: Some(file("2.1", "2.1_slug.sql", StepKind::Sql)),
                data: Some(file("2.1", "2.1_slug.py", StepKind::Python)),
                ..Step::new(v("2.1"))
            },
        ]
    }

    fn row(id: i64, f: &StepFile, direction: Direction, success: bool, after: &str) -> HistoryRow {
        HistoryRow {
            id,
            version: f.version,
            file: f.file.clone(),
            sha256: f.sha256.clone(),
            direction,
            applied_at: "2024-01-01T00:00:00.000Z".into(),
            release: "1.0.0".into(),
            success,
            schema_after: v(after),
        }
    }

    fn at(steps: &[Step], upto: &str) -> DbState {
        let mut history = Vec::new();
        for s in steps.iter().filter(|s| s.version <= v(upto)) {
            let n = history.len() as i64 + 1;
            history.push(row(n, s.up.as_ref().unwrap(), Direction::Up, true, &s.version.to_string()));
        }
        DbState::Versioned { version: current_version(&history), history }
    }

    fn names(plan: &[PlannedStep]) -> Vec<(String, Direction, String)> {
        plan.iter().map(|p| (p.file.file.clone(), p.direction, p.schema_after.to_string())).collect()
    }

    #[test]
    fn clean_runs_the_whole_chain_in_order() {
        let mut steps = chain4();
        steps.reverse(); // input order must not matter
        let plan = plan_up("m", &steps, &DbState::Clean, v("2.1")).unwrap();
        assert_eq!(
            names(&plan),
            vec![
                ("1.0_init.sql".into(), Direction::Up, "1.0".into()),
                ("1.1_add_tags.sql".into(), Direction::Up, "1.1".into()),
                ("2.0_split.sql".into(), Direction::Up, "2.0".into()),
                // the .sql of a two-part step does not claim 2.1 yet
                ("2.1_slug.sql".into(), Direction::Up, "2.0".into()),
                ("2.1_slug.py".into(), Direction::Up, "2.1".into()),
            ]
        );
        let to_11 = plan_up("m", &steps, &DbState::Clean, v("1.1")).unwrap();
        assert_eq!(to_11.len(), 2);
    }

    #[test]
    fn upgrade_runs_only_newer_steps() {
        let steps = chain4();
        let plan = plan_up("m", &steps, &at(&steps, "1.1"), v("2.0")).unwrap();
        assert_eq!(names(&plan), vec![("2.0_split.sql".into(), Direction::Up, "2.0".into())]);
    }

    #[test]
    fn compatible_database_needs_nothing() {
        let steps = chain4();
        assert!(plan_up("m", &steps, &at(&steps, "2.0"), v("2.0")).unwrap().is_empty());
        // newer minor of the same major: old code keeps running on it
        assert!(plan_up("m", &steps, &at(&steps, "1.1"), v("1.0")).unwrap().is_empty());
    }

    #[test]
    fn newer_major_is_incompatible() {
        let steps = chain4();
        let err = plan_up("m", &steps, &at(&steps, "2.0"), v("1.1")).unwrap_err();
        assert!(matches!(err, DbError::Incompatible { .. }), "{err}");
        assert!(err.is_policy());
        assert_eq!(err.kind(), "incompatible");
    }

    #[test]
    fn unversioned_is_refused_with_a_hint() {
        let state = DbState::Unversioned { tables: vec!["a".into(), "b".into()] };
        let err = plan_up("client", &chain4(), &state, v("2.1")).unwrap_err();
        assert!(err.is_policy());
        let msg = err.to_string();
        assert!(msg.contains("--baseline client=VERSION") && msg.contains("client") && msg.contains("a, b"), "{msg}");
    }

    #[test]
    fn drift_is_refused_and_unshipped_history_is_fine() {
        let steps = chain4();
        let mut state = at(&steps, "1.1");
        if let DbState::Versioned { history, .. } = &mut state {
            // an old step this bundle no longer ships: not drift
            history.insert(0, HistoryRow { id: 0, file: "0.9_ancient.sql".into(), ..history[0].clone() });
        }
        assert!(find_drift(&steps, state.history()).is_empty());
        let mut changed = steps.clone();
        changed[1].up.as_mut().unwrap().sha256 = sha256_hex(b"edited");
        let err = plan_up("m", &changed, &state, v("2.1")).unwrap_err();
        match &err {
            DbError::Drift { file, recorded, shipped, .. } => {
                assert_eq!(file, "1.1_add_tags.sql");
                assert_eq!(recorded, &steps[1].up.as_ref().unwrap().sha256);
                assert_eq!(shipped, &sha256_hex(b"edited"));
            }
            other => panic!("{other}"),
        }
        // a failed row is not an application: no drift from it
        let mut state = at(&steps, "1.0");
        if let DbState::Versioned { history, .. } = &mut state {
            history.push(row(9, changed[1].up.as_ref().unwrap(), Direction::Up, false, "1.0"));
            history.last_mut().unwrap().sha256 = "old".into();
        }
        assert!(plan_up("m", &changed, &state, v("1.1")).is_ok());
    }

    #[test]
    fn gaps_are_errors() {
        let mut steps = chain4();
        steps.remove(2); // no 2.0: 2.1 cannot follow 1.1
        let err = plan_up("m", &steps, &at(&steps, "1.0"), v("2.1")).unwrap_err();
        assert!(matches!(err, DbError::Gap { missing, .. } if missing == v("2.0")), "{err}");
        assert!(!err.is_policy());
        // target not shipped
        let err = plan_up("m", &chain4(), &DbState::Clean, v("2.2")).unwrap_err();
        assert!(matches!(err, DbError::Gap { missing, .. } if missing == v("2.2")), "{err}");
        // a clean install may start at a squashed X.0, an upgrade from 1.1 may not skip 2.x
        let squashed = vec![Step { up: Some(file("3.0", "3.0_all.sql", StepKind::Sql)), ..Step::new(v("3.0")) }];
        assert_eq!(plan_up("m", &squashed, &DbState::Clean, v("3.0")).unwrap().len(), 1);
        let err = plan_up("m", &squashed, &at(&chain4(), "1.1"), v("3.0")).unwrap_err();
        assert!(matches!(err, DbError::Gap { .. }), "{err}");
    }

    #[test]
    fn resumes_after_a_failed_data_step() {
        let steps = chain4();
        let mut state = at(&steps, "2.0");
        if let DbState::Versioned { history, version } = &mut state {
            history.push(row(5, steps[3].up.as_ref().unwrap(), Direction::Up, true, "2.0"));
            history.push(row(6, steps[3].data.as_ref().unwrap(), Direction::Up, false, "2.0"));
            *version = current_version(history);
            assert_eq!(*version, v("2.0"));
        }
        let plan = plan_up("m", &steps, &state, v("2.1")).unwrap();
        assert_eq!(names(&plan), vec![("2.1_slug.py".into(), Direction::Up, "2.1".into())]);
    }

    #[test]
    fn down_plans() {
        let steps = chain4();
        // same major: code-only
        assert!(plan_down("m", &steps, &at(&steps, "2.1"), v("2.0")).unwrap().is_empty());
        // 2.0 -> code for 1.1: run 2.0's down, landing at 1.1
        let plan = plan_down("m", &steps, &at(&steps, "2.0"), v("1.1")).unwrap();
        assert_eq!(names(&plan), vec![("2.0_split.down.sql".into(), Direction::Down, "1.1".into())]);
        // code for 1.0 runs on 1.1 too: same plan
        assert_eq!(plan_down("m", &steps, &at(&steps, "2.0"), v("1.0")).unwrap(), plan);
        // 2.1 has no down
        let err = plan_down("m", &steps, &at(&steps, "2.1"), v("1.1")).unwrap_err();
        match &err {
            DbError::NeedsRestore { missing, reachable, .. } => {
                assert_eq!(missing, &vec![v("2.1")]);
                assert!(reachable);
            }
            other => panic!("{other}"),
        }
        assert!(err.is_policy());
        assert!(err.to_string().contains("--restore-data"), "{err}");
        // nothing shipped that code for 1.2 runs on
        let err = plan_down("m", &steps, &at(&steps, "2.0"), v("1.2")).unwrap_err();
        assert!(matches!(err, DbError::NeedsRestore { reachable: false, .. }), "{err}");
        // not a rollback at all
        let err = plan_down("m", &steps, &at(&steps, "1.1"), v("2.0")).unwrap_err();
        assert_eq!(err.kind(), "not_a_rollback");
    }

    #[test]
    fn bad_step_sets() {
        let mut steps = chain4();
        steps.push(steps[0].clone());
        assert_eq!(plan_up("m", &steps, &DbState::Clean, v("2.1")).unwrap_err().kind(), "bad_steps");
        let only_down = vec![Step { down: Some(file("1.0", "1.0_x.down.sql", StepKind::Sql)), ..Step::new(v("1.0")) }];
        assert_eq!(plan_up("m", &only_down, &DbState::Clean, v("1.0")).unwrap_err().kind(), "bad_steps");
    }

    #[test]
    fn step_names() {
        assert_eq!(parse_step_name("1.1_add_tags.sql").unwrap(), Some((v("1.1"), StepRole::Up)));
        assert_eq!(parse_step_name("2.0_split.down.sql").unwrap(), Some((v("2.0"), StepRole::Down)));
        assert_eq!(parse_step_name("2.10_fill-slugs.py").unwrap(), Some((v("2.10"), StepRole::Data)));
        assert_eq!(parse_step_name("README.md").unwrap(), None);
        for bad in ["1_init.sql", "1.0.sql", "1.0_.sql", "1.01_x.sql", "v1.0_x.sql", "1.0_a b.sql"] {
            assert!(parse_step_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("1.0_init.sql", "create table t(x);"),
            ("1.1_more.sql", "alter table t add y;"),
            ("1.1_more.py", "print(1)"),
            ("1.1_more.down.sql", "select 1;"),
            ("README.md", "notes"),
        ] {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        let steps = load_steps("m", dir.path()).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].data.as_ref().unwrap().kind, StepKind::Python);
        assert_eq!(steps[0].up.as_ref().unwrap().sha256, sha256_hex(b"create table t(x);"));
        std::fs::write(dir.path().join("1.2_bad name.sql"), "").unwrap();
        assert_eq!(load_steps("m", dir.path()).unwrap_err().kind(), "bad_steps");
    }

    #[test]
    fn rfc3339() {
        use std::time::UNIX_EPOCH;
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 3_723_456); // 2000-02-29T01:02:03.456
        assert_eq!(format_rfc3339(t), "2000-02-29T01:02:03.456Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31T23:59:59
        assert_eq!(format_rfc3339(t), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn rehearsal_names() {
        assert_eq!(rehearsal_db_name("fieldlog", "a1b2c3"), "fieldlog_rehearse_a1b2c3");
        let long = rehearsal_db_name(&"x".repeat(80), "a1b2c3d4e5f6");
        assert!(long.len() <= 60 && long.ends_with("_rehearse_a1b2c3d4e5f6"), "{long}");
        assert!(is_rehearsal_db_name(&long));
        for not in ["fieldlog", "_rehearse_ab", "fieldlog_rehearse_", "fieldlog_rehearse_a;b"] {
            assert!(!is_rehearsal_db_name(not), "{not}");
        }
        assert!(check_rehearsal_drop("client", "fieldlog", "fieldlog").is_err());
        assert!(check_rehearsal_drop("client", "x_rehearse_1", "x_rehearse_1").is_err());
        assert!(check_rehearsal_drop("client", "fieldlog", "fieldlog_rehearse_1").is_ok());
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("  a\n\tb  c ", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
        let err = DbError::Unversioned { db: "m".into(), tables: (0..8).map(|i| format!("t{i}")).collect() };
        assert!(err.to_string().contains("… 3 more"));
    }
}
