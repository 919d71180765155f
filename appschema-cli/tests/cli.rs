//! The real `appschema-cli` binary in a temp project against a real database.

use appschema_tempdb::TestDb;
use appschema_testkit::cli::{cli, migration, project, run};
use diesel::connection::SimpleConnection;

fn add_tenants(db: &TestDb, n: usize) {
    let mut conn = db.conn();
    appschema_core::registry::install(&mut conn).unwrap();
    for i in 0..n {
        conn.batch_execute(&format!(
            "CREATE SCHEMA t{i}; INSERT INTO appschema_tenants (public_name, schema_name) VALUES ('t{i}.example.com', 't{i}');
             INSERT INTO appschema_public_names (public_name, tenant_id, is_primary)
               SELECT 't{i}.example.com', id, true FROM appschema_tenants WHERE schema_name = 't{i}';"
        ))
        .unwrap();
    }
}

#[test]
fn migrate_on_a_fresh_database_installs_the_registry_and_applies_everything() {
    let db = TestDb::new();
    let dir = project();
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("1 schema(s) migrated, 1 migration(s) applied, 0 failure(s)"),
        "{}",
        out.stdout
    );
    // Plain lines when not on a terminal.
    assert!(
        out.stderr
            .contains("applying shared 2024-01-01-000000_plans to 1 schema(s)"),
        "{}",
        out.stderr
    );

    add_tenants(&db, 3);
    let out = run(cli(dir.path()).args(["migrate", "--dry-run", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "1. 2024-01-02-000000_orders (isolated) -> 3 schema(s): t0, t1, t2"
    );
    // status: tenants behind head first, JSON too.
    let out = run(cli(dir.path())
        .args(["status", "--json"])
        .env("DATABASE_URL", db.url()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["pending"][0], "2024-01-02-000000_orders");
    assert_eq!(v[3]["schema"], "public");

    // appschema.toml supplies the URL.
    std::fs::write(
        dir.path().join("appschema.toml"),
        format!("database_url = {:?}\n", db.url()),
    )
    .unwrap();
    let out = run(cli(dir.path()).args(["migrate", "--jobs", "2", "--tenant", "t1.example.com"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("1 schema(s) migrated, 1 migration(s) applied"),
        "{}",
        out.stdout
    );
    let out = run(cli(dir.path()).args(["migrate"]));
    assert!(
        out.stdout
            .contains("2 schema(s) migrated, 2 migration(s) applied"),
        "{}",
        out.stdout
    );
    let out = run(cli(dir.path()).args(["status"]));
    assert!(
        out.stdout
            .contains("isolated t0 (t0.example.com): 1 applied, up to date"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_tenant_gives_a_non_zero_exit_naming_schema_migration_and_message() {
    let db = TestDb::new();
    let dir = project();
    add_tenants(&db, 2);
    db.conn()
        .batch_execute("CREATE TABLE t1.orders (id int)")
        .unwrap();
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("error: schema `t1`, migration 2024-01-02-000000_orders: relation \"orders\" already exists"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("1 failure(s)"), "{}", out.stdout);
}

#[test]
fn a_run_killed_midway_is_resumed_by_the_next_run() {
    let db = TestDb::new();
    let dir = project();
    add_tenants(&db, 20);
    migration(
        dir.path(),
        "2024-01-03-000000_slow",
        "ALTER TABLE orders ADD COLUMN x int; SELECT pg_sleep(0.1);",
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("appschema-cli"))
        .current_dir(dir.path())
        .args(["migrate", "--jobs", "1", "--database-url", db.url()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(cli(dir.path()).args(["status", "--json", "--database-url", db.url()]));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let behind = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["pending"].as_array().unwrap().is_empty())
        .count();
    assert!(
        behind > 0,
        "the run was killed before finishing: {}",
        out.stdout
    );
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(cli(dir.path()).args(["status", "--json", "--database-url", db.url()]));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|s| s["pending"].as_array().unwrap().is_empty()),
        "{}",
        out.stdout
    );
}

#[test]
fn bad_input_gets_a_clear_message_and_a_non_zero_exit() {
    let dir = project();
    let out = run(cli(dir.path()).args([
        "migrate",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
    ]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: migrate could not run: cannot connect to the database"),
        "{}",
        out.stderr
    );

    let out = run(cli(dir.path()).args(["migrate"]));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no database given"), "{}", out.stderr);

    let out =
        run(cli(dir.path()).args(["status", "--migrations-dir", "nope", "--database-url", "x"]));
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "error: migrations directory `nope` does not exist: pass --migrations-dir or create it"
    );

    std::fs::create_dir_all(dir.path().join("migrations/garbage")).unwrap();
    let out = run(cli(dir.path()).args(["migrate", "--database-url", "x"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the migrations were refused before anything ran"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("garbage` is not a migration"),
        "{}",
        out.stderr
    );

    let out = run(cli(dir.path()).args(["migrate", "--frobnicate"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unexpected argument '--frobnicate'"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn migration_generate_creates_a_diesel_directory_with_the_scope_declared() {
    let dir = project();
    let out =
        run(cli(dir.path()).args(["migration", "generate", "add_notes", "--scope", "isolated"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let created: Vec<_> = std::fs::read_dir(dir.path().join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_add_notes"))
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(
        std::fs::read_to_string(created[0].join("metadata.toml")).unwrap(),
        "appschema_scope = \"isolated\"\n"
    );
    assert!(created[0].join("up.sql").is_file() && created[0].join("down.sql").is_file());
    let out = run(cli(dir.path()).args(["migration", "generate", "x", "--scope", "both"]));
    assert_eq!(out.code, 2);
}

#[test]
fn migrate_names_only_the_pending_migrations_and_status_summarizes_long_lists() {
    let db = TestDb::new();
    let dir = project();
    for i in 3..=9 {
        migration(
            dir.path(),
            &format!("2024-01-0{i}-000000_orders_{i}"),
            &format!("ALTER TABLE orders ADD COLUMN c{i} int;"),
        );
    }
    add_tenants(&db, 2);
    let out = run(cli(dir.path()).args(["status", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "8 pending: 2024-01-02-000000_orders … 2024-01-09-000000_orders_9 (8 migrations)"
        ),
        "{}",
        out.stdout
    );
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    migration(
        dir.path(),
        "2024-01-10-000000_orders_10",
        "ALTER TABLE orders ADD COLUMN c10 int;",
    );
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("applying isolated 2024-01-10-000000_orders_10 to 2 schema(s)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("orders_9"), "{}", out.stderr);
}

#[test]
fn status_warns_about_isolated_tables_and_versions_in_the_shared_schema() {
    let db = TestDb::new();
    let dir = project();
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // What `diesel migration run` does: every migration, in `public`.
    db.conn()
        .batch_execute(
            "CREATE TABLE public.orders (id bigserial PRIMARY KEY);
             INSERT INTO public.__diesel_schema_migrations (version) VALUES ('20240102000000');",
        )
        .unwrap();
    let out = run(cli(dir.path()).args(["status", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "warning: shared schema `public` has 1 isolated migration(s) recorded \
             (2024-01-02-000000_orders)"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "warning: isolated table(s) `orders` exist in the shared schema `public`: \
             `diesel migration run` applies every migration to `public`"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn status_warns_about_an_extension_installed_in_a_tenant_schema() {
    let db = TestDb::new();
    let dir = project();
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out =
        run(cli(dir.path()).args(["createschema", "acme.example", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // What an isolated migration's `CREATE EXTENSION` did before appschema
    // sent it to the shared schema: the first tenant's schema got it.
    db.conn()
        .batch_execute("CREATE EXTENSION ltree SCHEMA acme_example; CREATE EXTENSION pg_trgm")
        .unwrap();
    let out = run(cli(dir.path()).args(["status", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "warning: extension `ltree` is installed in the tenant schema `acme_example`"
        ) && out
            .stderr
            .contains(r#"ALTER EXTENSION "ltree" SET SCHEMA "public""#),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("pg_trgm"), "{}", out.stderr);
}

#[test]
fn prepare_writes_the_plan_file_and_check_refuses_it_once_a_migration_changed() {
    let dir = project();
    let out = run(cli(dir.path()).args(["prepare", "--check"]));
    assert_eq!(out.code, 1, "no plan file yet: {}", out.stderr);
    assert!(
        out.stderr
            .contains("is missing or out of date: run `appschema-cli prepare`"),
        "{}",
        out.stderr
    );
    let out = run(cli(dir.path()).arg("prepare"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "wrote appschema-plan.toml: 2 migrations (1 shared, 1 isolated)\n"
    );
    let plan = std::fs::read_to_string(dir.path().join("appschema-plan.toml")).unwrap();
    assert!(
        plan.contains("name = \"2024-01-02-000000_orders\""),
        "{plan}"
    );
    assert!(plan.contains("scope = \"isolated\""), "{plan}");
    assert_eq!(run(cli(dir.path()).args(["prepare", "--check"])).code, 0);

    migration(
        dir.path(),
        "2024-01-03-000000_more",
        "ALTER TABLE orders ADD note text;",
    );
    assert_eq!(run(cli(dir.path()).args(["prepare", "--check"])).code, 1);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let out = run(cli(dir.path()).args(["prepare", "--plan-file", "sub/plan.toml"]));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("is outside"), "{}", out.stderr);
}

#[test]
fn recheck_reads_every_tracking_table_and_finds_a_version_removed_by_hand() {
    let db = TestDb::new();
    let dir = project();
    add_tenants(&db, 2);
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // What `diesel migration revert` run on one tenant schema does.
    db.conn()
        .batch_execute(
            "DROP TABLE t1.orders;
             DELETE FROM t1.__diesel_schema_migrations WHERE version = '20240102000000'",
        )
        .unwrap();
    // The recorded head cannot see that (documented): nothing to do.
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert!(
        out.stdout.contains("0 migration(s) applied"),
        "{}",
        out.stdout
    );
    let out = run(cli(dir.path())
        .args(["status", "--json", "--recheck"])
        .env("DATABASE_URL", db.url()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["schema"], "t1");
    assert_eq!(v[0]["pending"][0], "2024-01-02-000000_orders");
    let out = run(cli(dir.path()).args(["migrate", "--recheck", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("1 schema(s) migrated, 1 migration(s) applied"),
        "{}",
        out.stdout
    );
    // Recorded anew: trusted again.
    let out = run(cli(dir.path())
        .args(["status", "--json"])
        .env("DATABASE_URL", db.url()));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["pending"].as_array().unwrap().is_empty()));
}

/// A run cut short by a lost connection (here each tenant's migration
/// terminates its own backend, as an operator's `pg_terminate_backend` or a
/// restart would) says so, and exits 75 (EX_TEMPFAIL): run it again.
#[test]
fn a_run_that_lost_its_connection_says_so_and_exits_75() {
    let db = TestDb::new();
    let dir = project();
    add_tenants(&db, 2);
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    migration(
        dir.path(),
        "2024-01-03-000000_gone",
        "ALTER TABLE orders ADD COLUMN gone int; SELECT pg_terminate_backend(pg_backend_pid());",
    );
    let out = run(cli(dir.path()).args(["migrate", "--jobs", "1", "--database-url", db.url()]));
    assert_eq!(out.code, 75, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("server closed the connection unexpectedly"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: the connection to the database was lost"),
        "{}",
        out.stderr
    );
    // The worker went on with t1 on a new connection (its own migration
    // then terminated it too), rather than failing it on the dead one.
    assert!(
        !out.stderr.contains("no connection to the server"),
        "{}",
        out.stderr
    );
    // A failure of the migration itself is not transient: exit code 1.
    migration(
        dir.path(),
        "2024-01-03-000000_gone",
        "ALTER TABLE orders ADD COLUMN gone int; SELECT 1/0;",
    );
    let out = run(cli(dir.path()).args(["migrate", "--jobs", "1", "--database-url", db.url()]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stderr.contains("hint: the connection"),
        "{}",
        out.stderr
    );
}

#[test]
fn migrate_with_v_and_json_log_format_writes_appschemas_events_as_json_lines() {
    let db = TestDb::new();
    let dir = project();
    add_tenants(&db, 2);
    let out = run(cli(dir.path()).env_remove("RUST_LOG").args([
        "-v",
        "--log-format",
        "json",
        "migrate",
        "--database-url",
        db.url(),
    ]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let finished = out
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v["fields"]["message"] == "migrate run finished")
        .unwrap_or_else(|| panic!("no JSON line for the run's end in:\n{}", out.stderr));
    assert_eq!(finished["target"], "appschema");
    assert_eq!(finished["level"], "INFO");
    // The shared migration once, the isolated one in both tenants.
    assert_eq!(finished["fields"]["applied"], 3);
    assert_eq!(finished["fields"]["failed"], 0);
    assert_eq!(finished["span"]["name"], "appschema.migrate");

    // Without -v, no log lines: only the progress lines.
    let out =
        run(cli(dir.path())
            .env_remove("RUST_LOG")
            .args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("appschema.migrate"), "{}", out.stderr);
}
