//! The crash test: every step of the installer's journal, stopped there three ways.
//!
//! For every step `S` of a real 1.0.0 → 4.0.0 upgrade of the fieldlog fixture (the step names are
//! read from the successful run's history record, not hard-coded):
//! * `BUNDLE_INSTALL_TEST_FAIL=S`: apply exits 1 and the site is exactly the old release;
//! * `BUNDLE_INSTALL_TEST_KILL=S:before` and `S:after`: the process dies by SIGKILL, `recover`
//!   finishes the run (when its `commit` step had started) or undoes it (otherwise), the site is
//!   exactly the old or exactly the new release — never a mixture —, and a later `apply` brings it to
//!   exactly the new release, which runs.
//!
//! Also: kills while undoing (a failing step plus a kill during its undo), kills of `recover`
//! itself, other commands (`status`, `check`, `plan`, `history`, `apply`) recovering first, a first
//! install killed after every step, and the rollback journal (a code-only rollback, and one across a
//! major schema with a down script and a data restore) failed and killed at every step. Besides the
//! fingerprint, each case checks the journal is gone, `state/staging/` is empty, an undone run
//! removed its backup, history holds exactly one record of the run with the right outcome, and the
//! service is left started (the last stop/start line of the fixture's `hooks.log`).
//!
//! "Exactly" is a [`Fingerprint`]: where `current` points, every entry of `releases/`, a hash of
//! every node of each complete release tree, every entry of `data/`, the logical content of each
//! database (schema and every row, sorted) and the current config's bytes. Normalised only for what
//! legitimately differs between two identical runs: the site root's path (venv scripts embed it),
//! the source mtime in `.pyc` headers (the installer writes `.py` files at the current time), the
//! `installed_at`/`backup` fields of `release.json` and `applied_at` in `bundle_schema_history`.
//! `state/`, `backups/` and `hooks.log` are not part of it (checked separately where it matters).
//!
//! Sites live in a few fixed "slots" (`slot-N/site`). Venvs hold absolute paths, so a site only
//! works at the path it was installed at: each slot installs its templates once *at its own site
//! path* and keeps a `cp -a` copy beside it; every case deletes the site and copies the template back
//! to that same path (`cp -a` keeps modes, symlinks and mtimes, so the `.pyc` files stay valid and
//! nothing refers to the template's copy). Each case first checks the restored site's fingerprint
//! against the reference, so an unsound restore cannot go unnoticed. Slots run in parallel
//! (`CRASH_JOBS`, default 4); every case runs to the end and the failures are reported together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::{build_fixture_bundle, scratch_dir, test_secret_key, KeyPair};

const INSTALL: &str = env!("CARGO_BIN_EXE_bundle-install");
const FAIL_ENV: &str = "BUNDLE_INSTALL_TEST_FAIL";
const KILL_ENV: &str = "BUNDLE_INSTALL_TEST_KILL";
const TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// Running commands (with the exit *status*: test_support::Run drops the signal).

struct Out {
    command: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

impl Out {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
    fn killed_by_sigkill(&self) -> bool {
        !self.timed_out && self.status.signal() == Some(libc::SIGKILL)
    }
    fn json(&self) -> Option<Value> {
        serde_json::from_str(self.stdout.trim()).ok()
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |s: &str| {
            let lines: Vec<&str> = s.trim_end().lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        write!(
            f,
            "$ {}\n{:?}{}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.command,
            self.status,
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.stdout.trim_end(),
            tail(&self.stderr)
        )
    }
}

fn exec(cmd: &mut Command) -> Out {
    let command = format!(
        "{}{} {}",
        cmd.get_envs()
            .filter_map(|(k, v)| v.map(|v| format!("{}={} ", k.to_string_lossy(), v.to_string_lossy())))
            .collect::<String>(),
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(3));
    };
    Out { command, status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default(), timed_out }
}

/// `bundle-install ARGS --root SITE --json` with the fault hooks given (and no others).
fn install(site: &Path, args: &[&str], fail: Option<&str>, kill: Option<&str>) -> Out {
    let mut c = Command::new(INSTALL);
    c.args(args).arg("--root").arg(site).arg("--json").env_remove(FAIL_ENV).env_remove(KILL_ENV);
    if let Some(f) = fail {
        c.env(FAIL_ENV, f);
    }
    if let Some(k) = kill {
        c.env(KILL_ENV, k);
    }
    exec(&mut c)
}

fn apply(site: &Path, version: &str, fail: Option<&str>, kill: Option<&str>) -> Out {
    let bundle = world().bundle(version);
    install(site, &["apply", bundle.to_str().unwrap()], fail, kill)
}

fn fieldlog(site: &Path, args: &[&str]) -> Out {
    exec(
        Command::new(site.join("current/venv/bin/fieldlog"))
            .args(args)
            .env_remove("FIELDLOG_ROOT")
            .env_remove("FIELDLOG_RELEASE_DIR"),
    )
}

/// Ok(()) or an Err carrying the run.
fn expect_code(o: &Out, code: i32, what: &str) -> Result<(), String> {
    if o.code() == Some(code) && !o.timed_out {
        Ok(())
    } else {
        Err(format!("{what}: expected exit {code}\n{o}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and bundles, built once per process.

struct World {
    key: KeyPair,
    bundles: HashMap<&'static str, PathBuf>,
}

impl World {
    fn bundle(&self, v: &str) -> &Path {
        &self.bundles[v]
    }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = scratch_dir("crash-world");
        let key = KeyPair::write(&dir.join("crash"), &test_secret_key(42));
        let bundles = ["1.0.0", "2.0.0", "3.0.0", "4.0.0"]
            .into_iter()
            .map(|v| (v, build_fixture_bundle(v, &key.secret_path, &dir)))
            .collect();
        World { key, bundles }
    })
}

// ---------------------------------------------------------------------------------------------
// Templates and slots.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tpl {
    /// 1.0.0 with two notes.
    V1,
    /// 3.0.0 with a note, upgraded to 4.0.0, another note.
    V3to4,
    /// 2.0.0 with a note, upgraded to 3.0.0.
    V2to3,
    /// No site at all (a first install).
    Empty,
}

fn must(o: Out, what: &str) -> Out {
    assert!(o.code() == Some(0), "{what} failed while building a template:\n{o}");
    o
}

fn build_template(t: Tpl, site: &Path) {
    let w = world();
    let first = |v: &str| {
        let b = w.bundle(v).to_str().unwrap().to_string();
        let key = w.key.public_path.to_str().unwrap().to_string();
        must(install(site, &["apply", &b, "--trust", &key], None, None), &format!("clean install of {v}"));
    };
    let note = |args: &[&str]| {
        let mut a = vec!["add-note"];
        a.extend_from_slice(args);
        must(fieldlog(site, &a), "fieldlog add-note");
        // The app stamps notes with the current time; every slot's template must hold the same rows.
        let c = Connection::open(site.join("data/client.db")).unwrap();
        for (table, col) in [("notes", "created"), ("entries", "created_at")] {
            let exists: bool = c
                .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| {
                    r.get(0)
                })
                .unwrap();
            if exists {
                c.execute(&format!("UPDATE {table} SET {col} = '2024-01-01T00:00:00Z'"), []).unwrap();
            }
        }
    };
    match t {
        Tpl::V1 => {
            first("1.0.0");
            note(&["calibrated the thermometer", "--site", "north"]);
            note(&["wind picked up after noon"]);
        }
        Tpl::V3to4 => {
            first("3.0.0");
            note(&["written on three", "--author", "ann"]);
            must(apply(site, "4.0.0", None, None), "apply 4.0.0");
            note(&["written on four with words", "--author", "bob"]);
        }
        Tpl::V2to3 => {
            first("2.0.0");
            note(&["written on two", "--author", "ann"]);
            must(apply(site, "3.0.0", None, None), "apply 3.0.0");
        }
        Tpl::Empty => {}
    }
}

struct Slot {
    dir: PathBuf,
    templates: HashMap<Tpl, PathBuf>,
    /// `backups/` entries of each template (an undone run must leave exactly these).
    backups: HashMap<Tpl, BTreeSet<String>>,
}

impl Slot {
    fn site(&self) -> PathBuf {
        self.dir.join("site")
    }

    /// Deletes the site and puts template `t` back at the same path (building it the first time).
    fn restore(&mut self, t: Tpl) -> PathBuf {
        let site = self.site();
        if site.symlink_metadata().is_ok() {
            std::fs::remove_dir_all(&site).unwrap_or_else(|e| panic!("removing {}: {e}", site.display()));
        }
        if t == Tpl::Empty {
            self.backups.insert(t, BTreeSet::new());
            return site;
        }
        match self.templates.get(&t) {
            Some(tpl) => cp_a(tpl, &site),
            None => {
                build_template(t, &site);
                let tpl = self.dir.join(format!("template-{t:?}"));
                if tpl.exists() {
                    std::fs::remove_dir_all(&tpl).unwrap();
                }
                cp_a(&site, &tpl);
                self.backups.insert(t, entries(&site.join("backups")));
                self.templates.insert(t, tpl);
            }
        }
        site
    }
}

fn cp_a(from: &Path, to: &Path) {
    let o = exec(Command::new("cp").arg("-a").arg(from).arg(to));
    assert!(o.code() == Some(0), "cp -a failed:\n{o}");
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

struct Pool {
    /// Free slots, and how many were created.
    state: Mutex<(Vec<Slot>, usize)>,
    cv: Condvar,
    max: usize,
    base: PathBuf,
}

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| {
        let max = std::env::var("CRASH_JOBS").ok().and_then(|s| s.parse().ok()).filter(|n| *n > 0).unwrap_or(4);
        let base = scratch_dir("crash").canonicalize().unwrap();
        Pool { state: Mutex::new((Vec::new(), 0)), cv: Condvar::new(), max, base }
    })
}

struct Lease(Option<Slot>);

impl Lease {
    fn acquire() -> Lease {
        let p = pool();
        let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = st.0.pop() {
                return Lease(Some(s));
            }
            if st.1 < p.max {
                let n = st.1;
                st.1 += 1;
                let dir = p.base.join(format!("slot-{n}"));
                std::fs::create_dir_all(&dir).unwrap();
                return Lease(Some(Slot { dir, templates: HashMap::new(), backups: HashMap::new() }));
            }
            st = p.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
    fn slot(&mut self) -> &mut Slot {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let p = pool();
            p.state.lock().unwrap_or_else(|e| e.into_inner()).0.push(s);
            p.cv.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprints.

#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    /// Every entry of the site root but `hooks.log` (a stray `current.tmp` would show here).
    root_entries: BTreeSet<String>,
    current: Option<String>,
    /// Every entry of `releases/`, complete or not.
    release_entries: BTreeSet<String>,
    /// Complete releases (release.json, no `.incomplete`): relative path → kind, mode, hash.
    releases: BTreeMap<String, BTreeMap<String, String>>,
    /// Every entry of `data/`.
    data_entries: BTreeSet<String>,
    /// Each `data/*.db`: sorted logical dump.
    databases: BTreeMap<String, Vec<String>>,
    /// `current/config/*`: name → content.
    config: Option<BTreeMap<String, String>>,
    /// Every entry of `store/` and `store/wheels/` (a work directory left behind shows here), and
    /// each sealed entry's files (`entry.json` but its inode and time stamps, which differ from
    /// run to run).
    store: BTreeMap<String, BTreeMap<String, String>>,
}

fn store_fingerprint(site: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    out.insert("store/".to_string(), entries(&site.join("store")).into_iter().map(|e| (e, String::new())).collect());
    for e in entries(&site.join("store/wheels")) {
        let dir = site.join("store/wheels").join(&e);
        let mut t = tree(&dir, site);
        if let Ok(bytes) = std::fs::read(dir.join("entry.json")) {
            let mut j: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if let Some(o) = j.as_object_mut() {
                o.remove("created_by");
            }
            for f in j["files"].as_array_mut().into_iter().flatten() {
                let o = f.as_object_mut().unwrap();
                o.remove("ino");
                o.remove("mtime_ns");
                // A timestamp-based .pyc holds its source's mtime.
                if o["path"].as_str().is_some_and(|p| p.ends_with(".pyc")) {
                    o.remove("hash");
                }
            }
            t.insert("entry.json".into(), j.to_string());
        }
        out.insert(e, t);
    }
    out
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn tree(dir: &Path, root: &Path) -> BTreeMap<String, String> {
    let root_bytes = root.as_os_str().as_encoded_bytes();
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false).sort_by_file_name() {
        let e = e.unwrap_or_else(|e| panic!("walking {}: {e}", dir.display()));
        let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let meta = e.path().symlink_metadata().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let t = meta.file_type();
        let v = if t.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            format!(
                "symlink -> {}",
                String::from_utf8_lossy(&replace_all(target.as_os_str().as_encoded_bytes(), root_bytes, b"<ROOT>"))
            )
        } else if t.is_dir() {
            format!("dir {mode:o}")
        } else if t.is_file() {
            let mut data = std::fs::read(e.path()).unwrap();
            if rel == "release.json" {
                // installed_at and the backup id carry the time of the run.
                let mut j: Value = serde_json::from_slice(&data).unwrap_or(Value::Null);
                if let Some(o) = j.as_object_mut() {
                    o.remove("installed_at");
                    let has_backup = o.get("backup").is_some_and(|b| !b.is_null());
                    o.insert("backup".into(), Value::Bool(has_backup));
                }
                data = serde_json::to_vec(&j).unwrap();
            } else if rel.ends_with(".dist-info/RECORD") {
                // Entry-point scripts embed the root's path, so their RECORD hash (and size) does too.
                let site_packages = e.path().parent().and_then(Path::parent).unwrap();
                let text = String::from_utf8_lossy(&data).into_owned();
                data = text
                    .lines()
                    .map(|line| {
                        let path = line.rsplitn(3, ',').nth(2).unwrap_or(line);
                        let file = std::fs::read(site_packages.join(path)).unwrap_or_default();
                        if !root_bytes.is_empty() && file.windows(root_bytes.len()).any(|w| w == root_bytes) {
                            format!("{path},<hash of a file holding the root path>\n")
                        } else {
                            format!("{line}\n")
                        }
                    })
                    .collect::<String>()
                    .into_bytes();
            } else if rel.ends_with(".pyc") && data.len() >= 16 && data[4..8] == [0, 0, 0, 0] {
                // Timestamp-based pyc: bytes 8..12 are the source's mtime.
                data[8..12].fill(0);
            }
            format!("file {mode:o} {}", sha(&replace_all(&data, root_bytes, b"<ROOT>")))
        } else {
            "other".into()
        };
        out.insert(rel, v);
    }
    out
}

fn dump_db(path: &Path) -> Vec<String> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut lines = Vec::new();
    let uv: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    lines.push(format!("user_version {uv}"));
    let mut tables = Vec::new();
    {
        let mut st = c.prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").unwrap();
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (ty, name, tbl, sql) = row.unwrap();
            if ty == "table" {
                tables.push(name.clone());
            }
            lines.push(format!("schema {ty} {name} on {tbl}: {}", sql.unwrap_or_default()));
        }
    }
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM \"{}\"", t.replace('"', "\"\""))).unwrap();
        let cols: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
        let mut rows: Vec<String> = st
            .query_map([], |r| {
                let mut cells = Vec::new();
                for (i, col) in cols.iter().enumerate() {
                    let v: rusqlite::types::Value = r.get(i)?;
                    if t == "bundle_schema_history" && col == "applied_at" {
                        cells.push(format!("{col}=<time>"));
                    } else {
                        cells.push(format!("{col}={v:?}"));
                    }
                }
                Ok(cells.join(", "))
            })
            .unwrap()
            .map(|r| format!("row {t}: {}", r.unwrap()))
            .collect();
        rows.sort();
        lines.extend(rows);
    }
    lines
}

fn fingerprint(site: &Path) -> Fingerprint {
    let current = std::fs::read_link(site.join("current")).ok().map(|p| p.to_string_lossy().into_owned());
    let release_entries = entries(&site.join("releases"));
    let mut releases = BTreeMap::new();
    for r in &release_entries {
        let dir = site.join("releases").join(r);
        if dir.join("release.json").is_file() && !dir.join(".incomplete").exists() {
            releases.insert(r.clone(), tree(&dir, site));
        }
    }
    let data_entries = entries(&site.join("data"));
    let databases = data_entries
        .iter()
        .filter(|n| n.ends_with(".db"))
        .map(|n| (n.clone(), dump_db(&site.join("data").join(n))))
        .collect();
    let config = current.as_ref().map(|c| {
        let dir = site.join(c).join("config");
        entries(&dir)
            .into_iter()
            .map(|n| {
                (n.clone(), String::from_utf8_lossy(&std::fs::read(dir.join(&n)).unwrap_or_default()).into_owned())
            })
            .collect()
    });
    let mut root_entries = entries(site);
    root_entries.remove("hooks.log");
    let store = store_fingerprint(site);
    Fingerprint { root_entries, current, release_entries, releases, data_entries, databases, config, store }
}

/// What differs between two fingerprints, briefly.
fn diff(a: &Fingerprint, b: &Fingerprint) -> Vec<String> {
    let mut d = Vec::new();
    if a.root_entries != b.root_entries {
        d.push(format!("root entries: {:?} vs {:?}", a.root_entries, b.root_entries));
    }
    if a.current != b.current {
        d.push(format!("current: {:?} vs {:?}", a.current, b.current));
    }
    if a.release_entries != b.release_entries {
        d.push(format!("releases/ entries: {:?} vs {:?}", a.release_entries, b.release_entries));
    }
    if a.data_entries != b.data_entries {
        d.push(format!("data/ entries: {:?} vs {:?}", a.data_entries, b.data_entries));
    }
    let keys: BTreeSet<&String> = a.releases.keys().chain(b.releases.keys()).collect();
    for k in keys {
        match (a.releases.get(k), b.releases.get(k)) {
            (Some(x), Some(y)) if x != y => {
                let paths: BTreeSet<&String> = x.keys().chain(y.keys()).filter(|p| x.get(*p) != y.get(*p)).collect();
                d.push(format!(
                    "release {k}: {} node(s) differ, e.g. {:?}",
                    paths.len(),
                    paths.iter().take(6).collect::<Vec<_>>()
                ));
            }
            (Some(_), None) | (None, Some(_)) => d.push(format!("complete release {k} only on one side")),
            _ => {}
        }
    }
    let dbs: BTreeSet<&String> = a.databases.keys().chain(b.databases.keys()).collect();
    for k in dbs {
        let empty = Vec::new();
        let (x, y) = (a.databases.get(k).unwrap_or(&empty), b.databases.get(k).unwrap_or(&empty));
        if x != y {
            let xs: BTreeSet<&String> = x.iter().collect();
            let ys: BTreeSet<&String> = y.iter().collect();
            let only_a: Vec<_> = xs.difference(&ys).take(5).collect();
            let only_b: Vec<_> = ys.difference(&xs).take(5).collect();
            d.push(format!("database {k}: only in this site {only_a:?}; only in the reference {only_b:?}"));
        }
    }
    if a.config != b.config {
        d.push(format!("config: {:?} vs {:?}", a.config, b.config));
    }
    if a.store != b.store {
        let keys: BTreeSet<&String> =
            a.store.keys().chain(b.store.keys()).filter(|k| a.store.get(*k) != b.store.get(*k)).collect();
        let empty = BTreeMap::new();
        let detail: Vec<String> = keys
            .iter()
            .take(2)
            .map(|k| {
                let (x, y) = (a.store.get(*k).unwrap_or(&empty), b.store.get(*k).unwrap_or(&empty));
                let paths: Vec<String> = x
                    .keys()
                    .chain(y.keys())
                    .filter(|p| x.get(*p) != y.get(*p))
                    .take(3)
                    .map(|p| format!("{p}: {:?} vs {:?}", x.get(p), y.get(p)))
                    .collect();
                format!("{k}: {paths:?}")
            })
            .collect();
        d.push(format!("store: {} entr(ies) differ, e.g. {detail:?}", keys.len()));
    }
    d
}

/// Ok when `fp` equals `want`; otherwise what differs from it and from `other`.
fn same(fp: &Fingerprint, want: (&str, &Fingerprint), other: (&str, &Fingerprint)) -> Result<(), String> {
    if fp == want.1 {
        return Ok(());
    }
    let verdict = if fp == other.1 {
        format!("it is exactly the {} state instead", other.0)
    } else {
        "it is NEITHER (a mixture)".into()
    };
    Err(format!(
        "the site is not exactly the {} state; {verdict}.\n  differences from {}: {:#?}\n  differences from {}: {:#?}",
        want.0,
        want.0,
        diff(fp, want.1),
        other.0,
        diff(fp, other.1)
    ))
}

// ---------------------------------------------------------------------------------------------
// References: the old state, the new state and the step list of a successful run.

struct Reference {
    tpl: Tpl,
    /// The command that moves old → new (`apply BUNDLE` or `rollback ...`), without --root/--json.
    args: Vec<String>,
    old: Fingerprint,
    new: Fingerprint,
    /// `None` for a first install.
    old_version: Option<String>,
    new_version: String,
    steps: Vec<String>,
}

fn make_reference(tpl: Tpl, args: Vec<String>, command: &str, new_version: &str) -> Reference {
    let mut lease = Lease::acquire();
    let slot = lease.slot();
    let site = slot.restore(tpl);
    let old = normalised(tpl, fingerprint(&site));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = install(&site, &a, None, None);
    assert!(o.code() == Some(0), "the reference run failed:\n{o}");
    let new = normalised(tpl, fingerprint(&site));
    assert_ne!(old, new);
    assert_eq!(new.current.as_deref(), Some(format!("releases/{new_version}").as_str()));
    let history = read_history(&site);
    let rec = history
        .iter()
        .rev()
        .find(|r| r["command"] == command && r["outcome"] == "success")
        .expect("a success record in history");
    let steps: Vec<String> =
        rec["steps"].as_array().expect("steps").iter().map(|s| s["step"].as_str().unwrap().to_string()).collect();
    let old_version = old.current.clone().map(|c| c.trim_start_matches("releases/").to_string());
    Reference { tpl, args, old, new, old_version, new_version: new_version.into(), steps }
}

/// For a first install, "the old state" is "nothing installed": the empty layout directories the
/// installer creates (and `trust/`, which keeps the key given on the command line whatever happens)
/// do not count.
fn normalised(tpl: Tpl, mut fp: Fingerprint) -> Fingerprint {
    if tpl == Tpl::Empty {
        for d in ["backups", "data", "releases", "state", "store", "trust"] {
            fp.root_entries.remove(d);
        }
        // An undone first install may leave the empty store/ and store/wheels/ directories.
        if fp.store.values().all(|t| t.keys().all(|k| k == "wheels")) && fp.store.len() == 1 {
            fp.store.clear();
        }
    }
    fp
}

impl Reference {
    fn fingerprint(&self, site: &Path) -> Fingerprint {
        normalised(self.tpl, fingerprint(site))
    }
    fn service_started_old(&self, site: &Path) -> Result<(), String> {
        match &self.old_version {
            Some(v) => service_started(site, v),
            None => Ok(()),
        }
    }
}

/// A first install of 4.0.0 on an empty root.
fn clean_install_ref() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let w = world();
        let args = vec![
            "apply".into(),
            w.bundle("4.0.0").to_str().unwrap().to_string(),
            "--trust".into(),
            w.key.public_path.to_str().unwrap().to_string(),
        ];
        make_reference(Tpl::Empty, args, "apply", "4.0.0")
    })
}

fn apply_ref() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let b = world().bundle("4.0.0").to_str().unwrap().to_string();
        let r = make_reference(Tpl::V1, vec!["apply".into(), b], "apply", "4.0.0");
        let must_have = [
            "stage_release",
            "store_wheels",
            "create_venv",
            "install_wheels",
            "compile_bytecode",
            "write_config",
            "mark_complete",
            "pre_apply",
            "backup",
            "swap",
            "post_apply",
            "health_check",
            "commit",
        ];
        for s in must_have {
            assert!(r.steps.iter().any(|x| x == s), "the 1.0.0 → 4.0.0 journal has no step {s}: {:?}", r.steps);
        }
        // Every database step: both databases, 1.0 → 1.1 → 2.0 → 2.1 (client's 2.1 is a Python data
        // step, which the journal may name `…:up-data`).
        for db in ["client", "metadata"] {
            for v in ["1.1", "2.0", "2.1"] {
                step_named(&r, &format!("migrate:{db}:{v}:up"));
            }
        }
        assert_eq!(r.steps.iter().filter(|s| s.starts_with("migrate:")).count(), 6, "{:?}", r.steps);
        assert_eq!(r.steps.last().map(String::as_str), Some("commit"));
        r
    })
}

/// 4.0.0 → 3.0.0: code-only (same majors).
fn rollback_code_only_ref() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let r = make_reference(Tpl::V3to4, vec!["rollback".into(), "--to".into(), "3.0.0".into()], "rollback", "3.0.0");
        assert!(!r.steps.iter().any(|s| s.starts_with("migrate:") || s.starts_with("restore_data:")), "{:?}", r.steps);
        r
    })
}

/// 3.0.0 → 2.0.0 across a major: metadata's down script, client's pre-upgrade backup restored.
fn rollback_major_ref() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let args = ["rollback", "--to", "2.0.0", "--restore-data", "--yes"].map(String::from).to_vec();
        let r = make_reference(Tpl::V2to3, args, "rollback", "2.0.0");
        for s in [
            "pre_apply",
            "backup",
            "migrate:metadata:2.0:down",
            "restore_data:client",
            "swap",
            "post_apply",
            "health_check",
            "commit",
        ] {
            assert!(
                r.steps.iter().any(|x| x == s),
                "the 3.0.0 → 2.0.0 rollback journal has no step {s}: {:?}",
                r.steps
            );
        }
        r
    })
}

/// The journal's name of the step `prefix` names (`migrate:client:2.1:up` may be `…:up-data`).
fn step_named(r: &Reference, prefix: &str) -> String {
    let found: Vec<&String> = r
        .steps
        .iter()
        .filter(|s| *s == prefix || s.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('-')))
        .collect();
    assert_eq!(found.len(), 1, "expected one step {prefix}(-…) in {:?}", r.steps);
    found[0].clone()
}

fn read_history(site: &Path) -> Vec<Value> {
    std::fs::read_to_string(site.join("state/history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The cases.

#[derive(Debug, Clone)]
enum Fault {
    /// BUNDLE_INSTALL_TEST_FAIL=step.
    Fail(String),
    /// BUNDLE_INSTALL_TEST_KILL=step:when.
    Kill(String, &'static str),
    /// A failing step and a kill while undoing: FAIL=fail, KILL=undo:<step>:<when>.
    FailThenKillUndo { fail: String, undo: String, when: &'static str },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Fail(s) => write!(f, "FAIL {s}"),
            Fault::Kill(s, w) => write!(f, "KILL {s}:{w}"),
            Fault::FailThenKillUndo { fail, undo, when } => write!(f, "FAIL {fail} + KILL undo:{undo}:{when}"),
        }
    }
}

/// What a case checks after the site is back to old or new: the journal is gone, nothing is left in
/// staging, and an undone run removed its backup.
/// `run_id` is the interrupted run: a completed one may add its own backup, nothing else.
fn after_recovery_checks_of(
    site: &Path,
    slot_backups: &BTreeSet<String>,
    undone: bool,
    run_id: &str,
) -> Result<(), String> {
    after_recovery_checks(site, slot_backups, undone)?;
    let b = entries(&site.join("backups"));
    let extra: Vec<&String> = b.difference(slot_backups).filter(|x| x.as_str() != run_id).collect();
    if !slot_backups.is_subset(&b) || !extra.is_empty() {
        return Err(format!(
            "backups/ is {b:?}: the template had {slot_backups:?} and run {run_id} may add only its own"
        ));
    }
    Ok(())
}

fn after_recovery_checks(site: &Path, slot_backups: &BTreeSet<String>, undone: bool) -> Result<(), String> {
    staging_empty(site)?;
    after_run_checks(site, slot_backups, undone)
}

fn staging_empty(site: &Path) -> Result<(), String> {
    let staging = entries(&site.join("state/staging"));
    if !staging.is_empty() {
        return Err(format!("state/staging/ still holds {staging:?} (a verified payload left behind)"));
    }
    Ok(())
}

/// [`after_recovery_checks`] but `state/staging/`.
fn after_run_checks(site: &Path, slot_backups: &BTreeSet<String>, undone: bool) -> Result<(), String> {
    if site.join("state/journal.json").exists() {
        return Err("state/journal.json is still there".into());
    }
    if undone {
        let b = entries(&site.join("backups"));
        if &b != slot_backups {
            return Err(format!(
                "backups/ is {b:?}, the template had {slot_backups:?}: the undone run left a backup behind"
            ));
        }
    }
    Ok(())
}

/// The service is left started on `version`: in `hooks.log` (each hook appends a line), the last
/// stop/start line is a start (`post_apply`) of `version`.
fn service_started(site: &Path, version: &str) -> Result<(), String> {
    let log = std::fs::read_to_string(site.join("hooks.log")).unwrap_or_default();
    let last = log.lines().rev().find(|l| l.starts_with("pre_apply") || l.starts_with("post_apply"));
    match last {
        Some(l) if l.starts_with("post_apply") && l.ends_with(&format!("to={version}")) => Ok(()),
        _ => Err(format!(
            "the service is not left started on {version}: the last stop/start hook was {last:?}; hooks.log:\n{log}"
        )),
    }
}

/// The site must run: `fieldlog show` of `version`, and `check` says ok.
fn site_runs(site: &Path, version: &str) -> Result<(), String> {
    service_started(site, version)?;
    let show = fieldlog(site, &["show"]);
    expect_code(&show, 0, "fieldlog show")?;
    if show.stdout.lines().next() != Some(&format!("fieldlog {version}")) {
        return Err(format!("fieldlog show is not {version}:\n{show}"));
    }
    let check = install(site, &["check"], None, None);
    expect_code(&check, 0, "bundle-install check")
}

/// One case of a journaled command (apply or rollback) of `reference`, stopped by `fault`.
fn journal_case(slot: &mut Slot, r: &Reference, fault: &Fault) -> Result<(), String> {
    let site = slot.restore(r.tpl);
    let before = r.fingerprint(&site);
    same(&before, ("old (restored template)", &r.old), ("new", &r.new))
        .map_err(|e| format!("restoring the template is unsound: {e}"))?;
    let template_backups = slot.backups[&r.tpl].clone();
    let args: Vec<&str> = r.args.iter().map(String::as_str).collect();
    let history_len = read_history(&site).len();
    let old = ("old", &r.old);
    let new = ("new", &r.new);

    let (fail, kill) = match fault {
        Fault::Fail(s) => (Some(s.clone()), None),
        Fault::Kill(s, w) => (None, Some(format!("{s}:{w}"))),
        Fault::FailThenKillUndo { fail, undo, when } => (Some(fail.clone()), Some(format!("undo:{undo}:{when}"))),
    };
    let o = install(&site, &args, fail.as_deref(), kill.as_deref());

    if let Fault::Fail(step) = fault {
        if step == "commit" {
            // Past the point of no return a failure is finished, never undone: exit 5 with the
            // journal kept, and `recover` completes the run.
            expect_code(&o, 5, "the run whose commit failed")?;
            let j = o.json().ok_or_else(|| format!("no JSON:\n{o}"))?;
            if j["error"]["kind"] != "commit_failed" {
                return Err(format!("expected error kind commit_failed:\n{o}"));
            }
            if !site.join("state/journal.json").exists() {
                return Err("a failed commit must leave its journal for recover".into());
            }
            let rec = install(&site, &["recover"], None, None);
            expect_code(&rec, 0, "recover after a failed commit")?;
            let rj = rec.json().ok_or_else(|| format!("recover printed no JSON:\n{rec}"))?;
            if rj["recovery"]["recovered"] != "completed" {
                return Err(format!("recover should complete the committed run:\n{rec}"));
            }
            same(&r.fingerprint(&site), new, old).map_err(|e| format!("after recover: {e}"))?;
            site_runs(&site, &r.new_version)?;
            return Ok(());
        }
        expect_code(&o, 1, "the failed run")?;
        let j = o.json().ok_or_else(|| format!("no JSON:\n{o}"))?;
        if j["ok"] != false || j["error"]["kind"] != "injected_failure" {
            return Err(format!("expected error kind injected_failure:\n{o}"));
        }
        // Checked last (the next command cleans it), so that the rest is checked too.
        let staging_left = staging_empty(&site).map_err(|e| format!("after the failure: {e}"));
        same(&r.fingerprint(&site), old, new).map_err(|e| format!("after the failure: {e}"))?;
        r.service_started_old(&site).map_err(|e| format!("after the failure: {e}"))?;
        after_run_checks(&site, &template_backups, true).map_err(|e| format!("after the failure: {e}"))?;
        let h = read_history(&site);
        let rec = h.get(history_len).ok_or_else(|| "the failure was not recorded in history".to_string())?;
        if rec["outcome"] != "rolled_back" || rec["command"] != r.args[0] {
            return Err(format!("history records {rec} for the failed run, expected outcome rolled_back"));
        }
        if !rec["error"]["message"].as_str().unwrap_or("").contains(step.as_str()) {
            return Err(format!("the history record does not name the failed step {step}: {rec}"));
        }
        // A later run works.
        let again = install(&site, &args, None, None);
        expect_code(&again, 0, "running again after the failure")?;
        same(&r.fingerprint(&site), new, old).map_err(|e| format!("after running again: {e}"))?;
        site_runs(&site, &r.new_version)?;
        return staging_left;
    }

    if !o.killed_by_sigkill() {
        return Err(format!("expected death by SIGKILL:\n{o}"));
    }
    if !site.join("state/journal.json").exists() {
        return Err("killed, but no journal was left for recover".into());
    }
    let journal: Value = serde_json::from_slice(&std::fs::read(site.join("state/journal.json")).unwrap())
        .map_err(|e| format!("journal unreadable: {e}"))?;
    let run_id = journal["id"].as_str().unwrap_or_default().to_string();
    // The rule: completed iff the commit step had started. A failed commit step whose undo was
    // killed is a corner of that rule (the run had started its commit, then decided to undo): either
    // verdict is accepted, but the site must then be exactly what recover says.
    let expected = match fault {
        Fault::Kill(s, _) => Some(s == "commit"),
        Fault::FailThenKillUndo { fail, .. } if fail == "commit" => None,
        _ => Some(false),
    };

    let rec = install(&site, &["recover"], None, None);
    expect_code(&rec, 0, "recover")?;
    let rj = rec.json().ok_or_else(|| format!("recover printed no JSON:\n{rec}"))?;
    let said = rj["recovery"]["recovered"].as_str().unwrap_or_default().to_string();
    let completes = expected.unwrap_or(said == "completed");
    let want = if completes { "completed" } else { "undone" };
    if said != want || rj["recovery"]["id"] != run_id.as_str() {
        return Err(format!("recover should say {want} for run {run_id}:\n{rec}"));
    }
    let fp = r.fingerprint(&site);
    if completes {
        same(&fp, new, old).map_err(|e| format!("after recover (completed): {e}"))?;
        service_started(&site, &r.new_version).map_err(|e| format!("after recover (completed): {e}"))?;
    } else {
        same(&fp, old, new).map_err(|e| format!("after recover (undone): {e}"))?;
        r.service_started_old(&site).map_err(|e| format!("after recover (undone): {e}"))?;
    }
    after_recovery_checks_of(&site, &template_backups, !completes, &run_id)
        .map_err(|e| format!("after recover: {e}"))?;
    let h = read_history(&site);
    let outcomes: Vec<&Value> = h.iter().filter(|x| x["id"] == run_id.as_str()).map(|x| &x["outcome"]).collect();
    let ok = if completes { outcomes == ["success"] } else { outcomes == ["rolled_back"] };
    if !ok {
        return Err(format!(
            "history of run {run_id} is {outcomes:?}, expected exactly one {}",
            if completes { "success" } else { "rolled_back" }
        ));
    }

    // A later run works and ends exactly on the new state.
    if !completes {
        let again = install(&site, &args, None, None);
        expect_code(&again, 0, "running again after recover")?;
    } else if r.args[0] == "apply" {
        let again = install(&site, &args, None, None);
        expect_code(&again, 0, "apply after a completed recovery (nothing to do)")?;
        if again.json().map(|j| j["applied"]["changed"].clone()) != Some(Value::Bool(false)) {
            return Err(format!("apply after a completed recovery should change nothing:\n{again}"));
        }
    }
    same(&r.fingerprint(&site), new, old).map_err(|e| format!("after the later run: {e}"))?;
    site_runs(&site, &r.new_version)
}

/// A case's body: Ok, or what went wrong.
type CaseFn = Box<dyn Fn(&mut Slot) -> Result<(), String> + Send + Sync>;
/// A finished case: its index, outcome and duration.
type Finished = (usize, Result<(), String>, Duration);

struct Case {
    name: String,
    run: CaseFn,
}

fn case(name: impl Into<String>, f: impl Fn(&mut Slot) -> Result<(), String> + Send + Sync + 'static) -> Case {
    Case { name: name.into(), run: Box::new(f) }
}

/// Runs every case (in parallel, one slot each), then fails listing every failed case.
fn run_all(title: &str, cases: Vec<Case>) {
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Finished>> = Mutex::new(Vec::new());
    let workers = pool().max.min(cases.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let mut lease = Lease::acquire();
                let t = Instant::now();
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| (c.run)(lease.slot()))).unwrap_or_else(|p| {
                    Err(format!(
                        "panicked: {}",
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    ))
                });
                drop(lease);
                eprintln!(
                    "[{title}] {} {} ({:.1}s)",
                    if r.is_ok() { "ok  " } else { "FAIL" },
                    c.name,
                    t.elapsed().as_secs_f64()
                );
                results.lock().unwrap().push((i, r, t.elapsed()));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(i, r, _)| r.as_ref().err().map(|e| format!("=== {}\n{e}", cases[*i].name)))
        .collect();
    eprintln!("[{title}] {} case(s), {} failed, {:.1}s", cases.len(), failed.len(), start.elapsed().as_secs_f64());
    assert!(
        failed.is_empty(),
        "{title}: {} of {} case(s) failed:\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}

fn journal_cases(r: &'static Reference, label: &str, faults: Vec<Fault>) -> Vec<Case> {
    faults.into_iter().map(|f| case(format!("{label}: {f}"), move |slot| journal_case(slot, r, &f))).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn apply_fails_at_every_step_and_is_undone() {
    let r = apply_ref();
    let faults = r.steps.iter().map(|s| Fault::Fail(s.clone())).collect();
    run_all("apply FAIL", journal_cases(r, "apply 1.0.0→4.0.0", faults));
}

#[test]
fn apply_killed_before_every_step_recovers_to_old_or_new() {
    let r = apply_ref();
    let faults = r.steps.iter().map(|s| Fault::Kill(s.clone(), "before")).collect();
    run_all("apply KILL before", journal_cases(r, "apply 1.0.0→4.0.0", faults));
}

#[test]
fn apply_killed_after_every_step_recovers_to_old_or_new() {
    let r = apply_ref();
    let faults = r.steps.iter().map(|s| Fault::Kill(s.clone(), "after")).collect();
    run_all("apply KILL after", journal_cases(r, "apply 1.0.0→4.0.0", faults));
}

#[test]
fn apply_killed_while_undoing_a_failure_recovers_to_old() {
    let r = apply_ref();
    let mut faults = vec![
        // The brief's example: a failed swap, killed while restoring a database.
        Fault::FailThenKillUndo { fail: "swap".into(), undo: step_named(r, "migrate:client:2.1:up"), when: "before" },
        Fault::FailThenKillUndo { fail: "swap".into(), undo: step_named(r, "migrate:metadata:2.1:up"), when: "after" },
    ];
    // A failed health check (every other step started): killed around the undo of each kind of step.
    for (undo, when) in [
        ("post_apply", "after"),
        ("swap", "before"),
        ("swap", "after"),
        ("migrate:metadata:2.1:up", "after"),
        ("migrate:metadata:2.0:up", "before"),
        ("migrate:client:2.0:up", "after"),
        ("backup", "before"),
        ("backup", "after"),
        ("pre_apply", "after"),
        ("stage_release", "before"),
        ("stage_release", "after"),
    ] {
        faults.push(Fault::FailThenKillUndo { fail: "health_check".into(), undo: step_named(r, undo), when });
    }
    // A failing commit step is not undone (it is finished by recover), so there is no undo of it
    // to kill; `Fault::Fail("commit")` in `all_faults` covers it.
    run_all("apply undo KILL", journal_cases(r, "apply 1.0.0→4.0.0", faults));
}

/// `recover` itself killed: while undoing, and while completing a committed run.
#[test]
fn recover_killed_then_recovered_again() {
    let r = apply_ref();
    let mut cases = Vec::new();
    let client_21 = step_named(r, "migrate:client:2.1:up");
    for (kill, recover_kill, completes) in [
        ("swap:after".to_string(), format!("undo:{client_21}:after"), false),
        ("migrate:metadata:2.0:up:after".into(), "undo:backup:after".into(), false),
        ("health_check:after".into(), "undo:stage_release:before".into(), false),
        ("commit:before".into(), "commit:before".into(), true),
        ("commit:before".into(), "commit:after".into(), true),
    ] {
        cases.push(case(format!("apply KILL {kill}, recover KILL {recover_kill}"), move |slot| {
            let site = slot.restore(r.tpl);
            let o = apply(&site, "4.0.0", None, Some(&kill));
            if !o.killed_by_sigkill() {
                return Err(format!("apply should have been killed:\n{o}"));
            }
            let o = install(&site, &["recover"], None, Some(&recover_kill));
            if !o.killed_by_sigkill() {
                return Err(format!("recover should have been killed:\n{o}"));
            }
            let o = install(&site, &["recover"], None, None);
            expect_code(&o, 0, "the second recover")?;
            let want = if completes { "completed" } else { "undone" };
            if o.json().map(|j| j["recovery"]["recovered"].clone()) != Some(Value::from(want)) {
                return Err(format!("the second recover should say {want}:\n{o}"));
            }
            let (a, b) =
                if completes { (("new", &r.new), ("old", &r.old)) } else { (("old", &r.old), ("new", &r.new)) };
            same(&fingerprint(&site), a, b)?;
            service_started(&site, if completes { "4.0.0" } else { "1.0.0" })?;
            after_recovery_checks(&site, &slot.backups[&r.tpl], !completes)?;
            let id_count = read_history(&site)
                .iter()
                .filter(|x| x["outcome"] == "success" && x["command"] == "apply" && x["to"] == "4.0.0")
                .count();
            if completes && id_count != 1 {
                return Err(format!("history holds {id_count} success records of the 1.0.0→4.0.0 apply, expected 1"));
            }
            expect_code(&apply(&site, "4.0.0", None, None), 0, "apply afterwards")?;
            same(&fingerprint(&site), ("new", &r.new), ("old", &r.old))?;
            site_runs(&site, "4.0.0")
        }));
    }
    run_all("recover KILL", cases);
}

/// Any command that opens the site recovers first: `status` and `apply` report `recovered`.
#[test]
fn other_commands_recover_first() {
    let r = apply_ref();
    let mut cases = Vec::new();
    for (kill, completes) in [("migrate:metadata:2.0:up:after", false), ("swap:after", false), ("commit:before", true)]
    {
        cases.push(case(format!("KILL {kill}, then status"), move |slot| {
            let site = slot.restore(r.tpl);
            let o = apply(&site, "4.0.0", None, Some(kill));
            if !o.killed_by_sigkill() {
                return Err(format!("apply should have been killed:\n{o}"));
            }
            let st = install(&site, &["status"], None, None);
            expect_code(&st, 0, "status after a kill")?;
            let j = st.json().ok_or_else(|| format!("no JSON:\n{st}"))?;
            let want = if completes { "completed" } else { "undone" };
            if j["recovered"]["recovered"] != want {
                return Err(format!("status should report recovered = {want}:\n{st}"));
            }
            let version = if completes { "4.0.0" } else { "1.0.0" };
            if j["status"]["current"] != version {
                return Err(format!("status should show {version} current:\n{st}"));
            }
            let (a, b) =
                if completes { (("new", &r.new), ("old", &r.old)) } else { (("old", &r.old), ("new", &r.new)) };
            same(&fingerprint(&site), a, b)?;
            service_started(&site, if completes { "4.0.0" } else { "1.0.0" })?;
            after_recovery_checks(&site, &slot.backups[&r.tpl], !completes)?;
            // And a second status has nothing left to recover.
            let st2 = install(&site, &["status"], None, None);
            if st2.json().map(|j| j["recovered"]["recovered"].clone()) != Some(Value::from("nothing")) {
                return Err(format!("a second status should recover nothing:\n{st2}"));
            }
            Ok(())
        }));
    }
    // Commands whose JSON has no `recovered`: the site must be recovered (journal gone, old state)
    // before they look at it.
    for (kill, command) in
        [("swap:after", "check"), ("migrate:client:2.0:up:after", "plan"), ("post_apply:after", "history")]
    {
        cases.push(case(format!("KILL {kill}, then {command}"), move |slot| {
            let site = slot.restore(r.tpl);
            let o = apply(&site, "4.0.0", None, Some(kill));
            if !o.killed_by_sigkill() {
                return Err(format!("apply should have been killed:\n{o}"));
            }
            let bundle = world().bundle("4.0.0").to_str().unwrap().to_string();
            let args: Vec<&str> = if command == "plan" { vec!["plan", &bundle] } else { vec![command] };
            let c = install(&site, &args, None, None);
            expect_code(&c, 0, command)?;
            let j = c.json().ok_or_else(|| format!("no JSON:\n{c}"))?;
            match command {
                "check" if j["current"] != "1.0.0" => {
                    return Err(format!("check should look at the recovered site (1.0.0):\n{c}"))
                }
                "plan" if j["plan"]["from"] != "1.0.0" || j["plan"]["kind"] != "upgrade" => {
                    return Err(format!("plan should start from the recovered site (an upgrade from 1.0.0):\n{c}"))
                }
                _ => {}
            }
            same(&fingerprint(&site), ("old", &r.old), ("new", &r.new))?;
            after_recovery_checks(&site, &slot.backups[&r.tpl], true)?;
            service_started(&site, "1.0.0")
        }));
    }
    cases.push(case("KILL swap:after, then apply directly", move |slot| {
        let site = slot.restore(r.tpl);
        let o = apply(&site, "4.0.0", None, Some("swap:after"));
        if !o.killed_by_sigkill() {
            return Err(format!("apply should have been killed:\n{o}"));
        }
        let a = apply(&site, "4.0.0", None, None);
        expect_code(&a, 0, "apply after a kill")?;
        let j = a.json().ok_or_else(|| format!("no JSON:\n{a}"))?;
        if j["recovered"]["recovered"] != "undone" || j["applied"]["changed"] != true {
            return Err(format!("apply should report the undone run and then apply:\n{a}"));
        }
        same(&fingerprint(&site), ("new", &r.new), ("old", &r.old))?;
        site_runs(&site, "4.0.0")
    }));
    run_all("recover first", cases);
}

fn all_faults(steps: &[String]) -> Vec<Fault> {
    let mut f = Vec::new();
    for s in steps {
        f.push(Fault::Fail(s.clone()));
        f.push(Fault::Kill(s.clone(), "before"));
        f.push(Fault::Kill(s.clone(), "after"));
    }
    f
}

#[test]
fn rollback_code_only_failed_or_killed_at_every_step() {
    let r = rollback_code_only_ref();
    run_all("rollback 4→3", journal_cases(r, "rollback 4.0.0→3.0.0 (code only)", all_faults(&r.steps)));
}

#[test]
fn rollback_across_a_major_failed_or_killed_at_every_step() {
    let r = rollback_major_ref();
    let mut faults = all_faults(&r.steps);
    // A failed health check, killed while undoing the data steps.
    for (undo, when) in [
        ("restore_data:client", "before"),
        ("restore_data:client", "after"),
        ("migrate:metadata:2.0:down", "before"),
        ("migrate:metadata:2.0:down", "after"),
        ("backup", "after"),
        ("swap", "after"),
    ] {
        faults.push(Fault::FailThenKillUndo { fail: "health_check".into(), undo: undo.into(), when });
    }
    run_all("rollback 3→2", journal_cases(r, "rollback 3.0.0→2.0.0 (down + restore)", faults));
}

/// The fingerprint is worth something: it tells old from new, and sees a mixture.
#[test]
fn fingerprint_tells_old_new_and_a_mixture() {
    let r = apply_ref();
    let mut lease = Lease::acquire();
    let slot = lease.slot();
    let site = slot.restore(Tpl::V1);
    assert_eq!(fingerprint(&site), r.old);
    let old_client = std::fs::read(site.join("data/client.db")).unwrap();
    let o = apply(&site, "4.0.0", None, None);
    assert_eq!(o.code(), Some(0), "{o}");
    assert_eq!(fingerprint(&site), r.new, "{:#?}", diff(&fingerprint(&site), &r.new));
    // One database back on the old data: neither state.
    let new_client = std::fs::read(site.join("data/client.db")).unwrap();
    std::fs::write(site.join("data/client.db"), &old_client).unwrap();
    let fp = fingerprint(&site);
    assert!(fp != r.old && fp != r.new, "a mixed site went unnoticed");
    std::fs::write(site.join("data/client.db"), &new_client).unwrap();
    assert_eq!(fingerprint(&site), r.new);
    // `current` pointing back at the old release with everything else new: neither.
    std::os::unix::fs::symlink("releases/1.0.0", site.join("current.tmp")).unwrap();
    std::fs::rename(site.join("current.tmp"), site.join("current")).unwrap();
    let fp = fingerprint(&site);
    assert!(fp != r.old && fp != r.new, "a mixed site went unnoticed");
    // One byte more in one file of the new release's tree: noticed.
    let victim = walkdir::WalkDir::new(site.join("releases/4.0.0/venv"))
        .into_iter()
        .flatten()
        .find(|e| e.file_name() == "release.py")
        .expect("fieldlog/release.py in the 4.0.0 venv")
        .into_path();
    let mut data = std::fs::read(&victim).unwrap();
    data.push(b'\n');
    std::fs::write(&victim, data).unwrap();
    let d = diff(&fingerprint(&site), &r.new);
    assert!(d.iter().any(|x| x.starts_with("release 4.0.0")), "{d:#?}");
}

/// A first install (nothing on the site) failed or killed: recover leaves nothing installed, and a
/// later apply installs exactly 4.0.0.
#[test]
fn clean_install_killed_after_every_step() {
    let r = clean_install_ref();
    let mut faults: Vec<Fault> = r.steps.iter().map(|s| Fault::Kill(s.clone(), "after")).collect();
    faults.push(Fault::Kill("commit".into(), "before"));
    for s in ["stage_release", "backup", "swap", "health_check"] {
        faults.push(Fault::Fail(s.into()));
    }
    faults.push(Fault::FailThenKillUndo {
        fail: "health_check".into(),
        undo: step_named(r, "migrate:client:1.0:up"),
        when: "after",
    });
    run_all("clean install", journal_cases(r, "first install of 4.0.0", faults));
}

/// Issue 13 item 6, as an invariant of this suite: whatever a validly signed bundle contains, a
/// failed apply never leaves a site that `recover` cannot finish. Bundles whose SQLite `path`
/// points into the installer's own files (the swap target `current/`, `trust/`, `releases/`,
/// `state/`, `backups/`, `site.yaml`) used to make the swap or the undo fail and leave the site
/// stuck (exit 5, `recover` unable to finish). Each must now fail without exit 5, `recover` must
/// exit 0, the site must be exactly the old release, and the real 4.0.0 must then install.
#[test]
fn hostile_signed_manifests_never_leave_a_site_recover_cannot_finish() {
    let r = apply_ref();
    let dir = scratch_dir("crash-hostile");
    let paths = [
        "current/client.db",
        "trust/client.pub",
        "releases/4.0.0/x.db",
        "state/site.json",
        "backups/x.db",
        "site.yaml",
    ];
    let cases = paths
        .iter()
        .map(|p| {
            let mut parts = test_support::Parts::read(world().bundle("4.0.0"));
            let mut m = parts.parsed();
            m.databases.iter_mut().find(|d| d.name == "client").unwrap().path = p.to_string();
            parts.set_manifest(&m, &world().key.secret());
            let bundle = dir.join(format!("db-at-{}.bundle.tar.gz", p.replace('/', "_")));
            std::fs::write(&bundle, parts.bundle().to_bytes()).unwrap();
            case(format!("db path {p}"), move |slot| {
                let site = slot.restore(r.tpl);
                let o = install(&site, &["apply", bundle.to_str().unwrap()], None, None);
                if o.code() == Some(5) || o.code() == Some(0) || o.code().is_none() {
                    return Err(format!("a hostile manifest must fail and be put back (not exit 0 or 5):\n{o}"));
                }
                let rec = install(&site, &["recover"], None, None);
                expect_code(&rec, 0, "recover after the hostile bundle")?;
                same(&r.fingerprint(&site), ("old", &r.old), ("new", &r.new))
                    .map_err(|e| format!("after the hostile bundle: {e}"))?;
                let again = apply(&site, "4.0.0", None, None);
                expect_code(&again, 0, "the real 4.0.0 after the hostile bundle")?;
                same(&r.fingerprint(&site), ("new", &r.new), ("old", &r.old))
                    .map_err(|e| format!("after the real 4.0.0: {e}"))?;
                site_runs(&site, &r.new_version)
            })
        })
        .collect();
    run_all("hostile manifests", cases);
}
