//! A lost connection on the transaction-scoped pool, directly and behind a
//! real PgBouncer in transaction pooling: `run_retrying`/`read_retrying`
//! run a unit once more on a fresh connection only when nothing of it can
//! have committed, and a connection found lost is closed when returned.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appschema_core::connection::{ConnectionError, TransactionScopedPool};
use appschema_tempdb::{TempCluster, TempPgBouncer, TestDb};
use appschema_testkit::lost::{
    count, dbname_of, kill_when, kill_when_on, slow_commits_in_t0, wait_until_counted,
};
use appschema_testkit::tenants;
use appschema_testkit::tenants::{
    assert_on, backend_pid, bounced, create_tenants, db_with_tenants, tenant, whoami,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

fn scoped_pool(url: &str, max_size: u32) -> TransactionScopedPool {
    TransactionScopedPool::builder(url)
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn setup(max_size: u32) -> (TestDb, TransactionScopedPool) {
    let db = db_with_tenants(2);
    let pool = scoped_pool(db.url(), max_size);
    (db, pool)
}

#[test]
fn a_scoped_read_killed_mid_query_is_run_again_on_a_fresh_connection() {
    let (db, pool) = setup(2);
    let killer = kill_when(&db, "scoped-read-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    let started = Instant::now();
    let (me, pid) = pool
        .read_retrying(&tenant(0), |conn| {
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                conn.batch_execute("SELECT 'scoped-read-1', pg_sleep(60)")?;
            }
            Ok::<_, ConnectionError>((whoami(conn)?, backend_pid(conn)))
        })
        .unwrap();
    let killed = killer.join().unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "run once more, no more");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some("t0"), "t0")
    );
    assert_ne!(pid, killed, "the retry ran on another connection");
}

#[test]
fn a_scoped_write_killed_mid_transaction_is_rolled_back_and_run_again_once() {
    let (db, pool) = setup(2);
    let killer = kill_when(&db, "scoped-write-1", "state = 'active'");
    let attempts = AtomicUsize::new(0);
    pool.run_retrying(&tenant(0), |conn| {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        // The same key both times: had the first insert committed, the
        // second would fail on the primary key.
        conn.batch_execute(&format!("INSERT INTO items VALUES (5000, 'attempt {n}')"))?;
        if n == 0 {
            conn.batch_execute("SELECT 'scoped-write-1', pg_sleep(60)")?;
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
fn a_scoped_unit_lost_while_committing_is_not_run_again() {
    let (db, pool) = setup(2);
    // A deferred constraint trigger runs at COMMIT and holds it open.
    slow_commits_in_t0(&mut db.conn());
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
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "the server may have committed: never run again"
    );
}

#[test]
fn a_scoped_unit_failing_on_its_own_is_not_run_again_and_reads_are_read_only() {
    let (_db, pool) = setup(1);
    let attempts = AtomicUsize::new(0);
    let error = pool
        .read_retrying(&tenant(1), |conn| {
            attempts.fetch_add(1, Ordering::SeqCst);
            assert_on(conn, "t1");
            conn.batch_execute("DELETE FROM items")?;
            Ok::<_, ConnectionError>(())
        })
        .unwrap_err();
    assert!(
        error.to_string().contains("read-only transaction"),
        "{error}"
    );
    assert!(!error.is_transient());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    // A missing schema is named, and not retried either.
    let missing = appschema_core::SchemaName::new("nope").unwrap();
    let error = pool
        .run_retrying(&missing, |_| Ok::<_, ConnectionError>(()))
        .unwrap_err();
    assert!(
        matches!(&error, ConnectionError::SchemaMissing { schema } if schema == "nope"),
        "{error}"
    );
    // The shared-only path.
    pool.read_shared_retrying(|conn| {
        assert_on(conn, "public");
        Ok::<_, ConnectionError>(())
    })
    .unwrap();
}

#[test]
fn a_scoped_connection_found_lost_is_closed_when_returned_not_left_in_the_pool() {
    let (db, pool) = setup(1);
    let mut admin = db.conn();
    let result = pool.transaction_for(&tenant(0), |conn| {
        let pid = backend_pid(conn);
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
        // The next statements find the connection gone; the unit swallows
        // the error (as user code may), so diesel's transaction manager
        // is not what tells the pool.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match whoami(conn) {
                Err(e) => {
                    assert!(appschema_core::is_connection_lost(&e), "{e}");
                    break;
                }
                Ok(_) => assert!(Instant::now() < deadline, "the kill never arrived"),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err::<(), _>(ConnectionError::from(
            diesel::result::Error::RollbackTransaction,
        ))
    });
    assert!(result.is_err());
    assert_eq!(
        pool.state().connections,
        0,
        "the lost connection was closed when returned, not kept for the next checkout"
    );
    pool.transaction_for(&tenant(1), |conn| {
        assert_on(conn, "t1");
        Ok::<_, ConnectionError>(())
    })
    .unwrap();
}

/// A PgBouncer in transaction pooling with two server connections.
fn bouncer_setup() -> (tenants::Bounced, TransactionScopedPool, String) {
    let b = bounced(2);
    let pool = scoped_pool(&b.url(), 4);
    let dbname = dbname_of(&b.url());
    (b, pool, dbname)
}

#[test]
fn behind_pgbouncer_a_read_whose_server_backend_is_killed_is_run_again() {
    let (b, pool, dbname) = bouncer_setup();
    let killer = kill_when_on(
        &b.direct_url(),
        &dbname,
        "bounced-read-1",
        "state = 'active'",
    );
    let attempts = AtomicUsize::new(0);
    let me = pool
        .read_retrying(&tenant(1), |conn| {
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                conn.batch_execute("SELECT 'bounced-read-1', pg_sleep(60)")?;
            }
            Ok::<_, ConnectionError>(whoami(conn)?)
        })
        .unwrap();
    killer.join().unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "run once more, no more");
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some("t1"), "t1")
    );
}

#[test]
fn behind_pgbouncer_a_killed_server_backend_is_a_lost_connection_and_a_write_runs_again_once() {
    let (b, pool, dbname) = bouncer_setup();
    // What PgBouncer returns for a server connection that died under a
    // client's query is classified as a lost connection.
    let killer = kill_when_on(
        &b.direct_url(),
        &dbname,
        "bounced-plain-1",
        "state = 'active'",
    );
    let error = pool
        .transaction_for(&tenant(0), |conn| {
            conn.batch_execute("SELECT 'bounced-plain-1', pg_sleep(60)")?;
            Ok::<_, ConnectionError>(())
        })
        .unwrap_err();
    killer.join().unwrap();
    eprintln!("behind PgBouncer, a killed server backend: {error}");
    assert!(error.is_connection_lost(), "{error}");
    assert!(error.is_transient(), "{error}");
    // A write killed mid-transaction: rolled back, run once more.
    let killer = kill_when_on(
        &b.direct_url(),
        &dbname,
        "bounced-write-1",
        "state = 'active'",
    );
    let attempts = AtomicUsize::new(0);
    pool.run_retrying(&tenant(0), |conn| {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        conn.batch_execute(&format!("INSERT INTO items VALUES (6000, 'attempt {n}')"))?;
        if n == 0 {
            conn.batch_execute("SELECT 'bounced-write-1', pg_sleep(60)")?;
        }
        Ok::<_, ConnectionError>(())
    })
    .unwrap();
    killer.join().unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let mut direct = PgConnection::establish(&b.direct_url()).unwrap();
    assert_eq!(
        count(
            &mut direct,
            "SELECT count(*) AS n FROM t0.items WHERE id = 6000 AND marker = 'attempt 1'"
        ),
        1,
        "exactly the second run's row committed"
    );
}

#[test]
fn behind_pgbouncer_a_server_restart_under_load_costs_no_unit_and_leaks_nothing() {
    // A cluster of its own: it is restarted.
    let mut cluster = TempCluster::start().unwrap();
    create_tenants(&mut PgConnection::establish(&cluster.url()).unwrap(), 3);
    let bouncer = TempPgBouncer::start_with_pool_size(&cluster, 2).unwrap();
    let pool = scoped_pool(&bouncer.url_for("postgres"), 4);
    let stop = Arc::new(AtomicBool::new(false));
    let (units, mismatches, failures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::<String>::new())),
    );
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (pool, stop) = (pool.clone(), stop.clone());
            let (units, mismatches, failures) =
                (units.clone(), mismatches.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::Acquire) {
                    let t = tenant(i % 3);
                    i += 1;
                    match pool.read_retrying(&t, |conn| Ok::<_, ConnectionError>(whoami(conn)?)) {
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
    // Under load before, during and after the restart.
    let wait_for = |n: usize| wait_until_counted(&units, n, "the workers");
    wait_for(50);
    cluster.restart().unwrap();
    let after = units.load(Ordering::SeqCst);
    wait_for(after + 200);
    stop.store(true, Ordering::Release);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        mismatches.load(Ordering::SeqCst),
        0,
        "a unit saw another tenant"
    );
    let failures = failures.lock().unwrap();
    // A restart may take more than one retry's time for a unit whose both
    // connections are lost; each such failure must say so (transient), so
    // that a web handler answers 503, never 500.
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
    eprintln!(
        "{} units, {} failed (transient) across the restart",
        units.load(Ordering::SeqCst),
        failures.len()
    );
}
