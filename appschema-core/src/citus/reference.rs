//! Shared tables made reference tables, so tenant tables can reference them.

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};

use super::{is_citus, CitusError};
use crate::name::quote_ident;

/// Makes every table of `tables` (names in `schema`, the shared schema)
/// that exists and is not yet a reference table into one, and returns the
/// ones it converted. Tables that do not exist (yet) are skipped. Does
/// nothing and returns nothing when the database is not on Citus.
///
/// A tenant table may only reference its own schema's tables or reference
/// tables; this is what keeps the isolated migrations' foreign keys to
/// shared tables working on Citus.
pub fn ensure_reference_tables(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[String],
) -> Result<Vec<String>, CitusError> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        value: String,
    }
    if tables.is_empty() || !is_citus(conn)? {
        return Ok(Vec::new());
    }
    let missing = diesel::sql_query(
        "SELECT c.oid::regclass::text AS value
           FROM (SELECT DISTINCT name FROM unnest($1::text[]) AS u(name)) AS t
           JOIN pg_catalog.pg_class c
             ON c.relname = t.name AND c.relnamespace = $2::regnamespace
            AND c.relkind IN ('r', 'p')
          WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                             WHERE p.logicalrelid = c.oid AND p.partmethod = 'n'
                               AND p.repmodel = 't')
          ORDER BY c.oid",
    )
    .bind::<Array<Text>, _>(tables)
    .bind::<Text, _>(quote_ident(schema))
    .load::<Name>(conn)?;
    let mut converted = Vec::new();
    for Name { value: table } in missing {
        diesel::sql_query("SELECT create_reference_table($1::regclass)::text")
            .bind::<Text, _>(&table)
            .execute(conn)
            .map_err(|error| CitusError::ReferenceTable {
                table: table.clone(),
                error,
            })?;
        converted.push(table);
    }
    Ok(converted)
}
