//! The tenant layer in front of a router, against a real registry.

use std::sync::Arc;

use appschema_axum::{CurrentTenant, HostSource, TenantLayer};
use appschema_core::registry;
use appschema_core::resolve::Resolver;
use appschema_core::{PublicName, SchemaName};
use appschema_tempdb::TestDb;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::PgConnection;
use tower::ServiceExt;

async fn whoami(CurrentTenant(tenant): CurrentTenant) -> String {
    tenant.schema_name.to_string()
}

fn seeded_db() -> TestDb {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    for (public, schema) in [("acme.localhost", "acme"), ("globex.localhost", "globex")] {
        let (public, schema) = (
            PublicName::new(public).unwrap(),
            SchemaName::new(schema).unwrap(),
        );
        registry::insert(&mut conn, &public, &schema).unwrap();
    }
    db
}

fn app(db: &TestDb, source: HostSource) -> Router {
    let pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    let resolver = Arc::new(Resolver::builder().build(pool));
    Router::new()
        .route("/whoami", get(whoami))
        .layer(TenantLayer::new(resolver).host_source(source))
}

async fn call(app: &Router, headers: &[(&str, &[u8])]) -> (StatusCode, String) {
    let mut req = Request::builder().uri("/whoami");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_host_reaches_its_own_tenant_and_tricks_reach_none() {
    let db = seeded_db();
    let app = app(&db, HostSource::Host);
    for (host, want) in [
        ("acme.localhost", "acme"),
        ("ACME.LOCALHOST:8080", "acme"),
        ("acme.localhost.", "acme"),
        ("globex.localhost", "globex"),
    ] {
        assert_eq!(
            call(&app, &[("host", host.as_bytes())]).await,
            (StatusCode::OK, want.into()),
            "{host}"
        );
    }
    let long = format!("{}.acme.localhost", "a".repeat(5000));
    for (host, want) in [
        (&b"unknown.localhost"[..], StatusCode::NOT_FOUND),
        (b"localhost", StatusCode::NOT_FOUND),
        (b"evil.com@acme.localhost", StatusCode::BAD_REQUEST),
        (b"acme.localhost@evil.com", StatusCode::BAD_REQUEST),
        ("\u{430}cme.localhost".as_bytes(), StatusCode::BAD_REQUEST),
        (b"acme.localhost\xff", StatusCode::BAD_REQUEST),
        (long.as_bytes(), StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = call(&app, &[("host", host)]).await;
        assert_eq!(status, want, "{}: {body}", String::from_utf8_lossy(host));
    }
    assert_eq!(call(&app, &[]).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_host_is_ignored_unless_the_application_opts_in() {
    let db = seeded_db();
    let direct = app(&db, HostSource::Host);
    let forged = [
        ("host", &b"acme.localhost"[..]),
        ("x-forwarded-host", b"globex.localhost"),
    ];
    assert_eq!(call(&direct, &forged).await.1, "acme");
    let proxied = app(&db, HostSource::XForwardedHost);
    assert_eq!(call(&proxied, &forged).await.1, "globex");
}
