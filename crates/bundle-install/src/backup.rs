//! Backups taken before the first database step of a run: every database (through its engine's
//! consistent online copy) and the running release's config, with `record.json` listing versions
//! and checksums. Restores go through [`crate::journal::restore_db`].

use serde_json::json;

use crate::db;
use crate::error::{InstallError, Result};
use crate::fsutil;
use crate::journal::DbRef;
use crate::site::Site;

/// Takes `backups/<id>/`. Written into a temporary directory and renamed, so a backup directory with
/// a `record.json` is always complete.
/// `running` is the release in use while the backup is taken (its config is copied too); `purpose`
/// says what the backup is for, e.g. `upgrade to 4.0.0`.
pub fn take(site: &Site, id: &str, dbs: &[DbRef], running: Option<&str>, purpose: &str) -> Result<()> {
    fsutil::ensure_real_dir(&site.backups()).map_err(|e| InstallError::io("backups/", e))?;
    let final_dir = site.backups().join(id);
    let tmp = site.backups().join(format!(".{id}.partial"));
    fsutil::remove_tree(&tmp).map_err(|e| InstallError::io(tmp.display(), e))?;
    fsutil::remove_tree(&final_dir).map_err(|e| InstallError::io(final_dir.display(), e))?;
    std::fs::create_dir(&tmp).map_err(|e| InstallError::io(tmp.display(), e))?;
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
        "taken_at": crate::time::now_rfc3339(),
        "release": running,
        "purpose": purpose,
        "databases": records,
        "config": config,
    });
    fsutil::write_atomic(&tmp.join("record.json"), &serde_json::to_vec_pretty(&record).expect("serialises"))
        .map_err(|e| InstallError::io("writing the backup record", e))?;
    std::fs::rename(&tmp, &final_dir).map_err(|e| InstallError::io(final_dir.display(), e))?;
    fsutil::sync_dir(&site.backups()).map_err(|e| InstallError::io("backups/", e))
}
