//! A lost connection on the async pool (a backend terminated by
//! `pg_terminate_backend`, a server restart) during a query, a transaction,
//! a commit or a checkout: the async twin of
//! `appschema-core/tests/lost_connection.rs`.

#[path = "../../appschema-core/tests/support/mod.rs"]
mod support;

#[path = "../../appschema-core/tests/lost_support/mod.rs"]
mod lost_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::AsyncSharedPool;
use appschema_core::connection::ConnectionError;
use appschema_tempdb::{TempCluster, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use lost_support::kill_when;
use support::{create_tenants, tenant, WhoAmI};

fn pool(url: &str, max_size: u32) -> AsyncSharedPool {
    AsyncSharedPool::builder(url)
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn setup(max_size: u32) -> (TestDb, AsyncSharedPool) {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = pool(db.url(), max_size);
    (db, pool)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn whoami(conn: &mut AsyncPgConnection) -> QueryResult<WhoAmI> {
    diesel::sql_query(
        "SELECT current_schema() AS schema, (SELECT marker FROM items WHERE id = 1) AS marker",
    )
    .get_result(conn)
    .await
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn backend_pid(conn: &mut AsyncPgConnection) -> QueryResult<i32> {
    Ok(diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await?
        .pid)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::RunQueryDsl::get_result::<Count>(diesel::sql_query(sql), conn)
        .unwrap()
        .n
}

fn assert_is(me: &WhoAmI, expected: &str) {
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some(expected), expected),
        "LEAK: a connection for `{expected}` is on another schema"
    );
}

#[test]
fn a_read_killed_mid_query_is_run_again_on_a_fresh_connection() {
    let (db, pool) = setup(2);
    let killer = kill_when(&db, "lostconn-read-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    let started = Instant::now();
    let (me, pid) = runtime()
        .block_on(pool.read_retrying(&tenant(0), |conn| {
            let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    conn.batch_execute("SELECT 'lostconn-read-1', pg_sleep(60)")
                        .await?;
                }
                Ok::<_, ConnectionError>((whoami(conn).await?, backend_pid(conn).await?))
            }
            .scope_boxed()
        }))
        .unwrap();
    let killed = killer.join().unwrap();
    assert_eq!(
        AtomicUsize::load(&attempts, Ordering::SeqCst),
        2,
        "run once more, no more"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_is(&me, "t0");
    assert_ne!(pid, killed, "the retry ran on another connection");
}

#[test]
fn a_write_killed_mid_transaction_is_rolled_back_and_run_again_once() {
    let (db, pool) = setup(2);
    let killer = kill_when(&db, "lostconn-write-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    runtime()
        .block_on(pool.run_retrying(&tenant(0), |conn| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                // The same key both times: had the first insert committed,
                // the second would fail on the primary key.
                conn.batch_execute(&format!("INSERT INTO items VALUES (5000, 'attempt {n}')"))
                    .await?;
                if n == 0 {
                    conn.batch_execute("SELECT 'lostconn-write-1', pg_sleep(60)")
                        .await?;
                }
                Ok::<_, ConnectionError>(())
            }
            .scope_boxed()
        }))
        .unwrap();
    killer.join().unwrap();
    assert_eq!(AtomicUsize::load(&attempts, Ordering::SeqCst), 2);
    let mut conn = db.conn();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM t0.items WHERE id = 5000 AND marker = 'attempt 1'"
        ),
        1,
        "exactly the second run's row committed"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM t0.items WHERE id = 5000"
        ),
        1
    );
}

#[test]
fn a_unit_lost_while_committing_is_not_run_again() {
    let (db, pool) = setup(2);
    db.conn()
        .batch_execute(
            "CREATE TABLE t0.commits (id int8 PRIMARY KEY);
             CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON t0.commits
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.slow_commit();",
        )
        .unwrap();
    let killer = kill_when(&db, "COMMIT", "wait_event = 'PgSleep'");
    let attempts = AtomicUsize::new(0);
    let result = runtime().block_on(pool.run_retrying(&tenant(0), |conn| {
        attempts.fetch_add(1, Ordering::SeqCst);
        async move {
            conn.batch_execute("INSERT INTO commits VALUES (1)").await?;
            Ok::<_, ConnectionError>(())
        }
        .scope_boxed()
    }));
    killer.join().unwrap();
    let error = result.unwrap_err();
    assert!(error.is_connection_lost(), "{error}");
    assert_eq!(
        AtomicUsize::load(&attempts, Ordering::SeqCst),
        1,
        "the server may have committed: never run again"
    );
}

#[test]
fn a_connection_found_lost_is_closed_when_dropped_not_left_in_the_pool() {
    let (db, pool) = setup(2);
    let mut admin = db.conn();
    runtime().block_on(async {
        {
            let mut conn = pool.get_for(&tenant(0)).await.unwrap();
            let pid = backend_pid(&mut conn).await.unwrap();
            diesel::RunQueryDsl::execute(
                diesel::sql_query(format!("SELECT pg_terminate_backend({pid})")),
                &mut admin,
            )
            .unwrap();
            let error = loop {
                match whoami(&mut conn).await {
                    Err(e) => break e,
                    // The termination has not reached the backend yet.
                    Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            };
            assert!(appschema_core::is_connection_lost(&error), "{error}");
            assert_eq!(pool.state().connections, 1);
        }
        assert_eq!(
            pool.state().connections,
            0,
            "the lost connection was closed when dropped, not kept for the next checkout"
        );
    });
}

#[test]
fn a_backend_killed_mid_checkout_is_replaced_and_the_checkout_succeeds() {
    let (db, pool) = setup(1);
    let rt = runtime();
    // One connection in the pool, opened before the lock is taken.
    rt.block_on(async { drop(pool.get_for(&tenant(0)).await.unwrap()) });
    // The switch finds the tenant's schema through the catalog cache, which
    // that connection has warm: an update of the schema's row (its ACL)
    // invalidates the entry, so the next switch reads pg_namespace, and
    // waits while another session holds it locked.
    let mut holder = db.conn();
    holder
        .batch_execute("GRANT USAGE ON SCHEMA t0 TO PUBLIC")
        .unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let killer = kill_when(
        &db,
        "appschema_search_path_switch",
        "wait_event_type = 'Lock'",
    );
    let checkout = rt.spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.get_for(&tenant(0)).await.unwrap();
            let me = whoami(&mut conn).await.unwrap();
            (me, backend_pid(&mut conn).await.unwrap())
        }
    });
    let killed = killer.join().unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    let (me, pid) = rt.block_on(checkout).unwrap();
    assert_is(&me, "t0");
    assert_ne!(pid, killed);
}

/// Readers run `read_retrying` in a loop while the server restarts (a fast
/// shutdown terminates every backend, then connections are refused for a
/// while): none of them sees an error.
#[test]
fn reads_live_through_a_server_restart_without_an_error() {
    let mut cluster = TempCluster::start().unwrap();
    create_tenants(&mut PgConnection::establish(&cluster.url()).unwrap(), 2);
    let pool = pool(&cluster.url(), 4);
    let rt = runtime();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let reads = std::sync::Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (pool, done, reads) = (pool.clone(), done.clone(), reads.clone());
            rt.spawn(async move {
                let mut failures = Vec::new();
                while !AtomicBool::load(&done, Ordering::SeqCst) {
                    let result = pool
                        .read_retrying(&tenant(i % 2), |conn| {
                            async move {
                                let me = whoami(conn).await?;
                                conn.batch_execute("SELECT pg_sleep(0.01)").await?;
                                Ok::<_, ConnectionError>(me)
                            }
                            .scope_boxed()
                        })
                        .await;
                    match result {
                        Ok(me) => {
                            assert_is(&me, &format!("t{}", i % 2));
                            reads.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    let until = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while AtomicUsize::load(&reads, Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the readers made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    until(20);
    cluster.restart().unwrap();
    let after = AtomicUsize::load(&reads, Ordering::SeqCst);
    until(after + 40);
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        let failures = rt.block_on(reader).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
