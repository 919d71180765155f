//! Seed rows travel from the template's seed schema, server-side: the
//! template's text holds none, a tenant built from it holds the same rows
//! as one built by its migrations (whatever the tables' shapes), a missing
//! seed schema is refused by name, and storing a template drops the seed
//! schema of the one it replaces.

use appschema_core::provision::{
    create_tenant, create_tenant_from_template, ensure_spares, generate_template, store_template,
    ProvisionError, Source, Template, TemplateError,
};
use appschema_core::MigrationSet;
use appschema_testkit::provisioning::{
    app_migrations, db_with_registry, isolated, new_tenant, query_strings, schemas_starting_with,
};
use diesel::connection::SimpleConnection;

/// Tables of every shape a copy must handle: identity (always), serial,
/// generated, partitioned, inherited, zero-column, with a trigger and a
/// foreign key that must not see the rows arrive; later rows updated and
/// deleted; a populated materialized view (created last: pg_dump's replay
/// refreshes it, so one left stale by a later migration would differ).
fn shapes() -> MigrationSet {
    isolated(vec![
        (
            "20240101000000".into(),
            r#"CREATE TABLE inserts (n int NOT NULL);
             INSERT INTO inserts VALUES (0);
             CREATE FUNCTION counted() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN UPDATE inserts SET n = n + 1; RETURN NEW; END $$;
             CREATE TABLE kind (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "Name" text);
             INSERT INTO kind ("Name") VALUES ('a'), ('b''s'), (NULL);
             CREATE TABLE item (id serial PRIMARY KEY,
                 kind_id int REFERENCES kind (id),
                 price numeric NOT NULL,
                 taxed numeric GENERATED ALWAYS AS (price * 1.2) STORED);
             CREATE TRIGGER item_counted AFTER INSERT ON item
                 FOR EACH ROW EXECUTE FUNCTION counted();
             INSERT INTO item (kind_id, price) VALUES (1, 10), (2, 20), (3, 30);
             CREATE TABLE measure (at int NOT NULL, v text) PARTITION BY RANGE (at);
             CREATE TABLE measure_low PARTITION OF measure FOR VALUES FROM (0) TO (10);
             CREATE TABLE measure_high PARTITION OF measure FOR VALUES FROM (10) TO (100);
             INSERT INTO measure VALUES (1, 'low'), (50, 'high');
             CREATE TABLE animal (name text);
             CREATE TABLE dog (good boolean) INHERITS (animal);
             INSERT INTO animal VALUES ('cat');
             INSERT INTO dog VALUES ('rex', true);
             CREATE TABLE nothing ();
             INSERT INTO nothing DEFAULT VALUES;
             INSERT INTO nothing DEFAULT VALUES;
             CREATE TABLE empty (x int);"#
                .into(),
        ),
        (
            "20240102000000".into(),
            "DELETE FROM item WHERE id = 2;
             UPDATE kind SET \"Name\" = 'A' WHERE id = 1;
             INSERT INTO item (kind_id, price) VALUES (1, 5);
             SELECT nextval('item_id_seq');
             CREATE MATERIALIZED VIEW priced AS SELECT id, taxed FROM item;"
                .into(),
        ),
    ])
}

/// What `schema` holds: every table's rows (`ONLY` for the parent of an
/// inheritance), the materialized view, and the next value of each
/// sequence (drawn, so call it once per schema).
fn contents(conn: &mut diesel::PgConnection, schema: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, sql) in [
        ("inserts", "SELECT n::text FROM {s}.inserts"),
        ("kind", "SELECT row(id, \"Name\")::text FROM {s}.kind ORDER BY id"),
        (
            "item",
            "SELECT row(id, kind_id, price, taxed)::text FROM {s}.item ORDER BY id",
        ),
        (
            "measure_low",
            "SELECT row(at, v)::text FROM ONLY {s}.measure_low",
        ),
        (
            "measure_high",
            "SELECT row(at, v)::text FROM ONLY {s}.measure_high",
        ),
        ("animal", "SELECT name FROM ONLY {s}.animal"),
        ("dog", "SELECT row(name, good)::text FROM {s}.dog"),
        ("nothing", "SELECT count(*)::text FROM {s}.nothing"),
        ("empty", "SELECT count(*)::text FROM {s}.empty"),
        (
            "priced",
            "SELECT row(id, taxed)::text FROM {s}.priced ORDER BY id",
        ),
        (
            "next",
            "SELECT nextval('{s}.item_id_seq')::text UNION ALL SELECT nextval('{s}.kind_id_seq')::text",
        ),
    ] {
        let sql = format!(
            "SELECT coalesce(string_agg(v, ' '), '') AS value FROM ({}) t(v)",
            sql.replace("{s}", &format!("\"{schema}\""))
        );
        out.push(format!("{name}: {}", query_strings(conn, &sql).concat()));
    }
    out
}

#[test]
fn a_tenant_from_the_template_holds_the_rows_of_every_table_shape_its_migrations_wrote() {
    let (db, mut conn) = db_with_registry();
    let m = shapes();
    create_tenant(&mut conn, &m, &new_tenant("m.test")).unwrap();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    let text = template.to_string();
    let seed = template.seed_schema().expect("the migrations insert rows");
    assert!(text.contains(&format!("\n-- seed: {seed}\n")), "{text}");
    assert!(!text.contains("b''s"), "a seed row in the text: {text}");
    assert!(!text.contains("'rex'"), "a seed row in the text: {text}");
    store_template(&mut conn, &template).unwrap();
    let by_template = create_tenant(
        &mut conn,
        &m,
        &new_tenant("t.test").source(Source::Template),
    )
    .unwrap();
    assert_eq!(by_template.source, Source::Template);
    // The text read back replays the same (the seed line survives parsing).
    let reread = Template::parse(&text).unwrap();
    assert_eq!(reread, template);
    create_tenant_from_template(&mut conn, &m, &new_tenant("r.test"), &reread).unwrap();

    let expected = contents(&mut conn, "m_test");
    assert_eq!(
        expected,
        [
            "inserts: 4",
            "kind: (1,A) (2,b's) (3,)",
            "item: (1,1,10,12.0) (3,3,30,36.0) (4,1,5,6.0)",
            "measure_low: (1,low)",
            "measure_high: (50,high)",
            "animal: cat",
            "dog: (rex,t)",
            "nothing: 2",
            "empty: 0",
            "priced: (1,12.0) (3,36.0) (4,6.0)",
            "next: 6 4",
        ]
    );
    for schema in ["t_test", "r_test"] {
        assert_eq!(contents(&mut conn, schema), expected, "{schema}");
    }
}

#[test]
fn a_template_whose_seed_schema_is_missing_is_refused_naming_the_fix_and_builds_nothing() {
    let (db, mut conn) = db_with_registry();
    let m = shapes();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &template).unwrap();
    let seed = template.seed_schema().unwrap().to_string();
    conn.batch_execute(&format!("DROP SCHEMA {seed} CASCADE"))
        .unwrap();

    let refused = create_tenant(
        &mut conn,
        &m,
        &new_tenant("t.test").source(Source::Template),
    )
    .unwrap_err();
    match &refused {
        ProvisionError::Template(TemplateError::SeedMissing { version, seed: s }) => {
            assert_eq!(version, "20240102000000");
            assert_eq!(s, &seed);
        }
        other => panic!("expected SeedMissing, got {other:?}"),
    }
    let message = refused.to_string();
    assert!(
        message.contains(&seed) && message.contains("appschema-cli schematemplate"),
        "{message}"
    );
    assert!(schemas_starting_with(&mut conn, "t_test").is_empty());
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT count(*)::text AS value FROM public.appschema_tenants"
        ),
        ["0"]
    );

    // The same text in another database: refused the same way.
    let other = appschema_tempdb::TestDb::new();
    let mut other_conn = other.conn();
    appschema_core::registry::install(&mut other_conn).unwrap();
    let reread = Template::parse(&template.to_string()).unwrap();
    let refused = create_tenant_from_template(&mut other_conn, &m, &new_tenant("o.test"), &reread)
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ProvisionError::Template(TemplateError::SeedMissing { .. })
        ),
        "{refused:?}"
    );

    // A spare request without spares gives way to the migrations, which
    // write the rows themselves.
    let created =
        create_tenant(&mut conn, &m, &new_tenant("s.test").source(Source::Spare)).unwrap();
    assert_eq!(created.source, Source::Migrations);
    assert_eq!(
        query_strings(&mut conn, "SELECT count(*)::text AS value FROM s_test.item"),
        ["3"]
    );
}

#[test]
fn storing_a_template_drops_the_seed_schema_of_the_one_it_replaces_and_keeps_its_own() {
    let (db, mut conn) = db_with_registry();
    let m = shapes();
    let first = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &first).unwrap();
    let second = generate_template(&mut conn, db.url(), &m).unwrap();
    let (first_seed, second_seed) = (
        first.seed_schema().unwrap().to_string(),
        second.seed_schema().unwrap().to_string(),
    );
    assert_ne!(first_seed, second_seed);
    // Generated, not stored yet: both kept (a concurrent store must not
    // drop a seed schema whose template is on its way).
    let mut both = vec![first_seed.clone(), second_seed.clone()];
    both.sort();
    assert_eq!(schemas_starting_with(&mut conn, "appschema_seed_"), both);
    store_template(&mut conn, &second).unwrap();
    assert_eq!(
        schemas_starting_with(&mut conn, "appschema_seed_"),
        std::slice::from_ref(&second_seed)
    );
    create_tenant(
        &mut conn,
        &m,
        &new_tenant("t.test").source(Source::Template),
    )
    .unwrap();
    assert_eq!(
        query_strings(&mut conn, "SELECT count(*)::text AS value FROM t_test.item"),
        ["3"]
    );
    // The seed schema is no tenant and no spare, and tracks no version.
    assert_eq!(ensure_spares(&mut conn, &m, 0).unwrap(), 0);
    assert_eq!(
        query_strings(
            &mut conn,
            &format!(
                "SELECT (to_regclass('{second_seed}.__diesel_schema_migrations') IS NULL)::text AS value"
            )
        ),
        ["true"]
    );

    // Migrations inserting no rows need no seed schema: none is kept, and
    // storing their template drops the one no longer named.
    let rowless = app_migrations();
    let template = generate_template(&mut conn, db.url(), &rowless).unwrap();
    assert_eq!(template.seed_schema(), None);
    assert!(!template.to_string().contains("-- seed:"));
    assert_eq!(
        schemas_starting_with(&mut conn, "appschema_seed_"),
        [second_seed]
    );
    store_template(&mut conn, &template).unwrap();
    assert!(schemas_starting_with(&mut conn, "appschema_seed_").is_empty());
}

/// How many backends wait on a lock (a row, a transaction or a relation).
fn backends_waiting_on_locks(conn: &mut diesel::PgConnection) -> usize {
    query_strings(
        conn,
        "SELECT count(*)::text AS value FROM pg_catalog.pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )[0]
    .parse()
    .unwrap()
}

/// A sign-up replaying the stored template while a deploy stores its
/// successor: the store waits for the replay to commit before it drops the
/// seed schema the replay copies from, so the sign-up gets its rows (not
/// `SeedMissing`) and the store still completes.
///
/// The replay is held between reading the template and copying its seed
/// rows by a lock on a shared table its pre-data DDL needs (a view over
/// it); meanwhile the store runs. Without the row lock the store drops the
/// old seed schema at once and the held replay fails.
#[test]
fn storing_a_template_waits_for_a_replay_that_read_the_one_it_replaces() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let (db, mut conn) = db_with_registry();
    conn.batch_execute("CREATE TABLE public.blocker (x int)")
        .unwrap();
    let m = isolated(vec![(
        "20240101000000".into(),
        "CREATE TABLE seeded (n int);
         INSERT INTO seeded VALUES (1), (2);
         CREATE VIEW seen AS SELECT x FROM public.blocker;"
            .into(),
    )]);
    let first = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &first).unwrap();
    let second = generate_template(&mut conn, db.url(), &m).unwrap();

    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE public.blocker IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let until = |what: &str, done: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let (m2, url) = (m.clone(), db.url().to_string());
    let signup = std::thread::spawn(move || {
        let mut conn = <diesel::PgConnection as diesel::Connection>::establish(&url).unwrap();
        create_tenant(
            &mut conn,
            &m2,
            &new_tenant("a.test").source(Source::Template),
        )
    });
    until("the sign-up waits on the shared table", &mut || {
        backends_waiting_on_locks(&mut conn) >= 1
    });

    let url = db.url().to_string();
    let (stored_tx, stored_rx) = mpsc::channel();
    let store = std::thread::spawn(move || {
        let mut conn = <diesel::PgConnection as diesel::Connection>::establish(&url).unwrap();
        let result = store_template(&mut conn, &second);
        stored_tx.send(()).unwrap();
        result
    });
    // The store either waits (the guard) or finishes (no guard); either
    // way, only then does the sign-up go on.
    until("the store waits or is done", &mut || {
        stored_rx.try_recv().is_ok() || backends_waiting_on_locks(&mut conn) >= 2
    });
    holder.batch_execute("COMMIT").unwrap();

    let created = signup.join().unwrap();
    assert!(
        created.is_ok(),
        "the sign-up lost its seed schema to the store: {created:?}"
    );
    store.join().unwrap().unwrap();
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT count(*)::text AS value FROM a_test.seeded"
        ),
        ["2"]
    );
    assert_eq!(
        schemas_starting_with(&mut conn, "appschema_seed_"),
        [stored_seed(&mut conn)]
    );
}

/// The seed schema the stored template names.
fn stored_seed(conn: &mut diesel::PgConnection) -> String {
    query_strings(
        conn,
        "SELECT substr(split_part(body, E'\\n', 5), 10) AS value FROM public.appschema_templates",
    )[0]
    .trim()
    .to_string()
}
