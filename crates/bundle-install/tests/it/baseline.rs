//! `apply --baseline DB=VERSION`: a database that already has the app's tables but no history is
//! refused until the admin declares its version; then the declaration is recorded as a baseline row
//! and the chain runs from there, keeping the rows that were already in it.

use crate::common::*;

#[test]
fn unversioned_database_is_refused_then_baselined_and_migrated() {
    let root = new_root("baseline");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let client = root.join("data/client.db");
    {
        let conn = rusqlite::Connection::open(&client).unwrap();
        let init = std::fs::read_to_string(test_support::fixture_specs().join("1.0.0/migrations/client/1.0_init.sql"))
            .unwrap();
        conn.execute_batch(&init).unwrap();
        conn.execute("INSERT INTO notes(site, body, created) VALUES ('north', 'legacy row', '2020-01-01')", [])
            .unwrap();
    }

    // Refused, and nothing installed.
    let r = apply(&root, bundle("1.0.0"), &[]);
    let (kind, message) = expect_error(&r, 4);
    assert_eq!(kind, "unversioned", "{r}");
    assert!(message.contains("--baseline client=VERSION"), "{message}");
    assert!(current(&root).is_none());
    assert_eq!(query_i64(&client, "SELECT count(*) FROM notes"), 1);

    // A baseline for a database that does not need one is a usage error.
    let r = apply(&root, bundle("1.0.0"), &["--baseline", "client=1.0", "--baseline", "metadata=1.0"]);
    assert_eq!(expect_error(&r, 2).0, "baseline_not_needed", "{r}");

    // Declared: recorded as a baseline row, the rest of the site installed.
    let r = apply(&root, bundle("1.0.0"), &["--baseline", "client=1.0"]);
    assert_eq!(r.code, Some(0), "{r}");
    let rows = schema_history(&client);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].2.as_str()), ("1.0", "baseline"), "{rows:?}");

    // From the baseline on, the chain runs as for any other site, and the legacy row is carried.
    apply_ok(&root, bundle("4.0.0"));
    let files: Vec<String> = schema_history(&client).into_iter().map(|r| r.1).collect();
    assert_eq!(files, ["<baseline>", "1.1_add_author.sql", "2.0_rename_notes.sql", "2.1_backfill_words.py"]);
    assert_eq!(query_i64(&client, "SELECT count(*) FROM entries WHERE content = 'legacy row'"), 1);
}
