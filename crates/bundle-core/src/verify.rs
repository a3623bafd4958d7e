//! The streaming verifier: the only code that can produce a [`VerifiedBundle`].
//!
//! It reads a bundle once, front to back, with memory independent of its size: the manifest and its
//! signature come first and are checked against the trusted keys before the manifest is even parsed;
//! then every payload entry is matched against the manifest (listed, once, same size and mode) and
//! hashed as it streams, optionally being written into a fresh staging directory. After the last
//! entry come the end-of-archive blocks, the gzip trailer (CRC and length) and the end of the file;
//! anything else is refused. A failure leaves the staging directory for the caller to delete.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::bufread::GzDecoder;
use sha2::{Digest, Sha256};

use crate::hash::{sha256_hex, to_hex};
use crate::manifest::{
    FileEntry, Manifest, ManifestError, MANIFEST_NAME, MAX_ENTRIES, MAX_MANIFEST_BYTES, SIGNATURE_NAME,
};
use crate::paths::BundlePath;
use crate::signature::{self, KeyId, PublicKey, Signature, SignatureError, TrustedInfo};
use crate::tarfmt::{self, Kind, BLOCK};

/// Caps that bound the work a hostile bundle can cause.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_signature_bytes: u64,
    pub max_entries: u64,
    /// Largest total payload a manifest may declare.
    pub max_total_bytes: u64,
    /// Zero padding accepted after the end-of-archive marker (GNU tar pads to its record size).
    pub max_trailing_zeros: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            max_signature_bytes: 4096,
            max_entries: MAX_ENTRIES,
            max_total_bytes: 1 << 40,
            max_trailing_zeros: 1 << 20,
        }
    }
}

/// Why a bundle was refused. Every variant but [`VerifyError::Write`] means "do not trust this file".
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read bundle {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("bundle {0} is not a regular file")]
    NotRegular(PathBuf),
    #[error("signature check failed: {0}")]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// A structural or content problem; `entry` names the archive entry when there is one.
    #[error("{}{message}", entry.as_ref().map(|e| format!("entry `{e}`: ")).unwrap_or_default())]
    Bundle { kind: &'static str, entry: Option<String>, message: String },
    /// Writing the verified content into staging failed (disk full, permissions): not the bundle's fault.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl VerifyError {
    /// A stable, machine-readable name for the failure (`--json` `error.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::Open { .. } => "bundle_unreadable",
            VerifyError::NotRegular(_) => "bundle_not_regular_file",
            VerifyError::Signature(e) => e.kind(),
            VerifyError::Manifest(_) => "invalid_manifest",
            VerifyError::Bundle { kind, .. } => kind,
            VerifyError::Write { .. } => "staging_write_failed",
        }
    }

    fn bundle(kind: &'static str, entry: Option<&str>, message: impl Into<String>) -> Self {
        VerifyError::Bundle { kind, entry: entry.map(str::to_string), message: message.into() }
    }
}

/// A bundle whose signature, manifest and every payload byte have been checked.
/// Only [`verify_file`] and [`verify_reader`] construct it.
#[derive(Debug)]
pub struct VerifiedBundle {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature: Signature,
    key_id: KeyId,
    info: TrustedInfo,
    dir: Option<PathBuf>,
    compressed_bytes: u64,
    bundle_sha256: String,
    parts: Option<usize>,
}

impl VerifiedBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    /// The key that signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    /// App, version and release sequence from the signed trusted comment.
    pub fn trusted(&self) -> &TrustedInfo {
        &self.info
    }
    /// SHA-256 of the signed manifest, which pins every payload byte: the bundle's identity.
    pub fn id(&self) -> String {
        sha256_hex(&self.manifest_bytes)
    }
    /// Where the verified payload was written, if a directory was given.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
    /// Path of a payload file in the verified directory.
    pub fn path_of(&self, bundle_path: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        self.manifest.file(bundle_path).map(|f| dir.join(&f.path))
    }
    /// Size of the bundle file as read.
    pub fn compressed_bytes(&self) -> u64 {
        self.compressed_bytes
    }
    /// sha256 of the bundle file as read (of the parts joined, for a split bundle).
    pub fn bundle_sha256(&self) -> &str {
        &self.bundle_sha256
    }
    /// Number of parts, for a split bundle.
    pub fn parts(&self) -> Option<usize> {
        self.parts
    }
}

/// Verifies the bundle at `path`. With `dest`, an existing empty directory, the manifest, its
/// signature and every payload file are written there as they are checked.
///
/// `path` may also name a split bundle (`NAME.001`, `NAME.parts` or the directory holding them): the
/// signed parts index is checked first, then the parts are read as one stream.
pub fn verify_file(
    path: &Path,
    trusted: &[PublicKey],
    dest: Option<&Path>,
    limits: &Limits,
) -> Result<VerifiedBundle, VerifyError> {
    verify_file_with_progress(path, trusted, dest, limits, &|_| {})
}

/// [`verify_file`], calling `progress` with the number of bundle bytes read so far.
pub fn verify_file_with_progress(
    path: &Path,
    trusted: &[PublicKey],
    dest: Option<&Path>,
    limits: &Limits,
    progress: &dyn Fn(u64),
) -> Result<VerifiedBundle, VerifyError> {
    match crate::split::locate_index(path) {
        Some(index_path) => {
            let (index, dir) = read_parts_index(&index_path, trusted)?;
            let reader = crate::split::PartsReader::new(&dir, index.parts.clone());
            let mut v = match verify_stream(reader, trusted, dest, limits, progress) {
                Ok(v) => v,
                Err(e @ VerifyError::Write { .. }) => return Err(e),
                // Damage is often noticed by the decompressor before the part's end: name the part.
                Err(e) => return Err(damaged_part(&dir, &index).unwrap_or(e)),
            };
            if v.id() != index.manifest_sha256 || v.bundle_sha256 != index.sha256 {
                return Err(VerifyError::bundle("parts_mismatch", None, "the parts index belongs to another bundle"));
            }
            v.parts = Some(index.parts.len());
            Ok(v)
        }
        None => verify_stream(open_bundle(path)?, trusted, dest, limits, progress),
    }
}

/// Total size of the bundle at `path` (all parts of a split bundle), for progress bars.
pub fn bundle_size(path: &Path) -> Option<u64> {
    match crate::split::locate_index(path) {
        Some(index) => {
            let text = std::fs::read_to_string(index).ok()?;
            serde_yaml::from_str::<crate::split::PartsIndex>(&text).ok().map(|i| i.size)
        }
        None => std::fs::metadata(path).ok().map(|m| m.len()),
    }
}

/// The first part that is missing or differs from the signed index, as the error to report.
fn damaged_part(dir: &Path, index: &crate::split::PartsIndex) -> Option<VerifyError> {
    let n = index.parts.len();
    for (i, part) in index.parts.iter().enumerate() {
        let which = format!("part {} of {n} ({})", i + 1, part.name);
        let path = dir.join(&part.name);
        if crate::input::open_regular(&path).is_err() {
            return Some(VerifyError::bundle(
                "missing_part",
                None,
                format!("{which} cannot be read; copy that part again"),
            ));
        }
        match crate::hash::hash_file(&path) {
            Ok((sha, size)) if sha == part.sha256 && size == part.size => {}
            _ => {
                return Some(VerifyError::bundle(
                    "damaged_part",
                    None,
                    format!(
                        "{which} is damaged (its size or sha256 differs from the signed index); copy that part again"
                    ),
                ))
            }
        }
    }
    None
}

/// Reads and checks `NAME.parts` against `NAME.parts.minisig`; returns it and the parts' directory.
fn read_parts_index(
    index_path: &Path,
    trusted: &[PublicKey],
) -> Result<(crate::split::PartsIndex, PathBuf), VerifyError> {
    let read = |p: &Path, cap: u64| -> Result<Vec<u8>, VerifyError> {
        let f = open_bundle(p)?;
        let mut bytes = Vec::new();
        f.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| VerifyError::Open { path: p.to_path_buf(), source })?;
        if bytes.len() as u64 > cap {
            return Err(VerifyError::bundle("limit", None, format!("{} is larger than {cap} bytes", p.display())));
        }
        Ok(bytes)
    };
    let index_bytes = read(index_path, crate::split::MAX_INDEX_BYTES)?;
    let sig_path = PathBuf::from(format!("{}.minisig", index_path.display()));
    let sig_bytes = read(&sig_path, crate::signature::MAX_SIGNATURE_BYTES as u64)?;
    let signature = Signature::parse_bytes(&sig_bytes, &sig_path.display().to_string())?;
    signature::verify(&index_bytes, &signature, trusted)?;
    let info = TrustedInfo::parse(&signature.trusted_comment)?;
    let index: crate::split::PartsIndex =
        std::str::from_utf8(&index_bytes).ok().and_then(|t| serde_yaml::from_str(t).ok()).ok_or_else(|| {
            VerifyError::bundle("invalid_parts_index", None, format!("{} is not a parts index", index_path.display()))
        })?;
    if index.format != crate::split::PARTS_FORMAT
        || info.app != index.app
        || info.version != index.version
        || info.sequence != index.sequence
    {
        return Err(VerifyError::bundle(
            "invalid_parts_index",
            None,
            "the parts index and its signed trusted comment disagree",
        ));
    }
    index.check_names().map_err(|m| VerifyError::bundle("invalid_parts_index", None, m))?;
    let dir = index_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok((index, dir))
}

/// Opens a bundle, refusing (without blocking) anything that is not a regular file.
fn open_bundle(path: &Path) -> Result<File, VerifyError> {
    crate::input::open_regular(path).map_err(|e| match e {
        crate::input::OpenError::NotRegular => VerifyError::NotRegular(path.to_path_buf()),
        crate::input::OpenError::Io(source) => VerifyError::Open { path: path.to_path_buf(), source },
    })
}

/// Counts the bytes read from the bundle file and reports progress every few MiB.
struct Counting<'p, R> {
    inner: R,
    count: u64,
    reported: u64,
    progress: &'p dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count - self.reported >= 4 << 20 || n == 0 {
            self.reported = self.count;
            (self.progress)(self.count);
        }
        Ok(n)
    }
}

/// Turns a read error inside the gzip/tar stream into a verification failure.
fn read_error(e: io::Error, entry: Option<&str>) -> VerifyError {
    if let Some(part) = e.get_ref().and_then(|inner| inner.downcast_ref::<crate::split::PartError>()) {
        return VerifyError::bundle(part.kind, None, part.message.clone());
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        VerifyError::bundle("truncated", entry, "the bundle ends early (truncated copy?); copy it again")
    } else {
        VerifyError::bundle("corrupt", entry, format!("the compressed stream is corrupt ({e}); copy the bundle again"))
    }
}

/// See [`verify_file`].
pub fn verify_reader<R: Read>(
    reader: R,
    trusted: &[PublicKey],
    dest: Option<&Path>,
    limits: &Limits,
) -> Result<VerifiedBundle, VerifyError> {
    verify_stream(reader, trusted, dest, limits, &|_| {})
}

fn verify_stream<R: Read>(
    reader: R,
    trusted: &[PublicKey],
    dest: Option<&Path>,
    limits: &Limits,
    progress: &dyn Fn(u64),
) -> Result<VerifiedBundle, VerifyError> {
    let hashing = crate::hash::ThreadedHashReader::new(reader);
    let counting = Counting { inner: hashing, count: 0, reported: 0, progress };
    let mut gz = GzDecoder::new(BufReader::with_capacity(1 << 20, counting));
    let mut block = [0u8; BLOCK];

    // 1. The manifest, then its signature, checked before anything else is believed.
    let Head { manifest, manifest_bytes, sig_bytes, signature, key_id, info } =
        read_head(&mut gz, &mut block, trusted, limits)?;
    if let Some(dir) = dest {
        write_whole(dir, MANIFEST_NAME, &manifest_bytes, 0o644)?;
        write_whole(dir, SIGNATURE_NAME, &sig_bytes, 0o644)?;
    }

    // 2. The payload, entry by entry.
    let listing = Listing::new(&manifest);
    let mut seen: HashSet<String> = HashSet::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let Some(header) = next_header(&mut gz, &mut block)? else {
            gz.read_exact(&mut block).map_err(|e| read_error(e, None))?;
            if !tarfmt::is_zero_block(&block) {
                return Err(VerifyError::bundle("corrupt", None, "a lone zero block in the middle of the archive"));
            }
            break;
        };
        if let Some((path, entry)) = listing.check(&header, &mut seen)? {
            copy_entry(&mut gz, &mut buf, &path, entry, dest)?;
        }
    }
    check_all_present(&manifest, &seen)?;

    // 3. Only zero padding may follow, then the gzip trailer (read_to_end checks CRC and length),
    //    then the end of the file.
    read_zero_tail(&mut gz, &mut buf, limits)?;
    let mut inner = gz.into_inner();
    let rest = inner.fill_buf().map_err(|e| read_error(e, None))?;
    if !rest.is_empty() {
        return Err(VerifyError::bundle("trailing_data", None, "bytes after the end of the compressed stream"));
    }
    let counting = inner.into_inner();
    let compressed_bytes = counting.count;
    let (bundle_sha256, _) = counting.inner.finish();
    Ok(VerifiedBundle {
        manifest,
        manifest_bytes,
        key_id,
        signature,
        info,
        dir: dest.map(Path::to_path_buf),
        compressed_bytes,
        bundle_sha256,
        parts: None,
    })
}

/// What the signed manifest allows in the archive: its files, and the directories they imply.
struct Listing<'m> {
    by_path: HashMap<&'m str, &'m FileEntry>,
    dirs: HashSet<String>,
}

impl<'m> Listing<'m> {
    fn new(manifest: &'m Manifest) -> Self {
        let by_path = manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let dirs = manifest
            .files
            .iter()
            .flat_map(|f| {
                BundlePath::parse(&f.path)
                    .map(|p| p.parents().map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        Listing { by_path, dirs }
    }

    /// Checks one archive entry's header against the listing (safe path, no special mode bits, seen
    /// once, listed with this size and mode). Returns the file's entry, or `None` for a directory.
    fn check(
        &self,
        header: &tarfmt::Header,
        seen: &mut HashSet<String>,
    ) -> Result<Option<(BundlePath, &'m FileEntry)>, VerifyError> {
        // GNU tar writes directory names with a trailing `/`.
        let raw_name = match header.kind {
            Kind::Directory => header.name.strip_suffix(b"/").unwrap_or(&header.name),
            Kind::File => &header.name[..],
        };
        let path =
            BundlePath::parse_bytes(raw_name).map_err(|e| VerifyError::bundle("unsafe_path", None, e.to_string()))?;
        let name = path.as_str();
        if header.mode & 0o7000 != 0 {
            return Err(VerifyError::bundle(
                "entry_mode",
                Some(name),
                format!("mode {:o} has setuid/setgid/sticky bits", header.mode),
            ));
        }
        if !seen.insert(name.to_string()) {
            return Err(VerifyError::bundle("duplicate_entry", Some(name), "appears twice in the archive"));
        }
        if header.kind == Kind::Directory {
            if !self.dirs.contains(name) || header.size != 0 {
                return Err(VerifyError::bundle(
                    "unlisted_entry",
                    Some(name),
                    "directory not implied by any listed file",
                ));
            }
            return Ok(None);
        }
        let Some(entry) = self.by_path.get(name).copied() else {
            return Err(VerifyError::bundle("unlisted_entry", Some(name), "not listed in the signed manifest"));
        };
        if header.size != entry.size {
            return Err(VerifyError::bundle(
                "size_mismatch",
                Some(name),
                format!("the archive says {} bytes, the manifest {}", header.size, entry.size),
            ));
        }
        if header.mode & 0o777 != entry.mode_bits() {
            return Err(VerifyError::bundle(
                "mode_mismatch",
                Some(name),
                format!("mode {:o}, the manifest says {}", header.mode & 0o777, entry.mode),
            ));
        }
        Ok(Some((path, entry)))
    }
}

/// Streams one file's content (and its tar padding) from the archive, hashing it and writing it
/// under `dest` when given; the sha256 must be the manifest's.
fn copy_entry<R: Read>(
    gz: &mut R,
    buf: &mut [u8],
    path: &BundlePath,
    entry: &FileEntry,
    dest: Option<&Path>,
) -> Result<(), VerifyError> {
    let name = path.as_str();
    let mut out = match dest {
        Some(dir) => Some(create_file(dir, path, entry.mode_bits())?),
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut left = entry.size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        gz.read_exact(&mut buf[..want]).map_err(|e| read_error(e, Some(name)))?;
        hasher.update(&buf[..want]);
        if let Some((file, file_path)) = out.as_mut() {
            file.write_all(&buf[..want]).map_err(|source| VerifyError::Write { path: file_path.clone(), source })?;
        }
        left -= want as u64;
    }
    let got = to_hex(&hasher.finalize());
    if got != entry.sha256 {
        return Err(VerifyError::bundle(
            "hash_mismatch",
            Some(name),
            format!("sha256 is {got}, the manifest says {}", entry.sha256),
        ));
    }
    let pad = (BLOCK - (entry.size % BLOCK as u64) as usize) % BLOCK;
    gz.read_exact(&mut buf[..pad]).map_err(|e| read_error(e, Some(name)))?;
    if buf[..pad].iter().any(|&b| b != 0) {
        return Err(VerifyError::bundle("corrupt", Some(name), "non-zero padding after the entry's content"));
    }
    Ok(())
}

/// Every listed file was in the archive, except those a delta bundle omits (the caller supplies and
/// checks those from elsewhere).
fn check_all_present(manifest: &Manifest, seen: &HashSet<String>) -> Result<(), VerifyError> {
    let missing: Vec<&str> = manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !seen.contains(*p) && !manifest.is_omitted(p))
        .collect();
    match missing.first() {
        Some(first) => Err(VerifyError::bundle(
            "missing_entry",
            Some(first),
            format!("listed in the manifest but not in the archive ({} missing in all)", missing.len()),
        )),
        None => Ok(()),
    }
}

/// After the end-of-archive marker only zero blocks may follow (up to the limit), to the end of the
/// gzip member, whose trailer (CRC and length) the decoder checks on the way.
fn read_zero_tail<R: Read>(gz: &mut R, buf: &mut [u8], limits: &Limits) -> Result<(), VerifyError> {
    let mut zeros = 0u64;
    loop {
        let n = gz.read(buf).map_err(|e| read_error(e, None))?;
        if n == 0 {
            return Ok(());
        }
        zeros += n as u64;
        if buf[..n].iter().any(|&b| b != 0) || zeros > limits.max_trailing_zeros {
            return Err(VerifyError::bundle("trailing_data", None, "data after the end-of-archive marker"));
        }
    }
}

/// One payload file of a bundle, read WITHOUT any check (for `inspect --sbom`), at most `cap` bytes.
pub fn read_entry_unverified(path: &Path, wanted: &str, cap: u64) -> Result<Vec<u8>, VerifyError> {
    let (manifest, _) = read_unverified(path)?;
    let entry = manifest
        .file(wanted)
        .ok_or_else(|| VerifyError::bundle("missing_entry", Some(wanted), "not listed in the manifest"))?;
    if entry.size > cap {
        return Err(VerifyError::bundle("limit", Some(wanted), format!("{} bytes, more than {cap}", entry.size)));
    }
    let file: Box<dyn Read> = match crate::split::locate_index(path) {
        Some(index_path) => {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|source| VerifyError::Open { path: index_path.clone(), source })?;
            let index: crate::split::PartsIndex = serde_yaml::from_str(&text)
                .map_err(|e| VerifyError::bundle("invalid_parts_index", None, e.to_string()))?;
            index.check_names().map_err(|m| VerifyError::bundle("invalid_parts_index", None, m))?;
            Box::new(crate::split::PartsReader::new(index_path.parent().unwrap_or(Path::new(".")), index.parts))
        }
        None => Box::new(open_bundle(path)?),
    };
    let mut gz = GzDecoder::new(BufReader::new(file));
    let mut block = [0u8; BLOCK];
    let mut skip = vec![0u8; 1 << 16];
    loop {
        let Some(header) = next_header(&mut gz, &mut block)? else {
            return Err(VerifyError::bundle("missing_entry", Some(wanted), "not in the archive"));
        };
        let padded = header.size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if header.name == wanted.as_bytes() && header.size <= cap {
            let mut data = vec![0u8; header.size as usize];
            gz.read_exact(&mut data).map_err(|e| read_error(e, Some(wanted)))?;
            return Ok(data);
        }
        let mut left = padded;
        while left > 0 {
            let n = left.min(skip.len() as u64) as usize;
            gz.read_exact(&mut skip[..n]).map_err(|e| read_error(e, None))?;
            left -= n as u64;
        }
    }
}

/// A refused header as a verification failure. `raw_name` is attacker-chosen: it is escaped so it
/// cannot add lines or terminal codes to the message.
fn header_error(problem: tarfmt::HeaderProblem, raw_name: &[u8]) -> VerifyError {
    let name = format!("{:?}", String::from_utf8_lossy(raw_name));
    let kind = match problem {
        tarfmt::HeaderProblem::Type(_) => "entry_type",
        tarfmt::HeaderProblem::Pax(_) => "bad_pax_header",
        _ => "corrupt",
    };
    VerifyError::bundle(kind, Some(&name), problem.to_string())
}

/// The name field of a header block, up to its first NUL (for messages).
fn name_field(block: &[u8; BLOCK]) -> &[u8] {
    block[..tarfmt::NAME_LEN].split(|&b| b == 0).next().unwrap_or(&[])
}

/// Reads the next entry's header; `None` at a zero block (the caller checks the second one). A PAX
/// header is followed only in the one form the writer uses (`tarfmt`): a single `path` record with
/// a safe path too long for a ustar header, then the file or directory header it names, whose own
/// name field holds the path's first 100 bytes. The returned header carries the full path.
fn next_header<R: Read>(gz: &mut R, block: &mut [u8; BLOCK]) -> Result<Option<tarfmt::Header>, VerifyError> {
    gz.read_exact(block).map_err(|e| read_error(e, None))?;
    if tarfmt::is_zero_block(block) {
        return Ok(None);
    }
    let size = match tarfmt::parse_block(block).map_err(|p| header_error(p, name_field(block)))? {
        tarfmt::Block::Entry(header) => return Ok(Some(header)),
        tarfmt::Block::Pax { size } => size as usize,
    };
    let path = read_pax_path(gz, block, size)?;
    described_entry(gz, block, path).map(Some)
}

/// A PAX refusal for the entry `name`.
fn pax_error(why: &str, name: &[u8]) -> VerifyError {
    header_error(tarfmt::HeaderProblem::Pax(why.to_string()), name)
}

/// Reads the content of a PAX header of `size` bytes (at most one block): one `path` record, a safe
/// path that a ustar header could not hold.
fn read_pax_path<R: Read>(gz: &mut R, block: &mut [u8; BLOCK], size: usize) -> Result<Vec<u8>, VerifyError> {
    gz.read_exact(block).map_err(|e| read_error(e, None))?;
    if block[size..].iter().any(|&b| b != 0) {
        return Err(pax_error("non-zero padding after the PAX record", b"PAX header"));
    }
    let raw = tarfmt::parse_pax(&block[..size]).map_err(|p| header_error(p, b"PAX header"))?;
    let path = BundlePath::parse_bytes(raw).map_err(|e| VerifyError::bundle("unsafe_path", None, e.to_string()))?;
    let path = path.as_str().as_bytes().to_vec();
    if tarfmt::ustar_split(&path).is_some() {
        return Err(pax_error("a PAX `path` for a name that fits a ustar header (the writer never does that)", &path));
    }
    Ok(path)
}

/// Reads the header a PAX `path` describes: a file or directory whose own name field is the path's
/// first 100 bytes; returns it carrying the full path.
fn described_entry<R: Read>(gz: &mut R, block: &mut [u8; BLOCK], path: Vec<u8>) -> Result<tarfmt::Header, VerifyError> {
    gz.read_exact(block).map_err(|e| read_error(e, None))?;
    if tarfmt::is_zero_block(block) {
        return Err(pax_error("a PAX header with no entry after it", &path));
    }
    let mut header = match tarfmt::parse_block(block).map_err(|p| header_error(p, &path))? {
        tarfmt::Block::Entry(header) => header,
        tarfmt::Block::Pax { .. } => return Err(pax_error("a PAX header followed by another PAX header", &path)),
    };
    if !header.posix || header.prefixed || header.name != tarfmt::pax_name_field(&path) {
        return Err(pax_error("the entry's own name field is not the first 100 bytes of its PAX `path`", &path));
    }
    header.name = path;
    Ok(header)
}

/// The signed head of a bundle: manifest and signature, checked.
struct Head {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    sig_bytes: Vec<u8>,
    signature: Signature,
    key_id: KeyId,
    info: TrustedInfo,
}

fn read_head<R: Read>(
    gz: &mut R,
    block: &mut [u8; BLOCK],
    trusted: &[PublicKey],
    limits: &Limits,
) -> Result<Head, VerifyError> {
    let manifest_bytes = read_small_entry(gz, block, MANIFEST_NAME, limits.max_manifest_bytes)?;
    let sig_bytes = read_small_entry(gz, block, SIGNATURE_NAME, limits.max_signature_bytes)?;
    let signature = Signature::parse_bytes(&sig_bytes, SIGNATURE_NAME)?;
    let key_id = *signature::verify(&manifest_bytes, &signature, trusted)?.key_id();
    let info = TrustedInfo::parse(&signature.trusted_comment)?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    if info.app != manifest.app || info.version != manifest.version || info.sequence != manifest.sequence {
        return Err(VerifyError::bundle(
            "trusted_comment_mismatch",
            None,
            format!(
                "the signed trusted comment says {} {} (sequence {}) but the manifest says {} {} (sequence {})",
                info.app, info.version, info.sequence, manifest.app, manifest.version, manifest.sequence
            ),
        ));
    }
    if manifest.payload.entries > limits.max_entries || manifest.payload.bytes > limits.max_total_bytes {
        return Err(VerifyError::bundle("limit", None, "the manifest declares more entries or bytes than allowed"));
    }
    Ok(Head { manifest, manifest_bytes, sig_bytes, signature, key_id, info })
}

/// The signed manifest of a bundle, checked against `trusted`, reading only the start of the file.
/// For planning before the payload is streamed; the full [`verify_file`] checks it all again.
pub fn read_verified_manifest(
    path: &Path,
    trusted: &[PublicKey],
) -> Result<(Manifest, String, KeyId, TrustedInfo), VerifyError> {
    let mut split = None;
    let reader: Box<dyn Read> = match crate::split::locate_index(path) {
        Some(index_path) => {
            let (index, dir) = read_parts_index(&index_path, trusted)?;
            let reader = crate::split::PartsReader::new(&dir, index.parts.clone());
            split = Some((index, dir));
            Box::new(reader)
        }
        None => Box::new(open_bundle(path)?),
    };
    let mut gz = GzDecoder::new(BufReader::new(reader));
    let mut block = [0u8; BLOCK];
    let head = read_head(&mut gz, &mut block, trusted, &Limits::default()).map_err(|e| match &split {
        Some((index, dir)) => damaged_part(dir, index).unwrap_or(e),
        None => e,
    })?;
    Ok((head.manifest, sha256_hex(&head.manifest_bytes), head.key_id, head.info))
}

/// Reads an entry that must come at a fixed place (`manifest.yaml`, its signature) into memory.
fn read_small_entry<R: Read>(
    gz: &mut R,
    block: &mut [u8; BLOCK],
    expected: &str,
    cap: u64,
) -> Result<Vec<u8>, VerifyError> {
    gz.read_exact(block).map_err(|e| read_error(e, Some(expected)))?;
    let missing = || {
        VerifyError::bundle(
            if expected == SIGNATURE_NAME { "missing_signature" } else { "missing_manifest" },
            Some(expected),
            format!("`{expected}` must be entry {} of the archive", if expected == MANIFEST_NAME { 1 } else { 2 }),
        )
    };
    if tarfmt::is_zero_block(block) {
        return Err(missing());
    }
    let header = tarfmt::parse(block).map_err(|p| VerifyError::bundle("corrupt", Some(expected), p.to_string()))?;
    if header.name != expected.as_bytes() || header.kind != Kind::File {
        return Err(missing());
    }
    if header.size > cap {
        return Err(VerifyError::bundle(
            "limit",
            Some(expected),
            format!("{} bytes, more than the {cap} allowed", header.size),
        ));
    }
    let mut data = vec![0u8; header.size as usize];
    gz.read_exact(&mut data).map_err(|e| read_error(e, Some(expected)))?;
    let pad = (BLOCK - (data.len() % BLOCK)) % BLOCK;
    gz.read_exact(&mut block[..pad]).map_err(|e| read_error(e, Some(expected)))?;
    Ok(data)
}

/// Creates `dir/path` (and its parents) as a new file; `dir` is a fresh directory of ours and `path`
/// is a checked [`BundlePath`], so nothing here can land outside it or follow a planted link.
fn create_file(dir: &Path, path: &BundlePath, mode: u32) -> Result<(File, PathBuf), VerifyError> {
    let full = path.under(dir);
    let write_err = |source| VerifyError::Write { path: full.clone(), source };
    if let Some(parent) = full.parent() {
        fs::create_dir_all(parent).map_err(write_err)?;
    }
    let file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&full).map_err(write_err)?;
    // The umask may have narrowed the mode; the manifest's mode is what gets installed.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(write_err)?;
    Ok((file, full))
}

fn write_whole(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<(), VerifyError> {
    let path = BundlePath::parse(name).expect("fixed names are safe");
    let (mut file, full) = create_file(dir, &path, mode)?;
    file.write_all(data).map_err(|source| VerifyError::Write { path: full, source })
}

/// Reads the manifest and signature of a bundle WITHOUT checking them, for `inspect`. Nothing here
/// may be trusted; callers must say so.
pub fn read_unverified(path: &Path) -> Result<(Manifest, Signature), VerifyError> {
    let file: Box<dyn Read> = match crate::split::locate_index(path) {
        Some(index_path) => {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|source| VerifyError::Open { path: index_path.clone(), source })?;
            let index: crate::split::PartsIndex = serde_yaml::from_str(&text).map_err(|e| {
                VerifyError::bundle("invalid_parts_index", None, format!("{}: {e}", index_path.display()))
            })?;
            index.check_names().map_err(|m| VerifyError::bundle("invalid_parts_index", None, m))?;
            let dir = index_path.parent().unwrap_or(Path::new(".")).to_path_buf();
            Box::new(crate::split::PartsReader::new(&dir, index.parts))
        }
        None => Box::new(open_bundle(path)?),
    };
    let limits = Limits::default();
    let mut gz = GzDecoder::new(BufReader::new(file));
    let mut block = [0u8; BLOCK];
    let manifest_bytes = read_small_entry(&mut gz, &mut block, MANIFEST_NAME, limits.max_manifest_bytes)?;
    let sig_bytes = read_small_entry(&mut gz, &mut block, SIGNATURE_NAME, limits.max_signature_bytes)?;
    let signature = Signature::parse_bytes(&sig_bytes, SIGNATURE_NAME)?;
    Ok((Manifest::parse(&manifest_bytes)?, signature))
}
