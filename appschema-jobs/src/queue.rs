//! fang's queue table in the shared schema, and putting jobs on it.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use fang::Queue;
use uuid::Uuid;

use crate::error::JobError;
use crate::task::{fan_out, ForEveryTenant, TenantJob, TenantTask};

/// fang's queue table (`public.fang_tasks`, its migration
/// `2022-08-20-151615_create_fang_tasks`), idempotent and schema-qualified,
/// with `gen_random_uuid()` (built in since PostgreSQL 13) instead of the
/// `uuid-ossp` extension. Put it in a shared migration, or run it with
/// [`install_queue`]. fang's own migration harness is not used: it records
/// its versions in the shared schema's `__diesel_schema_migrations`, which
/// appschema's migrations own.
pub const QUEUE_SQL: &str = "\
DO $$ BEGIN
    CREATE TYPE public.fang_task_state AS ENUM ('new', 'in_progress', 'failed', 'finished', 'retried');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
CREATE TABLE IF NOT EXISTS public.fang_tasks (
     id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
     metadata jsonb NOT NULL,
     error_message TEXT,
     state public.fang_task_state DEFAULT 'new' NOT NULL,
     task_type TEXT DEFAULT 'common' NOT NULL,
     uniq_hash TEXT,
     retries INTEGER DEFAULT 0 NOT NULL,
     scheduled_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
     created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
     updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS fang_tasks_state_index ON public.fang_tasks(state);
CREATE INDEX IF NOT EXISTS fang_tasks_type_index ON public.fang_tasks(task_type);
CREATE INDEX IF NOT EXISTS fang_tasks_scheduled_at_index ON public.fang_tasks(scheduled_at);
CREATE INDEX IF NOT EXISTS fang_tasks_uniq_hash ON public.fang_tasks(uniq_hash);";

/// Creates fang's queue table in the shared schema ([`QUEUE_SQL`]) if it is
/// not there, in one transaction.
pub fn install_queue(conn: &mut PgConnection) -> Result<(), JobError> {
    conn.transaction(|conn| {
        conn.batch_execute("SELECT pg_advisory_xact_lock(hashtext('appschema.jobs.install'))")?;
        conn.batch_execute(QUEUE_SQL)
    })?;
    Ok(())
}

/// The statement [`enqueue`] runs: `$1` the task's
/// [`metadata`](TenantTask::metadata) (text), `$2` its queue, `$3` the
/// tenant id (bigint); returns the task's `id` (uuid), or no row when no
/// tenant has that id. For connections [`enqueue`] does not take (an async
/// one, in the request's transaction).
pub const ENQUEUE_SQL: &str = "\
INSERT INTO public.fang_tasks (metadata, task_type, scheduled_at)
SELECT $1::jsonb, $2, now() FROM public.appschema_tenants WHERE id = $3
RETURNING id";

/// Enqueues `job` for the tenant with registry id `tenant_id`
/// ([`Tenant::id`](appschema_core::registry::Tenant::id)); returns the fang
/// task's id.
///
/// The task row is written on `conn`, into `public.fang_tasks` (schema
/// qualified: a tenant table of the same name is never used). Called inside
/// the request's transaction, on the request's own connection, the job
/// commits with the request's writes or not at all (a transactional outbox).
/// An id no tenant has is refused ([`JobError::UnknownTenant`]).
pub fn enqueue<J: TenantJob>(
    conn: &mut PgConnection,
    tenant_id: i64,
    job: &J,
) -> Result<Uuid, JobError> {
    let task = TenantTask::new(tenant_id, job)?;
    let metadata = task.metadata()?;
    diesel::sql_query(ENQUEUE_SQL)
        .bind::<Text, _>(metadata)
        .bind::<Text, _>(&task.queue)
        .bind::<BigInt, _>(tenant_id)
        .get_result::<IdRow>(conn)
        .optional()?
        .map(|row| row.id)
        .ok_or(JobError::UnknownTenant(tenant_id))
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// Enqueues `job` once for every tenant registered now, on `conn`, in one
/// statement; returns how many tasks were enqueued.
pub fn enqueue_for_every_tenant<J: TenantJob>(
    conn: &mut PgConnection,
    job: &J,
) -> Result<usize, JobError> {
    fan_out(conn, &TenantTask::new(0, job)?)
}

/// Schedules `job` for every tenant on the fang cron pattern `cron`
/// (seconds first, UTC; `"0 0 3 * * * *"` is 03:00 every day): a
/// [`ForEveryTenant`] task that, each time it runs, enqueues one task per
/// tenant registered at that moment. Scheduling the same job again (every
/// start of the application) adds no second schedule. `conn` must be on the
/// shared `search_path` ([`SharedPool::get_shared`](appschema_core::SharedPool::get_shared)).
pub fn schedule_for_every_tenant<J: TenantJob>(
    conn: &mut PgConnection,
    job: &J,
    cron: &str,
) -> Result<Uuid, JobError> {
    let task = ForEveryTenant {
        task: TenantTask::new(0, job)?,
        cron: Some(cron.to_string()),
    };
    Queue::schedule_task_query(conn, &task)
        .map(|t| t.id)
        .map_err(|e| JobError::failed(format!("cannot schedule job `{}`: {e}", J::NAME)))
}
