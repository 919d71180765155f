//! The throwaway cluster really goes away, and test databases really are
//! separate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use appschema_tempdb::{TempCluster, TestDb};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

/// Is `pid` a live (not zombie) process? Linux-only, like the test machines.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => {
            !matches!(stat.rsplit(')').next().map(str::trim_start), Some(s) if s.starts_with('Z') || s.starts_with('X'))
        }
        Err(_) => false,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    owner: String,
}

#[test]
fn dropping_the_cluster_stops_the_server_and_deletes_its_directory() {
    let cluster = TempCluster::start().unwrap();
    let dir = cluster.dir().to_path_buf();
    let pid = cluster.pid();
    let mut conn = PgConnection::establish(&cluster.url()).unwrap();
    diesel::sql_query("SELECT 1").execute(&mut conn).unwrap();
    assert!(dir.join("data").join("PG_VERSION").is_file());
    assert!(alive(pid));
    drop(conn);

    drop(cluster);

    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!alive(pid), "postgres (pid {pid}) still runs");
}

/// Not a test on its own: run by the next test in a child process, which it
/// then kills with SIGKILL.
#[test]
fn watchdog_child_process() {
    if std::env::var_os("APPSCHEMA_WATCHDOG_CHILD").is_none() {
        return;
    }
    let cluster = TempCluster::start().unwrap();
    println!("CLUSTER {} {}", cluster.pid(), cluster.dir().display());
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn the_cluster_is_deleted_even_when_its_owner_is_killed() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "watchdog_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("APPSCHEMA_WATCHDOG_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(Result::unwrap)
        // The harness may print `test … ... ` before it on the same line.
        .find_map(|l| l.split_once("CLUSTER ").map(|(_, rest)| rest.to_string()))
        .expect("the child printed its cluster");
    let mut parts = line.split(' ');
    let pid: u32 = parts.next().unwrap().parse().unwrap();
    let dir = Path::new(parts.next().unwrap()).to_path_buf();
    assert!(dir.exists() && alive(pid));

    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();

    wait_until("the server stopped", || !alive(pid));
    wait_until("the directory is deleted", || !dir.exists());
}

#[test]
fn two_tests_at_once_cannot_see_each_others_tables() {
    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<_> = ["alice", "bob"]
        .into_iter()
        .map(|owner| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let db = TestDb::new();
                let mut conn = db.conn();
                diesel::sql_query("CREATE TABLE items (owner text NOT NULL)")
                    .execute(&mut conn)
                    .unwrap();
                diesel::sql_query("INSERT INTO items VALUES ($1)")
                    .bind::<Text, _>(owner)
                    .execute(&mut conn)
                    .unwrap();
                // Both databases exist and hold a table of the same name now.
                barrier.wait();
                let rows: Vec<Row> = diesel::sql_query("SELECT owner FROM items")
                    .load(&mut conn)
                    .unwrap();
                barrier.wait();
                (
                    db.name().to_string(),
                    rows.into_iter().map(|r| r.owner).collect::<Vec<_>>(),
                )
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_ne!(results[0].0, results[1].0);
    assert_eq!(results[0].1, ["alice"]);
    assert_eq!(results[1].1, ["bob"]);
}

#[test]
fn a_test_database_is_dropped_with_its_owner() {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    let db = TestDb::new();
    let name = db.name().to_string();
    let _open = db.conn(); // an open connection must not keep it alive
    drop(db);
    let mut admin = PgConnection::establish(&appschema_tempdb::server().url()).unwrap();
    let found: Exists =
        diesel::sql_query("SELECT count(*)::int AS n FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(&name)
            .get_result(&mut admin)
            .unwrap();
    assert_eq!(found.n, 0);
}

#[test]
fn a_pgbouncer_in_transaction_mode_forwards_to_the_cluster_and_is_removed_on_drop() {
    use diesel::prelude::*;
    let cluster = appschema_tempdb::TempCluster::start().unwrap();
    let bouncer = appschema_tempdb::TempPgBouncer::start(&cluster).unwrap();
    let dir = bouncer.dir().to_path_buf();
    let mut conn = PgConnection::establish(&bouncer.url_for("postgres")).unwrap();
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        n: i32,
    }
    let row: Row = diesel::sql_query("SELECT 41 + 1 AS n")
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(row.n, 42);
    drop(conn);
    drop(bouncer);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
