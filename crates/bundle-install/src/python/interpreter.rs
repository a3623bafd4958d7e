//! The site interpreter and native venv creation.
//!
//! A release's environment is built without pip or `python -m venv`: we ask the site's interpreter
//! once for what we need (version, cache tag, base executable, sysconfig paths), lay out the venv
//! ourselves exactly like CPython's `venv` module does, and later byte-compile the installed code
//! with the venv's own interpreter. Everything here is at the venv's *final* path, because venvs are
//! not relocatable (interpreter symlinks, absolute shebangs).

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bundle_core::tags::InterpreterTags;
use pep440_rs::{Version, VersionSpecifiers};
use serde::Deserialize;

/// Errors from probing the interpreter, creating a venv or compiling bytecode. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("python interpreter `{name}` not found; pass --python PATH")]
    NotFound { name: String },
    #[error("python interpreter `{}` could not be probed: {detail}", exe.display())]
    Probe { exe: PathBuf, detail: String },
    #[error("invalid python requirement `{spec}`: {detail}")]
    InvalidRequirement { spec: String, detail: String },
    #[error("python {version} at `{}` does not satisfy the requirement `{spec}`", exe.display())]
    Unsupported { exe: PathBuf, version: String, spec: String },
    #[error("cannot create venv at `{}`: it already exists", path.display())]
    VenvExists { path: PathBuf },
    #[error("`{}` is not a usable venv: {detail}", path.display())]
    InvalidVenv { path: PathBuf, detail: String },
    #[error("{action} `{}`: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("byte-compiling failed for {} file(s), first `{}`: {}{}",
        failures.len(), one_line_path(&failures[0].file), failures[0].error,
        if failures.len() > 1 { format!(" (and {} more)", failures.len() - 1) } else { String::new() })]
    Compile { failures: Vec<CompileFailure> },
    #[error("byte-compile worker `{}` failed: {detail}", exe.display())]
    CompileWorker { exe: PathBuf, detail: String },
    #[error("`{}` could not write the venv's activate scripts: {detail}", exe.display())]
    ActivateScripts { exe: PathBuf, detail: String },
}

impl PythonError {
    /// Stable snake_case identifier for JSON output and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            PythonError::NotFound { .. } => "python_not_found",
            PythonError::Probe { .. } => "python_probe_failed",
            PythonError::InvalidRequirement { .. } => "invalid_python_requirement",
            PythonError::Unsupported { .. } => "python_version_unsupported",
            PythonError::VenvExists { .. } => "venv_exists",
            PythonError::InvalidVenv { .. } => "invalid_venv",
            PythonError::Io { .. } => "io",
            PythonError::Compile { .. } => "bytecode_compile_failed",
            PythonError::CompileWorker { .. } => "bytecode_worker_failed",
            PythonError::ActivateScripts { .. } => "activate_scripts_failed",
        }
    }
}

/// A path for a one-line message: control characters (a newline in a file name) are escaped.
fn one_line_path(p: &Path) -> String {
    p.display()
        .to_string()
        .chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PythonError + 'a {
    move |source| PythonError::Io { action, path: path.to_path_buf(), source }
}

/// What we know about an interpreter after running it once.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The interpreter as given, made absolute (a bare name is looked up on `PATH`). May be a
    /// wrapper such as a pyenv shim; venvs link to [`Interpreter::base_executable`] instead.
    pub executable: PathBuf,
    /// `sys.executable` as the interpreter reported it.
    pub sys_executable: PathBuf,
    /// `sys._base_executable` (or `sys.executable`): the real interpreter a venv must point at,
    /// also when the probed interpreter itself lives in a venv.
    pub base_executable: PathBuf,
    pub version: (u32, u32, u32),
    /// `X.Y.Z`, as written to `pyvenv.cfg`.
    pub version_text: String,
    /// `sys.implementation.name`, e.g. `cpython`.
    pub implementation: String,
    /// `sys.implementation.cache_tag`, e.g. `cpython-311` (the `.pyc` infix).
    pub cache_tag: String,
    pub prefix: PathBuf,
    pub base_prefix: PathBuf,
    /// The interpreter's own `sysconfig.get_paths()`.
    pub paths: BTreeMap<String, PathBuf>,
    /// Venv-scheme paths relative to the venv root (`purelib`, `platlib`, `scripts`, `include`, ...).
    pub venv_paths: BTreeMap<String, PathBuf>,
    /// `sys.maxsize > 2**32`: CPython adds `lib64 -> lib` to 64-bit posix venvs (not on macOS).
    pub is_64bit: bool,
    /// `sys.platform`, e.g. `linux`.
    pub platform: String,
    /// What PEP 425 wheel tags it accepts: version, ABI, platform and C library as it reports them.
    pub tags: InterpreterTags,
}

#[derive(Deserialize)]
struct ProbeOutput {
    version: (u32, u32, u32),
    implementation: String,
    cache_tag: Option<String>,
    executable: String,
    base_executable: Option<String>,
    prefix: String,
    base_prefix: String,
    paths: BTreeMap<String, String>,
    venv_paths: BTreeMap<String, String>,
    is_64bit: bool,
    platform: String,
    tags: InterpreterTags,
}

/// Printed as one JSON object. `@BASE@` stands for the venv root so we learn the layout of a venv
/// of this interpreter (`lib` vs `lib64`, `pythonX.Y` vs `pypyX.Y`) without creating one. The
/// `venv` scheme exists since 3.11; before that `posix_prefix` is what `venv` uses.
const PROBE_SCRIPT: &str = r#"
import json, os, re, subprocess, sys, sysconfig
def libc():
    try:
        name, ver = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", ver).groups())
        return {"glibc": {"major": major, "minor": minor}}
    except (AttributeError, OSError, ValueError, TypeError):
        pass
    try:  # musl: its loader (the PT_INTERP of this executable) prints "Version 1.2.3"
        with open(sys.executable, "rb") as f:
            head = f.read(4096)
        m = re.search(rb"/lib/ld-musl-[^\x00]+", head)
        if m:
            err = subprocess.run([m.group().decode()], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL).stderr.decode()
            v = re.search(r"Version (\d+)\.(\d+)", err)
            if v:
                return {"musl": {"major": int(v.group(1)), "minor": int(v.group(2))}}
    except (OSError, ValueError):
        pass
    return None
def tags():
    ci, v = sys.implementation, sys.version_info
    debug = bool(sysconfig.get_config_var("Py_DEBUG"))
    nogil = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if ci.name == "cpython":
        abi = "cp%d%d%s%s" % (v[0], v[1], "d" if debug else "", "t" if nogil else "")
    else:
        parts = (sysconfig.get_config_var("EXT_SUFFIX") or "").split(".")
        abi = "_".join(parts[1].split("-")[:2]).replace(".", "_") if len(parts) >= 3 else None
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if sys.maxsize <= 2**32 and plat == "linux_x86_64":
        plat = "linux_i686"
    elif sys.maxsize <= 2**32 and plat == "linux_aarch64":
        plat = "linux_armv8l"
    return {"implementation_name": ci.name, "version": list(v[:3]), "abi": abi,
            "abi3": ci.name == "cpython" and not debug and not nogil, "platform": plat, "libc": libc()}
names = sysconfig.get_scheme_names()
scheme = "venv" if "venv" in names else ("posix_prefix" if os.name == "posix" else "nt")
base = {k: "@BASE@" for k in ("base", "platbase", "installed_base", "installed_platbase")}
ci = sys.implementation
print(json.dumps({
    "version": list(sys.version_info[:3]),
    "implementation": ci.name,
    "cache_tag": ci.cache_tag,
    "executable": sys.executable,
    "base_executable": getattr(sys, "_base_executable", None),
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "paths": sysconfig.get_paths(),
    "venv_paths": sysconfig.get_paths(scheme=scheme, vars=base),
    "is_64bit": sys.maxsize > 2**32,
    "platform": sys.platform,
    "tags": tags(),
}))
"#;

/// Finds `name` the way a shell would: a name with a slash is a path, anything else is looked up
/// in `PATH`. The result is absolute but symlinks are kept (a `python3` link stays `python3`).
fn resolve_executable(python: &Path) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if python.as_os_str().is_empty() {
        return None;
    }
    if python.as_os_str().as_bytes().contains(&b'/') {
        let abs = std::path::absolute(python).ok()?;
        return is_exec(&abs).then_some(abs);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(python))
        .find(|cand| is_exec(cand))
        .and_then(|p| std::path::absolute(p).ok())
}

impl Interpreter {
    /// Runs `python` once (isolated mode) and records what venv creation and wheel installation
    /// need. A missing interpreter gives [`PythonError::NotFound`].
    pub fn probe(python: impl AsRef<Path>) -> Result<Interpreter, PythonError> {
        let python = python.as_ref();
        let name = python.display().to_string();
        let exe = resolve_executable(python).ok_or(PythonError::NotFound { name })?;
        let out = Command::new(&exe)
            .args(["-I", "-c", PROBE_SCRIPT])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PythonError::Probe { exe: exe.clone(), detail: e.to_string() })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            return Err(PythonError::Probe { exe, detail: format!("exited with {}: {}", out.status, last.trim()) });
        }
        let p: ProbeOutput = serde_json::from_slice(&out.stdout)
            .map_err(|e| PythonError::Probe { exe: exe.clone(), detail: format!("unexpected probe output: {e}") })?;
        Self::from_probe(exe, p)
    }

    fn from_probe(exe: PathBuf, p: ProbeOutput) -> Result<Interpreter, PythonError> {
        let bad = |detail: String| PythonError::Probe { exe: exe.clone(), detail };
        if p.executable.is_empty() {
            return Err(bad("sys.executable is empty".into()));
        }
        let base = match p.base_executable {
            Some(b) if !b.is_empty() => b,
            _ => p.executable.clone(),
        };
        if !Path::new(&base).is_absolute() {
            return Err(bad(format!("base executable `{base}` is not absolute")));
        }
        let cache_tag = p.cache_tag.ok_or_else(|| bad("sys.implementation.cache_tag is None".into()))?;
        // Keep only venv paths that lie under the venv root; anything else would be a distro patch
        // we do not understand, and the CPython default below is then the safe choice.
        let venv_paths = p
            .venv_paths
            .into_iter()
            .filter_map(|(k, v)| {
                let rel = PathBuf::from(v.strip_prefix("@BASE@/")?);
                rel.components().all(|c| matches!(c, Component::Normal(_))).then_some((k, rel))
            })
            .collect();
        let (x, y, z) = p.version;
        Ok(Interpreter {
            executable: exe,
            sys_executable: PathBuf::from(p.executable),
            base_executable: PathBuf::from(base),
            version: p.version,
            version_text: format!("{x}.{y}.{z}"),
            implementation: p.implementation,
            cache_tag,
            prefix: PathBuf::from(p.prefix),
            base_prefix: PathBuf::from(p.base_prefix),
            paths: p.paths.into_iter().map(|(k, v)| (k, PathBuf::from(v))).collect(),
            venv_paths,
            is_64bit: p.is_64bit,
            platform: p.platform,
            tags: p.tags,
        })
    }

    /// The interpreter's version as a PEP 440 version (release segments only).
    pub fn pep440_version(&self) -> Version {
        let (x, y, z) = self.version;
        Version::new([u64::from(x), u64::from(y), u64::from(z)])
    }

    /// Whether this interpreter satisfies a `Requires-Python`-style specifier set.
    pub fn satisfies(&self, req: &VersionSpecifiers) -> bool {
        req.contains(&self.pep440_version())
    }

    /// [`Interpreter::satisfies`] as a `Result` with a one-line error naming both sides.
    pub fn require(&self, spec: &str) -> Result<(), PythonError> {
        if self.satisfies(&parse_python_requirement(spec)?) {
            Ok(())
        } else {
            Err(PythonError::Unsupported {
                exe: self.executable.clone(),
                version: self.version_text.clone(),
                spec: spec.to_string(),
            })
        }
    }

    /// `pythonX.Y`, the directory name used under `lib/` and `include/site/`.
    pub fn python_xy(&self) -> String {
        format!("python{}.{}", self.version.0, self.version.1)
    }

    /// Site-packages relative to a venv root, e.g. `lib/python3.11/site-packages`.
    pub fn venv_purelib(&self) -> PathBuf {
        self.venv_paths
            .get("purelib")
            .cloned()
            .unwrap_or_else(|| Path::new("lib").join(self.python_xy()).join("site-packages"))
    }
}

/// Parses the spec's `python: ">=3.9"` (PEP 440 specifiers, comma separated).
pub fn parse_python_requirement(spec: &str) -> Result<VersionSpecifiers, PythonError> {
    VersionSpecifiers::from_str(spec.trim())
        .map_err(|e| PythonError::InvalidRequirement { spec: spec.to_string(), detail: e.to_string() })
}

/// A virtual environment laid out like CPython's `venv` module makes it. In a venv purelib and
/// platlib are the same directory (`lib64` is a symlink to `lib`), so there is one `site_packages`.
#[derive(Debug, Clone)]
pub struct Venv {
    /// Absolute path of the venv (its final location).
    pub root: PathBuf,
    /// `root/bin/python`, the interpreter shebangs and workers use.
    pub python: PathBuf,
    /// `root/bin`: scripts and entry-point launchers.
    pub bin: PathBuf,
    /// `root/lib/pythonX.Y/site-packages`.
    pub site_packages: PathBuf,
    /// `root/include`; wheel headers go to `include/site/pythonX.Y/<dist>/`.
    pub include: PathBuf,
    /// The interpreter version recorded in `pyvenv.cfg`.
    pub version: (u32, u32, u32),
}

impl Venv {
    /// `pythonX.Y`.
    pub fn python_xy(&self) -> String {
        format!("python{}.{}", self.version.0, self.version.1)
    }

    /// Where a distribution's `.data/headers/` go, as pip does in a venv.
    pub fn headers_dir(&self, dist_name: &str) -> PathBuf {
        self.include.join("site").join(self.python_xy()).join(dist_name)
    }

    /// Opens an existing venv (created by us or by `python -m venv`) from its `pyvenv.cfg`. The
    /// root is canonicalised: scripts installed through a venv opened as `current/venv` must
    /// name the release directory, not a symlink that a later upgrade re-points.
    pub fn open(root: impl AsRef<Path>) -> Result<Venv, PythonError> {
        let root = fs::canonicalize(root.as_ref())
            .map_err(|e| PythonError::InvalidVenv { path: root.as_ref().to_path_buf(), detail: e.to_string() })?;
        let invalid = |detail: String| PythonError::InvalidVenv { path: root.clone(), detail };
        let cfg_path = root.join("pyvenv.cfg");
        let cfg = fs::read_to_string(&cfg_path).map_err(|e| invalid(format!("pyvenv.cfg: {e}")))?;
        let version_text = cfg
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| matches!(k.trim(), "version" | "version_info"))
            .map(|(_, v)| v.trim().to_string())
            .ok_or_else(|| invalid("pyvenv.cfg has no version".into()))?;
        let mut parts = version_text
            .split('.')
            .map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u32>().ok());
        let (Some(Some(x)), Some(Some(y))) = (parts.next(), parts.next()) else {
            return Err(invalid(format!("pyvenv.cfg version `{version_text}` is not X.Y[.Z]")));
        };
        let z = parts.next().flatten().unwrap_or(0);
        let xy = format!("python{x}.{y}");
        let lib = root.join("lib");
        // PyPy uses `pypyX.Y`; accept whatever single `*X.Y` directory holds site-packages.
        let site_packages = [lib.join(&xy).join("site-packages")]
            .into_iter()
            .chain(fs::read_dir(&lib).into_iter().flatten().flatten().map(|e| e.path().join("site-packages")))
            .find(|p| p.is_dir())
            .ok_or_else(|| invalid(format!("no {}/site-packages", lib.display())))?;
        Ok(Venv {
            python: root.join("bin").join("python"),
            bin: root.join("bin"),
            include: root.join("include"),
            site_packages,
            version: (x, y, z),
            root,
        })
    }
}

/// Makes `root` absolute with a canonical parent, so shebangs and `pyvenv.cfg` name a clean path.
fn venv_root_path(root: &Path) -> Result<PathBuf, PythonError> {
    let abs = std::path::absolute(root).map_err(io_err("cannot resolve", root))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(PythonError::InvalidVenv { path: abs.clone(), detail: "not a directory name".into() });
    };
    if name == OsStr::new("..") || name == OsStr::new(".") {
        return Err(PythonError::InvalidVenv { path: abs.clone(), detail: "not a directory name".into() });
    }
    fs::create_dir_all(parent).map_err(io_err("cannot create directory", parent))?;
    let parent = fs::canonicalize(parent).map_err(io_err("cannot resolve", parent))?;
    Ok(parent.join(name))
}

/// Creates a venv at `root` natively: no `python -m venv`, no ensurepip, no pip. `root` must not
/// exist (its parent is created if needed). On failure the partly created `root` is removed.
pub fn create_venv(interp: &Interpreter, root: &Path) -> Result<Venv, PythonError> {
    create_venv_with(interp, root, true)
}

/// A venv without the `activate` scripts: the work tree a store entry's wheel is unpacked into
/// (the scripts belong to each release's venv, not to a wheel, and would cost a Python process
/// per wheel).
pub(crate) fn create_bare_venv(interp: &Interpreter, root: &Path) -> Result<Venv, PythonError> {
    create_venv_with(interp, root, false)
}

fn create_venv_with(interp: &Interpreter, root: &Path, activate: bool) -> Result<Venv, PythonError> {
    let root = venv_root_path(root)?;
    match fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(PythonError::VenvExists { path: root });
        }
        Err(e) => return Err(io_err("cannot create directory", &root)(e)),
    }
    populate_venv(interp, &root, activate).inspect_err(|_| {
        let _ = fs::remove_dir_all(&root);
    })
}

fn populate_venv(interp: &Interpreter, root: &Path, activate: bool) -> Result<Venv, PythonError> {
    use std::os::unix::fs::symlink;
    let bin = root.join("bin");
    let include = root.join("include");
    let site_packages = root.join(interp.venv_purelib());
    for dir in [&bin, &include, &site_packages] {
        fs::create_dir_all(dir).map_err(io_err("cannot create directory", dir))?;
    }
    // Same rule as CPython's venv: 64-bit posix except macOS gets `lib64 -> lib`, which also makes
    // a `lib64/...` platlib (Fedora's platlibdir) the same directory as purelib.
    if interp.is_64bit && interp.platform != "darwin" {
        let lib64 = root.join("lib64");
        if fs::symlink_metadata(&lib64).is_err() {
            symlink("lib", &lib64).map_err(io_err("cannot create symlink", &lib64))?;
        }
    }

    // `home` is the directory of the base interpreter: that is where the venv's interpreter looks
    // for its standard library. `executable` (3.11+) is the resolved base interpreter.
    let base = &interp.base_executable;
    let home = base.parent().unwrap_or(Path::new("/"));
    let real = fs::canonicalize(base).unwrap_or_else(|_| base.clone());
    let cfg = format!(
        "home = {}\ninclude-system-site-packages = false\nversion = {}\nexecutable = {}\n\
         command = bundle-install (native venv) {}\n",
        home.display(),
        interp.version_text,
        real.display(),
        root.display()
    );
    let cfg_path = root.join("pyvenv.cfg");
    fs::write(&cfg_path, cfg).map_err(io_err("cannot write", &cfg_path))?;

    let python = bin.join("python");
    symlink(base, &python).map_err(io_err("cannot create symlink", &python))?;
    let (x, y, _) = interp.version;
    for alias in [format!("python{x}"), format!("python{x}.{y}")] {
        let link = bin.join(&alias);
        if fs::symlink_metadata(&link).is_err() {
            symlink("python", &link).map_err(io_err("cannot create symlink", &link))?;
        }
    }
    if activate {
        write_activate_scripts(interp, root)?;
    }
    Ok(Venv { root: root.to_path_buf(), python, bin, site_packages, include, version: interp.version })
}

/// Run by the site interpreter: its own `venv` module writes `bin/activate`, `activate.csh`,
/// `activate.fish` and `Activate.ps1` from its templates, with its own substitutions (and quoting,
/// which changed between Python versions), exactly as `python -m venv` does. `ensure_directories`
/// only computes the paths here: every directory it would create exists already.
const ACTIVATE_SCRIPT: &str =
    "import sys, venv\nb = venv.EnvBuilder()\nb.setup_scripts(b.ensure_directories(sys.argv[1]))\n";

fn write_activate_scripts(interp: &Interpreter, root: &Path) -> Result<(), PythonError> {
    let fail = |detail: String| PythonError::ActivateScripts { exe: interp.executable.clone(), detail };
    let out = Command::new(&interp.executable)
        .args(["-I", "-S", "-B", "-c", ACTIVATE_SCRIPT])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(fail(format!("exited with {}: {}", out.status, last.trim())));
    }
    Ok(())
}

/// One file that failed to byte-compile.
#[derive(Debug, Clone)]
pub struct CompileFailure {
    pub file: PathBuf,
    pub error: String,
}

/// What [`compile_bytecode`] did.
#[derive(Debug, Clone)]
pub struct CompileReport {
    /// `.py` files found under site-packages.
    pub files: usize,
    /// Files compiled (equal to `files` on success).
    pub compiled: usize,
    /// Interpreter processes used.
    pub workers: usize,
    pub elapsed: Duration,
}

/// Worker run by the venv's interpreter: compiles each path read from stdin (one per line, raw
/// bytes) and answers every input with one line, `ok` or a JSON error carrying the input's index,
/// so odd file names never need escaping on the way back and the installer knows when to send the
/// next path. At end of input it prints its total. `py_compile` picks the invalidation mode
/// (timestamp, or checked-hash when `SOURCE_DATE_EPOCH` is set, for reproducible `.pyc`) and
/// writes atomically.
const COMPILE_WORKER: &str = r#"
import os, py_compile, sys, warnings
# SyntaxWarnings (e.g. invalid escapes, shown by default since 3.12) are not failures.
warnings.simplefilter("ignore")
# The store compiles outside any venv: the name recorded in the .pyc is then the path below
# site-packages (imports replace it with the file's real path when they load it).
relative = "--site-relative" in sys.argv[1:]
read = sys.stdin.buffer.readline
out = sys.stdout.buffer
i = done = 0
while True:
    line = read()
    if not line:
        break
    path = os.fsdecode(line[:-1] if line.endswith(b"\n") else line)
    try:
        dfile = None
        if relative:
            _, sep, tail = path.rpartition("/site-packages/")
            dfile = tail if sep else None
        py_compile.compile(path, dfile=dfile, doraise=True)
        done += 1
        out.write(b"ok\n")
    except Exception as e:
        import json
        if isinstance(e, py_compile.PyCompileError):
            msg = "%s: %s" % (e.exc_type_name, e.exc_value)
        else:
            msg = "%s: %s" % (type(e).__name__, e)
        out.write(json.dumps({"i": i, "error": " ".join(msg.split())}).encode() + b"\n")
    out.flush()
    i += 1
out.write(b'{"done": %d}\n' % done)
out.flush()
"#;

/// Interpreter flags for the workers: isolated (`-I`: no user site, no `PYTHON*` variables), no
/// `site` (`-S`: py_compile needs only the standard library, and `.pth` files in the base
/// interpreter's site-packages may import a lot at every start), and no `.pyc` writes for the
/// worker's own imports (`-B`), so a run as root never writes into the system's standard library.
/// `py_compile.compile` writes its `.pyc` regardless of `-B`.
const WORKER_FLAGS: [&str; 3] = ["-I", "-S", "-B"];

/// Paths sent to a worker ahead of its answers: with two, the next path is already in its pipe
/// when it finishes one, so the round trip never idles it, and the queue's tail is still shared
/// out to whichever worker is free.
const WORKER_WINDOW: usize = 2;

/// How long a worker whose pipes broke may take to exit before it is killed, so that a worker
/// that closed its pipes but lives on cannot hang the installer.
const BROKEN_WORKER_GRACE: Duration = Duration::from_secs(5);

/// How long a worker may go without answering while it has files: a worker stuck on one file
/// (a pathological source, a hung interpreter) is killed and the call fails naming the file, as uv
/// does (its default is 60 s). Compiling the largest real modules takes well under a second.
pub(crate) const COMPILE_ANSWER_LIMIT: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
struct WorkerLine {
    i: Option<usize>,
    error: Option<String>,
    done: Option<usize>,
}

/// Byte-compiles every `.py` under the venv's site-packages with the venv's own interpreter (so
/// the `.pyc` match the target's magic number and cache tag), using `jobs` worker processes
/// (`0` = one per CPU). The files form one queue, largest first, and each worker is fed the next
/// file as soon as it finishes one: fixed shards made the slowest shard decide the wall time.
/// Any file that does not compile makes the whole call fail, listing every such file; a worker
/// that dies makes it fail naming the files it left unfinished.
pub fn compile_bytecode(venv: &Venv, interp: &Interpreter, jobs: usize) -> Result<CompileReport, PythonError> {
    compile_bytecode_within(venv, interp, jobs, COMPILE_ANSWER_LIMIT)
}

/// [`compile_bytecode`] with `answer_limit` instead of [`COMPILE_ANSWER_LIMIT`].
pub fn compile_bytecode_within(
    venv: &Venv,
    interp: &Interpreter,
    jobs: usize,
    answer_limit: Duration,
) -> Result<CompileReport, PythonError> {
    let start = Instant::now();
    if (venv.version.0, venv.version.1) != (interp.version.0, interp.version.1) {
        return Err(PythonError::InvalidVenv {
            path: venv.root.clone(),
            detail: format!(
                "venv is python {}.{} but the interpreter is {}",
                venv.version.0, venv.version.1, interp.version_text
            ),
        });
    }
    compile_under(&venv.python, std::slice::from_ref(&venv.site_packages), None, false, jobs, answer_limit, start)
}

/// Byte-compiles the `.py` files under each of `roots` with `python`, as [`compile_bytecode`]
/// does. With `skip_tag` (an interpreter's cache tag, e.g. `cpython-311`), a file that already has
/// its `__pycache__/<stem>.<tag>.pyc` is left alone: a release venv whose files are hardlinked
/// from the site's store (see `store.rs`) already holds the `.pyc` compiled there, and compiling
/// again would only write new copies of them. With `site_relative`, each `.pyc` records its
/// source's path below `site-packages/` rather than where it was compiled (the store's entries are
/// compiled in a work directory; imports put the file's real path in its place when loading).
pub fn compile_trees(
    python: &Path,
    roots: &[PathBuf],
    skip_tag: Option<&str>,
    site_relative: bool,
    jobs: usize,
) -> Result<CompileReport, PythonError> {
    compile_under(python, roots, skip_tag, site_relative, jobs, COMPILE_ANSWER_LIMIT, Instant::now())
}

/// Whether `py` has a `.pyc` for the interpreter with cache tag `tag`.
fn has_pyc(py: &Path, tag: &str) -> bool {
    let (Some(dir), Some(stem)) = (py.parent(), py.file_stem()) else { return false };
    let mut name = stem.to_os_string();
    name.push(format!(".{tag}.pyc"));
    dir.join("__pycache__").join(name).is_file()
}

fn compile_under(
    python: &Path,
    roots: &[PathBuf],
    skip_tag: Option<&str>,
    site_relative: bool,
    jobs: usize,
    answer_limit: Duration,
    start: Instant,
) -> Result<CompileReport, PythonError> {
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    let mut failures = Vec::new();
    for entry in roots.iter().flat_map(|r| walkdir::WalkDir::new(r).follow_links(false)) {
        let entry = entry.map_err(|e| PythonError::Io {
            action: "cannot list",
            path: e.path().map(Path::to_path_buf).unwrap_or_default(),
            source: e.into_io_error().unwrap_or_else(|| io::Error::other("directory loop")),
        })?;
        if !entry.file_type().is_file() || entry.path().extension() != Some(OsStr::new("py")) {
            continue;
        }
        if skip_tag.is_some_and(|t| has_pyc(entry.path(), t)) {
            continue;
        }
        if entry.path().as_os_str().as_bytes().contains(&b'\n') {
            // The wheel installer never creates such names; anything else put it there.
            failures.push(CompileFailure { file: entry.into_path(), error: "file name contains a newline".into() });
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        files.push((entry.into_path(), size));
    }
    let total = files.len() + failures.len();
    if files.is_empty() {
        return finish(failures, total, 0, 0, start);
    }
    let jobs = if jobs == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { jobs };
    let workers = jobs.min(files.len()).max(1);

    // Largest first: compile time is roughly proportional to source size, so the last files handed
    // out are small and the workers finish close together.
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let files: Vec<PathBuf> = files.into_iter().map(|(path, _)| path).collect();
    let queue = Queue { next: AtomicUsize::new(0), len: files.len(), stopped: AtomicBool::new(false) };

    // Each worker is spawned from, and waited for by, its own thread (see `child::die_with_parent`).
    let results: Vec<Result<WorkerDone, WorkerFailed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| scope.spawn(|| run_compile_worker(python, &files, &queue, site_relative, answer_limit)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    let first = queue.stop();
                    Err(WorkerFailed { first, error: worker_err(python, "worker thread panicked".into()) })
                })
            })
            .collect()
    });
    let (done, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    // Report the failure that stopped the queue, not one of the others it cut short.
    let mut failed: Vec<WorkerFailed> = failed.into_iter().filter_map(Result::err).collect();
    if !failed.is_empty() {
        let at = failed.iter().position(|f| f.first).unwrap_or(0);
        return Err(failed.swap_remove(at).error);
    }
    let mut compiled = 0;
    let mut handled = 0;
    for mut done in done.into_iter().filter_map(Result::ok) {
        compiled += done.compiled;
        handled += done.compiled + done.failures.len();
        failures.append(&mut done.failures);
    }
    if handled != files.len() {
        return Err(worker_err(python, format!("the workers handled {handled} of {} files", files.len())));
    }
    finish(failures, total, compiled, workers, start)
}

fn finish(
    mut failures: Vec<CompileFailure>,
    files: usize,
    compiled: usize,
    workers: usize,
    start: Instant,
) -> Result<CompileReport, PythonError> {
    if failures.is_empty() {
        return Ok(CompileReport { files, compiled, workers, elapsed: start.elapsed() });
    }
    failures.sort_by(|a, b| a.file.cmp(&b.file));
    Err(PythonError::Compile { failures })
}

fn worker_err(exe: &Path, detail: String) -> PythonError {
    PythonError::CompileWorker { exe: exe.to_path_buf(), detail }
}

/// The shared work queue: indices into the sorted file list, handed out in order. Once a worker
/// fails the call fails anyway, so the others stop taking files and finish early.
struct Queue {
    next: AtomicUsize,
    len: usize,
    stopped: AtomicBool,
}

impl Queue {
    fn take(&self) -> Option<usize> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        (k < self.len).then_some(k)
    }

    /// Whether this call is the one that stopped it.
    fn stop(&self) -> bool {
        !self.stopped.swap(true, Ordering::Relaxed)
    }
}

/// What one worker got through.
#[derive(Default)]
struct WorkerDone {
    compiled: usize,
    failures: Vec<CompileFailure>,
}

/// Why a conversation with a worker ended before its final line.
enum Broken {
    /// Its stdout ended or its stdin was closed (it exited or is exiting), or it exited.
    Gone,
    /// It printed something outside the protocol.
    Garbled(String),
    /// It gave no answer within the time limit.
    Stuck,
    Io(io::Error),
}

/// A worker's error, and whether its failure is what stopped the queue.
struct WorkerFailed {
    first: bool,
    error: PythonError,
}

fn run_compile_worker(
    python: &Path,
    files: &[PathBuf],
    queue: &Queue,
    site_relative: bool,
    answer_limit: Duration,
) -> Result<WorkerDone, WorkerFailed> {
    let mut child = crate::child::die_with_parent(&mut Command::new(python))
        .args(WORKER_FLAGS)
        .args(["-c", COMPILE_WORKER])
        .args(site_relative.then_some("--site-relative"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| WorkerFailed { first: queue.stop(), error: worker_err(python, e.to_string()) })?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    // Drained apart, so a worker writing much to stderr never blocks on a full pipe.
    let stderr_tail = Arc::new(Mutex::new(Vec::new()));
    let (tx, stderr_done) = std::sync::mpsc::channel();
    let tail = Arc::clone(&stderr_tail);
    std::thread::spawn(move || {
        read_tail(stderr, &tail, 8192);
        let _ = tx.send(());
    });

    let mut done = WorkerDone::default();
    let mut pending = VecDeque::new();
    let talk = converse(&mut child, stdin, stdout, files, queue, &mut pending, &mut done, answer_limit);
    let first = talk.is_err() && queue.stop();
    let status = match talk {
        Ok(()) => child.wait(),
        Err(Broken::Gone) => reap(&mut child, BROKEN_WORKER_GRACE),
        Err(_) => reap(&mut child, Duration::ZERO),
    };
    // The worker has exited, so its stderr is at its end, unless something it started holds it.
    let _ = stderr_done.recv_timeout(Duration::from_secs(1));
    let stderr = String::from_utf8_lossy(&stderr_tail.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let last_err = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output on stderr");
    let failed = |detail: String| WorkerFailed { first, error: worker_err(python, detail) };
    let status = status.map_err(|e| failed(format!("waiting for it: {e}")))?;
    let detail = match talk {
        Ok(()) if status.success() => return Ok(done),
        Ok(()) => format!("exited with {status}: {last_err}"),
        Err(Broken::Gone) => match pending.front() {
            Some(&k) => format!(
                "exited with {status} leaving {} file(s) unfinished, first `{}`: {last_err}",
                pending.len(),
                files[k].display()
            ),
            None => format!("exited with {status} before its final report: {last_err}"),
        },
        Err(Broken::Garbled(line)) => format!("unexpected output `{line}`"),
        Err(Broken::Stuck) => format!(
            "gave no answer for {} s while compiling `{}` and was killed: {last_err}",
            answer_limit.as_secs(),
            pending.front().map(|&k| files[k].display().to_string()).unwrap_or_default()
        ),
        Err(Broken::Io(e)) => format!("talking to it: {e}"),
    };
    Err(failed(detail))
}

/// Feeds `files` from the queue to one worker, at most [`WORKER_WINDOW`] unanswered at a time,
/// and collects its answers; closes its stdin once the queue is empty and reads its total.
/// `pending` holds what was sent and not yet answered, oldest first.
#[allow(clippy::too_many_arguments)]
fn converse(
    child: &mut Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    files: &[PathBuf],
    queue: &Queue,
    pending: &mut VecDeque<usize>,
    done: &mut WorkerDone,
    answer_limit: Duration,
) -> Result<(), Broken> {
    let mut stdin = Some(stdin);
    let mut stdout = BufReader::new(stdout);
    let mut answered = 0usize;
    let mut line = Vec::new();
    let mut msg = Vec::new();
    loop {
        while pending.len() < WORKER_WINDOW {
            let Some(input) = stdin.as_mut() else { break };
            let Some(k) = queue.take() else {
                stdin = None; // end of input: the worker prints its total and exits
                break;
            };
            pending.push_back(k);
            msg.clear();
            msg.extend_from_slice(files[k].as_os_str().as_bytes());
            msg.push(b'\n');
            input.write_all(&msg).map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => Broken::Gone,
                _ => Broken::Io(e),
            })?;
        }
        line.clear();
        wait_readable(&stdout, child, answer_limit)?;
        stdout.read_until(b'\n', &mut line).map_err(Broken::Io)?;
        if line.pop() != Some(b'\n') {
            return Err(Broken::Gone);
        }
        let text = String::from_utf8_lossy(&line);
        let garbled = || Broken::Garbled(text.chars().take(200).collect());
        let Some(k) = pending.pop_front() else {
            // Everything is answered and stdin is closed: this is the total.
            let total: WorkerLine = serde_json::from_str(&text).map_err(|_| garbled())?;
            return match total.done {
                Some(n) if n == done.compiled => Ok(()),
                _ => Err(garbled()),
            };
        };
        if text == "ok" {
            done.compiled += 1;
        } else {
            let answer: WorkerLine = serde_json::from_str(&text).map_err(|_| garbled())?;
            match (answer.i, answer.error) {
                (Some(i), Some(error)) if i == answered => {
                    done.failures.push(CompileFailure { file: files[k].clone(), error })
                }
                _ => return Err(garbled()),
            }
        }
        answered += 1;
    }
}

/// Waits until the worker's stdout has a line (or its end) to read. A worker that died gives its
/// end, unless a process it started still holds the pipe: so every 100 ms without output, check
/// that the worker itself still runs. A worker silent for `limit` is [`Broken::Stuck`].
#[allow(unsafe_code)]
fn wait_readable(stdout: &BufReader<ChildStdout>, child: &mut Child, limit: Duration) -> Result<(), Broken> {
    if !stdout.buffer().is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + limit;
    let mut pfd = libc::pollfd { fd: stdout.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let mut exited = false;
    loop {
        // SAFETY: one valid pollfd for a descriptor we own.
        let n = unsafe { libc::poll(&mut pfd, 1, if exited { 0 } else { 100 }) };
        if n > 0 {
            return Ok(()); // readable, at its end, or in error: the read says which
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Broken::Io(e));
        }
        if exited {
            return Err(Broken::Gone); // it exited and wrote nothing more
        }
        if Instant::now() >= deadline {
            return Err(Broken::Stuck);
        }
        // Polled once more after the exit: what it wrote before exiting is in the pipe by then.
        exited = child.try_wait().map_err(Broken::Io)?.is_some();
    }
}

/// Waits for a worker's exit, killing it if it takes longer than `grace`.
fn reap(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads `r` to its end into `tail`, keeping only about the last `keep` bytes. Shared rather than
/// returned, so what arrived is there even if the end never comes.
fn read_tail(mut r: impl Read, tail: &Mutex<Vec<u8>>, keep: usize) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    let cut = tail.len() - keep;
                    tail.drain(..cut);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_parsing() {
        let spec = parse_python_requirement(">=3.9, <4").unwrap();
        let interp = fake_interp((3, 11, 7));
        assert!(interp.satisfies(&spec));
        assert!(!fake_interp((3, 8, 18)).satisfies(&spec));
        assert_eq!(parse_python_requirement(">=three").unwrap_err().kind(), "invalid_python_requirement");
        assert_eq!(fake_interp((3, 8, 1)).require(">=3.9").unwrap_err().kind(), "python_version_unsupported");
    }

    #[test]
    fn missing_interpreter() {
        let err = Interpreter::probe("definitely-not-a-python-3x").unwrap_err();
        assert_eq!(err.kind(), "python_not_found");
        assert_eq!(err.to_string(), "python interpreter `definitely-not-a-python-3x` not found; pass --python PATH");
        assert_eq!(Interpreter::probe("/nonexistent/python3").unwrap_err().kind(), "python_not_found");
    }

    #[test]
    fn compile_error_message_is_one_line() {
        let e = PythonError::Compile {
            failures: vec![
                CompileFailure { file: "/a.py".into(), error: "SyntaxError: invalid syntax (a.py, line 1)".into() },
                CompileFailure { file: "/b.py".into(), error: "x".into() },
            ],
        };
        let msg = e.to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.contains("/a.py") && msg.contains("and 1 more"), "{msg}");
    }

    fn fake_interp(version: (u32, u32, u32)) -> Interpreter {
        Interpreter {
            executable: "/usr/bin/python3".into(),
            sys_executable: "/usr/bin/python3".into(),
            base_executable: "/usr/bin/python3".into(),
            version,
            version_text: format!("{}.{}.{}", version.0, version.1, version.2),
            implementation: "cpython".into(),
            cache_tag: format!("cpython-{}{}", version.0, version.1),
            prefix: "/usr".into(),
            base_prefix: "/usr".into(),
            paths: BTreeMap::new(),
            venv_paths: BTreeMap::new(),
            is_64bit: true,
            platform: "linux".into(),
            tags: InterpreterTags {
                implementation_name: "cpython".into(),
                version,
                abi: Some(format!("cp{}{}", version.0, version.1)),
                abi3: true,
                platform: "linux_x86_64".into(),
                libc: None,
            },
        }
    }

    /// The real interpreter's tags: CPython on this Linux reports its glibc and machine, and
    /// accepts the tags `pip` would install here.
    #[test]
    fn probe_reports_wheel_tags() {
        let i = Interpreter::probe("python3").expect("python3 on PATH");
        let env = i.tags.environment();
        let (x, y, _) = i.version;
        assert_eq!(env.version, i.version);
        assert_eq!(env.abi.as_deref(), Some(format!("cp{x}{y}").as_str()));
        assert!(i.tags.libc.is_some(), "glibc or musl found: {:?}", i.tags);
        let machine = std::env::consts::ARCH;
        assert!(
            env.platforms.first().is_some_and(|p| p.starts_with("manylinux_2_") || p.starts_with("musllinux_1_")),
            "{:?}",
            env.platforms
        );
        assert!(env.platforms.last().is_some_and(|p| *p == format!("linux_{machine}")), "{:?}", env.platforms);
        let r = env.ranking();
        let fits = |py: &str, abi: &str, plat: &str| r.best(&bundle_core::tags::expand(py, abi, plat)).is_some();
        assert!(fits(&format!("cp{x}{y}"), &format!("cp{x}{y}"), &format!("manylinux2014_{machine}")));
        assert!(fits("py3", "none", "any"));
        assert!(!fits(&format!("cp{x}{}", y + 1), &format!("cp{x}{}", y + 1), &format!("manylinux2014_{machine}")));
        assert!(!fits(&format!("cp{x}{y}"), &format!("cp{x}{y}"), "macosx_11_0_arm64"));
        assert!(!fits(&format!("cp{x}{y}"), &format!("cp{x}{y}"), "win_amd64"));
    }
}
