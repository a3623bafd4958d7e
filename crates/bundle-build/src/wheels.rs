//! The wheel-set rules of `check` and `build`: a wheelhouse the installer would refuse is refused
//! here first. Each wheel's file name, `WHEEL` tags and `METADATA` agree; one version per
//! distribution; every wheel fits a declared target (tags and `Requires-Python`) and every target
//! has a wheel of every distribution; no two wheels installed together write the same file; every
//! `Requires-Dist` active on a target (PEP 508 markers and extras evaluated) is met; and with a
//! lock file, the wheelhouse is exactly what it locks. Codes in `bundle-spec/spec.md#lints`.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use bundle_core::manifest::WheelInfo;
use bundle_core::tags::{Environment, Ranking, Target};
use bundle_core::version::{parse_release, VersionSpecifiers};
use bundle_core::wheel::{normalize_name, WheelContents};
use pep508_rs::{ExtraName, MarkerEnvironment, MarkerEnvironmentBuilder, Requirement, VersionOrUrl};

use crate::lock::Lock;
use crate::release::{Level, Lint};

/// One wheel of the release.
pub struct Wheel<'a> {
    /// Bundle path, `wheels/<file>`.
    pub path: &'a str,
    pub contents: &'a WheelContents,
    pub sha256: &'a str,
}

impl Wheel<'_> {
    fn file(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }
    fn dist(&self) -> String {
        self.contents.name.normalized_name()
    }
}

/// What the spec says about the wheel set.
pub struct Rules<'a> {
    pub targets: &'a [Target],
    /// The spec's `python:` requirement.
    pub python: &'a str,
    /// `allow_unmet`: normalised names, or `*`.
    pub allow_unmet: &'a [String],
    pub lock: Option<&'a Lock>,
}

/// A declared target, ready for matching.
struct TargetEnv<'a> {
    target: &'a Target,
    env: Environment,
    ranking: Ranking,
    markers: MarkerEnvironment,
}

/// The `wheel_info` entries of the manifest.
pub fn wheel_info(wheels: &[Wheel]) -> Vec<WheelInfo> {
    wheels
        .iter()
        .map(|w| WheelInfo {
            path: w.path.to_string(),
            name: w.dist(),
            version: w.contents.name.version.clone(),
            tags: w.contents.name.tags().iter().map(|t| t.to_string()).collect(),
            requires_python: w.contents.meta.requires_python.clone(),
        })
        .collect()
}

/// Every rule; the lints in a stable order (per rule, then per wheel path).
pub fn check(wheels: &[Wheel], rules: &Rules) -> Vec<Lint> {
    let mut lints = Vec::new();
    let err = |code: &'static str, message: String| Lint { level: Level::Error, code, message };
    check_self_consistent(wheels, &mut lints);
    check_one_version(wheels, &mut lints);
    let targets = match target_envs(rules) {
        Ok(t) => t,
        Err(messages) => {
            lints.extend(messages.into_iter().map(|m| err("bad_target", m)));
            return lints;
        }
    };
    // fits[i][t]: wheel i may be chosen on target t.
    let fits: Vec<Vec<bool>> = wheels
        .iter()
        .map(|w| {
            targets
                .iter()
                .map(|t| {
                    t.ranking.best(&w.contents.name.tags()).is_some()
                        && t.env.admits(w.contents.meta.requires_python.as_deref())
                })
                .collect()
        })
        .collect();
    check_fit(wheels, rules, &targets, &fits, &mut lints);
    check_overlaps(wheels, &fits, &mut lints);
    if targets.is_empty() {
        let all: Vec<usize> = (0..wheels.len()).collect();
        check_requirements(wheels, &all, None, rules, true, &mut lints);
    } else {
        for (t, target) in targets.iter().enumerate() {
            let chosen = choose(wheels, &targets[t].ranking, |i| fits[i][t]);
            // Requirements that are not PEP 508 are reported once, on the first target.
            check_requirements(wheels, &chosen, Some(target), rules, t == 0, &mut lints);
        }
    }
    if let Some(lock) = rules.lock {
        check_lock(wheels, lock, &targets, &mut lints);
    }
    lints
}

/// File name, `WHEEL` and `METADATA` agree (name and version were compared by `inspect`).
fn check_self_consistent(wheels: &[Wheel], lints: &mut Vec<Lint>) {
    for w in wheels {
        let from_name = w.contents.name.tags();
        if from_name != w.contents.wheel_tags {
            let show = |t: &[bundle_core::tags::Tag]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
            lints.push(Lint {
                level: Level::Error,
                code: "wheel_tags_mismatch",
                message: format!(
                    "{}: the file name says {} but its WHEEL file says {}; rebuild the wheel or restore its original name",
                    w.file(),
                    show(&from_name),
                    if w.contents.wheel_tags.is_empty() { "no Tag at all".into() } else { show(&w.contents.wheel_tags) }
                ),
            });
        }
    }
}

/// One version per distribution; two wheels of one version must not offer the same tag.
fn check_one_version(wheels: &[Wheel], lints: &mut Vec<Lint>) {
    for (i, a) in wheels.iter().enumerate() {
        for b in &wheels[i + 1..] {
            if a.dist() != b.dist() {
                continue;
            }
            let same_version = matches!((parse_release(&a.contents.name.version), parse_release(&b.contents.name.version)), (Ok(x), Ok(y)) if x == y);
            let message = if !same_version {
                format!(
                    "{} and {} are two versions of `{}`; a site installs one version of each distribution: keep one of them",
                    a.file(),
                    b.file(),
                    a.dist()
                )
            } else if let Some(t) = a.contents.name.tags().iter().find(|t| b.contents.name.tags().contains(t)) {
                format!(
                    "{} and {} are both `{}` {} for {t}; keep one of them",
                    a.file(),
                    b.file(),
                    a.dist(),
                    a.contents.name.version
                )
            } else {
                continue;
            };
            lints.push(Lint { level: Level::Error, code: "duplicate_distribution", message });
        }
    }
}

fn target_envs<'a>(rules: &Rules<'a>) -> Result<Vec<TargetEnv<'a>>, Vec<String>> {
    let python = VersionSpecifiers::from_str(rules.python).ok();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for target in rules.targets {
        match target.environment().and_then(|env| marker_env(target, &env).map(|m| (env, m))) {
            Ok((env, markers)) => {
                if python.as_ref().is_some_and(|p| !p.contains(&env.python_version())) {
                    errors.push(format!(
                        "target {target}: Python {} does not satisfy the spec's python: \"{}\"",
                        target.python, rules.python
                    ));
                }
                out.push(TargetEnv { target, ranking: env.ranking(), env, markers });
            }
            Err(e) => errors.push(format!("target {target}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The PEP 508 marker environment of a target (`platform_release`/`platform_version` unknown: empty).
fn marker_env(target: &Target, env: &Environment) -> Result<MarkerEnvironment, String> {
    let (a, b, c) = env.version;
    let platform = env.platforms.first().map(String::as_str).unwrap_or("");
    let (sys_platform, system, os_name) = if platform.starts_with("macosx_") {
        ("darwin", "Darwin", "posix")
    } else if platform.starts_with("win") {
        ("win32", "Windows", "nt")
    } else {
        ("linux", "Linux", "posix")
    };
    let machine = bundle_core::tags::platform_machine(platform).unwrap_or_default();
    let (impl_name, impl_py) = match target.implementation.as_str() {
        "cp" => ("cpython", "CPython"),
        "pp" => ("pypy", "PyPy"),
        other => (other, other),
    };
    let full = format!("{a}.{b}.{c}");
    MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
        implementation_name: impl_name,
        implementation_version: &full,
        os_name,
        platform_machine: &machine,
        platform_python_implementation: impl_py,
        platform_release: "",
        platform_system: system,
        platform_version: "",
        python_full_version: &full,
        python_version: &format!("{a}.{b}"),
        sys_platform,
    })
    .map_err(|e| e.to_string())
}

fn target_list(targets: &[TargetEnv]) -> String {
    targets.iter().map(|t| t.target.to_string()).collect::<Vec<_>>().join(", ")
}

/// With targets: every wheel fits one, every target has a wheel of every distribution. Without:
/// no wheel's `Requires-Python` excludes every version the spec's `python:` allows.
fn check_fit(wheels: &[Wheel], rules: &Rules, targets: &[TargetEnv], fits: &[Vec<bool>], lints: &mut Vec<Lint>) {
    let err = |code, message| Lint { level: Level::Error, code, message };
    if targets.is_empty() {
        let spec = VersionSpecifiers::from_str(rules.python).ok();
        for w in wheels {
            let Some(rp) = w.contents.meta.requires_python.as_deref() else { continue };
            let Ok(req) = VersionSpecifiers::from_str(rp) else {
                lints.push(err(
                    "bad_wheel",
                    format!("{}: Requires-Python `{rp}` is not a PEP 440 specifier set", w.file()),
                ));
                continue;
            };
            if let Some(spec) = &spec {
                let both = pep440_rs::release_specifiers_to_ranges(spec.clone())
                    .intersection(&pep440_rs::release_specifiers_to_ranges(req));
                if both.is_empty() {
                    lints.push(err(
                        "incompatible_wheel",
                        format!("{} requires Python {rp}, which no interpreter allowed by the spec's python: \"{}\" is; drop the wheel or change python:", w.file(), rules.python),
                    ));
                }
            }
        }
        return;
    }
    for (i, w) in wheels.iter().enumerate() {
        if !fits[i].iter().any(|f| *f) {
            let rp = w
                .contents
                .meta
                .requires_python
                .as_deref()
                .map(|r| format!(", Requires-Python {r}"))
                .unwrap_or_default();
            lints.push(err(
                "incompatible_wheel",
                format!(
                    "{} (tags {}{rp}) fits none of the targets: {}; fetch the wheel built for them or add a target",
                    w.file(),
                    w.contents.name.tags().iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
                    target_list(targets)
                ),
            ));
        }
    }
    let dists: BTreeSet<String> = wheels.iter().map(Wheel::dist).collect();
    for (t, target) in targets.iter().enumerate() {
        for d in &dists {
            let offered: Vec<usize> = (0..wheels.len()).filter(|&i| wheels[i].dist() == *d).collect();
            // A distribution none of whose wheels fits any target was reported above.
            if offered.iter().any(|&i| fits[i].iter().any(|f| *f)) && !offered.iter().any(|&i| fits[i][t]) {
                let files: Vec<&str> = offered.iter().map(|&i| wheels[i].file()).collect();
                lints.push(err(
                    "no_wheel_for_target",
                    format!("no wheel of `{d}` fits target {} (on offer: {}); add one built for it (e.g. pip download --only-binary=:all: --python-version {} --platform {})", target.target, files.join(", "), target.target.python, target.target.platform),
                ));
            }
        }
    }
}

/// Per distribution the fitting wheel of best rank, by wheel index.
fn choose(wheels: &[Wheel], ranking: &Ranking, fits: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut best: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, w) in wheels.iter().enumerate().filter(|(i, _)| fits(*i)) {
        let rank = ranking.best(&w.contents.name.tags()).unwrap_or(usize::MAX);
        let e = best.entry(w.dist()).or_insert((rank, i));
        if rank < e.0 {
            *e = (rank, i);
        }
    }
    best.into_values().map(|(_, i)| i).collect()
}

/// Two wheels of different distributions that can be installed together (both fit one target, or
/// no targets are declared) must not write the same file.
fn check_overlaps(wheels: &[Wheel], fits: &[Vec<bool>], lints: &mut Vec<Lint>) {
    let mut owners: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, w) in wheels.iter().enumerate() {
        for f in &w.contents.files {
            owners.entry(f.as_str()).or_default().push(i);
        }
    }
    let together = |a: usize, b: usize| fits[a].is_empty() || fits[a].iter().zip(&fits[b]).any(|(x, y)| *x && *y);
    let mut clashes: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
    for (path, idx) in &owners {
        for (k, &a) in idx.iter().enumerate() {
            for &b in &idx[k + 1..] {
                if wheels[a].dist() != wheels[b].dist() && together(a, b) {
                    clashes.entry((a, b)).or_default().push(path);
                }
            }
        }
    }
    for ((a, b), paths) in clashes {
        let more = if paths.len() > 1 { format!(" and {} more", paths.len() - 1) } else { String::new() };
        lints.push(Lint {
            level: Level::Error,
            code: "file_conflict",
            message: format!(
                "{} and {} both install {}{more}; they cannot be installed together (two distributions of one module?): keep one of them",
                wheels[a].file(),
                wheels[b].file(),
                paths[0]
            ),
        });
    }
}

/// Every requirement active on the target (or, without targets, every one not limited by an
/// environment marker) is met by a chosen wheel: an error unless `allow_unmet` names the
/// requiring distribution. Extras requested by active requirements are followed.
fn check_requirements(
    wheels: &[Wheel],
    chosen: &[usize],
    target: Option<&TargetEnv>,
    rules: &Rules,
    report_bad: bool,
    lints: &mut Vec<Lint>,
) {
    let parsed = parse_requirements(wheels, chosen, report_bad, lints);
    let by_name: BTreeMap<String, usize> = chosen.iter().map(|&i| (wheels[i].dist(), i)).collect();
    let active = |req: &Requirement, extras: &[ExtraName]| match target {
        Some(t) => req.evaluate_markers(&t.markers, extras),
        None => req.marker.evaluate_optional_environment(None, extras),
    };
    let extras = requested_extras(wheels, &parsed, &active);
    let allowed = |d: &str| rules.allow_unmet.iter().any(|a| a == "*" || normalize_name(a) == d);
    for (i, reqs) in &parsed {
        let w = &wheels[*i];
        let mine: Vec<ExtraName> = extras.get(&w.dist()).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for req in reqs.iter().filter(|r| active(r, &mine)) {
            let name = normalize_name(req.name.as_ref());
            let problem = match by_name.get(&name) {
                None => format!("no wheel of `{name}` is in the bundle"),
                Some(&d) => match (&req.version_or_url, parse_release(&wheels[d].contents.name.version)) {
                    (Some(VersionOrUrl::VersionSpecifier(specs)), Ok(v)) if !specs.contains(&v) => {
                        format!("the bundle has {}", wheels[d].file())
                    }
                    _ => continue,
                },
            };
            let conditional =
                !req.marker.is_true() && target.is_none() && req.marker.evaluate_extras(&mine) && has_env_marker(req);
            let level = if allowed(&w.dist()) || conditional { Level::Warning } else { Level::Error };
            let on = match target {
                Some(t) => format!(" on target {}", t.target),
                None if conditional => " (its marker is not evaluated without `targets:`)".to_string(),
                None => String::new(),
            };
            lints.push(Lint {
                level,
                code: "unmet_requirement",
                message: format!(
                    "{} requires `{req}`{on} but {problem}; add the wheel, or list `{}` in allow_unmet",
                    w.file(),
                    w.dist()
                ),
            });
        }
    }
}

/// Each chosen wheel's `Requires-Dist`, parsed; a requirement that is not PEP 508 is left out (with
/// a warning when `report_bad`).
fn parse_requirements(
    wheels: &[Wheel],
    chosen: &[usize],
    report_bad: bool,
    lints: &mut Vec<Lint>,
) -> Vec<(usize, Vec<Requirement>)> {
    chosen
        .iter()
        .map(|&i| {
            let reqs = wheels[i]
                .contents
                .meta
                .requires_dist
                .iter()
                .filter_map(|r| match Requirement::from_str(r) {
                    Ok(req) => Some(req),
                    Err(e) => {
                        if report_bad {
                            lints.push(Lint {
                                level: Level::Warning,
                                code: "bad_requirement",
                                message: format!(
                                    "{}: Requires-Dist `{r}` is not PEP 508 ({e}); not checked",
                                    wheels[i].file()
                                ),
                            });
                        }
                        None
                    }
                })
                .collect();
            (i, reqs)
        })
        .collect()
}

/// Extras asked for by active requirements, per distribution, until nothing new turns up.
fn requested_extras(
    wheels: &[Wheel],
    parsed: &[(usize, Vec<Requirement>)],
    active: &dyn Fn(&Requirement, &[ExtraName]) -> bool,
) -> BTreeMap<String, BTreeSet<ExtraName>> {
    let mut extras: BTreeMap<String, BTreeSet<ExtraName>> = BTreeMap::new();
    loop {
        let mut changed = false;
        for (i, reqs) in parsed {
            let mine: Vec<ExtraName> =
                extras.get(&wheels[*i].dist()).map(|s| s.iter().cloned().collect()).unwrap_or_default();
            for req in reqs.iter().filter(|r| active(r, &mine)) {
                let set = extras.entry(normalize_name(req.name.as_ref())).or_default();
                for e in &req.extras {
                    changed |= set.insert(e.clone());
                }
            }
        }
        if !changed {
            break;
        }
    }
    extras
}

/// Whether a requirement's marker depends on more than extras.
fn has_env_marker(req: &Requirement) -> bool {
    let text = req.marker.try_to_string().unwrap_or_default();
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| {
        w.starts_with("python_")
            || w.starts_with("platform_")
            || w.starts_with("sys_")
            || w.starts_with("os_")
            || w.starts_with("implementation_")
    })
}

/// The lock and the wheelhouse hold the same distributions at the same versions, and each wheel's
/// sha256 is one the lock allows. A locked distribution may be missing only when its marker is
/// false on every declared target.
fn check_lock(wheels: &[Wheel], lock: &Lock, targets: &[TargetEnv], lints: &mut Vec<Lint>) {
    let err = |code, message| Lint { level: Level::Error, code, message };
    for w in wheels {
        let Some(locked) = lock.packages.get(&w.dist()) else {
            lints.push(err(
                "lock_extra_wheel",
                format!(
                    "{} is in the wheelhouse but `{}` is not in {}; re-export the lock or remove the wheel",
                    w.file(),
                    w.dist(),
                    lock.file_name
                ),
            ));
            continue;
        };
        let same_version = matches!((parse_release(&locked.version), parse_release(&w.contents.name.version)), (Ok(a), Ok(b)) if a == b);
        if !same_version {
            lints.push(err(
                "lock_extra_wheel",
                format!(
                    "{} is version {}, {} locks `{}` at {}",
                    w.file(),
                    w.contents.name.version,
                    lock.file_name,
                    w.dist(),
                    locked.version
                ),
            ));
        } else if !locked.hashes.iter().any(|h| h == w.sha256) {
            lints.push(err(
                "lock_hash_mismatch",
                format!("{} has sha256 {}, which {} does not allow for `{}` {}; the file is not the one locked (re-download it)", w.file(), w.sha256, lock.file_name, w.dist(), locked.version),
            ));
        }
    }
    for (name, locked) in &lock.packages {
        let present = wheels.iter().any(|w| w.dist() == *name && matches!((parse_release(&locked.version), parse_release(&w.contents.name.version)), (Ok(a), Ok(b)) if a == b));
        if present {
            continue;
        }
        let marker = locked.marker.as_deref().and_then(|m| pep508_rs::MarkerTree::from_str(m).ok());
        let needed = match (&marker, targets.is_empty()) {
            (Some(m), false) => targets.iter().any(|t| m.evaluate(&t.markers, &[])),
            _ => true,
        };
        if needed {
            lints.push(err("lock_missing_wheel", format!("{} locks `{}` {} but the wheelhouse has no wheel of it; download it (pip download --no-deps --only-binary=:all:)", lock.file_name, locked.name, locked.version)));
        }
    }
}
