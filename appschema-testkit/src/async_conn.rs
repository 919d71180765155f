//! The async suites' runtime, and the [`crate::tenants`] probes on an
//! `AsyncPgConnection`.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::tenants::{Pid, WhoAmI};

/// A multi-threaded tokio runtime with two workers (time and I/O on): what
/// each async test drives its pool on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The connection's current schema and the marker its `items` resolves to,
/// in one statement.
pub async fn whoami(conn: &mut AsyncPgConnection) -> QueryResult<WhoAmI> {
    diesel::sql_query(
        "SELECT current_schema() AS schema, (SELECT marker FROM items WHERE id = 1) AS marker",
    )
    .get_result(conn)
    .await
}

/// The process id of `conn`'s backend.
pub async fn backend_pid(conn: &mut AsyncPgConnection) -> QueryResult<i32> {
    Ok(diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await?
        .pid)
}
