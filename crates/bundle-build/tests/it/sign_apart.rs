//! Signing apart from the build: `build --unsigned` then `sign` (with our key file, or with a
//! signature made by the real `minisign -S`) gives the same bytes as a direct `build --key`, whole
//! and split; a signature by another key, a wrong trusted comment or an altered unsigned bundle is
//! refused and nothing is written. minisign parts are skipped with a message when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use test_support::{copy_spec, run, snapshot, KeyPair, Run};

const BIN: &str = env!("CARGO_BIN_EXE_bundle-build");
const EPOCH: &str = "1700000000";

fn bb() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(Stdio::null()).env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

fn minisign() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("minisign")).find(|p| p.is_file())
}

fn build(spec: &Path, out: &Path, extra: &[&str]) -> Run {
    let r = run(bb().arg("build").arg(spec).arg("--out").arg(out).args(extra).arg("--json"));
    r.expect_ok();
    r
}

fn sign(input: &Path, out: &Path, extra: &[&str]) -> Run {
    run(bb().arg("sign").arg(input).arg("--out").arg(out).args(extra).arg("--json"))
}

/// Every file in `dir` (name → bytes).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn minisign_sign(ms: &Path, key: &Path, file: &Path, comment: &str) {
    let out = Command::new(ms)
        .arg("-S")
        .arg("-s")
        .arg(key)
        .arg("-m")
        .arg(file)
        .arg("-t")
        .arg(comment)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "minisign -S: {}", String::from_utf8_lossy(&out.stderr));
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: KeyPair,
    spec: PathBuf,
    direct: PathBuf,
    unsigned: PathBuf,
    manifest: PathBuf,
    comment: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let key = KeyPair::keygen(&dir.join("release"));
    let spec = copy_spec("4.0.0", &dir.join("spec"));
    let r = build(&spec, &dir.join("direct"), &["--key", key.secret_path.to_str().unwrap()]);
    let direct = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    let r = build(&spec, &dir.join("unsigned"), &["--unsigned"]);
    let v = r.json();
    assert_eq!(v["signed"], false, "{r}");
    assert!(v["key_id"].is_null(), "{r}");
    let unsigned = PathBuf::from(v["bundle"].as_str().unwrap());
    let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
    assert!(unsigned.to_string_lossy().ends_with("fieldlog-4.0.0.unsigned.tar.gz"), "{r}");
    assert!(r.stderr.contains("minisign -S"), "build --unsigned says how to sign:\n{r}");
    let comment = v["trusted_comment"].as_str().unwrap().to_string();
    Setup { _tmp: tmp, dir, key, spec, direct, unsigned, manifest, comment }
}

#[test]
fn unsigned_bundle_is_refused_by_verify_and_its_manifest_is_the_bundles() {
    let s = setup();
    let r = run(bb().arg("verify").arg(&s.unsigned).arg("--trust").arg(&s.key.public_path).arg("--json"));
    r.expect_code(3);
    // The manifest beside it is the one inside the direct build.
    let out = Command::new("tar").arg("-xOzf").arg(&s.direct).arg("manifest.yaml").output().unwrap();
    assert_eq!(out.stdout, std::fs::read(&s.manifest).unwrap());
    // A direct build refuses --unsigned with --key, and --unsigned with --split-size.
    let r = run(bb()
        .arg("build")
        .arg(&s.spec)
        .arg("--unsigned")
        .arg("--key")
        .arg(&s.key.secret_path)
        .arg("--out")
        .arg(s.dir.join("x")));
    r.expect_code(2);
}

#[test]
fn sign_with_our_key_gives_the_direct_build_bytes() {
    let s = setup();
    let out = s.dir.join("signed");
    let r = sign(&s.unsigned, &out, &["--key", s.key.secret_path.to_str().unwrap()]);
    r.expect_ok();
    let signed = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    assert_eq!(signed.file_name(), s.direct.file_name());
    assert!(
        std::fs::read(&signed).unwrap() == std::fs::read(&s.direct).unwrap(),
        "sign-apart bytes differ from the direct build"
    );
    assert_eq!(
        r.json()["sha256"],
        run(bb().arg("verify").arg(&signed).arg("--trust").arg(&s.key.public_path).arg("--json")).json()
            ["bundle_sha256"]
    );
}

#[test]
fn sign_with_a_minisign_signature_gives_the_direct_build_bytes_and_refuses_bad_ones() {
    let Some(ms) = minisign() else {
        eprintln!("skipping: `minisign` is not on PATH");
        return;
    };
    let s = setup();
    let sig = PathBuf::from(format!("{}.minisig", s.manifest.display()));
    minisign_sign(&ms, &s.key.secret_path, &s.manifest, &s.comment);
    let out = s.dir.join("signed");
    let trust = ["--signature", sig.to_str().unwrap(), "--trust", s.key.public_path.to_str().unwrap()];
    let r = sign(&s.unsigned, &out, &trust);
    r.expect_ok();
    let signed = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    assert!(
        std::fs::read(&signed).unwrap() == std::fs::read(&s.direct).unwrap(),
        "minisign-signed bytes differ from the direct build"
    );

    // Checked against another key: exit 3, nothing written.
    let other = KeyPair::keygen(&s.dir.join("other"));
    let out2 = s.dir.join("other-out");
    let r = sign(
        &s.unsigned,
        &out2,
        &["--signature", sig.to_str().unwrap(), "--trust", other.public_path.to_str().unwrap()],
    );
    r.expect_code(3);
    assert_eq!(r.error_kind().as_deref(), Some("untrusted_key"), "{r}");
    assert!(!out2.exists());

    // minisign's default trusted comment (timestamp, file name): exit 2, and the message says what to use.
    let plain = s.dir.join("plain.minisig");
    let o = Command::new(&ms)
        .arg("-S")
        .arg("-s")
        .arg(&s.key.secret_path)
        .arg("-m")
        .arg(&s.manifest)
        .arg("-x")
        .arg(&plain)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success());
    let r = sign(
        &s.unsigned,
        &out2,
        &["--signature", plain.to_str().unwrap(), "--trust", s.key.public_path.to_str().unwrap()],
    );
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("trusted_comment_mismatch"), "{r}");
    assert!(r.stdout.contains("sequence:"), "{r}");
    assert!(!out2.exists());

    // A signature of another manifest (the 3.0.0 release's) for this unsigned bundle: exit 3.
    let spec3 = copy_spec("3.0.0", &s.dir.join("spec3"));
    let r3 = build(&spec3, &s.dir.join("u3"), &["--unsigned"]);
    let m3 = PathBuf::from(r3.json()["manifest"].as_str().unwrap());
    minisign_sign(&ms, &s.key.secret_path, &m3, &s.comment);
    let sig3 = format!("{}.minisig", m3.display());
    let r = sign(&s.unsigned, &out2, &["--signature", &sig3, "--trust", s.key.public_path.to_str().unwrap()]);
    r.expect_code(3);
    assert_eq!(r.error_kind().as_deref(), Some("bad_signature"), "{r}");
    assert!(!out2.exists());
}

#[test]
fn an_altered_unsigned_bundle_is_not_signed() {
    let s = setup();
    // Change one byte of a migration's content inside the tar (its header checksum stays valid).
    let out = Command::new("gzip").arg("-dc").arg(&s.unsigned).output().unwrap();
    let mut tar = out.stdout;
    let needle = b"CREATE TABLE";
    let at = tar.windows(needle.len()).position(|w| w == needle).expect("a migration in the bundle");
    tar[at] = b'c';
    let altered = s.dir.join("altered.unsigned.tar.gz");
    let mut gz = Command::new("gzip").arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        gz.stdin.take().unwrap().write_all(&tar).unwrap();
    }
    std::fs::write(&altered, gz.wait_with_output().unwrap().stdout).unwrap();
    let out = s.dir.join("out");
    let r = sign(&altered, &out, &["--key", s.key.secret_path.to_str().unwrap()]);
    r.expect_code(3);
    assert_eq!(r.error_kind().as_deref(), Some("unsigned_bundle_mismatch"), "{r}");
    assert!(std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0) == 0, "{:?}", snapshot(&out));
    // A signed bundle is not an unsigned one.
    let r = sign(&s.direct, &out, &["--key", s.key.secret_path.to_str().unwrap()]);
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("not_unsigned_bundle"), "{r}");
}

#[test]
fn split_bundles_signed_apart_are_the_direct_split_build() {
    let s = setup();
    let split = ["--split-size", "1M"];
    let direct = s.dir.join("direct-split");
    build(&s.spec, &direct, &["--key", s.key.secret_path.to_str().unwrap(), split[0], split[1]]);
    // With our key: parts, index and index signature in one go.
    let ours = s.dir.join("ours-split");
    sign(&s.unsigned, &ours, &["--key", s.key.secret_path.to_str().unwrap(), split[0], split[1]]).expect_ok();
    assert!(files(&ours) == files(&direct), "sign --key --split-size differs from build --split-size");

    let Some(ms) = minisign() else {
        eprintln!("skipping the minisign half: `minisign` is not on PATH");
        return;
    };
    // With minisign: the manifest first, then the parts index `sign` wrote.
    minisign_sign(&ms, &s.key.secret_path, &s.manifest, &s.comment);
    let sig = format!("{}.minisig", s.manifest.display());
    let theirs = s.dir.join("theirs-split");
    let r = sign(
        &s.unsigned,
        &theirs,
        &["--signature", &sig, "--trust", s.key.public_path.to_str().unwrap(), split[0], split[1]],
    );
    r.expect_ok();
    assert_eq!(r.json()["index_signature_needed"], true, "{r}");
    let index = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    assert!(!index.with_extension("parts.minisig").exists());
    minisign_sign(&ms, &s.key.secret_path, &index, &s.comment);
    // minisign wrote NAME.parts.minisig itself; `sign NAME.parts` checks it and writes ours in its place.
    let theirs_sig = s.dir.join("index.minisig");
    std::fs::rename(format!("{}.minisig", index.display()), &theirs_sig).unwrap();
    let r = run(bb()
        .arg("sign")
        .arg(&index)
        .arg("--signature")
        .arg(&theirs_sig)
        .arg("--trust")
        .arg(&s.key.public_path)
        .arg("--json"));
    r.expect_ok();
    assert!(files(&theirs) == files(&direct), "minisign-signed split bundle differs from build --split-size");
    run(bb().arg("verify").arg(&index).arg("--trust").arg(&s.key.public_path)).expect_ok();
}
