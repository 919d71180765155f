//! Errors of the across-tenants runner.

/// Why a run could not start, or had to stop before every tenant was done.
/// A tenant's own failure is not an error of the run: it is in
/// [`Report::failures`](super::Report::failures).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcrossError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connect(diesel::ConnectionError),
    /// A query of appschema's own (reading the registry) failed.
    #[error("database error: {0}")]
    Database(diesel::result::Error),
    /// A tenant asked for by name is not in the registry.
    #[error("no tenant answers to `{0}`: check the name with `appschema-cli list`")]
    UnknownTenant(String),
}
