//! `bundle-build rotate` and the spec's `key_rotations`: the statement file is written once and
//! signed by both keys, a build carries it in the manifest, a statement for another app or edited
//! after signing fails the build's lints, and `check --previous` refuses a release that dropped a
//! statement the previous one carried (they are cumulative).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use test_support::{copy_spec, run, KeyPair, Run};

const BIN: &str = env!("CARGO_BIN_EXE_bundle-build");

fn bb() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(Stdio::null()).env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn rotate(a: &KeyPair, b: &KeyPair, app: &str, out: &Path) -> Run {
    run(bb()
        .args(["rotate", "--json", "--app", app, "--old"])
        .arg(&a.secret_path)
        .arg("--new")
        .arg(&b.secret_path)
        .arg("--out")
        .arg(out))
}

/// Copies fixture `version` to `dir` and lists `statements` under `key_rotations`.
fn spec_with(version: &str, dir: &Path, statements: &[&Path]) -> PathBuf {
    let spec = copy_spec(version, dir);
    let mut text = std::fs::read_to_string(&spec).unwrap();
    if !statements.is_empty() {
        text.push_str("key_rotations:\n");
        for s in statements {
            text.push_str(&format!("  - {}\n", s.display()));
        }
    }
    std::fs::write(&spec, text).unwrap();
    spec
}

fn check(spec: &Path, previous: Option<&Path>) -> Run {
    let mut c = bb();
    c.arg("check").arg(spec).arg("--json");
    if let Some(p) = previous {
        c.arg("--previous").arg(p);
    }
    run(&mut c)
}

#[test]
fn statements_are_signed_carried_linted_and_cumulative() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let a = KeyPair::keygen(&d.join("a"));
    let b = KeyPair::keygen(&d.join("b"));
    let statement = d.join("a-to-b.yaml");
    let r = rotate(&a, &b, "fieldlog", &statement);
    r.expect_ok();
    assert_eq!(
        (r.json()["old"].as_str(), r.json()["new"].as_str()),
        (Some(a.key_id.as_str()), Some(b.key_id.as_str())),
        "{r}"
    );
    let text = std::fs::read_to_string(&statement).unwrap();
    assert!(text.contains("action: replace") && text.contains(&a.public().to_base64()), "{text}");
    // Never overwritten.
    let again = rotate(&a, &b, "fieldlog", &statement);
    assert_ne!(again.code, Some(0), "{again}");
    assert_eq!(std::fs::read_to_string(&statement).unwrap(), text);

    // Carried in the manifest.
    let spec3 = spec_with("3.0.0", &d.join("s3"), &[&statement]);
    let r = run(bb()
        .arg("build")
        .arg(&spec3)
        .arg("--key")
        .arg(&a.secret_path)
        .arg("--out")
        .arg(d.join("o3"))
        .arg("--json"));
    r.expect_ok();
    let bundle3 = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    let inspect = run(bb().arg("inspect").arg(&bundle3).arg("--json"));
    assert_eq!(inspect.json()["manifest"]["key_rotations"].as_array().map(Vec::len), Some(1), "{inspect}");

    // Another app's statement, and one edited after signing: invalid_key_rotation.
    let other = d.join("other.yaml");
    rotate(&a, &b, "otherapp", &other).expect_ok();
    let edited = d.join("edited.yaml");
    std::fs::write(&edited, text.replace("action: replace", "action: add")).unwrap();
    for (name, bad) in [("other-app", &other), ("edited", &edited)] {
        let r = check(&spec_with("3.0.0", &d.join(name), &[bad]), None);
        r.expect_code(2);
        assert_eq!(r.error_kind().as_deref(), Some("invalid_key_rotation"), "{name}: {r}");
    }

    // The next release without the statement: check --previous refuses it.
    let r = check(&spec_with("4.0.0", &d.join("s4-without"), &[]), Some(&bundle3));
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("released_key_rotation_removed"), "{r}");
    check(&spec_with("4.0.0", &d.join("s4-with"), &[&statement]), Some(&bundle3)).expect_ok();
}
