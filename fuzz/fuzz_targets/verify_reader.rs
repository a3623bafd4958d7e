//! The streaming verifier on arbitrary input, trusting the fixed test key of `fuzz/keys/` (the seed
//! corpus holds real bundles signed by it, so mutations get past the signature), writing into a
//! fresh staging directory. Input starting with the gzip magic is the bundle itself; anything else
//! is taken as the *uncompressed* tar stream and gzipped (stored blocks) first, so the fuzzer can
//! mutate headers directly.
//!
//! Asserted: no panic; every node under the temp dir is a plain file or directory inside the
//! staging directory, with no setuid/setgid/sticky bits; an accepted bundle left exactly its
//! manifest's files in staging.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bundle_core::signature::PublicKey;
use bundle_core::verify::{verify_reader, Limits};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static PublicKey {
    static K: OnceLock<PublicKey> = OnceLock::new();
    K.get_or_init(|| PublicKey::from_minisign(include_str!("../keys/fuzz.pub")).expect("fuzz.pub"))
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        let m = p.symlink_metadata().expect("metadata");
        if m.is_dir() {
            walk(&p, out);
        }
        out.push((p, m));
    }
}

fuzz_target!(|data: &[u8]| {
    let input: Vec<u8> = if data.starts_with(&[0x1f, 0x8b]) { data.to_vec() } else { gzip_stored(data) };
    let tmp = tempfile::tempdir().expect("tempdir");
    let staging = tmp.path().join("staging");
    std::fs::create_dir(&staging).expect("mkdir");
    let result = verify_reader(&input[..], std::slice::from_ref(key()), Some(&staging), &Limits::default());
    let mut nodes = Vec::new();
    walk(tmp.path(), &mut nodes);
    for (p, m) in &nodes {
        assert!(p.starts_with(&staging), "{} written outside staging", p.display());
        assert!(m.is_file() || m.is_dir(), "{} is neither a file nor a directory: {:?}", p.display(), m.file_type());
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7000, 0, "{} has special mode bits", p.display());
    }
    if let Ok(v) = result {
        let files = nodes.iter().filter(|(_, m)| m.is_file()).count();
        // The manifest's files plus manifest.yaml and its signature.
        assert_eq!(files, v.manifest().files.len() + 2, "an accepted bundle left other files in staging");
        for f in &v.manifest().files {
            assert!(staging.join(&f.path).is_file(), "{} missing from staging", f.path);
        }
    }
});

/// A gzip member of stored deflate blocks, written by hand.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(65535).collect() };
    for (i, c) in chunks.iter().enumerate() {
        out.push((i + 1 == chunks.len()) as u8);
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
