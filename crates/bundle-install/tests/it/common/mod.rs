//! Helpers shared by the end-to-end modules of this test binary (`apply_e2e`, `rollback_e2e`, `store`, …).
//!
//! Everything here drives the real binaries (`bundle-build`, `bundle-install`) and the fixture app
//! (`fieldlog`) installed by them. Built on `test-support`; what it lacks lives here:
//! the four fixture bundles built once per test process, spec variants (edited copies of a fixture
//! spec directory, re-versioned or tampered wheels), site copies that stay runnable (venv scripts
//! carry the site's absolute path), logical SQLite dumps, and "the site is as it was" states.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use test_support::{
    copy_spec, diff_snapshots, fixture_specs, run, scratch_dir, snapshot, tool, KeyPair, Run, Snapshot,
};

pub const VERSIONS: [&str; 4] = ["1.0.0", "2.0.0", "3.0.0", "4.0.0"];

/// The signing key and the four fixture bundles, built once per test process.
pub struct Fixture {
    pub key: KeyPair,
    pub bundles: BTreeMap<&'static str, PathBuf>,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = scratch_dir("bundles");
        let key = KeyPair::keygen(&dir.join("vendor"));
        let specs = fixture_specs();
        let out = dir.join("out");
        let bundles = std::thread::scope(|s| {
            let handles: Vec<_> = VERSIONS
                .iter()
                .map(|v| {
                    let (key, out) = (&key, &out);
                    s.spawn(move || (*v, build_spec(&specs.join(v).join("spec.yaml"), key, out)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("bundle build thread")).collect()
        });
        Fixture { key, bundles }
    })
}

/// The fixture bundle of release `version`.
pub fn bundle(version: &str) -> &'static Path {
    fixture().bundles.get(version).unwrap_or_else(|| panic!("no fixture bundle {version}"))
}

pub fn pubkey() -> &'static Path {
    &fixture().key.public_path
}

/// This test binary run again for the single test `name` of `module` (the caller's
/// `module_path!()`), for tests that need a child process of their own (killed mid-step, or with its
/// own environment). libtest names a test by its path inside the test crate without the crate's
/// name (`db_postgres::pg_child_…`), and `--exact` matches that whole name.
pub fn rerun_test(module: &str, name: &str) -> Command {
    let path = module.split_once("::").map_or(name.to_string(), |(_crate, inner)| format!("{inner}::{name}"));
    let mut c = Command::new(std::env::current_exe().expect("the test executable's path"));
    c.arg("--exact").arg(path);
    c
}

/// `bundle-build build SPEC --key KEY --out OUT --json` (SOURCE_DATE_EPOCH fixed); the bundle path.
pub fn build_spec(spec: &Path, key: &KeyPair, out: &Path) -> PathBuf {
    let r = run(tool("bundle-build")
        .arg("build")
        .arg(spec)
        .arg("--key")
        .arg(&key.secret_path)
        .arg("--out")
        .arg(out)
        .arg("--json")
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert_eq!(r.code, Some(0), "bundle-build build {} failed:\n{r}", spec.display());
    let p = PathBuf::from(r.json()["bundle"].as_str().unwrap_or_else(|| panic!("no `bundle` in:\n{r}")));
    assert!(p.is_file(), "{} not written:\n{r}", p.display());
    p
}

/// A copy of the fixture spec directory of `base`, changed by `edit` (which gets the directory), built
/// and signed with the fixture key. Returns the bundle.
pub fn variant(name: &str, base: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = scratch_dir(&format!("variant-{name}"));
    let spec_dir = dir.join("spec");
    copy_spec(base, &spec_dir);
    edit(&spec_dir);
    build_spec(&spec_dir.join("spec.yaml"), &fixture().key, &dir.join("out"))
}

/// Replaces the top-level `key: ...` line of a spec.yaml.
pub fn set_spec_field(spec_dir: &Path, key: &str, value: &str) {
    let path = spec_dir.join("spec.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("{key}:");
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                format!("{key}: {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "spec.yaml has no top-level `{key}`:\n{text}");
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
}

const WHEEL_TOOL: &str = r#"
import base64, csv, hashlib, io, sys, zipfile
src, dst, new_version, mode = sys.argv[1:5]
zin = zipfile.ZipFile(src)
infos = zin.infolist()
old_di = next(i.filename.split("/")[0] for i in infos if i.filename.endswith(".dist-info/METADATA"))
name, old_version = old_di[: -len(".dist-info")].rsplit("-", 1)
version = new_version or old_version
new_di = f"{name}-{version}.dist-info"
entries = []
for i in infos:
    data = zin.read(i)
    fn = i.filename
    if fn.startswith(old_di + "/"):
        fn = new_di + fn[len(old_di):]
    if fn == new_di + "/METADATA":
        data = data.replace(f"Version: {old_version}\n".encode(), f"Version: {version}\n".encode())
    if fn == f"{name}/release.py":
        data = data.replace(f'VERSION = "{old_version}"'.encode(), f'VERSION = "{version}"'.encode())
    entries.append([fn, i, data])
def h(d):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=").decode()
rec = io.StringIO()
w = csv.writer(rec, lineterminator="\n")
for fn, i, data in entries:
    if fn != new_di + "/RECORD":
        w.writerow([fn, h(data), len(data)])
w.writerow([new_di + "/RECORD", "", ""])
for e in entries:
    if e[0] == new_di + "/RECORD":
        e[2] = rec.getvalue().encode()
if mode == "corrupt":
    hit = [e for e in entries if e[0] == f"{name}/cli.py"]
    assert hit, "no cli.py to corrupt"
    hit[0][2] += b"\n# changed after RECORD was written\n"
with zipfile.ZipFile(dst, "w") as out:
    for fn, i, data in entries:
        zi = zipfile.ZipInfo(fn, date_time=i.date_time)
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.create_system = i.create_system
        zi.external_attr = i.external_attr
        out.writestr(zi, data)
print(f"{name}-{version}-py3-none-any.whl")
"#;

fn app_wheel(spec_dir: &Path) -> PathBuf {
    let wheelhouse = spec_dir.join("wheelhouse");
    std::fs::read_dir(&wheelhouse)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("fieldlog-"))
        .unwrap_or_else(|| panic!("no fieldlog wheel in {}", wheelhouse.display()))
}

fn wheel_tool(spec_dir: &Path, version: &str, mode: &str) {
    let src = app_wheel(spec_dir);
    let tmp = spec_dir.join("rewritten.whl.tmp");
    let r = run(Command::new("python3").arg("-c").arg(WHEEL_TOOL).arg(&src).arg(&tmp).arg(version).arg(mode));
    r.expect_ok();
    std::fs::remove_file(&src).unwrap();
    std::fs::rename(&tmp, spec_dir.join("wheelhouse").join(r.stdout.trim())).unwrap();
}

/// Rebuilds the spec's app wheel as release `version` (dist-info name, METADATA, RECORD, file name,
/// and `fieldlog/release.py`'s VERSION), and sets the spec's `version`.
pub fn reversion(spec_dir: &Path, version: &str) {
    wheel_tool(spec_dir, version, "reversion");
    set_spec_field(spec_dir, "version", version);
}

/// Changes `fieldlog/cli.py` inside the app wheel after its RECORD was written (a hash mismatch).
pub fn corrupt_app_wheel(spec_dir: &Path) {
    wheel_tool(spec_dir, "", "corrupt");
}

// ----- running things -----------------------------------------------------------------------------

/// `bundle-install ARGS...`
pub fn bi<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(tool("bundle-install").args(args))
}

fn has_trust(root: &Path) -> bool {
    std::fs::read_dir(root.join("trust"))
        .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "pub")))
        .unwrap_or(false)
}

/// `bundle-install apply BUNDLE --root ROOT --json [--trust KEY on a first install] EXTRA...`
pub fn apply(root: &Path, bundle: &Path, extra: &[&str]) -> Run {
    let mut c = tool("bundle-install");
    c.arg("apply").arg(bundle).arg("--root").arg(root).arg("--json");
    if !has_trust(root) {
        c.arg("--trust").arg(pubkey());
    }
    c.args(extra);
    run(&mut c)
}

/// `apply`, asserting success.
#[track_caller]
pub fn apply_ok(root: &Path, bundle: &Path) -> Value {
    let r = apply(root, bundle, &[]);
    assert_eq!(r.code, Some(0), "apply failed:\n{r}");
    let j = r.json();
    assert_eq!(j["ok"], true, "{r}");
    j
}

/// `bundle-install status --root ROOT --json`, asserting success; the `status` object.
#[track_caller]
pub fn status(root: &Path) -> Value {
    let r = bi([OsStr::new("status"), OsStr::new("--root"), root.as_os_str(), OsStr::new("--json")]);
    assert_eq!(r.code, Some(0), "status failed:\n{r}");
    r.json()["status"].clone()
}

/// `{db name: version}` from `status --json`, and whether each is compatible.
pub fn db_versions(st: &Value) -> BTreeMap<String, (String, bool)> {
    st["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("no databases in status: {st}"))
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                (d["version"].as_str().unwrap().to_string(), d["compatible"].as_bool().unwrap()),
            )
        })
        .collect()
}

/// `bundle-install check --root ROOT --json`.
pub fn check(root: &Path) -> Run {
    bi([OsStr::new("check"), OsStr::new("--root"), root.as_os_str(), OsStr::new("--json")])
}

/// `bundle-install history --root ROOT --json`: the records.
#[track_caller]
pub fn history(root: &Path) -> Vec<Value> {
    let r = bi([OsStr::new("history"), OsStr::new("--root"), root.as_os_str(), OsStr::new("--json")]);
    assert_eq!(r.code, Some(0), "history failed:\n{r}");
    r.json()["history"].as_array().unwrap_or_else(|| panic!("no history array:\n{r}")).clone()
}

/// Runs the installed app's console script: `ROOT/current/venv/bin/fieldlog ARGS...`.
pub fn fieldlog(root: &Path, args: &[&str]) -> Run {
    run(Command::new(root.join("current/venv/bin/fieldlog"))
        .args(args)
        .env_remove("FIELDLOG_ROOT")
        .env_remove("FIELDLOG_RELEASE_DIR"))
}

/// `fieldlog add-note TEXT` for each text, asserting success.
#[track_caller]
pub fn add_notes(root: &Path, texts: &[&str]) {
    for t in texts {
        let r = fieldlog(root, &["add-note", t, "--site", "ridge"]);
        assert_eq!(r.code, Some(0), "fieldlog add-note failed:\n{r}");
        assert!(r.stdout.starts_with("added note "), "{r}");
    }
}

/// `fieldlog show` as `{key: value}` (first line `fieldlog X` under key `fieldlog`).
#[track_caller]
pub fn show(root: &Path) -> BTreeMap<String, String> {
    let r = fieldlog(root, &["show"]);
    assert_eq!(r.code, Some(0), "fieldlog show failed:\n{r}");
    r.stdout
        .lines()
        .filter_map(|l| {
            if let Some(v) = l.strip_prefix("fieldlog ") {
                return Some(("fieldlog".to_string(), v.to_string()));
            }
            l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The lines of `ROOT/hooks.log` (empty when absent).
pub fn hooks_log(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("hooks.log")).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// Where `current` points (`None` when absent).
pub fn current(root: &Path) -> Option<PathBuf> {
    std::fs::read_link(root.join("current")).ok()
}

/// The JSON error of a failed `--json` run: (kind, message), asserting `ok: false` and the exit code.
#[track_caller]
pub fn expect_error(r: &Run, code: i32) -> (String, String) {
    assert_eq!(r.code, Some(code), "expected exit {code}:\n{r}");
    assert!(!r.panicked(), "panicked:\n{r}");
    let j = r.json();
    assert_eq!(j["ok"], false, "{r}");
    assert_eq!(j["error"]["exit_code"].as_i64(), Some(code as i64), "{r}");
    (
        j["error"]["kind"].as_str().unwrap_or_else(|| panic!("no error.kind:\n{r}")).to_string(),
        j["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message:\n{r}")).to_string(),
    )
}

// ----- sites ----------------------------------------------------------------------------------------

/// A fresh, not yet existing site root (absolute), inside this process's scratch directory.
pub fn new_root(name: &str) -> PathBuf {
    scratch_dir(name).join("site")
}

/// Copies a whole site (symlinks kept as symlinks, modes kept) to `dst`, then points the venvs'
/// absolute paths (console script shebangs, `pyvenv.cfg`) at the copy so it runs on its own.
pub fn copy_site(src: &Path, dst: &Path) {
    for entry in walkdir::WalkDir::new(src).follow_links(false).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(src).unwrap();
        let target = dst.join(rel);
        let t = entry.file_type();
        if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if t.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            let mode = entry.metadata().unwrap().permissions().mode();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
        } else if t.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
            // Keep mtimes: the venvs' timestamp-based .pyc must stay valid, or the first run of the
            // app in the copy would rewrite them inside the release trees.
            let meta = entry.metadata().unwrap();
            let times =
                std::fs::FileTimes::new().set_modified(meta.modified().unwrap()).set_accessed(meta.accessed().unwrap());
            std::fs::File::options().write(true).open(&target).unwrap().set_times(times).unwrap();
        }
    }
    let (from, to) = (src.to_string_lossy().into_owned(), dst.to_string_lossy().into_owned());
    let Ok(releases) = std::fs::read_dir(dst.join("releases")) else { return };
    for rel in releases.flatten() {
        let venv = rel.path().join("venv");
        let mut files = vec![venv.join("pyvenv.cfg")];
        if let Ok(bin) = std::fs::read_dir(venv.join("bin")) {
            files.extend(bin.flatten().filter(|e| e.file_type().unwrap().is_file()).map(|e| e.path()));
        }
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            if text.contains(&from) {
                let meta = std::fs::metadata(&f).unwrap();
                std::fs::write(&f, text.replace(&from, &to)).unwrap();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(meta.permissions().mode())).unwrap();
                let times = std::fs::FileTimes::new().set_modified(meta.modified().unwrap());
                std::fs::File::options().write(true).open(&f).unwrap().set_times(times).unwrap();
            }
        }
    }
}

/// A copy of `base` under a new root.
pub fn copy_of(base: &Path, name: &str) -> PathBuf {
    let root = new_root(name);
    copy_site(base, &root);
    root
}

/// A deterministic logical dump of an SQLite file: schema objects and every row of every table
/// (history table included), sorted. `<absent>` when the file does not exist.
pub fn dump_db(path: &Path) -> String {
    if !path.exists() {
        return "<absent>".into();
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    let mut stmt =
        conn.prepare("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name").unwrap();
    let objects: Vec<(String, String, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect();
    for (t, n, tbl, sql) in &objects {
        out.push_str(&format!("{t} {n} on {tbl}: {sql}\n"));
    }
    for (t, n, _, _) in &objects {
        if t != "table" {
            continue;
        }
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{}\"", n.replace('"', "\"\""))).unwrap();
        let cols = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                Ok((0..cols)
                    .map(|i| match r.get_ref(i).unwrap() {
                        ValueRef::Null => "NULL".to_string(),
                        ValueRef::Integer(i) => i.to_string(),
                        ValueRef::Real(f) => format!("{f:?}"),
                        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
                        ValueRef::Blob(b) => {
                            format!("blob:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        out.push_str(&format!("-- {n}: {} rows\n", rows.len()));
        for r in rows {
            out.push_str(&format!("{n}({r})\n"));
        }
    }
    out
}

/// Dumps of `data/metadata.db` and `data/client.db`.
pub fn dumps(root: &Path) -> BTreeMap<String, String> {
    ["metadata", "client"].iter().map(|d| (d.to_string(), dump_db(&root.join(format!("data/{d}.db"))))).collect()
}

/// One query's single integer.
pub fn query_i64(db: &Path, sql: &str) -> i64 {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql} on {}: {e}", db.display()))
}

/// Rows of one query as strings.
pub fn query_rows(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql} on {}: {e}", db.display()));
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                ValueRef::Null => "NULL".to_string(),
                ValueRef::Integer(i) => i.to_string(),
                ValueRef::Real(f) => f.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                ValueRef::Blob(_) => "<blob>".to_string(),
            })
            .collect())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// `bundle_schema_history` rows in id order: (version, file, direction, success, release).
pub fn schema_history(db: &Path) -> Vec<(String, String, String, bool, String)> {
    query_rows(db, "SELECT version, file, direction, success, release FROM bundle_schema_history ORDER BY id")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[3] == "1", r[4].clone()))
        .collect()
}

/// Every node of the site except `state/lock` (its content names the last command to hold it).
pub fn snapshot_site(root: &Path) -> Snapshot {
    let mut s = snapshot(root);
    s.remove(Path::new("state/lock"));
    s
}

#[track_caller]
pub fn assert_same_snapshot(before: &Snapshot, after: &Snapshot, what: &str) {
    let diff = diff_snapshots(before, after);
    assert!(diff.is_empty(), "{what}: the site changed:\n{}", diff.join("\n"));
}

/// What must be exactly as before after a failed (undone) or refused run: the release trees, where
/// `current` points, the backups and trust store, and both databases' logical contents.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteState {
    pub releases: Snapshot,
    pub current: Option<PathBuf>,
    pub backups: Snapshot,
    pub trust: Snapshot,
    pub dbs: BTreeMap<String, String>,
    pub staging_empty: bool,
    pub journal: bool,
}

impl SiteState {
    pub fn capture(root: &Path) -> SiteState {
        let sub = |d: &str| if root.join(d).exists() { snapshot(&root.join(d)) } else { Snapshot::new() };
        SiteState {
            releases: sub("releases"),
            current: current(root),
            backups: sub("backups"),
            trust: sub("trust"),
            dbs: dumps(root),
            staging_empty: std::fs::read_dir(root.join("state/staging"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true),
            journal: root.join("state/journal.json").exists(),
        }
    }

    #[track_caller]
    pub fn assert_same(&self, after: &SiteState, what: &str) {
        let mut problems = Vec::new();
        for (name, a, b) in [
            ("releases", &self.releases, &after.releases),
            ("backups", &self.backups, &after.backups),
            ("trust", &self.trust, &after.trust),
        ] {
            for d in diff_snapshots(a, b) {
                problems.push(format!("{name}/: {d}"));
            }
        }
        if self.current != after.current {
            problems.push(format!("current: {:?} -> {:?}", self.current, after.current));
        }
        for (db, dump) in &self.dbs {
            if after.dbs.get(db) != Some(dump) {
                problems.push(format!(
                    "database {db} differs:\n--- before\n{dump}\n--- after\n{}",
                    after.dbs.get(db).map(String::as_str).unwrap_or("<missing>")
                ));
            }
        }
        if !after.staging_empty {
            problems.push("state/staging/ is not empty".into());
        }
        if after.journal {
            problems.push("state/journal.json was left behind".into());
        }
        assert!(problems.is_empty(), "{what}: the site is not as it was:\n{}", problems.join("\n"));
    }
}

/// Reads a YAML file into a serde_yaml value.
pub fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's config defaults of release `version`.
pub fn defaults(version: &str) -> serde_yaml::Value {
    yaml(&fixture_specs().join(version).join("config/defaults.yaml"))
}

/// A site with `versions` applied in order, with `notes` added (through the app) after the first.
pub fn build_site(name: &str, versions: &[&str], notes: &[&str]) -> PathBuf {
    let root = new_root(name);
    for (i, v) in versions.iter().enumerate() {
        apply_ok(&root, bundle(v));
        if i == 0 {
            add_notes(&root, notes);
        }
    }
    root
}
