//! The checkout's steps: the session switch ([`SessionSwitch`]), what a
//! change of path means for the client's type caches ([`PathChange`]), and
//! what a refused switch means for the checkout ([`CheckoutAttempts`]).

use diesel::result::QueryResult;

use crate::connection::error::{describe_target, ConnectionError};
use crate::connection::hygiene::DIRTY_RESET;
use crate::connection::search_path::{classify, write_seed, Refusal, SessionRefusal};
use crate::connection::types::PerTenantTypes;
use crate::name::SchemaName;

/// What a step asks its driver to do. Each is answered with one [`Input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send this simple-protocol batch; answer [`Input::Sent`] with its
    /// outcome, as the client returned it.
    Send(&'a str),
    /// Say whether the connection's client was last put on another path
    /// than the one this text names (a connection never switched counts as
    /// changed for a client that can empty its type cache, as unchanged for
    /// one that cannot), and remember this one; a client that can empty its
    /// cache of custom type OIDs ([`TypeCache::Clearable`]) empties it now
    /// when the path changed. Answer [`Input::PathChecked`].
    CheckPath(&'a str),
    /// Ask the database whether it has per-tenant types
    /// (`PER_TENANT_TYPES_QUERY` bound to these shared schemas); answer
    /// [`Input::TypesAnswered`] (`None`: the question failed).
    AskTypes(&'a [String]),
    /// Forget the connection's prepared statements (the client's cache and
    /// the server's statements); answer [`Input::Sent`].
    ForgetStatements,
    /// The message just sent ended with a unit's `BEGIN` (see
    /// [`write_checkout_message`]) and the server ran it: tell the client's
    /// transaction manager that a transaction is open, as its own
    /// `begin_transaction_sql` would have after sending it; answer
    /// [`Input::Sent`].
    MarkBegun,
}

/// Writes into `out` (cleared first) the message a [`SessionSwitch`] sends:
/// the checkout message `sql` (as `write_session_switch` wrote it) with a
/// fresh seed (see `write_seed`), and, for a checkout that serves a unit of
/// work (`run_retrying`, `read_retrying`…), the unit's `begin` (`BEGIN` or
/// `BEGIN READ ONLY`, see `begin_sql`) after it: the unit's transaction
/// starts in the checkout's round trip instead of one of its own.
///
/// PostgreSQL then counts the message's earlier statements (the reset, the
/// check, the `SET search_path`) into the unit's transaction, which began
/// when the message did, before its `RESET ALL`: the check refuses
/// transaction characteristics other than the defaults (a `SET SESSION
/// CHARACTERISTICS` an earlier checkout left), which `DIRTY_RESET` resets;
/// and a unit that rolls back undoes the reset too, harmless since the
/// connection goes back to the pool right after and the next checkout
/// resets it again. A refused message ran none of its statements, its
/// `BEGIN` included.
///
/// ```
/// use appschema::connection::internals::write_checkout_message;
/// let mut out = String::new();
/// write_checkout_message(&mut out, "SELECT 1", Some("BEGIN READ ONLY"));
/// assert_eq!(out, "SELECT 1; BEGIN READ ONLY");
/// write_checkout_message(&mut out, "SELECT 1", None);
/// assert_eq!(out, "SELECT 1");
/// ```
pub fn write_checkout_message(out: &mut String, sql: &str, begin: Option<&str>) {
    write_seed(out, sql);
    if let Some(begin) = begin {
        out.push_str("; ");
        out.push_str(begin);
    }
}

/// What a driver feeds back to a step.
#[derive(Debug)]
pub enum Input {
    /// The first call: nothing done yet.
    Start,
    /// The outcome of an [`Action::Send`] or [`Action::ForgetStatements`].
    Sent(QueryResult<()>),
    /// The answer to [`Action::CheckPath`]: whether the path changed.
    PathChecked(bool),
    /// The answer to [`Action::AskTypes`].
    TypesAnswered(Option<bool>),
}

/// A step's next move: an action for the driver, or its outcome.
#[derive(Debug)]
pub enum Step<'a, R> {
    /// Do this, then resume the step with what came back.
    Do(Action<'a>),
    /// The step is over.
    Done(R),
}

/// What the client can do with its cache of custom type OIDs (diesel and
/// diesel-async cache a type's OID per connection by name, so a type
/// declared without a schema, one per tenant, resolved for one tenant would
/// be bound as that tenant's type for the next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeCache {
    /// diesel's `PgConnection`: the cache is emptied on a change of path
    /// ([`Action::CheckPath`]), and where the database has per-tenant types
    /// the connection's prepared statements are forgotten after the switch
    /// (they would return another tenant's type).
    Clearable,
    /// diesel-async's `AsyncPgConnection`: the cache cannot be emptied, so
    /// where the database has per-tenant types a connection last on another
    /// path is refused before anything is sent (the pool closes it and
    /// takes another).
    Fixed,
}

/// Why a [`TypeCache::Fixed`] connection is refused (see [`PathChange`]).
pub const TYPES_HELD_MESSAGE: &str =
    "it served another tenant, whose custom type OIDs its client may hold (per_tenant_types)";

/// What [`PathChange`] decided.
#[derive(Debug)]
pub enum PathOutcome {
    /// Use the connection.
    Keep,
    /// Do not use it: its client may hold another tenant's type OIDs
    /// ([`TypeCache::Fixed`] only).
    Refuse,
    /// Forgetting the prepared statements failed.
    Failed(diesel::result::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathState {
    Start,
    Checking,
    Asking,
    Forgetting,
    Finished,
}

/// What a connection's change of path means for its client's caches:
/// nothing when the path is the one it was last on; otherwise, where the
/// database has per-tenant types ([`PerTenantTypes`], asked when not
/// known), forget the prepared statements ([`TypeCache::Clearable`]) or
/// refuse the connection ([`TypeCache::Fixed`]).
///
/// ```
/// use appschema::connection::internals::{Action, Input, PathChange, PathOutcome, Step, TypeCache};
/// let mut step = PathChange::new(r#""t1", "public""#, None, TypeCache::Clearable);
/// assert!(matches!(step.resume(Input::Start), Step::Do(Action::CheckPath(_))));
/// // No per-tenant types known to the connection: nothing more to do.
/// assert!(matches!(step.resume(Input::PathChecked(true)), Step::Done(PathOutcome::Keep)));
/// ```
#[derive(Debug)]
pub struct PathChange<'a> {
    key: &'a str,
    types: Option<&'a PerTenantTypes>,
    cache: TypeCache,
    state: PathState,
}

impl<'a> PathChange<'a> {
    /// The decision for a connection about to be put on the path `key`
    /// names (any text naming it: the checkout message or the path), with
    /// the pool's per-tenant types (`None`: none known to the connection).
    pub fn new(
        key: &'a str,
        types: Option<&'a PerTenantTypes>,
        cache: TypeCache,
    ) -> PathChange<'a> {
        PathChange {
            key,
            types,
            cache,
            state: PathState::Start,
        }
    }

    /// Resumes with what the last action gave ([`Input::Start`] first).
    pub fn resume(&mut self, input: Input) -> Step<'a, PathOutcome> {
        match (self.state, input) {
            (PathState::Start, Input::Start) => {
                self.state = PathState::Checking;
                Step::Do(Action::CheckPath(self.key))
            }
            (PathState::Checking, Input::PathChecked(false)) => self.finish(PathOutcome::Keep),
            (PathState::Checking, Input::PathChecked(true)) => match self.types {
                None => self.finish(PathOutcome::Keep),
                Some(types) => match types.known() {
                    Some(found) => self.types_found(found),
                    None => {
                        self.state = PathState::Asking;
                        Step::Do(Action::AskTypes(types.shared()))
                    }
                },
            },
            (PathState::Asking, Input::TypesAnswered(answer)) => {
                let types = self.types.expect("asked only with per-tenant types");
                // A failed question answers "yes" (fail closed).
                self.types_found(types.answered(answer))
            }
            (PathState::Forgetting, Input::Sent(result)) => self.finish(match result {
                Ok(()) => PathOutcome::Keep,
                Err(error) => PathOutcome::Failed(error),
            }),
            (state, input) => unexpected("PathChange", state, &input),
        }
    }

    fn types_found(&mut self, found: bool) -> Step<'a, PathOutcome> {
        match (found, self.cache) {
            (false, _) => self.finish(PathOutcome::Keep),
            (true, TypeCache::Fixed) => self.finish(PathOutcome::Refuse),
            (true, TypeCache::Clearable) => {
                self.state = PathState::Forgetting;
                Step::Do(Action::ForgetStatements)
            }
        }
    }

    fn finish(&mut self, outcome: PathOutcome) -> Step<'a, PathOutcome> {
        self.state = PathState::Finished;
        Step::Done(outcome)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwitchState {
    Start,
    /// [`TypeCache::Fixed`]: the path decision, before anything is sent.
    Before,
    Switching,
    Resetting,
    SwitchingAgain,
    /// The message's `BEGIN` ran: the client is told ([`Action::MarkBegun`]).
    MarkingBegun,
    /// [`TypeCache::Clearable`]: the path decision, after the switch.
    After,
    Finished,
}

/// One checkout of a shared pool: the message `write_session_switch` wrote
/// (the session reset, the prepared check, `SET search_path`), sent with a
/// fresh seed; a session found in another role, listening, or in a
/// transaction begun with characteristics other than the defaults is reset
/// (`DIRTY_RESET`) and switched again, and is broken if still dirty; and
/// the decision of [`PathChange`] on the client's type caches (before the
/// switch for a [`TypeCache::Fixed`] client, after a successful one for a
/// [`TypeCache::Clearable`] one). The driver drops the notifications the
/// client already received once the step is done, whatever its outcome.
///
/// A checkout for a unit of work sends the unit's `BEGIN` at the end of its
/// message ([`write_checkout_message`], [`SessionSwitch::begins_unit`]):
/// once the message ran, the step asks the driver to mark the client's
/// transaction open ([`Action::MarkBegun`]) before anything else, and the
/// unit ([`Unit::begun_at_checkout`](super::Unit::begun_at_checkout))
/// sends no `BEGIN` of its own.
///
/// ```
/// use appschema::connection::internals::{Action, Input, SessionSwitch, Step, TypeCache};
/// let mut step = SessionSwitch::new("<message>", "<seeded message>", None, TypeCache::Fixed);
/// // A Fixed client checks the path first; unchanged, the switch is sent.
/// assert!(matches!(step.resume(Input::Start), Step::Do(Action::CheckPath("<message>"))));
/// assert!(matches!(
///     step.resume(Input::PathChecked(false)),
///     Step::Do(Action::Send("<seeded message>"))
/// ));
/// assert!(matches!(step.resume(Input::Sent(Ok(()))), Step::Done(Ok(()))));
/// ```
#[derive(Debug)]
pub struct SessionSwitch<'a> {
    seeded: &'a str,
    path: PathChange<'a>,
    cache: TypeCache,
    begins: bool,
    state: SwitchState,
}

impl<'a> SessionSwitch<'a> {
    /// The checkout whose message is `sql` (it names the path: the key of
    /// the path decision) and is sent as `seeded` (`sql` with a fresh seed,
    /// see `write_seed`), on a connection of a pool with `types`.
    pub fn new(
        sql: &'a str,
        seeded: &'a str,
        types: Option<&'a PerTenantTypes>,
        cache: TypeCache,
    ) -> SessionSwitch<'a> {
        SessionSwitch {
            seeded,
            path: PathChange::new(sql, types, cache),
            cache,
            begins: false,
            state: SwitchState::Start,
        }
    }

    /// Whether `seeded` ends with a unit's `BEGIN` ([`write_checkout_message`]
    /// with a `begin`): once the message ran, the client's transaction
    /// manager is told the transaction is open ([`Action::MarkBegun`]).
    ///
    /// ```
    /// use appschema::connection::internals::{Action, Input, SessionSwitch, Step, TypeCache};
    /// let mut step = SessionSwitch::new("<message>", "<message>; BEGIN", None, TypeCache::Fixed)
    ///     .begins_unit(true);
    /// step.resume(Input::Start);
    /// step.resume(Input::PathChecked(false));
    /// assert!(matches!(step.resume(Input::Sent(Ok(()))), Step::Do(Action::MarkBegun)));
    /// assert!(matches!(step.resume(Input::Sent(Ok(()))), Step::Done(Ok(()))));
    /// ```
    pub fn begins_unit(mut self, begins: bool) -> SessionSwitch<'a> {
        self.begins = begins;
        self
    }

    /// Resumes with what the last action gave ([`Input::Start`] first).
    pub fn resume(&mut self, input: Input) -> Step<'a, Result<(), SessionRefusal>> {
        match (self.state, input) {
            (SwitchState::Start, Input::Start) => match self.cache {
                TypeCache::Fixed => {
                    self.state = SwitchState::Before;
                    self.path_step(Input::Start)
                }
                TypeCache::Clearable => self.send(SwitchState::Switching),
            },
            (SwitchState::Before | SwitchState::After, input) => self.path_step(input),
            (SwitchState::Switching, Input::Sent(result)) => match classify(result) {
                Err(Refusal::Dirty) => {
                    crate::observe::dirty_reset();
                    self.state = SwitchState::Resetting;
                    Step::Do(Action::Send(DIRTY_RESET))
                }
                other => self.switched(other),
            },
            (SwitchState::Resetting, Input::Sent(Ok(()))) => self.send(SwitchState::SwitchingAgain),
            (SwitchState::Resetting, Input::Sent(Err(error))) => {
                self.finish(Err(SessionRefusal::Failed(error)))
            }
            (SwitchState::SwitchingAgain, Input::Sent(result)) => match classify(result) {
                Err(Refusal::Dirty) => self.finish(Err(SessionRefusal::Broken(
                    "the role, LISTEN registrations or transaction characteristics it was \
                     left with survived a reset"
                        .to_string(),
                ))),
                other => self.switched(other),
            },
            (SwitchState::MarkingBegun, Input::Sent(Ok(()))) => self.begun(),
            (SwitchState::MarkingBegun, Input::Sent(Err(error))) => {
                self.finish(Err(SessionRefusal::Failed(error)))
            }
            (state, input) => unexpected("SessionSwitch", state, &input),
        }
    }

    fn send(&mut self, next: SwitchState) -> Step<'a, Result<(), SessionRefusal>> {
        self.state = next;
        Step::Do(Action::Send(self.seeded))
    }

    fn switched(&mut self, result: Result<(), Refusal>) -> Step<'a, Result<(), SessionRefusal>> {
        match result {
            // The transaction the message's `BEGIN` opened is the client's
            // before anything else runs on it.
            Ok(()) if self.begins => {
                self.state = SwitchState::MarkingBegun;
                Step::Do(Action::MarkBegun)
            }
            Ok(()) => self.begun(),
            Err(refusal) => self.finish(Err(refusal.into_session())),
        }
    }

    /// The switch ran (and the client knows of a transaction it began).
    fn begun(&mut self) -> Step<'a, Result<(), SessionRefusal>> {
        match self.cache {
            TypeCache::Clearable => {
                self.state = SwitchState::After;
                self.path_step(Input::Start)
            }
            TypeCache::Fixed => self.finish(Ok(())),
        }
    }

    fn path_step(&mut self, input: Input) -> Step<'a, Result<(), SessionRefusal>> {
        match self.path.resume(input) {
            Step::Do(action) => Step::Do(action),
            Step::Done(PathOutcome::Keep) if self.state == SwitchState::Before => {
                self.send(SwitchState::Switching)
            }
            Step::Done(PathOutcome::Keep) => self.finish(Ok(())),
            Step::Done(PathOutcome::Refuse) => {
                self.finish(Err(SessionRefusal::Broken(TYPES_HELD_MESSAGE.to_string())))
            }
            Step::Done(PathOutcome::Failed(error)) => {
                self.finish(Err(SessionRefusal::Failed(error)))
            }
        }
    }

    fn finish(
        &mut self,
        outcome: Result<(), SessionRefusal>,
    ) -> Step<'a, Result<(), SessionRefusal>> {
        self.state = SwitchState::Finished;
        Step::Done(outcome)
    }
}

/// What a checkout does with a connection whose switch was refused (see
/// [`CheckoutAttempts::refused`]).
#[derive(Debug)]
pub enum AfterRefusal {
    /// The connection is fine (the path's first schema is missing, and the
    /// switch's implicit transaction was rolled back): return it to the
    /// pool and fail the checkout with this error.
    Fail(ConnectionError),
    /// Close the connection and fail the checkout with this error.
    CloseAndFail(ConnectionError),
    /// Close the connection and try another.
    CloseAndRetry,
}

/// The connections one checkout may try: a switch refused as broken, or
/// failed, closes its connection and another is tried, as many as the pool
/// holds plus one freshly opened, within the checkout's deadline; past
/// that the refusal is the checkout's error (no other connection would fix
/// it). The last attempt goes to the pool itself, past any connection
/// parked by tenant affinity.
///
/// ```
/// use appschema::connection::internals::{AfterRefusal, CheckoutAttempts, SessionRefusal};
/// let mut attempts = CheckoutAttempts::new(1, None, "public");
/// let broken = || SessionRefusal::Broken("inside an open transaction block".into());
/// assert!(matches!(attempts.refused(broken(), false), AfterRefusal::CloseAndRetry));
/// assert!(attempts.last());
/// assert!(matches!(attempts.refused(broken(), false), AfterRefusal::CloseAndFail(_)));
/// ```
#[derive(Debug)]
pub struct CheckoutAttempts<'a> {
    left: usize,
    tenant: Option<&'a SchemaName>,
    first_schema: &'a str,
}

impl<'a> CheckoutAttempts<'a> {
    /// The attempts of a checkout for `tenant` (`None`: shared work), whose
    /// path starts with `first_schema`, from a pool of `max_size`
    /// connections.
    pub fn new(
        max_size: usize,
        tenant: Option<&'a SchemaName>,
        first_schema: &'a str,
    ) -> CheckoutAttempts<'a> {
        CheckoutAttempts {
            left: max_size.saturating_add(1),
            tenant,
            first_schema,
        }
    }

    /// Whether the next connection is the checkout's last chance: it is
    /// taken from the pool, not from connections parked by tenant.
    pub fn last(&self) -> bool {
        self.left <= 1
    }

    /// Decides on a connection whose switch was refused (`out_of_time`:
    /// the checkout's deadline has passed), counting it as one attempt.
    pub fn refused(&mut self, refusal: SessionRefusal, out_of_time: bool) -> AfterRefusal {
        self.left = self.left.saturating_sub(1);
        let error = match refusal {
            SessionRefusal::SchemaMissing => {
                return AfterRefusal::Fail(ConnectionError::SchemaMissing {
                    schema: self.first_schema.to_string(),
                })
            }
            _ if self.left > 0 && !out_of_time => return AfterRefusal::CloseAndRetry,
            SessionRefusal::Failed(error) => ConnectionError::Query {
                target: describe_target(self.tenant),
                error,
            },
            SessionRefusal::Broken(message) => ConnectionError::SwitchFailed {
                target: describe_target(self.tenant),
                message,
            },
        };
        AfterRefusal::CloseAndFail(error)
    }
}

fn unexpected(step: &str, state: impl std::fmt::Debug, input: &Input) -> ! {
    panic!("{step} in state {state:?} was resumed with {input:?}: the driver answered another action than the one asked for")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::SearchPath;
    use diesel::result::{DatabaseErrorKind, Error};

    const SQL: &str = "<message>";
    const SEEDED: &str = "<seeded>";

    /// An error as the server raises a marker (see `search_path`).
    fn raised(marker: &str) -> QueryResult<()> {
        Err(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(format!("unrecognized configuration parameter \"{marker}\"")),
        ))
    }
    fn dirty() -> QueryResult<()> {
        raised("appschema: role changed or channels listened to")
    }
    fn schema_missing() -> QueryResult<()> {
        raised("appschema: first schema of the path missing")
    }
    fn open_transaction() -> QueryResult<()> {
        raised("appschema: connection returned inside an open transaction block")
    }

    fn types(setting: Option<bool>) -> PerTenantTypes {
        PerTenantTypes::new(setting, &SearchPath::new())
    }

    fn is_send<R>(step: &Step<'_, R>, sql: &str) -> bool {
        matches!(step, Step::Do(Action::Send(s)) if *s == sql)
    }

    #[test]
    fn a_clean_session_is_switched_in_one_round_trip() {
        let mut s = SessionSwitch::new(SQL, SEEDED, None, TypeCache::Clearable);
        assert!(is_send(&s.resume(Input::Start), SEEDED));
        assert!(matches!(
            s.resume(Input::Sent(Ok(()))),
            Step::Do(Action::CheckPath(SQL))
        ));
        assert!(matches!(
            s.resume(Input::PathChecked(false)),
            Step::Done(Ok(()))
        ));
    }

    #[test]
    fn a_dirty_session_is_reset_and_switched_again_once() {
        let mut s = SessionSwitch::new(SQL, SEEDED, None, TypeCache::Fixed);
        s.resume(Input::Start);
        assert!(is_send(&s.resume(Input::PathChecked(false)), SEEDED));
        assert!(is_send(&s.resume(Input::Sent(dirty())), DIRTY_RESET));
        assert!(is_send(&s.resume(Input::Sent(Ok(()))), SEEDED));
        assert!(matches!(s.resume(Input::Sent(Ok(()))), Step::Done(Ok(()))));
    }

    #[test]
    fn a_session_still_dirty_after_its_reset_is_broken() {
        let mut s = SessionSwitch::new(SQL, SEEDED, None, TypeCache::Clearable);
        s.resume(Input::Start);
        s.resume(Input::Sent(dirty()));
        s.resume(Input::Sent(Ok(())));
        match s.resume(Input::Sent(dirty())) {
            Step::Done(Err(SessionRefusal::Broken(m))) => assert!(m.contains("survived a reset")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_reset_fails_the_switch() {
        let mut s = SessionSwitch::new(SQL, SEEDED, None, TypeCache::Clearable);
        s.resume(Input::Start);
        s.resume(Input::Sent(dirty()));
        assert!(matches!(
            s.resume(Input::Sent(Err(Error::BrokenTransactionManager))),
            Step::Done(Err(SessionRefusal::Failed(_)))
        ));
    }

    #[test]
    fn refusals_are_classified_and_a_failed_switch_skips_the_path_decision() {
        for (result, want) in [
            (schema_missing(), "SchemaMissing"),
            (open_transaction(), "Broken"),
            (Err(Error::BrokenTransactionManager), "Failed"),
        ] {
            let mut s = SessionSwitch::new(SQL, SEEDED, None, TypeCache::Clearable);
            s.resume(Input::Start);
            match s.resume(Input::Sent(result)) {
                Step::Done(Err(refusal)) => assert!(format!("{refusal:?}").starts_with(want)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_clearable_client_forgets_its_statements_on_a_change_of_path_with_per_tenant_types() {
        let types = types(None);
        let mut s = SessionSwitch::new(SQL, SEEDED, Some(&types), TypeCache::Clearable);
        assert!(is_send(&s.resume(Input::Start), SEEDED));
        assert!(matches!(
            s.resume(Input::Sent(Ok(()))),
            Step::Do(Action::CheckPath(SQL))
        ));
        assert!(matches!(
            s.resume(Input::PathChecked(true)),
            Step::Do(Action::AskTypes(_))
        ));
        assert!(matches!(
            s.resume(Input::TypesAnswered(Some(true))),
            Step::Do(Action::ForgetStatements)
        ));
        assert!(matches!(s.resume(Input::Sent(Ok(()))), Step::Done(Ok(()))));
        // The answer is remembered: the next change of path does not ask.
        assert_eq!(types.known(), Some(true));
    }

    #[test]
    fn a_clearable_client_keeps_its_statements_on_the_same_path_or_without_such_types() {
        let none = types(Some(false));
        let mut s = SessionSwitch::new(SQL, SEEDED, Some(&none), TypeCache::Clearable);
        s.resume(Input::Start);
        s.resume(Input::Sent(Ok(())));
        assert!(matches!(
            s.resume(Input::PathChecked(true)),
            Step::Done(Ok(()))
        ));
        let some = types(Some(true));
        let mut s = SessionSwitch::new(SQL, SEEDED, Some(&some), TypeCache::Clearable);
        s.resume(Input::Start);
        s.resume(Input::Sent(Ok(())));
        assert!(matches!(
            s.resume(Input::PathChecked(false)),
            Step::Done(Ok(()))
        ));
    }

    #[test]
    fn a_fixed_client_last_on_another_path_is_refused_before_anything_is_sent() {
        let types = types(None);
        let mut s = SessionSwitch::new(SQL, SEEDED, Some(&types), TypeCache::Fixed);
        assert!(matches!(
            s.resume(Input::Start),
            Step::Do(Action::CheckPath(SQL))
        ));
        assert!(matches!(
            s.resume(Input::PathChecked(true)),
            Step::Do(Action::AskTypes(_))
        ));
        // A failed question answers yes: fail closed.
        match s.resume(Input::TypesAnswered(None)) {
            Step::Done(Err(SessionRefusal::Broken(m))) => assert_eq!(m, TYPES_HELD_MESSAGE),
            other => panic!("{other:?}"),
        }
        assert_eq!(types.known(), None, "a failed question is asked again");
    }

    #[test]
    fn a_fixed_client_without_per_tenant_types_is_switched_whatever_it_served() {
        let types = types(Some(false));
        let mut s = SessionSwitch::new(SQL, SEEDED, Some(&types), TypeCache::Fixed);
        s.resume(Input::Start);
        assert!(is_send(&s.resume(Input::PathChecked(true)), SEEDED));
    }

    #[test]
    fn a_failed_forget_fails_the_switch() {
        let types = types(Some(true));
        let mut s = SessionSwitch::new(SQL, SEEDED, Some(&types), TypeCache::Clearable);
        s.resume(Input::Start);
        s.resume(Input::Sent(Ok(())));
        assert!(matches!(
            s.resume(Input::PathChecked(true)),
            Step::Do(Action::ForgetStatements)
        ));
        assert!(matches!(
            s.resume(Input::Sent(Err(Error::BrokenTransactionManager))),
            Step::Done(Err(SessionRefusal::Failed(_)))
        ));
    }

    const SEEDED_BEGIN: &str = "<seeded>; BEGIN";

    #[test]
    fn a_message_for_a_unit_ends_with_its_begin_after_a_fresh_seed() {
        let mut sql = String::new();
        crate::connection::search_path::write_session_switch(&mut sql, r#""t1", "public""#, "t1");
        let (mut one, mut two) = (String::new(), String::new());
        write_checkout_message(&mut one, &sql, Some("BEGIN READ ONLY"));
        write_checkout_message(&mut two, &sql, Some("BEGIN READ ONLY"));
        assert!(one.ends_with("; BEGIN READ ONLY"), "{one}");
        assert_eq!(one.len(), sql.len() + "; BEGIN READ ONLY".len());
        assert_ne!(one, two, "each message gets a fresh seed");
        write_checkout_message(&mut one, &sql, None);
        assert_eq!(one.len(), sql.len());
        assert!(!one.contains("BEGIN"));
    }

    #[test]
    fn a_switch_that_began_a_unit_marks_it_begun_before_the_path_decision() {
        let mut s =
            SessionSwitch::new(SQL, SEEDED_BEGIN, None, TypeCache::Clearable).begins_unit(true);
        assert!(is_send(&s.resume(Input::Start), SEEDED_BEGIN));
        assert!(matches!(
            s.resume(Input::Sent(Ok(()))),
            Step::Do(Action::MarkBegun)
        ));
        assert!(matches!(
            s.resume(Input::Sent(Ok(()))),
            Step::Do(Action::CheckPath(SQL))
        ));
        assert!(matches!(
            s.resume(Input::PathChecked(false)),
            Step::Done(Ok(()))
        ));
    }

    #[test]
    fn a_dirty_session_is_reset_and_the_unit_begun_by_the_second_message_only() {
        for cache in [TypeCache::Clearable, TypeCache::Fixed] {
            let mut s = SessionSwitch::new(SQL, SEEDED_BEGIN, None, cache).begins_unit(true);
            if cache == TypeCache::Fixed {
                s.resume(Input::Start);
                assert!(is_send(&s.resume(Input::PathChecked(false)), SEEDED_BEGIN));
            } else {
                assert!(is_send(&s.resume(Input::Start), SEEDED_BEGIN));
            }
            // The refused message ran nothing, its BEGIN included.
            assert!(is_send(&s.resume(Input::Sent(dirty())), DIRTY_RESET));
            assert!(is_send(&s.resume(Input::Sent(Ok(()))), SEEDED_BEGIN));
            assert!(matches!(
                s.resume(Input::Sent(Ok(()))),
                Step::Do(Action::MarkBegun)
            ));
            let after = s.resume(Input::Sent(Ok(())));
            match cache {
                TypeCache::Fixed => assert!(matches!(after, Step::Done(Ok(())))),
                TypeCache::Clearable => assert!(matches!(after, Step::Do(Action::CheckPath(SQL)))),
            }
        }
    }

    #[test]
    fn a_refused_message_for_a_unit_is_not_marked_begun() {
        for result in [schema_missing(), open_transaction(), dirty()] {
            let mut s =
                SessionSwitch::new(SQL, SEEDED_BEGIN, None, TypeCache::Clearable).begins_unit(true);
            s.resume(Input::Start);
            let mut step = s.resume(Input::Sent(result));
            if matches!(step, Step::Do(Action::Send(DIRTY_RESET))) {
                s.resume(Input::Sent(Ok(())));
                step = s.resume(Input::Sent(dirty()));
            }
            assert!(matches!(step, Step::Done(Err(_))), "{step:?}");
        }
    }

    #[test]
    fn a_failed_mark_fails_the_switch() {
        let mut s = SessionSwitch::new(SQL, SEEDED_BEGIN, None, TypeCache::Fixed).begins_unit(true);
        s.resume(Input::Start);
        s.resume(Input::PathChecked(false));
        s.resume(Input::Sent(Ok(())));
        assert!(matches!(
            s.resume(Input::Sent(Err(Error::BrokenTransactionManager))),
            Step::Done(Err(SessionRefusal::Failed(_)))
        ));
    }

    #[test]
    fn a_switch_without_a_unit_never_marks_one_begun() {
        let mut s = SessionSwitch::new(SQL, SEEDED, None, TypeCache::Fixed);
        s.resume(Input::Start);
        s.resume(Input::PathChecked(false));
        assert!(matches!(s.resume(Input::Sent(Ok(()))), Step::Done(Ok(()))));
    }

    #[test]
    #[should_panic(expected = "answered another action")]
    fn a_driver_answering_the_wrong_action_is_a_bug() {
        let mut s = SessionSwitch::new(SQL, SEEDED, None, TypeCache::Clearable);
        s.resume(Input::Start);
        s.resume(Input::PathChecked(true));
    }

    fn acme() -> SchemaName {
        SchemaName::new("acme").unwrap()
    }

    #[test]
    fn a_missing_schema_fails_the_checkout_and_keeps_the_connection() {
        let acme = acme();
        let mut a = CheckoutAttempts::new(4, Some(&acme), "acme");
        match a.refused(SessionRefusal::SchemaMissing, false) {
            AfterRefusal::Fail(ConnectionError::SchemaMissing { schema }) => {
                assert_eq!(schema, "acme")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_connection_is_replaced_up_to_the_pool_size_plus_one() {
        let acme = acme();
        let mut a = CheckoutAttempts::new(2, Some(&acme), "acme");
        let broken = || SessionRefusal::Broken("b".to_string());
        assert!(!a.last());
        assert!(matches!(
            a.refused(broken(), false),
            AfterRefusal::CloseAndRetry
        ));
        assert!(matches!(
            a.refused(
                SessionRefusal::Failed(Error::BrokenTransactionManager),
                false
            ),
            AfterRefusal::CloseAndRetry
        ));
        assert!(a.last());
        match a.refused(broken(), false) {
            AfterRefusal::CloseAndFail(ConnectionError::SwitchFailed { target, message }) => {
                assert_eq!(target, "tenant schema `acme`");
                assert_eq!(message, "b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn past_the_deadline_a_refusal_is_the_checkouts_error() {
        let mut a = CheckoutAttempts::new(10, None, "public");
        match a.refused(
            SessionRefusal::Failed(Error::BrokenTransactionManager),
            true,
        ) {
            AfterRefusal::CloseAndFail(ConnectionError::Query { target, .. }) => {
                assert_eq!(target, "shared work")
            }
            other => panic!("{other:?}"),
        }
    }
}
