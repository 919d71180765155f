//! How big each tenant is: the total size of its schema's relations and
//! their row estimates, in one catalog query, to find the big tenants.
//!
//! Sizes are PostgreSQL's (`pg_total_relation_size`: table, indexes and
//! TOAST, of every table and materialized view of the schema, appschema's
//! tracking table included); row counts are the planner's estimates
//! (`pg_class.reltuples`, kept by `VACUUM`, `ANALYZE` and autovacuum), not a
//! `count(*)` of every table, which would read every tenant's data.
//!
//! ```no_run
//! use appschema::sizes::{tenant_sizes, SizeOrder};
//! use diesel::Connection;
//! let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
//! for t in tenant_sizes(&mut conn, SizeOrder::LargestFirst).unwrap().iter().take(10) {
//!     println!("{}\t{} bytes\t~{} rows", t.public_name, t.total_bytes, t.rows_estimate);
//! }
//! ```

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::name::SchemaName;

/// One tenant's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSize {
    /// The tenant's primary public name.
    pub public_name: String,
    /// Its schema.
    pub schema_name: SchemaName,
    /// Bytes on disk of its tables and materialized views, with their
    /// indexes and TOAST (0 when the schema is missing).
    pub total_bytes: i64,
    /// Estimated rows in its tables (the tracking table excluded); tables
    /// never vacuumed or analyzed count 0.
    pub rows_estimate: i64,
    /// Tables and materialized views in its schema (the tracking table
    /// included).
    pub relations: i64,
}

/// The order of [`tenant_sizes`]' answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SizeOrder {
    /// By primary public name (the default).
    #[default]
    Name,
    /// Largest total size first.
    LargestFirst,
    /// Most estimated rows first.
    MostRowsFirst,
}

impl std::str::FromStr for SizeOrder {
    type Err = String;

    /// `name`, `size` or `rows`.
    fn from_str(s: &str) -> Result<SizeOrder, String> {
        match s {
            "name" => Ok(SizeOrder::Name),
            "size" => Ok(SizeOrder::LargestFirst),
            "rows" => Ok(SizeOrder::MostRowsFirst),
            other => Err(format!(
                "unknown order `{other}`: use `name`, `size` or `rows`"
            )),
        }
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    public_name: String,
    #[diesel(sql_type = Text)]
    schema_name: String,
    #[diesel(sql_type = BigInt)]
    total_bytes: i64,
    #[diesel(sql_type = BigInt)]
    rows_estimate: i64,
    #[diesel(sql_type = BigInt)]
    relations: i64,
}

/// Every tenant's size, in `order` (ties by public name), in one query.
pub fn tenant_sizes(conn: &mut PgConnection, order: SizeOrder) -> QueryResult<Vec<TenantSize>> {
    let order_by = match order {
        SizeOrder::Name => "public_name",
        SizeOrder::LargestFirst => "total_bytes DESC, public_name",
        SizeOrder::MostRowsFirst => "rows_estimate DESC, public_name",
    };
    diesel::sql_query(format!(
        "SELECT t.public_name, t.schema_name,
                coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::int8 AS total_bytes,
                coalesce(sum(greatest(c.reltuples, 0))
                         FILTER (WHERE c.relname <> '__diesel_schema_migrations'), 0)::int8 AS rows_estimate,
                count(c.oid)::int8 AS relations
           FROM public.appschema_tenants t
           LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
           LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm')
          GROUP BY t.public_name, t.schema_name
          ORDER BY {order_by}"
    ))
    .load::<Row>(conn)?
    .into_iter()
    .map(|r| {
        let schema_name = SchemaName::new(&r.schema_name)
            .or_else(|_| SchemaName::internal(&r.schema_name))
            .map_err(|e| {
                diesel::result::Error::DeserializationError(
                    format!(
                        "appschema_tenants row of `{}` holds an invalid schema name: {e}",
                        r.public_name
                    )
                    .into(),
                )
            })?;
        Ok(TenantSize {
            public_name: r.public_name,
            schema_name,
            total_bytes: r.total_bytes,
            rows_estimate: r.rows_estimate,
            relations: r.relations,
        })
    })
    .collect()
}
