//! The integration tests of `bundle-install`, gathered in one test binary (one link, one process):
//! each module is one area, run alone with `cargo test -p bundle-install --test it <module>::`
//! (e.g. `crash::`, `db_postgres::`). Tests of different modules run side by side in one process, so
//! none may change process-wide state (environment, working directory, umask): children get theirs
//! through `Command`.
//!
//! * [`common`]: the fixture bundles, sites and checks the end-to-end modules share;
//! * [`apply_e2e`], [`rollback_e2e`], [`baseline`]: `apply`/`plan`, `rollback`/`check`, `--baseline`;
//! * [`bytecode`]: compiled `.pyc` files of installed wheels;
//! * [`corpus`]: real PyPI wheels compared with pip's install (skipped until the cache is filled);
//! * [`crash`], [`faults`]: every journal step failed or killed; the site is exactly old or new;
//! * [`db_sqlite`], [`db_postgres`], [`db_mysql`], [`multinode_pg`]: the database engines;
//! * [`delta`], [`store`]: delta bundles and the site's store;
//! * [`field`]: split bundles, terminal progress, `--json` for every command;
//! * [`hostile`]: the bad-archive catalogue and hostile sites;
//! * [`rehearse`]: `rehearse` and its predictions;
//! * [`rotation`]: key rotation across releases;
//! * [`wheel_install`], [`wheel_select`]: venvs and wheels with the real `python3`.

// Test code: an unwrap that fails is a failed test (with the value in its message), and the
// shared helpers are `pub` for the sibling modules of this one test crate.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

mod apply_e2e;
mod baseline;
mod bytecode;
mod corpus;
mod crash;
mod db_mysql;
mod db_postgres;
mod db_sqlite;
mod delta;
mod faults;
mod field;
mod hostile;
mod multinode_pg;
mod rehearse;
mod rollback_e2e;
mod rotation;
mod store;
mod wheel_install;
mod wheel_select;
