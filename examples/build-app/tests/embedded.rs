//! The lean build step end to end: migrations embedded at build time from
//! the prepared plan are the planner's, and migrate a real database from a
//! working directory with no migration files.

use appschema::migrate::Migrator;
use appschema::{registry, PublicName, SchemaName, Scope};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;

#[test]
fn migrations_embedded_from_the_plan_file_migrate_a_database_without_files() {
    let set = appschema_build_example::migrations();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let planned = appschema_planner::load_with_schema_files(
        &root.join("migrations"),
        &[root.join("src/schema.rs")],
        root,
    )
    .unwrap();
    assert_eq!(
        set, planned,
        "the plan file embeds what the planner decides"
    );
    let planned: Vec<(&str, Scope)> = set
        .migrations()
        .iter()
        .map(|m| (m.name(), m.scope()))
        .collect();
    assert_eq!(
        planned,
        [
            ("2024-01-01-000000_plans", Scope::Shared),
            ("2024-01-02-000000_orders", Scope::Isolated),
            ("2024-01-03-000000_order_notes", Scope::Isolated),
        ]
    );
    assert_eq!(set.isolated_head(), Some("20240103000000"));

    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    conn.batch_execute("CREATE SCHEMA acme").unwrap();
    registry::insert(
        &mut conn,
        &PublicName::new("acme.example.com").unwrap(),
        &SchemaName::new("acme").unwrap(),
    )
    .unwrap();
    // A working directory with no migration files (removed when the test
    // ends; this binary's only test, so changing the directory is safe).
    let elsewhere = tempfile::tempdir().unwrap();
    std::env::set_current_dir(elsewhere.path()).unwrap();
    let report = Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_applied, 3);
    conn.batch_execute(
        "INSERT INTO public.plans (name) VALUES ('free');
         INSERT INTO acme.orders (plan_id, note) SELECT id, 'hi' FROM public.plans;",
    )
    .unwrap();
}
