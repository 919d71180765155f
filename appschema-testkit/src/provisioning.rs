//! Shared by the provisioning tests: the test application's isolated
//! migrations, catalog snapshots, and the set-up their scenarios start from.

use std::sync::Barrier;

use appschema_core::provision::{
    create_tenant, generate_template, store_template, Created, NewTenant, ProvisionError, Source,
    Template,
};
use appschema_core::{registry, MigrationSet, PublicName, Scope};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

/// A database of its own with the tenant registry installed, and a
/// connection to it.
pub fn db_with_registry() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    (db, conn)
}

/// [`db_with_registry`] with two tenants, `a.test` and `b.test` (schemas
/// `a_test` and `b_test`), built by [`app_migrations`].
pub fn db_with_tenants_a_and_b() -> (TestDb, PgConnection) {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    create_named(&mut conn, &m, "a.test");
    create_named(&mut conn, &m, "b.test");
    (db, conn)
}

/// `name` as a public name (it must be a valid one).
pub fn public_name(name: &str) -> PublicName {
    PublicName::new(name).unwrap()
}

/// A request for the tenant `public_name`, with a derived schema name.
pub fn new_tenant(public_name: &str) -> NewTenant {
    NewTenant::new(public_name).unwrap()
}

/// Creates the tenant `public_name` with a derived schema name.
pub fn create_named(
    conn: &mut PgConnection,
    migrations: &MigrationSet,
    public_name: &str,
) -> Created {
    create_tenant(conn, migrations, &new_tenant(public_name)).unwrap()
}

/// Generates the schema template of `migrations` (pg_dump against `url`)
/// and stores it as the one tenants are built from.
pub fn store_generated_template(
    conn: &mut PgConnection,
    url: &str,
    migrations: &MigrationSet,
) -> Template {
    let template = generate_template(conn, url, migrations).unwrap();
    store_template(conn, &template).unwrap();
    template
}

/// Runs `f` and asserts it left every schema, table and registry row as it
/// found them.
pub fn leaving_the_catalog_unchanged<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> T,
) -> T {
    let before = catalog_snapshot(conn);
    let out = f(conn);
    assert_eq!(catalog_snapshot(conn), before, "nothing of it may remain");
    out
}

/// The error creating `request` fails with, asserting the failed attempt
/// left the catalog as it was.
pub fn refused(
    conn: &mut PgConnection,
    migrations: &MigrationSet,
    request: &NewTenant,
) -> ProvisionError {
    leaving_the_catalog_unchanged(conn, |conn| {
        create_tenant(conn, migrations, request).unwrap_err()
    })
}

/// Creates the tenants `request(0)`, …, `request(threads - 1)` with
/// [`app_migrations`], each on a connection of its own to `url`, all
/// released at once by a barrier; their results in that order.
pub fn create_concurrently(
    url: &str,
    threads: usize,
    request: impl Fn(usize) -> NewTenant + Sync,
) -> Vec<Result<Created, ProvisionError>> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, request) = (&barrier, &request);
                scope.spawn(move || {
                    let mut conn = PgConnection::establish(url).unwrap();
                    let request = request(i);
                    barrier.wait();
                    create_tenant(&mut conn, &app_migrations(), &request)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Asserts that exactly one of `results` succeeded and that every other
/// failed with an error `lost_with` accepts.
pub fn assert_one_won(
    results: &[Result<Created, ProvisionError>],
    lost_with: impl Fn(&ProvisionError) -> bool,
) {
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(matches!(r, Err(e) if lost_with(e)), "{r:?}");
    }
}

/// Six creations of the public name `race.example` by `source` at once, each
/// asking for a schema of its own (`race_0`, …): asserts that one won, that
/// the others were told the name is taken, and that only the winner's
/// schema exists.
pub fn assert_concurrent_creations_of_one_public_name_yield_one_tenant(
    url: &str,
    conn: &mut PgConnection,
    source: Source,
) {
    // Different schemas, same public name: the name decides.
    let results = create_concurrently(url, 6, |i| {
        new_tenant("race.example")
            .schema(&format!("race_{i}"))
            .unwrap()
            .source(source)
    });
    assert_one_won(
        &results,
        |e| matches!(e, ProvisionError::TenantExists { public_name } if public_name == "race.example"),
    );
    let race_schemas = schemas_starting_with(conn, "race_");
    assert_eq!(race_schemas.len(), 1, "{race_schemas:?}");
}

/// A schema `billing` that exists outside the registry, with a table
/// `secrets` holding one row (42).
pub fn create_unregistered_billing_schema(conn: &mut PgConnection) {
    conn.batch_execute(
        "CREATE SCHEMA billing; CREATE TABLE billing.secrets (x int); INSERT INTO billing.secrets VALUES (42);",
    )
    .unwrap();
}

/// An isolated-only migration set from `(version, sql)` pairs.
pub fn isolated(parts: Vec<(String, String)>) -> MigrationSet {
    MigrationSet::from_parts(parts.into_iter().map(|(v, sql)| (v, Scope::Isolated, sql)))
}

/// A row of one text column `value`.
#[derive(QueryableByName, Debug)]
pub struct Row {
    /// The column `value`.
    #[diesel(sql_type = Text)]
    pub value: String,
}

/// The test application's isolated schema: serial and identity columns, a
/// generated column, a foreign key, an index, a trigger, and a function, a
/// default and a comment whose text looks like the template placeholder.
pub fn app_migrations() -> MigrationSet {
    isolated(app_parts())
}

/// [`app_migrations`] without its last migration: what a schema built
/// before that migration was written has.
pub fn app_migrations_but_the_last() -> MigrationSet {
    let mut parts = app_parts();
    parts.pop();
    isolated(parts)
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
    query_strings(
        conn,
        "SELECT 'schema ' || nspname AS value FROM pg_namespace
         UNION ALL
         SELECT 'table ' || schemaname || '.' || tablename FROM pg_tables
         UNION ALL
         SELECT 'tenant ' || public_name || ' ' || schema_name FROM public.appschema_tenants
         UNION ALL
         SELECT 'name ' || public_name FROM public.appschema_public_names
         ORDER BY 1",
    )
}

/// Every schema of the database, by name.
pub fn schemas(conn: &mut PgConnection) -> Vec<String> {
    query_strings(conn, "SELECT nspname AS value FROM pg_namespace ORDER BY 1")
}

/// The `value` column of every row `sql` returns.
pub fn query_strings(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Row>(conn)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect()
}

/// The schemas whose names start with `prefix`.
pub fn schemas_starting_with(conn: &mut PgConnection, prefix: &str) -> Vec<String> {
    schemas(conn)
        .into_iter()
        .filter(|s| s.starts_with(prefix))
        .collect()
}

/// The migration versions recorded in `schema`'s diesel tracking table, in
/// order.
pub fn applied_versions(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    query_strings(
        conn,
        &format!(
            "SELECT version::text AS value FROM {schema}.__diesel_schema_migrations ORDER BY 1"
        ),
    )
}
