//! Schema templates and clones, against a real PostgreSQL (pg_dump included).

mod common;

use appschema_core::provision::{
    clone_tenant, create_tenant, create_tenant_from_template, generate_template, store_template,
    ProvisionError, Source, Template,
};
use common::{
    app_migrations, app_migrations_but_the_last, applied_versions, create_named, db_with_registry,
    db_with_tenants_a_and_b, describe_schema, leaving_the_catalog_unchanged, new_tenant,
    public_name, query_strings, refused, schemas_starting_with, store_generated_template,
};
use diesel::connection::SimpleConnection;

#[test]
fn a_tenant_from_the_template_is_identical_to_one_built_by_migrations() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    assert_eq!(template.version(), "20240102000000");
    assert!(
        schemas_starting_with(&mut conn, "appschema_scratch_").is_empty(),
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

    let by_migrations = create_named(&mut conn, &m, "m.test");
    let request = new_tenant("t.test").source(Source::Template);
    let by_template = create_tenant(&mut conn, &m, &request).unwrap();
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
        applied_versions(&mut conn, "t_test"),
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
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    let parsed = Template::parse(&template.to_string()).unwrap();
    assert_eq!(parsed, template);
    let created =
        create_tenant_from_template(&mut conn, &m, &new_tenant("f.test"), &parsed).unwrap();
    assert_eq!(created.source, Source::Template);
    assert!(Template::parse("CREATE TABLE x ()").is_err());
}

#[test]
fn a_stale_template_is_refused_with_a_message_saying_to_regenerate_it() {
    let (db, mut conn) = db_with_registry();
    let template = store_generated_template(&mut conn, db.url(), &app_migrations_but_the_last());
    let m = app_migrations();
    let request = new_tenant("s.test").source(Source::Template);
    let err = refused(&mut conn, &m, &request);
    assert_eq!(
        err.to_string(),
        "the schema template matches migration 20240101000000 but the isolated head is 20240102000000: \
         regenerate it with `appschema-cli schematemplate`"
    );
    let err = leaving_the_catalog_unchanged(&mut conn, |conn| {
        create_tenant_from_template(conn, &m, &request, &template).unwrap_err()
    });
    assert!(err.to_string().contains("regenerate it"), "{err}");
    // A spare request skips the stale template and builds by migrations.
    let created = create_tenant(&mut conn, &m, &request.source(Source::Spare)).unwrap();
    assert_eq!(created.source, Source::Migrations);
}

#[test]
fn a_missing_template_is_refused_and_a_spare_request_falls_back_to_a_current_one() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    let err = create_tenant(
        &mut conn,
        &m,
        &new_tenant("x.test").source(Source::Template),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("generate one with `appschema-cli schematemplate`"),
        "{err}"
    );
    store_generated_template(&mut conn, db.url(), &m);
    let created =
        create_tenant(&mut conn, &m, &new_tenant("x.test").source(Source::Spare)).unwrap();
    assert_eq!(created.source, Source::Template);
}

#[test]
fn clone_copies_rows_keeps_foreign_keys_and_sets_sequences() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    create_named(&mut conn, &m, "src.test");
    conn.batch_execute(
        "INSERT INTO src_test.customers (name) VALUES ('ada'), ('bob'), ('cy');
         DELETE FROM src_test.customers WHERE name = 'cy';
         INSERT INTO src_test.orders (customer_id, total) SELECT id, 5 FROM src_test.customers;",
    )
    .unwrap();
    let source = public_name("src.test");
    let created = clone_tenant(&mut conn, &m, &source, &new_tenant("copy.test")).unwrap();
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
    let (_db, mut conn) = db_with_tenants_a_and_b();
    let m = app_migrations();
    leaving_the_catalog_unchanged(&mut conn, |conn| {
        let onto_b = new_tenant("b.test").schema("bb").unwrap();
        let err = clone_tenant(conn, &m, &public_name("a.test"), &onto_b).unwrap_err();
        assert!(matches!(err, ProvisionError::TenantExists { .. }), "{err}");
        let nobody = public_name("nobody.test");
        let err = clone_tenant(conn, &m, &nobody, &new_tenant("c.test")).unwrap_err();
        assert!(matches!(err, ProvisionError::UnknownTenant { .. }), "{err}");
    });
}
