//! A whole tree's state, to assert that a command wrote, changed or removed nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bundle_core::hash::sha256_hex;

/// What a node is (with its permission bits, so a chmod counts as a change).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    File { mode: u32 },
    Dir { mode: u32 },
    Symlink,
    Other,
}

/// Relative path → (kind, sha256): of the content for files, of the target for symlinks, empty for
/// directories and other nodes.
pub type Snapshot = BTreeMap<PathBuf, (NodeKind, String)>;

/// Every node under `dir` (not `dir` itself), without following symlinks.
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", dir.display()));
        let rel = entry.path().strip_prefix(dir).expect("under dir").to_path_buf();
        let meta = entry.path().symlink_metadata().unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        let mode = meta.permissions().mode() & 0o7777;
        let t = meta.file_type();
        let node = if t.is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("readlink");
            (NodeKind::Symlink, sha256_hex(target.as_os_str().as_encoded_bytes()))
        } else if t.is_dir() {
            (NodeKind::Dir { mode }, String::new())
        } else if t.is_file() {
            let data = std::fs::read(entry.path()).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            (NodeKind::File { mode }, sha256_hex(&data))
        } else {
            (NodeKind::Other, String::new())
        };
        out.insert(rel, node);
    }
    out
}

/// Human-readable differences (`+ added`, `- removed`, `~ changed`); empty when equal.
pub fn diff_snapshots(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, node) in before {
        match after.get(path) {
            None => diff.push(format!("- {}", path.display())),
            Some(n) if n != node => diff.push(format!("~ {} ({node:?} -> {n:?})", path.display())),
            Some(_) => {}
        }
    }
    for (path, node) in after {
        if !before.contains_key(path) {
            diff.push(format!("+ {} {node:?}", path.display()));
        }
    }
    diff
}
