//! Why a tenant-scoped connection could not be had.

use std::time::Duration;

use crate::name::NameError;

/// Why a tenant-scoped connection (or unit of work) could not be provided.
/// Every message names the tenant or schema involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// No tenant answers to this public name in the registry.
    #[error("unknown tenant `{public_name}`: no row in public.appschema_public_names; register it first (registry::insert / add_alias)")]
    UnknownTenant {
        /// The (normalized) public name that was looked up.
        public_name: String,
    },
    /// A tenant or schema name was refused before it reached SQL.
    #[error("invalid name `{name}`: {error}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// The rule it broke (part of the message, so not also a `source()`:
        /// an error chain printed whole would say it twice).
        error: NameError,
    },
    /// The tenant's schema does not exist in the database (the registry row
    /// or the caller's schema name points at nothing). The connection was
    /// not handed out: unqualified names would have resolved to the shared
    /// schema instead.
    #[error(
        "tenant schema `{schema}` does not exist: provision the tenant before connecting to it"
    )]
    SchemaMissing {
        /// The schema that was asked for.
        schema: String,
    },
    /// Every connection of the pool stayed checked out for the whole timeout.
    #[error("pool exhausted: no connection for {target} became free within {timeout:?} (max_size {max_size}); return connections sooner or raise max_size")]
    PoolExhausted {
        /// `tenant schema "acme"` or `shared work`.
        target: String,
        /// How long the checkout waited.
        timeout: Duration,
        /// The pool's size.
        max_size: u32,
    },
    /// The database could not be reached (or every connection tried was
    /// dead) within the timeout.
    #[error("database down: no working connection for {target} within {timeout:?}: {message}")]
    DatabaseDown {
        /// `tenant schema "acme"` or `shared work`.
        target: String,
        /// How long the checkout waited.
        timeout: Duration,
        /// The last error the pool saw.
        message: String,
    },
    /// The switch to the tenant's `search_path` did not take effect as
    /// expected (the server reported another value).
    #[error("search_path switch for {target} failed: {message}")]
    SwitchFailed {
        /// `tenant schema "acme"` or `shared work`.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// A tenant unit of work was started inside an already open transaction,
    /// where its `SET LOCAL` would outlive the unit.
    #[error("a unit of work for tenant schema `{schema}` was started inside an open transaction: commit or roll back the outer transaction first")]
    NestedTransaction {
        /// The schema of the refused unit.
        schema: String,
    },
    /// The connection URL's TLS settings (`sslmode`, `sslrootcert`) cannot
    /// be honoured as given: TLS required with no TLS at hand, an unreadable
    /// root certificate file, an unknown `sslmode`. The message names the
    /// setting and the fix.
    #[error("{message}")]
    Tls {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A query failed.
    #[error("query for {target} failed: {error}")]
    Query {
        /// `tenant schema "acme"` or `shared work`.
        target: String,
        /// The database's error (in the message too, so it is not also a
        /// `source()`: an error chain printed whole would say it twice).
        error: diesel::result::Error,
    },
}

impl ConnectionError {
    pub(crate) fn invalid_name(name: &str, error: NameError) -> ConnectionError {
        ConnectionError::InvalidName {
            name: name.to_string(),
            error,
        }
    }

    /// What a failed r2d2 checkout of `pool` for `tenant` means: every
    /// connection was busy for the whole timeout, or none could be opened.
    pub(crate) fn checkout_failed<M: r2d2::ManageConnection>(
        pool: &r2d2::Pool<M>,
        tenant: Option<&crate::SchemaName>,
        timeout: Duration,
        error: r2d2::Error,
    ) -> ConnectionError {
        let target = describe_target(tenant);
        let max_size = pool.max_size();
        if pool.state().connections >= max_size {
            ConnectionError::PoolExhausted {
                target,
                timeout,
                max_size,
            }
        } else {
            ConnectionError::DatabaseDown {
                target,
                timeout,
                message: error.to_string(),
            }
        }
    }
}

/// How errors name the work a connection was for: ``tenant schema `acme` ``
/// or `shared work`.
pub fn describe_target(tenant: Option<&crate::SchemaName>) -> String {
    match tenant {
        Some(t) => format!("tenant schema `{t}`"),
        None => "shared work".to_string(),
    }
}

/// Lets `?` carry a diesel error out of a unit of work (transaction-scoped mode).
impl From<diesel::result::Error> for ConnectionError {
    fn from(error: diesel::result::Error) -> Self {
        ConnectionError::Query {
            target: "a unit of work".to_string(),
            error,
        }
    }
}
