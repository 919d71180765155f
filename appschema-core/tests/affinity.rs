//! Tenant affinity and the bound on tenants per connection (the sync
//! `SharedPool`): a checkout prefers the connection its tenant last used,
//! never gets one on another tenant's path unchecked, and a connection is
//! closed once it has served its limit of distinct tenants.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use appschema_core::connection::SharedPool;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{assert_on, backend_pid, create_tenants, tenant};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;

/// Whether the backend `pid` still exists, seen from another connection.
fn backend_alive(db: &TestDb, pid: i32) -> bool {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    diesel::sql_query("SELECT count(*)::int4 AS n FROM pg_stat_activity WHERE pid = $1")
        .bind::<Integer, _>(pid)
        .get_result::<Count>(&mut db.conn())
        .unwrap()
        .n
        > 0
}

/// Polls until backend `pid` is gone (a closed connection's backend exits
/// shortly after the client hangs up).
fn assert_backend_exits(db: &TestDb, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend_alive(db, pid) {
        assert!(
            Instant::now() < deadline,
            "backend {pid} still open after serving its limit of tenants"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic generator (no dependency for a test's dice).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn a_connection_is_closed_once_it_has_served_its_limit_of_distinct_tenants() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 7);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .max_tenants_per_connection(Some(3))
        .build()
        .unwrap();
    let pid_for = |i: usize| {
        let mut conn = pool.get_for(&tenant(i)).unwrap();
        assert_on(&mut conn, &format!("t{i}"));
        backend_pid(&mut conn)
    };
    // Repeats and shared work do not count; the third distinct tenant does.
    let first = pid_for(0);
    assert_eq!(pid_for(0), first);
    assert_eq!(pid_for(1), first);
    backend_pid(&mut pool.get_shared().unwrap());
    assert_eq!(pid_for(1), first);
    assert_eq!(pid_for(2), first, "the third tenant is still served");
    assert_backend_exits(&db, first);
    let second = pid_for(3);
    assert_ne!(second, first);
    assert_eq!(pid_for(4), second);
    assert_eq!(pid_for(5), second);
    assert_backend_exits(&db, second);
    assert_ne!(pid_for(6), second);
}

/// Issue 25: the backend that built a tenant's schema keeps its relations
/// in its caches as if it had served the tenant (~25 KiB each), so a
/// sign-up on a pooled connection counts towards the bound.
#[test]
fn tenants_created_on_a_pooled_connection_count_towards_its_bound() {
    use appschema_core::provision::{create_tenant, NewTenant};
    use appschema_core::{Migration, MigrationSet, Scope};
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    let set = MigrationSet::new(vec![Migration::new(
        "001",
        "001_notes",
        Scope::Isolated,
        "CREATE TABLE notes (id int8 PRIMARY KEY)",
    )]);
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .max_tenants_per_connection(Some(2))
        .build()
        .unwrap();
    let sign_up = |name: &str| {
        let mut conn = pool.get_shared().unwrap();
        create_tenant(&mut conn, &set, &NewTenant::new(name).unwrap()).unwrap();
        backend_pid(&mut conn)
    };
    let first = sign_up("new1.example.com");
    assert_eq!(
        sign_up("new2.example.com"),
        first,
        "one tenant created: under the bound, the connection is reused"
    );
    assert_backend_exits(&db, first);
    assert_ne!(backend_pid(&mut pool.get_shared().unwrap()), first);
}

#[test]
fn a_checkout_prefers_the_connection_that_last_served_its_tenant() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 3);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(3)
        .build()
        .unwrap();
    // Three connections at once, one per tenant, returned in that order: a
    // plain r2d2 pool would hand the last returned to the next checkout.
    let mut conns: Vec<_> = (0..3).map(|i| pool.get_for(&tenant(i)).unwrap()).collect();
    let pids: Vec<i32> = conns.iter_mut().map(|c| backend_pid(c)).collect();
    drop(conns);
    for i in [0, 1, 0, 2, 2, 1, 0] {
        let mut conn = pool.get_for(&tenant(i)).unwrap();
        assert_on(&mut conn, &format!("t{i}"));
        assert_eq!(
            backend_pid(&mut conn),
            pids[i],
            "t{i} not on its connection"
        );
    }
}

#[test]
fn a_connection_parked_for_one_tenant_serves_another_without_waiting() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 3);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .connection_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for i in [0, 1, 2, 0] {
        let mut conn = pool.get_for(&tenant(i)).unwrap();
        assert_on(&mut conn, &format!("t{i}"));
    }
    assert_on(&mut pool.get_shared().unwrap(), "public");
}

#[test]
fn a_parked_connection_whose_path_user_code_changed_is_switched_back() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .build()
        .unwrap();
    {
        let mut conn = pool.get_for(&tenant(0)).unwrap();
        conn.batch_execute("SET search_path TO t1, public").unwrap();
    }
    // Parked under t0, on t1's path: the checkout must not trust the lot.
    assert_on(&mut pool.get_for(&tenant(0)).unwrap(), "t0");
}

/// Threads check out random tenants (each answer checked), some leave the
/// connection on another tenant's path, and connections retire every few
/// tenants: no checkout ever answers for another tenant.
#[test]
fn concurrent_mixed_tenant_checkouts_never_get_another_tenants_connection() {
    let db = TestDb::new();
    const TENANTS: usize = 12;
    create_tenants(&mut db.conn(), TENANTS);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(4)
        .max_tenants_per_connection(Some(5))
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let pids: Vec<HashSet<i32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6u64)
            .map(|thread| {
                let pool = &pool;
                s.spawn(move || {
                    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (thread + 1));
                    let mut pids = HashSet::new();
                    for _ in 0..150 {
                        let i = dice.below(TENANTS);
                        let mut conn = pool.get_for(&tenant(i)).unwrap();
                        assert_on(&mut conn, &format!("t{i}"));
                        pids.insert(backend_pid(&mut conn));
                        if dice.below(4) == 0 {
                            let other = tenant(dice.below(TENANTS));
                            conn.batch_execute(&format!(
                                "SET search_path TO {}, public",
                                other.quoted()
                            ))
                            .unwrap();
                        }
                    }
                    pids
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: HashSet<i32> = pids.into_iter().flatten().collect();
    // 900 checkouts over 12 tenants, 5 tenants per connection: connections
    // were retired and replaced.
    assert!(all.len() > 4, "only {} backends served", all.len());
}

/// How long a test waits for a checkout to acquire its connection before
/// failing (rather than hanging, e.g. after a holder's assertion failed).
const WITHIN: Duration = Duration::from_secs(30);
const NONE_ACQUIRED: &str = "no checkout acquired its connection within 30 s";

/// Polls (with a deadline) until `n` checkouts are queued in `pool`'s lot.
fn await_queued(pool: &SharedPool, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.queued() != n {
        assert!(
            Instant::now() < deadline,
            "{} checkouts queued, expected {n}",
            pool.queued()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A checkout in its own thread that reports on `acquired` once it holds
/// its connection (checked to be on its tenant's path) and returns it when
/// told on the channel it hands back.
fn holder<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    pool: &SharedPool,
    i: usize,
    acquired: &std::sync::mpsc::Sender<(usize, i32)>,
) -> std::sync::mpsc::Sender<()> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let pool = pool.clone();
    let acquired = acquired.clone();
    s.spawn(move || {
        let mut conn = pool.get_for(&tenant(i)).unwrap();
        assert_on(&mut conn, &format!("t{i}"));
        acquired.send((i, backend_pid(&mut conn))).unwrap();
        let _ = released.recv();
    });
    release
}

#[test]
fn a_returned_connection_goes_to_a_queued_checkout_for_its_tenant_first() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .build()
        .unwrap();
    let (acquired, acquisitions) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let first = holder(s, &pool, 0, &acquired);
        let (_, pid) = acquisitions.recv_timeout(WITHIN).expect(NONE_ACQUIRED);
        // Queued in this order: t1 first, then t0.
        let for_t1 = holder(s, &pool, 1, &acquired);
        await_queued(&pool, 1);
        let for_t0 = holder(s, &pool, 0, &acquired);
        await_queued(&pool, 2);
        first.send(()).unwrap();
        // The connection served t0: the younger checkout for t0 gets it.
        assert_eq!(
            acquisitions.recv_timeout(WITHIN).expect(NONE_ACQUIRED),
            (0, pid)
        );
        for_t0.send(()).unwrap();
        assert_eq!(
            acquisitions.recv_timeout(WITHIN).expect(NONE_ACQUIRED),
            (1, pid)
        );
        for_t1.send(()).unwrap();
    });
}

#[test]
fn a_queued_checkout_is_passed_over_at_most_max_passed_over_times() {
    use appschema_core::connection::MAX_PASSED_OVER;
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(1)
        .build()
        .unwrap();
    let (acquired, acquisitions) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let mut current = holder(s, &pool, 0, &acquired);
        acquisitions.recv_timeout(WITHIN).expect(NONE_ACQUIRED);
        // A checkout for t1 queues; then, again and again, one for t0
        // queues behind it and the t0 connection is returned.
        let for_t1 = holder(s, &pool, 1, &acquired);
        await_queued(&pool, 1);
        for pass in 0..MAX_PASSED_OVER {
            let next = holder(s, &pool, 0, &acquired);
            await_queued(&pool, 2);
            current.send(()).unwrap();
            assert_eq!(
                acquisitions.recv_timeout(WITHIN).expect(NONE_ACQUIRED).0,
                0,
                "pass {pass}: the connection went past the t0 checkout"
            );
            current = next;
        }
        let last_t0 = holder(s, &pool, 0, &acquired);
        await_queued(&pool, 2);
        current.send(()).unwrap();
        assert_eq!(
            acquisitions.recv_timeout(WITHIN).expect(NONE_ACQUIRED).0,
            1,
            "the t1 checkout was passed over more than {MAX_PASSED_OVER} times"
        );
        for_t1.send(()).unwrap();
        assert_eq!(acquisitions.recv_timeout(WITHIN).expect(NONE_ACQUIRED).0, 0);
        last_t0.send(()).unwrap();
    });
}

/// Many more threads than connections, so nearly every checkout queues and
/// is handed a connection another tenant's checkout just returned, often
/// after user code moved it to a third tenant's path: every checkout still
/// answers for its own tenant.
#[test]
fn saturated_mixed_tenant_checkouts_never_get_another_tenants_connection() {
    let db = TestDb::new();
    const TENANTS: usize = 6;
    create_tenants(&mut db.conn(), TENANTS);
    let pool = SharedPool::builder(db.url())
        .tenant_affinity(true)
        .max_size(3)
        .connection_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let queued_seen = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for thread in 0..12u64 {
            let (pool, queued_seen) = (&pool, &queued_seen);
            s.spawn(move || {
                let mut dice = Dice(0x2545_F491_4F6C_DD1D ^ (thread + 1));
                for _ in 0..80 {
                    // Skewed: t0 about half the time.
                    let i = if dice.below(2) == 0 {
                        0
                    } else {
                        dice.below(TENANTS)
                    };
                    let mut conn = pool.get_for(&tenant(i)).unwrap();
                    assert_on(&mut conn, &format!("t{i}"));
                    queued_seen.fetch_max(pool.queued(), std::sync::atomic::Ordering::Relaxed);
                    if dice.below(3) == 0 {
                        let other = tenant(dice.below(TENANTS));
                        conn.batch_execute(&format!(
                            "SET search_path TO {}, public",
                            other.quoted()
                        ))
                        .unwrap();
                    }
                }
            });
        }
    });
    // The load did saturate the pool: checkouts were queued and handed over.
    assert!(queued_seen.into_inner() > 0, "no checkout ever queued");
}
