//! Schema templates and clones, against a real PostgreSQL (pg_dump included).

mod common;

use appschema_core::provision::{
    clone_tenant, create_tenant, create_tenant_from_template, generate_template, store_template,
    ProvisionError, Source, Template,
};
use common::{
    app_migrations, app_migrations_but_the_last, app_parts, applied_versions, create_named,
    db_with_registry, db_with_tenants_a_and_b, describe_schema, isolated,
    leaving_the_catalog_unchanged, new_tenant, public_name, query_strings, refused,
    schemas_starting_with, store_generated_template,
};
use diesel::connection::SimpleConnection;
use diesel::Connection;

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
fn a_template_replays_a_sql_function_whose_body_names_a_table_pg_dump_writes_later() {
    let (db, mut conn) = db_with_registry();
    let mut parts = app_parts();
    parts.push((
        "20240103000000".into(),
        "CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT count(*) FROM orders $$;"
            .into(),
    ));
    let m = isolated(parts);
    store_generated_template(&mut conn, db.url(), &m);
    let created = create_tenant(
        &mut conn,
        &m,
        &new_tenant("f.test").source(Source::Template),
    )
    .unwrap();
    assert_eq!(created.source, Source::Template);
    conn.batch_execute("SET search_path TO f_test, public")
        .unwrap();
    assert_eq!(
        query_strings(&mut conn, "SELECT order_count()::text AS value"),
        ["0"]
    );
    conn.batch_execute("RESET search_path").unwrap();
    // The check is off for the replay only: the transaction's setting is back.
    let on = conn
        .transaction(|conn| {
            create_tenant(conn, &m, &new_tenant("g.test").source(Source::Template))?;
            Ok::<_, ProvisionError>(query_strings(
                conn,
                "SELECT current_setting('check_function_bodies') AS value",
            ))
        })
        .unwrap();
    assert_eq!(on, ["on"]);
}

#[test]
fn when_spares_run_out_a_template_that_does_not_replay_gives_way_to_the_migrations() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    let broken = Template::parse(
        "-- appschema schema template\n-- version: 20240102000000\n\
         -- versions: 20240101000000 20240102000000\n-- placeholder: __appschema_schema__\n\
         CREATE TABLE __appschema_schema__.t (id int REFERENCES __appschema_schema__.nowhere (id));\n",
    )
    .unwrap();
    store_template(&mut conn, &broken).unwrap();
    let created =
        create_tenant(&mut conn, &m, &new_tenant("w.test").source(Source::Spare)).unwrap();
    assert_eq!(created.source, Source::Migrations);
    assert_eq!(
        applied_versions(&mut conn, "w_test"),
        ["20240101000000", "20240102000000"]
    );
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

#[test]
fn clone_copies_tables_in_a_foreign_key_cycle_whose_constraints_are_not_deferrable() {
    let (_db, mut conn) = db_with_registry();
    // people.team_id -> teams, teams.lead_id -> people: neither table can be
    // copied first, and neither constraint is DEFERRABLE. badges hangs off
    // the cycle.
    let m = common::isolated(vec![(
        "20240101000000".to_string(),
        "CREATE TABLE teams (id int PRIMARY KEY, lead_id int);
         CREATE TABLE people (id int PRIMARY KEY, team_id int NOT NULL REFERENCES teams (id));
         ALTER TABLE teams ADD CONSTRAINT teams_lead FOREIGN KEY (lead_id)
             REFERENCES people (id) ON DELETE SET NULL;
         CREATE TABLE badges (person_id int REFERENCES people (id), label text);"
            .to_string(),
    )]);
    create_named(&mut conn, &m, "cyc.test");
    conn.batch_execute(
        "INSERT INTO cyc_test.teams VALUES (1, NULL), (2, NULL);
         INSERT INTO cyc_test.people VALUES (10, 1), (20, 2), (21, 2);
         UPDATE cyc_test.teams SET lead_id = id * 10;
         INSERT INTO cyc_test.badges VALUES (21, 'new');",
    )
    .unwrap();
    let before = describe_schema(&mut conn, "cyc_test");
    clone_tenant(
        &mut conn,
        &m,
        &public_name("cyc.test"),
        &new_tenant("copy.test"),
    )
    .unwrap();

    let rows =
        "SELECT p.id || ' ' || t.id || ' ' || t.lead_id || ' ' || coalesce(b.label, '-') AS value
                  FROM {s}.people p JOIN {s}.teams t ON t.id = p.team_id
                  LEFT JOIN {s}.badges b ON b.person_id = p.id ORDER BY p.id";
    assert_eq!(
        query_strings(&mut conn, &rows.replace("{s}", "copy_test")),
        ["10 1 10 -", "20 2 20 -", "21 2 20 new"]
    );
    // The constraints are back as they were, and enforced.
    assert_eq!(describe_schema(&mut conn, "copy_test"), before);
    assert!(conn
        .batch_execute("INSERT INTO copy_test.people VALUES (30, 99)")
        .is_err());
    assert!(conn
        .batch_execute("UPDATE copy_test.teams SET lead_id = 99")
        .is_err());
    conn.batch_execute("DELETE FROM copy_test.badges; DELETE FROM copy_test.people WHERE id = 10")
        .unwrap();
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT coalesce(lead_id::text, 'null') AS value FROM copy_test.teams WHERE id = 1"
        ),
        ["null"],
        "ON DELETE SET NULL kept"
    );
}

/// Issue 25: a tenant replayed from the template has its head recorded in
/// the creating transaction, so the next `migrate` with nothing pending
/// reads no tracking table (it read every template-built tenant's before:
/// 12 s at 10,000 tenants).
#[test]
fn tenants_replayed_from_the_template_are_recorded_so_a_no_op_migrate_reads_no_tracking_table() {
    use appschema_core::migrate::Migrator;
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    let template = store_generated_template(&mut conn, db.url(), &m);
    let migrate = || {
        let report = Migrator::new(db.url()).migrate(&m, &|_| {}).unwrap();
        assert!(report.is_success(), "{:?}", report.failures);
        report
    };
    migrate();
    // The stored template (one combined statement), a template handed in,
    // and a spare request falling back to the stored template.
    create_tenant(
        &mut conn,
        &m,
        &new_tenant("r1.test").source(Source::Template),
    )
    .unwrap();
    create_tenant_from_template(&mut conn, &m, &new_tenant("r2.test"), &template).unwrap();
    let spare = create_tenant(&mut conn, &m, &new_tenant("r3.test").source(Source::Spare)).unwrap();
    assert_eq!(spare.source, Source::Template);
    // A creation that rolls back leaves no record behind.
    let _ = conn.transaction::<(), diesel::result::Error, _>(|conn| {
        create_tenant(conn, &m, &new_tenant("gone.test").source(Source::Template)).unwrap();
        Err(diesel::result::Error::RollbackTransaction)
    });
    let records = query_strings(
        &mut conn,
        "SELECT h.schema_name AS value FROM public.appschema_heads h
          WHERE h.tracking_oid = to_regclass(quote_ident(h.schema_name) || '.__diesel_schema_migrations')
            AND h.digest = md5('20240101000000,20240102000000')
          ORDER BY 1",
    );
    assert_eq!(
        records,
        ["r1_test", "r2_test", "r3_test"],
        "each replay records the head it built, naming its tracking table"
    );
    let report = migrate();
    assert_eq!(report.migrations_applied, 0);
    assert_eq!(
        report.tracking_tables_read, 0,
        "the template-built tenants must be trusted from their records"
    );
}
