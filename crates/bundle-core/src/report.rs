//! The shape of command results for `--json` and for one-line human errors. Building the values lives
//! here so both tools report the same way; printing stays in the binaries.

use serde_json::{json, Map, Value};

use crate::exit::Exit;
use crate::verify::VerifiedBundle;

/// A failed command: exit status, stable kind, one-line message and the next action.
#[derive(Debug, Clone)]
pub struct Failure {
    pub exit: Exit,
    pub kind: String,
    pub message: String,
    pub hint: Option<String>,
    /// Extra fields for the `--json` object (e.g. every lint of a failed check).
    pub details: Option<Value>,
}

impl Failure {
    pub fn new(exit: Exit, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { exit, kind: kind.into(), message: message.into(), hint: None, details: None }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The `--json` object: `ok`, `command`, the command's own fields, and `error` on failure.
pub fn envelope(command: &str, result: &Result<Value, Failure>) -> Value {
    let mut obj = Map::new();
    obj.insert("ok".into(), Value::Bool(result.is_ok()));
    obj.insert("command".into(), Value::String(command.into()));
    match result {
        Ok(Value::Object(fields)) => obj.extend(fields.clone()),
        Ok(Value::Null) => {}
        Ok(other) => {
            obj.insert("result".into(), other.clone());
        }
        Err(f) => {
            let mut err = json!({ "kind": f.kind, "message": f.message, "exit_code": f.exit.code() });
            if let Some(h) = &f.hint {
                err["hint"] = Value::String(h.clone());
            }
            obj.insert("error".into(), err);
            if let Some(Value::Object(extra)) = &f.details {
                obj.extend(extra.clone());
            }
        }
    }
    Value::Object(obj)
}

/// What a successful verification established, as `--json` fields.
pub fn verified_fields(bundle: &VerifiedBundle) -> Value {
    let m = bundle.manifest();
    json!({
        "app": m.app,
        "version": m.version,
        "sequence": m.sequence,
        "upgrades_from": m.upgrades_from,
        "key_id": bundle.key_id().to_string(),
        "manifest_sha256": bundle.id(),
        "entries": m.payload.entries,
        "payload_bytes": m.payload.bytes,
        "bundle_bytes": bundle.compressed_bytes(),
        "bundle_sha256": bundle.bundle_sha256(),
        "parts": bundle.parts(),
    })
}
