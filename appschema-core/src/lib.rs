//! # appschema-core
//!
//! The runtime library of [appschema](https://docs.rs/appschema): schema
//! names, the tenant registry, tenant-scoped connections, the migration
//! executor, and tenant provisioning. Applications use it through the
//! `appschema` facade crate.
//!
//! It is what a running application links, so it parses no SQL and no Rust:
//! the migration planner (PostgreSQL's grammar through `pg_query`, schema
//! files through `syn`) lives in `appschema-planner`, used by the CLI and by
//! build steps; the application receives its result as a [`MigrationSet`].
//!
//! ```
//! use appschema::Scope;
//! assert_eq!("shared".parse::<Scope>(), Ok(Scope::Shared));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod across;
pub mod citus;
pub mod connection;
pub mod migrate;
mod migration_set;
mod name;
pub mod observe;
pub mod provision;
pub mod redact;
pub mod registry;
pub mod resolve;
mod scope;
pub mod sizes;
pub(crate) mod sqltok;
mod workers;

pub use connection::{
    is_connection_lost, ConnectionError, PoolState, SearchPath, SharedPool, TenantConnection,
    TenantCustomizer, TransactionScopedPool,
};
pub use migrate::{migrate_schema_in_transaction, MigrateError, Migrator};
pub use migration_set::{EmbeddedMigration, Migration, MigrationSet, Step};
pub use name::{
    quote_ident, NameError, PublicName, SchemaName, MAX_IDENTIFIER_BYTES, MAX_PUBLIC_NAME_BYTES,
    RESERVED_PREFIX,
};
pub use redact::{redact_secrets, redact_url};
pub use scope::{ColumnMeta, ParseScopeError, Scope, TableMeta, DEFAULT_SHARED_SCHEMA};
