//! One async pool for every tenant: [`AsyncSharedPool`], the async twin of
//! `appschema_core::SharedPool`.
//!
//! The pool is deadpool's (`deadpool::managed`), not bb8: both are
//! diesel-async features, but deadpool runs its recycle hook in the task
//! that asks for a connection, with no background task of its own, and
//! `Object::take` removes a connection from the pool outright, which is how
//! a connection in an unknown state is kept out of it. Neither pool passes
//! the checkout's tenant to its hook (bb8's `is_valid` takes only the
//! connection too), so the switch runs right after deadpool hands the
//! connection out: the recycle hook sends nothing, and the switch is the
//! checkout's only round trip, as on the sync pool, where it replaces
//! r2d2's `SELECT 1`.
//!
//! What deadpool leaves out of a pool's upkeep (an idle minimum, closing
//! idle and old connections: r2d2's reaper), one task per pool does, with
//! deadpool's public API (`maintain.rs` says how).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use appschema_core::connection::internals::PerTenantTypes;
use std::time::{Duration, Instant};

use appschema_core::connection::internals::{
    describe_target, prepare_statement_sql, with_startup_options, write_session_switch,
    AfterRefusal, CheckoutAttempts, ConnectRow, Handed, Lot, Pick, PlanWatch, PoolView,
    PublicNameLookup, SessionRefusal, Ticket, CONNECT_QUERY,
};
use appschema_core::connection::{
    ConnectionError, ManagerError, PoolState, SearchPath, DEFAULT_MAX_TENANTS_PER_CONNECTION,
};
use appschema_core::observe::{self, PoolKind};
use appschema_core::redact::{redact_connection_error, redact_url};
use appschema_core::registry::TenantRow;
use appschema_core::SchemaName;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use diesel::connection::CacheSize;
use diesel::sql_types::Text;
use diesel::OptionalExtension;
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

use crate::maintain::{Maintainer, Settings};
use crate::switch::run_session_switch;
use crate::tls::{Connect, UserConnector};

/// The deadpool [`Manager`](managed::Manager) of the async pools: opens
/// connections with appschema's start-up options and, for an
/// [`AsyncSharedPool`], prepares the switch on each; refuses on recycle a
/// connection that must not be reused. Its `Debug` shows the URL with the
/// password replaced by `***`.
pub struct AsyncTenantManager {
    /// The caller's URL with start-up options (see `with_startup_options`),
    /// or as given for a transaction-scoped pool.
    url: String,
    /// The `search_path` those options set: the shared-only path. `None`
    /// for a transaction-scoped pool, which prepares nothing.
    default_path: Option<String>,
    statement_cache: bool,
    max_lifetime: Option<Duration>,
    /// Plaintext or TLS, for connections and cancel requests.
    connect: Connect,
    /// See [`AsyncSharedPoolBuilder::max_tenants_per_connection`].
    max_tenants: Option<usize>,
}

impl fmt::Debug for AsyncTenantManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncTenantManager")
            .field("url", &redact_url(&self.url))
            .field("default_path", &self.default_path)
            .field("statement_cache", &self.statement_cache)
            .field("max_lifetime", &self.max_lifetime)
            .field("max_tenants", &self.max_tenants)
            .finish()
    }
}

impl AsyncTenantManager {
    /// A manager for a transaction-scoped pool: `url` as given (its TLS
    /// settings read by `tls::Connect`), nothing prepared.
    pub(crate) fn plain(
        url: &str,
        tls: Option<&UserConnector>,
        statement_cache: bool,
    ) -> Result<AsyncTenantManager, ConnectionError> {
        let (url, connect) = resolve_tls(url, tls)?;
        Ok(AsyncTenantManager {
            url,
            default_path: None,
            statement_cache,
            max_lifetime: None,
            connect,
            max_tenants: None,
        })
    }

    /// Sends a cancel request for `token`'s connection the way this
    /// manager connects (over TLS when its connections use it).
    pub(crate) fn cancel(
        &self,
        token: tokio_postgres::CancelToken,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        self.connect.cancel(token)
    }
}

/// Reads the URL's TLS settings: the URL for tokio-postgres, and how to
/// connect. Refuses what cannot be honoured (TLS required and none at hand).
pub(crate) fn resolve_tls(
    url: &str,
    tls: Option<&UserConnector>,
) -> Result<(String, Connect), ConnectionError> {
    Connect::resolve(url, tls).map_err(|message| ConnectionError::Tls { message })
}

impl managed::Manager for AsyncTenantManager {
    type Type = AsyncPgConnection;
    type Error = ManagerError;

    async fn create(&self) -> Result<AsyncPgConnection, ManagerError> {
        let mut conn = self
            .connect
            .establish(&self.url)
            .await
            .map_err(|e| ManagerError::Connect(redact_connection_error(e, &self.url)))?;
        if !self.statement_cache {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        if let Some(default_path) = &self.default_path {
            let row: ConnectRow = diesel::sql_query(CONNECT_QUERY)
                .get_result(&mut conn)
                .await
                .map_err(ManagerError::Switch)?;
            conn.batch_execute(&prepare_statement_sql(row, default_path))
                .await
                .map_err(ManagerError::Switch)?;
        }
        let mut watch = PlanWatch::new();
        if let Some(log) = PlanWatch::log_in(&mut watch) {
            log.set_limit(self.max_tenants);
        }
        conn.set_instrumentation(watch);
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut AsyncPgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<ManagerError> {
        // A connection that comes back with a diesel transaction open or
        // failed, closed, or holding a cached statement PostgreSQL now
        // refuses, is closed rather than reused. (One with a query in
        // flight never comes back: see `AsyncTenantConnection`'s `Drop`.)
        if !PlanWatch::is_installed_in(conn.instrumentation()) {
            return Err(RecycleError::message(
                "the connection's instrumentation was replaced, so appschema's watch is off: \
                 set diesel's default instrumentation instead",
            ));
        }
        if PlanWatch::saw_stale_plan_in(conn.instrumentation()) {
            observe::retiring_in(conn.instrumentation(), false);
            return Err(RecycleError::message("a cached plan went stale"));
        }
        if PlanWatch::saw_connection_lost_in(conn.instrumentation()) {
            observe::retiring_in(conn.instrumentation(), false);
            return Err(RecycleError::message("the connection was lost"));
        }
        if std::thread::panicking() || conn.is_broken() {
            return Err(RecycleError::message(
                "the connection is closed or inside a transaction",
            ));
        }
        if self.max_lifetime.is_some_and(|max| metrics.age() >= max) {
            return Err(RecycleError::message("the connection reached max_lifetime"));
        }
        if PlanWatch::log_in(conn.instrumentation()).is_some_and(|log| log.retire_due()) {
            observe::retiring_in(conn.instrumentation(), false);
            return Err(RecycleError::message(
                "the connection served max_tenants_per_connection tenants",
            ));
        }
        Ok(())
    }
}

pub(crate) type DeadPool = managed::Pool<AsyncTenantManager>;

/// See [`AsyncSharedPoolBuilder::busy_timeout`].
pub(crate) const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether `conn` served a checkout before (returned to the pool, or
/// parked by tenant affinity after a tenant's checkout): only such a
/// connection can still be busy with an earlier checkout's statement.
fn handed_out_before(conn: &mut Object<AsyncTenantManager>) -> bool {
    Object::metrics(conn).recycle_count > 0
        || PlanWatch::log_in(conn.instrumentation()).is_none_or(|log| log.served() > 0)
}

/// Why a connection that did not answer within `bound` was closed.
pub(crate) fn busy_message(bound: Duration) -> String {
    format!(
        "it did not answer within {bound:?} (busy_timeout): an earlier statement still runs on it \
         (a row stream of diesel-async's load_stream dropped half-read or kept past the \
         connection's return?); it was cancelled and closed"
    )
}

/// The first pause of a checkout that could not open a connection, before
/// it tries again; doubled on each failure up to [`MAX_CONNECT_BACKOFF`].
pub(crate) const CONNECT_BACKOFF: Duration = Duration::from_millis(25);
/// The longest pause between two tries to open a connection: a restarted
/// server is found within this of accepting connections again.
pub(crate) const MAX_CONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// Builds an [`AsyncSharedPool`]. Every setter documents its default.
/// Its `Debug` shows the URL with the password replaced by `***`.
#[derive(Clone)]
pub struct AsyncSharedPoolBuilder {
    url: String,
    path: SearchPath,
    max_size: u32,
    min_idle: u32,
    connection_timeout: Duration,
    max_lifetime: Option<Duration>,
    idle_timeout: Option<Duration>,
    statement_cache: bool,
    tls: Option<UserConnector>,
    per_tenant_types: Option<bool>,
    max_tenants: Option<usize>,
    affinity: bool,
    busy_timeout: Duration,
}

impl fmt::Debug for AsyncSharedPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSharedPoolBuilder")
            .field("url", &redact_url(&self.url))
            .field("path", &self.path)
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("connection_timeout", &self.connection_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("statement_cache", &self.statement_cache)
            .field("per_tenant_types", &self.per_tenant_types)
            .field("max_tenants", &self.max_tenants)
            .field("affinity", &self.affinity)
            .field("busy_timeout", &self.busy_timeout)
            .finish()
    }
}

impl AsyncSharedPoolBuilder {
    /// How many distinct tenants one connection may serve before it is
    /// closed (when returned) and replaced, bounding the catalog caches its
    /// backend keeps (~70 KiB per tenant touched), whatever the number of
    /// tenants. Shared-only checkouts do not count. `None`: no bound.
    /// Default: 500, as on the sync pool
    /// (`appschema_core::connection::DEFAULT_MAX_TENANTS_PER_CONNECTION`).
    ///
    /// ```no_run
    /// use appschema::async_pool::AsyncSharedPool;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AsyncSharedPool::builder("postgres:///app")
    ///     .max_tenants_per_connection(Some(200))
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_tenants_per_connection(mut self, n: Option<usize>) -> Self {
        self.max_tenants = n;
        self
    }

    /// Whether a checkout for a tenant prefers a connection that last
    /// served that tenant (statements already planned for its path), as on
    /// the sync pool (see `SharedPoolBuilder::tenant_affinity`): while
    /// every connection is busy, checkouts queue by tenant and a returned
    /// connection goes to the oldest queued checkout for the tenant it
    /// served, else the oldest (passed over at most
    /// `appschema::connection::MAX_PASSED_OVER` times); while none is
    /// queued, returned connections are parked by tenant on top of
    /// deadpool and a checkout takes its tenant's, else an idle one of the
    /// pool, else the one parked last for another tenant. A queued
    /// checkout whose future is dropped leaves the queue, and a connection
    /// handed to it meanwhile goes to the next. Every checkout still runs
    /// the full reset and switch. Parked connections count as in use in
    /// [`AsyncSharedPool::state`]; one parked past `idle_timeout` goes
    /// back to the pool at the next checkout; [`AsyncSharedPool::queued`]
    /// counts queued checkouts.
    /// Default: `false` (measured in BENCHMARKS.md, *Tenant affinity*).
    pub fn tenant_affinity(mut self, on: bool) -> Self {
        self.affinity = on;
        self
    }

    /// How long a checkout waits for a pooled connection to answer its
    /// switch before taking it for busy with an earlier statement: a row
    /// stream of diesel-async's own `RunQueryDsl::load_stream`, dropped
    /// half-read or kept past the connection's return, whose statement
    /// still runs (the pool cannot see such a stream: diesel-async reports
    /// the query finished before its rows are read). Such a connection is
    /// sent a cancel request for the statement (over the pool's TLS) and
    /// closed, and the checkout takes another: its rows never reach the
    /// next checkout, and the next checkout never waits behind them for
    /// longer than this. A switch slower than this for any other reason
    /// (a loaded server) costs a new connection, whose first switch is
    /// not bounded (a connection never handed out cannot be busy). Default:
    /// 1 s. (`appschema_async::load_stream`'s stream borrows the
    /// connection and is cancelled when dropped, with no wait.)
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use appschema::async_pool::AsyncSharedPool;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AsyncSharedPool::builder("postgres:///app")
    ///     .busy_timeout(Duration::from_millis(250))
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The schemas after the tenant's. Default: [`SearchPath::new`] (`public`).
    pub fn search_path(mut self, path: SearchPath) -> Self {
        self.path = path;
        self
    }

    /// Most connections open at once. Default: 10.
    pub fn max_size(mut self, n: u32) -> Self {
        self.max_size = n;
        self
    }

    /// Idle connections kept open ahead of demand (at most `max_size`), so
    /// a burst of requests does not wait for connections to be opened: a
    /// background task opens them after `build` and reopens them as they
    /// are closed (broken, `max_lifetime`). Default: 0, connections are
    /// opened by the checkouts that need them. The same setting, default
    /// and meaning as on the sync `SharedPool`; only `build` differs: the
    /// sync one waits until the first `n` are open, this one cannot block
    /// and returns at once.
    ///
    /// ```no_run
    /// use appschema::async_pool::AsyncSharedPool;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// // Four connections are opened in the background right away.
    /// let pool = AsyncSharedPool::builder("postgres:///app")
    ///     .max_size(16)
    ///     .min_idle(4)
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn min_idle(mut self, n: u32) -> Self {
        self.min_idle = n;
        self
    }

    /// How long a checkout waits for a connection (for a free slot, to
    /// open one, and to switch, retrying on connections found broken)
    /// before failing with [`ConnectionError::PoolExhausted`] or
    /// [`ConnectionError::DatabaseDown`]. Default: 30 s.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Age at which a connection is closed and replaced: it bounds the
    /// catalog caches a backend keeps for every tenant schema it touched
    /// (see BENCHMARKS.md). An idle connection is closed by the pool's
    /// background task within a quarter of this past the limit (and
    /// reopened if `min_idle` wants it); one checked out is closed when
    /// next checked out. `None`: connections live until they break or sit
    /// idle too long. Default: 30 min.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use appschema::async_pool::AsyncSharedPool;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AsyncSharedPool::builder("postgres:///app")
    ///     .max_lifetime(Some(Duration::from_secs(10 * 60)))
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Idle time after which a connection is closed by the pool's
    /// background task (within a quarter of this past the limit), except
    /// the `min_idle` kept open: the least recently used go first. `None`:
    /// idle connections stay open. Default: 10 min, as on the sync pool.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use appschema::async_pool::AsyncSharedPool;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// // After a burst, fall back to two open connections within a minute.
    /// let pool = AsyncSharedPool::builder("postgres:///app")
    ///     .max_size(32)
    ///     .min_idle(2)
    ///     .idle_timeout(Some(Duration::from_secs(60)))
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Whether diesel-async keeps prepared statements per connection.
    /// Default: `true`; as on the sync pool, a cached statement refused
    /// with `cached plan must not change result type` fails once and its
    /// connection is replaced (see `SharedPoolBuilder::prepared_statement_cache`).
    pub fn prepared_statement_cache(mut self, on: bool) -> Self {
        self.statement_cache = on;
        self
    }

    /// Whether the application binds custom types (enums, domains,
    /// composites) that exist once per tenant schema, declared without a
    /// schema (`#[diesel(postgres_type(name = "mood"))]`). Default: found
    /// out from the database.
    ///
    /// diesel-async caches a custom type's OID per connection by name, and
    /// offers no way to empty that cache: once a connection bound tenant
    /// A's `mood`, tenant B's values would be bound as A's type on it (B's
    /// statements fail). When on, a connection last checked out for
    /// another tenant is closed instead of switched, and another one used
    /// or opened: a checkout for a different tenant than the connection's
    /// last costs a new connection. Types declared with a schema
    /// (`schema = "public"`, one type for every tenant) need none of this.
    /// (The sync pools empty diesel's cache on such a checkout instead.)
    ///
    /// Without this setting the pool asks the database, at its first
    /// checkout and every few seconds until the answer is yes: on when an
    /// enum, domain, range or standalone composite type exists in a schema
    /// other than the shared ones (`SearchPath`) and PostgreSQL's own, not
    /// created by an extension. `false` turns it off (types in such a
    /// schema that no tenant path names); `true` turns it on from the start.
    ///
    /// ```no_run
    /// use appschema::async_pool::AsyncSharedPool;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AsyncSharedPool::builder("postgres:///app")
    ///     .per_tenant_types(true)
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn per_tenant_types(mut self, on: bool) -> Self {
        self.per_tenant_types = Some(on);
        self
    }

    /// The TLS connector for the pool's connections and cancel requests:
    /// any tokio-postgres connector (postgres-native-tls, postgres-openssl,
    /// tokio-postgres-rustls, or this crate's `RustlsConnector`). The URL's
    /// `sslmode` still decides whether TLS is used (`disable`: never;
    /// `prefer`: if the server offers it; `require`, `verify-ca`,
    /// `verify-full`: always, failing otherwise); what is verified is up to
    /// the connector (the URL's `sslrootcert` is not read). Default: none,
    /// so with the `tls-rustls` feature the built-in rustls connector,
    /// which verifies as `sslmode` and `sslrootcert` say (README, "TLS");
    /// without it, plaintext, and a URL requiring TLS is refused by `build`.
    ///
    /// ```no_run
    /// use appschema::async_pool::AsyncSharedPool;
    ///
    /// # fn run<T>(connector: T) -> Result<(), Box<dyn std::error::Error>>
    /// # where
    /// #     T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + Sync + 'static,
    /// #     T::Stream: Send + 'static,
    /// #     T::TlsConnect: Send,
    /// #     <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
    /// # {
    /// let pool = AsyncSharedPool::builder("postgres://app@db.example.com/app?sslmode=require")
    ///     .tls(connector)
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls<T>(mut self, connector: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.tls = Some(UserConnector::new(connector));
        self
    }

    /// Builds a pool that serves only `tenant`: an [`AsyncTenantPool`].
    pub fn build_for(self, tenant: SchemaName) -> Result<AsyncTenantPool, ConnectionError> {
        Ok(AsyncTenantPool {
            pool: self.build()?,
            tenant,
        })
    }

    /// Builds the pool. Opens no connection itself and does not wait: the
    /// checkouts do, and the background task that enforces `min_idle`,
    /// `idle_timeout` and `max_lifetime`, started here when called on a
    /// tokio runtime (else by the first checkout).
    ///
    /// Fails with [`ConnectionError::Tls`] when the URL's TLS settings
    /// cannot be honoured (see [`tls`](Self::tls)).
    pub fn build(self) -> Result<AsyncSharedPool, ConnectionError> {
        let default_path = self.path.shared_only();
        let (url, connect) = resolve_tls(&self.url, self.tls.as_ref())?;
        let manager = AsyncTenantManager {
            url: with_startup_options(&url, &default_path),
            default_path: Some(default_path),
            statement_cache: self.statement_cache,
            max_lifetime: self.max_lifetime,
            connect,
            max_tenants: self.max_tenants,
        };
        let pool = build_deadpool(manager, self.max_size, self.connection_timeout)?;
        let maintainer = Arc::new(Maintainer::new(Settings {
            min_idle: self.min_idle.min(self.max_size) as usize,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
        }));
        maintainer.ensure_running(&pool);
        let lot = self.affinity.then(|| {
            let pool = pool.clone();
            Lot::new(move || {
                let status = pool.status();
                PoolView {
                    idle: status.available,
                    room: status.size < status.max_size,
                }
            })
        });
        Ok(AsyncSharedPool {
            pool,
            path: self.path.clone(),
            timeout: self.connection_timeout,
            maintainer,
            per_tenant_types: Arc::new(PerTenantTypes::new(self.per_tenant_types, &self.path)),
            lot,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            busy_timeout: self.busy_timeout,
        })
    }
}

pub(crate) fn build_deadpool(
    manager: AsyncTenantManager,
    max_size: u32,
    timeout: Duration,
) -> Result<DeadPool, ConnectionError> {
    managed::Pool::builder(manager)
        .max_size(max_size as usize)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| ConnectionError::DatabaseDown {
            target: "shared work".to_string(),
            timeout,
            message: e.to_string(),
        })
}

/// The async pools' state, from deadpool's.
pub(crate) fn pool_state(pool: &DeadPool) -> PoolState {
    let status = pool.status();
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    PoolState::new(
        clamp(status.size),
        clamp(status.available),
        Some(clamp(status.waiting)),
        clamp(status.max_size),
    )
}

/// What a failed deadpool checkout means: every connection busy for the
/// whole timeout, or none could be opened.
/// Whether a failure to open or switch a new connection may pass by
/// itself (a restart, a failover, a network blip), so the checkout tries
/// again until its deadline; `false` for refusals that waiting does not
/// change: TLS, authentication, a database or role that does not exist.
/// A prepared statement that "does not exist" may pass: behind a PgBouncer
/// without prepared-statement support, diesel-async's connect may see its
/// statement prepared on one server connection and run on another.
pub(crate) fn may_pass(error: &ManagerError) -> bool {
    let message = error.to_string().to_ascii_lowercase();
    if message.contains("prepared statement") {
        return true;
    }
    const FINAL: &[&str] = &[
        "tls",
        "ssl",
        "certificate",
        "authentication",
        "password",
        "does not exist",
        "pg_hba.conf",
        "permission denied",
    ];
    !FINAL.iter().any(|marker| message.contains(marker))
}

pub(crate) fn checkout_failed(
    pool: &DeadPool,
    tenant: Option<&SchemaName>,
    timeout: Duration,
    error: PoolError<ManagerError>,
) -> ConnectionError {
    let target = describe_target(tenant);
    let status = pool.status();
    match error {
        PoolError::Timeout(managed::TimeoutType::Wait) if status.size >= status.max_size => {
            ConnectionError::PoolExhausted {
                target,
                timeout,
                max_size: u32::try_from(status.max_size).unwrap_or(u32::MAX),
            }
        }
        error => ConnectionError::DatabaseDown {
            target,
            timeout,
            message: error.to_string(),
        },
    }
}

/// One async pool for all tenants, on diesel-async's [`AsyncPgConnection`]:
/// [`get_for`](AsyncSharedPool::get_for) hands out a connection already on
/// the tenant's `search_path`, with the same checkout as the sync
/// `SharedPool` (the same message: session reset, the prepared check of
/// open transaction, role, `LISTEN` and schema, then `SET search_path`; the
/// same refusals and errors), awaited rather than blocking a thread.
///
/// A connection is never handed to the next checkout in an unknown state:
/// one whose request future was dropped while a query (or the checkout
/// itself) was in flight, that came back inside a transaction, or whose
/// cached statement went stale, is closed instead of reused.
///
/// ```no_run
/// use appschema::{SchemaName, async_pool::AsyncSharedPool};
/// use diesel_async::RunQueryDsl;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = AsyncSharedPool::builder("postgres:///app").build()?;
/// let acme = SchemaName::new("acme").unwrap();
/// let mut conn = pool.get_for(&acme).await?; // on "acme", "public"
/// diesel::sql_query("DELETE FROM carts").execute(&mut *conn).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AsyncSharedPool {
    pool: DeadPool,
    path: SearchPath,
    timeout: Duration,
    maintainer: Arc<Maintainer>,
    per_tenant_types: Arc<PerTenantTypes>,
    /// Idle connections parked by tenant (see
    /// `appschema_core`'s `connection::affinity`); `None` without affinity.
    lot: Option<Lot<Object<AsyncTenantManager>>>,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    /// See [`AsyncSharedPoolBuilder::busy_timeout`].
    busy_timeout: Duration,
}

impl fmt::Debug for AsyncSharedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSharedPool")
            .field("path", &self.path)
            .field("state", &pool_state(&self.pool))
            .finish_non_exhaustive()
    }
}

impl AsyncSharedPool {
    /// A builder for a pool connecting to `url`.
    pub fn builder(url: impl Into<String>) -> AsyncSharedPoolBuilder {
        AsyncSharedPoolBuilder {
            url: url.into(),
            path: SearchPath::new(),
            max_size: 10,
            min_idle: 0,
            connection_timeout: Duration::from_secs(30),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            statement_cache: true,
            tls: None,
            per_tenant_types: None,
            max_tenants: Some(DEFAULT_MAX_TENANTS_PER_CONNECTION),
            affinity: false,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }

    /// A connection on `tenant`'s `search_path`.
    pub async fn get_for(
        &self,
        tenant: &SchemaName,
    ) -> Result<AsyncTenantConnection, ConnectionError> {
        observe::checkout_async(
            Some(tenant),
            || self.size(),
            self.checkout(Some(tenant), None),
        )
        .await
    }

    /// A checkout for a unit of work (`run_retrying`, `read_retrying`…):
    /// the unit's `begin` travels in the checkout's message, so the
    /// connection comes back inside the unit's transaction, one round trip
    /// sooner (see `write_checkout_message`).
    pub(crate) async fn get_for_unit(
        &self,
        tenant: Option<&SchemaName>,
        begin: &'static str,
    ) -> Result<AsyncTenantConnection, ConnectionError> {
        observe::checkout_async(tenant, || self.size(), self.checkout(tenant, Some(begin))).await
    }

    /// A connection on the shared-only `search_path`, for work that belongs
    /// to no tenant.
    pub async fn get_shared(&self) -> Result<AsyncTenantConnection, ConnectionError> {
        observe::checkout_async(None, || self.size(), self.checkout(None, None)).await
    }

    /// Resolves `public_name` (a host name or alias) through the registry and
    /// returns a connection on that tenant's path, as the sync
    /// `SharedPool::get_for_public_name` does (the same query and errors:
    /// [`ConnectionError::InvalidName`], [`ConnectionError::UnknownTenant`]).
    /// Costs a registry look-up (a shared checkout) on top of the tenant's
    /// checkout: cache the tenant's schema where possible (the axum layer's
    /// resolver does).
    ///
    /// ```no_run
    /// use appschema::async_pool::AsyncSharedPool;
    /// use diesel_async::RunQueryDsl;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = AsyncSharedPool::builder("postgres:///app").build()?;
    /// let mut conn = pool.get_for_public_name("acme.example.com").await?;
    /// diesel::sql_query("DELETE FROM carts").execute(&mut *conn).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_for_public_name(
        &self,
        public_name: &str,
    ) -> Result<AsyncTenantConnection, ConnectionError> {
        let lookup = PublicNameLookup::new(public_name)?;
        observe::tenant_async(public_name, async {
            let tenant = {
                let mut conn = self.get_shared().await?;
                lookup.answer(
                    diesel::sql_query(PublicNameLookup::SQL)
                        .bind::<Text, _>(lookup.name().as_str())
                        .get_result::<TenantRow>(&mut *conn)
                        .await
                        .optional(),
                )?
            };
            observe::tenant_resolved(&tenant.schema_name);
            self.get_for(&tenant.schema_name).await
        })
        .await
    }

    /// The search path configuration.
    pub fn search_path(&self) -> &SearchPath {
        &self.path
    }

    /// The pool's connections: open, idle, checkouts waiting, `max_size`
    /// (see [`PoolState`]).
    pub fn state(&self) -> PoolState {
        pool_state(&self.pool)
    }

    /// How many checkouts are queued for a returned connection (with
    /// tenant affinity, while every connection is busy; see
    /// [`tenant_affinity`](AsyncSharedPoolBuilder::tenant_affinity)).
    /// Always 0 without affinity.
    pub fn queued(&self) -> usize {
        self.lot.as_ref().map_or(0, Lot::queued)
    }

    /// Connections open and idle, for the pool gauges (see `observe`).
    fn size(&self) -> (u32, u32) {
        let state = pool_state(&self.pool);
        (state.connections, state.idle)
    }

    async fn checkout(
        &self,
        tenant: Option<&SchemaName>,
        begin: Option<&'static str>,
    ) -> Result<AsyncTenantConnection, ConnectionError> {
        self.maintainer.ensure_running(&self.pool);
        let mut path = String::new();
        self.path.write(&mut path, tenant);
        let first = tenant.map_or(self.path.shared(), SchemaName::as_str);
        let mut sql = String::new();
        write_session_switch(&mut sql, &path, first);
        let deadline = Instant::now() + self.timeout;
        // Each broken connection is replaced, as `CheckoutAttempts` (the
        // sync pool's rule too) decides.
        let mut attempts = CheckoutAttempts::new(self.pool.status().max_size, tenant, first);
        let mut backoff = CONNECT_BACKOFF;
        let mut last_failure: Option<ManagerError> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeouts = managed::Timeouts {
                wait: Some(remaining),
                create: Some(remaining),
                recycle: Some(remaining),
            };
            let conn = match self.obtain(tenant, &timeouts, attempts.last()).await {
                Ok(conn) => conn,
                // No connection could be opened because the server is
                // restarting, shutting down, in recovery or unreachable: as
                // r2d2 does for the sync pool, try again until the deadline.
                // A refusal no wait will change (TLS, authentication, a
                // missing database) is reported at once, with its reason.
                Err(PoolError::Backend(
                    e @ (ManagerError::Connect(_) | ManagerError::Switch(_)),
                )) if may_pass(&e) && Instant::now() + backoff < deadline => {
                    last_failure = Some(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
                    continue;
                }
                // Out of time after connection failures: the last failure
                // says why, rather than the pool's bare timeout.
                Err(PoolError::Timeout(_)) if last_failure.is_some() => {
                    let e = PoolError::Backend(last_failure.take().expect("checked"));
                    return Err(checkout_failed(&self.pool, tenant, self.timeout, e));
                }
                Err(e) => return Err(checkout_failed(&self.pool, tenant, self.timeout, e)),
            };
            let mut conn = AsyncTenantConnection {
                conn: Some(conn),
                tenant: tenant.cloned(),
                parking: None,
            };
            // Dropped while this runs (a cancelled request), `conn` is
            // dropped with the switch in flight, and closed (see `Drop`).
            // A switch that does not answer in time waits behind an earlier
            // statement still running (see `busy_timeout`): the connection
            // is cancelled and closed, and another one taken.
            // A connection never handed out before runs nothing else: its
            // switch may take as long as the server needs.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let bound = if conn.conn.as_mut().is_some_and(handed_out_before) {
                self.busy_timeout.min(remaining)
            } else {
                remaining
            };
            let switched = tokio::time::timeout(
                bound,
                run_session_switch(&mut conn, &sql, &self.per_tenant_types, begin),
            )
            .await
            .unwrap_or_else(|_| Err(SessionRefusal::Broken(busy_message(bound))));
            let refusal = match switched {
                Ok(()) => return Ok(self.handed_out(conn)),
                Err(refusal) => refusal,
            };
            let out_of_time = Instant::now() >= deadline;
            match attempts.refused(refusal, out_of_time) {
                // The connection is fine: its implicit transaction, and
                // the `SET` with it, was rolled back.
                AfterRefusal::Fail(error) => return Err(error),
                // Broken (inside a raw `BEGIN`, say) or dead: never back to
                // the pool.
                AfterRefusal::CloseAndFail(error) => {
                    conn.discard();
                    return Err(error);
                }
                AfterRefusal::CloseAndRetry => conn.discard(),
            }
        }
    }
}

impl AsyncSharedPool {
    /// The connection a checkout runs its switch on: with tenant affinity,
    /// one parked under `tenant`, else an idle one of the pool, else one
    /// parked under another tenant, else the pool's next (see
    /// `appschema_core`'s `connection::affinity`); the `last` attempt goes
    /// to the pool whatever is parked.
    async fn obtain(
        &self,
        tenant: Option<&SchemaName>,
        timeouts: &managed::Timeouts,
        last: bool,
    ) -> Result<Object<AsyncTenantManager>, PoolError<ManagerError>> {
        let waiting = match &self.lot {
            Some(lot) if last => Some(lot.wait()),
            Some(lot) => {
                if let Some(idle) = self.idle_timeout {
                    // Back to deadpool, whose upkeep closes them when due.
                    drop(lot.release_idle(idle));
                }
                let mut tries = self.pool.status().max_size + 1;
                loop {
                    tries -= 1;
                    match lot.pick(tenant, tries > 0) {
                        Pick::Warm(conn) | Pick::Stolen(conn) => return Ok(conn),
                        // Every connection busy: wait for one handed over.
                        Pick::Queued(mut ticket) => {
                            let deadline = Instant::now() + timeouts.wait.unwrap_or(self.timeout);
                            match handed_over(&mut ticket, deadline).await {
                                Some(Handed::Conn { conn, .. }) => return Ok(conn),
                                Some(Handed::Pool(waiting)) => break Some(waiting),
                                None => return Err(PoolError::Timeout(managed::TimeoutType::Wait)),
                            }
                        }
                        // An idle connection, without waiting and without
                        // registering as waiting (returns keep being
                        // parked); taken meanwhile: pick again.
                        Pick::Idle => {
                            let now = managed::Timeouts {
                                wait: Some(Duration::ZERO),
                                ..*timeouts
                            };
                            match self.pool.timeout_get(&now).await {
                                Ok(conn) => return Ok(conn),
                                Err(PoolError::Timeout(managed::TimeoutType::Wait)) => continue,
                                Err(e) => return Err(e),
                            }
                        }
                        Pick::Pool(waiting) => break Some(waiting),
                    }
                }
            }
            None => None,
        };
        let conn = self.pool.timeout_get(timeouts).await;
        drop(waiting);
        conn
    }

    /// Records a switched checkout in the connection's log; with affinity,
    /// the connection will be parked under its tenant when dropped.
    fn handed_out(&self, mut conn: AsyncTenantConnection) -> AsyncTenantConnection {
        if let (Some(tenant), Some(object)) = (&conn.tenant, conn.conn.as_mut()) {
            if let Some(log) = PlanWatch::log_in(object.instrumentation()) {
                observe::tenant_recorded(PoolKind::Async, tenant, log.record(tenant), log.served());
            }
        }
        conn.parking = self.lot.clone().map(|lot| Parking {
            lot,
            max_lifetime: self.max_lifetime,
        });
        conn
    }
}

/// Waits for the lot to hand `ticket` a connection (or send it to the
/// pool) until `deadline` (`None`), looking at the pool again now and then
/// (see `Ticket::recheck`).
async fn handed_over(
    ticket: &mut Ticket<Object<AsyncTenantManager>>,
    deadline: Instant,
) -> Option<Handed<Object<AsyncTenantManager>>> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let slice = (deadline - now).min(Ticket::<Object<AsyncTenantManager>>::recheck_interval());
        let handed = std::future::poll_fn(|cx| ticket.poll_handed(cx));
        match tokio::time::timeout(slice, handed).await {
            Ok(handed) => return Some(handed),
            Err(_) => ticket.recheck(),
        }
    }
}

/// Where a connection goes when dropped, with tenant affinity.
pub(crate) struct Parking {
    lot: Lot<Object<AsyncTenantManager>>,
    max_lifetime: Option<Duration>,
}

/// A per-tenant async pool: an [`AsyncSharedPool`] pinned to one tenant,
/// built with [`AsyncSharedPoolBuilder::build_for`], with the same checkout.
///
/// ```no_run
/// use appschema::{SchemaName, async_pool::AsyncSharedPool};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let acme = SchemaName::new("acme").unwrap();
/// let pool = AsyncSharedPool::builder("postgres:///app").max_size(4).build_for(acme)?;
/// let conn = pool.get().await?; // on "acme", "public"
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncTenantPool {
    pool: AsyncSharedPool,
    tenant: SchemaName,
}

impl AsyncTenantPool {
    /// A connection on the tenant's `search_path`, its session reset.
    pub async fn get(&self) -> Result<AsyncTenantConnection, ConnectionError> {
        self.pool.get_for(&self.tenant).await
    }

    /// The tenant this pool serves.
    pub fn tenant(&self) -> &SchemaName {
        &self.tenant
    }

    /// [`AsyncSharedPool::get_for_unit`] for this pool's tenant.
    pub(crate) async fn get_for_unit(
        &self,
        begin: &'static str,
    ) -> Result<AsyncTenantConnection, ConnectionError> {
        self.pool.get_for_unit(Some(&self.tenant), begin).await
    }

    /// The pool's connections: open, idle, checkouts waiting, `max_size`
    /// (see [`PoolState`]).
    pub fn state(&self) -> PoolState {
        self.pool.state()
    }
}

/// A pooled async connection on a tenant's (or the shared-only)
/// `search_path`. Dereferences to [`AsyncPgConnection`]; returns to the
/// pool when dropped.
///
/// Dropped with a query in flight (the future running it was dropped: a
/// cancelled request, a timeout), it is not returned: its state is unknown
/// (the server may still be running the statement, inside a transaction
/// diesel does not know of, with results still to come), so it is taken
/// out of the pool, the server is asked to cancel the statement (a cancel
/// request, as `pg_cancel_backend` does; on a tokio runtime), and the
/// connection is closed. So is a connection on which a query found the
/// connection lost (see `appschema::connection::is_connection_lost`): it is
/// closed when dropped, never returned to the pool.
pub struct AsyncTenantConnection {
    /// `None` only once dropped or discarded.
    pub(crate) conn: Option<Object<AsyncTenantManager>>,
    pub(crate) tenant: Option<SchemaName>,
    /// `Some` once switched, with tenant affinity.
    pub(crate) parking: Option<Parking>,
}

impl Drop for AsyncTenantConnection {
    fn drop(&mut self) {
        // A query in flight leaves the connection in an unknown state; a
        // lost connection is of no use to anyone: either is closed now,
        // not left in the pool for the next checkout to find.
        let unusable = self.conn.as_mut().is_some_and(|conn| {
            let watch = conn.instrumentation();
            PlanWatch::query_in_flight(watch) || PlanWatch::saw_connection_lost_in(watch)
        });
        if unusable {
            self.discard();
            self.vacated();
            return;
        }
        let retire = self.conn.as_mut().is_some_and(|conn| {
            PlanWatch::log_in(conn.instrumentation()).is_some_and(|log| log.retire_due())
                && observe::retiring_in(conn.instrumentation(), false)
        });
        if retire {
            // Served its tenants (or marked): closed now, not at the
            // next checkout's recycle.
            drop(self.conn.take().map(Object::take));
            self.vacated();
            return;
        }
        let (Some(parking), Some(mut conn)) = (self.parking.take(), self.conn.take()) else {
            return;
        };
        // What the pool would refuse on recycle, or is due to close, goes
        // back to the pool (which closes it), never to the lot.
        let refused = std::thread::panicking()
            || conn.is_broken()
            || PlanWatch::saw_stale_plan_in(conn.instrumentation())
            || parking
                .max_lifetime
                .is_some_and(|max| Object::metrics(&conn).age() >= max);
        if refused {
            // Back to the pool (which closes it on recycle): a checkout
            // queued in the lot goes there.
            drop(conn);
            parking.lot.vacated();
        } else {
            drop(parking.lot.park(self.tenant.as_ref(), conn));
        }
    }
}

impl AsyncTenantConnection {
    /// With tenant affinity, tells the lot that this connection will not
    /// come back to it (a checkout queued there goes to the pool).
    fn vacated(&mut self) {
        if let Some(parking) = self.parking.take() {
            parking.lot.vacated();
        }
    }

    /// Takes the connection out of the pool for good: asks the server to
    /// cancel whatever it still runs for it, and closes it.
    pub(crate) fn discard(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Over the same TLS as the connection: a server that accepts
        // only TLS ignores a plaintext cancel request.
        let cancel = Object::pool(&conn).map(|pool| pool.manager().cancel(conn.cancel_token()));
        drop(Object::take(conn));
        if let (Some(cancel), Ok(runtime)) = (cancel, tokio::runtime::Handle::try_current()) {
            // Best effort: a statement that already ended ignores it.
            runtime.spawn(cancel);
        }
    }

    /// The tenant this connection was checked out for (`None` for shared work).
    pub fn tenant(&self) -> Option<&SchemaName> {
        self.tenant.as_ref()
    }
}

impl fmt::Debug for AsyncTenantConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncTenantConnection")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

const GONE: &str = "an AsyncTenantConnection holds its connection until dropped";

impl Deref for AsyncTenantConnection {
    type Target = AsyncPgConnection;
    fn deref(&self) -> &AsyncPgConnection {
        self.conn.as_ref().expect(GONE)
    }
}

impl DerefMut for AsyncTenantConnection {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        self.conn.as_mut().expect(GONE)
    }
}
