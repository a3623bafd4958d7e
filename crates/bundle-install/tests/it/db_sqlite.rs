//! The database layer against real SQLite files in temporary directories: a four-step chain
//! (1.0 init, 1.1 additive, 2.0 breaking with a down, 2.1 with a Python data step), failures,
//! backup/restore, drift, compatibility refusals, baselines, down plans, diffs and concurrent writers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bundle_core::version::SchemaVersion;
use bundle_install::db::{self, apply_plan, plan_down, plan_up, DbError, DbState, Direction, Engine, Step};
use rusqlite::Connection;

const RELEASE: &str = "4.0.0";

fn v(s: &str) -> SchemaVersion {
    s.parse().unwrap()
}

fn python() -> Option<&'static Path> {
    Some(Path::new("python3"))
}

const INIT: &str = "-- the first schema; notes cascade from items
CREATE TABLE items (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE notes (
    id      INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    body    TEXT NOT NULL
);
INSERT INTO items (name) VALUES ('first; with a semicolon');
";

const ADD_TAGS: &str = "ALTER TABLE items ADD COLUMN tags TEXT NOT NULL DEFAULT '';
CREATE INDEX items_tags ON items (tags);
CREATE TRIGGER notes_trim AFTER INSERT ON notes BEGIN
    UPDATE notes SET body = trim(body) WHERE id = new.id;
END;
";

/// Breaking: `name` becomes `title`, by the table-rebuild procedure (DROP TABLE items would cascade
/// into notes if foreign keys were on during the migration).
const RENAME: &str = "PRAGMA foreign_keys = OFF; -- a no-op inside the step's transaction, as authors often write it
CREATE TABLE items_new (
    id    INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    tags  TEXT NOT NULL DEFAULT ''
);
INSERT INTO items_new (id, title, tags) SELECT id, name, tags FROM items;
DROP TABLE items;
ALTER TABLE items_new RENAME TO items;
CREATE INDEX items_tags ON items (tags);
";

const RENAME_DOWN: &str = "CREATE TABLE items_old (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT ''
);
INSERT INTO items_old (id, name, tags) SELECT id, title, tags FROM items;
DROP TABLE items;
ALTER TABLE items_old RENAME TO items;
CREATE INDEX items_tags ON items (tags);
";

const SLUG_SQL: &str = "ALTER TABLE items ADD COLUMN slug TEXT;\n";

const SLUG_PY: &str = r#"import os, sqlite3
assert os.environ["BUNDLE_DB_ENGINE"] == "sqlite"
db = sqlite3.connect(os.environ["BUNDLE_DB_PATH"])
with db:
    db.execute("UPDATE items SET slug = lower(replace(title, ' ', '-'))")
db.close()
# the working directory is the database's directory
with open("slug-ran-for-" + os.environ["BUNDLE_DB_NAME"], "w") as f:
    f.write("ok")
"#;

struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    migrations: PathBuf,
    backups: PathBuf,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        let migrations = tmp.path().join("migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        for (name, body) in [
            ("1.0_init.sql", INIT),
            ("1.1_add_tags.sql", ADD_TAGS),
            ("2.0_rename.sql", RENAME),
            ("2.0_rename.down.sql", RENAME_DOWN),
            ("2.1_slug.sql", SLUG_SQL),
            ("2.1_slug.py", SLUG_PY),
        ] {
            std::fs::write(migrations.join(name), body).unwrap();
        }
        let backups = tmp.path().join("backups/1");
        Site { _tmp: tmp, root, migrations, backups }
    }

    fn write(&self, name: &str, body: &str) {
        std::fs::write(self.migrations.join(name), body).unwrap();
    }

    fn steps(&self) -> Vec<Step> {
        db::load_steps("client", &self.migrations).unwrap()
    }

    fn open(&self) -> Box<dyn Engine> {
        db::open("client", db::EngineKind::Sqlite, &self.root, "data/client.db").unwrap()
    }

    fn db_path(&self) -> PathBuf {
        self.root.join("data/client.db")
    }

    /// A second, independent connection, as the app (or a test) would have.
    fn sql(&self) -> Connection {
        let c = Connection::open(self.db_path()).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// Migrates to `target` (from whatever the database is at).
    fn upgrade(&self, engine: &mut dyn Engine, target: &str) -> Result<usize, DbError> {
        let state = engine.inspect()?;
        let plan = plan_up("client", &self.steps(), &state, v(target))?;
        apply_plan(engine, &plan, RELEASE, python())
    }
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn columns(c: &Connection, table: &str) -> Vec<String> {
    let mut stmt = c.prepare(&format!("PRAGMA table_info({table})")).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(1)).unwrap().map(Result::unwrap).collect()
}

fn version_of(engine: &mut dyn Engine) -> SchemaVersion {
    engine.inspect().unwrap().version().unwrap()
}

/// Items 2..=n+1 with two notes each.
fn fill_at_1_0(c: &Connection, n: i64) {
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..n {
        tx.execute("INSERT INTO items (name) VALUES (?1)", [format!("Item {i}")]).unwrap();
        let id = tx.last_insert_rowid();
        for j in 0..2 {
            tx.execute("INSERT INTO notes (item_id, body) VALUES (?1, ?2)", rusqlite::params![id, format!("note {j}")])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[test]
fn db_clean_install_runs_every_step_and_records_history() {
    let site = Site::new();
    let mut engine = site.open();
    assert_eq!(engine.inspect().unwrap(), DbState::Clean);
    // Inspecting (what `plan` does) creates nothing on a clean site.
    assert!(!site.root.exists(), "inspect created {}", site.root.display());

    let ran = site.upgrade(engine.as_mut(), "2.1").unwrap();
    assert_eq!(ran, 5);

    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!("not versioned") };
    assert_eq!(version, v("2.1"));
    let rows: Vec<(String, String, Direction, bool, String)> = history
        .iter()
        .map(|r| (r.version.to_string(), r.file.clone(), r.direction, r.success, r.schema_after.to_string()))
        .collect();
    let expect = |ver: &str, file: &str, after: &str| {
        (ver.to_string(), file.to_string(), Direction::Up, true, after.to_string())
    };
    assert_eq!(
        rows,
        vec![
            expect("1.0", "1.0_init.sql", "1.0"),
            expect("1.1", "1.1_add_tags.sql", "1.1"),
            expect("2.0", "2.0_rename.sql", "2.0"),
            expect("2.1", "2.1_slug.sql", "2.0"),
            expect("2.1", "2.1_slug.py", "2.1"),
        ]
    );
    for (row, name) in
        history.iter().zip(["1.0_init.sql", "1.1_add_tags.sql", "2.0_rename.sql", "2.1_slug.sql", "2.1_slug.py"])
    {
        let bytes = std::fs::read(site.migrations.join(name)).unwrap();
        assert_eq!(row.sha256, db::sha256_hex(&bytes));
        assert_eq!(row.release, RELEASE);
        let t = row.applied_at.as_bytes();
        assert!(t.len() == 24 && t[4] == b'-' && t[10] == b'T' && t[23] == b'Z', "{}", row.applied_at);
    }
    assert!(history.windows(2).all(|w| w[0].id < w[1].id));

    let c = site.sql();
    assert_eq!(columns(&c, "items"), ["id", "title", "tags", "slug"]);
    assert_eq!(
        c.query_row("SELECT slug FROM items", [], |r| r.get::<_, String>(0)).unwrap(),
        "first;-with-a-semicolon"
    );
    // The data script ran with its cwd in the database's directory.
    assert!(site.root.join("data/slug-ran-for-client").exists());
    // Nothing left to do.
    let state = engine.inspect().unwrap();
    assert!(plan_up("client", &site.steps(), &state, v("2.1")).unwrap().is_empty());
}

#[test]
fn db_upgrade_from_1_0_keeps_every_row() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    let c = site.sql();
    fill_at_1_0(&c, 500);
    c.execute("INSERT INTO notes (item_id, body) VALUES (1, '  padded  ')", []).unwrap();
    let before: Vec<(i64, String)> = {
        let mut s = c.prepare("SELECT id, name FROM items ORDER BY id").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(before.len(), 501);

    assert_eq!(site.upgrade(engine.as_mut(), "2.1").unwrap(), 4);
    assert_eq!(version_of(engine.as_mut()), v("2.1"));
    let after: Vec<(i64, String)> = {
        let mut s = c.prepare("SELECT id, title FROM items ORDER BY id").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(after, before);
    // DROP TABLE items in 2.0 did not cascade into notes.
    assert_eq!(count(&c, "SELECT count(*) FROM notes"), 1001);
    assert_eq!(count(&c, "SELECT count(*) FROM items WHERE slug = lower(replace(title, ' ', '-'))"), 501);
    assert_eq!(count(&c, "SELECT count(*) FROM items WHERE tags = ''"), 501);
    // The trigger added by 1.1 is live.
    c.execute("INSERT INTO notes (item_id, body) VALUES (1, '  x  ')", []).unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM notes WHERE body = 'x'"), 1);
    // The rebuild left no dangling references.
    let mut fk = c.prepare("PRAGMA foreign_key_check").unwrap();
    assert!(fk.query([]).unwrap().next().unwrap().is_none());
}

#[test]
fn db_failing_last_step_rolls_back_that_step_only() {
    let site = Site::new();
    std::fs::remove_file(site.migrations.join("2.1_slug.py")).unwrap();
    site.write(
        "2.1_slug.sql",
        "ALTER TABLE items ADD COLUMN slug TEXT;\nCREATE TABLE side (x);\n-- the bug\nUPDATE items\n   SET nosuch = 1;\n",
    );
    let mut engine = site.open();
    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    assert_eq!(err.kind(), "step_failed");
    assert!(!err.is_policy());
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    for needle in ["`client`", "2.1_slug.sql", "UPDATE items SET nosuch = 1", "no such column: nosuch"] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }

    // 1.0 .. 2.0 committed, nothing of 2.1.
    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!() };
    assert_eq!(version, v("2.0"));
    let c = site.sql();
    assert_eq!(columns(&c, "items"), ["id", "title", "tags"]);
    assert_eq!(count(&c, "SELECT count(*) FROM sqlite_schema WHERE name = 'side'"), 0);
    assert_eq!(count(&c, "SELECT count(*) FROM items"), 1);
    // The failure is in the history, without changing the version.
    let last = history.last().unwrap();
    assert_eq!((last.file.as_str(), last.success, last.schema_after), ("2.1_slug.sql", false, v("2.0")));
    assert_eq!(history.iter().filter(|r| r.success).count(), 3);
}

#[test]
fn db_failing_data_script_reports_stderr_and_resumes() {
    let site = Site::new();
    site.write(
        "2.1_slug.py",
        "import sys\nprint('noise on stdout')\nsys.stderr.write('line 1\\nboom: bad data in row 7\\n')\nsys.exit(3)\n",
    );
    let mut engine = site.open();
    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    assert_eq!(err.kind(), "script_failed");
    let msg = err.to_string();
    assert!(
        msg.contains("2.1_slug.py") && msg.contains("exit code 3") && msg.contains("boom: bad data in row 7"),
        "{msg}"
    );
    // The .sql half committed but does not claim 2.1.
    assert_eq!(version_of(engine.as_mut()), v("2.0"));
    assert!(columns(&site.sql(), "items").contains(&"slug".to_string()));

    // Fixed script (a new bundle): only the .py runs.
    site.write("2.1_slug.py", SLUG_PY);
    let state = engine.inspect().unwrap();
    let plan = plan_up("client", &site.steps(), &state, v("2.1")).unwrap();
    assert_eq!(plan.iter().map(|p| p.file.file.as_str()).collect::<Vec<_>>(), ["2.1_slug.py"]);
    apply_plan(engine.as_mut(), &plan, RELEASE, python()).unwrap();
    assert_eq!(version_of(engine.as_mut()), v("2.1"));
}

#[test]
fn db_transaction_control_and_fk_violations_are_refused() {
    let site = Site::new();
    site.write("1.1_add_tags.sql", "ALTER TABLE items ADD COLUMN tags TEXT;\nCOMMIT;\nCREATE TABLE late (x);\n");
    let mut engine = site.open();
    let err = site.upgrade(engine.as_mut(), "1.1").unwrap_err();
    assert!(err.to_string().contains("COMMIT is not allowed"), "{err}");
    assert_eq!(version_of(engine.as_mut()), v("1.0"));
    assert!(!columns(&site.sql(), "items").contains(&"tags".to_string()));

    site.write("1.1_add_tags.sql", "INSERT INTO notes (item_id, body) VALUES (999, 'orphan');\n");
    let err = site.upgrade(engine.as_mut(), "1.1").unwrap_err();
    assert!(err.to_string().contains("foreign_key_check") && err.to_string().contains("notes -> items"), "{err}");
    assert_eq!(count(&site.sql(), "SELECT count(*) FROM notes"), 0);
}

fn backup_restore_roundtrip(journal_mode: &str) {
    let site = Site::new();
    site.write("2.1_slug.sql", "ALTER TABLE items ADD COLUMN slug TEXT;\nUPDATE items SET nosuch = 1;\n");
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    {
        let c = site.sql();
        let _: String = c.query_row(&format!("PRAGMA journal_mode = {journal_mode}"), [], |r| r.get(0)).unwrap();
        fill_at_1_0(&c, 200);
        c.execute_batch("PRAGMA user_version = 7").unwrap();
    }
    let before = engine.dump().unwrap();
    assert!(before.contains("INSERT INTO \"items\" VALUES(201,'Item 199');"), "{before}");

    let record = engine.backup(&site.backups).unwrap();
    assert_eq!(record.version, v("1.0"));
    let file = site.backups.join(record.file.as_ref().unwrap());
    let (sum, bytes) = db::backup_checksum(&file).unwrap();
    assert_eq!((Some(sum), bytes), (record.blake3.clone(), record.bytes));
    assert_eq!(record.sha256, None);
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(serde_json::from_str::<db::BackupRecord>(&json).unwrap(), record);

    assert!(site.upgrade(engine.as_mut(), "2.1").is_err());
    assert_eq!(version_of(engine.as_mut()), v("2.0"));
    assert_ne!(engine.dump().unwrap(), before);
    // Another connection (the app) writes too, after the backup.
    site.sql().execute("INSERT INTO items (title) VALUES ('written after the backup')", []).unwrap();

    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
    assert_eq!(version_of(engine.as_mut()), v("1.0"));
    // A fresh connection sees the restored content, and the journal mode the app chose is kept.
    drop(engine);
    let c = site.sql();
    assert_eq!(count(&c, "SELECT count(*) FROM items"), 201);
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, journal_mode);
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    // The backup itself was not touched by the restore.
    assert_eq!(Some(db::backup_checksum(&file).unwrap().0), record.blake3);
}

#[test]
fn db_backup_failing_chain_restore_is_identical_rollback_journal() {
    backup_restore_roundtrip("delete");
}

#[test]
fn db_backup_failing_chain_restore_is_identical_wal() {
    backup_restore_roundtrip("wal");
}

#[test]
fn db_damaged_backup_is_not_restored() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let record = engine.backup(&site.backups).unwrap();
    site.upgrade(engine.as_mut(), "2.0").unwrap();
    let live = engine.dump().unwrap();
    let file = site.backups.join(record.file.as_ref().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let err = engine.restore(&record, &site.backups).unwrap_err();
    assert_eq!(err.kind(), "backup_corrupt");
    assert_eq!(engine.dump().unwrap(), live);
}

#[test]
fn db_clean_install_backup_is_absent_and_restore_deletes() {
    let site = Site::new();
    let mut engine = site.open();
    let record = engine.backup(&site.backups).unwrap();
    assert!(record.is_absent() && record.blake3.is_none() && record.sha256.is_none());
    site.upgrade(engine.as_mut(), "2.1").unwrap();
    site.sql().execute("INSERT INTO items (title) VALUES ('x')", []).unwrap();
    let diff = engine.diff_since(&record, &site.backups).unwrap();
    assert_eq!(diff.iter().map(|d| (d.table.as_str(), d.added)).collect::<Vec<_>>(), [("items", 2)]);
    engine.restore(&record, &site.backups).unwrap();
    assert!(!site.db_path().exists());
    assert_eq!(engine.inspect().unwrap(), DbState::Clean);
}

#[test]
fn db_corrupt_live_file_is_replaced_by_the_backup() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let before = engine.dump().unwrap();
    let record = engine.backup(&site.backups).unwrap();
    engine.close().unwrap();
    std::fs::write(site.db_path(), b"this is not a database, it is long enough to have a header.....................")
        .unwrap();
    let mut engine = site.open();
    assert_eq!(engine.inspect().unwrap_err().kind(), "open");
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
}

#[test]
fn db_drift_is_detected_and_nothing_runs() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let recorded = db::sha256_hex(ADD_TAGS.as_bytes());
    site.write("1.1_add_tags.sql", &format!("-- edited after release\n{ADD_TAGS}"));
    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    match &err {
        DbError::Drift { db, file, recorded: r, shipped } => {
            assert_eq!((db.as_str(), file.as_str()), ("client", "1.1_add_tags.sql"));
            assert_eq!(r, &recorded);
            assert_ne!(shipped, &recorded);
        }
        other => panic!("expected drift, got {other}"),
    }
    assert!(err.is_policy());
    assert_eq!(version_of(engine.as_mut()), v("1.1"));
    // A changed file that was *not* applied yet is not drift.
    site.write("1.1_add_tags.sql", ADD_TAGS);
    site.write("2.0_rename.sql", &format!("{RENAME}\n-- reworded before it ever ran\n"));
    assert_eq!(site.upgrade(engine.as_mut(), "2.0").unwrap(), 1);
}

#[test]
fn db_newer_major_is_refused() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "2.1").unwrap();
    let state = engine.inspect().unwrap();
    let err = plan_up("client", &site.steps(), &state, v("1.1")).unwrap_err();
    assert_eq!(err.kind(), "incompatible");
    assert!(err.is_policy());
    assert!(err.to_string().contains("2.1") && err.to_string().contains("1.1"), "{err}");
    // Same major, older minor: compatible, nothing to do.
    assert!(plan_up("client", &site.steps(), &state, v("2.0")).unwrap().is_empty());
}

#[test]
fn db_unversioned_is_refused_then_baselined() {
    let site = Site::new();
    std::fs::create_dir_all(site.db_path().parent().unwrap()).unwrap();
    {
        // A database built by hand at the 1.1 schema, before this tool existed.
        let c = site.sql();
        c.execute_batch(INIT).unwrap();
        c.execute_batch(ADD_TAGS).unwrap();
        fill_at_1_0(&c, 10);
    }
    let mut engine = site.open();
    let state = engine.inspect().unwrap();
    assert_eq!(state, DbState::Unversioned { tables: vec!["items".into(), "notes".into()] });
    let err = plan_up("client", &site.steps(), &state, v("2.1")).unwrap_err();
    assert_eq!(err.kind(), "unversioned");
    assert!(err.is_policy());
    assert!(err.to_string().contains("--baseline client=VERSION"), "{err}");

    engine.baseline(v("1.1"), RELEASE).unwrap();
    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!() };
    assert_eq!(version, v("1.1"));
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].direction, history[0].file.as_str()), (Direction::Baseline, db::BASELINE_FILE));
    assert_eq!(engine.baseline(v("1.1"), RELEASE).unwrap_err().kind(), "already_versioned");

    assert_eq!(site.upgrade(engine.as_mut(), "2.1").unwrap(), 3);
    assert_eq!(version_of(engine.as_mut()), v("2.1"));
    assert_eq!(count(&site.sql(), "SELECT count(*) FROM items"), 11);
    assert_eq!(count(&site.sql(), "SELECT count(*) FROM notes"), 20);
}

#[test]
fn db_down_plans_code_only_down_scripts_and_restore() {
    let site = Site::new();
    let steps = site.steps();

    // At 2.1: code for 2.0 runs as is; code for 1.1 needs 2.1's down, which is not shipped.
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "2.1").unwrap();
    let state = engine.inspect().unwrap();
    assert!(plan_down("client", &steps, &state, v("2.0")).unwrap().is_empty());
    let err = plan_down("client", &steps, &state, v("1.1")).unwrap_err();
    match &err {
        DbError::NeedsRestore { missing, .. } => assert_eq!(missing, &vec![v("2.1")]),
        other => panic!("{other}"),
    }
    assert!(err.is_policy());

    // At 2.0 with data: 2.0's down brings it to 1.1 and keeps every row.
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    fill_at_1_0(&site.sql(), 50);
    site.upgrade(engine.as_mut(), "2.0").unwrap();
    site.sql().execute("UPDATE items SET tags = 'kept' WHERE id = 3", []).unwrap();
    let state = engine.inspect().unwrap();
    let plan = plan_down("client", &site.steps(), &state, v("1.1")).unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(
        (plan[0].file.file.as_str(), plan[0].direction, plan[0].schema_after),
        ("2.0_rename.down.sql", Direction::Down, v("1.1"))
    );
    apply_plan(engine.as_mut(), &plan, "3.0.0", None).unwrap();
    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!() };
    assert_eq!(version, v("1.1"));
    assert_eq!(history.last().unwrap().direction, Direction::Down);
    let c = site.sql();
    assert_eq!(columns(&c, "items"), ["id", "name", "tags"]);
    assert_eq!(count(&c, "SELECT count(*) FROM items"), 51);
    assert_eq!(count(&c, "SELECT count(*) FROM notes"), 100);
    assert_eq!(count(&c, "SELECT count(*) FROM items WHERE tags = 'kept' AND name = 'Item 1'"), 1);
    // And up again: the down row does not count as drift or as applied.
    assert_eq!(site.upgrade(engine.as_mut(), "2.0").unwrap(), 1);
    assert_eq!(version_of(engine.as_mut()), v("2.0"));
}

#[test]
fn db_diff_since_counts_rows_exactly() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    let c = site.sql();
    fill_at_1_0(&c, 9); // items 1..=10, notes 18
    c.execute_batch(
        "CREATE TABLE log (msg TEXT); INSERT INTO log VALUES ('a'), ('b'), ('c');
         CREATE TABLE gone (x); INSERT INTO gone VALUES (1), (2), (3), (4), (5);",
    )
    .unwrap();
    let record = engine.backup(&site.backups).unwrap();
    assert!(engine.diff_since(&record, &site.backups).unwrap().is_empty());

    c.execute_batch(
        "INSERT INTO items (name) VALUES ('new 1'), ('new 2');
         UPDATE items SET name = name || '!' WHERE id IN (2, 3, 4);
         UPDATE items SET name = name WHERE id = 5;        -- same value: not a change
         DELETE FROM notes WHERE item_id = 6; DELETE FROM items WHERE id = 6;
         UPDATE log SET msg = 'B' WHERE msg = 'b'; DELETE FROM log WHERE msg = 'c';
         DROP TABLE gone;
         CREATE TABLE extra (id INTEGER PRIMARY KEY, v); INSERT INTO extra (v) VALUES (1), (2), (3), (4);",
    )
    .unwrap();
    // A migration after the backup: the history table is not part of the diff.
    site.upgrade(engine.as_mut(), "1.1").unwrap();

    let diff = engine.diff_since(&record, &site.backups).unwrap();
    let got: Vec<(&str, u64, u64, u64)> =
        diff.iter().map(|d| (d.table.as_str(), d.added, d.changed, d.removed)).collect();
    assert_eq!(
        got,
        vec![
            ("extra", 4, 0, 0),
            ("gone", 0, 0, 5),
            // 1.1 added a column with a default: compared on the columns both sides have
            ("items", 2, 3, 1),
            ("log", 0, 1, 1),
            ("notes", 0, 0, 2),
        ]
    );
}

#[test]
fn db_backup_is_consistent_while_another_connection_writes() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    fill_at_1_0(&site.sql(), 100);

    // (a) An open, uncommitted write transaction: the backup holds the committed state only.
    let writer = site.sql();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 0..1000 {
        writer.execute("INSERT INTO items (name) VALUES (?1)", [format!("uncommitted {i}")]).unwrap();
    }
    let record = engine.backup(&site.backups).unwrap();
    writer.execute_batch("COMMIT").unwrap();
    let copy = Connection::open(site.backups.join(record.file.as_ref().unwrap())).unwrap();
    assert_eq!(count(&copy, "SELECT count(*) FROM items"), 101);
    assert_eq!(copy.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    drop(copy);

    // (b) A writer holding the exclusive lock while committing: the backup waits (busy timeout) and
    // then copies the committed result, never a half-written one.
    let path = site.db_path();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let c = Connection::open(path).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        for i in 0..500 {
            c.execute("INSERT INTO items (name) VALUES (?1)", [format!("late {i}")]).unwrap();
        }
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let started = Instant::now();
    let dir2 = site.backups.with_file_name("2");
    let record = engine.backup(&dir2).unwrap();
    let waited = started.elapsed();
    holder.join().unwrap();
    assert!(waited >= Duration::from_millis(300), "backup did not wait for the lock: {waited:?}");
    let copy = Connection::open(dir2.join(record.file.as_ref().unwrap())).unwrap();
    assert_eq!(count(&copy, "SELECT count(*) FROM items"), 1601);
    assert_eq!(integrity(&copy), "ok");
    drop(copy);

    // (c) WAL mode: committed rows still only in the -wal file (no checkpoint yet) plus an open
    // write transaction. A raw copy of the main file would miss the committed changes.
    let wal = site.sql();
    let _: String = wal.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).unwrap();
    wal.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
    wal.execute_batch("BEGIN; DELETE FROM notes; DELETE FROM items WHERE id > 100; COMMIT;").unwrap();
    wal.execute_batch("BEGIN IMMEDIATE; DELETE FROM items;").unwrap();
    let dir3 = site.backups.with_file_name("3");
    let record = engine.backup(&dir3).unwrap();
    wal.execute_batch("ROLLBACK").unwrap();
    let copy = Connection::open(dir3.join(record.file.as_ref().unwrap())).unwrap();
    assert_eq!(count(&copy, "SELECT count(*) FROM items"), 100);
    assert_eq!(count(&copy, "SELECT count(*) FROM notes"), 0);
    assert_eq!(integrity(&copy), "ok");
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

#[test]
fn db_open_rejects_unknown_engines_and_escaping_paths() {
    let root = Path::new("/tmp/nowhere");
    let err = db::EngineKind::of("client", "oracle").err().unwrap();
    assert_eq!(err.kind(), "unknown_engine");
    assert!(err.to_string().contains("oracle") && err.to_string().contains("sqlite"), "{err}");
    for bad in ["/etc/x.db", "../x.db", "data/../../x.db", ""] {
        assert_eq!(db::open("client", db::EngineKind::Sqlite, root, bad).err().unwrap().kind(), "config", "{bad}");
    }
    assert_eq!(db::open("../x", db::EngineKind::Sqlite, root, "x.db").err().unwrap().kind(), "config");
}

/// `cargo test -p bundle-install --release --test it -- --ignored --nocapture db_sqlite::db_bench`
#[test]
#[ignore]
fn db_bench_backup_restore_100mb() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    {
        let c = site.sql();
        let tx = c.unchecked_transaction().unwrap();
        let pad = "x".repeat(1000);
        for i in 0..100_000 {
            tx.execute("INSERT INTO items (name) VALUES (?1)", [format!("{i} {pad}")]).unwrap();
        }
        tx.commit().unwrap();
    }
    let size = std::fs::metadata(site.db_path()).unwrap().len();
    let t = Instant::now();
    let record = engine.backup(&site.backups).unwrap();
    let backup = t.elapsed();
    let t = Instant::now();
    let cp_to = site.backups.join("cp.db");
    let status = std::process::Command::new("cp").arg(site.db_path()).arg(&cp_to).status().unwrap();
    assert!(status.success());
    std::fs::File::open(&cp_to).unwrap().sync_all().unwrap();
    let cp = t.elapsed();
    site.sql().execute("DELETE FROM items WHERE id % 2 = 0", []).unwrap();
    let t = Instant::now();
    engine.restore(&record, &site.backups).unwrap();
    let restore = t.elapsed();
    let t = Instant::now();
    let diff = engine.diff_since(&record, &site.backups).unwrap();
    let diff_time = t.elapsed();
    assert!(diff.is_empty());
    println!(
        "db {:.1} MB: backup {backup:?} (incl. fsync + sha256), cp+fsync {cp:?}, restore {restore:?} (incl. sha256 check), diff {diff_time:?}",
        size as f64 / 1e6
    );
}

/// A process that had the database open before a restore (the app, not stopped) must read the
/// restored rows afterwards, not pages it cached before: the restore copies the backup over the file
/// in place and marks the header changed. It also waits for that process's open read transaction
/// instead of copying underneath it.
#[test]
fn db_restore_in_place_is_seen_by_an_open_connection_and_waits_for_its_lock() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    site.sql().execute("INSERT INTO items (name) VALUES ('kept')", []).unwrap();
    let record = engine.backup(&site.backups).unwrap();
    let before = engine.dump().unwrap();
    site.upgrade(engine.as_mut(), "2.0").unwrap();
    site.sql().execute("INSERT INTO items (title) VALUES ('lost on restore')", []).unwrap();

    // The "app": counts rows (caching the pages), then holds a read transaction for a moment when
    // told to, then counts again when told to.
    let script = r#"
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
print(db.execute("SELECT count(*) FROM items").fetchone()[0], flush=True)
sys.stdin.readline()
db.execute("BEGIN")
db.execute("SELECT count(*) FROM items").fetchone()
print("holding", flush=True)
time.sleep(1.0)
db.execute("COMMIT")
sys.stdin.readline()
print(db.execute("SELECT count(*) FROM items").fetchone()[0], flush=True)
print(db.execute("PRAGMA integrity_check").fetchone()[0], flush=True)
"#;
    use std::io::{BufRead, BufReader, Write};
    let mut app = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(site.db_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_app = app.stdin.take().unwrap();
    let mut from_app = BufReader::new(app.stdout.take().unwrap()).lines();
    assert_eq!(from_app.next().unwrap().unwrap(), "3");
    writeln!(to_app).unwrap();
    assert_eq!(from_app.next().unwrap().unwrap(), "holding");
    let t = Instant::now();
    engine.restore(&record, &site.backups).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(500), "the restore did not wait for the reader: {:?}", t.elapsed());
    writeln!(to_app).unwrap();
    assert_eq!(from_app.next().unwrap().unwrap(), "2", "the open connection saw stale pages");
    assert_eq!(from_app.next().unwrap().unwrap(), "ok");
    assert!(app.wait().unwrap().success());
    assert_eq!(engine.dump().unwrap(), before);
    assert_eq!(version_of(engine.as_mut()), v("1.1"));
}

/// A restore interrupted half-way leaves a damaged file; `recover` restores again, so a restore must
/// succeed over whatever an interrupted one left: a file cut short, or garbage SQLite cannot open.
#[test]
fn db_restore_repairs_what_an_interrupted_restore_left() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    {
        let c = site.sql();
        for i in 0..2000 {
            c.execute("INSERT INTO items (name) VALUES (?1)", [format!("row {i} {}", "x".repeat(200))]).unwrap();
        }
    }
    let record = engine.backup(&site.backups).unwrap();
    let before = engine.dump().unwrap();
    site.upgrade(engine.as_mut(), "2.1").unwrap();
    drop(engine);

    // Cut short: the first half of the backup, as if killed during the copy.
    let backup = std::fs::read(site.backups.join(record.file.as_ref().unwrap())).unwrap();
    std::fs::write(site.db_path(), &backup[..backup.len() / 2]).unwrap();
    let mut engine = site.open();
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
    drop(engine);

    // Not a database at all.
    std::fs::write(site.db_path(), vec![0x5a; 10_000]).unwrap();
    let mut engine = site.open();
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
    let ok: String = site.sql().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

/// Records written before backups were checked with BLAKE3 carry a sha256: still restorable, and a
/// damaged file is still refused.
#[test]
fn db_restore_honours_sha256_records() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let mut record = engine.backup(&site.backups).unwrap();
    let before = engine.dump().unwrap();
    let file = site.backups.join(record.file.as_ref().unwrap());
    record.blake3 = None;
    record.sha256 = Some(db::sha256_file(&file).unwrap().0);
    site.upgrade(engine.as_mut(), "2.0").unwrap();
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
    record.sha256 = Some("0".repeat(64));
    let err = engine.restore(&record, &site.backups).unwrap_err();
    assert_eq!(err.kind(), "backup_corrupt");
    assert!(err.to_string().contains("sha256"), "{err}");
}

/// SQLite keeps a connection's page cache while the header's change counter is the one it last saw.
/// After a restore copies an older file back, the counter would go back too, and a later write could
/// bring it to the very value a connection cached under other content. The restore sets a counter no
/// connection has seen, so this reader must see the second write, not its stale cache of the first.
#[test]
fn db_restore_never_reuses_a_change_counter() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let record = engine.backup(&site.backups).unwrap();
    let writer = site.sql();
    let reader = site.sql();
    let last = |c: &Connection| -> String {
        c.query_row("SELECT name FROM items ORDER BY id DESC LIMIT 1", [], |r| r.get(0)).unwrap()
    };
    writer.execute("INSERT INTO items (name) VALUES ('first write')", []).unwrap();
    assert_eq!(last(&reader), "first write");
    engine.restore(&record, &site.backups).unwrap();
    writer.execute("INSERT INTO items (name) VALUES ('second write')", []).unwrap();
    assert_eq!(last(&reader), "second write");
    assert_eq!(count(&reader, "SELECT count(*) FROM items"), 2);
}

/// A migration killed mid-transaction leaves a hot `-journal`; the restore that `recover` then runs
/// must leave exactly the backup, with no journal beside it.
#[test]
fn db_restore_after_a_writer_was_killed_mid_transaction() {
    let site = Site::new();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let record = engine.backup(&site.backups).unwrap();
    let before = engine.dump().unwrap();
    drop(engine);
    let script = r#"
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
for i in range(5000):
    db.execute("INSERT INTO items (name) VALUES (?)", ("x" * 300,))
db.execute("UPDATE items SET name = 'changed'")
print("mid-transaction", flush=True)
sys.stdin.readline()
"#;
    use std::io::{BufRead, BufReader};
    let mut writer = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(site.db_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "mid-transaction");
    writer.kill().unwrap();
    writer.wait().unwrap();
    let journal = PathBuf::from(format!("{}-journal", site.db_path().display()));
    assert!(journal.exists(), "the killed writer left no journal");
    let mut engine = site.open();
    engine.restore(&record, &site.backups).unwrap();
    assert!(!journal.exists(), "a journal was left beside the restored database");
    assert_eq!(engine.dump().unwrap(), before);
}
