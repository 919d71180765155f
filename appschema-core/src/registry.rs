//! The tenant registry: the shared table `appschema_tenants` (one row per
//! tenant: its primary public name and its schema) and
//! `appschema_public_names` (every name a tenant answers to, the primary one
//! and its aliases; one primary key across both, so no name can belong to two
//! tenants). Users may query both with plain SQL; the names are stable.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::name::{PublicName, SchemaName};

/// appschema's own migrations of the shared schema, in order: `(version, sql)`.
/// Each is idempotent; [`install`] applies the missing ones and records them
/// in `public.appschema_migrations`.
pub const OWN_MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_registry",
        "\
CREATE TABLE IF NOT EXISTS public.appschema_tenants (
    id          bigserial   PRIMARY KEY,
    public_name text        NOT NULL UNIQUE,
    schema_name text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.appschema_public_names (
    public_name text    PRIMARY KEY,
    tenant_id   bigint  NOT NULL REFERENCES public.appschema_tenants (id) ON DELETE CASCADE,
    is_primary  boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS appschema_public_names_tenant ON public.appschema_public_names (tenant_id);",
    ),
    (
        "0002_provision",
        "\
CREATE TABLE IF NOT EXISTS public.appschema_spares (
    schema_name text        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.appschema_templates (
    version    text        PRIMARY KEY,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.appschema_archives (
    schema_name     text        PRIMARY KEY,
    public_name     text        NOT NULL,
    original_schema text        NOT NULL,
    public_names    text[]      NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now()
);",
    ),
    (
        "0003_schema_names",
        "\
CREATE TABLE IF NOT EXISTS public.appschema_schema_names (
    schema_name text        PRIMARY KEY,
    retired_at  timestamptz
);
INSERT INTO public.appschema_schema_names (schema_name)
SELECT schema_name FROM public.appschema_tenants
ON CONFLICT DO NOTHING;
INSERT INTO public.appschema_schema_names (schema_name, retired_at)
SELECT original_schema, archived_at FROM public.appschema_archives
ON CONFLICT DO NOTHING;",
    ),
    (
        "0004_heads",
        "\
CREATE TABLE IF NOT EXISTS public.appschema_heads (
    schema_name  text        PRIMARY KEY,
    tracking_oid oid         NOT NULL,
    digest       text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);
COMMENT ON TABLE public.appschema_heads IS
    'appschema: per schema, the md5 of its __diesel_schema_migrations versions (byte order, comma-joined) and that table''s OID, written with each migration; migrate trusts a row only when both still match';",
    ),
    (
        "0005_one_primary_name",
        "\
CREATE UNIQUE INDEX IF NOT EXISTS appschema_public_names_one_primary
    ON public.appschema_public_names (tenant_id) WHERE is_primary;",
    ),
];

/// The marker of the error [`INSERT_TENANT`] raises for a schema named like
/// a role (the name of a configuration parameter that cannot exist, so
/// `current_setting` of it raises `unrecognized configuration parameter`).
pub(crate) const ROLE_NAMED_SCHEMA: &str = "appschema: schema named like a role";

/// Creates (or completes) appschema's own shared tables, in one transaction.
/// Concurrent callers serialize on an advisory lock.
///
/// ```no_run
/// # use diesel::Connection;
/// let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
/// appschema::registry::install(&mut conn).unwrap();
/// ```
pub fn install(conn: &mut PgConnection) -> QueryResult<()> {
    conn.transaction(|conn| {
        conn.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('appschema.install'));
             CREATE TABLE IF NOT EXISTS public.appschema_migrations (
                 version    text        PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )?;
        let applied: Vec<String> =
            diesel::sql_query("SELECT version AS value FROM public.appschema_migrations")
                .load::<TextRow>(conn)?
                .into_iter()
                .map(|r| r.value)
                .collect();
        for (version, sql) in OWN_MIGRATIONS {
            if applied.iter().any(|v| v == version) {
                continue;
            }
            conn.batch_execute(sql)?;
            diesel::sql_query("INSERT INTO public.appschema_migrations (version) VALUES ($1)")
                .bind::<Text, _>(*version)
                .execute(conn)?;
        }
        Ok(())
    })
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    value: String,
}

/// A registered tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The registry row's id.
    pub id: i64,
    /// The primary public name.
    pub public_name: String,
    /// The tenant's schema.
    pub schema_name: SchemaName,
}

/// A registry row as [`INSERT_TENANT`] (and the look-ups) return it.
#[derive(Debug, QueryableByName)]
pub struct TenantRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    public_name: String,
    #[diesel(sql_type = Text)]
    schema_name: String,
}

impl TenantRow {
    /// Rows were written through validated names; a row that no longer
    /// validates was edited by hand and is reported, never used.
    pub fn into_tenant(self) -> QueryResult<Tenant> {
        let schema_name = SchemaName::new(&self.schema_name)
            .or_else(|_| SchemaName::internal(&self.schema_name))
            .map_err(|e| {
                diesel::result::Error::DeserializationError(
                    format!(
                        "appschema_tenants row {} holds an invalid schema name: {e}",
                        self.id
                    )
                    .into(),
                )
            })?;
        Ok(Tenant {
            id: self.id,
            public_name: self.public_name,
            schema_name,
        })
    }
}

/// The query behind [`find`]: `$1` is the public name (primary or alias);
/// at most one [`TenantRow`].
pub const FIND_TENANT: &str = "\
SELECT t.id, t.public_name, t.schema_name
  FROM public.appschema_public_names n
  JOIN public.appschema_tenants t ON t.id = n.tenant_id
 WHERE n.public_name = $1";

/// The tenant answering to `name` (its primary public name or an alias).
pub fn find(conn: &mut PgConnection, name: &PublicName) -> QueryResult<Option<Tenant>> {
    diesel::sql_query(FIND_TENANT)
        .bind::<Text, _>(name.as_str())
        .get_result::<TenantRow>(conn)
        .optional()?
        .map(TenantRow::into_tenant)
        .transpose()
}

/// Every tenant, by primary public name.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<Tenant>> {
    diesel::sql_query(
        "SELECT id, public_name, schema_name FROM public.appschema_tenants ORDER BY public_name",
    )
    .load::<TenantRow>(conn)?
    .into_iter()
    .map(TenantRow::into_tenant)
    .collect()
}

/// Inserts a tenant's registry rows (the tenant and its primary name). Call it
/// inside the transaction that creates the schema, so both commit or neither.
/// A name or schema already taken fails with a unique violation, and so does
/// a schema name any tenant ever had (`appschema_schema_names`: a dropped,
/// archived or renamed tenant's schema name is never handed to another
/// tenant, so a connection still on it can never reach the newcomer's rows).
/// A schema named like a database role is refused too (a session whose
/// `search_path` falls back to the default `"$user", public` would resolve
/// it).
pub fn insert(
    conn: &mut PgConnection,
    public_name: &PublicName,
    schema: &SchemaName,
) -> QueryResult<Tenant> {
    diesel::sql_query(format!(
        "{INSERT_TENANT} SELECT id, public_name, schema_name FROM tenant"
    ))
    .bind::<Text, _>(public_name.as_str())
    .bind::<Text, _>(schema.as_str())
    .get_result::<TenantRow>(conn)?
    .into_tenant()
}

/// The `WITH` clause of one statement inserting a tenant (`$1`: public name,
/// `$2`: schema) and its primary name, leaving the new row in `tenant`
/// (`id`, `public_name`, `schema_name`) for the statement's `SELECT`. The
/// name row's foreign key is checked at the end of the statement, when the
/// tenant row is there.
///
/// The schema name is recorded in `appschema_schema_names`, whose primary
/// key refuses any name a tenant ever had; a name equal to a role's raises
/// `ROLE_NAMED_SCHEMA`. Both checks come after the tenant row's insert,
/// which waits for a concurrent drop of the same schema name to commit, so
/// they see its retirement.
pub const INSERT_TENANT: &str = "\
WITH tenant AS (
    INSERT INTO public.appschema_tenants (public_name, schema_name) VALUES ($1, $2)
    RETURNING id, public_name, schema_name
), primary_name AS (
    INSERT INTO public.appschema_public_names (public_name, tenant_id, is_primary)
    SELECT public_name, id, true FROM tenant
), schema_name AS (
    INSERT INTO public.appschema_schema_names (schema_name)
    SELECT schema_name FROM tenant
     WHERE CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles r
                              WHERE r.rolname OPERATOR(pg_catalog.=) tenant.schema_name)
                THEN pg_catalog.current_setting(E'appschema: schema named like a role')::bool
                ELSE true END
)";

/// Records that a tenant's schema name is no longer in use and may never be
/// given to another tenant (see [`insert`]).
pub(crate) fn retire_schema_name(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO public.appschema_schema_names (schema_name, retired_at) VALUES ($1, now())
         ON CONFLICT (schema_name) DO UPDATE SET retired_at = now()",
    )
    .bind::<Text, _>(schema.as_str())
    .execute(conn)
    .map(drop)
}

/// Records `new` as a tenant's schema name (a rename): refused like
/// [`insert`] when any tenant ever had that name or a role has it.
pub(crate) fn claim_schema_name(conn: &mut PgConnection, new: &SchemaName) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO public.appschema_schema_names (schema_name)
         SELECT $1 WHERE CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles r
                                            WHERE r.rolname OPERATOR(pg_catalog.=) $1)
                              THEN pg_catalog.current_setting(E'appschema: schema named like a role')::bool
                              ELSE true END",
    )
    .bind::<Text, _>(new.as_str())
    .execute(conn)
    .map(drop)
}

/// Gives a retired schema name back to the tenant that had it (restoring
/// an archive under its old schema: the same tenant's rows, not another's).
pub(crate) fn unretire_schema_name(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> QueryResult<()> {
    diesel::sql_query(
        "DELETE FROM public.appschema_schema_names WHERE schema_name = $1 AND retired_at IS NOT NULL",
    )
    .bind::<Text, _>(schema.as_str())
    .execute(conn)
    .map(drop)
}

/// Adds an alias: another public name the tenant answers to.
pub fn add_alias(conn: &mut PgConnection, tenant: &Tenant, alias: &PublicName) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO public.appschema_public_names (public_name, tenant_id, is_primary) VALUES ($1, $2, false)",
    )
    .bind::<Text, _>(alias.as_str())
    .bind::<BigInt, _>(tenant.id)
    .execute(conn)
    .map(drop)
}
