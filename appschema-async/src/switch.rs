//! The checkout's one message, run on an [`AsyncPgConnection`]: the SQL and
//! the decoding of its outcome are the sync pool's (`appschema-core`), only
//! the client differs.

use appschema_core::connection::internals::{
    classify, write_seed, PlanWatch, Refusal, SessionRefusal, DIRTY_RESET,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::{FutureExt, StreamExt};

/// Runs a checkout message written by `write_session_switch` on a connection
/// where the switch was prepared: one round trip for a session in its
/// connect-time role and listening to nothing, three otherwise (the switch's
/// refusal, `DIRTY_RESET`, the switch again), as in the sync pool. Then
/// drops any notification the connection already received.
///
/// With `per_tenant_types`, a connection last switched to another path is
/// refused as broken before anything is sent (the pool closes it and tries
/// another, or opens one): diesel-async caches custom type OIDs by name
/// and offers no way to empty that cache, so a type declared without a
/// schema (one per tenant) would be bound as the previous tenant's.
///
/// `begin` (a unit's `BEGIN` or `BEGIN READ ONLY`) is appended to the
/// message sent, as on the sync pool (`appschema_core`'s
/// `run_session_switch` says why that is sound): the unit's transaction
/// starts in the checkout's round trip, and diesel-async's transaction
/// manager is told it is open.
pub(crate) async fn run_session_switch(
    conn: &mut AsyncPgConnection,
    sql: &str,
    per_tenant_types: bool,
    begin: Option<&str>,
) -> Result<(), SessionRefusal> {
    if per_tenant_types && PlanWatch::serves(conn.instrumentation(), sql) {
        return Err(SessionRefusal::Broken(
            "it served another tenant, whose custom type OIDs its client may hold \
             (per_tenant_types)"
                .to_string(),
        ));
    }
    // A fresh seed for `random()` in the message sent; `sql` (with its
    // placeholder) names the path.
    let mut seeded = String::new();
    write_seed(&mut seeded, sql);
    if let Some(begin) = begin {
        seeded.push_str("; ");
        seeded.push_str(begin);
    }
    let result = match classify(conn.batch_execute(&seeded).await) {
        Err(Refusal::Dirty) => {
            appschema_core::observe::dirty_reset();
            conn.batch_execute(DIRTY_RESET)
                .await
                .map_err(SessionRefusal::Failed)?;
            match classify(conn.batch_execute(&seeded).await) {
                Err(Refusal::Dirty) => Err(SessionRefusal::Broken(
                    "the role or LISTEN registrations it was left with survived a reset"
                        .to_string(),
                )),
                other => other.map_err(Refusal::into_session),
            }
        }
        other => other.map_err(Refusal::into_session),
    };
    drain_notifications(conn);
    if result.is_ok() && begin.is_some() {
        began_transaction(conn).map_err(SessionRefusal::Failed)?;
    }
    result
}

/// Tells diesel-async's transaction manager that the transaction the
/// checkout message's appended `BEGIN` opened is open (as its
/// `begin_transaction_sql` would after sending it).
fn began_transaction(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    use diesel::connection::{
        InstrumentationEvent, TransactionDepthChange, TransactionManagerStatus,
    };
    use diesel_async::TransactionManager;
    conn.instrumentation()
        .on_connection_event(InstrumentationEvent::begin_transaction(
            std::num::NonZeroU32::MIN,
        ));
    match diesel_async::AnsiTransactionManager::transaction_manager_status_mut(conn) {
        TransactionManagerStatus::Valid(status) => {
            status.change_transaction_depth(TransactionDepthChange::IncreaseDepth)
        }
        TransactionManagerStatus::InError => Err(diesel::result::Error::BrokenTransactionManager),
    }
}

/// Throws away notifications the connection has already received (from
/// channels an earlier checkout listened to). Client-side only: whatever
/// the connection's task has queued, without waiting for more.
pub(crate) fn drain_notifications(conn: &mut AsyncPgConnection) {
    let mut stream = std::pin::pin!(conn.notifications_stream());
    while let Some(Some(_)) = stream.next().now_or_never() {}
}
