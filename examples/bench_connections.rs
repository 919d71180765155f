//! Connection-mode benchmark: throughput of a primary-key select on an
//! isolated table, 8 threads, each mode against a plain r2d2 baseline in the
//! same run; then backend memory growth with 1,000 tenants touched by one
//! pooled connection.
//!
//! Fairness: every mode holds exactly 8 backends (one per thread), every
//! pool is filled and warmed (each connection has run the query on every
//! tenant it will see) before timing, the statement cache is on everywhere,
//! and the modes run in short interleaved rounds whose order rotates. Each
//! round's ratio is taken against the baseline of the same round; the table
//! gives the median ratio and its min/max over the rounds. It also gives the
//! CPU time spent per operation, by this process and by the server's
//! backends, summed over all rounds of a mode: on this 2-core VM wall-clock
//! ratios swing by ±0.2× from run to run, CPU per operation by a few %.
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
const ROUNDS: usize = 21;
const RUN: Duration = Duration::from_millis(400);

fn tenant(i: usize) -> SchemaName {
    SchemaName::new(format!("t{i}")).unwrap()
}

fn pk_select(conn: &mut PgConnection, id: i64) -> QueryResult<String> {
    items::table.find(id).select(items::marker).first(conn)
}

type Op = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// CPU time (user + system, clock ticks) used so far by this process and by
/// every PostgreSQL process on the machine (the throwaway cluster's
/// backends): on 2 shared cores wall-clock throughput swings with whatever
/// else runs, while CPU spent per operation does much less. Backends that
/// exit take their time with them; the pools here live for the whole run.
fn cpu_ticks() -> (u64, u64) {
    fn ticks_of(stat: &str) -> Option<(String, u64)> {
        // pid (comm) state ppid … utime stime: fields 14 and 15, counted
        // after the parenthesised command name (which may contain spaces).
        let close = stat.rfind(')')?;
        let comm = stat[stat.find('(')? + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        let utime: u64 = rest.get(11)?.parse().ok()?;
        let stime: u64 = rest.get(12)?.parse().ok()?;
        Some((comm, utime + stime))
    }
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks_of(&s))
        .map_or(0, |(_, t)| t);
    let servers: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| ticks_of(&s))
        .filter(|(comm, _)| comm == "postgres")
        .map(|(_, t)| t)
        .sum();
    (own, servers)
}

/// Runs `op(thread, k)` on `threads` threads for `run`; returns operations
/// per second, the operations done and the CPU ticks (see [`cpu_ticks`])
/// spent by this process and by the server.
fn measure(op: &Op, threads: u64, run: Duration) -> (f64, u64, (u64, u64)) {
    let cpu_before = cpu_ticks();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
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
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks();
    let cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let ops = done.load(Ordering::Relaxed);
    (ops as f64 / elapsed, ops, cpu)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

/// Checks out all `n` connections of a pool at once (so every one exists)
/// and runs `warm` on each.
fn warm_all<C>(n: usize, get: impl Fn() -> C, warm: impl Fn(&mut C)) {
    let mut held: Vec<C> = (0..n).map(|_| get()).collect();
    for c in &mut held {
        warm(c);
    }
}

/// Runs `modes` in `ROUNDS` interleaved rounds on `threads` threads and
/// prints each mode's median ops/s and its per-round time ratio against
/// mode `baseline_of[i]`.
fn run_modes(title: &str, modes: &[(&str, Op, usize)], threads: u64, run: Duration) {
    // Untimed warm-up of every mode.
    for (_, op, _) in modes {
        measure(op, threads, Duration::from_millis(200));
    }
    let mut ops: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    // Per mode, over all rounds: operations done and CPU ticks spent.
    let mut spent = vec![(0u64, 0u64, 0u64); modes.len()];
    for round in 0..ROUNDS {
        for j in 0..modes.len() {
            let m = (j + round) % modes.len();
            let (per_second, done, cpu) = measure(&modes[m].1, threads, run);
            ops[m].push(per_second);
            spent[m].0 += done;
            spent[m].1 += cpu.0;
            spent[m].2 += cpu.1;
        }
    }
    // Clock ticks are 10 ms: CPU per op is taken over all rounds of a mode.
    let ticks_per_second = 100.0;
    let us_per_op = |done: u64, ticks: u64| ticks as f64 / ticks_per_second * 1e6 / done as f64;
    let cpu_us = |(done, client, server): (u64, u64, u64)| us_per_op(done, client + server);
    println!(
        "\n### {title}: {threads} thread(s), median of {ROUNDS} interleaved rounds of {run:?}"
    );
    println!(
        "| mode | ops/s (median) | time per op ÷ baseline, median | min | max | CPU µs per op: client + server | CPU per op ÷ baseline | baseline |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for (i, (name, _, base)) in modes.iter().enumerate() {
        let ratios = sorted((0..ROUNDS).map(|r| ops[*base][r] / ops[i][r]).collect());
        let med = sorted(ops[i].clone())[ROUNDS / 2];
        println!(
            "| {name} | {med:.0} | {:.3}× | {:.3}× | {:.3}× | {:.1} + {:.1} | {:.3}× | {} |",
            ratios[ROUNDS / 2],
            ratios[0],
            ratios[ROUNDS - 1],
            us_per_op(spent[i].0, spent[i].1),
            us_per_op(spent[i].0, spent[i].2),
            cpu_us(spent[i]) / cpu_us(spent[*base]),
            modes[*base].0
        );
    }
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
    admin.batch_execute("VACUUM ANALYZE").unwrap();
    let _ = server;
    let n = THREADS as u32;
    let id = |t: u64, k: u64| ((t * 7919 + k * 104_729) % 1000 + 1) as i64;

    // Plain r2d2, default checkout test (`SELECT 1`); the path comes from
    // the connection's start-up options, costing nothing per checkout.
    let plain_url = format!("{url}&options=-c%20search_path%3Dt0");
    let plain = Pool::builder()
        .max_size(n)
        .build(ConnectionManager::<PgConnection>::new(plain_url.clone()))
        .unwrap();
    // The floor: plain r2d2 with no checkout test (one round trip per op).
    let untested = Pool::builder()
        .max_size(n)
        .test_on_check_out(false)
        .build(ConnectionManager::<PgConnection>::new(plain_url.clone()))
        .unwrap();
    let shared = SharedPool::builder(url.clone())
        .max_size(n)
        .build()
        .unwrap();
    // Per-tenant pools holding 8 backends in all, like the others: one pool
    // of one connection per tenant t0..t7, thread t on tenant t.
    let per_tenant: Vec<_> = (0..THREADS as usize)
        .map(|i| {
            Pool::builder()
                .max_size(1)
                .connection_customizer(Box::new(TenantCustomizer::new(
                    tenant(i),
                    SearchPath::new(),
                )))
                .build(ConnectionManager::<PgConnection>::new(url.clone()))
                .unwrap()
        })
        .collect();
    // The previous run's setup, kept to show its cost: 8 pools of 8 (64
    // backends), each checkout on pool (t + k) % 8.
    let per_tenant_64: Vec<_> = (0..THREADS as usize)
        .map(|i| {
            Pool::builder()
                .max_size(n)
                .connection_customizer(Box::new(TenantCustomizer::new(
                    tenant(i),
                    SearchPath::new(),
                )))
                .build(ConnectionManager::<PgConnection>::new(url.clone()))
                .unwrap()
        })
        .collect();
    let scoped = TransactionScopedPool::builder(url.clone())
        .max_size(n)
        .prepared_statement_cache(true)
        .build()
        .unwrap();
    let tenants: Arc<Vec<SchemaName>> = Arc::new((0..TENANTS).map(tenant).collect());
    let t0 = tenant(0);

    // Warm every connection on every tenant it will serve.
    warm_all(
        n as usize,
        || plain.get().unwrap(),
        |c| {
            pk_select(c, 1).unwrap();
        },
    );
    warm_all(
        n as usize,
        || untested.get().unwrap(),
        |c| {
            pk_select(c, 1).unwrap();
        },
    );
    warm_all(
        n as usize,
        || shared.get_shared().unwrap(),
        |c| {
            for t in tenants.iter() {
                c.batch_execute(&format!("SET search_path = {}", t.quoted()))
                    .unwrap();
                pk_select(c, 1).unwrap();
            }
        },
    );
    for p in per_tenant.iter() {
        pk_select(&mut p.get().unwrap(), 1).unwrap();
    }
    for p in per_tenant_64.iter() {
        warm_all(
            n as usize,
            || p.get().unwrap(),
            |c| {
                pk_select(c, 1).unwrap();
            },
        );
    }
    warm_all(
        n as usize,
        || plain.get().unwrap(),
        |c| {
            c.transaction(|c| pk_select(c, 1)).unwrap();
        },
    );

    let mut modes: Vec<(&str, Op, usize)> = Vec::new();
    let p = plain.clone();
    modes.push((
        "plain r2d2",
        Arc::new(move |t, k| {
            pk_select(&mut p.get().unwrap(), id(t, k)).unwrap();
        }),
        0,
    ));
    let (p, t) = (shared.clone(), t0.clone());
    modes.push((
        "shared pool, same tenant",
        Arc::new(move |tt, k| {
            pk_select(&mut p.get_for(&t).unwrap(), id(tt, k)).unwrap();
        }),
        0,
    ));
    let (p, ts) = (shared.clone(), tenants.clone());
    modes.push((
        "shared pool, another tenant each checkout",
        Arc::new(move |t, k| {
            let tenant = &ts[((t * 13 + k) % TENANTS as u64) as usize];
            pk_select(&mut p.get_for(tenant).unwrap(), id(t, k)).unwrap();
        }),
        0,
    ));
    let pools = per_tenant.clone();
    modes.push((
        "per-tenant pools (8 × 1 connection)",
        Arc::new(move |t, k| {
            pk_select(&mut pools[t as usize].get().unwrap(), id(t, k)).unwrap();
        }),
        0,
    ));
    let pools = per_tenant_64.clone();
    modes.push((
        "per-tenant pools, previous setup (8 × 8 connections, round robin)",
        Arc::new(move |t, k| {
            let p = &pools[((t + k) % 8) as usize];
            pk_select(&mut p.get().unwrap(), id(t, k)).unwrap();
        }),
        0,
    ));
    let p = untested.clone();
    modes.push((
        "plain r2d2 without checkout test (floor)",
        Arc::new(move |t, k| {
            pk_select(&mut p.get().unwrap(), id(t, k)).unwrap();
        }),
        0,
    ));
    let p = plain.clone();
    modes.push((
        "plain r2d2, select inside a transaction",
        Arc::new(move |t, k| {
            p.get()
                .unwrap()
                .transaction(|c| pk_select(c, id(t, k)))
                .unwrap();
        }),
        6,
    ));
    let (p, t) = (scoped.clone(), t0.clone());
    modes.push((
        "transaction-scoped",
        Arc::new(move |tt, k| {
            p.transaction_for(&t, |c| Ok::<_, ConnectionError>(pk_select(c, id(tt, k))?))
                .unwrap();
        }),
        6,
    ));
    run_modes("PK select per checkout", &modes, THREADS, RUN);

    // Checkout alone, one thread, one connection: the per-checkout cost
    // without contention.
    let one_plain = Pool::builder()
        .max_size(1)
        .build(ConnectionManager::<PgConnection>::new(plain_url))
        .unwrap();
    let one_shared = SharedPool::builder(url.clone())
        .max_size(1)
        .build()
        .unwrap();
    let mut checkout_modes: Vec<(&str, Op, usize)> = Vec::new();
    let p = one_plain.clone();
    checkout_modes.push((
        "plain r2d2 checkout (`SELECT 1`)",
        Arc::new(move |_, _| drop(p.get().unwrap())),
        0,
    ));
    let (p, t) = (one_shared.clone(), t0.clone());
    checkout_modes.push((
        "shared pool checkout, same tenant",
        Arc::new(move |_, _| drop(p.get_for(&t).unwrap())),
        0,
    ));
    let (p, ts) = (one_shared.clone(), tenants.clone());
    checkout_modes.push((
        "shared pool checkout, another tenant",
        Arc::new(move |_, k| drop(p.get_for(&ts[(k % TENANTS as u64) as usize]).unwrap())),
        0,
    ));
    run_modes("Checkout only", &checkout_modes, 1, RUN);

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
