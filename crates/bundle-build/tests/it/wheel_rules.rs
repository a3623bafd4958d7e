//! The wheel-set rules of `check` and `build`, through the real binary on the fieldlog fixture with
//! extra small real wheels (written by python3 zipfile): two versions of one distribution, two
//! wheels installing one file, WHEEL/METADATA/file name disagreeing, wheels fitting no target or
//! contradicting `python:`, targets with several wheels of one release, requirements evaluated with
//! PEP 508 markers and extras per target (`allow_unmet`), and lock files (requirements.txt with
//! hashes, PEP 751 pylock.toml): good, wrong hash, missing wheel, extra wheel.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use test_support::{copy_spec, run, KeyPair, Run, Wheel};

const BIN: &str = env!("CARGO_BIN_EXE_bundle-build");

/// A copy of the fixture 4.0.0 spec directory; the tempdir lives as long as the value.
struct Spec {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Spec {
    fn new() -> Spec {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spec");
        copy_spec("4.0.0", &dir);
        Spec { _tmp: tmp, dir }
    }
    fn path(&self) -> PathBuf {
        self.dir.join("spec.yaml")
    }
    fn wheelhouse(&self) -> PathBuf {
        self.dir.join("wheelhouse")
    }
    fn add(&self, w: Wheel) -> PathBuf {
        w.write(&self.wheelhouse())
    }
    /// Appends YAML (top-level keys) to the spec.
    fn append(&self, yaml: &str) {
        let mut text = std::fs::read_to_string(self.path()).unwrap();
        text.push_str(yaml);
        std::fs::write(self.path(), text).unwrap();
    }
    fn set_wheels(&self, value: &str) {
        let text = std::fs::read_to_string(self.path()).unwrap();
        assert!(text.contains("wheels: wheelhouse/\n"), "{text}");
        std::fs::write(self.path(), text.replace("wheels: wheelhouse/\n", &format!("wheels: {value}\n"))).unwrap();
    }
    fn check(&self) -> Checked {
        Checked(run(Command::new(BIN).arg("check").arg(self.path()).arg("--json")))
    }
    fn build(&self) -> (Run, PathBuf) {
        let out = self.dir.parent().unwrap().join("out");
        let _ = std::fs::remove_dir_all(&out);
        let key = signer();
        let r = run(Command::new(BIN)
            .arg("build")
            .arg(self.path())
            .arg("--key")
            .arg(&key.secret_path)
            .arg("--out")
            .arg(&out)
            .arg("--json")
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        (r, out.join("fieldlog-4.0.0.bundle.tar.gz"))
    }
}

/// One signing key for the whole test process.
fn signer() -> &'static KeyPair {
    static KEY: std::sync::OnceLock<KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| KeyPair::keygen(&test_support::scratch_dir("wheel-rules-key").join("signer")))
}

struct Checked(Run);

impl Checked {
    fn lints(&self) -> Vec<Value> {
        self.0.json()["lints"].as_array().cloned().unwrap_or_default()
    }
    fn errors(&self) -> Vec<String> {
        self.lints().iter().filter(|l| l["level"] == "error").map(|l| l["code"].as_str().unwrap().to_string()).collect()
    }
    fn warnings(&self) -> Vec<String> {
        self.lints()
            .iter()
            .filter(|l| l["level"] == "warning")
            .map(|l| l["code"].as_str().unwrap().to_string())
            .collect()
    }
    fn message(&self, code: &str) -> String {
        let l = self.lints();
        l.iter().find(|l| l["code"] == code).unwrap_or_else(|| panic!("no `{code}` lint:\n{}", self.0))["message"]
            .as_str()
            .unwrap()
            .to_string()
    }
    /// Exit 2 with `code` as the first error (`error.kind`), whose message mentions every `mention`.
    fn refused(&self, code: &str, mentions: &[&str]) {
        assert_eq!(self.0.code, Some(2), "expected exit 2:\n{}", self.0);
        assert_eq!(self.0.json()["error"]["kind"], code, "{}", self.0);
        let m = self.message(code);
        for s in mentions {
            assert!(m.contains(s), "the `{code}` message should mention {s:?}: {m}");
        }
    }
    fn ok(&self) {
        assert_eq!(self.0.code, Some(0), "{}", self.0);
    }
}

/// `build` refuses too, with the same kind, and writes no bundle.
fn build_refuses(s: &Spec, code: &str) {
    let (r, bundle) = s.build();
    assert_eq!(r.code, Some(2), "{r}");
    assert_eq!(r.json()["error"]["kind"], code, "{r}");
    assert!(!bundle.exists());
}

fn manifest_of(bundle: &Path) -> Value {
    let r = run(Command::new(BIN).arg("inspect").arg(bundle).arg("--json"));
    r.expect_ok();
    r.json()["manifest"].clone()
}

const X86: &str = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64";
const ARM: &str = "cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64";
const TARGETS: &str = "targets:\n- {python: \"3.11\", platform: manylinux_2_28_x86_64}\n- {python: \"3.12\", platform: manylinux_2_34_aarch64}\n";

#[test]
fn two_versions_of_one_distribution_are_refused() {
    let s = Spec::new();
    s.add(Wheel::new(&format!("pyyaml-6.0.3-{X86}.whl")));
    s.check().ok();
    s.add(Wheel::new(&format!("pyyaml-6.0.4-{X86}.whl")));
    s.check().refused("duplicate_distribution", &["pyyaml-6.0.3-", "pyyaml-6.0.4-", "keep one"]);
    build_refuses(&s, "duplicate_distribution");
}

#[test]
fn two_wheels_installing_one_file_are_refused() {
    let s = Spec::new();
    s.add(Wheel::new("jwt-1.4.0-py3-none-any.whl").file("jwt/__init__.py").file("jwt/api.py"));
    s.add(Wheel::new("PyJWT-2.10.1-py3-none-any.whl").file("PyJWT-2.10.1.data/purelib/jwt/__init__.py"));
    let c = s.check();
    c.refused(
        "file_conflict",
        &["jwt-1.4.0-py3-none-any.whl", "PyJWT-2.10.1-py3-none-any.whl", "site-packages/jwt/__init__.py"],
    );
    build_refuses(&s, "file_conflict");
    // Paths differing in case are different files on the site.
    let s = Spec::new();
    s.add(Wheel::new("jwt-1.4.0-py3-none-any.whl").file("jwt/__init__.py"));
    s.add(Wheel::new("PyJWT-2.10.1-py3-none-any.whl").file("JWT/__init__.py"));
    s.check().ok();
}

#[test]
fn file_name_wheel_and_metadata_must_agree() {
    let s = Spec::new();
    // PEP 503/440 normalisation: `PyYAML` 6.0.3.0 is `pyyaml` 6.0.3.
    let mut w = Wheel::new(&format!("PyYAML-6.0.3-{X86}.whl"));
    w.name = Some("pyyaml".into());
    s.add(w.metadata_version("6.0.3.0"));
    s.check().ok();
    let s = Spec::new();
    s.add(Wheel::new(&format!("pyyaml-6.0.3-{X86}.whl")).tags(&["cp312-cp312-manylinux_2_17_x86_64"]));
    s.check().refused(
        "wheel_tags_mismatch",
        &["pyyaml-6.0.3-", "cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-manylinux_2_17_x86_64"],
    );
    build_refuses(&s, "wheel_tags_mismatch");
    let s = Spec::new();
    s.add(Wheel::new("pyyaml-6.0.3-py3-none-any.whl").metadata_version("6.0.4"));
    s.check().refused("bad_wheel", &["6.0.4"]);
    build_refuses(&s, "bad_wheel");
}

#[test]
fn targets_carry_one_wheel_per_platform_and_refuse_what_fits_none() {
    let s = Spec::new();
    s.append(TARGETS);
    s.add(Wheel::new(&format!("pyyaml-6.0.3-{X86}.whl")));
    s.add(Wheel::new(&format!("pyyaml-6.0.3-{ARM}.whl")));
    s.check().ok();
    let (r, bundle) = s.build();
    r.expect_ok();
    let m = manifest_of(&bundle);
    assert_eq!(
        m["targets"][0],
        serde_json::json!({"implementation": "cp", "python": "3.11", "platform": "manylinux_2_28_x86_64"}),
        "{m}"
    );
    let info = m["wheel_info"].as_array().unwrap();
    let arm = info.iter().find(|w| w["path"].as_str().unwrap().contains("aarch64")).unwrap();
    assert_eq!(arm["tags"], serde_json::json!(["cp312-cp312-manylinux_2_17_aarch64"]), "{arm}");
    assert_eq!(arm["name"], "pyyaml");
    let app = info.iter().find(|w| w["name"] == "fieldlog").unwrap();
    assert_eq!(app["requires_python"], ">=3.9");

    // A macOS wheel fits neither target.
    let numpy = s.add(Wheel::new("numpy-2.0.0-cp311-cp311-macosx_11_0_arm64.whl"));
    s.check().refused(
        "incompatible_wheel",
        &["numpy-2.0.0-cp311-cp311-macosx_11_0_arm64.whl", "cp3.11 on manylinux_2_28_x86_64"],
    );
    build_refuses(&s, "incompatible_wheel");
    std::fs::remove_file(numpy).unwrap();
    // Without the aarch64 wheel, the second target has no pyyaml.
    std::fs::remove_file(s.wheelhouse().join(format!("pyyaml-6.0.3-{ARM}.whl"))).unwrap();
    s.check().refused("no_wheel_for_target", &["pyyaml", "cp3.12 on manylinux_2_34_aarch64"]);
    // Requires-Python is part of fitting: a wheel for >=3.13 only fits no target.
    let s = Spec::new();
    s.append(TARGETS);
    s.add(Wheel::new("newer-1.0-py3-none-any.whl").requires_python(">=3.13"));
    s.check().refused("incompatible_wheel", &["newer-1.0-py3-none-any.whl", "Requires-Python >=3.13"]);
    // A target outside the spec's python: range is itself an error.
    let s = Spec::new();
    s.append("targets:\n- {python: \"3.8\", platform: manylinux_2_28_x86_64}\n");
    s.check().refused("bad_target", &["3.8", ">=3.9"]);
}

#[test]
fn without_targets_requires_python_must_meet_the_spec() {
    let s = Spec::new();
    s.add(Wheel::new("oldonly-1.0-py3-none-any.whl").requires_python("<3.9"));
    s.check().refused("incompatible_wheel", &["oldonly-1.0-py3-none-any.whl", "<3.9", ">=3.9"]);
    build_refuses(&s, "incompatible_wheel");
    let s = Spec::new();
    s.add(Wheel::new("fine-1.0-py3-none-any.whl").requires_python(">=3.8,<4"));
    s.check().ok();
}

#[test]
fn requirements_are_evaluated_with_markers_and_extras_per_target() {
    let s = Spec::new();
    s.append("targets:\n- {python: \"3.11\", platform: manylinux_2_28_x86_64}\n");
    s.add(
        Wheel::new("toolkit-1.0-py3-none-any.whl")
            .requires("tomli>=1.1.0; python_version < \"3.11\"")
            .requires("colorama; sys_platform == \"win32\"")
            .requires("requests[socks]>=2")
            .requires("armonly; platform_machine == \"aarch64\"")
            .requires("pypyonly; implementation_name == \"pypy\""),
    );
    s.add(
        Wheel::new("requests-2.32.0-py3-none-any.whl")
            .requires("PySocks!=1.5.7,>=1.5.6; extra == \"socks\"")
            .requires("chardet; extra == \"other\""),
    );
    // tomli (3.11 has tomllib), colorama (not Windows), armonly (not aarch64) and pypyonly (CPython)
    // are not needed; PySocks is, via the extra.
    let c = s.check();
    c.refused("unmet_requirement", &["requests-2.32.0-py3-none-any.whl", "pysocks", "cp3.11 on manylinux_2_28_x86_64"]);
    assert_eq!(c.errors(), ["unmet_requirement"], "only PySocks: {}", c.0);
    build_refuses(&s, "unmet_requirement");
    s.add(Wheel::new("PySocks-1.7.1-py3-none-any.whl").file("socks.py"));
    let c = s.check();
    c.ok();
    assert!(c.warnings().is_empty(), "{}", c.0);
    // A version outside the specifier is unmet too.
    std::fs::remove_file(s.wheelhouse().join("PySocks-1.7.1-py3-none-any.whl")).unwrap();
    s.add(Wheel::new("PySocks-1.5.7-py3-none-any.whl").file("socks.py"));
    s.check().refused("unmet_requirement", &["1.5.7"]);
    // allow_unmet turns the error into a warning.
    s.append("allow_unmet: [requests]\n");
    let c = s.check();
    c.ok();
    assert_eq!(c.warnings(), ["unmet_requirement"], "{}", c.0);
    s.build().0.expect_ok();

    // Without targets markers cannot be evaluated: a conditional requirement is a warning, an
    // unconditional one an error.
    let s = Spec::new();
    s.add(Wheel::new("toolkit-1.0-py3-none-any.whl").requires("tomli>=1.1.0; python_version < \"3.11\""));
    let c = s.check();
    c.ok();
    assert_eq!(c.warnings(), ["unmet_requirement"], "{}", c.0);
    assert!(c.message("unmet_requirement").contains("not evaluated without `targets:`"));
    s.add(Wheel::new("other-1.0-py3-none-any.whl").requires("missingdep>=1"));
    s.check().refused("unmet_requirement", &["other-1.0-py3-none-any.whl", "missingdep"]);
}

fn sha256(p: &Path) -> String {
    bundle_core::hash::hash_file(p).unwrap().0
}

/// A requirements.txt as `uv export` writes it, for every wheel in the wheelhouse.
fn requirements_for(s: &Spec, extra_lines: &str) -> String {
    let mut text = String::from(
        "# This file was autogenerated by uv via the following command:\n#    uv export --format requirements-txt\n",
    );
    let mut names: Vec<_> = std::fs::read_dir(s.wheelhouse())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    names.sort();
    for p in names {
        let f = p.file_name().unwrap().to_string_lossy().into_owned();
        let mut it = f.split('-');
        let (name, version) = (it.next().unwrap(), it.next().unwrap());
        text.push_str(&format!(
            "{name}=={version} \\\n    --hash=sha256:{} \\\n    --hash=sha256:{}\n    # via fieldlog\n",
            "0".repeat(64),
            sha256(&p)
        ));
    }
    text + extra_lines
}

fn pylock_for(s: &Spec, extra: &str) -> String {
    let mut text = String::from("lock-version = \"1.0\"\ncreated-by = \"test\"\nrequires-python = \">=3.9\"\n");
    let mut names: Vec<_> = std::fs::read_dir(s.wheelhouse())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    names.sort();
    for p in names {
        let f = p.file_name().unwrap().to_string_lossy().into_owned();
        let mut it = f.split('-');
        let (name, version) = (it.next().unwrap(), it.next().unwrap());
        text.push_str(&format!(
            "\n[[packages]]\nname = \"{name}\"\nversion = \"{version}\"\nwheels = [{{ url = \"https://files.example/{f}\", upload-time = 2024-01-01T00:00:00Z, size = 1, hashes = {{ sha256 = \"{}\" }} }}]\n",
            sha256(&p)
        ));
    }
    text + extra
}

#[test]
fn requirements_txt_lock_is_checked() {
    let s = Spec::new();
    let lock = s.wheelhouse().join("requirements.txt");
    std::fs::write(&lock, requirements_for(&s, "")).unwrap();
    s.set_wheels("wheelhouse/requirements.txt");
    // requirements.txt in the wheelhouse is not a wheel: a warning, as before.
    let c = s.check();
    c.ok();
    let (r, bundle) = s.build();
    r.expect_ok();
    let sbom = run(Command::new(BIN).arg("inspect").arg("--sbom").arg("--json").arg(&bundle));
    sbom.expect_ok();
    let props = sbom.json()["sbom"]["metadata"]["properties"].clone();
    assert_eq!(props[0], serde_json::json!({"name": "bundle:lock:file", "value": "requirements.txt"}), "{props}");
    assert_eq!(props[1]["value"], sha256(&lock), "{props}");

    // Wrong hash: the wheel is not the locked one.
    std::fs::write(&lock, requirements_for(&s, "")).unwrap();
    s.add(Wheel::new("fieldkit-1.2.0-py3-none-any.whl").file("fieldkit/other.py"));
    s.check().refused("lock_hash_mismatch", &["fieldkit-1.2.0-py3-none-any.whl", "requirements.txt"]);
    build_refuses(&s, "lock_hash_mismatch");

    // Missing wheel: locked but not in the wheelhouse; one excluded by its marker on every target is fine.
    let s = Spec::new();
    let lock = s.wheelhouse().join("requirements.txt");
    s.set_wheels("wheelhouse/requirements.txt");
    let h = "a".repeat(64);
    std::fs::write(&lock, requirements_for(&s, &format!("pyyaml==6.0.3 --hash=sha256:{h}\n"))).unwrap();
    s.check().refused("lock_missing_wheel", &["pyyaml", "6.0.3"]);
    std::fs::write(
        &lock,
        requirements_for(&s, &format!("tomli==2.0.1 ; python_full_version < '3.11' --hash=sha256:{h}\n")),
    )
    .unwrap();
    s.check().refused("lock_missing_wheel", &["tomli"]);
    s.append("targets:\n- {python: \"3.11\", platform: manylinux_2_28_x86_64}\n");
    s.check().ok();

    // Extra wheel: in the wheelhouse but not locked.
    let s = Spec::new();
    let lock = s.wheelhouse().join("requirements.txt");
    s.set_wheels("wheelhouse/requirements.txt");
    std::fs::write(&lock, requirements_for(&s, "")).unwrap();
    s.add(Wheel::new("extra-1.0-py3-none-any.whl"));
    s.check().refused("lock_extra_wheel", &["extra-1.0-py3-none-any.whl"]);

    // An unhashed lock cannot be checked.
    std::fs::write(&lock, "fieldkit==1.2.0\nfieldlog==4.0.0\n").unwrap();
    s.check().refused("lock_unreadable", &["--hash"]);
}

#[test]
fn pylock_toml_lock_is_checked() {
    let s = Spec::new();
    std::fs::write(s.dir.join("pylock.toml"), pylock_for(&s, "")).unwrap();
    s.set_wheels("{dir: wheelhouse/, lock: pylock.toml}");
    s.check().ok();
    s.build().0.expect_ok();

    s.add(Wheel::new("fieldkit-1.2.0-py3-none-any.whl").file("fieldkit/other.py"));
    s.check().refused("lock_hash_mismatch", &["fieldkit-1.2.0-py3-none-any.whl", "pylock.toml"]);

    let s = Spec::new();
    s.set_wheels("{dir: wheelhouse/, lock: pylock.toml}");
    let h = "b".repeat(64);
    std::fs::write(s.dir.join("pylock.toml"), pylock_for(&s, &format!("\n[[packages]]\nname = \"pyyaml\"\nversion = \"6.0.3\"\nwheels = [{{ name = \"pyyaml-6.0.3-py3-none-any.whl\", hashes = {{ sha256 = \"{h}\" }} }}]\n"))).unwrap();
    s.check().refused("lock_missing_wheel", &["pyyaml", "6.0.3"]);

    let s = Spec::new();
    s.set_wheels("{dir: wheelhouse/, lock: pylock.toml}");
    std::fs::write(s.dir.join("pylock.toml"), pylock_for(&s, "")).unwrap();
    s.add(Wheel::new("extra-1.0-py3-none-any.whl"));
    s.check().refused("lock_extra_wheel", &["extra-1.0-py3-none-any.whl", "pylock.toml"]);

    std::fs::write(s.dir.join("pylock.toml"), "lock-version = [\n").unwrap();
    s.check().refused("lock_unreadable", &["pylock.toml"]);
}
