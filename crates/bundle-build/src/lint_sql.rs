//! A lexical lint for MINOR migration steps (`X.Y_…sql` with `Y > 0`): a minor step must keep code
//! built for an older minor of the same major working, so it may only add. Statements that remove,
//! rename, retype or tighten something, or throw rows away, are reported (as warnings: the lint reads
//! SQL without parsing it, for every dialect the installer supports).
//!
//! What is flagged, per statement (comments and string literals ignored):
//! `DROP …` (except `DROP NOT NULL`, which only relaxes), `RENAME`, `ALTER … TYPE` / `SET DATA TYPE`,
//! `MODIFY`, `CHANGE [COLUMN]`, `SET NOT NULL`, `ADD [COLUMN] … NOT NULL` without a `DEFAULT` (old
//! code's inserts fail), `TRUNCATE`, and `DELETE` without a `WHERE`.

use std::path::Path;

/// One statement that is not additive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line where the statement starts.
    pub line: usize,
    /// The statement on one line, shortened.
    pub statement: String,
    /// What it does that old code may not survive.
    pub reason: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: `{}` {}", self.line, self.statement, self.reason)
    }
}

/// Reads and lints one migration file; an unreadable file gives no findings (the build reports it).
pub fn check_file(path: &Path) -> Vec<Finding> {
    match std::fs::read(path) {
        Ok(bytes) => non_additive(&String::from_utf8_lossy(&bytes)),
        Err(_) => Vec::new(),
    }
}

/// Every non-additive statement of a SQL script.
pub fn non_additive(sql: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (line, original, words) in statements(sql) {
        if let Some(reason) = classify(&words) {
            out.push(Finding { line, statement: shorten(&original, 120), reason });
        }
    }
    out
}

fn classify(w: &[String]) -> Option<&'static str> {
    let has = |word: &str| w.iter().any(|x| x == word);
    let seq = |a: &str, b: &str| w.windows(2).any(|p| p[0] == a && p[1] == b);
    let first = w.first().map(String::as_str).unwrap_or("");
    if first == "TRUNCATE" {
        return Some("removes every row of a table");
    }
    if first == "DELETE" && !has("WHERE") {
        return Some("deletes every row of a table (no WHERE)");
    }
    if has("RENAME") {
        return Some("renames something old code still uses by its old name");
    }
    if w.iter().enumerate().any(|(i, x)| x == "DROP" && w.get(i + 1).map(String::as_str) != Some("NOT")) {
        return Some("drops something old code may still use");
    }
    let alter_table = first == "ALTER" && w.get(1).map(String::as_str) == Some("TABLE");
    if alter_table {
        if seq("SET", "NOT") {
            return Some("makes an existing column NOT NULL: old code's inserts and updates may fail");
        }
        if seq("DATA", "TYPE")
            || w.windows(3).any(|p| p[0] == "ALTER" && p[2] == "TYPE")
            || w.windows(4).any(|p| p[0] == "ALTER" && p[1] == "COLUMN" && p[3] == "TYPE")
        {
            return Some("changes a column's type");
        }
        if has("MODIFY") {
            return Some("changes a column's definition (MODIFY)");
        }
        if has("CHANGE") {
            return Some("renames or redefines a column (CHANGE)");
        }
        // ADD [COLUMN] name type NOT NULL without DEFAULT
        for (i, x) in w.iter().enumerate() {
            if x != "ADD" {
                continue;
            }
            let next = w.get(i + 1).map(String::as_str).unwrap_or("");
            if matches!(
                next,
                "CONSTRAINT"
                    | "INDEX"
                    | "KEY"
                    | "PRIMARY"
                    | "UNIQUE"
                    | "FOREIGN"
                    | "CHECK"
                    | "FULLTEXT"
                    | "SPATIAL"
                    | "PARTITION"
            ) {
                continue;
            }
            // This column's definition runs to the next top-level comma; `words` keeps "," tokens.
            let def: Vec<&String> = w[i + 1..].iter().take_while(|t| t.as_str() != ",").collect();
            let not_null = def.windows(2).any(|p| p[0] == "NOT" && p[1] == "NULL");
            let default = def.iter().any(|t| *t == "DEFAULT" || *t == "GENERATED" || *t == "AS");
            if not_null && !default {
                return Some("adds a NOT NULL column without a DEFAULT: old code's inserts fail");
            }
        }
    }
    None
}

/// Statements as (first line, original text, upper-cased words with string literals, quoted
/// identifiers and comments removed; top-level commas kept as "," tokens). Dollar-quoted bodies are
/// kept as words (a `DO $$ … DROP … $$` block is flagged too).
fn statements(sql: &str) -> Vec<(usize, String, Vec<String>)> {
    let mut sc = Scanner { b: sql.as_bytes(), i: 0, line: 1 };
    let mut out = Vec::new();
    let mut words = Words::default();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut depth = 0i32;
    while let Some(&c) = sc.b.get(sc.i) {
        if words.is_empty() && !c.is_ascii_whitespace() && c != b';' {
            start = sc.i;
            start_line = sc.line;
        }
        let next = sc.b.get(sc.i + 1).copied();
        match c {
            b'\n' => {
                sc.line += 1;
                words.flush();
                sc.i += 1;
            }
            b'#' => {
                words.flush();
                sc.skip_line();
            }
            b'-' if next == Some(b'-') => {
                words.flush();
                sc.skip_line();
            }
            b'/' if next == Some(b'*') => {
                words.flush();
                sc.skip_block_comment();
            }
            b'\'' | b'"' | b'`' => {
                words.flush();
                sc.skip_quoted(c);
                // A quoted name stands for a word (so "ADD \"x\" int NOT NULL" still has a name).
                words.done.push("?".into());
            }
            // $tag$ delimiters are dropped, the body is scanned as words.
            b'$' if words.word.is_empty() => {
                if !sc.skip_dollar_tag() {
                    words.word.push('$');
                    sc.i += 1;
                }
            }
            b'(' | b')' => {
                words.flush();
                depth += if c == b'(' { 1 } else { -1 };
                sc.i += 1;
            }
            b',' => {
                words.flush();
                if depth <= 0 {
                    words.done.push(",".into());
                }
                sc.i += 1;
            }
            b';' => {
                words.flush();
                if !words.done.is_empty() {
                    out.push((start_line, sql[start..sc.i].to_string(), std::mem::take(&mut words.done)));
                }
                depth = 0;
                sc.i += 1;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                words.word.push(c as char);
                sc.i += 1;
            }
            _ => {
                words.flush();
                sc.i += 1;
            }
        }
    }
    words.flush();
    if !words.done.is_empty() {
        out.push((start_line, sql[start..].to_string(), words.done));
    }
    out
}

/// The statement being read: its finished words (upper-cased) and the word under way.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    word: String,
}

impl Words {
    fn is_empty(&self) -> bool {
        self.done.is_empty() && self.word.is_empty()
    }

    fn flush(&mut self) {
        if !self.word.is_empty() {
            self.done.push(self.word.to_ascii_uppercase());
            self.word.clear();
        }
    }
}

/// A position in the SQL text, with its line number for messages.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
}

impl Scanner<'_> {
    /// `-- …` or `# …`: up to (not past) the end of the line.
    fn skip_line(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
    }

    /// `/* … */`, counting the lines inside.
    fn skip_block_comment(&mut self) {
        self.i += 2;
        while self.i + 1 < self.b.len() && !(self.b[self.i] == b'*' && self.b[self.i + 1] == b'/') {
            if self.b[self.i] == b'\n' {
                self.line += 1;
            }
            self.i += 1;
        }
        self.i += 2;
    }

    /// A string literal or quoted identifier opened by `q`: backslash escapes (not in backquotes)
    /// and doubled quotes stay inside.
    fn skip_quoted(&mut self, q: u8) {
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if c == b'\\' && q != b'`' {
                self.i += 2;
                continue;
            }
            if c == b'\n' {
                self.line += 1;
            }
            if c == q {
                if self.b.get(self.i + 1) == Some(&q) {
                    self.i += 2;
                    continue;
                }
                break;
            }
            self.i += 1;
        }
        self.i += 1;
    }

    /// At a `$`: skips a `$tag$` (or `$$`) delimiter and says so; `$1` and a lone `$` are not one.
    fn skip_dollar_tag(&mut self) -> bool {
        let mut j = self.i + 1;
        while j < self.b.len() && (self.b[j].is_ascii_alphanumeric() || self.b[j] == b'_') {
            j += 1;
        }
        let is_tag =
            j < self.b.len() && self.b[j] == b'$' && !self.b.get(self.i + 1).is_some_and(|d| d.is_ascii_digit());
        if is_tag {
            self.i = j + 1;
        }
        is_tag
    }
}

fn shorten(text: &str, max: usize) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= max {
        one
    } else {
        one.chars().take(max).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(sql: &str) -> Vec<(usize, &'static str)> {
        non_additive(sql).into_iter().map(|f| (f.line, f.reason)).collect()
    }

    #[test]
    fn additive_steps_pass() {
        let sql = "-- DROP TABLE in a comment; RENAME too\n\
                   ALTER TABLE items ADD COLUMN tags TEXT NOT NULL DEFAULT '';\n\
                   ALTER TABLE items ADD COLUMN note TEXT;\n\
                   ALTER TABLE items ALTER COLUMN name DROP NOT NULL;\n\
                   CREATE INDEX items_tags ON items (tags);\n\
                   INSERT INTO log (msg) VALUES ('we DROP nothing; RENAME nothing');\n\
                   UPDATE items SET tags = 'x' WHERE tags = '';\n\
                   DELETE FROM log WHERE msg = 'old';\n\
                   CREATE TABLE t (id INT NOT NULL, v TEXT NOT NULL);\n\
                   ALTER TABLE items ADD CONSTRAINT c CHECK (id > 0), ADD COLUMN n INT NOT NULL DEFAULT 0;\n";
        assert_eq!(reasons(sql), vec![]);
    }

    #[test]
    fn removals_renames_and_retypes_are_flagged() {
        let sql = "ALTER TABLE items DROP COLUMN name;\n\
                   DROP TABLE IF EXISTS old;\n\
                   ALTER TABLE items RENAME COLUMN a TO b;\n\
                   ALTER TABLE items ALTER COLUMN n TYPE bigint;\n\
                   ALTER TABLE items ALTER COLUMN n SET DATA TYPE bigint;\n\
                   ALTER TABLE items MODIFY COLUMN name VARCHAR(10);\n\
                   ALTER TABLE items CHANGE COLUMN name title VARCHAR(200) NOT NULL;\n\
                   ALTER TABLE items ALTER COLUMN name SET NOT NULL;\n\
                   TRUNCATE log;\n\
                   DELETE FROM log;\n\
                   ALTER TABLE items ADD COLUMN must INT NOT NULL;\n\
                   ALTER TABLE items ADD \"quoted\" text NOT NULL, ADD COLUMN ok INT;\n\
                   DO $$ BEGIN EXECUTE 'x'; DROP TABLE y; END $$;\n";
        let got = reasons(sql);
        assert_eq!(got.len(), 13, "{got:#?}");
        assert_eq!(got[0], (1, "drops something old code may still use"));
        assert_eq!(got[2].1, "renames something old code still uses by its old name");
        assert_eq!(got[3].1, "changes a column's type");
        assert_eq!(got[4].1, "changes a column's type");
        assert_eq!(got[5].1, "changes a column's definition (MODIFY)");
        assert_eq!(got[6].1, "renames or redefines a column (CHANGE)");
        assert!(got[7].1.contains("NOT NULL"));
        assert_eq!(got[8].1, "removes every row of a table");
        assert!(got[9].1.contains("no WHERE"));
        assert!(got[10].1.contains("without a DEFAULT"));
        assert!(got[11].1.contains("without a DEFAULT"));
        assert_eq!(got[12], (13, "drops something old code may still use"));
        let f = &non_additive("\n\nALTER TABLE items\n  DROP COLUMN x;")[0];
        assert_eq!(f.to_string(), "line 3: `ALTER TABLE items DROP COLUMN x` drops something old code may still use");
    }
}
