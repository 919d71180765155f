//! A PostgreSQL lexer just precise enough to find identifier tokens.
//!
//! A leaf module (it uses nothing else of the crate): the schema template,
//! the migration executor (extensions, revert), seeds and the Citus script
//! runner split and scan SQL with it.
//!
//! The schema template replaces the scratch schema's name by a placeholder
//! (and the placeholder by a tenant's schema) only where it is an
//! identifier, or the schema part of an object name inside a `'…'::regclass`
//! literal (how pg_dump writes `nextval` defaults). String literals, dollar-
//! quoted function bodies and comments that merely contain the same text are
//! left alone.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Space,
    LineComment,
    BlockComment,
    /// `'…'` (standard-conforming: backslash is an ordinary character).
    Str,
    /// `E'…'` (backslash escapes).
    EscapeStr,
    /// `$tag$…$tag$`.
    DollarStr,
    /// `"…"` or `U&"…"`.
    QuotedIdent,
    /// Unquoted identifier or key word.
    Ident,
    /// A psql meta-command line (`\restrict …`), as recent pg_dump emits.
    PsqlMeta,
    /// Anything else: one character (operators, punctuation, digits, `$1`).
    Other,
}

/// One token: its kind and its text, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn ident_cont(c: char) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == '$'
}

/// Splits `sql` into tokens; concatenating their texts gives `sql` back.
pub(crate) fn tokenize(sql: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    let mut line_start = true;
    while i < sql.len() {
        let rest = &sql[i..];
        let c = rest.chars().next().expect("non-empty");
        let (kind, len) = if c.is_whitespace() {
            let len = rest
                .char_indices()
                .find(|&(_, c)| !c.is_whitespace())
                .map_or(rest.len(), |(j, _)| j);
            (Kind::Space, len)
        } else if c == '\\' && line_start {
            (Kind::PsqlMeta, rest.find('\n').unwrap_or(rest.len()))
        } else if rest.starts_with("--") {
            (Kind::LineComment, rest.find('\n').unwrap_or(rest.len()))
        } else if rest.starts_with("/*") {
            (Kind::BlockComment, block_comment_len(rest)?)
        } else if c == '\'' {
            (Kind::Str, quoted_len(rest, 0, b'\'', false)?)
        } else if (c == 'e' || c == 'E') && b.get(i + 1) == Some(&b'\'') && !prev_is_ident(sql, i) {
            (Kind::EscapeStr, quoted_len(rest, 1, b'\'', true)?)
        } else if (c == 'u' || c == 'U')
            && rest[1..].starts_with('&')
            && matches!(b.get(i + 2), Some(b'\'' | b'"'))
            && !prev_is_ident(sql, i)
        {
            if b[i + 2] == b'"' {
                (Kind::QuotedIdent, quoted_len(rest, 2, b'"', false)?)
            } else {
                (Kind::Str, quoted_len(rest, 2, b'\'', false)?)
            }
        } else if c == '"' {
            (Kind::QuotedIdent, quoted_len(rest, 0, b'"', false)?)
        } else if c == '$' {
            match dollar_tag(rest) {
                Some(tag) => {
                    let body = &rest[tag.len()..];
                    let end = body
                        .find(tag)
                        .ok_or_else(|| format!("unterminated dollar-quoted string {tag}"))?;
                    (Kind::DollarStr, tag.len() + end + tag.len())
                }
                None => (Kind::Other, 1),
            }
        } else if ident_start(c) {
            let len = rest
                .char_indices()
                .find(|&(_, c)| !ident_cont(c))
                .map_or(rest.len(), |(j, _)| j);
            (Kind::Ident, len)
        } else {
            (Kind::Other, c.len_utf8())
        };
        let text = &sql[i..i + len];
        line_start = match kind {
            Kind::Space => text.contains('\n') || line_start,
            Kind::LineComment | Kind::PsqlMeta => true,
            _ => false,
        };
        out.push(Token { kind, text });
        i += len;
    }
    Ok(out)
}

fn prev_is_ident(sql: &str, i: usize) -> bool {
    sql[..i].chars().next_back().is_some_and(ident_cont)
}

fn block_comment_len(s: &str) -> Result<usize, String> {
    let b = s.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err("unterminated block comment".into())
}

/// Length of a quoted token whose opening quote is at byte `open`; a doubled
/// quote stands for itself, and with `backslash` a backslash escapes.
fn quoted_len(s: &str, open: usize, quote: u8, backslash: bool) -> Result<usize, String> {
    let b = s.as_bytes();
    let mut i = open + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Ok(i + 1);
            }
        } else {
            i += 1;
        }
    }
    Err(format!("unterminated {} token", quote as char))
}

/// `$tag$` at the start of `s`, if it opens a dollar-quoted string (not `$1`).
fn dollar_tag(s: &str) -> Option<&str> {
    let inner = &s[1..];
    let end = inner.find('$')?;
    let tag = &inner[..end];
    let valid = tag.chars().enumerate().all(|(k, c)| {
        if k == 0 {
            ident_start(c)
        } else {
            ident_cont(c) && c != '$'
        }
    });
    valid.then(|| &s[..end + 2])
}

/// Whether an identifier token names `name`: unquoted ones fold to lower
/// case, quoted ones compare exactly.
pub(crate) fn ident_is(token: &Token<'_>, name: &str) -> bool {
    match token.kind {
        Kind::Ident => token.text.eq_ignore_ascii_case(name),
        Kind::QuotedIdent if token.text.starts_with('"') => {
            token.text[1..token.text.len() - 1].replace("\"\"", "\"") == name
        }
        _ => false,
    }
}

/// `sql` as its statements, each without its `;`, empty ones (blank or
/// comments only) left out. A `;` ends a statement only outside
/// parentheses (a `CREATE RULE`'s action list) and outside a
/// `BEGIN ATOMIC … END` function body (whose `CASE … END`s are counted).
/// What Citus needs: it refuses DDL on distributed tables inside a
/// multi-statement message.
pub(crate) fn split_statements(sql: &str) -> Result<Vec<&str>, String> {
    let tokens = tokenize(sql)?;
    let mut out = Vec::new();
    let (mut start, mut offset) = (0, 0);
    let mut parens = 0usize;
    // Inside BEGIN ATOMIC: the open BEGIN ATOMIC/CASE blocks.
    let mut atomic = 0usize;
    let mut previous_word: Option<&str> = None;
    fn push<'s>(text: &'s str, out: &mut Vec<&'s str>) {
        let meaningful = tokenize(text).is_ok_and(|ts| {
            ts.iter()
                .any(|t| !matches!(t.kind, Kind::Space | Kind::LineComment | Kind::BlockComment))
        });
        if meaningful {
            out.push(text.trim());
        }
    }
    for token in &tokens {
        match token.kind {
            Kind::Other if token.text == "(" => parens += 1,
            Kind::Other if token.text == ")" => parens = parens.saturating_sub(1),
            Kind::Other if token.text == ";" && parens == 0 && atomic == 0 => {
                push(&sql[start..offset], &mut out);
                start = offset + 1;
            }
            Kind::Ident => {
                let word = token.text;
                let opens_atomic = word.eq_ignore_ascii_case("atomic")
                    && previous_word.is_some_and(|w| w.eq_ignore_ascii_case("begin"));
                let opens_case = atomic > 0 && word.eq_ignore_ascii_case("case");
                if opens_atomic || opens_case {
                    atomic += 1;
                } else if atomic > 0 && word.eq_ignore_ascii_case("end") {
                    atomic -= 1;
                }
                previous_word = Some(word);
            }
            _ => {}
        }
        if !matches!(
            token.kind,
            Kind::Space | Kind::LineComment | Kind::BlockComment | Kind::Ident
        ) {
            previous_word = None;
        }
        offset += token.text.len();
    }
    push(&sql[start..], &mut out);
    Ok(out)
}

/// The object-reference types whose literals name a schema-qualified object.
const REG_TYPES: &[&str] = &[
    "regclass",
    "regtype",
    "regproc",
    "regprocedure",
    "regoper",
    "regoperator",
    "regconfig",
    "regdictionary",
    "regcollation",
];

/// A piece of SQL with the occurrences of one schema cut out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Verbatim SQL.
    Text(String),
    /// Where the schema's name goes, as an identifier.
    Schema,
    /// Where the schema's name goes inside a string literal (quotes doubled).
    SchemaInLiteral,
}

/// Cuts every occurrence of schema `name` out of `sql`: identifier tokens
/// naming it, and the schema part of `'name.object'::regclass`-style literals.
pub(crate) fn split_schema(sql: &str, name: &str) -> Result<Vec<Piece>, String> {
    let tokens = tokenize(sql)?;
    let mut pieces = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, pieces: &mut Vec<Piece>| {
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
    };
    for (k, token) in tokens.iter().enumerate() {
        if ident_is(token, name) {
            flush(&mut text, &mut pieces);
            pieces.push(Piece::Schema);
        } else if token.kind == Kind::Str
            && token.text.starts_with('\'')
            && is_reg_cast(&tokens[k + 1..])
        {
            let inner = token.text[1..token.text.len() - 1].replace("''", "'");
            let inner_tokens = tokenize(&inner)?;
            let qualifies = inner_tokens.first().is_some_and(|t| ident_is(t, name))
                && inner_tokens.get(1).is_some_and(|t| t.text == ".");
            if qualifies {
                text.push('\'');
                flush(&mut text, &mut pieces);
                pieces.push(Piece::SchemaInLiteral);
                let rest = &inner[inner_tokens[0].text.len()..];
                text.push_str(&rest.replace('\'', "''"));
                text.push('\'');
            } else {
                text.push_str(token.text);
            }
        } else {
            text.push_str(token.text);
        }
    }
    flush(&mut text, &mut pieces);
    Ok(pieces)
}

fn is_reg_cast(after: &[Token<'_>]) -> bool {
    let mut it = after.iter().filter(|t| t.kind != Kind::Space);
    matches!((it.next(), it.next(), it.next()),
        (Some(a), Some(b), Some(t)) if a.text == ":" && b.text == ":"
            && t.kind == Kind::Ident
            && REG_TYPES.iter().any(|r| t.text.eq_ignore_ascii_case(r)))
}

/// Joins pieces back, writing `ident` (already quoted as needed) for the schema.
pub(crate) fn join_schema(pieces: &[Piece], ident: &str) -> String {
    let in_literal = ident.replace('\'', "''");
    let mut out = String::with_capacity(
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                _ => ident.len(),
            })
            .sum(),
    );
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Schema => out.push_str(ident),
            Piece::SchemaInLiteral => out.push_str(&in_literal),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (x text DEFAULT ';');\n-- a comment; with a semicolon\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n\
                   CREATE RULE r AS ON INSERT TO a DO ALSO (NOTIFY a; NOTIFY b);\n\
                   CREATE FUNCTION g(i int) RETURNS int LANGUAGE sql BEGIN ATOMIC \
                   SELECT CASE WHEN i > 0 THEN 1 ELSE 2 END; SELECT 3; END;\n\
                   /* only; a comment */ ;; INSERT INTO \"x;y\" VALUES (E'\\';')";
        let statements = split_statements(sql).unwrap();
        assert_eq!(statements.len(), 5, "{statements:#?}");
        assert_eq!(statements[0], "CREATE TABLE a (x text DEFAULT ';')");
        assert!(statements[1].ends_with("END $$"));
        assert!(statements[2].ends_with("(NOTIFY a; NOTIFY b)"));
        assert!(
            statements[3].ends_with("SELECT 3; END"),
            "{}",
            statements[3]
        );
        assert!(statements[4].starts_with("INSERT"), "{}", statements[4]);
    }

    fn replace(sql: &str, from: &str, to: &str) -> String {
        join_schema(&split_schema(sql, from).unwrap(), to)
    }

    #[test]
    fn tokens_rebuild_the_input() {
        let sql = "CREATE FUNCTION s.f() RETURNS text AS $_$ SELECT 's' $_$; -- s\n/* a /* s */ b */ E'it\\'s' U&\"s\" $1 \"a\"\"b\"";
        let tokens = tokenize(sql).unwrap();
        assert_eq!(tokens.iter().map(|t| t.text).collect::<String>(), sql);
    }

    #[test]
    fn only_identifier_tokens_are_replaced() {
        let sql = r#"CREATE TABLE scratch.t (note text DEFAULT 'scratch.t is scratch', "scratch" int);
CREATE FUNCTION scratch.f() RETURNS text LANGUAGE sql AS $body$ SELECT 'scratch.t' /* scratch */ $body$;
COMMENT ON TABLE scratch.t IS E'scratch\'s table: scratch.t';
-- scratch in a comment
SELECT Scratch.x, scratchy.y, x.scratch, $$scratch$$, $q$ $scratch$ $q$;"#;
        let out = replace(sql, "scratch", "\"tenant\"");
        assert_eq!(
            out,
            r#"CREATE TABLE "tenant".t (note text DEFAULT 'scratch.t is scratch', "tenant" int);
CREATE FUNCTION "tenant".f() RETURNS text LANGUAGE sql AS $body$ SELECT 'scratch.t' /* scratch */ $body$;
COMMENT ON TABLE "tenant".t IS E'scratch\'s table: scratch.t';
-- scratch in a comment
SELECT "tenant".x, scratchy.y, x."tenant", $$scratch$$, $q$ $scratch$ $q$;"#
        );
    }

    #[test]
    fn regclass_literals_get_the_schema_but_other_literals_do_not() {
        let sql = "DEFAULT nextval('scratch.t_id_seq'::regclass), 'scratch.t_id_seq'::text, 'other.s'::regclass";
        assert_eq!(
            replace(sql, "scratch", "\"t\""),
            "DEFAULT nextval('\"t\".t_id_seq'::regclass), 'scratch.t_id_seq'::text, 'other.s'::regclass"
        );
    }

    #[test]
    fn unterminated_tokens_are_errors() {
        for bad in ["'abc", "$a$ body", "\"x", "/* x", "E'\\'"] {
            assert!(tokenize(bad).is_err(), "{bad}");
        }
    }
}
