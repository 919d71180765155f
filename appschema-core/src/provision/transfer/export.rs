//! Writing one tenant out.

use std::io::Write;

use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use super::copy::copy_out;
use super::error::TransferError;
use super::format::{RecordWriter, DATA_CHUNK};
use super::{Exported, TableTransfer};
use crate::name::{PublicName, SchemaName};
use crate::provision::pg_dump::dump_schema_with;
use crate::provision::template::portable_ddl;
use crate::provision::util::{BoolRow, TextRow};
use crate::provision::ProvisionError;
use crate::registry;

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Array<Text>)]
    columns: Vec<String>,
}

#[derive(QueryableByName)]
struct SequenceValue {
    #[diesel(sql_type = Text)]
    last_value: String,
    #[diesel(sql_type = Bool)]
    is_called: bool,
}

/// Writes tenant `public_name` (any of its names) to `out`: its registry
/// row, aliases and applied isolated migrations, its schema's DDL (as
/// `pg_dump` writes it, the schema's name replaced by a placeholder so the
/// export can be imported under any schema), every table's rows (streamed
/// with `COPY … TO STDOUT`, never held in memory) and every sequence's
/// value, all from one snapshot. `database_url` must name the database
/// `conn` is connected to (pg_dump reads the DDL through it, in the same
/// snapshot; see [`crate::provision::find_pg_dump`]). `progress` is called
/// after each table.
///
/// Runs in a read-only repeatable-read transaction of its own: call it
/// outside a transaction. The tenant's writers are not blocked.
///
/// ```no_run
/// # use diesel::Connection;
/// use appschema::provision::export_tenant;
/// use appschema::PublicName;
/// let url = "postgres:///app";
/// let mut conn = diesel::PgConnection::establish(url)?;
/// let file = std::io::BufWriter::new(std::fs::File::create("acme.tenant")?);
/// let name = PublicName::new("acme.example.com")?;
/// let exported = export_tenant(&mut conn, url, &name, file, |t| {
///     eprintln!("{}: {} rows", t.table, t.rows)
/// })?;
/// println!("{} bytes", exported.bytes);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_tenant<W: Write>(
    conn: &mut PgConnection,
    database_url: &str,
    public_name: &PublicName,
    out: W,
    mut progress: impl FnMut(&TableTransfer),
) -> Result<Exported, TransferError> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| {
            let tenant = registry::find(conn, public_name)?.ok_or_else(|| {
                ProvisionError::UnknownTenant {
                    public_name: public_name.to_string(),
                }
            })?;
            let schema = &tenant.schema_name;
            let aliases = texts(
                diesel::sql_query(
                    "SELECT public_name AS value FROM public.appschema_public_names
                      WHERE tenant_id = $1 AND NOT is_primary ORDER BY public_name",
                )
                .bind::<diesel::sql_types::BigInt, _>(tenant.id),
                conn,
            )?;
            let versions = applied_versions(conn, schema)?;
            // pg_dump reads the DDL in this transaction's snapshot, so the
            // DDL and the rows copied below are of one moment.
            let snapshot = diesel::sql_query("SELECT pg_catalog.pg_export_snapshot() AS value")
                .get_result::<TextRow>(conn)?
                .value;
            let section = |name: &str| -> Result<String, TransferError> {
                let dump = dump_schema_with(
                    database_url,
                    schema.as_str(),
                    &[&format!("--section={name}"), "--snapshot", &snapshot],
                )?;
                Ok(portable_ddl(&dump, schema)?)
            };
            let pre_data = section("pre-data")?;
            let post_data = section("post-data")?;

            let mut w = RecordWriter::new(out)?;
            w.record("public_name", tenant.public_name.as_bytes())?;
            for alias in &aliases {
                w.record("alias", alias.as_bytes())?;
            }
            w.record("schema", schema.as_str().as_bytes())?;
            for version in &versions {
                w.record("version", version.as_bytes())?;
            }
            if let Some(head) = versions.last() {
                w.record("head", head.as_bytes())?;
            }
            w.record("pre_data", pre_data.as_bytes())?;
            w.record("post_data", post_data.as_bytes())?;

            let mut tables = Vec::new();
            for table in tables_of(conn, schema)? {
                w.record("table", table.name.as_bytes())?;
                for column in &table.columns {
                    w.record("column", column.as_bytes())?;
                }
                let before = w.bytes();
                let mut buffer = Vec::with_capacity(DATA_CHUNK);
                let rows = copy_out(conn, schema, &table.name, &table.columns, |chunk| {
                    buffer.extend_from_slice(chunk);
                    if buffer.len() >= DATA_CHUNK {
                        // A row may be larger than a chunk: COPY text can
                        // be cut anywhere, the import joins it back.
                        for piece in buffer.chunks(DATA_CHUNK) {
                            w.record("data", piece)?;
                        }
                        buffer.clear();
                    }
                    Ok::<_, TransferError>(())
                })?;
                if !buffer.is_empty() {
                    w.record("data", &buffer)?;
                }
                w.record("rows", rows.to_string().as_bytes())?;
                let done = TableTransfer {
                    table: table.name,
                    rows,
                    bytes: w.bytes() - before,
                };
                progress(&done);
                tables.push(done);
            }
            for sequence in sequences_of(conn, schema)? {
                let value = diesel::sql_query(format!(
                    "SELECT last_value::text AS last_value, is_called FROM {}.{}",
                    schema.quoted(),
                    crate::name::quote_ident(&sequence)
                ))
                .get_result::<SequenceValue>(conn)?;
                w.record("sequence", sequence.as_bytes())?;
                let called = if value.is_called { "t" } else { "f" };
                w.record(
                    "setval",
                    format!("{} {called}", value.last_value).as_bytes(),
                )?;
            }
            let bytes = w.finish()?;
            Ok(Exported {
                public_name: tenant.public_name.clone(),
                schema_name: tenant.schema_name.clone(),
                head: versions.last().cloned(),
                tables,
                bytes,
            })
        })
}

fn texts<Q>(query: Q, conn: &mut PgConnection) -> QueryResult<Vec<String>>
where
    Q: diesel::query_dsl::LoadQuery<'static, PgConnection, TextRow>,
{
    Ok(query
        .load::<TextRow>(conn)?
        .into_iter()
        .map(|r| r.value)
        .collect())
}

/// The versions in `schema`'s `__diesel_schema_migrations`, in the order
/// diesel applies them (none when the table does not exist).
pub(crate) fn applied_versions(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> QueryResult<Vec<String>> {
    let exists = diesel::sql_query(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_class
                         WHERE relnamespace = $1::regnamespace
                           AND relname = '__diesel_schema_migrations') AS value",
    )
    .bind::<Text, _>(schema.quoted())
    .get_result::<BoolRow>(conn)?
    .value;
    if !exists {
        return Ok(Vec::new());
    }
    texts(
        diesel::sql_query(format!(
            "SELECT version::text AS value FROM {}.__diesel_schema_migrations ORDER BY version",
            schema.quoted()
        )),
        conn,
    )
}

/// Every table of `schema` that holds rows (partitions included, each
/// copied on its own; partitioned parents hold none), with the columns a
/// `COPY` writes (generated ones are computed again on import).
fn tables_of(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<Vec<TableRow>> {
    diesel::sql_query(
        "SELECT c.relname::text AS name,
                array(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                         AND a.attgenerated = '' ORDER BY a.attnum) AS columns
           FROM pg_catalog.pg_class c
          WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r'
          ORDER BY c.relname",
    )
    .bind::<Text, _>(schema.quoted())
    .load::<TableRow>(conn)
}

fn sequences_of(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<Vec<String>> {
    texts(
        diesel::sql_query(
            "SELECT relname::text AS value FROM pg_catalog.pg_class
              WHERE relnamespace = $1::regnamespace AND relkind = 'S' ORDER BY relname",
        )
        .bind::<Text, _>(schema.quoted()),
        conn,
    )
}
