//! What the server engines (PostgreSQL, MariaDB/MySQL) share: where the connection comes from (the
//! site, never the bundle), masking the password in everything we print, splitting SQL files into
//! statements per dialect, finding the dump/restore programs, and running `.py` data steps.
//!
//! The connection of database `NAME` is, in order: the environment variable `BUNDLE_DB_URL_<NAME>`
//! (upper-cased, every character other than a letter or digit as `_`), then `ROOT/site.yaml`:
//!
//! ```yaml
//! databases:
//!   client: { url: "postgres://app:secret@db1:5432/client" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{one_line, DbError, PlannedStep};

/// Who a server engine is, for messages: the database's name and its URL with the password masked.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub db: String,
    pub url: ConnUrl,
}

impl Ctx {
    pub(crate) fn engine(&self, context: &str, e: impl std::fmt::Display) -> DbError {
        DbError::Engine {
            db: self.db.clone(),
            path: self.url.masked.clone(),
            context: context.into(),
            message: one_line(&self.url.scrub(&e.to_string()), 300),
        }
    }

    pub(crate) fn io(&self, path: &Path, e: std::io::Error) -> DbError {
        DbError::Io { db: self.db.clone(), path: path.display().to_string(), message: e.to_string() }
    }

    pub(crate) fn tools(&self, message: String) -> DbError {
        DbError::Tools {
            db: self.db.clone(),
            location: self.url.masked.clone(),
            message: one_line(&self.url.scrub(&message), 400),
        }
    }
}

/// The file a site keeps its connections in (relative to the root).
pub const SITE_FILE: &str = "site.yaml";

/// The environment variable naming database `name`'s connection.
pub fn url_env_var(name: &str) -> String {
    format!("BUNDLE_DB_URL_{}", bundle_core::naming::db_env_suffix(name))
}

/// A connection URL with its secret kept apart: `full` is only ever handed to a driver or a child
/// process's environment; everything printed uses `masked` or goes through [`ConnUrl::scrub`].
#[derive(Clone)]
pub(crate) struct ConnUrl {
    /// As configured, credentials included.
    pub full: String,
    /// `scheme://user:***@host:port/db?params`.
    pub masked: String,
    /// The same URL without the password (safe for a command line; the password goes by environment).
    pub without_password: String,
    pub scheme: String,
    pub user: Option<String>,
    /// Decoded.
    pub password: Option<String>,
    /// The password as it appears in the URL (percent-encoded).
    raw_password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Decoded database name.
    pub dbname: String,
    /// Where it came from, for messages (`BUNDLE_DB_URL_CLIENT`, `site.yaml`).
    pub source: String,
}

impl std::fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked)
    }
}

impl ConnUrl {
    /// Parses `scheme://[user[:password]@]host[:port]/dbname[?query]`.
    pub(crate) fn parse(text: &str, source: &str) -> Result<ConnUrl, String> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| "is not a URL (expected scheme://user@host:port/database)".to_string())?;
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, raw_password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (Some(user), Some(pw)),
                None => (Some(u), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [ipv6]:port
            let (h, p) = h.split_once(']').ok_or_else(|| "has an unterminated [IPv6] host".to_string())?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() => Some(p.parse::<u16>().map_err(|_| format!("has a bad port `{p}`"))?),
            _ => None,
        };
        let dbname = percent_decode(path);
        if dbname.is_empty() || dbname.contains('/') {
            return Err("names no database (expected …/database at the end)".into());
        }
        let decode_opt = |s: Option<&str>| s.map(percent_decode);
        // `?password=` is a password too (libpq reads it): it goes the same way as the user-info one.
        let query_password = query.and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("password"))
                .map(|(_, v)| v)
        });
        let info_password = raw_password;
        let raw_password = raw_password.or(query_password);
        let password = decode_opt(raw_password);
        let userpart = |pw: Option<&str>| match (user, pw) {
            (Some(u), Some(p)) => format!("{u}:{p}@"),
            (Some(u), None) => format!("{u}@"),
            (None, Some(p)) => format!(":{p}@"),
            (None, None) => String::new(),
        };
        let tail = format!("{hostport}/{path}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
        // A password may also hide in the query (`?password=…`): mask those parameters too, and
        // leave them out of what goes on a command line.
        let masked_tail = mask_query(&tail);
        let public_tail = strip_secret_query(&tail);
        Ok(ConnUrl {
            full: text.to_string(),
            masked: format!("{scheme}://{}{masked_tail}", userpart(info_password.map(|_| "***"))),
            without_password: format!("{scheme}://{}{public_tail}", userpart(None)),
            scheme: scheme.to_ascii_lowercase(),
            user: decode_opt(user),
            password,
            raw_password: raw_password.map(str::to_string),
            host: percent_decode(&host),
            port,
            dbname,
            source: source.to_string(),
        })
    }

    /// Removes every trace of the password from a message (drivers and dump programs may echo parts
    /// of the connection string).
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(&self.full, &self.masked);
        for secret in [self.raw_password.as_deref(), self.password.as_deref()].into_iter().flatten() {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
        for (k, v) in query_pairs(&self.full) {
            if is_secret_param(&k) && !v.is_empty() {
                out = out.replace(&v, "***");
            }
        }
        out
    }

    /// The same server, another database (for scratch copies).
    pub(crate) fn with_dbname(&self, dbname: &str) -> ConnUrl {
        let swap = |u: &str| -> String {
            let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
            let (main, query) = match rest.split_once('?') {
                Some((m, q)) => (m, Some(q)),
                None => (rest, None),
            };
            let authority = main.split_once('/').map_or(main, |(a, _)| a);
            format!("{scheme}://{authority}/{dbname}{}", query.map(|q| format!("?{q}")).unwrap_or_default())
        };
        let mut u = ConnUrl::parse(&swap(&self.full), &self.source).expect("same URL with a plain name");
        u.source = self.source.clone();
        u
    }
}

fn is_secret_param(key: &str) -> bool {
    matches!(key.to_ascii_lowercase().as_str(), "password" | "pass" | "pwd" | "sslpassword")
}

fn query_pairs(url: &str) -> Vec<(String, String)> {
    let Some((_, q)) = url.split_once('?') else { return Vec::new() };
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `tail` without its secret query parameters (`password`, `sslpassword`, …): what may appear on a
/// client program's command line, which every local user can read in `/proc/*/cmdline`.
fn strip_secret_query(tail: &str) -> String {
    let Some((head, q)) = tail.split_once('?') else { return tail.to_string() };
    let kept: Vec<&str> =
        q.split('&').filter(|kv| !is_secret_param(kv.split_once('=').map_or(*kv, |(k, _)| k))).collect();
    if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    }
}

fn mask_query(tail: &str) -> String {
    let Some((head, q)) = tail.split_once('?') else { return tail.to_string() };
    let parts: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}?{}", parts.join("&"))
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(serde::Deserialize)]
struct SiteFile {
    #[serde(default)]
    databases: BTreeMap<String, SiteDb>,
}

#[derive(serde::Deserialize)]
struct SiteDb {
    url: String,
}

/// Marks a rehearsal's scratch site root: there `site.yaml` (naming the scratch copies) is the only
/// source of connections, so a `BUNDLE_DB_URL_<NAME>` set for the live site can never lead a
/// rehearsal to the live database.
pub const REHEARSAL_MARK: &str = ".rehearsal";

/// Finds database `name`'s connection: the environment variable wins over `ROOT/site.yaml`
/// (except in a rehearsal's scratch site, see [`REHEARSAL_MARK`]).
pub(crate) fn resolve_url(name: &str, engine: &str, root: &Path) -> Result<ConnUrl, DbError> {
    let var = url_env_var(name);
    let config = |message: String| DbError::Config { db: name.into(), message };
    let from_env = if root.join(REHEARSAL_MARK).exists() { None } else { std::env::var(&var).ok() };
    let (text, source) = match from_env {
        Some(v) if !v.trim().is_empty() => (v, var.clone()),
        _ => {
            let file = root.join(SITE_FILE);
            let missing = || {
                config(format!(
                    "no connection for this {engine} database: set databases.{name}.url in {} or the environment variable {var} (the bundle never carries connections)",
                    file.display()
                ))
            };
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                Err(e) => {
                    return Err(DbError::Io {
                        db: name.into(),
                        path: file.display().to_string(),
                        message: e.to_string(),
                    })
                }
            };
            // Never echo the file's text: it holds passwords. serde_yaml's errors quote only positions
            // and types, but scrub to be sure below once the URL is known.
            let site: SiteFile = serde_yaml::from_slice(&bytes)
                .map_err(|e| config(format!("{} is not valid: {}", file.display(), one_line(&e.to_string(), 200))))?;
            let db = site.databases.get(name).ok_or_else(missing)?;
            (db.url.clone(), format!("{SITE_FILE} databases.{name}.url"))
        }
    };
    let url = ConnUrl::parse(&text, &source).map_err(|m| config(format!("the connection URL from {source} {m}")))?;
    let ok = match engine {
        "postgres" => matches!(url.scheme.as_str(), "postgres" | "postgresql"),
        "mysql" => matches!(url.scheme.as_str(), "mysql" | "mariadb"),
        _ => false,
    };
    if !ok {
        return Err(config(format!("the connection URL from {source} ({}) is not a {engine} URL", url.masked)));
    }
    Ok(url)
}

/// The SQL dialects we split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Mysql,
}

/// Splits a migration file into statements without understanding SQL beyond its lexical structure:
/// quotes, identifiers, comments, PostgreSQL dollar quotes and the `mysql` client's `DELIMITER`
/// directive (needed for trigger and routine bodies). Empty and comment-only statements are dropped;
/// the terminating delimiter is not part of the statement.
pub(crate) fn split_sql(text: &str, dialect: Dialect) -> Result<Vec<String>, String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut delim = String::from(";");
    let mut i = 0;
    let mut at_line_start = true;
    let push = |cur: &mut String, out: &mut Vec<String>| {
        let s = cur.trim();
        if !strip_comments(s).trim().is_empty() {
            out.push(s.to_string());
        }
        cur.clear();
    };
    while i < b.len() {
        if dialect == Dialect::Mysql && at_line_start {
            if let Some((d, line_end)) = delimiter_directive(text, i)? {
                push(&mut cur, &mut out);
                delim = d;
                i = line_end;
                continue;
            }
        }
        at_line_start = false;
        if text[i..].starts_with(delim.as_str()) {
            push(&mut cur, &mut out);
            i += delim.len();
            continue;
        }
        if let Some(end) = verbatim_end(text, i, dialect)? {
            cur.push_str(&text[i..end]);
            i = end;
            continue;
        }
        let ch = text[i..].chars().next().expect("in bounds");
        cur.push(ch);
        i += ch.len_utf8();
        at_line_start = ch == '\n';
    }
    push(&mut cur, &mut out);
    Ok(out)
}

/// `DELIMITER xx` on a line of its own (mysql client syntax) starting at `i`: the new delimiter
/// and where the line ends.
fn delimiter_directive(text: &str, i: usize) -> Result<Option<(String, usize)>, String> {
    let line_end = text[i..].find('\n').map_or(text.len(), |n| i + n);
    let line = text[i..line_end].trim();
    if line.len() > 10 && line[..10].eq_ignore_ascii_case("delimiter ") {
        let d = line[10..].trim();
        if d.is_empty() {
            return Err("DELIMITER without a delimiter".into());
        }
        return Ok(Some((d.to_string(), line_end)));
    }
    Ok(None)
}

/// Where a comment, quoted string or identifier, or dollar-quoted body starting at `i` ends: text
/// that is copied as it is and in which a delimiter does not count. `None` when none starts at `i`.
fn verbatim_end(text: &str, i: usize, dialect: Dialect) -> Result<Option<usize>, String> {
    let b = text.as_bytes();
    let line_end = || text[i..].find('\n').map_or(b.len(), |n| i + n);
    let end = match b[i] {
        b'-' if b.get(i + 1) == Some(&b'-')
            && (dialect == Dialect::Postgres || b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace())) =>
        {
            line_end()
        }
        b'#' if dialect == Dialect::Mysql => line_end(),
        b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(text, i, dialect).ok_or("unterminated /* comment")?,
        c @ (b'\'' | b'"' | b'`') if c != b'`' || dialect == Dialect::Mysql => {
            // PostgreSQL E'…' strings take backslash escapes; MySQL strings always do (unless
            // NO_BACKSLASH_ESCAPES, which migration files should not depend on).
            let backslash = c != b'`'
                && (dialect == Dialect::Mysql
                    || (c == b'\''
                        && i > 0
                        && matches!(b[i - 1], b'e' | b'E')
                        && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_'))));
            quoted_end(b, i, c, backslash).ok_or_else(|| format!("unterminated {} quote", c as char))?
        }
        b'$' if dialect == Dialect::Postgres => {
            let Some(tag_end) = dollar_tag(b, i) else { return Ok(None) };
            let tag = &text[i..tag_end];
            let close = text[tag_end..].find(tag).ok_or_else(|| format!("unterminated {tag} quote"))?;
            tag_end + close + tag.len()
        }
        _ => return Ok(None),
    };
    Ok(Some(end))
}

fn block_comment_end(text: &str, start: usize, dialect: Dialect) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' && (depth == 0 || dialect == Dialect::Postgres) {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn quoted_end(b: &[u8], start: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// `$tag$` or `$$` at `i` (not `$1`, not part of an identifier like `a$b`): the end of the tag.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$') {
        return None;
    }
    let mut j = i + 1;
    if j < b.len() && b[j].is_ascii_digit() {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1)
}

/// The statement without leading comments (for messages and keyword checks).
pub(crate) fn strip_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--").or_else(|| sql.strip_prefix('#')) {
            sql = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if sql.starts_with("/*") && !sql.starts_with("/*!") {
            sql = sql[2..].split_once("*/").map_or("", |(_, r)| r);
        } else {
            return sql;
        }
    }
}

/// The first keyword of a statement, upper-cased.
pub(crate) fn first_word(sql: &str) -> String {
    strip_comments(sql).chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase()
}

/// A program to run: `BUNDLE_<VAR>` (a directory holding it) first, then the given names on PATH.
pub(crate) fn find_program(bindir_var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var(bindir_var) {
        for n in names {
            let p = Path::new(&dir).join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// `prog --version`'s first line.
pub(crate) fn program_version(prog: &Path) -> Result<String, String> {
    let out = Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", prog.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if !out.status.success() || line.is_empty() {
        return Err(format!("{} --version failed", prog.display()));
    }
    Ok(line)
}

/// Runs a `.py` data step with the release's interpreter: cwd at the site root, the connection in
/// its environment (`BUNDLE_DB_URL` carries credentials: it is the script's environment, not a log).
pub(crate) fn run_python(
    db: &str,
    engine: &str,
    url: &ConnUrl,
    root: &Path,
    step: &PlannedStep,
    python: Option<&Path>,
) -> Result<(), DbError> {
    let io = |p: &Path, e: std::io::Error| DbError::Io {
        db: db.into(),
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let python = python.ok_or_else(|| DbError::Config {
        db: db.into(),
        message: format!("data migration {} needs a Python interpreter and none was given", step.file.file),
    })?;
    let script = std::path::absolute(&step.file.path).map_err(|e| io(&step.file.path, e))?;
    let python = if python.components().count() > 1 {
        std::path::absolute(python).map_err(|e| io(python, e))?
    } else {
        python.to_path_buf()
    };
    let cwd = if root.is_dir() { root.to_path_buf() } else { PathBuf::from("/") };
    let out = crate::child::die_with_parent(&mut Command::new(&python))
        .arg(&script)
        .current_dir(&cwd)
        .env("BUNDLE_DB_NAME", db)
        .env("BUNDLE_DB_ENGINE", engine)
        .env("BUNDLE_DB_URL", &url.full)
        .env_remove("BUNDLE_DB_PATH")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DbError::Script {
            db: db.into(),
            file: step.file.file.clone(),
            status: "not started".into(),
            stderr: format!("cannot run {}: {e}", python.display()),
        })?;
    if !out.status.success() {
        return Err(DbError::Script {
            db: db.into(),
            file: step.file.file.clone(),
            status: super::sqlite::describe_status(out.status),
            // The script has the password; what it printed may too.
            stderr: url.scrub(&super::sqlite::stderr_tail(&out.stderr)),
        });
    }
    Ok(())
}

/// Compares two tables given as key hash → (row hash, how many rows have that key): `keyed` tables
/// (a primary key both sides have) count rows added, changed and removed by key; tables without one
/// are compared as multisets of whole rows (a changed row counts as one removed and one added).
pub(crate) fn merge_counts(
    live: &std::collections::HashMap<String, (String, u64)>,
    old: &std::collections::HashMap<String, (String, u64)>,
    keyed: bool,
) -> (u64, u64, u64) {
    let (mut added, mut changed, mut removed) = (0u64, 0u64, 0u64);
    for (k, (h, n)) in live {
        match old.get(k) {
            None => added += n,
            Some((h2, m)) => {
                if keyed && h != h2 {
                    changed += 1;
                }
                if !keyed {
                    added += n.saturating_sub(*m);
                }
            }
        }
    }
    for (k, (_, m)) in old {
        match live.get(k) {
            None => removed += m,
            Some((_, n)) if !keyed => removed += m.saturating_sub(*n),
            _ => {}
        }
    }
    (added, changed, removed)
}

/// A random lowercase suffix for scratch database names.
pub(crate) fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    if getrandom(&mut bytes).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Who we are, for `application_name` and lock holders: `bundle-install@host:pid`.
pub(crate) fn whoami() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("bundle-install@{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_mask_and_scrub() {
        let u = ConnUrl::parse("postgres://app:s%40cret@db1:5433/client?sslmode=disable", "x").unwrap();
        assert_eq!(u.masked, "postgres://app:***@db1:5433/client?sslmode=disable");
        assert_eq!(u.without_password, "postgres://app@db1:5433/client?sslmode=disable");
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!((u.host.as_str(), u.port, u.dbname.as_str()), ("db1", Some(5433), "client"));
        assert_eq!(u.scrub("failed for s@cret and s%40cret"), "failed for *** and ***");
        let q = ConnUrl::parse("mysql://root@h/db?password=hunter2&x=1", "x").unwrap();
        assert_eq!(q.masked, "mysql://root@h/db?password=***&x=1");
        assert_eq!(q.scrub("pw hunter2"), "pw ***");
        // Issue 13 item 3: a query password is the password (it goes by environment or option
        // file), and no secret parameter stays in what goes on a command line.
        assert_eq!(q.password.as_deref(), Some("hunter2"));
        assert_eq!(q.without_password, "mysql://root@h/db?x=1");
        let p = ConnUrl::parse("postgres://app@h/db?sslmode=require&password=p%26w&sslpassword=k3y", "x").unwrap();
        assert_eq!(p.password.as_deref(), Some("p&w"));
        assert_eq!(p.without_password, "postgres://app@h/db?sslmode=require");
        let only = ConnUrl::parse("postgres://app@h/db?password=pw", "x").unwrap();
        assert_eq!(only.without_password, "postgres://app@h/db");
        assert!(ConnUrl::parse("postgres://h:5432", "x").is_err());
        assert!(ConnUrl::parse("nonsense", "x").is_err());
        let s = u.with_dbname("scratch_1");
        assert_eq!(s.masked, "postgres://app:***@db1:5433/scratch_1?sslmode=disable");
        assert_eq!(url_env_var("client-db.x"), "BUNDLE_DB_URL_CLIENT_DB_X");
    }

    #[test]
    fn splits_postgres() {
        let sql = "-- a; comment\nCREATE TABLE t (x text DEFAULT 'a;b''c');\n\
                   CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN NEW.x := 'y;'; RETURN NEW; END $body$;\n\
                   SELECT E'it\\'s;', $$;$$, \"we;ird\" FROM t /* c; /* nested; */ */;\nSELECT $1";
        let parts = split_sql(sql, Dialect::Postgres).unwrap();
        assert_eq!(parts.len(), 4, "{parts:#?}");
        assert!(parts[1].ends_with("$body$"));
        assert_eq!(first_word(&parts[0]), "CREATE");
        assert_eq!(parts[3], "SELECT $1");
    }

    #[test]
    fn splits_mysql_with_delimiter() {
        let sql = "CREATE TABLE t (x TEXT); # c;\nINSERT INTO t VALUES ('a\\';b'), (\"c;\");\n\
                   DELIMITER //\nCREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.x = TRIM(NEW.x); END//\n\
                   DELIMITER ;\n/*!40101 SET NAMES utf8 */;\nSELECT `a;b` FROM t";
        let parts = split_sql(sql, Dialect::Mysql).unwrap();
        assert_eq!(parts.len(), 5, "{parts:#?}");
        assert!(parts[2].starts_with("CREATE TRIGGER") && parts[2].ends_with("END"));
        assert!(parts[3].starts_with("/*!40101"));
        assert_eq!(first_word(&parts[3]), "");
    }
}
