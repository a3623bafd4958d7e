//! End to end: databases and `bundle-install rollback` / `check`, driving the real binaries on
//! sites built from the fieldlog fixture.
//!
//! - minor rollback (3.0.0 → 4.0.0 → back): code only, every row kept, the old config as it was left;
//! - major rollback (1.0.0 → 4.0.0 → back): refused without `--restore-data`, a correct per-table loss
//!   report without `--yes`, an exact restore with it;
//! - down scripts (2.0.0 → 3.0.0 with a client down script → back): downs run, rows kept;
//! - `check` exit codes.
//!
//! Needs the workspace binaries: `cargo build` first (same profile and CARGO_TARGET_DIR), and python3.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::*;
use serde_json::Value;
use test_support::{snapshot, Run};

/// `bundle-install rollback --root ROOT --json EXTRA...`
fn rollback(root: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> =
        vec![OsStr::new("rollback"), OsStr::new("--root"), root.as_os_str(), OsStr::new("--json")];
    args.extend(extra.iter().map(OsStr::new));
    bi(args)
}

fn rollback_human(root: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![OsStr::new("rollback"), OsStr::new("--root"), root.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    bi(args)
}

/// `{db: mode}` of a successful rollback's JSON.
fn modes(j: &Value) -> BTreeMap<String, String> {
    j["rollback"]["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("no rollback.databases: {j}"))
        .iter()
        .map(|d| (d["db"].as_str().unwrap().to_string(), d["mode"].as_str().unwrap().to_string()))
        .collect()
}

struct Upgraded {
    root: PathBuf,
    /// Logical dumps of both databases right before the upgrade to 4.0.0.
    pre_upgrade: BTreeMap<String, String>,
}

/// 1.0.0 clean install with three notes, then 4.0.0 (a major step for both databases).
fn site_1_to_4() -> &'static Upgraded {
    static S: OnceLock<Upgraded> = OnceLock::new();
    S.get_or_init(|| {
        let root = build_site("base-1-to-4", &["1.0.0"], &["one", "two words", "three little words"]);
        let pre_upgrade = dumps(&root);
        apply_ok(&root, bundle("4.0.0"));
        Upgraded { root, pre_upgrade }
    })
}

/// The 3.0.0 fixture with a client down script for 2.0 (every major step then has a down script).
fn bundle_3_with_downs() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        variant("3.0.0-with-downs", "3.0.0", |dir| {
            std::fs::write(
                dir.join("migrations/client/2.0_rename_notes.down.sql"),
                "-- client 2.0 down: entries back to notes (content -> body, created_at -> created), every row kept.\n\
                 CREATE TABLE notes (id INTEGER PRIMARY KEY, site TEXT, body TEXT, created TEXT, author TEXT);\n\
                 INSERT INTO notes (id, site, body, created, author) SELECT id, site, content, created_at, author FROM entries;\n\
                 DROP TABLE entries;\n",
            )
            .unwrap();
        })
    })
}

/// 2.0.0 clean install with two notes, upgraded to 3.0.0-with-downs, then two more notes.
fn site_2_to_3() -> &'static Path {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let root = build_site("base-2-to-3", &["2.0.0"], &["written on two", "also on two"]);
        apply_ok(&root, bundle_3_with_downs());
        add_notes(&root, &["written on three", "three again"]);
        root
    })
}

#[test]
fn minor_rollback_is_code_only_and_keeps_data() {
    let root = new_root("minor-rollback");
    apply_ok(&root, bundle("3.0.0"));
    // The admin edits 3.0.0's config; the edit is carried into 4.0.0 and must survive the rollback.
    let cfg3 = root.join("releases/3.0.0/config/app.yaml");
    let text = std::fs::read_to_string(&cfg3).unwrap();
    assert!(text.contains("level: info"), "{text}");
    std::fs::write(&cfg3, text.replace("level: info", "level: debug")).unwrap();
    add_notes(&root, &["on three"]);

    apply_ok(&root, bundle("4.0.0"));
    let cfg4 = yaml(&root.join("releases/4.0.0/config/app.yaml"));
    assert_eq!(cfg4["logging"]["level"].as_str(), Some("debug"), "the edit was not carried into 4.0.0: {cfg4:?}");
    add_notes(&root, &["written on four", "four again please"]);
    let cfg3_before = snapshot(&root.join("releases/3.0.0/config"));
    let history_before: BTreeMap<&str, _> =
        ["metadata", "client"].iter().map(|d| (*d, schema_history(&root.join(format!("data/{d}.db"))))).collect();
    let hooks_before = hooks_log(&root);

    let r = rollback(&root, &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    assert_eq!((j["rollback"]["from"].as_str(), j["rollback"]["to"].as_str()), (Some("4.0.0"), Some("3.0.0")), "{r}");
    assert_eq!(
        modes(&j),
        BTreeMap::from([("client".into(), "code_only".into()), ("metadata".into(), "code_only".into())]),
        "{r}"
    );

    assert_eq!(current(&root), Some(PathBuf::from("releases/3.0.0")));
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 3.0.0\n"), "{v}");
    fieldlog(&root, &["check"]).expect_ok();
    check(&root).expect_ok();

    // Every row is still there, the ones written on 4.0.0 included.
    assert_eq!(show(&root).get("entries").map(String::as_str), Some("3"));
    let contents: Vec<String> = query_rows(&root.join("data/client.db"), "SELECT content FROM entries ORDER BY id")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(contents, ["on three", "written on four", "four again please"]);
    // Code only: no migration ran, databases stay at 2.1 (which 3.0.0 runs on).
    for (db, rows) in &history_before {
        assert_eq!(
            &schema_history(&root.join(format!("data/{db}.db"))),
            rows,
            "{db}: a migration ran during a code-only rollback"
        );
    }
    let st = status(&root);
    let dbs = db_versions(&st);
    assert_eq!(dbs.get("client"), Some(&("2.1".to_string(), true)), "{st}");
    assert_eq!(dbs.get("metadata"), Some(&("2.1".to_string(), true)), "{st}");

    // 3.0.0's config is exactly as it was left.
    assert_same_snapshot(&cfg3_before, &snapshot(&root.join("releases/3.0.0/config")), "releases/3.0.0/config");
    assert_eq!(yaml(&cfg3)["logging"]["level"].as_str(), Some("debug"));

    // The service was stopped and 3.0.0 started and checked.
    let after = hooks_log(&root);
    assert_eq!(
        &after[hooks_before.len()..],
        ["pre_apply from=4.0.0 to=3.0.0", "post_apply from=4.0.0 to=3.0.0", "health_check from=4.0.0 to=3.0.0"]
    );
    let h = history(&root);
    let last = h.last().unwrap();
    assert_eq!((last["command"].as_str(), last["outcome"].as_str()), (Some("rollback"), Some("success")), "{last}");
}

#[test]
fn major_rollback_needs_restore_reports_losses_and_restores_exactly() {
    let base = site_1_to_4();
    let root = copy_of(&base.root, "major-rollback");
    add_notes(&root, &["lost one", "lost two"]);
    let before = snapshot_site(&root);
    let state = SiteState::capture(&root);
    let unchanged = |what: &str| {
        assert_same_snapshot(&before, &snapshot_site(&root), what);
        state.assert_same(&SiteState::capture(&root), what);
    };

    // Plain rollback across a major step without down scripts: refused.
    let r = rollback(&root, &["--to", "1.0.0"]);
    let (kind, msg) = expect_error(&r, 4);
    assert_eq!(kind, "needs_restore", "{r}");
    assert!(msg.contains("client"), "{msg}");
    unchanged("rollback --to 1.0.0");

    // --restore-data without --yes: the loss report, and nothing else.
    let r = rollback(&root, &["--to", "1.0.0", "--restore-data"]);
    let (kind, msg) = expect_error(&r, 4);
    assert_eq!(kind, "confirm_restore", "{r}");
    unchanged("rollback --restore-data without --yes");
    // Exactly: the entries table gains the 2 rows written on 4.0.0; nothing else is lost.
    assert!(msg.contains("table entries: 2 row(s) added, 0 changed, 0 removed"), "wrong loss report: {msg}");
    assert_eq!(msg.matches("table ").count(), 1, "the report names other tables: {msg}");
    let h = rollback_human(&root, &["--to", "1.0.0", "--restore-data"]);
    assert_eq!(h.code, Some(4), "{h}");
    assert!(
        h.stderr.contains("table entries: 2 row(s) added, 0 changed, 0 removed"),
        "no per-table report on stderr:\n{h}"
    );
    unchanged("rollback --restore-data without --yes (human)");

    // With --yes: restored.
    let r = rollback(&root, &["--to", "1.0.0", "--restore-data", "--yes"]);
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    assert_eq!(
        modes(&j),
        BTreeMap::from([("client".into(), "restore".into()), ("metadata".into(), "restore".into())]),
        "{r}"
    );
    let lost: BTreeMap<String, Value> = j["rollback"]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["db"].as_str().unwrap().to_string(), d["lost"].clone()))
        .collect();
    assert_eq!(
        lost["client"],
        serde_json::json!([{ "table": "entries", "added": 2, "changed": 0, "removed": 0 }]),
        "{r}"
    );
    assert_eq!(lost["metadata"], serde_json::json!([]), "{r}");

    assert_eq!(current(&root), Some(PathBuf::from("releases/1.0.0")));
    assert_eq!(dumps(&root), base.pre_upgrade, "the databases are not the pre-upgrade ones");
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 1.0.0\n"), "{v}");
    fieldlog(&root, &["check"]).expect_ok();
    check(&root).expect_ok();
    assert_eq!(show(&root).get("notes").map(String::as_str), Some("3"));
}

#[test]
fn rollback_runs_down_scripts_when_every_major_step_has_one() {
    let root = copy_of(site_2_to_3(), "down-rollback");
    let hist_before: BTreeMap<&str, usize> =
        ["metadata", "client"].iter().map(|d| (*d, schema_history(&root.join(format!("data/{d}.db"))).len())).collect();

    let r = rollback(&root, &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let j = r.json();
    assert_eq!((j["rollback"]["from"].as_str(), j["rollback"]["to"].as_str()), (Some("3.0.0"), Some("2.0.0")), "{r}");
    assert_eq!(
        modes(&j),
        BTreeMap::from([("client".into(), "down".into()), ("metadata".into(), "down".into())]),
        "{r}"
    );

    assert_eq!(current(&root), Some(PathBuf::from("releases/2.0.0")));
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 2.0.0\n"), "{v}");
    fieldlog(&root, &["check"]).expect_ok();
    check(&root).expect_ok();

    // One `down` row per database, for its 2.0 step's down script.
    for (db, file) in [("client", "2.0_rename_notes.down.sql"), ("metadata", "2.0_split_label.down.sql")] {
        let rows = schema_history(&root.join(format!("data/{db}.db")));
        assert_eq!(rows.len(), hist_before[db] + 1, "{db}: {rows:?}");
        let (version, f, direction, ok, release) = rows.last().unwrap().clone();
        assert_eq!(
            (version.as_str(), f.as_str(), direction.as_str(), ok),
            ("2.0", file, "down", true),
            "{db}: {rows:?}"
        );
        assert_eq!(release, "3.0.0", "{db}: the down script is run by the release being left");
    }
    let st = status(&root);
    let dbs = db_versions(&st);
    assert_eq!(dbs.get("client"), Some(&("1.1".to_string(), true)), "{st}");
    assert_eq!(dbs.get("metadata"), Some(&("1.1".to_string(), true)), "{st}");

    // Every note kept, those written on 3.0.0 too, back in the 1.x shape.
    assert_eq!(show(&root).get("notes").map(String::as_str), Some("4"));
    let bodies: Vec<String> = query_rows(&root.join("data/client.db"), "SELECT body FROM notes ORDER BY id")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(bodies, ["written on two", "also on two", "written on three", "three again"]);
    // Labels joined again.
    let labels: Vec<String> = query_rows(&root.join("data/metadata.db"), "SELECT label FROM instruments ORDER BY id")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(labels, ["thermometer:T-100", "barometer:B-7", "anemometer:A-42"]);
}

/// After rolling back below a kept newer release (down scripts or a data restore), the site must be
/// able to move forward to it again: `apply` of the same bundle, or — when apply refuses because the
/// release is kept — `rollback --to` it, as apply's own hint says.
fn forward_again(root: &Path, b: &Path, to: &str) {
    let r = apply(root, b, &[]);
    if r.code != Some(0) {
        let (kind, _) = expect_error(&r, 4);
        assert_eq!(kind, "release_exists", "{r}");
        let rr = rollback(root, &["--to", to]);
        assert_eq!(
            rr.code,
            Some(0),
            "cannot go forward to {to} again: apply refuses (release_exists) and its hint fails:\n{r}\n{rr}"
        );
    }
    assert_eq!(current(root), Some(PathBuf::from(format!("releases/{to}"))));
    fieldlog(root, &["check"]).expect_ok();
    check(root).expect_ok();
}

#[test]
fn after_a_down_rollback_the_newer_release_can_be_installed_again() {
    let root = copy_of(site_2_to_3(), "down-then-forward");
    rollback(&root, &[]).expect_ok();
    forward_again(&root, bundle_3_with_downs(), "3.0.0");
    assert_eq!(show(&root).get("entries").map(String::as_str), Some("4"));
}

#[test]
fn after_a_restore_rollback_the_newer_release_can_be_installed_again() {
    let root = copy_of(&site_1_to_4().root, "restore-then-forward");
    rollback(&root, &["--to", "1.0.0", "--restore-data", "--yes"]).expect_ok();
    add_notes(&root, &["written on one after the rollback"]);
    forward_again(&root, bundle("4.0.0"), "4.0.0");
    assert_eq!(show(&root).get("entries").map(String::as_str), Some("4"));
}

#[test]
fn check_exits_non_zero_exactly_when_the_current_release_cannot_run() {
    let root = copy_of(&site_1_to_4().root, "check");
    let r = check(&root);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.json()["ok"], true, "{r}");

    // Code rolled back by hand across the major step: 1.0.0 cannot run on 2.1 databases.
    let link = root.join("current");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("releases/1.0.0", &link).unwrap();
    assert_eq!(fieldlog(&root, &["check"]).code, Some(1), "the app itself agrees it cannot run");
    let r = check(&root);
    let (kind, msg) = expect_error(&r, 4);
    assert_eq!(kind, "incompatible", "{r}");
    assert!(msg.contains("client") && msg.contains("metadata"), "{msg}");
    // Human form: one error line.
    let h = bi([OsStr::new("check"), OsStr::new("--root"), root.as_os_str()]);
    assert_eq!(h.code, Some(4), "{h}");
    h.expect_one_line_error();

    // Back on 4.0.0: fine again.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("releases/4.0.0", &link).unwrap();
    check(&root).expect_ok();

    // A database gone: cannot run.
    std::fs::remove_file(root.join("data/client.db")).unwrap();
    let r = check(&root);
    let (kind, msg) = expect_error(&r, 4);
    assert_eq!(kind, "incompatible", "{r}");
    assert!(msg.contains("client"), "{msg}");

    // Nothing installed (not even a site): cannot run either.
    let empty = new_root("check-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = check(&empty);
    assert!(matches!(r.code, Some(2) | Some(4)), "check of an empty directory must fail:\n{r}");
    assert_eq!(r.json()["ok"], false, "{r}");
}
