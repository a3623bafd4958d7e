#!/usr/bin/env bash
# The gate .ci/run passes before the tests: formatting (rustfmt.toml), clippy with every warning an
# error ([workspace.lints] in Cargo.toml, clippy.toml), and the dependency audit of deny.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

if ! command -v cargo-deny >/dev/null; then
    echo "lint: installing cargo-deny (once per machine)"
    cargo install cargo-deny --locked --version 0.20.2 --quiet
fi
cargo deny --offline --log-level error check licenses bans sources
# The RustSec database is a git clone (deny.toml, db-path); without one, say so rather than pass quietly.
if compgen -G "$HOME/.cargo/advisory-dbs/*" >/dev/null; then
    cargo deny --offline --log-level error check advisories
else
    echo "lint: advisories NOT checked: no RustSec database under ~/.cargo/advisory-dbs (see deny.toml)"
fi
echo "lint: ok"
