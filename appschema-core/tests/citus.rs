//! appschema on a real Citus cluster: a coordinator and two workers started
//! by `appschema_tempdb::TempCitus`, one database of its own per test.
//!
//! Skipped, with the reason printed, when Citus is not installed — unless
//! `APPSCHEMA_REQUIRE_CITUS=1` (as `.ci/run` sets), which turns the skip
//! into a failure (see `appschema_tempdb::citus_for_tests`).

use std::time::Duration;

use appschema_core::citus::{self, CitusError, NodeAddr, TransferMode};
use appschema_core::migrate::Migrator;
use appschema_core::provision::{
    clone_tenant, create_tenant, drop_tenant, ensure_spares, generate_template, restore_archive,
    store_template, DropMode, NewTenant, Source,
};
use appschema_core::{registry, MigrationSet, PublicName, Scope, SharedPool};
use appschema_tempdb::CitusTestDb as CitusDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};

fn worker(db: &CitusDb, i: usize) -> NodeAddr {
    db.worker(i).parse().unwrap()
}

/// A shared `plans` table the tenants' `projects` reference, and an
/// `events` table without a primary key.
fn app() -> MigrationSet {
    MigrationSet::from_parts([
        (
            "20240101000000",
            Scope::Shared,
            "CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO plans VALUES (1, 'free'), (2, 'pro');",
        ),
        (
            "20240102000000",
            Scope::Isolated,
            "CREATE TABLE projects (
                 id bigserial PRIMARY KEY,
                 plan_id int NOT NULL REFERENCES plans (id),
                 name text NOT NULL);
             CREATE INDEX projects_name ON projects (name);",
        ),
        (
            "20240103000000",
            Scope::Isolated,
            "CREATE TABLE events (at timestamptz NOT NULL DEFAULT now(), note text);",
        ),
    ])
}

fn with_migration(set: &MigrationSet, version: &str, sql: &str) -> MigrationSet {
    let mut parts: Vec<(String, Scope, String)> = set
        .migrations()
        .iter()
        .map(|m| (m.version().to_string(), m.scope(), m.up_sql().to_string()))
        .collect();
    parts.push((version.to_string(), Scope::Isolated, sql.to_string()));
    MigrationSet::from_parts(parts)
}

fn migrator(db: &CitusDb) -> Migrator {
    Migrator::new(db.url())
        .jobs(2)
        .citus_reference_tables(vec!["plans".into()])
}

fn migrate(db: &CitusDb, set: &MigrationSet) {
    let report = migrator(db).migrate(set, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
}

fn name(s: &str) -> PublicName {
    PublicName::new(s).unwrap()
}

fn create(conn: &mut PgConnection, set: &MigrationSet, public: &str, source: Source) -> String {
    let request = NewTenant::new(public).unwrap().source(source);
    create_tenant(conn, set, &request)
        .unwrap()
        .tenant
        .schema_name
        .to_string()
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    value: bool,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    value: String,
}

fn is_distributed(conn: &mut PgConnection, schema: &str) -> bool {
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_schema WHERE schemaid::regnamespace::text = $1) AS value",
    )
    .bind::<Text, _>(schema)
    .get_result::<Flag>(conn)
    .unwrap()
    .value
}

fn is_reference_table(conn: &mut PgConnection, table: &str) -> bool {
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1::regclass
                          AND partmethod = 'n' AND repmodel = 't') AS value",
    )
    .bind::<Text, _>(table)
    .get_result::<Flag>(conn)
    .unwrap()
    .value
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap()
        .value
}

/// Adds a project on plan 2 in `public`'s schema, through a pooled
/// connection on the tenant's path, and returns how many projects that
/// connection sees (its own only).
fn add_project_through_the_pool(pool: &SharedPool, public: &str, project: &str) -> i64 {
    let mut conn = pool.get_for_public_name(public).unwrap();
    diesel::sql_query("INSERT INTO projects (plan_id, name) VALUES (2, $1)")
        .bind::<Text, _>(project)
        .execute(&mut *conn)
        .unwrap();
    diesel::sql_query(
        "SELECT count(*) AS value FROM projects JOIN plans ON plans.id = projects.plan_id
          WHERE plans.name = 'pro'",
    )
    .get_result::<Count>(&mut *conn)
    .unwrap()
    .value
}

#[test]
fn tenants_built_by_each_source_are_distributed_schemas_on_workers_and_routed_by_path() {
    let Some(db) = CitusDb::new("sources") else {
        return;
    };
    let set = app();
    migrate(&db, &set);
    let mut conn = db.conn();
    assert!(
        is_reference_table(&mut conn, "public.plans"),
        "migrate makes the referenced shared table a reference table"
    );

    let by_migrations = create(&mut conn, &set, "a.example", Source::Migrations);
    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    store_template(&mut conn, &template).unwrap();
    let by_template = create(&mut conn, &set, "b.example", Source::Template);
    assert_eq!(ensure_spares(&mut conn, &set, 1).unwrap(), 1);
    let by_spare = create(&mut conn, &set, "c.example", Source::Spare);

    let placements = citus::placements_by_schema(&mut conn).unwrap();
    let workers = [worker(&db, 0), worker(&db, 1)];
    for schema in [&by_migrations, &by_template, &by_spare] {
        assert!(is_distributed(&mut conn, schema), "{schema} is distributed");
        let node = placements.get(schema.as_str()).expect("a placement");
        assert!(workers.contains(node), "{schema} lives on a worker: {node}");
    }

    let pool = SharedPool::builder(db.url()).max_size(2).build().unwrap();
    for (i, public) in ["a.example", "b.example", "c.example"].iter().enumerate() {
        for n in 0..=i {
            assert_eq!(
                add_project_through_the_pool(&pool, public, &format!("p{n}")),
                n as i64 + 1,
                "{public} sees its own projects only"
            );
        }
    }
}

#[test]
fn without_a_reference_table_the_tenant_migration_fails_with_citus_naming_the_fix() {
    let Some(db) = CitusDb::new("noref") else {
        return;
    };
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let report = Migrator::new(db.url())
        .jobs(1)
        .migrate(&app(), &|_| {})
        .unwrap();
    assert!(report.is_success(), "no tenant yet: nothing isolated runs");
    let err = create_tenant(&mut conn, &app(), &NewTenant::new("a.example").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"plans\" must be a distributed table or a reference table"),
        "{err}"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS value FROM pg_namespace WHERE nspname = 'a_example'"
        ),
        0,
        "nothing of the failed creation remains"
    );
    // What migrate with the planner's list does fixes it.
    let converted = citus::ensure_reference_tables(
        &mut conn,
        "public",
        &["plans".into(), "nope".into(), "plans".into()],
    )
    .unwrap();
    assert_eq!(converted, ["plans"]);
    create(&mut conn, &app(), "a.example", Source::Migrations);
    assert!(
        citus::ensure_reference_tables(&mut conn, "public", &["plans".into()])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn drop_archive_restore_rename_and_clone_work_on_citus() {
    let Some(db) = CitusDb::new("lifecycle") else {
        return;
    };
    let set = app();
    migrate(&db, &set);
    let mut conn = db.conn();
    let a = create(&mut conn, &set, "a.example", Source::Migrations);
    conn.batch_execute(&format!(
        "INSERT INTO {a}.projects (plan_id, name) SELECT 1, 'n' || g FROM generate_series(1, 50) g;"
    ))
    .unwrap();

    let clone = clone_tenant(
        &mut conn,
        &set,
        &name("a.example"),
        &NewTenant::new("copy.example").unwrap(),
    )
    .unwrap();
    let copy = clone.tenant.schema_name.to_string();
    assert!(is_distributed(&mut conn, &copy));
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT count(*) AS value FROM {copy}.projects")
        ),
        50
    );
    // The copy's sequence goes on after the copied ids.
    let next: Name = diesel::sql_query(format!(
        "INSERT INTO {copy}.projects (plan_id, name) VALUES (1, 'new') RETURNING id::text AS value"
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(next.value, "51");

    let copy2 = appschema_core::SchemaName::new("copy2").unwrap();
    appschema_core::provision::rename_tenant(&mut conn, &name("copy.example"), None, Some(&copy2))
        .unwrap();
    assert!(is_distributed(&mut conn, "copy2"));
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS value FROM copy2.projects"),
        51
    );

    let archive = drop_tenant(&mut conn, &name("a.example"), DropMode::Archive)
        .unwrap()
        .expect("archived");
    assert!(is_distributed(&mut conn, archive.schema_name.as_str()));
    restore_archive(&mut conn, &archive.schema_name, None, None).unwrap();
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT count(*) AS value FROM {a}.projects")
        ),
        50
    );
    drop_tenant(&mut conn, &name("a.example"), DropMode::Drop).unwrap();
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT count(*) AS value FROM pg_dist_schema WHERE schemaid::regnamespace::text = '{a}'")
        ),
        0,
        "dropped everywhere"
    );
}

#[test]
fn a_migration_reaches_every_tenant_with_parallel_jobs() {
    let Some(db) = CitusDb::new("across") else {
        return;
    };
    let set = app();
    migrate(&db, &set);
    let mut conn = db.conn();
    for i in 0..12 {
        create(
            &mut conn,
            &set,
            &format!("t{i}.example"),
            Source::Migrations,
        );
    }
    let next = with_migration(
        &set,
        "20240104000000",
        "ALTER TABLE projects ADD COLUMN archived boolean NOT NULL DEFAULT false;
         CREATE INDEX projects_archived ON projects (archived);",
    );
    let report = migrator(&db).migrate(&next, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.schemas_migrated, 12);
    // Each tenant's migration recorded its head on the coordinator (the
    // tracking tables are on the workers): nothing pending, nothing read.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS value FROM public.appschema_heads WHERE schema_name LIKE 't%_example'"
        ),
        12
    );
    let again = migrator(&db).migrate(&next, &|_| {}).unwrap();
    assert!(again.is_success(), "{:?}", again.failures);
    assert_eq!(again.migrations_applied, 0);
    assert_eq!(again.tracking_tables_read, 0);
    for i in 0..12 {
        conn.batch_execute(&format!(
            "INSERT INTO t{i}_example.projects (plan_id, name, archived) VALUES (1, 'x', true)"
        ))
        .unwrap();
    }
    // New tenants are built at the new head.
    create(&mut conn, &next, "late.example", Source::Migrations);
    conn.batch_execute(
        "INSERT INTO late_example.projects (plan_id, name, archived) VALUES (1, 'x', true)",
    )
    .unwrap();
}

#[test]
fn a_tenant_moves_to_the_other_worker_with_its_rows_by_the_mode_its_tables_allow() {
    let Some(db) = CitusDb::new("move") else {
        return;
    };
    let set = app();
    migrate(&db, &set);
    let mut conn = db.conn();
    let schema = create(&mut conn, &set, "a.example", Source::Migrations);
    conn.batch_execute(&format!(
        "INSERT INTO {schema}.projects (plan_id, name) SELECT 2, 'n' || g FROM generate_series(1, 200) g;
         INSERT INTO {schema}.events (note) VALUES ('created');"
    ))
    .unwrap();
    let pool = SharedPool::builder(db.url()).max_size(1).build().unwrap();
    assert_eq!(
        add_project_through_the_pool(&pool, "a.example", "before"),
        201
    );

    let here = citus::placements_by_schema(&mut conn).unwrap()[&schema].clone();
    let there = if here == worker(&db, 0) {
        worker(&db, 1)
    } else {
        worker(&db, 0)
    };
    // `events` has no primary key: logical replication would block its
    // updates, so Auto blocks writes for the copy instead.
    let moved =
        citus::move_tenant(&mut conn, &name("a.example"), &there, TransferMode::Auto).unwrap();
    assert_eq!(moved.mode, TransferMode::BlockWrites);
    assert_eq!((&moved.from, &moved.to), (&here, &there));
    assert_eq!(
        citus::placements_by_schema(&mut conn).unwrap()[&schema],
        there
    );
    assert_eq!(
        add_project_through_the_pool(&pool, "a.example", "after"),
        202
    );

    // With a replica identity on every table, Auto replicates logically.
    conn.batch_execute(&format!(
        "ALTER TABLE {schema}.events REPLICA IDENTITY FULL"
    ))
    .unwrap();
    let back =
        citus::move_tenant(&mut conn, &name("a.example"), &here, TransferMode::Auto).unwrap();
    assert_eq!(back.mode, TransferMode::Logical);
    assert_eq!(
        citus::placements_by_schema(&mut conn).unwrap()[&schema],
        here
    );
    assert_eq!(
        add_project_through_the_pool(&pool, "a.example", "back"),
        203
    );
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT count(*) AS value FROM {schema}.events")
        ),
        1
    );

    // Moving where it already is does nothing.
    let stay =
        citus::move_tenant(&mut conn, &name("a.example"), &here, TransferMode::Auto).unwrap();
    assert_eq!(stay.elapsed, Duration::ZERO);
}

#[test]
fn moves_to_unknown_nodes_or_of_unknown_tenants_are_refused_by_name() {
    let Some(db) = CitusDb::new("refused") else {
        return;
    };
    let set = app();
    migrate(&db, &set);
    let mut conn = db.conn();
    create(&mut conn, &set, "a.example", Source::Migrations);
    let nowhere: NodeAddr = "10.255.255.1:5432".parse().unwrap();
    let err = citus::move_tenant(&mut conn, &name("a.example"), &nowhere, TransferMode::Auto)
        .unwrap_err();
    assert!(
        matches!(&err, CitusError::UnknownNode { node, known } if node == "10.255.255.1:5432" && known.contains(&worker(&db, 0).to_string())),
        "{err}"
    );
    let err = citus::move_tenant(
        &mut conn,
        &name("nobody.example"),
        &worker(&db, 0),
        TransferMode::Auto,
    )
    .unwrap_err();
    assert!(matches!(err, CitusError::UnknownTenant { .. }), "{err}");
}

#[test]
fn a_rebalance_plan_spreads_tenants_by_size_and_moving_by_it_evens_the_nodes() {
    let Some(db) = CitusDb::new("rebalance") else {
        return;
    };
    let set = app();
    migrate(&db, &set);
    let mut conn = db.conn();
    let w0 = worker(&db, 0);
    let mut schemas = Vec::new();
    for (i, rows) in [40_000, 20_000, 10_000, 5_000].iter().enumerate() {
        let public = format!("r{i}.example");
        let schema = create(&mut conn, &set, &public, Source::Migrations);
        conn.batch_execute(&format!(
            "INSERT INTO {schema}.projects (plan_id, name) SELECT 1, repeat('x', 100) FROM generate_series(1, {rows});"
        ))
        .unwrap();
        citus::move_tenant(&mut conn, &name(&public), &w0, TransferMode::BlockWrites).unwrap();
        schemas.push(schema);
    }
    let plan = citus::rebalance_plan(&mut conn).unwrap();
    assert!(
        !plan.is_empty(),
        "everything on one worker: something must move"
    );
    assert!(
        plan.iter().all(|m| m.from == w0 && m.to == worker(&db, 1)),
        "{plan:?}"
    );
    // The largest tenant moves first.
    assert_eq!(plan[0].schema, schemas[0]);
    for m in &plan {
        citus::move_tenant(&mut conn, &name(&m.tenant), &m.to, TransferMode::Auto).unwrap();
    }
    assert!(
        citus::rebalance_plan(&mut conn).unwrap().is_empty(),
        "once carried out, the plan has nothing left to do"
    );
}

#[test]
fn off_citus_moving_is_refused_and_nothing_is_distributed() {
    let db = appschema_tempdb::TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    assert!(!citus::is_citus(&mut conn).unwrap());
    let set = MigrationSet::from_parts([("1", Scope::Isolated, "CREATE TABLE t (id int)")]);
    create(&mut conn, &set, "a.example", Source::Migrations);
    let to: NodeAddr = "w:5432".parse().unwrap();
    let err =
        citus::move_tenant(&mut conn, &name("a.example"), &to, TransferMode::Auto).unwrap_err();
    assert!(matches!(err, CitusError::NotCitus), "{err}");
    assert!(citus::placements(&mut conn).unwrap().is_empty());
    assert!(
        citus::ensure_reference_tables(&mut conn, "public", &["t".into()])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_tenant_exported_from_one_citus_database_imports_into_another_distributed() {
    let (Some(from), Some(to)) = (CitusDb::new("export_from"), CitusDb::new("export_to")) else {
        return;
    };
    let set = app();
    migrate(&from, &set);
    migrate(&to, &set);
    let mut conn = from.conn();
    let schema = create(&mut conn, &set, "a.example", Source::Migrations);
    conn.batch_execute(&format!(
        "INSERT INTO {schema}.projects (plan_id, name) SELECT 2, 'n' || g FROM generate_series(1, 300) g;"
    ))
    .unwrap();
    let mut file = Vec::new();
    appschema_core::provision::export_tenant(
        &mut conn,
        from.url(),
        &name("a.example"),
        &mut file,
        |_| {},
    )
    .unwrap();
    let mut target = to.conn();
    let imported = appschema_core::provision::import_tenant(
        &mut target,
        &set,
        file.as_slice(),
        &appschema_core::provision::ImportOptions::new(),
        |_| {},
    )
    .unwrap();
    let schema = imported.tenant.schema_name.to_string();
    assert!(
        is_distributed(&mut target, &schema),
        "imported as a distributed schema"
    );
    let pool = SharedPool::builder(to.url()).max_size(1).build().unwrap();
    assert_eq!(
        add_project_through_the_pool(&pool, "a.example", "after"),
        301
    );
}

#[test]
fn a_both_scope_table_is_a_tenant_table_in_each_distributed_schema_and_local_in_the_shared_one() {
    let Some(db) = CitusDb::new("both") else {
        return;
    };
    let mut parts: Vec<(String, Scope, String)> = app()
        .migrations()
        .iter()
        .map(|m| (m.version().to_string(), m.scope(), m.up_sql().to_string()))
        .collect();
    parts.push((
        "20240104000000".into(),
        Scope::Both,
        "CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
         INSERT INTO settings VALUES ('greeting', 'default');"
            .into(),
    ));
    let set = MigrationSet::from_parts(parts);
    migrate(&db, &set);
    let mut conn = db.conn();
    let a = create(&mut conn, &set, "a.example", Source::Migrations);
    assert!(is_distributed(&mut conn, &a));
    let kind = |conn: &mut PgConnection, table: &str| {
        diesel::sql_query(
            "SELECT coalesce((SELECT citus_table_type::text FROM citus_tables
                               WHERE table_name = $1::regclass), 'local') AS value",
        )
        .bind::<Text, _>(table)
        .get_result::<Name>(conn)
        .unwrap()
        .value
    };
    assert_eq!(kind(&mut conn, &format!("{a}.settings")), "schema");
    assert_eq!(kind(&mut conn, "public.settings"), "local");
    conn.batch_execute(&format!("UPDATE {a}.settings SET value = 'tenant'"))
        .unwrap();
    let pool = SharedPool::builder(db.url()).max_size(2).build().unwrap();
    let read = |conn: &mut PgConnection| {
        diesel::sql_query("SELECT value FROM settings WHERE key = 'greeting'")
            .get_result::<Name>(conn)
            .unwrap()
            .value
    };
    assert_eq!(
        read(&mut pool.get_for_public_name("a.example").unwrap()),
        "tenant"
    );
    assert_eq!(read(&mut pool.get_shared().unwrap()), "default");
}

#[test]
fn a_tenant_from_the_template_copies_its_seed_rows_from_the_seed_schema_on_citus() {
    let Some(db) = CitusDb::new("seedrows") else {
        return;
    };
    let set = with_migration(
        &app(),
        "20240104000000",
        "CREATE TABLE settings (id bigserial PRIMARY KEY,
             plan_id int NOT NULL REFERENCES plans (id), k text NOT NULL);
         INSERT INTO settings (plan_id, k) VALUES (1, 'a'), (2, 'b'), (1, 'c');",
    );
    migrate(&db, &set);
    let mut conn = db.conn();
    let by_migrations = create(&mut conn, &set, "a.example", Source::Migrations);
    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    let seed = template.seed_schema().expect("a seed schema").to_string();
    assert!(!template.to_string().contains("'b'"), "{template}");
    store_template(&mut conn, &template).unwrap();
    let by_template = create(&mut conn, &set, "b.example", Source::Template);
    // The seed schema is a distributed schema of its own, like a spare:
    // never colocated with a tenant.
    assert!(is_distributed(&mut conn, &seed), "{seed} is distributed");
    assert!(is_distributed(&mut conn, &by_template));
    let rows = |conn: &mut PgConnection, schema: &str| {
        diesel::sql_query(format!(
            "SELECT string_agg(id || ':' || plan_id || ':' || k, ',' ORDER BY id) AS value
               FROM \"{schema}\".settings"
        ))
        .get_result::<Name>(conn)
        .unwrap()
        .value
    };
    assert_eq!(rows(&mut conn, &by_migrations), "1:1:a,2:2:b,3:1:c");
    assert_eq!(rows(&mut conn, &by_template), "1:1:a,2:2:b,3:1:c");
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT nextval('\"{by_template}\".settings_id_seq') AS value")
        ),
        4
    );
}
