//! Routing benchmark: requests/s of the saas example's tenant-scoped read
//! endpoint (`GET /api/projects`: host → tenant through the resolver, then a
//! `SharedPool` checkout switched to that tenant) under 50 concurrent
//! connections spread over 100 tenants, against the same endpoint with the
//! tenant hard-wired (no resolver, a plain r2d2 pool whose connections are
//! on one tenant's `search_path`).
//!
//! `cargo run --release --example bench_routing --features axum` (about 70 s;
//! needs `wrk` on PATH). Each run is `wrk -t2 -c50 -d10s`; the two servers
//! alternate, three runs each, in one process over one PostgreSQL.

#[path = "saas/app.rs"]
#[allow(dead_code)]
mod app;

use std::process::Command;

use app::{Plan, Project};
use appschema::provision::{self, NewTenant, Source};
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

fn wrk(port: u16) -> f64 {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/saas/rotate_hosts.lua"
    );
    let out = Command::new("wrk")
        .args(["-t2", "-c50", &format!("-d{SECONDS}s"), "-s", script])
        .arg(format!("http://127.0.0.1:{port}/api/projects"))
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
    let mut first_schema = None;
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
                Ok(schema)
            },
        )?;
        first_schema.get_or_insert(schema);
    }
    appschema::resolve::invalidate_all();

    let plain: PlainPool = Pool::builder()
        .max_size(16)
        .connection_customizer(Box::new(OnSchema(first_schema.unwrap())))
        .build(ConnectionManager::new(&url))?;
    let hardwired = Router::new()
        .route("/api/projects", get(hardwired_projects))
        .with_state(plain);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let hardwired_port = listener.local_addr()?.port();
    rt.spawn(async move { axum::serve(listener, hardwired).await });
    let routed_port = running.addr.port();

    // Warm both up (connections opened, resolver cache filled).
    wrk_warmup(routed_port);
    wrk_warmup(hardwired_port);

    let (mut routed, mut wired) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let w = wrk(hardwired_port);
        let r = wrk(routed_port);
        println!(
            "round {round}: hard-wired {w:.0} req/s, routed {r:.0} req/s, ratio {:.3}",
            r / w
        );
        wired.push(w);
        routed.push(r);
    }
    let (r, w) = (median(routed), median(wired));
    println!();
    println!("| endpoint | requests/s (median of {ROUNDS} × {SECONDS} s) | ÷ hard-wired |");
    println!("|---|---:|---:|");
    println!("| `GET /api/projects`, tenant hard-wired (plain r2d2 pool, no resolver) | {w:.0} | 1.000 |");
    println!("| `GET /api/projects`, routed by Host over {TENANTS} tenants (resolver + SharedPool) | {r:.0} | {:.3} |", r / w);
    running.stop();
    Ok(())
}

fn wrk_warmup(port: u16) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/saas/rotate_hosts.lua"
    );
    let _ = Command::new("wrk")
        .args(["-t2", "-c50", "-d2s", "-s", script])
        .arg(format!("http://127.0.0.1:{port}/api/projects"))
        .output();
}
