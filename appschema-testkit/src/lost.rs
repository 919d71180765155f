//! Killing a backend at a chosen moment, and the set-up the lost-connection
//! suites share: the sync and async twins of `lost_connection.rs` (the
//! session pools) and `lost_scoped.rs` (the transaction-scoped pools) in
//! appschema-core and appschema-async.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};

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

/// The database name in a connection URL (`…/name?params`): what
/// [`kill_when_on`] looks for behind a PgBouncer.
pub fn dbname_of(url: &str) -> String {
    url.split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The column `n` (a `bigint`, e.g. `count(*) AS n`) of the one row `sql`
/// returns.
pub fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

/// Makes a commit of tenant `t0` slow: a table `t0.commits` whose deferred
/// constraint trigger sleeps 60 s at `COMMIT`, holding the commit open long
/// enough for [`kill_when`] (`"COMMIT"`, `"wait_event = 'PgSleep'"`) to
/// terminate the backend during it. A unit that inserts into `commits`
/// then loses its connection while committing.
pub fn slow_commits_in_t0(conn: &mut PgConnection) {
    conn.batch_execute(
        "CREATE TABLE t0.commits (id int8 PRIMARY KEY);
         CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON t0.commits
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.slow_commit();",
    )
    .unwrap();
}

/// Polls (every 5 ms, up to 60 s) until `done` counts at least `n`; fails
/// naming `what` made no progress. The way the restart tests wait for their
/// workers before and after the restart, without a timed sleep.
pub fn wait_until_counted(done: &AtomicUsize, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{what} made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}
