//! Per-tenant pools: a customizer that puts each new connection on one
//! tenant's `search_path`.

use diesel::r2d2::{CustomizeConnection, Error as R2d2Error};
use diesel::PgConnection;

use super::search_path::{run_switch, Refusal, SearchPath};
use crate::name::SchemaName;

/// An [`r2d2::CustomizeConnection`] that puts every connection a pool opens
/// on one tenant's `search_path` (`"<tenant>", "<shared>", <extra>…`),
/// checking the value the server reports and that the tenant's schema exists.
///
/// **r2d2 calls `on_acquire` only when it opens a new physical connection,
/// never on checkout.** A pool built with this customizer therefore serves
/// exactly one tenant, and anything user code does to `search_path` during a
/// checkout (`SET search_path`, `RESET ALL`, `DISCARD ALL`) stays on that
/// connection for later checkouts of the same pool. When user code may touch
/// session state, or when there are many tenants, use
/// [`SharedPool`](super::SharedPool), which sets the path on every checkout
/// at no extra cost.
///
/// ```no_run
/// use appschema::{SchemaName, connection::{SearchPath, TenantCustomizer}};
/// use diesel::r2d2::{ConnectionManager, Pool};
/// use diesel::PgConnection;
///
/// let acme = SchemaName::new("acme").unwrap();
/// let pool = Pool::builder()
///     .connection_customizer(Box::new(TenantCustomizer::new(acme, SearchPath::new())))
///     .build(ConnectionManager::<PgConnection>::new("postgres:///app"))
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct TenantCustomizer {
    tenant: SchemaName,
    path: String,
}

impl TenantCustomizer {
    /// A customizer for `tenant`'s pool, using `path` for the schemas after it.
    pub fn new(tenant: SchemaName, path: SearchPath) -> TenantCustomizer {
        let path = path.for_tenant(&tenant);
        TenantCustomizer { tenant, path }
    }

    /// The tenant this customizer's pool serves.
    pub fn tenant(&self) -> &SchemaName {
        &self.tenant
    }
}

impl CustomizeConnection<PgConnection, R2d2Error> for TenantCustomizer {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), R2d2Error> {
        let report = run_switch(conn, &self.path, false).map_err(R2d2Error::QueryError)?;
        report
            .check(&self.path, self.tenant.as_str())
            .map_err(|refusal| {
                let message = match refusal {
                    Refusal::SchemaMissing => format!(
                        "tenant schema `{}` does not exist: provision the tenant before connecting to it",
                        self.tenant
                    ),
                    Refusal::Broken(m) => {
                        format!("search_path switch for tenant schema `{}` failed: {m}", self.tenant)
                    }
                    Refusal::Dirty => format!(
                        "search_path switch for tenant schema `{}` found the session dirty",
                        self.tenant
                    ),
                    Refusal::Failed(e) => {
                        format!("search_path switch for tenant schema `{}` failed: {e}", self.tenant)
                    }
                };
                R2d2Error::QueryError(diesel::result::Error::QueryBuilderError(message.into()))
            })
    }
}
