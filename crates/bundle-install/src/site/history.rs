//! `state/history.jsonl`: one JSON record per finished run (apply, rollback, recover) or rehearsal, appended and
//! fsynced. The evidence an auditor asks for: which bundle, which key, what ran and how it ended.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use serde_json::{json, Value};

use crate::error::{InstallError, Result};
use crate::site::Site;
use crate::transaction::journal::Journal;

fn append(site: &Site, record: &Value) -> Result<()> {
    let path = site.history();
    // A commit redone by `recover` must not record the run twice.
    if let Some(id) = record.get("id").and_then(Value::as_str) {
        if read(site)?
            .iter()
            .any(|r| r.get("id").and_then(Value::as_str) == Some(id) && r.get("outcome") == record.get("outcome"))
        {
            return Ok(());
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| InstallError::io(path.display(), e))?;
    let mut line = serde_json::to_vec(record).expect("serialises");
    line.push(b'\n');
    f.write_all(&line).and_then(|_| f.sync_all()).map_err(|e| InstallError::io(path.display(), e))
}

/// Records a successful run; `base` carries the run's own fields, the journal's step timings are added.
pub fn append_success(site: &Site, base: &Value) -> Result<()> {
    let mut record = base.clone();
    record["outcome"] = json!("success");
    record["finished_at"] = json!(bundle_core::time::now_rfc3339());
    if let Ok(Some(j)) = Journal::load(site) {
        record["started_at"] = json!(j.started_at);
        record["steps"] = steps(&j);
    }
    append(site, &record)
}

/// Records a run that failed and was undone (or needs attention). Best effort: the failure itself is
/// what the admin must see, so a history write error is not allowed to mask it.
pub fn append_failure(site: &Site, journal: &Journal, err: &InstallError) {
    let record = json!({
        "id": journal.id,
        "command": journal.command,
        "from": journal.from,
        "to": journal.to,
        "started_at": journal.started_at,
        "finished_at": bundle_core::time::now_rfc3339(),
        "outcome": if err.outcome == crate::error::Outcome::Attention { "needs_attention" } else { "rolled_back" },
        "error": { "kind": err.kind, "message": err.message },
        "steps": steps(journal),
    });
    let _ = append(site, &record);
}

/// Records a rehearsal (`command: "rehearse"`, its own outcome): evidence that the release was
/// tried on the site's data before it went in. `history` lists these apart from the runs.
pub fn append_rehearsal(site: &Site, record: &Value) -> Result<()> {
    append(site, record)
}

/// Whether a record is a rehearsal's rather than a run's.
pub fn is_rehearsal(record: &Value) -> bool {
    record.get("command").and_then(Value::as_str) == Some("rehearse")
}

fn steps(j: &Journal) -> Value {
    Value::Array(
        j.steps.iter().map(|s| json!({ "step": s.action.name(), "status": s.status, "millis": s.millis })).collect(),
    )
}

/// Every record, oldest first.
pub fn read(site: &Site) -> Result<Vec<Value>> {
    let path = site.history();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(InstallError::io(path.display(), e)),
    };
    // A torn last line (power loss mid-append) is skipped rather than failing every later command.
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
