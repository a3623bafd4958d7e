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
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut start = 0usize;
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut depth = 0i32;
    let mut i = 0;
    let flush_word = |word: &mut String, words: &mut Vec<String>| {
        if !word.is_empty() {
            words.push(word.to_ascii_uppercase());
            word.clear();
        }
    };
    while i < b.len() {
        let c = b[i];
        if words.is_empty() && word.is_empty() && !c.is_ascii_whitespace() && c != b';' {
            start = i;
            start_line = line;
        }
        match c {
            b'\n' => {
                line += 1;
                flush_word(&mut word, &mut words);
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                flush_word(&mut word, &mut words);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                flush_word(&mut word, &mut words);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                flush_word(&mut word, &mut words);
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
            }
            b'\'' | b'"' | b'`' => {
                flush_word(&mut word, &mut words);
                let q = c;
                i += 1;
                while i < b.len() {
                    if b[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                // A quoted name stands for a word (so "ADD \"x\" int NOT NULL" still has a name).
                words.push("?".into());
            }
            b'$' if word.is_empty() => {
                // $tag$ delimiters are dropped, the body is scanned as words.
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j < b.len() && b[j] == b'$' && !b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    i = j + 1;
                } else {
                    word.push('$');
                    i += 1;
                }
            }
            b'(' => {
                flush_word(&mut word, &mut words);
                depth += 1;
                i += 1;
            }
            b')' => {
                flush_word(&mut word, &mut words);
                depth -= 1;
                i += 1;
            }
            b',' => {
                flush_word(&mut word, &mut words);
                if depth <= 0 {
                    words.push(",".into());
                }
                i += 1;
            }
            b';' => {
                flush_word(&mut word, &mut words);
                if !words.is_empty() {
                    out.push((start_line, sql[start..i].to_string(), std::mem::take(&mut words)));
                }
                depth = 0;
                i += 1;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                word.push(c as char);
                i += 1;
            }
            _ => {
                flush_word(&mut word, &mut words);
                i += 1;
            }
        }
    }
    flush_word(&mut word, &mut words);
    if !words.is_empty() {
        out.push((start_line, sql[start..].to_string(), words));
    }
    out
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
