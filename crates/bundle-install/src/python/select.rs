//! Which of a bundle's wheels this site installs: per distribution, the wheel whose tags the site's
//! interpreter accepts with the best PEP 425 priority and whose `Requires-Python` admits it. The
//! tags come from the manifest's `wheel_info` (or, in bundles of older builders, from the file
//! names), so the choice is made before anything on the site changes. A distribution with no
//! fitting wheel refuses the whole apply (`incompatible_wheel`, exit 4).

use std::collections::BTreeMap;

use bundle_core::manifest::Manifest;
use bundle_core::tags::Environment;
use serde::Serialize;

use crate::error::{InstallError, Result};

/// One chosen wheel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChosenWheel {
    /// PEP 503-normalised distribution name.
    pub name: String,
    pub version: String,
    /// Bundle path of the wheel.
    pub wheel: String,
    /// The wheel's best tag for this site.
    pub tag: String,
    /// Other wheels of the distribution the bundle offers (not installed here).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<String>,
}

/// What the site's interpreter accepts, as `plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SiteTags {
    pub summary: String,
    pub implementation: String,
    pub python: String,
    pub abi: Option<String>,
    pub abi3: bool,
    /// Most specific first; `manylinux_2_36_x86_64 … linux_x86_64`.
    pub platforms: Vec<String>,
}

impl SiteTags {
    pub fn of(env: &Environment) -> SiteTags {
        let (a, b, c) = env.version;
        SiteTags {
            summary: env.summary(),
            implementation: env.implementation.clone(),
            python: format!("{a}.{b}.{c}"),
            abi: env.abi.clone(),
            abi3: env.abi3,
            platforms: env.platforms.clone(),
        }
    }
}

/// Chooses one wheel per distribution for `env`, or refuses naming every distribution left
/// without one, the site's tags and the wheels on offer.
pub(crate) fn choose(manifest: &Manifest, env: &Environment) -> Result<Vec<ChosenWheel>> {
    let ranking = env.ranking();
    let mut by_dist: BTreeMap<String, Vec<bundle_core::manifest::WheelInfo>> = BTreeMap::new();
    for w in &manifest.wheels {
        let info = manifest
            .wheel_description(w)
            .ok_or_else(|| InstallError::refused("bad_wheel_name", format!("{w}: not a wheel file name")))?;
        by_dist.entry(info.name.clone()).or_default().push(info);
    }
    let mut chosen = Vec::new();
    let mut problems = Vec::new();
    for (name, offered) in &by_dist {
        // The builder refuses this; a bundle of an older builder may still carry it.
        if offered.iter().any(|w| !same_version(&w.version, &offered[0].version)) {
            return Err(InstallError::refused(
                "duplicate_distribution",
                format!(
                    "the bundle carries several versions of `{name}`: {}",
                    offered.iter().map(describe).collect::<Vec<_>>().join("; ")
                ),
            )
            .with_hint("nothing was changed; ask for a bundle with one version of each distribution"));
        }
        let best = offered
            .iter()
            .filter(|w| env.admits(w.requires_python.as_deref()))
            .filter_map(|w| {
                let tags = w.parsed_tags();
                let rank = ranking.best(&tags)?;
                let tag = tags
                    .into_iter()
                    .filter(|t| ranking.best(std::slice::from_ref(t)) == Some(rank))
                    .map(|t| t.to_string())
                    .next()?;
                Some((rank, w, tag))
            })
            .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.path.cmp(&b.1.path)));
        match best {
            Some((_, w, tag)) => chosen.push(ChosenWheel {
                name: name.clone(),
                version: w.version.clone(),
                wheel: w.path.clone(),
                tag,
                passed_over: offered.iter().filter(|o| o.path != w.path).map(|o| o.path.clone()).collect(),
            }),
            None => problems
                .push(format!("`{name}` (on offer: {})", offered.iter().map(describe).collect::<Vec<_>>().join("; "))),
        }
    }
    if !problems.is_empty() {
        return Err(InstallError::refused(
            "incompatible_wheel",
            format!("no wheel fits this site's interpreter, {}, for {}", env.summary(), problems.join(", ")),
        )
        .with_hint("nothing was changed; use a bundle built for this site's Python and platform (spec `targets:`), or pass --python PATH to the interpreter it was built for"));
    }
    Ok(chosen)
}

fn same_version(a: &str, b: &str) -> bool {
    match (bundle_core::version::parse_release(a), bundle_core::version::parse_release(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn describe(w: &bundle_core::manifest::WheelInfo) -> String {
    let file = w.path.rsplit('/').next().unwrap_or(&w.path);
    match &w.requires_python {
        Some(r) => format!("{file}, Requires-Python {r}"),
        None => file.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle_core::manifest::WheelInfo;
    use bundle_core::tags::Target;

    fn manifest(wheels: &[(&str, Option<&str>)]) -> Manifest {
        let mut m = test_manifest();
        m.wheels = wheels.iter().map(|(w, _)| format!("wheels/{w}")).collect();
        m.wheel_info = wheels
            .iter()
            .map(|(w, rp)| {
                let mut i = m.wheel_description(&format!("wheels/{w}")).unwrap();
                i.requires_python = rp.map(str::to_string);
                i
            })
            .collect::<Vec<WheelInfo>>();
        m
    }

    fn test_manifest() -> Manifest {
        serde_yaml::from_str(
            "format: 1\napp: a\nversion: '1'\nsequence: 1\nupgrades_from: '1'\npython: '>=3'\nkeep_releases: 3\napp_wheel: x\nwheels: []\npayload: {entries: 0, bytes: 0}\nfiles: []\n",
        )
        .unwrap()
    }

    fn site() -> Environment {
        Target { implementation: "cp".into(), python: "3.11.4".into(), platform: "manylinux_2_36_x86_64".into() }
            .environment()
            .unwrap()
    }

    #[test]
    fn best_fitting_wheel_per_distribution() {
        let m = manifest(&[
            ("pyyaml-6.0.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", None),
            ("pyyaml-6.0.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", None),
            ("pyyaml-6.0.3-py3-none-any.whl", None),
            ("tomli-2.0.1-py3-none-any.whl", Some(">=3.12")),
            ("tomli-2.0.1-cp311-cp311-macosx_11_0_arm64.whl", None),
        ]);
        let err = choose(&m, &site()).unwrap_err();
        assert_eq!(err.kind, "incompatible_wheel");
        assert!(err.message.contains("`tomli`") && !err.message.contains("`pyyaml`"), "{}", err.message);
        assert!(err.message.contains("Requires-Python >=3.12"), "{}", err.message);
        let m = manifest(&[
            ("pyyaml-6.0.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", None),
            ("pyyaml-6.0.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", None),
            ("pyyaml-6.0.3-py3-none-any.whl", None),
        ]);
        let c = choose(&m, &site()).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].wheel, "wheels/pyyaml-6.0.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
        assert_eq!(c[0].tag, "cp311-cp311-manylinux_2_17_x86_64");
        assert_eq!(c[0].passed_over.len(), 2);
        // A bundle of an older builder has no wheel_info: the file names' tags decide the same way.
        let mut old = m.clone();
        old.wheel_info.clear();
        assert_eq!(choose(&old, &site()).unwrap(), c);
        let m = manifest(&[("pyyaml-6.0.3-py3-none-any.whl", None), ("pyyaml-6.0.4-py3-none-any.whl", None)]);
        assert_eq!(choose(&m, &site()).unwrap_err().kind, "duplicate_distribution");
    }
}
