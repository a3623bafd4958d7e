//! `bundle-install`: verifies a bundle, plans the upgrade from what the site has, stages the new
//! release side by side, migrates the databases and the config, swaps atomically, and can finish or
//! undo an interrupted run. The command line lives in `main.rs`; this library holds the logic and
//! never prints: it reports through [`Reporter`] and returns typed errors.
//!
//! The folders follow the architecture:
//! - `site/`: the layout under `--root`, its lock, trusted keys, state, history, prune and status;
//! - `transaction/`: plan, apply, rollback, recover and rehearse, all driven through the on-disk
//!   journal, plus the backups, hooks and delta bundles they use;
//! - `python/`: interpreter and venvs, wheel selection, the wheel installer and the wheel store;
//! - `db/`: the databases behind one engine trait (SQLite, PostgreSQL, MariaDB/MySQL);
//! - `config.rs`: config conversion; `fs/`: durable writes and link-safe paths; `child.rs`: child
//!   processes that die with the installer.
//!
//! Reading order for a newcomer: `site`, `transaction/journal` (the state machine every change goes
//! through), `transaction/plan` then `apply`, `rollback`, `recover`.

mod child;
mod config;
pub mod db;
mod error;
mod fs;
pub mod python;
mod report;
mod site;
mod transaction;

pub use error::{InstallError, Result};
pub use report::Reporter;
pub use site::lock::{LockError, SiteLock};
pub use site::{history, status, trust, Site};
pub use transaction::apply::{apply, plan_only, rotations_for, ApplyOptions};
pub use transaction::hooks::DEFAULT_TIMEOUT_SECS as DEFAULT_HOOK_TIMEOUT_SECS;
pub use transaction::plan::{PlanOptions, MAX_SEQUENCE_JUMP};
pub use transaction::recover::{recover, Recovered};
pub use transaction::rehearse::rehearse;
pub use transaction::rollback::{rollback, RollbackOptions};
