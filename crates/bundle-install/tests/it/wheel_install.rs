//! Native venv creation and wheel installation against the real `python3`: wheels are built here
//! (zip crate, or Python's zipfile where the zip crate refuses to write the bad thing), installed,
//! and the results are run. Refusals check the error kind and that the venv was left untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use base64::Engine as _;
use bundle_install::python::{check_wheel, install_wheel, install_wheels, read_metadata, InstallOptions, RecordCheck};
use bundle_install::python::{compile_bytecode, create_venv, Interpreter, Venv};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

struct Entry {
    name: String,
    data: Vec<u8>,
    mode: u32,
    symlink: bool,
}

fn file(name: &str, data: &str) -> Entry {
    Entry { name: name.into(), data: data.as_bytes().to_vec(), mode: 0o644, symlink: false }
}

fn record_hash(data: &[u8]) -> String {
    format!("sha256={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(data)))
}

/// RECORD text for `entries` as a correct build tool writes it.
fn record_for(dist_info: &str, entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries.iter().filter(|e| !e.name.ends_with('/')) {
        s += &format!("{},{},{}\n", e.name, record_hash(&e.data), e.data.len());
    }
    s + &format!("{dist_info}/RECORD,,\n")
}

fn write_zip(path: &Path, entries: &[Entry]) {
    let mut z = zip::ZipWriter::new(fs::File::create(path).unwrap());
    for e in entries {
        let opts =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).unix_permissions(e.mode);
        if e.symlink {
            z.add_symlink(e.name.as_str(), String::from_utf8(e.data.clone()).unwrap(), opts).unwrap();
        } else {
            z.start_file(e.name.as_str(), opts).unwrap();
            z.write_all(&e.data).unwrap();
        }
    }
    z.finish().unwrap();
    // The zip crate keeps only permission bits; put back setuid or file-type bits we asked for.
    for e in entries.iter().filter(|e| !e.symlink && e.mode & !0o777 != 0) {
        set_external_mode(path, &e.name, e.mode | if e.mode & 0o170000 == 0 { 0o100000 } else { 0 });
    }
}

/// Rewrites the unix mode in the central-directory record of `name`.
fn set_external_mode(path: &Path, name: &str, mode: u32) {
    let mut b = fs::read(path).unwrap();
    let mut found = false;
    for i in 0..b.len().saturating_sub(46) {
        if b[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] {
            let n = u16::from_le_bytes([b[i + 28], b[i + 29]]) as usize;
            if &b[i + 46..i + 46 + n] == name.as_bytes() {
                b[i + 38..i + 42].copy_from_slice(&(mode << 16).to_le_bytes());
                found = true;
            }
        }
    }
    assert!(found, "{name} not in the central directory");
    fs::write(path, b).unwrap();
}

/// Dist-info files for `name`/`version` (name as in METADATA) plus the given RECORD.
fn dist_info_files(name: &str, version: &str, wheel_version: &str, entry_points: Option<&str>) -> Vec<Entry> {
    let di = format!("{}-{version}.dist-info", name.replace('-', "_"));
    let mut v = vec![
        file(
            &format!("{di}/METADATA"),
            &format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\nLicense: MIT\nRequires-Dist: attrs>=20\nRequires-Dist: colorama; extra == \"color\"\nRequires-Python: >=3.8\n\nLong description.\n"),
        ),
        file(&format!("{di}/WHEEL"), &format!("Wheel-Version: {wheel_version}\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")),
    ];
    if let Some(ep) = entry_points {
        v.push(file(&format!("{di}/entry_points.txt"), ep));
    }
    v
}

/// Writes `<dir>/<dist>-<version>-py3-none-any.whl` with a correct RECORD.
fn build_wheel(dir: &Path, name: &str, version: &str, mut entries: Vec<Entry>) -> PathBuf {
    let dist = name.replace('-', "_");
    let di = format!("{dist}-{version}.dist-info");
    let record = record_for(&di, &entries);
    entries.push(file(&format!("{di}/RECORD"), &record));
    let path = dir.join(format!("{dist}-{version}-py3-none-any.whl"));
    write_zip(&path, &entries);
    path
}

const DEMO_EP: &str = "[console_scripts]\ndemo = demo_pkg:main\ndemo-app = demo_pkg.cli:App.run\n\n[gui_scripts]\ndemo-gui = demo_pkg:gui\n\n[demo.plugins]\nignored = whatever\n";

fn demo_entries() -> Vec<Entry> {
    let mut v = vec![
        file(
            "demo_pkg/__init__.py",
            "VALUE = 42\n\ndef main():\n    import sys\n    print('demo main', VALUE, sys.argv[1:])\n    return 3\n\ndef gui():\n    print('demo gui')\n",
        ),
        file("demo_pkg/cli.py", "class App:\n    @staticmethod\n    def run():\n        print('app run')\n"),
        Entry { name: "demo_pkg/run.sh".into(), data: b"#!/bin/sh\necho run\n".to_vec(), mode: 0o4755, symlink: false },
        file("demo_pkg-1.2.0.data/scripts/tool", "#!python\nimport sys\nprint('tool', sys.prefix)\n"),
        file("demo_pkg-1.2.0.data/data/share/demo/README.txt", "read me\n"),
        file("demo_pkg-1.2.0.data/headers/demo.h", "#define DEMO 1\n"),
        file("demo_pkg-1.2.0.data/purelib/demo_extra.py", "EXTRA = 'extra'\n"),
    ];
    v.extend(dist_info_files("demo-pkg", "1.2.0", "1.0", Some(DEMO_EP)));
    v
}

fn python() -> Interpreter {
    Interpreter::probe("python3").expect("python3 on PATH")
}

fn run(cmd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .env_remove("PYTHONPATH")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every path under the venv (symlinks not followed), for "nothing changed" checks.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn venv_is_usable_and_refuses_existing_root() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    assert_eq!(interp.version.0, 3);
    assert!(interp.cache_tag.starts_with("cpython-"), "{}", interp.cache_tag);
    assert!(interp.executable.is_absolute() && interp.base_executable.is_absolute());
    assert!(interp.satisfies(&bundle_install::python::parse_python_requirement(">=3.9").unwrap()));

    let venv = create_venv(&interp, &tmp.path().join("sub/venv")).unwrap();
    let (code, out, err) = run(&venv.python, &["-c", "import sys, site; print(sys.prefix); print(site.getsitepackages()[0]); print(sys.base_prefix != sys.prefix)"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(Path::new(lines[0]), venv.root);
    assert_eq!(fs::canonicalize(lines[1]).unwrap(), fs::canonicalize(&venv.site_packages).unwrap());
    assert_eq!(lines[2], "True");
    let xy = format!("python{}.{}", interp.version.0, interp.version.1);
    for alias in ["python3", xy.as_str()] {
        assert_eq!(fs::read_link(venv.bin.join(alias)).unwrap(), Path::new("python"));
    }
    assert_eq!(fs::read_link(venv.root.join("lib64")).unwrap(), Path::new("lib"));
    let cfg = fs::read_to_string(venv.root.join("pyvenv.cfg")).unwrap();
    assert!(cfg.contains("include-system-site-packages = false"), "{cfg}");
    assert!(cfg.contains(&format!("version = {}", interp.version_text)), "{cfg}");
    let reopened = Venv::open(&venv.root).unwrap();
    assert_eq!(reopened.site_packages, venv.site_packages);

    let again = create_venv(&interp, &venv.root).unwrap_err();
    assert_eq!(again.kind(), "venv_exists", "{again}");
    assert!(venv.python.exists(), "the existing venv must be left alone");
}

/// The venv has the activate scripts `python -m venv` writes, made by the interpreter's own `venv`
/// module: the same file names and modes, and the same bytes once each venv's path is replaced.
/// `source bin/activate` puts the venv's python first on PATH and `deactivate` restores PATH.
#[test]
fn activate_scripts_match_python_venv_and_work() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let ours = create_venv(&interp, &tmp.path().join("a/venv")).unwrap();
    let theirs = tmp.path().join("b/venv");
    let st = Command::new(&interp.executable).args(["-m", "venv", "--without-pip"]).arg(&theirs).status().unwrap();
    assert!(st.success());
    let ours_root = ours.root.to_string_lossy().into_owned();
    let theirs_root = fs::canonicalize(&theirs).unwrap().to_string_lossy().into_owned();
    for name in ["activate", "activate.csh", "activate.fish", "Activate.ps1"] {
        let a = fs::read_to_string(ours.bin.join(name)).unwrap_or_else(|e| panic!("bin/{name}: {e}"));
        let b = fs::read_to_string(theirs.join("bin").join(name)).unwrap();
        // Activate.ps1 finds its venv at run time; the others have the path written in.
        assert!(name == "Activate.ps1" || a.contains(&ours_root), "bin/{name} names its venv");
        assert_eq!(a.replace(&ours_root, "<VENV>"), b.replace(&theirs_root, "<VENV>"), "bin/{name}");
        assert_eq!(mode(&ours.bin.join(name)), mode(&theirs.join("bin").join(name)), "mode of bin/{name}");
    }

    let script = r#"
        before="$PATH"
        . "$VENV/bin/activate"
        echo "python=$(command -v python)"
        echo "first=${PATH%%:*}"
        echo "env=$VIRTUAL_ENV"
        python -c 'import sys; print("prefix=" + sys.prefix)'
        deactivate
        [ "$PATH" = "$before" ] && echo restored=yes || echo restored=no
        echo "after=${VIRTUAL_ENV:-unset}"
    "#;
    for shell in ["bash", "sh"] {
        if shell == "bash" && Command::new("bash").arg("-c").arg("true").status().is_err() {
            continue;
        }
        let out = Command::new(shell)
            .arg("-c")
            .arg(script)
            .env("VENV", &ours.root)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env_remove("VIRTUAL_ENV")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}: {text}{}", String::from_utf8_lossy(&out.stderr));
        let bin = ours.bin.to_string_lossy();
        assert!(text.contains(&format!("python={bin}/python\n")), "{shell}: {text}");
        assert!(text.contains(&format!("first={bin}\n")), "{shell}: {text}");
        assert!(text.contains(&format!("env={ours_root}\n")), "{shell}: {text}");
        assert!(text.contains(&format!("prefix={ours_root}\n")), "{shell}: {text}");
        assert!(text.contains("restored=yes\n"), "{shell}: {text}");
        assert!(text.contains("after=unset\n"), "{shell}: {text}");
    }
}

#[test]
fn missing_interpreter_is_a_clear_error() {
    let e = Interpreter::probe("python-does-not-exist-9.9").unwrap_err();
    assert_eq!(e.kind(), "python_not_found");
    assert_eq!(e.to_string(), "python interpreter `python-does-not-exist-9.9` not found; pass --python PATH");
}

#[test]
fn install_run_record_and_compile() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let wheel = build_wheel(tmp.path(), "demo-pkg", "1.2.0", demo_entries());

    let meta = read_metadata(&wheel).unwrap();
    assert_eq!((meta.name.as_str(), meta.version.as_str()), ("demo-pkg", "1.2.0"));
    assert_eq!(meta.requires_dist, vec!["attrs>=20", "colorama; extra == \"color\""]);
    assert_eq!(meta.license.as_deref(), Some("MIT"));
    assert_eq!(meta.requires_python.as_deref(), Some(">=3.8"));
    assert_eq!(meta.console_scripts.len(), 2);
    assert_eq!(meta.gui_scripts[0].name, "demo-gui");
    assert!(meta.root_is_purelib);
    assert!(check_wheel(&wheel, &InstallOptions::default()).unwrap().1.is_empty());

    let venv = create_venv(&interp, &tmp.path().join("venv")).unwrap();
    let opts = InstallOptions { requested: true, ..InstallOptions::default() };
    let dist = install_wheel(&venv, &wheel, &opts).unwrap();
    assert!(dist.warnings.is_empty(), "{:?}", dist.warnings);
    assert_eq!(dist.dist_info, venv.site_packages.join("demo_pkg-1.2.0.dist-info"));
    let mut scripts = dist.scripts.clone();
    scripts.sort();
    assert_eq!(scripts, vec!["demo", "demo-app", "demo-gui", "tool"]);

    // Entry points, the `#!python` script, the import.
    let (code, out, err) = run(&venv.bin.join("demo"), &["a", "b"]);
    assert_eq!((code, out.as_str()), (3, "demo main 42 ['a', 'b']\n"), "{err}");
    assert_eq!(run(&venv.bin.join("demo-app"), &[]).1, "app run\n");
    assert_eq!(run(&venv.bin.join("demo-gui"), &[]).1, "demo gui\n");
    let (code, out, err) = run(&venv.bin.join("tool"), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("tool {}\n", venv.root.display()));
    let tool = fs::read_to_string(venv.bin.join("tool")).unwrap();
    assert!(tool.starts_with(&format!("#!{}\n", venv.python.display())), "{tool}");
    let launcher = fs::read_to_string(venv.bin.join("demo")).unwrap();
    assert!(!launcher.contains("import re"), "{launcher}");
    let (code, out, err) =
        run(&venv.python, &["-c", "import demo_pkg, demo_extra; print(demo_pkg.__file__); print(demo_extra.EXTRA)"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}\nextra\n", venv.site_packages.join("demo_pkg/__init__.py").display()));

    // .data routing and modes.
    let header = venv.root.join(format!("include/site/{}/demo-pkg/demo.h", venv.python_xy()));
    assert_eq!(fs::read_to_string(&header).unwrap(), "#define DEMO 1\n");
    assert_eq!(fs::read_to_string(venv.root.join("share/demo/README.txt")).unwrap(), "read me\n");
    assert_eq!(mode(&venv.site_packages.join("demo_pkg/__init__.py")), 0o644);
    assert_eq!(mode(&venv.site_packages.join("demo_pkg/run.sh")), 0o755, "exec bit kept, setuid dropped");
    for s in ["demo", "demo-app", "demo-gui", "tool"] {
        assert_eq!(mode(&venv.bin.join(s)), 0o755, "{s}");
    }

    // RECORD lists exactly what was installed, with the installed hashes.
    let di = &dist.dist_info;
    assert_eq!(fs::read_to_string(di.join("INSTALLER")).unwrap(), "bundle-install\n");
    assert_eq!(fs::read(di.join("REQUESTED")).unwrap(), b"");
    let record = fs::read_to_string(di.join("RECORD")).unwrap();
    let mut listed = BTreeMap::new();
    for line in record.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 3, "{line}");
        listed.insert(f[0].to_string(), (f[1].to_string(), f[2].to_string()));
    }
    assert_eq!(listed["demo_pkg-1.2.0.dist-info/RECORD"], (String::new(), String::new()));
    for (path, (hash, size)) in &listed {
        if path.ends_with("/RECORD") {
            continue;
        }
        let data = fs::read(venv.site_packages.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(hash, &record_hash(&data), "{path}");
        assert_eq!(size, &data.len().to_string(), "{path}");
    }
    for want in [
        "../../../bin/tool",
        "../../../bin/demo",
        "../../../share/demo/README.txt",
        &format!("../../../include/site/{}/demo-pkg/demo.h", venv.python_xy()),
        "demo_extra.py",
        "demo_pkg-1.2.0.dist-info/INSTALLER",
        "demo_pkg-1.2.0.dist-info/REQUESTED",
    ] {
        assert!(listed.contains_key(want), "{want} missing from RECORD:\n{record}");
    }
    let mut installed_files: BTreeSet<String> = BTreeSet::new();
    // The venv's own files (pyvenv.cfg, the activate scripts) belong to no distribution.
    let venv_own = ["pyvenv.cfg", "activate", "activate.csh", "activate.fish", "Activate.ps1"];
    for e in walkdir::WalkDir::new(&venv.root).into_iter().map(Result::unwrap) {
        if e.file_type().is_file() && !venv_own.iter().any(|n| e.file_name() == *n) {
            let rel = e.path().strip_prefix(&venv.root).unwrap();
            let site_rel = venv.site_packages.strip_prefix(&venv.root).unwrap();
            installed_files.insert(match rel.strip_prefix(site_rel) {
                Ok(inside) => inside.display().to_string(),
                Err(_) => format!("../../../{}", rel.display()),
            });
        }
    }
    assert_eq!(installed_files, listed.keys().cloned().collect(), "RECORD must list every installed file");
    assert_eq!(dist.files, listed.len());

    // Bytecode by the target interpreter; imports still work afterwards.
    let report = compile_bytecode(&venv, &interp, 2).unwrap();
    assert_eq!(report.files, 3, "{report:?}");
    assert_eq!(report.compiled, 3);
    for (dir, stem) in [("demo_pkg", "__init__"), ("demo_pkg", "cli"), ("", "demo_extra")] {
        let pyc = venv.site_packages.join(dir).join("__pycache__").join(format!("{stem}.{}.pyc", interp.cache_tag));
        assert!(pyc.is_file(), "{} missing", pyc.display());
    }
    let (code, out, err) = run(&venv.python, &["-c", "import demo_pkg.cli; print(demo_pkg.cli.__cached__)"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&interp.cache_tag), "{out}");
    assert_eq!(run(&venv.bin.join("demo-app"), &[]).1, "app run\n");

    // A file that does not compile is reported by name.
    fs::write(venv.site_packages.join("broken_mod.py"), "def f(:\n").unwrap();
    let e = compile_bytecode(&venv, &interp, 0).unwrap_err();
    assert_eq!(e.kind(), "bytecode_compile_failed");
    assert!(e.to_string().contains("broken_mod.py") && e.to_string().contains("SyntaxError"), "{e}");
}

#[test]
fn spaces_in_venv_path_use_the_sh_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let wheel = build_wheel(tmp.path(), "demo-pkg", "1.2.0", demo_entries());
    let venv = create_venv(&interp, &tmp.path().join("my site").join("the venv")).unwrap();
    install_wheel(&venv, &wheel, &InstallOptions::default()).unwrap();
    let launcher = fs::read_to_string(venv.bin.join("demo")).unwrap();
    assert!(launcher.starts_with("#!/bin/sh\n'''exec' '"), "{launcher}");
    let (code, out, err) = run(&venv.bin.join("demo"), &["x y"]);
    assert_eq!((code, out.as_str()), (3, "demo main 42 ['x y']\n"), "{err}");
    let (code, out, err) = run(&venv.bin.join("tool"), &[]);
    assert_eq!((code, out), (0, format!("tool {}\n", venv.root.display())), "{err}");
}

/// Installs `wheel` into a fresh venv expecting refusal; the venv must be unchanged afterwards.
fn refused(wheel: &Path, opts: &InstallOptions) -> bundle_install::python::WheelError {
    let tmp = tempfile::tempdir().unwrap();
    let venv = create_venv(&python(), &tmp.path().join("venv")).unwrap();
    let before = tree(&venv.root);
    let e = install_wheel(&venv, wheel, opts).unwrap_err();
    assert_eq!(tree(&venv.root), before, "refused install of {} changed the venv ({e})", wheel.display());
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.to_string().contains(&name), "error must name the wheel: {e}");
    e
}

#[test]
fn unsafe_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("evil");
    let cases: Vec<(&str, Entry, &str)> = vec![
        ("traversal", file("../evil", "x"), "unsafe_path"),
        ("nested-traversal", file("demo_pkg/../../evil", "x"), "unsafe_path"),
        ("absolute", file(&outside.display().to_string(), "x"), "unsafe_path"),
        ("backslash", file("demo_pkg\\evil.py", "x"), "unsafe_path"),
        (
            "symlink",
            Entry { name: "demo_pkg/link".into(), data: b"/etc/passwd".to_vec(), mode: 0o777, symlink: true },
            "link_entry",
        ),
        ("fifo", Entry { name: "demo_pkg/fifo".into(), data: vec![], mode: 0o010644, symlink: false }, "special_entry"),
    ];
    for (what, bad, kind) in cases {
        let dir = tmp.path().join(what);
        fs::create_dir(&dir).unwrap();
        let mut entries = demo_entries();
        entries.push(bad);
        let wheel = build_wheel(&dir, "demo-pkg", "1.2.0", entries);
        let e = refused(&wheel, &InstallOptions::default());
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert!(read_metadata(&wheel).is_err(), "{what}: read_metadata must refuse too");
    }
    assert!(!outside.exists() && !tmp.path().join("evil").exists());
}

#[test]
fn duplicate_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let good = build_wheel(tmp.path(), "demo-pkg", "1.2.0", demo_entries());
    // The zip crate will not write duplicates; Python's zipfile will (with a warning).
    let dup = tmp.path().join("dup").join("demo_pkg-1.2.0-py3-none-any.whl");
    fs::create_dir(dup.parent().unwrap()).unwrap();
    let script = "import sys, zipfile, warnings\nwarnings.simplefilter('ignore')\nsrc, dst = sys.argv[1:]\nwith zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, 'w') as b:\n    for i in a.infolist():\n        b.writestr(i, a.read(i))\n    b.writestr('demo_pkg/__init__.py', 'import os\\n')\n";
    let st = Command::new("python3").args(["-c", script]).arg(&good).arg(&dup).status().unwrap();
    assert!(st.success());
    let e = refused(&dup, &InstallOptions::default());
    assert_eq!(e.kind(), "duplicate_entry", "{e}");
    assert!(e.to_string().contains("demo_pkg/__init__.py"), "{e}");
}

#[test]
fn record_mismatches_strict_and_warn() {
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = demo_entries();
    let record = record_for("demo_pkg-1.2.0.dist-info", &entries);
    // Same size, other bytes: only the hash can tell.
    entries[1].data = b"class App:\n    @staticmethod\n    def run():\n        print('APP RUN')\n".to_vec();
    entries.push(file("demo_pkg-1.2.0.dist-info/RECORD", &record));
    let wheel = tmp.path().join("demo_pkg-1.2.0-py3-none-any.whl");
    write_zip(&wheel, &entries);

    let e = refused(&wheel, &InstallOptions::default());
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert!(e.to_string().contains("demo_pkg/cli.py") && e.to_string().contains("hash mismatch"), "{e}");
    assert_eq!(check_wheel(&wheel, &InstallOptions::default()).unwrap_err().kind(), "record_mismatch");

    let venv = create_venv(&python(), &tmp.path().join("venv")).unwrap();
    let warn = InstallOptions { record_check: RecordCheck::Warn, ..InstallOptions::default() };
    let dist = install_wheel(&venv, &wheel, &warn).unwrap();
    assert_eq!(dist.warnings.len(), 1, "{:?}", dist.warnings);
    assert!(dist.warnings[0].starts_with("demo_pkg/cli.py: hash mismatch"), "{:?}", dist.warnings);
    // The new RECORD describes what is on disk, not what the wheel claimed.
    let rec = fs::read_to_string(dist.dist_info.join("RECORD")).unwrap();
    let cli = fs::read(venv.site_packages.join("demo_pkg/cli.py")).unwrap();
    assert!(rec.contains(&format!("demo_pkg/cli.py,{},", record_hash(&cli))), "{rec}");

    // A file missing from RECORD, and RECORD naming a file that is not there.
    let mut entries = demo_entries();
    let record = record_for("demo_pkg-1.2.0.dist-info", &entries);
    entries.push(file("demo_pkg/unlisted.py", ""));
    entries.push(file("demo_pkg-1.2.0.dist-info/RECORD", &record));
    let unlisted = tmp.path().join("unlisted").join("demo_pkg-1.2.0-py3-none-any.whl");
    fs::create_dir(unlisted.parent().unwrap()).unwrap();
    write_zip(&unlisted, &entries);
    let e = refused(&unlisted, &InstallOptions::default());
    assert_eq!(e.kind(), "record_mismatch");
    assert!(e.to_string().contains("demo_pkg/unlisted.py") && e.to_string().contains("not listed"), "{e}");

    let mut entries = demo_entries();
    let record = record_for("demo_pkg-1.2.0.dist-info", &entries) + "demo_pkg/ghost.py,sha256=AAAA,1\n";
    entries.push(file("demo_pkg-1.2.0.dist-info/RECORD", &record));
    let ghost = tmp.path().join("ghost").join("demo_pkg-1.2.0-py3-none-any.whl");
    fs::create_dir(ghost.parent().unwrap()).unwrap();
    write_zip(&ghost, &entries);
    let e = refused(&ghost, &InstallOptions::default());
    assert!(e.to_string().contains("ghost.py"), "{e}");
}

#[test]
fn metadata_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let case = |what: &str, entries: Vec<Entry>| {
        let dir = tmp.path().join(what);
        fs::create_dir(&dir).unwrap();
        build_wheel(&dir, "demo-pkg", "1.2.0", entries)
    };
    // Wheel-Version 2.0.
    let mut v2 = demo_entries();
    v2.retain(|e| !e.name.ends_with("/WHEEL"));
    v2.push(file("demo_pkg-1.2.0.dist-info/WHEEL", "Wheel-Version: 2.0\nRoot-Is-Purelib: true\n"));
    let e = refused(&case("v2", v2), &InstallOptions::default());
    assert_eq!(e.kind(), "unsupported_wheel_version", "{e}");
    // 1.9 is accepted with a warning.
    let mut v19 = demo_entries();
    v19.retain(|e| !e.name.ends_with("/WHEEL"));
    v19.push(file("demo_pkg-1.2.0.dist-info/WHEEL", "Wheel-Version: 1.9\nRoot-Is-Purelib: true\n"));
    let venv = create_venv(&python(), &tmp.path().join("venv")).unwrap();
    let d = install_wheel(&venv, &case("v19", v19), &InstallOptions::default()).unwrap();
    assert!(d.warnings.iter().any(|w| w.contains("Wheel-Version 1.9")), "{:?}", d.warnings);

    // METADATA naming another project.
    let mut other = demo_entries();
    other.retain(|e| !e.name.ends_with("/METADATA"));
    other.push(file("demo_pkg-1.2.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: other\nVersion: 1.2.0\n"));
    assert_eq!(refused(&case("name", other), &InstallOptions::default()).kind(), "name_mismatch");

    // Entry point names that are paths.
    let mut ep = demo_entries();
    ep.retain(|e| !e.name.ends_with("/entry_points.txt"));
    ep.push(file("demo_pkg-1.2.0.dist-info/entry_points.txt", "[console_scripts]\n../../evil = demo_pkg:main\n"));
    assert_eq!(refused(&case("ep", ep), &InstallOptions::default()).kind(), "invalid_entry_point");

    // Zip bombs: total cap, and compression ratio.
    let capped = InstallOptions { max_total_size: 100, ..InstallOptions::default() };
    assert_eq!(refused(&case("cap", demo_entries()), &capped).kind(), "zip_bomb");
    let mut zeros = demo_entries();
    zeros.push(Entry { name: "demo_pkg/zeros.bin".into(), data: vec![0; 8 << 20], mode: 0o644, symlink: false });
    assert_eq!(refused(&case("ratio", zeros), &InstallOptions::default()).kind(), "zip_bomb");
    // Issue 13 item 7: the ratio cap applies to every member above a small floor, not only to
    // members of 4 MiB or more.
    let mut under_old_floor = demo_entries();
    under_old_floor.push(Entry {
        name: "demo_pkg/zeros.bin".into(),
        data: vec![0; (4 << 20) - 1],
        mode: 0o644,
        symlink: false,
    });
    let e = refused(&case("ratio4m", under_old_floor), &InstallOptions::default());
    assert_eq!(e.kind(), "zip_bomb", "{e}");
    assert!(e.to_string().contains("demo_pkg/zeros.bin"), "{e}");
    let mut small = demo_entries();
    small.push(Entry { name: "demo_pkg/zeros.bin".into(), data: vec![0; 32 << 10], mode: 0o644, symlink: false });
    let tmp = tempfile::tempdir().unwrap();
    let venv = create_venv(&python(), &tmp.path().join("venv")).unwrap();
    install_wheel(&venv, &case("small-zeros", small), &InstallOptions::default())
        .expect("a small well-compressed file is fine");
}

/// Issue 13 item 7: one decompression budget for the whole release. Two wheels each under the
/// per-wheel cap but together over the release's are refused before anything is written, naming
/// the wheel that declares the most.
#[test]
fn release_budget_is_one_for_all_wheels() {
    let tmp = tempfile::tempdir().unwrap();
    let big = |name: &str, n: usize| {
        let dist = name.replace('-', "_");
        let mut entries = vec![Entry {
            name: format!("{dist}/data.txt"),
            data: (0..n).map(|i| (i * 7 % 251) as u8).collect(),
            mode: 0o644,
            symlink: false,
        }];
        entries.extend(dist_info_files(name, "1.0", "1.0", None));
        build_wheel(tmp.path(), name, "1.0", entries)
    };
    let (a, b) = (big("alpha", 30_000), big("bravo", 50_000));
    let opts = InstallOptions { max_total_size: 60_000, max_release_size: 70_000, ..InstallOptions::default() };
    let venv = create_venv(&python(), &tmp.path().join("venv")).unwrap();
    let before = tree(&venv.root);
    let e = install_wheels(&venv, &[a.clone(), b.clone()], &opts).unwrap_err();
    assert_eq!(e.kind(), "zip_bomb", "{e}");
    assert!(e.to_string().contains("bravo-1.0-py3-none-any.whl") && e.to_string().contains("whole release"), "{e}");
    assert_eq!(tree(&venv.root), before, "nothing is written before the budget is checked");
    // Each alone fits.
    install_wheels(&venv, &[a], &opts).unwrap();
    install_wheels(&venv, &[b], &opts).unwrap();
}

fn other_wheel(dir: &Path, clash: &str) -> PathBuf {
    let mut entries = vec![file("other_pkg/__init__.py", "OTHER = 1\n"), file(clash, "# other's copy\n")];
    entries.extend(dist_info_files("other", "0.1", "1.0", None));
    build_wheel(dir, "other", "0.1", entries)
}

#[test]
fn distributions_never_overwrite_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let demo = build_wheel(tmp.path(), "demo-pkg", "1.2.0", demo_entries());
    let other = other_wheel(tmp.path(), "demo_pkg/cli.py");

    // One after the other: the second is refused, names both, and leaves nothing behind.
    let venv = create_venv(&interp, &tmp.path().join("venv")).unwrap();
    install_wheel(&venv, &demo, &InstallOptions::default()).unwrap();
    let before = tree(&venv.root);
    let e = install_wheel(&venv, &other, &InstallOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "file_conflict");
    let msg = e.to_string();
    assert!(
        msg.contains("other-0.1-py3-none-any.whl")
            && msg.contains("demo_pkg/cli.py")
            && msg.contains("demo_pkg-1.2.0.dist-info"),
        "{msg}"
    );
    assert_eq!(tree(&venv.root), before);
    assert_eq!(run(&venv.bin.join("demo-app"), &[]).1, "app run\n");

    // In one batch, in either order: the same error, and nothing installed.
    let mut messages = Vec::new();
    for (i, order) in [[&demo, &other], [&other, &demo]].into_iter().enumerate() {
        let venv = create_venv(&interp, &tmp.path().join(format!("batch{i}"))).unwrap();
        let before = tree(&venv.root);
        let e = install_wheels(&venv, &[order[0].clone(), order[1].clone()], &InstallOptions::default()).unwrap_err();
        assert_eq!(e.kind(), "file_conflict");
        assert_eq!(tree(&venv.root), before);
        messages.push(e.to_string());
    }
    assert_eq!(messages[0], messages[1]);
    assert_eq!(
        messages[0],
        "wheels `demo_pkg-1.2.0-py3-none-any.whl` and `other-0.1-py3-none-any.whl` both install `demo_pkg/cli.py`"
    );

    // A file where the other needs a directory, and two launchers of one name.
    let dir2 = tmp.path().join("d2");
    fs::create_dir(&dir2).unwrap();
    let file_vs_dir = other_wheel(&dir2, "demo_pkg");
    let venv = create_venv(&interp, &tmp.path().join("batch-dir")).unwrap();
    let e = install_wheels(&venv, &[demo.clone(), file_vs_dir], &InstallOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "file_conflict", "{e}");

    // The same project twice in a batch, or over an installed version.
    let dir4 = tmp.path().join("d4");
    fs::create_dir(&dir4).unwrap();
    let mut v2 = vec![file("demo_pkg2/__init__.py", "")];
    v2.extend(dist_info_files("Demo.Pkg", "2.0", "1.0", None));
    let demo2 = build_wheel(&dir4, "Demo.Pkg", "2.0", v2);
    let venv = create_venv(&interp, &tmp.path().join("batch-twice")).unwrap();
    let e = install_wheels(&venv, &[demo2.clone(), demo.clone()], &InstallOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "duplicate_project", "{e}");
    assert!(e.to_string().contains("`demo-pkg`"), "{e}");
    install_wheel(&venv, &demo, &InstallOptions::default()).unwrap();
    let e = install_wheel(&venv, &demo2, &InstallOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "already_installed", "{e}");

    // A batch that fails late (bad hash in the second wheel) is rolled back as a whole.
    let dir3 = tmp.path().join("d3");
    fs::create_dir(&dir3).unwrap();
    let mut entries = vec![file("third/__init__.py", "X = 1\n")];
    entries.extend(dist_info_files("third", "1.0", "1.0", None));
    let record = record_for("third-1.0.dist-info", &entries);
    entries[0].data = b"X = 2\n".to_vec();
    entries.push(file("third-1.0.dist-info/RECORD", &record));
    let bad = dir3.join("third-1.0-py3-none-any.whl");
    write_zip(&bad, &entries);
    let venv = create_venv(&interp, &tmp.path().join("batch-late")).unwrap();
    let before = tree(&venv.root);
    let e = install_wheels(&venv, &[demo.clone(), bad], &InstallOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "record_mismatch", "{e}");
    assert_eq!(tree(&venv.root), before);
}

/// Wheels shipped inside CPython (`ensurepip/_bundled`): real-world RECORDs and entry points.
fn bundled_wheels(interp: &Interpreter) -> Vec<PathBuf> {
    let out = Command::new(&interp.executable)
        .args([
            "-I",
            "-c",
            "import ensurepip, os; print(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled'))",
        ])
        .output()
        .unwrap();
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "whl")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Synthetic wheels: `n` distributions with `modules` modules each.
fn synthetic_wheels(dir: &Path, n: usize, modules: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let name = format!("synth{i}");
            let mut entries: Vec<Entry> = (0..modules)
                .map(|m| file(&format!("{name}/mod{m}.py"), &format!("def f{m}(x):\n    return [x * {m} for _ in range(3)]\n\nclass C{m}:\n    '''doc {m}'''\n    value = {m}\n")))
                .collect();
            entries.push(file(&format!("{name}/__init__.py"), "def main():\n    print('synth')\n"));
            entries.extend(dist_info_files(&name, "1.0", "1.0", Some(&format!("[console_scripts]\n{name} = {name}:main\n"))));
            build_wheel(dir, &name, "1.0", entries)
        })
        .collect()
}

#[test]
fn real_wheels_and_timing_log() {
    let tmp = tempfile::tempdir().unwrap();
    let interp = python();
    let synth_dir = tmp.path().join("synth");
    fs::create_dir(&synth_dir).unwrap();
    let mut wheels = bundled_wheels(&interp);
    let real = wheels.len();
    wheels.extend(synthetic_wheels(&synth_dir, 4, 50));
    let bytes: u64 = wheels.iter().map(|w| fs::metadata(w).unwrap().len()).sum();

    let t = Instant::now();
    let venv = create_venv(&interp, &tmp.path().join("ours")).unwrap();
    let t_venv = t.elapsed();
    let t = Instant::now();
    let dists = install_wheels(&venv, &wheels, &InstallOptions::default()).unwrap();
    let t_install = t.elapsed();
    let t = Instant::now();
    let report = compile_bytecode(&venv, &interp, 0).unwrap();
    let t_compile = t.elapsed();
    assert_eq!(dists.len(), wheels.len());
    for (d, w) in dists.iter().zip(&wheels) {
        assert_eq!(&d.wheel, w, "results come in input order");
        assert!(d.dist_info.join("RECORD").is_file());
    }
    let files: usize = dists.iter().map(|d| d.files).sum();
    for d in &dists {
        assert!(d.warnings.is_empty(), "{}: {:?}", d.name, d.warnings);
    }

    let t = Instant::now();
    let st = Command::new(&interp.executable)
        .args(["-m", "venv", "--without-pip"])
        .arg(tmp.path().join("stdlib-venv"))
        .status()
        .unwrap();
    let t_stdlib = t.elapsed();
    assert!(st.success());

    eprintln!(
        "wheel timing: {} wheels ({real} from ensurepip), {:.1} MB, {files} files, {} .py; \
         native venv {:.1} ms, install_wheels {:.1} ms, compile_bytecode {:.1} ms ({} workers); \
         `python3 -m venv --without-pip` {:.1} ms",
        wheels.len(),
        bytes as f64 / 1e6,
        report.files,
        t_venv.as_secs_f64() * 1e3,
        t_install.as_secs_f64() * 1e3,
        t_compile.as_secs_f64() * 1e3,
        report.workers,
        t_stdlib.as_secs_f64() * 1e3,
    );

    let (code, out, err) = run(&venv.bin.join("synth0"), &[]);
    assert_eq!((code, out.as_str()), (0, "synth\n"), "{err}");
    if real > 0 {
        // pip's own launcher from its real entry_points.txt, run against our venv.
        let (code, out, err) = run(&venv.bin.join("pip"), &["--version"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("pip ") && out.contains(&venv.site_packages.display().to_string()), "{out}");
        let (code, _, err) = run(&venv.python, &["-c", "import setuptools, pip._internal.cli.main"]);
        assert_eq!(code, 0, "{err}");
    }
}
