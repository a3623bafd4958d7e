#!/usr/bin/env bash
# Benchmarks against sha256sum, tar | gzip -6, uv and pip, the swap and rollback, peak memory, the
# SQLite backup and the rehearsal's prediction against the real apply: builds the tools (release),
# generates every input under bench/work/ (git-ignored), runs each comparison as alternating pairs
# and writes medians and ratios to bench/results.json and bench/results.md. The driver is bench/bench.py; inputs come from bench/make_inputs.py.
#
#   scripts/bench.sh                      # full scale: 1 GB wheelhouse, 2 GB bundle, 1 GB database (~4 min quiet, 10+ busy)
#   BENCH_SCALE=small scripts/bench.sh    # ~100 MB inputs, a few minutes; writes bench/results.small.*
#   BENCH_ONLY=verify,stage scripts/bench.sh   # some sections only: build, verify, stage, swap, rss, db, rehearse, store, corpus
#   (corpus: a clean apply of the wheel corpus of scripts/corpus.sh vs uv; skipped until `scripts/corpus.sh fetch`)
#   BENCH_NICE=-10 scripts/bench.sh       # on a shared machine (root): see below
#
# Needs: cargo, python3 (>= 3.9, with venv), sha256sum, tar, gzip, /usr/bin/time (Debian package
# `time`; the memory rows are skipped without it). uv is installed into bench/work/tools/ from the
# package index and real wheels are fetched with `pip download`; without the index those rows are
# skipped or use synthetic wheels, and the report says so.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo python3 sha256sum tar gzip; do
    command -v "$tool" >/dev/null || { echo "bench.sh: $tool is required" >&2; exit 2; }
done
if [ ! -x /usr/bin/time ]; then
    echo "bench.sh: /usr/bin/time is missing; trying apt-get install time (memory rows are skipped without it)" >&2
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq time >/dev/null 2>&1; } || true
    fi
fi

echo "bench.sh: cargo build --release" >&2
cargo build --release --quiet -p bundle-build -p bundle-install -p bench-tools

# BENCH_NICE=-10 (root only) gives the benchmark's processes, ours and the references alike, a larger
# share of a machine that other work is using; the report records the nice value and load averages.
exec nice -n "${BENCH_NICE:-0}" python3 bench/bench.py "$@"
