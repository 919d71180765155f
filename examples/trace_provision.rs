//! Where the time of creating one tenant from the schema template goes: every
//! statement `create_tenant` sends (one line per round trip, with the median
//! time spent waiting for the server and the median client time before it),
//! next to the baselines of `bench_provision`.
//!
//! `cargo run --release --example trace_provision [-- TABLES ROUNDS]`
//! (default 3 tables, 15 rounds).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appschema_core::provision::{
    create_tenant, generate_template, store_template, NewTenant, Source,
};
use appschema_core::{registry, MigrationSet, Scope};
use appschema_tempdb::TestDb;
use diesel::connection::{Connection, InstrumentationEvent, SimpleConnection};

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

/// One statement: its first words, the client time before it was sent (since
/// the previous statement finished or the call began) and the server time.
type Step = (String, Duration, Duration);

#[derive(Default)]
struct Log {
    last: Option<Instant>,
    started: Option<Instant>,
    steps: Vec<Step>,
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tables: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(15, |a| a.parse().unwrap());
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
    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    store_template(&mut conn, &template).unwrap();

    let log = Arc::new(Mutex::new(Log::default()));
    let sink = log.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        let now = Instant::now();
        let mut log = sink.lock().unwrap();
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let client = now - log.last.unwrap_or(now);
                let text: String = query
                    .to_string()
                    .split_whitespace()
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(" ");
                log.steps.push((text, client, Duration::ZERO));
                log.started = Some(now);
            }
            InstrumentationEvent::FinishQuery { .. } => {
                let server = now - log.started.take().unwrap_or(now);
                if let Some(last) = log.steps.last_mut() {
                    last.2 = server;
                }
                log.last = Some(now);
            }
            _ => {}
        }
    });

    let mut runs: Vec<(Vec<Step>, Duration, Duration)> = Vec::new();
    for round in 0..rounds {
        *log.lock().unwrap() = Log::default();
        let request = NewTenant::new(&format!("trace-{round}.bench"))
            .unwrap()
            .source(Source::Template);
        let t = Instant::now();
        log.lock().unwrap().last = Some(t);
        create_tenant(&mut conn, &set, &request).unwrap();
        let total = t.elapsed();
        let tail = log
            .lock()
            .unwrap()
            .last
            .map_or(Duration::ZERO, |l| l.elapsed());
        let steps = std::mem::take(&mut log.lock().unwrap().steps);
        runs.push((steps, total, tail));
    }
    let n = runs[0].0.len();
    println!("{tables} tables, template path: {n} statements per create (median of {rounds})");
    for i in 0..n {
        let name = runs[0].0[i].0.clone();
        let client = median(runs.iter().map(|r| r.0[i].1).collect());
        let server = median(runs.iter().map(|r| r.0[i].2).collect());
        println!("  client {client:7.3} ms  server {server:7.3} ms  {name}");
    }
    println!(
        "  total {:.3} ms (client after the last statement {:.3} ms)",
        median(runs.iter().map(|r| r.1).collect()),
        median(runs.iter().map(|r| r.2).collect())
    );

    // The baselines, on the same connection, interleaved round by round: A
    // (the migrations' SQL), A plus the tracking table and its rows as diesel
    // creates them (what of B's extra cost over A is the tracking table, what
    // is pg_dump's form), B (what the template path replays).
    let ddl: String = (0..tables).map(table_sql).collect::<Vec<_>>().join("\n");
    let tracking = format!(
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
         INSERT INTO __diesel_schema_migrations (version) VALUES {};",
        template
            .versions()
            .iter()
            .map(|v| format!("('{v}')"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        let b = appschema_core::SchemaName::new(format!("base_b_{round}")).unwrap();
        let sqls = [
            format!("BEGIN; CREATE SCHEMA base_a_{round}; SET LOCAL search_path = base_a_{round}; {ddl}; COMMIT;"),
            format!("BEGIN; CREATE SCHEMA base_t_{round}; SET LOCAL search_path = base_t_{round}; {tracking} {ddl}; COMMIT;"),
            format!("BEGIN; {} COMMIT;", template.sql_for(&b)),
        ];
        for (sql, samples) in sqls.iter().zip(samples.iter_mut()) {
            let t = Instant::now();
            conn.batch_execute(sql).unwrap();
            samples.push(t.elapsed());
        }
    }
    let [a, at, b] = samples;
    println!("  baseline A median {:.3} ms", median(a));
    println!("  baseline A + tracking table median {:.3} ms", median(at));
    println!("  baseline B median {:.3} ms", median(b));
}
