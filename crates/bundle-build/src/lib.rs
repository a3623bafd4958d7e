//! `bundle-build`: turns a release spec into one signed, cumulative, reproducible bundle, and checks
//! specs and bundles for CI. The command line lives in `main.rs`; this library holds the logic.

pub mod build;
pub mod check;
pub mod lint_sql;
pub mod lock;
pub mod password;
pub mod release;
pub mod sbom;
pub mod sign;
pub mod spec;
pub mod wheels;
