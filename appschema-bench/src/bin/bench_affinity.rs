//! Tenant affinity and the bound on tenants per connection, measured.
//!
//! 1. **Zipf mix**: 8 threads run a primary-key select for a tenant drawn
//!    from a Zipf (s = 1) distribution over 1,000 tenants, on a
//!    `SharedPool` of 32 connections, with affinity on and off; baselines in
//!    the same run: the same pool asked for one tenant only, and plain r2d2
//!    on that one tenant. Interleaved rounds, the median of each mode's
//!    rounds. "switched" is the share of checkouts whose connection last
//!    served another tenant (each op reads `pg_backend_pid()` with its row).
//! 2. **Memory**: a pool of 2 connections serving 4,000 tenants (3 tables
//!    each) three times over in random order, bounded (default 500 tenants
//!    per connection) and unbounded: the largest memory-context total and
//!    RSS any pooled backend reached (sampled every 250 visits on each
//!    connection), and visits per second.
//!
//! `cargo run --release -p appschema-bench --bin bench_affinity` (about 4 minutes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appschema::connection::SharedPool;
use appschema::SchemaName;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::{BigInt, Integer, Text};

const THREADS: u64 = 8;
/// Connections per pool: more than the threads, as in a web server whose
/// pool is sized for its peaks (the idle ones are what affinity parks).
const POOL: u32 = 32;
const ZIPF_TENANTS: usize = 1000;
const ROUNDS: usize = 7;
const RUN: Duration = Duration::from_millis(1500);
const MEM_TENANTS: usize = 4000;

fn tenant(i: usize) -> SchemaName {
    SchemaName::new(format!("t{i}")).unwrap()
}

struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Cumulative Zipf (s = 1) weights over `n` ranks.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let total: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    let mut acc = 0.0;
    (1..=n)
        .map(|k| {
            acc += 1.0 / k as f64 / total;
            acc
        })
        .collect()
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
    marker: String,
    #[diesel(sql_type = Integer)]
    pid: i32,
}

fn select(conn: &mut PgConnection, id: i64) -> i32 {
    diesel::sql_query("SELECT marker, pg_backend_pid() AS pid FROM items WHERE id = $1")
        .bind::<BigInt, _>(id)
        .get_result::<Row>(conn)
        .unwrap()
        .pid
}

/// Which tenant each backend served last, and how many ops switched.
#[derive(Default)]
struct Switches {
    last: Mutex<HashMap<i32, usize>>,
    switched: AtomicU64,
}

impl Switches {
    fn note(&self, pid: i32, tenant: usize) {
        let previous = self.last.lock().unwrap().insert(pid, tenant);
        if previous.is_some_and(|p| p != tenant) {
            self.switched.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Op = Arc<dyn Fn(&mut Dice, &Switches) + Send + Sync>;

fn measure(op: &Op, run: Duration) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let switches = Arc::new(Switches::default());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (op, stop, done, switches) =
                (op.clone(), stop.clone(), done.clone(), switches.clone());
            std::thread::spawn(move || {
                let mut dice = Dice(0x2545_F491_4F6C_DD1D ^ ((t + 1) * 7919));
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(&mut dice, &switches);
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
    let ops = done.load(Ordering::Relaxed) as f64;
    let switched = switches.switched.load(Ordering::Relaxed) as f64;
    (ops / start.elapsed().as_secs_f64(), switched / ops.max(1.0))
}

fn zipf_mix(url: &str, admin: &mut PgConnection) {
    let mut sql = String::new();
    for i in 0..ZIPF_TENANTS {
        sql.push_str(&format!(
            "CREATE SCHEMA t{i}; CREATE TABLE t{i}.items (id int8 PRIMARY KEY, marker text NOT NULL);
             INSERT INTO t{i}.items SELECT g, 't{i}' FROM generate_series(1, 100) g;"
        ));
    }
    admin.batch_execute(&sql).unwrap();
    admin.batch_execute("VACUUM ANALYZE").unwrap();
    let cdf = Arc::new(zipf_cdf(ZIPF_TENANTS));
    let n = POOL;
    let pool = |affinity: bool| {
        SharedPool::builder(url)
            .max_size(n)
            .tenant_affinity(affinity)
            .max_tenants_per_connection(None)
            .build()
            .unwrap()
    };
    let zipf_op = |pool: SharedPool| -> Op {
        let cdf = cdf.clone();
        Arc::new(move |dice: &mut Dice, sw: &Switches| {
            let u = dice.unit();
            let i = cdf.partition_point(|&c| c < u).min(ZIPF_TENANTS - 1);
            let mut conn = pool.get_for(&tenant(i)).unwrap();
            let pid = select(&mut conn, (dice.next() % 100 + 1) as i64);
            sw.note(pid, i);
        })
    };
    let one_op = |pool: SharedPool| -> Op {
        Arc::new(move |dice: &mut Dice, sw: &Switches| {
            let mut conn = pool.get_for(&tenant(0)).unwrap();
            let pid = select(&mut conn, (dice.next() % 100 + 1) as i64);
            sw.note(pid, 0);
        })
    };
    let plain = Pool::builder()
        .max_size(n)
        .build(ConnectionManager::<PgConnection>::new(format!(
            "{url}&options=-c%20search_path%3Dt0"
        )))
        .unwrap();
    let plain_op: Op = Arc::new(move |dice: &mut Dice, sw: &Switches| {
        let mut conn = plain.get().unwrap();
        let pid = select(&mut conn, (dice.next() % 100 + 1) as i64);
        sw.note(pid, 0);
    });
    let modes: Vec<(&str, Op)> = vec![
        ("plain r2d2, one tenant", plain_op),
        ("SharedPool, one tenant", one_op(pool(true))),
        ("SharedPool, Zipf, affinity on", zipf_op(pool(true))),
        ("SharedPool, Zipf, affinity off", zipf_op(pool(false))),
    ];
    // Warm-up: every mode's connections see their tenants once.
    for (_, op) in &modes {
        measure(op, Duration::from_millis(1500));
    }
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); modes.len()];
    for round in 0..ROUNDS {
        for k in 0..modes.len() {
            let m = (k + round) % modes.len();
            results[m].push(measure(&modes[m].1, RUN));
        }
    }
    println!("\n## Zipf (s = 1) over {ZIPF_TENANTS} tenants, {THREADS} threads, pool of {POOL}, pk select");
    println!("| mode | ops/s (median of {ROUNDS}) | × plain r2d2 one tenant | × SharedPool one tenant | switched |");
    println!("|---|---:|---:|---:|---:|");
    let median = |v: &Vec<(f64, f64)>| {
        let mut ops: Vec<f64> = v.iter().map(|r| r.0).collect();
        ops.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut sw: Vec<f64> = v.iter().map(|r| r.1).collect();
        sw.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (ops[ops.len() / 2], sw[sw.len() / 2])
    };
    let plain = median(&results[0]).0;
    let one = median(&results[1]).0;
    for (k, (name, _)) in modes.iter().enumerate() {
        let (ops, sw) = median(&results[k]);
        println!(
            "| {name} | {ops:.0} | {:.2} | {:.2} | {:.1} % |",
            ops / plain,
            ops / one,
            sw * 100.0
        );
    }
}

#[derive(QueryableByName)]
struct Mem {
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// A field of `/proc/<pid>/status` in kB. `VmRSS` counts the shared
/// buffers the backend touched (`RssShmem`) as well as its own memory
/// (`RssAnon`, where the caches live).
fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn memory(url: &str, admin: &mut PgConnection) {
    for chunk in (0..MEM_TENANTS).collect::<Vec<_>>().chunks(500) {
        let mut sql = String::new();
        for i in chunk {
            sql.push_str(&format!(
                "CREATE SCHEMA m{i};
                 CREATE TABLE m{i}.a (id int8 PRIMARY KEY, v text NOT NULL);
                 CREATE TABLE m{i}.b (id int8 PRIMARY KEY, a_id int8 NOT NULL REFERENCES m{i}.a, v text);
                 CREATE TABLE m{i}.c (id int8 PRIMARY KEY, b_id int8 NOT NULL REFERENCES m{i}.b, n int4);
                 INSERT INTO m{i}.a VALUES (1, 'm{i}'); INSERT INTO m{i}.b VALUES (1, 1, 'x');
                 INSERT INTO m{i}.c VALUES (1, 1, 1);"
            ));
        }
        admin.batch_execute(&sql).unwrap();
    }
    println!("\n## Memory: pool of 2, {MEM_TENANTS} tenants (3 tables each), three passes in random order");
    println!("| pool | visits/s | × unbounded | max memory contexts | max VmRSS | max RssAnon | backends used |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut baseline = None;
    for (label, bound) in [
        ("unbounded", None),
        ("bounded, 500 tenants (default)", Some(500)),
        ("bounded, 250 tenants", Some(250)),
    ] {
        let pool = SharedPool::builder(url)
            .max_size(2)
            .max_tenants_per_connection(bound)
            .build()
            .unwrap();
        let mut order: Vec<usize> = (0..MEM_TENANTS)
            .chain(0..MEM_TENANTS)
            .chain(0..MEM_TENANTS)
            .collect();
        let mut dice = Dice(0xDEAD_BEEF_1234_5678);
        for k in (1..order.len()).rev() {
            order.swap(k, (dice.next() % (k as u64 + 1)) as usize);
        }
        let max_ctx = AtomicU64::new(0);
        let max_rss = AtomicU64::new(0);
        let max_anon = AtomicU64::new(0);
        let pids = Mutex::new(std::collections::HashSet::new());
        let next = AtomicU64::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&i) = order.get(k) else { break };
                    let schema = SchemaName::new(format!("m{i}")).unwrap();
                    let mut conn = pool.get_for(&schema).unwrap();
                    conn.batch_execute(
                        "SELECT v FROM a WHERE id = 1; SELECT v FROM b WHERE id = 1; SELECT n FROM c WHERE id = 1;",
                    )
                    .unwrap();
                    if k % 250 < 2 {
                        let m: Mem = diesel::sql_query(
                            "SELECT sum(total_bytes)::int8 AS bytes, pg_backend_pid() AS pid FROM pg_backend_memory_contexts",
                        )
                        .get_result(&mut *conn)
                        .unwrap();
                        max_ctx.fetch_max(m.bytes as u64, Ordering::Relaxed);
                        max_rss.fetch_max(status_kb(m.pid, "VmRSS"), Ordering::Relaxed);
                        max_anon.fetch_max(status_kb(m.pid, "RssAnon"), Ordering::Relaxed);
                        pids.lock().unwrap().insert(m.pid);
                    }
                });
            }
        });
        let rate = order.len() as f64 / start.elapsed().as_secs_f64();
        let base = *baseline.get_or_insert(rate);
        println!(
            "| {label} | {rate:.0} | {:.2} | {:.1} MiB | {:.1} MB | {:.1} MB | {} |",
            rate / base,
            max_ctx.load(Ordering::Relaxed) as f64 / 1048576.0,
            max_rss.load(Ordering::Relaxed) as f64 / 1000.0,
            max_anon.load(Ordering::Relaxed) as f64 / 1000.0,
            pids.lock().unwrap().len()
        );
    }
}

fn main() {
    let _server = appschema_tempdb::server();
    let db = appschema_tempdb::TestDb::new();
    let url = db.url().to_string();
    let mut admin = db.conn();
    let only = std::env::args().nth(1);
    if only.as_deref() != Some("memory") {
        zipf_mix(&url, &mut admin);
    }
    if only.as_deref() != Some("zipf") {
        memory(&url, &mut admin);
    }
}
