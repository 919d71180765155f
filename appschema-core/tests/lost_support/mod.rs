//! Killing a backend at a chosen moment, for the lost-connection tests of
//! the sync and the async pools.

use std::time::{Duration, Instant};

use appschema_tempdb::TestDb;
use diesel::prelude::*;
use diesel::sql_types::Integer;

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// On another thread: waits (up to 20 s) until a backend of database `db`
/// runs a statement containing `marker` and matches `extra` (SQL over
/// `pg_stat_activity`), terminates it, and returns its pid. The poll runs
/// on the `postgres` database, so it never waits for locks in `db`.
pub fn kill_when(db: &TestDb, marker: &str, extra: &str) -> std::thread::JoinHandle<i32> {
    kill_when_on(db.url(), db.name(), marker, extra)
}

/// [`kill_when`] for database `dbname` of the server `url` points at
/// directly (not through PgBouncer): the backends behind a PgBouncer.
#[allow(dead_code)]
pub fn kill_when_on(
    url: &str,
    dbname: &str,
    marker: &str,
    extra: &str,
) -> std::thread::JoinHandle<i32> {
    let admin_url = admin_url(url);
    let sql = format!(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = '{dbname}' AND pid <> pg_backend_pid() \
           AND position('{marker}' in query) > 0 AND {extra}"
    );
    let what = format!("`{marker}` ({extra})");
    std::thread::spawn(move || {
        let mut admin = PgConnection::establish(&admin_url).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: Vec<Pid> = diesel::sql_query(&sql).load(&mut admin).unwrap();
            if let Some(target) = found.first() {
                diesel::sql_query(format!("SELECT pg_terminate_backend({})", target.pid))
                    .execute(&mut admin)
                    .unwrap();
                return target.pid;
            }
            assert!(
                Instant::now() < deadline,
                "no backend ran {what} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// The server's `postgres` database (a maintenance connection that is
/// never in the way of the test's own database).
fn admin_url(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = &base[..base.rfind('/').unwrap()];
    format!("{base}/postgres?{query}")
}
