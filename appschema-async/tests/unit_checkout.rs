//! The async twin of appschema-core's `tests/unit_checkout.rs`: a unit's
//! `BEGIN` travels in its checkout's message, whose transaction PostgreSQL
//! starts before the message's `RESET ALL`; characteristics an earlier
//! checkout left must not become the unit's.

use std::time::Duration;

use appschema_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};
use appschema_async::AsyncSharedPool;
use appschema_core::connection::ConnectionError;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{create_tenants, tenant};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    v: String,
}

async fn value(conn: &mut AsyncPgConnection, sql: &str) -> QueryResult<String> {
    diesel::sql_query(sql)
        .get_result::<Value>(conn)
        .await
        .map(|r| r.v)
}

const CHARACTERISTICS: &str =
    "SELECT current_setting('transaction_isolation') || ', read only ' || \
     current_setting('transaction_read_only') || ', deferrable ' || \
     current_setting('transaction_deferrable') AS v";

fn characteristics(
    conn: &mut AsyncPgConnection,
) -> ScopedBoxFuture<'static, '_, Result<String, ConnectionError>> {
    async move { Ok::<_, ConnectionError>(value(conn, CHARACTERISTICS).await?) }.scope_boxed()
}

const LEFT_BY_A: [&str; 2] = [
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
    "SELECT set_config('default_transaction_read_only', 'on', false), \
            set_config('default_transaction_isolation', 'repeatable read', false), \
            set_config('default_transaction_deferrable', 'on', false)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_after_a_session_left_other_characteristics_runs_with_the_defaults() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    // One connection: every checkout gets A's backend.
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for left in LEFT_BY_A {
        pool.get_for(&tenant(0))
            .await
            .unwrap()
            .batch_execute(left)
            .await
            .unwrap();
        let seen = pool
            .run_retrying(&tenant(1), characteristics)
            .await
            .unwrap();
        assert_eq!(
            seen, "read committed, read only off, deferrable off",
            "{left}"
        );
        pool.get_for(&tenant(0))
            .await
            .unwrap()
            .batch_execute(left)
            .await
            .unwrap();
        let seen = pool
            .read_retrying(&tenant(1), characteristics)
            .await
            .unwrap();
        assert_eq!(
            seen, "read committed, read only on, deferrable off",
            "{left}"
        );
        pool.get_for(&tenant(0))
            .await
            .unwrap()
            .batch_execute(left)
            .await
            .unwrap();
        let seen = pool.run_shared_retrying(characteristics).await.unwrap();
        assert_eq!(
            seen, "read committed, read only off, deferrable off",
            "{left}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_rolls_back_its_checkout_leaves_nothing_for_the_next() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    pool.get_for(&tenant(0))
        .await
        .unwrap()
        .batch_execute("SELECT set_config('app.user_id', 'A-secret', false)")
        .await
        .unwrap();
    const USER: &str = "SELECT coalesce(current_setting('app.user_id', true), '') AS v";
    let failed = pool
        .run_retrying(&tenant(1), |conn| {
            async move {
                assert_eq!(value(conn, USER).await?, "", "B saw A's setting");
                Err::<(), _>(ConnectionError::from(
                    diesel::result::Error::RollbackTransaction,
                ))
            }
            .scope_boxed()
        })
        .await;
    assert!(failed.is_err());
    let mut conn = pool.get_for(&tenant(1)).await.unwrap();
    assert_eq!(value(&mut conn, USER).await.unwrap(), "");
}
