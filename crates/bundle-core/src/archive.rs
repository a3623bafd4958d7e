//! Writing bundles: a ustar stream inside one gzip member, written deterministically.
//!
//! Wheels are zip files whose members are already deflated, so deflating them again costs ~25 s per GB
//! for a ~1.5% gain. The gzip member is therefore built by hand from two kinds of deflate blocks:
//! tar headers and text files go through the compressor, already-compressed files are emitted as
//! *stored* blocks (copied, never compressed). Any deflate decoder, `gzip -d` and GNU tar included,
//! reads the result as one ordinary stream. The format is in `bundle-spec/archive.md`.

use std::io::{self, Read, Write};

use flate2::{Compress, Compression, Crc, FlushCompress};

/// Largest payload of one stored deflate block.
const STORED_MAX: usize = 65_535;

/// A gzip member whose deflate stream mixes compressed and stored blocks.
pub struct GzipWriter<W: Write> {
    out: W,
    compress: Compress,
    /// The compressor has taken input since its last flush, so it must be flushed to a byte boundary
    /// before raw stored blocks may follow.
    compress_dirty: bool,
    crc: Crc,
    buf: Vec<u8>,
}

impl<W: Write> GzipWriter<W> {
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
            let len = chunk.len() as u16;
            // BFINAL=0, BTYPE=00, padded to the byte boundary, then LEN and its complement.
            let head = [0u8, len as u8, (len >> 8) as u8, !len as u8, (!len >> 8) as u8];
            self.out.write_all(&head)?;
            self.out.write_all(chunk)?;
        }
        Ok(())
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

/// Writes a deterministic ustar archive of regular files into a [`GzipWriter`].
pub struct ArchiveWriter<W: Write> {
    gz: GzipWriter<W>,
    mtime: u64,
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

impl<W: Write> ArchiveWriter<W> {
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

        let mut left = size;
        while left > 0 {
            let want = left.min(self.chunk.len() as u64) as usize;
            let n = content.read(&mut self.chunk[..want])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{path} shrank while being packed")));
            }
            match packing {
                Packing::Compress => self.gz.write_compressed(&self.chunk[..n])?,
                Packing::Store => self.gz.write_stored(&self.chunk[..n])?,
            }
            left -= n as u64;
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
    }
}
