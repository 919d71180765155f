//! Errors of the executor.

/// Why a run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connect(diesel::ConnectionError),
    /// A query of appschema's own failed.
    #[error("database error: {0}")]
    Database(diesel::result::Error),
    /// A `--tenant` name is not in the registry.
    #[error("no tenant answers to `{0}`: check the name with `appschema-cli status`")]
    UnknownTenant(String),
    /// A schema source returned an error.
    #[error("schema source `{name}` failed: {error}")]
    SchemaSource {
        /// The source's name.
        name: String,
        /// The error.
        error: diesel::result::Error,
    },
    /// A migration that must run outside a transaction was asked to run
    /// inside the caller's transaction.
    #[error(
        "migration {0} sets `run_in_transaction = false` and has no form for a new schema \
         (a set built with `MigrationSet::from_parts`, or a shared migration): plan it with \
         `appschema_planner::load` or a build step, which prepare one"
    )]
    NotTransactional(String),
    /// A migration failed in one schema (single-schema API).
    #[error("migration {version} failed in schema `{schema}`: {message}")]
    Failed {
        /// The schema.
        schema: String,
        /// The migration's version.
        version: String,
        /// PostgreSQL's message.
        message: String,
    },
    /// A reader of applied versions stopped without an error of its own
    /// (its thread died); the run stopped without applying to the schemas
    /// not read.
    #[error("reading the applied versions stopped with {0} schema(s) unread: run migrate again")]
    ReadInterrupted(usize),
    /// A revert would undo migrations without a `down.sql` (or with one
    /// holding only comments).
    #[error(
        "cannot revert migration(s) {}: no down.sql, or one holding only comments; write a \
         down.sql that undoes the up.sql, or revert only the migrations after it (`--to VERSION`)",
        .0.join(", ")
    )]
    MissingDown(Vec<String>),
    /// A revert would undo a `run_in_transaction = false` migration.
    #[error(
        "cannot revert migration {0}: it sets `run_in_transaction = false`, so its down.sql cannot \
         run in one transaction with its tracking row; undo it by hand in each schema (and delete \
         its row from `__diesel_schema_migrations`), then run `appschema-cli migrate --recheck`, \
         or revert only the migrations after it (`--to VERSION`)"
    )]
    DownOutsideTransaction(String),
    /// The schemas do not hold the versions a revert needs them to.
    #[error("cannot revert: {detail}: {}; {fix}", .schemas.join(", "))]
    RevertOutOfStep {
        /// What is wrong.
        detail: String,
        /// The schemas concerned, each with the last migration it holds.
        schemas: Vec<String>,
        /// What to do about it.
        fix: String,
    },
    /// `Last(n)` asked for more migrations than are applied.
    #[error(
        "cannot revert the last {asked} migration(s): only {applied} are applied; \
         `--revert --to 0` reverts everything"
    )]
    RevertTooFar {
        /// Migrations asked for.
        asked: usize,
        /// Migrations applied.
        applied: usize,
    },
    /// On Citus: a shared table isolated tables reference could not be made
    /// a reference table (see [`crate::citus::ensure_reference_tables`]).
    #[error("{0}")]
    Citus(crate::citus::CitusError),
}

impl From<crate::citus::CitusError> for MigrateError {
    fn from(e: crate::citus::CitusError) -> MigrateError {
        MigrateError::Citus(e)
    }
}

// The variants wrapping another error print its message themselves, so they
// do not also return it as `source()`: a chain printed in full (anyhow's
// `{:#}`) would say everything twice.
impl From<diesel::ConnectionError> for MigrateError {
    fn from(e: diesel::ConnectionError) -> MigrateError {
        MigrateError::Connect(e)
    }
}

impl From<diesel::result::Error> for MigrateError {
    fn from(e: diesel::result::Error) -> MigrateError {
        MigrateError::Database(e)
    }
}
