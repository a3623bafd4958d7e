//! Interoperability with the real `minisign` binary: what we sign, minisign verifies; what minisign
//! signs, we verify; and each side reads the other's unencrypted secret key files.
//! Every test is skipped (with a message on stderr) when `minisign` is not on PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bundle_core::signature::{verify, PublicKey, SecretKey, Signature, TrustedInfo};

const COMMENT: &str = "app:fieldlog\tversion:1.0.0\tsequence:1";

fn minisign() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("minisign")).find(|p| p.is_file())
}

macro_rules! minisign_or_skip {
    () => {
        match minisign() {
            Some(bin) => bin,
            None => {
                eprintln!("skipping: `minisign` is not on PATH");
                return;
            }
        }
    };
}

/// Runs minisign non-interactively (stdin closed) in `dir`.
fn run(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run minisign")
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Compares a `.pub` file of ours with minisign's: identical key line, same key id in the comment.
/// minisign 0.11 prints the id as `%X` (no leading zeros), 0.12 and we as `%016X`.
fn assert_same_pub(ours: &str, theirs: &str) {
    let split = |t: &str| -> (u64, String) {
        let (comment, key) = t.split_once('\n').unwrap_or_else(|| panic!("not a .pub file: {t:?}"));
        let hex = comment
            .strip_prefix("untrusted comment: minisign public key ")
            .unwrap_or_else(|| panic!("unexpected comment: {comment:?}"));
        (u64::from_str_radix(hex, 16).unwrap(), key.to_string())
    };
    assert_eq!(split(ours), split(theirs), "ours:\n{ours}theirs:\n{theirs}");
    assert_eq!(PublicKey::from_minisign(ours).unwrap(), PublicKey::from_minisign(theirs).unwrap());
}

#[test]
fn minisign_verifies_what_we_sign() {
    let bin = minisign_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sk = SecretKey::generate().unwrap();
    std::fs::write(d.join("our.pub"), sk.public_key().to_minisign()).unwrap();
    let message = b"app: fieldlog\nversion: 1.0.0\nfiles: []\n".to_vec();
    std::fs::write(d.join("manifest.yaml"), &message).unwrap();
    let sig = sk.sign(&message, COMMENT).unwrap();
    std::fs::write(d.join("manifest.yaml.minisig"), sig.to_minisign()).unwrap();

    // -H: minisign must see a prehashed signature, not a legacy one.
    let out = run(&bin, d, &["-V", "-H", "-m", "manifest.yaml", "-p", "our.pub"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("Trusted comment: {COMMENT}")), "{}", show(&out));

    // The same with the key given inline, as `minisign -P` takes it.
    let b64 = sk.public_key().to_base64();
    let out = run(&bin, d, &["-V", "-m", "manifest.yaml", "-P", &b64]);
    assert!(out.status.success(), "{}", show(&out));

    // A tampered file is rejected.
    let mut tampered = message.clone();
    tampered[0] ^= 0x01;
    std::fs::write(d.join("manifest.yaml"), &tampered).unwrap();
    let out = run(&bin, d, &["-V", "-m", "manifest.yaml", "-p", "our.pub"]);
    assert!(!out.status.success(), "minisign accepted a tampered file: {}", show(&out));

    // A tampered trusted comment is rejected.
    std::fs::write(d.join("manifest.yaml"), &message).unwrap();
    let edited = sig.to_minisign().replace("sequence:1", "sequence:2");
    std::fs::write(d.join("manifest.yaml.minisig"), edited).unwrap();
    let out = run(&bin, d, &["-V", "-m", "manifest.yaml", "-p", "our.pub"]);
    assert!(!out.status.success(), "minisign accepted a tampered trusted comment: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Comment signature"), "{}", show(&out));

    // Another key with our key id: minisign refuses it too.
    let other = SecretKey::from_seed(*sk.key_id(), [9; 32]);
    std::fs::write(d.join("manifest.yaml.minisig"), other.sign(&message, COMMENT).unwrap().to_minisign()).unwrap();
    let out = run(&bin, d, &["-V", "-m", "manifest.yaml", "-p", "our.pub"]);
    assert!(!out.status.success(), "{}", show(&out));
}

/// `minisign -G -W` then `minisign -S`, checked by us.
fn minisign_keypair(bin: &Path, d: &Path) -> (String, String) {
    let out = run(bin, d, &["-G", "-W", "-f", "-p", "k.pub", "-s", "k.key"]);
    assert!(out.status.success(), "{}", show(&out));
    (std::fs::read_to_string(d.join("k.pub")).unwrap(), std::fs::read_to_string(d.join("k.key")).unwrap())
}

#[test]
fn we_verify_what_minisign_signs() {
    let bin = minisign_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pub_text, _) = minisign_keypair(&bin, d);
    let message = b"payload signed by the real minisign\n";
    std::fs::write(d.join("file.bin"), message).unwrap();
    let out = run(&bin, d, &["-S", "-s", "k.key", "-m", "file.bin", "-t", COMMENT]);
    assert!(out.status.success(), "{}", show(&out));

    let pk = PublicKey::from_minisign(&pub_text).unwrap();
    assert_same_pub(&pk.to_minisign(), &pub_text);
    assert_eq!(PublicKey::read_file(&d.join("k.pub")).unwrap(), pk);
    let sig_text = std::fs::read_to_string(d.join("file.bin.minisig")).unwrap();
    let sig = Signature::parse(&sig_text).unwrap();
    assert_eq!(sig.to_minisign(), sig_text, "our .minisig output matches minisign's byte for byte");
    assert_eq!(&sig.key_id, pk.key_id());
    let keys = [SecretKey::generate().unwrap().public_key(), pk.clone()];
    assert_eq!(verify(message, &sig, &keys).unwrap(), &pk);
    assert_eq!(sig.trusted_comment, COMMENT);
    let info = TrustedInfo::parse(&sig.trusted_comment).unwrap();
    assert_eq!(info, TrustedInfo { app: "fieldlog".into(), version: "1.0.0".into(), sequence: 1 });

    assert_eq!(verify(b"payload signed by the real minisign!", &sig, &keys).unwrap_err().kind(), "bad_signature");
    assert_eq!(verify(message, &sig, &keys[..1]).unwrap_err().kind(), "untrusted_key");

    // minisign's default trusted comment is not ours: verified, but TrustedInfo refuses it.
    let out = run(&bin, d, &["-S", "-s", "k.key", "-m", "file.bin", "-x", "default.minisig"]);
    assert!(out.status.success(), "{}", show(&out));
    let sig = Signature::read_file(&d.join("default.minisig")).unwrap();
    verify(message, &sig, &keys).unwrap();
    assert_eq!(TrustedInfo::parse(&sig.trusted_comment).unwrap_err().kind(), "malformed_trusted_info");

    // A legacy (`-l`, not prehashed) signature is refused, though minisign itself accepts it.
    let out = run(&bin, d, &["-S", "-l", "-s", "k.key", "-m", "file.bin", "-x", "legacy.minisig", "-t", COMMENT]);
    assert!(out.status.success(), "{}", show(&out));
    let out = run(&bin, d, &["-V", "-m", "file.bin", "-x", "legacy.minisig", "-p", "k.pub"]);
    assert!(out.status.success(), "minisign accepts legacy signatures without -H: {}", show(&out));
    let err = Signature::read_file(&d.join("legacy.minisig")).unwrap_err();
    assert_eq!(err.kind(), "legacy_signature", "{err}");
    assert!(err.to_string().contains("legacy.minisig"), "{err}");
}

#[test]
fn we_sign_with_a_minisign_secret_key() {
    let bin = minisign_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pub_text, key_text) = minisign_keypair(&bin, d);
    let sk = SecretKey::from_minisign(&key_text).unwrap();
    assert_eq!(SecretKey::read_file(&d.join("k.key")).unwrap().key_id(), sk.key_id());
    assert_eq!(sk.public_key(), PublicKey::from_minisign(&pub_text).unwrap());

    let message = b"signed by us with minisign's key\n";
    std::fs::write(d.join("m.txt"), message).unwrap();
    std::fs::write(d.join("m.txt.minisig"), sk.sign(message, COMMENT).unwrap().to_minisign()).unwrap();
    let out = run(&bin, d, &["-V", "-H", "-m", "m.txt", "-p", "k.pub"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(COMMENT), "{}", show(&out));
}

#[test]
fn minisign_signs_with_our_secret_key() {
    let bin = minisign_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sk = SecretKey::generate().unwrap();
    std::fs::write(d.join("ours.key"), sk.to_minisign()).unwrap();
    std::fs::write(d.join("ours.pub"), sk.public_key().to_minisign()).unwrap();

    // minisign derives the same public key file from our secret key file.
    let out = run(&bin, d, &["-R", "-s", "ours.key", "-p", "recreated.pub"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_same_pub(&sk.public_key().to_minisign(), &std::fs::read_to_string(d.join("recreated.pub")).unwrap());

    let message = b"signed by minisign with our key\n";
    std::fs::write(d.join("m.txt"), message).unwrap();
    // `-p` makes minisign check the signature against our public key before writing it.
    let out = run(&bin, d, &["-S", "-s", "ours.key", "-p", "ours.pub", "-m", "m.txt", "-t", COMMENT]);
    assert!(out.status.success(), "{}", show(&out));
    let sig = Signature::read_file(&d.join("m.txt.minisig")).unwrap();
    assert_eq!(verify(message, &sig, &[sk.public_key()]).unwrap(), &sk.public_key());
    let out = run(&bin, d, &["-V", "-m", "m.txt", "-p", "ours.pub"]);
    assert!(out.status.success(), "{}", show(&out));
}
