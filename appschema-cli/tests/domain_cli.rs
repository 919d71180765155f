//! `appschema-cli domain …` on the real binary.

use std::path::Path;

use appschema_tempdb::TestDb;
use assert_cmd::Command;

const SCHEMA: &str = r#"
#[appschema::isolated]
pub mod tenant { diesel::table! { orders (id) { id -> Int8 } } }
"#;

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

fn ok(dir: &Path, db: &TestDb, args: &[&str]) -> String {
    let (code, out, err) = run(dir, db, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

#[test]
fn domains_are_added_listed_made_primary_and_removed() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
    let m = dir.path().join("migrations/2024-01-01-000000_orders");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("up.sql"),
        "CREATE TABLE orders (id bigserial PRIMARY KEY);",
    )
    .unwrap();
    std::fs::write(m.join("down.sql"), "").unwrap();
    let dir = dir.path();
    ok(dir, &db, &["migrate"]);
    ok(dir, &db, &["createschema", "acme.example.com"]);
    ok(dir, &db, &["createschema", "globex.example.com"]);

    assert_eq!(
        ok(
            dir,
            &db,
            &["domain", "add", "acme.example.com", "Shop.Acme.com"]
        ),
        "added shop.acme.com\n"
    );
    assert_eq!(
        ok(dir, &db, &["domain", "list", "shop.acme.com"]),
        "acme.example.com (primary)\nshop.acme.com\n"
    );

    let (code, _, err) = run(
        dir,
        &db,
        &["domain", "add", "globex.example.com", "shop.acme.com"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("domain `shop.acme.com` already belongs to a tenant"),
        "{err}"
    );

    let (code, _, err) = run(
        dir,
        &db,
        &["domain", "remove", "acme.example.com", "acme.example.com"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("primary domain") && err.contains("domain primary"),
        "{err}"
    );

    assert_eq!(
        ok(dir, &db, &["domain", "primary", "shop.acme.com"]),
        "shop.acme.com is the primary domain of schema acme_example_com\n"
    );
    ok(
        dir,
        &db,
        &["domain", "remove", "shop.acme.com", "acme.example.com"],
    );
    assert_eq!(
        ok(dir, &db, &["domain", "list", "shop.acme.com"]),
        "shop.acme.com (primary)\n"
    );
    assert!(ok(dir, &db, &["list"]).contains("shop.acme.com"));

    let (code, _, err) = run(dir, &db, &["domain", "list", "initech.example.com"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no tenant is named `initech.example.com`"),
        "{err}"
    );
    let (code, _, err) = run(dir, &db, &["domain", "add", "shop.acme.com", "bad domain"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("invalid domain `bad domain`"), "{err}");
}
