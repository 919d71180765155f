//! `appschema-cli migrate --revert` and the revert line of `status`, the
//! real binary against a real database.

use std::path::Path;

use appschema_tempdb::TestDb;
use assert_cmd::Command;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared { diesel::table! { public.plans (id) { id -> Int8 } } }
#[appschema::isolated]
pub mod tenant { diesel::table! { orders (id) { id -> Int8 } } }
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
    for (name, up, down) in [
        (
            "2024-01-01-000000_plans",
            "CREATE TABLE public.plans (id bigserial PRIMARY KEY);",
            "DROP TABLE public.plans;",
        ),
        (
            "2024-01-02-000000_orders",
            "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES public.plans (id));",
            "DROP TABLE orders;",
        ),
    ] {
        let d = dir.path().join("migrations").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), down).unwrap();
    }
    dir
}

fn cli(dir: &Path, db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let o = Command::cargo_bin("appschema-cli")
        .unwrap()
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .args(args)
        .args(["--database-url", db.url()])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The schemas (of `schemas`) holding an `orders` table, and whether
/// `public.plans` exists.
fn tables(db: &TestDb, schemas: &[&str]) -> (Vec<String>, bool) {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.conn();
    let mut has = |schema: &str, table: &str| {
        diesel::sql_query(
            "SELECT count(*) AS n FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
        )
        .bind::<diesel::sql_types::Text, _>(schema)
        .bind::<diesel::sql_types::Text, _>(table)
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n > 0
    };
    let with_orders = schemas
        .iter()
        .filter(|s| has(s, "orders"))
        .map(|s| s.to_string())
        .collect();
    (with_orders, has("public", "plans"))
}

#[test]
fn migrate_revert_undoes_the_last_migration_in_every_tenant_and_spare_and_status_says_so_first() {
    let db = TestDb::new();
    let dir = project();
    let (code, out, err) = cli(dir.path(), &db, &["migrate"]);
    assert_eq!(code, 0, "{out}{err}");
    for t in ["acme.example.com", "globex.example.com"] {
        let (code, out, err) = cli(dir.path(), &db, &["createschema", t]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = cli(dir.path(), &db, &["spares", "--count", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let spare = {
        let mut conn = db.conn();
        appschema_core::provision::spare_schemas(&mut conn).unwrap()[0]
            .as_str()
            .to_string()
    };
    let schemas = ["acme_example_com", "globex_example_com", spare.as_str()];
    assert_eq!(
        tables(&db, &schemas),
        (schemas.map(String::from).to_vec(), true)
    );

    let (code, out, err) = cli(dir.path(), &db, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "revert: `migrate --revert` would undo 2024-01-02-000000_orders (isolated) in 3 schema(s)"
        ),
        "{out}"
    );

    let (code, out, err) = cli(dir.path(), &db, &["migrate", "--revert", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "1. revert 2024-01-02-000000_orders (isolated) -> 3 schema(s): acme_example_com"
        ),
        "{out}"
    );
    assert!(!out.contains("plans"), "{out}");
    assert_eq!(
        tables(&db, &schemas).0.len(),
        3,
        "a dry run changes nothing"
    );

    let (code, out, err) = cli(dir.path(), &db, &["migrate", "--revert"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 migration(s) reverted, 0 failure(s)"),
        "{out}"
    );
    // The progress, one line per step off a terminal.
    assert!(
        err.contains("reverting isolated 2024-01-02-000000_orders in 3 schema(s)"),
        "{err}"
    );
    assert_eq!(tables(&db, &schemas), (Vec::new(), true));

    // Past the start: refused, naming what is applied.
    let (code, out, err) = cli(dir.path(), &db, &["migrate", "--revert", "5"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("cannot revert the last 5 migration(s): only 1 are applied"),
        "{err}"
    );

    // `migrate` brings it back; `--to` a dashed version undoes everything newer.
    let (code, out, err) = cli(dir.path(), &db, &["migrate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tables(&db, &schemas).0.len(), 3, "{out}");
    let (code, out, err) = cli(
        dir.path(),
        &db,
        &["migrate", "--revert", "--to", "2024-01-01-000000"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tables(&db, &schemas), (Vec::new(), true));
    let (code, out, err) = cli(dir.path(), &db, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "revert: `migrate --revert` would undo 2024-01-01-000000_plans (shared) in 1 schema(s)"
        ),
        "{out}"
    );
}

#[test]
fn a_failed_revert_exits_non_zero_naming_the_schema_and_how_to_resume() {
    let db = TestDb::new();
    let dir = project();
    assert_eq!(cli(dir.path(), &db, &["migrate"]).0, 0);
    for t in [
        "acme.example.com",
        "globex.example.com",
        "initech.example.com",
    ] {
        assert_eq!(cli(dir.path(), &db, &["createschema", t]).0, 0);
    }
    db.conn()
        .batch_execute(
            "CREATE VIEW globex_example_com.v AS SELECT id FROM globex_example_com.orders",
        )
        .unwrap();
    let (code, out, err) = cli(dir.path(), &db, &["migrate", "--revert", "--to", "0"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("error: schema `globex_example_com`, migration 2024-01-02-000000_orders:"),
        "{err}"
    );
    assert!(
        err.contains("resume with `appschema-cli migrate --revert --to 0`"),
        "{err}"
    );
    assert!(err.contains("1 later step(s) not started"), "{err}");
    // The progress line of the failure, as it happened.
    assert!(
        err.contains("failed: schema `globex_example_com`, migration 2024-01-02-000000_orders:"),
        "{err}"
    );
    // status names the tenant left behind (the others are at the start).
    let (_, out, _) = cli(dir.path(), &db, &["status"]);
    assert!(
        out.contains("would refuse")
            && out.contains("`globex_example_com` at 2024-01-02-000000_orders"),
        "{out}"
    );
    db.conn()
        .batch_execute("DROP VIEW globex_example_com.v")
        .unwrap();
    let (code, out, err) = cli(dir.path(), &db, &["migrate", "--revert", "--to", "0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        tables(
            &db,
            &[
                "acme_example_com",
                "globex_example_com",
                "initech_example_com"
            ]
        ),
        (Vec::new(), false)
    );
}

#[test]
fn revert_arguments_are_checked() {
    let db = TestDb::new();
    let dir = project();
    let (code, _, err) = cli(dir.path(), &db, &["migrate", "--to", "1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(dir.path(), &db, &["migrate", "--revert", "1", "--to", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not both"), "{err}");
    let (code, _, err) = cli(dir.path(), &db, &["migrate", "--revert", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at least 1"), "{err}");
    let (code, _, err) = cli(
        dir.path(),
        &db,
        &["migrate", "--revert", "--tenant", "a.example.com"],
    );
    assert_eq!(code, 2, "{err}");
}
