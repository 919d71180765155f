//! A lost connection on the async transaction-scoped pool, directly and
//! behind a real PgBouncer in transaction pooling: the async twin of
//! `appschema-core/tests/lost_scoped.rs`.

#[path = "../../appschema-core/tests/support/mod.rs"]
mod support;

#[path = "../../appschema-core/tests/lost_support/mod.rs"]
mod lost_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::AsyncTransactionScopedPool;
use appschema_core::connection::ConnectionError;
use appschema_tempdb::{TempCluster, TempPgBouncer, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use lost_support::{kill_when, kill_when_on};
use support::{bounced, create_tenants, tenant, WhoAmI};

fn scoped_pool(url: &str, max_size: u32) -> AsyncTransactionScopedPool {
    AsyncTransactionScopedPool::builder(url)
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
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
        "LEAK: a unit for `{expected}` is on another schema"
    );
}

#[test]
fn an_async_scoped_read_killed_mid_query_is_run_again_on_a_fresh_connection() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = scoped_pool(db.url(), 2);
    let killer = kill_when(&db, "ascoped-read-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    let started = Instant::now();
    let (me, pid) = runtime()
        .block_on(pool.read_retrying(&tenant(0), |conn| {
            let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    conn.batch_execute("SELECT 'ascoped-read-1', pg_sleep(60)")
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
fn an_async_scoped_write_killed_mid_transaction_is_rolled_back_and_run_again_once() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = scoped_pool(db.url(), 2);
    let killer = kill_when(&db, "ascoped-write-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    runtime()
        .block_on(pool.run_retrying(&tenant(1), |conn| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                // The same key both times: had the first insert committed,
                // the second would fail on the primary key.
                conn.batch_execute(&format!("INSERT INTO items VALUES (5000, 'attempt {n}')"))
                    .await?;
                if n == 0 {
                    conn.batch_execute("SELECT 'ascoped-write-1', pg_sleep(60)")
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
            "SELECT count(*) AS n FROM t1.items WHERE id = 5000 AND marker = 'attempt 1'"
        ),
        1,
        "exactly the second run's row committed"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM t1.items WHERE id = 5000"
        ),
        1
    );
}

#[test]
fn an_async_scoped_unit_lost_while_committing_is_not_run_again_and_reads_are_read_only() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    let pool = scoped_pool(db.url(), 2);
    db.conn()
        .batch_execute(
            "CREATE TABLE t0.commits (id int8 PRIMARY KEY);
             CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON t0.commits
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.slow_commit();",
        )
        .unwrap();
    let rt = runtime();
    let killer = kill_when(&db, "COMMIT", "wait_event = 'PgSleep'");
    let attempts = AtomicUsize::new(0);
    let result = rt.block_on(pool.run_retrying(&tenant(0), |conn| {
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
    let error = rt
        .block_on(pool.read_retrying(&tenant(0), |conn| {
            async move {
                conn.batch_execute("DELETE FROM items").await?;
                Ok::<_, ConnectionError>(())
            }
            .scope_boxed()
        }))
        .unwrap_err();
    assert!(
        error.to_string().contains("read-only transaction"),
        "{error}"
    );
    let me = rt
        .block_on(pool.read_shared_retrying(|conn| {
            async move { Ok::<_, ConnectionError>(whoami(conn).await?) }.scope_boxed()
        }))
        .unwrap();
    assert_is(&me, "public");
}

fn dbname_of(url: &str) -> String {
    url.split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn behind_pgbouncer_an_async_unit_whose_server_backend_is_killed_is_run_again() {
    let b = bounced(2);
    let pool = scoped_pool(&b.url(), 4);
    let dbname = dbname_of(&b.url());
    let rt = runtime();
    // What PgBouncer returns to tokio-postgres for a server connection that
    // died under its query is a lost connection.
    let killer = kill_when_on(
        &b.direct_url(),
        &dbname,
        "abounced-plain-1",
        "state = 'active'",
    );
    let error = rt
        .block_on(pool.transaction_for(&tenant(0), |conn| {
            async move {
                conn.batch_execute("SELECT 'abounced-plain-1', pg_sleep(60)")
                    .await?;
                Ok::<_, ConnectionError>(())
            }
            .scope_boxed()
        }))
        .unwrap_err();
    killer.join().unwrap();
    eprintln!("behind PgBouncer, async, a killed server backend: {error}");
    assert!(error.is_connection_lost(), "{error}");
    assert!(error.is_transient(), "{error}");
    // A write killed mid-transaction: rolled back and run once more.
    let killer = kill_when_on(
        &b.direct_url(),
        &dbname,
        "abounced-write-1",
        "state = 'active'",
    );
    let attempts = AtomicUsize::new(0);
    rt.block_on(pool.run_retrying(&tenant(0), |conn| {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        async move {
            conn.batch_execute(&format!("INSERT INTO items VALUES (6000, 'attempt {n}')"))
                .await?;
            if n == 0 {
                conn.batch_execute("SELECT 'abounced-write-1', pg_sleep(60)")
                    .await?;
            }
            Ok::<_, ConnectionError>(())
        }
        .scope_boxed()
    }))
    .unwrap();
    killer.join().unwrap();
    assert_eq!(AtomicUsize::load(&attempts, Ordering::SeqCst), 2);
    let mut direct = PgConnection::establish(&b.direct_url()).unwrap();
    assert_eq!(
        count(
            &mut direct,
            "SELECT count(*) AS n FROM t0.items WHERE id = 6000 AND marker = 'attempt 1'"
        ),
        1,
        "exactly the second run's row committed"
    );
    // A read killed mid-query.
    let killer = kill_when_on(
        &b.direct_url(),
        &dbname,
        "abounced-read-1",
        "state = 'active'",
    );
    let attempts = AtomicUsize::new(0);
    let me = rt
        .block_on(pool.read_retrying(&tenant(1), |conn| {
            let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    conn.batch_execute("SELECT 'abounced-read-1', pg_sleep(60)")
                        .await?;
                }
                Ok::<_, ConnectionError>(whoami(conn).await?)
            }
            .scope_boxed()
        }))
        .unwrap();
    killer.join().unwrap();
    assert_eq!(AtomicUsize::load(&attempts, Ordering::SeqCst), 2);
    assert_is(&me, "t1");
}

#[test]
fn behind_pgbouncer_an_async_server_restart_under_load_leaks_nothing_and_fails_only_transiently() {
    let mut cluster = TempCluster::start().unwrap();
    create_tenants(&mut PgConnection::establish(&cluster.url()).unwrap(), 3);
    let bouncer = TempPgBouncer::start_with_pool_size(&cluster, 2).unwrap();
    let pool = scoped_pool(&bouncer.url_for("postgres"), 4);
    let rt = runtime();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let units = Arc::new(AtomicUsize::new(0));
    let mismatches = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let tasks: Vec<_> = (0..3)
        .map(|w| {
            let (pool, stop) = (pool.clone(), stop.clone());
            let (units, mismatches, failures) =
                (units.clone(), mismatches.clone(), failures.clone());
            rt.spawn(async move {
                let mut i = w;
                while !std::sync::atomic::AtomicBool::load(&stop, Ordering::Acquire) {
                    let t = tenant(i % 3);
                    i += 1;
                    let result = pool
                        .read_retrying(&t, |conn| {
                            async move { Ok::<_, ConnectionError>(whoami(conn).await?) }
                                .scope_boxed()
                        })
                        .await;
                    match result {
                        Ok(me) => {
                            if me.marker != t.as_str() || me.schema.as_deref() != Some(t.as_str()) {
                                mismatches.fetch_add(1, Ordering::SeqCst);
                            }
                            units.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{e} (transient: {})", e.is_transient())),
                    }
                }
            })
        })
        .collect();
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while AtomicUsize::load(&units, Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(50);
    cluster.restart().unwrap();
    let after = AtomicUsize::load(&units, Ordering::SeqCst);
    wait_for(after + 200);
    stop.store(true, Ordering::Release);
    for task in tasks {
        rt.block_on(task).unwrap();
    }
    assert_eq!(
        AtomicUsize::load(&mismatches, Ordering::SeqCst),
        0,
        "a unit saw another tenant"
    );
    let failures = failures.lock().unwrap();
    for failure in failures.iter() {
        assert!(failure.ends_with("(transient: true)"), "{failure}");
    }
    // A unit fails only when its retry loses its connection too (the
    // restart takes each worker's units down at most once or twice), never
    // because a checkout gave up while the server was coming back.
    assert!(
        failures.len() <= 6,
        "{} units failed: {:?}",
        failures.len(),
        &failures[..2]
    );
    // Behind a PgBouncer older than 1.21, diesel-async's connect (two
    // extended-protocol statements outside a transaction) may see its
    // statement prepared on one server connection and run on another
    // while the pool reconnects: each such failure is transient too.
    let mut kinds: Vec<String> = failures
        .iter()
        .map(|f| f.chars().filter(|c| !c.is_ascii_digit()).collect())
        .collect();
    kinds.sort();
    kinds.dedup();
    eprintln!("kinds of failure: {kinds:#?}");
    eprintln!(
        "{} units, {} failed (transient) across the restart",
        AtomicUsize::load(&units, Ordering::SeqCst),
        failures.len()
    );
}
