//! Wheel checks for `bundle-build check`: each wheel's METADATA agrees with its file name, and every
//! `Requires-Dist` of one wheel is met by another wheel in the bundle (a warning, since markers such as
//! `python_version` may make a requirement irrelevant on the site).

use bundle_core::version::{parse_release, VersionSpecifiers};
use bundle_core::wheel::{normalize_name, WheelMetadata};

use crate::release::{Level, Lint, Release};

/// Requirements between the wheels (their METADATA was read and checked by `gather`).
pub fn check_wheels(release: &Release) -> Vec<Lint> {
    let mut lints = Vec::new();
    let metas: Vec<&WheelMetadata> = release.wheel_meta.iter().map(|(_, m)| m).collect();
    for m in &metas {
        for req in &m.requires_dist {
            let (spec, markers) = req.split_once(';').map(|(a, b)| (a, Some(b))).unwrap_or((req, None));
            if markers.is_some_and(|mk| mk.contains("extra")) {
                continue; // optional extras are not installed
            }
            let name_end = spec.find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))).unwrap_or(spec.len());
            let (name, rest) = spec.split_at(name_end);
            let rest = rest.trim();
            let rest = rest.strip_prefix('[').and_then(|r| r.split_once(']')).map(|(_, r)| r.trim()).unwrap_or(rest);
            let rest = rest.trim_start_matches('(').trim_end_matches(')').trim();
            let found = metas.iter().find(|o| normalize_name(&o.name) == normalize_name(name));
            let problem = match found {
                None => Some(format!("{} requires `{}`, which no wheel in the bundle provides", m.name, req.trim())),
                Some(dep) if !rest.is_empty() => match (rest.parse::<VersionSpecifiers>(), parse_release(&dep.version)) {
                    (Ok(specs), Ok(v)) if !specs.contains(&v) => {
                        Some(format!("{} requires `{}`, the bundle has {} {}", m.name, req.trim(), dep.name, dep.version))
                    }
                    _ => None,
                },
                Some(_) => None,
            };
            if let Some(message) = problem {
                lints.push(Lint { level: Level::Warning, code: "unmet_requirement", message });
            }
        }
    }
    lints
}
