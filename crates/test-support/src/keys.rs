//! Signing keys for tests.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bundle_core::signature::{KeyId, PublicKey, SecretKey};
use ed25519_dalek::{Signer as _, SigningKey};

use crate::run::{run, tool};

/// A key pair on disk: `PREFIX.key` and `PREFIX.pub`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub prefix: PathBuf,
    pub secret_path: PathBuf,
    pub public_path: PathBuf,
    /// As minisign shows it (`%016X`).
    pub key_id: String,
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let name = prefix.file_name().expect("a key prefix has a file name").to_string_lossy();
    prefix.with_file_name(format!("{name}.{ext}"))
}

impl KeyPair {
    /// Runs `bundle-build keygen --unencrypted --out PREFIX --json` (needs the `bundle-build` binary,
    /// see [`crate::bin`]): a key in clear, as CI keys of old are.
    pub fn keygen(prefix: &Path) -> KeyPair {
        Self::keygen_with(prefix, tool("bundle-build").arg("keygen").arg("--unencrypted"))
    }

    /// Runs `bundle-build keygen` encrypting the key with `password`, given through the variable
    /// `BUNDLE_TEST_KEY_PASSWORD` named by `--password-env` (scrypt: takes a second or two).
    pub fn keygen_encrypted(prefix: &Path, password: &str) -> KeyPair {
        let mut c = tool("bundle-build");
        c.env("BUNDLE_TEST_KEY_PASSWORD", password).args(["keygen", "--password-env", "BUNDLE_TEST_KEY_PASSWORD"]);
        Self::keygen_with(prefix, &mut c)
    }

    fn keygen_with(prefix: &Path, cmd: &mut std::process::Command) -> KeyPair {
        let r = run(cmd.arg("--out").arg(prefix).arg("--json"));
        r.expect_ok();
        let key_id =
            r.json()["key_id"].as_str().unwrap_or_else(|| panic!("keygen printed no key_id:\n{r}")).to_string();
        let pair = KeyPair {
            prefix: prefix.to_path_buf(),
            secret_path: with_ext(prefix, "key"),
            public_path: with_ext(prefix, "pub"),
            key_id,
        };
        assert!(pair.secret_path.is_file() && pair.public_path.is_file(), "keygen wrote no key files:\n{r}");
        pair
    }

    /// Writes `key` as `PREFIX.key` / `PREFIX.pub` in process (no binary needed).
    pub fn write(prefix: &Path, key: &SecretKey) -> KeyPair {
        let pair = KeyPair {
            prefix: prefix.to_path_buf(),
            secret_path: with_ext(prefix, "key"),
            public_path: with_ext(prefix, "pub"),
            key_id: key.key_id().to_string(),
        };
        std::fs::write(&pair.secret_path, key.to_minisign()).expect("write .key");
        std::fs::write(&pair.public_path, key.public_key().to_minisign()).expect("write .pub");
        pair
    }

    pub fn secret(&self) -> SecretKey {
        SecretKey::read_file(&self.secret_path).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::read_file(&self.public_path).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A deterministic secret key (`n` picks the seed and key id): for tests only.
pub fn test_secret_key(n: u8) -> SecretKey {
    SecretKey::from_seed(KeyId([n, 0x5e, 0x7e, 0x57, 0, 0, 0, n]), [n.wrapping_mul(37).wrapping_add(1); 32])
}

/// The 32-byte Ed25519 seed of a secret key (read back from its minisign file form).
pub fn seed_of(key: &SecretKey) -> [u8; 32] {
    let text = key.to_minisign();
    let line = text.lines().nth(1).expect("two lines");
    let bytes = B64.decode(line).expect("base64");
    // "Ed" kdf "B2" salt(32) opslimit(8) memlimit(8) keyid(8), then the 64-byte secret key.
    bytes[62..94].try_into().expect("32 bytes")
}

/// A minisign signature in the *legacy* `Ed` form: plain Ed25519 over the raw `message` (not
/// prehashed), with a valid global signature over the trusted comment. Our verifiers must refuse it.
pub fn legacy_ed_signature(key: &SecretKey, message: &[u8], trusted_comment: &str) -> String {
    let sk = SigningKey::from_bytes(&seed_of(key));
    let sig = sk.sign(message).to_bytes();
    let mut line = Vec::with_capacity(74);
    line.extend_from_slice(b"Ed");
    line.extend_from_slice(&key.key_id().0);
    line.extend_from_slice(&sig);
    let mut global = sig.to_vec();
    global.extend_from_slice(trusted_comment.as_bytes());
    let global_sig = sk.sign(&global).to_bytes();
    format!(
        "untrusted comment: legacy signature\n{}\ntrusted comment: {trusted_comment}\n{}\n",
        B64.encode(&line),
        B64.encode(global_sig)
    )
}
