//! One exclusive lock per site (`state/lock`). The kernel releases an flock when its process dies,
//! so a kill -9 never leaves a stale lock; the file's content only says who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Who holds the lock, written into the lock file for the next one to read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub since: String,
}

/// Held until dropped.
#[derive(Debug)]
pub struct SiteLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another bundle-install holds the site lock: pid {}, `{}`, since {}", .0.pid, .0.command, .0.since)]
    Held(Holder),
    #[error("another bundle-install holds the site lock (holder unknown)")]
    HeldUnknown,
    #[error("cannot open lock file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl SiteLock {
    /// Takes the lock without waiting.
    #[allow(unsafe_code)]
    pub fn acquire(path: &Path, command: &str) -> Result<SiteLock, LockError> {
        let io = |source| LockError::Io { path: path.display().to_string(), source };
        // O_NOFOLLOW: a lock file planted as a symlink must not make us write elsewhere.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes its name just after taking the lock: right then the file still
                // names the previous (finished) holder. Read again briefly until it names a live one.
                let mut holder = None;
                for _ in 0..50 {
                    let mut text = String::new();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut text);
                    holder = serde_json::from_str::<Holder>(&text).ok();
                    // SAFETY: kill with signal 0 only checks that the process exists.
                    if holder.as_ref().is_some_and(|h| unsafe { libc::kill(h.pid as i32, 0) } == 0) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                return Err(holder.map(LockError::Held).unwrap_or(LockError::HeldUnknown));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder =
            Holder { pid: std::process::id(), command: command.to_string(), since: bundle_core::time::now_rfc3339() };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(serde_json::to_string(&holder).unwrap_or_default().as_bytes()).map_err(io)?;
        Ok(SiteLock { _file: file })
    }
}
