//! Units of work that survive a lost connection: one transaction, run again
//! once on a fresh connection when the connection was lost before anything
//! could have committed.

use std::ops::DerefMut;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::PgConnection;

use super::error::{describe_target, ConnectionError};
use super::hygiene::{drain_notifications, keep_types_resolved_on, DIRTY_UNLISTEN, UNIT_RESET};
use super::lost::is_connection_lost;
use super::search_path::{run_once, write_local_switch, Refusal, SearchPath};
use super::shared_pool::{SharedPool, TenantPool};
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

/// What a transaction-scoped unit sends first inside its transaction: the
/// session reset and `SET LOCAL search_path` with its check (the text
/// `in_tenant_transaction` sends), so that the `*_retrying` methods of the
/// transaction-scoped pools run their units by the same rules as the other
/// pools'.
#[derive(Debug, Clone)]
pub struct UnitSwitch {
    sql: String,
    path: String,
    tenant: Option<SchemaName>,
    first: String,
}

impl UnitSwitch {
    /// The switch of a unit for `tenant` (`None`: the shared-only path);
    /// `read_only` makes the unit's transaction `READ ONLY` after the
    /// switch (a transaction begun read only would fail the switch's check
    /// that it began with the session's default characteristics).
    pub fn new(path: &SearchPath, tenant: Option<&SchemaName>, read_only: bool) -> UnitSwitch {
        let (value, first) = match tenant {
            Some(t) => (path.for_tenant(t), t.as_str().to_string()),
            None => (path.shared_only(), path.shared().to_string()),
        };
        let mut sql = String::from(UNIT_RESET);
        write_local_switch(&mut sql, &value, &first);
        if read_only {
            sql.push_str("; SET TRANSACTION READ ONLY");
        }
        UnitSwitch {
            sql,
            path: value,
            tenant: tenant.cloned(),
            first,
        }
    }

    /// The SQL sent right after `BEGIN`.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The tenant of the unit (`None`: shared-only).
    pub fn tenant(&self) -> Option<&SchemaName> {
        self.tenant.as_ref()
    }

    /// The `search_path` the unit runs on.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What the server's refusal of the switch means for the unit: `None`
    /// when the session was found listening (or with other transaction
    /// characteristics) on the unit's first round: the caller rolls back,
    /// sends [`DIRTY_UNLISTEN`] and starts the unit again; otherwise the
    /// error to return and whether it is a lost connection.
    pub fn refused<E>(&self, refusal: Refusal, first_round: bool) -> Option<(E, bool)>
    where
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        let error = match refusal {
            Refusal::Dirty if first_round => return None,
            Refusal::Failed(error) => {
                let lost = is_connection_lost(&error);
                return Some((error.into(), lost));
            }
            Refusal::SchemaMissing => ConnectionError::SchemaMissing {
                schema: self.first.clone(),
            },
            Refusal::Broken(message) => ConnectionError::SwitchFailed {
                target: describe_target(self.tenant.as_ref()),
                message,
            },
            Refusal::Dirty => ConnectionError::SwitchFailed {
                target: describe_target(self.tenant.as_ref()),
                message:
                    "the session still listens, or begins transactions with other than the \
                          default characteristics, after UNLISTEN * and RESET default_transaction_*"
                        .to_string(),
            },
        };
        Some((error.into(), false))
    }
}

/// Runs `work` once, in a transaction of its own on `conn` (after `switch`
/// on a transaction-scoped pool), and says whether a failure may be
/// retried (see [`Attempt`]).
fn attempt<T, E, F>(
    conn: &mut PgConnection,
    read_only: bool,
    switch: Option<&UnitSwitch>,
    work: &mut F,
) -> Attempt<T, E>
where
    F: FnMut(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    if let Some(switch) = switch {
        // Custom types the client resolved on another path must not be
        // bound here (see `keep_types_resolved_on`).
        keep_types_resolved_on(conn, switch.path());
    }
    let mut first_round = true;
    loop {
        // A unit with a switch is made read only by its switch.
        let begin = begin_sql(read_only && switch.is_none());
        // The session pools' checkout for a unit sent its `BEGIN` in the
        // checkout's own message (`SharedPool::get_for_unit`).
        let begun = first_round
            && switch.is_none()
            && AnsiTransactionManager::transaction_manager_status_mut(conn)
                .transaction_depth()
                .is_ok_and(|depth| depth.is_some());
        let began = match begun {
            true => Ok(()),
            false => AnsiTransactionManager::begin_transaction_sql(conn, begin),
        };
        if let Err(error) = began {
            return if is_connection_lost(&error) {
                Attempt::Lost(error.into())
            } else {
                Attempt::Done(Err(error.into()))
            };
        }
        if let Some(switch) = switch {
            match run_once(conn, switch.sql()) {
                Ok(()) => drain_notifications(conn),
                Err(refusal) => {
                    let refused = switch.refused::<E>(refusal, first_round);
                    let rollback = AnsiTransactionManager::rollback_transaction(conn);
                    let rollback_lost = rollback.as_ref().is_err_and(is_connection_lost);
                    match refused {
                        // Nothing ran yet: lost here, the unit may run again.
                        Some((error, lost)) if lost || rollback_lost => {
                            return Attempt::Lost(error)
                        }
                        Some((error, _)) => return Attempt::Done(Err(error)),
                        None => match rollback.and_then(|()| conn.batch_execute(DIRTY_UNLISTEN)) {
                            Ok(()) => {
                                first_round = false;
                                continue;
                            }
                            Err(error) if is_connection_lost(&error) => {
                                return Attempt::Lost(error.into())
                            }
                            Err(error) => return Attempt::Done(Err(error.into())),
                        },
                    }
                }
            }
        }
        return match work(conn) {
            Ok(value) => match AnsiTransactionManager::commit_transaction(conn) {
                Ok(()) => Attempt::Done(Ok(value)),
                // Lost while committing: the server may have committed before
                // it went. Only a read-only unit can be run again.
                Err(error) if read_only && is_connection_lost(&error) => {
                    Attempt::Lost(error.into())
                }
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
        };
    }
}

/// Checks out with `checkout` and runs `work` in a transaction (after
/// `switch` on a transaction-scoped pool); when the connection was lost
/// before anything committed, once more on a connection checked out afresh
/// (the lost one is closed when returned).
pub(crate) fn run_unit<C, T, E, F>(
    checkout: impl Fn() -> Result<C, ConnectionError>,
    read_only: bool,
    switch: Option<&UnitSwitch>,
    mut work: F,
) -> Result<T, E>
where
    C: DerefMut<Target = PgConnection>,
    F: FnMut(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    let mut conn = checkout()?;
    match attempt(&mut conn, read_only, switch, &mut work) {
        Attempt::Done(result) => result,
        Attempt::Lost(_) => {
            // Returned to the pool, the lost connection is closed (its
            // transaction manager is broken and `PlanWatch` saw the loss).
            drop(conn);
            let mut conn = checkout()?;
            match attempt(&mut conn, read_only, switch, &mut work) {
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
        run_unit(
            || self.get_for_unit(Some(tenant), begin_sql(false)),
            false,
            None,
            work,
        )
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
        run_unit(
            || self.get_for_unit(Some(tenant), begin_sql(true)),
            true,
            None,
            work,
        )
    }

    /// [`run_retrying`](SharedPool::run_retrying) on the shared-only path
    /// (no tenant).
    pub fn run_shared_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(
            || self.get_for_unit(None, begin_sql(false)),
            false,
            None,
            work,
        )
    }

    /// [`read_retrying`](SharedPool::read_retrying) on the shared-only path
    /// (no tenant).
    pub fn read_shared_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(
            || self.get_for_unit(None, begin_sql(true)),
            true,
            None,
            work,
        )
    }
}

impl TenantPool {
    /// [`SharedPool::run_retrying`] for this pool's tenant.
    pub fn run_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(|| self.get_for_unit(begin_sql(false)), false, None, work)
    }

    /// [`SharedPool::read_retrying`] for this pool's tenant.
    pub fn read_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(|| self.get_for_unit(begin_sql(true)), true, None, work)
    }
}
