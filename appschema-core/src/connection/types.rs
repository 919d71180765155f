//! Whether the database has custom types that exist once per tenant schema,
//! and what a sync pool then does on a change of tenant: forget the
//! connection's prepared statements.
//!
//! A statement diesel prepared for one tenant keeps its result type: a
//! query returning a per-tenant enum (`SELECT m FROM moods`, one `mood` per
//! schema, each with its own OID), run again on the same connection for
//! another tenant, has another result type, and PostgreSQL refuses it with
//! `cached plan must not change result type`. It would on *every* change
//! of tenant, not once per connection: every tenant's `mood` differs. So
//! where such types exist, a sync pool whose checkout (or unit) is for
//! another path than the connection's last one empties diesel's statement
//! cache and deallocates diesel's statements on the server
//! ([`forget_prepared_statements`]); the statements are prepared again for
//! the new tenant. The pool finds out itself whether such types exist (as
//! the async pools do), or is told (`per_tenant_types`). The decision is
//! the protocol's `PathChange` step; this module holds the state and SQL.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::{CacheSize, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use super::SearchPath;

/// How long a "no per-tenant types" finding is trusted before a checkout
/// looks again (a tenant created since, by migrations that declare a type,
/// makes the answer `true`; once `true` it stays so).
const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// User-defined types that name resolution by `search_path` can give a
/// different meaning per tenant: enums, domains, ranges, multiranges and
/// standalone composite types (not a table's row type), in a schema other
/// than the shared ones (bound as `$1`, a `text[]`) and PostgreSQL's own,
/// not created by an extension. One row, one `bool` column `v`.
pub const PER_TENANT_TYPES_QUERY: &str = "SELECT EXISTS (\
     SELECT 1 FROM pg_catalog.pg_type t \
     JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid \
     WHERE (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND c.relkind = 'c')) \
       AND n.nspname <> ALL ($1) \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                       WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass \
                         AND d.objid = t.oid AND d.deptype = 'e')) AS v";

/// Deallocates, on the server, every statement diesel prepared on the
/// session (diesel names them `__diesel_stmt_<n>`), and only those: the
/// pool's own prepared switch stays. Protocol-level statements are listed
/// in `pg_prepared_statements` and dropped by `DEALLOCATE` like SQL ones.
const DEALLOCATE_DIESELS: &str = "DO $appschema$ DECLARE s text; BEGIN \
     FOR s IN SELECT name FROM pg_catalog.pg_prepared_statements \
              WHERE name LIKE E'\\\\_\\\\_diesel\\\\_stmt\\\\_%' LOOP \
       EXECUTE 'DEALLOCATE ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(s); \
     END LOOP; END $appschema$";

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Bool)]
    v: bool,
}

/// Whether the database has per-tenant types, as a pool knows it: forced
/// on or off by the builder, or found out from the database (`None`) and
/// asked again after five seconds while the answer is "no". The state
/// and the rule only: the protocol's `PathChange` step decides with it
/// ([`PerTenantTypes::known`], [`PerTenantTypes::answered`]) and the sync
/// and async drivers ask the database when it says so.
#[derive(Debug)]
pub struct PerTenantTypes {
    setting: Option<bool>,
    shared: Vec<String>,
    /// With no setting: `Some(true)` for good, or `Some(false)` and when.
    found: Mutex<Option<(bool, Instant)>>,
}

impl PerTenantTypes {
    /// The pool's `setting` (`None`: find out) for `path`'s shared schemas.
    pub fn new(setting: Option<bool>, path: &SearchPath) -> PerTenantTypes {
        PerTenantTypes {
            setting,
            shared: path.shared_schemas().map(str::to_string).collect(),
            found: Mutex::new(None),
        }
    }

    /// The answer without asking: the setting, a "yes" found, or a "no"
    /// found less than five seconds ago. `None`: ask the database
    /// ([`PER_TENANT_TYPES_QUERY`] bound to [`PerTenantTypes::shared`]) and
    /// report with [`PerTenantTypes::answered`].
    pub fn known(&self) -> Option<bool> {
        if self.setting.is_some() {
            return self.setting;
        }
        match *self.found.lock().expect("not poisoned") {
            Some((found, at)) if found || at.elapsed() < RECHECK_AFTER => Some(found),
            _ => None,
        }
    }

    /// The shared schemas the question is asked about (its `$1`).
    pub fn shared(&self) -> &[String] {
        &self.shared
    }

    /// Records the database's answer and returns what the pool must act
    /// on: a failed question (`None`) answers `true` (fail closed) and is
    /// not remembered, so it is asked again next time.
    pub fn answered(&self, answer: Option<bool>) -> bool {
        match answer {
            Some(v) => {
                *self.found.lock().expect("not poisoned") = Some((v, Instant::now()));
                v
            }
            None => true,
        }
    }
}

/// Empties diesel's prepared-statement cache on `conn` (client side; the
/// cache stays on) and deallocates diesel's statements on the server, in
/// that order: diesel never believes in a statement the server dropped,
/// and its statement names keep counting up, so a statement prepared next
/// never collides with one the server still holds.
pub(crate) fn forget_prepared_statements(conn: &mut PgConnection) -> QueryResult<()> {
    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    conn.set_prepared_statement_cache_size(CacheSize::Unbounded);
    conn.batch_execute(DEALLOCATE_DIESELS)
}

/// Asks the database on `conn` whether it has per-tenant types
/// ([`PER_TENANT_TYPES_QUERY`] bound to `shared`); `None` when the
/// question failed (see [`PerTenantTypes::answered`]).
pub(crate) fn ask_per_tenant_types(conn: &mut PgConnection, shared: &[String]) -> Option<bool> {
    diesel::sql_query(PER_TENANT_TYPES_QUERY)
        .bind::<Array<Text>, _>(shared)
        .get_result::<Found>(conn)
        .ok()
        .map(|found| found.v)
}
