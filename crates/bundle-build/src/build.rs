//! Packs a gathered [`Release`] into a signed bundle: `manifest.yaml`, its minisign signature, then
//! every payload file in path order. The same writer makes an unsigned bundle (no signature entry,
//! `build --unsigned`) and, from one, the signed bundle (`sign`): the payload then comes from the
//! unsigned archive instead of the spec's files, and the bytes are those of a direct build. Everything is written into a private temporary directory beside
//! the target and renamed into place only when complete. With a split size, the bundle is written as
//! parts plus a signed parts index (see `bundle_core::split`).
//!
//! A whole bundle is written by one thread that only compresses and copies, while a second one
//! hashes what it wrote (the bundle's sha256 costs as much as the rest of the stored-content path),
//! and the kernel is asked to start writing it to disk every few tens of MB, so the final fsync has
//! little left to wait for.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bundle_core::archive::{AddError, ArchiveSink, ArchiveWriter, Packing};
use bundle_core::manifest::{Base, Manifest, MANIFEST_NAME, SIGNATURE_NAME};
use bundle_core::signature::{SecretKey, Signature, TrustedInfo, SIGNATURE_UNTRUSTED_COMMENT};
use bundle_core::split::{PartsIndex, SplitWriter, PARTS_FORMAT};
use bundle_core::unsigned::{manifest_file_name, unsigned_file_name, UnsignedBundle, UnsignedError};

use crate::release::Release;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A file the bundle format cannot hold (`check` refuses it first; see `check_storable`).
    #[error("cannot write {path} into the bundle: {reason}")]
    Unstorable { path: PathBuf, reason: String },
    #[error("cannot sign: {0}")]
    Sign(#[from] bundle_core::signature::SignatureError),
    #[error(transparent)]
    Unsigned(#[from] UnsignedError),
    #[error("an unsigned bundle is written whole; split it when signing (`bundle-build sign --split-size`)")]
    UnsignedSplit,
}

/// Where the payload entries come from.
#[derive(Debug, Clone, Copy)]
pub enum PayloadSource<'a> {
    /// The spec's files, gathered.
    Release(&'a Release),
    /// An unsigned bundle's entries, checked against its manifest while copied.
    Unsigned(&'a UnsignedBundle),
}

/// How the bundle is signed.
#[derive(Debug, Clone, Copy)]
pub enum Signing<'a> {
    /// With our key: the manifest and, for a split bundle, the parts index.
    Key(&'a SecretKey),
    /// A signature of the manifest made elsewhere and already checked by the caller. Its untrusted
    /// comment is replaced by ours (it is not signed), so the bundle's bytes are those of a direct
    /// build. A split bundle's index is left for the signer to sign (`Built::index_signature_needed`).
    Given(&'a Signature),
    /// No signature: `<app>-<version>.unsigned.tar.gz` and `<app>-<version>.manifest.yaml` beside it.
    Unsigned,
}

/// How to write the bundle.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// Time stamp of every entry (`SOURCE_DATE_EPOCH`, or 0).
    pub mtime: u64,
    /// Cut the bundle into parts of this many bytes.
    pub split_size: Option<u64>,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    /// The bundle, or for a split bundle its parts index.
    pub bundle: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub manifest_sha256: String,
    pub entries: u64,
    pub payload_bytes: u64,
    /// The signing key's id (null for an unsigned bundle).
    pub key_id: Option<String>,
    /// The parts of a split bundle, in order.
    pub parts: Vec<PathBuf>,
    /// Whether the bundle carries its signature (false for `build --unsigned`).
    pub signed: bool,
    /// The trusted comment the manifest is (to be) signed with.
    pub trusted_comment: String,
    /// For an unsigned bundle: the manifest to sign, written beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
    /// A split bundle signed with a signature made elsewhere: `NAME.parts` still needs its
    /// signature (`NAME.parts.minisig`, same trusted comment), added with `bundle-build sign NAME.parts`.
    pub index_signature_needed: bool,
}

/// The bundle's file name: `<app>-<version>.bundle.tar.gz`.
/// The `base` of a delta bundle of `m` against the full bundle `base` (id `base_id`): every file
/// of `m` whose sha256 the base also carries (under any path) is left out. `None` when nothing is
/// shared.
pub fn delta_base(m: &Manifest, base: &Manifest, base_id: &str) -> Option<Base> {
    let carried: std::collections::HashSet<(&str, u64)> =
        base.files.iter().map(|f| (f.sha256.as_str(), f.size)).collect();
    let mut omitted: Vec<String> =
        m.files.iter().filter(|f| carried.contains(&(f.sha256.as_str(), f.size))).map(|f| f.path.clone()).collect();
    omitted.sort();
    (!omitted.is_empty()).then(|| Base {
        app: base.app.clone(),
        version: base.version.clone(),
        bundle_id: base_id.to_string(),
        omitted,
    })
}

pub fn bundle_file_name(app: &str, version: &str) -> String {
    format!("{app}-{version}.bundle.tar.gz")
}

/// What went wrong adding an entry, named for what it is: reading the source at `fs_path`, writing
/// the bundle, or a file the format cannot hold.
fn add_err(fs_path: &Path) -> impl FnOnce(AddError) -> BuildError {
    let fs_path = fs_path.to_path_buf();
    move |e: AddError| match e {
        AddError::Read(source) => BuildError::Read { path: fs_path, source },
        AddError::Write(source) => BuildError::Write { path: PathBuf::from("<bundle>"), source },
        AddError::Unstorable { path, reason } => {
            BuildError::Unstorable { path: format!("{} (as {path})", fs_path.display()).into(), reason }
        }
    }
}

/// Writes the archive into `out` (which should buffer: the archive writer makes many small writes)
/// and returns it. Without `sig_bytes` there is no signature entry (an unsigned bundle).
fn write_archive<W: ArchiveSink>(
    manifest_bytes: &[u8],
    sig_bytes: Option<&[u8]>,
    payload: PayloadSource<'_>,
    mtime: u64,
    out: W,
) -> Result<W, BuildError> {
    let werr = |source| BuildError::Write { path: PathBuf::from("<bundle>"), source };
    let mut ar = ArchiveWriter::new(out, mtime).map_err(werr)?;
    let generated = Path::new("<generated>");
    ar.add_file(MANIFEST_NAME, 0o644, manifest_bytes.len() as u64, &mut &manifest_bytes[..], Packing::Compress)
        .map_err(add_err(generated))?;
    if let Some(sig_bytes) = sig_bytes {
        ar.add_file(SIGNATURE_NAME, 0o644, sig_bytes.len() as u64, &mut &sig_bytes[..], Packing::Compress)
            .map_err(add_err(generated))?;
    }
    match payload {
        PayloadSource::Release(release) => add_release_files(release, &mut ar)?,
        PayloadSource::Unsigned(unsigned) => unsigned.copy_payload(&mut ar)?,
    }
    ar.finish().map_err(werr)
}

fn add_release_files<W: ArchiveSink>(release: &Release, ar: &mut ArchiveWriter<W>) -> Result<(), BuildError> {
    let generated = Path::new("<generated>");
    for src in &release.sources {
        let e = &src.entry;
        if release.manifest.is_omitted(&e.path) {
            continue;
        }
        let packing = Packing::for_path(&e.path);
        match &src.content {
            Some(bytes) => {
                ar.add_file(&e.path, e.mode_bits(), e.size, &mut &bytes[..], packing).map_err(add_err(generated))?
            }
            None => {
                let mut f = File::open(&src.fs_path)
                    .map_err(|source| BuildError::Read { path: src.fs_path.clone(), source })?;
                ar.add_file(&e.path, e.mode_bits(), e.size, &mut f, packing).map_err(add_err(&src.fs_path))?;
            }
        }
    }
    Ok(())
}

/// Bytes between two writeback requests: large enough that each request is one big sequential
/// write, small enough that little is left for the final fsync.
const WRITEBACK_STEP: u64 = 32 << 20;

/// The bundle file, handed to the kernel for writing to disk while the rest is still being produced:
/// every [`WRITEBACK_STEP`] bytes the range just written is submitted for writeback
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which starts the I/O without waiting for it). The disk
/// then works during the build instead of after it, and the final fsync only waits for the tail.
struct EarlyWriteback {
    file: File,
    written: u64,
    submitted: u64,
}

impl EarlyWriteback {
    fn new(file: File) -> Self {
        EarlyWriteback { file, written: 0, submitted: 0 }
    }

    fn submit(&mut self) {
        // Only a hint: a failure still ends in the fsync, which reports any real error.
        bundle_core::durable::start_writeback(&self.file, self.submitted, self.written - self.submitted);
        self.submitted = self.written;
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.submitted >= WRITEBACK_STEP {
            self.submit();
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Size of each write to the bundle file.
const WRITE_BLOCK: usize = 1 << 20;

/// Writes the bundle into `out_dir`.
pub fn build(release: &Release, key: &SecretKey, out_dir: &Path, opts: &BuildOptions) -> Result<Built, BuildError> {
    let manifest_bytes = release.manifest.to_yaml();
    write_bundle(&release.manifest, &manifest_bytes, PayloadSource::Release(release), Signing::Key(key), out_dir, opts)
}

/// The trusted comment a bundle's manifest (and parts index) is signed with.
pub fn trusted_info(m: &Manifest) -> TrustedInfo {
    TrustedInfo { app: m.app.clone(), version: m.version.clone(), sequence: m.sequence }
}

/// Writes a bundle of `manifest` (serialised as `manifest_bytes`) and `payload` into `out_dir`,
/// signed as `signing` says.
pub fn write_bundle(
    m: &Manifest,
    manifest_bytes: &[u8],
    payload: PayloadSource<'_>,
    signing: Signing<'_>,
    out_dir: &Path,
    opts: &BuildOptions,
) -> Result<Built, BuildError> {
    let info = trusted_info(m);
    let signature = match signing {
        Signing::Key(key) => Some(key.sign(manifest_bytes, &info.format())?),
        Signing::Given(sig) => {
            Some(Signature { untrusted_comment: SIGNATURE_UNTRUSTED_COMMENT.to_string(), ..sig.clone() })
        }
        Signing::Unsigned if opts.split_size.is_some() => return Err(BuildError::UnsignedSplit),
        Signing::Unsigned => None,
    };
    let sig_bytes = signature.as_ref().map(|s| s.to_minisign().into_bytes());
    let name = match signing {
        Signing::Unsigned => unsigned_file_name(&m.app, &m.version),
        _ => bundle_file_name(&m.app, &m.version),
    };
    let manifest_sha256 = bundle_core::hash::sha256_hex(manifest_bytes);
    let index_key = match signing {
        Signing::Key(key) => Some(key),
        _ => None,
    };

    std::fs::create_dir_all(out_dir).map_err(|source| BuildError::Write { path: out_dir.to_path_buf(), source })?;
    let tmp = out_dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(write_error(&tmp))?;
    let out = Output {
        tmp: &tmp,
        name: &name,
        manifest: m,
        manifest_bytes,
        sig_bytes: sig_bytes.as_deref(),
        mtime: opts.mtime,
    };
    let result = match opts.split_size {
        None => write_whole(&out, payload, signature.is_none()),
        Some(part_size) => write_parts(&out, payload, part_size, &manifest_sha256, index_key, &info),
    };
    let (files, sha256, bytes) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    for f in &files {
        std::fs::rename(tmp.join(f), out_dir.join(f)).map_err(write_error(&out_dir.join(f)))?;
    }
    let _ = std::fs::remove_dir(&tmp);
    let (bundle, parts) = match opts.split_size {
        None => (out_dir.join(&name), Vec::new()),
        Some(_) => (
            out_dir.join(format!("{name}.parts")),
            files
                .iter()
                .filter(|f| !f.ends_with(".parts") && !f.ends_with(".minisig"))
                .map(|f| out_dir.join(f))
                .collect(),
        ),
    };
    Ok(Built {
        bundle,
        bytes,
        sha256,
        manifest_sha256,
        entries: m.payload.entries,
        payload_bytes: m.payload.bytes,
        key_id: signature.as_ref().map(|s| s.key_id.to_string()),
        parts,
        signed: signature.is_some(),
        trusted_comment: info.format(),
        manifest: signature.is_none().then(|| out_dir.join(manifest_file_name(&m.app, &m.version))),
        index_signature_needed: opts.split_size.is_some() && index_key.is_none(),
    })
}

/// Where and what [`write_bundle`] writes: the temporary directory and the bundle's name in it, and
/// the manifest (with its signature) that opens the archive.
struct Output<'a> {
    tmp: &'a Path,
    name: &'a str,
    manifest: &'a Manifest,
    manifest_bytes: &'a [u8],
    sig_bytes: Option<&'a [u8]>,
    mtime: u64,
}

/// The files written into the temporary directory, and the bundle's sha256 and size.
type Written = (Vec<String>, String, u64);

/// An io error while writing under `path`.
fn write_error(path: &Path) -> impl Fn(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Write { path: path.clone(), source }
}

/// One `.tar.gz` file (and, when unsigned, the manifest beside it for signing elsewhere).
fn write_whole(o: &Output<'_>, payload: PayloadSource<'_>, unsigned: bool) -> Result<Written, BuildError> {
    let (tmp, name, m, manifest_bytes) = (o.tmp, o.name, o.manifest, o.manifest_bytes);
    // Hashed as it is written (re-reading a multi-gigabyte bundle would double the work),
    // on a second thread so that this one only produces and writes bytes.
    let file = EarlyWriteback::new(File::create(tmp.join(name)).map_err(write_error(tmp))?);
    let out = bundle_core::hash::ThreadedHashWriter::new(file, WRITE_BLOCK);
    let out = write_archive(manifest_bytes, o.sig_bytes, payload, o.mtime, out)?;
    let (written, sha, size) = out.finish().map_err(write_error(tmp))?;
    written.file.sync_all().map_err(write_error(tmp))?;
    let mut files = vec![name.to_string()];
    if unsigned {
        let mname = manifest_file_name(&m.app, &m.version);
        std::fs::write(tmp.join(&mname), manifest_bytes).map_err(write_error(tmp))?;
        files.insert(0, mname);
    }
    Ok((files, sha, size))
}

/// Parts of at most `part_size` bytes and their index, signed with `index_key` when there is one.
fn write_parts(
    o: &Output<'_>,
    payload: PayloadSource<'_>,
    part_size: u64,
    manifest_sha256: &str,
    index_key: Option<&SecretKey>,
    info: &TrustedInfo,
) -> Result<Written, BuildError> {
    let (tmp, name, m, manifest_bytes) = (o.tmp, o.name, o.manifest, o.manifest_bytes);
    let sink = BufWriter::with_capacity(WRITE_BLOCK, SplitWriter::new(tmp, name, part_size));
    let sink = write_archive(manifest_bytes, o.sig_bytes, payload, o.mtime, sink)?;
    let sink = sink.into_inner().map_err(|e| write_error(tmp)(e.into_error()))?;
    let (parts, sha256, size) = sink.finish().map_err(write_error(tmp))?;
    let index = PartsIndex {
        format: PARTS_FORMAT,
        bundle: name.to_string(),
        app: m.app.clone(),
        version: m.version.clone(),
        sequence: m.sequence,
        manifest_sha256: manifest_sha256.to_string(),
        size,
        sha256: sha256.clone(),
        parts: parts.clone(),
    };
    let index_bytes = serde_yaml::to_string(&index).expect("serialises").into_bytes();
    let index_name = format!("{name}.parts");
    std::fs::write(tmp.join(&index_name), &index_bytes).map_err(write_error(tmp))?;
    let mut files: Vec<String> = parts.into_iter().map(|p| p.name).collect();
    if let Some(key) = index_key {
        let index_sig = key.sign(&index_bytes, &info.format())?.to_minisign();
        std::fs::write(tmp.join(format!("{index_name}.minisig")), index_sig).map_err(write_error(tmp))?;
        files.push(format!("{index_name}.minisig"));
    }
    files.push(index_name);
    Ok((files, sha256, size))
}
