//! # appschema-core
//!
//! The runtime library of [appschema](https://docs.rs/appschema): schema
//! names, the tenant registry, tenant-scoped connections, the migration
//! planner and executor, and tenant provisioning. Applications use it through
//! the `appschema` facade crate.
//!
//! ```
//! use appschema_core::Scope;
//! assert_eq!("shared".parse::<Scope>(), Ok(Scope::Shared));
//! ```
#![warn(missing_docs)]

pub mod build;
pub mod connection;
pub mod migrate;
mod name;
pub mod planner;
pub mod provision;
pub mod registry;
pub mod resolve;
pub mod schema_source;
mod scope;
pub mod sql;

pub use connection::{
    ConnectionError, SearchPath, SharedPool, TenantConnection, TenantCustomizer,
    TransactionScopedPool,
};
pub use migrate::{migrate_schema_in_transaction, MigrateError, Migrator};
pub use name::{
    quote_ident, NameError, PublicName, SchemaName, MAX_IDENTIFIER_BYTES, MAX_PUBLIC_NAME_BYTES,
    RESERVED_PREFIX,
};
pub use planner::{MigrationSet, PlanError, PlanErrors};
pub use scope::{ColumnMeta, ParseScopeError, Scope, TableMeta};
