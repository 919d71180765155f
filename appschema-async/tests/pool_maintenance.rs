//! `min_idle`, `idle_timeout` and `max_lifetime` of the async shared pool,
//! observed on the server (`pg_stat_activity`: the backends connected to
//! the test's own database) and in the pool's state. Every wait polls the
//! server's state with a deadline, never sleeps for a guessed time.

#[path = "../../appschema-core/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use appschema_async::AsyncSharedPool;
use appschema_tempdb::TestDb;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use support::{create_tenants, tenant};

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// The backends connected to the test's database, other than `admin`'s
/// (and, on a Citus coordinator, other than the connections Citus opens to
/// it itself).
async fn backends(admin: &mut AsyncPgConnection) -> BTreeSet<i32> {
    diesel::sql_query(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND backend_type = 'client backend' \
         AND application_name NOT LIKE 'citus%'",
    )
    .load::<Pid>(admin)
    .await
    .unwrap()
    .into_iter()
    .map(|p| p.pid)
    .collect()
}

async fn pid(conn: &mut AsyncPgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await
        .unwrap()
        .pid
}

/// Polls the server until `done`, given the pool's backends and the pool,
/// answers `Some`; for at most a minute (a broken pool then fails the test,
/// naming `what`, instead of hanging it).
async fn until<T>(
    admin: &mut AsyncPgConnection,
    pool: &AsyncSharedPool,
    what: &str,
    mut done: impl FnMut(&BTreeSet<i32>, &AsyncSharedPool) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = backends(admin).await;
        if let Some(value) = done(&now, pool) {
            return value;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until exactly `n` backends of the pool are connected, and the
/// pool counts `n` connections; returns the backends.
async fn until_backends(
    admin: &mut AsyncPgConnection,
    pool: &AsyncSharedPool,
    n: usize,
    what: &str,
) -> BTreeSet<i32> {
    // A backend shows before the pool counts it (still being set up), and
    // the pool forgets a connection before its backend is gone.
    until(admin, pool, what, |now, pool| {
        (now.len() == n && pool.state().connections as usize == n).then(|| now.clone())
    })
    .await
}

fn setup() -> TestDb {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_connections_are_opened_ahead_and_refilled_when_checked_out() {
    let db = setup();
    let mut admin = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(5)
        .min_idle(3)
        .build()
        .unwrap();
    // No checkout yet: the pool's own task opened them.
    let ahead = until(
        &mut admin,
        &pool,
        "min_idle opened 3 connections",
        |now, pool| {
            let state = pool.state();
            (now.len() == 3 && state.connections == 3 && state.idle == 3).then(|| now.clone())
        },
    )
    .await;

    // Two of them busy: the pool tops up to three idle, within max_size.
    let mut a = pool.get_for(&tenant(0)).await.unwrap();
    let mut b = pool.get_for(&tenant(1)).await.unwrap();
    let busy = BTreeSet::from([pid(&mut a).await, pid(&mut b).await]);
    assert!(
        busy.is_subset(&ahead),
        "checkouts took the connections opened ahead"
    );
    let now = until_backends(&mut admin, &pool, 5, "a refill up to max_size").await;
    assert!(now.is_superset(&ahead));
    drop((a, b));
    // Never more than max_size, and nothing closes the five (no timeout hit).
    assert_eq!(pool.state().connections, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_min_idle_are_closed_after_idle_timeout() {
    let db = setup();
    let mut admin = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(4)
        .min_idle(1)
        .idle_timeout(Some(Duration::from_millis(200)))
        .max_lifetime(None)
        .build()
        .unwrap();
    // A burst: four connections at once.
    let mut burst = Vec::new();
    for i in 0..4 {
        burst.push(pool.get_for(&tenant(i % 2)).await.unwrap());
    }
    let mut used = BTreeSet::new();
    for conn in &mut burst {
        used.insert(pid(conn).await);
    }
    assert_eq!(used.len(), 4);
    drop(burst);
    // Three closed; the one kept is one of the burst's, not a new one.
    let kept = until_backends(
        &mut admin,
        &pool,
        1,
        "idle connections closed down to min_idle",
    )
    .await;
    assert!(kept.is_subset(&used), "{kept:?} not among {used:?}");
    let mut conn = pool.get_for(&tenant(1)).await.unwrap();
    assert!(kept.contains(&pid(&mut conn).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_without_min_idle_closes_every_idle_connection() {
    let db = setup();
    let mut admin = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(2)
        .idle_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let a = pool.get_for(&tenant(0)).await.unwrap();
    let b = pool.get_for(&tenant(1)).await.unwrap();
    until_backends(&mut admin, &pool, 2, "two connections open").await;
    drop((a, b));
    until_backends(&mut admin, &pool, 0, "both idle connections closed").await;
    // The pool still works: a checkout opens a new one.
    let mut conn = pool.get_for(&tenant(0)).await.unwrap();
    assert_eq!(
        whoami(&mut conn).await,
        (Some("t0".to_string()), "t0".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_older_than_max_lifetime_are_replaced_and_switched_at_checkout() {
    let db = setup();
    let mut admin = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(2)
        .min_idle(2)
        .idle_timeout(None)
        .max_lifetime(Some(Duration::from_millis(400)))
        .build()
        .unwrap();
    // A connection of the first generation, used for t0.
    let first = {
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        pid(&mut conn).await
    };
    // Both replaced by younger ones, opened by the pool's task (min_idle).
    let original = backends(&mut admin).await;
    assert!(original.contains(&first));
    until(
        &mut admin,
        &pool,
        "every connection replaced after max_lifetime",
        |now, _| (now.len() == 2 && now.is_disjoint(&original)).then_some(()),
    )
    .await;
    // A replacement is on the tenant's path only because the checkout
    // switches it, like every connection: opened ahead, it is on the
    // shared-only path.
    let mut conn = pool.get_for(&tenant(1)).await.unwrap();
    assert!(!original.contains(&pid(&mut conn).await));
    assert_eq!(
        whoami(&mut conn).await,
        (Some("t1".to_string()), "t1".to_string())
    );
}

#[derive(QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    v: Option<String>,
}

/// The connection's current schema and the marker its `items` resolves to,
/// in two statements (see `support::whoami`: on Citus a statement reading a
/// tenant table runs on a worker).
async fn whoami(conn: &mut AsyncPgConnection) -> (Option<String>, String) {
    let schema = diesel::sql_query("SELECT current_schema() AS v")
        .get_result::<Text>(conn)
        .await
        .unwrap()
        .v;
    let marker = diesel::sql_query("SELECT marker AS v FROM items WHERE id = 1")
        .get_result::<Text>(conn)
        .await
        .unwrap()
        .v
        .unwrap();
    (schema, marker)
}

/// `build` outside a runtime cannot start the pool's task: the first
/// checkout does; and once that runtime is gone (its connections with it),
/// a checkout on a new runtime starts the task again, which reopens the
/// idle minimum there.
#[test]
fn a_pool_built_outside_a_runtime_starts_its_upkeep_at_the_first_checkout() {
    let db = setup();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(3)
        .min_idle(2)
        .build()
        .unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let mut before = BTreeSet::new();
    for round in 0..2 {
        let rt = runtime();
        before = rt.block_on(async {
            let mut admin = AsyncPgConnection::establish(db.url()).await.unwrap();
            drop(pool.get_for(&tenant(0)).await.unwrap());
            // The checkout's connection and those the task opened, all new:
            // the previous runtime's are closed. Two at least sit idle: the
            // task may have topped up while the checkout still held its
            // connection (then it opened two, as the sync pool's min_idle
            // would: three in all, within max_size).
            until(
                &mut admin,
                &pool,
                &format!("min_idle reached after the checkout (round {round})"),
                |now, pool| {
                    let state = pool.state();
                    (now.len() >= 2
                        && now.len() == state.connections as usize
                        && state.idle >= 2
                        && now.is_disjoint(&before))
                    .then(|| now.clone())
                },
            )
            .await
        });
        // The task ends with its runtime, and so do the connections.
        drop(rt);
    }
}
