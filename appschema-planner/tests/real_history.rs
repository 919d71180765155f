//! A realistic application history (`tests/fixtures/real_history`: eight
//! years of diesel migrations with both version formats, PL/pgSQL and
//! `LANGUAGE sql` functions, triggers, an enum type, a materialized view,
//! `CREATE`/`DROP INDEX CONCURRENTLY` with `run_in_transaction = false`, an
//! extension, a renamed table and a dropped one), planned and applied on a
//! clean database. Every way of building a tenant must give the same
//! catalog: `migrate` on an existing tenant, the migrations at creation, the
//! schema template, and a spare.

use appschema_core::migrate::Migrator;
use appschema_core::provision::{
    create_tenant, ensure_spares, generate_template, spare_schemas, store_template, Source,
};
use appschema_core::{registry, MigrationSet, Scope};
use appschema_tempdb::TestDb;
use appschema_testkit::history::{diff_lines, history, normalized_dump, request, strings};

#[test]
fn the_planner_decides_every_migration_of_the_history_in_diesel_s_order() {
    let set = history("real_history");
    let got: Vec<(&str, Scope, bool)> = set
        .migrations()
        .iter()
        .map(|m| (m.name(), m.scope(), m.run_in_transaction()))
        .collect();
    use Scope::{Isolated as I, Shared as S};
    assert_eq!(
        got,
        [
            ("00000000000000_diesel_initial_setup", I, true),
            ("20170101000000_pgcrypto", S, true),
            ("20170102000000_create_plans", S, true),
            ("20170103000000_create_packages", I, true),
            ("2017-02-01-000000_create_versions", I, true),
            ("20170301000000_package_downloads_trigger", I, true),
            ("2017-05-01-000000_rename_packages_to_crates", I, true),
            ("20170601000000_version_count_function", I, true),
            ("2018-01-15-120000_create_crate_owners", I, true),
            ("2018-03-01-000000_recent_downloads_view", I, true),
            ("2018-03-02-000000_index_versions_num", I, false),
            ("2019-01-01-000000_lower_version_index", I, false),
            ("2019-02-01-000000_refresh_recent_downloads", I, true),
            ("2019-03-01-000000_plans_tier", S, true),
            ("2019-04-01-000000_badges", I, true),
            ("2020-01-01-000000_drop_badges", I, true),
            ("2020-03-01-000000_no_op", I, true),
            ("2020-04-01-000000_crate_plans_view", I, true),
        ]
    );
    let creation = set.migrations()[11].new_schema_sql().unwrap();
    assert!(!creation.contains("CONCURRENTLY"), "{creation}");
}

#[test]
fn tenants_built_by_migrate_by_migrations_from_the_template_and_from_a_spare_have_one_catalog() {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let set = history("real_history");

    // A tenant that exists before the history is applied: `migrate` builds
    // it, running the CONCURRENTLY migrations outside a transaction.
    create_tenant(
        &mut conn,
        &MigrationSet::default(),
        &request("old.example", "by_migrate", Source::Migrations),
    )
    .unwrap();
    let report = Migrator::new(db.url())
        .jobs(2)
        .schema_source("spares", Box::new(spare_schemas))
        .migrate(&set, &|_| {})
        .unwrap();
    assert!(report.is_success(), "{report:?}");

    // A clean database with the long history: every way of creating a
    // tenant works, inside one transaction each.
    let created = create_tenant(
        &mut conn,
        &set,
        &request("m.example", "by_migrations", Source::Migrations),
    )
    .unwrap();
    assert_eq!(created.source, Source::Migrations);

    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    store_template(&mut conn, &template).unwrap();
    let created = create_tenant(
        &mut conn,
        &set,
        &request("t.example", "by_template", Source::Template),
    )
    .unwrap();
    assert_eq!(created.source, Source::Template);

    assert_eq!(ensure_spares(&mut conn, &set, 1).unwrap(), 1);
    let created = create_tenant(
        &mut conn,
        &set,
        &request("s.example", "by_spare", Source::Spare),
    )
    .unwrap();
    assert_eq!(created.source, Source::Spare);

    // Spares ran out: the template takes over.
    let created = create_tenant(
        &mut conn,
        &set,
        &request("s2.example", "by_spare_fallback", Source::Spare),
    )
    .unwrap();
    assert_eq!(created.source, Source::Template);

    let schemas = [
        "by_migrate",
        "by_migrations",
        "by_template",
        "by_spare",
        "by_spare_fallback",
    ];
    let expected = normalized_dump(db.url(), "by_migrate");
    for needle in [
        "CREATE FUNCTION TENANT.crate_version_count",
        "CREATE TYPE TENANT.version_state AS ENUM",
        "CREATE MATERIALIZED VIEW TENANT.recent_crate_downloads",
        "CREATE INDEX index_versions_num_lower ON TENANT.versions",
        "CREATE TRIGGER set_updated_at",
        "CREATE VIEW TENANT.crate_plans",
        "REFERENCES public.plans(id)",
    ] {
        assert!(
            expected.contains(needle),
            "{needle} missing from:\n{expected}"
        );
    }
    assert!(!expected.contains("badges"), "{expected}");
    assert!(!expected.contains("index_versions_num "), "{expected}");
    for schema in &schemas[1..] {
        let got = normalized_dump(db.url(), schema);
        assert!(
            got == expected,
            "`{schema}` differs from the tenant built by migrate:\n{}",
            diff_lines(&expected, &got)
        );
    }
    for schema in schemas {
        // Same data where the history put some: the view is populated, the
        // enum has its three values, every version is recorded.
        assert_eq!(
            strings(
                &mut conn,
                &format!(
                    "SELECT count(*)::text AS value FROM {schema}.recent_crate_downloads
                     UNION ALL SELECT string_agg(e::text, ',' ORDER BY e)
                       FROM unnest(enum_range(NULL::{schema}.version_state)) e
                     UNION ALL SELECT count(*)::text FROM {schema}.__diesel_schema_migrations"
                )
            ),
            ["0", "draft,published,yanked", "15"],
            "{schema}"
        );
    }
}

#[test]
fn a_tenant_created_before_the_shared_migrations_ran_says_to_run_migrate() {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let err = create_tenant(
        &mut conn,
        &history("real_history"),
        &request("early.example", "early", Source::Migrations),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("appschema-cli migrate"), "{message}");
    assert_eq!(
        message
            .matches(r#"relation "plans" does not exist"#)
            .count(),
        1,
        "{message}"
    );
    // Printed as a chain (anyhow's `{:#}`), no message repeats another.
    let mut chain = vec![message.clone()];
    let mut next = std::error::Error::source(&err);
    while let Some(e) = next {
        chain.push(e.to_string());
        next = e.source();
    }
    for pair in chain.windows(2) {
        assert!(!pair[0].contains(&pair[1]), "{chain:#?}");
    }
    // Spares and the template's scratch schema say the same.
    let err = ensure_spares(&mut conn, &history("real_history"), 1).unwrap_err();
    assert!(err.to_string().contains("appschema-cli migrate"), "{err}");
    let err = generate_template(&mut conn, db.url(), &history("real_history")).unwrap_err();
    assert!(err.to_string().contains("appschema-cli migrate"), "{err}");
}
