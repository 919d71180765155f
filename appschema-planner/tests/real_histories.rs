//! Real applications' histories (`tests/fixtures/<name>`, each with an
//! `UPSTREAM.md`: Lemmy, reduced to a subset whose tenant migrations create
//! extensions, insert seed rows and add triggers; vaultwarden's first 36
//! PostgreSQL migrations), every table marked isolated. For each, tenants
//! are built every way — `migrate` on two existing tenants, the migrations
//! at creation, the template, a spare, a spare claim falling back to the
//! template — and must hold one catalog **and the same rows**.

use appschema_core::migrate::{extensions_in_schemas, Migrator};
use appschema_core::provision::{
    create_tenant, ensure_spares, generate_template, spare_schemas, store_template, Source,
};
use appschema_core::{registry, MigrationSet, Scope};
use appschema_tempdb::TestDb;
use appschema_testkit::history::{diff, diff_lines, history, normalized_dump, request, strings};
use diesel::prelude::*;

/// Every row of every table of `schema` (but the tracking table's), sorted,
/// and every sequence's state. A column whose default is a value of the
/// moment (`now()`, `gen_random_uuid()`) is shown as `*`: a tenant built by
/// its migrations draws its own, one built from the template or a spare
/// holds the value drawn when that was built.
fn rows(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    let tables = strings(
        conn,
        &format!(
            "SELECT c.relname::text AS value FROM pg_class c
              WHERE c.relnamespace = '\"{schema}\"'::regnamespace AND c.relkind IN ('r', 'p')
                AND c.relname <> '__diesel_schema_migrations' ORDER BY 1"
        ),
    );
    let mut out = Vec::new();
    for table in tables {
        let columns = strings(
            conn,
            &format!(
                "SELECT CASE WHEN pg_get_expr(d.adbin, d.adrelid) ~* '(now|random|uuid|timestamp)'
                             THEN '''*''' ELSE quote_ident(a.attname) END AS value
                   FROM pg_attribute a LEFT JOIN pg_attrdef d
                     ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = '\"{schema}\".\"{table}\"'::regclass
                    AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
            ),
        );
        out.push(format!("table {table}"));
        out.extend(strings(
            conn,
            &format!(
                "SELECT row({})::text AS value FROM \"{schema}\".\"{table}\" ORDER BY 1",
                columns.join(", ")
            ),
        ));
    }
    for seq in strings(
        conn,
        &format!(
            "SELECT relname::text AS value FROM pg_class
              WHERE relnamespace = '\"{schema}\"'::regnamespace AND relkind = 'S' ORDER BY 1"
        ),
    ) {
        out.extend(strings(
            conn,
            &format!(
                "SELECT '{seq} ' || last_value || ' ' || is_called AS value FROM \"{schema}\".\"{seq}\""
            ),
        ));
    }
    out
}

/// Builds tenants of `set` every way in a fresh database and checks they
/// hold one catalog and the same rows; returns the rows of the first and
/// the template's text.
fn every_way_gives_one_catalog_and_the_same_rows(set: &MigrationSet) -> (Vec<String>, String) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    assert!(set
        .migrations()
        .iter()
        .all(|m| m.scope() == Scope::Isolated));

    // Tenants (and a spare) that exist before the history: `migrate`
    // builds them, two workers at once.
    for (name, schema) in [
        ("old.example", "by_migrate"),
        ("old2.example", "by_migrate_2"),
    ] {
        create_tenant(
            &mut conn,
            &MigrationSet::default(),
            &request(name, schema, Source::Migrations),
        )
        .unwrap();
    }
    let report = Migrator::new(db.url())
        .jobs(2)
        .schema_source("spares", Box::new(spare_schemas))
        .migrate(set, &|_| {})
        .unwrap();
    assert!(report.is_success(), "{report:?}");

    let created = create_tenant(
        &mut conn,
        set,
        &request("m.example", "by_migrations", Source::Migrations),
    )
    .unwrap();
    assert_eq!(created.source, Source::Migrations);
    let template = generate_template(&mut conn, db.url(), set).unwrap();
    store_template(&mut conn, &template).unwrap();
    let created = create_tenant(
        &mut conn,
        set,
        &request("t.example", "by_template", Source::Template),
    )
    .unwrap();
    assert_eq!(created.source, Source::Template);
    assert_eq!(ensure_spares(&mut conn, set, 1).unwrap(), 1);
    let created = create_tenant(
        &mut conn,
        set,
        &request("s.example", "by_spare", Source::Spare),
    )
    .unwrap();
    assert_eq!(created.source, Source::Spare);
    let created = create_tenant(
        &mut conn,
        set,
        &request("s2.example", "by_spare_fallback", Source::Spare),
    )
    .unwrap();
    assert_eq!(created.source, Source::Template);

    let schemas = [
        "by_migrate",
        "by_migrate_2",
        "by_migrations",
        "by_template",
        "by_spare",
        "by_spare_fallback",
    ];
    assert_eq!(
        extensions_in_schemas(&mut conn, &schemas.map(String::from)).unwrap(),
        [],
        "an extension was installed in a tenant schema"
    );
    let catalog = normalized_dump(db.url(), schemas[0]);
    let expected = rows(&mut conn, schemas[0]);
    for schema in &schemas[1..] {
        let got = normalized_dump(db.url(), schema);
        assert!(
            got == catalog,
            "`{schema}`'s catalog differs from the tenant built by migrate:\n{}",
            diff_lines(&catalog, &got)
        );
        let got = rows(&mut conn, schema);
        assert!(
            got == expected,
            "`{schema}`'s rows differ from the tenant built by migrate:\n{}",
            diff(&expected, &got)
        );
    }
    (expected, template.to_string())
}

#[test]
fn lemmy_tenants_built_every_way_share_the_extensions_and_hold_the_same_seed_rows() {
    let set = history("lemmy");
    assert_eq!(set.migrations().len(), 9);
    let (rows, template) = every_way_gives_one_catalog_and_the_same_rows(&set);
    // The rows came from the seed schema, not from the template's text.
    assert!(
        template.contains("\n-- seed: appschema_seed_"),
        "{template}"
    );
    assert!(
        !template.contains("Afaraf"),
        "seed rows in the template's text"
    );
    // The seeds Lemmy's migrations insert: the admin, 26 categories, the
    // default community, a secret, 184 languages (id 0 to 183).
    let count = |table: &str| {
        let start = rows
            .iter()
            .position(|r| r == &format!("table {table}"))
            .unwrap();
        rows[start + 1..]
            .iter()
            .take_while(|r| !r.starts_with("table "))
            .count()
    };
    assert_eq!(
        [
            count("user_"),
            count("category"),
            count("community"),
            count("secret"),
            count("language")
        ],
        [1, 26, 1, 1, 184]
    );
    assert!(
        rows.contains(&"language_id_seq 183 true".to_string()),
        "{rows:#?}"
    );
}

#[test]
fn vaultwarden_tenants_built_every_way_have_one_catalog_and_the_same_rows() {
    let set = history("vaultwarden");
    assert_eq!(set.migrations().len(), 36);
    every_way_gives_one_catalog_and_the_same_rows(&set);
}
