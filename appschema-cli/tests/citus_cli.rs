//! The real `appschema-cli` on a real Citus cluster (coordinator + two
//! workers): `migrate` makes the shared table tenants reference a reference
//! table and warns about triggers; `list`/`status` show each tenant's node;
//! `move` and `rebalance` place tenants. Skipped when Citus is not installed
//! unless `APPSCHEMA_REQUIRE_CITUS=1`.

use std::path::Path;

use appschema_tempdb::CitusTestDb;
use assert_cmd::Command;
use diesel::prelude::*;
use diesel::sql_types::Bool;

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
    migration(
        dir.path(),
        "2024-01-01-000000_plans",
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY);
         INSERT INTO public.plans DEFAULT VALUES;",
    );
    migration(
        dir.path(),
        "2024-01-02-000000_orders",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES public.plans (id));
         CREATE INDEX orders_plan ON orders (plan_id);",
    );
    dir
}

fn migration(root: &Path, name: &str, up: &str) {
    let d = root.join("migrations").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("up.sql"), up).unwrap();
    std::fs::write(d.join("down.sql"), "").unwrap();
}

fn cli(dir: &Path, db: &CitusTestDb, args: &[&str]) -> (i32, String, String) {
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

fn ok(dir: &Path, db: &CitusTestDb, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(dir, db, args);
    assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
    stdout
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    value: bool,
}

fn node_of(list_json: &str, public_name: &str) -> String {
    let rows: serde_json::Value = serde_json::from_str(list_json).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["public_name"] == public_name)
        .unwrap_or_else(|| panic!("{public_name} in {list_json}"))["node"]
        .as_str()
        .unwrap_or_else(|| panic!("a node for {public_name} in {list_json}"))
        .to_string()
}

#[test]
fn migrate_createschema_list_status_move_and_rebalance_on_citus() {
    let Some(db) = CitusTestDb::new("cli") else {
        return;
    };
    let dir = project();
    let p = dir.path();
    ok(p, &db, &["migrate", "--jobs", "2"]);
    let reference: Flag = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'public.plans'::regclass
                          AND repmodel = 't') AS value",
    )
    .get_result(&mut db.conn())
    .unwrap();
    assert!(reference.value, "migrate made `plans` a reference table");

    for name in ["a.example", "b.example", "c.example"] {
        ok(p, &db, &["createschema", name]);
    }
    let list = ok(p, &db, &["list", "--json"]);
    let workers = [db.worker(0), db.worker(1)];
    let a = node_of(&list, "a.example");
    assert!(workers.contains(&a), "{list}");
    let text = ok(p, &db, &["list"]);
    assert!(
        text.contains(&format!("a.example\ta_example\t{a}")),
        "{text}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(p, &db, &["status", "--json"])).unwrap();
    let a_status = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schema"] == "a_example")
        .unwrap();
    assert_eq!(a_status["node"], a.as_str());
    assert_eq!(a_status["pending"].as_array().unwrap().len(), 0);

    let other = if a == workers[0] {
        &workers[1]
    } else {
        &workers[0]
    };
    let moved = ok(p, &db, &["move", "a.example", "--to", other]);
    assert!(
        moved.contains(&format!("from {a} to {other}")) && moved.contains("(logical)"),
        "every table has a primary key, so the move is logical: {moved}"
    );
    assert_eq!(
        &node_of(&ok(p, &db, &["list", "--json"]), "a.example"),
        other
    );

    // A new migration across the tenants, wherever they live.
    migration(
        p,
        "2024-01-03-000000_note",
        "ALTER TABLE orders ADD COLUMN note text NOT NULL DEFAULT '';",
    );
    ok(p, &db, &["migrate", "--jobs", "2"]);
    let status = ok(p, &db, &["status"]);
    assert_eq!(status.matches("up to date").count(), 4, "{status}");

    // `exec` in every tenant, DDL and DML, wherever each lives.
    ok(
        p,
        &db,
        &[
            "exec",
            "--jobs",
            "2",
            "--sql",
            "ALTER TABLE orders ADD COLUMN seen boolean NOT NULL DEFAULT false; \
             INSERT INTO orders (plan_id, seen) VALUES (1, true)",
        ],
    );
    for name in ["a_example", "b_example", "c_example"] {
        let seen: Flag = diesel::sql_query(format!(
            "SELECT count(*) = 1 AS value FROM {name}.orders WHERE seen"
        ))
        .get_result(&mut db.conn())
        .unwrap();
        assert!(seen.value, "exec reached {name}");
    }

    // Everything onto one worker; the rebalance spreads it again.
    for name in ["a.example", "b.example", "c.example"] {
        ok(p, &db, &["move", name, "--to", &workers[0]]);
        let schema = name.replace('.', "_");
        diesel::sql_query(format!(
            "INSERT INTO {schema}.orders (plan_id, note) SELECT 1, repeat('x', 200) FROM generate_series(1, 2000)"
        ))
        .execute(&mut db.conn())
        .unwrap();
    }
    let dry = ok(p, &db, &["rebalance", "--dry-run"]);
    assert!(
        dry.contains("(dry run)") && dry.contains(&workers[1]),
        "{dry}"
    );
    ok(p, &db, &["rebalance"]);
    let list = ok(p, &db, &["list", "--json"]);
    let on_second = ["a.example", "b.example", "c.example"]
        .iter()
        .filter(|n| node_of(&list, n) == workers[1])
        .count();
    assert!(on_second >= 1, "{list}");
    assert_eq!(
        ok(p, &db, &["rebalance"]).trim(),
        "balanced: nothing to move"
    );

    let (code, _, stderr) = cli(p, &db, &["move", "a.example", "--to", "nowhere:1"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("`nowhere:1` is not an active node"),
        "{stderr}"
    );
}

#[test]
fn migrate_warns_on_citus_about_triggers_on_isolated_tables() {
    let Some(db) = CitusTestDb::new("cli_trigger") else {
        return;
    };
    let dir = project();
    let p = dir.path();
    migration(
        p,
        "2024-01-03-000000_touch",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
         CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();",
    );
    let (code, _, stderr) = cli(p, &db, &["migrate", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("creates a trigger on isolated table `orders`")
            && stderr.contains("citus.enable_unsafe_triggers"),
        "{stderr}"
    );
}
