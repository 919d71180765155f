//! What the plan means on a Citus cluster (see `appschema_core::citus`),
//! found from the same history as the scopes, before anything runs.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

/// The planner's notes for running the migrations on Citus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CitusNotes {
    /// Shared tables that isolated tables reference by foreign key, under
    /// the name the referencing migration uses and under their last name:
    /// on Citus they must be reference tables, which
    /// `appschema-cli migrate` makes them
    /// (`Migrator::citus_reference_tables`).
    pub reference_tables: BTreeSet<String>,
    /// What Citus would refuse.
    pub warnings: Vec<CitusWarning>,
}

/// Something Citus refuses that the migrations do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CitusWarning {
    /// A trigger on an isolated table: Citus refuses triggers on
    /// distributed tables unless `citus.enable_unsafe_triggers` is on.
    TriggerOnIsolatedTable {
        /// The migration's directory.
        path: PathBuf,
        /// The table, as written.
        table: String,
    },
    /// A foreign key from an isolated table to a table named in a schema
    /// other than `public`: on Citus another schema is another colocation
    /// group (another tenant's, or a distributed schema), and the key is
    /// refused.
    CrossSchemaReference {
        /// The migration's directory.
        path: PathBuf,
        /// The referencing table, as written.
        from: String,
        /// The referenced table, as written.
        to: String,
    },
}

impl fmt::Display for CitusWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CitusWarning::TriggerOnIsolatedTable { path, table } => write!(
                f,
                "`{}` creates a trigger on isolated table `{table}`: on Citus, tenant tables are \
                 distributed and Citus refuses triggers on them (\"triggers are not supported on \
                 distributed tables\") unless `citus.enable_unsafe_triggers` is on \
                 (`ALTER DATABASE … SET citus.enable_unsafe_triggers = on`, safe here because \
                 each tenant's rows live on one node); or move the logic into the application",
                path.display()
            ),
            CitusWarning::CrossSchemaReference { path, from, to } => write!(
                f,
                "`{}` adds a foreign key from isolated table `{from}` to `{to}`, in another \
                 schema: on Citus a tenant's tables may reference only their own schema's tables \
                 and reference tables (shared tables in `public`), so Citus refuses it; reference \
                 a shared table in `public` instead",
                path.display()
            ),
        }
    }
}
