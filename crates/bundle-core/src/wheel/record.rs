//! `.dist-info/RECORD`: one CSV row per installed file, `path,hash,size`, where the hash is
//! `algorithm=digest` (digest in URL-safe base64 without padding) and hash and size are empty for
//! RECORD itself. Read and written with the `csv` crate, as uv does, in the dialect of Python's
//! `csv` module that pip and wheel builders use: `,` separated, `"` quoting with `""` inside, a
//! field quoted only when it holds a `,`, a `"`, a CR or a LF. Rows end in a bare `\n`, as the
//! installer has always written them.

/// One row of RECORD; a field the row does not have is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordEntry {
    /// The file's path, relative to site-packages (`../../../bin/x` for files outside it).
    pub path: String,
    /// `algorithm=digest`, as written.
    pub hash: String,
    /// The size in bytes, as written.
    pub size: String,
}

impl RecordEntry {
    /// The `algorithm=digest` field, if the row has one.
    pub fn hash(&self) -> Option<&str> {
        Some(self.hash.as_str()).filter(|h| !h.is_empty())
    }

    /// The size field without surrounding blanks, if the row has one (not checked to be a number).
    pub fn size(&self) -> Option<&str> {
        Some(self.size.trim()).filter(|s| !s.is_empty())
    }
}

/// Every row of a RECORD, in order. Blank lines are skipped; rows may have fewer or more than three
/// fields (missing ones are empty, extra ones ignored), so a malformed RECORD still lists its
/// paths and the caller decides what is wrong with each row.
pub fn parse(text: &str) -> Vec<RecordEntry> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    // Reading from memory without UTF-8 validation (byte records) and with rows of any length has no
    // error to report; a row that nevertheless failed would be one RECORD does not list.
    reader
        .byte_records()
        .filter_map(Result::ok)
        .filter(|r| !(r.len() == 1 && r[0].trim_ascii().is_empty()))
        .map(|r| {
            let field = |i: usize| r.get(i).map(|f| String::from_utf8_lossy(f).into_owned()).unwrap_or_default();
            RecordEntry { path: field(0), hash: field(1), size: field(2) }
        })
        .collect()
}

/// The first row of `line` (for callers that go through a RECORD line by line).
pub fn parse_line(line: &str) -> RecordEntry {
    parse(line).into_iter().next().unwrap_or_default()
}

/// Writes RECORD rows in the installer's format (see the module documentation).
pub struct RecordWriter {
    csv: csv::Writer<Vec<u8>>,
}

impl Default for RecordWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordWriter {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A writer whose output buffer starts with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let csv = csv::WriterBuilder::new()
            .has_headers(false)
            // Python's csv.QUOTE_MINIMAL: quote only fields holding the delimiter, the quote or a
            // line break (the csv crate counts both CR and LF as line breaks with a `\n` terminator).
            .quote_style(csv::QuoteStyle::Necessary)
            .double_quote(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::with_capacity(bytes));
        RecordWriter { csv }
    }

    /// Adds the row `path,hash,size`; RECORD's own row has neither hash nor size (`path,,`).
    pub fn push(&mut self, path: &str, hash: &str, size: Option<u64>) {
        let size = size.map(|s| s.to_string()).unwrap_or_default();
        // Writing to memory cannot fail.
        self.csv.write_record([path, hash, size.as_str()]).expect("RECORD rows are written to memory");
    }

    /// The RECORD file's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.csv.into_inner().expect("RECORD rows are written to memory")
    }
}

/// One row, terminated by `\n`, as [`RecordWriter`] writes it.
pub fn format_line(path: &str, hash: &str, size: Option<u64>) -> String {
    let mut w = RecordWriter::with_capacity(path.len() + hash.len() + 24);
    w.push(path, hash, size);
    String::from_utf8(w.finish()).expect("RECORD rows of UTF-8 fields are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer the installer used before RECORD went through the csv crate: a field is quoted
    /// when it holds `,`, `"`, CR or LF, `"` doubled inside (what Python's csv.writer does).
    fn hand_written(rows: &[(&str, &str, Option<u64>)]) -> String {
        let field = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut text = String::new();
        for (p, h, s) in rows {
            match s {
                None => text.push_str(&format!("{},,\n", field(p))),
                Some(s) => text.push_str(&format!("{},{h},{s}\n", field(p))),
            }
        }
        text
    }

    #[test]
    fn written_as_before() {
        let rows: &[(&str, &str, Option<u64>)] = &[
            ("pkg/__init__.py", "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU", Some(0)),
            ("pkg/a,b.py", "sha256=abc", Some(12)),
            ("pkg/say \"hi\".txt", "sha256=def", Some(3)),
            ("pkg/with space/and, both \".txt", "sha256=ghi", Some(4)),
            (" leading and trailing ", "sha256=jkl", Some(5)),
            ("pkg/'single'.py", "sha384=mno", Some(6)),
            ("../../../bin/tool", "sha256=pqr", Some(7)),
            ("pkg/line\nbreak", "sha256=stu", Some(8)),
            ("pkg/ünïcode.py", "sha512=vwx", Some(9)),
            ("pkg-1.0.dist-info/RECORD", "", None),
        ];
        let mut w = RecordWriter::new();
        for (p, h, s) in rows {
            w.push(p, h, *s);
        }
        let ours = String::from_utf8(w.finish()).unwrap();
        assert_eq!(ours, hand_written(rows));
        for (p, h, s) in rows {
            assert_eq!(format_line(p, h, *s), hand_written(&[(p, h, *s)]));
        }
        // And it reads back.
        let back = parse(&ours);
        assert_eq!(back.len(), rows.len());
        for (e, (p, h, s)) in back.iter().zip(rows) {
            assert_eq!(
                (e.path.as_str(), e.hash(), e.size()),
                (*p, Some(*h).filter(|h| !h.is_empty()), s.map(|s| s.to_string()).as_deref())
            );
        }
    }

    #[test]
    fn python_csv_output_reads() {
        // As Python's csv.writer (pip, wheel builders) writes it, CRLF included.
        let text = "a/b.py,sha256=xyz,12\r\n\"a,\"\"b\"\".py\",,\r\n\r\n   \nshort\nc.py,sha256=q, 7 ,extra\n";
        let rows = parse(text);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], RecordEntry { path: "a/b.py".into(), hash: "sha256=xyz".into(), size: "12".into() });
        assert_eq!((rows[1].path.as_str(), rows[1].hash(), rows[1].size()), ("a,\"b\".py", None, None));
        assert_eq!((rows[2].path.as_str(), rows[2].hash()), ("short", None));
        assert_eq!((rows[3].hash(), rows[3].size()), (Some("sha256=q"), Some("7")));
        assert_eq!(parse_line(&format_line("x,\"y", "", None)).path, "x,\"y");
        assert_eq!(parse_line("\"x,y\",sha256=a,1").path, "x,y");
    }
}
