//! The connection protocol's steps, each written once and without I/O
//! (*sans-IO*), driven by a thin sync driver (`PgConnection`, this crate)
//! and a thin async one (`AsyncPgConnection`, `appschema-async`).
//!
//! **Why.** Every decision a checkout or a unit of work takes — what to send
//! first, what a refusal means, when a dirty session is reset and tried
//! again, when a connection is closed, when a unit may run once more after
//! its connection was lost — used to be written twice, once around a
//! blocking client and once around an async one, and the two copies drifted.
//! Here each step is a small state machine that says what to do next
//! ("send this batch", "run the caller's work", "commit") and decides on what
//! comes back; a driver does only the I/O the step asks for, in a loop. This
//! is the shape `postgres-protocol` gives `postgres` and `tokio-postgres`. A
//! change to the checkout is made once, here, and is unit-tested here
//! without a database (feed a step outcomes, check what it asks for and
//! what it decides).
//!
//! **The steps.**
//!
//! - [`SessionSwitch`]: a checkout of a `SharedPool` / `AsyncSharedPool`:
//!   the reset-and-switch message, the dirty session's reset and second
//!   try, and what a change of path means for the client's caches of
//!   custom types ([`TypeCache`]); for a unit of work, the unit's `BEGIN`
//!   at the end of the message ([`write_checkout_message`]).
//! - [`PathChange`]: that last decision on its own, for the
//!   transaction-scoped pools, which switch inside each unit.
//! - [`CheckoutAttempts`]: what a refused switch means for the checkout:
//!   fail, or close the connection and try another (bounded by the pool's
//!   size and the checkout's deadline).
//! - [`Unit`]: one transaction of work: `BEGIN`, the unit's switch (the
//!   transaction-scoped pools), the work, `COMMIT` or `ROLLBACK`, and
//!   whether a failure may be retried (the connection was lost before
//!   `COMMIT` was sent, or while a read-only unit committed); its `BEGIN`
//!   already sent by the checkout on a session pool.
//! - [`UnitRetry`]: one transparent retry of a unit, on a fresh connection.
//!
//! **Drivers.** The sync driver of the switch steps is
//! `connection::switch_driver` in this crate; the unit's is
//! `connection::retry`. The async drivers are in `appschema-async`
//! (`switch.rs`, `retry.rs`). A driver never decides: it runs what the step
//! asks for and feeds back the outcome, as it came.

mod checkout;
mod unit;

pub use checkout::{
    write_checkout_message, Action, AfterRefusal, CheckoutAttempts, Input, PathChange, PathOutcome,
    SessionSwitch, Step, TypeCache, TYPES_HELD_MESSAGE,
};
pub use unit::{Retry, Unit, UnitAction, UnitEnd, UnitInput, UnitMode, UnitRetry};
