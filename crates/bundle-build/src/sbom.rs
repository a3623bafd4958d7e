//! The bundle's software bill of materials: a CycloneDX 1.5 JSON document listing every wheel
//! (name, version, `pkg:pypi` purl, sha256, license from METADATA), packed as `sbom.cdx.json` in the
//! signed payload. Deterministic like the rest of the bundle: its serial number is derived from its
//! content and its time stamp from `SOURCE_DATE_EPOCH`.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use bundle_core::wheel::{normalize_name, WheelMetadata};

/// Bundle path of the SBOM.
pub const SBOM_PATH: &str = "sbom.cdx.json";

/// One wheel as the SBOM lists it.
pub struct WheelEntry<'a> {
    pub meta: &'a WheelMetadata,
    pub sha256: &'a str,
    /// Bundle path, `wheels/<file>`.
    pub path: &'a str,
}

/// The lock file the wheelhouse was checked against.
pub struct LockRef<'a> {
    pub file_name: &'a str,
    pub sha256: &'a str,
}

fn purl(name: &str, version: &str) -> String {
    format!("pkg:pypi/{}@{version}", normalize_name(name))
}

/// A name-based UUID (version 5 layout) from a digest, so the same bundle gets the same serial.
fn uuid_from(digest: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = bundle_core::hash::to_hex(&b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

pub fn generate(app: &str, version: &str, wheels: &[WheelEntry], lock: Option<LockRef>, mtime: u64) -> Vec<u8> {
    let mut components: Vec<Value> = wheels
        .iter()
        .map(|w| {
            // Several wheels of one release (one per target) are told apart by the purl's
            // `file_name` qualifier, so every bom-ref stays unique.
            let base = purl(&w.meta.name, &w.meta.version);
            let twins = wheels.iter().filter(|o| purl(&o.meta.name, &o.meta.version) == base).count();
            let id = if twins > 1 {
                format!("{base}?file_name={}", w.path.rsplit('/').next().unwrap_or(w.path))
            } else {
                base
            };
            let mut c = json!({
                "type": "library",
                "bom-ref": id,
                "name": w.meta.name,
                "version": w.meta.version,
                "purl": id,
                "hashes": [{ "alg": "SHA-256", "content": w.sha256 }],
            });
            if let Some(l) = &w.meta.license {
                c["licenses"] = json!([{ "license": { "name": l } }]);
            }
            c
        })
        .collect();
    components.sort_by(|a, b| a["bom-ref"].as_str().cmp(&b["bom-ref"].as_str()));
    let serial = uuid_from(&Sha256::digest(serde_json::to_vec(&components).expect("serialises")));
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{serial}"),
        "version": 1,
        "metadata": {
            "timestamp": bundle_core::time::rfc3339(mtime),
            "tools": { "components": [{ "type": "application", "name": "bundle-build", "version": env!("CARGO_PKG_VERSION") }] },
            "component": { "type": "application", "bom-ref": format!("bundle:{app}@{version}"), "name": app, "version": version, "purl": purl(app, version) },
        },
        "components": components,
    });
    let mut doc = doc;
    if let Some(l) = lock {
        doc["metadata"]["properties"] = json!([
            { "name": "bundle:lock:file", "value": l.file_name },
            { "name": "bundle:lock:sha256", "value": l.sha256 },
        ]);
    }
    let mut bytes = serde_json::to_vec_pretty(&doc).expect("serialises");
    bytes.push(b'\n');
    bytes
}
