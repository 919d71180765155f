//! Tenant affinity and the bound on tenants per connection on the async
//! pool: the sync suite (`appschema-core/tests/affinity.rs`) on
//! `AsyncSharedPool`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use appschema_async::AsyncSharedPool;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{create_tenants, tenant, WhoAmI};
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// Asserts `conn` is on `expected`'s path, naming the leak if not.
async fn assert_on(conn: &mut AsyncPgConnection, expected: &str) {
    let me: WhoAmI = diesel::sql_query(
        "SELECT current_schema() AS schema, (SELECT marker FROM items WHERE id = 1) AS marker",
    )
    .get_result(conn)
    .await
    .unwrap();
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some(expected), expected),
        "LEAK: a connection for `{expected}` is on another schema"
    );
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn pid(conn: &mut AsyncPgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await
        .unwrap()
        .pid
}

/// Polls (from a connection of its own) until backend `pid` is gone.
async fn assert_backend_exits(db: &TestDb, pid: i32) {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut admin = AsyncPgConnection::establish(db.url()).await.unwrap();
    loop {
        let n =
            diesel::sql_query("SELECT count(*)::int4 AS n FROM pg_stat_activity WHERE pid = $1")
                .bind::<Integer, _>(pid)
                .get_result::<Count>(&mut admin)
                .await
                .unwrap()
                .n;
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} still open after serving its limit of tenants"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_once_it_has_served_its_limit_of_distinct_tenants() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 7);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .max_tenants_per_connection(Some(3))
        .build()
        .unwrap();
    let pid_for = |i: usize| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.get_for(&tenant(i)).await.unwrap();
            assert_on(&mut conn, &format!("t{i}")).await;
            pid(&mut conn).await
        }
    };
    let first = pid_for(0).await;
    assert_eq!(pid_for(0).await, first);
    assert_eq!(pid_for(1).await, first);
    pid(&mut pool.get_shared().await.unwrap()).await;
    assert_eq!(pid_for(1).await, first);
    assert_eq!(pid_for(2).await, first, "the third tenant is still served");
    assert_backend_exits(&db, first).await;
    let second = pid_for(3).await;
    assert_ne!(second, first);
    assert_eq!(pid_for(4).await, second);
    assert_eq!(pid_for(5).await, second);
    assert_backend_exits(&db, second).await;
    assert_ne!(pid_for(6).await, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_prefers_the_connection_that_last_served_its_tenant() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 3);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(3)
        .build()
        .unwrap();
    let mut conns = Vec::new();
    let mut pids = Vec::new();
    for i in 0..3 {
        let mut conn = pool.get_for(&tenant(i)).await.unwrap();
        pids.push(pid(&mut conn).await);
        conns.push(conn);
    }
    drop(conns);
    for i in [0, 1, 0, 2, 2, 1, 0] {
        let mut conn = pool.get_for(&tenant(i)).await.unwrap();
        assert_on(&mut conn, &format!("t{i}")).await;
        assert_eq!(pid(&mut conn).await, pids[i], "t{i} not on its connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_parked_for_one_tenant_serves_another_without_waiting() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 3);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .connection_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for i in [0, 1, 2, 0] {
        let mut conn = pool.get_for(&tenant(i)).await.unwrap();
        assert_on(&mut conn, &format!("t{i}")).await;
    }
    assert_on(&mut pool.get_shared().await.unwrap(), "public").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_whose_path_user_code_changed_is_switched_back() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .build()
        .unwrap();
    {
        let mut conn = pool.get_for(&tenant(0)).await.unwrap();
        conn.batch_execute("SET search_path TO t1, public")
            .await
            .unwrap();
    }
    assert_on(&mut pool.get_for(&tenant(0)).await.unwrap(), "t0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mixed_tenant_checkouts_never_get_another_tenants_connection() {
    let db = TestDb::new();
    const TENANTS: usize = 12;
    create_tenants(&mut db.conn(), TENANTS);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(4)
        .max_tenants_per_connection(Some(5))
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (task + 1));
                let mut pids = HashSet::new();
                for _ in 0..120 {
                    let i = dice.below(TENANTS);
                    let mut conn = pool.get_for(&tenant(i)).await.unwrap();
                    assert_on(&mut conn, &format!("t{i}")).await;
                    pids.insert(pid(&mut conn).await);
                    if dice.below(4) == 0 {
                        let other = tenant(dice.below(TENANTS));
                        conn.batch_execute(&format!(
                            "SET search_path TO {}, public",
                            other.quoted()
                        ))
                        .await
                        .unwrap();
                    }
                }
                pids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert!(all.len() > 4, "only {} backends served", all.len());
}

/// Polls (with a deadline) until `n` checkouts are queued in `pool`'s lot.
async fn await_queued(pool: &AsyncSharedPool, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.queued() != n {
        assert!(
            Instant::now() < deadline,
            "{} checkouts queued, expected {n}",
            pool.queued()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Acquired = tokio::sync::mpsc::UnboundedSender<(usize, i32)>;

/// The next checkout to acquire its connection; fails (rather than hangs)
/// when none does within 30 s, e.g. after a holder's assertion failed.
async fn next_acquired(
    acquisitions: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, i32)>,
) -> (usize, i32) {
    tokio::time::timeout(Duration::from_secs(30), acquisitions.recv())
        .await
        .expect("no checkout acquired its connection within 30 s")
        .expect("the channel stays open")
}

/// A checkout in its own task that reports on `acquired` once it holds its
/// connection (checked to be on its tenant's path) and returns it when
/// told on the channel it hands back.
fn holder(
    pool: &AsyncSharedPool,
    i: usize,
    acquired: &Acquired,
) -> tokio::sync::oneshot::Sender<()> {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let pool = pool.clone();
    let acquired = acquired.clone();
    tokio::spawn(async move {
        let mut conn = pool.get_for(&tenant(i)).await.unwrap();
        assert_on(&mut conn, &format!("t{i}")).await;
        acquired.send((i, pid(&mut conn).await)).unwrap();
        let _ = released.await;
    });
    release
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_connection_goes_to_a_queued_checkout_for_its_tenant_first() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .build()
        .unwrap();
    let (acquired, mut acquisitions) = tokio::sync::mpsc::unbounded_channel();
    let first = holder(&pool, 0, &acquired);
    let (_, pid) = next_acquired(&mut acquisitions).await;
    // Queued in this order: t1 first, then t0.
    let for_t1 = holder(&pool, 1, &acquired);
    await_queued(&pool, 1).await;
    let for_t0 = holder(&pool, 0, &acquired);
    await_queued(&pool, 2).await;
    first.send(()).unwrap();
    // The connection served t0: the younger checkout for t0 gets it.
    assert_eq!(next_acquired(&mut acquisitions).await, (0, pid));
    for_t0.send(()).unwrap();
    assert_eq!(next_acquired(&mut acquisitions).await, (1, pid));
    for_t1.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_checkout_is_passed_over_at_most_max_passed_over_times() {
    use appschema_core::connection::MAX_PASSED_OVER;
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .build()
        .unwrap();
    let (acquired, mut acquisitions) = tokio::sync::mpsc::unbounded_channel();
    let mut current = holder(&pool, 0, &acquired);
    next_acquired(&mut acquisitions).await;
    let for_t1 = holder(&pool, 1, &acquired);
    await_queued(&pool, 1).await;
    for pass in 0..MAX_PASSED_OVER {
        let next = holder(&pool, 0, &acquired);
        await_queued(&pool, 2).await;
        current.send(()).unwrap();
        assert_eq!(
            next_acquired(&mut acquisitions).await.0,
            0,
            "pass {pass}: the connection went past the t0 checkout"
        );
        current = next;
    }
    let last_t0 = holder(&pool, 0, &acquired);
    await_queued(&pool, 2).await;
    current.send(()).unwrap();
    assert_eq!(
        next_acquired(&mut acquisitions).await.0,
        1,
        "the t1 checkout was passed over more than {MAX_PASSED_OVER} times"
    );
    for_t1.send(()).unwrap();
    assert_eq!(next_acquired(&mut acquisitions).await.0, 0);
    last_t0.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_checkout_dropped_before_its_hand_over_passes_it_on() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .build()
        .unwrap();
    let (acquired, mut acquisitions) = tokio::sync::mpsc::unbounded_channel();
    let first = holder(&pool, 0, &acquired);
    next_acquired(&mut acquisitions).await;
    // A request cancelled while queued (its future dropped) ...
    let cancelled = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get_for(&tenant(0)).await.map(|_| ()) }
    });
    await_queued(&pool, 1).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    assert_eq!(pool.queued(), 0, "a cancelled checkout stayed queued");
    // ... does not take the connection with it.
    let next = holder(&pool, 1, &acquired);
    await_queued(&pool, 1).await;
    first.send(()).unwrap();
    assert_eq!(next_acquired(&mut acquisitions).await.0, 1);
    next.send(()).unwrap();
}

/// Many more tasks than connections, so nearly every checkout queues and is
/// handed a connection another tenant's checkout just returned, often after
/// user code moved it to a third tenant's path: every checkout still
/// answers for its own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_mixed_tenant_checkouts_never_get_another_tenants_connection() {
    let db = TestDb::new();
    const TENANTS: usize = 6;
    create_tenants(&mut db.conn(), TENANTS);
    let pool = AsyncSharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(3)
        .connection_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let queued_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let (pool, queued_seen) = (pool.clone(), queued_seen.clone());
            tokio::spawn(async move {
                let mut dice = Dice(0x2545_F491_4F6C_DD1D ^ (task + 1));
                for _ in 0..60 {
                    // Skewed: t0 about half the time.
                    let i = if dice.below(2) == 0 {
                        0
                    } else {
                        dice.below(TENANTS)
                    };
                    let mut conn = pool.get_for(&tenant(i)).await.unwrap();
                    assert_on(&mut conn, &format!("t{i}")).await;
                    queued_seen.fetch_max(pool.queued(), std::sync::atomic::Ordering::Relaxed);
                    if dice.below(3) == 0 {
                        let other = tenant(dice.below(TENANTS));
                        conn.batch_execute(&format!(
                            "SET search_path TO {}, public",
                            other.quoted()
                        ))
                        .await
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        queued_seen.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no checkout ever queued"
    );
}
