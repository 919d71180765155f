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
/// event is passed on, plus the stale-plan flag.
pub(crate) struct PlanWatch {
    inner: Option<Box<dyn Instrumentation>>,
    stale: bool,
}

impl PlanWatch {
    /// Installs the watch on `conn`, keeping the default instrumentation.
    pub(crate) fn install(conn: &mut PgConnection) {
        conn.set_instrumentation(PlanWatch {
            inner: get_default_instrumentation(),
            stale: false,
        });
    }

    /// Whether a query on `conn` failed with a stale cached plan since the
    /// watch was installed. `false` if the application replaced the
    /// connection's instrumentation.
    pub(crate) fn saw_stale_plan(conn: &mut PgConnection) -> bool {
        conn.instrumentation()
            .downcast_ref::<PlanWatch>()
            .is_some_and(|watch| watch.stale)
    }
}

impl Instrumentation for PlanWatch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery {
            error: Some(error), ..
        } = &event
        {
            self.stale |= is_stale_plan(error);
        }
        if let Some(inner) = &mut self.inner {
            inner.on_connection_event(event);
        }
    }
}
