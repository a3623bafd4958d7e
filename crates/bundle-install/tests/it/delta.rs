//! Delta bundles end to end with the real binaries: `bundle-build build --base` (the base's
//! signature checked), `inspect` (full or delta, what it needs), `verify`, and `plan`/`apply` on
//! sites that have the base (files taken from the store or a kept release and checked), that lack
//! it (refused before any change, exit 4, naming the files and the base), and whose copies are
//! damaged (another copy used, or refused). Split volumes too.
//!
//! Needs the workspace binaries (`cargo build` first) and python3.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::{fixture_specs, run, scratch_dir, tool, KeyPair, Run};

fn bb(args: &[&OsStr]) -> Run {
    run(tool("bundle-build").args(args).env("SOURCE_DATE_EPOCH", "1700000000"))
}

/// 4.0.0 built against the fixture's 3.0.0 bundle (optionally split).
fn delta_build(name: &str, extra: &[&str]) -> (Run, PathBuf) {
    let out = scratch_dir(&format!("delta-{name}"));
    let spec = fixture_specs().join("4.0.0/spec.yaml");
    let mut args: Vec<&OsStr> =
        vec![OsStr::new("build"), spec.as_os_str(), OsStr::new("--key"), fixture().key.secret_path.as_os_str()];
    args.extend([
        OsStr::new("--out"),
        out.as_os_str(),
        OsStr::new("--base"),
        bundle("3.0.0").as_os_str(),
        OsStr::new("--json"),
    ]);
    args.extend(extra.iter().map(OsStr::new));
    (bb(&args), out)
}

fn delta_4() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let (r, _) = delta_build("plain", &[]);
        assert_eq!(r.code, Some(0), "{r}");
        PathBuf::from(r.json()["bundle"].as_str().unwrap())
    })
}

fn inspect(b: &Path) -> Value {
    let r = bb(&[OsStr::new("inspect"), b.as_os_str(), OsStr::new("--json")]);
    assert_eq!(r.code, Some(0), "{r}");
    r.json()
}

fn plan(root: &Path, b: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> =
        vec![OsStr::new("plan"), b.as_os_str(), OsStr::new("--root"), root.as_os_str(), OsStr::new("--json")];
    args.extend(extra.iter().map(OsStr::new));
    bi(args)
}

#[test]
fn delta_bundle_is_small_signed_and_says_what_it_needs() {
    let d = delta_4();
    let full = bundle("4.0.0");
    let (ds, fs) = (std::fs::metadata(d).unwrap().len(), std::fs::metadata(full).unwrap().len());
    assert!(ds < fs, "delta {ds} bytes, full {fs}");
    let v =
        bb(&[OsStr::new("verify"), d.as_os_str(), OsStr::new("--trust"), pubkey().as_os_str(), OsStr::new("--json")]);
    assert_eq!(v.code, Some(0), "{v}");
    // GNU tar reads it, and it holds no fieldkit wheel (3.0.0 carries the same one).
    let list = run(std::process::Command::new("tar").arg("-tzf").arg(d));
    assert_eq!(list.code, Some(0), "{list}");
    assert!(!list.stdout.contains("fieldkit-"), "{}", list.stdout);
    assert!(list.stdout.contains("wheels/fieldlog-4.0.0"), "{}", list.stdout);

    let j = inspect(d);
    assert_eq!(j["kind"], "delta", "{j}");
    assert_eq!(j["delta"]["base"]["version"], "3.0.0");
    let base_id = inspect(bundle("3.0.0"));
    assert_eq!(base_id["kind"], "full");
    let needs: Vec<&str> =
        j["delta"]["needs"].as_array().unwrap().iter().map(|n| n["path"].as_str().unwrap()).collect();
    assert!(needs.iter().any(|p| p.starts_with("wheels/fieldkit-")), "{needs:?}");
    // The manifest still lists (and signs) every file, omitted or not.
    let m = &j["manifest"];
    assert_eq!(m["files"].as_array().unwrap().len(), inspect(full)["manifest"]["files"].as_array().unwrap().len());
    let human = bb(&[OsStr::new("inspect"), d.as_os_str()]);
    assert!(human.stdout.contains("delta bundle on fieldlog 3.0.0"), "{human}");
}

#[test]
fn base_signature_is_checked() {
    let other = KeyPair::keygen(&scratch_dir("delta-other-key").join("k"));
    let (r, _) = delta_build("wrong-base-key", &["--base-trust", other.public_path.to_str().unwrap()]);
    assert_eq!(r.code, Some(3), "{r}");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("base bundle"), "{r}");
}

/// On a site running the base, plan says where the omitted files come from and apply works.
#[test]
fn delta_applies_on_a_site_that_has_the_base() {
    let root = new_root("delta-on-3");
    apply_ok(&root, bundle("3.0.0"));
    let p = plan(&root, delta_4(), &[]);
    assert_eq!(p.code, Some(0), "{p}");
    let files =
        p.json()["plan"]["delta"]["files"].as_array().cloned().unwrap_or_else(|| panic!("no delta in plan:\n{p}"));
    assert!(!files.is_empty());
    let human = bi([OsStr::new("plan"), delta_4().as_os_str(), OsStr::new("--root"), root.as_os_str()]);
    assert!(human.stdout.contains("delta bundle on fieldlog 3.0.0"), "{human}");

    apply_ok(&root, delta_4());
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 4.0.0\n"), "{v}");
    // The release's bundle/ holds every file of the manifest, with its sha256.
    let rel = root.join("releases/4.0.0/bundle");
    let m: serde_yaml::Value = serde_yaml::from_slice(&std::fs::read(rel.join("manifest.yaml")).unwrap()).unwrap();
    for f in m["files"].as_sequence().unwrap() {
        let path = f["path"].as_str().unwrap();
        let data = std::fs::read(rel.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(format!("{:x}", Sha256::digest(&data)), f["sha256"].as_str().unwrap(), "{path}");
    }
}

/// Without the base the bundle is refused before any change, naming the files and the base.
#[test]
fn delta_without_its_base_is_refused_before_any_change() {
    // An empty site.
    let root = new_root("delta-empty");
    let p = plan(&root, delta_4(), &["--trust", pubkey().to_str().unwrap()]);
    let (kind, msg) = expect_error(&p, 4);
    assert_eq!(kind, "delta_base_missing", "{p}");
    assert!(msg.contains("fieldlog 3.0.0") && msg.contains("wheels/fieldkit-"), "{msg}");
    let a = apply(&root, delta_4(), &["--trust", pubkey().to_str().unwrap()]);
    assert_eq!(expect_error(&a, 4).0, "delta_base_missing", "{a}");
    assert!(!root.join("current").exists() && !root.join("releases").join("4.0.0").exists());

    // A site on 1.0.0 has the fieldkit wheel but not what 2.0.0 and 3.0.0 added.
    let root = new_root("delta-on-1");
    apply_ok(&root, bundle("1.0.0"));
    let before = SiteState::capture(&root);
    let a = apply(&root, delta_4(), &[]);
    let (kind, msg) = expect_error(&a, 4);
    assert_eq!(kind, "delta_base_missing", "{a}");
    assert!(!msg.contains("wheels/fieldkit-"), "the site has that one: {msg}");
    assert!(msg.contains("3.0.0"), "{msg}");
    before.assert_same(&SiteState::capture(&root), "refused delta");
    assert!(a.json()["error"]["hint"].as_str().unwrap().contains("full bundle of fieldlog 3.0.0"), "{a}");
}

/// A damaged store copy is passed over for an intact one; when every copy is damaged the bundle
/// is refused and nothing changes.
#[test]
fn delta_with_damaged_copies_uses_an_intact_one_or_refuses() {
    let root = new_root("delta-damaged");
    apply_ok(&root, bundle("3.0.0"));
    let store = root.join("store/wheels");
    let kit = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_to_string(e.path().join("entry.json")).unwrap().contains("\"wheel\": \"fieldkit-"))
        .unwrap()
        .path();
    // The wheel file itself (shared with releases/3.0.0/bundle/wheels/) is damaged: no copy is left.
    let whl = kit.join("wheel.whl");
    let mut data = std::fs::read(&whl).unwrap();
    let good = data.clone();
    data[100] ^= 0xff;
    std::fs::write(&whl, &data).unwrap();
    let before = SiteState::capture(&root);
    let a = apply(&root, delta_4(), &[]);
    let (kind, msg) = expect_error(&a, 4);
    assert_eq!(kind, "delta_base_damaged", "{a}");
    assert!(msg.contains("fieldkit"), "{msg}");
    before.assert_same(&SiteState::capture(&root), "refused damaged delta");

    // Put the wheel right but damage the unpacked tree: the store entry is passed over, the kept
    // release's wheel (checked in full) is used, and the entry is rebuilt.
    std::fs::write(&whl, &good).unwrap();
    let tree_file = walkdir::WalkDir::new(kit.join("tree"))
        .into_iter()
        .flatten()
        .find(|e| e.path().ends_with("fieldkit/cli.py"))
        .unwrap()
        .into_path();
    let mut t = std::fs::read(&tree_file).unwrap();
    t[0] ^= 1;
    std::fs::write(&tree_file, &t).unwrap();
    apply_ok(&root, delta_4());
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 4.0.0\n"), "{v}");
}

/// A split delta bundle applies like a whole one.
#[test]
fn split_delta_applies() {
    let (r, out) = delta_build("split", &["--split-size", "1M"]);
    assert_eq!(r.code, Some(0), "{r}");
    let index = out.join("fieldlog-4.0.0.bundle.tar.gz.parts");
    assert!(index.is_file(), "{r}");
    assert_eq!(inspect(&index)["kind"], "delta");
    let root = new_root("delta-split");
    apply_ok(&root, bundle("3.0.0"));
    apply_ok(&root, &index);
    let v = fieldlog(&root, &["version"]);
    assert_eq!(v.stdout, "fieldlog 4.0.0\n", "{v}");
}

/// The full base bundle beside the delta one (or named with --base-bundle) supplies what the site
/// lacks; a bundle that is not the base is refused by name.
#[test]
fn full_base_bundle_beside_the_delta_supplies_what_the_site_lacks() {
    let (r, out) = delta_build("beside", &[]);
    assert_eq!(r.code, Some(0), "{r}");
    let d = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    std::fs::copy(bundle("3.0.0"), out.join("fieldlog-3.0.0.bundle.tar.gz")).unwrap();
    let root = new_root("delta-beside");
    let trust = ["--trust", pubkey().to_str().unwrap()];
    let p = plan(&root, &d, &trust);
    assert_eq!(p.code, Some(0), "{p}");
    assert!(p.stdout.contains("base_bundle"), "{p}");
    let a = apply(&root, &d, &trust);
    assert_eq!(a.code, Some(0), "{a}");
    let v = fieldlog(&root, &["version"]);
    assert_eq!(v.stdout, "fieldlog 4.0.0\n", "{v}");

    // Named explicitly, from elsewhere; and a wrong one.
    let root = new_root("delta-given");
    let given = ["--trust", pubkey().to_str().unwrap(), "--base-bundle", bundle("3.0.0").to_str().unwrap()];
    assert_eq!(plan(&root, delta_4(), &given).code, Some(0));
    let wrong = ["--trust", pubkey().to_str().unwrap(), "--base-bundle", bundle("2.0.0").to_str().unwrap()];
    let w = plan(&root, delta_4(), &wrong);
    assert_eq!(expect_error(&w, 2).0, "wrong_base_bundle", "{w}");
    apply(&root, delta_4(), &given);
    assert_eq!(fieldlog(&root, &["version"]).stdout, "fieldlog 4.0.0\n");
}
