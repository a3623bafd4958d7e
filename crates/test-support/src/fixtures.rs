//! Where things are: the workspace, its binaries, a per-process scratch directory and the fixture
//! spec directories built by `fixtures/build.py`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::run::{run, Run};

/// The workspace root (the directory holding the top `Cargo.toml`, `fixtures/`, `crates/`).
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = here.parent().and_then(Path::parent).expect("crates/test-support has two parents");
        root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
    })
}

/// `target/<profile>/` of the running test executable (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the test executable has a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The path of the workspace binary `name`, built by cargo into `target/<profile>/<name>`.
///
/// Panics with what to do when it is not there: cargo only builds a crate's binaries for that crate's
/// own tests (or for `cargo test --workspace`), so tests of another crate need `cargo build` first.
pub fn bin(name: &str) -> PathBuf {
    let env_name = format!("CARGO_BIN_EXE_{name}");
    if let Some(p) = std::env::var_os(&env_name).map(PathBuf::from).filter(|p| p.is_file()) {
        return p;
    }
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "binary `{name}` not found at {}: cargo builds a crate's binaries only for that crate's own tests; \
             run `cargo build` (same profile and CARGO_TARGET_DIR) or `cargo test --workspace` first",
            path.display()
        );
    }
    path
}

/// A scratch directory for this whole test process: under `target/tmp/` when that can be created
/// (cargo's `CARGO_TARGET_TMPDIR`), else under the system temp dir. Removed when the process exits
/// normally, unless `TEST_SUPPORT_KEEP=1`.
#[allow(unsafe_code)]
pub fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let candidates = [profile_dir().parent().map(|t| t.join("tmp")), Some(std::env::temp_dir())];
        let dir = candidates
            .into_iter()
            .flatten()
            .find_map(|base| {
                std::fs::create_dir_all(&base).ok()?;
                tempfile::Builder::new().prefix("test-support-").tempdir_in(&base).ok()
            })
            .expect("cannot create a scratch directory")
            .keep();
        if std::env::var_os("TEST_SUPPORT_KEEP").is_none() {
            CLEANUP.set(dir.clone()).ok();
            // SAFETY: registers a plain `extern "C" fn` with no captured state.
            unsafe {
                libc::atexit(remove_process_dir);
            }
        }
        dir
    })
}

static CLEANUP: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_process_dir() {
    if let Some(dir) = CLEANUP.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh empty directory inside [`process_dir`], kept until the process ends (for fixtures shared
/// by several tests; use `tempfile` for per-test directories).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(process_dir()).expect("scratch dir").keep();
    dir
}

/// The fixture spec directories, built once per process by `python3 fixtures/build.py DIR`:
/// `DIR/1.0.0/spec.yaml`, `2.0.0/`, `3.0.0/`, `4.0.0/`, each with wheelhouse, migrations, config, hooks.
pub fn fixture_specs() -> &'static Path {
    static SPECS: OnceLock<PathBuf> = OnceLock::new();
    SPECS.get_or_init(|| {
        let dir = process_dir().join("fixture-specs");
        let script = workspace_root().join("fixtures/build.py");
        let r = run(Command::new("python3").arg(&script).arg(&dir));
        assert_eq!(r.code, Some(0), "fixtures/build.py failed (python3 is required):\n{r}");
        for v in ["1.0.0", "2.0.0", "3.0.0", "4.0.0"] {
            assert!(dir.join(v).join("spec.yaml").is_file(), "fixtures/build.py wrote no {v}/spec.yaml:\n{r}");
        }
        dir
    })
}

/// Copies the fixture spec directory of `version` to `dest` (created) and returns `dest/spec.yaml`.
pub fn copy_spec(version: &str, dest: &Path) -> PathBuf {
    copy_dir(&fixture_specs().join(version), dest);
    dest.join("spec.yaml")
}

/// Copies a tree of directories and regular files (permissions kept).
pub fn copy_dir(src: &Path, dest: &Path) {
    for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", src.display()));
        let rel = entry.path().strip_prefix(src).expect("under src");
        let target = dest.join(rel);
        let t = entry.file_type();
        if t.is_dir() {
            std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("mkdir {}: {e}", target.display()));
        } else if t.is_file() {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copy to {}: {e}", target.display()));
        } else {
            panic!("copy_dir: {} is neither a file nor a directory", entry.path().display());
        }
    }
}

/// Writes a real pure-Python wheel `DIST-VERSION-py3-none-any.whl` into `dir` (made by the fixture
/// builder's `build_wheel`: `METADATA`, `WHEEL`, `RECORD`, one module `DIST/__init__.py` holding
/// `X = 1`) and returns its file name. With a long `dist`, a wheel whose name only a PAX header holds.
pub fn write_wheel(dir: &Path, dist: &str, version: &str) -> String {
    let script = r#"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("fixture_build", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
name, version, out = sys.argv[2], sys.argv[3], sys.argv[4]
data = m.build_wheel(name, version, {f"{name}/__init__.py": b"X = 1\n"}, ["Summary: a test wheel"], "")
open(out, "wb").write(data)
"#;
    let file = format!("{dist}-{version}-py3-none-any.whl");
    let r = run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(workspace_root().join("fixtures/build.py"))
        .arg(dist)
        .arg(version)
        .arg(dir.join(&file)));
    assert_eq!(r.code, Some(0), "writing the wheel {file} failed:\n{r}");
    file
}

/// Builds the fixture release `version` with `bundle-build build` (`SOURCE_DATE_EPOCH=1700000000`)
/// into `out_dir`, signed with `key` (a `.key` path), and returns the bundle's path.
pub fn build_fixture_bundle(version: &str, key: &Path, out_dir: &Path) -> PathBuf {
    let spec = fixture_specs().join(version).join("spec.yaml");
    let r: Run = run(Command::new(bin("bundle-build"))
        .args(["build", "--json", "--key"])
        .arg(key)
        .arg("--out")
        .arg(out_dir)
        .arg(&spec)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert_eq!(r.code, Some(0), "bundle-build build {version} failed:\n{r}");
    let path = r.json()["bundle"].as_str().map(PathBuf::from).unwrap_or_else(|| panic!("no `bundle` in:\n{r}"));
    assert!(path.is_file(), "{} was not written:\n{r}", path.display());
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_panics_with_advice() {
        let e = std::panic::catch_unwind(|| bin("no-such-binary")).expect_err("must panic");
        let msg = e.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.contains("no-such-binary") && msg.contains("cargo build"), "{msg}");
    }

    #[test]
    fn fixture_specs_are_built_once() {
        let a = fixture_specs();
        let b = fixture_specs();
        assert_eq!(a, b);
        assert!(a.join("4.0.0/wheelhouse").is_dir());
        assert!(a.starts_with(process_dir()));
    }
}
