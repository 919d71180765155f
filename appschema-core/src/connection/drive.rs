//! The sync drivers of the protocol steps (see `protocol`): they run on a
//! diesel `PgConnection` what a step asks for, and feed back what came back.
//! They decide nothing.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::{Connection, PgConnection};

use super::hygiene::{drain_notifications, keep_types_resolved_on};
use super::lost::is_connection_lost;
use super::plan_watch::PlanWatch;
use super::protocol::{
    write_checkout_message, Action, Input, PathChange, PathOutcome, SessionSwitch, Step, TypeCache,
    Unit, UnitAction, UnitEnd, UnitInput, UnitMode,
};
use super::retry::UnitSwitch;
use super::search_path::SessionRefusal;
use super::types::{ask_per_tenant_types, forget_prepared_statements};
use super::ConnectionError;

/// Runs a switch step ([`SessionSwitch`] or [`PathChange`]) on `conn`.
fn drive<'a, R>(conn: &mut PgConnection, mut resume: impl FnMut(Input) -> Step<'a, R>) -> R {
    let mut input = Input::Start;
    loop {
        input = match resume(input) {
            Step::Done(outcome) => return outcome,
            Step::Do(Action::Send(sql)) => Input::Sent(conn.batch_execute(sql)),
            Step::Do(Action::CheckPath(key)) => {
                Input::PathChecked(keep_types_resolved_on(conn, key))
            }
            Step::Do(Action::AskTypes(shared)) => {
                Input::TypesAnswered(ask_per_tenant_types(conn, shared))
            }
            Step::Do(Action::ForgetStatements) => Input::Sent(forget_prepared_statements(conn)),
            Step::Do(Action::MarkBegun) => Input::Sent(mark_begun(conn)),
        }
    }
}

/// Tells diesel's transaction manager that a transaction the checkout
/// message's `BEGIN` opened is open (what `begin_transaction_sql` does
/// after sending its own).
fn mark_begun(conn: &mut PgConnection) -> diesel::QueryResult<()> {
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

/// Runs a checkout message written by `write_session_switch` on a
/// connection where `prepare_session_switch` ran, as [`SessionSwitch`]
/// says: one round trip for a session in its connect-time role and
/// listening to nothing, three otherwise; on another path than the
/// connection's last one, diesel's custom type OIDs are forgotten, and
/// with per-tenant types its prepared statements too. Then drops any
/// notification libpq already received. With a unit's `begin`, the
/// message ends with it ([`write_checkout_message`]) and the connection
/// comes back inside the unit's transaction.
pub(crate) fn run_session_switch(
    conn: &mut PgConnection,
    sql: &str,
    begin: Option<&str>,
) -> Result<(), SessionRefusal> {
    let mut seeded = String::with_capacity(sql.len() + 24);
    write_checkout_message(&mut seeded, sql, begin);
    let types = PlanWatch::per_tenant_types_in(conn.instrumentation());
    let mut step = SessionSwitch::new(sql, &seeded, types.as_deref(), TypeCache::Clearable)
        .begins_unit(begin.is_some());
    let result = drive(conn, |input| step.resume(input));
    drain_notifications(conn);
    result
}

/// Runs one unit of work on `conn` as [`Unit`] says, after the decision
/// of [`PathChange`] for the unit's path when it has a `switch`;
/// `begun_at_checkout`: the checkout's message began the unit's
/// transaction ([`Unit::begun_at_checkout`]).
pub(crate) fn run_unit_once<T, E>(
    conn: &mut PgConnection,
    switch: Option<&UnitSwitch>,
    mode: UnitMode,
    begun_at_checkout: bool,
    mut work: impl FnMut(&mut PgConnection) -> Result<T, E>,
) -> UnitEnd<T, E>
where
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    if let Some(switch) = switch {
        let types = PlanWatch::per_tenant_types_in(conn.instrumentation());
        let mut step = PathChange::new(switch.path(), types.as_deref(), TypeCache::Clearable);
        if let PathOutcome::Failed(error) = drive(conn, |input| step.resume(input)) {
            // Before `BEGIN`: nothing of the unit ran.
            let retrying = matches!(mode, UnitMode::Retrying { .. });
            return if retrying && is_connection_lost(&error) {
                UnitEnd::Lost(error.into())
            } else {
                UnitEnd::Done(Err(error.into()))
            };
        }
    }
    let mut unit = Unit::new(switch, mode);
    if begun_at_checkout {
        unit = unit.begun_at_checkout();
    }
    let mut input = UnitInput::Start;
    loop {
        input = match unit.resume(input) {
            UnitAction::End(end) => return end,
            UnitAction::Begin(sql) => {
                UnitInput::Begun(AnsiTransactionManager::begin_transaction_sql(conn, sql))
            }
            UnitAction::Send(sql) => UnitInput::Sent(conn.batch_execute(sql)),
            UnitAction::Drain => {
                drain_notifications(conn);
                UnitInput::Drained
            }
            UnitAction::Work => UnitInput::Worked {
                outcome: work(conn),
                // A blocking connection has no row streams left behind.
                stream_abandoned: false,
            },
            UnitAction::CancelStream => UnitInput::StreamCancelled,
            UnitAction::Commit => {
                UnitInput::Committed(AnsiTransactionManager::commit_transaction(conn))
            }
            UnitAction::Rollback => {
                UnitInput::RolledBack(AnsiTransactionManager::rollback_transaction(conn))
            }
        }
    }
}
