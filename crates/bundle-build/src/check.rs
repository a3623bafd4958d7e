//! `check --previous OLD_BUNDLE`: released steps are immutable. Every migration, down script and
//! converter the old bundle shipped must be in the new release with the same bytes, so an edited
//! migration is caught in CI before a site that already ran it sees drift. Key rotation statements
//! are cumulative too: one the previous bundle carried must stay, or a site that skipped it would
//! never learn of the new key.

use bundle_core::manifest::Manifest;

use crate::release::{Level, Lint, Release};

/// Compares the new release against the manifest of the previous bundle.
pub fn compare_with_previous(new: &Release, old: &Manifest) -> Vec<Lint> {
    let mut lints = Vec::new();
    let mut immutable: Vec<&str> = Vec::new();
    for db in &old.databases {
        for step in &db.steps {
            immutable.extend([&step.up, &step.data, &step.down].into_iter().flatten().map(String::as_str));
        }
    }
    if let Some(c) = &old.config {
        immutable.extend(c.converters.iter().map(|c| c.path.as_str()));
    }
    for path in immutable {
        let Some(old_entry) = old.file(path) else { continue };
        match new.manifest.file(path) {
            None => lints.push(Lint {
                level: Level::Error,
                code: "released_step_removed",
                message: format!("{path} was released in {} {} and is missing now; released steps stay in every later bundle", old.app, old.version),
            }),
            Some(e) if e.sha256 != old_entry.sha256 => lints.push(Lint {
                level: Level::Error,
                code: "released_step_changed",
                message: format!(
                    "{path} changed since {} {} (sha256 {} then, {} now); add a new step instead of editing a released one",
                    old.app, old.version, old_entry.sha256, e.sha256
                ),
            }),
            Some(_) => {}
        }
    }
    for r in &old.key_rotations {
        if !new.manifest.key_rotations.contains(r) {
            let what = bundle_core::rotation::Statement::parse(&r.statement)
                .map(|s| format!("key {} → key {}", s.old.key_id(), s.new.key_id()))
                .unwrap_or_else(|_| "a key rotation statement".into());
            lints.push(Lint {
                level: Level::Error,
                code: "released_key_rotation_removed",
                message: format!("{what} was released in {} {} and is missing now; list its file under key_rotations in every later spec", old.app, old.version),
            });
        }
    }
    if old.app != new.manifest.app {
        lints.push(Lint {
            level: Level::Error,
            code: "app_changed",
            message: format!("the previous bundle is for `{}`, this spec for `{}`", old.app, new.manifest.app),
        });
    }
    if old.sequence >= new.manifest.sequence {
        lints.push(Lint {
            level: Level::Error,
            code: "sequence_not_increasing",
            message: format!(
                "release sequence {} is not above the previous bundle's {}; sites would refuse it as a downgrade",
                new.manifest.sequence, old.sequence
            ),
        });
    }
    lints
}
