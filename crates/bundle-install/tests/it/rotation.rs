//! Key rotation through bundles, end to end with the real binaries: release 1.0.0 signed by key A,
//! 2.0.0 signed by A carrying "B replaces A" (made by `bundle-build rotate`, signed by A and B), and
//! 3.0.0 signed by B carrying the same statement (cumulative). A site that skipped 2.0.0 goes from
//! 1.0.0 to 3.0.0 in one apply and ends up trusting B with A retired; `plan` shows it, `history`
//! records it. Forged statements, statements replayed for another app and statements that would
//! bring back a revoked key change nothing, and the bundle they came in is refused (exit 3).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::*;
use bundle_core::rotation::{KeyRotation, RotationAction, Statement};
use serde_json::Value;
use test_support::{copy_spec, run, scratch_dir, tool, KeyPair, Parts};

struct Rot {
    b: KeyPair,
    r2: PathBuf,
    r3: PathBuf,
    dir: PathBuf,
}

/// Key B, the statement "B replaces A" and releases 2.0.0 (signed by A) and 3.0.0 (signed by B).
fn rot() -> &'static Rot {
    static R: OnceLock<Rot> = OnceLock::new();
    R.get_or_init(|| {
        let dir = scratch_dir("rotation");
        let a = &fixture().key;
        let b = KeyPair::keygen(&dir.join("b"));
        let statement = dir.join("a-to-b.yaml");
        let r = run(tool("bundle-build")
            .args(["rotate", "--app", "fieldlog", "--json", "--old"])
            .arg(&a.secret_path)
            .arg("--new")
            .arg(&b.secret_path)
            .arg("--out")
            .arg(&statement));
        r.expect_ok();
        assert_eq!(r.json()["action"], "replace", "{r}");
        let with_statement = |version: &str, key: &KeyPair| {
            let spec_dir = dir.join(format!("spec-{version}"));
            let spec = copy_spec(version, &spec_dir);
            let mut text = std::fs::read_to_string(&spec).unwrap();
            text.push_str(&format!("key_rotations:\n  - {}\n", statement.display()));
            std::fs::write(&spec, text).unwrap();
            build_spec(&spec, key, &dir.join(format!("out-{version}")))
        };
        let r2 = with_statement("2.0.0", a);
        let r3 = with_statement("3.0.0", &b);
        Rot { b, r2, r3, dir }
    })
}

fn trust_list(root: &Path) -> Value {
    let r = bi(["trust", "list", "--json", "--root"].iter().map(|s| s.as_ref()).chain([root.as_os_str()]));
    r.expect_ok();
    r.json()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

fn plan(root: &Path, bundle: &Path) -> test_support::Run {
    bi([std::ffi::OsStr::new("plan"), bundle.as_os_str(), "--root".as_ref(), root.as_os_str(), "--json".as_ref()])
}

#[test]
fn a_site_that_skipped_the_middle_release_follows_the_rotation() {
    let rt = rot();
    let (a_id, b_id) = (fixture().key.key_id.clone(), rt.b.key_id.clone());
    let root = build_site("rot-skip", &["1.0.0"], &[]);
    assert_eq!(ids(&trust_list(&root)["trusted"]), vec![a_id.clone()]);

    // plan shows the rotation and changes nothing.
    let p = plan(&root, &rt.r3);
    p.expect_ok();
    let rotations = &p.json()["plan"]["key_rotations"];
    assert_eq!(rotations[0]["status"], "applied", "{p}");
    assert_eq!(rotations[0]["old"], a_id.as_str());
    assert_eq!(rotations[0]["new"], b_id.as_str());
    assert_eq!(ids(&trust_list(&root)["trusted"]), vec![a_id.clone()]);
    let human = bi([std::ffi::OsStr::new("plan"), rt.r3.as_os_str(), "--root".as_ref(), root.as_os_str()]);
    assert!(human.stdout.contains(&format!("key {b_id} replaces key {a_id}")), "{human}");

    // `verify --root` counts the statement as plan does (and writes nothing either).
    let v =
        bi([std::ffi::OsStr::new("verify"), rt.r3.as_os_str(), "--root".as_ref(), root.as_os_str(), "--json".as_ref()]);
    v.expect_ok();
    assert_eq!(v.json()["key_id"], b_id.as_str(), "{v}");
    assert_eq!(ids(&trust_list(&root)["trusted"]), vec![a_id.clone()]);

    // 1.0.0 → 3.0.0 (signed by B) in one apply.
    let j = apply_ok(&root, &rt.r3);
    assert_eq!(j["applied"]["key_id"], b_id.as_str());
    let t = trust_list(&root);
    assert_eq!(ids(&t["trusted"]), vec![b_id.clone()]);
    assert_eq!(ids(&t["retired"]), vec![a_id.clone()]);
    let last = history(&root).pop().unwrap();
    assert_eq!(last["key_rotations"][0]["status"], "applied", "{last}");
    assert!(last["steps"].as_array().unwrap().iter().any(|s| s["step"] == "rotate_keys"), "{last}");

    // A bundle signed by the retired key A is refused from now on.
    let r = apply(&root, bundle("4.0.0"), &[]);
    let (kind, _) = expect_error(&r, 3);
    assert_eq!(kind, "untrusted_key", "{r}");
}

#[test]
fn a_site_that_takes_every_release_rotates_at_the_middle_one() {
    let rt = rot();
    let (a_id, b_id) = (fixture().key.key_id.clone(), rt.b.key_id.clone());
    let root = build_site("rot-each", &["1.0.0"], &[]);
    apply_ok(&root, &rt.r2);
    let t = trust_list(&root);
    assert_eq!(ids(&t["trusted"]), vec![b_id.clone()]);
    assert_eq!(ids(&t["retired"]), [a_id]);
    // 3.0.0 carries the statement again: already applied, changes nothing, verifies with B.
    let j = apply_ok(&root, &rt.r3);
    assert_eq!(j["applied"]["plan"]["key_rotations"][0]["status"], "ignored", "{j}");
    assert_eq!(ids(&trust_list(&root)["trusted"]), [b_id]);
}

#[test]
fn a_failed_apply_undoes_the_rotation() {
    let rt = rot();
    let a_id = fixture().key.key_id.clone();
    let root = build_site("rot-fail", &["1.0.0"], &[]);
    let mut c = tool("bundle-install");
    c.arg("apply").arg(&rt.r3).arg("--root").arg(&root).arg("--json").env("BUNDLE_INSTALL_TEST_FAIL", "swap");
    let r = run(&mut c);
    expect_error(&r, 1);
    let t = trust_list(&root);
    assert_eq!(ids(&t["trusted"]), [a_id]);
    assert!(ids(&t["retired"]).is_empty(), "{t}");
}

/// A bundle of release 3.0.0 re-signed by `signer` and carrying `rotations` instead of its own.
fn crafted(name: &str, rotations: Vec<KeyRotation>, signer: &bundle_core::signature::SecretKey) -> PathBuf {
    let mut parts = Parts::read(&rot().r3);
    let mut m = parts.parsed();
    m.key_rotations = rotations;
    parts.set_manifest(&m, signer);
    let path = rot().dir.join(format!("{name}.bundle.tar.gz"));
    parts.bundle().write(&path);
    path
}

#[test]
fn forged_replayed_and_reviving_statements_change_nothing_and_the_bundle_is_refused() {
    let rt = rot();
    let a = fixture().key.secret();
    let x_pair = KeyPair::keygen(&rt.dir.join("x"));
    let x = x_pair.secret();
    let root = build_site("rot-hostile", &["1.0.0"], &[]);
    let before = trust_list(&root);

    // Forged: "X joins A", the slot of A's signature filled by X's.
    let s = Statement { app: "fieldlog".into(), action: RotationAction::Add, old: a.public_key(), new: x.public_key() };
    let mut forged = s.sign(&a, &x).unwrap();
    forged.signatures[0] = x.sign(forged.statement.as_bytes(), "forged").unwrap().to_minisign();
    // Replayed: a genuine statement of A for another app.
    let other = Statement { app: "otherapp".into(), ..s.clone() }.sign(&a, &x).unwrap();
    for (name, r) in [("forged", forged), ("other-app", other)] {
        let bundle = crafted(name, vec![r], &x);
        let p = plan(&root, &bundle);
        let (kind, _) = expect_error(&p, 3);
        assert_eq!(kind, "untrusted_key", "{name}: {p}");
        let r = apply(&root, &bundle, &[]);
        let (kind, _) = expect_error(&r, 3);
        assert_eq!(kind, "untrusted_key", "{name}: {r}");
        assert_eq!(trust_list(&root), before, "{name} changed the trust store");
    }

    // Reviving a revoked key: B is revoked here before the site ever saw the rotation.
    let r = bi([
        std::ffi::OsStr::new("trust"),
        "revoke".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
        rt.b.public_path.as_os_str(),
    ]);
    r.expect_ok();
    let before = trust_list(&root);
    let r = apply(&root, &rt.r3, &[]);
    let (kind, _) = expect_error(&r, 3);
    // The statement is refused, so B stays untrusted, and a bundle B signed is named as signed by a
    // revoked key.
    assert_eq!(kind, "revoked_key", "{r}");
    assert_eq!(trust_list(&root), before);
    assert!(!ids(&before["trusted"]).contains(&rt.b.key_id));

    // A statement signed by a key the site does not trust, in a bundle A signed: ignored.
    let y = KeyPair::keygen(&rt.dir.join("y")).secret();
    let stranger =
        Statement { app: "fieldlog".into(), action: RotationAction::Add, old: x.public_key(), new: y.public_key() }
            .sign(&x, &y)
            .unwrap();
    let bundle = crafted("stranger", vec![stranger], &a);
    let p = plan(&root, &bundle);
    p.expect_ok();
    assert_eq!(p.json()["plan"]["key_rotations"][0]["status"], "ignored", "{p}");
    assert_eq!(trust_list(&root), before);
}
