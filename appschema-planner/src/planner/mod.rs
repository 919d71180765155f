//! The planner: a diesel-style migrations directory plus the scope of every
//! table becomes a [`MigrationSet`]: migrations in version order, each with
//! its scope, checked before anything runs. The executor that applies a set
//! is `appschema::migrate`.
//!
//! A migration is `<version>_<name>/up.sql` (+ `down.sql`, optional
//! `metadata.toml`), as diesel writes them, read in the order
//! `diesel_migrations` applies them. Its scope is decided from the tables
//! its `up.sql` touches ([`crate::sql`]), as the whole history settles their
//! scopes from the markings ([`TableScopes`]) (see `history`). What the
//! tables cannot decide is declared: `appschema_scope = "shared"`,
//! `"isolated"` or `"both"` in the migration's `metadata.toml` (refused when it
//! contradicts the tables), or, for migrations that touch no table,
//! `appschema_default_scope` in the migrations directory's own
//! [`DIRECTORY_METADATA`]. diesel's `run_in_transaction = false` is honoured,
//! and such a migration gets its statements split by PostgreSQL's grammar
//! and, when isolated, a form for new schemas
//! ([`Migration::new_schema_sql`](appschema_core::Migration::new_schema_sql)).
//!
//! A migration that changes tables marked `#[appschema::both]` is of scope
//! [`Scope::Both`]: it runs in the shared schema and in every tenant, so it
//! may not also touch shared-only or isolated-only tables (refused, naming
//! them). Naming a both-scope table only as the table a foreign key
//! references does not count: the key resolves to the copy in the schema
//! the migration runs in (a tenant's, for an isolated migration).

mod citus;
mod error;
mod history;
mod read;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use citus::{CitusNotes, CitusWarning};
pub use error::{PlanError, PlanErrors};
use history::History;
pub use read::DIRECTORY_METADATA;
use read::{read_dir, Source};

use appschema_core::{Migration, MigrationSet, Scope};

use crate::schema_source::TableScopes;
use crate::sql::{self, SqlFacts};

/// Reads and plans `dir` (diesel's layout) against the table markings.
/// Every problem found is reported at once, before anything runs.
pub fn load(dir: &Path, tables: &TableScopes) -> Result<MigrationSet, PlanErrors> {
    load_with_citus_notes(dir, tables).map(|(set, _)| set)
}

/// Like [`load`], with what the plan means on a Citus cluster: the shared
/// tables that must be reference tables there, and what Citus would refuse.
pub fn load_with_citus_notes(
    dir: &Path,
    tables: &TableScopes,
) -> Result<(MigrationSet, CitusNotes), PlanErrors> {
    let sources = read_dir(dir).map_err(|e| PlanErrors(vec![e]))?;
    let default_scope = read::read_default_scope(dir).map_err(|e| PlanErrors(vec![e]))?;
    plan(sources, tables, default_scope)
}

/// Reads the schema files and plans `dir`: what the CLI and the build
/// steps do. `base_dir` resolves the markings' `file = "…"` paths.
pub fn load_with_schema_files(
    dir: &Path,
    schema_files: &[PathBuf],
    base_dir: &Path,
) -> Result<MigrationSet, PlanErrors> {
    load_with_schema_files_and_citus_notes(dir, schema_files, base_dir).map(|(set, _)| set)
}

/// [`load_with_schema_files`] and [`load_with_citus_notes`] in one.
pub fn load_with_schema_files_and_citus_notes(
    dir: &Path,
    schema_files: &[PathBuf],
    base_dir: &Path,
) -> Result<(MigrationSet, CitusNotes), PlanErrors> {
    let tables = TableScopes::from_files(schema_files, base_dir)
        .map_err(|e| PlanErrors(vec![PlanError::SchemaSource(e)]))?;
    load_with_citus_notes(dir, &tables)
}

fn list(tables: &BTreeSet<String>) -> String {
    tables
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plan(
    sources: Vec<Result<Source, PlanError>>,
    tables: &TableScopes,
    default_scope: Option<Scope>,
) -> Result<(MigrationSet, CitusNotes), PlanErrors> {
    let mut errors = Vec::new();
    let mut notes = CitusNotes::default();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut analyzed: Vec<(Source, SqlFacts)> = Vec::new();
    for source in sources {
        let s = match source {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Some(other) = seen.insert(s.version.clone(), s.dir.clone()) {
            errors.push(PlanError::DuplicateVersion {
                path: s.dir.clone(),
                other,
                version: s.version.clone(),
            });
            continue;
        }
        match sql::analyze(&s.up) {
            Ok(facts) => analyzed.push((s, facts)),
            Err(message) => errors.push(PlanError::Unparsable {
                path: s.dir.join("up.sql"),
                message,
            }),
        }
    }
    // diesel_migrations applies pending migrations sorted by version (the
    // directory name up to the first `_`, dashes removed) as strings; the
    // history is read in that order, not in directory-name order (which
    // differs when `20170102000000_` and `2017-05-01-000000_` names mix).
    analyzed.sort_by(|(a, _), (b, _)| a.version.cmp(&b.version));
    let input: Vec<(&SqlFacts, Option<Scope>)> =
        analyzed.iter().map(|(s, f)| (f, s.declared)).collect();
    let history = History::new(&input, tables, default_scope);
    let mut migrations = Vec::new();
    for (i, (s, facts)) in analyzed.into_iter().enumerate() {
        let touched = history.scopes(i);
        let only_shared_or_isolated = !touched.shared.is_empty() || !touched.isolated.is_empty();
        if !touched.both.is_empty() && only_shared_or_isolated {
            let mut others = touched.shared.clone();
            others.extend(touched.isolated.iter().cloned());
            errors.push(PlanError::BothMixed {
                path: s.dir.clone(),
                both: list(&touched.both),
                others: list(&others),
            });
            continue;
        }
        let detected = match (touched.shared.is_empty(), touched.isolated.is_empty()) {
            _ if !touched.both.is_empty() => Some((Scope::Both, &touched.both)),
            (false, false) => {
                errors.push(PlanError::MixedScopes {
                    path: s.dir.clone(),
                    shared: list(&touched.shared),
                    isolated: list(&touched.isolated),
                });
                continue;
            }
            (false, true) => Some((Scope::Shared, &touched.shared)),
            (true, false) => Some((Scope::Isolated, &touched.isolated)),
            (true, true) => None,
        };
        let scope = match (s.declared, detected) {
            (Some(declared), Some((detected, tables))) if declared != detected => {
                errors.push(PlanError::DeclarationContradicts {
                    path: s.dir.clone(),
                    declared,
                    detected,
                    tables: list(tables),
                });
                continue;
            }
            (_, Some((detected, _))) if touched.unknown.is_empty() => Some(detected),
            (Some(declared), _) => Some(declared),
            (None, Some((detected, _))) => Some(detected),
            // An extension is database-wide: the executor installs it in
            // the shared schema, where every tenant's path finds it.
            (None, None) if history.touches_nothing(i) && history.touched(i).extensions => {
                Some(Scope::Shared)
            }
            (None, None) if history.touches_nothing(i) => default_scope,
            (None, None) => None,
        };
        let Some(scope) = scope else {
            let unknown_indexes = &history.touched(i).unknown_indexes;
            let why = if !touched.unknown.is_empty() {
                format!(
                    "it touches only objects no schema file marks and no other migration decides ({})",
                    list(&touched.unknown)
                )
            } else if !unknown_indexes.is_empty() {
                format!(
                    "it touches indexes no migration creates, so their table is unknown ({})",
                    list(unknown_indexes)
                )
            } else {
                format!(
                    "it touches no table (set a default for such migrations with \
                     `appschema_default_scope = \"shared\"` or `\"isolated\"` in `{}`)",
                    s.dir
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join(read::DIRECTORY_METADATA)
                        .display()
                )
            };
            errors.push(PlanError::Undecidable {
                path: s.dir.clone(),
                why,
            });
            continue;
        };
        if scope.in_tenants() {
            let qualified = history.shared_qualified_isolated(i);
            if !qualified.is_empty() {
                errors.push(PlanError::SharedQualifiedIsolated {
                    path: s.dir.clone(),
                    objects: list(&qualified),
                });
                continue;
            }
        }
        let mut migration = Migration::new(s.version, s.name, scope, s.up);
        if let Some(down) = s.down {
            migration = migration.with_down_sql(down);
        }
        if !s.run_in_transaction {
            let statements = match sql::split_statements(migration.up_sql()) {
                Ok(statements) => statements.into_iter().map(Cow::Owned).collect(),
                Err(message) => {
                    errors.push(PlanError::Unparsable {
                        path: s.dir.join("up.sql"),
                        message,
                    });
                    continue;
                }
            };
            let new_schema_sql = if scope.in_tenants() {
                match sql::new_schema_form(migration.up_sql()) {
                    Ok(sql) => Some(Cow::Owned(sql)),
                    Err(why) => {
                        errors.push(PlanError::NotForNewSchema {
                            path: s.dir.clone(),
                            why,
                        });
                        continue;
                    }
                }
            } else {
                None
            };
            migration = migration.outside_transaction(statements, new_schema_sql);
        }
        // Under the name it has when the isolated migration runs, and
        // under its last name (`migrate` converts whichever exists).
        for (written, last) in history.isolated_to_shared(i) {
            notes.reference_tables.insert(written);
            notes.reference_tables.insert(last);
        }
        if scope.in_tenants() {
            // A tenant table referencing a table named in another schema
            // than the shared one: another tenant's, on Citus refused.
            for (from, to) in &facts.foreign_keys() {
                if to
                    .schema
                    .as_deref()
                    .is_some_and(|schema| schema != "public")
                {
                    notes.warnings.push(CitusWarning::CrossSchemaReference {
                        path: s.dir.clone(),
                        from: from.to_string(),
                        to: to.to_string(),
                    });
                }
            }
        }
        for table in history.triggers_on_isolated(i) {
            notes.warnings.push(CitusWarning::TriggerOnIsolatedTable {
                path: s.dir.clone(),
                table,
            });
        }
        for (from, to) in history.both_to_isolated(i) {
            errors.push(PlanError::BothToIsolatedForeignKey {
                path: s.dir.clone(),
                from,
                to,
            });
        }
        for (from, to) in history.shared_to_isolated(i) {
            errors.push(PlanError::SharedToIsolatedForeignKey {
                path: s.dir.clone(),
                from,
                to,
            });
        }
        migrations.push(migration);
    }
    if !errors.is_empty() {
        return Err(PlanErrors(errors));
    }
    let set = MigrationSet::new(migrations)
        .with_citus_reference_tables(notes.reference_tables.iter().cloned());
    Ok((set, notes))
}
