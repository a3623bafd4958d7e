//! The PostgreSQL engine (rust-postgres, synchronous, no TLS library linked).
//!
//! What is atomic:
//! - a `.sql` step: its statements and its history row commit in one transaction (PostgreSQL's DDL
//!   is transactional), so a failing or killed step leaves nothing behind;
//! - a restore: one `psql` session runs `BEGIN`, drops every schema of the database, recreates
//!   `public` as it was (owner, grants, comment), replays `pg_restore -f -` of the backup and
//!   `COMMIT`s only after `pg_restore` exited successfully; any error (psql runs with
//!   `ON_ERROR_STOP`), a truncated stream or a crash rolls the whole restore back. Other sessions see
//!   the database before or after, never in between (the drops take exclusive locks until commit);
//! - not atomic: a `.py` data step and its history row (the script commits on its own connection; the
//!   row follows), as with SQLite; roles and database-level settings are not part of a backup
//!   (`pg_dump` of one database never includes them).
//!
//! A run lock is a session advisory lock (`pg_try_advisory_lock` in a loop, so waiting is bounded
//! and the holder can be named) on a dedicated connection: several nodes may run `apply` at once,
//! the first migrates and the others wait, then find the database at the bundle's schema. Backups
//! are `pg_dump -Fc`; [`Engine::preflight`] checks `pg_dump`/`pg_restore`/`psql` exist, are of the
//! same major version and at least the server's, and can dump this database, before anything changes.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bundle_core::version::SchemaVersion;
use postgres::{Client, NoTls};

use super::server::{self, ConnUrl, Ctx, Dialect};
use super::sqlite::{fsync_file, remove_if_exists};
use super::{
    current_version, one_line, sha256_hex, utc_now_rfc3339, BackupRecord, DbError, DbState, Direction, Engine,
    EngineKind, HistoryRow, PlannedStep, RunLock, RunLockHolder, StepKind, TableDiff, BASELINE_FILE, HISTORY_TABLE,
};
use crate::fs::durable::sync_dir;

const ENGINE: EngineKind = EngineKind::Postgres;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The advisory lock key of a run: the first 8 bytes of sha256("bundle-install run lock").
fn lock_key() -> i64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(b"bundle-install run lock");
    i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// The driver's errors, as messages that name the database and never its password.
trait DriverError {
    fn pg(&self, context: &str, e: &postgres::Error) -> DbError;
}

impl DriverError for Ctx {
    fn pg(&self, context: &str, e: &postgres::Error) -> DbError {
        self.engine(context, pg_msg(e))
    }
}

/// A driver error as one line: the server's message (with detail and hint) or the client's reason.
fn pg_msg(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

fn connect(ctx: &Ctx, purpose: &str) -> Result<Client, DbError> {
    let open_err = |message: String| DbError::Open {
        db: ctx.db.clone(),
        path: ctx.url.masked.clone(),
        message: one_line(&ctx.url.scrub(&message), 300),
    };
    let (url, tls) = super::pg_tls::split_url(&ctx.url.full).map_err(open_err)?;
    let mut cfg: postgres::Config = url.parse().map_err(|e: postgres::Error| open_err(pg_msg(&e)))?;
    if cfg.get_application_name().is_none() {
        cfg.application_name(&format!("{} {purpose}", server::whoami()));
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    let first = match super::pg_tls::connector(&tls).map_err(open_err)? {
        Some(connector) => cfg.connect(connector),
        None => cfg.connect(NoTls),
    };
    match first {
        // `prefer` as libpq means it: when the TLS attempt fails, try again without TLS.
        Err(e) if tls.mode == super::pg_tls::SslMode::Prefer && super::pg_tls::is_tls_failure(&e) => {
            cfg.ssl_mode(postgres::config::SslMode::Disable);
            cfg.connect(NoTls).map_err(|e2| open_err(format!("{} (and without TLS: {})", pg_msg(&e), pg_msg(&e2))))
        }
        r => r.map_err(|e| open_err(pg_msg(&e))),
    }
}

pub(crate) struct PgEngine {
    ctx: Ctx,
    root: PathBuf,
    client: Option<Client>,
    /// The schema `bundle_schema_history` lives in: the connection's `current_schema()`, fixed at
    /// the first connection so a migration's `SET search_path` cannot move it.
    schema: Option<String>,
    /// A scratch copy: the database is dropped (through this URL's server) when the engine closes.
    scratch_of: Option<ConnUrl>,
}

impl PgEngine {
    pub(crate) fn new(name: &str, url: ConnUrl, root: &Path) -> PgEngine {
        PgEngine {
            ctx: Ctx { db: name.into(), url },
            root: root.to_path_buf(),
            client: None,
            schema: None,
            scratch_of: None,
        }
    }

    fn client(&mut self) -> Result<&mut Client, DbError> {
        if self.client.is_none() {
            let mut c = connect(&self.ctx, "migrate")?;
            let schema: Option<String> = c
                .query_one("SELECT current_schema()", &[])
                .map_err(|e| self.ctx.pg("reading current_schema()", &e))?
                .get(0);
            let schema = schema.ok_or_else(|| DbError::Config {
                db: self.ctx.db.clone(),
                message: "the connection has no current schema (empty search_path); set one for the user".into(),
            })?;
            self.schema = Some(schema);
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// `"schema".bundle_schema_history`
    fn table(&self) -> String {
        format!("{}.{}", ident(self.schema.as_deref().unwrap_or("public")), HISTORY_TABLE)
    }

    fn create_history_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    version      TEXT    NOT NULL,
    file         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    direction    TEXT    NOT NULL CHECK (direction IN ('up', 'down', 'baseline')),
    applied_at   TEXT    NOT NULL,
    release      TEXT    NOT NULL,
    success      BOOLEAN NOT NULL,
    schema_after TEXT    NOT NULL
)",
            self.table()
        )
    }

    fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (version, file, sha256, direction, applied_at, release, success, schema_after)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            self.table()
        )
    }

    fn history_exists(&mut self) -> Result<bool, DbError> {
        let table = self.table_literal();
        let ctx = self.ctx.clone();
        let c = self.client()?;
        c.query_one(&format!("SELECT to_regclass({table}) IS NOT NULL"), &[])
            .map(|r| r.get(0))
            .map_err(|e| ctx.pg("reading the schema", &e))
    }

    fn table_literal(&self) -> String {
        literal(&self.table())
    }

    fn read_history(&mut self) -> Result<Vec<HistoryRow>, DbError> {
        let sql = format!(
            "SELECT id, version, file, sha256, direction, applied_at, release, success, schema_after FROM {} ORDER BY id",
            self.table()
        );
        let db = self.ctx.db.clone();
        let bad = |message: String| DbError::History { db: db.clone(), message };
        let rows = self.client()?.query(&sql, &[]).map_err(|e| bad(one_line(&pg_msg(&e), 300)))?;
        let mut out = Vec::new();
        for r in rows {
            let id: i64 = r.get(0);
            let version: String = r.get(1);
            let direction: String = r.get(4);
            let after: String = r.get(8);
            out.push(HistoryRow {
                id,
                version: version.parse().map_err(|e| bad(format!("row {id}: {e}")))?,
                file: r.get(2),
                sha256: r.get(3),
                direction: Direction::parse(&direction)
                    .ok_or_else(|| bad(format!("row {id}: unknown direction `{direction}`")))?,
                applied_at: r.get(5),
                release: r.get(6),
                success: r.get(7),
                schema_after: after.parse().map_err(|e| bad(format!("row {id}: {e}")))?,
            });
        }
        Ok(out)
    }

    /// Data tables of the database as (display name, qualified SQL name), sorted.
    fn data_tables(&mut self) -> Result<Vec<(String, String)>, DbError> {
        let ctx = self.ctx.clone();
        let schema = self.schema_name()?;
        let c = self.client()?;
        data_tables(c, &schema).map_err(|e| ctx.pg("listing tables", &e))
    }

    fn schema_name(&mut self) -> Result<String, DbError> {
        self.client()?;
        Ok(self.schema.clone().expect("set on connect"))
    }

    fn apply_sql(&mut self, step: &PlannedStep, release: &str, bytes: &[u8]) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let bad = |message: String| DbError::Steps { db: ctx.db.clone(), message };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("{} is not UTF-8: {e}", step.file.file)))?;
        let statements =
            server::split_sql(text, Dialect::Postgres).map_err(|m| bad(format!("{}: {m}", step.file.file)))?;
        let fail = |statement: &str, message: String| DbError::Step {
            db: ctx.db.clone(),
            file: step.file.file.clone(),
            statement: one_line(&ctx.url.scrub(server::strip_comments(statement)), 200),
            message: one_line(&ctx.url.scrub(&message), 300),
        };
        for s in &statements {
            let w = server::first_word(s);
            if matches!(w.as_str(), "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "START")
                && (w != "START" || strip_ws_upper(s).starts_with("STARTTRANSACTION"))
            {
                return Err(fail(
                    s,
                    format!("{w} is not allowed in a migration file (each file already runs in one transaction)"),
                ));
            }
        }
        let create = self.create_history_sql();
        let insert = self.insert_sql();
        let c = self.client()?;
        let mut tx = c.transaction().map_err(|e| fail("BEGIN", pg_msg(&e)))?;
        tx.batch_execute(&create).map_err(|e| fail("CREATE TABLE bundle_schema_history", pg_msg(&e)))?;
        for s in &statements {
            tx.batch_execute(s).map_err(|e| fail(s, pg_msg(&e)))?;
        }
        insert_row(&mut tx, &insert, step, release, true, step.schema_after)
            .map_err(|e| fail("INSERT INTO bundle_schema_history", pg_msg(&e)))?;
        tx.commit().map_err(|e| fail("COMMIT", pg_msg(&e)))?;
        // A migration's plain SET (search_path, …) outlives its transaction: not into the next step.
        c.batch_execute("RESET ALL").map_err(|e| ctx.pg("resetting session settings", &e))
    }

    fn apply_python(&mut self, step: &PlannedStep, release: &str, python: Option<&Path>) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        server::run_python(&ctx.db, ENGINE, &ctx.url, &self.root, step, python)?;
        let create = self.create_history_sql();
        let insert = self.insert_sql();
        let c = self.client()?;
        let mut record = || -> Result<(), postgres::Error> {
            let mut tx = c.transaction()?;
            tx.batch_execute(&create)?;
            insert_row(&mut tx, &insert, step, release, true, step.schema_after)?;
            tx.commit()
        };
        record().map_err(|e| ctx.pg(&format!("recording {} in {HISTORY_TABLE}", step.file.file), &e))
    }

    /// Best effort: a `success = false` row in its own transaction.
    fn record_failure(&mut self, step: &PlannedStep, release: &str) {
        let create = self.create_history_sql();
        let insert = self.insert_sql();
        let last = format!("SELECT schema_after FROM {} WHERE success ORDER BY id DESC LIMIT 1", self.table());
        let Ok(c) = self.client() else { return };
        let mut record = || -> Result<(), postgres::Error> {
            let mut tx = c.transaction()?;
            tx.batch_execute(&create)?;
            let now: Option<String> = tx.query_opt(&last, &[])?.map(|r| r.get(0));
            let now = now.and_then(|s| s.parse().ok()).unwrap_or(SchemaVersion::CLEAN);
            insert_row(&mut tx, &insert, step, release, false, now)?;
            tx.commit()
        };
        let _ = record();
    }

    /// The connection environment for a client program: the URL without its password on the command
    /// line (visible in `ps`), the password in `PGPASSWORD`.
    fn program(&self, prog: &Path) -> Command {
        let mut cmd = Command::new(prog);
        cmd.env_remove("PGPASSWORD")
            .env(
                "PGAPPNAME",
                format!("{} {}", server::whoami(), prog.file_name().unwrap_or_default().to_string_lossy()),
            )
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string());
        if let Some(pw) = &self.ctx.url.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn tool(&self, names: &[&str]) -> Result<PathBuf, DbError> {
        server::find_program("BUNDLE_PG_BINDIR", names).ok_or_else(|| {
            self.ctx.tools(format!(
                "{} is not installed (needed to back up and restore PostgreSQL); install the PostgreSQL client programs of the server's major version or set BUNDLE_PG_BINDIR",
                names[0]
            ))
        })
    }

    /// The SQL that empties the database (run inside the restore's transaction): every non-system
    /// schema dropped, `public` recreated with the owner, grants and comment it has now.
    fn emptying_sql(&mut self) -> Result<String, DbError> {
        let ctx = self.ctx.clone();
        let c = self.client()?;
        let row = c
            .query_one(
                r#"SELECT
  coalesce((SELECT string_agg(format('DROP SCHEMA IF EXISTS %I CASCADE;', nspname), E'\n' ORDER BY nspname)
            FROM pg_namespace WHERE nspname NOT IN ('information_schema', 'pg_catalog', 'pg_toast')
              AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'), ''),
  coalesce((SELECT format('CREATE SCHEMA public AUTHORIZATION %I;', pg_get_userbyid(n.nspowner))
            || coalesce((SELECT string_agg(format('GRANT %s ON SCHEMA public TO %s%s;', a.privilege_type,
                                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                  CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), E'\n')
                         FROM aclexplode(n.nspacl) a WHERE a.grantee <> n.nspowner), '')
            || coalesce(format('COMMENT ON SCHEMA public IS %L;', obj_description(n.oid, 'pg_namespace')), '')
            FROM pg_namespace n WHERE n.nspname = 'public'), 'CREATE SCHEMA public;')"#,
                &[],
            )
            .map_err(|e| ctx.pg("reading the schemas", &e))?;
        let drops: String = row.get(0);
        let public: String = row.get(1);
        Ok(format!("{drops}\n{public}\n"))
    }

    /// Restores `file` into this (live) database in one transaction (see the module docs).
    fn restore_file(&mut self, file: Option<&Path>) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let emptying = self.emptying_sql()?;
        let Some(file) = file else {
            // Nothing to load: empty the database in one transaction of our own.
            let c = self.client()?;
            let mut tx = c.transaction().map_err(|e| ctx.pg("emptying the database", &e))?;
            tx.batch_execute(&emptying).map_err(|e| ctx.pg("emptying the database", &e))?;
            return tx.commit().map_err(|e| ctx.pg("emptying the database", &e));
        };
        let pg_restore = self.tool(&["pg_restore"])?;
        let psql = self.tool(&["psql"])?;
        let mut restore = self
            .program(&pg_restore)
            .arg("--file=-")
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", pg_restore.display())))?;
        let mut apply = self
            .program(&psql)
            .args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&ctx.url.without_password)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", psql.display())))?;
        let restore_err = drain(restore.stderr.take());
        let apply_err = drain(apply.stderr.take());
        let mut sink = apply.stdin.take().expect("piped");
        let mut src = restore.stdout.take().expect("piped");
        // Stop feeding at the first write error: psql stopped (ON_ERROR_STOP) and rolled back.
        let fed = (|| -> std::io::Result<()> {
            sink.write_all(format!("BEGIN;\n{emptying}").as_bytes())?;
            std::io::copy(&mut src, &mut sink)?;
            Ok(())
        })();
        drop(src);
        let restored = restore.wait().map_err(|e| ctx.tools(format!("waiting for pg_restore: {e}")))?;
        // COMMIT only when the whole script went through; otherwise psql sees EOF inside the
        // transaction and the server rolls it back.
        let committed = fed.is_ok() && restored.success() && sink.write_all(b"COMMIT;\n").is_ok();
        drop(sink);
        let applied = apply.wait().map_err(|e| ctx.tools(format!("waiting for psql: {e}")))?;
        let restore_err = restore_err.join().unwrap_or_default();
        let apply_err = apply_err.join().unwrap_or_default();
        if !restored.success() {
            return Err(ctx.engine(
                &format!("restoring from {}", file.display()),
                format!(
                    "pg_restore failed ({}): {}; nothing was changed",
                    super::sqlite::describe_status(restored),
                    super::sqlite::stderr_tail(&restore_err)
                ),
            ));
        }
        if !applied.success() || !committed {
            return Err(ctx.engine(
                &format!("restoring from {}", file.display()),
                format!(
                    "psql failed ({}): {}; the restore was rolled back, nothing was changed",
                    super::sqlite::describe_status(applied),
                    super::sqlite::stderr_tail(&apply_err)
                ),
            ));
        }
        Ok(())
    }

    /// Loads a backup into an empty scratch database with `pg_restore` (no owners or grants: only the
    /// rows matter there).
    fn load_into(&self, target: &ConnUrl, file: &Path) -> Result<(), DbError> {
        let ctx = &self.ctx;
        let pg_restore = self.tool(&["pg_restore"])?;
        let out = self
            .program(&pg_restore)
            .args(["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "-d"])
            .arg(&target.without_password)
            .arg(file)
            .output()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", pg_restore.display())))?;
        if !out.status.success() {
            return Err(ctx.engine(
                "loading the backup into a scratch database",
                format!(
                    "pg_restore failed ({}): {}",
                    super::sqlite::describe_status(out.status),
                    super::sqlite::stderr_tail(&out.stderr)
                ),
            ));
        }
        Ok(())
    }

    /// Creates an empty scratch database on the same server; returns its URL.
    fn create_scratch(&mut self) -> Result<ConnUrl, DbError> {
        let ctx = self.ctx.clone();
        let name = format!("bundle_scratch_{}", server::random_suffix());
        let c = self.client()?;
        c.batch_execute(&format!("CREATE DATABASE {}", ident(&name)))
            .map_err(|e| ctx.pg("creating a scratch database (the user needs CREATEDB)", &e))?;
        Ok(ctx.url.with_dbname(&name))
    }

    fn drop_scratch(admin: &Ctx, name: &str) -> Result<(), DbError> {
        let mut c = connect(admin, "cleanup")?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)))
            .map_err(|e| admin.pg("dropping a scratch database", &e))
    }
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn strip_ws_upper(s: &str) -> String {
    server::strip_comments(s).chars().filter(|c| !c.is_whitespace()).take(32).collect::<String>().to_ascii_uppercase()
}

/// Collects a child's stderr on a thread (so a chatty child never blocks on a full pipe).
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn insert_row(
    tx: &mut postgres::Transaction<'_>,
    insert: &str,
    step: &PlannedStep,
    release: &str,
    success: bool,
    schema_after: SchemaVersion,
) -> Result<u64, postgres::Error> {
    tx.execute(
        insert,
        &[
            &step.version.to_string(),
            &step.file.file,
            &step.file.sha256,
            &step.direction.as_str(),
            &utc_now_rfc3339(),
            &release,
            &success,
            &schema_after.to_string(),
        ],
    )
}

/// Data tables (ordinary and partitioned, not partitions, not ours) in every non-system schema, as
/// (display name, qualified SQL name). Tables in `schema` (the history's) display unqualified.
fn data_tables(c: &mut Client, schema: &str) -> Result<Vec<(String, String)>, postgres::Error> {
    let rows = c.query(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('information_schema', 'pg_catalog', 'pg_toast')
           AND n.nspname NOT LIKE 'pg\\_%'
           AND NOT (n.nspname = $1 AND c.relname = $2)
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY n.nspname, c.relname",
        &[&schema, &HISTORY_TABLE],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let (nsp, rel): (String, String) = (r.get(0), r.get(1));
            let display = if nsp == schema { rel.clone() } else { format!("{nsp}.{rel}") };
            (display, format!("{}.{}", ident(&nsp), ident(&rel)))
        })
        .collect())
}

/// (name, is part of the primary key) of each column, in order.
fn columns(c: &mut Client, qualified: &str) -> Result<Vec<(String, bool)>, postgres::Error> {
    let rows = c.query(
        "SELECT a.attname::text, coalesce(a.attnum = ANY (i.indkey), false)
         FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        &[&qualified],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn count(c: &mut Client, qualified: &str) -> Result<u64, postgres::Error> {
    let n: i64 = c.query_one(&format!("SELECT count(*) FROM ONLY {qualified}"), &[])?.get(0);
    Ok(n as u64)
}

/// key hash → row hash for every row of a table; rows without a usable key are keyed by their own
/// hash and counted (a multiset).
fn row_hashes(
    c: &mut Client,
    qualified: &str,
    key: &[String],
    common: &[String],
) -> Result<HashMap<String, (String, u64)>, postgres::Error> {
    let cols = |v: &[String]| {
        if v.is_empty() {
            "NULL".to_string()
        } else {
            v.iter().map(|c| format!("t.{}", ident(c))).collect::<Vec<_>>().join(", ")
        }
    };
    let sql = format!(
        "SELECT md5(ROW({}, NULL)::text), md5(ROW({}, NULL)::text) FROM ONLY {qualified} t",
        cols(key),
        cols(common)
    );
    let mut out: HashMap<String, (String, u64)> = HashMap::new();
    for r in c.query(&sql, &[])? {
        let (k, v): (String, String) = (r.get(0), r.get(1));
        out.entry(k).and_modify(|e| e.1 += 1).or_insert((v, 1));
    }
    Ok(out)
}

fn diff_databases(
    live: &mut Client,
    live_schema: &str,
    old: &mut Client,
    old_schema: &str,
) -> Result<Vec<TableDiff>, postgres::Error> {
    let live_tables: HashMap<String, String> = data_tables(live, live_schema)?.into_iter().collect();
    let old_tables: HashMap<String, String> = data_tables(old, old_schema)?.into_iter().collect();
    let mut names: Vec<&String> = live_tables.keys().chain(old_tables.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let d = match (live_tables.get(name), old_tables.get(name)) {
            (Some(l), None) => TableDiff { table: name.clone(), added: count(live, l)?, changed: 0, removed: 0 },
            (None, Some(o)) => TableDiff { table: name.clone(), added: 0, changed: 0, removed: count(old, o)? },
            (Some(l), Some(o)) => {
                let lc = columns(live, l)?;
                let oc: Vec<String> = columns(old, o)?.into_iter().map(|(n, _)| n).collect();
                let pk: Vec<String> = lc.iter().filter(|(_, k)| *k).map(|(n, _)| n.clone()).collect();
                let common: Vec<String> = lc.iter().map(|(n, _)| n.clone()).filter(|n| oc.contains(n)).collect();
                let keyed = !pk.is_empty() && pk.iter().all(|k| oc.contains(k));
                let (key, rest): (Vec<String>, Vec<String>) = if keyed {
                    (pk.clone(), common.iter().filter(|c| !pk.contains(c)).cloned().collect())
                } else {
                    (common.clone(), Vec::new())
                };
                let a = row_hashes(live, l, &key, &rest)?;
                let b = row_hashes(old, o, &key, &rest)?;
                let (added, changed, removed) = server::merge_counts(&a, &b, keyed);
                TableDiff { table: name.clone(), added, changed, removed }
            }
            (None, None) => unreachable!(),
        };
        if d.added + d.changed + d.removed > 0 {
            out.push(d);
        }
    }
    Ok(out)
}

fn major_of(version_line: &str) -> Option<u32> {
    // "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" → 15; "9.6.24" → 9
    version_line
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .and_then(|w| w.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|m| m.parse().ok())
}

struct PgRunLock {
    client: Client,
}

impl RunLockHolder for PgRunLock {
    fn release(&mut self) -> Result<(), String> {
        self.client.query_one("SELECT pg_advisory_unlock($1)", &[&lock_key()]).map(|_| ()).map_err(|e| pg_msg(&e))
    }
}

impl Engine for PgEngine {
    fn name(&self) -> &str {
        &self.ctx.db
    }

    fn engine(&self) -> EngineKind {
        ENGINE
    }

    fn location(&self) -> String {
        self.ctx.url.masked.clone()
    }

    fn inspect(&mut self) -> Result<DbState, DbError> {
        if self.history_exists()? {
            let history = self.read_history()?;
            return Ok(DbState::Versioned { version: current_version(&history), history });
        }
        let tables: Vec<String> = self.data_tables()?.into_iter().map(|(d, _)| d).collect();
        Ok(if tables.is_empty() { DbState::Clean } else { DbState::Unversioned { tables } })
    }

    fn preflight(&mut self) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let c = self.client()?;
        let num: String =
            c.query_one("SHOW server_version_num", &[]).map_err(|e| ctx.pg("reading the server version", &e))?.get(0);
        let server_major = num.parse::<u32>().map(|n| n / 10000).unwrap_or(0);
        let mut majors = Vec::new();
        for name in ["pg_dump", "pg_restore", "psql"] {
            let prog = self.tool(&[name])?;
            let line = server::program_version(&prog).map_err(|m| ctx.tools(m))?;
            let major = major_of(&line)
                .ok_or_else(|| ctx.tools(format!("cannot read the version of {}: `{line}`", prog.display())))?;
            majors.push((name, prog, major));
        }
        let dump_major = majors[0].2;
        if dump_major < server_major {
            return Err(ctx.tools(format!(
                "{} is version {dump_major} but the server is PostgreSQL {server_major}: pg_dump refuses to dump a newer server; install the version-{server_major} client programs or point BUNDLE_PG_BINDIR at them",
                majors[0].1.display()
            )));
        }
        for (name, prog, major) in &majors[1..] {
            if *major != dump_major {
                return Err(ctx.tools(format!(
                    "{name} ({}) is version {major} but pg_dump is {dump_major}: backups would be restored by a different major version; use the programs of one PostgreSQL client package",
                    prog.display()
                )));
            }
        }
        // Prove it works here (permissions, server reachable from the programs, auth by environment).
        let out = self
            .program(&majors[0].1)
            .args(["--schema-only", "--no-password", "--file=/dev/null", "-d"])
            .arg(&ctx.url.without_password)
            .output()
            .map_err(|e| ctx.tools(format!("cannot run pg_dump: {e}")))?;
        if !out.status.success() {
            return Err(ctx.tools(format!(
                "a trial `pg_dump --schema-only` failed ({}): {}",
                super::sqlite::describe_status(out.status),
                super::sqlite::stderr_tail(&out.stderr)
            )));
        }
        Ok(())
    }

    fn lock_for_run(&mut self, wait: Duration) -> Result<RunLock, DbError> {
        let ctx = self.ctx.clone();
        let mut c = connect(&ctx, "run lock")?;
        let key = lock_key();
        let started = Instant::now();
        loop {
            let got: bool = c
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .map_err(|e| ctx.pg("taking the run lock", &e))?
                .get(0);
            if got {
                return Ok(RunLock::held(&ctx.db, Box::new(PgRunLock { client: c })));
            }
            if started.elapsed() >= wait {
                let holder: Option<String> = c
                    .query_opt(
                        "SELECT coalesce(nullif(a.application_name, ''), 'pid ' || a.pid) || ' from '
                                || coalesce(host(a.client_addr), 'a local socket') || ', connected since '
                                || to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE l.locktype = 'advisory' AND l.granted
                           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                           AND ((l.classid::oid::bigint << 32) | l.objid::oid::bigint) = $1
                         LIMIT 1",
                        &[&key],
                    )
                    .ok()
                    .flatten()
                    .map(|r| r.get(0));
                return Err(DbError::Locked {
                    db: ctx.db.clone(),
                    location: ctx.url.masked.clone(),
                    holder: holder.unwrap_or_else(|| "another session".into()),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            std::thread::sleep(
                Duration::from_millis(200).min(wait.saturating_sub(started.elapsed())).max(Duration::from_millis(10)),
            );
        }
    }

    fn backup(&mut self, dir: &Path) -> Result<BackupRecord, DbError> {
        let ctx = self.ctx.clone();
        let taken_at = utc_now_rfc3339();
        let version = self.inspect()?.version().unwrap_or(SchemaVersion::CLEAN);
        let pg_dump = self.tool(&["pg_dump"])?;
        fs::create_dir_all(dir).map_err(|e| ctx.io(dir, e))?;
        let name = format!("{}.pgdump", ctx.db);
        let target = dir.join(&name);
        let tmp = dir.join(format!(".{name}.partial"));
        remove_if_exists(&tmp).map_err(|e| ctx.io(&tmp, e))?;
        // -Fc: compressed, restorable selectively and by pg_restore; one consistent snapshot
        // (pg_dump runs in a repeatable-read transaction), never blocking writers.
        let out = self
            .program(&pg_dump)
            .args(["-Fc", "--no-password"])
            .arg(format!("--file={}", tmp.display()))
            .arg("-d")
            .arg(&ctx.url.without_password)
            .output()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", pg_dump.display())))?;
        if !out.status.success() {
            let _ = remove_if_exists(&tmp);
            return Err(ctx.engine(
                &format!("backing up to {}", target.display()),
                format!(
                    "pg_dump failed ({}): {}",
                    super::sqlite::describe_status(out.status),
                    super::sqlite::stderr_tail(&out.stderr)
                ),
            ));
        }
        fsync_file(&tmp).map_err(|e| ctx.io(&tmp, e))?;
        fs::rename(&tmp, &target).map_err(|e| ctx.io(&target, e))?;
        sync_dir(dir).map_err(|e| ctx.io(dir, e))?;
        let (blake3, bytes) = super::backup_checksum(&target).map_err(|e| ctx.io(&target, e))?;
        Ok(BackupRecord {
            db: ctx.db,
            engine: ENGINE,
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
        super::check_backup_record(&ctx.db, ENGINE, backup)?;
        match &backup.file {
            None => self.restore_file(None),
            Some(file) => {
                let path = dir.join(file);
                super::verify_backup_file(&ctx.db, backup, &path)?;
                self.restore_file(Some(&path))
            }
        }
    }

    fn apply(&mut self, step: &PlannedStep, release: &str, python: Option<&Path>) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let bytes = super::read_step_file(&ctx.db, step)?;
        let result = match step.file.kind {
            StepKind::Sql => self.apply_sql(step, release, &bytes),
            StepKind::Python => self.apply_python(step, release, python),
        };
        if result.is_err() {
            self.record_failure(step, release);
        }
        result
    }

    fn baseline(&mut self, version: SchemaVersion, release: &str) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        if self.history_exists()? {
            let history = self.read_history()?;
            if history.iter().any(|r| r.success) {
                return Err(DbError::AlreadyVersioned { db: ctx.db, version: current_version(&history) });
            }
        }
        let fingerprint = sha256_hex(self.schema_fingerprint()?.as_bytes());
        let create = self.create_history_sql();
        let insert = format!(
            "INSERT INTO {} (version, file, sha256, direction, applied_at, release, success, schema_after)
             VALUES ($1, $2, $3, 'baseline', $4, $5, true, $1)",
            self.table()
        );
        let c = self.client()?;
        let mut record = || -> Result<(), postgres::Error> {
            let mut tx = c.transaction()?;
            tx.batch_execute(&create)?;
            tx.execute(&insert, &[&version.to_string(), &BASELINE_FILE, &fingerprint, &utc_now_rfc3339(), &release])?;
            tx.commit()
        };
        record().map_err(|e| ctx.pg("recording the baseline", &e))
    }

    fn diff_since(&mut self, backup: &BackupRecord, dir: &Path) -> Result<Vec<TableDiff>, DbError> {
        let ctx = self.ctx.clone();
        super::check_backup_record(&ctx.db, ENGINE, backup)?;
        let schema = self.schema_name()?;
        let Some(file) = &backup.file else {
            let tables = self.data_tables()?;
            let c = self.client()?;
            let mut out = Vec::new();
            for (display, q) in tables {
                let n = count(c, &q).map_err(|e| ctx.pg("counting rows", &e))?;
                if n > 0 {
                    out.push(TableDiff { table: display, added: n, changed: 0, removed: 0 });
                }
            }
            return Ok(out);
        };
        let path = dir.join(file);
        super::verify_backup_file(&ctx.db, backup, &path)?;
        // The backup goes into a scratch database on the same server, compared row by row (hashes)
        // from here: PostgreSQL cannot join across databases.
        let scratch = self.create_scratch()?;
        let result = (|| {
            self.load_into(&scratch, &path)?;
            let sctx = Ctx { db: ctx.db.clone(), url: scratch.clone() };
            let mut old = connect(&sctx, "diff")?;
            let c = self.client()?;
            diff_databases(c, &schema, &mut old, &schema).map_err(|e| ctx.pg("comparing with the backup", &e))
        })();
        let dropped = PgEngine::drop_scratch(&ctx, &scratch.dbname);
        let diff = result?;
        dropped?;
        Ok(diff)
    }

    fn dump(&mut self) -> Result<String, DbError> {
        let ctx = self.ctx.clone();
        let pg_dump = self.tool(&["pg_dump"])?;
        let out = self
            .program(&pg_dump)
            .args(["--schema-only", "--no-password", "-d"])
            .arg(&ctx.url.without_password)
            .output()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", pg_dump.display())))?;
        if !out.status.success() {
            return Err(ctx.engine("dumping the schema", super::sqlite::stderr_tail(&out.stderr)));
        }
        let mut text = String::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `\restrict KEY` carries a random key on every run; comments name versions.
            if line.starts_with("\\restrict")
                || line.starts_with("\\unrestrict")
                || line.starts_with("--")
                || line.is_empty()
            {
                continue;
            }
            text.push_str(line);
            text.push('\n');
        }
        let c = self.client()?;
        let rels = c
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'S') AND n.nspname NOT IN ('information_schema', 'pg_catalog', 'pg_toast')
                   AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
                &[],
            )
            .map_err(|e| ctx.pg("listing tables", &e))?;
        for r in rels {
            let (q, kind): (String, String) = (r.get(0), r.get(1));
            let sql = if kind == "S" {
                format!("SELECT last_value::text || ' ' || is_called::text FROM {q}")
            } else {
                format!("SELECT t::text FROM ONLY {q} t ORDER BY t::text COLLATE \"C\"")
            };
            let rows = c.query(&sql, &[]).map_err(|e| ctx.pg(&format!("dumping {q}"), &e))?;
            for row in rows {
                let v: Option<String> = row.get(0);
                text.push_str(&format!("{q} {}\n", v.unwrap_or_else(|| "NULL".into())));
            }
        }
        Ok(text)
    }

    fn scratch(&mut self) -> Result<Box<dyn Engine>, DbError> {
        let url = self.create_scratch()?;
        let mut e = PgEngine::new(&self.ctx.db, url, &self.root);
        e.scratch_of = Some(self.ctx.url.clone());
        Ok(Box::new(e))
    }

    fn close(&mut self) -> Result<(), DbError> {
        self.client = None;
        if let Some(admin) = self.scratch_of.take() {
            let actx = Ctx { db: self.ctx.db.clone(), url: admin };
            PgEngine::drop_scratch(&actx, &self.ctx.url.dbname)?;
        }
        Ok(())
    }

    fn table_stats(&mut self) -> Result<Vec<super::TableStat>, DbError> {
        let ctx = self.ctx.clone();
        let tables = self.data_tables()?;
        let c = self.client()?;
        let mut out = Vec::new();
        for (display, q) in tables {
            let rows = count(c, &q).map_err(|e| ctx.pg("counting rows", &e))?;
            let bytes: i64 = c
                .query_one("SELECT pg_total_relation_size($1::text::regclass)", &[&q])
                .map_err(|e| ctx.pg("reading table sizes", &e))?
                .get(0);
            out.push(super::TableStat { table: display, rows, bytes: bytes as u64 });
        }
        Ok(out)
    }

    fn server_dbname(&self) -> Option<String> {
        Some(self.ctx.url.dbname.clone())
    }

    fn copy_to_scratch(&mut self, name: &str, work: &Path) -> Result<super::ScratchCopy, DbError> {
        let ctx = self.ctx.clone();
        let target = ctx.url.with_dbname(name);
        // `CREATE DATABASE … TEMPLATE` copies the files, far faster than a dump, but only while no
        // session (ours included) is connected to the live database: asked from the maintenance
        // database, and any other session (the running app, another node) means a dump instead.
        self.client = None;
        let admin = Ctx { db: ctx.db.clone(), url: ctx.url.with_dbname("postgres") };
        if let Ok(mut c) = connect(&admin, "rehearsal copy") {
            let others: i64 = c
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&ctx.url.dbname])
                .map_err(|e| ctx.pg("counting sessions on the live database", &e))?
                .get(0);
            if others == 0
                && c.batch_execute(&format!("CREATE DATABASE {} TEMPLATE {}", ident(name), ident(&ctx.url.dbname)))
                    .is_ok()
            {
                return Ok(super::ScratchCopy {
                    url: target.full.clone(),
                    masked: target.masked.clone(),
                    method: "template".into(),
                });
            }
        }
        let record = self.backup(work)?;
        let file = work.join(record.file.as_deref().unwrap_or_default());
        let c = self.client()?;
        c.batch_execute(&format!("CREATE DATABASE {}", ident(name)))
            .map_err(|e| ctx.pg("creating the rehearsal's scratch database (the user needs CREATEDB)", &e))?;
        let loaded = self.load_into(&target, &file);
        let _ = std::fs::remove_file(&file);
        loaded?;
        Ok(super::ScratchCopy { url: target.full.clone(), masked: target.masked.clone(), method: "dump".into() })
    }

    fn drop_rehearsal_db(&mut self, name: &str) -> Result<(), DbError> {
        super::check_rehearsal_drop(&self.ctx.db, &self.ctx.url.dbname, name)?;
        let admin = Ctx { db: self.ctx.db.clone(), url: self.ctx.url.clone() };
        PgEngine::drop_scratch(&admin, name)
    }
}

impl PgEngine {
    /// Tables, columns and types, sorted: what a baseline row's sha256 fingerprints.
    fn schema_fingerprint(&mut self) -> Result<String, DbError> {
        let ctx = self.ctx.clone();
        let c = self.client()?;
        let rows = c
            .query(
                "SELECT format('%I.%I.%I %s %s', n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull)
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
                   AND n.nspname NOT IN ('information_schema', 'pg_catalog', 'pg_toast') AND n.nspname NOT LIKE 'pg\\_%'
                   AND c.relname <> 'bundle_schema_history'
                 ORDER BY 1",
                &[],
            )
            .map_err(|e| ctx.pg("reading the schema", &e))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0) + "\n").collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(major_of("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(major_of("psql (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(major_of("pg_restore (PostgreSQL) 17beta1"), Some(17));
        assert_ne!(lock_key(), 0);
    }
}
