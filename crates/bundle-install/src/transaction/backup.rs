//! Backups taken before the first database step of a run: every database (through its engine's
//! consistent online copy) and the running release's config, with `record.json` listing versions
//! and checksums. Restores go through [`crate::transaction::journal::restore_db`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use crate::db;
use crate::error::{InstallError, Result};
use crate::fs::durable;
use crate::site::Site;
use crate::transaction::journal::DbRef;

/// Takes `backups/<id>/`. Written into a temporary directory and renamed, so a backup directory with
/// a `record.json` is always complete.
/// `running` is the release in use while the backup is taken (its config is copied too); `purpose`
/// says what the backup is for, e.g. `upgrade to 4.0.0`.
pub(crate) fn take(site: &Site, id: &str, dbs: &[DbRef], running: Option<&str>, purpose: &str) -> Result<()> {
    durable::ensure_real_dir_mode(&site.backups(), 0o700).map_err(|e| InstallError::io("backups/", e))?;
    // Backups hold every row of every database: owner only, also on a site laid out before this rule.
    std::fs::set_permissions(site.backups(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| InstallError::io("backups/", e))?;
    let final_dir = site.backups().join(id);
    let tmp = site.backups().join(format!(".{id}.partial"));
    durable::remove_tree(&tmp).map_err(|e| InstallError::io(tmp.display(), e))?;
    durable::remove_tree(&final_dir).map_err(|e| InstallError::io(final_dir.display(), e))?;
    durable::create_dir_mode(&tmp, 0o700).map_err(|e| InstallError::io(tmp.display(), e))?;
    let mut records = Vec::new();
    for d in dbs {
        let mut engine = db::open(&d.name, &d.engine, &site.root, &d.path)?;
        let record = engine.backup(&tmp).map_err(|e| InstallError::failed(e.kind(), e.to_string()))?;
        engine.close()?;
        records.push(record);
    }
    let mut config = None;
    if let Some(from) = running {
        if let Some(c) = site.release_manifest(from).ok().and_then(|m| m.config) {
            let src = site.release_dir(from).join("config").join(&c.file);
            if src.exists() {
                std::fs::copy(&src, tmp.join(&c.file)).map_err(|e| InstallError::io("backing up the config", e))?;
                let (sha256, _) = bundle_core::hash::hash_file(&src).map_err(|e| InstallError::io(src.display(), e))?;
                config = Some(json!({ "file": c.file, "version": c.version, "sha256": sha256 }));
            }
        }
    }
    let record = json!({
        "id": id,
        "taken_at": bundle_core::time::now_rfc3339(),
        "release": running,
        "purpose": purpose,
        "databases": records,
        "config": config,
    });
    make_private(&tmp).map_err(|e| InstallError::io(tmp.display(), e))?;
    durable::write_atomic_mode(
        &tmp.join("record.json"),
        &serde_json::to_vec_pretty(&record).expect("serialises"),
        0o600,
    )
    .map_err(|e| InstallError::io("writing the backup record", e))?;
    std::fs::rename(&tmp, &final_dir).map_err(|e| InstallError::io(final_dir.display(), e))?;
    durable::sync_dir(&site.backups()).map_err(|e| InstallError::io("backups/", e))
}

/// Every file of a backup 0600 and every directory 0700, whatever the engines' tools created them
/// with (SQLite and `pg_dump` follow the umask): a backup is as secret as the most secret database
/// in it. Never follows a link.
fn make_private(dir: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let ft = entry.file_type();
        let mode = if ft.is_dir() {
            0o700
        } else if ft.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
