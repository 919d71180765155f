//! The provisioning commands of the real `appschema-cli` binary.

use std::path::Path;

use appschema_tempdb::TestDb;
use assert_cmd::Command;

const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared { diesel::table! { public.plans (id) { id -> Int8 } } }
#[appschema::isolated]
pub mod tenant { diesel::table! { orders (id) { id -> Int8, plan_id -> Nullable<Int8> } } }
"#;

fn project(db: &TestDb) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
    for (name, up) in [
        ("2024-01-01-000000_plans", "CREATE TABLE public.plans (id bigserial PRIMARY KEY);"),
        (
            "2024-01-02-000000_orders",
            "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES public.plans (id));",
        ),
    ] {
        let d = dir.path().join("migrations").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), "").unwrap();
    }
    let out = run(dir.path(), db, &["migrate"]);
    assert_eq!(out.0, 0, "{out:?}");
    dir
}

/// Exit code, stdout, stderr.
fn run(dir: &Path, db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let o = Command::cargo_bin("appschema-cli")
        .unwrap()
        .current_dir(dir)
        .env("DATABASE_URL", db.url())
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
fn createschema_prints_the_schema_and_list_shows_the_tenant() {
    let db = TestDb::new();
    let dir = project(&db);
    let (code, out, err) = run(dir.path(), &db, &["createschema", "Acme.example.com"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "acme_example_com\n");
    let (code, out, _) = run(
        dir.path(),
        &db,
        &[
            "createschema",
            "beta.test",
            "--schema",
            "beta",
            "--from",
            "spare",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "beta\n"));
    let (_, out, _) = run(dir.path(), &db, &["list"]);
    assert_eq!(out, "acme.example.com\tacme_example_com\nbeta.test\tbeta\n");
    let (_, out, _) = run(dir.path(), &db, &["list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[1]["schema"], "beta");
}

#[test]
fn createschema_refuses_bad_names_saying_which_rule_broke() {
    let db = TestDb::new();
    let dir = project(&db);
    for (args, rule) in [
        (vec!["createschema", "a;b"], "contains ';'"),
        (
            vec!["createschema", "ok.test", "--schema", "Upper"],
            "lower-case ASCII",
        ),
        (
            vec!["createschema", "ok.test", "--schema", "pg_x"],
            "`pg_` prefix",
        ),
        (
            vec!["createschema", "ok.test", "--schema", "appschema_x"],
            "appschema_",
        ),
    ] {
        let (code, _, err) = run(dir.path(), &db, &args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.starts_with("error: invalid") && err.contains(rule),
            "{args:?}: {err}"
        );
    }
    let (_, out, _) = run(dir.path(), &db, &["list"]);
    assert_eq!(out, "");
}

#[test]
fn schematemplate_writes_a_template_that_createschema_replays() {
    let db = TestDb::new();
    let dir = project(&db);
    let (code, out, err) = run(dir.path(), &db, &["schematemplate"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("-- appschema schema template\n-- version: 20240102000000\n"),
        "{out}"
    );
    let file = dir.path().join("tenant.sql");
    let (code, _, _) = run(
        dir.path(),
        &db,
        &["schematemplate", "--output", file.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), out);
    let (code, out, err) = run(
        dir.path(),
        &db,
        &["createschema", "t.test", "--from", "template"],
    );
    assert_eq!((code, out.as_str()), (0, "t_test\n"), "{err}");
    assert!(err.contains("from template"), "{err}");
    let (code, out, _) = run(
        dir.path(),
        &db,
        &[
            "createschema",
            "f.test",
            "--template",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!((code, out.as_str()), (0, "f_test\n"));
}

#[test]
fn spares_tops_up_and_lists_the_spares() {
    let db = TestDb::new();
    let dir = project(&db);
    let (code, out, err) = run(dir.path(), &db, &["spares", "--count", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("appschema_spare_"))
            .count(),
        2,
        "{out}"
    );
    let (_, again, _) = run(dir.path(), &db, &["spares"]);
    assert_eq!(again, out);
    let (_, _, err) = run(
        dir.path(),
        &db,
        &["createschema", "s.test", "--from", "spare"],
    );
    assert!(err.contains("from spare"), "{err}");
    let (_, out, _) = run(dir.path(), &db, &["spares"]);
    assert_eq!(out.lines().count(), 1);
}

#[test]
fn dropschema_needs_yes_off_a_terminal_and_archive_can_be_restored() {
    let db = TestDb::new();
    let dir = project(&db);
    run(dir.path(), &db, &["createschema", "gone.test"]);
    let (code, _, err) = run(dir.path(), &db, &["dropschema", "gone.test"]);
    assert_eq!(code, 1);
    assert!(err.contains("pass --yes"), "{err}");
    let (code, archive, err) = run(
        dir.path(),
        &db,
        &["dropschema", "gone.test", "--archive", "--yes"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        archive.starts_with("appschema_archived_gone_test_"),
        "{archive}"
    );
    let (_, out, _) = run(dir.path(), &db, &["list"]);
    assert_eq!(out, "");
    let (code, out, _) = run(dir.path(), &db, &["restore", archive.trim()]);
    assert_eq!((code, out.as_str()), (0, "gone_test\n"));
    let (code, _, _) = run(dir.path(), &db, &["dropschema", "gone.test", "--yes"]);
    assert_eq!(code, 0);
    let (code, _, err) = run(dir.path(), &db, &["dropschema", "gone.test", "--yes"]);
    assert_eq!(code, 1);
    assert!(err.contains("no tenant is named `gone.test`"), "{err}");
}

#[test]
fn rename_and_clone_print_the_result() {
    let db = TestDb::new();
    let dir = project(&db);
    run(dir.path(), &db, &["createschema", "a.test"]);
    let (code, out, err) = run(
        dir.path(),
        &db,
        &["rename", "a.test", "--to", "b.test", "--schema", "bee"],
    );
    assert_eq!((code, out.as_str()), (0, "b.test\tbee\n"), "{err}");
    let (code, out, err) = run(dir.path(), &db, &["clone", "b.test", "c.test"]);
    assert_eq!((code, out.as_str()), (0, "c_test\n"), "{err}");
    let (code, _, err) = run(dir.path(), &db, &["rename", "b.test"]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing to rename"), "{err}");
}

#[test]
fn list_and_spares_say_so_when_there_are_none() {
    let db = TestDb::new();
    let dir = project(&db);
    let (code, out, err) = run(dir.path(), &db, &["list"]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        err,
        "no tenants yet: create one with `appschema-cli createschema PUBLIC_NAME`\n"
    );
    let (code, out, err) = run(dir.path(), &db, &["spares"]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        err,
        "no spare schemas: create some with `appschema-cli spares --count N`\n"
    );
}

#[test]
fn createschema_before_migrate_says_to_run_migrate_once() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
    for (name, up) in [
        (
            "2024-01-01-000000_plans",
            "CREATE TABLE public.plans (id bigserial PRIMARY KEY);",
        ),
        (
            "2024-01-02-000000_orders",
            "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES plans (id));",
        ),
    ] {
        let d = dir.path().join("migrations").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
    }
    let (code, _, err) = run(dir.path(), &db, &["createschema", "dev.test"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("run `appschema-cli migrate`"), "{err}");
    assert_eq!(
        err.matches(r#"relation "plans" does not exist"#).count(),
        1,
        "{err}"
    );
}
