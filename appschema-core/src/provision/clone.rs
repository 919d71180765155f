//! Cloning a tenant with its data.

use std::collections::{BTreeMap, BTreeSet};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::create::{create_in, Created, NewTenant};
use super::error::ProvisionError;
use super::migrations::IsolatedMigrations;
use super::util::{has_version, lock_tenant, InvalidateOnReturn};
use crate::name::{quote_ident, quote_literal, PublicName, SchemaName};

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    has_user_triggers: bool,
}

#[derive(QueryableByName)]
struct EdgeRow {
    #[diesel(sql_type = Text)]
    child: String,
    #[diesel(sql_type = Text)]
    parent: String,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Creates tenant `request` as a copy of tenant `source`, data included, in
/// one repeatable-read transaction (a consistent snapshot of the source):
/// the new schema is built at the isolated head (by the request's source:
/// migrations, template or spare), emptied of the seed rows its migrations
/// inserted, then every table's rows are copied in
/// foreign-key order (parents first; the foreign keys among tables in or
/// behind a cycle are dropped for the copy and added back, which checks
/// every row) with the new tables' user triggers disabled during the copy,
/// and every sequence is set to the source's value. The source must be at
/// the head.
///
/// Must not be called inside an open transaction (it sets the isolation level).
pub fn clone_tenant<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    source: &PublicName,
    request: &NewTenant,
) -> Result<Created, ProvisionError> {
    // Resolvers of this process forget cached answers once the change has
    // committed (or failed): see `InvalidateOnReturn`.
    let _invalidate = InvalidateOnReturn;
    let schema = match request.schema_name() {
        Some(s) => s.clone(),
        None => super::derive_schema_name(request.public_name()),
    };
    conn.build_transaction().repeatable_read().run(|conn| {
        let from = lock_tenant(conn, source)?;
        if let Some(head) = migrations.head() {
            if !has_version(conn, &from.schema_name, &head)? {
                return Err(ProvisionError::NotAtHead {
                    public_name: from.public_name.clone(),
                    at: last_version(conn, &from.schema_name)?,
                    head,
                });
            }
        }
        let created = create_in(
            conn,
            migrations,
            request.public_name(),
            &schema,
            request.source_kind(),
        )?;
        copy_data(conn, &from.schema_name, &schema)?;
        request
            .hooks_ref()
            .run(conn, &created.tenant, super::HookStage::AfterCreate)?;
        Ok(created)
    })
}

fn last_version(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<String> {
    diesel::sql_query(format!(
        "SELECT coalesce(max(version), 'none') AS name FROM {}.__diesel_schema_migrations",
        schema.quoted()
    ))
    .get_result::<NameRow>(conn)
    .map(|r| r.name)
}

fn copy_data(
    conn: &mut PgConnection,
    from: &SchemaName,
    to: &SchemaName,
) -> Result<(), ProvisionError> {
    // Tables of the source (partitions are reached through their parent).
    let tables = diesel::sql_query(
        "SELECT c.relname AS name,
                EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                         WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS has_user_triggers
           FROM pg_catalog.pg_class c
          WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p')
            AND NOT c.relispartition AND c.relname <> '__diesel_schema_migrations'
          ORDER BY c.relname",
    )
    .bind::<Text, _>(from.quoted())
    .load::<TableRow>(conn)?;
    let edges = diesel::sql_query(
        "SELECT c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent
           FROM pg_catalog.pg_constraint c
          WHERE c.contype = 'f' AND c.connamespace = $1::regnamespace
            AND c.conrelid <> c.confrelid
            AND (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = c.confrelid) = $1::regnamespace",
    )
    .bind::<Text, _>(from.quoted())
    .load::<EdgeRow>(conn)?;
    let order = fk_order(
        &tables.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        &edges,
        from,
    );
    // Rows of tables in (or behind) a foreign-key cycle cannot be copied
    // parents first: their constraints are dropped in the new schema for
    // the copy and added back after it, which checks every copied row (all
    // in this transaction, so a failure leaves nothing behind). Deferring
    // them would only work for constraints declared DEFERRABLE.
    let suspended = suspend_foreign_keys(conn, to, &order.cyclic)?;
    let triggers: BTreeSet<&str> = tables
        .iter()
        .filter(|t| t.has_user_triggers)
        .map(|t| t.name.as_str())
        .collect();
    for table in &triggers {
        conn.batch_execute(&format!(
            "ALTER TABLE {}.{} DISABLE TRIGGER USER",
            to.quoted(),
            quote_ident(table)
        ))?;
    }
    // The new schema may already hold rows: the ones its migrations (or
    // the template replaying them) inserted. The clone holds the source's
    // rows, no more (with user triggers off, as for the copy).
    if !tables.is_empty() {
        let names: Vec<String> = tables
            .iter()
            .map(|t| format!("{}.{}", to.quoted(), quote_ident(&t.name)))
            .collect();
        conn.batch_execute(&format!("TRUNCATE {}", names.join(", ")))?;
    }
    for table in &order.tables {
        let columns: Vec<String> = diesel::sql_query(
            "SELECT quote_ident(attname) AS name FROM pg_catalog.pg_attribute
              WHERE attrelid = format('%I.%I', $1::text, $2::text)::regclass
                AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
              ORDER BY attnum",
        )
        .bind::<Text, _>(to.as_str())
        .bind::<Text, _>(table)
        .load::<NameRow>(conn)?
        .into_iter()
        .map(|r| r.name)
        .collect();
        if columns.is_empty() {
            continue;
        }
        let columns = columns.join(", ");
        conn.batch_execute(&format!(
            "INSERT INTO {to}.{t} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {from}.{t}",
            to = to.quoted(),
            from = from.quoted(),
            t = quote_ident(table),
        ))?;
    }
    for fk in &suspended {
        conn.batch_execute(&format!(
            "ALTER TABLE {}.{} ADD CONSTRAINT {} {}",
            to.quoted(),
            quote_ident(&fk.table_name),
            quote_ident(&fk.name),
            fk.definition
        ))?;
    }
    for table in &triggers {
        conn.batch_execute(&format!(
            "ALTER TABLE {}.{} ENABLE TRIGGER USER",
            to.quoted(),
            quote_ident(table)
        ))?;
    }
    let sequences = diesel::sql_query(
        "SELECT relname AS name FROM pg_catalog.pg_class
          WHERE relnamespace = $1::regnamespace AND relkind = 'S' ORDER BY relname",
    )
    .bind::<Text, _>(from.quoted())
    .load::<NameRow>(conn)?;
    for seq in sequences {
        let target = quote_literal(&format!("{}.{}", to.quoted(), quote_ident(&seq.name)));
        conn.batch_execute(&format!(
            "SELECT pg_catalog.setval({target}, s.last_value, s.is_called) FROM {from}.{s} s",
            from = from.quoted(),
            s = quote_ident(&seq.name),
        ))?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct ForeignKeyRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

/// Drops the foreign keys of `schema` that run between two different tables
/// of `cyclic`, returning what it takes to add them back as they were
/// (`pg_get_constraintdef` keeps `ON DELETE`, `DEFERRABLE`, `NOT VALID`).
fn suspend_foreign_keys(
    conn: &mut PgConnection,
    schema: &SchemaName,
    cyclic: &[String],
) -> QueryResult<Vec<ForeignKeyRow>> {
    if cyclic.is_empty() {
        return Ok(Vec::new());
    }
    let keys = diesel::sql_query(
        "SELECT child.relname::text AS table_name, c.conname::text AS name,
                pg_catalog.pg_get_constraintdef(c.oid) AS definition
           FROM pg_catalog.pg_constraint c
           JOIN pg_catalog.pg_class child ON child.oid = c.conrelid
           JOIN pg_catalog.pg_class parent ON parent.oid = c.confrelid
          WHERE c.contype = 'f' AND c.conrelid <> c.confrelid
            AND child.relnamespace = $1::regnamespace AND parent.relnamespace = $1::regnamespace
            AND child.relname = ANY ($2) AND parent.relname = ANY ($2)
          ORDER BY child.relname, c.conname",
    )
    .bind::<Text, _>(schema.quoted())
    .bind::<diesel::sql_types::Array<Text>, _>(cyclic)
    .load::<ForeignKeyRow>(conn)?;
    for fk in &keys {
        conn.batch_execute(&format!(
            "ALTER TABLE {}.{} DROP CONSTRAINT {}",
            schema.quoted(),
            quote_ident(&fk.table_name),
            quote_ident(&fk.name)
        ))?;
    }
    Ok(keys)
}

struct Order {
    tables: Vec<String>,
    /// The tables in a cycle or behind one (also at the end of `tables`).
    cyclic: Vec<String>,
}

/// Parents before children (Kahn's algorithm); tables in or behind a cycle come
/// last, in name order.
fn fk_order(tables: &[String], edges: &[EdgeRow], schema: &SchemaName) -> Order {
    // regclass::text qualifies names outside the search_path: strip our schema.
    let bare = |qualified: &str| -> String {
        let prefix = format!("{}.", schema.as_str());
        let quoted_prefix = format!("{}.", schema.quoted());
        let name = qualified
            .strip_prefix(&quoted_prefix)
            .or_else(|| qualified.strip_prefix(&prefix))
            .unwrap_or(qualified);
        match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(q) => q.replace("\"\"", "\""),
            None => name.to_string(),
        }
    };
    let mut parents: BTreeMap<String, BTreeSet<String>> = tables
        .iter()
        .map(|t| (t.clone(), BTreeSet::new()))
        .collect();
    for e in edges {
        let (child, parent) = (bare(&e.child), bare(&e.parent));
        if parents.contains_key(&parent) {
            if let Some(p) = parents.get_mut(&child) {
                p.insert(parent);
            }
        }
    }
    let mut order = Vec::new();
    loop {
        let ready: Vec<String> = parents
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for t in &ready {
            parents.remove(t);
        }
        for p in parents.values_mut() {
            for t in &ready {
                p.remove(t);
            }
        }
        order.extend(ready);
    }
    let cyclic: Vec<String> = parents.into_keys().collect();
    order.extend(cyclic.iter().cloned());
    Order {
        tables: order,
        cyclic,
    }
}
