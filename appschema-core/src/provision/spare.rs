//! Spare schemas: tenant schemas built ahead of time under internal names
//! (`appschema_spare_…`, listed in `public.appschema_spares`), claimed by a
//! rename, so sign-up costs the same whatever the schema's size.

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::error::ProvisionError;
use super::migrations::{explain_failure, migrate_new_schema, IsolatedMigrations};
use super::util::{has_version_sql, random_hex, schema_ddl_error, BoolRow, TextRow};
use crate::name::SchemaName;

/// Every spare schema, oldest first. `migrate` uses it to keep spares at the
/// isolated head along with the tenants. Empty when appschema's provisioning
/// tables are not installed.
pub fn spare_schemas(conn: &mut PgConnection) -> QueryResult<Vec<SchemaName>> {
    let installed =
        diesel::sql_query("SELECT to_regclass('public.appschema_spares') IS NOT NULL AS value")
            .get_result::<BoolRow>(conn)?
            .value;
    if !installed {
        return Ok(Vec::new());
    }
    diesel::sql_query(
        "SELECT schema_name AS value FROM public.appschema_spares ORDER BY created_at, schema_name",
    )
    .load::<TextRow>(conn)?
    .into_iter()
    .map(|r| {
        SchemaName::internal(&r.value).map_err(|e| {
            diesel::result::Error::DeserializationError(
                format!("appschema_spares holds an invalid schema name: {e}").into(),
            )
        })
    })
    .collect()
}

/// How many spare schemas are ready.
pub fn count_spares(conn: &mut PgConnection) -> QueryResult<usize> {
    Ok(spare_schemas(conn)?.len())
}

/// Tops the spares up to `count`, each built by the migrations in its own
/// transaction (so a long top-up holds no lock a sign-up needs). Concurrent
/// top-ups serialize and never overshoot. Returns how many were created.
pub fn ensure_spares<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    count: usize,
) -> Result<usize, ProvisionError> {
    let mut created = 0;
    loop {
        let made = conn
            .transaction(|conn| -> Result<bool, ProvisionError> {
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('appschema.spares'))")
                    .execute(conn)?;
                if count_spares(conn)? >= count {
                    return Ok(false);
                }
                let schema = SchemaName::internal(format!("appschema_spare_{}", random_hex()))?;
                migrate_new_schema(conn, migrations, &schema)?;
                diesel::sql_query("INSERT INTO public.appschema_spares (schema_name) VALUES ($1)")
                    .bind::<Text, _>(schema.as_str())
                    .execute(conn)?;
                Ok(true)
            })
            .map_err(|e| explain_failure(conn, migrations, e))?;
        if !made {
            return Ok(created);
        }
        created += 1;
    }
}

/// Takes the oldest free spare's row (one [`TextRow`]: its schema name, an
/// internal name) or none; `SKIP LOCKED`, so concurrent claims take
/// different spares and never wait on each other.
pub const CLAIM_SPARE: &str = "DELETE FROM public.appschema_spares
  WHERE schema_name = (SELECT schema_name FROM public.appschema_spares
                        ORDER BY created_at, schema_name
                        LIMIT 1 FOR UPDATE SKIP LOCKED)
 RETURNING schema_name AS value";

/// The rename that makes spare `spare` the schema `schema` (both quoted).
pub fn rename_spare_sql(spare: &SchemaName, schema: &SchemaName) -> String {
    format!(
        "ALTER SCHEMA {} RENAME TO {}",
        spare.quoted(),
        schema.quoted()
    )
}

/// Claiming a spare as a new tenant's schema, inside the creating
/// transaction, written once for the blocking sign-up (`create_tenant` with
/// [`Source::Spare`](super::Source::Spare)) and the async one
/// (`appschema_async::claim_spare`): which spare (the oldest free one,
/// `SKIP LOCKED`, so concurrent claims take different spares and never wait
/// on each other), the rename, the check that the spare is at the isolated
/// head, and what its failures mean. It sends nothing itself: a driver runs
/// the statement each [`SpareStep`] names and hands the outcome back to
/// [`next`](Self::next), until a final step. Not a stable API.
#[derive(Debug, Clone)]
pub struct SpareClaim {
    schema: SchemaName,
    head: Option<String>,
}

/// What a [`SpareClaim`] asks its driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpareStep {
    /// Run this query (takes the oldest free spare's row, one [`TextRow`],
    /// or none); answer [`SpareAnswer::Taken`] with its value.
    Take(&'static str),
    /// Run this statement (the spare's rename to the tenant's schema);
    /// answer [`SpareAnswer::Renamed`] with its outcome.
    Rename(String),
    /// Run this query with `head` bound as `$1` (text; one [`BoolRow`]);
    /// answer [`SpareAnswer::AtHead`] with its value.
    CheckHead {
        /// The query.
        sql: String,
        /// The isolated head to bind.
        head: String,
    },
    /// Final: the spare is the tenant's schema, at the head.
    Claimed,
    /// Final: no spare is free; nothing changed. Build the schema another
    /// way.
    NoneFree,
    /// Final: the spare taken, now the tenant's schema, is behind the head
    /// (a migration came after it was built). A driver that can run the
    /// application's migrations brings it to the head in the same
    /// transaction (the blocking one, by
    /// [`IsolatedMigrations::migrate_schema`]); one that cannot (the async
    /// one) rolls the transaction back, which gives the spare back under
    /// its own name for `migrate` to bring up to date, and leaves the
    /// tenant to be built another way.
    Behind,
}

/// The outcome of a [`SpareStep`], for [`SpareClaim::next`].
#[derive(Debug)]
pub enum SpareAnswer {
    /// Nothing yet: the claim's first step.
    Start,
    /// [`SpareStep::Take`]'s value: the spare's schema name, `None` when no
    /// row came back.
    Taken(Option<String>),
    /// [`SpareStep::Rename`]'s outcome.
    Renamed(QueryResult<()>),
    /// [`SpareStep::CheckHead`]'s value.
    AtHead(bool),
}

impl SpareClaim {
    /// A claim of a spare as `schema`, to be at `migrations`' isolated head.
    pub fn new<M: IsolatedMigrations + ?Sized>(migrations: &M, schema: &SchemaName) -> SpareClaim {
        SpareClaim {
            schema: schema.clone(),
            head: migrations.head(),
        }
    }

    /// The schema the spare becomes.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The step after `answer` (the outcome of the previous step, or
    /// [`SpareAnswer::Start`]). A spare row holding an invalid name fails
    /// with [`ProvisionError::InvalidName`]; a rename refused because the
    /// schema exists (created meanwhile outside the registry) with
    /// [`ProvisionError::SchemaExists`].
    pub fn next(&self, answer: SpareAnswer) -> Result<SpareStep, ProvisionError> {
        Ok(match answer {
            SpareAnswer::Start => SpareStep::Take(CLAIM_SPARE),
            SpareAnswer::Taken(None) => SpareStep::NoneFree,
            SpareAnswer::Taken(Some(spare)) => {
                let spare = SchemaName::internal(spare)?;
                SpareStep::Rename(rename_spare_sql(&spare, &self.schema))
            }
            SpareAnswer::Renamed(Err(e)) => return Err(schema_ddl_error(e, &self.schema)),
            SpareAnswer::Renamed(Ok(())) => match &self.head {
                Some(head) => SpareStep::CheckHead {
                    sql: has_version_sql(&self.schema),
                    head: head.clone(),
                },
                None => SpareStep::Claimed,
            },
            SpareAnswer::AtHead(true) => SpareStep::Claimed,
            SpareAnswer::AtHead(false) => SpareStep::Behind,
        })
    }
}

/// Claims one spare as `schema`, in the open transaction ([`SpareClaim`]
/// on a blocking connection); `false` when none is free. A spare left
/// behind by a new migration is brought to the head as it is claimed.
pub(crate) fn claim<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    schema: &SchemaName,
) -> Result<bool, ProvisionError> {
    let claim = SpareClaim::new(migrations, schema);
    let mut answer = SpareAnswer::Start;
    loop {
        answer = match claim.next(answer)? {
            SpareStep::Take(sql) => SpareAnswer::Taken(
                diesel::sql_query(sql)
                    .get_result::<TextRow>(conn)
                    .optional()?
                    .map(|row| row.value),
            ),
            SpareStep::Rename(sql) => {
                SpareAnswer::Renamed(crate::citus::execute_script(conn, &sql, false))
            }
            SpareStep::CheckHead { sql, head } => SpareAnswer::AtHead(
                diesel::sql_query(sql)
                    .bind::<Text, _>(head)
                    .get_result::<BoolRow>(conn)?
                    .value,
            ),
            SpareStep::Claimed => return Ok(true),
            SpareStep::NoneFree => return Ok(false),
            SpareStep::Behind => {
                migrations.migrate_schema(conn, schema).map_err(|error| {
                    ProvisionError::Migration {
                        schema: schema.to_string(),
                        error,
                    }
                })?;
                return Ok(true);
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Head(Option<&'static str>);

    impl IsolatedMigrations for Head {
        fn versions(&self) -> Vec<String> {
            self.0.iter().map(|v| v.to_string()).collect()
        }
        fn migrate_schema(
            &self,
            _: &mut PgConnection,
            _: &SchemaName,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            unreachable!("the claim decides; it never migrates")
        }
    }

    fn acme() -> SchemaName {
        SchemaName::new("acme").unwrap()
    }

    #[test]
    fn a_claim_takes_the_oldest_spare_renames_it_and_checks_the_head() {
        let claim = SpareClaim::new(&Head(Some("0002")), &acme());
        assert_eq!(
            claim.next(SpareAnswer::Start).unwrap(),
            SpareStep::Take(CLAIM_SPARE)
        );
        let spare = "appschema_spare_00ff".to_string();
        assert_eq!(
            claim.next(SpareAnswer::Taken(Some(spare))).unwrap(),
            SpareStep::Rename(
                "ALTER SCHEMA \"appschema_spare_00ff\" RENAME TO \"acme\"".to_string()
            )
        );
        assert_eq!(
            claim.next(SpareAnswer::Renamed(Ok(()))).unwrap(),
            SpareStep::CheckHead {
                sql: has_version_sql(&acme()),
                head: "0002".to_string()
            }
        );
        assert_eq!(
            claim.next(SpareAnswer::AtHead(true)).unwrap(),
            SpareStep::Claimed
        );
        assert_eq!(
            claim.next(SpareAnswer::AtHead(false)).unwrap(),
            SpareStep::Behind
        );
    }

    #[test]
    fn without_isolated_migrations_a_renamed_spare_is_claimed_unchecked() {
        let claim = SpareClaim::new(&Head(None), &acme());
        assert_eq!(
            claim.next(SpareAnswer::Renamed(Ok(()))).unwrap(),
            SpareStep::Claimed
        );
    }

    #[test]
    fn no_row_means_no_free_spare_and_bad_rows_or_taken_names_are_errors() {
        let claim = SpareClaim::new(&Head(Some("0001")), &acme());
        assert_eq!(
            claim.next(SpareAnswer::Taken(None)).unwrap(),
            SpareStep::NoneFree
        );
        let e = claim
            .next(SpareAnswer::Taken(Some("bad\"name".to_string())))
            .unwrap_err();
        assert!(matches!(e, ProvisionError::InvalidName(_)), "{e:?}");
        let exists = diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new("schema \"acme\" already exists".to_string()),
        );
        let e = claim.next(SpareAnswer::Renamed(Err(exists))).unwrap_err();
        assert!(
            matches!(&e, ProvisionError::SchemaExists { schema } if schema == "acme"),
            "{e:?}"
        );
    }
}
