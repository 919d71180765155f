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
//! - **Cheap when there is nothing to do**: once a schema's migrations have
//!   committed, `migrate` records the schema's head in
//!   `public.appschema_heads`, and a schema whose record matches the set is
//!   not read at all (see the `heads` module); so a run with nothing
//!   pending costs a few queries whatever the number of tenants. Schemas
//!   without a trusted record are read in a few queries (one per 50
//!   schemas), not per tenant; `migrate` streams that read, so workers start
//!   on the first schemas found behind while the rest is still being read
//!   (see the `applied` module), and records what it read.
//!
//! Reverting ([`Migrator::revert`]) walks the timeline backwards with each
//! migration's `down.sql`, with the same workers, per-schema transactions
//! and failure isolation (see the `revert` module).
//!
//! Which schemas: appschema's own shared tables first ([`registry::install`]),
//! the shared schema, then every tenant of the registry, then every schema
//! named by the [`SchemaSource`]s added with [`Migrator::schema_source`]
//! (spares and other schemas appschema keeps).

mod applied;
mod apply;
mod error;
mod extensions;
mod heads;
mod in_transaction;
mod report;
mod revert;
mod run;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

pub use error::MigrateError;
pub use extensions::{extensions_in_schemas, MisplacedExtension};
pub use in_transaction::migrate_schema_in_transaction;
pub use report::{Event, Failure, PlannedMigration, Report, SchemaStatus};
pub use revert::RevertTo;

use crate::connection::SearchPath;
use crate::name::{PublicName, SchemaName};
use crate::registry;
use crate::Scope;
use crate::{MigrationSet, Step};
use run::tracked_targets;

/// diesel's tracking table, created in every migrated schema.
pub const TRACKING_TABLE: &str = "__diesel_schema_migrations";

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

/// Runs migrations; see the [module docs](self).
///
/// ```no_run
/// use appschema::migrate::Migrator;
/// use appschema::MigrationSet;
/// # let set = MigrationSet::default();
/// let report = Migrator::new("postgres:///app").jobs(4).migrate(&set, &|_| {}).unwrap();
/// assert!(report.is_success());
/// ```
pub struct Migrator {
    database_url: String,
    jobs: usize,
    /// `path.shared()`, kept as a `String` for the maps keyed by schema.
    shared_schema: String,
    path: SearchPath,
    tenants: Option<Vec<PublicName>>,
    sources: Vec<(String, SchemaSource)>,
    reference_tables: Vec<String>,
    recheck: bool,
    record_heads: bool,
    /// Run after each tenant's migrations of a run committed.
    hooks: crate::provision::Hooks,
    /// Found out as `migrate` starts: on a Citus coordinator, the shared
    /// tables to keep as reference tables (this migrator's and the set's);
    /// `None` elsewhere.
    citus: std::sync::RwLock<Option<Vec<String>>>,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field(
                "database_url",
                &crate::redact::redact_url(&self.database_url),
            )
            .field("jobs", &self.jobs)
            .field("path", &self.path)
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
    /// of CPUs, the path [`SearchPath::new`] (shared schema `public`), every
    /// tenant, no extra schema source.
    pub fn new(database_url: impl Into<String>) -> Migrator {
        Migrator {
            database_url: database_url.into(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shared_schema: crate::DEFAULT_SHARED_SCHEMA.to_string(),
            path: SearchPath::new(),
            tenants: None,
            sources: Vec::new(),
            reference_tables: Vec::new(),
            recheck: false,
            record_heads: true,
            hooks: crate::provision::Hooks::default(),
            citus: std::sync::RwLock::new(None),
        }
    }

    /// Runs `hooks`' [`after_migrate`](crate::provision::TenantHook::after_migrate)
    /// for every tenant that had migrations applied in a run (default:
    /// none), once the run's steps are over. Each migration commits in its
    /// own transaction, so the hook runs *after* those commits, in a
    /// transaction of its own per tenant: its failure cannot undo the
    /// migrations, rolls back only what the hook wrote, and is reported as
    /// a [`Failure`] of that schema (migration `hook <name>`).
    pub fn hooks(mut self, hooks: crate::provision::Hooks) -> Migrator {
        self.hooks = hooks;
        self
    }

    /// The `search_path` migrations run on: a shared migration on the
    /// shared-only path (`"<shared>", <extra>…`), an isolated one on the
    /// tenant's (`"<tenant>", "<shared>", <extra>…`). Give it the
    /// [`SearchPath`] the application's pools use, so a migration that calls
    /// a function or uses a type from an extra schema (`extensions`, say)
    /// runs as the application's queries do. Default: [`SearchPath::new`]
    /// (`public`, no extra schema).
    ///
    /// ```no_run
    /// use appschema::{connection::SearchPath, migrate::Migrator};
    /// let path = SearchPath::new().extra_schema("extensions")?;
    /// let migrator = Migrator::new("postgres:///app").search_path(path);
    /// # Ok::<(), appschema::ConnectionError>(())
    /// ```
    pub fn search_path(mut self, path: SearchPath) -> Migrator {
        self.shared_schema = path.shared().to_string();
        self.path = path;
        self
    }

    /// Reads every schema's tracking table instead of trusting the recorded
    /// heads, and (`migrate`) records what it read. Use it after a tracking
    /// table was changed by something other than appschema (diesel CLI's
    /// `migration revert` on a tenant schema, a hand-written `DELETE`):
    /// recorded heads are written by appschema's own migrations and cannot
    /// see such a change (see the [module docs](self)). Default: `false`.
    pub fn recheck(mut self, recheck: bool) -> Migrator {
        self.recheck = recheck;
        self
    }

    /// Whether migrations record heads. Only for benchmarks measuring what
    /// recording costs: without it, every run reads every tracking table.
    #[doc(hidden)]
    pub fn record_heads(mut self, record: bool) -> Migrator {
        self.record_heads = record;
        self
    }

    /// The set's isolated versions, and the digest input `heads::tracked`
    /// compares the records with (`None` when they are not to be trusted).
    fn expected(&self, set: &MigrationSet) -> (std::sync::Arc<applied::Versions>, Option<String>) {
        let versions: applied::Versions = set.isolated().map(|m| m.version().to_string()).collect();
        let input = (!self.recheck && self.record_heads).then(|| heads::digest_input(&versions));
        (std::sync::Arc::new(versions), input)
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

    /// On Citus: more shared tables (in the shared schema) that isolated
    /// tables reference, which must be reference tables there, besides the
    /// set's own list ([`MigrationSet::citus_reference_tables`], which the
    /// planner fills). `migrate` makes those that exist into reference
    /// tables before it starts and after each shared migration it applies
    /// (see [`crate::citus::ensure_reference_tables`]); off Citus this does
    /// nothing. Default: none.
    pub fn citus_reference_tables(mut self, tables: Vec<String>) -> Migrator {
        self.reference_tables = tables;
        self
    }

    /// Whether `migrate` found a Citus coordinator (`false` before it ran).
    pub(crate) fn on_citus(&self) -> bool {
        self.citus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// [`crate::citus::ensure_reference_tables`] for this run's list.
    pub(crate) fn ensure_reference_tables(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<String>, crate::citus::CitusError> {
        let citus = self.citus.read().unwrap_or_else(|e| e.into_inner());
        match citus.as_deref() {
            Some(tables) => {
                crate::citus::ensure_reference_tables(conn, &self.shared_schema, tables)
            }
            None => Ok(Vec::new()),
        }
    }

    fn connect(&self) -> Result<PgConnection, MigrateError> {
        let mut conn = PgConnection::establish(&self.database_url)
            .map_err(|e| crate::redact::redact_connection_error(e, &self.database_url))?;
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
                let schemas = source(conn).map_err(|error| MigrateError::SchemaSource {
                    name: name.clone(),
                    error,
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
        let applied = self.applied_versions(&mut conn, &targets, set)?;
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

    /// Every schema's applied versions (the shared schema's and
    /// `targets`'): one query finds which schemas have a tracking table and
    /// which have a trusted recorded head, then one query per 50 of the
    /// others, by up to `jobs` reader connections. Records nothing.
    fn applied_versions(
        &self,
        conn: &mut PgConnection,
        targets: &[Target],
        set: &MigrationSet,
    ) -> Result<HashMap<String, applied::Versions>, MigrateError> {
        let (expected, input) = self.expected(set);
        let tracked = heads::tracked(conn, input.as_deref())?;
        let mut known = HashMap::new();
        if tracked.all.contains(&self.shared_schema) {
            known.extend(applied::read_chunk(conn, &[&self.shared_schema])?);
        }
        let schemas = tracked_targets(targets, &tracked.all, &tracked.current);
        let chunks: Vec<&[&str]> = schemas.chunks(applied::CHUNK).collect();
        let connect = || self.connect();
        std::thread::scope(|scope| {
            let readers = applied::readers_for(chunks.len(), self.jobs);
            let rx = applied::spawn_readers(scope, &connect, &chunks, readers, None);
            let current = (tracked.current, expected);
            applied::Applied::new(tracked.all, known, current, rx, schemas.len()).finish()
        })
    }

    /// What a run would do, without doing it: each pending migration and the
    /// schemas it would run in, in order. Installs nothing.
    pub fn plan(&self, set: &MigrationSet) -> Result<Vec<PlannedMigration>, MigrateError> {
        let mut conn = self.connect()?;
        let targets = self.targets(&mut conn)?;
        let applied = self.applied_versions(&mut conn, &targets, set)?;
        let empty = BTreeSet::new();
        let mut out = Vec::new();
        for m in set.migrations() {
            let shared = m.scope().in_shared().then(|| self.shared_schema.clone());
            let tenants = targets
                .iter()
                .filter(|_| m.scope().in_tenants())
                .map(|t| t.schema.as_str().to_string());
            let schemas: Vec<String> = shared
                .into_iter()
                .chain(tenants)
                .filter(|s| !applied.get(s).unwrap_or(&empty).contains(m.version()))
                .collect();
            out.extend(PlannedMigration::of(m, schemas));
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
        let _run = crate::observe::migrate_run();
        let started = Instant::now();
        let mut conns = vec![self.connect()?];
        registry::install(&mut conns[0])?;
        let citus = crate::citus::is_citus(&mut conns[0])?.then(|| {
            let mut tables = self.reference_tables.clone();
            tables.extend(set.citus_reference_tables().map(String::from));
            tables
        });
        *self.citus.write().unwrap_or_else(|e| e.into_inner()) = citus;
        self.ensure_reference_tables(&mut conns[0])?;
        let targets = self.targets(&mut conns[0])?;
        let (expected, input) = self.expected(set);
        let tracked = heads::tracked(&mut conns[0], input.as_deref())?;
        let mut known = HashMap::new();
        if tracked.all.contains(&self.shared_schema) {
            known.extend(applied::read_chunk(&mut conns[0], &[&self.shared_schema])?);
        }
        let steps = set.steps();
        // Tenant schemas without a trusted recorded head are read only if
        // some step needs them, by reader connections of their own while the
        // steps run (half as many as the workers: reading costs the server
        // less than migrating); the readers record what they read.
        let schemas = if steps.iter().any(|s| matches!(s, Step::Isolated(_))) {
            tracked_targets(&targets, &tracked.all, &tracked.current)
        } else {
            Vec::new()
        };
        if self.record_heads && !schemas.is_empty() {
            heads::forget_gone(&mut conns[0])?;
        }
        let chunks: Vec<&[&str]> = schemas.chunks(applied::CHUNK).collect();
        let by_schema: HashMap<&str, &Target> =
            targets.iter().map(|t| (t.schema.as_str(), t)).collect();
        let connect = || self.connect();
        let heal = self.record_heads.then_some((&tracked.oids, &*expected));
        std::thread::scope(|scope| {
            let readers = applied::readers_for(chunks.len(), self.jobs.div_ceil(2));
            let rx = applied::spawn_readers(scope, &connect, &chunks, readers, heal);
            let current = (tracked.current.clone(), expected.clone());
            let mut applied =
                applied::Applied::new(tracked.all.clone(), known, current, rx, schemas.len());
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
            report.tracking_tables_read = schemas.len();
            report.elapsed = started.elapsed();
            crate::observe::migrate_totals(report.migrations_applied, report.failures.len());
            report
        })
    }
}

fn status_of(
    schema: String,
    tenant: Option<String>,
    scope: Scope,
    set: &MigrationSet,
    applied: BTreeSet<String>,
) -> SchemaStatus {
    let names = |in_scope: bool, recorded: bool| -> Vec<String> {
        set.migrations()
            .iter()
            .filter(|m| {
                let runs_here = match scope {
                    Scope::Shared => m.scope().in_shared(),
                    _ => m.scope().in_tenants(),
                };
                runs_here == in_scope && applied.contains(m.version()) == recorded
            })
            .map(|m| m.name().to_string())
            .collect()
    };
    SchemaStatus {
        pending: names(true, false),
        misplaced: names(false, true),
        schema,
        tenant,
        scope,
        applied: applied.into_iter().collect(),
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
