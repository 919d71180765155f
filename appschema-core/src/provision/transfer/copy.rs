//! Streaming `COPY` of tables named at run time, through diesel's own COPY
//! support (`diesel::copy_to(..).load_raw`, `diesel::copy_from(..)
//! .from_raw_data`), which speaks libpq's COPY protocol for us: no
//! hand-written protocol code and no second PostgreSQL client library,
//! and the COPY runs on the caller's connection, inside its transaction.
//!
//! diesel names a COPY's target through [`CopyTarget::walk_target`], a
//! function without `self`, because its tables are known at compile time.
//! A tenant's tables are known at run time, so [`Target`] reads the target
//! (schema, table and column list, every name quoted) from a thread-local
//! that [`with_target`] sets for the duration of one COPY. diesel never
//! caches a COPY statement (it marks them unsafe to cache), so each call
//! builds its SQL afresh from the current target.

use std::cell::RefCell;
use std::io::{BufRead, Write};

use diesel::connection::SimpleConnection;
use diesel::pg::CopyTarget;
use diesel::prelude::*;
use diesel::query_builder::AstPass;

use crate::name::{quote_ident, SchemaName};

// Only its type is used: diesel wants a `Table` behind every COPY target.
// Its name never reaches SQL (`Target::walk_target` writes the real one).
diesel::table! {
    appschema_copy_target (id) {
        id -> Integer,
    }
}

thread_local! {
    static TARGET: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The COPY target diesel is handed: whatever [`with_target`] set.
struct Target;

impl CopyTarget for Target {
    type Table = appschema_copy_target::table;
    type SqlType = diesel::sql_types::Integer;

    fn walk_target(mut pass: AstPass<'_, '_, diesel::pg::Pg>) -> QueryResult<()> {
        TARGET.with(|t| match t.borrow().as_deref() {
            Some(sql) => {
                pass.push_sql(sql);
                Ok(())
            }
            None => Err(diesel::result::Error::QueryBuilderError(
                "appschema: a COPY was built outside `with_target`".into(),
            )),
        })
    }
}

/// Clears the target when the COPY is over, however it ends.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        TARGET.with(|t| t.borrow_mut().take());
    }
}

fn with_target<T>(
    schema: &SchemaName,
    table: &str,
    columns: &[String],
    f: impl FnOnce() -> T,
) -> T {
    let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!(
        "{}.{} ({})",
        schema.quoted(),
        quote_ident(table),
        columns.join(", ")
    );
    TARGET.with(|t| *t.borrow_mut() = Some(sql));
    let _reset = Reset;
    f()
}

/// `COPY schema.table (columns) TO STDOUT` (text format), each chunk of
/// what the server sends handed to `sink` as it arrives; returns the rows.
pub(crate) fn copy_out<E: From<diesel::result::Error>>(
    conn: &mut PgConnection,
    schema: &SchemaName,
    table: &str,
    columns: &[String],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let rows = with_target(schema, table, columns, || {
        let mut out = diesel::copy_to(Target).load_raw(conn)?;
        let mut rows = 0u64;
        loop {
            let chunk = out
                .fill_buf()
                .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))?;
            if chunk.is_empty() {
                break;
            }
            // Text format: one line per row, newlines in values escaped.
            rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            let n = chunk.len();
            sink(chunk)?;
            out.consume(n);
        }
        Ok::<u64, E>(rows)
    })?;
    // diesel 2.3's COPY TO reader stops at the end of the data without
    // reading the COPY's final result, which libpq then refuses to send
    // the next statement over ("another command is already in progress").
    // `batch_execute` goes through `PQexec`, which reads (and discards)
    // it first. Had the COPY failed on the server after some rows, its
    // transaction (every caller runs one) is aborted, so this statement
    // fails and the export with it: a short table is never taken for a
    // whole one.
    conn.batch_execute("SELECT 1")?;
    Ok(rows)
}

/// `COPY schema.table (columns) FROM STDIN` (text format), fed by `source`,
/// which writes everything to the writer it is given; returns the rows the
/// server stored. An error from `source` aborts the COPY (the server
/// discards its rows) and is returned as it was.
pub(crate) fn copy_in<E>(
    conn: &mut PgConnection,
    schema: &SchemaName,
    table: &str,
    columns: &[String],
    source: impl Fn(&mut dyn Write) -> Result<(), E>,
) -> Result<usize, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::prelude::ExecuteCopyFromDsl;
    // diesel ends an aborted COPY with the source's message and returns the
    // server's answer ("COPY from stdin failed: …"): the source's own error
    // is kept aside and returned instead.
    let failure = RefCell::new(None);
    let result = with_target(schema, table, columns, || {
        diesel::copy_from(appschema_copy_target::table)
            .from_raw_data(Target, |sink: &mut dyn Write| {
                source(sink).map_err(|e| {
                    *failure.borrow_mut() = Some(e);
                    diesel::result::Error::QueryBuilderError(
                        "appschema: the export could not be read".into(),
                    )
                })
            })
            .execute(conn)
    });
    match (result, failure.into_inner()) {
        (Err(_), Some(e)) => Err(e),
        (result, _) => result.map_err(E::from),
    }
}
