//! The registry look-up behind `get_for_public_name`, written once for the
//! sync and the async pools: they differ only in how they run its query.

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::error::ConnectionError;
use crate::name::PublicName;
use crate::registry::{Tenant, TenantRow, FIND_TENANT};

/// One look-up of a tenant by public name (a host name or alias): the name
/// checked, the query to run, and what its answer means. The sync
/// `SharedPool::get_for_public_name` runs the query on a blocking
/// connection, the async one on an `AsyncPgConnection`; the errors are this
/// type's. Not a stable API.
#[derive(Debug, Clone)]
pub struct PublicNameLookup {
    name: PublicName,
}

impl PublicNameLookup {
    /// The query: `$1` is [`name`](Self::name) (as text); it returns at
    /// most one [`TenantRow`].
    pub const SQL: &'static str = FIND_TENANT;

    /// A look-up of `public_name`, refused with
    /// [`ConnectionError::InvalidName`] when it is no valid public name
    /// (nothing is sent then).
    pub fn new(public_name: &str) -> Result<PublicNameLookup, ConnectionError> {
        let name = PublicName::new(public_name)
            .map_err(|e| ConnectionError::invalid_name(public_name, e))?;
        Ok(PublicNameLookup { name })
    }

    /// The normalized public name, to bind as `$1`.
    pub fn name(&self) -> &PublicName {
        &self.name
    }

    /// What the query's answer means: the tenant, or
    /// [`ConnectionError::UnknownTenant`] for a name the registry does not
    /// hold, or [`ConnectionError::Query`] naming the tenant when the query
    /// failed (or its row holds an invalid schema name).
    pub fn answer(&self, row: QueryResult<Option<TenantRow>>) -> Result<Tenant, ConnectionError> {
        let failed = |error| ConnectionError::Query {
            target: format!("tenant `{}`", self.name),
            error,
        };
        match row.map_err(failed)? {
            Some(row) => row.into_tenant().map_err(failed),
            None => Err(ConnectionError::UnknownTenant {
                public_name: self.name.to_string(),
            }),
        }
    }

    /// The look-up on a blocking connection (the sync pools' driver).
    pub(crate) fn run(&self, conn: &mut PgConnection) -> Result<Tenant, ConnectionError> {
        self.answer(
            diesel::sql_query(Self::SQL)
                .bind::<Text, _>(self.name.as_str())
                .get_result::<TenantRow>(conn)
                .optional(),
        )
    }
}
