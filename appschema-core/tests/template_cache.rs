//! Creating tenants from the stored schema template with the per-process
//! cache of parsed templates: never stale, still refused when the stored
//! template is behind the migrations, still one transaction with the same
//! errors for taken names, in four statements. Against a real PostgreSQL.

mod common;

use std::sync::{Arc, Barrier, Mutex};

use appschema_core::provision::{
    create_tenant, generate_template, store_template, NewTenant, ProvisionError, Source, Template,
};
use appschema_core::registry;
use appschema_tempdb::TestDb;
use common::{app_migrations, app_parts, catalog_snapshot, isolated, query_strings, schemas};
use diesel::connection::{InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;

fn setup() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    (db, conn)
}

fn from_template(public_name: &str) -> NewTenant {
    NewTenant::new(public_name)
        .unwrap()
        .source(Source::Template)
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
    let (db, mut conn) = setup();
    let version = "20240101000000".to_string();
    let first = isolated(vec![(
        version.clone(),
        "CREATE TABLE first (id int);".into(),
    )]);
    let second = isolated(vec![(
        version.clone(),
        "CREATE TABLE second (id int);".into(),
    )]);

    let template = generate_template(&mut conn, db.url(), &first).unwrap();
    store_template(&mut conn, &template).unwrap();
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
    let regenerated = generate_template(&mut conn, db.url(), &second).unwrap();
    assert_eq!(regenerated.version(), template.version());
    store_template(&mut conn, &regenerated).unwrap();
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
    let (db, mut conn) = setup();
    let old = isolated(app_parts()[..1].to_vec());
    let template = generate_template(&mut conn, db.url(), &old).unwrap();
    store_template(&mut conn, &template).unwrap();
    // Cached while it was current.
    let created = create_tenant(&mut conn, &old, &from_template("old.test")).unwrap();
    assert_eq!(created.source, Source::Template);

    let m = app_migrations();
    let before = catalog_snapshot(&mut conn);
    let err = create_tenant(&mut conn, &m, &from_template("new.test")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the schema template matches migration 20240101000000 but the isolated head is 20240102000000: \
         regenerate it with `appschema-cli schematemplate`"
    );
    assert_eq!(
        catalog_snapshot(&mut conn),
        before,
        "nothing of it may remain"
    );
    // Once regenerated at the head it is used.
    let current = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &current).unwrap();
    let created = create_tenant(&mut conn, &m, &from_template("new.test")).unwrap();
    assert_eq!(
        tables(&mut conn, created.tenant.schema_name.as_str()),
        ["__diesel_schema_migrations", "customers", "orders"]
    );
}

#[test]
fn taken_names_are_refused_from_the_template_and_leave_no_orphan_schema() {
    let (db, mut conn) = setup();
    let m = app_migrations();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &template).unwrap();
    let first = create_tenant(&mut conn, &m, &from_template("acme.test")).unwrap();
    assert_eq!(first.tenant.schema_name.as_str(), "acme_test");
    conn.batch_execute(
        "CREATE SCHEMA billing; CREATE TABLE billing.secrets (x int); INSERT INTO billing.secrets VALUES (42);",
    )
    .unwrap();
    let before = catalog_snapshot(&mut conn);

    // Taken public name (case and trailing dot folded), free schema.
    let err = create_tenant(
        &mut conn,
        &m,
        &from_template("ACME.test.").schema("other").unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ProvisionError::TenantExists { public_name } if public_name == "acme.test"),
        "{err:?}"
    );
    assert_eq!(catalog_snapshot(&mut conn), before);

    // Free public name, schema of another tenant.
    let err = create_tenant(
        &mut conn,
        &m,
        &from_template("other.test").schema("acme_test").unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ProvisionError::SchemaExists { schema } if schema == "acme_test"),
        "{err:?}"
    );
    assert_eq!(catalog_snapshot(&mut conn), before);

    // Free public name, schema that exists outside the registry: refused by
    // the CREATE SCHEMA itself, never taken over.
    let err = create_tenant(
        &mut conn,
        &m,
        &from_template("billing.test").schema("billing").unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "schema `billing` already exists: choose another schema name"
    );
    assert_eq!(catalog_snapshot(&mut conn), before);
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
    let (db, mut conn) = setup();
    let m = app_migrations();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &template).unwrap();
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let results: Vec<_> = (0..threads)
        .map(|i| {
            let (url, barrier) = (db.url().to_string(), barrier.clone());
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                let request = from_template("race.example")
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
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(r, Err(ProvisionError::TenantExists { public_name }) if public_name == "race.example"),
            "{r:?}"
        );
    }
    let race: Vec<_> = schemas(&mut conn)
        .into_iter()
        .filter(|s| s.starts_with("race_"))
        .collect();
    assert_eq!(race.len(), 1, "{race:?}");
}

#[test]
fn creating_from_the_template_takes_four_statements() {
    let (db, mut conn) = setup();
    let m = app_migrations();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &template).unwrap();
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
