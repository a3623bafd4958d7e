//! Wheel selection for the site's real interpreter (`python3`): a bundle offering one distribution
//! as wheels for this interpreter, the next CPython, macOS and Windows installs the one that fits
//! (and `plan` says so, in text and JSON); a bundle whose only wheels of some distributions fit
//! no interpreter here is refused by `plan` and `apply` with exit 4 (`incompatible_wheel`) before
//! anything on the site changes.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use test_support::{run, Wheel};

/// `(major, minor)` of the `python3` that `apply` uses by default.
fn site_python_version() -> (u32, u32) {
    let r = run(Command::new("python3").args(["-c", "import sys; print(*sys.version_info[:2])"]));
    r.expect_ok();
    let mut it = r.stdout.split_whitespace().map(|n| n.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

fn plan(root: &Path, bundle: &Path, json: bool) -> test_support::Run {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "plan".as_ref(),
        bundle.as_os_str(),
        "--root".as_ref(),
        root.as_os_str(),
        "--trust".as_ref(),
        pubkey().as_os_str(),
    ];
    if json {
        args.push("--json".as_ref());
    }
    bi(args)
}

#[test]
fn plan_and_apply_choose_the_wheel_for_the_site_interpreter() {
    let (x, y) = site_python_version();
    let arch = std::env::consts::ARCH;
    let fits = format!("pyyaml-6.0.3-cp{x}{y}-cp{x}{y}-manylinux_2_17_{arch}.manylinux2014_{arch}.whl");
    let offered = [
        fits.clone(),
        format!("pyyaml-6.0.3-cp{x}{}-cp{x}{}-manylinux_2_17_{arch}.manylinux2014_{arch}.whl", y + 1, y + 1),
        format!("pyyaml-6.0.3-cp{x}{y}-cp{x}{y}-macosx_11_0_arm64.whl"),
        format!("pyyaml-6.0.3-cp{x}{y}-cp{x}{y}-win_amd64.whl"),
    ];
    let bundle = variant("select-fit", "4.0.0", |d| {
        for f in &offered {
            Wheel::new(f).file("yaml/__init__.py").write(&d.join("wheelhouse"));
        }
    });
    let root = new_root("select-fit");
    let r = plan(&root, &bundle, true);
    r.expect_ok();
    let p = r.json()["plan"].clone();
    let wheels = p["wheels"].as_array().unwrap();
    let yaml = wheels.iter().find(|w| w["name"] == "pyyaml").unwrap_or_else(|| panic!("no pyyaml in {p}"));
    assert_eq!(yaml["wheel"], format!("wheels/{fits}"), "{p}");
    assert_eq!(yaml["tag"], format!("cp{x}{y}-cp{x}{y}-manylinux_2_17_{arch}"), "{p}");
    assert_eq!(yaml["passed_over"].as_array().unwrap().len(), 3, "{p}");
    assert_eq!(wheels.len(), 3, "fieldlog, fieldkit, pyyaml: {p}");
    // The venv estimate counts the chosen wheels only.
    let m =
        run(test_support::tool("bundle-build").arg("inspect").arg(&bundle).arg("--json")).json()["manifest"].clone();
    let size = |path: &str| {
        m["files"].as_array().unwrap().iter().find(|f| f["path"] == path).unwrap()["size"].as_u64().unwrap()
    };
    let chosen: u64 = wheels.iter().map(|w| size(w["wheel"].as_str().unwrap())).sum();
    assert_eq!(p["space"]["venv_estimate_bytes"].as_u64(), Some(3 * chosen), "{p}");
    let tags = &p["site_tags"];
    assert!(tags["python"].as_str().unwrap().starts_with(&format!("{x}.{y}.")), "{tags}");
    assert_eq!(tags["abi"], format!("cp{x}{y}"), "{tags}");
    assert_eq!(tags["platforms"].as_array().unwrap().last().unwrap(), &format!("linux_{arch}"), "{tags}");
    // The text plan names the chosen file.
    let text = plan(&root, &bundle, false);
    text.expect_ok();
    assert!(text.stdout.contains(&fits) && text.stdout.contains("(of 4)"), "{text}");
    assert!(!root.exists(), "plan changed nothing (no site was created)");

    apply_ok(&root, &bundle);
    let site_packages = root.join(format!("releases/4.0.0/venv/lib/python{x}.{y}/site-packages"));
    let installed = std::fs::read_to_string(site_packages.join("yaml/__init__.py")).unwrap();
    assert!(installed.contains(&fits), "the installed module comes from {fits}: {installed}");
    let dist_infos: Vec<String> = std::fs::read_dir(&site_packages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pyyaml"))
        .collect();
    assert_eq!(dist_infos, ["pyyaml-6.0.3.dist-info"], "one pyyaml installed");
}

#[test]
fn a_distribution_without_a_fitting_wheel_is_refused_before_any_change() {
    let (x, y) = site_python_version();
    let arch = std::env::consts::ARCH;
    let bundle = variant("select-none", "4.0.0", |d| {
        let wh = d.join("wheelhouse");
        Wheel::new("numpy-2.0.0-cp311-cp311-macosx_11_0_arm64.whl").write(&wh);
        Wheel::new(&format!("pyyaml-6.0.3-cp{x}{}-cp{x}{}-manylinux2014_{arch}.whl", y + 1, y + 1)).write(&wh);
        Wheel::new("winonly-1.0-py3-none-win_amd64.whl").write(&wh);
        // Fits by tags, but not by Requires-Python.
        Wheel::new("future-1.0-py3-none-any.whl").requires_python(&format!(">={x}.{}", y + 1)).write(&wh);
    });
    let root = build_site("select-none", &["3.0.0"], &["kept note"]);
    let before = SiteState::capture(&root);
    let snap = snapshot_site(&root);
    for r in [plan(&root, &bundle, true), apply(&root, &bundle, &[])] {
        let (kind, message) = expect_error(&r, 4);
        assert_eq!(kind, "incompatible_wheel", "{r}");
        for needle in [
            "`numpy`",
            "numpy-2.0.0-cp311-cp311-macosx_11_0_arm64.whl",
            "`pyyaml`",
            "`winonly`",
            "`future`",
            "Requires-Python",
            &format!("cp{x}{y}"),
        ] {
            assert!(message.contains(needle), "the message should name {needle:?}: {message}");
        }
        assert!(!message.contains("`fieldkit`"), "fieldkit has a fitting wheel: {message}");
    }
    before.assert_same(&SiteState::capture(&root), "refused apply");
    assert_same_snapshot(&snap, &snapshot_site(&root), "refused apply");
    // A clean install is refused the same way and leaves no release behind.
    let fresh = new_root("select-none-fresh");
    let (kind, _) = expect_error(&apply(&fresh, &bundle, &[]), 4);
    assert_eq!(kind, "incompatible_wheel");
    assert!(!fresh.join("releases/4.0.0").exists() && !fresh.join("current").exists());
}
