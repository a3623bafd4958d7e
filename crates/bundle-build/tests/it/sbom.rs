//! The CycloneDX 1.5 SBOM (`sbom.cdx.json`) that `bundle-build build` puts in every bundle's signed
//! payload, through the real binary:
//!
//! * it validates against the official CycloneDX 1.5 JSON schema, vendored in
//!   `tests/data/cyclonedx/` (see its README) and resolved offline: the schema's `$ref`s to
//!   `spdx.schema.json` and `jsf-0.82.schema.json` are served from the sibling files, nothing else is
//!   fetched;
//! * one component per wheel, with purl `pkg:pypi/<normalized name>@<version>`, the SHA-256 the signed
//!   manifest gives for that wheel, and the license its METADATA declares (read here with Python's
//!   `zipfile`, not with our code);
//! * it is byte-identical across two builds with the same `SOURCE_DATE_EPOCH`, is listed and hashed in
//!   the signed manifest, and `inspect --sbom [--json]` prints exactly it (also for a split bundle).
//!
//! The spec used is fixture 4.0.0 plus two extra wheels: `Field_Blob` (mixed case and `_` in its name,
//! `License-Expression`) and `nolicense` (no license field).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_support::{copy_spec, fixture_specs, run, scratch_dir, KeyPair, Parts, Run};

const BIN: &str = env!("CARGO_BIN_EXE_bundle-build");
const EPOCH: &str = "1700000000";
/// `EPOCH` as RFC 3339.
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
const SBOM_PATH: &str = "sbom.cdx.json";

/// Writes a valid pure-Python wheel into OUT_DIR (PEP 427: RECORD with sha256 and sizes, last
/// entry; stored, not deflated) holding SIZE bytes of seeded random data; prints its path.
/// `python3 -c MKWHEEL OUT_DIR NAME VERSION LICENSE_LINE SIZE SEED` (LICENSE_LINE may be empty).
const MKWHEEL: &str = r#"
import base64, csv, hashlib, io, random, re, sys, zipfile
out, name, version, license_line, size, seed = sys.argv[1:7]
dist = re.sub(r"[-_.]+", "_", name).lower()
dist_info = f"{dist}-{version}.dist-info"
meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
if license_line:
    meta += license_line + "\n"
meta += "Requires-Python: >=3.9\n"
payload = {
    f"{dist}/__init__.py": f"VERSION = {version!r}\n".encode(),
    f"{dist}/blob.bin": random.Random(int(seed)).randbytes(int(size)),
    f"{dist_info}/METADATA": meta.encode(),
    f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bundle tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    f"{dist_info}/top_level.txt": f"{dist}\n".encode(),
}
def record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
names = sorted(payload, key=lambda arc: (arc.startswith(dist_info + "/"), arc))
record = io.StringIO()
writer = csv.writer(record, lineterminator="\n")
for arc in names:
    writer.writerow([arc, record_hash(payload[arc]), len(payload[arc])])
writer.writerow([f"{dist_info}/RECORD", "", ""])
payload[f"{dist_info}/RECORD"] = record.getvalue().encode()
names.append(f"{dist_info}/RECORD")
path = f"{out}/{dist}-{version}-py3-none-any.whl"
with zipfile.ZipFile(path, "w") as zf:
    for arc in names:
        info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        info.create_system = 3
        info.external_attr = 0o100644 << 16
        zf.writestr(info, payload[arc])
print(path)
"#;

/// Prints `{wheel file name: {name, version, license, license_expression}}` from each wheel's
/// METADATA headers, read with Python's zipfile and email parser (independent of our Rust code).
const READ_METADATA: &str = r#"
import email.parser, json, pathlib, sys, zipfile
out = {}
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(whl) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8"), headersonly=True)
    out[whl.name] = {"name": msg["Name"], "version": msg["Version"], "license": msg.get("License"), "license_expression": msg.get("License-Expression")}
print(json.dumps(out))
"#;

struct Env {
    key: KeyPair,
    spec: PathBuf,
    /// The same spec built twice (same `SOURCE_DATE_EPOCH`, different output directories).
    bundle_a: PathBuf,
    bundle_b: PathBuf,
    /// Fixture 4.0.0 as it is (two wheels).
    plain: PathBuf,
}

fn bb() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(std::process::Stdio::null());
    c
}

/// A `--json` run: stdout is exactly one line holding one JSON object with `ok` and `command`;
/// a failure carries `error.kind` and `error.message` and exits non-zero with `error.exit_code`.
#[track_caller]
fn json_of(r: &Run, command: &str) -> Value {
    assert!(!r.timed_out && !r.panicked(), "{r}");
    let out = r.stdout.strip_suffix('\n').unwrap_or(&r.stdout);
    assert!(!out.is_empty() && !out.contains('\n'), "stdout must be exactly one JSON line:\n{r}");
    let v = r.json();
    assert_eq!(v["command"], command, "{r}");
    match v["ok"].as_bool() {
        Some(true) => {
            assert_eq!(r.code, Some(0), "{r}");
            assert!(v.get("error").is_none(), "{r}");
        }
        Some(false) => {
            assert!(v["error"]["kind"].as_str().is_some_and(|k| !k.is_empty()), "no error.kind:\n{r}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no error.message:\n{r}");
            assert_eq!(v["error"]["exit_code"].as_i64().map(|c| c as i32), r.code, "{r}");
            assert_ne!(r.code, Some(0), "{r}");
        }
        None => panic!("`ok` is not a boolean:\n{r}"),
    }
    v
}

fn build(spec: &Path, key: &KeyPair, out: &Path, extra: &[&str]) -> PathBuf {
    let r = run(bb()
        .arg("build")
        .arg(spec)
        .arg("--key")
        .arg(&key.secret_path)
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg("--json")
        .env("SOURCE_DATE_EPOCH", EPOCH));
    let v = json_of(&r, "build");
    assert_eq!(v["ok"], true, "{r}");
    PathBuf::from(v["bundle"].as_str().expect("bundle path"))
}

fn make_wheel(dir: &Path, name: &str, version: &str, license_line: &str, size: usize, seed: u32) -> PathBuf {
    let r = run(Command::new("python3").arg("-c").arg(MKWHEEL).arg(dir).args([
        name,
        version,
        license_line,
        &size.to_string(),
        &seed.to_string(),
    ]));
    r.expect_ok();
    PathBuf::from(r.stdout.trim())
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = scratch_dir("sbom");
        let key = KeyPair::keygen(&dir.join("signer"));
        let spec = copy_spec("4.0.0", &dir.join("spec"));
        let wheelhouse = dir.join("spec/wheelhouse");
        make_wheel(&wheelhouse, "Field_Blob", "0.3.0", "License-Expression: Apache-2.0 OR MIT", 20_000, 1);
        make_wheel(&wheelhouse, "nolicense", "1.0", "", 1_000, 2);
        let bundle_a = build(&spec, &key, &dir.join("out-a"), &[]);
        let bundle_b = build(&spec, &key, &dir.join("out-b"), &[]);
        let plain = build(&fixture_specs().join("4.0.0/spec.yaml"), &key, &dir.join("out-plain"), &[]);
        Env { key, spec, bundle_a, bundle_b, plain }
    })
}

/// The SBOM bytes inside a bundle, read straight from the archive.
fn sbom_bytes(bundle: &Path) -> Vec<u8> {
    let parts = Parts::read(bundle);
    parts
        .files
        .iter()
        .find(|f| f.path == SBOM_PATH)
        .unwrap_or_else(|| panic!("{} has no {SBOM_PATH}", bundle.display()))
        .data
        .clone()
}

fn sbom(bundle: &Path) -> Value {
    serde_json::from_slice(&sbom_bytes(bundle)).expect("sbom.cdx.json is JSON")
}

fn inspect_manifest(bundle: &Path) -> Value {
    let r = run(bb().arg("inspect").arg(bundle).arg("--json"));
    let v = json_of(&r, "inspect");
    assert_eq!(v["ok"], true, "{r}");
    v["manifest"].clone()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

// --- the schema, offline ----------------------------------------------------------------------

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cyclonedx")
}

/// Serves `http://cyclonedx.org/schema/<file>` from `tests/data/cyclonedx/<file>`; refuses
/// everything else (no network). Records what it served.
struct LocalSchemas {
    dir: PathBuf,
    served: Arc<Mutex<Vec<String>>>,
}

impl jsonschema::Retrieve for LocalSchemas {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        let file = uri
            .strip_prefix("http://cyclonedx.org/schema/")
            .or_else(|| uri.strip_prefix("https://cyclonedx.org/schema/"))
            .filter(|f| !f.is_empty() && !f.contains('/'))
            .ok_or_else(|| format!("refusing to fetch {uri}: the schema tests run offline"))?;
        let text =
            std::fs::read_to_string(self.dir.join(file)).map_err(|e| format!("{uri}: no vendored copy {file}: {e}"))?;
        self.served.lock().unwrap().push(file.to_string());
        Ok(serde_json::from_str(&text)?)
    }
}

struct Schema {
    validator: jsonschema::Validator,
    served: Arc<Mutex<Vec<String>>>,
}

fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        let dir = schema_dir();
        let text = std::fs::read_to_string(dir.join("bom-1.5.SNAPSHOT.schema.json")).expect("vendored bom-1.5 schema");
        let root: Value = serde_json::from_str(&text).expect("schema is JSON");
        assert_eq!(root["$id"], "http://cyclonedx.org/schema/bom-1.5.schema.json");
        let served = Arc::new(Mutex::new(Vec::new()));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .with_retriever(LocalSchemas { dir, served: served.clone() })
            .build(&root)
            .unwrap_or_else(|e| panic!("the CycloneDX 1.5 schema does not compile: {e}"));
        Schema { validator, served }
    })
}

/// Every schema violation in `doc`, as `path: message` lines.
fn violations(doc: &Value) -> Vec<String> {
    schema().validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[track_caller]
fn assert_valid(doc: &Value, what: &str) {
    let errors = violations(doc);
    assert!(
        errors.is_empty(),
        "{what} is not a valid CycloneDX 1.5 document:\n{}\n\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(doc).unwrap()
    );
}

// --- tests ------------------------------------------------------------------------------------

#[test]
fn sbom_validates_against_the_cyclonedx_1_5_schema() {
    let e = env();
    for bundle in [&e.bundle_a, &e.plain] {
        let doc = sbom(bundle);
        assert_valid(&doc, &format!("{SBOM_PATH} of {}", bundle.display()));
        // What the schema alone does not pin (the vendored copy has `required: version` removed).
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.5");
        assert!(doc["version"].as_u64().is_some_and(|v| v >= 1), "{doc}");
        assert!(doc["serialNumber"].as_str().is_some_and(|s| s.starts_with("urn:uuid:")), "{doc}");
        assert_eq!(doc["metadata"]["timestamp"], EPOCH_RFC3339, "the time stamp comes from SOURCE_DATE_EPOCH");
        assert_eq!(doc["metadata"]["component"]["name"], "fieldlog");
        assert_eq!(doc["metadata"]["component"]["version"], "4.0.0");
        // bom-refs are document-unique (CycloneDX requires it; JSON Schema cannot say so).
        let mut refs = Vec::new();
        collect_bom_refs(&doc, &mut refs);
        let unique: BTreeSet<&String> = refs.iter().collect();
        assert_eq!(unique.len(), refs.len(), "duplicate bom-ref in {refs:?}");
    }
    // Both `$ref`d sibling schemas were resolved from the vendored files.
    let served = schema().served.lock().unwrap().clone();
    for f in ["spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"] {
        assert!(served.iter().any(|s| s == f), "{f} was not resolved (served: {served:?})");
    }
}

fn collect_bom_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("bom-ref", Value::String(s)) => out.push(s.clone()),
                    _ => collect_bom_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_bom_refs(x, out)),
        _ => {}
    }
}

/// The validator is real: it rejects broken documents, including through the `$ref`d SPDX list.
#[test]
fn the_schema_rejects_broken_sboms() {
    let good = sbom(&env().bundle_a);
    assert_valid(&good, "the built SBOM");
    type Edit = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, Edit)> = vec![
        (
            "no bomFormat",
            Box::new(|d: &mut Value| {
                d.as_object_mut().unwrap().remove("bomFormat");
            }),
        ),
        ("unknown top-level key", Box::new(|d: &mut Value| d["surprise"] = json!(1))),
        (
            "hash algorithm not in the enum",
            Box::new(|d: &mut Value| d["components"][0]["hashes"][0]["alg"] = json!("SHA-999")),
        ),
        (
            "hash content not hex",
            Box::new(|d: &mut Value| d["components"][0]["hashes"][0]["content"] = json!("not a hash")),
        ),
        (
            "license id not an SPDX id (spdx.schema.json)",
            Box::new(|d: &mut Value| {
                d["components"][0]["licenses"] = json!([{ "license": { "id": "Not-An-SPDX-Id" } }]);
            }),
        ),
        ("component type unknown", Box::new(|d: &mut Value| d["components"][0]["type"] = json!("gadget"))),
        ("serialNumber not a urn:uuid", Box::new(|d: &mut Value| d["serialNumber"] = json!("12345"))),
        ("timestamp not a date-time", Box::new(|d: &mut Value| d["metadata"]["timestamp"] = json!("yesterday"))),
    ];
    for (what, edit) in broken {
        let mut doc = good.clone();
        edit(&mut doc);
        assert!(!violations(&doc).is_empty(), "the schema accepted an SBOM with {what}");
    }
    // And a valid SPDX id passes, so the failure above really came from the SPDX list.
    let mut doc = good.clone();
    doc["components"][0]["licenses"] = json!([{ "license": { "id": "Apache-2.0" } }]);
    assert_valid(&doc, "an SBOM with an SPDX license id");
}

#[test]
fn one_component_per_wheel_with_purl_manifest_sha256_and_metadata_license() {
    let e = env();
    let doc = sbom(&e.bundle_a);
    let manifest = inspect_manifest(&e.bundle_a);
    let file_sha: BTreeMap<&str, &str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["sha256"].as_str().unwrap()))
        .collect();
    let wheels: Vec<&str> = manifest["wheels"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(wheels.len(), 4, "fieldlog, fieldkit and the two extra wheels: {wheels:?}");

    let r = run(Command::new("python3").arg("-c").arg(READ_METADATA).arg(e.spec.parent().unwrap().join("wheelhouse")));
    r.expect_ok();
    let metadata: BTreeMap<String, Value> = serde_json::from_str(&r.stdout).expect("metadata JSON");

    let components = doc["components"].as_array().expect("components");
    assert_eq!(components.len(), wheels.len(), "one component per wheel:\n{doc:#}");
    for wheel in &wheels {
        let file = wheel.rsplit('/').next().unwrap();
        let meta = &metadata[file];
        let (name, version) = (meta["name"].as_str().unwrap(), meta["version"].as_str().unwrap());
        let purl = format!("pkg:pypi/{}@{version}", purl_name(name));
        let matching: Vec<&Value> = components.iter().filter(|c| c["purl"] == purl.as_str()).collect();
        assert_eq!(matching.len(), 1, "exactly one component with purl {purl} (wheel {wheel}):\n{doc:#}");
        let c = matching[0];
        assert_eq!(c["type"], "library", "{c}");
        assert_eq!(c["name"], name, "{c}");
        assert_eq!(c["version"], version, "{c}");
        let sha = file_sha.get(wheel).unwrap_or_else(|| panic!("{wheel} not in the manifest's files"));
        assert_eq!(
            c["hashes"],
            json!([{ "alg": "SHA-256", "content": sha }]),
            "{wheel}: hash must be the manifest's sha256"
        );
        let declared = meta["license_expression"].as_str().or(meta["license"].as_str());
        let listed = license_strings(c);
        match declared {
            Some(l) => assert_eq!(listed, vec![l.to_string()], "{wheel}: license from METADATA `{l}`:\n{c}"),
            None => assert!(listed.is_empty(), "{wheel} declares no license, the SBOM says {listed:?}"),
        }
    }
    // The mixed-case, underscored name is normalized in the purl (purl-spec: pypi names are
    // lowercased, `_` becomes `-`).
    assert!(components.iter().any(|c| c["purl"] == "pkg:pypi/field-blob@0.3.0"), "{doc:#}");
}

/// The PyPI purl name: PEP 503 normalization (lowercase, runs of `-_.` become `-`).
fn purl_name(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Every license string of a component, whatever CycloneDX form it is in (`license.id`,
/// `license.name` or an `expression`).
fn license_strings(c: &Value) -> Vec<String> {
    let Some(list) = c["licenses"].as_array() else { return Vec::new() };
    list.iter()
        .filter_map(|l| l["license"]["id"].as_str().or(l["license"]["name"].as_str()).or(l["expression"].as_str()))
        .map(str::to_string)
        .collect()
}

#[test]
fn sbom_is_byte_identical_across_two_builds() {
    let e = env();
    assert_ne!(e.bundle_a.parent(), e.bundle_b.parent());
    let (a, b) = (sbom_bytes(&e.bundle_a), sbom_bytes(&e.bundle_b));
    assert!(
        a == b,
        "the SBOM differs between two builds with SOURCE_DATE_EPOCH={EPOCH}:\n{}\n---\n{}",
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b)
    );
    assert_eq!(std::fs::read(&e.bundle_a).unwrap(), std::fs::read(&e.bundle_b).unwrap(), "and so is the whole bundle");
}

#[test]
fn sbom_is_in_the_signed_payload() {
    let e = env();
    let manifest = inspect_manifest(&e.bundle_a);
    assert_eq!(manifest["sbom"], SBOM_PATH, "{manifest:#}");
    let bytes = sbom_bytes(&e.bundle_a);
    let entry = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == SBOM_PATH)
        .expect("the SBOM is listed in the manifest");
    assert_eq!(entry["sha256"].as_str(), Some(sha256_hex(&bytes).as_str()));
    assert_eq!(entry["size"].as_u64(), Some(bytes.len() as u64));
    let r = run(bb().arg("verify").arg(&e.bundle_a).arg("--trust").arg(&e.key.public_path).arg("--json"));
    assert_eq!(json_of(&r, "verify")["ok"], true, "{r}");
}

#[test]
fn inspect_sbom_prints_exactly_the_sbom() {
    let e = env();
    let bytes = sbom_bytes(&e.bundle_a);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();

    let human = run(bb().arg("inspect").arg("--sbom").arg(&e.bundle_a));
    human.expect_ok();
    assert_eq!(
        human.stdout.trim_end(),
        String::from_utf8_lossy(&bytes).trim_end(),
        "human `inspect --sbom` prints the SBOM as stored"
    );

    let r = run(bb().arg("inspect").arg("--sbom").arg("--json").arg(&e.bundle_a));
    let v = json_of(&r, "inspect");
    assert_eq!(v["ok"], true, "{r}");
    assert_eq!(v["sbom"], doc, "{r}");
    assert_eq!(v["signature_checked"], false, "inspect checks nothing and must say so:\n{r}");
    assert_valid(&v["sbom"], "`inspect --sbom --json`'s sbom");

    // A split bundle (one part here) shows the same SBOM, from the index or from part 1.
    let dir = scratch_dir("sbom-split");
    let index = build(&e.spec, &e.key, &dir, &["--split-size", "1M"]);
    assert!(index.to_string_lossy().ends_with(".parts"), "{}", index.display());
    let part1 = PathBuf::from(format!("{}.001", index.to_string_lossy().strip_suffix(".parts").unwrap()));
    for path in [&index, &part1] {
        let r = run(bb().arg("inspect").arg("--sbom").arg("--json").arg(path));
        let v = json_of(&r, "inspect");
        assert_eq!(v["ok"], true, "{r}");
        assert_eq!(v["sbom"], doc, "{r}");
    }

    // A bundle path that does not exist: one JSON error.
    let r = run(bb().arg("inspect").arg("--sbom").arg("--json").arg(dir.join("nope.bundle.tar.gz")));
    let v = json_of(&r, "inspect");
    assert_eq!((v["ok"].as_bool(), r.code), (Some(false), Some(3)), "{r}");
}

/// A spec with targets (two wheels of one release of `pyyaml`) and a requirements.txt lock: the
/// SBOM still validates, every bom-ref stays unique (`?file_name=` tells the twins apart), and
/// `metadata.properties` names the lock file and its sha256.
#[test]
fn sbom_with_targets_and_a_lock_validates_and_records_the_lock() {
    let e = env();
    let dir = scratch_dir("sbom-lock");
    let spec = copy_spec("4.0.0", &dir.join("spec"));
    let wheelhouse = dir.join("spec/wheelhouse");
    for tags in ["cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-manylinux_2_17_aarch64"] {
        test_support::Wheel::new(&format!("pyyaml-6.0.3-{tags}.whl")).write(&wheelhouse);
    }
    let mut lock = String::new();
    for w in std::fs::read_dir(&wheelhouse).unwrap() {
        let p = w.unwrap().path();
        let f = p.file_name().unwrap().to_string_lossy().into_owned();
        let mut it = f.split('-');
        lock.push_str(&format!(
            "{}=={} --hash=sha256:{}\n",
            it.next().unwrap(),
            it.next().unwrap(),
            sha256_hex(&std::fs::read(&p).unwrap())
        ));
    }
    // A requirements file lists each distribution once, with every file's hash.
    let mut merged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in lock.lines() {
        let (req, hash) = line.split_once(' ').unwrap();
        merged.entry(req.to_string()).or_default().push(hash.to_string());
    }
    let text: String = merged.iter().map(|(r, h)| format!("{r} {}\n", h.join(" "))).collect();
    std::fs::write(dir.join("spec/requirements.txt"), &text).unwrap();
    let yaml = std::fs::read_to_string(&spec).unwrap().replace("wheels: wheelhouse/\n", "wheels: {dir: wheelhouse/, lock: requirements.txt}\n")
        + "targets:\n- {python: \"3.11\", platform: manylinux_2_28_x86_64}\n- {python: \"3.12\", platform: manylinux_2_34_aarch64}\n";
    std::fs::write(&spec, yaml).unwrap();
    let bundle = build(&spec, &e.key, &dir.join("out"), &[]);
    let doc = sbom(&bundle);
    assert_valid(&doc, "SBOM with a lock and targets");
    let mut refs = Vec::new();
    collect_bom_refs(&doc, &mut refs);
    let unique: BTreeSet<&String> = refs.iter().collect();
    assert_eq!(unique.len(), refs.len(), "duplicate bom-ref in {refs:?}");
    assert!(
        refs.iter().any(|r| r == "pkg:pypi/pyyaml@6.0.3?file_name=pyyaml-6.0.3-cp312-cp312-manylinux_2_17_aarch64.whl"),
        "{refs:?}"
    );
    let props = &doc["metadata"]["properties"];
    assert_eq!(props[0], json!({"name": "bundle:lock:file", "value": "requirements.txt"}), "{props}");
    assert_eq!(props[1]["value"], sha256_hex(text.as_bytes()), "{props}");
}
