//! The integration tests of `bundle-core`, gathered in one test binary (one link, one process):
//! each module is one area, run alone with `cargo test -p bundle-core --test it <module>::`.
//!
//! * [`minisign_interop`]: signatures and key files against the real `minisign`;
//! * [`prop_archive`]: property tests of the streaming verifier on random and damaged archives.

// Test code: an unwrap that fails is a failed test (with the value in its message), and the
// shared helpers are `pub` for the sibling modules of this one test crate.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod minisign_interop;
mod prop_archive;
