//! Errors of exporting and importing a tenant.

use crate::provision::ProvisionError;

/// Why a tenant could not be exported or imported. An import that fails
/// with any of these has changed nothing: it runs in one transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A provisioning error: a name taken or retired, an unknown tenant, a
    /// database error, pg_dump missing.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// Reading or writing the export failed.
    #[error("cannot read or write the export: {0}")]
    Io(#[source] std::io::Error),
    /// The input does not start like an export.
    #[error("not an appschema tenant export (its first line must be `appschema tenant export`): give a file written by `appschema-cli export`")]
    NotAnExport,
    /// The export is in a format this version does not read.
    #[error("the export is in format {found}, but this appschema reads format {} only: import it with the appschema that wrote it, or export the tenant again with this one", super::FORMAT_VERSION)]
    UnsupportedFormat {
        /// The format version the file names.
        found: String,
    },
    /// The export is damaged, truncated or inconsistent.
    #[error(
        "the export is damaged or truncated: {0}; nothing was imported: export the tenant again"
    )]
    Corrupt(String),
    /// The export's isolated migration head is not the target's.
    #[error("the export was taken at isolated migration {export} but this database's isolated head is {target}: bring both to the same migration (run `appschema-cli migrate` against the database that is behind; if that is the source, export the tenant again after migrating it)")]
    HeadMismatch {
        /// The last isolated migration the exported tenant had applied.
        export: String,
        /// The isolated head of the target's migrations.
        target: String,
    },
    /// The target database lacks shared migrations.
    #[error("this database has {pending} shared migration(s) not applied yet (the first is {first}), so it is not at the export's head: run `appschema-cli migrate` against it first")]
    TargetBehind {
        /// How many shared migrations are not applied.
        pending: usize,
        /// The first of them, by version.
        first: String,
    },
}

// Database errors are provisioning's `Database`, so they print one way.
impl From<diesel::result::Error> for TransferError {
    fn from(e: diesel::result::Error) -> TransferError {
        TransferError::Provision(ProvisionError::Database(e))
    }
}

impl From<crate::provision::TemplateError> for TransferError {
    fn from(e: crate::provision::TemplateError) -> TransferError {
        TransferError::Provision(e.into())
    }
}

impl From<crate::NameError> for TransferError {
    fn from(e: crate::NameError) -> TransferError {
        TransferError::Provision(e.into())
    }
}
