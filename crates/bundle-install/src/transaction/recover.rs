//! `recover`: finishes or undoes an interrupted run from its journal. Every other command calls it
//! first. A run that reached its `commit` step is completed; any other is undone step by step.

use serde::Serialize;

use crate::error::{InstallError, Result};
use crate::fs::durable;
use crate::report::Reporter;
use crate::site::Site;
use crate::transaction::journal::{Action, Journal, Phase, Runner, Status};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "recovered", rename_all = "snake_case")]
pub enum Recovered {
    /// No interrupted run.
    Nothing,
    /// The run had passed its point of no return and was finished.
    Completed { id: String, command: String, version: String },
    /// The run was undone; the site is back on `version` (none: empty site).
    Undone { id: String, command: String, version: Option<String> },
}

pub fn recover(site: &Site, reporter: &dyn Reporter) -> Result<Recovered> {
    // A killed rehearsal's copies never touched the live site: they just go.
    crate::transaction::rehearse::clean_leftovers(site, reporter);
    let Some(journal) = Journal::load(site)? else {
        clean_staging(site);
        return Ok(Recovered::Nothing);
    };
    let id = journal.id.clone();
    let command = journal.command.clone();
    if journal.committed() {
        reporter.step(&format!("finishing interrupted {command} {id} (it had passed its point of no return)"));
        let mut runner = Runner::resume(site, journal, reporter);
        runner.journal.phase = Phase::Completing;
        for i in 0..runner.journal.steps.len() {
            if runner.journal.steps[i].status == Status::Done {
                continue;
            }
            if let Action::Commit { history, keep_releases, protect } = runner.journal.steps[i].action.clone() {
                runner
                    .run(i, |_| crate::transaction::apply::commit(site, &history, keep_releases, &protect, reporter))
                    .map_err(|e| attention(site, &e))?;
            }
        }
        let to = runner.journal.to.clone();
        runner.finish()?;
        clean_staging(site);
        return Ok(Recovered::Completed { id, command, version: to });
    }
    reporter.step(&format!("undoing interrupted {command} {id}"));
    let _db_locks = crate::transaction::journal::lock_dbs(site, &journal).map_err(|e| attention(site, &e))?;
    let mut runner = Runner::resume(site, journal, reporter);
    runner.journal.error.get_or_insert_with(|| "interrupted (killed or power lost)".into());
    runner.undo_all().map_err(|e| attention(site, &e))?;
    crate::site::history::append_failure(
        site,
        &runner.journal,
        &InstallError::failed("interrupted", "interrupted; undone by recover"),
    );
    clean_staging(site);
    Ok(Recovered::Undone { id, command, version: runner.journal.from.clone() })
}

fn attention(site: &Site, e: &InstallError) -> InstallError {
    if e.outcome == crate::error::Outcome::Attention {
        return InstallError {
            outcome: e.outcome,
            kind: e.kind.clone(),
            message: e.message.clone(),
            hint: e.hint.clone(),
        };
    }
    InstallError::attention("recover_failed", format!("could not recover the interrupted run: {}", e.message))
        .with_hint(format!(
            "fix the cause and run `bundle-install recover --root {}` again; see bundle-spec/recovery.md",
            site.root.display()
        ))
}

/// Leftovers of a verification that never reached its journal, and store work of no run.
fn clean_staging(site: &Site) {
    let _ = crate::python::store::remove_work(site, None);
    if let Ok(entries) = std::fs::read_dir(site.staging()) {
        for e in entries.flatten() {
            let _ = durable::remove_tree(&e.path());
        }
    }
}
