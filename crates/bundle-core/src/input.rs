//! Opening input files (bundles, keys, signatures) safely: a FIFO or device given as a bundle must be
//! refused, not read — and opening a FIFO with no writer would block forever, so the file is opened
//! non-blocking and checked with fstat before anything is read.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why an input could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file")]
    NotRegular,
}

/// Opens `path` for reading if, and only if, it is a regular file (symlinks to one are followed).
#[allow(unsafe_code)]
pub fn open_regular(path: &Path) -> Result<File, OpenError> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(OpenError::NotRegular);
    }
    // Regular files ignore O_NONBLOCK, but clear it so the descriptor behaves as usual.
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, with standard flags.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn fifo_and_directory_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(open_regular(&fifo), Err(OpenError::NotRegular)));
        assert!(matches!(open_regular(d.path()), Err(OpenError::NotRegular)));
        std::fs::write(d.path().join("r"), b"x").unwrap();
        assert!(open_regular(&d.path().join("r")).is_ok());
    }
}
