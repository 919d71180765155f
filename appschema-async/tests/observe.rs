//! The async pool's metrics (issue 27.1) against a real PostgreSQL: its
//! checkouts are counted by outcome and by switch or same tenant, under
//! `pool = "async"`. The recorder is this thread's only (the test runs its
//! own current-thread runtime on it), so tests in parallel do not mix.

use appschema_async::AsyncSharedPool;
use appschema_core::observe;
use appschema_core::SchemaName;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{create_tenants, tenant};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn async_checkouts_are_counted_by_outcome_and_by_switch_or_same_tenant() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let pool = AsyncSharedPool::builder(db.url())
                .max_size(1)
                .build()
                .unwrap();
            for i in [0, 0, 1, 1, 1, 0] {
                drop(pool.get_for(&tenant(i)).await.unwrap());
            }
            let missing = SchemaName::new("nobody").unwrap();
            assert!(pool.get_for(&missing).await.is_err());
        })
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, labels: &[(&str, &str)]| {
        let found = snapshot.iter().find(|(key, ..)| {
            let key = key.key();
            let mut have: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            let mut want = labels.to_vec();
            have.sort();
            want.sort();
            key.name() == name && have == want
        });
        match found {
            Some((.., DebugValue::Counter(n))) => *n,
            None => 0,
            Some(other) => panic!("{name} is not a counter: {other:?}"),
        }
    };
    let pool = [("pool", "async")];
    assert_eq!(counter(observe::CHECKOUT_SWITCHES, &pool), 3);
    assert_eq!(counter(observe::CHECKOUT_SAME_TENANT, &pool), 3);
    let ok = [("pool", "async"), ("outcome", "ok")];
    assert_eq!(counter(observe::CHECKOUTS, &ok), 6);
    let missing = [("pool", "async"), ("outcome", "schema_missing")];
    assert_eq!(counter(observe::CHECKOUTS, &missing), 1);
}

/// A writer into a shared buffer, for a subscriber whose output the test
/// reads back.
#[derive(Clone, Default)]
struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// A unit of `AsyncTransactionScopedPool` runs in an `appschema.unit` span
/// naming its tenant's schema (the shared-only unit's span names none), and
/// ends with a `done` event carrying its duration, failed ones marked so.
#[test]
fn async_transaction_scoped_units_run_in_spans_naming_their_tenant() {
    use appschema_async::scoped_futures::ScopedFutureExt;
    use appschema_async::AsyncTransactionScopedPool;
    use appschema_core::ConnectionError;
    use diesel_async::RunQueryDsl;

    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(buffer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let pool = AsyncTransactionScopedPool::builder(db.url())
                .build()
                .unwrap();
            pool.transaction_for(&tenant(1), |conn| {
                async move {
                    diesel::sql_query("SELECT 1").execute(conn).await?;
                    Ok::<_, ConnectionError>(())
                }
                .scope_boxed()
            })
            .await
            .unwrap();
            let failed = pool
                .transaction_for(&tenant(0), |conn| {
                    async move {
                        diesel::sql_query("SELECT * FROM no_such_table")
                            .execute(conn)
                            .await?;
                        Ok::<_, ConnectionError>(())
                    }
                    .scope_boxed()
                })
                .await;
            assert!(failed.is_err());
        })
    });
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let done = |schema: &str| {
        text.lines()
            .filter(|line| line.contains(&format!("appschema.unit{{schema=\"{schema}\"}}")))
            .filter(|line| line.contains("done") && line.contains("elapsed_ms"))
            .map(|line| line.contains("failed=true"))
            .collect::<Vec<_>>()
    };
    assert_eq!(done("t1"), [false], "{text}");
    assert_eq!(done("t0"), [true], "{text}");
}
