//! Tenants on one database, up to N (issue 25): what creating a tenant
//! costs as the catalog grows, separated from what the machine's load costs,
//! and at each checkpoint the no-op `migrate`, the catalog's size and a
//! pooled backend's memory.
//!
//! ```sh
//! nice -n 10 cargo run --release --example bench_scale -- 100000                  # saas schema, no FK to shared
//! nice -n 10 cargo run --release --example bench_scale -- 5000 --schema saas-fk       # with the saas example's FK
//! nice -n 10 cargo run --release --example bench_scale -- 5000 --schema saas-trigger  # checked by a trigger instead
//! ```
//!
//! One throwaway cluster (`appschema-tempdb`: `fsync=off`, default
//! `shared_buffers`; `pg_stat_statements` loaded for this benchmark only),
//! two databases with the saas example's tables (`public.plans`; per tenant
//! `account`, `projects`, `tasks`), each with its stored template:
//!
//! - **big**: tenants `z1` … `zN` are created there from the stored
//!   template plus 16 rows each (an account, 5 projects, 10 tasks: what
//!   `bench_saas_zipf` creates), on 2 threads with one connection each;
//! - **base**: no tenants: the baseline of the probes.
//!
//! At each checkpoint (1,000, 5,000, 10,000, 20,000, 50,000, 100,000 up to
//! N) it prints:
//!
//! - the bulk rate since the last checkpoint and the median time of the
//!   last 1,000 creations (2 threads, so it includes waiting for the other);
//! - **probes**: single-threaded creations rolled back (so neither catalog
//!   grows), `PROBES` (default 40) per cell, in rounds alternating big and
//!   base, alone and under a fixed CPU load (`LOAD_THREADS`, default 2,
//!   busy-looping threads of this process): big ÷ base is what the catalog's
//!   size costs, loaded ÷ alone what the machine's load costs;
//! - the statements of the probes in big that took the most time
//!   (`pg_stat_statements`, tenant names folded to `T`);
//! - the no-op `migrate` (library, `Migrator::migrate`) and how many
//!   tracking tables it read, then the same with `recheck` (reads every
//!   tracking table: what it cost while template-built tenants had no
//!   recorded head);
//! - `pg_class` rows and the database's size;
//! - the memory of one pooled backend (`SharedPool` of one connection,
//!   default bound of 500 tenants per connection) touching 2,000 tenants
//!   spread over all (every tenant at the last checkpoint): each checkout
//!   reads `projects` and the `account` ⋈ `plans` join; the largest sum of
//!   `pg_backend_memory_contexts` and VmRSS seen (sampled every 100
//!   checkouts);
//! - per creating thread: its median and its backend's memory contexts.
//!   The two threads differ only in how long they keep a connection: one
//!   reconnects after creating `RECONNECT_EVERY` tenants (default 500),
//!   the other after `LONG_LIVED` (default 10,000): a backend keeps every
//!   relation it created in its caches;
//! - the load average.
//!
//! `--schema saas-fk` keeps the saas example's `account.plan_id REFERENCES
//! public.plans (id)`: every tenant then adds two triggers to the shared
//! `plans` table, which is what slowed creation down (see BENCHMARKS.md).
//! `--schema saas-trigger` checks `plan_id` with a trigger on the tenant's
//! `account` calling a shared function instead (what the book's
//! *Operating many tenants* suggests); `--schema saas` (the default) does
//! not check it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use appschema::migrate::Migrator;
use appschema::provision::{self, NewTenant, Source};
use appschema::{registry, Migration, MigrationSet, SchemaName, Scope, SharedPool};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Text};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PLANS: &str = "CREATE TABLE plans (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    max_projects INT NOT NULL,
    price_cents INT NOT NULL
);
INSERT INTO plans (name, max_projects, price_cents) VALUES ('free', 3, 0), ('pro', 100, 2900);";

/// How a tenant's `account.plan_id` refers to the shared `plans` table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PlanRef {
    /// A plain column: nothing checks it (`--schema saas`).
    None,
    /// The saas example's `REFERENCES public.plans (id)` (`--schema saas-fk`).
    ForeignKey,
    /// A trigger on the tenant's table calling a shared function that
    /// checks the plan exists, locking its row as a foreign key's check
    /// does (`--schema saas-trigger`): nothing is added to `plans`.
    Trigger,
}

/// The shared migration: `plans`, and the check function for
/// [`PlanRef::Trigger`].
fn shared_tables(plan_ref: PlanRef) -> String {
    let mut sql = PLANS.to_string();
    if plan_ref == PlanRef::Trigger {
        sql.push_str(
            "
CREATE FUNCTION public.plan_exists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM public.plans WHERE id = NEW.plan_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format('plan %s does not exist', NEW.plan_id);
    END IF;
    RETURN NEW;
END $$;",
        );
    }
    sql
}

/// The saas example's isolated migration, `account.plan_id` checked as
/// `plan_ref` says.
fn tenant_tables(plan_ref: PlanRef) -> String {
    format!(
        "CREATE TABLE account (
    id INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    display_name TEXT NOT NULL,
    plan_id BIGINT NOT NULL{}
);
CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false
);{}",
        if plan_ref == PlanRef::ForeignKey {
            " REFERENCES public.plans (id)"
        } else {
            ""
        },
        if plan_ref == PlanRef::Trigger {
            "
CREATE TRIGGER account_plan_exists BEFORE INSERT OR UPDATE OF plan_id ON account
    FOR EACH ROW EXECUTE FUNCTION public.plan_exists();"
        } else {
            ""
        }
    )
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

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

#[derive(QueryableByName)]
struct Mem {
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = Integer)]
    pid: i32,
}

const MEM_SQL: &str = "SELECT sum(total_bytes)::int8 AS bytes, pg_backend_pid() AS pid \
                       FROM pg_backend_memory_contexts";

/// One tenant: the template's replay and 16 rows, in one transaction,
/// committed or (a probe) rolled back. Returns the schema.
fn create_one(
    conn: &mut PgConnection,
    migrations: &MigrationSet,
    host: &str,
    commit: bool,
) -> Result<SchemaName, BoxError> {
    let mut schema = None;
    let result = conn.transaction(|conn| -> Result<(), BoxError> {
        let request = NewTenant::new(host)?.source(Source::Template);
        let created = provision::create_tenant(conn, migrations, &request)?;
        conn.batch_execute(&format!(
            "SET LOCAL search_path TO {s}, public;
             INSERT INTO account (display_name, plan_id) VALUES ('{host}', 1);
             INSERT INTO projects (name) SELECT 'project ' || n FROM generate_series(1, 5) n;
             INSERT INTO tasks (project_id, title) SELECT p.id, 'task ' || n
               FROM projects p, generate_series(1, 2) n;",
            s = created.tenant.schema_name.quoted(),
        ))?;
        schema = Some(created.tenant.schema_name);
        if commit {
            Ok(())
        } else {
            Err(Box::new(diesel::result::Error::RollbackTransaction))
        }
    });
    match result {
        Ok(()) => {}
        Err(e)
            if !commit
                && matches!(
                    e.downcast_ref::<diesel::result::Error>(),
                    Some(diesel::result::Error::RollbackTransaction)
                ) => {}
        Err(e) => return Err(e),
    }
    Ok(schema.expect("created"))
}

/// A creating thread's connection, replaced after creating `every`
/// tenants.
struct Creator {
    url: String,
    every: usize,
    conn: PgConnection,
    on_conn: usize,
}

impl Creator {
    fn new(url: &str, every: usize) -> Result<Creator, BoxError> {
        Ok(Creator {
            url: url.to_string(),
            every,
            conn: PgConnection::establish(url)?,
            on_conn: 0,
        })
    }
}

/// What a window of bulk creation measured for one creator.
struct Window {
    /// (sequence number, milliseconds) of each creation.
    times: Vec<(usize, f64)>,
    /// The backend's memory contexts at the end (bytes), and how many
    /// tenants it had created.
    mem: i64,
    on_conn: usize,
}

/// Creates `z<from>` … `z<to>` with one thread per creator, each taking the
/// next number.
fn create_range(
    creators: &mut [Creator],
    migrations: &MigrationSet,
    from: usize,
    to: usize,
) -> Result<Vec<Window>, BoxError> {
    let next = AtomicUsize::new(from);
    let progress_start = Instant::now();
    let results: Vec<Result<Window, BoxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = creators
            .iter_mut()
            .map(|creator| {
                let next = &next;
                s.spawn(move || -> Result<Window, BoxError> {
                    let mut times = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k > to {
                            break;
                        }
                        if creator.on_conn >= creator.every {
                            creator.conn = PgConnection::establish(&creator.url)?;
                            creator.on_conn = 0;
                        }
                        let start = Instant::now();
                        create_one(
                            &mut creator.conn,
                            migrations,
                            &format!("z{k}.localhost"),
                            true,
                        )?;
                        creator.on_conn += 1;
                        let ms = start.elapsed().as_secs_f64() * 1e3;
                        times.push((k, ms));
                        if k.is_multiple_of(1000) {
                            println!(
                                "  … {k} tenants ({:.0} s into this stretch, last {ms:.1} ms, load {})",
                                progress_start.elapsed().as_secs_f64(),
                                load_average()
                            );
                        }
                    }
                    let mem = diesel::sql_query(MEM_SQL)
                        .get_result::<Mem>(&mut creator.conn)?
                        .bytes;
                    Ok(Window {
                        times,
                        mem,
                        on_conn: creator.on_conn,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("creating tenants panicked"))
            .collect()
    });
    results.into_iter().collect()
}

/// Busy-loops `threads` threads while the returned guard lives.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start(threads: usize) -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..100_000u64 {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                        }
                    }
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(QueryableByName)]
struct Top {
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = Double)]
    mean_ms: f64,
    #[diesel(sql_type = Double)]
    total_ms: f64,
    #[diesel(sql_type = Text)]
    query: String,
}

/// The statements of database `db` that took the most time since the last
/// reset, tenant schema names folded to `T`.
fn top_statements(conn: &mut PgConnection, db: &str) -> QueryResult<Vec<Top>> {
    diesel::sql_query(
        "SELECT sum(calls)::int8 AS calls, (sum(total_exec_time) / sum(calls))::float8 AS mean_ms,
                sum(total_exec_time)::float8 AS total_ms, q AS query
           FROM (SELECT calls, total_exec_time,
                        left(regexp_replace(regexp_replace(query, '\"?(z[0-9]+|probe_c[0-9]+_[0-9]+)_localhost\"?', 'T', 'g'),
                                            '\\s+', ' ', 'g'), 90) AS q
                   FROM pg_stat_statements
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)) s
          GROUP BY q ORDER BY sum(total_exec_time) DESC LIMIT 6",
    )
    .bind::<Text, _>(db)
    .load(conn)
}

/// Single-threaded creations rolled back, alternating big and base, alone
/// then loaded, `per_cell` each: the medians (ms) as
/// [big alone, base alone, big loaded, base loaded].
fn probes(
    big: &mut PgConnection,
    base: &mut PgConnection,
    migrations: &MigrationSet,
    checkpoint: usize,
    per_cell: usize,
    load_threads: usize,
) -> Result<[f64; 4], BoxError> {
    let mut cells: [Vec<f64>; 4] = Default::default();
    let rounds = 2;
    let mut n = 0;
    for _ in 0..rounds {
        for loaded in [false, true] {
            let _load = loaded.then(|| CpuLoad::start(load_threads));
            for _ in 0..per_cell / rounds {
                for (i, conn) in [&mut *big, &mut *base].into_iter().enumerate() {
                    n += 1;
                    let host = format!("probe-c{checkpoint}-{n}.localhost");
                    let start = Instant::now();
                    create_one(conn, migrations, &host, false)?;
                    cells[i + 2 * usize::from(loaded)].push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    Ok(cells.map(median))
}

/// One pooled connection (default bound) checked out for each schema of
/// `touch` in turn: the largest memory contexts sum and VmRSS seen.
fn pooled_memory(url: &str, touch: &[SchemaName]) -> Result<(f64, f64, f64), BoxError> {
    let pool = SharedPool::builder(url).max_size(1).build()?;
    let mut max_ctx = 0i64;
    let mut max_rss = 0u64;
    let start = Instant::now();
    for (i, schema) in touch.iter().enumerate() {
        let mut conn = pool.get_for(schema)?;
        conn.batch_execute(
            "SELECT count(*) FROM projects;
             SELECT a.display_name, p.name FROM account a JOIN plans p ON p.id = a.plan_id;",
        )?;
        if i % 100 == 99 || i + 1 == touch.len() {
            let m: Mem = diesel::sql_query(MEM_SQL).get_result(&mut *conn)?;
            max_ctx = max_ctx.max(m.bytes);
            max_rss = max_rss.max(status_kb(m.pid, "VmRSS"));
        }
    }
    let per_checkout_ms = start.elapsed().as_secs_f64() * 1e3 / touch.len().max(1) as f64;
    Ok((
        max_ctx as f64 / 1048576.0,
        max_rss as f64 / 1000.0,
        per_checkout_ms,
    ))
}

fn main() -> Result<(), BoxError> {
    let mut n = 20_000;
    let mut plan_ref = PlanRef::None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--schema" => match args.next().as_deref() {
                Some("saas") => plan_ref = PlanRef::None,
                Some("saas-fk") => plan_ref = PlanRef::ForeignKey,
                Some("saas-trigger") => plan_ref = PlanRef::Trigger,
                other => {
                    return Err(
                        format!("unknown schema {other:?}: saas, saas-fk or saas-trigger").into(),
                    )
                }
            },
            _ => n = arg.parse()?,
        }
    }
    let per_cell = env_or("PROBES", 40);
    let load_threads = env_or("LOAD_THREADS", 2);
    let mut checkpoints: Vec<usize> = [1_000, 5_000, 10_000, 20_000, 50_000, 100_000]
        .into_iter()
        .filter(|&c| c < n)
        .collect();
    checkpoints.push(n);

    // Loaded for this benchmark's throwaway cluster only.
    let cluster = appschema_tempdb::TempCluster::start_with(&[
        ("shared_preload_libraries", "pg_stat_statements"),
        ("pg_stat_statements.max", "20000"),
        // Off but on the probes' connections: tracking every tenant's DDL
        // (new text per schema) would churn the table during bulk creation.
        ("pg_stat_statements.track", "none"),
    ])?;
    let mut admin = PgConnection::establish(&cluster.url())?;
    for sql in [
        "CREATE DATABASE big",
        "CREATE DATABASE base",
        "CREATE EXTENSION pg_stat_statements",
    ] {
        admin.batch_execute(sql)?;
    }
    let migrations = MigrationSet::new(vec![
        Migration::new(
            "20240101000000",
            "20240101000000_create_plans",
            Scope::Shared,
            shared_tables(plan_ref),
        ),
        Migration::new(
            "20240102000000",
            "20240102000000_create_projects",
            Scope::Isolated,
            tenant_tables(plan_ref),
        ),
    ]);
    let big_url = cluster.url_for("big");
    let base_url = cluster.url_for("base");
    for url in [&big_url, &base_url] {
        let mut conn = PgConnection::establish(url)?;
        registry::install(&mut conn)?;
        let report = Migrator::new(url.as_str()).migrate(&migrations, &|_| {})?;
        assert!(report.is_success(), "{:?}", report.failures);
        let template = provision::generate_template(&mut conn, url, &migrations)?;
        provision::store_template(&mut conn, &template)?;
    }
    println!(
        "schema: {}; N = {n}; probes {per_cell} per cell, {load_threads} busy threads when loaded; load {}",
        match plan_ref {
            PlanRef::None => "saas (account.plan_id unchecked)",
            PlanRef::ForeignKey => "saas-fk (account.plan_id REFERENCES public.plans)",
            PlanRef::Trigger => "saas-trigger (account.plan_id checked by a trigger on account)",
        },
        load_average()
    );
    // Two creators, alike but for how long each keeps its connection.
    let short = env_or("RECONNECT_EVERY", 500);
    let long = env_or("LONG_LIVED", 10_000);
    let mut creators = vec![
        Creator::new(&big_url, short)?,
        Creator::new(&big_url, long)?,
    ];
    let mut probe_big = PgConnection::establish(&big_url)?;
    let mut probe_base = PgConnection::establish(&base_url)?;
    for conn in [&mut probe_big, &mut probe_base] {
        conn.batch_execute("SET pg_stat_statements.track = top")?;
    }
    let run_start = Instant::now();
    let mut created = 0;
    let mut rows = Vec::new();
    for &checkpoint in &checkpoints {
        let start = Instant::now();
        let windows = create_range(&mut creators, &migrations, created + 1, checkpoint)?;
        let took = start.elapsed().as_secs_f64();
        let rate = (checkpoint - created) as f64 / took;
        let mut times: Vec<(usize, f64)> = windows.iter().flat_map(|w| w.times.clone()).collect();
        times.sort_by_key(|t| t.0);
        let last: Vec<f64> = times.iter().rev().take(1000).map(|t| t.1).collect();
        let last_median = median(last);
        let per_creator: Vec<String> = windows
            .iter()
            .zip(&creators)
            .map(|(w, c)| {
                format!(
                    "reconnecting every {}: {} created, median {:.1} ms, backend {:.1} MiB after {} on its connection",
                    c.every,
                    w.times.len(),
                    median(w.times.iter().map(|t| t.1).collect()),
                    w.mem as f64 / 1048576.0,
                    w.on_conn
                )
            })
            .collect();
        created = checkpoint;
        let load_after_create = load_average();

        admin.batch_execute("SELECT pg_stat_statements_reset()")?;
        let [big_alone, base_alone, big_loaded, base_loaded] = probes(
            &mut probe_big,
            &mut probe_base,
            &migrations,
            checkpoint,
            per_cell,
            load_threads,
        )?;
        let top = top_statements(&mut admin, "big")?;

        let start = Instant::now();
        let report = Migrator::new(big_url.as_str()).migrate(&migrations, &|_| {})?;
        let noop = start.elapsed().as_secs_f64();
        assert!(report.is_success(), "{:?}", report.failures);
        assert_eq!(report.migrations_applied, 0);
        // What the no-op run cost while template-built tenants had no
        // recorded head (before this benchmark's issue): it read every
        // tracking table, as `--recheck` does.
        let start = Instant::now();
        let reread = Migrator::new(big_url.as_str())
            .recheck(true)
            .migrate(&migrations, &|_| {})?;
        let recheck = start.elapsed().as_secs_f64();
        assert!(reread.is_success(), "{:?}", reread.failures);

        #[derive(QueryableByName)]
        struct Catalog {
            #[diesel(sql_type = BigInt)]
            bytes: i64,
            #[diesel(sql_type = BigInt)]
            relations: i64,
            #[diesel(sql_type = BigInt)]
            triggers_on_plans: i64,
        }
        let mut big = PgConnection::establish(&big_url)?;
        let catalog: Catalog = diesel::sql_query(
            "SELECT pg_database_size(current_database()) AS bytes,
                    (SELECT count(*) FROM pg_class) AS relations,
                    (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.plans'::regclass) AS triggers_on_plans",
        )
        .get_result(&mut big)?;

        let spread = 2000.min(checkpoint);
        let sample: Vec<SchemaName> = (0..spread)
            .map(|i| SchemaName::new(format!("z{}_localhost", 1 + i * checkpoint / spread)))
            .collect::<Result<_, _>>()?;
        let (ctx, rss, checkout_ms) = pooled_memory(&big_url, &sample)?;
        let all = if checkpoint == n && n > spread {
            let every: Vec<SchemaName> = (1..=checkpoint)
                .map(|k| SchemaName::new(format!("z{k}_localhost")))
                .collect::<Result<_, _>>()?;
            Some(pooled_memory(&big_url, &every)?)
        } else {
            None
        };

        println!(
            "\n## {checkpoint} tenants ({:.0} s since start)",
            run_start.elapsed().as_secs_f64()
        );
        println!(
            "bulk: {rate:.1} tenants/s since the last checkpoint ({took:.0} s); median of the last 1,000: {last_median:.1} ms (2 threads); load after: {load_after_create}"
        );
        println!(
            "probes (ms, median of {}): big {big_alone:.1} / base {base_alone:.1} alone (× {:.2}); big {big_loaded:.1} / base {base_loaded:.1} loaded (× {:.2}); loaded ÷ alone: big × {:.2}, base × {:.2}",
            per_cell,
            big_alone / base_alone,
            big_loaded / base_loaded,
            big_loaded / big_alone,
            base_loaded / base_alone,
        );
        println!("top statements of the probes in big (pg_stat_statements):");
        for t in &top {
            println!(
                "  {:>5} calls {:>8.2} ms mean {:>9.1} ms total  {}",
                t.calls, t.mean_ms, t.total_ms, t.query
            );
        }
        println!(
            "no-op migrate: {noop:.2} s ({} tracking tables read); reading every tracking table (--recheck, what template-built tenants cost before their heads were recorded): {recheck:.2} s ({} read)",
            report.tracking_tables_read, reread.tracking_tables_read
        );
        println!(
            "catalog: {} pg_class rows, database {:.0} MiB, {} triggers on public.plans",
            catalog.relations,
            catalog.bytes as f64 / 1048576.0,
            catalog.triggers_on_plans
        );
        println!(
            "pooled backend (bound 500) touching {spread} tenants: max {ctx:.1} MiB memory contexts, {rss:.0} MB VmRSS, {checkout_ms:.2} ms per checkout"
        );
        if let Some((ctx, rss, ms)) = all {
            println!(
                "pooled backend (bound 500) touching all {checkpoint} tenants: max {ctx:.1} MiB memory contexts, {rss:.0} MB VmRSS, {ms:.2} ms per checkout"
            );
        }
        for line in &per_creator {
            println!("creator {line}");
        }
        println!("load {}", load_average());
        rows.push(format!(
            "| {checkpoint} | {rate:.1} | {last_median:.1} ms | {big_alone:.1} / {base_alone:.1} ms (× {:.2}) | {noop:.2} s | {} | {:.0} MiB | {ctx:.1} MiB / {rss:.0} MB |",
            big_alone / base_alone,
            catalog.relations,
            catalog.bytes as f64 / 1048576.0,
        ));
    }
    println!(
        "\n| tenants | creation/s (bulk, 2 threads) | median of last 1,000 | probe big / base alone | no-op migrate | pg_class rows | database | pooled backend (contexts / RSS) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    println!("total: {:.0} s", run_start.elapsed().as_secs_f64());
    drop(cluster);
    Ok(())
}
