//! Hard faults during a real 1.0.0 → 4.0.0 upgrade of the fieldlog fixture, through the binary:
//!
//! * a full disk (a small tmpfs mounted as the site's file system, filled by a `--python` wrapper
//!   right after the free-space check, leaving 0 … 2 MiB), so staging, the venv, the backup or the
//!   migrations run out of space;
//! * `kill -9` of `bundle-install apply` at 20 pseudo-random moments (fixed seed), then `recover`;
//! * two applies started together;
//! * a hook that hangs (`--hook-timeout 2`), before the swap and after it (health check), and a
//!   config converter that hangs;
//! * a missing interpreter (`--python /nonexistent`);
//! * a read-only `data/` (`chattr +i`, and a read-only bind mount): tests run as root, where
//!   `chmod 0555` stops nothing.
//!
//! Each ends on one consistent release with every database row present: either *exactly* the old
//! site (every node of `releases/`, where `current` points, the logical content of both databases,
//! the config; no journal, nothing in staging, no stray release directory) or the new release
//! complete (`check` passes, the app runs, every row written before the upgrade is there, converted).
//! Faults that need privileges (mount, chattr) print why and skip when they are not available.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use test_support::{
    build_fixture_bundle, copy_site, copy_spec, run, run_timeout, scratch_dir, site_python, snapshot, test_secret_key,
    KeyPair, Run, Snapshot,
};

const INSTALL: &str = env!("CARGO_BIN_EXE_bundle-install");
const NOTES: [&str; 3] = ["calibrated the thermometer", "wind picked up after noon", "battery swapped on mast two"];

// ---------------------------------------------------------------------------------------------
// The world: a key, the 1.0.0 and 4.0.0 bundles, a 4.0.0 variant whose hooks can hang, and an
// installed 1.0.0 site with notes written by the app.

struct World {
    key: KeyPair,
    v4: PathBuf,
    hanging: PathBuf,
    base: PathBuf,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = scratch_dir("faults-world");
        let key = KeyPair::write(&dir.join("vendor"), &test_secret_key(31));
        let v1 = build_fixture_bundle("1.0.0", &key.secret_path, &dir.join("out"));
        let v4 = build_fixture_bundle("4.0.0", &key.secret_path, &dir.join("out"));
        let hanging = hanging_variant(&dir, &key);
        let base = dir.join("base/site");
        let r = install(&base, &["apply", v1.to_str().unwrap(), "--trust", key.public_path.to_str().unwrap()]);
        assert_eq!(r.code, Some(0), "installing the 1.0.0 base site failed:\n{r}");
        for (i, note) in NOTES.iter().enumerate() {
            let site_arg = if i == 0 { "north" } else { "ridge" };
            let r =
                run(Command::new(base.join("current/venv/bin/fieldlog")).args(["add-note", note, "--site", site_arg]));
            assert_eq!(r.code, Some(0), "fieldlog add-note failed:\n{r}");
        }
        World { key, v4, hanging, base }
    })
}

/// 4.0.0 with hooks that hang (a child `sleep 600`, its pid written beside) when
/// `$BUNDLE_ROOT/HANG_PRE_APPLY` or `$BUNDLE_ROOT/HANG_HEALTH` exists.
fn hanging_variant(dir: &Path, key: &KeyPair) -> PathBuf {
    let spec = dir.join("hanging-spec");
    copy_spec("4.0.0", &spec);
    for (file, marker) in [("hooks/stop.sh", "HANG_PRE_APPLY"), ("hooks/health.sh", "HANG_HEALTH")] {
        let path = spec.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let hang = format!(
            "set -eu\nif [ -e \"$BUNDLE_ROOT/{marker}\" ]; then sleep 600 & echo $! > \"$BUNDLE_ROOT/{marker}.pid\"; wait; fi\n"
        );
        std::fs::write(&path, text.replacen("set -eu\n", &hang, 1)).unwrap();
    }
    // The 2-to-3 config converter hangs the same way when the installer's environment has
    // TEST_HANG_CONVERTER (a converter sees no site root; it inherits the environment).
    let conv = spec.join("config/converters/2-to-3.py");
    let text = std::fs::read_to_string(&conv).unwrap();
    let hang = "import os, subprocess\n\
                if os.environ.get('TEST_HANG_CONVERTER'):\n\
                \x20   p = subprocess.Popen(['sleep', '600'])\n\
                \x20   open(os.environ['TEST_HANG_CONVERTER'], 'w').write(str(p.pid))\n\
                \x20   p.wait()\n\n";
    std::fs::write(&conv, text.replacen("import sys\n", &format!("{hang}import sys\n"), 1)).unwrap();
    let r = run(Command::new(test_support::bin("bundle-build"))
        .arg("build")
        .arg(spec.join("spec.yaml"))
        .arg("--key")
        .arg(&key.secret_path)
        .arg("--out")
        .arg(dir.join("hanging-out"))
        .arg("--json")
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    r.expect_ok();
    PathBuf::from(r.json()["bundle"].as_str().unwrap())
}

/// `bundle-install ARGS --root SITE --json --python PY` (the real interpreter unless ARGS has one).
fn install(site: &Path, args: &[&str]) -> Run {
    install_env(site, args, &[])
}

fn install_env(site: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(INSTALL);
    c.args(args).arg("--root").arg(site).arg("--json");
    if args.first() == Some(&"apply") && !args.contains(&"--python") {
        c.arg("--python").arg(site_python());
    }
    c.env_remove("BUNDLE_INSTALL_TEST_FAIL").env_remove("BUNDLE_INSTALL_TEST_KILL");
    for (k, v) in env {
        c.env(k, v);
    }
    run_timeout(&mut c, Duration::from_secs(180))
}

fn apply4(site: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["apply", world().v4.to_str().unwrap()];
    args.extend_from_slice(extra);
    install(site, &args)
}

/// A fresh copy of the base site at `dst/site`.
fn fresh_site(dst: &Path) -> PathBuf {
    let site = dst.join("site");
    copy_site(&world().base, &site);
    site
}

// ---------------------------------------------------------------------------------------------
// What "consistent" means.

/// A deterministic logical dump of an SQLite database: schema and every row, sorted.
fn dump_db(path: &Path) -> Vec<String> {
    if !path.exists() {
        return vec!["<absent>".into()];
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let objects: Vec<(String, String, String)> = conn
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (t, n, sql) in &objects {
        out.push(format!("{t} {n}: {sql}"));
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
                        ValueRef::Blob(b) => format!("blob:{}", b.len()),
                    })
                    .collect::<Vec<_>>()
                    .join(", "))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        out.extend(rows.into_iter().map(|r| format!("{n}({r})")));
    }
    out
}

/// Every text value of every table but the migration history.
fn texts(path: &Path) -> Vec<String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'bundle_%' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let cols = stmt.column_count();
        let rows: Vec<Vec<String>> = stmt
            .query_map([], |r| {
                Ok((0..cols)
                    .filter_map(|i| match r.get_ref(i).unwrap() {
                        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                        _ => None,
                    })
                    .collect())
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.extend(rows.into_iter().flatten());
    }
    out
}

/// Every row written before the upgrade is still there (in whatever schema the release has).
fn rows_present(site: &Path) -> Result<(), String> {
    let client = texts(&site.join("data/client.db"));
    for n in NOTES {
        if !client.iter().any(|t| t == n) {
            return Err(format!("note {n:?} is missing from data/client.db"));
        }
    }
    let meta = texts(&site.join("data/metadata.db"));
    for s in ["North Ridge", "Lake Station"] {
        if !meta.iter().any(|t| t == s) {
            return Err(format!("site {s:?} is missing from data/metadata.db"));
        }
    }
    let conn = Connection::open_with_flags(site.join("data/metadata.db"), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM instruments", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if n != 3 {
        return Err(format!("data/metadata.db has {n} instruments, not 3"));
    }
    Ok(())
}

/// The parts of a site an undone run must leave exactly as they were.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    current: Option<PathBuf>,
    releases: Snapshot,
    data_entries: BTreeSet<String>,
    databases: BTreeMap<String, Vec<String>>,
    trust: Snapshot,
}

fn fingerprint(site: &Path) -> Fingerprint {
    Fingerprint {
        current: std::fs::read_link(site.join("current")).ok(),
        releases: snapshot(&site.join("releases")),
        data_entries: std::fs::read_dir(site.join("data"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        databases: ["client", "metadata"]
            .iter()
            .map(|d| (d.to_string(), dump_db(&site.join(format!("data/{d}.db")))))
            .collect(),
        trust: snapshot(&site.join("trust")),
    }
}

fn leftovers(site: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if site.join("state/journal.json").exists() {
        out.push("state/journal.json".into());
    }
    if let Ok(d) = std::fs::read_dir(site.join("state/staging")) {
        out.extend(d.flatten().map(|e| format!("state/staging/{}", e.file_name().to_string_lossy())));
    }
    out
}

/// Which release the site is on, checked to be consistent: exactly `old` for 1.0.0; complete,
/// checked and running for 4.0.0. Err describes what is wrong.
fn consistent(site: &Path, old: &Fingerprint) -> Result<&'static str, String> {
    let left = leftovers(site);
    if !left.is_empty() {
        return Err(format!("left behind: {left:?}"));
    }
    rows_present(site)?;
    match std::fs::read_link(site.join("current")).ok().as_deref().and_then(Path::to_str) {
        Some("releases/1.0.0") => {
            let now = fingerprint(site);
            if &now != old {
                let mut why = Vec::new();
                for d in test_support::diff_snapshots(&old.releases, &now.releases) {
                    why.push(format!("releases/: {d}"));
                }
                if now.data_entries != old.data_entries {
                    why.push(format!("data/: {:?} -> {:?}", old.data_entries, now.data_entries));
                }
                if now.databases != old.databases {
                    why.push("a database's logical content differs".into());
                }
                if now.trust != old.trust {
                    why.push("trust/ differs".into());
                }
                return Err(format!("on 1.0.0 but not exactly as before:\n{}", why.join("\n")));
            }
            Ok("1.0.0")
        }
        Some("releases/4.0.0") => {
            let rel = site.join("releases/4.0.0");
            if !rel.join("release.json").is_file() || rel.join(".incomplete").exists() {
                return Err("current points at an incomplete releases/4.0.0".into());
            }
            let entries: BTreeSet<String> = std::fs::read_dir(site.join("releases"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if entries != BTreeSet::from(["1.0.0".to_string(), "4.0.0".to_string()]) {
                return Err(format!("releases/ holds {entries:?}"));
            }
            let c = install(site, &["check"]);
            if c.code != Some(0) {
                return Err(format!("check fails on 4.0.0:\n{c}"));
            }
            let v = run(Command::new(site.join("current/venv/bin/fieldlog")).arg("version"));
            if v.code != Some(0) || !v.stdout.contains("4.0.0") {
                return Err(format!("the 4.0.0 app does not run:\n{v}"));
            }
            if !site.join("current/config/app.yaml").is_file() {
                return Err("current/config/app.yaml is missing".into());
            }
            Ok("4.0.0")
        }
        other => Err(format!("current points at {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Privileged helpers with guards.

/// A tmpfs mounted at a directory; unmounted (lazily if busy) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let r = run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir));
        if r.code == Some(0) {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(format!(
                "cannot mount a tmpfs ({}): {}",
                r.code.map(|c| c.to_string()).unwrap_or_default(),
                r.stderr.trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if run(Command::new("umount").arg(&self.0)).code != Some(0) {
            let _ = run(Command::new("umount").arg("-l").arg(&self.0));
        }
    }
}

/// A read-only bind mount of a directory over itself; unmounted on drop.
struct ReadOnlyBind(PathBuf);

impl ReadOnlyBind {
    fn mount(dir: &Path) -> Result<ReadOnlyBind, String> {
        let r = run(Command::new("mount").arg("--bind").arg("-o").arg("ro").arg(dir).arg(dir));
        if r.code != Some(0) {
            return Err(format!("cannot bind-mount read-only: {}", r.stderr.trim()));
        }
        let guard = ReadOnlyBind(dir.to_path_buf());
        // Older mount(8) ignores `ro` on the first bind: remount.
        if std::fs::write(dir.join(".probe"), b"x").is_ok() {
            let _ = std::fs::remove_file(dir.join(".probe"));
            let r = run(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(dir));
            if r.code != Some(0) || std::fs::write(dir.join(".probe"), b"x").is_ok() {
                let _ = std::fs::remove_file(dir.join(".probe"));
                return Err("the bind mount stays writable".into());
            }
        }
        Ok(guard)
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        if run(Command::new("umount").arg(&self.0)).code != Some(0) {
            let _ = run(Command::new("umount").arg("-l").arg(&self.0));
        }
    }
}

/// `chattr +i` on a path; `chattr -i` on drop.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Result<Immutable, String> {
        let r = run(Command::new("chattr").arg("+i").arg(path));
        if r.code != Some(0) {
            return Err(format!("chattr +i failed: {}", r.stderr.trim()));
        }
        let guard = Immutable(path.to_path_buf());
        if std::fs::write(path.join(".probe"), b"x").is_ok() {
            let _ = std::fs::remove_file(path.join(".probe"));
            return Err("chattr +i does not stop writes here".into());
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = run(Command::new("chattr").arg("-i").arg(&self.0));
    }
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// The error kind and message of a failed `--json` run.
fn error_of(r: &Run) -> (String, String) {
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{r}"));
    (v["error"]["kind"].as_str().unwrap_or("").to_string(), v["error"]["message"].as_str().unwrap_or("").to_string())
}

// ---------------------------------------------------------------------------------------------
// Full disk.

/// A `--python` wrapper that, on its first call (the interpreter probe, right after the plan's
/// free-space check and before staging), fills the file system holding `fill_dir` up to `leave_kb`
/// KiB free, then runs the real interpreter.
fn filling_python(dir: &Path, fill_dir: &Path, leave_kb: u64) -> PathBuf {
    let wrapper = dir.join("python-fills-disk");
    let marker = dir.join("filled");
    let _ = std::fs::remove_file(&marker);
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ ! -e '{marker}' ]; then\n  touch '{marker}'\n  avail=$(df -k --output=avail '{fill}' | tail -1)\n  n=$((avail - {leave_kb}))\n  \
             if [ \"$n\" -gt 0 ]; then dd if=/dev/zero of='{fill}/filler' bs=1k count=\"$n\" 2>/dev/null || true; fi\nfi\nexec '{py}' \"$@\"\n",
            marker = marker.display(),
            fill = fill_dir.display(),
            py = site_python().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn full_disk_at_every_stage() {
    let w = world();
    let tmp = tempfile::tempdir_in(scratch_dir("faults-disk")).unwrap();
    let mut outcomes = Vec::new();
    let mut problems = Vec::new();
    // 0: staging itself fails; then venv, wheels, bytecode, backup, migrations, journal, … run out.
    for leave_kb in [0u64, 24, 64, 160, 200, 240, 280, 320, 360, 400, 900] {
        let mnt = tmp.path().join(format!("mnt-{leave_kb}"));
        let fs = match Tmpfs::mount(&mnt, "8m") {
            Ok(m) => m,
            Err(why) => return skip("full_disk_at_every_stage", &why),
        };
        let site = mnt.join("site");
        copy_site(&w.base, &site);
        let old = fingerprint(&site);
        let python = filling_python(tmp.path(), &mnt, leave_kb);
        let r = install(&site, &["apply", w.v4.to_str().unwrap(), "--python", python.to_str().unwrap()]);
        assert!(
            mnt.join("filler").exists() || leave_kb > 0,
            "the wrapper did not fill the disk: the test is void\n{r}"
        );
        let (kind, message) = if r.code == Some(0) { (String::new(), String::new()) } else { error_of(&r) };
        outcomes.push(format!("leave {leave_kb} KiB: exit {:?} {kind} {message}", r.code));
        if r.panicked() {
            problems.push(format!("leave {leave_kb} KiB: panicked\n{r}"));
        }
        if leave_kb == 0 && (r.code, kind.as_str()) != (Some(1), "staging_write_failed") {
            problems.push(format!("a full disk during staging must be exit 1 staging_write_failed:\n{r}"));
        }
        // The disk is no longer full while the state is checked.
        let _ = std::fs::remove_file(mnt.join("filler"));
        match r.code {
            Some(0) | Some(1) => {}
            Some(5) => {
                problems
                    .push(format!("leave {leave_kb} KiB: the run could not be undone on a full disk (exit 5):\n{r}"));
                let rec = install(&site, &["recover"]);
                if rec.code != Some(0) {
                    problems.push(format!("leave {leave_kb} KiB: recover after freeing space failed:\n{rec}"));
                }
            }
            _ => problems.push(format!("leave {leave_kb} KiB: unexpected exit\n{r}")),
        }
        match consistent(&site, &old) {
            Ok(v) => {
                if (r.code == Some(0)) != (v == "4.0.0") {
                    problems.push(format!("leave {leave_kb} KiB: exit {:?} but the site is on {v}", r.code));
                }
            }
            Err(why) => problems.push(format!("leave {leave_kb} KiB: inconsistent after a full disk: {why}\n{r}")),
        }
        // With the space back, the same apply goes through.
        if leave_kb == 0 {
            let again = apply4(&site, &[]);
            if again.code != Some(0) || consistent(&site, &old) != Ok("4.0.0") {
                problems.push(format!("leave 0 KiB: apply with the space back failed:\n{again}"));
            }
        }
        drop(fs);
    }
    eprintln!("full disk outcomes:\n{}", outcomes.join("\n"));
    assert!(problems.is_empty(), "{}\n\noutcomes:\n{}", problems.join("\n\n"), outcomes.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// kill -9 at random moments.

/// xorshift64*: the same delays on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The last step the journal had started when the process died.
fn killed_in(site: &Path) -> String {
    let Ok(bytes) = std::fs::read(site.join("state/journal.json")) else {
        return "no journal (not written yet, or the run had ended)".into();
    };
    let Ok(j) = serde_json::from_slice::<Value>(&bytes) else { return "a journal being rewritten".into() };
    let steps = j["steps"].as_array().cloned().unwrap_or_default();
    steps
        .iter()
        .rev()
        .find(|s| s["status"] != "pending")
        .map(|s| {
            let name = match s["action"].as_str().unwrap_or("?") {
                "hook" => format!("hook {}", s["call"]["hook"].as_str().unwrap_or("?")),
                "migrate" => format!(
                    "migrate {} {}",
                    s["db"]["name"].as_str().unwrap_or("?"),
                    s["version"].as_str().unwrap_or("?")
                ),
                other => other.to_string(),
            };
            format!("{name} ({})", s["status"].as_str().unwrap_or("?"))
        })
        .unwrap_or_else(|| "journal written, no step started".into())
}

#[test]
fn kill_9_at_twenty_random_moments() {
    world();
    let tmp = tempfile::tempdir_in(scratch_dir("faults-kill")).unwrap();
    // How long a whole apply takes here, two at a time as the kills run, to spread them over it.
    let full = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|k| {
                let dir = tmp.path().join(format!("reference-{k}"));
                s.spawn(move || {
                    let site = fresh_site(&dir);
                    let old = fingerprint(&site);
                    let t = Instant::now();
                    let r = apply4(&site, &[]);
                    let took = t.elapsed();
                    assert_eq!(r.code, Some(0), "{r}");
                    assert_eq!(consistent(&site, &old), Ok("4.0.0"));
                    took
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    });
    // Stratified: kill i lands somewhere in the i-th twentieth of 1.6 times that (runs beside
    // other tests are slower than the reference; a kill after the end is a valid case too).
    let mut rng = Rng(0x5eed_0fc0_ffee);
    let span = full.as_millis() as u64 * 8 / 5;
    let delays: Vec<Duration> =
        (0..20u64).map(|i| Duration::from_millis(i * span / 20 + rng.below(span / 20))).collect();
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let chunks: Vec<Vec<(usize, Duration)>> =
            (0..2).map(|k| delays.iter().copied().enumerate().filter(|(i, _)| i % 2 == k).collect()).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let tmp = tmp.path();
                s.spawn(move || {
                    chunk.into_iter().map(|(i, d)| kill_once(&tmp.join(format!("kill-{i}")), i, d)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut results = results;
    results.sort_by_key(|r| r.as_ref().map(|s| s[1..3].trim().parse::<usize>().unwrap_or(0)).unwrap_or(0));
    let report: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(s) => s.clone(),
            Err(e) => format!("FAILED: {e}"),
        })
        .collect();
    eprintln!("kill -9 (a full apply takes {full:?}):\n{}", report.join("\n"));
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of 20 kills ended inconsistent:\n{}",
        failures.len(),
        failures.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n")
    );
}

fn kill_once(dir: &Path, i: usize, delay: Duration) -> Result<String, String> {
    let w = world();
    let site = fresh_site(dir);
    let old = fingerprint(&site);
    let mut child = Command::new(INSTALL)
        .args(["apply", w.v4.to_str().unwrap(), "--json", "--root"])
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    let at = if finished { "after it finished".to_string() } else { killed_in(&site) };
    let rec = install(&site, &["recover"]);
    if rec.code != Some(0) {
        return Err(format!("#{i} (killed at {delay:?}, in {at}): recover failed:\n{rec}"));
    }
    let recovered = rec.stdout.trim().to_string();
    let outcome = consistent(&site, &old)
        .map_err(|why| format!("#{i} (killed at {delay:?}, in {at}, {status}): {why}\nrecover: {recovered}"))?;
    let how = serde_json::from_str::<Value>(&recovered)
        .ok()
        .map(|v| v["recovery"]["recovered"].as_str().unwrap_or("?").to_string())
        .unwrap_or_default();
    Ok(format!("#{i:>2} killed at {delay:>9.3?} in {at}: recover said `{how}`, site on {outcome}"))
}

// ---------------------------------------------------------------------------------------------
// Two applies at once.

#[test]
fn two_applies_started_together() {
    let w = world();
    let tmp = tempfile::tempdir_in(scratch_dir("faults-concurrent")).unwrap();
    let site = fresh_site(tmp.path());
    let old = fingerprint(&site);
    let spawn = || {
        Command::new(INSTALL)
            .args(["apply", w.v4.to_str().unwrap(), "--json", "--root"])
            .arg(&site)
            .arg("--python")
            .arg(site_python())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (pa, pb) = (a.id(), b.id());
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut runs = [(pa, pb, oa), (pb, pa, ob)];
    runs.sort_by_key(|(_, _, o)| o.status.code());
    let [(_, _, winner), (_, other_pid, loser)] = &runs;
    let show = |o: &std::process::Output| {
        format!("{:?}\n{}\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert_eq!(winner.status.code(), Some(0), "one apply must win:\n{}\n---\n{}", show(winner), show(loser));
    assert_eq!(loser.status.code(), Some(4), "the other must be refused (exit 4):\n{}", show(loser));
    let v: Value = serde_json::from_slice(&loser.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "locked", "{}", show(loser));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("pid {other_pid}")) && message.contains("apply"),
        "the refusal must name the holder (pid {other_pid}, apply): {message}"
    );
    assert_eq!(consistent(&site, &old), Ok("4.0.0"));
}

// ---------------------------------------------------------------------------------------------
// Hooks that hang.

fn pid_alive(pid_file: &Path) -> Option<bool> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    // A zombie still answers kill(0); look at its state.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    Some(stat.is_some_and(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z')))
}

fn hang(marker: &str) {
    let w = world();
    let tmp = tempfile::tempdir_in(scratch_dir("faults-hang")).unwrap();
    let site = fresh_site(tmp.path());
    let old = fingerprint(&site);
    std::fs::write(site.join(marker), b"").unwrap();
    let t = Instant::now();
    let r = install(&site, &["apply", w.hanging.to_str().unwrap(), "--hook-timeout", "2"]);
    let took = t.elapsed();
    std::fs::remove_file(site.join(marker)).unwrap();
    assert_eq!(r.code, Some(1), "a hook that hangs must fail the apply (exit 1) and be undone:\n{r}");
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "hook_failed", "{r}");
    assert!(message.contains("2 s"), "the error should say the hook ran out of time: {message}");
    assert!(took < Duration::from_secs(60), "apply took {took:?} with a 2 s hook limit");
    let pid_file = site.join(format!("{marker}.pid"));
    assert!(pid_file.exists(), "the hook never started its sleep: the test is void\n{r}");
    // Give the kernel a moment to reap.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pid_alive(&pid_file), Some(false), "the hook's child (sleep 600) survived the timeout");
    std::fs::remove_file(&pid_file).unwrap();
    assert_eq!(consistent(&site, &old), Ok("1.0.0"), "{r}");
    let again = install(&site, &["apply", w.hanging.to_str().unwrap(), "--hook-timeout", "30"]);
    assert_eq!(again.code, Some(0), "{again}");
    assert_eq!(consistent(&site, &old), Ok("4.0.0"));
}

#[test]
fn hook_that_hangs_before_the_swap() {
    hang("HANG_PRE_APPLY");
}

#[test]
fn health_check_that_hangs_after_the_swap() {
    hang("HANG_HEALTH");
}

/// A config converter that hangs is killed at `--hook-timeout` with what it started, like a hook,
/// and the apply is undone.
#[test]
fn config_converter_that_hangs() {
    let w = world();
    let tmp = tempfile::tempdir_in(scratch_dir("faults-hang-converter")).unwrap();
    let site = fresh_site(tmp.path());
    let old = fingerprint(&site);
    let pid_file = tmp.path().join("converter.pid");
    let t = Instant::now();
    let r = install_env(
        &site,
        &["apply", w.hanging.to_str().unwrap(), "--hook-timeout", "2"],
        &[("TEST_HANG_CONVERTER", pid_file.to_str().unwrap())],
    );
    let took = t.elapsed();
    assert_eq!(r.code, Some(1), "a converter that hangs must fail the apply (exit 1) and be undone:\n{r}");
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "converter_timeout", "{r}");
    assert!(
        message.contains("2-to-3.py") && message.contains("2 s"),
        "the error should name the converter and its limit: {message}"
    );
    assert!(took < Duration::from_secs(60), "apply took {took:?} with a 2 s limit");
    assert!(pid_file.exists(), "the converter never started its sleep: the test is void\n{r}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pid_alive(&pid_file), Some(false), "the converter's child (sleep 600) survived the timeout");
    assert_eq!(consistent(&site, &old), Ok("1.0.0"), "{r}");
}

// ---------------------------------------------------------------------------------------------
// A missing interpreter.

#[test]
fn missing_interpreter() {
    let w = world();
    let tmp = tempfile::tempdir_in(scratch_dir("faults-python")).unwrap();
    let site = fresh_site(tmp.path());
    let old = fingerprint(&site);
    let before = test_support::snapshot_ignoring_lock(tmp.path());
    let r = install(&site, &["apply", w.v4.to_str().unwrap(), "--python", "/nonexistent/python3"]);
    assert_eq!(r.code, Some(1), "{r}");
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "python_not_found", "{r}");
    assert!(message.contains("/nonexistent/python3"), "the error should name the interpreter: {message}");
    let diff = test_support::diff_snapshots(&before, &test_support::snapshot_ignoring_lock(tmp.path()));
    assert!(diff.is_empty(), "a missing interpreter changed the site:\n{}", diff.join("\n"));
    assert_eq!(consistent(&site, &old), Ok("1.0.0"));

    // A first install: nothing left behind either.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let r = install(
        &fresh.join("root"),
        &[
            "apply",
            w.v4.to_str().unwrap(),
            "--trust",
            w.key.public_path.to_str().unwrap(),
            "--python",
            "/nonexistent/python3",
        ],
    );
    assert_eq!((r.code, error_of(&r).0.as_str()), (Some(1), "python_not_found"), "{r}");
    assert!(
        snapshot(&fresh).is_empty(),
        "a failed first install left {:?}",
        snapshot(&fresh).keys().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// A read-only data/.

fn read_only_data(how: &str) {
    let tmp = tempfile::tempdir_in(scratch_dir("faults-ro")).unwrap();
    let site = fresh_site(tmp.path());
    let old = fingerprint(&site);
    let data = site.join("data");
    let mut problems = Vec::new();
    let r;
    {
        let guard: Box<dyn std::any::Any> = match how {
            "chattr" => match Immutable::set(&data) {
                Ok(g) => Box::new(g),
                Err(why) => return skip("read_only_data_chattr", &why),
            },
            _ => match ReadOnlyBind::mount(&data) {
                Ok(g) => Box::new(g),
                Err(why) => return skip("read_only_data_bind_mount", &why),
            },
        };
        r = apply4(&site, &[]);
        assert!(!r.panicked(), "{r}");
        if !matches!(r.code, Some(1 | 4)) {
            problems.push(format!(
                "apply with a read-only data/ ({how}) must fail cleanly, exit 1 (undone) or 4 (refused up front):\n{r}"
            ));
        }
        if r.code == Some(5) {
            let rec = install(&site, &["recover"]);
            problems.push(format!("recover while data/ is still read-only: exit {:?} {}", rec.code, rec.stdout.trim()));
        }
        drop(guard);
    }
    if r.code == Some(5) {
        let rec = install(&site, &["recover"]);
        if rec.code != Some(0) {
            problems.push(format!("recover once data/ is writable again failed:\n{rec}"));
        }
    }
    match consistent(&site, &old) {
        Ok("1.0.0") => {}
        other => problems.push(format!("after the failed apply the site must be exactly the old release: {other:?}")),
    }
    let again = apply4(&site, &[]);
    if again.code != Some(0) || consistent(&site, &old) != Ok("4.0.0") {
        problems.push(format!("apply once data/ is writable again failed:\n{again}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn read_only_data_chattr() {
    read_only_data("chattr");
}

#[test]
fn read_only_data_bind_mount() {
    read_only_data("bind");
}
