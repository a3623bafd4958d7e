//! File naming conventions of a release's inputs: migration steps
//! (`<MAJOR>.<MINOR>_<slug>.sql`, `.down.sql`, `.py`) and config converters
//! (`<N>-to-<N+1>.yaml`, `<N>-to-<N+1>.py`).

use crate::version::SchemaVersion;

/// What a migration file does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigrationKind {
    /// `.sql`: migrates up to its version.
    Up,
    /// `.py`: a data migration run with the release's interpreter.
    Data,
    /// `.down.sql`: reverts its version.
    Down,
}

/// A parsed migration file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationName {
    pub version: SchemaVersion,
    pub slug: String,
    pub kind: MigrationKind,
}

/// Parses a migration file name; `Err` says what is wrong with it.
pub fn parse_migration(name: &str) -> Result<MigrationName, String> {
    let (stem, kind) = if let Some(s) = name.strip_suffix(".down.sql") {
        (s, MigrationKind::Down)
    } else if let Some(s) = name.strip_suffix(".sql") {
        (s, MigrationKind::Up)
    } else if let Some(s) = name.strip_suffix(".py") {
        (s, MigrationKind::Data)
    } else {
        return Err(format!("`{name}`: a migration ends in .sql, .down.sql or .py"));
    };
    let (version, slug) = stem
        .split_once('_')
        .ok_or_else(|| format!("`{name}`: expected <MAJOR>.<MINOR>_<slug>, e.g. 1.2_add_tags.sql"))?;
    let version: SchemaVersion = version.parse().map_err(|e| format!("`{name}`: {e}"))?;
    if slug.is_empty() || !slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("`{name}`: the slug after `_` must be letters, digits, `_` or `-`"));
    }
    if version == SchemaVersion::CLEAN {
        return Err(format!("`{name}`: 0.0 is the version of an empty database, steps start above it"));
    }
    Ok(MigrationName { version, slug: slug.to_string(), kind })
}

/// How a config converter is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConverterKind {
    /// `.yaml`: declarative rename/set/replace/delete rules.
    Rules,
    /// `.py`: run as `python N-to-M.py IN.yaml OUT.yaml`.
    Script,
}

/// Parses `<N>-to-<N+1>.yaml|.py`; returns `(N, N+1, kind)`.
pub fn parse_converter(name: &str) -> Result<(u32, u32, ConverterKind), String> {
    let (stem, kind) = if let Some(s) = name.strip_suffix(".yaml") {
        (s, ConverterKind::Rules)
    } else if let Some(s) = name.strip_suffix(".py") {
        (s, ConverterKind::Script)
    } else {
        return Err(format!("`{name}`: a converter is <N>-to-<N+1>.yaml or <N>-to-<N+1>.py"));
    };
    let (a, b) = stem
        .split_once("-to-")
        .ok_or_else(|| format!("`{name}`: a converter is <N>-to-<N+1>.yaml or <N>-to-<N+1>.py"))?;
    let num = |p: &str| p.parse::<u32>().map_err(|_| format!("`{name}`: `{p}` is not a config version"));
    let (from, to) = (num(a)?, num(b)?);
    if from == 0 || to != from + 1 {
        return Err(format!("`{name}`: converters go one version at a time, from N>=1 to N+1"));
    }
    Ok((from, to, kind))
}

/// The suffix of the environment variable naming database `name`'s connection
/// (`BUNDLE_DB_URL_<suffix>`): upper-cased, anything but ASCII letters and digits as `_`. Two
/// databases of one release must not share it (`client-db` and `client_db` would).
pub fn db_env_suffix(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations() {
        let m = parse_migration("2.0_split_label.down.sql").unwrap();
        assert_eq!(
            (m.version, m.kind, m.slug.as_str()),
            (SchemaVersion::new(2, 0), MigrationKind::Down, "split_label")
        );
        assert_eq!(parse_migration("1.10_x.py").unwrap().kind, MigrationKind::Data);
        for bad in ["1_x.sql", "1.0.sql", "1.0_.sql", "a.b_x.sql", "1.0_x.txt", "0.0_x.sql", "1.0_x y.sql"] {
            assert!(parse_migration(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn converters() {
        assert_eq!(parse_converter("1-to-2.yaml").unwrap(), (1, 2, ConverterKind::Rules));
        assert_eq!(parse_converter("2-to-3.py").unwrap(), (2, 3, ConverterKind::Script));
        for bad in ["1-to-3.yaml", "0-to-1.py", "2-to-1.py", "x-to-2.py", "1to2.yaml", "1-to-2.yml"] {
            assert!(parse_converter(bad).is_err(), "accepted {bad}");
        }
    }
}
