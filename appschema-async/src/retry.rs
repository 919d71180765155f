//! Async units of work that survive a lost connection: the async twin of
//! `SharedPool::run_retrying` (appschema-core), with the same rule for what
//! is run again.

use std::sync::atomic::Ordering;

use appschema_core::connection::internals::{
    begin_sql, classify, describe_target, PlanWatch, UnitSwitch, DIRTY_UNLISTEN,
};
use appschema_core::connection::{is_connection_lost, ConnectionError};
use appschema_core::SchemaName;
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use scoped_futures::ScopedBoxFuture;

use crate::switch::drain_notifications;
use crate::transaction::AsyncTransactionScopedPool;
use crate::{AsyncSharedPool, AsyncTenantConnection, AsyncTenantPool};

/// How a unit ended on one connection.
enum Attempt<T, E> {
    Done(Result<T, E>),
    /// Lost before anything could have committed: may run again; the error
    /// to return if it does not.
    Lost(E),
}

async fn attempt<'a, T, E, F>(
    conn: &mut AsyncPgConnection,
    read_only: bool,
    switch: Option<&UnitSwitch>,
    work: &mut F,
) -> Attempt<T, E>
where
    F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    let mut first_round = true;
    loop {
        // A unit with a switch is made read only by its switch.
        let begin = begin_sql(read_only && switch.is_none());
        // The session pools' checkout for a unit sent its `BEGIN` in the
        // checkout's own message (`AsyncSharedPool::get_for_unit`).
        let begun = first_round
            && switch.is_none()
            && AnsiTransactionManager::transaction_manager_status_mut(conn)
                .transaction_depth()
                .is_ok_and(|depth| depth.is_some());
        let began = match begun {
            true => Ok(()),
            false => AnsiTransactionManager::begin_transaction_sql(conn, begin).await,
        };
        if let Err(error) = began {
            return if is_connection_lost(&error) {
                Attempt::Lost(error.into())
            } else {
                Attempt::Done(Err(error.into()))
            };
        }
        if let Some(switch) = switch {
            match classify(conn.batch_execute(switch.sql()).await) {
                Ok(()) => drain_notifications(conn),
                Err(refusal) => {
                    // The rules of the sync twin (`appschema_core`'s
                    // `connection::retry`): nothing ran yet.
                    let refused = switch.refused::<E>(refusal, first_round);
                    let rollback = AnsiTransactionManager::rollback_transaction(conn).await;
                    let rollback_lost = rollback.as_ref().is_err_and(is_connection_lost);
                    match refused {
                        Some((error, lost)) if lost || rollback_lost => {
                            return Attempt::Lost(error)
                        }
                        Some((error, _)) => return Attempt::Done(Err(error)),
                        None => {
                            let unlisten = match rollback {
                                Ok(()) => conn.batch_execute(DIRTY_UNLISTEN).await,
                                Err(error) => Err(error),
                            };
                            match unlisten {
                                Ok(()) => {
                                    first_round = false;
                                    continue;
                                }
                                Err(error) if is_connection_lost(&error) => {
                                    return Attempt::Lost(error.into())
                                }
                                Err(error) => return Attempt::Done(Err(error.into())),
                            }
                        }
                    }
                }
            }
        }
        let outcome = work(conn).await;
        if switch.is_some() {
            if let Some(open) = PlanWatch::stream_counter(conn.instrumentation())
                .filter(|open| open.load(Ordering::Acquire) > 0)
            {
                // A guarded row stream dropped before its end, as in
                // `in_tenant_transaction`: never committed, cancelled and
                // rolled back.
                let _ = conn
                    .cancel_token()
                    .cancel_query(tokio_postgres::NoTls)
                    .await;
                let _ = conn.batch_execute("SELECT 1").await;
                open.store(0, Ordering::Release);
                let _ = AnsiTransactionManager::rollback_transaction(conn).await;
                return Attempt::Done(Err(ConnectionError::StreamAbandoned {
                    target: describe_target(switch.and_then(UnitSwitch::tenant)),
                }
                .into()));
            }
        }
        return match outcome {
            Ok(value) => match AnsiTransactionManager::commit_transaction(conn).await {
                Ok(()) => Attempt::Done(Ok(value)),
                // Lost while committing: the server may have committed. Only a
                // read-only unit can be run again.
                Err(error) if read_only && is_connection_lost(&error) => {
                    Attempt::Lost(error.into())
                }
                Err(error) => Attempt::Done(Err(error.into())),
            },
            Err(error) => match AnsiTransactionManager::rollback_transaction(conn).await {
                Ok(()) => Attempt::Done(Err(error)),
                // The rollback found the connection gone: nothing committed.
                Err(rollback) if is_connection_lost(&rollback) => Attempt::Lost(error),
                Err(_) => Attempt::Done(Err(error)),
            },
        };
    }
}

/// Runs `work` in a transaction on a connection from `checkout` (after
/// `switch` on a transaction-scoped pool); once more on a fresh checkout
/// when the connection was lost before anything committed (the lost
/// connection is closed, never returned to the pool).
async fn run_unit<'a, T, E, F, C, Fut>(
    checkout: C,
    read_only: bool,
    switch: Option<&UnitSwitch>,
    mut work: F,
) -> Result<T, E>
where
    C: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<AsyncTenantConnection, ConnectionError>>,
    F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    let mut conn = checkout().await?;
    match attempt(&mut conn, read_only, switch, &mut work).await {
        Attempt::Done(result) => result,
        Attempt::Lost(_) => {
            conn.discard();
            let mut conn = checkout().await?;
            match attempt(&mut conn, read_only, switch, &mut work).await {
                Attempt::Done(result) => result,
                Attempt::Lost(error) => {
                    conn.discard();
                    Err(error)
                }
            }
        }
    }
}

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
    pub async fn run_retrying<'a, T, E, F>(&self, tenant: &SchemaName, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        run_unit(
            || self.get_for_unit(Some(tenant), begin_sql(false)),
            false,
            None,
            work,
        )
        .await
    }

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
    pub async fn read_retrying<'a, T, E, F>(&self, tenant: &SchemaName, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        run_unit(
            || self.get_for_unit(Some(tenant), begin_sql(true)),
            true,
            None,
            work,
        )
        .await
    }

    /// [`run_retrying`](AsyncSharedPool::run_retrying) on the shared-only
    /// path (no tenant).
    pub async fn run_shared_retrying<'a, T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        run_unit(
            || self.get_for_unit(None, begin_sql(false)),
            false,
            None,
            work,
        )
        .await
    }

    /// [`read_retrying`](AsyncSharedPool::read_retrying) on the shared-only
    /// path (no tenant).
    pub async fn read_shared_retrying<'a, T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        run_unit(
            || self.get_for_unit(None, begin_sql(true)),
            true,
            None,
            work,
        )
        .await
    }
}

impl AsyncTenantPool {
    /// [`AsyncSharedPool::run_retrying`] for this pool's tenant.
    pub async fn run_retrying<'a, T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        run_unit(|| self.get_for_unit(begin_sql(false)), false, None, work).await
    }

    /// [`AsyncSharedPool::read_retrying`] for this pool's tenant.
    pub async fn read_retrying<'a, T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        run_unit(|| self.get_for_unit(begin_sql(true)), true, None, work).await
    }
}

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
    pub async fn run_retrying<'a, T, E, F>(&self, tenant: &SchemaName, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        self.run_unit(Some(tenant), false, work).await
    }

    /// [`run_retrying`](Self::run_retrying) for work that only reads: its
    /// transaction is `READ ONLY`, so it is run once more on a fresh
    /// connection whenever the connection is lost, while committing too.
    pub async fn read_retrying<'a, T, E, F>(&self, tenant: &SchemaName, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        self.run_unit(Some(tenant), true, work).await
    }

    /// [`run_retrying`](Self::run_retrying) on the shared-only path.
    pub async fn run_shared_retrying<'a, T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        self.run_unit(None, false, work).await
    }

    /// [`read_retrying`](Self::read_retrying) on the shared-only path.
    pub async fn read_shared_retrying<'a, T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        self.run_unit(None, true, work).await
    }

    async fn run_unit<'a, T, E, F>(
        &self,
        tenant: Option<&SchemaName>,
        read_only: bool,
        work: F,
    ) -> Result<T, E>
    where
        F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
            + Send
            + 'a,
        E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
        T: Send + 'a,
    {
        let switch = UnitSwitch::new(self.search_path(), tenant, read_only);
        run_unit(|| self.get(tenant), read_only, Some(&switch), work).await
    }
}
