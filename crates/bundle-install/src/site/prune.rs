//! Trimming old releases beyond `keep_releases` (never the current or the previous one), with the
//! backups only they needed. A backup that a kept release needs for `rollback --restore-data` stays.
//! Backups no release refers to (rollback safety copies, the backup of a release set aside when it
//! was installed again) are trimmed to the newest `keep_releases` of them: a safety copy is the only
//! copy of the rows a `--restore-data` discarded, so the newest stay, but without a bound they would
//! pile up with every rollback.

use std::collections::BTreeSet;

use crate::error::{InstallError, Result};
use crate::fs::durable;
use crate::report::Reporter;
use crate::site::Site;

pub(crate) fn prune(site: &Site, keep: u32, protect: &[String], reporter: &dyn Reporter) -> Result<()> {
    let releases = site.releases_installed().map_err(|e| InstallError::io("listing releases/", e))?;
    let keep = keep.max(2) as usize;
    let mut kept: Vec<_> = Vec::new();
    let mut dropped: Vec<_> = Vec::new();
    // Newest installs first; protected ones always stay.
    for (n, r) in releases.iter().rev().enumerate() {
        if protect.contains(&r.version) || n < keep {
            kept.push(r);
        } else {
            dropped.push(r);
        }
    }
    let needed: BTreeSet<&str> = kept.iter().filter_map(|r| r.backup.as_deref()).collect();
    let referenced: BTreeSet<String> = releases.iter().filter_map(|r| r.backup.clone()).collect();
    for r in dropped {
        reporter.step(&format!("removing old release {}", r.version));
        durable::remove_tree(&site.release_dir(&r.version))
            .map_err(|e| InstallError::io(format!("removing releases/{}", r.version), e))?;
        if let Some(b) = &r.backup {
            if !needed.contains(b.as_str()) {
                durable::remove_tree(&site.backups().join(b))
                    .map_err(|e| InstallError::io(format!("removing backups/{b}"), e))?;
            }
        }
    }
    // Ids start with a UTC time stamp, so name order is age order.
    let mut orphans: Vec<String> = complete_backups(site)?.into_iter().filter(|id| !referenced.contains(id)).collect();
    orphans.sort();
    let excess = orphans.len().saturating_sub(keep);
    for id in &orphans[..excess] {
        reporter.step(&format!("removing old backup {id}"));
        durable::remove_tree(&site.backups().join(id))
            .map_err(|e| InstallError::io(format!("removing backups/{id}"), e))?;
    }
    Ok(())
}

/// Ids of the finished backups (a directory with a `record.json`; `.<id>.partial` ones are a run's
/// work in progress and left to it or to `recover`).
fn complete_backups(site: &Site) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(site.backups()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(InstallError::io("listing backups/", e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| InstallError::io("listing backups/", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !name.starts_with('.') && entry.path().join("record.json").is_file() {
            ids.push(name);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Silent;
    use crate::site::ReleaseInfo;

    fn release(site: &Site, version: &str, installed_at: &str, backup: Option<&str>) {
        let dir = site.release_dir(version);
        std::fs::create_dir_all(&dir).unwrap();
        let info = ReleaseInfo {
            app: "app".into(),
            version: version.into(),
            sequence: 1,
            bundle_id: "id".into(),
            key_id: "key".into(),
            installed_at: installed_at.into(),
            from: None,
            backup: backup.map(String::from),
        };
        std::fs::write(dir.join("release.json"), serde_json::to_vec(&info).unwrap()).unwrap();
    }

    fn backup(site: &Site, id: &str) {
        let dir = site.backups().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("record.json"), b"{}").unwrap();
    }

    fn backups(site: &Site) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(site.backups())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn releases_beyond_keep_go_with_their_backups_and_orphans_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::new(tmp.path());
        release(&site, "1.0.0", "2026-01-01T00:00:00Z", None);
        release(&site, "2.0.0", "2026-01-02T00:00:00Z", Some("20260102T000000Z-2.0.0"));
        release(&site, "3.0.0", "2026-01-03T00:00:00Z", Some("20260103T000000Z-3.0.0"));
        release(&site, "4.0.0", "2026-01-04T00:00:00Z", Some("20260104T000000Z-4.0.0"));
        for id in ["20260102T000000Z-2.0.0", "20260103T000000Z-3.0.0", "20260104T000000Z-4.0.0"] {
            backup(&site, id);
        }
        // Rollback safety copies and the backup of a release set aside: nobody refers to them.
        for id in [
            "20260105T000000Z-rollback-3.0.0",
            "20260106T000000Z-rollback-3.0.0",
            "20260107T000000Z-3.0.0",
            "20260108T000000Z-rollback-3.0.0",
        ] {
            backup(&site, id);
        }
        // A backup in progress is never touched.
        std::fs::create_dir_all(site.backups().join(".20260109T000000Z-4.0.0.partial")).unwrap();

        // A rollback's commit prunes nothing.
        prune(&site, u32::MAX, &[], &Silent).unwrap();
        assert_eq!(backups(&site).len(), 8);

        // Keep 2: releases 3 and 4 with their backups, 2.0.0's backup goes with it, and of the four
        // backups nobody refers to the newest two stay.
        prune(&site, 2, &["4.0.0".into()], &Silent).unwrap();
        let releases: Vec<String> = site.releases_installed().unwrap().into_iter().map(|r| r.version).collect();
        assert_eq!(releases, ["3.0.0", "4.0.0"]);
        assert_eq!(
            backups(&site),
            [
                ".20260109T000000Z-4.0.0.partial",
                "20260103T000000Z-3.0.0",
                "20260104T000000Z-4.0.0",
                "20260107T000000Z-3.0.0",
                "20260108T000000Z-rollback-3.0.0",
            ]
        );
    }
}
