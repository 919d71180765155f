//! What workers need to run tenant jobs (the application's pool and its job
//! types), and the workers themselves: fang's `WorkerPool` over a queue that
//! goes through that pool.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use appschema_core::registry::{Tenant, TenantRow};
use appschema_core::{ConnectionError, SharedPool};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use fang::{
    FangError, FangTaskState, Queue, QueueError, Queueable, RetentionMode, Runnable, SleepParams,
    Task, WorkerPool,
};
use uuid::Uuid;

use crate::error::JobError;
use crate::task::{TenantJob, TenantTask, DEFAULT_QUEUE};

type Runner = fn(&serde_json::Value, &mut PgConnection, &Tenant) -> Result<(), JobError>;

fn run_as<J: TenantJob>(
    payload: &serde_json::Value,
    conn: &mut PgConnection,
    tenant: &Tenant,
) -> Result<(), JobError> {
    let job: J = serde_json::from_value(payload.clone()).map_err(|error| JobError::Payload {
        job: J::NAME.to_string(),
        error,
    })?;
    job.run(conn, tenant)
}

/// The application's pool and the job types its workers can run.
#[derive(Clone)]
pub struct Context {
    pool: SharedPool,
    jobs: HashMap<&'static str, Runner>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.jobs.keys().collect();
        names.sort();
        f.debug_struct("Context")
            .field("jobs", &names)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context on `pool`: jobs check their tenant's connection out of it,
    /// and the workers reach the queue through its shared connections.
    pub fn new(pool: SharedPool) -> Context {
        Context {
            pool,
            jobs: HashMap::new(),
        }
    }

    /// Registers the job type `J` under [`TenantJob::NAME`].
    pub fn register<J: TenantJob>(mut self) -> Context {
        self.jobs.insert(J::NAME, run_as::<J>);
        self
    }

    /// The pool.
    pub fn pool(&self) -> &SharedPool {
        &self.pool
    }

    /// Runs `task` for its tenant: resolves the tenant id to the tenant's
    /// current schema, and runs the job there in one transaction holding a
    /// share lock on the tenant's registry row (a rename or drop waits for
    /// it). A rename between the resolution and the lock is followed.
    pub(crate) fn run(&self, task: &TenantTask) -> Result<(), JobError> {
        let runner = *self
            .jobs
            .get(task.job.as_str())
            .ok_or_else(|| JobError::UnknownJob(task.job.clone()))?;
        let gone = || JobError::TenantGone {
            tenant_id: task.tenant_id,
            job: task.job.clone(),
        };
        loop {
            let resolved = {
                let mut conn = self.pool.get_shared()?;
                tenant_by_id(&mut conn, task.tenant_id, "")?.ok_or_else(gone)?
            };
            let mut conn = self.pool.get_for(&resolved.schema_name)?;
            let ran = conn.transaction(|conn| {
                let Some(tenant) = tenant_by_id(conn, task.tenant_id, "FOR SHARE")? else {
                    return Err(gone());
                };
                if tenant.schema_name != resolved.schema_name {
                    return Ok(false); // renamed meanwhile: resolve again
                }
                runner(&task.payload, conn, &tenant)?;
                Ok(true)
            })?;
            if ran {
                return Ok(());
            }
        }
    }
}

fn tenant_by_id(conn: &mut PgConnection, id: i64, lock: &str) -> QueryResult<Option<Tenant>> {
    diesel::sql_query(format!(
        "SELECT id, public_name, schema_name FROM public.appschema_tenants WHERE id = $1 {lock}"
    ))
    .bind::<BigInt, _>(id)
    .get_result::<TenantRow>(conn)
    .optional()?
    .map(TenantRow::into_tenant)
    .transpose()
}

thread_local! {
    /// The context of the worker running on this thread, set when it fetches
    /// a task (fang hands a task only the queue, as `&dyn Queueable`).
    static CURRENT: RefCell<Option<Arc<Context>>> = const { RefCell::new(None) };
    /// The error that ended the current task for good, if one did.
    static PERMANENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn run_in_current<T>(
    f: impl FnOnce(&Context) -> Result<T, JobError>,
) -> Result<T, JobError> {
    let ctx = CURRENT
        .with(|c| c.borrow().clone())
        .ok_or(JobError::NoContext)?;
    f(&ctx)
}

/// fang's error for `e`, noting on this thread that the task must not be
/// retried when `e` is permanent.
pub(crate) fn report(e: JobError) -> FangError {
    let description = e.to_string();
    if e.is_permanent() {
        PERMANENT.with(|p| *p.borrow_mut() = Some(description.clone()));
    }
    FangError { description }
}

pub(crate) fn permanent_failure() -> bool {
    PERMANENT.with(|p| p.borrow().is_some())
}

/// fang's queue, reached through the application's [`SharedPool`] (shared
/// `search_path`, checkout hygiene), carrying the [`Context`] to the tasks.
#[derive(Clone)]
struct TenantQueue {
    ctx: Arc<Context>,
}

fn queue_error(e: ConnectionError) -> QueueError {
    // fang's error has no variant for a pool other than its own; it only
    // logs what a worker's queue call returns.
    QueueError::DieselError(diesel::result::Error::QueryBuilderError(Box::new(e)))
}

impl TenantQueue {
    fn conn(&self) -> Result<appschema_core::TenantConnection, QueueError> {
        self.ctx.pool.get_shared().map_err(queue_error)
    }
}

impl Queueable for TenantQueue {
    fn fetch_and_touch_task(&self, task_type: String) -> Result<Option<Task>, QueueError> {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.ctx.clone()));
        PERMANENT.with(|p| *p.borrow_mut() = None);
        Queue::fetch_and_touch_query(&mut *self.conn()?, task_type)
    }

    fn insert_task(&self, params: &dyn Runnable) -> Result<Task, QueueError> {
        Queue::insert_query(&mut *self.conn()?, params, fang::Utc::now())
    }

    fn remove_all_tasks(&self) -> Result<usize, QueueError> {
        Queue::remove_all_tasks_query(&mut *self.conn()?)
    }

    fn remove_all_scheduled_tasks(&self) -> Result<usize, QueueError> {
        Queue::remove_all_scheduled_tasks_query(&mut *self.conn()?)
    }

    fn remove_tasks_of_type(&self, task_type: &str) -> Result<usize, QueueError> {
        Queue::remove_tasks_of_type_query(&mut *self.conn()?, task_type)
    }

    fn remove_task(&self, id: &Uuid) -> Result<usize, QueueError> {
        let mut conn = self.conn()?;
        // A task ended by a permanent error is kept, failed, whatever the
        // retention mode: its record says why it never ran.
        if let Some(error) = PERMANENT.with(|p| p.borrow().clone()) {
            if let Some(task) = Queue::find_task_by_id_query(&mut conn, id) {
                Queue::fail_task_query(&mut conn, &task, &error)?;
                return Ok(0);
            }
        }
        Queue::remove_task_query(&mut conn, id)
    }

    fn remove_task_by_metadata(&self, task: &dyn Runnable) -> Result<usize, QueueError> {
        if !task.uniq() {
            return Err(QueueError::TaskNotUniqError);
        }
        Queue::remove_task_by_metadata_query(&mut *self.conn()?, task)
    }

    fn find_task_by_id(&self, id: &Uuid) -> Option<Task> {
        Queue::find_task_by_id_query(&mut *self.conn().ok()?, id)
    }

    fn update_task_state(&self, task: &Task, state: FangTaskState) -> Result<Task, QueueError> {
        Queue::update_task_state_query(&mut *self.conn()?, task, state)
    }

    fn fail_task(&self, task: &Task, error: &str) -> Result<Task, QueueError> {
        Queue::fail_task_query(&mut *self.conn()?, task, error)
    }

    fn schedule_task(&self, task: &dyn Runnable) -> Result<Task, QueueError> {
        Queue::schedule_task_query(&mut *self.conn()?, task)
    }

    fn schedule_retry(
        &self,
        task: &Task,
        backoff_seconds: u32,
        error: &str,
    ) -> Result<Task, QueueError> {
        let mut conn = self.conn()?;
        if permanent_failure() {
            return Queue::fail_task_query(&mut conn, task, error);
        }
        Queue::schedule_retry_query(&mut conn, task, backoff_seconds, error)
    }
}

/// Worker threads running tenant jobs: fang's `WorkerPool`, on a queue
/// reached through the [`Context`]'s pool. They run until the process exits
/// (fang restarts a worker thread that panics).
///
/// ```no_run
/// # use appschema::jobs::{Context, Workers};
/// # let pool = appschema::SharedPool::builder("postgres:///app").build()?;
/// Workers::new(Context::new(pool))
///     .number_of_workers(4)
///     .poll_interval(std::time::Duration::from_millis(500))
///     .start()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Workers {
    context: Context,
    number_of_workers: u32,
    queue: String,
    poll_interval: Duration,
    max_poll_interval: Duration,
    retention: RetentionMode,
}

impl Workers {
    /// Workers for `context`'s jobs: 1 worker on [`DEFAULT_QUEUE`], polling
    /// every second (backing off to 5 s while idle), removing finished
    /// tasks (failed ones are kept).
    pub fn new(context: Context) -> Workers {
        Workers {
            context,
            number_of_workers: 1,
            queue: DEFAULT_QUEUE.to_string(),
            poll_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(5),
            retention: RetentionMode::RemoveFinished,
        }
    }

    /// How many worker threads (default 1). Each holds at most one pool
    /// connection at a time.
    pub fn number_of_workers(mut self, n: u32) -> Workers {
        self.number_of_workers = n;
        self
    }

    /// The fang task type to run (default [`DEFAULT_QUEUE`]).
    pub fn queue(mut self, queue: impl Into<String>) -> Workers {
        self.queue = queue.into();
        self
    }

    /// How long an idle worker waits before polling again (default 1 s); it
    /// backs off to five times that while the queue stays empty.
    pub fn poll_interval(mut self, interval: Duration) -> Workers {
        self.poll_interval = interval;
        self.max_poll_interval = interval * 5;
        self
    }

    /// What fang keeps of finished tasks (default
    /// `RetentionMode::RemoveFinished`). Tasks ended by
    /// [`JobError::TenantGone`] are kept as failed in every mode.
    pub fn retention(mut self, mode: RetentionMode) -> Workers {
        self.retention = mode;
        self
    }

    /// Starts the worker threads.
    pub fn start(self) -> Result<(), JobError> {
        let queue = TenantQueue {
            ctx: Arc::new(self.context),
        };
        let sleep = SleepParams {
            sleep_period: self.poll_interval,
            max_sleep_period: self.max_poll_interval,
            min_sleep_period: self.poll_interval,
            sleep_step: self.poll_interval,
        };
        WorkerPool::<TenantQueue>::builder()
            .queue(queue)
            .number_of_workers(self.number_of_workers)
            .task_type(self.queue)
            .sleep_params(sleep)
            .retention_mode(self.retention)
            .build()
            .start()
            .map_err(|e| JobError::failed(format!("cannot start the workers: {}", e.description)))
    }
}
