//! Hostile archives written in code.
//!
//! [`Parts`] is a bundle taken apart (manifest bytes, signature bytes, payload files in archive
//! order), read from a real bundle or made up in process, and re-signable. [`CraftedBundle`] writes a
//! tar stream entry by entry — ordinary files, or any 512-byte header built with [`Hdr`] (any type
//! flag, raw name/prefix/link bytes, a wrong checksum, GNU or v7 magic) — then gzips it and can damage
//! the result (truncate, flip bytes, break the CRC, append garbage or a second gzip member).

use std::io::{Read, Write};
use std::path::Path;

use bundle_core::hash::sha256_hex;
use bundle_core::manifest::{
    self, Config, Database, FileEntry, Hooks, Manifest, Payload, Step, MANIFEST_NAME, SIGNATURE_NAME,
};
use bundle_core::signature::{SecretKey, TrustedInfo};
use bundle_core::version::SchemaVersion;
use flate2::write::GzEncoder;
use flate2::Compression;

const BLOCK: usize = 512;

/// One raw tar header block. Fields are written as GNU tar writes them (zero-padded octal, NUL
/// terminated); the checksum is computed last, by [`Hdr::to_block`], unless [`Hdr::bad_checksum`].
#[derive(Clone, Debug)]
pub struct Hdr {
    block: [u8; BLOCK],
    checksum_delta: i64,
}

impl Hdr {
    /// A POSIX ustar header (`ustar\0` `00`): name, type flag (`b'0'` file, `b'5'` dir, `b'2'`
    /// symlink, …), mode, size; mtime, uid and gid 0, owner `root`.
    pub fn ustar(name: impl AsRef<[u8]>, kind: u8, mode: u32, size: u64) -> Hdr {
        let mut h = Hdr { block: [0; BLOCK], checksum_delta: 0 };
        h.block[257..265].copy_from_slice(b"ustar\x0000");
        h.block[265..269].copy_from_slice(b"root");
        h.block[297..301].copy_from_slice(b"root");
        h.octal(108, 8, 0).octal(116, 8, 0).octal(136, 12, 0).name(name).kind(kind).mode(mode).size(size)
    }

    /// A regular file header (type `0`).
    pub fn file(name: impl AsRef<[u8]>, mode: u32, size: u64) -> Hdr {
        Hdr::ustar(name, b'0', mode, size)
    }

    /// A PAX extended header (`x`) announcing `size` bytes of records, named as our writer names it.
    pub fn pax(size: u64) -> Hdr {
        Hdr::ustar("././@PaxHeader", b'x', 0o644, size)
    }

    /// The same, with GNU tar's old magic (`ustar  \0`).
    pub fn gnu(name: impl AsRef<[u8]>, kind: u8, mode: u32, size: u64) -> Hdr {
        Hdr::ustar(name, kind, mode, size).set(257, b"ustar  \x00")
    }

    /// The name field (bytes 0..100), exactly these bytes (no checks), zero-filled.
    pub fn name(mut self, name: impl AsRef<[u8]>) -> Self {
        self.put(0, 100, name.as_ref());
        self
    }

    /// The ustar prefix field (bytes 345..500).
    pub fn prefix(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.put(345, 155, prefix.as_ref());
        self
    }

    /// The link name field (bytes 157..257).
    pub fn link_name(mut self, link: impl AsRef<[u8]>) -> Self {
        self.put(157, 100, link.as_ref());
        self
    }

    /// The type flag (byte 156).
    pub fn kind(mut self, kind: u8) -> Self {
        self.block[156] = kind;
        self
    }

    pub fn mode(self, mode: u32) -> Self {
        self.octal(100, 8, mode as u64)
    }

    pub fn size(self, size: u64) -> Self {
        self.octal(124, 12, size)
    }

    /// Device major and minor numbers.
    pub fn device(self, major: u32, minor: u32) -> Self {
        self.octal(329, 8, major as u64).octal(337, 8, minor as u64)
    }

    /// Raw bytes at `offset` (anything: magic, base-256 numbers, garbage).
    pub fn set(mut self, offset: usize, bytes: &[u8]) -> Self {
        self.block[offset..offset + bytes.len()].copy_from_slice(bytes);
        self
    }

    /// Records a checksum one off from the right one.
    pub fn bad_checksum(mut self) -> Self {
        self.checksum_delta = 1;
        self
    }

    fn put(&mut self, offset: usize, len: usize, bytes: &[u8]) {
        assert!(bytes.len() <= len, "{} bytes do not fit a {len}-byte header field", bytes.len());
        self.block[offset..offset + len].fill(0);
        self.block[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn octal(mut self, offset: usize, len: usize, value: u64) -> Self {
        let text = format!("{value:0width$o}", width = len - 1);
        assert!(text.len() < len, "{value} does not fit a {len}-byte octal field");
        self.put(offset, len, text.as_bytes());
        self
    }

    /// The finished block, with its checksum.
    pub fn to_block(&self) -> [u8; BLOCK] {
        let mut b = self.block;
        b[148..156].fill(b' ');
        let sum: i64 = b.iter().map(|&x| x as i64).sum::<i64>() + self.checksum_delta;
        let text = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(text.as_bytes());
        b
    }
}

/// One PAX record: `"<len> key=value\n"`, where len counts the whole record.
pub fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

/// A payload file of a [`Parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartFile {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// A bundle taken apart: what a [`CraftedBundle`] is assembled from.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The exact manifest bytes (what is signed).
    pub manifest: Vec<u8>,
    /// The `.minisig` text.
    pub signature: Vec<u8>,
    /// Payload files in archive order.
    pub files: Vec<PartFile>,
}

impl Parts {
    /// Reads a bundle (trusting it: the `tar` crate reads it, nothing is checked) into its parts.
    pub fn read(bundle: &Path) -> Parts {
        let file = std::fs::File::open(bundle).unwrap_or_else(|e| panic!("{}: {e}", bundle.display()));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut plain)
            .unwrap_or_else(|e| panic!("{}: {e}", bundle.display()));
        let mut archive = tar::Archive::new(&plain[..]);
        let mut entries = Vec::new();
        for e in archive.entries().expect("tar entries") {
            let mut e = e.expect("tar entry");
            let path = String::from_utf8(e.path_bytes().into_owned()).expect("UTF-8 entry name");
            let mode = e.header().mode().expect("mode");
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("entry data");
            entries.push(PartFile { path, mode, data });
        }
        assert!(entries.len() >= 2, "{}: fewer than two entries", bundle.display());
        let signature = entries.remove(1);
        let manifest = entries.remove(0);
        assert_eq!(
            (manifest.path.as_str(), signature.path.as_str()),
            (MANIFEST_NAME, SIGNATURE_NAME),
            "{}",
            bundle.display()
        );
        Parts { manifest: manifest.data, signature: signature.data, files: entries }
    }

    /// A small valid release made in process, signed with `key`: app `demo`, one (placeholder) wheel,
    /// one migration, config defaults and a 0755 hook, in `config/`, `hooks/`, `migrations/main/`,
    /// `wheels/`. The wheel is not a real zip: enough for the verifier, not for an install.
    pub fn synthetic(key: &SecretKey, version: &str, sequence: u64) -> Parts {
        let wheel = format!("wheels/demo-{version}-py3-none-any.whl");
        let mut files = vec![
            PartFile { path: "config/defaults.yaml".into(), mode: 0o644, data: b"greeting: hello\n".to_vec() },
            PartFile { path: "hooks/start.sh".into(), mode: 0o755, data: b"#!/bin/sh\nexit 0\n".to_vec() },
            PartFile {
                path: "migrations/main/1.0_init.sql".into(),
                mode: 0o644,
                data: b"CREATE TABLE t (x TEXT);\n".to_vec(),
            },
            PartFile {
                path: wheel.clone(),
                mode: 0o644,
                data: format!("not really a wheel {version}\n").repeat(40).into_bytes(),
            },
        ];
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let entries: Vec<FileEntry> = files
            .iter()
            .map(|f| FileEntry {
                path: f.path.clone(),
                size: f.data.len() as u64,
                sha256: sha256_hex(&f.data),
                mode: format!("{:04o}", f.mode),
            })
            .collect();
        let m = Manifest {
            format: manifest::FORMAT,
            app: "demo".into(),
            version: version.into(),
            sequence,
            upgrades_from: version.into(),
            python: ">=3.9".into(),
            keep_releases: 3,
            app_wheel: wheel.clone(),
            wheels: vec![wheel],
            targets: Vec::new(),
            wheel_info: Vec::new(),
            databases: vec![Database {
                name: "main".into(),
                engine: "sqlite".into(),
                path: "data/main.db".into(),
                schema: SchemaVersion::new(1, 0),
                steps: vec![Step {
                    version: SchemaVersion::new(1, 0),
                    up: Some("migrations/main/1.0_init.sql".into()),
                    data: None,
                    down: None,
                }],
            }],
            config: Some(Config {
                file: "app.yaml".into(),
                version: 1,
                defaults: "config/defaults.yaml".into(),
                converters: vec![],
            }),
            hooks: Hooks { post_apply: Some("hooks/start.sh".into()), ..Hooks::default() },
            sbom: None,
            key_rotations: Vec::new(),
            payload: Payload { entries: entries.len() as u64, bytes: entries.iter().map(|e| e.size).sum() },
            files: entries,
            base: None,
        };
        m.validate().expect("the synthetic manifest is valid");
        let mut parts = Parts { manifest: Vec::new(), signature: Vec::new(), files };
        parts.set_manifest(&m, key);
        parts
    }

    /// The manifest, parsed (panics if invalid).
    pub fn parsed(&self) -> Manifest {
        Manifest::parse(&self.manifest).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The trusted comment our builder writes for this manifest.
    pub fn trusted_comment(&self) -> String {
        let m = self.parsed();
        TrustedInfo { app: m.app, version: m.version, sequence: m.sequence }.format()
    }

    /// Signs the current manifest bytes with `key` (trusted comment from the manifest).
    pub fn sign(&mut self, key: &SecretKey) {
        let comment = self.trusted_comment();
        self.sign_with_comment(key, &comment);
    }

    /// Signs the current manifest bytes with `key` and any one-line trusted comment.
    pub fn sign_with_comment(&mut self, key: &SecretKey, comment: &str) {
        self.signature = key.sign(&self.manifest, comment).unwrap_or_else(|e| panic!("{e}")).to_minisign().into_bytes();
    }

    /// Replaces the manifest by `m` serialised, and signs it.
    /// `m` need not be valid (hostile tests sign manifests the verifier must refuse).
    pub fn set_manifest(&mut self, m: &Manifest, key: &SecretKey) {
        self.manifest = m.to_yaml();
        let comment = TrustedInfo { app: m.app.clone(), version: m.version.clone(), sequence: m.sequence }.format();
        self.sign_with_comment(key, &comment);
    }

    /// The payload file at `path`.
    pub fn file(&self, path: &str) -> &PartFile {
        self.files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no payload file {path}"))
    }

    /// The first payload file whose mode is `mode`.
    pub fn file_with_mode(&self, mode: u32) -> &PartFile {
        self.files.iter().find(|f| f.mode == mode).unwrap_or_else(|| panic!("no payload file with mode {mode:o}"))
    }

    /// `manifest.yaml` and its signature, nothing else yet.
    pub fn head(&self) -> CraftedBundle {
        CraftedBundle::new().file(MANIFEST_NAME, 0o644, &self.manifest).file(SIGNATURE_NAME, 0o644, &self.signature)
    }

    /// The whole bundle, as the builder would lay it out (a valid bundle if the parts are).
    pub fn bundle(&self) -> CraftedBundle {
        self.head().files(&self.files)
    }
}

#[derive(Clone, Debug)]
enum GzOp {
    Truncate(usize),
    Append(Vec<u8>),
    AppendMember(Vec<u8>),
    FlipAt(usize),
    FlipFromEnd(usize),
    FlipFirst(Vec<u8>),
}

/// A tar stream built entry by entry, gzipped, then optionally damaged.
#[derive(Clone, Debug)]
pub struct CraftedBundle {
    tar: Vec<u8>,
    end_of_archive: bool,
    after_end: Vec<u8>,
    level: u32,
    ops: Vec<GzOp>,
}

impl Default for CraftedBundle {
    fn default() -> Self {
        Self::new()
    }
}

impl CraftedBundle {
    /// An empty archive: end-of-archive blocks on, gzip level 6, no damage.
    pub fn new() -> Self {
        CraftedBundle { tar: Vec::new(), end_of_archive: true, after_end: Vec::new(), level: 6, ops: Vec::new() }
    }

    /// Appends a regular file (ustar, type `0`) the way the writer lays it out: a name over 100 bytes
    /// is cut into ustar prefix and name at a `/` if it can be, else put in a PAX header (one `path`
    /// record) followed by a header whose name field holds its first 100 bytes. Written here
    /// independently of `bundle_core`, so the two can check each other.
    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        let size = data.len() as u64;
        if path.len() <= 100 {
            return self.entry(Hdr::file(path, mode, size), data);
        }
        let cut = path.as_bytes()[..path.len().min(156)].iter().rposition(|&b| b == b'/');
        match cut {
            Some(i) if path.len() - i - 1 <= 100 => {
                self.entry(Hdr::file(&path[i + 1..], mode, size).prefix(&path[..i]), data)
            }
            _ => self
                .pax(pax_record("path", path).as_bytes())
                .entry(Hdr::file(&path.as_bytes()[..100], mode, size), data),
        }
    }

    /// Appends a PAX extended header (type `x`, named `././@PaxHeader`) holding `content` as is.
    pub fn pax(self, content: &[u8]) -> Self {
        self.entry(Hdr::pax(content.len() as u64), content)
    }

    /// Appends payload files.
    pub fn files(mut self, files: &[PartFile]) -> Self {
        for f in files {
            self = self.file(&f.path, f.mode, &f.data);
        }
        self
    }

    /// Appends a header block and `data`, zero-padded to a whole block. The header's size field is
    /// whatever `hdr` says, which need not be `data.len()`.
    pub fn entry(mut self, hdr: Hdr, data: &[u8]) -> Self {
        self.tar.extend_from_slice(&hdr.to_block());
        self.tar.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.tar.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Appends raw bytes to the tar stream (no padding).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.tar.extend_from_slice(bytes);
        self
    }

    /// Leaves out the two zero blocks that end a tar archive.
    pub fn without_end_of_archive(mut self) -> Self {
        self.end_of_archive = false;
        self
    }

    /// Bytes inside the compressed stream after the end-of-archive blocks.
    pub fn after_end(mut self, bytes: &[u8]) -> Self {
        self.after_end.extend_from_slice(bytes);
        self
    }

    /// Gzip compression level (0 = stored blocks only, so payload bytes appear as is in the output).
    pub fn level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// Cuts `n` bytes off the end of the gzip output.
    pub fn truncate(mut self, n: usize) -> Self {
        self.ops.push(GzOp::Truncate(n));
        self
    }

    /// Appends raw bytes after the gzip member.
    pub fn append(mut self, bytes: &[u8]) -> Self {
        self.ops.push(GzOp::Append(bytes.to_vec()));
        self
    }

    /// Appends a second, valid gzip member holding `plain` (e.g. a tar stream).
    pub fn append_member(mut self, plain: &[u8]) -> Self {
        self.ops.push(GzOp::AppendMember(plain.to_vec()));
        self
    }

    /// Flips one bit of the byte at `offset` of the gzip output.
    pub fn flip_at(mut self, offset: usize) -> Self {
        self.ops.push(GzOp::FlipAt(offset));
        self
    }

    /// Flips one bit of the gzip trailer's CRC-32 (the data decompresses fine, the CRC does not match).
    pub fn flip_crc(mut self) -> Self {
        self.ops.push(GzOp::FlipFromEnd(8));
        self
    }

    /// Flips one bit of the gzip trailer's length (ISIZE).
    pub fn flip_isize(mut self) -> Self {
        self.ops.push(GzOp::FlipFromEnd(4));
        self
    }

    /// Flips one bit of the first occurrence of `needle` in the gzip output (use with `level(0)` to
    /// hit a payload file's bytes inside a stored block). Panics if absent.
    pub fn flip_first(mut self, needle: &[u8]) -> Self {
        self.ops.push(GzOp::FlipFirst(needle.to_vec()));
        self
    }

    /// The uncompressed tar stream.
    pub fn tar_bytes(&self) -> Vec<u8> {
        let mut t = self.tar.clone();
        if self.end_of_archive {
            t.extend_from_slice(&[0u8; 2 * BLOCK]);
        }
        t.extend_from_slice(&self.after_end);
        t
    }

    /// The final bytes: the gzipped tar stream with the damage applied in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = gzip_member(&self.tar_bytes(), self.level);
        for op in &self.ops {
            match op {
                GzOp::Truncate(n) => {
                    assert!(*n <= out.len(), "cannot cut {n} bytes off {}", out.len());
                    out.truncate(out.len() - n);
                }
                GzOp::Append(b) => out.extend_from_slice(b),
                GzOp::AppendMember(plain) => out.extend_from_slice(&gzip_member(plain, 6)),
                GzOp::FlipAt(i) => out[*i] ^= 0x01,
                GzOp::FlipFromEnd(n) => {
                    let i = out.len() - n;
                    out[i] ^= 0x01;
                }
                GzOp::FlipFirst(needle) => {
                    let i = out
                        .windows(needle.len())
                        .position(|w| w == needle.as_slice())
                        .unwrap_or_else(|| panic!("flip_first: the {}-byte needle is not in the output", needle.len()));
                    out[i] ^= 0x01;
                }
            }
        }
        out
    }

    /// Writes [`CraftedBundle::to_bytes`] to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Decompresses the first gzip member of `data` (what `verify` reads; trailing bytes are ignored).
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Gzips `data` as one member at `level` (flate2's encoder: fixed header, mtime 0).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    gzip_member(data, level)
}

/// One gzip member (flate2's encoder: fixed header with mtime 0).
fn gzip_member(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::new(level));
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_with_the_tar_crate() {
        let bundle = CraftedBundle::new()
            .file("a/b.txt", 0o644, b"hello")
            .entry(Hdr::ustar("dir", b'5', 0o755, 0), b"")
            .entry(Hdr::ustar("link", b'2', 0o777, 0).link_name("/etc/passwd"), b"");
        let tar_bytes = bundle.tar_bytes();
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let got: Vec<(String, tar::EntryType, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().entry_type(), e.header().size().unwrap())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a/b.txt".to_string(), tar::EntryType::Regular, 5),
                ("dir".to_string(), tar::EntryType::Directory, 0),
                ("link".to_string(), tar::EntryType::Symlink, 0)
            ]
        );
        let h = tar::Header::from_byte_slice(&tar_bytes[..512]);
        assert_eq!(h.cksum().unwrap(), {
            let mut b = tar_bytes[..512].to_vec();
            b[148..156].fill(b' ');
            b.iter().map(|&x| x as u32).sum::<u32>()
        });
        assert!(tar::Header::from_byte_slice(&Hdr::file("x", 0o644, 0).bad_checksum().to_block()).cksum().is_ok());
    }

    #[test]
    fn damage_is_applied() {
        let b = CraftedBundle::new().file("x", 0o644, b"abc");
        let good = b.to_bytes();
        assert_eq!(b.clone().truncate(3).to_bytes().len(), good.len() - 3);
        assert_eq!(b.clone().append(b"zz").to_bytes(), [&good[..], b"zz"].concat());
        let crc = b.clone().flip_crc().to_bytes();
        assert_eq!(crc.len(), good.len());
        assert_ne!(crc, good);
        let mut plain = Vec::new();
        assert!(flate2::read::GzDecoder::new(&crc[..]).read_to_end(&mut plain).is_err());
    }
}
