//! Renaming a tenant: its public name, its schema, or both.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::error::ProvisionError;
use super::util::{lock_tenant, registry_conflict, schema_ddl, schema_exists, InvalidateOnReturn};
use crate::name::{PublicName, SchemaName};
use crate::registry::{self, Tenant};

/// Renames the tenant answering to `public_name` (its primary name or an
/// alias): its primary public name to `new_public_name` and/or its schema to
/// `new_schema`, in one transaction. Aliases are kept.
///
/// Connections already set to the old schema keep a `search_path` naming a
/// schema that no longer exists, so their queries fail until their next
/// checkout; the old name is retired and never given to another tenant, so
/// they can never reach another tenant's rows.
pub fn rename_tenant(
    conn: &mut PgConnection,
    public_name: &PublicName,
    new_public_name: Option<&PublicName>,
    new_schema: Option<&SchemaName>,
) -> Result<Tenant, ProvisionError> {
    // Resolvers of this process forget cached answers once the change has
    // committed (or failed): see `InvalidateOnReturn`.
    let _invalidate = InvalidateOnReturn;
    conn.transaction(|conn| {
        let tenant = lock_tenant(conn, public_name)?;
        if let Some(new) = new_public_name.filter(|n| n.as_str() != tenant.public_name) {
            let conflict = |e| registry_conflict(e, new.as_str(), tenant.schema_name.as_str());
            diesel::sql_query(
                "UPDATE public.appschema_public_names SET public_name = $1 WHERE public_name = $2",
            )
            .bind::<Text, _>(new.as_str())
            .bind::<Text, _>(&tenant.public_name)
            .execute(conn)
            .map_err(conflict)?;
            diesel::sql_query("UPDATE public.appschema_tenants SET public_name = $1 WHERE id = $2")
                .bind::<Text, _>(new.as_str())
                .bind::<BigInt, _>(tenant.id)
                .execute(conn)
                .map_err(conflict)?;
        }
        if let Some(schema) = new_schema.filter(|s| **s != tenant.schema_name) {
            if schema_exists(conn, schema)? {
                return Err(ProvisionError::SchemaExists {
                    schema: schema.to_string(),
                });
            }
            diesel::sql_query("UPDATE public.appschema_tenants SET schema_name = $1 WHERE id = $2")
                .bind::<Text, _>(schema.as_str())
                .bind::<BigInt, _>(tenant.id)
                .execute(conn)
                .map_err(|e| registry_conflict(e, &tenant.public_name, schema.as_str()))?;
            // The new name must never have been a tenant's; the old one is
            // never given to another (connections may still be on it).
            registry::claim_schema_name(conn, schema)
                .map_err(|e| registry_conflict(e, &tenant.public_name, schema.as_str()))?;
            registry::retire_schema_name(conn, &tenant.schema_name)?;
            schema_ddl(
                conn,
                &format!(
                    "ALTER SCHEMA {} RENAME TO {}",
                    tenant.schema_name.quoted(),
                    schema.quoted()
                ),
                schema,
            )?;
        }
        let name = new_public_name.unwrap_or(public_name);
        registry::find(conn, name)?.ok_or_else(|| ProvisionError::UnknownTenant {
            public_name: name.to_string(),
        })
    })
}
