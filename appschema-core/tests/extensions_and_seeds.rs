//! Database-wide objects and seed rows: an extension an isolated migration
//! creates is installed once, in the shared schema, whoever runs it first;
//! the rows isolated migrations insert are in every tenant however it was
//! built (migrations, template, spare, clone).

use appschema_core::migrate::{extensions_in_schemas, Migrator};
use appschema_core::provision::{
    clone_tenant, create_tenant, drop_tenant, ensure_spares, generate_template, spare_schemas,
    store_template, DropMode, Source,
};
use appschema_core::{MigrationSet, Scope};
use appschema_testkit::provisioning::{db_with_registry, new_tenant, public_name, query_strings};
use diesel::connection::SimpleConnection;

fn docs_table() -> (String, Scope, String) {
    (
        "20240101000000".into(),
        Scope::Isolated,
        "CREATE TABLE docs (id serial PRIMARY KEY, title text NOT NULL);".into(),
    )
}

/// Lemmy's pattern: a migration that changes tenant tables and, on the
/// way, runs `CREATE EXTENSION` without `SCHEMA` (one with, one without
/// `IF NOT EXISTS`).
fn extension_migration() -> (String, Scope, String) {
    (
        "20240102000000".into(),
        Scope::Isolated,
        "CREATE EXTENSION IF NOT EXISTS ltree;
         ALTER TABLE docs ADD COLUMN path ltree;
         CREATE EXTENSION pg_trgm;
         CREATE INDEX docs_title_trgm ON docs USING gin (title gin_trgm_ops);"
            .into(),
    )
}

/// Where extension `name` lives (`pg_extension.extnamespace`), or nothing.
fn home_of(conn: &mut diesel::PgConnection, name: &str) -> Vec<String> {
    query_strings(
        conn,
        &format!(
            "SELECT extnamespace::regnamespace::text AS value FROM pg_extension WHERE extname = '{name}'"
        ),
    )
}

/// Writes and reads an `ltree` in `schema` through the tenant's path, and
/// uses the trigram index's operator class.
fn uses_the_extensions(conn: &mut diesel::PgConnection, schema: &str) {
    conn.batch_execute(&format!(
        "SET search_path TO \"{schema}\", public;
         DELETE FROM docs;
         INSERT INTO docs (title, path) VALUES ('hello', 'a.b.c');
         RESET search_path;"
    ))
    .unwrap_or_else(|e| panic!("{schema}: {e}"));
    assert_eq!(
        query_strings(
            conn,
            &format!(
                "SELECT nlevel(path)::text AS value FROM \"{schema}\".docs \
                 WHERE title % 'helo' AND path <@ 'a'"
            )
        ),
        ["3"],
        "{schema}"
    );
}

#[test]
fn an_extension_created_by_an_isolated_migration_lands_once_in_the_shared_schema_for_every_tenant()
{
    let (db, mut conn) = db_with_registry();
    let before = MigrationSet::from_parts([docs_table()]);
    let after = MigrationSet::from_parts([docs_table(), extension_migration()]);
    // Existing tenants and a spare, built before the migration was written.
    for name in ["a.test", "b.test", "c.test"] {
        create_tenant(&mut conn, &before, &new_tenant(name)).unwrap();
    }
    assert_eq!(ensure_spares(&mut conn, &before, 1).unwrap(), 1);
    let report = Migrator::new(db.url())
        .jobs(3)
        .schema_source("spares", Box::new(spare_schemas))
        .migrate(&after, &|_| {})
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(home_of(&mut conn, "ltree"), ["public"]);
    assert_eq!(home_of(&mut conn, "pg_trgm"), ["public"]);

    // New tenants by every source, and a clone.
    create_tenant(
        &mut conn,
        &after,
        &new_tenant("spare.test").source(Source::Spare),
    )
    .unwrap();
    create_tenant(&mut conn, &after, &new_tenant("m.test")).unwrap();
    let template = generate_template(&mut conn, db.url(), &after).unwrap();
    assert!(
        !template.to_string().contains("EXTENSION"),
        "a template holds no extension: {template}"
    );
    store_template(&mut conn, &template).unwrap();
    create_tenant(
        &mut conn,
        &after,
        &new_tenant("t.test").source(Source::Template),
    )
    .unwrap();
    assert_eq!(ensure_spares(&mut conn, &after, 1).unwrap(), 1);
    create_tenant(
        &mut conn,
        &after,
        &new_tenant("s.test").source(Source::Spare),
    )
    .unwrap();
    clone_tenant(
        &mut conn,
        &after,
        &public_name("a.test"),
        &new_tenant("clone.test"),
    )
    .unwrap();

    let schemas = [
        "a_test",
        "b_test",
        "c_test",
        "spare_test",
        "m_test",
        "t_test",
        "s_test",
        "clone_test",
    ];
    assert!(
        extensions_in_schemas(&mut conn, &schemas.map(String::from))
            .unwrap()
            .is_empty(),
        "an extension lives in a tenant schema"
    );
    for schema in schemas {
        uses_the_extensions(&mut conn, schema);
    }

    // The first tenant's schema goes; the extension stays for the others.
    drop_tenant(&mut conn, &public_name("a.test"), DropMode::Drop).unwrap();
    assert_eq!(home_of(&mut conn, "ltree"), ["public"]);
    uses_the_extensions(&mut conn, "b_test");
}

#[test]
fn an_extension_found_in_a_tenant_schema_is_reported_with_its_fix() {
    let (_db, mut conn) = db_with_registry();
    conn.batch_execute(
        "CREATE SCHEMA acme; CREATE EXTENSION ltree SCHEMA acme; CREATE EXTENSION pg_trgm",
    )
    .unwrap();
    let found = extensions_in_schemas(&mut conn, &["acme".into(), "other".into()]).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].extension.as_str(), found[0].schema.as_str()),
        ("ltree", "acme")
    );
    assert_eq!(
        found[0].fix("public"),
        r#"ALTER EXTENSION "ltree" SET SCHEMA "public""#
    );
}

/// Seed rows (Lemmy's languages), a trigger that counts inserts, a later
/// migration that deletes, updates and inserts seed rows.
fn seeded() -> MigrationSet {
    MigrationSet::from_parts([
        (
            "20240101000000",
            Scope::Isolated,
            "CREATE TABLE language_count (n int NOT NULL);
             INSERT INTO language_count VALUES (0);
             CREATE FUNCTION count_language() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN UPDATE language_count SET n = n + 1; RETURN NEW; END $$;
             CREATE TABLE language (id serial PRIMARY KEY, code text NOT NULL UNIQUE);
             CREATE TRIGGER language_counted AFTER INSERT ON language
                 FOR EACH ROW EXECUTE FUNCTION count_language();
             INSERT INTO language (code) VALUES ('und'), ('en'), ('fr'), ('de');
             CREATE TABLE post (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 language_id int NOT NULL DEFAULT 1 REFERENCES language (id));
             CREATE TABLE secret (jwt text NOT NULL);
             INSERT INTO secret VALUES ('s3cr3t');",
        ),
        (
            "20240102000000",
            Scope::Isolated,
            "DELETE FROM language WHERE code = 'fr';
             UPDATE language SET code = 'EN' WHERE code = 'en';
             INSERT INTO language (code) VALUES ('es');
             INSERT INTO post DEFAULT VALUES;",
        ),
    ])
}

/// Every row of the tenant's tables, and the next value of each sequence.
fn rows_of(conn: &mut diesel::PgConnection, schema: &str) -> Vec<String> {
    query_strings(
        conn,
        &format!(
            "SELECT 'language ' || coalesce(string_agg(id || '=' || code, ',' ORDER BY id), '') AS value
               FROM \"{schema}\".language
             UNION ALL SELECT 'count ' || coalesce(string_agg(n::text, ','), '') FROM \"{schema}\".language_count
             UNION ALL SELECT 'post ' || coalesce(string_agg(id || ':' || language_id, ',' ORDER BY id), '')
               FROM \"{schema}\".post
             UNION ALL SELECT 'secret ' || coalesce(string_agg(jwt, ','), '') FROM \"{schema}\".secret"
        ),
    )
}

/// Inserts a language and a post the way the application would; their ids
/// come from the sequences.
fn next_ids(conn: &mut diesel::PgConnection, schema: &str) -> Vec<String> {
    conn.batch_execute(&format!("SET search_path TO \"{schema}\", public"))
        .unwrap();
    let ids = query_strings(
        conn,
        "WITH l AS (INSERT INTO language (code) VALUES ('it') RETURNING id)
         SELECT 'language ' || id AS value FROM l
         UNION ALL SELECT 'post ' || nextval(pg_get_serial_sequence('post', 'id'))",
    );
    conn.batch_execute("RESET search_path").unwrap();
    ids
}

#[test]
fn the_template_carries_the_rows_its_migrations_inserted_updated_and_deleted() {
    let (db, mut conn) = db_with_registry();
    let m = seeded();
    create_tenant(&mut conn, &m, &new_tenant("m.test")).unwrap();
    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    store_template(&mut conn, &template).unwrap();
    create_tenant(
        &mut conn,
        &m,
        &new_tenant("t.test").source(Source::Template),
    )
    .unwrap();
    assert_eq!(ensure_spares(&mut conn, &m, 1).unwrap(), 1);
    create_tenant(&mut conn, &m, &new_tenant("s.test").source(Source::Spare)).unwrap();
    let fallback =
        create_tenant(&mut conn, &m, &new_tenant("f.test").source(Source::Spare)).unwrap();
    assert_eq!(fallback.source, Source::Template);
    clone_tenant(&mut conn, &m, &public_name("m.test"), &new_tenant("c.test")).unwrap();

    let expected = rows_of(&mut conn, "m_test");
    assert_eq!(
        expected,
        [
            "language 1=und,2=EN,4=de,5=es",
            "count 5",
            "post 1:1",
            "secret s3cr3t"
        ]
    );
    for schema in ["t_test", "s_test", "f_test", "c_test"] {
        assert_eq!(rows_of(&mut conn, schema), expected, "{schema}");
    }
    let expected = next_ids(&mut conn, "m_test");
    assert_eq!(expected, ["language 6", "post 2"]);
    for schema in ["t_test", "s_test", "f_test", "c_test"] {
        assert_eq!(next_ids(&mut conn, schema), expected, "{schema}");
        // The trigger came with the template, after its rows.
        assert_eq!(
            query_strings(
                &mut conn,
                &format!("SELECT n::text AS value FROM \"{schema}\".language_count")
            ),
            ["6"],
            "{schema}"
        );
    }
}

/// Two tenants created at once, each in its own open transaction, by a
/// migration that installs an extension: the second waits for the first
/// and then finds the extension installed, instead of failing on the
/// catalog's unique index when the first commits.
#[test]
fn tenants_created_at_once_install_the_extension_once_without_failing() {
    use appschema_core::migrate::migrate_schema_in_transaction;
    use appschema_core::SchemaName;
    use diesel::Connection;

    let (db, mut first) = db_with_registry();
    let set = MigrationSet::from_parts([(
        "20240101000000",
        Scope::Isolated,
        "CREATE EXTENSION citext; CREATE TABLE account (email citext PRIMARY KEY);",
    )]);
    let begin = |conn: &mut diesel::PgConnection, schema: &str| {
        conn.batch_execute(&format!("BEGIN; CREATE SCHEMA {schema}"))
            .unwrap();
        migrate_schema_in_transaction(conn, &SchemaName::new(schema).unwrap(), &set)
    };
    begin(&mut first, "first").unwrap();
    let mut second = db.conn();
    let second_pid = query_strings(&mut second, "SELECT pg_backend_pid()::text AS value");
    let second_result = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let result = begin(&mut second, "second");
            second.batch_execute("COMMIT").unwrap();
            result
        });
        // The second is waiting for the first (on a lock), then the first
        // commits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut watcher = diesel::PgConnection::establish(db.url()).unwrap();
        loop {
            let blocked = query_strings(
                &mut watcher,
                &format!(
                    "SELECT wait_event_type AS value FROM pg_stat_activity \
                     WHERE pid = {} AND wait_event_type = 'Lock'",
                    second_pid[0]
                ),
            );
            if !blocked.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the second never waited"
            );
            std::thread::yield_now();
        }
        first.batch_execute("COMMIT").unwrap();
        waiting.join().unwrap()
    });
    second_result.unwrap();
    assert_eq!(home_of(&mut first, "citext"), ["public"]);
    first
        .batch_execute(
            "INSERT INTO second.account VALUES ('A@x'); INSERT INTO first.account VALUES ('a@X')",
        )
        .unwrap();
}
