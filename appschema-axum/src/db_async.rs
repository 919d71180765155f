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

use appschema_async::{AsyncSharedPool, AsyncTenantConnection};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

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
    /// returns (`404` for a missing row, `503` for a stale cached plan,
    /// `500` otherwise).
    pub fn query_failed(&self, error: diesel::result::Error) -> TenantDbError {
        TenantDbError::Query {
            schema: self.0.schema_name.to_string(),
            error,
        }
    }
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
