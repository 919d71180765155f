//! The configured shared path (`SearchPath`) is the one every part of the
//! library runs tenant SQL on: the pools, `Migrator`, provisioning by every
//! source, and across-tenants work. The scenario: a function and an enum
//! type live in an `extensions` schema; the application's path is
//! `"<tenant>", "public", "extensions"`; the migrations use both unqualified.

use appschema_core::across::AcrossTenants;
use appschema_core::connection::{SearchPath, SharedPool};
use appschema_core::migrate::Migrator;
use appschema_core::provision::{
    clone_tenant, create_tenant, ensure_spares, export_tenant, generate_template, import_tenant,
    store_template, ImportOptions, NewTenant, Source,
};
use appschema_core::{registry, MigrationSet, PublicName, SchemaName, Scope};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

const EXTENSIONS: &str = "CREATE SCHEMA extensions;
CREATE FUNCTION extensions.greet(who text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'hello ' || who $$;
CREATE TYPE extensions.mood AS ENUM ('calm', 'busy');";

fn path() -> SearchPath {
    SearchPath::new().extra_schema("extensions").unwrap()
}

/// A shared and an isolated migration that call `greet` and use `mood`
/// unqualified, on the set carrying the path.
fn migrations() -> MigrationSet {
    MigrationSet::from_parts([
        (
            "0001",
            Scope::Shared,
            "CREATE TABLE plans (id int PRIMARY KEY, label text NOT NULL DEFAULT greet('plan'));
             INSERT INTO plans (id) VALUES (1);",
        ),
        (
            "0002",
            Scope::Isolated,
            "CREATE TABLE notes (id int PRIMARY KEY, mood mood NOT NULL DEFAULT 'calm',
                 greeting text NOT NULL DEFAULT greet('tenant'));",
        ),
    ])
    .with_search_path(path())
}

/// [`migrations`] plus a later isolated migration for existing tenants.
fn migrations_with_a_later_one() -> MigrationSet {
    let mut parts: Vec<(String, Scope, String)> = migrations()
        .migrations()
        .iter()
        .map(|m| (m.version().to_string(), m.scope(), m.up_sql().to_string()))
        .collect();
    parts.push((
        "0003".into(),
        Scope::Isolated,
        "ALTER TABLE notes ADD COLUMN later mood NOT NULL DEFAULT 'busy';
         INSERT INTO notes (id, greeting) VALUES (1, greet('again'));"
            .into(),
    ));
    MigrationSet::from_parts(parts).with_search_path(path())
}

fn db() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.conn();
    conn.batch_execute(EXTENSIONS).unwrap();
    let report = Migrator::new(db.url())
        .search_path(path())
        .jobs(2)
        .migrate(&migrations(), &|_| {})
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    (db, conn)
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

fn text(conn: &mut PgConnection, sql: &str) -> String {
    diesel::sql_query(sql)
        .get_result::<Row>(conn)
        .unwrap()
        .value
}

/// What tenant `schema`'s first note holds, written with the columns'
/// defaults (the migration seeds no rows: a clone copies the source's rows
/// onto the schema its source built, where seeded rows would collide).
fn note(conn: &mut PgConnection, schema: &str) -> String {
    let qs = SchemaName::new(schema).unwrap().quoted();
    conn.batch_execute(&format!(
        "INSERT INTO {qs}.notes (id) VALUES (1) ON CONFLICT (id) DO NOTHING"
    ))
    .unwrap();
    text(
        conn,
        &format!("SELECT mood::text || ' ' || greeting AS value FROM {qs}.notes WHERE id = 1"),
    )
}

#[test]
fn migrate_runs_shared_and_isolated_migrations_on_the_configured_path() {
    let (db, mut conn) = db();
    assert_eq!(
        text(&mut conn, "SELECT label AS value FROM public.plans"),
        "hello plan"
    );
    let set = migrations();
    create_tenant(&mut conn, &set, &NewTenant::new("a.test").unwrap()).unwrap();
    let report = Migrator::new(db.url())
        .search_path(path())
        .jobs(2)
        .migrate(&migrations_with_a_later_one(), &|_| {})
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        text(
            &mut conn,
            "SELECT later::text || ' ' || greeting AS value FROM a_test.notes"
        ),
        "busy hello again"
    );
}

#[test]
fn every_creation_source_builds_a_tenant_on_the_configured_path() {
    let (db, mut conn) = db();
    let set = migrations();
    let created = |conn: &mut PgConnection, name: &str, source: Source| {
        let request = NewTenant::new(name).unwrap().source(source);
        create_tenant(conn, &set, &request)
            .unwrap()
            .tenant
            .schema_name
    };

    let by_migrations = created(&mut conn, "m.test", Source::Migrations);
    assert_eq!(note(&mut conn, by_migrations.as_str()), "calm hello tenant");

    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    store_template(&mut conn, &template).unwrap();
    let by_template = created(&mut conn, "t.test", Source::Template);
    assert_eq!(note(&mut conn, by_template.as_str()), "calm hello tenant");

    assert_eq!(ensure_spares(&mut conn, &set, 1).unwrap(), 1);
    let by_spare = created(&mut conn, "s.test", Source::Spare);
    assert_eq!(note(&mut conn, by_spare.as_str()), "calm hello tenant");

    let source = PublicName::new("m.test").unwrap();
    let clone = clone_tenant(&mut conn, &set, &source, &NewTenant::new("c.test").unwrap()).unwrap();
    assert_eq!(
        note(&mut conn, clone.tenant.schema_name.as_str()),
        "calm hello tenant"
    );

    let mut file = Vec::new();
    export_tenant(&mut conn, db.url(), &source, &mut file, |_| {}).unwrap();
    let options = ImportOptions::new().public_name(PublicName::new("i.test").unwrap());
    let imported = import_tenant(&mut conn, &set, &file[..], &options, |_| {}).unwrap();
    assert_eq!(
        note(&mut conn, imported.tenant.schema_name.as_str()),
        "calm hello tenant"
    );
}

#[test]
fn across_tenants_and_the_pool_run_on_the_configured_path() {
    let (db, mut conn) = db();
    let set = migrations();
    create_tenant(&mut conn, &set, &NewTenant::new("a.test").unwrap()).unwrap();
    create_tenant(&mut conn, &set, &NewTenant::new("b.test").unwrap()).unwrap();
    assert_eq!(note(&mut conn, "a_test"), "calm hello tenant");
    assert_eq!(note(&mut conn, "b_test"), "calm hello tenant");

    let report = AcrossTenants::new(db.url())
        .search_path(path())
        .jobs(2)
        .run_sql(
            "UPDATE notes SET greeting = greet(current_schema()), mood = 'busy'::mood",
            &|_| {},
        )
        .unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(note(&mut conn, "a_test"), "busy hello a_test");
    assert_eq!(note(&mut conn, "b_test"), "busy hello b_test");

    let pool = SharedPool::builder(db.url())
        .search_path(path())
        .max_size(1)
        .build()
        .unwrap();
    let b = registry::find(&mut conn, &PublicName::new("b.test").unwrap())
        .unwrap()
        .unwrap();
    let mut tenant = pool.get_for(&b.schema_name).unwrap();
    assert_eq!(
        text(
            &mut tenant,
            "SELECT greet(mood::text) AS value FROM notes WHERE mood = 'busy'::mood"
        ),
        "hello busy"
    );
}
