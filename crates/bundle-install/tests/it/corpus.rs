//! Fidelity against pip on real PyPI wheels: runs `scripts/corpus.py run` (bundle the pinned corpus
//! of `scripts/corpus-lock.txt`, apply it to a fresh site with the binaries of this build, install
//! the same wheels with pip into a reference venv, compare file sets, bytes, modes, RECORD,
//! INSTALLER, scripts, `importlib.metadata` and imports). Needs the wheel cache that
//! `scripts/corpus.sh fetch` fills (`.ci/run` does when the package index answers); without it,
//! or without CPython 3.11 on x86_64 Linux, the test prints why and passes.

use std::process::Command;
use std::time::Duration;

use test_support::{bin, run_timeout, workspace_root};

#[test]
fn corpus_installs_like_pip() {
    let root = workspace_root();
    let script = root.join("scripts/corpus.py");
    let have = Command::new("python3").arg(&script).arg("have").current_dir(root).output().expect("python3 runs");
    if !have.status.success() {
        println!("skipped: {}", String::from_utf8_lossy(&have.stdout).trim());
        return;
    }
    let bin_dir = bin("bundle-install").parent().unwrap().to_path_buf();
    assert!(
        bin_dir.join("bundle-build").is_file(),
        "bundle-build is not built in {} (run `cargo build`)",
        bin_dir.display()
    );
    let report = tempfile::NamedTempFile::new().unwrap();
    let r = run_timeout(
        Command::new("python3")
            .arg(&script)
            .args(["run", "--json"])
            .arg(report.path())
            .env("CORPUS_BIN_DIR", &bin_dir)
            .current_dir(root),
        Duration::from_secs(3600),
    );
    println!("{}", r.stdout);
    assert_eq!(r.code, Some(0), "corpus run failed:\n{}\n{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(0), "{}", report["problems"]);
    // The comparison ran on the whole corpus: at least 60 distributions, every one of them compared.
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.len() >= 60, "only {} distributions compared", rows.len());
    assert_eq!(rows.len() as u64, report["wheels"].as_u64().unwrap());
}
