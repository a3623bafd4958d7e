#!/usr/bin/env python3
"""The benchmark driver behind scripts/bench.sh (which builds the tools first). Standard library only.

Generates every input under bench/work/, runs each comparison as alternating pairs (ours, reference,
ours, reference, ...), and writes medians and ratios to bench/results.json and bench/results.md.
A reference tool that cannot be had (uv, pip, real wheels from the package index) makes its row
`skipped` with the reason; nothing else is allowed to fail quietly.

Environment: BENCH_SCALE=small (about 100 MB instead of 1-2 GB: a quick run), BENCH_ONLY=a,b (run
only these sections: verify, build, stage, swap, rss, db, rehearse, store, corpus).
"""

import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
W = BENCH / "work"
REL = ROOT / "target" / "release"
BB, BI, STAGE, DBBENCH = (str(REL / n) for n in ("bundle-build", "bundle-install", "stage", "dbbench"))
PY = sys.executable if not os.environ.get("BENCH_PYTHON") else os.environ["BENCH_PYTHON"]
SCALE = os.environ.get("BENCH_SCALE", "full")
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
EPOCH = "1767225600"

if SCALE == "small":
    P = dict(main_mb=100, main_count=10, extra_mb=100, extra_count=10, text_mb=3, rss_small_wheels=2,
             db_mb=100, many=10_000, slow_reps=3, fast_reps=5, cycles=10)
elif SCALE == "full":
    P = dict(main_mb=1000, main_count=40, extra_mb=1000, extra_count=40, text_mb=24, rss_small_wheels=4,
             db_mb=1000, many=10_000, slow_reps=3, fast_reps=5, cycles=10)
else:
    sys.exit(f"BENCH_SCALE={SCALE}: use `small` or leave it unset")

# A site has no PYTHONDONTWRITEBYTECODE; it would change what pip and the interpreters do.
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PIP_FIND_LINKS", "SOURCE_DATE_EPOCH")}
BUILD_ENV = {**ENV, "SOURCE_DATE_EPOCH": EPOCH}  # reproducible bundles; only for bundle-build
ENV["UV_CACHE_DIR"] = str(W / "tools" / "uv-cache")
ENV["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

rows = []
notes = []
T0 = time.monotonic()
LOAD0 = os.getloadavg()


def log(msg):
    print(f"[bench {time.monotonic() - T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def sh(cmd, *, check=True, capture=True, timeout=1800, env=None, stdin=None):
    """Runs cmd (a list, or a string for the shell) and returns (seconds, CompletedProcess)."""
    t = time.perf_counter()
    p = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=capture, text=True, timeout=timeout,
                       env=env or ENV, stdin=stdin if stdin is not None else subprocess.DEVNULL)
    dt = time.perf_counter() - t
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))}: exit {p.returncode}\n"
                           f"{(p.stderr or '')[-2000:]}")
    return dt, p


def rm(path):
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def med(xs):
    return statistics.median(xs) if xs else None


def pctl(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


CPU = {}


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def paired(reps, runners):
    """runners: [(label, fn -> seconds)], run in order each repetition. Returns {label: [seconds]};
    the CPU seconds (user + sys of every process the run started) go to CPU[label]."""
    out = {label: [] for label, _ in runners}
    for label, _ in runners:
        CPU[label] = []
    for r in range(reps):
        for label, fn in runners:
            if fn is None:
                continue
            c = cpu_children()
            dt = fn()
            CPU[label].append(cpu_children() - c)
            out[label].append(dt)
        log("  rep %d/%d: %s" % (r + 1, reps, ", ".join(f"{k} {v[-1]:.3f}s" for k, v in out.items() if v)))
    return out


def cpu_ratio(ours_label, ref_label):
    """Median CPU-time ratio: a check on the wall-time ratio when the machine is shared."""
    o, r = CPU.get(ours_label), CPU.get(ref_label)
    if not o or not r or not med(r):
        return None
    return {"cpu_ours_s": med(o), "cpu_ref_s": med(r), "cpu_ratio": med(o) / med(r)}


def add_row(section, name, input_desc, ours=None, ref=None, ours_label="", ref_label="", target=None,
            target_kind="ratio_max", unit="s", extra=None, samples=None, skipped=None, value=None):
    row = {"section": section, "name": name, "input": input_desc, "ours_label": ours_label, "ref_label": ref_label,
           "unit": unit, "target": target, "target_kind": target_kind, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if skipped:
        row.update(status="skipped", reason=skipped)
        log(f"SKIPPED {name}: {skipped}")
    else:
        row["ours"] = ours
        row["ref"] = ref
        if value is None and ours is not None and ref:
            value = ours / ref
        row["value"] = value
        if target is None:
            row["status"] = "report"
        elif target_kind == "ratio_max" or target_kind == "max":
            row["status"] = "pass" if value is not None and value <= target else "MISS"
        row["samples"] = samples or {}
    if extra:
        row.update(extra)
    rows.append(row)
    if not skipped:
        log(f"ROW {name}: ours {fmt(ours, unit)} ref {fmt(ref, unit)} -> {fmt_value(row)} [{row['status']}]")


def fmt(x, unit="s"):
    if x is None:
        return "—"
    if unit == "s":
        return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"
    if unit == "ms":
        return f"{x:.1f} ms"
    if unit == "MiB":
        return f"{x:.1f} MiB"
    return f"{x} {unit}"


def fmt_value(row):
    v = row.get("value")
    if v is None:
        return "—"
    if row["target_kind"] in ("ratio_max", "report_ratio", "ratio_range"):
        return f"{v:.3f}"
    return fmt(v, row["unit"])


# ---------------------------------------------------------------------------------------------
# Inputs


def gen(*args):
    sh([PY, str(BENCH / "make_inputs.py"), *map(str, args)], capture=False)


def inputs():
    log(f"inputs (scale {SCALE}) under {W}")
    W.mkdir(parents=True, exist_ok=True)
    fx = W / "fixture"
    if not (fx / "4.0.0" / "spec.yaml").exists():
        sh([PY, str(ROOT / "fixtures" / "build.py"), str(fx)])
    # The db and rehearse sections need only the fixture and the key.
    if not ONLY or ONLY - {"db", "rehearse"}:
        gen("wheels", W / f"wheels-main-{SCALE}", "--mb", P["main_mb"], "--count", P["main_count"], "--prefix", "synth", "--seed", 1)
        gen("text", W / f"text-{SCALE}", "--mb", P["text_mb"])
        gen("manyfiles", W / "wheels-many", "--files", P["many"], "--name", "bigtree")
    keys = W / "keys"
    if not (keys / "bench.key").exists():
        rm(keys)
        keys.mkdir()
        sh([BB, "keygen", "--unencrypted", "--out", str(keys / "bench")])
    return fx, keys / "bench.key", keys / "bench.pub"


def build_bundle(spec_dir, out_dir):
    rm(out_dir)
    _, p = sh([BB, "build", str(spec_dir / "spec.yaml"), "--key", str(KEY), "--out", str(out_dir), "--json"], env=BUILD_ENV)
    return Path(json.loads(p.stdout)["bundle"])


# ---------------------------------------------------------------------------------------------
# Sections


def sec_build_and_verify():
    spec = W / "spec-build"
    gen("spec", spec, "--fixture", FX / "4.0.0", "--wheels", W / f"wheels-main-{SCALE}", "--text", W / f"text-{SCALE}")
    inb = sum(f.stat().st_size for f in spec.rglob("*") if f.is_file())
    desc = f"fixture 4.0.0 + {P['main_count']} synthetic wheels + {P['text_mb']} MB SQL/YAML = {inb / 1e6:.0f} MB"
    out = W / "out-build"
    ref_out = W / "out-ref"
    sizes = {}

    def ours():
        rm(out)
        dt, p = sh([BB, "build", str(spec / "spec.yaml"), "--key", str(KEY), "--out", str(out), "--json"], env=BUILD_ENV)
        sizes["ours"] = json.loads(p.stdout)["bytes"]
        return dt

    def ref():
        rm(ref_out)
        ref_out.mkdir(parents=True)
        dt, _ = sh(f"tar -cf - -C '{spec}' . | gzip -6 > '{ref_out}/ref.tar.gz'")
        sizes["ref"] = (ref_out / "ref.tar.gz").stat().st_size
        return dt

    if not ONLY or "build" in ONLY:
        log("build vs tar | gzip -6")
        s = paired(P["slow_reps"], [("bundle-build build", ours), ("tar | gzip -6", ref)])
        add_row("build", "bundle-build build vs tar -c | gzip -6", desc, med(s["bundle-build build"]), med(s["tar | gzip -6"]),
                "bundle-build build", "tar -c | gzip -6", 0.1, samples=s,
                extra={"input_bytes": inb, **(cpu_ratio("bundle-build build", "tar | gzip -6") or {})})
        add_row("build", "bundle size vs tar | gzip -6 size", desc, sizes["ours"], sizes["ref"], "bundle bytes", "gzip -6 bytes",
                1.01, unit="B", extra={"bytes_ours": sizes["ours"], "bytes_ref": sizes["ref"]})
        rm(ref_out)
    bundle = build_bundle(spec, out)
    if not ONLY or "verify" in ONLY:
        size = bundle.stat().st_size
        vdesc = f"bundle of {size / 1e6:.0f} MB ({desc})"
        log("verify vs sha256sum")
        s = paired(P["fast_reps"], [
            ("bundle-install verify", lambda: sh([BI, "verify", str(bundle), "--trust", str(PUB), "--json", "--quiet"])[0]),
            ("bundle-build verify", lambda: sh([BB, "verify", str(bundle), "--trust", str(PUB), "--json"])[0]),
            ("sha256sum", lambda: sh(["sha256sum", str(bundle)])[0]),
        ])
        add_row("verify", "bundle-install verify vs sha256sum", vdesc, med(s["bundle-install verify"]), med(s["sha256sum"]),
                "bundle-install verify", "sha256sum", 0.5, samples={k: s[k] for k in ("bundle-install verify", "sha256sum")},
                extra=cpu_ratio("bundle-install verify", "sha256sum"))
        add_row("verify", "bundle-build verify vs sha256sum", vdesc, med(s["bundle-build verify"]), med(s["sha256sum"]),
                "bundle-build verify", "sha256sum", 0.5, samples={k: s[k] for k in ("bundle-build verify", "sha256sum")},
                extra=cpu_ratio("bundle-build verify", "sha256sum"))
    return bundle


def tools():
    """uv in a scratch venv from the package index; real wheels via pip download. Each may fail."""
    t = W / "tools"
    t.mkdir(parents=True, exist_ok=True)
    uv = t / "uv-venv" / "bin" / "uv"
    uv_reason = None
    if not uv.exists():
        try:
            rm(t / "uv-venv")
            sh([PY, "-m", "venv", str(t / "uv-venv")])
            sh([str(t / "uv-venv" / "bin" / "pip"), "install", "-q", "uv"], timeout=600)
        except Exception as e:  # noqa: BLE001
            uv_reason = f"uv could not be installed from the package index: {str(e).splitlines()[0][:200]}"
    if uv_reason is None:
        try:
            _, p = sh([str(uv), "--version"])
            notes.append(f"uv: {p.stdout.strip()}")
        except Exception as e:  # noqa: BLE001
            uv_reason = f"uv does not run: {e}"
    real = W / "realwheels"
    wheels_reason = None
    if not (real / ".done").exists():
        rm(real)
        try:
            sh([PY, "-m", "pip", "download", "-q", "flask", "sqlalchemy", "alembic", "pyyaml", "requests",
                "--only-binary=:all:", "-d", str(real)], timeout=600)
            (real / ".done").write_text("pip download flask sqlalchemy alembic pyyaml requests --only-binary=:all:\n")
        except Exception as e:  # noqa: BLE001
            wheels_reason = f"pip download failed ({str(e).splitlines()[0][:160]}); synthetic pure-Python wheels used"
    wheels = sorted(real.glob("*.whl"))
    if wheels_reason or len(wheels) < 5:
        wheels_reason = wheels_reason or "too few real wheels"
        gen("pywheels", W / "pywheels", "--count", 17)
        wheels = sorted((W / "pywheels").glob("*.whl"))
    return (None if uv_reason else str(uv)), uv_reason, wheels, wheels_reason


def stage_ours(venv, wheels, compile_):
    rm(venv)
    _, p = sh([STAGE, "--python", PY, "--venv", str(venv), *(["--compile"] if compile_ else []), *map(str, wheels)])
    r = json.loads(p.stdout)
    return r


def sec_stage():
    uv, uv_reason, real, real_reason = tools()
    _, p = sh([PY, "-c", "import pip, sys; print(pip.__version__)"], check=False)
    pip_version = p.stdout.strip()
    total = sum(w.stat().st_size for w in real)
    desc = f"{len(real)} {'real wheels (flask, sqlalchemy, alembic, pyyaml, requests + deps)' if not real_reason else 'synthetic pure-Python wheels'}, {total / 1e6:.1f} MB"
    if real_reason:
        notes.append(real_reason)
    v = W / "venvs"
    v.mkdir(parents=True, exist_ok=True)
    details = {}

    def ours(compile_):
        def f():
            t = time.perf_counter()
            r = stage_ours(v / "ours", real, compile_)
            r["process_wall_ms"] = (time.perf_counter() - t) * 1000
            details.setdefault("ours_bc" if compile_ else "ours", []).append(r)
            return r["staging_ms"] / 1000
        return f

    def uv_run(compile_):
        if uv is None:
            return None

        def f():
            rm(v / "uv")
            t1, _ = sh([uv, "venv", "-q", "--python", PY, str(v / "uv")])
            t2, _ = sh([uv, "pip", "install", "-q", "--offline", "--no-cache", "--no-deps", "--python", str(v / "uv" / "bin" / "python"),
                        *(["--compile-bytecode"] if compile_ else []), *map(str, real)])
            return t1 + t2
        return f

    def pip_run():
        rm(v / "pip")
        t1, _ = sh([PY, "-m", "venv", str(v / "pip")])
        t2, _ = sh([str(v / "pip" / "bin" / "pip"), "install", "-q", "--no-index", "--no-deps", *map(str, real)])
        return t1 + t2

    # warm-up: page cache, uv's interpreter cache
    ours(False)()
    if uv:
        uv_run(False)()
    log("staging vs uv / pip")
    s = paired(P["fast_reps"], [("ours", ours(False)), ("uv", uv_run(False)), ("ours+bytecode", ours(True)),
                                ("uv --compile-bytecode", uv_run(True)), ("pip", pip_run)])
    ext = lambda key: {  # noqa: E731
        "steps_ms": {k: med([d[k] for d in details[key]]) for k in ("probe_ms", "create_venv_ms", "install_wheels_ms", "compile_bytecode_ms", "process_wall_ms") if details[key][0].get(k) is not None},
        "files": details[key][0]["files"], "wheels": details[key][0]["wheels"], "compiled": details[key][0]["compiled"]}
    if uv:
        add_row("stage", "staging (venv + wheels, no bytecode) vs uv", desc, med(s["ours"]), med(s["uv"]),
                "create_venv + install_wheels", "uv venv + uv pip install --offline --no-cache --no-deps", 1.0,
                samples={"ours": s["ours"], "uv": s["uv"]}, extra={**ext("ours"), **(cpu_ratio("ours", "uv") or {})})
        add_row("stage", "staging with bytecode vs uv --compile-bytecode", desc, med(s["ours+bytecode"]), med(s["uv --compile-bytecode"]),
                "create_venv + install_wheels + compile_bytecode", "same + --compile-bytecode", 1.0,
                samples={"ours": s["ours+bytecode"], "uv": s["uv --compile-bytecode"]},
                extra={**ext("ours_bc"), **(cpu_ratio("ours+bytecode", "uv --compile-bytecode") or {})})
    else:
        add_row("stage", "staging (venv + wheels, no bytecode) vs uv", desc, skipped=uv_reason)
        add_row("stage", "staging with bytecode vs uv --compile-bytecode", desc, skipped=uv_reason)
    add_row("stage", "staging with bytecode vs python -m venv + pip install --no-index", desc, med(s["ours+bytecode"]), med(s["pip"]),
            "create_venv + install_wheels + compile_bytecode", f"python -m venv + pip {pip_version} install --no-index --no-deps",
            None, target_kind="report_ratio", samples={"ours": s["ours+bytecode"], "pip": s["pip"]},
            extra={"speedup": med(s["pip"]) / med(s["ours+bytecode"]), **(cpu_ratio("ours+bytecode", "pip") or {})})

    # The synthetic wheelhouse: throughput on large members.
    main = sorted((W / f"wheels-main-{SCALE}").glob("*.whl"))
    mdesc = f"{len(main)} synthetic wheels, {sum(w.stat().st_size for w in main) / 1e6:.0f} MB"
    details.clear()
    real = main
    if uv:
        log("staging the synthetic wheelhouse vs uv")
        s = paired(P["slow_reps"], [("ours", ours(False)), ("uv", uv_run(False))])
        add_row("stage", "staging a large wheelhouse (no bytecode) vs uv", mdesc, med(s["ours"]), med(s["uv"]),
                "create_venv + install_wheels", "uv venv + uv pip install --offline --no-cache --no-deps", 1.0,
                samples=s, extra={**ext("ours"), **(cpu_ratio("ours", "uv") or {})})
    else:
        add_row("stage", "staging a large wheelhouse (no bytecode) vs uv", mdesc, skipped=uv_reason)
    for d in ("ours", "uv", "pip"):
        rm(v / d)


def du_bytes(path):
    """Disk used under `path`, each hardlinked file counted once (du does that within one call)."""
    _, p = sh(["du", "-s", "-B1", str(path)])
    return int(p.stdout.split()[0])


def stage_steps_ms(record):
    """The staging part of an apply from its history record: store, venv, wheels, bytecode."""
    names = ("store_wheels", "create_venv", "install_wheels", "compile_bytecode")
    return sum(step_ms(record, n) or 0 for n in names)


def sec_store():
    """The site's store and delta bundles on the 1 GB synthetic wheelhouse, one of 40 wheels changed
    per release: delta size, staging a next release vs a cold stage, disk for 3 kept releases, and
    staging from the warm store vs uv from its warm cache with --link-mode hardlink."""
    main = W / f"wheels-main-{SCALE}"
    count = P["main_count"]
    changed = [7, 13]
    for n in changed:
        gen("wheels", W / f"wheels-alt{n}-{SCALE}", "--mb", P["main_mb"], "--count", count, "--prefix", "synth",
            "--seed", 100 + n, "--only", n)
    # Wheelhouses of three releases: A; B = A with synth007 changed; C = B with synth013 changed.
    houses = []
    for i, alts in enumerate(([], changed[:1], changed)):
        h = W / f"wheels-store-{'ABC'[i]}-{SCALE}"
        rm(h)
        h.mkdir(parents=True)
        for w in sorted(main.glob("*.whl")):
            n = int(w.name[len("synth"):len("synth") + 3])
            src = W / f"wheels-alt{n}-{SCALE}" / w.name if n in alts else w
            os.link(src, h / w.name)
        houses.append(h)
    specs = []
    for i, (fx, h) in enumerate(zip(("2.0.0", "3.0.0", "4.0.0"), houses)):
        spec = W / f"spec-store-{'ABC'[i]}"
        gen("spec", spec, "--fixture", FX / fx, "--no-hooks", "--wheels", h)
        specs.append(spec)
    full = [build_bundle(sp, W / f"out-store-{'ABC'[i]}") for i, sp in enumerate(specs)]
    deltas = []
    for i in (1, 2):
        out = W / f"out-store-{'ABC'[i]}-delta"
        rm(out)
        _, p = sh([BB, "build", str(specs[i] / "spec.yaml"), "--key", str(KEY), "--out", str(out), "--base", str(full[i - 1]), "--json"],
                  env=BUILD_ENV)
        deltas.append(Path(json.loads(p.stdout)["bundle"]))
    fs, ds = full[1].stat().st_size, deltas[0].stat().st_size
    wdesc = f"{count} synthetic wheels, {sum(w.stat().st_size for w in main.glob('*.whl')) / 1e6:.0f} MB; 1 wheel changed per release"
    add_row("store", "delta bundle size vs full bundle size", wdesc, ds, fs, "delta bundle bytes", "full bundle bytes", 0.05,
            unit="B", extra={"bytes_delta": ds, "bytes_full": fs})

    site = W / "site-store"
    cold, nxt, du1, du3 = [], [], [], []
    for r in range(P["slow_reps"]):
        rm(site)
        sh([BI, "apply", str(full[0]), "--root", str(site), "--trust", str(PUB), "--quiet", "--json", "--python", PY])
        du1.append(du_bytes(site))
        sh([BI, "apply", str(deltas[0]), "--root", str(site), "--quiet", "--json", "--python", PY])
        sh([BI, "apply", str(deltas[1]), "--root", str(site), "--quiet", "--json", "--python", PY])
        du3.append(du_bytes(site))
        applies = [h for h in history(site) if h.get("command") == "apply" and h.get("outcome") == "success"]
        cold.append(stage_steps_ms(applies[0]) / 1000)
        nxt.append(stage_steps_ms(applies[1]) / 1000)
        log(f"  rep {r + 1}: cold stage {cold[-1]:.3f}s, next {nxt[-1]:.3f}s, du {du1[-1] / 1e6:.0f} -> {du3[-1] / 1e6:.0f} MB")
    steps = {s["step"]: s.get("millis") for s in applies[1]["steps"]}
    add_row("store", "staging the next release (delta, store warm) vs a cold stage", wdesc, med(nxt), med(cold),
            "store_wheels + create_venv + install_wheels + compile_bytecode of the 2nd apply",
            "the same steps of the 1st apply (empty site)", 0.10, samples={"next": nxt, "cold": cold},
            extra={"next_apply_steps_ms": steps})
    add_row("store", "disk used by 3 kept releases vs 1 (du, hardlinks once)", wdesc, med(du3), med(du1), "du -s -B1 after 3 applies",
            "du -s -B1 after 1 apply", 1.1, unit="B", extra={"du_1": du1, "du_3": du3})

    uv, uv_reason, _, _ = tools()
    wheels = sorted(houses[0].glob("*.whl"))
    v = W / "venvs"
    v.mkdir(parents=True, exist_ok=True)
    store_site = W / "site-stage-store"
    cache = W / "uv-cache"

    def ours(compile_):
        def f():
            rm(v / "ours-store")
            _, p = sh([STAGE, "--python", PY, "--venv", str(v / "ours-store"), "--store", str(store_site),
                       *(["--compile"] if compile_ else []), *map(str, wheels)])
            return json.loads(p.stdout)["staging_ms"] / 1000
        return f

    def uv_run(compile_):
        def f():
            rm(v / "uv-link")
            t1, _ = sh([uv, "venv", "-q", "--python", PY, str(v / "uv-link")])
            t2, _ = sh([uv, "pip", "install", "-q", "--offline", "--no-deps", "--link-mode", "hardlink", "--cache-dir", str(cache),
                        "--python", str(v / "uv-link" / "bin" / "python"), *(["--compile-bytecode"] if compile_ else []),
                        *map(str, wheels)])
            return t1 + t2
        return f

    if uv is None:
        add_row("store", "staging from the warm store vs uv warm cache --link-mode hardlink", wdesc, skipped=uv_reason)
        return
    # Warm both: the store holds every entry (compiled), uv's cache every wheel.
    rm(store_site)
    store_site.mkdir(parents=True)
    rm(cache)
    ours(True)()
    uv_run(False)()
    log("staging from the warm store vs uv from its warm cache (hardlinks)")
    s = paired(P["fast_reps"], [("ours", ours(False)), ("uv", uv_run(False)), ("ours+bytecode", ours(True)),
                                ("uv --compile-bytecode", uv_run(True))])
    add_row("store", "staging from the warm store vs uv warm cache --link-mode hardlink", wdesc, med(s["ours"]), med(s["uv"]),
            "stage --store (check store, venv, link)", "uv venv + uv pip install --offline --link-mode hardlink (warm cache)", 1.0,
            samples={"ours": s["ours"], "uv": s["uv"]}, extra=cpu_ratio("ours", "uv"))
    add_row("store", "same with bytecode vs uv --compile-bytecode", wdesc, med(s["ours+bytecode"]), med(s["uv --compile-bytecode"]),
            "stage --store --compile (.pyc linked from the store)", "same + --compile-bytecode", 1.0,
            samples={"ours": s["ours+bytecode"], "uv": s["uv --compile-bytecode"]},
            extra=cpu_ratio("ours+bytecode", "uv --compile-bytecode"))
    for d in ("ours-store", "uv-link"):
        rm(v / d)
    rm(site)
    rm(store_site)


def sec_corpus():
    """A clean `apply` of the wheel corpus of scripts/corpus.sh (the whole command: verify, stage, venv,
    wheels, bytecode, swap, health check) against `uv venv` + `uv pip install --offline --no-cache
    --no-deps --compile-bytecode` of the same wheel files."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import corpus  # noqa: PLC0415

    name = "clean apply of the wheel corpus vs uv venv + uv pip install --compile-bytecode"
    why = corpus.interpreter_fits()
    have, missing = corpus.cached() if not why else ({}, [])
    if why or missing:
        add_row("corpus", name, "scripts/corpus-lock.txt", skipped=why or f"{len(missing)} corpus wheels not cached: run scripts/corpus.sh fetch")
        return
    uv, uv_reason, _, _ = tools()
    if uv is None:
        add_row("corpus", name, "scripts/corpus-lock.txt", skipped=uv_reason)
        return
    corpus.BIN = REL
    work = W / "corpus"
    bundle, pub, chosen, left_out = corpus.build_bundle(work, sorted(have.values()), "auto")
    wheels = sorted((work / "spec" / "wheelhouse").glob("*.whl"))
    mb = sum(w.stat().st_size for w in wheels) / 1e6
    desc = f"{len(wheels)} real wheels of scripts/corpus-lock.txt, {mb:.0f} MB" + (f" ({len(left_out)} left out: names over 100 bytes)" if left_out else "")
    site, venv = W / "site-corpus", W / "venvs" / "uv-corpus"
    steps = []

    def ours():
        rm(site)
        dt, _ = sh([BI, "apply", str(bundle), "--root", str(site), "--trust", str(pub), "--quiet", "--json", "--python", PY])
        steps.append({s["step"]: s.get("millis") for s in history(site)[-1]["steps"]})
        return dt

    def ref():
        rm(venv)
        t1, _ = sh([uv, "venv", "-q", "--python", PY, str(venv)])
        t2, _ = sh([uv, "pip", "install", "-q", "--offline", "--no-cache", "--no-deps", "--compile-bytecode",
                    "--python", str(venv / "bin" / "python"), *map(str, wheels)])
        return t1 + t2

    ours()  # warm-up: page cache, interpreter
    ref()
    log("corpus: clean apply vs uv")
    s = paired(P["slow_reps"], [("apply", ours), ("uv", ref)])
    keys = sorted({k for d in steps for k in d})
    add_row("corpus", name, desc, med(s["apply"]), med(s["uv"]), "bundle-install apply (whole command, clean site)",
            "uv venv + uv pip install --offline --no-cache --no-deps --compile-bytecode", 1.0, samples=s,
            extra={"apply_steps_ms": {k: med([d[k] for d in steps if d.get(k) is not None]) for k in keys},
                   "bundle_bytes": bundle.stat().st_size, **(cpu_ratio("apply", "uv") or {})})
    rm(site)
    rm(venv)


def history(site):
    _, p = sh([BI, "history", "--root", str(site), "--json"])
    return json.loads(p.stdout)["history"]


def step_ms(record, name):
    return next((s.get("millis") for s in record.get("steps", []) if s["step"] == name), None)


def sec_swap():
    log("swap and code-only rollback, release of many files")
    base = W / "spec-base"
    big = W / "spec-big"
    gen("spec", base, "--fixture", FX / "3.0.0", "--no-hooks")
    gen("spec", big, "--fixture", FX / "4.0.0", "--no-hooks", "--wheels", W / "wheels-many")
    b1 = build_bundle(base, W / "out-base")
    b2 = build_bundle(big, W / "out-big")
    site = W / "site-swap"
    rm(site)
    sh([BI, "apply", str(b1), "--root", str(site), "--trust", str(PUB), "--quiet", "--json", "--python", PY])
    t_apply, _ = sh([BI, "apply", str(b2), "--root", str(site), "--quiet", "--json", "--python", PY])
    nfiles = sum(len(f) + len(d) for _, d, f in os.walk(site / "releases" / "4.0.0"))
    rb_samples, rb_cpu = [], []
    for i in range(P["cycles"]):
        for args in (["rollback", "--root", str(site)], ["rollback", "--root", str(site), "--to", "4.0.0"]):
            # Each run starts in a new second, as in earlier runs of this benchmark, so figures stay
            # comparable (run ids carry milliseconds now, so history no longer needs the spacing).
            time.sleep(1.02 - time.time() % 1)
            c = cpu_children()
            dt, p = sh([BI, *args, "--quiet", "--json"])
            rb_cpu.append((cpu_children() - c) * 1000)
            r = json.loads(p.stdout)
            modes = {d["mode"] for d in r["rollback"]["databases"]}
            if modes - {"code_only"}:
                raise RuntimeError(f"rollback was not code-only: {r}")
            rb_samples.append(dt)
    hist = history(site)
    applies = [h for h in hist if h.get("command") == "apply" and h.get("outcome") == "success"]
    rollbacks = [h for h in hist if h.get("command") == "rollback" and h.get("outcome") == "success"]
    swaps = [step_ms(h, "swap") for h in rollbacks] + [step_ms(applies[-1], "swap")]
    swaps = [s for s in swaps if s is not None]
    steps_rb = {}
    for h in rollbacks:
        for s in h.get("steps", []):
            steps_rb.setdefault(s["step"], []).append(s.get("millis") or 0)
    desc = f"releases/4.0.0 holds {nfiles} files and directories (fixture + a 10,000-file wheel)"
    add_row("swap", "swap step (history millis), p50", desc, pctl(swaps, 0.5), None, "swap step", "", 10, target_kind="max",
            unit="ms", value=pctl(swaps, 0.5), samples={"swap_ms": swaps},
            extra={"p90": pctl(swaps, 0.9), "min": min(swaps), "runs": len(swaps), "files": nfiles})
    rb_ms = [x * 1000 for x in rb_samples]
    add_row("swap", "code-only rollback (whole command), p50", desc, pctl(rb_ms, 0.5), None, "bundle-install rollback wall time", "",
            50, target_kind="max", unit="ms", value=pctl(rb_ms, 0.5), samples={"rollback_ms": rb_ms},
            extra={"p90": pctl(rb_ms, 0.9), "min": min(rb_ms), "cpu_ms_p50": pctl(rb_cpu, 0.5), "runs": len(rb_ms),
                   "steps_ms_p50": {k: pctl(v, 0.5) for k, v in steps_rb.items()},
                   "apply_of_big_release_s": t_apply, "apply_steps_ms": {s["step"]: s.get("millis") for s in applies[-1]["steps"]}})
    rm(site)


def rss_of(cmd):
    _, p = sh(["/usr/bin/time", "-v", *cmd])
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    w = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", p.stderr)
    wall = None
    if w:
        parts = [float(x) for x in w.group(1).split(":")]
        wall = sum(x * 60 ** i for i, x in enumerate(reversed(parts)))
    return int(m.group(1)) / 1024, wall


def sec_rss():
    if not Path("/usr/bin/time").exists():
        for n in ("verify", "apply"):
            add_row("rss", f"peak RSS, {n}", "", skipped="/usr/bin/time is missing (apt-get install time)")
        return
    log("peak RSS: verify and apply of a small and a large bundle")
    gen("wheels", W / f"wheels-extra-{SCALE}", "--mb", P["extra_mb"], "--count", P["extra_count"], "--prefix", "extra", "--seed", 2)
    sub = W / f"wheels-rss-small-{SCALE}"
    rm(sub)
    sub.mkdir()
    for w in sorted((W / f"wheels-main-{SCALE}").glob("*.whl"))[: P["rss_small_wheels"]]:
        os.link(w, sub / w.name)
    small_spec = W / "spec-rss-small"
    big_spec = W / "spec-rss-big"
    gen("spec", small_spec, "--fixture", FX / "4.0.0", "--wheels", sub)
    gen("spec", big_spec, "--fixture", FX / "4.0.0", "--wheels", W / f"wheels-main-{SCALE}", "--wheels", W / f"wheels-extra-{SCALE}")
    res = {}
    for label, spec in (("small", small_spec), ("large", big_spec)):
        b = build_bundle(spec, W / f"out-rss-{label}")
        size = b.stat().st_size
        v_i = rss_of([BI, "verify", str(b), "--trust", str(PUB), "--quiet", "--json"])
        v_b = rss_of([BB, "verify", str(b), "--trust", str(PUB), "--json"])
        site = W / f"site-rss-{label}"
        rm(site)
        a = rss_of([BI, "apply", str(b), "--root", str(site), "--trust", str(PUB), "--quiet", "--json", "--python", PY])
        steps = {s["step"]: s.get("millis") for s in history(site)[-1]["steps"]}
        rm(site)
        rm(b.parent)
        res[label] = dict(bytes=size, verify_install=v_i, verify_build=v_b, apply=a, apply_steps_ms=steps)
        log(f"  {label} {size / 1e6:.0f} MB: verify {v_i[0]:.1f} MiB ({v_i[1]} s), bundle-build verify {v_b[0]:.1f} MiB, "
            f"apply {a[0]:.1f} MiB ({a[1]} s)")
    s, l = res["small"], res["large"]
    desc = f"{l['bytes'] / 1e6:.0f} MB bundle (vs {s['bytes'] / 1e6:.0f} MB)"
    for key, what in (("verify_install", "bundle-install verify"), ("verify_build", "bundle-build verify"), ("apply", "bundle-install apply (clean install)")):
        big_rss, small_rss = l[key][0], s[key][0]
        add_row("rss", f"peak RSS, {what}", desc, big_rss, small_rss, f"{l['bytes'] / 1e6:.0f} MB bundle",
                f"{s['bytes'] / 1e6:.0f} MB bundle", 64, target_kind="max", unit="MiB", value=big_rss,
                extra={"growth": big_rss / small_rss, "growth_target": 1.2,
                       "status_growth": "pass" if big_rss / small_rss <= 1.2 else "MISS",
                       "wall_s": {"large": l[key][1], "small": s[key][1]}})
        if rows[-1]["status"] == "pass" and rows[-1]["status_growth"] != "pass":
            rows[-1]["status"] = "MISS"
    rows[-1]["apply_steps_ms"] = {"large": l["apply_steps_ms"], "small": s["apply_steps_ms"]}


def sec_db():
    log(f"SQLite backup / restore of a {P['db_mb']} MB database vs cp")
    _, p = sh([DBBENCH, "--dir", str(W / "db"), "--mb", str(P["db_mb"]), "--reps", str(P["slow_reps"])], timeout=3600)
    r = json.loads(p.stdout)
    desc = f"{r['db_bytes'] / 1e6:.0f} MB SQLite database"
    for op in ("backup", "restore"):
        ours, ref, cp = med(r[f"{op}_ms"]) / 1000, med(r[f"{op}_cp_sync_ms"]) / 1000, med(r[f"{op}_cp_ms"]) / 1000
        add_row("db", f"SQLite {op} vs cp + fsync", desc, ours, ref, f"db::open(..).{op}()", "cp + fsync of the copy", 1.5,
                samples={"ours_ms": r[f"{op}_ms"], "cp_sync_ms": r[f"{op}_cp_sync_ms"], "cp_ms": r[f"{op}_cp_ms"]},
                extra={"ratio_vs_plain_cp": ours / cp, "plain_cp": cp})


def fill_client_db(path, mb):
    """Fills the fixture's client 1.0 `notes` table with about `mb` MB of notes of ~100 words each."""
    import random
    import sqlite3
    rnd = random.Random(7)
    words = ["ridge", "sensor", "battery", "cable", "wind", "north", "gauge", "reading", "checked", "replaced",
             "calibrated", "station", "mast", "logger", "snow", "ice", "rain", "signal", "ok", "low"]
    conn = sqlite3.connect(path)
    conn.execute("BEGIN")
    rows = int(mb * 1e6 / 780)
    batch = 10_000
    for start in range(0, rows, batch):
        conn.executemany("INSERT INTO notes (site, body, created) VALUES (?, ?, ?)",
                         (("ridge", " ".join(rnd.choices(words, k=110)), "2025-01-01T00:00:00Z")
                          for _ in range(min(batch, rows - start))))
    conn.execute("COMMIT")
    conn.close()
    return rows


def sec_rehearse():
    log(f"rehearse: prediction vs the real apply, fixture 1.0.0 -> 4.0.0 with a {P['db_mb']} MB client database")
    b1 = build_bundle(FX / "1.0.0", W / "out-rh-1")
    b4 = build_bundle(FX / "4.0.0", W / "out-rh-4")
    site = W / "site-rehearse"
    rm(site)
    sh([BI, "apply", str(b1), "--root", str(site), "--trust", str(PUB), "--quiet", "--json", "--python", PY])
    db = site / "data" / "client.db"
    nrows = fill_client_db(db, P["db_mb"])
    size = db.stat().st_size
    t_rh, p = sh([BI, "rehearse", str(b4), "--root", str(site), "--json", "--python", PY], timeout=7200)
    pred = json.loads(p.stdout)["rehearsal"]["prediction"]
    t_apply, _ = sh([BI, "apply", str(b4), "--root", str(site), "--quiet", "--json", "--python", PY], timeout=7200)
    rec = [h for h in history(site) if h.get("command") == "apply"][-1]
    steps = {s["step"]: s.get("millis") or 0 for s in rec["steps"]}
    real_down = sum(v for k, v in steps.items() if k in ("pre_apply", "backup", "swap", "post_apply", "health_check") or k.startswith("migrate:"))
    predicted = pred["apply_ms"] / 1000
    ratio = predicted / t_apply
    desc = f"{size / 1e6:.0f} MB client.db ({nrows} notes), fixture 1.0.0 -> 4.0.0"
    add_row("rehearse", "rehearse: predicted apply time vs the real apply", desc, predicted, t_apply,
            "rehearsal's prediction (apply_ms)", "bundle-install apply wall time", None, value=ratio,
            extra={"downtime_predicted_s": pred["downtime_ms"] / 1000, "downtime_real_s": real_down / 1000,
                   "downtime_ratio": pred["downtime_ms"] / max(real_down, 1), "rehearsal_wall_s": t_rh,
                   "prediction": pred, "apply_steps_ms": steps, "target_range": [0.5, 2.0]})
    rows[-1]["target"] = 2.0
    rows[-1]["target_kind"] = "ratio_range"
    ok = 0.5 <= ratio <= 2.0 and 0.5 <= rows[-1]["downtime_ratio"] <= 2.0
    rows[-1]["status"] = "pass" if ok else "MISS"
    log(f"ROW rehearse: predicted {predicted:.1f} s (downtime {pred['downtime_ms'] / 1000:.1f} s), real apply {t_apply:.1f} s "
        f"(downtime {real_down / 1000:.1f} s) -> {ratio:.2f} [{rows[-1]['status']}]")
    rm(site)


# ---------------------------------------------------------------------------------------------
# Report


def machine():
    def cmd_out(c):
        try:
            return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    cpu = cmd_out("lscpu | sed -n 's/^Model name: *//p' | head -1") or platform.processor()
    flags = cmd_out("grep -m1 '^flags' /proc/cpuinfo")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "sha_ni": " sha_ni" in flags,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "filesystem": cmd_out(f"df -T '{W}' | awk 'NR==2 {{print $2}}'"),
        "python": platform.python_version(),
        "rustc": cmd_out("rustc --version"),
        "sha256sum": cmd_out("sha256sum --version | head -1"),
        "gzip": cmd_out("gzip --version | head -1"),
        "git": cmd_out(f"git -C '{ROOT}' rev-parse --short HEAD") + (" (work tree modified)" if cmd_out(f"git -C '{ROOT}' status --porcelain --untracked-files=no") else ""),
    }


def write_results():
    m = machine()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data = {"date": date, "scale": SCALE, "machine": m, "loadavg_start": LOAD0, "loadavg_end": os.getloadavg(), "nice": os.nice(0), "wall_s": round(time.monotonic() - T0, 1), "notes": notes, "rows": rows}
    # A partial run (BENCH_ONLY) or a small one never overwrites the full results.
    suffix = ("" if SCALE == "full" else f".{SCALE}") + (f".only-{'-'.join(sorted(ONLY))}" if ONLY else "")
    (BENCH / f"results{suffix}.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        f"# Benchmark results ({SCALE} scale)",
        "",
        f"{date} · {m['cpu']}, {m['cores']} cores{' (SHA-NI)' if m['sha_ni'] else ''}, {m['memory_gib']} GiB, "
        f"{m['filesystem']}, Linux {m['kernel']} · Python {m['python']} · git {m['git']} · bench wall time {data['wall_s']:.0f} s",
        "",
        "Medians of paired, alternating runs (ours, reference, ours, …); ratio = ours / reference of wall time, "
        "with the same ratio of CPU time (user + sys of every process started) in parentheses: the machine may be "
        f"shared (load average {LOAD0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), which inflates wall "
        "times but much less CPU times. Produced by `scripts/bench.sh`" + (" with `BENCH_SCALE=small`" if SCALE == "small" else "") + ".",
        "",
        "| comparison | input | ours | reference | result | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    esc = lambda t: str(t).replace("|", "\\|")  # noqa: E731
    for r in rows:
        r = {k: (esc(v) if k in ("name", "input", "reason") else v) for k, v in r.items()}
        if r["status"] == "skipped":
            lines.append(f"| {r['name']} | {r['input']} | — | — | skipped: {r['reason']} | {r.get('target') or ''} | skipped |")
            continue
        unit = r["unit"]
        if unit == "B":
            ours, ref = f"{r['ours'] / 1e6:.1f} MB", f"{r['ref'] / 1e6:.1f} MB"
            result, target = f"{r['value']:.4f}×", f"≤ {r['target']}×"
        elif r["target_kind"] == "ratio_max":
            ours, ref = fmt(r["ours"], unit), fmt(r["ref"], unit)
            result, target = f"{r['value']:.3f}", f"≤ {r['target']}"
            if r.get("cpu_ratio") is not None:
                result += f" (CPU time {r['cpu_ratio']:.3f})"
        elif r["target_kind"] == "ratio_range":
            ours, ref = fmt(r["ours"], unit), fmt(r["ref"], unit)
            result = f"{r['value']:.2f} (downtime: predicted {r['downtime_predicted_s']:.1f} s, real {r['downtime_real_s']:.1f} s)"
            target = "within 2× both ways"
        elif r["target_kind"] == "report_ratio":
            ours, ref = fmt(r["ours"], unit), fmt(r["ref"], unit)
            result, target = f"{r['value']:.3f} ({r['speedup']:.1f}× faster)", "report"
        elif r["section"] == "rss":
            ours, ref = fmt(r["ours"], unit), fmt(r["ref"], unit)
            result = f"{r['value']:.1f} MiB, {r['growth']:.2f}× the small bundle's"
            target = f"≤ {r['target']} MiB, ≤ 1.2×"
        else:
            ours, ref = fmt(r["ours"], unit), "—"
            result = f"p50 {r['value']:.1f} ms (p90 {r['p90']:.1f}, min {r['min']:.1f}, n={r['runs']})"
            if r.get("cpu_ms_p50") is not None:
                result += f"; CPU p50 {r['cpu_ms_p50']:.1f} ms"
            target = f"p50 ≤ {r['target']} ms"
        lines.append(f"| {r['name']} | {r['input']} | {ours} | {ref} | {result} | {target} | {r['status']} |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    (BENCH / f"results{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    global FX, KEY, PUB
    for tool in (BB, BI, STAGE, DBBENCH):
        if not Path(tool).exists():
            sys.exit(f"{tool} is missing: run `cargo build --release` first (scripts/bench.sh does)")
    FX, KEY, PUB = inputs()
    sections = [("build", sec_build_and_verify), ("verify", None), ("stage", sec_stage), ("swap", sec_swap),
                ("rss", sec_rss), ("db", sec_db), ("rehearse", sec_rehearse), ("store", sec_store),
                ("corpus", sec_corpus)]
    for name, fn in sections:
        if fn is None:
            continue
        if ONLY and name not in ONLY and not (name == "build" and "verify" in ONLY):
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            log(f"section {name} FAILED: {e}")
            notes.append(f"section {name} failed: {str(e).splitlines()[0][:300]}")
            rows.append({"section": name, "name": f"{name} (failed)", "input": "", "status": "skipped",
                         "reason": f"failed: {str(e).splitlines()[0][:200]}", "unit": "s", "target_kind": "none"})
        write_results()
    log("done")


if __name__ == "__main__":
    main()
