//! `bundle-build sign`: signing away from the build machine. The input is an unsigned bundle from
//! `build --unsigned` (its manifest is signed, here with our key file or elsewhere with stock
//! `minisign -S`, a hardware token speaking that format, …) or, for a split bundle signed elsewhere,
//! its `NAME.parts` index. A signature made elsewhere is checked against the given public keys and
//! must carry exactly the trusted comment a direct build writes, so the signed bundle is byte for
//! byte the one `build --key` would have written from the same inputs.

use std::path::{Path, PathBuf};

use bundle_core::signature::{
    verify, PublicKey, SecretKey, Signature, SignatureError, TrustedInfo, SIGNATURE_UNTRUSTED_COMMENT,
};
use bundle_core::split::{PartsIndex, MAX_INDEX_BYTES};
use bundle_core::unsigned::{UnsignedBundle, UnsignedError};

use crate::build::{trusted_info, write_bundle, BuildError, BuildOptions, Built, PayloadSource, Signing};

/// What signs.
#[derive(Debug, Clone, Copy)]
pub enum SignWith<'a> {
    /// Our (opened) secret key.
    Key(&'a SecretKey),
    /// A `.minisig` made elsewhere, to be checked against these public keys.
    Signature { signature: &'a Signature, trusted: &'a [PublicKey] },
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Unsigned(#[from] UnsignedError),
    #[error("the signature does not verify with the given public key(s): {0}")]
    Signature(SignatureError),
    #[error("the signature's trusted comment is `{found}`, but this {what} must be signed with `{expected}` (a TAB between the fields); sign again with: minisign -S -m FILE -t \"$(printf '{printf}')\"")]
    TrustedComment { what: &'static str, found: String, expected: String, printf: String },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not a parts index: {reason}", path.display())]
    NotIndex { path: PathBuf, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

impl SignError {
    pub fn kind(&self) -> &'static str {
        match self {
            SignError::Unsigned(e) => e.kind(),
            SignError::Signature(e) => e.kind(),
            SignError::TrustedComment { .. } => "trusted_comment_mismatch",
            SignError::Build(_) => "build_failed",
            SignError::Read { .. } => "io",
            SignError::NotIndex { .. } => "invalid_parts_index",
            SignError::Write { .. } => "io",
        }
    }
}

/// Checks a signature made elsewhere over `message` and that its trusted comment is `expected`.
fn check_given(
    message: &[u8],
    sig: &Signature,
    trusted: &[PublicKey],
    expected: &TrustedInfo,
    what: &'static str,
) -> Result<(), SignError> {
    verify(message, sig, trusted).map_err(SignError::Signature)?;
    if TrustedInfo::parse(&sig.trusted_comment).ok().as_ref() != Some(expected) {
        let expected = expected.format();
        return Err(SignError::TrustedComment {
            what,
            found: sig.trusted_comment.escape_debug().to_string(),
            printf: expected.replace('\t', "\\t"),
            expected: expected.escape_debug().to_string(),
        });
    }
    Ok(())
}

/// Signs the unsigned bundle at `input` and writes the signed bundle (split when asked) into
/// `out_dir`. Nothing is written unless the signature checks out and every payload entry matches
/// the manifest.
pub fn sign_unsigned(
    input: &Path,
    with: SignWith<'_>,
    out_dir: &Path,
    split_size: Option<u64>,
) -> Result<Built, SignError> {
    let unsigned = UnsignedBundle::open(input)?;
    let m = unsigned.manifest();
    let signing = match with {
        SignWith::Key(key) => Signing::Key(key),
        SignWith::Signature { signature, trusted } => {
            check_given(unsigned.manifest_bytes(), signature, trusted, &trusted_info(m), "manifest")?;
            Signing::Given(signature)
        }
    };
    let opts = BuildOptions { mtime: unsigned.mtime(), split_size };
    write_bundle(m, unsigned.manifest_bytes(), PayloadSource::Unsigned(&unsigned), signing, out_dir, &opts).map_err(
        |e| match e {
            BuildError::Unsigned(e) => SignError::Unsigned(e),
            e => SignError::Build(e),
        },
    )
}

/// Adds `NAME.parts.minisig` beside the parts index `index_path` (a split bundle whose manifest was
/// signed elsewhere); returns the signature file written.
pub fn sign_index(index_path: &Path, with: SignWith<'_>) -> Result<PathBuf, SignError> {
    let bytes =
        std::fs::read(index_path).map_err(|source| SignError::Read { path: index_path.to_path_buf(), source })?;
    let not = |reason: String| SignError::NotIndex { path: index_path.to_path_buf(), reason };
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(not(format!("larger than {MAX_INDEX_BYTES} bytes")));
    }
    let index: PartsIndex = serde_yaml::from_slice(&bytes).map_err(|e| not(e.to_string()))?;
    let info = TrustedInfo { app: index.app.clone(), version: index.version.clone(), sequence: index.sequence };
    let signature = match with {
        SignWith::Key(key) => key.sign(&bytes, &info.format()).map_err(SignError::Signature)?,
        SignWith::Signature { signature, trusted } => {
            check_given(&bytes, signature, trusted, &info, "parts index")?;
            Signature { untrusted_comment: SIGNATURE_UNTRUSTED_COMMENT.to_string(), ..signature.clone() }
        }
    };
    let mut name = index_path.file_name().unwrap_or_default().to_os_string();
    name.push(".minisig");
    let out = index_path.with_file_name(name);
    let tmp = out.with_extension("minisig.partial");
    let werr = |source| SignError::Write { path: out.clone(), source };
    std::fs::write(&tmp, signature.to_minisign()).map_err(werr)?;
    std::fs::rename(&tmp, &out).map_err(werr)?;
    Ok(out)
}
