//! Telling a lost connection from every other failure.
//!
//! A failover, a server restart (`pg_ctl restart -m fast`), an operator's
//! `pg_terminate_backend`, an idle-session timeout or a network cut all end
//! the same way for the application: the connection a unit of work was
//! using is gone. Nothing is wrong with the request, and the same request
//! succeeds on a fresh connection, so it must not answer as a bug would
//! (`500`): it is retried when that is safe, and otherwise answered with
//! "retry later" (`503` with `Retry-After`). [`is_connection_lost`] is the
//! one test every path uses (the pools, the axum integration, the
//! across-tenants runner, the CLI).

use diesel::result::{DatabaseErrorKind, Error};

/// What PostgreSQL, libpq and tokio-postgres say when a connection is lost
/// (lower case; matched as substrings of the lower-cased message).
///
/// - `terminating connection`: the server ends the session — SQLSTATE 57P01
///   (`… due to administrator command`: `pg_terminate_backend`, a fast or
///   smart shutdown), 57P02 (`… because of crash of another server
///   process`), 57P05 (`… due to idle-session timeout`), 25P03 (`… due to
///   idle-in-transaction timeout`), a conflict with recovery on a standby.
/// - `the database system is …`: SQLSTATE 57P03 (cannot connect now:
///   shutting down, starting up, in recovery, not yet accepting
///   connections).
/// - libpq: `server closed the connection unexpectedly`, `no connection to
///   the server`, `connection to server was lost`, `could not send data to
///   server`, `could not receive data from server`, `SSL connection has
///   been closed unexpectedly`.
/// - tokio-postgres (diesel-async): `connection closed`, `error
///   communicating with the server` (an I/O error on the socket).
/// - PgBouncer, which sends these (SQLSTATE 08P01) and then closes the
///   client's connection: `server conn crashed?` (the server connection
///   serving the client's transaction died: a terminated backend, a
///   restart), `server login has been failing, try again later
///   (server_login_retry)` (the server is down or restarting: nothing was
///   sent to it), `query_wait_timeout` (no server connection became free
///   in time: nothing was sent to the server either). A server's own
///   `FATAL` (57P01 and the others above) is passed through as the server
///   sent it. PgBouncer's other refusals (`no such database`, a failed
///   login, `pooler error`s about the client's own protocol use) are not
///   a lost connection.
///
/// With a non-English `lc_messages` on the server, the server's own texts
/// (the first two) are translated; the sync client still recognises the
/// loss by libpq's connection status (`ClosedConnection`), the async one by
/// the socket closing (`connection closed`) on the next statement.
const LOST: &[&str] = &[
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "server closed the connection unexpectedly",
    "no connection to the server",
    "connection to server was lost",
    "could not send data to server",
    "could not receive data from server",
    "ssl connection has been closed unexpectedly",
    "connection closed",
    "error communicating with the server",
    "server conn crashed?",
    "server login has been failing, try again later",
    "query_wait_timeout",
];

/// Whether `error` means the connection to PostgreSQL was lost (the server
/// ended the session, restarted or is shutting down, or the socket closed),
/// rather than anything about the work itself: a failover, a restart, a
/// `pg_terminate_backend` or an idle-session kill. Such a failure is
/// transient: the pools never hand that connection out again, and the same
/// work succeeds on a fresh one.
///
/// True for diesel's [`DatabaseErrorKind::ClosedConnection`] (libpq found
/// the connection bad), [`Error::BrokenTransactionManager`] (diesel gave up
/// on the connection's transaction state, which on PostgreSQL follows a
/// lost connection), a failed commit whose rollback failed because of one
/// of these, and the messages PostgreSQL (SQLSTATE 57P01, 57P02, 57P03,
/// 57P05, 25P03), libpq, tokio-postgres and PgBouncer give a lost connection. False
/// for everything else, including a statement cancelled by
/// `pg_cancel_backend` or a timeout (the connection survives those).
///
/// Whether it is safe to run the work again is another question: see
/// [`SharedPool::run_retrying`](super::SharedPool::run_retrying), which
/// retries only what cannot have committed.
///
/// ```
/// use appschema::connection::is_connection_lost;
/// use diesel::result::{DatabaseErrorKind, Error};
///
/// let terminated = Error::DatabaseError(
///     DatabaseErrorKind::Unknown,
///     Box::new("terminating connection due to administrator command".to_string()),
/// );
/// assert!(is_connection_lost(&terminated));
/// assert!(is_connection_lost(&Error::BrokenTransactionManager));
/// assert!(!is_connection_lost(&Error::NotFound));
/// ```
pub fn is_connection_lost(error: &Error) -> bool {
    match error {
        Error::BrokenTransactionManager => true,
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        Error::DatabaseError(_, info) => is_connection_lost_message(info.message()),
        Error::RollbackErrorOnCommit {
            rollback_error,
            commit_error,
        } => is_connection_lost(commit_error) || is_connection_lost(rollback_error),
        _ => false,
    }
}

/// Whether an error's text says the connection was lost (see
/// [`is_connection_lost`]); for errors that reach the caller only as text
/// (a pool's, the CLI's error chain).
///
/// ```
/// use appschema::connection::is_connection_lost_message;
/// assert!(is_connection_lost_message(
///     "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally"
/// ));
/// assert!(!is_connection_lost_message("relation \"orders\" does not exist"));
/// ```
pub fn is_connection_lost_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    LOST.iter().any(|marker| message.contains(marker))
}

/// Whether `conn`, after a failure, is gone and must be replaced: diesel
/// gave up on its transaction state, or a `SELECT 1` finds it lost. For the
/// workers of the migration executor and the across-tenants runner, which
/// keep one connection for many schemas.
pub(crate) fn lost_after_failure(conn: &mut diesel::PgConnection) -> bool {
    use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .is_err()
        || conn
            .batch_execute("SELECT 1")
            .is_err_and(|e| is_connection_lost(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_string()))
    }

    #[test]
    fn every_way_a_connection_is_lost_is_recognised() {
        for message in [
            "terminating connection due to administrator command",
            "terminating connection because of crash of another server process",
            "terminating connection due to idle-session timeout",
            "terminating connection due to idle-in-transaction timeout",
            "FATAL:  the database system is shutting down",
            "the database system is starting up",
            "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.",
            "no connection to the server\n",
            "could not send data to server: Broken pipe",
            "could not receive data from server: Connection reset by peer",
            "SSL connection has been closed unexpectedly",
            "connection closed",
            "error communicating with the server: Connection reset by peer (os error 104)",
            "server conn crashed?",
            "server login has been failing, try again later (server_login_retry)",
            "query_wait_timeout",
        ] {
            assert!(
                is_connection_lost(&db_error(DatabaseErrorKind::Unknown, message)),
                "{message}"
            );
            assert!(
                is_connection_lost(&db_error(DatabaseErrorKind::UnableToSendCommand, message)),
                "{message}"
            );
        }
        assert!(is_connection_lost(&db_error(
            DatabaseErrorKind::ClosedConnection,
            "whatever the server's language"
        )));
        assert!(is_connection_lost(&Error::BrokenTransactionManager));
        assert!(is_connection_lost(&Error::RollbackErrorOnCommit {
            rollback_error: Box::new(Error::BrokenTransactionManager),
            commit_error: Box::new(db_error(DatabaseErrorKind::Unknown, "connection closed")),
        }));
    }

    #[test]
    fn failures_of_the_work_itself_are_not_a_lost_connection() {
        for message in [
            "canceling statement due to user request",
            "canceling statement due to statement timeout",
            "relation \"orders\" does not exist",
            "cached plan must not change result type",
            "another command is already in progress",
            "duplicate key value violates unique constraint \"orders_pkey\"",
            "no such database: app",
            "password authentication failed for user \"app\"",
        ] {
            assert!(
                !is_connection_lost(&db_error(DatabaseErrorKind::Unknown, message)),
                "{message}"
            );
        }
        assert!(!is_connection_lost(&db_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"orders_pkey\""
        )));
        assert!(!is_connection_lost(&Error::NotFound));
        assert!(!is_connection_lost(&Error::RollbackTransaction));
    }
}
