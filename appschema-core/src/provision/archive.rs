//! Dropping a tenant, or archiving it (its schema renamed aside under an
//! internal name, restorable), and restoring an archive.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};

use super::error::ProvisionError;
use super::hooks::{HookStage, Hooks};
use super::util::{
    lock_tenant, random_hex, registry_conflict, schema_ddl, schema_exists, InvalidateOnReturn,
    TextRow,
};
use crate::name::{PublicName, SchemaName};
use crate::registry::{self, Tenant};

/// What [`drop_tenant`] does with the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropMode {
    /// `DROP SCHEMA … CASCADE`: the data is gone.
    Drop,
    /// Rename the schema to `appschema_archived_…` and record it in
    /// `public.appschema_archives`; [`restore_archive`] brings it back.
    Archive,
}

/// An archived tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The schema holding the archived data (`appschema_archived_…`).
    pub schema_name: SchemaName,
    /// The tenant's primary public name when archived.
    pub public_name: String,
    /// The tenant's schema when archived.
    pub original_schema: String,
    /// Every public name the tenant answered to, primary first.
    pub public_names: Vec<String>,
}

/// Drops (or archives) a tenant: its registry rows and its schema go in one
/// transaction. Returns the archive when archiving.
pub fn drop_tenant(
    conn: &mut PgConnection,
    public_name: &PublicName,
    mode: DropMode,
) -> Result<Option<Archive>, ProvisionError> {
    drop_tenant_with_hooks(conn, public_name, mode, &Hooks::default())
}

/// [`drop_tenant`], running `hooks`' [`before_drop`](super::TenantHook::before_drop)
/// first, in the same transaction, with the tenant's rows still there; a
/// failing hook leaves the tenant as it was ([`ProvisionError::Hook`]).
pub fn drop_tenant_with_hooks(
    conn: &mut PgConnection,
    public_name: &PublicName,
    mode: DropMode,
    hooks: &Hooks,
) -> Result<Option<Archive>, ProvisionError> {
    // Resolvers of this process forget cached answers once the change has
    // committed (or failed): see `InvalidateOnReturn`.
    let _invalidate = InvalidateOnReturn;
    conn.transaction(|conn| {
        let tenant = lock_tenant(conn, public_name)?;
        hooks.run(conn, &tenant, HookStage::BeforeDrop(mode))?;
        let names = public_names_of(conn, &tenant)?;
        diesel::sql_query("DELETE FROM public.appschema_tenants WHERE id = $1")
            .bind::<BigInt, _>(tenant.id)
            .execute(conn)?;
        // Never handed to another tenant: a request still holding a
        // connection on this path must not reach a newcomer's rows.
        registry::retire_schema_name(conn, &tenant.schema_name)?;
        match mode {
            DropMode::Drop => {
                conn.batch_execute(&format!("DROP SCHEMA {} CASCADE", tenant.schema_name.quoted()))?;
                Ok(None)
            }
            DropMode::Archive => {
                let mut stem = tenant.schema_name.as_str().to_string();
                stem.truncate(63 - "appschema_archived_".len() - 17);
                let archive = SchemaName::internal(format!("appschema_archived_{stem}_{}", random_hex()))?;
                schema_ddl(
                    conn,
                    &format!("ALTER SCHEMA {} RENAME TO {}", tenant.schema_name.quoted(), archive.quoted()),
                    &archive,
                )?;
                diesel::sql_query(
                    "INSERT INTO public.appschema_archives (schema_name, public_name, original_schema, public_names)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind::<Text, _>(archive.as_str())
                .bind::<Text, _>(&tenant.public_name)
                .bind::<Text, _>(tenant.schema_name.as_str())
                .bind::<Array<Text>, _>(&names)
                .execute(conn)?;
                Ok(Some(Archive {
                    schema_name: archive,
                    public_name: tenant.public_name,
                    original_schema: tenant.schema_name.to_string(),
                    public_names: names,
                }))
            }
        }
    })
}

fn public_names_of(conn: &mut PgConnection, tenant: &Tenant) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query(
        "SELECT public_name AS value FROM public.appschema_public_names
          WHERE tenant_id = $1 ORDER BY is_primary DESC, public_name",
    )
    .bind::<BigInt, _>(tenant.id)
    .load::<TextRow>(conn)?
    .into_iter()
    .map(|r| r.value)
    .collect())
}

#[derive(QueryableByName)]
struct ArchiveRow {
    #[diesel(sql_type = Text)]
    schema_name: String,
    #[diesel(sql_type = Text)]
    public_name: String,
    #[diesel(sql_type = Text)]
    original_schema: String,
    #[diesel(sql_type = Array<Text>)]
    public_names: Vec<String>,
    #[allow(dead_code)]
    #[diesel(sql_type = Timestamptz)]
    archived_at: diesel::pg::data_types::PgTimestamp,
}

impl ArchiveRow {
    fn into_archive(self) -> Result<Archive, ProvisionError> {
        Ok(Archive {
            schema_name: SchemaName::internal(self.schema_name)?,
            public_name: self.public_name,
            original_schema: self.original_schema,
            public_names: self.public_names,
        })
    }
}

/// Every archived tenant, oldest first.
pub fn list_archives(conn: &mut PgConnection) -> Result<Vec<Archive>, ProvisionError> {
    diesel::sql_query("SELECT * FROM public.appschema_archives ORDER BY archived_at, schema_name")
        .load::<ArchiveRow>(conn)?
        .into_iter()
        .map(ArchiveRow::into_archive)
        .collect()
}

/// Restores an archived tenant under its old public names and schema, or
/// under `public_name` / `schema` when given (aliases are restored only with
/// the old primary name). One transaction; refused with
/// [`ProvisionError::TenantExists`] / [`ProvisionError::SchemaExists`] when a
/// name has been taken meanwhile.
pub fn restore_archive(
    conn: &mut PgConnection,
    archive: &SchemaName,
    public_name: Option<&PublicName>,
    schema: Option<&SchemaName>,
) -> Result<Tenant, ProvisionError> {
    // Resolvers of this process forget cached answers once the change has
    // committed (or failed): see `InvalidateOnReturn`.
    let _invalidate = InvalidateOnReturn;
    conn.transaction(|conn| {
        let row = diesel::sql_query(
            "SELECT * FROM public.appschema_archives WHERE schema_name = $1 FOR UPDATE",
        )
        .bind::<Text, _>(archive.as_str())
        .get_result::<ArchiveRow>(conn)
        .optional()?
        .ok_or_else(|| ProvisionError::UnknownArchive {
            schema: archive.to_string(),
        })?
        .into_archive()?;
        let original_public = PublicName::new(&row.public_name)?;
        let public = public_name
            .cloned()
            .unwrap_or_else(|| original_public.clone());
        let schema = match schema {
            Some(s) => s.clone(),
            None => SchemaName::new(&row.original_schema)?,
        };
        if schema.as_str() == row.original_schema {
            // The same tenant's rows come back under their own name.
            registry::unretire_schema_name(conn, &schema)?;
        }
        let tenant = registry::insert(conn, &public, &schema)
            .map_err(|e| registry_conflict(e, public.as_str(), schema.as_str()))?;
        if schema_exists(conn, &schema)? {
            return Err(ProvisionError::SchemaExists {
                schema: schema.to_string(),
            });
        }
        schema_ddl(
            conn,
            &format!(
                "ALTER SCHEMA {} RENAME TO {}",
                archive.quoted(),
                schema.quoted()
            ),
            &schema,
        )?;
        if public == original_public {
            for alias in row.public_names.iter().filter(|n| **n != row.public_name) {
                let alias = PublicName::new(alias)?;
                registry::add_alias(conn, &tenant, &alias)
                    .map_err(|e| registry_conflict(e, alias.as_str(), schema.as_str()))?;
            }
        }
        diesel::sql_query("DELETE FROM public.appschema_archives WHERE schema_name = $1")
            .bind::<Text, _>(archive.as_str())
            .execute(conn)?;
        Ok(tenant)
    })
}
