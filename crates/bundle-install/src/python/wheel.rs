//! Native wheel installation per the binary distribution format (PEP 427 and its successors on
//! packaging.python.org), into a venv made by [`crate::python::interpreter::create_venv`].
//!
//! A wheel is opened and checked completely before the first byte is written: file name, the
//! single `.dist-info` directory, `WHEEL`, `METADATA`, every zip entry name and type, zip-bomb
//! caps and the `RECORD` listing. Then each entry is streamed once from the zip to its destination
//! while being hashed, so the `RECORD` hash check and the new `RECORD` cost no second read.
//! Destinations are created with `O_EXCL`: two distributions can never overwrite each other, and a
//! failed install removes what it created.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use crate::python::interpreter::Venv;

/// Written to `INSTALLER` unless [`InstallOptions::installer`] says otherwise.
pub(crate) const DEFAULT_INSTALLER: &str = "bundle-install";

/// Errors from reading or installing a wheel; each names the wheel file and, where there is one,
/// the zip entry.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    #[error("invalid wheel file name `{name}`: {detail}")]
    Filename { name: String, detail: String },
    #[error("wheel `{wheel}`{}: {detail}", entry_suffix(entry))]
    Invalid { kind: &'static str, wheel: String, entry: Option<String>, detail: String },
    #[error("wheel `{wheel}` entry `{entry}`: `{}` already exists{}", path.display(),
        owner.as_ref().map(|o| format!(" (installed by {o})")).unwrap_or_default())]
    Conflict { wheel: String, entry: String, path: PathBuf, owner: Option<String> },
    #[error("wheels `{first}` and `{second}` both install `{path}`")]
    WheelsConflict { first: String, second: String, path: String },
    #[error("wheels `{first}` and `{second}` are both distributions of `{project}`")]
    SameProject { first: String, second: String, project: String },
    #[error("wheel `{wheel}`{}: {action} `{}`: {source}", entry_suffix(entry), path.display())]
    Io { wheel: String, entry: Option<String>, action: &'static str, path: PathBuf, source: io::Error },
}

fn entry_suffix(entry: &Option<String>) -> String {
    entry.as_ref().map(|e| format!(" entry `{e}`")).unwrap_or_default()
}

impl WheelError {
    /// Stable snake_case identifier: `invalid_wheel_filename`, `invalid_zip`, `unsafe_path`,
    /// `link_entry`, `special_entry`, `duplicate_entry`, `zip_bomb`, `unsupported_wheel_version`,
    /// `invalid_metadata`, `name_mismatch`, `record_mismatch`, `invalid_entry_point`,
    /// `already_installed`, `duplicate_project`, `file_conflict`, `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            WheelError::Filename { .. } => "invalid_wheel_filename",
            WheelError::Invalid { kind, .. } => kind,
            WheelError::Conflict { .. } | WheelError::WheelsConflict { .. } => "file_conflict",
            WheelError::SameProject { .. } => "duplicate_project",
            WheelError::Io { .. } => "io",
        }
    }
}

// File names and PEP 503 names are parsed in one place, shared with `bundle-build check`.
pub(crate) use bundle_core::wheel::{is_valid_dist_name, normalize_name, WheelName};
use bundle_core::wheel::{record, same_version};

/// Splits a wheel file name (the last path component only) into its tags.
pub(crate) fn parse_wheel_filename(name: &str) -> Result<WheelName, WheelError> {
    bundle_core::wheel::parse_filename(name)
        .map_err(|e| WheelError::Filename { name: name.to_string(), detail: e.message })
}

/// One `console_scripts` / `gui_scripts` entry: `name = module:attr [extras]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: String,
    pub module: String,
    pub attr: String,
    pub extras: Vec<String>,
}

/// What the installer needs from a wheel's `.dist-info`: METADATA as `bundle-build` reads it too
/// (its fields are reached through this struct: `meta.name`), plus what only installing uses.
#[derive(Debug, Clone)]
pub struct WheelMetadata {
    /// METADATA; `Name` and `Version` are checked against the file name.
    pub metadata: bundle_core::wheel::WheelMetadata,
    pub console_scripts: Vec<EntryPoint>,
    pub gui_scripts: Vec<EntryPoint>,
    /// `Root-Is-Purelib` from WHEEL.
    pub root_is_purelib: bool,
    /// The `{name}-{version}.dist-info` directory name.
    pub dist_info: String,
    pub filename: WheelName,
}

impl std::ops::Deref for WheelMetadata {
    type Target = bundle_core::wheel::WheelMetadata;

    fn deref(&self) -> &Self::Target {
        &self.metadata
    }
}

/// How to treat a wheel whose `RECORD` does not match its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordCheck {
    /// Any mismatch, unlisted file or file listed but absent is an error.
    #[default]
    Strict,
    /// Install anyway; each problem becomes an entry of [`InstalledDist::warnings`].
    Warn,
}

/// Options for [`install_wheel`] and [`install_wheels`].
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub record_check: RecordCheck,
    /// Write an empty `REQUESTED` (the distribution was asked for, not pulled in as a dependency).
    pub requested: bool,
    /// Content of `INSTALLER`.
    pub installer: String,
    /// Cap on the sum of uncompressed sizes of one wheel.
    pub max_total_size: u64,
    /// Cap on the sum of uncompressed sizes of every wheel [`install_wheels`] is given (one budget
    /// for the whole release, checked before anything is written, together with the free space).
    pub max_release_size: u64,
    /// Cap on uncompressed/compressed size of one entry ...
    pub max_ratio: u64,
    /// ... applied to every entry above this small floor (tiny files compress well and are
    /// harmless; above it, a member of zeros is a bomb whatever its size).
    pub ratio_min_size: u64,
    /// Cap on the number of zip entries of one wheel.
    pub max_entries: usize,
    /// Wheels extracted in parallel by [`install_wheels`].
    pub jobs: usize,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            record_check: RecordCheck::Strict,
            requested: false,
            installer: DEFAULT_INSTALLER.to_string(),
            // Large enough for the biggest real wheels (CUDA builds), small enough to stop a bomb
            // before it fills a site's disk.
            max_total_size: 8 << 30,
            max_release_size: 16 << 30,
            max_ratio: 250,
            ratio_min_size: 64 << 10,
            max_entries: 500_000,
            jobs: 2,
        }
    }
}

/// One installed distribution.
#[derive(Debug, Clone)]
pub struct InstalledDist {
    pub name: String,
    pub version: String,
    pub wheel: PathBuf,
    /// Absolute path of the installed `.dist-info` directory.
    pub dist_info: PathBuf,
    /// Files written, including launchers, RECORD, INSTALLER and REQUESTED.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Names of the scripts and launchers written to `bin/`.
    pub scripts: Vec<String>,
    /// RECORD problems tolerated by [`RecordCheck::Warn`], and `Wheel-Version` minor warnings.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Opening and checking a wheel
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct EntryMeta {
    index: usize,
    name: String,
    is_dir: bool,
    size: u64,
    exec: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug)]
struct RecordLine {
    /// `None` when RECORD gives no hash or an algorithm we refuse (then it was already reported).
    hash: Option<(Algo, String)>,
    size: Option<u64>,
}

struct OpenedWheel {
    path: PathBuf,
    /// The wheel's file name, used in every message.
    label: String,
    archive: ZipArchive<File>,
    entries: Vec<EntryMeta>,
    meta: WheelMetadata,
    data_dir: String,
    record: HashMap<String, RecordLine>,
    /// Problems found while opening, reported or tolerated per [`RecordCheck`].
    warnings: Vec<String>,
}

impl OpenedWheel {
    fn err(&self, kind: &'static str, entry: Option<&str>, detail: impl Into<String>) -> WheelError {
        invalid(&self.label, kind, entry, detail)
    }
}

fn invalid(label: &str, kind: &'static str, entry: Option<&str>, detail: impl Into<String>) -> WheelError {
    WheelError::Invalid { kind, wheel: label.to_string(), entry: entry.map(str::to_string), detail: detail.into() }
}

fn zip_detail(e: ZipError) -> String {
    match e {
        ZipError::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Why a zip entry name is unsafe to extract, if it is.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty entry name");
    }
    if name.contains('\0') {
        return Some("entry name contains NUL");
    }
    if name.contains('\\') {
        return Some("entry name contains a backslash");
    }
    // Control characters would corrupt RECORD lines and line-based tooling downstream.
    if name.chars().any(char::is_control) {
        return Some("entry name contains a control character");
    }
    if name.starts_with('/') {
        return Some("absolute path");
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Some("path with a drive letter");
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    for comp in trimmed.split('/') {
        match comp {
            "" => return Some("empty path component"),
            "." => return Some("`.` path component"),
            ".." => return Some("path escapes the install directory (`..`)"),
            _ => {}
        }
    }
    None
}

/// Names of all central-directory records, in order, including duplicates: the zip crate keeps
/// only the last of several records with one name, so duplicates are only visible here.
fn central_directory_names(file: &File, start: u64, label: &str) -> Result<Vec<Vec<u8>>, WheelError> {
    let len = file
        .metadata()
        .map_err(|e| WheelError::Io {
            wheel: label.to_string(),
            entry: None,
            action: "cannot stat",
            path: PathBuf::from(label),
            source: e,
        })?
        .len();
    let mut buf = vec![0u8; len.saturating_sub(start) as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| invalid(label, "invalid_zip", None, format!("cannot read central directory: {e}")))?;
    let mut names = Vec::new();
    let mut pos = 0usize;
    while pos + 46 <= buf.len() && buf[pos..pos + 4] == [0x50, 0x4b, 0x01, 0x02] {
        let u16_at = |o: usize| u16::from_le_bytes([buf[pos + o], buf[pos + o + 1]]) as usize;
        let (n, x, c) = (u16_at(28), u16_at(30), u16_at(32));
        let end = pos + 46 + n;
        if end > buf.len() {
            return Err(invalid(label, "invalid_zip", None, "truncated central directory"));
        }
        names.push(buf[pos + 46..end].to_vec());
        pos = end + x + c;
    }
    Ok(names)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

fn is_dotted(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

/// Why a script name cannot become a file in `bin/`, if it cannot.
fn bad_script_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "." || name == ".." {
        Some("empty or dot name")
    } else if name.contains(['/', '\\']) {
        Some("name contains a path separator")
    } else if name.chars().any(|c| c == '\0' || c.is_control()) {
        Some("name contains a control character")
    } else {
        None
    }
}

/// Parses `[console_scripts]` and `[gui_scripts]` of `entry_points.txt` (other groups are plugin
/// registrations the installer does not act on).
fn parse_entry_points(text: &str, label: &str, entry: &str) -> Result<(Vec<EntryPoint>, Vec<EntryPoint>), WheelError> {
    let mut console = Vec::new();
    let mut gui = Vec::new();
    let mut section = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].trim().to_string();
            continue;
        }
        let target = match section.as_str() {
            "console_scripts" => &mut console,
            "gui_scripts" => &mut gui,
            _ => continue,
        };
        let bad = |detail: String| invalid(label, "invalid_entry_point", Some(entry), detail);
        let (name, value) = line.split_once('=').ok_or_else(|| bad(format!("`{line}` is not `name = module:attr`")))?;
        let name = name.trim();
        if let Some(why) = bad_script_name(name) {
            return Err(bad(format!("[{section}] `{name}`: {why}")));
        }
        let (value, extras) = match value.split_once('[') {
            Some((v, rest)) => {
                let inner = rest.trim().strip_suffix(']').ok_or_else(|| bad(format!("`{line}`: unclosed extras")))?;
                (v, inner.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect())
            }
            None => (value, Vec::new()),
        };
        let (module, attr) = value
            .split_once(':')
            .map(|(m, a)| (m.trim(), a.trim()))
            .ok_or_else(|| bad(format!("[{section}] `{name}`: `{}` has no `:attr`", value.trim())))?;
        // Both parts are pasted into Python source: only dotted identifiers may pass.
        if !is_dotted(module) || !is_dotted(attr) {
            return Err(bad(format!("[{section}] `{name}`: `{module}:{attr}` is not a valid object reference")));
        }
        target.push(EntryPoint { name: name.to_string(), module: module.to_string(), attr: attr.to_string(), extras });
    }
    Ok((console, gui))
}

fn read_small(archive: &mut ZipArchive<File>, name: &str, label: &str) -> Result<Option<String>, WheelError> {
    // The zip-bomb caps were checked before any entry is read; this bounds memory further.
    const MAX: u64 = 64 << 20;
    let mut f = match archive.by_name(name) {
        Ok(f) => f,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(invalid(label, "invalid_zip", Some(name), zip_detail(e))),
    };
    let mut buf = Vec::with_capacity(f.size().min(MAX) as usize);
    (&mut f)
        .take(MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| invalid(label, "invalid_zip", Some(name), e.to_string()))?;
    if buf.len() as u64 > MAX {
        return Err(invalid(label, "zip_bomb", Some(name), "metadata file larger than 64 MiB"));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// How messages name a wheel: its file name.
fn wheel_label(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn open_wheel(path: &Path, opts: &InstallOptions) -> Result<OpenedWheel, WheelError> {
    let label = wheel_label(path);
    let filename = parse_wheel_filename(&label)?;
    let io =
        |action, e| WheelError::Io { wheel: label.clone(), entry: None, action, path: path.to_path_buf(), source: e };
    let file = File::open(path).map_err(|e| io("cannot open", e))?;
    let raw = file.try_clone().map_err(|e| io("cannot open", e))?;
    let mut archive = ZipArchive::new(file).map_err(|e| invalid(&label, "invalid_zip", None, zip_detail(e)))?;
    if archive.offset() != 0 {
        return Err(invalid(&label, "invalid_zip", None, "data before the zip archive"));
    }
    let names = central_directory_names(&raw, archive.central_directory_start(), &label)?;
    if names.len() > opts.max_entries {
        return Err(invalid(&label, "zip_bomb", None, format!("{} entries (limit {})", names.len(), opts.max_entries)));
    }
    let mut seen = HashSet::with_capacity(names.len());
    for n in &names {
        if !seen.insert(n.as_slice()) {
            return Err(invalid(
                &label,
                "duplicate_entry",
                Some(&String::from_utf8_lossy(n)),
                "appears twice in the zip",
            ));
        }
    }
    if names.len() != archive.len() {
        return Err(invalid(&label, "invalid_zip", None, "central directory does not match its entry count"));
    }

    let mut entries = Vec::with_capacity(archive.len());
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let entry_name = archive.name_for_index(index).map(str::to_string);
        let f = archive
            .by_index_raw(index)
            .map_err(|e| invalid(&label, "invalid_zip", entry_name.as_deref(), zip_detail(e)))?;
        let name = f.name().to_string();
        let bad = |kind, detail: String| invalid(&label, kind, Some(&name), detail);
        if let Some(why) = unsafe_name(&name) {
            return Err(bad("unsafe_path", why.to_string()));
        }
        if f.name_raw().contains(&0) {
            return Err(bad("unsafe_path", "entry name contains NUL".into()));
        }
        let is_dir = name.ends_with('/');
        let mode = f.unix_mode().unwrap_or(0);
        let ftype = mode & 0o170000;
        match ftype {
            0 => {}
            0o100000 if !is_dir => {}
            0o040000 if is_dir => {}
            0o120000 => return Err(bad("link_entry", "symbolic link entries are not allowed".into())),
            _ => return Err(bad("special_entry", format!("not a regular file (mode {mode:o})"))),
        }
        if f.encrypted() {
            return Err(bad("invalid_zip", "encrypted entry".into()));
        }
        if !matches!(f.compression(), CompressionMethod::Stored | CompressionMethod::Deflated) {
            return Err(bad("invalid_zip", format!("unsupported compression {:?}", f.compression())));
        }
        let size = f.size();
        if is_dir && size != 0 {
            return Err(bad("invalid_zip", "directory entry with content".into()));
        }
        if size > opts.ratio_min_size && size / f.compressed_size().max(1) > opts.max_ratio {
            return Err(bad(
                "zip_bomb",
                format!("expands {} bytes to {size} (ratio limit {})", f.compressed_size(), opts.max_ratio),
            ));
        }
        total = total.saturating_add(size);
        if total > opts.max_total_size {
            return Err(bad("zip_bomb", format!("uncompressed size exceeds {} bytes", opts.max_total_size)));
        }
        entries.push(EntryMeta { index, name, is_dir, size, exec: mode & 0o111 != 0 });
    }

    // Exactly one top-level `.dist-info` directory.
    let mut dist_infos: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.name.split_once('/').map(|(top, _)| top))
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    dist_infos.sort_unstable();
    dist_infos.dedup();
    let dist_info = match dist_infos.as_slice() {
        [one] => one.to_string(),
        [] => return Err(invalid(&label, "invalid_metadata", None, "no .dist-info directory")),
        many => {
            return Err(invalid(
                &label,
                "invalid_metadata",
                None,
                format!("several .dist-info directories: {}", many.join(", ")),
            ))
        }
    };
    let stem = dist_info.strip_suffix(".dist-info").expect("filtered on the suffix");
    let dist_ok = stem
        .split_once('-')
        .is_some_and(|(n, v)| normalize_name(n) == filename.normalized_name() && same_version(v, &filename.version));
    if !dist_ok {
        return Err(invalid(&label, "name_mismatch", None, format!("`{dist_info}` does not match the file name")));
    }

    let wheel_entry = format!("{dist_info}/WHEEL");
    let wheel_text = read_small(&mut archive, &wheel_entry, &label)?
        .ok_or_else(|| invalid(&label, "invalid_metadata", Some(&wheel_entry), "missing"))?;
    let wh = bundle_core::wheel::metadata::parse_wheel(&wheel_text)
        .map_err(|e| invalid(&label, "invalid_metadata", Some(&wheel_entry), e))?;
    let wheel_version = &wh.wheel_version;
    let (major, minor) = wheel_version
        .split_once('.')
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
        .ok_or_else(|| {
            invalid(&label, "invalid_metadata", Some(&wheel_entry), format!("bad Wheel-Version `{wheel_version}`"))
        })?;
    if major != 1 {
        return Err(invalid(
            &label,
            "unsupported_wheel_version",
            Some(&wheel_entry),
            format!("Wheel-Version {wheel_version} is not supported (only 1.x)"),
        ));
    }
    let mut warnings = Vec::new();
    if minor > 0 {
        warnings.push(format!("{wheel_entry}: Wheel-Version {wheel_version} is newer than 1.0"));
    }

    let meta_entry = format!("{dist_info}/METADATA");
    let meta_text = read_small(&mut archive, &meta_entry, &label)?
        .ok_or_else(|| invalid(&label, "invalid_metadata", Some(&meta_entry), "missing"))?;
    let bad_meta = |detail: String| invalid(&label, "invalid_metadata", Some(&meta_entry), detail);
    let metadata = bundle_core::wheel::parse_metadata(&meta_text).map_err(bad_meta)?;
    let (metadata_version, name, version) = (&metadata.metadata_version, &metadata.name, &metadata.version);
    if metadata_version.split('.').next().and_then(|m| m.parse::<u32>().ok()).is_none_or(|m| m > 2) {
        return Err(bad_meta(format!("unsupported Metadata-Version `{metadata_version}`")));
    }
    if !is_valid_dist_name(name) {
        return Err(bad_meta(format!("invalid Name `{name}`")));
    }
    if normalize_name(name) != filename.normalized_name() || !same_version(version, &filename.version) {
        return Err(invalid(
            &label,
            "name_mismatch",
            Some(&meta_entry),
            format!("METADATA says {name} {version}, the file name {} {}", filename.distribution, filename.version),
        ));
    }

    let ep_entry = format!("{dist_info}/entry_points.txt");
    let (console_scripts, gui_scripts) = match read_small(&mut archive, &ep_entry, &label)? {
        Some(text) => parse_entry_points(&text, &label, &ep_entry)?,
        None => (Vec::new(), Vec::new()),
    };

    let record_entry = format!("{dist_info}/RECORD");
    let record_text = read_small(&mut archive, &record_entry, &label)?
        .ok_or_else(|| invalid(&label, "record_mismatch", Some(&record_entry), "missing"))?;
    let mut record = HashMap::new();
    let mut record_problems: Vec<(String, String)> = Vec::new();
    let mut bad_hash: HashSet<String> = HashSet::new();
    for row in record::parse(&record_text) {
        let path = row.path.clone();
        let hash = match row.hash() {
            None => None,
            Some(h) => match h.split_once('=') {
                Some(("sha256", d)) => Some((Algo::Sha256, d.trim_end_matches('=').to_string())),
                Some(("sha384", d)) => Some((Algo::Sha384, d.trim_end_matches('=').to_string())),
                Some(("sha512", d)) => Some((Algo::Sha512, d.trim_end_matches('=').to_string())),
                _ => {
                    record_problems.push((path.clone(), format!("unsupported RECORD hash `{h}`")));
                    bad_hash.insert(path.clone());
                    None
                }
            },
        };
        let size = match row.size() {
            None => None,
            Some(s) => match s.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    record_problems.push((path.clone(), format!("bad RECORD size `{s}`")));
                    None
                }
            },
        };
        if record.insert(path.clone(), RecordLine { hash, size }).is_some() {
            record_problems.push((path, "listed twice in RECORD".into()));
        }
    }
    // Everything RECORD can be checked against without decompressing: listing, hashes present,
    // sizes against the zip headers. Content hashes are checked while extracting.
    let signature_files = [format!("{dist_info}/RECORD.jws"), format!("{dist_info}/RECORD.p7s")];
    let mut files_in_zip = HashSet::new();
    for e in entries.iter().filter(|e| !e.is_dir) {
        files_in_zip.insert(e.name.as_str());
        if e.name == record_entry || signature_files.contains(&e.name) {
            continue;
        }
        match record.get(&e.name) {
            None => record_problems.push((e.name.clone(), "not listed in RECORD".into())),
            Some(line) => {
                if line.hash.is_none() && !bad_hash.contains(&e.name) {
                    record_problems.push((e.name.clone(), "no hash in RECORD".into()));
                }
                if let Some(s) = line.size {
                    if s != e.size {
                        record_problems.push((e.name.clone(), format!("RECORD says {s} bytes, the zip {}", e.size)));
                    }
                }
            }
        }
    }
    let mut listed_missing: Vec<&String> =
        record.keys().filter(|p| !p.ends_with('/') && !files_in_zip.contains(p.as_str())).collect();
    listed_missing.sort();
    for p in listed_missing {
        record_problems.push((p.clone(), "listed in RECORD but not in the wheel".into()));
    }
    if let Some((entry, detail)) = record_problems.first() {
        if opts.record_check == RecordCheck::Strict {
            return Err(invalid(&label, "record_mismatch", Some(entry), detail.clone()));
        }
    }
    warnings.extend(record_problems.into_iter().map(|(p, d)| format!("{p}: {d}")));

    let meta = WheelMetadata {
        metadata,
        console_scripts,
        gui_scripts,
        root_is_purelib: wh.root_is_purelib,
        dist_info: dist_info.clone(),
        filename,
    };
    Ok(OpenedWheel {
        path: path.to_path_buf(),
        label,
        archive,
        entries,
        data_dir: format!("{stem}.data"),
        meta,
        record,
        warnings,
    })
}

/// Reads and checks a wheel's metadata without installing it: the file name, the zip structure
/// (entry names, types, duplicates, size caps), `WHEEL`, `METADATA`, `entry_points.txt`, and that
/// `RECORD` lists every file (content hashes are only checked by [`check_wheel`] and installs).
pub fn read_metadata(wheel: &Path) -> Result<WheelMetadata, WheelError> {
    Ok(open_wheel(wheel, &InstallOptions::default())?.meta)
}

/// [`read_metadata`] plus every entry's content checked against `RECORD` (decompressed once,
/// nothing written). Returns the metadata and, under [`RecordCheck::Warn`], the problems found.
pub fn check_wheel(wheel: &Path, opts: &InstallOptions) -> Result<(WheelMetadata, Vec<String>), WheelError> {
    let mut w = open_wheel(wheel, opts)?;
    let mut buf = vec![0u8; COPY_BUF];
    let mut warnings = std::mem::take(&mut w.warnings);
    let files: Vec<(usize, String, u64)> =
        w.entries.iter().filter(|e| !e.is_dir).map(|e| (e.index, e.name.clone(), e.size)).collect();
    for (index, name, size) in files {
        let algo = w.record.get(&name).and_then(|r| r.hash.as_ref()).map(|(a, _)| *a);
        let copied = stream_entry(&mut w, index, &name, size, &mut io::sink(), &mut buf, algo, None)?;
        verify_record(&w, &name, &copied, opts, &mut warnings)?;
    }
    Ok((w.meta, warnings))
}

// ---------------------------------------------------------------------------------------------
// Planning: where each entry goes
// ---------------------------------------------------------------------------------------------

struct PlannedFile {
    /// Index into `OpenedWheel::entries`.
    entry: usize,
    /// Destination relative to the venv root.
    rel: PathBuf,
    record_path: String,
    mode: u32,
    /// Scripts from `.data/scripts/` get `#!python` rewritten.
    script: bool,
}

struct Generated {
    name: String,
    rel: PathBuf,
    record_path: String,
    content: Vec<u8>,
}

struct Plan {
    /// PEP 503 name of the project.
    project: String,
    /// Sum of the declared uncompressed sizes of the files it writes (for the release budget).
    declared: u64,
    files: Vec<PlannedFile>,
    launchers: Vec<Generated>,
    dist_info_rel: PathBuf,
    site_rel: PathBuf,
}

/// `path` (relative to the venv root) as RECORD wants it: relative to site-packages.
fn record_path(rel: &Path, site_rel: &Path) -> String {
    let s = match rel.strip_prefix(site_rel) {
        Ok(inside) => inside.to_path_buf(),
        Err(_) => {
            let mut up = PathBuf::new();
            for _ in site_rel.components() {
                up.push("..");
            }
            up.join(rel)
        }
    };
    s.to_string_lossy().into_owned()
}

/// The interpreter line for scripts and launchers. Kernels cut shebangs at 127 bytes and split
/// them at spaces, so such interpreters get pypa/installer's `/bin/sh` + `exec` polyglot, which
/// both sh and Python read correctly.
pub(crate) fn shebang(python: &Path) -> Vec<u8> {
    let exe = python.as_os_str().as_bytes();
    if !exe.contains(&b' ') && !exe.contains(&b'\t') && exe.len() + 3 <= 127 {
        return [b"#!".as_slice(), exe].concat();
    }
    let mut quoted = vec![b'\''];
    for &b in exe {
        if b == b'\'' {
            quoted.extend_from_slice(b"'\"'\"'");
        } else {
            quoted.push(b);
        }
    }
    quoted.push(b'\'');
    [b"#!/bin/sh\n'''exec' ".as_slice(), &quoted, b" \"$0\" \"$@\"\n' '''"].concat()
}

/// The launcher for an entry point: import the object and exit with what it returns. No `import
/// re` or argv rewriting (that is for Windows `.exe` launchers), so it starts as fast as possible.
fn launcher(shebang: &[u8], ep: &EntryPoint) -> Vec<u8> {
    let head = ep.attr.split('.').next().expect("validated non-empty");
    let mut s = shebang.to_vec();
    s.extend_from_slice(
        format!(
            "\n# -*- coding: utf-8 -*-\nimport sys\nfrom {} import {head}\nif __name__ == \"__main__\":\n    sys.exit({}())\n",
            ep.module, ep.attr
        )
        .as_bytes(),
    );
    s
}

fn plan(venv: &Venv, w: &OpenedWheel) -> Result<Plan, WheelError> {
    let rel_to_root = |p: &Path| {
        p.strip_prefix(&venv.root).map(Path::to_path_buf).map_err(|_| {
            w.err("io", None, format!("venv path `{}` is not under its root `{}`", p.display(), venv.root.display()))
        })
    };
    let site_rel = rel_to_root(&venv.site_packages)?;
    let bin_rel = rel_to_root(&venv.bin)?;
    let headers_rel = rel_to_root(&venv.headers_dir(&w.meta.name))?;
    let dist_info = &w.meta.dist_info;
    // We write these ourselves; a copy shipped in the wheel would describe some other install.
    let skip: [String; 3] =
        [format!("{dist_info}/RECORD"), format!("{dist_info}/INSTALLER"), format!("{dist_info}/REQUESTED")];
    let data_prefix = format!("{}/", w.data_dir);

    let mut files = Vec::new();
    for (i, e) in w.entries.iter().enumerate() {
        if e.is_dir || skip.contains(&e.name) {
            continue;
        }
        let mode = if e.exec { 0o755 } else { 0o644 };
        let (rel, script) = match e.name.strip_prefix(&data_prefix) {
            None => (site_rel.join(&e.name), false),
            Some(rest) => {
                let (key, sub) = rest
                    .split_once('/')
                    .ok_or_else(|| w.err("invalid_metadata", Some(&e.name), "file directly in the .data directory"))?;
                match key {
                    "purelib" | "platlib" => (site_rel.join(sub), false),
                    "scripts" => (bin_rel.join(sub), true),
                    "headers" => (headers_rel.join(sub), false),
                    "data" => (PathBuf::from(sub), false),
                    other => {
                        return Err(w.err("invalid_metadata", Some(&e.name), format!("unknown .data scheme `{other}`")))
                    }
                }
            }
        };
        let record_path = record_path(&rel, &site_rel);
        files.push(PlannedFile { entry: i, rel, record_path, mode: if script { 0o755 } else { mode }, script });
    }

    let sb = shebang(&venv.python);
    let launchers = w
        .meta
        .console_scripts
        .iter()
        .chain(&w.meta.gui_scripts)
        .map(|ep| {
            let rel = bin_rel.join(&ep.name);
            Generated {
                name: ep.name.clone(),
                record_path: record_path(&rel, &site_rel),
                rel,
                content: launcher(&sb, ep),
            }
        })
        .collect();

    let plan = Plan {
        project: normalize_name(&w.meta.name),
        declared: files.iter().map(|f| w.entries[f.entry].size).sum(),
        files,
        launchers,
        dist_info_rel: site_rel.join(dist_info),
        site_rel,
    };
    // Two entries of one wheel landing on one path (say `pkg/a.py` and `.data/purelib/pkg/a.py`),
    // or a file where another needs a directory.
    let mut owners: HashMap<&Path, &str> = HashMap::new();
    let entry_name = |f: &PlannedFile| w.entries[f.entry].name.as_str();
    let names = plan.files.iter().map(|f| (f.rel.as_path(), entry_name(f)));
    let names = names.chain(plan.launchers.iter().map(|g| (g.rel.as_path(), g.name.as_str())));
    for (rel, name) in names {
        if let Some(prev) = owners.insert(rel, name) {
            return Err(w.err("duplicate_entry", Some(name), format!("installs to the same path as `{prev}`")));
        }
    }
    for (rel, name) in &owners {
        for anc in rel.ancestors().skip(1) {
            if let Some(other) = owners.get(anc) {
                return Err(w.err("duplicate_entry", Some(name), format!("needs `{other}` to be a directory")));
            }
        }
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------------

const COPY_BUF: usize = 256 * 1024;

/// A checked and planned wheel; the zip is `None` when it was closed between the phases.
type Prepared = (Option<OpenedWheel>, Plan);

/// Batches up to this many wheels keep every zip open between checking and extracting.
const KEEP_OPEN_MAX: usize = 256;

enum VerifyHasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl VerifyHasher {
    fn new(a: Algo) -> Self {
        match a {
            Algo::Sha256 => VerifyHasher::Sha256(Sha256::new()),
            Algo::Sha384 => VerifyHasher::Sha384(Sha384::new()),
            Algo::Sha512 => VerifyHasher::Sha512(Sha512::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            VerifyHasher::Sha256(h) => h.update(b),
            VerifyHasher::Sha384(h) => h.update(b),
            VerifyHasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> String {
        match self {
            VerifyHasher::Sha256(h) => b64(&h.finalize()),
            VerifyHasher::Sha384(h) => b64(&h.finalize()),
            VerifyHasher::Sha512(h) => b64(&h.finalize()),
        }
    }
}

fn b64(digest: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

struct Copied {
    /// Bytes in the wheel.
    original_size: u64,
    /// Digest of the wheel's bytes in the RECORD's algorithm, when it had one.
    original_digest: Option<String>,
    /// Bytes and sha256 of what was written (differs from the original for rewritten scripts).
    written_size: u64,
    written_sha256: String,
}

/// Where a `#!python` / `#!pythonw` first line ends, if the chunk starts with one.
fn python_shebang_end(chunk: &[u8], eof: bool) -> Option<usize> {
    let line_end = match chunk.iter().position(|&b| b == b'\n') {
        Some(p) => p,
        None if eof => chunk.len(),
        None => return None,
    };
    let line = &chunk[..line_end];
    let content = line.strip_suffix(b"\r").unwrap_or(line);
    (content == b"#!python" || content == b"#!pythonw").then_some(content.len())
}

fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => return Ok((n, true)),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, false))
}

/// Streams one entry into `out`, hashing as it goes; never reads past the size the zip declared.
#[allow(clippy::too_many_arguments)]
fn stream_entry(
    w: &mut OpenedWheel,
    index: usize,
    name: &str,
    declared: u64,
    out: &mut impl Write,
    buf: &mut [u8],
    verify: Option<Algo>,
    rewrite: Option<&[u8]>,
) -> Result<Copied, WheelError> {
    let label = w.label.clone();
    let read_err = |e: String| invalid(&label, "invalid_zip", Some(name), e);
    let write_err = |e: io::Error| WheelError::Io {
        wheel: label.clone(),
        entry: Some(name.to_string()),
        action: "cannot write",
        path: PathBuf::from(name),
        source: e,
    };
    let mut reader = w.archive.by_index(index).map_err(|e| read_err(zip_detail(e)))?;
    let mut written_hash = Sha256::new();
    // One hasher serves both checks unless the bytes change or RECORD uses another algorithm.
    let mut verify_hash = match verify {
        Some(Algo::Sha256) if rewrite.is_none() => None,
        Some(a) => Some(VerifyHasher::new(a)),
        None => None,
    };
    let (mut original_size, mut written_size) = (0u64, 0u64);
    let mut first = true;
    loop {
        let (n, eof) = fill(&mut reader, buf).map_err(|e| read_err(e.to_string()))?;
        original_size += n as u64;
        if original_size > declared {
            return Err(invalid(
                &label,
                "zip_bomb",
                Some(name),
                format!("expands beyond its declared {declared} bytes"),
            ));
        }
        let chunk = &buf[..n];
        if let Some(h) = verify_hash.as_mut() {
            h.update(chunk);
        }
        let mut body = chunk;
        if first {
            first = false;
            if let (Some(new_line), Some(end)) = (rewrite, python_shebang_end(chunk, eof)) {
                written_hash.update(new_line);
                out.write_all(new_line).map_err(write_err)?;
                written_size += new_line.len() as u64;
                body = &chunk[end..];
            }
        }
        written_hash.update(body);
        out.write_all(body).map_err(write_err)?;
        written_size += body.len() as u64;
        if eof {
            break;
        }
    }
    if original_size != declared {
        return Err(invalid(
            &label,
            "invalid_zip",
            Some(name),
            format!("{original_size} bytes, the zip declares {declared}"),
        ));
    }
    let written_sha256 = b64(&written_hash.finalize());
    let original_digest = match (verify, verify_hash) {
        (_, Some(h)) => Some(h.finish()),
        (Some(Algo::Sha256), None) => Some(written_sha256.clone()),
        _ => None,
    };
    Ok(Copied { original_size, original_digest, written_size, written_sha256 })
}

fn verify_record(
    w: &OpenedWheel,
    name: &str,
    copied: &Copied,
    opts: &InstallOptions,
    warnings: &mut Vec<String>,
) -> Result<(), WheelError> {
    let Some(line) = w.record.get(name) else { return Ok(()) }; // absence was handled at open
    let mut problems = Vec::new();
    if let (Some((algo, want)), Some(got)) = (&line.hash, &copied.original_digest) {
        if want != got {
            let a = format!("{algo:?}").to_lowercase();
            problems.push(format!("hash mismatch: RECORD says {a}={want}, content is {a}={got}"));
        }
    }
    if let Some(s) = line.size {
        if s != copied.original_size {
            problems.push(format!("size mismatch: RECORD says {s}, content is {}", copied.original_size));
        }
    }
    for p in problems {
        if opts.record_check == RecordCheck::Strict {
            return Err(w.err("record_mismatch", Some(name), p));
        }
        warnings.push(format!("{name}: {p}"));
    }
    Ok(())
}

/// What one install created, so a failure can take it back.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn rollback(self) {
        for f in self.files.iter().rev() {
            let _ = fs::remove_file(f);
        }
        // Deepest first; a directory another install also uses is not empty and stays.
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Creates directories under the venv, remembering which exist so each is checked once.
struct Dirs {
    known: HashSet<PathBuf>,
}

impl Dirs {
    fn new(venv: &Venv) -> Self {
        Dirs { known: [venv.root.clone(), venv.bin.clone(), venv.site_packages.clone()].into_iter().collect() }
    }

    fn ensure(&mut self, dir: &Path, undo: &mut Undo) -> io::Result<()> {
        if self.known.contains(dir) {
            return Ok(());
        }
        match fs::create_dir(dir) {
            Ok(()) => undo.dirs.push(dir.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = dir.parent().ok_or(e)?;
                self.ensure(parent, undo)?;
                match fs::create_dir(dir) {
                    Ok(()) => undo.dirs.push(dir.to_path_buf()),
                    // Another wheel of the batch made it meanwhile (namespace packages).
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !dir.is_dir() {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"));
                }
            }
            Err(e) => return Err(e),
        }
        self.known.insert(dir.to_path_buf());
        Ok(())
    }
}

/// PEP 503 project name -> `.dist-info` directory, for what site-packages already holds.
fn installed_projects(site_packages: &Path) -> HashMap<String, String> {
    let Ok(rd) = fs::read_dir(site_packages) else { return HashMap::new() };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".dist-info")?;
            let project = normalize_name(stem.split_once('-').map_or(stem, |(n, _)| n));
            Some((project, name))
        })
        .collect()
}

/// Installing over another version would need an uninstall first; a release venv never needs one.
fn not_installed(w: &OpenedWheel, installed: &HashMap<String, String>) -> Result<(), WheelError> {
    match installed.get(&normalize_name(&w.meta.name)) {
        Some(dir) => Err(w.err("already_installed", None, format!("{} is already installed (`{dir}`)", w.meta.name))),
        None => Ok(()),
    }
}

/// Which installed distribution's RECORD lists `record_path`; only used to explain a conflict.
fn find_owner(site_packages: &Path, record_path: &str) -> Option<String> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(site_packages)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dist-info"))
        .collect();
    dirs.sort();
    dirs.into_iter().find_map(|d| {
        let text = fs::read_to_string(d.join("RECORD")).ok()?;
        record::parse(&text)
            .iter()
            .any(|row| row.path == record_path)
            .then(|| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten()
    })
}

fn create_file(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    // The process umask must not decide the modes of a release's files.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

fn extract(
    venv: &Venv,
    w: &mut OpenedWheel,
    plan: &Plan,
    opts: &InstallOptions,
    undo: &mut Undo,
) -> Result<InstalledDist, WheelError> {
    let label = w.label.clone();
    let mut warnings = std::mem::take(&mut w.warnings);
    let mut dirs = Dirs::new(venv);
    let mut buf = vec![0u8; COPY_BUF];
    let mut record: Vec<(String, String, u64)> = Vec::with_capacity(plan.files.len() + 8);
    let mut scripts = Vec::new();
    let mut bytes = 0u64;
    let sb = shebang(&venv.python);

    let io_err = |entry: &str, action, path: &Path, e| WheelError::Io {
        wheel: label.clone(),
        entry: Some(entry.to_string()),
        action,
        path: path.to_path_buf(),
        source: e,
    };
    let conflict_or = |entry: &str, path: &Path, record_path: &str, e: io::Error| match e.kind() {
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => WheelError::Conflict {
            wheel: label.clone(),
            entry: entry.to_string(),
            path: path.to_path_buf(),
            owner: find_owner(&venv.site_packages, record_path),
        },
        _ => io_err(entry, "cannot create", path, e),
    };
    let open_dest = |dirs: &mut Dirs, undo: &mut Undo, entry: &str, rel: &Path, record_path: &str, mode| {
        let dest = venv.root.join(rel);
        if let Some(parent) = dest.parent() {
            dirs.ensure(parent, undo).map_err(|e| conflict_or(entry, parent, record_path, e))?;
        }
        let f = create_file(&dest, mode).map_err(|e| conflict_or(entry, &dest, record_path, e))?;
        undo.files.push(dest.clone());
        Ok::<_, WheelError>((f, dest))
    };

    for pf in &plan.files {
        let (index, name, size) = {
            let e = &w.entries[pf.entry];
            (e.index, e.name.clone(), e.size)
        };
        let (mut file, dest) = open_dest(&mut dirs, undo, &name, &pf.rel, &pf.record_path, pf.mode)?;
        let algo = w.record.get(&name).and_then(|r| r.hash.as_ref()).map(|(a, _)| *a);
        let copied = stream_entry(w, index, &name, size, &mut file, &mut buf, algo, pf.script.then_some(sb.as_slice()))
            .map_err(|e| match e {
                WheelError::Io { wheel, entry, action, source, .. } => {
                    WheelError::Io { wheel, entry, action, path: dest.clone(), source }
                }
                other => other,
            })?;
        verify_record(w, &name, &copied, opts, &mut warnings)?;
        if pf.script {
            scripts.push(pf.rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
        bytes += copied.written_size;
        record.push((pf.record_path.clone(), format!("sha256={}", copied.written_sha256), copied.written_size));
    }

    let write_whole =
        |dirs: &mut Dirs, undo: &mut Undo, entry: &str, rel: &Path, record_path: &str, mode, content: &[u8]| {
            let (mut f, dest) = open_dest(dirs, undo, entry, rel, record_path, mode)?;
            f.write_all(content).map_err(|e| io_err(entry, "cannot write", &dest, e))?;
            Ok::<_, WheelError>(())
        };
    let mut generated =
        |dirs: &mut Dirs, undo: &mut Undo, entry: &str, rel: &Path, record_path: &str, mode, content: &[u8]| {
            write_whole(dirs, undo, entry, rel, record_path, mode, content)?;
            record.push((
                record_path.to_string(),
                format!("sha256={}", b64(&Sha256::digest(content))),
                content.len() as u64,
            ));
            Ok::<_, WheelError>(content.len() as u64)
        };
    for g in &plan.launchers {
        bytes += generated(&mut dirs, undo, "entry_points.txt", &g.rel, &g.record_path, 0o755, &g.content)?;
        scripts.push(g.name.clone());
    }
    let di = &plan.dist_info_rel;
    let installer = format!("{}\n", opts.installer);
    bytes += generated(
        &mut dirs,
        undo,
        "INSTALLER",
        &di.join("INSTALLER"),
        &record_path(&di.join("INSTALLER"), &plan.site_rel),
        0o644,
        installer.as_bytes(),
    )?;
    if opts.requested {
        bytes += generated(
            &mut dirs,
            undo,
            "REQUESTED",
            &di.join("REQUESTED"),
            &record_path(&di.join("REQUESTED"), &plan.site_rel),
            0o644,
            b"",
        )?;
    }
    let record_rel = di.join("RECORD");
    let record_rp = record_path(&record_rel, &plan.site_rel);
    record.push((record_rp.clone(), String::new(), 0));
    record.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rows = record::RecordWriter::with_capacity(record.len() * 80);
    for (p, h, s) in &record {
        if p == &record_rp {
            rows.push(p, "", None);
        } else {
            rows.push(p, h, Some(*s));
        }
    }
    let text = rows.finish();
    write_whole(&mut dirs, undo, "RECORD", &record_rel, &record_rp, 0o644, &text)?;
    bytes += text.len() as u64;

    Ok(InstalledDist {
        name: w.meta.name.clone(),
        version: w.meta.version.clone(),
        wheel: w.path.clone(),
        dist_info: venv.root.join(di),
        files: record.len(),
        bytes,
        scripts,
        warnings,
    })
}

/// Installs one wheel into `venv`. On error, every file and directory this call created is
/// removed again and the venv is as before.
pub fn install_wheel(venv: &Venv, wheel: &Path, opts: &InstallOptions) -> Result<InstalledDist, WheelError> {
    let mut w = open_wheel(wheel, opts)?;
    not_installed(&w, &installed_projects(&venv.site_packages))?;
    let plan = plan(venv, &w)?;
    let mut undo = Undo::default();
    extract(venv, &mut w, &plan, opts, &mut undo).inspect_err(|_| std::mem::take(&mut undo).rollback())
}

/// One decompression budget for the whole release: the wheels' declared uncompressed sizes, summed
/// before anything is unpacked, must stay under `opts.max_release_size` and fit in the free space
/// under the venv. A per-wheel cap alone let many small bombs add up (128 members of 4 MiB − 1
/// zeros in a 541 KB wheel). The error names the wheel that declares the most.
fn release_budget(
    declared: &[u64],
    labels: &[String],
    opts: &InstallOptions,
    venv_root: &Path,
) -> Result<(), WheelError> {
    let total = declared.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let Some(biggest) = (0..declared.len()).max_by_key(|&i| (declared[i], std::cmp::Reverse(i))) else { return Ok(()) };
    let over = |kind, why: String| {
        Err(WheelError::Invalid {
            kind,
            wheel: labels[biggest].clone(),
            entry: None,
            detail: format!(
                "{why}; this wheel alone declares {} bytes, the most of the {} wheels",
                declared[biggest],
                declared.len()
            ),
        })
    };
    if total > opts.max_release_size {
        return over(
            "zip_bomb",
            format!(
                "the release's wheels expand to {total} bytes (limit {} for a whole release)",
                opts.max_release_size
            ),
        );
    }
    match crate::transaction::plan::free_bytes(venv_root) {
        Some(free) if total > free => over(
            "disk_full",
            format!("the release's wheels expand to {total} bytes, only {free} are free under {}", venv_root.display()),
        ),
        _ => Ok(()),
    }
}

/// Installs several wheels, `opts.jobs` at a time. Every wheel is opened, checked and planned
/// before anything is written, and two wheels installing the same path are refused up front with
/// the same error whatever their order. Results are in input order. On error everything the batch
/// created is removed.
pub fn install_wheels(
    venv: &Venv,
    wheels: &[PathBuf],
    opts: &InstallOptions,
) -> Result<Vec<InstalledDist>, WheelError> {
    let jobs = opts.jobs.max(1).min(wheels.len().max(1));

    // Phase 1: open and plan (cheap: central directories and metadata files only). Large
    // batches close each wheel again rather than hold a descriptor per wheel until phase 2.
    let keep_open = wheels.len() <= KEEP_OPEN_MAX;
    let all: Vec<usize> = (0..wheels.len()).collect();
    let installed = installed_projects(&venv.site_packages);
    let prepared = parallel_map(&all, jobs, None, |i| {
        let w = open_wheel(&wheels[i], opts)?;
        not_installed(&w, &installed)?;
        let p = plan(venv, &w)?;
        Ok::<_, WheelError>((keep_open.then_some(w), p))
    });
    let mut ready = Vec::with_capacity(wheels.len());
    for r in prepared {
        ready.push(r.expect("no stop flag in phase 1")?);
    }

    let labels: Vec<String> = wheels.iter().map(|w| wheel_label(w)).collect();
    let label_of = |i: usize| (labels[i].clone(), wheels[i].clone());
    release_budget(&ready.iter().map(|(_, p)| p.declared).collect::<Vec<_>>(), &labels, opts, &venv.root)?;

    // One project twice (two versions, or one wheel listed twice) is never what was meant.
    let mut projects: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, p)) in ready.iter().enumerate() {
        projects.entry(p.project.as_str()).or_default().push(i);
    }
    if let Some((project, who)) = projects.iter().find(|(_, who)| who.len() > 1) {
        let mut who = who.clone();
        who.sort_by_key(|&i| label_of(i));
        return Err(WheelError::SameProject {
            first: labels[who[0]].clone(),
            second: labels[who[1]].clone(),
            project: project.to_string(),
        });
    }

    // Cross-wheel conflicts, decided on sorted paths and sorted wheel names: order-independent.
    let mut owners: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, (_, p)) in ready.iter().enumerate() {
        for f in &p.files {
            owners.entry(f.rel.as_path()).or_default().push(i);
        }
        for g in &p.launchers {
            owners.entry(g.rel.as_path()).or_default().push(i);
        }
    }
    let site_rel = ready.first().map(|(_, p)| p.site_rel.clone()).unwrap_or_default();
    for (path, who) in &owners {
        let mut pair: Vec<usize> = who.clone();
        for anc in path.ancestors().skip(1) {
            if let Some(o) = owners.get(anc) {
                pair.extend(o);
            }
        }
        pair.sort_by_key(|&i| label_of(i));
        pair.dedup();
        if pair.len() >= 2 {
            return Err(WheelError::WheelsConflict {
                first: labels[pair[0]].clone(),
                second: labels[pair[1]].clone(),
                path: record_path(path, &site_rel),
            });
        }
    }

    // Phase 2: extract, largest wheels first so the workers finish together. Wheels are started
    // in that fixed order and a started wheel always runs to its end, so the first failure in
    // that order is always found, whichever worker gets there first: the error is deterministic.
    let mut order: Vec<usize> = (0..wheels.len()).collect();
    let size = |i: usize| fs::metadata(&wheels[i]).map(|m| m.len()).unwrap_or(0);
    order.sort_by_key(|&i| (std::cmp::Reverse(size(i)), i));
    let stop = AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<Prepared>>> =
        ready.into_iter().map(|r| std::sync::Mutex::new(Some(r))).collect();
    let results = parallel_map(&order, jobs, Some(&stop), |i| {
        let (w, p) = slots[i].lock().expect("unpoisoned").take().expect("each wheel extracted once");
        let mut undo = Undo::default();
        let reopened = match w {
            Some(w) => Ok((w, p)),
            None => open_wheel(&wheels[i], opts).and_then(|w| plan(venv, &w).map(|p| (w, p))),
        };
        let r = reopened.and_then(|(mut w, p)| extract(venv, &mut w, &p, opts, &mut undo));
        if r.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        (r, undo)
    });
    let mut installed: Vec<Option<InstalledDist>> = (0..wheels.len()).map(|_| None).collect();
    let mut first_err = None;
    let mut undos = Vec::new();
    let mut results = results;
    for &i in &order {
        match results[i].take() {
            Some((Err(e), undo)) => {
                undos.push(undo);
                first_err = first_err.or(Some(e));
            }
            Some((Ok(d), undo)) => {
                undos.push(undo);
                installed[i] = Some(d);
            }
            None => {}
        }
    }
    if let Some(e) = first_err {
        for u in undos.into_iter().rev() {
            u.rollback();
        }
        return Err(e);
    }
    Ok(installed.into_iter().map(|d| d.expect("every wheel installed when none failed")).collect())
}

/// Runs `f(i)` for each `i` of `order` on a pool of `jobs` threads, started in that order; slot `i`
/// of the result holds `f(i)`. With `stop`, indices not yet started when it is set are skipped
/// (their slot is `None`). A panic in `f` reaches the caller once the others have finished.
fn parallel_map<T: Send>(
    order: &[usize],
    jobs: usize,
    stop: Option<&AtomicBool>,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<Option<T>> {
    let n = order.iter().max().map_or(0, |m| m + 1);
    let slots: Vec<std::sync::Mutex<Option<T>>> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    let run = |i: usize| {
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return;
        }
        let r = f(i);
        *slots[i].lock().expect("unpoisoned") = Some(r);
    };
    match rayon::ThreadPoolBuilder::new().num_threads(jobs.max(1)).build() {
        Ok(pool) => pool.scope_fifo(|s| {
            for &i in order {
                let run = &run;
                s.spawn_fifo(move |_| run(i));
            }
        }),
        // No thread could be started: the same work, one item at a time, on this thread.
        Err(_) => order.iter().for_each(|&i| run(i)),
    }
    slots.into_iter().map(|m| m.into_inner().expect("unpoisoned")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_filenames() {
        let n = parse_wheel_filename("demo_pkg-1.2.0-py3-none-any.whl").unwrap();
        assert_eq!((n.distribution.as_str(), n.version.as_str(), n.build.as_deref()), ("demo_pkg", "1.2.0", None));
        assert_eq!((n.python_tag.as_str(), n.abi_tag.as_str(), n.platform_tag.as_str()), ("py3", "none", "any"));
        assert_eq!(n.normalized_name(), "demo-pkg");
        assert_eq!(n.to_string(), "demo_pkg-1.2.0-py3-none-any.whl");
        let b = parse_wheel_filename("numpy-1.26.4-1local-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
            .unwrap();
        assert_eq!(b.build.as_deref(), Some("1local"));
        assert_eq!(b.platform_tag, "manylinux_2_17_x86_64.manylinux2014_x86_64");
        for bad in [
            "demo-1.0-py3-none.whl",
            "demo-1.0-py3-none-any.zip",
            "demo-1.0-x-py3-none-any.whl",
            "demo-not.a.version!-py3-none-any.whl",
            "-1.0-py3-none-any.whl",
            "dir/demo-1.0-py3-none-any.whl",
            "demo-1.0-py3-none-a/y.whl",
        ] {
            assert_eq!(parse_wheel_filename(bad).unwrap_err().kind(), "invalid_wheel_filename", "{bad}");
        }
    }

    #[test]
    fn pep503_names() {
        assert_eq!(normalize_name("Foo.Bar__baz-Qux"), "foo-bar-baz-qux");
        assert_eq!(normalize_name("ruamel.yaml"), "ruamel-yaml");
        assert_eq!(normalize_name("A"), "a");
    }

    #[test]
    fn entry_names() {
        assert_eq!(unsafe_name("pkg/mod.py"), None);
        assert_eq!(unsafe_name("pkg/"), None);
        for bad in ["../evil", "a/../../b", "/abs", "a\\b", "a//b", "./a", "C:/x", "a\nb", "a\0b", ""] {
            assert!(unsafe_name(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn entry_point_parsing() {
        let text = "[console_scripts]\nfoo = pkg.cli:main\nbar=pkg:App.run [extra1, extra2]\n\n[gui_scripts]\nbaz = pkg:gui\n[other]\nx = not valid at all\n";
        let (c, g) = parse_entry_points(text, "w.whl", "e").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[1],
            EntryPoint {
                name: "bar".into(),
                module: "pkg".into(),
                attr: "App.run".into(),
                extras: vec!["extra1".into(), "extra2".into()]
            }
        );
        assert_eq!(g[0].name, "baz");
        for bad in ["x/y = a:b", "x = a", "x = a:b; import os", "x = a b:c", ".. = a:b", "x = a:"] {
            let e = parse_entry_points(&format!("[console_scripts]\n{bad}\n"), "w.whl", "e").unwrap_err();
            assert_eq!(e.kind(), "invalid_entry_point", "{bad}");
        }
    }

    #[test]
    fn shebangs() {
        assert_eq!(shebang(Path::new("/srv/app/venv/bin/python")), b"#!/srv/app/venv/bin/python");
        let spaced = shebang(Path::new("/srv/my app/venv/bin/python"));
        assert_eq!(spaced, b"#!/bin/sh\n'''exec' '/srv/my app/venv/bin/python' \"$0\" \"$@\"\n' '''");
        let long = format!("/{}/bin/python", "x".repeat(120));
        assert!(shebang(Path::new(&long)).starts_with(b"#!/bin/sh\n"));
        let quote = shebang(Path::new("/it's here/python"));
        let want: &[u8] = b"'/it'\"'\"'s here/python'";
        assert!(quote.windows(want.len()).any(|w| w == want));
        assert_eq!(python_shebang_end(b"#!python\nprint(1)", false), Some(8));
        assert_eq!(python_shebang_end(b"#!pythonw\r\nx", false), Some(9));
        assert_eq!(python_shebang_end(b"#!python", true), Some(8));
        assert_eq!(python_shebang_end(b"#!python3\n", false), None);
        assert_eq!(python_shebang_end(b"#!/usr/bin/env python\n", false), None);
    }

    #[test]
    fn record_paths() {
        let site = Path::new("lib/python3.11/site-packages");
        assert_eq!(record_path(&site.join("pkg/a.py"), site), "pkg/a.py");
        assert_eq!(record_path(Path::new("bin/tool"), site), "../../../bin/tool");
        assert_eq!(record_path(Path::new("share/x/README"), site), "../../../share/x/README");
    }
}
