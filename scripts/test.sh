#!/usr/bin/env bash
# Runs every test of the workspace. Integration tests drive the real binaries, so they are built
# first. Tests needing PostgreSQL or MariaDB read BUNDLE_TEST_PG / BUNDLE_TEST_MYSQL and skip (with a
# printed reason) when unset; .ci/run sets them.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "test.sh: python3 is needed (fixtures are real wheels and venvs)" >&2; exit 2; }
command -v minisign >/dev/null || echo "test.sh: minisign not found: interop tests will be skipped (install the Debian package minisign)" >&2
cargo build --workspace --quiet
cargo test --workspace --quiet --no-fail-fast "$@"
