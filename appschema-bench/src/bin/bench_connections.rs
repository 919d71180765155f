//! Connection-mode benchmark: throughput of a primary-key select on an
//! isolated table, 8 threads, each mode against its baseline in the same
//! run (plain r2d2 for the same tenant; for another tenant on every
//! checkout, a floor that switches the path with a bare prepared
//! `set_config` and nothing else); the checkout alone and what each reset
//! statement adds to it; then backend memory growth with 1,000 tenants
//! touched by one pooled connection.
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
//! `cargo run --release -p appschema-bench --bin bench_connections` (about 2 minutes).

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

thread_local! {
    /// The `search_path` the next checkout of a [`Checked`] pool sets (for
    /// the floor baseline and the previous switch).
    static NEXT_PATH: std::cell::RefCell<(String, String)> =
        const { std::cell::RefCell::new((String::new(), String::new())) };
}

fn set_next_path(t: &SchemaName) {
    NEXT_PATH.with(|p| {
        let mut p = p.borrow_mut();
        p.0 = format!("{}, \"public\"", t.quoted());
        p.1 = t.as_str().to_string();
    });
}

/// The checkout test of a [`Checked`] pool.
#[derive(Clone, Copy)]
enum Test {
    /// A simple-protocol statement (what each reset costs, one by one).
    Sql(&'static str),
    /// The floor for switching tenants: a bare prepared
    /// `set_config('search_path', $1, false)` on the extended protocol,
    /// none of appschema's checks or resets (the path from [`NEXT_PATH`]).
    SetPath,
    /// The previous release's switch (before session hygiene): the same
    /// `PREPARE`d `CASE`, `EXECUTE`d on the simple protocol, without the
    /// reset statements, role and `LISTEN` checks or advisory unlock.
    PreviousSwitch,
}

/// A plain r2d2 manager whose checkout test is [`Test`].
struct Checked {
    inner: ConnectionManager<PgConnection>,
    test: Test,
}

const PREVIOUS_SWITCH: &str = "PREPARE previous_switch (pg_catalog.text, pg_catalog.text) AS \
    SELECT CASE \
    WHEN pg_catalog.statement_timestamp() OPERATOR(pg_catalog.<>) pg_catalog.transaction_timestamp() \
    THEN pg_catalog.current_setting(E'x y') \
    WHEN pg_catalog.set_config('search_path', $1, false) OPERATOR(pg_catalog.<>) $1 \
    THEN pg_catalog.current_setting(E'x z') \
    WHEN (pg_catalog.current_schema() OPERATOR(pg_catalog.=) $2) IS NOT TRUE \
    THEN pg_catalog.current_setting(E'x w') END";

impl r2d2::ManageConnection for Checked {
    type Connection = PgConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConnection, Self::Error> {
        let mut conn = self.inner.connect()?;
        if let Test::PreviousSwitch = self.test {
            conn.batch_execute(PREVIOUS_SWITCH)
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), Self::Error> {
        let result = match self.test {
            Test::Sql(sql) => conn.batch_execute(sql),
            Test::SetPath => NEXT_PATH.with(|p| {
                diesel::sql_query("SELECT pg_catalog.set_config('search_path', $1, false)")
                    .bind::<diesel::sql_types::Text, _>(&p.borrow().0)
                    .execute(conn)
                    .map(drop)
            }),
            Test::PreviousSwitch => NEXT_PATH.with(|p| {
                let p = p.borrow();
                conn.batch_execute(&format!(
                    "EXECUTE previous_switch(E'{}', E'{}')",
                    p.0.replace('\'', "''"),
                    p.1
                ))
            }),
        };
        result.map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        self.inner.has_broken(conn)
    }
}

fn checked_pool(url: &str, size: u32, test: Test) -> r2d2::Pool<Checked> {
    r2d2::Pool::builder()
        .max_size(size)
        .build(Checked {
            inner: ConnectionManager::new(url),
            test,
        })
        .unwrap()
}

/// The throwaway cluster's postmaster, whose children are the backends the
/// benchmark's CPU figures count (`None`: an external server, whose
/// processes are all counted).
static POSTMASTER: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();

/// CPU time (user + system, clock ticks) used so far by this process and by
/// the server (the throwaway cluster's postmaster and its children, or
/// every PostgreSQL process when the server is external): on 2 shared cores
/// wall-clock throughput swings with whatever else runs, while CPU spent
/// per operation does much less. Counting only this cluster's processes
/// keeps other clusters on the machine (another test run) out of the
/// figures. Backends that exit take their time with them; the pools here
/// live for the whole run.
fn cpu_ticks() -> (u64, u64) {
    struct Stat {
        pid: u32,
        ppid: u32,
        comm: String,
        ticks: u64,
    }
    fn parse(stat: &str) -> Option<Stat> {
        // pid (comm) state ppid … utime stime: fields 14 and 15, counted
        // after the parenthesised command name (which may contain spaces).
        let close = stat.rfind(')')?;
        let pid = stat[..stat.find('(')?].trim().parse().ok()?;
        let comm = stat[stat.find('(')? + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ppid = rest.get(1)?.parse().ok()?;
        let utime: u64 = rest.get(11)?.parse().ok()?;
        let stime: u64 = rest.get(12)?.parse().ok()?;
        Some(Stat {
            pid,
            ppid,
            comm,
            ticks: utime + stime,
        })
    }
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse(&s))
        .map_or(0, |s| s.ticks);
    let postmaster = POSTMASTER.get().copied().flatten();
    let servers: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse(&s))
        .filter(|s| match postmaster {
            Some(pm) => s.pid == pm || s.ppid == pm,
            None => s.comm == "postgres",
        })
        .map(|s| s.ticks)
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
    POSTMASTER
        .set(server.temp_cluster().map(|c| c.pid()))
        .unwrap();
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
    // The modes that leave session state behind get pools of their own: a
    // backend that ever created a temporary table keeps its temporary
    // schema, and `DISCARD TEMP` then looks for its contents on every later
    // checkout, which would slow the clean-session modes sharing it.
    let dirty_settings = SharedPool::builder(url.clone())
        .max_size(n)
        .build()
        .unwrap();
    let dirty_temp = SharedPool::builder(url.clone())
        .max_size(n)
        .build()
        .unwrap();
    // The floor for switching tenants: r2d2 whose checkout test is a bare
    // prepared set_config of the path (same re-planning, no checks).
    let floor = checked_pool(&url, n, Test::SetPath);
    // What django-tenants and Apartment do: a separate `SET search_path`
    // statement before the work, on a plain pool.
    let set_first = plain.clone();
    // Per-tenant pools holding 8 backends in all, like the others: one pool
    // of one connection per tenant t0..t7, thread t on tenant t. With
    // appschema's checkout (TenantPool) and with a bare customizer.
    let tenant_pools: Vec<_> = (0..THREADS as usize)
        .map(|i| {
            SharedPool::builder(url.clone())
                .max_size(1)
                .build_for(tenant(i))
                .unwrap()
        })
        .collect();
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
    let scoped = TransactionScopedPool::builder(url.clone())
        .max_size(n)
        .prepared_statement_cache(true)
        .build()
        .unwrap();
    let tenants: Arc<Vec<SchemaName>> = Arc::new((0..TENANTS).map(tenant).collect());
    let t0 = tenant(0);
    let another = |t: u64, k: u64| ((t * 13 + k) % TENANTS as u64) as usize;

    // Warm every connection on every tenant it will serve.
    for p in [&plain, &untested] {
        warm_all(
            n as usize,
            || p.get().unwrap(),
            |c| {
                pk_select(c, 1).unwrap();
                c.transaction(|c| pk_select(c, 1)).unwrap();
            },
        );
    }
    let warm_tenants = |c: &mut PgConnection| {
        for t in tenants.iter() {
            c.batch_execute(&format!("SET search_path = {}", t.quoted()))
                .unwrap();
            pk_select(c, 1).unwrap();
        }
    };
    warm_all(
        n as usize,
        || shared.get_shared().unwrap(),
        |c| warm_tenants(c),
    );
    warm_all(n as usize, || floor.get().unwrap(), |c| warm_tenants(c));
    for p in [&dirty_settings, &dirty_temp] {
        warm_all(
            n as usize,
            || p.get_for(&t0).unwrap(),
            |c| {
                pk_select(c, 1).unwrap();
            },
        );
    }
    for p in tenant_pools.iter() {
        pk_select(&mut p.get().unwrap(), 1).unwrap();
    }
    for p in per_tenant.iter() {
        pk_select(&mut p.get().unwrap(), 1).unwrap();
    }

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
    let p = floor.clone();
    let ts = tenants.clone();
    modes.push((
        "floor: r2d2 + prepared set_config, another tenant each checkout",
        Arc::new(move |t, k| {
            set_next_path(&ts[another(t, k)]);
            pk_select(&mut p.get().unwrap(), id(t, k)).unwrap();
        }),
        2,
    ));
    let (p, ts) = (shared.clone(), tenants.clone());
    modes.push((
        "shared pool, another tenant each checkout",
        Arc::new(move |t, k| {
            let tenant = &ts[another(t, k)];
            pk_select(&mut p.get_for(tenant).unwrap(), id(t, k)).unwrap();
        }),
        2,
    ));
    let (p, ts) = (set_first.clone(), tenants.clone());
    modes.push((
        "django-tenants/Apartment style: SET search_path, then the work, another tenant",
        Arc::new(move |t, k| {
            let mut c = p.get().unwrap();
            c.batch_execute(&format!(
                "SET search_path = {}, public",
                ts[another(t, k)].quoted()
            ))
            .unwrap();
            pk_select(&mut c, id(t, k)).unwrap();
        }),
        2,
    ));
    let (p, t) = (set_first.clone(), t0.clone());
    modes.push((
        "django-tenants/Apartment style, same tenant",
        Arc::new(move |tt, k| {
            let mut c = p.get().unwrap();
            c.batch_execute(&format!("SET search_path = {}, public", t.quoted()))
                .unwrap();
            pk_select(&mut c, id(tt, k)).unwrap();
        }),
        0,
    ));
    let pools = tenant_pools.clone();
    modes.push((
        "per-tenant pools: TenantPool (8 × 1 connection, with hygiene)",
        Arc::new(move |t, k| {
            pk_select(&mut pools[t as usize].get().unwrap(), id(t, k)).unwrap();
        }),
        0,
    ));
    let pools = per_tenant.clone();
    modes.push((
        "per-tenant pools: TenantCustomizer (8 × 1, no hygiene)",
        Arc::new(move |t, k| {
            pk_select(&mut pools[t as usize].get().unwrap(), id(t, k)).unwrap();
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
        9,
    ));
    let (p, t) = (scoped.clone(), t0.clone());
    modes.push((
        "transaction-scoped",
        Arc::new(move |tt, k| {
            p.transaction_for(&t, |c| Ok::<_, ConnectionError>(pk_select(c, id(tt, k))?))
                .unwrap();
        }),
        9,
    ));
    // Sessions that do leave state: a custom setting (row-level security's
    // `app.user_id`) and a temporary table, each op; the baseline does the
    // same work on plain r2d2, where nothing is reset.
    let set_user = |c: &mut PgConnection, k: u64| {
        diesel::sql_query("SELECT set_config('app.user_id', $1, false)")
            .bind::<diesel::sql_types::Text, _>(k.to_string())
            .execute(c)
            .unwrap();
    };
    let p = plain.clone();
    modes.push((
        "plain r2d2, op sets app.user_id",
        Arc::new(move |t, k| {
            let mut c = p.get().unwrap();
            set_user(&mut c, k);
            pk_select(&mut c, id(t, k)).unwrap();
        }),
        11,
    ));
    let (p, t) = (dirty_settings.clone(), t0.clone());
    modes.push((
        "shared pool, same tenant, op sets app.user_id",
        Arc::new(move |tt, k| {
            let mut c = p.get_for(&t).unwrap();
            set_user(&mut c, k);
            pk_select(&mut c, id(tt, k)).unwrap();
        }),
        11,
    ));
    let temp = "CREATE TEMP TABLE IF NOT EXISTS scratch (v int8); INSERT INTO scratch VALUES (1)";
    let p = plain.clone();
    modes.push((
        "plain r2d2, op fills a temp table",
        Arc::new(move |t, k| {
            let mut c = p.get().unwrap();
            c.batch_execute(temp).unwrap();
            pk_select(&mut c, id(t, k)).unwrap();
        }),
        13,
    ));
    let (p, t) = (dirty_temp.clone(), t0.clone());
    modes.push((
        "shared pool, same tenant, op fills a temp table",
        Arc::new(move |tt, k| {
            let mut c = p.get_for(&t).unwrap();
            c.batch_execute(temp).unwrap();
            pk_select(&mut c, id(tt, k)).unwrap();
        }),
        13,
    ));
    run_modes("PK select per checkout", &modes, THREADS, RUN);

    // Checkout alone, one thread, one connection: the per-checkout cost
    // without contention, and each reset statement's share of it.
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
        "plain r2d2 checkout (`SELECT 1`, prepared)",
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
    let p = checked_pool(&url, 1, Test::PreviousSwitch);
    let t = t0.clone();
    checkout_modes.push((
        "previous switch (no hygiene), same tenant",
        Arc::new(move |_, _| {
            set_next_path(&t);
            drop(p.get().unwrap())
        }),
        0,
    ));
    let p = checked_pool(&url, 1, Test::SetPath);
    let t = t0.clone();
    checkout_modes.push((
        "floor: prepared set_config, same tenant",
        Arc::new(move |_, _| {
            set_next_path(&t);
            drop(p.get().unwrap())
        }),
        0,
    ));
    let first = checkout_modes.len();
    for sql in [
        "SELECT 1",
        "RESET ALL; SELECT 1",
        "CLOSE ALL; SELECT 1",
        "DISCARD TEMP; SELECT 1",
        "DISCARD SEQUENCES; SELECT 1",
        "SELECT pg_catalog.pg_advisory_unlock_all()",
        "SET SESSION AUTHORIZATION DEFAULT; SELECT 1",
        "UNLISTEN *; SELECT 1",
        "DISCARD ALL",
    ] {
        let p = checked_pool(&url, 1, Test::Sql(sql));
        checkout_modes.push((sql, Arc::new(move |_, _| drop(p.get().unwrap())), first));
    }
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
