//! The site layout under `--root` (see `bundle-spec/site-layout.md`):
//!
//! ```text
//! current -> releases/<version>   the running release; replaced only by rename(2)
//! releases/<version>/             bundle/ (verified payload), venv/, config/<file>, release.json
//! data/                           SQLite databases, shared by all releases
//! backups/<id>/                   databases + config taken before each apply, record.json
//! store/wheels/<sha256>/         unpacked wheels shared by the releases (hardlinked into their venvs)
//! trust/*.pub, trust/revoked/     keys this site accepts / refuses
//! state/                          lock, journal.json, .reserve, history.jsonl, site.json, staging/
//! ```

//!
//! Beside the layout itself: the site `lock`, the keys it trusts (`trust`), its small persistent
//! facts (`state`), the run `history`, `prune` of old releases and backups, and `status`.

pub mod history;
pub(crate) mod lock;
pub(crate) mod prune;
pub(crate) mod state;
pub mod status;
pub mod trust;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bundle_core::manifest::Manifest;
use bundle_core::signature::PublicKey;
use serde::{Deserialize, Serialize};

use crate::fs::durable;

/// Written into each release directory once it is complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub app: String,
    pub version: String,
    pub sequence: u64,
    pub bundle_id: String,
    pub key_id: String,
    pub installed_at: String,
    /// The release it replaced (none on a clean install).
    pub from: Option<String>,
    /// The backup taken before it was installed, for `rollback --restore-data` to this `from`.
    pub backup: Option<String>,
}

/// A site root and the paths inside it.
#[derive(Debug, Clone)]
pub struct Site {
    pub root: PathBuf,
}

/// Marker inside a release directory that is still being staged.
pub(crate) const INCOMPLETE: &str = ".incomplete";

impl Site {
    /// The root is made absolute: hooks run with it as their working directory, and every path
    /// the journal records must still mean the same thing there.
    pub fn new(root: &Path) -> Site {
        Site { root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()) }
    }
    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    pub fn release_dir(&self, version: &str) -> PathBuf {
        self.releases().join(version)
    }
    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }
    /// The content-addressed store of unpacked wheels (`store.rs`).
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn trust(&self) -> PathBuf {
        self.root.join("trust")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn staging(&self) -> PathBuf {
        self.state().join("staging")
    }
    pub fn journal(&self) -> PathBuf {
        self.state().join("journal.json")
    }
    pub fn history(&self) -> PathBuf {
        self.state().join("history.jsonl")
    }

    /// Creates the layout's directories, refusing any that is a planted symlink. For a new site (no
    /// `state/` before) returns every directory it created above the layout, the root included, so
    /// a first run that fails early can leave nothing behind.
    pub fn ensure_layout(&self) -> io::Result<Option<Vec<PathBuf>>> {
        let new = !self.state().exists();
        let mut created = Vec::new();
        let mut missing = Vec::new();
        let mut p = self.root.as_path();
        while !p.exists() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        for dir in missing.into_iter().rev() {
            durable::create_dir_mode(&dir, 0o755)?;
            created.push(dir);
        }
        for (dir, mode) in self.layout_modes() {
            durable::ensure_real_dir_mode(&dir, mode)?;
        }
        Ok(new.then_some(created))
    }

    /// The layout's directories and the mode each is created with (bundle-spec/site-layout.md,
    /// "Modes"): nothing the installer creates depends on the caller's umask.
    pub fn layout_modes(&self) -> [(PathBuf, u32); 6] {
        [
            (self.releases(), 0o755),
            (self.root.join("data"), 0o755),
            (self.backups(), 0o700),
            (self.trust(), 0o755),
            (self.state(), 0o755),
            (self.staging(), 0o700),
        ]
    }

    /// Refuses a site whose root, `trust/`, `trust/revoked/`, `state/`, `releases/` or `backups/`
    /// another user owns or may write: a key dropped into `trust/`, a journal or link planted in
    /// `state/`, a file swapped in a release tree, would be obeyed. (`data/` is the app's.)
    pub fn check_private_dirs(&self) -> io::Result<()> {
        for dir in [
            self.root.clone(),
            self.trust(),
            self.trust().join("revoked"),
            self.state(),
            self.releases(),
            self.backups(),
        ] {
            durable::check_private_dir(&dir)?;
        }
        Ok(())
    }

    /// Removes the skeleton a failed first run created, if nothing else was put in it; `created`
    /// is what [`Site::ensure_layout`] returned.
    pub fn remove_new_layout(&self, created: &[PathBuf]) {
        if self.current_link().symlink_metadata().is_ok() {
            return;
        }
        for dir in ["releases", "data", "backups", "trust", "store/wheels", "store"] {
            let _ = fs::remove_dir(self.root.join(dir));
        }
        let _ = fs::remove_file(self.state().join("lock"));
        let _ = fs::remove_dir(self.staging());
        let _ = fs::remove_dir(self.state());
        for dir in created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Refuses a site where someone planted a symlink where the installer writes: anything in the
    /// root but `current`, and the entries of `releases/`, `data/`, `backups/`, `trust/`, `state/`.
    /// Writing through such a link could reach any file on the machine (the installer runs as root).
    pub fn check_planted_links(&self) -> io::Result<()> {
        let mut dirs = vec![self.root.clone()];
        for d in ["releases", "data", "backups", "trust", "state", "store", "store/wheels"] {
            dirs.push(self.root.join(d));
        }
        for dir in dirs {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_symlink() && entry.path() != self.current_link() {
                    let target = fs::read_link(entry.path()).map(|t| t.display().to_string()).unwrap_or_default();
                    return Err(io::Error::other(format!(
                        "{} is a symbolic link (to {target}); the installer never writes through links in a site",
                        entry.path().display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The version `current` points at, if any.
    pub fn current_version(&self) -> io::Result<Option<String>> {
        match fs::read_link(self.current_link()) {
            Ok(target) => {
                let name = target.file_name().map(|n| n.to_string_lossy().into_owned());
                let expected = Path::new("releases").join(name.clone().unwrap_or_default());
                if target != expected {
                    return Err(io::Error::other(format!(
                        "{} points to {}, not releases/<version>; it was changed by hand",
                        self.current_link().display(),
                        target.display()
                    )));
                }
                Ok(name)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The complete releases under `releases/`, newest install last.
    pub fn releases_installed(&self) -> io::Result<Vec<ReleaseInfo>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(self.releases()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // Dot-names are releases set aside during a run, not kept releases.
            if !entry.file_type()?.is_dir()
                || entry.path().join(INCOMPLETE).exists()
                || entry.file_name().to_string_lossy().starts_with('.')
            {
                continue;
            }
            if let Ok(info) = self.release_info(&entry.file_name().to_string_lossy()) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.installed_at.cmp(&b.installed_at).then(a.sequence.cmp(&b.sequence)));
        Ok(out)
    }

    pub fn release_info(&self, version: &str) -> io::Result<ReleaseInfo> {
        let text = fs::read(self.release_dir(version).join("release.json"))?;
        serde_json::from_slice(&text).map_err(io::Error::other)
    }

    /// The verified manifest kept in a release directory.
    pub fn release_manifest(&self, version: &str) -> io::Result<Manifest> {
        let bytes = fs::read(self.release_dir(version).join("bundle").join(bundle_core::manifest::MANIFEST_NAME))?;
        Manifest::parse(&bytes).map_err(io::Error::other)
    }

    /// Public keys in `trust/` minus those in `trust/revoked/` (matched by key id).
    pub fn trusted_keys(&self) -> io::Result<Vec<PublicKey>> {
        let revoked: Vec<String> = self.revoked_keys()?.iter().map(|k| k.key_id().to_string()).collect();
        Ok(read_keys(&self.trust(), true)?.into_iter().filter(|k| !revoked.contains(&k.key_id().to_string())).collect())
    }

    /// Keys in `trust/revoked/`, whatever their files are called (a revocation counts by content).
    pub fn revoked_keys(&self) -> io::Result<Vec<PublicKey>> {
        read_keys(&self.trust().join("revoked"), false)
    }
}

/// The `*.pub` keys of `dir`. With `named`, each file must be called `<KEYID>.pub` after the key
/// it holds (as `trust add` writes them): a key dropped in under another name is refused rather
/// than trusted.
fn read_keys(dir: &Path, named: bool) -> io::Result<Vec<PublicKey>> {
    // A store others may write is no store: checked on every read (verify --root reads it without
    // taking the site lock).
    durable::check_private_dir(dir)?;
    let mut keys = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(keys),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    for p in paths {
        let key = PublicKey::read_file(&p).map_err(|e| io::Error::other(e.to_string()))?;
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if named && !stem.eq_ignore_ascii_case(&key.key_id().to_string()) {
            return Err(io::Error::other(format!(
                "{} holds key {}, so it must be named {}.pub; add trusted keys with `bundle-install trust add` (and check who put this file there)",
                p.display(),
                key.key_id(),
                key.key_id()
            )));
        }
        keys.push(key);
    }
    Ok(keys)
}
