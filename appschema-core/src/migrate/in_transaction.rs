//! Migrating one schema inside the caller's transaction: what provisioning
//! does to a new tenant schema.

use std::collections::BTreeSet;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::apply::{db_message, lock_key, quote_literal};
use super::{MigrateError, TRACKING_TABLE};
use crate::name::SchemaName;
#[cfg(doc)]
use crate::Migration;
use crate::MigrationSet;

/// Brings one schema to the isolated head inside the caller's transaction:
/// creates its `__diesel_schema_migrations`, applies every isolated
/// migration it lacks with `search_path` = the schema, then the set's
/// shared and extra schemas ([`MigrationSet::search_path`]; by default
/// `public`), and records them. The caller commits or rolls back
/// (provisioning calls it in the transaction that inserts the registry row).
/// The transaction's previous `search_path` is restored. Returns how many
/// migrations were applied.
///
/// Meant for a schema being created (or a spare, which holds no data):
/// a `run_in_transaction = false` migration runs here in the form the
/// planner prepared for a new schema ([`Migration::new_schema_sql`]:
/// without `CONCURRENTLY`, which only spares the writers of a table that has
/// some). Existing tenants are migrated by [`super::Migrator`], which keeps
/// such migrations outside any transaction.
///
/// ```no_run
/// # use diesel::Connection;
/// # use appschema::{MigrationSet, SchemaName};
/// # let set = MigrationSet::default();
/// let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
/// conn.transaction(|conn| {
///     let schema = SchemaName::new("acme").unwrap();
///     diesel::sql_query(format!("CREATE SCHEMA {}", schema.quoted())).execute(conn)?;
///     appschema::migrate::migrate_schema_in_transaction(conn, &schema, &set)
///         .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
///     Ok::<_, diesel::result::Error>(())
/// }).unwrap();
/// # use diesel::RunQueryDsl;
/// ```
pub fn migrate_schema_in_transaction(
    conn: &mut PgConnection,
    schema: &SchemaName,
    set: &MigrationSet,
) -> Result<usize, MigrateError> {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        citus: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        heads: bool,
    }
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let previous: Setting = diesel::sql_query(
        "SELECT current_setting('search_path') AS value, EXISTS (SELECT 1 FROM \
             pg_catalog.pg_extension WHERE extname = 'citus') AS citus, \
             to_regclass('public.appschema_heads') IS NOT NULL AS heads",
    )
    .get_result(conn)?;
    let qs = schema.quoted();
    conn.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({key});
         CREATE TABLE IF NOT EXISTS {qs}.{TRACKING_TABLE} (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
         SELECT set_config('search_path', {path}, true);",
        key = lock_key(schema.as_str()),
        path = quote_literal(&set.search_path().for_tenant(schema)),
    ))?;
    let mut applied: BTreeSet<String> = diesel::sql_query(format!(
        "SELECT version::text AS version FROM {qs}.{TRACKING_TABLE}"
    ))
    .load::<Version>(conn)?
    .into_iter()
    .map(|v| v.version)
    .collect();
    let mut count = 0;
    let pending: Vec<_> = set
        .isolated()
        .filter(|m| !applied.contains(m.version()))
        .collect();
    for m in pending {
        let sql = m
            .new_schema_sql()
            .ok_or_else(|| MigrateError::NotTransactional(m.name().to_string()))?;
        // On Citus, statement by statement (see `citus::execute_script`).
        crate::citus::execute_script(
            conn,
            &format!(
                "{sql}\n;\nINSERT INTO {qs}.{TRACKING_TABLE} (version) VALUES ({});",
                quote_literal(m.version()),
                // Extensions go to the shared schema, once (see the
                // `extensions` module).
                sql = super::extensions::in_shared_schema(sql, set.search_path().shared()),
            ),
            previous.citus,
        )
        .map_err(|e| MigrateError::Failed {
            schema: schema.as_str().to_string(),
            version: m.version().to_string(),
            message: db_message(&e),
        })?;
        applied.insert(m.version().to_string());
        count += 1;
    }
    // The schema's head, recorded in this transaction (see the `heads`
    // module): it commits, or rolls back, with the versions it describes.
    // Skipped where appschema's tables predate the record. Same message as
    // the path's restoration: no extra round trip.
    let record = if previous.heads {
        let record = super::heads::Record::holding(schema.as_str(), &applied);
        super::heads::upsert_sql(&[record])
            .map(|sql| format!("{sql};\n"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    conn.batch_execute(&format!(
        "{record}SELECT set_config('search_path', {}, true)",
        quote_literal(&previous.value)
    ))?;
    Ok(count)
}
