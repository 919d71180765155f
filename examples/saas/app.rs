//! The saas example's application: tables, routes, handlers and start-up.
//! Shared by `main.rs` (the program) and `tests/saas.rs` (HTTP tests against
//! the running app). Its tables are in `schema.rs`, the schema source the
//! migration planner reads: its `#[appschema::shared]` /
//! `#[appschema::isolated]` modules decide each migration's scope.
//!
//! Every route is served on one of two paths ([`Mode`]), by the same
//! handlers: each runs the same diesel query builders (module `q`) either
//! on an r2d2 connection on tokio's blocking pool (`CurrentTenant::run`)
//! or, with the `async` feature, on a diesel-async connection awaited on
//! the request's task (`CurrentTenant::conn`, module `on_async`).

// The handlers' `'run: { <async path, `break 'run`> <blocking path> }`
// blocks: without the `async` feature only the blocking path is left.
#![cfg_attr(not(feature = "async"), allow(unused_labels))]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "async")]
use appschema::async_pool::scoped_futures::ScopedFutureExt;
#[cfg(feature = "async")]
use appschema::async_pool::AsyncSharedPool;
use appschema::axum::{
    apex_or_tenants, CurrentTenant, HostSource, TenantDbError, TenantLayer, RETRY_AFTER_SECONDS,
};
use appschema::connection::{is_connection_lost, is_connection_lost_message};
use appschema::migrate::Migrator;
use appschema::provision::{self, Hooks, NewTenant, ProvisionError, Source};
use appschema::resolve::Resolver;
use appschema::{Migration, MigrationSet, SharedPool};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};

// The tables live in their own file, which the planner reads
// (`appschema-cli prepare --schema-file schema.rs`): editing this one leaves
// the prepared plan valid.
#[path = "schema.rs"]
mod schema;
pub use schema::{shared, tenant};

use shared::plans;
use tenant::{account, projects, tasks};

/// Background jobs (feature `jobs`): a welcome job enqueued by the sign-up
/// in its own transaction, and a nightly job fanned out to every tenant.
#[cfg(feature = "jobs")]
pub mod jobs {
    use appschema::jobs::{JobError, TenantJob};
    use appschema::registry::Tenant;
    use diesel::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::tenant::{projects, tasks};

    /// After sign-up: a first project with a task, in the new tenant's
    /// schema (where a real app would also send the welcome e-mail).
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Welcome {
        /// Who signed up.
        pub display_name: String,
    }

    impl TenantJob for Welcome {
        const NAME: &'static str = "saas.welcome";
        fn run(&self, conn: &mut PgConnection, _tenant: &Tenant) -> Result<(), JobError> {
            let project: i64 = diesel::insert_into(projects::table)
                .values(projects::name.eq("Getting started"))
                .returning(projects::id)
                .get_result(conn)?;
            diesel::insert_into(tasks::table)
                .values((
                    tasks::project_id.eq(project),
                    tasks::title.eq(format!("Welcome, {}: invite your team", self.display_name)),
                ))
                .execute(conn)?;
            Ok(())
        }
    }

    /// Every night, in every tenant: deletes the tasks marked done.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct PurgeDoneTasks;

    impl TenantJob for PurgeDoneTasks {
        const NAME: &'static str = "saas.purge_done_tasks";
        fn run(&self, conn: &mut PgConnection, _tenant: &Tenant) -> Result<(), JobError> {
            diesel::delete(tasks::table.filter(tasks::done)).execute(conn)?;
            Ok(())
        }
    }

    /// When [`PurgeDoneTasks`] runs: 03:00 UTC every day (fang's cron:
    /// seconds first).
    pub const NIGHTLY: &str = "0 0 3 * * * *";

    /// Installs the queue table (sign-ups enqueue into it), on a
    /// connection of its own: the async path serves without the blocking
    /// pool.
    pub fn install(database_url: &str) -> Result<(), JobError> {
        let mut conn = PgConnection::establish(database_url).map_err(|e| {
            JobError::failed(format!("cannot connect to install the job queue: {e}"))
        })?;
        appschema::jobs::install_queue(&mut conn)
    }

    /// Schedules the nightly job (once, however often the app starts) and
    /// starts two workers on `pool`.
    pub fn start(pool: &appschema::SharedPool) -> Result<(), JobError> {
        let mut conn = pool.get_shared()?;
        appschema::jobs::schedule_for_every_tenant(&mut conn, &PurgeDoneTasks, NIGHTLY)?;
        drop(conn);
        let context = appschema::jobs::Context::new(pool.clone())
            .register::<Welcome>()
            .register::<PurgeDoneTasks>();
        appschema::jobs::Workers::new(context)
            .number_of_workers(2)
            .poll_interval(std::time::Duration::from_millis(200))
            .start()
    }
}

/// How many spare schemas are kept ready, so a sign-up only renames one.
pub const SPARES: usize = 2;

/// The application's migrations, as `appschema-cli prepare` planned them
/// against this file's markings (`examples/saas/appschema-plan.toml`), read
/// with their SQL at start-up without the planner. An application usually
/// embeds them at build time instead (`appschema_build::embed_prepared_migrations`
/// in its `build.rs`, then `appschema::include_migrations!()`).
pub fn migrations() -> Result<MigrationSet, Box<dyn std::error::Error + Send + Sync>> {
    let plan = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/saas/appschema-plan.toml");
    let (migrations, reference_tables) =
        appschema_build::load_prepared_with_reference_tables(&plan)?;
    let migrations = migrations
        .into_iter()
        .map(|m| {
            let mut migration = Migration::new(m.version, m.name, m.scope.parse()?, m.up_sql);
            if let Some(down) = m.down_sql {
                migration = migration.with_down_sql(down);
            }
            if let Some(statements) = m.statements {
                let statements = statements.into_iter().map(Into::into).collect();
                migration =
                    migration.outside_transaction(statements, m.new_schema_sql.map(Into::into));
            }
            Ok(migration)
        })
        .collect::<Result<Vec<_>, appschema::ParseScopeError>>()?;
    // On Citus, the shared tables tenants reference become reference tables.
    Ok(MigrationSet::new(migrations).with_citus_reference_tables(reference_tables))
}

/// Which path serves the requests. Both serve the same routes with the
/// same answers; only how a handler's queries run differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// r2d2 (`SharedPool`): each request's diesel work runs on tokio's
    /// blocking thread pool (`CurrentTenant::run`).
    Blocking,
    /// diesel-async (`AsyncSharedPool`): each request's queries are awaited
    /// on its own task (`CurrentTenant::conn`), and sign-up claims a spare
    /// schema there (`claim_spare_with`): no `spawn_blocking` on the
    /// request path. The copy to start a new axum service from.
    #[cfg(feature = "async")]
    Async,
}

impl Mode {
    /// How the startup output and `--help` name it.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Blocking => "the blocking path (r2d2 SharedPool, CurrentTenant::run on tokio's blocking pool)",
            #[cfg(feature = "async")]
            Mode::Async => "the async path (diesel-async AsyncSharedPool, CurrentTenant::conn awaited on each request's task)",
        }
    }
}

/// Everything a handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Tenant-scoped connections for every tenant, on the blocking path. On
    /// the async path only the work that is blocking by nature uses it:
    /// building schemas by their migrations (topping up the spares, and a
    /// sign-up that found no spare ready).
    pub pool: SharedPool,
    /// The async path's pool: `Some` when the async path serves.
    #[cfg(feature = "async")]
    pub async_pool: Option<AsyncSharedPool>,
    /// Provisioning builds new tenants with these.
    pub migrations: Arc<MigrationSet>,
    /// The apex host (`localhost`): sign-ups go there, tenants live under it.
    pub apex: String,
    /// The port printed in URLs.
    pub port: u16,
}

impl AppState {
    /// The path that serves the requests.
    pub fn mode(&self) -> Mode {
        #[cfg(feature = "async")]
        if self.async_pool.is_some() {
            return Mode::Async;
        }
        Mode::Blocking
    }
}

/// A started application.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (pool, migrations), for tests and tools.
    pub state: AppState,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops serving.
    pub fn stop(self) {
        self.server.abort();
    }
}

/// Migrates the database (shared schema, every tenant, the spares), tops up
/// the spares, and serves the app on `127.0.0.1:port` (0: any free port) on
/// the path `mode` names.
pub async fn start(
    database_url: &str,
    port: u16,
    mode: Mode,
) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let url = database_url.to_string();
    let migrations = Arc::new(
        tokio::task::spawn_blocking({
            let url = url.clone();
            move || -> Result<MigrationSet, Box<dyn std::error::Error + Send + Sync>> {
                let set = migrations()?;
                let report = Migrator::new(&url)
                    .schema_source(
                        "spares",
                        Box::new(|conn: &mut PgConnection| provision::spare_schemas(conn)),
                    )
                    .migrate(&set, &|_| {})?;
                if !report.is_success() {
                    return Err(format!("migrate failed: {:?}", report.failures).into());
                }
                let mut conn = PgConnection::establish(&url)?;
                provision::ensure_spares(&mut conn, &set, SPARES)?;
                Ok(set)
            }
        })
        .await??,
    );
    // Two pools. Tenant work checks connections out of the SharedPool (or,
    // on the async path, the AsyncSharedPool), which puts each on the
    // tenant's search_path. The resolver (host -> tenant) reads the registry
    // through a plain r2d2 pool of its own: its lookups (one per host not
    // yet cached) then never wait behind tenant work for a connection, and
    // a flood of unknown hosts cannot starve the tenants.
    let pool = match mode {
        Mode::Blocking => SharedPool::builder(&url).max_size(16).build()?,
        // Only schema builds use it: two connections, opened when needed.
        #[cfg(feature = "async")]
        Mode::Async => SharedPool::builder(&url).max_size(2).min_idle(0).build()?,
    };
    let registry_pool = Pool::builder()
        .max_size(4)
        .build(ConnectionManager::<PgConnection>::new(&url))?;
    let running = serve(mode, &url, pool, registry_pool, migrations, port).await?;
    // The workers run with the program; tests that serve the app start
    // them when they want them (`jobs::start`).
    #[cfg(feature = "jobs")]
    tokio::task::spawn_blocking({
        let pool = running.state.pool.clone();
        move || jobs::start(&pool)
    })
    .await??;
    Ok(running)
}

/// Serves the app on `127.0.0.1:port` (0: any free port) over a database
/// already migrated, on the path `mode` names: tenant work on `pool` (the
/// async path opens an `AsyncSharedPool` of 16 on `database_url` for it),
/// the resolver's registry lookups on `registry_pool`. Tests call it with
/// the pools of their `appschema_test::TestDatabase`.
pub async fn serve(
    mode: Mode,
    database_url: &str,
    pool: SharedPool,
    registry_pool: Pool<ConnectionManager<PgConnection>>,
    migrations: Arc<MigrationSet>,
    port: u16,
) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let resolver = Arc::new(Resolver::builder().build(registry_pool));
    #[cfg(feature = "jobs")]
    tokio::task::spawn_blocking({
        let url = database_url.to_string();
        move || jobs::install(&url)
    })
    .await??;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let state = AppState {
        pool,
        #[cfg(feature = "async")]
        async_pool: match mode {
            Mode::Async => Some(
                AsyncSharedPool::builder(database_url)
                    .max_size(16)
                    .build()?,
            ),
            Mode::Blocking => None,
        },
        migrations,
        apex: "localhost".to_string(),
        port: addr.port(),
    };
    #[cfg(not(feature = "async"))]
    let _ = (mode, database_url);
    let app = router(state.clone(), resolver);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running {
        addr,
        state,
        server,
    })
}

/// The whole app: requests to the apex host go to the sign-up routes, every
/// other host through [`TenantLayer`] to the tenant routes (404 when the host
/// names no tenant).
pub fn router(state: AppState, resolver: Arc<Resolver>) -> Router {
    let apex_hosts = [state.apex.clone(), "127.0.0.1".to_string()];
    let apex = Router::new()
        .route("/", get(apex_page))
        .route("/signup", axum::routing::post(signup))
        .route("/api/plans", get(list_plans))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn(log_request));
    let tenants = tenant_routes()
        .with_state(state)
        .layer(axum::middleware::from_fn(log_request))
        .layer(TenantLayer::new(resolver));
    apex_or_tenants(apex_hosts, HostSource::Host, apex, tenants)
        .expect("the apex host names are valid host names")
}

/// Logs each request (method, path, status, duration) with its tenant's
/// public and schema names (none on the apex host), in a `request` span the
/// handler's own spans and events nest under. Inside [`TenantLayer`], which
/// put the tenant on the request.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let tenant = req.extensions().get::<CurrentTenant>().map(|t| t.0.clone());
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = req.uri().path(),
        tenant = tenant.as_ref().map(|t| t.public_name.as_str()),
        schema = tenant.as_ref().map(|t| t.schema_name.as_str()),
    );
    let started = std::time::Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    span.in_scope(|| tracing::info!(status, elapsed_ms, "served"));
    response
}

/// The routes every tenant host serves, without the tenant layer (so a
/// benchmark can put a hard-wired tenant in front of the same handlers).
pub fn tenant_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(tenant_page))
        .route("/api/account", get(get_account))
        .route("/api/plans", get(list_plans))
        .route("/api/projects", get(list_projects).post(create_project))
        .route(
            "/api/projects/{id}/tasks",
            get(list_tasks).post(create_task),
        )
}

// ------------------------------------------------------------- queries ---

/// The app's queries, built once for both paths: each handler runs the same
/// query builder with diesel (blocking) or diesel-async (awaited).
mod q {
    use super::{account, plans, projects, tasks, Plan, Project, Task};
    use diesel::dsl::{self, auto_type};
    use diesel::pg::Pg;
    use diesel::prelude::*;

    /// The tenant's account row joined to its plan: one query over an
    /// isolated and a shared table.
    #[auto_type]
    pub fn account_with_plan() -> _ {
        let plan: dsl::AsSelect<Plan, Pg> = Plan::as_select();
        account::table
            .inner_join(plans::table)
            .select((account::display_name, plan))
    }

    /// The plan the tenant's account is on, its row locked so concurrent
    /// project creations respect the limit. (Only the tenant's row: locking
    /// the shared plan row would serialize every tenant on that plan.)
    #[auto_type]
    pub fn account_plan_id_for_update() -> _ {
        account::table.select(account::plan_id).for_update()
    }

    /// Every plan.
    #[auto_type]
    pub fn all_plans() -> _ {
        let plan: dsl::AsSelect<Plan, Pg> = Plan::as_select();
        plans::table.order(plans::id).select(plan)
    }

    /// One plan.
    #[auto_type]
    pub fn plan(id: i64) -> _ {
        let plan: dsl::AsSelect<Plan, Pg> = Plan::as_select();
        plans::table.find(id).select(plan)
    }

    /// The id of the plan named `name`.
    #[auto_type]
    pub fn plan_id(name: String) -> _ {
        plans::table.filter(plans::name.eq(name)).select(plans::id)
    }

    /// The tenant's account row, written at sign-up.
    #[auto_type]
    pub fn account_row(display_name: String, plan_id: i64) -> _ {
        (
            account::display_name.eq(display_name),
            account::plan_id.eq(plan_id),
        )
    }

    /// The tenant's projects.
    #[auto_type]
    pub fn all_projects() -> _ {
        let project: dsl::AsSelect<Project, Pg> = Project::as_select();
        projects::table.order(projects::id).select(project)
    }

    /// How many projects the tenant has.
    #[auto_type]
    pub fn project_count() -> _ {
        let count: dsl::CountStar = dsl::count_star();
        projects::table.select(count)
    }

    /// The project's id, if it is the tenant's (else diesel's `NotFound`,
    /// a 404).
    #[auto_type]
    pub fn project_id(id: i64) -> _ {
        projects::table.find(id).select(projects::id)
    }

    /// A new project, returned.
    #[auto_type]
    pub fn insert_project(name: String) -> _ {
        let project: dsl::AsSelect<Project, Pg> = Project::as_returning();
        dsl::insert_into(projects::table)
            .values(projects::name.eq(name))
            .returning(project)
    }

    /// The project's tasks.
    #[auto_type]
    pub fn project_tasks(project_id: i64) -> _ {
        let task: dsl::AsSelect<Task, Pg> = Task::as_select();
        tasks::table
            .filter(tasks::project_id.eq(project_id))
            .order(tasks::id)
            .select(task)
    }

    /// A new task, returned.
    #[auto_type]
    pub fn insert_task(project_id: i64, title: String) -> _ {
        let task: dsl::AsSelect<Task, Pg> = Task::as_returning();
        dsl::insert_into(tasks::table)
            .values((tasks::project_id.eq(project_id), tasks::title.eq(title)))
            .returning(task)
    }

    /// Every project with its tasks (if any), for the tenant page.
    #[auto_type]
    pub fn projects_with_tasks() -> _ {
        let project: dsl::AsSelect<Project, Pg> = Project::as_select();
        let task: dsl::AsSelect<Option<Task>, Pg> = Option::<Task>::as_select();
        projects::table
            .left_join(tasks::table)
            .order((projects::id, tasks::id.nullable()))
            .select((project, task))
    }

    /// Sets the transaction's `search_path` to the new tenant's schema (then
    /// `public`), for its first rows.
    pub fn set_local_path(schema: &appschema::SchemaName) -> String {
        format!("SET LOCAL search_path TO {}, public", schema.quoted())
    }
}

/// The same work as the blocking handlers' closures, on diesel-async: the
/// same query builders ([`q`]), awaited.
#[cfg(feature = "async")]
pub mod on_async {
    use super::{account, q, AppState, Created, PageData, Plan, Project, SignupError, Task};
    use appschema::async_pool::scoped_futures::ScopedFutureExt;
    use appschema::async_pool::{claim_spare_with, AsyncSharedPool};
    use appschema::provision::{self, NewTenant, Source};
    use diesel::{OptionalExtension, QueryResult};
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

    /// Sign-up from the async handler: a spare schema claimed, and the
    /// account row written, in one transaction on the request's task.
    /// `None` when no spare at the isolated head is free: the caller then
    /// builds the schema the blocking way (it runs migrations).
    pub(super) async fn claim(
        state: &AppState,
        pool: &AsyncSharedPool,
        host: &str,
        plan: &str,
    ) -> Result<Option<provision::Created>, SignupError> {
        let mut conn = pool.get_shared().await?;
        let plan_id: i64 = q::plan_id(plan.to_string())
            .first(&mut *conn)
            .await
            .optional()?
            .ok_or_else(|| SignupError::UnknownPlan(plan.to_string()))?;
        let request = NewTenant::new(host)?.source(Source::Spare);
        let created = claim_spare_with(&mut conn, &*state.migrations, &request, |conn, created| {
            let set_path = q::set_local_path(&created.tenant.schema_name);
            let row = q::account_row(host.to_string(), plan_id);
            // The welcome job, in the claim's transaction (the statement
            // `appschema::jobs::enqueue` runs, on the async connection).
            #[cfg(feature = "jobs")]
            let welcome = appschema::jobs::TenantTask::new(
                created.tenant.id,
                &super::jobs::Welcome {
                    display_name: host.to_string(),
                },
            )
            .and_then(|task| Ok((task.metadata()?, task.queue)));
            #[cfg(feature = "jobs")]
            let tenant_id = created.tenant.id;
            async move {
                conn.batch_execute(&set_path).await?;
                diesel::insert_into(account::table)
                    .values(row)
                    .execute(conn)
                    .await?;
                #[cfg(feature = "jobs")]
                {
                    use diesel::sql_types::{BigInt, Text};
                    let (metadata, queue) = welcome
                        .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
                    diesel::sql_query(appschema::jobs::ENQUEUE_SQL)
                        .bind::<Text, _>(metadata)
                        .bind::<Text, _>(queue)
                        .bind::<BigInt, _>(tenant_id)
                        .execute(conn)
                        .await?;
                }
                Ok(())
            }
            .scope_boxed()
        })
        .await?;
        Ok(created)
    }

    /// Every plan.
    pub async fn plans(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Plan>> {
        q::all_plans().load(conn).await
    }

    /// The account's display name and plan.
    pub async fn account_with_plan(conn: &mut AsyncPgConnection) -> QueryResult<(String, Plan)> {
        q::account_with_plan().first(conn).await
    }

    /// The tenant's projects.
    pub async fn projects(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Project>> {
        q::all_projects().load(conn).await
    }

    /// A new project, unless the plan's limit is reached.
    pub(super) async fn create_project(
        conn: &mut AsyncPgConnection,
        name: String,
    ) -> QueryResult<Created<Project>> {
        conn.transaction(async move |conn| {
            let plan_id: i64 = q::account_plan_id_for_update().first(conn).await?;
            let plan: Plan = q::plan(plan_id).first(conn).await?;
            let count: i64 = q::project_count().get_result(conn).await?;
            if count >= i64::from(plan.max_projects) {
                return Ok(Created::OverLimit(plan.max_projects));
            }
            q::insert_project(name)
                .get_result(conn)
                .await
                .map(Created::Row)
        })
        .await
    }

    /// The project's tasks (`NotFound` when the project is not the tenant's).
    pub async fn tasks(conn: &mut AsyncPgConnection, project_id: i64) -> QueryResult<Vec<Task>> {
        q::project_id(project_id).first::<i64>(conn).await?;
        q::project_tasks(project_id).load(conn).await
    }

    /// A new task of the project (`NotFound` when it is not the tenant's).
    pub async fn create_task(
        conn: &mut AsyncPgConnection,
        project_id: i64,
        title: String,
    ) -> QueryResult<Task> {
        q::project_id(project_id).first::<i64>(conn).await?;
        q::insert_task(project_id, title).get_result(conn).await
    }

    /// [`super::page_data`], awaited.
    pub async fn page_data(conn: &mut AsyncPgConnection) -> QueryResult<PageData> {
        let (account, plan) = account_with_plan(conn).await?;
        let rows = q::projects_with_tasks().load(conn).await?;
        let all_plans = plans(conn).await?;
        Ok(PageData {
            account,
            plan,
            rows,
            all_plans,
        })
    }
}

// ---------------------------------------------------------------- apex ---

#[derive(Debug, Deserialize)]
struct SignupForm {
    name: String,
    #[serde(default)]
    plan: Option<String>,
}

#[derive(Debug, Serialize)]
struct SignedUp {
    host: String,
    schema: String,
    built_from: String,
    url: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// `POST /signup {"name": "acme", "plan": "free"}` on the apex: creates the
/// tenant `acme.localhost` at request time, from a spare schema when one is
/// left (else the migrations), with its account row, in one transaction.
async fn signup(State(state): State<AppState>, Json(form): Json<SignupForm>) -> Response {
    let label = form.name.trim().to_ascii_lowercase();
    let valid = (1..=30).contains(&label.len())
        && label.starts_with(|c: char| c.is_ascii_lowercase())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: 1 to 30 of a-z, 0-9 and '-', starting with a letter",
        );
    }
    let host = format!("{label}.{}", state.apex);
    let plan = form.plan.unwrap_or_else(|| "free".to_string());
    match sign_up(&state, host.clone(), plan).await {
        Ok(created) => {
            // Refill the spares off the request path. Building a schema runs
            // the migrations, blocking diesel: a blocking thread on both
            // paths.
            let refill = state.clone();
            tokio::task::spawn_blocking(move || {
                if let Ok(mut conn) = refill.pool.get_shared() {
                    if let Err(e) = provision::ensure_spares(&mut conn, &*refill.migrations, SPARES)
                    {
                        eprintln!("saas: could not top up the spares: {e}");
                    }
                }
            });
            (
                StatusCode::CREATED,
                Json(SignedUp {
                    url: format!("http://{host}:{}/", state.port),
                    host,
                    schema: created.tenant.schema_name.to_string(),
                    built_from: created.source.to_string(),
                }),
            )
                .into_response()
        }
        Err(SignupError::Provision(ProvisionError::TenantExists { .. })) => {
            error(StatusCode::CONFLICT, format!("{host} is taken"))
        }
        Err(SignupError::UnknownPlan(plan)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("no plan `{plan}`"),
        ),
        Err(SignupError::Panicked(e)) => {
            eprintln!("saas: sign-up of {host} panicked: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "sign-up failed")
        }
        // The connection was lost (failover, restart) or none could be had:
        // the sign-up was one transaction, so nothing of it stayed; the
        // client may send it again.
        Err(e) if e.is_transient() => {
            eprintln!("saas: sign-up of {host} failed, retry later: {e}");
            unavailable("sign-up failed: database unavailable, retry later")
        }
        Err(e) => {
            eprintln!("saas: sign-up of {host} failed: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "sign-up failed")
        }
    }
}

/// Creates the tenant `host` on `plan`: on the async path by claiming a
/// spare on the request's task; on the blocking path, or when no spare is
/// ready (the schema is then built by its migrations), on a blocking thread.
async fn sign_up(
    state: &AppState,
    host: String,
    plan: String,
) -> Result<provision::Created, SignupError> {
    #[cfg(feature = "async")]
    if let Some(pool) = &state.async_pool {
        if let Some(created) = on_async::claim(state, pool, &host, &plan).await? {
            return Ok(created);
        }
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || create_tenant(&state, &host, &plan))
        .await
        .map_err(|e| SignupError::Panicked(e.to_string()))?
}

#[derive(Debug, thiserror::Error)]
enum SignupError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("no plan `{0}`")]
    UnknownPlan(String),
    #[error(transparent)]
    Connection(#[from] appschema::ConnectionError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("{0}")]
    Panicked(String),
    #[cfg(feature = "jobs")]
    #[error(transparent)]
    Job(#[from] appschema::jobs::JobError),
}

impl SignupError {
    /// Whether trying again later may succeed: the database was unreachable
    /// or the connection was lost.
    fn is_transient(&self) -> bool {
        match self {
            SignupError::Connection(e) => e.is_transient(),
            SignupError::Query(e) | SignupError::Provision(ProvisionError::Database(e)) => {
                is_connection_lost(e)
            }
            // Errors that reach us only as text (a migration's).
            e => is_connection_lost_message(&e.to_string()),
        }
    }
}

/// `503` with `Retry-After`, as the library's own answers carry it.
fn unavailable(message: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
    response
}

/// The tenant, its schema and its account row commit together: the row is
/// written by a lifecycle hook, inside the creating transaction, on the new
/// tenant's path.
fn create_tenant(
    state: &AppState,
    host: &str,
    plan: &str,
) -> Result<provision::Created, SignupError> {
    let mut conn = state.pool.get_shared()?;
    let plan_id: i64 = q::plan_id(plan.to_string())
        .first(&mut *conn)
        .optional()?
        .ok_or_else(|| SignupError::UnknownPlan(plan.to_string()))?;
    let owner = host.to_string();
    let hooks = Hooks::new().after_create("account-row", move |conn, tenant| {
        diesel::insert_into(account::table)
            .values(q::account_row(owner.clone(), plan_id))
            .execute(conn)?;
        // The welcome job commits with the tenant, or not at all.
        #[cfg(feature = "jobs")]
        appschema::jobs::enqueue(
            conn,
            tenant.id,
            &jobs::Welcome {
                display_name: owner.clone(),
            },
        )?;
        #[cfg(not(feature = "jobs"))]
        let _ = tenant;
        Ok(())
    });
    let request = NewTenant::new(host)?.source(Source::Spare).hooks(hooks);
    Ok(provision::create_tenant(
        &mut conn,
        &*state.migrations,
        &request,
    )?)
}

async fn apex_page(State(state): State<AppState>) -> String {
    let port = state.port;
    format!(
        "appschema saas example: this is the apex host.\n\
         Sign up a tenant:\n  \
         curl -X POST -H 'content-type: application/json' -d '{{\"name\":\"acme\"}}' http://localhost:{port}/signup\n\
         Then visit http://acme.localhost:{port}/\n"
    )
}

// -------------------------------------------------------------- tenant ---

/// A plan, as the shared table holds it.
#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = plans)]
pub struct Plan {
    /// Row id.
    pub id: i64,
    /// `free`, `pro`.
    pub name: String,
    /// How many projects a tenant on it may have.
    pub max_projects: i32,
    /// Monthly price.
    pub price_cents: i32,
}

/// One of a tenant's projects.
#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = projects)]
pub struct Project {
    /// Row id.
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// One task of a project.
#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = tasks)]
pub struct Task {
    /// Row id.
    pub id: i64,
    /// The project.
    pub project_id: i64,
    /// What to do.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

#[derive(Debug, Serialize)]
struct Account {
    tenant: String,
    schema: String,
    display_name: String,
    plan: Plan,
}

#[derive(Debug, Deserialize)]
struct NewProject {
    name: String,
}

#[derive(Debug, Deserialize)]
struct NewTask {
    title: String,
}

async fn get_account(
    State(state): State<AppState>,
    tenant: CurrentTenant,
) -> Result<Json<Account>, TenantDbError> {
    let (display_name, plan) = 'run: {
        #[cfg(feature = "async")]
        if let Some(pool) = &state.async_pool {
            break 'run tenant
                .read_retrying_async(pool, |conn| on_async::account_with_plan(conn).scope_boxed())
                .await?;
        }
        tenant
            .read_retrying(&state.pool, |conn| q::account_with_plan().first(conn))
            .await?
    };
    let CurrentTenant(tenant) = tenant;
    Ok(Json(Account {
        schema: tenant.schema_name.to_string(),
        tenant: tenant.public_name,
        display_name,
        plan,
    }))
}

/// `GET /api/plans`: a read, run again on a fresh connection if the
/// connection is lost (`read_shared_retrying`).
async fn list_plans(State(state): State<AppState>) -> Result<Json<Vec<Plan>>, Response> {
    let unavailable = |e: String| {
        eprintln!("saas: cannot list plans: {e}");
        unavailable("database unavailable")
    };
    #[cfg(feature = "async")]
    if let Some(pool) = &state.async_pool {
        return pool
            .read_shared_retrying(|conn| {
                async move { Ok::<_, appschema::ConnectionError>(on_async::plans(conn).await?) }
                    .scope_boxed()
            })
            .await
            .map(Json)
            .map_err(|e| unavailable(e.to_string()));
    }
    let pool = state.pool.clone();
    let plans = tokio::task::spawn_blocking(move || {
        pool.read_shared_retrying(|conn| {
            Ok::<_, appschema::ConnectionError>(q::all_plans().load(conn)?)
        })
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    plans.map(Json).map_err(unavailable)
}

/// `GET /api/projects`: the tenant's projects (the benchmarked endpoint).
/// Like every read of the app, a read-only unit run again on a fresh
/// connection if the connection is lost (`read_retrying`), so a failover
/// or a restart does not fail it.
pub async fn list_projects(
    State(state): State<AppState>,
    tenant: CurrentTenant,
) -> Result<Json<Vec<Project>>, TenantDbError> {
    #[cfg(feature = "async")]
    if let Some(pool) = &state.async_pool {
        let rows = tenant
            .read_retrying_async(pool, |conn| on_async::projects(conn).scope_boxed())
            .await?;
        return Ok(Json(rows));
    }
    let rows = tenant
        .read_retrying(&state.pool, |conn| q::all_projects().load(conn))
        .await?;
    Ok(Json(rows))
}

enum Created<T> {
    Row(T),
    OverLimit(i32),
}

async fn create_project(
    State(state): State<AppState>,
    tenant: CurrentTenant,
    Json(new): Json<NewProject>,
) -> Result<Response, TenantDbError> {
    let name = new.name.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Ok(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: 1 to 200 bytes",
        ));
    }
    let outcome = 'run: {
        #[cfg(feature = "async")]
        if let Some(pool) = &state.async_pool {
            let mut conn = tenant.conn(pool).await?;
            break 'run on_async::create_project(&mut conn, name)
                .await
                .map_err(|e| tenant.query_failed(e))?;
        }
        tenant
            .run(&state.pool, move |conn| {
                conn.transaction(|conn| {
                    let plan_id: i64 = q::account_plan_id_for_update().first(conn)?;
                    let plan: Plan = q::plan(plan_id).first(conn)?;
                    let count: i64 = q::project_count().get_result(conn)?;
                    if count >= i64::from(plan.max_projects) {
                        return Ok(Created::OverLimit(plan.max_projects));
                    }
                    q::insert_project(name).get_result(conn).map(Created::Row)
                })
            })
            .await?
    };
    Ok(match outcome {
        Created::Row(project) => (StatusCode::CREATED, Json(project)).into_response(),
        Created::OverLimit(max) => error(
            StatusCode::PAYMENT_REQUIRED,
            format!("your plan allows {max} projects: upgrade to add more"),
        ),
    })
}

async fn list_tasks(
    State(state): State<AppState>,
    tenant: CurrentTenant,
    UrlPath(project_id): UrlPath<i64>,
) -> Result<Json<Vec<Task>>, TenantDbError> {
    #[cfg(feature = "async")]
    if let Some(pool) = &state.async_pool {
        let rows = tenant
            .read_retrying_async(pool, |conn| on_async::tasks(conn, project_id).scope_boxed())
            .await?;
        return Ok(Json(rows));
    }
    let rows = tenant
        .read_retrying(&state.pool, move |conn| {
            // 404 (diesel's NotFound) when the project is not this tenant's.
            q::project_id(project_id).first::<i64>(conn)?;
            q::project_tasks(project_id).load(conn)
        })
        .await?;
    Ok(Json(rows))
}

async fn create_task(
    State(state): State<AppState>,
    tenant: CurrentTenant,
    UrlPath(project_id): UrlPath<i64>,
    Json(new): Json<NewTask>,
) -> Result<Response, TenantDbError> {
    let title = new.title.trim().to_string();
    if title.is_empty() || title.len() > 500 {
        return Ok(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "title: 1 to 500 bytes",
        ));
    }
    let task = 'run: {
        #[cfg(feature = "async")]
        if let Some(pool) = &state.async_pool {
            let mut conn = tenant.conn(pool).await?;
            break 'run on_async::create_task(&mut conn, project_id, title)
                .await
                .map_err(|e| tenant.query_failed(e))?;
        }
        tenant
            .run(&state.pool, move |conn| {
                q::project_id(project_id).first::<i64>(conn)?;
                q::insert_task(project_id, title).get_result(conn)
            })
            .await?
    };
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

/// What the tenant page shows: three queries, one joining an isolated table
/// (`account`) with a shared one (`plans`).
pub struct PageData {
    /// The account's display name.
    pub account: String,
    /// Its plan (a shared row, joined).
    pub plan: Plan,
    /// Its projects, each with its tasks (if any).
    pub rows: Vec<(Project, Option<Task>)>,
    /// Every plan.
    pub all_plans: Vec<Plan>,
}

/// Reads the tenant page's data on a connection on the tenant's path.
pub fn page_data(conn: &mut PgConnection) -> QueryResult<PageData> {
    let (account, plan) = q::account_with_plan().first(conn)?;
    let rows = q::projects_with_tasks().load(conn)?;
    let all_plans = q::all_plans().load(conn)?;
    Ok(PageData {
        account,
        plan,
        rows,
        all_plans,
    })
}

/// `GET /` on a tenant host: a minimal HTML page of its projects and tasks.
async fn tenant_page(
    State(state): State<AppState>,
    tenant: CurrentTenant,
) -> Result<Html<String>, TenantDbError> {
    let data = 'run: {
        #[cfg(feature = "async")]
        if let Some(pool) = &state.async_pool {
            break 'run tenant
                .read_retrying_async(pool, |conn| on_async::page_data(conn).scope_boxed())
                .await?;
        }
        tenant.read_retrying(&state.pool, page_data).await?
    };
    Ok(Html(render_page(data, tenant.0.schema_name.as_str())))
}

/// The tenant page's HTML.
pub fn render_page(data: PageData, schema: &str) -> String {
    let PageData {
        account,
        plan,
        rows,
        all_plans,
    } = data;
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>{name}</title>\
         <h1>{name}</h1><p>Plan: <b>{plan}</b> (up to {max} projects). Schema: <code>{schema}</code></p>\
         <h2>Projects</h2><ul>",
        name = escape(&account),
        plan = escape(&plan.name),
        max = plan.max_projects,
        schema = escape(schema),
    );
    let mut current = None;
    for (project, task) in rows {
        if current != Some(project.id) {
            if current.is_some() {
                html.push_str("</ul></li>");
            }
            current = Some(project.id);
            html.push_str(&format!("<li>{}<ul>", escape(&project.name)));
        }
        if let Some(task) = task {
            let mark = if task.done { "&#x2611;" } else { "&#x2610;" };
            html.push_str(&format!("<li>{mark} {}</li>", escape(&task.title)));
        }
    }
    if current.is_some() {
        html.push_str("</ul></li>");
    }
    html.push_str("</ul><h2>Plans (shared by every tenant)</h2><ul>");
    for p in all_plans {
        html.push_str(&format!(
            "<li>{}: {} projects, {}.{:02} $/month</li>",
            escape(&p.name),
            p.max_projects,
            p.price_cents / 100,
            p.price_cents % 100
        ));
    }
    html.push_str("</ul>");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
