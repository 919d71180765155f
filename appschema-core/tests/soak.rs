//! 8 threads × thousands of checkouts across 50 tenants, with faults
//! injected at random; every checkout checks `current_schema()` and the
//! tenant's marker row. Zero leaks allowed.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use appschema_core::connection::SharedPool;
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use support::{backend_pid, create_tenants, tenant, whoami};

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
                    checked.fetch_add(1, Ordering::Relaxed);
                    let other = format!("t{}", (i + 1) % TENANTS);
                    let fault = rng.next() % 100;
                    if fault < 20 {
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
    assert!(faults.load(Ordering::Relaxed) > checked / 10);
}
