//! Packs a gathered [`Release`] into a signed bundle: `manifest.yaml`, its minisign signature, then
//! every payload file in path order, written to a temporary file beside the target and renamed into
//! place only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bundle_core::archive::{ArchiveWriter, Packing};
use bundle_core::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use bundle_core::signature::{SecretKey, TrustedInfo};

use crate::release::Release;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot sign: {0}")]
    Sign(#[from] bundle_core::signature::SignatureError),
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub bundle: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub manifest_sha256: String,
    pub entries: u64,
    pub payload_bytes: u64,
    pub key_id: String,
}

/// The bundle's file name: `<app>-<version>.bundle.tar.gz`.
pub fn bundle_file_name(app: &str, version: &str) -> String {
    format!("{app}-{version}.bundle.tar.gz")
}

/// Writes the bundle into `out_dir`. `mtime` goes on every entry (`SOURCE_DATE_EPOCH`, or 0).
pub fn build(release: &Release, key: &SecretKey, out_dir: &Path, mtime: u64) -> Result<Built, BuildError> {
    let m = &release.manifest;
    let manifest_bytes = m.to_yaml();
    let info = TrustedInfo { app: m.app.clone(), version: m.version.clone(), sequence: m.sequence };
    let signature = key.sign(&manifest_bytes, &info.format())?;
    let sig_bytes = signature.to_minisign().into_bytes();

    let target = out_dir.join(bundle_file_name(&m.app, &m.version));
    let tmp = out_dir.join(format!(".{}.partial", bundle_file_name(&m.app, &m.version)));
    let werr = |source| BuildError::Write { path: tmp.clone(), source };
    std::fs::create_dir_all(out_dir).map_err(|source| BuildError::Write { path: out_dir.to_path_buf(), source })?;
    let result = (|| {
        let file = File::create(&tmp).map_err(werr)?;
        let mut ar = ArchiveWriter::new(BufWriter::with_capacity(1 << 20, file), mtime).map_err(werr)?;
        ar.add_file(MANIFEST_NAME, 0o644, manifest_bytes.len() as u64, &mut &manifest_bytes[..], Packing::Compress).map_err(werr)?;
        ar.add_file(SIGNATURE_NAME, 0o644, sig_bytes.len() as u64, &mut &sig_bytes[..], Packing::Compress).map_err(werr)?;
        for src in &release.sources {
            let rerr = |source| BuildError::Read { path: src.fs_path.clone(), source };
            let mut f = File::open(&src.fs_path).map_err(rerr)?;
            ar.add_file(&src.entry.path, src.entry.mode_bits(), src.entry.size, &mut f, Packing::for_path(&src.entry.path))
                .map_err(rerr)?;
        }
        let mut w = ar.finish().map_err(werr)?;
        w.flush().map_err(werr)?;
        let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target).map_err(|source| BuildError::Write { path: target.clone(), source })?;
    let (sha256, bytes) = bundle_core::hash::hash_file(&target).map_err(|source| BuildError::Read { path: target.clone(), source })?;
    Ok(Built {
        bundle: target,
        bytes,
        sha256,
        manifest_sha256: bundle_core::hash::sha256_hex(&manifest_bytes),
        entries: m.payload.entries,
        payload_bytes: m.payload.bytes,
        key_id: key.key_id().to_string(),
    })
}
