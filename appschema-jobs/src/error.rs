use appschema_core::ConnectionError;

/// Why a tenant job did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The tenant the job was enqueued for no longer exists (dropped or
    /// archived after the job was enqueued). Permanent: the task is marked
    /// failed and never retried, and the job touched no schema.
    #[error(
        "tenant {tenant_id} no longer exists (dropped or archived after the job was enqueued); \
         job `{job}` was not run and will not be retried"
    )]
    TenantGone {
        /// The registry id the job was enqueued for.
        tenant_id: i64,
        /// The job's [`TenantJob::NAME`](crate::TenantJob::NAME).
        job: String,
    },
    /// [`enqueue`](crate::enqueue) was given an id no tenant has.
    #[error("no tenant has id {0}; enqueue jobs with a registered tenant's `Tenant::id`")]
    UnknownTenant(i64),
    /// No job of this name is registered with the worker's
    /// [`Context`](crate::Context). Retried (a deploy may be rolling out the
    /// code that knows it).
    #[error(
        "no job named `{0}` is registered with this worker; register its type with \
         `Context::register::<T>()`"
    )]
    UnknownJob(String),
    /// The task's payload does not deserialize into the job's type.
    #[error("the payload of job `{job}` does not match its type: {error}")]
    Payload {
        /// The job's name.
        job: String,
        /// What serde reported.
        error: serde_json::Error,
    },
    /// A query failed (the job's transaction was rolled back).
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// No connection for the tenant could be checked out.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A task ran outside the workers of [`Workers`](crate::Workers).
    #[error(
        "a tenant task ran outside appschema's workers; start workers with \
         `appschema::jobs::Workers`, not fang's `WorkerPool` on a plain `Queue`"
    )]
    NoContext,
    /// The job itself failed, for a reason of its own.
    #[error("{0}")]
    Failed(String),
}

impl JobError {
    /// A failure of the job's own, with a message.
    pub fn failed(message: impl Into<String>) -> JobError {
        JobError::Failed(message.into())
    }

    /// Whether retrying cannot help (the tenant is gone).
    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::TenantGone { .. })
    }
}
