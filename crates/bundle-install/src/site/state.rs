//! Small per-site facts kept across runs in `state/site.json`: the highest release sequence ever
//! installed (anti-downgrade) and the app the site runs.

use serde::{Deserialize, Serialize};

use crate::error::{InstallError, Result};
use crate::site::Site;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SiteState {
    pub app: Option<String>,
    pub highest_sequence: Option<u64>,
}

pub(crate) fn load(site: &Site) -> Result<SiteState> {
    let path = site.state().join("site.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| InstallError::attention("site_state_unreadable", format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SiteState::default()),
        Err(e) => Err(InstallError::io(path.display(), e)),
    }
}

pub(crate) fn save(site: &Site, state: &SiteState) -> Result<()> {
    let path = site.state().join("site.json");
    crate::fs::durable::write_atomic(&path, &serde_json::to_vec_pretty(state).expect("serialises"))
        .map_err(|e| InstallError::io(path.display(), e))
}

pub(crate) fn highest_sequence(site: &Site) -> Result<Option<u64>> {
    Ok(load(site)?.highest_sequence)
}
