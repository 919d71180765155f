//! `run_for_tenant` / `CurrentTenant::run`: a request's diesel work on its
//! tenant's connection, off the async worker threads, against a real database.

use std::sync::Arc;
use std::time::Duration;

use appschema_axum::{run_for_tenant, CurrentTenant, TenantDbError, TenantLayer};
use appschema_core::connection::ConnectionError;
use appschema_core::registry;
use appschema_core::resolve::Resolver;
use appschema_core::{PublicName, SchemaName, SharedPool};
use appschema_tempdb::TestDb;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::Text;
use tower::ServiceExt;

#[derive(Debug, QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

fn project_names(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query("SELECT name FROM projects ORDER BY name")
        .load::<Name>(conn)?
        .into_iter()
        .map(|n| n.name)
        .collect())
}

/// Two tenants, each with a `projects` table holding its own row, and a
/// `projects` table in `public` that no tenant query may read.
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

fn pool(db: &TestDb, size: u32) -> SharedPool {
    SharedPool::builder(db.url())
        .max_size(size)
        .connection_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn schema(name: &str) -> SchemaName {
    SchemaName::new(name).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn work_runs_on_the_tenants_search_path_and_sees_only_its_rows() {
    let db = seeded_db();
    let pool = pool(&db, 1);
    // One connection, reused for both tenants: the switch happens on checkout.
    for (tenant, want) in [
        ("acme", "rocket"),
        ("globex", "doomsday"),
        ("acme", "rocket"),
    ] {
        let names = run_for_tenant(&pool, &schema(tenant), project_names)
            .await
            .unwrap();
        assert_eq!(names, vec![want.to_string()], "{tenant}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn work_runs_off_the_async_worker_thread() {
    // On a single-threaded runtime, work that blocks until an async task has
    // run would deadlock (and time out) if it ran on the runtime's thread.
    let db = seeded_db();
    let pool = pool(&db, 1);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let signal = tokio::spawn(async move {
        tokio::task::yield_now().await;
        tx.send(()).unwrap();
    });
    let got = run_for_tenant(&pool, &schema("acme"), move |conn| {
        let signalled = rx.recv_timeout(Duration::from_secs(10)).is_ok();
        Ok((signalled, project_names(conn)?))
    })
    .await
    .unwrap();
    signal.await.unwrap();
    assert_eq!(got, (true, vec!["rocket".to_string()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_answer_with_fitting_status_codes() {
    let db = seeded_db();
    let pool = pool(&db, 1);

    // The registry names a schema that does not exist: 404, never public.projects.
    let err = run_for_tenant(&pool, &schema("ghost"), project_names)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            TenantDbError::Connection {
                error: ConnectionError::SchemaMissing { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.into_response().status(), StatusCode::NOT_FOUND);

    // A row that is not there: 404.
    let err = run_for_tenant(&pool, &schema("acme"), |conn| {
        diesel::sql_query("SELECT name FROM projects WHERE false").get_result::<Name>(conn)
    })
    .await
    .unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND);

    // A failing query: 500, and the message names the tenant schema.
    let err = run_for_tenant(&pool, &schema("acme"), |conn| {
        diesel::sql_query("SELECT name FROM no_such_table").load::<Name>(conn)
    })
    .await
    .unwrap_err();
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(err.to_string().contains("`acme`"), "{err}");

    // A panic: 500, and the pool still serves the next request correctly.
    let err = run_for_tenant(&pool, &schema("acme"), |_conn| -> QueryResult<()> {
        panic!("handler bug")
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, TenantDbError::Panicked { message, .. } if message == "handler bug"),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let names = run_for_tenant(&pool, &schema("globex"), project_names)
        .await
        .unwrap();
    assert_eq!(names, vec!["doomsday".to_string()]);

    // Every connection held elsewhere: 503 after the pool's timeout.
    let held = {
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || pool.get_for(&schema("acme")).unwrap())
            .await
            .unwrap()
    };
    let err = run_for_tenant(&pool, &schema("globex"), project_names)
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err}");
    drop(held);
}

mod dsl {
    diesel::table! { projects (name) { name -> Text } }
}

/// The tenant's project names through diesel's query builder, whose
/// statements diesel prepares once per connection and caches (`sql_query`'s
/// are not cached).
fn cached_project_names(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    dsl::projects::table
        .select(dsl::projects::name)
        .order(dsl::projects::name)
        .load(conn)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_gone_stale_after_a_migration_answers_503_once_then_the_retry_works() {
    let db = seeded_db();
    let pool = pool(&db, 1);
    db.conn()
        .batch_execute("ALTER TABLE acme.projects ALTER COLUMN name TYPE varchar(40)")
        .unwrap();
    // Cached by diesel on the pool's one connection.
    let names = run_for_tenant(&pool, &schema("acme"), cached_project_names)
        .await
        .unwrap();
    assert_eq!(names, ["rocket"]);
    // The deploy: the result type of the cached statement changes.
    db.conn()
        .batch_execute("ALTER TABLE acme.projects ALTER COLUMN name TYPE text")
        .unwrap();
    let err = run_for_tenant(&pool, &schema("acme"), cached_project_names)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cached plan must not change result type"),
        "{err}"
    );
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err}");
    // The client's retry gets a fresh connection.
    let names = run_for_tenant(&pool, &schema("acme"), cached_project_names)
        .await
        .unwrap();
    assert_eq!(names, ["rocket"]);
}

async fn projects(
    State(pool): State<SharedPool>,
    tenant: CurrentTenant,
) -> Result<String, TenantDbError> {
    Ok(tenant.run(&pool, project_names).await?.join(","))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_behind_the_layer_reads_its_hosts_tenant() {
    let db = seeded_db();
    let registry_pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    let resolver = Arc::new(Resolver::builder().build(registry_pool));
    let app = Router::new()
        .route("/projects", get(projects))
        .with_state(pool(&db, 2))
        .layer(TenantLayer::new(resolver));
    for (host, status, body) in [
        ("acme.localhost", StatusCode::OK, "rocket"),
        ("GLOBEX.localhost:3000", StatusCode::OK, "doomsday"),
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
        let resp = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/projects")
                    .header("host", host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{host}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes), body, "{host}");
    }
}
