//! Delta bundles on the site: a delta bundle's archive leaves out the files its base release
//! already carried (`manifest.base.omitted`, signed like every other field). Before anything
//! changes, each such file must be found on the site — the store's sealed copy of a wheel with the
//! same sha256, or a kept release's `bundle/` file with the same sha256 — or the run is refused
//! (`delta_base_missing`, exit 4) naming the files and the release to apply first. After the
//! archive was verified into staging, the omitted files are added there: a store wheel is linked
//! (it is trusted for the sha256 it was sealed under, while its seal holds), any other file is
//! copied while its sha256 is checked again. The full base bundle, given with `--base-bundle` or
//! lying beside the delta bundle as `<app>-<base version>.bundle.tar.gz` (or `.parts`), supplies
//! what the site lacks: its signature and id are checked when planning, and every byte of it is
//! verified (into a scratch directory) before its files are used.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bundle_core::manifest::{FileEntry, Manifest};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{InstallError, Result};
use crate::python::store;
use crate::site::Site;

/// Where an omitted file can be taken from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Source {
    /// `store/wheels/<sha256>/wheel.whl`.
    Store { path: PathBuf },
    /// A kept release's `bundle/` file with the same sha256 (checked again when copied).
    Release { path: PathBuf },
    /// The file `path` of the full base bundle.
    BaseBundle { path: String },
}

/// The full base bundle given beside a delta bundle, its signature and id checked.
#[derive(Debug, Clone)]
pub(crate) struct BaseBundle {
    pub file: PathBuf,
    pub manifest: Manifest,
}

/// The full bundle of `m`'s base: `given`, or the one beside `bundle` if there is one. A given
/// bundle that is not the base is an error; one found beside that is not is ignored.
pub(crate) fn find_base_bundle(
    m: &Manifest,
    bundle: &Path,
    given: Option<&Path>,
    keys: &[bundle_core::signature::PublicKey],
) -> Result<Option<BaseBundle>> {
    let Some(base) = &m.base else { return Ok(None) };
    let check = |file: &Path| -> Result<BaseBundle> {
        let (bm, id, _, _) = bundle_core::verify::read_verified_manifest(file, keys).map_err(|e| {
            let e: InstallError = e.into();
            InstallError { message: format!("base bundle {}: {}", file.display(), e.message), ..e }
        })?;
        if id != base.bundle_id || bm.base.is_some() {
            return Err(InstallError::usage(
                "wrong_base_bundle",
                format!(
                    "{} is {} {} (bundle id {id}), not the full bundle this delta was built on ({} {}, bundle id {})",
                    file.display(),
                    bm.app,
                    bm.version,
                    base.app,
                    base.version,
                    base.bundle_id
                ),
            ));
        }
        Ok(BaseBundle { file: file.to_path_buf(), manifest: bm })
    };
    if let Some(g) = given {
        return check(g).map(Some);
    }
    let dir = bundle.parent().unwrap_or(Path::new("."));
    let name = format!("{}-{}.bundle.tar.gz", base.app, base.version);
    for candidate in [dir.join(&name), dir.join(format!("{name}.parts"))] {
        if candidate.exists() {
            if let Ok(b) = check(&candidate) {
                return Ok(Some(b));
            }
        }
    }
    Ok(None)
}

/// What `plan` reports about a delta bundle.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaPlan {
    pub base_app: String,
    pub base_version: String,
    pub base_bundle_id: String,
    /// Omitted files and where each comes from.
    pub files: Vec<(String, Vec<Source>)>,
}

/// Finds every omitted file of `m` on the site; refuses (exit 4) naming those it cannot find.
/// `None` for a full bundle.
pub(crate) fn locate(site: &Site, m: &Manifest, base_bundle: Option<&BaseBundle>) -> Result<Option<DeltaPlan>> {
    let Some(base) = &m.base else { return Ok(None) };
    let releases: Vec<(String, Manifest)> = site
        .releases_installed()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| site.release_manifest(&r.version).ok().map(|rm| (r.version, rm)))
        .collect();
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for path in &base.omitted {
        let f = m.file(path).expect("validated: omitted files are listed");
        let mut sources = sources_of(site, f, &releases);
        if let Some(bf) =
            base_bundle.and_then(|b| b.manifest.files.iter().find(|bf| bf.sha256 == f.sha256 && bf.size == f.size))
        {
            sources.push(Source::BaseBundle { path: bf.path.clone() });
        }
        if sources.is_empty() {
            missing.push(f);
        }
        files.push((path.clone(), sources));
    }
    if !missing.is_empty() {
        return Err(missing_error(m, &missing));
    }
    Ok(Some(DeltaPlan {
        base_app: base.app.clone(),
        base_version: base.version.clone(),
        base_bundle_id: base.bundle_id.clone(),
        files,
    }))
}

fn sources_of(site: &Site, f: &FileEntry, releases: &[(String, Manifest)]) -> Vec<Source> {
    let mut out = Vec::new();
    if let Some(e) = store::read_entry(site, &f.sha256) {
        let whl = store::entry_dir(site, &f.sha256).join("wheel.whl");
        let size_ok = fs::metadata(&whl).is_ok_and(|md| md.len() == f.size);
        if size_ok && store::check_entry(site, &e, false).is_none() {
            out.push(Source::Store { path: whl });
        }
    }
    for (v, rm) in releases {
        for rf in rm.files.iter().filter(|rf| rf.sha256 == f.sha256 && rf.size == f.size) {
            let p = site.release_dir(v).join("bundle").join(&rf.path);
            if fs::metadata(&p).is_ok_and(|md| md.is_file() && md.len() == f.size) {
                out.push(Source::Release { path: p });
            }
        }
    }
    out
}

fn missing_error(m: &Manifest, missing: &[&FileEntry]) -> InstallError {
    let base = m.base.as_ref().expect("a delta bundle");
    // The largest first: those are the ones worth knowing about (the wheels).
    let mut missing = missing.to_vec();
    missing.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let shown: Vec<&str> = missing.iter().take(5).map(|f| f.path.as_str()).collect();
    let more =
        if missing.len() > shown.len() { format!(" and {} more", missing.len() - shown.len()) } else { String::new() };
    InstallError::refused(
        "delta_base_missing",
        format!(
            "this is a delta bundle of {} {} built against {} {} (bundle id {}); {} of the files it leaves out are not on this site: {}{more}",
            m.app,
            m.version,
            base.app,
            base.version,
            base.bundle_id,
            missing.len(),
            shown.join(", ")
        ),
    )
    .with_hint(format!(
        "apply the full bundle of {} {} first, or put it beside this one (or pass --base-bundle), or use the full bundle of {} (nothing was changed)",
        base.app, base.version, m.version
    ))
}

/// Adds every omitted file to the verified `staging` directory from the sources `plan` found.
/// A source whose bytes no longer have the manifest's sha256 is skipped; if none is left, the run
/// is refused before any change (`delta_base_damaged`).
pub(crate) fn fill(m: &Manifest, plan: &DeltaPlan, staging: &Path, base: Option<(&BaseBundle, &Path)>) -> Result<()> {
    for (path, sources) in &plan.files {
        let f = m.file(path).expect("omitted files are listed");
        let dest = staging.join(path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| InstallError::io(parent.display(), e))?;
        }
        let mut problems = Vec::new();
        let mut done = false;
        for s in sources {
            let r = match s {
                Source::Store { path } => {
                    fs::hard_link(path, &dest).or_else(|_| copy_checked(path, &dest, f).map(|_| ()))
                }
                Source::Release { path } => copy_checked(path, &dest, f),
                Source::BaseBundle { path } => match base {
                    Some((_, dir)) => copy_checked(&dir.join(path), &dest, f),
                    None => Err(std::io::Error::other("the base bundle was not verified")),
                },
            };
            match r {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    let _ = fs::remove_file(&dest);
                    problems.push(e.to_string());
                }
            }
        }
        if !done {
            return Err(InstallError::refused(
                "delta_base_damaged",
                format!("{path}: every copy of it on this site is damaged ({})", problems.join("; ")),
            )
            .with_hint(format!("use the full bundle of {} (nothing was changed)", m.version)));
        }
    }
    Ok(())
}

/// Whether any omitted file must come from the base bundle (then it is verified first).
pub(crate) fn needs_base_bundle(plan: &DeltaPlan) -> bool {
    plan.files.iter().any(|(_, s)| s.iter().all(|s| matches!(s, Source::BaseBundle { .. })))
}

/// Copies `from` to `to` with the manifest's mode, checking size and sha256 on the way.
fn copy_checked(from: &Path, to: &Path, f: &FileEntry) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::File::open(from)?;
    let mut out = fs::OpenOptions::new().write(true).create_new(true).mode(f.mode_bits()).open(to)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        n_total += n as u64;
    }
    let got = bundle_core::hash::to_hex(&h.finalize());
    if got != f.sha256 || n_total != f.size {
        return Err(std::io::Error::other(format!(
            "{} has sha256 {got} ({n_total} bytes), not the manifest's",
            from.display()
        )));
    }
    Ok(())
}
