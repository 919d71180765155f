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

use std::sync::Mutex;
use std::time::{Duration, Instant};

use appschema_core::connection::internals::PER_TENANT_TYPES_QUERY;
use appschema_core::connection::SearchPath;
use diesel::sql_types::{Array, Bool, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// How long a "no per-tenant types" finding is trusted before a checkout
/// looks again (a tenant created since, by migrations that declare a type,
/// makes the answer `true`; once `true` it stays so).
const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// User-defined types that name resolution by `search_path` can give a
/// different meaning per tenant: the sync pools' question (appschema-core).
const DETECT: &str = PER_TENANT_TYPES_QUERY;

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Bool)]
    v: bool,
}

/// The pool's setting: forced on or off by the builder, or found out from
/// the database (`None`, the default).
#[derive(Debug)]
pub(crate) struct PerTenantTypes {
    setting: Option<bool>,
    shared: Vec<String>,
    /// With no setting: `Some(true)` for good, or `Some(false)` and when.
    found: Mutex<Option<(bool, Instant)>>,
}

impl PerTenantTypes {
    pub(crate) fn new(setting: Option<bool>, path: &SearchPath) -> PerTenantTypes {
        let shared = path.shared_schemas().map(str::to_string).collect();
        PerTenantTypes {
            setting,
            shared,
            found: Mutex::new(None),
        }
    }

    /// Whether a connection last switched to another path must be kept
    /// from this checkout. Asks the database (on `conn`, before its switch)
    /// when there is no setting and no recent answer; a failed question
    /// answers `true` for this checkout (fail closed) and is asked again.
    pub(crate) async fn apply(&self, conn: &mut AsyncPgConnection) -> bool {
        if let Some(on) = self.setting {
            return on;
        }
        if let Some((found, at)) = *self.found.lock().expect("not poisoned") {
            if found || at.elapsed() < RECHECK_AFTER {
                return found;
            }
        }
        match diesel::sql_query(DETECT)
            .bind::<Array<Text>, _>(&self.shared)
            .get_result::<Found>(conn)
            .await
        {
            Ok(Found { v }) => {
                *self.found.lock().expect("not poisoned") = Some((v, Instant::now()));
                v
            }
            Err(_) => true,
        }
    }
}
