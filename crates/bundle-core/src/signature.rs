//! Ed25519 keys and signatures in minisign's file formats, so a site can check a manifest with the
//! stock `minisign -V` as well as with our tools.
//!
//! * Public key (`.pub`, 2 lines): `untrusted comment: minisign public key <ID>`, then base64 of
//!   `"Ed"` ‖ key id (8) ‖ public key (32).
//! * Secret key (`.key`, 2 lines): base64 of `"Ed"` ‖ kdf ‖ `"B2"` ‖ salt (32) ‖ opslimit (u64 LE) ‖
//!   memlimit (u64 LE) ‖ key id (8) ‖ secret key (64 = seed ‖ public key) ‖ checksum (32 =
//!   BLAKE2b-256(`"Ed"` ‖ key id ‖ secret key)). kdf `"Sc"` (what `minisign -G` writes): the last
//!   104 bytes are XORed with scrypt(password, salt, opslimit, memlimit) (see [`crate::keycrypt`]), and
//!   a wrong password shows as a wrong checksum. kdf `"\0\0"` (`minisign -G -W`): in clear; minisign
//!   writes an all-zero checksum then and does not check it; we accept either zeros or the right
//!   checksum, always write the right one, and always check that the public half matches the seed.
//! * Signature (`.minisig`, 4 lines): untrusted comment; base64 of `"ED"` ‖ key id ‖ Ed25519 signature
//!   of BLAKE2b-512(message) (plain Ed25519 over the 64-byte hash, *not* RFC 8032 Ed25519ph);
//!   `trusted comment: <text>`; base64 of the global signature = Ed25519 over signature ‖ text.
//!   The legacy `"Ed"` algorithm (raw message signed) is refused.
//!
//! Verification uses `verify_strict` only (no small-order keys, no non-canonical signatures) and there
//! is no lenient mode. The trusted comment of our bundles is tab-separated `key:value` fields, see
//! [`TrustedInfo`].

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::keycrypt;

/// Largest signature file we read or write, in bytes.
pub const MAX_SIGNATURE_BYTES: usize = 4096;
/// Largest key file we read, in bytes.
pub const MAX_KEY_FILE_BYTES: usize = 8192;

/// The untrusted comment of the signatures we write.
pub const SIGNATURE_UNTRUSTED_COMMENT: &str = "signature from bundle-build secret key";
/// The untrusted comment minisign writes on every secret key file, even an unencrypted one
/// (`minisign -G -W`): we write the same so the files are indistinguishable.
pub const SECRET_KEY_UNTRUSTED_COMMENT: &str = "minisign encrypted secret key";

const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
const ALG_ED: [u8; 2] = *b"Ed";
const ALG_PREHASHED: [u8; 2] = *b"ED";
const KDF_NONE: [u8; 2] = [0, 0];
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const CHK_BLAKE2: [u8; 2] = *b"B2";

const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
const SIG_LINE_LEN: usize = 2 + 8 + 64;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
/// Offsets inside the secret key blob.
const SK_SALT: usize = 6;
const SK_OPSLIMIT: usize = SK_SALT + 32;
const SK_MEMLIMIT: usize = SK_OPSLIMIT + 8;
const SK_KEYID: usize = 54;
const SK_SECRET: usize = SK_KEYID + 8;
const SK_CHECKSUM: usize = SK_SECRET + 64;

/// Everything that can go wrong with keys and signatures. Messages are one line: what is wrong and
/// what to do about it. [`SignatureError::kind`] gives a stable machine-readable name.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read {}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not a minisign public key: {reason}; use the .pub file written by `bundle-build keygen` or `minisign -G`")]
    MalformedKey { origin: String, reason: String },
    #[error("{origin}: not a minisign secret key: {reason}; use the .key file written by `bundle-build keygen` or `minisign -G -W`")]
    MalformedSecretKey { origin: String, reason: String },
    #[error("{origin}: the secret key is encrypted and no password was given; give it on the terminal, with --password-fd or --password-env")]
    EncryptedSecretKey { origin: String },
    #[error("{origin}: wrong password for this secret key (or the key file is damaged); try again, or restore the key from a backup")]
    WrongPassword { origin: String },
    #[error("{origin}: the secret key is damaged ({reason}); restore it from a backup")]
    CorruptSecretKey { origin: String, reason: String },
    #[error("{origin}: not a minisign signature: {reason}; the signature is damaged or was not written by `bundle-build build`/`minisign -S`, get a fresh copy of the bundle")]
    MalformedSignature { origin: String, reason: String },
    #[error("{origin}: legacy minisign signature (algorithm `Ed`, message not prehashed), which is refused; re-sign with `bundle-build build` or `minisign -S` without `-l`")]
    LegacySignature { origin: String },
    #[error("signed by key {0}, which is not trusted here; add that public key to the trusted keys only if you trust its owner, or get a bundle signed by a trusted key")]
    UntrustedKey(KeyId),
    #[error("signature check failed with trusted key {key_id}: the signed data was altered or damaged; do not install it, get a fresh copy")]
    BadSignature { key_id: KeyId },
    #[error("trusted comment check failed with trusted key {key_id}: the trusted comment (app, version, sequence) or its signature was altered; do not install it, get a fresh copy")]
    BadTrustedComment { key_id: KeyId },
    #[error("cannot sign with this trusted comment: {0}")]
    InvalidTrustedComment(String),
    #[error("the signed trusted comment does not describe a bundle: {0}; rebuild and sign the bundle with `bundle-build build`")]
    MalformedTrustedInfo(String),
    #[error(
        "cannot get random bytes from the operating system: {0}; check that the system's random source is available"
    )]
    Random(String),
    #[error("cannot encrypt the secret key: {0}")]
    InvalidKeyParameters(String),
}

impl SignatureError {
    /// A stable snake_case name of the variant, for JSON output and scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            SignatureError::Io { .. } => "io",
            SignatureError::MalformedKey { .. } => "malformed_key",
            SignatureError::MalformedSecretKey { .. } => "malformed_secret_key",
            SignatureError::EncryptedSecretKey { .. } => "encrypted_secret_key",
            SignatureError::WrongPassword { .. } => "wrong_password",
            SignatureError::CorruptSecretKey { .. } => "corrupt_secret_key",
            SignatureError::MalformedSignature { .. } => "malformed_signature",
            SignatureError::LegacySignature { .. } => "legacy_signature",
            SignatureError::UntrustedKey(_) => "untrusted_key",
            SignatureError::BadSignature { .. } => "bad_signature",
            SignatureError::BadTrustedComment { .. } => "bad_trusted_comment",
            SignatureError::InvalidTrustedComment(_) => "invalid_trusted_comment",
            SignatureError::MalformedTrustedInfo(_) => "malformed_trusted_info",
            SignatureError::Random(_) => "random",
            SignatureError::InvalidKeyParameters(_) => "invalid_key_parameters",
        }
    }
}

/// A minisign key number: 8 random bytes shared by a key pair and every signature it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    /// As minisign 0.12 shows it: `%016X` of the bytes read as a little-endian u64 (minisign 0.11
    /// wrote the `.pub` comment without the leading zeros; the comment is not checked by anyone).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// BLAKE2b-512 of `message`: what an `ED` signature signs.
pub fn prehash(message: &[u8]) -> [u8; 64] {
    Blake2b512::digest(message).into()
}

fn secret_key_checksum(key_id: &KeyId, sk64: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(ALG_ED);
    h.update(key_id.0);
    h.update(sk64);
    h.finalize().into()
}

/// Splits a minisign text file into exactly `expected` lines. Tolerates CRLF line ends and one final
/// newline; anything else (missing or extra lines, stray carriage returns) is an error.
fn split_lines(text: &str, expected: usize) -> Result<Vec<&str>, String> {
    if text.is_empty() {
        return Err("the text is empty".into());
    }
    let body = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(text);
    let mut lines: Vec<&str> = body.split('\n').collect();
    let last = lines.len() - 1;
    // Every line but the last was followed by '\n' here: only those may end in a CR of a CRLF.
    for line in &mut lines[..last] {
        *line = line.strip_suffix('\r').unwrap_or(line);
    }
    if lines.len() != expected {
        return Err(format!("expected {expected} lines, found {}", lines.len()));
    }
    for (i, line) in lines.iter().enumerate() {
        if line.contains('\r') {
            return Err(format!("line {} contains a stray carriage return", i + 1));
        }
    }
    Ok(lines)
}

/// Decodes one base64 line that must hold exactly `len` bytes.
fn decode_line(line: &str, len: usize, line_no: usize) -> Result<Vec<u8>, String> {
    let want = len.div_ceil(3) * 4;
    if line.len() != want {
        return Err(format!("line {line_no} has {} characters, expected {want} base64 characters", line.len()));
    }
    let bytes = B64.decode(line).map_err(|e| format!("line {line_no} is not valid base64 ({e})"))?;
    if bytes.len() != len {
        return Err(format!("line {line_no} decodes to {} bytes, expected {len}", bytes.len()));
    }
    Ok(bytes)
}

fn untrusted_comment(line: &str, line_no: usize) -> Result<&str, String> {
    line.strip_prefix(UNTRUSTED_PREFIX).ok_or_else(|| format!("line {line_no} must start with `{UNTRUSTED_PREFIX}`"))
}

/// A trusted comment must be one line of text: no control characters except tab (minisign cuts a
/// comment at NUL, CR or LF, so such bytes would make us and minisign check different text).
fn check_comment_text(comment: &str) -> Result<(), String> {
    if let Some(c) = comment.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!("it contains the control character {:?} (one line of text, tabs allowed)", c));
    }
    Ok(())
}

/// Reads a small text file, refusing more than `limit` bytes.
fn read_limited(path: &Path, limit: usize) -> Result<Result<String, String>, SignatureError> {
    let io = |source| SignatureError::Io { path: path.to_path_buf(), source };
    let file = crate::input::open_regular(path).map_err(|e| match e {
        crate::input::OpenError::Io(e) => io(e),
        crate::input::OpenError::NotRegular => io(std::io::Error::other("not a regular file")),
    })?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > limit {
        return Ok(Err(format!("the file is larger than {limit} bytes")));
    }
    Ok(String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string()))
}

/// A public key trusted (or not) to sign bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_id: KeyId,
    key: VerifyingKey,
}

impl PublicKey {
    /// Builds a key from its parts; refuses a point that is not on the curve or has small order.
    pub fn from_bytes(key_id: KeyId, key: &[u8; 32]) -> Result<Self, SignatureError> {
        Self::from_parts(key_id, key, "public key")
    }

    fn from_parts(key_id: KeyId, key: &[u8; 32], origin: &str) -> Result<Self, SignatureError> {
        let bad = |reason: &str| SignatureError::MalformedKey { origin: origin.into(), reason: reason.into() };
        let key = VerifyingKey::from_bytes(key).map_err(|_| bad("the key is not a valid Ed25519 point"))?;
        if key.is_weak() {
            return Err(bad("the key is a small-order (weak) Ed25519 point"));
        }
        Ok(PublicKey { key_id, key })
    }

    /// Parses the 2-line `.pub` file.
    pub fn from_minisign(text: &str) -> Result<Self, SignatureError> {
        Self::parse_named(text, "public key")
    }

    fn parse_named(text: &str, origin: &str) -> Result<Self, SignatureError> {
        let bad = |reason: String| SignatureError::MalformedKey { origin: origin.into(), reason };
        if text.len() > MAX_KEY_FILE_BYTES {
            return Err(bad(format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
        }
        let lines = split_lines(text, 2).map_err(bad)?;
        untrusted_comment(lines[0], 1).map_err(bad)?;
        Self::parse_base64_named(lines[1], 2, origin)
    }

    /// Parses the base64 key alone (what `minisign -P` takes).
    pub fn from_base64(line: &str) -> Result<Self, SignatureError> {
        Self::parse_base64_named(line, 1, "public key")
    }

    fn parse_base64_named(line: &str, line_no: usize, origin: &str) -> Result<Self, SignatureError> {
        let bad = |reason: String| SignatureError::MalformedKey { origin: origin.into(), reason };
        let bytes = decode_line(line, PUBLIC_KEY_LEN, line_no).map_err(bad)?;
        if bytes[..2] != ALG_ED {
            return Err(bad(format!(
                "unsupported algorithm {:?} (expected \"Ed\")",
                String::from_utf8_lossy(&bytes[..2])
            )));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[2..10]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&bytes[10..]);
        Self::from_parts(KeyId(id), &pk, origin)
    }

    /// Reads a `.pub` file; errors name the file.
    pub fn read_file(path: &Path) -> Result<Self, SignatureError> {
        let origin = path.display().to_string();
        match read_limited(path, MAX_KEY_FILE_BYTES)? {
            Ok(text) => Self::parse_named(&text, &origin),
            Err(reason) => Err(SignatureError::MalformedKey { origin, reason }),
        }
    }

    /// The base64 line of the `.pub` file (what `minisign -P` takes).
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_LEN);
        bytes.extend_from_slice(&ALG_ED);
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(self.key.as_bytes());
        B64.encode(bytes)
    }

    /// The `.pub` file, exactly as `minisign -G` writes it.
    pub fn to_minisign(&self) -> String {
        format!("{UNTRUSTED_PREFIX}minisign public key {}\n{}\n", self.key_id, self.to_base64())
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

/// An unencrypted secret key.
#[derive(Clone)]
pub struct SecretKey {
    key_id: KeyId,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Result<Self, SignatureError> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut seed).map_err(|e| SignatureError::Random(e.to_string()))?;
        getrandom::getrandom(&mut id).map_err(|e| SignatureError::Random(e.to_string()))?;
        let key = Self::from_seed(KeyId(id), seed);
        seed.fill(0);
        Ok(key)
    }

    /// A key from a known seed: for tests and fixtures, never for real signing keys.
    pub fn from_seed(key_id: KeyId, seed: [u8; 32]) -> Self {
        SecretKey { key_id, key: SigningKey::from_bytes(&seed) }
    }

    /// Parses an unencrypted minisign secret key file (`minisign -G -W`, or ours); an encrypted one
    /// is refused with [`SignatureError::EncryptedSecretKey`] (see [`SecretKeyFile`] to open it).
    pub fn from_minisign(text: &str) -> Result<Self, SignatureError> {
        SecretKeyFile::parse_named(text, "secret key")?.unencrypted()
    }

    /// Reads an unencrypted secret key file; errors name the file. See [`SecretKeyFile::read_file`]
    /// for one that may be encrypted.
    pub fn read_file(path: &Path) -> Result<Self, SignatureError> {
        SecretKeyFile::read_file(path)?.unencrypted()
    }

    /// The secret key bytes (key id ‖ secret key ‖ checksum) behind a file's header.
    fn key_material(&self) -> Zeroizing<Vec<u8>> {
        let sk64 = Zeroizing::new(self.key.to_keypair_bytes());
        let mut m = Zeroizing::new(Vec::with_capacity(SECRET_KEY_LEN - SK_KEYID));
        m.extend_from_slice(&self.key_id.0);
        m.extend_from_slice(&sk64[..]);
        m.extend_from_slice(&secret_key_checksum(&self.key_id, &sk64[..]));
        m
    }

    fn key_file_text(blob: &[u8]) -> String {
        format!("{UNTRUSTED_PREFIX}{SECRET_KEY_UNTRUSTED_COMMENT}\n{}\n", B64.encode(blob))
    }

    /// The unencrypted secret key file, in the layout `minisign -G -W` writes (with the checksum
    /// filled in). Keep it mode 0600: it is the signing key in clear.
    pub fn to_minisign(&self) -> String {
        let mut b = Zeroizing::new(Vec::with_capacity(SECRET_KEY_LEN));
        b.extend_from_slice(&ALG_ED);
        b.extend_from_slice(&KDF_NONE);
        b.extend_from_slice(&CHK_BLAKE2);
        b.extend_from_slice(&[0u8; 32 + 8 + 8]); // salt, opslimit, memlimit: unused without a kdf
        b.extend_from_slice(&self.key_material());
        Self::key_file_text(&b)
    }

    /// The secret key file encrypted with `password`, exactly as `minisign -G` writes it: kdf `Sc`, a
    /// fresh random salt and libsodium's "sensitive" limits (scrypt N = 2^20, r = 8, p = 1: about a
    /// second and 1 GiB of memory, at each use of the key too).
    pub fn to_minisign_encrypted(&self, password: &[u8]) -> Result<String, SignatureError> {
        let mut salt = [0u8; 32];
        getrandom::getrandom(&mut salt).map_err(|e| SignatureError::Random(e.to_string()))?;
        self.to_minisign_encrypted_with(password, &salt, keycrypt::OPSLIMIT_SENSITIVE, keycrypt::MEMLIMIT_SENSITIVE)
    }

    /// [`SecretKey::to_minisign_encrypted`] with a given salt and limits (tests use cheap limits).
    pub fn to_minisign_encrypted_with(
        &self,
        password: &[u8],
        salt: &[u8; 32],
        opslimit: u64,
        memlimit: u64,
    ) -> Result<String, SignatureError> {
        let mut material = self.key_material();
        let stream = keycrypt::derive(password, salt, opslimit, memlimit, material.len())
            .map_err(SignatureError::InvalidKeyParameters)?;
        for (m, k) in material.iter_mut().zip(stream.iter()) {
            *m ^= k;
        }
        let mut b = Zeroizing::new(Vec::with_capacity(SECRET_KEY_LEN));
        b.extend_from_slice(&ALG_ED);
        b.extend_from_slice(&KDF_SCRYPT);
        b.extend_from_slice(&CHK_BLAKE2);
        b.extend_from_slice(salt);
        b.extend_from_slice(&opslimit.to_le_bytes());
        b.extend_from_slice(&memlimit.to_le_bytes());
        b.extend_from_slice(&material);
        Ok(Self::key_file_text(&b))
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { key_id: self.key_id, key: self.key.verifying_key() }
    }

    /// Signs `message` the way `minisign -S` does (prehashed `ED`), with `trusted_comment` (one line).
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> Result<Signature, SignatureError> {
        self.sign_prehashed(&prehash(message), trusted_comment)
    }

    /// Like [`SecretKey::sign`], given the BLAKE2b-512 hash of the message (see [`prehash`]).
    pub fn sign_prehashed(&self, hash: &[u8; 64], trusted_comment: &str) -> Result<Signature, SignatureError> {
        check_comment_text(trusted_comment).map_err(SignatureError::InvalidTrustedComment)?;
        let signature = self.key.sign(hash).to_bytes();
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(&signature);
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_signature = self.key.sign(&global).to_bytes();
        let sig = Signature {
            key_id: self.key_id,
            signature,
            trusted_comment: trusted_comment.to_string(),
            global_signature,
            untrusted_comment: SIGNATURE_UNTRUSTED_COMMENT.to_string(),
        };
        let len = sig.to_minisign().len();
        if len > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::InvalidTrustedComment(format!(
                "it is too long (the signature file would be {len} bytes, at most {MAX_SIGNATURE_BYTES})"
            )));
        }
        Ok(sig)
    }
}

/// A secret key file as read: in clear, or encrypted and waiting for its password.
#[derive(Debug)]
pub enum SecretKeyFile {
    Plain(SecretKey),
    Encrypted(EncryptedSecretKey),
}

/// An encrypted secret key file (kdf `Sc`), checked for layout but not yet opened.
pub struct EncryptedSecretKey {
    origin: String,
    blob: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for EncryptedSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedSecretKey").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl SecretKeyFile {
    /// Parses a secret key file, encrypted or not.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        Self::parse_named(text, "secret key")
    }

    /// Reads a secret key file, encrypted or not; errors name the file.
    pub fn read_file(path: &Path) -> Result<Self, SignatureError> {
        let origin = path.display().to_string();
        match read_limited(path, MAX_KEY_FILE_BYTES)? {
            Ok(text) => Self::parse_named(&Zeroizing::new(text), &origin),
            Err(reason) => Err(SignatureError::MalformedSecretKey { origin, reason }),
        }
    }

    /// Whether opening the key needs a password.
    pub fn is_encrypted(&self) -> bool {
        matches!(self, SecretKeyFile::Encrypted(_))
    }

    /// The key of an unencrypted file; [`SignatureError::EncryptedSecretKey`] for an encrypted one.
    pub fn unencrypted(self) -> Result<SecretKey, SignatureError> {
        match self {
            SecretKeyFile::Plain(k) => Ok(k),
            SecretKeyFile::Encrypted(e) => Err(SignatureError::EncryptedSecretKey { origin: e.origin }),
        }
    }

    fn parse_named(text: &str, origin: &str) -> Result<Self, SignatureError> {
        let bad = |reason: String| SignatureError::MalformedSecretKey { origin: origin.into(), reason };
        if text.len() > MAX_KEY_FILE_BYTES {
            return Err(bad(format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
        }
        let lines = split_lines(text, 2).map_err(bad)?;
        untrusted_comment(lines[0], 1).map_err(bad)?;
        let b = Zeroizing::new(decode_line(lines[1], SECRET_KEY_LEN, 2).map_err(bad)?);
        if b[0..2] != ALG_ED {
            return Err(bad(format!(
                "unsupported signature algorithm {:?} (expected \"Ed\")",
                String::from_utf8_lossy(&b[0..2])
            )));
        }
        if b[4..6] != CHK_BLAKE2 {
            return Err(bad(format!(
                "unsupported checksum function {:?} (expected \"B2\")",
                String::from_utf8_lossy(&b[4..6])
            )));
        }
        if b[2..4] == KDF_SCRYPT {
            return Ok(SecretKeyFile::Encrypted(EncryptedSecretKey { origin: origin.into(), blob: b }));
        }
        if b[2..4] != KDF_NONE {
            return Err(bad(format!("unsupported key derivation function {:?}", String::from_utf8_lossy(&b[2..4]))));
        }
        // `minisign -G -W` leaves the checksum all zeros; anything else must be the right checksum.
        let zero_checksum = b[SK_CHECKSUM..].iter().all(|&x| x == 0);
        open_key_material(&b[SK_KEYID..], zero_checksum, |reason| SignatureError::CorruptSecretKey {
            origin: origin.into(),
            reason: reason.into(),
        })
        .map(SecretKeyFile::Plain)
    }
}

impl EncryptedSecretKey {
    /// Decrypts the key with `password` (scrypt: about a second and up to 1 GiB of memory).
    /// A wrong password gives [`SignatureError::WrongPassword`].
    pub fn decrypt(&self, password: &[u8]) -> Result<SecretKey, SignatureError> {
        let b = &self.blob;
        let salt: [u8; 32] = b[SK_SALT..SK_OPSLIMIT].try_into().expect("32 bytes");
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let mut material = Zeroizing::new(b[SK_KEYID..].to_vec());
        let stream = keycrypt::derive(password, &salt, u64_at(SK_OPSLIMIT), u64_at(SK_MEMLIMIT), material.len())
            .map_err(|reason| SignatureError::MalformedSecretKey { origin: self.origin.clone(), reason })?;
        for (m, k) in material.iter_mut().zip(stream.iter()) {
            *m ^= k;
        }
        // An encrypted key always carries its checksum: a mismatch is (almost always) the password.
        open_key_material(&material, false, |reason| match reason {
            CHECKSUM_MISMATCH => SignatureError::WrongPassword { origin: self.origin.clone() },
            _ => SignatureError::CorruptSecretKey { origin: self.origin.clone(), reason: reason.into() },
        })
    }

    /// The file this key was read from (or "secret key").
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

const CHECKSUM_MISMATCH: &str = "checksum mismatch";

/// Builds the key from key id (8) ‖ secret key (64) ‖ checksum (32) in clear: checks the checksum
/// (unless `zero_checksum_ok` and it is all zeros) and that the public half matches the seed.
fn open_key_material(
    m: &[u8],
    zero_checksum_ok: bool,
    corrupt: impl Fn(&'static str) -> SignatureError,
) -> Result<SecretKey, SignatureError> {
    let key_id = KeyId(m[..8].try_into().expect("8 bytes"));
    let sk64 = &m[8..72];
    let chk = &m[72..];
    let skip = zero_checksum_ok && chk.iter().all(|&x| x == 0);
    if !skip && chk != secret_key_checksum(&key_id, sk64) {
        return Err(corrupt(CHECKSUM_MISMATCH));
    }
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(sk64[..32].try_into().expect("32 bytes"));
    let key = SigningKey::from_bytes(&seed);
    if key.verifying_key().as_bytes()[..] != sk64[32..] {
        return Err(corrupt("its public half does not match its seed"));
    }
    Ok(SecretKey { key_id, key })
}

/// A prehashed (`ED`) minisign signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key_id: KeyId,
    pub signature: [u8; 64],
    /// The signed comment, without the `trusted comment: ` prefix.
    pub trusted_comment: String,
    pub global_signature: [u8; 64],
    /// The unsigned comment, without the `untrusted comment: ` prefix.
    pub untrusted_comment: String,
}

impl Signature {
    /// Parses a 4-line `.minisig` text (at most [`MAX_SIGNATURE_BYTES`]).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        Self::parse_named(text, "signature")
    }

    /// Parses signature bytes, naming them `origin` (e.g. an archive entry) in errors.
    pub fn parse_bytes(bytes: &[u8], origin: &str) -> Result<Self, SignatureError> {
        let bad = |reason: String| SignatureError::MalformedSignature { origin: origin.into(), reason };
        if bytes.len() > MAX_SIGNATURE_BYTES {
            return Err(bad(format!("larger than {MAX_SIGNATURE_BYTES} bytes")));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        Self::parse_named(text, origin)
    }

    /// Reads a `.minisig` file; errors name the file.
    pub fn read_file(path: &Path) -> Result<Self, SignatureError> {
        let origin = path.display().to_string();
        match read_limited(path, MAX_SIGNATURE_BYTES)? {
            Ok(text) => Self::parse_named(&text, &origin),
            Err(reason) => Err(SignatureError::MalformedSignature { origin, reason }),
        }
    }

    fn parse_named(text: &str, origin: &str) -> Result<Self, SignatureError> {
        let bad = |reason: String| SignatureError::MalformedSignature { origin: origin.into(), reason };
        if text.len() > MAX_SIGNATURE_BYTES {
            return Err(bad(format!("larger than {MAX_SIGNATURE_BYTES} bytes")));
        }
        let lines = split_lines(text, 4).map_err(bad)?;
        let untrusted = untrusted_comment(lines[0], 1).map_err(bad)?;
        let sig = decode_line(lines[1], SIG_LINE_LEN, 2).map_err(bad)?;
        if sig[..2] == ALG_ED {
            return Err(SignatureError::LegacySignature { origin: origin.into() });
        }
        if sig[..2] != ALG_PREHASHED {
            return Err(bad(format!(
                "unsupported signature algorithm {:?} (expected \"ED\")",
                String::from_utf8_lossy(&sig[..2])
            )));
        }
        let trusted = lines[2]
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or_else(|| bad(format!("line 3 must start with `{TRUSTED_PREFIX}`")))?;
        check_comment_text(trusted).map_err(|e| bad(format!("the trusted comment is not one line of text: {e}")))?;
        let global = decode_line(lines[3], 64, 4).map_err(bad)?;
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&sig[2..10]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&sig[10..]);
        let mut global_signature = [0u8; 64];
        global_signature.copy_from_slice(&global);
        Ok(Signature {
            key_id: KeyId(key_id),
            signature,
            trusted_comment: trusted.to_string(),
            global_signature,
            untrusted_comment: untrusted.to_string(),
        })
    }

    /// The `.minisig` text. Line breaks in the untrusted comment are replaced by spaces; the trusted
    /// comment is written as is (it is signed), so it must be one line for the result to parse.
    pub fn to_minisign(&self) -> String {
        let untrusted: String =
            self.untrusted_comment.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
        let mut sig = Vec::with_capacity(SIG_LINE_LEN);
        sig.extend_from_slice(&ALG_PREHASHED);
        sig.extend_from_slice(&self.key_id.0);
        sig.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{untrusted}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            B64.encode(&sig),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

/// Checks `sig` over `message` with the trusted key of the same key id; returns that key.
///
/// Both the signature over BLAKE2b-512(message) and the global signature over the trusted comment
/// are checked with `verify_strict`.
pub fn verify<'k>(message: &[u8], sig: &Signature, trusted: &'k [PublicKey]) -> Result<&'k PublicKey, SignatureError> {
    verify_prehashed(&prehash(message), sig, trusted)
}

/// Like [`verify`], given BLAKE2b-512 of the message (see [`prehash`]).
pub fn verify_prehashed<'k>(
    hash: &[u8; 64],
    sig: &Signature,
    trusted: &'k [PublicKey],
) -> Result<&'k PublicKey, SignatureError> {
    let signature = ed25519_dalek::Signature::from_bytes(&sig.signature);
    let global_signature = ed25519_dalek::Signature::from_bytes(&sig.global_signature);
    let mut global = Vec::with_capacity(64 + sig.trusted_comment.len());
    global.extend_from_slice(&sig.signature);
    global.extend_from_slice(sig.trusted_comment.as_bytes());
    let mut error = None;
    for key in trusted.iter().filter(|k| k.key_id == sig.key_id) {
        if key.key.verify_strict(hash, &signature).is_err() {
            error.get_or_insert(SignatureError::BadSignature { key_id: key.key_id });
            continue;
        }
        if key.key.verify_strict(&global, &global_signature).is_err() {
            // The data is authentic under this key; its comment is not: the more precise error.
            error = Some(SignatureError::BadTrustedComment { key_id: key.key_id });
            continue;
        }
        return Ok(key);
    }
    Err(error.unwrap_or(SignatureError::UntrustedKey(sig.key_id)))
}

/// What our bundles put in the trusted comment: `app:<app>\tversion:<version>\tsequence:<u64>`.
/// Unknown `key:value` fields are ignored when parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedInfo {
    pub app: String,
    pub version: String,
    /// Release sequence number: grows with every release of the app.
    pub sequence: u64,
}

impl TrustedInfo {
    /// The trusted comment text. Run [`TrustedInfo::check`] first: a tab, line break or empty value
    /// would not read back.
    pub fn format(&self) -> String {
        format!("app:{}\tversion:{}\tsequence:{}", self.app, self.version, self.sequence)
    }

    /// Refuses values that would not survive [`TrustedInfo::format`] and [`TrustedInfo::parse`].
    pub fn check(&self) -> Result<(), SignatureError> {
        for (name, value) in [("app", &self.app), ("version", &self.version)] {
            if value.is_empty() {
                return Err(SignatureError::InvalidTrustedComment(format!("the {name} is empty")));
            }
            if value.chars().any(|c| c.is_control()) {
                return Err(SignatureError::InvalidTrustedComment(format!(
                    "the {name} `{}` contains a tab or another control character",
                    value.escape_debug()
                )));
            }
        }
        Ok(())
    }

    /// Reads the fields back from a (verified) trusted comment.
    pub fn parse(comment: &str) -> Result<Self, SignatureError> {
        let bad = |reason: String| SignatureError::MalformedTrustedInfo(reason);
        let (mut app, mut version, mut sequence) = (None, None, None);
        for (i, field) in comment.split('\t').enumerate() {
            let (key, value) = field
                .split_once(':')
                .ok_or_else(|| bad(format!("field {} `{}` is not `key:value`", i + 1, field.escape_debug())))?;
            let slot = match key {
                "app" => &mut app,
                "version" => &mut version,
                "sequence" => &mut sequence,
                _ => continue,
            };
            if slot.is_some() {
                return Err(bad(format!("the `{key}` field appears twice")));
            }
            if value.is_empty() {
                return Err(bad(format!("the `{key}` field is empty")));
            }
            *slot = Some(value);
        }
        let missing = |k: &str| bad(format!("no `{k}:` field"));
        let app = app.ok_or_else(|| missing("app"))?.to_string();
        let version = version.ok_or_else(|| missing("version"))?.to_string();
        let seq = sequence.ok_or_else(|| missing("sequence"))?;
        let sequence = seq
            .parse::<u64>()
            .ok()
            .filter(|n| n.to_string() == seq)
            .ok_or_else(|| bad(format!("the sequence `{}` is not a whole number", seq.escape_debug())))?;
        Ok(TrustedInfo { app, version, sequence })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors written by the real minisign 0.11 (`minisign -G -W`, `minisign -S`, `minisign -S -l`).
    const MS_PUB: &str = "untrusted comment: minisign public key B253A21CB5409BF6\n\
        RWT2m0C1HKJTsqgwJHoQtUZ3yqkyG+m08LN13xYpF92ZLzUZs1LYs8NI\n";
    const MS_KEY: &str = "untrusted comment: minisign encrypted secret key\n\
        RWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA9ptAtRyiU7I4X/B6q5rAyF+S1eCdQNbeCx73hbY9tvnpp5m3+bZf4qgwJHoQtUZ3yqkyG+m08LN13xYpF92ZLzUZs1LYs8NIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    const MS_MSG: &[u8] = b"hello bundle\n";
    const MS_SIG: &str = "untrusted comment: signature from minisign secret key\n\
        RUT2m0C1HKJTsmzHc0l8UXX4xhd4Mf64Zf0fRu7DubsJxHq7bMLVolnkXzzvKh+/wN6EJv6k0y23rSARXjOcL7vWHjUWZ2rjjQE=\n\
        trusted comment: app:fieldlog\tversion:1.0.0\tsequence:1\n\
        2+YKHWgFJyR3Hhbl7cq4qnfisovlxKHH5/h1IvtZl5JqKIorLo16B1QlKfCPgjjYL0bw89Q5Mq4R48qSfdAXBA==\n";
    const MS_LEGACY_SIG: &str = "untrusted comment: signature from minisign secret key\n\
        RWT2m0C1HKJTsrIG108stAPI+qGaPTFSn1GhDFdJynaBZoq9Vj8vKPkcPq1uDqF4xgQJml1xt/t/lDETzuxrg+h5AdjXyroH3Ak=\n\
        trusted comment: legacy\n\
        k+AP8ZROjOgS8sDEJEFrIgKGe6aUZ9/icbZKcg+RQ6kYax8U342L2Fz+QnDPdtyZ0C2GBIzp8AaG/dfGZbNbBw==\n";

    // Written by the real minisign 0.11 (`minisign -G`, password "pw", kdf Sc with its default
    // limits), and its public key.
    const MS_ENC_KEY: &str = "untrusted comment: minisign encrypted secret key\n\
        RWRTY0Iyo4caOqBG5VDN97OGAovOSueo8wgKl8L/SMxMc3BrI1EAAAACAAAAAAAAAEAAAAAAgRMOHmuh8M514XgqUgSXqOApyjALhzNqp6LLjCWHAMnFlkL21wRheFTbZw2+Pk3/xlUdG5EGOtTLq9cMpHZfO/c2NQB6MYHZzZoSxvZM1e80TPmNsxxV1wc15+aHGr92Xv5Mj+GRmn8=\n";
    const MS_ENC_PUB: &str = "untrusted comment: minisign public key C489F482FB6E0B31\n\
        RWQxC277gvSJxGPrRIhwzZDRCdqYOUFZGAHkNAFSGMdjiwlH2VfVG3mS\n";

    /// Cheap scrypt limits for round trips in tests (N = 2^10).
    const CHEAP_OPS: u64 = 32_768;
    const CHEAP_MEM: u64 = 1 << 30;

    #[test]
    fn opens_a_key_minisign_encrypted_and_refuses_a_wrong_password() {
        let file = SecretKeyFile::parse(MS_ENC_KEY).unwrap();
        assert!(file.is_encrypted());
        let SecretKeyFile::Encrypted(enc) = file else { unreachable!() };
        let err = enc.decrypt(b"not it").unwrap_err();
        assert_eq!(err.kind(), "wrong_password", "{err}");
        let key = enc.decrypt(b"pw").unwrap();
        assert_eq!(key.public_key(), PublicKey::from_minisign(MS_ENC_PUB).unwrap());
        // Without a password, the plain readers say it is encrypted.
        assert_eq!(SecretKey::from_minisign(MS_ENC_KEY).unwrap_err().kind(), "encrypted_secret_key");
    }

    #[test]
    fn encrypted_round_trip_and_layout() {
        let sk = test_key(21);
        let text = sk.to_minisign_encrypted_with(b"secret", &[9; 32], CHEAP_OPS, CHEAP_MEM).unwrap();
        assert!(text.starts_with("untrusted comment: minisign encrypted secret key\n"));
        let blob = B64.decode(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(&blob[..6], b"EdScB2");
        assert_eq!(&blob[SK_SALT..SK_OPSLIMIT], &[9; 32]);
        assert_eq!(blob[SK_OPSLIMIT..SK_MEMLIMIT], CHEAP_OPS.to_le_bytes());
        assert_eq!(blob[SK_MEMLIMIT..SK_KEYID], CHEAP_MEM.to_le_bytes());
        // Nothing of the key is in clear: not the key id, not the seed.
        assert_ne!(&blob[SK_KEYID..SK_SECRET], &sk.key_id().0);
        assert!(!blob.windows(32).any(|w| w == sk.key.to_bytes()));
        let SecretKeyFile::Encrypted(enc) = SecretKeyFile::parse(&text).unwrap() else { panic!("not encrypted") };
        let back = enc.decrypt(b"secret").unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        assert_eq!(back.to_minisign(), sk.to_minisign());
        for wrong in [&b""[..], b"Secret", b"secret\n", b"secre"] {
            assert_eq!(enc.decrypt(wrong).unwrap_err().kind(), "wrong_password");
        }
        // The default form uses minisign's limits and a fresh salt each time.
        let a = B64.decode(sk.to_minisign_encrypted(b"x").unwrap().lines().nth(1).unwrap()).unwrap();
        assert_eq!(a[SK_OPSLIMIT..SK_MEMLIMIT], keycrypt::OPSLIMIT_SENSITIVE.to_le_bytes());
        assert_eq!(a[SK_MEMLIMIT..SK_KEYID], keycrypt::MEMLIMIT_SENSITIVE.to_le_bytes());
        let b = B64.decode(sk.to_minisign_encrypted(b"x").unwrap().lines().nth(1).unwrap()).unwrap();
        assert_ne!(a[SK_SALT..SK_OPSLIMIT], b[SK_SALT..SK_OPSLIMIT]);
    }

    #[test]
    fn encrypted_key_with_excessive_limits_is_refused_without_deriving() {
        let sk = test_key(22);
        let text = sk.to_minisign_encrypted_with(b"pw", &[1; 32], CHEAP_OPS, CHEAP_MEM).unwrap();
        let mut blob = B64.decode(text.lines().nth(1).unwrap()).unwrap();
        blob[SK_MEMLIMIT..SK_KEYID].copy_from_slice(&(64u64 << 30).to_le_bytes());
        blob[SK_OPSLIMIT..SK_MEMLIMIT].copy_from_slice(&(64u64 << 30).to_le_bytes());
        let text = format!("untrusted comment: x\n{}\n", B64.encode(&blob));
        let SecretKeyFile::Encrypted(enc) = SecretKeyFile::parse(&text).unwrap() else { panic!() };
        let err = enc.decrypt(b"pw").unwrap_err();
        assert_eq!(err.kind(), "malformed_secret_key", "{err}");
    }

    /// Ed25519 group order L, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn test_key(n: u8) -> SecretKey {
        SecretKey::from_seed(KeyId([n; 8]), [n.wrapping_add(100); 32])
    }

    const COMMENT: &str = "app:fieldlog\tversion:4.0.0\tsequence:7";

    /// Tiny deterministic PRNG for the garbage tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn key_id_displays_like_minisign() {
        let pk = PublicKey::from_minisign(MS_PUB).unwrap();
        assert_eq!(pk.key_id().to_string(), "B253A21CB5409BF6");
        assert_eq!(KeyId([1, 0, 0, 0, 0, 0, 0, 0]).to_string(), "0000000000000001");
        assert_eq!(KeyId([0, 0, 0, 0, 0, 0, 0, 0xab]).to_string(), "AB00000000000000");
    }

    #[test]
    fn minisign_vectors_verify() {
        let pk = PublicKey::from_minisign(MS_PUB).unwrap();
        assert_eq!(pk.to_minisign(), MS_PUB, "our .pub output is byte-identical to minisign's");
        let sig = Signature::parse(MS_SIG).unwrap();
        assert_eq!(sig.to_minisign(), MS_SIG, "our .minisig output is byte-identical to minisign's");
        assert_eq!(sig.untrusted_comment, "signature from minisign secret key");
        let keys = [pk.clone()];
        assert_eq!(verify(MS_MSG, &sig, &keys).unwrap(), &pk);
        let info = TrustedInfo::parse(&sig.trusted_comment).unwrap();
        assert_eq!(info, TrustedInfo { app: "fieldlog".into(), version: "1.0.0".into(), sequence: 1 });
        assert_eq!(verify(b"hello bundle!", &sig, &keys).unwrap_err().kind(), "bad_signature");
    }

    #[test]
    fn minisign_secret_key_reads_and_signs_like_minisign() {
        let sk = SecretKey::from_minisign(MS_KEY).unwrap();
        assert_eq!(sk.public_key(), PublicKey::from_minisign(MS_PUB).unwrap());
        // Ed25519 is deterministic: same key, message and comment give minisign's exact signature.
        let ours = sk.sign(MS_MSG, "app:fieldlog\tversion:1.0.0\tsequence:1").unwrap();
        let theirs = Signature::parse(MS_SIG).unwrap();
        assert_eq!(ours.signature, theirs.signature);
        assert_eq!(ours.global_signature, theirs.global_signature);
        assert_eq!(ours.untrusted_comment, SIGNATURE_UNTRUSTED_COMMENT);
        // Our rewrite of the file differs only by the checksum minisign leaves at zero.
        let again = SecretKey::from_minisign(&sk.to_minisign()).unwrap();
        assert_eq!(again.public_key(), sk.public_key());
        assert!(sk.to_minisign().starts_with("untrusted comment: minisign encrypted secret key\n"));
        assert!(!format!("{sk:?}").contains("key: "), "Debug must not print the secret");
    }

    #[test]
    fn round_trips() {
        let sk = SecretKey::generate().unwrap();
        let sk2 = SecretKey::from_minisign(&sk.to_minisign()).unwrap();
        assert_eq!(sk2.key_id(), sk.key_id());
        assert_eq!(sk2.public_key(), sk.public_key());
        let pk = PublicKey::from_minisign(&sk.public_key().to_minisign()).unwrap();
        assert_eq!(pk, sk.public_key());
        assert_eq!(PublicKey::from_base64(&pk.to_base64()).unwrap(), pk);
        let sig = sk.sign(b"manifest bytes", COMMENT).unwrap();
        let text = sig.to_minisign();
        let parsed = Signature::parse(&text).unwrap();
        assert_eq!(parsed, sig);
        assert_eq!(Signature::parse_bytes(text.as_bytes(), "x").unwrap(), sig);
        let keys = [test_key(9).public_key(), pk.clone()];
        assert_eq!(verify(b"manifest bytes", &parsed, &keys).unwrap(), &keys[1]);
        assert_eq!(verify_prehashed(&prehash(b"manifest bytes"), &parsed, &keys).unwrap(), &keys[1]);
        // The empty message and the empty comment are fine too.
        let sig = sk.sign(b"", "").unwrap();
        verify(b"", &Signature::parse(&sig.to_minisign()).unwrap(), &keys).unwrap();
    }

    #[test]
    fn signs_plain_ed25519_over_blake2b512_not_ed25519ph() {
        let sk = test_key(1);
        let sig = sk.sign(b"data", COMMENT).unwrap();
        let vk = sk.public_key().key;
        let s = ed25519_dalek::Signature::from_bytes(&sig.signature);
        vk.verify_strict(&prehash(b"data"), &s).expect("plain Ed25519 over the BLAKE2b-512 hash");
        assert!(vk.verify_strict(b"data", &s).is_err(), "not over the raw message");
        let mut g = sig.signature.to_vec();
        g.extend_from_slice(COMMENT.as_bytes());
        vk.verify_strict(&g, &ed25519_dalek::Signature::from_bytes(&sig.global_signature)).unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let sk = test_key(2);
        let keys = [sk.public_key()];
        let msg = b"the exact manifest bytes".to_vec();
        let sig = sk.sign(&msg, COMMENT).unwrap();
        verify(&msg, &sig, &keys).unwrap();

        for bit in [0usize, 7, 8 * 10 + 3, msg.len() * 8 - 1] {
            let mut m = msg.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(verify(&m, &sig, &keys).unwrap_err().kind(), "bad_signature", "message bit {bit}");
        }
        let mut longer = msg.clone();
        longer.push(b'\n');
        assert_eq!(verify(&longer, &sig, &keys).unwrap_err().kind(), "bad_signature");
        assert_eq!(verify(&msg[..msg.len() - 1], &sig, &keys).unwrap_err().kind(), "bad_signature");

        for byte in [0usize, 31, 32, 63] {
            let mut s = sig.clone();
            s.signature[byte] ^= 0x04;
            assert_eq!(verify(&msg, &s, &keys).unwrap_err().kind(), "bad_signature", "signature byte {byte}");
        }
        for byte in [0usize, 31, 32, 63] {
            let mut s = sig.clone();
            s.global_signature[byte] ^= 0x20;
            assert_eq!(verify(&msg, &s, &keys).unwrap_err().kind(), "bad_trusted_comment", "global byte {byte}");
        }
        let mut s = sig.clone();
        s.trusted_comment = s.trusted_comment.replace("sequence:7", "sequence:8");
        assert_eq!(verify(&msg, &s, &keys).unwrap_err().kind(), "bad_trusted_comment");
        // The same through the text form, as an attacker would edit the file.
        let text = sig.to_minisign().replace("version:4.0.0", "version:9.0.0");
        let s = Signature::parse(&text).unwrap();
        let err = verify(&msg, &s, &keys).unwrap_err();
        assert!(matches!(err, SignatureError::BadTrustedComment { key_id } if key_id == *sk.key_id()));
        assert!(err.to_string().contains("trusted comment"), "{err}");
        // The untrusted comment is not signed: editing it changes nothing.
        let text = sig.to_minisign().replace(SIGNATURE_UNTRUSTED_COMMENT, "anything at all");
        verify(&msg, &Signature::parse(&text).unwrap(), &keys).unwrap();
    }

    #[test]
    fn signature_from_another_key_with_a_trusted_key_id_is_refused() {
        let trusted = test_key(3);
        let attacker = SecretKey::from_seed(*trusted.key_id(), [77; 32]);
        let sig = attacker.sign(b"m", COMMENT).unwrap();
        let err = verify(b"m", &sig, &[trusted.public_key()]).unwrap_err();
        assert_eq!(err.kind(), "bad_signature");
    }

    #[test]
    fn unknown_key_id_is_untrusted() {
        let sk = test_key(4);
        let sig = sk.sign(b"m", COMMENT).unwrap();
        let others = [test_key(5).public_key(), test_key(6).public_key()];
        let err = verify(b"m", &sig, &others).unwrap_err();
        assert!(matches!(err, SignatureError::UntrustedKey(id) if id == *sk.key_id()));
        assert_eq!(err.kind(), "untrusted_key");
        assert!(err.to_string().contains(&sk.key_id().to_string()), "{err}");
        assert_eq!(verify(b"m", &sig, &[]).unwrap_err().kind(), "untrusted_key");
        // Same key material, different key id: still untrusted (the id is part of the identity).
        let mut s = sig.clone();
        s.key_id = KeyId([0xee; 8]);
        assert_eq!(verify(b"m", &s, &[sk.public_key()]).unwrap_err().kind(), "untrusted_key");
    }

    #[test]
    fn legacy_ed_signature_is_refused() {
        let err = Signature::parse(MS_LEGACY_SIG).unwrap_err();
        assert!(matches!(err, SignatureError::LegacySignature { .. }), "{err:?}");
        assert_eq!(err.kind(), "legacy_signature");
        assert!(err.to_string().contains("legacy"), "{err}");
        // The same check on a signature of ours with the algorithm bytes switched to "Ed".
        let sig = test_key(1).sign(b"m", COMMENT).unwrap().to_minisign();
        let lines: Vec<&str> = sig.lines().collect();
        let mut raw = B64.decode(lines[1]).unwrap();
        raw[1] = b'd';
        let text = format!("{}\n{}\n{}\n{}\n", lines[0], B64.encode(&raw), lines[2], lines[3]);
        assert_eq!(Signature::parse(&text).unwrap_err().kind(), "legacy_signature");
        raw[0] = b'X';
        let text = format!("{}\n{}\n{}\n{}\n", lines[0], B64.encode(&raw), lines[2], lines[3]);
        assert_eq!(Signature::parse(&text).unwrap_err().kind(), "malformed_signature");
    }

    #[test]
    fn small_order_public_key_is_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // Parsing refuses it ...
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&[7; 8]);
        raw.extend_from_slice(&identity);
        let text = format!("untrusted comment: x\n{}\n", B64.encode(&raw));
        let err = PublicKey::from_minisign(&text).unwrap_err();
        assert_eq!(err.kind(), "malformed_key");
        assert!(err.to_string().contains("small-order"), "{err}");
        assert_eq!(PublicKey::from_bytes(KeyId([7; 8]), &identity).unwrap_err().kind(), "malformed_key");

        // ... and verification refuses it even if such a key got into the trusted list. With the
        // identity key, R = identity and S = 0 is a "valid" signature of anything under the lenient
        // equation: prove that, then check we refuse it.
        let vk = VerifyingKey::from_bytes(&identity).unwrap();
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let fs = ed25519_dalek::Signature::from_bytes(&forged);
        let lenient = ed25519_dalek::Verifier::verify(&vk, &prehash(b"anything"), &fs);
        assert!(lenient.is_ok(), "the forgery must work against lenient verification for this test to mean anything");
        let key = PublicKey { key_id: KeyId([7; 8]), key: vk };
        let sig = Signature {
            key_id: KeyId([7; 8]),
            signature: forged,
            trusted_comment: COMMENT.into(),
            global_signature: forged,
            untrusted_comment: String::new(),
        };
        assert_eq!(verify(b"anything", &sig, &[key]).unwrap_err().kind(), "bad_signature");
    }

    fn add_l(s: &mut [u8]) {
        let mut carry = 0u16;
        for (b, l) in s.iter_mut().zip(L) {
            let v = *b as u16 + l as u16 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
    }

    #[test]
    fn non_canonical_signature_is_refused() {
        let sk = test_key(8);
        let keys = [sk.public_key()];
        let sig = sk.sign(b"m", COMMENT).unwrap();
        // S + L is the same scalar mod L but a second encoding of the signature: malleability.
        let mut s = sig.clone();
        add_l(&mut s.signature[32..]);
        assert_ne!(s.signature, sig.signature);
        assert_eq!(verify(b"m", &s, &keys).unwrap_err().kind(), "bad_signature");
        let mut s = sig.clone();
        add_l(&mut s.global_signature[32..]);
        assert_eq!(verify(b"m", &s, &keys).unwrap_err().kind(), "bad_trusted_comment");
        // Also survives the text round trip (parsing does not "fix" it).
        let mut s = sig.clone();
        add_l(&mut s.signature[32..]);
        let reparsed = Signature::parse(&s.to_minisign()).unwrap();
        assert_eq!(verify(b"m", &reparsed, &keys).unwrap_err().kind(), "bad_signature");
    }

    // Minimal arithmetic modulo L on little-endian [u64; 4] (values < 2^254), enough to forge the
    // signature below; bit by bit, slow but obviously right.
    fn l_limbs() -> [u64; 4] {
        let mut l = [0u64; 4];
        for (i, b) in L.iter().enumerate() {
            l[i / 8] |= (*b as u64) << (8 * (i % 8));
        }
        l
    }
    fn add(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
        let mut r = [0u64; 4];
        let mut carry = 0u128;
        for i in 0..4 {
            let v = a[i] as u128 + b[i] as u128 + carry;
            r[i] = v as u64;
            carry = v >> 64;
        }
        r
    }
    fn reduce_once(a: [u64; 4]) -> [u64; 4] {
        let l = l_limbs();
        let ge = (0..4).rev().find(|&i| a[i] != l[i]).is_none_or(|i| a[i] > l[i]);
        if !ge {
            return a;
        }
        let mut r = [0u64; 4];
        let mut borrow = 0i128;
        for i in 0..4 {
            let v = a[i] as i128 - l[i] as i128 - borrow;
            r[i] = v.rem_euclid(1 << 64) as u64;
            borrow = if v < 0 { 1 } else { 0 };
        }
        r
    }
    /// `bytes` (little-endian, any length) mod L.
    fn mod_l(bytes: &[u8]) -> [u64; 4] {
        let mut r = [0u64; 4];
        for bit in (0..bytes.len() * 8).rev() {
            r = reduce_once(add(r, r));
            if bytes[bit / 8] >> (bit % 8) & 1 == 1 {
                r = reduce_once(add(r, [1, 0, 0, 0]));
            }
        }
        r
    }
    fn mul_mod_l(a: [u64; 4], b_bytes: &[u8]) -> [u64; 4] {
        let mut r = [0u64; 4];
        for bit in (0..b_bytes.len() * 8).rev() {
            r = reduce_once(add(r, r));
            if b_bytes[bit / 8] >> (bit % 8) & 1 == 1 {
                r = reduce_once(add(r, a));
            }
        }
        r
    }

    /// A global signature whose R is the identity (small order), made with the real secret key so
    /// that the lenient equation holds: S = k·a with k = H(R ‖ A ‖ M). Only `verify_strict` refuses it.
    #[test]
    fn global_signature_with_small_order_r_is_refused() {
        use sha2::{Digest as _, Sha512};
        let seed = [42u8; 32];
        let sk = SecretKey::from_seed(KeyId([5; 8]), seed);
        let keys = [sk.public_key()];
        let good = sk.sign(b"m", COMMENT).unwrap();

        let h = Sha512::digest(seed);
        let mut a = [0u8; 32];
        a.copy_from_slice(&h[..32]);
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        let mut r = [0u8; 32];
        r[0] = 1; // the identity point
        let mut global = good.signature.to_vec();
        global.extend_from_slice(COMMENT.as_bytes());
        let k = Sha512::new().chain_update(r).chain_update(keys[0].key.as_bytes()).chain_update(&global).finalize();
        let s = mul_mod_l(mod_l(&k), &a);
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&r);
        for (i, limb) in s.iter().enumerate() {
            forged[32 + 8 * i..40 + 8 * i].copy_from_slice(&limb.to_le_bytes());
        }
        let fs = ed25519_dalek::Signature::from_bytes(&forged);
        assert!(
            ed25519_dalek::Verifier::verify(&keys[0].key, &global, &fs).is_ok(),
            "the forgery must pass lenient verification for this test to mean anything"
        );
        assert!(keys[0].key.verify_strict(&global, &fs).is_err());
        let mut sig = good.clone();
        sig.global_signature = forged;
        assert_eq!(verify(b"m", &sig, &keys).unwrap_err().kind(), "bad_trusted_comment");
    }

    fn with_blob(comment: &str, blob: &[u8]) -> String {
        format!("untrusted comment: {comment}\n{}\n", B64.encode(blob))
    }

    #[test]
    fn secret_key_checks() {
        let sk = test_key(10);
        let good = B64.decode(sk.to_minisign().lines().nth(1).unwrap()).unwrap();
        assert_eq!(good.len(), SECRET_KEY_LEN);

        let mut b = good.clone();
        b[SK_CHECKSUM + 5] ^= 1;
        let err = SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err();
        assert_eq!(err.kind(), "corrupt_secret_key");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");

        // A changed key id is caught by the checksum.
        let mut b = good.clone();
        b[SK_KEYID] ^= 1;
        assert_eq!(SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err().kind(), "corrupt_secret_key");

        // Seed and public half that do not match: caught even with minisign's all-zero checksum.
        let mut b = good.clone();
        b[SK_SECRET] ^= 1;
        b[SK_CHECKSUM..].fill(0);
        let err = SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err();
        assert_eq!(err.kind(), "corrupt_secret_key");
        assert!(err.to_string().contains("public half"), "{err}");
        // ... and with a checksum recomputed over the damaged key.
        let id = KeyId(b[SK_KEYID..SK_SECRET].try_into().unwrap());
        let chk = secret_key_checksum(&id, &b[SK_SECRET..SK_CHECKSUM]);
        b[SK_CHECKSUM..].copy_from_slice(&chk);
        assert_eq!(SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err().kind(), "corrupt_secret_key");

        // All-zero checksum (what `minisign -G -W` writes) is accepted.
        let mut b = good.clone();
        b[SK_CHECKSUM..].fill(0);
        assert_eq!(SecretKey::from_minisign(&with_blob("k", &b)).unwrap().public_key(), sk.public_key());

        let mut b = good.clone();
        b[2..4].copy_from_slice(b"Sc");
        let err = SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err();
        assert_eq!(err.kind(), "encrypted_secret_key");
        assert!(err.to_string().contains("encrypted and no password was given"), "{err}");
        let mut b = good.clone();
        b[2..4].copy_from_slice(b"Xy");
        assert_eq!(SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err().kind(), "malformed_secret_key");
        let mut b = good.clone();
        b[4..6].copy_from_slice(b"B3");
        assert_eq!(SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err().kind(), "malformed_secret_key");
        let mut b = good.clone();
        b[0..2].copy_from_slice(b"ED");
        assert_eq!(SecretKey::from_minisign(&with_blob("k", &b)).unwrap_err().kind(), "malformed_secret_key");
        // A public key file is not a secret key, and vice versa.
        assert_eq!(SecretKey::from_minisign(MS_PUB).unwrap_err().kind(), "malformed_secret_key");
        assert_eq!(PublicKey::from_minisign(MS_KEY).unwrap_err().kind(), "malformed_key");
    }

    #[test]
    fn line_handling() {
        let pk = PublicKey::from_minisign(MS_PUB).unwrap();
        assert_eq!(PublicKey::from_minisign(MS_PUB.trim_end()).unwrap(), pk, "no final newline");
        assert_eq!(PublicKey::from_minisign(&MS_PUB.replace('\n', "\r\n")).unwrap(), pk, "CRLF");
        let sig = Signature::parse(MS_SIG).unwrap();
        assert_eq!(Signature::parse(&MS_SIG.replace('\n', "\r\n")).unwrap(), sig);
        assert_eq!(SecretKey::from_minisign(&MS_KEY.replace('\n', "\r\n")).unwrap().key_id(), pk.key_id());

        let cases: Vec<(String, &str)> = vec![
            (format!("{MS_PUB}\n"), "expected 2 lines, found 3"),
            (format!("\n{MS_PUB}"), "expected 2 lines, found 3"),
            (MS_PUB.replacen("untrusted comment: ", "comment: ", 1), "must start with `untrusted comment: `"),
            (MS_PUB.lines().nth(1).unwrap().to_string(), "expected 2 lines, found 1"),
            (MS_PUB.replace("RWT2", " RWT2"), "line 2 has 57 characters"),
            (MS_PUB.replace("NI\n", "N=\n"), "not valid base64"),
            (MS_PUB.replace("B253", "B2\r53"), "stray carriage return"),
            (String::new(), "empty"),
        ];
        for (text, want) in cases {
            let err = PublicKey::from_minisign(&text).unwrap_err();
            assert_eq!(err.kind(), "malformed_key");
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }

        let sig_cases: Vec<(String, &str)> = vec![
            (format!("{MS_SIG}\n"), "expected 4 lines, found 5"),
            (
                MS_SIG.replace("trusted comment: app", "trusted comment:app"),
                "line 3 must start with `trusted comment: `",
            ),
            (MS_SIG.replace("trusted comment: app", "Trusted comment: app"), "line 3 must start"),
            (MS_SIG.replace("sequence:1", "sequence:1\u{0}"), "control character"),
            (MS_SIG.replace("untrusted comment: ", ""), "line 1 must start"),
            (format!("{MS_SIG}{}", "x".repeat(MAX_SIGNATURE_BYTES)), "larger than 4096 bytes"),
            (MS_SIG.replace("fdAXBA==", "fdAXBB=="), "not valid base64"),
        ];
        for (text, want) in sig_cases {
            let err = Signature::parse(&text).unwrap_err();
            assert_eq!(err.kind(), "malformed_signature");
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn trusted_comment_must_be_one_line() {
        let sk = test_key(11);
        for bad in ["a\nb", "a\rb", "x\n", "nul\0", "esc\u{1b}"] {
            let err = sk.sign(b"m", bad).unwrap_err();
            assert_eq!(err.kind(), "invalid_trusted_comment", "{bad:?}");
        }
        sk.sign(b"m", "tabs\tare\tfine, unicode too: é").unwrap();
        let err = sk.sign(b"m", &"x".repeat(MAX_SIGNATURE_BYTES)).unwrap_err();
        assert_eq!(err.kind(), "invalid_trusted_comment");
        // The longest comment we accept still makes a signature we can parse back; one more byte fails.
        let n = MAX_SIGNATURE_BYTES - sk.sign(b"m", "").unwrap().to_minisign().len();
        assert_eq!(sk.sign(b"m", &"y".repeat(n + 1)).unwrap_err().kind(), "invalid_trusted_comment");
        let sig = sk.sign(b"m", &"y".repeat(n)).unwrap();
        assert_eq!(sig.to_minisign().len(), MAX_SIGNATURE_BYTES);
        verify(b"m", &Signature::parse(&sig.to_minisign()).unwrap(), &[sk.public_key()]).unwrap();
    }

    #[test]
    fn trusted_info() {
        let info = TrustedInfo { app: "fieldlog".into(), version: "4.0.0rc1".into(), sequence: 42 };
        info.check().unwrap();
        assert_eq!(info.format(), "app:fieldlog\tversion:4.0.0rc1\tsequence:42");
        assert_eq!(TrustedInfo::parse(&info.format()).unwrap(), info);
        // Extra and reordered fields.
        let t = TrustedInfo::parse("sequence:42\tbuilt:2026-01-01T00:00:00Z\tversion:4.0.0rc1\tapp:fieldlog").unwrap();
        assert_eq!(t, info);
        assert_eq!(TrustedInfo::parse("app:a\tversion:1:2\tsequence:0").unwrap().version, "1:2");
        assert_eq!(TrustedInfo::parse(&format!("app:a\tversion:1\tsequence:{}", u64::MAX)).unwrap().sequence, u64::MAX);

        let bad = [
            ("version:1\tsequence:1", "no `app:` field"),
            ("app:a\tsequence:1", "no `version:` field"),
            ("app:a\tversion:1", "no `sequence:` field"),
            ("app:a\tversion:1\tsequence:x", "not a whole number"),
            ("app:a\tversion:1\tsequence:-1", "not a whole number"),
            ("app:a\tversion:1\tsequence:+1", "not a whole number"),
            ("app:a\tversion:1\tsequence:01", "not a whole number"),
            ("app:a\tversion:1\tsequence:18446744073709551616", "not a whole number"),
            ("app:a\tversion:1\tsequence:", "`sequence` field is empty"),
            ("app:a\tapp:b\tversion:1\tsequence:1", "appears twice"),
            ("app:a\tversion:1\tsequence:1\thashed", "not `key:value`"),
            ("timestamp:1700000000\tfile:x.tar", "no `app:` field"),
            ("", "not `key:value`"),
        ];
        for (text, want) in bad {
            let err = TrustedInfo::parse(text).unwrap_err();
            assert_eq!(err.kind(), "malformed_trusted_info");
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }
        for (app, version) in [("", "1"), ("a", ""), ("a\tb", "1"), ("a", "1\n")] {
            let t = TrustedInfo { app: app.into(), version: version.into(), sequence: 1 };
            assert_eq!(t.check().unwrap_err().kind(), "invalid_trusted_comment");
        }
    }

    #[test]
    fn read_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pub");
        let err = PublicKey::read_file(&missing).unwrap_err();
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("nope.pub"), "{err}");

        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "untrusted comment: x\nnot base64!\n").unwrap();
        let err = PublicKey::read_file(&bad).unwrap_err();
        assert_eq!(err.kind(), "malformed_key");
        assert!(err.to_string().starts_with(&bad.display().to_string()), "{err}");

        let big = dir.path().join("big.minisig");
        std::fs::write(&big, vec![b'a'; MAX_SIGNATURE_BYTES + 1]).unwrap();
        let err = Signature::read_file(&big).unwrap_err();
        assert_eq!(err.kind(), "malformed_signature");
        assert!(err.to_string().contains("big.minisig") && err.to_string().contains("larger"), "{err}");

        let bin = dir.path().join("bin.key");
        std::fs::write(&bin, [0xff, 0xfe, 0, 1]).unwrap();
        let err = SecretKey::read_file(&bin).unwrap_err();
        assert_eq!(err.kind(), "malformed_secret_key");
        assert!(err.to_string().contains("bin.key") && err.to_string().contains("UTF-8"), "{err}");

        let sk = test_key(12);
        let (kp, pp, sp) = (dir.path().join("k.key"), dir.path().join("k.pub"), dir.path().join("m.minisig"));
        std::fs::write(&kp, sk.to_minisign()).unwrap();
        std::fs::write(&pp, sk.public_key().to_minisign()).unwrap();
        std::fs::write(&sp, sk.sign(b"m", COMMENT).unwrap().to_minisign()).unwrap();
        let keys = [PublicKey::read_file(&pp).unwrap()];
        let sig = Signature::read_file(&sp).unwrap();
        assert_eq!(SecretKey::read_file(&kp).unwrap().key_id(), keys[0].key_id());
        verify(b"m", &sig, &keys).unwrap();
    }

    #[test]
    fn every_error_kind_is_distinct_and_messages_are_one_line() {
        let id = KeyId([1; 8]);
        let errors = [
            SignatureError::Io { path: "/x".into(), source: std::io::Error::other("boom") },
            SignatureError::MalformedKey { origin: "o".into(), reason: "r".into() },
            SignatureError::MalformedSecretKey { origin: "o".into(), reason: "r".into() },
            SignatureError::EncryptedSecretKey { origin: "o".into() },
            SignatureError::WrongPassword { origin: "o".into() },
            SignatureError::CorruptSecretKey { origin: "o".into(), reason: "r".into() },
            SignatureError::MalformedSignature { origin: "o".into(), reason: "r".into() },
            SignatureError::LegacySignature { origin: "o".into() },
            SignatureError::UntrustedKey(id),
            SignatureError::BadSignature { key_id: id },
            SignatureError::BadTrustedComment { key_id: id },
            SignatureError::InvalidTrustedComment("r".into()),
            SignatureError::MalformedTrustedInfo("r".into()),
            SignatureError::Random("r".into()),
            SignatureError::InvalidKeyParameters("r".into()),
        ];
        let mut kinds: Vec<&str> = errors.iter().map(|e| e.kind()).collect();
        for e in &errors {
            assert!(!e.to_string().contains('\n'), "{e}");
            assert!(e.kind().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), errors.len());
    }

    /// Random, truncated and mutated inputs: never a panic, and a mutated signature never verifies
    /// unless only its untrusted comment changed.
    #[test]
    fn garbage_never_panics_and_mutations_never_verify() {
        let sk = test_key(13);
        let keys = [sk.public_key()];
        let msg = b"message";
        let sig_text = sk.sign(msg, COMMENT).unwrap().to_minisign();
        let pub_text = sk.public_key().to_minisign();
        let key_text = sk.to_minisign();
        let first_line_len = sig_text.find('\n').unwrap();

        for text in [&sig_text, &pub_text, &key_text] {
            for cut in 0..text.len() {
                let t = &text[..cut];
                // A cut right before the final newline is the same file without it.
                let complete = cut + 1 == text.len();
                assert_eq!(Signature::parse(t).is_ok(), complete && text == &sig_text, "{t:?}");
                assert_eq!(PublicKey::from_minisign(t).is_ok(), complete && text == &pub_text, "{t:?}");
                assert_eq!(SecretKey::from_minisign(t).is_ok(), complete && text == &key_text, "{t:?}");
            }
        }

        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r\t :-_\0";
        for round in 0..3000 {
            // Random base64 of random length behind a valid-looking comment.
            let n = rng.below(200);
            let blob: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let b64 = B64.encode(&blob);
            assert!(
                PublicKey::from_minisign(&format!("untrusted comment: x\n{b64}\n")).is_err() || n == PUBLIC_KEY_LEN
            );
            assert!(SecretKey::from_minisign(&format!("untrusted comment: x\n{b64}\n")).is_err());
            let fake_sig = format!("untrusted comment: x\n{b64}\ntrusted comment: y\n{b64}\n");
            assert!(Signature::parse(&fake_sig).is_err());
            // Random printable junk.
            let junk: String = (0..rng.below(300)).map(|_| alphabet[rng.below(alphabet.len())] as char).collect();
            assert!(Signature::parse(&junk).is_err());
            assert!(PublicKey::from_minisign(&junk).is_err());
            assert!(SecretKey::from_minisign(&junk).is_err());
            assert!(PublicKey::from_base64(&junk).is_err());
            let _ = TrustedInfo::parse(&junk);
            if round % 5 != 0 {
                continue; // verification is slow in debug builds: mutate less often
            }

            // Mutate one byte of the signature text.
            let mut bytes = sig_text.clone().into_bytes();
            let at = rng.below(bytes.len());
            let new = alphabet[rng.below(alphabet.len())];
            if bytes[at] == new {
                continue;
            }
            bytes[at] = new;
            if let Ok(s) = Signature::parse_bytes(&bytes, "fuzz") {
                if verify(msg, &s, &keys).is_ok() {
                    assert!(at < first_line_len, "mutation at {at} verified: {:?}", String::from_utf8_lossy(&bytes));
                }
            }
            // Same for the public key: a mutated key line is another key or an error.
            let mut p = pub_text.clone().into_bytes();
            let at = rng.below(p.len());
            p[at] = alphabet[rng.below(alphabet.len())];
            if let Ok(text) = std::str::from_utf8(&p) {
                if let Ok(k) = PublicKey::from_minisign(text) {
                    if p != pub_text.as_bytes() && at > pub_text.find('\n').unwrap() {
                        assert_ne!(k, keys[0]);
                    }
                }
            }
            let mut k = key_text.clone().into_bytes();
            let at = rng.below(k.len());
            k[at] = alphabet[rng.below(alphabet.len())];
            if let Ok(text) = std::str::from_utf8(&k) {
                let _ = SecretKey::from_minisign(text);
            }
        }
    }
}
