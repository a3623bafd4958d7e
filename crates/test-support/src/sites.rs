//! Installed sites for `bundle-install` tests: the site interpreter, copies of a site that stay
//! runnable, snapshots that ignore only the lock holder record, and sentinel directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::run::run;
use crate::snapshot::{snapshot, Snapshot};

/// The real path of the site interpreter (`python3`'s `sys.executable`): passing it as `--python`
/// skips version-manager shims (pyenv's are shell scripts costing ~0.5 s per call).
pub fn site_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let r = run(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
        assert_eq!(r.code, Some(0), "python3 is required:\n{r}");
        let p = PathBuf::from(r.stdout.trim());
        assert!(p.is_file(), "python3 reports sys.executable {}, which is not a file", p.display());
        p
    })
}

/// Copies a whole site (symlinks kept as symlinks, modes and mtimes kept) to `dst`, then points the
/// venvs' absolute paths (console script shebangs, `pyvenv.cfg`) at the copy so it runs on its own.
pub fn copy_site(src: &Path, dst: &Path) {
    for entry in walkdir::WalkDir::new(src).follow_links(false).sort_by_file_name() {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", src.display()));
        let rel = entry.path().strip_prefix(src).expect("under src");
        let target = dst.join(rel);
        let t = entry.file_type();
        let meta = entry.path().symlink_metadata().expect("metadata");
        if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).expect("readlink"), &target)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", target.display()));
        } else if t.is_dir() {
            std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("mkdir {}: {e}", target.display()));
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(meta.permissions().mode()))
                .expect("chmod");
        } else if t.is_file() {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copy to {}: {e}", target.display()));
            // Keep mtimes: timestamp-based .pyc files must stay valid.
            let times = std::fs::FileTimes::new()
                .set_modified(meta.modified().expect("mtime"))
                .set_accessed(meta.accessed().expect("atime"));
            std::fs::File::options().write(true).open(&target).and_then(|f| f.set_times(times)).expect("set times");
        }
    }
    let (from, to) = (src.to_string_lossy().into_owned(), dst.to_string_lossy().into_owned());
    let Ok(releases) = std::fs::read_dir(dst.join("releases")) else { return };
    for rel in releases.flatten() {
        let venv = rel.path().join("venv");
        let mut files = vec![venv.join("pyvenv.cfg")];
        if let Ok(bin) = std::fs::read_dir(venv.join("bin")) {
            files.extend(
                bin.flatten().filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false)).map(|e| e.path()),
            );
        }
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            if text.contains(&from) {
                let meta = std::fs::metadata(&f).expect("metadata");
                std::fs::write(&f, text.replace(&from, &to)).expect("rewrite");
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(meta.permissions().mode()))
                    .expect("chmod");
                let times = std::fs::FileTimes::new().set_modified(meta.modified().expect("mtime"));
                std::fs::File::options().write(true).open(&f).and_then(|h| h.set_times(times)).expect("set times");
            }
        }
    }
}

/// [`snapshot`] of `dir`, except that the *content* of every `state/lock` file under it is not
/// compared (each command writes its pid, command and start time there while it holds the lock);
/// the file must still exist as a regular file.
pub fn snapshot_ignoring_lock(dir: &Path) -> Snapshot {
    let mut s = snapshot(dir);
    for (path, node) in s.iter_mut() {
        if path.ends_with("state/lock") {
            node.1 = "<lock holder record>".into();
        }
    }
    s
}

/// Creates `dir` with two files and a subdirectory, to be checked by snapshot afterwards.
pub fn make_sentinel(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir sentinel");
    std::fs::write(dir.join("keep.txt"), "must survive\n").expect("write sentinel");
    std::fs::write(dir.join("sub/also.txt"), "must survive too\n").expect("write sentinel");
}
