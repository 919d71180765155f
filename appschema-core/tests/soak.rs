//! 8 threads × thousands of checkouts across 50 tenants, with faults
//! injected at random (path changes, rollbacks, panics, killed backends,
//! raw transactions, and session state left behind: temporary tables named
//! like the tenant's, holdable cursors, `LISTEN`, settings, roles, advisory
//! locks, `lastval()`); every checkout checks `current_schema()`, the
//! tenant's marker row and that the session carries nothing of the previous
//! checkout. Zero leaks allowed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use appschema_core::connection::SharedPool;
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{backend_pid, create_tenants, tenant, whoami};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const TENANTS: usize = 50;
const THREADS: u64 = 8;
const CHECKOUTS_PER_THREAD: u64 = 1_500;

/// xorshift64*: enough randomness for fault injection, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn eight_threads_across_fifty_tenants_with_random_faults_never_leak() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), TENANTS);
    let role = format!("soak{}", db.name().trim_start_matches("appschema_test"));
    db.conn()
        .batch_execute(&format!(
            "CREATE ROLE {role} NOLOGIN; CREATE SEQUENCE public.soak_seq;"
        ))
        .unwrap();
    let pool = SharedPool::builder(db.url())
        .max_size(4)
        .connection_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let checked = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|seed| {
            let (pool, checked, faults) = (pool.clone(), checked.clone(), faults.clone());
            let url = db.url().to_string();
            let role = role.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1));
                let mut admin: Option<PgConnection> = None;
                for _ in 0..CHECKOUTS_PER_THREAD {
                    let i = (rng.next() % TENANTS as u64) as usize;
                    let t = tenant(i);
                    let mut conn = pool.get_for(&t).unwrap();
                    let me = whoami(&mut conn).unwrap();
                    assert_eq!(
                        (me.schema.as_deref(), me.marker.as_str()),
                        (Some(t.as_str()), t.as_str()),
                        "LEAK: checkout for {t}"
                    );
                    let session = diesel::sql_query(SESSION_STATE)
                        .get_result::<Session>(&mut *conn)
                        .unwrap();
                    assert!(session.is_clean(), "LEAK: session state for {t}: {session:?}");
                    let lastval = diesel::sql_query("SELECT lastval()").execute(&mut *conn);
                    assert!(lastval.is_err(), "LEAK: lastval() for {t}");
                    assert_eq!(conn.notifications_iter().count(), 0, "LEAK: notifications for {t}");
                    checked.fetch_add(1, Ordering::Relaxed);
                    let other = format!("t{}", (i + 1) % TENANTS);
                    let fault = rng.next() % 100;
                    if fault < 34 {
                        faults.fetch_add(1, Ordering::Relaxed);
                    }
                    match fault {
                        0..=3 => conn
                            .batch_execute(&format!("SET search_path TO {other}"))
                            .unwrap(),
                        4..=6 => conn.batch_execute("RESET ALL").unwrap(),
                        7 => conn.batch_execute("DISCARD ALL").unwrap(),
                        8..=10 => {
                            let _ = conn.transaction(|c| {
                                c.batch_execute(&format!("SET search_path TO {other}"))?;
                                Err::<(), _>(diesel::result::Error::RollbackTransaction)
                            });
                        }
                        11..=13 => {
                            let _ = conn.transaction(|c| {
                                c.transaction(|c| {
                                    c.batch_execute(&format!("SET LOCAL search_path TO {other}"))?;
                                    Err::<(), _>(diesel::result::Error::RollbackTransaction)
                                })
                            });
                        }
                        14..=15 => {
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                let mut conn = conn;
                                conn.batch_execute(&format!("SET search_path TO {other}"))
                                    .unwrap();
                                panic!("injected");
                            }));
                            assert!(r.is_err());
                            continue;
                        }
                        16 => {
                            let pid = backend_pid(&mut conn);
                            let admin =
                                admin.get_or_insert_with(|| PgConnection::establish(&url).unwrap());
                            diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
                                .execute(admin)
                                .unwrap();
                        }
                        17..=19 => conn
                            .batch_execute(&format!("BEGIN; SET search_path TO {other}; COMMIT"))
                            .unwrap(),
                        // Session state left behind, named like the next
                        // tenant's table where it can be.
                        20..=22 => conn
                            .batch_execute(
                                "CREATE TEMP TABLE IF NOT EXISTS items (id int8, marker text);
                                 INSERT INTO items VALUES (1, 'temp')",
                            )
                            .unwrap(),
                        23 => conn
                            .batch_execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
                            .unwrap(),
                        24..=25 => conn
                            .batch_execute(&format!("LISTEN soak; NOTIFY soak, '{t}'"))
                            .unwrap(),
                        26..=28 => conn
                            .batch_execute(&format!(
                                "SELECT set_config('app.user_id', '{t}', false); SET work_mem = '77MB'"
                            ))
                            .unwrap(),
                        29 => conn.batch_execute(&format!("SET ROLE {role}")).unwrap(),
                        30 => conn
                            .batch_execute(&format!("SET SESSION AUTHORIZATION {role}"))
                            .unwrap(),
                        31 => conn
                            .batch_execute("SELECT pg_try_advisory_lock(7)")
                            .unwrap(),
                        32..=33 => conn
                            .batch_execute("SELECT nextval('public.soak_seq')")
                            .unwrap(),
                        _ => {}
                    }
                }
            })
        })
        .collect();
    // Injected panics print their message; keep the output readable.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"injected") {
            hook(info)
        }
    }));
    for t in threads {
        t.join().unwrap();
    }
    let checked = checked.load(Ordering::Relaxed);
    assert_eq!(checked, THREADS * CHECKOUTS_PER_THREAD);
    assert!(faults.load(Ordering::Relaxed) > checked / 5);
    drop(pool);
    db.conn()
        .batch_execute(&format!("DROP ROLE {role}"))
        .unwrap();
}

/// Everything a checkout must have reset, in one row.
const SESSION_STATE: &str = "SELECT
    (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) AS temp_relations,
    (SELECT count(*) FROM pg_catalog.pg_cursors WHERE name <> '') AS cursors,
    (SELECT count(*) FROM pg_catalog.pg_listening_channels()) AS channels,
    (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) AS advisory_locks,
    pg_catalog.current_setting('app.user_id', true) AS user_id,
    pg_catalog.current_setting('work_mem') AS work_mem,
    session_user = current_user AND current_setting('role') = 'none' AS own_role";

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Session {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    temp_relations: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    cursors: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    channels: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    advisory_locks: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    user_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    work_mem: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    own_role: bool,
}

impl Session {
    /// Nothing left: `app.user_id` is unset, or reset to empty once set on
    /// this backend (as after `DISCARD ALL`).
    fn is_clean(&self) -> bool {
        self.temp_relations == 0
            && self.cursors == 0
            && self.channels == 0
            && self.advisory_locks == 0
            && self.user_id.as_deref().unwrap_or("").is_empty()
            && self.work_mem == "4MB"
            && self.own_role
    }
}
