//! Durable-write helpers shared by both tools: handing a file's freshly written bytes to the disk
//! early, so a large write (a bundle being built, a database backup or restore) does not leave all of
//! its I/O for the final fsync.

use std::fs::File;

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk without waiting for
/// them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the disk works while the caller goes on writing,
/// and its final fsync waits only for what came after. Only a hint: a failure here (or a file system
/// or system without it) changes nothing, since the caller's fsync still writes and reports any
/// real error.
#[allow(unsafe_code)]
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor the caller's `File` keeps open for the call;
        // it reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writeback_is_a_harmless_hint() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut f = File::create(&p).unwrap();
        f.write_all(&[1u8; 8192]).unwrap();
        start_writeback(&f, 0, 8192);
        // Past the end, and on a read-only descriptor: still nothing to report.
        start_writeback(&f, 1 << 30, 4096);
        start_writeback(&File::open(&p).unwrap(), 0, 8192);
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), vec![1u8; 8192]);
    }
}
