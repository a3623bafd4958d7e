#!/usr/bin/env python3
"""Inputs for scripts/bench.sh (standard library only, deterministic for a given seed).

    make_inputs.py wheels OUT --mb N --count K --prefix NAME [--seed S]
        K wheels `NAME001-1.0.0-py3-none-any.whl` ... adding up to about N MB: a few small .py
        modules (deflated) and incompressible data members (stored, as already-compressed content
        is), with valid METADATA, WHEEL, top_level.txt and RECORD, so every installer accepts them.
    make_inputs.py manyfiles OUT --files N --name NAME
        One wheel holding N small files (1 in 100 a .py module, the rest data files).
    make_inputs.py pywheels OUT [--count 17]
        Pure-Python wheels (40 modules each): the fallback for real wheels.
    make_inputs.py text OUT --mb N
        Compressible text for the build benchmark: SQL migrations (OUT/migrations/archive/) and a
        YAML config defaults file (OUT/defaults.yaml), about N MB together.
    make_inputs.py spec OUT --fixture DIR [--wheels DIR]... [--text DIR] [--no-hooks]
        A spec directory: the fixture release DIR (fixtures/build.py output) plus the given wheel
        directories (hard-linked, not copied) and, with --text, an extra `archive` database whose
        migrations are the SQL above and the YAML as config defaults. --no-hooks drops the hooks
        (the swap/rollback timing measures the installer, not the app's hook scripts).

Generated wheel/text directories carry a `.done` stamp of their parameters and are reused when the
stamp matches, so repeated bench runs do not regenerate gigabytes.
"""

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import random
import shutil
import sys
import zipfile
from pathlib import Path

ZIP_DATE = (2020, 1, 1, 0, 0, 0)
POOL_BYTES = 64 << 20


def record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def stamp_ok(out, params):
    stamp = out / ".done"
    return stamp.exists() and stamp.read_text() == json.dumps(params, sort_keys=True)


def write_stamp(out, params):
    (out / ".done").write_text(json.dumps(params, sort_keys=True))


def fresh_dir(out):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


class Pool:
    """Incompressible bytes, fast: slices of one random pool at pseudo-random offsets. Deflate
    (32 KiB window) and zstd at normal levels cannot find repeats megabytes apart."""

    def __init__(self, seed):
        rnd = random.Random(seed)
        self.rnd = rnd
        self.pool = rnd.randbytes(POOL_BYTES)
        self.view = memoryview(self.pool + self.pool[: 16 << 20])

    def take(self, n):
        assert n <= 16 << 20
        off = self.rnd.randrange(POOL_BYTES)
        return self.view[off : off + n]


def py_module(rnd, name, lines):
    body = [f'"""{name}: generated for the bundle benchmarks."""', "", "import os", ""]
    for i in range(lines):
        k = rnd.randrange(1 << 30)
        body.append(f"def f_{i}(x, y={k}):")
        body.append(f"    return [x * {k % 97} + y for _ in range({i % 7 + 1})]")
        body.append("")
    return ("\n".join(body) + "\n").encode()


def build_wheel(path, dist, version, members):
    """members: list of (arcname, bytes-like, compress?, mode)."""
    dist_info = f"{dist}-{version}.dist-info"
    meta = [
        (f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: bench data\n".encode(), True, 0o644),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: bench/make_inputs.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n", True, 0o644),
        (f"{dist_info}/top_level.txt", f"{dist}\n".encode(), True, 0o644),
    ]
    allm = list(members) + meta
    record = io.StringIO()
    w = csv.writer(record, lineterminator="\n")
    for arc, data, _, _ in allm:
        w.writerow([arc, record_hash(data), len(data)])
    w.writerow([f"{dist_info}/RECORD", "", ""])
    allm.append((f"{dist_info}/RECORD", record.getvalue().encode(), True, 0o644))
    tmp = path.with_suffix(".partial")
    with zipfile.ZipFile(tmp, "w") as zf:
        for arc, data, compress, mode in allm:
            info = zipfile.ZipInfo(arc, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, bytes(data) if compress else data)
    tmp.rename(path)


def cmd_wheels(a):
    out = Path(a.out)
    params = {"kind": "wheels", "mb": a.mb, "count": a.count, "prefix": a.prefix, "seed": a.seed, "v": 2}
    if a.only:
        params["only"] = a.only
    if stamp_ok(out, params):
        print(f"{out}: up to date", file=sys.stderr)
        return
    fresh_dir(out)
    pool = Pool(a.seed)
    rnd = pool.rnd
    per_wheel = a.mb * 1_000_000 // a.count
    for i in range(1, a.count + 1):
        if a.only and i != a.only:
            continue
        dist = f"{a.prefix}{i:03d}"
        members = [(f"{dist}/__init__.py", f'"""{dist}"""\nVERSION = "1.0.0"\n'.encode(), True, 0o644)]
        for m in range(6):
            members.append((f"{dist}/mod_{m}.py", py_module(rnd, f"{dist}.mod_{m}", 40), True, 0o644))
        left = per_wheel
        j = 0
        while left > 0:
            # Data members of 1-8 MB, like the shared libraries and data files of real wheels.
            n = min(left, rnd.randrange(1 << 20, 8 << 20))
            members.append((f"{dist}/data/blob_{j:03d}.bin", pool.take(n), False, 0o644))
            left -= n
            j += 1
        build_wheel(out / f"{dist}-1.0.0-py3-none-any.whl", dist, "1.0.0", members)
    write_stamp(out, params)
    print(f"{out}: {1 if a.only else a.count} wheels, {sum(p.stat().st_size for p in out.glob('*.whl')) / 1e6:.0f} MB", file=sys.stderr)


def cmd_pywheels(a):
    """Fallback for the staging row when real wheels cannot be downloaded: pure-Python wheels of
    the size of a typical web stack (about 700 modules in 17 wheels, 7 MB), with console scripts."""
    out = Path(a.out)
    params = {"kind": "pywheels", "count": a.count, "v": 2}
    if stamp_ok(out, params):
        return
    fresh_dir(out)
    rnd = random.Random(5)
    for i in range(1, a.count + 1):
        dist = f"pylib{i:02d}"
        members = [(f"{dist}/__init__.py", b'"""pure python"""\n', True, 0o644)]
        for m in range(40):
            members.append((f"{dist}/sub{m % 4}/mod_{m}.py", py_module(rnd, f"{dist}.mod_{m}", 60), True, 0o644))
        for s in range(4):
            members.append((f"{dist}/sub{s}/__init__.py", b"", True, 0o644))
        members.append((f"{dist}-1.0.0.dist-info/entry_points.txt", f"[console_scripts]\n{dist} = {dist}:main\n".encode(), True, 0o644))
        build_wheel(out / f"{dist}-1.0.0-py3-none-any.whl", dist, "1.0.0", members)
    write_stamp(out, params)


def cmd_manyfiles(a):
    out = Path(a.out)
    params = {"kind": "manyfiles", "files": a.files, "name": a.name, "v": 2}
    if stamp_ok(out, params):
        print(f"{out}: up to date", file=sys.stderr)
        return
    fresh_dir(out)
    rnd = random.Random(7)
    members = [(f"{a.name}/__init__.py", b'"""many small files"""\n', True, 0o644)]
    for i in range(1, a.files):
        d = f"{a.name}/d{i // 100:03d}"
        if i % 100 == 0:
            members.append((f"{d}/m{i:05d}.py", f"X = {i}\n".encode(), True, 0o644))
        else:
            members.append((f"{d}/f{i:05d}.json", json.dumps({"i": i, "v": rnd.randrange(1 << 40)}).encode(), True, 0o644))
    build_wheel(out / f"{a.name}-1.0.0-py3-none-any.whl", a.name, "1.0.0", members)
    write_stamp(out, params)


def cmd_text(a):
    out = Path(a.out)
    params = {"kind": "text", "mb": a.mb, "v": 2}
    if stamp_ok(out, params):
        print(f"{out}: up to date", file=sys.stderr)
        return
    fresh_dir(out)
    rnd = random.Random(11)
    words = ["station", "sensor", "north", "south", "pump", "valve", "gauge", "calibrated", "replaced", "checked", "ok", "fault"]
    mig = out / "migrations" / "archive"
    mig.mkdir(parents=True)
    sql_bytes = a.mb * 1_000_000 * 9 // 10
    (mig / "1.0_init.sql").write_text(
        "CREATE TABLE readings (id INTEGER PRIMARY KEY, station TEXT NOT NULL, taken_at TEXT, value REAL, note TEXT);\n"
    )
    steps = 4
    for s in range(1, steps + 1):
        with open(mig / f"1.{s}_seed_{s}.sql", "w") as f:
            written = 0
            n = 0
            while written < sql_bytes // steps:
                n += 1
                note = " ".join(rnd.choice(words) for _ in range(6))
                line = (
                    f"INSERT INTO readings (station, taken_at, value, note) VALUES "
                    f"('st-{rnd.randrange(500):03d}', '2024-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}T"
                    f"{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:00Z', {rnd.random() * 100:.3f}, '{note}');\n"
                )
                f.write(line)
                written += len(line)
    with open(out / "defaults.yaml", "w") as f:
        f.write("server:\n  listen: localhost:8080\nstorage:\n  backend: sqlite\n  retention_days: 30\n")
        f.write("logging:\n  level: info\n  format: text\nstations:\n")
        written = 0
        i = 0
        while written < a.mb * 1_000_000 // 10:
            i += 1
            block = (
                f"  st-{i:05d}:\n    name: {rnd.choice(words)} {rnd.choice(words)} {i}\n"
                f"    kind: {rnd.choice(words)}\n    enabled: true\n    interval_s: {rnd.choice([30, 60, 300])}\n"
            )
            f.write(block)
            written += len(block)
    write_stamp(out, params)


def link_tree(src, dst):
    """Hard-links every file of src under dst (same file system), creating directories."""
    for root, _, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name == ".done":
                continue
            s, d = Path(root) / name, dst / rel / name
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)


def cmd_spec(a):
    out = Path(a.out)
    fixture = Path(a.fixture)
    fresh_dir(out)
    link_tree(fixture, out)
    (out / "spec.yaml").unlink()
    for w in a.wheels or []:
        link_tree(Path(w), out / "wheelhouse")
    spec = (fixture / "spec.yaml").read_text()
    if a.no_hooks:
        spec = spec.split("hooks:\n")[0] + "keep_releases: 3\n"
        shutil.rmtree(out / "hooks")
    if a.text:
        text = Path(a.text)
        link_tree(text / "migrations", out / "migrations")
        (out / "config" / "defaults.yaml").unlink()
        os.link(text / "defaults.yaml", out / "config" / "defaults.yaml")
        spec = spec.replace(
            "databases:\n",
            "databases:\n  archive:\n    engine: sqlite\n    path: data/archive.db\n"
            f'    schema: "1.{len(list((text / "migrations" / "archive").glob("1.*"))) - 1}"\n'
            "    migrations: migrations/archive/\n",
        )
    (out / "spec.yaml").write_text(spec)
    print(out / "spec.yaml")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wheels")
    w.add_argument("out")
    w.add_argument("--mb", type=int, required=True)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--prefix", required=True)
    w.add_argument("--seed", type=int, default=1)
    # Only wheel N of the set (same name and size, other content with another seed): a release in
    # which one wheel changed.
    w.add_argument("--only", type=int, default=0)
    m = sub.add_parser("manyfiles")
    m.add_argument("out")
    m.add_argument("--files", type=int, required=True)
    m.add_argument("--name", required=True)
    pw = sub.add_parser("pywheels")
    pw.add_argument("out")
    pw.add_argument("--count", type=int, default=17)
    t = sub.add_parser("text")
    t.add_argument("out")
    t.add_argument("--mb", type=int, required=True)
    s = sub.add_parser("spec")
    s.add_argument("out")
    s.add_argument("--fixture", required=True)
    s.add_argument("--wheels", action="append")
    s.add_argument("--text")
    s.add_argument("--no-hooks", action="store_true")
    a = p.parse_args()
    {"wheels": cmd_wheels, "manyfiles": cmd_manyfiles, "pywheels": cmd_pywheels, "text": cmd_text, "spec": cmd_spec}[a.cmd](a)


if __name__ == "__main__":
    main()
