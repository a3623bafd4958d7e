//! `compile_bytecode` against the real `python3`, and against fake interpreters (shell scripts in
//! the venv's place) that die or misbehave mid-run: those must give an error, never a hang and
//! never a silently skipped file. Each call runs under a timeout so a deadlock fails the test.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use bundle_install::python::{
    compile_bytecode, compile_bytecode_within, create_venv, CompileReport, Interpreter, PythonError, Venv,
};

fn python() -> Interpreter {
    Interpreter::probe("python3").expect("python3 on PATH")
}

/// Runs `compile_bytecode` on another thread and fails the test if it takes over a minute.
fn compile_with_timeout(venv: &Venv, interp: &Interpreter, jobs: usize) -> Result<CompileReport, PythonError> {
    let (venv, interp) = (venv.clone(), interp.clone());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(compile_bytecode(&venv, &interp, jobs));
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("compile_bytecode did not return within 60 s")
}

/// A venv whose site-packages holds `n` small modules spread over a few packages, plus one large
/// one; returns the venv and the module paths.
fn venv_with_modules(tmp: &Path, interp: &Interpreter, n: usize) -> (Venv, Vec<PathBuf>) {
    let venv = create_venv(interp, &tmp.join("venv")).unwrap();
    let mut files = Vec::new();
    for i in 0..n {
        let dir = venv.site_packages.join(format!("pkg{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!("mod_{i}.py"));
        fs::write(&f, format!("X = {i}\n\ndef f(a):\n    return a + X\n")).unwrap();
        files.push(f);
    }
    let big = venv.site_packages.join("big.py");
    fs::write(&big, (0..3000).map(|i| format!("def g{i}(x):\n    return x * {i}\n")).collect::<String>()).unwrap();
    files.push(big);
    (venv, files)
}

fn pyc_of(py: &Path, interp: &Interpreter) -> PathBuf {
    let stem = py.file_stem().unwrap().as_bytes();
    let mut name = stem.to_vec();
    name.extend_from_slice(format!(".{}.pyc", interp.cache_tag).as_bytes());
    py.parent().unwrap().join("__pycache__").join(OsStr::from_bytes(&name))
}

/// A fake interpreter at `dir/python`: `body` is the shell script's body.
fn fake_python(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("python");
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn syntax_errors_among_many_good_files_are_listed_and_the_rest_compiled() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let (venv, mut good) = venv_with_modules(tmp.path(), &interp, 300);
    // Odd bytes in a name go through the pipe raw.
    let odd = venv.site_packages.join(OsStr::from_bytes(b"odd \xff name.py"));
    fs::write(&odd, "Y = 1\n").unwrap();
    good.push(odd);
    let bad = [venv.site_packages.join("pkg3").join("broken_a.py"), venv.site_packages.join("zz_broken.py")];
    fs::write(&bad[0], "def f(:\n").unwrap();
    fs::write(&bad[1], "x = (\n").unwrap();
    let newline = venv.site_packages.join("new\nline.py");
    fs::write(&newline, "Z = 1\n").unwrap();

    let e = compile_with_timeout(&venv, &interp, 3).unwrap_err();
    assert_eq!(e.kind(), "bytecode_compile_failed", "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("byte-compiling failed for 3 file(s)") && msg.ends_with("(and 2 more)"), "{msg}");
    // The first failure (in path order) is the file with a newline in its name: escaped, one line.
    assert!(!msg.contains('\n') && msg.contains("new\\nline.py"), "{msg}");
    let PythonError::Compile { failures } = e else { unreachable!() };
    let mut want: Vec<PathBuf> = bad.to_vec();
    want.push(newline.clone());
    want.sort();
    assert_eq!(failures.iter().map(|f| f.file.clone()).collect::<Vec<_>>(), want, "sorted, every failure");
    for f in &failures {
        assert!(!f.error.contains('\n'), "{f:?}");
        if f.file == newline {
            assert_eq!(f.error, "file name contains a newline");
        } else {
            assert!(f.error.starts_with("SyntaxError"), "{f:?}");
        }
    }
    for g in &good {
        assert!(pyc_of(g, &interp).is_file(), "{} has no .pyc", g.display());
    }
    for b in &bad {
        assert!(!pyc_of(b, &interp).exists(), "{}", b.display());
    }

    // Without the bad files the same venv compiles cleanly, every file counted once.
    for b in bad.iter().chain([&newline]) {
        fs::remove_file(b).unwrap();
    }
    let report = compile_with_timeout(&venv, &interp, 2).unwrap();
    assert_eq!((report.files, report.compiled, report.workers), (good.len(), good.len(), 2), "{report:?}");
}

#[test]
fn a_worker_dying_mid_run_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let (venv, _) = venv_with_modules(tmp.path(), &interp, 40);
    let mut fake = venv.clone();
    fake.python = fake_python(tmp.path(), "read -r line\necho 'worker blew up' >&2\nexit 3");
    for jobs in [1, 3] {
        let e = compile_with_timeout(&fake, &interp, jobs).unwrap_err();
        assert_eq!(e.kind(), "bytecode_worker_failed", "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("exit status: 3") && msg.contains("unfinished") && msg.contains("worker blew up"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn a_worker_exiting_without_reading_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let (venv, _) = venv_with_modules(tmp.path(), &interp, 10);
    let mut fake = venv.clone();
    fake.python = fake_python(tmp.path(), "exec 0<&-\nexit 0");
    let e = compile_with_timeout(&fake, &interp, 2).unwrap_err();
    assert_eq!(e.kind(), "bytecode_worker_failed", "{e}");
    assert!(e.to_string().contains("unfinished"), "{e}");
}

#[test]
fn one_dead_worker_among_healthy_ones_fails_the_call() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let (venv, _) = venv_with_modules(tmp.path(), &interp, 200);
    // The first worker to start answers one file and dies; the others are the real interpreter.
    let flag = tmp.path().join("first");
    let mut fake = venv.clone();
    fake.python = fake_python(
        tmp.path(),
        &format!(
            "if mkdir '{}' 2>/dev/null; then read -r a; echo ok; read -r b; echo 'died here' >&2; exit 9; fi\nexec '{}' \"$@\"",
            flag.display(),
            venv.python.display()
        ),
    );
    let e = compile_with_timeout(&fake, &interp, 3).unwrap_err();
    assert_eq!(e.kind(), "bytecode_worker_failed", "{e}");
    assert!(e.to_string().contains("died here") && e.to_string().contains("unfinished"), "{e}");
}

#[test]
fn a_worker_printing_garbage_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let (venv, _) = venv_with_modules(tmp.path(), &interp, 5);
    let mut fake = venv.clone();
    fake.python = fake_python(tmp.path(), "read -r line\necho 'hello there'\ncat >/dev/null");
    let e = compile_with_timeout(&fake, &interp, 1).unwrap_err();
    assert_eq!(e.kind(), "bytecode_worker_failed", "{e}");
    assert!(e.to_string().contains("unexpected output `hello there`"), "{e}");
}

#[test]
fn a_dead_worker_whose_child_holds_the_pipes_is_still_noticed() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let (venv, _) = venv_with_modules(tmp.path(), &interp, 5);
    let mut fake = venv.clone();
    // The background `sleep` keeps stdout and stderr open after the worker itself exited.
    fake.python = fake_python(tmp.path(), "read -r line\nsleep 20 &\necho 'left a child' >&2\nexit 4");
    let t = std::time::Instant::now();
    let e = compile_with_timeout(&fake, &interp, 1).unwrap_err();
    assert_eq!(e.kind(), "bytecode_worker_failed", "{e}");
    let msg = e.to_string();
    assert!(msg.contains("exit status: 4") && msg.contains("unfinished") && msg.contains("left a child"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
}

/// A worker that takes a file and never answers is killed at the answer limit, and the call fails
/// naming the file it was stuck on.
#[test]
fn a_worker_that_stops_answering_is_killed_at_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let (venv, _) = venv_with_modules(tmp.path(), &interp, 5);
    let mut fake = venv.clone();
    fake.python = fake_python(tmp.path(), "read -r line\necho 'thinking hard' >&2\nexec sleep 60");
    let t = std::time::Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(compile_bytecode_within(&fake, &interp, 1, Duration::from_secs(1)));
    });
    let e = rx.recv_timeout(Duration::from_secs(60)).expect("no return within 60 s").unwrap_err();
    assert_eq!(e.kind(), "bytecode_worker_failed", "{e}");
    let msg = e.to_string();
    assert!(msg.contains("no answer for 1 s") && msg.contains("big.py") && msg.contains("thinking hard"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
}
