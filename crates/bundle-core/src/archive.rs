//! Writing bundles: a ustar stream inside one gzip member, written deterministically.
//!
//! Wheels are zip files whose members are already deflated, so deflating them again costs ~25 s per GB
//! for a ~1.5% gain. The gzip member is therefore built by hand from two kinds of deflate blocks:
//! tar headers and text files go through the compressor, already-compressed files are emitted as
//! *stored* blocks (copied, never compressed). Any deflate decoder, `gzip -d` and GNU tar included,
//! reads the result as one ordinary stream. The format is in `bundle-spec/archive.md`.
//!
//! A name too long for a ustar header (a wheel file name over 100 bytes, say) is written behind a PAX
//! extended header holding one `path` record, the form GNU tar and Python's `tarfile` read, and the
//! only one the verifier accepts (`tarfmt`).

use std::io::{self, IoSliceMut, Read, Write};

use flate2::{Compress, Compression, Crc, FlushCompress};

use crate::tarfmt;

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
            self.compress.compress(data, &mut self.buf, FlushCompress::None).map_err(io::Error::other)?;
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
            self.compress.compress(&[], &mut self.buf, FlushCompress::Sync).map_err(io::Error::other)?;
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

/// Largest file a ustar size field holds (11 octal digits): 8 GiB - 1. Bigger would need a base-256
/// size or a PAX `size` record, which the verifier refuses.
pub const MAX_ENTRY_SIZE: u64 = 0o77777777777;

/// Why a file cannot go into a bundle, or could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The bundle format cannot hold this entry (unsafe or too long a path, too large a file).
    #[error("cannot store {path} in a bundle: {reason}")]
    Unstorable { path: String, reason: String },
    /// Reading the file's content failed, or it held fewer bytes than announced.
    #[error("{0}")]
    Read(io::Error),
    /// Writing the archive failed.
    #[error("{0}")]
    Write(io::Error),
}

/// Checks that an entry `path` of `size` bytes can be written (and so verified): a safe bundle path
/// (at most [`crate::paths::MAX_PATH_LEN`] bytes, which a PAX header always holds) and at most
/// [`MAX_ENTRY_SIZE`] bytes. `bundle-build check` asks the same question before any build.
pub fn check_storable(path: &str, size: u64) -> Result<(), AddError> {
    let fail = |reason: String| Err(AddError::Unstorable { path: path.to_string(), reason });
    if let Err(e) = crate::paths::BundlePath::parse(path) {
        return fail(e.reason.to_string());
    }
    if size > MAX_ENTRY_SIZE {
        return fail(format!("{size} bytes, more than the {MAX_ENTRY_SIZE} a bundle entry can hold"));
    }
    Ok(())
}

/// Remembers whether the content reader failed, so its errors are told apart from write errors.
struct Content<'a> {
    inner: &'a mut dyn Read,
    failed: bool,
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        self.failed |= matches!(&r, Err(e) if e.kind() != io::ErrorKind::Interrupted);
        r
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let r = self.inner.read_vectored(bufs);
        self.failed |= matches!(&r, Err(e) if e.kind() != io::ErrorKind::Interrupted);
        r
    }
}

/// Zero bytes that pad `size` bytes of content to a whole 512-byte block.
fn padding(size: u64) -> usize {
    (512 - (size % 512) as usize) % 512
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

    /// Appends a regular file of exactly `size` bytes read from `content`; a path too long for a
    /// ustar header gets a PAX header first.
    pub fn add_file(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        content: &mut dyn Read,
        packing: Packing,
    ) -> Result<(), AddError> {
        check_storable(path, size)?;
        let mut content = Content { inner: content, failed: false };
        self.add_checked(path, mode, size, &mut content, packing).map_err(|e| match e {
            AddError::Write(e) if content.failed => AddError::Read(e),
            e => e,
        })
    }

    fn add_checked(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        content: &mut Content<'_>,
        packing: Packing,
    ) -> Result<(), AddError> {
        let (prefix, name) = match tarfmt::ustar_split(path.as_bytes()) {
            Some(split) => split,
            None => {
                let record = tarfmt::pax_record(path.as_bytes());
                let pax = self.header(
                    tarfmt::PAX_HEADER_NAME.as_bytes(),
                    &[],
                    tar::EntryType::XHeader,
                    record.len() as u64,
                    0o644,
                );
                self.gz.write_compressed(pax.as_bytes()).map_err(AddError::Write)?;
                self.gz.write_compressed(&record).map_err(AddError::Write)?;
                self.gz.write_compressed(&[0u8; 512][..padding(record.len() as u64)]).map_err(AddError::Write)?;
                (&[][..], tarfmt::pax_name_field(path.as_bytes()))
            }
        };
        let header = self.header(name, prefix, tar::EntryType::Regular, size, mode);
        self.gz.write_compressed(header.as_bytes()).map_err(AddError::Write)?;

        let shrank = || {
            AddError::Read(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{path} shrank while being packed")))
        };
        match packing {
            Packing::Compress => {
                let mut left = size;
                while left > 0 {
                    let want = left.min(self.chunk.len() as u64) as usize;
                    let n = content.read(&mut self.chunk[..want]).map_err(AddError::Read)?;
                    if n == 0 {
                        return Err(shrank());
                    }
                    self.gz.write_compressed(&self.chunk[..n]).map_err(AddError::Write)?;
                    left -= n as u64;
                }
            }
            Packing::Store => {
                if !self.gz.write_stored_from(content, size).map_err(AddError::Write)? {
                    return Err(shrank());
                }
            }
        }
        self.gz.write_compressed(&[0u8; 512][..padding(size)]).map_err(AddError::Write)?;
        Ok(())
    }

    /// A ustar header with our fixed fields: mtime `self.mtime`, owner root (0/0), the name and
    /// prefix fields exactly as given.
    fn header(&self, name: &[u8], prefix: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        let ustar = header.as_ustar_mut().expect("a ustar header");
        ustar.name[..name.len()].copy_from_slice(name);
        ustar.prefix[..prefix.len()].copy_from_slice(prefix);
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root").expect("fits");
        header.set_groupname("root").expect("fits");
        header.set_cksum();
        header
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
        let names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.txt", "w/x.whl"]);
    }

    #[test]
    fn long_names_get_a_pax_header_the_tar_crate_follows() {
        let long = format!(
            "wheels/{}-1.0-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
            "n".repeat(40)
        );
        let split = format!("{}/{}", "d".repeat(150), "f".repeat(80));
        let mut w = ArchiveWriter::new(Vec::new(), 7).unwrap();
        w.add_file("a.txt", 0o644, 5, &mut &b"hello"[..], Packing::Compress).unwrap();
        w.add_file(&long, 0o644, 3, &mut &b"zip"[..], Packing::Store).unwrap();
        w.add_file(&split, 0o755, 1, &mut &b"x"[..], Packing::Compress).unwrap();
        let plain = gunzip(&w.finish().unwrap());
        // Only the long name has a PAX header, at block 2, right before its file's header.
        let types: Vec<u8> = plain.chunks(512).take(6).map(|b| b[156]).collect();
        assert_eq!(types, [b'0', 0, b'x', 0, b'0', 0]);
        let pax = tar::Header::from_byte_slice(&plain[1024..1536]);
        assert_eq!(pax.path_bytes().as_ref(), b"././@PaxHeader");
        assert_eq!((pax.mtime().unwrap(), pax.mode().unwrap(), pax.uid().unwrap()), (7, 0o644, 0));
        assert_eq!(&plain[1536..1536 + pax.size().unwrap() as usize], &crate::tarfmt::pax_record(long.as_bytes())[..]);
        let mut ar = tar::Archive::new(&plain[..]);
        let names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.txt", long.as_str(), split.as_str()]);
    }

    #[test]
    fn what_the_format_cannot_hold_is_refused_before_writing() {
        for (path, size) in
            [("a/".repeat(121) + "b", 1), ("../x".to_string(), 1), ("x".to_string(), MAX_ENTRY_SIZE + 1)]
        {
            let mut w = ArchiveWriter::new(Vec::new(), 0).unwrap();
            let e = w.add_file(&path, 0o644, size, &mut &b"x"[..], Packing::Compress).expect_err(&path);
            assert!(matches!(e, AddError::Unstorable { .. }), "{path}: {e:?}");
            assert!(e.to_string().starts_with(&format!("cannot store {path} in a bundle: ")), "{e}");
        }
        assert!(check_storable(&"a".repeat(240), MAX_ENTRY_SIZE).is_ok());
    }

    struct Failing;

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn read_and_write_failures_are_told_apart() {
        let mut w = ArchiveWriter::new(Vec::new(), 0).unwrap();
        assert!(matches!(w.add_file("a.whl", 0o644, 5, &mut Failing, Packing::Store), Err(AddError::Read(_))));
        assert!(matches!(w.add_file("a.txt", 0o644, 5, &mut Failing, Packing::Compress), Err(AddError::Read(_))));
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl ArchiveSink for Full {}
        let gz = GzipWriter {
            out: Full,
            compress: Compress::new(Compression::new(6), false),
            compress_dirty: false,
            crc: Crc::new(),
            buf: vec![0; 1024],
            stored: Vec::new(),
        };
        let mut w = ArchiveWriter { gz, mtime: 0, chunk: vec![0; 1024] };
        let e = w.add_file("b.whl", 0o644, 3, &mut &b"zip"[..], Packing::Store).expect_err("the sink fails");
        assert!(matches!(e, AddError::Write(_)), "{e:?}");
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
