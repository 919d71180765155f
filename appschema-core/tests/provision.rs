//! Creating, dropping, archiving, renaming tenants and claiming spares,
//! against a real PostgreSQL.

use appschema_core::provision::{
    create_tenant, drop_tenant, ensure_spares, list_archives, rename_tenant, restore_archive,
    spare_schemas, Archive, Created, DropMode, ProvisionError, Source,
};
use appschema_core::registry::{self, Tenant};
use appschema_core::SchemaName;
use appschema_testkit::provisioning::{
    app_migrations, app_migrations_but_the_last, app_parts, applied_versions,
    assert_concurrent_creations_of_one_public_name_yield_one_tenant, assert_one_won,
    create_concurrently, create_named, create_unregistered_billing_schema, db_with_registry,
    db_with_tenants_a_and_b, isolated, leaving_the_catalog_unchanged, new_tenant, public_name,
    query_strings, refused, schemas, schemas_starting_with,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(conn).unwrap().n
}

/// How many tenants the registry holds.
fn tenant_count(conn: &mut PgConnection) -> i64 {
    count(conn, "SELECT count(*) AS n FROM public.appschema_tenants")
}

/// The registered tenant `name` is a public name (or alias) of, if any.
fn find(conn: &mut PgConnection, name: &str) -> Option<Tenant> {
    registry::find(conn, &public_name(name)).unwrap()
}

/// Creates the tenant `name` by migrations and registers `alias` for it too.
fn create_with_alias(conn: &mut PgConnection, name: &str, alias: &str) -> Created {
    let created = create_named(conn, &app_migrations(), name);
    registry::add_alias(conn, &created.tenant, &public_name(alias)).unwrap();
    created
}

/// Creates the tenant `name` by migrations, with the alias `alias` and one
/// customer, `ada`.
fn create_with_alias_and_ada(conn: &mut PgConnection, name: &str, alias: &str) -> Created {
    let created = create_with_alias(conn, name, alias);
    conn.batch_execute(&format!(
        "INSERT INTO {}.customers (name) VALUES ('ada')",
        created.tenant.schema_name.quoted()
    ))
    .unwrap();
    created
}

/// Drops the tenant `name` in archive mode: the archive it leaves.
fn archive_tenant(conn: &mut PgConnection, name: &str) -> Archive {
    drop_tenant(conn, &public_name(name), DropMode::Archive)
        .unwrap()
        .unwrap()
}

#[test]
fn create_commits_registry_row_schema_and_migrations_together() {
    let (_db, mut conn) = db_with_registry();
    let created = create_named(&mut conn, &app_migrations(), "Acme.Example.com");
    assert_eq!(created.tenant.public_name, "acme.example.com");
    assert_eq!(created.tenant.schema_name.as_str(), "acme_example_com");
    assert_eq!(created.source, Source::Migrations);
    assert_eq!(
        applied_versions(&mut conn, "acme_example_com"),
        ["20240101000000", "20240102000000"]
    );
    conn.batch_execute("INSERT INTO acme_example_com.customers (name) VALUES ('x')")
        .unwrap();
    assert_eq!(find(&mut conn, "acme.example.com"), Some(created.tenant));
}

#[test]
fn a_failing_migration_leaves_no_registry_row_and_no_schema() {
    let (_db, mut conn) = db_with_registry();
    let mut parts = app_parts();
    parts.push((
        "20240103000000".into(),
        "CREATE TABLE orders (id int)".into(),
    ));
    let broken = isolated(parts);
    let err = refused(&mut conn, &broken, &new_tenant("acme.test"));
    assert!(matches!(err, ProvisionError::Migration { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("cannot migrate schema `acme_test`"),
        "{err}"
    );
}

#[test]
fn concurrent_creations_of_one_public_name_yield_one_tenant_and_no_orphan_schema() {
    let (db, mut conn) = db_with_registry();
    assert_concurrent_creations_of_one_public_name_yield_one_tenant(
        db.url(),
        &mut conn,
        Source::Migrations,
    );
}

#[test]
fn concurrent_creations_of_one_schema_yield_one_tenant() {
    let (db, mut conn) = db_with_registry();
    let results = create_concurrently(db.url(), 6, |i| {
        new_tenant(&format!("t{i}.example"))
            .schema("shared_name")
            .unwrap()
    });
    assert_one_won(
        &results,
        |e| matches!(e, ProvisionError::SchemaExists { schema } if schema == "shared_name"),
    );
    assert_eq!(tenant_count(&mut conn), 1);
}

#[test]
fn a_taken_derived_schema_name_gets_a_suffix() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    create_named(&mut conn, &m, "a-b.test");
    let second = create_named(&mut conn, &m, "a_b.test");
    assert_eq!(second.tenant.schema_name.as_str(), "a_b_test_2");
}

#[test]
fn a_schema_that_exists_outside_the_registry_is_never_taken_over() {
    let (_db, mut conn) = db_with_registry();
    create_unregistered_billing_schema(&mut conn);
    let request = new_tenant("billing.test").schema("billing").unwrap();
    let err = refused(&mut conn, &app_migrations(), &request);
    assert_eq!(
        err.to_string(),
        "schema `billing` already exists: choose another schema name"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM billing.secrets"),
        1
    );
}

#[test]
fn a_second_tenant_with_a_taken_public_name_is_refused() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    create_named(&mut conn, &m, "acme.test");
    let request = new_tenant("ACME.test.").schema("other").unwrap();
    let err = refused(&mut conn, &m, &request);
    assert_eq!(
        err.to_string(),
        "tenant `acme.test` already exists: choose another public name"
    );
}

#[test]
fn drop_removes_the_schema_and_every_registry_row() {
    let (_db, mut conn) = db_with_registry();
    create_with_alias(&mut conn, "gone.test", "alias.test");
    let archive = drop_tenant(&mut conn, &public_name("alias.test"), DropMode::Drop).unwrap();
    assert_eq!(archive, None);
    assert!(!schemas(&mut conn).contains(&"gone_test".to_string()));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_public_names"
        ),
        0
    );
    let err = drop_tenant(&mut conn, &public_name("gone.test"), DropMode::Drop).unwrap_err();
    assert!(
        err.to_string().contains("no tenant is named `gone.test`"),
        "{err}"
    );
}

#[test]
fn archive_renames_the_schema_aside_and_restore_brings_data_and_aliases_back() {
    let (_db, mut conn) = db_with_registry();
    create_with_alias_and_ada(&mut conn, "kept.test", "www.kept.test");
    let archive = archive_tenant(&mut conn, "kept.test");
    assert!(archive
        .schema_name
        .as_str()
        .starts_with("appschema_archived_kept_test_"));
    assert_eq!(archive.public_names, ["kept.test", "www.kept.test"]);
    assert!(find(&mut conn, "kept.test").is_none());
    assert!(!schemas(&mut conn).contains(&"kept_test".to_string()));
    assert_eq!(
        list_archives(&mut conn).unwrap(),
        std::slice::from_ref(&archive)
    );

    let tenant = restore_archive(&mut conn, &archive.schema_name, None, None).unwrap();
    assert_eq!(tenant.schema_name.as_str(), "kept_test");
    assert_eq!(find(&mut conn, "www.kept.test"), Some(tenant));
    assert_eq!(
        query_strings(&mut conn, "SELECT name AS value FROM kept_test.customers"),
        ["ada"]
    );
    assert!(list_archives(&mut conn).unwrap().is_empty());
}

#[test]
fn restoring_onto_a_taken_name_changes_nothing() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    create_named(&mut conn, &m, "kept.test");
    let archive = archive_tenant(&mut conn, "kept.test");
    let newcomer = new_tenant("kept.test").schema("newcomer").unwrap();
    create_tenant(&mut conn, &m, &newcomer).unwrap();
    let err = leaving_the_catalog_unchanged(&mut conn, |conn| {
        restore_archive(conn, &archive.schema_name, None, None).unwrap_err()
    });
    assert!(matches!(err, ProvisionError::TenantExists { .. }), "{err}");
    let other = public_name("kept-again.test");
    let tenant = restore_archive(&mut conn, &archive.schema_name, Some(&other), None).unwrap();
    assert_eq!(tenant.schema_name.as_str(), "kept_test");
}

#[test]
fn rename_changes_public_name_and_schema_in_one_step() {
    let (_db, mut conn) = db_with_registry();
    create_with_alias_and_ada(&mut conn, "old.test", "alias.test");
    let renamed = rename_tenant(
        &mut conn,
        &public_name("old.test"),
        Some(&public_name("new.test")),
        Some(&SchemaName::new("new_schema").unwrap()),
    )
    .unwrap();
    assert_eq!(
        (renamed.public_name.as_str(), renamed.schema_name.as_str()),
        ("new.test", "new_schema")
    );
    assert!(find(&mut conn, "old.test").is_none());
    assert_eq!(find(&mut conn, "alias.test"), Some(renamed));
    assert_eq!(
        query_strings(&mut conn, "SELECT name AS value FROM new_schema.customers"),
        ["ada"]
    );
}

#[test]
fn rename_onto_a_taken_name_or_schema_changes_nothing() {
    let (_db, mut conn) = db_with_tenants_a_and_b();
    let a = public_name("a.test");
    leaving_the_catalog_unchanged(&mut conn, |conn| {
        let err = rename_tenant(conn, &a, Some(&public_name("b.test")), None).unwrap_err();
        assert!(matches!(err, ProvisionError::TenantExists { .. }), "{err}");
        let b_schema = SchemaName::new("b_test").unwrap();
        let err =
            rename_tenant(conn, &a, Some(&public_name("c.test")), Some(&b_schema)).unwrap_err();
        assert!(matches!(err, ProvisionError::SchemaExists { .. }), "{err}");
    });
}

#[test]
fn a_spare_is_claimed_by_renaming_it_and_is_gone_from_the_spares() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    assert_eq!(ensure_spares(&mut conn, &m, 2).unwrap(), 2);
    assert_eq!(ensure_spares(&mut conn, &m, 2).unwrap(), 0);
    let spares = spare_schemas(&mut conn).unwrap();
    assert!(spares
        .iter()
        .all(|s| s.as_str().starts_with("appschema_spare_")));
    let request = new_tenant("fast.test").source(Source::Spare);
    let created = create_tenant(&mut conn, &m, &request).unwrap();
    assert_eq!(created.source, Source::Spare);
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares[1..]);
    assert!(!schemas(&mut conn).contains(&spares[0].to_string()));
    assert_eq!(
        applied_versions(&mut conn, "fast_test"),
        ["20240101000000", "20240102000000"]
    );
}

#[test]
fn concurrent_claims_take_different_spares_and_fall_back_to_migrations_when_none_is_left() {
    let (db, mut conn) = db_with_registry();
    ensure_spares(&mut conn, &app_migrations(), 3).unwrap();
    let results: Vec<Created> = create_concurrently(db.url(), 5, |i| {
        new_tenant(&format!("c{i}.test")).source(Source::Spare)
    })
    .into_iter()
    .map(Result::unwrap)
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
    let left = schemas_starting_with(&mut conn, "appschema_spare_");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(tenant_count(&mut conn), 5);
}

#[test]
fn a_spare_left_behind_by_a_new_migration_is_brought_to_the_head_when_claimed() {
    let (_db, mut conn) = db_with_registry();
    ensure_spares(&mut conn, &app_migrations_but_the_last(), 1).unwrap();
    let request = new_tenant("late.test").source(Source::Spare);
    let created = create_tenant(&mut conn, &app_migrations(), &request).unwrap();
    assert_eq!(created.source, Source::Spare);
    conn.batch_execute("INSERT INTO late_test.customers (name) VALUES ('a'); INSERT INTO late_test.orders (customer_id, total) SELECT id, 1 FROM late_test.customers")
        .unwrap();
}

#[test]
fn a_failed_claim_gives_the_spare_back() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    ensure_spares(&mut conn, &m, 1).unwrap();
    create_named(&mut conn, &m, "taken.test");
    let spares = spare_schemas(&mut conn).unwrap();
    let request = new_tenant("taken.test")
        .schema("x")
        .unwrap()
        .source(Source::Spare);
    let err = create_tenant(&mut conn, &m, &request);
    assert!(matches!(err, Err(ProvisionError::TenantExists { .. })));
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares);
}
