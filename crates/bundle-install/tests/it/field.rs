//! Field use of `bundle-install`, through the real binaries: split bundles, progress on a terminal,
//! and `--json` for every command and error exercised here.
//!
//! * **Split bundles.** Fixture 4.0.0 plus a ~3.4 MB wheel (stored random data, a valid PEP 427
//!   wheel with RECORD) is built twice with the same `SOURCE_DATE_EPOCH`: whole, and with
//!   `--split-size 1M` (four parts, `NAME.parts`, `NAME.parts.minisig`). `cat` of the parts is the
//!   whole bundle; `NAME.001`, `NAME.parts` and the directory all verify (both tools) and install on a
//!   fresh site; a flipped byte, a truncated, swapped or missing part is refused with exit 3 and the
//!   part named exactly (`damaged_part` / `missing_part`, `part K of N (FILE)`), nothing written.
//! * **Progress.** `apply` under a pseudo-terminal (`script -qec CMD /dev/null`, util-linux) draws
//!   spinners, ✓ marks and a byte bar; the same run with stderr a pipe prints only `==> step` lines
//!   and no control sequences; `--json` and `--quiet` draw nothing, on a terminal or not.
//! * **`--json`.** Every `--json` run below goes through [`json_of`]: stdout is exactly one line
//!   holding one JSON object with `ok` and `command`, and on failure `error.kind`, `error.message`
//!   and `error.exit_code` equal to the process's exit code.
//!
//! Needs the workspace binaries (`cargo build` first, same profile and CARGO_TARGET_DIR), python3 and
//! `script`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::{
    bin, build_fixture_bundle, copy_dir, copy_spec, diff_snapshots, run, run_timeout, scratch_dir, snapshot, tool,
    KeyPair, Run, Snapshot,
};

const EPOCH: &str = "1700000000";
/// Size of the random payload of the extra wheel: the bundle comes to ~3.4 MB, four 1 MiB parts.
const BLOB_BYTES: usize = 3_400_000;
const PART_SIZE: u64 = 1 << 20;
/// An apply on a fresh site in a debug build takes a few seconds; leave room for a loaded machine.
const APPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// Terminal width set with `stty` inside the pseudo-terminal.
const COLS: usize = 100;

/// Writes a valid pure-Python wheel into OUT_DIR (PEP 427: RECORD with sha256 and sizes, last
/// entry; stored, not deflated) holding SIZE bytes of seeded random data; prints its path.
/// `python3 -c MKWHEEL OUT_DIR NAME VERSION LICENSE_LINE SIZE SEED` (LICENSE_LINE may be empty).
const MKWHEEL: &str = r#"
import base64, csv, hashlib, io, random, re, sys, zipfile
out, name, version, license_line, size, seed = sys.argv[1:7]
dist = re.sub(r"[-_.]+", "_", name).lower()
dist_info = f"{dist}-{version}.dist-info"
meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
if license_line:
    meta += license_line + "\n"
meta += "Requires-Python: >=3.9\n"
payload = {
    f"{dist}/__init__.py": f"VERSION = {version!r}\n".encode(),
    f"{dist}/blob.bin": random.Random(int(seed)).randbytes(int(size)),
    f"{dist_info}/METADATA": meta.encode(),
    f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bundle tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    f"{dist_info}/top_level.txt": f"{dist}\n".encode(),
}
def record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
names = sorted(payload, key=lambda arc: (arc.startswith(dist_info + "/"), arc))
record = io.StringIO()
writer = csv.writer(record, lineterminator="\n")
for arc in names:
    writer.writerow([arc, record_hash(payload[arc]), len(payload[arc])])
writer.writerow([f"{dist_info}/RECORD", "", ""])
payload[f"{dist_info}/RECORD"] = record.getvalue().encode()
names.append(f"{dist_info}/RECORD")
path = f"{out}/{dist}-{version}-py3-none-any.whl"
with zipfile.ZipFile(path, "w") as zf:
    for arc in names:
        info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        info.create_system = 3
        info.external_attr = 0o100644 << 16
        zf.writestr(info, payload[arc])
print(path)
"#;

// --- fixture ----------------------------------------------------------------------------------

struct Fx {
    key: KeyPair,
    /// The unsplit bundle.
    whole: PathBuf,
    /// `bundle-build build --json` of the whole and of the split build.
    whole_json: Value,
    split_json: Value,
    /// Directory holding only the parts, the index and its signature.
    split_dir: PathBuf,
    /// `<app>-<version>.bundle.tar.gz`: the parts are `NAME.001`…, the index `NAME.parts`.
    name: String,
    parts: Vec<PathBuf>,
}

impl Fx {
    fn index(&self) -> PathBuf {
        self.split_dir.join(format!("{}.parts", self.name))
    }
    fn part(&self, n: usize) -> PathBuf {
        self.split_dir.join(format!("{}.{n:03}", self.name))
    }
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = scratch_dir("field");
        let key = KeyPair::keygen(&dir.join("vendor"));
        let spec = copy_spec("4.0.0", &dir.join("spec"));
        let r = run(Command::new("python3").arg("-c").arg(MKWHEEL).arg(dir.join("spec/wheelhouse")).args([
            "fieldblob",
            "0.3.0",
            "License: MIT",
            &BLOB_BYTES.to_string(),
            "7",
        ]));
        r.expect_ok();
        let wheel = PathBuf::from(r.stdout.trim());
        assert!(std::fs::metadata(&wheel).unwrap().len() > BLOB_BYTES as u64, "{r}");

        let build = |out: &Path, extra: &[&str]| {
            let r = run(tool("bundle-build")
                .arg("build")
                .arg(&spec)
                .arg("--key")
                .arg(&key.secret_path)
                .arg("--out")
                .arg(out)
                .args(extra)
                .arg("--json")
                .env("SOURCE_DATE_EPOCH", EPOCH));
            let v = json_of(&r, "build");
            assert_eq!(v["ok"], true, "{r}");
            v
        };
        let whole_json = build(&dir.join("whole"), &[]);
        let split_dir = dir.join("split");
        let split_json = build(&split_dir, &["--split-size", "1M"]);
        let whole = PathBuf::from(whole_json["bundle"].as_str().unwrap());
        let name = whole.file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<PathBuf> =
            split_json["parts"].as_array().expect("parts").iter().map(|p| PathBuf::from(p.as_str().unwrap())).collect();
        Fx { key, whole, whole_json, split_json, split_dir, name, parts }
    })
}

/// A copy of the split bundle's directory, to damage.
fn split_copy(label: &str) -> PathBuf {
    let d = scratch_dir(label).join("split");
    copy_dir(&fx().split_dir, &d);
    d
}

fn in_copy(copy: &Path, original: &Path) -> PathBuf {
    copy.join(original.file_name().unwrap())
}

/// A path for a site root that does not exist yet.
fn fresh_root(label: &str) -> PathBuf {
    scratch_dir(label).join("site")
}

/// The real path of the site interpreter (`python3`'s `sys.executable`), passed as `--python`.
fn site_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let r = run(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
        r.expect_ok();
        PathBuf::from(r.stdout.trim())
    })
}

/// [`snapshot`] of a site, except the content of `state/lock` (each command writes its pid there).
fn site_snapshot(root: &Path) -> Snapshot {
    let mut s = snapshot(root);
    for (path, node) in s.iter_mut() {
        if path.ends_with("state/lock") {
            node.1 = "<lock holder record>".into();
        }
    }
    s
}

fn sha256_file(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

// --- running ----------------------------------------------------------------------------------

/// A `--json` run: stdout is exactly one line holding one JSON object with `ok` and `command`;
/// a failure carries `error.kind` and `error.message` and exits non-zero with `error.exit_code`.
/// Progress never shows in `--json` mode: no `==>` lines or control sequences on stderr.
#[track_caller]
fn json_of(r: &Run, command: &str) -> Value {
    assert!(!r.timed_out && !r.panicked(), "{r}");
    let out = r.stdout.strip_suffix('\n').unwrap_or(&r.stdout);
    assert!(!out.is_empty() && !out.contains('\n'), "stdout must be exactly one JSON line:\n{r}");
    let v = r.json();
    assert_eq!(v["command"], command, "{r}");
    match v["ok"].as_bool() {
        Some(true) => {
            assert_eq!(r.code, Some(0), "{r}");
            assert!(v.get("error").is_none(), "{r}");
        }
        Some(false) => {
            assert!(v["error"]["kind"].as_str().is_some_and(|k| !k.is_empty()), "no error.kind:\n{r}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no error.message:\n{r}");
            assert_eq!(v["error"]["exit_code"].as_i64().map(|c| c as i32), r.code, "{r}");
            assert_ne!(r.code, Some(0), "{r}");
        }
        None => panic!("`ok` is not a boolean:\n{r}"),
    }
    assert_no_progress(&r.stderr, r);
    v
}

/// No progress of any kind: no step lines, spinners, bars, ✓ marks or control sequences.
#[track_caller]
fn assert_no_progress(text: &str, r: &Run) {
    assert!(!text.lines().any(|l| l.starts_with("==> ")), "progress lines:\n{r}");
    assert_no_terminal_drawing(text, r);
}

/// Nothing a terminal-only progress display would write.
#[track_caller]
fn assert_no_terminal_drawing(text: &str, r: &Run) {
    assert!(!text.contains('\x1b'), "escape sequences:\n{r}");
    assert!(!text.contains('\r'), "carriage returns:\n{r}");
    assert!(!text.contains('✓'), "✓ marks:\n{r}");
    assert!(!text.chars().any(is_spinner), "spinner frames:\n{r}");
    assert!(!text.contains("[====="), "a progress bar:\n{r}");
}

/// indicatif's default spinner frames are braille patterns.
fn is_spinner(c: char) -> bool {
    ('\u{2800}'..='\u{28ff}').contains(&c)
}

/// `bundle-install apply BUNDLE --root ROOT [--trust KEY] --python PY [extra]`.
fn apply_cmd(bundle: &Path, root: &Path, trust: bool, extra: &[&str]) -> Command {
    let mut c = tool("bundle-install");
    c.arg("apply").arg(bundle).arg("--root").arg(root).arg("--python").arg(site_python());
    if trust {
        c.arg("--trust").arg(&fx().key.public_path);
    }
    c.args(extra);
    c
}

fn apply_json(bundle: &Path, root: &Path, trust: bool) -> (Run, Value) {
    let r = run_timeout(&mut apply_cmd(bundle, root, trust, &["--json"]), APPLY_TIMEOUT);
    let v = json_of(&r, "apply");
    (r, v)
}

fn bi_json(args: &[&std::ffi::OsStr], command: &str) -> (Run, Value) {
    let r = run_timeout(tool("bundle-install").args(args).arg("--json"), APPLY_TIMEOUT);
    let v = json_of(&r, command);
    (r, v)
}

fn bb_verify(bundle: &Path) -> (Run, Value) {
    let r = run_timeout(
        tool("bundle-build").arg("verify").arg(bundle).arg("--trust").arg(&fx().key.public_path).arg("--json"),
        APPLY_TIMEOUT,
    );
    let v = json_of(&r, "verify");
    (r, v)
}

fn bi_verify(bundle: &Path) -> (Run, Value) {
    bi_json(&["verify".as_ref(), bundle.as_os_str(), "--trust".as_ref(), fx().key.public_path.as_os_str()], "verify")
}

fn current(root: &Path) -> Option<PathBuf> {
    std::fs::read_link(root.join("current")).ok()
}

/// Single-quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn command_line(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| sh_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `shell_cmd` (a `sh` command line) under a pseudo-terminal of `COLS` columns with
/// `script -qec CMD /dev/null`: the run's stdout is everything written to the terminal.
fn pty(shell_cmd: &str) -> Run {
    let have = Command::new("sh").arg("-c").arg("command -v script").output().is_ok_and(|o| o.status.success());
    assert!(have, "`script` (util-linux) is required for the terminal tests");
    let inner = format!("stty cols {COLS} rows 50 2>/dev/null; {shell_cmd}");
    run_timeout(Command::new("script").args(["-qec", &inner, "/dev/null"]).env("TERM", "xterm-256color"), APPLY_TIMEOUT)
}

/// Whether the site at `root` runs 4.0.0 with the extra wheel installed.
#[track_caller]
fn assert_installed(root: &Path) {
    assert_eq!(current(root), Some(PathBuf::from("releases/4.0.0")), "{}", root.display());
    let v = run(Command::new(root.join("current/venv/bin/fieldlog")).arg("version"));
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 4.0.0\n"), "{v}");
    let blob = walkdir::WalkDir::new(root.join("current/venv"))
        .into_iter()
        .flatten()
        .find(|e| e.file_name() == "blob.bin" && e.path().parent().is_some_and(|p| p.ends_with("fieldblob")))
        .unwrap_or_else(|| panic!("fieldblob/blob.bin is not installed under {}", root.display()));
    assert_eq!(blob.metadata().unwrap().len(), BLOB_BYTES as u64);
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0xff;
    std::fs::write(path, data).unwrap();
}

/// `error.kind` is `kind`, exit 3, and the message names `part K of N (FILE)`.
#[track_caller]
fn assert_part_error(r: &Run, v: &Value, kind: &str, part: usize) {
    let f = fx();
    let n = f.parts.len();
    assert_eq!((r.code, v["error"]["kind"].as_str()), (Some(3), Some(kind)), "{r}");
    let msg = v["error"]["message"].as_str().unwrap();
    let file = format!("{}.{part:03}", f.name);
    assert!(msg.contains(&format!("part {part} of {n}")), "the message must say `part {part} of {n}`: {msg}");
    assert!(msg.contains(&file), "the message must name {file}: {msg}");
}

// --- split bundles ----------------------------------------------------------------------------

#[test]
fn split_build_writes_parts_whose_cat_is_the_unsplit_bundle() {
    let f = fx();
    let n = f.parts.len();
    assert!(n >= 4, "a ~3.4 MB bundle at --split-size 1M has at least four parts: {:#}", f.split_json);
    for (i, p) in f.parts.iter().enumerate() {
        assert_eq!(p, &f.part(i + 1), "parts are NAME.001, NAME.002, … in order");
        let len = std::fs::metadata(p).unwrap().len();
        if i + 1 < n {
            assert_eq!(len, PART_SIZE, "{} is not the last part: exactly 1 MiB", p.display());
        } else {
            assert!(len > 0 && len <= PART_SIZE, "{}: {len} bytes", p.display());
        }
    }
    // The index and its signature; nothing else in the directory.
    assert_eq!(PathBuf::from(f.split_json["bundle"].as_str().unwrap()), f.index(), "{:#}", f.split_json);
    let mut listed: Vec<String> = std::fs::read_dir(&f.split_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = (1..=n).map(|i| format!("{}.{i:03}", f.name)).collect();
    expected.push(format!("{}.parts", f.name));
    expected.push(format!("{}.parts.minisig", f.name));
    expected.sort();
    assert_eq!(listed, expected);

    // `cat` of the parts is byte-identical to the unsplit bundle built with the same SOURCE_DATE_EPOCH.
    let cat = run(Command::new("sh").arg("-c").arg(format!(
        "cat {} | sha256sum",
        f.parts.iter().map(|p| sh_quote(&p.to_string_lossy())).collect::<Vec<_>>().join(" ")
    )));
    cat.expect_ok();
    let whole_sha = sha256_file(&f.whole);
    assert_eq!(
        cat.stdout.split_whitespace().next(),
        Some(whole_sha.as_str()),
        "cat of the parts differs from the unsplit bundle"
    );
    let mut joined = Vec::new();
    for p in &f.parts {
        joined.extend(std::fs::read(p).unwrap());
    }
    assert!(
        joined == std::fs::read(&f.whole).unwrap(),
        "cat of the parts is not byte-identical to {}",
        f.whole.display()
    );

    // Both builds report the same bundle.
    for k in ["sha256", "bytes", "manifest_sha256", "entries", "payload_bytes", "key_id"] {
        assert_eq!(f.split_json[k], f.whole_json[k], "`{k}` differs between the split and the whole build");
    }
    assert_eq!(f.whole_json["sha256"].as_str(), Some(whole_sha.as_str()));
    assert_eq!(f.whole_json["parts"], serde_json::json!([]), "{:#}", f.whole_json);
}

#[test]
fn split_bundle_verifies_given_part_one_the_index_or_the_directory() {
    let f = fx();
    let (r, whole) = bb_verify(&f.whole);
    assert_eq!(whole["ok"], true, "{r}");
    for path in [f.part(1), f.index(), f.split_dir.clone()] {
        for (r, v) in [bb_verify(&path), bi_verify(&path)] {
            assert_eq!(v["ok"], true, "{}: {r}", path.display());
            for k in ["app", "version", "sequence", "manifest_sha256", "entries", "payload_bytes", "key_id"] {
                assert_eq!(v[k], whole[k], "`{k}` of {} differs from the whole bundle's: {r}", path.display());
            }
        }
    }
    // inspect reads a split bundle too.
    let whole_manifest = run(tool("bundle-build").arg("inspect").arg(&f.whole).arg("--json"));
    let whole_manifest = json_of(&whole_manifest, "inspect")["manifest"].clone();
    for path in [f.part(1), f.index(), f.split_dir.clone()] {
        let r = run(tool("bundle-build").arg("inspect").arg(&path).arg("--json"));
        let v = json_of(&r, "inspect");
        assert_eq!(v["manifest"], whole_manifest, "{r}");
    }
}

#[test]
fn apply_from_part_one_on_a_fresh_site() {
    let f = fx();
    let root = fresh_root("apply-001");
    let (r, v) = apply_json(&f.part(1), &root, true);
    assert_eq!(v["ok"], true, "{r}");
    assert_eq!(v["applied"]["changed"], true, "{r}");
    assert_eq!(v["applied"]["plan"]["kind"], "clean_install", "{r}");
    assert_eq!(v["applied"]["bundle_id"], f.whole_json["manifest_sha256"], "{r}");
    assert_installed(&root);

    // The site's own trust store verifies the split bundle; the same bundle again is nothing to do.
    let (r, v) = bi_json(&["verify".as_ref(), f.index().as_os_str(), "--root".as_ref(), root.as_os_str()], "verify");
    assert_eq!(v["ok"], true, "{r}");
    let (r, v) = bi_json(&["plan".as_ref(), f.split_dir.as_os_str(), "--root".as_ref(), root.as_os_str()], "plan");
    assert_eq!(v["plan"]["kind"], "nothing_to_do", "{r}");
    let (r, v) = apply_json(&f.index(), &root, false);
    assert_eq!((v["ok"].as_bool(), v["applied"]["changed"].as_bool()), (Some(true), Some(false)), "{r}");
    let (r, v) = bi_json(&["status".as_ref(), "--root".as_ref(), root.as_os_str()], "status");
    assert_eq!((v["status"]["current"].as_str(), v["status"]["healthy"].as_bool()), (Some("4.0.0"), Some(true)), "{r}");
    let (r, v) = bi_json(&["history".as_ref(), "--root".as_ref(), root.as_os_str()], "history");
    assert_eq!(v["history"].as_array().map(Vec::len), Some(1), "{r}");
}

#[test]
fn apply_from_the_directory_on_a_fresh_site() {
    let f = fx();
    let root = fresh_root("apply-dir");
    let (r, v) = bi_json(
        &[
            "plan".as_ref(),
            f.split_dir.as_os_str(),
            "--root".as_ref(),
            root.as_os_str(),
            "--trust".as_ref(),
            f.key.public_path.as_os_str(),
        ],
        "plan",
    );
    assert_eq!(v["plan"]["kind"], "clean_install", "{r}");
    assert!(!root.exists(), "plan wrote the site");
    let (r, v) = apply_json(&f.split_dir, &root, true);
    assert_eq!(v["ok"], true, "{r}");
    assert_eq!(v["applied"]["changed"], true, "{r}");
    assert_installed(&root);
}

#[test]
fn a_flipped_byte_in_part_2_is_named_and_nothing_is_written() {
    let f = fx();
    let copy = split_copy("damaged-2");
    let part2 = in_copy(&copy, &f.part(2));
    flip_byte(&part2, PART_SIZE / 2);
    let first = in_copy(&copy, &f.part(1));

    for (r, v) in [bb_verify(&first), bi_verify(&first), bi_verify(&copy)] {
        assert_part_error(&r, &v, "damaged_part", 2);
    }
    // A fresh site: refused, and no site is left behind.
    let root = fresh_root("damaged-2-fresh");
    let (r, v) = apply_json(&first, &root, true);
    assert_part_error(&r, &v, "damaged_part", 2);
    assert!(!root.exists(), "a refused first install left {} behind", root.display());

    // A running site: refused before anything changes.
    let root = scratch_dir("damaged-2-site").join("site");
    let old = build_fixture_bundle("1.0.0", &f.key.secret_path, &scratch_dir("damaged-2-old"));
    let (r, v) = apply_json(&old, &root, true);
    assert_eq!(v["ok"], true, "{r}");
    let before = site_snapshot(&root);
    let (r, v) = apply_json(&copy, &root, false);
    assert_part_error(&r, &v, "damaged_part", 2);
    let diff = diff_snapshots(&before, &site_snapshot(&root));
    assert!(diff.is_empty(), "the refused apply changed the site:\n{}", diff.join("\n"));
    assert_eq!(current(&root), Some(PathBuf::from("releases/1.0.0")));
}

#[test]
fn byte_flips_anywhere_in_part_2_are_named() {
    let f = fx();
    for offset in [0, 1, 4096, PART_SIZE - 1] {
        let copy = split_copy("damaged-2-at");
        flip_byte(&in_copy(&copy, &f.part(2)), offset);
        let (r, v) = bb_verify(&in_copy(&copy, &f.part(1)));
        assert_part_error(&r, &v, "damaged_part", 2);
    }
}

#[test]
fn a_missing_part_3_is_named() {
    let f = fx();
    let copy = split_copy("missing-3");
    std::fs::remove_file(in_copy(&copy, &f.part(3))).unwrap();
    let first = in_copy(&copy, &f.part(1));
    let index = in_copy(&copy, &f.index());
    for (r, v) in [bb_verify(&first), bi_verify(&index), bi_verify(&copy)] {
        assert_part_error(&r, &v, "missing_part", 3);
    }
    for bundle in [&first, &copy] {
        let root = fresh_root("missing-3-fresh");
        let (r, v) = apply_json(bundle, &root, true);
        assert_part_error(&r, &v, "missing_part", 3);
        assert!(!root.exists(), "a refused first install left {} behind", root.display());
    }
}

#[test]
fn a_truncated_part_a_missing_first_part_and_an_edited_index_are_refused() {
    let f = fx();
    // Part 2 cut short by one byte.
    let copy = split_copy("truncated-2");
    let p2 = in_copy(&copy, &f.part(2));
    let data = std::fs::read(&p2).unwrap();
    std::fs::write(&p2, &data[..data.len() - 1]).unwrap();
    for (r, v) in [bb_verify(&copy), bi_verify(&in_copy(&copy, &f.part(1)))] {
        assert_part_error(&r, &v, "damaged_part", 2);
    }

    // Part 1 gone, the index given.
    let copy = split_copy("missing-1");
    std::fs::remove_file(in_copy(&copy, &f.part(1))).unwrap();
    let (r, v) = bb_verify(&in_copy(&copy, &f.index()));
    assert_part_error(&r, &v, "missing_part", 1);
    let root = fresh_root("missing-1-fresh");
    let (r, v) = apply_json(&copy, &root, true);
    assert_part_error(&r, &v, "missing_part", 1);
    assert!(!root.exists());

    // The signed index edited: refused as a bad signature (exit 3).
    let copy = split_copy("index-edited");
    let index = in_copy(&copy, &f.index());
    let text = std::fs::read_to_string(&index).unwrap();
    let sha2 = sha256_file(&f.part(2));
    assert!(text.contains(&sha2), "the index lists part 2's sha256:\n{text}");
    std::fs::write(&index, text.replace(&sha2, &"0".repeat(64))).unwrap();
    for (r, v) in [bb_verify(&copy), bi_verify(&copy)] {
        assert_eq!((r.code, v["error"]["kind"].as_str()), (Some(3), Some("bad_signature")), "{r}");
    }
}

/// Parts 2 and 3 swapped (both exactly 1 MiB, e.g. renamed wrongly when copied by hand): part 2 is
/// the first part whose sha256 differs from the signed index, so it is the one to name.
#[test]
fn swapped_parts_are_named() {
    let f = fx();
    let copy = split_copy("swapped");
    let (p2, p3) = (in_copy(&copy, &f.part(2)), in_copy(&copy, &f.part(3)));
    let tmp = copy.join("swap.tmp");
    std::fs::rename(&p2, &tmp).unwrap();
    std::fs::rename(&p3, &p2).unwrap();
    std::fs::rename(&tmp, &p3).unwrap();
    for (r, v) in [bb_verify(&copy), bi_verify(&copy)] {
        assert_part_error(&r, &v, "damaged_part", 2);
    }
}

/// The parts index is signed and checked first, so *any* damaged part is known by its sha256, and
/// the brief asks that a damaged part be named exactly. Damage in part 1's compressed head (inside
/// the gzip/deflate stream of the manifest) or in the last part's gzip trailer must name that
/// part too, not send the admin to "copy the bundle again" or call the signature bad.
#[test]
fn damage_in_the_first_or_last_part_is_named_too() {
    let f = fx();
    let n = f.parts.len();
    let last_len = std::fs::metadata(f.part(n)).unwrap().len();
    let mut wrong = Vec::new();
    for (part, offset) in [(1, 20), (1, 200), (1, 3000), (n, last_len - 1), (n, last_len - 6)] {
        let copy = split_copy("damaged-ends");
        flip_byte(&in_copy(&copy, &f.part(part)), offset);
        let (r, v) = bb_verify(&copy);
        assert_eq!(r.code, Some(3), "{r}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        if !(v["error"]["kind"] == "damaged_part" && msg.contains(&format!("part {part} of {n}"))) {
            wrong.push(format!("byte {offset} of part {part} flipped → {}: {msg}", v["error"]["kind"]));
        }
    }
    assert!(wrong.is_empty(), "expected `damaged_part` naming the part each time:\n{}", wrong.join("\n"));
}

// --- progress ---------------------------------------------------------------------------------

#[test]
fn apply_on_a_terminal_shows_spinners_marks_and_a_byte_bar() {
    let f = fx();
    let root = fresh_root("pty-apply");
    let cmd = apply_cmd(&f.part(1), &root, true, &[]);
    let r = pty(&command_line(&cmd));
    assert_eq!(r.code, Some(0), "{r}");
    let out = &r.stdout;
    assert!(out.contains("\r\x1b[2K"), "no line redraws (\\r ESC[2K) on the terminal:\n{r}");
    assert!(out.chars().any(is_spinner), "no spinner frame:\n{r}");
    for step in ["checking the bundle's signature", "installing wheels", "switching current → releases/4.0.0"] {
        assert!(out.contains(&format!("{step} ✓")), "step `{step}` not marked done (✓):\n{r}");
    }
    // The byte bar while verifying: a filled bar with the bundle's size.
    let bar = out
        .lines()
        .flat_map(|l| l.split('\r'))
        .find(|l| l.contains("verifying") && l.contains("[====") && l.contains("MiB/"));
    assert!(bar.is_some(), "no byte bar while verifying:\n{r}");
    // Hook steps print a plain line on a terminal too: the hook's own output follows it, and a
    // spinner redrawing over that output would garble both. Every other step is animated.
    let plain: Vec<&str> = out.lines().filter(|l| l.starts_with("==> ")).collect();
    assert!(
        plain.iter().all(|l| l.starts_with("==> running hook ")),
        "plain step lines for non-hook steps on a terminal: {plain:?}\n{r}"
    );
    assert!(out.contains("done: fieldlog 4.0.0 is now current"), "{r}");
    assert_installed(&root);
}

#[test]
fn apply_without_a_terminal_prints_only_plain_step_lines() {
    let f = fx();
    let root = fresh_root("pipe-apply");
    let r = run_timeout(&mut apply_cmd(&f.part(1), &root, true, &[]), APPLY_TIMEOUT);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.is_empty(), "apply's human output goes to stderr:\n{r}");
    assert_no_terminal_drawing(&r.stderr, &r);
    for step in
        ["==> checking the bundle's signature", "==> verifying ", "==> installing wheels", "==> switching current"]
    {
        assert!(r.stderr.lines().any(|l| l.starts_with(step)), "no `{step}` line:\n{r}");
    }
    assert!(r.stderr.lines().any(|l| l == "done: fieldlog 4.0.0 is now current"), "{r}");
    assert_installed(&root);
}

#[test]
fn json_and_quiet_draw_nothing_on_a_terminal_or_off_it() {
    let f = fx();
    // --json, stderr a pipe: json_of checks stdout and that stderr has no progress.
    let root = fresh_root("json-pipe");
    let (r, v) = apply_json(&f.part(1), &root, true);
    assert_eq!(v["ok"], true, "{r}");

    // --json, stderr a terminal (stdout to a file, as in CI logs): nothing drawn; the file is one object.
    let dir = scratch_dir("json-pty");
    let root = dir.join("site");
    let out_file = dir.join("out.json");
    let cmd = apply_cmd(&f.part(1), &root, true, &["--json"]);
    let r = pty(&format!("{} > {}", command_line(&cmd), sh_quote(&out_file.to_string_lossy())));
    assert_eq!(r.code, Some(0), "{r}");
    assert_no_drawing_on_terminal(&r);
    let stdout = std::fs::read_to_string(&out_file).unwrap();
    let as_run = Run { stdout, stderr: String::new(), ..r.clone() };
    let v = json_of(&as_run, "apply");
    assert_eq!(v["applied"]["changed"], true, "{as_run}");

    // --quiet on a terminal: no spinners, marks or bars.
    let root = fresh_root("quiet-pty");
    let cmd = apply_cmd(&f.part(1), &root, true, &["--quiet"]);
    let r = pty(&command_line(&cmd));
    assert_eq!(r.code, Some(0), "{r}");
    assert_no_drawing_on_terminal(&r);
    assert!(!r.stdout.contains("==> "), "{r}");

    // --quiet, stderr a pipe: no step lines.
    let root = fresh_root("quiet-pipe");
    let r = run_timeout(&mut apply_cmd(&f.part(1), &root, true, &["--quiet"]), APPLY_TIMEOUT);
    assert_eq!(r.code, Some(0), "{r}");
    assert_no_progress(&r.stderr, &r);
}

/// On a terminal the tty turns `\n` into `\r\n`: only those carriage returns are allowed.
#[track_caller]
fn assert_no_drawing_on_terminal(r: &Run) {
    let text = r.stdout.replace("\r\n", "\n");
    assert!(!text.contains('\x1b'), "escape sequences on the terminal:\n{r}");
    assert!(!text.contains('\r'), "line redraws on the terminal:\n{r}");
    assert!(!text.contains('✓') && !text.chars().any(is_spinner) && !text.contains("[===="), "progress drawn:\n{r}");
}

/// `-q/--quiet` is documented as "only errors and warnings on stderr" (bundle-spec/cli.md).
#[test]
fn quiet_apply_and_verify_print_no_result_lines() {
    let f = fx();
    let root = fresh_root("quiet-lines");
    let r = run_timeout(&mut apply_cmd(&f.part(1), &root, true, &["--quiet"]), APPLY_TIMEOUT);
    assert_eq!(r.code, Some(0), "{r}");
    // The fixture's health-check hook prints `fieldlog 4.0.0`: hook output is the app's, not ours.
    let mut extra: Vec<String> = r
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && *l != "fieldlog 4.0.0")
        .map(|l| format!("apply: {l}"))
        .collect();
    let r = run(tool("bundle-install").arg("verify").arg(f.index()).arg("--root").arg(&root).arg("--quiet"));
    assert_eq!(r.code, Some(0), "{r}");
    extra.extend(
        r.stdout.lines().chain(r.stderr.lines()).filter(|l| !l.trim().is_empty()).map(|l| format!("verify: {l}")),
    );
    assert!(extra.is_empty(), "--quiet printed more than errors and warnings:\n{}", extra.join("\n"));
}

// --- what the terminal finally shows ----------------------------------------------------------

/// A minimal terminal: printable characters with auto-wrap at `cols` (xterm's pending wrap), `\r`,
/// `\n`, and the CSI sequences indicatif uses (cursor up/down/column, erase line/display).
fn final_screen(bytes: &str, cols: usize) -> Vec<String> {
    let mut screen: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col, mut wrap) = (0usize, 0usize, false);
    let mut chars = bytes.chars().peekable();
    fn line(screen: &mut Vec<Vec<char>>, row: usize) -> &mut Vec<char> {
        while screen.len() <= row {
            screen.push(Vec::new());
        }
        &mut screen[row]
    }
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() != Some(&'[') {
                    chars.next();
                    continue;
                }
                chars.next();
                let mut params = String::new();
                let mut fin = ' ';
                for p in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&p) {
                        fin = p;
                        break;
                    }
                    params.push(p);
                }
                let n: usize =
                    params.trim_start_matches('?').split(';').next().and_then(|s| s.parse().ok()).unwrap_or(0);
                match fin {
                    'A' => {
                        row = row.saturating_sub(n.max(1));
                        wrap = false;
                    }
                    'B' => {
                        row += n.max(1);
                        wrap = false;
                    }
                    'G' => {
                        col = n.max(1) - 1;
                        wrap = false;
                    }
                    'K' => {
                        let l = line(&mut screen, row);
                        match n {
                            2 => l.clear(),
                            1 => l.iter_mut().take(col + 1).for_each(|ch| *ch = ' '),
                            _ => l.truncate(col),
                        }
                    }
                    'J' if n == 0 => {
                        line(&mut screen, row).truncate(col);
                        screen.truncate(row + 1);
                    }
                    _ => {}
                }
            }
            '\r' => {
                col = 0;
                wrap = false;
            }
            '\n' => {
                row += 1;
                wrap = false;
            }
            c if c < ' ' => {}
            c => {
                if wrap {
                    row += 1;
                    col = 0;
                    wrap = false;
                }
                let l = line(&mut screen, row);
                while l.len() < col {
                    l.push(' ');
                }
                if col < l.len() {
                    l[col] = c;
                } else {
                    l.push(c);
                }
                if col + 1 >= cols {
                    wrap = true;
                } else {
                    col += 1;
                }
            }
        }
    }
    let mut lines: Vec<String> =
        screen.into_iter().map(|l| l.into_iter().collect::<String>().trim_end().to_string()).collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

#[test]
fn the_terminal_emulation_used_below_is_sound() {
    let s = final_screen("⠁ step one 0s\r\x1b[2K  step one ✓ 0s\n⠉ two\r\x1b[2Kdone\n", 80);
    assert_eq!(s, vec!["  step one ✓ 0s", "done"]);
    let s = final_screen(&format!("{}\x1b[1A\r\x1b[2K\x1b[1B\r\x1b[2K\x1b[1Ashort", "x".repeat(120)), 100);
    assert_eq!(s, vec!["short"]);
    // Pending wrap: a full line followed by `\r\n` does not leave an empty line in between.
    let s = final_screen(&format!("{}\r\nnext", "y".repeat(10)), 10);
    assert_eq!(s, vec!["y".repeat(10), "next".to_string()]);
}

/// After a successful apply on a terminal, the screen shows every step once with its ✓ and the
/// final `done:` line: no frozen spinner is left behind (a stale `⠁ recording history 0s` reads as
/// a hung step), and hook output does not strand a copy of the spinner line.
#[test]
fn after_apply_on_a_terminal_no_stale_spinner_is_left_on_screen() {
    let f = fx();
    let root = fresh_root("pty-screen");
    let cmd = apply_cmd(&f.part(1), &root, true, &[]);
    let r = pty(&command_line(&cmd));
    assert_eq!(r.code, Some(0), "{r}");
    let screen = final_screen(&r.stdout, COLS);
    let shown = screen.join("\n");
    let stale: Vec<&String> = screen.iter().filter(|l| l.chars().any(is_spinner)).collect();
    assert!(stale.is_empty(), "spinner lines left on the final screen: {stale:?}\n--- screen ---\n{shown}");
    let last = screen.iter().rev().find(|l| !l.is_empty());
    assert_eq!(last.map(String::as_str), Some("done: fieldlog 4.0.0 is now current"), "--- screen ---\n{shown}");
    for step in [
        "checking the bundle's signature",
        "staging releases/4.0.0",
        "installing wheels",
        "switching current → releases/4.0.0",
    ] {
        let lines: Vec<&String> = screen.iter().filter(|l| l.contains(step)).collect();
        assert!(
            lines.len() == 1 && lines[0].contains('✓'),
            "step `{step}` must show once, with ✓: {lines:?}\n--- screen ---\n{shown}"
        );
    }
    // Hooks write their own lines: their step is a plain line, shown once.
    let hook: Vec<&String> = screen.iter().filter(|l| l.contains("running hook health_check")).collect();
    assert_eq!(hook.len(), 1, "the health_check step must show once: {hook:?}\n--- screen ---\n{shown}");
}

#[test]
fn binaries_are_built() {
    // A clearer failure than a panic inside the fixture when `cargo build` was not run.
    let _ = bin("bundle-build");
    let _ = bin("bundle-install");
}
