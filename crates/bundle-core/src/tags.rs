//! PEP 425 compatibility tags, the one model both tools use: a wheel's tags (from its file name,
//! compressed sets such as `py2.py3-none-any` expanded, legacy `manylinux1/2010/2014` platforms
//! renamed to their PEP 600 `manylinux_2_X` form), the tags an interpreter accepts in priority order
//! (as `packaging.tags.sys_tags` lists them), and the release *targets* a spec declares. The
//! builder checks each wheel against the targets; the installer builds an [`Environment`] from
//! what the site's interpreter reports and picks, per distribution, the wheel with the best rank.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One `python-abi-platform` triple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub python: String,
    pub abi: String,
    pub platform: String,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.python, self.abi, self.platform)
    }
}

impl Tag {
    pub fn new(python: &str, abi: &str, platform: &str) -> Tag {
        Tag { python: python.to_string(), abi: abi.to_string(), platform: normalize_platform(platform) }
    }

    /// Parses one `python-abi-platform` triple (not a compressed set).
    pub fn parse(text: &str) -> Option<Tag> {
        let mut it = text.split('-');
        let (p, a, pl) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || [p, a, pl].iter().any(|s| s.is_empty() || s.contains('.')) {
            return None;
        }
        Some(Tag::new(p, a, pl))
    }
}

/// Every tag of a wheel file name's tag fields: `py2.py3-none-any` is two tags (PEP 425
/// compressed tag sets), platforms in their normal form.
pub fn expand(python: &str, abi: &str, platform: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    for p in python.split('.') {
        for a in abi.split('.') {
            for pl in platform.split('.') {
                out.push(Tag::new(p, a, pl));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `manylinux1_x86_64` → `manylinux_2_5_x86_64`, `manylinux2010_*` → `manylinux_2_12_*`,
/// `manylinux2014_*` → `manylinux_2_17_*` (PEP 600 aliases); anything else unchanged.
pub fn normalize_platform(platform: &str) -> String {
    for (legacy, glibc) in [("manylinux1_", "2_5"), ("manylinux2010_", "2_12"), ("manylinux2014_", "2_17")] {
        if let Some(arch) = platform.strip_prefix(legacy) {
            return format!("manylinux_{glibc}_{arch}");
        }
    }
    platform.to_string()
}

/// The C library of a Linux platform and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Libc {
    Glibc { major: u32, minor: u32 },
    Musl { major: u32, minor: u32 },
}

/// `manylinux_2_28_x86_64` → (glibc 2.28, `x86_64`), `musllinux_1_2_aarch64` → (musl 1.2, `aarch64`).
fn parse_libc_platform(platform: &str) -> Option<(Libc, String)> {
    let (kind, rest) = if let Some(r) = platform.strip_prefix("manylinux_") {
        ("glibc", r)
    } else {
        ("musl", platform.strip_prefix("musllinux_")?)
    };
    let mut it = rest.splitn(3, '_');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let arch = it.next().filter(|a| !a.is_empty())?.to_string();
    let libc = if kind == "glibc" { Libc::Glibc { major, minor } } else { Libc::Musl { major, minor } };
    Some((libc, arch))
}

/// The platform tags a Linux system with this C library and machine accepts, most specific first:
/// `manylinux_2_M…manylinux_2_0` (or `musllinux_1_M…musllinux_1_0`), then `linux_<arch>`.
pub fn linux_platforms(libc: Option<Libc>, arch: &str) -> Vec<String> {
    let mut out = Vec::new();
    match libc {
        // glibc 1.x never had manylinux wheels; 2.x counts down to 2.0 like `packaging`.
        Some(Libc::Glibc { major: 2, minor }) => {
            out.extend((0..=minor).rev().map(|m| format!("manylinux_2_{m}_{arch}")));
        }
        Some(Libc::Musl { major: 1, minor }) => {
            out.extend((0..=minor).rev().map(|m| format!("musllinux_1_{m}_{arch}")));
        }
        Some(_) | None => {}
    }
    out.push(format!("linux_{arch}"));
    out
}

/// macOS platforms for `macosx_X_Y_<arch>`: that release and every older one, with the multi-arch
/// variants a single-arch machine runs.
fn macos_platforms(major: u32, minor: u32, arch: &str) -> Vec<String> {
    let arches: &[&str] = match arch {
        "arm64" => &["arm64", "universal2"],
        "x86_64" => &["x86_64", "intel", "fat64", "fat3", "universal2", "universal"],
        other => return vec![format!("macosx_{major}_{minor}_{other}")],
    };
    let mut versions = Vec::new();
    if major >= 11 {
        versions.extend((11..=major).rev().map(|m| (m, 0)));
        versions.extend((0..=15).rev().map(|m| (10, m)));
    } else {
        versions.extend((0..=minor).rev().map(|m| (10, m)));
    }
    let mut out = Vec::new();
    for (ma, mi) in versions {
        for a in arches {
            if *a == "arm64" && ma < 11 {
                continue;
            }
            out.push(format!("macosx_{ma}_{mi}_{a}"));
        }
    }
    out
}

/// The machine of a platform tag, as `platform.machine()` reports it there: `x86_64` for
/// `manylinux_2_17_x86_64`, `arm64` for `macosx_11_0_arm64`, `AMD64` for `win_amd64`.
pub fn platform_machine(platform: &str) -> Option<String> {
    let platform = normalize_platform(platform);
    if let Some((_, arch)) = parse_libc_platform(&platform) {
        return Some(arch);
    }
    if let Some(arch) = platform.strip_prefix("linux_") {
        return Some(arch.to_string());
    }
    if let Some(rest) = platform.strip_prefix("macosx_") {
        return rest.splitn(3, '_').nth(2).map(str::to_string);
    }
    match platform.as_str() {
        "win_amd64" => Some("AMD64".into()),
        "win32" => Some("x86".into()),
        "win_arm64" => Some("ARM64".into()),
        _ => None,
    }
}

/// The platform tags a system whose most specific platform is `platform` accepts, best first.
pub fn platforms_for(platform: &str) -> Result<Vec<String>, String> {
    let platform = normalize_platform(platform);
    if let Some((libc, arch)) = parse_libc_platform(&platform) {
        return Ok(linux_platforms(Some(libc), &arch));
    }
    if let Some(arch) = platform.strip_prefix("linux_").filter(|a| !a.is_empty()) {
        return Ok(linux_platforms(None, arch));
    }
    if let Some(rest) = platform.strip_prefix("macosx_") {
        let mut it = rest.splitn(3, '_');
        if let (Some(Ok(ma)), Some(Ok(mi)), Some(arch)) =
            (it.next().map(str::parse), it.next().map(str::parse), it.next())
        {
            return Ok(macos_platforms(ma, mi, arch));
        }
    }
    if matches!(platform.as_str(), "win32" | "win_amd64" | "win_arm64") {
        return Ok(vec![platform]);
    }
    Err(format!(
        "`{platform}` is not a platform tag we know (manylinux_2_X_<arch>, musllinux_1_X_<arch>, linux_<arch>, macosx_X_Y_<arch>, win_amd64, win32, win_arm64)"
    ))
}

/// A release target the spec declares: an interpreter (`implementation`, `python` version) on a
/// platform, e.g. `{python: "3.11", platform: manylinux_2_28_x86_64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Interpreter abbreviation of PEP 425: `cp` (CPython, the default) or `pp` (PyPy).
    #[serde(default = "default_implementation")]
    pub implementation: String,
    /// `X.Y` or `X.Y.Z`; `X.Y` counts as `X.Y.0` for `Requires-Python`.
    pub python: String,
    /// The system's most specific platform tag, e.g. `manylinux_2_28_x86_64`, `musllinux_1_2_aarch64`.
    pub platform: String,
}

fn default_implementation() -> String {
    "cp".into()
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{} on {}", self.implementation, self.python, self.platform)
    }
}

impl Target {
    /// `(major, minor, micro)` of `python`.
    pub fn python_version(&self) -> Result<(u32, u32, u32), String> {
        let bad = || format!("target python `{}` is not X.Y or X.Y.Z", self.python);
        let parts: Vec<u32> = self.python.split('.').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        match parts.as_slice() {
            [a, b] => Ok((*a, *b, 0)),
            [a, b, c] => Ok((*a, *b, *c)),
            _ => Err(bad()),
        }
    }

    /// What an interpreter of this target accepts.
    pub fn environment(&self) -> Result<Environment, String> {
        let (major, minor, micro) = self.python_version()?;
        if self.implementation.is_empty() || !self.implementation.bytes().all(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "target implementation `{}` is not a PEP 425 abbreviation such as cp or pp",
                self.implementation
            ));
        }
        let abi = (self.implementation == "cp").then(|| format!("cp{major}{minor}"));
        Ok(Environment {
            implementation: self.implementation.clone(),
            version: (major, minor, micro),
            abi,
            abi3: self.implementation == "cp",
            platforms: platforms_for(&self.platform)?,
        })
    }
}

/// What one interpreter on one system accepts: a declared target, or a site's interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    /// PEP 425 interpreter abbreviation: `cp`, `pp`, …
    pub implementation: String,
    pub version: (u32, u32, u32),
    /// The interpreter's own ABI tag (`cp311`, `cp313t`, `pypy310_pp73`), when known.
    pub abi: Option<String>,
    /// Whether `abi3` (the CPython stable ABI) wheels load (not on free-threaded or debug builds).
    pub abi3: bool,
    /// Platform tags, most specific first.
    pub platforms: Vec<String>,
}

impl Environment {
    /// Every tag this environment accepts, most preferred first (the order of
    /// `packaging.tags.sys_tags`: interpreter-specific, abi3, `none`, older abi3, then the
    /// `pyXY`/`pyX` tags, then `any`).
    pub fn tags(&self) -> Vec<Tag> {
        let (major, minor, _) = self.version;
        let interp = format!("{}{major}{minor}", self.implementation);
        let mut out = Vec::new();
        let each_platform = |out: &mut Vec<Tag>, py: &str, abi: &str| {
            out.extend(self.platforms.iter().map(|p| Tag { python: py.into(), abi: abi.into(), platform: p.clone() }));
        };
        if let Some(abi) = &self.abi {
            each_platform(&mut out, &interp, abi);
        }
        if self.abi3 {
            each_platform(&mut out, &interp, "abi3");
        }
        each_platform(&mut out, &interp, "none");
        if self.abi3 {
            for m in (2..minor).rev() {
                each_platform(&mut out, &format!("cp{major}{m}"), "abi3");
            }
        }
        let mut py_versions = vec![format!("py{major}{minor}"), format!("py{major}")];
        py_versions.extend((0..minor).rev().map(|m| format!("py{major}{m}")));
        for v in &py_versions {
            each_platform(&mut out, v, "none");
        }
        out.push(Tag { python: interp, abi: "none".into(), platform: "any".into() });
        out.extend(py_versions.iter().map(|v| Tag { python: v.clone(), abi: "none".into(), platform: "any".into() }));
        out
    }

    /// A lookup from tag to rank (0 = most preferred).
    pub fn ranking(&self) -> Ranking {
        let mut ranks = HashMap::new();
        for (i, t) in self.tags().into_iter().enumerate() {
            ranks.entry(t).or_insert(i);
        }
        Ranking { ranks }
    }

    /// `X.Y.Z` as a PEP 440 version, for `Requires-Python`.
    pub fn python_version(&self) -> crate::version::Version {
        let (a, b, c) = self.version;
        crate::version::Version::new([u64::from(a), u64::from(b), u64::from(c)])
    }

    /// Whether a `Requires-Python` value admits this interpreter (an unparsable one does not).
    pub fn admits(&self, requires_python: Option<&str>) -> bool {
        match requires_python.map(str::trim).filter(|r| !r.is_empty()) {
            None => true,
            Some(r) => r.parse::<crate::version::VersionSpecifiers>().is_ok_and(|s| s.contains(&self.python_version())),
        }
    }

    /// One line for messages: `cp311 (abi cp311, abi3) on manylinux_2_36_x86_64`.
    pub fn summary(&self) -> String {
        let (a, b, c) = self.version;
        let mut abis: Vec<&str> = self.abi.iter().map(String::as_str).collect();
        if self.abi3 {
            abis.push("abi3");
        }
        abis.push("none");
        let plat = self.platforms.first().map(String::as_str).unwrap_or("?");
        format!("{}{a}{b} (Python {a}.{b}.{c}, ABI {}) on {plat}", self.implementation, abis.join("/"))
    }
}

/// Tag ranks of one [`Environment`].
#[derive(Debug, Clone)]
pub struct Ranking {
    ranks: HashMap<Tag, usize>,
}

impl Ranking {
    /// The best (lowest) rank of any of `tags`, or `None` when none fits.
    pub fn best(&self, tags: &[Tag]) -> Option<usize> {
        tags.iter().filter_map(|t| self.ranks.get(t).copied()).min()
    }
}

/// What a site's interpreter reports about itself (`bundle-install`'s probe), turned into an
/// [`Environment`]: `sys.implementation.name`, version, its ABI tag, `sysconfig.get_platform()`
/// (as a tag, `linux_x86_64`) and the C library found by `os.confstr('CS_GNU_LIBC_VERSION')` or
/// the musl loader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterpreterTags {
    pub implementation_name: String,
    pub version: (u32, u32, u32),
    pub abi: Option<String>,
    pub abi3: bool,
    pub platform: String,
    pub libc: Option<Libc>,
}

impl InterpreterTags {
    pub fn environment(&self) -> Environment {
        let implementation = match self.implementation_name.as_str() {
            "cpython" => "cp".to_string(),
            "pypy" => "pp".to_string(),
            "ironpython" => "ip".to_string(),
            "jython" => "jy".to_string(),
            other => other.to_string(),
        };
        let platform = self.platform.replace(['-', '.'], "_");
        let platforms = match platform.strip_prefix("linux_") {
            Some(arch) => linux_platforms(self.libc, arch),
            None => platforms_for(&platform).unwrap_or_else(|_| vec![platform.clone()]),
        };
        Environment {
            abi3: self.abi3 && implementation == "cp",
            implementation,
            version: self.version,
            abi: self.abi.clone(),
            platforms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp311_glibc() -> Environment {
        Target { implementation: "cp".into(), python: "3.11".into(), platform: "manylinux_2_28_x86_64".into() }
            .environment()
            .unwrap()
    }

    #[test]
    fn compressed_sets_and_aliases() {
        let t = expand("py2.py3", "none", "any");
        assert_eq!(t.iter().map(|t| t.to_string()).collect::<Vec<_>>(), ["py2-none-any", "py3-none-any"]);
        let t = expand("cp311", "cp311", "manylinux_2_17_x86_64.manylinux2014_x86_64");
        assert_eq!(t.len(), 1, "the alias and its PEP 600 name are one tag: {t:?}");
        assert_eq!(normalize_platform("manylinux1_i686"), "manylinux_2_5_i686");
        assert_eq!(normalize_platform("manylinux2010_x86_64"), "manylinux_2_12_x86_64");
        assert_eq!(Tag::parse("cp311-abi3-manylinux2014_aarch64").unwrap().platform, "manylinux_2_17_aarch64");
        let machine = |p| platform_machine(p).unwrap();
        assert_eq!(
            [machine("manylinux_2_17_x86_64"), machine("musllinux_1_2_aarch64"), machine("manylinux2014_ppc64le")],
            ["x86_64", "aarch64", "ppc64le"]
        );
        assert_eq!(
            [machine("linux_armv7l"), machine("macosx_11_0_arm64"), machine("win_amd64")],
            ["armv7l", "arm64", "AMD64"]
        );
        assert!(Tag::parse("cp311-abi3").is_none());
    }

    #[test]
    fn priority_order_follows_packaging() {
        let env = cp311_glibc();
        let r = env.ranking();
        let rank = |s: &str| r.best(&[Tag::parse(s).unwrap()]);
        let order = [
            "cp311-cp311-manylinux_2_28_x86_64",
            "cp311-cp311-manylinux_2_17_x86_64",
            "cp311-cp311-linux_x86_64",
            "cp311-abi3-manylinux_2_28_x86_64",
            "cp311-none-manylinux_2_17_x86_64",
            "cp38-abi3-manylinux_2_17_x86_64",
            "py311-none-manylinux_2_5_x86_64",
            "py3-none-linux_x86_64",
            "cp311-none-any",
            "py311-none-any",
            "py3-none-any",
            "py30-none-any",
        ];
        let ranks: Vec<usize> = order.iter().map(|s| rank(s).unwrap_or_else(|| panic!("{s} does not fit"))).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        for s in [
            "cp312-cp312-manylinux_2_17_x86_64",
            "cp311-cp311-manylinux_2_34_x86_64",
            "cp311-cp311-musllinux_1_2_x86_64",
            "cp311-cp311-manylinux_2_17_aarch64",
            "cp311-cp311-macosx_11_0_arm64",
            "cp311-cp311-win_amd64",
            "cp312-abi3-manylinux_2_17_x86_64",
            "py2-none-any",
            "pp310-pypy310_pp73-manylinux_2_17_x86_64",
        ] {
            assert_eq!(rank(s), None, "{s} must not fit {}", env.summary());
        }
    }

    #[test]
    fn musl_and_site_interpreters() {
        let musl =
            Target { implementation: "cp".into(), python: "3.12".into(), platform: "musllinux_1_2_aarch64".into() }
                .environment()
                .unwrap();
        let r = musl.ranking();
        assert!(r.best(&expand("cp312", "cp312", "musllinux_1_1_aarch64")).is_some());
        assert!(r.best(&expand("cp312", "cp312", "manylinux_2_17_aarch64")).is_none());
        let site = InterpreterTags {
            implementation_name: "cpython".into(),
            version: (3, 11, 2),
            abi: Some("cp311".into()),
            abi3: true,
            platform: "linux-x86_64".into(),
            libc: Some(Libc::Glibc { major: 2, minor: 36 }),
        }
        .environment();
        assert_eq!(site.platforms.first().map(String::as_str), Some("manylinux_2_36_x86_64"));
        assert!(site.ranking().best(&expand("cp311", "cp311", "manylinux2014_x86_64")).is_some());
        assert!(site.admits(Some(">=3.8")) && !site.admits(Some(">=3.12")) && site.admits(None));
        assert!(Target { implementation: "cp".into(), python: "3".into(), platform: "manylinux_2_28_x86_64".into() }
            .environment()
            .is_err());
        assert!(Target { implementation: "cp".into(), python: "3.11".into(), platform: "solaris".into() }
            .environment()
            .is_err());
        let mac = Target { implementation: "cp".into(), python: "3.11".into(), platform: "macosx_14_0_arm64".into() }
            .environment()
            .unwrap();
        assert!(mac.ranking().best(&expand("cp311", "cp311", "macosx_11_0_arm64")).is_some());
    }
}
