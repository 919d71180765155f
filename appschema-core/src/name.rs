//! Validated names: tenant schemas and public names.
//!
//! Nothing from a request reaches SQL unless it went through one of these
//! types, and schema names are always written quoted ([`SchemaName::quoted`]).

use std::fmt;

/// The longest identifier PostgreSQL keeps without truncating (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The longest public name accepted (the longest DNS name).
pub const MAX_PUBLIC_NAME_BYTES: usize = 253;

/// Schema-name prefix reserved for appschema's own schemas (spares, scratch
/// schemas, archives).
pub const RESERVED_PREFIX: &str = "appschema_";

/// Why a name was refused. The message states the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// `schema name` or `public name`.
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} `{name}` is {len} bytes long: at most {max} are allowed")]
    TooLong {
        /// `schema name` or `public name`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error("{kind} `{name}` contains {found:?} at byte {at}: only {allowed} are allowed")]
    BadCharacter {
        /// `schema name` or `public name`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
        /// The allowed set, in words.
        allowed: &'static str,
    },
    /// The name does not start as required.
    #[error("{kind} `{name}` must start with {rule}")]
    BadStart {
        /// `schema name` or `public name`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// The rule, in words.
        rule: &'static str,
    },
    /// The name is reserved by PostgreSQL or appschema.
    #[error("schema name `{name}` is reserved ({why}): choose another")]
    Reserved {
        /// The name as given.
        name: String,
        /// Why it is reserved.
        why: &'static str,
    },
}

/// A tenant schema's name, valid by construction: 1–63 bytes of lower-case
/// ASCII letters, digits and `_`, starting with a letter or `_`; not `public`,
/// `information_schema`, `pg_*`, nor `appschema_*` (kept for appschema's own
/// schemas).
///
/// ```
/// use appschema::SchemaName;
/// let name = SchemaName::new("acme").unwrap();
/// assert_eq!(name.quoted(), "\"acme\"");
/// assert!(SchemaName::new("pg_catalog").is_err());
/// assert!(SchemaName::new("Acme").is_err());
/// assert!(SchemaName::new("a\"; DROP SCHEMA public; --").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaName(String);

impl SchemaName {
    /// Validates `name` as a tenant schema name.
    pub fn new(name: impl Into<String>) -> Result<SchemaName, NameError> {
        let name = name.into();
        validate_identifier(&name)?;
        if name.starts_with(RESERVED_PREFIX) {
            return Err(NameError::Reserved {
                name,
                why: "the `appschema_` prefix is kept for appschema's own schemas",
            });
        }
        Ok(SchemaName(name))
    }

    /// A name for one of appschema's own schemas (spares, scratch, archives):
    /// the same rules, but it must start with `appschema_`.
    pub fn internal(name: impl Into<String>) -> Result<SchemaName, NameError> {
        let name = name.into();
        validate_identifier(&name)?;
        if !name.starts_with(RESERVED_PREFIX) {
            return Err(NameError::BadStart {
                kind: "internal schema name",
                name,
                rule: "`appschema_`",
            });
        }
        Ok(SchemaName(name))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier: `"acme"`.
    pub fn quoted(&self) -> String {
        quote_ident(&self.0)
    }

    /// Whether this is one of appschema's own schemas.
    pub fn is_internal(&self) -> bool {
        self.0.starts_with(RESERVED_PREFIX)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SchemaName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn validate_identifier(name: &str) -> Result<(), NameError> {
    const KIND: &str = "schema name";
    if name.is_empty() {
        return Err(NameError::Empty { kind: KIND });
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(NameError::TooLong {
            kind: KIND,
            name: name.to_string(),
            len: name.len(),
            max: MAX_IDENTIFIER_BYTES,
        });
    }
    if let Some((at, found)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    {
        return Err(NameError::BadCharacter {
            kind: KIND,
            name: name.to_string(),
            found,
            at,
            allowed: "lower-case ASCII letters, digits and `_`",
        });
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(NameError::BadStart {
            kind: KIND,
            name: name.to_string(),
            rule: "a letter or `_`",
        });
    }
    let why = if name.starts_with("pg_") {
        Some("the `pg_` prefix is PostgreSQL's")
    } else if name == "public" || name == "information_schema" {
        Some("it is one of PostgreSQL's own schemas")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(NameError::Reserved {
            name: name.to_string(),
            why,
        });
    }
    Ok(())
}

/// Quotes any identifier for SQL, doubling embedded quotes.
///
/// ```
/// assert_eq!(appschema::quote_ident("public"), "\"public\"");
/// assert_eq!(appschema::quote_ident("a\"b"), "\"a\"\"b\"");
/// ```
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes text as a SQL string literal: [`push_literal`] into a new string.
pub(crate) fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_literal(&mut out, s);
    out
}

/// Appends `s` to `out` as a SQL string literal read the same whatever the
/// session's `standard_conforming_strings`: `'…'` with single quotes
/// doubled, or, when `s` holds a backslash, `E'…'` with backslashes doubled
/// too (what PostgreSQL's own `quote_literal` does). The crate's one literal
/// quoter: every literal built from text goes through it (the statement
/// lexer, `crate::sqltok`, only re-escapes inside literals it splits).
pub(crate) fn push_literal(out: &mut String, s: &str) {
    if s.contains('\\') {
        out.push_str("E'");
    } else {
        out.push('\'');
    }
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// A tenant's public name (usually a host name), normalized: lower case, one
/// trailing dot removed. 1–253 bytes of ASCII letters, digits, `.`, `-` and
/// `_`, starting and ending with a letter or digit. Non-ASCII names are
/// refused: use their punycode (`xn--…`) form.
///
/// ```
/// use appschema::PublicName;
/// assert_eq!(PublicName::new("Acme.Example.COM.").unwrap().as_str(), "acme.example.com");
/// assert!(PublicName::new("аcme.com").is_err()); // Cyrillic `а`
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicName(String);

impl PublicName {
    /// Normalizes and validates `name`.
    pub fn new(name: &str) -> Result<PublicName, NameError> {
        const KIND: &str = "public name";
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() {
            return Err(NameError::Empty { kind: KIND });
        }
        if trimmed.len() > MAX_PUBLIC_NAME_BYTES {
            return Err(NameError::TooLong {
                kind: KIND,
                name: name.to_string(),
                len: trimmed.len(),
                max: MAX_PUBLIC_NAME_BYTES,
            });
        }
        if let Some((at, found)) = trimmed
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(NameError::BadCharacter {
                kind: KIND,
                name: name.to_string(),
                found,
                at,
                allowed: "ASCII letters, digits, `.`, `-` and `_` (write international names in their punycode `xn--` form)",
            });
        }
        if let Some(at) = trimmed.find("..") {
            return Err(NameError::BadCharacter {
                kind: KIND,
                name: name.to_string(),
                found: '.',
                at: at + 1,
                allowed: "labels separated by single dots (no empty label)",
            });
        }
        let alnum = |c: char| c.is_ascii_alphanumeric();
        if !trimmed.starts_with(alnum) || !trimmed.ends_with(alnum) {
            return Err(NameError::BadStart {
                kind: KIND,
                name: name.to_string(),
                rule: "a letter or digit, and end with one",
            });
        }
        Ok(PublicName(trimmed.to_ascii_lowercase()))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one literal quoter reads back as its input on a real server with
    /// `standard_conforming_strings` on and off: quotes, backslashes (which
    /// the `off` setting would take as escapes in a plain `'…'`), both.
    #[test]
    fn quoted_literals_read_back_whatever_standard_conforming_strings() {
        use diesel::connection::SimpleConnection;
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Value {
            #[diesel(sql_type = diesel::sql_types::Text)]
            value: String,
        }
        let db = appschema_tempdb::TestDb::new();
        let mut conn = PgConnection::establish(db.url()).unwrap();
        for setting in ["on", "off"] {
            conn.batch_execute(&format!("SET standard_conforming_strings = {setting}"))
                .unwrap();
            for text in ["plain", "it's", "a\\b", "\\'", "'\\n", "\\", ""] {
                let literal = quote_literal(text);
                let read: Value = diesel::sql_query(format!("SELECT {literal}::text AS value"))
                    .get_result(&mut conn)
                    .unwrap_or_else(|e| {
                        panic!("{literal} (standard_conforming_strings = {setting}): {e}")
                    });
                assert_eq!(
                    read.value, text,
                    "{literal} (standard_conforming_strings = {setting})"
                );
            }
        }
        // Without a backslash the literal is the plain form, as before.
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn schema_names_follow_postgres_identifier_rules() {
        for ok in ["acme", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(SchemaName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "1acme",
            "pg_toast",
            "public",
            "information_schema",
            "appschema_spare_1",
            "a-b",
            "a b",
            "a\"b",
            "a;b",
            "ас", // Cyrillic
            &"a".repeat(64),
        ] {
            assert!(SchemaName::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn refusals_name_the_rule() {
        let e = SchemaName::new("x".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("64 bytes long: at most 63"), "{e}");
        let e = SchemaName::new("pg_x").unwrap_err().to_string();
        assert!(e.contains("`pg_` prefix"), "{e}");
        let e = SchemaName::new("a'b").unwrap_err().to_string();
        assert!(e.contains("'\\''") && e.contains("lower-case ASCII"), "{e}");
    }

    #[test]
    fn public_names_are_normalized() {
        assert_eq!(
            PublicName::new("ACME.localhost.").unwrap().as_str(),
            "acme.localhost"
        );
        for bad in [
            "",
            ".",
            "acme..",
            "-acme",
            "acme.com:80",
            "a b",
            "évil.com",
            "a/b",
        ] {
            assert!(PublicName::new(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
