//! Trimming old releases beyond `keep_releases` (never the current or the previous one), with the
//! backups only they needed. A backup that a kept release needs for `rollback --restore-data` stays.

use std::collections::BTreeSet;

use crate::error::{InstallError, Result};
use crate::fsutil;
use crate::report::Reporter;
use crate::site::Site;

pub fn prune(site: &Site, keep: u32, protect: &[String], reporter: &dyn Reporter) -> Result<()> {
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
    for r in dropped {
        reporter.step(&format!("removing old release {}", r.version));
        fsutil::remove_tree(&site.release_dir(&r.version)).map_err(|e| InstallError::io(format!("removing releases/{}", r.version), e))?;
        if let Some(b) = &r.backup {
            if !needed.contains(b.as_str()) {
                fsutil::remove_tree(&site.backups().join(b)).map_err(|e| InstallError::io(format!("removing backups/{b}"), e))?;
            }
        }
    }
    Ok(())
}
