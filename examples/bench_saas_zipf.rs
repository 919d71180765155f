//! The saas example's tenant page (`GET /`: three queries, one a join of an
//! isolated table with a shared one) under wrk, with tenant popularity
//! following Zipf (s = 1), against the same app answering one tenant only
//! and against the single-tenant app on plain r2d2 / plain diesel-async.
//!
//! `scripts/bench_saas_wrk.sh` runs it (one command), or
//! `cargo run --release --example bench_saas_zipf --features axum,async [-- 1000 10000]`.
//! Needs `wrk` on PATH.
//!
//! Servers, all in one process over one throwaway PostgreSQL, 16 pooled
//! connections each, `wrk -t2 -c32`:
//! - **sync app**: the real saas app on its blocking path (resolver, tower
//!   layer, `SharedPool` checkout, `CurrentTenant::run`);
//! - **async app**: the real saas app on its async path (`AsyncSharedPool`);
//! - **plain r2d2 / plain deadpool**: the same page body on a pool whose
//!   connections sit on one tenant (`SET search_path` on connect): one
//!   tenant with no multi-tenancy at all; once in the same `BEGIN READ
//!   ONLY` transaction as the app's `read_retrying` (the baseline the
//!   ratios use: the same statements but the checkout), once without.
//!
//! Workloads: Zipf over N tenants (N from the command line, default 1,000
//! then 10,000; the tenants of the first size are kept and more added),
//! uniform over 100 tenants (first size only), and one tenant only (the
//! same app, every request for the most popular tenant). Every server and
//! workload is measured in each round, rounds interleaved, medians
//! reported (`ROUNDS`, default 5, of `SECONDS`, default 5 s).
//!
//! After the timed rounds of each workload, a probe measures the share of
//! checkouts that switched path: the same handler body on the same pools,
//! plus `SELECT pg_backend_pid()` after each checkout, for one wrk run.
//!
//! `SYNC_BOUND=none` (or a number) gives the sync app's pool that
//! `max_tenants_per_connection` instead of the default (500).

#[path = "saas/app.rs"]
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

async fn plain_page(
    State((pool, name)): State<(PlainPool, String)>,
) -> Result<Html<String>, StatusCode> {
    let data = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(status)?;
        app::page_data(&mut conn).map_err(status)
    })
    .await
    .map_err(status)??;
    Ok(Html(app::render_page(data, &name)))
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

async fn plain_async_page(
    State((pool, name)): State<(PlainAsyncPool, String)>,
) -> Result<Html<String>, StatusCode> {
    let mut conn = pool.get().await.map_err(status)?;
    let data = app::on_async::page_data(&mut conn).await.map_err(status)?;
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

/// Requests/s of wrk against `port`'s `GET /`, hosts drawn by
/// `zipf_hosts.lua` over `n` tenants (`mode`: zipf or uniform).
fn wrk(port: u16, n: usize, mode: &str, seconds: usize) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/saas/zipf_hosts.lua");
    let out = Command::new("wrk")
        .args([
            "-t2",
            WRK_CONNECTIONS,
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
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"))
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
    let sizes = if sizes.is_empty() {
        vec![1000, 10000]
    } else {
        sizes
    };
    let rounds = env_or("ROUNDS", 5);
    let seconds = env_or("SECONDS", 5);

    let server = appschema_tempdb::Server::from_env_or_start()?;
    let url = server.url();
    let rt = tokio::runtime::Runtime::new()?;
    let started = rt.block_on(app::start(&url, 0, app::Mode::Blocking))?;
    let migrations = started.state.migrations.clone();
    // SYNC_BOUND=none (or a number): the sync app's pool with that
    // max_tenants_per_connection instead of the default.
    let sync_app = match std::env::var("SYNC_BOUND").ok() {
        None => started,
        Some(bound) => {
            let bound = match bound.as_str() {
                "none" => None,
                n => Some(n.parse()?),
            };
            started.stop();
            println!("sync app's pool: max_tenants_per_connection = {bound:?}");
            rt.block_on(app::serve(
                app::Mode::Blocking,
                &url,
                SharedPool::builder(&url)
                    .max_size(POOL_SIZE as u32)
                    .max_tenants_per_connection(bound)
                    .build()?,
                Pool::builder()
                    .max_size(4)
                    .build(ConnectionManager::<PgConnection>::new(&url))?,
                migrations.clone(),
                0,
            ))?
        }
    };
    let async_app = rt.block_on(app::serve(
        app::Mode::Async,
        &url,
        SharedPool::builder(&url).max_size(2).min_idle(0).build()?,
        Pool::builder()
            .max_size(4)
            .build(ConnectionManager::<PgConnection>::new(&url))?,
        migrations.clone(),
        0,
    ))?;

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
    let sync_seen = Arc::new(Switches::default());
    let async_seen = Arc::new(Switches::default());

    for (phase, &size) in sizes.iter().enumerate() {
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
        let plain_port = serve(
            &rt,
            Router::new()
                .route("/", get(plain_page))
                .with_state((plain_pool.clone(), first_name.clone())),
        )?;
        let plain_async_port = serve(
            &rt,
            Router::new()
                .route("/", get(plain_async_page))
                .with_state((plain_async.clone(), first_name.clone())),
        )?;
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
        let sync_probe = serve(
            &rt,
            Router::new().route("/", get(probe_sync)).with_state((
                sync_app.state.pool.clone(),
                host_map.clone(),
                sync_seen.clone(),
            )),
        )?;
        let async_probe = serve(
            &rt,
            Router::new().route("/", get(probe_async)).with_state((
                async_app
                    .state
                    .async_pool
                    .clone()
                    .expect("the async app's pool"),
                host_map,
                async_seen.clone(),
            )),
        )?;
        let (sync_port, async_port) = (sync_app.addr.port(), async_app.addr.port());
        // SERVE_SECONDS=n: no timed rounds; print every server's port and
        // serve for n seconds, for a profiler or wrk driven from outside
        // (`scripts/profile_saas_request.sh`).
        if let Some(serve) = std::env::var("SERVE_SECONDS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            for (label, port) in [
                ("sync-app", sync_port),
                ("async-app", async_port),
                ("plain-r2d2-tx", plain_tx_port),
                ("plain-deadpool-tx", plain_async_tx_port),
                ("plain-r2d2", plain_port),
                ("plain-deadpool", plain_async_port),
            ] {
                println!("serving {label} {port}");
            }
            println!("serving pid {}", std::process::id());
            std::thread::sleep(std::time::Duration::from_secs(serve));
            break;
        }

        // (label, port, tenants, mode, probe port)
        let mut runs: Vec<(String, u16, usize, &str, Option<u16>)> = vec![
            (
                format!("sync app, Zipf over {size}"),
                sync_port,
                size,
                "zipf",
                Some(sync_probe),
            ),
            (
                format!("async app, Zipf over {size}"),
                async_port,
                size,
                "zipf",
                Some(async_probe),
            ),
        ];
        if phase == 0 {
            runs.push((
                "sync app, uniform over 100".into(),
                sync_port,
                100,
                "uniform",
                Some(sync_probe),
            ));
            runs.push((
                "async app, uniform over 100".into(),
                async_port,
                100,
                "uniform",
                Some(async_probe),
            ));
        }
        runs.extend([
            (
                "sync app, one tenant".into(),
                sync_port,
                1,
                "zipf",
                Some(sync_probe),
            ),
            (
                "async app, one tenant".into(),
                async_port,
                1,
                "zipf",
                Some(async_probe),
            ),
            (
                "plain r2d2, one tenant, same read-only transaction".into(),
                plain_tx_port,
                1,
                "zipf",
                None,
            ),
            (
                "plain diesel-async deadpool, one tenant, same read-only transaction".into(),
                plain_async_tx_port,
                1,
                "zipf",
                None,
            ),
            (
                "plain r2d2, one tenant, no transaction".into(),
                plain_port,
                1,
                "zipf",
                None,
            ),
            (
                "plain diesel-async deadpool, one tenant, no transaction".into(),
                plain_async_port,
                1,
                "zipf",
                None,
            ),
        ]);
        for (_, port, n, mode, _) in &runs {
            wrk(*port, *n, mode, 2);
        }
        let mut results = vec![Vec::new(); runs.len()];
        for round in 1..=rounds {
            let mut line = format!("{size} tenants, round {round}:");
            for (i, (_, port, n, mode, _)) in runs.iter().enumerate() {
                let r = wrk(*port, *n, mode, seconds);
                line.push_str(&format!(" {r:.0}"));
                results[i].push(r);
            }
            println!("{line}");
        }
        let mut switched = Vec::new();
        for (_, _, n, mode, probe) in &runs {
            switched.push(probe.map(|p| {
                let seen = if p == sync_probe {
                    &sync_seen
                } else {
                    &async_seen
                };
                seen.take_share();
                wrk(p, *n, mode, seconds);
                seen.take_share()
            }));
        }
        let m: Vec<f64> = results.into_iter().map(median).collect();
        let at = |label: &str| {
            runs.iter()
                .position(|r| r.0.starts_with(label))
                .expect("a baseline")
        };
        let (one_sync, one_async) = (at("sync app, one tenant"), at("async app, one tenant"));
        let (plain_sync, plain_async) = (
            at("plain r2d2, one tenant, same"),
            at("plain diesel-async deadpool, one tenant, same"),
        );
        println!();
        println!(
            "#### {size} tenants: `GET /`, wrk -t2 {WRK_CONNECTIONS}, pools of {POOL_SIZE}, median of {rounds} × {seconds} s"
        );
        println!("| server, traffic | requests/s | × same app, one tenant | × plain pool, one tenant, same transaction | checkouts switched |");
        println!("|---|---:|---:|---:|---:|");
        for (i, (label, ..)) in runs.iter().enumerate() {
            let (one, plain) = if label.starts_with("async") || label.contains("diesel-async") {
                (one_async, plain_async)
            } else {
                (one_sync, plain_sync)
            };
            let sw = switched[i].map_or("–".to_string(), |s| format!("{:.1} %", s * 100.0));
            println!(
                "| {label} | {:.0} | {:.2} | {:.2} | {sw} |",
                m[i],
                m[i] / m[one],
                m[i] / m[plain]
            );
        }
        println!();
    }
    sync_app.stop();
    async_app.stop();
    Ok(())
}
