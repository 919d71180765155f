//! The async shared pool hands out connections on the right tenant's path,
//! nothing a user does during one checkout reaches the next, and a request
//! dropped mid-query or mid-checkout never hands its connection, in an
//! unknown state, to the next one: the sync `SharedPool`'s isolation and
//! fault tests (`appschema-core/tests/shared_pool.rs`) on the async pool,
//! plus cancellation.

#[path = "../../appschema-core/tests/support/mod.rs"]
mod support;

use std::future::Future;
use std::time::Duration;

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::{AsyncSharedPool, AsyncTransactionScopedPool};
use appschema_core::connection::ConnectionError;
use appschema_core::SchemaName;
use appschema_tempdb::TestDb;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use support::{create_tenants, tenant, WhoAmI};

/// One connection, so every checkout reuses the previous one's backend.
fn single_connection_pool(url: &str) -> AsyncSharedPool {
    AsyncSharedPool::builder(url)
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn setup(n: usize) -> (TestDb, AsyncSharedPool) {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), n);
    let pool = single_connection_pool(db.url());
    (db, pool)
}

async fn whoami(conn: &mut AsyncPgConnection) -> QueryResult<WhoAmI> {
    diesel::sql_query(
        "SELECT current_schema() AS schema, (SELECT marker FROM items WHERE id = 1) AS marker",
    )
    .get_result(conn)
    .await
}

/// Asserts `conn` is on `expected`'s path, naming the leak if not.
async fn assert_on(conn: &mut AsyncPgConnection, expected: &str) {
    let me = whoami(conn).await.unwrap();
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some(expected), expected),
        "LEAK: a connection for `{expected}` is on another schema"
    );
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn pid(conn: &mut AsyncPgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await
        .unwrap()
        .pid
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    v: bool,
}

/// Asks `admin` `sql` (one boolean, `v`) until it says true: waiting for a
/// state of the server, not for time. Bounded so that a broken guard fails
/// the test instead of hanging it.
async fn until(admin: &mut AsyncPgConnection, sql: &str) {
    let wait = async {
        while !diesel::sql_query(sql)
            .get_result::<Flag>(admin)
            .await
            .unwrap()
            .v
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("the server never reached: {sql}"));
}

async fn admin(db: &TestDb) -> AsyncPgConnection {
    AsyncPgConnection::establish(db.url()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_for_a_tenant_is_on_that_tenants_path_and_shared_work_on_public() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 3);
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(2)
        .build()
        .unwrap();
    for i in [0, 1, 2, 1, 0, 2, 2, 0] {
        let mut conn = pool.get_for(&tenant(i)).await.unwrap();
        assert_eq!(conn.tenant(), Some(&tenant(i)));
        assert_on(&mut conn, &format!("t{i}")).await;
    }
    let mut conn = pool.get_shared().await.unwrap();
    assert_eq!(conn.tenant(), None);
    assert_on(&mut conn, "public").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_many_tenants_each_see_only_their_own_rows() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 8);
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(3)
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..200 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let i = k % 8;
            let mut conn = pool.get_for(&tenant(i)).await.unwrap();
            assert_on(&mut conn, &format!("t{i}")).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_search_path_reset_all_and_discard_all_in_user_code_do_not_reach_the_next_checkout() {
    let (_db, pool) = setup(2);
    for sabotage in [
        "SET search_path = t1, public",
        "SELECT set_config('search_path', 't1', false)",
        "RESET ALL",
        "SET search_path = DEFAULT",
        "DISCARD ALL",
    ] {
        {
            let mut conn = pool.get_for(&tenant(1)).await.unwrap();
            conn.batch_execute(sabotage).await.unwrap();
        }
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        assert_on(&mut conn, "t0").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_and_a_savepoint_rollback_leak_nothing() {
    let (_db, pool) = setup(2);
    {
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        let _ = conn
            .transaction::<(), _, _>(async |c| {
                c.batch_execute("SET search_path = t1").await?;
                Err(diesel::result::Error::RollbackTransaction)
            })
            .await;
        assert_on(&mut conn, "t0").await;
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            let _ = c
                .transaction::<(), _, _>(async |c| {
                    c.batch_execute("SET LOCAL search_path = t1").await?;
                    Err(diesel::result::Error::RollbackTransaction)
                })
                .await;
            assert_on(c, "t0").await;
            Ok(())
        })
        .await
        .unwrap();
    }
    assert_on(&mut pool.get_for(&tenant(1)).await.unwrap(), "t1").await;
}

/// Raw transaction-control statements a handler might leave open when it
/// returns its connection (diesel does not see them).
const LEFT_OPEN: [&str; 3] = [
    "BEGIN",
    "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
    "BEGIN; INSERT INTO items VALUES (1000, 'written')",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_begin_left_open_never_lets_a_later_rollback_restore_the_previous_tenant() {
    let (_db, pool) = setup(2);
    for statement in LEFT_OPEN {
        let first_pid = {
            let mut conn = pool.get_for(&tenant(0)).await.unwrap();
            conn.batch_execute(statement).await.unwrap();
            pid(&mut conn).await
        };
        let mut conn = pool.get_for(&tenant(1)).await.unwrap();
        assert_on(&mut conn, "t1").await;
        conn.batch_execute("ROLLBACK").await.unwrap();
        assert_on(&mut conn, "t1").await;
        assert_ne!(
            pid(&mut conn).await,
            first_pid,
            "a connection returned inside `{statement}` was handed out again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_checkouts_keep_their_connection() {
    let (_db, pool) = setup(3);
    let first = pid(&mut pool.get_shared().await.unwrap()).await;
    for k in 0..100 {
        let mut conn = pool.get_for(&tenant(k % 3)).await.unwrap();
        assert_on(&mut conn, &format!("t{}", k % 3)).await;
        assert_eq!(pid(&mut conn).await, first, "checkout {k} replaced it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_between_checkouts_is_replaced() {
    let (db, pool) = setup(2);
    let mut admin = admin(&db).await;
    let killed = {
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        pid(&mut conn).await
    };
    diesel::sql_query(format!("SELECT pg_terminate_backend({killed}, 60000)"))
        .execute(&mut admin)
        .await
        .unwrap();
    // The dead connection is in the pool; the checkout's switch finds it
    // dead and opens another.
    let mut conn = pool.get_for(&tenant(1)).await.unwrap();
    assert_on(&mut conn, "t1").await;
    assert_ne!(pid(&mut conn).await, killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_a_connection_is_checked_out_leaks_nothing() {
    let (_db, pool) = setup(2);
    let p = pool.clone();
    let task = tokio::spawn(async move {
        let mut conn = p.get_for(&tenant(0)).await.unwrap();
        conn.batch_execute("SET search_path = t0; CREATE TEMP TABLE items AS SELECT 1::int8 AS id, 'A-secret'::text AS marker")
            .await
            .unwrap();
        panic!("handler bug");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_on(&mut pool.get_for(&tenant(1)).await.unwrap(), "t1").await;
}

mod shapes {
    diesel::table! { shapes (id) { id -> Int8, v -> Text } }
}

async fn load(conn: &mut AsyncPgConnection) -> QueryResult<Vec<String>> {
    shapes::shapes::table
        .select(shapes::shapes::v)
        .filter(shapes::shapes::id.eq(1))
        .load::<String>(conn)
        .await
}

/// The deploy hazard, and a statement prepared for one tenant run for
/// another whose table has another shape: a clear error, never the other
/// tenant's rows, and the connection is replaced, so it fails only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cached_for_one_tenant_fails_once_for_a_reshaped_one_then_is_replaced() {
    let db = TestDb::new();
    diesel::connection::SimpleConnection::batch_execute(
        &mut db.conn(),
        "CREATE SCHEMA sa; CREATE TABLE sa.shapes (id int8 PRIMARY KEY, v text);
         INSERT INTO sa.shapes VALUES (1, 'from sa');
         CREATE SCHEMA sb; CREATE TABLE sb.shapes (id int8 PRIMARY KEY, v int4);
         INSERT INTO sb.shapes VALUES (1, 7);",
    )
    .unwrap();
    let pool = single_connection_pool(db.url());
    let [sa, sb] = ["sa", "sb"].map(|s| SchemaName::new(s).unwrap());
    let first = {
        let mut conn = pool.get_for(&sa).await.unwrap();
        assert_eq!(load(&mut conn).await.unwrap(), ["from sa"]);
        pid(&mut conn).await
    };
    {
        let mut conn = pool.get_for(&sb).await.unwrap();
        assert_eq!(pid(&mut conn).await, first);
        let err = load(&mut conn).await.unwrap_err().to_string();
        assert!(
            err.contains("cached plan must not change result type"),
            "{err}"
        );
    }
    let mut conn = pool.get_for(&sa).await.unwrap();
    assert_ne!(
        pid(&mut conn).await,
        first,
        "the stale connection was reused"
    );
    assert_eq!(load(&mut conn).await.unwrap(), ["from sa"]);
}

/// `state()` is appschema's `PoolState`, as on the sync pool
/// (`state_counts_open_idle_and_checked_out_connections_and_min_idle_opens_ahead`),
/// plus the checkouts waiting, which deadpool counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_counts_open_idle_checked_out_connections_and_waiting_checkouts() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let s = pool.state();
    assert_eq!(
        (s.connections, s.idle, s.waiting, s.max_size),
        (0, 0, Some(0), 1)
    );
    let held = pool.get_for(&tenant(0)).await.unwrap();
    let s = pool.state();
    assert_eq!((s.connections, s.idle, s.in_use()), (1, 0, 1));
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get_shared().await.map(drop) }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.state().waiting != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the second checkout never waited: {:?}",
            pool.state()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(held);
    waiter.await.unwrap().unwrap();
    let s = pool.state();
    assert_eq!(
        (s.connections, s.idle, s.waiting, s.in_use()),
        (1, 1, Some(0), 0)
    );
}

/// The sync pool's `a_public_name_resolves_through_the_registry` and the
/// public-name half of its `errors_name_the_tenant_and_are_distinct`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_name_resolves_through_the_registry_and_unknown_or_invalid_ones_are_refused() {
    let (_db, pool) = setup(2);
    let mut conn = pool.get_for_public_name("T1.Example.COM.").await.unwrap();
    assert_eq!(conn.tenant(), Some(&tenant(1)));
    assert_on(&mut conn, "t1").await;
    drop(conn);

    let e = pool
        .get_for_public_name("nobody.example.com")
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectionError::UnknownTenant { .. }), "{e:?}");
    assert!(e.to_string().contains("nobody.example.com"), "{e}");

    let e = pool.get_for_public_name("bad name!").await.unwrap_err();
    assert!(matches!(e, ConnectionError::InvalidName { .. }), "{e:?}");
    assert!(e.to_string().contains("bad name!"), "{e}");
    assert!(std::error::Error::source(&e).is_none(), "{e}");
    // Neither refusal poisoned the pool.
    assert_on(
        &mut pool.get_for_public_name("t0.example.com").await.unwrap(),
        "t0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_tenant_and_are_distinct() {
    let (db, pool) = setup(1);
    let ghost = SchemaName::new("ghost").unwrap();
    let e = pool.get_for(&ghost).await.unwrap_err();
    assert!(matches!(e, ConnectionError::SchemaMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("ghost"), "{e}");
    // The refused checkout did not poison the pool.
    assert_on(&mut pool.get_for(&tenant(0)).await.unwrap(), "t0").await;

    let short = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let held = short.get_for(&tenant(0)).await.unwrap();
    let e = short.get_for(&tenant(0)).await.unwrap_err();
    assert!(matches!(e, ConnectionError::PoolExhausted { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("t0") && msg.contains("300ms"), "{msg}");
    drop(held);

    let down = AsyncSharedPool::builder("postgres://postgres@/nowhere?host=/nonexistent&port=1")
        .max_size(1)
        .connection_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let e = down.get_for(&tenant(0)).await.unwrap_err();
    assert!(matches!(e, ConnectionError::DatabaseDown { .. }), "{e:?}");
    assert!(e.to_string().contains("t0"), "{e}");
}

/// Polls `future` once (so it sends its query) and drops it: a request
/// cancelled while its query is in flight.
async fn poll_once_and_drop<F: Future>(future: F) {
    let mut future = std::pin::pin!(future);
    let polled =
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready()))
            .await;
    assert!(!polled, "the query answered before the first poll returned");
}

/// A request dropped while its statement runs (here: waits for a lock the
/// test holds, so it is surely still running): its connection is not handed
/// to the next request, and the statement is cancelled on the server, so
/// the write it would have made after the client gave up never happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_mid_query_never_returns_its_connection_and_its_statement_is_cancelled() {
    let (db, pool) = setup(2);
    let mut admin = admin(&db).await;
    admin
        .batch_execute("SELECT pg_advisory_lock(77)")
        .await
        .unwrap();
    let mut conn = pool.get_for(&tenant(0)).await.unwrap();
    let victim = pid(&mut conn).await;
    poll_once_and_drop(conn.batch_execute(
        "SELECT pg_advisory_xact_lock(77); INSERT INTO items VALUES (999, 'written after the client gave up')",
    ))
    .await;
    until(
        &mut admin,
        &format!("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = {victim} AND NOT granted) AS v"),
    )
    .await;
    drop(conn);
    // The cancel request ends the statement; the closed socket, the backend.
    until(
        &mut admin,
        &format!("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = {victim}) AS v"),
    )
    .await;
    admin
        .batch_execute("SELECT pg_advisory_unlock(77)")
        .await
        .unwrap();
    let mut next = pool.get_for(&tenant(1)).await.unwrap();
    assert_ne!(
        pid(&mut next).await,
        victim,
        "the cancelled connection was reused"
    );
    assert_on(&mut next, "t1").await;
    let ghost: i64 = diesel::sql_query("SELECT count(*)::int8 AS n FROM t0.items WHERE id = 999")
        .get_result::<Count>(&mut admin)
        .await
        .unwrap()
        .n;
    assert_eq!(ghost, 0, "the cancelled request's write happened");
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// A request dropped while its checkout's switch is in flight: the
/// connection is not reused, and the next checkout is clean and on its own
/// tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_mid_checkout_never_returns_its_connection() {
    let (_db, pool) = setup(2);
    let first = {
        let mut conn = pool.get_for(&tenant(1)).await.unwrap();
        conn.batch_execute(
            "CREATE TEMP TABLE items AS SELECT 1::int8 AS id, 'A-secret'::text AS marker",
        )
        .await
        .unwrap();
        pid(&mut conn).await
    };
    // The idle connection is handed out at once; the first poll then sends
    // the switch and waits for its answer.
    poll_once_and_drop(pool.get_for(&tenant(0))).await;
    let mut conn = pool.get_for(&tenant(0)).await.unwrap();
    assert_ne!(pid(&mut conn).await, first, "the connection was reused");
    assert_on(&mut conn, "t0").await;
}

/// The same on the transaction-scoped pool: a unit dropped mid-query
/// leaves its transaction to the server's cancel, and the next unit runs on
/// another connection, on its own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_dropped_mid_query_never_returns_its_connection() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = AsyncTransactionScopedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let mut admin = admin(&db).await;
    admin
        .batch_execute("SELECT pg_advisory_lock(78)")
        .await
        .unwrap();
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let p = pool.clone();
    let unit = tokio::spawn(async move {
        p.transaction_for(&tenant(0), |c| {
            async move {
                let _ = pid_tx.send(pid(c).await);
                c.batch_execute("SELECT pg_advisory_xact_lock(78)").await?;
                Ok::<_, ConnectionError>(())
            }
            .scope_boxed()
        })
        .await
    });
    let victim = pid_rx.await.unwrap();
    until(
        &mut admin,
        &format!("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = {victim} AND NOT granted) AS v"),
    )
    .await;
    unit.abort();
    assert!(unit.await.unwrap_err().is_cancelled());
    until(
        &mut admin,
        &format!("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = {victim}) AS v"),
    )
    .await;
    let (next, marker) = pool
        .transaction_for(&tenant(1), |c| {
            async move {
                let me = whoami(c).await?;
                Ok::<_, ConnectionError>((pid(c).await, me.marker))
            }
            .scope_boxed()
        })
        .await
        .unwrap();
    assert_ne!(next, victim);
    assert_eq!(marker, "t1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_is_on_its_tenant_and_refused_inside_an_open_transaction() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = AsyncTransactionScopedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    for i in [0, 1, 0] {
        let marker = pool
            .transaction_for(&tenant(i), |c| {
                async move { Ok::<_, ConnectionError>(whoami(c).await?.marker) }.scope_boxed()
            })
            .await
            .unwrap();
        assert_eq!(marker, format!("t{i}"));
    }
    let ghost = SchemaName::new("ghost").unwrap();
    let e = pool
        .transaction_for(&ghost, |_| {
            async move { Ok::<_, ConnectionError>(()) }.scope_boxed()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectionError::SchemaMissing { .. }), "{e:?}");

    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let e = conn
        .transaction::<(), ConnectionError, _>(async |c| {
            appschema_async::in_tenant_transaction(c, &tenant(0), &Default::default(), |_| {
                async move { Ok::<_, ConnectionError>(()) }.scope_boxed()
            })
            .await
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectionError::NestedTransaction { .. }),
        "{e:?}"
    );
}
