//! Problems the planner finds, each naming the migration and the tables.

use std::fmt;
use std::path::PathBuf;

/// A problem the planner found, naming the migration's path and the tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The migrations directory or one of its files cannot be read.
    #[error("cannot read `{path}`: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// An entry of the migrations directory is not a diesel migration.
    #[error("`{path}` is not a migration: {why}")]
    Malformed {
        /// The path.
        path: PathBuf,
        /// What is wrong, and the expected form.
        why: String,
    },
    /// Two migrations have the same version.
    #[error("`{path}` and `{other}` have the same version {version}: give one a new version")]
    DuplicateVersion {
        /// One migration.
        path: PathBuf,
        /// The other.
        other: PathBuf,
        /// The version.
        version: String,
    },
    /// `up.sql` does not parse.
    #[error("`{path}` does not parse: {message}")]
    Unparsable {
        /// The `up.sql` file.
        path: PathBuf,
        /// PostgreSQL's parser's message.
        message: String,
    },
    /// The migration touches shared and isolated tables.
    #[error(
        "`{path}` touches shared tables ({shared}) and isolated tables ({isolated}): \
         split it into one shared and one isolated migration"
    )]
    MixedScopes {
        /// The migration directory.
        path: PathBuf,
        /// The shared tables it touches.
        shared: String,
        /// The isolated tables it touches.
        isolated: String,
    },
    /// The migration changes tables in both scopes and also touches
    /// shared-only or isolated-only tables.
    #[error(
        "`{path}` changes tables marked #[appschema::both] ({both}) and also touches tables \
         that live only in the shared schema or only in tenants ({others}): a migration of \
         both-scope tables runs in the shared schema and in every tenant, where those tables \
         are not all present; move the statements on {both} into a migration of their own"
    )]
    BothMixed {
        /// The migration directory.
        path: PathBuf,
        /// The both-scope tables it changes.
        both: String,
        /// The shared-only and isolated-only tables it touches.
        others: String,
    },
    /// The declared scope contradicts the scope of the tables touched.
    #[error(
        "`{path}` declares `appschema_scope = \"{declared}\"` but touches {detected} tables \
         ({tables}): a declaration only decides what the tables cannot; remove it, or move \
         the {declared} statements into a migration of their own"
    )]
    DeclarationContradicts {
        /// The migration directory.
        path: PathBuf,
        /// The scope its metadata.toml declares.
        declared: crate::Scope,
        /// The scope of the tables it touches.
        detected: crate::Scope,
        /// Those tables.
        tables: String,
    },
    /// An isolated `run_in_transaction = false` migration has a statement
    /// that cannot run inside the transaction creating a tenant's schema.
    #[error(
        "`{path}` cannot run inside the transaction that creates a tenant's schema: {why}; \
         move that statement into a shared migration, or out of the migrations"
    )]
    NotForNewSchema {
        /// The migration directory.
        path: PathBuf,
        /// The statement and why.
        why: String,
    },
    /// The scope cannot be decided from the tables touched.
    #[error(
        "cannot decide the scope of `{path}`: {why}; declare it with \
         `appschema_scope = \"shared\"` or `appschema_scope = \"isolated\"` in its metadata.toml"
    )]
    Undecidable {
        /// The migration directory.
        path: PathBuf,
        /// What it touches.
        why: String,
    },
    /// A both-scope table references an isolated one.
    #[error(
        "`{path}` adds a foreign key from table `{from}`, marked #[appschema::both], to isolated \
         table `{to}`: the shared copy of `{from}` would point at a table the shared schema does \
         not have; reference shared or both-scope tables only, or mark `{from}` isolated"
    )]
    BothToIsolatedForeignKey {
        /// The migration directory.
        path: PathBuf,
        /// The both-scope table.
        from: String,
        /// The isolated table.
        to: String,
    },
    /// A shared table references an isolated one.
    #[error(
        "`{path}` adds a foreign key from shared table `{from}` to isolated table `{to}`: \
         a shared row cannot point into one tenant's schema; reference shared tables only \
         (isolated -> shared is fine)"
    )]
    SharedToIsolatedForeignKey {
        /// The migration directory.
        path: PathBuf,
        /// The referencing (shared) table.
        from: String,
        /// The referenced (isolated) table.
        to: String,
    },
    /// An isolated migration names per-tenant objects with the shared
    /// schema: in every tenant they would resolve to the shared schema,
    /// where they do not exist after the first `migrate`.
    #[error(
        "`{path}` is isolated but names per-tenant objects with the shared schema ({objects}): \
         in a tenant these resolve to the shared schema, where they do not exist; drop the \
         `public.` qualification so that each tenant's `search_path` finds its own"
    )]
    SharedQualifiedIsolated {
        /// The migration directory.
        path: PathBuf,
        /// Every such object, as written.
        objects: String,
    },
    /// `metadata.toml` is invalid.
    #[error("`{path}`: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The schema source could not be read (or marks a table in both scopes).
    #[error(transparent)]
    SchemaSource(#[from] crate::schema_source::SchemaSourceError),
}

/// Every problem the planner found.
#[derive(Debug)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems in the migrations:", many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PlanErrors {}
