//! Reverting migrations across tenants (`Migrator::revert`), on the saas
//! sample and on real histories' `down.sql`s: each revert must leave every
//! schema with the catalog and the tracking rows of a fresh `migrate` to
//! the version it ends at, and a later `migrate` must bring everything back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use appschema_core::migrate::{Migrator, RevertTo};
use appschema_core::provision::{generate_template, store_template};
use appschema_core::{registry, MigrateError, Migration, MigrationSet, PublicName, SchemaName};
use appschema_planner::load_with_schema_files;
use appschema_tempdb::TestDb;
use appschema_testkit::history::{diff, history, strings};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const TENANTS: [&str; 3] = ["t0", "t1", "t2"];

/// The saas sample's migrations, planned as `appschema-cli` plans them.
fn saas() -> MigrationSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/saas");
    load_with_schema_files(&dir.join("migrations"), &[dir.join("schema.rs")], &dir).unwrap()
}

/// The first `n` migrations of `set`.
fn first(set: &MigrationSet, n: usize) -> MigrationSet {
    MigrationSet::new(set.migrations()[..n].to_vec())
}

/// Registers `tenants` (schema = name) with empty schemas.
fn add_tenants(conn: &mut PgConnection, tenants: &[&str]) {
    registry::install(conn).unwrap();
    for t in tenants {
        conn.batch_execute(&format!("CREATE SCHEMA {t}")).unwrap();
        registry::insert(
            conn,
            &PublicName::new(&format!("{t}.example.com")).unwrap(),
            &SchemaName::new(*t).unwrap(),
        )
        .unwrap();
    }
}

fn migrate(url: &str, set: &MigrationSet) {
    let report = Migrator::new(url).jobs(2).migrate(set, &|_| {}).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
}

/// A schema's catalog, one line per relation, column, constraint, index,
/// trigger, function and type (its tracking table left out: a reverted
/// schema keeps an empty one; extensions' objects left out: a revert
/// leaves an extension installed), and the versions its tracking table
/// holds.
fn catalog(conn: &mut PgConnection, schema: &str) -> (Vec<String>, Vec<String>) {
    let s = format!("'{schema}'");
    let t = "'__diesel_schema_migrations'";
    let sql = format!(
        "SELECT 'rel ' || c.relname || ' ' || c.relkind::text AS value
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = {s} AND c.relname NOT IN ({t}, '__diesel_schema_migrations_pkey')
         UNION ALL
         SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE n.nspname = {s} AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> {t}
            AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
         UNION ALL
         SELECT 'con ' || c.relname || ' ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
           FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = {s} AND c.relname <> {t}
         UNION ALL
         SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
           FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = {s} AND c.relname <> {t}
         UNION ALL
         SELECT 'trg ' || c.relname || ' ' || tg.tgname
           FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = {s} AND NOT tg.tgisinternal
         UNION ALL
         SELECT 'fn ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
                || md5(p.prosrc)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = {s} AND NOT EXISTS (SELECT 1 FROM pg_depend e
                                                  WHERE e.objid = p.oid AND e.deptype = 'e')
         UNION ALL
         SELECT 'type ' || ty.typname || ' ' || ty.typtype::text
           FROM pg_type ty JOIN pg_namespace n ON n.oid = ty.typnamespace
          WHERE n.nspname = {s} AND ty.typrelid = 0 AND ty.typname NOT LIKE '\\_%'
            AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = ty.oid AND e.deptype = 'e')
         ORDER BY 1"
    );
    let lines = strings(conn, &sql);
    let tracked = strings(
        conn,
        &format!("SELECT coalesce(to_regclass('\"{schema}\".__diesel_schema_migrations')::text, '') AS value"),
    );
    let versions = if tracked[0].is_empty() {
        Vec::new()
    } else {
        strings(
            conn,
            &format!(
                "SELECT version::text AS value FROM \"{schema}\".__diesel_schema_migrations ORDER BY 1"
            ),
        )
    };
    (lines, versions)
}

/// Every schema's [`catalog`] (the shared schema's and `tenants`').
fn catalogs(url: &str, tenants: &[&str]) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut conn = PgConnection::establish(url).unwrap();
    std::iter::once("public")
        .chain(tenants.iter().copied())
        .map(|s| (s.to_string(), catalog(&mut conn, s)))
        .collect()
}

/// The catalogs of a fresh database with `tenants`, migrated to the first
/// `n` migrations of `set`.
fn fresh(
    set: &MigrationSet,
    n: usize,
    tenants: &[&str],
) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, tenants);
    migrate(db.url(), &first(set, n));
    catalogs(db.url(), tenants)
}

/// Asserts `url`'s schemas match a fresh migrate to the first `n`.
fn assert_like_fresh(url: &str, set: &MigrationSet, n: usize, tenants: &[&str], what: &str) {
    let expected = fresh(set, n, tenants);
    let got = catalogs(url, tenants);
    for (schema, (lines, versions)) in &expected {
        let (got_lines, got_versions) = &got[schema];
        assert_eq!(
            versions, got_versions,
            "{what}: schema {schema}'s tracking rows"
        );
        assert!(
            lines == got_lines,
            "{what}: schema {schema}'s catalog differs from a fresh migrate to {n} migration(s):\n{}",
            diff(lines, got_lines)
        );
    }
}

fn revert(url: &str, set: &MigrationSet, to: RevertTo) -> appschema_core::migrate::Report {
    Migrator::new(url)
        .jobs(2)
        .revert(set, &to, &|_| {})
        .unwrap()
}

#[test]
fn reverting_the_saas_sample_by_one_by_n_and_to_a_version_matches_a_fresh_migrate_and_migrate_reapplies(
) {
    let set = saas();
    assert_eq!(set.migrations().len(), 2);
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS);
    migrate(db.url(), &set);
    let head = catalogs(db.url(), &TENANTS);
    assert!(
        head["t1"].0.iter().any(|l| l.starts_with("rel tasks")),
        "{head:?}"
    );

    // `--revert --dry-run`: the isolated migration, in every tenant.
    let plan = Migrator::new(db.url())
        .revert_plan(&set, &RevertTo::Last(1))
        .unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(plan[0].migration, set.migrations()[1].name());
    assert_eq!(plan[0].schemas, TENANTS);

    // The last one: the tenants' tables go, `plans` stays.
    let report = revert(db.url(), &set, RevertTo::Last(1));
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_reverted, 3);
    assert_like_fresh(db.url(), &set, 1, &TENANTS, "--revert");
    // The recorded heads let `migrate` see what is missing again.
    migrate(db.url(), &set);
    assert_eq!(catalogs(db.url(), &TENANTS), head, "migrate after --revert");

    // The last two, newest first: tenants, then the shared schema.
    let plan = Migrator::new(db.url())
        .revert_plan(&set, &RevertTo::Last(2))
        .unwrap();
    let order: Vec<&str> = plan.iter().map(|p| p.migration.as_str()).collect();
    assert_eq!(
        order,
        [set.migrations()[1].name(), set.migrations()[0].name()]
    );
    assert_eq!(plan[1].schemas, ["public"]);
    let report = revert(db.url(), &set, RevertTo::Last(2));
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_reverted, 4);
    assert_like_fresh(db.url(), &set, 0, &TENANTS, "--revert 2");
    // Nothing left to revert.
    assert!(matches!(
        Migrator::new(db.url()).revert(&set, &RevertTo::Last(1), &|_| {}),
        Err(MigrateError::RevertTooFar {
            asked: 1,
            applied: 0
        })
    ));
    migrate(db.url(), &set);
    assert_eq!(
        catalogs(db.url(), &TENANTS),
        head,
        "migrate after --revert 2"
    );

    // `--to` the first version: everything newer.
    let report = revert(
        db.url(),
        &set,
        RevertTo::Version(set.migrations()[0].version().to_string()),
    );
    assert!(report.is_success(), "{:?}", report.failures);
    assert_like_fresh(db.url(), &set, 1, &TENANTS, "--revert --to");
    // Running it again does nothing.
    let again = revert(
        db.url(),
        &set,
        RevertTo::Version(set.migrations()[0].version().to_string()),
    );
    assert_eq!(again.migrations_reverted, 0);
    migrate(db.url(), &set);
    assert_eq!(
        catalogs(db.url(), &TENANTS),
        head,
        "migrate after --revert --to"
    );
}

#[test]
fn a_down_failing_in_one_tenant_leaves_the_others_reverted_and_revert_to_resumes() {
    let set = saas();
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS);
    migrate(db.url(), &set);
    // t1 differs: a view on `tasks` makes `DROP TABLE tasks` fail there.
    conn.batch_execute("CREATE VIEW t1.open_tasks AS SELECT id FROM t1.tasks WHERE NOT done")
        .unwrap();

    let report = revert(db.url(), &set, RevertTo::Last(2));
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].schema, "t1");
    assert_eq!(report.failures[0].migration, set.migrations()[1].name());
    // The shared step waits for every tenant: not started.
    assert_eq!(report.steps_skipped, 1);
    let now = catalogs(db.url(), &TENANTS);
    let before = fresh(&set, 2, &TENANTS);
    let after = fresh(&set, 1, &TENANTS);
    assert_eq!(now["t0"], after["t0"]);
    assert_eq!(now["t2"], after["t2"]);
    assert_eq!(
        now["public"], before["public"],
        "plans stays until every tenant reverted"
    );
    assert_eq!(now["t1"].1, before["t1"].1, "t1 keeps its version");
    assert!(now["t1"].0.iter().any(|l| l == "rel tasks r"));

    // `--revert` counts from where the database is: refused, naming t1.
    let e = Migrator::new(db.url())
        .revert(&set, &RevertTo::Last(1), &|_| {})
        .unwrap_err();
    assert!(
        matches!(&e, MigrateError::RevertOutOfStep { schemas, .. } if schemas.len() == 1 && schemas[0].contains("`t1`")),
        "{e}"
    );
    assert!(e.to_string().contains("different versions"), "{e}");
    assert!(e.to_string().contains("--to"), "{e}");

    // Fixed, `--to` the start finishes the job.
    conn.batch_execute("DROP VIEW t1.open_tasks").unwrap();
    let report = revert(db.url(), &set, RevertTo::Version("0".into()));
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_reverted, 2, "t1's migration and plans");
    assert_like_fresh(db.url(), &set, 0, &TENANTS, "resumed revert");
    migrate(db.url(), &set);
    assert_like_fresh(
        db.url(),
        &set,
        2,
        &TENANTS,
        "migrate after the resumed revert",
    );
}

#[test]
fn a_missing_or_comment_only_down_is_refused_before_anything_runs() {
    let set = saas();
    // The isolated migration without its down.sql, then with diesel's
    // generated comment as its only line.
    let strip = |down: Option<&'static str>| {
        let ms: Vec<Migration> = set
            .migrations()
            .iter()
            .map(|m| {
                if m.version() != set.migrations()[1].version() {
                    return m.clone();
                }
                let bare = Migration::new(
                    m.version().to_string(),
                    m.name().to_string(),
                    m.scope(),
                    m.up_sql().to_string(),
                );
                match down {
                    Some(d) => bare.with_down_sql(d),
                    None => bare,
                }
            })
            .collect();
        MigrationSet::new(ms)
    };
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS);
    migrate(db.url(), &set);
    let head = catalogs(db.url(), &TENANTS);
    for broken in [
        strip(None),
        strip(Some("-- This file should undo anything in `up.sql`\n")),
    ] {
        for to in [RevertTo::Last(1), RevertTo::Version("0".into())] {
            let e = Migrator::new(db.url())
                .revert(&broken, &to, &|_| {})
                .unwrap_err();
            assert!(
                matches!(&e, MigrateError::MissingDown(names) if names == &[set.migrations()[1].name().to_string()]),
                "{e}"
            );
            assert!(e.to_string().contains("down.sql"), "{e}");
            assert_eq!(catalogs(db.url(), &TENANTS), head, "nothing ran");
        }
    }
}

#[test]
fn a_real_history_without_downs_is_refused_naming_each_migration() {
    // The real-history fixture's downs are comments only.
    let set = history("real_history");
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..2]);
    migrate(db.url(), &set);
    let before = catalogs(db.url(), &TENANTS[..2]);
    let e = Migrator::new(db.url())
        .revert(&set, &RevertTo::Last(3), &|_| {})
        .unwrap_err();
    let MigrateError::MissingDown(names) = &e else {
        panic!("{e}")
    };
    let last3: Vec<String> = set.migrations()[set.migrations().len() - 3..]
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    assert_eq!(names, &last3);
    assert_eq!(catalogs(db.url(), &TENANTS[..2]), before);
}

#[test]
fn vaultwardens_last_down_reverts_to_a_fresh_migrate_and_the_one_before_is_refused() {
    let set = history("vaultwarden");
    let n = set.migrations().len();
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..2]);
    migrate(db.url(), &set);
    // Its 35th migration's down.sql is empty upstream.
    let e = Migrator::new(db.url())
        .revert(&set, &RevertTo::Last(2), &|_| {})
        .unwrap_err();
    assert!(
        matches!(&e, MigrateError::MissingDown(names) if names == &[set.migrations()[n - 2].name().to_string()]),
        "{e}"
    );
    let report = revert(db.url(), &set, RevertTo::Last(1));
    assert!(report.is_success(), "{:?}", report.failures);
    assert_like_fresh(db.url(), &set, n - 1, &TENANTS[..2], "vaultwarden --revert");
    migrate(db.url(), &set);
    assert_like_fresh(
        db.url(),
        &set,
        n,
        &TENANTS[..2],
        "vaultwarden migrate again",
    );
}

#[test]
fn lemmys_downs_revert_triggers_functions_and_extensions_to_a_fresh_migrate() {
    // The first six migrations of the Lemmy fixture (their downs are
    // upstream's and match these ups): tables with seed rows, trigger
    // functions, and `DROP EXTENSION pgcrypto` in an isolated down.
    let set = first(&history("lemmy"), 6);
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS);
    migrate(db.url(), &set);
    let report = revert(db.url(), &set, RevertTo::Last(4));
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_reverted, 12);
    assert_like_fresh(db.url(), &set, 2, &TENANTS, "lemmy --revert 4");
    // `DROP EXTENSION pgcrypto` is left out in tenant schemas: database-wide.
    assert_eq!(
        strings(
            &mut conn,
            "SELECT extname::text AS value FROM pg_extension WHERE extname = 'pgcrypto'"
        ),
        ["pgcrypto"]
    );
    migrate(db.url(), &set);
    assert_like_fresh(db.url(), &set, 6, &TENANTS, "lemmy migrate again");
}

#[test]
fn a_revert_deletes_the_templates_built_for_an_undone_version() {
    let set = saas();
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..1]);
    migrate(db.url(), &set);
    let template = generate_template(&mut conn, db.url(), &set).unwrap();
    store_template(&mut conn, &template).unwrap();
    let stored = "SELECT version AS value FROM public.appschema_templates";
    assert_eq!(strings(&mut conn, stored).len(), 1);
    let report = revert(db.url(), &set, RevertTo::Last(1));
    assert!(report.is_success(), "{:?}", report.failures);
    assert!(
        strings(&mut conn, stored).is_empty(),
        "the template is gone"
    );
}

/// 001 isolated, 002 shared, 003 isolated, each with its down.
fn three_steps() -> MigrationSet {
    MigrationSet::new(vec![
        Migration::new(
            "001",
            "001_orders",
            appschema_core::Scope::Isolated,
            "CREATE TABLE orders (id bigserial PRIMARY KEY)",
        )
        .with_down_sql("DROP TABLE orders"),
        Migration::new(
            "002",
            "002_plans",
            appschema_core::Scope::Shared,
            "CREATE TABLE plans (id bigserial PRIMARY KEY)",
        )
        .with_down_sql("DROP TABLE plans"),
        Migration::new(
            "003",
            "003_note",
            appschema_core::Scope::Isolated,
            "ALTER TABLE orders ADD COLUMN note text",
        )
        .with_down_sql("ALTER TABLE orders DROP COLUMN note"),
    ])
}

/// Runs `migrate` until the tenants' recorded heads are trusted (the
/// first run over new schemas may record less than they hold), and checks
/// that a run then reads no tracking table.
fn assert_heads_trusted(url: &str, set: &MigrationSet) {
    migrate(url, set);
    let report = Migrator::new(url).migrate(set, &|_| {}).unwrap();
    assert_eq!(
        (report.migrations_applied, report.tracking_tables_read),
        (0, 0)
    );
}

#[test]
fn a_revert_records_the_heads_it_leaves_so_migrate_without_the_undone_migration_reads_nothing() {
    let set = three_steps();
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..2]);
    migrate(db.url(), &set);
    assert_heads_trusted(db.url(), &set);
    let report = revert(db.url(), &set, RevertTo::Last(1));
    assert!(report.is_success(), "{:?}", report.failures);
    // What follows a revert: the undone migration is deleted from the set.
    let report = Migrator::new(db.url())
        .migrate(&first(&set, 2), &|_| {})
        .unwrap();
    assert_eq!(
        (report.migrations_applied, report.tracking_tables_read),
        (0, 0)
    );
    // And with it kept, `migrate` applies it again.
    let report = Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
    assert_eq!(report.migrations_applied, 2);
}

#[test]
fn a_tenant_failing_part_way_through_its_revert_is_migrated_again_by_the_next_migrate() {
    // Its recorded head (every version) must not survive the versions its
    // revert committed before it failed, or `migrate` would trust it.
    let set = three_steps();
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..2]);
    migrate(db.url(), &set);
    assert_heads_trusted(db.url(), &set);
    conn.batch_execute("CREATE VIEW t1.ids AS SELECT id FROM t1.orders")
        .unwrap();
    let report = revert(db.url(), &set, RevertTo::Version("0".into()));
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].migration, "001_orders");
    assert_eq!(report.migrations_reverted, 4, "003 in both, 002, 001 in t0");
    conn.batch_execute("DROP VIEW t1.ids").unwrap();
    migrate(db.url(), &set);
    assert_like_fresh(
        db.url(),
        &set,
        3,
        &TENANTS[..2],
        "migrate after a failed revert",
    );
}

#[test]
fn a_migration_outside_a_transaction_is_refused_before_anything_runs() {
    let set = three_steps();
    let mut ms = set.migrations().to_vec();
    ms[2] = ms[2]
        .clone()
        .outside_transaction(vec!["ALTER TABLE orders ADD COLUMN note text".into()], None);
    let outside = MigrationSet::new(ms);
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..2]);
    migrate(db.url(), &set);
    let before = catalogs(db.url(), &TENANTS[..2]);
    let e = Migrator::new(db.url())
        .revert(&outside, &RevertTo::Last(1), &|_| {})
        .unwrap_err();
    assert!(
        matches!(&e, MigrateError::DownOutsideTransaction(name) if name == "003_note"),
        "{e}"
    );
    assert!(e.to_string().contains("run_in_transaction = false"), "{e}");
    assert_eq!(catalogs(db.url(), &TENANTS[..2]), before, "nothing ran");
    // A revert that stops short of it is allowed.
    let report = revert(db.url(), &outside, RevertTo::Version("003".into()));
    assert_eq!(report.migrations_reverted, 0);
}

#[test]
fn a_tenant_behind_where_the_revert_ends_is_refused_by_name() {
    let set = three_steps();
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..2]);
    migrate(db.url(), &set);
    // t2 joins the registry without its migrations.
    add_tenants(&mut conn, &TENANTS[2..]);
    let before = catalogs(db.url(), &TENANTS);
    let e = Migrator::new(db.url())
        .revert(&set, &RevertTo::Version("002".into()), &|_| {})
        .unwrap_err();
    assert!(
        matches!(&e, MigrateError::RevertOutOfStep { schemas, .. } if schemas == &["`t2` at no migration".to_string()]),
        "{e}"
    );
    assert!(e.to_string().contains("have not reached 002_plans"), "{e}");
    assert_eq!(catalogs(db.url(), &TENANTS), before, "nothing ran");
}

#[test]
fn a_both_scope_migration_is_reverted_in_the_tenants_first_then_in_the_shared_schema() {
    let set = MigrationSet::new(vec![
        Migration::new(
            "001",
            "001_settings",
            appschema_core::Scope::Both,
            "CREATE TABLE settings (k text PRIMARY KEY)",
        )
        .with_down_sql("DROP TABLE settings"),
        Migration::new(
            "002",
            "002_orders",
            appschema_core::Scope::Isolated,
            "CREATE TABLE orders (id int, k text REFERENCES settings (k))",
        )
        .with_down_sql("DROP TABLE orders"),
    ]);
    let db = TestDb::new();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    add_tenants(&mut conn, &TENANTS[..2]);
    migrate(db.url(), &set);
    let plan = Migrator::new(db.url())
        .revert_plan(&set, &RevertTo::Last(2))
        .unwrap();
    let order: Vec<(&str, Vec<String>)> = plan
        .iter()
        .map(|p| (p.migration.as_str(), p.schemas.clone()))
        .collect();
    let tenants = vec!["t0".to_string(), "t1".to_string()];
    assert_eq!(
        order,
        [
            ("002_orders", tenants.clone()),
            ("001_settings", tenants),
            ("001_settings", vec!["public".to_string()]),
        ]
    );
    let report = revert(db.url(), &set, RevertTo::Last(2));
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.migrations_reverted, 5);
    assert_like_fresh(db.url(), &set, 0, &TENANTS[..2], "both-scope revert");
    migrate(db.url(), &set);
    assert_like_fresh(db.url(), &set, 2, &TENANTS[..2], "both-scope migrate again");
}
