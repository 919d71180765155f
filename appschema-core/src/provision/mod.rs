//! Provisioning tenants: create (by migrations, from a schema template, or by
//! claiming a spare schema), drop or archive, restore, rename, clone, and
//! export to a file / import from one.
//!
//! Every operation that changes more than one thing is one transaction: the
//! registry rows and the schema commit together or not at all, so a tenant is
//! never half-created, and creating tenants from a running web process is
//! safe. Concurrent creations of the same public name or schema serialize on
//! the registry's unique indexes: one wins, the other gets
//! [`ProvisionError::TenantExists`] or [`ProvisionError::SchemaExists`].
//!
//! ```no_run
//! # use diesel::Connection;
//! # let migrations = appschema::MigrationSet::default(); // embedded at build time
//! use appschema::provision::{create_tenant, NewTenant, Source};
//! let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
//! let request = NewTenant::new("acme.example.com")?.source(Source::Spare);
//! let created = create_tenant(&mut conn, &migrations, &request)?;
//! println!("{} lives in schema {}", created.tenant.public_name, created.tenant.schema_name);
//! # Ok::<(), appschema::provision::ProvisionError>(())
//! ```

/// Creating a tenant from a spare ([`SpareClaim`](internals::SpareClaim):
/// its steps and decisions), its SQL and the decoding of its failures, for
/// other appschema crates (the async sign-up in `appschema-async`). Not a
/// stable API.
#[doc(hidden)]
pub mod internals {
    pub use super::create::{derived_candidate, tries_next_name, MAX_DERIVED_ATTEMPTS};
    pub use super::hooks::HookRun;
    pub use super::spare::{rename_spare_sql, SpareAnswer, SpareClaim, SpareStep, CLAIM_SPARE};
    pub use super::util::{has_version_sql, registry_conflict, schema_ddl_error, BoolRow, TextRow};
    pub use crate::registry::{TenantRow, INSERT_TENANT};
}

mod archive;
mod clone;
mod create;
mod domains;
mod error;
mod hooks;
mod migrations;
mod pg_dump;
mod rename;
mod seed;
mod spare;
mod template;
mod transfer;
mod util;

pub use archive::{
    drop_tenant, drop_tenant_with_hooks, list_archives, restore_archive, Archive, DropMode,
};
pub use clone::clone_tenant;
pub use create::{
    create_tenant, create_tenant_from_template, derive_schema_name, Created, NewTenant, Source,
};
pub use domains::{add_domain, list_domains, remove_domain, set_primary_domain, Domain};
pub use error::{ProvisionError, TemplateError};
pub use hooks::{HookError, HookStage, Hooks, TenantHook};
pub use migrations::IsolatedMigrations;
pub use pg_dump::find_pg_dump;
pub use rename::rename_tenant;
pub use spare::{count_spares, ensure_spares, spare_schemas};
pub use template::{
    generate_template, load_template, store_template, Template, TEMPLATE_PLACEHOLDER,
};
pub use transfer::{
    export_tenant, import_tenant, Exported, ImportOptions, Imported, TableTransfer, TransferError,
    FORMAT_VERSION,
};
pub(crate) use util::lock_tenant as lock_tenant_for_hooks;
