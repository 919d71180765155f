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

use diesel::connection::{get_default_instrumentation, Instrumentation, InstrumentationEvent};
use diesel::{Connection, PgConnection};

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
        }
    }

    /// Installs the watch on `conn`, keeping the default instrumentation.
    pub(crate) fn install(conn: &mut PgConnection) {
        conn.set_instrumentation(PlanWatch::new());
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
    /// may have: `true` when the instrumentation is not a `PlanWatch` (see
    /// [`PlanWatch::is_installed_in`]), so a pool closes the connection
    /// rather than hand it on in an unknown state.
    pub fn query_in_flight(instrumentation: &dyn Instrumentation) -> bool {
        instrumentation
            .downcast_ref::<PlanWatch>()
            .is_none_or(|watch| watch.in_flight > 0)
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
                }
            }
            _ => {}
        }
        if let Some(inner) = &mut self.inner {
            inner.on_connection_event(event);
        }
    }
}
