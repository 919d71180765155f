//! The connection manager of [`TransactionScopedPool`](super::TransactionScopedPool):
//! diesel's r2d2 manager plus appschema's [`PlanWatch`], and a `Debug` that
//! hides the password.

use std::fmt;
use std::sync::Arc;

use diesel::connection::CacheSize;
use diesel::r2d2::{Error as R2d2Error, R2D2Connection};
use diesel::{Connection, PgConnection};

use super::plan_watch::PlanWatch;
use super::types::PerTenantTypes;
use crate::redact::{redact_connection_error, redact_url};

/// Opens plain connections (no start-up options: a transaction-pooling
/// proxy would refuse or leak them) with the watch installed; closes on
/// return a connection that saw a stale cached plan, that was lost (a query
/// on it failed as [`is_connection_lost`](super::is_connection_lost) says),
/// or whose instrumentation user code replaced (fail closed).
pub(crate) struct ScopedManager {
    pub(crate) url: String,
    pub(crate) statement_cache: bool,
    /// Given to each connection's watch when the statement cache is on.
    pub(crate) per_tenant_types: Arc<PerTenantTypes>,
}

impl fmt::Debug for ScopedManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedManager")
            .field("url", &redact_url(&self.url))
            .field("statement_cache", &self.statement_cache)
            .finish()
    }
}

impl r2d2::ManageConnection for ScopedManager {
    type Connection = PgConnection;
    type Error = R2d2Error;

    fn connect(&self) -> Result<PgConnection, R2d2Error> {
        let mut conn = PgConnection::establish(&self.url)
            .map_err(|e| R2d2Error::ConnectionError(redact_connection_error(e, &self.url)))?;
        if self.statement_cache {
            PlanWatch::install_with_types(&mut conn, Arc::clone(&self.per_tenant_types));
        } else {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
            PlanWatch::install(&mut conn);
        }
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), R2d2Error> {
        conn.ping().map_err(R2d2Error::QueryError)
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        std::thread::panicking()
            || R2D2Connection::is_broken(conn)
            || PlanWatch::saw_stale_plan(conn)
            || PlanWatch::saw_connection_lost_in(conn.instrumentation())
    }
}
