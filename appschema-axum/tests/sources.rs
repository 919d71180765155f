//! Each source of the tenant layer (header, path prefix, a function of the
//! request) and the apex split, against a real registry.

use std::sync::Arc;

use appschema_axum::{apex_or_tenants, CurrentTenant, HostSource, TenantLayer, TenantSource};
use appschema_core::registry;
use appschema_core::resolve::{self, Resolver};
use appschema_core::{PublicName, SchemaName};
use appschema_tempdb::TestDb;
use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::http::{HeaderName, Request, StatusCode, Uri};
use axum::routing::get;
use axum::Router;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::PgConnection;
use tower::ServiceExt;

/// The tenant's schema and the URI the handler saw.
async fn whoami(CurrentTenant(tenant): CurrentTenant, uri: Uri) -> String {
    format!("{} {uri}", tenant.schema_name)
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
        let tenant = registry::insert(&mut conn, &public, &schema).unwrap();
        let alias = PublicName::new(schema.as_str()).unwrap();
        registry::add_alias(&mut conn, &tenant, &alias).unwrap();
    }
    db
}

fn resolver(db: &TestDb) -> Arc<Resolver> {
    let pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    Arc::new(Resolver::builder().build(pool))
}

fn app(resolver: Arc<Resolver>, source: TenantSource) -> Router {
    let routes = Router::new()
        .route("/", get(whoami))
        .route("/whoami", get(whoami));
    TenantLayer::new(resolver)
        .tenant_source(source)
        .wrap(routes)
}

async fn call(app: &Router, uri: &str, headers: &[(&str, &[u8])]) -> (StatusCode, String) {
    let mut req = Request::builder().uri(uri);
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
async fn a_header_names_the_tenant_and_the_host_is_ignored() {
    let db = seeded_db();
    let app = app(
        resolver(&db),
        TenantSource::Header(HeaderName::from_static("x-tenant")),
    );
    let host = ("host", &b"globex.localhost"[..]);
    for (value, want) in [
        ("acme.localhost", "acme /whoami"),
        ("ACME.localhost", "acme /whoami"),
        ("acme", "acme /whoami"),
        ("globex", "globex /whoami"),
    ] {
        let got = call(&app, "/whoami", &[host, ("x-tenant", value.as_bytes())]).await;
        assert_eq!(got, (StatusCode::OK, want.into()), "{value}");
    }
    for (headers, want) in [
        (
            vec![host, ("x-tenant", &b"initech"[..])],
            StatusCode::NOT_FOUND,
        ),
        (vec![host], StatusCode::BAD_REQUEST),
        (
            vec![("x-tenant", &b"acme.localhost:80"[..])],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("x-tenant", &b"acme'; drop schema acme"[..])],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("x-tenant", &b"acme\xff"[..])],
            StatusCode::BAD_REQUEST,
        ),
        (vec![("x-tenant", &b""[..])], StatusCode::BAD_REQUEST),
        (
            vec![("x-tenant", &b"acme"[..]), ("x-tenant", &b"globex"[..])],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = call(&app, "/whoami", &headers).await;
        assert_eq!(status, want, "{headers:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_prefix_names_the_tenant_and_the_inner_router_sees_the_rest() {
    let db = seeded_db();
    let app = app(resolver(&db), TenantSource::path_prefix("/t/"));
    for (uri, want) in [
        ("/t/acme/whoami", "acme /whoami"),
        (
            "/t/acme.localhost/whoami?page=2&q=a%20b",
            "acme /whoami?page=2&q=a%20b",
        ),
        ("/t/GLOBEX/whoami", "globex /whoami"),
        ("/t/globex", "globex /"),
        ("/t/globex?x=1", "globex /?x=1"),
        ("/t/globex/", "globex /"),
    ] {
        assert_eq!(
            call(&app, uri, &[("host", b"acme.localhost")]).await,
            (StatusCode::OK, want.into()),
            "{uri}"
        );
    }
    for (uri, want) in [
        ("/t/initech/whoami", StatusCode::NOT_FOUND),
        ("/whoami", StatusCode::NOT_FOUND),
        ("/tx/acme/whoami", StatusCode::NOT_FOUND),
        ("/t", StatusCode::NOT_FOUND),
        ("/t/", StatusCode::BAD_REQUEST),
        ("/t//whoami", StatusCode::BAD_REQUEST),
        ("/t/acme%2elocalhost/whoami", StatusCode::BAD_REQUEST),
        ("/t/acme..localhost/whoami", StatusCode::BAD_REQUEST),
        ("/t/%22acme%22/whoami", StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = call(&app, uri, &[]).await;
        assert_eq!(status, want, "{uri}: {body}");
    }
}

#[derive(Clone)]
struct Claims {
    tenant: Option<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_of_the_request_names_the_tenant() {
    let db = seeded_db();
    let inner = app(
        resolver(&db),
        TenantSource::custom(|parts| {
            parts
                .extensions
                .get::<Claims>()
                .and_then(|c| c.tenant.clone())
        }),
    );
    // Stands for the application's authentication layer: a verified token's
    // claim, here taken from a test header.
    let app = Router::new().fallback_service(tower::service_fn(move |mut req: AxumRequest| {
        let tenant = req
            .headers()
            .get("x-test-claim")
            .map(|v| v.to_str().unwrap().to_owned());
        req.extensions_mut().insert(Claims { tenant });
        inner.clone().oneshot(req)
    }));
    let host = ("host", &b"globex.localhost"[..]);
    assert_eq!(
        call(
            &app,
            "/whoami",
            &[host, ("x-test-claim", b"acme.localhost")]
        )
        .await,
        (StatusCode::OK, "acme /whoami".into())
    );
    for (claim, want) in [
        (Some(&b"initech"[..]), StatusCode::NOT_FOUND),
        (Some(b"acme localhost"), StatusCode::BAD_REQUEST),
        (None, StatusCode::BAD_REQUEST),
    ] {
        let mut headers = vec![host];
        headers.extend(claim.map(|c| ("x-test-claim", c)));
        let (status, body) = call(&app, "/whoami", &headers).await;
        assert_eq!(status, want, "{claim:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_from_any_source_share_the_cache_and_its_invalidation() {
    let db = seeded_db();
    let resolver = resolver(&db);
    let app = app(
        resolver.clone(),
        TenantSource::Header(HeaderName::from_static("x-tenant")),
    );
    let acme = [("x-tenant", &b"acme"[..])];
    assert_eq!(call(&app, "/whoami", &acme).await.0, StatusCode::OK);
    assert!(resolver
        .resolve_name_cached(&PublicName::new("acme").unwrap())
        .is_some_and(|hit| hit.is_some()));
    // The alias goes away: the cached answer must not outlive it.
    let mut conn = db.conn();
    diesel::RunQueryDsl::execute(
        diesel::sql_query("DELETE FROM public.appschema_public_names WHERE public_name = 'acme'"),
        &mut conn,
    )
    .unwrap();
    resolve::invalidate_all();
    assert_eq!(call(&app, "/whoami", &acme).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apex_host_reaches_the_site_and_other_hosts_their_tenant() {
    let db = seeded_db();
    let apex = Router::new().route("/", get(|| async { "sign up here" }));
    let tenants = app(resolver(&db), TenantSource::Host);
    let app = apex_or_tenants(
        ["localhost", "www.localhost"],
        HostSource::Host,
        apex,
        tenants,
    )
    .unwrap();
    for (host, want) in [
        (&b"localhost"[..], (StatusCode::OK, "sign up here")),
        (b"LOCALHOST:3000", (StatusCode::OK, "sign up here")),
        (b"www.localhost.", (StatusCode::OK, "sign up here")),
        (b"acme.localhost", (StatusCode::OK, "acme /")),
    ] {
        let (status, body) = call(&app, "/", &[("host", host)]).await;
        assert_eq!((status, body.as_str()), want);
    }
    for (headers, want) in [
        (
            vec![("host", &b"initech.localhost"[..])],
            StatusCode::NOT_FOUND,
        ),
        (
            vec![("host", &b"evil@localhost"[..])],
            StatusCode::BAD_REQUEST,
        ),
        (vec![], StatusCode::BAD_REQUEST),
        (
            vec![
                ("host", &b"localhost"[..]),
                ("host", &b"acme.localhost"[..]),
            ],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = call(&app, "/", &headers).await;
        assert_eq!(status, want, "{headers:?}: {body}");
    }
    assert!(apex_or_tenants(["bad host"], HostSource::Host, Router::new(), Router::new()).is_err());
}
