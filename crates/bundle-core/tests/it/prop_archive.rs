//! Property tests of the streaming verifier (`verify_reader` writing into a staging directory), on
//! stable Rust in the normal test suite:
//!
//! * random archives behind a validly signed head: random headers (names from a list of hostile
//!   fragments or random bytes, any type flag, any mode, size fields that lie, link names, ustar
//!   prefixes, GNU magic, bad checksums), random data, the real payload files mixed in, with or
//!   without end-of-archive, trailing bytes;
//!   PAX extended headers (our one-`path`-record form and every other: other keys, several records,
//!   unsafe or short paths, random bytes), a listed file whose name needs a PAX header;
//! * names of any length up to the limit, written by `ArchiveWriter` (PAX where ustar cannot hold
//!   them): accepted, with the same names for the `tar` crate, a PAX header exactly where needed;
//! * random damage to a real fixture bundle (the committed fuzz seed `real-4.0.0`): flipped bytes,
//!   truncation, bytes inserted or appended.
//!
//! Every input must be either refused or accepted with exactly the manifest's files in staging, and
//! never panic; whatever happens, every node under the temp dir is a plain file or directory inside
//! the staging directory (no symlink anywhere), and a sentinel directory beside it is unchanged.
//!
//! Plus deterministic checks of the limits against endless data: a stream that never ends after
//! the archive, after a huge declared manifest or GNU long name, or in zero padding, is refused
//! after a bounded read; the entry and total-size caps of `Limits` are enforced.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bundle_core::archive::{ArchiveWriter, Packing};
use bundle_core::hash::sha256_hex;
use bundle_core::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use bundle_core::paths::BundlePath;
use bundle_core::signature::{PublicKey, SecretKey, TrustedInfo};
use bundle_core::tarfmt;
use bundle_core::verify::{verify_reader, Limits, VerifyError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test key of the fuzz targets (committed under fuzz/keys/, never used for real bundles).
fn key() -> (SecretKey, PublicKey) {
    let sk = SecretKey::read_file(&workspace().join("fuzz/keys/fuzz.key")).expect("fuzz/keys/fuzz.key");
    let pk = PublicKey::read_file(&workspace().join("fuzz/keys/fuzz.pub")).expect("fuzz/keys/fuzz.pub");
    (sk, pk)
}

/// The real fixture bundle 4.0.0 signed by that key (the fuzz seed corpus).
fn real_bundle() -> Vec<u8> {
    std::fs::read(workspace().join("fuzz/corpus/verify_reader/real-4.0.0.bundle.tar.gz"))
        .expect("the committed seed bundle")
}

// ---------------------------------------------------------------------------------------------
// Building archives.

const BLOCK: usize = 512;

fn octal(b: &mut [u8; BLOCK], off: usize, len: usize, v: u64) {
    let text = format!("{v:0w$o}", w = len - 1);
    let text = &text.as_bytes()[text.len().saturating_sub(len - 1)..];
    b[off..off + len].fill(0);
    b[off..off + text.len()].copy_from_slice(text);
}

/// One raw header.
#[derive(Clone, Debug)]
struct Raw {
    name: Vec<u8>,
    prefix: Vec<u8>,
    link: Vec<u8>,
    kind: u8,
    mode: u32,
    size_field: u64,
    gnu: bool,
    bad_checksum: bool,
}

impl Raw {
    fn file(name: &str, mode: u32, size: u64) -> Raw {
        Raw {
            name: name.into(),
            prefix: vec![],
            link: vec![],
            kind: b'0',
            mode,
            size_field: size,
            gnu: false,
            bad_checksum: false,
        }
    }
    fn block(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let n = self.name.len().min(100);
        b[..n].copy_from_slice(&self.name[..n]);
        octal(&mut b, 100, 8, self.mode as u64 & 0o7777777);
        octal(&mut b, 108, 8, 0);
        octal(&mut b, 116, 8, 0);
        octal(&mut b, 124, 12, self.size_field.min(0o77777777777));
        octal(&mut b, 136, 12, 0);
        b[156] = self.kind;
        let l = self.link.len().min(100);
        b[157..157 + l].copy_from_slice(&self.link[..l]);
        b[257..265].copy_from_slice(if self.gnu { b"ustar  \0" } else { b"ustar\x0000" });
        let p = self.prefix.len().min(155);
        b[345..345 + p].copy_from_slice(&self.prefix[..p]);
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&x| x as u64).sum::<u64>() + self.bad_checksum as u64;
        let text = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(text.as_bytes());
        b
    }
}

fn push_entry(tar: &mut Vec<u8>, h: &Raw, data: &[u8]) {
    tar.extend_from_slice(&h.block());
    tar.extend_from_slice(data);
    tar.extend(std::iter::repeat_n(0u8, (BLOCK - data.len() % BLOCK) % BLOCK));
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A listed file whose name only a PAX header holds (last component over 100 bytes).
const LONG: &str =
    "wheels/long-1.0-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.musllinux_1_1_x86_64.whl";

/// Appends a regular file as the bundle writer lays it out: in the ustar name (and prefix) fields, or
/// behind a PAX header with one `path` record when they cannot hold it.
fn push_file(tar: &mut Vec<u8>, path: &str, mode: u32, data: &[u8]) {
    match tarfmt::ustar_split(path.as_bytes()) {
        Some((prefix, name)) => {
            let mut h = Raw::file("", mode, data.len() as u64);
            (h.name, h.prefix) = (name.to_vec(), prefix.to_vec());
            push_entry(tar, &h, data);
        }
        None => {
            push_pax(tar, &tarfmt::pax_record(path.as_bytes()));
            let mut h = Raw::file("", mode, data.len() as u64);
            h.name = tarfmt::pax_name_field(path.as_bytes()).to_vec();
            push_entry(tar, &h, data);
        }
    }
}

/// Appends a PAX extended header holding `content`.
fn push_pax(tar: &mut Vec<u8>, content: &[u8]) {
    let mut h = Raw::file(tarfmt::PAX_HEADER_NAME, 0o644, content.len() as u64);
    h.kind = b'x';
    push_entry(tar, &h, content);
}

/// A small release signed with the fuzz key: its manifest bytes, signature, and payload.
struct Release {
    manifest: Vec<u8>,
    signature: Vec<u8>,
    files: Vec<(String, u32, Vec<u8>)>,
}

fn release() -> &'static Release {
    static R: std::sync::OnceLock<Release> = std::sync::OnceLock::new();
    R.get_or_init(|| make_release(Vec::new()))
}

/// The test release with `extra` files listed too (not referenced by anything).
fn make_release(extra: Vec<(String, u32, Vec<u8>)>) -> Release {
    {
        let mut files: Vec<(String, u32, Vec<u8>)> = vec![
            ("config/defaults.yaml".into(), 0o644, b"greeting: hello\n".to_vec()),
            ("hooks/start.sh".into(), 0o755, b"#!/bin/sh\nexit 0\n".to_vec()),
            ("wheels/demo-1.0.0-py3-none-any.whl".into(), 0o644, b"not really a wheel\n".repeat(40)),
            (LONG.into(), 0o644, b"a name ustar cannot hold\n".to_vec()),
        ];
        files.extend(extra);
        let mut yaml = String::from(
            "format: 1\napp: demo\nversion: 1.0.0\nsequence: 7\nupgrades_from: 1.0.0\npython: '>=3.9'\nkeep_releases: 3\n\
             app_wheel: wheels/demo-1.0.0-py3-none-any.whl\nwheels:\n- wheels/demo-1.0.0-py3-none-any.whl\n\
             hooks:\n  post_apply: hooks/start.sh\n",
        );
        let total: usize = files.iter().map(|f| f.2.len()).sum();
        yaml.push_str(&format!("payload:\n  entries: {}\n  bytes: {total}\nfiles:\n", files.len()));
        for (p, m, d) in &files {
            yaml.push_str(&format!(
                "- path: {p}\n  size: {}\n  sha256: {}\n  mode: '{:04o}'\n",
                d.len(),
                sha256_hex(d),
                m
            ));
        }
        let manifest = yaml.into_bytes();
        let m = bundle_core::manifest::Manifest::parse(&manifest).expect("the test manifest is valid");
        let comment = TrustedInfo { app: m.app.clone(), version: m.version.clone(), sequence: m.sequence }.format();
        let signature = key().0.sign(&manifest, &comment).unwrap().to_minisign().into_bytes();
        Release { manifest, signature, files }
    }
}

fn head(tar: &mut Vec<u8>) {
    let r = release();
    push_entry(tar, &Raw::file(MANIFEST_NAME, 0o644, r.manifest.len() as u64), &r.manifest);
    push_entry(tar, &Raw::file(SIGNATURE_NAME, 0o644, r.signature.len() as u64), &r.signature);
}

// ---------------------------------------------------------------------------------------------
// The property: refused, or exactly the manifest in staging; nothing outside staging, ever.

/// Every node under `dir` (not following symlinks), with its file type.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::FileType)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = p.symlink_metadata().unwrap().file_type();
            if t.is_dir() {
                todo.push(p.clone());
            }
            out.push((p, t));
        }
    }
    out
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    walk(dir)
        .into_iter()
        .map(|(p, t)| {
            let v = if t.is_file() {
                sha256_hex(&std::fs::read(&p).unwrap())
            } else if t.is_dir() {
                "dir".into()
            } else {
                format!("{t:?}")
            };
            (p.strip_prefix(dir).unwrap().to_path_buf(), v)
        })
        .collect()
}

/// Verifies `bytes` into a fresh staging directory and checks the property; returns whether the
/// input was accepted.
fn check_input(bytes: &[u8], keys: &[PublicKey], expect_manifest: Option<&[u8]>) -> Result<bool, TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let staging = t.join("staging");
    let sentinel = t.join("sentinel");
    std::fs::create_dir(&staging).unwrap();
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep.txt"), b"must survive\n").unwrap();
    let before = snapshot(&sentinel);
    let result = verify_reader(bytes, keys, Some(&staging), &Limits::default());

    // Nothing outside staging; nothing but plain files and directories inside it.
    for (p, t_) in walk(t) {
        let p = p.as_path();
        prop_assert!(t_.is_file() || t_.is_dir(), "{} is a {:?}", p.display(), t_);
        prop_assert!(
            p.starts_with(&staging) || p.starts_with(&sentinel),
            "{} was written outside the staging directory",
            p.display()
        );
        if p.starts_with(&staging) {
            let real = p.canonicalize().unwrap();
            prop_assert!(real.starts_with(staging.canonicalize().unwrap()), "{} resolves outside staging", p.display());
            let mode = std::os::unix::fs::PermissionsExt::mode(&p.symlink_metadata().unwrap().permissions());
            prop_assert!(mode & 0o7000 == 0, "{} has mode {mode:o}", p.display());
        }
    }
    prop_assert_eq!(&before, &snapshot(&sentinel), "the sentinel changed");

    if let Ok(v) = &result {
        // Accepted: exactly the signed manifest's files, with their hashes and modes.
        if let Some(m) = expect_manifest {
            prop_assert_eq!(v.manifest_bytes(), m);
        }
        let mut want: BTreeMap<PathBuf, String> = BTreeMap::new();
        for f in &v.manifest().files {
            want.insert(PathBuf::from(&f.path), f.sha256.clone());
        }
        want.insert(MANIFEST_NAME.into(), sha256_hex(v.manifest_bytes()));
        let got: BTreeMap<PathBuf, String> = snapshot(&staging).into_iter().filter(|(_, h)| h != "dir").collect();
        let want_keys: Vec<&PathBuf> = want.keys().collect();
        let got_keys: Vec<&PathBuf> = got.keys().filter(|k| k.as_os_str() != SIGNATURE_NAME).collect();
        prop_assert_eq!(want_keys, got_keys);
        for (k, h) in &want {
            prop_assert_eq!(Some(h), got.get(k), "{} differs", k.display());
        }
    }
    Ok(result.is_ok())
}

/// Name fragments that have broken unpackers.
const FRAGMENTS: &[&[u8]] = &[
    b"..",
    b".",
    b"",
    b"a",
    b"hooks",
    b"start.sh",
    b"config",
    b"C:",
    b"c:\\x",
    b"\\",
    b"..\\..",
    b"/",
    b"//",
    b"\0",
    b"\x1b[2J",
    b"\xc3\xa9",
    b"\xff",
    b"manifest.yaml",
    b"wheels",
    b"~",
    b"a b",
    b"x:y",
    b"CON",
];

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    let listed = prop::sample::select(vec![
        b"config/defaults.yaml".to_vec(),
        b"hooks/start.sh".to_vec(),
        b"wheels/demo-1.0.0-py3-none-any.whl".to_vec(),
        b"hooks".to_vec(),
        b"config".to_vec(),
        b"wheels/".to_vec(),
    ]);
    let joined =
        prop::collection::vec(prop::sample::select(FRAGMENTS.to_vec()), 1..5).prop_map(|parts| parts.join(&b'/'));
    let random = prop::collection::vec(any::<u8>(), 0..110);
    prop_oneof![3 => listed, 4 => joined, 2 => random]
}

#[derive(Clone, Debug)]
struct Entry {
    /// A PAX header's content written before this entry.
    pax: Option<Vec<u8>>,
    raw: Raw,
    data: Vec<u8>,
}

/// PAX header contents: ours for the listed long name (and for names that do not need one, or are
/// unsafe), other keys, several records, wrong lengths, random bytes.
fn pax_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    let record = |key: &str, value: &[u8]| {
        let body = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        [len.to_string().as_bytes(), &body].concat()
    };
    let ours = prop::sample::select(vec![
        tarfmt::pax_record(LONG.as_bytes()),
        tarfmt::pax_record(b"wheels/demo-1.0.0-py3-none-any.whl"),
        tarfmt::pax_record(format!("../{LONG}").as_bytes()),
        tarfmt::pax_record(format!("/{LONG}").as_bytes()),
        tarfmt::pax_record(format!("{LONG}\0/../x").as_bytes()),
        [tarfmt::pax_record(LONG.as_bytes()), tarfmt::pax_record(LONG.as_bytes())].concat(),
    ]);
    let keyed = (
        prop::sample::select(vec![
            "size",
            "linkpath",
            "path",
            "mtime",
            "uid",
            "SCHILY.xattr.user.x",
            "GNU.sparse.size",
        ]),
        prop::collection::vec(any::<u8>(), 0..30),
    )
        .prop_map(move |(k, v)| record(k, &v));
    let random = prop::collection::vec(any::<u8>(), 0..600);
    prop_oneof![12 => Just(None), 3 => ours.prop_map(Some), 2 => keyed.prop_map(Some), 1 => random.prop_map(Some)]
}

fn entry_strategy() -> impl Strategy<Value = Entry> {
    let kind = prop_oneof![6 => Just(b'0'), 3 => Just(b'5'), 1 => Just(0u8), 4 => prop::sample::select(b"1234567LKxgSVZ\xff".to_vec()), 1 => any::<u8>()];
    let mode = prop_oneof![4 => Just(0o644u32), 3 => Just(0o755u32), 1 => Just(0o4755u32), 1 => Just(0o1777u32), 1 => 0u32..0o10000];
    let data = prop_oneof![
        3 => prop::sample::select(release().files.iter().map(|f| f.2.clone()).collect::<Vec<_>>()),
        3 => prop::collection::vec(any::<u8>(), 0..700),
    ];
    let size_lie = prop_oneof![6 => Just(None), 2 => (0u64..2000).prop_map(Some), 1 => Just(Some(0o77777777777u64))];
    let link =
        prop_oneof![8 => Just(Vec::new()), 1 => Just(b"/etc/passwd".to_vec()), 1 => Just(b"../../sentinel".to_vec())];
    let prefix = prop_oneof![8 => Just(Vec::new()), 1 => Just(b"..".to_vec()), 1 => Just(b"/tmp".to_vec()), 1 => Just(b"hooks".to_vec())];
    let long_name = prop_oneof![3 => Just(None), 1 => Just(Some(tarfmt::pax_name_field(LONG.as_bytes()).to_vec()))];
    (
        name_strategy(),
        kind,
        mode,
        data,
        size_lie,
        link,
        prefix,
        any::<bool>(),
        prop::bool::weighted(0.05),
        (pax_strategy(), long_name),
    )
        .prop_map(|(name, kind, mode, data, size_lie, link, prefix, gnu, bad_checksum, (pax, long_name))| {
            let size_field = size_lie.unwrap_or(data.len() as u64);
            // Data follows the header as the size field says (up to what we have).
            let data = if (size_field as usize) < data.len() { data[..size_field as usize].to_vec() } else { data };
            // Sometimes the name field a PAX header for the long listed name expects.
            let name = long_name.unwrap_or(name);
            Entry { pax, raw: Raw { name, prefix, link, kind, mode, size_field, gnu, bad_checksum }, data }
        })
}

#[derive(Clone, Debug)]
struct Archive {
    entries: Vec<Entry>,
    /// Where the real payload goes among the random entries (None: left out).
    payload_at: Option<usize>,
    end_of_archive: bool,
    trailing: Vec<u8>,
    level: u32,
}

fn archive_strategy() -> impl Strategy<Value = Archive> {
    (
        prop::collection::vec(entry_strategy(), 0..6),
        prop_oneof![1 => Just(None), 3 => (0usize..6).prop_map(Some)],
        prop::bool::weighted(0.9),
        prop_oneof![8 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..40), 1 => Just(vec![0u8; 1024])],
        prop::sample::select(vec![0u32, 1, 6]),
    )
        .prop_map(|(entries, payload_at, end_of_archive, trailing, level)| Archive {
            entries,
            payload_at,
            end_of_archive,
            trailing,
            level,
        })
}

fn build(a: &Archive) -> Vec<u8> {
    let mut tar = Vec::new();
    head(&mut tar);
    let put_payload = |tar: &mut Vec<u8>| {
        for (p, m, d) in &release().files {
            push_file(tar, p, *m, d);
        }
    };
    for (i, e) in a.entries.iter().enumerate() {
        if a.payload_at == Some(i) {
            put_payload(&mut tar);
        }
        if let Some(pax) = &e.pax {
            push_pax(&mut tar, pax);
        }
        push_entry(&mut tar, &e.raw, &e.data);
    }
    if a.payload_at.is_some_and(|i| i >= a.entries.len()) {
        put_payload(&mut tar);
    }
    if a.end_of_archive {
        tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    }
    tar.extend_from_slice(&a.trailing);
    gzip(&tar, a.level)
}

/// Cases per property (`PROPTEST_CASES` raises it for a longer soak).
const CASES: u32 = 200;

fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    Config { cases, failure_persistence: None, ..Config::default() }
}

#[test]
fn random_archives_are_refused_or_extracted_strictly_inside_staging() {
    let (_, pk) = key();
    let keys = [pk];
    let mut runner = TestRunner::new(config(CASES));
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&archive_strategy(), |a| {
            let ok = check_input(&build(&a), &keys, Some(&release().manifest))?;
            accepted.set(accepted.get() + ok as u32);
            Ok(())
        })
        .unwrap();
    eprintln!("{} of {CASES} random archives were accepted", accepted.get());
}

#[test]
fn the_unaltered_test_release_is_accepted() {
    // The property above would be vacuous if the head or payload it builds were refused anyway.
    let (_, pk) = key();
    let a = Archive { entries: vec![], payload_at: Some(0), end_of_archive: true, trailing: vec![], level: 6 };
    let v = verify_reader(&build(&a)[..], &[pk], None, &Limits::default()).expect("the clean test release verifies");
    assert_eq!(v.manifest().files.len(), 4);
}

/// A safe path of up to 236 bytes (room for a 4-byte unique prefix), often with a component over
/// 100 bytes (PAX), sometimes one the ustar prefix holds.
fn any_length_path() -> impl Strategy<Value = String> {
    let component = prop_oneof![3 => "[A-Za-z0-9_+~=@-][A-Za-z0-9._+~=@-]{0,30}", 2 => "[a-z0-9_.-]{60,130}"];
    prop::collection::vec(component, 1..5).prop_map(|parts| {
        let mut p = parts.join("/");
        p.truncate(236);
        let p = p.trim_end_matches('/').to_string();
        if BundlePath::parse(&p).is_ok() {
            p
        } else {
            "fallback".into()
        }
    })
}

#[test]
fn names_of_any_length_written_by_the_archive_writer_verify_and_list_the_same() {
    let (_, pk) = key();
    let keys = [pk];
    let mut runner = TestRunner::new(config(CASES / 4));
    let strategy = prop::collection::vec((any_length_path(), prop::collection::vec(any::<u8>(), 0..300)), 1..5);
    let paxed = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |names| {
            // `xN/` keeps the names unique and never a parent of one another.
            let extra: Vec<(String, u32, Vec<u8>)> =
                names.into_iter().enumerate().map(|(i, (p, d))| (format!("x{i}/{p}"), 0o644, d)).collect();
            let r = make_release(extra);
            let mut files = r.files.clone();
            files.sort();
            let mut w = ArchiveWriter::new(Vec::new(), 1_700_000_000).unwrap();
            w.add_file(MANIFEST_NAME, 0o644, r.manifest.len() as u64, &mut &r.manifest[..], Packing::Compress).unwrap();
            w.add_file(SIGNATURE_NAME, 0o644, r.signature.len() as u64, &mut &r.signature[..], Packing::Compress)
                .unwrap();
            for (p, m, d) in &files {
                w.add_file(p, *m, d.len() as u64, &mut &d[..], Packing::for_path(p)).unwrap();
            }
            let bytes = w.finish().unwrap();
            prop_assert!(check_input(&bytes, &keys, Some(&r.manifest))?, "refused what the writer wrote");

            // The `tar` crate sees the same names, and a PAX header exactly before each name ustar
            // cannot hold.
            let plain = gunzip(&bytes).unwrap();
            let mut ar = tar::Archive::new(&plain[..]);
            let raw: Vec<(u8, Vec<u8>)> = ar
                .entries()
                .unwrap()
                .raw(true)
                .map(|e| {
                    let e = e.unwrap();
                    (e.header().entry_type().as_byte(), e.path_bytes().into_owned())
                })
                .collect();
            let mut want: Vec<(u8, Vec<u8>)> = vec![(b'0', MANIFEST_NAME.into()), (b'0', SIGNATURE_NAME.into())];
            for (p, _, _) in &files {
                if tarfmt::ustar_split(p.as_bytes()).is_none() {
                    want.push((b'x', tarfmt::PAX_HEADER_NAME.into()));
                    want.push((b'0', tarfmt::pax_name_field(p.as_bytes()).to_vec()));
                    paxed.set(paxed.get() + 1);
                } else {
                    want.push((b'0', p.clone().into_bytes()));
                }
            }
            prop_assert_eq!(&raw, &want);
            let mut ar = tar::Archive::new(&plain[..]);
            let names: Vec<String> = ar
                .entries()
                .unwrap()
                .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
                .collect();
            let expected: Vec<String> = [MANIFEST_NAME.to_string(), SIGNATURE_NAME.to_string()]
                .into_iter()
                .chain(files.iter().map(|f| f.0.clone()))
                .collect();
            prop_assert_eq!(names, expected);
            Ok(())
        })
        .unwrap();
    assert!(paxed.get() > 0, "no generated name needed a PAX header: the property says nothing about them");
}

/// Damage to the real bundle: flips, truncation, insertions, appended bytes.
#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Append(Vec<u8>),
}

fn damage_strategy(len: usize) -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        6 => (0..len, 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        1 => (0..len).prop_map(Damage::Truncate),
        1 => (0..len, prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
    ];
    prop::collection::vec(one, 1..4)
}

fn apply_damage(mut b: Vec<u8>, d: &[Damage]) -> Vec<u8> {
    for x in d {
        match x {
            Damage::Flip(i, v) => {
                let n = b.len();
                if n > 0 {
                    b[*i % n] ^= v;
                }
            }
            Damage::Truncate(i) => b.truncate(*i),
            Damage::Insert(i, bytes) => {
                let i = (*i).min(b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Damage::Append(bytes) => b.extend_from_slice(bytes),
        }
    }
    b
}

fn gunzip(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).ok()?;
    Some(out)
}

#[test]
fn damaged_real_bundles_are_refused_or_unchanged_in_content() {
    let (_, pk) = key();
    let keys = [pk];
    let good = real_bundle();
    let plain = gunzip(&good).unwrap();
    let manifest = verify_reader(&good[..], &keys, None, &Limits::default())
        .expect("the committed seed bundle verifies")
        .manifest_bytes()
        .to_vec();
    let mut runner = TestRunner::new(config(CASES));
    runner
        .run(&damage_strategy(good.len()), |d| {
            let bad = apply_damage(good.clone(), &d);
            if check_input(&bad, &keys, Some(&manifest))? {
                // Only damage that changes nothing a decoder reads (gzip header fields such as
                // mtime/OS, padding bits of a stored block) may pass.
                let content = gunzip(&bad);
                prop_assert_eq!(
                    content.as_deref(),
                    Some(&plain[..]),
                    "damage {:?} changed the content and was accepted",
                    d
                );
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Endless data and limits.

/// Counts what is read, and ends after `limit` bytes with an error (a "stream that never ends"
/// that the test can still stop).
struct Endless<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Endless<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.limit {
            return Err(std::io::Error::other("the verifier kept reading an endless stream"));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A gzip member whose deflate stream never ends: `prefix` in stored blocks, then stored blocks
/// of zeros forever.
struct EndlessGzip {
    out: Vec<u8>,
    pos: usize,
}

impl EndlessGzip {
    fn new(prefix: &[u8]) -> EndlessGzip {
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        for chunk in prefix.chunks(65535) {
            Self::stored(&mut out, chunk);
        }
        EndlessGzip { out, pos: 0 }
    }
    fn stored(out: &mut Vec<u8>, data: &[u8]) {
        out.push(0); // BFINAL=0, BTYPE=00, byte-aligned
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.extend_from_slice(&(!(data.len() as u16)).to_le_bytes());
        out.extend_from_slice(data);
    }
}

impl Read for EndlessGzip {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.out.len() {
            self.out.clear();
            self.pos = 0;
            Self::stored(&mut self.out, &[0u8; 65535]);
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn kind_of(r: Result<bundle_core::verify::VerifiedBundle, VerifyError>) -> String {
    match r {
        Ok(_) => "accepted".into(),
        Err(e) => e.kind().to_string(),
    }
}

/// Reads allowed beyond what the verifier needs: its input buffer (1 MiB) and a few blocks.
const SLACK: u64 = (1 << 20) + 64 * 1024;

#[test]
fn endless_bytes_after_the_gzip_member_are_not_read() {
    let (_, pk) = key();
    let real = real_bundle();
    let mut r = Endless { inner: real.as_slice().chain(std::io::repeat(0)), read: 0, limit: 64 << 20 };
    let got = kind_of(verify_reader(&mut r, &[pk], None, &Limits::default()));
    assert_eq!(got, "trailing_data");
    assert!(r.read <= real_bundle().len() as u64 + SLACK, "read {} bytes of an endless stream", r.read);
}

#[test]
fn endless_zeros_after_the_end_of_archive_are_refused() {
    let (_, pk) = key();
    let mut tar = gunzip(&real_bundle()).unwrap();
    tar.truncate(tar.len() - 2 * BLOCK);
    while tar.ends_with(&[0u8; BLOCK]) {
        tar.truncate(tar.len() - BLOCK);
    }
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let mut r = Endless { inner: EndlessGzip::new(&tar), read: 0, limit: 256 << 20 };
    let got = kind_of(verify_reader(&mut r, &[pk], None, &Limits::default()));
    assert_eq!(got, "trailing_data");
    let max = tar.len() as u64 + Limits::default().max_trailing_zeros + 2 * SLACK;
    assert!(r.read <= max, "read {} bytes (more than {max}) of endless zero padding", r.read);
}

#[test]
fn a_huge_declared_manifest_is_not_read() {
    let (_, pk) = key();
    let mut tar = Vec::new();
    tar.extend_from_slice(&Raw::file(MANIFEST_NAME, 0o644, 8 << 30).block());
    let mut r = Endless { inner: EndlessGzip::new(&tar), read: 0, limit: 64 << 20 };
    assert_eq!(kind_of(verify_reader(&mut r, &[pk], None, &Limits::default())), "limit");
    assert!(r.read <= SLACK, "read {} bytes", r.read);
}

#[test]
fn a_manifest_just_under_the_cap_is_read_once_and_refused_by_its_signature() {
    // Declared size = cap: read (16 MiB of zeros), then refused for its signature, not parsed.
    let (_, pk) = key();
    let cap = Limits::default().max_manifest_bytes;
    let mut tar = Vec::new();
    tar.extend_from_slice(&Raw::file(MANIFEST_NAME, 0o644, cap).block());
    let mut r = Endless { inner: EndlessGzip::new(&tar), read: 0, limit: 64 << 20 };
    let got = kind_of(verify_reader(&mut r, &[pk], None, &Limits::default()));
    assert_ne!(got, "accepted");
    assert!(r.read <= cap + 2 * SLACK, "read {} bytes for a {cap}-byte manifest", r.read);
}

#[test]
fn a_gnu_long_name_claiming_gigabytes_is_not_read() {
    let (_, pk) = key();
    let mut tar = Vec::new();
    head(&mut tar);
    let mut h = Raw::file("././@LongLink", 0o644, 0o77777777777);
    h.kind = b'L';
    h.gnu = true;
    tar.extend_from_slice(&h.block());
    let start = tar.len() as u64;
    let mut r = Endless { inner: EndlessGzip::new(&tar), read: 0, limit: 64 << 20 };
    assert_eq!(kind_of(verify_reader(&mut r, &[pk], None, &Limits::default())), "entry_type");
    assert!(r.read <= start + SLACK, "read {} bytes", r.read);
}

#[test]
fn an_entry_is_never_read_past_its_declared_size() {
    // A listed file whose archive data goes on forever (the header says the manifest's size; the
    // stream never delivers a next header but endless zeros): the verifier reads the declared
    // size, hashes it, and stops at the first non-header.
    let (_, pk) = key();
    let mut tar = Vec::new();
    head(&mut tar);
    let (p, m, d) = &release().files[0];
    tar.extend_from_slice(&Raw::file(p, *m, d.len() as u64).block());
    tar.extend_from_slice(d);
    let mut r = Endless { inner: EndlessGzip::new(&tar), read: 0, limit: 64 << 20 };
    let got = kind_of(verify_reader(&mut r, &[pk], None, &Limits::default()));
    assert_ne!(got, "accepted");
    assert!(r.read <= tar.len() as u64 + SLACK, "read {} bytes, the archive had {}", r.read, tar.len());
}

#[test]
fn entry_and_size_caps() {
    let (_, pk) = key();
    let a = Archive { entries: vec![], payload_at: Some(0), end_of_archive: true, trailing: vec![], level: 6 };
    let bytes = build(&a);
    let few = Limits { max_entries: 2, ..Limits::default() };
    assert_eq!(kind_of(verify_reader(&bytes[..], std::slice::from_ref(&pk), None, &few)), "limit");
    let small = Limits { max_total_bytes: 100, ..Limits::default() };
    assert_eq!(kind_of(verify_reader(&bytes[..], std::slice::from_ref(&pk), None, &small)), "limit");
    let tiny_manifest = Limits { max_manifest_bytes: 100, ..Limits::default() };
    assert_eq!(kind_of(verify_reader(&bytes[..], std::slice::from_ref(&pk), None, &tiny_manifest)), "limit");
    assert_eq!(kind_of(verify_reader(&bytes[..], &[pk], None, &Limits::default())), "accepted");
}

#[test]
fn names_longer_than_the_limit_are_refused() {
    // 150-byte prefix + 100-byte name: 251 bytes, over the 240-byte path limit.
    let (_, pk) = key();
    let mut tar = Vec::new();
    head(&mut tar);
    let mut h = Raw::file(&"b".repeat(100), 0o644, 4);
    h.prefix = "a".repeat(150).into_bytes();
    push_entry(&mut tar, &h, b"pwn\n");
    tar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let tmp = tempfile::tempdir().unwrap();
    let got = kind_of(verify_reader(&gzip(&tar, 6)[..], &[pk], Some(tmp.path()), &Limits::default()));
    assert_eq!(got, "unsafe_path");
}
