//! Running work in every tenant (or a chosen set): backfills, nightly jobs,
//! one-off fixes. The executor `migrate` runs on, offered to applications.
//!
//! - **On the tenant's path**: each tenant's work gets a connection whose
//!   `search_path` is `"<tenant>", "public"`, set only after checking, in
//!   the same statement, that the tenant's schema exists (a schema dropped
//!   by hand never sends the work to the shared tables instead).
//! - **One transaction per tenant** (by default): a tenant's work commits
//!   whole or not at all; diesel's `Connection::transaction` inside the work
//!   becomes a savepoint.
//! - **Failures are isolated**: a tenant whose work fails (or panics) is
//!   rolled back and reported ([`Failure`]: tenant, schema, message); the
//!   other tenants go on.
//! - **Lost connections**: a tenant whose connection is lost (a restart, a
//!   failover, `pg_terminate_backend`) before its transaction's `COMMIT`
//!   was sent is run once more on a new connection; lost while committing
//!   (or during a [`run_sql`](AcrossTenants::run_sql) batch, one message
//!   from `BEGIN` to `COMMIT`) it is reported, saying it may have
//!   committed. Either way the worker goes on with a new connection.
//! - **Parallel**: `jobs` workers, each with its own connection (the pool
//!   [`Migrator`](crate::Migrator) uses).
//! - **Progress**: [`Event`]s from the workers, then a [`Report`].
//!
//! ```no_run
//! use appschema::across::AcrossTenants;
//! use diesel::connection::SimpleConnection;
//!
//! let report = AcrossTenants::new("postgres:///app")
//!     .jobs(4)
//!     .run(
//!         // Unqualified tables are the tenant's own.
//!         |conn, _tenant| conn.batch_execute("UPDATE orders SET total = 0 WHERE total IS NULL"),
//!         &|_event| {},
//!     )
//!     .unwrap();
//! for failure in &report.failures {
//!     eprintln!("{failure}");
//! }
//! ```

mod error;
mod report;

use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::fmt::Display;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Instant;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;

pub use error::AcrossError;
pub use report::{Event, Failure, Report};

use crate::connection::{is_connection_lost, SearchPath};
use crate::name::{quote_literal, PublicName};
use crate::registry::{self, Tenant};

/// Runs work in every tenant; see the [module docs](self). Its `Debug`
/// shows the URL with the password replaced by `***`.
#[derive(Clone)]
pub struct AcrossTenants {
    database_url: String,
    jobs: usize,
    path: SearchPath,
    tenants: Option<Vec<PublicName>>,
    per_tenant_transaction: bool,
}

impl std::fmt::Debug for AcrossTenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcrossTenants")
            .field(
                "database_url",
                &crate::redact::redact_url(&self.database_url),
            )
            .field("jobs", &self.jobs)
            .field("path", &self.path)
            .field("tenants", &self.tenants)
            .field("per_tenant_transaction", &self.per_tenant_transaction)
            .finish()
    }
}

impl AcrossTenants {
    /// A runner for the database at `database_url`. Defaults: jobs = number
    /// of CPUs, every
    /// tenant of the registry, one transaction per tenant, the path
    /// `"<tenant>", "public"`.
    pub fn new(database_url: impl Into<String>) -> AcrossTenants {
        AcrossTenants {
            database_url: database_url.into(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            path: SearchPath::new(),
            tenants: None,
            per_tenant_transaction: true,
        }
    }

    /// Parallel workers, each with its own connection. Default: the number
    /// of CPUs. At least 1.
    pub fn jobs(mut self, jobs: usize) -> AcrossTenants {
        self.jobs = jobs.max(1);
        self
    }

    /// Only these tenants (by any of their public names), in this order;
    /// a name no tenant answers to fails the run before anything runs.
    /// Default: every tenant, by primary public name.
    pub fn only_tenants(mut self, tenants: Vec<PublicName>) -> AcrossTenants {
        self.tenants = Some(tenants);
        self
    }

    /// The path each tenant's work runs on (shared schema, extra schemas).
    /// Default: [`SearchPath::new`] (`"<tenant>", "public"`).
    pub fn search_path(mut self, path: SearchPath) -> AcrossTenants {
        self.path = path;
        self
    }

    /// Whether each tenant's work runs in a transaction of its own. Default:
    /// `true`. With `false` the path is set for the session, the work runs
    /// in autocommit (what it committed before failing stays), and the path
    /// goes back to the shared schema after each tenant; use it for work
    /// that cannot run in a transaction (`CREATE INDEX CONCURRENTLY`) or
    /// commits in batches itself.
    pub fn per_tenant_transaction(mut self, yes: bool) -> AcrossTenants {
        self.per_tenant_transaction = yes;
        self
    }

    fn connect(&self) -> Result<PgConnection, AcrossError> {
        let mut conn = PgConnection::establish(&self.database_url).map_err(|e| {
            AcrossError::Connect(crate::redact::redact_connection_error(
                e,
                &self.database_url,
            ))
        })?;
        conn.batch_execute("SET client_min_messages TO warning")
            .map_err(AcrossError::Database)?;
        Ok(conn)
    }

    /// The tenants the work goes to, in order (each once).
    pub fn tenants(&self, conn: &mut PgConnection) -> Result<Vec<Tenant>, AcrossError> {
        let mut out = match &self.tenants {
            None => registry::list(conn).map_err(AcrossError::Database)?,
            Some(names) => names
                .iter()
                .map(|name| {
                    registry::find(conn, name)
                        .map_err(AcrossError::Database)?
                        .ok_or_else(|| AcrossError::UnknownTenant(name.as_str().to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut seen = BTreeSet::new();
        out.retain(|t| seen.insert(t.id));
        Ok(out)
    }

    /// Runs `work` once per tenant, on a connection on the tenant's path
    /// (inside the tenant's transaction, by default). A tenant whose `work`
    /// returns `Err` or panics is rolled back and listed in
    /// [`Report::failures`]; `Err` from `run` means the run could not start
    /// (connection, registry, unknown tenant) or every worker lost its
    /// connection.
    pub fn run<F, E>(
        &self,
        work: F,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Report, AcrossError>
    where
        F: Fn(&mut PgConnection, &Tenant) -> Result<(), E> + Sync,
        E: Display,
    {
        let per_tenant = |conn: &mut PgConnection, tenant: &Tenant| -> Result<(), TenantError> {
            let path = self.path.for_tenant(&tenant.schema_name);
            if self.per_tenant_transaction {
                // By hand rather than `Connection::transaction`, to know
                // whether a lost connection was lost before `COMMIT` was
                // sent (nothing committed: the tenant is run again) or
                // while it was on its way (the outcome is unknown).
                let describe_work = |e: WorkError<E>| match e {
                    WorkError::Database(e) => describe(&e, tenant),
                    WorkError::Work(e) => e.to_string(),
                };
                AnsiTransactionManager::begin_transaction(conn).map_err(|e| TenantError {
                    retry: is_connection_lost(&e),
                    message: describe(&e, tenant),
                })?;
                let result = enter(conn, tenant, &path, true)
                    .map_err(WorkError::Database)
                    .and_then(|()| work(conn, tenant).map_err(WorkError::Work));
                match result {
                    Ok(()) => {
                        AnsiTransactionManager::commit_transaction(conn).map_err(|e| TenantError {
                            retry: false,
                            message: if is_connection_lost(&e) {
                                format!(
                                    "{}; the connection was lost while committing, so the work \
                                     may or may not have committed: check this tenant before \
                                     running it again (--tenant)",
                                    describe(&e, tenant)
                                )
                            } else {
                                describe(&e, tenant)
                            },
                        })
                    }
                    Err(error) => match AnsiTransactionManager::rollback_transaction(conn) {
                        Err(rollback) if is_connection_lost(&rollback) => Err(TenantError {
                            retry: true,
                            message: describe_work(error),
                        }),
                        _ => Err(TenantError::from(describe_work(error))),
                    },
                }
            } else {
                let result = enter(conn, tenant, &path, false)
                    .map_err(|e| describe(&e, tenant))
                    .and_then(|()| work(conn, tenant).map_err(|e| e.to_string()));
                let reset = conn
                    .batch_execute(&format!("SET search_path TO {}", self.path.shared_only()))
                    .map_err(|e| format!("cannot reset the search_path afterwards: {e}"));
                result.and(reset).map_err(TenantError::from)
            }
        };
        self.run_each(&per_tenant, on_event)
    }

    /// Runs the SQL `sql` (one or more statements) in every tenant, in one
    /// round trip per tenant: `BEGIN`, the path, `sql`, `COMMIT`. A tenant
    /// where it fails is rolled back and listed in [`Report::failures`].
    /// Always one transaction per tenant, whatever
    /// [`per_tenant_transaction`](AcrossTenants::per_tenant_transaction)
    /// says; `sql` must not commit or roll back itself.
    ///
    /// ```no_run
    /// use appschema::across::AcrossTenants;
    /// let report = AcrossTenants::new("postgres:///app")
    ///     .jobs(4)
    ///     .run_sql("UPDATE orders SET total = 0 WHERE total IS NULL", &|_| {})
    ///     .unwrap();
    /// assert!(report.is_success(), "{:?}", report.failures);
    /// ```
    pub fn run_sql(
        &self,
        sql: &str,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Report, AcrossError> {
        // On Citus, statement by statement (see `citus::execute_script`).
        let citus = crate::citus::is_citus(&mut self.connect()?).map_err(AcrossError::Database)?;
        let per_tenant = |conn: &mut PgConnection, tenant: &Tenant| -> Result<(), TenantError> {
            let path = self.path.for_tenant(&tenant.schema_name);
            let batch = format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED;\n{};\n{sql}\n;\nCOMMIT;",
                enter_sql(tenant, &path, true)
            );
            crate::citus::execute_script(conn, &batch, citus).map_err(|e| {
                let _ = conn.batch_execute("ROLLBACK");
                if is_connection_lost(&e) {
                    // One message from BEGIN to COMMIT: where it stopped is
                    // not known.
                    TenantError::from(format!(
                        "{}; the connection was lost during the tenant's batch, so it may or may \
                         not have committed: check this tenant before running it again (--tenant)",
                        describe(&e, tenant)
                    ))
                } else {
                    TenantError::from(describe(&e, tenant))
                }
            })
        };
        self.run_each(&per_tenant, on_event)
    }

    /// Hands the tenants to the workers and collects what each did.
    ///
    /// A tenant whose connection was lost (a restart, a failover,
    /// `pg_terminate_backend`) is followed by a new connection for the
    /// worker, and run once more on it when nothing of it can have
    /// committed (`TenantError::retry`).
    fn run_each(
        &self,
        per_tenant: &(dyn Fn(&mut PgConnection, &Tenant) -> Result<(), TenantError> + Sync),
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Report, AcrossError> {
        let started = Instant::now();
        let mut conns = vec![self.connect()?];
        let tenants = self.tenants(&mut conns[0])?;
        on_event(Event::Started {
            tenants: tenants.len(),
        });
        let queue = Mutex::new(tenants.into_iter().collect::<VecDeque<_>>());
        let report = Mutex::new(Report::default());
        let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let connect = || self.connect();
        let handle = |conn: &mut PgConnection, tenant: Tenant| -> Result<(), AcrossError> {
            let mut step = crate::observe::exec_tenant(&tenant.schema_name, &tenant.public_name);
            let run = |conn: &mut PgConnection| {
                std::panic::catch_unwind(AssertUnwindSafe(|| per_tenant(conn, &tenant)))
            };
            let mut outcome = run(conn);
            if let Ok(Err(TenantError { retry: true, .. })) = outcome {
                // Lost before anything committed: once more, on a new
                // connection.
                *conn = self.connect()?;
                outcome = run(conn);
            }
            let (result, reconnect) = match outcome {
                Ok(Ok(())) => (Ok(()), false),
                Ok(Err(TenantError { message, .. })) => {
                    let lost = crate::connection::lost_after_failure(conn);
                    (Err(message), lost)
                }
                Err(panic) => (Err(format!("panicked: {}", panic_message(&panic))), true),
            };
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    r.tenants_done += 1;
                    on_event(Event::TenantDone {
                        tenant: tenant.public_name,
                        schema: tenant.schema_name.as_str().to_string(),
                    });
                }
                Err(message) => {
                    step.failed();
                    let failure = Failure {
                        tenant: tenant.public_name,
                        schema: tenant.schema_name.as_str().to_string(),
                        message,
                    };
                    on_event(Event::TenantFailed(failure.clone()));
                    r.failures.push(failure);
                }
            }
            drop(r);
            if reconnect {
                // The work panicked with its transaction open (diesel's
                // transaction manager still counts it), or the connection
                // was lost: a new session is the only clean one; dropping
                // the old one rolls it back.
                *conn = self.connect()?;
            }
            Ok(())
        };
        let workers = self.jobs.min(queue.lock().map_or(1, |q| q.len()).max(1));
        crate::workers::run_workers(workers, &mut conns, &connect, &next, &handle)?;
        let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// The statement that sets `path` (for the transaction, or the session)
/// only if the tenant's schema exists, and fails naming it otherwise: a
/// path whose first schema is missing would resolve the tenant's tables in
/// the shared schema. The refusal is a cast of a marked text to `int4`; the
/// text includes `pg_backend_pid()` so the planner cannot fold the cast into
/// a constant and raise it when the branch is not taken.
fn enter_sql(tenant: &Tenant, path: &str, local: bool) -> String {
    let schema = quote_literal(tenant.schema_name.as_str());
    format!(
        "SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_namespace \
                                   WHERE nspname OPERATOR(pg_catalog.=) {schema}) \
              THEN pg_catalog.set_config('search_path', {path}, {local}) \
              ELSE CAST('{MISSING_SCHEMA} ' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid() AS pg_catalog.int4)::text END",
        path = quote_literal(path),
    )
}

/// The marker of [`enter_sql`]'s refusal.
const MISSING_SCHEMA: &str = "appschema:no-such-schema";

fn enter(conn: &mut PgConnection, tenant: &Tenant, path: &str, local: bool) -> QueryResult<()> {
    conn.batch_execute(&enter_sql(tenant, path, local))
}

/// PostgreSQL's message, or what the missing-schema guard means.
fn describe(e: &diesel::result::Error, tenant: &Tenant) -> String {
    let message = match e {
        diesel::result::Error::DatabaseError(_, info) => info.message().to_string(),
        other => other.to_string(),
    };
    if message.contains(MISSING_SCHEMA) {
        format!(
            "schema `{}` of tenant `{}` does not exist: it was dropped or renamed outside appschema; \
             drop the tenant (`appschema-cli dropschema`) or recreate its schema",
            tenant.schema_name, tenant.public_name
        )
    } else {
        message
    }
}

/// Why one tenant's work failed, and whether it may run again (the
/// connection was lost before anything could have committed).
struct TenantError {
    message: String,
    retry: bool,
}

impl From<String> for TenantError {
    fn from(message: String) -> TenantError {
        TenantError {
            message,
            retry: false,
        }
    }
}

/// What failed inside a tenant's transaction: appschema's statements or the
/// caller's work.
enum WorkError<E> {
    Database(diesel::result::Error),
    Work(E),
}

impl<E> From<diesel::result::Error> for WorkError<E> {
    fn from(e: diesel::result::Error) -> Self {
        WorkError::Database(e)
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}
