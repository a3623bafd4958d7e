//! Opening directories and files inside the site root without following a symbolic link at any
//! component. The site's data directories are often writable by the app's service user (SQLite
//! needs that); such a user could otherwise swap a component of a path for a link between the
//! installer's check and its use, and have root read or write a file elsewhere.
//!
//! A directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel
//! has it (Linux ≥ 5.6), else component by component with `O_NOFOLLOW | O_DIRECTORY`; the checks
//! are made on the opened descriptor. Code that must hand a path to a library (SQLite) gives it
//! `/proc/self/fd/N/NAME`: the kernel resolves `/proc/self/fd/N` to the directory already opened,
//! so no component above `NAME` can be redirected any more.

#![allow(unsafe_code)] // syscalls (openat2, mkdirat, fstat…) are this module's whole job; each block says why it is sound.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a directory by path (the site root: the admin's path, links in it are the admin's choice).
pub(crate) fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let c = cstr(root.as_os_str())?;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
    let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn link_error(root: &Path, rel: &Path, e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => io::Error::other(format!(
            "{} goes through a symbolic link or a non-directory inside the site; the installer never follows links there (check who put it there)",
            root.join(rel).display()
        )),
        _ => e,
    }
}

fn openat_dir(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `dir` is an open descriptor and `c` a valid NUL-terminated name.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; `None` when the kernel (or a seccomp
/// filter) does not offer it.
fn openat2_dir(dir: &OwnedFd, rel: &Path) -> Option<io::Result<OwnedFd>> {
    let c = match cstr(rel.as_os_str()) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: open_how is plain data; zero is a valid value for each field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: openat2 reads `how` (of the size given) and the path; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::E2BIG) => None,
            _ => Some(Err(e)),
        };
    }
    // SAFETY: fresh descriptor.
    Some(Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) }))
}

/// Opens directory `rel` (relative, plain components only) under `root` without following a link
/// at any component. With `create`, missing components are made with that mode (`mkdirat`, never
/// through a link); without, a missing directory is `Ok(None)`.
pub(crate) fn open_dir(root: &Path, rel: &Path, create: Option<u32>) -> io::Result<Option<OwnedFd>> {
    let parts: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a plain relative path", rel.display()),
            )),
        })
        .collect::<io::Result<_>>()?;
    let root_fd = open_root(root)?;
    if parts.is_empty() {
        return Ok(Some(root_fd));
    }
    match openat2_dir(&root_fd, rel) {
        Some(Ok(fd)) => return Ok(Some(fd)),
        Some(Err(e)) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {}
        Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Some(Err(e)) => return Err(link_error(root, rel, e)),
        None => {}
    }
    let mut cur = root_fd;
    for name in parts {
        cur = match openat_dir(&cur, name) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(mode) = create else { return Ok(None) };
                let c = cstr(name)?;
                // SAFETY: valid descriptor and name. mkdirat never follows a link at the last component.
                match check(unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), mode) }) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                openat_dir(&cur, name).map_err(|e| link_error(root, rel, e))?
            }
            Err(e) => return Err(link_error(root, rel, e)),
        };
    }
    Ok(Some(cur))
}

/// What is at `name` inside the open directory `dir`, without following a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Missing,
    /// A regular file: device and inode.
    File(u64, u64),
    /// A symbolic link, directory, FIFO, …
    Other,
}

pub(crate) fn entry_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Entry> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat is valid plain data; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, name and out-pointer.
    match check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }) {
        Ok(_) if st.st_mode & libc::S_IFMT == libc::S_IFREG => Ok(Entry::File(st.st_dev, st.st_ino)),
        Ok(_) => Ok(Entry::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
        Err(e) => Err(e),
    }
}

/// Opens (or, with `create`, creates `O_EXCL`) the regular file `name` in `dir` read-write, never
/// through a link (`O_NOFOLLOW`), and checks on the descriptor that it is a regular file.
pub(crate) fn open_file_at(dir: &OwnedFd, name: &OsStr, create: Option<u32>) -> io::Result<std::fs::File> {
    let c = cstr(name)?;
    let base = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: valid descriptor and name.
    let mut fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), base) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        match (e.kind(), create) {
            (io::ErrorKind::NotFound, Some(mode)) => {
                // SAFETY: as above; O_EXCL with O_CREAT never follows a link either.
                fd = check(unsafe {
                    libc::openat(dir.as_raw_fd(), c.as_ptr(), base | libc::O_CREAT | libc::O_EXCL, mode as libc::c_uint)
                })?;
            }
            _ => return Err(e),
        }
    }
    // SAFETY: fresh descriptor.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::other(format!("`{}` is not a regular file", name.to_string_lossy())));
    }
    Ok(f)
}

/// `/proc/self/fd/N` for an open descriptor, when `/proc` is mounted.
pub(crate) fn proc_path(fd: &OwnedFd) -> Option<PathBuf> {
    let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    p.is_dir().then_some(p)
}

/// Device and inode of every regular file this process has open (for checking which file a library
/// opened after the fact).
pub(crate) fn open_file_ids() -> Vec<(u64, u64, i32)> {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        // SAFETY: zeroed stat is valid; fstat on a number that may have been closed meanwhile just fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat fills the struct we pass; a stale descriptor number only makes it fail.
        if unsafe { libc::fstat(n, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            out.push((st.st_dev, st.st_ino, n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_through_a_link_at_any_component() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        assert!(open_dir(&root, Path::new("data/sub"), None).unwrap().is_some());
        assert!(open_dir(&root, Path::new("data/none"), None).unwrap().is_none());
        // A link in the middle, and at the end.
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert!(open_dir(&root, Path::new("link/sub"), None).is_err());
        assert!(open_dir(&root, Path::new("link"), Some(0o755)).is_err());
        std::os::unix::fs::symlink(&outside, root.join("data/sub2")).unwrap();
        assert!(open_dir(&root, Path::new("data/sub2/new"), Some(0o755)).is_err());
        assert!(!outside.join("new").exists(), "nothing is created through a link");
        // Created component by component.
        let fd = open_dir(&root, Path::new("data/a/b"), Some(0o750)).unwrap().unwrap();
        assert!(root.join("data/a/b").is_dir());
        assert_eq!(entry_at(&fd, OsStr::new("x")).unwrap(), Entry::Missing);
        let f = open_file_at(&fd, OsStr::new("x"), Some(0o644)).unwrap();
        drop(f);
        assert!(matches!(entry_at(&fd, OsStr::new("x")).unwrap(), Entry::File(..)));
        std::os::unix::fs::symlink("/etc/hostname", root.join("data/a/b/l")).unwrap();
        assert_eq!(entry_at(&fd, OsStr::new("l")).unwrap(), Entry::Other);
        assert!(open_file_at(&fd, OsStr::new("l"), Some(0o644)).is_err());
        let p = proc_path(&fd).unwrap();
        assert!(p.join("x").is_file());
    }
}
