//! Recorded heads: "is anything pending?" answered from one table instead of
//! every tenant's tracking table.
//!
//! Reading 10,000 tracking tables costs PostgreSQL 10,000 relation opens
//! (about 0.6 s quietly, see the `applied` module), and that is the floor of
//! reading them at all. So `public.appschema_heads` keeps, per schema, a
//! digest of what its tracking table holds (md5 of its versions in byte
//! order, joined by `,`) and the tracking table's OID:
//!
//! - **Never more than the table holds.** A record digests the versions a
//!   schema was read to hold (committed rows) plus those appschema's own
//!   transactions inserted *and committed*; appschema deletes a tracking
//!   row only in a revert ([`super::Migrator::revert`]), which first deletes
//!   the records of the schemas it reverts (and records them anew as they
//!   finish), so a record never claims a version its tracking table
//!   lacks. A schema built inside the caller's transaction
//!   ([`super::migrate_schema_in_transaction`]) is recorded in that same
//!   transaction. `migrate` writes the records of the schemas it migrated
//!   right after their transactions commit, 200 to a statement: a record
//!   written inside each tenant's migration transaction cost 0.09 ms of
//!   server time per tenant (measured: a cheap `ADD COLUMN` batch went from
//!   0.16 to 0.26 ms), a quarter of a 10,000-tenant deploy's time, and bought
//!   nothing more: a run killed between a commit and its record leaves the
//!   older record, which claims less, so the next run reads that schema.
//! - **Trusted only when it matches.** A schema is *current* when its record
//!   names the same tracking table (same schema name, same OID: a table
//!   dropped and re-created, or a schema restored or renamed by other means,
//!   has another) and its digest is the digest of the set's isolated
//!   versions. Everything else (no record: a schema migrated by an older
//!   appschema or created by a template, a clone, an import; a record of
//!   fewer versions; another table) is read as before.
//! - **Healed by reading.** When `migrate` has to read a tracking table it
//!   records what it read ([`heal`]), so the next run trusts it. A record
//!   written from a read claims at most what the table held at the read;
//!   outside a revert appschema only adds versions, so at most what it
//!   holds now (a `migrate` reading while a revert runs could record a
//!   version the revert then deletes: do not run them at once).
//!
//! What the record cannot see: a tracking row *deleted* by something other
//! than appschema (diesel CLI's `migration revert` on a tenant schema, a
//! hand-written `DELETE`). After such a change, run `migrate --recheck`
//! ([`super::Migrator::recheck`]), which reads every tracking table and
//! records it anew.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

use super::applied::Versions;
use super::TRACKING_TABLE;
use crate::name::{quote_ident, quote_literal};

/// The table of recorded heads (appschema's own migration `0004_heads`).
pub(crate) const HEADS_TABLE: &str = "public.appschema_heads";

/// The text whose md5 is the digest of `versions`: byte order (a
/// `BTreeSet<String>` iterates in it; PostgreSQL's `COLLATE "C"` sorts in
/// it), joined by `,`.
pub(super) fn digest_input<'a>(versions: impl IntoIterator<Item = &'a String>) -> String {
    let mut out = String::new();
    for (i, v) in versions.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(v);
    }
    out
}

/// A head to record: the schema, its tracking table's OID when known (else
/// looked up by name as the record is written), and the [`digest_input`]
/// of the versions it holds.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) schema: String,
    pub(crate) oid: Option<i64>,
    pub(crate) input: String,
}

impl Record {
    /// The record of `schema` holding `versions`, its tracking table looked
    /// up by name as it is written.
    pub(super) fn holding<'a>(
        schema: &str,
        versions: impl IntoIterator<Item = &'a String>,
    ) -> Record {
        Record {
            schema: schema.to_string(),
            oid: None,
            input: digest_input(versions),
        }
    }
}

/// One statement writing `records` (each replacing the schema's previous
/// record); `None` for none. Needs [`HEADS_TABLE`]. Reads no tracking
/// table: on Citus, where those live on workers, it is a plain insert into
/// the coordinator's table, and the OIDs are the coordinator's, which the
/// check reads.
pub(crate) fn upsert_sql(records: &[Record]) -> Option<String> {
    if records.is_empty() {
        return None;
    }
    let values: Vec<String> = records
        .iter()
        .map(|r| {
            let oid = match r.oid {
                Some(oid) => format!("{oid}::oid"),
                None => format!(
                    "{}::regclass::oid",
                    quote_literal(&format!("{}.{TRACKING_TABLE}", quote_ident(&r.schema)))
                ),
            };
            format!(
                "({}, {oid}, md5({}))",
                quote_literal(&r.schema),
                quote_literal(&r.input)
            )
        })
        .collect();
    Some(format!(
        "INSERT INTO {HEADS_TABLE} (schema_name, tracking_oid, digest) VALUES {} \
         ON CONFLICT (schema_name) DO UPDATE \
            SET tracking_oid = EXCLUDED.tracking_oid, digest = EXCLUDED.digest, recorded_at = now()",
        values.join(", ")
    ))
}

/// Writes `records` ([`upsert_sql`]), at most [`PER_STATEMENT`] per
/// statement.
pub(super) fn write(conn: &mut PgConnection, records: &[Record]) -> QueryResult<()> {
    for chunk in records.chunks(PER_STATEMENT) {
        if let Some(sql) = upsert_sql(chunk) {
            diesel::sql_query(sql).execute(conn)?;
        }
    }
    Ok(())
}

/// Records written per statement.
pub(super) const PER_STATEMENT: usize = 200;

/// The schemas with a tracking table, which of them are current (their
/// record matches the expected digest), and their tracking tables' OIDs.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// Every schema with a tracking table.
    pub(super) all: BTreeSet<String>,
    /// Those whose recorded head is the expected one.
    pub(super) current: BTreeSet<String>,
    /// Each tracking table's OID, for [`heal`].
    pub(super) oids: HashMap<String, i64>,
}

/// One catalog query: every schema with a tracking table and, when
/// `expected` is given (the digest input of the isolated versions) and the
/// heads table exists, which of them are current.
pub(super) fn tracked(conn: &mut PgConnection, expected: Option<&str>) -> QueryResult<Tracked> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        nspname: String,
        #[diesel(sql_type = BigInt)]
        oid: i64,
        #[diesel(sql_type = Bool)]
        current: bool,
    }
    // With a usable expectation, each tracking table's record is joined in;
    // without, no schema is current.
    let (current, join) = match expected {
        Some(expected) if heads_installed(conn)? => (
            format!(
                "coalesce(h.tracking_oid = c.oid AND h.digest = md5({}), false)",
                quote_literal(expected)
            ),
            format!("LEFT JOIN {HEADS_TABLE} h ON h.schema_name = n.nspname::text"),
        ),
        _ => ("false".to_string(), String::new()),
    };
    let rows = diesel::sql_query(format!(
        "SELECT n.nspname::text AS nspname, c.oid::int8 AS oid, {current} AS current
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           {join}
          WHERE c.relname = '__diesel_schema_migrations' AND c.relkind IN ('r', 'p')"
    ))
    .load::<Row>(conn)?;
    let mut out = Tracked::default();
    for row in rows {
        if row.current {
            out.current.insert(row.nspname.clone());
        }
        out.oids.insert(row.nspname.clone(), row.oid);
        out.all.insert(row.nspname);
    }
    Ok(out)
}

/// Whether [`HEADS_TABLE`] exists (a database `migrate` has not run on
/// since appschema began recording heads has none).
pub(super) fn heads_installed(conn: &mut PgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Nullable<Text>)]
        table: Option<String>,
    }
    Ok(diesel::sql_query(format!(
        "SELECT to_regclass('{HEADS_TABLE}')::text AS table"
    ))
    .get_result::<Exists>(conn)?
    .table
    .is_some())
}

/// Records what a read found: each schema's versions, under the OID its
/// tracking table had when the run began. A table since replaced has
/// another OID, so its record will not be trusted.
pub(super) fn heal(
    conn: &mut PgConnection,
    read: &[(String, Versions)],
    oids: &HashMap<String, i64>,
) -> QueryResult<()> {
    let records: Vec<Record> = read
        .iter()
        .filter_map(|(schema, versions)| {
            Some(Record {
                schema: schema.clone(),
                oid: Some(*oids.get(schema)?),
                input: digest_input(versions),
            })
        })
        .collect();
    write(conn, &records)
}

/// Deletes the records of schemas that no longer have a tracking table
/// (dropped, renamed): they could never match, and are only clutter.
pub(super) fn forget_gone(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query(format!(
        "DELETE FROM {HEADS_TABLE} h
          WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                             WHERE c.oid = h.tracking_oid AND n.nspname::text = h.schema_name)"
    ))
    .execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_input_is_the_versions_in_byte_order_joined_by_commas() {
        let versions: Versions = ["2024-01-02-000000", "00001", "2023_x"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(digest_input(&versions), "00001,2023_x,2024-01-02-000000");
        assert_eq!(digest_input(&Versions::new()), "");
    }

    #[test]
    fn records_quote_the_schema_and_the_versions() {
        let record = |oid| Record {
            schema: "we\"ird'name".into(),
            oid,
            input: "1,2'".into(),
        };
        let sql = upsert_sql(&[record(None), record(Some(42))]).unwrap();
        assert!(
            sql.contains(
                "VALUES ('we\"ird''name', '\"we\"\"ird''name\".__diesel_schema_migrations'::regclass::oid, md5('1,2''')), \
                 ('we\"ird''name', 42::oid, md5('1,2'''))"
            ),
            "{sql}"
        );
        assert!(upsert_sql(&[]).is_none());
    }
}
