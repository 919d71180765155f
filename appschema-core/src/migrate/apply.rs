//! Applying one migration to one schema: the lock, the tracking row and the
//! migration, in one transaction (or statement by statement for
//! `run_in_transaction = false`).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::extensions::in_shared_schema;
use super::{Event, TRACKING_TABLE};
use crate::citus::execute_script;
use crate::name::quote_ident;
pub(super) use crate::name::quote_literal;
use crate::Migration;

/// The advisory lock of one schema: `(namespace, hashtext(schema))`.
pub(super) fn lock_key(schema: &str) -> String {
    format!(
        "hashtext('appschema.migrate'), hashtext({})",
        quote_literal(schema)
    )
}

/// The batch that applies `m` to a schema whose tracking table exists:
/// the same statements a hand-written script would send (path, migration,
/// tracking row, in one transaction) plus the try-lock folded into the
/// statement that sets the path. Nothing for the server to compile.
///
/// The tracking row is inserted *before* the migration runs: if another run
/// applied the version while we waited for the lock, the row's primary key
/// refuses the insert (a unique check sees committed rows whatever the
/// statement's snapshot), so the migration never runs twice; [`apply`]
/// recognises that refusal by the constraint's name.
///
/// A refused try-lock is a cast of a marked text to `int4`; the text
/// includes `pg_backend_pid()` so the planner cannot fold the cast into a
/// constant and raise it when the branch is not taken.
fn tracked_batch(target: ApplyTarget<'_>, m: &Migration, try_lock: bool) -> String {
    let ApplyTarget { schema, path, .. } = target;
    format!(
        "{start}\
         INSERT INTO {qs}.{TRACKING_TABLE} (version) VALUES ({v});\n\
         {sql}\n;\nCOMMIT;",
        start = locked_transaction_start(schema, path, try_lock),
        qs = quote_ident(schema),
        v = quote_literal(m.version()),
        sql = in_shared_schema(m.up_sql(), target.shared),
    )
}

/// The start of a batch that changes one schema's migrations (applying or
/// reverting one): `BEGIN`, then one statement that sets `search_path` to
/// `path` for the transaction and takes the schema's lock. With `try_lock`
/// a lock another run holds is refused with `appschema:locked` (a cast of
/// a marked text to `int4`, which [`run_locked`] recognises) instead of
/// waited for.
pub(super) fn locked_transaction_start(schema: &str, path: &str, try_lock: bool) -> String {
    let key = lock_key(schema);
    let lock = if try_lock {
        format!(
            "CASE WHEN pg_catalog.pg_try_advisory_xact_lock({key}) THEN 0 \
             ELSE CAST('appschema:locked ' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid() AS pg_catalog.int4) END"
        )
    } else {
        format!("pg_catalog.pg_advisory_xact_lock({key})")
    };
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED;\n\
         SELECT pg_catalog.set_config('search_path', {path}, true), {lock};\n",
        path = quote_literal(path),
    )
}

/// Whether `e` is the tracking table's primary key refusing a version that
/// is already recorded.
fn is_tracking_duplicate(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, info)
            if info.table_name() == Some(TRACKING_TABLE)
    )
}

/// SQL that takes the schema's lock (`try`: or raises `appschema:locked`),
/// creates its tracking table, and raises `appschema:applied` when `version`
/// is already recorded (another run applied it while we waited). Used when
/// the planning read found no tracking table in the schema.
fn guard_sql(schema: &str, version: &str, try_lock: bool) -> String {
    let qs = quote_ident(schema);
    let lock = if try_lock {
        format!(
            "IF NOT pg_try_advisory_xact_lock({}) THEN RAISE EXCEPTION 'appschema:locked'; END IF;",
            lock_key(schema)
        )
    } else {
        format!("PERFORM pg_advisory_xact_lock({});", lock_key(schema))
    };
    format!(
        "DO $appschema$ BEGIN {lock}
           CREATE TABLE IF NOT EXISTS {qs}.{TRACKING_TABLE} (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
           IF EXISTS (SELECT 1 FROM {qs}.{TRACKING_TABLE} WHERE version = {v}) THEN
             RAISE EXCEPTION 'appschema:applied';
           END IF;
         END $appschema$",
        v = quote_literal(version)
    )
}

/// Why a guard stopped a migration before it ran.
#[derive(Debug, PartialEq, Eq)]
enum GuardRefusal {
    /// Another run holds the schema's lock.
    Locked,
    /// The version is already recorded in the schema.
    Applied,
}

/// Recognises the guards' own refusals in a PostgreSQL error message (the
/// PL/pgSQL guard raises the bare marker; the plain guard's cast error
/// quotes it, in whatever language the server's `lc_messages` is).
fn guard_refusal(message: &str) -> Option<GuardRefusal> {
    if message.contains("appschema:locked") {
        Some(GuardRefusal::Locked)
    } else if message.contains("appschema:applied") {
        Some(GuardRefusal::Applied)
    } else {
        None
    }
}

pub(super) fn db_message(e: &diesel::result::Error) -> String {
    match e {
        diesel::result::Error::DatabaseError(_, info) => info.message().to_string(),
        other => other.to_string(),
    }
}

/// Applies `m` to `schema` (with `search_path` = `path`) and records it.
/// `Ok(false)`: another run had applied it. `Err`: PostgreSQL's message.
pub(super) fn apply(
    conn: &mut PgConnection,
    target: ApplyTarget<'_>,
    m: &Migration,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<bool, String> {
    run_locked(
        conn,
        target.schema,
        m.run_in_transaction(),
        on_event,
        |conn, try_lock| {
            if m.run_in_transaction() {
                apply_in_transaction(conn, target, m, try_lock)
            } else {
                apply_without_transaction(conn, target, m, try_lock)
            }
        },
        |e, message| {
            is_tracking_duplicate(e) || guard_refusal(message) == Some(GuardRefusal::Applied)
        },
    )
}

/// Runs one schema's change, `attempt(conn, try_lock)`, first with a
/// try-lock; when another run holds the schema's lock (`appschema:locked`),
/// says so with [`Event::Waiting`] and runs it again waiting for the lock.
/// After a failure the transaction is rolled back (`in_transaction`).
/// `Ok(true)`: done. `Ok(false)`: `done_already` recognised the error
/// (another run made the change while we waited). `Err`: PostgreSQL's
/// message.
pub(super) fn run_locked(
    conn: &mut PgConnection,
    schema: &str,
    in_transaction: bool,
    on_event: &(dyn Fn(Event) + Sync),
    mut attempt: impl FnMut(&mut PgConnection, bool) -> QueryResult<()>,
    done_already: impl Fn(&diesel::result::Error, &str) -> bool,
) -> Result<bool, String> {
    let mut try_lock = true;
    loop {
        let Err(e) = attempt(conn, try_lock) else {
            return Ok(true);
        };
        let message = db_message(&e);
        if in_transaction {
            let _ = conn.batch_execute("ROLLBACK");
        }
        if done_already(&e, &message) {
            return Ok(false);
        }
        if guard_refusal(&message) == Some(GuardRefusal::Locked) && try_lock {
            on_event(Event::Waiting {
                schema: schema.to_string(),
            });
            try_lock = false;
            continue;
        }
        return Err(message);
    }
}

/// Where [`apply`] runs a migration.
#[derive(Debug, Clone, Copy)]
pub(super) struct ApplyTarget<'a> {
    pub(super) schema: &'a str,
    /// The `search_path` while the migration runs.
    pub(super) path: &'a str,
    /// The shared schema, where the migration's `CREATE EXTENSION`s
    /// install their extensions (see the `extensions` module).
    pub(super) shared: &'a str,
    /// The schema's tracking table is known to exist, so the guard need not
    /// create it.
    pub(super) tracked: bool,
    /// On Citus: run the statements one by one (see
    /// [`crate::citus::execute_script`]).
    pub(super) one_by_one: bool,
}

/// One round trip: lock, check, migration, tracking row, commit.
fn apply_in_transaction(
    conn: &mut PgConnection,
    target: ApplyTarget<'_>,
    m: &Migration,
    try_lock: bool,
) -> QueryResult<()> {
    let ApplyTarget {
        schema,
        path,
        shared,
        tracked,
        one_by_one,
    } = target;
    if tracked {
        return execute_script(conn, &tracked_batch(target, m, try_lock), one_by_one);
    }
    execute_script(conn, &format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED;\nSELECT set_config('search_path', {path}, true);\n{guard};\n{sql}\n;\nINSERT INTO {qs}.{TRACKING_TABLE} (version) VALUES ({v});\nCOMMIT;",
        path = quote_literal(path),
        guard = guard_sql(schema, m.version(), try_lock),
        sql = in_shared_schema(m.up_sql(), shared),
        qs = quote_ident(schema),
        v = quote_literal(m.version()),
    ), one_by_one)
}

/// `run_in_transaction = false`: a session lock, then each statement on its
/// own (so `CREATE INDEX CONCURRENTLY` works), then the tracking row.
fn apply_without_transaction(
    conn: &mut PgConnection,
    target: ApplyTarget<'_>,
    m: &Migration,
    try_lock: bool,
) -> QueryResult<()> {
    let ApplyTarget {
        schema,
        path,
        shared,
        ..
    } = target;
    let key = lock_key(schema);
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    if try_lock {
        let got: Locked =
            diesel::sql_query(format!("SELECT pg_try_advisory_lock({key}) AS locked"))
                .get_result(conn)?;
        if !got.locked {
            return Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new("appschema:locked".to_string()),
            ));
        }
    } else {
        conn.batch_execute(&format!("SELECT pg_advisory_lock({key})"))?;
    }
    let result = (|| {
        // The guard's own lock is transaction-scoped and released at once;
        // the session lock above is what holds.
        conn.batch_execute(&format!(
            "BEGIN; {}; COMMIT",
            guard_sql(schema, m.version(), false)
        ))
        .inspect_err(|_| {
            let _ = conn.batch_execute("ROLLBACK");
        })?;
        conn.batch_execute(&format!("SET search_path TO {path}"))?;
        // The planner split `up.sql` with PostgreSQL's grammar; a
        // `run_in_transaction = false` migration always carries the split.
        let statements = m.statements().ok_or_else(|| {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new(format!(
                    "migration {} runs outside a transaction but holds no statements",
                    m.version()
                )),
            )
        })?;
        for statement in statements {
            // A rewritten `CREATE EXTENSION` is two statements in one
            // message: one implicit transaction holds the lock through it.
            conn.batch_execute(&in_shared_schema(statement, shared))?;
        }
        conn.batch_execute(&format!(
            "INSERT INTO {}.{TRACKING_TABLE} (version) VALUES ({})",
            quote_ident(schema),
            quote_literal(m.version())
        ))
    })();
    let _ = conn.batch_execute(&format!(
        "RESET search_path; SELECT pg_advisory_unlock({key})"
    ));
    result
}
