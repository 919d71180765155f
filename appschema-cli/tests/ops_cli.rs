//! `exec`, `psql` and `list --sizes` of the real `appschema-cli` binary.

use appschema_core::{registry, PublicName, SchemaName};
use appschema_tempdb::TestDb;
use assert_cmd::Command;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// Three tenants `a.test`, `b.test`, `c.test` (schemas `a`, `b`, `c`), each
/// with `counters` holding `(1, 0)`, and an empty `public.counters` of the
/// same shape that escaped work would land in.
fn db() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
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
            "CREATE SCHEMA {name};
             CREATE TABLE {name}.counters (id int PRIMARY KEY, n int NOT NULL CHECK (n < 100));
             INSERT INTO {name}.counters VALUES (1, 0);"
        ))
        .unwrap();
    }
    (db, conn)
}

fn counters(conn: &mut PgConnection) -> Vec<i32> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        n: i32,
    }
    ["a", "b", "c", "public"]
        .iter()
        .map(|s| {
            diesel::sql_query(format!(
                "SELECT coalesce(sum(n), 0)::int AS n FROM {s}.counters"
            ))
            .get_result::<N>(conn)
            .unwrap()
            .n
        })
        .collect()
}

/// Exit code, stdout, stderr.
fn run(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::cargo_bin("appschema-cli")
        .unwrap()
        .current_dir(dir.path())
        .env("DATABASE_URL", db.url())
        .env_remove("PGOPTIONS")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn exec_runs_the_sql_in_every_tenant_and_nowhere_else() {
    let (db, mut conn) = db();
    let (code, out, err) = run(
        &db,
        &[
            "exec",
            "--sql",
            "UPDATE counters SET n = n + 1",
            "--jobs",
            "2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("3 tenant(s) done, 0 failed, in "), "{out}");
    assert_eq!(counters(&mut conn), vec![1, 1, 1, 0]);
}

#[test]
fn exec_reports_a_failing_tenant_rolls_it_back_and_exits_non_zero() {
    let (db, mut conn) = db();
    conn.batch_execute("UPDATE b.counters SET n = 95").unwrap();
    let sql = "INSERT INTO counters VALUES (2, 1); UPDATE counters SET n = n + 10 WHERE id = 1";
    let (code, out, err) = run(&db, &["exec", "--sql", sql]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("2 tenant(s) done, 1 failed"), "{out}");
    assert!(
        err.contains("error: tenant `b.test` (schema `b`): new row for relation \"counters\" violates check constraint"),
        "{err}"
    );
    // The progress off a terminal: a line for the run, one per failure.
    assert!(err.contains("running in 3 tenant(s)"), "{err}");
    assert!(
        err.contains("failed: tenant `b.test` (schema `b`)"),
        "{err}"
    );
    // a and c: 10 + 1; b as it was (its INSERT rolled back with the UPDATE).
    assert_eq!(counters(&mut conn), vec![11, 95, 11, 0]);

    let (code, out, err) = run(&db, &["exec", "--sql", sql, "--json", "--jobs", "1"]);
    assert_eq!(code, 1);
    // --json: no progress at all.
    assert!(
        !err.contains("running in") && !err.contains("failed:"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["tenants"], 3);
    assert_eq!(json["done"], 0, "a and c now refuse the duplicate id 2");
    assert_eq!(json["failed"].as_array().unwrap().len(), 3);
    assert_eq!(json["failed"][0]["tenant"], "a.test");
    assert_eq!(json["failed"][0]["schema"], "a");
    assert_eq!(counters(&mut conn), vec![11, 95, 11, 0]);
}

#[test]
fn exec_from_a_file_on_chosen_tenants_only() {
    let (db, mut conn) = db();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fix.sql");
    std::fs::write(&file, "UPDATE counters SET n = 5;\n").unwrap();
    let (code, _, err) = run(
        &db,
        &[
            "exec",
            "--file",
            file.to_str().unwrap(),
            "--tenant",
            "c.test",
            "--tenant",
            "a.test",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters(&mut conn), vec![5, 0, 5, 0]);
    let (code, _, err) = run(
        &db,
        &["exec", "--sql", "SELECT 1", "--tenant", "nobody.test"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no tenant answers to `nobody.test`"), "{err}");
    let (code, _, err) = run(&db, &["exec", "--file", "/nonexistent/fix.sql"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("failed to read `/nonexistent/fix.sql`"),
        "{err}"
    );
}

#[test]
fn exec_dry_run_lists_the_tenants_and_changes_nothing() {
    let (db, mut conn) = db();
    let (code, out, err) = run(
        &db,
        &["exec", "--sql", "UPDATE counters SET n = 9", "--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "would run in 3 tenant(s), each in its own transaction: a.test, b.test, c.test\n"
    );
    let (code, out, _) = run(
        &db,
        &[
            "exec",
            "--sql",
            "UPDATE counters SET n = 9",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["tenants"][2]["schema"], "c");
    assert_eq!(counters(&mut conn), vec![0, 0, 0, 0]);
}

#[test]
fn exec_refuses_sql_that_commits_or_does_not_parse_before_running_anywhere() {
    let (db, mut conn) = db();
    let (code, _, err) = run(
        &db,
        &[
            "exec",
            "--sql",
            "UPDATE counters SET n = n + 1; COMMIT; UPDATE counters SET n = n + 50",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("`COMMIT` ends or opens a transaction"),
        "{err}"
    );
    let (code, _, err) = run(
        &db,
        &["exec", "--sql", "UPDATE counters SET n = n + 1; UPDAT x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("syntax error"), "{err}");
    assert_eq!(counters(&mut conn), vec![0, 0, 0, 0]);
}

#[test]
fn psql_opens_a_shell_on_the_tenants_search_path_and_says_what_it_runs() {
    let (db, _conn) = db();
    let (code, out, err) = run(
        &db,
        &[
            "psql",
            "b.test",
            "--",
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT current_schema() || ' ' || current_setting('search_path') || ' ' || n FROM counters",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "b \"b\", \"public\" 0\n");
    assert!(
        err.contains(
            r#"tenant `b.test`: running PGOPTIONS='-c search_path="b",\ "public"' psql '"#
        ),
        "{err}"
    );
    // psql's own exit code comes back.
    let (code, _, _) = run(&db, &["psql", "b.test", "--", "-X", "-c", "SELECT 1/0"]);
    assert_eq!(code, 1);
}

#[test]
fn psql_refuses_an_unknown_tenant_or_one_whose_schema_is_gone() {
    let (db, mut conn) = db();
    let (code, out, err) = run(&db, &["psql", "nobody.test", "--", "-c", "SELECT 1"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("no tenant answers to `nobody.test`"), "{err}");
    conn.batch_execute("DROP SCHEMA c CASCADE").unwrap();
    let (code, out, err) = run(&db, &["psql", "c.test", "--", "-c", "SELECT 1"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("schema `c` of tenant `c.test` does not exist"),
        "{err}"
    );
}

#[test]
fn list_sizes_sorts_by_size_or_rows_in_text_and_json() {
    let (db, mut conn) = db();
    conn.batch_execute(
        "INSERT INTO c.counters SELECT g, 1 FROM generate_series(2, 3000) g;
         ANALYZE a.counters; ANALYZE b.counters; ANALYZE c.counters;",
    )
    .unwrap();
    let (code, out, err) = run(&db, &["list", "--sizes", "--sort", "size"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("c.test\tc\t"), "{out}");
    assert!(lines[0].ends_with("\t3000 rows"), "{out}");
    let (code, out, _) = run(&db, &["list", "--sizes", "--sort", "rows", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["public_name"], "c.test");
    assert_eq!(json[0]["rows_estimate"], 3000);
    assert!(json[0]["total_bytes"].as_i64().unwrap() > json[1]["total_bytes"].as_i64().unwrap());
    assert_eq!(json[1]["rows_estimate"], 1);
    let (code, out, _) = run(&db, &["list", "--sizes"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("a.test\ta\t"), "{out}");
    // --sort alone is refused: it orders sizes.
    let (code, _, err) = run(&db, &["list", "--sort", "size"]);
    assert_eq!(code, 2, "{err}");
}
