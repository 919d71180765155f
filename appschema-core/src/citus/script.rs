//! DDL on a Citus coordinator: new tenant schemas made distributed schemas,
//! and scripts run statement by statement.

use diesel::prelude::*;

use crate::name::SchemaName;

/// SQL to append to a `CREATE SCHEMA` of a tenant schema, in the same
/// message and transaction: on Citus it makes the new (empty) schema a
/// distributed schema, so that every table created in it afterwards is
/// distributed with it; elsewhere it does nothing. A `DO` block, so that
/// the Citus function is only looked up where Citus is installed, and the
/// check costs no round trip of its own. The schema's quoted name goes in
/// as a string literal: a validated, double-quoted identifier holds neither
/// `'` nor `$`.
pub(crate) fn distribute_new_schema_sql(schema: &SchemaName) -> String {
    format!(
        "DO $appschema$ BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension \
         WHERE extname = 'citus') THEN PERFORM citus_schema_distribute('{}'); \
         END IF; END $appschema$;\n",
        schema.quoted()
    )
}

/// `sql`, which starts with `CREATE SCHEMA <schema>;\n` (a template replay,
/// an import), with [`distribute_new_schema_sql`] right after that first
/// statement: the replay for a Citus coordinator.
pub(crate) fn distributing(sql: &str, schema: &SchemaName) -> String {
    sql.replacen(
        ";\n",
        &format!(";\n{}", distribute_new_schema_sql(schema)),
        1,
    )
}

/// Runs `sql` (any number of statements) as one message, or, when
/// `one_by_one` (on Citus), statement by statement: Citus refuses DDL on
/// distributed tables inside a multi-statement message ("cannot insert
/// multiple commands into a prepared statement"). Either way the first
/// error stops it; a transaction the script opened is then left aborted,
/// as with a single message.
pub(crate) fn execute_script(
    conn: &mut PgConnection,
    sql: &str,
    one_by_one: bool,
) -> QueryResult<()> {
    use diesel::connection::SimpleConnection;
    if !one_by_one {
        return conn.batch_execute(sql);
    }
    let statements = crate::sqltok::split_statements(sql).map_err(|e| {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new(format!("cannot split the SQL into statements: {e}")),
        )
    })?;
    for statement in statements {
        conn.batch_execute(statement)?;
    }
    Ok(())
}
