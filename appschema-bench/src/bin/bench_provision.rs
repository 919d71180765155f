//! Benchmark: the cost of creating one tenant, by migrations, from the schema
//! template, and by claiming a spare, against two baselines that send DDL as
//! one batch over one connection with no library, for isolated schemas of 3
//! and 30 tables (indexes and foreign keys), written as migrations:
//!
//! - **A**: `BEGIN; CREATE SCHEMA; SET LOCAL search_path;` the migrations' SQL
//!   concatenated; `COMMIT` (no tracking table, no registry row);
//! - **B**: `BEGIN;` the very DDL the template path replays (the template's
//!   statements as pg_dump wrote them, the schema name substituted, the
//!   `__diesel_schema_migrations` table and its rows) `COMMIT` — the same DDL,
//!   without the library (no registry row, no template lookup). Built before
//!   timing starts.
//!
//! `cargo run --release -p appschema-bench --bin bench_provision [-- ROUNDS]` (default 40).
//! The ways are interleaved round by round so a noisy neighbour hits them
//! all alike. Prints a Markdown table for BENCHMARKS.md.

use std::time::{Duration, Instant};

use appschema_core::provision::{
    create_tenant, ensure_spares, generate_template, store_template, NewTenant, Source,
};
use appschema_core::{registry, MigrationSet, SchemaName, Scope};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::PgConnection;

/// One migration per table; table k references table k-1 and has two
/// secondary indexes.
fn table_sql(k: usize) -> String {
    let parent = if k == 0 {
        String::new()
    } else {
        format!("parent_id bigint REFERENCES t{} (id),", k - 1)
    };
    format!(
        "CREATE TABLE t{k} (
             id bigserial PRIMARY KEY,
             {parent}
             name text NOT NULL,
             amount numeric(12, 2) NOT NULL DEFAULT 0,
             status text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'done')),
             created_at timestamptz NOT NULL DEFAULT now());
         CREATE INDEX t{k}_name ON t{k} (name);
         CREATE INDEX t{k}_created ON t{k} (created_at);"
    )
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = ms(samples[samples.len() / 2]);
    let p95 = ms(samples[(samples.len() * 95).div_ceil(100) - 1]);
    (median, p95)
}

fn bench(tables: usize, rounds: usize) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let set = MigrationSet::from_parts((0..tables).map(|k| {
        (
            format!("{:014}", 20240101000000u64 + k as u64),
            Scope::Isolated,
            table_sql(k),
        )
    }));
    let ddl: String = (0..tables).map(table_sql).collect::<Vec<_>>().join("\n");
    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    store_template(&mut conn, &template).unwrap();
    let t = Instant::now();
    ensure_spares(&mut conn, &set, rounds).unwrap();
    let spare_fill = t.elapsed();

    let (mut base_a, mut base_b, mut by_template, mut by_migrations, mut by_spare) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let sql_a = format!(
            "BEGIN; CREATE SCHEMA base_a_{round}; SET LOCAL search_path = base_a_{round}; {ddl}; COMMIT;"
        );
        let schema_b = SchemaName::new(format!("base_b_{round}")).unwrap();
        let sql_b = format!("BEGIN; {} COMMIT;", template.sql_for(&schema_b));
        for (sql, samples) in [(sql_a, &mut base_a), (sql_b, &mut base_b)] {
            let t = Instant::now();
            conn.batch_execute(&sql).unwrap();
            samples.push(t.elapsed());
        }

        for (source, samples) in [
            (Source::Template, &mut by_template),
            (Source::Migrations, &mut by_migrations),
            (Source::Spare, &mut by_spare),
        ] {
            samples.push(timed_create(
                &mut conn,
                &set,
                &format!("{source}-{round}"),
                source,
            ));
        }
    }
    // Claims back to back, with no other tenant's DDL between them: in the
    // rounds above each claim follows two 3- or 30-table creations on the
    // same connection, whose after-effects (catalog churn, autovacuum on 2
    // shared cores) it pays for.
    ensure_spares(&mut conn, &set, rounds).unwrap();
    let mut claims_alone = vec![];
    for round in 0..rounds {
        claims_alone.push(timed_create(
            &mut conn,
            &set,
            &format!("alone-{round}"),
            Source::Spare,
        ));
    }
    let (a_med, _) = stats(base_a.clone());
    let (b_med, _) = stats(base_b.clone());
    for (name, samples) in [
        ("baseline A: migrations' SQL, one batch, no library", base_a),
        (
            "baseline B: the template's DDL + tracking rows, one batch, no library",
            base_b,
        ),
        ("from template", by_template),
        ("by migrations", by_migrations),
        ("spare claim", by_spare),
        ("spare claim, claims back to back", claims_alone),
    ] {
        let (med, p95) = stats(samples);
        println!(
            "| {tables} | {name} | {med:.2} | {p95:.2} | {:.2}x | {:.2}x |",
            med / a_med,
            med / b_med
        );
    }
    eprintln!(
        "({tables} tables: {rounds} spares built ahead in {:.2} s, not timed above)",
        spare_fill.as_secs_f64()
    );
    drop(conn);
}

/// Creates tenant `<label>.bench` from `source`, timed; checks it was built
/// that way (no fallback to another source).
fn timed_create(
    conn: &mut PgConnection,
    set: &MigrationSet,
    label: &str,
    source: Source,
) -> Duration {
    let request = NewTenant::new(&format!("{label}.bench"))
        .unwrap()
        .source(source);
    let t = Instant::now();
    let created = create_tenant(conn, set, &request).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(created.source, source);
    elapsed
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(40, |a| a.parse().expect("ROUNDS must be a number"));
    // Start the server before printing, so its start-up is not in any figure.
    let _ = appschema_tempdb::server();
    println!("| tables | way | median ms | p95 ms | median vs A | median vs B |");
    println!("|---|---|---|---|---|---|");
    for tables in [3, 30] {
        bench(tables, rounds);
    }
}
