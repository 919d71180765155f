//! The README's axum snippet, complete and compiled: a tenant-scoped endpoint
//! behind the tenant layer, with the two pools it needs.
//! `DATABASE_URL=postgres:///app cargo run --example axum_app --features axum`
//! on a database migrated with an isolated `projects (id int8, name text)`.

use std::sync::Arc;

use appschema::axum::{CurrentTenant, TenantDbError, TenantLayer};
use appschema::resolve::Resolver;
use appschema::SharedPool;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};

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

async fn list_projects(
    State(pool): State<SharedPool>,
    tenant: CurrentTenant,
) -> Result<Json<Vec<Project>>, TenantDbError> {
    let rows = tenant
        .run(&pool, |conn| {
            projects::table.select(Project::as_select()).load(conn)
        })
        .await?;
    Ok(Json(rows))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;

    // Pool 1, tenant work: one pool for every tenant; each checkout is put
    // on the tenant's search_path ("acme", public) by the `SharedPool`.
    let pool = SharedPool::builder(&url).max_size(16).build()?;

    // Pool 2, the registry: the resolver (host -> tenant) reads
    // `appschema_tenants` on a cache miss through a small plain r2d2 pool of
    // its own, so its lookups never wait behind tenant work for a
    // connection, and a flood of unknown hosts cannot take the connections
    // the tenants need.
    let registry_pool = Pool::builder()
        .max_size(4)
        .build(ConnectionManager::<PgConnection>::new(&url))?;
    let resolver = Arc::new(Resolver::builder().build(registry_pool));

    let app = Router::new()
        .route("/api/projects", get(list_projects))
        .with_state(pool)
        // 404 for a host that names no tenant, before any handler runs.
        .layer(TenantLayer::new(resolver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
