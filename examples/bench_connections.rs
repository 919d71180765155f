//! Connection-mode benchmark: throughput of a primary-key select on an
//! isolated table, 8 threads, each mode against a plain r2d2 baseline in the
//! same run, rounds interleaved to spread noise; then backend memory growth
//! with 1,000 tenants touched by one pooled connection.
//!
//! `cargo run --release --example bench_connections` (about 2 minutes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appschema::connection::{SearchPath, SharedPool, TenantCustomizer, TransactionScopedPool};
use appschema::{ConnectionError, SchemaName};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};

diesel::table! { items (id) { id -> Int8, marker -> Text } }

const THREADS: u64 = 8;
const TENANTS: usize = 50;
const ROUNDS: usize = 5;
const RUN: Duration = Duration::from_millis(1500);

fn tenant(i: usize) -> SchemaName {
    SchemaName::new(format!("t{i}")).unwrap()
}

fn pk_select(conn: &mut PgConnection, id: i64) -> QueryResult<String> {
    items::table.find(id).select(items::marker).first(conn)
}

/// Runs `op(thread, k)` on 8 threads for RUN; returns operations per second.
fn measure(op: Arc<dyn Fn(u64, u64) + Send + Sync>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(t, k);
                    k += 1;
                }
                done.fetch_add(k, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let server = appschema_tempdb::server();
    let db = appschema_tempdb::TestDb::new();
    let url = db.url().to_string();
    let mut admin = db.conn();
    let mut sql = String::new();
    for i in 0..TENANTS {
        sql.push_str(&format!(
            "CREATE SCHEMA t{i}; CREATE TABLE t{i}.items (id int8 PRIMARY KEY, marker text NOT NULL);
             INSERT INTO t{i}.items SELECT g, 't{i}' FROM generate_series(1, 1000) g;"
        ));
    }
    admin.batch_execute(&sql).unwrap();
    let _ = server;

    // Plain r2d2, default settings (SELECT 1 on every checkout); the path
    // comes from the connection's start-up options, costing nothing per checkout.
    let plain_url = format!("{url}&options=-c%20search_path%3Dt0");
    let plain = Pool::builder()
        .max_size(THREADS as u32)
        .build(ConnectionManager::<PgConnection>::new(plain_url))
        .unwrap();
    let shared = SharedPool::builder(url.clone())
        .max_size(THREADS as u32)
        .build()
        .unwrap();
    let per_tenant: Vec<_> = (0..8)
        .map(|i| {
            Pool::builder()
                .max_size(THREADS as u32)
                .min_idle(Some(1))
                .connection_customizer(Box::new(TenantCustomizer::new(
                    tenant(i),
                    SearchPath::new(),
                )))
                .build(ConnectionManager::<PgConnection>::new(url.clone()))
                .unwrap()
        })
        .collect();
    let scoped = TransactionScopedPool::builder(url.clone())
        .max_size(THREADS as u32)
        .prepared_statement_cache(true)
        .build()
        .unwrap();
    let tenants: Arc<Vec<SchemaName>> = Arc::new((0..TENANTS).map(tenant).collect());
    let t0 = tenant(0);

    type Op = Arc<dyn Fn(u64, u64) + Send + Sync>;
    let id = |t: u64, k: u64| ((t * 7919 + k * 104_729) % 1000 + 1) as i64;
    let mut modes: Vec<(&str, Op)> = Vec::new();
    {
        let p = plain.clone();
        modes.push((
            "plain r2d2",
            Arc::new(move |t, k| {
                pk_select(&mut p.get().unwrap(), id(t, k)).unwrap();
            }),
        ));
    }
    {
        let (p, t0) = (shared.clone(), t0.clone());
        modes.push((
            "shared, same tenant",
            Arc::new(move |t, k| {
                pk_select(&mut p.get_for(&t0).unwrap(), id(t, k)).unwrap();
            }),
        ));
    }
    {
        let (p, ts) = (shared.clone(), tenants.clone());
        modes.push((
            "shared, other tenant each checkout",
            Arc::new(move |t, k| {
                let tenant = &ts[((t * 13 + k) % TENANTS as u64) as usize];
                pk_select(&mut p.get_for(tenant).unwrap(), id(t, k)).unwrap();
            }),
        ));
    }
    {
        let pools = per_tenant.clone();
        modes.push((
            "per-tenant pools (8 tenants)",
            Arc::new(move |t, k| {
                let p = &pools[((t + k) % 8) as usize];
                pk_select(&mut p.get().unwrap(), id(t, k)).unwrap();
            }),
        ));
    }
    {
        let p = plain.clone();
        modes.push((
            "plain r2d2, in a transaction",
            Arc::new(move |t, k| {
                p.get()
                    .unwrap()
                    .transaction(|c| pk_select(c, id(t, k)))
                    .unwrap();
            }),
        ));
    }
    {
        let (p, t0) = (scoped.clone(), t0.clone());
        modes.push((
            "transaction-scoped",
            Arc::new(move |t, k| {
                p.transaction_for(&t0, |c| Ok::<_, ConnectionError>(pk_select(c, id(t, k))?))
                    .unwrap();
            }),
        ));
    }
    // Warm-up: every mode once, briefly.
    for (_, op) in &modes {
        let op = op.clone();
        let _ = measure(Arc::new(move |t, k| op(t, k)));
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..ROUNDS {
        // Rotate the order each round so no mode always runs first or last.
        for j in 0..modes.len() {
            let m = (j + round) % modes.len();
            results[m].push(measure(modes[m].1.clone()));
        }
    }
    let med: Vec<f64> = results.into_iter().map(median).collect();
    println!("## Connections: {THREADS} threads, PK select, median of {ROUNDS} interleaved rounds of {RUN:?}");
    println!("| mode | ops/s | time per op ÷ baseline | baseline |");
    println!("|---|---:|---:|---|");
    for (i, (name, _)) in modes.iter().enumerate() {
        let base = if i >= 5 { 4 } else { 0 };
        println!(
            "| {name} | {:.0} | {:.3}× | {} |",
            med[i],
            med[base] / med[i],
            modes[base].0
        );
    }

    // Memory: one pooled connection touching 1,000 tenants.
    let mut sql = String::new();
    for i in TENANTS..1000 {
        sql.push_str(&format!(
            "CREATE SCHEMA t{i}; CREATE TABLE t{i}.items (id int8 PRIMARY KEY, marker text NOT NULL);
             INSERT INTO t{i}.items VALUES (1, 't{i}');"
        ));
    }
    admin.batch_execute(&sql).unwrap();
    let one = SharedPool::builder(url.clone())
        .max_size(1)
        .build()
        .unwrap();
    let report = |label: &str, touched: usize| {
        #[derive(QueryableByName)]
        struct Mem {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            bytes: i64,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        let mut conn = one.get_shared().unwrap();
        let m: Mem = diesel::sql_query(
            "SELECT sum(total_bytes)::int8 AS bytes, pg_backend_pid() AS pid FROM pg_backend_memory_contexts",
        )
        .get_result(&mut *conn)
        .unwrap();
        let rss = std::fs::read_to_string(format!("/proc/{}/status", m.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS"))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
            })
            .unwrap_or_else(|| "?".into());
        println!(
            "| {label} | {touched} | {:.1} MiB | {rss} kB | {} |",
            m.bytes as f64 / 1048576.0,
            m.pid
        );
    };
    println!("\n## Backend memory, one pooled connection");
    println!("| after | tenants touched | memory contexts total | VmRSS | backend pid |");
    println!("|---|---:|---:|---:|---:|");
    report("start", 0);
    for n in [100, 1000] {
        let from = if n == 100 { 0 } else { 100 };
        for i in from..n {
            let mut c = one.get_for(&tenant(i)).unwrap();
            pk_select(&mut c, 1).unwrap();
        }
        report("touching tenants", n);
    }
}
