//! Writing bundles: a ustar stream inside one gzip member, written deterministically.
//!
//! Wheels are zip files whose members are already deflated, so deflating them again costs ~25 s per GB
//! for a ~1.5% gain. The gzip member is therefore built by hand from two kinds of deflate blocks:
//! tar headers and text files go through the compressor, already-compressed files are emitted as
//! *stored* blocks (copied, never compressed). Any deflate decoder, `gzip -d` and GNU tar included,
//! reads the result as one ordinary stream. The format is in `bundle-spec/archive.md`.

use std::io::{self, IoSliceMut, Read, Write};

use flate2::{Compress, Compression, Crc, FlushCompress};

/// Largest payload of one stored deflate block.
const STORED_MAX: usize = 65_535;
/// A stored block's header: BFINAL=0, BTYPE=00 padded to the byte boundary, LEN, NLEN.
const STORED_HEAD: usize = 5;
/// A stored file's content is cut into segments of this many bytes (the last one shorter), and each
/// segment into blocks of [`STORED_MAX`] bytes (the last one shorter): 16 full blocks and one of 16
/// bytes per MiB. Where the blocks are cut is part of the output bytes, so this never changes.
const STORED_SEGMENT: usize = 1 << 20;

/// Where an [`ArchiveWriter`] writes. Stored content is read from its file straight into a buffer laid
/// out as stored blocks, which is handed to the sink whole: a sink that keeps the buffer (the threaded
/// hashing writer, which hashes it on another thread) gives back another one, so stored bytes are
/// never copied in user space between the input file and the bundle file.
pub trait ArchiveSink: Write {
    /// Writes all of `chunk` and returns a buffer for the next one: its length and contents are
    /// whatever they were (the caller overwrites them), which saves clearing it.
    fn write_chunk(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        self.write_all(&chunk)?;
        Ok(chunk)
    }
}

impl ArchiveSink for Vec<u8> {}
impl<W: Write> ArchiveSink for io::BufWriter<W> {}
impl<W: Write> ArchiveSink for crate::hash::ThreadedHashWriter<W> {
    fn write_chunk(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        self.write_owned(chunk)
    }
}

/// A gzip member whose deflate stream mixes compressed and stored blocks.
pub struct GzipWriter<W: ArchiveSink> {
    out: W,
    compress: Compress,
    /// The compressor has taken input since its last flush, so it must be flushed to a byte boundary
    /// before raw stored blocks may follow.
    compress_dirty: bool,
    crc: Crc,
    buf: Vec<u8>,
    /// Stored blocks of one segment, headers and content in place (see [`ArchiveSink`]).
    stored: Vec<u8>,
}

impl<W: ArchiveSink> GzipWriter<W> {
    /// Starts the member: a fixed header with no time stamp, no file name and OS "unknown", so the
    /// same input always gives the same bytes.
    pub fn new(mut out: W, level: u32) -> io::Result<Self> {
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        Ok(GzipWriter {
            out,
            compress: Compress::new(Compression::new(level), false),
            compress_dirty: false,
            crc: Crc::new(),
            buf: vec![0; 256 * 1024],
            stored: Vec::new(),
        })
    }

    /// Writes `data` through the compressor.
    pub fn write_compressed(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.crc.update(data);
        while !data.is_empty() {
            let before_in = self.compress.total_in();
            let before_out = self.compress.total_out();
            self.compress
                .compress(data, &mut self.buf, FlushCompress::None)
                .map_err(io::Error::other)?;
            let used = (self.compress.total_in() - before_in) as usize;
            let made = (self.compress.total_out() - before_out) as usize;
            self.out.write_all(&self.buf[..made])?;
            data = &data[used..];
            self.compress_dirty = true;
        }
        Ok(())
    }

    /// Flushes the compressor to a byte boundary (a sync flush), then forgets its window: stored
    /// blocks written next are output the compressor never saw, so it must not refer back past them.
    fn align(&mut self) -> io::Result<()> {
        if !self.compress_dirty {
            return Ok(());
        }
        loop {
            let before_out = self.compress.total_out();
            self.compress
                .compress(&[], &mut self.buf, FlushCompress::Sync)
                .map_err(io::Error::other)?;
            let made = (self.compress.total_out() - before_out) as usize;
            self.out.write_all(&self.buf[..made])?;
            if made < self.buf.len() {
                break;
            }
        }
        self.compress.reset();
        self.compress_dirty = false;
        Ok(())
    }

    /// Writes `data` as stored blocks, untouched.
    pub fn write_stored(&mut self, data: &[u8]) -> io::Result<()> {
        self.align()?;
        self.crc.update(data);
        for chunk in data.chunks(STORED_MAX) {
            self.out.write_all(&stored_head(chunk.len()))?;
            self.out.write_all(chunk)?;
        }
        Ok(())
    }

    /// Writes the next `len` bytes of `content` as stored blocks, segment by segment (see
    /// [`STORED_SEGMENT`]); each segment is read straight into place between its block headers.
    /// Returns whether `content` had them all (if not, what was written is incomplete).
    fn write_stored_from(&mut self, content: &mut dyn Read, len: u64) -> io::Result<bool> {
        self.align()?;
        let mut left = len;
        while left > 0 {
            let segment = left.min(STORED_SEGMENT as u64) as usize;
            let mut chunk = std::mem::take(&mut self.stored);
            // Only the first use of a buffer zero-fills it; later ones overwrite what is there.
            chunk.resize(segment + segment.div_ceil(STORED_MAX) * STORED_HEAD, 0);
            let mut slots: Vec<IoSliceMut<'_>> = chunk
                .chunks_mut(STORED_HEAD + STORED_MAX)
                .map(|block| {
                    let (head, body) = block.split_at_mut(STORED_HEAD);
                    head.copy_from_slice(&stored_head(body.len()));
                    IoSliceMut::new(body)
                })
                .collect();
            // One read call for the whole segment where the reader supports it (files do: readv).
            let mut unread = &mut slots[..];
            let mut got = 0;
            while got < segment {
                match content.read_vectored(unread) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        got += n;
                        IoSliceMut::advance_slices(&mut unread, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            drop(slots);
            for block in chunk.chunks(STORED_HEAD + STORED_MAX) {
                self.crc.update(&block[STORED_HEAD..]);
            }
            self.stored = self.out.write_chunk(chunk)?;
            left -= segment as u64;
        }
        Ok(true)
    }

    /// Ends the deflate stream with an empty final stored block and writes the gzip trailer.
    pub fn finish(mut self) -> io::Result<W> {
        self.align()?;
        self.out.write_all(&[1, 0, 0, 0xff, 0xff])?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The header of a stored block of `len` (at most [`STORED_MAX`]) bytes: BFINAL=0, BTYPE=00, padded
/// to the byte boundary, then LEN and its complement.
fn stored_head(len: usize) -> [u8; STORED_HEAD] {
    let len = len as u16;
    [0u8, len as u8, (len >> 8) as u8, !len as u8, (!len >> 8) as u8]
}

/// Writes a deterministic ustar archive of regular files into a [`GzipWriter`].
pub struct ArchiveWriter<W: ArchiveSink> {
    gz: GzipWriter<W>,
    mtime: u64,
    /// Content of a compressed file on its way to the compressor.
    chunk: Vec<u8>,
}

/// How a file's bytes go into the gzip stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Compress,
    /// Already compressed (wheels): copied as stored blocks.
    Store,
}

impl Packing {
    /// Stored for formats that are compressed already, compressed otherwise.
    pub fn for_path(path: &str) -> Packing {
        let stored = [".whl", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".png", ".jpg"];
        if stored.iter().any(|ext| path.ends_with(ext)) {
            Packing::Store
        } else {
            Packing::Compress
        }
    }
}

impl<W: ArchiveSink> ArchiveWriter<W> {
    /// `mtime` is written on every entry (`SOURCE_DATE_EPOCH`, or 0).
    pub fn new(out: W, mtime: u64) -> io::Result<Self> {
        Ok(ArchiveWriter { gz: GzipWriter::new(out, 6)?, mtime, chunk: vec![0; 1 << 20] })
    }

    /// Appends a regular file of exactly `size` bytes read from `content`.
    pub fn add_file(&mut self, path: &str, mode: u32, size: u64, content: &mut dyn Read, packing: Packing) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        header.set_cksum();
        self.gz.write_compressed(header.as_bytes())?;

        let shrank = || io::Error::new(io::ErrorKind::UnexpectedEof, format!("{path} shrank while being packed"));
        match packing {
            Packing::Compress => {
                let mut left = size;
                while left > 0 {
                    let want = left.min(self.chunk.len() as u64) as usize;
                    let n = content.read(&mut self.chunk[..want])?;
                    if n == 0 {
                        return Err(shrank());
                    }
                    self.gz.write_compressed(&self.chunk[..n])?;
                    left -= n as u64;
                }
            }
            Packing::Store => {
                if !self.gz.write_stored_from(content, size)? {
                    return Err(shrank());
                }
            }
        }
        let pad = (512 - (size % 512) as usize) % 512;
        self.gz.write_compressed(&[0u8; 512][..pad])?;
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks) and closes the gzip member.
    pub fn finish(mut self) -> io::Result<W> {
        self.gz.write_compressed(&[0u8; 1024])?;
        self.gz.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn mixed_blocks_decode_to_the_input() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {}\n", i % 97).into_bytes()).collect();
        let noise: Vec<u8> = (0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut gz = GzipWriter::new(Vec::new(), 6).unwrap();
        gz.write_compressed(&text).unwrap();
        gz.write_stored(&noise).unwrap();
        gz.write_compressed(&text).unwrap();
        gz.write_stored(&noise).unwrap();
        gz.write_stored(b"").unwrap();
        let out = gz.finish().unwrap();
        let expected = [&text[..], &noise, &text, &noise].concat();
        assert_eq!(gunzip(&out), expected);
        assert!(out.len() < expected.len());
    }

    #[test]
    fn archive_lists_with_the_tar_crate() {
        let mut w = ArchiveWriter::new(Vec::new(), 1_700_000_000).unwrap();
        w.add_file("a.txt", 0o644, 5, &mut &b"hello"[..], Packing::Compress).unwrap();
        w.add_file("w/x.whl", 0o755, 3, &mut &b"zip"[..], Packing::Store).unwrap();
        let bytes = w.finish().unwrap();
        let plain = gunzip(&bytes);
        let mut ar = tar::Archive::new(&plain[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.txt", "w/x.whl"]);
    }

    #[test]
    fn short_content_is_an_error() {
        let mut w = ArchiveWriter::new(Vec::new(), 0).unwrap();
        assert!(w.add_file("a", 0o644, 10, &mut &b"abc"[..], Packing::Compress).is_err());
        let mut w = ArchiveWriter::new(Vec::new(), 0).unwrap();
        let e = w.add_file("b.whl", 0o644, 3 << 20, &mut &[7u8; 1 << 20][..], Packing::Store).expect_err("too short");
        assert!(e.to_string().contains("b.whl shrank"), "{e}");
    }

    /// Hands out its bytes a few at a time, as a pipe or a slow device might.
    struct Dribble<'a>(&'a [u8]);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Where the stored blocks are cut is part of the output bytes: per file, segments of 1 MiB, each
    /// cut into blocks of 65,535 bytes. It must not depend on how the content is read, nor on the sink.
    #[test]
    fn stored_blocks_are_cut_the_same_way_whatever_the_reader_and_sink() {
        let noise: Vec<u8> = (0..(2u32 << 20) + 70_000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let text = b"print('hello')\n".repeat(1000);
        let build = |sink_threaded: bool, dribble: bool| -> Vec<u8> {
            fn go<W: ArchiveSink>(sink: W, noise: &[u8], text: &[u8], dribble: bool) -> W {
                let mut w = ArchiveWriter::new(sink, 1).unwrap();
                w.add_file("a.py", 0o644, text.len() as u64, &mut &text[..], Packing::Compress).unwrap();
                if dribble {
                    w.add_file("b.whl", 0o644, noise.len() as u64, &mut Dribble(noise), Packing::Store).unwrap();
                } else {
                    w.add_file("b.whl", 0o644, noise.len() as u64, &mut &noise[..], Packing::Store).unwrap();
                }
                w.add_file("c.whl", 0o644, 5, &mut &b"12345"[..], Packing::Store).unwrap();
                w.finish().unwrap()
            }
            if sink_threaded {
                let out = go(crate::hash::ThreadedHashWriter::new(Vec::new(), 4096), &noise, &text, dribble);
                let (bytes, sha, n) = out.finish().unwrap();
                assert_eq!((sha, n), (crate::hash::sha256_hex(&bytes), bytes.len() as u64));
                bytes
            } else {
                go(Vec::new(), &noise, &text, dribble)
            }
        };
        // The layout spelled out with the public block writers.
        let expected = {
            let mut gz = GzipWriter::new(Vec::new(), 6).unwrap();
            let header = |path: &str, size: usize, mode: u32| {
                let mut h = tar::Header::new_ustar();
                h.set_path(path).unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size as u64);
                h.set_mode(mode);
                h.set_mtime(1);
                h.set_uid(0);
                h.set_gid(0);
                h.set_username("root").unwrap();
                h.set_groupname("root").unwrap();
                h.set_cksum();
                h.as_bytes().to_vec()
            };
            let pad = |n: usize| vec![0u8; (512 - n % 512) % 512];
            gz.write_compressed(&header("a.py", text.len(), 0o644)).unwrap();
            gz.write_compressed(&text).unwrap();
            gz.write_compressed(&pad(text.len())).unwrap();
            gz.write_compressed(&header("b.whl", noise.len(), 0o644)).unwrap();
            // Spelled out, not STORED_SEGMENT: bundles built before must stay byte-identical.
            for segment in noise.chunks(1 << 20) {
                gz.write_stored(segment).unwrap();
            }
            gz.write_compressed(&pad(noise.len())).unwrap();
            gz.write_compressed(&header("c.whl", 5, 0o644)).unwrap();
            gz.write_stored(b"12345").unwrap();
            gz.write_compressed(&pad(5)).unwrap();
            gz.write_compressed(&[0u8; 1024]).unwrap();
            gz.finish().unwrap()
        };
        for (threaded, dribble) in [(false, false), (false, true), (true, false), (true, true)] {
            assert!(build(threaded, dribble) == expected, "threaded sink {threaded}, short reads {dribble}");
        }
        let plain = gunzip(&expected);
        assert!(plain[512..512 + text.len()] == text[..]);
        let at = 512 + text.len().div_ceil(512) * 512 + 512;
        assert!(plain[at..at + noise.len()] == noise[..]);
    }
}
