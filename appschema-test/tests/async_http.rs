//! The book's async HTTP test recipe (docs/src/testing.md, "Testing your application" →
//! "Async applications"), compiled and run: an axum app on the async pool,
//! called in-process with a tenant's host name, over a fresh test database.
//! The part between the `recipe` markers is the book's code block.

// recipe: start
use std::sync::{Arc, LazyLock};

use appschema::async_pool::AsyncSharedPool;
use appschema::axum::{TenantConn, TenantDbError, TenantLayer};
use appschema::MigrationSet;
use appschema_test::TestDatabase;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::{routing::get, Json, Router};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tower::ServiceExt; // oneshot

// In your application: the marked schema and `appschema::include_migrations!()`.
#[appschema::isolated]
pub mod tenant {
    diesel::table! { projects (id) { id -> Int8, name -> Text } }
}
use tenant::projects;

static MIGRATIONS: LazyLock<MigrationSet> = LazyLock::new(|| {
    MigrationSet::from_parts([(
        "2024-01-01-000000_projects",
        appschema::Scope::Isolated,
        "CREATE TABLE projects (id bigserial PRIMARY KEY, name text NOT NULL)",
    )])
});

// The code under test: your router, given the async pool and a resolver.
fn router(pool: AsyncSharedPool, resolver: Arc<appschema::resolve::Resolver>) -> Router {
    async fn list(
        TenantConn(tenant, mut conn): TenantConn,
    ) -> Result<Json<Vec<String>>, TenantDbError> {
        let names = projects::table
            .select(projects::name)
            .order_by(projects::id)
            .load(&mut *conn)
            .await
            .map_err(|e| tenant.query_failed(e))?;
        Ok(Json(names))
    }
    Router::new()
        .route("/projects", get(list))
        .with_state(pool)
        .layer(TenantLayer::new(resolver))
}

async fn get_as(app: &Router, host: &str, path: &str) -> (StatusCode, String) {
    let request = Request::get(path)
        .header("host", host)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn each_tenant_sees_only_its_own_projects_over_http() {
    let db = TestDatabase::builder(&MIGRATIONS)
        .tenants(["acme.localhost", "globex.localhost"])
        .build();
    // Seed a tenant's rows on an async connection on its search_path:
    diesel::insert_into(projects::table)
        .values(projects::name.eq("Rocket"))
        .execute(&mut *db.async_conn_for("acme.localhost").await)
        .await
        .unwrap();
    let app = router(db.async_pool().clone(), Arc::new(db.resolver()));

    assert_eq!(
        get_as(&app, "acme.localhost", "/projects").await,
        (StatusCode::OK, r#"["Rocket"]"#.into())
    );
    assert_eq!(
        get_as(&app, "globex.localhost", "/projects").await,
        (StatusCode::OK, "[]".into())
    );
    assert_eq!(
        get_as(&app, "unknown.localhost", "/projects").await.0,
        StatusCode::NOT_FOUND
    );
}
// recipe: end

/// The book (docs/src/testing.md) carries the recipe above, word for word.
#[test]
fn the_readme_recipe_is_this_file() {
    let file = include_str!("async_http.rs");
    let start = file.find("// recipe: start\n").unwrap() + "// recipe: start\n".len();
    let end = file.find("// recipe: end").unwrap();
    let recipe = &file[start..end];
    let readme = include_str!("../../docs/src/testing.md");
    assert!(
        readme.contains(&format!("```rust,ignore\n{recipe}```")),
        "docs/src/testing.md, \"Async applications\": paste appschema-test/tests/async_http.rs's recipe again"
    );
}

/// The async pool is the test database's, and the same pool on every call.
#[tokio::test]
async fn the_async_pool_serves_the_tests_own_database() {
    let db = TestDatabase::builder(&MIGRATIONS)
        .tenants(["acme.localhost"])
        .build();
    let mut conn = db.async_conn_for("acme.localhost").await;
    let name: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_database()::text",
    ))
    .get_result(&mut *conn)
    .await
    .unwrap();
    assert_eq!(name, db.name());
    let schema: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_schema()::text",
    ))
    .get_result(&mut *conn)
    .await
    .unwrap();
    assert_eq!(schema, db.tenant("acme.localhost").schema_name.as_str());
    assert!(std::ptr::eq(db.async_pool(), db.async_pool()));
}
