//! The MariaDB/MySQL engine (blackbeam's `mysql` crate, pure-Rust TLS, no system OpenSSL).
//!
//! What is atomic: nothing that changes the schema. MariaDB and MySQL commit DDL implicitly, so a
//! step that fails (or is killed) half-way may leave half of its changes. The engine therefore
//! records a step as *started* (`success = false`) before running anything and flips it to finished
//! afterwards; a started row with no later success is an unfinished step (see
//! [`super::unfinished_steps`]): `inspect` shows it, `status` must not call the database healthy,
//! `preflight` and `apply` refuse to migrate on top of it, and the only way out is restoring the
//! backup taken before the step (the installer does it when a step fails or when `recover` undoes
//! a killed run). A restore drops every table, view, routine and event and loads the
//! `mysqldump --single-transaction --routines --triggers --events` file with the `mysql` client:
//! not atomic either, but idempotent, so a restore interrupted by a crash is simply run again by
//! `recover`. The history row update after a step is a single-row autocommit write.
//!
//! The run lock is `GET_LOCK('bundle_install:<database>')` on a dedicated connection, held for the
//! whole run (backup and every step).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bundle_core::version::SchemaVersion;
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Value};

use super::server::{self, ConnUrl, Ctx, Dialect};
use super::sqlite::{describe_status, fsync_file, remove_if_exists, stderr_tail};
use super::{
    current_version, one_line, sha256_hex, unfinished_steps, utc_now_rfc3339, BackupRecord, DbError, DbState,
    Direction, Engine, EngineKind, HistoryRow, PlannedStep, RunLock, RunLockHolder, StepKind, TableDiff, BASELINE_FILE,
    HISTORY_TABLE,
};
use crate::fs::durable::sync_dir;

const ENGINE: EngineKind = EngineKind::Mysql;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The driver's errors, as messages that name the database and never its password.
trait DriverError {
    fn my(&self, context: &str, e: &mysql::Error) -> DbError;
}

impl DriverError for Ctx {
    fn my(&self, context: &str, e: &mysql::Error) -> DbError {
        self.engine(context, my_msg(e))
    }
}

fn my_msg(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(m) => format!("ERROR {} ({}): {}", m.code, m.state, m.message),
        other => other.to_string(),
    }
}

fn connect(ctx: &Ctx) -> Result<Conn, DbError> {
    let open_err = |message: String| DbError::Open {
        db: ctx.db.clone(),
        path: ctx.url.masked.clone(),
        message: one_line(&ctx.url.scrub(&message), 300),
    };
    let full = match ctx.url.full.split_once("://") {
        Some((_, rest)) => format!("mysql://{rest}"),
        None => ctx.url.full.clone(),
    };
    let opts = Opts::from_url(&full).map_err(|e| open_err(e.to_string()))?;
    let opts = OptsBuilder::from_opts(opts).tcp_connect_timeout(Some(CONNECT_TIMEOUT)).prefer_socket(false);
    Conn::new(opts).map_err(|e| open_err(my_msg(&e)))
}

pub(crate) struct MyEngine {
    ctx: Ctx,
    root: PathBuf,
    conn: Option<Conn>,
    /// A scratch copy: its database is dropped when the engine closes.
    scratch: bool,
}

impl MyEngine {
    pub(crate) fn new(name: &str, url: ConnUrl, root: &Path) -> MyEngine {
        MyEngine { ctx: Ctx { db: name.into(), url }, root: root.to_path_buf(), conn: None, scratch: false }
    }

    fn conn(&mut self) -> Result<&mut Conn, DbError> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.ctx)?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// `` `db`.`bundle_schema_history` `` (qualified: a migration's `USE` cannot move it).
    fn table(&self) -> String {
        format!("{}.{}", ident(&self.ctx.url.dbname), ident(HISTORY_TABLE))
    }

    fn create_history_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    version      VARCHAR(32)  NOT NULL,
    file         VARCHAR(255) NOT NULL,
    sha256       VARCHAR(64)  NOT NULL,
    direction    VARCHAR(8)   NOT NULL,
    applied_at   VARCHAR(32)  NOT NULL,
    `release`    VARCHAR(128) NOT NULL,
    success      BOOLEAN      NOT NULL,
    schema_after VARCHAR(32)  NOT NULL,
    CONSTRAINT bundle_schema_history_direction CHECK (direction IN ('up', 'down', 'baseline'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
            self.table()
        )
    }

    fn history_exists(&mut self) -> Result<bool, DbError> {
        let ctx = self.ctx.clone();
        let dbname = ctx.url.dbname.clone();
        let c = self.conn()?;
        let n: Option<u64> = c
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (dbname, HISTORY_TABLE),
            )
            .map_err(|e| ctx.my("reading the schema", &e))?;
        Ok(n.unwrap_or(0) > 0)
    }

    fn read_history(&mut self) -> Result<Vec<HistoryRow>, DbError> {
        let sql = format!(
            "SELECT id, version, file, sha256, direction, applied_at, `release`, success, schema_after FROM {} ORDER BY id",
            self.table()
        );
        let db = self.ctx.db.clone();
        let bad = |message: String| DbError::History { db: db.clone(), message };
        let rows: Vec<mysql::Row> = self.conn()?.query(sql).map_err(|e| bad(one_line(&my_msg(&e), 300)))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, version, file, sha256, direction, applied_at, release, success, after): (
                i64,
                String,
                String,
                String,
                String,
                String,
                String,
                bool,
                String,
            ) = mysql::from_row_opt(r).map_err(|e| bad(e.to_string()))?;
            out.push(HistoryRow {
                id,
                version: version.parse().map_err(|e| bad(format!("row {id}: {e}")))?,
                file,
                sha256,
                direction: Direction::parse(&direction)
                    .ok_or_else(|| bad(format!("row {id}: unknown direction `{direction}`")))?,
                applied_at,
                release,
                success,
                schema_after: after.parse().map_err(|e| bad(format!("row {id}: {e}")))?,
            });
        }
        Ok(out)
    }

    /// Base tables of the database, not ours, sorted.
    fn data_tables(&mut self) -> Result<Vec<String>, DbError> {
        let ctx = self.ctx.clone();
        let dbname = ctx.url.dbname.clone();
        let c = self.conn()?;
        data_tables(c, &dbname).map_err(|e| ctx.my("listing tables", &e))
    }

    /// Refuses to go on when a step started and never finished.
    fn refuse_unfinished(&mut self) -> Result<(), DbError> {
        if !self.history_exists()? {
            return Ok(());
        }
        let history = self.read_history()?;
        if let Some(r) = unfinished_steps(&history).first() {
            return Err(DbError::Unfinished {
                db: self.ctx.db.clone(),
                file: r.file.clone(),
                applied_at: r.applied_at.clone(),
            });
        }
        Ok(())
    }

    /// Records the step as started; returns the row's id.
    fn start(&mut self, step: &PlannedStep, release: &str) -> Result<u64, DbError> {
        let ctx = self.ctx.clone();
        let create = self.create_history_sql();
        let table = self.table();
        let c = self.conn()?;
        let mut run = || -> Result<u64, mysql::Error> {
            c.query_drop(&create)?;
            let now: Option<String> =
                c.query_first(format!("SELECT schema_after FROM {table} WHERE success ORDER BY id DESC LIMIT 1"))?;
            let now = now.and_then(|s| s.parse().ok()).unwrap_or(SchemaVersion::CLEAN);
            c.exec_drop(
                format!(
                    "INSERT INTO {table} (version, file, sha256, direction, applied_at, `release`, success, schema_after)
                     VALUES (?, ?, ?, ?, ?, ?, FALSE, ?)"
                ),
                (
                    step.version.to_string(),
                    &step.file.file,
                    &step.file.sha256,
                    step.direction.as_str(),
                    utc_now_rfc3339(),
                    release,
                    now.to_string(),
                ),
            )?;
            Ok(c.last_insert_id())
        };
        run().map_err(|e| ctx.my(&format!("recording {} as started in {HISTORY_TABLE}", step.file.file), &e))
    }

    fn finish(&mut self, id: u64, step: &PlannedStep) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let table = self.table();
        let c = self.conn()?;
        c.exec_drop(
            format!("UPDATE {table} SET success = TRUE, schema_after = ?, applied_at = ? WHERE id = ?"),
            (step.schema_after.to_string(), utc_now_rfc3339(), id),
        )
        .map_err(|e| ctx.my(&format!("recording {} as finished in {HISTORY_TABLE}", step.file.file), &e))
    }

    fn apply_sql(&mut self, step: &PlannedStep, release: &str, bytes: &[u8]) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let bad = |message: String| DbError::Steps { db: ctx.db.clone(), message };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("{} is not UTF-8: {e}", step.file.file)))?;
        let statements =
            server::split_sql(text, Dialect::Mysql).map_err(|m| bad(format!("{}: {m}", step.file.file)))?;
        let id = self.start(step, release)?;
        let c = self.conn()?;
        for s in &statements {
            if let Err(e) = c.query_drop(s) {
                return Err(DbError::StepPartial {
                    db: ctx.db.clone(),
                    file: step.file.file.clone(),
                    statement: one_line(&ctx.url.scrub(server::strip_comments(s)), 200),
                    message: one_line(&ctx.url.scrub(&my_msg(&e)), 300),
                });
            }
        }
        // Back to the database the URL names, whatever the step `USE`d.
        c.query_drop(format!("USE {}", ident(&ctx.url.dbname)))
            .map_err(|e| ctx.my("selecting the database again", &e))?;
        self.finish(id, step)
    }

    fn apply_python(&mut self, step: &PlannedStep, release: &str, python: Option<&Path>) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let id = self.start(step, release)?;
        server::run_python(&ctx.db, ENGINE, &ctx.url, &self.root, step, python)?;
        self.finish(id, step)
    }

    /// `--defaults-extra-file` (must come first) and the connection options of a client program; the
    /// password only ever goes into the 0600 option file, never onto a command line.
    fn program(&self, prog: &Path) -> Result<(Command, tempfile::NamedTempFile), DbError> {
        let ctx = &self.ctx;
        let mut opt = tempfile::NamedTempFile::new().map_err(|e| ctx.io(Path::new("a temporary option file"), e))?;
        let mut text = String::from("[client]\n");
        if let Some(pw) = &ctx.url.password {
            text.push_str(&format!("password=\"{}\"\n", pw.replace('\\', "\\\\").replace('"', "\\\"")));
        }
        opt.write_all(text.as_bytes()).map_err(|e| ctx.io(opt.path(), e))?;
        opt.flush().map_err(|e| ctx.io(opt.path(), e))?;
        let mut cmd = Command::new(prog);
        cmd.arg(format!("--defaults-extra-file={}", opt.path().display()))
            .arg("--protocol=TCP")
            .arg(format!("--host={}", ctx.url.host))
            .arg(format!("--port={}", ctx.url.port.unwrap_or(3306)))
            .env_remove("MYSQL_PWD")
            .stdin(Stdio::null());
        if let Some(u) = &ctx.url.user {
            cmd.arg(format!("--user={u}"));
        }
        Ok((cmd, opt))
    }

    fn tool(&self, names: &[&str]) -> Result<PathBuf, DbError> {
        server::find_program("BUNDLE_MYSQL_BINDIR", names).ok_or_else(|| {
            self.ctx.tools(format!(
                "{} is not installed (needed to back up and restore MariaDB/MySQL); install the client programs of the server's flavour (mariadb-client or mysql-client) or set BUNDLE_MYSQL_BINDIR",
                names.join(" or ")
            ))
        })
    }

    fn dump_tool(&self) -> Result<PathBuf, DbError> {
        self.tool(&["mysqldump", "mariadb-dump"])
    }

    fn client_tool(&self) -> Result<PathBuf, DbError> {
        self.tool(&["mysql", "mariadb"])
    }

    /// Drops every table, view, routine and event of the database (keeps the database itself).
    fn empty(&mut self) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let dbname = ctx.url.dbname.clone();
        let c = self.conn()?;
        let run = |c: &mut Conn| -> Result<(), mysql::Error> {
            let objects: Vec<(String, String)> = c.exec(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
                (&dbname,),
            )?;
            let routines: Vec<(String, String)> = c.exec(
                "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
                (&dbname,),
            )?;
            let events: Vec<String> =
                c.exec("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?", (&dbname,))?;
            c.query_drop("SET FOREIGN_KEY_CHECKS = 0")?;
            let q = |n: &str| format!("{}.{}", ident(&dbname), ident(n));
            let views: Vec<String> = objects.iter().filter(|(_, t)| t == "VIEW").map(|(n, _)| q(n)).collect();
            if !views.is_empty() {
                c.query_drop(format!("DROP VIEW IF EXISTS {}", views.join(", ")))?;
            }
            let tables: Vec<String> = objects.iter().filter(|(_, t)| t != "VIEW").map(|(n, _)| q(n)).collect();
            if !tables.is_empty() {
                c.query_drop(format!("DROP TABLE IF EXISTS {}", tables.join(", ")))?;
            }
            for (n, kind) in routines {
                c.query_drop(format!("DROP {kind} IF EXISTS {}", q(&n)))?;
            }
            for n in events {
                c.query_drop(format!("DROP EVENT IF EXISTS {}", q(&n)))?;
            }
            c.query_drop("SET FOREIGN_KEY_CHECKS = 1")
        };
        run(c).map_err(|e| ctx.my("emptying the database before the restore", &e))
    }

    /// Loads a dump file into database `dbname` with the `mysql` client.
    fn load(&self, dbname: &str, file: &Path) -> Result<(), DbError> {
        let ctx = &self.ctx;
        let client = self.client_tool()?;
        let input = fs::File::open(file).map_err(|e| ctx.io(file, e))?;
        let (mut cmd, _opt) = self.program(&client)?;
        let out = cmd
            .arg("--binary-mode")
            .arg("--comments")
            .arg(format!("--database={dbname}"))
            .stdin(Stdio::from(input))
            .output()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", client.display())))?;
        if !out.status.success() {
            return Err(ctx.engine(
                &format!("loading {}", file.display()),
                format!("{} failed ({}): {}", client.display(), describe_status(out.status), stderr_tail(&out.stderr)),
            ));
        }
        Ok(())
    }

    fn create_scratch(&mut self) -> Result<String, DbError> {
        let ctx = self.ctx.clone();
        let name = format!("bundle_scratch_{}", server::random_suffix());
        let c = self.conn()?;
        c.query_drop(format!("CREATE DATABASE {} DEFAULT CHARSET utf8mb4", ident(&name)))
            .map_err(|e| ctx.my("creating a scratch database (the user needs CREATE)", &e))?;
        Ok(name)
    }

    fn drop_database(&mut self, name: &str) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let c = self.conn()?;
        c.query_drop(format!("DROP DATABASE IF EXISTS {}", ident(name)))
            .map_err(|e| ctx.my("dropping a scratch database", &e))
    }

    fn schema_text(&mut self) -> Result<String, DbError> {
        let ctx = self.ctx.clone();
        let dbname = ctx.url.dbname.clone();
        let c = self.conn()?;
        let run = |c: &mut Conn| -> Result<String, mysql::Error> {
            let mut out = String::new();
            let objects: Vec<(String, String)> = c.exec(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
                (&dbname,),
            )?;
            for (name, kind) in &objects {
                let q = format!("{}.{}", ident(&dbname), ident(name));
                let row: Option<mysql::Row> = if kind == "VIEW" {
                    c.query_first(format!("SHOW CREATE VIEW {q}"))?
                } else {
                    c.query_first(format!("SHOW CREATE TABLE {q}"))?
                };
                if let Some(r) = row {
                    let create: String = r.get_opt(1).and_then(Result::ok).unwrap_or_default();
                    out.push_str(&create);
                    out.push_str(";\n");
                }
            }
            let triggers: Vec<(String, String, String, String, String)> = c.exec(
                "SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_STATEMENT
                 FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY TRIGGER_NAME",
                (&dbname,),
            )?;
            for (n, timing, event, table, body) in triggers {
                out.push_str(&format!("TRIGGER {n} {timing} {event} ON {table}: {body};\n"));
            }
            let routines: Vec<(String, String, String)> = c.exec(
                "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES
                 WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
                (&dbname,),
            )?;
            for (n, kind, body) in routines {
                out.push_str(&format!("{kind} {n}: {body};\n"));
            }
            for (name, kind) in objects {
                if kind == "VIEW" {
                    continue;
                }
                let q = format!("{}.{}", ident(&dbname), ident(&name));
                let ncols: Option<u64> = c.exec_first(
                    "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&dbname, &name),
                )?;
                let order = (1..=ncols.unwrap_or(1)).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                let rows: Vec<mysql::Row> = c.query(format!("SELECT * FROM {q} ORDER BY {order}"))?;
                for r in rows {
                    let values: Vec<String> = r.unwrap().iter().map(|v: &Value| v.as_sql(false)).collect();
                    out.push_str(&format!("INSERT INTO {} VALUES({});\n", ident(&name), values.join(",")));
                }
            }
            Ok(out)
        };
        run(c).map_err(|e| ctx.my("dumping", &e))
    }
}

impl Drop for MyEngine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn data_tables(c: &mut Conn, dbname: &str) -> Result<Vec<String>, mysql::Error> {
    c.exec(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'
         AND TABLE_NAME <> ? ORDER BY TABLE_NAME",
        (dbname, HISTORY_TABLE),
    )
}

/// (name, is part of the primary key) of each column, in order.
fn columns(c: &mut Conn, dbname: &str, table: &str) -> Result<Vec<(String, bool)>, mysql::Error> {
    c.exec(
        "SELECT COLUMN_NAME, COLUMN_KEY = 'PRI' FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (dbname, table),
    )
}

fn count(c: &mut Conn, dbname: &str, table: &str) -> Result<u64, mysql::Error> {
    let n: Option<u64> = c.query_first(format!("SELECT COUNT(*) FROM {}.{}", ident(dbname), ident(table)))?;
    Ok(n.unwrap_or(0))
}

fn row_hashes(
    c: &mut Conn,
    dbname: &str,
    table: &str,
    key: &[String],
    rest: &[String],
) -> Result<HashMap<String, (String, u64)>, mysql::Error> {
    let cols = |v: &[String]| {
        if v.is_empty() {
            "NULL".to_string()
        } else {
            v.iter().map(|c| format!("t.{}", ident(c))).collect::<Vec<_>>().join(", ")
        }
    };
    let sql = format!(
        "SELECT MD5(JSON_ARRAY({})), MD5(JSON_ARRAY({})) FROM {}.{} t",
        cols(key),
        cols(rest),
        ident(dbname),
        ident(table)
    );
    let mut out: HashMap<String, (String, u64)> = HashMap::new();
    let rows: Vec<(String, String)> = c.query(sql)?;
    for (k, v) in rows {
        out.entry(k).and_modify(|e| e.1 += 1).or_insert((v, 1));
    }
    Ok(out)
}

fn diff_databases(c: &mut Conn, live: &str, old: &str) -> Result<Vec<TableDiff>, mysql::Error> {
    let live_tables = data_tables(c, live)?;
    let old_tables = data_tables(c, old)?;
    let mut names: Vec<&String> = live_tables.iter().chain(old_tables.iter()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let d = match (live_tables.contains(name), old_tables.contains(name)) {
            (true, false) => TableDiff { table: name.clone(), added: count(c, live, name)?, changed: 0, removed: 0 },
            (false, true) => TableDiff { table: name.clone(), added: 0, changed: 0, removed: count(c, old, name)? },
            _ => {
                let lc = columns(c, live, name)?;
                let oc: Vec<String> = columns(c, old, name)?.into_iter().map(|(n, _)| n).collect();
                let pk: Vec<String> = lc.iter().filter(|(_, k)| *k).map(|(n, _)| n.clone()).collect();
                let common: Vec<String> = lc.iter().map(|(n, _)| n.clone()).filter(|n| oc.contains(n)).collect();
                let keyed = !pk.is_empty() && pk.iter().all(|k| oc.contains(k));
                let (key, rest): (Vec<String>, Vec<String>) = if keyed {
                    (pk.clone(), common.iter().filter(|c| !pk.contains(c)).cloned().collect())
                } else {
                    (common.clone(), Vec::new())
                };
                let a = row_hashes(c, live, name, &key, &rest)?;
                let b = row_hashes(c, old, name, &key, &rest)?;
                let (added, changed, removed) = server::merge_counts(&a, &b, keyed);
                TableDiff { table: name.clone(), added, changed, removed }
            }
        };
        if d.added + d.changed + d.removed > 0 {
            out.push(d);
        }
    }
    Ok(out)
}

/// ("MariaDB" | "MySQL", major) from `SELECT VERSION()` or a program's `--version` line.
fn flavour(text: &str) -> (&'static str, u32) {
    let maria = text.contains("MariaDB");
    // "mysqldump  Ver 10.19 Distrib 10.11.19-MariaDB, …": the server version follows "Distrib".
    let version = text.split_once("Distrib ").map_or(text, |(_, r)| r);
    let major = version
        .split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|w| w.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    (if maria { "MariaDB" } else { "MySQL" }, major)
}

struct MyRunLock {
    conn: Conn,
    name: String,
}

impl RunLockHolder for MyRunLock {
    fn release(&mut self) -> Result<(), String> {
        self.conn.exec_drop("SELECT RELEASE_LOCK(?)", (&self.name,)).map_err(|e| my_msg(&e))
    }
}

impl Engine for MyEngine {
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
        let tables = self.data_tables()?;
        Ok(if tables.is_empty() { DbState::Clean } else { DbState::Unversioned { tables } })
    }

    fn preflight(&mut self) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let server_version: Option<String> =
            self.conn()?.query_first("SELECT VERSION()").map_err(|e| ctx.my("reading the server version", &e))?;
        let server_version = server_version.unwrap_or_default();
        let (sflav, smajor) = flavour(&server_version);
        self.refuse_unfinished()?;
        for prog in [self.dump_tool()?, self.client_tool()?] {
            let line = server::program_version(&prog).map_err(|m| ctx.tools(m))?;
            let (cflav, cmajor) = flavour(&line);
            if cflav != sflav {
                return Err(ctx.tools(format!(
                    "{} is the {cflav} client (`{line}`) but the server is {sflav} {server_version}: dumps across flavours break (column statistics, GTIDs, sandbox mode); install the {sflav} client programs or set BUNDLE_MYSQL_BINDIR"
                , prog.display())));
            }
            if cmajor < smajor {
                return Err(ctx.tools(format!(
                    "{} is {cflav} {cmajor}.x (`{line}`), older than the server ({server_version}); install the client programs of the server's version or set BUNDLE_MYSQL_BINDIR",
                    prog.display()
                )));
            }
        }
        // Prove the dump works here: privileges for views, triggers, routines and events.
        let dump = self.dump_tool()?;
        let (mut cmd, _opt) = self.program(&dump)?;
        let out = cmd
            .args(["--no-data", "--single-transaction", "--routines", "--triggers", "--events", "--no-tablespaces"])
            .arg("--result-file=/dev/null")
            .arg(&ctx.url.dbname)
            .output()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", dump.display())))?;
        if !out.status.success() {
            return Err(ctx.tools(format!(
                "a trial `mysqldump --no-data` failed ({}): {}",
                describe_status(out.status),
                stderr_tail(&out.stderr)
            )));
        }
        Ok(())
    }

    fn lock_for_run(&mut self, wait: Duration) -> Result<RunLock, DbError> {
        let ctx = self.ctx.clone();
        let mut conn = connect(&ctx)?;
        // Lock names are server-wide (at most 64 characters): one per database.
        let mut name = format!("bundle_install:{}", ctx.url.dbname);
        if name.len() > 64 {
            name = format!("bundle_install:{}", &sha256_hex(ctx.url.dbname.as_bytes())[..48]);
        }
        let started = Instant::now();
        loop {
            let left = wait.saturating_sub(started.elapsed());
            let step = left.as_secs().clamp(0, 5);
            let got: Option<Option<i64>> = conn
                .exec_first("SELECT GET_LOCK(?, ?)", (&name, step))
                .map_err(|e| ctx.my("taking the run lock", &e))?;
            if got.flatten() == Some(1) {
                return Ok(RunLock::held(&ctx.db, Box::new(MyRunLock { conn, name })));
            }
            if started.elapsed() >= wait {
                let holder: Option<String> = conn
                    .exec_first(
                        "SELECT CONCAT(USER, '@', HOST, ' (connection ', ID, ')') FROM information_schema.PROCESSLIST
                         WHERE ID = IS_USED_LOCK(?)",
                        (&name,),
                    )
                    .ok()
                    .flatten();
                return Err(DbError::Locked {
                    db: ctx.db.clone(),
                    location: ctx.url.masked.clone(),
                    holder: holder.unwrap_or_else(|| "another session".into()),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            if step == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn backup(&mut self, dir: &Path) -> Result<BackupRecord, DbError> {
        let ctx = self.ctx.clone();
        let taken_at = utc_now_rfc3339();
        let version = self.inspect()?.version().unwrap_or(SchemaVersion::CLEAN);
        let dump = self.dump_tool()?;
        fs::create_dir_all(dir).map_err(|e| ctx.io(dir, e))?;
        let name = format!("{}.sql", ctx.db);
        let target = dir.join(&name);
        let tmp = dir.join(format!(".{name}.partial"));
        remove_if_exists(&tmp).map_err(|e| ctx.io(&tmp, e))?;
        // --single-transaction: a consistent InnoDB snapshot without locking writers.
        let (mut cmd, _opt) = self.program(&dump)?;
        let out = cmd
            .args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--no-tablespaces",
                "--skip-dump-date",
            ])
            .arg(format!("--result-file={}", tmp.display()))
            .arg(&ctx.url.dbname)
            .output()
            .map_err(|e| ctx.tools(format!("cannot run {}: {e}", dump.display())))?;
        if !out.status.success() {
            let _ = remove_if_exists(&tmp);
            return Err(ctx.engine(
                &format!("backing up to {}", target.display()),
                format!("mysqldump failed ({}): {}", describe_status(out.status), stderr_tail(&out.stderr)),
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
        let path = match &backup.file {
            None => None,
            Some(file) => {
                let path = dir.join(file);
                super::verify_backup_file(&ctx.db, backup, &path)?;
                // The client must exist before anything is dropped.
                self.client_tool()?;
                Some(path)
            }
        };
        self.empty()?;
        match path {
            None => Ok(()),
            Some(p) => self.load(&ctx.url.dbname, &p),
        }
    }

    fn apply(&mut self, step: &PlannedStep, release: &str, python: Option<&Path>) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        let bytes = super::read_step_file(&ctx.db, step)?;
        self.refuse_unfinished()?;
        // On failure the started row stays `success = false`: that is the unfinished marker.
        match step.file.kind {
            StepKind::Sql => self.apply_sql(step, release, &bytes),
            StepKind::Python => self.apply_python(step, release, python),
        }
    }

    fn baseline(&mut self, version: SchemaVersion, release: &str) -> Result<(), DbError> {
        let ctx = self.ctx.clone();
        if self.history_exists()? {
            let history = self.read_history()?;
            if history.iter().any(|r| r.success) {
                return Err(DbError::AlreadyVersioned { db: ctx.db, version: current_version(&history) });
            }
        }
        let dbname = ctx.url.dbname.clone();
        let create = self.create_history_sql();
        let table = self.table();
        let c = self.conn()?;
        let mut run = || -> Result<(), mysql::Error> {
            let cols: Vec<String> = c.exec(
                "SELECT CONCAT_WS(' ', TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE) FROM information_schema.COLUMNS
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (&dbname, HISTORY_TABLE),
            )?;
            let fingerprint = sha256_hex(cols.join("\n").as_bytes());
            c.query_drop(&create)?;
            c.exec_drop(
                format!(
                    "INSERT INTO {table} (version, file, sha256, direction, applied_at, `release`, success, schema_after)
                     VALUES (?, ?, ?, 'baseline', ?, ?, TRUE, ?)"
                ),
                (version.to_string(), BASELINE_FILE, fingerprint, utc_now_rfc3339(), release, version.to_string()),
            )
        };
        run().map_err(|e| ctx.my("recording the baseline", &e))
    }

    fn diff_since(&mut self, backup: &BackupRecord, dir: &Path) -> Result<Vec<TableDiff>, DbError> {
        let ctx = self.ctx.clone();
        super::check_backup_record(&ctx.db, ENGINE, backup)?;
        let dbname = ctx.url.dbname.clone();
        let Some(file) = &backup.file else {
            let tables = self.data_tables()?;
            let c = self.conn()?;
            let mut out = Vec::new();
            for t in tables {
                let n = count(c, &dbname, &t).map_err(|e| ctx.my("counting rows", &e))?;
                if n > 0 {
                    out.push(TableDiff { table: t, added: n, changed: 0, removed: 0 });
                }
            }
            return Ok(out);
        };
        let path = dir.join(file);
        super::verify_backup_file(&ctx.db, backup, &path)?;
        // Restored into a scratch database on the same server, then compared across databases.
        let scratch = self.create_scratch()?;
        let result = (|| {
            self.load(&scratch, &path)?;
            let c = self.conn()?;
            diff_databases(c, &dbname, &scratch).map_err(|e| ctx.my("comparing with the backup", &e))
        })();
        let dropped = self.drop_database(&scratch);
        let diff = result?;
        dropped?;
        Ok(diff)
    }

    fn dump(&mut self) -> Result<String, DbError> {
        self.schema_text()
    }

    fn scratch(&mut self) -> Result<Box<dyn Engine>, DbError> {
        let name = self.create_scratch()?;
        let mut e = MyEngine::new(&self.ctx.db, self.ctx.url.with_dbname(&name), &self.root);
        e.scratch = true;
        Ok(Box::new(e))
    }

    fn close(&mut self) -> Result<(), DbError> {
        if self.scratch {
            self.scratch = false;
            let name = self.ctx.url.dbname.clone();
            self.drop_database(&name)?;
        }
        self.conn = None;
        Ok(())
    }

    fn table_stats(&mut self) -> Result<Vec<super::TableStat>, DbError> {
        let ctx = self.ctx.clone();
        let dbname = ctx.url.dbname.clone();
        let tables = self.data_tables()?;
        let c = self.conn()?;
        let mut out = Vec::new();
        for t in tables {
            let rows = count(c, &dbname, &t).map_err(|e| ctx.my("counting rows", &e))?;
            // InnoDB's figures are estimates refreshed by ANALYZE; good enough for a size report.
            let bytes: Option<u64> = c
                .exec_first(
                    "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&dbname, &t),
                )
                .map_err(|e| ctx.my("reading table sizes", &e))?;
            out.push(super::TableStat { table: t, rows, bytes: bytes.unwrap_or(0) });
        }
        Ok(out)
    }

    fn server_dbname(&self) -> Option<String> {
        Some(self.ctx.url.dbname.clone())
    }

    fn copy_to_scratch(&mut self, name: &str, work: &Path) -> Result<super::ScratchCopy, DbError> {
        let ctx = self.ctx.clone();
        let record = self.backup(work)?;
        let file = work.join(record.file.as_deref().unwrap_or_default());
        let c = self.conn()?;
        c.query_drop(format!("CREATE DATABASE {} DEFAULT CHARSET utf8mb4", ident(name)))
            .map_err(|e| ctx.my("creating the rehearsal's scratch database (the user needs CREATE)", &e))?;
        let loaded = self.load(name, &file);
        let _ = fs::remove_file(&file);
        loaded?;
        let target = ctx.url.with_dbname(name);
        Ok(super::ScratchCopy { url: target.full.clone(), masked: target.masked.clone(), method: "dump".into() })
    }

    fn drop_rehearsal_db(&mut self, name: &str) -> Result<(), DbError> {
        super::check_rehearsal_drop(&self.ctx.db, &self.ctx.url.dbname, name)?;
        self.drop_database(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours() {
        assert_eq!(
            flavour("mysqldump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)"),
            ("MariaDB", 10)
        );
        assert_eq!(flavour("10.11.19-MariaDB-0+deb12u1"), ("MariaDB", 10));
        assert_eq!(flavour("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)"), ("MySQL", 8));
        assert_eq!(flavour("8.4.0"), ("MySQL", 8));
        assert_eq!(flavour("mariadb-dump from 11.4.2-MariaDB, client 10.19"), ("MariaDB", 11));
    }
}
