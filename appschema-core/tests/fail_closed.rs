//! Fail closed: a pooled connection whose instrumentation user code
//! replaced (through `DerefMut`: `set_instrumentation`) has lost appschema's
//! watch (stale-plan eviction), so the pool closes it when it comes back
//! instead of serving it again with that guard off.

use appschema_core::connection::{ConnectionError, SharedPool, TransactionScopedPool};
use appschema_core::SchemaName;
use appschema_tempdb::TestDb;
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::Integer;

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

fn backend(conn: &mut PgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .unwrap()
        .pid
}

fn db_with_acme() -> (TestDb, SchemaName) {
    let db = TestDb::new();
    db.conn().batch_execute("CREATE SCHEMA acme").unwrap();
    (db, SchemaName::new("acme").unwrap())
}

/// Runs `checkout` (which reports its connection's backend) three times on
/// a one-connection pool: the second run replaces the instrumentation.
/// The first two must share a backend (the pool reuses a connection left
/// alone), the third must have a new one.
fn assert_replaced_instrumentation_closes_the_connection(
    pool: &str,
    mut checkout: impl FnMut(bool) -> i32,
) {
    let first = checkout(false);
    let second = checkout(true);
    assert_eq!(first, second, "{pool}: an untouched connection is reused");
    let third = checkout(false);
    assert_ne!(
        second, third,
        "{pool}: a connection whose instrumentation was replaced was served again"
    );
}

#[test]
fn shared_pool_closes_a_connection_whose_instrumentation_was_replaced() {
    let (db, acme) = db_with_acme();
    let pool = SharedPool::builder(db.url()).max_size(1).build().unwrap();
    assert_replaced_instrumentation_closes_the_connection("SharedPool", |replace| {
        let mut conn = pool.get_for(&acme).unwrap();
        let pid = backend(&mut conn);
        if replace {
            conn.set_instrumentation(AppTracing);
        }
        pid
    });
}

#[test]
fn tenant_pool_closes_a_connection_whose_instrumentation_was_replaced() {
    let (db, acme) = db_with_acme();
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .build_for(acme)
        .unwrap();
    assert_replaced_instrumentation_closes_the_connection("TenantPool", |replace| {
        let mut conn = pool.get().unwrap();
        let pid = backend(&mut conn);
        if replace {
            conn.set_instrumentation(AppTracing);
        }
        pid
    });
}

#[test]
fn transaction_scoped_pool_closes_a_connection_whose_instrumentation_was_replaced() {
    let (db, acme) = db_with_acme();
    let pool = TransactionScopedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    assert_replaced_instrumentation_closes_the_connection("TransactionScopedPool", |replace| {
        pool.transaction_for(&acme, |conn| {
            let pid = backend(conn);
            if replace {
                conn.set_instrumentation(AppTracing);
            }
            Ok::<_, ConnectionError>(pid)
        })
        .unwrap()
    });
}

diesel::table! {
    t (v) {
        v -> Text,
    }
}

#[test]
fn a_stale_plan_closes_a_transaction_scoped_connection() {
    // The watch the transaction-scoped pool now carries: with the statement
    // cache on, a cached statement whose result type changed fails once,
    // and its connection is not reused.
    let (db, acme) = db_with_acme();
    db.conn()
        .batch_execute("CREATE TABLE acme.t (v varchar(10)); INSERT INTO acme.t VALUES ('one')")
        .unwrap();
    let pool = TransactionScopedPool::builder(db.url())
        .max_size(1)
        .prepared_statement_cache(true)
        .build()
        .unwrap();
    let read = |conn: &mut PgConnection| t::table.select(t::v).first::<String>(conn);
    let before = pool
        .transaction_for(&acme, |conn| {
            Ok::<_, ConnectionError>((backend(conn), read(conn)?))
        })
        .unwrap();
    assert_eq!(before.1, "one");
    db.conn()
        .batch_execute("ALTER TABLE acme.t ALTER COLUMN v TYPE text")
        .unwrap();
    let stale = pool.transaction_for(&acme, |conn| Ok::<_, ConnectionError>(read(conn)?));
    assert!(
        matches!(&stale, Err(ConnectionError::Query { error, .. }) if appschema_core::connection::is_stale_plan(error)),
        "{stale:?}"
    );
    let after = pool
        .transaction_for(&acme, |conn| {
            Ok::<_, ConnectionError>((backend(conn), read(conn)?))
        })
        .unwrap();
    assert_eq!(after.1, "one");
    assert_ne!(before.0, after.0, "the stale connection was closed");
}
