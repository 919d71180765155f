//! The README's async snippet, complete and compiled: a tenant-scoped
//! endpoint on diesel-async (no blocking thread), and a sign-up that claims
//! a spare schema on the request's task.
//! `DATABASE_URL=postgres:///app cargo run --example axum_async_app --features axum,async`
//! on a database migrated with an isolated `projects (id int8, name text)`.

use std::sync::Arc;

use appschema::async_pool::{claim_spare, AsyncSharedPool};
use appschema::axum::{TenantConn, TenantDbError, TenantLayer};
use appschema::provision::{self, NewTenant, Source};
use appschema::resolve::Resolver;
use appschema::MigrationSet;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel_async::RunQueryDsl;

#[appschema::isolated]
pub mod tenant {
    diesel::table! { projects (id) { id -> Int8, name -> Text } }
}
use tenant::projects;

#[derive(serde::Serialize, Queryable, Selectable)]
#[diesel(table_name = projects)]
struct Project {
    id: i64,
    name: String,
}

#[derive(Clone)]
struct AppState {
    pool: AsyncSharedPool,
    url: String,
    migrations: Arc<MigrationSet>,
}

impl FromRef<AppState> for AsyncSharedPool {
    fn from_ref(state: &AppState) -> AsyncSharedPool {
        state.pool.clone()
    }
}

// The connection is checked out and switched to the tenant on the request's
// own task: no spawn_blocking anywhere.
async fn list_projects(
    TenantConn(tenant, mut conn): TenantConn,
) -> Result<Json<Vec<Project>>, TenantDbError> {
    let rows = projects::table
        .select(Project::as_select())
        .load(&mut *conn)
        .await
        .map_err(|e| tenant.query_failed(e))?;
    Ok(Json(rows))
}

// Sign-up: a spare schema renamed to the new tenant's, awaited; only when no
// spare is ready is the schema built the blocking way (by its migrations).
async fn signup(
    State(state): State<AppState>,
    name: String,
) -> Result<String, (StatusCode, String)> {
    let failed = |e: &dyn std::fmt::Display| (StatusCode::CONFLICT, e.to_string());
    let request = NewTenant::new(&name)
        .map_err(|e| failed(&e))?
        .source(Source::Spare);
    let mut conn = state.pool.get_shared().await.map_err(|e| failed(&e))?;
    if let Some(created) = claim_spare(&mut conn, &*state.migrations, &request)
        .await
        .map_err(|e| failed(&e))?
    {
        return Ok(created.tenant.schema_name.to_string());
    }
    let created = tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&state.url).map_err(|e| failed(&e))?;
        provision::create_tenant(&mut conn, &*state.migrations, &request).map_err(|e| failed(&e))
    })
    .await
    .map_err(|e| failed(&e))??;
    Ok(created.tenant.schema_name.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;

    // Pool 1, tenant work: one async pool for every tenant; each checkout is
    // put on the tenant's search_path ("acme", public), in one round trip.
    let pool = AsyncSharedPool::builder(&url).max_size(16).build()?;

    // Pool 2, the registry, as on the blocking path: the resolver reads it
    // only on a cache miss.
    let registry_pool = Pool::builder()
        .max_size(4)
        .build(ConnectionManager::<PgConnection>::new(&url))?;
    let resolver = Arc::new(Resolver::builder().build(registry_pool));

    // The application's migrations, as it embeds them at build time
    // (`appschema::include_migrations!()`); this one has none of its own.
    let migrations = Arc::new(MigrationSet::new(Vec::new()));
    let state = AppState {
        pool,
        url,
        migrations,
    };
    let tenants = Router::new()
        .route("/api/projects", get(list_projects))
        .with_state(state.clone())
        .layer(TenantLayer::new(resolver));
    // Sign-up is not behind the tenant layer: here under `/apex/`; the saas
    // example dispatches the apex host instead.
    let apex = Router::new()
        .route("/signup", post(signup))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, Router::new().nest("/apex", apex).merge(tenants)).await?;
    Ok(())
}
