//! The site's content-addressed store (`ROOT/store/wheels/<sha256>/`), end to end with the real
//! binaries on fixture sites: releases share unchanged wheels by hardlink and write only `bin/`
//! and `RECORD` per release; a damaged store entry is detected before the swap and rebuilt from
//! the bundle, never linked (and refused by the linker itself); entries go with the releases that
//! used them, and rolling back to a kept release does not need the store.
//!
//! Needs the workspace binaries (`cargo build` first) and python3.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::*;
use base64::Engine as _;
use bundle_install::python::store;
use bundle_install::Site;
use sha2::{Digest, Sha256};

/// A fresh site: 1.0.0 then 4.0.0, applied in place (no copying, which would break the links).
fn site_1_then_4() -> &'static Path {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let root = new_root("store-1-4");
        apply_ok(&root, bundle("1.0.0"));
        apply_ok(&root, bundle("4.0.0"));
        root
    })
}

fn site_packages(release: &Path) -> PathBuf {
    let lib = release.join("venv/lib");
    std::fs::read_dir(&lib).unwrap().flatten().map(|e| e.path().join("site-packages")).find(|p| p.is_dir()).unwrap()
}

/// The store entry of the wheel whose file name starts with `prefix`.
fn entry_of(root: &Path, prefix: &str) -> (String, store::EntryRecord) {
    let site = Site::new(root);
    for e in std::fs::read_dir(root.join("store/wheels")).unwrap().flatten() {
        let sha = e.file_name().to_string_lossy().into_owned();
        if let Some(r) = store::read_entry(&site, &sha) {
            if r.wheel.starts_with(prefix) {
                return (sha, r);
            }
        }
    }
    panic!("no store entry for {prefix}*");
}

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).ino()
}

fn record_hash(data: &[u8]) -> String {
    format!("sha256={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(data)))
}

/// Every RECORD line with a hash matches the file it names.
fn assert_record_matches(dist_info: &Path) {
    let sp = dist_info.parent().unwrap();
    let text = std::fs::read_to_string(dist_info.join("RECORD")).unwrap();
    for line in text.lines() {
        let mut parts = line.rsplitn(3, ',');
        let (size, hash, path) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        if hash.is_empty() {
            continue;
        }
        let data = std::fs::read(sp.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(record_hash(&data), hash, "RECORD of {} line {line}", dist_info.display());
        assert_eq!(data.len().to_string(), size, "{line}");
    }
}

#[test]
fn releases_share_unchanged_wheels_by_hardlink() {
    let root = site_1_then_4();
    let (r1, r4) = (root.join("releases/1.0.0"), root.join("releases/4.0.0"));
    let (sha, entry) = entry_of(root, "fieldkit-");
    let tree = root.join("store/wheels").join(&sha).join("tree");
    let rel_sp = entry.site_packages.clone();
    for file in ["fieldkit/__init__.py", "fieldkit/cli.py"] {
        let stored = tree.join(&rel_sp).join(file);
        for r in [&r1, &r4] {
            let linked = site_packages(r).join(file);
            assert_eq!(ino(&linked), ino(&stored), "{} is not a link to the store", linked.display());
        }
        let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "store file {} is writable ({mode:o})", stored.display());
    }
    // Bytecode was compiled once, in the store, and is linked too.
    let pyc = std::fs::read_dir(site_packages(&r4).join("fieldkit/__pycache__"))
        .unwrap()
        .flatten()
        .next()
        .expect("a .pyc")
        .path();
    let stored_pyc = tree.join(&rel_sp).join("fieldkit/__pycache__").join(pyc.file_name().unwrap());
    assert_eq!(ino(&pyc), ino(&stored_pyc));
    // The wheel files of the two releases' bundle/ are one file.
    let whl = format!("bundle/wheels/{}", entry.wheel);
    assert_eq!(ino(&r1.join(&whl)), ino(&r4.join(&whl)));
    // Scripts carry each release's own interpreter and are not shared.
    for script in ["fieldkit", "fieldkit-report"] {
        let (a, b) = (r1.join("venv/bin").join(script), r4.join("venv/bin").join(script));
        assert_ne!(ino(&a), ino(&b));
        let text = std::fs::read_to_string(&b).unwrap();
        assert!(
            text.starts_with(&format!("#!{}", r4.join("venv/bin/python").display())),
            "{script}: {}",
            text.lines().next().unwrap()
        );
        assert!(!text.contains(store::PLACEHOLDER_PYTHON));
        let run = test_support::run(&mut std::process::Command::new(&b));
        assert_eq!(run.code, Some(0), "{script}: {run}");
    }
    // RECORD is written per release and matches what the release holds (scripts included).
    for r in [&r1, &r4] {
        let di = std::fs::read_dir(site_packages(r))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("fieldkit-1.2.0.dist-info"))
            .unwrap();
        assert_eq!(std::fs::metadata(di.join("RECORD")).unwrap().nlink(), 1);
        assert_record_matches(&di);
    }
    let v = fieldlog(root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 4.0.0\n"), "{v}");
    // Every entry verifies in full against its record.
    let site = Site::new(root);
    for e in std::fs::read_dir(root.join("store/wheels")).unwrap().flatten() {
        let r = store::read_entry(&site, &e.file_name().to_string_lossy()).unwrap();
        assert_eq!(store::check_entry(&site, &r, true), None);
    }
}

/// Delete one store file, flip one byte in another: the next apply notices before the swap,
/// unpacks the wheel again from the bundle at hand, and the new release gets the right bytes.
#[test]
fn damaged_store_entry_is_rebuilt_from_the_bundle_not_linked() {
    let root = new_root("store-damaged");
    apply_ok(&root, bundle("1.0.0"));
    let (sha, entry) = entry_of(&root, "fieldkit-");
    let tree = root.join("store/wheels").join(&sha).join("tree").join(&entry.site_packages);
    let deleted = tree.join("fieldkit/text.py");
    let flipped = tree.join("fieldkit/cli.py");
    let good = std::fs::read(&flipped).unwrap();
    std::fs::remove_file(&deleted).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 0x20;
    // As any writer would: the read-only mode first (a root process ignores it anyway).
    std::fs::set_permissions(&flipped, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&flipped, &bad).unwrap();

    let site = Site::new(&root);
    let why = store::check_entry(&site, &store::read_entry(&site, &sha).unwrap(), false).expect("damage detected");
    assert!(why.contains("fieldkit/"), "{why}");

    let damaged_ino = ino(&flipped);
    let r = apply(&root, bundle("4.0.0"), &[]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("could not be used"), "no warning about the damaged entry:\n{r}");
    let sp4 = site_packages(&root.join("releases/4.0.0"));
    assert_eq!(std::fs::read(sp4.join("fieldkit/cli.py")).unwrap(), good, "the damaged byte reached the new release");
    assert!(sp4.join("fieldkit/text.py").is_file());
    let rebuilt = store::read_entry(&site, &sha).unwrap();
    assert_eq!(store::check_entry(&site, &rebuilt, true), None);
    assert_ne!(ino(&sp4.join("fieldkit/cli.py")), damaged_ino, "linked to the damaged inode");
    assert_eq!(ino(&sp4.join("fieldkit/cli.py")), ino(&flipped), "not linked to the rebuilt entry");
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 4.0.0\n"), "{v}");
}

/// The linker itself refuses a damaged entry (say, damaged between the store step and the link):
/// nothing of it reaches the venv.
#[test]
fn linking_refuses_a_damaged_entry() {
    let root = new_root("store-refuse");
    apply_ok(&root, bundle("1.0.0"));
    let site = Site::new(&root);
    let (sha, entry) = entry_of(&root, "fieldkit-");
    let victim =
        root.join("store/wheels").join(&sha).join("tree").join(&entry.site_packages).join("fieldkit/__init__.py");
    let mut data = std::fs::read(&victim).unwrap();
    data[0] ^= 1;
    std::fs::write(&victim, &data).unwrap();

    let interp = bundle_install::python::Interpreter::probe("python3").unwrap();
    let venv = bundle_install::python::create_venv(&interp, &root.join("scratch-venv")).unwrap();
    let m = site.release_manifest("1.0.0").unwrap();
    let wheels = store::wheels_of(&m, &root.join("releases/1.0.0/bundle"));
    let e = store::link_into(&site, &venv, &wheels).unwrap_err();
    assert_eq!(e.kind.as_str(), "store_damaged", "{e:?}");
    assert!(e.message.contains("fieldkit") && e.message.contains("__init__.py"), "{}", e.message);
    assert!(!venv.site_packages.join("fieldkit").exists(), "a damaged entry was linked");
}

/// keep_releases is 3: after 1.0.0 … 4.0.0, release 1.0.0 and the store entry only it used are
/// gone; the shared wheel stays. Rolling back to a kept release needs nothing from the store.
#[test]
fn prune_follows_the_releases_and_rollback_needs_no_store() {
    let root = new_root("store-prune");
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        apply_ok(&root, bundle(v));
    }
    let (sha1, _) = entry_of(&root, "fieldlog-1.0.0");
    let (kit, _) = entry_of(&root, "fieldkit-");
    apply_ok(&root, bundle("4.0.0"));
    assert!(!root.join("releases/1.0.0").exists());
    assert!(!root.join("store/wheels").join(&sha1).exists(), "the entry only 1.0.0 used was kept");
    assert!(root.join("store/wheels").join(&kit).exists());
    let names: Vec<String> = std::fs::read_dir(root.join("store/wheels"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "fieldkit + fieldlog 2, 3, 4: {names:?}");

    // Remove every entry only 4.0.0 used, as a prune after 4.0.0 left would; then roll back.
    let (sha4, _) = entry_of(&root, "fieldlog-4.0.0");
    std::fs::remove_dir_all(root.join("store/wheels").join(&sha4)).unwrap();
    let r = bi([
        OsStr::new("rollback"),
        OsStr::new("--root"),
        root.as_os_str(),
        OsStr::new("--to"),
        OsStr::new("3.0.0"),
        OsStr::new("--json"),
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let v = fieldlog(&root, &["version"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "fieldlog 3.0.0\n"), "{v}");
    // And 4.0.0 goes on again: its entry is unpacked anew from the bundle.
    apply_ok(&root, bundle("4.0.0"));
    assert!(root.join("store/wheels").join(&sha4).join("entry.json").is_file());
}

/// An interrupted run's store work directories are removed by `recover`.
#[test]
fn recover_removes_store_work_directories() {
    let root = new_root("store-recover");
    apply_ok(&root, bundle("1.0.0"));
    let work = root.join("store/.tmp-0000-20260101T000000.000Z-9.9.9");
    std::fs::create_dir_all(work.join("tree")).unwrap();
    let r = bi([OsStr::new("recover"), OsStr::new("--root"), root.as_os_str(), OsStr::new("--json")]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(!work.exists());
}
