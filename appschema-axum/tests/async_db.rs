//! The async path: `CurrentTenant::conn` and the `TenantConn` extractor on
//! an `AsyncSharedPool`, behind the tenant layer, against a real database;
//! no blocking thread involved.

use std::sync::Arc;
use std::time::Duration;

use appschema_async::AsyncSharedPool;
use appschema_axum::{CurrentTenant, TenantConn, TenantDbError, TenantLayer};
use appschema_core::registry;
use appschema_core::resolve::Resolver;
use appschema_core::{PublicName, SchemaName};
use appschema_tempdb::TestDb;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tower::ServiceExt;

#[derive(Debug, QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

async fn project_names(conn: &mut AsyncPgConnection) -> QueryResult<String> {
    Ok(diesel::sql_query("SELECT name FROM projects ORDER BY name")
        .load::<Name>(conn)
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect::<Vec<_>>()
        .join(","))
}

/// Two tenants, each with a `projects` table holding its own row, a
/// `projects` table in `public` that no tenant query may read, and a
/// registered tenant whose schema is missing.
fn seeded_db() -> TestDb {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    conn.batch_execute(
        "CREATE TABLE public.projects (name text);
         INSERT INTO public.projects VALUES ('shared-row');
         CREATE SCHEMA acme; CREATE TABLE acme.projects (name text);
         INSERT INTO acme.projects VALUES ('rocket');
         CREATE SCHEMA globex; CREATE TABLE globex.projects (name text);
         INSERT INTO globex.projects VALUES ('doomsday');",
    )
    .unwrap();
    for (public, schema) in [
        ("acme.localhost", "acme"),
        ("globex.localhost", "globex"),
        ("ghost.localhost", "ghost"),
    ] {
        registry::insert(
            &mut conn,
            &PublicName::new(public).unwrap(),
            &SchemaName::new(schema).unwrap(),
        )
        .unwrap();
    }
    db
}

async fn with_conn(
    State(pool): State<AsyncSharedPool>,
    tenant: CurrentTenant,
) -> Result<String, TenantDbError> {
    let mut conn = tenant.conn(&pool).await?;
    project_names(&mut conn)
        .await
        .map_err(|e| tenant.query_failed(e))
}

async fn with_extractor(TenantConn(tenant, mut conn): TenantConn) -> Result<String, TenantDbError> {
    project_names(&mut conn)
        .await
        .map_err(|e| tenant.query_failed(e))
}

async fn missing_row(TenantConn(tenant, mut conn): TenantConn) -> Result<String, TenantDbError> {
    let row = diesel::sql_query("SELECT name FROM projects WHERE false")
        .get_result::<Name>(&mut *conn)
        .await
        .map_err(|e| tenant.query_failed(e))?;
    Ok(row.name)
}

fn app(db: &TestDb) -> Router {
    let registry_pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    let resolver = Arc::new(Resolver::builder().build(registry_pool));
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Router::new()
        .route("/conn", get(with_conn))
        .route("/extractor", get(with_extractor))
        .route("/missing", get(missing_row))
        .with_state(pool)
        .layer(TenantLayer::new(resolver))
}

async fn call(app: &Router, path: &str, host: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .uri(path)
                .header("host", host)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A current-thread runtime: any blocking checkout or query would stall the
/// only thread (the pool has one connection, shared by both tenants).
#[tokio::test(flavor = "current_thread")]
async fn handlers_read_their_hosts_tenant_on_the_request_task() {
    let db = seeded_db();
    let app = app(&db);
    for path in ["/conn", "/extractor"] {
        for (host, status, body) in [
            ("acme.localhost", StatusCode::OK, "rocket"),
            ("GLOBEX.localhost:3000", StatusCode::OK, "doomsday"),
            ("acme.localhost", StatusCode::OK, "rocket"),
            (
                "ghost.localhost",
                StatusCode::NOT_FOUND,
                "no such tenant (its schema is gone)\n",
            ),
            (
                "nobody.localhost",
                StatusCode::NOT_FOUND,
                "no such tenant\n",
            ),
        ] {
            assert_eq!(
                call(&app, path, host).await,
                (status, body.to_string()),
                "{path} {host}"
            );
        }
    }
    assert_eq!(
        call(&app, "/missing", "acme.localhost").await,
        (StatusCode::NOT_FOUND, "not found\n".to_string())
    );
}

/// Many concurrent requests for both tenants on one connection: each sees
/// its own tenant's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_see_another_tenants_rows() {
    let db = seeded_db();
    let app = app(&db);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..100 {
        let app = app.clone();
        tasks.spawn(async move {
            let (host, want) = if k % 2 == 0 {
                ("acme.localhost", "rocket")
            } else {
                ("globex.localhost", "doomsday")
            };
            assert_eq!(
                call(&app, "/extractor", host).await,
                (StatusCode::OK, want.to_string())
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}
