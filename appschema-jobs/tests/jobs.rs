//! Tenant jobs against a real PostgreSQL and the real fang queue: fang's
//! table in the shared schema, fang's worker threads running in the test.

use std::time::{Duration, Instant};

use appschema_core::provision::{create_tenant, drop_tenant, rename_tenant, DropMode, NewTenant};
use appschema_core::registry::{self, Tenant};
use appschema_core::{MigrationSet, PublicName, SchemaName, Scope, SharedPool};
use appschema_jobs::fang::{Queue, Utc};
use appschema_jobs::{
    enqueue, install_queue, schedule_for_every_tenant, Context, ForEveryTenant, JobError,
    TenantJob, TenantTask, Workers,
};
use appschema_tempdb::TestDb;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::{Deserialize, Serialize};

/// Writes one note in the tenant's `notes`.
#[derive(Serialize, Deserialize)]
struct Note {
    body: String,
}

impl TenantJob for Note {
    const NAME: &'static str = "note";
    fn run(&self, conn: &mut PgConnection, tenant: &Tenant) -> Result<(), JobError> {
        diesel::sql_query("INSERT INTO notes (body, tenant_id) VALUES ($1, $2)")
            .bind::<Text, _>(&self.body)
            .bind::<BigInt, _>(tenant.id)
            .execute(conn)?;
        Ok(())
    }
}

fn migrations() -> MigrationSet {
    MigrationSet::from_parts([(
        "20240101000000",
        Scope::Isolated,
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL, tenant_id bigint NOT NULL)",
    )])
}

/// A database with the registry, fang's queue table, and the tenants
/// `names`.
fn setup(names: &[&str]) -> (TestDb, PgConnection, Vec<Tenant>) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    install_queue(&mut conn).unwrap();
    install_queue(&mut conn).unwrap(); // idempotent
    let m = migrations();
    let tenants = names
        .iter()
        .map(|n| {
            create_tenant(&mut conn, &m, &NewTenant::new(n).unwrap())
                .unwrap()
                .tenant
        })
        .collect();
    (db, conn, tenants)
}

fn pool(db: &TestDb) -> SharedPool {
    SharedPool::builder(db.url()).max_size(4).build().unwrap()
}

fn start_workers(pool: &SharedPool) {
    Workers::new(Context::new(pool.clone()).register::<Note>())
        .number_of_workers(2)
        .poll_interval(Duration::from_millis(20))
        .start()
        .unwrap();
}

#[derive(QueryableByName, Debug, PartialEq)]
struct NoteRow {
    #[diesel(sql_type = Text)]
    body: String,
    #[diesel(sql_type = BigInt)]
    tenant_id: i64,
}

fn notes(conn: &mut PgConnection, schema: &SchemaName) -> Vec<NoteRow> {
    diesel::sql_query(format!(
        "SELECT body, tenant_id FROM {}.notes ORDER BY body",
        schema.quoted()
    ))
    .load(conn)
    .unwrap()
}

#[derive(QueryableByName, Debug)]
struct TaskRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    error_message: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    retries: i32,
}

fn tasks(conn: &mut PgConnection) -> Vec<TaskRow> {
    diesel::sql_query(
        "SELECT state::text AS state, error_message, retries FROM public.fang_tasks ORDER BY created_at",
    )
    .load(conn)
    .unwrap()
}

/// Waits (deadline 30 s) until no task is waiting, running or due a retry.
fn wait_until_queue_settles(conn: &mut PgConnection) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = tasks(conn)
            .into_iter()
            .filter(|t| matches!(t.state.as_str(), "new" | "in_progress" | "retried"))
            .count();
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tasks still pending after 30 s: {:?}",
            tasks(conn)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn public_name(s: &str) -> PublicName {
    PublicName::new(s).unwrap()
}

#[test]
fn a_job_for_tenant_a_writes_in_a_only() {
    let (db, mut conn, tenants) = setup(&["a.test", "b.test"]);
    let (a, b) = (&tenants[0], &tenants[1]);
    let pool = pool(&db);
    // Enqueued on the request's own connection, inside its transaction.
    let mut request = pool.get_for(&a.schema_name).unwrap();
    request
        .transaction(|conn| {
            enqueue(
                conn,
                a.id,
                &Note {
                    body: "for a".into(),
                },
            )?;
            Ok::<_, JobError>(())
        })
        .unwrap();
    drop(request);
    start_workers(&pool);
    wait_until_queue_settles(&mut conn);
    assert_eq!(
        notes(&mut conn, &a.schema_name),
        vec![NoteRow {
            body: "for a".into(),
            tenant_id: a.id
        }]
    );
    assert_eq!(notes(&mut conn, &b.schema_name), vec![]);
    assert!(tasks(&mut conn).is_empty(), "finished tasks are removed");
}

#[test]
fn a_job_enqueued_in_a_rolled_back_request_never_exists() {
    let (db, mut conn, tenants) = setup(&["a.test"]);
    let a = &tenants[0];
    let pool = pool(&db);
    let mut request = pool.get_for(&a.schema_name).unwrap();
    let rolled_back = request.transaction(|conn| {
        enqueue(
            conn,
            a.id,
            &Note {
                body: "never".into(),
            },
        )?;
        Err::<(), _>(JobError::failed("the request failed"))
    });
    assert!(rolled_back.is_err());
    drop(request);
    assert!(tasks(&mut conn).is_empty(), "{:?}", tasks(&mut conn));
    // And an id no tenant has is refused when enqueued.
    let err = enqueue(&mut conn, a.id + 1000, &Note { body: "x".into() }).unwrap_err();
    assert!(
        matches!(err, JobError::UnknownTenant(id) if id == a.id + 1000),
        "{err}"
    );
    assert!(tasks(&mut conn).is_empty());
}

#[test]
fn a_job_follows_its_tenant_through_a_rename() {
    let (db, mut conn, tenants) = setup(&["a.test", "b.test"]);
    let (a, b) = (&tenants[0], &tenants[1]);
    enqueue(
        &mut conn,
        a.id,
        &Note {
            body: "after rename".into(),
        },
    )
    .unwrap();
    rename_tenant(
        &mut conn,
        &public_name("a.test"),
        Some(&public_name("renamed.test")),
        Some(&SchemaName::new("renamed").unwrap()),
    )
    .unwrap();
    let pool = pool(&db);
    start_workers(&pool);
    wait_until_queue_settles(&mut conn);
    assert_eq!(
        notes(&mut conn, &SchemaName::new("renamed").unwrap()),
        vec![NoteRow {
            body: "after rename".into(),
            tenant_id: a.id
        }]
    );
    assert_eq!(notes(&mut conn, &b.schema_name), vec![]);
    assert!(tasks(&mut conn).is_empty(), "{:?}", tasks(&mut conn));
}

#[test]
fn a_job_for_a_dropped_or_archived_tenant_fails_for_good_and_touches_no_schema() {
    let (db, mut conn, tenants) = setup(&["dropped.test", "archived.test", "kept.test"]);
    let (dropped, archived, kept) = (&tenants[0], &tenants[1], &tenants[2]);
    for t in &tenants {
        enqueue(
            &mut conn,
            t.id,
            &Note {
                body: format!("for {}", t.public_name),
            },
        )
        .unwrap();
    }
    drop_tenant(&mut conn, &public_name("dropped.test"), DropMode::Drop).unwrap();
    let archive = drop_tenant(&mut conn, &public_name("archived.test"), DropMode::Archive)
        .unwrap()
        .unwrap();
    let pool = pool(&db);
    start_workers(&pool);
    wait_until_queue_settles(&mut conn);
    assert_eq!(
        notes(&mut conn, &kept.schema_name),
        vec![NoteRow {
            body: "for kept.test".into(),
            tenant_id: kept.id
        }]
    );
    assert_eq!(notes(&mut conn, &archive.schema_name), vec![]);
    let left = tasks(&mut conn);
    assert_eq!(left.len(), 2, "the two failed tasks are kept: {left:?}");
    for (task, gone) in left.iter().zip([dropped, archived]) {
        assert_eq!(task.state, "failed", "{task:?}");
        assert_eq!(task.retries, 0, "never retried: {task:?}");
        let message = task.error_message.as_deref().unwrap();
        assert!(
            message.contains(&format!("tenant {} no longer exists", gone.id))
                && message.contains("will not be retried"),
            "{message}"
        );
    }
}

#[test]
fn a_fan_out_reaches_every_tenant_once() {
    let names = ["one.test", "two.test", "three.test", "four.test"];
    let (db, mut conn, tenants) = setup(&names);
    // A tenant answering to two names is still one tenant.
    registry::add_alias(&mut conn, &tenants[0], &public_name("alias.one.test")).unwrap();
    let fan_out = ForEveryTenant {
        task: TenantTask::new(
            0,
            &Note {
                body: "nightly".into(),
            },
        )
        .unwrap(),
        cron: None,
    };
    // Through fang's own insert, as its scheduler does for a periodic task.
    Queue::insert_query(&mut conn, &fan_out, Utc::now()).unwrap();
    let pool = pool(&db);
    start_workers(&pool);
    wait_until_queue_settles(&mut conn);
    for t in &tenants {
        assert_eq!(
            notes(&mut conn, &t.schema_name),
            vec![NoteRow {
                body: "nightly".into(),
                tenant_id: t.id
            }],
            "{}",
            t.public_name
        );
    }
    assert!(tasks(&mut conn).is_empty(), "{:?}", tasks(&mut conn));
}

#[test]
fn scheduling_a_nightly_job_twice_keeps_one_schedule() {
    let (_db, mut conn, _) = setup(&["a.test"]);
    let job = Note {
        body: "nightly".into(),
    };
    let first = schedule_for_every_tenant(&mut conn, &job, "0 0 3 * * * *").unwrap();
    let second = schedule_for_every_tenant(&mut conn, &job, "0 0 3 * * * *").unwrap();
    assert_eq!(first, second);
    let left = tasks(&mut conn);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].state, "new");
}
