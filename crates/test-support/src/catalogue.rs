//! The bad-archive catalogue, shared by every tool that reads bundles.
//!
//! Each [`Case`] is one hostile input crafted from a real bundle (the fixture release 4.0.0, built
//! with `bundle-build build` by a key made with `bundle-build keygen`, and taken apart with
//! [`Parts`]): the expected exit code (3 unless said otherwise), the expected `--json` `error.kind`,
//! substrings the error message must contain (the culprit: entry name, key id, …) and the input
//! itself ([`Input`]: bytes, bytes to check against other keys, or a bundle path that is a
//! directory, a FIFO or nothing).
//!
//! Two crates drive it: `bundle-build`'s `tests/it/verify_rejects.rs` (through `bundle-build verify`)
//! and `bundle-install`'s `tests/it/hostile.rs` (through `bundle-install verify` and `apply`, on an
//! installed site and on an empty root). Each turns every case into its own `#[test]` with
//! [`hostile_cases!`](crate::hostile_cases), which hands the list of case names to a macro of theirs:
//!
//! ```ignore
//! macro_rules! tests { ($($name:ident),* $(,)?) => { $( #[test] fn $name() { check(case(stringify!($name))) } )* } }
//! test_support::hostile_cases!(tests);
//! ```
//!
//! [`Env`] (keys and bundles) is built once per test process and needs the `bundle-build` binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bundle_core::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use bundle_core::rotation::{KeyRotation, RotationAction, Statement};
use bundle_core::signature::{KeyId, SecretKey, Signature};

pub use crate::craft::pax_record;
use crate::craft::{CraftedBundle, Hdr, PartFile, Parts};
use crate::fixtures::{build_fixture_bundle, scratch_dir};
use crate::keys::{legacy_ed_signature, KeyPair};
use crate::many::many_empty_entries;

/// Shared by every case of a test process: keys and the real bundles they are crafted from.
pub struct Env {
    /// Signs every bundle; trusted by default.
    pub signer: KeyPair,
    /// A second key, never used to sign the fixture bundles.
    pub stranger: KeyPair,
    /// A `.pub` file holding a small-order (weak) Ed25519 point, the identity.
    pub weak_pub: PathBuf,
    /// The fixture release 4.0.0 as `bundle-build build` wrote it.
    pub real: PathBuf,
    /// The same, taken apart.
    pub parts: Parts,
    /// The fixture release 3.0.0, taken apart (for mix-and-match).
    pub old: Parts,
    /// Where the keys and bundles live.
    pub dir: PathBuf,
    built: Mutex<HashMap<String, PathBuf>>,
}

/// The catalogue's environment, built on first use (two keygens and two fixture builds).
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = scratch_dir("hostile-catalogue");
        let signer = KeyPair::keygen(&dir.join("signer"));
        let stranger = KeyPair::keygen(&dir.join("stranger"));
        let real = build_fixture_bundle("4.0.0", &signer.secret_path, &dir.join("out4"));
        let old_path = build_fixture_bundle("3.0.0", &signer.secret_path, &dir.join("out3"));
        let weak_pub = dir.join("weak.pub");
        std::fs::write(&weak_pub, weak_public_key()).expect("write weak.pub");
        let parts = Parts::read(&real);
        let old = Parts::read(&old_path);
        let built = Mutex::new(HashMap::from([("4.0.0".to_string(), real.clone()), ("3.0.0".to_string(), old_path)]));
        Env { signer, stranger, weak_pub, real, parts, old, dir, built }
    })
}

impl Env {
    /// The signer's secret key.
    pub fn key(&self) -> SecretKey {
        self.signer.secret()
    }
    pub fn parts(&self) -> Parts {
        self.parts.clone()
    }
    /// A 0644 payload file (a migration: small, compressed).
    pub fn plain_file(&self) -> PartFile {
        self.parts.files.iter().find(|f| f.mode == 0o644 && f.path.ends_with(".sql")).expect("a .sql file").clone()
    }
    /// A 0755 payload file (a hook).
    pub fn exec_file(&self) -> PartFile {
        self.parts.file_with_mode(0o755).clone()
    }
    pub fn wheel(&self) -> PartFile {
        self.parts.files.iter().find(|f| f.path.ends_with(".whl")).expect("a wheel").clone()
    }
    /// The fixture bundle of release `version`, signed by [`Env::signer`] (built on first use).
    pub fn bundle(&self, version: &str) -> PathBuf {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built
            .entry(version.to_string())
            .or_insert_with(|| {
                build_fixture_bundle(version, &self.signer.secret_path, &self.dir.join(format!("out-{version}")))
            })
            .clone()
    }
}

/// The minisign `.pub` text of the identity point (small order), key id `0707070707070707`.
pub fn weak_public_key() -> String {
    let mut raw = b"Ed".to_vec();
    raw.extend_from_slice(&[7; 8]);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    raw.extend_from_slice(&identity);
    format!("untrusted comment: minisign public key 0707070707070707\n{}\n", B64.encode(&raw))
}

/// What is handed to the tool as the bundle.
#[derive(Clone, Debug)]
pub enum Input {
    Bytes(Vec<u8>),
    /// Bytes, verified with these public keys instead of the signer's (for a site: its `trust/`
    /// holds exactly these).
    BytesTrusting(Vec<u8>, Vec<PathBuf>),
    /// The bundle path is a directory.
    Directory,
    /// The bundle path is a FIFO nobody writes to.
    Fifo,
    /// The bundle path does not exist.
    Nothing,
}

impl From<CraftedBundle> for Input {
    fn from(b: CraftedBundle) -> Input {
        Input::Bytes(b.to_bytes())
    }
}

impl Input {
    /// Creates the input at `path` (whose parent exists). Returns the keys to trust instead of the
    /// signer's, if the input says so.
    #[allow(unsafe_code)]
    pub fn place(&self, path: &Path) -> Option<Vec<PathBuf>> {
        match self {
            Input::Bytes(b) => std::fs::write(path, b).expect("write the bundle"),
            Input::BytesTrusting(b, keys) => {
                std::fs::write(path, b).expect("write the bundle");
                return Some(keys.clone());
            }
            Input::Directory => std::fs::create_dir(path).expect("mkdir"),
            Input::Fifo => {
                let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in the path");
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
            }
            Input::Nothing => {}
        }
        None
    }

    /// Whether the tool must refuse without reading (a FIFO: a hang means it waited).
    pub fn is_fifo(&self) -> bool {
        matches!(self, Input::Fifo)
    }
}

/// One hostile input and what the tool must say about it.
pub struct Case {
    pub name: &'static str,
    /// `error.kind` of the `--json` output.
    pub kind: &'static str,
    /// Exit code (3: verification failed, unless the case says otherwise).
    pub exit: i32,
    contains: fn(&Env) -> Vec<String>,
    craft: fn(&Env) -> Input,
}

impl Case {
    /// Substrings `error.message` must contain.
    pub fn contains(&self) -> Vec<String> {
        (self.contains)(env())
    }
    /// The crafted input (built from [`env`]).
    pub fn input(&self) -> Input {
        (self.craft)(env())
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (exit {}, {})", self.name, self.exit, self.kind)
    }
}

/// The case called `name` (panics if there is none).
pub fn case(name: &str) -> &'static Case {
    cases().iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no hostile case `{name}`"))
}

/// The real bundle with its payload replaced: manifest, signature, then `files`.
pub fn with_files(files: &[PartFile]) -> CraftedBundle {
    env().parts.head().files(files)
}

/// The real bundle with the payload file `path` written through `hdr` (data as given).
pub fn replace_entry(path: &str, hdr: Hdr, data: &[u8]) -> CraftedBundle {
    let p = env().parts();
    let mut b = p.head();
    for f in &p.files {
        b = if f.path == path { b.entry(hdr.clone(), data) } else { b.file(&f.path, f.mode, &f.data) };
    }
    b
}

/// The real bundle with one hostile entry inserted right before the payload file `path`.
pub fn insert_before(path: &str, hdr: Hdr, data: &[u8]) -> CraftedBundle {
    let p = env().parts();
    let mut b = p.head();
    for f in &p.files {
        if f.path == path {
            b = b.entry(hdr.clone(), data);
        }
        b = b.file(&f.path, f.mode, &f.data);
    }
    b
}

/// The real bundle with one hostile entry inserted before the payload.
pub fn with_entry_first(hdr: Hdr, data: &[u8]) -> CraftedBundle {
    let p = env().parts();
    p.head().entry(hdr, data).files(&p.files)
}

/// A hostile regular file named by raw bytes, placed first in the payload.
pub fn named(name: &[u8]) -> CraftedBundle {
    with_entry_first(Hdr::file(name, 0o644, 4), b"pwn\n")
}

/// A safe name too long for a ustar header (its last component is over 100 bytes), listed nowhere:
/// the one kind of name the writer puts in a PAX header.
pub fn long_name() -> String {
    format!("wheels/{}-1.0-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.whl", "long_name".repeat(6))
}

/// The real bundle with a PAX header holding `records` and then `next` (with `data`) inserted
/// before the payload; `None`: the PAX header is the last entry before the end-of-archive blocks.
pub fn pax_then(records: &str, next: Option<(Hdr, &[u8])>) -> CraftedBundle {
    let p = env().parts();
    match next {
        Some((hdr, data)) => p.head().pax(records.as_bytes()).entry(hdr, data).files(&p.files),
        None => p.bundle().pax(records.as_bytes()),
    }
}

/// [`pax_then`] with a regular file header whose name field is the first 100 bytes of `path`, as
/// the writer makes it: only the PAX content is wrong.
pub fn pax_path_then_file(records: &str, path: &str) -> CraftedBundle {
    let name = &path.as_bytes()[..path.len().min(100)];
    pax_then(records, Some((Hdr::file(name, 0o644, 4), b"pwn\n")))
}

/// A special entry (type flag `kind`) using the name of a listed payload file.
pub fn typed(kind: u8, edit: impl FnOnce(Hdr) -> Hdr) -> CraftedBundle {
    let f = env().plain_file();
    replace_entry(&f.path, edit(Hdr::ustar(&f.path, kind, 0o644, 0)), b"")
}

/// The real bundle with another signature file.
pub fn with_signature(sig: Vec<u8>) -> CraftedBundle {
    let mut p = env().parts();
    p.signature = sig;
    p.bundle()
}

/// The group order L of Ed25519, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Adds L to the scalar S (the second half of a 64-byte Ed25519 signature): the same value mod L,
/// a second (non-canonical) encoding of the same signature.
pub fn add_l_to_s(sig: &mut [u8; 64]) {
    let mut carry = 0u16;
    for (b, l) in sig[32..].iter_mut().zip(L) {
        let v = *b as u16 + l as u16 + carry;
        *b = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "S + L overflows 256 bits");
}

/// The real signature with `edit` applied to its parsed form, written back as text.
pub fn edited_signature(edit: impl FnOnce(&mut Signature)) -> Vec<u8> {
    let mut s = Signature::parse_bytes(&env().parts.signature, SIGNATURE_NAME).expect("the real signature parses");
    edit(&mut s);
    s.to_minisign().into_bytes()
}

/// "`new` joins `old` for `app`", signed by both.
pub fn rotation(old: &SecretKey, new: &SecretKey, app: &str) -> KeyRotation {
    Statement { app: app.into(), action: RotationAction::Add, old: old.public_key(), new: new.public_key() }
        .sign(old, new)
        .expect("sign a statement")
}

/// The real bundle carrying `rotations` in its manifest, signed by `signer`.
pub fn with_rotations(e: &Env, rotations: Vec<KeyRotation>, signer: &SecretKey) -> Input {
    let mut p = e.parts();
    let mut m = p.parsed();
    m.key_rotations = rotations;
    p.set_manifest(&m, signer);
    p.bundle().into()
}

pub fn e_key_id() -> String {
    env().signer.key_id.clone()
}
pub fn e_plain() -> PartFile {
    env().plain_file()
}
pub fn e_exec() -> PartFile {
    env().exec_file()
}
pub fn e_wheel() -> PartFile {
    env().wheel()
}

/// How many empty entries [`million_empty_entries`] case appends.
pub const MILLION: u32 = 1_000_000;

macro_rules! table {
    ($($name:ident: $kind:literal $(exit $exit:literal)?, [$($sub:expr),* $(,)?], $craft:expr;)*) => {
        /// Every case, in catalogue order.
        pub fn cases() -> &'static [Case] {
            static CASES: &[Case] = &[$(Case {
                name: stringify!($name),
                kind: $kind,
                exit: table!(@exit $($exit)?),
                contains: |_e: &Env| -> Vec<String> { vec![$(String::from($sub)),*] },
                craft: $craft,
            }),*];
            CASES
        }
    };
    (@exit) => { 3 };
    (@exit $e:literal) => { $e };
}

table! {
    // --- the first two entries -------------------------------------------------------------------
    missing_signature_entry: "missing_signature", [SIGNATURE_NAME],
        |e| CraftedBundle::new().file(MANIFEST_NAME, 0o644, &e.parts.manifest).files(&e.parts.files).into();
    signature_before_manifest: "missing_manifest", [MANIFEST_NAME, "entry 1"],
        |e| CraftedBundle::new().file(SIGNATURE_NAME, 0o644, &e.parts.signature).file(MANIFEST_NAME, 0o644, &e.parts.manifest)
            .files(&e.parts.files).into();
    payload_before_manifest: "missing_manifest", [MANIFEST_NAME],
        |e| CraftedBundle::new().files(&e.parts.files[..1]).file(MANIFEST_NAME, 0o644, &e.parts.manifest)
            .file(SIGNATURE_NAME, 0o644, &e.parts.signature).files(&e.parts.files[1..]).into();
    empty_archive: "missing_manifest", [MANIFEST_NAME],
        |_| CraftedBundle::new().into();
    manifest_as_directory: "missing_manifest", [MANIFEST_NAME],
        |e| CraftedBundle::new().entry(Hdr::ustar(MANIFEST_NAME, b'5', 0o755, 0), b"")
            .file(SIGNATURE_NAME, 0o644, &e.parts.signature).files(&e.parts.files).into();
    manifest_header_bad_checksum: "corrupt", [MANIFEST_NAME, "checksum"],
        |e| CraftedBundle::new().entry(Hdr::file(MANIFEST_NAME, 0o644, e.parts.manifest.len() as u64).bad_checksum(), &e.parts.manifest)
            .file(SIGNATURE_NAME, 0o644, &e.parts.signature).files(&e.parts.files).into();
    manifest_too_large: "limit", [MANIFEST_NAME],
        |_| CraftedBundle::new().entry(Hdr::file(MANIFEST_NAME, 0o644, 17 << 20), b"").into();

    // --- signature and trust ---------------------------------------------------------------------
    // Key rotation statements cannot bring in a key the site does not trust (bundle-install's
    // tests/it/rotation.rs covers revoked keys and the statements that do apply).
    rotation_statement_forged: "untrusted_key", [env().stranger.key_id.clone()],
        |e| {
            let (signer, stranger) = (e.key(), e.stranger.secret());
            let mut r = rotation(&signer, &stranger, "fieldlog");
            r.signatures[0] = stranger.sign(r.statement.as_bytes(), "forged").expect("sign").to_minisign();
            with_rotations(e, vec![r], &stranger)
        };
    rotation_statement_for_another_app: "untrusted_key", [env().stranger.key_id.clone()],
        |e| with_rotations(e, vec![rotation(&e.key(), &e.stranger.secret(), "otherapp")], &e.stranger.secret());
    rotation_statement_signed_by_the_new_key_only: "untrusted_key", [env().stranger.key_id.clone()],
        |e| {
            let mut r = rotation(&e.key(), &e.stranger.secret(), "fieldlog");
            r.signatures.remove(0);
            with_rotations(e, vec![r], &e.stranger.secret())
        };
    manifest_bit_flipped: "bad_signature", [e_key_id()],
        |e| {
            let mut p = e.parts();
            let i = p.manifest.iter().position(|&b| b == b'4').expect("a digit");
            p.manifest[i] = b'5';
            p.bundle().into()
        };
    manifest_byte_appended: "bad_signature", [e_key_id()],
        |e| {
            let mut p = e.parts();
            p.manifest.push(b'\n');
            p.bundle().into()
        };
    trusted_comment_edited: "bad_trusted_comment", [e_key_id()],
        |e| {
            let sig = String::from_utf8(e.parts.signature.clone()).unwrap().replace("version:4.0.0", "version:9.0.0");
            assert!(sig.contains("version:9.0.0"));
            with_signature(sig.into_bytes()).into()
        };
    trusted_comment_disagrees_with_manifest: "trusted_comment_mismatch", ["9.9.9", "4.0.0"],
        |e| {
            let mut p = e.parts();
            let comment = p.trusted_comment().replace("version:4.0.0", "version:9.9.9");
            p.sign_with_comment(&e.key(), &comment);
            p.bundle().into()
        };
    trusted_comment_not_a_bundle_comment: "malformed_trusted_info", [],
        |e| {
            let mut p = e.parts();
            p.sign_with_comment(&e.key(), "timestamp:1700000000\tfile:manifest.yaml");
            p.bundle().into()
        };
    signature_from_another_manifest: "bad_signature", [e_key_id()],
        |e| with_signature(e.old.signature.clone()).into();
    old_signed_manifest_with_new_payload: "unlisted_entry", ["fieldlog-4.0.0"],
        |e| {
            // 3.0.0's manifest and signature (valid), with the 4.0.0 app wheel swapped in.
            let new_wheel = e.parts.files.iter().find(|f| f.path.contains("fieldlog-4.0.0")).unwrap().clone();
            let files: Vec<PartFile> = e.old.files.iter()
                .map(|f| if f.path.contains("fieldlog-3.0.0") { new_wheel.clone() } else { f.clone() })
                .collect();
            e.old.head().files(&files).into()
        };
    untrusted_key: "untrusted_key", [e_key_id()],
        |e| Input::BytesTrusting(e.parts.bundle().to_bytes(), vec![e.stranger.public_path.clone()]);
    same_key_id_different_key: "bad_signature", [e_key_id()],
        |e| {
            // An attacker's key that claims the trusted key's id.
            let forged = SecretKey::from_seed(KeyId(e.key().key_id().0), [7; 32]);
            let mut p = e.parts();
            p.sign(&forged);
            p.bundle().into()
        };
    resigned_by_stranger: "untrusted_key", [env().stranger.key_id.clone()],
        |e| {
            let mut p = e.parts();
            p.sign(&e.stranger.secret());
            p.bundle().into()
        };
    legacy_ed_signature_refused: "legacy_signature", ["legacy"],
        |e| with_signature(legacy_ed_signature(&e.key(), &e.parts.manifest, &e.parts.trusted_comment()).into_bytes()).into();
    signature_garbage: "malformed_signature", [],
        |_| with_signature(b"untrusted comment: x\nnot base64 at all\ntrusted comment: y\nzzz\n".to_vec()).into();

    // --- payload against the manifest ------------------------------------------------------------
    unlisted_entry: "unlisted_entry", ["extra.txt"],
        |e| e.parts.bundle().file("extra.txt", 0o644, b"surprise\n").into();
    unlisted_entry_first: "unlisted_entry", ["wheels/evil-1.0-py3-none-any.whl"],
        |_| with_entry_first(Hdr::file("wheels/evil-1.0-py3-none-any.whl", 0o644, 3), b"zip").into();
    second_manifest_entry: "unlisted_entry", [MANIFEST_NAME],
        |e| e.parts.bundle().file(MANIFEST_NAME, 0o644, b"format: 1\n").into();
    missing_entry: "missing_entry", [e_plain().path],
        |e| {
            let keep: Vec<PartFile> = e.parts.files.iter().filter(|f| f.path != e.plain_file().path).cloned().collect();
            with_files(&keep).into()
        };
    no_payload_at_all: "missing_entry", [],
        |_| with_files(&[]).into();
    duplicate_entry: "duplicate_entry", [e_plain().path],
        |e| e.parts.bundle().files(&[e.plain_file()]).into();
    duplicate_entry_other_content: "duplicate_entry", [e_plain().path],
        |e| {
            // The second copy would overwrite the checked one in a naive unpacker.
            let f = e.plain_file();
            let evil = vec![b'#'; f.data.len()];
            e.parts.bundle().file(&f.path, f.mode, &evil).into()
        };
    hash_mismatch: "hash_mismatch", [e_plain().path],
        |e| {
            let f = e.plain_file();
            let mut data = f.data.clone();
            *data.last_mut().unwrap() ^= 0x20;
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, data.len() as u64), &data).into()
        };
    size_longer_than_declared: "size_mismatch", [e_plain().path],
        |e| {
            let f = e.plain_file();
            let data = [&f.data[..], b"\n"].concat();
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, data.len() as u64), &data).into()
        };
    size_shorter_than_declared: "size_mismatch", [e_plain().path],
        |e| {
            let f = e.plain_file();
            let data = &f.data[..f.data.len() - 1];
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, data.len() as u64), data).into()
        };
    size_field_huge: "size_mismatch", [e_plain().path],
        |e| {
            let f = e.plain_file();
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, 0o77777777777), &f.data).into()
        };
    mode_mismatch_exec_bit_added: "mode_mismatch", [e_plain().path, "755"],
        |e| {
            let f = e.plain_file();
            replace_entry(&f.path, Hdr::file(&f.path, 0o755, f.data.len() as u64), &f.data).into()
        };
    mode_mismatch_exec_bit_dropped: "mode_mismatch", [e_exec().path],
        |e| {
            let f = e.exec_file();
            replace_entry(&f.path, Hdr::file(&f.path, 0o644, f.data.len() as u64), &f.data).into()
        };
    setuid_mode: "entry_mode", [e_exec().path, "4755"],
        |e| {
            let f = e.exec_file();
            replace_entry(&f.path, Hdr::file(&f.path, 0o4755, f.data.len() as u64), &f.data).into()
        };
    setgid_mode: "entry_mode", [e_exec().path, "2755"],
        |e| {
            let f = e.exec_file();
            replace_entry(&f.path, Hdr::file(&f.path, 0o2755, f.data.len() as u64), &f.data).into()
        };
    sticky_directory: "entry_mode", ["hooks"],
        |_| with_entry_first(Hdr::ustar("hooks", b'5', 0o1777, 0), b"").into();
    directory_not_implied_by_files: "unlisted_entry", ["etc"],
        |_| with_entry_first(Hdr::ustar("etc", b'5', 0o755, 0), b"").into();
    directory_named_like_a_file: "unlisted_entry", [e_plain().path],
        |e| with_entry_first(Hdr::ustar(&e.plain_file().path, b'5', 0o755, 0), b"").into();

    // --- unsafe names ----------------------------------------------------------------------------
    path_dotdot: "unsafe_path", ["../x", "traversal"],
        |_| named(b"../x").into();
    path_inner_dotdot: "unsafe_path", ["a/../../x", "traversal"],
        |_| named(b"a/../../x").into();
    path_dotdot_into_sentinel: "unsafe_path", ["../sentinel/keep.txt"],
        |_| named(b"../sentinel/keep.txt").into();
    path_absolute: "unsafe_path", ["/x", "absolute"],
        |_| named(b"/x").into();
    path_absolute_via_ustar_prefix: "unsafe_path", ["/etc/passwd", "absolute"],
        |_| with_entry_first(Hdr::file("passwd", 0o644, 4).prefix("/etc"), b"pwn\n").into();
    path_dotdot_via_ustar_prefix: "unsafe_path", ["../passwd"],
        |_| with_entry_first(Hdr::file("passwd", 0o644, 4).prefix(".."), b"pwn\n").into();
    path_drive_letter_backslash: "unsafe_path", ["C:", "backslash"],
        |_| named(b"C:\\x").into();
    path_drive_relative: "unsafe_path", ["C:x"],
        |_| named(b"C:x").into();
    path_backslash_traversal: "unsafe_path", ["backslash"],
        |_| named(b"..\\..\\x").into();
    path_dot_component: "unsafe_path", ["`.` component"],
        |_| named(b"./hooks/x").into();
    path_empty_component: "unsafe_path", ["empty path component"],
        |_| named(b"hooks//x").into();
    path_trailing_slash_file: "unsafe_path", ["empty path component"],
        |_| named(b"hooks/x/").into();
    path_non_ascii_lookalike: "unsafe_path", ["character outside"],
        |_| named("hооks/start.sh".as_bytes()).into(); // Cyrillic о
    path_not_utf8: "unsafe_path", ["UTF-8"],
        |_| named(b"hooks/\xff").into();
    path_control_character: "unsafe_path", ["character outside"],
        |_| named(b"hooks/a\x1bb").into();

    // --- entry types -----------------------------------------------------------------------------
    symlink_entry: "entry_type", [e_plain().path, "symbolic link"],
        |_| typed(b'2', |h| h.link_name("/etc/passwd")).into();
    symlink_entry_relative_escape: "entry_type", ["symbolic link"],
        |_| with_entry_first(Hdr::ustar("hooks", b'2', 0o777, 0).link_name("../../.."), b"").into();
    hardlink_entry: "entry_type", [e_plain().path, "hard link"],
        |_| typed(b'1', |h| h.link_name("/etc/shadow")).into();
    char_device_entry: "entry_type", [e_plain().path, "character device"],
        |_| typed(b'3', |h| h.device(1, 3)).into();
    block_device_entry: "entry_type", [e_plain().path, "block device"],
        |_| typed(b'4', |h| h.device(8, 0)).into();
    fifo_entry: "entry_type", [e_plain().path, "fifo"],
        |_| typed(b'6', |h| h).into();
    contiguous_file_entry: "entry_type", ["contiguous"],
        |_| typed(b'7', |h| h).into();
    gnu_long_name_entry: "entry_type", ["././@LongLink", "GNU long name"],
        |e| {
            let long = format!("{}\0", e.plain_file().path);
            with_entry_first(Hdr::gnu("././@LongLink", b'L', 0o644, long.len() as u64), long.as_bytes()).into()
        };
    gnu_long_name_claiming_gigabytes: "entry_type", ["GNU long name"],
        |_| with_entry_first(Hdr::gnu("././@LongLink", b'L', 0o644, 0o77777777777), b"").into();
    gnu_long_link_entry: "entry_type", ["GNU long link name"],
        |_| with_entry_first(Hdr::gnu("././@LongLink", b'K', 0o644, 12), b"/etc/shadow\0").into();
    gnu_sparse_entry: "entry_type", ["GNU sparse"],
        |_| typed(b'S', |h| h).into();
    pax_header_entry: "unsafe_path", ["traversal"],
        |e| {
            let rec = pax_record("path", &format!("../{}", e.plain_file().path));
            with_entry_first(Hdr::ustar("PaxHeader/x", b'x', 0o644, rec.len() as u64), rec.as_bytes()).into()
        };
    pax_size_override: "bad_pax_header", ["\"size\" is not allowed"],
        |e| {
            // CVE-2026-33055 shape: a PAX `size` record disagreeing with the next entry's ustar size.
            let f = e.plain_file();
            let rec = pax_record("size", "0");
            insert_before(&f.path, Hdr::ustar("PaxHeader/f", b'x', 0o644, rec.len() as u64), rec.as_bytes()).into()
        };
    pax_global_header_entry: "entry_type", ["PAX global header"],
        |_| {
            let rec = pax_record("comment", "hello");
            with_entry_first(Hdr::ustar("pax_global_header", b'g', 0o644, rec.len() as u64), rec.as_bytes()).into()
        };
    volume_label_entry: "entry_type", ["volume label"],
        |_| with_entry_first(Hdr::gnu("LABEL", b'V', 0o644, 0), b"").into();
    unknown_type_entry: "entry_type", ["unknown-type"],
        |_| typed(b'Z', |h| h).into();

    // --- header damage ---------------------------------------------------------------------------
    bad_header_checksum: "corrupt", [e_plain().path, "checksum"],
        |e| {
            let f = e.plain_file();
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, f.data.len() as u64).bad_checksum(), &f.data).into()
        };
    v7_header_without_magic: "corrupt", ["not a ustar header"],
        |e| {
            let f = e.plain_file();
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, f.data.len() as u64).set(257, &[0; 8]), &f.data).into()
        };
    base256_size_field: "corrupt", ["size"],
        |e| {
            let f = e.plain_file();
            let mut size = [0u8; 12];
            size[0] = 0x80;
            size[4..].copy_from_slice(&(f.data.len() as u64).to_be_bytes());
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, 0).set(124, &size), &f.data).into()
        };
    garbage_in_mode_field: "corrupt", ["mode"],
        |e| {
            let f = e.plain_file();
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, f.data.len() as u64).set(100, b"00006x4\0"), &f.data).into()
        };
    regular_file_with_link_name: "corrupt", ["link name"],
        |e| {
            let f = e.plain_file();
            replace_entry(&f.path, Hdr::file(&f.path, f.mode, f.data.len() as u64).link_name("/etc/passwd"), &f.data).into()
        };
    lone_zero_block_mid_archive: "corrupt", ["zero block"],
        |e| e.parts.head().raw(&[0; 512]).files(&e.parts.files).into();

    // --- the tar and gzip ends -------------------------------------------------------------------
    missing_end_of_archive: "truncated", ["ends early"],
        |e| e.parts.bundle().without_end_of_archive().into();
    single_end_of_archive_block: "truncated", ["ends early"],
        |e| e.parts.bundle().without_end_of_archive().raw(&[0; 512]).into();
    data_after_end_of_archive: "trailing_data", ["after the end-of-archive"],
        |e| e.parts.bundle().after_end(b"hidden").into();
    entry_after_end_of_archive: "trailing_data", [],
        |e| {
            let extra = CraftedBundle::new().file("extra.txt", 0o644, b"hidden\n").tar_bytes();
            e.parts.bundle().after_end(&extra).into()
        };
    trailing_garbage_after_gzip: "trailing_data", ["after the end of the compressed stream"],
        |e| e.parts.bundle().append(b"garbage").into();
    trailing_zeros_after_gzip: "trailing_data", [],
        |e| e.parts.bundle().append(&[0; 1024]).into();
    second_gzip_member: "trailing_data", [],
        |e| {
            let extra = CraftedBundle::new().file("extra.txt", 0o644, b"hidden\n").tar_bytes();
            e.parts.bundle().append_member(&extra).into()
        };
    real_bundle_with_trailing_garbage: "trailing_data", [],
        |e| Input::Bytes([std::fs::read(&e.real).unwrap(), b"tail".to_vec()].concat());
    bad_crc: "corrupt", [],
        |e| e.parts.bundle().flip_crc().into();
    bad_isize: "corrupt", [],
        |e| e.parts.bundle().flip_isize().into();
    real_bundle_bad_crc: "corrupt", [],
        |e| {
            let mut b = std::fs::read(&e.real).unwrap();
            let i = b.len() - 8;
            b[i] ^= 0x80;
            Input::Bytes(b)
        };
    flipped_byte_in_stored_wheel: "hash_mismatch", [e_wheel().path],
        |e| {
            let w = e.wheel();
            let needle = w.data[w.data.len() / 2..w.data.len() / 2 + 32].to_vec();
            e.parts.bundle().level(0).flip_first(&needle).into()
        };
    truncated_in_gzip_trailer: "truncated", [],
        |e| e.parts.bundle().truncate(1).into();
    truncated_without_gzip_trailer: "truncated", [],
        |e| e.parts.bundle().truncate(8).into();
    truncated_without_final_deflate_block: "truncated", [],
        |e| {
            let n = e.parts.bundle().to_bytes().len();
            e.parts.bundle().truncate(n / 10).into()
        };
    truncated_to_half: "truncated", [],
        |e| {
            let n = e.parts.bundle().to_bytes().len();
            e.parts.bundle().truncate(n / 2).into()
        };
    truncated_to_gzip_header: "truncated", [],
        |e| {
            let n = e.parts.bundle().to_bytes().len();
            e.parts.bundle().truncate(n - 10).into()
        };
    real_bundle_truncated: "truncated", [],
        |e| {
            let b = std::fs::read(&e.real).unwrap();
            Input::Bytes(b[..b.len() - 100].to_vec())
        };
    zeros_bomb_after_end_of_archive: "trailing_data", [],
        // 4 MiB of zeros (a few KiB compressed): more padding than GNU tar ever writes is refused.
        |e| e.parts.bundle().after_end(&vec![0; 4 << 20]).into();
    gzip_header_endless_file_name: "corrupt", [],
        |_| {
            let mut b = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 255];
            b.extend(std::iter::repeat_n(b'a', 200_000));
            Input::Bytes(b)
        };
    empty_file: "truncated", [],
        |_| Input::Bytes(Vec::new());
    plain_tar_not_gzip: "corrupt", [],
        |e| Input::Bytes(e.parts.bundle().tar_bytes());

    // --- the bundle file itself ------------------------------------------------------------------
    bundle_is_a_directory: "bundle_not_regular_file", [],
        |_| Input::Directory;
    bundle_is_a_fifo: "bundle_not_regular_file", [],
        |_| Input::Fifo;
    bundle_does_not_exist: "bundle_unreadable", ["case.bundle.tar.gz"],
        |_| Input::Nothing;

    // --- messages stay one line ------------------------------------------------------------------
    refused_entry_name_with_newline: "entry_type", ["symbolic link"],
        |_| with_entry_first(Hdr::ustar("hooks/a\nerror: forged second line", b'2', 0o777, 0).link_name("/etc"), b"").into();
    refused_entry_name_with_terminal_escape: "entry_type", ["fifo"],
        |_| with_entry_first(Hdr::ustar("x\x1b[2J\x1b[31mOK", b'6', 0o644, 0), b"").into();

    // --- added for the shared catalogue (both tools) ---------------------------------------------
    path_dotdot_alone: "unsafe_path", ["traversal"],
        |_| named(b"..").into();
    path_double_slash: "unsafe_path", ["//x", "absolute"],
        |_| named(b"//x").into();
    path_empty_name: "unsafe_path", ["empty name"],
        |_| named(b"").into();
    path_nul_first_byte: "unsafe_path", ["empty name"],
        // Tar names end at the first NUL: one at the start leaves an empty name.
        |_| named(b"\0../../x").into();
    path_nul_truncates_name: "unlisted_entry", ["evil"],
        // Everything after the NUL is ignored (GNU tar lists `evil` too): an unlisted file.
        |_| named(b"evil\0/../../etc/passwd").into();
    path_longer_than_240_bytes: "unsafe_path", ["longer than 240"],
        |_| with_entry_first(Hdr::file("b".repeat(100), 0o644, 4).prefix("a".repeat(150)), b"pwn\n").into();
    symlink_then_file_through_it: "entry_type", ["hooks", "symbolic link"],
        // `hooks` -> the sentinel beside the site (from state/staging/<run>/), then the listed hooks.
        |_| with_entry_first(Hdr::ustar("hooks", b'2', 0o777, 0).link_name("../../../../sentinel"), b"").into();
    hardlink_then_file_through_it: "entry_type", ["hard link"],
        |e| {
            let f = e.plain_file();
            insert_before(&f.path, Hdr::ustar(&f.path, b'1', 0o644, 0).link_name("../../../../sentinel/keep.txt"), b"").into()
        };
    pax_linkpath_record: "bad_pax_header", ["\"linkpath\" is not allowed"],
        |e| {
            let rec = pax_record("linkpath", "/etc/shadow");
            insert_before(&e.plain_file().path, Hdr::ustar("PaxHeader/l", b'x', 0o644, rec.len() as u64), rec.as_bytes()).into()
        };
    pax_xattr_record: "bad_pax_header", ["SCHILY.xattr.security.capability"],
        |e| {
            // A file capability (cap_setuid+ep) as GNU tar/star store xattrs.
            let rec = pax_record("SCHILY.xattr.security.capability", "\u{1}\0\0\u{2}\u{80}\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
            insert_before(&e.exec_file().path, Hdr::ustar("PaxHeader/c", b'x', 0o644, rec.len() as u64), rec.as_bytes()).into()
        };
    // --- PAX extended headers: only one `path` record, only for a name ustar cannot hold -----------
    pax_path_and_size_records: "bad_pax_header", ["more than one PAX record"],
        |_| {
            let recs = pax_record("path", &long_name()) + &pax_record("size", "0");
            pax_path_then_file(&recs, &long_name()).into()
        };
    pax_two_path_records: "bad_pax_header", ["more than one PAX record"],
        |e| {
            // GNU tar takes the last, another reader the first: which file is it?
            let recs = pax_record("path", &long_name()) + &pax_record("path", &e.plain_file().path);
            pax_path_then_file(&recs, &long_name()).into()
        };
    pax_path_dotdot: "unsafe_path", ["traversal"],
        |_| {
            let path = format!("wheels/../../../../{}", long_name());
            pax_path_then_file(&pax_record("path", &path), &path).into()
        };
    pax_path_with_nul: "unsafe_path", ["NUL byte"],
        |_| {
            // A C reader stops at the NUL; ours would see the rest.
            let path = format!("{}\0/../../../etc/passwd", long_name());
            pax_path_then_file(&pax_record("path", &path), &long_name()).into()
        };
    pax_path_absolute: "unsafe_path", ["absolute"],
        |_| {
            let path = format!("/etc/{}", long_name());
            pax_path_then_file(&pax_record("path", &path), &path).into()
        };
    pax_path_empty: "unsafe_path", ["empty name"],
        |_| pax_path_then_file(&pax_record("path", ""), "x").into();
    pax_then_symlink: "entry_type", ["symbolic link"],
        |_| {
            let hdr = Hdr::ustar(&long_name().as_bytes()[..100], b'2', 0o777, 0).link_name("/etc");
            pax_then(&pax_record("path", &long_name()), Some((hdr, b""))).into()
        };
    pax_then_hardlink: "entry_type", ["hard link"],
        |_| {
            let hdr = Hdr::ustar(&long_name().as_bytes()[..100], b'1', 0o644, 0).link_name("../../sentinel/keep.txt");
            pax_then(&pax_record("path", &long_name()), Some((hdr, b""))).into()
        };
    pax_then_pax: "bad_pax_header", ["followed by another PAX header"],
        |_| {
            let rec = pax_record("path", &long_name());
            pax_then(&rec, Some((Hdr::pax(rec.len() as u64), rec.as_bytes()))).into()
        };
    pax_at_the_end: "bad_pax_header", ["no entry after it"],
        |_| pax_then(&pax_record("path", &long_name()), None).into();
    pax_then_global_header: "entry_type", ["PAX global header"],
        |_| {
            let rec = pax_record("comment", "hello");
            pax_then(&pax_record("path", &long_name()), Some((Hdr::ustar("pax_global_header", b'g', 0o644, rec.len() as u64), rec.as_bytes()))).into()
        };
    pax_global_header_with_path: "entry_type", ["PAX global header"],
        |_| {
            let rec = pax_record("path", &long_name());
            with_entry_first(Hdr::ustar("pax_global_header", b'g', 0o644, rec.len() as u64), rec.as_bytes()).into()
        };
    pax_for_a_short_name: "bad_pax_header", ["fits a ustar header"],
        |e| {
            // The real file, described twice: harmless here, but nothing the writer makes.
            let f = e.plain_file();
            let keep: Vec<PartFile> = e.parts.files.iter().filter(|g| g.path != f.path).cloned().collect();
            e.parts.head().pax(pax_record("path", &f.path).as_bytes()).file(&f.path, f.mode, &f.data).files(&keep).into()
        };
    pax_for_a_name_ustar_prefix_holds: "bad_pax_header", ["fits a ustar header"],
        |_| {
            let path = format!("{}/{}", "d".repeat(120), "f".repeat(90));
            pax_path_then_file(&pax_record("path", &path), &path).into()
        };
    pax_name_field_names_another_file: "bad_pax_header", ["name field"],
        |e| {
            // A PAX-blind tool would see the listed file; we would see the long name.
            let f = e.plain_file();
            pax_then(&pax_record("path", &long_name()), Some((Hdr::file(&f.path, f.mode, f.data.len() as u64), &f.data))).into()
        };
    pax_name_field_in_ustar_prefix: "bad_pax_header", ["name field"],
        |_| {
            let long = long_name();
            let name = &long.as_bytes()[..100];
            pax_then(&pax_record("path", &long_name()), Some((Hdr::file(name, 0o644, 4).prefix("wheels"), b"pwn\n"))).into()
        };
    pax_unknown_key: "bad_pax_header", ["\"mtime\" is not allowed"],
        |_| pax_path_then_file(&pax_record("mtime", "1700000000.5"), &long_name()).into();
    pax_record_length_too_short: "bad_pax_header", ["length"],
        |_| {
            let rec = pax_record("path", &long_name());
            let (len, rest) = rec.split_once(' ').unwrap();
            let bad = format!("{} {rest}", len.parse::<usize>().unwrap() - 1);
            pax_path_then_file(&bad, &long_name()).into()
        };
    pax_record_length_too_long: "bad_pax_header", ["length"],
        |_| {
            let rec = pax_record("path", &long_name());
            let (len, rest) = rec.split_once(' ').unwrap();
            let bad = format!("{} {rest}", len.parse::<usize>().unwrap() + 5);
            pax_path_then_file(&bad, &long_name()).into()
        };
    pax_record_length_leading_zero: "bad_pax_header", ["length"],
        |_| {
            // The right count, spelled `0NNN`: a second spelling of one record.
            let body = format!(" path={}\n", long_name());
            let rec = format!("0{}{body}", body.len() + 4);
            pax_path_then_file(&rec, &long_name()).into()
        };
    pax_header_larger_than_a_block: "bad_pax_header", ["a PAX header of 1011 bytes"],
        |_| {
            let rec = pax_record("path", &"a".repeat(1000));
            assert_eq!(rec.len(), 1011);
            pax_path_then_file(&rec, &long_name()).into()
        };
    pax_header_size_field_lies: "bad_pax_header", [],
        |_| {
            // The size field says more than the record: the rest of the block is NUL padding.
            let rec = pax_record("path", &long_name());
            let p = env().parts();
            let hdr = Hdr::pax(rec.len() as u64 + 10);
            p.head().entry(hdr, rec.as_bytes()).entry(Hdr::file(&long_name().as_bytes()[..100], 0o644, 4), b"pwn\n").files(&p.files).into()
        };
    non_canonical_signature: "bad_signature", [e_key_id()],
        |_| with_signature(edited_signature(|s| add_l_to_s(&mut s.signature))).into();
    non_canonical_global_signature: "bad_trusted_comment", [e_key_id()],
        |_| with_signature(edited_signature(|s| add_l_to_s(&mut s.global_signature))).into();
    small_order_key_trusted: "malformed_key" exit 2, ["small-order"],
        |e| {
            // R = identity, S = 0 "verifies" anything under the identity key with lenient Ed25519.
            let mut forged = [0u8; 64];
            forged[0] = 1;
            let sig = edited_signature(|s| {
                s.key_id = KeyId([7; 8]);
                s.signature = forged;
                s.global_signature = forged;
            });
            let mut p = e.parts();
            p.signature = sig;
            Input::BytesTrusting(p.bundle().to_bytes(), vec![e.weak_pub.clone()])
        };
    million_empty_entries: "unlisted_entry", ["e/0000000"],
        // The signed head, then a million empty files nobody listed (~512 MB of tar, a few MB of
        // gzip): refused at the first one, without reading the rest.
        |e| Input::Bytes(many_empty_entries(&e.parts.head().without_end_of_archive().tar_bytes(), MILLION));
    million_empty_entries_after_payload: "unlisted_entry", ["e/0000000"],
        // The same after the real payload: all of it checks out, then the flood starts.
        |e| Input::Bytes(many_empty_entries(&e.parts.bundle().without_end_of_archive().tar_bytes(), MILLION));
}

/// Calls `$m! { case_name, case_name, … }` with every case of [`cases`], in order: the way a test
/// crate turns each case into its own `#[test]`.
#[macro_export]
macro_rules! hostile_cases {
    ($m:ident) => {
        $m! {
            missing_signature_entry, signature_before_manifest, payload_before_manifest, empty_archive,
            manifest_as_directory, manifest_header_bad_checksum, manifest_too_large, rotation_statement_forged,
            rotation_statement_for_another_app, rotation_statement_signed_by_the_new_key_only, manifest_bit_flipped,
            manifest_byte_appended, trusted_comment_edited, trusted_comment_disagrees_with_manifest,
            trusted_comment_not_a_bundle_comment, signature_from_another_manifest,
            old_signed_manifest_with_new_payload, untrusted_key, same_key_id_different_key,
            resigned_by_stranger, legacy_ed_signature_refused, signature_garbage, unlisted_entry,
            unlisted_entry_first, second_manifest_entry, missing_entry, no_payload_at_all, duplicate_entry,
            duplicate_entry_other_content, hash_mismatch, size_longer_than_declared,
            size_shorter_than_declared, size_field_huge, mode_mismatch_exec_bit_added,
            mode_mismatch_exec_bit_dropped, setuid_mode, setgid_mode, sticky_directory,
            directory_not_implied_by_files, directory_named_like_a_file, path_dotdot, path_inner_dotdot,
            path_dotdot_into_sentinel, path_absolute, path_absolute_via_ustar_prefix,
            path_dotdot_via_ustar_prefix, path_drive_letter_backslash, path_drive_relative,
            path_backslash_traversal, path_dot_component, path_empty_component, path_trailing_slash_file,
            path_non_ascii_lookalike, path_not_utf8, path_control_character, symlink_entry,
            symlink_entry_relative_escape, hardlink_entry, char_device_entry, block_device_entry, fifo_entry,
            contiguous_file_entry, gnu_long_name_entry, gnu_long_name_claiming_gigabytes,
            gnu_long_link_entry, gnu_sparse_entry, pax_header_entry, pax_size_override,
            pax_global_header_entry, volume_label_entry, unknown_type_entry, bad_header_checksum,
            v7_header_without_magic, base256_size_field, garbage_in_mode_field, regular_file_with_link_name,
            lone_zero_block_mid_archive, missing_end_of_archive, single_end_of_archive_block,
            data_after_end_of_archive, entry_after_end_of_archive, trailing_garbage_after_gzip,
            trailing_zeros_after_gzip, second_gzip_member, real_bundle_with_trailing_garbage, bad_crc,
            bad_isize, real_bundle_bad_crc, flipped_byte_in_stored_wheel, truncated_in_gzip_trailer,
            truncated_without_gzip_trailer, truncated_without_final_deflate_block, truncated_to_half,
            truncated_to_gzip_header, real_bundle_truncated, zeros_bomb_after_end_of_archive,
            gzip_header_endless_file_name, empty_file, plain_tar_not_gzip, bundle_is_a_directory,
            bundle_is_a_fifo, bundle_does_not_exist, refused_entry_name_with_newline,
            refused_entry_name_with_terminal_escape, path_dotdot_alone, path_double_slash, path_empty_name,
            path_nul_first_byte, path_nul_truncates_name, path_longer_than_240_bytes,
            symlink_then_file_through_it, hardlink_then_file_through_it, pax_linkpath_record,
            pax_xattr_record, pax_path_and_size_records, pax_two_path_records, pax_path_dotdot, pax_path_with_nul,
            pax_path_absolute, pax_path_empty, pax_then_symlink, pax_then_hardlink, pax_then_pax, pax_at_the_end,
            pax_then_global_header, pax_global_header_with_path, pax_for_a_short_name,
            pax_for_a_name_ustar_prefix_holds, pax_name_field_names_another_file, pax_name_field_in_ustar_prefix,
            pax_unknown_key, pax_record_length_too_short, pax_record_length_too_long,
            pax_record_length_leading_zero, pax_header_larger_than_a_block, pax_header_size_field_lies,
            non_canonical_signature, non_canonical_global_signature,
            small_order_key_trusted, million_empty_entries, million_empty_entries_after_payload,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_list_matches_the_table() {
        macro_rules! names {
            ($($n:ident),* $(,)?) => { vec![$(stringify!($n)),*] };
        }
        let listed: Vec<&str> = crate::hostile_cases!(names);
        let table: Vec<&str> = cases().iter().map(|c| c.name).collect();
        assert_eq!(listed, table, "hostile_cases! and the table must list the same cases in the same order");
        let mut unique = table.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), table.len(), "duplicate case names");
    }
}
