//! A lost connection (a backend terminated by `pg_terminate_backend`, a
//! server restart) during a query, a transaction, a commit or a checkout:
//! what is run again, what is not, and that the pool never hands out the
//! dead connection.

#[path = "lost_support/mod.rs"]
mod lost_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use appschema_core::connection::{ConnectionError, SharedPool};
use appschema_tempdb::{TempCluster, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use lost_support::kill_when;
use support::{assert_on, backend_pid, create_tenants, tenant, whoami};

fn pool(url: &str, max_size: u32) -> SharedPool {
    SharedPool::builder(url)
        .max_size(max_size)
        .min_idle(0)
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn setup(max_size: u32) -> (TestDb, SharedPool) {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = pool(db.url(), max_size);
    (db, pool)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

#[test]
fn a_read_killed_mid_query_is_run_again_on_a_fresh_connection() {
    let (db, pool) = setup(2);
    let killer = kill_when(&db, "lostconn-read-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    let started = Instant::now();
    let (me, pid) = pool
        .read_retrying(&tenant(0), |conn| {
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                conn.batch_execute("SELECT 'lostconn-read-1', pg_sleep(60)")?;
            }
            Ok::<_, ConnectionError>((whoami(conn)?, backend_pid(conn)))
        })
        .unwrap();
    let killed = killer.join().unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "run once more, no more");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "did not wait out the sleep"
    );
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some("t0"), "t0")
    );
    assert_ne!(pid, killed, "the retry ran on another connection");
    // The dead connection is not in the pool: every checkout works.
    for _ in 0..3 {
        assert_on(&mut pool.get_for(&tenant(1)).unwrap(), "t1");
    }
}

#[test]
fn a_write_killed_mid_transaction_is_rolled_back_and_run_again_once() {
    let (db, pool) = setup(2);
    let killer = kill_when(&db, "lostconn-write-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    pool.run_retrying(&tenant(0), |conn| {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        // The same key both times: had the first insert committed, the
        // second would fail on the primary key.
        conn.batch_execute(&format!("INSERT INTO items VALUES (5000, 'attempt {n}')"))?;
        if n == 0 {
            conn.batch_execute("SELECT 'lostconn-write-1', pg_sleep(60)")?;
        }
        Ok::<_, ConnectionError>(())
    })
    .unwrap();
    killer.join().unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
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
    // A deferred constraint trigger runs at COMMIT: it holds the commit
    // open long enough for the backend to be terminated during it.
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
    let result = pool.run_retrying(&tenant(0), |conn| {
        attempts.fetch_add(1, Ordering::SeqCst);
        conn.batch_execute("INSERT INTO commits VALUES (1)")?;
        Ok::<_, ConnectionError>(())
    });
    killer.join().unwrap();
    let error = result.unwrap_err();
    assert!(error.is_connection_lost(), "{error}");
    assert!(error.is_transient(), "{error}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "the server may have committed: never run again"
    );
}

#[test]
fn work_that_fails_on_its_own_is_not_run_again() {
    let (_db, pool) = setup(1);
    let attempts = AtomicUsize::new(0);
    let error = pool
        .read_retrying(&tenant(0), |conn| {
            attempts.fetch_add(1, Ordering::SeqCst);
            diesel::sql_query("SELECT 1 AS one WHERE false")
                .get_result::<One>(conn)
                .map(|row| row.one)
                .map_err(ConnectionError::from)
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            ConnectionError::Query {
                error: diesel::result::Error::NotFound,
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.is_transient());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[test]
fn a_read_only_unit_refuses_writes() {
    let (_db, pool) = setup(1);
    let error = pool
        .read_retrying(&tenant(0), |conn| {
            conn.batch_execute("DELETE FROM items")?;
            Ok::<_, ConnectionError>(())
        })
        .unwrap_err();
    assert!(
        error.to_string().contains("read-only transaction"),
        "{error}"
    );
}

#[test]
fn a_connection_found_lost_is_closed_when_returned_not_left_in_the_pool() {
    let (db, pool) = setup(2);
    let mut admin = db.conn();
    {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        let pid = backend_pid(&mut conn);
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
        // The next statement finds the connection gone.
        let error = loop {
            match whoami(&mut conn) {
                Err(e) => break e,
                // The termination has not reached the backend yet.
                Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        assert!(appschema_core::is_connection_lost(&error), "{error}");
        assert_eq!(pool.state().connections, 1);
    }
    assert_eq!(
        pool.state().connections,
        0,
        "the lost connection was closed when returned, not kept for the next checkout"
    );
}

#[test]
fn a_backend_killed_mid_checkout_is_replaced_and_the_checkout_succeeds() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    // Opened before the lock (by `build`): opening one needs pg_namespace too.
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .min_idle(1)
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Every checkout's switch reads pg_namespace: while another session
    // holds it locked, the checkout waits in the middle of its statement.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let killer = kill_when(
        &db,
        "appschema_search_path_switch",
        "wait_event_type = 'Lock'",
    );
    let checkout = std::thread::spawn({
        let pool = pool.clone();
        move || {
            let mut conn = pool.get_for(&tenant(0)).unwrap();
            assert_on(&mut conn, "t0");
            backend_pid(&mut conn)
        }
    });
    let killed = killer.join().unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    let pid = checkout.join().unwrap();
    assert_ne!(pid, killed);
}

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Integer)]
    one: i32,
}

/// Readers run `read_retrying` in a loop while the server restarts (a fast
/// shutdown terminates every backend): none of them sees an error.
#[test]
fn reads_live_through_a_server_restart_without_an_error() {
    let mut cluster = TempCluster::start().unwrap();
    create_tenants(&mut PgConnection::establish(&cluster.url()).unwrap(), 2);
    let pool = pool(&cluster.url(), 4);
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|i| {
                let (pool, done, reads) = (&pool, &done, &reads);
                s.spawn(move || {
                    let mut failures = Vec::new();
                    while !done.load(Ordering::SeqCst) {
                        let result = pool.read_retrying(&tenant(i % 2), |conn| {
                            let me = whoami(conn)?;
                            diesel::sql_query("SELECT 1 AS one, pg_sleep(0.01)")
                                .get_result::<One>(conn)?;
                            Ok::<_, ConnectionError>(me)
                        });
                        match result {
                            Ok(me) => {
                                let want = format!("t{}", i % 2);
                                assert_eq!(
                                    (me.schema.as_deref(), me.marker.as_str()),
                                    (Some(want.as_str()), want.as_str()),
                                    "LEAK"
                                );
                                reads.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    failures
                })
            })
            .collect();
        // Let the readers get going, restart, then let them go on a while.
        let until = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while reads.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "the readers made no progress");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        until(20);
        cluster.restart().unwrap();
        let after = reads.load(Ordering::SeqCst);
        until(after + 40);
        done.store(true, Ordering::SeqCst);
        for reader in readers {
            let failures = reader.join().unwrap();
            assert!(failures.is_empty(), "{failures:#?}");
        }
    });
}

/// The across-tenants runner: a tenant whose connection is lost in the
/// middle of its work (before its `COMMIT`) is run again on a new
/// connection, and the run goes on; nothing is reported failed.
#[test]
fn across_tenants_runs_a_tenant_whose_connection_was_lost_once_more() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 3);
    let killer = kill_when(&db, "lostconn-across-1", "state = 'active'");
    let runs = AtomicUsize::new(0);
    let report = appschema_core::across::AcrossTenants::new(db.url())
        .jobs(1)
        .run(
            |conn, tenant| -> QueryResult<()> {
                if tenant.schema_name.as_str() == "t1" && runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    conn.batch_execute("SELECT 'lostconn-across-1', pg_sleep(60)")?;
                }
                conn.batch_execute("UPDATE items SET marker = marker || '+' WHERE id = 2")
            },
            &|_| {},
        )
        .unwrap();
    killer.join().unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.tenants_done, 3);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let mut conn = db.conn();
    for t in ["t0", "t1", "t2"] {
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM {t}.items WHERE id = 2 AND marker = 'row+'")
            ),
            1,
            "{t}: the update committed exactly once"
        );
    }
}
