//! What a wheel says about itself, read without installing it: the file name
//! (`name-version[-build]-python-abi-platform.whl`) and `*.dist-info/METADATA`. Used by
//! `bundle-build check` and by the installer before it unpacks anything. [`metadata`] parses
//! `METADATA` and `WHEEL`, [`record`] reads and writes `RECORD`.

use std::io::Read;
use std::path::Path;

pub mod metadata;
pub mod record;

pub use metadata::{parse_metadata, WheelMetadata};

/// The parts of `{distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    pub distribution: String,
    pub version: String,
    pub build: Option<String>,
    pub python_tag: String,
    pub abi_tag: String,
    pub platform_tag: String,
}

impl WheelName {
    /// The PEP 503 normalised distribution name.
    pub fn normalized_name(&self) -> String {
        normalize_name(&self.distribution)
    }
}

impl std::fmt::Display for WheelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.distribution, self.version)?;
        if let Some(b) = &self.build {
            write!(f, "-{b}")?;
        }
        write!(f, "-{}-{}-{}.whl", self.python_tag, self.abi_tag, self.platform_tag)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("wheel {wheel}: {message}")]
pub struct WheelInfoError {
    pub wheel: String,
    pub message: String,
}

/// PEP 503 normalised project name: lowercase, runs of `-_.` become `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// A valid PEP 508 distribution name (also safe as a path component).
pub fn is_valid_dist_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

pub fn parse_filename(file_name: &str) -> Result<WheelName, WheelInfoError> {
    let bad = |m: &str| WheelInfoError { wheel: file_name.to_string(), message: m.to_string() };
    if file_name.contains('/') {
        return Err(bad("expected a file name, not a path"));
    }
    let stem = file_name.strip_suffix(".whl").ok_or_else(|| bad("does not end in .whl"))?;
    let parts: Vec<&str> = stem.split('-').collect();
    let (dist, version, build, tags) = match parts.as_slice() {
        [d, v, py, abi, plat] => (*d, *v, None, [*py, *abi, *plat]),
        [d, v, b, py, abi, plat] => (*d, *v, Some(*b), [*py, *abi, *plat]),
        _ => return Err(bad("expected {name}-{version}[-{build}]-{python}-{abi}-{platform}.whl")),
    };
    if !is_valid_dist_name(dist) {
        return Err(bad("invalid distribution name"));
    }
    if crate::version::parse_release(version).is_err() {
        return Err(bad("version is not a valid PEP 440 version"));
    }
    if build.is_some_and(|b| !b.starts_with(|c: char| c.is_ascii_digit())) {
        return Err(bad("build tag must start with a digit"));
    }
    if tags.iter().any(|t| t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._".contains(c))) {
        return Err(bad("invalid compatibility tag"));
    }
    Ok(WheelName {
        distribution: dist.to_string(),
        version: version.to_string(),
        build: build.map(str::to_string),
        python_tag: tags[0].to_string(),
        abi_tag: tags[1].to_string(),
        platform_tag: tags[2].to_string(),
    })
}

/// Reads `METADATA` from the wheel's `.dist-info` and checks it names the same distribution and
/// version as the file name.
pub fn read_metadata(path: &Path) -> Result<WheelMetadata, WheelInfoError> {
    inspect(path).map(|c| c.meta)
}

/// What the builder needs to know about one wheel: its file name, `METADATA`, the `Tag` lines of
/// `WHEEL`, and where each of its files would be installed.
#[derive(Debug, Clone)]
pub struct WheelContents {
    pub name: WheelName,
    pub meta: WheelMetadata,
    /// The `Tag:` lines of `.dist-info/WHEEL` (platforms in normal form), sorted.
    pub wheel_tags: Vec<crate::tags::Tag>,
    /// Every file's install location, as [`install_location`] gives it.
    pub files: Vec<String>,
}

impl WheelName {
    /// The tags of the file name, compressed sets expanded (sorted).
    pub fn tags(&self) -> Vec<crate::tags::Tag> {
        crate::tags::expand(&self.python_tag, &self.abi_tag, &self.platform_tag)
    }
}

/// Where an entry of a wheel of distribution `dist` ends up, relative to the environment, in a
/// form two wheels can be compared by: `site-packages/…` for the package files (also from
/// `.data/purelib/` and `.data/platlib/`), `scripts/…`, `data/…`, `headers/<dist>/…`. Empty and
/// `.` components are dropped; the comparison stays case-sensitive, as Linux file systems are.
pub fn install_location(entry: &str, dist: &str) -> String {
    let parts: Vec<&str> = entry.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let in_data = parts.first().is_some_and(|p| p.ends_with(".data")) && parts.len() >= 3;
    let (prefix, rest) = match (in_data, parts.get(1).copied()) {
        (true, Some("purelib" | "platlib")) => ("site-packages".to_string(), &parts[2..]),
        (true, Some("headers")) => (format!("headers/{}", normalize_name(dist)), &parts[2..]),
        (true, Some(scheme)) => (scheme.to_string(), &parts[2..]),
        _ => ("site-packages".to_string(), &parts[..]),
    };
    format!("{prefix}/{}", rest.join("/"))
}

/// Opens a wheel and reads its `.dist-info/METADATA` and `WHEEL` and its file list. The
/// `.dist-info` directory is the top-level one whose name is the file name's distribution and
/// version (PEP 503/440-normalised). Refuses METADATA naming another distribution or version.
pub fn inspect(path: &Path) -> Result<WheelContents, WheelInfoError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let err = |m: String| WheelInfoError { wheel: file_name.clone(), message: m };
    let name = parse_filename(&file_name)?;
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| err(format!("not a readable zip: {e}")))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let dist_info = names
        .iter()
        .filter_map(|n| n.split_once('/').map(|(dir, _)| dir))
        .find(|dir| {
            dir.strip_suffix(".dist-info")
                .and_then(|s| s.rsplit_once('-'))
                .is_some_and(|(d, v)| normalize_name(d) == name.normalized_name() && same_version(v, &name.version))
        })
        .map(str::to_string)
        .ok_or_else(|| err(format!("no {}-{}.dist-info directory", name.distribution, name.version)))?;
    let text = read_member(&mut zip, &format!("{dist_info}/METADATA")).map_err(err)?;
    let meta = parse_metadata(&text).map_err(|e| err(format!("METADATA: {e}")))?;
    if normalize_name(&meta.name) != normalize_name(&name.distribution) {
        return Err(err(format!("METADATA names `{}`, the file name `{}`", meta.name, name.distribution)));
    }
    if !same_version(&meta.version, &name.version) {
        return Err(err(format!("METADATA says version {}, the file name {}", meta.version, name.version)));
    }
    let wheel = read_member(&mut zip, &format!("{dist_info}/WHEEL")).map_err(err)?;
    let wheel = metadata::parse_wheel(&wheel).map_err(|e| err(format!("WHEEL: {e}")))?;
    let mut wheel_tags = Vec::new();
    for t in &wheel.tags {
        let tag = crate::tags::Tag::parse(t).ok_or_else(|| err(format!("WHEEL has a malformed Tag line `{t}`")))?;
        wheel_tags.push(tag);
    }
    wheel_tags.sort();
    wheel_tags.dedup();
    let files = names.iter().filter(|n| !n.ends_with('/')).map(|n| install_location(n, &name.distribution)).collect();
    Ok(WheelContents { name, meta, wheel_tags, files })
}

/// PEP 440 equality of two version strings (textual when either does not parse).
pub fn same_version(a: &str, b: &str) -> bool {
    match (crate::version::parse_release(a), crate::version::parse_release(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// A small text member of the wheel (at most 16 MiB), by exact name.
fn read_member(zip: &mut zip::ZipArchive<std::fs::File>, wanted: &str) -> Result<String, String> {
    let mut entry = zip.by_name(wanted).map_err(|_| format!("no {wanted}"))?;
    if entry.size() > 16 << 20 {
        return Err(format!("{wanted} larger than 16 MiB"));
    }
    let mut text = String::new();
    entry.by_ref().take(16 << 20).read_to_string(&mut text).map_err(|e| format!("{wanted}: {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let n = parse_filename("Foo_Bar-1.2.0-1-py3-none-any.whl").unwrap();
        assert_eq!((n.distribution.as_str(), n.version.as_str(), n.build.as_deref()), ("Foo_Bar", "1.2.0", Some("1")));
        assert!(parse_filename("foo-1.0.whl").is_err());
        assert!(parse_filename("foo-1.0-py3-none-any.zip").is_err());
        assert_eq!(normalize_name("Foo__Bar.baz"), "foo-bar-baz");
    }

    #[test]
    fn install_locations() {
        assert_eq!(install_location("jwt/__init__.py", "PyJWT"), "site-packages/jwt/__init__.py");
        assert_eq!(
            install_location("PyJWT-2.1.data/purelib/jwt/__init__.py", "PyJWT"),
            "site-packages/jwt/__init__.py"
        );
        assert_eq!(install_location("x-1.data/platlib/./jwt//__init__.py", "x"), "site-packages/jwt/__init__.py");
        assert_eq!(install_location("x-1.data/scripts/tool", "x"), "scripts/tool");
        assert_eq!(install_location("Foo_Bar-1.data/headers/a.h", "Foo_Bar"), "headers/foo-bar/a.h");
        assert_ne!(install_location("Jwt/__init__.py", "a"), install_location("jwt/__init__.py", "b"));
    }
}
