//! The executor: applies a [`MigrationSet`] to the shared schema and every
//! tenant schema.
//!
//! - **Tracking**: each schema has its own `__diesel_schema_migrations`
//!   (diesel's table and format). A migration and its tracking row commit in
//!   one transaction per schema (unless it sets `run_in_transaction = false`),
//!   so a killed run leaves no schema half-migrated and the next run resumes.
//! - **Order**: shared migrations run once in the shared schema; a run of
//!   consecutive isolated migrations is applied to every tenant schema, each
//!   schema's run in order, before the next shared migration starts.
//! - **Parallel**: `jobs` workers, each with its own connection. A failing
//!   schema stops only itself: every failure is reported, and no later step
//!   starts (the timeline's order would break for the failed schema).
//! - **Concurrency**: a transaction-scoped advisory lock per schema; a second
//!   run waits for the first, saying so through [`Event::Waiting`].
//! - **Cheap when there is nothing to do**: the applied versions of all
//!   schemas are read in a few queries (one per 50 schemas), not per tenant;
//!   `migrate` streams that read, so workers start on the first schemas
//!   found behind while the rest is still being read (see [`applied`]).
//!
//! Which schemas: appschema's own shared tables first ([`registry::install`]),
//! the shared schema, then every tenant of the registry, then every schema
//! named by the [`SchemaSource`]s added with [`Migrator::schema_source`]
//! (spares and other schemas appschema keeps).

mod applied;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::migration::{Migration, MigrationSet, Step};
use crate::name::{quote_ident, PublicName, SchemaName};
use crate::registry;
use crate::Scope;

/// diesel's tracking table, created in every migrated schema.
pub const TRACKING_TABLE: &str = "__diesel_schema_migrations";

/// Why a run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// A query of appschema's own failed.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// A `--tenant` name is not in the registry.
    #[error("no tenant answers to `{0}`: check the name with `appschema-cli status`")]
    UnknownTenant(String),
    /// A schema source returned an error.
    #[error("schema source `{name}` failed: {source}")]
    SchemaSource {
        /// The source's name.
        name: String,
        /// The error.
        source: diesel::result::Error,
    },
    /// A migration that must run outside a transaction was asked to run
    /// inside the caller's transaction.
    #[error(
        "migration {0} sets `run_in_transaction = false` and cannot run inside the caller's \
         transaction: make it transactional (e.g. drop CONCURRENTLY for a new table)"
    )]
    NotTransactional(String),
    /// A migration failed in one schema (single-schema API).
    #[error("migration {version} failed in schema `{schema}`: {message}")]
    Failed {
        /// The schema.
        schema: String,
        /// The migration's version.
        version: String,
        /// PostgreSQL's message.
        message: String,
    },
    /// A reader of applied versions stopped without an error of its own
    /// (its thread died); the run stopped without applying to the schemas
    /// not read.
    #[error("reading the applied versions stopped with {0} schema(s) unread: run migrate again")]
    ReadInterrupted(usize),
}

/// A migration that failed in one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The schema.
    pub schema: String,
    /// The migration's directory name.
    pub migration: String,
    /// PostgreSQL's message.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema `{}`, migration {}: {}",
            self.schema, self.migration, self.message
        )
    }
}

/// What happened during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Schemas that had something applied.
    pub schemas_migrated: usize,
    /// (schema, migration) pairs applied.
    pub migrations_applied: usize,
    /// Every failure, in the order seen.
    pub failures: Vec<Failure>,
    /// Steps not started because an earlier step failed.
    pub steps_skipped: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Whether everything pending was applied.
    pub fn is_success(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Progress of a run, for progress bars and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A step starts. For an isolated step, `schemas` is an upper bound
    /// while the applied versions are still being read: each schema it
    /// counts is reported once, by [`Event::SchemaDone`] (with `applied: 0`
    /// for one found up to date) or [`Event::SchemaFailed`].
    StepStarted {
        /// `shared` or `isolated`.
        scope: Scope,
        /// The migrations of the step, by name.
        migrations: Vec<String>,
        /// Schemas that may have something to apply in this step.
        schemas: usize,
    },
    /// A schema finished its part of the step.
    SchemaDone {
        /// The schema.
        schema: String,
        /// Migrations applied to it.
        applied: usize,
    },
    /// A schema failed (it stops; others go on).
    SchemaFailed(Failure),
    /// Another run holds the schema's lock; this run waits for it.
    Waiting {
        /// The schema.
        schema: String,
    },
}

/// What one schema has applied and has pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The schema.
    pub schema: String,
    /// The tenant's public name; `None` for the shared schema and extra schemas.
    pub tenant: Option<String>,
    /// Which migrations apply to it.
    pub scope: Scope,
    /// Versions recorded in its tracking table, in order.
    pub applied: Vec<String>,
    /// Migrations of its scope not applied yet, by name, in order.
    pub pending: Vec<String>,
}

/// A schema to migrate with the isolated migrations, and who it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The schema.
    pub schema: SchemaName,
    /// The tenant's public name, for tenants.
    pub tenant: Option<String>,
}

/// Extra schemas `migrate` keeps at the isolated head besides the
/// registry's tenants (spares, templates). Plug one in with
/// [`Migrator::schema_source`].
pub type SchemaSource =
    Box<dyn Fn(&mut PgConnection) -> QueryResult<Vec<SchemaName>> + Send + Sync>;

/// One planned application: a migration and the schemas it will run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMigration {
    /// The migration's directory name.
    pub migration: String,
    /// Its scope.
    pub scope: Scope,
    /// The schemas, in the order they are handed to workers.
    pub schemas: Vec<String>,
}

/// Runs migrations; see the [module docs](self).
///
/// ```no_run
/// use appschema_core::migrate::Migrator;
/// use appschema_core::migration::MigrationSet;
/// # let set = MigrationSet::default();
/// let report = Migrator::new("postgres:///app").jobs(4).migrate(&set, &|_| {}).unwrap();
/// assert!(report.is_success());
/// ```
pub struct Migrator {
    database_url: String,
    jobs: usize,
    shared_schema: String,
    tenants: Option<Vec<PublicName>>,
    sources: Vec<(String, SchemaSource)>,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("jobs", &self.jobs)
            .field("shared_schema", &self.shared_schema)
            .field("tenants", &self.tenants)
            .field(
                "sources",
                &self.sources.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Migrator {
    /// A migrator for the database at `database_url`. Defaults: jobs = number
    /// of CPUs, shared schema `public`, every tenant, no extra schema source.
    pub fn new(database_url: impl Into<String>) -> Migrator {
        Migrator {
            database_url: database_url.into(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shared_schema: crate::schema_source::DEFAULT_SHARED_SCHEMA.to_string(),
            tenants: None,
            sources: Vec::new(),
        }
    }

    /// Parallel workers (each with its own connection) for isolated steps.
    /// Default: the number of CPUs. At least 1. While it reads which
    /// versions each schema has applied, `migrate` also holds up to
    /// ⌈jobs / 2⌉ reader connections (one per 400 schemas), so plan for up
    /// to `jobs + ⌈jobs / 2⌉` connections.
    pub fn jobs(mut self, jobs: usize) -> Migrator {
        self.jobs = jobs.max(1);
        self
    }

    /// Limits the tenant schemas migrated to these tenants (by any of their
    /// public names). Shared migrations still run. Default: every tenant.
    pub fn only_tenants(mut self, tenants: Vec<PublicName>) -> Migrator {
        self.tenants = Some(tenants);
        self
    }

    /// Adds a source of extra schemas kept at the isolated head (provisioning
    /// adds its spares here). `name` appears in errors. Default: none.
    pub fn schema_source(mut self, name: impl Into<String>, source: SchemaSource) -> Migrator {
        self.sources.push((name.into(), source));
        self
    }

    fn connect(&self) -> Result<PgConnection, MigrateError> {
        let mut conn = PgConnection::establish(&self.database_url)?;
        conn.batch_execute("SET client_min_messages TO warning")?;
        Ok(conn)
    }

    /// The tenant schemas (and extra schemas) isolated migrations go to.
    pub fn targets(&self, conn: &mut PgConnection) -> Result<Vec<Target>, MigrateError> {
        let mut targets = Vec::new();
        if registry_installed(conn)? {
            match &self.tenants {
                None => targets.extend(registry::list(conn)?.into_iter().map(|t| Target {
                    schema: t.schema_name,
                    tenant: Some(t.public_name),
                })),
                Some(names) => {
                    for name in names {
                        let t = registry::find(conn, name)?.ok_or_else(|| {
                            MigrateError::UnknownTenant(name.as_str().to_string())
                        })?;
                        targets.push(Target {
                            schema: t.schema_name,
                            tenant: Some(t.public_name),
                        });
                    }
                }
            }
        } else if let Some(name) = self.tenants.as_ref().and_then(|t| t.first()) {
            return Err(MigrateError::UnknownTenant(name.as_str().to_string()));
        }
        if self.tenants.is_none() {
            for (name, source) in &self.sources {
                let schemas = source(conn).map_err(|source| MigrateError::SchemaSource {
                    name: name.clone(),
                    source,
                })?;
                targets.extend(schemas.into_iter().map(|schema| Target {
                    schema,
                    tenant: None,
                }));
            }
        }
        let mut seen = BTreeSet::new();
        targets.retain(|t| seen.insert(t.schema.clone()));
        Ok(targets)
    }

    /// What each schema has applied and has pending; tenants behind the
    /// head first.
    pub fn status(&self, set: &MigrationSet) -> Result<Vec<SchemaStatus>, MigrateError> {
        let mut conn = self.connect()?;
        let targets = self.targets(&mut conn)?;
        let applied = self.applied_versions(&mut conn, &targets)?;
        let mut out = Vec::with_capacity(targets.len() + 1);
        let shared_applied = applied
            .get(&self.shared_schema)
            .cloned()
            .unwrap_or_default();
        out.push(status_of(
            self.shared_schema.clone(),
            None,
            Scope::Shared,
            set,
            shared_applied,
        ));
        for t in targets {
            let a = applied.get(t.schema.as_str()).cloned().unwrap_or_default();
            out.push(status_of(
                t.schema.as_str().to_string(),
                t.tenant,
                Scope::Isolated,
                set,
                a,
            ));
        }
        out.sort_by_key(|s| (s.pending.is_empty(), s.scope != Scope::Shared));
        Ok(out)
    }

    /// Reads every schema's applied versions (the shared schema's and
    /// `targets`'): one query finds which schemas have a tracking table,
    /// then one query per 50 of them, by up to `jobs` reader connections.
    fn applied_versions(
        &self,
        conn: &mut PgConnection,
        targets: &[Target],
    ) -> Result<HashMap<String, applied::Versions>, MigrateError> {
        let tracked = applied::tracked_schemas(conn)?;
        let mut known = HashMap::new();
        if tracked.contains(&self.shared_schema) {
            known.extend(applied::read_chunk(conn, &[&self.shared_schema])?);
        }
        let schemas = tracked_targets(targets, &tracked);
        let chunks: Vec<&[&str]> = schemas.chunks(applied::CHUNK).collect();
        let connect = || self.connect();
        std::thread::scope(|scope| {
            let readers = applied::readers_for(chunks.len(), self.jobs);
            let rx = applied::spawn_readers(scope, &connect, &chunks, readers);
            applied::Applied::new(tracked.clone(), known, rx, schemas.len()).finish()
        })
    }

    /// What a run would do, without doing it: each pending migration and the
    /// schemas it would run in, in order. Installs nothing.
    pub fn plan(&self, set: &MigrationSet) -> Result<Vec<PlannedMigration>, MigrateError> {
        let mut conn = self.connect()?;
        let targets = self.targets(&mut conn)?;
        let applied = self.applied_versions(&mut conn, &targets)?;
        let empty = BTreeSet::new();
        let mut out = Vec::new();
        for m in set.migrations() {
            let schemas: Vec<String> = match m.scope() {
                Scope::Shared => vec![self.shared_schema.clone()],
                Scope::Isolated => targets
                    .iter()
                    .map(|t| t.schema.as_str().to_string())
                    .collect(),
            }
            .into_iter()
            .filter(|s| !applied.get(s).unwrap_or(&empty).contains(m.version()))
            .collect();
            if !schemas.is_empty() {
                out.push(PlannedMigration {
                    migration: m.name().to_string(),
                    scope: m.scope(),
                    schemas,
                });
            }
        }
        Ok(out)
    }

    /// Applies everything pending: appschema's own tables, then the
    /// timeline's steps in order. `on_event` sees progress (from worker
    /// threads). Failures of migrations are in the [`Report`]; `Err` means
    /// the run could not start (connection, registry).
    pub fn migrate(
        &self,
        set: &MigrationSet,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Report, MigrateError> {
        let started = Instant::now();
        let mut conns = vec![self.connect()?];
        registry::install(&mut conns[0])?;
        let targets = self.targets(&mut conns[0])?;
        let tracked = applied::tracked_schemas(&mut conns[0])?;
        let mut known = HashMap::new();
        if tracked.contains(&self.shared_schema) {
            known.extend(applied::read_chunk(&mut conns[0], &[&self.shared_schema])?);
        }
        let steps = set.steps();
        // Tenant schemas are read only if some step needs them, by reader
        // connections of their own while the steps run (half as many as the
        // workers: reading costs the server less than migrating).
        let schemas = if steps.iter().any(|s| matches!(s, Step::Isolated(_))) {
            tracked_targets(&targets, &tracked)
        } else {
            Vec::new()
        };
        let chunks: Vec<&[&str]> = schemas.chunks(applied::CHUNK).collect();
        let by_schema: HashMap<&str, &Target> =
            targets.iter().map(|t| (t.schema.as_str(), t)).collect();
        let connect = || self.connect();
        std::thread::scope(|scope| {
            let readers = applied::readers_for(chunks.len(), self.jobs.div_ceil(2));
            let rx = applied::spawn_readers(scope, &connect, &chunks, readers);
            let mut applied = applied::Applied::new(tracked, known, rx, schemas.len());
            self.run_steps(
                &steps,
                &targets,
                &by_schema,
                &mut applied,
                &mut conns,
                on_event,
            )
        })
        .map(|mut report| {
            report.elapsed = started.elapsed();
            report
        })
    }

    /// The timeline's steps in order (see [`Migrator::migrate`]).
    fn run_steps(
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
                        tracked: applied.is_tracked(schema),
                    };
                    match apply(&mut conns[0], target, m, on_event) {
                        Ok(applied_now) => {
                            if applied_now {
                                report.migrations_applied += 1;
                                migrated.insert(schema.clone());
                            }
                            on_event(Event::SchemaDone {
                                schema: schema.clone(),
                                applied: usize::from(applied_now),
                            });
                        }
                        Err(message) => {
                            let failure = Failure {
                                schema: schema.clone(),
                                migration: m.name().to_string(),
                                message,
                            };
                            on_event(Event::SchemaFailed(failure.clone()));
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
                        migrations: run.iter().map(|m| m.name().to_string()).collect(),
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
        Ok(report)
    }

    fn shared_path(&self, tenant: Option<&SchemaName>) -> String {
        match tenant {
            Some(t) => format!("{}, {}", t.quoted(), quote_ident(&self.shared_schema)),
            None => quote_ident(&self.shared_schema),
        }
    }

    /// Runs the work `next_work` hands out on `workers` workers (at least
    /// one), each with a connection from `conns`; a worker without one opens
    /// its own, in its own thread, so the connects of a wide run overlap
    /// each other and the first worker's work. Every connection is left in
    /// `conns` afterwards, for the next step.
    ///
    /// A worker that cannot connect takes no work; the run fails only if no
    /// worker could connect (the others do the whole step otherwise).
    fn run_isolated<'w>(
        &self,
        next_work: &(dyn Fn() -> Option<Work<'w>> + Sync),
        workers: usize,
        conns: &mut Vec<PgConnection>,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Outcome, MigrateError> {
        let outcome = Mutex::new(Outcome::default());
        let workers = workers.max(1);
        let mut slots: Vec<Option<PgConnection>> = conns.drain(..).map(Some).collect();
        slots.resize_with(slots.len().max(workers), || None);
        let mut connect_error = None;
        std::thread::scope(|scope| {
            let handles: Vec<_> = slots
                .iter_mut()
                .take(workers)
                .map(|slot| {
                    let outcome = &outcome;
                    scope.spawn(move || -> Result<(), MigrateError> {
                        let conn = match slot {
                            Some(conn) => conn,
                            None => slot.insert(self.connect()?),
                        };
                        while let Some(work) = next_work() {
                            let path = self.shared_path(Some(&work.0.schema));
                            let done = migrate_one(conn, work, &path, on_event);
                            let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
                            o.record(done);
                        }
                        Ok(())
                    })
                })
                .collect();
            let mut connected = 0;
            for handle in handles {
                match handle.join() {
                    Ok(Ok(())) => connected += 1,
                    Ok(Err(e)) => connect_error = Some(e),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            if connected > 0 {
                connect_error = None;
            }
        });
        conns.extend(slots.into_iter().flatten());
        match connect_error {
            Some(e) => Err(e),
            None => Ok(outcome.into_inner().unwrap_or_else(|e| e.into_inner())),
        }
    }
}

/// Applies one schema's pending migrations of a step in order, stopping at
/// the first failure, and reports the schema's end (done or failed).
fn migrate_one(
    conn: &mut PgConnection,
    (target, pending, tracked): Work<'_>,
    path: &str,
    on_event: &(dyn Fn(Event) + Sync),
) -> SchemaOutcome {
    let schema = target.schema.as_str();
    let mut applied = 0;
    let mut failure = None;
    let mut tracked = tracked;
    for m in pending {
        let at = ApplyTarget {
            schema,
            path,
            tracked,
        };
        match apply(conn, at, m, on_event) {
            Ok(true) => {
                applied += 1;
                tracked = true;
            }
            Ok(false) => tracked = true,
            Err(message) => {
                failure = Some(Failure {
                    schema: schema.to_string(),
                    migration: m.name().to_string(),
                    message,
                });
                break;
            }
        }
    }
    match &failure {
        Some(f) => on_event(Event::SchemaFailed(f.clone())),
        None => on_event(Event::SchemaDone {
            schema: schema.to_string(),
            applied,
        }),
    }
    SchemaOutcome {
        schema: schema.to_string(),
        applied,
        failure,
    }
}

/// What [`migrate_one`] did to one schema.
struct SchemaOutcome {
    schema: String,
    applied: usize,
    failure: Option<Failure>,
}

/// One schema's work in an isolated step: the schema, the step's
/// migrations it lacks (in order), and whether its tracking table exists.
type Work<'a> = (&'a Target, Vec<&'a Migration>, bool);

/// The tenant schemas of `targets` that have a tracking table, in order.
fn tracked_targets<'t>(targets: &'t [Target], tracked: &BTreeSet<String>) -> Vec<&'t str> {
    targets
        .iter()
        .map(|t| t.schema.as_str())
        .filter(|s| tracked.contains(*s))
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
                queue.push_back((t, run.iter().collect(), false));
            } else if let Some(done) = applied.get(schema) {
                let pending = pending_of(run, done);
                if !pending.is_empty() {
                    queue.push_back((t, pending, true));
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
                self.queue.push_back((target, pending, true));
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
}

impl Outcome {
    fn record(&mut self, done: SchemaOutcome) {
        self.applied += done.applied;
        if done.applied > 0 {
            self.migrated.push(done.schema);
        }
        self.failures.extend(done.failure);
    }
}

fn status_of(
    schema: String,
    tenant: Option<String>,
    scope: Scope,
    set: &MigrationSet,
    applied: BTreeSet<String>,
) -> SchemaStatus {
    let pending = set
        .migrations()
        .iter()
        .filter(|m| m.scope() == scope && !applied.contains(m.version()))
        .map(|m| m.name().to_string())
        .collect();
    SchemaStatus {
        schema,
        tenant,
        scope,
        applied: applied.into_iter().collect(),
        pending,
    }
}

fn registry_installed(conn: &mut PgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        present: bool,
    }
    diesel::sql_query("SELECT to_regclass('public.appschema_tenants') IS NOT NULL AS present")
        .get_result::<Exists>(conn)
        .map(|r| r.present)
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The advisory lock of one schema: `(namespace, hashtext(schema))`.
fn lock_key(schema: &str) -> String {
    format!(
        "hashtext('appschema.migrate'), hashtext({})",
        quote_literal(schema)
    )
}

/// The batch that applies `m` to a schema whose tracking table exists:
/// the same statements a hand-written script would send (path, migration,
/// tracking row, in one transaction) plus the try-lock folded into the
/// statement that sets the path. Nothing for the server to compile.
///
/// The tracking row is inserted *before* the migration runs: if another run
/// applied the version while we waited for the lock, the row's primary key
/// refuses the insert (a unique check sees committed rows whatever the
/// statement's snapshot), so the migration never runs twice; [`apply`]
/// recognises that refusal by the constraint's name.
///
/// A refused try-lock is a cast of a marked text to `int4`; the text
/// includes `pg_backend_pid()` so the planner cannot fold the cast into a
/// constant and raise it when the branch is not taken.
fn tracked_batch(schema: &str, path: &str, m: &Migration, try_lock: bool) -> String {
    let key = lock_key(schema);
    let lock = if try_lock {
        format!(
            "CASE WHEN pg_catalog.pg_try_advisory_xact_lock({key}) THEN 0 \
             ELSE CAST('appschema:locked ' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid() AS pg_catalog.int4) END"
        )
    } else {
        format!("pg_catalog.pg_advisory_xact_lock({key})")
    };
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED;\n\
         SELECT pg_catalog.set_config('search_path', {path}, true), {lock};\n\
         INSERT INTO {qs}.{TRACKING_TABLE} (version) VALUES ({v});\n\
         {sql}\n;\nCOMMIT;",
        path = quote_literal(path),
        qs = quote_ident(schema),
        v = quote_literal(m.version()),
        sql = m.up_sql(),
    )
}

/// Whether `e` is the tracking table's primary key refusing a version that
/// is already recorded.
fn is_tracking_duplicate(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, info)
            if info.table_name() == Some(TRACKING_TABLE)
    )
}

/// SQL that takes the schema's lock (`try`: or raises `appschema:locked`),
/// creates its tracking table, and raises `appschema:applied` when `version`
/// is already recorded (another run applied it while we waited). Used when
/// the planning read found no tracking table in the schema.
fn guard_sql(schema: &str, version: &str, try_lock: bool) -> String {
    let qs = quote_ident(schema);
    let lock = if try_lock {
        format!(
            "IF NOT pg_try_advisory_xact_lock({}) THEN RAISE EXCEPTION 'appschema:locked'; END IF;",
            lock_key(schema)
        )
    } else {
        format!("PERFORM pg_advisory_xact_lock({});", lock_key(schema))
    };
    format!(
        "DO $appschema$ BEGIN {lock}
           CREATE TABLE IF NOT EXISTS {qs}.{TRACKING_TABLE} (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
           IF EXISTS (SELECT 1 FROM {qs}.{TRACKING_TABLE} WHERE version = {v}) THEN
             RAISE EXCEPTION 'appschema:applied';
           END IF;
         END $appschema$",
        v = quote_literal(version)
    )
}

/// Why a guard stopped a migration before it ran.
#[derive(Debug, PartialEq, Eq)]
enum GuardRefusal {
    /// Another run holds the schema's lock.
    Locked,
    /// The version is already recorded in the schema.
    Applied,
}

/// Recognises the guards' own refusals in a PostgreSQL error message (the
/// PL/pgSQL guard raises the bare marker; the plain guard's cast error
/// quotes it, in whatever language the server's `lc_messages` is).
fn guard_refusal(message: &str) -> Option<GuardRefusal> {
    if message.contains("appschema:locked") {
        Some(GuardRefusal::Locked)
    } else if message.contains("appschema:applied") {
        Some(GuardRefusal::Applied)
    } else {
        None
    }
}

fn db_message(e: &diesel::result::Error) -> String {
    match e {
        diesel::result::Error::DatabaseError(_, info) => info.message().to_string(),
        other => other.to_string(),
    }
}

/// Applies `m` to `schema` (with `search_path` = `path`) and records it.
/// `Ok(false)`: another run had applied it. `Err`: PostgreSQL's message.
fn apply(
    conn: &mut PgConnection,
    target: ApplyTarget<'_>,
    m: &Migration,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<bool, String> {
    let ApplyTarget { schema, path, .. } = target;
    let mut try_lock = true;
    loop {
        let result = if m.run_in_transaction() {
            apply_in_transaction(conn, target, m, try_lock)
        } else {
            apply_without_transaction(conn, schema, path, m, try_lock)
        };
        match result {
            Ok(()) => return Ok(true),
            Err(e) => {
                let message = db_message(&e);
                if m.run_in_transaction() {
                    let _ = conn.batch_execute("ROLLBACK");
                }
                if is_tracking_duplicate(&e) {
                    return Ok(false);
                }
                match guard_refusal(&message) {
                    Some(GuardRefusal::Applied) => return Ok(false),
                    Some(GuardRefusal::Locked) if try_lock => {
                        on_event(Event::Waiting {
                            schema: schema.to_string(),
                        });
                        try_lock = false;
                    }
                    _ => return Err(message),
                }
            }
        }
    }
}

/// Where [`apply`] runs a migration.
#[derive(Debug, Clone, Copy)]
struct ApplyTarget<'a> {
    schema: &'a str,
    /// The `search_path` while the migration runs.
    path: &'a str,
    /// The schema's tracking table is known to exist, so the guard need not
    /// create it.
    tracked: bool,
}

/// One round trip: lock, check, migration, tracking row, commit.
fn apply_in_transaction(
    conn: &mut PgConnection,
    target: ApplyTarget<'_>,
    m: &Migration,
    try_lock: bool,
) -> QueryResult<()> {
    let ApplyTarget {
        schema,
        path,
        tracked,
    } = target;
    if tracked {
        return conn.batch_execute(&tracked_batch(schema, path, m, try_lock));
    }
    conn.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED;\nSELECT set_config('search_path', {path}, true);\n{guard};\n{sql}\n;\nINSERT INTO {qs}.{TRACKING_TABLE} (version) VALUES ({v});\nCOMMIT;",
        path = quote_literal(path),
        guard = guard_sql(schema, m.version(), try_lock),
        sql = m.up_sql(),
        qs = quote_ident(schema),
        v = quote_literal(m.version()),
    ))
}

/// `run_in_transaction = false`: a session lock, then each statement on its
/// own (so `CREATE INDEX CONCURRENTLY` works), then the tracking row.
fn apply_without_transaction(
    conn: &mut PgConnection,
    schema: &str,
    path: &str,
    m: &Migration,
    try_lock: bool,
) -> QueryResult<()> {
    let key = lock_key(schema);
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    if try_lock {
        let got: Locked =
            diesel::sql_query(format!("SELECT pg_try_advisory_lock({key}) AS locked"))
                .get_result(conn)?;
        if !got.locked {
            return Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new("appschema:locked".to_string()),
            ));
        }
    } else {
        conn.batch_execute(&format!("SELECT pg_advisory_lock({key})"))?;
    }
    let result = (|| {
        // The guard's own lock is transaction-scoped and released at once;
        // the session lock above is what holds.
        conn.batch_execute(&format!(
            "BEGIN; {}; COMMIT",
            guard_sql(schema, m.version(), false)
        ))
        .inspect_err(|_| {
            let _ = conn.batch_execute("ROLLBACK");
        })?;
        conn.batch_execute(&format!("SET search_path TO {path}"))?;
        let statements = crate::sql::split_statements(m.up_sql()).map_err(|e| {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new(e),
            )
        })?;
        for statement in statements {
            conn.batch_execute(&statement)?;
        }
        conn.batch_execute(&format!(
            "INSERT INTO {}.{TRACKING_TABLE} (version) VALUES ({})",
            quote_ident(schema),
            quote_literal(m.version())
        ))
    })();
    let _ = conn.batch_execute(&format!(
        "RESET search_path; SELECT pg_advisory_unlock({key})"
    ));
    result
}

/// Brings one schema to the isolated head inside the caller's transaction:
/// creates its `__diesel_schema_migrations`, applies every isolated
/// migration it lacks with `search_path` = the schema, then the shared
/// schema (`public`), and records them. The caller commits or rolls back
/// (provisioning calls it in the transaction that inserts the registry row).
/// The transaction's previous `search_path` is restored. Returns how many
/// migrations were applied.
///
/// ```no_run
/// # use diesel::Connection;
/// # use appschema_core::{SchemaName, migration::MigrationSet};
/// # let set = MigrationSet::default();
/// let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
/// conn.transaction(|conn| {
///     let schema = SchemaName::new("acme").unwrap();
///     diesel::sql_query(format!("CREATE SCHEMA {}", schema.quoted())).execute(conn)?;
///     appschema_core::migrate::migrate_schema_in_transaction(conn, &schema, &set)
///         .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
///     Ok::<_, diesel::result::Error>(())
/// }).unwrap();
/// # use diesel::RunQueryDsl;
/// ```
pub fn migrate_schema_in_transaction(
    conn: &mut PgConnection,
    schema: &SchemaName,
    set: &MigrationSet,
) -> Result<usize, MigrateError> {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
    }
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let previous: Setting =
        diesel::sql_query("SELECT current_setting('search_path') AS value").get_result(conn)?;
    let qs = schema.quoted();
    conn.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({key});
         CREATE TABLE IF NOT EXISTS {qs}.{TRACKING_TABLE} (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
         SELECT set_config('search_path', {path}, true);",
        key = lock_key(schema.as_str()),
        path = quote_literal(&format!("{qs}, public")),
    ))?;
    let applied: BTreeSet<String> = diesel::sql_query(format!(
        "SELECT version::text AS version FROM {qs}.{TRACKING_TABLE}"
    ))
    .load::<Version>(conn)?
    .into_iter()
    .map(|v| v.version)
    .collect();
    let mut count = 0;
    for m in set.isolated().filter(|m| !applied.contains(m.version())) {
        if !m.run_in_transaction() {
            return Err(MigrateError::NotTransactional(m.name().to_string()));
        }
        conn.batch_execute(&format!(
            "{}\n;\nINSERT INTO {qs}.{TRACKING_TABLE} (version) VALUES ({});",
            m.up_sql(),
            quote_literal(m.version())
        ))
        .map_err(|e| MigrateError::Failed {
            schema: schema.as_str().to_string(),
            version: m.version().to_string(),
            message: db_message(&e),
        })?;
        count += 1;
    }
    diesel::sql_query("SELECT set_config('search_path', $1, true)")
        .bind::<Text, _>(&previous.value)
        .execute(conn)?;
    Ok(count)
}
