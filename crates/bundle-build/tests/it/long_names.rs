//! Bundle paths longer than a ustar header holds (issue 12: `pip download` wheel names such as
//! `charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl`),
//! through the real binary: a release with a real wheel whose file name is over 150 bytes passes
//! `check`, builds, verifies, is reproducible, and GNU tar and Python's `tarfile` list and extract it
//! under its full name; the raw archive has exactly one PAX header, for that wheel. And `check` and
//! `build` refuse, naming the file, what the archive cannot hold (a path over 240 bytes, a file over
//! 8 GiB), so whatever `check` passes, `build` can write.

use std::path::{Path, PathBuf};
use std::process::Command;

use bundle_core::hash::sha256_hex;
use bundle_core::verify::{verify_reader, Limits};
use test_support::{copy_spec, gunzip, run, write_wheel, KeyPair, Parts, Run};

const BIN: &str = env!("CARGO_BIN_EXE_bundle-build");

fn bb() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(std::process::Stdio::null());
    c
}

fn build(spec: &Path, key: &KeyPair, out: &Path) -> Run {
    run(bb()
        .arg("build")
        .arg(spec)
        .arg("--key")
        .arg(&key.secret_path)
        .arg("--out")
        .arg(out)
        .arg("--json")
        .env("SOURCE_DATE_EPOCH", "1700000000"))
}

/// Entry names of `bundle` as GNU tar lists them.
fn gnu_tar_names(bundle: &Path) -> Vec<String> {
    let r = run(Command::new("tar").arg("-tzf").arg(bundle));
    r.expect_ok();
    r.stdout.lines().map(str::to_string).collect()
}

/// Entry names of `bundle` as Python's `tarfile` lists them, and the sha256 of `member` extracted.
fn python_tarfile(bundle: &Path, member: &str) -> (Vec<String>, String) {
    let script = r#"
import hashlib, sys, tarfile
with tarfile.open(sys.argv[1], "r:gz") as t:
    for n in t.getnames():
        print(n)
    print(hashlib.sha256(t.extractfile(sys.argv[2]).read()).hexdigest())
"#;
    let r = run(Command::new("python3").arg("-c").arg(script).arg(bundle).arg(member));
    r.expect_ok();
    let mut lines: Vec<String> = r.stdout.lines().map(str::to_string).collect();
    let sha = lines.pop().expect("a hash line");
    (lines, sha)
}

#[test]
fn a_wheel_name_over_150_bytes_builds_verifies_and_reads_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::keygen(&tmp.path().join("signer"));
    let spec = copy_spec("4.0.0", &tmp.path().join("spec"));
    let wheelhouse = tmp.path().join("spec/wheelhouse");
    let wheel = write_wheel(&wheelhouse, &format!("long_named_kit_{}", "abcdefghij".repeat(13)), "1.0.0");
    assert!(wheel.len() > 150, "{} bytes", wheel.len());
    let long = format!("wheels/{wheel}");
    let wheel_sha = sha256_hex(&std::fs::read(wheelhouse.join(&wheel)).unwrap());

    let c = run(bb().arg("check").arg(&spec).arg("--json"));
    c.expect_ok();
    assert_eq!(c.json()["errors"], 0, "{c}");

    // Reproducible: two builds, byte for byte.
    let (out1, out2) = (tmp.path().join("out1"), tmp.path().join("out2"));
    let b1 = build(&spec, &key, &out1);
    b1.expect_ok();
    build(&spec, &key, &out2).expect_ok();
    let bundle = PathBuf::from(b1.json()["bundle"].as_str().unwrap());
    let bytes = std::fs::read(&bundle).unwrap();
    assert!(bytes == std::fs::read(out2.join(bundle.file_name().unwrap())).unwrap(), "two builds differ");

    // Verified by the real binary, with the long name listed.
    let v = run(bb().arg("verify").arg(&bundle).arg("--trust").arg(&key.public_path).arg("--json"));
    v.expect_ok();
    let verified = verify_reader(&bytes[..], &[key.public()], None, &Limits::default()).expect("verifies");
    let mut expected = vec!["manifest.yaml".to_string(), "manifest.yaml.minisig".to_string()];
    expected.extend(verified.manifest().files.iter().map(|f| f.path.clone()));
    assert!(expected.contains(&long), "{expected:?}");
    assert_eq!(verified.manifest().file(&long).unwrap().sha256, wheel_sha);

    // GNU tar and Python's tarfile see the same names, and the wheel's bytes under its full name.
    assert_eq!(gnu_tar_names(&bundle), expected);
    let (names, sha) = python_tarfile(&bundle, &long);
    assert_eq!(names, expected);
    assert_eq!(sha, wheel_sha);
    let x = Command::new("tar").arg("-xzOf").arg(&bundle).arg(&long).output().unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert_eq!(sha256_hex(&x.stdout), wheel_sha, "GNU tar extracts other bytes");

    // Exactly one PAX header, right before the long-named wheel, holding one `path` record.
    let plain = gunzip(&bytes).unwrap();
    let mut ar = tar::Archive::new(&plain[..]);
    let raw: Vec<(tar::EntryType, Vec<u8>)> = ar
        .entries()
        .unwrap()
        .raw(true)
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (
                e.header().entry_type(),
                if e.header().entry_type().is_pax_local_extensions() { data } else { e.path_bytes().into_owned() },
            )
        })
        .collect();
    let pax: Vec<usize> =
        raw.iter().enumerate().filter(|(_, (t, _))| *t != tar::EntryType::Regular).map(|(i, _)| i).collect();
    assert_eq!(pax.len(), 1, "{:?}", raw.iter().map(|r| r.0).collect::<Vec<_>>());
    let record = format!(" path={long}\n");
    assert_eq!(raw[pax[0]].1, format!("{}{record}", record.len() + 3).into_bytes());
    assert_eq!(raw[pax[0] + 1].1, long.as_bytes()[..100].to_vec(), "the file's own name field: the first 100 bytes");

    // The crafting tools write long names on their own (not with bundle_core's writer), and what
    // they write from this bundle's parts verifies too.
    let parts = Parts::read(&bundle);
    assert!(parts.files.iter().any(|f| f.path == long));
    let crafted = parts.bundle().to_bytes();
    verify_reader(&crafted[..], &[key.public()], None, &Limits::default()).expect("the crafted copy verifies");
}

/// `check --json` on `spec`: the run and its error lints as (code, message).
fn check_errors(spec: &Path) -> (Run, Vec<(String, String)>) {
    let r = run(bb().arg("check").arg(spec).arg("--json"));
    let v = r.json();
    let lints = v["lints"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|l| l["level"] == "error")
                .map(|l| {
                    (
                        l["code"].as_str().unwrap_or_default().to_string(),
                        l["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (r, lints)
}

#[test]
fn check_and_build_refuse_what_the_archive_cannot_hold() {
    type Break = fn(&Path) -> String;
    let cases: [(&str, Break, &str, &str); 2] = [
        (
            "a wheel whose bundle path is over 240 bytes",
            |d| {
                let name = format!("{}-1.0.0-py3-none-any.whl", "w".repeat(212));
                std::fs::write(d.join("wheelhouse").join(&name), b"never read").unwrap();
                name
            },
            "unsafe_name",
            "longer than 240 bytes",
        ),
        (
            "a hook over 8 GiB (a ustar size field holds 8 GiB - 1)",
            |d| {
                // Sparse: no disk space is used, and nothing may read it.
                let f = std::fs::OpenOptions::new().write(true).open(d.join("hooks/health.sh")).unwrap();
                f.set_len(bundle_core::archive::MAX_ENTRY_SIZE + 1).unwrap();
                "health.sh".into()
            },
            "unstorable",
            "8589934592 bytes",
        ),
    ];
    for (what, breaks, code, mention) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let key = KeyPair::keygen(&tmp.path().join("signer"));
        let dir = tmp.path().join("spec");
        let spec = copy_spec("4.0.0", &dir);
        let file = breaks(&dir);
        let (r, errors) = check_errors(&spec);
        assert_eq!(r.code, Some(2), "{what}: check must refuse\n{r}");
        let (_, message) =
            errors.iter().find(|(c, _)| c == code).unwrap_or_else(|| panic!("{what}: no `{code}` lint in {errors:?}"));
        assert!(message.contains(&file) && message.contains(mention), "{what}: {message}");
        // (No snapshot of the spec: it would read the sparse 8 GiB file.)
        let out = tmp.path().join("out");
        let b = build(&spec, &key, &out);
        assert_eq!(b.code, Some(2), "{what}: build must refuse like check\n{b}");
        assert_eq!(b.error_kind().as_deref(), Some(code), "{b}");
        let written: Vec<_> =
            std::fs::read_dir(&out).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
        assert!(written.is_empty(), "{what}: build wrote {written:?}");
    }
}
