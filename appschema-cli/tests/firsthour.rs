//! The new user's first hour (issue 27, item 6): the real `appschema-cli`
//! binary in a temp project against a real database.

use std::path::Path;

use appschema_tempdb::TestDb;
use appschema_testkit::cli::{cli, migration, project, run};

fn migration_dirs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn migration_generate_twice_in_one_second_gives_two_versions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Five runs take far less than five seconds: at least two share a second.
    for name in ["a", "b", "c", "d", "e"] {
        let out = run(cli(dir.path()).args(["migration", "generate", name, "--scope", "isolated"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let names = migration_dirs(dir.path());
    let versions: Vec<&str> = names.iter().map(|n| n.split_once('_').unwrap().0).collect();
    let suffixes: Vec<&str> = names.iter().map(|n| n.split_once('_').unwrap().1).collect();
    // Sorted by name = sorted by version: generated in order, all distinct.
    assert_eq!(suffixes, ["a", "b", "c", "d", "e"], "{names:?}");
    let mut distinct = versions.clone();
    distinct.dedup();
    assert_eq!(
        distinct, versions,
        "two migrations share a version: {names:?}"
    );

    // A migration dated in the future (a colleague's clock, a hand-written
    // version) still sorts before the next generated one.
    migration(dir.path(), "2999-12-31-235959_later", "");
    let out = run(cli(dir.path()).args(["migration", "generate", "f", "--scope", "shared"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        migration_dirs(dir.path())
            .last()
            .unwrap()
            .starts_with("3000-01-01-000000_f"),
        "{:?}",
        migration_dirs(dir.path())
    );
}

#[test]
fn migrate_dry_run_lists_isolated_migrations_before_the_first_tenant() {
    let db = TestDb::new();
    let dir = project();
    let out = run(cli(dir.path()).args(["migrate", "--dry-run", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("1. 2024-01-01-000000_plans (shared) -> 1 schema(s): public\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "2. 2024-01-02-000000_orders (isolated) -> 0 schema(s) + each tenant created later\n"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("no tenant yet"), "{}", out.stdout);

    // Once migrated, with still no tenant: nothing is pending in `public`,
    // and the isolated migration is still shown as what a tenant gets.
    let out = run(cli(dir.path()).args(["migrate", "--database-url", db.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(cli(dir.path()).args(["migrate", "--dry-run", "--database-url", db.url()]));
    assert_eq!(
        out.stdout.lines().next(),
        Some("1. 2024-01-02-000000_orders (isolated) -> 0 schema(s) + each tenant created later"),
        "{}",
        out.stdout
    );

    // With a tenant, up to date: nothing to apply, no tenant note.
    let out = run(cli(dir.path()).args([
        "createschema",
        "acme.example.com",
        "--database-url",
        db.url(),
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(cli(dir.path()).args(["migrate", "--dry-run", "--database-url", db.url()]));
    assert_eq!(out.stdout, "nothing to apply\n", "{}", out.stderr);
}

const PRINTED: &str = include_str!("fixtures/print_schema/tenant.rs");
const FIXED: &str = include_str!("fixtures/print_schema/tenant.fixed.rs");

#[test]
fn schema_fix_makes_print_schema_output_usable_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenant.rs");
    std::fs::write(&file, PRINTED).unwrap();

    let out = run(cli(dir.path()).args(["schema", "fix", "tenant.rs", "--check"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("--tenant-schema dev_localhost"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        PRINTED,
        "--check wrote"
    );

    let out = run(cli(dir.path()).args([
        "schema",
        "fix",
        "tenant.rs",
        "--tenant-schema",
        "dev_localhost",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "tenant.rs: 2 per-tenant type(s) unqualified (schema `dev_localhost`), 1 `QueryId` derive(s) added\n"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), FIXED);

    // Again: nothing changes, and --check agrees.
    let out = run(cli(dir.path()).args([
        "schema",
        "fix",
        "tenant.rs",
        "--tenant-schema",
        "dev_localhost",
    ]));
    assert_eq!(out.stdout, "tenant.rs: nothing to fix\n", "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), FIXED);
    let out = run(cli(dir.path()).args([
        "schema",
        "fix",
        "tenant.rs",
        "--check",
        "--tenant-schema",
        "dev_localhost",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A shared file (no --tenant-schema) keeps every type's schema.
    std::fs::write(&file, PRINTED).unwrap();
    let out = run(cli(dir.path()).args(["schema", "fix", "tenant.rs"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&file)
            .unwrap()
            .matches("schema = \"dev_localhost\"")
            .count(),
        2
    );

    let out = run(cli(dir.path()).args(["schema", "fix", "missing.rs"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("failed to read `missing.rs`"),
        "{}",
        out.stderr
    );
}

/// Stops the development server of a test, however the test ends.
struct StopOnDrop(std::path::PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = cli(&self.0).args(["dev", "stop"]).output();
    }
}

fn count_notes(url: &str) -> Result<i64, diesel::ConnectionError> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(url)?;
    Ok(diesel::sql_query("SELECT count(*) AS n FROM notes")
        .get_result::<N>(&mut conn)
        .unwrap()
        .n)
}

#[test]
fn dev_server_starts_once_stops_and_restarts_with_its_data() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let dir = tempfile::tempdir().unwrap();
    let _stop = StopOnDrop(dir.path().to_path_buf());
    let out = run(cli(dir.path()).args(["dev", "status"]));
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert!(out.stdout.starts_with("not created"), "{}", out.stdout);

    let out = run(cli(dir.path()).args(["dev", "start"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("created and started"), "{}", out.stderr);
    let url = out
        .stdout
        .trim()
        .strip_prefix("export DATABASE_URL=")
        .unwrap_or_else(|| panic!("{}", out.stdout))
        .to_string();
    assert!(url.starts_with("postgres://postgres:"), "{url}");
    // The data is the project's, out of git.
    assert!(dir.path().join(".appschema/pgdata/PG_VERSION").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".appschema/.gitignore"))
            .unwrap()
            .lines()
            .last(),
        Some("*")
    );
    let mut conn = diesel::PgConnection::establish(&url).unwrap();
    conn.batch_execute("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')")
        .unwrap();
    drop(conn);
    // The password is required: the URL without it is refused.
    let no_password = url.replacen(
        &url[url.find(':').unwrap() + 3..url.find('@').unwrap()],
        "postgres",
        1,
    );
    assert!(diesel::PgConnection::establish(&no_password).is_err());

    // Starting a running server does nothing, and says so.
    let out = run(cli(dir.path()).args(["dev", "start"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("export DATABASE_URL={url}"));
    let out = run(cli(dir.path()).args(["dev", "status"]));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.starts_with("running (pid "), "{}", out.stdout);

    let out = run(cli(dir.path()).args(["dev", "stop"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        count_notes(&url).is_err(),
        "still accepting connections after stop"
    );
    let out = run(cli(dir.path()).args(["dev", "status"]));
    assert_eq!(
        (out.code, out.stdout.starts_with("stopped")),
        (3, true),
        "{}",
        out.stdout
    );

    // Started again: same URL, same data.
    let out = run(cli(dir.path()).args(["dev", "start"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("development server started"),
        "{}",
        out.stderr
    );
    let out = run(cli(dir.path()).args(["dev", "url"]));
    assert_eq!(out.stdout.trim(), url);
    assert_eq!(count_notes(&url).unwrap(), 1);
}
