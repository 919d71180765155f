//! Running a request's diesel work on its tenant's connection.
//!
//! diesel is blocking: a query run on an async worker thread stalls every
//! other request scheduled on it. [`run_for_tenant`] (and
//! [`CurrentTenant::run`]) check a connection out of a [`SharedPool`] already
//! on the tenant's `search_path` and run the closure on tokio's blocking
//! thread pool, turning every failure into a [`TenantDbError`] that answers
//! with a fitting status code.

use appschema_core::connection::{is_connection_lost, is_stale_plan, ConnectionError, SharedPool};
use appschema_core::SchemaName;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use diesel::PgConnection;

use crate::CurrentTenant;

/// Why a tenant's unit of work failed. The `Display` text names the tenant
/// schema and the cause (for logs); the response a client gets says only
/// what kind of failure it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantDbError {
    /// No connection on the tenant's `search_path` could be had.
    #[error("no connection for tenant schema `{schema}`: {error}")]
    Connection {
        /// The tenant's schema.
        schema: String,
        /// Why (pool exhausted, database down, schema missing, …); in the
        /// message too, so it is not also a `source()`.
        error: ConnectionError,
    },
    /// The closure returned a diesel error.
    #[error("query for tenant schema `{schema}` failed: {error}")]
    Query {
        /// The tenant's schema.
        schema: String,
        /// diesel's error; in the message too, so it is not also a
        /// `source()`.
        error: diesel::result::Error,
    },
    /// The closure panicked (the connection went back to the pool, whose
    /// next checkout sets its `search_path` again).
    #[error("the unit of work for tenant schema `{schema}` panicked: {message}")]
    Panicked {
        /// The tenant's schema.
        schema: String,
        /// The panic message, if it was a string.
        message: String,
    },
}

/// The `Retry-After` every `503` of this crate carries, in seconds: a lost
/// connection is replaced at once and a restarting server accepts
/// connections again within seconds, so a client should come back soon.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// A `503 Service Unavailable` with `Retry-After` ([`RETRY_AFTER_SECONDS`])
/// and `body`.
pub(crate) fn unavailable(body: &'static str) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

/// The status a diesel error of a tenant's work answers with.
fn query_status(error: &diesel::result::Error) -> StatusCode {
    match error {
        diesel::result::Error::NotFound => StatusCode::NOT_FOUND,
        error if is_connection_lost(error) || is_stale_plan(error) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl TenantDbError {
    /// The status code the error answers with: `404` for a row that is not
    /// there (`diesel::result::Error::NotFound`) or a tenant whose schema is
    /// gone; `503` (with `Retry-After`, see [`RETRY_AFTER_SECONDS`]) when
    /// the failure is transient: the pool exhausted, the database down, the
    /// connection lost ([`is_connection_lost`]: a failover, a restart, a
    /// terminated backend; the pool closes that connection), or a cached
    /// statement gone stale after a migration changed its result type
    /// ([`is_stale_plan`]: the pool replaces that connection); `500`
    /// otherwise.
    ///
    /// ```
    /// use appschema::axum::TenantDbError;
    /// use axum::http::StatusCode;
    /// use diesel::result::{DatabaseErrorKind, Error};
    ///
    /// let lost = TenantDbError::Query {
    ///     schema: "acme".into(),
    ///     error: Error::DatabaseError(
    ///         DatabaseErrorKind::ClosedConnection,
    ///         Box::new("server closed the connection unexpectedly".to_string()),
    ///     ),
    /// };
    /// assert_eq!(lost.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            TenantDbError::Connection { error, .. } => match error {
                ConnectionError::SchemaMissing { .. } => StatusCode::NOT_FOUND,
                ConnectionError::Query { error, .. } => query_status(error),
                error if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            TenantDbError::Query { error, .. } => query_status(error),
            TenantDbError::Panicked { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `error`, from a unit of work of tenant schema `schema` (a
    /// `run_retrying` or `read_retrying` of the pools): the work's own
    /// diesel error becomes [`TenantDbError::Query`], anything else
    /// [`TenantDbError::Connection`].
    pub(crate) fn from_unit(schema: &SchemaName, error: ConnectionError) -> TenantDbError {
        match error {
            ConnectionError::Query { error, .. } => TenantDbError::Query {
                schema: schema.to_string(),
                error,
            },
            error => TenantDbError::Connection {
                schema: schema.to_string(),
                error,
            },
        }
    }
}

impl IntoResponse for TenantDbError {
    fn into_response(self) -> Response {
        let status = self.status();
        // The details (schema, SQL error) are for the operator, not the client.
        tracing::warn!(
            target: appschema_core::observe::TARGET,
            status = status.as_u16(),
            error = %self,
            "tenant database error"
        );
        let body = match (&self, status) {
            (TenantDbError::Connection { .. }, StatusCode::NOT_FOUND) => {
                "no such tenant (its schema is gone)\n"
            }
            (_, StatusCode::NOT_FOUND) => "not found\n",
            (_, StatusCode::SERVICE_UNAVAILABLE) => {
                return unavailable("database unavailable, retry later\n")
            }
            _ => "internal error\n",
        };
        (status, body).into_response()
    }
}

/// Checks out a connection on `schema`'s `search_path` from `pool` and runs
/// `work` on it on tokio's blocking thread pool. The connection goes back to
/// the pool when `work` returns or panics.
///
/// ```no_run
/// use appschema::axum::{run_for_tenant, CurrentTenant, TenantDbError};
/// use appschema::SharedPool;
/// use axum::extract::State;
/// use diesel::prelude::*;
///
/// async fn count(
///     State(pool): State<SharedPool>,
///     CurrentTenant(tenant): CurrentTenant,
/// ) -> Result<String, TenantDbError> {
///     let n: i64 = run_for_tenant(&pool, &tenant.schema_name, |conn| {
///         diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
///             "(SELECT count(*) FROM projects)",
///         ))
///         .get_result(conn)
///     })
///     .await?;
///     Ok(n.to_string())
/// }
/// ```
pub async fn run_for_tenant<F, T>(
    pool: &SharedPool,
    schema: &SchemaName,
    work: F,
) -> Result<T, TenantDbError>
where
    F: FnOnce(&mut PgConnection) -> diesel::QueryResult<T> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    let schema = schema.clone();
    let schema_text = schema.to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get_for(&schema)
            .map_err(|error| TenantDbError::Connection {
                schema: schema.to_string(),
                error,
            })?;
        work(&mut conn).map_err(|error| TenantDbError::Query {
            schema: schema.to_string(),
            error,
        })
    })
    .await;
    match outcome {
        Ok(result) => result,
        Err(join_error) => Err(TenantDbError::Panicked {
            schema: schema_text,
            message: match join_error.try_into_panic() {
                Ok(payload) => panic_message(payload.as_ref()),
                Err(e) => e.to_string(),
            },
        }),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl CurrentTenant {
    /// Runs `work` on a connection on this tenant's `search_path`, off the
    /// async worker threads: [`run_for_tenant`] with this tenant's schema.
    pub async fn run<F, T>(&self, pool: &SharedPool, work: F) -> Result<T, TenantDbError>
    where
        F: FnOnce(&mut PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        run_for_tenant(pool, &self.0.schema_name, work).await
    }

    /// Runs `work` in one transaction on this tenant's `search_path`, off
    /// the async worker threads, **once more on a fresh connection when the
    /// connection is lost before `COMMIT` was sent**
    /// ([`SharedPool::run_retrying`]: exactly what is retried). `work` may
    /// run twice: database work only. A failure that is not retried answers
    /// as every [`TenantDbError`] does (`503` with `Retry-After` for a lost
    /// connection).
    pub async fn run_retrying<F, T>(&self, pool: &SharedPool, work: F) -> Result<T, TenantDbError>
    where
        F: FnMut(&mut PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.blocking_unit(pool, false, work).await
    }

    /// [`run_retrying`](CurrentTenant::run_retrying) for work that only
    /// reads ([`SharedPool::read_retrying`]: a `READ ONLY` transaction, run
    /// once more on a fresh connection whenever the connection is lost):
    /// what a `GET` handler wants, so that a failover or a restart does not
    /// fail the request at all.
    ///
    /// ```no_run
    /// use appschema::axum::{CurrentTenant, TenantDbError};
    /// use appschema::SharedPool;
    /// use axum::extract::State;
    /// use diesel::prelude::*;
    /// use diesel::sql_types::BigInt;
    ///
    /// async fn count(
    ///     State(pool): State<SharedPool>,
    ///     tenant: CurrentTenant,
    /// ) -> Result<String, TenantDbError> {
    ///     let n: i64 = tenant
    ///         .read_retrying(&pool, |conn| {
    ///             diesel::select(diesel::dsl::sql::<BigInt>("(SELECT count(*) FROM projects)"))
    ///                 .get_result(conn)
    ///         })
    ///         .await?;
    ///     Ok(n.to_string())
    /// }
    /// ```
    pub async fn read_retrying<F, T>(&self, pool: &SharedPool, work: F) -> Result<T, TenantDbError>
    where
        F: FnMut(&mut PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.blocking_unit(pool, true, work).await
    }

    async fn blocking_unit<F, T>(
        &self,
        pool: &SharedPool,
        read_only: bool,
        mut work: F,
    ) -> Result<T, TenantDbError>
    where
        F: FnMut(&mut PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = pool.clone();
        let schema = self.0.schema_name.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let work = |conn: &mut PgConnection| work(conn).map_err(ConnectionError::from);
            let result = if read_only {
                pool.read_retrying(&schema, work)
            } else {
                pool.run_retrying(&schema, work)
            };
            result.map_err(|error| TenantDbError::from_unit(&schema, error))
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(join_error) => Err(TenantDbError::Panicked {
                schema: self.0.schema_name.to_string(),
                message: match join_error.try_into_panic() {
                    Ok(payload) => panic_message(payload.as_ref()),
                    Err(e) => e.to_string(),
                },
            }),
        }
    }
}
