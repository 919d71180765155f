//! The async drivers of the connection protocol's steps
//! (`appschema_core::connection::internals`: `SessionSwitch`,
//! `PathChange`, `Unit`), on an [`AsyncPgConnection`]: they run what a step
//! asks for and feed back what came back; every decision is the step's, the
//! same the sync pools drive.

use std::sync::atomic::Ordering;

use appschema_core::connection::internals::{
    write_checkout_message, Action, Input, PathChange, PerTenantTypes, PlanWatch, SessionRefusal,
    SessionSwitch, Step, TypeCache, Unit, UnitAction, UnitEnd, UnitInput, UnitMode, UnitSwitch,
};
use appschema_core::connection::ConnectionError;
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use futures_util::{FutureExt, StreamExt};
use scoped_futures::ScopedBoxFuture;

/// Runs a switch step ([`SessionSwitch`] or [`PathChange`]) on `conn`.
/// diesel-async's cache of custom type OIDs cannot be emptied
/// ([`TypeCache::Fixed`]): the path a connection serves is kept in its
/// `PlanWatch` instead.
pub(crate) async fn drive<'a, R>(
    conn: &mut AsyncPgConnection,
    mut resume: impl FnMut(Input) -> Step<'a, R>,
) -> R {
    let mut input = Input::Start;
    loop {
        input = match resume(input) {
            Step::Done(outcome) => return outcome,
            Step::Do(Action::Send(sql)) => Input::Sent(conn.batch_execute(sql).await),
            Step::Do(Action::CheckPath(key)) => {
                Input::PathChecked(PlanWatch::serves(conn.instrumentation(), key))
            }
            Step::Do(Action::AskTypes(shared)) => {
                Input::TypesAnswered(crate::types::ask(conn, shared).await)
            }
            // Never asked of a `TypeCache::Fixed` client; refused if it were.
            Step::Do(Action::ForgetStatements) => {
                Input::Sent(Err(diesel::result::Error::QueryBuilderError(
                    "diesel-async cannot forget its prepared statements".into(),
                )))
            }
            Step::Do(Action::MarkBegun) => Input::Sent(mark_begun(conn)),
        }
    }
}

/// Tells diesel-async's transaction manager that a transaction the checkout
/// message's `BEGIN` opened is open (what its `begin_transaction_sql` does
/// after sending its own).
fn mark_begun(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    use diesel::connection::{
        InstrumentationEvent, TransactionDepthChange, TransactionManagerStatus,
    };
    conn.instrumentation()
        .on_connection_event(InstrumentationEvent::begin_transaction(
            std::num::NonZeroU32::MIN,
        ));
    match AnsiTransactionManager::transaction_manager_status_mut(conn) {
        TransactionManagerStatus::Valid(status) => {
            status.change_transaction_depth(TransactionDepthChange::IncreaseDepth)
        }
        TransactionManagerStatus::InError => Err(diesel::result::Error::BrokenTransactionManager),
    }
}

/// Runs a checkout message written by `write_session_switch` on a connection
/// where the switch was prepared, as [`SessionSwitch`] says (the sync pool's
/// rules): with per-tenant types, a connection last switched to another path
/// is refused as broken before anything is sent (the pool closes it and
/// takes another); one round trip for a session in its connect-time role and
/// listening to nothing, three otherwise. Then drops any notification the
/// connection already received. With a unit's `begin`, the message ends
/// with it (`write_checkout_message`) and the connection comes back inside
/// the unit's transaction.
pub(crate) async fn run_session_switch(
    conn: &mut AsyncPgConnection,
    sql: &str,
    types: &PerTenantTypes,
    begin: Option<&str>,
) -> Result<(), SessionRefusal> {
    // A fresh seed for `random()` in the message sent; `sql` (with its
    // placeholder) names the path.
    let mut seeded = String::with_capacity(sql.len() + 24);
    write_checkout_message(&mut seeded, sql, begin);
    let mut step = SessionSwitch::new(sql, &seeded, Some(types), TypeCache::Fixed)
        .begins_unit(begin.is_some());
    let result = drive(conn, |input| step.resume(input)).await;
    drain_notifications(conn);
    result
}

/// Whether `conn` may serve `path` (see [`PathChange`]): `false` when the
/// pool's database has per-tenant types and the connection last served
/// another path.
pub(crate) async fn may_serve(
    conn: &mut AsyncPgConnection,
    path: &str,
    types: &PerTenantTypes,
) -> bool {
    use appschema_core::connection::internals::PathOutcome;
    let mut step = PathChange::new(path, Some(types), TypeCache::Fixed);
    matches!(
        drive(conn, |input| step.resume(input)).await,
        PathOutcome::Keep
    )
}

/// Throws away notifications the connection has already received (from
/// channels an earlier checkout listened to). Client-side only: whatever
/// the connection's task has queued, without waiting for more.
pub(crate) fn drain_notifications(conn: &mut AsyncPgConnection) {
    let mut stream = std::pin::pin!(conn.notifications_stream());
    while let Some(Some(_)) = stream.next().now_or_never() {}
}

/// Runs one unit of work on `conn` as [`Unit`] says (the sync units'
/// rules), and reports a row stream of `load_stream` the work dropped
/// before its end: its statement is cancelled, and waited for, when the
/// step asks. `begun_at_checkout`: the checkout's message began the unit's
/// transaction (`Unit::begun_at_checkout`).
pub(crate) async fn run_unit_once<'a, T, E, F>(
    conn: &mut AsyncPgConnection,
    switch: Option<&UnitSwitch>,
    mode: UnitMode,
    begun_at_checkout: bool,
    work: &mut F,
) -> UnitEnd<T, E>
where
    F: for<'r> FnMut(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<T, E>>
        + Send
        + 'a,
    E: From<diesel::result::Error> + From<ConnectionError> + Send + 'a,
    T: Send + 'a,
{
    let mut unit = Unit::new(switch, mode);
    if begun_at_checkout {
        unit = unit.begun_at_checkout();
    }
    let mut input = UnitInput::Start;
    loop {
        input = match unit.resume(input) {
            UnitAction::End(end) => return end,
            UnitAction::Begin(sql) => {
                UnitInput::Begun(AnsiTransactionManager::begin_transaction_sql(conn, sql).await)
            }
            UnitAction::Send(sql) => UnitInput::Sent(conn.batch_execute(sql).await),
            UnitAction::Drain => {
                drain_notifications(conn);
                UnitInput::Drained
            }
            UnitAction::Work => {
                let outcome = work(conn).await;
                let stream_abandoned = PlanWatch::stream_counter(conn.instrumentation())
                    .is_some_and(|open| open.load(Ordering::Acquire) > 0);
                UnitInput::Worked {
                    outcome,
                    stream_abandoned,
                }
            }
            UnitAction::CancelStream => {
                // Best effort: a statement that already ended ignores it.
                let _ = conn
                    .cancel_token()
                    .cancel_query(tokio_postgres::NoTls)
                    .await;
                // The answer to a statement sent after it means the
                // stream's statement has ended, cancelled or not (an error
                // inside the aborted transaction); nothing runs on the
                // connection any more.
                let _ = conn.batch_execute("SELECT 1").await;
                if let Some(open) = PlanWatch::stream_counter(conn.instrumentation()) {
                    open.store(0, Ordering::Release);
                }
                UnitInput::StreamCancelled
            }
            UnitAction::Commit => {
                UnitInput::Committed(AnsiTransactionManager::commit_transaction(conn).await)
            }
            UnitAction::Rollback => {
                UnitInput::RolledBack(AnsiTransactionManager::rollback_transaction(conn).await)
            }
        }
    }
}
