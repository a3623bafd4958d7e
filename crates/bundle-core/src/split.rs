//! Split bundles, for sticks whose file system (FAT32) cannot hold a file over 4 GiB:
//! `NAME.001`, `NAME.002`, … are the bundle's bytes cut at a fixed size (`cat NAME.0* > NAME` gives
//! the ordinary bundle), and `NAME.parts` lists every part's size and sha256, signed like the
//! manifest in `NAME.parts.minisig` and bound to it by the manifest's sha256. The manifest itself
//! cannot list the parts: it is inside part 1, so it would have to contain its own hash.
//! Reading checks each part as its last byte arrives, so a damaged or missing part is named exactly.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hash::to_hex;

pub const PARTS_FORMAT: u32 = 1;
/// Largest parts index we read.
pub const MAX_INDEX_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartsIndex {
    pub format: u32,
    /// File name of the whole bundle (`cat` of the parts).
    pub bundle: String,
    pub app: String,
    pub version: String,
    pub sequence: u64,
    /// sha256 of the signed manifest inside: ties this index to that bundle.
    pub manifest_sha256: String,
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl PartsIndex {
    /// Part names must be plain file names next to the index, named after the bundle.
    pub fn check_names(&self) -> Result<(), String> {
        for part in &self.parts {
            let ok = !part.name.contains('/')
                && !part.name.contains('\\')
                && !part.name.starts_with('.')
                && part.name.starts_with(&self.bundle);
            if !ok {
                return Err(format!("part name `{}` is not allowed", part.name));
            }
        }
        Ok(())
    }
}

/// `NAME.001` for part 1.
pub fn part_name(bundle: &str, n: usize) -> String {
    format!("{bundle}.{n:03}")
}

/// The index file of a split bundle, if `path` names one: `NAME.parts`, `NAME.001` (any part), or a
/// directory holding exactly one `*.parts`.
pub fn locate_index(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        let mut found = std::fs::read_dir(path)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "parts"));
        let first = found.next()?;
        return if found.next().is_none() { Some(first) } else { None };
    }
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".parts") {
        return Some(path.to_path_buf());
    }
    let (base, num) = name.rsplit_once('.')?;
    if num.len() == 3 && num.bytes().all(|c| c.is_ascii_digit()) {
        return Some(path.with_file_name(format!("{base}.parts")));
    }
    None
}

/// Writes consecutive parts of `part_size` bytes, hashing each and the whole.
pub struct SplitWriter {
    dir: PathBuf,
    bundle: String,
    part_size: u64,
    current: Option<(File, Sha256, u64)>,
    parts: Vec<Part>,
    whole: Sha256,
    total: u64,
}

impl SplitWriter {
    pub fn new(dir: &Path, bundle: &str, part_size: u64) -> SplitWriter {
        SplitWriter {
            dir: dir.to_path_buf(),
            bundle: bundle.to_string(),
            part_size: part_size.max(1),
            current: None,
            parts: Vec::new(),
            whole: Sha256::new(),
            total: 0,
        }
    }

    fn close_part(&mut self) -> io::Result<()> {
        if let Some((file, hasher, size)) = self.current.take() {
            file.sync_all()?;
            self.parts.push(Part {
                name: part_name(&self.bundle, self.parts.len() + 1),
                size,
                sha256: to_hex(&hasher.finalize()),
            });
        }
        Ok(())
    }

    /// Closes the last part; returns the parts, the whole stream's sha256 and size.
    pub fn finish(mut self) -> io::Result<(Vec<Part>, String, u64)> {
        self.close_part()?;
        Ok((self.parts, to_hex(&self.whole.finalize()), self.total))
    }
}

impl Write for SplitWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.current.as_ref().is_some_and(|(_, _, size)| *size >= self.part_size) {
            self.close_part()?;
        }
        if self.current.is_none() {
            let path = self.dir.join(part_name(&self.bundle, self.parts.len() + 1));
            self.current = Some((File::create(path)?, Sha256::new(), 0));
        }
        let (file, hasher, size) = self.current.as_mut().expect("opened above");
        let room = (self.part_size - *size) as usize;
        let n = file.write(&buf[..buf.len().min(room)])?;
        hasher.update(&buf[..n]);
        self.whole.update(&buf[..n]);
        *size += n as u64;
        self.total += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some((f, _, _)) => f.flush(),
            None => Ok(()),
        }
    }
}

/// What is wrong with a part, carried inside an `io::Error` through the decompressor.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PartError {
    pub kind: &'static str,
    pub message: String,
}

fn part_error(kind: &'static str, message: String) -> io::Error {
    io::Error::other(PartError { kind, message })
}

/// Reads the parts in order as one stream, checking each part's size and sha256 at its end.
pub struct PartsReader {
    dir: PathBuf,
    parts: Vec<Part>,
    index: usize,
    file: Option<File>,
    hasher: Sha256,
    read_in_part: u64,
}

impl PartsReader {
    pub fn new(dir: &Path, parts: Vec<Part>) -> PartsReader {
        PartsReader { dir: dir.to_path_buf(), parts, index: 0, file: None, hasher: Sha256::new(), read_in_part: 0 }
    }

    fn describe(&self) -> String {
        format!("part {} of {} ({})", self.index + 1, self.parts.len(), self.parts[self.index].name)
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(part) = self.parts.get(self.index).cloned() else { return Ok(0) };
            if self.file.is_none() {
                let path = self.dir.join(&part.name);
                let file = crate::input::open_regular(&path).map_err(|e| {
                    part_error(
                        "missing_part",
                        format!("{} cannot be read ({e}); copy that part again", self.describe()),
                    )
                })?;
                self.file = Some(file);
                self.hasher = Sha256::new();
                self.read_in_part = 0;
            }
            let left = part.size - self.read_in_part;
            if left == 0 {
                // The recorded size is reached: the file must end here and match its hash.
                let mut probe = [0u8; 1];
                let extra = self.file.as_mut().expect("open").read(&mut probe)?;
                let got = to_hex(&std::mem::take(&mut self.hasher).finalize());
                if extra != 0 || got != part.sha256 {
                    return Err(part_error(
                        "damaged_part",
                        format!(
                            "{} is damaged (its size or sha256 differs from the signed index); copy that part again",
                            self.describe()
                        ),
                    ));
                }
                self.file = None;
                self.index += 1;
                continue;
            }
            let want = buf.len().min(left as usize);
            let n = self.file.as_mut().expect("open").read(&mut buf[..want])?;
            if n == 0 {
                return Err(part_error(
                    "damaged_part",
                    format!(
                        "{} is shorter than the signed index says (truncated copy?); copy that part again",
                        self.describe()
                    ),
                ));
            }
            self.hasher.update(&buf[..n]);
            self.read_in_part += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut w = SplitWriter::new(d.path(), "b.tar.gz", 3000);
        w.write_all(&data).unwrap();
        let (parts, sha, size) = w.finish().unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!((sha, size), (crate::hash::sha256_hex(&data), 10_000));
        let mut out = Vec::new();
        PartsReader::new(d.path(), parts.clone()).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);

        std::fs::write(d.path().join("b.tar.gz.003"), vec![0u8; 3000]).unwrap();
        let e = PartsReader::new(d.path(), parts.clone()).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("part 3 of 4"), "{e}");
        std::fs::remove_file(d.path().join("b.tar.gz.002")).unwrap();
        let e = PartsReader::new(d.path(), parts).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("part 2 of 4"), "{e}");
    }

    #[test]
    fn locating_the_index() {
        assert_eq!(locate_index(Path::new("/x/b.tar.gz.001")), Some(PathBuf::from("/x/b.tar.gz.parts")));
        assert_eq!(locate_index(Path::new("/x/b.tar.gz.parts")), Some(PathBuf::from("/x/b.tar.gz.parts")));
        assert_eq!(locate_index(Path::new("/x/b.tar.gz")), None);
    }
}
