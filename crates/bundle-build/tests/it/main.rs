//! The integration tests of `bundle-build`, gathered in one test binary (one link, one process):
//! each module is one area, run alone with `cargo test -p bundle-build --test it <module>::`.
//! Fixture files stay in `tests/data/`, found through `CARGO_MANIFEST_DIR`.
//!
//! * [`build_cli`]: keygen/build/check/inspect end to end on the fixture releases;
//! * [`keys_cli`]: encrypted keys, their passwords, and the real `minisign`;
//! * [`long_names`]: file names longer than ustar holds;
//! * [`rotate_cli`]: `rotate` statements;
//! * [`sbom`]: the SBOM against the vendored CycloneDX 1.5 schema;
//! * [`sign_apart`]: `build --unsigned` + `sign`;
//! * [`verify_rejects`]: the bad-archive catalogue through `bundle-build verify`;
//! * [`wheel_rules`]: the wheel-set rules with small real wheels.

// Test code: an unwrap that fails is a failed test (with the value in its message), and the
// shared helpers are `pub` for the sibling modules of this one test crate.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod build_cli;
mod keys_cli;
mod long_names;
mod rotate_cli;
mod sbom;
mod sign_apart;
mod verify_rejects;
mod wheel_rules;
