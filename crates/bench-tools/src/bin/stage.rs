//! `stage --python PY --venv DIR [--compile] [--jobs N] [--store SITE] WHEEL...`
//!
//! With `--store SITE`, stages as `apply` does on a site: `store_wheels` (unpack what `SITE/store/`
//! lacks, check the rest), `create_venv`, `install_wheels` (hardlinks from the store) and, with
//! `--compile`, `compile_bytecode` of what has no `.pyc` yet. The wheels' sha256 (which `apply`
//! takes from the signed manifest) are computed before the clock starts.
//!
//! Stages a release's Python environment exactly as `bundle-install apply` does in its
//! `create_venv`, `install_wheels` and `compile_bytecode` steps (same functions, same options:
//! `InstallOptions::default()`, two compile workers), and prints one JSON object with the time of
//! each step in milliseconds. `probe_ms` (asking the interpreter for its layout) is reported apart:
//! `apply` does it before the journaled steps.

use std::path::PathBuf;

use bench_tools::{die, ms, timed};
use bundle_install::python::store;
use bundle_install::python::{self, InstallOptions, Interpreter};
use bundle_install::Site;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut py = PathBuf::from("python3");
    let mut venv_dir: Option<PathBuf> = None;
    let mut compile = false;
    let mut jobs = 2usize;
    let mut wheels = Vec::new();
    let mut store_site: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--python" => py = args.next().unwrap_or_else(|| die("--python needs a value")).into(),
            "--venv" => venv_dir = Some(args.next().unwrap_or_else(|| die("--venv needs a value")).into()),
            "--compile" => compile = true,
            "--store" => store_site = Some(args.next().unwrap_or_else(|| die("--store needs a value")).into()),
            "--jobs" => jobs = args.next().and_then(|j| j.parse().ok()).unwrap_or_else(|| die("--jobs needs a number")),
            _ => wheels.push(PathBuf::from(a)),
        }
    }
    let venv_dir = venv_dir.unwrap_or_else(|| die("usage: stage --python PY --venv DIR [--compile] WHEEL..."));
    let (interp, probe) = timed(|| Interpreter::probe(&py));
    let interp = interp.unwrap_or_else(|e| die(e));
    if let Some(site) = store_site {
        return stage_with_store(&interp, &site, &venv_dir, &wheels, compile, probe);
    }
    let (venv, create) = timed(|| python::create_venv(&interp, &venv_dir));
    let venv = venv.unwrap_or_else(|e| die(e));
    let (installed, install) = timed(|| python::install_wheels(&venv, &wheels, &InstallOptions::default()));
    let installed = installed.unwrap_or_else(|e| die(e));
    let files: usize = installed.iter().map(|d| d.files).sum();
    let bytes: u64 = installed.iter().map(|d| d.bytes).sum();
    let (compiled, compile_t) = if compile {
        let (r, t) = timed(|| python::compile_bytecode(&venv, &interp, jobs));
        (r.unwrap_or_else(|e| die(e)).compiled, Some(t))
    } else {
        (0, None)
    };
    let total = create + install + compile_t.unwrap_or_default();
    let out = serde_json::json!({
        "probe_ms": ms(probe),
        "create_venv_ms": ms(create),
        "install_wheels_ms": ms(install),
        "compile_bytecode_ms": compile_t.map(ms),
        "staging_ms": ms(total),
        "wheels": installed.len(),
        "files": files,
        "bytes": bytes,
        "compiled": compiled,
    });
    println!("{out}");
}

fn stage_with_store(
    interp: &Interpreter,
    site: &std::path::Path,
    venv_dir: &std::path::Path,
    wheels: &[PathBuf],
    compile: bool,
    probe: std::time::Duration,
) {
    std::fs::create_dir_all(site).unwrap_or_else(|e| die(format!("{}: {e}", site.display())));
    let site = Site::new(site);
    let refs: Vec<store::WheelRef> = wheels
        .iter()
        .map(|w| {
            let (sha256, size) = bundle_core::hash::hash_file(w).unwrap_or_else(|e| die(e));
            store::WheelRef { path: w.clone(), sha256, size }
        })
        .collect();
    let (ensured, store_t) = timed(|| store::ensure_entries(&site, &refs, interp, "bench"));
    let ensured = ensured.unwrap_or_else(|e| die(e.message));
    let (venv, create) = timed(|| python::create_venv(interp, venv_dir));
    let venv = venv.unwrap_or_else(|e| die(e));
    let (linked, link) = timed(|| store::link_into(&site, &venv, &refs));
    let files = linked.unwrap_or_else(|e| die(e.message));
    let (compiled, compile_t) = if compile {
        let (r, t) = timed(|| {
            python::compile_trees(
                &venv.python,
                std::slice::from_ref(&venv.site_packages),
                Some(&interp.cache_tag),
                false,
                2,
            )
        });
        (r.unwrap_or_else(|e| die(e)).compiled, Some(t))
    } else {
        (0, None)
    };
    let total = store_t + create + link + compile_t.unwrap_or_default();
    let out = serde_json::json!({
        "probe_ms": ms(probe),
        "store_wheels_ms": ms(store_t),
        "create_venv_ms": ms(create),
        "install_wheels_ms": ms(link),
        "compile_bytecode_ms": compile_t.map(ms),
        "staging_ms": ms(total),
        "wheels": refs.len(),
        "built": ensured.built.len() + ensured.repaired.len(),
        "reused": ensured.reused.len(),
        "files": files,
        "compiled": compiled,
    });
    println!("{out}");
}
