//! The site's trust store: `trust/*.pub` are accepted, `trust/revoked/*.pub` are refused even when
//! also trusted, `trust/retired/*.pub` were replaced by a key rotation statement (no longer accepted,
//! kept for the record). Several keys at once make key rotation possible.
//!
//! Revocation is decided in one place, [`is_revoked`], and it wins over every source of keys: the
//! site's `trust/`, `--trust` on a first install or on a site whose only key was revoked, `verify
//! --root` with `--trust`, and `trust add`. Only `trust unrevoke` takes a key out of `revoked/`.

use std::path::{Path, PathBuf};

use bundle_core::signature::{KeyId, PublicKey, SignatureError};
use bundle_core::verify::VerifyError;

use crate::error::{InstallError, Outcome, Result};
use crate::fs::durable;
use crate::site::Site;

fn key_file(dir: &Path, key: &PublicKey) -> PathBuf {
    dir.join(format!("{}.pub", key.key_id()))
}

fn store_error(site: &Site, e: std::io::Error) -> InstallError {
    InstallError::usage("trust_store", format!("reading {}: {e}", site.trust().display()))
}

/// The key ids revoked on this site (`trust/revoked/*.pub`, matched by the key inside the file,
/// whatever the file is called). An unreadable revocation list fails closed (`trust_store`).
pub fn revoked_ids(site: &Site) -> Result<Vec<KeyId>> {
    Ok(site.revoked_keys().map_err(|e| store_error(site, e))?.iter().map(|k| *k.key_id()).collect())
}

/// Whether `id` is revoked on this site: the one rule every key source goes through.
pub fn is_revoked(revoked: &[KeyId], id: &KeyId) -> bool {
    revoked.contains(id)
}

/// The `revoked_key` refusal (exit 3: it is about the bundle's signer, like `untrusted_key`).
pub fn revoked_error(id: &KeyId) -> InstallError {
    InstallError::new(Outcome::Verification, "revoked_key", format!("key {id} is revoked on this site; bundles signed with it are refused"))
        .with_hint("get a bundle signed by a key the site still trusts; only `bundle-install trust unrevoke` takes a key out of trust/revoked/")
}

/// Fails with `revoked_key` when any of `keys` is revoked on the site.
fn refuse_revoked(revoked: &[KeyId], keys: &[PublicKey]) -> Result<()> {
    match keys.iter().find(|k| is_revoked(revoked, k.key_id())) {
        Some(k) => Err(revoked_error(k.key_id())),
        None => Ok(()),
    }
}

fn read_cli_keys(cli: &[PathBuf]) -> Result<Vec<PublicKey>> {
    cli.iter().map(|p| PublicKey::read_file(p).map_err(|e| InstallError::usage(e.kind(), e.to_string()))).collect()
}

/// The keys a bundle may be verified with, and whether they came from `--trust` on a site that had
/// none (then they are stored in `trust/` once the bundle verified). Never a revoked key: a
/// `--trust` key revoked on the site is refused (`revoked_key`) before anything else, whether or not
/// the site still trusts other keys.
pub fn keys_for(site: &Site, cli: &[PathBuf]) -> Result<(Vec<PublicKey>, bool)> {
    let revoked = revoked_ids(site)?;
    let given = read_cli_keys(cli)?;
    refuse_revoked(&revoked, &given)?;
    let site_keys = site.trusted_keys().map_err(|e| store_error(site, e))?;
    if site_keys.is_empty() {
        if given.is_empty() {
            let hint = if revoked.is_empty() {
                "on a first install pass --trust KEY.pub; the key is then stored in trust/".to_string()
            } else {
                format!("every key of this site is revoked; trust a new one with `bundle-install trust add --root {} NEW.pub`", site.root.display())
            };
            return Err(InstallError::usage(
                "no_trusted_keys",
                format!("{} holds no trusted keys", site.trust().display()),
            )
            .with_hint(hint));
        }
        return Ok((given, true));
    }
    for k in &given {
        if !site_keys.iter().any(|s| s.key_id() == k.key_id()) {
            return Err(InstallError::usage(
                "untrusted_cli_key",
                format!("key {} is not in the site's trust store", k.key_id()),
            )
            .with_hint(format!("add it with `bundle-install trust add --root {} KEY.pub`", site.root.display())));
        }
    }
    Ok((site_keys, false))
}

/// `verify`'s keys: the `--trust` keys when given (minus none: a revoked one is refused when a
/// site is named), else the site's trusted keys.
pub fn keys_for_verify(site: Option<&Site>, cli: &[PathBuf]) -> Result<Vec<PublicKey>> {
    let given = read_cli_keys(cli)?;
    let Some(site) = site else { return Ok(given) };
    refuse_revoked(&revoked_ids(site)?, &given)?;
    if !given.is_empty() {
        return Ok(given);
    }
    let keys = site.trusted_keys().map_err(|e| store_error(site, e))?;
    if keys.is_empty() {
        return Err(InstallError::usage(
            "no_trusted_keys",
            format!("{} holds no trusted keys", site.trust().display()),
        ));
    }
    Ok(keys)
}

/// A verification error as the installer reports it: a bundle signed by a key revoked on this site
/// is `revoked_key`, not the generic `untrusted_key`.
pub fn verify_error(site: &Site, e: VerifyError) -> InstallError {
    if let VerifyError::Signature(SignatureError::UntrustedKey(id)) = &e {
        if revoked_ids(site).is_ok_and(|r| is_revoked(&r, id)) {
            return revoked_error(id);
        }
    }
    e.into()
}

/// Stores keys (first install, `trust add`), named by key id. A key revoked on the site is refused
/// (`revoked_key`, exit 4) and nothing is stored: un-revoking is `trust unrevoke`, never a side
/// effect of adding.
pub fn store_keys(site: &Site, paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    let keys = read_cli_keys(paths)?;
    let revoked = revoked_ids(site)?;
    if let Some(k) = keys.iter().find(|k| is_revoked(&revoked, k.key_id())) {
        return Err(InstallError::refused(
            "revoked_key",
            format!("key {} is revoked on this site; it was not added", k.key_id()),
        )
        .with_hint(format!(
            "if the revocation was a mistake, run `bundle-install trust unrevoke --root {} {}`",
            site.root.display(),
            k.key_id()
        )));
    }
    durable::ensure_real_dir(&site.trust()).map_err(|e| InstallError::io("trust/", e))?;
    for key in &keys {
        durable::write_atomic(&key_file(&site.trust(), key), key.to_minisign().as_bytes())
            .map_err(|e| InstallError::io("writing to trust/", e))?;
    }
    Ok(keys)
}

/// Finds a key named by a .pub file or by key id among `candidates`.
fn named_key(key: &str, candidates: Vec<PublicKey>, what: &str) -> Result<PublicKey> {
    if Path::new(key).exists() {
        return PublicKey::read_file(Path::new(key)).map_err(|e| InstallError::usage(e.kind(), e.to_string()));
    }
    candidates
        .into_iter()
        .find(|k| k.key_id().to_string().eq_ignore_ascii_case(key))
        .ok_or_else(|| InstallError::usage("unknown_key", format!("no {what} key with id {key}")))
}

/// Moves a key to `trust/revoked/` (by key id or by a .pub file).
pub fn revoke(site: &Site, key: &str) -> Result<PublicKey> {
    let key = named_key(key, site.trusted_keys().map_err(|e| store_error(site, e))?, "trusted")?;
    let revoked = site.trust().join("revoked");
    durable::ensure_real_dir(&site.trust())
        .and_then(|_| durable::ensure_real_dir(&revoked))
        .map_err(|e| InstallError::io("trust/revoked/", e))?;
    durable::write_atomic(&key_file(&revoked, &key), key.to_minisign().as_bytes())
        .map_err(|e| InstallError::io("writing to trust/revoked/", e))?;
    let _ = std::fs::remove_file(key_file(&site.trust(), &key));
    Ok(key)
}

/// Takes a key out of `trust/revoked/` and trusts it again: the one explicit way back.
pub fn unrevoke(site: &Site, key: &str) -> Result<PublicKey> {
    let key = named_key(key, site.revoked_keys().map_err(|e| store_error(site, e))?, "revoked")?;
    let revoked_dir = site.trust().join("revoked");
    // Every file of revoked/ holding this key goes, whatever it is called.
    let entries = std::fs::read_dir(&revoked_dir).map_err(|e| InstallError::io("trust/revoked/", e))?;
    let mut found = false;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "pub")
            && PublicKey::read_file(&p).is_ok_and(|k| k.key_id() == key.key_id())
        {
            std::fs::remove_file(&p).map_err(|e| InstallError::io(p.display(), e))?;
            found = true;
        }
    }
    if !found {
        return Err(InstallError::usage("unknown_key", format!("key {} is not revoked on this site", key.key_id())));
    }
    durable::sync_dir(&revoked_dir).map_err(|e| InstallError::io("trust/revoked/", e))?;
    durable::write_atomic(&key_file(&site.trust(), &key), key.to_minisign().as_bytes())
        .map_err(|e| InstallError::io("writing to trust/", e))?;
    Ok(key)
}

/// Whether `id` is revoked on this site, for key rotation: [`is_revoked`] over [`revoked_ids`]; a
/// revocation list that cannot be read counts as revoking everything, so it never lets a key in.
pub fn site_revokes(site: &Site, id: &KeyId) -> bool {
    revoked_ids(site).map(|ids| is_revoked(&ids, id)).unwrap_or(true)
}

fn retired_dir(site: &Site) -> PathBuf {
    site.trust().join("retired")
}

/// Trusts `key` (a key rotation statement applied): `trust/<KEYID>.pub`. Refuses a revoked key.
pub fn add_rotated(site: &Site, key: &PublicKey) -> Result<()> {
    if site_revokes(site, key.key_id()) {
        return Err(revoked_error(key.key_id()));
    }
    durable::ensure_real_dir(&site.trust()).map_err(|e| InstallError::io("trust/", e))?;
    durable::write_atomic(&key_file(&site.trust(), key), key.to_minisign().as_bytes())
        .map_err(|e| InstallError::io("writing to trust/", e))
}

/// Undoes [`add_rotated`].
pub fn remove_rotated(site: &Site, key: &PublicKey) -> Result<()> {
    match std::fs::remove_file(key_file(&site.trust(), key)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(InstallError::io("removing from trust/", e)),
        _ => durable::sync_dir(&site.trust()).map_err(|e| InstallError::io("trust/", e)),
    }
}

/// Retires `key` (replaced by a rotation): moved from `trust/` to `trust/retired/`.
pub fn retire(site: &Site, key: &PublicKey) -> Result<()> {
    let dir = retired_dir(site);
    durable::ensure_real_dir(&dir).map_err(|e| InstallError::io("trust/retired/", e))?;
    durable::write_atomic(&key_file(&dir, key), key.to_minisign().as_bytes())
        .map_err(|e| InstallError::io("writing to trust/retired/", e))?;
    remove_rotated(site, key)
}

/// Undoes [`retire`]: the key is trusted again (unless revoked meanwhile).
pub fn unretire(site: &Site, key: &PublicKey) -> Result<()> {
    if !site_revokes(site, key.key_id()) {
        durable::write_atomic(&key_file(&site.trust(), key), key.to_minisign().as_bytes())
            .map_err(|e| InstallError::io("writing to trust/", e))?;
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
