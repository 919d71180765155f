//! Observability: the spans, events and metrics appschema emits.
//!
//! appschema reports through the ecosystem's facades, [`tracing`] for spans
//! and events and [`metrics`] for counters, gauges and histograms, and
//! installs neither a subscriber nor a recorder: the application picks them
//! (`tracing-subscriber`, a Prometheus exporter, OpenTelemetry…). With none
//! installed each call site costs a load and a branch.
//!
//! Every span and event has the target [`TARGET`] (`appschema`), so
//! `RUST_LOG=appschema=debug` shows them all. Spans and events carry the
//! tenant (its schema and, where known, its public name); **metric labels
//! never do**: a label per tenant would make one time series per tenant,
//! which no metrics store keeps for long. Labels are a handful of fixed
//! values (an outcome, a reason, a source).
//!
//! | span (level) | fields | where |
//! | --- | --- | --- |
//! | [`SPAN_CHECKOUT`] (debug) | `schema` (absent for shared work) | every pool checkout, sync and async |
//! | [`SPAN_UNIT`] (debug) | `schema` (absent for shared work) | one transaction-scoped unit of work |
//! | [`SPAN_TENANT`] (debug) | `public_name`, `schema` | a checkout by public name (parent of the checkout) |
//! | [`SPAN_MIGRATE`] (info) | | one `migrate` run |
//! | [`SPAN_MIGRATE_SCHEMA`] (debug) | `schema`, `public_name` | one schema's pending migrations of a step |
//! | [`SPAN_PROVISION`] (info) | `public_name`, `source` | one tenant creation |
//! | [`SPAN_EXEC_TENANT`] (debug) | `schema`, `public_name` | one tenant of an across-tenants run |
//!
//! Each unit of work inside a span ends with a `done` event carrying
//! `elapsed_ms` (its duration), and `failed = true` when it failed.
//!
//! | event (level) | `event` field | fields |
//! | --- | --- | --- |
//! | a checkout switched tenant (debug) | [`EVENT_SWITCH`] | `schema`, `tenants_served` |
//! | the reset found a role or `LISTEN` left behind (debug) | [`EVENT_DIRTY_RESET`] | |
//! | a connection closed instead of reused (debug) | [`EVENT_RETIRED`] | `reason` ([`Retired`]), `tenants_served` |
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | [`CHECKOUTS`] | counter | `pool` (`sync`, `async`), `outcome` (`ok`, `schema_missing`, `timeout`, `database_down`, `failed`) |
//! | [`CHECKOUT_SWITCHES`] | counter | `pool`: checkouts for a tenant other than the connection's previous one |
//! | [`CHECKOUT_SAME_TENANT`] | counter | `pool`: checkouts for the connection's previous tenant |
//! | [`CHECKOUT_WAIT`] | histogram (seconds) | `pool` |
//! | [`POOL_CONNECTIONS`], [`POOL_IDLE`] | gauge | `pool`, set at every checkout |
//! | [`CONNECTIONS_RETIRED`] | counter | `reason` |
//! | [`DIRTY_RESETS`] | counter | |
//! | [`MIGRATIONS_APPLIED`], [`MIGRATIONS_FAILED`] | counter | incremented once per run by its totals |
//! | [`TENANT_CREATION`] | histogram (seconds) | `source` (`migrations`, `template`, `spare`) |

use std::future::Future;
use std::time::Instant;

use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::connection::internals::PlanWatch;
use crate::connection::ConnectionError;
use crate::name::SchemaName;
use crate::provision::{Created, NewTenant, ProvisionError, Source};

/// The `tracing` target of every span and event appschema emits.
pub const TARGET: &str = "appschema";

/// Span: one pool checkout.
pub const SPAN_CHECKOUT: &str = "appschema.checkout";
/// Span: one transaction-scoped unit of work (`in_tenant_transaction`,
/// `TransactionScopedPool`).
pub const SPAN_UNIT: &str = "appschema.unit";
/// Span: a checkout by public name (resolution, then the checkout).
pub const SPAN_TENANT: &str = "appschema.tenant";
/// Span: one `migrate` run.
pub const SPAN_MIGRATE: &str = "appschema.migrate";
/// Span: one schema's migrations in one step of a run.
pub const SPAN_MIGRATE_SCHEMA: &str = "appschema.migrate.schema";
/// Span: one tenant creation.
pub const SPAN_PROVISION: &str = "appschema.provision";
/// Span: one tenant of an across-tenants run.
pub const SPAN_EXEC_TENANT: &str = "appschema.exec.tenant";

/// Event: a checkout put a connection on another tenant than its last.
pub const EVENT_SWITCH: &str = "switch";
/// Event: the checkout's reset found the session dirty (a role set, a
/// channel listened to) and reset it.
pub const EVENT_DIRTY_RESET: &str = "dirty_reset";
/// Event: a returned connection is closed rather than reused.
pub const EVENT_RETIRED: &str = "retired";

/// Counter: checkouts, by `pool` and `outcome`.
pub const CHECKOUTS: &str = "appschema_checkouts_total";
/// Counter: checkouts that switched a connection to another tenant.
pub const CHECKOUT_SWITCHES: &str = "appschema_checkout_switches_total";
/// Counter: checkouts for the tenant the connection last served.
pub const CHECKOUT_SAME_TENANT: &str = "appschema_checkout_same_tenant_total";
/// Histogram: seconds a checkout took (waiting, reset and switch).
pub const CHECKOUT_WAIT: &str = "appschema_checkout_wait_seconds";
/// Gauge: connections open in the pool.
pub const POOL_CONNECTIONS: &str = "appschema_pool_connections";
/// Gauge: idle connections in the pool.
pub const POOL_IDLE: &str = "appschema_pool_idle_connections";
/// Counter: connections closed instead of reused, by `reason`.
pub const CONNECTIONS_RETIRED: &str = "appschema_connections_retired_total";
/// Counter: checkouts whose reset found a role or `LISTEN` left behind.
pub const DIRTY_RESETS: &str = "appschema_dirty_resets_total";
/// Counter: migrations applied (summed over runs).
pub const MIGRATIONS_APPLIED: &str = "appschema_migrations_applied_total";
/// Counter: schemas whose migration failed (summed over runs).
pub const MIGRATIONS_FAILED: &str = "appschema_migrations_failed_total";
/// Histogram: seconds a tenant creation took, by `source`.
pub const TENANT_CREATION: &str = "appschema_tenant_creation_seconds";

/// Why a connection was closed instead of reused: the `reason` of
/// [`EVENT_RETIRED`] and label of [`CONNECTIONS_RETIRED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retired {
    /// It served `max_tenants_per_connection` distinct tenants.
    TenantBound,
    /// A cached statement went stale (`cached plan must not change result type`).
    StalePlan,
    /// A query found the connection lost.
    Lost,
    /// Closed, inside a transaction, or marked to be discarded.
    Broken,
}

impl Retired {
    /// The label value: `tenant_bound`, `stale_plan`, `lost` or `broken`.
    pub fn as_str(self) -> &'static str {
        match self {
            Retired::TenantBound => "tenant_bound",
            Retired::StalePlan => "stale_plan",
            Retired::Lost => "lost",
            Retired::Broken => "broken",
        }
    }
}

/// Which pool a checkout metric comes from: the `pool` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// [`SharedPool`](crate::connection::SharedPool) and `TenantPool`.
    Sync,
    /// The async pools of `appschema-async`.
    Async,
}

// Metric names and label values are literals at every macro call, so that
// each handle's key is a `static` (no hashing or allocation per event); the
// constants above name them for users and tests (which catch a drift).
macro_rules! by_pool {
    ($pool:expr, $mac:ident!($name:literal $(, $k:literal => $v:literal)*)) => {
        match $pool {
            PoolKind::Sync => metrics::$mac!($name, "pool" => "sync" $(, $k => $v)*),
            PoolKind::Async => metrics::$mac!($name, "pool" => "async" $(, $k => $v)*),
        }
    };
}

fn checkout_span(tenant: Option<&SchemaName>) -> Span {
    tracing::debug_span!(target: TARGET, SPAN_CHECKOUT, schema = tenant.map(SchemaName::as_str))
}

fn checkout_done<C>(pool: PoolKind, result: &Result<C, ConnectionError>, started: Instant) {
    let waited = started.elapsed().as_secs_f64();
    by_pool!(pool, histogram!("appschema_checkout_wait_seconds")).record(waited);
    let counter = match result {
        Ok(_) => by_pool!(
            pool,
            counter!("appschema_checkouts_total", "outcome" => "ok")
        ),
        Err(e) => {
            tracing::debug!(target: TARGET, error = %e, "checkout failed");
            match e {
                ConnectionError::SchemaMissing { .. } => by_pool!(
                    pool,
                    counter!("appschema_checkouts_total", "outcome" => "schema_missing")
                ),
                ConnectionError::PoolExhausted { .. } => by_pool!(
                    pool,
                    counter!("appschema_checkouts_total", "outcome" => "timeout")
                ),
                ConnectionError::DatabaseDown { .. } => by_pool!(
                    pool,
                    counter!("appschema_checkouts_total", "outcome" => "database_down")
                ),
                _ => by_pool!(
                    pool,
                    counter!("appschema_checkouts_total", "outcome" => "failed")
                ),
            }
        }
    };
    counter.increment(1);
}

/// Runs the checkout `f` from `pool` for `tenant` in a [`SPAN_CHECKOUT`]
/// span, counts it by outcome and records its duration and the pool's size.
pub(crate) fn checkout<M: r2d2::ManageConnection, C>(
    pool: &r2d2::Pool<M>,
    tenant: Option<&SchemaName>,
    f: impl FnOnce() -> Result<C, ConnectionError>,
) -> Result<C, ConnectionError> {
    let started = Instant::now();
    let result = checkout_span(tenant).in_scope(f);
    checkout_done(PoolKind::Sync, &result, started);
    let state = pool.state();
    pool_size(PoolKind::Sync, (state.connections, state.idle_connections));
    result
}

/// Runs the async checkout `f` for `tenant` in a [`SPAN_CHECKOUT`] span,
/// counts it by outcome and records its duration and the pool's size
/// (`state`: connections open, idle). For the async pools.
pub async fn checkout_async<C>(
    tenant: Option<&SchemaName>,
    state: impl FnOnce() -> (u32, u32),
    f: impl Future<Output = Result<C, ConnectionError>>,
) -> Result<C, ConnectionError> {
    let started = Instant::now();
    let result = f.instrument(checkout_span(tenant)).await;
    checkout_done(PoolKind::Async, &result, started);
    pool_size(PoolKind::Async, state());
    result
}

fn pool_size(pool: PoolKind, (open, idle): (u32, u32)) {
    by_pool!(pool, gauge!("appschema_pool_connections")).set(open);
    by_pool!(pool, gauge!("appschema_pool_idle_connections")).set(idle);
}

/// A [`SPAN_TENANT`] span for a checkout by `public_name`; the caller
/// records `schema` once resolved.
pub fn tenant_span(public_name: &str) -> Span {
    tracing::debug_span!(target: TARGET, SPAN_TENANT, public_name, schema = Empty)
}

/// Runs the async checkout by `public_name` (`f`) in its [`SPAN_TENANT`]
/// span; `f` calls [`tenant_resolved`] once it knows the schema.
pub async fn tenant_async<T>(
    public_name: &str,
    f: impl Future<Output = Result<T, ConnectionError>>,
) -> Result<T, ConnectionError> {
    f.instrument(tenant_span(public_name)).await
}

/// Records the schema a public name resolved to on the current
/// [`SPAN_TENANT`] span (see [`tenant_async`]).
pub fn tenant_resolved(schema: &SchemaName) {
    Span::current().record("schema", schema.as_str());
}

/// A checkout for `tenant` was recorded in the connection's log:
/// `switched` says whether the connection last served another tenant (or
/// none), `served` how many distinct tenants it has served.
pub fn tenant_recorded(pool: PoolKind, tenant: &SchemaName, switched: bool, served: usize) {
    if switched {
        by_pool!(pool, counter!("appschema_checkout_switches_total")).increment(1);
        tracing::debug!(
            target: TARGET,
            event = EVENT_SWITCH,
            schema = tenant.as_str(),
            tenants_served = served,
            "connection switched tenant"
        );
    } else {
        by_pool!(pool, counter!("appschema_checkout_same_tenant_total")).increment(1);
    }
}

/// The checkout's reset found a role or `LISTEN` left behind.
pub fn dirty_reset() {
    metrics::counter!("appschema_dirty_resets_total").increment(1);
    tracing::debug!(target: TARGET, event = EVENT_DIRTY_RESET, "session found dirty, reset");
}

/// A sync pool closes `conn` instead of reusing it: reports why. Always
/// `true` (it sits in the pool's `has_broken` condition).
pub(crate) fn retiring(conn: &mut diesel::PgConnection) -> bool {
    let broken = diesel::r2d2::R2D2Connection::is_broken(conn);
    retiring_in(diesel::Connection::instrumentation(conn), broken)
}

/// A pool closes the connection whose instrumentation is `watch` instead
/// of reusing it (`broken`: closed, or inside a transaction): reports why
/// ([`retired`]). Always `true`.
pub fn retiring_in(watch: &mut dyn diesel::connection::Instrumentation, broken: bool) -> bool {
    let reason = if PlanWatch::saw_stale_plan_in(watch) {
        Retired::StalePlan
    } else if PlanWatch::saw_connection_lost_in(watch) {
        Retired::Lost
    } else if broken {
        Retired::Broken
    } else {
        match PlanWatch::log_in(watch) {
            Some(log) if !log.discarded() => Retired::TenantBound,
            _ => Retired::Broken,
        }
    };
    let served = PlanWatch::log_in(watch).map_or(0, |log| log.served());
    retired(reason, served);
    true
}

/// A connection is closed instead of reused, for `reason`, having served
/// `served` distinct tenants.
pub fn retired(reason: Retired, served: usize) {
    let counter = match reason {
        Retired::TenantBound => {
            metrics::counter!("appschema_connections_retired_total", "reason" => "tenant_bound")
        }
        Retired::StalePlan => {
            metrics::counter!("appschema_connections_retired_total", "reason" => "stale_plan")
        }
        Retired::Lost => {
            metrics::counter!("appschema_connections_retired_total", "reason" => "lost")
        }
        Retired::Broken => {
            metrics::counter!("appschema_connections_retired_total", "reason" => "broken")
        }
    };
    counter.increment(1);
    tracing::debug!(
        target: TARGET,
        event = EVENT_RETIRED,
        reason = reason.as_str(),
        tenants_served = served,
        "connection retired"
    );
}

/// A unit of work inside its span: entered until dropped, when it emits a
/// `done` event with `elapsed_ms` (and `failed = true` after
/// [`Step::failed`]).
#[derive(Debug)]
#[must_use = "the step ends when dropped"]
pub struct Step {
    // Declared first: the `done` event is emitted in `drop`, before the
    // span is exited.
    span: tracing::span::EnteredSpan,
    started: Instant,
    failed: bool,
}

impl Step {
    fn enter(span: Span) -> Step {
        Step {
            span: span.entered(),
            started: Instant::now(),
            failed: false,
        }
    }

    /// Marks the unit as failed.
    pub fn failed(&mut self) {
        self.failed = true;
    }

    /// The span, to record fields known later.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if self.failed {
            tracing::debug!(target: TARGET, elapsed_ms, failed = true, "done");
        } else {
            tracing::debug!(target: TARGET, elapsed_ms, "done");
        }
    }
}

/// The caller's subscriber and current span, for worker threads: their
/// spans are children of the caller's (a `migrate` run's schemas under the
/// run), reported to the subscriber the caller sees (also one set for the
/// caller's thread only, as tests do).
#[derive(Debug)]
pub(crate) struct Parent {
    dispatch: tracing::Dispatch,
    span: Span,
}

impl Parent {
    /// The current thread's subscriber and span.
    pub(crate) fn current() -> Parent {
        Parent {
            dispatch: tracing::dispatcher::get_default(Clone::clone),
            span: Span::current(),
        }
    }

    /// Makes them the current thread's until the guards are dropped.
    pub(crate) fn enter(
        &self,
    ) -> (
        tracing::dispatcher::DefaultGuard,
        tracing::span::Entered<'_>,
    ) {
        let guard = tracing::dispatcher::set_default(&self.dispatch);
        (guard, self.span.enter())
    }
}

/// The [`SPAN_UNIT`] span of one transaction-scoped unit of work.
pub(crate) fn unit(tenant: Option<&SchemaName>) -> Step {
    Step::enter(unit_span(tenant))
}

fn unit_span(tenant: Option<&SchemaName>) -> Span {
    tracing::debug_span!(
        target: TARGET,
        SPAN_UNIT,
        schema = tenant.map(SchemaName::as_str)
    )
}

/// An async transaction-scoped unit of work (`f`) in its [`SPAN_UNIT`]
/// span, ending with the `done` event [`Step`] emits on the sync side.
pub async fn unit_async<T, E>(
    tenant: Option<&SchemaName>,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = unit_span(tenant);
    let started = Instant::now();
    let result = f.instrument(span.clone()).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if result.is_err() {
            tracing::debug!(target: TARGET, elapsed_ms, failed = true, "done");
        } else {
            tracing::debug!(target: TARGET, elapsed_ms, "done");
        }
    });
    result
}

/// The [`SPAN_MIGRATE`] span of one run.
pub fn migrate_run() -> Step {
    Step::enter(tracing::info_span!(target: TARGET, SPAN_MIGRATE))
}

/// The run's totals, into [`MIGRATIONS_APPLIED`] and [`MIGRATIONS_FAILED`].
pub fn migrate_totals(applied: usize, failed: usize) {
    metrics::counter!("appschema_migrations_applied_total").increment(applied as u64);
    metrics::counter!("appschema_migrations_failed_total").increment(failed as u64);
    tracing::info!(target: TARGET, applied, failed, "migrate run finished");
}

/// The [`SPAN_MIGRATE_SCHEMA`] span of one schema's migrations in a step.
pub fn migrate_schema(schema: &str, public_name: Option<&str>) -> Step {
    Step::enter(tracing::debug_span!(
        target: TARGET,
        SPAN_MIGRATE_SCHEMA,
        schema,
        public_name
    ))
}

/// The [`SPAN_EXEC_TENANT`] span of one tenant of an across-tenants run.
pub fn exec_tenant(schema: &SchemaName, public_name: &str) -> Step {
    Step::enter(tracing::debug_span!(
        target: TARGET,
        SPAN_EXEC_TENANT,
        schema = schema.as_str(),
        public_name
    ))
}

/// Runs the creation `f` of the tenant `request` asks for in a
/// [`SPAN_PROVISION`] span, and records its duration in [`TENANT_CREATION`]
/// by the source it used. `source`: the source asked for, when not the
/// request's.
pub(crate) fn provision(
    request: &NewTenant,
    source: Option<Source>,
    f: impl FnOnce() -> Result<Created, ProvisionError>,
) -> Result<Created, ProvisionError> {
    let mut step = Step::enter(tracing::info_span!(
        target: TARGET,
        SPAN_PROVISION,
        public_name = request.public_name().as_str(),
        source = source.unwrap_or(request.source_kind()).as_str(),
        schema = Empty
    ));
    let result = f();
    match &result {
        Ok(created) => {
            step.span().record("source", created.source.as_str());
            step.span()
                .record("schema", created.tenant.schema_name.as_str());
            let histogram = match created.source {
                Source::Template => {
                    metrics::histogram!("appschema_tenant_creation_seconds", "source" => "template")
                }
                Source::Spare => {
                    metrics::histogram!("appschema_tenant_creation_seconds", "source" => "spare")
                }
                _ => {
                    metrics::histogram!("appschema_tenant_creation_seconds", "source" => "migrations")
                }
            };
            histogram.record(step.started.elapsed().as_secs_f64());
        }
        Err(e) => {
            step.failed();
            tracing::debug!(target: TARGET, error = %e, "tenant creation failed");
        }
    }
    result
}
