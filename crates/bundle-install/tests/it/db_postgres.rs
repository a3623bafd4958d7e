//! The PostgreSQL engine against a real server: `BUNDLE_TEST_PG` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`) names a database the tests connect to in order to
//! create their own fresh database each (random name), dropped afterwards even when a test fails.
//! Without the variable every test prints why it is skipped and passes.
//!
//! The chain, in PostgreSQL's dialect: 1.0 init, 1.1 additive (column, index, plpgsql trigger), 2.0
//! breaking (a rename) with a down, 2.1 a column plus a Python data step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bundle_core::version::SchemaVersion;
use bundle_install::db::{self, apply_plan, plan_down, plan_up, DbError, DbState, Direction, Engine, Step};

use crate::common;

const RELEASE: &str = "4.0.0";

const INIT: &str = "-- the first schema; notes cascade from items
CREATE TABLE items (
    id   SERIAL PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE notes (
    id      SERIAL PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    body    TEXT NOT NULL
);
INSERT INTO items (name) VALUES ('first; with a semicolon');
";

const ADD_TAGS: &str = "ALTER TABLE items ADD COLUMN tags TEXT NOT NULL DEFAULT '';
CREATE INDEX items_tags ON items (tags);
CREATE FUNCTION notes_trim() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.body := trim(NEW.body); -- semicolons inside a dollar-quoted body do not split
    RETURN NEW;
END
$fn$;
CREATE TRIGGER notes_trim BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION notes_trim();
";

const RENAME: &str = "ALTER TABLE items RENAME COLUMN name TO title;\n";
const RENAME_DOWN: &str = "ALTER TABLE items RENAME COLUMN title TO name;\n";
const SLUG_SQL: &str = "ALTER TABLE items ADD COLUMN slug TEXT;\n";
const SLUG_PY: &str = r#"import os, subprocess
assert os.environ["BUNDLE_DB_ENGINE"] == "postgres", os.environ["BUNDLE_DB_ENGINE"]
assert "BUNDLE_DB_PATH" not in os.environ
subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", os.environ["BUNDLE_DB_URL"],
                "-c", "UPDATE items SET slug = lower(replace(title, ' ', '-'))"], check=True)
with open("slug-ran-for-" + os.environ["BUNDLE_DB_NAME"], "w") as f:
    f.write(os.environ["BUNDLE_DB_URL"])
"#;

fn v(s: &str) -> SchemaVersion {
    s.parse().unwrap()
}

fn python() -> Option<&'static Path> {
    Some(Path::new("python3"))
}

fn server_url() -> Option<String> {
    match std::env::var("BUNDLE_TEST_PG") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            eprintln!("skipped: BUNDLE_TEST_PG is not set (e.g. postgres://postgres@127.0.0.1:5432/test)");
            None
        }
    }
}

/// `scheme://auth@host:port/` + `db` (+ the query).
fn url_for(server: &str, db: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap();
    let (main, query) = rest.split_once('?').map_or((rest, None), |(m, q)| (m, Some(q)));
    let authority = main.split_once('/').map_or(main, |(a, _)| a);
    format!("{scheme}://{authority}/{db}{}", query.map(|q| format!("?{q}")).unwrap_or_default())
}

fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, tail) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    format!("{scheme}://{user}:{password}@{tail}")
}

fn random() -> String {
    let mut b = [0u8; 5];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh database, dropped on drop (also when the test panics).
struct TestDb {
    server: String,
    name: String,
    url: String,
}

impl TestDb {
    fn new(server: &str) -> TestDb {
        let name = format!("bundle_t_{}", random());
        let mut c = postgres::Client::connect(server, postgres::NoTls).expect("connect to BUNDLE_TEST_PG");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        TestDb { server: server.into(), url: url_for(server, &name), name }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    migrations: PathBuf,
    backups: PathBuf,
    db: TestDb,
}

impl Site {
    fn new(server: &str) -> Site {
        Site::with_url(server, None)
    }

    /// `url`: what site.yaml says (default: the test database's URL).
    fn with_url(server: &str, url: Option<&str>) -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        let db = TestDb::new(server);
        let url = url.map(str::to_string).unwrap_or_else(|| db.url.clone());
        std::fs::write(root.join("site.yaml"), format!("databases:\n  client:\n    url: \"{url}\"\n")).unwrap();
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
        Site { _tmp: tmp, root, migrations, backups, db }
    }

    fn write(&self, name: &str, body: &str) {
        std::fs::write(self.migrations.join(name), body).unwrap();
    }

    fn steps(&self) -> Vec<Step> {
        db::load_steps("client", &self.migrations).unwrap()
    }

    fn open(&self) -> Box<dyn Engine> {
        db::open("client", db::EngineKind::Postgres, &self.root, "").unwrap()
    }

    fn upgrade(&self, engine: &mut dyn Engine, target: &str) -> Result<usize, DbError> {
        let state = engine.inspect()?;
        let plan = plan_up("client", &self.steps(), &state, v(target))?;
        apply_plan(engine, &plan, RELEASE, python())
    }
}

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn columns(c: &mut postgres::Client, table: &str) -> Vec<String> {
    c.query(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn version_of(engine: &mut dyn Engine) -> SchemaVersion {
    engine.inspect().unwrap().version().unwrap()
}

/// Items 2..=n+1 with two notes each.
fn fill_at_1_0(c: &mut postgres::Client, n: i64) {
    c.batch_execute(&format!(
        "INSERT INTO items (name) SELECT 'Item ' || i FROM generate_series(0, {}) i;
         INSERT INTO notes (item_id, body) SELECT id, 'note ' || j FROM items, generate_series(0, 1) j WHERE id > 1;",
        n - 1
    ))
    .unwrap();
}

#[test]
fn pg_clean_install_then_gap_upgrade_keeps_every_row() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    let mut engine = site.open();
    assert_eq!(engine.inspect().unwrap(), DbState::Clean);
    assert_eq!(engine.engine(), db::EngineKind::Postgres);
    assert_eq!(site.upgrade(engine.as_mut(), "1.0").unwrap(), 1);
    let mut c = site.db.client();
    fill_at_1_0(&mut c, 500);
    let before: Vec<(i32, String)> =
        c.query("SELECT id, name FROM items ORDER BY id", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(before.len(), 501);

    // 1.0 → 2.1 in one run: 1.1, 2.0, 2.1 (.sql then .py).
    assert_eq!(site.upgrade(engine.as_mut(), "2.1").unwrap(), 4);
    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!() };
    assert_eq!(version, v("2.1"));
    let rows: Vec<(String, Direction, bool, String)> =
        history.iter().map(|r| (r.file.clone(), r.direction, r.success, r.schema_after.to_string())).collect();
    let up = |f: &str, a: &str| (f.to_string(), Direction::Up, true, a.to_string());
    assert_eq!(
        rows,
        vec![
            up("1.0_init.sql", "1.0"),
            up("1.1_add_tags.sql", "1.1"),
            up("2.0_rename.sql", "2.0"),
            up("2.1_slug.sql", "2.0"),
            up("2.1_slug.py", "2.1"),
        ]
    );
    for row in &history {
        let bytes = std::fs::read(site.migrations.join(&row.file)).unwrap();
        assert_eq!(row.sha256, db::sha256_hex(&bytes));
        assert_eq!(row.release, RELEASE);
        assert_eq!(row.applied_at.len(), 24, "{}", row.applied_at);
    }
    let after: Vec<(i32, String)> =
        c.query("SELECT id, title FROM items ORDER BY id", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(after, before);
    assert_eq!(columns(&mut c, "items"), ["id", "title", "tags", "slug"]);
    assert_eq!(count(&mut c, "SELECT count(*) FROM notes"), 1000);
    assert_eq!(count(&mut c, "SELECT count(*) FROM items WHERE slug = lower(replace(title, ' ', '-'))"), 501);
    // The trigger of 1.1 is live; the data step ran at the site root with the full URL.
    c.batch_execute("INSERT INTO notes (item_id, body) VALUES (1, '  x  ')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM notes WHERE body = 'x'"), 1);
    assert_eq!(std::fs::read_to_string(site.root.join("slug-ran-for-client")).unwrap(), site.db.url);
    let state = engine.inspect().unwrap();
    assert!(plan_up("client", &site.steps(), &state, v("2.1")).unwrap().is_empty());
    assert!(db::unfinished_steps(state.history()).is_empty());
    engine.preflight().unwrap();
}

#[test]
fn pg_failed_step_rolls_back_whole_and_restore_is_identical() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    std::fs::remove_file(site.migrations.join("2.1_slug.py")).unwrap();
    site.write(
        "2.1_slug.sql",
        "ALTER TABLE items ADD COLUMN slug TEXT;\nCREATE TABLE side (x int);\nINSERT INTO items (title) VALUES ('burns a sequence value');\n-- the bug\nUPDATE items\n   SET nosuch = 1;\n",
    );
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    fill_at_1_0(&mut site.db.client(), 200);
    let before = engine.dump().unwrap();
    assert!(before.contains("public.items (201,\"Item 199\")"), "{before}");
    let record = engine.backup(&site.backups).unwrap();
    assert_eq!((record.engine.as_str(), record.version), ("postgres", v("1.0")));
    let file = site.backups.join(record.file.as_ref().unwrap());
    assert_eq!(Some(db::backup_checksum(&file).unwrap().0), record.blake3);

    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    assert_eq!(err.kind(), "step_failed");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    for needle in ["`client`", "2.1_slug.sql", "UPDATE items SET nosuch = 1", "column \"nosuch\"", "rolled back"] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }
    // 1.1 and 2.0 committed; nothing of 2.1 (transactional DDL), its failure recorded.
    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!() };
    assert_eq!(version, v("2.0"));
    let mut c = site.db.client();
    assert_eq!(columns(&mut c, "items"), ["id", "title", "tags"]);
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_class WHERE relname = 'side'"), 0);
    let last = history.last().unwrap();
    assert_eq!((last.file.as_str(), last.success, last.schema_after), ("2.1_slug.sql", false, v("2.0")));

    // The app writes after the backup; the restore puts back exactly the backup.
    c.batch_execute("INSERT INTO items (title) VALUES ('written after the backup')").unwrap();
    assert_ne!(engine.dump().unwrap(), before);
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
    assert_eq!(version_of(engine.as_mut()), v("1.0"));
    assert_eq!(Some(db::backup_checksum(&file).unwrap().0), record.blake3);
    // A damaged backup is refused before anything is dropped.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len() - 1;
    bytes[n] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(engine.restore(&record, &site.backups).unwrap_err().kind(), "backup_corrupt");
    assert_eq!(engine.dump().unwrap(), before);
}

#[test]
fn pg_rollbacks_minor_code_only_major_by_down_script_or_restore() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    let steps = site.steps();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    fill_at_1_0(&mut site.db.client(), 50);
    let at_1_1 = engine.dump().unwrap();
    let record = engine.backup(&site.backups).unwrap();
    site.upgrade(engine.as_mut(), "2.1").unwrap();

    // Minor: code for 2.0 runs on 2.1 as is. Major without a down for 2.1: restore needed.
    let state = engine.inspect().unwrap();
    assert!(plan_down("client", &steps, &state, v("2.0")).unwrap().is_empty());
    let err = plan_down("client", &steps, &state, v("1.1")).unwrap_err();
    assert!(matches!(&err, DbError::NeedsRestore { missing, .. } if missing == &vec![v("2.1")]), "{err}");
    assert!(err.is_policy());

    // Restoring loses what was written since: diff_since shows it (through a scratch database).
    let mut c = site.db.client();
    c.batch_execute(
        "INSERT INTO items (title) VALUES ('new 1'), ('new 2');
         UPDATE items SET tags = 'changed' WHERE id IN (2, 3, 4);
         DELETE FROM notes WHERE item_id = 6; DELETE FROM items WHERE id = 6;",
    )
    .unwrap();
    let diff = engine.diff_since(&record, &site.backups).unwrap();
    let got: Vec<(&str, u64, u64, u64)> =
        diff.iter().map(|d| (d.table.as_str(), d.added, d.changed, d.removed)).collect();
    // `title` was `name` in the backup: rows compare on the columns both sides have (id, tags).
    assert_eq!(got, vec![("items", 2, 3, 1), ("notes", 0, 0, 2)]);
    let scratch_dbs = count(&mut c, "SELECT count(*) FROM pg_database WHERE datname LIKE 'bundle\\_scratch\\_%'");
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), at_1_1);
    assert_eq!(version_of(engine.as_mut()), v("1.1"));
    drop(c);

    // Major with a down script: 2.0 → 1.1 keeps every row.
    site.upgrade(engine.as_mut(), "2.0").unwrap();
    let mut c = site.db.client();
    c.batch_execute("UPDATE items SET tags = 'kept' WHERE id = 3").unwrap();
    let state = engine.inspect().unwrap();
    let plan = plan_down("client", &steps, &state, v("1.1")).unwrap();
    assert_eq!(
        plan.iter().map(|p| (p.file.file.as_str(), p.direction, p.schema_after)).collect::<Vec<_>>(),
        [("2.0_rename.down.sql", Direction::Down, v("1.1"))]
    );
    apply_plan(engine.as_mut(), &plan, "3.0.0", None).unwrap();
    assert_eq!(version_of(engine.as_mut()), v("1.1"));
    assert_eq!(columns(&mut c, "items"), ["id", "name", "tags"]);
    assert_eq!(count(&mut c, "SELECT count(*) FROM items"), 51);
    assert_eq!(count(&mut c, "SELECT count(*) FROM notes"), 100);
    assert_eq!(count(&mut c, "SELECT count(*) FROM items WHERE tags = 'kept' AND name = 'Item 1'"), 1);
    // Up again: the down row is neither drift nor an application.
    assert_eq!(site.upgrade(engine.as_mut(), "2.0").unwrap(), 1);
    // Scratch databases are gone again.
    assert!(count(&mut c, "SELECT count(*) FROM pg_database WHERE datname LIKE 'bundle\\_scratch\\_%'") <= scratch_dbs);
}

#[test]
fn pg_drift_newer_major_and_unversioned_are_refused() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    site.write("1.1_add_tags.sql", &format!("-- edited after release\n{ADD_TAGS}"));
    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    assert!(matches!(&err, DbError::Drift { file, .. } if file == "1.1_add_tags.sql"), "{err}");
    assert!(err.is_policy());
    assert_eq!(version_of(engine.as_mut()), v("1.1"));
    site.write("1.1_add_tags.sql", ADD_TAGS);
    site.upgrade(engine.as_mut(), "2.1").unwrap();
    let state = engine.inspect().unwrap();
    assert_eq!(plan_up("client", &site.steps(), &state, v("1.1")).unwrap_err().kind(), "incompatible");

    // A database built by hand: unversioned, then baselined.
    let other = Site::new(&server);
    other.db.client().batch_execute(INIT).unwrap();
    let mut e2 = other.open();
    assert_eq!(e2.inspect().unwrap(), DbState::Unversioned { tables: vec!["items".into(), "notes".into()] });
    e2.baseline(v("1.0"), RELEASE).unwrap();
    assert_eq!(e2.baseline(v("1.0"), RELEASE).unwrap_err().kind(), "already_versioned");
    assert_eq!(other.upgrade(e2.as_mut(), "2.1").unwrap(), 4);
}

/// Runs in a child process (see `pg_killed_mid_chain_leaves_the_last_committed_step`): migrates
/// until killed.
#[test]
fn pg_child_migrates_until_killed() {
    let (Ok(root), Ok(migrations)) = (std::env::var("PG_CHILD_ROOT"), std::env::var("PG_CHILD_MIGRATIONS")) else {
        return;
    };
    let mut engine = db::open("client", db::EngineKind::Postgres, Path::new(&root), "").unwrap();
    let steps = db::load_steps("client", Path::new(&migrations)).unwrap();
    let state = engine.inspect().unwrap();
    let plan = plan_up("client", &steps, &state, v("2.0")).unwrap();
    let _ = apply_plan(engine.as_mut(), &plan, RELEASE, python());
    panic!("the parent should have killed this process");
}

#[test]
fn pg_killed_mid_chain_leaves_the_last_committed_step() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    // 2.0 changes the schema, then stalls: the node dies (SIGKILL) inside its transaction.
    site.write(
        "2.0_rename.sql",
        "ALTER TABLE items RENAME COLUMN name TO title;\nSELECT pg_sleep(3);\nCREATE TABLE never (x int);\n",
    );
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    fill_at_1_0(&mut site.db.client(), 20);
    let record = engine.backup(&site.backups).unwrap();
    let before = engine.dump().unwrap();
    let mut child = common::rerun_test(module_path!(), "pg_child_migrates_until_killed")
        .args(["--nocapture", "--test-threads=1"])
        .env("PG_CHILD_ROOT", &site.root)
        .env("PG_CHILD_MIGRATIONS", &site.migrations)
        .spawn()
        .unwrap();
    let mut c = site.db.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &mut c,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()",
    ) == 0
    {
        assert!(Instant::now() < deadline, "the child never reached 2.0");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The server notices the dead client once pg_sleep ends and rolls its transaction back.
    while count(
        &mut c,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()",
    ) > 0
    {
        assert!(Instant::now() < deadline + Duration::from_secs(30), "the child's session never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!() };
    assert_eq!(version, v("1.1"), "1.1 committed, 2.0 rolled back whole");
    assert!(db::unfinished_steps(&history).is_empty(), "{history:?}");
    assert!(history.iter().all(|r| r.file != "2.0_rename.sql"));
    assert_eq!(columns(&mut c, "items"), ["id", "name", "tags"]);
    // Recovery puts the backup back (what `recover` does from the journal).
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
}

#[test]
fn pg_concurrent_nodes_migrate_once() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    // Slow enough that both nodes are inside their run at the same time.
    site.write("1.1_add_tags.sql", &format!("{ADD_TAGS}SELECT pg_sleep(0.5);\n"));
    let root = site.root.clone();
    let steps = site.steps();
    let barrier = Arc::new(Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let (root, steps, barrier) = (root.clone(), steps.clone(), barrier.clone());
            std::thread::spawn(move || -> Result<usize, DbError> {
                let mut engine = db::open("client", db::EngineKind::Postgres, &root, "")?;
                barrier.wait();
                let lock = engine.lock_for_run(Duration::from_secs(60))?;
                assert!(lock.is_held());
                let state = engine.inspect()?;
                let plan = plan_up("client", &steps, &state, v("2.1"))?;
                let n = apply_plan(engine.as_mut(), &plan, RELEASE, python())?;
                lock.release()?;
                Ok(n)
            })
        })
        .collect();
    let mut ran: Vec<usize> = nodes.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    ran.sort();
    assert_eq!(ran, [0, 5], "one node migrated, the other found the database at 2.1");
    let mut engine = site.open();
    let DbState::Versioned { version, history } = engine.inspect().unwrap() else { panic!() };
    assert_eq!(version, v("2.1"));
    let mut files: Vec<&str> = history.iter().map(|r| r.file.as_str()).collect();
    assert_eq!(files.len(), 5, "{files:?}");
    files.dedup();
    assert_eq!(files.len(), 5, "{files:?}");

    // A run that cannot get the lock in time is refused and told who holds it.
    let held = engine.lock_for_run(Duration::from_secs(5)).unwrap();
    let mut other = site.open();
    let t = Instant::now();
    let err = other.lock_for_run(Duration::from_millis(300)).unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(err.kind(), "db_locked");
    assert!(err.is_policy());
    assert!(err.to_string().contains("bundle-install@") && err.to_string().contains("run lock"), "{err}");
    drop(held);
    drop(other.lock_for_run(Duration::from_secs(5)).unwrap());
    // The helper the installer uses: SQLite databases are skipped, server ones locked by name.
    let locks = db::lock_run(
        &site.root,
        [("metadata", db::EngineKind::Sqlite, "data/m.db"), ("client", db::EngineKind::Postgres, "")],
    )
    .unwrap();
    assert_eq!(locks.iter().map(|l| (l.db(), l.is_held())).collect::<Vec<_>>(), [("client", true)]);
    assert_eq!(other.lock_for_run(Duration::from_millis(100)).unwrap_err().kind(), "db_locked");
    drop(locks);
    assert!(!site.root.join("data").exists(), "lock_run never opened the SQLite database");
}

#[test]
fn pg_passwords_are_never_printed() {
    let Some(server) = server_url() else { return };
    const PW: &str = "s3cr3t-Pw-42";
    // Trust auth accepts any password: the URL carries one anyway, as a real site's would.
    let probe = TestDb::new(&server);
    let url = with_password(&probe.url, PW);
    let site = Site::with_url(&server, Some(&url));
    let mut engine = site.open();
    assert!(!engine.location().contains(PW) && engine.location().contains(":***@"), "{}", engine.location());

    // The data step gets the real URL, credentials included.
    site.write("1.0_init.sql", INIT);
    std::fs::remove_file(site.migrations.join("2.1_slug.py")).unwrap();
    site.write(
        "1.1_add_tags.py",
        "import os, sys\nu = os.environ['BUNDLE_DB_URL']\nassert ':s3cr3t-Pw-42@' in u, u\nsys.stderr.write('cannot use ' + u + ' (password s3cr3t-Pw-42)\\n')\nsys.exit(2)\n",
    );
    std::fs::remove_file(site.migrations.join("1.1_add_tags.sql")).unwrap();
    let err = site.upgrade(engine.as_mut(), "1.1").unwrap_err();
    assert_eq!(err.kind(), "script_failed");
    let msg = err.to_string();
    assert!(msg.contains("cannot use postgres://") && !msg.contains(PW), "{msg}");

    // SQL errors that quote it, connection errors, lock and tool errors.
    site.write("1.1_add_tags.sql", &format!("SELECT '{PW}'::int;\n"));
    std::fs::remove_file(site.migrations.join("1.1_add_tags.py")).unwrap();
    let err = site.upgrade(engine.as_mut(), "1.1").unwrap_err();
    assert!(!err.to_string().contains(PW) && err.to_string().contains("invalid input syntax"), "{err}");
    let bad = Site::with_url(&server, Some(&with_password(&url_for(&server, "no_such_db_here"), PW)));
    let mut e = bad.open();
    let err = e.inspect().unwrap_err();
    assert_eq!(err.kind(), "open");
    assert!(!err.to_string().contains(PW) && err.to_string().contains("no_such_db_here"), "{err}");
    let held = engine.lock_for_run(Duration::from_secs(5)).unwrap();
    let err = site.open().lock_for_run(Duration::from_millis(10)).unwrap_err();
    assert!(!err.to_string().contains(PW), "{err}");
    drop(held);
    let record = engine.backup(&site.backups).unwrap();
    assert!(!serde_json::to_string(&record).unwrap().contains(PW));
    for entry in std::fs::read_dir(&site.backups).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(PW));
    }

    // Config: the environment wins over site.yaml; a missing connection names both places. The
    // variable is set for a child process only: other tests of this binary run in threads of this
    // one, and a process-wide set_var would race with them.
    let name = format!("envdb_{}", random());
    let var = db::server::url_env_var(&name);
    let out = common::rerun_test(module_path!(), "pg_child_opens_from_the_environment")
        .arg("--nocapture")
        .env("PG_CHILD_ENV_DB", &name)
        .env(&var, &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ENV-CHILD-DONE"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = db::open(&name, db::EngineKind::Postgres, Path::new("/nonexistent-root"), "").err().unwrap();
    assert_eq!(err.kind(), "config");
    assert!(err.to_string().contains(&var) && err.to_string().contains("site.yaml"), "{err}");
    let err = db::open("client", db::EngineKind::Mysql, &site.root, "").err().unwrap();
    assert!(err.to_string().contains("not a mysql URL") && !err.to_string().contains(PW), "{err}");
    drop(probe);
}

/// Runs in a child process whose environment names the database `PG_CHILD_ENV_DB` by its URL
/// variable (see [`pg_passwords_are_never_printed`]): opened with no site.yaml entry at all.
#[test]
fn pg_child_opens_from_the_environment() {
    let Ok(name) = std::env::var("PG_CHILD_ENV_DB") else { return };
    let mut e = db::open(&name, db::EngineKind::Postgres, Path::new("/nonexistent-root"), "").unwrap();
    assert_eq!(e.inspect().unwrap().version(), Some(v("1.0")));
    println!("ENV-CHILD-DONE");
}

/// Runs in a child process with a fake `pg_dump` first on the program path.
#[test]
fn pg_child_preflight_with_old_pg_dump() {
    let Ok(root) = std::env::var("PG_CHILD_PREFLIGHT_ROOT") else { return };
    let mut engine = db::open("client", db::EngineKind::Postgres, Path::new(&root), "").unwrap();
    let err = engine.preflight().unwrap_err();
    println!("PREFLIGHT-ERROR kind={} msg={err}", err.kind());
}

#[test]
fn pg_preflight_names_missing_or_mismatched_programs() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    let mut engine = site.open();
    engine.preflight().unwrap();
    let fake = site.root.join("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let script = fake.join("pg_dump");
    std::fs::write(&script, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::rerun_test(module_path!(), "pg_child_preflight_with_old_pg_dump")
        .arg("--nocapture")
        .env("PG_CHILD_PREFLIGHT_ROOT", &site.root)
        .env("BUNDLE_PG_BINDIR", &fake)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PREFLIGHT-ERROR kind=db_tools")
            && text.contains("version 9")
            && text.contains("nothing was changed"),
        "{text}"
    );
    // Nothing was changed: the database is still clean.
    assert_eq!(engine.inspect().unwrap(), DbState::Clean);
}

/// Measurements for the report (not run by default):
/// `BUNDLE_TEST_PG=… cargo test -p bundle-install --release --test it -- --ignored --nocapture db_postgres::pg_bench`
/// 1. the chain (four .sql files) through the engine vs the same files through `psql -1 -f`, on
///    fresh databases; 2. backup and restore of a ~1 GB database made with generate_series.
#[test]
#[ignore]
fn pg_bench_chain_vs_psql_and_backup_restore_1gb() {
    let Some(server) = server_url() else { return };
    let rounds = 10;
    let (mut engine_time, mut psql_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let site = Site::new(&server);
        std::fs::remove_file(site.migrations.join("2.1_slug.py")).unwrap();
        let t = Instant::now();
        let mut engine = site.open();
        assert_eq!(site.upgrade(engine.as_mut(), "2.1").unwrap(), 4);
        engine.close().unwrap();
        engine_time += t.elapsed();
        let other = TestDb::new(&server);
        let t = Instant::now();
        for f in ["1.0_init.sql", "1.1_add_tags.sql", "2.0_rename.sql", "2.1_slug.sql"] {
            let st = Command::new("psql")
                .args(["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", &other.url, "-f"])
                .arg(site.migrations.join(f))
                .status()
                .unwrap();
            assert!(st.success());
        }
        psql_time += t.elapsed();
    }
    println!(
        "chain of 4 .sql steps on an empty database, mean of {rounds}: engine {:?} (connect, inspect, plan, 4 transactions with history rows), psql -1 per file {:?}",
        engine_time / rounds,
        psql_time / rounds
    );

    let site = Site::new(&server);
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    let mut c = site.db.client();
    let t = Instant::now();
    c.batch_execute(
        "CREATE TABLE readings AS
           SELECT i AS id, now() - i * interval '1 second' AS taken_at, (i % 977)::int AS sensor,
                  random() * 100 AS value,
                  md5(i::text) || md5((i + 1)::text) || md5((i * 3)::text) || md5((i * 7)::text)
                  || md5((i * 11)::text) || md5((i * 13)::text) || md5((i * 17)::text) AS payload
           FROM generate_series(1, 3600000) i;
         ALTER TABLE readings ADD PRIMARY KEY (id);",
    )
    .unwrap();
    let size: i64 = c.query_one("SELECT pg_database_size(current_database())", &[]).unwrap().get(0);
    println!("generated {:.2} GB in {:?}", size as f64 / 1e9, t.elapsed());
    let t = Instant::now();
    let record = engine.backup(&site.backups).unwrap();
    println!("backup (pg_dump -Fc, fsync, sha256): {:?}, dump {:.2} GB", t.elapsed(), record.bytes as f64 / 1e9);
    c.batch_execute("DELETE FROM readings WHERE id % 2 = 0").unwrap();
    let t = Instant::now();
    engine.restore(&record, &site.backups).unwrap();
    println!("restore (sha256 check, one psql transaction: drop schemas, pg_restore -f - | psql): {:?}", t.elapsed());
    let n: i64 = c.query_one("SELECT count(*) FROM readings", &[]).unwrap().get(0);
    assert_eq!(n, 3_600_000);
    let t = Instant::now();
    let st = Command::new("pg_restore")
        .args(["--clean", "--if-exists", "--single-transaction", "-d", &site.db.url])
        .arg(site.backups.join(record.file.as_ref().unwrap()))
        .status()
        .unwrap();
    assert!(st.success());
    println!("reference: pg_restore --clean --if-exists --single-transaction -d: {:?}", t.elapsed());
}

/// The installer's own connection follows libpq's `sslmode` (the same URL goes to pg_dump/psql):
/// checked against the server's own view (`pg_stat_ssl`) of the engine's connection. The test
/// server runs with `ssl = on` and Debian's snake-oil certificate (self-signed, for `localhost`),
/// which serves as the root certificate here; without TLS on the server the test says so and stops.
#[test]
fn pg_tls_follows_libpq_sslmode() {
    let Some(server) = server_url() else { return };
    let db = TestDb::new(&server);
    let mut c = db.client();
    let ssl: String = c.query_one("SHOW ssl", &[]).unwrap().get(0);
    if ssl != "on" {
        eprintln!("skipped: the server behind BUNDLE_TEST_PG has ssl = off");
        return;
    }
    let cert: String = c.query_one("SHOW ssl_cert_file", &[]).unwrap().get(0);
    let cert = Path::new(&cert).canonicalize().unwrap_or_else(|_| PathBuf::from(&cert));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    let with = |params: &str| {
        let sep = if db.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{params}", db.url)
    };
    let host_url = |host: &str, params: &str| with(params).replacen("127.0.0.1", host, 1);
    // Whether the engine's open connection is encrypted, as the server sees it.
    let mut engine_uses_tls = |url: &str| -> Result<bool, DbError> {
        std::fs::write(root.join("site.yaml"), format!("databases:\n  client:\n    url: \"{url}\"\n")).unwrap();
        let mut engine = db::open("client", db::EngineKind::Postgres, &root, "")?;
        engine.inspect()?;
        let row = c
            .query_one(
                "SELECT coalesce(bool_or(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
                &[&db.name],
            )
            .unwrap();
        drop(engine);
        Ok(row.get(0))
    };
    assert!(!engine_uses_tls(&with("sslmode=disable")).unwrap());
    assert!(engine_uses_tls(&db.url).unwrap(), "prefer (the default) encrypts when the server can");
    assert!(engine_uses_tls(&with("sslmode=require")).unwrap());
    let root_param = format!("sslrootcert={}", cert.display());
    if std::fs::read(&cert).is_err() {
        eprintln!("skipped the certificate checks: {} is not readable here", cert.display());
        return;
    }
    // verify-ca: the chain is checked, the name is not (the certificate is for localhost).
    assert!(engine_uses_tls(&with(&format!("sslmode=verify-ca&{root_param}"))).unwrap());
    // verify-full: the name must match too.
    assert!(engine_uses_tls(&host_url("localhost", &format!("sslmode=verify-full&{root_param}"))).unwrap());
    let err = engine_uses_tls(&with(&format!("sslmode=verify-full&{root_param}"))).unwrap_err();
    assert_eq!(err.kind(), "open", "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "the refusal should be about the certificate: {err}"
    );
    // A root that did not sign the server's certificate fails require and verify-ca alike.
    let other = tmp.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(tmp.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output();
    if made.is_ok_and(|o| o.status.success()) {
        for mode in ["require", "verify-ca"] {
            let err = engine_uses_tls(&with(&format!("sslmode={mode}&sslrootcert={}", other.display()))).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("certificate"), "{mode} with a foreign root: {err}");
        }
    } else {
        eprintln!("skipped the foreign-root check: openssl could not make a certificate");
    }
    // verify-full without any root certificate is a configuration error, named.
    let err = engine_uses_tls(&with("sslmode=verify-full")).unwrap_err();
    assert!(err.to_string().contains("sslrootcert"), "{err}");
}

/// A proxy in front of `upstream` whose first `bad` connections answer the SSLRequest with `S` and
/// then send bytes that are not TLS; later connections are passed through unchanged. Returns its
/// port and a count of the connections it took.
fn bad_tls_proxy(upstream: String, bad: usize) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < bad {
                let mut request = [0u8; 8];
                // The SSLRequest: length 8, code 80877103.
                if client.read_exact(&mut request).is_ok() && request == [0, 0, 0, 8, 4, 210, 22, 47] {
                    let _ = client.write_all(b"S");
                    let _ = client.write_all(b"this is not a TLS server hello\n");
                }
                continue; // dropped: closed
            }
            let Ok(server) = TcpStream::connect(&upstream) else { return };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, seen)
}

/// `prefer` (the default) falls back to a connection without TLS when the TLS handshake fails, as
/// libpq does; `require` does not.
#[test]
fn pg_prefer_falls_back_without_tls_when_the_handshake_fails() {
    let Some(server) = server_url() else { return };
    let db = TestDb::new(&server);
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (userinfo, upstream) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
    let at = if userinfo.is_empty() { String::new() } else { format!("{userinfo}@") };
    let tmp = tempfile::tempdir().unwrap();
    let open = |port: u16, params: &str| {
        let url = format!("{scheme}://{at}127.0.0.1:{port}/{path}{params}");
        std::fs::write(tmp.path().join("site.yaml"), format!("databases:\n  client:\n    url: \"{url}\"\n")).unwrap();
        db::open("client", db::EngineKind::Postgres, tmp.path(), "").unwrap()
    };
    let count = |seen: &Arc<std::sync::atomic::AtomicUsize>| seen.load(std::sync::atomic::Ordering::SeqCst);

    let (port, seen) = bad_tls_proxy(upstream.to_string(), 1);
    let mut engine = open(port, "");
    assert_eq!(engine.inspect().unwrap(), DbState::Clean);
    assert_eq!(count(&seen), 2, "one TLS attempt, then one without");
    drop(engine);

    let (port, seen) = bad_tls_proxy(upstream.to_string(), usize::MAX);
    let mut engine = open(port, "?sslmode=require");
    let err = engine.inspect().unwrap_err();
    assert_eq!(err.kind(), "open", "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert_eq!(count(&seen), 1, "require must not try again without TLS");
}

/// Runs in a child process whose `BUNDLE_PG_BINDIR` holds wrappers that log their argv (see
/// [`pg_client_programs_never_get_a_password_on_their_command_line`]).
#[test]
fn pg_child_client_programs_with_password() {
    let Ok(form) = std::env::var("PG_CHILD_ARGV_FORM") else { return };
    let Some(server) = server_url() else { return };
    let probe = TestDb::new(&server);
    let url = match form.as_str() {
        "userinfo" => with_password(&probe.url, ARGV_SECRET),
        "query" => format!("{}{}password={ARGV_SECRET}", probe.url, if probe.url.contains('?') { "&" } else { "?" }),
        other => panic!("unknown form {other}"),
    };
    let site = Site::with_url(&server, Some(&url));
    let mut engine = site.open();
    engine.preflight().unwrap();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let record = engine.backup(&site.backups).unwrap();
    engine.restore(&record, &site.backups).unwrap();
    let mut scratch = engine.scratch().unwrap();
    scratch.restore(&record, &site.backups).unwrap();
    scratch.close().unwrap();
    engine.close().unwrap();
    println!("ARGV-CHILD-DONE");
}

const ARGV_SECRET: &str = "argv-S3cret-77";

/// Issue 13 item 3: a password given in the URL's user info or as `?password=` reaches `pg_dump`,
/// `pg_restore` and `psql` through `PGPASSWORD`, never through their command line (readable by any
/// local user in `/proc/*/cmdline`). Wrapper programs record the argv they were given and whether
/// `PGPASSWORD` was set, then run the real program.
#[test]
fn pg_client_programs_never_get_a_password_on_their_command_line() {
    let Some(_server) = server_url() else { return };
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (bin, log) = (tmp.path().join("bin"), tmp.path().join("argv.log"));
    std::fs::create_dir(&bin).unwrap();
    for prog in ["pg_dump", "pg_restore", "psql"] {
        let real = Command::new("sh").arg("-c").arg(format!("command -v {prog}")).output().unwrap();
        let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
        assert!(!real.is_empty(), "{prog} is not installed");
        let w = bin.join(prog);
        std::fs::write(&w, format!("#!/bin/sh\nprintf '%s pw=%s argv=%s\\n' {prog} \"${{PGPASSWORD:+set}}\" \"$*\" >> '{}'\nexec '{real}' \"$@\"\n", log.display())).unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for form in ["userinfo", "query"] {
        std::fs::write(&log, b"").unwrap();
        let out = common::rerun_test(module_path!(), "pg_child_client_programs_with_password")
            .arg("--nocapture")
            .env("PG_CHILD_ARGV_FORM", form)
            .env("BUNDLE_PG_BINDIR", &bin)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ARGV-CHILD-DONE"),
            "{form}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = std::fs::read_to_string(&log).unwrap();
        for prog in ["pg_dump ", "pg_restore "] {
            assert!(lines.lines().any(|l| l.starts_with(prog)), "{form}: {prog}was not run:\n{lines}");
        }
        for l in lines.lines().filter(|l| !l.contains("--version")) {
            assert!(!l.contains(ARGV_SECRET) && !l.contains("password="), "{form}: a password on a command line: {l}");
            assert!(l.contains(" pw=set "), "{form}: the password did not reach the program by PGPASSWORD: {l}");
        }
    }
}
