//! Dev-only helpers shared by the integration tests of every crate in the workspace.
//!
//! * [`fixture_specs`]: the fieldlog fixture built once per test process by `fixtures/build.py`,
//!   one spec directory per release (`1.0.0/ … 4.0.0/`, each with `spec.yaml`); [`copy_spec`] copies
//!   one so a test may break it.
//! * [`bin`] / [`tool`]: the workspace's binaries. `env!("CARGO_BIN_EXE_…")` only works inside the
//!   binary's own crate, so the path is computed from the test executable (`target/<profile>/<name>`).
//!   Cargo builds a crate's binaries before running *its* integration tests, and `cargo test
//!   --workspace` builds every binary before running any test; `cargo test -p other-crate` does not
//!   build `bundle-build`, so run `cargo build` first there. [`bin`] panics saying so when missing.
//! * [`run`] / [`Run`]: run a command with a timeout, capture stdout, stderr and exit code, read the
//!   `--json` object, check the one-line human error format.
//! * [`KeyPair`]: a key pair from `bundle-build keygen --out` ([`KeyPair::keygen`]) or written in
//!   process ([`KeyPair::write`], no binary needed); [`legacy_ed_signature`] forges the refused legacy
//!   `Ed` format.
//! * [`Parts`] and [`CraftedBundle`]: take a real bundle apart (or make a small synthetic one), re-sign
//!   its manifest, and write hostile archives with arbitrary raw headers ([`Hdr`]) and gzip damage
//!   (truncation, trailing bytes, a second member, a broken CRC, flipped bytes, no end-of-archive).
//! * [`snapshot`]: every node of a tree with its kind and sha256, for "nothing changed" assertions.
//! * [`catalogue`]: the bad-archive catalogue shared by `bundle-build verify` and `bundle-install`
//!   (`verify`, `apply`) tests, one `#[test]` per case through [`hostile_cases!`];
//!   [`many_empty_entries`] makes a bundle flooded with a million empty entries cheaply.
//! * [`copy_site`], [`site_python`], [`snapshot_ignoring_lock`], [`make_sentinel`]: installed sites
//!   for `bundle-install` tests.
//! * [`Wheel`]: small real wheels with chosen tags, METADATA and files (written by python3 zipfile).

// Test code: an unwrap that fails is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

pub mod catalogue;
mod craft;
mod fixtures;
mod keys;
mod many;
mod run;
mod sites;
mod snapshot;
mod wheels;

pub use craft::{gunzip, gzip, CraftedBundle, Hdr, PartFile, Parts};
pub use fixtures::{
    bin, build_fixture_bundle, copy_dir, copy_spec, fixture_specs, process_dir, scratch_dir, workspace_root,
    write_wheel,
};
pub use keys::{legacy_ed_signature, seed_of, test_secret_key, KeyPair};
pub use many::many_empty_entries;
pub use run::{run, run_timeout, tool, Run, DEFAULT_TIMEOUT};
pub use sites::{copy_site, make_sentinel, site_python, snapshot_ignoring_lock};
pub use snapshot::{diff_snapshots, snapshot, NodeKind, Snapshot};
pub use wheels::Wheel;
