//! The manifest: the signed description of a bundle. It names the release, its databases with their
//! full step chains, the config with its converter chain, the hooks, and every payload file with its
//! size, sha256 and mode. Its exact bytes are signed; it is parsed only after the signature checks out.
//! The format is written down in `bundle-spec/manifest.md`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::hash::is_sha256_hex;
use crate::naming::{self, ConverterKind, MigrationKind};
use crate::paths::BundlePath;
use crate::tags::Target;
use crate::version::{self, SchemaVersion};

/// The manifest format this code reads and writes.
pub const FORMAT: u32 = 1;
/// Name of the manifest, the first entry of every bundle.
pub const MANIFEST_NAME: &str = "manifest.yaml";
/// Name of its minisign signature, the second entry.
pub const SIGNATURE_NAME: &str = "manifest.yaml.minisig";
/// The largest manifest we read (it lists every file, so it grows with the release).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// The most payload entries a bundle may hold.
pub const MAX_ENTRIES: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub app: String,
    pub version: String,
    /// Release sequence number; also in the signed trusted comment. Sites refuse a lower one.
    pub sequence: u64,
    pub upgrades_from: String,
    /// PEP 440 requirement on the site's interpreter, e.g. `>=3.9`.
    pub python: String,
    pub keep_releases: u32,
    /// Bundle path of the application's own wheel (also listed in `wheels`).
    pub app_wheel: String,
    pub wheels: Vec<String>,
    /// The interpreters and platforms the release is built for (absent: none declared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Per wheel, its tags and `Requires-Python`, so a site picks its wheels from the manifest
    /// alone (absent in bundles from older builders: the file names' tags are used then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wheel_info: Vec<WheelInfo>,
    #[serde(default)]
    pub databases: Vec<Database>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    #[serde(default)]
    pub hooks: Hooks,
    /// Bundle path of the CycloneDX SBOM of the wheels, when the bundle carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
    /// Every key rotation statement released so far (cumulative), see `crate::rotation`. Absent
    /// when there are none, so bundles without rotations are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_rotations: Vec<crate::rotation::KeyRotation>,
    pub payload: Payload,
    pub files: Vec<FileEntry>,
    /// Present in a delta bundle only: the release it was built against and the files of `files`
    /// its archive leaves out because that release's bundle carries them with the same sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
}

/// The base of a delta bundle ([`Manifest::base`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub app: String,
    pub version: String,
    /// The base bundle's id (sha256 of its manifest).
    pub bundle_id: String,
    /// Bundle paths listed in `files` that the archive does not hold, sorted.
    pub omitted: Vec<String>,
}

/// What the builder read from one wheel (`wheel_info` in the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WheelInfo {
    /// Bundle path, one of `wheels`.
    pub path: String,
    /// PEP 503-normalised distribution name.
    pub name: String,
    pub version: String,
    /// Every `python-abi-platform` tag, compressed sets expanded, platforms in PEP 600 form.
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_python: Option<String>,
}

impl WheelInfo {
    /// The tags, parsed (validated manifests only hold well-formed ones).
    pub fn parsed_tags(&self) -> Vec<crate::tags::Tag> {
        self.tags.iter().filter_map(|t| crate::tags::Tag::parse(t)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub name: String,
    pub engine: String,
    /// For SQLite, relative to the site root.
    pub path: String,
    /// The schema this release is built for.
    pub schema: SchemaVersion,
    /// Every step ever released, in version order.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub version: SchemaVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File name inside the release's `config/` directory.
    pub file: String,
    pub version: u32,
    pub defaults: String,
    pub converters: Vec<Converter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Converter {
    pub from: u32,
    pub to: u32,
    pub kind: ConverterKind,
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_apply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_apply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `"0644"` or `"0755"`.
    pub mode: String,
}

impl FileEntry {
    /// The mode as a number (validated manifests only hold 0644 or 0755).
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o644)
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {0}")]
pub struct ManifestError(pub String);

impl Manifest {
    /// Parses and validates manifest bytes (already signature-checked by the caller).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let err = |m: String| ManifestError(m);
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(err(format!("{} bytes, more than the {MAX_MANIFEST_BYTES} allowed", bytes.len())));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| err("not UTF-8".into()))?;
        // Read the format first so a newer bundle gets "upgrade the installer", not a field error.
        #[derive(Deserialize)]
        struct Probe {
            format: Option<u32>,
        }
        let probe: Probe = serde_yaml::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
        match probe.format {
            Some(FORMAT) => {}
            Some(n) => {
                return Err(err(format!(
                    "bundle format {n}, this tool reads format {FORMAT}; use a matching bundle-install"
                )))
            }
            None => return Err(err("no `format` field".into())),
        }
        let manifest: Manifest = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest as YAML bytes (what gets signed).
    pub fn to_yaml(&self) -> Vec<u8> {
        serde_yaml::to_string(self).expect("manifest serialises").into_bytes()
    }

    /// Checks every rule a manifest must satisfy, so later code can rely on them.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.validate_identity()?;
        let listed = self.validate_files()?;
        if self.wheels.is_empty() {
            return Err(ManifestError("no wheels".into()));
        }
        for w in &self.wheels {
            need(&listed, "wheel", w)?;
        }
        if !self.wheels.contains(&self.app_wheel) {
            return Err(ManifestError(format!("app wheel `{}` is not among the wheels", self.app_wheel)));
        }
        self.validate_wheel_info()?;

        self.validate_databases(&listed)?;
        if let Some(config) = &self.config {
            validate_config(config, &listed)?;
        }
        for hook in [&self.hooks.pre_apply, &self.hooks.post_apply, &self.hooks.health_check].into_iter().flatten() {
            need(&listed, "hook", hook)?;
        }
        if let Some(sbom) = &self.sbom {
            need(&listed, "sbom", sbom)?;
        }
        if let Some(base) = &self.base {
            self.validate_base(base, &listed)?;
        }
        Ok(())
    }

    /// Format, app name, versions and the Python requirement.
    fn validate_identity(&self) -> Result<(), ManifestError> {
        let err = |m: String| Err(ManifestError(m));
        if self.format != FORMAT {
            return err(format!("format {} is not {FORMAT}", self.format));
        }
        if self.app.is_empty() || !self.app.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return err(format!("app name `{}` must be letters, digits, `.`, `_`, `-`", self.app));
        }
        let version = version::parse_release(&self.version).map_err(ManifestError)?;
        let from = version::parse_release(&self.upgrades_from).map_err(ManifestError)?;
        if from > version {
            return err(format!("upgrades_from {} is newer than version {}", self.upgrades_from, self.version));
        }
        crate::version::VersionSpecifiers::from_str_checked(&self.python)
            .map_err(|e| ManifestError(format!("python requirement `{}`: {e}", self.python)))?;

        Ok(())
    }

    /// Files: safe, unique, sane modes and hashes, totals as declared. Returns the listed paths.
    fn validate_files(&self) -> Result<BTreeSet<&str>, ManifestError> {
        let err = |m: String| Err(ManifestError(m));
        if self.files.len() as u64 > MAX_ENTRIES {
            return err(format!("{} files, more than the {MAX_ENTRIES} allowed", self.files.len()));
        }
        let mut listed = BTreeSet::new();
        let mut total = 0u64;
        for f in &self.files {
            let p = BundlePath::parse(&f.path).map_err(|e| ManifestError(e.to_string()))?;
            if p.as_str() == MANIFEST_NAME || p.as_str() == SIGNATURE_NAME {
                return err(format!("`{}` is reserved", f.path));
            }
            if !listed.insert(f.path.as_str()) {
                return err(format!("`{}` listed twice", f.path));
            }
            if f.mode != "0644" && f.mode != "0755" {
                return err(format!("`{}` has mode {}, only 0644 and 0755 are allowed", f.path, f.mode));
            }
            if !is_sha256_hex(&f.sha256) {
                return err(format!("`{}` has a malformed sha256", f.path));
            }
            total = total.checked_add(f.size).ok_or_else(|| ManifestError("payload size overflows".into()))?;
        }
        // A file may not also be a directory of another file (`a` and `a/b`).
        for f in &self.files {
            let p = BundlePath::parse(&f.path).expect("checked above");
            let clash = p.parents().find(|d| listed.contains(d)).map(str::to_string);
            if let Some(dir) = clash {
                return err(format!("`{dir}` is listed as a file and used as a directory by `{}`", f.path));
            }
        }
        if self.payload.entries != self.files.len() as u64 || self.payload.bytes != total {
            return err(format!(
                "payload totals say {} entries / {} bytes, files add up to {} / {total}",
                self.payload.entries,
                self.payload.bytes,
                self.files.len()
            ));
        }
        Ok(listed)
    }

    /// Database names, paths and connection variables unique; each database's own rules.
    fn validate_databases(&self, listed: &BTreeSet<&str>) -> Result<(), ManifestError> {
        let err = |m: String| Err(ManifestError(m));
        let mut names = BTreeSet::new();
        let mut db_paths = BTreeSet::new();
        let mut env_names = BTreeMap::new();
        for db in &self.databases {
            // Only SQLite paths name files on the site; server databases are located by the site.
            if !names.insert(db.name.as_str()) || (db.engine == "sqlite" && !db_paths.insert(db.path.as_str())) {
                return err(format!("database `{}` (or its path) declared twice", db.name));
            }
            // Both would read their connection from the same BUNDLE_DB_URL_<NAME>.
            if let Some(other) = env_names.insert(naming::db_env_suffix(&db.name), db.name.as_str()) {
                return err(format!(
                    "databases `{other}` and `{}` would share the variable BUNDLE_DB_URL_{}",
                    db.name,
                    naming::db_env_suffix(&db.name)
                ));
            }
            validate_database(db, &|what: &str, path: &str| need(listed, what, path))?;
        }

        Ok(())
    }

    /// A delta bundle's base: a bundle of the same app, and omitted files that `files` lists.
    fn validate_base(&self, base: &Base, listed: &BTreeSet<&str>) -> Result<(), ManifestError> {
        let err = |m: String| Err(ManifestError(m));
        if base.app != self.app || !crate::hash::is_sha256_hex(&base.bundle_id) {
            return err(format!(
                "base {} {} (bundle id `{}`) is not a bundle of {}",
                base.app, base.version, base.bundle_id, self.app
            ));
        }
        version::parse_release(&base.version).map_err(ManifestError)?;
        if base.omitted.is_empty() || base.omitted.windows(2).any(|w| w[0] >= w[1]) {
            return err("base.omitted must be a non-empty sorted list without repeats".into());
        }
        if let Some(p) = base.omitted.iter().find(|p| !listed.contains(p.as_str())) {
            return err(format!("base.omitted names `{p}`, which `files` does not list"));
        }
        Ok(())
    }

    /// Whether the archive leaves `path` out (a delta bundle's file the base carries).
    pub fn is_omitted(&self, path: &str) -> bool {
        self.base.as_ref().is_some_and(|b| b.omitted.binary_search_by(|p| p.as_str().cmp(path)).is_ok())
    }

    /// `targets` well formed; `wheel_info`, when present, describes every wheel exactly once with
    /// well-formed tags and `Requires-Python`.
    fn validate_wheel_info(&self) -> Result<(), ManifestError> {
        let err = |m: String| Err(ManifestError(m));
        for t in &self.targets {
            t.environment().map_err(|e| ManifestError(format!("target {t}: {e}")))?;
        }
        if self.wheel_info.is_empty() {
            return Ok(());
        }
        let mut seen = BTreeSet::new();
        for w in &self.wheel_info {
            if !self.wheels.contains(&w.path) || !seen.insert(w.path.as_str()) {
                return err(format!("wheel_info names `{}`, which is not a wheel or is described twice", w.path));
            }
            if w.tags.is_empty() || w.tags.iter().any(|t| crate::tags::Tag::parse(t).is_none()) {
                return err(format!("wheel_info of `{}` has no tags or a malformed one", w.path));
            }
            if let Some(r) = &w.requires_python {
                crate::version::VersionSpecifiers::from_str_checked(r)
                    .map_err(|e| ManifestError(format!("requires_python of `{}`: {e}", w.path)))?;
            }
        }
        if seen.len() != self.wheels.len() {
            return err("wheel_info does not describe every wheel".into());
        }
        Ok(())
    }

    /// What is known about a wheel: from `wheel_info`, or for bundles of older builders from the
    /// file name alone (no `Requires-Python`).
    pub fn wheel_description(&self, path: &str) -> Option<WheelInfo> {
        if let Some(w) = self.wheel_info.iter().find(|w| w.path == path) {
            return Some(w.clone());
        }
        let name = crate::wheel::parse_filename(path.rsplit('/').next()?).ok()?;
        Some(WheelInfo {
            path: path.to_string(),
            name: name.normalized_name(),
            version: name.version.clone(),
            tags: name.tags().iter().map(|t| t.to_string()).collect(),
            requires_python: None,
        })
    }

    /// The entry for a bundle path, if listed.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
    }
}

/// `path` must be among the bundle's files (`what` names it in the error).
fn need(listed: &BTreeSet<&str>, what: &str, path: &str) -> Result<(), ManifestError> {
    if listed.contains(path) {
        Ok(())
    } else {
        Err(ManifestError(format!("{what} `{path}` is not among the files")))
    }
}

/// The config file name, its defaults, and a complete converter chain 1→2, 2→3, … up to its version.
fn validate_config(config: &Config, listed: &BTreeSet<&str>) -> Result<(), ManifestError> {
    let err = |m: String| Err(ManifestError(m));
    BundlePath::parse(&config.file)
        .ok()
        .filter(|p| !p.as_str().contains('/'))
        .ok_or_else(|| ManifestError(format!("config file `{}` must be a plain file name", config.file)))?;
    need(listed, "config defaults", &config.defaults)?;
    if config.version == 0 {
        return err("config version starts at 1".into());
    }
    // The chain must be complete: 1→2, 2→3, … up to the release's version.
    let by_from: BTreeMap<u32, &Converter> = config.converters.iter().map(|c| (c.from, c)).collect();
    if by_from.len() != config.converters.len() {
        return err("two config converters start from the same version".into());
    }
    for n in 1..config.version {
        let c = by_from
            .get(&n)
            .ok_or_else(|| ManifestError(format!("no config converter from version {n} to {}", n + 1)))?;
        if c.to != n + 1 {
            return err(format!("converter from {n} goes to {}, not {}", c.to, n + 1));
        }
        need(listed, "config converter", &c.path)?;
    }
    if config.converters.iter().any(|c| c.to > config.version) {
        return err(format!("a converter goes beyond config version {}", config.version));
    }
    Ok(())
}

fn validate_database(
    db: &Database,
    need: &dyn Fn(&str, &str) -> Result<(), ManifestError>,
) -> Result<(), ManifestError> {
    let err = |m: String| Err(ManifestError(format!("database `{}`: {m}", db.name)));
    if db.name.is_empty() || !db.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return err("name must be letters, digits, `_` or `-`".into());
    }
    if !["sqlite", "postgres", "mysql"].contains(&db.engine.as_str()) {
        return err(format!("unknown engine `{}` (sqlite, postgres, mysql)", db.engine));
    }
    if db.engine == "sqlite" {
        let path =
            BundlePath::parse(&db.path).map_err(|e| ManifestError(format!("database `{}` path: {e}", db.name)))?;
        if let Some(why) = path.site_reserved() {
            return err(format!(
                "path `{path}` is reserved: {why}; put the database under a directory of its own such as `data/`"
            ));
        }
    }
    let mut last = SchemaVersion::CLEAN;
    for step in &db.steps {
        if step.version <= last {
            return err(format!("steps out of order or duplicated at {}", step.version));
        }
        last = step.version;
        if step.up.is_none() && step.data.is_none() {
            return err(format!("step {} has neither an .sql nor a .py file", step.version));
        }
        for (file, kind) in
            [(&step.up, MigrationKind::Up), (&step.data, MigrationKind::Data), (&step.down, MigrationKind::Down)]
        {
            let Some(file) = file else { continue };
            need("migration", file)?;
            let name = file.rsplit('/').next().unwrap_or(file);
            let parsed =
                naming::parse_migration(name).map_err(|e| ManifestError(format!("database `{}`: {e}", db.name)))?;
            if parsed.version != step.version || parsed.kind != kind {
                return err(format!("`{file}` does not belong to step {} as {kind:?}", step.version));
            }
        }
    }
    if last != db.schema {
        return err(format!("schema is {} but the last step is {last}", db.schema));
    }
    Ok(())
}

/// `pep440_rs` only offers `FromStr`; this names the intent at the call site.
trait FromStrChecked: Sized {
    fn from_str_checked(s: &str) -> Result<Self, String>;
}

impl FromStrChecked for crate::version::VersionSpecifiers {
    fn from_str_checked(s: &str) -> Result<Self, String> {
        s.parse().map_err(|e: pep440_rs::VersionSpecifiersParseError| e.to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let file = |path: &str, mode: &str| FileEntry {
            path: path.into(),
            size: 3,
            sha256: crate::hash::sha256_hex(b"abc"),
            mode: mode.into(),
        };
        let files = vec![
            file("wheels/app-1.0.0-py3-none-any.whl", "0644"),
            file("migrations/main/1.0_init.sql", "0644"),
            file("config/defaults.yaml", "0644"),
            file("hooks/start.sh", "0755"),
        ];
        Manifest {
            format: FORMAT,
            app: "app".into(),
            version: "1.0.0".into(),
            sequence: 1,
            upgrades_from: "1.0.0".into(),
            python: ">=3.9".into(),
            keep_releases: 3,
            app_wheel: "wheels/app-1.0.0-py3-none-any.whl".into(),
            wheels: vec!["wheels/app-1.0.0-py3-none-any.whl".into()],
            targets: Vec::new(),
            wheel_info: Vec::new(),
            databases: vec![Database {
                name: "main".into(),
                engine: "sqlite".into(),
                path: "data/main.db".into(),
                schema: SchemaVersion::new(1, 0),
                steps: vec![Step {
                    version: SchemaVersion::new(1, 0),
                    up: Some("migrations/main/1.0_init.sql".into()),
                    data: None,
                    down: None,
                }],
            }],
            config: Some(Config {
                file: "app.yaml".into(),
                version: 1,
                defaults: "config/defaults.yaml".into(),
                converters: vec![],
            }),
            hooks: Hooks { post_apply: Some("hooks/start.sh".into()), ..Hooks::default() },
            sbom: None,
            key_rotations: Vec::new(),
            payload: Payload { entries: 4, bytes: 12 },
            files,
            base: None,
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let parsed = Manifest::parse(&m.to_yaml()).unwrap();
        assert_eq!(parsed, m);
    }

    #[test]
    fn refuses_inconsistent_manifests() {
        type Breakage = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Breakage)> = vec![
            ("traversal", Box::new(|m| m.files[0].path = "../x".into())),
            ("duplicate", Box::new(|m| m.files[1].path = m.files[0].path.clone())),
            ("mode", Box::new(|m| m.files[0].mode = "4755".into())),
            ("totals", Box::new(|m| m.payload.bytes = 1)),
            ("schema", Box::new(|m| m.databases[0].schema = SchemaVersion::new(1, 1))),
            ("missing file", Box::new(|m| m.hooks.pre_apply = Some("hooks/nope.sh".into()))),
            ("converter gap", Box::new(|m| m.config.as_mut().unwrap().version = 2)),
            ("version", Box::new(|m| m.version = "banana".into())),
            ("reserved", Box::new(|m| m.files[2].path = MANIFEST_NAME.into())),
            ("db in current/", Box::new(|m| m.databases[0].path = "current/x.db".into())),
            ("db in trust/", Box::new(|m| m.databases[0].path = "trust/client.pub".into())),
            ("db is site.yaml", Box::new(|m| m.databases[0].path = "site.yaml".into())),
            ("db in state/", Box::new(|m| m.databases[0].path = "state/site.json".into())),
            (
                "db env clash",
                Box::new(|m| {
                    let mut other = m.databases[0].clone();
                    m.databases[0].name = "main-db".into();
                    other.name = "main_db".into();
                    other.path = "data/other.db".into();
                    m.databases.push(other);
                }),
            ),
        ];
        for (what, edit) in cases {
            let mut m = sample();
            edit(&mut m);
            assert!(m.validate().is_err(), "{what} accepted");
        }
    }

    fn with_base(omitted: &[&str]) -> Manifest {
        let mut m = sample();
        m.base = Some(Base {
            app: "app".into(),
            version: "0.9.0".into(),
            bundle_id: crate::hash::sha256_hex(b"base"),
            omitted: omitted.iter().map(|s| s.to_string()).collect(),
        });
        m
    }

    #[test]
    fn delta_base_round_trips_and_full_manifests_do_not_mention_it() {
        let m = with_base(&["config/defaults.yaml", "wheels/app-1.0.0-py3-none-any.whl"]);
        m.validate().unwrap();
        assert_eq!(Manifest::parse(&m.to_yaml()).unwrap(), m);
        assert!(m.is_omitted("wheels/app-1.0.0-py3-none-any.whl") && !m.is_omitted("hooks/start.sh"));
        assert!(!String::from_utf8(sample().to_yaml()).unwrap().contains("\nbase:"));
    }

    #[test]
    fn refuses_inconsistent_delta_bases() {
        let cases: Vec<(&str, Manifest)> = vec![
            ("unlisted", with_base(&["wheels/other.whl"])),
            ("unsorted", with_base(&["wheels/app-1.0.0-py3-none-any.whl", "config/defaults.yaml"])),
            ("repeated", with_base(&["config/defaults.yaml", "config/defaults.yaml"])),
            ("empty", with_base(&[])),
            ("other app", {
                let mut m = with_base(&["config/defaults.yaml"]);
                m.base.as_mut().unwrap().app = "other".into();
                m
            }),
            ("bad id", {
                let mut m = with_base(&["config/defaults.yaml"]);
                m.base.as_mut().unwrap().bundle_id = "xyz".into();
                m
            }),
        ];
        for (what, m) in cases {
            assert!(m.validate().is_err(), "{what} accepted");
        }
    }

    #[test]
    fn newer_format_says_so() {
        let e = Manifest::parse(b"format: 2\napp: x\n").unwrap_err();
        assert!(e.0.contains("format 2"), "{e}");
    }
}
