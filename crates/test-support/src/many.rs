//! A bundle flooded with empty entries, cheaply.
//!
//! A million empty tar entries are 512 MB of headers; compressing that in a debug build takes
//! minutes. So the flood (entries `e/0000000`, `e/0000001`, … then the end-of-archive blocks) is
//! compressed once by Python's zlib into a *raw deflate* stream and cached under the target
//! directory (`target/tmp/test-support-cache/`), with its CRC-32 and length. A bundle is then the
//! gzip header, the given head (manifest, signature, anything else) deflated and ended with a full
//! flush (byte-aligned, no back-references across it), the cached flood, and a trailer whose CRC is
//! combined from both parts: a valid gzip member that decompresses to `head ‖ flood`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use flate2::{Compress, Compression, FlushCompress};

use crate::run::run;

/// Writes the raw deflate stream of `n` empty ustar entries `e/%07d` (mode 0644, mtime 0, owner
/// root) followed by two zero blocks to argv[2]; prints `crc32 length`.
const GENERATOR: &str = r#"
import os, sys, zlib
n, out = int(sys.argv[1]), sys.argv[2]
def octal(v, width):
    return b"%0*o\0" % (width - 1, v)
base = bytearray(512)
base[100:108] = octal(0o644, 8)
base[108:116] = octal(0, 8)
base[116:124] = octal(0, 8)
base[124:136] = octal(0, 12)
base[136:148] = octal(0, 12)
base[148:156] = b" " * 8
base[156:157] = b"0"
base[257:265] = b"ustar\x0000"
base[265:269] = b"root"
base[297:301] = b"root"
base_sum = sum(base)
mid, tail = bytes(base[9:148]), bytes(base[156:])
comp = zlib.compressobj(6, zlib.DEFLATED, -15, 9)
crc, total, chunk = 0, 0, []
tmp = out + ".tmp-%d" % os.getpid()
with open(tmp, "wb") as f:
    def emit(data):
        global crc, total
        crc = zlib.crc32(data, crc)
        total += len(data)
        f.write(comp.compress(data))
    for i in range(n):
        name = b"e/%07d" % i
        chunk.append(name + mid + (b"%06o\0 " % (base_sum + sum(name))) + tail)
        if len(chunk) == 8192:
            emit(b"".join(chunk))
            chunk = []
    emit(b"".join(chunk) + bytes(1024))
    f.write(comp.flush(zlib.Z_FINISH))
os.replace(tmp, out)
with open(out + ".meta.tmp", "w") as m:
    m.write("%d %d\n" % (crc, total))
os.replace(out + ".meta.tmp", out + ".meta")
"#;

fn cache_dir() -> PathBuf {
    // target/<profile>/deps/<test> → target/tmp/test-support-cache (kept across runs).
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut profile = exe.parent().expect("the test executable has a directory").to_path_buf();
    if profile.file_name().is_some_and(|n| n == "deps") {
        profile.pop();
    }
    let target = profile.parent().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = target.join("tmp").join("test-support-cache");
    std::fs::create_dir_all(&dir).expect("create the cache directory");
    dir
}

/// The cached raw deflate stream of `n` empty entries and the end-of-archive, with the CRC-32 and
/// length of what it decompresses to.
fn flood(n: u32) -> (Vec<u8>, u32, u64) {
    let path = cache_dir().join(format!("empty-entries-{n}-v1.deflate"));
    let meta = PathBuf::from(format!("{}.meta", path.display()));
    let read = || -> Option<(Vec<u8>, u32, u64)> {
        let text = std::fs::read_to_string(&meta).ok()?;
        let mut it = text.split_whitespace();
        let crc = it.next()?.parse().ok()?;
        let len = it.next()?.parse().ok()?;
        Some((std::fs::read(&path).ok()?, crc, len))
    };
    if let Some(hit) = read() {
        return hit;
    }
    let _ = std::fs::remove_file(&meta);
    let r = run(Command::new("python3").arg("-c").arg(GENERATOR).arg(n.to_string()).arg(&path));
    assert_eq!(r.code, Some(0), "generating {n} empty entries failed (python3 is required):\n{r}");
    read().unwrap_or_else(|| panic!("the generator wrote no {}", meta.display()))
}

/// A gzip member that decompresses to `head` followed by `n` empty unlisted files `e/%07d` and the
/// end-of-archive blocks. `head` must be a tar stream without end-of-archive.
pub fn many_empty_entries(head: &[u8], n: u32) -> Vec<u8> {
    let (body, body_crc, body_len) = flood(n);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut c = Compress::new(Compression::new(6), false);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (in_before, out_before) = (c.total_in() as usize, c.total_out());
        c.compress(&head[in_before..], &mut buf, FlushCompress::Full).expect("deflate into memory");
        let produced = (c.total_out() - out_before) as usize;
        out.extend_from_slice(&buf[..produced]);
        if c.total_in() as usize == head.len() && produced < buf.len() {
            break;
        }
    }
    assert_eq!(c.total_in() as usize, head.len(), "the head was not consumed");
    out.extend_from_slice(&body);
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    crc.combine(&crc32fast::Hasher::new_with_initial_len(body_crc, body_len));
    out.write_all(&crc.finalize().to_le_bytes()).unwrap();
    out.write_all(&(((head.len() as u64 + body_len) & 0xffff_ffff) as u32).to_le_bytes()).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::craft::CraftedBundle;

    #[test]
    fn the_flood_decompresses_to_head_then_entries() {
        let head =
            CraftedBundle::new().file("manifest.yaml", 0o644, b"format: 1\n").without_end_of_archive().tar_bytes();
        let gz = many_empty_entries(&head, 3000);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .expect("a valid gzip member (CRC and length included)");
        assert_eq!(plain.len(), head.len() + 3000 * 512 + 1024);
        assert_eq!(&plain[..head.len()], &head[..]);
        let mut ar = tar::Archive::new(&plain[..]);
        let names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 3001);
        assert_eq!(names[0], "manifest.yaml");
        assert_eq!(names[1], "e/0000000");
        assert_eq!(names[3000], "e/0002999");
        // GNU tar agrees (and checks the CRC).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.tgz"), &gz).unwrap();
        let r = run(Command::new("tar").arg("-tzf").arg(dir.path().join("f.tgz")));
        assert_eq!(r.code, Some(0), "{r}");
        assert_eq!(r.stdout.lines().count(), 3001);
    }
}
