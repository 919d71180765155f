//! Tables in both scopes (`#[appschema::both]`): their migrations run in the
//! shared schema and in every tenant, every way of building a tenant gives it
//! its own copy, and the same unqualified query reads the tenant's copy on a
//! tenant connection and the shared one on a shared connection.

use appschema_core::provision::{
    clone_tenant, create_tenant, ensure_spares, export_tenant, generate_template, import_tenant,
    store_template, ImportOptions, NewTenant, Source,
};
use appschema_core::{registry, MigrationSet, Migrator, PublicName, SchemaName, Scope, SharedPool};
use appschema_tempdb::TestDb;
use appschema_testkit::provisioning::query_strings;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

// What `#[appschema::both]` emits for this table: unqualified.
diesel::table! { settings (key) { key -> Text, value -> Text } }

fn first_set() -> Vec<(&'static str, Scope, &'static str)> {
    vec![
        (
            "1",
            Scope::Shared,
            "CREATE TABLE plans (id int PRIMARY KEY)",
        ),
        (
            "2",
            Scope::Isolated,
            "CREATE TABLE orders (id int PRIMARY KEY)",
        ),
    ]
}

fn full_set() -> MigrationSet {
    let mut parts = first_set();
    parts.push((
        "3",
        Scope::Both,
        "CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
         INSERT INTO settings VALUES ('greeting', 'default');",
    ));
    // An isolated table referencing the both-scope one: its tenant's copy.
    parts.push((
        "4",
        Scope::Isolated,
        "ALTER TABLE orders ADD setting text REFERENCES settings (key)",
    ));
    MigrationSet::from_parts(parts)
}

fn name(n: &str) -> PublicName {
    PublicName::new(n).unwrap()
}

fn create(conn: &mut PgConnection, set: &MigrationSet, public: &str, source: Source) -> SchemaName {
    create_tenant(conn, set, &NewTenant::new(public).unwrap().source(source))
        .unwrap()
        .tenant
        .schema_name
}

fn greeting(conn: &mut PgConnection) -> String {
    settings::table
        .find("greeting")
        .select(settings::value)
        .first(conn)
        .unwrap()
}

fn migrate(db: &TestDb, set: &MigrationSet) {
    let report = Migrator::new(db.url())
        .jobs(2)
        .migrate(set, &|_| {})
        .unwrap();
    assert!(report.is_success(), "{report:?}");
}

#[test]
fn a_both_scope_table_has_a_shared_copy_and_one_per_tenant_built_every_way() {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let first = MigrationSet::from_parts(first_set());
    migrate(&db, &first);
    // A tenant that exists before the both-scope migration: `migrate` gives it its copy.
    let early = create(&mut conn, &first, "early.test", Source::Migrations);

    let set = full_set();
    migrate(&db, &set);
    assert!(
        Migrator::new(db.url()).plan(&set).unwrap().is_empty(),
        "nothing pending in either timeline"
    );
    let by_migrations = create(&mut conn, &set, "m.test", Source::Migrations);
    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    store_template(&mut conn, &template).unwrap();
    let by_template = create(&mut conn, &set, "t.test", Source::Template);
    assert_eq!(ensure_spares(&mut conn, &set, 1).unwrap(), 1);
    let by_spare = create(&mut conn, &set, "s.test", Source::Spare);
    let by_clone = clone_tenant(
        &mut conn,
        &set,
        &name("m.test"),
        &NewTenant::new("c.test").unwrap(),
    )
    .unwrap()
    .tenant
    .schema_name;
    let mut exported = Vec::new();
    export_tenant(&mut conn, db.url(), &name("t.test"), &mut exported, |_| {}).unwrap();
    let by_import = import_tenant(
        &mut conn,
        &set,
        &exported[..],
        &ImportOptions::new()
            .public_name(name("i.test"))
            .schema(SchemaName::new("i_test").unwrap()),
        |_| {},
    )
    .unwrap()
    .tenant
    .schema_name;

    let tenants = [
        early,
        by_migrations,
        by_template,
        by_spare,
        by_clone,
        by_import,
    ];
    for schema in &tenants {
        // The seed row of the both-scope migration is in every tenant's copy.
        assert_eq!(
            query_strings(
                &mut conn,
                &format!("SELECT value AS value FROM {schema}.settings")
            ),
            ["default"],
            "{schema} has its own copy, seeded"
        );
        // The isolated table's foreign key resolves to the tenant's copy.
        assert_eq!(
            query_strings(
                &mut conn,
                &format!(
                    "SELECT n.nspname::text AS value FROM pg_constraint c
                       JOIN pg_class t ON t.oid = c.confrelid JOIN pg_namespace n ON n.oid = t.relnamespace
                      WHERE c.conrelid = '{schema}.orders'::regclass AND c.contype = 'f'"
                )
            ),
            [schema.as_str()],
        );
        conn.batch_execute(&format!(
            "UPDATE {schema}.settings SET value = 'tenant {schema}'"
        ))
        .unwrap();
    }
    assert_eq!(
        query_strings(&mut conn, "SELECT value AS value FROM public.settings"),
        ["default"],
        "the shared copy ran the both-scope migration once"
    );
    conn.batch_execute("UPDATE public.settings SET value = 'shared'")
        .unwrap();

    let pool = SharedPool::builder(db.url()).max_size(2).build().unwrap();
    for schema in &tenants {
        assert_eq!(
            greeting(&mut pool.get_for(schema).unwrap()),
            format!("tenant {schema}"),
            "a tenant connection reads its tenant's copy"
        );
        assert_eq!(
            greeting(&mut pool.get_shared().unwrap()),
            "shared",
            "a shared connection reads the shared copy"
        );
    }
}
