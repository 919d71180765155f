//! Running the timeline: shared steps on one connection, isolated steps
//! spread over workers, each schema's pending migrations in order.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use diesel::prelude::*;

use super::applied;
use super::apply::{apply, ApplyTarget};
use super::heads;
use super::{Event, Failure, MigrateError, Migrator, Report, Target};
use crate::name::SchemaName;
use crate::Scope;
use crate::{Migration, Step};

impl Migrator {
    /// The timeline's steps in order (see [`Migrator::migrate`]).
    pub(super) fn run_steps(
        &self,
        steps: &[Step<'_>],
        targets: &[Target],
        by_schema: &HashMap<&str, &Target>,
        applied: &mut applied::Applied,
        conns: &mut Vec<PgConnection>,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Report, MigrateError> {
        let mut report = Report::default();
        let mut migrated: BTreeSet<String> = BTreeSet::new();
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Shared(m) => {
                    let schema = &self.shared_schema;
                    if applied.get(schema).is_some_and(|v| v.contains(m.version())) {
                        continue;
                    }
                    on_event(Event::StepStarted {
                        scope: Scope::Shared,
                        migrations: vec![m.name().to_string()],
                        schemas: 1,
                    });
                    let target = ApplyTarget {
                        schema,
                        path: &self.shared_path(None),
                        shared: schema,
                        tracked: applied.is_tracked(schema),
                        one_by_one: self.on_citus(),
                    };
                    let applied = apply(&mut conns[0], target, m, on_event).and_then(|now| {
                        // On Citus, the tables isolated migrations will
                        // reference become reference tables as soon as
                        // they exist.
                        if now {
                            self.ensure_reference_tables(&mut conns[0])
                                .map_err(|e| e.to_string())?;
                        }
                        Ok(now)
                    });
                    match applied {
                        Ok(applied_now) => {
                            if applied_now {
                                report.migrations_applied += 1;
                                migrated.insert(schema.clone());
                            }
                            on_event(Event::schema_finished(
                                schema,
                                usize::from(applied_now),
                                None,
                            ));
                        }
                        Err(message) => {
                            let failure = Failure::of(schema, m, message);
                            on_event(Event::schema_finished(schema, 0, Some(&failure)));
                            report.failures.push(failure);
                        }
                    }
                }
                Step::Isolated(run) => {
                    let mut dispatch = Dispatch::new(run, targets, by_schema, applied);
                    if !dispatch.has_work()? {
                        continue;
                    }
                    on_event(Event::StepStarted {
                        scope: Scope::Isolated,
                        migrations: dispatch.pending_names(),
                        schemas: dispatch.upper_bound(),
                    });
                    let workers = self.jobs.min(dispatch.upper_bound());
                    let dispatch = Mutex::new(dispatch);
                    let next_work = || {
                        dispatch
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .next(on_event)
                    };
                    let outcome = self.run_isolated(&next_work, workers, conns, on_event)?;
                    report.migrations_applied += outcome.applied;
                    migrated.extend(outcome.migrated);
                    report.failures.extend(outcome.failures);
                    if let Some(e) = dispatch
                        .into_inner()
                        .unwrap_or_else(|e| e.into_inner())
                        .error
                    {
                        return Err(e);
                    }
                }
            }
            if !report.failures.is_empty() {
                report.steps_skipped = steps.len() - i - 1;
                break;
            }
        }
        report.schemas_migrated = migrated.len();
        self.run_after_migrate_hooks(&migrated, by_schema, &mut conns[0], &mut report);
        Ok(report)
    }

    /// The `after_migrate` hooks of every tenant in `migrated`, each in a
    /// transaction of its own; failures go to `report`.
    fn run_after_migrate_hooks(
        &self,
        migrated: &BTreeSet<String>,
        by_schema: &HashMap<&str, &Target>,
        conn: &mut PgConnection,
        report: &mut Report,
    ) {
        if self.hooks.is_empty() {
            return;
        }
        for schema in migrated {
            let Some(public_name) = by_schema
                .get(schema.as_str())
                .and_then(|t| t.tenant.as_ref())
            else {
                continue;
            };
            let outcome = crate::name::PublicName::new(public_name)
                .map_err(crate::provision::ProvisionError::from)
                .and_then(|name| {
                    conn.transaction(|conn| {
                        let tenant = crate::provision::lock_tenant_for_hooks(conn, &name)?;
                        self.hooks
                            .run(conn, &tenant, crate::provision::HookStage::AfterMigrate)
                    })
                });
            if let Err(e) = outcome {
                let hook = match &e {
                    crate::provision::ProvisionError::Hook { hook, .. } => hook.clone(),
                    _ => "hooks".to_string(),
                };
                report.failures.push(Failure {
                    schema: schema.clone(),
                    migration: format!("hook {hook}"),
                    message: e.to_string(),
                });
            }
        }
    }

    pub(super) fn shared_path(&self, tenant: Option<&SchemaName>) -> String {
        match tenant {
            Some(t) => self.path.for_tenant(t),
            None => self.path.shared_only(),
        }
    }

    /// Runs the work `next_work` hands out on `workers` workers (see
    /// [`crate::workers::run_workers`]); every connection is left in
    /// `conns` afterwards, for the next step. The heads of the schemas
    /// brought to the step's end are recorded as they commit, a statement
    /// per [`heads::PER_STATEMENT`] of them (by whichever worker fills the
    /// batch), the rest at the end of the step.
    fn run_isolated<'w>(
        &self,
        next_work: &(dyn Fn() -> Option<Work<'w>> + Sync),
        workers: usize,
        conns: &mut Vec<PgConnection>,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Outcome, MigrateError> {
        let outcome = Mutex::new(Outcome::default());
        let connect = || self.connect();
        let handle = |conn: &mut PgConnection, work: Work<'w>| -> Result<(), MigrateError> {
            let path = self.shared_path(Some(&work.0.schema));
            let done = migrate_one(
                conn,
                work,
                (&path, &self.shared_schema),
                (self.on_citus(), self.record_heads),
                on_event,
            );
            // A schema that failed because the connection was lost (a
            // restart, a failover, a terminated backend) is rolled back and
            // resumed by the next run; the worker goes on with the other
            // schemas on a new connection.
            if done.failure.is_some() && crate::connection::lost_after_failure(conn) {
                *conn = self.connect()?;
            }
            let full = {
                let mut outcome = outcome.lock().unwrap_or_else(|e| e.into_inner());
                outcome.record(done);
                if outcome.heads.len() >= heads::PER_STATEMENT {
                    std::mem::take(&mut outcome.heads)
                } else {
                    Vec::new()
                }
            };
            heads::write(conn, &full)?;
            Ok(())
        };
        crate::workers::run_workers(workers, conns, &connect, next_work, &handle)?;
        let mut outcome = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
        heads::write(&mut conns[0], &std::mem::take(&mut outcome.heads))?;
        Ok(outcome)
    }
}

/// Applies one schema's pending migrations of a step in order, stopping at
/// the first failure, and reports the schema's end (done or failed). With
/// `record`, a schema that reached the step's end comes back with its head
/// to record: the versions it was read to hold plus those committed since
/// (see the `heads` module).
fn migrate_one(
    conn: &mut PgConnection,
    (target, pending, done): Work<'_>,
    (path, shared): (&str, &str),
    (one_by_one, record): (bool, bool),
    on_event: &(dyn Fn(Event) + Sync),
) -> SchemaOutcome {
    let schema = target.schema.as_str();
    let mut step = crate::observe::migrate_schema(schema, target.tenant.as_deref());
    let mut applied = 0;
    let mut failure = None;
    let mut tracked = done.is_some();
    let mut holds = done.unwrap_or_default();
    for m in pending {
        let at = ApplyTarget {
            schema,
            path,
            shared,
            tracked,
            one_by_one,
        };
        match apply(conn, at, m, on_event) {
            Ok(true) => {
                applied += 1;
                tracked = true;
                holds.insert(m.version().to_string());
            }
            // Another run committed it: in the table all the same.
            Ok(false) => {
                tracked = true;
                holds.insert(m.version().to_string());
            }
            Err(message) => {
                step.failed();
                failure = Some(Failure::of(schema, m, message));
                break;
            }
        }
    }
    on_event(Event::schema_finished(schema, applied, failure.as_ref()));
    let head = (record && failure.is_none()).then(|| heads::Record::holding(schema, &holds));
    SchemaOutcome {
        schema: schema.to_string(),
        applied,
        failure,
        head,
    }
}

/// What [`migrate_one`] did to one schema.
struct SchemaOutcome {
    schema: String,
    applied: usize,
    failure: Option<Failure>,
    /// The head to record, when it reached the step's end.
    head: Option<heads::Record>,
}

/// One schema's work in an isolated step: the schema, the step's
/// migrations it lacks (in order), and the versions its tracking table was
/// read to hold (`None`: it has no tracking table).
type Work<'a> = (&'a Target, Vec<&'a Migration>, Option<applied::Versions>);

/// The tenant schemas of `targets` to read: those that have a tracking
/// table and no trusted recorded head (`current`), in order.
pub(super) fn tracked_targets<'t>(
    targets: &'t [Target],
    tracked: &BTreeSet<String>,
    current: &BTreeSet<String>,
) -> Vec<&'t str> {
    targets
        .iter()
        .map(|t| t.schema.as_str())
        .filter(|s| tracked.contains(*s) && !current.contains(*s))
        .collect()
}

/// Hands out an isolated step's work to the workers: first the schemas
/// whose versions are known (untracked ones lack everything), then each
/// schema found behind as the streamed read ([`applied::Applied`]) brings
/// its chunk in.
struct Dispatch<'a, 'r> {
    run: &'a [Migration],
    by_schema: &'a HashMap<&'a str, &'a Target>,
    applied: &'r mut applied::Applied,
    queue: VecDeque<Work<'a>>,
    /// `StepStarted` was sent: schemas found up to date from now on were
    /// counted in its bound and are reported done.
    started: bool,
    /// Why the read stopped, if it failed.
    error: Option<MigrateError>,
}

impl<'a, 'r> Dispatch<'a, 'r> {
    fn new(
        run: &'a [Migration],
        targets: &'a [Target],
        by_schema: &'a HashMap<&'a str, &'a Target>,
        applied: &'r mut applied::Applied,
    ) -> Dispatch<'a, 'r> {
        let mut queue = VecDeque::new();
        for t in targets {
            let schema = t.schema.as_str();
            if !applied.is_tracked(schema) {
                queue.push_back((t, run.iter().collect(), None));
            } else if let Some(done) = applied.get(schema) {
                let pending = pending_of(run, done);
                if !pending.is_empty() {
                    queue.push_back((t, pending, Some(done.clone())));
                }
            }
        }
        Dispatch {
            run,
            by_schema,
            applied,
            queue,
            started: false,
            error: None,
        }
    }

    /// Reads on until some schema has work; `false` when none has.
    fn has_work(&mut self) -> Result<bool, MigrateError> {
        while self.queue.is_empty() {
            if !self.pull(&|_| {})? {
                return Ok(false);
            }
        }
        self.started = true;
        Ok(true)
    }

    /// The step's migrations pending in some schema queued so far, in order
    /// (schemas still being read are usually at the same version).
    fn pending_names(&self) -> Vec<String> {
        self.run
            .iter()
            .filter(|m| {
                self.queue
                    .iter()
                    .any(|(_, pending, _)| pending.iter().any(|p| p.version() == m.version()))
            })
            .map(|m| m.name().to_string())
            .collect()
    }

    /// Schemas that may have work: those queued and those not read yet.
    fn upper_bound(&self) -> usize {
        self.queue.len() + self.applied.unread()
    }

    /// The next schema to migrate; `None` when the step has no more (or the
    /// read failed: see `error`).
    fn next(&mut self, on_event: &(dyn Fn(Event) + Sync)) -> Option<Work<'a>> {
        loop {
            if let Some(work) = self.queue.pop_front() {
                return Some(work);
            }
            match self.pull(on_event) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            }
        }
    }

    /// Takes in the next chunk of the read; `false` when all has arrived.
    fn pull(&mut self, on_event: &(dyn Fn(Event) + Sync)) -> Result<bool, MigrateError> {
        let Some(names) = self.applied.next_chunk()? else {
            return Ok(false);
        };
        for name in names {
            let (Some(&target), Some(done)) =
                (self.by_schema.get(name.as_str()), self.applied.get(&name))
            else {
                continue;
            };
            let pending = pending_of(self.run, done);
            if !pending.is_empty() {
                self.queue.push_back((target, pending, Some(done.clone())));
            } else if self.started {
                on_event(Event::SchemaDone {
                    schema: name,
                    applied: 0,
                });
            }
        }
        Ok(true)
    }
}

/// The migrations of `run` not in `done`, in order.
fn pending_of<'a>(run: &'a [Migration], done: &applied::Versions) -> Vec<&'a Migration> {
    run.iter().filter(|m| !done.contains(m.version())).collect()
}

#[derive(Default)]
struct Outcome {
    applied: usize,
    migrated: Vec<String>,
    failures: Vec<Failure>,
    /// Heads not recorded yet.
    heads: Vec<heads::Record>,
}

impl Outcome {
    fn record(&mut self, done: SchemaOutcome) {
        self.heads.extend(done.head);
        self.applied += done.applied;
        if done.applied > 0 {
            self.migrated.push(done.schema);
        }
        self.failures.extend(done.failure);
    }
}
