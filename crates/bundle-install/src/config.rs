//! Config conversion: brings the site's YAML config from the running release's config version to the
//! new release's, one step at a time, each step a converter shipped in the bundle.
//!
//! A converter is named `<N>-to-<N+1>.yaml` (declarative rules) or `<N>-to-<N+1>.py` (a script run as
//! `python SCRIPT IN.yaml OUT.yaml` with the new release's interpreter). [`convert`] runs every step
//! from `from` to `to` in order, each exactly once, on copies in a temporary directory, and only then
//! replaces `output` atomically (temp file beside it, fsync, rename, fsync of the directory). The
//! input file is never modified. The config must be a YAML mapping; an empty file is an empty mapping.
//!
//! ## Rules (`<N>-to-<N+1>.yaml`)
//! A YAML list, applied in order, each with dotted paths into nested mappings (`a.b.c` is key `c` of
//! the mapping under `b` of the mapping under `a`; every segment is a string key, none may be empty):
//!
//! ```yaml
//! - rename: {from: log_level, to: logging.level}
//! - set: {path: logging.format, value: text}
//! - replace: {path: storage.backend, value: sqlite}
//! - delete: {path: storage.compress}
//! ```
//!
//! * `rename` moves the value at `from` to `to` (it becomes the last key of its new parent). A missing
//!   source is a no-op; an existing destination is an error (`rename_conflict`): nothing is
//!   overwritten. The source's parent stays, even if it becomes empty.
//! * `set` writes `value` only when the key is missing (a key present with a null value counts as
//!   set), creating intermediate mappings.
//! * `replace` always writes `value` (in place if the key exists), creating intermediate mappings.
//! * `delete` removes the key if present; a missing key or intermediate is a no-op.
//!
//! Walking through a value that is not a mapping (a string, list, number, …) is an error naming the
//! rule number and path. A null intermediate (an empty `section:` in YAML) counts as missing: `set`,
//! `replace` and the destination of `rename` replace it with a mapping. [`apply_rules`] is all or
//! nothing: on error the document is left as it was. Note that a rules step re-serialises the YAML:
//! comments and formatting of the user's file are not kept (a script step writes what it wants).

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_yaml::{Mapping, Value};

use crate::fs::durable::{self, WriteStep};

/// How many bytes from the end of a failing script's stderr are read for the error message.
const STDERR_TAIL_BYTES: u64 = 8192;
/// How many of its last lines are shown.
const STDERR_TAIL_LINES: usize = 5;

/// Everything that can go wrong converting a config. Messages are one line: what is wrong and what
/// to do; [`ConfigError::kind`] gives a stable machine-readable name.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a valid config: {message}; fix its YAML (it must be a mapping of settings) and run the command again")]
    InvalidConfig { what: String, message: String },
    #[error("{file}{}: {message}; the converter is broken, ask the vendor for a fixed bundle", rule.map(|n| format!(": rule {n}")).unwrap_or_default())]
    InvalidRules { file: String, rule: Option<usize>, message: String },
    #[error("rule {rule} ({op} {path}): {message}; fix that setting in the config by hand or ask the vendor for a converter that handles it")]
    RuleFailed { rule: usize, op: &'static str, path: String, message: String },
    #[error("rule {rule} (rename {from} -> {to}): `{to}` already exists; keep only one of `{from}` and `{to}` in the config and run the command again")]
    RenameConflict { rule: usize, from: String, to: String },
    #[error("no config converter from version {step_from} to {} (needed to convert the config from version {from} to {to}); the bundle is incomplete, rebuild it with `{step_from}-to-{}.yaml` or `.py`", step_from + 1, step_from + 1)]
    MissingStep { step_from: u32, from: u32, to: u32 },
    #[error("two config converters from version {step_from} to {}: {first} and {second}; the bundle is ambiguous, rebuild it with only one", step_from + 1)]
    DuplicateStep { step_from: u32, first: String, second: String },
    #[error("cannot convert the config from version {from} down to {to}: converters only go up; restore the backup taken before the upgrade instead")]
    Downgrade { from: u32, to: u32 },
    #[error("the output {} is the input config itself; write the converted config somewhere else", path.display())]
    OutputIsInput { path: PathBuf },
    #[error("config converter {script} failed ({status}): {stderr_tail}; fix what it reports in the config and run the command again")]
    ScriptFailed { script: String, status: String, stderr_tail: String },
    #[error("config converter {script} did not finish within {secs} s and was killed; raise --hook-timeout if it is slow on purpose, or ask the vendor for a fixed bundle")]
    ScriptTimeout { script: String, secs: u64 },
    #[error("config converter {script} exited successfully but {message}; the converter is broken, ask the vendor for a fixed bundle")]
    ScriptOutput { script: String, message: String },
    #[error("config converter {step}: {source}")]
    InStep {
        step: String,
        #[source]
        source: Box<ConfigError>,
    },
}

impl ConfigError {
    /// A stable snake_case name of the failure, for JSON output and scripts.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ConfigError::Io { .. } => "io",
            ConfigError::InvalidConfig { .. } => "invalid_config",
            ConfigError::InvalidRules { .. } => "invalid_rules",
            ConfigError::RuleFailed { .. } => "rule_failed",
            ConfigError::RenameConflict { .. } => "rename_conflict",
            ConfigError::MissingStep { .. } => "missing_converter",
            ConfigError::DuplicateStep { .. } => "duplicate_converter",
            ConfigError::Downgrade { .. } => "config_downgrade",
            ConfigError::OutputIsInput { .. } => "output_is_input",
            ConfigError::ScriptFailed { .. } => "converter_failed",
            ConfigError::ScriptOutput { .. } => "converter_bad_output",
            ConfigError::ScriptTimeout { .. } => "converter_timeout",
            ConfigError::InStep { source, .. } => source.kind(),
        }
    }
}

/// One declarative rule of a `<N>-to-<N+1>.yaml` converter. Paths are dotted (`a.b.c`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    /// Move `from` to `to`: no-op if `from` is missing, error if `to` exists.
    Rename { from: String, to: String },
    /// Write `value` at `path` only if it is missing.
    Set { path: String, value: Value },
    /// Write `value` at `path`, whatever is there.
    Replace { path: String, value: Value },
    /// Remove `path` if present.
    Delete { path: String },
}

impl Rule {
    fn op(&self) -> &'static str {
        match self {
            Rule::Rename { .. } => "rename",
            Rule::Set { .. } => "set",
            Rule::Replace { .. } => "replace",
            Rule::Delete { .. } => "delete",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            Rule::Set { path, .. } | Rule::Replace { path, .. } | Rule::Delete { path } => {
                write!(f, "{} {path}", self.op())
            }
        }
    }
}

/// Splits a dotted path; `Err` says what is wrong with it.
fn segments(path: &str) -> Result<Vec<&str>, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    let segs: Vec<&str> = path.split('.').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(format!("the path `{path}` has an empty segment"));
    }
    Ok(segs)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A rule as written in a rules file: a mapping with one key, the rule's kind, whose value is the
/// rule's fields (`- delete: {path: a.b}`), read through [`serde_yaml::with::singleton_map`]. The
/// fields are checked apart ([`RenameFields`], …) so that their errors can name the rule's kind.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase", expecting = "a rule")]
enum RuleKind {
    Rename(Value),
    Set(Value),
    Replace(Value),
    Delete(Value),
}

/// The fields of `rename`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of `from` and `to`")]
struct RenameFields {
    from: DottedPath,
    to: DottedPath,
}

/// The fields of `set` and `replace`. A `value` written as `null` is a null value, not a missing one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of `path` and `value`")]
struct ValueFields {
    path: DottedPath,
    value: Value,
}

/// The fields of `delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of `path`")]
struct DeleteFields {
    path: DottedPath,
}

/// A path field: a YAML string of non-empty segments joined by dots (a number or a list is refused,
/// not turned into a string).
struct DottedPath(String);

impl<'de> Deserialize<'de> for DottedPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DottedPath;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a dotted path like `a.b`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DottedPath, E> {
                segments(s).map_err(E::custom)?;
                Ok(DottedPath(s.to_string()))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// serde's words for enums (variants, identifiers) in the words of a rules file (rules, kinds).
fn in_rule_words(message: &str) -> String {
    message
        .replace("unknown variant ", "unknown rule ")
        .replace("expected variant identifier", "expected a rule kind (rename, set, replace or delete)")
        .replace("invalid type: unit variant, expected newtype variant", "found a rule kind without its fields")
        .replace("expected field identifier", "expected a field name")
}

/// The fields of a rule of kind `kind`; the error names the kind.
fn fields<T: DeserializeOwned>(kind: &str, body: Value) -> Result<T, String> {
    serde_yaml::from_value(body).map_err(|e| format!("`{kind}`: {}", in_rule_words(&e.to_string())))
}

/// One item of a rules file; the error says what is wrong with it.
fn rule_from(item: Value) -> Result<Rule, String> {
    let kind: RuleKind = serde_yaml::with::singleton_map::deserialize(item).map_err(|e| {
        format!("{}; a rule is a mapping with one key, e.g. `- delete: {{path: a.b}}`", in_rule_words(&e.to_string()))
    })?;
    Ok(match kind {
        RuleKind::Rename(body) => {
            let RenameFields { from: DottedPath(from), to: DottedPath(to) } = fields("rename", body)?;
            if from == to {
                return Err(format!("`rename` from and to are the same path `{from}`"));
            }
            Rule::Rename { from, to }
        }
        RuleKind::Set(body) => {
            let ValueFields { path: DottedPath(path), value } = fields("set", body)?;
            Rule::Set { path, value }
        }
        RuleKind::Replace(body) => {
            let ValueFields { path: DottedPath(path), value } = fields("replace", body)?;
            Rule::Replace { path, value }
        }
        RuleKind::Delete(body) => {
            let DeleteFields { path: DottedPath(path) } = fields("delete", body)?;
            Rule::Delete { path }
        }
    })
}

/// Parses a rules converter: a YAML list of rules (or nothing at all). serde_yaml checks the shape
/// of each rule; errors name `file` and the rule's number.
pub(crate) fn parse_rules(text: &str, file: &str) -> Result<Vec<Rule>, ConfigError> {
    let err =
        |rule: Option<usize>, message: String| ConfigError::InvalidRules { file: file.to_string(), rule, message };
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| err(None, format!("not valid YAML ({})", one_line(&e.to_string()))))?;
    let items = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => return Err(err(None, format!("expected a list of rules, found {}", type_name(&other)))),
    };
    // Item by item, not as one `Vec`: the error then carries the rule's number.
    items.into_iter().enumerate().map(|(i, item)| rule_from(item).map_err(|m| err(Some(i + 1), m))).collect()
}

/// Walks to the mapping that holds the last segment of `segs`. Missing (or null) intermediates are
/// created when `create`, otherwise the walk stops with `Ok(None)`. A non-mapping on the way is an
/// error message naming the prefix.
fn parent_mut<'a>(root: &'a mut Mapping, segs: &[&str], create: bool) -> Result<Option<&'a mut Mapping>, String> {
    let mut cur = root;
    for (i, seg) in segs[..segs.len() - 1].iter().enumerate() {
        let key = Value::String(seg.to_string());
        match cur.get(&key) {
            None | Some(Value::Null) if create => {
                cur.insert(key.clone(), Value::Mapping(Mapping::new()));
            }
            None | Some(Value::Null) => return Ok(None),
            _ => {}
        }
        match cur.get_mut(&key) {
            Some(Value::Mapping(m)) => cur = m,
            Some(other) => {
                return Err(format!(
                    "`{}` is {}, not a mapping, so the path cannot go through it",
                    segs[..=i].join("."),
                    type_name(other)
                ))
            }
            None => unreachable!("checked or inserted above"),
        }
    }
    Ok(Some(cur))
}

fn last_key(segs: &[&str]) -> Value {
    Value::String(segs[segs.len() - 1].to_string())
}

fn checked_segments<'a>(path: &'a str, n: usize, op: &'static str) -> Result<Vec<&'a str>, ConfigError> {
    segments(path).map_err(|message| ConfigError::RuleFailed { rule: n, op, path: path.to_string(), message })
}

fn apply_rule(doc: &mut Mapping, rule: &Rule, n: usize) -> Result<(), ConfigError> {
    let op = rule.op();
    let fail = |path: &str, message: String| ConfigError::RuleFailed { rule: n, op, path: path.to_string(), message };
    match rule {
        Rule::Rename { from, to } => {
            let src = checked_segments(from, n, op)?;
            let dst = checked_segments(to, n, op)?;
            let exists = match parent_mut(doc, &src, false).map_err(|m| fail(from, m))? {
                Some(parent) => parent.contains_key(last_key(&src)),
                None => false,
            };
            if !exists {
                return Ok(());
            }
            if let Some(parent) = parent_mut(doc, &dst, false).map_err(|m| fail(to, m))? {
                if parent.contains_key(last_key(&dst)) {
                    return Err(ConfigError::RenameConflict { rule: n, from: from.clone(), to: to.clone() });
                }
            }
            let parent = parent_mut(doc, &src, false).map_err(|m| fail(from, m))?.expect("source exists");
            let value = parent.shift_remove(last_key(&src)).expect("source exists");
            let parent = parent_mut(doc, &dst, true).map_err(|m| fail(to, m))?.expect("created");
            parent.insert(last_key(&dst), value);
        }
        Rule::Set { path, value } => {
            let segs = checked_segments(path, n, op)?;
            let parent = parent_mut(doc, &segs, true).map_err(|m| fail(path, m))?.expect("created");
            let key = last_key(&segs);
            if !parent.contains_key(&key) {
                parent.insert(key, value.clone());
            }
        }
        Rule::Replace { path, value } => {
            let segs = checked_segments(path, n, op)?;
            let parent = parent_mut(doc, &segs, true).map_err(|m| fail(path, m))?.expect("created");
            parent.insert(last_key(&segs), value.clone());
        }
        Rule::Delete { path } => {
            let segs = checked_segments(path, n, op)?;
            if let Some(parent) = parent_mut(doc, &segs, false).map_err(|m| fail(path, m))? {
                parent.shift_remove(last_key(&segs));
            }
        }
    }
    Ok(())
}

/// Applies `rules` in order to `doc`, which must be a mapping (null counts as an empty mapping).
/// All or nothing: on error `doc` is unchanged.
pub(crate) fn apply_rules(doc: &mut Value, rules: &[Rule]) -> Result<(), ConfigError> {
    let mut work = match doc {
        Value::Mapping(m) => m.clone(),
        Value::Null => Mapping::new(),
        other => {
            return Err(ConfigError::InvalidConfig {
                what: "the config".into(),
                message: format!("it is {}, not a mapping", type_name(other)),
            })
        }
    };
    for (i, rule) in rules.iter().enumerate() {
        apply_rule(&mut work, rule, i + 1)?;
    }
    *doc = Value::Mapping(work);
    Ok(())
}

/// How a converter is written; one definition shared with the manifest.
pub(crate) use bundle_core::naming::ConverterKind;

/// One conversion step shipped in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Converter {
    pub from: u32,
    pub to: u32,
    pub kind: ConverterKind,
    /// The converter file (read for rules, run for scripts).
    pub path: PathBuf,
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses a config file's text: a YAML mapping, or nothing at all (an empty mapping).
fn parse_config(text: &str, what: &str) -> Result<Mapping, ConfigError> {
    let invalid = |message: String| ConfigError::InvalidConfig { what: what.to_string(), message };
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(Value::Null) => Ok(Mapping::new()),
        Ok(other) => Err(invalid(format!("it is {}, not a mapping", type_name(&other)))),
        Err(e) => Err(invalid(format!("not valid YAML ({})", one_line(&e.to_string())))),
    }
}

fn read_text(path: &Path, what: &'static str) -> Result<String, ConfigError> {
    let bytes = fs::read(path).map_err(|source| ConfigError::Io { what, path: path.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::InvalidConfig {
        what: path.display().to_string(),
        message: "it is not UTF-8 text".into(),
    })
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|source| ConfigError::Io {
        what: "cannot resolve",
        path: path.to_path_buf(),
        source,
    })
}

/// Last lines of a log file (at most [`STDERR_TAIL_BYTES`] read), joined on one line.
fn tail_of(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(STDERR_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = f.take(STDERR_TAIL_BYTES).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join(" | ")
}

fn run_script(
    python: &Path,
    script: &Path,
    input: &Path,
    output: &Path,
    work: &Path,
    limit: Duration,
) -> Result<(), ConfigError> {
    let name = script.file_name().map_or_else(|| script.display().to_string(), |n| n.to_string_lossy().into_owned());
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { what, path, source }
    };
    let stdout_log = work.join(format!("{name}.stdout"));
    let stderr_log = work.join(format!("{name}.stderr"));
    let stdout = File::create(&stdout_log).map_err(io("cannot create", &stdout_log))?;
    let stderr = File::create(&stderr_log).map_err(io("cannot create", &stderr_log))?;
    let cwd = work.join(format!("{name}.cwd"));
    fs::create_dir(&cwd).map_err(io("cannot create", &cwd))?;
    let mut child = crate::child::die_with_parent(&mut Command::new(python))
        .arg(script)
        .arg(input)
        .arg(output)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group, so the time limit kills whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(io("cannot run the Python interpreter", python))?;
    let status = crate::child::wait_or_kill(&mut child, limit)
        .map_err(io("cannot wait for the Python interpreter", python))?
        .ok_or_else(|| ConfigError::ScriptTimeout { script: name.clone(), secs: limit.as_secs() })?;
    if !status.success() {
        let mut tail = tail_of(&stderr_log);
        if tail.is_empty() {
            tail = tail_of(&stdout_log);
        }
        if tail.is_empty() {
            tail = "it printed nothing".into();
        }
        let status = match status.code() {
            Some(code) => format!("exit status {code}"),
            None => format!("{status}"),
        };
        return Err(ConfigError::ScriptFailed { script: name, status, stderr_tail: tail });
    }
    let bad = |message: String| ConfigError::ScriptOutput { script: name.clone(), message };
    match fs::symlink_metadata(output) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(bad("its output is not a regular file".into())),
        Err(_) => return Err(bad("wrote no output file".into())),
    }
    let text = fs::read_to_string(output).map_err(|e| bad(format!("its output cannot be read as text ({e})")))?;
    parse_config(&text, "its output").map_err(|e| match e {
        ConfigError::InvalidConfig { message, .. } => bad(format!("its output is not a valid config: {message}")),
        other => other,
    })?;
    Ok(())
}

/// Writes `bytes` to `output` atomically with [`durable::write_atomic_steps`] (a temp file beside
/// it, fsync, rename, fsync of the directory). The file gets `mode_from`'s permissions, or 0600 (as
/// private as a temporary file) when that cannot be read.
fn write_atomically(output: &Path, bytes: &[u8], mode_from: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(mode_from).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    durable::write_atomic_steps(output, bytes, mode).map_err(|(step, source)| {
        let (what, path) = match step {
            WriteStep::CreateTemp => ("cannot create a temporary file in", durable::parent_dir(output)),
            WriteStep::Write | WriteStep::Rename => ("cannot write", output),
            WriteStep::SyncFile => ("cannot sync", output),
            WriteStep::SyncDir => ("cannot sync directory", durable::parent_dir(output)),
        };
        ConfigError::Io { what, path: path.to_path_buf(), source }
    })
}

/// Converts the config at `input` from version `from` to version `to` with `converters` (run in
/// order, scripts with `python`) and writes the result to `output` atomically. Returns the `from`
/// version of each step run (empty when `from == to`: the file is then copied unchanged, after
/// checking that it is a YAML mapping). `input` is never modified. Every step is looked up before
/// any runs, so a missing step fails without running anything.
/// Each converter script has a time limit: a script still running after `limit` is
/// killed with everything it started, and the conversion fails (`converter_timeout`). A converter
/// that hangs would otherwise hold the site's lock forever.
pub(crate) fn convert_within(
    input: &Path,
    output: &Path,
    from: u32,
    to: u32,
    converters: &[Converter],
    python: &Path,
    limit: Duration,
) -> Result<Vec<u32>, ConfigError> {
    if from > to {
        return Err(ConfigError::Downgrade { from, to });
    }
    let mut steps: Vec<&Converter> = Vec::new();
    for v in from..to {
        let mut found = converters.iter().filter(|c| c.from == v && c.to == v + 1);
        let first = found.next().ok_or(ConfigError::MissingStep { step_from: v, from, to })?;
        if let Some(second) = found.next() {
            return Err(ConfigError::DuplicateStep {
                step_from: v,
                first: first.path.display().to_string(),
                second: second.path.display().to_string(),
            });
        }
        steps.push(first);
    }
    if let (Ok(a), Ok(b)) = (fs::canonicalize(input), fs::canonicalize(output)) {
        if a == b {
            return Err(ConfigError::OutputIsInput { path: output.to_path_buf() });
        }
    }

    let original = read_text(input, "cannot read the config")?;
    parse_config(&original, &input.display().to_string())?;
    if steps.is_empty() {
        write_atomically(output, original.as_bytes(), input)?;
        return Ok(Vec::new());
    }

    let work = tempfile::Builder::new().prefix("bundle-config-").tempdir().map_err(|source| ConfigError::Io {
        what: "cannot create a temporary directory",
        path: std::env::temp_dir(),
        source,
    })?;
    let work_dir = absolute(work.path())?;
    // Scripts get a copy: whatever they do to IN, the site's file stays as it was.
    let mut current = work_dir.join(format!("config-v{from}.yaml"));
    fs::write(&current, &original).map_err(|source| ConfigError::Io {
        what: "cannot write",
        path: current.clone(),
        source,
    })?;
    let mut done = Vec::with_capacity(steps.len());
    for step in steps {
        let step_name = step
            .path
            .file_name()
            .map_or_else(|| format!("{}-to-{}", step.from, step.to), |n| n.to_string_lossy().into_owned());
        let in_step = |e: ConfigError| ConfigError::InStep { step: step_name.clone(), source: Box::new(e) };
        let next = work_dir.join(format!("config-v{}.yaml", step.to));
        match step.kind {
            ConverterKind::Rules => {
                let text = fs::read_to_string(&step.path).map_err(|source| ConfigError::Io {
                    what: "cannot read the config converter",
                    path: step.path.clone(),
                    source,
                })?;
                let rules = parse_rules(&text, &step_name)?;
                let config = read_text(&current, "cannot read")?;
                let mut doc = Value::Mapping(parse_config(&config, &current.display().to_string())?);
                apply_rules(&mut doc, &rules).map_err(in_step)?;
                let out = serde_yaml::to_string(&doc).map_err(|e| {
                    in_step(ConfigError::InvalidConfig { what: "the converted config".into(), message: e.to_string() })
                })?;
                fs::write(&next, out).map_err(|source| ConfigError::Io {
                    what: "cannot write",
                    path: next.clone(),
                    source,
                })?;
            }
            ConverterKind::Script => {
                let script = absolute(&step.path)?;
                let python = if python.components().count() > 1 { absolute(python)? } else { python.to_path_buf() };
                run_script(&python, &script, &current, &next, &work_dir, limit)?;
            }
        }
        done.push(step.from);
        current = next;
    }
    let bytes =
        fs::read(&current).map_err(|source| ConfigError::Io { what: "cannot read", path: current.clone(), source })?;
    write_atomically(output, &bytes, input)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    /// `convert_within` with the default script limit (that of hooks).
    fn convert(
        input: &Path,
        output: &Path,
        from: u32,
        to: u32,
        converters: &[Converter],
        python: &Path,
    ) -> Result<Vec<u32>, ConfigError> {
        let limit = Duration::from_secs(crate::transaction::hooks::DEFAULT_TIMEOUT_SECS);
        convert_within(input, output, from, to, converters, python, limit)
    }

    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn rules(text: &str) -> Vec<Rule> {
        parse_rules(text, "t.yaml").unwrap()
    }

    fn applied(doc: &str, rule_text: &str) -> Result<Value, ConfigError> {
        let mut d = yaml(doc);
        apply_rules(&mut d, &rules(rule_text)).map(|()| d)
    }

    fn keys(v: &Value) -> Vec<String> {
        v.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
    }

    fn python3() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|d| d.join("python3")).find(|p| p.is_file())
    }

    macro_rules! python_or_skip {
        () => {
            match python3() {
                Some(p) => p,
                None => {
                    eprintln!("skipping: `python3` is not on PATH");
                    return;
                }
            }
        };
    }

    #[test]
    fn parses_every_rule_kind() {
        let r = rules(
            "- rename: {from: a.b, to: c}\n- set: {path: x.y, value: 1}\n- replace: {path: x.z, value: [1, 2]}\n\
             - delete: {path: x.y}\n- set: {path: n, value: null}\n",
        );
        assert_eq!(
            r,
            vec![
                Rule::Rename { from: "a.b".into(), to: "c".into() },
                Rule::Set { path: "x.y".into(), value: yaml("1") },
                Rule::Replace { path: "x.z".into(), value: yaml("[1, 2]") },
                Rule::Delete { path: "x.y".into() },
                Rule::Set { path: "n".into(), value: Value::Null },
            ]
        );
        assert_eq!(r[0].to_string(), "rename a.b -> c");
        assert_eq!(r[3].to_string(), "delete x.y");
        assert!(rules("").is_empty());
        assert!(rules("# only a comment\n").is_empty());
        assert!(rules("[]").is_empty());
        // A value is taken as written, YAML tag included.
        assert_eq!(
            rules("- replace: {path: t, value: !env HOME}"),
            [Rule::Replace { path: "t".into(), value: yaml("!env HOME") }]
        );
        let fixture = fs::read_to_string(fixtures().join("config/converters/1-to-2.yaml")).unwrap();
        assert_eq!(parse_rules(&fixture, "1-to-2.yaml").unwrap().len(), 4);
    }

    #[test]
    fn rule_parse_errors_name_file_and_rule() {
        let cases = [
            ("a: 1", None, "expected a list of rules, found a mapping"),
            ("- [", None, "not valid YAML"),
            ("- delete: {path: a}\n- 3", Some(2), "invalid type: integer `3`, expected a rule; a rule is a mapping"),
            ("- delete: {path: a}\n  set: {path: b, value: 1}", Some(1), "expected map with a single key"),
            ("- {}", Some(1), "expected map with a single key"),
            ("- move: {from: a, to: b}", Some(1), "unknown rule `move`, expected one of `rename`, `set`"),
            (
                "- delete: {path: a}\n- delete: {path: a, value: 1}",
                Some(2),
                "`delete`: unknown field `value`, expected `path`",
            ),
            ("- set: {path: a, valu: 1}", Some(1), "`set`: unknown field `valu`, expected `path` or `value`"),
            ("- set: {path: a}", Some(1), "`set`: missing field `value`"),
            ("- replace: {value: 1}", Some(1), "`replace`: missing field `path`"),
            ("- rename: {from: a}", Some(1), "`rename`: missing field `to`"),
            ("- delete: a.b", Some(1), "`delete`: invalid type: string \"a.b\", expected a mapping of `path`"),
            ("- delete: {path: 3}", Some(1), "invalid type: integer `3`, expected a dotted path like `a.b`"),
            ("- delete: {path: [a]}", Some(1), "invalid type: sequence, expected a dotted path like `a.b`"),
            ("- delete: {path: a..b}", Some(1), "empty segment"),
            ("- delete: {path: .a}", Some(1), "empty segment"),
            ("- delete: {path: a.}", Some(1), "empty segment"),
            ("- delete: {path: ''}", Some(1), "the path is empty"),
            ("- rename: {from: a.b, to: a.b}", Some(1), "same path"),
            (
                "- 1: {path: a}",
                Some(1),
                "invalid type: integer `1`, expected a rule kind (rename, set, replace or delete)",
            ),
            ("- delete", Some(1), "found a rule kind without its fields"),
            ("- delete: {1: a}", Some(1), "`delete`: invalid type: integer `1`, expected a field name"),
            ("- delete: null", Some(1), "`delete`: missing field `path`"),
            ("- !delete {path: a}", Some(1), "expected a rule"),
            ("- rename: {from: a, to: b, too: c}", Some(1), "`rename`: unknown field `too`, expected `from` or `to`"),
        ];
        for (text, rule, want) in cases {
            let err = parse_rules(text, "3-to-4.yaml").unwrap_err();
            assert_eq!(err.kind(), "invalid_rules", "{text}");
            let msg = err.to_string();
            assert!(msg.starts_with("3-to-4.yaml"), "{text}: {msg}");
            assert!(msg.contains(want), "{text}: {msg}");
            match (rule, &err) {
                (Some(n), _) => assert!(msg.contains(&format!(": rule {n}: ")), "{text}: {msg}"),
                (None, _) => assert!(!msg.contains("rule 1"), "{text}: {msg}"),
            }
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn rename() {
        let d =
            applied("log_level: info\nserver: {port: 1}\n", "- rename: {from: log_level, to: logging.level}").unwrap();
        assert_eq!(d, yaml("server: {port: 1}\nlogging: {level: info}"));
        assert_eq!(keys(&d), ["server", "logging"]);
        // Nested source, into an existing mapping; the emptied parent stays.
        let d = applied("a: {b: {c: 1}}\nx: {y: 2}\n", "- rename: {from: a.b.c, to: x.z}").unwrap();
        assert_eq!(d, yaml("a: {b: {}}\nx: {y: 2, z: 1}"));
        // A whole subtree moves.
        let d = applied("a: {b: {c: 1, d: [1]}}\n", "- rename: {from: a.b, to: e}").unwrap();
        assert_eq!(d, yaml("a: {}\ne: {c: 1, d: [1]}"));
        // Missing source (or its parent, or a null parent): no-op, whatever the destination.
        for doc in ["k: 1", "a: {}", "a: null", "a: {b: {}}"] {
            assert_eq!(applied(doc, "- rename: {from: a.b.c, to: k}").unwrap(), yaml(doc), "{doc}");
        }
        // Existing destination: conflict, document unchanged.
        let mut d = yaml("a: 1\nb: {c: 2}\n");
        let err = apply_rules(&mut d, &rules("- delete: {path: z}\n- rename: {from: a, to: b.c}")).unwrap_err();
        assert_eq!(err.kind(), "rename_conflict");
        let msg = err.to_string();
        assert!(msg.contains("rule 2") && msg.contains("`b.c` already exists"), "{msg}");
        assert_eq!(d, yaml("a: 1\nb: {c: 2}\n"));
        // A destination holding null exists too.
        assert_eq!(applied("a: 1\nb: null", "- rename: {from: a, to: b}").unwrap_err().kind(), "rename_conflict");
        // Destination through a scalar: error naming the rule and path.
        let err = applied("a: 1\nb: text", "- rename: {from: a, to: b.c}").unwrap_err();
        assert_eq!(err.kind(), "rule_failed");
        assert!(err.to_string().contains("rule 1 (rename b.c)"), "{err}");
        assert!(err.to_string().contains("`b` is a string, not a mapping"), "{err}");
        // Source through a scalar: error too.
        let err = applied("a: [1]", "- rename: {from: a.b, to: c}").unwrap_err();
        assert!(err.to_string().contains("`a` is a list, not a mapping"), "{err}");
    }

    #[test]
    fn rename_and_delete_keep_the_order_of_other_keys() {
        let d = applied("a: 1\nb: 2\nc: 3\nd: 4", "- rename: {from: a, to: z}\n- delete: {path: b}").unwrap();
        assert_eq!(keys(&d), ["c", "d", "z"]);
    }

    #[test]
    fn script_cannot_touch_the_input() {
        let python = python_or_skip!();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = put(d, "app.yaml", "a: 1\n");
        let script = put(
            d,
            "1-to-2.py",
            "import sys\nopen(sys.argv[1], 'w').write('vandalised: true\\n')\nopen(sys.argv[2], 'w').write('b: 2\\n')\n",
        );
        let out = d.join("out.yaml");
        convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Script, script)], &python).unwrap();
        assert_eq!(fs::read_to_string(&input).unwrap(), "a: 1\n");
        assert_eq!(fs::read_to_string(&out).unwrap(), "b: 2\n");
    }

    #[test]
    fn set_only_when_missing() {
        let d = applied("a: {b: 1}", "- set: {path: a.b, value: 2}\n- set: {path: a.c, value: 3}").unwrap();
        assert_eq!(d, yaml("a: {b: 1, c: 3}"));
        // Present with null counts as set.
        assert_eq!(applied("a: null", "- set: {path: a, value: 2}").unwrap(), yaml("a: null"));
        // Creates intermediates, and replaces a null intermediate by a mapping.
        assert_eq!(applied("{}", "- set: {path: x.y.z, value: true}").unwrap(), yaml("x: {y: {z: true}}"));
        assert_eq!(applied("x:\n", "- set: {path: x.y, value: 1}").unwrap(), yaml("x: {y: 1}"));
        let err = applied("x: {y: 5}", "- set: {path: x.y.z, value: 1}").unwrap_err();
        assert_eq!(err.kind(), "rule_failed");
        assert!(err.to_string().contains("rule 1 (set x.y.z)"), "{err}");
        assert!(err.to_string().contains("`x.y` is a number"), "{err}");
    }

    #[test]
    fn replace_always_writes() {
        let d = applied("a: {b: 1, c: 2}", "- replace: {path: a.b, value: {deep: true}}").unwrap();
        assert_eq!(d, yaml("a: {b: {deep: true}, c: 2}"));
        assert_eq!(keys(&d["a"]), ["b", "c"], "replaced in place");
        assert_eq!(applied("{}", "- replace: {path: p.q, value: s}").unwrap(), yaml("p: {q: s}"));
        assert_eq!(applied("p: null", "- replace: {path: p, value: 1}").unwrap(), yaml("p: 1"));
        let err = applied("p: true", "- replace: {path: p.q, value: 1}").unwrap_err();
        assert!(err.to_string().contains("rule 1 (replace p.q)") && err.to_string().contains("boolean"), "{err}");
    }

    #[test]
    fn delete_if_present() {
        assert_eq!(applied("a: {b: 1, c: 2}", "- delete: {path: a.b}").unwrap(), yaml("a: {c: 2}"));
        assert_eq!(applied("a: {b: 1}", "- delete: {path: a}").unwrap(), yaml("{}"));
        for doc in ["a: {c: 2}", "z: 1", "a: null"] {
            assert_eq!(applied(doc, "- delete: {path: a.b.c}").unwrap(), yaml(doc), "{doc}");
        }
        let err = applied("a: {b: 3}", "- delete: {path: a.b.c}").unwrap_err();
        assert_eq!(err.kind(), "rule_failed");
        assert!(err.to_string().contains("rule 1 (delete a.b.c)"), "{err}");
    }

    #[test]
    fn apply_errors_leave_the_document_alone() {
        let mut d = yaml("a: 1\nb: [x]");
        let r = rules("- replace: {path: a, value: 2}\n- set: {path: n, value: 1}\n- delete: {path: b.c}");
        let err = apply_rules(&mut d, &r).unwrap_err();
        assert!(err.to_string().contains("rule 3 (delete b.c)"), "{err}");
        assert_eq!(d, yaml("a: 1\nb: [x]"));
        // Rules built in code are checked too.
        let mut d = yaml("a: 1");
        let err = apply_rules(&mut d, &[Rule::Delete { path: "a..b".into() }]).unwrap_err();
        assert_eq!(err.kind(), "rule_failed");
        assert!(err.to_string().contains("empty segment"), "{err}");
        // The document must be a mapping; null is an empty one.
        let err = apply_rules(&mut yaml("[1]"), &[]).unwrap_err();
        assert_eq!(err.kind(), "invalid_config");
        let mut d = Value::Null;
        apply_rules(&mut d, &rules("- set: {path: a, value: 1}")).unwrap();
        assert_eq!(d, yaml("a: 1"));
    }

    #[test]
    fn fixture_rules_turn_v1_defaults_into_v2_defaults() {
        let mut d = yaml(&fs::read_to_string(fixtures().join("config/defaults/v1.yaml")).unwrap());
        let r =
            parse_rules(&fs::read_to_string(fixtures().join("config/converters/1-to-2.yaml")).unwrap(), "1-to-2.yaml")
                .unwrap();
        apply_rules(&mut d, &r).unwrap();
        let v2 = yaml(&fs::read_to_string(fixtures().join("config/defaults/v2.yaml")).unwrap());
        assert_eq!(d, v2);
        assert_eq!(keys(&d), keys(&v2));
    }

    fn conv(from: u32, kind: ConverterKind, path: PathBuf) -> Converter {
        Converter { from, to: from + 1, kind, path }
    }

    /// Writes `text` to `dir/name` and returns the path.
    fn put(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn chain_of_rules_then_script() {
        let python = python_or_skip!();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input_text = "# the user's comment\nlog_level: debug\nstorage: {backend: files, compress: true}\n";
        let input = put(d, "app.yaml", input_text);
        let rules = put(
            d,
            "1-to-2.yaml",
            "- rename: {from: log_level, to: logging.level}\n- delete: {path: storage.compress}\n",
        );
        // The script sees a copy of the previous step's output, runs in an empty temp dir with no stdin.
        let script = put(
            d,
            "2-to-3.py",
            "import os, sys\n\
             assert sys.stdin is None or sys.stdin.read() == ''\n\
             assert os.listdir('.') == [], os.listdir('.')\n\
             src, dst = sys.argv[1], sys.argv[2]\n\
             assert src != dst and os.path.isabs(src) and os.path.isabs(dst)\n\
             text = open(src).read()\n\
             assert 'logging:' in text and 'compress' not in text, text\n\
             open(src, 'w').write('vandalised: true\\n')\n\
             print('noise on stdout')\n\
             open(dst, 'w').write(text + 'converted_by: script  # a comment the script keeps\\n')\n",
        );
        let out = d.join("release").join("app.yaml");
        fs::create_dir(d.join("release")).unwrap();
        let convs = [conv(2, ConverterKind::Script, script), conv(1, ConverterKind::Rules, rules)];
        let steps = convert(&input, &out, 1, 3, &convs, &python).unwrap();
        assert_eq!(steps, [1, 2]);
        assert_eq!(fs::read_to_string(&input).unwrap(), input_text, "input untouched");
        let text = fs::read_to_string(&out).unwrap();
        assert!(text.contains("# a comment the script keeps"), "the script's bytes are written as is: {text}");
        assert_eq!(yaml(&text), yaml("storage: {backend: files}\nlogging: {level: debug}\nconverted_by: script"));
        let leftovers: Vec<_> = fs::read_dir(d.join("release")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("app.yaml")], "no temp files beside the output");
    }

    #[test]
    fn chain_with_the_fixture_converters() {
        let python3 = python_or_skip!();
        let dir = tempfile::tempdir().unwrap();
        // The fixture script imports fieldkit, which lives in the release's venv: stand in for that
        // interpreter with one that finds fieldkit in the fixtures.
        let python = put(
            dir.path(),
            "python",
            &format!(
                "#!/bin/sh\nPYTHONPATH='{}' exec '{}' \"$@\"\n",
                fixtures().join("fieldkit").display(),
                python3.display()
            ),
        );
        fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let convs = [
            conv(1, ConverterKind::Rules, fixtures().join("config/converters/1-to-2.yaml")),
            conv(2, ConverterKind::Script, fixtures().join("config/converters/2-to-3.py")),
        ];
        let out = dir.path().join("app.yaml");
        let steps = convert(&fixtures().join("config/defaults/v1.yaml"), &out, 1, 3, &convs, &python).unwrap();
        assert_eq!(steps, [1, 2]);
        let v3 = yaml(&fs::read_to_string(fixtures().join("config/defaults/v3.yaml")).unwrap());
        assert_eq!(yaml(&fs::read_to_string(&out).unwrap()), v3);
        // 2 -> 3 alone on the v2 defaults gives the same.
        let out2 = dir.path().join("app2.yaml");
        assert_eq!(convert(&fixtures().join("config/defaults/v2.yaml"), &out2, 2, 3, &convs, &python).unwrap(), [2]);
        assert_eq!(yaml(&fs::read_to_string(&out2).unwrap()), v3);
    }

    #[test]
    fn failing_script() {
        let python = python_or_skip!();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = put(d, "app.yaml", "a: 1\n");
        let script = put(
            d,
            "1-to-2.py",
            "import sys\nfor i in range(20):\n    print(f'line {i}', file=sys.stderr)\n\
             print('2-to-3: error: server.port must be an integer', file=sys.stderr)\nsys.exit(3)\n",
        );
        let out = put(d, "out.yaml", "previous: content\n");
        let err = convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Script, script)], &python).unwrap_err();
        assert_eq!(err.kind(), "converter_failed");
        let msg = err.to_string();
        assert!(msg.contains("1-to-2.py") && msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("line 19 | 2-to-3: error: server.port must be an integer"), "{msg}");
        assert!(!msg.contains("line 15"), "only the last lines: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(fs::read_to_string(&out).unwrap(), "previous: content\n", "output untouched on failure");
        assert_eq!(fs::read_to_string(&input).unwrap(), "a: 1\n");

        // Killed by a signal.
        let script = put(d, "1-to-2.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n");
        let err = convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Script, script)], &python).unwrap_err();
        assert_eq!(err.kind(), "converter_failed");
        assert!(err.to_string().contains("signal") && err.to_string().contains("it printed nothing"), "{err}");
    }

    #[test]
    fn script_output_must_be_a_mapping() {
        let python = python_or_skip!();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = put(d, "app.yaml", "a: 1\n");
        let out = d.join("out.yaml");
        let cases = [
            ("pass\n", "wrote no output file"),
            ("import sys\nopen(sys.argv[2], 'w').write('- 1\\n- 2\\n')\n", "is a list, not a mapping"),
            ("import sys\nopen(sys.argv[2], 'w').write('a: [\\n')\n", "not valid YAML"),
            ("import os, sys\nos.mkdir(sys.argv[2])\n", "not a regular file"),
        ];
        for (body, want) in cases {
            let script = put(d, "1-to-2.py", body);
            let err = convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Script, script)], &python).unwrap_err();
            assert_eq!(err.kind(), "converter_bad_output", "{body}");
            assert!(err.to_string().contains("1-to-2.py") && err.to_string().contains(want), "{body}: {err}");
            assert!(!out.exists());
        }
        // An empty output is an empty mapping.
        let script = put(d, "1-to-2.py", "import sys\nopen(sys.argv[2], 'w').close()\n");
        convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Script, script)], &python).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "");
    }

    /// A converter that never finishes is killed at the limit with what it started, and the
    /// output is never written.
    #[test]
    fn hanging_script_is_killed_at_the_limit() {
        let python = python_or_skip!();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = put(d, "app.yaml", "a: 1\n");
        let out = d.join("out.yaml");
        let pid_file = d.join("grandchild.pid");
        let script = put(
            d,
            "1-to-2.py",
            &format!(
                "import subprocess, sys, time\n\
                 p = subprocess.Popen(['sleep', '60'])\n\
                 open({pid:?}, 'w').write(str(p.pid))\n\
                 time.sleep(60)\n",
                pid = pid_file.display().to_string()
            ),
        );
        let t = std::time::Instant::now();
        let err = convert_within(
            &input,
            &out,
            1,
            2,
            &[conv(1, ConverterKind::Script, script)],
            &python,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(20), "not killed in time: {:?}", t.elapsed());
        assert_eq!(err.kind(), "converter_timeout", "{err}");
        assert!(err.to_string().contains("within 1 s") && err.to_string().contains("--hook-timeout"), "{err}");
        assert!(!out.exists());
        let pid: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // The grandchild went with the script's process group (it may linger a moment as a zombie
        // of a dead parent until init reaps it, so allow a short wait).
        let gone = (0..100).any(|_| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead = stat.is_empty() || stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z'));
            if !dead {
                std::thread::sleep(Duration::from_millis(50));
            }
            dead
        });
        assert!(gone, "the converter's child process {pid} survived");
    }

    #[test]
    fn missing_duplicate_and_backward_steps() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = put(d, "app.yaml", "a: 1\n");
        let out = d.join("out.yaml");
        let marker = d.join("ran");
        // Step 1 would leave a marker if it ran: a missing step 2 must stop everything before.
        let script = put(d, "1-to-2.py", &format!("open('{}', 'w').close()\n", marker.display()));
        let r = put(d, "3-to-4.yaml", "- set: {path: b, value: 2}\n");
        let convs = [conv(1, ConverterKind::Script, script.clone()), conv(3, ConverterKind::Rules, r.clone())];
        let err = convert(&input, &out, 1, 4, &convs, Path::new("python3")).unwrap_err();
        assert_eq!(err.kind(), "missing_converter");
        let msg = err.to_string();
        assert!(
            msg.contains("from version 2 to 3") && msg.contains("from version 1 to 4") && msg.contains("2-to-3"),
            "{msg}"
        );
        assert!(!marker.exists() && !out.exists());

        let dup = [conv(3, ConverterKind::Rules, r.clone()), conv(3, ConverterKind::Script, d.join("3-to-4.py"))];
        let err = convert(&input, &out, 3, 4, &dup, Path::new("python3")).unwrap_err();
        assert_eq!(err.kind(), "duplicate_converter");
        assert!(err.to_string().contains("3-to-4.yaml") && err.to_string().contains("3-to-4.py"), "{err}");

        let err = convert(&input, &out, 4, 3, &convs, Path::new("python3")).unwrap_err();
        assert_eq!(err.kind(), "config_downgrade");
        assert!(!out.exists());
    }

    #[test]
    fn same_version_copies_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let text = "# comment kept\nserver:   {port: 8080}   # odd spacing kept\n";
        let input = put(d, "app.yaml", text);
        fs::set_permissions(&input, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let out = put(d, "out.yaml", "old: 1\n");
        assert_eq!(convert(&input, &out, 3, 3, &[], Path::new("python3")).unwrap(), Vec::<u32>::new());
        assert_eq!(fs::read_to_string(&out).unwrap(), text);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o640, "input's mode kept");
        // An empty config is an empty mapping; rules apply to it.
        let empty = put(d, "empty.yaml", "");
        assert_eq!(convert(&empty, &out, 1, 1, &[], Path::new("python3")).unwrap(), Vec::<u32>::new());
        let r = put(d, "1-to-2.yaml", "- set: {path: a.b, value: 1}\n");
        convert(&empty, &out, 1, 2, &[conv(1, ConverterKind::Rules, r)], Path::new("python3")).unwrap();
        assert_eq!(yaml(&fs::read_to_string(&out).unwrap()), yaml("a: {b: 1}"));
        // Output == input is refused, the file untouched.
        let err = convert(&input, &input, 3, 3, &[], Path::new("python3")).unwrap_err();
        assert_eq!(err.kind(), "output_is_input");
        assert_eq!(fs::read_to_string(&input).unwrap(), text);
    }

    #[test]
    fn bad_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("out.yaml");
        for (text, want) in [("- a\n- b\n", "is a list"), ("just text\n", "is a string"), ("a: [\n", "not valid YAML")]
        {
            let input = put(d, "app.yaml", text);
            let err = convert(&input, &out, 2, 2, &[], Path::new("python3")).unwrap_err();
            assert_eq!(err.kind(), "invalid_config", "{text}");
            assert!(err.to_string().contains("app.yaml") && err.to_string().contains(want), "{text}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let err = convert(&d.join("nope.yaml"), &out, 2, 2, &[], Path::new("python3")).unwrap_err();
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("nope.yaml"), "{err}");
        assert!(!out.exists());

        // A rules step that fails names the converter, the rule and the path.
        let input = put(d, "app.yaml", "storage: files\n");
        let r = put(d, "1-to-2.yaml", "- set: {path: x, value: 1}\n- delete: {path: storage.compress}\n");
        let err = convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Rules, r)], Path::new("python3")).unwrap_err();
        assert_eq!(err.kind(), "rule_failed");
        let msg = err.to_string();
        assert!(msg.starts_with("config converter 1-to-2.yaml: rule 2 (delete storage.compress)"), "{msg}");
        assert!(msg.contains("`storage` is a string"), "{msg}");
        // A broken rules file.
        let r = put(d, "1-to-2.yaml", "- frobnicate: {path: x}\n");
        let err = convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Rules, r)], Path::new("python3")).unwrap_err();
        assert_eq!(err.kind(), "invalid_rules");
        assert!(err.to_string().starts_with("1-to-2.yaml: rule 1: unknown rule `frobnicate`"), "{err}");
        // A python that does not exist.
        let s = put(d, "1-to-2.py", "pass\n");
        let err =
            convert(&input, &out, 1, 2, &[conv(1, ConverterKind::Script, s)], &d.join("venv/bin/python")).unwrap_err();
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("venv/bin/python"), "{err}");
        assert!(!out.exists());
    }
}
