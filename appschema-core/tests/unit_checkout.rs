//! A unit of work's `BEGIN` travels in its checkout's message
//! (`SharedPool::run_retrying`, `read_retrying` and their shared and
//! `TenantPool` twins): one round trip fewer per unit. PostgreSQL starts
//! that message's transaction before the message's `RESET ALL` runs, so
//! characteristics an earlier checkout left (`SET SESSION CHARACTERISTICS`,
//! `default_transaction_*`) would be the unit's, were the checkout not to
//! refuse them and reset them first; and the unit's rollback undoes the
//! checkout's reset, which the next checkout must redo.

use std::time::Duration;

use appschema_core::connection::{ConnectionError, SharedPool};
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{assert_on, create_tenants, tenant};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    v: String,
}

fn value(conn: &mut PgConnection, sql: &str) -> QueryResult<String> {
    diesel::sql_query(sql)
        .get_result::<Value>(conn)
        .map(|r| r.v)
}

/// The running transaction's characteristics, as one text.
const CHARACTERISTICS: &str =
    "SELECT current_setting('transaction_isolation') || ', read only ' || \
     current_setting('transaction_read_only') || ', deferrable ' || \
     current_setting('transaction_deferrable') AS v";

/// One connection, so every checkout gets the previous one's backend.
fn setup() -> (TestDb, SharedPool) {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (db, pool)
}

/// What A leaves on its session: every characteristic a `BEGIN` applies.
const LEFT_BY_A: [&str; 2] = [
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
    "SELECT set_config('default_transaction_read_only', 'on', false), \
            set_config('default_transaction_isolation', 'repeatable read', false), \
            set_config('default_transaction_deferrable', 'on', false)",
];

#[test]
fn a_unit_after_a_session_left_other_characteristics_runs_with_the_defaults() {
    let (_db, pool) = setup();
    for left in LEFT_BY_A {
        // Read-write units, for a tenant and shared: a left-over READ ONLY
        // would fail their writes.
        let a_pid = {
            let mut conn = pool.get_for(&tenant(0)).unwrap();
            conn.batch_execute(left).unwrap();
            value(&mut conn, "SELECT pg_backend_pid()::text AS v").unwrap()
        };
        let (seen, b_pid) = pool
            .run_retrying(&tenant(1), |conn| {
                Ok::<_, ConnectionError>((
                    value(conn, CHARACTERISTICS)?,
                    value(conn, "SELECT pg_backend_pid()::text AS v")?,
                ))
            })
            .unwrap();
        // Reset, not replaced: the dirty reset puts the defaults back.
        assert_eq!(a_pid, b_pid, "{left}");
        assert_eq!(
            seen, "read committed, read only off, deferrable off",
            "{left}"
        );
        pool.get_for(&tenant(0))
            .unwrap()
            .batch_execute(left)
            .unwrap();
        let seen = pool
            .run_shared_retrying(|conn| Ok::<_, ConnectionError>(value(conn, CHARACTERISTICS)?))
            .unwrap();
        assert_eq!(
            seen, "read committed, read only off, deferrable off",
            "{left}"
        );
        // A read-only unit: read only by its own BEGIN, nothing else of A's.
        pool.get_for(&tenant(0))
            .unwrap()
            .batch_execute(left)
            .unwrap();
        let seen = pool
            .read_retrying(&tenant(1), |conn| {
                Ok::<_, ConnectionError>(value(conn, CHARACTERISTICS)?)
            })
            .unwrap();
        assert_eq!(
            seen, "read committed, read only on, deferrable off",
            "{left}"
        );
        let tenant_pool = SharedPool::builder(_db.url())
            .max_size(1)
            .build_for(tenant(1))
            .unwrap();
        tenant_pool.get().unwrap().batch_execute(left).unwrap();
        let seen = tenant_pool
            .run_retrying(|conn| Ok::<_, ConnectionError>(value(conn, CHARACTERISTICS)?))
            .unwrap();
        assert_eq!(
            seen, "read committed, read only off, deferrable off",
            "{left}"
        );
    }
}

#[test]
fn a_unit_runs_on_its_tenants_path_in_a_transaction_of_its_own() {
    let (_db, pool) = setup();
    for i in [0, 1, 0] {
        let (in_block, path) = pool
            .read_retrying(&tenant(i), |conn| {
                assert_on(conn, &format!("t{i}"));
                // A savepoint works only inside a transaction block.
                conn.batch_execute("SAVEPOINT inside; RELEASE SAVEPOINT inside")?;
                let path = value(conn, "SELECT current_setting('search_path') AS v")?;
                Ok::<_, ConnectionError>((true, path))
            })
            .unwrap();
        assert!(in_block);
        assert_eq!(path, format!("t{i}, public"));
        // And the unit committed: the connection is reused, not closed.
        let pid: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "pg_backend_pid()",
        ))
        .get_result(&mut *pool.get_for(&tenant(i)).unwrap())
        .unwrap();
        let again: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "pg_backend_pid()",
        ))
        .get_result(&mut *pool.get_for(&tenant(i)).unwrap())
        .unwrap();
        assert_eq!(pid, again);
    }
}

#[test]
fn a_unit_that_rolls_back_its_checkout_leaves_nothing_for_the_next() {
    let (_db, pool) = setup();
    // A leaves a setting and a temporary table.
    pool.get_for(&tenant(0))
        .unwrap()
        .batch_execute(
            "SELECT set_config('app.user_id', 'A-secret', false); \
             CREATE TEMP TABLE a_temp AS SELECT 'A-secret'::text AS v",
        )
        .unwrap();
    // B's unit fails: its rollback undoes the reset its checkout ran in the
    // same transaction, bringing A's state back on the server...
    let failed = pool.run_retrying(&tenant(1), |conn| {
        let seen = value(
            conn,
            "SELECT coalesce(current_setting('app.user_id', true), '') AS v",
        )?;
        assert_eq!(seen, "", "B saw A's setting");
        Err::<(), _>(ConnectionError::from(
            diesel::result::Error::RollbackTransaction,
        ))
    });
    assert!(failed.is_err());
    // ...which the next checkout resets again.
    let mut conn = pool.get_for(&tenant(1)).unwrap();
    assert_eq!(
        value(
            &mut conn,
            "SELECT coalesce(current_setting('app.user_id', true), '') AS v"
        )
        .unwrap(),
        ""
    );
    assert!(value(&mut conn, "SELECT v FROM a_temp").is_err());
    assert_on(&mut conn, "t1");
}
