//! Cost of appschema's instrumentation (issue 27.1): `SharedPool` checkouts
//! for a different tenant each time plus a primary-key select, 4 threads,
//! with no subscriber, with a `tracing-subscriber` fmt subscriber at INFO
//! (what a service runs in production), and at DEBUG (every checkout's span
//! and switch event formatted), all writing to a sink so that only the
//! instrumentation is measured, not a terminal. No metrics recorder (the
//! `metrics` facade's calls are then no-ops in every mode).
//!
//! The modes run in short interleaved rounds whose order rotates; the table
//! gives each mode's median throughput over the rounds, its ratio to the
//! no-subscriber mode of the same round (median, min, max), and the client
//! CPU time per operation over all its rounds (`getrusage`: this process,
//! where the instrumentation runs).
//!
//! `cargo run --release -p appschema-bench --bin bench_observe` (about 40 s).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appschema::connection::SharedPool;
use appschema::SchemaName;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use tracing::level_filters::LevelFilter;
use tracing::Dispatch;

diesel::table! { items (id) { id -> Int8, marker -> Text } }

const THREADS: u64 = 4;
const TENANTS: u64 = 50;
const ROUNDS: usize = 15;
const RUN: Duration = Duration::from_millis(600);

fn tenant(i: u64) -> SchemaName {
    SchemaName::new(format!("t{i}")).unwrap()
}

/// User + system CPU time of this process, in microseconds.
fn cpu_us() -> u64 {
    // SAFETY: getrusage writes the struct it is given; zeroed is a valid
    // `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` owned by this frame.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// A new dispatcher for a mode (a new one each round: registering it makes
/// tracing recompute which call sites are enabled, so a DEBUG round leaves
/// nothing enabled for the next round of another mode).
fn dispatch(mode: usize) -> Dispatch {
    let fmt = |level: LevelFilter| {
        Dispatch::new(
            tracing_subscriber::fmt()
                .with_max_level(level)
                .with_writer(std::io::sink)
                .finish(),
        )
    };
    match mode {
        0 => Dispatch::new(tracing::subscriber::NoSubscriber::default()),
        1 => fmt(LevelFilter::INFO),
        _ => fmt(LevelFilter::DEBUG),
    }
}

/// Operations per second over `RUN` on `THREADS` threads, each with
/// `dispatch` as its default subscriber; the operations done and the CPU
/// microseconds this process spent.
fn measure(pool: &SharedPool, dispatch: &Dispatch) -> (f64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_us();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (stop, ops) = (stop.clone(), ops.clone());
            s.spawn(move || {
                let _default = tracing::dispatcher::set_default(dispatch);
                let mut k = t;
                while !stop.load(Ordering::Relaxed) {
                    // A different tenant than this thread's last: a switch.
                    k += 1;
                    let mut conn = pool.get_for(&tenant(k % TENANTS)).unwrap();
                    let id = (k * 7919 % 1000 + 1) as i64;
                    items::table
                        .find(id)
                        .select(items::marker)
                        .first::<String>(&mut *conn)
                        .unwrap();
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let done = ops.load(Ordering::Relaxed);
    (done as f64 / elapsed, done, cpu_us() - cpu_before)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let db = appschema_tempdb::TestDb::new();
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
    let pool = SharedPool::builder(db.url())
        .max_size(THREADS as u32)
        .build()
        .unwrap();
    // Warm every connection on every tenant.
    measure(&pool, &dispatch(0));

    let names = [
        "no subscriber",
        "fmt subscriber at INFO",
        "fmt subscriber at DEBUG",
    ];
    let mut per_second = vec![Vec::new(); names.len()];
    let mut ratio = vec![Vec::new(); names.len()];
    let mut spent = vec![(0u64, 0u64); names.len()];
    for round in 0..ROUNDS {
        let mut this = [0.0; 3];
        for j in 0..names.len() {
            let m = (round + j) % names.len();
            let (rate, done, cpu) = measure(&pool, &dispatch(m));
            this[m] = rate;
            per_second[m].push(rate);
            spent[m].0 += done;
            spent[m].1 += cpu;
        }
        for m in 0..names.len() {
            ratio[m].push(this[m] / this[0]);
        }
    }
    println!("| mode | ops/s (median) | vs no subscriber (median, min–max) | client CPU µs/op |");
    println!("| --- | --- | --- | --- |");
    for m in 0..names.len() {
        let min = ratio[m].iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratio[m].iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {:.0} | {:.3}× ({:.3}–{:.3}) | {:.1} |",
            names[m],
            median(&mut per_second[m]),
            median(&mut ratio[m]),
            min,
            max,
            spent[m].1 as f64 / spent[m].0 as f64,
        );
    }
}
