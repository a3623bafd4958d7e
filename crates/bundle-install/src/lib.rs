//! `bundle-install`: verifies a bundle, plans the upgrade from what the site has, stages the new
//! release side by side, migrates the databases and the config, swaps atomically, and can finish or
//! undo an interrupted run. The command line lives in `main.rs`; this library holds the logic and
//! never prints: it reports through [`report::Reporter`] and returns typed errors.
//!
//! Reading order for a newcomer: `site` (the layout), `journal` (the state machine every change goes
//! through), `plan` then `apply`, `rollback`, `recover`; `db`, `python`, `wheel` and `config` are
//! the parts the steps call.

pub mod apply;
pub mod backup;
pub mod beneath;
pub mod child;
pub mod config;
pub mod db;
pub mod error;
pub mod fsutil;
pub mod history;
pub mod hooks;
pub mod journal;
pub mod lock;
pub mod plan;
pub mod prune;
pub mod python;
pub mod recover;
pub mod rehearse;
pub mod report;
pub mod rollback;
pub mod select;
pub mod site;
pub mod state;
pub mod status;
pub use bundle_core::time;
pub mod trust;
pub mod wheel;
