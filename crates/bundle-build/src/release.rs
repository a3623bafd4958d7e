//! Gathers a release's inputs from a spec: wheels, every migration step ever released, the config
//! defaults and converters, hooks. Produces the manifest and the list of files to pack, and every
//! problem found on the way as a [`Lint`], so `check` can report them all at once and `build` can
//! refuse on the first error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bundle_core::manifest::{self, Config, Converter, Database, FileEntry, Hooks, Manifest, Payload, Step};
use bundle_core::naming::{self, MigrationKind};
use bundle_core::paths::BundlePath;
use bundle_core::version::{self, SchemaVersion, VersionSpecifiers};
use bundle_core::wheel::normalize_name;
use serde::Serialize;

use crate::spec::LoadedSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// One finding about a spec.
#[derive(Debug, Clone, Serialize)]
pub struct Lint {
    pub level: Level,
    /// Stable name of the check, e.g. `migration_gap`.
    pub code: &'static str,
    pub message: String,
}

/// A file to pack: where it comes from and what the manifest says about it.
#[derive(Debug, Clone)]
pub struct Source {
    pub fs_path: PathBuf,
    pub entry: FileEntry,
}

/// Everything `build` needs, gathered and hashed.
#[derive(Debug)]
pub struct Release {
    pub manifest: Manifest,
    /// Sorted by bundle path, the order they are packed in.
    pub sources: Vec<Source>,
}

#[derive(Default)]
struct Gather {
    lints: Vec<Lint>,
    files: BTreeMap<String, (PathBuf, u32)>,
}

impl Gather {
    fn error(&mut self, code: &'static str, message: impl Into<String>) {
        self.lints.push(Lint { level: Level::Error, code, message: message.into() });
    }
    fn warn(&mut self, code: &'static str, message: impl Into<String>) {
        self.lints.push(Lint { level: Level::Warning, code, message: message.into() });
    }
    /// Adds a file under `bundle_path`; returns whether it was added.
    fn add(&mut self, bundle_path: String, fs_path: &Path, mode: u32) -> bool {
        if let Err(e) = BundlePath::parse(&bundle_path) {
            self.error("unsafe_name", format!("{}: {e}; rename the file", fs_path.display()));
            return false;
        }
        if !fs_path.is_file() {
            self.error("missing_file", format!("{} is not a file", fs_path.display()));
            return false;
        }
        if let Some((other, _)) = self.files.get(&bundle_path) {
            if other != fs_path {
                self.error("name_clash", format!("{} and {} would both be packed as {bundle_path}", other.display(), fs_path.display()));
            }
            return false;
        }
        self.files.insert(bundle_path, (fs_path.to_path_buf(), mode));
        true
    }
}

/// Sorted file names of a directory, or a lint.
fn list_dir(g: &mut Gather, dir: &Path, what: &str) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut dangling = Vec::new();
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                // Follow symlinks: a wheelhouse of links to a shared cache is normal. A dangling
                // link or a directory is reported, never skipped silently.
                .filter(|e| {
                    let ok = e.path().is_file();
                    if !ok && !e.path().is_dir() {
                        dangling.push(e.path());
                    }
                    ok
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for p in dangling {
                g.error("missing_file", format!("{} is not a readable file (dangling link?)", p.display()));
            }
            names
        }
        Err(e) => {
            g.error("missing_dir", format!("{what} directory {}: {e}", dir.display()));
            Vec::new()
        }
    }
}

/// Gathers the release. `Err` holds the lints when any is an error; `Ok` carries warnings.
pub fn gather(spec: &LoadedSpec) -> (Option<Release>, Vec<Lint>) {
    let s = &spec.spec;
    let mut g = Gather::default();

    let version = version::parse_release(&s.version).map_err(|e| g.error("bad_version", e)).ok();
    let from = version::parse_release(&s.upgrades_from).map_err(|e| g.error("bad_version", format!("upgrades_from: {e}"))).ok();
    if let (Some(v), Some(f)) = (&version, &from) {
        if f > v {
            g.error("bad_version", format!("upgrades_from {} is newer than version {}", s.upgrades_from, s.version));
        }
    }
    if s.python.parse::<VersionSpecifiers>().is_err() {
        g.error("bad_python", format!("python: `{}` is not a PEP 440 requirement like \">=3.9\"", s.python));
    }
    if s.keep_releases < 2 {
        g.error("keep_releases", "keep_releases must be at least 2 (the current release and the one to roll back to)");
    }
    let sequence = spec.sequence().map_err(|e| g.error("bad_version", e.message)).unwrap_or(0);

    // Wheels: every .whl in the wheelhouse; the app's own must be there with the spec's version.
    let wheel_dir = spec.resolve(&s.wheels);
    let mut wheels = Vec::new();
    let mut app_wheel = None;
    for name in list_dir(&mut g, &wheel_dir, "wheels") {
        if !name.ends_with(".whl") {
            g.warn("not_a_wheel", format!("{} is not a .whl and is not packed", wheel_dir.join(&name).display()));
            continue;
        }
        let bundle_path = format!("wheels/{name}");
        let parsed = match bundle_core::wheel::parse_filename(&name) {
            Ok(p) => p,
            Err(e) => {
                g.error("bad_wheel_name", e.to_string());
                continue;
            }
        };
        if normalize_name(&parsed.distribution) == normalize_name(&s.app) {
            match (version::parse_release(&parsed.version), &version) {
                (Ok(wv), Some(v)) if &wv == v => app_wheel = Some(bundle_path.clone()),
                _ => g.error("app_wheel_version", format!("{name}: the app's wheel must carry the spec's version {}", s.version)),
            }
        }
        if g.add(bundle_path.clone(), &wheel_dir.join(&name), 0o644) {
            wheels.push(bundle_path);
        }
    }
    if app_wheel.is_none() && version.is_some() {
        g.error("no_app_wheel", format!("no wheel for {} {} in {}", s.app, s.version, wheel_dir.display()));
    }

    let databases = s.databases.iter().map(|(name, db)| gather_database(&mut g, spec, name, db)).collect();
    let config = s.config.as_ref().map(|c| gather_config(&mut g, spec, c));

    let hook = |g: &mut Gather, p: &Option<PathBuf>| -> Option<String> {
        let p = p.as_ref()?;
        let fs = spec.resolve(p);
        let name = fs.file_name()?.to_string_lossy().into_owned();
        let bundle_path = format!("hooks/{name}");
        g.add(bundle_path.clone(), &fs, 0o755);
        Some(bundle_path)
    };
    let hooks = Hooks {
        pre_apply: hook(&mut g, &s.hooks.pre_apply),
        post_apply: hook(&mut g, &s.hooks.post_apply),
        health_check: hook(&mut g, &s.hooks.health_check),
    };

    if g.lints.iter().any(|l| l.level == Level::Error) {
        return (None, g.lints);
    }
    let sources = match hash_all(&g.files) {
        Ok(s) => s,
        Err(e) => {
            g.error("unreadable", e);
            return (None, g.lints);
        }
    };
    let manifest = Manifest {
        format: manifest::FORMAT,
        app: s.app.clone(),
        version: s.version.clone(),
        sequence,
        upgrades_from: s.upgrades_from.clone(),
        python: s.python.clone(),
        keep_releases: s.keep_releases,
        app_wheel: app_wheel.unwrap_or_default(),
        wheels,
        databases,
        config,
        hooks,
        payload: Payload { entries: sources.len() as u64, bytes: sources.iter().map(|s| s.entry.size).sum() },
        files: sources.iter().map(|s| s.entry.clone()).collect(),
    };
    // The spec checks above and the manifest's own rules overlap on purpose: the manifest's are what
    // every installer enforces, so a spec that passes here but not there must never be packed.
    if let Err(e) = manifest.validate() {
        g.error("invalid_manifest", e.0);
        return (None, g.lints);
    }
    (Some(Release { manifest, sources }), g.lints)
}

fn gather_database(g: &mut Gather, spec: &LoadedSpec, name: &str, db: &crate::spec::DatabaseSpec) -> Database {
    let dir = spec.resolve(&db.migrations);
    let mut steps: BTreeMap<SchemaVersion, Step> = BTreeMap::new();
    for file in list_dir(g, &dir, &format!("database `{name}` migrations")) {
        let parsed = match naming::parse_migration(&file) {
            Ok(p) => p,
            Err(e) => {
                g.error("migration_name", format!("database `{name}`: {e}"));
                continue;
            }
        };
        let bundle_path = format!("migrations/{name}/{file}");
        let step = steps.entry(parsed.version).or_insert(Step { version: parsed.version, up: None, data: None, down: None });
        let slot = match parsed.kind {
            MigrationKind::Up => &mut step.up,
            MigrationKind::Data => &mut step.data,
            MigrationKind::Down => &mut step.down,
        };
        if let Some(other) = slot {
            g.error("migration_duplicate", format!("database `{name}`: {other} and {bundle_path} both are the {:?} step of {}", parsed.kind, parsed.version));
            continue;
        }
        *slot = Some(bundle_path.clone());
        g.add(bundle_path, &dir.join(&file), 0o644);
    }
    let mut prev = SchemaVersion::CLEAN;
    for (i, step) in steps.values().enumerate() {
        let v = step.version;
        // The chain may start at any X.0 (a squashed initial script), as the installer accepts.
        let next_ok = if i == 0 { v.minor == 0 } else { (v.major == prev.major && v.minor == prev.minor + 1) || (v.major == prev.major + 1 && v.minor == 0) };
        if !next_ok {
            g.error("migration_gap", format!("database `{name}`: the chain jumps from {prev} to {v}; it starts at X.0 and goes M.m → M.(m+1) or (M+1).0"));
        }
        if step.up.is_none() && step.data.is_none() {
            g.error("migration_down_only", format!("database `{name}`: {v} has a down script but no up step"));
        }
        prev = v;
    }
    if steps.is_empty() {
        g.error("migration_empty", format!("database `{name}`: no migrations in {}", dir.display()));
    } else if prev != db.schema {
        g.error("schema_mismatch", format!("database `{name}`: schema is {} but the last migration is {prev}", db.schema));
    }
    if !["sqlite", "postgres", "mysql"].contains(&db.engine.as_str()) {
        g.error("bad_engine", format!("database `{name}`: engine `{}` is not sqlite, postgres or mysql", db.engine));
    }
    Database { name: name.to_string(), engine: db.engine.clone(), path: db.path.clone(), schema: db.schema, steps: steps.into_values().collect() }
}

fn gather_config(g: &mut Gather, spec: &LoadedSpec, c: &crate::spec::ConfigSpec) -> Config {
    let defaults = spec.resolve(&c.defaults);
    match std::fs::read_to_string(&defaults) {
        Ok(text) => match serde_yaml::from_str::<serde_yaml::Value>(&text) {
            Ok(serde_yaml::Value::Mapping(_)) | Ok(serde_yaml::Value::Null) => {}
            Ok(_) => g.error("config_defaults", format!("{}: the config must be a YAML mapping", defaults.display())),
            Err(e) => g.error("config_defaults", format!("{}: {e}", defaults.display())),
        },
        Err(e) => g.error("config_defaults", format!("{}: {e}", defaults.display())),
    }
    g.add("config/defaults.yaml".into(), &defaults, 0o644);
    let mut converters = Vec::new();
    if let Some(dir) = &c.converters {
        let dir = spec.resolve(dir);
        for file in list_dir(g, &dir, "config converters") {
            match naming::parse_converter(&file) {
                Ok((from, to, kind)) => {
                    if converters.iter().any(|x: &Converter| x.from == from) {
                        g.error("converter_duplicate", format!("two converters from config version {from}"));
                        continue;
                    }
                    if to > c.version {
                        g.error("converter_beyond", format!("{file} goes beyond config version {}", c.version));
                    }
                    let bundle_path = format!("config/converters/{file}");
                    if kind == naming::ConverterKind::Rules {
                        check_rules_file(g, &dir.join(&file));
                    }
                    g.add(bundle_path.clone(), &dir.join(&file), 0o644);
                    converters.push(Converter { from, to, kind, path: bundle_path });
                }
                Err(e) => g.error("converter_name", e),
            }
        }
    }
    for n in 1..c.version {
        if !converters.iter().any(|x| x.from == n) {
            g.error("converter_gap", format!("no converter from config version {n} to {}", n + 1));
        }
    }
    converters.sort_by_key(|x| x.from);
    Config { file: c.file.clone(), version: c.version, defaults: "config/defaults.yaml".into(), converters }
}

/// A declarative converter must at least be a YAML list of single-key rule maps of a known kind.
fn check_rules_file(g: &mut Gather, path: &Path) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return g.error("converter_rules", format!("{}: {e}", path.display())),
    };
    let value: serde_yaml::Value = match serde_yaml::from_str(&text) {
        Ok(v) => v,
        Err(e) => return g.error("converter_rules", format!("{}: {e}", path.display())),
    };
    let Some(list) = value.as_sequence() else {
        return g.error("converter_rules", format!("{}: must be a YAML list of rules", path.display()));
    };
    for (i, rule) in list.iter().enumerate() {
        let kind = rule.as_mapping().filter(|m| m.len() == 1).and_then(|m| m.keys().next()).and_then(|k| k.as_str());
        if !matches!(kind, Some("rename" | "set" | "replace" | "delete")) {
            g.error("converter_rules", format!("{}: rule {} is not one of rename/set/replace/delete", path.display(), i + 1));
        }
    }
}

/// Hashes every file, two at a time (hashing is CPU-bound and there are two cores to spare).
fn hash_all(files: &BTreeMap<String, (PathBuf, u32)>) -> Result<Vec<Source>, String> {
    let items: Vec<(&String, &(PathBuf, u32))> = files.iter().collect();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Vec<(usize, Result<Source, String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((bundle_path, (fs_path, mode))) = items.get(i) else { break };
                        let r = bundle_core::hash::hash_file(fs_path)
                            .map(|(sha256, size)| Source {
                                fs_path: fs_path.clone(),
                                entry: FileEntry { path: (*bundle_path).clone(), size, sha256, mode: format!("{mode:04o}") },
                            })
                            .map_err(|e| format!("{}: {e}", fs_path.display()));
                        out.push((i, r));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("hash worker")).collect()
    });
    let mut all: Vec<(usize, Result<Source, String>)> = results.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}
