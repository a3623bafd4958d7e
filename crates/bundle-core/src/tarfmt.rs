//! A strict reader for the ustar headers our bundles use. The `tar` crate is used to *write* headers;
//! reading is done here because the crate follows GNU long names and PAX records (a long-name entry
//! may claim gigabytes), writes unknown types as files and lets duplicates overwrite. Here every header
//! is checked and anything that is not a plain file or directory is refused by name.

/// One parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Raw name bytes (`prefix/name` when the ustar prefix is used), not yet checked for safety.
    pub name: Vec<u8>,
    pub mode: u32,
    pub size: u64,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
}

/// What is wrong with a header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// A type we never accept; the string names it for the error message.
    Type(&'static str),
    Checksum,
    Magic,
    Field(&'static str),
    Link,
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::Type(t) => write!(f, "{t} entries are not allowed (only regular files and directories)"),
            HeaderProblem::Checksum => f.write_str("header checksum does not match"),
            HeaderProblem::Magic => f.write_str("not a ustar header"),
            HeaderProblem::Field(name) => write!(f, "malformed `{name}` field"),
            HeaderProblem::Link => f.write_str("a regular file carries a link name"),
        }
    }
}

pub const BLOCK: usize = 512;

pub fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

fn field(block: &[u8; BLOCK], start: usize, len: usize) -> &[u8] {
    let raw = &block[start..start + len];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(len);
    &raw[..end]
}

fn octal(block: &[u8; BLOCK], start: usize, len: usize, name: &'static str) -> Result<u64, HeaderProblem> {
    let raw = &block[start..start + len];
    // Base-256 numbers (high bit set) only appear for huge sizes or ids we never write.
    if raw[0] & 0x80 != 0 {
        return Err(HeaderProblem::Field(name));
    }
    let text = raw.iter().copied().take_while(|&b| b != 0).collect::<Vec<u8>>();
    let text = std::str::from_utf8(&text).map_err(|_| HeaderProblem::Field(name))?.trim_matches(' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| HeaderProblem::Field(name))
}

/// Parses one non-zero header block.
pub fn parse(block: &[u8; BLOCK]) -> Result<Header, HeaderProblem> {
    let magic = &block[257..265];
    if magic != b"ustar\x0000" && magic != b"ustar  \x00" {
        return Err(HeaderProblem::Magic);
    }
    let recorded = octal(block, 148, 8, "chksum")?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 })
        .sum();
    if sum != recorded {
        return Err(HeaderProblem::Checksum);
    }
    let kind = match block[156] {
        b'0' | 0 => Kind::File,
        b'5' => Kind::Directory,
        b'1' => return Err(HeaderProblem::Type("hard link")),
        b'2' => return Err(HeaderProblem::Type("symbolic link")),
        b'3' => return Err(HeaderProblem::Type("character device")),
        b'4' => return Err(HeaderProblem::Type("block device")),
        b'6' => return Err(HeaderProblem::Type("fifo")),
        b'7' => return Err(HeaderProblem::Type("contiguous file")),
        b'L' => return Err(HeaderProblem::Type("GNU long name")),
        b'K' => return Err(HeaderProblem::Type("GNU long link name")),
        b'x' => return Err(HeaderProblem::Type("PAX extended header")),
        b'g' => return Err(HeaderProblem::Type("PAX global header")),
        b'S' => return Err(HeaderProblem::Type("GNU sparse file")),
        b'V' => return Err(HeaderProblem::Type("volume label")),
        _ => return Err(HeaderProblem::Type("unknown-type")),
    };
    if !field(block, 157, 100).is_empty() {
        return Err(HeaderProblem::Link);
    }
    let mode = octal(block, 100, 8, "mode")?;
    let size = octal(block, 124, 12, "size")?;
    let mode = u32::try_from(mode).map_err(|_| HeaderProblem::Field("mode"))?;
    // Only POSIX ustar has a name prefix at 345; GNU headers keep access/change times there.
    let prefix = if magic == b"ustar\x0000" { field(block, 345, 155) } else { &[] };
    let name = field(block, 0, 100);
    let name = if prefix.is_empty() { name.to_vec() } else { [prefix, b"/", name].concat() };
    Ok(Header { name, mode, size, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: tar::EntryType) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(7);
        h.set_mode(0o644);
        h.set_cksum();
        *h.as_bytes()
    }

    #[test]
    fn reads_what_tar_writes() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        for name in ["a/b.txt", long.as_str()] {
            let h = parse(&header(name, tar::EntryType::Regular)).unwrap();
            assert_eq!((h.name.as_slice(), h.size, h.mode, h.kind), (name.as_bytes(), 7, 0o644, Kind::File));
        }
    }

    #[test]
    fn refuses_links_devices_and_extensions() {
        for t in [tar::EntryType::Symlink, tar::EntryType::Link, tar::EntryType::Char, tar::EntryType::Fifo,
                  tar::EntryType::GNULongName, tar::EntryType::XHeader, tar::EntryType::XGlobalHeader] {
            assert!(matches!(parse(&header("x", t)), Err(HeaderProblem::Type(_))), "{t:?}");
        }
    }

    #[test]
    fn refuses_bad_checksum_and_magic() {
        let mut h = header("x", tar::EntryType::Regular);
        h[0] = b'y';
        assert_eq!(parse(&h), Err(HeaderProblem::Checksum));
        let mut h = header("x", tar::EntryType::Regular);
        h[257] = b'X';
        assert_eq!(parse(&h), Err(HeaderProblem::Magic));
    }
}
