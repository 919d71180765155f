//! The two fang tasks this crate defines: [`TenantTask`] (one job for one
//! tenant) and [`ForEveryTenant`] (enqueues one [`TenantTask`] per tenant).

use appschema_core::registry::Tenant;
use diesel::prelude::*;
use diesel::sql_types::Text;
use fang::typetag;
use fang::{FangError, Queueable, Runnable, Scheduled};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context;
use crate::error::JobError;

/// The fang task type (queue) tenant jobs go to unless
/// [`TenantJob::queue`] names another.
pub const DEFAULT_QUEUE: &str = "appschema";

/// Work done for one tenant, outside a request.
///
/// The job's fields are its payload (stored as JSON in `fang_tasks`);
/// [`run`](TenantJob::run) receives a connection on the tenant's
/// `search_path`, inside a transaction that commits when it returns `Ok`
/// and rolls back otherwise (then fang retries the job with backoff, up to
/// [`max_retries`](TenantJob::max_retries) times).
///
/// ```
/// use appschema::jobs::{JobError, TenantJob};
/// use appschema::registry::Tenant;
/// use diesel::prelude::*;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct CloseDay;
///
/// impl TenantJob for CloseDay {
///     const NAME: &'static str = "close_day";
///     fn run(&self, conn: &mut PgConnection, _tenant: &Tenant) -> Result<(), JobError> {
///         diesel::sql_query("UPDATE orders SET closed = true WHERE NOT closed").execute(conn)?;
///         Ok(())
///     }
/// }
/// ```
pub trait TenantJob: Serialize + DeserializeOwned + 'static {
    /// The job's name, stored with each task: the worker finds the type to
    /// run by it, so keep it stable across releases.
    const NAME: &'static str;

    /// Does the work, on a connection scoped to `tenant` (its current
    /// schema), inside the job's transaction.
    fn run(&self, conn: &mut PgConnection, tenant: &Tenant) -> Result<(), JobError>;

    /// How many times a failed run is retried (fang's default: 20).
    fn max_retries(&self) -> i32 {
        fang::runnable::RETRIES_NUMBER
    }

    /// The fang task type the job is queued under; [`Workers`](crate::Workers)
    /// of that queue run it.
    fn queue(&self) -> &str {
        DEFAULT_QUEUE
    }
}

/// A [`TenantJob`] as fang stores it: the tenant's registry id, the job's
/// name and its payload. Built by [`enqueue`](crate::enqueue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantTask {
    /// `appschema_tenants.id`: the tenant, whatever its names become.
    pub tenant_id: i64,
    /// [`TenantJob::NAME`].
    pub job: String,
    /// The job, serialized.
    pub payload: serde_json::Value,
    /// [`TenantJob::queue`].
    pub queue: String,
    /// [`TenantJob::max_retries`].
    pub max_retries: i32,
}

impl TenantTask {
    /// The task for `job`, for the tenant with registry id `tenant_id`.
    pub fn new<J: TenantJob>(tenant_id: i64, job: &J) -> Result<TenantTask, JobError> {
        Ok(TenantTask {
            tenant_id,
            job: J::NAME.to_string(),
            payload: serde_json::to_value(job).map_err(|error| JobError::Payload {
                job: J::NAME.to_string(),
                error,
            })?,
            queue: job.queue().to_string(),
            max_retries: job.max_retries(),
        })
    }
}

impl TenantTask {
    /// The task as fang stores it in `fang_tasks.metadata` (JSON text,
    /// tagged with its fang task type).
    pub fn metadata(&self) -> Result<String, JobError> {
        serde_json::to_string(self as &dyn Runnable).map_err(|error| JobError::Payload {
            job: self.job.clone(),
            error,
        })
    }
}

#[typetag::serde(name = "appschema_tenant_job")]
impl Runnable for TenantTask {
    fn run(&self, _queue: &dyn Queueable) -> Result<(), FangError> {
        context::run_in_current(|ctx| ctx.run(self)).map_err(context::report)
    }

    fn task_type(&self) -> String {
        self.queue.clone()
    }

    fn max_retries(&self) -> i32 {
        // A job whose tenant is gone is failed, never retried.
        if context::permanent_failure() {
            0
        } else {
            self.max_retries
        }
    }
}

/// A fan-out: when it runs it enqueues one [`TenantTask`] for every tenant
/// in the registry at that moment, in one statement (every tenant once, or
/// none if it fails). With a cron pattern it is periodic (a nightly job):
/// fang schedules its next run when it completes. Built by
/// [`schedule_for_every_tenant`](crate::schedule_for_every_tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForEveryTenant {
    /// The task every tenant gets (its `tenant_id` is replaced).
    pub task: TenantTask,
    /// fang's cron pattern (seconds first, UTC), or `None` for one run.
    pub cron: Option<String>,
}

#[typetag::serde(name = "appschema_for_every_tenant")]
impl Runnable for ForEveryTenant {
    fn run(&self, _queue: &dyn Queueable) -> Result<(), FangError> {
        context::run_in_current(|ctx| {
            let mut conn = ctx.pool().get_shared()?;
            fan_out(&mut conn, &self.task)
        })
        .map(drop)
        .map_err(context::report)
    }

    fn task_type(&self) -> String {
        self.task.queue.clone()
    }

    fn uniq(&self) -> bool {
        // Scheduling the nightly job at every start must not add another.
        self.cron.is_some()
    }

    fn cron(&self) -> Option<Scheduled> {
        self.cron.clone().map(Scheduled::CronPattern)
    }
}

/// Enqueues `task` once for every registered tenant; returns how many.
pub(crate) fn fan_out(conn: &mut PgConnection, task: &TenantTask) -> Result<usize, JobError> {
    let template =
        serde_json::to_string(task as &dyn Runnable).map_err(|error| JobError::Payload {
            job: task.job.clone(),
            error,
        })?;
    Ok(diesel::sql_query(
        "INSERT INTO public.fang_tasks (metadata, task_type, scheduled_at)
         SELECT pg_catalog.jsonb_set($1::jsonb, '{tenant_id}', pg_catalog.to_jsonb(t.id)), $2, now()
           FROM public.appschema_tenants t",
    )
    .bind::<Text, _>(template)
    .bind::<Text, _>(&task.queue)
    .execute(conn)?)
}
