//! The plumbing: diesel + r2d2 against a real server.

use appschema_tempdb::TestDb;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::BigInt;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[test]
fn diesel_and_r2d2_reach_a_real_server_and_install_the_registry() {
    let db = TestDb::new();
    let pool = Pool::builder()
        .max_size(3)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    let mut conn = pool.get().unwrap();

    appschema::registry::install(&mut conn).unwrap();
    // Installing again is harmless.
    appschema::registry::install(&mut pool.get().unwrap()).unwrap();

    diesel::sql_query(
        "INSERT INTO appschema_tenants (public_name, schema_name) VALUES ('acme.example.com', 'acme')",
    )
    .execute(&mut conn)
    .unwrap();
    let count: Count = diesel::sql_query("SELECT count(*) AS n FROM public.appschema_tenants")
        .get_result(&mut pool.get().unwrap())
        .unwrap();
    assert_eq!(count.n, 1);
}

#[test]
fn the_registry_finds_tenants_by_any_of_their_names_case_insensitively() {
    use appschema::{registry, PublicName, SchemaName};
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let acme = registry::insert(
        &mut conn,
        &PublicName::new("acme.example.com").unwrap(),
        &SchemaName::new("acme").unwrap(),
    )
    .unwrap();
    registry::add_alias(
        &mut conn,
        &acme,
        &PublicName::new("acme.localhost").unwrap(),
    )
    .unwrap();

    for name in ["ACME.example.com.", "acme.localhost"] {
        let found = registry::find(&mut conn, &PublicName::new(name).unwrap()).unwrap();
        assert_eq!(found.as_ref(), Some(&acme), "{name}");
    }
    assert_eq!(
        registry::find(&mut conn, &PublicName::new("other.com").unwrap()).unwrap(),
        None
    );
    // A name belongs to one tenant only, primary or alias.
    let globex = registry::insert(
        &mut conn,
        &PublicName::new("globex.com").unwrap(),
        &SchemaName::new("globex").unwrap(),
    )
    .unwrap();
    assert!(registry::add_alias(
        &mut conn,
        &globex,
        &PublicName::new("acme.localhost").unwrap()
    )
    .is_err());
}
