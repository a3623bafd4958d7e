//! Key rotation statements: "key NEW replaces (or joins) key OLD for app APP", signed by OLD (which
//! authorises it) and by NEW (which shows its holder agreed). A release carries every statement ever
//! released in its manifest (`key_rotations`), cumulative like its migrations, so a site that
//! skipped releases catches up in one apply. A statement is checked on its own signatures, not the
//! bundle's: a site that trusts OLD can therefore accept NEW before checking a bundle NEW signed.
//!
//! Statement text (the exact bytes signed, minisign prehashed `ED` signatures, see
//! `bundle-spec/signatures.md#key-rotation`):
//! ```text
//! format: 1
//! app: fieldlog
//! action: replace
//! old: RWQ…   (base64 public key line, as in a .pub file)
//! new: RWQ…
//! ```

use serde::{Deserialize, Serialize};

use crate::signature::{verify, KeyId, PublicKey, SecretKey, Signature, SignatureError};

/// The statement format this code reads and writes.
pub const STATEMENT_FORMAT: u32 = 1;

/// One signed statement as a bundle's manifest (and the file `bundle-build rotate` writes) holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    /// The statement text: the signed bytes.
    pub statement: String,
    /// `.minisig` texts over the statement: one by the old key, one by the new key.
    pub signatures: Vec<String>,
}

/// What the new key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationAction {
    /// The new key is trusted and the old one retired.
    Replace,
    /// The new key is trusted beside the old one.
    Add,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub app: String,
    pub action: RotationAction,
    pub old: PublicKey,
    pub new: PublicKey,
}

impl Statement {
    /// The exact text that is signed.
    pub fn format(&self) -> String {
        let action = match self.action {
            RotationAction::Replace => "replace",
            RotationAction::Add => "add",
        };
        format!(
            "format: {STATEMENT_FORMAT}\napp: {}\naction: {action}\nold: {}\nnew: {}\n",
            self.app,
            self.old.to_base64(),
            self.new.to_base64()
        )
    }

    /// Parses exactly the text [`Statement::format`] writes (anything else is refused, so the
    /// signed bytes have one meaning).
    pub fn parse(text: &str) -> Result<Statement, String> {
        let mut fields = Vec::new();
        for line in text.strip_suffix('\n').ok_or("the statement does not end with a newline")?.split('\n') {
            let (k, v) =
                line.split_once(": ").ok_or_else(|| format!("line `{}` is not `key: value`", line.escape_debug()))?;
            fields.push((k, v));
        }
        let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        if keys != ["format", "app", "action", "old", "new"] {
            return Err(format!("fields {keys:?}, expected format, app, action, old, new in that order"));
        }
        if fields[0].1 != STATEMENT_FORMAT.to_string() {
            return Err(format!(
                "format {} is not supported (expected {STATEMENT_FORMAT})",
                fields[0].1.escape_debug()
            ));
        }
        let action = match fields[2].1 {
            "replace" => RotationAction::Replace,
            "add" => RotationAction::Add,
            other => return Err(format!("action `{}` is neither replace nor add", other.escape_debug())),
        };
        let key = |v: &str, which: &str| PublicKey::from_base64(v).map_err(|e| format!("the {which} key: {e}"));
        let s = Statement {
            app: fields[1].1.to_string(),
            action,
            old: key(fields[3].1, "old")?,
            new: key(fields[4].1, "new")?,
        };
        if s.app.is_empty() || s.app.chars().any(char::is_control) {
            return Err("the app name is empty or has control characters".into());
        }
        if s.old.key_id() == s.new.key_id() {
            return Err("the old and new keys have the same key id".into());
        }
        if s.format() != text {
            return Err("the statement is not in its canonical form".into());
        }
        Ok(s)
    }

    /// The trusted comment of the statement's signatures (informative; the statement text is what
    /// is checked).
    pub fn trusted_comment(&self) -> String {
        format!("key-rotation\tapp:{}\told:{}\tnew:{}", self.app, self.old.key_id(), self.new.key_id())
    }

    /// Signs the statement with both keys (`old` must be the old key's secret, `new` the new one's).
    pub fn sign(&self, old: &SecretKey, new: &SecretKey) -> Result<KeyRotation, String> {
        if old.public_key() != self.old || new.public_key() != self.new {
            return Err("the secret keys do not match the statement's old and new public keys".into());
        }
        let text = self.format();
        let comment = self.trusted_comment();
        let sig = |k: &SecretKey| k.sign(text.as_bytes(), &comment).map(|s| s.to_minisign()).map_err(|e| e.to_string());
        Ok(KeyRotation { statement: text.clone(), signatures: vec![sig(old)?, sig(new)?] })
    }
}

impl KeyRotation {
    /// Parses the statement and checks that both its keys signed it and that it is for `app`.
    pub fn check(&self, app: &str) -> Result<Statement, String> {
        let s = Statement::parse(&self.statement)?;
        if s.app != app {
            return Err(format!("it is for app `{}`, not `{app}`", s.app.escape_debug()));
        }
        for (which, key) in [("old", &s.old), ("new", &s.new)] {
            self.signed_by(key).map_err(|e| format!("not validly signed by the {which} key {}: {e}", key.key_id()))?;
        }
        Ok(s)
    }

    fn signed_by(&self, key: &PublicKey) -> Result<(), SignatureError> {
        let mut last = SignatureError::UntrustedKey(*key.key_id());
        for text in &self.signatures {
            let sig = Signature::parse(text)?;
            if sig.key_id != *key.key_id() {
                continue;
            }
            match verify(self.statement.as_bytes(), &sig, std::slice::from_ref(key)) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// What a site did with one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationOutcome {
    pub old: String,
    pub new: String,
    pub action: Option<RotationAction>,
    /// `applied`, `ignored` (changes nothing here) or `refused`.
    pub status: &'static str,
    pub reason: String,
}

/// The effect of a bundle's statements on a site's trusted keys.
#[derive(Debug, Clone, Default)]
pub struct RotationPlan {
    /// One per statement, in the manifest's order.
    pub outcomes: Vec<RotationOutcome>,
    /// Keys to trust.
    pub add: Vec<PublicKey>,
    /// Trusted keys to retire (no longer accepted, not revoked).
    pub retire: Vec<PublicKey>,
}

impl RotationPlan {
    /// The keys to check this bundle with: those trusted plus those added (a key retired by a
    /// statement still checks the bundle that carries the statement).
    pub fn keys_for_bundle(&self, trusted: &[PublicKey]) -> Vec<PublicKey> {
        let mut keys = trusted.to_vec();
        keys.extend(self.add.iter().cloned());
        keys
    }

    pub fn changes_anything(&self) -> bool {
        !self.add.is_empty() || !self.retire.is_empty()
    }
}

/// Works out what `rotations` do on a site trusting `trusted`, for bundles of `app`. A statement
/// counts only when its old key is trusted here (directly, or through an earlier statement of the
/// same bundle: statements chain, A→B then B→C); one whose old key is not trusted changes nothing.
/// A statement naming a key for which `is_revoked` holds is refused (a revoked key never comes back
/// through a bundle, and never authorises anything), as is one with a bad signature or for another
/// app. Refused statements change nothing; the bundle then stands or falls on its own signature.
pub fn plan(
    rotations: &[KeyRotation],
    app: &str,
    trusted: &[PublicKey],
    is_revoked: &dyn Fn(&KeyId) -> bool,
) -> RotationPlan {
    let mut current: Vec<PublicKey> = trusted.to_vec();
    let mut outcomes: Vec<Option<RotationOutcome>> = vec![None; rotations.len()];
    let mut out = RotationPlan::default();
    // Repeat until nothing changes, so the manifest's order does not matter for chains.
    loop {
        let mut changed = false;
        for (i, r) in rotations.iter().enumerate() {
            if outcomes[i].as_ref().is_some_and(|o| o.status != "ignored") {
                continue;
            }
            let (outcome, applied) = judge(r, app, &current, is_revoked);
            if let Some(s) = applied {
                changed = true;
                if !current.contains(&s.new) {
                    current.push(s.new.clone());
                    out.add.push(s.new.clone());
                }
                if s.action == RotationAction::Replace {
                    current.retain(|k| k != &s.old);
                    if trusted.contains(&s.old) {
                        out.retire.push(s.old.clone());
                    }
                    out.add.retain(|k| k != &s.old);
                }
            }
            outcomes[i] = Some(outcome);
        }
        if !changed {
            break;
        }
    }
    out.outcomes = outcomes.into_iter().map(|o| o.expect("every statement judged")).collect();
    out
}

fn judge(
    r: &KeyRotation,
    app: &str,
    current: &[PublicKey],
    is_revoked: &dyn Fn(&KeyId) -> bool,
) -> (RotationOutcome, Option<Statement>) {
    let outcome = |s: Option<&Statement>, status, reason: String| RotationOutcome {
        old: s.map(|s| s.old.key_id().to_string()).unwrap_or_default(),
        new: s.map(|s| s.new.key_id().to_string()).unwrap_or_default(),
        action: s.map(|s| s.action),
        status,
        reason,
    };
    let s = match Statement::parse(&r.statement) {
        Ok(s) => s,
        Err(e) => return (outcome(None, "refused", format!("malformed statement: {e}")), None),
    };
    if s.app != app {
        return (
            outcome(
                Some(&s),
                "refused",
                format!("the statement is for app `{}`, this bundle is `{app}`", s.app.escape_debug()),
            ),
            None,
        );
    }
    if is_revoked(s.old.key_id()) || is_revoked(s.new.key_id()) {
        let which = if is_revoked(s.new.key_id()) { s.new.key_id() } else { s.old.key_id() };
        return (
            outcome(
                Some(&s),
                "refused",
                format!("key {which} is revoked on this site; a revoked key never comes back through a bundle"),
            ),
            None,
        );
    }
    if !current.contains(&s.old) {
        let reason = if current.contains(&s.new) {
            "already applied".to_string()
        } else {
            format!("signed by key {}, which this site does not trust", s.old.key_id())
        };
        return (outcome(Some(&s), "ignored", reason), None);
    }
    if let Err(e) = r.check(app) {
        return (outcome(Some(&s), "refused", e), None);
    }
    let what = match s.action {
        RotationAction::Replace => format!("key {} replaces key {}", s.new.key_id(), s.old.key_id()),
        RotationAction::Add => format!("key {} joins key {}", s.new.key_id(), s.old.key_id()),
    };
    (outcome(Some(&s), "applied", what), Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(KeyId([n; 8]), [n.wrapping_add(50); 32])
    }

    fn statement(app: &str, action: RotationAction, old: &SecretKey, new: &SecretKey) -> KeyRotation {
        Statement { app: app.into(), action, old: old.public_key(), new: new.public_key() }.sign(old, new).unwrap()
    }

    const NONE_REVOKED: &dyn Fn(&KeyId) -> bool = &|_| false;

    #[test]
    fn statement_round_trips_and_is_canonical() {
        let r = statement("fieldlog", RotationAction::Replace, &key(1), &key(2));
        let s = r.check("fieldlog").unwrap();
        assert_eq!(Statement::parse(&s.format()).unwrap(), s);
        assert!(Statement::parse(&r.statement.replace("action: replace", "action:  replace")).is_err());
        assert!(Statement::parse(&r.statement.replace("format: 1", "format: 2")).is_err());
        assert!(Statement::parse(&format!("{}extra: 1\n", r.statement)).is_err());
        assert!(r.check("other").unwrap_err().contains("app"));
    }

    #[test]
    fn chain_replace_then_replace_on_a_site_that_skipped() {
        let (a, b, c) = (key(1), key(2), key(3));
        let rs = [statement("app", RotationAction::Replace, &b, &c), statement("app", RotationAction::Replace, &a, &b)];
        let p = plan(&rs, "app", &[a.public_key()], NONE_REVOKED);
        assert_eq!(p.outcomes.iter().map(|o| o.status).collect::<Vec<_>>(), ["applied", "applied"]);
        assert_eq!(p.add, [c.public_key()]);
        assert_eq!(p.retire, [a.public_key()]);
        // A site already on C: nothing to do.
        let p = plan(&rs, "app", &[c.public_key()], NONE_REVOKED);
        assert!(!p.changes_anything());
        assert_eq!(p.outcomes[0].reason, "already applied");
    }

    #[test]
    fn forged_replayed_revoked_and_untrusted_statements_change_nothing() {
        let (a, b, x) = (key(1), key(2), key(9));
        let trusted = [a.public_key()];
        // Forged: claims A's authority, signed by X for A's slot.
        let s = Statement { app: "app".into(), action: RotationAction::Add, old: a.public_key(), new: x.public_key() };
        let mut forged = s.sign(&a, &x).unwrap();
        forged.signatures[0] = x.sign(forged.statement.as_bytes(), "c").unwrap().to_minisign();
        // Another app's genuine statement.
        let other_app = statement("other", RotationAction::Add, &a, &b);
        // Genuine, but the new key is revoked here.
        let revive = statement("app", RotationAction::Add, &a, &b);
        // Signed by a key the site does not trust.
        let untrusted = statement("app", RotationAction::Add, &x, &b);
        // Old key's signature missing: only the new key signed.
        let mut half = statement("app", RotationAction::Add, &a, &x);
        half.signatures.remove(0);
        for (r, status) in [(&forged, "refused"), (&other_app, "refused"), (&untrusted, "ignored"), (&half, "refused")]
        {
            let p = plan(std::slice::from_ref(r), "app", &trusted, NONE_REVOKED);
            assert!(!p.changes_anything(), "{:?}", p.outcomes);
            assert_eq!(p.outcomes[0].status, status, "{:?}", p.outcomes);
        }
        let b_id = *b.key_id();
        let p = plan(&[revive], "app", &trusted, &move |id| *id == b_id);
        assert!(!p.changes_anything());
        assert!(p.outcomes[0].reason.contains("revoked"), "{:?}", p.outcomes);
    }
}
