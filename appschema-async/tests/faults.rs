//! The async pools' share of issue 26: no password in `Debug` (their
//! connection errors go through the same redaction as the sync pools', but
//! tokio-postgres, unlike libpq, quotes no part of a connection string it
//! refuses, so there is no echo to test), and fail closed when user code replaced a
//! connection's instrumentation (the watch behind cancel safety and
//! stale-plan eviction).

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::{AsyncSharedPool, AsyncTransactionScopedPool};
use appschema_core::connection::ConnectionError;
use appschema_core::SchemaName;
use appschema_tempdb::TestDb;
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

const SECRET: &str = "Hunter2-not-for-logs";

fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains("Hunter2"),
        "{what} shows the password: {text}"
    );
}

fn db_with_acme() -> (TestDb, SchemaName) {
    let db = TestDb::new();
    db.conn().batch_execute("CREATE SCHEMA acme").unwrap();
    (db, SchemaName::new("acme").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_of_the_async_pools_and_builders_hides_the_password() {
    let (db, acme) = db_with_acme();
    let url = db
        .url()
        .replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
    for url in [url, format!("{}&password={SECRET}", db.url())] {
        let builder = AsyncSharedPool::builder(url.clone()).max_size(1);
        let shown = format!("{builder:?}");
        assert_hidden("AsyncSharedPoolBuilder", &shown);
        assert!(shown.contains("***"), "the URL is shown, redacted: {shown}");
        let pool = builder.clone().build().unwrap();
        drop(pool.get_for(&acme).await.unwrap());
        assert_hidden("AsyncSharedPool", &format!("{pool:?}"));
        let tenant_pool = builder.build_for(acme.clone()).unwrap();
        assert_hidden("AsyncTenantPool", &format!("{tenant_pool:?}"));

        let builder = AsyncTransactionScopedPool::builder(url.clone()).max_size(1);
        let shown = format!("{builder:?}");
        assert_hidden("AsyncTransactionScopedPoolBuilder", &shown);
        assert!(shown.contains("***"), "the URL is shown, redacted: {shown}");
        let pool = builder.build().unwrap();
        assert_hidden("AsyncTransactionScopedPool", &format!("{pool:?}"));
    }
}

/// An application's own instrumentation, set on a checked-out connection.
struct AppTracing;

impl Instrumentation for AppTracing {
    fn on_connection_event(&mut self, _event: InstrumentationEvent<'_>) {}
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn backend(conn: &mut AsyncPgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await
        .unwrap()
        .pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_pools_close_a_connection_whose_instrumentation_was_replaced() {
    let (db, acme) = db_with_acme();
    let shared = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let tenant = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .build_for(acme.clone())
        .unwrap();
    let scoped = AsyncTransactionScopedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    for name in [
        "AsyncSharedPool",
        "AsyncTenantPool",
        "AsyncTransactionScopedPool",
    ] {
        let mut pids = Vec::new();
        for replace in [false, true, false] {
            let pid = match name {
                "AsyncTransactionScopedPool" => scoped
                    .transaction_for(&acme, |conn| {
                        async move {
                            let pid = backend(conn).await;
                            if replace {
                                conn.set_instrumentation(AppTracing);
                            }
                            Ok::<_, ConnectionError>(pid)
                        }
                        .scope_boxed()
                    })
                    .await
                    .unwrap(),
                _ => {
                    let mut conn = if name == "AsyncSharedPool" {
                        shared.get_for(&acme).await.unwrap()
                    } else {
                        tenant.get().await.unwrap()
                    };
                    let pid = backend(&mut conn).await;
                    if replace {
                        conn.set_instrumentation(AppTracing);
                    }
                    pid
                }
            };
            pids.push(pid);
        }
        assert_eq!(
            pids[0], pids[1],
            "{name}: an untouched connection is reused"
        );
        assert_ne!(
            pids[1], pids[2],
            "{name}: a connection whose instrumentation was replaced was served again"
        );
    }
}
