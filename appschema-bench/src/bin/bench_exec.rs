//! Benchmark of `appschema-cli exec` running a one-row `UPDATE` in 10,000
//! tenants, against a hand-written loop over one connection with no library
//! in between (per tenant, one round trip: `BEGIN; SET LOCAL search_path;
//! UPDATE; COMMIT`), in the same command, rounds in rotation.
//!
//! ```sh
//! cargo build --release -p appschema-cli
//! cargo run --release -p appschema-bench --bin bench_exec            # 10000 tenants
//! cargo run --release -p appschema-bench --bin bench_exec -- 1000    # another size
//! ```
//! Measures the real CLI binary (`target/release/appschema-cli`), process
//! start, connection and registry read included; and the library's
//! [`AcrossTenants::run_sql`](appschema::across::AcrossTenants::run_sql) in
//! this process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use appschema::across::AcrossTenants;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const UPDATE: &str = "UPDATE counters SET n = n + 1 WHERE id = 1";

/// The `--jobs` values measured (this machine has 2 cores).
const JOBS: [usize; 3] = [1, 2, 4];

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("tenant count"));
    let cli = cli_path();
    let db = appschema_tempdb::TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    appschema::registry::install(&mut conn).unwrap();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut sql = String::from("BEGIN;\n");
        for i in chunk {
            let s = format!("t{i:05}");
            sql.push_str(&format!(
                "CREATE SCHEMA {s};
                 CREATE TABLE {s}.counters (id int PRIMARY KEY, n int NOT NULL);
                 INSERT INTO {s}.counters VALUES (1, 0);
                 WITH t AS (INSERT INTO public.appschema_tenants (public_name, schema_name) VALUES ('{s}.example.com', '{s}') RETURNING id)
                 INSERT INTO public.appschema_public_names (public_name, tenant_id, is_primary) SELECT '{s}.example.com', id, true FROM t;\n"
            ));
        }
        sql.push_str("COMMIT;");
        conn.batch_execute(&sql).unwrap();
    }
    conn.batch_execute("VACUUM ANALYZE").unwrap();
    eprintln!(
        "{n} tenants created in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let rounds = if n <= 1000 { 9 } else { 3 };
    let mut baseline = Vec::new();
    let mut library = Vec::new();
    let mut cli_runs: [Vec<f64>; JOBS.len()] = Default::default();
    let mut expected = 0;
    // A warm-up run of each, not measured: the first touch of 10,000
    // relations after their creation costs every contender alike.
    hand_written_loop(db.url());
    expected += 1;
    for _ in 0..rounds {
        baseline.push(hand_written_loop(db.url()));
        expected += 1;
        check(&mut conn, n, expected);

        let started = Instant::now();
        let report = AcrossTenants::new(db.url())
            .jobs(1)
            .run_sql(UPDATE, &|_| {})
            .unwrap();
        library.push(started.elapsed().as_secs_f64());
        assert!(
            report.is_success() && report.tenants_done == n,
            "{report:?}"
        );
        expected += 1;
        check(&mut conn, n, expected);

        for (i, jobs) in JOBS.into_iter().enumerate() {
            cli_runs[i].push(run_cli(&cli, db.url(), jobs));
            expected += 1;
            check(&mut conn, n, expected);
        }
    }
    let base = median(&mut baseline);
    println!("| tenants | measurement | time | tenants/s | vs hand-written loop |");
    println!("|---|---|---|---|---|");
    row(
        n,
        "hand-written loop, one connection, no library",
        base,
        base,
    );
    row(
        n,
        "`AcrossTenants::run_sql`, jobs 1 (in process)",
        median(&mut library),
        base,
    );
    for (i, jobs) in JOBS.into_iter().enumerate() {
        row(
            n,
            &format!("`appschema-cli exec --jobs {jobs}`"),
            median(&mut cli_runs[i]),
            base,
        );
    }
}

/// What an operator would write by hand: read the tenants, then per
/// tenant one round trip on one connection. Its wall time, connecting
/// included.
fn hand_written_loop(url: &str) -> f64 {
    #[derive(QueryableByName)]
    struct S {
        #[diesel(sql_type = diesel::sql_types::Text)]
        schema_name: String,
    }
    let started = Instant::now();
    let mut conn = PgConnection::establish(url).unwrap();
    let schemas: Vec<S> =
        diesel::sql_query("SELECT schema_name FROM public.appschema_tenants ORDER BY public_name")
            .load(&mut conn)
            .unwrap();
    for s in &schemas {
        conn.batch_execute(&format!(
            "BEGIN; SET LOCAL search_path TO \"{}\", public; {UPDATE}; COMMIT;",
            s.schema_name
        ))
        .unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// Every tenant's counter is at `expected`: each contender did all its work.
fn check(conn: &mut PgConnection, n: usize, expected: i32) {
    #[derive(QueryableByName)]
    struct C {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        c: i64,
    }
    // One statement over every tenant would be a 10,000-way UNION: check in
    // slices of 500 instead.
    let mut ok = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let parts: Vec<String> = chunk
            .iter()
            .map(|i| format!("SELECT n FROM t{i:05}.counters"))
            .collect();
        let c: C = diesel::sql_query(format!(
            "SELECT count(*) AS c FROM ({}) x WHERE n = {expected}",
            parts.join(" UNION ALL ")
        ))
        .get_result(conn)
        .unwrap();
        ok += c.c;
    }
    assert_eq!(ok, n as i64, "every tenant's counter is at {expected}");
}

fn cli_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("release/appschema-cli");
    assert!(
        path.is_file(),
        "build the CLI first: cargo build --release -p appschema-cli"
    );
    path
}

/// The CLI's wall time, process start included.
fn run_cli(cli: &Path, url: &str, jobs: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(cli)
        .args(["exec", "--sql", UPDATE, "--jobs", &jobs.to_string()])
        .env("DATABASE_URL", url)
        .current_dir(dir.path())
        .output()
        .expect("run appschema-cli");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One table row, with the speed ratio to the hand-written loop (its time ÷
/// this time: above 1 is faster).
fn row(n: usize, what: &str, secs: f64, base: f64) {
    println!(
        "| {n} | {what} | {secs:.2} s | {:.0} | {:.2}x |",
        n as f64 / secs,
        base / secs
    );
}
