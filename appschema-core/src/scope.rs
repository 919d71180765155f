//! Where a table lives: once in the shared schema, or once per tenant.

use std::fmt;
use std::str::FromStr;

/// The schema shared tables live in unless a marking names another.
pub const DEFAULT_SHARED_SCHEMA: &str = "public";

/// Where a table lives, and through the tables it touches, where a
/// migration runs.
///
/// ```
/// use appschema::Scope;
/// assert_eq!(Scope::Shared.to_string(), "shared");
/// assert_eq!("both".parse::<Scope>(), Ok(Scope::Both));
/// assert!(Scope::Both.in_shared() && Scope::Both.in_tenants());
/// assert!("everywhere".parse::<Scope>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One copy, in the shared schema (`public` by default).
    Shared,
    /// One copy per tenant, in the tenant's own schema.
    Isolated,
    /// One copy in the shared schema *and* one in every tenant's schema
    /// (`#[appschema::both]`): queried unqualified, so a tenant connection
    /// reads its tenant's copy and a shared connection the shared one. A
    /// migration of this scope runs once in the shared schema and in every
    /// tenant schema.
    Both,
}

impl Scope {
    /// The scope's name as written in attributes, metadata and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Shared => "shared",
            Scope::Isolated => "isolated",
            Scope::Both => "both",
        }
    }

    /// Whether a table (or migration) of this scope lives (runs) in the
    /// shared schema: `Shared` and `Both`.
    pub const fn in_shared(self) -> bool {
        matches!(self, Scope::Shared | Scope::Both)
    }

    /// Whether a table (or migration) of this scope lives (runs) in every
    /// tenant schema: `Isolated` and `Both`.
    pub const fn in_tenants(self) -> bool {
        matches!(self, Scope::Isolated | Scope::Both)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not `shared`, `isolated` or `both`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseScopeError(pub String);

impl fmt::Display for ParseScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scope `{}`: expected `shared`, `isolated` or `both`",
            self.0
        )
    }
}

impl std::error::Error for ParseScopeError {}

impl FromStr for Scope {
    type Err = ParseScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(Scope::Shared),
            "isolated" => Ok(Scope::Isolated),
            "both" => Ok(Scope::Both),
            other => Err(ParseScopeError(other.to_string())),
        }
    }
}

/// A column of a marked table, as declared in its `table!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnMeta {
    /// The column's SQL name.
    pub name: &'static str,
    /// The diesel SQL type as written (`Int8`, `Nullable<Text>`, …).
    pub sql_type: &'static str,
}

/// What the marking attributes record about each table, for the migration
/// planner, the CLI and runtime checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableMeta {
    /// The table's SQL name, unqualified.
    pub name: &'static str,
    /// Shared, isolated or both.
    pub scope: Scope,
    /// For shared tables, the schema they live in; `None` for isolated and
    /// both-scope ones (unqualified: the connection's path decides).
    pub schema: Option<&'static str>,
    /// The table's columns, in declaration order.
    pub columns: &'static [ColumnMeta],
}
