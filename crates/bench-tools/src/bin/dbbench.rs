//! `dbbench --dir DIR --mb N --reps R`
//!
//! Builds a SQLite database of about N MB at `DIR/site/data/client.db` (kept between runs when it
//! already has the size), then alternates, R times: the installer's backup of it
//! (`bundle_install::db::open(...).backup()`, which includes the fsync and the BLAKE3 checksum of the
//! copy) and `cp` of the same file followed by an fsync of the copy; then the installer's restore from
//! that backup (which checks the backup's checksum, then copies it over the live database in place
//! under an EXCLUSIVE lock and fsyncs it) and `cp` of the backup over a scratch copy followed by an
//! fsync. Prints one JSON
//! object with every sample in milliseconds (`cp_ms` without its fsync too).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use bench_tools::{die, ms, timed};
use rusqlite::Connection;

fn cp_and_sync(from: &Path, to: &Path) -> (f64, f64) {
    let _ = fs::remove_file(to);
    let (st, cp) = timed(|| Command::new("cp").arg(from).arg(to).status());
    if !st.map(|s| s.success()).unwrap_or(false) {
        die(format!("cp {} {} failed", from.display(), to.display()));
    }
    let (r, sync) = timed(|| File::open(to).and_then(|f| f.sync_all()));
    r.unwrap_or_else(|e| die(e));
    (ms(cp), ms(cp + sync))
}

fn make_db(path: &Path, mb: u64) {
    if let Ok(m) = fs::metadata(path) {
        if m.len() >= mb * 1_000_000 {
            return;
        }
    }
    let _ = fs::remove_file(path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| die(e));
    }
    let mut c = Connection::open(path).unwrap_or_else(|e| die(e));
    c.execute_batch(
        "PRAGMA journal_mode = DELETE; CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, body BLOB)",
    )
    .unwrap_or_else(|e| die(e));
    let tx = c.transaction().unwrap_or_else(|e| die(e));
    {
        let mut st =
            tx.prepare("INSERT INTO items (name, body) VALUES (?1, randomblob(900))").unwrap_or_else(|e| die(e));
        // ~1 KB per row with the record overhead.
        let rows = mb * 1_000_000 / 1010;
        for i in 0..rows {
            st.execute([format!("item {i}")]).unwrap_or_else(|e| die(e));
        }
    }
    tx.commit().unwrap_or_else(|e| die(e));
    c.execute_batch("VACUUM").ok();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut mb, mut reps) = (None::<PathBuf>, 1000u64, 3usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--mb" => mb = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| die("--mb N")),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| die("--reps N")),
            other => die(format!("unknown argument {other}")),
        }
    }
    let dir = dir.unwrap_or_else(|| die("usage: dbbench --dir DIR --mb N --reps R"));
    let root = dir.join("site");
    let db_path = root.join("data/client.db");
    let (_, create) = timed(|| make_db(&db_path, mb));
    let size = fs::metadata(&db_path).unwrap_or_else(|e| die(e)).len();
    eprintln!("dbbench: database {:.0} MB ready ({:.1} s)", size as f64 / 1e6, create.as_secs_f64());

    let mut engine = bundle_install::db::open("client", "sqlite", &root, "data/client.db").unwrap_or_else(|e| die(e));
    let backups = dir.join("backups");
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch).unwrap_or_else(|e| die(e));
    let (mut backup_ms, mut backup_cp_ms, mut backup_cp_sync_ms) = (vec![], vec![], vec![]);
    let (mut restore_ms, mut restore_cp_ms, mut restore_cp_sync_ms) = (vec![], vec![], vec![]);
    for i in 0..reps {
        let bdir = backups.join(format!("b{i}"));
        let _ = fs::remove_dir_all(&bdir);
        let (record, t) = timed(|| engine.backup(&bdir));
        let record = record.unwrap_or_else(|e| die(e));
        backup_ms.push(ms(t));
        let (cp, cps) = cp_and_sync(&db_path, &scratch.join("copy.db"));
        backup_cp_ms.push(cp);
        backup_cp_sync_ms.push(cps);

        let (r, t) = timed(|| engine.restore(&record, &bdir));
        r.unwrap_or_else(|e| die(e));
        restore_ms.push(ms(t));
        let (cp, cps) = cp_and_sync(&bdir.join("client.db"), &scratch.join("copy.db"));
        restore_cp_ms.push(cp);
        restore_cp_sync_ms.push(cps);
        let _ = fs::remove_dir_all(&bdir);
        eprintln!(
            "dbbench: rep {}: backup {:.0} ms vs cp {:.0} (+fsync {:.0}); restore {:.0} ms vs cp {:.0} (+fsync {:.0})",
            i + 1,
            backup_ms[i],
            backup_cp_ms[i],
            backup_cp_sync_ms[i],
            restore_ms[i],
            restore_cp_ms[i],
            restore_cp_sync_ms[i]
        );
    }
    engine.close().unwrap_or_else(|e| die(e));
    let _ = fs::remove_dir_all(&scratch);
    println!(
        "{}",
        serde_json::json!({
            "db_bytes": size,
            "backup_ms": backup_ms, "backup_cp_ms": backup_cp_ms, "backup_cp_sync_ms": backup_cp_sync_ms,
            "restore_ms": restore_ms, "restore_cp_ms": restore_cp_ms, "restore_cp_sync_ms": restore_cp_sync_ms,
        })
    );
}
