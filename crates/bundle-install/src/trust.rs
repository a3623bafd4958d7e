//! The site's trust store: `trust/*.pub` are accepted, `trust/revoked/*.pub` are refused even when
//! also trusted. Several keys at once make key rotation possible.

use std::path::{Path, PathBuf};

use bundle_core::signature::PublicKey;

use crate::error::{InstallError, Result};
use crate::fsutil;
use crate::site::Site;

fn key_file(dir: &Path, key: &PublicKey) -> PathBuf {
    dir.join(format!("{}.pub", key.key_id()))
}

/// Stores keys (first install, `trust add`), named by key id.
pub fn store_keys(site: &Site, paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    fsutil::ensure_real_dir(&site.trust()).map_err(|e| InstallError::io("trust/", e))?;
    let mut out = Vec::new();
    for p in paths {
        let key = PublicKey::read_file(p).map_err(|e| InstallError::usage(e.kind(), e.to_string()))?;
        fsutil::write_atomic(&key_file(&site.trust(), &key), key.to_minisign().as_bytes()).map_err(|e| InstallError::io("writing to trust/", e))?;
        out.push(key);
    }
    Ok(out)
}

/// Moves a key to `trust/revoked/` (by key id or by a .pub file).
pub fn revoke(site: &Site, key: &str) -> Result<PublicKey> {
    let key = if Path::new(key).exists() {
        PublicKey::read_file(Path::new(key)).map_err(|e| InstallError::usage(e.kind(), e.to_string()))?
    } else {
        site.trusted_keys()
            .map_err(|e| InstallError::io("reading trust/", e))?
            .into_iter()
            .find(|k| k.key_id().to_string().eq_ignore_ascii_case(key))
            .ok_or_else(|| InstallError::usage("unknown_key", format!("no trusted key with id {key}")))?
    };
    let revoked = site.trust().join("revoked");
    fsutil::ensure_real_dir(&site.trust()).and_then(|_| fsutil::ensure_real_dir(&revoked)).map_err(|e| InstallError::io("trust/revoked/", e))?;
    fsutil::write_atomic(&key_file(&revoked, &key), key.to_minisign().as_bytes()).map_err(|e| InstallError::io("writing to trust/revoked/", e))?;
    let _ = std::fs::remove_file(key_file(&site.trust(), &key));
    Ok(key)
}
