//! The site's trust store: `trust/*.pub` are accepted, `trust/revoked/*.pub` are refused even when
//! also trusted, `trust/retired/*.pub` were replaced by a key rotation statement (no longer accepted,
//! kept for the record). Several keys at once make key rotation possible.

use std::path::{Path, PathBuf};

use bundle_core::signature::{KeyId, PublicKey};

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

/// Whether key `id` is revoked on this site: the one revocation check every path that would trust
/// a key goes through (key rotation included). A revocation list that cannot be read counts as
/// revoking everything, so an unreadable `trust/revoked/` never lets a key in.
pub fn is_revoked(site: &Site, id: &KeyId) -> bool {
    match site.revoked_keys() {
        Ok(keys) => keys.iter().any(|k| k.key_id() == id),
        Err(_) => true,
    }
}

fn retired_dir(site: &Site) -> PathBuf {
    site.trust().join("retired")
}

/// Trusts `key` (a key rotation statement applied): `trust/<KEYID>.pub`. Refuses a revoked key.
pub fn add_rotated(site: &Site, key: &PublicKey) -> Result<()> {
    if is_revoked(site, key.key_id()) {
        return Err(InstallError::new(crate::error::Outcome::Verification, "revoked_key", format!("key {} is revoked on this site", key.key_id())));
    }
    fsutil::ensure_real_dir(&site.trust()).map_err(|e| InstallError::io("trust/", e))?;
    fsutil::write_atomic(&key_file(&site.trust(), key), key.to_minisign().as_bytes()).map_err(|e| InstallError::io("writing to trust/", e))
}

/// Undoes [`add_rotated`].
pub fn remove_rotated(site: &Site, key: &PublicKey) -> Result<()> {
    match std::fs::remove_file(key_file(&site.trust(), key)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(InstallError::io("removing from trust/", e)),
        _ => fsutil::sync_dir(&site.trust()).map_err(|e| InstallError::io("trust/", e)),
    }
}

/// Retires `key` (replaced by a rotation): moved from `trust/` to `trust/retired/`.
pub fn retire(site: &Site, key: &PublicKey) -> Result<()> {
    let dir = retired_dir(site);
    fsutil::ensure_real_dir(&dir).map_err(|e| InstallError::io("trust/retired/", e))?;
    fsutil::write_atomic(&key_file(&dir, key), key.to_minisign().as_bytes()).map_err(|e| InstallError::io("writing to trust/retired/", e))?;
    remove_rotated(site, key)
}

/// Undoes [`retire`]: the key is trusted again (unless revoked meanwhile).
pub fn unretire(site: &Site, key: &PublicKey) -> Result<()> {
    if !is_revoked(site, key.key_id()) {
        fsutil::write_atomic(&key_file(&site.trust(), key), key.to_minisign().as_bytes()).map_err(|e| InstallError::io("writing to trust/", e))?;
    }
    let _ = std::fs::remove_file(key_file(&retired_dir(site), key));
    Ok(())
}

/// Keys retired by rotations and not trusted again since (`trust add`), for `trust list`.
pub fn retired_keys(site: &Site) -> Vec<KeyId> {
    let Ok(entries) = std::fs::read_dir(retired_dir(site)) else { return Vec::new() };
    let trusted = site.trusted_keys().unwrap_or_default();
    let mut ids: Vec<KeyId> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| PublicKey::read_file(&e.path()).ok())
        .map(|k| *k.key_id())
        .filter(|id| !trusted.iter().any(|t| t.key_id() == id))
        .collect();
    ids.sort();
    ids
}
