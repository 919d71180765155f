//! The saas example's background jobs (feature `jobs`), against the running
//! app, its real fang workers and a real PostgreSQL: a sign-up's welcome job
//! runs in the new tenant only, and the nightly job reaches every tenant.

#[path = "../examples/saas/app.rs"]
#[allow(dead_code)]
mod app;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use app::Mode;
use appschema::MigrationSet;
use appschema_test::TestDatabase;
use diesel::prelude::*;

static MIGRATIONS: LazyLock<MigrationSet> =
    LazyLock::new(|| app::migrations().expect("the saas example's migrations plan"));

/// One HTTP/1.1 request; the status code and the body.
fn request(addr: SocketAddr, method: &str, host: &str, path: &str, json: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

#[derive(QueryableByName, Debug, PartialEq)]
struct TitleRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    title: String,
}

fn task_titles(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    let schema = appschema::SchemaName::new(schema).unwrap();
    diesel::sql_query(format!(
        "SELECT title FROM {}.tasks ORDER BY id",
        schema.quoted()
    ))
    .load::<TitleRow>(conn)
    .unwrap()
    .into_iter()
    .map(|r| r.title)
    .collect()
}

/// Polls `f` until it returns true (deadline 30 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "not after 30 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On the blocking path the welcome job is enqueued by
/// `appschema::jobs::enqueue` in the sign-up's transaction.
#[test]
fn sign_up_welcomes_the_new_tenant_only_and_the_nightly_job_reaches_every_tenant() {
    welcome_and_nightly(Mode::Blocking);
}

/// On the async path the sign-up claims a spare on diesel-async, and the
/// welcome job is enqueued with `ENQUEUE_SQL` in the claim's transaction.
#[cfg(feature = "async")]
#[test]
fn on_the_async_path_sign_up_welcomes_the_new_tenant_only_and_the_nightly_job_reaches_every_tenant()
{
    welcome_and_nightly(Mode::Async);
}

fn welcome_and_nightly(mode: Mode) {
    let db = TestDatabase::builder(&MIGRATIONS)
        .spares(app::SPARES)
        .pool_size(8)
        .build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt
        .block_on(app::serve(
            mode,
            db.url(),
            db.pool().clone(),
            db.registry_pool().clone(),
            Arc::clone(db.migrations()),
            0,
        ))
        .unwrap();
    assert_eq!(running.state.mode(), mode);
    let addr = running.addr;
    let mut conn = PgConnection::establish(db.url()).unwrap();

    // Sign-ups enqueue the welcome job in their transaction; no worker yet.
    for name in ["acme", "globex"] {
        let (status, body) = request(
            addr,
            "POST",
            "localhost",
            "/signup",
            &format!(r#"{{"name":"{name}"}}"#),
        );
        assert_eq!(status, 201, "{body}");
    }
    assert!(task_titles(&mut conn, "acme_localhost").is_empty());

    app::jobs::start(db.pool()).unwrap();
    eventually("each tenant welcomed once", || {
        task_titles(&mut conn, "acme_localhost") == ["Welcome, acme.localhost: invite your team"]
            && task_titles(&mut conn, "globex_localhost")
                == ["Welcome, globex.localhost: invite your team"]
    });

    // The nightly job, run now instead of at 03:00: done tasks go, in every
    // tenant, and only they.
    diesel::sql_query("UPDATE acme_localhost.tasks SET done = true")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("UPDATE globex_localhost.tasks SET done = true")
        .execute(&mut conn)
        .unwrap();
    let (status, body) = request(
        addr,
        "POST",
        "acme.localhost",
        "/api/projects/1/tasks",
        r#"{"title":"still to do"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let queued =
        appschema::jobs::enqueue_for_every_tenant(&mut conn, &app::jobs::PurgeDoneTasks).unwrap();
    assert_eq!(queued, 2);
    eventually("done tasks purged in every tenant", || {
        task_titles(&mut conn, "acme_localhost") == ["still to do"]
            && task_titles(&mut conn, "globex_localhost").is_empty()
    });
    // The nightly schedule itself waits for 03:00, once.
    let scheduled: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM public.fang_tasks WHERE metadata->>'type' = 'appschema_for_every_tenant')",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(scheduled, 1);
    running.stop();
}
