//! A tenant's domains: the public names it answers to, one of them primary.
//!
//! Every domain is a row of `appschema_public_names` (whose primary key
//! gives a domain to at most one tenant); the primary one is also the
//! tenant's `public_name` in `appschema_tenants`, and a partial unique index
//! keeps it to one per tenant. A tenant always has its primary domain:
//! removing it is refused until another is made primary.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Bool, Text};

use super::error::ProvisionError;
use super::util::{lock_tenant, InvalidateOnReturn};
use crate::name::PublicName;
use crate::registry::Tenant;

/// One of a tenant's domains.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Domain {
    /// The domain (a public name).
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Whether it is the tenant's primary domain.
    #[diesel(sql_type = Bool)]
    pub primary: bool,
}

/// The domains of the tenant answering to `tenant` (any of its domains),
/// primary first, then by name.
///
/// ```no_run
/// # use diesel::Connection;
/// use appschema::provision::list_domains;
/// use appschema::PublicName;
/// let mut conn = diesel::PgConnection::establish("postgres:///app")?;
/// for domain in list_domains(&mut conn, &PublicName::new("acme.example.com")?)? {
///     println!("{}{}", domain.name, if domain.primary { " (primary)" } else { "" });
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn list_domains(
    conn: &mut PgConnection,
    tenant: &PublicName,
) -> Result<Vec<Domain>, ProvisionError> {
    let tenant =
        crate::registry::find(conn, tenant)?.ok_or_else(|| ProvisionError::UnknownTenant {
            public_name: tenant.to_string(),
        })?;
    domains_of(conn, &tenant)
}

fn domains_of(conn: &mut PgConnection, tenant: &Tenant) -> Result<Vec<Domain>, ProvisionError> {
    Ok(diesel::sql_query(
        "SELECT public_name AS name, is_primary AS \"primary\"
           FROM public.appschema_public_names
          WHERE tenant_id = $1 ORDER BY is_primary DESC, public_name",
    )
    .bind::<BigInt, _>(tenant.id)
    .load::<Domain>(conn)?)
}

/// Adds `domain` to the tenant answering to `tenant`, as an alias (make it
/// primary with [`set_primary_domain`]). Refused with
/// [`ProvisionError::DomainTaken`] when any tenant (this one included)
/// already answers to it. Takes effect in this process's resolvers at once,
/// in others within their time to live.
///
/// ```no_run
/// # use diesel::Connection;
/// use appschema::provision::{add_domain, set_primary_domain};
/// use appschema::PublicName;
/// let mut conn = diesel::PgConnection::establish("postgres:///app")?;
/// let (tenant, custom) = (PublicName::new("acme.example.com")?, PublicName::new("shop.acme.com")?);
/// add_domain(&mut conn, &tenant, &custom)?;
/// set_primary_domain(&mut conn, &custom)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn add_domain(
    conn: &mut PgConnection,
    tenant: &PublicName,
    domain: &PublicName,
) -> Result<(), ProvisionError> {
    let _invalidate = InvalidateOnReturn;
    conn.transaction(|conn| {
        let tenant = lock_tenant(conn, tenant)?;
        crate::registry::add_alias(conn, &tenant, domain).map_err(|e| match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                ProvisionError::DomainTaken {
                    domain: domain.to_string(),
                }
            }
            e => ProvisionError::Database(e),
        })
    })
}

/// Removes `domain` from the tenant answering to `tenant`. Refused with
/// [`ProvisionError::PrimaryDomain`] for the primary domain, and with
/// [`ProvisionError::UnknownDomain`] for a domain that is not this tenant's.
pub fn remove_domain(
    conn: &mut PgConnection,
    tenant: &PublicName,
    domain: &PublicName,
) -> Result<(), ProvisionError> {
    let _invalidate = InvalidateOnReturn;
    conn.transaction(|conn| {
        let tenant = lock_tenant(conn, tenant)?;
        let found = domains_of(conn, &tenant)?
            .into_iter()
            .find(|d| d.name == domain.as_str());
        match found {
            None => Err(ProvisionError::UnknownDomain {
                domain: domain.to_string(),
                public_name: tenant.public_name,
            }),
            Some(d) if d.primary => Err(ProvisionError::PrimaryDomain {
                domain: domain.to_string(),
            }),
            Some(_) => {
                diesel::sql_query(
                    "DELETE FROM public.appschema_public_names
                      WHERE public_name = $1 AND tenant_id = $2 AND NOT is_primary",
                )
                .bind::<Text, _>(domain.as_str())
                .bind::<BigInt, _>(tenant.id)
                .execute(conn)?;
                Ok(())
            }
        }
    })
}

/// Makes `domain`, already one of its tenant's domains, that tenant's
/// primary domain (its `public_name` from then on); the old primary stays
/// as an alias. Returns the tenant as it now is.
pub fn set_primary_domain(
    conn: &mut PgConnection,
    domain: &PublicName,
) -> Result<Tenant, ProvisionError> {
    let _invalidate = InvalidateOnReturn;
    conn.transaction(|conn| {
        let tenant = lock_tenant(conn, domain)?;
        if tenant.public_name == domain.as_str() {
            return Ok(tenant);
        }
        // Two statements: the partial unique index (one primary per tenant)
        // is checked row by row, so the old primary goes first.
        diesel::sql_query(
            "UPDATE public.appschema_public_names SET is_primary = false
              WHERE tenant_id = $1 AND is_primary",
        )
        .bind::<BigInt, _>(tenant.id)
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE public.appschema_public_names SET is_primary = true
              WHERE tenant_id = $1 AND public_name = $2",
        )
        .bind::<BigInt, _>(tenant.id)
        .bind::<Text, _>(domain.as_str())
        .execute(conn)?;
        diesel::sql_query("UPDATE public.appschema_tenants SET public_name = $2 WHERE id = $1")
            .bind::<BigInt, _>(tenant.id)
            .bind::<Text, _>(domain.as_str())
            .execute(conn)?;
        Ok(Tenant {
            public_name: domain.to_string(),
            ..tenant
        })
    })
}
