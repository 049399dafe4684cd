//! Splits a migration file into statements the way the Supabase CLI records them: on `;`
//! outside quotes, dollar-quoted bodies, and comments.

/// A statement with the 1-based line it starts on.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement<'a> {
    pub sql: &'a str,
    pub line: usize,
}

pub fn statements(sql: &str) -> Vec<Statement<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                i += 2;
                while i < bytes.len() && depth > 0 {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 1;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 1;
                    }
                    i += 1;
                }
                continue;
            }
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 1; // doubled quote
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'$' => {
                if let Some(tag_len) = dollar_tag(&bytes[i..]) {
                    let tag = &sql[i..i + tag_len];
                    i += tag_len;
                    match sql[i..].find(tag) {
                        Some(end) => i += end + tag_len,
                        None => i = bytes.len(),
                    }
                    continue;
                }
            }
            b';' => {
                push(sql, start, i, &mut out);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    push(sql, start, bytes.len(), &mut out);
    out
}

/// Length of `$tag$` at the start of `rest`, if it opens a dollar quote.
fn dollar_tag(rest: &[u8]) -> Option<usize> {
    let mut j = 1;
    while j < rest.len() && (rest[j].is_ascii_alphanumeric() || rest[j] == b'_') {
        if j == 1 && rest[j].is_ascii_digit() {
            return None; // $1 is a parameter, not a tag
        }
        j += 1;
    }
    (rest.get(j) == Some(&b'$')).then_some(j + 1)
}

fn push<'a>(sql: &'a str, start: usize, end: usize, out: &mut Vec<Statement<'a>>) {
    let chunk = &sql[start..end];
    if !has_code(chunk) {
        return;
    }
    let leading = chunk.len() - chunk.trim_start().len();
    let line = sql[..start + leading].matches('\n').count() + 1;
    out.push(Statement {
        sql: chunk.trim(),
        line,
    });
}

/// True unless the chunk is only whitespace and comments.
fn has_code(chunk: &str) -> bool {
    let mut rest = chunk.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return !rest.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(s: &str) -> Vec<&str> {
        statements(s).into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_bodies() {
        let sql = "create table a (x text default ';');\n-- a comment; with semicolon\n\
                   create function f() returns void language plpgsql as $$ begin perform 1; end $$;\n\
                   create function g() returns text as $body$ select 'a;b' $body$ language sql;\n\
                   /* block; comment */ select \"we;ird\" from t;";
        assert_eq!(
            sqls(sql),
            vec![
                "create table a (x text default ';')",
                "-- a comment; with semicolon\ncreate function f() returns void language plpgsql as $$ begin perform 1; end $$",
                "create function g() returns text as $body$ select 'a;b' $body$ language sql",
                "/* block; comment */ select \"we;ird\" from t",
            ]
        );
    }

    #[test]
    fn reports_start_lines_and_skips_empty_chunks() {
        let st = statements("\n\nselect 1;\n  -- only a comment\n;\nselect\n2;");
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].line, 3);
        assert_eq!(st[1].line, 6);
        assert_eq!(st[1].sql, "select\n2");
    }

    #[test]
    fn positional_parameters_and_escaped_quotes_do_not_confuse_it() {
        assert_eq!(
            sqls("select $1 || 'it''s;'; select 2"),
            vec!["select $1 || 'it''s;'", "select 2"]
        );
    }
}
