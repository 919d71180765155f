//! Transaction-scoped async mode, for PgBouncer or RDS Proxy in transaction
//! pooling: every unit of work is one transaction that starts with the
//! session reset and `SET LOCAL search_path` (the sync mode's SQL, from
//! `appschema-core`), so nothing outlives it.

use std::fmt;
use std::sync::Arc;

use appschema_core::connection::internals::PerTenantTypes;
use std::time::Duration;

use appschema_core::connection::internals::{UnitMode, UnitSwitch};
use appschema_core::connection::{ConnectionError, PoolState, SearchPath};
use appschema_core::SchemaName;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use scoped_futures::ScopedBoxFuture;

use crate::pool::{
    build_deadpool, checkout_failed, may_pass, pool_state, AsyncTenantManager, DeadPool,
    CONNECT_BACKOFF, MAX_CONNECT_BACKOFF,
};
use crate::switch::{may_serve, run_unit_once};
use crate::tls::UserConnector;
use crate::AsyncTenantConnection;
use appschema_core::connection::ManagerError;
use deadpool::managed::{self, PoolError};
use std::time::Instant;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

/// Runs `f` in a transaction whose first statements reset the session and
/// `SET LOCAL search_path` to `tenant`'s path (checked against the server's
/// report): the async twin of `appschema_core::connection::in_tenant_transaction`,
/// with the same SQL, refusals and errors. The setting ends with the
/// transaction, committed or rolled back, so it cannot reach the next client
/// of a transaction-pooling proxy.
///
/// `f` is written as diesel-async's transactions were before its 0.7
/// (`|conn| async move { … }.scope_boxed()`, [`scoped_futures`]), which
/// lets the unit borrow from its caller.
///
/// Refused with [`ConnectionError::NestedTransaction`] inside an open
/// transaction. A unit that drops a row stream of [`load_stream`] before
/// its end is cancelled and rolled back, and fails with
/// [`ConnectionError::StreamAbandoned`].
///
/// [`load_stream`]: crate::load_stream
///
/// ```no_run
/// use appschema::{SchemaName, async_pool::in_tenant_transaction, connection::{ConnectionError, SearchPath}};
/// use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
/// use scoped_futures::ScopedFutureExt;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut conn = AsyncPgConnection::establish("postgres:///app?port=6432").await?;
/// let acme = SchemaName::new("acme").unwrap();
/// let n = in_tenant_transaction(&mut conn, &acme, &SearchPath::new(), |conn| {
///     async move {
///         Ok::<_, ConnectionError>(diesel::sql_query("DELETE FROM carts").execute(conn).await?)
///     }
///     .scope_boxed()
/// })
/// .await?;
/// # Ok(())
/// # }
/// ```
pub async fn in_tenant_transaction<'a, T, E, F>(
    conn: &mut AsyncPgConnection,
    tenant: &SchemaName,
    path: &SearchPath,
    f: F,
) -> Result<T, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    scoped_transaction(conn, Some(tenant), path, f).await
}

/// Like [`in_tenant_transaction`], on the shared-only path (no tenant).
pub async fn in_shared_transaction<'a, T, E, F>(
    conn: &mut AsyncPgConnection,
    path: &SearchPath,
    f: F,
) -> Result<T, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    scoped_transaction(conn, None, path, f).await
}

async fn scoped_transaction<'a, T, E, F>(
    conn: &mut AsyncPgConnection,
    tenant: Option<&SchemaName>,
    path: &SearchPath,
    f: F,
) -> Result<T, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    appschema_core::observe::unit_async(tenant, unit(conn, tenant, path, f)).await
}

async fn unit<'a, T, E, F>(
    conn: &mut AsyncPgConnection,
    tenant: Option<&SchemaName>,
    path: &SearchPath,
    f: F,
) -> Result<T, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    let depth = AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .map_err(E::from)?;
    if depth.is_some() {
        let first = tenant.map_or(path.shared(), SchemaName::as_str);
        return Err(ConnectionError::NestedTransaction {
            schema: first.to_string(),
        }
        .into());
    }
    let switch = UnitSwitch::new(path, tenant, false);
    // The unit's rules, one implementation with the sync units' (see
    // `appschema_core`'s `protocol::Unit`).
    run_unit_once(conn, Some(&switch), UnitMode::Once, false, &mut once(f))
        .await
        .into_result()
}

/// The work of a unit that runs it once, as the driver of `Unit` takes it.
fn once<'a, T, E, F>(
    f: F,
) -> impl for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>> + Send + 'a
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: 'a,
    T: 'a,
{
    let mut f = Some(f);
    move |conn| (f.take().expect("the unit's work runs once"))(conn)
}

/// Builds an [`AsyncTransactionScopedPool`]. Every setter documents its
/// default. Its `Debug` shows the URL with the password replaced by `***`.
#[derive(Clone)]
pub struct AsyncTransactionScopedPoolBuilder {
    url: String,
    path: SearchPath,
    max_size: u32,
    connection_timeout: Duration,
    statement_cache: bool,
    tls: Option<UserConnector>,
    per_tenant_types: Option<bool>,
}

impl std::fmt::Debug for AsyncTransactionScopedPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTransactionScopedPoolBuilder")
            .field("url", &appschema_core::redact_url(&self.url))
            .field("path", &self.path)
            .field("max_size", &self.max_size)
            .field("connection_timeout", &self.connection_timeout)
            .field("statement_cache", &self.statement_cache)
            .field("per_tenant_types", &self.per_tenant_types)
            .finish()
    }
}

impl AsyncTransactionScopedPoolBuilder {
    /// The schemas after the tenant's. Default: [`SearchPath::new`] (`public`).
    pub fn search_path(mut self, path: SearchPath) -> Self {
        self.path = path;
        self
    }

    /// Most client connections open at once. Default: 10.
    pub fn max_size(mut self, n: u32) -> Self {
        self.max_size = n;
        self
    }

    /// How long a checkout waits. Default: 30 s.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Whether diesel-async keeps prepared statements. Default: `false`,
    /// for the reason given on the sync
    /// `TransactionScopedPoolBuilder::prepared_statement_cache`.
    pub fn prepared_statement_cache(mut self, on: bool) -> Self {
        self.statement_cache = on;
        self
    }

    /// The TLS connector for the pool's connections and cancel requests;
    /// as [`AsyncSharedPoolBuilder::tls`](crate::AsyncSharedPoolBuilder::tls).
    /// Default: none (with the `tls-rustls` feature, the built-in one).
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

    /// Whether the application binds custom types that exist once per
    /// tenant schema, declared without a schema. Default: found out from
    /// the database, as `AsyncSharedPoolBuilder::per_tenant_types` says.
    /// When on, a unit for another tenant than its connection's last unit
    /// gets a new connection, for the reason given there.
    pub fn per_tenant_types(mut self, on: bool) -> Self {
        self.per_tenant_types = Some(on);
        self
    }

    /// Builds the pool. Opens no connection: the first units do. Fails
    /// with [`ConnectionError::Tls`] when the URL's TLS settings cannot be
    /// honoured (see [`tls`](Self::tls)).
    pub fn build(self) -> Result<AsyncTransactionScopedPool, ConnectionError> {
        let manager =
            AsyncTenantManager::plain(&self.url, self.tls.as_ref(), self.statement_cache)?;
        Ok(AsyncTransactionScopedPool {
            pool: build_deadpool(manager, self.max_size, self.connection_timeout)?,
            path: self.path.clone(),
            timeout: self.connection_timeout,
            per_tenant_types: Arc::new(PerTenantTypes::new(self.per_tenant_types, &self.path)),
        })
    }
}

/// An async pool whose only way in is a unit of work: one transaction
/// beginning with the session reset and `SET LOCAL search_path`. Safe behind
/// PgBouncer or RDS Proxy in transaction pooling. Like [`AsyncSharedPool`],
/// it never reuses a connection whose unit was cancelled mid-query.
///
/// [`AsyncSharedPool`]: crate::AsyncSharedPool
///
/// ```no_run
/// use appschema::{SchemaName, async_pool::AsyncTransactionScopedPool, connection::ConnectionError};
/// use diesel_async::RunQueryDsl;
/// use scoped_futures::ScopedFutureExt;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = AsyncTransactionScopedPool::builder("postgres://app@pgbouncer:6432/app").build()?;
/// let acme = SchemaName::new("acme").unwrap();
/// pool.transaction_for(&acme, |conn| {
///     async move {
///         diesel::sql_query("UPDATE orders SET total = 0").execute(conn).await?;
///         Ok::<_, ConnectionError>(())
///     }
///     .scope_boxed()
/// })
/// .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AsyncTransactionScopedPool {
    pool: DeadPool,
    path: SearchPath,
    timeout: Duration,
    per_tenant_types: Arc<PerTenantTypes>,
}

impl fmt::Debug for AsyncTransactionScopedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncTransactionScopedPool")
            .field("path", &self.path)
            .field("state", &pool_state(&self.pool))
            .finish_non_exhaustive()
    }
}

impl AsyncTransactionScopedPool {
    /// A builder for a pool connecting to `url` (usually the proxy's).
    pub fn builder(url: impl Into<String>) -> AsyncTransactionScopedPoolBuilder {
        AsyncTransactionScopedPoolBuilder {
            url: url.into(),
            path: SearchPath::new(),
            max_size: 10,
            connection_timeout: Duration::from_secs(30),
            statement_cache: false,
            tls: None,
            per_tenant_types: None,
        }
    }

    /// Runs `f` as one transaction on `tenant`'s path.
    pub async fn transaction_for<'a, T, E, F>(&self, tenant: &SchemaName, f: F) -> Result<T, E>
    where
        F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        let mut conn = self.get(Some(tenant)).await?;
        in_tenant_transaction(&mut conn, tenant, &self.path, f).await
    }

    /// Runs `f` as one transaction on the shared-only path.
    pub async fn transaction_shared<'a, T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        let mut conn = self.get(None).await?;
        in_shared_transaction(&mut conn, &self.path, f).await
    }

    /// The search path configuration.
    pub fn search_path(&self) -> &SearchPath {
        &self.path
    }

    /// The pool's connections: open, idle, units waiting, `max_size`
    /// (see [`PoolState`]).
    pub fn state(&self) -> PoolState {
        pool_state(&self.pool)
    }

    /// A connection (closed rather than reused if the unit is dropped
    /// mid-query: see [`AsyncTenantConnection`]).
    pub(crate) async fn get(
        &self,
        tenant: Option<&SchemaName>,
    ) -> Result<AsyncTenantConnection, ConnectionError> {
        let path = match tenant {
            Some(t) => self.path.for_tenant(t),
            None => self.path.shared_only(),
        };
        let deadline = Instant::now() + self.timeout;
        let mut backoff = CONNECT_BACKOFF;
        let mut last_failure: Option<ManagerError> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeouts = managed::Timeouts {
                wait: Some(remaining),
                create: Some(remaining),
                recycle: Some(remaining),
            };
            let conn = match self.pool.timeout_get(&timeouts).await {
                Ok(conn) => conn,
                // As on `AsyncSharedPool`: a server restarting (behind
                // PgBouncer: `server login has been failing`) is waited
                // for until the deadline; a refusal no wait will change is
                // reported at once.
                Err(PoolError::Backend(e @ ManagerError::Connect(_)))
                    if may_pass(&e) && Instant::now() + backoff < deadline =>
                {
                    last_failure = Some(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
                    continue;
                }
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
            // Ends: a connection the pool opens has served no path.
            if !may_serve(&mut conn, &path, &self.per_tenant_types).await {
                conn.discard();
                continue;
            }
            return Ok(conn);
        }
    }
}
