//! Async units of work that survive a lost connection: the async twin of
//! `SharedPool::run_retrying` (appschema-core). The rules (what is run
//! again, when) are the protocol's `Unit` and `UnitRetry` steps, the same
//! the sync pools drive; the `*_retrying` methods of every async pool are
//! one generic implementation ([`run_retrying`]), given to each pool by
//! [`retrying_methods!`].

use std::future::Future;

use appschema_core::connection::internals::{begin_sql, Retry, UnitMode, UnitRetry, UnitSwitch};
use appschema_core::connection::ConnectionError;
use appschema_core::SchemaName;
use diesel_async::AsyncPgConnection;
use scoped_futures::ScopedBoxFuture;

use crate::switch::run_unit_once;
use crate::transaction::AsyncTransactionScopedPool;
use crate::{AsyncSharedPool, AsyncTenantConnection, AsyncTenantPool};

/// Where a retried unit takes its connections, and the switch it runs
/// inside its transaction (transaction-scoped pools only).
pub(crate) trait UnitPool: Sync {
    /// Whether [`checkout`](UnitPool::checkout) begins the unit's
    /// transaction (`BEGIN`, or `BEGIN READ ONLY` for `read_only` work) in
    /// its own message, so the unit sends no `BEGIN` (`Unit::begun_at_checkout`).
    const BEGINS_AT_CHECKOUT: bool;

    /// A connection for a unit of `tenant` (`None`: shared work) that only
    /// reads when `read_only`.
    fn checkout<'p>(
        &'p self,
        tenant: Option<&'p SchemaName>,
        read_only: bool,
    ) -> impl Future<Output = Result<AsyncTenantConnection, ConnectionError>> + Send + 'p;

    /// The switch the unit runs first inside its transaction, if any.
    fn unit_switch(&self, tenant: Option<&SchemaName>, read_only: bool) -> Option<UnitSwitch>;
}

impl UnitPool for AsyncSharedPool {
    const BEGINS_AT_CHECKOUT: bool = true;

    /// The unit's `BEGIN` travels in the checkout's message.
    fn checkout<'p>(
        &'p self,
        tenant: Option<&'p SchemaName>,
        read_only: bool,
    ) -> impl Future<Output = Result<AsyncTenantConnection, ConnectionError>> + Send + 'p {
        self.get_for_unit(tenant, begin_sql(read_only))
    }

    fn unit_switch(&self, _: Option<&SchemaName>, _: bool) -> Option<UnitSwitch> {
        None
    }
}

impl UnitPool for AsyncTenantPool {
    const BEGINS_AT_CHECKOUT: bool = true;

    /// Always this pool's tenant; the unit's `BEGIN` travels in the
    /// checkout's message.
    fn checkout<'p>(
        &'p self,
        _: Option<&'p SchemaName>,
        read_only: bool,
    ) -> impl Future<Output = Result<AsyncTenantConnection, ConnectionError>> + Send + 'p {
        self.get_for_unit(begin_sql(read_only))
    }

    fn unit_switch(&self, _: Option<&SchemaName>, _: bool) -> Option<UnitSwitch> {
        None
    }
}

impl UnitPool for AsyncTransactionScopedPool {
    /// Its unit begins, then switches, inside its own transaction.
    const BEGINS_AT_CHECKOUT: bool = false;

    fn checkout<'p>(
        &'p self,
        tenant: Option<&'p SchemaName>,
        _: bool,
    ) -> impl Future<Output = Result<AsyncTenantConnection, ConnectionError>> + Send + 'p {
        self.get(tenant)
    }

    fn unit_switch(&self, tenant: Option<&SchemaName>, read_only: bool) -> Option<UnitSwitch> {
        Some(UnitSwitch::new(self.search_path(), tenant, read_only))
    }
}

/// Runs `work` in a transaction on a connection of `pool` (after the
/// pool's unit switch, if any), as the `Unit` step says; once more on a
/// fresh checkout when the connection was lost before anything committed,
/// as `UnitRetry` says (a lost connection is closed, never returned to the
/// pool).
pub(crate) async fn run_retrying<'a, P, T, E, F>(
    pool: &P,
    tenant: Option<&SchemaName>,
    read_only: bool,
    mut work: F,
) -> Result<T, E>
where
    P: UnitPool,
    F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    let switch = pool.unit_switch(tenant, read_only);
    let mut retry = UnitRetry::new();
    loop {
        let mut conn = pool.checkout(tenant, read_only).await?;
        let mode = UnitMode::Retrying { read_only };
        let begun = P::BEGINS_AT_CHECKOUT;
        let end = run_unit_once(&mut conn, switch.as_ref(), mode, begun, &mut work).await;
        match retry.after(end) {
            Retry::Return(result) => return result,
            Retry::CloseAndFail(error) => {
                conn.discard();
                return Err(error);
            }
            Retry::CloseAndRunAgain => conn.discard(),
        }
    }
}

/// The public `*_retrying` methods of a pool, each a call of
/// [`run_retrying`]: `fn name(tenant) read_only: bool;` for a method that
/// takes the tenant, `fn name() read_only: bool;` for one that does not
/// (shared work, or the pool's own tenant). Their bounds are written here
/// once.
macro_rules! retrying_methods {
    (@tenant $tenant:ident) => {
        Some($tenant)
    };
    (@tenant) => {
        None
    };
    (impl $pool:ty { $($(#[$doc:meta])* fn $name:ident($($tenant:ident)?) read_only: $read_only:literal;)* }) => {
        impl $pool {
            $(
                $(#[$doc])*
                pub async fn $name<'a, T, E, F>(&self, $($tenant: &SchemaName,)? work: F) -> Result<T, E>
                where
                    F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
                        + Send
                        + 'a,
                    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
                    T: Send + 'a,
                {
                    run_retrying(self, retrying_methods!(@tenant $($tenant)?), $read_only, work).await
                }
            )*
        }
    };
}

retrying_methods! {
    impl AsyncSharedPool {
        /// Runs `work` on a connection on `tenant`'s `search_path`, in one
        /// transaction, and runs it **once more, on a fresh connection**, when
        /// the connection is lost
        /// ([`is_connection_lost`](appschema_core::connection::is_connection_lost):
        /// a failover, a restart, `pg_terminate_backend`) before the
        /// transaction's `COMMIT` was sent: nothing of the first run can have
        /// committed then. The async twin of `SharedPool::run_retrying`, with
        /// the same rule.
        ///
        /// Not retried: a loss while `COMMIT` is on its way (the server may
        /// have committed; the error is returned), any other failure of
        /// `work`, a second loss, and a checkout that fails (it already waited
        /// up to the pool's `connection_timeout`, replacing dead connections
        /// and retrying to connect). For read-only work prefer
        /// [`read_retrying`](AsyncSharedPool::read_retrying), also retried when
        /// lost while committing.
        ///
        /// `work` may run twice: it must do nothing but database work on
        /// `conn`, and must not commit or roll back itself.
        ///
        /// ```no_run
        /// use appschema::{SchemaName, ConnectionError, async_pool::AsyncSharedPool};
        /// use appschema::async_pool::scoped_futures::ScopedFutureExt;
        /// use diesel_async::RunQueryDsl;
        ///
        /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
        /// let pool = AsyncSharedPool::builder("postgres:///app").build()?;
        /// let acme = SchemaName::new("acme").unwrap();
        /// let n = pool
        ///     .run_retrying(&acme, |conn| {
        ///         async move {
        ///             let sql = "UPDATE carts SET expired = true WHERE age > 30";
        ///             Ok::<_, ConnectionError>(diesel::sql_query(sql).execute(conn).await?)
        ///         }
        ///         .scope_boxed()
        ///     })
        ///     .await?;
        /// # Ok(())
        /// # }
        /// ```
        fn run_retrying(tenant) read_only: false;
        /// [`run_retrying`](AsyncSharedPool::run_retrying) for work that only
        /// reads: its transaction is `READ ONLY`, so it is run once more on a
        /// fresh connection whenever the connection is lost, while committing
        /// too. What a handler answering `GET` wants.
        ///
        /// ```no_run
        /// use appschema::{SchemaName, ConnectionError, async_pool::AsyncSharedPool};
        /// use appschema::async_pool::scoped_futures::ScopedFutureExt;
        /// use diesel::sql_types::BigInt;
        /// use diesel_async::RunQueryDsl;
        ///
        /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
        /// let pool = AsyncSharedPool::builder("postgres:///app").build()?;
        /// let acme = SchemaName::new("acme").unwrap();
        /// let n: i64 = pool
        ///     .read_retrying(&acme, |conn| {
        ///         async move {
        ///             let count = diesel::dsl::sql::<BigInt>("(SELECT count(*) FROM orders)");
        ///             Ok::<_, ConnectionError>(diesel::select(count).get_result(conn).await?)
        ///         }
        ///         .scope_boxed()
        ///     })
        ///     .await?;
        /// # Ok(())
        /// # }
        /// ```
        fn read_retrying(tenant) read_only: true;
        /// [`run_retrying`](AsyncSharedPool::run_retrying) on the shared-only
        /// path (no tenant).
        fn run_shared_retrying() read_only: false;
        /// [`read_retrying`](AsyncSharedPool::read_retrying) on the shared-only
        /// path (no tenant).
        fn read_shared_retrying() read_only: true;
    }
}

retrying_methods! {
    impl AsyncTenantPool {
        /// [`AsyncSharedPool::run_retrying`] for this pool's tenant.
        fn run_retrying() read_only: false;
        /// [`AsyncSharedPool::read_retrying`] for this pool's tenant.
        fn read_retrying() read_only: true;
    }
}

retrying_methods! {
    impl AsyncTransactionScopedPool {
        /// Runs `work` as one transaction on `tenant`'s path, as
        /// [`transaction_for`](Self::transaction_for), and runs it **once more,
        /// on a fresh connection**, when the connection is lost (a failover, a
        /// restart, `pg_terminate_backend`, PgBouncer losing its server
        /// connection) before the transaction's `COMMIT` was sent. The rules
        /// are [`AsyncSharedPool::run_retrying`]'s; `work` may run twice.
        ///
        /// ```no_run
        /// use appschema::{SchemaName, ConnectionError, async_pool::AsyncTransactionScopedPool};
        /// use appschema::async_pool::scoped_futures::ScopedFutureExt;
        /// use diesel_async::RunQueryDsl;
        ///
        /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
        /// let pool = AsyncTransactionScopedPool::builder("postgres://app@pgbouncer:6432/app").build()?;
        /// let acme = SchemaName::new("acme").unwrap();
        /// let n = pool
        ///     .run_retrying(&acme, |conn| {
        ///         async move {
        ///             let sql = "UPDATE carts SET expired = true WHERE age > 30";
        ///             Ok::<_, ConnectionError>(diesel::sql_query(sql).execute(conn).await?)
        ///         }
        ///         .scope_boxed()
        ///     })
        ///     .await?;
        /// # Ok(())
        /// # }
        /// ```
        fn run_retrying(tenant) read_only: false;
        /// [`run_retrying`](Self::run_retrying) for work that only reads: its
        /// transaction is `READ ONLY`, so it is run once more on a fresh
        /// connection whenever the connection is lost, while committing too.
        fn read_retrying(tenant) read_only: true;
        /// [`run_retrying`](Self::run_retrying) on the shared-only path.
        fn run_shared_retrying() read_only: false;
        /// [`read_retrying`](Self::read_retrying) on the shared-only path.
        fn read_shared_retrying() read_only: true;
    }
}
