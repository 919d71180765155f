//! The `search_path` a tenant's work runs on, and the one query that puts a
//! connection on it.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Nullable, Text};

use super::error::ConnectionError;
use crate::name::{quote_ident, SchemaName, MAX_IDENTIFIER_BYTES};

/// Which schemas follow the tenant's on its `search_path`: the shared schema
/// (`public` unless changed), then any extra schemas (e.g. one holding
/// extensions). A tenant's path is `"<tenant>", "<shared>", "<extra>"…`;
/// shared-only work runs on `"<shared>", "<extra>"…`. Every name is quoted.
///
/// ```
/// use appschema_core::{SchemaName, connection::SearchPath};
/// let path = SearchPath::new().extra_schema("extensions").unwrap();
/// let acme = SchemaName::new("acme").unwrap();
/// assert_eq!(path.for_tenant(&acme), r#""acme", "public", "extensions""#);
/// assert_eq!(path.shared_only(), r#""public", "extensions""#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath {
    shared: String,
    extra: Vec<String>,
}

impl Default for SearchPath {
    fn default() -> Self {
        SearchPath {
            shared: "public".to_string(),
            extra: Vec::new(),
        }
    }
}

impl SearchPath {
    /// The default: the shared schema is `public`, no extra schemas.
    pub fn new() -> SearchPath {
        SearchPath::default()
    }

    /// Uses `name` as the shared schema instead of `public`.
    pub fn shared_schema(mut self, name: &str) -> Result<SearchPath, ConnectionError> {
        check_identifier(name)?;
        self.shared = name.to_string();
        Ok(self)
    }

    /// Appends `name` after the shared schema (default: none).
    pub fn extra_schema(mut self, name: &str) -> Result<SearchPath, ConnectionError> {
        check_identifier(name)?;
        self.extra.push(name.to_string());
        Ok(self)
    }

    /// The shared schema's bare name.
    pub fn shared(&self) -> &str {
        &self.shared
    }

    /// The `search_path` value for `tenant`'s work.
    pub fn for_tenant(&self, tenant: &SchemaName) -> String {
        let mut out = tenant.quoted();
        for name in std::iter::once(&self.shared).chain(&self.extra) {
            out.push_str(", ");
            out.push_str(&quote_ident(name));
        }
        out
    }

    /// The `search_path` value for shared-only work (no tenant).
    pub fn shared_only(&self) -> String {
        std::iter::once(&self.shared)
            .chain(&self.extra)
            .map(|n| quote_ident(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The shared and extra schemas are trusted configuration, not request data,
/// so any identifier PostgreSQL keeps whole is accepted (it is quoted anyway).
fn check_identifier(name: &str) -> Result<(), ConnectionError> {
    let invalid = |source| ConnectionError::invalid_name(name, source);
    if name.is_empty() {
        return Err(invalid(crate::NameError::Empty {
            kind: "schema name",
        }));
    }
    if name.len() > MAX_IDENTIFIER_BYTES || name.contains('\0') {
        return Err(invalid(crate::NameError::TooLong {
            kind: "schema name",
            name: name.to_string(),
            len: name.len(),
            max: MAX_IDENTIFIER_BYTES,
        }));
    }
    Ok(())
}

/// What the server reported after a switch, all from the switch's own row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwitchReport {
    /// `set_config`'s return value: the setting as the server now holds it.
    pub(crate) search_path: String,
    /// `current_schema()` after the switch: the first schema of the path
    /// that exists (NULL when none does).
    pub(crate) current_schema: Option<String>,
}

/// `SELECT pg_catalog.set_config('search_path', $1, $2)` plus `current_schema()`, in one statement so a switch costs one round trip. Its SQL never
/// changes, so diesel prepares it once per connection and reuses it.
///
/// The subquery with `OFFSET 0` is evaluated before the outer target list,
/// so `current_schema()` sees the new path.
#[derive(Debug, Clone, Copy)]
struct SwitchQuery<'a> {
    path: &'a str,
    local: bool,
}

impl QueryId for SwitchQuery<'_> {
    type QueryId = SwitchQuery<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for SwitchQuery<'_> {
    type SqlType = (Text, Nullable<Text>);
}

impl QueryFragment<Pg> for SwitchQuery<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT s.v, pg_catalog.current_schema() FROM (SELECT pg_catalog.set_config('search_path', ",
        );
        out.push_bind_param::<Text, _>(self.path)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.local)?;
        out.push_sql(") AS v OFFSET 0) s");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for SwitchQuery<'_> {}

/// Runs the switch and returns what the server reported. `local` makes it a
/// `SET LOCAL` (undone when the transaction ends).
pub(crate) fn run_switch(
    conn: &mut PgConnection,
    path: &str,
    local: bool,
) -> QueryResult<SwitchReport> {
    let (search_path, current_schema) =
        SwitchQuery { path, local }.get_result::<(String, Option<String>)>(conn)?;
    Ok(SwitchReport {
        search_path,
        current_schema,
    })
}

/// Why a switch's report was not the one asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The expected first schema does not exist.
    SchemaMissing,
    /// The server holds another value: the connection must not be used.
    Broken(String),
}

impl SwitchReport {
    /// Checks the report against the path and first schema asked for.
    pub(crate) fn check(&self, path: &str, first_schema: &str) -> Result<(), Refusal> {
        if self.search_path != path {
            return Err(Refusal::Broken(format!(
                "the server reports search_path {:?}, expected {path:?}",
                self.search_path
            )));
        }
        if self.current_schema.as_deref() != Some(first_schema) {
            return Err(Refusal::SchemaMissing);
        }
        Ok(())
    }
}
