//! `status` and `check`: what the site runs, what is kept, each database's version and whether the
//! current release may run on it (the compatibility rule), and the config in use.

use serde::Serialize;

use crate::db::{self, DbState};
use crate::error::{InstallError, Result};
use crate::site::{ReleaseInfo, Site};

#[derive(Debug, Clone, Serialize)]
pub struct DbStatus {
    pub name: String,
    pub engine: String,
    pub location: String,
    /// `clean`, `unversioned`, or the schema version recorded in the database.
    pub version: String,
    /// The schema the current release was built for.
    pub release_schema: String,
    pub compatible: bool,
    /// A step recorded as started but not finished (engines without transactional DDL).
    pub unfinished_steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    pub root: String,
    pub app: Option<String>,
    pub current: Option<String>,
    pub releases: Vec<ReleaseInfo>,
    pub databases: Vec<DbStatus>,
    pub config: Option<serde_json::Value>,
    pub trusted_keys: Vec<String>,
    pub healthy: bool,
}

pub fn status(site: &Site) -> Result<SiteStatus> {
    let current = site.current_version().map_err(|e| InstallError::attention("bad_current", e.to_string()))?;
    let releases = site.releases_installed().map_err(|e| InstallError::io("listing releases/", e))?;
    let mut databases = Vec::new();
    let mut config = None;
    let mut app = None;
    if let Some(cur) = &current {
        let m = site
            .release_manifest(cur)
            .map_err(|e| InstallError::attention("current_release_unreadable", format!("releases/{cur}: {e}")))?;
        app = Some(m.app.clone());
        for d in &m.databases {
            let mut engine = db::open(&d.name, &d.engine, &site.root, &d.path)?;
            let state = engine.inspect()?;
            let location = engine.location();
            engine.close()?;
            let (version, compatible) = match &state {
                DbState::Clean => ("clean".to_string(), false),
                DbState::Unversioned { .. } => ("unversioned".to_string(), false),
                DbState::Versioned { version, .. } => (version.to_string(), d.schema.runs_on(*version)),
            };
            // A failed step that was later retried successfully is history, not a problem.
            let unfinished_steps: Vec<String> =
                db::unfinished_steps(state.history()).iter().map(|r| r.file.clone()).collect();
            databases.push(DbStatus {
                name: d.name.clone(),
                engine: d.engine.clone(),
                location,
                version,
                release_schema: d.schema.to_string(),
                compatible: compatible && unfinished_steps.is_empty(),
                unfinished_steps,
            });
        }
        if let Some(c) = &m.config {
            let path = site.release_dir(cur).join("config").join(&c.file);
            config = Some(serde_json::json!({ "file": path, "version": c.version, "present": path.exists() }));
        }
    }
    let trusted_keys =
        site.trusted_keys().map(|ks| ks.iter().map(|k| k.key_id().to_string()).collect()).unwrap_or_default();
    let healthy = current.is_some() && databases.iter().all(|d| d.compatible);
    Ok(SiteStatus {
        root: site.root.display().to_string(),
        app,
        current,
        releases,
        databases,
        config,
        trusted_keys,
        healthy,
    })
}

impl SiteStatus {
    pub fn render(&self) -> String {
        let mut out = String::new();
        match &self.current {
            None => out.push_str(&format!("{}: nothing installed\n", self.root)),
            Some(c) => out.push_str(&format!(
                "{}: {} {} ({})\n",
                self.root,
                self.app.as_deref().unwrap_or("?"),
                c,
                if self.healthy { "healthy" } else { "NOT compatible with its databases" }
            )),
        }
        for d in &self.databases {
            out.push_str(&format!(
                "  database {} ({}) at {}: release needs {} → {}{}\n",
                d.name,
                d.engine,
                d.version,
                d.release_schema,
                if d.compatible { "ok" } else { "INCOMPATIBLE" },
                if d.unfinished_steps.is_empty() {
                    String::new()
                } else {
                    format!(", unfinished: {}", d.unfinished_steps.join(", "))
                }
            ));
        }
        if let Some(c) = &self.config {
            out.push_str(&format!("  config {} (version {})\n", c["file"].as_str().unwrap_or(""), c["version"]));
        }
        out.push_str("  releases kept:\n");
        for r in &self.releases {
            let mark = if Some(&r.version) == self.current.as_ref() { "*" } else { " " };
            out.push_str(&format!(
                "   {mark} {} installed {}{}\n",
                r.version,
                r.installed_at,
                r.from.as_ref().map(|f| format!(" (from {f})")).unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "  trusted keys: {}\n",
            if self.trusted_keys.is_empty() { "none".into() } else { self.trusted_keys.join(", ") }
        ));
        out
    }
}
