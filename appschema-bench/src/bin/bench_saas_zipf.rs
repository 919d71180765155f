//! The saas example's tenant page (`GET /`: three queries, one a join of an
//! isolated table with a shared one) under wrk, with tenant popularity
//! following Zipf (s = 1), against the same app answering one tenant only
//! and against the single-tenant app on plain r2d2 / plain diesel-async.
//!
//! `scripts/bench_saas_wrk.sh` runs it (one command), or
//! `cargo run --release -p appschema-bench --bin bench_saas_zipf --features axum,async [-- 1000 10000]`.
//! Needs `wrk` on PATH.
//!
//! Servers, all in one process over one throwaway PostgreSQL, 16 pooled
//! connections each, `wrk -t2 -c32` (twice as many requests in flight as
//! connections: the pools are saturated):
//! - **sync app**: the real saas app on its blocking path (resolver, tower
//!   layer, `SharedPool` checkout, `CurrentTenant::run`), once per pool
//!   configuration: tenant affinity off / on × `max_tenants_per_connection`
//!   500 (the default) / none;
//! - **async app**: the same on its async path (`AsyncSharedPool`);
//! - **floor**: not appschema. The same page on a plain r2d2 / plain
//!   diesel-async deadpool whose handler maps the Host to the tenant's
//!   schema and runs a bare `SET search_path TO "<schema>", public` (one
//!   statement, no hygiene, no check) before the page's read-only
//!   transaction: what any search_path-switching tool pays, PostgreSQL's
//!   re-planning after a path change included;
//! - **plain r2d2 / plain deadpool**: the same page in the same `BEGIN READ
//!   ONLY` transaction on a pool whose connections sit on one tenant (`SET
//!   search_path` on connect): one tenant with no multi-tenancy at all.
//!
//! Workloads: Zipf over N tenants (N from the command line, default 1,000;
//! the tenants of the first size are kept and more added), and one tenant
//! only (every request for the most popular tenant) for the default app
//! configuration, the floor and the plain pools. Every server and workload
//! is measured in each round, rounds interleaved, medians reported
//! (`ROUNDS`, default 5, of `SECONDS`, default 5 s), with the load average
//! at each round.
//!
//! After the timed rounds, a probe measures the share of checkouts that
//! switched path: the same handler body on the same pools, plus `SELECT
//! pg_backend_pid()` after each checkout, for one wrk run each.

#[path = "../../../examples/saas/app.rs"]
#[allow(dead_code)]
mod app;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use app::Plan;
use appschema::async_pool::AsyncSharedPool;
use appschema::migrate::Migrator;
use appschema::provision::{self, NewTenant};
use appschema::resolve::Resolver;
use appschema::{SchemaName, SharedPool};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type PlainPool = Pool<ConnectionManager<PgConnection>>;
type PlainAsyncPool = DeadPool<AsyncPgConnection>;
type HostMap = Arc<HashMap<String, SchemaName>>;

const POOL_SIZE: usize = 16;
const WRK_CONNECTIONS: &str = "-c32";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Puts every connection of a plain pool on one tenant.
#[derive(Debug)]
struct OnSchema(String);

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for OnSchema {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!("SET search_path TO {}, public", self.0))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

fn plain_async_pool(url: &str, schema: String) -> PlainAsyncPool {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |url| {
        let schema = schema.clone();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.batch_execute(&format!("SET search_path TO {schema}, public"))
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    DeadPool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .expect("a pool")
}

fn status<E>(_: E) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

/// The page in `BEGIN READ ONLY` … `COMMIT`, as the saas app's
/// `read_retrying` runs it: the same statements as the app but the checkout.
async fn plain_page_tx(
    State((pool, name)): State<(PlainPool, String)>,
) -> Result<Html<String>, StatusCode> {
    let data = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(status)?;
        conn.build_transaction()
            .read_only()
            .run(app::page_data)
            .map_err(status)
    })
    .await
    .map_err(status)??;
    Ok(Html(app::render_page(data, &name)))
}

/// [`plain_page_tx`] on diesel-async.
async fn plain_async_page_tx(
    State((pool, name)): State<(PlainAsyncPool, String)>,
) -> Result<Html<String>, StatusCode> {
    let mut conn = pool.get().await.map_err(status)?;
    conn.batch_execute("BEGIN READ ONLY")
        .await
        .map_err(status)?;
    let data = app::on_async::page_data(&mut conn).await.map_err(status)?;
    conn.batch_execute("COMMIT").await.map_err(status)?;
    Ok(Html(app::render_page(data, &name)))
}

/// Which tenant each backend served last, and how many checkouts switched.
#[derive(Debug, Default)]
struct Switches {
    inner: Mutex<(HashMap<i32, String>, u64, u64)>,
}

impl Switches {
    fn record(&self, pid: i32, tenant: &str) {
        let mut g = self.inner.lock().unwrap();
        let (last, checkouts, switched) = &mut *g;
        *checkouts += 1;
        if last.get(&pid).map(String::as_str) != Some(tenant) {
            *switched += 1;
            last.insert(pid, tenant.to_string());
        }
    }

    /// The share of checkouts since the last call that switched path.
    fn take_share(&self) -> f64 {
        let mut g = self.inner.lock().unwrap();
        let share = g.2 as f64 / g.1.max(1) as f64;
        g.1 = 0;
        g.2 = 0;
        share
    }
}

type ProbeState<P> = State<(P, HostMap, Arc<Switches>)>;

fn tenant_of(hosts: &HostMap, headers: &HeaderMap) -> Result<SchemaName, StatusCode> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| hosts.get(h))
        .cloned()
        .ok_or(StatusCode::NOT_FOUND)
}

async fn probe_sync(
    State((pool, hosts, seen)): ProbeState<SharedPool>,
    headers: HeaderMap,
) -> Result<Html<String>, StatusCode> {
    let schema = tenant_of(&hosts, &headers)?;
    let data = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get_for(&schema).map_err(status)?;
        let pid: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "pg_backend_pid()",
        ))
        .get_result(&mut *conn)
        .map_err(status)?;
        seen.record(pid, schema.as_str());
        app::page_data(&mut conn).map_err(status)
    })
    .await
    .map_err(status)??;
    Ok(Html(app::render_page(data, "probe")))
}

async fn probe_async(
    State((pool, hosts, seen)): ProbeState<AsyncSharedPool>,
    headers: HeaderMap,
) -> Result<Html<String>, StatusCode> {
    let schema = tenant_of(&hosts, &headers)?;
    let mut conn = pool.get_for(&schema).await.map_err(status)?;
    let pid: i32 = diesel_async::RunQueryDsl::get_result(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "pg_backend_pid()",
        )),
        &mut conn,
    )
    .await
    .map_err(status)?;
    seen.record(pid, schema.as_str());
    let data = app::on_async::page_data(&mut conn).await.map_err(status)?;
    Ok(Html(app::render_page(data, "probe")))
}

type FloorState<P> = State<(P, HostMap, Option<Arc<Switches>>)>;

fn backend_pid_sync(conn: &mut PgConnection) -> QueryResult<i32> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
        "pg_backend_pid()",
    ))
    .get_result(conn)
}

/// The floor on r2d2: the Host's tenant by a map look-up, a bare `SET
/// search_path`, then the page in the app's read-only transaction. With
/// `seen`, also records which backend served which tenant (the probe).
async fn floor_page(
    State((pool, hosts, seen)): FloorState<PlainPool>,
    headers: HeaderMap,
) -> Result<Html<String>, StatusCode> {
    let schema = tenant_of(&hosts, &headers)?;
    let data = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(status)?;
        conn.batch_execute(&format!("SET search_path TO {}, public", schema.quoted()))
            .map_err(status)?;
        if let Some(seen) = &seen {
            seen.record(
                backend_pid_sync(&mut conn).map_err(status)?,
                schema.as_str(),
            );
        }
        conn.build_transaction()
            .read_only()
            .run(app::page_data)
            .map_err(status)
    })
    .await
    .map_err(status)??;
    Ok(Html(app::render_page(data, "floor")))
}

/// [`floor_page`] on diesel-async.
async fn floor_async_page(
    State((pool, hosts, seen)): FloorState<PlainAsyncPool>,
    headers: HeaderMap,
) -> Result<Html<String>, StatusCode> {
    let schema = tenant_of(&hosts, &headers)?;
    let mut conn = pool.get().await.map_err(status)?;
    conn.batch_execute(&format!("SET search_path TO {}, public", schema.quoted()))
        .await
        .map_err(status)?;
    if let Some(seen) = &seen {
        let pid: i32 = diesel_async::RunQueryDsl::get_result(
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
                "pg_backend_pid()",
            )),
            &mut conn,
        )
        .await
        .map_err(status)?;
        seen.record(pid, schema.as_str());
    }
    conn.batch_execute("BEGIN READ ONLY")
        .await
        .map_err(status)?;
    let data = app::on_async::page_data(&mut conn).await.map_err(status)?;
    conn.batch_execute("COMMIT").await.map_err(status)?;
    Ok(Html(app::render_page(data, "floor")))
}

/// A plain deadpool of [`POOL_SIZE`] with no set-up: the floor's pool.
fn bare_async_pool(url: &str) -> PlainAsyncPool {
    DeadPool::builder(AsyncDieselConnectionManager::new(url))
        .max_size(POOL_SIZE)
        .build()
        .expect("a pool")
}

/// The pool configuration of an app server: tenant affinity, and
/// `max_tenants_per_connection`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Config {
    affinity: bool,
    bound: Option<usize>,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let affinity = if self.affinity { "on" } else { "off" };
        match self.bound {
            Some(n) => write!(f, "affinity {affinity}, bound {n}"),
            None => write!(f, "affinity {affinity}, no bound"),
        }
    }
}

/// Serves the saas app on `mode`'s path with pools of [`POOL_SIZE`]
/// configured by `config`; its port and state.
fn app_server(
    rt: &tokio::runtime::Runtime,
    url: &str,
    mode: app::Mode,
    config: Config,
    migrations: &Arc<appschema::MigrationSet>,
) -> Result<(u16, app::AppState), BoxError> {
    let sync_pool = match mode {
        app::Mode::Blocking => SharedPool::builder(url)
            .max_size(POOL_SIZE as u32)
            .tenant_affinity(config.affinity)
            .max_tenants_per_connection(config.bound)
            .build()?,
        // Only schema builds use it on the async path.
        app::Mode::Async => SharedPool::builder(url).max_size(2).min_idle(0).build()?,
    };
    let async_pool = match mode {
        app::Mode::Blocking => None,
        app::Mode::Async => Some(
            AsyncSharedPool::builder(url)
                .max_size(POOL_SIZE as u32)
                .tenant_affinity(config.affinity)
                .max_tenants_per_connection(config.bound)
                .build()?,
        ),
    };
    let registry_pool = Pool::builder()
        .max_size(4)
        .build(ConnectionManager::<PgConnection>::new(url))?;
    let resolver = Arc::new(Resolver::builder().build(registry_pool));
    let state = app::AppState {
        pool: sync_pool,
        async_pool,
        migrations: migrations.clone(),
        apex: "localhost".to_string(),
        port: 0,
    };
    let port = serve(rt, app::router(state.clone(), resolver))?;
    Ok((port, state))
}

/// The 1-minute load average (`/proc/loadavg`).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Requests/s of wrk against `port`'s `GET /`, hosts drawn by
/// `zipf_hosts.lua` over `n` tenants (`mode`: zipf or uniform), and the
/// slowest response in ms. A response slower than 10 s, or any other
/// error, stops the benchmark.
fn wrk(port: u16, n: usize, mode: &str, seconds: usize) -> (f64, f64) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/saas/zipf_hosts.lua"
    );
    let out = Command::new("wrk")
        .args([
            "-t2",
            WRK_CONNECTIONS,
            "--timeout",
            "10s",
            &format!("-d{seconds}s"),
            "-s",
            script,
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .args(["--", "z", &n.to_string(), mode])
        .output()
        .expect("wrk must be installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        panic!("wrk saw errors:\n{text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let max_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Latency"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .map_or(f64::NAN, |v| {
            let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let num: f64 = num.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => num / 1000.0,
                "s" => num * 1000.0,
                "m" => num * 60_000.0,
                _ => num,
            }
        });
    (rps, max_ms)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn serve(rt: &tokio::runtime::Runtime, router: Router) -> Result<u16, std::io::Error> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(async move { axum::serve(listener, router).await });
    Ok(port)
}

/// Creates tenants `z<from>` … `z<to>` (hosts `z<k>.localhost`) from the
/// stored template, each with an account, 5 projects and 10 tasks, on two
/// threads. Returns their schemas by host.
fn create_tenants(
    url: &str,
    migrations: &Arc<appschema::MigrationSet>,
    template: &Arc<provision::Template>,
    plan: i64,
    from: usize,
    to: usize,
) -> Result<Vec<(String, SchemaName)>, BoxError> {
    let threads = 2;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = url.to_string();
            let migrations = migrations.clone();
            let template = template.clone();
            std::thread::spawn(move || -> Result<Vec<(String, SchemaName)>, BoxError> {
                let mut conn = PgConnection::establish(&url)?;
                let mut out = Vec::new();
                for k in (from..=to).filter(|k| k % threads == t) {
                    let host = format!("z{k}.localhost");
                    let schema = conn.transaction(|conn| -> Result<_, BoxError> {
                        let request = NewTenant::new(&host)?;
                        let created = provision::create_tenant_from_template(
                            conn,
                            &*migrations,
                            &request,
                            &template,
                        )?;
                        conn.batch_execute(&format!(
                            "SET LOCAL search_path TO {schema}, public;
                             INSERT INTO account (display_name, plan_id) VALUES ('{host}', {plan});
                             INSERT INTO projects (name) SELECT 'project ' || n FROM generate_series(1, 5) n;
                             INSERT INTO tasks (project_id, title) SELECT p.id, 'task ' || n
                               FROM projects p, generate_series(1, 2) n;",
                            schema = created.tenant.schema_name.quoted(),
                        ))?;
                        Ok(created.tenant.schema_name)
                    })?;
                    out.push((host, schema));
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("creating tenants panicked")?);
    }
    Ok(all)
}

fn main() -> Result<(), BoxError> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    let rounds = env_or("ROUNDS", 5);
    let seconds = env_or("SECONDS", 5);

    let server = appschema_tempdb::Server::from_env_or_start()?;
    let url = server.url();
    let rt = tokio::runtime::Runtime::new()?;
    // Migrates (shared schema, spares); its own server is not measured.
    let started = rt.block_on(app::start(&url, 0, app::Mode::Blocking))?;
    let migrations = started.state.migrations.clone();
    started.stop();

    let default = Config {
        affinity: false,
        bound: Some(appschema::connection::DEFAULT_MAX_TENANTS_PER_CONNECTION),
    };
    let configs = [
        default,
        Config {
            affinity: true,
            ..default
        },
        Config {
            affinity: false,
            bound: None,
        },
        Config {
            affinity: true,
            bound: None,
        },
    ];
    // (config, mode, port, state)
    let mut apps = Vec::new();
    for config in configs {
        for mode in [app::Mode::Blocking, app::Mode::Async] {
            let (port, state) = app_server(&rt, &url, mode, config, &migrations)?;
            apps.push((config, mode, port, state));
        }
    }

    let mut conn = PgConnection::establish(&url)?;
    let free: Plan = {
        use app::shared::plans;
        plans::table
            .filter(plans::name.eq("free"))
            .select(Plan::as_select())
            .first(&mut conn)?
    };
    let template = Arc::new(provision::generate_template(&mut conn, &url, &*migrations)?);
    provision::store_template(&mut conn, &template)?;

    let mut hosts: HashMap<String, SchemaName> = HashMap::new();
    let mut created = 0;
    let mut plain: Option<(PlainPool, PlainAsyncPool, String)> = None;
    let floor_pool: PlainPool = Pool::builder()
        .max_size(POOL_SIZE as u32)
        .build(ConnectionManager::new(&url))?;
    let floor_async = bare_async_pool(&url);

    for &size in &sizes {
        if size > created {
            let start = Instant::now();
            let new = create_tenants(&url, &migrations, &template, free.id, created + 1, size)?;
            let took = start.elapsed().as_secs_f64();
            println!(
                "created tenants {}..{} in {took:.1} s ({:.0} tenants/s, template + 16 rows each, 2 threads)",
                created + 1,
                size,
                (size - created) as f64 / took
            );
            hosts.extend(new);
            created = size;
            let start = Instant::now();
            let report = Migrator::new(&url).migrate(&migrations, &|_| {})?;
            assert!(report.is_success(), "{:?}", report.failures);
            println!(
                "no-op migrate over {size} tenants: {:.2} s",
                start.elapsed().as_secs_f64()
            );
            let (db_bytes, relations): (i64, i64) = diesel::select((
                diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "pg_database_size(current_database())",
                ),
                diesel::dsl::sql::<diesel::sql_types::BigInt>("(SELECT count(*) FROM pg_class)"),
            ))
            .get_result(&mut conn)?;
            println!(
                "database size {:.1} MiB, pg_class rows {relations}",
                db_bytes as f64 / (1 << 20) as f64
            );
        }
        let first = hosts["z1.localhost"].clone();
        let (plain_pool, plain_async, first_name) = plain.get_or_insert_with(|| {
            (
                Pool::builder()
                    .max_size(POOL_SIZE as u32)
                    .connection_customizer(Box::new(OnSchema(first.quoted())))
                    .build(ConnectionManager::new(&url))
                    .expect("plain pool"),
                plain_async_pool(&url, first.quoted()),
                first.to_string(),
            )
        });
        let host_map: HostMap = Arc::new(hosts.clone());
        let plain_tx_port = serve(
            &rt,
            Router::new()
                .route("/", get(plain_page_tx))
                .with_state((plain_pool.clone(), first_name.clone())),
        )?;
        let plain_async_tx_port = serve(
            &rt,
            Router::new()
                .route("/", get(plain_async_page_tx))
                .with_state((plain_async.clone(), first_name.clone())),
        )?;
        let floor_port = serve(
            &rt,
            Router::new().route("/", get(floor_page)).with_state((
                floor_pool.clone(),
                host_map.clone(),
                None,
            )),
        )?;
        let floor_async_port = serve(
            &rt,
            Router::new().route("/", get(floor_async_page)).with_state((
                floor_async.clone(),
                host_map.clone(),
                None,
            )),
        )?;
        // SERVE_SECONDS=n: no timed rounds; print every server's port and
        // serve for n seconds, for a profiler or wrk driven from outside
        // (`scripts/profile_saas_request.sh`). "sync-app" / "async-app" are
        // the default configuration's servers (the first two of `apps`).
        if let Some(serve) = std::env::var("SERVE_SECONDS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            let app_port = |mode: app::Mode| {
                apps.iter()
                    .find(|(c, m, _, _)| *m == mode && !c.affinity && c.bound == default.bound)
                    .map(|(_, _, port, _)| *port)
                    .expect("the default configuration's server")
            };
            for (label, port) in [
                ("sync-app", app_port(app::Mode::Blocking)),
                ("async-app", app_port(app::Mode::Async)),
                ("plain-r2d2-tx", plain_tx_port),
                ("plain-deadpool-tx", plain_async_tx_port),
                ("floor-r2d2", floor_port),
                ("floor-deadpool", floor_async_port),
            ] {
                println!("serving {label} {port}");
            }
            println!("serving pid {}", std::process::id());
            std::thread::sleep(std::time::Duration::from_secs(serve));
            break;
        }

        // (label, port, tenants, probe: the same handler plus the pid, and
        // what it records into)
        type Run = (String, u16, usize, Option<(u16, Arc<Switches>)>);
        let mut runs: Vec<Run> = Vec::new();
        let probe = |router: Router, seen: &Arc<Switches>| -> Result<_, BoxError> {
            Ok(Some((serve(&rt, router)?, seen.clone())))
        };
        for (config, mode, port, state) in &apps {
            let seen = Arc::new(Switches::default());
            let probe_port = match mode {
                app::Mode::Blocking => probe(
                    Router::new().route("/", get(probe_sync)).with_state((
                        state.pool.clone(),
                        host_map.clone(),
                        seen.clone(),
                    )),
                    &seen,
                )?,
                app::Mode::Async => probe(
                    Router::new().route("/", get(probe_async)).with_state((
                        state.async_pool.clone().expect("the async app's pool"),
                        host_map.clone(),
                        seen.clone(),
                    )),
                    &seen,
                )?,
            };
            let path = match mode {
                app::Mode::Blocking => "sync",
                app::Mode::Async => "async",
            };
            runs.push((
                format!("{path} app, {config}, Zipf over {size}"),
                *port,
                size,
                probe_port.clone(),
            ));
            if *config == default {
                runs.push((
                    format!("{path} app, {config}, one tenant"),
                    *port,
                    1,
                    probe_port,
                ));
            }
        }
        for (path, port, pool) in [
            ("r2d2", floor_port, Some(floor_pool.clone())),
            ("deadpool", floor_async_port, None),
        ] {
            let seen = Arc::new(Switches::default());
            let probe_port = match pool {
                Some(pool) => probe(
                    Router::new().route("/", get(floor_page)).with_state((
                        pool,
                        host_map.clone(),
                        Some(seen.clone()),
                    )),
                    &seen,
                )?,
                None => probe(
                    Router::new().route("/", get(floor_async_page)).with_state((
                        floor_async.clone(),
                        host_map.clone(),
                        Some(seen.clone()),
                    )),
                    &seen,
                )?,
            };
            runs.push((
                format!("floor: plain {path} + bare SET search_path, Zipf over {size}"),
                port,
                size,
                probe_port.clone(),
            ));
            runs.push((
                format!("floor: plain {path} + bare SET search_path, one tenant"),
                port,
                1,
                probe_port,
            ));
        }
        runs.push((
            "plain r2d2 on one tenant's path, same read-only transaction".into(),
            plain_tx_port,
            1,
            None,
        ));
        runs.push((
            "plain deadpool on one tenant's path, same read-only transaction".into(),
            plain_async_tx_port,
            1,
            None,
        ));

        for (_, port, n, _) in &runs {
            wrk(*port, *n, "zipf", 2);
        }
        let mut results = vec![Vec::new(); runs.len()];
        let mut slowest = vec![0f64; runs.len()];
        let mut loads = Vec::new();
        for round in 1..=rounds {
            let mut line = format!("{size} tenants, round {round} (load {}):", load());
            for (i, (_, port, n, _)) in runs.iter().enumerate() {
                let (r, max_ms) = wrk(*port, *n, "zipf", seconds);
                line.push_str(&format!(" {r:.0}"));
                results[i].push(r);
                slowest[i] = slowest[i].max(max_ms);
            }
            loads.push(load());
            println!("{line}");
        }
        let mut switched = Vec::new();
        for (_, _, n, probe) in &runs {
            switched.push(probe.as_ref().map(|(p, seen)| {
                seen.take_share();
                wrk(*p, *n, "zipf", seconds);
                seen.take_share()
            }));
        }
        let m: Vec<f64> = results.into_iter().map(median).collect();
        let at = |label: &str| {
            runs.iter()
                .position(|r| r.0.starts_with(label))
                .unwrap_or_else(|| panic!("no run `{label}`"))
        };
        let one = |path: &str| at(&format!("{path} app, {default}, one tenant"));
        let (one_sync, one_async) = (one("sync"), one("async"));
        let (floor_one_sync, floor_one_async) = (
            at("floor: plain r2d2 + bare SET search_path, one tenant"),
            at("floor: plain deadpool + bare SET search_path, one tenant"),
        );
        let (plain_sync, plain_async) = (at("plain r2d2"), at("plain deadpool"));
        println!();
        println!(
            "#### {size} tenants: `GET /`, wrk -t2 {WRK_CONNECTIONS}, pools of {POOL_SIZE}, median of {rounds} × {seconds} s, load average {} at the rounds' ends",
            loads.join(" ")
        );
        println!("| server, traffic | requests/s | × same server, one tenant | × plain pool, one tenant, same transaction | checkouts switched | slowest response |");
        println!("|---|---:|---:|---:|---:|---:|");
        for (i, (label, ..)) in runs.iter().enumerate() {
            let sync =
                label.contains("sync app") && !label.contains("async") || label.contains("r2d2");
            let (one, plain) = match (label.starts_with("floor"), sync) {
                (true, true) => (floor_one_sync, plain_sync),
                (true, false) => (floor_one_async, plain_async),
                (false, true) => (one_sync, plain_sync),
                (false, false) => (one_async, plain_async),
            };
            let sw = switched[i].map_or("–".to_string(), |s| format!("{:.1} %", s * 100.0));
            let vs_one = if label.starts_with("plain") {
                "–".to_string()
            } else {
                format!("{:.2}", m[i] / m[one])
            };
            println!(
                "| {label} | {:.0} | {vs_one} | {:.2} | {sw} | {:.0} ms |",
                m[i],
                m[i] / m[plain],
                slowest[i]
            );
        }
        println!();
    }
    Ok(())
}
