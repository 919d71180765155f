//! Creating, dropping, archiving, renaming tenants and claiming spares,
//! against a real PostgreSQL.

mod common;

use std::sync::{Arc, Barrier};

use appschema_core::provision::{
    create_tenant, drop_tenant, ensure_spares, list_archives, rename_tenant, restore_archive,
    spare_schemas, DropMode, NewTenant, ProvisionError, Source,
};
use appschema_core::{registry, PublicName, SchemaName};
use appschema_tempdb::TestDb;
use common::{app_migrations, app_parts, catalog_snapshot, isolated, query_strings, schemas};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

fn setup() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    (db, conn)
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(conn).unwrap().n
}

#[test]
fn create_commits_registry_row_schema_and_migrations_together() {
    let (_db, mut conn) = setup();
    let created = create_tenant(
        &mut conn,
        &app_migrations(),
        &NewTenant::new("Acme.Example.com").unwrap(),
    )
    .unwrap();
    assert_eq!(created.tenant.public_name, "acme.example.com");
    assert_eq!(created.tenant.schema_name.as_str(), "acme_example_com");
    assert_eq!(created.source, Source::Migrations);
    assert_eq!(
        query_strings(&mut conn, "SELECT version::text AS value FROM acme_example_com.__diesel_schema_migrations ORDER BY 1"),
        ["20240101000000", "20240102000000"]
    );
    conn.batch_execute("INSERT INTO acme_example_com.customers (name) VALUES ('x')")
        .unwrap();
    let found = registry::find(&mut conn, &PublicName::new("acme.example.com").unwrap()).unwrap();
    assert_eq!(found, Some(created.tenant));
}

#[test]
fn a_failing_migration_leaves_no_registry_row_and_no_schema() {
    let (_db, mut conn) = setup();
    let mut parts = app_parts();
    parts.push((
        "20240103000000".into(),
        "CREATE TABLE orders (id int)".into(),
    ));
    let broken = isolated(parts);
    let before = catalog_snapshot(&mut conn);
    let err = create_tenant(&mut conn, &broken, &NewTenant::new("acme.test").unwrap()).unwrap_err();
    assert!(matches!(err, ProvisionError::Migration { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("cannot migrate schema `acme_test`"),
        "{err}"
    );
    assert_eq!(catalog_snapshot(&mut conn), before);
}

#[test]
fn concurrent_creations_of_one_public_name_yield_one_tenant_and_no_orphan_schema() {
    let (db, mut conn) = setup();
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let results: Vec<_> = (0..threads)
        .map(|i| {
            let (url, barrier) = (db.url().to_string(), barrier.clone());
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                // Different schemas, same public name: the name decides.
                let request = NewTenant::new("race.example")
                    .unwrap()
                    .schema(&format!("race_{i}"))
                    .unwrap();
                barrier.wait();
                create_tenant(&mut conn, &app_migrations(), &request)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(r, Err(ProvisionError::TenantExists { public_name }) if public_name == "race.example"),
            "{r:?}"
        );
    }
    let race_schemas: Vec<_> = schemas(&mut conn)
        .into_iter()
        .filter(|s| s.starts_with("race_"))
        .collect();
    assert_eq!(race_schemas.len(), 1, "{race_schemas:?}");
}

#[test]
fn concurrent_creations_of_one_schema_yield_one_tenant() {
    let (db, mut conn) = setup();
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let results: Vec<_> = (0..threads)
        .map(|i| {
            let (url, barrier) = (db.url().to_string(), barrier.clone());
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                let request = NewTenant::new(&format!("t{i}.example"))
                    .unwrap()
                    .schema("shared_name")
                    .unwrap();
                barrier.wait();
                create_tenant(&mut conn, &app_migrations(), &request)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(r, Err(ProvisionError::SchemaExists { schema }) if schema == "shared_name"),
            "{r:?}"
        );
    }
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_tenants"
        ),
        1
    );
}

#[test]
fn a_taken_derived_schema_name_gets_a_suffix() {
    let (_db, mut conn) = setup();
    let m = app_migrations();
    create_tenant(&mut conn, &m, &NewTenant::new("a-b.test").unwrap()).unwrap();
    let second = create_tenant(&mut conn, &m, &NewTenant::new("a_b.test").unwrap()).unwrap();
    assert_eq!(second.tenant.schema_name.as_str(), "a_b_test_2");
}

#[test]
fn a_schema_that_exists_outside_the_registry_is_never_taken_over() {
    let (_db, mut conn) = setup();
    conn.batch_execute("CREATE SCHEMA billing; CREATE TABLE billing.secrets (x int); INSERT INTO billing.secrets VALUES (42);")
        .unwrap();
    let request = NewTenant::new("billing.test")
        .unwrap()
        .schema("billing")
        .unwrap();
    let before = catalog_snapshot(&mut conn);
    let err = create_tenant(&mut conn, &app_migrations(), &request).unwrap_err();
    assert_eq!(
        err.to_string(),
        "schema `billing` already exists: choose another schema name"
    );
    assert_eq!(catalog_snapshot(&mut conn), before);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM billing.secrets"),
        1
    );
}

#[test]
fn a_second_tenant_with_a_taken_public_name_is_refused() {
    let (_db, mut conn) = setup();
    create_tenant(
        &mut conn,
        &app_migrations(),
        &NewTenant::new("acme.test").unwrap(),
    )
    .unwrap();
    let before = catalog_snapshot(&mut conn);
    let err = create_tenant(
        &mut conn,
        &app_migrations(),
        &NewTenant::new("ACME.test.")
            .unwrap()
            .schema("other")
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant `acme.test` already exists: choose another public name"
    );
    assert_eq!(catalog_snapshot(&mut conn), before);
}

#[test]
fn drop_removes_the_schema_and_every_registry_row() {
    let (_db, mut conn) = setup();
    let created = create_tenant(
        &mut conn,
        &app_migrations(),
        &NewTenant::new("gone.test").unwrap(),
    )
    .unwrap();
    registry::add_alias(
        &mut conn,
        &created.tenant,
        &PublicName::new("alias.test").unwrap(),
    )
    .unwrap();
    let archive = drop_tenant(
        &mut conn,
        &PublicName::new("alias.test").unwrap(),
        DropMode::Drop,
    )
    .unwrap();
    assert_eq!(archive, None);
    assert!(!schemas(&mut conn).contains(&"gone_test".to_string()));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_public_names"
        ),
        0
    );
    let err = drop_tenant(
        &mut conn,
        &PublicName::new("gone.test").unwrap(),
        DropMode::Drop,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no tenant is named `gone.test`"),
        "{err}"
    );
}

#[test]
fn archive_renames_the_schema_aside_and_restore_brings_data_and_aliases_back() {
    let (_db, mut conn) = setup();
    let created = create_tenant(
        &mut conn,
        &app_migrations(),
        &NewTenant::new("kept.test").unwrap(),
    )
    .unwrap();
    registry::add_alias(
        &mut conn,
        &created.tenant,
        &PublicName::new("www.kept.test").unwrap(),
    )
    .unwrap();
    conn.batch_execute("INSERT INTO kept_test.customers (name) VALUES ('ada')")
        .unwrap();
    let archive = drop_tenant(
        &mut conn,
        &PublicName::new("kept.test").unwrap(),
        DropMode::Archive,
    )
    .unwrap()
    .unwrap();
    assert!(archive
        .schema_name
        .as_str()
        .starts_with("appschema_archived_kept_test_"));
    assert_eq!(archive.public_names, ["kept.test", "www.kept.test"]);
    assert!(
        registry::find(&mut conn, &PublicName::new("kept.test").unwrap())
            .unwrap()
            .is_none()
    );
    assert!(!schemas(&mut conn).contains(&"kept_test".to_string()));
    assert_eq!(
        list_archives(&mut conn).unwrap(),
        std::slice::from_ref(&archive)
    );

    let tenant = restore_archive(&mut conn, &archive.schema_name, None, None).unwrap();
    assert_eq!(tenant.schema_name.as_str(), "kept_test");
    assert_eq!(
        registry::find(&mut conn, &PublicName::new("www.kept.test").unwrap()).unwrap(),
        Some(tenant)
    );
    assert_eq!(
        query_strings(&mut conn, "SELECT name AS value FROM kept_test.customers"),
        ["ada"]
    );
    assert!(list_archives(&mut conn).unwrap().is_empty());
}

#[test]
fn restoring_onto_a_taken_name_changes_nothing() {
    let (_db, mut conn) = setup();
    let m = app_migrations();
    create_tenant(&mut conn, &m, &NewTenant::new("kept.test").unwrap()).unwrap();
    let archive = drop_tenant(
        &mut conn,
        &PublicName::new("kept.test").unwrap(),
        DropMode::Archive,
    )
    .unwrap()
    .unwrap();
    create_tenant(
        &mut conn,
        &m,
        &NewTenant::new("kept.test")
            .unwrap()
            .schema("newcomer")
            .unwrap(),
    )
    .unwrap();
    let before = catalog_snapshot(&mut conn);
    let err = restore_archive(&mut conn, &archive.schema_name, None, None).unwrap_err();
    assert!(matches!(err, ProvisionError::TenantExists { .. }), "{err}");
    assert_eq!(catalog_snapshot(&mut conn), before);
    let other = PublicName::new("kept-again.test").unwrap();
    let tenant = restore_archive(&mut conn, &archive.schema_name, Some(&other), None).unwrap();
    assert_eq!(tenant.schema_name.as_str(), "kept_test");
}

#[test]
fn rename_changes_public_name_and_schema_in_one_step() {
    let (_db, mut conn) = setup();
    let created = create_tenant(
        &mut conn,
        &app_migrations(),
        &NewTenant::new("old.test").unwrap(),
    )
    .unwrap();
    registry::add_alias(
        &mut conn,
        &created.tenant,
        &PublicName::new("alias.test").unwrap(),
    )
    .unwrap();
    conn.batch_execute("INSERT INTO old_test.customers (name) VALUES ('ada')")
        .unwrap();
    let renamed = rename_tenant(
        &mut conn,
        &PublicName::new("old.test").unwrap(),
        Some(&PublicName::new("new.test").unwrap()),
        Some(&SchemaName::new("new_schema").unwrap()),
    )
    .unwrap();
    assert_eq!(
        (renamed.public_name.as_str(), renamed.schema_name.as_str()),
        ("new.test", "new_schema")
    );
    assert!(
        registry::find(&mut conn, &PublicName::new("old.test").unwrap())
            .unwrap()
            .is_none()
    );
    assert_eq!(
        registry::find(&mut conn, &PublicName::new("alias.test").unwrap()).unwrap(),
        Some(renamed)
    );
    assert_eq!(
        query_strings(&mut conn, "SELECT name AS value FROM new_schema.customers"),
        ["ada"]
    );
}

#[test]
fn rename_onto_a_taken_name_or_schema_changes_nothing() {
    let (_db, mut conn) = setup();
    let m = app_migrations();
    create_tenant(&mut conn, &m, &NewTenant::new("a.test").unwrap()).unwrap();
    create_tenant(&mut conn, &m, &NewTenant::new("b.test").unwrap()).unwrap();
    let before = catalog_snapshot(&mut conn);
    let a = PublicName::new("a.test").unwrap();
    let err = rename_tenant(
        &mut conn,
        &a,
        Some(&PublicName::new("b.test").unwrap()),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, ProvisionError::TenantExists { .. }), "{err}");
    let err = rename_tenant(
        &mut conn,
        &a,
        Some(&PublicName::new("c.test").unwrap()),
        Some(&SchemaName::new("b_test").unwrap()),
    )
    .unwrap_err();
    assert!(matches!(err, ProvisionError::SchemaExists { .. }), "{err}");
    assert_eq!(catalog_snapshot(&mut conn), before);
}

#[test]
fn a_spare_is_claimed_by_renaming_it_and_is_gone_from_the_spares() {
    let (_db, mut conn) = setup();
    let m = app_migrations();
    assert_eq!(ensure_spares(&mut conn, &m, 2).unwrap(), 2);
    assert_eq!(ensure_spares(&mut conn, &m, 2).unwrap(), 0);
    let spares = spare_schemas(&mut conn).unwrap();
    assert!(spares
        .iter()
        .all(|s| s.as_str().starts_with("appschema_spare_")));
    let created = create_tenant(
        &mut conn,
        &m,
        &NewTenant::new("fast.test").unwrap().source(Source::Spare),
    )
    .unwrap();
    assert_eq!(created.source, Source::Spare);
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares[1..]);
    assert!(!schemas(&mut conn).contains(&spares[0].to_string()));
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT version::text AS value FROM fast_test.__diesel_schema_migrations ORDER BY 1"
        ),
        ["20240101000000", "20240102000000"]
    );
}

#[test]
fn concurrent_claims_take_different_spares_and_fall_back_to_migrations_when_none_is_left() {
    let (db, mut conn) = setup();
    let m = app_migrations();
    ensure_spares(&mut conn, &m, 3).unwrap();
    let threads = 5;
    let barrier = Arc::new(Barrier::new(threads));
    let results: Vec<_> = (0..threads)
        .map(|i| {
            let (url, barrier) = (db.url().to_string(), barrier.clone());
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                let request = NewTenant::new(&format!("c{i}.test"))
                    .unwrap()
                    .source(Source::Spare);
                barrier.wait();
                create_tenant(&mut conn, &app_migrations(), &request).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let from_spares = results.iter().filter(|c| c.source == Source::Spare).count();
    assert_eq!(from_spares, 3, "{results:?}");
    assert_eq!(
        results
            .iter()
            .filter(|c| c.source == Source::Migrations)
            .count(),
        2
    );
    assert!(spare_schemas(&mut conn).unwrap().is_empty());
    assert!(!schemas(&mut conn)
        .iter()
        .any(|s| s.starts_with("appschema_spare_")));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_tenants"
        ),
        5
    );
}

#[test]
fn a_spare_left_behind_by_a_new_migration_is_brought_to_the_head_when_claimed() {
    let (_db, mut conn) = setup();
    let old = isolated(app_parts()[..1].to_vec());
    ensure_spares(&mut conn, &old, 1).unwrap();
    let created = create_tenant(
        &mut conn,
        &app_migrations(),
        &NewTenant::new("late.test").unwrap().source(Source::Spare),
    )
    .unwrap();
    assert_eq!(created.source, Source::Spare);
    conn.batch_execute("INSERT INTO late_test.customers (name) VALUES ('a'); INSERT INTO late_test.orders (customer_id, total) SELECT id, 1 FROM late_test.customers")
        .unwrap();
}

#[test]
fn a_failed_claim_gives_the_spare_back() {
    let (_db, mut conn) = setup();
    let m = app_migrations();
    ensure_spares(&mut conn, &m, 1).unwrap();
    create_tenant(&mut conn, &m, &NewTenant::new("taken.test").unwrap()).unwrap();
    let spares = spare_schemas(&mut conn).unwrap();
    let err = create_tenant(
        &mut conn,
        &m,
        &NewTenant::new("taken.test")
            .unwrap()
            .schema("x")
            .unwrap()
            .source(Source::Spare),
    );
    assert!(matches!(err, Err(ProvisionError::TenantExists { .. })));
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares);
}
