//! Spotting pooled connections whose cached statements went stale.
//!
//! A statement diesel prepared (and caches per connection) is bound to the
//! result type it was planned with. When a migration changes that type
//! (`ALTER COLUMN … TYPE`), or the same statement runs for a tenant whose
//! table has another shape, PostgreSQL refuses it with `cached plan must not
//! change result type` (SQLSTATE 0A000) — and keeps refusing it on that
//! connection every time, since diesel neither re-prepares nor forgets it.
//! Left alone, one `ALTER COLUMN … TYPE` deploy would fail that query on
//! every pooled connection until each reached its maximum lifetime.
//!
//! [`PlanWatch`] wraps the connection's instrumentation (diesel's hook that
//! sees every query's outcome) and remembers that the error happened; the
//! pool then closes the connection when it is returned, so each connection
//! fails such a query at most once and the next checkout gets a fresh one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use diesel::connection::{get_default_instrumentation, Instrumentation, InstrumentationEvent};
use diesel::{Connection, PgConnection};

use super::affinity::TenantLog;
use super::types::PerTenantTypes;

/// The message PostgreSQL gives SQLSTATE 0A000 for a re-planned prepared
/// statement (diesel does not expose SQLSTATEs). With a non-English
/// `lc_messages` on the server it is not recognised and such connections
/// are only replaced at their maximum lifetime.
const STALE_PLAN: &str = "cached plan must not change result type";

/// Whether `error` is PostgreSQL refusing a cached statement whose result
/// type changed (`cached plan must not change result type`). It is
/// transient on a [`SharedPool`](super::SharedPool): the connection that
/// raised it is closed when it is returned, so running the work again on a
/// new checkout succeeds (a web handler can answer "retry later").
///
/// ```
/// use appschema::connection::is_stale_plan;
/// assert!(!is_stale_plan(&diesel::result::Error::NotFound));
/// ```
pub fn is_stale_plan(error: &diesel::result::Error) -> bool {
    match error {
        diesel::result::Error::DatabaseError(_, info) => info.message().contains(STALE_PLAN),
        _ => false,
    }
}

/// The connection's instrumentation: diesel's default one (if the
/// application set one with `set_default_instrumentation`), to which every
/// event is passed on, plus the stale-plan flag and a count of queries
/// started and not (yet) finished.
///
/// The count is what an async pool needs: a future dropped while its query
/// was in flight never sees the query finish, so a connection handed back
/// with queries in flight is in an unknown state (results still coming,
/// a transaction maybe open, the server maybe still running the statement)
/// and must not be reused.
pub struct PlanWatch {
    inner: Option<Box<dyn Instrumentation>>,
    stale: bool,
    in_flight: u32,
    /// What the last checkout switched the connection to (see
    /// [`PlanWatch::serves`]); `None` on a new connection.
    served: Option<String>,
    /// Row streams opened on the connection through the async pools'
    /// guarded `load_stream` and not read to their end (see
    /// [`PlanWatch::stream_counter`]).
    open_streams: Arc<AtomicUsize>,
    /// A query failed because the connection was lost
    /// ([`is_connection_lost`](super::is_connection_lost)).
    lost: bool,
    /// What the connection served (see `affinity`): kept here so it lives
    /// and dies with the connection, on the sync and the async client.
    log: TenantLog,
    /// The pool's per-tenant types setting, when a change of path must
    /// forget the connection's prepared statements (see `types`).
    per_tenant_types: Option<Arc<PerTenantTypes>>,
}

impl std::fmt::Debug for PlanWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanWatch")
            .field("stale", &self.stale)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Default for PlanWatch {
    fn default() -> Self {
        PlanWatch::new()
    }
}

impl PlanWatch {
    /// A watch passing every event on to diesel's default instrumentation.
    pub fn new() -> PlanWatch {
        PlanWatch {
            inner: get_default_instrumentation(),
            stale: false,
            in_flight: 0,
            served: None,
            open_streams: Arc::new(AtomicUsize::new(0)),
            lost: false,
            log: TenantLog::new(),
            per_tenant_types: None,
        }
    }

    /// The [`TenantLog`] of the connection whose instrumentation is
    /// `instrumentation`; `None` when it is not a `PlanWatch` (the
    /// application replaced it: no tenant bound applies then).
    pub fn log_in(instrumentation: &mut dyn Instrumentation) -> Option<&mut TenantLog> {
        instrumentation
            .downcast_mut::<PlanWatch>()
            .map(|watch| &mut watch.log)
    }

    /// Installs the watch on `conn`, keeping the default instrumentation.
    pub(crate) fn install(conn: &mut PgConnection) {
        conn.set_instrumentation(PlanWatch::new());
    }

    /// Installs the watch on `conn` with its pool's per-tenant types
    /// setting: a change of path then forgets the connection's prepared
    /// statements where the database has such types (see `types`).
    pub(crate) fn install_with_types(conn: &mut PgConnection, types: Arc<PerTenantTypes>) {
        let mut watch = PlanWatch::new();
        watch.per_tenant_types = Some(types);
        conn.set_instrumentation(watch);
    }

    /// The per-tenant types setting the pool gave the connection whose
    /// instrumentation is `instrumentation`, if any.
    pub(crate) fn per_tenant_types_in(
        instrumentation: &dyn Instrumentation,
    ) -> Option<Arc<PerTenantTypes>> {
        instrumentation
            .downcast_ref::<PlanWatch>()
            .and_then(|watch| watch.per_tenant_types.clone())
    }

    /// Whether the connection whose instrumentation is `instrumentation`
    /// saw a stale cached plan (see [`PlanWatch::saw_stale_plan`]), or may
    /// have: `true` when the instrumentation is not a `PlanWatch` (see
    /// [`PlanWatch::is_installed_in`]), so a pool closes the connection
    /// rather than serve it with the watch off.
    pub fn saw_stale_plan_in(instrumentation: &dyn Instrumentation) -> bool {
        instrumentation
            .downcast_ref::<PlanWatch>()
            .is_none_or(|watch| watch.stale)
    }

    /// Whether the connection whose instrumentation is `instrumentation`
    /// has a query started and never finished (its future was dropped), or
    /// may have, or has a guarded row stream not read to its end (its
    /// statement may still run): `true` also when the instrumentation is
    /// not a `PlanWatch` (see [`PlanWatch::is_installed_in`]), so a pool
    /// closes the connection rather than hand it on in an unknown state.
    pub fn query_in_flight(instrumentation: &dyn Instrumentation) -> bool {
        instrumentation
            .downcast_ref::<PlanWatch>()
            .is_none_or(|watch| {
                watch.in_flight > 0 || watch.open_streams.load(Ordering::Acquire) > 0
            })
    }

    /// Whether `instrumentation` is appschema's watch. Code holding a
    /// pooled connection can replace it (`set_instrumentation` through
    /// `DerefMut`); the pool then knows nothing of the queries run since,
    /// so it closes that connection when it comes back instead of reusing
    /// it: fail closed. To instrument pooled connections, set diesel's
    /// default instrumentation (`diesel::connection::set_default_instrumentation`)
    /// before the pool opens them: the watch passes every event on to it.
    pub fn is_installed_in(instrumentation: &dyn Instrumentation) -> bool {
        instrumentation.downcast_ref::<PlanWatch>().is_some()
    }

    /// The count of guarded row streams open on the connection whose
    /// instrumentation is `instrumentation`: a stream adds one when it
    /// opens and takes it back when it has read its last row, so a stream
    /// dropped before its end (its statement still running on the server)
    /// leaves the count above zero. `None` when the instrumentation is not
    /// a `PlanWatch`.
    pub fn stream_counter(instrumentation: &mut dyn Instrumentation) -> Option<Arc<AtomicUsize>> {
        instrumentation
            .downcast_ref::<PlanWatch>()
            .map(|watch| Arc::clone(&watch.open_streams))
    }

    /// Records that the connection whose instrumentation is
    /// `instrumentation` is being switched to `switch` (any text naming
    /// the path: the checkout message, or the path itself), and says
    /// whether it was switched to something else before: `false` for a new
    /// connection or the same path again; `true` too when the
    /// instrumentation is not a `PlanWatch` (the application replaced it,
    /// so nothing is known).
    ///
    /// The async pools use it to keep a connection whose client may hold
    /// one tenant's custom type OIDs (diesel-async caches them by name and
    /// offers no way to empty the cache) from another tenant.
    pub fn serves(instrumentation: &mut dyn Instrumentation, switch: &str) -> bool {
        let Some(watch) = instrumentation.downcast_mut::<PlanWatch>() else {
            return true;
        };
        match &mut watch.served {
            Some(served) if served == switch => false,
            Some(served) => {
                served.clear();
                served.push_str(switch);
                true
            }
            None => {
                watch.served = Some(switch.to_string());
                false
            }
        }
    }

    /// Whether a query on the connection whose instrumentation is
    /// `instrumentation` failed because the connection was lost (see
    /// [`is_connection_lost`](super::is_connection_lost)): such a
    /// connection is closed, never handed out again. `false` when the
    /// instrumentation is not a `PlanWatch`.
    pub fn saw_connection_lost_in(instrumentation: &dyn Instrumentation) -> bool {
        instrumentation
            .downcast_ref::<PlanWatch>()
            .is_some_and(|watch| watch.lost)
    }

    /// Whether a query on `conn` failed with a stale cached plan since the
    /// watch was installed; `true` if the application replaced the
    /// connection's instrumentation (see [`PlanWatch::is_installed_in`]).
    pub(crate) fn saw_stale_plan(conn: &mut PgConnection) -> bool {
        PlanWatch::saw_stale_plan_in(conn.instrumentation())
    }
}

impl Instrumentation for PlanWatch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match &event {
            InstrumentationEvent::StartQuery { .. } => self.in_flight += 1,
            InstrumentationEvent::FinishQuery { error, .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if let Some(error) = error {
                    self.stale |= is_stale_plan(error);
                    self.lost |= super::is_connection_lost(error);
                }
            }
            _ => {}
        }
        if let Some(inner) = &mut self.inner {
            inner.on_connection_event(event);
        }
    }
}
