#!/usr/bin/env python3
"""Fidelity of bundle-install against pip on real PyPI wheels (the driver behind scripts/corpus.sh).

    scripts/corpus.sh fetch        download the pinned wheels of scripts/corpus-lock.txt into the cache
    scripts/corpus.sh have         exit 0 iff the cache holds every pinned wheel and python3 fits the lock
    scripts/corpus.sh probe        exit 0 iff the package index answers within a few seconds
    scripts/corpus.sh run [--keep] [--work DIR] [--long-names include|exclude|auto] [--json FILE]
                                   bundle the corpus, apply it to a fresh site, install the same wheels
                                   with pip into a reference venv, compare them; exit 1 on any
                                   unexplained difference
    scripts/corpus.sh lock         re-resolve TOP (below) and rewrite scripts/corpus-lock.txt

The lock pins exact versions and sha256 hashes for CPython 3.11 on manylinux x86_64; `python3` must be
that interpreter. The cache is $CORPUS_CACHE, default ~/.cache/bundle-corpus/wheels (outside the
work tree, so CI runs in fresh clones reuse it). The tools are taken from $CORPUS_BIN_DIR, default
target/release. Every difference the comparison allows is listed in EXPECTED with its reason, and
written down in bundle-spec/wheels.md. Standard library only (plus pip for the reference install).
"""

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "scripts" / "corpus-lock.txt"
CACHE = Path(os.environ.get("CORPUS_CACHE") or Path.home() / ".cache" / "bundle-corpus" / "wheels")
BIN = Path(os.environ.get("CORPUS_BIN_DIR") or ROOT / "target" / "release")
APP, APP_VERSION = "corpusapp", "1.0.0"
EPOCH = "1767225600"

# The projects asked for; `lock` adds their dependencies. Chosen for the corners of the wheel format
# they exercise (printed by `run`): large binary wheels, abi3, py2.py3, .data/{scripts,data,headers,
# purelib}, gui_scripts, namespace packages, dotted and upper-case names, a build tag, file names
# over 100 bytes, compressed tag sets.
TOP = [
    "numpy", "pandas", "cryptography", "lxml", "pillow", "psycopg[binary]", "grpcio", "protobuf",
    "charset-normalizer", "requests", "zope.interface", "PyYAML", "Jinja2", "SQLAlchemy", "greenlet",
    "awscli", "keyring", "ipykernel", "qtconsole", "widgetsnbextension", "pybind11", "pybind11-global",
    "ruff", "click", "flask", "attrs", "pydantic", "packaging", "pytest", "rich", "tqdm", "pyzmq",
    "psutil", "Mako", "alembic", "six", "openvino==2023.0.0", "semgrep",
]

# Differences between our venv and pip's that are chosen, not bugs (bundle-spec/wheels.md says why).
EXPECTED = {
    "store_readonly": "files linked from the site's store are read-only (pip's mode without write bits): one inode serves every release, so no release may change it in place",
    "installer": "INSTALLER names the tool that installed the files: `bundle-install`, pip writes `pip`",
    "requested": "pip writes REQUESTED for every requirement on its command line; a bundle's wheels are one "
                 "resolved set, none more requested than another, so bundle-install writes none",
    "pyc_record": "pip lists the .pyc files it compiled in RECORD; bundle-install compiles in a later journal "
                  "step and does not (a release directory is removed whole, never uninstalled file by file)",
    "pyc_bytes": ".pyc files embed the source's mtime and absolute path, which differ between any two venvs: "
                 "they are compared by presence, magic number, flags and source size",
    "shebang": "scripts name their own venv's interpreter: the venv path is replaced by <VENV> before comparing",
    "launcher": "entry-point launchers: pip's template rewrites sys.argv[0] with `re` (for Windows .exe names); "
                "ours imports the same object and calls it without that; compared by (module, object)",
    "script_record": "RECORD hashes of files under bin/ differ with their shebang; each is checked against the "
                     "file in its own venv instead",
    "python_links": "bin/python, python3, python3.X: ours link python to the base interpreter and the others to "
                    "python; `python -m venv` links python3 to it and the others to python3: compared by where they resolve",
    "pyvenv_cfg": "pyvenv.cfg's `command` line names the tool that made the venv; every other key is compared",
    "bin_pyc": "pip also byte-compiles the `.py` scripts it puts in bin/ (bin/__pycache__/); bundle-install "
               "compiles site-packages only: a script runs as __main__ and is never loaded from a .pyc",
    "headers_dir": "`.data/headers` go to include/site/pythonX.Y/<Name from METADATA>; pip names that directory "
                   "as the requirement was spelled on its command line (here the wheel file's `pybind11_global`, "
                   "`pybind11-global` for `pip install pybind11-global`): compared with the name normalised",
}

LAUNCHER_RE = re.compile(rb"\nfrom ([A-Za-z0-9_.]+) import ([A-Za-z0-9_]+)\n.*?sys\.exit\(([A-Za-z0-9_.]+)\(\)\)", re.S)


def log(msg):
    print(f"corpus: {msg}", file=sys.stderr, flush=True)


def sh(cmd, *, timeout=1800, env=None, check=True, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise SystemExit(f"corpus: `{' '.join(map(str, cmd))}` failed with exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def interpreter_fits():
    """None when python3 (this interpreter) is CPython 3.11 on Linux x86_64, else why not."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return f"the lock is for CPython 3.11, this is {sys.implementation.name} {platform.python_version()}"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the lock is for manylinux x86_64, this is {sys.platform} {platform.machine()}"
    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(int(x) for x in version.split(".")[:2]) < (2, 34):
        return f"the lock needs glibc >= 2.34 (manylinux_2_34 wheels), this has {libc or 'no glibc'} {version}"
    return None


# ---------------------------------------------------------------------------------------------
# The lock


def read_lock():
    """[(filename, name==version, sha256)] from the lock (each requirement follows a `# file:` line)."""
    out, fname = [], None
    for line in LOCK.read_text().splitlines():
        if line.startswith("# file: "):
            fname = line[len("# file: "):].strip()
        elif line and not line.startswith("#"):
            m = re.fullmatch(r"(\S+==\S+) --hash=sha256:([0-9a-f]{64})", line.strip())
            if not m or not fname:
                raise SystemExit(f"corpus: {LOCK}: bad line {line!r}")
            out.append((fname, m[1], m[2]))
            fname = None
    return out


def cmd_lock(args):
    why = interpreter_fits()
    if why:
        raise SystemExit(f"corpus: cannot lock: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.from_dir:
            tmp = args.from_dir  # wheels already resolved by the same pip download
        else:
            log(f"resolving {len(TOP)} projects with pip download (dependencies included)")
            sh([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", tmp, *TOP], timeout=1800)
        lines = [
            "# The wheel corpus of scripts/corpus.sh: CPython 3.11, manylinux x86_64. Generated by",
            "# `scripts/corpus.sh lock` from its TOP list and their dependencies; fetched with",
            "# `pip download --only-binary=:all: --no-deps --require-hashes -r` this file.",
        ]
        for w in sorted(Path(tmp).glob("*.whl"), key=lambda p: p.name.lower()):
            name, version = w.name.split("-")[:2]
            lines += [f"# file: {w.name}", f"{name}=={version} --hash=sha256:{sha256_file(w)}"]
        LOCK.write_text("\n".join(lines) + "\n")
    log(f"wrote {LOCK}")


def cached():
    """{filename: path} of the lock's wheels present in the cache with the pinned hash, and the missing."""
    have, missing = {}, []
    for fname, _req, digest in read_lock():
        p = CACHE / fname
        if p.is_file() and (p.stat().st_size > 0) and sha256_file(p) == digest:
            have[fname] = p
        else:
            missing.append(fname)
    return have, missing


def cmd_have(_args):
    why = interpreter_fits()
    if why:
        print(f"corpus: {why}")
        return 1
    if not CACHE.is_dir():
        print(f"corpus: no cache at {CACHE} (run scripts/corpus.sh fetch)")
        return 1
    _, missing = cached()
    if missing:
        print(f"corpus: {len(missing)} pinned wheels missing from {CACHE}, e.g. {missing[0]} (run scripts/corpus.sh fetch)")
        return 1
    print(f"corpus: all {len(read_lock())} pinned wheels are in {CACHE}")
    return 0


def cmd_probe(_args):
    """Can the package index be reached? One small pinned download with a short timeout."""
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--timeout", "5",
                            "--retries", "0", "-d", tmp, "six==1.17.0"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    print("corpus: package index reachable" if p.returncode == 0 else "corpus: package index not reachable")
    return 0 if p.returncode == 0 else 1


def cmd_fetch(_args):
    why = interpreter_fits()
    if why:
        raise SystemExit(f"corpus: cannot fetch: {why}")
    CACHE.mkdir(parents=True, exist_ok=True)
    _, missing = cached()
    if missing:
        log(f"downloading {len(missing)} wheels into {CACHE}")
        sh([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps", "--require-hashes",
            "--timeout", "30", "--retries", "3", "-d", str(CACHE), "-r", str(LOCK)], timeout=3000)
    _, missing = cached()
    if missing:
        raise SystemExit(f"corpus: still missing after download: {missing}")
    total = sum((CACHE / f).stat().st_size for f, _, _ in read_lock())
    log(f"cache complete: {len(read_lock())} wheels, {total / 1e6:.0f} MB in {CACHE}")
    return 0


# ---------------------------------------------------------------------------------------------
# Building the bundle


def app_wheel(out_dir):
    """The app wheel the spec needs (`corpusapp`), written with fixtures/build.py's wheel writer."""
    sys.path.insert(0, str(ROOT / "fixtures"))
    import build as fixture_build  # noqa: PLC0415

    files = {"corpusapp/__init__.py": b'"""The app of the wheel corpus: it only has to import."""\nVERSION = "1.0.0"\n'}
    data = fixture_build.build_wheel(APP, APP_VERSION, files, metadata=["Summary: corpus app", "Requires-Python: >=3.11"],
                                     entry_points="[console_scripts]\ncorpusapp = corpusapp:__init__\n")
    path = Path(out_dir) / f"{APP}-{APP_VERSION}-py3-none-any.whl"
    path.write_bytes(data)
    return path


SPEC = f"""\
# The wheel corpus (scripts/corpus.sh): every pinned wheel, for CPython 3.11 on manylinux x86_64.
app: {APP}
version: {APP_VERSION}
upgrades_from: {APP_VERSION}
python: ">=3.11"
wheels: wheelhouse/
hooks:
  health_check: hooks/health.sh
keep_releases: 2
# The lock's platform: markers are evaluated for it, and every wheel must fit it (the newest
# manylinux tag in the corpus is 2_34: cryptography, debugpy, semgrep).
targets:
- {{python: "3.11", platform: manylinux_2_34_x86_64}}
"""

HEALTH = """#!/bin/sh
# The corpus release is healthy when its app imports with the venv's interpreter.
exec "$BUNDLE_RELEASE_DIR/venv/bin/python" -c 'import corpusapp'
"""


def make_spec(work, wheels):
    """A spec directory whose wheelhouse links the chosen cached wheels; returns spec.yaml's path."""
    spec = work / "spec"
    shutil.rmtree(spec, ignore_errors=True)
    (spec / "wheelhouse").mkdir(parents=True)
    (spec / "hooks").mkdir()
    for w in wheels:
        (spec / "wheelhouse" / w.name).symlink_to(w)
    app_wheel(spec / "wheelhouse")
    (spec / "spec.yaml").write_text(SPEC)
    (spec / "hooks" / "health.sh").write_text(HEALTH)
    (spec / "hooks" / "health.sh").chmod(0o755)
    return spec / "spec.yaml"


def tool(name):
    p = BIN / name
    if not p.is_file():
        raise SystemExit(f"corpus: {p} is missing (cargo build --release, or set CORPUS_BIN_DIR)")
    return str(p)


def build_bundle(work, wheels, long_names):
    """Keys, spec and bundle. Returns (bundle, public key, wheels packed, wheels left out with why)."""
    keys = work / "keys"
    if not (keys / "corpus.key").exists():
        keys.mkdir(parents=True, exist_ok=True)
        # A throw-away key in clear: the corpus is a test, never a release.
        sh([tool("bundle-build"), "keygen", "--unencrypted", "--out", str(keys / "corpus")])
    left_out = {}
    if long_names == "exclude":
        left_out = {w.name: "file name over 100 bytes (--long-names exclude)" for w in wheels if len(w.name.encode()) > 100}
    chosen = [w for w in wheels if w.name not in left_out]
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    for attempt in (1, 2):
        spec = make_spec(work, chosen)
        out = work / "dist"
        shutil.rmtree(out, ignore_errors=True)
        p = sh([tool("bundle-build"), "build", str(spec), "--key", str(keys / "corpus.key"), "--out", str(out), "--json"],
               env=env, check=False)
        if p.returncode == 0:
            return Path(json.loads(p.stdout)["bundle"]), keys / "corpus.pub", chosen, left_out
        long = [w for w in chosen if len(w.name.encode()) > 100]
        if attempt == 1 and long_names == "auto" and long and any(w.name in p.stdout + p.stderr for w in long):
            text = (p.stdout + p.stderr).strip().splitlines()
            first_error = next((line for line in text if "error" in line.lower()), text[-1] if text else "")
            why = f"bundle-build refused names over 100 bytes: {first_error[:240]}"
            log(f"leaving out {len(long)} wheels: {why}")
            left_out.update({w.name: why for w in long})
            chosen = [w for w in chosen if w not in long]
            continue
        raise SystemExit(f"corpus: bundle-build build failed (exit {p.returncode})\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    raise AssertionError("unreachable")


def apply_bundle(work, bundle, pub):
    """A clean apply to work/site; returns (venv path, seconds, step millis from history)."""
    site = work / "site"
    shutil.rmtree(site, ignore_errors=True)
    t = time.perf_counter()
    sh([tool("bundle-install"), "apply", str(bundle), "--root", str(site), "--trust", str(pub), "--python", sys.executable,
        "--quiet", "--json"])
    dt = time.perf_counter() - t
    hist = json.loads(sh([tool("bundle-install"), "history", "--root", str(site), "--json"]).stdout)["history"]
    steps = {s["step"]: s.get("millis") for s in hist[-1].get("steps", [])}
    return (site / "current").resolve() / "venv", dt, steps


def pip_reference(work, wheels):
    """python -m venv --without-pip, then pip install --no-deps --no-index --find-links of the same files."""
    ref = work / "ref" / "venv"  # named `venv` like ours: the activate scripts' prompt is the directory name
    shutil.rmtree(ref, ignore_errors=True)
    sh([sys.executable, "-m", "venv", "--without-pip", str(ref)])
    links = work / "spec" / "wheelhouse"
    reqs = work / "ref-requirements.txt"
    lines = []
    for w in sorted(links.glob("*.whl")):
        name, version = w.name.split("-")[:2]
        lines.append(f"{name}=={version} --hash=sha256:{sha256_file(w)}")
    reqs.write_text("\n".join(lines) + "\n")
    t = time.perf_counter()
    sh([sys.executable, "-m", "pip", "--python", str(ref / "bin" / "python"), "--disable-pip-version-check", "install", "-q",
        "--no-deps", "--no-index", "--find-links", str(links), "--require-hashes", "-r", str(reqs)], timeout=3600)
    return ref, time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# Comparing two venvs


def site_packages(venv):
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def read_record(dist_info):
    rows = {}
    with open(dist_info / "RECORD", newline="") as f:
        for row in csv.reader(f):
            if row:
                rows[row[0]] = (row[1] if len(row) > 1 else "", row[2] if len(row) > 2 else "")
    return rows


def dists(venv):
    """{normalised project name: dist-info path}."""
    out = {}
    for d in site_packages(venv).glob("*.dist-info"):
        name = d.name[: -len(".dist-info")].rsplit("-", 1)[0]
        out[re.sub(r"[-_.]+", "-", name).lower()] = d
    return out


HEADERS_RE = re.compile(r"^(include/site/python\d+\.\d+/)([^/]+)(/.*)$")


def canonical(rel):
    """A venv-relative path with the headers directory's project name normalised (see EXPECTED headers_dir)."""
    m = HEADERS_RE.match(rel)
    return f"{m[1]}{re.sub(r'[-_.]+', '-', m[2]).lower()}{m[3]}" if m else rel


def owned_files(venv, dist_info, record):
    """{canonical venv-relative path: real venv-relative path} of a dist's files, with each listed
    .py's .pyc attributed to it."""
    sp = site_packages(venv)
    out = {}
    for rp in record:
        full = Path(os.path.normpath(sp / rp))
        rel = full.relative_to(venv).as_posix()
        out[canonical(rel)] = rel
        if rp.endswith(".py"):
            pyc = full.parent / "__pycache__" / f"{full.stem}.{sys.implementation.cache_tag}.pyc"
            if pyc.exists():
                rel = pyc.relative_to(venv).as_posix()
                out.setdefault(rel, rel)
    return out


def norm_script(data, venv):
    return data.replace(str(venv).encode(), b"<VENV>")


def launcher_target(data):
    m = LAUNCHER_RE.search(data)
    return (m[1].decode(), m[3].decode()) if m else None


def record_hash(path):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(Path(path).read_bytes()).digest()).rstrip(b"=").decode()


def canonical_row(rp):
    """A RECORD path (relative to site-packages) with the headers directory's name normalised."""
    m = re.match(r"^((?:\.\./)+include/site/python\d+\.\d+/)([^/]+)(/.*)$", rp)
    return f"{m[1]}{re.sub(r'[-_.]+', '-', m[2]).lower()}{m[3]}" if m else rp


def compare_dist(name, ours_venv, ref_venv, ours_di, ref_di, expected_hits):
    """Differences (strings) between one distribution's install in our venv and pip's."""
    diffs = []
    o_rec, r_rec = read_record(ours_di), read_record(ref_di)
    o_files, r_files = owned_files(ours_venv, ours_di, o_rec), owned_files(ref_venv, ref_di, r_rec)
    di_rel = lambda di, f: f"{di.relative_to(site_packages(di.parent.parent.parent.parent)).as_posix()}/{f}"  # noqa: E731
    ignore_ref = {f"lib/python3.11/site-packages/{di_rel(ref_di, 'REQUESTED')}"}
    if any(p in r_files for p in ignore_ref):
        expected_hits.add("requested")
    bin_pyc = {p for p in r_files if p.startswith("bin/__pycache__/") and p.endswith(".pyc")}
    if bin_pyc:
        expected_hits.add("bin_pyc")
    if any(o_files[p] != p or r_files[p] != p for p in set(o_files) & set(r_files)):
        expected_hits.add("headers_dir")
    o_set, r_set = set(o_files), set(r_files) - ignore_ref - bin_pyc
    for p in sorted(o_set - r_set):
        diffs.append(f"only in ours: {p}")
    for p in sorted(r_set - o_set):
        diffs.append(f"only in pip's: {p}")
    stats = {"files": len(o_set), "bytes": 0, "scripts": 0}
    for p in sorted(o_set & r_set):
        a, b = ours_venv / o_files[p], ref_venv / r_files[p]
        if a.is_symlink() or b.is_symlink():
            if os.readlink(a) != os.readlink(b):
                diffs.append(f"symlink differs: {p}")
            continue
        ma, mb = a.stat().st_mode & 0o7777, b.stat().st_mode & 0o7777
        if ma != mb and ma == mb & ~0o222 and a.stat().st_nlink > 1:
            expected_hits.add("store_readonly")
        elif ma != mb:
            diffs.append(f"mode {ma:o} vs pip's {mb:o}: {p}")
        da, db = a.read_bytes(), b.read_bytes()
        stats["bytes"] += len(da)
        if p.endswith(".pyc"):
            expected_hits.add("pyc_bytes")
            if da[:8] != db[:8] or da[12:16] != db[12:16]:
                diffs.append(f"pyc header (magic, flags, source size) differs: {p}")
            continue
        if p.endswith(".dist-info/RECORD"):
            continue  # compared row by row below
        if p.endswith("/INSTALLER") and ".dist-info/" in p:
            expected_hits.add("installer")
            if (da, db) != (b"bundle-install\n", b"pip\n"):
                diffs.append(f"INSTALLER {da!r} vs pip's {db!r}")
            continue
        if p.startswith("bin/"):
            stats["scripts"] += 1
            na, nb = norm_script(da, ours_venv), norm_script(db, ref_venv)
            if na != da or nb != db:
                expected_hits.add("shebang")
            if na == nb:
                continue
            ta, tb = launcher_target(na), launcher_target(nb)
            if ta and ta == tb and na.split(b"\n", 1)[0] == nb.split(b"\n", 1)[0]:
                expected_hits.add("launcher")
                continue
            diffs.append(f"script differs after normalising the venv path: {p}")
            continue
        if da != db:
            diffs.append(f"bytes differ: {p}")
    # RECORD: the same rows; hashes equal except where the file is one we normalise, where each
    # venv's row must match its own file.
    o_rows = {canonical_row(r): v for r, v in o_rec.items()}
    r_rows = {canonical_row(r): v for r, v in r_rec.items() if not r.endswith(".pyc") and not r.endswith("/REQUESTED")}
    if any(r.endswith(".pyc") for r in r_rec):
        expected_hits.add("pyc_record")
    for r in sorted(set(o_rows) ^ set(r_rows)):
        diffs.append(f"RECORD row only in {'ours' if r in o_rows else 'pip'}: {r}")
    sp_o, sp_r = site_packages(ours_venv), site_packages(ref_venv)
    for r in sorted(set(o_rows) & set(r_rows)):
        if o_rows[r] == r_rows[r]:
            continue
        rel = Path(os.path.normpath(sp_o / r)).relative_to(ours_venv).as_posix()
        if rel.startswith("bin/") or r.endswith("/INSTALLER"):
            # (bin/ and INSTALLER rows are never header rows, so r is also their real RECORD path.)
            ok_o = o_rows[r][0] == record_hash(sp_o / r) and int(o_rows[r][1]) == (sp_o / r).stat().st_size
            ok_r = r_rows[r][0] == record_hash(sp_r / r) and int(r_rows[r][1]) == (sp_r / r).stat().st_size
            if ok_o and ok_r:
                expected_hits.add("script_record" if rel.startswith("bin/") else "installer")
                continue
        diffs.append(f"RECORD row differs: {r}: {o_rows[r]} vs pip's {r_rows[r]}")
    return diffs, stats


def unowned(venv, all_dists):
    """venv-relative files no RECORD claims (the venv's own files), with their bytes or link target."""
    owned = set()
    for di in all_dists.values():
        owned |= set(owned_files(venv, di, read_record(di)).values())
    out = {}
    for dirpath, dirnames, filenames in os.walk(venv):
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / n
            rel = p.relative_to(venv).as_posix()
            if rel in owned:
                continue
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else ("file", p.stat().st_mode & 0o7777)
    return out


def pyvenv_cfg(venv):
    """pyvenv.cfg without `command` (each venv records the command that made it)."""
    out = {}
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() != "command":
            out[k.strip()] = v.strip()
    return out


METADATA_PROBE = r"""
import importlib.metadata as md, json, sys
out = {}
for d in md.distributions():
    n = d.metadata["Name"]
    out[n.lower().replace("_", "-").replace(".", "-")] = {
        "name": n, "version": d.version,
        "entry_points": sorted([e.group, e.name, e.value] for e in d.entry_points),
        "requires": sorted(d.requires or []),
        "files": len(d.files or []),
    }
json.dump(out, sys.stdout)
"""

IMPORT_PROBE = r"""
import importlib, json, sys, os
res = {}
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
        res[m] = "ok"
    except BaseException as e:
        res[m] = type(e).__name__ + ": " + " ".join(str(e).split())[:160]
sys.stdout.flush()
os.write(1, b"\n@@RESULT@@" + json.dumps(res).encode() + b"\n")
"""


def probe_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def metadata_of(venv):
    """importlib.metadata's view, with .pyc rows left out of the file counts (see EXPECTED pyc_record)."""
    p = sh([str(venv / "bin" / "python"), "-c", METADATA_PROBE], env=probe_env(), cwd="/")
    return json.loads(p.stdout)


def top_level_modules(dist_info, record):
    tl = dist_info / "top_level.txt"
    if tl.exists():
        mods = [line.strip().replace("/", ".") for line in tl.read_text().splitlines() if line.strip()]
    else:
        mods = set()
        for rp in record:
            first = rp.split("/")[0]
            if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__") or first.endswith(".pth"):
                continue
            mod = first.split(".")[0] if "/" not in rp else first
            if "/" in rp and (not rp.endswith((".py", ".so")) or not first.isidentifier()):
                continue  # data, or a directory no import can name (numpy.libs/)
            if not rp.endswith((".py", ".so")) and "/" not in rp:
                continue
            mods.add(mod)
        mods = sorted(mods)
    return [m for m in mods if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", m) and not m.startswith("_")] or [
        m for m in mods if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", m)]


def imports(venv, mods):
    if not mods:
        return {}
    try:
        p = subprocess.run([str(venv / "bin" / "python"), "-c", IMPORT_PROBE, *mods], capture_output=True, timeout=300,
                           env=probe_env(), cwd="/", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {m: "timeout" for m in mods}
    m = re.search(rb"@@RESULT@@(.*)\n", p.stdout)
    if not m:
        return {mod: f"crashed (exit {p.returncode}): {p.stderr.decode(errors='replace')[-160:]}" for mod in mods}
    return json.loads(m[1])


def corners(wheel):
    """The format corners one wheel exercises."""
    name = wheel.name
    parts = name[:-4].split("-")
    py, abi, plat = parts[-3:]
    out = []
    if len(name.encode()) > 100:
        out.append("name>100B")
    if len(parts) == 6:
        out.append("build-tag")
    if abi == "abi3":
        out.append("abi3")
    if py == "py2.py3":
        out.append("py2.py3")
    if "." in py or "." in plat:
        out.append("tag-set")
    if any(c.isupper() for c in parts[0]):
        out.append("upper-case")
    if "." in parts[0]:
        out.append("dotted")
    if wheel.stat().st_size >= 10_000_000:
        out.append("large")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        data = sorted({n.split("/")[1] for n in names if n.split("/")[0].endswith(".data") and n.count("/") >= 2})
        out += [f".data/{d}" for d in data]
        ep = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        if ep and b"[gui_scripts]" in z.read(ep[0]):
            out.append("gui_scripts")
        tops = {n.split("/")[0] for n in names if "/" in n and not n.split("/")[0].endswith((".dist-info", ".data"))}
        if any(f"{t}/__init__.py" not in names and any(n.startswith(f"{t}/") and n.endswith(".py") for n in names) for t in tops):
            out.append("namespace")
        if any(n.endswith(".pth") and "/" not in n for n in names):
            out.append(".pth")
    return out


CORNERS = ["name>100B", "build-tag", "abi3", "py2.py3", "tag-set", "upper-case", "dotted", "large", ".data/scripts",
           ".data/data", ".data/headers", ".data/purelib", ".data/platlib", "gui_scripts", "namespace", ".pth"]


def cmd_run(args):
    why = interpreter_fits()
    if why:
        raise SystemExit(f"corpus: cannot run: {why}")
    have, missing = cached()
    if missing:
        raise SystemExit(f"corpus: {len(missing)} wheels missing from {CACHE}: run scripts/corpus.sh fetch")
    wheels = sorted(have.values(), key=lambda p: p.name.lower())
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bundle-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 1e6:.0f} MB; work dir {work}")
    try:
        return compare_all(work, wheels, args)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


def compare_all(work, wheels, args):
    if args.compare_only:
        # Iterating on the comparison: the venvs of an earlier `run --work DIR`.
        ours, ref, t_apply, t_pip, steps, left_out = (work / "site" / "current").resolve() / "venv", work / "ref" / "venv", 0, 0, {}, {}
        chosen = [w for w in wheels if (work / "spec" / "wheelhouse" / w.name).exists()]
    else:
        bundle, pub, chosen, left_out = build_bundle(work, wheels, args.long_names)
        log(f"bundle {bundle.name}: {bundle.stat().st_size / 1e6:.0f} MB, {len(chosen) + 1} wheels")
        ours, t_apply, steps = apply_bundle(work, bundle, pub)
        log(f"apply: {t_apply:.2f} s (steps, ms: {steps})")
        ref, t_pip = pip_reference(work, chosen)
        log(f"pip install: {t_pip:.2f} s")
    o_d, r_d = dists(ours), dists(ref)
    hits = set()
    problems = []
    for n in sorted(set(o_d) ^ set(r_d)):
        problems.append(f"{n}: installed only by {'us' if n in o_d else 'pip'}")
    o_meta, r_meta = metadata_of(ours), metadata_of(ref)
    rows = []
    common = sorted(set(o_d) & set(r_d))
    mods = {n: top_level_modules(r_d[n], read_record(r_d[n])) for n in common}
    with ThreadPoolExecutor(max_workers=2) as pool:
        o_imp = dict(zip(common, pool.map(lambda n: imports(ours, mods[n]), common)))
        r_imp = dict(zip(common, pool.map(lambda n: imports(ref, mods[n]), common)))
    by_name = {re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower(): w for w in chosen}
    covered = {}
    for n in common:
        diffs, stats = compare_dist(n, ours, ref, o_d[n], r_d[n], hits)
        om, rm = dict(o_meta.get(n, {})), dict(r_meta.get(n, {}))
        o_files, r_files = om.pop("files", None), rm.pop("files", None)
        if om != rm:
            diffs.append(f"importlib.metadata differs: {om} vs pip's {rm}")
        n_pyc = sum(1 for r in read_record(r_d[n]) if r.endswith(".pyc"))
        has_req = (r_d[n] / "REQUESTED").exists()
        if o_files != (r_files or 0) - n_pyc - has_req:
            diffs.append(f"importlib.metadata files: {o_files} vs pip's {r_files} (of which {n_pyc} .pyc)")
        imp_note = ""
        for m in mods[n]:
            a, b = o_imp[n].get(m), r_imp[n].get(m)
            if a == b == "ok":
                continue
            if a != "ok" and b != "ok" and a.split(":")[0] == b.split(":")[0]:
                imp_note = f"{m}: fails under pip too ({b[:80]})"
                continue
            diffs.append(f"import {m}: {a} vs pip's {b}")
        w = by_name.get(n)
        cs = corners(w) if w else []
        for c in cs:
            covered.setdefault(c, []).append(n)
        ok_imports = sum(1 for m in mods[n] if o_imp[n].get(m) == "ok")
        rows.append({"dist": n, "version": om.get("version"), "files": stats["files"], "bytes": stats["bytes"],
                     "scripts": stats["scripts"], "imports": f"{ok_imports}/{len(mods[n])}", "import_note": imp_note,
                     "corners": cs, "differences": diffs})
        problems += [f"{n}: {d}" for d in diffs]
    base_o, base_r = unowned(ours, o_d), unowned(ref, r_d)
    base_diff = sorted(set(base_o) ^ set(base_r))
    for p in base_diff:
        problems.append(f"venv base: {p} only in {'ours' if p in base_o else 'pip'}'s venv")
    for p in sorted(set(base_o) & set(base_r)):
        if base_o[p][0] == base_r[p][0] == "link" and re.fullmatch(r"bin/python[0-9.]*", p):
            if os.path.realpath(ours / p) != os.path.realpath(ref / p):
                problems.append(f"venv base: {p} resolves to {os.path.realpath(ours / p)}, pip's venv's to {os.path.realpath(ref / p)}")
            elif base_o[p] != base_r[p]:
                hits.add("python_links")
            continue
        if base_o[p] != base_r[p]:
            problems.append(f"venv base: {p}: {base_o[p]} vs pip's {base_r[p]}")
        elif base_o[p][0] == "file" and p != "pyvenv.cfg":
            if norm_script((ours / p).read_bytes(), ours) != norm_script((ref / p).read_bytes(), ref):
                problems.append(f"venv base: {p} differs after normalising the venv path")
    cfg_o, cfg_r = pyvenv_cfg(ours), pyvenv_cfg(ref)
    if cfg_o != cfg_r:
        problems.append(f"venv base: pyvenv.cfg {cfg_o} vs pip's venv's {cfg_r}")
    hits.add("pyvenv_cfg")
    print_table(rows, covered, left_out, hits, problems, t_apply, t_pip, steps)
    report = {"wheels": len(chosen) + 1, "left_out": left_out, "apply_s": t_apply, "pip_s": t_pip, "apply_steps_ms": steps,
              "rows": rows, "corners": covered, "expected": {k: EXPECTED[k] for k in sorted(hits)}, "problems": problems}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if problems else 0


def print_table(rows, covered, left_out, hits, problems, t_apply, t_pip, steps):
    print(f"{'distribution':32} {'version':16} {'files':>6} {'MB':>7} {'bin':>4} {'import':>7}  result   corners")
    for r in rows:
        res = "same" if not r["differences"] else f"{len(r['differences'])} DIFF"
        print(f"{r['dist'][:32]:32} {str(r['version'])[:16]:16} {r['files']:6} {r['bytes'] / 1e6:7.2f} {r['scripts']:4} "
              f"{r['imports']:>7}  {res:8} {' '.join(r['corners'])}")
    notes = [r for r in rows if r["import_note"]]
    if notes:
        print("\nimports that fail the same way in pip's venv (a dependency outside the corpus, or no display):")
        for r in notes:
            print(f"  {r['dist']}: {r['import_note']}")
    print("\ncorners of the wheel format covered:")
    for c in CORNERS:
        print(f"  {c:14} {', '.join(covered.get(c, [])) or 'NOT COVERED (no wheel in the corpus has it)'}")
    for name, why in sorted(left_out.items()):
        print(f"left out: {name}: {why}")
    print("\nallowed differences seen (bundle-spec/wheels.md):")
    for k in sorted(hits):
        print(f"  {k}: {EXPECTED[k]}")
    print(f"\nbundle-install apply {t_apply:.2f} s (steps, ms: {json.dumps(steps)}); pip install {t_pip:.2f} s")
    print(f"{len(rows)} distributions compared, {len(problems)} unexplained differences")
    for p in problems[:200]:
        print(f"  DIFF {p}")


def main(argv):
    ap = argparse.ArgumentParser(prog="corpus.sh", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("fetch", "have", "probe"):
        sub.add_parser(name)
    sub.add_parser("lock").add_argument("--from", dest="from_dir", help="use the wheels `pip download` already put here")
    run = sub.add_parser("run")
    run.add_argument("--keep", action="store_true", help="keep the work directory")
    run.add_argument("--work", help="work directory (kept)")
    run.add_argument("--long-names", choices=["auto", "include", "exclude"], default="include",
                     help="wheels whose file name is over 100 bytes (PAX headers in the bundle): include (a refusal fails "
                          "the run), exclude, or auto (left out, and said so, only if bundle-build refuses them)")
    run.add_argument("--json", help="write the full report here")
    run.add_argument("--compare-only", action="store_true", help="with --work: compare the venvs an earlier run left there")
    args = ap.parse_args(argv)
    return {"fetch": cmd_fetch, "have": cmd_have, "probe": cmd_probe, "lock": cmd_lock, "run": cmd_run}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
