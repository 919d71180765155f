//! The saas example's application: tables, routes, handlers and start-up.
//! Shared by `main.rs` (the program) and `tests/saas.rs` (HTTP tests against
//! the running app). Its tables are in `schema.rs`, the schema source the
//! migration planner reads: its `#[appschema::shared]` /
//! `#[appschema::isolated]` modules decide each migration's scope.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use appschema::axum::{CurrentTenant, TenantDbError, TenantLayer};
use appschema::migrate::Migrator;
use appschema::provision::{self, NewTenant, ProvisionError, Source};
use appschema::resolve::{normalize_host, Resolver};
use appschema::{Migration, MigrationSet, SchemaName, SharedPool};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

// The tables live in their own file, which the planner reads
// (`appschema-cli prepare --schema-file schema.rs`): editing this one leaves
// the prepared plan valid.
#[path = "schema.rs"]
mod schema;
pub use schema::{shared, tenant};

use shared::plans;
use tenant::{account, projects, tasks};

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

/// Everything a handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Tenant-scoped connections for every tenant.
    pub pool: SharedPool,
    /// Provisioning builds new tenants with these.
    pub migrations: Arc<MigrationSet>,
    /// The apex host (`localhost`): sign-ups go there, tenants live under it.
    pub apex: String,
    /// The port printed in URLs.
    pub port: u16,
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
/// the spares, and serves the app on `127.0.0.1:port` (0: any free port).
pub async fn start(
    database_url: &str,
    port: u16,
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
    // Two pools. Tenant work checks connections out of the SharedPool, which
    // puts each on the tenant's search_path. The resolver (host -> tenant)
    // reads the registry through a plain r2d2 pool of its own: its lookups
    // (one per host not yet cached) then never wait behind tenant work for a
    // connection, and a flood of unknown hosts cannot starve the tenants.
    let pool = SharedPool::builder(&url).max_size(16).build()?;
    let registry_pool = Pool::builder()
        .max_size(4)
        .build(ConnectionManager::<PgConnection>::new(&url))?;
    serve(pool, registry_pool, migrations, port).await
}

/// Serves the app on `127.0.0.1:port` (0: any free port) over a database
/// already migrated: tenant work on `pool`, the resolver's registry lookups
/// on `registry_pool`. Tests call it with the pools of their
/// `appschema_test::TestDatabase`.
pub async fn serve(
    pool: SharedPool,
    registry_pool: Pool<ConnectionManager<PgConnection>>,
    migrations: Arc<MigrationSet>,
    port: u16,
) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let resolver = Arc::new(Resolver::builder().build(registry_pool));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let state = AppState {
        pool,
        migrations,
        apex: "localhost".to_string(),
        port: addr.port(),
    };
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
    let apex_host = state.apex.clone();
    let apex = Router::new()
        .route("/", get(apex_page))
        .route("/signup", axum::routing::post(signup))
        .route("/api/plans", get(list_plans))
        .with_state(state.clone());
    let tenants = tenant_routes()
        .with_state(state)
        .layer(TenantLayer::new(resolver));
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let to_apex = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| normalize_host(h).ok())
            .is_some_and(|name| name.as_str() == apex_host || name.as_str() == "127.0.0.1");
        let target = if to_apex {
            apex.clone()
        } else {
            tenants.clone()
        };
        target.oneshot(req)
    }))
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
    let work_state = state.clone();
    let work_host = host.clone();
    let outcome =
        tokio::task::spawn_blocking(move || create_tenant(&work_state, &work_host, &plan))
            .await
            .map_err(|e| e.to_string());
    match outcome {
        Ok(Ok(created)) => {
            // Refill the spares off the request path.
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
        Ok(Err(SignupError::Provision(ProvisionError::TenantExists { .. }))) => {
            error(StatusCode::CONFLICT, format!("{host} is taken"))
        }
        Ok(Err(SignupError::UnknownPlan(plan))) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("no plan `{plan}`"),
        ),
        Ok(Err(e)) => {
            eprintln!("saas: sign-up of {host} failed: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "sign-up failed")
        }
        Err(e) => {
            eprintln!("saas: sign-up of {host} panicked: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "sign-up failed")
        }
    }
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
}

/// The tenant, its schema and its account row commit together.
fn create_tenant(
    state: &AppState,
    host: &str,
    plan: &str,
) -> Result<provision::Created, SignupError> {
    let mut conn = state.pool.get_shared()?;
    let created = conn.transaction(|conn| -> Result<_, SignupError> {
        let plan_id: i64 = plans::table
            .filter(plans::name.eq(plan))
            .select(plans::id)
            .first(conn)
            .optional()?
            .ok_or_else(|| SignupError::UnknownPlan(plan.to_string()))?;
        let request = NewTenant::new(host)?.source(Source::Spare);
        let created = provision::create_tenant(conn, &*state.migrations, &request)?;
        conn.batch_execute(&format!(
            "SET LOCAL search_path TO {}, public",
            created.tenant.schema_name.quoted()
        ))?;
        diesel::insert_into(account::table)
            .values((account::display_name.eq(host), account::plan_id.eq(plan_id)))
            .execute(conn)?;
        Ok(created)
    })?;
    // create_tenant invalidated the resolvers before our outer commit; do it
    // again now that the tenant is visible, so no stale "unknown" survives.
    appschema::resolve::invalidate_all();
    Ok(created)
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

fn account_with_plan(conn: &mut PgConnection) -> QueryResult<(String, Plan)> {
    // One query over an isolated and a shared table.
    account::table
        .inner_join(plans::table)
        .select((account::display_name, Plan::as_select()))
        .first(conn)
}

async fn get_account(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
) -> Result<Json<Account>, TenantDbError> {
    let schema = tenant.schema_name.to_string();
    let (display_name, plan) = run(&state, &tenant.schema_name, account_with_plan).await?;
    Ok(Json(Account {
        tenant: tenant.public_name,
        schema,
        display_name,
        plan,
    }))
}

async fn run<T: Send + 'static>(
    state: &AppState,
    schema: &SchemaName,
    work: impl FnOnce(&mut PgConnection) -> QueryResult<T> + Send + 'static,
) -> Result<T, TenantDbError> {
    appschema::axum::run_for_tenant(&state.pool, schema, work).await
}

async fn list_plans(State(state): State<AppState>) -> Result<Json<Vec<Plan>>, Response> {
    let pool = state.pool.clone();
    let plans = tokio::task::spawn_blocking(move || -> Result<Vec<Plan>, String> {
        let mut conn = pool.get_shared().map_err(|e| e.to_string())?;
        plans::table
            .order(plans::id)
            .select(Plan::as_select())
            .load(&mut *conn)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    plans.map(Json).map_err(|e| {
        eprintln!("saas: cannot list plans: {e}");
        error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    })
}

/// `GET /api/projects`: the tenant's projects (the benchmarked endpoint).
pub async fn list_projects(
    State(state): State<AppState>,
    tenant: CurrentTenant,
) -> Result<Json<Vec<Project>>, TenantDbError> {
    let rows = tenant
        .run(&state.pool, |conn| {
            projects::table
                .order(projects::id)
                .select(Project::as_select())
                .load(conn)
        })
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
    let outcome = tenant
        .run(&state.pool, move |conn| {
            conn.transaction(|conn| {
                // Lock the account row so concurrent creations respect the limit.
                // (Only the tenant's row: locking the shared plan row would
                // serialize every tenant on that plan.)
                let plan_id: i64 = account::table
                    .select(account::plan_id)
                    .for_update()
                    .first(conn)?;
                let plan: Plan = plans::table
                    .find(plan_id)
                    .select(Plan::as_select())
                    .first(conn)?;
                let count: i64 = projects::table.count().get_result(conn)?;
                if count >= i64::from(plan.max_projects) {
                    return Ok(Created::OverLimit(plan.max_projects));
                }
                diesel::insert_into(projects::table)
                    .values(projects::name.eq(&name))
                    .returning(Project::as_returning())
                    .get_result(conn)
                    .map(Created::Row)
            })
        })
        .await?;
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
    let rows = tenant
        .run(&state.pool, move |conn| {
            // 404 (diesel's NotFound) when the project is not this tenant's.
            projects::table
                .find(project_id)
                .select(projects::id)
                .first::<i64>(conn)?;
            tasks::table
                .filter(tasks::project_id.eq(project_id))
                .order(tasks::id)
                .select(Task::as_select())
                .load(conn)
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
    let task = tenant
        .run(&state.pool, move |conn| {
            projects::table
                .find(project_id)
                .select(projects::id)
                .first::<i64>(conn)?;
            diesel::insert_into(tasks::table)
                .values((tasks::project_id.eq(project_id), tasks::title.eq(&title)))
                .returning(Task::as_returning())
                .get_result(conn)
        })
        .await?;
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
    let (account, plan) = account_with_plan(conn)?;
    let rows: Vec<(Project, Option<Task>)> = projects::table
        .left_join(tasks::table)
        .order((projects::id, tasks::id.nullable()))
        .select((Project::as_select(), Option::<Task>::as_select()))
        .load(conn)?;
    let all_plans = plans::table
        .order(plans::id)
        .select(Plan::as_select())
        .load(conn)?;
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
    let data = tenant.run(&state.pool, page_data).await?;
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
