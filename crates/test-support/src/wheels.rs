//! Small real wheels for tests of the wheel-set rules and wheel selection: a zip written by
//! `python3`'s `zipfile` with `METADATA`, `WHEEL` (one `Tag` line per tag of the file name, unless
//! told otherwise), the given package files and a `RECORD` with their sha256 — what `pip` and the
//! installer read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

/// A wheel to write; `Wheel::new("pyyaml-6.0.3-cp311-cp311-manylinux_2_17_x86_64.whl")`.
#[derive(Debug, Clone)]
pub struct Wheel {
    pub file_name: String,
    /// `METADATA` `Name` and `Version` (default: from the file name).
    pub name: Option<String>,
    pub version: Option<String>,
    /// Further `METADATA` header lines, e.g. `Requires-Dist: tomli; python_version < "3.11"`.
    pub headers: Vec<String>,
    /// `WHEEL` `Tag` values (default: the file name's tags, compressed sets expanded).
    pub tags: Option<Vec<String>>,
    /// Paths of package files inside the zip (default: `<name>/__init__.py`).
    pub files: Vec<String>,
}

impl Wheel {
    pub fn new(file_name: &str) -> Wheel {
        Wheel {
            file_name: file_name.to_string(),
            name: None,
            version: None,
            headers: Vec::new(),
            tags: None,
            files: Vec::new(),
        }
    }
    pub fn header(mut self, line: &str) -> Wheel {
        self.headers.push(line.to_string());
        self
    }
    pub fn requires(self, req: &str) -> Wheel {
        self.header(&format!("Requires-Dist: {req}"))
    }
    pub fn requires_python(self, spec: &str) -> Wheel {
        self.header(&format!("Requires-Python: {spec}"))
    }
    pub fn tags(mut self, tags: &[&str]) -> Wheel {
        self.tags = Some(tags.iter().map(|t| t.to_string()).collect());
        self
    }
    pub fn file(mut self, path: &str) -> Wheel {
        self.files.push(path.to_string());
        self
    }
    pub fn metadata_version(mut self, v: &str) -> Wheel {
        self.version = Some(v.to_string());
        self
    }

    /// Writes the wheel into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("wheel dir");
        let out = dir.join(&self.file_name);
        let args = json!({
            "out": out, "file_name": self.file_name, "name": self.name, "version": self.version,
            "headers": self.headers, "tags": self.tags, "files": self.files,
        });
        let mut child =
            Command::new("python3").args(["-c", SCRIPT]).stdin(Stdio::piped()).spawn().expect("python3 is required");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), args.to_string().as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "writing wheel {} failed", self.file_name);
        out
    }
}

const SCRIPT: &str = r##"
import base64, hashlib, json, sys, zipfile
a = json.load(sys.stdin)
parts = a["file_name"][:-4].split("-")
dist, ver = parts[0], parts[1]
py, abi, plat = parts[-3:]
tags = a["tags"] or ["%s-%s-%s" % (x, y, z) for x in py.split(".") for y in abi.split(".") for z in plat.split(".")]
name, version = a["name"] or dist, a["version"] or ver
info = "%s-%s.dist-info" % (dist, ver)
files = a["files"] or ["%s/__init__.py" % dist.lower()]
members = [(f, ("# %s from %s\n" % (f, a["file_name"])).encode()) for f in files]
meta = "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version) + "".join(h + "\n" for h in a["headers"]) + "\n"
members.append((info + "/METADATA", meta.encode()))
wheel = "Wheel-Version: 1.0\nGenerator: test-support\nRoot-Is-Purelib: %s\n" % ("true" if abi == "none" else "false")
members.append((info + "/WHEEL", (wheel + "".join("Tag: %s\n" % t for t in tags)).encode()))
record = "".join("%s,sha256=%s,%d\n" % (n, base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=").decode(), len(d)) for n, d in members)
members.append((info + "/RECORD", (record + info + "/RECORD,,\n").encode()))
with zipfile.ZipFile(a["out"], "w", zipfile.ZIP_DEFLATED) as z:
    for n, d in members:
        zi = zipfile.ZipInfo(n, (2020, 1, 1, 0, 0, 0))
        zi.external_attr = 0o644 << 16
        z.writestr(zi, d)
"##;
