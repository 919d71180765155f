//! Transaction-scoped mode, for PgBouncer or RDS Proxy in transaction
//! pooling: every unit of work is one transaction that starts with
//! `SET LOCAL search_path`, so nothing outlives it.

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::PgConnection;

use super::drive::run_unit_once;
use super::error::ConnectionError;
use super::protocol::UnitMode;
use super::retry::{run_unit, UnitSwitch};
use super::scoped_manager::ScopedManager;
use super::search_path::SearchPath;
use super::state::PoolState;
use super::types::PerTenantTypes;
use crate::name::SchemaName;

/// Runs `f` in a transaction whose first statement is
/// `SET LOCAL search_path` to `tenant`'s path (checked against the server's
/// report). The setting ends with the transaction, committed or rolled back,
/// so it cannot reach the next client of a transaction-pooling proxy.
///
/// Refused with [`ConnectionError::NestedTransaction`] inside an open
/// transaction: there the `SET LOCAL` would outlive `f` until the outer
/// transaction ends.
///
/// ```no_run
/// use appschema::{SchemaName, connection::{in_tenant_transaction, SearchPath, ConnectionError}};
/// use diesel::prelude::*;
/// let mut conn = PgConnection::establish("postgres:///app?port=6432")?;
/// let acme = SchemaName::new("acme").unwrap();
/// let n = in_tenant_transaction(&mut conn, &acme, &SearchPath::new(), |conn| {
///     Ok::<_, ConnectionError>(diesel::sql_query("DELETE FROM carts").execute(conn)?)
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn in_tenant_transaction<T, E, F>(
    conn: &mut PgConnection,
    tenant: &SchemaName,
    path: &SearchPath,
    f: F,
) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    scoped_transaction(conn, Some(tenant), path, f)
}

/// Like [`in_tenant_transaction`], on the shared-only path (no tenant).
pub fn in_shared_transaction<T, E, F>(
    conn: &mut PgConnection,
    path: &SearchPath,
    f: F,
) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    scoped_transaction(conn, None, path, f)
}

fn scoped_transaction<T, E, F>(
    conn: &mut PgConnection,
    tenant: Option<&SchemaName>,
    path: &SearchPath,
    f: F,
) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    let _unit = crate::observe::unit(tenant);
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
    // The unit's rules, one implementation with the async pools' (see
    // `protocol::Unit`); custom types the connection's client resolved on
    // another path are forgotten first (see `protocol::PathChange`).
    let mut f = Some(f);
    let work = |conn: &mut PgConnection| (f.take().expect("the unit's work runs once"))(conn);
    run_unit_once(conn, Some(&switch), UnitMode::Once, false, work).into_result()
}

/// Builds a [`TransactionScopedPool`]. Every setter documents its default.
/// Its `Debug` shows the URL with the password replaced by `***`.
#[derive(Clone)]
pub struct TransactionScopedPoolBuilder {
    url: String,
    path: SearchPath,
    max_size: u32,
    connection_timeout: Duration,
    statement_cache: bool,
    per_tenant_types: Option<bool>,
}

impl std::fmt::Debug for TransactionScopedPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionScopedPoolBuilder")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("path", &self.path)
            .field("max_size", &self.max_size)
            .field("connection_timeout", &self.connection_timeout)
            .field("statement_cache", &self.statement_cache)
            .field("per_tenant_types", &self.per_tenant_types)
            .finish()
    }
}

impl TransactionScopedPoolBuilder {
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

    /// Whether diesel keeps named prepared statements. Default: `false`.
    /// A transaction-pooling proxy runs each transaction on whichever server
    /// connection is free, where a statement prepared in an earlier
    /// transaction does not exist — or, worse, another client's statement of
    /// the same name does. Turn it on only for a direct connection or a
    /// proxy that tracks prepared statements itself (PgBouncer 1.21+ with
    /// `max_prepared_statements` > 0).
    pub fn prepared_statement_cache(mut self, on: bool) -> Self {
        self.statement_cache = on;
        self
    }

    /// Whether the database has custom types that exist once per tenant
    /// schema, which matters only with the
    /// [`prepared_statement_cache`](Self::prepared_statement_cache) on: a
    /// unit for another tenant than the connection's last one then forgets
    /// the connection's prepared statements (see
    /// `SharedPoolBuilder::per_tenant_types`). Default: found out from the
    /// database.
    pub fn per_tenant_types(mut self, on: bool) -> Self {
        self.per_tenant_types = Some(on);
        self
    }

    /// Builds the pool. Opens no connection: the first units do, as on
    /// the async `AsyncTransactionScopedPool`.
    pub fn build(self) -> Result<TransactionScopedPool, ConnectionError> {
        let manager = ScopedManager {
            url: self.url,
            statement_cache: self.statement_cache,
            per_tenant_types: Arc::new(PerTenantTypes::new(self.per_tenant_types, &self.path)),
        };
        let pool = r2d2::Pool::builder()
            .max_size(self.max_size)
            // Opened by the units that need them (r2d2's default opens
            // `max_size` in `build`).
            .min_idle(Some(0))
            .connection_timeout(self.connection_timeout)
            .build(manager)
            .map_err(|e| ConnectionError::DatabaseDown {
                target: "shared work".to_string(),
                timeout: self.connection_timeout,
                message: e.to_string(),
            })?;
        Ok(TransactionScopedPool {
            pool,
            path: self.path,
            timeout: self.connection_timeout,
        })
    }
}

/// A pool whose only way in is a unit of work: one transaction beginning
/// with `SET LOCAL search_path`. Safe behind PgBouncer or RDS Proxy in
/// transaction pooling, where a session-level `SET` would reach other
/// clients.
///
/// ```no_run
/// use appschema::{SchemaName, connection::{TransactionScopedPool, ConnectionError}};
/// use diesel::prelude::*;
/// let pool = TransactionScopedPool::builder("postgres://app@pgbouncer:6432/app").build()?;
/// let acme = SchemaName::new("acme").unwrap();
/// pool.transaction_for(&acme, |conn| {
///     diesel::sql_query("UPDATE orders SET total = 0").execute(conn)?;
///     Ok::<_, ConnectionError>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TransactionScopedPool {
    pool: r2d2::Pool<ScopedManager>,
    path: SearchPath,
    timeout: Duration,
}

impl TransactionScopedPool {
    /// A builder for a pool connecting to `url` (usually the proxy's).
    pub fn builder(url: impl Into<String>) -> TransactionScopedPoolBuilder {
        TransactionScopedPoolBuilder {
            url: url.into(),
            path: SearchPath::new(),
            max_size: 10,
            connection_timeout: Duration::from_secs(30),
            statement_cache: false,
            per_tenant_types: None,
        }
    }

    /// Runs `f` as one transaction on `tenant`'s path.
    pub fn transaction_for<T, E, F>(&self, tenant: &SchemaName, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        let mut conn = self.get(Some(tenant))?;
        in_tenant_transaction(&mut conn, tenant, &self.path, f)
    }

    /// Runs `f` as one transaction on the shared-only path.
    pub fn transaction_shared<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        let mut conn = self.get(None)?;
        in_shared_transaction(&mut conn, &self.path, f)
    }

    /// Runs `work` as one transaction on `tenant`'s path, as
    /// [`transaction_for`](Self::transaction_for), and runs it **once more,
    /// on a fresh connection**, when the connection is lost (see
    /// [`is_connection_lost`](super::is_connection_lost): a failover, a
    /// restart, `pg_terminate_backend`, PgBouncer losing its server
    /// connection) before the transaction's `COMMIT` was sent: nothing of
    /// the first run can have committed then. The rules are
    /// [`SharedPool::run_retrying`](super::SharedPool::run_retrying)'s: not
    /// retried are a loss while `COMMIT` is on its way, any other failure, a
    /// second loss, and a checkout that fails. `work` may run twice, so it
    /// must do nothing but database work on `conn`.
    ///
    /// ```no_run
    /// use appschema::{SchemaName, connection::{TransactionScopedPool, ConnectionError}};
    /// use diesel::prelude::*;
    /// let pool = TransactionScopedPool::builder("postgres://app@pgbouncer:6432/app").build()?;
    /// let acme = SchemaName::new("acme").unwrap();
    /// let n = pool.run_retrying(&acme, |conn| {
    ///     Ok::<_, ConnectionError>(
    ///         diesel::sql_query("UPDATE carts SET expired = true WHERE age > 30").execute(conn)?,
    ///     )
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_retrying<T, E, F>(&self, tenant: &SchemaName, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        self.run_unit(Some(tenant), false, work)
    }

    /// [`run_retrying`](Self::run_retrying) for work that only reads: its
    /// transaction is `READ ONLY`, so it is run once more on a fresh
    /// connection whenever the connection is lost, while committing too.
    ///
    /// ```no_run
    /// use appschema::{SchemaName, connection::{TransactionScopedPool, ConnectionError}};
    /// use diesel::prelude::*;
    /// use diesel::sql_types::BigInt;
    /// let pool = TransactionScopedPool::builder("postgres://app@pgbouncer:6432/app").build()?;
    /// let acme = SchemaName::new("acme").unwrap();
    /// let n: i64 = pool.read_retrying(&acme, |conn| {
    ///     diesel::select(diesel::dsl::sql::<BigInt>("(SELECT count(*) FROM orders)"))
    ///         .get_result(conn)
    ///         .map_err(ConnectionError::from)
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_retrying<T, E, F>(&self, tenant: &SchemaName, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        self.run_unit(Some(tenant), true, work)
    }

    /// [`run_retrying`](Self::run_retrying) on the shared-only path.
    pub fn run_shared_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        self.run_unit(None, false, work)
    }

    /// [`read_retrying`](Self::read_retrying) on the shared-only path.
    pub fn read_shared_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        self.run_unit(None, true, work)
    }

    /// The search path configuration.
    pub fn search_path(&self) -> &SearchPath {
        &self.path
    }

    /// The pool's connections: open, idle, `max_size` (see [`PoolState`]).
    pub fn state(&self) -> PoolState {
        PoolState::of_r2d2(&self.pool)
    }

    fn run_unit<T, E, F>(
        &self,
        tenant: Option<&SchemaName>,
        read_only: bool,
        work: F,
    ) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        let switch = UnitSwitch::new(&self.path, tenant, read_only);
        run_unit(|| self.get(tenant), read_only, Some(&switch), false, work)
    }

    fn get(
        &self,
        tenant: Option<&SchemaName>,
    ) -> Result<r2d2::PooledConnection<ScopedManager>, ConnectionError> {
        crate::observe::checkout(&self.pool, tenant, || {
            self.pool
                .get()
                .map_err(|e| ConnectionError::checkout_failed(&self.pool, tenant, self.timeout, e))
        })
    }
}
