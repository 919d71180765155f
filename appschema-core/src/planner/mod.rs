//! The planner: a diesel-style migrations directory plus the scope of every
//! table becomes a [`MigrationSet`]: migrations in version order, each with
//! its scope, checked before anything runs. The executor that applies a set
//! is [`crate::migrate`].
//!
//! A migration is `<version>_<name>/up.sql` (+ `down.sql`, optional
//! `metadata.toml`), as diesel writes them, read in the order
//! `diesel_migrations` applies them. Its scope is decided from the tables
//! its `up.sql` touches ([`crate::sql`]), as the whole history settles their
//! scopes from the markings ([`TableScopes`]) (see `history`). What the
//! tables cannot decide is declared: `appschema_scope = "shared"` or
//! `"isolated"` in the migration's `metadata.toml` (refused when it
//! contradicts the tables), or, for migrations that touch no table,
//! `appschema_default_scope` in the migrations directory's own
//! [`DIRECTORY_METADATA`]. diesel's `run_in_transaction = false` is honoured,
//! and such an isolated migration gets a form for new schemas
//! ([`Migration::new_schema_sql`]).

mod error;
mod history;
mod read;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use error::{PlanError, PlanErrors};
use history::History;
pub use read::DIRECTORY_METADATA;
use read::{read_dir, Source};

use crate::schema_source::TableScopes;
use crate::sql::{self, SqlFacts};
use crate::Scope;

/// One migration: version, scope, SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    version: Cow<'static, str>,
    name: Cow<'static, str>,
    scope: Scope,
    run_in_transaction: bool,
    up_sql: Cow<'static, str>,
    /// For an isolated `run_in_transaction = false` migration: the form that
    /// runs inside the transaction creating a new schema.
    new_schema_sql: Option<Cow<'static, str>>,
    down_sql: Option<Cow<'static, str>>,
}

impl Migration {
    /// The version diesel records: the directory name up to the first `_`,
    /// dashes removed.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The directory name (`<version>_<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Where it runs.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// Whether it runs in a transaction with its tracking row (diesel's
    /// `run_in_transaction`, default `true`).
    pub fn run_in_transaction(&self) -> bool {
        self.run_in_transaction
    }
    /// The `up.sql` text.
    pub fn up_sql(&self) -> &str {
        &self.up_sql
    }
    /// The SQL that builds this migration's part of a *new, empty* schema
    /// inside the transaction creating it (provisioning): `up.sql`, except
    /// that a `run_in_transaction = false` migration has its
    /// `CONCURRENTLY` removed and its `VACUUM`s left out (an empty schema
    /// has nothing to lock or vacuum; see [`crate::sql::new_schema_form`]).
    /// `None` for a `run_in_transaction = false` migration the planner did
    /// not prepare (a shared one).
    pub fn new_schema_sql(&self) -> Option<&str> {
        if self.run_in_transaction {
            Some(&self.up_sql)
        } else {
            self.new_schema_sql.as_deref()
        }
    }
    /// The `down.sql` text, when present.
    pub fn down_sql(&self) -> Option<&str> {
        self.down_sql.as_deref()
    }
}

/// A migration as embedded by the build step: `(version, name, scope,
/// run_in_transaction, up_sql, down_sql, new_schema_sql)`. Generated code
/// only; build a [`MigrationSet`] from it with [`MigrationSet::from_embedded`].
pub type EmbeddedMigration = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// The application's migrations in version order, each with its scope:
/// the one timeline both scopes follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
}

/// One step of the timeline: a shared migration, or a run of consecutive
/// isolated migrations that every tenant schema applies before the next
/// shared migration starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// Runs once, in the shared schema.
    Shared(&'a Migration),
    /// Runs in every tenant schema, in order.
    Isolated(&'a [Migration]),
}

impl MigrationSet {
    /// Reads and plans `dir` (diesel's layout) against the table markings.
    /// Every problem found is reported at once, before anything runs.
    pub fn load(dir: &Path, tables: &TableScopes) -> Result<MigrationSet, PlanErrors> {
        let sources = read_dir(dir).map_err(|e| PlanErrors(vec![e]))?;
        let default_scope = read::read_default_scope(dir).map_err(|e| PlanErrors(vec![e]))?;
        plan(sources, tables, default_scope)
    }

    /// Reads the schema files and plans `dir`: what the CLI and the build
    /// step do. `base_dir` resolves the markings' `file = "…"` paths.
    pub fn load_with_schema_files(
        dir: &Path,
        schema_files: &[PathBuf],
        base_dir: &Path,
    ) -> Result<MigrationSet, PlanErrors> {
        let tables = TableScopes::from_files(schema_files, base_dir)
            .map_err(|e| PlanErrors(vec![PlanError::SchemaSource(e)]))?;
        MigrationSet::load(dir, &tables)
    }

    /// The set the build step embedded (see `include_migrations!`). Already
    /// planned at build time.
    ///
    /// # Panics
    /// On a scope other than `shared`/`isolated`, which generated code never holds.
    pub fn from_embedded(items: &'static [EmbeddedMigration]) -> MigrationSet {
        let migrations = items
            .iter()
            .map(
                |&(version, name, scope, run_in_transaction, up, down, new_schema)| Migration {
                    version: Cow::Borrowed(version),
                    name: Cow::Borrowed(name),
                    scope: scope.parse().expect("generated code holds a valid scope"),
                    run_in_transaction,
                    up_sql: Cow::Borrowed(up),
                    new_schema_sql: new_schema.map(Cow::Borrowed),
                    down_sql: down.map(Cow::Borrowed),
                },
            )
            .collect();
        MigrationSet { migrations }
    }

    /// Builds a set from migrations given in code; they are sorted by
    /// version. `(version, scope, up_sql)`; no planning is done.
    pub fn from_parts<I, S>(parts: I) -> MigrationSet
    where
        I: IntoIterator<Item = (S, Scope, S)>,
        S: Into<String>,
    {
        let mut migrations: Vec<Migration> = parts
            .into_iter()
            .map(|(version, scope, up)| {
                let version = version.into();
                Migration {
                    name: Cow::Owned(version.clone()),
                    version: Cow::Owned(version),
                    scope,
                    run_in_transaction: true,
                    up_sql: Cow::Owned(up.into()),
                    new_schema_sql: None,
                    down_sql: None,
                }
            })
            .collect();
        migrations.sort_by(|a, b| a.version.cmp(&b.version));
        MigrationSet { migrations }
    }

    /// Every migration, in version order.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The isolated migrations, in version order: what a new tenant schema applies.
    pub fn isolated(&self) -> impl Iterator<Item = &Migration> {
        self.migrations
            .iter()
            .filter(|m| m.scope == Scope::Isolated)
    }

    /// The shared migrations, in version order.
    pub fn shared(&self) -> impl Iterator<Item = &Migration> {
        self.migrations.iter().filter(|m| m.scope == Scope::Shared)
    }

    /// The version of the last isolated migration: a tenant schema that has
    /// applied every isolated migration is "at head".
    pub fn isolated_head(&self) -> Option<&str> {
        self.isolated().last().map(Migration::version)
    }

    /// The timeline as steps (see [`Step`]).
    pub fn steps(&self) -> Vec<Step<'_>> {
        let mut steps = Vec::new();
        let mut i = 0;
        while i < self.migrations.len() {
            if self.migrations[i].scope == Scope::Shared {
                steps.push(Step::Shared(&self.migrations[i]));
                i += 1;
            } else {
                let start = i;
                while i < self.migrations.len() && self.migrations[i].scope == Scope::Isolated {
                    i += 1;
                }
                steps.push(Step::Isolated(&self.migrations[start..i]));
            }
        }
        steps
    }

    /// Writes the Rust expression the build step embeds: a
    /// `&[EmbeddedMigration]` literal.
    pub fn to_rust_literal(&self) -> String {
        let mut out = String::from("&[\n");
        let option = |s: &Option<Cow<'static, str>>| match s {
            Some(s) => format!("Some({s:?})"),
            None => "None".to_string(),
        };
        for m in &self.migrations {
            out.push_str(&format!(
                "    ({:?}, {:?}, {:?}, {}, {:?}, {}, {}),\n",
                m.version,
                m.name,
                m.scope.as_str(),
                m.run_in_transaction,
                m.up_sql,
                option(&m.down_sql),
                option(&m.new_schema_sql),
            ));
        }
        out.push(']');
        out
    }
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
) -> Result<MigrationSet, PlanErrors> {
    let mut errors = Vec::new();
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
    for (i, (s, _)) in analyzed.into_iter().enumerate() {
        let touched = history.scopes(i);
        let detected = match (touched.shared.is_empty(), touched.isolated.is_empty()) {
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
            (None, None) if history.touches_nothing(i) => default_scope,
            (None, None) => None,
        };
        let Some(scope) = scope else {
            let unknown_indexes = &history.touched(i).unknown_indexes;
            let why = if !touched.unknown.is_empty() {
                format!(
                    "it touches only tables no schema file marks and no other migration decides ({})",
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
        let new_schema_sql = if scope == Scope::Isolated && !s.run_in_transaction {
            match sql::new_schema_form(&s.up) {
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
        for (from, to) in history.shared_to_isolated(i) {
            errors.push(PlanError::SharedToIsolatedForeignKey {
                path: s.dir.clone(),
                from,
                to,
            });
        }
        migrations.push(Migration {
            version: Cow::Owned(s.version),
            name: Cow::Owned(s.name),
            scope,
            run_in_transaction: s.run_in_transaction,
            up_sql: Cow::Owned(s.up),
            new_schema_sql,
            down_sql: s.down.map(Cow::Owned),
        });
    }
    if !errors.is_empty() {
        return Err(PlanErrors(errors));
    }
    Ok(MigrationSet { migrations })
}
