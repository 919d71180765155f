//! Benchmark: how long a test of an application takes to get its database
//! from `appschema-test` with 3 fresh tenants, on the saas example's
//! migrations (shared `plans`; isolated `account`, `projects`, `tasks`).
//!
//! `cargo run --release -p appschema-bench --bin bench_harness --features axum [-- ROUNDS [BODY_MS]]`
//! (default 30 rounds; each test's body a sleep of BODY_MS, default 0: the
//! set-ups back to back, so the copies made ahead cannot keep up).
//!
//! Prints, each once per process: the throwaway server's start (skipped with
//! `DATABASE_URL`), the first test's set-up (builds the template: migrates an
//! empty database, creates the 3 tenants by migrations), then ROUNDS later
//! set-ups (a copy of the template): mean, median, p95 and max, with and
//! without a first query on each tenant through the harness's pool, and the
//! drop at the test's end; then as many rounds of the baseline, a test
//! without the harness: an empty database, migrated, the 3 tenants created by
//! the migrations.

#[path = "../../../examples/saas/app.rs"]
#[allow(dead_code)]
mod app;

use std::time::{Duration, Instant};

use appschema::migrate::Migrator;
use appschema::provision::{create_tenant, NewTenant};
use appschema_tempdb::TestDb;
use appschema_test::TestDatabase;
use diesel::connection::SimpleConnection;

const TENANTS: [&str; 3] = ["acme.localhost", "globex.localhost", "initech.localhost"];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "| {label} | {:.1} | {:.1} | {:.1} | {:.1} |",
        ms(mean),
        ms(pick(0.5)),
        ms(pick(0.95)),
        ms(*times.last().unwrap())
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .map(|a| a.parse().expect("ROUNDS is a number"))
        .unwrap_or(30);
    // How long each test's body takes (ms): the copies made ahead are made
    // meanwhile. 0: set-ups back to back.
    let body = Duration::from_millis(
        args.next()
            .map(|a| a.parse().expect("BODY_MS is a number"))
            .unwrap_or(0),
    );
    let migrations = app::migrations().expect("the saas migrations plan");

    let started = Instant::now();
    let server = appschema_test::server();
    let server_start = started.elapsed();
    match server {
        appschema_test::Server::External { .. } => println!("server: DATABASE_URL"),
        appschema_test::Server::Temp(_) => {
            println!("throwaway server started in {:.1} ms", ms(server_start))
        }
        appschema_test::Server::Citus(_) => {
            println!(
                "throwaway Citus cluster started in {:.1} ms",
                ms(server_start)
            )
        }
    }

    let started = Instant::now();
    let first = TestDatabase::builder(&migrations).tenants(TENANTS).build();
    println!(
        "first test (builds the template: migrate + 3 tenants): {:.1} ms",
        ms(started.elapsed())
    );
    drop(first);

    let (mut setup, mut setup_and_query, mut teardown) = (vec![], vec![], vec![]);
    let mut baseline = vec![];
    for _ in 0..rounds {
        let started = Instant::now();
        let db = TestDatabase::builder(&migrations).tenants(TENANTS).build();
        setup.push(started.elapsed());
        for host in TENANTS {
            db.conn_for(host)
                .batch_execute("SELECT count(*) FROM projects")
                .unwrap();
        }
        setup_and_query.push(started.elapsed());
        std::thread::sleep(body);
        let started = Instant::now();
        drop(db);
        teardown.push(started.elapsed());
    }
    for _ in 0..rounds {
        // Baseline: what a test does without the harness (an empty database,
        // migrated, the tenants created by the migrations).
        let started = Instant::now();
        let db = TestDb::new();
        let report = Migrator::new(db.url())
            .jobs(1)
            .migrate(&migrations, &|_| {})
            .unwrap();
        assert!(report.is_success());
        let mut conn = db.conn();
        for host in TENANTS {
            create_tenant(&mut conn, &migrations, &NewTenant::new(host).unwrap()).unwrap();
        }
        baseline.push(started.elapsed());
        drop(conn);
        drop(db);
    }
    println!(
        "\n{rounds} later tests (a copy of the template), each with a body of {} ms, ms:\n",
        body.as_millis()
    );
    println!("| step | mean | median | p95 | max |\n|---|---:|---:|---:|---:|");
    summary("set-up: database with 3 tenants, pools built", setup);
    summary(
        "set-up + one query on each tenant (3 pooled connections opened)",
        setup_and_query,
    );
    summary("drop at the test's end", teardown);
    summary(
        "baseline, no harness: empty database, migrate, create the 3 tenants",
        baseline,
    );
}
