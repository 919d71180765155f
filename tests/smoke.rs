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
