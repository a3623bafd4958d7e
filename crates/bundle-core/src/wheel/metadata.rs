//! The header files of a wheel's `.dist-info`: `METADATA` (the core metadata specification) and
//! `WHEEL` (the binary distribution format). Both are RFC 822 style header blocks: `Key: value`
//! lines, a value continued on following lines that start with whitespace, a key repeated for
//! multiple values, and for METADATA a body (the long description) after the first blank line,
//! which neither tool needs. The block is split by `mailparse`, as uv does.

use mailparse::MailHeader;

/// The header block of METADATA or WHEEL; keys compare case-insensitively, values are trimmed.
pub struct Headers<'a> {
    headers: Vec<MailHeader<'a>>,
}

impl<'a> Headers<'a> {
    /// Splits the header block off `text` (everything after the first blank line is ignored).
    pub fn parse(text: &'a str) -> Result<Self, String> {
        let (headers, _body) = mailparse::parse_headers(text.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Headers { headers })
    }

    /// Every header named `key`, in order. Keys are trimmed: `Name :` is still `Name`.
    fn named<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s MailHeader<'a>> + 's {
        self.headers.iter().filter(move |h| h.get_key_ref().trim().eq_ignore_ascii_case(key))
    }

    /// The first value of `key`, continuation lines joined, trimmed.
    pub fn first(&self, key: &str) -> Option<String> {
        self.named(key).next().map(value)
    }

    /// Every value of `key`, in order (`Requires-Dist`, `Tag`).
    pub fn all(&self, key: &str) -> Vec<String> {
        self.named(key).map(value).collect()
    }
}

/// A header's value with its continuation lines joined (RFC 2047 encoded words decoded), trimmed.
fn value(h: &MailHeader<'_>) -> String {
    h.get_value().trim().to_string()
}

/// A header's value up to its first line break, trimmed: multi-line `License` fields hold the
/// whole license text, and the first line is what names it.
fn first_line(h: &MailHeader<'_>) -> String {
    let raw = h.get_value_raw();
    let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).trim().to_string()
}

/// The METADATA fields the builder and the installer use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WheelMetadata {
    /// `Metadata-Version`; which versions are supported is the installer's decision.
    pub metadata_version: String,
    pub name: String,
    pub version: String,
    pub requires_dist: Vec<String>,
    /// The first non-empty `Requires-Python`.
    pub requires_python: Option<String>,
    /// What the SBOM names as the license: the first line of the last non-empty `License` or
    /// `License-Expression`, in the order METADATA lists them.
    pub license: Option<String>,
}

/// Parses METADATA. `Metadata-Version`, `Name` and `Version` must be present (the error says which
/// is not); their values are checked by the caller, against the wheel's file name.
pub fn parse_metadata(text: &str) -> Result<WheelMetadata, String> {
    let h = Headers::parse(text)?;
    let metadata_version = h.first("metadata-version").ok_or("no Metadata-Version")?;
    let name = h.first("name").ok_or("no Name")?;
    let version = h.first("version").ok_or("no Version")?;
    let mut license = None;
    for header in h.headers.iter().filter(|x| {
        let key = x.get_key_ref();
        let key = key.trim();
        key.eq_ignore_ascii_case("license") || key.eq_ignore_ascii_case("license-expression")
    }) {
        let line = first_line(header);
        if !line.is_empty() {
            license = Some(line);
        }
    }
    Ok(WheelMetadata {
        metadata_version,
        name,
        version,
        requires_dist: h.all("requires-dist"),
        requires_python: h.all("requires-python").into_iter().find(|v| !v.is_empty()),
        license,
    })
}

/// The fields of WHEEL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WheelFile {
    /// `Wheel-Version`, e.g. `1.0`; which versions are supported is the installer's decision.
    pub wheel_version: String,
    /// `Root-Is-Purelib: true` (any case).
    pub root_is_purelib: bool,
    /// The `Tag` values, as written (compressed tag sets are not expanded here).
    pub tags: Vec<String>,
}

/// Parses WHEEL; `Wheel-Version` must be present.
pub fn parse_wheel(text: &str) -> Result<WheelFile, String> {
    let h = Headers::parse(text)?;
    Ok(WheelFile {
        wheel_version: h.first("wheel-version").ok_or("no Wheel-Version")?,
        root_is_purelib: h.first("root-is-purelib").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        tags: h.all("tag"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_headers() {
        let m = parse_metadata("Metadata-Version: 2.1\nName: fieldlog\nVersion: 4.0.0\nRequires-Dist: fieldkit>=1.0\nLicense: MIT\n\nRequires-Dist: body\n").unwrap();
        assert_eq!((m.metadata_version.as_str(), m.name.as_str(), m.version.as_str()), ("2.1", "fieldlog", "4.0.0"));
        assert_eq!(m.requires_dist, ["fieldkit>=1.0"]);
        assert_eq!(m.license.as_deref(), Some("MIT"));
        assert_eq!(m.requires_python, None);
    }

    #[test]
    fn continuation_lines_and_repeated_fields() {
        let text = "Metadata-Version: 2.1\r\nName : x\r\nVersion:\t1.0 \r\nSummary: one\r\n  two\r\n\
                    License: BSD 3-Clause\r\n        \r\n        Copyright (c) ...\r\n\
                    Requires-Dist: a\r\nrequires-dist: b; extra == 'y'\r\nRequires-Python:\r\nRequires-Python: >=3.8\r\n\
                    \r\nBody: not a header\r\n";
        let m = parse_metadata(text).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("x", "1.0"));
        assert_eq!(m.requires_dist, ["a", "b; extra == 'y'"]);
        assert_eq!(m.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(m.license.as_deref(), Some("BSD 3-Clause"));
        let h = Headers::parse(text).unwrap();
        assert_eq!(h.first("summary").as_deref(), Some("one two"));
        assert_eq!(h.first("body"), None);
    }

    #[test]
    fn license_is_the_last_one_given() {
        let m = parse_metadata(
            "Metadata-Version: 2.4\nName: x\nVersion: 1\nLicense: MIT License\nLicense-Expression: MIT\n",
        )
        .unwrap();
        assert_eq!(m.license.as_deref(), Some("MIT"));
        let m =
            parse_metadata("Metadata-Version: 2.4\nName: x\nVersion: 1\nLicense-Expression: MIT\nLicense:\n").unwrap();
        assert_eq!(m.license.as_deref(), Some("MIT"));
    }

    #[test]
    fn required_fields() {
        assert_eq!(parse_metadata("Name: x\nVersion: 1\n").unwrap_err(), "no Metadata-Version");
        assert_eq!(parse_metadata("Metadata-Version: 2.1\nVersion: 1\n").unwrap_err(), "no Name");
        assert_eq!(parse_metadata("Metadata-Version: 2.1\nName: x\n\nVersion: 1\n").unwrap_err(), "no Version");
        assert_eq!(parse_wheel("Generator: x\n").unwrap_err(), "no Wheel-Version");
    }

    #[test]
    fn wheel_file() {
        let w = parse_wheel(
            "Wheel-Version: 1.0\nGenerator: bdist_wheel\nRoot-Is-Purelib: True\nTag: py2-none-any\nTag: py3-none-any\n",
        )
        .unwrap();
        assert_eq!(w.wheel_version, "1.0");
        assert!(w.root_is_purelib);
        assert_eq!(w.tags, ["py2-none-any", "py3-none-any"]);
        assert!(!parse_wheel("Wheel-Version: 1.0\nRoot-Is-Purelib: false\n").unwrap().root_is_purelib);
    }
}
