//! A per-tenant enum read through the HTTP routes (issue 27): every tenant
//! schema has its own `mood` type (its own OID), as an isolated migration
//! that runs `CREATE TYPE mood AS ENUM (…)` leaves it, and a route reads a
//! `mood` column with diesel's query builder, whose statements diesel
//! prepares once per connection. Requests alternate between two tenants
//! over a pool of one or two connections: every one must answer with its
//! own tenant's rows, never `cached plan must not change result type`.

use std::sync::Arc;
use std::time::Duration;

use appschema_axum::{CurrentTenant, TenantDbError, TenantLayer};
use appschema_core::registry;
use appschema_core::resolve::Resolver;
use appschema_core::{PublicName, SchemaName, SharedPool};
use appschema_tempdb::TestDb;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use tower::ServiceExt;

/// The tenants' enum, declared without a schema: each tenant's path
/// resolves it to that tenant's own type.
#[derive(Debug, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(name = "mood"))]
pub struct Mood;

diesel::table! {
    use diesel::sql_types::Int4;
    use super::Mood;
    moods (id) {
        id -> Int4,
        m -> Mood,
    }
}

/// A value of [`Mood`], read as its label.
#[derive(Debug, FromSqlRow)]
pub struct MoodLabel(String);

impl FromSql<Mood, Pg> for MoodLabel {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        Ok(MoodLabel(String::from_utf8(bytes.as_bytes().to_vec())?))
    }
}

/// The two tenants and their rows: each schema gets its own `mood` (the
/// statements an isolated migration would run in it), with labels that
/// differ per tenant, so a row read as the other tenant's type would show.
fn seeded_db() -> TestDb {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    conn.batch_execute(
        "CREATE SCHEMA acme;
         CREATE TYPE acme.mood AS ENUM ('happy', 'sad');
         CREATE TABLE acme.moods (id int PRIMARY KEY, m acme.mood);
         INSERT INTO acme.moods VALUES (1, 'happy'), (2, 'sad');
         CREATE SCHEMA globex;
         CREATE TYPE globex.mood AS ENUM ('grim', 'gleeful', 'bored');
         CREATE TABLE globex.moods (id int PRIMARY KEY, m globex.mood);
         INSERT INTO globex.moods VALUES (1, 'gleeful');",
    )
    .unwrap();
    for (public, schema) in [("acme.localhost", "acme"), ("globex.localhost", "globex")] {
        registry::insert(
            &mut conn,
            &PublicName::new(public).unwrap(),
            &SchemaName::new(schema).unwrap(),
        )
        .unwrap();
    }
    db
}

fn resolver(db: &TestDb) -> Arc<Resolver> {
    let registry_pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    Arc::new(Resolver::builder().build(registry_pool))
}

fn labels(rows: Vec<MoodLabel>) -> String {
    rows.into_iter()
        .map(|MoodLabel(label)| label)
        .collect::<Vec<_>>()
        .join(",")
}

/// The statement diesel caches: the same SQL text for every tenant, whose
/// result type is the tenant's own `mood`.
fn read_moods(conn: &mut PgConnection) -> QueryResult<String> {
    moods::table
        .select(moods::m)
        .order(moods::id)
        .load::<MoodLabel>(conn)
        .map(labels)
}

async fn moods_route(
    State(pool): State<SharedPool>,
    tenant: CurrentTenant,
) -> Result<String, TenantDbError> {
    tenant.run(&pool, read_moods).await
}

async fn call(app: &Router, host: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/moods")
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

/// Alternates the two tenants, `rounds` times each; every request must
/// answer with its tenant's rows.
async fn alternate(app: &Router, rounds: usize) {
    for round in 0..rounds {
        for (host, want) in [
            ("acme.localhost", "happy,sad"),
            ("globex.localhost", "gleeful"),
        ] {
            assert_eq!(
                call(app, host).await,
                (StatusCode::OK, want.to_string()),
                "round {round}, {host}"
            );
        }
    }
}

fn sync_app(db: &TestDb, size: u32) -> Router {
    let pool = SharedPool::builder(db.url())
        .max_size(size)
        .connection_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Router::new()
        .route("/moods", get(moods_route))
        .with_state(pool)
        .layer(TenantLayer::new(resolver(db)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_tenant_enum_reads_on_every_tenant_switch_through_a_pool_of_one() {
    let db = seeded_db();
    alternate(&sync_app(&db, 1), 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_tenant_enum_reads_on_every_tenant_switch_through_a_pool_of_two() {
    let db = seeded_db();
    alternate(&sync_app(&db, 2), 4).await;
}

#[cfg(feature = "async")]
mod async_path {
    use super::*;
    use appschema_async::AsyncSharedPool;
    use appschema_axum::TenantConn;
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    async fn read_moods(conn: &mut AsyncPgConnection) -> QueryResult<String> {
        moods::table
            .select(moods::m)
            .order(moods::id)
            .load::<MoodLabel>(conn)
            .await
            .map(labels)
    }

    async fn moods_route(
        TenantConn(tenant, mut conn): TenantConn,
    ) -> Result<String, TenantDbError> {
        read_moods(&mut conn)
            .await
            .map_err(|e| tenant.query_failed(e))
    }

    fn async_app(db: &TestDb, size: u32) -> Router {
        let pool = AsyncSharedPool::builder(db.url())
            .max_size(size)
            .connection_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Router::new()
            .route("/moods", get(moods_route))
            .with_state(pool)
            .layer(TenantLayer::new(resolver(db)))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_per_tenant_enum_reads_on_every_tenant_switch_through_an_async_pool_of_one() {
        let db = seeded_db();
        alternate(&async_app(&db, 1), 4).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_per_tenant_enum_reads_on_every_tenant_switch_through_an_async_pool_of_two() {
        let db = seeded_db();
        alternate(&async_app(&db, 2), 4).await;
    }
}
