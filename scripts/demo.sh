#!/usr/bin/env bash
# The main job end to end on the fixture app: build the tools, make a key, build and verify a bundle
# for every fixture release, then install the oldest release on a fresh site, upgrade it across the
# gap to the newest with one bundle (configs converted, both databases migrated, data carried over),
# show status, roll back within a major (data kept) and see a rollback across a major refused.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${DEMO_DIR:-$(mktemp -d /tmp/bundle-demo.XXXXXX)}"
mkdir -p "$work"
say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }

say "building the tools (release)"
cargo build --release --quiet --bin bundle-build --bin bundle-install
bb=target/release/bundle-build
bi=target/release/bundle-install

say "fixture releases → spec directories"
python3 fixtures/build.py "$work/specs"

say "release engineer: key pair, check and build one bundle per release"
rm -f "$work/release.key" "$work/release.pub"
$bb keygen --unencrypted --out "$work/release"   # a demo key in clear; real keys: encrypted (the default)
prev=""
for v in 1.0.0 2.0.0 3.0.0 4.0.0; do
    if [ -n "$prev" ]; then
        $bb check "$work/specs/$v/spec.yaml" --previous "$work/bundles/fieldlog-$prev.bundle.tar.gz"
    else
        $bb check "$work/specs/$v/spec.yaml"
    fi
    SOURCE_DATE_EPOCH=1767225600 $bb build "$work/specs/$v/spec.yaml" --key "$work/release.key" --out "$work/bundles"
    prev=$v
done

say "CI: verify every bundle, list one with GNU tar"
for b in "$work"/bundles/*.bundle.tar.gz; do
    $bb verify "$b" --trust "$work/release.pub" --json
done
tar -tzf "$work/bundles/fieldlog-4.0.0.bundle.tar.gz" | sed -n 1,4p   # sed reads to the end: head would leave tar a SIGPIPE under pipefail

site="$work/site"
rm -rf "$site"
app="$site/current/venv/bin/fieldlog"
say "field admin: clean install of 1.0.0"
$bi apply "$work/bundles/fieldlog-1.0.0.bundle.tar.gz" --root "$site" --trust "$work/release.pub"
$app version
$app add-note "pump 3 replaced"
$app add-note "calibrated sensor 7"
$app show

say "plan: 1.0.0 → 4.0.0 in one bundle"
$bi plan "$work/bundles/fieldlog-4.0.0.bundle.tar.gz" --root "$site"

say "apply 4.0.0 across the gap (1→2→3→4)"
$bi apply "$work/bundles/fieldlog-4.0.0.bundle.tar.gz" --root "$site"
$app version
$app show
$site/current/venv/bin/fieldkit
$bi status --root "$site"
$bi check --root "$site"

say "rollback to 1.0.0 crosses a major schema change: refused without --restore-data"
if $bi rollback --root "$site" --to 1.0.0; then echo "unexpected: rollback succeeded" >&2; exit 1; fi

say "second site: 3.0.0 → 4.0.0, then a minor rollback that keeps data written after the upgrade"
site2="$work/site2"
rm -rf "$site2"
$bi apply "$work/bundles/fieldlog-3.0.0.bundle.tar.gz" --root "$site2" --trust "$work/release.pub" --quiet
$bi apply "$work/bundles/fieldlog-4.0.0.bundle.tar.gz" --root "$site2" --quiet
"$site2/current/venv/bin/fieldlog" add-note "written on 4.0.0"
$bi rollback --root "$site2"
"$site2/current/venv/bin/fieldlog" version
"$site2/current/venv/bin/fieldlog" show
$bi history --root "$site2"

say "done; everything is under $work"
