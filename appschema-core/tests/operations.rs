//! Operating many tenants: running work in each (`across`) and measuring
//! them (`sizes`), against a real PostgreSQL.

use std::sync::Mutex;

use appschema_core::across::{AcrossError, AcrossTenants, Event};
use appschema_core::registry;
use appschema_core::sizes::{tenant_sizes, SizeOrder};
use appschema_core::{PublicName, SchemaName};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// A database with three tenants `a.test`, `b.test`, `c.test` (schemas
/// `a`, `b`, `c`), each with a table `counters` holding one row `(1, 0)`,
/// and a shared table `public.counters` with the same shape, left empty:
/// work that escaped its tenant's schema would land there.
fn db_with_three_tenants() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    conn.batch_execute(
        "CREATE TABLE public.counters (id int PRIMARY KEY, n int NOT NULL CHECK (n < 100))",
    )
    .unwrap();
    for name in ["a", "b", "c"] {
        let schema = SchemaName::new(name).unwrap();
        registry::insert(
            &mut conn,
            &PublicName::new(&format!("{name}.test")).unwrap(),
            &schema,
        )
        .unwrap();
        conn.batch_execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.counters (id int PRIMARY KEY, n int NOT NULL CHECK (n < 100));
             INSERT INTO {s}.counters VALUES (1, 0);",
            s = schema.quoted()
        ))
        .unwrap();
    }
    (db, conn)
}

/// `counters.n` of row 1 in each tenant schema, in order a, b, c.
fn counters(conn: &mut PgConnection) -> Vec<i32> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        n: i32,
    }
    ["a", "b", "c"]
        .iter()
        .map(|s| {
            diesel::sql_query(format!("SELECT n FROM {s}.counters WHERE id = 1"))
                .get_result::<N>(conn)
                .unwrap()
                .n
        })
        .collect()
}

fn shared_rows(conn: &mut PgConnection) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM public.counters")
        .get_result::<N>(conn)
        .unwrap()
        .n
}

#[test]
fn run_sql_changes_each_tenants_own_rows_once_and_nothing_shared() {
    let (db, mut conn) = db_with_three_tenants();
    let events = Mutex::new(Vec::new());
    let report = AcrossTenants::new(db.url())
        .jobs(2)
        .run_sql(
            "UPDATE counters SET n = n + 1 WHERE id = 1; INSERT INTO counters VALUES (2, 5)",
            &|e| events.lock().unwrap().push(e),
        )
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.tenants_done, 3);
    assert_eq!(counters(&mut conn), vec![1, 1, 1]);
    assert_eq!(shared_rows(&mut conn), 0);
    let events = events.into_inner().unwrap();
    assert_eq!(events[0], Event::Started { tenants: 3 });
    let mut done: Vec<String> = events[1..]
        .iter()
        .map(|e| match e {
            Event::TenantDone { tenant, schema } => format!("{tenant}={schema}"),
            other => panic!("{other:?}"),
        })
        .collect();
    done.sort();
    assert_eq!(done, ["a.test=a", "b.test=b", "c.test=c"]);
}

#[test]
fn a_failing_tenant_is_rolled_back_and_reported_while_the_others_commit() {
    let (db, mut conn) = db_with_three_tenants();
    // b's counter is near its CHECK limit: the second statement fails there
    // only, after the first one ran.
    conn.batch_execute("UPDATE b.counters SET n = 95").unwrap();
    let report = AcrossTenants::new(db.url())
        .jobs(1)
        .run_sql(
            "INSERT INTO counters VALUES (2, 0); UPDATE counters SET n = n + 10 WHERE id = 1",
            &|_| {},
        )
        .unwrap();
    assert_eq!(report.tenants_done, 2);
    assert_eq!(report.failures.len(), 1, "{report:?}");
    let f = &report.failures[0];
    assert_eq!((f.tenant.as_str(), f.schema.as_str()), ("b.test", "b"));
    assert!(f.message.contains("counters_n_check"), "{f}");
    assert_eq!(counters(&mut conn), vec![10, 95, 10]);
    // b's INSERT, which succeeded before the UPDATE failed, was rolled back.
    let rows: Vec<i64> = ["a", "b", "c"]
        .iter()
        .map(|s| {
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            diesel::sql_query(format!("SELECT count(*) AS n FROM {s}.counters"))
                .get_result::<N>(&mut conn)
                .unwrap()
                .n
        })
        .collect();
    assert_eq!(rows, vec![2, 1, 2]);
}

#[test]
fn a_tenant_whose_schema_was_dropped_by_hand_fails_instead_of_writing_shared_tables() {
    let (db, mut conn) = db_with_three_tenants();
    conn.batch_execute("DROP SCHEMA b CASCADE").unwrap();
    let url = db.url();
    let runs: [&dyn Fn() -> Result<_, AcrossError>; 3] = [
        &|| AcrossTenants::new(url).run_sql("INSERT INTO counters VALUES (7, 7)", &|_| {}),
        &|| {
            AcrossTenants::new(url).run(
                |conn, _| conn.batch_execute("INSERT INTO counters VALUES (7, 7)"),
                &|_| {},
            )
        },
        &|| {
            AcrossTenants::new(url).per_tenant_transaction(false).run(
                |conn, _| conn.batch_execute("INSERT INTO counters VALUES (7, 7)"),
                &|_| {},
            )
        },
    ];
    for run in runs {
        let report = run().unwrap();
        assert_eq!(report.failures.len(), 1, "{report:?}");
        assert!(
            report.failures[0]
                .message
                .contains("schema `b` of tenant `b.test` does not exist"),
            "{}",
            report.failures[0]
        );
        assert_eq!(
            shared_rows(&mut conn),
            0,
            "b's work reached public.counters"
        );
        conn.batch_execute(
            "DELETE FROM a.counters WHERE id = 7; DELETE FROM c.counters WHERE id = 7",
        )
        .unwrap();
    }
}

#[test]
fn run_gives_the_closure_each_tenant_on_its_path_in_its_own_transaction() {
    let (db, mut conn) = db_with_three_tenants();
    let seen = Mutex::new(Vec::new());
    let report = AcrossTenants::new(db.url())
        .jobs(2)
        .run(
            |conn, tenant| -> QueryResult<()> {
                #[derive(QueryableByName)]
                struct S {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    path: String,
                    #[diesel(sql_type = diesel::sql_types::Bool)]
                    in_transaction: bool,
                }
                let s: S = diesel::sql_query(
                    "SELECT current_setting('search_path') AS path,
                            transaction_timestamp() <> statement_timestamp() AS in_transaction",
                )
                .get_result(conn)?;
                seen.lock()
                    .unwrap()
                    .push((tenant.public_name.clone(), s.path, s.in_transaction));
                // Nested transactions of the work are savepoints.
                conn.transaction(|conn| conn.batch_execute("UPDATE counters SET n = n + 1"))
            },
            &|_| {},
        )
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("a.test".to_string(), r#""a", "public""#.to_string(), true),
            ("b.test".to_string(), r#""b", "public""#.to_string(), true),
            ("c.test".to_string(), r#""c", "public""#.to_string(), true),
        ]
    );
    assert_eq!(counters(&mut conn), vec![1, 1, 1]);
}

#[test]
fn a_panicking_or_failing_closure_rolls_back_only_its_tenant() {
    let (db, mut conn) = db_with_three_tenants();
    // One worker: after a's panic the same worker must go on, on a clean
    // session, with b and c.
    let report = AcrossTenants::new(db.url())
        .jobs(1)
        .run(
            |conn, tenant| -> Result<(), String> {
                conn.batch_execute("UPDATE counters SET n = 42")
                    .map_err(|e| e.to_string())?;
                match tenant.public_name.as_str() {
                    "a.test" => panic!("bug in the backfill"),
                    "c.test" => Err("refused by the application".to_string()),
                    _ => Ok(()),
                }
            },
            &|_| {},
        )
        .unwrap();
    assert_eq!(report.tenants_done, 1);
    let messages: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        messages,
        vec![
            "tenant `a.test` (schema `a`): panicked: bug in the backfill".to_string(),
            "tenant `c.test` (schema `c`): refused by the application".to_string(),
        ]
    );
    assert_eq!(counters(&mut conn), vec![0, 42, 0]);
}

#[test]
fn without_a_transaction_the_work_commits_as_it_goes_on_each_tenants_path() {
    let (db, mut conn) = db_with_three_tenants();
    let paths = Mutex::new(Vec::new());
    let report = AcrossTenants::new(db.url())
        .jobs(1)
        .per_tenant_transaction(false)
        .run(
            |conn, tenant| -> QueryResult<()> {
                #[derive(QueryableByName)]
                struct S {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    path: String,
                }
                let before: S = diesel::sql_query("SELECT current_setting('search_path') AS path")
                    .get_result(conn)?;
                paths.lock().unwrap().push(before.path);
                conn.batch_execute("UPDATE counters SET n = 7")?;
                if tenant.public_name == "b.test" {
                    conn.batch_execute("SELECT 1 / 0")?;
                }
                Ok(())
            },
            &|_| {},
        )
        .unwrap();
    assert_eq!(report.failures.len(), 1);
    // b's UPDATE committed before its work failed: nothing rolls it back.
    assert_eq!(counters(&mut conn), vec![7, 7, 7]);
    assert_eq!(
        paths.into_inner().unwrap(),
        vec![r#""a", "public""#, r#""b", "public""#, r#""c", "public""#]
    );
}

#[test]
fn only_tenants_runs_in_those_and_refuses_an_unknown_name_before_running() {
    let (db, mut conn) = db_with_three_tenants();
    let c = registry::find(&mut conn, &PublicName::new("c.test").unwrap())
        .unwrap()
        .unwrap();
    registry::add_alias(&mut conn, &c, &PublicName::new("see.test").unwrap()).unwrap();
    let names = |v: &[&str]| v.iter().map(|n| PublicName::new(n).unwrap()).collect();
    let report = AcrossTenants::new(db.url())
        .only_tenants(names(&["see.test", "a.test", "c.test"]))
        .run_sql("UPDATE counters SET n = n + 1", &|_| {})
        .unwrap();
    assert_eq!(
        report.tenants_done, 2,
        "c once, whatever name it was asked by"
    );
    assert_eq!(counters(&mut conn), vec![1, 0, 1]);
    let err = AcrossTenants::new(db.url())
        .only_tenants(names(&["a.test", "nobody.test"]))
        .run_sql("UPDATE counters SET n = n + 1", &|_| {})
        .unwrap_err();
    assert!(matches!(err, AcrossError::UnknownTenant(ref n) if n == "nobody.test"));
    assert_eq!(counters(&mut conn), vec![1, 0, 1], "nothing ran");
}

#[test]
fn tenant_sizes_find_the_big_tenant_and_estimate_its_rows() {
    let (_db, mut conn) = db_with_three_tenants();
    conn.batch_execute(
        "INSERT INTO b.counters SELECT g, 1 FROM generate_series(2, 5000) g;
         ANALYZE b.counters; ANALYZE a.counters; ANALYZE c.counters;",
    )
    .unwrap();
    let by_size = tenant_sizes(&mut conn, SizeOrder::LargestFirst).unwrap();
    assert_eq!(by_size[0].public_name, "b.test");
    assert_eq!(by_size[0].schema_name.as_str(), "b");
    assert_eq!(by_size[0].rows_estimate, 5000);
    assert_eq!(by_size[0].relations, 1);
    assert!(
        by_size[0].total_bytes > by_size[1].total_bytes,
        "{by_size:?}"
    );
    assert!(by_size[1].total_bytes > 0);
    assert_eq!(by_size[1].rows_estimate, 1);
    let by_name: Vec<String> = tenant_sizes(&mut conn, SizeOrder::Name)
        .unwrap()
        .into_iter()
        .map(|t| t.public_name)
        .collect();
    assert_eq!(by_name, ["a.test", "b.test", "c.test"]);
    let by_rows = tenant_sizes(&mut conn, SizeOrder::MostRowsFirst).unwrap();
    assert_eq!(by_rows[0].public_name, "b.test");
    // A tenant whose schema is gone is listed with nothing in it.
    conn.batch_execute("DROP SCHEMA c CASCADE").unwrap();
    let c = tenant_sizes(&mut conn, SizeOrder::Name)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!((c.total_bytes, c.rows_estimate, c.relations), (0, 0, 0));
}
