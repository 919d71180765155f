//! # appschema-async
//!
//! Tenant-scoped connections for [diesel-async](https://docs.rs/diesel-async)
//! (`AsyncPgConnection`), so an async service (axum, say) runs its tenants'
//! queries without handing each request to a blocking thread. Applications
//! use it through the `appschema` facade's `async` feature, as
//! `appschema::async_pool`; a crate of its own so that sync users never
//! compile tokio-postgres.
//!
//! - [`AsyncSharedPool`]: one pool for every tenant; each checkout resets
//!   the session and switches to the tenant's `search_path` in one round
//!   trip, exactly as the sync `SharedPool` does (the same SQL, refusals and
//!   [`ConnectionError`](appschema_core::ConnectionError)s: both come from
//!   `appschema-core`).
//! - [`AsyncTenantPool`]: the same, pinned to one tenant.
//! - [`AsyncTransactionScopedPool`] / [`in_tenant_transaction`]: each unit
//!   of work is one transaction starting with `SET LOCAL search_path`; for
//!   PgBouncer or RDS Proxy in transaction pooling.
//! - [`claim_spare`]: sign-up from an async handler, a spare schema renamed
//!   to the new tenant's, no blocking thread; [`claim_spare_with`] also
//!   writes the tenant's first rows in the same transaction.
//!
//! Cancellation: a request future dropped mid-checkout or mid-query leaves
//! its query in flight; the connection is then closed rather than handed to
//! the next checkout (see [`AsyncSharedPool`]). Row streams: read them with
//! [`load_stream`], whose stream borrows the connection and, dropped before
//! its end, keeps the connection from the next checkout (diesel-async's own
//! `load_stream` cannot be watched).
//!
//! TLS: the pools read the URL's `sslmode` and `sslrootcert` themselves
//! (tokio-postgres reads neither `verify-*` nor `sslrootcert`). With the
//! `tls-rustls` feature they connect, and send cancel requests, over rustls,
//! verifying as libpq would; any tokio-postgres connector can be given to a
//! builder's `tls` instead. A URL that requires TLS the pool cannot provide
//! is refused by `build` ([`ConnectionError::Tls`](appschema_core::ConnectionError::Tls)),
//! never connected in plaintext.
//!
//! ```no_run
//! use appschema::{SchemaName, async_pool::AsyncSharedPool};
//! use diesel_async::RunQueryDsl;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = AsyncSharedPool::builder("postgres:///app").max_size(16).build()?;
//! let acme = SchemaName::new("acme").unwrap();
//! let mut conn = pool.get_for(&acme).await?;
//! let n = diesel::sql_query("UPDATE orders SET total = 0").execute(&mut *conn).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod maintain;
mod pool;
mod provision;
mod retry;
mod stream;
mod switch;
mod tls;
mod transaction;
mod types;

pub use appschema_core::connection::PoolState;
pub use pool::{AsyncSharedPool, AsyncSharedPoolBuilder, AsyncTenantConnection, AsyncTenantPool};
pub use provision::{
    claim_spare, claim_spare_with, claim_spare_with_hooks, AsyncHooks, AsyncTenantHook, HookFuture,
};
pub use stream::{load_stream, TenantRowStream};
#[cfg(feature = "tls-rustls")]
pub use tls::RustlsConnector;
pub use transaction::{
    in_shared_transaction, in_tenant_transaction, AsyncTransactionScopedPool,
    AsyncTransactionScopedPoolBuilder,
};

/// Re-exported for the closures of transaction-scoped units
/// (`|conn| async move { … }.scope_boxed()`).
pub use scoped_futures;
