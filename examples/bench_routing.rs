//! Routing benchmark: requests/s of the saas example's tenant-scoped read
//! endpoint (`GET /api/projects`: host → tenant through the resolver, then a
//! `SharedPool` checkout switched to that tenant) under 50 concurrent
//! connections spread over 100 tenants, against the same endpoint with the
//! tenant hard-wired (no resolver, a plain r2d2 pool whose connections are
//! on one tenant's `search_path`).
//!
//! Two more measurements split the gap into its parts:
//! - hard-wired on the `SharedPool`: the baseline's handler, but checking out
//!   with `SharedPool::get_for` of the one tenant (the switch statement in
//!   place of r2d2's `SELECT 1`, always the same tenant; no resolver);
//! - routed over 100 aliases of *one* tenant: the real app, the same
//!   resolver and layer work per request, but the pool's connections stay on
//!   one schema, as the hard-wired baseline's do.
//!
//! `cargo run --release --example bench_routing --features axum` (about
//! 110 s; needs `wrk` on PATH). Each run is `wrk -t2 -c50 -d10s`; the three
//! alternate, three runs each, in one process over one PostgreSQL.

#[path = "saas/app.rs"]
#[allow(dead_code)]
mod app;

use std::process::Command;

use app::{Plan, Project};
use appschema::provision::{self, NewTenant, Source};
use appschema::{registry, PublicName, SchemaName, SharedPool};
use axum::extract::State;
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

/// The same handler body as `app::list_projects` on the app's `SharedPool`,
/// the tenant fixed: no resolver, no layer.
async fn hardwired_shared_projects(
    State((pool, schema)): State<(SharedPool, SchemaName)>,
) -> Result<Json<Vec<Project>>, axum::http::StatusCode> {
    let rows = tokio::task::spawn_blocking(move || -> QueryResult<Vec<Project>> {
        use app::tenant::projects;
        let mut conn = pool
            .get_for(&schema)
            .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
        projects::table
            .order(projects::id)
            .select(Project::as_select())
            .load(&mut *conn)
    })
    .await
    .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?
    .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(rows))
}

/// The same handler body as `app::list_projects`, minus the tenant routing.
async fn hardwired_projects(
    State(pool): State<PlainPool>,
) -> Result<Json<Vec<Project>>, axum::http::StatusCode> {
    let rows = tokio::task::spawn_blocking(move || -> QueryResult<Vec<Project>> {
        use app::tenant::projects;
        let mut conn = pool
            .get()
            .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
        projects::table
            .order(projects::id)
            .select(Project::as_select())
            .load(&mut conn)
    })
    .await
    .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?
    .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(rows))
}

/// Requests/s of `wrk` against `port`, Host headers `<prefix>1.localhost` …
/// `<prefix>100.localhost` in turn.
fn wrk(port: u16, prefix: &str) -> f64 {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/saas/rotate_hosts.lua"
    );
    let out = Command::new("wrk")
        .args(["-t2", "-c50", &format!("-d{SECONDS}s"), "-s", script])
        .arg(format!("http://127.0.0.1:{port}/api/projects"))
        .args(["--", prefix])
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

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = appschema_tempdb::Server::from_env_or_start()?;
    let url = server.url();
    let rt = tokio::runtime::Runtime::new()?;
    let running = rt.block_on(app::start(&url, 0))?;

    // 100 tenants with 5 projects each.
    let mut conn = PgConnection::establish(&url)?;
    let free: Plan = {
        use app::shared::plans;
        plans::table
            .filter(plans::name.eq("free"))
            .select(Plan::as_select())
            .first(&mut conn)?
    };
    let mut first = None;
    for i in 1..=TENANTS {
        let host = format!("bench{i}.localhost");
        let schema = conn.transaction(
            |conn| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let request = NewTenant::new(&host)?.source(Source::Migrations);
                let created = provision::create_tenant(conn, &*running.state.migrations, &request)?;
                let schema = created.tenant.schema_name.quoted();
                conn.batch_execute(&format!(
                    "SET LOCAL search_path TO {schema}, public;
                 INSERT INTO account (display_name, plan_id) VALUES ('{host}', {plan});
                 INSERT INTO projects (name) SELECT 'project ' || n FROM generate_series(1, 5) n;",
                    plan = free.id
                ))?;
                Ok((created.tenant, schema))
            },
        )?;
        first.get_or_insert(schema);
    }
    let (first_tenant, first_schema) = first.expect("at least one tenant");
    // 100 aliases of the first tenant: routed requests that never switch.
    for i in 1..=TENANTS {
        let alias = PublicName::new(&format!("alias{i}.localhost"))?;
        registry::add_alias(&mut conn, &first_tenant, &alias)?;
    }
    appschema::resolve::invalidate_all();

    let plain: PlainPool = Pool::builder()
        .max_size(16)
        .connection_customizer(Box::new(OnSchema(first_schema)))
        .build(ConnectionManager::new(&url))?;
    let hardwired = Router::new()
        .route("/api/projects", get(hardwired_projects))
        .with_state(plain);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let hardwired_port = listener.local_addr()?.port();
    rt.spawn(async move { axum::serve(listener, hardwired).await });
    let routed_port = running.addr.port();
    let shared_wired = Router::new()
        .route("/api/projects", get(hardwired_shared_projects))
        .with_state((running.state.pool.clone(), first_tenant.schema_name.clone()));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let shared_wired_port = listener.local_addr()?.port();
    rt.spawn(async move { axum::serve(listener, shared_wired).await });

    // Warm all up (connections opened, resolver cache filled).
    wrk_warmup(routed_port, "bench");
    wrk_warmup(routed_port, "alias");
    wrk_warmup(hardwired_port, "bench");
    wrk_warmup(shared_wired_port, "bench");

    let (mut routed, mut one, mut wired, mut swired) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let w = wrk(hardwired_port, "bench");
        let s = wrk(shared_wired_port, "bench");
        let o = wrk(routed_port, "alias");
        let r = wrk(routed_port, "bench");
        println!(
            "round {round}: hard-wired {w:.0} req/s; hard-wired on the SharedPool {s:.0} ({:.3}); \
             routed over one tenant's aliases {o:.0} ({:.3}); routed over {TENANTS} tenants {r:.0} ({:.3})",
            s / w,
            o / w,
            r / w
        );
        wired.push(w);
        swired.push(s);
        routed.push(r);
        one.push(o);
    }
    let (r, o, w, s) = (median(routed), median(one), median(wired), median(swired));
    println!();
    println!("| endpoint | requests/s (median of {ROUNDS} × {SECONDS} s) | ÷ hard-wired |");
    println!("|---|---:|---:|");
    println!("| `GET /api/projects`, tenant hard-wired (plain r2d2 pool, no resolver) | {w:.0} | 1.000 |");
    println!("| `GET /api/projects`, tenant hard-wired on the SharedPool (switch, same tenant; no resolver) | {s:.0} | {:.3} |", s / w);
    println!("| `GET /api/projects`, routed by Host over {TENANTS} tenants (resolver + SharedPool) | {r:.0} | {:.3} |", r / w);
    println!("| `GET /api/projects`, routed by Host over {TENANTS} aliases of one tenant (resolver + SharedPool, no switch) | {o:.0} | {:.3} |", o / w);
    running.stop();
    Ok(())
}

fn wrk_warmup(port: u16, prefix: &str) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/saas/rotate_hosts.lua"
    );
    let _ = Command::new("wrk")
        .args(["-t2", "-c50", "-d2s", "-s", script])
        .arg(format!("http://127.0.0.1:{port}/api/projects"))
        .args(["--", prefix])
        .output();
}
