//! The harness against a real PostgreSQL: each test database is a fresh copy
//! with its tenants migrated and its pools wired.

use std::sync::LazyLock;

use appschema_core::{MigrationSet, Scope};
use appschema_test::TestDatabase;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

static MIGRATIONS: LazyLock<MigrationSet> = LazyLock::new(|| {
    MigrationSet::from_parts([
        (
            "2024-01-01-000000_plans",
            Scope::Shared,
            "CREATE TABLE public.plans (id bigserial PRIMARY KEY, name text NOT NULL);
             INSERT INTO public.plans (name) VALUES ('free'), ('pro');",
        ),
        (
            "2024-01-02-000000_orders",
            Scope::Isolated,
            "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id int8 NOT NULL REFERENCES public.plans (id), total int8 NOT NULL)",
        ),
    ])
});

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

fn orders(conn: &mut PgConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM orders")
        .get_result::<Count>(conn)
        .unwrap()
        .n
}

const TENANTS: [&str; 3] = [
    "acme.example.com",
    "globex.example.com",
    "initech.example.com",
];

#[test]
fn the_named_tenants_are_ready_each_on_its_own_schema() {
    let db = TestDatabase::builder(&MIGRATIONS).tenants(TENANTS).build();
    let schemas: Vec<&str> = db
        .tenants()
        .iter()
        .map(|t| t.schema_name.as_str())
        .collect();
    assert_eq!(
        schemas,
        [
            "acme_example_com",
            "globex_example_com",
            "initech_example_com"
        ]
    );
    let mut acme = db.conn_for("acme.example.com");
    diesel::sql_query("INSERT INTO orders (plan_id, total) VALUES (1, 10), (2, 20)")
        .execute(&mut *acme)
        .unwrap();
    assert_eq!(orders(&mut acme), 2);
    drop(acme);
    for other in ["globex.example.com", "initech.example.com"] {
        assert_eq!(orders(&mut db.conn_for(other)), 0, "{other}");
    }
    // Unqualified names resolve to the tenant's schema first, then public.
    let schemas = diesel::sql_query("SELECT array_to_string(current_schemas(false), ',') AS value")
        .get_result::<Value>(&mut *db.conn_for("globex.example.com"))
        .unwrap()
        .value;
    assert_eq!(schemas, "globex_example_com,public");
}

#[test]
fn every_test_database_is_a_fresh_copy() {
    let first = TestDatabase::builder(&MIGRATIONS).tenants(TENANTS).build();
    diesel::sql_query("INSERT INTO orders (plan_id, total) VALUES (1, 10)")
        .execute(&mut *first.conn_for("acme.example.com"))
        .unwrap();
    let second = TestDatabase::builder(&MIGRATIONS).tenants(TENANTS).build();
    assert_ne!(first.name(), second.name());
    assert_eq!(orders(&mut second.conn_for("acme.example.com")), 0);
    assert_eq!(orders(&mut first.conn_for("acme.example.com")), 1);
}

#[test]
fn the_resolver_finds_the_tenants_through_the_registry_pool() {
    let db = TestDatabase::builder(&MIGRATIONS)
        .tenants(["acme.example.com"])
        .build();
    let resolver = db.resolver();
    let tenant = resolver.resolve("ACME.example.com:8080").unwrap().unwrap();
    assert_eq!(&tenant, db.tenant("acme.example.com"));
    assert_eq!(resolver.resolve("globex.example.com").unwrap(), None);
}

#[test]
fn create_tenant_claims_a_spare_then_falls_back_to_the_migrations() {
    let db = TestDatabase::builder(&MIGRATIONS).spares(1).build();
    assert!(db.tenants().is_empty());
    let mut conn = db.conn();
    assert_eq!(
        appschema_core::provision::count_spares(&mut conn).unwrap(),
        1
    );
    let hooli = db.create_tenant("hooli.example.com");
    assert_eq!(
        appschema_core::provision::count_spares(&mut conn).unwrap(),
        0
    );
    let pied = db.create_tenant("piedpiper.example.com");
    for tenant in [&hooli, &pied] {
        let mut tenant_conn = db.pool().get_for(&tenant.schema_name).unwrap();
        assert_eq!(orders(&mut tenant_conn), 0);
    }
}

#[test]
fn a_changed_migration_gets_a_template_of_its_own() {
    let mut parts: Vec<(String, Scope, String)> = MIGRATIONS
        .migrations()
        .iter()
        .map(|m| (m.version().to_string(), m.scope(), m.up_sql().to_string()))
        .collect();
    parts.push((
        "2024-01-03-000000_order_notes".into(),
        Scope::Isolated,
        "ALTER TABLE orders ADD COLUMN note text".into(),
    ));
    let changed = MigrationSet::from_parts(parts);
    let db = TestDatabase::builder(&changed)
        .tenants(["acme.example.com"])
        .build();
    diesel::sql_query("INSERT INTO orders (plan_id, total, note) VALUES (1, 1, 'x')")
        .execute(&mut *db.conn_for("acme.example.com"))
        .unwrap();
    let old = TestDatabase::builder(&MIGRATIONS)
        .tenants(["acme.example.com"])
        .build();
    let refused = diesel::sql_query("INSERT INTO orders (plan_id, total, note) VALUES (1, 1, 'x')")
        .execute(&mut *old.conn_for("acme.example.com"));
    assert!(refused.is_err());
}

#[test]
#[should_panic(expected = "no tenant `globex.example.com` here")]
fn asking_for_a_tenant_not_built_names_the_ones_that_were() {
    let db = TestDatabase::builder(&MIGRATIONS)
        .tenants(["acme.example.com"])
        .build();
    db.tenant("globex.example.com");
}

#[test]
fn a_failing_migration_is_reported_not_hidden() {
    let broken = MigrationSet::from_parts([(
        "2024-01-01-000000_broken",
        Scope::Isolated,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, nope nonexistent_type)",
    )]);
    let err = TestDatabase::builder(&broken)
        .tenants(["acme.example.com"])
        .try_build()
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent_type"), "{err}");
}

#[test]
fn concurrent_set_ups_each_get_a_database_of_their_own() {
    let names: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    let db = TestDatabase::builder(&MIGRATIONS).tenants(TENANTS).build();
                    let mut conn = db.conn_for("globex.example.com");
                    assert_eq!(orders(&mut conn), 0);
                    diesel::sql_query(format!(
                        "INSERT INTO orders (plan_id, total) VALUES (1, {i})"
                    ))
                    .execute(&mut *conn)
                    .unwrap();
                    assert_eq!(orders(&mut conn), 1);
                    db.name().to_string()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let distinct: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
}
