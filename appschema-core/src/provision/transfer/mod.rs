//! Exporting one tenant to a file and importing it into another database
//! (another region, a dedicated server, a customer's copy).
//!
//! An export holds the tenant's registry row, aliases and applied isolated
//! migrations, its schema's DDL with the schema's name replaced by a
//! placeholder (so it imports under any schema), every table's rows in
//! `COPY` text format and every sequence's value; it is versioned
//! ([`FORMAT_VERSION`]) and ends with a checksum. Both directions stream:
//! a tenant's rows are never held in memory.
//!
//! The format, line by line: `appschema tenant export`, `format 1`, then
//! records `<tag> <length>\n<payload>\n`: `public_name`, `alias`…,
//! `schema`, `version`…, `head`, `pre_data` and `post_data` (DDL, as
//! `pg_dump --section` writes it), then per table `table`, `column`…,
//! `data`… (chunks of `COPY` text) and `rows`, per sequence `sequence` and
//! `setval` (`<last_value> t|f`), and last `end` (the CRC-32 of every byte
//! before it, in hex).

mod copy;
mod error;
mod export;
mod format;
mod import;

pub use error::TransferError;
pub use export::export_tenant;
pub use format::FORMAT_VERSION;
pub use import::import_tenant;

use crate::name::{PublicName, SchemaName};
use crate::registry::Tenant;

/// One table exported or imported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableTransfer {
    /// The table's name.
    pub table: String,
    /// How many rows.
    pub rows: u64,
    /// How many bytes of the export they take.
    pub bytes: u64,
}

/// What [`export_tenant`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exported {
    /// The tenant's primary public name.
    pub public_name: String,
    /// Its schema in the source database.
    pub schema_name: SchemaName,
    /// The last isolated migration it had applied (`None`: none).
    pub head: Option<String>,
    /// Every table, by name.
    pub tables: Vec<TableTransfer>,
    /// The export's size.
    pub bytes: u64,
}

/// What [`import_tenant`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Imported {
    /// The new tenant's registry row.
    pub tenant: Tenant,
    /// Every table, by name.
    pub tables: Vec<TableTransfer>,
    /// The export's size.
    pub bytes: u64,
}

/// Under which names [`import_tenant`] creates the tenant.
///
/// ```
/// use appschema::provision::ImportOptions;
/// use appschema::{PublicName, SchemaName};
/// // As exported: its public name and aliases, a derived schema.
/// let as_exported = ImportOptions::new();
/// // A second copy next to the first: other names.
/// let copy = ImportOptions::new()
///     .public_name(PublicName::new("acme-copy.example.com")?)
///     .schema(SchemaName::new("acme_copy")?);
/// assert_ne!(as_exported, copy);
/// # Ok::<(), appschema::NameError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    public_name: Option<PublicName>,
    schema: Option<SchemaName>,
    hooks: crate::provision::Hooks,
}

impl ImportOptions {
    /// The exported public name and aliases, a schema derived from the
    /// public name (as [`crate::provision::derive_schema_name`]; `acme_2`,
    /// … when taken).
    pub fn new() -> ImportOptions {
        ImportOptions::default()
    }

    /// Imports under `public_name` instead (the exported aliases are left
    /// out: they name the tenant the export came from).
    pub fn public_name(mut self, public_name: PublicName) -> ImportOptions {
        self.public_name = Some(public_name);
        self
    }

    /// Imports into schema `schema`, which must not exist and never have
    /// been a tenant's here (see [`crate::provision::ProvisionError::SchemaRetired`]).
    pub fn schema(mut self, schema: SchemaName) -> ImportOptions {
        self.schema = Some(schema);
        self
    }

    /// Runs `hooks`' [`after_create`](crate::provision::TenantHook::after_create)
    /// once the tenant is imported (rows, indexes and all), in the importing
    /// transaction (default: none).
    pub fn hooks(mut self, hooks: crate::provision::Hooks) -> ImportOptions {
        self.hooks = hooks;
        self
    }
}
