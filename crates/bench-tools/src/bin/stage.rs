//! `stage --python PY --venv DIR [--compile] [--jobs N] WHEEL...`
//!
//! Stages a release's Python environment exactly as `bundle-install apply` does in its
//! `create_venv`, `install_wheels` and `compile_bytecode` steps (same functions, same options:
//! `InstallOptions::default()`, two compile workers), and prints one JSON object with the time of
//! each step in milliseconds. `probe_ms` (asking the interpreter for its layout) is reported apart:
//! `apply` does it before the journaled steps.

use std::path::PathBuf;

use bench_tools::{die, ms, timed};
use bundle_install::python::{self, Interpreter};
use bundle_install::wheel::{self, InstallOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut py = PathBuf::from("python3");
    let mut venv_dir: Option<PathBuf> = None;
    let mut compile = false;
    let mut jobs = 2usize;
    let mut wheels = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--python" => py = args.next().unwrap_or_else(|| die("--python needs a value")).into(),
            "--venv" => venv_dir = Some(args.next().unwrap_or_else(|| die("--venv needs a value")).into()),
            "--compile" => compile = true,
            "--jobs" => jobs = args.next().and_then(|j| j.parse().ok()).unwrap_or_else(|| die("--jobs needs a number")),
            _ => wheels.push(PathBuf::from(a)),
        }
    }
    let venv_dir = venv_dir.unwrap_or_else(|| die("usage: stage --python PY --venv DIR [--compile] WHEEL..."));
    let (interp, probe) = timed(|| Interpreter::probe(&py));
    let interp = interp.unwrap_or_else(|e| die(e));
    let (venv, create) = timed(|| python::create_venv(&interp, &venv_dir));
    let venv = venv.unwrap_or_else(|e| die(e));
    let (installed, install) = timed(|| wheel::install_wheels(&venv, &wheels, &InstallOptions::default()));
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
