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
    pub wheels: PathBuf,
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

    /// The release sequence: the spec's, or one derived from the version's release numbers
    /// (`major*10^12 + minor*10^8 + micro*10^4`, each part capped), so later versions sort higher.
    pub fn sequence(&self) -> Result<u64, SpecError> {
        if let Some(s) = self.spec.sequence {
            return Ok(s);
        }
        let v = bundle_core::version::parse_release(&self.spec.version)
            .map_err(|m| SpecError { path: self.path.clone(), message: m })?;
        let part = |i: usize, cap: u64| v.release().get(i).copied().unwrap_or(0).min(cap);
        Ok(part(0, 999_999) * 1_000_000_000_000 + part(1, 9_999) * 100_000_000 + part(2, 9_999) * 10_000)
    }
}
