//! Safe bundle paths. Every path inside a bundle is relative, `/`-separated, made of a small set of
//! characters, and has no empty, `.` or `..` component, so it can be joined to a staging directory
//! without ever leaving it. Checking against an allow-list (rather than rejecting known-bad forms)
//! closes drive letters, backslashes, NUL, control characters and Unicode look-alikes in one rule.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest path we accept; ustar can store up to 255 bytes (155 prefix + 100 name).
pub const MAX_PATH_LEN: usize = 240;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe path {shown}: {reason}")]
pub struct UnsafePath {
    /// The path as received, escaped for printing.
    pub shown: String,
    pub reason: &'static str,
}

/// A path checked to be safe to place under a directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(String);

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '~' | '=' | '@' | '/')
}

impl BundlePath {
    /// Checks `raw` (as bytes, since tar names are bytes) and returns it as a safe path.
    pub fn parse_bytes(raw: &[u8]) -> Result<BundlePath, UnsafePath> {
        let shown = format!("{:?}", String::from_utf8_lossy(raw));
        let fail = |reason| Err(UnsafePath { shown: shown.clone(), reason });
        if raw.is_empty() {
            return fail("empty name");
        }
        if raw.len() > MAX_PATH_LEN {
            return fail("name longer than 240 bytes");
        }
        if raw.contains(&0) {
            return fail("NUL byte in name");
        }
        if raw.contains(&b'\\') {
            return fail("backslash in name");
        }
        if raw[0] == b'/' {
            return fail("absolute path");
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return fail("name is not UTF-8");
        };
        if text.contains(':') {
            return fail("drive or stream separator `:` in name");
        }
        if !text.chars().all(allowed) {
            return fail("character outside [A-Za-z0-9._-+~=@/]");
        }
        for component in text.split('/') {
            match component {
                "" => return fail("empty path component (`//` or trailing `/`)"),
                "." => return fail("`.` component"),
                ".." => return fail("`..` component (path traversal)"),
                _ => {}
            }
        }
        Ok(BundlePath(text.to_string()))
    }

    pub fn parse(raw: &str) -> Result<BundlePath, UnsafePath> {
        Self::parse_bytes(raw.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `base` joined with this path; always inside `base`.
    pub fn under(&self, base: &Path) -> PathBuf {
        base.join(&self.0)
    }

    /// Every proper ancestor directory (`a`, `a/b` for `a/b/c`).
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(move |(i, _)| &self.0[..i])
    }
}

/// Top-level names of a site root that belong to the installer (or are reserved for it): a
/// database `path` (or anything else a bundle places on the site) must never start with one. Names
/// starting with `.` are reserved too (temporary links such as `.current.new` live there).
pub const SITE_RESERVED: &[&str] =
    &["current", "releases", "backups", "trust", "state", "site.yaml", "store", "scratch"];

/// SQLite's companion files of a database `x.db`: `x.db-wal`, `x.db-shm`, `x.db-journal`.
pub const SQLITE_SIDECARS: &[&str] = &["-wal", "-shm", "-journal"];

impl BundlePath {
    /// `Some(why)` when this path, taken relative to a site root, would land in the installer's
    /// own files ([`SITE_RESERVED`], a dot name) or is named like an SQLite companion file.
    pub fn site_reserved(&self) -> Option<String> {
        let first = self.0.split('/').next().unwrap_or("");
        if let Some(r) = SITE_RESERVED
            .iter()
            .find(|r| **r == first || first.strip_prefix(**r).is_some_and(|rest| SQLITE_SIDECARS.contains(&rest)))
        {
            return Some(format!("`{r}` at the site root belongs to the installer"));
        }
        if first.starts_with('.') {
            return Some("names starting with `.` at the site root belong to the installer".into());
        }
        if let Some(s) = SQLITE_SIDECARS.iter().find(|s| self.0.ends_with(**s)) {
            return Some(format!("a name ending in `{s}` is an SQLite companion file"));
        }
        None
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn site_reserved_names() {
        for p in [
            "current",
            "current/x.db",
            "releases/4.0.0/x.db",
            "backups/x.db",
            "trust/client.pub",
            "state/site.json",
            "site.yaml",
            "site.yaml-wal",
            "store/a",
            "scratch/a",
            ".current.new",
            "data/x.db-wal",
            "a.db-journal",
        ] {
            assert!(super::BundlePath::parse(p).unwrap().site_reserved().is_some(), "{p} accepted");
        }
        for p in ["data/client.db", "db/current.db", "currently.db", "data/releases/x.db", "state.db"] {
            assert!(super::BundlePath::parse(p).unwrap().site_reserved().is_none(), "{p} refused");
        }
    }

    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in ["manifest.yaml", "wheels/fieldlog-4.0.0-py3-none-any.whl", "migrations/client/2.1_backfill.py"] {
            assert_eq!(BundlePath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_every_escape() {
        let long = "a/".repeat(130) + "b";
        for bad in [
            "",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "/x",
            "//x",
            "C:\\x",
            "C:x",
            "a\\b",
            "a//b",
            "a/",
            "a\0b",
            "a b",
            "é",
            "a\nb",
            long.as_str(),
        ] {
            assert!(BundlePath::parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(BundlePath::parse_bytes(b"\xff").is_err());
    }

    #[test]
    fn parents() {
        let p = BundlePath::parse("a/b/c").unwrap();
        assert_eq!(p.parents().collect::<Vec<_>>(), ["a", "a/b"]);
    }
}
