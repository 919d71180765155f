//! `appschema-cli export` and `import` between two databases.

use std::path::Path;

use appschema_tempdb::TestDb;
use assert_cmd::Command;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared { diesel::table! { public.plans (id) { id -> Int8 } } }
#[appschema::isolated]
pub mod tenant { diesel::table! { orders (id) { id -> Int8, plan_id -> Nullable<Int8>, note -> Text } } }
"#;

const MIGRATIONS: &[(&str, &str)] = &[
    (
        "2024-01-01-000000_plans",
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY);",
    ),
    (
        "2024-01-02-000000_orders",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES public.plans (id), note text NOT NULL DEFAULT '');",
    ),
];

/// A project directory with the first `migrations` of [`MIGRATIONS`],
/// migrated into `db`.
fn project(db: &TestDb, migrations: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
    for (name, up) in &MIGRATIONS[..migrations] {
        let d = dir.path().join("migrations").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), "").unwrap();
    }
    let out = run(dir.path(), db, &["migrate"], None);
    assert_eq!(out.0, 0, "{out:?}");
    dir
}

/// Exit code, stdout, stderr.
fn run(dir: &Path, db: &TestDb, args: &[&str], stdin: Option<Vec<u8>>) -> (i32, Vec<u8>, String) {
    let mut cmd = Command::cargo_bin("appschema-cli").unwrap();
    cmd.current_dir(dir)
        .env("DATABASE_URL", db.url())
        .args(args);
    if let Some(input) = stdin {
        cmd.write_stdin(input);
    }
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

fn lines(db: &TestDb, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Line>(&mut db.conn())
        .unwrap()
        .into_iter()
        .map(|l| l.value)
        .collect()
}

/// The source: tenant `acme.test` (alias `acme.example`) with 1,000 orders.
fn source() -> (TestDb, tempfile::TempDir) {
    let db = TestDb::new();
    let dir = project(&db, 2);
    let (code, _, err) = run(dir.path(), &db, &["createschema", "acme.test"], None);
    assert_eq!(code, 0, "{err}");
    db.conn()
        .batch_execute(
            "INSERT INTO public.plans DEFAULT VALUES;
             INSERT INTO acme_test.orders (plan_id, note) SELECT 1, 'order ' || g FROM generate_series(1, 1000) g;
             INSERT INTO public.appschema_public_names (public_name, tenant_id)
             SELECT 'acme.example', id FROM public.appschema_tenants WHERE schema_name = 'acme_test';",
        )
        .unwrap();
    (db, dir)
}

const ORDERS: &str = "SELECT count(*)::text || ' ' || sum(id)::text || ' ' || max(note) AS value FROM acme_test.orders";

#[test]
fn export_then_import_moves_a_tenant_to_another_database() {
    let (source_db, source_dir) = source();
    let file = source_dir.path().join("acme.tenant");
    let (code, out, err) = run(
        source_dir.path(),
        &source_db,
        &[
            "export",
            "acme.example",
            "-o",
            file.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["schema"], "acme_test");
    assert_eq!(
        json["rows"], 1001,
        "1000 orders and the tracking row: {json}"
    );
    assert!(
        err.contains("orders: 1000 row(s)"),
        "progress per table: {err}"
    );
    assert!(!source_dir.path().join("acme.tenant.partial").exists());

    let target_db = TestDb::new();
    let target_dir = project(&target_db, 2);
    target_db
        .conn()
        .batch_execute("INSERT INTO public.plans DEFAULT VALUES")
        .unwrap();
    let (code, out, err) = run(
        target_dir.path(),
        &target_db,
        &["import", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(text(&out), "acme_test\n");
    assert_eq!(lines(&target_db, ORDERS), lines(&source_db, ORDERS));
    let (_, out, _) = run(target_dir.path(), &target_db, &["list"], None);
    assert_eq!(text(&out), "acme.test\tacme_test\n");

    // Again: the names are taken now, and nothing changes.
    let (code, _, err) = run(
        target_dir.path(),
        &target_db,
        &["import", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("tenant `acme.test` already exists"), "{err}");

    // Through a pipe, under other names.
    let (code, dump, err) = run(
        source_dir.path(),
        &source_db,
        &["export", "acme.test", "-o", "-"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(
        target_dir.path(),
        &target_db,
        &[
            "import",
            "-",
            "--as",
            "acme2.test",
            "--schema",
            "acme2",
            "--json",
        ],
        Some(dump),
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (json["schema"].as_str(), json["rows"].as_u64()),
        (Some("acme2"), Some(1001))
    );
    assert_eq!(
        lines(&target_db, &ORDERS.replace("acme_test", "acme2")),
        lines(&source_db, ORDERS)
    );
}

#[test]
fn import_refuses_another_migration_head_and_a_damaged_file_changing_nothing() {
    let (source_db, source_dir) = source();
    let file = source_dir.path().join("acme.tenant");
    let (code, _, err) = run(
        source_dir.path(),
        &source_db,
        &["export", "acme.test", "-o", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");

    let behind_db = TestDb::new();
    let behind_dir = project(&behind_db, 1);
    let (code, _, err) = run(
        behind_dir.path(),
        &behind_db,
        &["import", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("isolated migration 20240102000000") && err.contains("isolated head is none"),
        "{err}"
    );

    let target_db = TestDb::new();
    let target_dir = project(&target_db, 2);
    let bytes = std::fs::read(&file).unwrap();
    let cut = target_dir.path().join("cut.tenant");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let (code, _, err) = run(
        target_dir.path(),
        &target_db,
        &["import", cut.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("damaged or truncated"), "{err}");
    for db in [&behind_db, &target_db] {
        assert_eq!(
            lines(
                db,
                "SELECT count(*)::text AS value FROM public.appschema_tenants"
            ),
            ["0"]
        );
        assert_eq!(
            lines(
                db,
                "SELECT count(*)::text AS value FROM pg_namespace WHERE nspname = 'acme_test'"
            ),
            ["0"]
        );
    }
}

#[test]
fn exporting_an_unknown_tenant_fails_and_leaves_no_file() {
    let (db, dir) = source();
    let file = dir.path().join("nobody.tenant");
    let (code, _, err) = run(
        dir.path(),
        &db,
        &["export", "nobody.test", "-o", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("no tenant is named `nobody.test`"), "{err}");
    assert!(!file.exists());
    assert!(!dir.path().join("nobody.tenant.partial").exists());
}
