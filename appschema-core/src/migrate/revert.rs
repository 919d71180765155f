//! Reverting: each migration's `down.sql`, newest first, across both scopes
//! — apply's timeline walked backwards.
//!
//! - **What**: [`RevertTo::Last`]`(n)` undoes the last `n` migrations of the
//!   timeline (by version, whichever scope); [`RevertTo::Version`] undoes
//!   every migration newer than a version. `Last` is relative to where the
//!   database is; `Version` names where it ends, so running it again after
//!   a failure finishes the job.
//! - **Order**: apply's steps in reverse. An isolated run is undone in every
//!   tenant schema (parallel workers, each schema newest first) before the
//!   shared migration before it is undone once in the shared schema; a
//!   both-scope migration leaves the tenants first, then the shared schema.
//! - **Per schema, per migration, one transaction**: the schema's lock, the
//!   tracking row deleted (a row already gone means another run reverted
//!   it: skipped), the `down.sql`, commit. A failing schema stops only
//!   itself and keeps its previous version; later steps do not start.
//! - **Refused before anything runs**: a migration to undo without a
//!   `down.sql` (or with one holding only comments), one that sets
//!   `run_in_transaction = false`, schemas holding another version than the
//!   rest (or a gap), a target some schema has not reached.
//! - **Afterwards**: the recorded heads of the schemas touched are deleted
//!   before the first `down.sql` runs and written anew for the schemas that
//!   finished, so a later `migrate` re-applies what was undone; templates
//!   stored for an undone isolated version or a later one are deleted.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::applied::Versions;
use super::apply::{locked_transaction_start, quote_literal, run_locked};
use super::extensions::{edit_statements, in_shared_schema};
use super::heads;
use super::{
    Event, Failure, MigrateError, Migrator, PlannedMigration, Report, Target, TRACKING_TABLE,
};
use crate::citus::execute_script;
use crate::name::quote_ident;
use crate::{Migration, MigrationSet, Scope, Step};

/// How far [`Migrator::revert`] goes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertTo {
    /// The last `n` migrations of the timeline the database has applied, by
    /// version, whichever their scope (`migrate --revert N`).
    Last(usize),
    /// Every migration whose version is newer than this one, compared as
    /// diesel compares versions: as text (`migrate --revert --to VERSION`).
    /// `"0"` undoes everything.
    Version(String),
}

/// What a revert undoes in each schema: the schema's migrations to undo,
/// newest first.
struct Plan<'s> {
    undo: BTreeMap<String, Vec<&'s Migration>>,
}

impl Migrator {
    /// What [`Migrator::revert`] would undo, without doing it: each
    /// migration (newest first) and the schemas its `down.sql` would run
    /// in. `Err` for what `revert` would refuse.
    ///
    /// ```no_run
    /// use appschema::migrate::{Migrator, RevertTo};
    /// # let set = appschema::MigrationSet::default();
    /// for step in Migrator::new("postgres:///app").revert_plan(&set, &RevertTo::Last(1))? {
    ///     println!("{} ({}): {} schema(s)", step.migration, step.scope, step.schemas.len());
    /// }
    /// # Ok::<(), appschema::MigrateError>(())
    /// ```
    pub fn revert_plan(
        &self,
        set: &MigrationSet,
        to: &RevertTo,
    ) -> Result<Vec<PlannedMigration>, MigrateError> {
        let mut conn = self.connect()?;
        let targets = self.targets(&mut conn)?;
        let applied = self.applied_versions(&mut conn, &targets, set)?;
        let plan = self.revert_plan_of(set, &targets, &applied, to)?;
        let mut out = Vec::new();
        for step in set.steps().iter().rev() {
            let migrations: Vec<&Migration> = match *step {
                Step::Shared(m) => vec![m],
                Step::Isolated(run) => run.iter().rev().collect(),
            };
            for m in migrations {
                let schemas: Vec<String> = self
                    .step_schemas(step, &targets)
                    .filter(|s| plan.undoes(s, m))
                    .collect();
                out.extend(PlannedMigration::of(m, schemas));
            }
        }
        Ok(out)
    }

    /// Undoes migrations: `down.sql` in reverse timeline order, isolated
    /// ones in every tenant schema (and every schema of the
    /// [`Migrator::schema_source`]s, on `jobs` workers), shared ones once in
    /// the shared schema after every tenant has undone the isolated ones
    /// newer than them. Each schema undoes each migration in one
    /// transaction with the deletion of its tracking row; a failing schema
    /// stops only itself, and later steps do not start. A top-level
    /// `DROP EXTENSION` is left out in tenant schemas (an extension is
    /// database-wide). The reverted schemas' recorded heads are deleted
    /// before the first `down.sql` and recorded anew at the end; templates
    /// stored for an undone isolated version or a later one are deleted.
    ///
    /// Refused (`Err`, nothing ran): a migration to undo without a
    /// `down.sql` or with one holding only comments
    /// ([`MigrateError::MissingDown`]), or with `run_in_transaction = false`
    /// ([`MigrateError::DownOutsideTransaction`]); schemas at different
    /// versions, with a gap, or behind the target
    /// ([`MigrateError::RevertOutOfStep`]); more than is applied
    /// ([`MigrateError::RevertTooFar`]). Failures of `down.sql`s are in the
    /// [`Report`] (`migrations_reverted` counts the downs that ran); run
    /// [`RevertTo::Version`] again to resume.
    ///
    /// ```no_run
    /// use appschema::migrate::{Migrator, RevertTo};
    /// # let set = appschema::MigrationSet::default();
    /// let migrator = Migrator::new("postgres:///app").jobs(4);
    /// let report = migrator.revert(&set, &RevertTo::Version("20240101000000".into()), &|_| {})?;
    /// assert!(report.is_success());
    /// # Ok::<(), appschema::MigrateError>(())
    /// ```
    pub fn revert(
        &self,
        set: &MigrationSet,
        to: &RevertTo,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Report, MigrateError> {
        let started = Instant::now();
        let mut conns = vec![self.connect()?];
        let citus = crate::citus::is_citus(&mut conns[0])?.then(Vec::new);
        *self.citus.write().unwrap_or_else(|e| e.into_inner()) = citus;
        let targets = self.targets(&mut conns[0])?;
        let applied = self.applied_versions(&mut conns[0], &targets, set)?;
        let plan = self.revert_plan_of(set, &targets, &applied, to)?;
        let mut report = Report::default();
        if plan.undo.is_empty() {
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        forget_heads_and_templates(&mut conns[0], &plan)?;
        let reverted: Mutex<HashMap<String, Vec<String>>> = Mutex::new(HashMap::new());
        let steps = set.steps();
        let mut touched = BTreeSet::new();
        for (i, step) in steps.iter().rev().enumerate() {
            let mut queue: VecDeque<(String, Vec<&Migration>)> = self
                .step_schemas(step, &targets)
                .filter_map(|schema| {
                    let undo: Vec<&Migration> = match *step {
                        Step::Shared(m) => vec![m],
                        Step::Isolated(run) => run.iter().rev().collect(),
                    }
                    .into_iter()
                    .filter(|m| plan.undoes(&schema, m))
                    .collect();
                    (!undo.is_empty()).then_some((schema, undo))
                })
                .collect();
            if queue.is_empty() {
                continue;
            }
            let scope = match step {
                Step::Shared(_) => Scope::Shared,
                Step::Isolated(_) => Scope::Isolated,
            };
            let mut names: Vec<&Migration> = Vec::new();
            for (_, undo) in &queue {
                for m in undo {
                    if !names.iter().any(|n| n.version() == m.version()) {
                        names.push(m);
                    }
                }
            }
            on_event(Event::StepStarted {
                scope,
                migrations: names.iter().map(|m| m.name().to_string()).collect(),
                schemas: queue.len(),
            });
            let workers = match step {
                Step::Shared(_) => 1,
                Step::Isolated(_) => self.jobs.min(queue.len()),
            };
            touched.extend(queue.iter().map(|(s, _)| s.clone()));
            let queue = Mutex::new(std::mem::take(&mut queue));
            let next_work = || queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let outcome = Mutex::new((0usize, Vec::<Failure>::new()));
            let connect = || self.connect();
            let handle = |conn: &mut PgConnection,
                          (schema, undo): (String, Vec<&Migration>)|
             -> Result<(), MigrateError> {
                let path = match step {
                    Step::Shared(_) => self.shared_path(None),
                    Step::Isolated(_) => self.revert_path(&schema, &targets),
                };
                let mut count = 0;
                let mut failure = None;
                for m in undo {
                    let at = RevertTarget {
                        schema: &schema,
                        path: &path,
                        shared: &self.shared_schema,
                        one_by_one: self.on_citus(),
                        tenant: matches!(step, Step::Isolated(_)),
                    };
                    match revert_one(conn, at, m, on_event) {
                        Ok(now) => {
                            count += usize::from(now);
                            reverted
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(schema.clone())
                                .or_default()
                                .push(m.version().to_string());
                        }
                        Err(message) => {
                            failure = Some(Failure::of(&schema, m, message));
                            break;
                        }
                    }
                }
                on_event(Event::schema_finished(&schema, count, failure.as_ref()));
                if failure.is_some() && crate::connection::lost_after_failure(conn) {
                    *conn = self.connect()?;
                }
                let mut outcome = outcome.lock().unwrap_or_else(|e| e.into_inner());
                outcome.0 += count;
                outcome.1.extend(failure);
                Ok(())
            };
            crate::workers::run_workers(workers, &mut conns, &connect, &next_work, &handle)?;
            let (count, failures) = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
            report.migrations_reverted += count;
            report.failures.extend(failures);
            if !report.failures.is_empty() {
                report.steps_skipped = steps.len() - i - 1;
                break;
            }
        }
        let reverted = reverted.into_inner().unwrap_or_else(|e| e.into_inner());
        report.schemas_migrated = reverted.values().filter(|v| !v.is_empty()).count();
        self.record_reverted_heads(&mut conns[0], &touched, &applied, &reverted, &report)?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The schemas a step runs in: the shared schema for a shared step,
    /// every target for an isolated one.
    fn step_schemas<'t>(
        &'t self,
        step: &Step<'_>,
        targets: &'t [Target],
    ) -> Box<dyn Iterator<Item = String> + 't> {
        match step {
            Step::Shared(_) => Box::new(std::iter::once(self.shared_schema.clone())),
            Step::Isolated(_) => Box::new(targets.iter().map(|t| t.schema.as_str().to_string())),
        }
    }

    /// The `search_path` a `down.sql` runs on in `schema` (the shared
    /// schema's, or the tenant's).
    fn revert_path(&self, schema: &str, targets: &[Target]) -> String {
        match targets.iter().find(|t| t.schema.as_str() == schema) {
            Some(t) => self.shared_path(Some(&t.schema)),
            None => self.shared_path(None),
        }
    }

    /// Records the heads of the tenant schemas the revert touched and that
    /// did not fail: what they were read to hold minus what was reverted
    /// (see the `heads` module: a record never claims more than the table
    /// holds).
    fn record_reverted_heads(
        &self,
        conn: &mut PgConnection,
        touched: &BTreeSet<String>,
        applied: &HashMap<String, Versions>,
        reverted: &HashMap<String, Vec<String>>,
        report: &Report,
    ) -> Result<(), MigrateError> {
        if !self.record_heads || !heads::heads_installed(conn)? {
            return Ok(());
        }
        let failed: BTreeSet<&str> = report.failures.iter().map(|f| f.schema.as_str()).collect();
        let records: Vec<heads::Record> = touched
            .iter()
            .filter(|s| **s != self.shared_schema && !failed.contains(s.as_str()))
            .map(|s| {
                let mut holds = applied.get(s).cloned().unwrap_or_default();
                for v in reverted.get(s).into_iter().flatten() {
                    holds.remove(v);
                }
                heads::Record::holding(s, &holds)
            })
            .collect();
        heads::write(conn, &records)?;
        Ok(())
    }

    /// Decides what each schema undoes, or refuses (see the [module
    /// docs](self)).
    fn revert_plan_of<'s>(
        &self,
        set: &'s MigrationSet,
        targets: &[Target],
        applied: &HashMap<String, Versions>,
        to: &RevertTo,
    ) -> Result<Plan<'s>, MigrateError> {
        let timeline = set.migrations();
        let empty = Versions::new();
        // Each schema's migrations (indexes into the timeline) and how many
        // of them, from the first, it holds.
        let shared_list: Vec<usize> = (0..timeline.len())
            .filter(|&i| timeline[i].scope().in_shared())
            .collect();
        let tenant_list: Vec<usize> = (0..timeline.len())
            .filter(|&i| timeline[i].scope().in_tenants())
            .collect();
        let mut schemas: Vec<(String, &[usize], usize)> = Vec::new();
        let mut gaps = Vec::new();
        let mut add = |schema: &str, list: &'_ [usize]| {
            let holds = applied.get(schema).unwrap_or(&empty);
            let held = list
                .iter()
                .filter(|&&i| holds.contains(timeline[i].version()))
                .count();
            let prefix = list
                .iter()
                .take_while(|&&i| holds.contains(timeline[i].version()))
                .count();
            if held != prefix {
                gaps.push(format!(
                    "`{schema}` (holds migrations after {}, which it lacks)",
                    timeline[list[prefix]].name()
                ));
            }
            prefix
        };
        let shared_held = add(&self.shared_schema, &shared_list);
        schemas.push((self.shared_schema.clone(), &shared_list, shared_held));
        for t in targets {
            let held = add(t.schema.as_str(), &tenant_list);
            schemas.push((t.schema.as_str().to_string(), &tenant_list, held));
        }
        if !gaps.is_empty() {
            return Err(MigrateError::RevertOutOfStep {
                detail:
                    "these schemas have applied a migration without an earlier one of their scope"
                        .into(),
                schemas: gaps,
                fix: "run `appschema-cli migrate` to fill the gap first".into(),
            });
        }
        // Where the timeline ends up: the number of migrations kept.
        let keep = match to {
            RevertTo::Version(v) => timeline
                .iter()
                .position(|m| m.version() > v.as_str())
                .unwrap_or(timeline.len()),
            RevertTo::Last(n) => {
                let end = |list: &[usize], held: usize| {
                    if held == 0 {
                        0
                    } else {
                        list[held - 1] + 1
                    }
                };
                // Every tenant schema at one version, else `--to` says
                // where to go.
                let tenant_list = &tenant_list;
                let mut by_held: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
                for (schema, _, held) in &schemas[1..] {
                    by_held.entry(*held).or_default().push(schema.as_str());
                }
                if by_held.len() > 1 {
                    let most = by_held
                        .iter()
                        .max_by_key(|(held, s)| (s.len(), *held))
                        .map(|(held, _)| *held)
                        .unwrap_or(0);
                    // A tie has no "rest": every schema is listed.
                    let largest = by_held.values().map(Vec::len).max().unwrap_or(0);
                    let tie = by_held.values().filter(|s| s.len() == largest).count() > 1;
                    let others = by_held
                        .iter()
                        .filter(|(held, _)| tie || **held != most)
                        .flat_map(|(held, s)| {
                            s.iter().map(move |s| {
                                format!("`{s}` at {}", version_name(timeline, tenant_list, *held))
                            })
                        })
                        .collect();
                    return Err(MigrateError::RevertOutOfStep {
                        detail: format!(
                            "tenant schemas are at different versions (most at {}), so the last \
                             {n} migration(s) mean different things in each",
                            version_name(timeline, tenant_list, most)
                        ),
                        schemas: others,
                        fix: "finish an interrupted revert with `appschema-cli migrate --revert --to \
                              VERSION`, or bring every schema to the head with `appschema-cli migrate`"
                            .into(),
                    });
                }
                let tenants_held = by_held.keys().next().copied();
                let mut at = end(&shared_list, shared_held);
                if let Some(held) = tenants_held {
                    at = at.max(end(tenant_list, held));
                }
                // Everything before `at` must be applied everywhere (the
                // timeline is a prefix), else a migrate stopped part way.
                let short: Vec<String> = schemas
                    .iter()
                    .filter(|(_, list, held)| list.iter().take_while(|&&i| i < at).count() != *held)
                    .map(|(schema, list, held)| {
                        format!("`{schema}` at {}", version_name(timeline, list, *held))
                    })
                    .collect();
                if !short.is_empty() {
                    return Err(MigrateError::RevertOutOfStep {
                        detail: format!(
                            "a migrate stopped part way: the database reached {} but these schemas \
                             did not",
                            timeline[at - 1].name()
                        ),
                        schemas: short,
                        fix: "run `appschema-cli migrate` to finish it, or revert with \
                              `appschema-cli migrate --revert --to VERSION`"
                            .into(),
                    });
                }
                at.checked_sub(*n).ok_or(MigrateError::RevertTooFar {
                    asked: *n,
                    applied: at,
                })?
            }
        };
        // No schema may be behind where the revert ends.
        let behind: Vec<String> = schemas
            .iter()
            .filter(|(_, list, held)| list.iter().take_while(|&&i| i < keep).count() > *held)
            .map(|(schema, list, held)| {
                format!("`{schema}` at {}", version_name(timeline, list, *held))
            })
            .collect();
        if !behind.is_empty() {
            return Err(MigrateError::RevertOutOfStep {
                detail: format!(
                    "these schemas have not reached {}, where the revert ends",
                    if keep == 0 {
                        "the start".to_string()
                    } else {
                        timeline[keep - 1].name().to_string()
                    }
                ),
                schemas: behind,
                fix: "bring them forward with `appschema-cli migrate` first (or revert further)"
                    .into(),
            });
        }
        let mut undo = BTreeMap::new();
        let mut used = BTreeSet::new();
        for (schema, list, held) in &schemas {
            let from = list.iter().take_while(|&&i| i < keep).count();
            let ms: Vec<&Migration> = list[from..*held]
                .iter()
                .rev()
                .map(|&i| &timeline[i])
                .collect();
            used.extend(list[from..*held].iter().copied());
            if !ms.is_empty() {
                undo.insert(schema.clone(), ms);
            }
        }
        let missing: Vec<String> = used
            .iter()
            .map(|&i| &timeline[i])
            .filter(|m| !has_down(m))
            .map(|m| m.name().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(MigrateError::MissingDown(missing));
        }
        if let Some(m) = used
            .iter()
            .map(|&i| &timeline[i])
            .find(|m| !m.run_in_transaction())
        {
            return Err(MigrateError::DownOutsideTransaction(m.name().to_string()));
        }
        Ok(Plan { undo })
    }
}

impl Plan<'_> {
    fn undoes(&self, schema: &str, m: &Migration) -> bool {
        self.undo
            .get(schema)
            .is_some_and(|ms| ms.iter().any(|u| u.version() == m.version()))
    }
}

/// The name of the last migration of `list` a schema holding its first
/// `held` has, for messages.
fn version_name(timeline: &[Migration], list: &[usize], held: usize) -> String {
    match held {
        0 => "no migration".to_string(),
        n => timeline[list[n - 1]].name().to_string(),
    }
}

/// Whether `m` has a `down.sql` holding a statement (diesel's generated
/// `-- This file should undo anything in up.sql` alone is none).
fn has_down(m: &Migration) -> bool {
    m.down_sql()
        .is_some_and(|sql| crate::sqltok::split_statements(sql).map_or(true, |s| !s.is_empty()))
}

/// `sql` without its top-level `DROP EXTENSION` statements: what a
/// `down.sql` runs in a tenant schema. An extension is database-wide (a
/// tenant's `CREATE EXTENSION` installed it once, in the shared schema: see
/// the `extensions` module), so the first tenant's down would drop it from
/// under every other tenant, or fail on their objects that use it, and the
/// next tenant's would find it gone. It stays installed; `migrate` finds it
/// there when it applies the migration again. SQL the lexer cannot read is
/// left as it is (the server reports it).
fn without_drop_extension(sql: &str) -> Cow<'_, str> {
    use crate::sqltok::{self, Kind};
    edit_statements(sql, |statement| {
        let tokens = sqltok::tokenize(statement).ok()?;
        let mut words = tokens
            .iter()
            .filter(|t| !matches!(t.kind, Kind::Space | Kind::LineComment | Kind::BlockComment));
        let (drop, extension) = (words.next()?, words.next()?);
        (sqltok::ident_is(drop, "drop") && sqltok::ident_is(extension, "extension"))
            .then(String::new)
    })
}

/// Deletes, before any `down.sql` runs, the recorded heads of the schemas
/// the revert touches (a record claiming a version about to be undone
/// would make `migrate` skip it), and the templates stored for an undone
/// isolated version or a later one (a tenant built from one would be ahead
/// of the others).
fn forget_heads_and_templates(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
) -> Result<(), MigrateError> {
    if heads::heads_installed(conn)? {
        let names: Vec<String> = plan.undo.keys().map(|s| quote_literal(s)).collect();
        conn.batch_execute(&format!(
            "DELETE FROM {} WHERE schema_name IN ({})",
            heads::HEADS_TABLE,
            names.join(", ")
        ))?;
    }
    let oldest_isolated = plan
        .undo
        .values()
        .flatten()
        .filter(|m| m.scope().in_tenants())
        .map(|m| m.version())
        .min();
    if let Some(version) = oldest_isolated {
        conn.batch_execute(&format!(
            "DO $appschema$ BEGIN
               IF to_regclass('public.appschema_templates') IS NOT NULL THEN
                 DELETE FROM public.appschema_templates WHERE version COLLATE \"C\" >= {} COLLATE \"C\";
               END IF;
             END $appschema$",
            quote_literal(version)
        ))?;
    }
    Ok(())
}

/// Where [`revert_one`] runs a `down.sql`.
#[derive(Debug, Clone, Copy)]
struct RevertTarget<'a> {
    schema: &'a str,
    /// The `search_path` while the `down.sql` runs.
    path: &'a str,
    /// The shared schema (where a `CREATE EXTENSION` installs).
    shared: &'a str,
    /// On Citus: statement by statement.
    one_by_one: bool,
    /// A tenant schema (an isolated step): top-level `DROP EXTENSION`s are
    /// left out ([`without_drop_extension`]).
    tenant: bool,
}

/// The batch undoing `m` in one schema: lock, tracking row deleted (a
/// refusal cast when it was already gone: another run reverted it while we
/// waited for the lock), `down.sql`, commit. The row goes first so the
/// `down.sql` never runs twice.
fn revert_batch(target: RevertTarget<'_>, m: &Migration, down: &str, try_lock: bool) -> String {
    format!(
        "{start}\
         WITH gone AS (DELETE FROM {qs}.{TRACKING_TABLE} WHERE version = {v} RETURNING 1) \
         SELECT CASE WHEN pg_catalog.count(*) = 1 THEN 0 \
         ELSE CAST('appschema:reverted ' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid() AS pg_catalog.int4) END FROM gone;\n\
         {sql}\n;\nCOMMIT;",
        start = locked_transaction_start(target.schema, target.path, try_lock),
        qs = quote_ident(target.schema),
        v = quote_literal(m.version()),
        sql = in_shared_schema(down, target.shared),
    )
}

/// Undoes `m` in one schema. `Ok(false)`: another run had reverted it.
/// `Err`: PostgreSQL's message (the transaction rolled back: the schema
/// keeps `m`).
fn revert_one(
    conn: &mut PgConnection,
    target: RevertTarget<'_>,
    m: &Migration,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<bool, String> {
    // Checked when planning; a set without one never gets here.
    let down = m.down_sql().unwrap_or_default();
    let down = if target.tenant {
        without_drop_extension(down)
    } else {
        Cow::Borrowed(down)
    };
    run_locked(
        conn,
        target.schema,
        true,
        on_event,
        |conn, try_lock| {
            execute_script(
                conn,
                &revert_batch(target, m, &down, try_lock),
                target.one_by_one,
            )
        },
        |_, message| message.contains("appschema:reverted"),
    )
}

#[cfg(test)]
mod tests {
    use super::without_drop_extension;

    #[test]
    fn tenant_downs_leave_out_only_top_level_drop_extension_statements() {
        let down = "DROP TABLE secret;\n-- gone\ndrop  extension pgcrypto;\n\
                    DO $$ BEGIN EXECUTE 'DROP EXTENSION ltree'; END $$;\n\
                    DROP EXTENSION IF EXISTS \"pg_trgm\" CASCADE";
        assert_eq!(
            without_drop_extension(down),
            "DROP TABLE secret;\n;\n\
             DO $$ BEGIN EXECUTE 'DROP EXTENSION ltree'; END $$;\n"
        );
        let plain = "DROP TABLE orders; COMMENT ON TABLE x IS 'drop extension'";
        assert!(matches!(
            without_drop_extension(plain),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
