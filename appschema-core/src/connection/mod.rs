//! Tenant-scoped connections that never leak.
//!
//! Three ways to run a tenant's queries on its `search_path`
//! (`"<tenant>", "<shared>", <extra schemas>…`, see [`SearchPath`]):
//!
//! - [`SharedPool`]: one pool for every tenant; the session reset and the
//!   switch are the query r2d2 sends on every checkout anyway. The default
//!   choice.
//! - [`TenantPool`]: a `SharedPool` pinned to one tenant, for a tenant that
//!   deserves a pool of its own; the same checkout.
//! - [`TenantCustomizer`]: an r2d2 customizer for a pool that serves one
//!   tenant (r2d2 runs it only when it opens a connection; it resets
//!   nothing on checkout: prefer [`TenantPool`]).
//! - [`TransactionScopedPool`] / [`in_tenant_transaction`]: each unit of work
//!   is one transaction starting with `SET LOCAL search_path`; the mode for
//!   PgBouncer or RDS Proxy in transaction pooling.
//!
//! Every checkout of a `SharedPool` or `TenantPool`, and the start of every
//! transaction-scoped unit, returns the session to its connect-time state
//! (settings, temporary tables, holdable cursors, `LISTEN`, roles, advisory
//! locks, `lastval()`), keeping only diesel's prepared statements.

mod affinity;
mod customizer;
mod error;
mod hygiene;
mod lookup;
mod lost;
mod plan_watch;
mod retry;
mod scoped_manager;
mod search_path;
mod shared_pool;
mod state;
mod transaction;
mod types;

/// The switch and hygiene SQL, and the decoding of its outcome, for other
/// appschema crates (the async pool in `appschema-async`): one text, one
/// decoder, whatever client runs it. Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use super::affinity::{Lot, Pick, TenantLog, Waiting};
    pub use super::error::describe_target;
    pub use super::hygiene::{
        with_startup_options, CHECKOUT_RESET, DIRTY_RESET, DIRTY_UNLISTEN, UNIT_RESET,
    };
    pub use super::lookup::PublicNameLookup;
    pub use super::plan_watch::PlanWatch;
    pub use super::retry::{begin_sql, UnitSwitch};
    pub use super::search_path::{
        classify, prepare_statement_sql, write_local_switch, write_seed, write_session_switch,
        ConnectRow, Refusal, SessionRefusal, CONNECT_QUERY,
    };
    pub use super::types::{PerTenantTypes, PER_TENANT_TYPES_QUERY};
}

pub use affinity::DEFAULT_MAX_TENANTS_PER_CONNECTION;
pub use customizer::TenantCustomizer;
pub use error::ConnectionError;
pub(crate) use lost::lost_after_failure;
pub use lost::{is_connection_lost, is_connection_lost_message};
pub use plan_watch::is_stale_plan;
pub use search_path::SearchPath;
pub use shared_pool::{ManagerError, SharedPool, SharedPoolBuilder, TenantConnection, TenantPool};
pub use state::PoolState;
pub use transaction::{
    in_shared_transaction, in_tenant_transaction, TransactionScopedPool,
    TransactionScopedPoolBuilder,
};
