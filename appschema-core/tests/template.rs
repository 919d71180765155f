//! Schema templates and clones, against a real PostgreSQL (pg_dump included).

mod common;

use appschema_core::provision::{
    clone_tenant, create_tenant, create_tenant_from_template, generate_template, store_template,
    NewTenant, ProvisionError, Source, Template,
};
use appschema_core::{registry, PublicName};
use appschema_tempdb::TestDb;
use common::{
    app_migrations, app_parts, catalog_snapshot, describe_schema, isolated, query_strings, schemas,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

fn setup() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    (db, conn)
}

#[test]
fn a_tenant_from_the_template_is_identical_to_one_built_by_migrations() {
    let (db, mut conn) = setup();
    let m = app_migrations();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    assert_eq!(template.version(), "20240102000000");
    assert!(
        !schemas(&mut conn)
            .iter()
            .any(|s| s.starts_with("appschema_scratch_")),
        "scratch schema left behind"
    );
    let text = template.to_string();
    assert!(
        text.starts_with("-- appschema schema template\n-- version: 20240102000000\n"),
        "{text}"
    );
    assert!(!text.contains("appschema_scratch_"), "{text}");
    assert!(
        !text.contains("search_path"),
        "session settings must be dropped: {text}"
    );
    store_template(&mut conn, &template).unwrap();

    let by_migrations = create_tenant(&mut conn, &m, &NewTenant::new("m.test").unwrap()).unwrap();
    let by_template = create_tenant(
        &mut conn,
        &m,
        &NewTenant::new("t.test").unwrap().source(Source::Template),
    )
    .unwrap();
    assert_eq!(by_template.source, Source::Template);
    let expected = describe_schema(&mut conn, by_migrations.tenant.schema_name.as_str());
    assert!(
        expected
            .iter()
            .any(|l| l.contains("'__appschema_schema__.orders #'")),
        "{expected:#?}"
    );
    assert!(
        expected
            .iter()
            .any(|l| l.contains("orders of __appschema_schema__;")),
        "{expected:#?}"
    );
    assert_eq!(
        describe_schema(&mut conn, by_template.tenant.schema_name.as_str()),
        expected
    );
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT version::text AS value FROM t_test.__diesel_schema_migrations ORDER BY 1"
        ),
        ["20240101000000", "20240102000000"]
    );
    // The serial default points at the tenant's own sequence.
    conn.batch_execute("INSERT INTO t_test.customers (name) VALUES ('a'); INSERT INTO m_test.customers (name) VALUES ('b')")
        .unwrap();
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT last_value::text AS value FROM t_test.customers_id_seq"
        ),
        ["1"]
    );
}

#[test]
fn a_template_read_back_from_its_text_replays_the_same() {
    let (db, mut conn) = setup();
    let m = app_migrations();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    let parsed = Template::parse(&template.to_string()).unwrap();
    assert_eq!(parsed, template);
    let created =
        create_tenant_from_template(&mut conn, &m, &NewTenant::new("f.test").unwrap(), &parsed)
            .unwrap();
    assert_eq!(created.source, Source::Template);
    assert!(Template::parse("CREATE TABLE x ()").is_err());
}

#[test]
fn a_stale_template_is_refused_with_a_message_saying_to_regenerate_it() {
    let (db, mut conn) = setup();
    let old = isolated(app_parts()[..1].to_vec());
    let template = generate_template(&mut conn, db.url(), &old).unwrap();
    store_template(&mut conn, &template).unwrap();
    let m = app_migrations();
    let before = catalog_snapshot(&mut conn);
    let request = NewTenant::new("s.test").unwrap().source(Source::Template);
    let err = create_tenant(&mut conn, &m, &request).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the schema template matches migration 20240101000000 but the isolated head is 20240102000000: \
         regenerate it with `appschema-cli schematemplate`"
    );
    let err = create_tenant_from_template(&mut conn, &m, &request, &template).unwrap_err();
    assert!(err.to_string().contains("regenerate it"), "{err}");
    assert_eq!(catalog_snapshot(&mut conn), before);
    // A spare request skips the stale template and builds by migrations.
    let created = create_tenant(&mut conn, &m, &request.source(Source::Spare)).unwrap();
    assert_eq!(created.source, Source::Migrations);
}

#[test]
fn a_missing_template_is_refused_and_a_spare_request_falls_back_to_a_current_one() {
    let (db, mut conn) = setup();
    let m = app_migrations();
    let err = create_tenant(
        &mut conn,
        &m,
        &NewTenant::new("x.test").unwrap().source(Source::Template),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("generate one with `appschema-cli schematemplate`"),
        "{err}"
    );
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &template).unwrap();
    let created = create_tenant(
        &mut conn,
        &m,
        &NewTenant::new("x.test").unwrap().source(Source::Spare),
    )
    .unwrap();
    assert_eq!(created.source, Source::Template);
}

#[test]
fn clone_copies_rows_keeps_foreign_keys_and_sets_sequences() {
    let (_db, mut conn) = setup();
    let m = app_migrations();
    create_tenant(&mut conn, &m, &NewTenant::new("src.test").unwrap()).unwrap();
    conn.batch_execute(
        "INSERT INTO src_test.customers (name) VALUES ('ada'), ('bob'), ('cy');
         DELETE FROM src_test.customers WHERE name = 'cy';
         INSERT INTO src_test.orders (customer_id, total) SELECT id, 5 FROM src_test.customers;",
    )
    .unwrap();
    let source = PublicName::new("src.test").unwrap();
    let created = clone_tenant(
        &mut conn,
        &m,
        &source,
        &NewTenant::new("copy.test").unwrap(),
    )
    .unwrap();
    assert_eq!(created.tenant.schema_name.as_str(), "copy_test");
    let rows = "SELECT o.id || ' ' || c.name || ' ' || o.total || ' ' || o.doubled AS value
                  FROM {s}.orders o JOIN {s}.customers c ON c.id = o.customer_id ORDER BY o.id";
    let src = query_strings(&mut conn, &rows.replace("{s}", "src_test"));
    assert_eq!(
        src,
        ["1 ada 1005 2010", "2 bob 1005 2010"],
        "the trigger added its fee once"
    );
    // The trigger did not fire again on the copied rows.
    assert_eq!(
        query_strings(&mut conn, &rows.replace("{s}", "copy_test")),
        src
    );
    // Sequences continue where the source's are, and the FK is enforced.
    conn.batch_execute("INSERT INTO copy_test.customers (name) VALUES ('dee')")
        .unwrap();
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT max(id)::text AS value FROM copy_test.customers"
        ),
        ["4"]
    );
    conn.batch_execute("INSERT INTO copy_test.orders (customer_id, total) VALUES (4, 1)")
        .unwrap();
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT max(id)::text AS value FROM copy_test.orders"
        ),
        ["3"]
    );
    assert!(conn
        .batch_execute("INSERT INTO copy_test.orders (customer_id, total) VALUES (99, 1)")
        .is_err());
    // The source is untouched.
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT count(*)::text AS value FROM src_test.customers"
        ),
        ["2"]
    );
}

#[test]
fn cloning_onto_a_taken_name_or_from_an_unknown_tenant_changes_nothing() {
    let (_db, mut conn) = setup();
    let m = app_migrations();
    create_tenant(&mut conn, &m, &NewTenant::new("a.test").unwrap()).unwrap();
    create_tenant(&mut conn, &m, &NewTenant::new("b.test").unwrap()).unwrap();
    let before = catalog_snapshot(&mut conn);
    let a = PublicName::new("a.test").unwrap();
    let err = clone_tenant(
        &mut conn,
        &m,
        &a,
        &NewTenant::new("b.test").unwrap().schema("bb").unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, ProvisionError::TenantExists { .. }), "{err}");
    let nobody = PublicName::new("nobody.test").unwrap();
    let err = clone_tenant(&mut conn, &m, &nobody, &NewTenant::new("c.test").unwrap()).unwrap_err();
    assert!(matches!(err, ProvisionError::UnknownTenant { .. }), "{err}");
    assert_eq!(catalog_snapshot(&mut conn), before);
}
