//! Whether an async pool must keep a connection from a tenant other than
//! the one it last served, because its client may hold that tenant's custom
//! type OIDs.
//!
//! diesel-async caches a custom type's OID per connection by name and
//! offers no way to empty that cache (the sync pools empty diesel's on a
//! switch instead, and forget their prepared statements). So where types exist once per tenant schema, a
//! connection that bound tenant A's `mood` would bind tenant B's value as
//! A's type. Such a pool closes a connection last switched to another path
//! (see `PlanWatch::serves`). By default the pool finds out for itself
//! whether the database has such types: a pool whose application never
//! declared one pays nothing, and one that did is sound without a setting
//! to remember.

use appschema_core::connection::internals::PER_TENANT_TYPES_QUERY;
use diesel::sql_types::{Array, Bool, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Bool)]
    v: bool,
}

/// Asks the database on `conn` whether it has per-tenant types
/// ([`PER_TENANT_TYPES_QUERY`] bound to `shared`), when the protocol's
/// `PathChange` step asks; `None` when the question failed (the step then
/// answers `true` for this checkout, fail closed, and asks again next time).
pub(crate) async fn ask(conn: &mut AsyncPgConnection, shared: &[String]) -> Option<bool> {
    diesel::sql_query(PER_TENANT_TYPES_QUERY)
        .bind::<Array<Text>, _>(shared)
        .get_result::<Found>(conn)
        .await
        .ok()
        .map(|found| found.v)
}
