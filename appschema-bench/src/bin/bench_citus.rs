//! Benchmark: appschema on a Citus cluster (a coordinator and two workers,
//! all on this machine) against plain PostgreSQL on the same machine, in
//! one command:
//!
//! 1. creating one tenant — by claiming a spare, from the stored template,
//!    by migrations — median and p95 of ROUNDS creations each, interleaved;
//!    and the floor: the template's DDL sent by hand, no library (on Citus
//!    statement by statement, as it requires, in one transaction);
//! 2. an `ADD COLUMN` migration across TENANTS tenants (`migrate --jobs 4`),
//!    after creating them from the template (that time is printed too);
//! 3. moving one tenant of ROWS rows to the other worker, once by logical
//!    replication and once blocking writes, while a writer inserts into it
//!    as fast as it can: the move's duration, and the longest time one
//!    insert waited (the writes the move blocked).
//!
//! `cargo run --release -p appschema-bench --bin bench_citus [-- TENANTS ROUNDS ROWS]`
//! (defaults 1000, 30, 200000). Needs Citus (`../shared/citus/install.sh`).
//! Prints Markdown for BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use appschema_core::citus::{self, NodeAddr, TransferMode};
use appschema_core::migrate::Migrator;
use appschema_core::provision::{
    create_tenant, ensure_spares, generate_template, store_template, NewTenant, Source,
};
use appschema_core::{registry, MigrationSet, PublicName, Scope};
use appschema_tempdb::{TempCitus, TempCluster};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The application: a shared `plans` table, and tenants with five tables
/// (one referencing `plans`), their indexes and foreign keys.
fn app() -> MigrationSet {
    let mut parts = vec![(
        "20240101000000".to_string(),
        Scope::Shared,
        "CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO plans VALUES (1, 'free'), (2, 'pro');"
            .to_string(),
    )];
    for k in 0..5 {
        let parent = match k {
            0 => "plan_id int NOT NULL REFERENCES plans (id),".to_string(),
            _ => format!("parent_id bigint REFERENCES t{} (id),", k - 1),
        };
        parts.push((
            format!("2024010200000{k}"),
            Scope::Isolated,
            format!(
                "CREATE TABLE t{k} (id bigserial PRIMARY KEY, {parent} name text NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
                 CREATE INDEX t{k}_name ON t{k} (name);"
            ),
        ));
    }
    MigrationSet::from_parts(parts).with_citus_reference_tables(["plans"])
}

fn with_add_column(set: &MigrationSet) -> MigrationSet {
    let mut parts: Vec<(String, Scope, String)> = set
        .migrations()
        .iter()
        .map(|m| (m.version().into(), m.scope(), m.up_sql().into()))
        .collect();
    parts.push((
        "20240201000000".into(),
        Scope::Isolated,
        "ALTER TABLE t0 ADD COLUMN archived boolean NOT NULL DEFAULT false;".into(),
    ));
    MigrationSet::from_parts(parts).with_citus_reference_tables(["plans"])
}

fn connect(url: &str) -> PgConnection {
    let mut conn = PgConnection::establish(url).unwrap();
    conn.batch_execute("SET client_min_messages TO warning")
        .unwrap();
    conn
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let median = ms(samples[samples.len() / 2]);
    let p95 = ms(samples[(samples.len() * 95).div_ceil(100) - 1]);
    (median, p95)
}

/// A database on `url`'s server, migrated, with its template stored.
fn prepare(url: &str, set: &MigrationSet) -> PgConnection {
    let report = Migrator::new(url).jobs(2).migrate(set, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    let mut conn = connect(url);
    let template = generate_template(&mut conn, url, set).unwrap();
    store_template(&mut conn, &template).unwrap();
    conn
}

struct Target {
    label: &'static str,
    url: String,
}

fn creation(targets: &[Target], set: &MigrationSet, rounds: usize) {
    println!("\n### Creating one tenant ({rounds} each, interleaved; ms)\n");
    println!("| server | spare median | spare p95 | template median | template p95 | migrations median | migrations p95 | template DDL by hand (floor) median |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut conns: Vec<PgConnection> = targets.iter().map(|t| prepare(&t.url, set)).collect();
    let template = generate_template(&mut conns[0], &targets[0].url, set).unwrap();
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; targets.len()];
    for round in 0..rounds {
        for (i, conn) in conns.iter_mut().enumerate() {
            let citus = citus::is_citus(conn).unwrap();
            let schema = appschema_core::SchemaName::new(format!("floor_{round}")).unwrap();
            let ddl = template.sql_for(&schema);
            let started = Instant::now();
            if citus {
                // pg_dump's statements end at a line's `;` (this schema has
                // no function bodies).
                conn.batch_execute("BEGIN").unwrap();
                let mut statements = ddl.split(";\n").filter(|s| !s.trim().is_empty());
                let create = statements.next().unwrap();
                conn.batch_execute(create).unwrap();
                conn.batch_execute(&format!("SELECT citus_schema_distribute('{schema}')"))
                    .unwrap();
                for statement in statements {
                    conn.batch_execute(statement).unwrap();
                }
                conn.batch_execute("COMMIT").unwrap();
            } else {
                conn.batch_execute(&format!("BEGIN; {ddl}; COMMIT"))
                    .unwrap();
            }
            samples[i][3].push(started.elapsed());
            ensure_spares(conn, set, 1).unwrap();
            for (k, source) in [Source::Spare, Source::Template, Source::Migrations]
                .into_iter()
                .enumerate()
            {
                let request = NewTenant::new(&format!("c{k}-{round}.example"))
                    .unwrap()
                    .source(source);
                let started = Instant::now();
                let created = create_tenant(conn, set, &request).unwrap();
                samples[i][k].push(started.elapsed());
                assert_eq!(created.source, source);
            }
        }
    }
    for (t, s) in targets.iter().zip(samples) {
        let [spare, template, migrations, floor] = s.map(stats);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            t.label, spare.0, spare.1, template.0, template.1, migrations.0, migrations.1, floor.0
        );
    }
}

fn add_column(targets: &[Target], set: &MigrationSet, tenants: usize) {
    println!("\n### ADD COLUMN across {tenants} tenants (`migrate`, 4 jobs)\n");
    println!("| server | creating {tenants} tenants (template) | per tenant | migrate ADD COLUMN | per tenant |");
    println!("|---|---|---|---|---|");
    let next = with_add_column(set);
    for t in targets {
        let mut conn = connect(&t.url);
        let started = Instant::now();
        for i in 0..tenants {
            let request = NewTenant::new(&format!("m{i}.example"))
                .unwrap()
                .source(Source::Template);
            create_tenant(&mut conn, set, &request).unwrap();
        }
        let created = started.elapsed();
        let started = Instant::now();
        let report = Migrator::new(&t.url)
            .jobs(4)
            .migrate(&next, &|_| {})
            .unwrap();
        let migrated = started.elapsed();
        assert!(report.is_success(), "{:?}", report.failures.first());
        assert!(report.schemas_migrated >= tenants);
        println!(
            "| {} | {:.1} s | {:.1} ms | {:.1} s | {:.1} ms |",
            t.label,
            created.as_secs_f64(),
            ms(created) / tenants as f64,
            migrated.as_secs_f64(),
            ms(migrated) / report.schemas_migrated as f64
        );
    }
}

fn moves(url: &str, set: &MigrationSet, rows: usize) {
    println!(
        "\n### Moving a tenant of {rows} rows to the other worker, a writer inserting meanwhile\n"
    );
    println!("| mode | move | inserts during the move | longest insert wait | median insert |");
    println!("|---|---|---|---|---|");
    let mut conn = connect(url);
    let request = NewTenant::new("moving.example")
        .unwrap()
        .source(Source::Template);
    let schema = create_tenant(&mut conn, set, &request)
        .unwrap()
        .tenant
        .schema_name;
    conn.batch_execute(&format!(
        "INSERT INTO {schema}.t0 (plan_id, name) SELECT 1, md5(g::text) FROM generate_series(1, {rows}) g;
         ANALYZE {schema}.t0;"
    ))
    .unwrap();
    let nodes = citus::nodes(&mut conn).unwrap();
    let tenant = PublicName::new("moving.example").unwrap();
    for mode in [TransferMode::Logical, TransferMode::BlockWrites] {
        let here = citus::placements_by_schema(&mut conn).unwrap()[schema.as_str()].clone();
        let there: NodeAddr = nodes.iter().find(|n| **n != here).unwrap().clone();
        let stop = AtomicBool::new(false);
        let (inserts, longest_us) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut waits = Vec::new();
        let moved = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut w = connect(url);
                w.batch_execute(&format!("SET search_path = {schema}, public"))
                    .unwrap();
                let mut waits = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    w.batch_execute("INSERT INTO t0 (plan_id, name) VALUES (2, 'during')")
                        .unwrap();
                    let waited = started.elapsed();
                    waits.push(waited);
                    inserts.fetch_add(1, Ordering::Relaxed);
                    longest_us.fetch_max(waited.as_micros() as u64, Ordering::Relaxed);
                }
                waits
            });
            // Let the writer get going first.
            while inserts.load(Ordering::Relaxed) < 50 {
                std::thread::yield_now();
            }
            inserts.store(0, Ordering::Relaxed);
            longest_us.store(0, Ordering::Relaxed);
            let mut mover = connect(url);
            let moved = citus::move_tenant(&mut mover, &tenant, &there, mode).unwrap();
            stop.store(true, Ordering::Relaxed);
            waits = writer.join().unwrap();
            moved
        });
        let (median, _) = stats(waits);
        println!(
            "| {} | {:.2} s | {} | {:.1} ms | {:.2} ms |",
            moved.mode,
            moved.elapsed.as_secs_f64(),
            inserts.load(Ordering::Relaxed),
            longest_us.load(Ordering::Relaxed) as f64 / 1e3,
            median
        );
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("TENANTS ROUNDS ROWS are numbers"))
        .collect();
    let tenants = args.first().copied().unwrap_or(1000);
    let rounds = args.get(1).copied().unwrap_or(30);
    let rows = args.get(2).copied().unwrap_or(200_000);
    if let Err(why) = TempCitus::installed() {
        eprintln!("bench_citus needs Citus: {why}");
        std::process::exit(2);
    }
    let started = Instant::now();
    let citus = TempCitus::start().unwrap();
    let plain = TempCluster::start().unwrap();
    println!(
        "Citus 13.2 coordinator + 2 workers and a plain PostgreSQL, all on this machine (started in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let set = app();
    let mut targets = Vec::new();
    for (label, url) in [
        ("plain PostgreSQL", {
            connect(&plain.url())
                .batch_execute("CREATE DATABASE bench_create")
                .unwrap();
            plain.url_for("bench_create")
        }),
        ("Citus", citus.create_database("bench_create").unwrap()),
    ] {
        registry::install(&mut connect(&url)).unwrap();
        targets.push(Target { label, url });
    }
    creation(&targets, &set, rounds);

    let mut targets = Vec::new();
    for (label, url) in [
        ("plain PostgreSQL", {
            connect(&plain.url())
                .batch_execute("CREATE DATABASE bench_migrate")
                .unwrap();
            plain.url_for("bench_migrate")
        }),
        ("Citus", citus.create_database("bench_migrate").unwrap()),
    ] {
        prepare(&url, &set);
        targets.push(Target { label, url });
    }
    add_column(&targets, &set, tenants);

    let url = citus.create_database("bench_move").unwrap();
    prepare(&url, &set);
    moves(&url, &set, rows);
}
