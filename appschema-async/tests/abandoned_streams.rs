//! diesel-async's own `RunQueryDsl::load_stream` returns a stream that owns
//! its connection's client and that diesel-async reports finished before
//! its rows are read, so no pool can see it: dropped half-read, its
//! statement keeps streaming rows on the connection after the connection
//! went back to the pool; kept past the checkout, it holds the connection
//! busy (tokio-postgres stops reading until the stream is polled), and
//! the next checkout would wait behind it forever. These tests run a
//! statement producing a billion rows, read one row, and hand the
//! connection back with the stream dropped or kept: the next checkout must
//! get a clean connection promptly, the old backend's statement must be
//! cancelled, and no row of tenant A may reach tenant B.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::{AsyncSharedPool, AsyncTenantConnection, AsyncTransactionScopedPool};
use appschema_core::connection::ConnectionError;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{create_tenants, tenant, WhoAmI};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

/// A billion rows, each naming the tenant whose path planned the statement.
/// (The set-returning function in the select list streams its rows; in
/// `FROM` it would be materialized before the first row.)
const ENDLESS: &str = "SELECT (SELECT marker FROM items WHERE id = 1) || ':' \
     || pg_catalog.generate_series(1, 1000000000) AS v";

/// How long the next checkout may take: the busy bound (1 s by default)
/// plus a new connection, with room for a loaded machine, and far less
/// than streaming a billion rows.
const PROMPT: Duration = Duration::from_secs(15);

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn setup() -> TestDb {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    db
}

async fn whoami(conn: &mut AsyncPgConnection) -> QueryResult<WhoAmI> {
    diesel::sql_query(
        "SELECT current_schema() AS schema, (SELECT marker FROM items WHERE id = 1) AS marker",
    )
    .get_result(conn)
    .await
}

async fn backend_pid(conn: &mut AsyncPgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await
        .unwrap()
        .pid
}

/// Starts [`ENDLESS`] with diesel-async's own `load_stream` and reads its
/// first row, which must be `tenant`'s.
async fn endless_stream(
    conn: &mut AsyncPgConnection,
    tenant: &str,
) -> BoxStream<'static, QueryResult<Row>> {
    let mut rows = diesel::sql_query(ENDLESS)
        .load_stream::<Row>(conn)
        .await
        .unwrap()
        .boxed();
    let first = rows.next().await.unwrap().unwrap();
    assert_eq!(first.v, format!("{tenant}:1"));
    rows
}

/// Waits (up to 20 s) until backend `pid` runs no statement any more: gone,
/// or idle.
fn assert_cancelled(db: &TestDb, pid: i32) {
    let mut admin = db.conn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running: Vec<Pid> = diesel::RunQueryDsl::load(
            diesel::sql_query(format!(
                "SELECT pid FROM pg_stat_activity WHERE pid = {pid} AND state = 'active'"
            )),
            &mut admin,
        )
        .unwrap();
        if running.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} still runs the abandoned statement after 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The next checkout (`next`) must answer within [`PROMPT`], on another
/// backend than `old`, on `expected`'s path.
async fn assert_next_checkout_is_clean<F, Fut>(next: F, old: i32, expected: &str)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<AsyncTenantConnection, ConnectionError>>,
{
    let started = Instant::now();
    let (me, pid) = tokio::time::timeout(PROMPT, async {
        let mut conn = next().await.unwrap();
        (
            whoami(&mut conn).await.unwrap(),
            backend_pid(&mut conn).await,
        )
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the next checkout waited more than {PROMPT:?} behind the abandoned stream")
    });
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some(expected), expected),
        "LEAK: the next checkout is not on `{expected}`"
    );
    assert_ne!(pid, old, "the busy connection was handed out again");
    eprintln!("next checkout answered in {:?}", started.elapsed());
}

#[test]
fn a_dropped_diesel_async_stream_never_delays_or_reaches_the_next_checkout_on_the_shared_pool() {
    let db = setup();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let rt = runtime();
    let old = rt.block_on(async {
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        let pid = backend_pid(&mut conn).await;
        drop(endless_stream(&mut conn, "t0").await);
        pid
    });
    let t1 = tenant(1);
    rt.block_on(assert_next_checkout_is_clean(
        || pool.get_for(&t1),
        old,
        "t1",
    ));
    assert_cancelled(&db, old);
}

#[test]
fn a_diesel_async_stream_kept_past_its_checkout_never_reads_the_next_tenants_rows() {
    let db = setup();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let rt = runtime();
    let (old, mut kept) = rt.block_on(async {
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        let pid = backend_pid(&mut conn).await;
        let rows = endless_stream(&mut conn, "t0").await;
        // The checkout ends; the stream lives on.
        drop(conn);
        (pid, rows)
    });
    let t1 = tenant(1);
    rt.block_on(assert_next_checkout_is_clean(
        || pool.get_for(&t1),
        old,
        "t1",
    ));
    assert_cancelled(&db, old);
    // What the kept stream still yields is tenant A's rows (already
    // received) and then an error or its end: never a row of tenant B.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(row) = kept.next().await {
            match row {
                Ok(row) => assert!(row.v.starts_with("t0:"), "LEAK: {}", row.v),
                Err(_) => break,
            }
            assert!(
                Instant::now() < deadline,
                "the kept stream still reads rows"
            );
        }
    });
}

#[test]
fn a_dropped_diesel_async_stream_never_delays_the_next_checkout_on_a_tenant_pool() {
    let db = setup();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .busy_timeout(Duration::from_millis(300))
        .build_for(tenant(0))
        .unwrap();
    let rt = runtime();
    let old = rt.block_on(async {
        let mut conn = pool.get().await.unwrap();
        let pid = backend_pid(&mut conn).await;
        drop(endless_stream(&mut conn, "t0").await);
        pid
    });
    rt.block_on(assert_next_checkout_is_clean(|| pool.get(), old, "t0"));
    assert_cancelled(&db, old);
}

/// A unit of the transaction-scoped pool cannot finish with a stream of
/// its own alive (its `COMMIT` would wait behind the stream's rows), but it
/// can be cancelled (its request dropped, a timeout) while one is alive
/// and kept by its caller: the connection, inside the unit's transaction
/// with the statement still running, must never serve the next unit.
#[test]
fn a_diesel_async_stream_kept_past_a_cancelled_unit_never_delays_or_reaches_the_next_unit() {
    let db = setup();
    let pool = AsyncTransactionScopedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let rt = runtime();
    type Kept = Option<BoxStream<'static, QueryResult<Row>>>;
    let kept: Arc<Mutex<Kept>> = Arc::new(Mutex::new(None));
    let old = Arc::new(AtomicI32::new(0));
    rt.block_on(async {
        let (slot, seen) = (kept.clone(), old.clone());
        let t0 = tenant(0);
        let unit = pool.transaction_for(&t0, move |conn| {
            async move {
                seen.store(backend_pid(conn).await, Ordering::SeqCst);
                let rows = endless_stream(conn, "t0").await;
                *slot.lock().unwrap() = Some(rows);
                // The unit waits on something else until it is cancelled.
                std::future::pending::<()>().await;
                Ok::<_, ConnectionError>(())
            }
            .scope_boxed()
        });
        let cancelled = tokio::time::timeout(Duration::from_secs(2), unit).await;
        assert!(cancelled.is_err(), "the unit was to be cancelled");
    });
    let old = AtomicI32::load(&old, Ordering::SeqCst);
    assert!(kept.lock().unwrap().is_some());
    let started = Instant::now();
    let (me, pid) = rt.block_on(async {
        tokio::time::timeout(
            PROMPT,
            pool.transaction_for(&tenant(1), |conn| {
                async move {
                    Ok::<_, ConnectionError>((whoami(conn).await?, backend_pid(conn).await))
                }
                .scope_boxed()
            }),
        )
        .await
        .expect("the next unit waited behind the kept stream")
        .unwrap()
    });
    eprintln!("next unit answered in {:?}", started.elapsed());
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some("t1"), "t1"),
        "LEAK: the next unit is not on t1"
    );
    assert_ne!(pid, old, "the busy connection served the next unit");
    assert_cancelled(&db, old);
    let mut rows = kept.lock().unwrap().take().unwrap();
    rt.block_on(async {
        while let Some(row) = rows.next().await {
            match row {
                Ok(row) => assert!(row.v.starts_with("t0:"), "LEAK: {}", row.v),
                Err(_) => break,
            }
        }
    });
}
