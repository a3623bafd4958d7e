//! Versions: release versions compare as PEP 440 versions (the app is a Python distribution);
//! database schema versions are `MAJOR.MINOR` with the compatibility rule of the brief.

use std::fmt;
use std::str::FromStr;

pub use pep440_rs::{Version, VersionSpecifiers};

/// Parses a release version (`4.0.0`, `2.1rc1`, …) as PEP 440.
pub fn parse_release(text: &str) -> Result<Version, String> {
    Version::from_str(text.trim()).map_err(|e| format!("`{text}` is not a PEP 440 version: {e}"))
}

/// A database schema version, `MAJOR.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaVersion {
    pub major: u32,
    pub minor: u32,
}

impl SchemaVersion {
    /// The version of a database that has never been migrated.
    pub const CLEAN: SchemaVersion = SchemaVersion { major: 0, minor: 0 };

    pub fn new(major: u32, minor: u32) -> Self {
        SchemaVersion { major, minor }
    }

    /// Release code built for `self` may run on a database at `db`:
    /// same major, and the database is at least as new in its minor.
    pub fn runs_on(self, db: SchemaVersion) -> bool {
        db.major == self.major && db.minor >= self.minor
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for SchemaVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a schema version (expected MAJOR.MINOR, e.g. 2.1)");
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let num = |p: &str| -> Result<u32, String> {
            if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        Ok(SchemaVersion { major: num(a)?, minor: num(b)? })
    }
}

impl serde::Serialize for SchemaVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SchemaVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Unquoted `schema: 2.10` arrives from YAML as the float 2.1, so only strings are accepted,
        // and numbers get an error that says how to write them.
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = SchemaVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted schema version like \"2.1\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SchemaVersion, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SchemaVersion, E> {
                Err(E::custom(format!("schema version {v} must be quoted (e.g. \"{v}\"), or 2.10 would read as 2.1")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SchemaVersion, E> {
                Err(E::custom(format!("schema version {v} must be written MAJOR.MINOR and quoted, e.g. \"{v}.0\"")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SchemaVersion, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let a: SchemaVersion = "1.9".parse().unwrap();
        let b: SchemaVersion = "1.10".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1.10");
        assert!("1".parse::<SchemaVersion>().is_err());
        assert!("1.01".parse::<SchemaVersion>().is_err());
        assert!("a.b".parse::<SchemaVersion>().is_err());
    }

    #[test]
    fn compatibility_rule() {
        let release = SchemaVersion::new(2, 1);
        assert!(release.runs_on(SchemaVersion::new(2, 1)));
        assert!(release.runs_on(SchemaVersion::new(2, 3)));
        assert!(!release.runs_on(SchemaVersion::new(2, 0)));
        assert!(!release.runs_on(SchemaVersion::new(3, 1)));
        assert!(!release.runs_on(SchemaVersion::new(1, 9)));
    }

    #[test]
    fn release_versions_are_pep440() {
        assert!(parse_release("4.0.0").unwrap() > parse_release("4.0.0rc1").unwrap());
        assert!(parse_release("10.0").unwrap() > parse_release("9.1").unwrap());
        assert!(parse_release("not a version").is_err());
    }
}
