//! The async path (feature `async`): a request's diesel-async work on its
//! tenant's connection, awaited on the request's own task.
//!
//! [`CurrentTenant::conn`] checks a connection out of an
//! [`AsyncSharedPool`] already on the tenant's `search_path`; no blocking
//! thread is involved, unlike [`run_for_tenant`](crate::run_for_tenant)
//! (which stays, for r2d2 users). The [`TenantConn`] extractor does the
//! same from the router's state. A request that is cancelled (client gone,
//! timeout layer) while a query runs drops its connection mid-query; the
//! pool then closes it and asks the server to cancel the statement, rather
//! than handing it to another request.

use appschema_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};
use appschema_async::{AsyncSharedPool, AsyncTenantConnection};
use appschema_core::ConnectionError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use diesel_async::AsyncPgConnection;

use crate::{CurrentTenant, TenantDbError};

impl CurrentTenant {
    /// A connection of `pool` on this tenant's `search_path`, checked out on
    /// the request's task (no `spawn_blocking`).
    ///
    /// ```no_run
    /// use appschema::async_pool::AsyncSharedPool;
    /// use appschema::axum::{CurrentTenant, TenantDbError};
    /// use axum::extract::State;
    /// use diesel_async::RunQueryDsl;
    ///
    /// async fn archive(
    ///     State(pool): State<AsyncSharedPool>,
    ///     tenant: CurrentTenant,
    /// ) -> Result<String, TenantDbError> {
    ///     let mut conn = tenant.conn(&pool).await?;
    ///     let n = diesel::sql_query("UPDATE projects SET archived = true")
    ///         .execute(&mut *conn)
    ///         .await
    ///         .map_err(|e| tenant.query_failed(e))?;
    ///     Ok(format!("{n} archived"))
    /// }
    /// ```
    pub async fn conn(
        &self,
        pool: &AsyncSharedPool,
    ) -> Result<AsyncTenantConnection, TenantDbError> {
        pool.get_for(&self.0.schema_name)
            .await
            .map_err(|error| TenantDbError::Connection {
                schema: self.0.schema_name.to_string(),
                error,
            })
    }

    /// `error`, from this tenant's work, as the [`TenantDbError`] a handler
    /// returns (`404` for a missing row, `503` with `Retry-After` for a lost
    /// connection or a stale cached plan, `500` otherwise).
    pub fn query_failed(&self, error: diesel::result::Error) -> TenantDbError {
        TenantDbError::Query {
            schema: self.0.schema_name.to_string(),
            error,
        }
    }
}

impl CurrentTenant {
    /// Runs `work` in one transaction on this tenant's `search_path`, on
    /// the request's task, **once more on a fresh connection when the
    /// connection is lost before `COMMIT` was sent**
    /// ([`AsyncSharedPool::run_retrying`]: exactly what is retried). `work`
    /// may run twice: database work only. A failure that is not retried
    /// answers as every [`TenantDbError`] does (`503` with `Retry-After` for
    /// a lost connection).
    pub async fn run_retrying_async<'a, T, F>(
        &self,
        pool: &AsyncSharedPool,
        work: F,
    ) -> Result<T, TenantDbError>
    where
        F: for<'r> FnMut(
                &'r mut AsyncPgConnection,
            ) -> ScopedBoxFuture<'a, 'r, diesel::QueryResult<T>>
            + Send
            + 'a,
        T: Send + 'a,
    {
        self.async_unit(pool, false, work).await
    }

    /// [`run_retrying_async`](CurrentTenant::run_retrying_async) for work
    /// that only reads ([`AsyncSharedPool::read_retrying`]: a `READ ONLY`
    /// transaction, run once more on a fresh connection whenever the
    /// connection is lost): what a `GET` handler wants, so that a failover
    /// or a restart does not fail the request at all.
    ///
    /// ```no_run
    /// use appschema::async_pool::AsyncSharedPool;
    /// use appschema::async_pool::scoped_futures::ScopedFutureExt;
    /// use appschema::axum::{CurrentTenant, TenantDbError};
    /// use axum::extract::State;
    /// use diesel::sql_types::BigInt;
    /// use diesel_async::RunQueryDsl;
    ///
    /// async fn count(
    ///     State(pool): State<AsyncSharedPool>,
    ///     tenant: CurrentTenant,
    /// ) -> Result<String, TenantDbError> {
    ///     let n: i64 = tenant
    ///         .read_retrying_async(&pool, |conn| {
    ///             let count = diesel::dsl::sql::<BigInt>("(SELECT count(*) FROM projects)");
    ///             async move { diesel::select(count).get_result(conn).await }.scope_boxed()
    ///         })
    ///         .await?;
    ///     Ok(n.to_string())
    /// }
    /// ```
    pub async fn read_retrying_async<'a, T, F>(
        &self,
        pool: &AsyncSharedPool,
        work: F,
    ) -> Result<T, TenantDbError>
    where
        F: for<'r> FnMut(
                &'r mut AsyncPgConnection,
            ) -> ScopedBoxFuture<'a, 'r, diesel::QueryResult<T>>
            + Send
            + 'a,
        T: Send + 'a,
    {
        self.async_unit(pool, true, work).await
    }

    async fn async_unit<'a, T, F>(
        &self,
        pool: &AsyncSharedPool,
        read_only: bool,
        mut work: F,
    ) -> Result<T, TenantDbError>
    where
        F: for<'r> FnMut(
                &'r mut AsyncPgConnection,
            ) -> ScopedBoxFuture<'a, 'r, diesel::QueryResult<T>>
            + Send
            + 'a,
        T: Send + 'a,
    {
        let schema = &self.0.schema_name;
        let unit = unit_of(move |conn: &mut AsyncPgConnection| {
            let run = work(conn);
            async move { run.await.map_err(ConnectionError::from) }.scope_boxed()
        });
        let result = if read_only {
            pool.read_retrying(schema, unit).await
        } else {
            pool.run_retrying(schema, unit).await
        };
        result.map_err(|error| TenantDbError::from_unit(schema, error))
    }
}

/// `f`, its signature spelled out: a closure returning a `ScopedBoxFuture`
/// is only inferred as higher-ranked over the connection's lifetime when
/// passed where that is required.
fn unit_of<'a, T, F>(f: F) -> F
where
    F: for<'r> FnMut(
        &'r mut AsyncPgConnection,
    ) -> ScopedBoxFuture<'a, 'r, Result<T, ConnectionError>>,
{
    f
}

/// Extractor: the request's [`CurrentTenant`] and a connection on its
/// `search_path` from the [`AsyncSharedPool`] in the router's state
/// (`AsyncSharedPool: FromRef<S>`). Needs [`TenantLayer`](crate::TenantLayer).
///
/// ```no_run
/// use appschema::async_pool::AsyncSharedPool;
/// use appschema::axum::{TenantConn, TenantDbError};
/// use diesel_async::RunQueryDsl;
///
/// async fn touch(TenantConn(tenant, mut conn): TenantConn) -> Result<(), TenantDbError> {
///     diesel::sql_query("UPDATE account SET seen_at = now()")
///         .execute(&mut *conn)
///         .await
///         .map_err(|e| tenant.query_failed(e))?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct TenantConn(pub CurrentTenant, pub AsyncTenantConnection);

impl<S> FromRequestParts<S> for TenantConn
where
    S: Send + Sync,
    AsyncSharedPool: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenant = CurrentTenant::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let pool = AsyncSharedPool::from_ref(state);
        let conn = tenant
            .conn(&pool)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(TenantConn(tenant, conn))
    }
}
