//! The tenant registry: the shared table `appschema_tenants` mapping each
//! tenant's public name to its schema.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The registry's DDL. Idempotent, so running it on a database that already
/// has the registry changes nothing.
pub const REGISTRY_DDL: &str = "\
CREATE TABLE IF NOT EXISTS public.appschema_tenants (
    id          bigserial   PRIMARY KEY,
    public_name text        NOT NULL UNIQUE,
    schema_name text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);";

/// Creates the registry table if it does not exist yet, in one transaction.
///
/// ```no_run
/// # use diesel::Connection;
/// let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
/// appschema_core::registry::install(&mut conn).unwrap();
/// ```
pub fn install(conn: &mut PgConnection) -> diesel::QueryResult<()> {
    conn.transaction(|conn| conn.batch_execute(REGISTRY_DDL))
}
