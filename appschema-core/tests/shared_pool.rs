//! The shared pool hands out connections on the right tenant's path, and
//! nothing a user does during one checkout reaches the next.

mod support;

use std::time::Duration;

use appschema_core::connection::{ConnectionError, SharedPool};
use appschema_core::SchemaName;
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use support::{assert_on, backend_pid, create_tenants, tenant, whoami};

/// One connection, so every checkout reuses the previous one's backend.
fn single_connection_pool(db: &TestDb) -> SharedPool {
    SharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn setup(n: usize) -> (TestDb, SharedPool) {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), n);
    let pool = single_connection_pool(&db);
    (db, pool)
}

/// A database of its own, set up by `sql` alone (no tenant registry).
fn db_set_up_by(sql: &str) -> TestDb {
    let db = TestDb::new();
    db.conn().batch_execute(sql).unwrap();
    db
}

/// Checks out a connection for each of `tenants` in turn and asserts it is
/// that tenant's, on that tenant's path.
fn assert_each_checkout_on_its_tenant(pool: &SharedPool, tenants: impl IntoIterator<Item = usize>) {
    for i in tenants {
        let mut conn = pool.get_for(&tenant(i)).unwrap();
        assert_eq!(conn.tenant(), Some(&tenant(i)));
        assert_on(&mut conn, &format!("t{i}"));
    }
}

#[test]
fn a_checkout_for_a_tenant_is_on_that_tenants_path_and_shared_work_on_public() {
    let (_db, pool) = setup(3);
    assert_each_checkout_on_its_tenant(&pool, [0, 1, 2, 1, 0]);
    let mut conn = pool.get_shared().unwrap();
    assert_on(&mut conn, "public");
    assert_eq!(conn.tenant(), None);
}

#[test]
fn the_search_path_holds_the_tenant_then_the_shared_schema_then_extras() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    db.conn().batch_execute("CREATE SCHEMA ext").unwrap();
    let path = appschema_core::SearchPath::new()
        .extra_schema("ext")
        .unwrap();
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .search_path(path)
        .build()
        .unwrap();
    #[derive(QueryableByName)]
    struct Path {
        #[diesel(sql_type = diesel::sql_types::Text)]
        search_path: String,
    }
    let mut conn = pool.get_for(&tenant(0)).unwrap();
    let p: Path = diesel::sql_query("SHOW search_path")
        .get_result(&mut *conn)
        .unwrap();
    assert_eq!(p.search_path, "t0, public, ext");
}

/// `state()` is appschema's `PoolState`; with the default `min_idle` (0)
/// `build` opens no connection, with `min_idle(n)` it returns with `n` open
/// (the async pool's `appschema-async/tests/async_pool.rs` twin).
#[test]
fn state_counts_open_idle_and_checked_out_connections_and_min_idle_opens_ahead() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    let pool = SharedPool::builder(db.url()).max_size(3).build().unwrap();
    let s = pool.state();
    assert_eq!(
        (s.connections, s.idle, s.waiting, s.max_size),
        (0, 0, None, 3)
    );
    let a = pool.get_for(&tenant(0)).unwrap();
    let b = pool.get_shared().unwrap();
    let s = pool.state();
    assert_eq!((s.connections, s.idle, s.in_use()), (2, 0, 2));
    drop((a, b));
    let s = pool.state();
    assert_eq!((s.connections, s.idle, s.in_use()), (2, 2, 0));

    let warm = SharedPool::builder(db.url())
        .max_size(3)
        .min_idle(2)
        .build()
        .unwrap();
    let s = warm.state();
    assert_eq!((s.connections, s.idle), (2, 2));
}

#[test]
fn a_public_name_resolves_through_the_registry() {
    let (_db, pool) = setup(2);
    let mut conn = pool.get_for_public_name("T1.Example.COM.").unwrap();
    assert_on(&mut conn, "t1");
}

#[test]
fn set_search_path_reset_all_and_discard_all_in_user_code_do_not_reach_the_next_checkout() {
    let (_db, pool) = setup(3);
    for statement in [
        "SET search_path TO t1",
        "SET search_path TO public",
        "RESET ALL",
        "RESET search_path",
        "DISCARD ALL",
        "BEGIN; SET search_path TO t1; COMMIT",
    ] {
        {
            let mut conn = pool.get_for(&tenant(0)).unwrap();
            assert_on(&mut conn, "t0");
            conn.batch_execute(statement).unwrap();
        }
        // The same backend again (max_size 1), for the same tenant: a pool
        // that skipped the switch because "it is already on t0" would leak.
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        assert_on(&mut conn, "t0");
        drop(conn);
        let mut conn = pool.get_for(&tenant(2)).unwrap();
        assert_on(&mut conn, "t2");
    }
}

#[test]
fn a_rolled_back_transaction_that_changed_the_path_leaks_nothing() {
    let (_db, pool) = setup(3);
    {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        let r: QueryResult<()> = conn.transaction(|c| {
            c.batch_execute("SET search_path TO t1")?;
            assert_on(c, "t1");
            Err(diesel::result::Error::RollbackTransaction)
        });
        assert!(r.is_err());
        // PostgreSQL undid the SET with the transaction.
        assert_on(&mut conn, "t0");
    }
    assert_each_checkout_on_its_tenant(&pool, [1, 0, 2]);
}

#[test]
fn a_savepoint_rollback_leaks_nothing() {
    let (_db, pool) = setup(3);
    {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        conn.transaction(|c| {
            c.batch_execute("SET search_path TO t1")?;
            let inner: QueryResult<()> = c.transaction(|c| {
                c.batch_execute("SET search_path TO t2")?;
                assert_on(c, "t2");
                Err(diesel::result::Error::RollbackTransaction)
            });
            assert!(inner.is_err());
            // Back to what the outer transaction set, not to the checkout's.
            assert_on(c, "t1");
            Ok::<_, diesel::result::Error>(())
        })
        .unwrap();
        // The outer transaction committed its session-level SET.
        assert_on(&mut conn, "t1");
    }
    assert_each_checkout_on_its_tenant(&pool, [0, 2, 0]);
}

#[test]
fn a_panic_while_a_connection_is_checked_out_leaks_nothing() {
    let (_db, pool) = setup(3);
    let p = pool.clone();
    let first_pid = std::thread::spawn(move || {
        let mut conn = p.get_for(&tenant(0)).unwrap();
        let pid = backend_pid(&mut conn);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            conn.batch_execute("BEGIN; SET search_path TO t1").unwrap();
            panic!("handler bug");
        }));
        assert!(r.is_err());
        pid
    })
    .join()
    .unwrap();
    let mut conn = pool.get_for(&tenant(2)).unwrap();
    assert_on(&mut conn, "t2");
    assert_ne!(
        backend_pid(&mut conn),
        first_pid,
        "a connection dropped during a panic was reused"
    );
}

#[test]
fn a_backend_killed_mid_checkout_is_replaced() {
    let (db, pool) = setup(2);
    let mut admin = db.conn();
    {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        let pid = backend_pid(&mut conn);
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(whoami(&mut conn).is_err(), "the backend should be gone");
    }
    // The dead connection is in the pool (diesel's transaction state looked
    // fine); the checkout's switch finds it dead and opens another.
    let mut conn = pool.get_for(&tenant(1)).unwrap();
    assert_on(&mut conn, "t1");
}

mod shapes {
    diesel::table! { shapes (id) { id -> Int8, v -> Text } }
}

/// `v` of row 1 of `shapes`, as a statement diesel prepares and caches.
fn load(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    shapes::shapes::table
        .select(shapes::shapes::v)
        .filter(shapes::shapes::id.eq(1))
        .load::<String>(conn)
}

/// Checks out a connection for `schema`, asserts it is backend `pid` and
/// that PostgreSQL refuses the cached `load` statement on it.
fn assert_cached_load_refused(pool: &SharedPool, schema: &SchemaName, pid: i32) {
    let mut conn = pool.get_for(schema).unwrap();
    assert_eq!(backend_pid(&mut conn), pid);
    let err = load(&mut conn).unwrap_err().to_string();
    assert!(
        err.contains("cached plan must not change result type"),
        "{err}"
    );
}

#[test]
fn a_statement_prepared_for_one_tenant_never_returns_its_rows_to_another() {
    let db = db_set_up_by(
        "CREATE SCHEMA sa; CREATE TABLE sa.shapes (id int8 PRIMARY KEY, v text);
         INSERT INTO sa.shapes VALUES (1, 'from sa');
         CREATE SCHEMA sb; CREATE TABLE sb.shapes (id int8 PRIMARY KEY, v int4);
         INSERT INTO sb.shapes VALUES (1, 7);
         CREATE SCHEMA sc; CREATE TABLE sc.shapes (id int8 PRIMARY KEY, v text);
         INSERT INTO sc.shapes VALUES (1, 'from sc');",
    );
    let pool = single_connection_pool(&db);
    let [sa, sb, sc] = ["sa", "sb", "sc"].map(|s| SchemaName::new(s).unwrap());
    // Prepared (and cached by diesel) while on sa.
    let pid = {
        let mut conn = pool.get_for(&sa).unwrap();
        assert_eq!(load(&mut conn).unwrap(), ["from sa"]);
        backend_pid(&mut conn)
    };
    // Same statement, same backend, tenant with the same shape: re-planned
    // for sc's table.
    {
        let mut conn = pool.get_for(&sc).unwrap();
        assert_eq!(backend_pid(&mut conn), pid);
        assert_eq!(load(&mut conn).unwrap(), ["from sc"]);
    }
    // Tenant whose table has another shape: a clear error, not sa's rows.
    assert_cached_load_refused(&pool, &sb, pid);
    // And the pool still serves the original tenant correctly (on a new
    // connection: the refused one was closed when it came back).
    let mut conn = pool.get_for(&sa).unwrap();
    assert_eq!(load(&mut conn).unwrap(), ["from sa"]);
}

/// The deploy hazard: a migration changes a column's type while the pool
/// holds connections with the old statement cached. Each connection must
/// fail that query at most once, not until it reaches its maximum lifetime.
#[test]
fn a_connection_whose_cached_statement_went_stale_fails_once_then_is_replaced() {
    let db = db_set_up_by(
        "CREATE SCHEMA sa; CREATE TABLE sa.shapes (id int8 PRIMARY KEY, v varchar(20));
         INSERT INTO sa.shapes VALUES (1, 'from sa');",
    );
    let pool = single_connection_pool(&db);
    let sa = SchemaName::new("sa").unwrap();
    let pid = {
        let mut conn = pool.get_for(&sa).unwrap();
        assert_eq!(load(&mut conn).unwrap(), ["from sa"]);
        backend_pid(&mut conn)
    };
    // The migration: varchar -> text (diesel reads both as Text, but the
    // cached statement's result type changed).
    db.conn()
        .batch_execute("ALTER TABLE sa.shapes ALTER COLUMN v TYPE text")
        .unwrap();
    assert_cached_load_refused(&pool, &sa, pid);
    // Returned after that error, the connection was closed: the next
    // checkout runs the query on a new backend, which prepares it afresh.
    let mut conn = pool.get_for(&sa).unwrap();
    assert_ne!(
        backend_pid(&mut conn),
        pid,
        "the stale connection was reused"
    );
    assert_eq!(load(&mut conn).unwrap(), ["from sa"]);
}

#[test]
fn without_the_statement_cache_a_reshaped_table_is_simply_read() {
    let db = db_set_up_by(
        "CREATE SCHEMA sa; CREATE TABLE sa.shapes (id int8 PRIMARY KEY, v text);
         INSERT INTO sa.shapes VALUES (1, 'from sa');
         CREATE SCHEMA sb; CREATE TABLE sb.shapes (v text, extra int4, id int8 PRIMARY KEY);
         INSERT INTO sb.shapes VALUES ('from sb', 7, 1);",
    );
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .prepared_statement_cache(false)
        .build()
        .unwrap();
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Shape {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    for (schema, expected) in [("sa", "from sa"), ("sb", "from sb"), ("sa", "from sa")] {
        let mut conn = pool.get_for(&SchemaName::new(schema).unwrap()).unwrap();
        let rows: Vec<Shape> = diesel::sql_query("SELECT * FROM shapes")
            .load(&mut *conn)
            .unwrap();
        assert_eq!(rows, [Shape { v: expected.into() }]);
    }
}

#[test]
fn errors_name_the_tenant_and_are_distinct() {
    let (db, pool) = setup(1);
    let e = pool.get_for_public_name("nobody.example.com").unwrap_err();
    assert!(matches!(e, ConnectionError::UnknownTenant { .. }), "{e:?}");
    assert!(e.to_string().contains("nobody.example.com"), "{e}");

    let e = pool.get_for_public_name("bad name!").unwrap_err();
    assert!(matches!(e, ConnectionError::InvalidName { .. }), "{e:?}");
    assert!(e.to_string().contains("bad name!"), "{e}");
    // The rule broken is in the message; it is not a `source()` as well, so
    // a chain printed whole (`{:#}` of anyhow) does not say it twice.
    assert!(std::error::Error::source(&e).is_none(), "{e}");

    let ghost = SchemaName::new("ghost").unwrap();
    let e = pool.get_for(&ghost).unwrap_err();
    assert!(matches!(e, ConnectionError::SchemaMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("ghost"), "{e}");
    // The refused checkout did not poison the pool.
    assert_on(&mut pool.get_for(&tenant(0)).unwrap(), "t0");

    let short = SharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let held = short.get_for(&tenant(0)).unwrap();
    let e = short.get_for(&tenant(0)).unwrap_err();
    assert!(matches!(e, ConnectionError::PoolExhausted { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("t0") && msg.contains("300ms"), "{msg}");
    drop(held);

    let down = SharedPool::builder("postgres://postgres@/nowhere?host=/nonexistent&port=1")
        .max_size(1)
        .min_idle(0)
        .connection_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let e = down.get_for(&tenant(0)).unwrap_err();
    assert!(matches!(e, ConnectionError::DatabaseDown { .. }), "{e:?}");
    assert!(e.to_string().contains("t0"), "{e}");
}

/// Raw transaction-control statements a handler might leave open when it
/// returns its connection (diesel does not see them).
const LEFT_OPEN: [&str; 4] = [
    "BEGIN",
    "BEGIN; SELECT 1",
    "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
    "BEGIN; INSERT INTO items VALUES (1000, 'written')",
];

#[test]
fn a_raw_begin_left_open_never_lets_a_later_rollback_restore_the_previous_tenant() {
    let (_db, pool) = setup(2);
    for statement in LEFT_OPEN {
        let first_pid = {
            let mut conn = pool.get_for(&tenant(0)).unwrap();
            conn.batch_execute(statement).unwrap();
            backend_pid(&mut conn)
        };
        // The next checkout is for another tenant; its user rolls back
        // "whatever was open" and reads.
        let mut conn = pool.get_for(&tenant(1)).unwrap();
        assert_on(&mut conn, "t1");
        conn.batch_execute("ROLLBACK").unwrap();
        assert_on(&mut conn, "t1");
        assert_ne!(
            backend_pid(&mut conn),
            first_pid,
            "a connection returned inside `{statement}` was handed out again"
        );
    }
}

#[test]
fn ordinary_checkouts_keep_their_connection_so_the_open_transaction_check_has_no_false_alarms() {
    let (_db, pool) = setup(3);
    let pid = backend_pid(&mut pool.get_shared().unwrap());
    for k in 0..300 {
        let mut conn = pool.get_for(&tenant(k % 3)).unwrap();
        assert_on(&mut conn, &format!("t{}", k % 3));
        if k % 2 == 0 {
            conn.transaction(|c| assert_on_ok(c, &format!("t{}", k % 3)))
                .unwrap();
        }
        assert_eq!(
            backend_pid(&mut conn),
            pid,
            "checkout {k} replaced the connection"
        );
    }
}

fn assert_on_ok(conn: &mut PgConnection, expected: &str) -> QueryResult<()> {
    assert_on(conn, expected);
    Ok(())
}

#[derive(QueryableByName)]
struct ServerPath {
    #[diesel(sql_type = diesel::sql_types::Text)]
    search_path: String,
}

fn server_path(conn: &mut PgConnection) -> String {
    diesel::sql_query("SELECT pg_catalog.current_setting('search_path') AS search_path")
        .get_result::<ServerPath>(conn)
        .unwrap()
        .search_path
}

diesel::table! { items (id) { id -> Int8, marker -> Text } }

/// A query diesel prepares once per connection and caches.
fn cached_marker(conn: &mut PgConnection) -> String {
    items::table
        .find(1)
        .select(items::marker)
        .first(conn)
        .unwrap()
}

/// Whatever user code did to the setting since the previous checkout of the
/// same tenant on the same backend, the next checkout lands on exactly the
/// tenant's path (the server's value, byte for byte). A switch that skipped
/// setting the path when "already on it" by trusting the previous checkout, or by
/// comparing only a prefix, the first schema, the resolved schemas or a
/// trimmed value, would leave one of these behind (each was tried against
/// this test).
#[test]
fn user_changes_to_the_path_between_checkouts_of_the_same_tenant_never_survive_the_next_one() {
    let (_db, pool) = setup(3);
    // `SET search_path = "t0", "public"` stores the list as PostgreSQL
    // writes it: identifiers quoted only where they need it.
    let exact = "t0, public";
    let pid = backend_pid(&mut pool.get_shared().unwrap());
    for statement in [
        "SET search_path TO t1",
        "SET search_path TO t0",
        r#"SET search_path TO "t0", "public", "t1""#,
        "SET search_path TO t0, public",
        r#"SET search_path TO "t0","public""#,
        "SET search_path TO public, t0",
        "SELECT pg_catalog.set_config('search_path', 't1, public', false)",
        // set_config keeps its argument verbatim: values that start like
        // the tenant's path, or differ from it only in spacing.
        r#"SELECT pg_catalog.set_config('search_path', '"t0", "t1"', false)"#,
        r#"SELECT pg_catalog.set_config('search_path', '"t0", "public", "t1"', false)"#,
        r#"SELECT pg_catalog.set_config('search_path', '"t0", "public" ', false)"#,
        r#"SELECT pg_catalog.set_config('search_path', '"t0"', false)"#,
        "BEGIN; SET LOCAL search_path TO t1; COMMIT",
        "BEGIN; SET search_path TO t2; COMMIT",
        "BEGIN; SET search_path TO t2; SET LOCAL search_path TO t1; COMMIT",
        "RESET ALL",
        "RESET search_path",
        "SET SESSION AUTHORIZATION DEFAULT",
    ] {
        {
            let mut conn = pool.get_for(&tenant(0)).unwrap();
            assert_eq!(server_path(&mut conn), exact);
            assert_on(&mut conn, "t0");
            assert_eq!(cached_marker(&mut conn), "t0");
            conn.batch_execute(statement).unwrap();
        }
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        assert_eq!(
            backend_pid(&mut conn),
            pid,
            "`{statement}` made the pool replace its connection; the test needs the same backend"
        );
        assert_eq!(server_path(&mut conn), exact, "after `{statement}`");
        assert_on(&mut conn, "t0");
        assert_eq!(cached_marker(&mut conn), "t0", "after `{statement}`");
    }
    // DISCARD ALL also deallocates the switch: the connection is replaced,
    // and the new one is on the tenant.
    pool.get_for(&tenant(0))
        .unwrap()
        .batch_execute("DISCARD ALL")
        .unwrap();
    let mut conn = pool.get_for(&tenant(0)).unwrap();
    assert_eq!(server_path(&mut conn), exact);
    assert_on(&mut conn, "t0");
}

/// The names in a path are resolved when used: a tenant schema dropped,
/// recreated or renamed between two checkouts of the same tenant on the same
/// backend (the path string unchanged) is looked up again, and a missing one
/// is refused, for fresh queries and for statements diesel prepared before
/// the change.
#[test]
fn a_schema_dropped_recreated_or_renamed_between_checkouts_of_the_same_tenant_is_looked_up_again() {
    let (db, pool) = setup(3);
    let mut admin = db.conn();
    let pid = {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        assert_on(&mut conn, "t0");
        assert_eq!(cached_marker(&mut conn), "t0");
        backend_pid(&mut conn)
    };

    admin.batch_execute("DROP SCHEMA t0 CASCADE").unwrap();
    let e = pool.get_for(&tenant(0)).unwrap_err();
    assert!(matches!(e, ConnectionError::SchemaMissing { .. }), "{e:?}");

    admin
        .batch_execute(
            "CREATE SCHEMA t0;
             CREATE TABLE t0.items (id int8 PRIMARY KEY, marker text NOT NULL);
             INSERT INTO t0.items VALUES (1, 'recreated')",
        )
        .unwrap();
    {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        assert_eq!(
            backend_pid(&mut conn),
            pid,
            "the refusal replaced the connection"
        );
        assert_eq!(whoami(&mut conn).unwrap().schema.as_deref(), Some("t0"));
        assert_eq!(whoami(&mut conn).unwrap().marker, "recreated");
        assert_eq!(cached_marker(&mut conn), "recreated");
    }

    admin
        .batch_execute("ALTER SCHEMA t0 RENAME TO t0_old; ALTER SCHEMA t1 RENAME TO t0")
        .unwrap();
    {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        assert_eq!(backend_pid(&mut conn), pid);
        assert_eq!(whoami(&mut conn).unwrap().marker, "t1");
        assert_eq!(cached_marker(&mut conn), "t1");
    }

    admin.batch_execute("ALTER SCHEMA t0 RENAME TO t1").unwrap();
    let e = pool.get_for(&tenant(0)).unwrap_err();
    assert!(matches!(e, ConnectionError::SchemaMissing { .. }), "{e:?}");
    let mut conn = pool.get_for(&tenant(1)).unwrap();
    assert_eq!(backend_pid(&mut conn), pid);
    assert_on(&mut conn, "t1");
}

static MARKED_QUERIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counting_instrumentation() -> Option<Box<dyn diesel::connection::Instrumentation>> {
    Some(Box::new(
        |event: diesel::connection::InstrumentationEvent<'_>| {
            if let diesel::connection::InstrumentationEvent::StartQuery { query, .. } = event {
                if query
                    .to_string()
                    .contains("appschema_instrumentation_marker")
                {
                    MARKED_QUERIES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        },
    ))
}

#[test]
fn the_applications_default_instrumentation_still_sees_pooled_queries() {
    // Process-wide, but harmless to the other tests: it only counts queries
    // carrying this test's marker.
    diesel::connection::set_default_instrumentation(counting_instrumentation).unwrap();
    let (_db, pool) = setup(1);
    let mut conn = pool.get_for(&tenant(0)).unwrap();
    conn.batch_execute("SELECT 'appschema_instrumentation_marker'")
        .unwrap();
    assert_eq!(
        MARKED_QUERIES.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the stale-plan watch must pass events on to the default instrumentation"
    );
}

/// A tenant schema the pool's login role may not use (no `USAGE`) is
/// refused like a missing one: on it, the role's unqualified names would
/// resolve to the shared schema's tables instead. (The check reads existence
/// and privilege in one look-up; a missing schema is covered above.)
#[test]
fn a_tenant_schema_the_login_role_may_not_use_is_refused_as_missing() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let role = format!("nousage_{}", db.name());
    let role = &role[..role.len().min(60)];
    db.conn()
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN;
             GRANT USAGE ON SCHEMA t0 TO \"{role}\";
             GRANT SELECT ON ALL TABLES IN SCHEMA t0, t1, public TO \"{role}\";"
        ))
        .unwrap();
    let url = db.url().replacen("://postgres@", &format!("://{role}@"), 1);
    assert_ne!(url, db.url(), "the test database's URL names its user");
    let pool = SharedPool::builder(&url)
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_on(&mut pool.get_for(&tenant(0)).unwrap(), "t0");
    let e = pool.get_for(&tenant(1)).unwrap_err();
    assert!(matches!(e, ConnectionError::SchemaMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("t1"), "{e}");
    // The refused checkout did not poison the pool.
    assert_on(&mut pool.get_for(&tenant(0)).unwrap(), "t0");
    drop(pool);
    db.conn()
        .batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .unwrap();
}
