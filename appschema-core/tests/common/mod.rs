//! Shared by the provisioning tests: the test application's isolated
//! migrations and catalog snapshots.
#![allow(dead_code)]

use appschema_core::{MigrationSet, Scope};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

/// An isolated-only migration set from `(version, sql)` pairs.
pub fn isolated(parts: Vec<(String, String)>) -> MigrationSet {
    MigrationSet::from_parts(parts.into_iter().map(|(v, sql)| (v, Scope::Isolated, sql)))
}

#[derive(QueryableByName)]
pub struct Row {
    #[diesel(sql_type = Text)]
    pub value: String,
}

/// The test application's isolated schema: serial and identity columns, a
/// generated column, a foreign key, an index, a trigger, and a function, a
/// default and a comment whose text looks like the template placeholder.
pub fn app_migrations() -> MigrationSet {
    isolated(app_parts())
}

/// The `(version, sql)` pairs of [`app_migrations`].
pub fn app_parts() -> Vec<(String, String)> {
    vec![
        (
            "20240101000000".into(),
            "CREATE TABLE customers (
                 id bigserial PRIMARY KEY,
                 name text NOT NULL DEFAULT '__appschema_schema__.customers is not a schema');"
                .into(),
        ),
        (
            "20240102000000".into(),
            r#"CREATE TABLE orders (
                 id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 customer_id bigint NOT NULL REFERENCES customers (id),
                 total numeric NOT NULL,
                 doubled numeric GENERATED ALWAYS AS (total * 2) STORED);
             CREATE INDEX orders_customer ON orders (customer_id);
             CREATE FUNCTION order_label(o orders) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN
                 -- __appschema_schema__ in a comment of a function body
                 RETURN '__appschema_schema__.orders #' || o.id;
             END $$;
             CREATE FUNCTION add_fee() RETURNS trigger LANGUAGE plpgsql AS $fee$
             BEGIN NEW.total := NEW.total + 1000; RETURN NEW; END $fee$;
             CREATE TRIGGER orders_fee BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION add_fee();
             COMMENT ON TABLE orders IS 'orders of __appschema_schema__; "quoted" too';"#
                .into(),
        ),
    ]
}

/// Everything that describes one schema's objects, names unqualified.
pub fn describe_schema(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    let sql = "
        SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || ' notnull=' || a.attnotnull || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
               || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-') AS value
          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p')
        UNION ALL
        SELECT 'index ' || replace(pg_get_indexdef(i.indexrelid), ' ON ' || $2 || '.', ' ON ') FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = $1::regnamespace
        UNION ALL
        SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
         WHERE connamespace = $1::regnamespace
        UNION ALL
        SELECT 'function ' || proname || '(' || pg_get_function_arguments(oid) || ') ' || prosrc FROM pg_proc
         WHERE pronamespace = $1::regnamespace
        UNION ALL
        SELECT 'trigger ' || replace(pg_get_triggerdef(t.oid), ' ON ' || $2 || '.', ' ON ') FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal
        UNION ALL
        SELECT 'sequence ' || relname FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'S'
        UNION ALL
        SELECT 'comment ' || c.relname || ' ' || obj_description(c.oid, 'pg_class') FROM pg_class c
         WHERE c.relnamespace = $1::regnamespace AND obj_description(c.oid, 'pg_class') IS NOT NULL
        ORDER BY 1";
    conn.transaction(|conn| {
        conn.batch_execute(&format!(
            "SET LOCAL search_path = {}",
            appschema_core::quote_ident(schema)
        ))?;
        diesel::sql_query(sql)
            .bind::<Text, _>(appschema_core::quote_ident(schema))
            .bind::<Text, _>(schema)
            .load::<Row>(conn)
    })
    .unwrap()
    .into_iter()
    .map(|r| r.value)
    .collect()
}

/// Every schema, table and registry row of the database.
pub fn catalog_snapshot(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query(
        "SELECT 'schema ' || nspname AS value FROM pg_namespace
         UNION ALL
         SELECT 'table ' || schemaname || '.' || tablename FROM pg_tables
         UNION ALL
         SELECT 'tenant ' || public_name || ' ' || schema_name FROM public.appschema_tenants
         UNION ALL
         SELECT 'name ' || public_name FROM public.appschema_public_names
         ORDER BY 1",
    )
    .load::<Row>(conn)
    .unwrap()
    .into_iter()
    .map(|r| r.value)
    .collect()
}

pub fn schemas(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query("SELECT nspname AS value FROM pg_namespace ORDER BY 1")
        .load::<Row>(conn)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect()
}

pub fn query_strings(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Row>(conn)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect()
}
