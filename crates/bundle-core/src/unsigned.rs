//! Unsigned bundles, for signing away from the build machine: the archive of a bundle without its
//! `manifest.yaml.minisig` entry (`bundle-build build --unsigned`). `bundle-build sign` reads one
//! back here, takes a signature of its manifest, and rewrites the archive with the signature in
//! second place; the writer being deterministic, the result is byte for byte the bundle a direct
//! build would have written. While copying, every payload entry is checked against the manifest
//! (path, order, size, mode, sha256), so only what the signed manifest describes is ever signed.
//!
//! Read with the `tar` crate, streaming (memory does not grow with the bundle): an unsigned bundle
//! comes from our own build, and what it holds is re-checked entry by entry against the manifest.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use crate::archive::{AddError, ArchiveSink, ArchiveWriter, Packing};
use crate::manifest::{Manifest, MANIFEST_NAME, MAX_MANIFEST_BYTES, SIGNATURE_NAME};

/// An unsigned bundle's file name: `<app>-<version>.unsigned.tar.gz`.
pub fn unsigned_file_name(app: &str, version: &str) -> String {
    format!("{app}-{version}.unsigned.tar.gz")
}

/// The manifest written beside an unsigned bundle for the signer: `<app>-<version>.manifest.yaml`.
pub fn manifest_file_name(app: &str, version: &str) -> String {
    format!("{app}-{version}.manifest.yaml")
}

#[derive(Debug, thiserror::Error)]
pub enum UnsignedError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not an unsigned bundle: {reason}; use the .unsigned.tar.gz written by `bundle-build build --unsigned`", path.display())]
    NotUnsigned { path: PathBuf, reason: String },
    #[error("{}: entry {entry} does not match the manifest: {reason}; the unsigned bundle was altered or damaged since it was built, build it again", path.display())]
    Mismatch { path: PathBuf, entry: String, reason: String },
    #[error("cannot write the signed bundle: {0}")]
    Write(io::Error),
}

impl UnsignedError {
    pub fn kind(&self) -> &'static str {
        match self {
            UnsignedError::Io { .. } => "io",
            UnsignedError::NotUnsigned { .. } => "not_unsigned_bundle",
            UnsignedError::Mismatch { .. } => "unsigned_bundle_mismatch",
            UnsignedError::Write(_) => "write",
        }
    }
}

/// An unsigned bundle on disk, its manifest read (not trusted: its signature is what is being made).
#[derive(Debug)]
pub struct UnsignedBundle {
    path: PathBuf,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    mtime: u64,
}

type Entries = tar::Archive<GzDecoder<BufReader<File>>>;

impl UnsignedBundle {
    /// Opens `path` and reads its first entry, which must be `manifest.yaml`.
    pub fn open(path: &Path) -> Result<Self, UnsignedError> {
        let not = |reason: String| UnsignedError::NotUnsigned { path: path.to_path_buf(), reason };
        let mut archive = open_archive(path)?;
        let mut entries = archive.entries().map_err(|e| not(e.to_string()))?;
        let mut first = entries.next().ok_or_else(|| not("it is empty".into()))?.map_err(|e| not(e.to_string()))?;
        let name = entry_path(&first).map_err(not)?;
        if name != MANIFEST_NAME {
            return Err(not(format!("its first entry is `{name}`, not `{MANIFEST_NAME}`")));
        }
        let mtime = first.header().mtime().map_err(|e| not(e.to_string()))?;
        let mut manifest_bytes = Vec::new();
        (&mut first).take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut manifest_bytes).map_err(|e| not(e.to_string()))?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| not(e.to_string()))?;
        Ok(UnsignedBundle { path: path.to_path_buf(), manifest_bytes, manifest, mtime })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact bytes to sign.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The entries' time stamp (`SOURCE_DATE_EPOCH` of the build).
    pub fn mtime(&self) -> u64 {
        self.mtime
    }

    /// Copies every payload entry into `ar`, in order, checking each against the manifest: the
    /// entries must be exactly the manifest's files, in its order, with its sizes, modes and sha256.
    pub fn copy_payload<W: ArchiveSink>(&self, ar: &mut ArchiveWriter<W>) -> Result<(), UnsignedError> {
        let not = |reason: String| UnsignedError::NotUnsigned { path: self.path.clone(), reason };
        let mismatch = |entry: &str, reason: String| UnsignedError::Mismatch {
            path: self.path.clone(),
            entry: entry.into(),
            reason,
        };
        let mut archive = open_archive(&self.path)?;
        let mut entries = archive.entries().map_err(|e| not(e.to_string()))?.skip(1);
        for want in &self.manifest.files {
            let mut entry = match entries.next() {
                Some(e) => e.map_err(|e| not(e.to_string()))?,
                None => return Err(mismatch(&want.path, "it is missing (the archive ends before it)".into())),
            };
            let name = entry_path(&entry).map_err(not)?;
            if name == SIGNATURE_NAME {
                return Err(not("it is already signed (it has a manifest.yaml.minisig entry)".into()));
            }
            if name != want.path {
                return Err(mismatch(&want.path, format!("found `{name}` in its place")));
            }
            let header = entry.header();
            let (size, mode) =
                (header.size().map_err(|e| not(e.to_string()))?, header.mode().map_err(|e| not(e.to_string()))?);
            if !header.entry_type().is_file() || size != want.size || mode & 0o7777 != want.mode_bits() {
                return Err(mismatch(
                    &want.path,
                    format!(
                        "a {:?} of {size} bytes, mode {:o}; the manifest says a file of {} bytes, mode {}",
                        header.entry_type(),
                        mode & 0o7777,
                        want.size,
                        want.mode
                    ),
                ));
            }
            let mut hashing = HashingReader { inner: &mut entry, hash: Sha256::new() };
            ar.add_file(&want.path, want.mode_bits(), want.size, &mut hashing, Packing::for_path(&want.path)).map_err(
                |e| match e {
                    AddError::Write(e) => UnsignedError::Write(e),
                    AddError::Read(e) => not(format!("entry {}: {e}", want.path)),
                    AddError::Unstorable { path, reason } => mismatch(&path, reason),
                },
            )?;
            let sha = crate::hash::to_hex(&hashing.hash.finalize());
            if sha != want.sha256 {
                return Err(mismatch(&want.path, format!("its sha256 is {sha}, the manifest says {}", want.sha256)));
            }
        }
        if let Some(extra) = entries.next() {
            let extra = extra.map_err(|e| not(e.to_string()))?;
            return Err(not(format!(
                "it has an entry `{}` the manifest does not list",
                entry_path(&extra).unwrap_or_default()
            )));
        }
        Ok(())
    }
}

fn open_archive(path: &Path) -> Result<Entries, UnsignedError> {
    let file = crate::input::open_regular(path).map_err(|e| UnsignedError::Io {
        path: path.to_path_buf(),
        source: match e {
            crate::input::OpenError::Io(e) => e,
            crate::input::OpenError::NotRegular => io::Error::other("not a regular file"),
        },
    })?;
    Ok(tar::Archive::new(GzDecoder::new(BufReader::with_capacity(1 << 20, file))))
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, String> {
    let bytes = entry.path_bytes();
    std::str::from_utf8(&bytes).map(str::to_string).map_err(|_| "an entry name is not UTF-8".to_string())
}

/// Hashes what is read through it.
struct HashingReader<'a, R: Read> {
    inner: &'a mut R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
