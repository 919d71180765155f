//! Units of work that survive a lost connection: one transaction, run again
//! once on a fresh connection when the connection was lost before anything
//! could have committed.

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::PgConnection;

use super::error::ConnectionError;
use super::lost::is_connection_lost;
use super::shared_pool::{SharedPool, TenantConnection, TenantPool};
use crate::name::SchemaName;

/// How a unit run by the `*_retrying` methods ended on one connection.
pub(crate) enum Attempt<T, E> {
    Done(Result<T, E>),
    /// The connection was lost before the unit's `COMMIT` was sent (or
    /// while a read-only unit committed): nothing committed, so the unit
    /// may run again, on another connection. Holds the error to return if
    /// it is not run again.
    Lost(E),
}

/// What a unit's transaction starts with: `BEGIN`, or `BEGIN READ ONLY`,
/// whose `COMMIT` changes nothing (so a loss while committing is safe to
/// retry too).
pub fn begin_sql(read_only: bool) -> &'static str {
    if read_only {
        "BEGIN READ ONLY"
    } else {
        "BEGIN"
    }
}

/// Runs `work` once, in a transaction of its own on `conn`, and says
/// whether a failure may be retried (see [`Attempt`]).
fn attempt<T, E, F>(conn: &mut PgConnection, read_only: bool, work: &mut F) -> Attempt<T, E>
where
    F: FnMut(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    if let Err(error) = AnsiTransactionManager::begin_transaction_sql(conn, begin_sql(read_only)) {
        return if is_connection_lost(&error) {
            Attempt::Lost(error.into())
        } else {
            Attempt::Done(Err(error.into()))
        };
    }
    match work(conn) {
        Ok(value) => match AnsiTransactionManager::commit_transaction(conn) {
            Ok(()) => Attempt::Done(Ok(value)),
            // Lost while committing: the server may have committed before
            // it went. Only a read-only unit can be run again.
            Err(error) if read_only && is_connection_lost(&error) => Attempt::Lost(error.into()),
            Err(error) => Attempt::Done(Err(error.into())),
        },
        Err(error) => match AnsiTransactionManager::rollback_transaction(conn) {
            Ok(()) => Attempt::Done(Err(error)),
            // The rollback found the connection gone, so the work failed
            // (or was about to) because of it, before `COMMIT` was sent:
            // nothing of it committed.
            Err(rollback) if is_connection_lost(&rollback) => Attempt::Lost(error),
            Err(_) => Attempt::Done(Err(error)),
        },
    }
}

/// Checks out with `checkout` and runs `work` in a transaction; when the
/// connection was lost before anything committed, once more on a connection
/// checked out afresh (the lost one is closed when returned).
pub(crate) fn run_unit<T, E, F>(
    checkout: impl Fn() -> Result<TenantConnection, ConnectionError>,
    read_only: bool,
    mut work: F,
) -> Result<T, E>
where
    F: FnMut(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    let mut conn = checkout()?;
    match attempt(&mut conn, read_only, &mut work) {
        Attempt::Done(result) => result,
        Attempt::Lost(_) => {
            // Returned to the pool, the lost connection is closed (its
            // transaction manager is broken and `PlanWatch` saw the loss).
            drop(conn);
            let mut conn = checkout()?;
            match attempt(&mut conn, read_only, &mut work) {
                Attempt::Done(result) => result,
                Attempt::Lost(error) => Err(error),
            }
        }
    }
}

impl SharedPool {
    /// Runs `work` on a connection on `tenant`'s `search_path`, in one
    /// transaction, and runs it **once more, on a fresh connection**, when
    /// the connection is lost (see [`is_connection_lost`]: a failover, a
    /// restart, `pg_terminate_backend`) before the transaction's `COMMIT`
    /// was sent — nothing of the first run can have committed then.
    ///
    /// Not retried: a loss while `COMMIT` is on its way (the server may
    /// have committed: the error is returned, and
    /// [`is_connection_lost`] says so), any other failure of `work`, a
    /// second loss, and a checkout that fails (it already waited up to the
    /// pool's `connection_timeout`, replacing dead connections). For
    /// read-only work prefer [`read_retrying`](SharedPool::read_retrying),
    /// which is also retried when lost while committing.
    ///
    /// `work` may run twice, so it must do nothing but database work on
    /// `conn` (no e-mail sent, no outside state changed) and must not
    /// commit or roll back itself; diesel's `Connection::transaction`
    /// inside it becomes a savepoint.
    ///
    /// ```no_run
    /// use appschema::{SchemaName, SharedPool, ConnectionError};
    /// use diesel::prelude::*;
    ///
    /// let pool = SharedPool::builder("postgres:///app").build()?;
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
        run_unit(|| self.get_for(tenant), false, work)
    }

    /// [`run_retrying`](SharedPool::run_retrying) for work that only reads:
    /// its transaction is `READ ONLY` (a write in `work` fails), so it is
    /// run once more on a fresh connection whenever the connection is lost,
    /// while committing too. What a web handler answering `GET` wants.
    ///
    /// ```no_run
    /// use appschema::{SchemaName, SharedPool, ConnectionError};
    /// use diesel::prelude::*;
    /// use diesel::sql_types::BigInt;
    ///
    /// let pool = SharedPool::builder("postgres:///app").build()?;
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
        run_unit(|| self.get_for(tenant), true, work)
    }

    /// [`run_retrying`](SharedPool::run_retrying) on the shared-only path
    /// (no tenant).
    pub fn run_shared_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(|| self.get_shared(), false, work)
    }

    /// [`read_retrying`](SharedPool::read_retrying) on the shared-only path
    /// (no tenant).
    pub fn read_shared_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(|| self.get_shared(), true, work)
    }
}

impl TenantPool {
    /// [`SharedPool::run_retrying`] for this pool's tenant.
    pub fn run_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(|| self.get(), false, work)
    }

    /// [`SharedPool::read_retrying`] for this pool's tenant.
    pub fn read_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(|| self.get(), true, work)
    }
}
