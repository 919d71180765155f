//! Benchmark: creating one tenant of a real application's history (the
//! fixtures under `tests/fixtures/`: a crates.io-like history, Lemmy's
//! reduced one with its seed rows and extensions, vaultwarden's first 36
//! migrations), by running the migrations, by replaying the template (its
//! schema and seed rows) and by claiming a spare (topped up outside the
//! timing). The sources are interleaved round by round.
//!
//! `cargo run --release -p appschema-planner --example bench_histories [-- ROUNDS]`
//! (default 20). Prints a Markdown table for BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use appschema_core::migrate::Migrator;
use appschema_core::provision::{
    create_tenant, ensure_spares, generate_template, store_template, NewTenant, Source,
};
use appschema_core::registry;
use appschema_planner::load_with_schema_files;
use appschema_tempdb::TestDb;

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p95 = (samples.len() * 95).div_ceil(100) - 1;
    (ms(samples[samples.len() / 2]), ms(samples[p95]))
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROUNDS must be a number"))
        .unwrap_or(20);
    println!("| history | migrations | source | median ms | p95 ms |");
    println!("|---|---|---|---|---|");
    for name in ["real_history", "lemmy", "vaultwarden"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let set =
            load_with_schema_files(&dir.join("migrations"), &[dir.join("src/schema.rs")], &dir)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let db = TestDb::new();
        let mut conn = db.conn();
        registry::install(&mut conn).unwrap();
        let report = Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
        assert!(report.is_success(), "{report:?}");
        let template = generate_template(&mut conn, db.url(), &set).unwrap();
        store_template(&mut conn, &template).unwrap();
        let sources = [Source::Migrations, Source::Template, Source::Spare];
        let mut samples = vec![Vec::new(); sources.len()];
        for round in 0..rounds {
            ensure_spares(&mut conn, &set, 1).unwrap();
            for (k, source) in sources.iter().enumerate() {
                let request = NewTenant::new(&format!("t{round}-{k}.example"))
                    .unwrap()
                    .source(*source);
                let start = Instant::now();
                let created = create_tenant(&mut conn, &set, &request).unwrap();
                samples[k].push(start.elapsed());
                assert_eq!(created.source, *source);
            }
        }
        for (source, samples) in sources.iter().zip(samples) {
            let (median, p95) = stats(samples);
            println!(
                "| {name} | {} | {source} | {median:.2} | {p95:.2} |",
                set.migrations().len()
            );
        }
    }
}
