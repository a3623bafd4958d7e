//! The install transaction: `plan` reads what the site has and what the bundle brings and decides the
//! steps; `apply` stages the release, takes the `backup`, migrates and swaps, writing each step to
//! the on-disk `journal` before it changes anything; `rollback` goes back to a kept release and
//! `recover` finishes or undoes a run that was interrupted (even by kill -9). `rehearse` runs the
//! same steps on a copy of the site's data; `hooks` runs the bundle's scripts; `delta` fills in the
//! files a delta bundle leaves out.

pub(crate) mod apply;
pub(crate) mod backup;
pub(crate) mod delta;
pub(crate) mod hooks;
pub(crate) mod journal;
pub(crate) mod plan;
pub(crate) mod recover;
pub(crate) mod rehearse;
pub(crate) mod rollback;
