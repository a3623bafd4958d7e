//! `bundle-install rehearse` through the real binaries: the fixture chain rehearsed on copies of a
//! site's SQLite databases (and, behind `BUNDLE_TEST_PG` / `BUNDLE_TEST_MYSQL`, of a PostgreSQL or
//! MariaDB database), a chain that fails only on the site's own data (a unique index over duplicate
//! rows), a kill -9 in the middle of a rehearsal followed by `recover`, and the timing prediction
//! against the real apply.
//!
//! What every test checks about the live site: its databases dump the same before and after, its
//! releases, `current`, backups and trust store are untouched, and the only file that changed is
//! `state/history.jsonl` (one `rehearse` record).

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::{
    add_notes, apply_ok, bundle, dumps, expect_error, new_root, pubkey, snapshot_site, variant, SiteState,
};
use serde_json::Value;
use test_support::{diff_snapshots, run, tool, Run};

/// The timing test runs alone among this module's tests (write), the others side by side (read): a
/// rehearsal and an apply measured while other tests of this module come and go would compare two
/// different machines. Tests of the other modules of this test binary are not held back by it and
/// may run beside it (libtest runs as many tests at once as there are cores).
static GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// `bundle-install rehearse BUNDLE --root ROOT --json` with `env`.
fn rehearse(root: &Path, bundle: &Path, env: &[(&str, &str)]) -> Run {
    let mut c = tool("bundle-install");
    c.arg("rehearse").arg(bundle).arg("--root").arg(root).arg("--json");
    c.env_remove("BUNDLE_INSTALL_TEST_KILL").env_remove("BUNDLE_INSTALL_TEST_FAIL").env_remove("BUNDLE_DB_URL_CLIENT");
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// `history --json`: (runs, rehearsals).
fn history(root: &Path) -> (Vec<Value>, Vec<Value>) {
    let r = run(tool("bundle-install").args([
        OsStr::new("history"),
        OsStr::new("--root"),
        root.as_os_str(),
        OsStr::new("--json"),
    ]));
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    (j["history"].as_array().unwrap().clone(), j["rehearsals"].as_array().unwrap().clone())
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {}", serde_json::to_string_pretty(&report["steps"]).unwrap()))
}

fn table<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {s}"))
}

/// The site as the tests compare it: [`SiteState`] plus every file but the history and the lock.
struct Before {
    state: SiteState,
    snap: test_support::Snapshot,
}

impl Before {
    fn take(root: &Path) -> Before {
        let mut snap = snapshot_site(root);
        snap.remove(Path::new("state/history.jsonl"));
        Before { state: SiteState::capture(root), snap }
    }

    #[track_caller]
    fn assert_untouched(&self, root: &Path, what: &str) {
        self.state.assert_same(&SiteState::capture(root), what);
        let mut after = snapshot_site(root);
        after.remove(Path::new("state/history.jsonl"));
        let diff = diff_snapshots(&self.snap, &after);
        assert!(diff.is_empty(), "{what}: the live site changed:\n{}", diff.join("\n"));
        assert!(!root.join("state/rehearse").exists(), "{what}: state/rehearse/ left behind");
    }
}

/// A site on 1.0.0 with notes.
fn site_on_1(name: &str, notes: &[&str]) -> PathBuf {
    let root = new_root(name);
    apply_ok(&root, bundle("1.0.0"));
    add_notes(&root, notes);
    root
}

#[test]
fn sqlite_site_rehearses_the_whole_chain_and_is_left_as_it_was() {
    let _shared = shared();
    let root = site_on_1("rh-sqlite", &["first note here", "second"]);
    let before = Before::take(&root);
    let b4 = bundle("4.0.0");
    let r = rehearse(&root, b4, &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    let rep = &j["rehearsal"];
    assert_eq!(rep["ok"], true, "{r}");
    assert_eq!(rep["from"], "1.0.0");
    assert_eq!(rep["to"], "4.0.0");
    assert_eq!(rep["cleaned_up"], true);
    for s in rep["steps"].as_array().unwrap() {
        assert_eq!(s["outcome"], "ok", "{s}");
    }
    let names: Vec<&str> = rep["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    for n in [
        "stage_release",
        "write_config",
        "pre_apply",
        "backup",
        "migrate:client:2.0:up",
        "migrate:client:2.1:up-data",
        "migrate:metadata:2.1:up",
        "swap",
        "health_check",
    ] {
        assert!(names.contains(&n), "{n} not rehearsed: {names:?}");
    }
    assert!(!names.contains(&"post_apply") && !names.contains(&"commit"), "{names:?}");
    // Rows per table, before and after: notes become entries.
    let s = step(rep, "migrate:client:2.0:up");
    assert_eq!(table(s, "notes")["rows_before"], 2, "{s}");
    assert!(table(s, "notes")["rows_after"].is_null(), "{s}");
    assert_eq!(table(s, "entries")["rows_after"], 2, "{s}");
    assert!(table(s, "entries")["bytes_after"].as_u64().unwrap() > 0, "{s}");
    let copies = rep["copies"].as_array().unwrap();
    assert!(copies.iter().all(|c| c["method"] == "file"), "{copies:?}");
    let p = &rep["prediction"];
    let ms = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("no {k} in {p}"));
    assert!(ms("downtime_ms") >= ms("backup_ms") + ms("migration_ms"), "{p}");
    assert!(ms("apply_ms") >= ms("downtime_ms") + ms("staging_ms"), "{p}");
    assert!(ms("staging_ms") > 0, "{p}");
    assert!(rep["disk"]["measured_bytes"].as_u64().unwrap() > 0 && rep["disk"]["fits"] == true, "{}", rep["disk"]);

    before.assert_untouched(&root, "after a successful rehearsal");
    // The fixture hooks log to $BUNDLE_ROOT/hooks.log: the scratch site's, not the live one's.
    assert!(!common::hooks_log(&root).iter().any(|l| l.contains("to=4.0.0")), "{:?}", common::hooks_log(&root));

    let (runs, rehearsals) = history(&root);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(rehearsals.len(), 1, "{rehearsals:?}");
    assert_eq!(rehearsals[0]["command"], "rehearse");
    assert_eq!(rehearsals[0]["outcome"], "success");
    assert_eq!(rehearsals[0]["bundle_sha256"].as_str(), Some(sha256_file(b4).as_str()));

    // And the real apply then does what was rehearsed.
    apply_ok(&root, b4);
    assert_eq!(common::show(&root).get("fieldlog").map(String::as_str), Some("4.0.0"));
}

const PROBE_STOP: &str = r#"#!/bin/sh
# pre_apply hook (rehearse variant): records whether it runs in a rehearsal, and where.
set -eu
echo "pre_apply rehearsal=${BUNDLE_REHEARSAL:-} root=$BUNDLE_ROOT" >> "${REHEARSE_PROBE:-/dev/null}"
exit 0
"#;

/// 2.0.0 whose client 1.1 step also puts a unique index on notes.body: fine on distinct notes,
/// fails on a site whose staff wrote the same note twice.
fn unique_body_bundle() -> &'static Path {
    static B: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        variant("rh-unique", "2.0.0", |d| {
            let f = d.join("migrations/client/1.1_add_author.sql");
            let mut text = std::fs::read_to_string(&f).unwrap();
            text.push_str("CREATE UNIQUE INDEX notes_body_unique ON notes (body);\n");
            std::fs::write(&f, text).unwrap();
            std::fs::write(d.join("hooks/stop.sh"), PROBE_STOP).unwrap();
        })
    })
}

#[test]
fn a_unique_index_over_duplicates_fails_the_rehearsal_only_on_that_sites_data() {
    let _shared = shared();
    let b = unique_body_bundle();
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = probe_dir.path().join("probe");
    let env = [("REHEARSE_PROBE", probe.to_str().unwrap())];

    // Distinct notes: the same bundle rehearses fine.
    let fine = site_on_1("rh-distinct", &["a", "b"]);
    let r = rehearse(&fine, b, &env);
    assert_eq!(r.code, Some(0), "{r}");
    let lines = std::fs::read_to_string(&probe).unwrap();
    assert!(lines.contains("pre_apply rehearsal=1 root="), "{lines}");
    assert!(lines.contains("/state/rehearse/"), "pre_apply ran with the live root: {lines}");

    // Duplicates: exit 1, naming the step and the statement, the live data untouched.
    let root = site_on_1("rh-dups", &["same words", "same words", "other"]);
    let before = Before::take(&root);
    let r = rehearse(&root, b, &env);
    let (kind, message) = expect_error(&r, 1);
    assert!(message.contains("migrate:client:1.1:up"), "{message}");
    assert!(message.contains("CREATE UNIQUE INDEX notes_body_unique"), "{message}");
    assert!(message.contains("UNIQUE constraint failed"), "{message}");
    let rep = &r.json()["rehearsal"];
    assert_eq!(rep["ok"], false);
    assert_eq!(rep["failed_step"], "migrate:client:1.1:up");
    assert_eq!(step(rep, "migrate:client:1.1:up")["outcome"], "failed");
    assert_eq!(step(rep, "swap")["outcome"], "not_run");
    assert_eq!(step(rep, "health_check")["outcome"], "not_run");
    assert_eq!(rep["cleaned_up"], true);
    before.assert_untouched(&root, "after a failed rehearsal");
    let (runs, rehearsals) = history(&root);
    assert_eq!(runs.len(), 1);
    assert_eq!(rehearsals.last().unwrap()["outcome"], "failed");
    assert_eq!(rehearsals.last().unwrap()["failed_step"], "migrate:client:1.1:up");

    // The real apply fails the same way, on the same step, with the same kind.
    let a = common::apply(&root, b, &[]);
    let (akind, amessage) = expect_error(&a, 1);
    assert_eq!(akind, kind);
    assert!(amessage.starts_with("migrate:client:1.1:up: "), "{amessage}");
    let step_error = message.strip_prefix("rehearsal: ").unwrap_or(&message);
    assert!(amessage.starts_with(step_error), "rehearsal: {message}\napply: {amessage}");
}

#[test]
fn a_rehearsal_killed_mid_migration_leaves_nothing_after_recover() {
    let _shared = shared();
    let root = site_on_1("rh-kill", &["one", "two"]);
    let before = Before::take(&root);
    let r = rehearse(&root, bundle("4.0.0"), &[("BUNDLE_INSTALL_TEST_KILL", "rehearse:migrate:client:2.0:up:before")]);
    assert_eq!(r.code, None, "expected SIGKILL:\n{r}");
    assert!(root.join("state/rehearse").read_dir().unwrap().count() >= 2, "no scratch record or site left by the kill");
    let rc = run(tool("bundle-install").args([
        OsStr::new("recover"),
        OsStr::new("--root"),
        root.as_os_str(),
        OsStr::new("--json"),
    ]));
    assert_eq!(rc.code, Some(0), "{rc}");
    before.assert_untouched(&root, "after kill -9 and recover");
    assert_eq!(history(&root).1.len(), 0, "a killed rehearsal recorded as finished");
}

#[test]
fn policy_refusals_exit_4_and_nothing_to_do_exits_0_as_apply() {
    let _shared = shared();
    let root = site_on_1("rh-policy", &["x"]);
    apply_ok(&root, bundle("2.0.0"));
    let before = Before::take(&root);
    let r = rehearse(&root, bundle("1.0.0"), &[]);
    let (kind, _) = expect_error(&r, 4);
    assert_eq!(kind, "downgrade");
    before.assert_untouched(&root, "after a refused rehearsal");
    // The installed release: nothing to do, exit 0, as apply.
    let r = rehearse(&root, bundle("2.0.0"), &[]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.json()["rehearsal"]["steps"].as_array().map(Vec::len), Some(0), "{r}");
    before.assert_untouched(&root, "after rehearsing the installed release");
    assert!(history(&root).1.is_empty());
}

/// The timing check at a size a test can afford (the 1 GB figure is a row of scripts/bench.sh):
/// a client database of ~64 MiB, rehearsed, then applied for real; the prediction must be within
/// 2× of what the apply took.
#[test]
fn the_prediction_is_within_2x_of_the_real_apply() {
    let _alone = GATE.write().unwrap_or_else(|e| e.into_inner());
    let root = site_on_1("rh-timing", &["seed"]);
    let db = root.join("data/client.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
             INSERT INTO notes (site, body, created) SELECT 'ridge', printf('note %d %s', i, hex(randomblob(140))), '2024-01-01' FROM n; COMMIT;",
        )
        .unwrap();
    }
    let r = rehearse(&root, bundle("4.0.0"), &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let predicted = r.json()["rehearsal"]["prediction"].clone();
    let t = Instant::now();
    apply_ok(&root, bundle("4.0.0"));
    let real = t.elapsed().as_millis() as f64;
    let p = predicted["apply_ms"].as_f64().unwrap();
    eprintln!("prediction {p} ms, real apply {real} ms (whole process); prediction {predicted}");
    assert!(p <= 2.0 * real && real <= 2.0 * p, "prediction {p} ms vs real apply {real} ms: {predicted}");
    let _ = dumps(&root);
}

// ----- PostgreSQL and MariaDB sites ----------------------------------------------------------------

/// The variants: `client` on a server engine, 1.0.0 at client 1.0 (notes), 2.0.0 at client 2.1
/// (1.1 a column, 2.0 a rename, 2.1 a column plus a `.py` data step filling it).
mod servers {
    use super::*;

    pub fn env_url(var: &str) -> Option<String> {
        match std::env::var(var) {
            Ok(u) if !u.trim().is_empty() => Some(u),
            _ => {
                eprintln!("skipped: {var} is not set");
                None
            }
        }
    }

    /// `scheme://auth@host:port/` + `db`.
    pub fn url_for(server: &str, db: &str) -> String {
        let (scheme, rest) = server.split_once("://").unwrap();
        let (main, query) = rest.split_once('?').map_or((rest, None), |(m, q)| (m, Some(q)));
        let authority = main.split_once('/').map_or(main, |(a, _)| a);
        format!("{scheme}://{authority}/{db}{}", query.map(|q| format!("?{q}")).unwrap_or_default())
    }

    pub fn random() -> String {
        let mut b = [0u8; 5];
        use std::io::Read;
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub fn make_variant(spec_dir: &Path, engine: &str, schema: &str, files: &[(&str, &str)]) {
        let client = spec_dir.join("migrations/client");
        std::fs::remove_dir_all(&client).unwrap();
        std::fs::create_dir(&client).unwrap();
        for (name, body) in files {
            std::fs::write(client.join(name), body).unwrap();
        }
        let spec = spec_dir.join("spec.yaml");
        let text = std::fs::read_to_string(&spec).unwrap();
        let start = text.find("  client:\n").unwrap();
        let tail = "    migrations: migrations/client/\n";
        let end = start + text[start..].find(tail).unwrap() + tail.len();
        let block = format!("  client:\n    engine: {engine}\n    path: client\n    schema: \"{schema}\"\n{tail}");
        std::fs::write(&spec, format!("{}{block}{}", &text[..start], &text[end..])).unwrap();
    }

    /// (1.0.0, 2.0.0) bundles of `engine` with its dialect's migrations.
    pub fn bundles(
        engine: &str,
        init: &str,
        add_author: &str,
        rename: &str,
        add_tags: &str,
        fill_py: &str,
    ) -> (PathBuf, PathBuf) {
        let v1 =
            variant(&format!("rh-{engine}-1"), "1.0.0", |d| make_variant(d, engine, "1.0", &[("1.0_init.sql", init)]));
        let v2 = variant(&format!("rh-{engine}-2"), "2.0.0", |d| {
            make_variant(
                d,
                engine,
                "2.1",
                &[
                    ("1.0_init.sql", init),
                    ("1.1_add_author.sql", add_author),
                    ("2.0_rename.sql", rename),
                    ("2.1_add_tags.sql", add_tags),
                    ("2.1_add_tags.py", fill_py),
                ],
            )
        });
        (v1, v2)
    }

    /// A site root whose `site.yaml` names `url` for `client`.
    pub fn root_with(name: &str, url: &str) -> PathBuf {
        let root = new_root(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("site.yaml"), format!("databases:\n  client:\n    url: \"{url}\"\n")).unwrap();
        root
    }

    /// The checks every server rehearsal shares: exit 0, the copy method, the chain's steps with the
    /// client's rows before and after, the data step run on the copy.
    #[track_caller]
    pub fn check_report(r: &Run, method: &str) {
        assert_eq!(r.code, Some(0), "{r}");
        let j = r.json();
        let rep = &j["rehearsal"];
        assert_eq!(rep["ok"], true, "{r}");
        let copy = rep["copies"].as_array().unwrap().iter().find(|c| c["database"] == "client").unwrap();
        assert_eq!(copy["method"], method, "{copy}");
        assert!(copy["scratch"].as_str().unwrap().contains("_rehearse_"), "{copy}");
        let s = step(rep, "migrate:client:2.0:up");
        assert_eq!(table(s, "notes")["rows_before"], 3, "{s}");
        assert_eq!(table(s, "entries")["rows_after"], 3, "{s}");
        assert_eq!(step(rep, "migrate:client:2.1:up-data")["outcome"], "ok");
        assert_eq!(rep["cleaned_up"], true);
    }
}

const PG_INIT: &str = "CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT);\n";
const PG_AUTHOR: &str = "ALTER TABLE notes ADD COLUMN author TEXT;\n";
const PG_RENAME: &str = "ALTER TABLE notes RENAME TO entries;\n";
const PG_TAGS: &str = "ALTER TABLE entries ADD COLUMN tags TEXT;\n";
const PG_FILL: &str = r#"import os, subprocess
subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", os.environ["BUNDLE_DB_URL"],
                "-c", "UPDATE entries SET tags = 'rehearsed'"], check=True)
"#;

struct PgDb {
    server: String,
    name: String,
    url: String,
}

impl PgDb {
    fn new(server: &str) -> PgDb {
        let name = format!("bundle_rh_{}", servers::random());
        let mut c = postgres::Client::connect(server, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        PgDb { server: server.into(), url: servers::url_for(server, &name), name }
    }
    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
    /// Schema and rows, for "dump-identical".
    fn dump(&self) -> String {
        let out = Command::new("pg_dump").args(["--no-owner", "-d", &self.url]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict") && !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    }
    fn scratch_dbs(&self) -> Vec<String> {
        let mut c = postgres::Client::connect(&self.server, postgres::NoTls).unwrap();
        c.query("SELECT datname FROM pg_database WHERE datname LIKE $1", &[&format!("{}\\_rehearse\\_%", self.name)])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server, postgres::NoTls) {
            for s in self.scratch_dbs_quiet(&mut c) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {s} WITH (FORCE)"));
            }
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

impl PgDb {
    fn scratch_dbs_quiet(&self, c: &mut postgres::Client) -> Vec<String> {
        c.query("SELECT datname FROM pg_database WHERE datname LIKE $1", &[&format!("{}\\_rehearse\\_%", self.name)])
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default()
    }
}

fn pg_bundles() -> &'static (PathBuf, PathBuf) {
    static B: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    B.get_or_init(|| servers::bundles("postgres", PG_INIT, PG_AUTHOR, PG_RENAME, PG_TAGS, PG_FILL))
}

#[test]
fn postgres_site_rehearses_on_a_template_copy_or_a_dump_and_is_left_as_it_was() {
    let _shared = shared();
    let Some(server) = servers::env_url("BUNDLE_TEST_PG") else { return };
    let db = PgDb::new(&server);
    let (v1, v2) = pg_bundles();
    let root = servers::root_with("rh-pg", &db.url);
    apply_ok(&root, v1);
    db.client().batch_execute("INSERT INTO notes (body) VALUES ('same'), ('same'), ('other')").unwrap();
    let before = Before::take(&root);
    let live = db.dump();

    // Nobody else connected: CREATE DATABASE … TEMPLATE.
    let r = rehearse(&root, v2, &[]);
    servers::check_report(&r, "template");
    assert_eq!(db.dump(), live, "the live database changed");
    assert!(db.scratch_dbs().is_empty(), "scratch databases left: {:?}", db.scratch_dbs());
    before.assert_untouched(&root, "after a PostgreSQL rehearsal");

    // The app holds a session: pg_dump | pg_restore instead.
    let app = db.client();
    let r = rehearse(&root, v2, &[]);
    servers::check_report(&r, "dump");
    drop(app);
    assert_eq!(db.dump(), live, "the live database changed");
    assert!(db.scratch_dbs().is_empty(), "scratch databases left: {:?}", db.scratch_dbs());
    assert_eq!(history(&root).1.len(), 2);

    // Killed with its copy made: recover drops it.
    let r = rehearse(&root, v2, &[("BUNDLE_INSTALL_TEST_KILL", "rehearse:copied:after")]);
    assert_eq!(r.code, None, "expected SIGKILL:\n{r}");
    assert_eq!(db.scratch_dbs().len(), 1, "no scratch database to clean up: the kill came too early");
    let rc = run(tool("bundle-install").args([OsStr::new("recover"), OsStr::new("--root"), root.as_os_str()]));
    assert_eq!(rc.code, Some(0), "{rc}");
    assert!(db.scratch_dbs().is_empty(), "recover left {:?}", db.scratch_dbs());
    assert_eq!(db.dump(), live);
    before.assert_untouched(&root, "after kill -9 and recover");

    // A chain whose 1.1 puts a unique index on notes.body fails on this site's duplicate rows:
    // exit 1 naming the statement, the live database as it was, no scratch database left.
    let unique = variant("rh-pg-unique", "2.0.0", |d| {
        servers::make_variant(
            d,
            "postgres",
            "2.1",
            &[
                ("1.0_init.sql", PG_INIT),
                ("1.1_add_author.sql", &format!("{PG_AUTHOR}CREATE UNIQUE INDEX notes_body_unique ON notes (body);\n")),
                ("2.0_rename.sql", PG_RENAME),
                ("2.1_add_tags.sql", PG_TAGS),
                ("2.1_add_tags.py", PG_FILL),
            ],
        )
    });
    let r = rehearse(&root, &unique, &[]);
    let (_, message) = expect_error(&r, 1);
    assert!(
        message.contains("migrate:client:1.1:up") && message.contains("CREATE UNIQUE INDEX notes_body_unique"),
        "{message}"
    );
    assert!(message.contains("could not create unique index"), "{message}");
    assert_eq!(r.json()["rehearsal"]["failed_step"], "migrate:client:1.1:up");
    assert_eq!(db.dump(), live, "the live database changed");
    assert!(db.scratch_dbs().is_empty(), "scratch databases left: {:?}", db.scratch_dbs());
    before.assert_untouched(&root, "after a failed PostgreSQL rehearsal");

    // What was rehearsed applies.
    apply_ok(&root, v2);
    let tags: Vec<Option<String>> =
        db.client().query("SELECT tags FROM entries", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(tags, vec![Some("rehearsed".to_string()); 3]);
}

const MY_INIT: &str = "CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT);\n";
const MY_AUTHOR: &str = "ALTER TABLE notes ADD COLUMN author TEXT;\n";
const MY_RENAME: &str = "RENAME TABLE notes TO entries;\n";
const MY_TAGS: &str = "ALTER TABLE entries ADD COLUMN tags VARCHAR(40);\n";
const MY_FILL: &str = r#"import os, subprocess, urllib.parse
u = urllib.parse.urlparse(os.environ["BUNDLE_DB_URL"])
args = ["mysql", "--protocol=TCP", "-h", u.hostname, "-P", str(u.port or 3306), "-u", urllib.parse.unquote(u.username or "root")]
env = dict(os.environ, MYSQL_PWD=urllib.parse.unquote(u.password or ""))
subprocess.run(args + [u.path.lstrip("/"), "-e", "UPDATE entries SET tags = 'rehearsed'"], check=True, env=env)
"#;

fn my_conn(url: &str) -> mysql::Conn {
    mysql::Conn::new(mysql::OptsBuilder::from_opts(mysql::Opts::from_url(url).unwrap()).prefer_socket(false)).unwrap()
}

struct MyDb {
    server: String,
    name: String,
    url: String,
}

impl MyDb {
    fn new(server: &str) -> MyDb {
        use mysql::prelude::Queryable;
        let name = format!("bundle_rh_{}", servers::random());
        my_conn(server).query_drop(format!("CREATE DATABASE {name}")).unwrap();
        MyDb { server: server.into(), url: servers::url_for(server, &name), name }
    }
    fn dump(&self) -> String {
        let out = Command::new("mysqldump")
            .args([
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "--skip-dump-date",
                "--skip-comments",
                &self.name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn scratch_dbs(&self) -> Vec<String> {
        use mysql::prelude::Queryable;
        my_conn(&self.server)
            .exec(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
                (format!("{}\\_rehearse\\_%", self.name),),
            )
            .unwrap()
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        use mysql::prelude::Queryable;
        if let Ok(opts) = mysql::Opts::from_url(&self.server) {
            if let Ok(mut c) = mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).prefer_socket(false)) {
                let scratch: Vec<String> = c
                    .exec(
                        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
                        (format!("{}\\_rehearse\\_%", self.name),),
                    )
                    .unwrap_or_default();
                for s in scratch {
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{s}`"));
                }
                let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
            }
        }
    }
}

#[test]
fn mariadb_site_rehearses_on_a_scratch_schema_and_is_left_as_it_was() {
    let _shared = shared();
    use mysql::prelude::Queryable;
    let Some(server) = servers::env_url("BUNDLE_TEST_MYSQL") else { return };
    let db = MyDb::new(&server);
    let (v1, v2) = servers::bundles("mysql", MY_INIT, MY_AUTHOR, MY_RENAME, MY_TAGS, MY_FILL);
    let root = servers::root_with("rh-my", &db.url);
    apply_ok(&root, &v1);
    my_conn(&db.url).query_drop("INSERT INTO notes (body) VALUES ('same'), ('same'), ('other')").unwrap();
    let before = Before::take(&root);
    let live = db.dump();

    let r = rehearse(&root, &v2, &[]);
    servers::check_report(&r, "dump");
    assert_eq!(db.dump(), live, "the live database changed");
    assert!(db.scratch_dbs().is_empty(), "scratch schemas left: {:?}", db.scratch_dbs());
    before.assert_untouched(&root, "after a MariaDB rehearsal");

    let r = rehearse(&root, &v2, &[("BUNDLE_INSTALL_TEST_KILL", "rehearse:migrate:client:2.0:up:before")]);
    assert_eq!(r.code, None, "expected SIGKILL:\n{r}");
    assert_eq!(db.scratch_dbs().len(), 1, "no scratch schema to clean up");
    let rc = run(tool("bundle-install").args([OsStr::new("recover"), OsStr::new("--root"), root.as_os_str()]));
    assert_eq!(rc.code, Some(0), "{rc}");
    assert!(db.scratch_dbs().is_empty(), "recover left {:?}", db.scratch_dbs());
    assert_eq!(db.dump(), live);
    before.assert_untouched(&root, "after kill -9 and recover");

    apply_ok(&root, &v2);
    let tags: Vec<Option<String>> = my_conn(&db.url).query("SELECT tags FROM entries").unwrap();
    assert_eq!(tags, vec![Some("rehearsed".to_string()); 3]);
}

/// The CI form: a release engineer points a throw-away root at a database (a nightly copy of a
/// site) through `BUNDLE_DB_URL_CLIENT`, installs the release that site runs, and rehearses the new
/// bundle. The variable names the database being copied; the rehearsal's steps must still only
/// reach the copy.
#[test]
fn ci_rehearses_against_a_database_named_by_the_environment() {
    let _shared = shared();
    let Some(server) = servers::env_url("BUNDLE_TEST_PG") else { return };
    let nightly = PgDb::new(&server);
    let (v1, v2) = pg_bundles();
    // The "real site" the nightly copy comes from: 1.0.0 with rows.
    let real = servers::root_with("rh-ci-real", &nightly.url);
    apply_ok(&real, v1);
    nightly.client().batch_execute("INSERT INTO notes (body) VALUES ('same'), ('same'), ('other')").unwrap();
    let live = nightly.dump();

    let ci = new_root("rh-ci");
    let env = [("BUNDLE_DB_URL_CLIENT", nightly.url.as_str())];
    let mut c = tool("bundle-install");
    c.arg("apply")
        .arg(v1)
        .arg("--root")
        .arg(&ci)
        .arg("--trust")
        .arg(pubkey())
        .arg("--json")
        .env("BUNDLE_DB_URL_CLIENT", &nightly.url);
    let a = run(&mut c);
    assert_eq!(a.code, Some(0), "{a}");
    assert_eq!(nightly.dump(), live, "installing the running release changed the database");
    let r = rehearse(&ci, v2, &env);
    servers::check_report(&r, "template");
    assert_eq!(nightly.dump(), live, "the rehearsal reached the database named by BUNDLE_DB_URL_CLIENT");
    assert!(nightly.scratch_dbs().is_empty(), "{:?}", nightly.scratch_dbs());
}
