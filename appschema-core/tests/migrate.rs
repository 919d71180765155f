//! The executor against a real PostgreSQL: order, resume, failures,
//! concurrent runs, and the single-schema API provisioning uses.

use std::sync::Mutex;

use appschema_core::migrate::{migrate_schema_in_transaction, Event, Migrator, RevertTo};
use appschema_core::{registry, PublicName, SchemaName, Scope};
use appschema_core::{Migration, MigrationSet};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

fn versions(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    diesel::sql_query(format!(
        "SELECT version::text AS version FROM \"{schema}\".__diesel_schema_migrations ORDER BY version"
    ))
    .load::<Version>(conn)
    .unwrap()
    .into_iter()
    .map(|v| v.version)
    .collect()
}

/// Registers tenants `t0..tn` with empty schemas.
fn tenants(conn: &mut PgConnection, n: usize) -> Vec<String> {
    registry::install(conn).unwrap();
    (0..n)
        .map(|i| {
            let schema = format!("t{i}");
            conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .unwrap();
            registry::insert(
                conn,
                &PublicName::new(&format!("t{i}.example.com")).unwrap(),
                &SchemaName::new(&schema).unwrap(),
            )
            .unwrap();
            schema
        })
        .collect()
}

fn timeline() -> MigrationSet {
    MigrationSet::from_parts([
        (
            "001",
            Scope::Shared,
            "CREATE TABLE plans (id bigserial PRIMARY KEY, name text NOT NULL)",
        ),
        (
            "002",
            Scope::Isolated,
            "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES plans (id))",
        ),
        (
            "003",
            Scope::Isolated,
            "ALTER TABLE orders ADD COLUMN note text",
        ),
        // Runs only after every tenant has 003: it records how many have it.
        (
            "004",
            Scope::Shared,
            "CREATE TABLE seen AS SELECT count(*) AS n FROM information_schema.columns
              WHERE table_name = 'orders' AND column_name = 'note'",
        ),
    ])
}

#[test]
fn interleaved_shared_and_isolated_migrations_apply_in_timeline_order() {
    let db = TestDb::new();
    let mut conn = db.conn();
    let schemas = tenants(&mut conn, 5);
    let events = Mutex::new(Vec::new());
    let report = Migrator::new(db.url())
        .jobs(3)
        .migrate(&timeline(), &|e| events.lock().unwrap().push(e))
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_applied, 2 + 5 * 2);
    assert_eq!(report.schemas_migrated, 6);
    assert_eq!(count(&mut conn, "SELECT n FROM public.seen"), 5);
    assert_eq!(versions(&mut conn, "public"), ["001", "004"]);
    for s in &schemas {
        assert_eq!(versions(&mut conn, s), ["002", "003"]);
        // Unqualified tables landed in the tenant schema, the FK points at public.plans.
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM pg_tables WHERE schemaname = '{s}' AND tablename = 'orders'")
            ),
            1
        );
    }
    let steps: Vec<Scope> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { scope, .. } => Some(*scope),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [Scope::Shared, Scope::Isolated, Scope::Shared]);

    // Nothing pending: nothing applied, and diesel's format is intact.
    let again = Migrator::new(db.url())
        .migrate(&timeline(), &|_| {})
        .unwrap();
    assert_eq!(again.migrations_applied, 0);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = 't0'
               AND table_name = '__diesel_schema_migrations'
               AND ((column_name = 'version' AND data_type = 'character varying' AND character_maximum_length = 50)
                 OR (column_name = 'run_on' AND data_type = 'timestamp without time zone'))"
        ),
        2
    );
}

#[test]
fn one_tenant_failing_stops_only_itself_and_a_rerun_after_the_fix_recovers() {
    let db = TestDb::new();
    let mut conn = db.conn();
    let schemas = tenants(&mut conn, 4);
    // t2 already has a column named `note`: 003 fails there only.
    let mut set = timeline();
    Migrator::new(db.url())
        .migrate(
            &MigrationSet::from_parts(
                [set.migrations()[0].clone(), set.migrations()[1].clone()]
                    .map(|m| (m.version().to_string(), m.scope(), m.up_sql().to_string())),
            ),
            &|_| {},
        )
        .unwrap();
    conn.batch_execute("ALTER TABLE t2.orders ADD COLUMN note int")
        .unwrap();

    let report = Migrator::new(db.url())
        .jobs(2)
        .migrate(&set, &|_| {})
        .unwrap();
    assert!(!report.is_success());
    assert_eq!(report.failures.len(), 1);
    let f = &report.failures[0];
    assert_eq!((f.schema.as_str(), f.migration.as_str()), ("t2", "003"));
    assert_eq!(
        f.message,
        "column \"note\" of relation \"orders\" already exists"
    );
    assert_eq!(report.migrations_applied, 3);
    assert_eq!(report.steps_skipped, 1, "004 must wait for every tenant");
    for s in &schemas {
        let expected: &[&str] = if s == "t2" { &["002"] } else { &["002", "003"] };
        assert_eq!(versions(&mut conn, s), expected, "{s}");
    }
    assert_eq!(versions(&mut conn, "public"), ["001"]);

    conn.batch_execute("ALTER TABLE t2.orders DROP COLUMN note")
        .unwrap();
    set = timeline();
    let report = Migrator::new(db.url())
        .jobs(2)
        .migrate(&set, &|_| {})
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(
        report.migrations_applied, 2,
        "only t2's 003 and the shared 004"
    );
    assert_eq!(count(&mut conn, "SELECT n FROM public.seen"), 4);
}

#[test]
fn a_run_killed_midway_leaves_no_schema_half_migrated_and_the_next_run_resumes() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 3);
    conn.batch_execute("CREATE TABLE public.gate (id int)")
        .unwrap();
    // 002 creates a table, then blocks on the gate; t1's backend is killed there.
    let set = MigrationSet::from_parts([
        (
            "001",
            Scope::Isolated,
            "CREATE TABLE half (id int); SELECT * FROM public.gate",
        ),
        ("002", Scope::Isolated, "CREATE TABLE after (id int)"),
    ]);
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE public.gate IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| {
            Migrator::new(db.url())
                .jobs(3)
                .migrate(&set, &|_| {})
                .unwrap()
        });
        // Wait until all three workers are blocked on the gate, then kill one backend.
        let mut killer = db.conn();
        while count(
            &mut killer,
            "SELECT count(*) AS n FROM pg_locks WHERE relation = 'public.gate'::regclass AND NOT granted",
        ) < 3
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        killer
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE query LIKE '%set_config(''search_path'', ''\"t1\"%'",
            )
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        holder.batch_execute("COMMIT").unwrap();
        run.join().unwrap()
    });
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].schema, "t1");
    // t1 has neither the table 001 created before the kill nor its tracking row.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 't1'"
        ),
        0,
        "not even the tracking table: it was created in the killed transaction"
    );
    assert_eq!(versions(&mut conn, "t0"), ["001", "002"]);

    let report = Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_applied, 2);
    assert_eq!(versions(&mut conn, "t1"), ["001", "002"]);
}

#[test]
fn two_concurrent_runs_never_apply_a_migration_twice_and_the_second_says_it_waits() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 6);
    // Not idempotent: applying it twice in a schema would fail.
    let set = MigrationSet::from_parts([
        (
            "001",
            Scope::Isolated,
            "CREATE TABLE orders (id int); SELECT pg_sleep(0.05)",
        ),
        (
            "002",
            Scope::Isolated,
            "ALTER TABLE orders ADD COLUMN x int",
        ),
    ]);
    let waits = Mutex::new(0);
    let on_event = &|e: Event| {
        if matches!(e, Event::Waiting { .. }) {
            *waits.lock().unwrap() += 1;
        }
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            Migrator::new(db.url())
                .jobs(2)
                .migrate(&set, on_event)
                .unwrap()
        });
        let b = s.spawn(|| {
            Migrator::new(db.url())
                .jobs(2)
                .migrate(&set, on_event)
                .unwrap()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a.is_success() && b.is_success(),
        "{:?} {:?}",
        a.failures,
        b.failures
    );
    assert_eq!(a.migrations_applied + b.migrations_applied, 12);
    assert!(
        *waits.lock().unwrap() > 0,
        "the runs met on a schema's lock"
    );
    for i in 0..6 {
        assert_eq!(versions(&mut conn, &format!("t{i}")), ["001", "002"]);
    }
}

#[test]
fn a_run_that_waited_for_the_lock_skips_the_version_the_holder_committed() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 1);
    let first =
        MigrationSet::from_parts([("001", Scope::Isolated, "CREATE TABLE orders (id int)")]);
    Migrator::new(db.url())
        .jobs(1)
        .migrate(&first, &|_| {})
        .unwrap();
    // Not idempotent: running it a second time in t0 would fail.
    let set = MigrationSet::from_parts([
        ("001", Scope::Isolated, "CREATE TABLE orders (id int)"),
        (
            "002",
            Scope::Isolated,
            "ALTER TABLE orders ADD COLUMN x int",
        ),
    ]);
    // Another run holds t0's lock and has applied 002, not yet committed.
    let mut holder = db.conn();
    holder
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('appschema.migrate'), hashtext('t0'));
             ALTER TABLE t0.orders ADD COLUMN x int;
             INSERT INTO t0.__diesel_schema_migrations (version) VALUES ('002');",
        )
        .unwrap();
    let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
    let waiting_tx = Mutex::new(waiting_tx);
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| {
            Migrator::new(db.url())
                .jobs(1)
                .migrate(&set, &|e| {
                    if let Event::Waiting { schema } = e {
                        waiting_tx.lock().unwrap().send(schema).unwrap();
                    }
                })
                .unwrap()
        });
        // The run read 002 as pending, found the lock taken, and waits.
        assert_eq!(waiting_rx.recv().unwrap(), "t0");
        holder.batch_execute("COMMIT").unwrap();
        run.join().unwrap()
    });
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_applied, 0, "002 was the holder's");
    assert_eq!(versions(&mut conn, "t0"), ["001", "002"]);
}

#[test]
fn a_revert_that_waited_for_the_lock_skips_the_version_the_holder_reverted() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 2);
    // Not idempotent: running the down a second time in t0 would fail.
    let set = MigrationSet::new(vec![
        Migration::new(
            "001",
            "001_orders",
            Scope::Isolated,
            "CREATE TABLE orders (id int)",
        )
        .with_down_sql("DROP TABLE orders"),
        Migration::new(
            "002",
            "002_x",
            Scope::Isolated,
            "ALTER TABLE orders ADD COLUMN x int",
        )
        .with_down_sql("ALTER TABLE orders DROP COLUMN x"),
    ]);
    let report = Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    // Another run holds t0's lock and has reverted 002 there, not yet
    // committed.
    let mut holder = db.conn();
    holder
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('appschema.migrate'), hashtext('t0'));
             DELETE FROM t0.__diesel_schema_migrations WHERE version = '002';
             ALTER TABLE t0.orders DROP COLUMN x;",
        )
        .unwrap();
    let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
    let waiting_tx = Mutex::new(waiting_tx);
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| {
            Migrator::new(db.url())
                .jobs(1)
                .revert(&set, &RevertTo::Version("001".into()), &|e| {
                    if let Event::Waiting { schema } = e {
                        waiting_tx.lock().unwrap().send(schema).unwrap();
                    }
                })
                .unwrap()
        });
        // The run read 002 as applied in t0, found the lock taken, and
        // waits (a deadline, not a pause: the event comes at once).
        let waiting = waiting_rx.recv_timeout(std::time::Duration::from_secs(120));
        assert_eq!(
            waiting.as_deref(),
            Ok("t0"),
            "the revert waits for t0's lock"
        );
        holder.batch_execute("COMMIT").unwrap();
        run.join().unwrap()
    });
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(
        report.migrations_reverted, 1,
        "only t1's: t0's was the holder's"
    );
    for schema in ["t0", "t1"] {
        assert_eq!(versions(&mut conn, schema), ["001"]);
        assert_eq!(
            count(
                &mut conn,
                &format!(
                    "SELECT count(*) AS n FROM information_schema.columns \
                     WHERE table_schema = '{schema}' AND table_name = 'orders'"
                )
            ),
            1,
            "{schema}.orders is back to its one column"
        );
    }
}

#[test]
fn migrations_opting_out_of_transactions_run_statement_by_statement() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 2);
    // As the planner splits a `run_in_transaction = false` migration.
    let set = MigrationSet::new(vec![
        Migration::new("1", "1_orders", Scope::Isolated, "CREATE TABLE orders (id int);"),
        Migration::new(
            "2",
            "2_idx",
            Scope::Isolated,
            "CREATE INDEX CONCURRENTLY orders_id ON orders (id);\nCREATE INDEX CONCURRENTLY orders_id2 ON orders (id);",
        )
        .outside_transaction(
            vec![
                "CREATE INDEX CONCURRENTLY orders_id ON orders (id)".into(),
                "CREATE INDEX CONCURRENTLY orders_id2 ON orders (id)".into(),
            ],
            None,
        ),
    ]);
    let report = Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(versions(&mut conn, "t1"), ["1", "2"]);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_indexes WHERE schemaname = 't1' AND tablename = 'orders'"
        ),
        2
    );
}

#[test]
fn one_schema_is_brought_to_head_inside_the_callers_transaction() {
    let db = TestDb::new();
    let mut conn = db.conn();
    let set = timeline();
    Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
    let schema = SchemaName::new("fresh").unwrap();

    // Rolled back: no schema, no tables, no tracking rows.
    let _ = conn.transaction::<(), diesel::result::Error, _>(|conn| {
        conn.batch_execute("CREATE SCHEMA fresh")?;
        assert_eq!(
            migrate_schema_in_transaction(conn, &schema, &set).unwrap(),
            2
        );
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'fresh'"
        ),
        0
    );

    conn.transaction::<(), diesel::result::Error, _>(|conn| {
        conn.batch_execute("SET LOCAL search_path TO public")?;
        conn.batch_execute("CREATE SCHEMA fresh")?;
        assert_eq!(
            migrate_schema_in_transaction(conn, &schema, &set).unwrap(),
            2
        );
        // The caller's search_path is back.
        #[derive(QueryableByName)]
        struct P {
            #[diesel(sql_type = Text)]
            p: String,
        }
        let p: P =
            diesel::sql_query("SELECT current_setting('search_path') AS p").get_result(conn)?;
        assert_eq!(p.p, "public");
        Ok(())
    })
    .unwrap();
    assert_eq!(versions(&mut conn, "fresh"), ["002", "003"]);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM fresh.orders"),
        0
    );
    // Already at head: nothing to do.
    conn.transaction::<(), diesel::result::Error, _>(|conn| {
        assert_eq!(
            migrate_schema_in_transaction(conn, &schema, &set).unwrap(),
            0
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn extra_schema_sources_are_migrated_with_the_tenants() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 1);
    conn.batch_execute("CREATE SCHEMA appschema_spare_1")
        .unwrap();
    let report = Migrator::new(db.url())
        .schema_source(
            "spares",
            Box::new(|_conn| Ok(vec![SchemaName::internal("appschema_spare_1").unwrap()])),
        )
        .migrate(&timeline(), &|_| {})
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(versions(&mut conn, "appschema_spare_1"), ["002", "003"]);
    assert_eq!(count(&mut conn, "SELECT n FROM public.seen"), 2);
}
