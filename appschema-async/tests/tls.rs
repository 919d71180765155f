//! TLS on the async pools, against a throwaway server with `ssl = on`, a
//! certificate for `localhost` signed by a CA generated at test time, and
//! TCP connections accepted only over TLS (`TempTlsCluster`): `sslmode` and
//! `sslrootcert` are honoured as libpq honours them, a wrong CA or a server
//! without TLS fails with an error saying so, the cancel request of a
//! dropped query goes over TLS too; and the blocking pool's `sslmode`
//! (libpq) works as the README says.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::{AsyncSharedPool, AsyncTransactionScopedPool, RustlsConnector};
use appschema_core::connection::{ConnectionError, SharedPool};
use appschema_tempdb::{TempTlsCluster, TestDb};
use appschema_testkit::tenants::{create_tenants, tenant, WhoAmI};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// One TLS cluster per test process (its watchdog removes it at exit).
fn cluster() -> &'static TempTlsCluster {
    static CLUSTER: OnceLock<TempTlsCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        TempTlsCluster::start().unwrap_or_else(|e| panic!("cannot start a TLS cluster: {e}"))
    })
}

/// A database of one test on the TLS cluster, with tenants `t0` and `t1`;
/// dropped with its connections at the end.
struct TlsDb {
    name: String,
}

impl TlsDb {
    fn new(test: &str) -> TlsDb {
        let name = format!("tls_{test}_{}", std::process::id());
        let mut admin = PgConnection::establish(&cluster().cluster().url()).unwrap();
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("CREATE DATABASE \"{name}\"")),
            &mut admin,
        )
        .unwrap();
        let mut conn = PgConnection::establish(&cluster().cluster().url_for(&name)).unwrap();
        create_tenants(&mut conn, 2);
        TlsDb { name }
    }

    /// Over TCP to `localhost`, with `query` (`sslmode=…`).
    fn url(&self, query: &str) -> String {
        format!("{}?{query}", cluster().tcp_url_for(&self.name))
    }

    /// `sslmode=verify-full` with the CA that signed the server's certificate.
    fn verify_full_url(&self) -> String {
        self.url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            cluster().ca_cert().display()
        ))
    }

    /// A plaintext connection over the unix socket, for watching the server.
    async fn admin(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&cluster().cluster().url_for(&self.name))
            .await
            .unwrap()
    }
}

impl Drop for TlsDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&cluster().cluster().url()) {
            let _ = diesel::RunQueryDsl::execute(
                diesel::sql_query(format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                )),
                &mut admin,
            );
        }
    }
}

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

const SSL_OF_THIS_BACKEND: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

async fn ssl_in_use(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query(SSL_OF_THIS_BACKEND)
        .get_result::<Ssl>(conn)
        .await
        .unwrap()
        .ssl
}

async fn whoami(conn: &mut AsyncPgConnection) -> WhoAmI {
    diesel::sql_query(
        "SELECT current_schema() AS schema, (SELECT marker FROM items WHERE id = 1) AS marker",
    )
    .get_result(conn)
    .await
    .unwrap()
}

/// The message of a checkout that could not open a connection.
fn down_message(e: ConnectionError) -> String {
    match e {
        ConnectionError::DatabaseDown { message, .. } => message,
        other => panic!("expected DatabaseDown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_connects_every_async_pool_over_tls() {
    let db = TlsDb::new("every_pool");
    let url = db.verify_full_url();

    let shared = AsyncSharedPool::builder(&url).max_size(1).build().unwrap();
    let mut conn = shared.get_for(&tenant(0)).await.unwrap();
    assert!(ssl_in_use(&mut conn).await, "AsyncSharedPool is not on TLS");
    assert_eq!(whoami(&mut conn).await.marker, "t0");
    drop(conn);

    let pinned = AsyncSharedPool::builder(&url)
        .max_size(1)
        .build_for(tenant(1))
        .unwrap();
    let mut conn = pinned.get().await.unwrap();
    assert!(ssl_in_use(&mut conn).await, "AsyncTenantPool is not on TLS");
    assert_eq!(whoami(&mut conn).await.marker, "t1");
    drop(conn);

    let scoped = AsyncTransactionScopedPool::builder(&url)
        .max_size(1)
        .build()
        .unwrap();
    let (ssl, marker) = scoped
        .transaction_for(&tenant(0), |c| {
            async move {
                let ssl = ssl_in_use(c).await;
                Ok::<_, ConnectionError>((ssl, whoami(c).await.marker))
            }
            .scope_boxed()
        })
        .await
        .unwrap();
    assert!(ssl, "AsyncTransactionScopedPool is not on TLS");
    assert_eq!(marker, "t0");
}

/// The hook: a connector of the caller's, given to `.tls(…)`, is used for
/// the connections (here a rustls configuration trusting the test CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_given_to_the_builders_is_used_for_their_connections() {
    let db = TlsDb::new("hook");
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(cluster().ca_cert()).unwrap();
    for cert in rustls_pemfile_certs(&ca) {
        roots.add(cert).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = RustlsConnector::new(config);
    // No sslrootcert: the built-in connector could not verify; the
    // caller's trusts the CA.
    let url = db.url("sslmode=verify-full");
    let shared = AsyncSharedPool::builder(&url)
        .max_size(1)
        .tls(connector.clone())
        .build()
        .unwrap();
    let mut conn = shared.get_for(&tenant(0)).await.unwrap();
    assert!(ssl_in_use(&mut conn).await);
    let scoped = AsyncTransactionScopedPool::builder(&url)
        .tls(connector)
        .build()
        .unwrap();
    let ssl = scoped
        .transaction_shared(|c| {
            async move { Ok::<_, ConnectionError>(ssl_in_use(c).await) }.scope_boxed()
        })
        .await
        .unwrap();
    assert!(ssl);
}

/// SCRAM over TLS with `channel_binding=require`: the connector hands
/// tokio-postgres the server certificate's `tls-server-end-point` hash,
/// and the server accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_channel_binding_required_authenticates_over_tls() {
    let db = TlsDb::new("scram");
    let mut admin = db.admin().await;
    admin
        .batch_execute(
            "CREATE ROLE appschema_scram LOGIN PASSWORD 'not-a-secret';
             GRANT USAGE ON SCHEMA t0 TO appschema_scram;
             GRANT SELECT ON ALL TABLES IN SCHEMA t0, public TO appschema_scram;",
        )
        .await
        .unwrap();
    let url = format!(
        "postgres://appschema_scram:not-a-secret@localhost:{}/{}?sslmode=verify-full&sslrootcert={}&channel_binding=require",
        cluster().port(),
        db.name,
        cluster().ca_cert().display()
    );
    let pool = AsyncSharedPool::builder(&url).max_size(1).build().unwrap();
    let result = pool.get_for(&tenant(0)).await;
    let mut conn = result.unwrap_or_else(|e| panic!("{e}"));
    assert!(ssl_in_use(&mut conn).await);
    assert_eq!(whoami(&mut conn).await.marker, "t0");
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_against_a_ca_that_did_not_sign_the_server_fails_and_says_why() {
    let db = TlsDb::new("wrong_ca");
    let untrusted = cluster().untrusted_ca_cert();
    for mode in ["verify-full", "verify-ca"] {
        let url = db.url(&format!(
            "sslmode={mode}&sslrootcert={}",
            untrusted.display()
        ));
        let pool = AsyncSharedPool::builder(&url)
            .max_size(1)
            .connection_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let message = down_message(pool.get_for(&tenant(0)).await.unwrap_err());
        assert!(
            message.contains("UnknownIssuer")
                && message.contains(&format!("sslmode={mode}"))
                && message.contains(&untrusted.display().to_string()),
            "{mode}: {message}"
        );
    }
}

/// The certificate names `localhost`, not `127.0.0.1`: `verify-full`
/// refuses the address, `verify-ca` (the chain only) accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let db = TlsDb::new("host_name");
    let by_address = |mode: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode={mode}&sslrootcert={}",
            cluster().port(),
            db.name,
            cluster().ca_cert().display()
        )
    };
    let full = AsyncSharedPool::builder(by_address("verify-full"))
        .max_size(1)
        .build()
        .unwrap();
    let message = down_message(full.get_for(&tenant(0)).await.unwrap_err());
    assert!(
        message.contains("certificate not valid for name"),
        "{message}"
    );
    let ca = AsyncSharedPool::builder(by_address("verify-ca"))
        .max_size(1)
        .build()
        .unwrap();
    let mut conn = ca.get_for(&tenant(0)).await.unwrap();
    assert!(ssl_in_use(&mut conn).await);
}

/// `sslmode=require` to a server that does not speak TLS (the plain test
/// server, whose unix socket has no TLS) fails, and says so; it never
/// falls back to plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_fails_and_says_so() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    for mode in ["require", "verify-full"] {
        let url = format!(
            "{}&sslmode={mode}&sslrootcert={}",
            db.url(),
            cluster().ca_cert().display()
        );
        let pool = AsyncSharedPool::builder(&url).max_size(1).build().unwrap();
        let message = down_message(pool.get_for(&tenant(0)).await.unwrap_err());
        assert!(
            message.contains("server does not support TLS")
                && message.contains(&format!("sslmode={mode} requires TLS")),
            "{mode}: {message}"
        );
    }
}

/// What cannot be honoured is refused when the pool is built, naming the
/// setting: verification with no root certificate, an unreadable one.
#[tokio::test]
async fn tls_settings_that_cannot_be_honoured_are_refused_by_build() {
    let no_root = AsyncSharedPool::builder("postgres://db.example.com/app?sslmode=verify-full")
        .build()
        .unwrap_err();
    if !Path::new(&std::env::var("HOME").unwrap_or_default())
        .join(".postgresql/root.crt")
        .exists()
    {
        assert!(
            matches!(&no_root, ConnectionError::Tls { message } if message.contains("sslrootcert=")),
            "{no_root:?}"
        );
    }
    let missing = AsyncTransactionScopedPool::builder(
        "postgres://db.example.com/app?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
    )
    .build()
    .unwrap_err();
    assert!(
        matches!(&missing, ConnectionError::Tls { message } if message.contains("/nonexistent/ca.pem")),
        "{missing:?}"
    );
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    v: bool,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Asks `admin` `sql` (one boolean, `v`) until it says true, bounded so a
/// broken guard fails the test instead of hanging it.
async fn until(admin: &mut AsyncPgConnection, sql: &str) {
    let wait = async {
        while !diesel::sql_query(sql)
            .get_result::<Flag>(admin)
            .await
            .unwrap()
            .v
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("the server never reached: {sql}"));
}

/// Polls `future` once (so it sends its query) and drops it.
async fn poll_once_and_drop<F: Future>(future: F) {
    let mut future = std::pin::pin!(future);
    let polled =
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready()))
            .await;
    assert!(!polled, "the query answered before the first poll returned");
}

/// A request dropped mid-query on a TLS connection: its statement is
/// cancelled by a cancel request sent over TLS (a plaintext one, or one
/// without TLS support, never reaches a server that requires it), so the
/// backend ends and the write it would have made never happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_mid_query_over_tls_has_its_statement_cancelled_over_tls() {
    let db = TlsDb::new("cancel");
    let pool = AsyncSharedPool::builder(db.verify_full_url())
        .max_size(1)
        .build()
        .unwrap();
    let mut admin = db.admin().await;
    admin
        .batch_execute("SELECT pg_advisory_lock(79)")
        .await
        .unwrap();
    let mut conn = pool.get_for(&tenant(0)).await.unwrap();
    assert!(ssl_in_use(&mut conn).await);
    let victim = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut *conn)
        .await
        .unwrap()
        .pid;
    poll_once_and_drop(conn.batch_execute(
        "SELECT pg_advisory_xact_lock(79); INSERT INTO items VALUES (999, 'written after the client gave up')",
    ))
    .await;
    until(
        &mut admin,
        &format!("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = {victim} AND NOT granted) AS v"),
    )
    .await;
    drop(conn);
    until(
        &mut admin,
        &format!("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = {victim}) AS v"),
    )
    .await;
    admin
        .batch_execute("SELECT pg_advisory_unlock(79)")
        .await
        .unwrap();
    let written: bool =
        diesel::sql_query("SELECT EXISTS (SELECT FROM t0.items WHERE id = 999) AS v")
            .get_result::<Flag>(&mut admin)
            .await
            .unwrap()
            .v;
    assert!(!written, "the cancelled request's write happened");
}

/// The blocking pools get TLS from libpq: `sslmode=verify-full` and
/// `sslrootcert` in the URL, as the README says.
#[test]
fn the_blocking_pool_connects_with_verify_full_through_libpq() {
    let db = TlsDb::new("blocking");
    let pool = SharedPool::builder(db.verify_full_url())
        .max_size(1)
        .build()
        .unwrap();
    let mut conn = pool.get_for(&tenant(0)).unwrap();
    let ssl =
        diesel::RunQueryDsl::get_result::<Ssl>(diesel::sql_query(SSL_OF_THIS_BACKEND), &mut *conn)
            .unwrap()
            .ssl;
    assert!(ssl, "the blocking pool is not on TLS");
    let wrong = db.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        cluster().untrusted_ca_cert().display()
    ));
    // The first checkout opens the connection (min_idle is 0 by default).
    let pool = SharedPool::builder(wrong)
        .max_size(1)
        .connection_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let e = pool.get_for(&tenant(0)).unwrap_err();
    assert!(e.to_string().contains("certificate verify failed"), "{e}");
}
