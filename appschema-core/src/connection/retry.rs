//! Units of work that survive a lost connection: one transaction, run again
//! once on a fresh connection when the connection was lost before anything
//! could have committed.

use std::ops::DerefMut;

use diesel::PgConnection;

use super::drive::run_unit_once;
use super::error::{describe_target, ConnectionError};
use super::hygiene::UNIT_RESET;
use super::lost::is_connection_lost;
use super::protocol::{Retry, UnitMode, UnitRetry};
use super::search_path::{write_local_switch, Refusal, SearchPath};
use super::shared_pool::{SharedPool, TenantPool};
use crate::name::SchemaName;

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
    /// sends [`DIRTY_UNLISTEN`](super::hygiene::DIRTY_UNLISTEN) and starts the unit again; otherwise the
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

/// Checks out with `checkout` and runs `work` in a transaction (after
/// `switch` on a transaction-scoped pool), as [`Unit`](super::protocol::Unit)
/// says; when the connection was lost before anything committed, once more
/// on a connection checked out afresh, as [`UnitRetry`] says.
/// `begun_at_checkout`: `checkout` sends the unit's `BEGIN` in its message
/// (the session pools' `get_for_unit`), so the unit sends none of its own.
pub(crate) fn run_unit<C, T, E, F>(
    checkout: impl Fn() -> Result<C, ConnectionError>,
    read_only: bool,
    switch: Option<&UnitSwitch>,
    begun_at_checkout: bool,
    mut work: F,
) -> Result<T, E>
where
    C: DerefMut<Target = PgConnection>,
    F: FnMut(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    let mut retry = UnitRetry::new();
    loop {
        let mut conn = checkout()?;
        let end = run_unit_once(
            &mut conn,
            switch,
            UnitMode::Retrying { read_only },
            begun_at_checkout,
            &mut work,
        );
        match retry.after(end) {
            Retry::Return(result) => return result,
            // Dropped here, the lost connection is closed by its pool (its
            // transaction manager is broken and `PlanWatch` saw the loss).
            Retry::CloseAndFail(error) => return Err(error),
            Retry::CloseAndRunAgain => {}
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
            true,
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
            true,
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
            true,
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
            true,
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
        run_unit(
            || self.get_for_unit(begin_sql(false)),
            false,
            None,
            true,
            work,
        )
    }

    /// [`SharedPool::read_retrying`] for this pool's tenant.
    pub fn read_retrying<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E>,
        E: From<diesel::result::Error> + From<ConnectionError>,
    {
        run_unit(
            || self.get_for_unit(begin_sql(true)),
            true,
            None,
            true,
            work,
        )
    }
}
