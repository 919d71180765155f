//! The runtime form of an application's migrations: ordered, each with its
//! scope and its SQL, as the executor ([`crate::migrate`]) and provisioning
//! ([`crate::provision`]) consume them.
//!
//! A set is made by the planner (crate `appschema-planner`: from migration
//! files and table markings), embedded by a build step
//! ([`include_migrations!`](crate::include_migrations)), or given in code
//! ([`MigrationSet::from_parts`]). Nothing here parses SQL: whatever needs
//! PostgreSQL's grammar (the scope of each migration, the statements of one
//! that runs outside a transaction, its form for a new schema) was decided
//! when the set was planned.

use std::borrow::Cow;

use crate::connection::SearchPath;
use crate::Scope;

/// One migration: version, scope, SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    version: Cow<'static, str>,
    name: Cow<'static, str>,
    scope: Scope,
    run_in_transaction: bool,
    up_sql: Cow<'static, str>,
    /// For a `run_in_transaction = false` migration: `up.sql` split into
    /// statements, each run on its own.
    statements: Option<Vec<Cow<'static, str>>>,
    /// For an isolated (or both-scope) `run_in_transaction = false` migration: the form that
    /// runs inside the transaction creating a new schema.
    new_schema_sql: Option<Cow<'static, str>>,
    down_sql: Option<Cow<'static, str>>,
}

impl Migration {
    /// A migration that runs in a transaction with its tracking row (the
    /// usual case). `name` is the directory name, `<version>_<name>`.
    pub fn new(
        version: impl Into<Cow<'static, str>>,
        name: impl Into<Cow<'static, str>>,
        scope: Scope,
        up_sql: impl Into<Cow<'static, str>>,
    ) -> Migration {
        Migration {
            version: version.into(),
            name: name.into(),
            scope,
            run_in_transaction: true,
            up_sql: up_sql.into(),
            statements: None,
            new_schema_sql: None,
            down_sql: None,
        }
    }

    /// With its `down.sql`.
    pub fn with_down_sql(mut self, down_sql: impl Into<Cow<'static, str>>) -> Migration {
        self.down_sql = Some(down_sql.into());
        self
    }

    /// Makes it a `run_in_transaction = false` migration: `statements` (its
    /// `up.sql`, split by PostgreSQL's grammar) run one by one, and
    /// `new_schema_sql`, when given, is what runs inside the transaction
    /// creating a new schema (see [`Migration::new_schema_sql`]).
    pub fn outside_transaction(
        mut self,
        statements: Vec<Cow<'static, str>>,
        new_schema_sql: Option<Cow<'static, str>>,
    ) -> Migration {
        self.run_in_transaction = false;
        self.statements = Some(statements);
        self.new_schema_sql = new_schema_sql;
        self
    }

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
    /// For a `run_in_transaction = false` migration, `up.sql` as the
    /// statements that run one by one (`CREATE INDEX CONCURRENTLY` refuses
    /// to run in the implicit transaction of a multi-statement string).
    /// `None` for a migration that runs in a transaction.
    pub fn statements(&self) -> Option<impl Iterator<Item = &str>> {
        self.statements
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_ref()))
    }
    /// The SQL that builds this migration's part of a *new, empty* schema
    /// inside the transaction creating it (provisioning): `up.sql`, except
    /// that a `run_in_transaction = false` migration has its
    /// `CONCURRENTLY` removed and its `VACUUM`s left out (an empty schema
    /// has nothing to lock or vacuum), as the planner prepared it.
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

/// A migration as a build step embeds it. Generated code only; build a
/// [`MigrationSet`] from these with [`MigrationSet::from_embedded`].
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    /// See [`Migration::version`].
    pub version: &'static str,
    /// See [`Migration::name`].
    pub name: &'static str,
    /// `"shared"`, `"isolated"` or `"both"`.
    pub scope: &'static str,
    /// See [`Migration::up_sql`].
    pub up_sql: &'static str,
    /// See [`Migration::down_sql`].
    pub down_sql: Option<&'static str>,
    /// `Some` for a `run_in_transaction = false` migration: its statements.
    pub statements: Option<&'static [&'static str]>,
    /// See [`Migration::new_schema_sql`] (`run_in_transaction = false` only).
    pub new_schema_sql: Option<&'static str>,
}

/// The application's migrations in version order, each with its scope:
/// the one timeline both scopes follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
    citus_reference_tables: Vec<Cow<'static, str>>,
    search_path: SearchPath,
}

/// One step of the timeline: a migration in the shared schema, or a run of
/// consecutive migrations that every tenant schema applies before the next
/// shared migration starts (a both-scope migration is in one of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// Runs once, in the shared schema (a shared or both-scope migration).
    Shared(&'a Migration),
    /// Runs in every tenant schema, in order (isolated migrations, the
    /// first of which may be both-scope).
    Isolated(&'a [Migration]),
}

impl MigrationSet {
    /// A set of `migrations`, in the order given: the order the planner
    /// decided (diesel's: by version, compared as strings).
    pub fn new(migrations: Vec<Migration>) -> MigrationSet {
        MigrationSet {
            migrations,
            citus_reference_tables: Vec::new(),
            search_path: SearchPath::new(),
        }
    }

    /// With the `search_path` a new tenant schema's isolated migrations run
    /// on (after the tenant's own schema): provisioning (every source that
    /// runs migrations: [`Source::Migrations`](crate::provision::Source),
    /// spares, templates) and [`migrate_schema_in_transaction`](crate::migrate_schema_in_transaction)
    /// read it from the set. Give it the [`SearchPath`] the application's
    /// pools and its [`Migrator`](crate::Migrator) use. Default:
    /// [`SearchPath::new`] (`public`).
    ///
    /// ```
    /// use appschema::{MigrationSet, connection::SearchPath};
    /// let path = SearchPath::new().extra_schema("extensions")?;
    /// let set = MigrationSet::default().with_search_path(path.clone());
    /// assert_eq!(set.search_path(), &path);
    /// # Ok::<(), appschema::ConnectionError>(())
    /// ```
    pub fn with_search_path(mut self, path: SearchPath) -> MigrationSet {
        self.search_path = path;
        self
    }

    /// See [`MigrationSet::with_search_path`].
    pub fn search_path(&self) -> &SearchPath {
        &self.search_path
    }

    /// With the shared tables that isolated tables reference (the planner
    /// finds them): on Citus, `migrate` makes them reference tables (see
    /// [`crate::citus`]); elsewhere they change nothing.
    ///
    /// ```
    /// use appschema::{MigrationSet, Scope};
    /// let set = MigrationSet::from_parts([("1", Scope::Shared, "CREATE TABLE plans (id int PRIMARY KEY)")])
    ///     .with_citus_reference_tables(["plans"]);
    /// assert_eq!(set.citus_reference_tables().collect::<Vec<_>>(), ["plans"]);
    /// ```
    pub fn with_citus_reference_tables<I, S>(mut self, tables: I) -> MigrationSet
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        self.citus_reference_tables = tables.into_iter().map(Into::into).collect();
        self
    }

    /// See [`MigrationSet::with_citus_reference_tables`].
    pub fn citus_reference_tables(&self) -> impl Iterator<Item = &str> {
        self.citus_reference_tables.iter().map(|t| t.as_ref())
    }

    /// The set a build step embedded (see
    /// [`include_migrations!`](crate::include_migrations)). Already planned.
    ///
    /// # Panics
    /// On a scope other than `shared`/`isolated`/`both`, which generated code never holds.
    pub fn from_embedded(items: &'static [EmbeddedMigration]) -> MigrationSet {
        let migrations = items
            .iter()
            .map(|e| {
                let scope = e.scope.parse().expect("generated code holds a valid scope");
                let mut m = Migration::new(e.version, e.name, scope, e.up_sql);
                if let Some(down) = e.down_sql {
                    m = m.with_down_sql(down);
                }
                if let Some(statements) = e.statements {
                    m = m.outside_transaction(
                        statements.iter().map(|&s| Cow::Borrowed(s)).collect(),
                        e.new_schema_sql.map(Cow::Borrowed),
                    );
                }
                m
            })
            .collect();
        MigrationSet::new(migrations)
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
                Migration::new(version.clone(), version, scope, up.into())
            })
            .collect();
        migrations.sort_by(|a, b| a.version.cmp(&b.version));
        MigrationSet::new(migrations)
    }

    /// Every migration, in version order.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The migrations that run in tenant schemas (isolated and both-scope),
    /// in version order: what a new tenant schema applies.
    pub fn isolated(&self) -> impl Iterator<Item = &Migration> {
        self.migrations.iter().filter(|m| m.scope.in_tenants())
    }

    /// The migrations that run in the shared schema (shared and
    /// both-scope), in version order.
    pub fn shared(&self) -> impl Iterator<Item = &Migration> {
        self.migrations.iter().filter(|m| m.scope.in_shared())
    }

    /// The version of the last migration that runs in tenant schemas: a
    /// tenant schema that has applied every one is "at head".
    pub fn isolated_head(&self) -> Option<&str> {
        self.isolated().last().map(Migration::version)
    }

    /// The timeline as steps (see [`Step`]).
    ///
    /// A both-scope migration is two steps: first its shared step, then it
    /// opens a run of tenant migrations (it and the isolated migrations
    /// after it, up to the next shared or both-scope one), so both copies of
    /// its tables exist before anything after it runs.
    ///
    /// ```
    /// use appschema::{MigrationSet, Scope, Step};
    /// let set = MigrationSet::from_parts([
    ///     ("1", Scope::Isolated, "CREATE TABLE orders (id int)"),
    ///     ("2", Scope::Both, "CREATE TABLE settings (k text PRIMARY KEY, v text)"),
    ///     ("3", Scope::Isolated, "ALTER TABLE orders ADD note text"),
    /// ]);
    /// let steps = set.steps();
    /// assert!(matches!(steps[..], [Step::Isolated(_), Step::Shared(_), Step::Isolated(run)] if run.len() == 2));
    /// ```
    pub fn steps(&self) -> Vec<Step<'_>> {
        let mut steps = Vec::new();
        let mut i = 0;
        while i < self.migrations.len() {
            let scope = self.migrations[i].scope;
            if scope.in_shared() {
                steps.push(Step::Shared(&self.migrations[i]));
            }
            if !scope.in_tenants() {
                i += 1;
                continue;
            }
            let start = i;
            i += 1;
            while i < self.migrations.len() && self.migrations[i].scope == Scope::Isolated {
                i += 1;
            }
            steps.push(Step::Isolated(&self.migrations[start..i]));
        }
        steps
    }
}

/// Includes the migrations a build step embedded (`appschema-build`'s
/// `embed_prepared_migrations`, or `appschema-planner`'s `embed_migrations`)
/// as a [`MigrationSet`].
#[macro_export]
macro_rules! include_migrations {
    () => {{
        // The generated literal names the type unqualified: a pair of the
        // migrations and the shared tables to make reference tables on Citus.
        use $crate::EmbeddedMigration;
        let (migrations, reference_tables): (&'static [EmbeddedMigration], &'static [&'static str]) =
            include!(concat!(
                env!(
                    "OUT_DIR",
                    "include_migrations!() needs appschema's build step: add a build.rs calling \
                     appschema_build::embed_prepared_migrations(\"migrations\", \"appschema-plan.toml\")"
                ),
                "/appschema_migrations.rs"
            ));
        $crate::MigrationSet::from_embedded(migrations)
            .with_citus_reference_tables(reference_tables.iter().copied())
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_group_consecutive_isolated_migrations() {
        let set = MigrationSet::from_parts([
            ("1", Scope::Shared, "a"),
            ("2", Scope::Isolated, "b"),
            ("3", Scope::Isolated, "c"),
            ("4", Scope::Shared, "d"),
        ]);
        let steps = set.steps();
        assert_eq!(steps.len(), 3);
        assert!(matches!(steps[1], Step::Isolated(run) if run.len() == 2));
        assert_eq!(set.isolated_head(), Some("3"));
    }

    #[test]
    fn a_both_scope_migration_is_a_shared_step_then_opens_a_tenant_run() {
        let set = MigrationSet::from_parts([
            ("1", Scope::Isolated, "a"),
            ("2", Scope::Both, "b"),
            ("3", Scope::Isolated, "c"),
            ("4", Scope::Both, "d"),
            ("5", Scope::Shared, "e"),
        ]);
        fn versions(run: &[Migration]) -> Vec<&str> {
            run.iter().map(|m| m.version()).collect()
        }
        let steps: Vec<(&str, Vec<&str>)> = set
            .steps()
            .into_iter()
            .map(|s| match s {
                Step::Shared(m) => ("shared", vec![m.version()]),
                Step::Isolated(run) => ("tenants", versions(run)),
            })
            .collect();
        assert_eq!(
            steps,
            [
                ("tenants", vec!["1"]),
                ("shared", vec!["2"]),
                ("tenants", vec!["2", "3"]),
                ("shared", vec!["4"]),
                ("tenants", vec!["4"]),
                ("shared", vec!["5"]),
            ]
        );
        assert_eq!(
            set.isolated().map(|m| m.version()).collect::<Vec<_>>(),
            ["1", "2", "3", "4"]
        );
        assert_eq!(
            set.shared().map(|m| m.version()).collect::<Vec<_>>(),
            ["2", "4", "5"]
        );
        assert_eq!(set.isolated_head(), Some("4"));
    }

    #[test]
    fn an_embedded_migration_outside_a_transaction_keeps_its_statements() {
        static EMBEDDED: &[EmbeddedMigration] = &[EmbeddedMigration {
            version: "2",
            name: "2_idx",
            scope: "isolated",
            up_sql: "CREATE INDEX CONCURRENTLY i ON t (a); VACUUM t;",
            down_sql: None,
            statements: Some(&["CREATE INDEX CONCURRENTLY i ON t (a)", "VACUUM t"]),
            new_schema_sql: Some("CREATE INDEX  i ON t (a);\n"),
        }];
        let set = MigrationSet::from_embedded(EMBEDDED);
        let m = &set.migrations()[0];
        assert!(!m.run_in_transaction());
        assert_eq!(m.statements().unwrap().count(), 2);
        assert_eq!(m.new_schema_sql(), Some("CREATE INDEX  i ON t (a);\n"));
    }
}
