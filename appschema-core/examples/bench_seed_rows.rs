//! Benchmark: creating a tenant from the schema template of a history that
//! seeds many rows, against creating it by the migrations, on one
//! connection to a throwaway PostgreSQL; plus the template's generation
//! time and size and this process's peak memory (`VmHWM`).
//!
//! `cargo run --release -p appschema-core --example bench_seed_rows [-- ROWS ROUNDS]`
//! (default 100000 rows, 8 rounds). The two ways are interleaved round by
//! round; each tenant is dropped outside the timing. It uses only API that
//! existed before seed schemas, so the same file measures the code before
//! (rows in the template's text) and after (rows copied from the seed
//! schema). Prints a Markdown table for BENCHMARKS.md.

use std::time::{Duration, Instant};

use appschema_core::provision::{
    create_tenant, drop_tenant, generate_template, store_template, DropMode, NewTenant, Source,
};
use appschema_core::{registry, MigrationSet, PublicName, Scope};
use appschema_tempdb::TestDb;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let p95 = ((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1;
    (v[v.len() / 2], v[p95])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(100_000, |a| a.parse().expect("ROWS"));
    let rounds: usize = args.next().map_or(8, |a| a.parse().expect("ROUNDS"));
    let set = MigrationSet::from_parts([
        (
            "20240101000000".to_string(),
            Scope::Isolated,
            format!(
                "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
                 INSERT INTO big SELECT g, md5(g::text) || repeat('x', 100)
                   FROM generate_series(1, {rows}) g;
                 CREATE TABLE language (id serial PRIMARY KEY, code text NOT NULL UNIQUE);
                 INSERT INTO language (code) SELECT 'l' || g FROM generate_series(1, 184) g;"
            ),
        ),
        (
            "20240102000000".to_string(),
            Scope::Isolated,
            "CREATE INDEX big_payload ON big (payload);".to_string(),
        ),
    ]);
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let peak_at_start = peak_rss_mib();

    let started = Instant::now();
    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    let generated = started.elapsed();
    let text_bytes = template.to_string().len();
    store_template(&mut conn, &template).unwrap();
    drop(template);
    let peak_after_generation = peak_rss_mib();

    let mut by_template = Vec::new();
    let mut by_migrations = Vec::new();
    for round in 0..rounds {
        for (source, times) in [
            (Source::Template, &mut by_template),
            (Source::Migrations, &mut by_migrations),
        ] {
            let name = format!("{}{round}.bench", source.as_str());
            let request = NewTenant::new(&name).unwrap().source(source);
            let started = Instant::now();
            let created = create_tenant(&mut conn, &set, &request).unwrap();
            times.push(ms(started.elapsed()));
            assert_eq!(created.source, source);
            drop_tenant(&mut conn, &PublicName::new(&name).unwrap(), DropMode::Drop).unwrap();
        }
    }
    let peak_at_end = peak_rss_mib();

    println!(
        "{rows} seed rows, {rounds} rounds; template generated in {:.0} ms, {text_bytes} bytes of text",
        ms(generated)
    );
    println!(
        "peak RSS (VmHWM): {peak_at_start:.1} MiB at start, {peak_after_generation:.1} MiB after generating, {peak_at_end:.1} MiB at the end"
    );
    println!("| way | median ms | p95 ms |");
    println!("|---|---:|---:|");
    for (way, times) in [
        ("from template", by_template),
        ("by migrations", by_migrations),
    ] {
        let (median, p95) = median_p95(times);
        println!("| {way} | {median:.1} | {p95:.1} |");
    }
}
