//! Extensions are database-wide: one `CREATE EXTENSION` installs one copy,
//! in one schema, for everybody. A migration run in a tenant schema (its
//! `search_path` = the tenant, then the shared schema) would otherwise
//! install it in the first schema of the path, the first tenant's: the next
//! tenant would fail (`type "ltree" does not exist`), and dropping the first
//! tenant would drop the extension under everyone.
//!
//! So every `CREATE EXTENSION` statement of a migration that runs in a
//! tenant schema is rewritten before it is sent: it names the shared schema
//! (unless it names a schema itself) and gets `IF NOT EXISTS` (the second
//! tenant finds it installed), preceded by a transaction-scoped advisory
//! lock taken only while the extension is missing, so two tenants migrated
//! at once do not both try to install it (one would fail on the catalog's
//! unique index). Once installed, tenants pass by without locking.
//!
//! Only top-level statements are seen (core's lexer, no grammar): a
//! `CREATE EXTENSION` run by `EXECUTE` inside a function or `DO` block is
//! not rewritten. `appschema-cli status` warns about an extension found in
//! a tenant schema however it got there.

use std::borrow::Cow;

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::name::{quote_ident, quote_literal};
use crate::sqltok::{self, Kind, Token};

/// The advisory lock key under which a missing extension is installed.
const LOCK: &str = "pg_catalog.hashtext('appschema.extension')";

/// `sql` with every top-level `CREATE EXTENSION` statement made to install
/// the extension once, in schema `shared` (see the module docs); `sql`
/// itself (borrowed) when it has none. SQL the lexer cannot read is left as
/// it is (the server reports it).
pub(crate) fn in_shared_schema<'a>(sql: &'a str, shared: &str) -> Cow<'a, str> {
    if !contains_ignore_case(sql, "extension") {
        return Cow::Borrowed(sql);
    }
    edit_statements(sql, |statement| rewrite(statement, shared))
}

/// `sql` with each top-level statement for which `edit` returns `Some`
/// replaced by what it returns (the `;`s and the text between statements
/// stay); `sql` itself (borrowed) when `edit` changes none. SQL the lexer
/// cannot split is left as it is (the server reports it).
pub(super) fn edit_statements(
    sql: &str,
    mut edit: impl FnMut(&str) -> Option<String>,
) -> Cow<'_, str> {
    let Ok(statements) = sqltok::split_statements(sql) else {
        return Cow::Borrowed(sql);
    };
    let mut out = String::new();
    let mut copied = 0;
    for statement in statements {
        let Some(edited) = edit(statement) else {
            continue;
        };
        let start = statement.as_ptr() as usize - sql.as_ptr() as usize;
        out.push_str(&sql[copied..start]);
        out.push_str(&edited);
        copied = start + statement.len();
    }
    if copied == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The rewritten form of one statement (no `;`), when it is a
/// `CREATE EXTENSION`.
fn rewrite(statement: &str, shared: &str) -> Option<String> {
    let tokens = sqltok::tokenize(statement).ok()?;
    let mut words = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.kind, Kind::Space | Kind::LineComment | Kind::BlockComment));
    let is = |t: &Token<'_>, w: &str| t.kind == Kind::Ident && t.text.eq_ignore_ascii_case(w);
    let (_, create) = words.next()?;
    let (_, extension) = words.next()?;
    if !is(create, "create") || !is(extension, "extension") {
        return None;
    }
    let (mut at, mut name) = words.next()?;
    if is(name, "if") {
        let (_, not) = words.next()?;
        let (_, exists) = words.next()?;
        if !is(not, "not") || !is(exists, "exists") {
            return None;
        }
        (at, name) = words.next()?;
    }
    let extname = match name.kind {
        Kind::Ident => name.text.to_ascii_lowercase(),
        Kind::QuotedIdent if name.text.starts_with('"') => {
            name.text[1..name.text.len() - 1].replace("\"\"", "\"")
        }
        _ => return None,
    };
    let rest: String = tokens[at + 1..].iter().map(|t| t.text).collect();
    let names_schema = tokens[at + 1..].iter().any(|t| is(t, "schema"));
    let schema = if names_schema {
        String::new()
    } else {
        format!(" SCHEMA {}", quote_ident(shared))
    };
    Some(format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({LOCK}) WHERE NOT EXISTS \
         (SELECT FROM pg_catalog.pg_extension WHERE extname = {lit});\n\
         CREATE EXTENSION IF NOT EXISTS {name}{rest}{schema}",
        lit = quote_literal(&extname),
        name = name.text,
        rest = rest.trim_end(),
    ))
}

/// An extension installed in a tenant's schema (see
/// [`extensions_in_schemas`]).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct MisplacedExtension {
    /// The extension's name.
    #[diesel(sql_type = Text)]
    pub extension: String,
    /// The schema it lives in.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Whether `ALTER EXTENSION … SET SCHEMA` can move it.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub relocatable: bool,
}

impl MisplacedExtension {
    /// What to run to move it to schema `shared`, or what to do when it
    /// cannot be moved.
    pub fn fix(&self, shared: &str) -> String {
        if self.relocatable {
            format!(
                "ALTER EXTENSION {} SET SCHEMA {}",
                quote_ident(&self.extension),
                quote_ident(shared)
            )
        } else {
            format!(
                "the extension is not relocatable: dump the data that uses it, \
                 DROP EXTENSION {ext} CASCADE, CREATE EXTENSION {ext} SCHEMA {shared}, \
                 and restore",
                ext = quote_ident(&self.extension),
                shared = quote_ident(shared)
            )
        }
    }
}

/// The extensions installed in any of `schemas` (tenant schemas: an
/// extension there serves only that tenant's path, breaks the others and
/// dies with the tenant), by extension name.
///
/// ```no_run
/// # use diesel::Connection;
/// let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
/// for e in appschema::migrate::extensions_in_schemas(&mut conn, &["acme".into()]).unwrap() {
///     println!("{} lives in {}: {}", e.extension, e.schema, e.fix("public"));
/// }
/// ```
pub fn extensions_in_schemas(
    conn: &mut PgConnection,
    schemas: &[String],
) -> QueryResult<Vec<MisplacedExtension>> {
    diesel::sql_query(
        "SELECT e.extname::text AS extension, n.nspname::text AS schema,
                e.extrelocatable AS relocatable
           FROM pg_catalog.pg_extension e
           JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
          WHERE n.nspname = ANY($1)
          ORDER BY e.extname",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(schemas)
    .load(conn)
}

#[cfg(test)]
mod tests {
    use super::in_shared_schema;

    #[test]
    fn create_extension_statements_are_sent_to_the_shared_schema_once() {
        let sql = "CREATE TABLE a (x int);\ncreate extension if not exists ltree;\n\
                   CREATE EXTENSION \"uuid-ossp\" WITH VERSION '1.1';\nSELECT 1";
        let got = in_shared_schema(sql, "public");
        assert_eq!(
            got,
            "CREATE TABLE a (x int);\n\
             SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('appschema.extension')) \
             WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'ltree');\n\
             CREATE EXTENSION IF NOT EXISTS ltree SCHEMA \"public\";\n\
             SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('appschema.extension')) \
             WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'uuid-ossp');\n\
             CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\" WITH VERSION '1.1' SCHEMA \"public\";\n\
             SELECT 1"
        );
    }

    #[test]
    fn other_sql_is_left_alone() {
        for sql in [
            "CREATE TABLE extension (x int)",
            "CREATE EXTENSION pg_trgm SCHEMA ext",
            "DO $$ BEGIN EXECUTE 'CREATE EXTENSION x'; END $$",
            "COMMENT ON EXTENSION ltree IS 'x'",
        ] {
            let got = in_shared_schema(sql, "public");
            if sql.contains("SCHEMA ext") {
                assert!(
                    got.ends_with("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA ext"),
                    "{got}"
                );
            } else {
                assert_eq!(got, sql);
            }
        }
    }
}
