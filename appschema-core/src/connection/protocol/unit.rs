//! One unit of work ([`Unit`]): a transaction, the transaction-scoped
//! pools' switch inside it, the caller's work, `COMMIT` or `ROLLBACK`; and
//! whether a unit whose connection was lost runs once more ([`UnitRetry`]).

use diesel::result::QueryResult;

use crate::connection::error::{describe_target, ConnectionError};
use crate::connection::hygiene::DIRTY_UNLISTEN;
use crate::connection::lost::is_connection_lost;
use crate::connection::retry::{begin_sql, UnitSwitch};
use crate::connection::search_path::classify;

/// How a unit ends and reports a failed `ROLLBACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitMode {
    /// `in_tenant_transaction` and `transaction_for`: diesel's transaction
    /// rules (a failed `ROLLBACK`'s error wins over the work's, except
    /// diesel's `BrokenTransactionManager`); never [`UnitEnd::Lost`].
    Once,
    /// The `*_retrying` methods: the first error wins, and a unit whose
    /// connection was lost before its `COMMIT` was sent (or while a
    /// `read_only` unit committed) ends [`UnitEnd::Lost`]: nothing of it
    /// committed, so it may run again on another connection.
    Retrying {
        /// Whether the unit only reads (its transaction is `READ ONLY`).
        read_only: bool,
    },
}

/// How a unit ended on one connection.
#[derive(Debug)]
pub enum UnitEnd<T, E> {
    /// Its result.
    Done(Result<T, E>),
    /// The connection was lost before anything could have committed: the
    /// unit may run again, on another connection. Holds the error to return
    /// if it does not.
    Lost(E),
}

impl<T, E> UnitEnd<T, E> {
    /// The unit's result, a loss being an error.
    pub fn into_result(self) -> Result<T, E> {
        match self {
            UnitEnd::Done(result) => result,
            UnitEnd::Lost(error) => Err(error),
        }
    }
}

/// What a [`Unit`] asks its driver to do; each is answered with one
/// [`UnitInput`].
#[derive(Debug)]
pub enum UnitAction<'a, T, E> {
    /// Begin a transaction with this statement through the client's
    /// transaction manager; answer [`UnitInput::Begun`].
    Begin(&'static str),
    /// Send this simple-protocol batch; answer [`UnitInput::Sent`].
    Send(&'a str),
    /// Drop the notifications the client already received; answer
    /// [`UnitInput::Drained`].
    Drain,
    /// Run the caller's work; answer [`UnitInput::Worked`].
    Work,
    /// Cancel the statement of the row stream the work abandoned, wait for
    /// the server to answer a statement sent after it, and clear the
    /// connection's count of open streams; answer
    /// [`UnitInput::StreamCancelled`].
    CancelStream,
    /// Commit through the transaction manager; answer
    /// [`UnitInput::Committed`].
    Commit,
    /// Roll back through the transaction manager; answer
    /// [`UnitInput::RolledBack`].
    Rollback,
    /// The unit is over.
    End(UnitEnd<T, E>),
}

/// What a driver feeds back to a [`Unit`].
#[derive(Debug)]
pub enum UnitInput<T, E> {
    /// The first call.
    Start,
    /// The outcome of [`UnitAction::Begin`].
    Begun(QueryResult<()>),
    /// The outcome of [`UnitAction::Send`].
    Sent(QueryResult<()>),
    /// [`UnitAction::Drain`] done.
    Drained,
    /// The work's result, and whether it left a row stream open (dropped
    /// before its end: its statement may still run). Always `false` for a
    /// client without row streams.
    Worked {
        /// What the work returned.
        outcome: Result<T, E>,
        /// Whether a guarded row stream was dropped before its end.
        stream_abandoned: bool,
    },
    /// [`UnitAction::CancelStream`] done.
    StreamCancelled,
    /// The outcome of [`UnitAction::Commit`].
    Committed(QueryResult<()>),
    /// The outcome of [`UnitAction::Rollback`].
    RolledBack(QueryResult<()>),
}

/// Why the unit rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The switch was refused (`lost`: because the connection was lost).
    Refused { lost: bool },
    /// The session was found dirty on the first round: unlisten and start
    /// again.
    Dirty,
    /// The work failed.
    Work,
    /// The work abandoned a row stream.
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Beginning,
    Switching,
    Draining,
    Working,
    Cancelling,
    Committing,
    RollingBack(Why),
    Unlistening,
    Finished,
}

/// One unit of work on one connection, without I/O: `BEGIN` (`BEGIN READ
/// ONLY` for read-only work without a switch), the unit's switch when it
/// has one ([`UnitSwitch`]: the transaction-scoped pools' reset and `SET
/// LOCAL search_path`), the work, then `COMMIT`, or `ROLLBACK` on error.
///
/// A session found listening, or beginning transactions with
/// characteristics an earlier client set, is rolled back, unlistened
/// (`DIRTY_UNLISTEN`, outside any transaction: `UNLISTEN` takes effect at
/// commit) and the unit begins again, once; the work never runs in such a
/// transaction. A work that abandoned a row stream is never committed: the
/// statement is cancelled, the unit rolled back, and it fails with
/// [`ConnectionError::StreamAbandoned`].
///
/// ```
/// use appschema::connection::internals::{Unit, UnitAction, UnitEnd, UnitInput, UnitMode};
/// use appschema::ConnectionError;
/// let mut unit = Unit::<i32, ConnectionError>::new(None, UnitMode::Retrying { read_only: false });
/// assert!(matches!(unit.resume(UnitInput::Start), UnitAction::Begin("BEGIN")));
/// assert!(matches!(unit.resume(UnitInput::Begun(Ok(()))), UnitAction::Work));
/// let worked = UnitInput::Worked { outcome: Ok(7), stream_abandoned: false };
/// assert!(matches!(unit.resume(worked), UnitAction::Commit));
/// assert!(matches!(unit.resume(UnitInput::Committed(Ok(()))), UnitAction::End(UnitEnd::Done(Ok(7)))));
/// ```
#[derive(Debug)]
pub struct Unit<'a, T, E> {
    switch: Option<&'a UnitSwitch>,
    mode: UnitMode,
    state: State,
    first_round: bool,
    begun_at_checkout: bool,
    value: Option<T>,
    error: Option<E>,
}

impl<'a, T, E> Unit<'a, T, E>
where
    E: From<diesel::result::Error> + From<ConnectionError>,
{
    /// A unit with `switch` (`None`: the connection was switched at
    /// checkout), run in `mode`.
    pub fn new(switch: Option<&'a UnitSwitch>, mode: UnitMode) -> Unit<'a, T, E> {
        Unit {
            switch,
            mode,
            state: State::Start,
            first_round: true,
            begun_at_checkout: false,
            value: None,
            error: None,
        }
    }

    /// A unit whose `BEGIN` travelled in its checkout's message (a session
    /// pool's checkout for a unit, see `write_checkout_message`): the
    /// connection comes back inside the unit's transaction, marked open in
    /// the client's transaction manager, so the unit sends no `BEGIN` and
    /// starts as if its own had just succeeded.
    ///
    /// ```
    /// use appschema::connection::internals::{Unit, UnitAction, UnitInput, UnitMode};
    /// use appschema::ConnectionError;
    /// let mode = UnitMode::Retrying { read_only: true };
    /// let mut unit = Unit::<i32, ConnectionError>::new(None, mode).begun_at_checkout();
    /// assert!(matches!(unit.resume(UnitInput::Start), UnitAction::Work));
    /// ```
    pub fn begun_at_checkout(mut self) -> Unit<'a, T, E> {
        self.begun_at_checkout = true;
        self
    }

    fn read_only(&self) -> bool {
        matches!(self.mode, UnitMode::Retrying { read_only: true })
    }

    fn retrying(&self) -> bool {
        matches!(self.mode, UnitMode::Retrying { .. })
    }

    /// Resumes with what the last action gave ([`UnitInput::Start`] first).
    pub fn resume(&mut self, input: UnitInput<T, E>) -> UnitAction<'a, T, E> {
        match (self.state, input) {
            (State::Start, UnitInput::Start) if self.begun_at_checkout => {
                self.state = State::Beginning;
                self.resume(UnitInput::Begun(Ok(())))
            }
            (State::Start, UnitInput::Start) => self.begin(),
            (State::Beginning, UnitInput::Begun(Err(error))) => self.failed(error),
            (State::Beginning, UnitInput::Begun(Ok(()))) => match self.switch {
                Some(switch) => {
                    self.state = State::Switching;
                    UnitAction::Send(switch.sql())
                }
                None => self.to(State::Working, UnitAction::Work),
            },
            (State::Switching, UnitInput::Sent(result)) => {
                let switch = self.switch.expect("a unit switches only with a switch");
                match classify(result) {
                    Ok(()) => self.to(State::Draining, UnitAction::Drain),
                    Err(refusal) => match switch.refused::<E>(refusal, self.first_round) {
                        None => self.to(State::RollingBack(Why::Dirty), UnitAction::Rollback),
                        Some((error, lost)) => {
                            self.error = Some(error);
                            self.to(
                                State::RollingBack(Why::Refused { lost }),
                                UnitAction::Rollback,
                            )
                        }
                    },
                }
            }
            (State::Draining, UnitInput::Drained) => self.to(State::Working, UnitAction::Work),
            (
                State::Working,
                UnitInput::Worked {
                    outcome,
                    stream_abandoned,
                },
            ) => {
                if stream_abandoned && self.switch.is_some() {
                    // Its statement may still run (and write): never
                    // committed, whatever the work returned.
                    return self.to(State::Cancelling, UnitAction::CancelStream);
                }
                match outcome {
                    Ok(value) => {
                        self.value = Some(value);
                        self.to(State::Committing, UnitAction::Commit)
                    }
                    Err(error) => {
                        self.error = Some(error);
                        self.to(State::RollingBack(Why::Work), UnitAction::Rollback)
                    }
                }
            }
            (State::Cancelling, UnitInput::StreamCancelled) => {
                let target = describe_target(self.switch.and_then(UnitSwitch::tenant));
                self.error = Some(ConnectionError::StreamAbandoned { target }.into());
                self.to(State::RollingBack(Why::Abandoned), UnitAction::Rollback)
            }
            (State::Committing, UnitInput::Committed(Ok(()))) => {
                let value = self.value.take().expect("held until committed");
                self.end(UnitEnd::Done(Ok(value)))
            }
            // Lost while committing: the server may have committed before
            // it went. Only a read-only unit can be run again.
            (State::Committing, UnitInput::Committed(Err(error))) => {
                if self.read_only() && is_connection_lost(&error) {
                    self.end(UnitEnd::Lost(error.into()))
                } else {
                    self.end(UnitEnd::Done(Err(error.into())))
                }
            }
            (State::RollingBack(Why::Dirty), UnitInput::RolledBack(Ok(()))) => {
                self.to(State::Unlistening, UnitAction::Send(DIRTY_UNLISTEN))
            }
            (State::RollingBack(Why::Dirty), UnitInput::RolledBack(Err(error))) => {
                self.failed(error)
            }
            (State::RollingBack(why), UnitInput::RolledBack(result)) => {
                let error = self.error.take().expect("held until rolled back");
                self.rolled_back(why, error, result)
            }
            (State::Unlistening, UnitInput::Sent(Ok(()))) => {
                self.first_round = false;
                self.begin()
            }
            (State::Unlistening, UnitInput::Sent(Err(error))) => self.failed(error),
            (state, input) => panic!(
                "Unit in state {state:?} was resumed with {}: the driver answered another \
                 action than the one asked for",
                input_name(&input)
            ),
        }
    }

    fn begin(&mut self) -> UnitAction<'a, T, E> {
        // A unit with a switch is made read only by its switch.
        let begin = begin_sql(self.read_only() && self.switch.is_none());
        self.to(State::Beginning, UnitAction::Begin(begin))
    }

    /// A statement of the unit's own failed before the work ran (`BEGIN`,
    /// the dirty session's `ROLLBACK` or `UNLISTEN`): nothing ran yet, so a
    /// loss may be retried.
    fn failed(&mut self, error: diesel::result::Error) -> UnitAction<'a, T, E> {
        if self.retrying() && is_connection_lost(&error) {
            self.end(UnitEnd::Lost(error.into()))
        } else {
            self.end(UnitEnd::Done(Err(error.into())))
        }
    }

    fn rolled_back(
        &mut self,
        why: Why,
        error: E,
        rollback: QueryResult<()>,
    ) -> UnitAction<'a, T, E> {
        if !self.retrying() {
            // diesel's `Connection::transaction`: the rollback's own error
            // wins, except a transaction manager already broken.
            return self.end(UnitEnd::Done(match rollback {
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
                Err(rollback) => Err(rollback.into()),
            }));
        }
        let rollback_lost = rollback.as_ref().is_err_and(is_connection_lost);
        let end = match why {
            // Nothing of the work ran: lost here, the unit may run again.
            Why::Refused { lost } if lost || rollback_lost => UnitEnd::Lost(error),
            // The rollback found the connection gone, so the work failed
            // (or was about to) because of it, before `COMMIT` was sent.
            Why::Work if rollback_lost => UnitEnd::Lost(error),
            // An abandoned stream is never run again.
            Why::Refused { .. } | Why::Work | Why::Abandoned | Why::Dirty => {
                UnitEnd::Done(Err(error))
            }
        };
        self.end(end)
    }

    fn to(&mut self, state: State, action: UnitAction<'a, T, E>) -> UnitAction<'a, T, E> {
        self.state = state;
        action
    }

    fn end(&mut self, end: UnitEnd<T, E>) -> UnitAction<'a, T, E> {
        self.to(State::Finished, UnitAction::End(end))
    }
}

fn input_name<T, E>(input: &UnitInput<T, E>) -> &'static str {
    match input {
        UnitInput::Start => "Start",
        UnitInput::Begun(_) => "Begun",
        UnitInput::Sent(_) => "Sent",
        UnitInput::Drained => "Drained",
        UnitInput::Worked { .. } => "Worked",
        UnitInput::StreamCancelled => "StreamCancelled",
        UnitInput::Committed(_) => "Committed",
        UnitInput::RolledBack(_) => "RolledBack",
    }
}

/// What to do after a unit ended on one connection (see [`UnitRetry`]).
#[derive(Debug)]
pub enum Retry<T, E> {
    /// Return this result (the connection goes back to its pool, which
    /// closes it if it must).
    Return(Result<T, E>),
    /// The connection was lost: close it, and return this error.
    CloseAndFail(E),
    /// The connection was lost before anything committed: close it and
    /// run the unit once more on a connection checked out afresh.
    CloseAndRunAgain,
}

/// The `*_retrying` methods' rule: a unit whose connection was lost before
/// anything could have committed ([`UnitEnd::Lost`]) runs once more, on a
/// fresh connection; a second loss is returned. A checkout that fails is
/// never retried (it already waited up to the pool's timeout).
///
/// ```
/// use appschema::connection::internals::{Retry, UnitEnd, UnitRetry};
/// let mut retry = UnitRetry::new();
/// assert!(matches!(retry.after(UnitEnd::<(), &str>::Lost("lost")), Retry::CloseAndRunAgain));
/// assert!(matches!(retry.after(UnitEnd::<(), &str>::Lost("lost")), Retry::CloseAndFail("lost")));
/// ```
#[derive(Debug)]
pub struct UnitRetry {
    retries_left: u8,
}

impl Default for UnitRetry {
    fn default() -> Self {
        UnitRetry::new()
    }
}

impl UnitRetry {
    /// One transparent retry.
    pub fn new() -> UnitRetry {
        UnitRetry { retries_left: 1 }
    }

    /// Decides after a unit ended.
    pub fn after<T, E>(&mut self, end: UnitEnd<T, E>) -> Retry<T, E> {
        match end {
            UnitEnd::Done(result) => Retry::Return(result),
            UnitEnd::Lost(_) if self.retries_left > 0 => {
                self.retries_left -= 1;
                Retry::CloseAndRunAgain
            }
            UnitEnd::Lost(error) => Retry::CloseAndFail(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::SearchPath;
    use crate::name::SchemaName;
    use diesel::result::{DatabaseErrorKind, Error};

    type U<'a> = Unit<'a, i32, ConnectionError>;

    fn lost() -> Error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("server closed the connection unexpectedly".to_string()),
        )
    }
    fn other() -> Error {
        Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("duplicate key".to_string()),
        )
    }
    fn raised(marker: &str) -> QueryResult<()> {
        Err(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(format!("unrecognized configuration parameter \"{marker}\"")),
        ))
    }
    fn dirty() -> QueryResult<()> {
        raised("appschema: role changed or channels listened to")
    }
    fn work_err() -> ConnectionError {
        ConnectionError::UnknownTenant {
            public_name: "work".to_string(),
        }
    }
    fn worked(outcome: Result<i32, ConnectionError>) -> UnitInput<i32, ConnectionError> {
        UnitInput::Worked {
            outcome,
            stream_abandoned: false,
        }
    }
    fn switch(read_only: bool) -> UnitSwitch {
        let acme = SchemaName::new("acme").unwrap();
        UnitSwitch::new(&SearchPath::new(), Some(&acme), read_only)
    }
    const RETRYING: UnitMode = UnitMode::Retrying { read_only: false };
    const READING: UnitMode = UnitMode::Retrying { read_only: true };

    fn is_lost(a: &UnitAction<'_, i32, ConnectionError>) -> bool {
        matches!(a, UnitAction::End(UnitEnd::Lost(_)))
    }
    fn is_err(a: &UnitAction<'_, i32, ConnectionError>) -> bool {
        matches!(a, UnitAction::End(UnitEnd::Done(Err(_))))
    }

    #[test]
    fn a_unit_with_a_switch_begins_switches_drains_works_and_commits() {
        let s = switch(false);
        let mut u = U::new(Some(&s), UnitMode::Once);
        assert!(matches!(
            u.resume(UnitInput::Start),
            UnitAction::Begin("BEGIN")
        ));
        assert!(
            matches!(u.resume(UnitInput::Begun(Ok(()))), UnitAction::Send(sql) if sql == s.sql())
        );
        assert!(matches!(
            u.resume(UnitInput::Sent(Ok(()))),
            UnitAction::Drain
        ));
        assert!(matches!(u.resume(UnitInput::Drained), UnitAction::Work));
        assert!(matches!(u.resume(worked(Ok(3))), UnitAction::Commit));
        assert!(matches!(
            u.resume(UnitInput::Committed(Ok(()))),
            UnitAction::End(UnitEnd::Done(Ok(3)))
        ));
    }

    #[test]
    fn a_unit_begun_at_checkout_sends_no_begin_and_works_first() {
        for mode in [RETRYING, READING] {
            let mut u = U::new(None, mode).begun_at_checkout();
            assert!(matches!(u.resume(UnitInput::Start), UnitAction::Work));
            assert!(matches!(u.resume(worked(Ok(5))), UnitAction::Commit));
            assert!(matches!(
                u.resume(UnitInput::Committed(Ok(()))),
                UnitAction::End(UnitEnd::Done(Ok(5)))
            ));
        }
    }

    #[test]
    fn a_unit_begun_at_checkout_rolls_back_and_is_retried_by_the_usual_rules() {
        // The work failed: rolled back, its error returned.
        let mut u = U::new(None, RETRYING).begun_at_checkout();
        u.resume(UnitInput::Start);
        assert!(matches!(
            u.resume(worked(Err(work_err()))),
            UnitAction::Rollback
        ));
        assert!(is_err(&u.resume(UnitInput::RolledBack(Ok(())))));
        // The rollback found the connection gone: nothing committed.
        let mut u = U::new(None, RETRYING).begun_at_checkout();
        u.resume(UnitInput::Start);
        u.resume(worked(Err(work_err())));
        assert!(is_lost(&u.resume(UnitInput::RolledBack(Err(lost())))));
        // Lost while committing: run again only when read only.
        let mut u = U::new(None, RETRYING).begun_at_checkout();
        u.resume(UnitInput::Start);
        u.resume(worked(Ok(1)));
        assert!(is_err(&u.resume(UnitInput::Committed(Err(lost())))));
        let mut u = U::new(None, READING).begun_at_checkout();
        u.resume(UnitInput::Start);
        u.resume(worked(Ok(1)));
        assert!(is_lost(&u.resume(UnitInput::Committed(Err(lost())))));
    }

    #[test]
    fn read_only_work_without_a_switch_begins_read_only_and_with_one_does_not() {
        let mut u = U::new(None, READING);
        assert!(matches!(
            u.resume(UnitInput::Start),
            UnitAction::Begin("BEGIN READ ONLY")
        ));
        let s = switch(true);
        let mut u = U::new(Some(&s), READING);
        assert!(matches!(
            u.resume(UnitInput::Start),
            UnitAction::Begin("BEGIN")
        ));
        assert!(s.sql().ends_with("SET TRANSACTION READ ONLY"));
    }

    #[test]
    fn a_dirty_session_is_rolled_back_unlistened_and_begun_again_once() {
        let s = switch(false);
        for mode in [UnitMode::Once, RETRYING] {
            let mut u = U::new(Some(&s), mode);
            u.resume(UnitInput::Start);
            u.resume(UnitInput::Begun(Ok(())));
            assert!(matches!(
                u.resume(UnitInput::Sent(dirty())),
                UnitAction::Rollback
            ));
            assert!(matches!(
                u.resume(UnitInput::RolledBack(Ok(()))),
                UnitAction::Send(DIRTY_UNLISTEN)
            ));
            assert!(matches!(
                u.resume(UnitInput::Sent(Ok(()))),
                UnitAction::Begin("BEGIN")
            ));
            u.resume(UnitInput::Begun(Ok(())));
            // Still dirty: the unit fails, its work never ran.
            assert!(matches!(
                u.resume(UnitInput::Sent(dirty())),
                UnitAction::Rollback
            ));
            match u.resume(UnitInput::RolledBack(Ok(()))) {
                UnitAction::End(UnitEnd::Done(Err(ConnectionError::SwitchFailed {
                    message,
                    ..
                }))) => {
                    assert!(message.contains("still listens"))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_loss_before_commit_is_retryable_and_while_committing_only_for_reads() {
        // Lost at BEGIN.
        let mut u = U::new(None, RETRYING);
        u.resume(UnitInput::Start);
        assert!(is_lost(&u.resume(UnitInput::Begun(Err(lost())))));
        // Lost during the work: its rollback finds the connection gone.
        let mut u = U::new(None, RETRYING);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(worked(Err(work_err())));
        assert!(is_lost(&u.resume(UnitInput::RolledBack(Err(lost())))));
        // Lost while committing: writes may have committed.
        let mut u = U::new(None, RETRYING);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(worked(Ok(1)));
        assert!(is_err(&u.resume(UnitInput::Committed(Err(lost())))));
        // ... reads did not.
        let mut u = U::new(None, READING);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(worked(Ok(1)));
        assert!(is_lost(&u.resume(UnitInput::Committed(Err(lost())))));
        // Another failure of the commit is the unit's error.
        let mut u = U::new(None, READING);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(worked(Ok(1)));
        assert!(is_err(&u.resume(UnitInput::Committed(Err(other())))));
    }

    #[test]
    fn a_switch_refused_because_the_connection_was_lost_is_retryable() {
        let s = switch(false);
        let mut u = U::new(Some(&s), RETRYING);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        assert!(matches!(
            u.resume(UnitInput::Sent(Err(lost()))),
            UnitAction::Rollback
        ));
        assert!(is_lost(&u.resume(UnitInput::RolledBack(Err(lost())))));
        // Refused for another reason, with a working rollback: not retried.
        let mut u = U::new(Some(&s), RETRYING);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(UnitInput::Sent(raised(
            "appschema: first schema of the path missing",
        )));
        match u.resume(UnitInput::RolledBack(Ok(()))) {
            UnitAction::End(UnitEnd::Done(Err(ConnectionError::SchemaMissing { schema }))) => {
                assert_eq!(schema, "acme")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn once_a_failed_rollback_wins_unless_the_manager_was_broken_and_nothing_is_lost() {
        let mut u = U::new(None, UnitMode::Once);
        u.resume(UnitInput::Start);
        assert!(is_err(&u.resume(UnitInput::Begun(Err(lost())))));
        let mut u = U::new(None, UnitMode::Once);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(worked(Err(work_err())));
        match u.resume(UnitInput::RolledBack(Err(lost()))) {
            UnitAction::End(UnitEnd::Done(Err(ConnectionError::Query { .. }))) => {}
            other => panic!("{other:?}"),
        }
        let mut u = U::new(None, UnitMode::Once);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(worked(Err(work_err())));
        match u.resume(UnitInput::RolledBack(Err(Error::BrokenTransactionManager))) {
            UnitAction::End(UnitEnd::Done(Err(ConnectionError::UnknownTenant { .. }))) => {}
            other => panic!("{other:?}"),
        }
        // Retrying: the work's error wins.
        let mut u = U::new(None, RETRYING);
        u.resume(UnitInput::Start);
        u.resume(UnitInput::Begun(Ok(())));
        u.resume(worked(Err(work_err())));
        match u.resume(UnitInput::RolledBack(Err(other()))) {
            UnitAction::End(UnitEnd::Done(Err(ConnectionError::UnknownTenant { .. }))) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_abandoned_row_stream_is_cancelled_rolled_back_and_never_retried() {
        let s = switch(false);
        for mode in [UnitMode::Once, RETRYING] {
            let mut u = U::new(Some(&s), mode);
            u.resume(UnitInput::Start);
            u.resume(UnitInput::Begun(Ok(())));
            u.resume(UnitInput::Sent(Ok(())));
            u.resume(UnitInput::Drained);
            let abandoned = UnitInput::Worked {
                outcome: Ok(1),
                stream_abandoned: true,
            };
            assert!(matches!(u.resume(abandoned), UnitAction::CancelStream));
            assert!(matches!(
                u.resume(UnitInput::StreamCancelled),
                UnitAction::Rollback
            ));
            let rollback = match mode {
                UnitMode::Once => Ok(()),
                _ => Err(lost()),
            };
            match u.resume(UnitInput::RolledBack(rollback)) {
                UnitAction::End(UnitEnd::Done(Err(ConnectionError::StreamAbandoned {
                    target,
                }))) => {
                    assert_eq!(target, "tenant schema `acme`")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn one_transparent_retry_then_the_loss_is_returned() {
        let mut retry = UnitRetry::new();
        assert!(matches!(
            retry.after(UnitEnd::<i32, i32>::Done(Ok(1))),
            Retry::Return(Ok(1))
        ));
        assert!(matches!(
            retry.after(UnitEnd::<i32, i32>::Lost(1)),
            Retry::CloseAndRunAgain
        ));
        assert!(matches!(
            retry.after(UnitEnd::<i32, i32>::Lost(2)),
            Retry::CloseAndFail(2)
        ));
    }
}
