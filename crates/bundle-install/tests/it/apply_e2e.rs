//! End to end: transactional `bundle-install apply` (and `plan`), driving the real binaries on real
//! sites built from the fieldlog fixture (four releases, real wheels, migrations, converters, hooks).
//!
//! Needs the workspace binaries: `cargo build` first (same profile and CARGO_TARGET_DIR), and python3.
//! The four fixture bundles and two base sites (1.0.0 with notes; the same upgraded to 4.0.0) are
//! built once per process; tests work on copies.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use sha2::{Digest, Sha256};
use test_support::{fixture_specs, snapshot, tool};

/// Notes written on 1.0.0 in the base site (site `ridge`), with their word counts.
const NOTES: [(&str, i64); 3] = [("first note", 2), ("second note goes here", 4), ("third", 1)];

fn note_texts() -> Vec<&'static str> {
    NOTES.iter().map(|(t, _)| *t).collect()
}

/// 1.0.0 clean install with three notes.
fn site1() -> &'static Path {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| build_site("base-1.0.0", &["1.0.0"], &note_texts()))
}

/// `site1` upgraded to 4.0.0.
fn site4() -> &'static Path {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let root = copy_of(site1(), "base-4.0.0");
        apply_ok(&root, bundle("4.0.0"));
        root
    })
}

fn sha256_file(p: &Path) -> String {
    let data = std::fs::read(p).unwrap();
    Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect()
}

fn new_hook_lines(before: &[String], root: &Path) -> Vec<String> {
    let after = hooks_log(root);
    assert!(after.starts_with(before), "hooks.log was rewritten, not appended to");
    after[before.len()..].to_vec()
}

#[test]
fn clean_install_of_1_0_0() {
    let root = new_root("clean-install");
    let r = apply(&root, bundle("1.0.0"), &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    assert_eq!(j["ok"], true, "{r}");
    assert_eq!(j["command"], "apply", "{r}");
    let applied = &j["applied"];
    assert_eq!(applied["changed"], true, "{r}");
    assert_eq!(applied["plan"]["kind"], "clean_install", "{r}");
    assert_eq!(applied["plan"]["from"], serde_json::Value::Null, "{r}");
    assert_eq!(applied["plan"]["to"], "1.0.0", "{r}");
    // No converter on a clean install: defaults are written.
    assert_eq!(applied["plan"]["config"]["from_version"], serde_json::Value::Null, "{r}");
    assert_eq!(applied["plan"]["config"]["converters"], serde_json::json!([]), "{r}");
    assert_eq!(applied["key_id"].as_str(), Some(fixture().key.key_id.as_str()), "{r}");

    // current -> releases/1.0.0, the app and its dependency's scripts run.
    assert_eq!(current(&root), Some(PathBuf::from("releases/1.0.0")));
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 1.0.0\n"), "{v}");
    let k = test_support::run(&mut Command::new(root.join("current/venv/bin/fieldkit")));
    assert_eq!((k.code, k.stdout.trim()), (Some(0), "fieldkit 1.2.0"), "{k}");
    let rep = test_support::run(&mut Command::new(root.join("current/venv/bin/fieldkit-report")));
    assert_eq!(rep.code, Some(0), "{rep}");
    let lines: Vec<&str> = rep.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"fieldkit-report: fieldkit 1.2.0"), "{rep}");
    let exe = lines.get(1).copied().unwrap_or_default();
    assert!(
        exe.starts_with(&root.join("releases/1.0.0/venv").to_string_lossy().into_owned()),
        "fieldkit-report did not run with the release's venv interpreter: {exe}\n{rep}"
    );

    // Config: exactly the 1.0.0 defaults.
    let cfg = root.join("current/config/app.yaml");
    assert_eq!(yaml(&cfg), defaults("1.0.0"));
    assert_eq!(
        std::fs::read(&cfg).unwrap(),
        std::fs::read(fixture_specs().join("1.0.0/config/defaults.yaml")).unwrap()
    );

    // Databases at 1.0 and compatible, seeds there, no notes.
    let st = status(&root);
    assert_eq!(st["current"], "1.0.0", "{st}");
    let dbs = db_versions(&st);
    assert_eq!(dbs.get("metadata"), Some(&("1.0".to_string(), true)), "{st}");
    assert_eq!(dbs.get("client"), Some(&("1.0".to_string(), true)), "{st}");
    assert_eq!(st["healthy"], true, "{st}");
    let shown = show(&root);
    assert_eq!(shown.get("sites").map(String::as_str), Some("2"), "{shown:?}");
    assert_eq!(shown.get("instruments").map(String::as_str), Some("3"), "{shown:?}");
    assert_eq!(shown.get("notes").map(String::as_str), Some("0"), "{shown:?}");
    assert_eq!(shown.get("config_version").map(String::as_str), Some("1"), "{shown:?}");

    // Hooks ran in order, as a clean install.
    assert_eq!(
        hooks_log(&root),
        ["pre_apply from= to=1.0.0", "post_apply from= to=1.0.0", "health_check from= to=1.0.0"]
    );

    // The --trust key is now in trust/.
    let keys: Vec<PathBuf> = std::fs::read_dir(root.join("trust"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(st["trusted_keys"], serde_json::json!([fixture().key.key_id]), "{st}");

    // One success in the history.
    let h = history(&root);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["outcome"], "success", "{:?}", h[0]);
    assert_eq!(h[0]["command"], "apply", "{:?}", h[0]);
    assert_eq!(h[0]["to"], "1.0.0", "{:?}", h[0]);
    assert_eq!(h[0]["from"], serde_json::Value::Null, "{:?}", h[0]);

    // check agrees.
    check(&root).expect_ok();
    assert!(!root.join("state/journal.json").exists());
}

#[test]
fn gap_upgrade_1_to_4_keeps_every_note() {
    let root = copy_of(site1(), "gap-upgrade");
    // The admin's edits of the 1.0.0 config must be carried through both converters.
    let cfg1 = root.join("releases/1.0.0/config/app.yaml");
    let text = std::fs::read_to_string(&cfg1).unwrap();
    assert!(text.contains("  port: 8080\n") && text.contains("log_level: info\n"), "{text}");
    std::fs::write(
        &cfg1,
        text.replace("  port: 8080\n", "  port: 9090\n").replace("log_level: info\n", "log_level: debug\n"),
    )
    .unwrap();
    let old_release = snapshot(&root.join("releases/1.0.0"));
    let hooks_before = hooks_log(&root);
    assert_eq!(show(&root).get("notes").map(String::as_str), Some("3"));

    let r = apply(&root, bundle("4.0.0"), &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    assert_eq!(j["applied"]["changed"], true, "{r}");
    assert_eq!(j["applied"]["plan"]["kind"], "upgrade", "{r}");
    assert_eq!(j["applied"]["plan"]["from"], "1.0.0", "{r}");
    assert_eq!(j["applied"]["plan"]["to"], "4.0.0", "{r}");

    assert_eq!(current(&root), Some(PathBuf::from("releases/4.0.0")));
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 4.0.0\n"), "{v}");
    fieldlog(&root, &["check"]).expect_ok();

    // Every note, in the new shape, with its word count filled by the data migration.
    let shown = show(&root);
    assert_eq!(shown.get("entries").map(String::as_str), Some("3"), "{shown:?}");
    assert_eq!(shown.get("config_version").map(String::as_str), Some("3"), "{shown:?}");
    let client = root.join("data/client.db");
    let rows = query_rows(&client, "SELECT id, site, content, words FROM entries ORDER BY id");
    let expected: Vec<Vec<String>> = NOTES
        .iter()
        .enumerate()
        .map(|(i, (t, w))| vec![(i + 1).to_string(), "ridge".into(), t.to_string(), w.to_string()])
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(query_i64(&client, "SELECT count(*) FROM sqlite_master WHERE name = 'notes'"), 0);

    // Each step exactly once, in order.
    let steps = |db: &str| -> Vec<(String, String, String, bool)> {
        schema_history(&root.join(format!("data/{db}.db"))).into_iter().map(|(v, f, d, ok, _)| (v, f, d, ok)).collect()
    };
    let up = |v: &str, f: &str| (v.to_string(), f.to_string(), "up".to_string(), true);
    assert_eq!(
        steps("client"),
        vec![
            up("1.0", "1.0_init.sql"),
            up("1.1", "1.1_add_author.sql"),
            up("2.0", "2.0_rename_notes.sql"),
            up("2.1", "2.1_backfill_words.py")
        ]
    );
    assert_eq!(
        steps("metadata"),
        vec![
            up("1.0", "1.0_init.sql"),
            up("1.1", "1.1_add_tags.sql"),
            up("2.0", "2.0_split_label.sql"),
            up("2.1", "2.1_add_index.sql")
        ]
    );
    // The metadata rows were reshaped, not lost.
    assert_eq!(
        query_rows(&root.join("data/metadata.db"), "SELECT id, site_id, kind, serial FROM instruments ORDER BY id"),
        vec![
            vec!["1".to_string(), "1".into(), "thermometer".into(), "T-100".into()],
            vec!["2".to_string(), "1".into(), "barometer".into(), "B-7".into()],
            vec!["3".to_string(), "2".into(), "anemometer".into(), "A-42".into()],
        ]
    );

    // Config converted 1 -> 2 -> 3: the v3 shape, the v3 defaults but for the admin's two edits.
    let cfg = yaml(&root.join("current/config/app.yaml"));
    assert_eq!(cfg["server"]["listen"].as_str(), Some("localhost:9090"), "{cfg:?}");
    assert!(cfg["server"].get("host").is_none() && cfg["server"].get("port").is_none(), "{cfg:?}");
    let mut expected = defaults("4.0.0");
    expected["server"]["listen"] = "localhost:9090".into();
    expected["logging"]["level"] = "debug".into();
    assert_eq!(cfg, expected);

    // The old release is kept, untouched.
    assert_same_snapshot(&old_release, &snapshot(&root.join("releases/1.0.0")), "releases/1.0.0 after the upgrade");

    let st = status(&root);
    let dbs = db_versions(&st);
    assert_eq!(dbs.get("metadata"), Some(&("2.1".to_string(), true)), "{st}");
    assert_eq!(dbs.get("client"), Some(&("2.1".to_string(), true)), "{st}");
    check(&root).expect_ok();

    assert_eq!(
        new_hook_lines(&hooks_before, &root),
        ["pre_apply from=1.0.0 to=4.0.0", "post_apply from=1.0.0 to=4.0.0", "health_check from=1.0.0 to=4.0.0"]
    );
    let h = history(&root);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        (h[1]["outcome"].as_str(), h[1]["from"].as_str(), h[1]["to"].as_str()),
        (Some("success"), Some("1.0.0"), Some("4.0.0"))
    );
}

#[test]
fn applying_the_same_bundle_again_does_nothing() {
    let root = copy_of(site4(), "same-again");
    let before = snapshot_site(&root);
    let dumps_before = dumps(&root);

    let r = apply(&root, bundle("4.0.0"), &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    assert_eq!(j["ok"], true, "{r}");
    assert_eq!(j["applied"]["changed"], false, "{r}");
    assert_eq!(j["applied"]["plan"]["kind"], "nothing_to_do", "{r}");

    // Human form says so.
    let h = bi([OsStr::new("apply"), bundle("4.0.0").as_os_str(), OsStr::new("--root"), root.as_os_str()]);
    assert_eq!(h.code, Some(0), "{h}");
    assert!(h.stderr.contains("nothing to do"), "{h}");

    assert_same_snapshot(&before, &snapshot_site(&root), "second apply of the same bundle");
    assert_eq!(dumps_before, dumps(&root));
}

#[test]
fn plan_lists_converters_and_steps_and_changes_nothing() {
    let root = copy_of(site1(), "plan");
    let before = snapshot_site(&root);
    let r = bi([
        OsStr::new("plan"),
        bundle("4.0.0").as_os_str(),
        OsStr::new("--root"),
        root.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let p = &r.json()["plan"];
    assert_eq!(
        (p["kind"].as_str(), p["from"].as_str(), p["to"].as_str()),
        (Some("upgrade"), Some("1.0.0"), Some("4.0.0")),
        "{r}"
    );
    let converters: Vec<&str> =
        p["config"]["converters"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let names: Vec<&str> = converters.iter().map(|c| c.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["1-to-2.yaml", "2-to-3.py"], "{r}");
    assert_eq!((p["config"]["from_version"].as_u64(), p["config"]["to_version"].as_u64()), (Some(1), Some(3)), "{r}");
    let steps = |db: &str| -> Vec<(String, String)> {
        let d = p["databases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == db)
            .unwrap_or_else(|| panic!("no {db} in {r}"));
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["file"]["file"].as_str().unwrap().to_string(), s["direction"].as_str().unwrap().to_string()))
            .collect()
    };
    let up = |f: &str| (f.to_string(), "up".to_string());
    assert_eq!(
        steps("client"),
        vec![up("1.1_add_author.sql"), up("2.0_rename_notes.sql"), up("2.1_backfill_words.py")]
    );
    assert_eq!(steps("metadata"), vec![up("1.1_add_tags.sql"), up("2.0_split_label.sql"), up("2.1_add_index.sql")]);
    for d in p["databases"].as_array().unwrap() {
        assert_eq!(d["current"], "1.0", "{d}");
        assert_eq!(d["old_release_compatible"], false, "{d}");
    }

    // The readable form names them too.
    let h = bi([OsStr::new("plan"), bundle("4.0.0").as_os_str(), OsStr::new("--root"), root.as_os_str()]);
    assert_eq!(h.code, Some(0), "{h}");
    for needle in [
        "1-to-2.yaml",
        "2-to-3.py",
        "1.1_add_author.sql",
        "2.0_rename_notes.sql",
        "2.1_backfill_words.py",
        "1.1_add_tags.sql",
        "2.0_split_label.sql",
        "2.1_add_index.sql",
    ] {
        assert!(h.stdout.contains(needle), "plan output lacks {needle}:\n{h}");
    }

    // Not a byte changed (but the lock file, which says who held the lock last).
    assert_same_snapshot(&before, &snapshot_site(&root), "plan");

    // On an empty root, plan creates nothing at all.
    let empty = new_root("plan-empty");
    let r = bi([
        OsStr::new("plan"),
        bundle("4.0.0").as_os_str(),
        OsStr::new("--root"),
        empty.as_os_str(),
        OsStr::new("--trust"),
        pubkey().as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.json()["plan"]["kind"], "clean_install", "{r}");
    assert!(!empty.exists(), "plan created {}", empty.display());
}

/// Runs `apply`, expects exit 4 with `kind`, and that nothing on the site changed. Returns the message.
#[track_caller]
fn refused(root: &Path, bundle: &Path, extra: &[&str], kind: &str) -> String {
    let before = snapshot_site(root);
    let dumps_before = dumps(root);
    let r = apply(root, bundle, extra);
    let (k, message) = expect_error(&r, 4);
    eprintln!("refused as expected: {message}");
    assert_eq!(k, kind, "{r}");
    assert_same_snapshot(&before, &snapshot_site(root), &format!("refused apply ({kind})"));
    assert_eq!(dumps_before, dumps(root));
    message
}

#[test]
fn refuses_an_older_bundle_over_a_newer_release() {
    let root = copy_of(site4(), "refuse-downgrade");
    let msg = refused(&root, bundle("1.0.0"), &[], "downgrade");
    assert!(msg.contains("4.0.0") && msg.contains("1.0.0"), "{msg}");
    // Also an intermediate one.
    refused(&root, bundle("3.0.0"), &[], "downgrade");
    assert_eq!(fieldlog(&root, &["version"]).stdout, "fieldlog 4.0.0\n");
}

#[test]
fn refuses_a_site_older_than_upgrades_from() {
    let b = variant("from-2.0.0", "4.0.0", |dir| {
        reversion(dir, "5.0.0");
        set_spec_field(dir, "upgrades_from", "2.0.0");
    });
    let root = copy_of(site1(), "refuse-too-old");
    let msg = refused(&root, &b, &[], "too_old");
    assert!(msg.contains("1.0.0") && msg.contains("2.0.0"), "{msg}");
}

#[test]
fn second_apply_while_the_lock_is_held_is_refused() {
    // 2.0.0 whose pre_apply hook sleeps 3 s after logging, so the first run holds the lock a while.
    let b = variant("slow-stop", "2.0.0", |dir| {
        let path = dir.join("hooks/stop.sh");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\nexit 0\n"), "{text}");
        std::fs::write(&path, text.replace("\nexit 0\n", "\nsleep 3\nexit 0\n")).unwrap();
    });
    let root = copy_of(site1(), "lock");
    let first = tool("bundle-install")
        .arg("apply")
        .arg(&b)
        .arg("--root")
        .arg(&root)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    // Wait until the first run is inside its (sleeping) pre_apply hook: it holds the lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hooks_log(&root).iter().any(|l| l == "pre_apply from=1.0.0 to=2.0.0") {
        assert!(Instant::now() < deadline, "the first apply never reached its pre_apply hook");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = apply(&root, &b, &[]);
    let (kind, message) = expect_error(&second, 4);
    assert_eq!(kind, "locked", "{second}");
    assert!(message.contains(&format!("pid {pid}")), "the refusal does not name the holder (pid {pid}): {message}");

    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the first apply failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(current(&root), Some(PathBuf::from("releases/2.0.0")));
    assert_eq!(fieldlog(&root, &["version"]).stdout, "fieldlog 2.0.0\n");
    // The refused run did nothing: one upgrade in the history, hooks of one run only.
    let h = history(&root);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(hooks_log(&root).iter().filter(|l| l.starts_with("pre_apply from=1.0.0")).count(), 1);
}

/// Applies `bundle` to `root` expecting exit 1, the site exactly as before, a failure in the
/// history, and the message to contain every `needle`. Returns the message.
#[track_caller]
fn fails_and_undoes(root: &Path, bundle: &Path, needles: &[&str]) -> String {
    let before = SiteState::capture(root);
    let version_before = fieldlog(root, &["version"]).stdout;
    let history_before = history(root).len();
    let r = apply(root, bundle, &[]);
    let (_, message) = expect_error(&r, 1);
    eprintln!("failed as expected: {message}");
    for n in needles {
        assert!(message.contains(n), "the error message lacks `{n}`: {message}");
    }
    before.assert_same(&SiteState::capture(root), &format!("failed apply of {}", bundle.display()));
    assert_eq!(fieldlog(root, &["version"]).stdout, version_before);
    fieldlog(root, &["check"]).expect_ok();
    check(root).expect_ok();
    let h = history(root);
    assert_eq!(h.len(), history_before + 1, "{h:?}");
    assert_eq!(h.last().unwrap()["outcome"], "rolled_back", "{:?}", h.last());
    message
}

#[test]
fn failing_pre_apply_hook_leaves_the_site_as_it_was() {
    let root = copy_of(site1(), "fail-pre-apply");
    std::fs::write(root.join("FAIL_PRE_APPLY"), "").unwrap();
    let hooks_before = hooks_log(&root);
    fails_and_undoes(&root, bundle("4.0.0"), &["pre_apply", "stop.sh"]);
    let new = new_hook_lines(&hooks_before, &root);
    assert_eq!(new.first().map(String::as_str), Some("pre_apply from=1.0.0 to=4.0.0"), "{new:?}");
    assert!(
        !new.iter().any(|l| l.starts_with("post_apply from=1.0.0 to=4.0.0")),
        "the new release was started: {new:?}"
    );
}

#[test]
fn failing_health_check_rolls_back_automatically() {
    let root = copy_of(site1(), "fail-health");
    std::fs::write(root.join("FAIL_HEALTH"), "").unwrap();
    let hooks_before = hooks_log(&root);
    fails_and_undoes(&root, bundle("4.0.0"), &["health_check", "health.sh"]);
    let new = new_hook_lines(&hooks_before, &root);
    // The new release got as far as its health check, after the swap and every migration...
    assert_eq!(
        new.get(..3),
        Some(
            &[
                "pre_apply from=1.0.0 to=4.0.0".to_string(),
                "post_apply from=1.0.0 to=4.0.0".into(),
                "health_check from=1.0.0 to=4.0.0".into()
            ][..]
        ),
        "{new:?}"
    );
    // ...then the old release was started again (its own start hook), last.
    assert_eq!(new.last().map(String::as_str), Some("post_apply from=4.0.0 to=1.0.0"), "{new:?}");
}

#[test]
fn failing_config_converter_leaves_the_site_as_it_was() {
    let root = copy_of(site1(), "fail-converter");
    // A user edit that 1-to-2.yaml carries over but 2-to-3.py refuses: no `server` mapping.
    let cfg = root.join("releases/1.0.0/config/app.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let edited: String = text
        .lines()
        .filter(|l| !(l.starts_with("server:") || l.starts_with("  host:") || l.starts_with("  port:")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!edited.contains("server"), "{edited}");
    std::fs::write(&cfg, edited).unwrap();
    fails_and_undoes(&root, bundle("4.0.0"), &["write_config", "2-to-3.py"]);
}

#[test]
fn corrupt_wheel_leaves_the_site_as_it_was() {
    let b = variant("corrupt-wheel", "2.0.0", corrupt_app_wheel);
    let root = copy_of(site1(), "fail-wheel");
    // Wheels are unpacked (and their RECORD checked) when they enter the site's store.
    let msg = fails_and_undoes(&root, &b, &["store_wheels", "fieldlog/cli.py"]);
    assert!(msg.to_lowercase().contains("record") || msg.contains("hash") || msg.contains("sha256"), "{msg}");
}

#[test]
fn failing_last_migration_restores_both_databases() {
    // 2.1_add_index.sql is the last file of the whole chain (client first, then metadata).
    let b = variant("bad-index", "4.0.0", |dir| {
        std::fs::write(
            dir.join("migrations/metadata/2.1_add_index.sql"),
            "CREATE INDEX instruments_by_site ON instruments (site_id);\nCREATE INDEX tags_by_instrument ON no_such_table (instrument_id);\n",
        )
        .unwrap();
    });
    let root = copy_of(site1(), "fail-migration");
    let msg = fails_and_undoes(&root, &b, &["metadata", "2.1_add_index.sql", "no_such_table"]);
    assert!(
        msg.contains("CREATE INDEX tags_by_instrument ON no_such_table"),
        "the failing statement is not named: {msg}"
    );
    // The client database had been fully migrated when metadata failed: it is back on 1.0 as well.
    let st = status(&root);
    let dbs = db_versions(&st);
    assert_eq!(dbs.get("client"), Some(&("1.0".to_string(), true)), "{st}");
    assert_eq!(dbs.get("metadata"), Some(&("1.0".to_string(), true)), "{st}");
    assert_eq!(show(&root).get("notes").map(String::as_str), Some("3"));
}

#[test]
fn drift_of_an_applied_migration_is_refused_and_not_rerun() {
    let original = fixture_specs().join("4.0.0/migrations/metadata/1.0_init.sql");
    let b = variant("drift", "4.0.0", |dir| {
        reversion(dir, "4.0.1");
        let p = dir.join("migrations/metadata/1.0_init.sql");
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("-- a comment added after the release\n");
        std::fs::write(&p, text).unwrap();
    });
    let shipped = {
        let dir = test_support::scratch_dir("drift-file");
        let p = dir.join("1.0_init.sql");
        let mut text = std::fs::read_to_string(&original).unwrap();
        text.push_str("-- a comment added after the release\n");
        std::fs::write(&p, text).unwrap();
        sha256_file(&p)
    };
    let recorded = sha256_file(&original);
    let root = copy_of(site4(), "drift");
    let history_rows = schema_history(&root.join("data/metadata.db"));
    let msg = refused(&root, &b, &[], "drift");
    assert!(msg.contains("1.0_init.sql"), "{msg}");
    assert!(msg.contains(&recorded), "the message lacks the recorded sha256 {recorded}: {msg}");
    assert!(msg.contains(&shipped), "the message lacks the shipped sha256 {shipped}: {msg}");
    assert_eq!(schema_history(&root.join("data/metadata.db")), history_rows, "something was re-run");
}

#[test]
fn clean_install_with_a_relative_root() {
    // `--root site` from the directory holding it: what an admin types.
    let root = new_root("relative-root");
    let parent = root.parent().unwrap();
    let r = test_support::run(
        tool("bundle-install")
            .current_dir(parent)
            .arg("apply")
            .arg(bundle("1.0.0"))
            .arg("--root")
            .arg("site")
            .arg("--trust")
            .arg(pubkey())
            .arg("--json"),
    );
    assert_eq!(r.code, Some(0), "apply with a relative --root failed:\n{r}");
    assert_eq!(current(&root), Some(PathBuf::from("releases/1.0.0")));
    // The installed scripts must work from anywhere, not only from the directory apply ran in.
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 1.0.0\n"), "{v}");
    assert_eq!(hooks_log(&root).len(), 3, "{:?}", hooks_log(&root));
}

/// Issue 12: a wheel whose file name only a PAX header holds (`pip download` gives such names, e.g.
/// with several manylinux tags) is staged under its full name and installed like any other.
#[test]
fn clean_install_with_a_wheel_name_over_150_bytes() {
    let dist = format!("long_named_kit_{}", "abcdefghij".repeat(13));
    let b = variant("long-wheel-name", "4.0.0", |dir| {
        let name = test_support::write_wheel(&dir.join("wheelhouse"), &dist, "1.0.0");
        assert!(name.len() > 150, "{name}");
    });
    let root = new_root("long-wheel-name");
    apply_ok(&root, &b);
    assert_eq!(current(&root), Some(PathBuf::from("releases/4.0.0")));
    let r = test_support::run(
        Command::new(root.join("current/venv/bin/python")).arg("-c").arg(format!("import {dist}; print({dist}.X)")),
    );
    r.expect_ok();
    assert_eq!(r.stdout.trim(), "1", "{r}");
}
