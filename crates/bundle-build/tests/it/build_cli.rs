//! `bundle-build` end to end, through the real binary, on the fieldlog fixture releases:
//! the built archive is what GNU tar, gzip and minisign expect (manifest first, signature second,
//! one valid gzip member, a signature the stock `minisign -V` accepts); builds are byte-for-byte
//! reproducible under `SOURCE_DATE_EPOCH`; `keygen` never overwrites; `check` passes on every fixture
//! release and names the lint for each broken spec (migration gap, schema, converter, names, wheel
//! metadata, app wheel, a released step edited since `--previous`); `inspect` says it checked nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use test_support::{
    build_fixture_bundle, copy_spec, diff_snapshots, fixture_specs, run, scratch_dir, snapshot, KeyPair, Run,
};

const BIN: &str = env!("CARGO_BIN_EXE_bundle-build");

struct Env {
    signer: KeyPair,
    /// Fixture 4.0.0 and 3.0.0, built once with `SOURCE_DATE_EPOCH=1700000000`.
    bundle4: PathBuf,
    bundle3: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = scratch_dir("build-cli");
        let signer = KeyPair::keygen(&dir.join("signer"));
        let bundle4 = build_fixture_bundle("4.0.0", &signer.secret_path, &dir.join("out4"));
        let bundle3 = build_fixture_bundle("3.0.0", &signer.secret_path, &dir.join("out3"));
        Env { signer, bundle4, bundle3 }
    })
}

fn bb() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(std::process::Stdio::null());
    c
}

fn build(spec: &Path, out: &Path, epoch: Option<&str>) -> Run {
    let mut c = bb();
    c.arg("build").arg(spec).arg("--key").arg(&env().signer.secret_path).arg("--out").arg(out).arg("--json");
    match epoch {
        Some(e) => c.env("SOURCE_DATE_EPOCH", e),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    run(&mut c)
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

#[test]
fn gnu_tar_lists_manifest_then_signature_and_gzip_accepts_it() {
    let e = env();
    let gz = run(Command::new("gzip").arg("-t").arg(&e.bundle4));
    gz.expect_ok();
    let listed = run(Command::new("tar").arg("-tzf").arg(&e.bundle4));
    listed.expect_ok();
    let names: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(names.get(..2), Some(&["manifest.yaml", "manifest.yaml.minisig"][..]), "{listed}");
    // Then exactly the manifest's files, in its order, and nothing else (no directories).
    let inspect = run(bb().arg("inspect").arg(&e.bundle4).arg("--json"));
    inspect.expect_ok();
    let files: Vec<String> = inspect.json()["manifest"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names[2..], files.iter().map(String::as_str).collect::<Vec<_>>()[..], "{listed}");
    // Only regular files, owned by root, with the manifest's modes.
    let verbose = run(Command::new("tar").arg("-tvzf").arg(&e.bundle4));
    verbose.expect_ok();
    for line in verbose.stdout.lines() {
        assert!(line.starts_with("-rw-r--r-- root/root") || line.starts_with("-rwxr-xr-x root/root"), "{line}");
    }
}

#[test]
fn same_source_date_epoch_gives_identical_bytes() {
    let spec = fixture_specs().join("4.0.0/spec.yaml");
    let tmp = tempfile::tempdir().unwrap();
    let bytes = |name: &str, epoch: Option<&str>| -> Vec<u8> {
        let out = tmp.path().join(name);
        let r = build(&spec, &out, epoch);
        r.expect_ok();
        let path = r.json()["bundle"].as_str().expect("bundle path").to_string();
        assert_eq!(Path::new(&path).file_name().unwrap(), "fieldlog-4.0.0.bundle.tar.gz", "{r}");
        std::fs::read(path).unwrap()
    };
    let a = bytes("a", Some("1700000000"));
    let b = bytes("b", Some("1700000000"));
    assert!(a == b, "two builds with the same SOURCE_DATE_EPOCH differ");
    assert_eq!(a, std::fs::read(&env().bundle4).unwrap(), "a third build (another process, another out dir) differs");
    let c = bytes("c", Some("1700000001"));
    assert!(a != c, "SOURCE_DATE_EPOCH does not reach the archive");
    assert_eq!(bytes("d", None), bytes("e", None), "builds without SOURCE_DATE_EPOCH differ");

    // The epoch is the entries' mtime.
    let listed = run(Command::new("tar").args(["--full-time", "-tvzf"]).arg(&env().bundle4).env("TZ", "UTC"));
    listed.expect_ok();
    assert!(listed.stdout.lines().all(|l| l.contains("2023-11-14 22:13:20")), "{listed}");

    let bad = build(&spec, &tmp.path().join("bad"), Some("yesterday"));
    bad.expect_code(2);
    assert_eq!(bad.error_kind().as_deref(), Some("bad_source_date_epoch"), "{bad}");
}

#[test]
fn stock_minisign_accepts_the_extracted_manifest() {
    if !have("minisign") {
        eprintln!("SKIPPED stock_minisign_accepts_the_extracted_manifest: `minisign` is not installed (apt-get install minisign)");
        return;
    }
    let e = env();
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&e.bundle4)
        .arg("-C")
        .arg(tmp.path())
        .args(["manifest.yaml", "manifest.yaml.minisig"]))
    .expect_ok();
    let verify = |extra: &[&str]| {
        run(Command::new("minisign")
            .current_dir(tmp.path())
            .arg("-V")
            .args(extra)
            .args(["-m", "manifest.yaml", "-p"])
            .arg(&e.signer.public_path))
    };
    let r = verify(&[]);
    r.expect_ok();
    assert!(r.stdout.contains("Signature and comment signature verified"), "{r}");
    assert!(r.stdout.contains("Trusted comment: app:fieldlog\tversion:4.0.0\tsequence:"), "{r}");
    // -H: minisign insists on a prehashed (`ED`) signature.
    verify(&["-H"]).expect_ok();

    // A one-byte change to the manifest fails minisign too.
    let path = tmp.path().join("manifest.yaml");
    let mut m = std::fs::read(&path).unwrap();
    m.push(b'\n');
    std::fs::write(&path, m).unwrap();
    let r = verify(&[]);
    assert_ne!(r.code, Some(0), "minisign accepted an edited manifest:\n{r}");
}

#[test]
fn keygen_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("release");
    let r = run(bb().arg("keygen").arg("--unencrypted").arg("--out").arg(&prefix).arg("--json"));
    r.expect_ok();
    let v = r.json();
    assert_eq!(v["ok"], true);
    let key = tmp.path().join("release.key");
    let public = tmp.path().join("release.pub");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the secret key must be 0600");
    assert!(public.is_file());
    assert_eq!(v["key_id"].as_str().map(str::len), Some(16), "{r}");
    let pub_text = std::fs::read_to_string(&public).unwrap();
    assert!(
        pub_text.starts_with(&format!("untrusted comment: minisign public key {}", v["key_id"].as_str().unwrap())),
        "{pub_text}"
    );

    let before = snapshot(tmp.path());
    for json in [true, false] {
        let mut c = bb();
        c.arg("keygen").arg("--out").arg(&prefix);
        if json {
            c.arg("--json");
        }
        let again = run(&mut c);
        again.expect_code(2);
        if json {
            assert_eq!(again.error_kind().as_deref(), Some("exists"), "{again}");
        } else {
            again.expect_one_line_error();
        }
        assert!(diff_snapshots(&before, &snapshot(tmp.path())).is_empty(), "a second keygen changed the key files");
    }

    // Half a pair is still a pair: the missing half is not created either.
    let lone = tmp.path().join("lone");
    std::fs::write(tmp.path().join("lone.pub"), "not mine\n").unwrap();
    let before = snapshot(tmp.path());
    run(bb().arg("keygen").arg("--out").arg(&lone).arg("--json")).expect_code(2);
    assert!(diff_snapshots(&before, &snapshot(tmp.path())).is_empty(), "keygen wrote next to an existing .pub");
}

/// `check --json` on `spec`, returning the run and its lint codes at level `error`.
fn check(spec: &Path, previous: Option<&Path>) -> (Run, Vec<String>) {
    let mut c = bb();
    c.arg("check").arg(spec).arg("--json");
    if let Some(p) = previous {
        c.arg("--previous").arg(p);
    }
    let r = run(&mut c);
    let v = r.json();
    assert_eq!(v["command"], "check", "{r}");
    let codes = v["lints"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|l| l["level"] == "error")
                .map(|l| l["code"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (r, codes)
}

#[test]
fn check_passes_on_every_fixture_release() {
    for v in ["1.0.0", "2.0.0", "3.0.0", "4.0.0"] {
        let (r, errors) = check(&fixture_specs().join(v).join("spec.yaml"), None);
        r.expect_ok();
        assert_eq!(r.json()["ok"], true, "{r}");
        assert!(errors.is_empty(), "{v}: {errors:?}\n{r}");
        assert_eq!(r.json()["errors"], 0, "{r}");
    }
}

fn remove(dir: &Path, rel: &str) {
    std::fs::remove_file(dir.join(rel)).unwrap_or_else(|e| panic!("rm {rel}: {e}"));
}

/// Replaces the first `from` in `rel` by `to`.
fn edit(dir: &Path, rel: &str, from: &str, to: &str) {
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// Rewrites one `.dist-info/METADATA` header of a wheel with Python's zipfile.
fn rewrite_wheel_metadata(wheel: &Path, from: &str, to: &str) {
    let script = r#"
import sys, zipfile
path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
with zipfile.ZipFile(path) as z:
    items = [(i, z.read(i)) for i in z.infolist()]
hit = False
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for info, data in items:
        if info.filename.endswith(".dist-info/METADATA"):
            hit = old in data
            data = data.replace(old, new)
        z.writestr(info, data)
sys.exit(0 if hit else 3)
"#;
    run(Command::new("python3").arg("-c").arg(script).arg(wheel).arg(from).arg(to)).expect_ok();
}

#[test]
fn check_names_the_lint_for_each_broken_spec() {
    type Break = fn(&Path);
    let cases: [(&str, Break, &str, &str); 10] = [
        // Issue 13 item 6: a database inside the installer's own directories.
        (
            "database under current/",
            |d| edit(d, "spec.yaml", "path: data/client.db", "path: current/client.db"),
            "reserved_path",
            "current/client.db",
        ),
        (
            "database in trust/",
            |d| edit(d, "spec.yaml", "path: data/client.db", "path: trust/client.pub"),
            "reserved_path",
            "trust/client.pub",
        ),
        // Both would read BUNDLE_DB_URL_CLIENT_DB.
        (
            "client-db and client_db",
            |d| {
                edit(d, "spec.yaml", "  metadata:\n    engine", "  client-db:\n    engine");
                edit(d, "spec.yaml", "  client:\n    engine", "  client_db:\n    engine");
            },
            "db_name_clash",
            "BUNDLE_DB_URL_CLIENT_DB",
        ),
        // 1.1 → 2.1 skips 2.0 (1.0 → 2.0 would be a legal major step, so the middle of a major is cut).
        (
            "gap in a migration chain",
            |d| remove(d, "migrations/client/2.0_rename_notes.sql"),
            "migration_gap",
            "client",
        ),
        (
            "schema is not the last step",
            |d| edit(d, "spec.yaml", "schema: \"2.1\"", "schema: \"2.2\""),
            "schema_mismatch",
            "2.2",
        ),
        ("missing converter", |d| remove(d, "config/converters/1-to-2.yaml"), "converter_gap", "1 to 2"),
        (
            "badly named migration",
            |d| std::fs::write(d.join("migrations/client/2.2-add stuff.sql"), "SELECT 1;\n").unwrap(),
            "migration_name",
            "2.2-add stuff.sql",
        ),
        (
            "wheel METADATA version disagrees with its file name",
            |d| {
                rewrite_wheel_metadata(
                    &d.join("wheelhouse/fieldkit-1.2.0-py3-none-any.whl"),
                    "Version: 1.2.0",
                    "Version: 1.3.0",
                )
            },
            "bad_wheel",
            "1.3.0",
        ),
        (
            "missing app wheel",
            |d| remove(d, "wheelhouse/fieldlog-4.0.0-py3-none-any.whl"),
            "no_app_wheel",
            "fieldlog 4.0.0",
        ),
        ("garbage spec", |d| std::fs::write(d.join("spec.yaml"), "app: [\n").unwrap(), "invalid_spec", "spec"),
    ];
    for (what, breaks, code, mention) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spec");
        let spec = copy_spec("4.0.0", &dir);
        check(&spec, None).0.expect_ok();
        breaks(&dir);
        let (r, codes) = check(&spec, None);
        assert_eq!(r.code, Some(2), "{what}: expected exit 2\n{r}");
        let v = r.json();
        assert_eq!(v["ok"], false, "{what}: {r}");
        if code == "invalid_spec" {
            assert_eq!(v["error"]["kind"], code, "{what}: {r}");
            continue;
        }
        assert!(codes.iter().any(|c| c == code), "{what}: no `{code}` among the error lints {codes:?}\n{r}");
        let lints = v["lints"].as_array().unwrap();
        let lint = lints.iter().find(|l| l["code"] == code).unwrap();
        assert!(
            lint["message"].as_str().unwrap().contains(mention),
            "{what}: the `{code}` lint should mention {mention:?}: {lint}"
        );
        // Human mode lists the lint by code.
        let h = run(bb().arg("check").arg(&spec));
        assert_eq!(h.code, Some(2), "{h}");
        assert!(h.stderr.contains(&format!("error[{code}]")), "{what}: human check output lacks error[{code}]\n{h}");
        // `build` refuses the same spec with the same exit code, writing nothing. (Wheel METADATA
        // is only read by `check`: `build` does not open the wheels, so that case is check-only.)
        if code == "bad_wheel" {
            continue;
        }
        let out = tmp.path().join("out");
        let b = build(&spec, &out, Some("1700000000"));
        assert_eq!(b.code, Some(2), "{what}: build should refuse\n{b}");
        assert!(!out.join("fieldlog-4.0.0.bundle.tar.gz").exists(), "{what}: build wrote a bundle");
    }
}

#[test]
fn check_previous_refuses_an_edited_released_step() {
    let e = env();
    // The real upgrade path passes.
    let (r, codes) = check(&fixture_specs().join("4.0.0/spec.yaml"), Some(&e.bundle3));
    r.expect_ok();
    assert!(codes.is_empty(), "{r}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spec");
    let spec = copy_spec("4.0.0", &dir);
    let migration = "migrations/metadata/1.0_init.sql";
    let mut text = std::fs::read(dir.join(migration)).unwrap();
    text.extend_from_slice(b"-- edited after release\n");
    std::fs::write(dir.join(migration), text).unwrap();
    check(&spec, None).0.expect_ok(); // fine on its own…
    let (r, codes) = check(&spec, Some(&e.bundle3)); // …not against what was released
    assert_eq!(r.code, Some(2), "{r}");
    assert!(codes.iter().any(|c| c == "released_step_changed"), "{codes:?}\n{r}");
    let lints = r.json()["lints"].as_array().unwrap().clone();
    let lint = lints.iter().find(|l| l["code"] == "released_step_changed").unwrap();
    assert!(lint["message"].as_str().unwrap().contains(migration), "{lint}");

    // Same release as its own predecessor: the sequence must grow.
    let (r, codes) = check(&fixture_specs().join("3.0.0/spec.yaml"), Some(&e.bundle3));
    assert_eq!(r.code, Some(2), "{r}");
    assert!(codes.iter().any(|c| c == "sequence_not_increasing"), "{codes:?}\n{r}");
}

/// With `--trust`, the previous bundle is compared only once its signature checks out.
#[test]
fn check_previous_with_trust_checks_its_signature() {
    let e = env();
    let spec = fixture_specs().join("4.0.0/spec.yaml");
    let r = run(bb().arg("check").arg(&spec).arg("--previous").arg(&e.bundle3).arg("--json"));
    r.expect_ok();
    assert_eq!(r.json()["previous_signature_checked"], false, "{r}");
    assert!(r.stderr.contains("add --trust KEY"), "{r}");

    let r = run(bb()
        .arg("check")
        .arg(&spec)
        .arg("--previous")
        .arg(&e.bundle3)
        .arg("--trust")
        .arg(&e.signer.public_path)
        .arg("--json"));
    r.expect_ok();
    assert_eq!(r.json()["previous_signature_checked"], true, "{r}");

    let tmp = tempfile::tempdir().unwrap();
    let stranger = KeyPair::keygen(&tmp.path().join("stranger"));
    let r = run(bb()
        .arg("check")
        .arg(&spec)
        .arg("--previous")
        .arg(&e.bundle3)
        .arg("--trust")
        .arg(&stranger.public_path)
        .arg("--json"));
    assert_eq!(r.code, Some(3), "a previous bundle signed by an untrusted key must fail verification:\n{r}");
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains(&e.signer.key_id),
        "the error should name the signing key: {r}"
    );

    // --trust means nothing without --previous.
    let r = run(bb().arg("check").arg(&spec).arg("--trust").arg(&e.signer.public_path).arg("--json"));
    assert_eq!(r.code, Some(2), "{r}");
}

#[test]
fn inspect_shows_the_manifest_without_checking_it() {
    let e = env();
    let r = run(bb().arg("inspect").arg(&e.bundle4).arg("--json"));
    r.expect_ok();
    let v: Value = r.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["command"], "inspect");
    assert_eq!(v["signature_checked"], false, "{r}");
    assert_eq!(v["key_id"], e.signer.key_id.as_str());
    assert_eq!(v["manifest"]["app"], "fieldlog");
    assert_eq!(v["manifest"]["version"], "4.0.0");
    assert!(v["trusted_comment"].as_str().unwrap().contains("version:4.0.0"), "{r}");
    assert_eq!(
        v["manifest"]["files"].as_array().map(Vec::len),
        v["manifest"]["payload"]["entries"].as_u64().map(|n| n as usize)
    );

    let h = run(bb().arg("inspect").arg(&e.bundle4));
    h.expect_ok();
    assert!(h.stdout.contains("NOT checked"), "{h}");

    // It really checks nothing: a bundle with a tampered manifest still inspects (and fails verify).
    let mut parts = test_support::Parts::read(&e.bundle4);
    let i = parts.manifest.iter().position(|&b| b == b'4').unwrap();
    parts.manifest[i] = b'5';
    let tmp = tempfile::tempdir().unwrap();
    let tampered = tmp.path().join("tampered.tgz");
    parts.bundle().write(&tampered);
    let r = run(bb().arg("inspect").arg(&tampered).arg("--json"));
    r.expect_ok();
    assert_eq!(r.json()["signature_checked"], false);
    let r = run(bb().arg("verify").arg(&tampered).arg("--trust").arg(&e.signer.public_path).arg("--json"));
    r.expect_code(3);
}
