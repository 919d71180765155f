//! HTTP tests against the running saas example (examples/saas): the real app,
//! started in-process on an ephemeral port over its own database, spoken to
//! over TCP with raw HTTP/1.1, so every byte of the Host header is ours.
//!
//! Each test's database comes from `appschema-test`, the harness applications
//! use for their own tests: migrated, with spares (and, where a test asks,
//! tenants) ready, its pools handed to the app.
//!
//! Every test body takes the path the app serves on, and runs once per
//! path (`on_both_paths!`): `blocking::…` (r2d2, `CurrentTenant::run`) and,
//! with the `async` feature, `on_async::…` (diesel-async, awaited on the
//! request's task), with the same requests and the same expected answers.

#[path = "../examples/saas/app.rs"]
#[allow(dead_code)]
mod app;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use app::Mode;
use appschema::provision::{drop_tenant, DropMode};
use appschema::{MigrationSet, PublicName};
use appschema_test::TestDatabase;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// The app's migrations, planned once per test process.
static MIGRATIONS: LazyLock<MigrationSet> =
    LazyLock::new(|| app::migrations().expect("the saas example's migrations plan"));

/// Sends one request with the Host header given as raw bytes (`None`: no Host
/// header at all); returns the status code and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&[u8]>,
    json: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = http_with_head(addr, method, path, host, json);
    (status, body)
}

/// [`http`], also returning the response's head (status line and headers).
fn http_with_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&[u8]>,
    json: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n").into_bytes();
    if let Some(host) = host {
        req.extend_from_slice(b"Host: ");
        req.extend_from_slice(host);
        req.extend_from_slice(b"\r\n");
    }
    let body = json.unwrap_or("");
    if json.is_some() {
        req.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    req.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    stream.write_all(&req).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        head.to_string(),
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, Some(host.as_bytes()), None)
}

fn post(addr: SocketAddr, host: &str, path: &str, json: &str) -> (u16, String) {
    http(addr, "POST", path, Some(host.as_bytes()), Some(json))
}

fn project_names(body: &str) -> Vec<String> {
    let rows: Vec<app::Project> =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    rows.into_iter().map(|p| p.name).collect()
}

/// A running app over a fresh database with `acme` and `globex` signed up
/// concurrently and one project each (acme has two).
struct Fixture {
    db: TestDatabase,
    running: app::Running,
    _rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.running.addr
    }
}

/// The app served over `db`'s pools on `mode`'s path, as `main` serves it
/// over its own.
fn serve(db: TestDatabase, mode: Mode) -> Fixture {
    let pool = db.pool().clone();
    serve_with(db, mode, pool)
}

/// [`serve`], the blocking work on `pool`.
fn serve_with(db: TestDatabase, mode: Mode, pool: appschema::SharedPool) -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt
        .block_on(app::serve(
            mode,
            db.url(),
            pool,
            db.registry_pool().clone(),
            Arc::clone(db.migrations()),
            0,
        ))
        .unwrap();
    assert_eq!(running.state.mode(), mode);
    Fixture {
        db,
        running,
        _rt: rt,
    }
}

fn two_tenants(mode: Mode) -> Fixture {
    let db = TestDatabase::builder(&MIGRATIONS)
        .spares(app::SPARES)
        .pool_size(8)
        .build();
    let fixture = serve(db, mode);
    let addr = fixture.addr();
    let signups = std::thread::scope(|s| {
        let a = s.spawn(|| post(addr, "localhost", "/signup", r#"{"name":"acme"}"#));
        let g = s.spawn(|| {
            post(
                addr,
                "localhost",
                "/signup",
                r#"{"name":"globex","plan":"pro"}"#,
            )
        });
        [a.join().unwrap(), g.join().unwrap()]
    });
    for (status, body) in &signups {
        assert_eq!(*status, 201, "{body}");
    }
    for (host, name) in [
        ("acme.localhost", "Rocket"),
        ("acme.localhost", "Anvil"),
        ("globex.localhost", "Doomsday device"),
    ] {
        let (status, body) = post(
            addr,
            host,
            "/api/projects",
            &format!(r#"{{"name":"{name}"}}"#),
        );
        assert_eq!(status, 201, "{host}: {body}");
    }
    fixture
}

fn tenants_made_by_the_harness_are_served_by_host_name(mode: Mode) {
    let hosts = ["acme.localhost", "globex.localhost", "initech.localhost"];
    let db = TestDatabase::builder(&MIGRATIONS).tenants(hosts).build();
    // Seed each tenant's rows straight through the harness's connections.
    for host in hosts {
        diesel::insert_into(app::tenant::projects::table)
            .values(app::tenant::projects::name.eq(format!("{host} launch")))
            .execute(&mut *db.conn_for(host))
            .unwrap();
    }
    let f = serve(db, mode);
    for host in hosts {
        let (status, body) = get(f.addr(), host, "/api/projects");
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(project_names(&body), [format!("{host} launch")]);
    }
    assert_eq!(get(f.addr(), "nobody.localhost", "/api/projects").0, 404);
}

fn two_tenants_signed_up_concurrently_each_see_only_their_own_rows(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    let (status, body) = get(addr, "acme.localhost", "/api/projects");
    assert_eq!(status, 200);
    assert_eq!(project_names(&body), ["Rocket", "Anvil"]);
    let (status, body) = get(addr, "globex.localhost", "/api/projects");
    assert_eq!(status, 200);
    assert_eq!(project_names(&body), ["Doomsday device"]);

    // Tasks: acme's project 2 does not exist for globex.
    let (status, body) = post(
        addr,
        "acme.localhost",
        "/api/projects/2/tasks",
        r#"{"title":"Sharpen"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        get(addr, "globex.localhost", "/api/projects/2/tasks").0,
        404
    );
    let (status, body) = get(addr, "acme.localhost", "/api/projects/2/tasks");
    assert_eq!(status, 200);
    assert!(body.contains("Sharpen"), "{body}");

    // The shared plans table, joined to each tenant's own account row.
    let (_, acme) = get(addr, "acme.localhost", "/api/account");
    let (_, globex) = get(addr, "globex.localhost", "/api/account");
    let acme: serde_json::Value = serde_json::from_str(&acme).unwrap();
    let globex: serde_json::Value = serde_json::from_str(&globex).unwrap();
    assert_eq!(acme["plan"]["name"], "free");
    assert_eq!(globex["plan"]["name"], "pro");
    assert_eq!(acme["tenant"], "acme.localhost");
    assert_ne!(acme["schema"], globex["schema"]);

    // The HTML page shows the tenant's own projects and tasks only.
    let (status, page) = get(addr, "acme.localhost", "/");
    assert_eq!(status, 200);
    assert!(
        page.contains("Rocket") && page.contains("Sharpen"),
        "{page}"
    );
    assert!(!page.contains("Doomsday"), "{page}");

    // The free plan's limit (3 projects) comes from the shared table.
    assert_eq!(
        post(
            addr,
            "acme.localhost",
            "/api/projects",
            r#"{"name":"Third"}"#
        )
        .0,
        201
    );
    assert_eq!(
        post(
            addr,
            "acme.localhost",
            "/api/projects",
            r#"{"name":"Fourth"}"#
        )
        .0,
        402
    );
}

fn signing_up_a_taken_or_invalid_name_is_refused(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    assert_eq!(
        post(addr, "localhost", "/signup", r#"{"name":"acme"}"#).0,
        409
    );
    assert_eq!(
        post(addr, "localhost", "/signup", r#"{"name":"Evil\"; DROP"}"#).0,
        422
    );
    assert_eq!(
        post(
            addr,
            "localhost",
            "/signup",
            r#"{"name":"x","plan":"gold"}"#
        )
        .0,
        422
    );
    // Sign-up exists on the apex only.
    assert_eq!(
        post(addr, "acme.localhost", "/signup", r#"{"name":"y"}"#).0,
        404
    );
}

fn an_unknown_host_gets_404_and_no_tenant_data(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    for host in [
        "nobody.localhost",
        "localhost.acme",
        "acme",
        "acme.localhost.evil.com",
    ] {
        let (status, body) = get(addr, host, "/api/projects");
        assert_eq!(status, 404, "{host}: {body}");
        assert!(
            !body.contains("Rocket") && !body.contains("Doomsday"),
            "{host}: {body}"
        );
    }
    assert_eq!(http(addr, "GET", "/api/projects", None, None).0, 400);
}

fn host_header_tricks_never_reach_another_tenant(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    let long = format!("{}.acme.localhost", "a".repeat(5000));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Normalized to acme.localhost: acme's rows, and only acme's.
        (b"ACME.LocalHost".to_vec(), 200),
        (b"acme.localhost:8080".to_vec(), 200),
        (b"acme.localhost.".to_vec(), 200),
        (b"acme.localhost.:3000".to_vec(), 200),
        // Refused outright.
        (b"evil.com@acme.localhost".to_vec(), 400),
        (b"globex.localhost@acme.localhost".to_vec(), 400),
        (b"acme.localhost:globex".to_vec(), 400),
        (b"acme.localhost, globex.localhost".to_vec(), 400),
        (b"acme.localhost/../globex.localhost".to_vec(), 400),
        (long.into_bytes(), 400),
        ("аcme.localhost".as_bytes().to_vec(), 400), // Cyrillic а
        ("acme.localhost\u{0}".as_bytes().to_vec(), 400),
        (b"\xff\xfe.localhost".to_vec(), 400),
    ];
    for (host, want) in cases {
        let shown = String::from_utf8_lossy(&host)
            .chars()
            .take(60)
            .collect::<String>();
        let (status, body) = http(addr, "GET", "/api/projects", Some(&host), None);
        assert!(
            !body.contains("Doomsday"),
            "{shown:?} reached globex: {body}"
        );
        if want == 200 {
            assert_eq!(
                (status, project_names(&body)),
                (200, vec!["Rocket".into(), "Anvil".into()]),
                "{shown:?}"
            );
        } else {
            // hyper itself may refuse bytes it cannot parse (also 400).
            assert_eq!(status, want, "{shown:?}: {body}");
        }
    }
    // Two Host headers: refused, whichever comes first.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /api/projects HTTP/1.1\r\nHost: acme.localhost\r\nHost: globex.localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(
        !raw.contains("Doomsday") && !raw.contains("Rocket"),
        "{raw}"
    );
}

fn a_tenant_dropped_through_the_library_stops_resolving_at_once(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    // Cached as resolved by now.
    assert_eq!(get(addr, "globex.localhost", "/api/projects").0, 200);
    assert_eq!(get(addr, "globex.localhost", "/api/projects").0, 200);
    let mut conn = f.db.conn();
    drop_tenant(
        &mut conn,
        &PublicName::new("globex.localhost").unwrap(),
        DropMode::Drop,
    )
    .unwrap();
    // The layer's answer ("no such tenant"), not a cached tenant whose
    // schema turns out to be gone ("… its schema is gone").
    let (status, body) = get(addr, "globex.localhost", "/api/projects");
    assert_eq!((status, body.as_str()), (404, "no such tenant\n"));
    // The other tenant is untouched.
    assert_eq!(get(addr, "acme.localhost", "/api/projects").0, 200);
    f.running.stop();
}

/// With no spare schema left, sign-up still succeeds: the schema is built
/// (from the template or by the migrations; on the async path, where
/// claiming a spare answered "none", on a blocking thread), with its account
/// row, and the tenant is served at once.
fn a_sign_up_with_no_spare_left_builds_the_schema(mode: Mode) {
    let db = TestDatabase::builder(&MIGRATIONS).build();
    let f = serve(db, mode);
    let addr = f.addr();
    let (status, body) = post(
        addr,
        "localhost",
        "/signup",
        r#"{"name":"initech","plan":"pro"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let signed_up: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(signed_up["built_from"], "spare", "{body}");
    let (status, body) = get(addr, "initech.localhost", "/api/account");
    assert_eq!(status, 200, "{body}");
    let account: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(account["plan"]["name"], "pro");
    assert_eq!(
        post(addr, "localhost", "/signup", r#"{"name":"initech"}"#).0,
        409
    );
}

/// On the async path, requests never wait for the blocking pool: here its
/// only connection is held for the whole test, with a one-second checkout
/// timeout, so a request that used it (a tenant query, a sign-up that
/// claims a spare, the plans) would answer 503 or 500 instead. (On the
/// blocking path this test fails at its first request.)
#[cfg(feature = "async")]
fn the_async_path_serves_without_the_blocking_pool(mode: Mode) {
    let db = TestDatabase::builder(&MIGRATIONS)
        .spares(app::SPARES)
        .tenants(["acme.localhost"])
        .build();
    let blocking = appschema::SharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let _held = blocking.get_shared().unwrap();
    let f = serve_with(db, mode, blocking.clone());
    let addr = f.addr();
    let (status, body) = post(addr, "localhost", "/signup", r#"{"name":"globex"}"#);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""built_from":"spare""#), "{body}");
    let (status, body) = post(
        addr,
        "globex.localhost",
        "/api/projects",
        r#"{"name":"Moon"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = get(addr, "globex.localhost", "/api/projects");
    assert_eq!(
        (status, project_names(&body)),
        (200, vec!["Moon".to_string()])
    );
    let (status, body) = get(addr, "globex.localhost", "/api/account");
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(addr, "acme.localhost", "/api/projects").0, 200);
    assert_eq!(get(addr, "localhost", "/api/plans").0, 200);
    assert_eq!(get(addr, "globex.localhost", "/").0, 200);
}

/// On another thread: waits (up to 20 s) until a backend of `db`'s database
/// waits for a lock in a statement naming `table`, terminates it (as
/// `pg_terminate_backend` by an operator, a failover or a restart would),
/// and returns its pid.
fn kill_when_waiting_on(db: &TestDatabase, table: &str) -> std::thread::JoinHandle<i32> {
    let mut admin = db.conn();
    let sql = format!(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' \
           AND position('{table}' in query) > 0",
        db.name()
    );
    let table = table.to_string();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: Vec<Pid> = diesel::sql_query(&sql).load(&mut admin).unwrap();
            if let Some(target) = found.first() {
                diesel::sql_query(format!("SELECT pg_terminate_backend({})", target.pid))
                    .execute(&mut admin)
                    .unwrap();
                return target.pid;
            }
            assert!(
                Instant::now() < deadline,
                "no request waited on `{table}` within 20 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

/// acme's schema, as its account reports it.
fn schema_of(addr: SocketAddr, host: &str) -> String {
    let (status, body) = get(addr, host, "/api/account");
    assert_eq!(status, 200, "{body}");
    let account: serde_json::Value = serde_json::from_str(&body).unwrap();
    account["schema"].as_str().unwrap().to_string()
}

/// A GET whose connection is terminated in the middle of its query (held
/// there by a lock an operator's session holds on the table) is run again
/// on a fresh connection: the client gets its rows, not an error.
fn a_get_whose_backend_is_killed_mid_query_is_retried_and_succeeds(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    let schema = appschema::SchemaName::new(schema_of(addr, "acme.localhost")).unwrap();
    let mut holder = f.db.conn();
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {}.projects IN ACCESS EXCLUSIVE MODE",
            schema.quoted()
        ))
        .unwrap();
    let killer = kill_when_waiting_on(&f.db, "projects");
    let request = std::thread::spawn(move || get(addr, "acme.localhost", "/api/projects"));
    killer.join().unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    let (status, body) = request.join().unwrap();
    assert_eq!(status, 200, "the retried GET failed: {body}");
    assert_eq!(project_names(&body), ["Rocket", "Anvil"]);
}

/// A write whose connection is terminated before it commits is not run
/// again (only reads are, in this app): the client is told to retry
/// (`503` with `Retry-After`), never `500`, and nothing of it stayed.
fn a_write_whose_backend_is_killed_answers_503_with_retry_after(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    let schema = appschema::SchemaName::new(schema_of(addr, "acme.localhost")).unwrap();
    let mut holder = f.db.conn();
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {}.account IN ACCESS EXCLUSIVE MODE",
            schema.quoted()
        ))
        .unwrap();
    let killer = kill_when_waiting_on(&f.db, "account");
    let request = std::thread::spawn(move || {
        http_with_head(
            addr,
            "POST",
            "/api/projects",
            Some(b"acme.localhost"),
            Some(r#"{"name":"Lost"}"#),
        )
    });
    killer.join().unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    let (status, head, body) = request.join().unwrap();
    assert_eq!(status, 503, "{head}\n\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nretry-after: 1"),
        "{head}"
    );
    let (_, body) = get(addr, "acme.localhost", "/api/projects");
    assert_eq!(project_names(&body), ["Rocket", "Anvil"]);
    // The connection was replaced: the client's retry succeeds.
    assert_eq!(
        post(
            addr,
            "acme.localhost",
            "/api/projects",
            r#"{"name":"Lost"}"#
        )
        .0,
        201
    );
}

/// Clients read both tenants while every backend of the database is
/// terminated again and again: no request answers `500`, none gets the
/// other tenant's rows, and anything but `200` is a `503` with
/// `Retry-After`.
fn gets_under_repeated_backend_kills_never_answer_500_nor_another_tenants_rows(mode: Mode) {
    let f = two_tenants(mode);
    let addr = f.addr();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut admin = f.db.conn();
    let kill_all = format!(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        f.db.name()
    );
    let (answers, killed) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                s.spawn(move || {
                    let mut answers = Vec::new();
                    for i in 0..150 {
                        let (host, want) = if (c + i) % 2 == 0 {
                            ("acme.localhost", vec!["Rocket", "Anvil"])
                        } else {
                            ("globex.localhost", vec!["Doomsday device"])
                        };
                        let (status, head, body) = http_with_head(
                            addr,
                            "GET",
                            "/api/projects",
                            Some(host.as_bytes()),
                            None,
                        );
                        if status == 200 {
                            assert_eq!(project_names(&body), want, "LEAK: {host} got {body}");
                        }
                        answers.push((status, head, body));
                    }
                    answers
                })
            })
            .collect();
        let killer = s.spawn(|| {
            let mut killed = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let pids: Vec<Pid> = diesel::sql_query(&kill_all).load(&mut admin).unwrap();
                for pid in &pids {
                    diesel::sql_query(format!("SELECT pg_terminate_backend({})", pid.pid))
                        .execute(&mut admin)
                        .unwrap();
                }
                killed += pids.len();
                std::thread::sleep(Duration::from_millis(100));
            }
            killed
        });
        let answers: Vec<_> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (answers, killer.join().unwrap())
    });
    assert!(killed > 0, "no backend was killed");
    for (status, head, body) in &answers {
        assert_ne!(*status, 500, "{head}\n\n{body}");
        if *status != 200 {
            assert_eq!(*status, 503, "{head}\n\n{body}");
            assert!(
                head.to_ascii_lowercase().contains("retry-after: 1"),
                "{head}"
            );
        }
    }
    let ok = answers
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .count();
    eprintln!(
        "{ok} of {} GETs answered 200 while {killed} backends were killed",
        answers.len()
    );
}

/// One `#[test]` per test body and path: `blocking::name` and, with the
/// `async` feature, `on_async::name`.
macro_rules! on_both_paths {
    ($($name:ident),* $(,)?) => {
        mod blocking {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Mode::Blocking)
                }
            )*
        }
        #[cfg(feature = "async")]
        mod on_async {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Mode::Async)
                }
            )*
            #[test]
            fn the_async_path_serves_without_the_blocking_pool() {
                super::the_async_path_serves_without_the_blocking_pool(super::Mode::Async)
            }
        }
    };
}

on_both_paths!(
    tenants_made_by_the_harness_are_served_by_host_name,
    two_tenants_signed_up_concurrently_each_see_only_their_own_rows,
    signing_up_a_taken_or_invalid_name_is_refused,
    an_unknown_host_gets_404_and_no_tenant_data,
    host_header_tricks_never_reach_another_tenant,
    a_tenant_dropped_through_the_library_stops_resolving_at_once,
    a_sign_up_with_no_spare_left_builds_the_schema,
    a_get_whose_backend_is_killed_mid_query_is_retried_and_succeeds,
    a_write_whose_backend_is_killed_answers_503_with_retry_after,
    gets_under_repeated_backend_kills_never_answer_500_nor_another_tenants_rows,
);
