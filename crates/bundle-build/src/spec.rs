//! The spec file, `bundle-build`'s input (format in `bundle-spec/spec.md`). Paths in it are relative
//! to the spec file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bundle_core::version::SchemaVersion;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub app: String,
    pub version: String,
    pub upgrades_from: String,
    #[serde(default = "default_python")]
    pub python: String,
    pub wheels: WheelsSpec,
    /// Interpreters and platforms the release is built for (see `bundle-spec/spec.md#targets`).
    #[serde(default)]
    pub targets: Vec<bundle_core::tags::Target>,
    /// Distributions whose unmet requirements are warnings rather than errors (`"*"`: all).
    #[serde(default)]
    pub allow_unmet: Vec<String>,
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseSpec>,
    #[serde(default)]
    pub config: Option<ConfigSpec>,
    #[serde(default)]
    pub hooks: HooksSpec,
    #[serde(default = "default_keep")]
    pub keep_releases: u32,
    /// Release sequence number for anti-downgrade; derived from `version` when absent.
    #[serde(default)]
    pub sequence: Option<u64>,
    /// Signed key rotation statements (files written by `bundle-build rotate`), every one released
    /// so far: bundles are cumulative, so a site that skipped a release still gets its rotation.
    #[serde(default)]
    pub key_rotations: Vec<PathBuf>,
}

/// `wheels:` — a wheelhouse directory, a lock file (`pylock.toml`, `pylock.*.toml` or a
/// requirements `*.txt`: the wheelhouse is then the lock file's directory), or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WheelsSpec {
    Path(PathBuf),
    Table(WheelsTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WheelsTable {
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub lock: Option<PathBuf>,
}

/// Whether a file name is a lock file the builder reads.
pub fn is_lock_name(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.ends_with(".txt") || (name.starts_with("pylock.") && name.ends_with(".toml"))
}

impl WheelsSpec {
    /// The wheelhouse directory and the lock file, both relative to the spec.
    pub fn sources(&self) -> Result<(PathBuf, Option<PathBuf>), String> {
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        match self {
            WheelsSpec::Path(p) if is_lock_name(p) => Ok((parent(p), Some(p.clone()))),
            WheelsSpec::Path(p) => Ok((p.clone(), None)),
            WheelsSpec::Table(WheelsTable { dir: Some(d), lock }) => Ok((d.clone(), lock.clone())),
            WheelsSpec::Table(WheelsTable { dir: None, lock: Some(l) }) => Ok((parent(l), Some(l.clone()))),
            WheelsSpec::Table(WheelsTable { dir: None, lock: None }) => {
                Err("wheels: give `dir`, `lock` or both".into())
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    pub engine: String,
    pub path: String,
    pub schema: SchemaVersion,
    pub migrations: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    pub file: String,
    pub version: u32,
    pub defaults: PathBuf,
    #[serde(default)]
    pub converters: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    pub pre_apply: Option<PathBuf>,
    pub post_apply: Option<PathBuf>,
    pub health_check: Option<PathBuf>,
}

fn default_python() -> String {
    ">=3".to_string()
}

fn default_keep() -> u32 {
    3
}

/// A spec file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("spec {path}: {message}")]
pub struct SpecError {
    pub path: PathBuf,
    pub message: String,
}

/// A parsed spec and the directory its paths are relative to.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub spec: Spec,
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl LoadedSpec {
    pub fn load(path: &Path) -> Result<LoadedSpec, SpecError> {
        let err = |message: String| SpecError { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let spec: Spec = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        Ok(LoadedSpec { spec, dir, path: path.to_path_buf() })
    }

    /// A spec path resolved against the spec's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.dir.join(p)
    }

    /// The release sequence: the spec's, or one derived from the version so that later PEP 440
    /// versions get higher numbers: `major*10^12 + minor*10^8 + micro*10^4 + stage`, where the last
    /// four digits order pre-releases below the final release (`aN` → 1000+N, `bN` → 2000+N,
    /// `rcN` → 3000+N, final → 9000, `.postN` → 9000+N; parts capped). Dev releases count as
    /// their pre-release or final. Set `sequence` explicitly for anything more exotic.
    pub fn sequence(&self) -> Result<u64, SpecError> {
        if let Some(s) = self.spec.sequence {
            return Ok(s);
        }
        let v = bundle_core::version::parse_release(&self.spec.version)
            .map_err(|m| SpecError { path: self.path.clone(), message: m })?;
        let part = |i: usize, cap: u64| v.release().get(i).copied().unwrap_or(0).min(cap);
        let stage = match v.pre() {
            Some(pre) => {
                let kind = match pre.kind {
                    pep440_rs::PrereleaseKind::Alpha => 1000,
                    pep440_rs::PrereleaseKind::Beta => 2000,
                    pep440_rs::PrereleaseKind::Rc => 3000,
                };
                kind + pre.number.min(999)
            }
            None => 9000 + v.post().unwrap_or(0).min(999),
        };
        Ok(part(0, 999_999) * 1_000_000_000_000 + part(1, 9_999) * 100_000_000 + part(2, 9_999) * 10_000 + stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(version: &str) -> u64 {
        let spec: Spec =
            serde_yaml::from_str(&format!("app: a\nversion: {version}\nupgrades_from: 1.0\nwheels: w/\n")).unwrap();
        LoadedSpec { spec, dir: PathBuf::from("."), path: PathBuf::from("spec.yaml") }.sequence().unwrap()
    }

    #[test]
    fn derived_sequences_follow_pep440_order() {
        let order = ["3.9.9", "4.0.0a1", "4.0.0b2", "4.0.0rc1", "4.0.0", "4.0.0.post1", "4.0.1", "4.1", "10.0"];
        for pair in order.windows(2) {
            assert!(seq(pair[0]) < seq(pair[1]), "{} !< {}", pair[0], pair[1]);
        }
    }
}
