//! Several site roots (nodes) sharing one PostgreSQL database, through the real binaries.
//!
//! The issue's done-when line: "Two site roots sharing one PostgreSQL database apply the same bundle
//! concurrently: the schema is migrated exactly once, both end on the new release." And its
//! refusal: a node that cannot get the database's run lock within `BUNDLE_DB_LOCK_WAIT_SECS` exits 4
//! (`db_locked`, naming the holder) and leaves its site as it was.
//!
//! `BUNDLE_TEST_PG` (e.g. `postgres://postgres@127.0.0.1:5432/test`) names a database the tests
//! connect to in order to create a fresh database each (random name), dropped afterwards even when
//! a test fails. Without the variable every test prints why it is skipped and passes.
//!
//! The bundles are variants of the fixture releases 1.0.0 and 2.0.0 in which the `client` database
//! is `engine: postgres` with migrations in PostgreSQL's dialect (1.0 init; 2.0.0 adds 1.1 a nullable
//! column, 2.0 a table rename, 2.1 an additive column); `metadata` stays SQLite, local to each node.
//! The fixture hooks are kept: `health_check` runs `fieldlog version`, which needs no database, so it
//! works whatever engine `client` is on. Only `pre_apply` is replaced, by one that can hold a node
//! inside its apply (and so inside the database run lock, which `apply` takes before planning)
//! until the test creates the file `$MN_GATE`: that makes the races below deterministic.
//!
//! Node A reads the connection from `ROOT/site.yaml`; node B's `site.yaml` names a database that does
//! not exist and the environment variable `BUNDLE_DB_URL_CLIENT` overrides it (the env form wins).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{expect_error, pubkey, variant, SiteState};
use serde_json::Value;
use test_support::{run_timeout, site_python, tool, Run};

// ----- the PostgreSQL side ------------------------------------------------------------------------

const INIT: &str = "CREATE TABLE notes (
    id   SERIAL PRIMARY KEY,
    body TEXT
);
";
const ADD_AUTHOR: &str = "ALTER TABLE notes ADD COLUMN author TEXT;\n";
const RENAME: &str = "ALTER TABLE notes RENAME TO entries;\n";
const ADD_TAGS: &str = "ALTER TABLE entries ADD COLUMN tags TEXT NOT NULL DEFAULT '';\n";

/// The pre_apply hook of the variants: logs like the fixture's, then, when `MN_GATE` is set, waits
/// (at most 60 s) for that file to exist.
const GATED_STOP: &str = r#"#!/bin/sh
# pre_apply hook (multinode_pg variant): log, then wait for $MN_GATE when it is set.
set -eu
echo "pre_apply from=${BUNDLE_FROM_VERSION:-} to=${BUNDLE_TO_VERSION:-}" >> "$BUNDLE_ROOT/hooks.log"
if [ -n "${MN_GATE:-}" ]; then
    i=0
    while [ ! -e "$MN_GATE" ]; do
        i=$((i + 1))
        if [ "$i" -gt 600 ]; then
            echo "stop.sh: $MN_GATE never appeared" >&2
            exit 1
        fi
        sleep 0.1
    done
fi
exit 0
"#;

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
        let name = format!("bundle_mn_{}", random());
        let mut c = postgres::Client::connect(server, postgres::NoTls).expect("connect to BUNDLE_TEST_PG");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        TestDb { server: server.into(), url: url_for(server, &name), name }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    /// `bundle_schema_history`: (file, direction, success, release, schema_after) in id order.
    fn history(&self) -> Vec<(String, String, bool, String, String)> {
        self.client()
            .query("SELECT file, direction, success, release, schema_after FROM bundle_schema_history ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }

    /// The installer sessions holding or waiting for the run lock of this database:
    /// (application_name, holds the advisory lock).
    fn run_lock_sessions(&self) -> Vec<(String, bool)> {
        let mut c = postgres::Client::connect(&self.server, postgres::NoTls).unwrap();
        c.query(
            "SELECT a.application_name,
                    EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
             FROM pg_stat_activity a
             WHERE a.datname = $1 AND a.application_name LIKE 'bundle-install@%run lock'
             ORDER BY a.application_name",
            &[&self.name],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    /// Polls [`Self::run_lock_sessions`] until `done` says yes (panics after `limit`).
    fn wait_for_sessions(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[(String, bool)]) -> bool,
    ) -> Vec<(String, bool)> {
        let start = Instant::now();
        loop {
            let s = self.run_lock_sessions();
            if done(&s) {
                return s;
            }
            assert!(start.elapsed() < limit, "{what}: not seen within {limit:?}; run-lock sessions now: {s:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

// ----- the bundles -------------------------------------------------------------------------------

/// Turns a copied fixture spec directory into the PostgreSQL variant: `client` on postgres at
/// `schema` with `files` as its migrations, and the gated pre_apply hook.
fn make_pg_variant(spec_dir: &Path, schema: &str, files: &[(&str, &str)]) {
    let client = spec_dir.join("migrations/client");
    std::fs::remove_dir_all(&client).unwrap();
    std::fs::create_dir(&client).unwrap();
    for (name, body) in files {
        std::fs::write(client.join(name), body).unwrap();
    }
    let spec = spec_dir.join("spec.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let start = text.find("  client:\n").unwrap_or_else(|| panic!("no client database in:\n{text}"));
    let tail = "    migrations: migrations/client/\n";
    let end =
        start + text[start..].find(tail).unwrap_or_else(|| panic!("no client migrations in:\n{text}")) + tail.len();
    let block = format!("  client:\n    engine: postgres\n    path: client\n    schema: \"{schema}\"\n{tail}");
    std::fs::write(&spec, format!("{}{block}{}", &text[..start], &text[end..])).unwrap();
    // Keeps the file's mode (0755).
    std::fs::write(spec_dir.join("hooks/stop.sh"), GATED_STOP).unwrap();
}

/// The two variant bundles (1.0.0 with client 1.0, 2.0.0 with client 2.1), built once per process.
fn bundles() -> &'static (PathBuf, PathBuf) {
    static B: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    B.get_or_init(|| {
        let v1 = variant("pg-1.0.0", "1.0.0", |d| make_pg_variant(d, "1.0", &[("1.0_init.sql", INIT)]));
        let v2 = variant("pg-2.0.0", "2.0.0", |d| {
            make_pg_variant(
                d,
                "2.1",
                &[
                    ("1.0_init.sql", INIT),
                    ("1.1_add_author.sql", ADD_AUTHOR),
                    ("2.0_rename.sql", RENAME),
                    ("2.1_add_tags.sql", ADD_TAGS),
                ],
            )
        });
        (v1, v2)
    })
}

// ----- the nodes ---------------------------------------------------------------------------------

/// One site root sharing the database.
struct Node {
    name: &'static str,
    root: PathBuf,
    /// `BUNDLE_DB_URL_CLIENT` for this node's commands (`None`: site.yaml only).
    env_url: Option<String>,
}

impl Node {
    /// A fresh root whose `site.yaml` names `yaml_url`; with `env_url` its commands also get
    /// `BUNDLE_DB_URL_CLIENT`.
    fn new(name: &'static str, yaml_url: &str, env_url: Option<&str>) -> Node {
        let root = common::new_root(&format!("mn-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("site.yaml"), format!("databases:\n  client:\n    url: \"{yaml_url}\"\n")).unwrap();
        Node { name, root, env_url: env_url.map(str::to_string) }
    }

    /// `bundle-install ARGS...` with this node's environment (and nothing inherited that would change
    /// which database or how long the lock wait is).
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = tool("bundle-install");
        c.args(args)
            .env_remove("BUNDLE_DB_URL_CLIENT")
            .env_remove("BUNDLE_DB_LOCK_WAIT_SECS")
            .env_remove("MN_GATE")
            .env_remove("BUNDLE_INSTALL_TEST_FAIL")
            .env_remove("BUNDLE_INSTALL_TEST_KILL");
        if let Some(u) = &self.env_url {
            c.env("BUNDLE_DB_URL_CLIENT", u);
        }
        c
    }

    /// `apply BUNDLE --root ROOT --json --python PY` (+ `--trust` on a first install).
    fn apply_cmd(&self, bundle: &Path) -> Command {
        let mut c = self.cmd(&["apply"]);
        c.arg(bundle).arg("--root").arg(&self.root).arg("--json").arg("--python").arg(site_python());
        if !self.root.join("trust").exists() {
            c.arg("--trust").arg(pubkey());
        }
        c
    }

    #[track_caller]
    fn apply_ok(&self, bundle: &Path) -> Value {
        let r = run_timeout(&mut self.apply_cmd(bundle), Duration::from_secs(90));
        assert_eq!(r.code, Some(0), "node {}: apply failed:\n{r}", self.name);
        r.json()
    }

    #[track_caller]
    fn status(&self) -> Value {
        let mut c = self.cmd(&["status", "--json", "--root"]);
        c.arg(&self.root);
        let r = run_timeout(&mut c, Duration::from_secs(30));
        assert_eq!(r.code, Some(0), "node {}: status failed:\n{r}", self.name);
        r.json()["status"].clone()
    }

    fn history_file(&self) -> String {
        std::fs::read_to_string(self.root.join("state/history.jsonl")).unwrap_or_default()
    }
}

/// The `client` entry of an apply's plan.
fn client_plan(applied: &Value) -> Value {
    applied["applied"]["plan"]["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan databases in {applied}"))
        .iter()
        .find(|d| d["name"] == "client")
        .unwrap_or_else(|| panic!("no client in the plan of {applied}"))
        .clone()
}

fn client_steps(applied: &Value) -> Vec<String> {
    client_plan(applied)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"]["file"].as_str().unwrap().to_string())
        .collect()
}

/// The `client` entry of `status --json`.
fn client_status(st: &Value) -> Value {
    st["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("no databases in status {st}"))
        .iter()
        .find(|d| d["name"] == "client")
        .unwrap_or_else(|| panic!("no client in status {st}"))
        .clone()
}

/// Both nodes at 1.0.0 on one fresh database (A first: it creates the schema; B finds it at 1.0),
/// with three notes written; returns the database and the nodes.
fn two_nodes_at_1(server: &str) -> (TestDb, Node, Node) {
    let db = TestDb::new(server);
    let (v1, _) = bundles();
    let a = Node::new("a", &db.url, None);
    // B's site.yaml is wrong on purpose: the environment variable must win.
    let b = Node::new("b", &url_for(server, &format!("bundle_mn_nowhere_{}", random())), Some(&db.url));

    let ja = a.apply_ok(v1);
    assert_eq!(client_plan(&ja)["current"], "clean", "{ja}");
    assert_eq!(client_steps(&ja), ["1.0_init.sql"], "{ja}");
    let jb = b.apply_ok(v1);
    assert_eq!(client_plan(&jb)["current"], "1.0", "B must find the schema A created: {jb}");
    assert!(client_steps(&jb).is_empty(), "B must not run anything on the shared database: {jb}");
    assert_eq!(
        db.history(),
        [("1.0_init.sql".to_string(), "up".to_string(), true, "1.0.0".to_string(), "1.0".to_string())],
        "after both 1.0.0 installs"
    );
    for n in [&a, &b] {
        let st = n.status();
        assert_eq!(st["current"], "1.0.0", "node {}: {st}", n.name);
        let c = client_status(&st);
        assert_eq!(
            (c["engine"].as_str(), c["version"].as_str(), c["compatible"].as_bool()),
            (Some("postgres"), Some("1.0"), Some(true)),
            "node {}: {c}",
            n.name
        );
        assert!(c["location"].as_str().unwrap().contains(&db.name), "node {} reads another database: {c}", n.name);
    }
    let mut c = db.client();
    for body in ["first", "second", "third"] {
        c.execute("INSERT INTO notes (body) VALUES ($1)", &[&body]).unwrap();
    }
    (db, a, b)
}

/// Starts `cmd` on its own thread (the run's output comes back through the handle).
fn spawn(mut cmd: Command) -> std::thread::JoinHandle<(Run, Instant, Instant)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let r = run_timeout(&mut cmd, Duration::from_secs(90));
        (r, start, Instant::now())
    })
}

// ----- the tests ---------------------------------------------------------------------------------

#[test]
fn two_nodes_apply_the_same_bundle_at_once_and_migrate_once() {
    let Some(server) = server_url() else { return };
    let (db, a, b) = two_nodes_at_1(&server);
    let (_, v2) = bundles();
    let gate = common::new_root("mn-gate").with_file_name("go");

    // Both nodes start the upgrade at the same time. Whichever takes the database's run lock first
    // stages, stops at the gated pre_apply while holding the lock, and only goes on once the test
    // has seen the other node's session waiting for that lock.
    let start = |n: &Node| {
        let mut c = n.apply_cmd(v2);
        c.env("MN_GATE", &gate).env("BUNDLE_DB_LOCK_WAIT_SECS", "60");
        spawn(c)
    };
    let (ha, hb) = (start(&a), start(&b));
    let sessions = db.wait_for_sessions(
        Duration::from_secs(40),
        "one node holding the run lock and the other waiting for it",
        |s| s.len() == 2 && s.iter().filter(|(_, held)| *held).count() == 1,
    );
    std::fs::write(&gate, "").unwrap();
    let (ra, a_start, a_end) = ha.join().unwrap();
    let (rb, b_start, b_end) = hb.join().unwrap();
    assert_eq!(ra.code, Some(0), "node A:\n{ra}");
    assert_eq!(rb.code, Some(0), "node B:\n{rb}");
    assert!(a_start < b_end && b_start < a_end, "the two applies did not overlap");
    let (ja, jb) = (ra.json(), rb.json());
    for j in [&ja, &jb] {
        assert_eq!(j["applied"]["changed"], true, "{j}");
        assert_eq!(j["applied"]["plan"]["kind"], "upgrade", "{j}");
    }

    // Exactly one node planned (and ran) the migration; the other planned after it, under the lock,
    // and found the database already at 2.1.
    let all = ["1.1_add_author.sql", "2.0_rename.sql", "2.1_add_tags.sql"];
    let (sa, sb) = (client_steps(&ja), client_steps(&jb));
    let migrator = match (sa.is_empty(), sb.is_empty()) {
        (false, true) => {
            assert_eq!(sa, all, "{ja}");
            assert_eq!(client_plan(&jb)["current"], "2.1", "{jb}");
            "A"
        }
        (true, false) => {
            assert_eq!(sb, all, "{jb}");
            assert_eq!(client_plan(&ja)["current"], "2.1", "{ja}");
            "B"
        }
        _ => panic!(
            "exactly one node must migrate the shared database; A planned {sa:?}, B planned {sb:?}\nA: {ja}\nB: {jb}"
        ),
    };
    // Which node wins is up to the scheduler; either outcome is correct.
    eprintln!(
        "node {migrator} migrated the shared database; run-lock sessions seen while it held the lock: {sessions:?}"
    );

    // The schema was migrated once: each file exactly once, all successful, no failed attempt.
    let history = db.history();
    let expected: Vec<(String, String, bool, String, String)> = [
        ("1.0_init.sql", "1.0.0", "1.0"),
        ("1.1_add_author.sql", "2.0.0", "1.1"),
        ("2.0_rename.sql", "2.0.0", "2.0"),
        ("2.1_add_tags.sql", "2.0.0", "2.1"),
    ]
    .iter()
    .map(|(f, r, s)| (f.to_string(), "up".to_string(), true, r.to_string(), s.to_string()))
    .collect();
    assert_eq!(history, expected, "bundle_schema_history");

    // The data written before is still there, in the new shape.
    let mut c = db.client();
    let notes_gone: bool = c.query_one("SELECT to_regclass('notes') IS NULL", &[]).unwrap().get(0);
    assert!(notes_gone, "notes was not renamed");
    let rows: Vec<(String, Option<String>, String)> = c
        .query("SELECT body, author, tags FROM entries ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        ["first", "second", "third"].map(|b| (b.to_string(), None, String::new())),
        "the rows inserted at 1.0"
    );

    // Both nodes run the new release on the migrated database.
    for n in [&a, &b] {
        let st = n.status();
        assert_eq!(st["current"], "2.0.0", "node {}: {st}", n.name);
        let c = client_status(&st);
        assert_eq!(
            (c["engine"].as_str(), c["version"].as_str(), c["release_schema"].as_str(), c["compatible"].as_bool()),
            (Some("postgres"), Some("2.1"), Some("2.1"), Some(true)),
            "node {}: {c}",
            n.name
        );
        assert_eq!(st["healthy"], true, "node {}: {st}", n.name);
        assert!(common::current(&n.root).unwrap().ends_with("2.0.0"));
    }
}

#[test]
fn a_node_that_cannot_get_the_lock_in_time_refuses_and_changes_nothing() {
    let Some(server) = server_url() else { return };
    let (db, a, b) = two_nodes_at_1(&server);
    let (_, v2) = bundles();
    let gate = common::new_root("mn-gate").with_file_name("go");

    // A starts the upgrade and stops at its gated pre_apply, holding the run lock.
    let mut ca = a.apply_cmd(v2);
    ca.env("MN_GATE", &gate);
    let ha = spawn(ca);
    let sessions =
        db.wait_for_sessions(Duration::from_secs(40), "node A holding the run lock", |s| s.len() == 1 && s[0].1);
    // `bundle-install@<host>:<pid of A> run lock`
    let holder = sessions[0].0.clone();

    // B will wait one second only.
    let before = SiteState::capture(&b.root);
    let history_before = b.history_file();
    let mut cb = b.apply_cmd(v2);
    cb.env("BUNDLE_DB_LOCK_WAIT_SECS", "1");
    let t = Instant::now();
    let rb = run_timeout(&mut cb, Duration::from_secs(30));
    let waited = t.elapsed();
    let (kind, message) = expect_error(&rb, 4);
    assert_eq!(kind, "db_locked", "{rb}");
    assert!(message.contains(&holder), "the message must name the holder `{holder}`:\n{rb}");
    assert!(message.contains("client"), "{rb}");
    assert!(waited >= Duration::from_secs(1), "B gave up after {waited:?}, before its 1 s wait");
    eprintln!("node B refused after {waited:?}: {message}");

    // B's site is exactly as it was, and the database was not touched by it.
    before.assert_same(&SiteState::capture(&b.root), "node B after db_locked");
    assert_eq!(b.history_file(), history_before, "node B's history changed");
    assert_eq!(b.status()["current"], "1.0.0");
    assert_eq!(db.history().len(), 1, "the shared database changed while A was held before migrating");

    // A goes on and finishes; B, run again, finds the database migrated and only does its own part.
    std::fs::write(&gate, "").unwrap();
    let (ra, _, _) = ha.join().unwrap();
    assert_eq!(ra.code, Some(0), "node A:\n{ra}");
    assert_eq!(client_steps(&ra.json()).len(), 3, "{ra}");
    let jb = b.apply_ok(v2);
    assert!(client_steps(&jb).is_empty(), "{jb}");
    assert_eq!(db.history().len(), 4);
    for n in [&a, &b] {
        let st = n.status();
        assert_eq!(st["current"], "2.0.0", "node {}: {st}", n.name);
        assert_eq!(client_status(&st)["compatible"], true, "node {}: {st}", n.name);
    }
}
