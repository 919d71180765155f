//! A row stream dropped before its end never hands its connection, with the
//! statement still running, to the next checkout; the statement is
//! cancelled, so a write it would have made after its first rows never
//! happens. Read through `appschema_async::load_stream`, whose stream
//! borrows the connection (so it cannot outlive the connection's return).

use std::time::{Duration, Instant};

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::{load_stream, AsyncSharedPool, AsyncTransactionScopedPool};
use appschema_core::connection::ConnectionError;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{create_tenants, tenant};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_async::AsyncPgConnection;
use futures_util::TryStreamExt;

/// Two rows big enough to leave the server's send buffer at once, then a
/// third that sleeps and writes: the write happens only if the statement
/// runs to its end.
const SLOW_ROWS: &str = "SELECT v FROM (SELECT 1 AS n, repeat('x', 200000) AS v \
     UNION ALL SELECT 2, repeat('y', 200000) \
     UNION ALL SELECT 3, public.slow_write()) s";

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Integer)]
    n: i32,
}

fn setup() -> TestDb {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    db.conn()
        .batch_execute(
            "CREATE TABLE public.stream_writes (v text);
             CREATE FUNCTION public.slow_write() RETURNS text LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM pg_sleep(20);
                 INSERT INTO public.stream_writes VALUES ('written after the stream was dropped');
                 RETURN 'late';
             END $$;",
        )
        .unwrap();
    db
}

fn count(db: &TestDb, sql: &str) -> i32 {
    diesel::sql_query(sql)
        .get_result::<Count>(&mut db.conn())
        .unwrap()
        .n
}

async fn backend_pid(conn: &mut AsyncPgConnection) -> i32 {
    diesel_async::RunQueryDsl::get_result::<Count>(
        diesel::sql_query("SELECT pg_backend_pid() AS n"),
        conn,
    )
    .await
    .unwrap()
    .n
}

/// Reads the first row of [`SLOW_ROWS`], then drops the stream.
async fn read_one_row_then_drop(conn: &mut AsyncPgConnection) {
    let mut rows = load_stream::<_, Row>(conn, diesel::sql_query(SLOW_ROWS))
        .await
        .unwrap();
    let first = rows.try_next().await.unwrap().unwrap();
    assert!(first.v.starts_with('x'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_half_read_is_cancelled_and_its_connection_closed() {
    let db = setup();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let a_pid = {
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        let pid = backend_pid(&mut conn).await;
        read_one_row_then_drop(&mut conn).await;
        pid
    };
    let mut conn = pool.get_for(&tenant(1)).await.unwrap();
    assert_ne!(
        backend_pid(&mut conn).await,
        a_pid,
        "the next checkout got the connection whose statement was still running"
    );
    drop(conn);
    // A's backend ends once the statement is cancelled (its connection is
    // closed); the write it would have made after sleeping never happens.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        &db,
        &format!("SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = {a_pid}"),
    ) > 0
    {
        assert!(Instant::now() < deadline, "A's backend never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&db, "SELECT count(*)::int AS n FROM public.stream_writes"),
        0,
        "the abandoned statement ran to its end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_drops_a_stream_half_read_is_rolled_back_not_committed() {
    let db = setup();
    let pool = AsyncTransactionScopedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let result = pool
        .transaction_for(&tenant(0), |conn| {
            async move {
                read_one_row_then_drop(conn).await;
                Ok::<_, ConnectionError>(())
            }
            .scope_boxed()
        })
        .await;
    assert!(
        matches!(result, Err(ConnectionError::StreamAbandoned { .. })),
        "{result:?}"
    );
    // The unit was rolled back before it returned: whether the cancel
    // stopped the statement or not, nothing of it is committed.
    assert_eq!(
        count(&db, "SELECT count(*)::int AS n FROM public.stream_writes"),
        0,
        "the abandoned statement's write was committed"
    );
    // The connection is usable again.
    pool.transaction_for(&tenant(1), |conn| {
        async move {
            backend_pid(conn).await;
            Ok::<_, ConnectionError>(())
        }
        .scope_boxed()
    })
    .await
    .unwrap();
}
