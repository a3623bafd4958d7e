//! SHA-256 helpers: hex digests of byte slices and files, a writer that hashes what passes through,
//! and a reader and a writer that hash what passes through on a second thread, from a fixed pool of
//! buffers. The `sha2` crate picks the CPU's SHA extensions at run time where they exist.

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
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
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

/// Buffers a threaded hasher keeps in circulation with its caller: one being filled, one being
/// hashed, one queued, so a short stall on either side does not stop the other. The pool is fixed and
/// every buffer is made up front (on first use): the caller waits for a spare rather than allocating
/// one whenever the worker happens to be late, so memory is the same for a 100 MB and a 2 GB stream
/// and does not depend on scheduling. (A producer that trades its own buffer through
/// [`ThreadedHashWriter::write_owned`] adds that one to the circulation.)
const POOL_BUFFERS: usize = 3;

/// The second thread of [`ThreadedHashReader`] and [`ThreadedHashWriter`]: hashes the buffers it is
/// sent, in order, and hands each one back for reuse.
struct HashThread {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Buffers made so far (at most [`POOL_BUFFERS`]).
    made: usize,
    worker: Option<std::thread::JoinHandle<(String, u64)>>,
}

fn worker_stopped() -> io::Error {
    io::Error::other("hash worker stopped")
}

impl HashThread {
    fn spawn() -> Self {
        // Room for the whole pool: the queue itself never holds more.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(POOL_BUFFERS);
        let (spare_tx, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let worker = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            for chunk in rx {
                hasher.update(&chunk);
                total += chunk.len() as u64;
                // Hand the buffer back for reuse; the caller may already be gone.
                let _ = spare_tx.send(chunk);
            }
            (to_hex(&hasher.finalize()), total)
        });
        HashThread { tx: Some(tx), spare, made: 0, worker: Some(worker) }
    }

    /// A buffer to fill: a new, empty one (of `capacity`) until the pool is complete, then the next
    /// one the worker hands back (as it was: the caller clears or overwrites it), waiting for it if
    /// need be.
    fn buffer(&mut self, capacity: usize) -> io::Result<Vec<u8>> {
        if self.made < POOL_BUFFERS {
            self.made += 1;
            return Ok(Vec::with_capacity(capacity));
        }
        self.spare.recv().map_err(|_| worker_stopped())
    }

    /// Queues `chunk` to be hashed after everything sent before it.
    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx.send(chunk).map_err(|_| worker_stopped()),
            None => Err(worker_stopped()),
        }
    }

    /// The hex digest and byte count of everything sent.
    fn finish(&mut self) -> (String, u64) {
        drop(self.tx.take());
        self.worker.take().map(|w| w.join().expect("hash worker does not panic")).unwrap_or_default()
    }
}

/// A reader that hashes everything read through it on a second thread, so hashing the whole bundle
/// file (for the evidence record) costs no time on the thread that hashes and checks each entry.
pub struct ThreadedHashReader<R> {
    inner: R,
    hash: HashThread,
}

impl<R: Read> ThreadedHashReader<R> {
    pub fn new(inner: R) -> Self {
        ThreadedHashReader { inner, hash: HashThread::spawn() }
    }

    /// The hex digest and byte count of everything read so far (normally: the whole file).
    pub fn finish(mut self) -> (String, u64) {
        self.hash.finish()
    }
}

impl<R: Read> Read for ThreadedHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            // Sized by the caller's buffer, so a reused chunk never has to grow.
            let mut chunk = self.hash.buffer(buf.len())?;
            chunk.clear();
            chunk.extend_from_slice(&buf[..n]);
            self.hash.send(chunk)?;
        }
        Ok(n)
    }
}

/// A buffered writer that hashes everything written through it on a second thread, so the thread
/// producing a multi-gigabyte bundle only copies bytes and never waits for SHA-256 (which, for
/// stored content, costs more than everything else it does). It is its own write buffer: each full buffer is written to
/// `inner` in one call and then handed to the hash thread, from a fixed pool (no second copy into a
/// `BufWriter`, and memory does not grow with the output).
pub struct ThreadedHashWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    capacity: usize,
    hash: HashThread,
    written: u64,
}

impl<W: Write> ThreadedHashWriter<W> {
    /// Writes to `inner` in blocks of `capacity` bytes (the last one shorter).
    pub fn new(inner: W, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let mut hash = HashThread::spawn();
        let buf = hash.buffer(capacity).expect("the first buffer is made, not awaited");
        ThreadedHashWriter { inner, buf, capacity, hash, written: 0 }
    }

    /// Writes the buffer out and queues it for hashing.
    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.inner.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        // Queue it before waiting for a spare, so the worker is never idle because of us.
        self.hash.send(std::mem::take(&mut self.buf))?;
        self.buf = self.hash.buffer(self.capacity)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes all of `chunk` (after anything buffered) without copying it, hands it to the hash
    /// thread, and returns a buffer from the pool in exchange, as it was (length and contents are
    /// the caller's to overwrite). For producers that fill large buffers themselves.
    pub fn write_owned(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        self.drain()?;
        self.inner.write_all(&chunk)?;
        self.written += chunk.len() as u64;
        self.hash.send(chunk)?;
        self.hash.buffer(self.capacity)
    }

    /// Flushes, then returns the inner writer, the hex digest and the number of bytes written.
    pub fn finish(mut self) -> io::Result<(W, String, u64)> {
        self.drain()?;
        self.inner.flush()?;
        let (sha, hashed) = self.hash.finish();
        debug_assert_eq!(hashed, self.written);
        Ok((self.inner, sha, self.written))
    }
}

impl<W: Write> Write for ThreadedHashWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == self.capacity {
            self.drain()?;
        }
        let n = data.len().min(self.capacity - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.write(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes out what is buffered (hashing it too). Not needed before [`finish`](Self::finish).
    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
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

    #[test]
    fn threaded_writer_writes_and_hashes_everything() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        // Small and large writes, and a buffer that does not divide either.
        let mut w = ThreadedHashWriter::new(Vec::new(), 65_536 + 3);
        let mut rest = &data[..];
        for size in [1usize, 100, 200_000, 7, 65_539, 1].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = size.min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        let (out, sha, n) = w.finish().unwrap();
        assert_eq!(out, data);
        assert_eq!((sha, n), (sha256_hex(&data), data.len() as u64));

        let (out, sha, n) = ThreadedHashWriter::new(Vec::new(), 16).finish().unwrap();
        assert!(out.is_empty());
        assert_eq!((sha, n), (sha256_hex(b""), 0));
    }

    #[test]
    fn owned_chunks_keep_their_place_between_writes() {
        let mut w = ThreadedHashWriter::new(Vec::new(), 4);
        let mut expected = Vec::new();
        for i in 0..20u8 {
            w.write_all(&[i; 3]).unwrap();
            expected.extend_from_slice(&[i; 3]);
            let mut chunk = w.write_owned(vec![i; 10 + i as usize]).unwrap();
            expected.extend(std::iter::repeat_n(i, 10 + i as usize));
            // What comes back is a buffer to overwrite, whatever it holds.
            chunk.clear();
            chunk.extend_from_slice(b"xyz");
            expected.extend_from_slice(b"xyz");
            w.write_owned(chunk).unwrap();
        }
        let (out, sha, n) = w.finish().unwrap();
        assert_eq!(out, expected);
        assert_eq!((sha, n), (sha256_hex(&expected), expected.len() as u64));
    }
}
