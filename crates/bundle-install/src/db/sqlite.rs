//! The SQLite engine: one file under the site root, migrated with rusqlite.
//!
//! Each `.sql` file runs in one `BEGIN IMMEDIATE` transaction together with its history row, statement
//! by statement so a failure names the statement. Backups are consistent snapshots: a database with a
//! rollback journal is copied as a file under a SHARED lock (writers wait), checksummed on a second
//! thread; a WAL database goes through SQLite's online backup API. Restores copy the backup over the
//! live file in place under an EXCLUSIVE lock (WAL: through the backup API); the run's journal makes
//! an interrupted restore one that `recover` repeats.
//!
//! The file is reached without following links ([`crate::fs::beneath`]): its directory is opened from
//! the site root with no link at any component, afresh before each use, SQLite is given
//! `/proc/self/fd/N/NAME`, and the file SQLite opened must be the one the installer checked.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::CString;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bundle_core::version::SchemaVersion;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::types::ValueRef;
use rusqlite::{params, Batch, Connection, OpenFlags, TransactionBehavior};

use super::{
    current_version, one_line, sha256_hex, utc_now_rfc3339, BackupRecord, DbError, DbState, Direction, Engine,
    EngineKind, HistoryRow, PlannedStep, StepKind, TableDiff, BASELINE_FILE, HISTORY_TABLE,
};
use crate::fs::durable::sync_dir;

/// How long we wait for another connection's lock (the app should be stopped, but a cron job or a
/// late request may still hold one briefly).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Schema name the backup is attached under for `diff_since`.
const BACKUP_ALIAS: &str = "bundle_backup";

const CREATE_HISTORY: &str = "CREATE TABLE IF NOT EXISTS bundle_schema_history (
    id           INTEGER PRIMARY KEY,
    version      TEXT    NOT NULL,
    file         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    direction    TEXT    NOT NULL CHECK (direction IN ('up', 'down', 'baseline')),
    applied_at   TEXT    NOT NULL,
    release      TEXT    NOT NULL,
    success      INTEGER NOT NULL CHECK (success IN (0, 1)),
    schema_after TEXT    NOT NULL
)";

/// Who we are, for error messages (cloned so errors can be built while the connection is borrowed).
#[derive(Clone)]
struct Ctx {
    db: String,
    /// The path as configured (relative to the site root).
    rel: String,
}

impl Ctx {
    fn engine(&self, context: &str, e: impl std::fmt::Display) -> DbError {
        DbError::Engine {
            db: self.db.clone(),
            path: self.rel.clone(),
            context: context.into(),
            message: one_line(&e.to_string(), 300),
        }
    }

    fn io(&self, path: &Path, e: std::io::Error) -> DbError {
        DbError::Io { db: self.db.clone(), path: path.display().to_string(), message: e.to_string() }
    }
}

pub(crate) struct SqliteEngine {
    ctx: Ctx,
    /// The site root (absolute) and the database's path under it.
    root: PathBuf,
    rel: PathBuf,
    /// `root/rel`: for messages and for data scripts.
    shown: PathBuf,
    /// The path our own code and SQLite use: `/proc/self/fd/N/NAME`, N being `dir`, the database's
    /// directory opened without following a link at any component (`shown` while that directory
    /// does not exist yet, or without `/proc`). See [`crate::fs::beneath`].
    path: PathBuf,
    dir: Option<std::os::fd::OwnedFd>,
    /// Opened lazily so that inspecting a missing database creates nothing.
    conn: Option<Connection>,
    /// Our descriptor of the live file (opened `O_NOFOLLOW`, checked to be a regular file), kept as
    /// long as `conn`: closing it earlier would drop SQLite's POSIX locks.
    pin: Option<fs::File>,
}

impl SqliteEngine {
    pub(crate) fn new(name: &str, root: &Path, rel: &str) -> Result<SqliteEngine, DbError> {
        let ctx = Ctx { db: name.into(), rel: rel.into() };
        let p = Path::new(rel);
        let inside = !rel.is_empty()
            && !p.is_absolute()
            && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            && p.file_name().is_some();
        if !inside {
            return Err(DbError::Config {
                db: name.into(),
                message: format!("path `{rel}` must be a file path relative to the site root, without `..`"),
            });
        }
        let root = std::path::absolute(root).map_err(|e| ctx.io(root, e))?;
        let shown = root.join(p);
        let mut engine = SqliteEngine {
            path: shown.clone(),
            shown,
            root,
            rel: p.to_path_buf(),
            dir: None,
            ctx,
            conn: None,
            pin: None,
        };
        engine.locate(false)?;
        Ok(engine)
    }

    fn file_name(&self) -> &std::ffi::OsStr {
        self.rel.file_name().expect("checked in new")
    }

    /// Opens the database's directory afresh, without following a link at any component (creating
    /// missing ones with `create`), and checks that the database and its companion files are
    /// regular files or absent. Repeated before each use; while a connection is open its directory
    /// stays the one SQLite was given, and only the files are checked again.
    fn locate(&mut self, create: bool) -> Result<(), DbError> {
        if self.conn.is_none() {
            if create && !self.root.exists() {
                // A scratch root of our own (rollback's replay), never a site's.
                fs::create_dir_all(&self.root).map_err(|e| self.ctx.io(&self.root, e))?;
            }
            let parent = self.rel.parent().unwrap_or(Path::new(""));
            let opened = match crate::fs::beneath::open_dir(&self.root, parent, create.then_some(0o755)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => None,
                other => other.map_err(|e| self.ctx.io(&self.shown, e))?,
            };
            self.path = opened
                .as_ref()
                .and_then(crate::fs::beneath::proc_path)
                .map(|d| d.join(self.file_name()))
                .unwrap_or_else(|| self.shown.clone());
            self.dir = opened;
        }
        let Some(dir) = &self.dir else { return Ok(()) };
        for suffix in ["", "-wal", "-shm", "-journal", ".restoring"] {
            let mut name = self.file_name().to_owned();
            name.push(suffix);
            if crate::fs::beneath::entry_at(dir, &name).map_err(|e| self.ctx.io(&self.shown, e))?
                == crate::fs::beneath::Entry::Other
            {
                return Err(self.ctx.io(
                    &sidecar(&self.shown, suffix),
                    std::io::Error::other("is a symbolic link or not a regular file; the installer never follows links inside the site (check who put it there)"),
                ));
            }
        }
        Ok(())
    }

    fn exists(&self) -> bool {
        match &self.dir {
            _ if self.conn.is_some() => true,
            Some(dir) => crate::fs::beneath::entry_at(dir, self.file_name())
                .is_ok_and(|e| e != crate::fs::beneath::Entry::Missing),
            None => false,
        }
    }

    /// The connection, opening (and creating the file and its directory) when needed. The file is
    /// opened (or created) by us first, `O_NOFOLLOW`; once SQLite has opened its path, one of the
    /// process's descriptors must be that same file, or SQLite was redirected in between and the
    /// connection is refused.
    fn conn(&mut self) -> Result<&mut Connection, DbError> {
        if self.conn.is_none() {
            self.locate(true)?;
            let open_err =
                |ctx: &Ctx, message: String| DbError::Open { db: ctx.db.clone(), path: ctx.rel.clone(), message };
            let dir = self.dir.as_ref().expect("created by locate");
            let pin = crate::fs::beneath::open_file_at(dir, self.file_name(), Some(0o644))
                .map_err(|e| self.ctx.io(&self.shown, e))?;
            let id = {
                use std::os::unix::fs::MetadataExt;
                let m = pin.metadata().map_err(|e| self.ctx.io(&self.shown, e))?;
                (m.dev(), m.ino())
            };
            let conn = open_live(&self.path).map_err(|e| open_err(&self.ctx, one_line(&e.to_string(), 300)))?;
            if self.path != self.shown {
                use std::os::fd::AsRawFd;
                let ours = pin.as_raw_fd();
                if !crate::fs::beneath::open_file_ids().iter().any(|&(d, i, fd)| (d, i) == id && fd != ours) {
                    drop(conn);
                    return Err(open_err(&self.ctx, "the file changed between the installer's check and SQLite's open (a link swapped in?); nothing was done".into()));
                }
            }
            self.conn = Some(conn);
            self.pin = Some(pin);
        } else {
            self.locate(false)?;
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// Closes the connection, then our descriptor of the file (in that order: see `pin`).
    fn drop_conn(&mut self) {
        self.conn = None;
        self.pin = None;
    }

    fn sidecars(&self) -> Vec<PathBuf> {
        ["-wal", "-shm", "-journal"].iter().map(|s| sidecar(&self.path, s)).collect()
    }

    fn apply_sql(&mut self, ctx: &Ctx, step: &PlannedStep, release: &str, bytes: &[u8]) -> Result<(), DbError> {
        let bad = |message: String| DbError::Steps { db: ctx.db.clone(), message };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("{} is not UTF-8: {e}", step.file.file)))?;
        if text.contains('\0') {
            return Err(bad(format!("{} contains a NUL byte", step.file.file)));
        }
        let statements = split_statements(text);
        let conn = self.conn()?;
        // Foreign keys are off while a migration runs: the table-rebuild procedure SQLite documents
        // for schema changes (create new, copy, DROP old, rename) would otherwise let DROP TABLE run
        // its implicit DELETE and cascade into child tables. The pragma is a no-op inside a
        // transaction, hence set here; integrity is checked before commit instead.
        conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(|e| ctx.engine("disabling foreign keys", e))?;
        let result = run_sql_step(conn, ctx, step, release, &statements);
        let back_on = conn.execute_batch("PRAGMA foreign_keys = ON");
        result?;
        back_on.map_err(|e| ctx.engine("re-enabling foreign keys", e))
    }

    fn apply_python(
        &mut self,
        ctx: &Ctx,
        step: &PlannedStep,
        release: &str,
        python: Option<&Path>,
    ) -> Result<(), DbError> {
        let python = python.ok_or_else(|| DbError::Config {
            db: ctx.db.clone(),
            message: format!("data migration {} needs a Python interpreter and none was given", step.file.file),
        })?;
        // The script runs with its cwd in the database's directory: make every path absolute first.
        let script = std::path::absolute(&step.file.path).map_err(|e| ctx.io(&step.file.path, e))?;
        let python = if python.components().count() > 1 {
            std::path::absolute(python).map_err(|e| ctx.io(python, e))?
        } else {
            python.to_path_buf() // a bare name is looked up on PATH
        };
        // Checked again right before the script runs; its working directory is the checked
        // directory itself (`/proc/self/fd/N`, entered before the script starts). The script, the
        // app's own code, gets the database's ordinary path.
        self.locate(true)?;
        let dir = self.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        // Our connection stays open but idle: it holds no lock, so the script can write.
        let out = crate::child::die_with_parent(&mut Command::new(&python))
            .arg(&script)
            .current_dir(&dir)
            .env("BUNDLE_DB_NAME", &ctx.db)
            .env("BUNDLE_DB_ENGINE", EngineKind::Sqlite.as_str())
            .env("BUNDLE_DB_PATH", &self.shown)
            .stdin(Stdio::null())
            // stdout is captured, never inherited: with --json the installer's stdout is one object.
            .output()
            .map_err(|e| DbError::Script {
                db: ctx.db.clone(),
                file: step.file.file.clone(),
                status: "not started".into(),
                stderr: format!("cannot run {}: {e}", python.display()),
            })?;
        if !out.status.success() {
            return Err(DbError::Script {
                db: ctx.db.clone(),
                file: step.file.file.clone(),
                status: describe_status(out.status),
                stderr: stderr_tail(&out.stderr),
            });
        }
        let conn = self.conn()?;
        let mut record = || -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(CREATE_HISTORY)?;
            insert_history(&tx, step, &step.file.file, &step.file.sha256, release, true, step.schema_after)?;
            tx.commit()
        };
        record().map_err(|e| ctx.engine(&format!("recording {} in {HISTORY_TABLE}", step.file.file), e))
    }

    /// Best effort: a `success = false` row in its own transaction (a restore from backup later
    /// drops it again, which is fine).
    fn record_failure(&mut self, step: &PlannedStep, release: &str) {
        let Ok(conn) = self.conn() else { return };
        let mut record = || -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(CREATE_HISTORY)?;
            let now: Option<String> = tx
                .query_row(
                    "SELECT schema_after FROM bundle_schema_history WHERE success = 1 ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
            let now = now.and_then(|s| s.parse().ok()).unwrap_or(SchemaVersion::CLEAN);
            insert_history(&tx, step, &step.file.file, &step.file.sha256, release, false, now)?;
            tx.commit()
        };
        let _ = record();
    }

    /// Restore where there is no live database to keep consistent: the file is missing (a scratch
    /// copy, or a database deleted by hand) or SQLite cannot open it at all. There is no committed
    /// data in it to protect, and the order (copy beside, fsync, delete the
    /// sidecars so no stale journal/WAL is replayed onto the restored file, rename, fsync dir) means a
    /// crash leaves either the broken file or the backup; `recover` then restores again.
    fn replace_file(&mut self, ctx: &Ctx, src: &Path) -> Result<(), DbError> {
        self.drop_conn();
        self.locate(true)?;
        let parent = self.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let parent = parent.as_path();
        let tmp = sidecar(&self.path, ".restoring");
        // The backup is 0600 (backups are private); the restored file gets the live file's mode and
        // owner back when there was one, else the mode a new database gets.
        let live = fs::symlink_metadata(&self.path).ok().filter(|m| m.is_file());
        remove_if_exists(&tmp).map_err(|e| ctx.io(&tmp, e))?;
        // Mode, owner and fsync through our own descriptor: the directory may be writable by the
        // app's user, who could swap the name for a link to some other file in between.
        let copy = copy_new(src, &tmp).map_err(|e| ctx.io(&tmp, e))?;
        restore_mode_and_owner(&copy, live.as_ref()).and_then(|()| copy.sync_all()).map_err(|e| ctx.io(&tmp, e))?;
        drop(copy);
        for side in self.sidecars() {
            remove_if_exists(&side).map_err(|e| ctx.io(&side, e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| ctx.io(&self.path, e))?;
        sync_dir(parent).map_err(|e| ctx.io(parent, e))
    }
}

/// The open `file` gets `live`'s permission bits and owner (or 0644 when there was no live file).
fn restore_mode_and_owner(file: &fs::File, live: Option<&fs::Metadata>) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    match live {
        Some(m) => {
            // Owner first: chown clears set-id bits, the chmod after puts the mode back exactly.
            let _ = std::os::unix::fs::fchown(file, Some(m.uid()), Some(m.gid()));
            file.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))
        }
        None => file.set_permissions(fs::Permissions::from_mode(0o644)),
    }
}

impl Engine for SqliteEngine {
    fn name(&self) -> &str {
        &self.ctx.db
    }

    fn engine(&self) -> EngineKind {
        EngineKind::Sqlite
    }

    fn location(&self) -> String {
        self.shown.display().to_string()
    }

    fn inspect(&mut self) -> Result<DbState, DbError> {
        if !self.exists() {
            return Ok(DbState::Clean);
        }
        let ctx = self.ctx.clone();
        let conn = self.conn()?;
        read_state(conn, &ctx)
    }

    fn backup(&mut self, dir: &Path) -> Result<BackupRecord, DbError> {
        let ctx = self.ctx.clone();
        let taken_at = utc_now_rfc3339();
        if !self.exists() {
            return Ok(BackupRecord {
                db: ctx.db,
                engine: EngineKind::Sqlite,
                file: None,
                blake3: None,
                sha256: None,
                bytes: 0,
                version: SchemaVersion::CLEAN,
                taken_at,
            });
        }
        let version = self.inspect()?.version().unwrap_or(SchemaVersion::CLEAN);
        fs::create_dir_all(dir).map_err(|e| ctx.io(dir, e))?;
        let name = format!("{}.db", ctx.db);
        let target = dir.join(&name);
        // Written under a temporary name and renamed, so `<name>.db` is only ever a complete backup.
        let tmp = dir.join(format!(".{}.db.partial", ctx.db));
        for p in [tmp.clone(), dir.join(format!(".{}.db.partial-journal", ctx.db))] {
            remove_if_exists(&p).map_err(|e| ctx.io(&p, e))?;
        }
        // Opened first: opening checks the path afresh, and `live` must be the path SQLite was given.
        self.conn()?;
        let live = self.path.clone();
        let src = self.conn.as_mut().expect("opened above");
        let wal = src
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .map_err(|e| ctx.engine("reading the journal mode", e))?
            .eq_ignore_ascii_case("wal");
        let hashed = if wal {
            // In WAL mode committed pages may still sit in the -wal file: only SQLite's backup API
            // sees the database as a whole.
            let copy = || -> rusqlite::Result<()> {
                let mut dst = Connection::open(&tmp)?;
                // The copy is fsynced as a whole below; no journal needed for a file nobody else sees.
                dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")?;
                copy_database(src, &mut dst)?;
                dst.close().map_err(|(_, e)| e)
            };
            copy().map_err(|e| ctx.engine(&format!("backing up to {}", target.display()), e))?;
            None
        } else {
            // With a rollback journal the file itself is the database whenever a reader holds its
            // SHARED lock (writers need EXCLUSIVE to touch it, and a hot journal is rolled back when
            // the lock is taken). Copying it in large blocks while hashing is several times faster
            // than the page-by-page backup API followed by a second read for the hash.
            let tx = src.transaction().map_err(|e| ctx.engine("starting the backup read", e))?;
            tx.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                .map_err(|e| ctx.engine("locking for the backup", e))?;
            let copied = copy_and_checksum(&live, &tmp);
            // Only now may the lock go: closing our own descriptors of the file released SQLite's
            // POSIX locks with them, and nothing runs between that and here.
            drop(tx);
            Some(copied.map_err(|e| ctx.io(&tmp, e))?)
        };
        fsync_file(&tmp).map_err(|e| ctx.io(&tmp, e))?;
        fs::rename(&tmp, &target).map_err(|e| ctx.io(&target, e))?;
        sync_dir(dir).map_err(|e| ctx.io(dir, e))?;
        let (blake3, bytes) = match hashed {
            Some(h) => h,
            None => super::backup_checksum(&target).map_err(|e| ctx.io(&target, e))?,
        };
        Ok(BackupRecord {
            db: ctx.db,
            engine: EngineKind::Sqlite,
            file: Some(name),
            blake3: Some(blake3),
            sha256: None,
            bytes,
            version,
            taken_at,
        })
    }

    fn restore(&mut self, backup: &BackupRecord, dir: &Path) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        super::check_backup_record(&ctx.db, EngineKind::Sqlite, backup)?;
        let Some(file) = &backup.file else {
            // The database did not exist before: delete it. Sidecars first, so a crash in between
            // never leaves a stale journal or WAL next to a database that could adopt it.
            self.drop_conn();
            self.locate(false)?;
            for side in self.sidecars() {
                remove_if_exists(&side).map_err(|e| ctx.io(&side, e))?;
            }
            remove_if_exists(&self.path).map_err(|e| ctx.io(&self.path, e))?;
            if let Some(parent) = self.path.parent().filter(|p| p.exists()) {
                sync_dir(parent).map_err(|e| ctx.io(parent, e))?;
            }
            return Ok(());
        };
        let src_path = dir.join(file);
        super::verify_backup_file(&ctx.db, backup, &src_path)?;
        if !self.exists() {
            // Nothing live to protect or to keep consistent for other connections.
            return self.replace_file(&ctx, &src_path);
        }
        match self.conn() {
            Ok(_) => {}
            // A live file SQLite cannot open as a database has no committed data to protect.
            Err(DbError::Open { .. }) => return self.replace_file(&ctx, &src_path),
            Err(e) => return Err(e),
        };
        // After opening: `live` must be the path SQLite was given (opening checks it afresh).
        let live = self.path.clone();
        let conn = self.conn.as_mut().expect("opened above");
        let wal = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .map_err(|e| ctx.engine("reading the journal mode", e))?
            .eq_ignore_ascii_case("wal");
        let wal_file = sidecar(&live, "-wal");
        if wal || fs::metadata(&wal_file).is_ok_and(|m| m.len() > 0) {
            // WAL: other connections map the -shm index of the live file, so its pages may only be
            // changed through SQLite. The backup API writes them in one transaction.
            let src =
                open_backup(&src_path).map_err(|e| ctx.engine(&format!("opening backup {}", src_path.display()), e))?;
            return copy_database(&src, conn)
                .map_err(|e| ctx.engine(&format!("restoring from {}", src_path.display()), e));
        }
        // Rollback journal: the file is the whole database, so the backup is copied over it in place,
        // in the kernel, under an EXCLUSIVE lock (no other connection reads or writes meanwhile, and
        // one that had the file open keeps its inode and sees the restored pages once the lock goes,
        // which a rename over the file would not give it). Restoring through the backup API instead
        // writes every page twice (journal and file) and took 15x a `cp` of 1 GB. A crash in the
        // middle leaves a damaged file, never a silently mixed one: the run's journal still lists
        // the restore as not undone, and `recover` copies the (still intact) backup again.
        conn.execute_batch("BEGIN EXCLUSIVE").map_err(|e| ctx.engine("locking the database for the restore", e))?;
        // Our descriptor of the live file must outlive SQLite's lock, on every path: closing any
        // descriptor of a file drops every POSIX lock this process holds on it.
        let file = match open_nofollow(&live, true) {
            Ok(f) => f,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(ctx.io(&live, e));
            }
        };
        let written = overwrite_in_place(&src_path, &file).and_then(|()| {
            // A journal still here under our EXCLUSIVE lock is not hot (SQLite rolled a hot one back
            // when the lock was taken): typically a writer killed before its journal was synced.
            // SQLite would leave it until the next write; it belongs to no transaction of this file.
            let journal = sidecar(&live, "-journal");
            if journal.exists() {
                remove_if_exists(&journal)?;
                sync_dir(live.parent().unwrap_or(Path::new("/")))?;
            }
            Ok(())
        });
        let unlocked = conn.execute_batch("COMMIT");
        // Pages this connection cached before are stale; the next use opens afresh.
        self.drop_conn();
        drop(file);
        written.map_err(|e| ctx.io(&live, e))?;
        unlocked.map_err(|e| ctx.engine("unlocking the database after the restore", e))
    }

    fn apply(&mut self, step: &PlannedStep, release: &str, python: Option<&Path>) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let bytes = super::read_step_file(&ctx.db, step)?;
        let result = match step.file.kind {
            StepKind::Sql => self.apply_sql(&ctx, step, release, &bytes),
            StepKind::Python => self.apply_python(&ctx, step, release, python),
        };
        if result.is_err() {
            self.record_failure(step, release);
        }
        result
    }

    fn baseline(&mut self, version: SchemaVersion, release: &str) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| ctx.engine("starting the baseline", e))?;
        if history_exists(&tx).map_err(|e| ctx.engine("reading the schema", e))? {
            let history = read_history(&tx, &ctx)?;
            if history.iter().any(|r| r.success) {
                return Err(DbError::AlreadyVersioned { db: ctx.db, version: current_version(&history) });
            }
        }
        let record = || -> rusqlite::Result<()> {
            // The sha256 of a baseline row fingerprints the schema that was declared to be `version`.
            let fingerprint = sha256_hex(schema_sql(&tx)?.as_bytes());
            tx.execute_batch(CREATE_HISTORY)?;
            tx.execute(
                "INSERT INTO bundle_schema_history
                 (version, file, sha256, direction, applied_at, release, success, schema_after)
                 VALUES (?1, ?2, ?3, 'baseline', ?4, ?5, 1, ?1)",
                params![version.to_string(), BASELINE_FILE, fingerprint, utc_now_rfc3339(), release],
            )?;
            Ok(())
        };
        record().map_err(|e| ctx.engine("recording the baseline", e))?;
        tx.commit().map_err(|e| ctx.engine("committing the baseline", e))
    }

    fn diff_since(&mut self, backup: &BackupRecord, dir: &Path) -> Result<Vec<TableDiff>, DbError> {
        let ctx = self.ctx.clone();
        super::check_backup_record(&ctx.db, EngineKind::Sqlite, backup)?;
        let live_exists = self.exists();
        let Some(file) = &backup.file else {
            // Nothing existed before: everything live would be lost.
            if !live_exists {
                return Ok(Vec::new());
            }
            let conn = self.conn()?;
            let counts = table_counts(conn, "main").map_err(|e| ctx.engine("counting rows", e))?;
            return Ok(counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(table, added)| TableDiff { table, added, changed: 0, removed: 0 })
                .collect());
        };
        let src_path = dir.join(file);
        super::verify_backup_file(&ctx.db, backup, &src_path)?;
        if !live_exists {
            let src = open_backup(&src_path).map_err(|e| ctx.engine("opening the backup", e))?;
            let counts = table_counts(&src, "main").map_err(|e| ctx.engine("counting rows", e))?;
            return Ok(counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(table, removed)| TableDiff { table, added: 0, changed: 0, removed })
                .collect());
        }
        let conn = self.conn()?;
        conn.execute("ATTACH DATABASE ?1 AS bundle_backup", [backup_uri(&src_path)])
            .map_err(|e| ctx.engine("attaching the backup", e))?;
        let diff = diff_attached(conn).map_err(|e| ctx.engine("comparing with the backup", e));
        let detach = conn.execute_batch("DETACH DATABASE bundle_backup");
        let diff = diff?;
        detach.map_err(|e| ctx.engine("detaching the backup", e))?;
        Ok(diff)
    }

    fn dump(&mut self) -> Result<String, DbError> {
        if !self.exists() {
            return Ok(String::new());
        }
        let ctx = self.ctx.clone();
        let conn = self.conn()?;
        dump(conn).map_err(|e| ctx.engine("dumping", e))
    }

    fn close(&mut self) -> Result<(), DbError> {
        if let Some(conn) = self.conn.take() {
            conn.close().map_err(|(_, e)| self.ctx.engine("closing", e))?;
        }
        self.pin = None;
        Ok(())
    }

    fn table_stats(&mut self) -> Result<Vec<super::TableStat>, DbError> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let ctx = self.ctx.clone();
        let conn = self.conn()?;
        table_stats(conn).map_err(|e| ctx.engine("counting rows and pages", e))
    }
}

/// Rows of each data table, and the pages of the table and its indexes (SQLite's `dbstat`).
fn table_stats(conn: &Connection) -> rusqlite::Result<Vec<super::TableStat>> {
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat('main', 1) s JOIN main.sqlite_schema m ON m.name = s.name GROUP BY m.tbl_name",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (t, n) = row?;
        bytes.insert(t, n as u64);
    }
    table_counts(conn, "main").map(|counts| {
        counts
            .into_iter()
            .map(|(table, rows)| super::TableStat { bytes: bytes.get(&table).copied().unwrap_or(0), table, rows })
            .collect()
    })
}

/// Opens an existing file without following a link at its last component (the directories above
/// are the engine's checked `/proc/self/fd/N`).
fn open_nofollow(path: &Path, write: bool) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().read(true).write(write).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Copies `src` into a new file `to` (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600 until its mode is set) and
/// returns it open.
fn copy_new(src: &Path, to: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(to)?;
    std::io::copy(&mut fs::File::open(src)?, &mut out)?;
    Ok(out)
}

/// `path` with `suffix` appended (`-wal`, `-journal`, `-shm`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Copies `live` to a new file `to` (a backup) while a second thread computes the BLAKE3 of the same
/// bytes, read separately from the page cache: the copy stays in the kernel (`copy_file_range`) and
/// the checksum costs no time of its own. The caller holds a lock that keeps writers out.
fn copy_and_checksum(live: &Path, to: &Path) -> std::io::Result<(String, u64)> {
    // Both descriptors stay open until both readers are done: closing one would drop the caller's
    // SQLite lock (POSIX locks belong to the process and go with any descriptor of the file).
    let for_checksum = open_nofollow(live, false)?;
    let mut input = open_nofollow(live, false)?;
    let out = fs::File::create(to)?;
    std::thread::scope(|scope| {
        let hasher = scope.spawn(|| super::checksum_reader(&for_checksum));
        let copied = crate::fs::durable::copy_with_writeback(&mut input, &out);
        let hashed = hasher.join().unwrap_or_else(|_| Err(std::io::Error::other("checksum thread panicked")));
        let (n, (sum, m)) = (copied?, hashed?);
        if n != m {
            return Err(std::io::Error::other(format!(
                "copied {n} bytes but read {m} for the checksum: the database changed during the backup"
            )));
        }
        Ok((sum, n))
    })
}

/// Writes the backup file over the live database file (`live`, opened by the caller, who closes it
/// only after giving up its SQLite lock) in place, cuts it to the backup's length, marks it changed
/// for other connections and fsyncs it.
fn overwrite_in_place(backup: &Path, live: &fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut src = fs::File::open(backup)?;
    let len = src.metadata()?.len();
    let dst = live;
    let counter = |f: &fs::File| -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, 24).map(|_| u32::from_be_bytes(b))
    };
    let live_counter = counter(dst).unwrap_or(0);
    let backup_counter = counter(&src).unwrap_or(0);
    crate::fs::durable::copy_with_writeback(&mut src, dst)?;
    dst.set_len(len)?;
    if len >= 100 {
        // Other connections keep their page cache while the header's change counter (offset 24) is
        // the one they last saw; the backup's own counter may be exactly that. A value neither had
        // forces them to reread. Offset 92 must match it for the header's page count to be trusted.
        let next = live_counter.max(backup_counter).wrapping_add(1).to_be_bytes();
        dst.write_all_at(&next, 24)?;
        dst.write_all_at(&next, 92)?;
    }
    dst.sync_all()
}

/// Opens the live database. The journal mode is left as the app set it (it is stored in the file for
/// WAL); foreign keys are enforced for anything we write outside migrations; `synchronous = FULL`
/// because a committed step must survive power loss before the installer's journal moves on.
fn open_live(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI // for ATTACH of a backup with `immutable=1`
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL")?;
    // Fails now, with a clear error, if the file is not a database.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
    Ok(conn)
}

/// Opens a backup read-only and `immutable`: no locks, no -wal/-shm created next to it, and the file
/// can never be modified, so its recorded sha256 stays valid.
fn open_backup(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        backup_uri(path),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
    Ok(conn)
}

fn backup_uri(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut uri = String::from("file:");
    for &b in abs.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'~') {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

/// Copies every page of `src` into `dst` with one `sqlite3_backup_step(-1)`: the source is read in a
/// single read transaction (a consistent snapshot even while others write; in WAL mode writers are
/// not even blocked), and the destination is written in a single write transaction. Locks held by
/// other connections are waited for up to the busy timeout.
fn copy_database(src: &Connection, dst: &mut Connection) -> rusqlite::Result<()> {
    let backup = Backup::new(src, dst)?;
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            // Busy/Locked (and anything future): retry until the deadline.
            _ => {
                if Instant::now() >= deadline {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some(format!("database stayed locked for {}s", BUSY_TIMEOUT.as_secs())),
                    ));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }
}

fn run_sql_step(
    conn: &mut Connection,
    ctx: &Ctx,
    step: &PlannedStep,
    release: &str,
    statements: &[&str],
) -> Result<(), DbError> {
    let fail = |statement: &str, message: &dyn std::fmt::Display| DbError::Step {
        db: ctx.db.clone(),
        file: step.file.file.clone(),
        statement: one_line(strip_leading_comments(statement), 200),
        message: one_line(&message.to_string(), 300),
    };
    // IMMEDIATE takes the write lock now (waiting up to the busy timeout) instead of failing midway.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| fail("BEGIN IMMEDIATE", &e))?;
    tx.execute_batch(CREATE_HISTORY).map_err(|e| fail("CREATE TABLE bundle_schema_history", &e))?;
    let has_fks = has_foreign_keys(&tx).map_err(|e| fail("reading the schema", &e))?;
    let fk_before =
        if has_fks { fk_violations(&tx).map_err(|e| fail("PRAGMA foreign_key_check", &e))? } else { BTreeMap::new() };
    for sql in statements {
        if let Some(keyword) = transaction_control(sql) {
            return Err(fail(
                sql,
                &format!("{keyword} is not allowed in a migration file (each file already runs in one transaction)"),
            ));
        }
        run_statement(&tx, sql).map_err(|e| fail(sql, &e))?;
    }
    // Only violations the step introduced: apps that never enabled foreign keys may carry old ones.
    if has_fks || has_foreign_keys(&tx).map_err(|e| fail("reading the schema", &e))? {
        let after = fk_violations(&tx).map_err(|e| fail("PRAGMA foreign_key_check", &e))?;
        let new: Vec<String> = after
            .iter()
            .filter(|(k, n)| **n > fk_before.get(*k).copied().unwrap_or(0))
            .map(|((table, parent), n)| format!("{table} -> {parent}: {n} rows"))
            .collect();
        if !new.is_empty() {
            return Err(fail(
                "PRAGMA foreign_key_check",
                &format!("the step leaves rows that violate foreign keys ({})", new.join(", ")),
            ));
        }
    }
    insert_history(&tx, step, &step.file.file, &step.file.sha256, release, true, step.schema_after)
        .map_err(|e| fail("INSERT INTO bundle_schema_history", &e))?;
    tx.commit().map_err(|e| fail("COMMIT", &e))
}

/// Runs one statement to completion (statements that return rows are stepped through).
fn run_statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    let mut batch = Batch::new(conn, sql);
    while let Some(mut stmt) = batch.next()? {
        let mut rows = stmt.raw_query();
        while rows.next()?.is_some() {}
    }
    Ok(())
}

/// Splits a script into statements, each ending at a `;` after which SQLite's own
/// `sqlite3_complete` says the text is complete, so semicolons in strings, comments and trigger
/// bodies do not split. Splitting ourselves (rather than letting a batch run) is what lets an error
/// name its statement even when it fails to prepare.
fn split_statements(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices(';') {
        let candidate = &text[start..=i];
        if is_complete(candidate) {
            out.push(candidate);
            start = i + 1;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

#[allow(unsafe_code)]
fn is_complete(sql: &str) -> bool {
    let Ok(c) = CString::new(sql) else { return false };
    // SAFETY: `c` is a valid NUL-terminated string alive for the whole call; sqlite3_complete only
    // reads it and keeps no pointer.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

fn strip_leading_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = sql.strip_prefix("/*") {
            sql = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return sql;
        }
    }
}

/// `BEGIN`/`COMMIT`/`END`/`ROLLBACK` would end our transaction and commit half a step.
fn transaction_control(sql: &str) -> Option<String> {
    let word: String = strip_leading_comments(sql).chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let word = word.to_ascii_uppercase();
    matches!(word.as_str(), "BEGIN" | "COMMIT" | "END" | "ROLLBACK").then_some(word)
}

fn has_foreign_keys(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND sql LIKE '%REFERENCES%')",
        [],
        |r| r.get(0),
    )
}

/// Violations counted per (child table, parent table).
fn fk_violations(conn: &Connection) -> rusqlite::Result<BTreeMap<(String, String), u64>> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let mut rows = stmt.query([])?;
    let mut out = BTreeMap::new();
    while let Some(r) = rows.next()? {
        *out.entry((r.get::<_, String>(0)?, r.get::<_, String>(2)?)).or_insert(0) += 1;
    }
    Ok(out)
}

fn insert_history(
    conn: &Connection,
    step: &PlannedStep,
    file: &str,
    sha256: &str,
    release: &str,
    success: bool,
    schema_after: SchemaVersion,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO bundle_schema_history
         (version, file, sha256, direction, applied_at, release, success, schema_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            step.version.to_string(),
            file,
            sha256,
            step.direction.as_str(),
            utc_now_rfc3339(),
            release,
            success,
            schema_after.to_string()
        ],
    )?;
    Ok(())
}

fn history_exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
        [HISTORY_TABLE],
        |r| r.get(0),
    )
}

fn read_state(conn: &Connection, ctx: &Ctx) -> Result<DbState, DbError> {
    let has_history = history_exists(conn).map_err(|e| ctx.engine("reading the schema", e))?;
    if has_history {
        let history = read_history(conn, ctx)?;
        return Ok(DbState::Versioned { version: current_version(&history), history });
    }
    let tables: Vec<String> =
        data_tables(conn, "main").map_err(|e| ctx.engine("listing tables", e))?.into_iter().collect();
    Ok(if tables.is_empty() { DbState::Clean } else { DbState::Unversioned { tables } })
}

fn read_history(conn: &Connection, ctx: &Ctx) -> Result<Vec<HistoryRow>, DbError> {
    let bad = |message: String| DbError::History { db: ctx.db.clone(), message };
    let mut stmt = conn
        .prepare(
            "SELECT id, version, file, sha256, direction, applied_at, release, success, schema_after
             FROM bundle_schema_history ORDER BY id",
        )
        .map_err(|e| bad(one_line(&e.to_string(), 300)))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, bool>(7)?,
                r.get::<_, String>(8)?,
            ))
        })
        .map_err(|e| bad(one_line(&e.to_string(), 300)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, version, file, sha256, direction, applied_at, release, success, after) =
            row.map_err(|e| bad(one_line(&e.to_string(), 300)))?;
        let version = version.parse().map_err(|e| bad(format!("row {id}: {e}")))?;
        let schema_after = after.parse().map_err(|e| bad(format!("row {id}: {e}")))?;
        let direction =
            Direction::parse(&direction).ok_or_else(|| bad(format!("row {id}: unknown direction `{direction}`")))?;
        out.push(HistoryRow { id, version, file, sha256, direction, applied_at, release, success, schema_after });
    }
    Ok(out)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Tables holding data in `schema`: not SQLite's own, not virtual (their shadow tables hold the rows),
/// not our history.
fn data_tables(conn: &Connection, schema: &str) -> rusqlite::Result<BTreeSet<String>> {
    let sql = format!(
        "SELECT name FROM {}.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
         AND name <> ?1 AND upper(sql) NOT LIKE 'CREATE VIRTUAL%'",
        quote(schema)
    );
    let mut stmt = conn.prepare(&sql)?;
    let names = stmt.query_map([HISTORY_TABLE], |r| r.get::<_, String>(0))?;
    names.collect()
}

fn count(conn: &Connection, schema: &str, table: &str) -> rusqlite::Result<u64> {
    conn.query_row(&format!("SELECT count(*) FROM {}.{}", quote(schema), quote(table)), [], |r| r.get(0))
}

fn table_counts(conn: &Connection, schema: &str) -> rusqlite::Result<Vec<(String, u64)>> {
    data_tables(conn, schema)?.into_iter().map(|t| count(conn, schema, &t).map(|n| (t, n))).collect()
}

/// (name, position in the primary key or 0) of each column.
fn columns(conn: &Connection, schema: &str, table: &str) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare(&format!("PRAGMA {}.table_info({})", quote(schema), quote(table)))?;
    let cols = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))?;
    cols.collect()
}

fn diff_attached(conn: &Connection) -> rusqlite::Result<Vec<TableDiff>> {
    let live = data_tables(conn, "main")?;
    let old = data_tables(conn, BACKUP_ALIAS)?;
    let mut out = Vec::new();
    for table in live.union(&old) {
        let d = match (live.contains(table), old.contains(table)) {
            (true, false) => {
                TableDiff { table: table.clone(), added: count(conn, "main", table)?, changed: 0, removed: 0 }
            }
            (false, true) => {
                TableDiff { table: table.clone(), added: 0, changed: 0, removed: count(conn, BACKUP_ALIAS, table)? }
            }
            _ => diff_table(conn, table)?,
        };
        if d.added + d.changed + d.removed > 0 {
            out.push(d);
        }
    }
    Ok(out)
}

/// Rows of one table present on both sides, matched by the live table's primary key (or rowid when it
/// has none, or when its key columns do not all exist in the backup); `changed` compares the columns
/// both versions of the table have.
fn diff_table(conn: &Connection, table: &str) -> rusqlite::Result<TableDiff> {
    let live_cols = columns(conn, "main", table)?;
    let old_cols: HashSet<String> = columns(conn, BACKUP_ALIAS, table)?.into_iter().map(|(n, _)| n).collect();
    let mut pk: Vec<&(String, i64)> = live_cols.iter().filter(|(_, p)| *p > 0).collect();
    pk.sort_by_key(|(_, p)| *p);
    let mut key: Vec<String> = pk.iter().map(|(n, _)| quote(n)).collect();
    if key.is_empty() || !pk.iter().all(|(n, _)| old_cols.contains(n)) {
        key = vec!["rowid".into()];
    }
    let common: Vec<String> = live_cols
        .iter()
        .filter(|(n, p)| old_cols.contains(n) && !(*p > 0 && key[0] != "rowid"))
        .map(|(n, _)| quote(n))
        .collect();
    let (live, old) = (format!("main.{}", quote(table)), format!("{BACKUP_ALIAS}.{}", quote(table)));
    let on = key.iter().map(|k| format!("b.{k} IS a.{k}")).collect::<Vec<_>>().join(" AND ");
    let q = |sql: String| conn.query_row(&sql, [], |r| r.get::<_, u64>(0));
    let matched = (|| -> rusqlite::Result<(u64, u64, u64)> {
        let added = q(format!("SELECT count(*) FROM {live} a WHERE NOT EXISTS (SELECT 1 FROM {old} b WHERE {on})"))?;
        let removed = q(format!("SELECT count(*) FROM {old} b WHERE NOT EXISTS (SELECT 1 FROM {live} a WHERE {on})"))?;
        let changed = if common.is_empty() {
            0
        } else {
            let differs = common.iter().map(|c| format!("a.{c} IS NOT b.{c}")).collect::<Vec<_>>().join(" OR ");
            q(format!("SELECT count(*) FROM {live} a JOIN {old} b ON {on} WHERE {differs}"))?
        };
        Ok((added, changed, removed))
    })();
    let (added, changed, removed) = match matched {
        Ok(m) => m,
        // WITHOUT ROWID table whose key changed: nothing to match rows by, so every row differs.
        Err(_) if key[0] == "rowid" => (count(conn, "main", table)?, 0, count(conn, BACKUP_ALIAS, table)?),
        Err(e) => return Err(e),
    };
    Ok(TableDiff { table: table.into(), added, changed, removed })
}

/// Every schema object's SQL, sorted (autoindexes have none).
fn schema_sql(conn: &Connection) -> rusqlite::Result<String> {
    let mut stmt = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name <> ?1 ORDER BY type, name, tbl_name")?;
    let rows = stmt.query_map([HISTORY_TABLE], |r| r.get::<_, String>(0))?;
    let mut out = String::new();
    for sql in rows {
        out.push_str(&sql?);
        out.push_str(";\n");
    }
    Ok(out)
}

/// A deterministic logical dump: header pragmas, schema objects sorted by type and name, then every
/// row of every non-virtual table (ours and `sqlite_sequence` included) sorted by all its columns.
fn dump(conn: &Connection) -> rusqlite::Result<String> {
    let mut out = String::new();
    for pragma in ["user_version", "application_id"] {
        let v: i64 = conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))?;
        out.push_str(&format!("PRAGMA {pragma} = {v};\n"));
    }
    let mut stmt = conn.prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY type, name, tbl_name")?;
    for sql in stmt.query_map([], |r| r.get::<_, String>(0))? {
        out.push_str(&sql?);
        out.push_str(";\n");
    }
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND upper(sql) NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )?;
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for table in tables {
        let rows_stmt = conn.prepare(&format!("SELECT * FROM {}", quote(&table)))?;
        let n = rows_stmt.column_count();
        let order = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        drop(rows_stmt);
        let mut rows_stmt = conn.prepare(&format!("SELECT * FROM {} ORDER BY {order}", quote(&table)))?;
        let mut rows = rows_stmt.query([])?;
        while let Some(row) = rows.next()? {
            let values = (0..n).map(|i| row.get_ref(i).map(literal)).collect::<rusqlite::Result<Vec<_>>>()?;
            out.push_str(&format!("INSERT INTO {} VALUES({});\n", quote(&table), values.join(",")));
        }
    }
    Ok(out)
}

fn literal(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t).replace('\'', "''")),
        ValueRef::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("X'{hex}'")
        }
    }
}

pub(super) fn describe_status(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    "abnormal exit".into()
}

/// The last few non-empty lines of a script's stderr, on one line.
pub(super) fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "(nothing on stderr)".into();
    }
    let tail = &lines[lines.len().saturating_sub(5)..];
    one_line(&tail.join(" | "), 600)
}

pub(super) fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(super) fn fsync_file(path: &Path) -> std::io::Result<()> {
    fs::OpenOptions::new().write(true).open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_sqlite() {
        let sql = "-- c; not a split\nCREATE TABLE t(x); INSERT INTO t VALUES ('a;b');\n\
                   CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; DELETE FROM t WHERE 0; END;\n\
                   /* tail; */ SELECT 1";
        let parts = split_statements(sql);
        assert_eq!(parts.len(), 4, "{parts:#?}");
        assert!(parts[1].contains("'a;b'"));
        assert!(strip_leading_comments(parts[2]).starts_with("CREATE TRIGGER"));
        assert!(parts[2].trim_end().ends_with("END;"));
        assert_eq!(strip_leading_comments(parts[3]), "SELECT 1");
        assert_eq!(strip_leading_comments(parts[0]), "CREATE TABLE t(x);");
    }

    #[test]
    fn transaction_control_is_spotted() {
        assert_eq!(transaction_control("  -- x\n begin transaction;").as_deref(), Some("BEGIN"));
        assert_eq!(transaction_control("COMMIT;").as_deref(), Some("COMMIT"));
        assert_eq!(transaction_control("END"), Some("END".into()));
        assert_eq!(transaction_control("CREATE TRIGGER t BEGIN SELECT 1; END;"), None);
        assert_eq!(transaction_control("SAVEPOINT a;"), None);
    }

    #[test]
    fn uri_escapes() {
        assert_eq!(backup_uri(Path::new("/a b/c?.db")), "file:/a%20b/c%3F.db?mode=ro&immutable=1");
    }
}
