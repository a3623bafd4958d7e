//! The site's content-addressed store of unpacked wheels (`ROOT/store/`, see
//! `bundle-spec/site-layout.md#store`), so that a release shares with the releases before it every
//! wheel that did not change, as uv's cache and OSTree's object store do.
//!
//! Each verified wheel is unpacked once into `store/wheels/<sha256>/` (the sha256 is the wheel's,
//! from the signed manifest), byte-compiled there, made read-only and sealed with `entry.json`,
//! which lists every file with its size, inode, modification time and sha256 (the sha256 values
//! are the ones the wheel's `RECORD` was checked against while unpacking; the `.pyc` are hashed
//! when sealed). Staging a release then hardlinks each file into the new venv (a copy where a link
//! cannot be made, e.g. across file systems); only what depends on the venv's path is written per
//! release: everything in `bin/` (launchers and `.data/scripts` carry the interpreter's path in
//! their first line) and each distribution's `RECORD` (it lists those files' hashes).
//!
//! An entry is only trusted for the sha256 it was built under, and only while every file still has
//! the size, inode and modification time recorded when it was sealed; a file that differs is hashed
//! again and must match its sha256. A missing or damaged entry is rebuilt from the wheel at hand,
//! never linked. Entries are a cache: a release's venv holds its own links, so deleting an entry
//! never harms a release; entries no kept release names are pruned at each commit.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use bundle_core::manifest::Manifest;
use bundle_core::wheel::record;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ErrorKind, InstallError, Result};
use crate::fs::durable;
use crate::python::interpreter::{self, Interpreter, Venv};
use crate::python::wheel::{self, WheelError};
use crate::site::Site;

/// The interpreter path written into the first line of scripts and launchers inside the store; each
/// release replaces it with its own venv's interpreter.
pub const PLACEHOLDER_PYTHON: &str = "/__bundle_store__/bin/python";

/// Format of `entry.json`.
const ENTRY_FORMAT: u32 = 1;

/// One file of a sealed entry, relative to its `tree/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub ino: u64,
    pub mtime_ns: i128,
    /// `sha256=<urlsafe base64, no padding>`, as in `RECORD`.
    pub hash: String,
}

/// `store/wheels/<sha256>/entry.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryRecord {
    pub format: u32,
    pub wheel_sha256: String,
    /// The wheel's file name.
    pub wheel: String,
    /// PEP 503 name of the distribution.
    pub project: String,
    /// site-packages relative to the tree (and to a venv), e.g. `lib/python3.11/site-packages`.
    pub site_packages: String,
    /// Cache tag of the interpreter that compiled the `.pyc` (`cpython-311`).
    pub cache_tag: String,
    /// The run that built it: undoing that run removes it.
    pub created_by: String,
    /// `wheel.whl` (the wheel itself), then every file of `tree/`, sorted.
    pub files: Vec<FileRecord>,
}

/// A wheel of the release being staged.
#[derive(Debug, Clone)]
pub struct WheelRef {
    /// The verified wheel in the release's `bundle/`.
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// Every wheel of `m` with its sha256 from the signed manifest, located under `bundle_dir`.
pub fn wheels_of(m: &Manifest, bundle_dir: &Path) -> Vec<WheelRef> {
    refs(m, m.wheels.iter().map(String::as_str), bundle_dir)
}

/// The wheels `paths` of `m` (e.g. those chosen for the site's interpreter) with their sha256.
pub fn refs<'a>(m: &Manifest, paths: impl Iterator<Item = &'a str>, bundle_dir: &Path) -> Vec<WheelRef> {
    paths
        .filter_map(|w| m.file(w))
        .map(|f| WheelRef { path: bundle_dir.join(&f.path), sha256: f.sha256.clone(), size: f.size })
        .collect()
}

pub fn entry_dir(site: &Site, sha256: &str) -> PathBuf {
    site.store().join("wheels").join(sha256)
}

fn store_err(kind: ErrorKind, message: impl Into<String>) -> InstallError {
    InstallError::failed(kind, message)
}

fn wheel_err(e: WheelError) -> InstallError {
    InstallError::from(e)
}

fn b64_sha256(bytes: &[u8]) -> String {
    format!("sha256={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(b64_sha256(&h.finalize()))
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// `tree/`-relative path as a string (wheel paths are UTF-8: `RECORD` is).
fn rel_str(rel: &Path) -> Result<String> {
    rel.to_str()
        .map(str::to_string)
        .ok_or_else(|| store_err(ErrorKind::StorePath, format!("file name `{}` is not UTF-8", rel.display())))
}

/// Reads a sealed entry's record, if there is a readable one for `sha256`.
pub fn read_entry(site: &Site, sha256: &str) -> Option<EntryRecord> {
    let bytes = fs::read(entry_dir(site, sha256).join("entry.json")).ok()?;
    let e: EntryRecord = serde_json::from_slice(&bytes).ok()?;
    (e.format == ENTRY_FORMAT && e.wheel_sha256 == sha256).then_some(e)
}

/// Why an entry may not be linked, if it may not: a file missing, or one whose size, inode or
/// modification time changed and whose content no longer has the recorded sha256. `full` hashes
/// every file whatever its metadata says.
pub fn check_entry(site: &Site, e: &EntryRecord, full: bool) -> Option<String> {
    let dir = entry_dir(site, &e.wheel_sha256);
    for f in &e.files {
        let path = entry_file(&dir, &f.path);
        let m = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Some(format!("{} is not a regular file", f.path)),
            Err(err) => return Some(format!("{}: {err}", f.path)),
        };
        if m.len() != f.size {
            return Some(format!("{}: {} bytes, sealed with {}", f.path, m.len(), f.size));
        }
        let same = m.ino() == f.ino && mtime_ns(&m) == f.mtime_ns;
        if !same || full {
            match hash_file(&path) {
                Ok(h) if h == f.hash => {}
                Ok(_) => return Some(format!("{}: content changed since it was sealed", f.path)),
                Err(err) => return Some(format!("{}: {err}", f.path)),
            }
        }
    }
    None
}

/// `wheel.whl` sits beside `tree/`; every other record is inside it.
fn entry_file(dir: &Path, rel: &str) -> PathBuf {
    if rel == "wheel.whl" {
        dir.join(rel)
    } else {
        dir.join("tree").join(rel)
    }
}

/// What [`ensure_entries`] did, for messages and tests.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Ensured {
    /// Entries already in the store and intact.
    pub reused: Vec<String>,
    /// Entries unpacked by this run.
    pub built: Vec<String>,
    /// Entries that were damaged (with why) and were rebuilt from the wheel at hand.
    pub repaired: Vec<(String, String)>,
}

/// Makes sure the store holds an intact entry for every wheel, built for `interp`, and makes each
/// release wheel file a link to its entry's `wheel.whl` (so kept releases share the wheel files
/// too). Entries built here are marked with `run`, whose undo removes them.
pub fn ensure_entries(site: &Site, wheels: &[WheelRef], interp: &Interpreter, run: &str) -> Result<Ensured> {
    let store = site.store();
    for d in [store.clone(), store.join("wheels")] {
        durable::ensure_real_dir(&d).map_err(|e| InstallError::io(d.display(), e))?;
    }
    let site_rel = rel_str(&interp.venv_purelib())?;
    let mut done = Ensured::default();
    let mut to_build = Vec::new();
    let mut seen = BTreeSet::new();
    for w in wheels {
        if !seen.insert(w.sha256.clone()) {
            continue;
        }
        match read_entry(site, &w.sha256) {
            Some(e) if e.site_packages != site_rel || e.cache_tag != interp.cache_tag => {
                done.repaired.push((w.sha256.clone(), format!("built for {} ({})", e.site_packages, e.cache_tag)));
                to_build.push(w);
            }
            Some(e) => match check_entry(site, &e, false) {
                None => done.reused.push(w.sha256.clone()),
                Some(why) => {
                    done.repaired.push((w.sha256.clone(), why));
                    to_build.push(w);
                }
            },
            None => {
                if entry_dir(site, &w.sha256).symlink_metadata().is_ok() {
                    done.repaired.push((w.sha256.clone(), "entry.json missing or unreadable".into()));
                } else {
                    done.built.push(w.sha256.clone());
                }
                to_build.push(w);
            }
        }
    }
    build_entries(site, &to_build, interp, &site_rel, run)?;
    for w in wheels {
        share_wheel_file(site, w)?;
    }
    Ok(done)
}

/// Unpacks, byte-compiles (once for all of them) and seals the entries of `wheels`.
fn build_entries(site: &Site, wheels: &[&WheelRef], interp: &Interpreter, site_rel: &str, run: &str) -> Result<()> {
    if wheels.is_empty() {
        return Ok(());
    }
    let mut trees = Vec::new();
    for w in wheels {
        let tmp = site.store().join(format!(".tmp-{}-{run}", w.sha256));
        durable::remove_tree(&tmp).map_err(|e| InstallError::io(tmp.display(), e))?;
        fs::create_dir(&tmp).map_err(|e| InstallError::io(tmp.display(), e))?;
        let mut venv = interpreter::create_bare_venv(interp, &tmp.join("tree"))?;
        let real_python = std::mem::replace(&mut venv.python, PathBuf::from(PLACEHOLDER_PYTHON));
        let dist = wheel::install_wheel(&venv, &w.path, &wheel::InstallOptions::default()).map_err(wheel_err)?;
        venv.python = real_python;
        link_or_copy(&w.path, &tmp.join("wheel.whl"))
            .map_err(|e| InstallError::io(format!("storing {}", w.path.display()), e))?;
        trees.push((tmp, venv, wheel::normalize_name(&dist.name)));
    }
    let roots: Vec<PathBuf> = trees.iter().map(|(_, v, _)| v.site_packages.clone()).collect();
    interpreter::compile_trees(&interp.executable, &roots, None, true, 2)?;
    for ((tmp, _, project), w) in trees.iter().zip(wheels) {
        let files = seal(tmp)?;
        let record = EntryRecord {
            format: ENTRY_FORMAT,
            wheel_sha256: w.sha256.clone(),
            wheel: w.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            project: project.clone(),
            site_packages: site_rel.to_string(),
            cache_tag: interp.cache_tag.clone(),
            created_by: run.to_string(),
            files,
        };
        let json = serde_json::to_vec_pretty(&record).expect("entry record serialises");
        fs::write(tmp.join("entry.json"), json).map_err(|e| InstallError::io(tmp.display(), e))?;
        let dest = entry_dir(site, &w.sha256);
        // A damaged or stale entry goes aside first, so the rename below cannot fail on it.
        if dest.symlink_metadata().is_ok() {
            let trash = site.store().join(format!(".trash-{}-{run}", w.sha256));
            durable::remove_tree(&trash).map_err(|e| InstallError::io(trash.display(), e))?;
            fs::rename(&dest, &trash).map_err(|e| InstallError::io(dest.display(), e))?;
            durable::remove_tree(&trash).map_err(|e| InstallError::io(trash.display(), e))?;
        }
        fs::rename(tmp, &dest).map_err(|e| InstallError::io(format!("sealing {}", dest.display()), e))?;
    }
    durable::sync_dir(&site.store().join("wheels")).map_err(|e| InstallError::io("store/wheels", e))
}

/// Makes every regular file of a built entry read-only and records it. Files the wheel's `RECORD`
/// lists keep the sha256 checked while unpacking; the rest (`.pyc`, `RECORD` itself) are hashed.
fn seal(tmp: &Path) -> Result<Vec<FileRecord>> {
    let tree = tmp.join("tree");
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    let mut files = Vec::new();
    let mut paths = vec![(tmp.join("wheel.whl"), "wheel.whl".to_string())];
    for entry in walkdir::WalkDir::new(&tree).sort_by_file_name() {
        let entry = entry.map_err(|e| store_err(ErrorKind::Io, format!("listing {}: {e}", tree.display())))?;
        let rel = entry.path().strip_prefix(&tree).expect("under the tree").to_path_buf();
        // The scaffolding of the venv the wheel was unpacked into (`pyvenv.cfg` names the work
        // directory; `bin/python*` and `lib64` are links) is not part of the entry.
        if entry.file_type().is_symlink() || rel == Path::new("pyvenv.cfg") {
            fs::remove_file(entry.path()).map_err(|e| InstallError::io(entry.path().display(), e))?;
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = rel_str(&rel)?;
        if rel.ends_with(".dist-info/RECORD") {
            read_record_hashes(entry.path(), &rel, &mut known)?;
        }
        paths.push((entry.into_path(), rel));
    }
    for (path, rel) in paths {
        let m = fs::symlink_metadata(&path).map_err(|e| InstallError::io(path.display(), e))?;
        let mode = m.mode() & 0o7777 & !0o222;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| InstallError::io(path.display(), e))?;
        let hash = match known.get(&rel) {
            Some(h) if rel != "wheel.whl" => h.clone(),
            _ => hash_file(&path).map_err(|e| InstallError::io(path.display(), e))?,
        };
        let m = fs::symlink_metadata(&path).map_err(|e| InstallError::io(path.display(), e))?;
        files.push(FileRecord { path: rel, size: m.len(), mode, ino: m.ino(), mtime_ns: mtime_ns(&m), hash });
    }
    Ok(files)
}

/// Adds the `sha256=` hashes a `RECORD` lists to `known`, keyed by tree-relative path.
fn read_record_hashes(record: &Path, rel: &str, known: &mut BTreeMap<String, String>) -> Result<()> {
    let text = fs::read_to_string(record).map_err(|e| InstallError::io(record.display(), e))?;
    let site = site_of_record(rel);
    for row in record::parse(&text) {
        if row.hash.starts_with("sha256=") {
            if let Some(tree_rel) = normalize(&Path::new(&site).join(&row.path)) {
                known.insert(tree_rel, row.hash);
            }
        }
    }
    Ok(())
}

/// site-packages of a `<site>/<name>.dist-info/RECORD` path.
fn site_of_record(rel: &str) -> String {
    Path::new(rel).parent().and_then(Path::parent).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Resolves `..` lexically; `None` if the path leaves its root.
fn normalize(p: &Path) -> Option<String> {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out.iter().map(|s| s.to_string_lossy()).collect::<Vec<_>>().join("/"))
}

/// Hardlinks `from` to `to`; copies where a link cannot be made (another file system, too many
/// links, a file system without links). `std::fs::copy` uses `copy_file_range`, which shares the
/// blocks on file systems that can (btrfs, XFS), as a reflink would.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EMLINK | libc::EPERM | libc::ENOTSUP)) => {
            fs::copy(from, to).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Replaces the release's copy of a wheel with a link to its entry's `wheel.whl` (same bytes:
/// both have the manifest's sha256), unless it already is one.
fn share_wheel_file(site: &Site, w: &WheelRef) -> Result<()> {
    let stored = entry_dir(site, &w.sha256).join("wheel.whl");
    let (Ok(a), Ok(b)) = (fs::metadata(&stored), fs::symlink_metadata(&w.path)) else { return Ok(()) };
    if a.ino() == b.ino() && a.dev() == b.dev() {
        return Ok(());
    }
    let tmp = w.path.with_extension("whl.link");
    let _ = fs::remove_file(&tmp);
    match fs::hard_link(&stored, &tmp) {
        Ok(()) => fs::rename(&tmp, &w.path).map_err(|e| InstallError::io(w.path.display(), e)),
        // Another file system: the release keeps its own copy.
        Err(_) => Ok(()),
    }
}

/// Hardlinks every entry of `wheels` into `venv` and writes the per-release files (`bin/`,
/// `RECORD`). Each entry is checked again first; two wheels installing one path, or two
/// distributions of one project, are refused before anything is linked.
pub fn link_into(site: &Site, venv: &Venv, wheels: &[WheelRef]) -> Result<usize> {
    let mut entries = Vec::new();
    for w in wheels {
        let e = read_entry(site, &w.sha256).ok_or_else(|| {
            store_err(ErrorKind::StoreDamaged, format!("the store holds no entry for {} ({})", label(w), w.sha256))
        })?;
        if let Some(why) = check_entry(site, &e, false) {
            return Err(store_err(ErrorKind::StoreDamaged, format!("store entry of {} is damaged: {why}", label(w)))
                .with_hint("run the apply again: it rebuilds damaged entries from the bundle"));
        }
        entries.push(e);
    }
    refuse_conflicts(&entries)?;
    let site_rel = venv.site_packages.strip_prefix(&venv.root).map(Path::to_path_buf).unwrap_or_default();
    let mut linked = 0;
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    for e in &entries {
        if Path::new(&e.site_packages) != site_rel {
            return Err(store_err(
                ErrorKind::StoreDamaged,
                format!("store entry of {} was built for {}", e.wheel, e.site_packages),
            ));
        }
        linked += link_entry(site, venv, e, &mut made)?;
    }
    Ok(linked)
}

fn label(w: &WheelRef) -> String {
    w.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn is_per_release(rel: &str) -> bool {
    rel.starts_with("bin/") || rel.ends_with(".dist-info/RECORD")
}

fn link_entry(site: &Site, venv: &Venv, e: &EntryRecord, made: &mut BTreeSet<PathBuf>) -> Result<usize> {
    let dir = entry_dir(site, &e.wheel_sha256);
    let io = |p: &Path, err: io::Error| InstallError::io(format!("{} ({})", p.display(), e.wheel), err);
    let new_shebang = wheel::shebang(&venv.python);
    let mut rewritten: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut record = None;
    let mut n = 0;
    for f in e.files.iter().filter(|f| f.path != "wheel.whl") {
        let src = entry_file(&dir, &f.path);
        let dest = venv.root.join(&f.path);
        ensure_parent(&dest, made).map_err(|err| io(&dest, err))?;
        if f.path.ends_with(".dist-info/RECORD") {
            record = Some((src, dest));
            continue;
        }
        if is_per_release(&f.path) {
            let content = fs::read(&src).map_err(|err| io(&src, err))?;
            let content = reshebang(content, &new_shebang);
            write_new(&dest, &content, (f.mode | 0o200) & 0o755).map_err(|err| io(&dest, err))?;
            rewritten.insert(f.path.clone(), (b64_sha256(&Sha256::digest(&content)), content.len() as u64));
        } else {
            link_or_copy(&src, &dest).map_err(|err| match err.kind() {
                io::ErrorKind::AlreadyExists => {
                    store_err(ErrorKind::FileConflict, format!("{}: `{}` already exists", e.wheel, dest.display()))
                }
                _ => io(&dest, err),
            })?;
        }
        n += 1;
    }
    if let Some((src, dest)) = record {
        let text = fs::read_to_string(&src).map_err(|err| io(&src, err))?;
        let site =
            site_of_record(&e.files.iter().find(|f| f.path.ends_with(".dist-info/RECORD")).expect("found above").path);
        let mut out = String::with_capacity(text.len());
        for line in text.lines().filter(|l| !l.is_empty()) {
            // Rows of files linked unchanged are copied as they are; the others get new hashes.
            let path = record::parse_line(line).path;
            let tree_rel = normalize(&Path::new(&site).join(&path));
            match tree_rel.and_then(|p| rewritten.get(&p)) {
                Some((h, size)) => out.push_str(&record::format_line(&path, h, Some(*size))),
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        write_new(&dest, out.as_bytes(), 0o644).map_err(|err| io(&dest, err))?;
        n += 1;
    }
    Ok(n)
}

/// Replaces the store's placeholder interpreter at the start of a script with the venv's.
fn reshebang(content: Vec<u8>, shebang: &[u8]) -> Vec<u8> {
    let placeholder = wheel::shebang(Path::new(PLACEHOLDER_PYTHON));
    match content.strip_prefix(placeholder.as_slice()) {
        Some(rest) if matches!(rest.first(), None | Some(b'\n') | Some(b'\r')) => [shebang, rest].concat(),
        _ => content,
    }
}

fn ensure_parent(dest: &Path, made: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    let Some(parent) = dest.parent() else { return Ok(()) };
    if made.contains(parent) {
        return Ok(());
    }
    fs::create_dir_all(parent)?;
    made.insert(parent.to_path_buf());
    Ok(())
}

fn write_new(dest: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(dest)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(content)
}

/// The same refusals as a batch install: one project twice, or two wheels installing one path
/// (or a file where another needs a directory). Decided on sorted names: order-independent.
fn refuse_conflicts(entries: &[EntryRecord]) -> Result<()> {
    let mut sorted: Vec<&EntryRecord> = entries.iter().collect();
    sorted.sort_by(|a, b| a.wheel.cmp(&b.wheel));
    let mut projects: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &sorted {
        if let Some(first) = projects.insert(&e.project, &e.wheel) {
            return Err(wheel_err(WheelError::SameProject {
                first: first.into(),
                second: e.wheel.clone(),
                project: e.project.clone(),
            }));
        }
    }
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &sorted {
        for f in e.files.iter().filter(|f| f.path != "wheel.whl") {
            if let Some(first) = owners.insert(&f.path, &e.wheel) {
                if first != e.wheel {
                    return Err(conflict(first, &e.wheel, &f.path, &e.site_packages));
                }
            }
        }
    }
    for (path, who) in &owners {
        for anc in Path::new(path).ancestors().skip(1) {
            if let Some(other) = anc.to_str().and_then(|a| owners.get(a)) {
                let (a, b) = if other < who { (other, who) } else { (who, other) };
                return Err(conflict(a, b, path, ""));
            }
        }
    }
    Ok(())
}

fn conflict(first: &str, second: &str, path: &str, site: &str) -> InstallError {
    let shown =
        Path::new(path).strip_prefix(site).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string());
    wheel_err(WheelError::WheelsConflict { first: first.into(), second: second.into(), path: shown })
}

/// Undo of the `store_wheels` step: removes the entries `run` built and its work in progress.
pub fn remove_run(site: &Site, run: &str) -> Result<()> {
    let store = site.store();
    let Ok(rd) = fs::read_dir(store.join("wheels")) else { return Ok(()) };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if read_entry(site, &name).is_some_and(|r| r.created_by == run) {
            durable::remove_tree(&e.path()).map_err(|err| InstallError::io(e.path().display(), err))?;
        }
    }
    remove_work(site, Some(run))
}

/// Removes `.tmp-*` / `.trash-*` work directories (of `run` only, when given).
pub fn remove_work(site: &Site, run: Option<&str>) -> Result<()> {
    let Ok(rd) = fs::read_dir(site.store()) else { return Ok(()) };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let work = name.starts_with(".tmp-") || name.starts_with(".trash-");
        if work && run.is_none_or(|r| name.ends_with(&format!("-{r}"))) {
            durable::remove_tree(&e.path()).map_err(|err| InstallError::io(e.path().display(), err))?;
        }
    }
    Ok(())
}

/// Removes every entry no kept release names (and leftover work). Kept releases are those with a
/// `release.json`; their manifests give the wheels' sha256.
pub fn prune(site: &Site) -> Result<Vec<String>> {
    let Ok(rd) = fs::read_dir(site.store().join("wheels")) else { return Ok(Vec::new()) };
    let mut wanted = BTreeSet::new();
    let releases = site.releases_installed().map_err(|e| InstallError::io("listing releases/", e))?;
    for r in &releases {
        let m = site
            .release_manifest(&r.version)
            .map_err(|e| InstallError::io(format!("releases/{}/bundle/manifest.yaml", r.version), e))?;
        wanted.extend(wheels_of(&m, Path::new("")).into_iter().map(|w| w.sha256));
    }
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !wanted.contains(&name) {
            durable::remove_tree(&e.path()).map_err(|err| InstallError::io(e.path().display(), err))?;
            removed.push(name);
        }
    }
    remove_work(site, None)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_parent_components() {
        assert_eq!(normalize(Path::new("lib/python3.11/site-packages/../../../bin/x")).as_deref(), Some("bin/x"));
        assert_eq!(normalize(Path::new("../x")), None);
    }

    #[test]
    fn reshebang_replaces_only_the_placeholder_line() {
        let ph = wheel::shebang(Path::new(PLACEHOLDER_PYTHON));
        let script = [ph.as_slice(), b"\nprint(1)\n"].concat();
        assert_eq!(reshebang(script, b"#!/srv/v/bin/python"), b"#!/srv/v/bin/python\nprint(1)\n");
        let other = b"#!/bin/sh\necho\n".to_vec();
        assert_eq!(reshebang(other.clone(), b"#!/x"), other);
        let longer = [ph.as_slice(), b"3\n"].concat();
        assert_eq!(reshebang(longer.clone(), b"#!/x"), longer);
    }

    #[test]
    fn conflicts_are_refused_whatever_the_order() {
        let e = |wheel: &str, project: &str, files: &[&str]| EntryRecord {
            format: 1,
            wheel_sha256: "0".repeat(64),
            wheel: wheel.into(),
            project: project.into(),
            site_packages: "lib/python3.11/site-packages".into(),
            cache_tag: "cpython-311".into(),
            created_by: "r".into(),
            files: files
                .iter()
                .map(|p| FileRecord {
                    path: p.to_string(),
                    size: 0,
                    mode: 0o444,
                    ino: 0,
                    mtime_ns: 0,
                    hash: String::new(),
                })
                .collect(),
        };
        let a = e("a-1-py3-none-any.whl", "a", &["lib/python3.11/site-packages/x/__init__.py"]);
        let b = e("b-1-py3-none-any.whl", "b", &["lib/python3.11/site-packages/x/__init__.py"]);
        for pair in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let err = refuse_conflicts(&pair).unwrap_err();
            assert_eq!(err.kind.as_str(), "file_conflict");
            assert!(
                err.message.contains("`a-1-py3-none-any.whl` and `b-1-py3-none-any.whl` both install `x/__init__.py`"),
                "{}",
                err.message
            );
        }
        let a2 = e("a-2-py3-none-any.whl", "a", &[]);
        assert_eq!(refuse_conflicts(&[a, a2]).unwrap_err().kind.as_str(), "duplicate_project");
    }
}
