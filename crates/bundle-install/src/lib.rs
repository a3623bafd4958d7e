//! `bundle-install`: verifies a bundle, plans the upgrade from what the site has, stages the new
//! release side by side, migrates the databases and the config, swaps atomically, and can finish or undo
//! an interrupted run.

pub mod config;
pub mod db;
pub mod python;
pub mod wheel;
