//! Creating tenants from the stored schema template with the per-process
//! cache of parsed templates: never stale, still refused when the stored
//! template is behind the migrations, still one transaction with the same
//! errors for taken names, in four statements. Against a real PostgreSQL.

use std::sync::{Arc, Mutex};

use appschema_core::provision::{
    create_tenant, store_template, NewTenant, ProvisionError, Source, Template,
};
use appschema_testkit::provisioning::{
    app_migrations, app_migrations_but_the_last,
    assert_concurrent_creations_of_one_public_name_yield_one_tenant,
    create_unregistered_billing_schema, db_with_registry, isolated, new_tenant, query_strings,
    refused, store_generated_template,
};
use diesel::connection::InstrumentationEvent;
use diesel::prelude::*;

fn from_template(public_name: &str) -> NewTenant {
    new_tenant(public_name).source(Source::Template)
}

fn tables(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    query_strings(
        conn,
        &format!(
            "SELECT tablename AS value FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1"
        ),
    )
}

#[test]
fn a_template_regenerated_under_the_same_version_is_served_not_the_cached_one() {
    let (db, mut conn) = db_with_registry();
    let version = "20240101000000".to_string();
    let first = isolated(vec![(
        version.clone(),
        "CREATE TABLE first (id int);".into(),
    )]);
    let second = isolated(vec![(
        version.clone(),
        "CREATE TABLE second (id int);".into(),
    )]);

    let template = store_generated_template(&mut conn, db.url(), &first);
    // The first creation caches the template, the second is served from it.
    for name in ["a.test", "b.test"] {
        let created = create_tenant(&mut conn, &first, &from_template(name)).unwrap();
        assert_eq!(created.source, Source::Template);
        assert_eq!(
            tables(&mut conn, created.tenant.schema_name.as_str()),
            ["__diesel_schema_migrations", "first"]
        );
    }

    // Regenerated: same version, another body. The cache must not hide it.
    let regenerated = store_generated_template(&mut conn, db.url(), &second);
    assert_eq!(regenerated.version(), template.version());
    for name in ["c.test", "d.test"] {
        let created = create_tenant(&mut conn, &second, &from_template(name)).unwrap();
        assert_eq!(
            tables(&mut conn, created.tenant.schema_name.as_str()),
            ["__diesel_schema_migrations", "second"]
        );
    }

    // Edited by hand under the same version: served as stored too, and a
    // spare request falling back to the template sees the same.
    let edited = Template::parse(&format!(
        "{regenerated}CREATE TABLE __appschema_schema__.third (id int);\n"
    ))
    .unwrap();
    store_template(&mut conn, &edited).unwrap();
    for request in [
        from_template("e.test"),
        from_template("f.test").source(Source::Spare),
    ] {
        let created = create_tenant(&mut conn, &second, &request).unwrap();
        assert_eq!(created.source, Source::Template);
        assert_eq!(
            tables(&mut conn, created.tenant.schema_name.as_str()),
            ["__diesel_schema_migrations", "second", "third"]
        );
    }
}

#[test]
fn a_stale_template_is_refused_even_when_this_process_has_it_cached() {
    let (db, mut conn) = db_with_registry();
    let old = app_migrations_but_the_last();
    store_generated_template(&mut conn, db.url(), &old);
    // Cached while it was current.
    let created = create_tenant(&mut conn, &old, &from_template("old.test")).unwrap();
    assert_eq!(created.source, Source::Template);

    let m = app_migrations();
    let err = refused(&mut conn, &m, &from_template("new.test"));
    assert_eq!(
        err.to_string(),
        "the schema template matches migration 20240101000000 but the isolated head is 20240102000000: \
         regenerate it with `appschema-cli schematemplate`"
    );
    // Once regenerated at the head it is used.
    store_generated_template(&mut conn, db.url(), &m);
    let created = create_tenant(&mut conn, &m, &from_template("new.test")).unwrap();
    assert_eq!(
        tables(&mut conn, created.tenant.schema_name.as_str()),
        ["__diesel_schema_migrations", "customers", "orders"]
    );
}

#[test]
fn taken_names_are_refused_from_the_template_and_leave_no_orphan_schema() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    store_generated_template(&mut conn, db.url(), &m);
    let first = create_tenant(&mut conn, &m, &from_template("acme.test")).unwrap();
    assert_eq!(first.tenant.schema_name.as_str(), "acme_test");
    create_unregistered_billing_schema(&mut conn);

    // Each refusal below leaves the catalog as it was (`refused` asserts it).
    // Taken public name (case and trailing dot folded), free schema.
    let err = refused(
        &mut conn,
        &m,
        &from_template("ACME.test.").schema("other").unwrap(),
    );
    assert!(
        matches!(&err, ProvisionError::TenantExists { public_name } if public_name == "acme.test"),
        "{err:?}"
    );

    // Free public name, schema of another tenant.
    let err = refused(
        &mut conn,
        &m,
        &from_template("other.test").schema("acme_test").unwrap(),
    );
    assert!(
        matches!(&err, ProvisionError::SchemaExists { schema } if schema == "acme_test"),
        "{err:?}"
    );

    // Free public name, schema that exists outside the registry: refused by
    // the CREATE SCHEMA itself, never taken over.
    let err = refused(
        &mut conn,
        &m,
        &from_template("billing.test").schema("billing").unwrap(),
    );
    assert_eq!(
        err.to_string(),
        "schema `billing` already exists: choose another schema name"
    );
    assert_eq!(
        query_strings(&mut conn, "SELECT x::text AS value FROM billing.secrets"),
        ["42"]
    );

    // A derived name that exists outside the registry gets a suffix.
    let created = create_tenant(&mut conn, &m, &from_template("billing")).unwrap();
    assert_eq!(created.tenant.schema_name.as_str(), "billing_2");
    assert_eq!(tables(&mut conn, "billing"), ["secrets"]);
}

#[test]
fn concurrent_template_creations_of_one_public_name_yield_one_tenant_and_one_schema() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    store_generated_template(&mut conn, db.url(), &m);
    assert_concurrent_creations_of_one_public_name_yield_one_tenant(
        db.url(),
        &mut conn,
        Source::Template,
    );
}

#[test]
fn creating_from_the_template_takes_four_statements() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    store_generated_template(&mut conn, db.url(), &m);
    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = sent.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            sink.lock().unwrap().push(head);
        }
    });
    // Cold or warm cache alike: BEGIN, registry rows + template, the
    // schema's DDL with the tracking rows, COMMIT.
    for name in ["one.test", "two.test"] {
        sent.lock().unwrap().clear();
        create_tenant(&mut conn, &m, &from_template(name)).unwrap();
        let sent = sent.lock().unwrap().clone();
        assert_eq!(
            sent,
            ["BEGIN", "WITH tenant", "CREATE SCHEMA", "COMMIT"],
            "{name}"
        );
    }
}
