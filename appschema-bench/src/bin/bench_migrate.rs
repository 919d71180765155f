//! Benchmark of `appschema-cli migrate` with 1,000 and 10,000 tenants of a
//! 3-table isolated schema, against two baselines over one connection with
//! no library in between: the bare ALTER statements in autocommit, and the
//! ALTER plus diesel's tracking row per tenant in one transaction each.
//!
//! A run with nothing pending is measured three ways: trusting the heads
//! recorded in `appschema_heads` (the default), with `--recheck` (reading
//! every tracking table, as every run did before heads were recorded), and
//! the first run after tenants were made without records (it reads every
//! tracking table and records them). The ADD COLUMN rotation also runs the
//! CLI with `--no-record-heads`, for what recording costs a real migration.
//!
//! ```sh
//! cargo build --release -p appschema-cli
//! cargo run --release -p appschema-bench --bin bench_migrate            # 1000 and 10000 tenants
//! cargo run --release -p appschema-bench --bin bench_migrate -- 1000    # one size
//! cargo run --release -p appschema-bench --bin bench_migrate -- 100000 --noop-only
//! ```
//! Measures the real CLI binary (`target/release/appschema-cli`) under
//! `/usr/bin/time -v` for its peak memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

const SCHEMA: &str = r#"
#[appschema::isolated]
pub mod tenant {
    diesel::table! { customers (id) { id -> Int8 } }
    diesel::table! { orders (id) { id -> Int8 } }
    diesel::table! { items (id) { id -> Int8 } }
}
"#;
const CREATE: &str = "CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers (id), total numeric);
CREATE TABLE items (id bigserial PRIMARY KEY, order_id bigint REFERENCES orders (id), sku text);";
const ALTER: &str = "ALTER TABLE orders ADD COLUMN note text;";

fn main() {
    let sizes: Vec<usize> = match std::env::args().nth(1) {
        Some(n) => vec![n.parse().expect("tenant count")],
        None => vec![1000, 10_000],
    };
    let noop_only = std::env::args().any(|a| a == "--noop-only");
    let cli = cli_path();
    println!(
        "| tenants | measurement | time | tenants/s | vs baseline 1 | vs baseline 2 | CLI peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        bench(n, &cli, noop_only);
    }
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

fn bench(n: usize, cli: &Path, noop_only: bool) {
    let db = appschema_tempdb::TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/schema.rs"), SCHEMA).unwrap();
    write_migration(root, "0001_tenant_tables", CREATE);

    // Tenants, already at 0001, created in big batches.
    appschema::registry::install(&mut conn).unwrap();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut sql = String::from("BEGIN;\n");
        for i in chunk {
            let s = format!("t{i:05}");
            sql.push_str(&format!(
                "CREATE SCHEMA {s}; SET LOCAL search_path TO {s};\n{CREATE}\n\
                 CREATE TABLE {s}.__diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);\n\
                 INSERT INTO {s}.__diesel_schema_migrations (version) VALUES ('0001');\n\
                 WITH t AS (INSERT INTO public.appschema_tenants (public_name, schema_name) VALUES ('{s}.example.com', '{s}') RETURNING id)\n\
                 INSERT INTO public.appschema_public_names (public_name, tenant_id, is_primary) SELECT '{s}.example.com', id, true FROM t;\n"
            ));
        }
        sql.push_str("COMMIT;");
        conn.batch_execute(&sql).unwrap();
    }
    eprintln!(
        "{n} tenants created in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // 1. Nothing pending. First the run an upgrade meets: no head recorded
    // yet (the tenants were made by hand), so it reads every tracking table
    // and records them. Then, in rotation, `rounds` runs each: trusting the
    // records (the CLI, and the library call alone: the database's share
    // with no process start or planning), and `--recheck`.
    let (first, _) = run_cli(cli, root, db.url(), 4, &[]);
    row(
        n,
        "migrate, nothing pending, first run: no head recorded yet (reads all, records)",
        first,
        None,
        None,
    );
    let set = appschema::MigrationSet::from_parts([("0001", appschema::Scope::Isolated, CREATE)]);
    let rounds = rounds_for(n);
    let mut pending = Vec::new();
    let mut library = Vec::new();
    let mut recheck = Vec::new();
    let mut rss_max = 0.0f64;
    let mut recheck_rss = 0.0f64;
    for _ in 0..rounds {
        let (secs, rss) = run_cli(cli, root, db.url(), 4, &[]);
        pending.push(secs);
        rss_max = rss_max.max(rss.unwrap_or(0.0));
        let started = Instant::now();
        let report = appschema::migrate::Migrator::new(db.url())
            .jobs(4)
            .migrate(&set, &|_| {})
            .unwrap();
        library.push(started.elapsed().as_secs_f64());
        assert_eq!(report.migrations_applied, 0);
        assert_eq!(report.tracking_tables_read, 0, "every head recorded");
        let (secs, rss) = run_cli(cli, root, db.url(), 4, &["--recheck"]);
        recheck.push(secs);
        recheck_rss = recheck_rss.max(rss.unwrap_or(0.0));
    }
    row(
        n,
        "migrate, nothing pending (--jobs 4): recorded heads",
        median(&mut pending),
        None,
        Some(rss_max),
    );
    row(
        n,
        "the same, library call only (`Migrator::migrate`, no process, no planning)",
        median(&mut library),
        None,
        None,
    );
    row(
        n,
        "migrate, nothing pending (--jobs 4) --recheck: reads every tracking table",
        median(&mut recheck),
        None,
        Some(recheck_rss),
    );
    if noop_only {
        return;
    }

    // 2. One ADD COLUMN: the two baselines, then the CLI with each of JOBS,
    // each `rounds` times in rotation (undone after each), so machine noise
    // hits every measurement alike; the table gives medians.
    let schemas: Vec<String> = (0..n).map(|i| format!("t{i:05}")).collect();
    let mut bare = Vec::new();
    let mut recorded = Vec::new();
    let mut cli_runs: [Vec<f64>; JOBS.len()] = Default::default();
    let mut cli_rss = [0.0f64; JOBS.len()];
    let mut unrecorded: [Vec<f64>; UNRECORDED_JOBS.len()] = Default::default();
    let migration = root.join("migrations/0002_order_note");
    for _ in 0..rounds {
        // Each baseline opens its own connection, timed, as the CLI does:
        // the connection that created the tenants has their tables in its
        // caches.
        let started = Instant::now();
        let mut fresh = PgConnection::establish(db.url()).unwrap();
        for s in &schemas {
            fresh
                .batch_execute(&format!("ALTER TABLE {s}.orders ADD COLUMN note text"))
                .unwrap();
        }
        bare.push(started.elapsed().as_secs_f64());
        drop(fresh);
        undo_column(&mut conn, &schemas);
        // Baseline 2: what a hand-written script that also records the
        // migration sends, one round trip per tenant: the ALTER and diesel's
        // tracking row in one transaction, under the tenant's search_path.
        let started = Instant::now();
        let mut fresh = PgConnection::establish(db.url()).unwrap();
        for s in &schemas {
            fresh
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL search_path TO {s}, public; {ALTER} \
                 INSERT INTO {s}.__diesel_schema_migrations (version) VALUES ('0002'); COMMIT;"
                ))
                .unwrap();
        }
        recorded.push(started.elapsed().as_secs_f64());
        drop(fresh);
        undo(&mut conn, &schemas);

        write_migration(root, "0002_order_note", ALTER);
        for (i, jobs) in JOBS.into_iter().enumerate() {
            let (secs, rss) = run_cli(cli, root, db.url(), jobs, &[]);
            cli_runs[i].push(secs);
            cli_rss[i] = cli_rss[i].max(rss.unwrap_or(0.0));
            let mut check = PgConnection::establish(db.url()).unwrap();
            assert_eq!(
                count_missing(&mut check, n),
                0,
                "every tenant got the column"
            );
            undo(&mut conn, &schemas);
        }
        for (i, jobs) in UNRECORDED_JOBS.into_iter().enumerate() {
            let (secs, _) = run_cli(cli, root, db.url(), jobs, &["--no-record-heads"]);
            unrecorded[i].push(secs);
            undo(&mut conn, &schemas);
        }
        std::fs::remove_dir_all(&migration).unwrap();
    }
    let baseline = median(&mut bare);
    let recorded = median(&mut recorded);
    row(
        n,
        "baseline 1: bare ALTERs, autocommit, one connection, no library",
        baseline,
        None,
        None,
    );
    row(
        n,
        "baseline 2: ALTER + tracking row per transaction, one connection, no library",
        recorded,
        None,
        None,
    );
    for (i, jobs) in JOBS.into_iter().enumerate() {
        row(
            n,
            &format!("migrate ADD COLUMN, --jobs {jobs}"),
            median(&mut cli_runs[i]),
            Some((baseline, recorded)),
            Some(cli_rss[i]),
        );
    }
    for (i, jobs) in UNRECORDED_JOBS.into_iter().enumerate() {
        let without = median(&mut unrecorded[i]);
        row(
            n,
            &format!("migrate ADD COLUMN, --jobs {jobs} --no-record-heads (what recording costs)"),
            without,
            Some((baseline, recorded)),
            None,
        );
        let with = JOBS
            .iter()
            .position(|&j| j == jobs)
            .expect("measured with heads");
        println!(
            "\n{n} tenants, --jobs {jobs}: ADD COLUMN with heads recorded ÷ without: {:.3} (time ratio; 1.0 = free)\n",
            median(&mut cli_runs[with].clone()) / without
        );
    }
}

/// The `--jobs` values also measured without recording heads.
const UNRECORDED_JOBS: [usize; 2] = [1, 4];

/// The `--jobs` values measured (this machine has 2 cores).
const JOBS: [usize; 3] = [1, 2, 4];

/// Runs of each measurement per size; the table reports their median.
fn rounds_for(tenants: usize) -> usize {
    // A 1,000-tenant run takes ~0.2 s, where a scheduling hiccup is 10 %:
    // more rounds there. A 10,000-tenant round takes ~30 s.
    if tenants <= 1000 {
        9
    } else {
        3
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn count_missing(conn: &mut PgConnection, n: usize) -> i64 {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct C {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        c: i64,
    }
    let have: C = diesel::sql_query(
        "SELECT count(*) AS c FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'note'",
    )
    .get_result(conn)
    .unwrap();
    n as i64 - have.c
}

/// Drops the new column and its tracking row in every tenant, and puts
/// each recorded head back to what it was before (only `0001`): a tracking
/// row deleted by hand is what recorded heads cannot see.
fn undo(conn: &mut PgConnection, schemas: &[String]) {
    undo_with(conn, schemas, |s| {
        format!(
            "ALTER TABLE {s}.orders DROP COLUMN note; DELETE FROM {s}.__diesel_schema_migrations WHERE version = '0002';"
        )
    });
    // And vacuumed, as autovacuum would between two deploys: the rotation
    // rewrites every record several times a minute.
    conn.batch_execute("UPDATE public.appschema_heads SET digest = md5('0001')")
        .unwrap();
    conn.batch_execute("VACUUM public.appschema_heads").unwrap();
}

/// Drops the new column in every tenant (baseline 1 records nothing).
fn undo_column(conn: &mut PgConnection, schemas: &[String]) {
    undo_with(conn, schemas, |s| {
        format!("ALTER TABLE {s}.orders DROP COLUMN note;")
    })
}

fn undo_with(conn: &mut PgConnection, schemas: &[String], sql_for: impl Fn(&str) -> String) {
    for chunk in schemas.chunks(1000) {
        let sql: String = chunk.iter().map(|s| sql_for(s)).collect();
        conn.batch_execute(&sql).unwrap();
    }
}

fn write_migration(root: &Path, name: &str, up: &str) {
    let d = root.join("migrations").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("up.sql"), up).unwrap();
}

/// Runs the CLI's `migrate` (with `extra` arguments) under `/usr/bin/time
/// -v`: (wall seconds, peak RSS in MB).
fn run_cli(cli: &Path, root: &Path, url: &str, jobs: usize, extra: &[&str]) -> (f64, Option<f64>) {
    let started = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg(cli)
        .args([
            "migrate",
            "--jobs",
            &jobs.to_string(),
            "--database-url",
            url,
        ])
        .args(extra)
        .current_dir(root)
        .output()
        .expect("/usr/bin/time");
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0);
    (secs, rss)
}

/// One table row; `baselines` are (bare ALTER, ALTER + tracking row)
/// times, shown as speed ratios (baseline time ÷ this time).
fn row(n: usize, what: &str, secs: f64, baselines: Option<(f64, f64)>, rss: Option<f64>) {
    println!(
        "| {n} | {what} | {secs:.2} s | {:.0} | {} | {} | {} |",
        n as f64 / secs,
        baselines.map_or("".into(), |(b, _)| format!("{:.2}x", b / secs)),
        baselines.map_or("".into(), |(_, r)| format!("{:.2}x", r / secs)),
        rss.map_or("".into(), |r| format!("{r:.1} MB")),
    );
}
