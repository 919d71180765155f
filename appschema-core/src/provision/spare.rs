//! Spare schemas: tenant schemas built ahead of time under internal names
//! (`appschema_spare_…`, listed in `public.appschema_spares`), claimed by a
//! rename, so sign-up costs the same whatever the schema's size.

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::error::ProvisionError;
use super::migrations::{explain_failure, migrate_new_schema, IsolatedMigrations};
use super::util::{has_version, random_hex, schema_ddl, BoolRow, TextRow};
use crate::name::SchemaName;

/// Every spare schema, oldest first. `migrate` uses it to keep spares at the
/// isolated head along with the tenants. Empty when appschema's provisioning
/// tables are not installed.
pub fn spare_schemas(conn: &mut PgConnection) -> QueryResult<Vec<SchemaName>> {
    let installed =
        diesel::sql_query("SELECT to_regclass('public.appschema_spares') IS NOT NULL AS value")
            .get_result::<BoolRow>(conn)?
            .value;
    if !installed {
        return Ok(Vec::new());
    }
    diesel::sql_query(
        "SELECT schema_name AS value FROM public.appschema_spares ORDER BY created_at, schema_name",
    )
    .load::<TextRow>(conn)?
    .into_iter()
    .map(|r| {
        SchemaName::internal(&r.value).map_err(|e| {
            diesel::result::Error::DeserializationError(
                format!("appschema_spares holds an invalid schema name: {e}").into(),
            )
        })
    })
    .collect()
}

/// How many spare schemas are ready.
pub fn count_spares(conn: &mut PgConnection) -> QueryResult<usize> {
    Ok(spare_schemas(conn)?.len())
}

/// Tops the spares up to `count`, each built by the migrations in its own
/// transaction (so a long top-up holds no lock a sign-up needs). Concurrent
/// top-ups serialize and never overshoot. Returns how many were created.
pub fn ensure_spares<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    count: usize,
) -> Result<usize, ProvisionError> {
    let mut created = 0;
    loop {
        let made = conn
            .transaction(|conn| -> Result<bool, ProvisionError> {
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('appschema.spares'))")
                    .execute(conn)?;
                if count_spares(conn)? >= count {
                    return Ok(false);
                }
                let schema = SchemaName::internal(format!("appschema_spare_{}", random_hex()))?;
                migrate_new_schema(conn, migrations, &schema)?;
                diesel::sql_query("INSERT INTO public.appschema_spares (schema_name) VALUES ($1)")
                    .bind::<Text, _>(schema.as_str())
                    .execute(conn)?;
                Ok(true)
            })
            .map_err(|e| explain_failure(conn, migrations, e))?;
        if !made {
            return Ok(created);
        }
        created += 1;
    }
}

/// Takes the oldest free spare's row (one [`TextRow`]: its schema name, an
/// internal name) or none; `SKIP LOCKED`, so concurrent claims take
/// different spares and never wait on each other.
pub const CLAIM_SPARE: &str = "DELETE FROM public.appschema_spares
  WHERE schema_name = (SELECT schema_name FROM public.appschema_spares
                        ORDER BY created_at, schema_name
                        LIMIT 1 FOR UPDATE SKIP LOCKED)
 RETURNING schema_name AS value";

/// The rename that makes spare `spare` the schema `schema` (both quoted).
pub fn rename_spare_sql(spare: &SchemaName, schema: &SchemaName) -> String {
    format!(
        "ALTER SCHEMA {} RENAME TO {}",
        spare.quoted(),
        schema.quoted()
    )
}

/// Claims one spare as `schema`, in the open transaction; `false` when none
/// is free. `SKIP LOCKED`: concurrent claims take different spares and never
/// wait on each other. A spare left behind by a new migration is brought to
/// the head as it is claimed.
pub(crate) fn claim<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    schema: &SchemaName,
) -> Result<bool, ProvisionError> {
    let spare = diesel::sql_query(CLAIM_SPARE)
        .get_result::<TextRow>(conn)
        .optional()?;
    let Some(spare) = spare else { return Ok(false) };
    let spare = SchemaName::internal(spare.value)?;
    schema_ddl(conn, &rename_spare_sql(&spare, schema), schema)?;
    if let Some(head) = migrations.head() {
        if !has_version(conn, schema, &head)? {
            migrations
                .migrate_schema(conn, schema)
                .map_err(|error| ProvisionError::Migration {
                    schema: schema.to_string(),
                    error,
                })?;
        }
    }
    Ok(true)
}
