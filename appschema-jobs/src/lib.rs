//! # appschema-jobs
//!
//! Background jobs that carry the tenant, on the [fang](https://docs.rs/fang)
//! job queue (its blocking side: diesel and r2d2, the stack appschema runs
//! on). Applications use it as `appschema::jobs` (feature `jobs`).
//!
//! A job records its tenant by **registry id** (`appschema_tenants.id`),
//! never by schema or public name: both can be renamed, and a dropped
//! tenant's schema name is never reused, so only the id says whose work it
//! is. When a worker runs the job it resolves the id to the tenant's current
//! schema, checks a connection out of the application's [`SharedPool`](appschema_core::SharedPool) for
//! it (the checkout hygiene every request gets) and runs the job inside one
//! transaction that first takes a share lock on the tenant's registry row: a
//! rename or drop waits for the job to commit, and a job never runs on a
//! schema the id no longer names.
//!
//! - **Renamed** meanwhile: the job runs in the new schema.
//! - **Dropped or archived** meanwhile: the job fails permanently with
//!   [`JobError::TenantGone`]; it is not retried, it stays in `fang_tasks`
//!   with state `failed` and that message, and it touches no schema.
//! - **Delivery is at least once**: the job's transaction and fang's
//!   completion of the task are two transactions, so a worker that dies
//!   between them leaves the task `in_progress` (fang does not pick those up
//!   again; reset them to `new` to run them once more). A job whose
//!   transaction fails is rolled back and retried with fang's backoff.
//!
//! ```no_run
//! use appschema::jobs::{enqueue, install_queue, Context, JobError, TenantJob, Workers};
//! use appschema::registry::Tenant;
//! use diesel::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome { email: String }
//!
//! impl TenantJob for Welcome {
//!     const NAME: &'static str = "welcome";
//!     fn run(&self, conn: &mut PgConnection, _tenant: &Tenant) -> Result<(), JobError> {
//!         diesel::sql_query("INSERT INTO outbox (body) VALUES ($1)")
//!             .bind::<diesel::sql_types::Text, _>(format!("welcome, {}", self.email))
//!             .execute(conn)?;
//!         Ok(())
//!     }
//! }
//!
//! let pool = appschema::SharedPool::builder("postgres:///app").build()?;
//! install_queue(&mut *pool.get_shared()?)?;
//! let context = Context::new(pool.clone()).register::<Welcome>();
//! Workers::new(context).number_of_workers(2).start()?;
//!
//! // In a request for tenant 42, inside its transaction: the job commits
//! // with the request's writes, or not at all.
//! let mut conn = pool.get_for(&appschema::SchemaName::new("acme")?)?;
//! conn.transaction(|conn| {
//!     enqueue(conn, 42, &Welcome { email: "ada@acme.test".into() })
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod context;
mod error;
mod queue;
mod task;

pub use context::{Context, Workers};
pub use error::JobError;
pub use queue::{
    enqueue, enqueue_for_every_tenant, install_queue, schedule_for_every_tenant, ENQUEUE_SQL,
    QUEUE_SQL,
};
pub use task::{ForEveryTenant, TenantJob, TenantTask, DEFAULT_QUEUE};

/// fang itself, for what this crate does not wrap (its `Queue`, task states,
/// retention modes).
pub use fang;
