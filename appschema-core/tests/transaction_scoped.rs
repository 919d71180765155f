//! Transaction-scoped mode: nothing outlives a unit of work, which makes it
//! safe behind PgBouncer in transaction pooling, where session-level
//! `SET search_path` (a per-tenant pool's customizer) leaks to other clients.

use appschema_core::connection::{
    in_tenant_transaction, ConnectionError, SearchPath, TenantCustomizer, TransactionScopedPool,
};
use appschema_core::SchemaName;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{assert_on, bounced, create_tenants, tenant, whoami};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{Builder, ConnectionManager, Pool};

/// A database of its own with `n` tenants.
fn db_with_tenants(n: usize) -> TestDb {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), n);
    db
}

/// The builder of a per-tenant r2d2 pool: its customizer SETs each new
/// connection's session path to `schema`.
fn per_tenant_pool(schema: SchemaName) -> Builder<ConnectionManager<PgConnection>> {
    Pool::builder()
        .connection_customizer(Box::new(TenantCustomizer::new(schema, SearchPath::new())))
}

/// A transaction-scoped pool of at most `max_size` connections to `url`.
fn scoped_pool(url: &str, max_size: u32) -> TransactionScopedPool {
    TransactionScopedPool::builder(url)
        .max_size(max_size)
        .build()
        .unwrap()
}

#[test]
fn behind_pgbouncer_a_session_level_search_path_leaks_to_another_client() {
    let b = bounced(2);
    assert!(!b.bouncer.supports_prepared_statements() || b.bouncer.version() >= (1, 21));
    // A per-tenant pool for t0: its customizer SETs the session's path.
    let t0_pool = per_tenant_pool(tenant(0))
        .max_size(1)
        .build(ConnectionManager::new(b.url()))
        .unwrap();
    let mut t0 = t0_pool.get().unwrap();
    assert_on(&mut t0, "t0");
    // Another application's client, which never asked for any tenant, gets
    // the same backend and with it t0's path and rows.
    let mut other = PgConnection::establish(&b.url()).unwrap();
    let me = whoami(&mut other).unwrap();
    assert_eq!(
        me.marker, "t0",
        "expected the session-level SET to leak through PgBouncer"
    );
}

#[test]
fn behind_pgbouncer_transaction_scoped_units_never_leak() {
    let b = bounced(3);
    let pool_a = scoped_pool(&b.url(), 2);
    let pool_b = scoped_pool(&b.url(), 2);
    let mut bystander = PgConnection::establish(&b.url()).unwrap();
    for round in 0..30 {
        let (pa, pb) = (tenant(round % 3), tenant((round + 1) % 3));
        pool_a
            .transaction_for(&pa, |c| {
                assert_on(c, pa.as_str());
                // Even a session-level SET inside the unit is undone for
                // every later unit, which start with their own SET LOCAL.
                c.batch_execute("SET search_path TO t2")?;
                Ok::<_, ConnectionError>(())
            })
            .unwrap();
        pool_b
            .transaction_for(&pb, |c| {
                assert_on(c, pb.as_str());
                Ok::<_, ConnectionError>(())
            })
            .unwrap();
        // A rolled-back unit.
        let r: Result<(), ConnectionError> = pool_a.transaction_for(&pb, |c| {
            assert_on(c, pb.as_str());
            Err(diesel::result::Error::RollbackTransaction.into())
        });
        assert!(r.is_err());
        let _ = &mut bystander;
    }
    // Outside any unit, a client of the same backend never sees a tenant
    // that a unit set (the session-level SET above is the user's own doing
    // and is excluded by resetting it here, as a bystander would not).
    bystander.batch_execute("RESET search_path").unwrap();
    assert_on(&mut bystander, "public");
    pool_a
        .transaction_shared(|c| {
            assert_on(c, "public");
            Ok::<_, ConnectionError>(())
        })
        .unwrap();
}

#[test]
fn a_unit_of_work_sets_its_tenant_only_for_its_transaction() {
    let db = db_with_tenants(2);
    let mut conn = db.conn();
    let path = SearchPath::new();
    in_tenant_transaction(&mut conn, &tenant(1), &path, |c| {
        assert_on(c, "t1");
        Ok::<_, ConnectionError>(())
    })
    .unwrap();
    // Committed, and the SET LOCAL is gone.
    assert_on(&mut conn, "public");
    let r: Result<(), ConnectionError> = in_tenant_transaction(&mut conn, &tenant(0), &path, |c| {
        assert_on(c, "t0");
        Err(diesel::result::Error::RollbackTransaction.into())
    });
    assert!(r.is_err());
    assert_on(&mut conn, "public");
}

#[test]
fn a_savepoint_rollback_inside_a_unit_returns_to_the_units_tenant() {
    let db = db_with_tenants(3);
    let mut conn = db.conn();
    in_tenant_transaction(&mut conn, &tenant(0), &SearchPath::new(), |c| {
        let inner: QueryResult<()> = c.transaction(|c| {
            c.batch_execute("SET LOCAL search_path TO t1")?;
            assert_on(c, "t1");
            Err(diesel::result::Error::RollbackTransaction)
        });
        assert!(inner.is_err());
        assert_on(c, "t0");
        Ok::<_, ConnectionError>(())
    })
    .unwrap();
    assert_on(&mut conn, "public");
}

#[test]
fn a_unit_inside_an_open_transaction_is_refused() {
    let db = db_with_tenants(2);
    let mut conn = db.conn();
    let path = SearchPath::new();
    conn.transaction(|c| {
        let e = in_tenant_transaction(c, &tenant(1), &path, |_| Ok::<_, ConnectionError>(()))
            .unwrap_err();
        assert!(
            matches!(e, ConnectionError::NestedTransaction { ref schema } if schema == "t1"),
            "{e:?}"
        );
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
}

#[test]
fn a_unit_for_a_missing_schema_fails_naming_it() {
    let db = db_with_tenants(1);
    let pool = scoped_pool(db.url(), 1);
    let ghost = SchemaName::new("ghost").unwrap();
    let e = pool
        .transaction_for(&ghost, |_| Ok::<_, ConnectionError>(()))
        .unwrap_err();
    assert!(matches!(e, ConnectionError::SchemaMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("ghost"));
}

#[test]
fn a_per_tenant_pool_puts_new_connections_on_its_tenant() {
    let db = db_with_tenants(2);
    let pool = per_tenant_pool(tenant(1))
        .max_size(2)
        .build(ConnectionManager::new(db.url()))
        .unwrap();
    for _ in 0..3 {
        assert_on(&mut pool.get().unwrap(), "t1");
    }
    let ghost = per_tenant_pool(SchemaName::new("ghost").unwrap())
        .max_size(1)
        .connection_timeout(std::time::Duration::from_millis(300))
        .build(ConnectionManager::new(db.url()));
    let msg = ghost.unwrap_err().to_string();
    assert!(
        msg.contains("ghost") && msg.contains("does not exist"),
        "{msg}"
    );
}
