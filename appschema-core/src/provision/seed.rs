//! Seed rows: the rows the isolated migrations insert, which every tenant
//! holds however it was built (migrations, template, spare).
//!
//! A template does not carry them in its text. The schema it was generated
//! from is kept, read-only by convention, as the template's **seed schema**
//! (`appschema_seed_…`, named in the template's `-- seed:` header line), and
//! the template's replay copies each seeded table from it server-side
//! (`INSERT INTO tenant.t (cols) OVERRIDING SYSTEM VALUE SELECT cols FROM
//! ONLY seed.t`), inside the creating transaction. The rows never pass
//! through a client: not the one generating the template (pg_dump writes the
//! DDL only), not the ones replaying it, not the template cache. A template
//! with 200 000 seed rows is as small as one with none.
//!
//! Why copy from a kept schema rather than, say, stream pg_dump's `COPY`
//! data through the client at each replay: the rows would still cross the
//! network twice per tenant, need the dump binary at sign-up, and could not
//! ride in the template's single batch. A server-side copy costs one
//! statement per seeded table.
//!
//! The copy keeps pg_dump's semantics, so a tenant holds the same rows it
//! held when the rows rode in the template: the DDL is split into pg_dump's
//! pre-data section (tables, sequences, functions, types, `CHECK` and `NOT
//! NULL`) and its post-data section (indexes, constraints, foreign keys,
//! triggers, rules, policies, the `REFRESH` of materialized views); the rows
//! are copied in between, so neither foreign keys nor the application's
//! triggers see them arrive, in any table order; generated columns are
//! left to be computed, identity columns take the seed's values
//! (`OVERRIDING SYSTEM VALUE`); then every sequence is set to the seed's
//! value (`setval`, as pg_dump's data section does: those are two numbers,
//! so they ride in the text). `ONLY`: an inheritance child's rows are copied
//! into the child alone; partitions are copied leaf by leaf.
//!
//! A seed schema lives while the stored template names it:
//! [`super::store_template`] drops those the stored templates named before
//! (a replaced template's, an older version's). A template whose seed schema
//! is missing (dropped, or the template was generated in another database)
//! is refused with [`TemplateError::SeedMissing`] naming the fix, never
//! replayed without its rows. The seed schema has no tracking table, no
//! registry row and is on no tenant's path: `status`, `migrate`, the across
//! tenants helpers and export see only registered tenants and spares. On
//! Citus it is a distributed schema of its own, like a spare, so it is never
//! colocated with a tenant; the copy crosses nodes as Citus's
//! `INSERT … SELECT` does.

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Bool, Nullable, Text};

use super::error::{ProvisionError, TemplateError};
use super::template::TEMPLATE_PLACEHOLDER;
use super::util::{random_hex, TextRow};
use crate::name::{quote_ident, quote_literal, SchemaName};

/// The prefix of seed schemas' names.
pub(crate) const SEED_PREFIX: &str = "appschema_seed_";

/// A fresh seed schema's name.
pub(crate) fn new_seed_name() -> Result<SchemaName, ProvisionError> {
    Ok(SchemaName::internal(format!(
        "{SEED_PREFIX}{}",
        random_hex()
    ))?)
}

/// The message of the error the replay's guard raises when `seed` is missing.
fn missing_message(seed: &SchemaName) -> String {
    format!("appschema seed schema {} is missing", seed.as_str())
}

/// The statement a replay starts with when its template has a seed schema:
/// it fails, before anything else runs, when the seed schema is missing. The
/// name is a validated internal name (`[a-z0-9_]`), safe in a literal.
pub(crate) fn guard_sql(seed: &SchemaName) -> String {
    format!(
        "DO $appschema$ BEGIN IF pg_catalog.to_regnamespace('{name}') IS NULL THEN \
         RAISE EXCEPTION '{message}' USING ERRCODE = 'undefined_object'; END IF; \
         END $appschema$;\n",
        name = seed.as_str(),
        message = missing_message(seed),
    )
}

/// `error` as [`TemplateError::SeedMissing`] when it is the guard's.
pub(crate) fn explain_missing(
    error: ProvisionError,
    version: &str,
    seed: &SchemaName,
) -> ProvisionError {
    match &error {
        ProvisionError::Database(DieselError::DatabaseError(_, info))
            if info.message() == missing_message(seed) =>
        {
            TemplateError::SeedMissing {
                version: version.to_string(),
                seed: seed.to_string(),
            }
            .into()
        }
        _ => error,
    }
}

#[derive(QueryableByName)]
struct SeededTable {
    #[diesel(sql_type = Text)]
    name: String,
    /// The quoted names of the columns a copy writes; null when none.
    #[diesel(sql_type = Nullable<Text>)]
    columns: Option<String>,
}

#[derive(QueryableByName)]
struct SequenceState {
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = Bool)]
    is_called: bool,
}

/// What the template replays between the pre-data and post-data DDL, for
/// seed schema `seed` (freshly migrated, its tracking table still there):
/// one copy per table holding rows, then a `setval` per sequence. Written
/// with [`TEMPLATE_PLACEHOLDER`] for the tenant's schema. The second value
/// is whether any table holds rows (else the seed schema is not needed).
pub(crate) fn seed_sql(
    conn: &mut PgConnection,
    seed: &SchemaName,
) -> Result<(String, bool), ProvisionError> {
    let tables = diesel::sql_query(
        "SELECT c.relname::text AS name,
                string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) AS columns
           FROM pg_catalog.pg_class c
           LEFT JOIN pg_catalog.pg_attribute a
             ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            AND a.attgenerated = ''
          WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
            AND c.relkind = 'r' AND c.relname <> '__diesel_schema_migrations'
          GROUP BY c.oid, c.relname
          ORDER BY c.relname",
    )
    .bind::<Text, _>(seed.as_str())
    .load::<SeededTable>(conn)?;
    let target = |name: &str| format!("{TEMPLATE_PLACEHOLDER}.{}", quote_ident(name));
    let mut sql = String::new();
    for table in tables {
        let source = format!("{}.{}", seed.quoted(), quote_ident(&table.name));
        let has_rows = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT FROM ONLY {source}) AS value"
        ))
        .get_result::<super::util::BoolRow>(conn)?
        .value;
        if !has_rows {
            continue;
        }
        // A table with no column (or only generated ones) still holds
        // rows: they are copied as rows of defaults, as pg_dump's are.
        let (list, columns) = match table.columns {
            Some(columns) => (format!(" ({columns})"), columns),
            None => (String::new(), String::new()),
        };
        sql.push_str(&format!(
            "INSERT INTO {}{list} OVERRIDING SYSTEM VALUE SELECT {columns} FROM ONLY {source};\n",
            target(&table.name)
        ));
    }
    let has_rows = !sql.is_empty();
    let sequences = diesel::sql_query(
        "SELECT c.relname::text AS value FROM pg_catalog.pg_class c
          WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
            AND c.relkind = 'S'
          ORDER BY c.relname",
    )
    .bind::<Text, _>(seed.as_str())
    .load::<TextRow>(conn)?;
    for sequence in sequences {
        let state = diesel::sql_query(format!(
            "SELECT last_value::text AS value, is_called FROM {}.{}",
            seed.quoted(),
            quote_ident(&sequence.value)
        ))
        .get_result::<SequenceState>(conn)?;
        let name = quote_literal(&target(&sequence.value));
        sql.push_str(&format!(
            "SELECT pg_catalog.setval({name}::regclass, {}, {});\n",
            state.value, state.is_called
        ));
    }
    Ok((sql, has_rows))
}

/// Drops every seed schema a stored template names, except `keep`: called
/// when `keep`'s template is stored, so a replaced template's seed, or an
/// older version's, goes. A seed schema no stored template names is left
/// alone: it may be one another process has generated and not stored yet.
pub(crate) fn drop_named_seeds_except(
    conn: &mut PgConnection,
    keep: Option<&SchemaName>,
) -> QueryResult<()> {
    let named = diesel::sql_query(
        "SELECT DISTINCT substr(line, 10) AS value
           FROM (SELECT split_part(body, E'\\n', 5) AS line FROM public.appschema_templates) t
          WHERE line LIKE '-- seed: appschema\\_seed\\_%'",
    )
    .load::<TextRow>(conn)?;
    for row in named {
        let Ok(seed) = SchemaName::internal(row.value.trim()) else {
            continue;
        };
        if Some(&seed) == keep || !seed.as_str().starts_with(SEED_PREFIX) {
            continue;
        }
        diesel::sql_query(format!("DROP SCHEMA IF EXISTS {} CASCADE", seed.quoted()))
            .execute(conn)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::Template;

    const HEAD: &str = "-- appschema schema template\n-- version: 1\n-- versions: 1\n\
                        -- placeholder: __appschema_schema__\n";

    #[test]
    fn a_template_written_before_seed_schemas_replays_the_rows_in_its_body() {
        let text = format!(
            "{HEAD}CREATE TABLE __appschema_schema__.t (x int);\n\
             INSERT INTO __appschema_schema__.t VALUES (1);\n"
        );
        let template = Template::parse(&text).unwrap();
        assert_eq!(template.seed_schema(), None);
        assert_eq!(template.to_string(), text);
        let sql = template.sql_for(&SchemaName::new("acme").unwrap());
        assert!(sql.contains("INSERT INTO \"acme\".t VALUES (1);"), "{sql}");
        assert!(!sql.contains("to_regnamespace"), "{sql}");
    }

    #[test]
    fn a_seeded_template_checks_its_seed_schema_right_after_creating_the_schema() {
        let text = format!(
            "{HEAD}-- seed: appschema_seed_00000000000000ff\n\
             CREATE TABLE __appschema_schema__.t (x int);\n\
             INSERT INTO __appschema_schema__.t (x) OVERRIDING SYSTEM VALUE \
             SELECT x FROM ONLY \"appschema_seed_00000000000000ff\".t;\n"
        );
        let template = Template::parse(&text).unwrap();
        let seed = SchemaName::internal("appschema_seed_00000000000000ff").unwrap();
        assert_eq!(template.seed_schema(), Some(&seed));
        assert_eq!(template.to_string(), text);
        let sql = template.sql_for(&SchemaName::new("acme").unwrap());
        let expected_start = format!("CREATE SCHEMA \"acme\";\n{}", guard_sql(&seed));
        assert!(sql.starts_with(&expected_start), "{sql}");
        assert!(
            sql.contains("INSERT INTO \"acme\".t (x) OVERRIDING SYSTEM VALUE SELECT x FROM ONLY \"appschema_seed_00000000000000ff\".t;"),
            "{sql}"
        );
    }

    #[test]
    fn a_seed_line_naming_anything_but_a_seed_schema_is_refused() {
        for name in ["public", "appschema_spare_1", "acme; DROP TABLE x", ""] {
            let text = format!("{HEAD}-- seed: {name}\nSELECT 1;\n");
            assert!(
                matches!(Template::parse(&text), Err(TemplateError::Malformed(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn the_guard_names_the_seed_schema_in_a_literal_only() {
        let seed = SchemaName::internal("appschema_seed_0123456789abcdef").unwrap();
        let sql = guard_sql(&seed);
        assert!(sql.contains("to_regnamespace('appschema_seed_0123456789abcdef')"));
        assert!(sql.contains(&missing_message(&seed)));
        assert_eq!(crate::sqltok::split_statements(&sql).unwrap().len(), 1);
    }
}
