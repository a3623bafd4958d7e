//! Durable file-system primitives: atomic replacement (write beside, fsync, rename, fsync the
//! directory), the atomic symlink swap, and tree removal that never follows links.

#![allow(unsafe_code)] // syncfs, fallocate and geteuid system calls are this module's job; each block says why it is sound.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// fsyncs a directory so a rename or creation inside it survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a new file beside `path` under a name nobody can predict, `O_CREAT|O_EXCL|O_NOFOLLOW`
/// (so a link or file planted under any name is never opened), with exactly `mode` whatever the
/// umask. Returns the file and its path.
pub(crate) fn create_unique_beside(path: &Path, mode: u32) -> io::Result<(File, std::path::PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut last = None;
    for _ in 0..16 {
        let mut r = [0u8; 8];
        getrandom::getrandom(&mut r).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = dir.join(format!(".{name}.tmp-{}-{:016x}", std::process::id(), u64::from_le_bytes(r)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => {
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                return Ok((f, tmp));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Replaces `path` with `data` atomically: a reader sees the old or the new content, never a mix,
/// even after a crash. The new file is 0644 (see [`write_atomic_mode`]).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// [`write_atomic`] with the new file's mode. The temporary file is [`create_unique_beside`]'s.
pub(crate) fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_steps(path, data, mode).map_err(|(_, e)| e)
}

/// The directory holding `path`: its parent, or `.` for a bare file name (whose parent is empty,
/// and an empty path cannot be opened to fsync).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The step of an atomic write that failed, for callers whose messages say which (a config written
/// for the admin names the directory when the temporary file cannot be created there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteStep {
    /// Creating the temporary file in the directory ([`parent_dir`]).
    CreateTemp,
    /// Writing the data to it.
    Write,
    /// fsync of the temporary file.
    SyncFile,
    /// Renaming it over `path`.
    Rename,
    /// fsync of the directory ([`parent_dir`]).
    SyncDir,
}

/// [`write_atomic_mode`], saying which step failed. On failure the temporary file is removed; `path`
/// is as it was unless only the final directory fsync failed (the rename is then done).
pub(crate) fn write_atomic_steps(path: &Path, data: &[u8], mode: u32) -> Result<(), (WriteStep, io::Error)> {
    let dir = parent_dir(path);
    let (mut f, tmp) = create_unique_beside(path, mode).map_err(|e| (WriteStep::CreateTemp, e))?;
    let result = (|| {
        f.write_all(data).map_err(|e| (WriteStep::Write, e))?;
        f.sync_all().map_err(|e| (WriteStep::SyncFile, e))?;
        fs::rename(&tmp, path).map_err(|e| (WriteStep::Rename, e))?;
        sync_dir(dir).map_err(|e| (WriteStep::SyncDir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Points the symlink `link` at `target` atomically: a new link is made beside it and renamed over
/// it, so `link` is never absent and never half-written.
pub(crate) fn swap_symlink(link: &Path, target: &Path) -> io::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.new"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link)?;
    sync_dir(dir)
}

/// Removes a symlink if it exists (a clean install undone has no `current`).
pub(crate) fn remove_symlink(link: &Path) -> io::Result<()> {
    match fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(link)?;
            sync_dir(link.parent().unwrap_or(Path::new(".")))
        }
        Ok(_) => Err(io::Error::other(format!("{} is not a symlink", link.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a directory tree if it exists; `remove_dir_all` does not follow symlinks inside it.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() || m.is_file() => fs::remove_file(path),
        Ok(_) => fs::remove_dir_all(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Flushes everything written to the file system holding `path` (one `syncfs` instead of an fsync
/// per file of a staged release).
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which stays open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes sure `path` is a regular file with at least `len` bytes of disk space allocated to it, so
/// that deleting it gives that much back. Returns `Ok(false)` when it already was (one `lstat`:
/// the usual case), `Ok(true)` when it was (re)created: the space is taken with `fallocate(2)`
/// (writing zeros where the file system cannot), then fsynced; the caller makes the directory
/// entry durable. A file that cannot be completed is removed again. Never follows a symlink.
pub(crate) fn ensure_allocated(path: &Path, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = fs::symlink_metadata(path) {
        // st_blocks counts 512-byte units, whatever the file system's block size.
        if m.file_type().is_file() && m.len() >= len && m.blocks().saturating_mul(512) >= len {
            return Ok(false);
        }
    }
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        if !f.metadata()?.file_type().is_file() {
            return Err(io::Error::other(format!("{} is not a regular file", path.display())));
        }
        let off_len = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let allocated = loop {
            // SAFETY: fallocate only acts on the descriptor, which stays open for the call.
            if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, off_len) } == 0 {
                break true;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => break false,
                _ => return Err(e),
            }
        };
        if !allocated {
            // No fallocate here (some network and older file systems): real zeros take real blocks.
            f.set_len(0)?;
            let zeros = vec![0u8; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                (&f).write_all(&zeros[..n])?;
                left -= n as u64;
            }
        }
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(true),
        Err(e) => {
            if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
                let _ = fs::remove_file(path);
            }
            Err(e)
        }
    }
}

/// Creates a directory that must be a real directory, not a symlink planted by someone else
/// (0755 when created).
pub(crate) fn ensure_real_dir(path: &Path) -> io::Result<()> {
    ensure_real_dir_mode(path, 0o755)
}

/// [`ensure_real_dir`], creating the directory with exactly `mode` whatever the umask (an existing
/// directory keeps its mode: the admin may have set it).
pub(crate) fn ensure_real_dir_mode(path: &Path, mode: u32) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "{} exists and is not a directory (a symlink?); refusing to write through it",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir_mode(path, mode),
        Err(e) => Err(e),
    }
}

/// `mkdir` with exactly `mode`: created owner-only, then opened to `mode`, so the directory is
/// never more open than asked for, even for an instant or under `umask 000`.
pub(crate) fn create_dir_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Refuses a directory the installer trusts for its own state (`trust/`, `state/`, the root) when
/// another user owns it or anyone but the owner may write it: such a user could plant a key, a
/// journal or a link there. Missing is fine (nothing to trust yet).
pub(crate) fn check_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is owned by uid {}, not by the user running the installer (uid {me})", path.display(), m.uid()),
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by {} (mode {:o})",
                path.display(),
                if m.mode() & 0o002 != 0 { "every user" } else { "its group" },
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// How much of a large copy is written before it is handed to the disk (see [`copy_with_writeback`]).
const WRITEBACK_STEP: u64 = 32 << 20;

/// Copies the rest of `from` into `to` at its current position in the kernel (`copy_file_range`, no
/// trip through user space), and submits each written stretch for writeback as it goes
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which starts the I/O without waiting): the disk works
/// while the copy goes on, and the caller's fsync waits only for the tail. 1 GB in place on this
/// machine: copy + fsync 0.19 s against 0.22–0.27 s. Returns the bytes copied.
pub(crate) fn copy_with_writeback(from: &mut File, to: &File) -> io::Result<u64> {
    use std::io::Read;
    let mut to = to;
    let start = to.stream_position()?;
    let mut copied = 0u64;
    loop {
        let n = io::copy(&mut Read::by_ref(from).take(WRITEBACK_STEP), &mut to)?;
        if n == 0 {
            return Ok(copied);
        }
        // Only a hint: a failure still ends in the caller's fsync, which reports real errors.
        bundle_core::durable::start_writeback(to, start + copied, n);
        copied += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_replaces_link() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("current");
        swap_symlink(&link, Path::new("releases/1")).unwrap();
        swap_symlink(&link, Path::new("releases/2")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("releases/2"));
        remove_symlink(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
    }

    #[test]
    fn allocated_once_then_kept() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".reserve");
        assert!(ensure_allocated(&p, 1 << 20).unwrap());
        let m = fs::metadata(&p).unwrap();
        assert!(m.len() >= 1 << 20 && m.blocks() * 512 >= 1 << 20);
        assert!(!ensure_allocated(&p, 1 << 20).unwrap(), "a complete file is left alone");
        // Short, or sparse: made whole again.
        fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(4096).unwrap();
        assert!(ensure_allocated(&p, 1 << 20).unwrap());
        fs::remove_file(&p).unwrap();
        fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        assert!(ensure_allocated(&p, 1 << 20).unwrap());
        assert!(fs::metadata(&p).unwrap().blocks() * 512 >= 1 << 20);
        // Never through a planted link.
        let target = d.path().join("target");
        std::os::unix::fs::symlink(&target, d.path().join("planted")).unwrap();
        assert!(ensure_allocated(&d.path().join("planted"), 1 << 20).is_err());
        assert!(!target.exists());
        assert!(fs::symlink_metadata(d.path().join("planted")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn atomic_write_never_opens_a_planted_temporary_name() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("site.json");
        let outside = d.path().join("outside");
        fs::write(&outside, b"precious").unwrap();
        // The name the old code used, planted as a link.
        std::os::unix::fs::symlink(&outside, d.path().join(format!(".site.json.tmp-{}", std::process::id()))).unwrap();
        write_atomic_mode(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 3, "only the file, the target and the planted link: {leftovers:?}");
    }

    #[test]
    fn atomic_write_says_which_step_failed() {
        let d = tempfile::tempdir().unwrap();
        let (step, e) = write_atomic_steps(&d.path().join("missing/f"), b"x", 0o644).unwrap_err();
        assert_eq!((step, e.kind()), (WriteStep::CreateTemp, io::ErrorKind::NotFound));
        assert_eq!(parent_dir(Path::new("app.yaml")), Path::new("."), "a bare name is in the current directory");
        assert_eq!(parent_dir(Path::new("/etc/app.yaml")), Path::new("/etc"));
    }

    #[test]
    fn private_dir_checks_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("trust");
        check_private_dir(&p).unwrap();
        create_dir_mode(&p, 0o755).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o755);
        check_private_dir(&p).unwrap();
        for bad in [0o777, 0o775, 0o757] {
            fs::set_permissions(&p, fs::Permissions::from_mode(bad)).unwrap();
            assert!(check_private_dir(&p).is_err(), "{bad:o} accepted");
        }
    }

    #[test]
    fn atomic_write_and_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        std::os::unix::fs::symlink("/", d.path().join("planted")).unwrap();
        assert!(ensure_real_dir(&d.path().join("planted")).is_err());
        ensure_real_dir(&d.path().join("real")).unwrap();
    }

    #[test]
    fn copy_with_writeback_overwrites_in_place_from_the_start() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let data: Vec<u8> = (0..(3 * WRITEBACK_STEP + 12_345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &data).unwrap();
        std::fs::write(&b, vec![7u8; data.len() + 100]).unwrap();
        let mut from = File::open(&a).unwrap();
        let to = OpenOptions::new().read(true).write(true).open(&b).unwrap();
        assert_eq!(copy_with_writeback(&mut from, &to).unwrap(), data.len() as u64);
        let got = std::fs::read(&b).unwrap();
        assert_eq!(&got[..data.len()], &data[..]);
        assert_eq!(&got[data.len()..], &[7u8; 100][..], "nothing past the copy is touched");
    }
}
