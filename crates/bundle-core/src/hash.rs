//! SHA-256 helpers: hex digests of byte slices and files, and a writer that hashes what passes through.
//! The `sha2` crate picks the CPU's SHA extensions at run time where they exist.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Lowercase hex of a SHA-256 digest.
pub fn to_hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of a byte slice, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// SHA-256 and size of a file, read in large blocks.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((to_hex(&hasher.finalize()), total))
}

/// Whether `s` looks like a SHA-256 hex digest as we write them (64 lowercase hex digits).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// A writer that hashes every byte written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), written: 0 }
    }

    /// The inner writer, the hex digest and the number of bytes written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, to_hex(&self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&sha256_hex(b"")));
        assert!(!is_sha256_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
    }

    #[test]
    fn hashing_writer_matches() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (inner, hex, n) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(n, 3);
        assert_eq!(hex, sha256_hex(b"abc"));
    }
}

/// A reader that hashes everything read through it on a second thread, so hashing the whole bundle
/// file (for the evidence record) costs no time on the thread that hashes and checks each entry.
pub struct ThreadedHashReader<R> {
    inner: R,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<(String, u64)>>,
}

impl<R: Read> ThreadedHashReader<R> {
    pub fn new(inner: R) -> Self {
        // Two chunks in flight: enough to keep both threads busy, and memory stays flat however
        // long the bundle (a deeper queue only fills up when hashing is the slower side).
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (spare_tx, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let worker = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            for chunk in rx {
                hasher.update(&chunk);
                total += chunk.len() as u64;
                // Hand the buffer back for reuse; the reader may already be gone.
                let _ = spare_tx.send(chunk);
            }
            (to_hex(&hasher.finalize()), total)
        });
        ThreadedHashReader { inner, tx: Some(tx), spare, worker: Some(worker) }
    }

    /// The hex digest and byte count of everything read so far (normally: the whole file).
    pub fn finish(mut self) -> (String, u64) {
        drop(self.tx.take());
        self.worker.take().map(|w| w.join().expect("hash worker does not panic")).unwrap_or_default()
    }
}

impl<R: Read> Read for ThreadedHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(tx) = &self.tx {
                let mut chunk = self.spare.try_recv().unwrap_or_default();
                chunk.clear();
                chunk.extend_from_slice(&buf[..n]);
                tx.send(chunk).map_err(|_| io::Error::other("hash worker stopped"))?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod threaded_tests {
    use super::*;

    #[test]
    fn threaded_reader_hashes_everything() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let mut r = ThreadedHashReader::new(&data[..]);
        let mut out = Vec::new();
        let mut buf = [0u8; 7777];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(r.finish(), (sha256_hex(&data), data.len() as u64));
    }
}
