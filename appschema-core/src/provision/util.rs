//! Small database helpers shared by the provisioning operations.

use std::hash::{BuildHasher, Hasher};

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Bool, Text};

use super::error::ProvisionError;
use crate::name::{PublicName, SchemaName};

/// Calls [`crate::resolve::invalidate_all`] when dropped, i.e. when the
/// function holding it returns, after its transaction committed or rolled
/// back: invalidating before the commit would let a resolver re-cache the
/// old answer in between.
pub(crate) struct InvalidateOnReturn;

impl Drop for InvalidateOnReturn {
    fn drop(&mut self) {
        crate::resolve::invalidate_all();
    }
}

/// One boolean column, `value`.
#[derive(Debug, QueryableByName)]
pub struct BoolRow {
    /// The value.
    #[diesel(sql_type = Bool)]
    pub value: bool,
}

/// One text column, `value`.
#[derive(Debug, QueryableByName)]
pub struct TextRow {
    /// The value.
    #[diesel(sql_type = Text)]
    pub value: String,
}

/// 16 random hex digits, for internal schema names (std's hasher keys are
/// random per process and per `RandomState`).
pub(crate) fn random_hex() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

pub(crate) fn schema_exists(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<bool> {
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS value",
    )
    .bind::<Text, _>(schema.as_str())
    .get_result::<BoolRow>(conn)
    .map(|r| r.value)
}

/// Whether `schema`'s `__diesel_schema_migrations` records `version`.
pub(crate) fn has_version(
    conn: &mut PgConnection,
    schema: &SchemaName,
    version: &str,
) -> QueryResult<bool> {
    diesel::sql_query(has_version_sql(schema))
        .bind::<Text, _>(version)
        .get_result::<BoolRow>(conn)
        .map(|r| r.value)
}

/// The query behind `has_version` (`$1`: the version; one [`BoolRow`]).
pub fn has_version_sql(schema: &SchemaName) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {}.__diesel_schema_migrations WHERE version = $1) AS value",
        schema.quoted()
    )
}

/// Turns a unique violation on the registry into the error naming what is
/// taken; anything else stays a database error.
pub fn registry_conflict(e: DieselError, public_name: &str, schema: &str) -> ProvisionError {
    if let DieselError::DatabaseError(_, info) = &e {
        if info.message().contains(crate::registry::ROLE_NAMED_SCHEMA) {
            return ProvisionError::SchemaNamedLikeRole {
                schema: schema.to_string(),
            };
        }
    }
    if let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = &e {
        return if info.constraint_name() == Some("appschema_tenants_schema_name_key") {
            ProvisionError::SchemaExists {
                schema: schema.to_string(),
            }
        } else if info.constraint_name() == Some("appschema_schema_names_pkey") {
            ProvisionError::SchemaRetired {
                schema: schema.to_string(),
            }
        } else {
            ProvisionError::TenantExists {
                public_name: public_name.to_string(),
            }
        };
    }
    ProvisionError::Database(e)
}

/// Runs a statement creating or renaming to `schema`, reporting a schema
/// created meanwhile by someone else as [`ProvisionError::SchemaExists`].
pub(crate) fn schema_ddl(
    conn: &mut PgConnection,
    sql: &str,
    schema: &SchemaName,
) -> Result<(), ProvisionError> {
    schema_script(conn, sql, schema, false)
}

/// [`schema_ddl`], statement by statement when `one_by_one` (on Citus:
/// see [`crate::citus::execute_script`]).
pub(crate) fn schema_script(
    conn: &mut PgConnection,
    sql: &str,
    schema: &SchemaName,
    one_by_one: bool,
) -> Result<(), ProvisionError> {
    crate::citus::execute_script(conn, sql, one_by_one).map_err(|e| schema_ddl_error(e, schema))
}

/// What the failure of a statement creating or renaming to `schema` means:
/// a schema of that name created meanwhile by someone else is
/// [`ProvisionError::SchemaExists`].
pub fn schema_ddl_error(e: DieselError, schema: &SchemaName) -> ProvisionError {
    match &e {
        DieselError::DatabaseError(_, info) if info.message().contains("already exists") => {
            ProvisionError::SchemaExists {
                schema: schema.to_string(),
            }
        }
        _ => ProvisionError::Database(e),
    }
}

/// Locks the tenant's registry row and returns it.
pub(crate) fn lock_tenant(
    conn: &mut PgConnection,
    name: &PublicName,
) -> Result<crate::registry::Tenant, ProvisionError> {
    let tenant =
        crate::registry::find(conn, name)?.ok_or_else(|| ProvisionError::UnknownTenant {
            public_name: name.to_string(),
        })?;
    diesel::sql_query("SELECT id FROM public.appschema_tenants WHERE id = $1 FOR UPDATE")
        .bind::<diesel::sql_types::BigInt, _>(tenant.id)
        .execute(conn)?;
    // Re-read: a concurrent rename may have committed while we waited.
    crate::registry::find(conn, name)?.ok_or_else(|| ProvisionError::UnknownTenant {
        public_name: name.to_string(),
    })
}
