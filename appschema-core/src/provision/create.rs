//! Creating a tenant: registry row, schema and isolated migrations in one
//! transaction.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text};

use super::error::{ProvisionError, TemplateError};
use super::hooks::{HookStage, Hooks};
use super::migrations::{explain_failure, migrate_new_schema, IsolatedMigrations};
use super::spare;
use super::template::{self, Template};
use super::util::{registry_conflict, InvalidateOnReturn};
use crate::name::{PublicName, SchemaName, MAX_IDENTIFIER_BYTES, RESERVED_PREFIX};
use crate::observe;
use crate::registry::{self, Tenant};

/// How a new tenant's schema is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Source {
    /// Run every isolated migration in the new schema (the default): always
    /// possible, cost grows with the migrations.
    #[default]
    Migrations,
    /// Replay the stored schema template (see [`super::store_template`]);
    /// refused when it is missing or not at the isolated head.
    Template,
    /// Claim a spare schema (see [`super::ensure_spares`]); when none is left,
    /// replay the stored template if it is current and replays, else run the
    /// migrations.
    Spare,
}

impl Source {
    /// The name used by the CLI: `migrations`, `template` or `spare`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Migrations => "migrations",
            Source::Template => "template",
            Source::Spare => "spare",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Source, String> {
        match s {
            "migrations" => Ok(Source::Migrations),
            "template" => Ok(Source::Template),
            "spare" => Ok(Source::Spare),
            _ => Err(format!(
                "unknown source `{s}`: use migrations, template or spare"
            )),
        }
    }
}

/// A request to create a tenant, validated on construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    public_name: PublicName,
    schema: Option<SchemaName>,
    source: Source,
    hooks: Hooks,
}

impl NewTenant {
    /// A tenant answering to `public_name`, with a schema name derived from it
    /// (see [`derive_schema_name`]), built by migrations.
    pub fn new(public_name: &str) -> Result<NewTenant, ProvisionError> {
        Ok(NewTenant {
            public_name: PublicName::new(public_name)?,
            schema: None,
            source: Source::default(),
            hooks: Hooks::default(),
        })
    }

    /// Uses schema `schema` instead of a derived one; it must not exist yet.
    pub fn schema(self, schema: &str) -> Result<NewTenant, ProvisionError> {
        Ok(self.with_schema(SchemaName::new(schema)?))
    }

    /// Like [`NewTenant::schema`], with an already validated name.
    pub fn with_schema(mut self, schema: SchemaName) -> NewTenant {
        self.schema = Some(schema);
        self
    }

    /// How to build the schema (default: [`Source::Migrations`]).
    pub fn source(mut self, source: Source) -> NewTenant {
        self.source = source;
        self
    }

    /// Runs `hooks`' [`TenantHook::after_create`](super::TenantHook::after_create)
    /// in the creating transaction, whatever builds the schema (default:
    /// none). Used by [`create_tenant`], [`create_tenant_from_template`] and
    /// [`super::clone_tenant`] (after the data is copied).
    pub fn hooks(mut self, hooks: Hooks) -> NewTenant {
        self.hooks = hooks;
        self
    }

    /// The hooks to run on creation.
    pub fn hooks_ref(&self) -> &Hooks {
        &self.hooks
    }

    /// The public name.
    pub fn public_name(&self) -> &PublicName {
        &self.public_name
    }

    /// How the schema is to be built.
    pub fn source_kind(&self) -> Source {
        self.source
    }

    /// The schema asked for, if any.
    pub fn schema_name(&self) -> Option<&SchemaName> {
        self.schema.as_ref()
    }
}

/// A created tenant and how its schema was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The registry row.
    pub tenant: Tenant,
    /// How the schema was built (a spare request may fall back).
    pub source: Source,
}

/// How many suffixed variants of a derived schema name are tried.
pub const MAX_DERIVED_ATTEMPTS: usize = 50;

/// A schema name for `public_name`: lower case, every character outside
/// `[a-z0-9_]` turned into `_`, prefixed with `t_` when it would start with a
/// digit or a reserved prefix, cut to fit 63 bytes.
///
/// ```
/// use appschema::{provision::derive_schema_name, PublicName};
/// let name = derive_schema_name(&PublicName::new("Acme.example.com").unwrap());
/// assert_eq!(name.as_str(), "acme_example_com");
/// let name = derive_schema_name(&PublicName::new("pg-1.example").unwrap());
/// assert_eq!(name.as_str(), "t_pg_1_example");
/// ```
pub fn derive_schema_name(public_name: &PublicName) -> SchemaName {
    derived_candidate(public_name, 0)
}

/// The derived schema name of try `attempt` (0: [`derive_schema_name`]'s;
/// then suffixed `_2`, `_3`, …).
#[doc(hidden)]
pub fn derived_candidate(public_name: &PublicName, attempt: usize) -> SchemaName {
    let mut base: String = public_name
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let reserved = base.starts_with("pg_")
        || base.starts_with(RESERVED_PREFIX)
        || base == "public"
        || base == "information_schema"
        || base.starts_with(|c: char| c.is_ascii_digit());
    if reserved {
        base.insert_str(0, "t_");
    }
    let suffix = if attempt == 0 {
        String::new()
    } else {
        format!("_{}", attempt + 1)
    };
    base.truncate(MAX_IDENTIFIER_BYTES - suffix.len());
    base.push_str(&suffix);
    SchemaName::new(base).expect("derived schema names are valid by construction")
}

/// Whether a creation under a derived schema name ([`derived_candidate`])
/// that failed with `e` is tried again under the next one: the name is
/// taken, was ever another tenant's, or is a role's. The sync and async
/// sign-ups both ask this. Not a stable API.
#[doc(hidden)]
pub fn tries_next_name(e: &ProvisionError) -> bool {
    matches!(
        e,
        ProvisionError::SchemaExists { .. }
            | ProvisionError::SchemaRetired { .. }
            | ProvisionError::SchemaNamedLikeRole { .. }
    )
}

/// Creates a tenant in one transaction: its registry rows, its schema and the
/// isolated migrations (by the request's [`Source`]). On any error nothing
/// of it remains. Safe to call from a request handler: concurrent calls for
/// the same public name or schema yield one tenant and
/// [`ProvisionError::TenantExists`] / [`ProvisionError::SchemaExists`] for
/// the others. A derived schema name that is taken, was ever another
/// tenant's, or is a role's name is retried with a suffix (`acme_2`,
/// `acme_3`, …).
///
/// Called inside an open transaction, the work happens in a savepoint and
/// commits with the caller's transaction.
pub fn create_tenant<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    request: &NewTenant,
) -> Result<Created, ProvisionError> {
    observe::provision(request, None, || {
        create_with(conn, migrations, request, None)
    })
}

/// Like [`create_tenant`], replaying `template` (read from a file, say)
/// instead of building the schema by the request's source. A template whose
/// stamp is not the isolated head is refused with [`TemplateError::Stale`].
pub fn create_tenant_from_template<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    request: &NewTenant,
    template: &Template,
) -> Result<Created, ProvisionError> {
    let head = migrations.head().ok_or(TemplateError::NoMigrations)?;
    template::check_current(template, &head)?;
    observe::provision(request, Some(Source::Template), || {
        create_with(conn, migrations, request, Some(template))
    })
}

fn create_with<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    request: &NewTenant,
    template: Option<&Template>,
) -> Result<Created, ProvisionError> {
    // A new tenant must stop being a cached "unknown host" at once.
    // Resolvers of this process forget cached answers once the change has
    // committed (or failed): see `InvalidateOnReturn`.
    let _invalidate = InvalidateOnReturn;
    let attempt = |conn: &mut PgConnection, schema: &SchemaName| {
        conn.transaction(|conn| {
            let created = match template {
                Some(template) => {
                    let tenant = insert_registry_rows(conn, &request.public_name, schema)?;
                    template.replay(conn, schema)?;
                    Created {
                        tenant,
                        source: Source::Template,
                    }
                }
                None => create_in(
                    conn,
                    migrations,
                    &request.public_name,
                    schema,
                    request.source,
                )?,
            };
            request
                .hooks
                .run(conn, &created.tenant, HookStage::AfterCreate)?;
            Ok(created)
        })
    };
    let attempt = |conn: &mut PgConnection, schema: &SchemaName| {
        attempt(conn, schema).map_err(|e| explain_failure(conn, migrations, e))
    };
    if let Some(schema) = &request.schema {
        return attempt(conn, schema);
    }
    // No "is it free?" query first: the registry's unique index and
    // `CREATE SCHEMA` itself refuse a taken name (as `SchemaExists`), and the
    // transaction leaves nothing behind.
    for n in 0..MAX_DERIVED_ATTEMPTS {
        let schema = derived_candidate(&request.public_name, n);
        match attempt(conn, &schema) {
            Err(e) if tries_next_name(&e) => continue,
            other => return other,
        }
    }
    Err(ProvisionError::NoFreeSchemaName {
        public_name: request.public_name.to_string(),
    })
}

/// The body of [`create_tenant`], inside the caller's transaction.
pub(crate) fn create_in<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    public_name: &PublicName,
    schema: &SchemaName,
    source: Source,
) -> Result<Created, ProvisionError> {
    if source == Source::Template {
        let head = migrations.head().ok_or(TemplateError::NoMigrations)?;
        let (tenant, template, citus) =
            insert_registry_rows_and_load_template(conn, public_name, schema, &head)?;
        template.replay_on(conn, schema, citus)?;
        return Ok(Created {
            tenant,
            source: Source::Template,
        });
    }
    let tenant = insert_registry_rows(conn, public_name, schema)?;
    let used = build_schema(conn, migrations, schema, source)?;
    Ok(Created {
        tenant,
        source: used,
    })
}

/// Inserts the registry rows. The insert comes first: its unique indexes are
/// where concurrent creations of the same name or schema queue up and lose.
/// A schema that exists outside the registry is refused by the `CREATE
/// SCHEMA` (or `ALTER SCHEMA … RENAME`) that follows, as
/// [`ProvisionError::SchemaExists`].
pub(crate) fn insert_registry_rows(
    conn: &mut PgConnection,
    public_name: &PublicName,
    schema: &SchemaName,
) -> Result<Tenant, ProvisionError> {
    registry::insert(conn, public_name, schema)
        .map_err(|e| registry_conflict(e, public_name.as_str(), schema.as_str()))
}

#[derive(QueryableByName)]
struct InsertedWithTemplate {
    #[diesel(embed)]
    tenant: registry::TenantRow,
    #[diesel(sql_type = Nullable<Text>)]
    digest: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    body: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    citus: bool,
}

/// [`insert_registry_rows`] and the stored template for `head`, in one
/// statement: the template's body comes along only when this process has not
/// cached that very body (same version, same md5) already; and whether the
/// database is on Citus (the replay then goes statement by statement).
fn insert_registry_rows_and_load_template(
    conn: &mut PgConnection,
    public_name: &PublicName,
    schema: &SchemaName,
    head: &str,
) -> Result<(Tenant, Arc<Template>, bool), ProvisionError> {
    let row = diesel::sql_query(format!(
        "{} SELECT tenant.id, tenant.public_name, tenant.schema_name, stored.digest, stored.body,
                EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') AS citus
           FROM tenant LEFT JOIN ({}) stored ON true",
        registry::INSERT_TENANT,
        template::stored_template_sql(3, 4),
    ))
    .bind::<Text, _>(public_name.as_str())
    .bind::<Text, _>(schema.as_str())
    .bind::<Text, _>(head)
    .bind::<Array<Text>, _>(template::cached_digests(head))
    .get_result::<InsertedWithTemplate>(conn)
    .map_err(|e| registry_conflict(e, public_name.as_str(), schema.as_str()))?;
    let tenant = row.tenant.into_tenant()?;
    let Some(digest) = row.digest else {
        return Err(template::stale_or_missing(conn, head));
    };
    let template = template::resolve_stored(conn, head, &digest, row.body)?;
    Ok((tenant, template, row.citus))
}

/// Creates `schema` at the isolated head by `source`, in the open transaction.
pub(crate) fn build_schema<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    schema: &SchemaName,
    source: Source,
) -> Result<Source, ProvisionError> {
    match source {
        Source::Migrations => {
            migrate_new_schema(conn, migrations, schema)?;
            Ok(Source::Migrations)
        }
        Source::Template => {
            let head = migrations.head().ok_or(TemplateError::NoMigrations)?;
            match template::load_current(conn, &head)? {
                Some(template) => template.replay(conn, schema)?,
                None => return Err(template::stale_or_missing(conn, &head)),
            }
            Ok(Source::Template)
        }
        Source::Spare => {
            if spare::claim(conn, migrations, schema)? {
                return Ok(Source::Spare);
            }
            if let Some(head) = migrations.head() {
                if let Some(template) = template::load_current(conn, &head)? {
                    // In a savepoint: a template that does not replay here
                    // (one stored by an older appschema, say) leaves the way
                    // to the migrations open instead of failing the sign-up.
                    match conn.transaction(|conn| template.replay(conn, schema)) {
                        Ok(()) => return Ok(Source::Template),
                        Err(e @ ProvisionError::SchemaExists { .. }) => return Err(e),
                        Err(_) => {}
                    }
                }
            }
            migrate_new_schema(conn, migrations, schema)?;
            Ok(Source::Migrations)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_valid_and_fit() {
        let long = format!("{}.example.com", "a".repeat(240));
        let p = PublicName::new(&long).unwrap();
        for attempt in 0..MAX_DERIVED_ATTEMPTS {
            let s = derived_candidate(&p, attempt);
            assert!(s.as_str().len() <= 63);
        }
        assert_eq!(derived_candidate(&p, 9).as_str().len(), 63);
        assert!(derived_candidate(&p, 9).as_str().ends_with("_10"));
        let p = PublicName::new("appschema_x.com").unwrap();
        assert_eq!(derive_schema_name(&p).as_str(), "t_appschema_x_com");
        let p = PublicName::new("public").unwrap();
        assert_eq!(derive_schema_name(&p).as_str(), "t_public");
        let p = PublicName::new("9lives.io").unwrap();
        assert_eq!(derive_schema_name(&p).as_str(), "t_9lives_io");
    }
}
