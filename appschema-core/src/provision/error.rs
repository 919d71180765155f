//! Errors of provisioning.

use crate::name::NameError;

/// Why a tenant could not be created, dropped, renamed or cloned. Nothing of
/// the operation was committed when one of these is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A public name or schema name broke a naming rule.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The public name already belongs to a tenant.
    #[error("tenant `{public_name}` already exists: choose another public name")]
    TenantExists {
        /// The public name asked for.
        public_name: String,
    },
    /// The schema already exists (a tenant's or not).
    #[error("schema `{schema}` already exists: choose another schema name")]
    SchemaExists {
        /// The schema asked for.
        schema: String,
    },
    /// A dropped, archived or renamed tenant had this schema name. Names are
    /// never reused: a connection still on the old tenant's path must never
    /// reach a new tenant's rows.
    #[error("schema name `{schema}` belonged to a tenant that was dropped, archived or renamed, and is never reused (a connection still on it would read the new tenant's rows): choose another schema name")]
    SchemaRetired {
        /// The schema asked for.
        schema: String,
    },
    /// A database role has this name: a session whose `search_path` falls
    /// back to the default `"$user", public` would resolve the schema.
    #[error("schema name `{schema}` is the name of a database role; a session whose search_path falls back to \"$user\" would resolve it: choose another schema name")]
    SchemaNamedLikeRole {
        /// The schema asked for.
        schema: String,
    },
    /// No tenant answers to the public name.
    #[error("no tenant is named `{public_name}`: check the name with `appschema-cli list`")]
    UnknownTenant {
        /// The public name asked for.
        public_name: String,
    },
    /// No archive has this schema name.
    #[error("no archived tenant is kept in schema `{schema}`: see `appschema_archives` for the archives")]
    UnknownArchive {
        /// The archive schema asked for.
        schema: String,
    },
    /// No derived schema name was free.
    #[error("no free schema name could be derived from `{public_name}`: give one explicitly")]
    NoFreeSchemaName {
        /// The public name the derivation started from.
        public_name: String,
    },
    /// The isolated migrations failed on the new schema.
    #[error("cannot migrate schema `{schema}`: {error}")]
    Migration {
        /// The schema being migrated.
        schema: String,
        /// The migration's error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Building the schema failed while the shared schema lacks shared
    /// migrations: the tenant's migrations likely need them.
    #[error(
        "the shared schema has {pending} migration(s) not applied yet (the first is {first}), \
         and building the tenant's schema failed: {error}; run `appschema-cli migrate` (or \
         `Migrator::migrate`) first, then create the tenant"
    )]
    SharedBehind {
        /// How many shared migrations are not applied.
        pending: usize,
        /// The first of them, by version.
        first: String,
        /// How building the schema failed.
        error: Box<ProvisionError>,
    },
    /// The source tenant of a clone is not at the isolated migration head.
    #[error("tenant `{public_name}` is at migration {at} but the isolated head is {head}: run `appschema-cli migrate` before cloning it")]
    NotAtHead {
        /// The source tenant.
        public_name: String,
        /// Its last applied isolated migration.
        at: String,
        /// The isolated head.
        head: String,
    },
    /// A domain (public name) already belongs to a tenant.
    #[error("domain `{domain}` already belongs to a tenant (`appschema-cli domain list` on it shows which): remove it there first, or choose another")]
    DomainTaken {
        /// The domain asked for.
        domain: String,
    },
    /// The domain is not one of the tenant's.
    #[error("`{domain}` is not a domain of tenant `{public_name}`: see `appschema-cli domain list {public_name}`")]
    UnknownDomain {
        /// The domain asked for.
        domain: String,
        /// The tenant's primary public name.
        public_name: String,
    },
    /// The tenant's primary domain cannot be removed.
    #[error("`{domain}` is the primary domain of its tenant and cannot be removed: make another domain primary first (`appschema-cli domain primary <domain>`), or drop the tenant")]
    PrimaryDomain {
        /// The domain asked for.
        domain: String,
    },
    /// A lifecycle hook failed; the operation it ran in was rolled back.
    #[error("hook `{hook}` failed {stage} tenant `{public_name}` (schema `{schema}`), so nothing of it was kept: {error}")]
    Hook {
        /// The hook's name ([`super::TenantHook::name`]).
        hook: String,
        /// When it ran: `after creating`, `before dropping`, `before archiving`.
        stage: &'static str,
        /// The tenant's primary public name.
        public_name: String,
        /// The tenant's schema.
        schema: String,
        /// The hook's error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request carrying blocking hooks ([`super::NewTenant::hooks`]) was
    /// handed to the async sign-up, which cannot run them.
    #[error("the request for tenant `{public_name}` carries blocking hooks (NewTenant::hooks), which cannot run on an async connection: pass them as AsyncHooks to claim_spare_with_hooks, or create the tenant with create_tenant on a blocking thread")]
    BlockingHooksOnAsyncPath {
        /// The public name asked for.
        public_name: String,
    },
    /// A schema template problem.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(diesel::result::Error),
}

/// Why a schema template could not be generated, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template's stamp is not the current isolated head.
    #[error("the schema template matches migration {template} but the isolated head is {head}: regenerate it with `appschema-cli schematemplate`")]
    Stale {
        /// The version stamped on the template.
        template: String,
        /// The current isolated head.
        head: String,
    },
    /// No template is stored for the current head.
    #[error("no schema template is stored for migration {head}: generate one with `appschema-cli schematemplate`")]
    Missing {
        /// The current isolated head.
        head: String,
    },
    /// There are no isolated migrations, so there is nothing to template.
    #[error("there are no isolated migrations: a schema template would be empty")]
    NoMigrations,
    /// The text is not a template written by [`super::Template`].
    #[error("not an appschema schema template: {0}")]
    Malformed(String),
    /// `pg_dump` could not be found or run.
    #[error("cannot run pg_dump ({path}): {message}; set APPSCHEMA_PG_DUMP to its path")]
    PgDump {
        /// The pg_dump tried.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The template copies its seed rows from a seed schema this database
    /// does not have (dropped, or the template was generated in another
    /// database): replaying it would build a tenant without its rows.
    #[error("the schema template for migration {version} copies its seed rows from schema `{seed}`, which is not in this database (dropped, or the template was generated in another database): regenerate the template here with `appschema-cli schematemplate`")]
    SeedMissing {
        /// The template's version.
        version: String,
        /// The seed schema it names.
        seed: String,
    },
    /// pg_dump's SQL could not be tokenized.
    #[error("cannot read pg_dump's output: {0}")]
    Sql(String),
}

// `Database` prints the database's message itself, so it does not also
// return it as `source()`: a chain printed in full (anyhow's `{:#}`) would
// say it twice.
impl From<diesel::result::Error> for ProvisionError {
    fn from(e: diesel::result::Error) -> ProvisionError {
        ProvisionError::Database(e)
    }
}
