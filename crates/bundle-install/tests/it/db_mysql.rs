//! The MariaDB/MySQL engine against a real server: `BUNDLE_TEST_MYSQL` (e.g.
//! `mysql://root@127.0.0.1:3306/test`) names a database the tests connect to in order to create
//! their own fresh database each (random name), dropped afterwards even when a test fails. Without
//! the variable every test prints why it is skipped and passes.
//!
//! The chain, in MySQL's dialect: 1.0 init, 1.1 additive (column, index, a trigger between
//! `DELIMITER` lines), 2.0 breaking (a rename) with a down, 2.1 a column plus a Python data step.
//! DDL commits implicitly here: a failed or killed step stays recorded as started-and-unfinished
//! (and may be half-applied) until the backup taken before it is restored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bundle_core::version::SchemaVersion;
use bundle_install::db::{self, apply_plan, plan_down, plan_up, DbError, DbState, Direction, Engine, Step};
use mysql::prelude::Queryable;

use crate::common;

const RELEASE: &str = "4.0.0";

const INIT: &str = "-- the first schema; notes cascade from items
CREATE TABLE items (
    id   INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200) NOT NULL
) ENGINE = InnoDB;
CREATE TABLE notes (
    id      INT AUTO_INCREMENT PRIMARY KEY,
    item_id INT NOT NULL,
    body    VARCHAR(200) NOT NULL,
    CONSTRAINT notes_item FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE
) ENGINE = InnoDB;
INSERT INTO items (name) VALUES ('first; with a semicolon');
";

const ADD_TAGS: &str = "ALTER TABLE items ADD COLUMN tags VARCHAR(100) NOT NULL DEFAULT '';
CREATE INDEX items_tags ON items (tags);
DELIMITER //
CREATE TRIGGER notes_trim BEFORE INSERT ON notes FOR EACH ROW
BEGIN
    SET NEW.body = TRIM(NEW.body); # semicolons inside the body do not split
END//
DELIMITER ;
";

const RENAME: &str = "ALTER TABLE items CHANGE COLUMN name title VARCHAR(200) NOT NULL;\n";
const RENAME_DOWN: &str = "ALTER TABLE items CHANGE COLUMN title name VARCHAR(200) NOT NULL;\n";
const SLUG_SQL: &str = "ALTER TABLE items ADD COLUMN slug VARCHAR(200);\n";
const SLUG_PY: &str = r#"import os, subprocess, urllib.parse
assert os.environ["BUNDLE_DB_ENGINE"] == "mysql", os.environ["BUNDLE_DB_ENGINE"]
u = urllib.parse.urlparse(os.environ["BUNDLE_DB_URL"])
env = dict(os.environ)
env["MYSQL_PWD"] = urllib.parse.unquote(u.password or "")
subprocess.run(["mysql", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port or 3306),
                "-u", urllib.parse.unquote(u.username or ""), u.path.lstrip("/"),
                "-e", "UPDATE items SET slug = lower(replace(title, ' ', '-'))"], check=True, env=env)
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
    match std::env::var("BUNDLE_TEST_MYSQL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            eprintln!("skipped: BUNDLE_TEST_MYSQL is not set (e.g. mysql://root@127.0.0.1:3306/test)");
            None
        }
    }
}

fn url_for(server: &str, db: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap();
    let (main, query) = rest.split_once('?').map_or((rest, None), |(m, q)| (m, Some(q)));
    let authority = main.split_once('/').map_or(main, |(a, _)| a);
    format!("{scheme}://{authority}/{db}{}", query.map(|q| format!("?{q}")).unwrap_or_default())
}

fn random() -> String {
    let mut b = [0u8; 5];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn conn(url: &str) -> mysql::Conn {
    let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(url).unwrap()).prefer_socket(false);
    mysql::Conn::new(opts).expect("connect to BUNDLE_TEST_MYSQL")
}

/// A fresh database (and optionally a user), dropped on drop (also when the test panics).
struct TestDb {
    server: String,
    name: String,
    url: String,
    user: Option<String>,
}

impl TestDb {
    fn new(server: &str) -> TestDb {
        let name = format!("bundle_t_{}", random());
        conn(server).query_drop(format!("CREATE DATABASE {name}")).unwrap();
        TestDb { server: server.into(), url: url_for(server, &name), name, user: None }
    }

    /// A user with a password and every right on this database: its URL.
    fn user_with_password(&mut self, password: &str) -> String {
        let user = format!("bt_{}", random());
        let mut c = conn(&self.server);
        c.query_drop(format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")).unwrap();
        c.query_drop(format!("GRANT ALL ON {}.* TO '{user}'@'%'", self.name)).unwrap();
        self.user = Some(user.clone());
        let (scheme, rest) = self.url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{user}:{password}@{host}")
    }

    fn client(&self) -> mysql::Conn {
        conn(&self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(opts) = mysql::Opts::from_url(&self.server) {
            if let Ok(mut c) = mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).prefer_socket(false)) {
                let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
                if let Some(u) = &self.user {
                    let _ = c.query_drop(format!("DROP USER IF EXISTS '{u}'@'%'"));
                }
            }
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
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        let db = TestDb::new(server);
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
        let site = Site { _tmp: tmp, root, migrations, backups, db };
        site.site_url(&site.db.url.clone());
        site
    }

    fn site_url(&self, url: &str) {
        std::fs::write(self.root.join("site.yaml"), format!("databases:\n  client:\n    url: \"{url}\"\n")).unwrap();
    }

    fn write(&self, name: &str, body: &str) {
        std::fs::write(self.migrations.join(name), body).unwrap();
    }

    fn steps(&self) -> Vec<Step> {
        db::load_steps("client", &self.migrations).unwrap()
    }

    fn open(&self) -> Box<dyn Engine> {
        db::open("client", db::EngineKind::Mysql, &self.root, "").unwrap()
    }

    fn upgrade(&self, engine: &mut dyn Engine, target: &str) -> Result<usize, DbError> {
        let state = engine.inspect()?;
        let plan = plan_up("client", &self.steps(), &state, v(target))?;
        apply_plan(engine, &plan, RELEASE, python())
    }
}

fn count(c: &mut mysql::Conn, sql: &str) -> i64 {
    c.query_first::<i64, _>(sql).unwrap().unwrap()
}

fn columns(c: &mut mysql::Conn, table: &str) -> Vec<String> {
    c.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )
    .unwrap()
}

fn version_of(engine: &mut dyn Engine) -> SchemaVersion {
    engine.inspect().unwrap().version().unwrap()
}

/// Items 2..=n+1 with two notes each.
fn fill_at_1_0(c: &mut mysql::Conn, n: i64) {
    let values: Vec<String> = (0..n).map(|i| format!("('Item {i}')")).collect();
    c.query_drop(format!("INSERT INTO items (name) VALUES {}", values.join(", "))).unwrap();
    for j in 0..2 {
        c.query_drop(format!(
            "INSERT INTO notes (item_id, body) SELECT id, 'note {j}' FROM items WHERE id > 1 ORDER BY id"
        ))
        .unwrap();
    }
}

#[test]
fn my_clean_install_then_gap_upgrade_keeps_every_row() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    let mut engine = site.open();
    assert_eq!(engine.inspect().unwrap(), DbState::Clean);
    assert_eq!(engine.engine(), db::EngineKind::Mysql);
    assert_eq!(site.upgrade(engine.as_mut(), "1.0").unwrap(), 1);
    let mut c = site.db.client();
    fill_at_1_0(&mut c, 500);
    let before: Vec<(i32, String)> = c.query("SELECT id, name FROM items ORDER BY id").unwrap();
    assert_eq!(before.len(), 501);

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
    }
    let after: Vec<(i32, String)> = c.query("SELECT id, title FROM items ORDER BY id").unwrap();
    assert_eq!(after, before);
    assert_eq!(columns(&mut c, "items"), ["id", "title", "tags", "slug"]);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM notes"), 1000);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM items WHERE slug = lower(replace(title, ' ', '-'))"), 501);
    c.query_drop("INSERT INTO notes (item_id, body) VALUES (1, '  x  ')").unwrap();
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM notes WHERE body = 'x'"), 1);
    assert_eq!(std::fs::read_to_string(site.root.join("slug-ran-for-client")).unwrap(), site.db.url);
    let state = engine.inspect().unwrap();
    assert!(plan_up("client", &site.steps(), &state, v("2.1")).unwrap().is_empty());
    assert!(db::unfinished_steps(state.history()).is_empty());
    engine.preflight().unwrap();
}

#[test]
fn my_failed_step_stays_unfinished_until_restored() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    std::fs::remove_file(site.migrations.join("2.1_slug.py")).unwrap();
    site.write(
        "2.1_slug.sql",
        "ALTER TABLE items ADD COLUMN slug VARCHAR(200);\nCREATE TABLE side (x INT);\n-- the bug\nUPDATE items\n   SET nosuch = 1;\n",
    );
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    fill_at_1_0(&mut site.db.client(), 200);
    let before = engine.dump().unwrap();
    assert!(before.contains("INSERT INTO `items` VALUES('201','Item 199','');"), "{before}");
    assert!(before.contains("TRIGGER notes_trim BEFORE INSERT ON notes"), "{before}");
    let record = engine.backup(&site.backups).unwrap();
    assert_eq!((record.engine.as_str(), record.version), ("mysql", v("1.1")));
    let file = site.backups.join(record.file.as_ref().unwrap());
    assert_eq!(Some(db::backup_checksum(&file).unwrap().0), record.blake3);

    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    assert_eq!(err.kind(), "step_failed");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    for needle in [
        "`client`",
        "2.1_slug.sql",
        "UPDATE items SET nosuch = 1",
        "Unknown column 'nosuch'",
        "commits DDL",
        "unfinished",
    ] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }
    // Half applied: the column and the table of 2.1 stayed (implicit commits), the step is unfinished.
    let mut c = site.db.client();
    assert_eq!(columns(&mut c, "items"), ["id", "title", "tags", "slug"]);
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'side'"
        ),
        1
    );
    let state = engine.inspect().unwrap();
    assert_eq!(state.version(), Some(v("2.0")));
    let unfinished: Vec<&str> = db::unfinished_steps(state.history()).iter().map(|r| r.file.as_str()).collect();
    assert_eq!(unfinished, ["2.1_slug.sql"]);
    // Nothing migrates on top of it.
    assert_eq!(engine.preflight().unwrap_err().kind(), "unfinished_step");
    site.write("2.1_slug.sql", SLUG_SQL);
    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    assert_eq!(err.kind(), "unfinished_step");
    assert!(err.to_string().contains("2.1_slug.sql") && err.to_string().contains("Restore the backup"), "{err}");

    // The app writes; the restore brings back exactly the backup.
    c.query_drop("INSERT INTO items (title) VALUES ('written after the backup')").unwrap();
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
    let state = engine.inspect().unwrap();
    assert_eq!(state.version(), Some(v("1.1")));
    assert!(db::unfinished_steps(state.history()).is_empty());
    engine.preflight().unwrap();
    // The fixed step runs now.
    assert_eq!(site.upgrade(engine.as_mut(), "2.1").unwrap(), 2);
    // A damaged backup is refused before anything is dropped.
    let now = engine.dump().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len() - 2;
    bytes[n] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(engine.restore(&record, &site.backups).unwrap_err().kind(), "backup_corrupt");
    assert_eq!(engine.dump().unwrap(), now);
}

#[test]
fn my_rollbacks_minor_code_only_major_by_down_script_or_restore() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    let steps = site.steps();
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    fill_at_1_0(&mut site.db.client(), 50);
    let at_1_1 = engine.dump().unwrap();
    let record = engine.backup(&site.backups).unwrap();
    site.upgrade(engine.as_mut(), "2.1").unwrap();

    let state = engine.inspect().unwrap();
    assert!(plan_down("client", &steps, &state, v("2.0")).unwrap().is_empty());
    let err = plan_down("client", &steps, &state, v("1.1")).unwrap_err();
    assert!(matches!(&err, DbError::NeedsRestore { missing, .. } if missing == &vec![v("2.1")]), "{err}");

    let mut c = site.db.client();
    c.query_drop("INSERT INTO items (title) VALUES ('new 1'), ('new 2')").unwrap();
    c.query_drop("UPDATE items SET tags = 'changed' WHERE id IN (2, 3, 4)").unwrap();
    c.query_drop("DELETE FROM items WHERE id = 6").unwrap(); // cascades to its 2 notes
    let diff = engine.diff_since(&record, &site.backups).unwrap();
    let got: Vec<(&str, u64, u64, u64)> =
        diff.iter().map(|d| (d.table.as_str(), d.added, d.changed, d.removed)).collect();
    assert_eq!(got, vec![("items", 2, 3, 1), ("notes", 0, 0, 2)]);
    assert_eq!(
        count(&mut c, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'bundle\\_scratch\\_%'"),
        0
    );
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), at_1_1);
    assert_eq!(version_of(engine.as_mut()), v("1.1"));

    site.upgrade(engine.as_mut(), "2.0").unwrap();
    c.query_drop("UPDATE items SET tags = 'kept' WHERE id = 3").unwrap();
    let state = engine.inspect().unwrap();
    let plan = plan_down("client", &steps, &state, v("1.1")).unwrap();
    assert_eq!(
        plan.iter().map(|p| (p.file.file.as_str(), p.direction, p.schema_after)).collect::<Vec<_>>(),
        [("2.0_rename.down.sql", Direction::Down, v("1.1"))]
    );
    apply_plan(engine.as_mut(), &plan, "3.0.0", None).unwrap();
    assert_eq!(version_of(engine.as_mut()), v("1.1"));
    assert_eq!(columns(&mut c, "items"), ["id", "name", "tags"]);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM items"), 51);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM notes"), 100);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM items WHERE tags = 'kept' AND name = 'Item 1'"), 1);
    assert_eq!(site.upgrade(engine.as_mut(), "2.0").unwrap(), 1);
}

#[test]
fn my_drift_and_unversioned_are_refused() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    site.write("1.1_add_tags.sql", &format!("-- edited after release\n{ADD_TAGS}"));
    let err = site.upgrade(engine.as_mut(), "2.1").unwrap_err();
    assert!(matches!(&err, DbError::Drift { file, .. } if file == "1.1_add_tags.sql"), "{err}");
    assert_eq!(version_of(engine.as_mut()), v("1.1"));

    let other = Site::new(&server);
    other.db.client().query_drop(INIT.replace("-- the first schema; notes cascade from items\n", "")).unwrap();
    let mut e2 = other.open();
    assert_eq!(e2.inspect().unwrap(), DbState::Unversioned { tables: vec!["items".into(), "notes".into()] });
    e2.baseline(v("1.0"), RELEASE).unwrap();
    assert_eq!(e2.baseline(v("1.0"), RELEASE).unwrap_err().kind(), "already_versioned");
    assert_eq!(other.upgrade(e2.as_mut(), "2.1").unwrap(), 4);
}

/// Runs in a child process (see `my_killed_mid_step_is_unfinished_until_restored`).
#[test]
fn my_child_migrates_until_killed() {
    let (Ok(root), Ok(migrations)) = (std::env::var("MY_CHILD_ROOT"), std::env::var("MY_CHILD_MIGRATIONS")) else {
        return;
    };
    let mut engine = db::open("client", db::EngineKind::Mysql, Path::new(&root), "").unwrap();
    let steps = db::load_steps("client", Path::new(&migrations)).unwrap();
    let state = engine.inspect().unwrap();
    let plan = plan_up("client", &steps, &state, v("2.0")).unwrap();
    let _ = apply_plan(engine.as_mut(), &plan, RELEASE, python());
    panic!("the parent should have killed this process");
}

#[test]
fn my_killed_mid_step_is_unfinished_until_restored() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    site.write(
        "2.0_rename.sql",
        "ALTER TABLE items CHANGE COLUMN name title VARCHAR(200) NOT NULL;\nSELECT SLEEP(3);\nCREATE TABLE never (x INT);\n",
    );
    let mut engine = site.open();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    fill_at_1_0(&mut site.db.client(), 20);
    let record = engine.backup(&site.backups).unwrap();
    let before = engine.dump().unwrap();
    let mut child = common::rerun_test(module_path!(), "my_child_migrates_until_killed")
        .args(["--nocapture", "--test-threads=1"])
        .env("MY_CHILD_ROOT", &site.root)
        .env("MY_CHILD_MIGRATIONS", &site.migrations)
        .spawn()
        .unwrap();
    let mut c = site.db.client();
    let sleeping = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(3)%'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&mut c, sleeping) == 0 {
        assert!(Instant::now() < deadline, "the child never reached 2.0");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    while count(&mut c, sleeping) > 0 {
        assert!(Instant::now() < deadline + Duration::from_secs(30), "the child's statement never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The rename committed on its own, the rest never ran: the step is unfinished.
    let state = engine.inspect().unwrap();
    assert_eq!(state.version(), Some(v("1.1")));
    let unfinished: Vec<&str> = db::unfinished_steps(state.history()).iter().map(|r| r.file.as_str()).collect();
    assert_eq!(unfinished, ["2.0_rename.sql"]);
    assert_eq!(columns(&mut c, "items"), ["id", "title", "tags"]);
    let err = engine.preflight().unwrap_err();
    assert_eq!(err.kind(), "unfinished_step");
    // Recovery restores the backup taken before the run.
    engine.restore(&record, &site.backups).unwrap();
    assert_eq!(engine.dump().unwrap(), before);
    assert!(db::unfinished_steps(engine.inspect().unwrap().history()).is_empty());
}

#[test]
fn my_concurrent_nodes_migrate_once() {
    let Some(server) = server_url() else { return };
    let site = Site::new(&server);
    site.write("1.1_add_tags.sql", &format!("{ADD_TAGS}SELECT SLEEP(0.5);\n"));
    let root = site.root.clone();
    let steps = site.steps();
    let barrier = Arc::new(Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let (root, steps, barrier) = (root.clone(), steps.clone(), barrier.clone());
            std::thread::spawn(move || -> Result<usize, DbError> {
                let mut engine = db::open("client", db::EngineKind::Mysql, &root, "")?;
                barrier.wait();
                let lock = engine.lock_for_run(Duration::from_secs(60))?;
                let state = engine.inspect()?;
                let plan = plan_up("client", &steps, &state, v("2.1"))?;
                let n = apply_plan(engine.as_mut(), &plan, RELEASE, python())?;
                drop(lock);
                Ok(n)
            })
        })
        .collect();
    let mut ran: Vec<usize> = nodes.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    ran.sort();
    assert_eq!(ran, [0, 5]);
    let mut engine = site.open();
    let history = engine.inspect().unwrap().history().to_vec();
    assert_eq!(history.len(), 5, "{history:?}");
    let held = engine.lock_for_run(Duration::from_secs(5)).unwrap();
    let err = site.open().lock_for_run(Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), "db_locked");
    assert!(err.to_string().contains("connection"), "{err}");
    drop(held);
    drop(site.open().lock_for_run(Duration::from_secs(5)).unwrap());
}

#[test]
fn my_passwords_are_never_printed() {
    let Some(server) = server_url() else { return };
    const PW: &str = "s3cr3t-Pw-42";
    let mut site = Site::new(&server);
    let url = site.db.user_with_password(PW);
    site.site_url(&url);
    let mut engine = site.open();
    assert!(!engine.location().contains(PW) && engine.location().contains(":***@"), "{}", engine.location());
    // The password really is needed (and used, by the driver and by mysqldump's option file).
    site.upgrade(engine.as_mut(), "1.0").unwrap();
    engine.preflight().unwrap();
    let record = engine.backup(&site.backups).unwrap();
    assert!(!serde_json::to_string(&record).unwrap().contains(PW));
    for entry in std::fs::read_dir(&site.backups).unwrap() {
        assert!(!String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).contains(PW));
    }

    site.write(
        "1.1_add_tags.py",
        "import os, sys\nu = os.environ['BUNDLE_DB_URL']\nassert ':s3cr3t-Pw-42@' in u, u\nsys.stderr.write('cannot use ' + u + '\\n')\nsys.exit(2)\n",
    );
    std::fs::remove_file(site.migrations.join("1.1_add_tags.sql")).unwrap();
    let err = site.upgrade(engine.as_mut(), "1.1").unwrap_err();
    assert_eq!(err.kind(), "script_failed");
    assert!(err.to_string().contains("cannot use mysql://") && !err.to_string().contains(PW), "{err}");
    let err = engine.preflight().unwrap_err();
    assert!(!err.to_string().contains(PW), "{err}");
    engine.restore(&record, &site.backups).unwrap();

    site.write("1.1_add_tags.sql", &format!("SELECT * FROM `{PW}`;\n"));
    std::fs::remove_file(site.migrations.join("1.1_add_tags.py")).unwrap();
    let err = site.upgrade(engine.as_mut(), "1.1").unwrap_err();
    assert!(!err.to_string().contains(PW) && err.to_string().contains("doesn't exist"), "{err}");
    engine.restore(&record, &site.backups).unwrap();

    // A wrong password: the connection error and the dump error do not show either.
    site.site_url(&url.replace(PW, "wrong-Pw-99"));
    let mut bad = site.open();
    let err = bad.inspect().unwrap_err();
    assert_eq!(err.kind(), "open");
    assert!(!err.to_string().contains("wrong-Pw-99") && err.to_string().contains("Access denied"), "{err}");
}

const ARGV_SECRET: &str = "argv-My-S3cret-78";

/// Runs in a child process whose `BUNDLE_MYSQL_BINDIR` holds wrappers that log their argv (see
/// [`my_client_programs_never_get_a_password_on_their_command_line`]).
#[test]
fn my_child_client_programs_with_password() {
    if std::env::var("MY_CHILD_ARGV").is_err() {
        return;
    }
    let Some(server) = server_url() else { return };
    let mut site = Site::new(&server);
    let url = site.db.user_with_password(ARGV_SECRET);
    site.site_url(&url);
    let mut engine = site.open();
    engine.preflight().unwrap();
    site.upgrade(engine.as_mut(), "1.1").unwrap();
    let record = engine.backup(&site.backups).unwrap();
    engine.restore(&record, &site.backups).unwrap();
    engine.close().unwrap();
    println!("ARGV-CHILD-DONE");
}

/// Issue 13 item 3: MariaDB/MySQL client programs get the password from a 0600 option file
/// (`--defaults-extra-file`), never on their command line. Wrapper programs record their argv
/// and the option file's mode, then run the real program.
#[test]
fn my_client_programs_never_get_a_password_on_their_command_line() {
    let Some(_server) = server_url() else { return };
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (bin, log) = (tmp.path().join("bin"), tmp.path().join("argv.log"));
    std::fs::create_dir(&bin).unwrap();
    for prog in ["mysqldump", "mariadb-dump", "mysql", "mariadb"] {
        let real = Command::new("sh").arg("-c").arg(format!("command -v {prog}")).output().unwrap();
        let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
        if real.is_empty() {
            continue;
        }
        let w = bin.join(prog);
        let script = format!(
            "#!/bin/sh\nopt=$(printf '%s' \"$1\" | sed -n 's/^--defaults-extra-file=//p')\nmode=$( [ -n \"$opt\" ] && stat -c %a \"$opt\")\nprintf '%s optmode=%s argv=%s\\n' {prog} \"$mode\" \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        );
        std::fs::write(&w, script).unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = common::rerun_test(module_path!(), "my_child_client_programs_with_password")
        .arg("--nocapture")
        .env("MY_CHILD_ARGV", "1")
        .env("BUNDLE_MYSQL_BINDIR", &bin)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ARGV-CHILD-DONE"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(lines.lines().any(|l| l.contains("dump ")), "no dump program was run:\n{lines}");
    for l in lines.lines().filter(|l| !l.contains("--version")) {
        assert!(!l.contains(ARGV_SECRET) && !l.contains("password"), "a password on a command line: {l}");
        assert!(l.contains(" optmode=600 "), "the option file is not 0600: {l}");
    }
}
