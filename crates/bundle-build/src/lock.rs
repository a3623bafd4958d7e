//! Lock files for the wheelhouse: a PEP 751 `pylock.toml` or a `requirements.txt` with
//! `--hash=sha256:` options (as `uv export` and `pip-compile --generate-hashes` write them). The
//! build checks that the lock and the wheelhouse hold the same distributions at the same versions
//! and that every wheel's sha256 is one the lock allows (format in `bundle-spec/spec.md#lock-files`).

use std::collections::BTreeMap;
use std::path::Path;

use bundle_core::wheel::normalize_name;
use serde::Deserialize;

/// One locked distribution: its pinned version, the sha256 digests its files may have, the wheel
/// file names the lock lists (pylock only) and its environment marker, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locked {
    pub name: String,
    pub version: String,
    /// Lowercase hex; any one matching is enough (a requirements line may list several).
    pub hashes: Vec<String>,
    /// `(file name, sha256)` of each wheel a pylock.toml lists.
    pub wheels: Vec<(String, String)>,
    pub marker: Option<String>,
}

/// A parsed lock file.
#[derive(Debug, Clone)]
pub struct Lock {
    pub file_name: String,
    pub sha256: String,
    /// By PEP 503-normalised name.
    pub packages: BTreeMap<String, Locked>,
}

/// Reads a lock file (pylock when the name ends in `.toml`, requirements otherwise).
pub fn read(path: &Path) -> Result<Lock, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let list = if file_name.ends_with(".toml") { parse_pylock(text) } else { parse_requirements(text) }
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut packages = BTreeMap::new();
    for p in list {
        let key = normalize_name(&p.name);
        if packages.insert(key.clone(), p).is_some() {
            return Err(format!("{}: `{key}` is locked twice", path.display()));
        }
    }
    Ok(Lock { file_name, sha256: bundle_core::hash::sha256_hex(&bytes), packages })
}

/// `name[extras]==version ; marker --hash=sha256:… --hash=sha256:…`, with `\` continuations and
/// `#` comments; option lines (`--index-url`, `-c`) are skipped; `-e`/`-r` and unpinned or
/// unhashed requirements are refused (they cannot be checked against the wheelhouse).
pub fn parse_requirements(text: &str) -> Result<Vec<Locked>, String> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start_line = 0;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            start_line = i + 1;
        }
        let line = match raw.find(" #").or_else(|| raw.trim_start().starts_with('#').then_some(0)) {
            Some(at) => &raw[..at],
            None => raw,
        };
        if let Some(cont) = line.trim_end().strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        if let Some(p) = parse_requirement_line(entry.trim()).map_err(|e| format!("line {start_line}: {e}"))? {
            out.push(p);
        }
    }
    Ok(out)
}

fn parse_requirement_line(line: &str) -> Result<Option<Locked>, String> {
    if line.is_empty() {
        return Ok(None);
    }
    if line.starts_with('-') {
        return match line.split([' ', '=']).next() {
            Some("-e" | "--editable" | "-r" | "--requirement") => {
                Err(format!("`{line}`: editable or nested requirement files cannot be locked"))
            }
            _ => Ok(None),
        };
    }
    // Options come after the requirement: split them off, keeping every `--hash`.
    let mut hashes = Vec::new();
    let mut words = Vec::new();
    let mut tokens = line.split_whitespace();
    while let Some(t) = tokens.next() {
        let value = match t.strip_prefix("--hash") {
            Some("") => tokens.next().unwrap_or(""),
            Some(v) if v.starts_with('=') => &v[1..],
            _ => {
                words.push(t);
                continue;
            }
        };
        let hex = value
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("`{value}`: only sha256 hashes are checked"))?
            .to_ascii_lowercase();
        if !bundle_core::hash::is_sha256_hex(&hex) {
            return Err(format!("`{value}` is not a sha256 digest"));
        }
        hashes.push(hex);
    }
    let rest = words.join(" ");
    let (req, marker) = match rest.split_once(';') {
        Some((r, m)) => (r.trim(), Some(m.trim().to_string()).filter(|m| !m.is_empty())),
        None => (rest.trim(), None),
    };
    let (name, version) =
        req.split_once("==").ok_or_else(|| format!("`{req}` is not pinned with ==; a lock pins every version"))?;
    let name = name.split('[').next().unwrap_or(name).trim();
    let version = version.trim();
    if !bundle_core::wheel::is_valid_dist_name(name) || bundle_core::version::parse_release(version).is_err() {
        return Err(format!("`{req}` is not `name==version`"));
    }
    if hashes.is_empty() {
        return Err(format!(
            "`{req}` has no --hash=sha256:…; generate the file with hashes (uv export, pip-compile --generate-hashes)"
        ));
    }
    Ok(Some(Locked { name: name.to_string(), version: version.to_string(), hashes, wheels: Vec::new(), marker }))
}

#[derive(Deserialize)]
struct PyLock {
    #[serde(rename = "lock-version")]
    lock_version: String,
    #[serde(default)]
    packages: Vec<PyLockPackage>,
}

#[derive(Deserialize)]
struct PyLockPackage {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    wheels: Vec<PyLockFile>,
}

#[derive(Deserialize)]
struct PyLockFile {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// PEP 751: `lock-version = "1.0"`, `[[packages]]` with `name`, `version`, `marker` and
/// `wheels = [{name|url|path, hashes = {sha256 = …}}]`. A package without wheels (an sdist, a VCS
/// checkout) cannot be in a wheelhouse and is refused.
pub fn parse_pylock(text: &str) -> Result<Vec<Locked>, String> {
    let lock: PyLock = toml::from_str(text).map_err(|e| e.to_string())?;
    if !lock.lock_version.starts_with("1.") {
        return Err(format!("lock-version {} (this builder reads 1.x)", lock.lock_version));
    }
    let mut out = Vec::new();
    for p in lock.packages {
        let version = p.version.ok_or_else(|| format!("package `{}` has no version", p.name))?;
        if p.wheels.is_empty() {
            return Err(format!("package `{}` {version} has no wheels (only wheels can be bundled)", p.name));
        }
        let mut wheels = Vec::new();
        for w in p.wheels {
            let file = w
                .name
                .or_else(|| w.url.or(w.path).map(|u| u.rsplit('/').next().unwrap_or(&u).to_string()))
                .ok_or_else(|| format!("a wheel of `{}` has neither name, url nor path", p.name))?;
            let sha = w
                .hashes
                .get("sha256")
                .map(|h| h.to_ascii_lowercase())
                .ok_or_else(|| format!("wheel {file} has no sha256 hash"))?;
            wheels.push((file, sha));
        }
        out.push(Locked {
            name: p.name,
            version,
            hashes: wheels.iter().map(|(_, h)| h.clone()).collect(),
            wheels,
            marker: p.marker,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const H2: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn requirements_with_continuations_and_several_hashes() {
        let text = format!(
            "# generated\n--index-url https://pypi.org/simple\nPyYAML==6.0.2 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}\n    # via app\ntomli==2.0.1 ; python_version < \"3.11\" --hash=sha256:{H1}\n"
        );
        let l = parse_requirements(&text).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].name.as_str(), l[0].version.as_str()), ("PyYAML", "6.0.2"));
        assert_eq!(l[0].hashes, [H1, H2]);
        assert_eq!(l[1].marker.as_deref(), Some("python_version < \"3.11\""));
        assert!(parse_requirements("flask>=2 --hash=sha256:aa\n").is_err());
        assert!(parse_requirements("flask==2.0\n").is_err());
        assert!(parse_requirements("-e ./src\n").is_err());
    }

    #[test]
    fn pylock() {
        let text = format!(
            "lock-version = \"1.0\"\ncreated-by = \"uv\"\n[[packages]]\nname = \"pyyaml\"\nversion = \"6.0.2\"\nwheels = [{{ url = \"https://x/PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.whl\", hashes = {{ sha256 = \"{H1}\" }} }}]\n"
        );
        let l = parse_pylock(&text).unwrap();
        assert_eq!(l[0].wheels, [("PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.whl".to_string(), H1.to_string())]);
        assert!(parse_pylock("lock-version = \"2.0\"\n").is_err());
        assert!(parse_pylock("lock-version = \"1.0\"\n[[packages]]\nname = \"a\"\nversion = \"1\"\n").is_err());
    }
}
