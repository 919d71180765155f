//! Routing benchmark: requests/s of the saas example's tenant-scoped
//! endpoints under 50 concurrent connections spread over 100 tenants (wrk,
//! each request's Host naming the next tenant), on two endpoints:
//! - `GET /api/projects`: one query (the tenant's projects);
//! - `GET /`: the tenant page, three queries, one a join between an
//!   isolated table (`account`) and a shared one (`plans`).
//!
//! For each endpoint, three servers in one process over one PostgreSQL:
//! - **routed**: the real app (host → tenant through the resolver and the
//!   tower layer, then a `SharedPool` checkout for that tenant);
//! - **hard-wired per request on the SharedPool**: the same handler body
//!   and the same `SharedPool`, the tenant looked up from the Host header in
//!   a `HashMap` built at start (no resolver, no layer, no registry): over
//!   the same tenant mix, the difference is the router's own cost;
//! - **single-tenant plain r2d2**: the same handler body on a plain r2d2
//!   pool whose connections sit on one tenant (`SET search_path` on
//!   connect): what one tenant costs with no multi-tenancy at all.
//!
//! With `--features axum,async`, three more servers run the same handler
//! bodies on diesel-async, awaited on the request's task (no
//! `spawn_blocking`):
//! - **routed async**: the same resolver and tower layer, then the
//!   `TenantConn` extractor on an `AsyncSharedPool`;
//! - **async hard-wired per request on the AsyncSharedPool**: the tenant
//!   from the `HashMap`, no resolver, no layer;
//! - **async single tenant, plain diesel-async deadpool**: a pool whose
//!   connections sit on one tenant.
//!
//! `cargo run --release -p appschema-bench --bin bench_routing --features axum` (about
//! 4 minutes; needs `wrk` on PATH), or `--features axum,async` for all six
//! servers (about 8 minutes). Each run is `wrk -t2 -c50 -d10s`; the servers
//! alternate, three rounds each.

#[path = "../../../examples/saas/app.rs"]
#[allow(dead_code)]
mod app;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use app::{Plan, Project};
use appschema::provision::{self, NewTenant, Source};
use appschema::{SchemaName, SharedPool};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};

const TENANTS: usize = 100;
const ROUNDS: usize = 3;
const SECONDS: u32 = 10;

/// Puts every connection of the baseline's plain pool on one tenant.
#[derive(Debug)]
struct OnSchema(String);

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for OnSchema {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!("SET search_path TO {}, public", self.0))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

type PlainPool = Pool<ConnectionManager<PgConnection>>;

/// The tenant for a request's Host, from a map built at start: the
/// hard-wired baseline's routing (no resolver, no registry, no layer).
type HostMap = Arc<HashMap<String, SchemaName>>;

fn schema_for(hosts: &HostMap, headers: &HeaderMap) -> Result<SchemaName, StatusCode> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| hosts.get(h))
        .cloned()
        .ok_or(StatusCode::NOT_FOUND)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> QueryResult<T> + Send + 'static,
) -> Result<T, StatusCode> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

fn pool_error(e: impl std::error::Error + Send + Sync + 'static) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(Box::new(e))
}

fn load_projects(conn: &mut PgConnection) -> QueryResult<Vec<Project>> {
    use app::tenant::projects;
    projects::table
        .order(projects::id)
        .select(Project::as_select())
        .load(conn)
}

async fn per_request_projects(
    State((pool, hosts)): State<(SharedPool, HostMap)>,
    headers: HeaderMap,
) -> Result<Json<Vec<Project>>, StatusCode> {
    let schema = schema_for(&hosts, &headers)?;
    let rows =
        blocking(move || load_projects(&mut *pool.get_for(&schema).map_err(pool_error)?)).await?;
    Ok(Json(rows))
}

async fn per_request_page(
    State((pool, hosts)): State<(SharedPool, HostMap)>,
    headers: HeaderMap,
) -> Result<Html<String>, StatusCode> {
    let schema = schema_for(&hosts, &headers)?;
    let name = schema.to_string();
    let data =
        blocking(move || app::page_data(&mut *pool.get_for(&schema).map_err(pool_error)?)).await?;
    Ok(Html(app::render_page(data, &name)))
}

async fn single_projects(State(pool): State<PlainPool>) -> Result<Json<Vec<Project>>, StatusCode> {
    let rows = blocking(move || load_projects(&mut *pool.get().map_err(pool_error)?)).await?;
    Ok(Json(rows))
}

async fn single_page(
    State((pool, name)): State<(PlainPool, String)>,
) -> Result<Html<String>, StatusCode> {
    let data = blocking(move || app::page_data(&mut *pool.get().map_err(pool_error)?)).await?;
    Ok(Html(app::render_page(data, &name)))
}

/// Requests/s of `wrk` against `path` on `port`, Host headers
/// `bench1.localhost` … `bench100.localhost` in turn.
fn wrk(port: u16, path: &str, seconds: u32) -> f64 {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/saas/rotate_hosts.lua"
    );
    let out = Command::new("wrk")
        .args(["-t2", "-c50", &format!("-d{seconds}s"), "-s", script])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .args(["--", "bench"])
        .output()
        .expect("wrk must be installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
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

/// The async servers: the same handler bodies on diesel-async.
#[cfg(feature = "async")]
mod asynchronous {
    use super::{app, schema_for, HostMap};
    use app::Project;
    use appschema::async_pool::AsyncSharedPool;
    use appschema::axum::{TenantConn, TenantDbError};
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::Html;
    use axum::Json;
    use diesel_async::pooled_connection::deadpool::Pool;
    use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

    pub type PlainAsyncPool = Pool<AsyncPgConnection>;

    /// The saas app's own async path: the same queries as its blocking one.
    pub use app::on_async::{page_data, projects as load_projects};

    pub async fn routed_projects(
        TenantConn(tenant, mut conn): TenantConn,
    ) -> Result<Json<Vec<Project>>, TenantDbError> {
        let rows = load_projects(&mut conn)
            .await
            .map_err(|e| tenant.query_failed(e))?;
        Ok(Json(rows))
    }

    pub async fn routed_page(
        TenantConn(tenant, mut conn): TenantConn,
    ) -> Result<Html<String>, TenantDbError> {
        let data = page_data(&mut conn)
            .await
            .map_err(|e| tenant.query_failed(e))?;
        Ok(Html(app::render_page(data, tenant.0.schema_name.as_str())))
    }

    fn status<E>(_: E) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    pub async fn per_request_projects(
        State((pool, hosts)): State<(AsyncSharedPool, HostMap)>,
        headers: HeaderMap,
    ) -> Result<Json<Vec<Project>>, StatusCode> {
        let schema = schema_for(&hosts, &headers)?;
        let mut conn = pool.get_for(&schema).await.map_err(status)?;
        Ok(Json(load_projects(&mut conn).await.map_err(status)?))
    }

    pub async fn per_request_page(
        State((pool, hosts)): State<(AsyncSharedPool, HostMap)>,
        headers: HeaderMap,
    ) -> Result<Html<String>, StatusCode> {
        let schema = schema_for(&hosts, &headers)?;
        let mut conn = pool.get_for(&schema).await.map_err(status)?;
        let data = page_data(&mut conn).await.map_err(status)?;
        Ok(Html(app::render_page(data, schema.as_str())))
    }

    pub async fn single_projects(
        State(pool): State<PlainAsyncPool>,
    ) -> Result<Json<Vec<Project>>, StatusCode> {
        let mut conn = pool.get().await.map_err(status)?;
        Ok(Json(load_projects(&mut conn).await.map_err(status)?))
    }

    pub async fn single_page(
        State((pool, name)): State<(PlainAsyncPool, String)>,
    ) -> Result<Html<String>, StatusCode> {
        let mut conn = pool.get().await.map_err(status)?;
        let data = page_data(&mut conn).await.map_err(status)?;
        Ok(Html(app::render_page(data, &name)))
    }

    /// A plain diesel-async deadpool of `size` whose connections are put on
    /// `schema` (quoted) when opened; checkouts run diesel-async's default
    /// recycling check.
    pub fn plain_pool(url: &str, schema: String, size: usize) -> PlainAsyncPool {
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
        Pool::builder(manager).max_size(size).build().unwrap()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = appschema_tempdb::Server::from_env_or_start()?;
    let url = server.url();
    let rt = tokio::runtime::Runtime::new()?;
    let running = rt.block_on(app::start(&url, 0, app::Mode::Blocking))?;

    // 100 tenants with 5 projects each, 2 tasks per project.
    let mut conn = PgConnection::establish(&url)?;
    let free: Plan = {
        use app::shared::plans;
        plans::table
            .filter(plans::name.eq("free"))
            .select(Plan::as_select())
            .first(&mut conn)?
    };
    let mut hosts = HashMap::new();
    let mut first = None;
    for i in 1..=TENANTS {
        let host = format!("bench{i}.localhost");
        let schema = conn.transaction(
            |conn| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let request = NewTenant::new(&host)?.source(Source::Migrations);
                let created = provision::create_tenant(conn, &*running.state.migrations, &request)?;
                conn.batch_execute(&format!(
                    "SET LOCAL search_path TO {schema}, public;
                     INSERT INTO account (display_name, plan_id) VALUES ('{host}', {plan});
                     INSERT INTO projects (name) SELECT 'project ' || n FROM generate_series(1, 5) n;
                     INSERT INTO tasks (project_id, title) SELECT p.id, 'task ' || n
                       FROM projects p, generate_series(1, 2) n;",
                    schema = created.tenant.schema_name.quoted(),
                    plan = free.id
                ))?;
                Ok(created.tenant.schema_name)
            },
        )?;
        first.get_or_insert(schema.clone());
        hosts.insert(host, schema);
    }
    let first_schema = first.expect("at least one tenant");
    let hosts: HostMap = Arc::new(hosts);

    let plain: PlainPool = Pool::builder()
        .max_size(16)
        .connection_customizer(Box::new(OnSchema(first_schema.quoted())))
        .build(ConnectionManager::new(&url))?;
    let pool = running.state.pool.clone();
    let per_request = serve(
        &rt,
        Router::new()
            .route("/api/projects", get(per_request_projects))
            .route("/", get(per_request_page))
            .with_state((pool, hosts.clone())),
    )?;
    let single = serve(
        &rt,
        Router::new()
            .route("/api/projects", get(single_projects))
            .with_state(plain.clone())
            .merge(
                Router::new()
                    .route("/", get(single_page))
                    .with_state((plain, first_schema.to_string())),
            ),
    )?;
    let routed = running.addr.port();
    #[cfg_attr(not(feature = "async"), allow(unused_mut))]
    let mut servers = vec![
        (
            "routed by Host over 100 tenants (resolver + layer + SharedPool)",
            routed,
        ),
        (
            "hard-wired per request on the SharedPool (HashMap, no resolver)",
            per_request,
        ),
        ("single tenant, plain r2d2 (no multi-tenancy)", single),
    ];
    #[cfg(feature = "async")]
    {
        use appschema::async_pool::AsyncSharedPool;
        use appschema::axum::TenantLayer;
        use asynchronous as a;
        let async_pool = AsyncSharedPool::builder(&url).max_size(16).build()?;
        let registry_pool = Pool::builder()
            .max_size(4)
            .build(ConnectionManager::<PgConnection>::new(&url))?;
        let resolver = Arc::new(appschema::resolve::Resolver::builder().build(registry_pool));
        let routed_async = serve(
            &rt,
            Router::new()
                .route("/api/projects", get(a::routed_projects))
                .route("/", get(a::routed_page))
                .with_state(async_pool.clone())
                .layer(TenantLayer::new(resolver)),
        )?;
        let per_request_async = serve(
            &rt,
            Router::new()
                .route("/api/projects", get(a::per_request_projects))
                .route("/", get(a::per_request_page))
                .with_state((async_pool, hosts.clone())),
        )?;
        let plain_async = a::plain_pool(&url, first_schema.quoted(), 16);
        let single_async = serve(
            &rt,
            Router::new()
                .route("/api/projects", get(a::single_projects))
                .with_state(plain_async.clone())
                .merge(
                    Router::new()
                        .route("/", get(a::single_page))
                        .with_state((plain_async, first_schema.to_string())),
                ),
        )?;
        servers.extend([
            (
                "async: routed by Host over 100 tenants (resolver + layer + AsyncSharedPool)",
                routed_async,
            ),
            (
                "async: hard-wired per request on the AsyncSharedPool (HashMap, no resolver)",
                per_request_async,
            ),
            (
                "async: single tenant, plain diesel-async deadpool (no multi-tenancy)",
                single_async,
            ),
        ]);
    }
    for (path, name) in [
        ("/api/projects", "one query"),
        ("/", "three queries, a shared ⨝ isolated join"),
    ] {
        for (_, port) in &servers {
            wrk(*port, path, 2);
        }
        let mut results = vec![Vec::new(); servers.len()];
        for round in 1..=ROUNDS {
            let mut line = format!("{path} round {round}:");
            for (i, (_, port)) in servers.iter().enumerate() {
                let r = wrk(*port, path, SECONDS);
                line.push_str(&format!(" {r:.0}"));
                results[i].push(r);
            }
            println!("{line}");
        }
        let m: Vec<f64> = results.into_iter().map(median).collect();
        println!();
        println!("#### `GET {path}` ({name}), median of {ROUNDS} × {SECONDS} s");
        // Each server against the baselines of its own kind (sync: 1, 2;
        // async: 4, 5), and the async ones against the sync routed app too.
        println!(
            "| server | requests/s | ÷ hard-wired per request | ÷ single tenant | ÷ sync routed |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (i, (label, _)) in servers.iter().enumerate() {
            let base = if i < 3 { 0 } else { 3 };
            println!(
                "| {label} | {:.0} | {:.3} | {:.3} | {:.3} |",
                m[i],
                m[i] / m[base + 1],
                m[i] / m[base + 2],
                m[i] / m[0]
            );
        }
        println!();
    }
    running.stop();
    Ok(())
}
