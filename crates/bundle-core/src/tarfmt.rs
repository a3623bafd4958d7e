//! A strict reader for the ustar headers our bundles use, and the one rule both the writer and the
//! reader follow for names: a name that fits a ustar header (100-byte name, or 155-byte prefix `/`
//! 100-byte name) is stored there; a longer one goes into a PAX extended header (`x`) holding exactly
//! one `path` record, right before the file's own header ([`pax_record`], [`parse_pax`]).
//!
//! The `tar` crate is used to *write* headers; reading is done here because the crate follows GNU long
//! names and any PAX record (a long-name entry may claim gigabytes, a `size` record may disagree with
//! the header), writes unknown types as files and lets duplicates overwrite. Here every header is
//! checked and anything that is not a plain file, a directory or our one form of PAX header is refused
//! by name.

/// One parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Raw name bytes (`prefix/name` when the ustar prefix is used), not yet checked for safety.
    pub name: Vec<u8>,
    pub mode: u32,
    pub size: u64,
    pub kind: Kind,
    /// The POSIX magic `ustar\0` `00` (not the old GNU one).
    pub posix: bool,
    /// The ustar prefix field was used (so `name` is `prefix/name`).
    pub prefixed: bool,
}

/// What a header block starts: an entry, or a PAX extended header of `size` bytes for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Entry(Header),
    Pax { size: u64 },
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
    /// A PAX extended header that is not the one form we write; says what is wrong.
    Pax(String),
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::Type(t) => write!(f, "{t} entries are not allowed (only regular files and directories)"),
            HeaderProblem::Checksum => f.write_str("header checksum does not match"),
            HeaderProblem::Magic => f.write_str("not a ustar header"),
            HeaderProblem::Field(name) => write!(f, "malformed `{name}` field"),
            HeaderProblem::Link => f.write_str("a regular file carries a link name"),
            HeaderProblem::Pax(why) => f.write_str(why),
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

/// Parses one non-zero header block that must be a file or directory (a PAX header is refused).
pub fn parse(block: &[u8; BLOCK]) -> Result<Header, HeaderProblem> {
    match parse_block(block)? {
        Block::Entry(h) => Ok(h),
        Block::Pax { .. } => Err(HeaderProblem::Type("PAX extended header")),
    }
}

/// Parses one non-zero header block: a file, a directory or a PAX extended header (`x`).
pub fn parse_block(block: &[u8; BLOCK]) -> Result<Block, HeaderProblem> {
    let magic = &block[257..265];
    if magic != b"ustar\x0000" && magic != b"ustar  \x00" {
        return Err(HeaderProblem::Magic);
    }
    let recorded = octal(block, 148, 8, "chksum")?;
    let sum: u64 =
        block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 }).sum();
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
        b'x' => return parse_pax_header(block),
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
    let prefixed = !prefix.is_empty();
    let name = if prefixed { [prefix, b"/", name].concat() } else { name.to_vec() };
    Ok(Block::Entry(Header { name, mode, size, kind, posix: magic == b"ustar\x0000", prefixed }))
}

/// The `x` header itself (magic and checksum already checked): POSIX magic, no link name, and a
/// size that fits one block (a `path` record of at most [`crate::paths::MAX_PATH_LEN`] bytes does).
/// Its name, mode, owner and time are not used by anyone and not checked.
fn parse_pax_header(block: &[u8; BLOCK]) -> Result<Block, HeaderProblem> {
    if &block[257..265] != b"ustar\x0000" {
        return Err(HeaderProblem::Pax("a PAX header must carry the POSIX ustar magic".into()));
    }
    if !field(block, 157, 100).is_empty() {
        return Err(HeaderProblem::Link);
    }
    let size = octal(block, 124, 12, "size")?;
    if size == 0 || size > BLOCK as u64 {
        return Err(HeaderProblem::Pax(format!(
            "a PAX header of {size} bytes (one `path` record of 1 to {BLOCK} bytes is allowed)"
        )));
    }
    Ok(Block::Pax { size })
}

/// Length of the ustar name field.
pub const NAME_LEN: usize = 100;
/// Length of the ustar prefix field.
pub const PREFIX_LEN: usize = 155;
/// The name field of our PAX headers (as Python's `tarfile` writes it); readers ignore it.
pub const PAX_HEADER_NAME: &str = "././@PaxHeader";

/// Where `path` goes in a ustar header: `(prefix, name)`, the prefix empty when the name field
/// holds it all, otherwise cut at the last `/` that leaves a prefix of at most 155 bytes (the `tar`
/// crate's rule, so bundles written before PAX stay byte-identical). `None`: it needs a PAX header.
pub fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= NAME_LEN {
        return Some((&[], path));
    }
    let cut = path[..path.len().min(PREFIX_LEN + 1)].iter().rposition(|&b| b == b'/')?;
    let (prefix, name) = (&path[..cut], &path[cut + 1..]);
    (!prefix.is_empty() && !name.is_empty() && name.len() <= NAME_LEN).then_some((prefix, name))
}

/// The name field of the header that follows a PAX header: the path's first 100 bytes (what a
/// reader that ignores PAX shows). The reader requires exactly this.
pub fn pax_name_field(path: &[u8]) -> &[u8] {
    &path[..path.len().min(NAME_LEN)]
}

/// The content of our PAX header for `path`: the one record `"<len> path=<path>\n"`, where `<len>`
/// (decimal, no leading zero) counts the whole record, its own digits included.
pub fn pax_record(path: &[u8]) -> Vec<u8> {
    let body = path.len() + " path=\n".len();
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len += 1;
    }
    [len.to_string().as_bytes(), b" path=", path, b"\n"].concat()
}

/// The path of a PAX header's content, which must be exactly one well-formed `path` record.
pub fn parse_pax(content: &[u8]) -> Result<&[u8], HeaderProblem> {
    let bad = |why: &str| HeaderProblem::Pax(why.to_string());
    let space = content.iter().position(|&b| b == b' ').ok_or_else(|| bad("malformed PAX record length"))?;
    let digits = &content[..space];
    if digits.is_empty() || digits.len() > 3 || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("malformed PAX record length"));
    }
    let len: usize = std::str::from_utf8(digits).expect("ASCII digits").parse().expect("at most 3 digits");
    if len > content.len() || len < space + 3 || content[len - 1] != b'\n' {
        return Err(bad("PAX record length does not match the record"));
    }
    let record = &content[space + 1..len - 1];
    let eq = record.iter().position(|&b| b == b'=').ok_or_else(|| bad("PAX record without `=`"))?;
    if &record[..eq] != b"path" {
        return Err(HeaderProblem::Pax(format!(
            "PAX record {:?} is not allowed (only one `path` record)",
            String::from_utf8_lossy(&record[..eq])
        )));
    }
    if len != content.len() {
        return Err(bad("more than one PAX record (only one `path` record is allowed)"));
    }
    Ok(&record[eq + 1..])
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
        for t in [
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Char,
            tar::EntryType::Fifo,
            tar::EntryType::GNULongName,
            tar::EntryType::XHeader,
            tar::EntryType::XGlobalHeader,
        ] {
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

    #[test]
    fn ustar_split_agrees_with_the_tar_crate() {
        let names = [
            "a".repeat(100),
            "a".repeat(101),
            format!("{}/{}", "d".repeat(155), "f".repeat(100)),
            format!("{}/{}", "d".repeat(156), "f".repeat(10)),
            format!("{}/{}", "d".repeat(10), "f".repeat(101)),
            format!("wheels/{}", "w".repeat(93)),
            format!("wheels/{}", "w".repeat(94)),
            format!("a/{}/b/{}", "x".repeat(140), "y".repeat(99)),
            format!("a/{}/{}", "x".repeat(160), "y".repeat(20)),
        ];
        for name in &names {
            let mut h = tar::Header::new_ustar();
            let by_crate = h.set_path(name).ok().map(|_| {
                let u = h.as_ustar().unwrap();
                let cut = |f: &[u8]| f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec();
                (cut(&u.prefix), cut(&u.name))
            });
            let ours = ustar_split(name.as_bytes()).map(|(p, n)| (p.to_vec(), n.to_vec()));
            assert_eq!(ours, by_crate, "{name}");
        }
    }

    #[test]
    fn pax_records_round_trip() {
        for len in [1, 90, 91, 92, 93, 101, 200, 240, 600] {
            let path = vec![b'p'; len];
            let record = pax_record(&path);
            let digits: usize = std::str::from_utf8(&record[..record.iter().position(|&b| b == b' ').unwrap()])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(digits, record.len(), "len {len}");
            assert!(record.ends_with(b"\n"));
            if record.len() <= BLOCK {
                assert_eq!(parse_pax(&record), Ok(&path[..]));
            }
        }
    }

    #[test]
    fn refuses_every_other_pax_content() {
        let path = b"wheels/x";
        let good = pax_record(path);
        let refused: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"path=x\n".to_vec(),
            b"8 path=x\n".to_vec(),
            b"11 path=x\n".to_vec(),
            b"010 path=x\n".to_vec(),
            b"+10 path=x\n".to_vec(),
            b"10 path=x ".to_vec(),
            b"8 pathx\n".to_vec(),
            b"10 size=0\n".to_vec(),
            b"14 linkpath=x\n".to_vec(),
            b"10 mtime=1\n".to_vec(),
            [&good[..], &good[..]].concat(),
            [&good[..], b"10 size=0\n"].concat(),
            [&good[..], b"\0"].concat(),
        ];
        for content in refused {
            assert!(
                matches!(parse_pax(&content), Err(HeaderProblem::Pax(_))),
                "{:?}",
                String::from_utf8_lossy(&content)
            );
        }
    }

    #[test]
    fn pax_headers_are_read_only_in_our_form() {
        let mut h = tar::Header::new_ustar();
        h.set_path("././@PaxHeader").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(120);
        h.set_cksum();
        assert_eq!(parse_block(h.as_bytes()), Ok(Block::Pax { size: 120 }));
        assert!(matches!(parse(h.as_bytes()), Err(HeaderProblem::Type(_))));
        for size in [0, 513, 1 << 30] {
            h.set_size(size);
            h.set_cksum();
            assert!(matches!(parse_block(h.as_bytes()), Err(HeaderProblem::Pax(_))), "size {size}");
        }
        let mut gnu = tar::Header::new_gnu();
        gnu.set_path("x").unwrap();
        gnu.set_entry_type(tar::EntryType::XHeader);
        gnu.set_size(20);
        gnu.set_cksum();
        assert!(matches!(parse_block(gnu.as_bytes()), Err(HeaderProblem::Pax(_))));
    }
}
