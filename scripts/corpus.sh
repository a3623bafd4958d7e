#!/usr/bin/env bash
# Fidelity of bundle-install against pip on a pinned corpus of real PyPI wheels (scripts/corpus-lock.txt):
#
#   scripts/corpus.sh fetch     # download the pinned wheels (~220 MB) into ~/.cache/bundle-corpus/wheels
#   scripts/corpus.sh run       # bundle, apply, pip-install the same wheels, compare; exit 1 on a difference
#   scripts/corpus.sh have      # exit 0 iff the cache is complete (the integration test's check)
#   scripts/corpus.sh probe     # exit 0 iff the package index answers
#
# Needs python3 3.11 on Linux x86_64 (the lock's target) with pip, and the release build of the tools
# (built here unless CORPUS_BIN_DIR names other ones). The driver is scripts/corpus.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = run ] && [ -z "${CORPUS_BIN_DIR:-}" ]; then
    cargo build --release --quiet --bin bundle-build --bin bundle-install
fi
exec python3 scripts/corpus.py "$@"
