//! Exporting a tenant and importing it into another database, against a
//! real PostgreSQL: the catalog and the rows come back the same, and every
//! refused import leaves the target as it was.

use appschema_core::provision::{
    drop_tenant, export_tenant, import_tenant, DropMode, ImportOptions, Imported, ProvisionError,
    TransferError,
};
use appschema_core::{registry, MigrationSet, PublicName, SchemaName};
use appschema_tempdb::TestDb;
use appschema_testkit::provisioning;
use appschema_testkit::provisioning::{
    app_migrations, app_migrations_but_the_last, create_named, db_with_registry, describe_schema,
    leaving_the_catalog_unchanged, new_tenant, public_name, query_strings,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// A source database with tenant `acme.test` (schema `acme_test`, alias
/// `acme.example`) built by [`app_migrations`], then given objects the
/// migrations do not have (a view, a materialized view, a partitioned
/// table, a foreign-key cycle, an enum, a `LANGUAGE sql` function, a
/// sequence of its own) and rows, including awkward values.
fn source_with_acme() -> (TestDb, PgConnection) {
    let (db, mut conn) = db_with_registry();
    let created = create_named(&mut conn, &app_migrations(), "acme.test");
    registry::add_alias(&mut conn, &created.tenant, &public_name("acme.example")).unwrap();
    conn.batch_execute(
        r#"SET search_path = acme_test;
        CREATE TYPE mood AS ENUM ('sad', 'happy');
        CREATE TABLE notes (id bigserial PRIMARY KEY, body text, mood mood, tags text[], seen timestamptz,
                            parent_id bigint REFERENCES notes (id));
        CREATE TABLE a (id int PRIMARY KEY, b_id int);
        CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id));
        ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b (id);
        CREATE TABLE events (id int, at date NOT NULL, what text) PARTITION BY RANGE (at);
        CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE SEQUENCE invoice_no START 1000;
        CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
        CREATE MATERIALIZED VIEW order_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY 1;
        CREATE FUNCTION note_count() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM notes; END;
        INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 50) g;
        INSERT INTO orders (customer_id, total) SELECT 1 + g % 50, g FROM generate_series(1, 500) g;
        INSERT INTO notes (body, mood, tags, seen) VALUES
            (E'tab\there, newline\nthere, backslash \\ and quote '' "', 'happy', '{a,"b c",NULL}', '2024-02-29 12:00:00+00'),
            (NULL, NULL, NULL, NULL), ('ünïcødé ✓', 'sad', '{}', 'infinity'),
            (repeat('a row larger than a data record ', 20000), NULL, NULL, NULL);
        UPDATE notes SET parent_id = 1 WHERE id > 1;
        INSERT INTO a VALUES (1, NULL), (2, NULL);
        INSERT INTO b VALUES (1, 1), (2, 2);
        UPDATE a SET b_id = 3 - id;
        INSERT INTO events SELECT g, DATE '2024-10-01' + g, 'e' || g FROM generate_series(1, 200) g;
        SELECT nextval('invoice_no'), nextval('invoice_no');
        REFRESH MATERIALIZED VIEW order_totals;
        RESET search_path;"#,
    )
    .unwrap();
    (db, conn)
}

fn export(conn: &mut PgConnection, url: &str, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    export_tenant(conn, url, &public_name(name), &mut out, |_| {}).unwrap();
    out
}

fn import(
    conn: &mut PgConnection,
    migrations: &MigrationSet,
    bytes: &[u8],
    options: &ImportOptions,
) -> Result<Imported, TransferError> {
    import_tenant(conn, migrations, bytes, options, |_| {})
}

/// The catalog of `schema` as [`describe_schema`] sees it, plus its views'
/// definitions, types, partitions and sequences' values.
fn catalog(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    let mut out = describe_schema(conn, schema);
    let q = appschema_core::quote_ident(schema);
    out.extend(query_strings(
        conn,
        &format!(
            "SELECT 'view ' || c.relname || ' ' || c.relkind::text || ' populated=' || c.relispopulated
                    || ' ' || replace(pg_get_viewdef(c.oid), '{schema}.', '') AS value
               FROM pg_class c WHERE c.relnamespace = '{q}'::regnamespace AND c.relkind IN ('v', 'm')
             UNION ALL
             SELECT 'type ' || t.typname || ' ' || coalesce((SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                                                    FROM pg_enum WHERE enumtypid = t.oid), '')
               FROM pg_type t WHERE t.typnamespace = '{q}'::regnamespace AND t.typtype = 'e'
             UNION ALL
             SELECT 'partition ' || c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
               FROM pg_class c WHERE c.relnamespace = '{q}'::regnamespace AND c.relispartition
             UNION ALL
             SELECT 'sequence value ' || sequencename || ' ' || coalesce(last_value::text, 'unset')
               FROM pg_sequences WHERE schemaname = '{schema}'
             ORDER BY 1"
        ),
    ));
    out
}

/// Every row of every table and materialized view of `schema`, as text, by
/// table, in a stable order.
fn rows(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    let q = appschema_core::quote_ident(schema);
    let tables = query_strings(
        conn,
        &format!(
            "SELECT quote_ident(relname) AS value FROM pg_class
              WHERE relnamespace = '{q}'::regnamespace AND relkind IN ('r', 'm') ORDER BY relname"
        ),
    );
    let mut out = Vec::new();
    for table in tables {
        let mut rows = query_strings(
            conn,
            &format!("SELECT t::text AS value FROM {q}.{table} t ORDER BY 1"),
        );
        rows.insert(0, format!("-- {table}: {} rows", rows.len()));
        out.extend(rows);
    }
    out
}

#[test]
fn an_exported_tenant_imports_into_another_database_with_the_same_catalog_and_rows() {
    let (source_db, mut source) = source_with_acme();
    let mut tables_seen = Vec::new();
    let mut bytes = Vec::new();
    let exported = export_tenant(
        &mut source,
        source_db.url(),
        &public_name("acme.example"), // an alias names the tenant too
        &mut bytes,
        |t| tables_seen.push((t.table.clone(), t.rows)),
    )
    .unwrap();
    assert_eq!(exported.public_name, "acme.test");
    assert_eq!(exported.head.as_deref(), Some("20240102000000"));
    assert!(
        tables_seen.contains(&("orders".to_string(), 500)),
        "{tables_seen:?}"
    );
    assert!(
        tables_seen.contains(&("events_2025".to_string(), 109)),
        "{tables_seen:?}"
    );
    // Nothing in the file names the source schema, except its own record.
    let text = String::from_utf8_lossy(&bytes);
    // The note of 640 KB is cut across data records of 256 KiB.
    assert!(text.matches("\ndata 262144\n").count() >= 2);
    let mentions: Vec<_> = text
        .match_indices("acme_test")
        .map(|(i, _)| &text[i.saturating_sub(80)..i + 20])
        .collect();
    assert_eq!(mentions.len(), 1, "{mentions:#?}");

    let (_target_db, mut target) = db_with_registry();
    let imported = import(
        &mut target,
        &app_migrations(),
        &bytes,
        &ImportOptions::new(),
    )
    .unwrap();
    assert_eq!(imported.tenant.public_name, "acme.test");
    assert_eq!(imported.tenant.schema_name.as_str(), "acme_test");
    assert_eq!(imported.tables.len(), exported.tables.len());
    assert_eq!(
        registry::find(&mut target, &public_name("acme.example"))
            .unwrap()
            .map(|t| t.schema_name.to_string()),
        Some("acme_test".to_string()),
        "the alias comes along"
    );
    assert_eq!(
        catalog(&mut target, "acme_test"),
        catalog(&mut source, "acme_test")
    );
    assert_eq!(
        rows(&mut target, "acme_test"),
        rows(&mut source, "acme_test")
    );

    // The tenant works: the next order takes the next id, the trigger
    // (off during the load) adds its fee, the sequence goes on.
    target
        .batch_execute("SET search_path = acme_test; INSERT INTO orders (customer_id, total) VALUES (1, 1); RESET search_path;")
        .unwrap();
    assert_eq!(
        query_strings(
            &mut target,
            "SELECT id || ' ' || total || ' ' || nextval('acme_test.invoice_no') AS value
               FROM acme_test.orders ORDER BY id DESC LIMIT 1"
        ),
        ["501 1001 1002"]
    );
}

#[test]
fn an_import_under_another_public_name_and_schema_leaves_the_aliases_behind() {
    let (source_db, mut source) = source_with_acme();
    let bytes = export(&mut source, source_db.url(), "acme.test");
    // Imported twice into the same database: the copy needs other names.
    let (_target_db, mut target) = db_with_registry();
    import(
        &mut target,
        &app_migrations(),
        &bytes,
        &ImportOptions::new(),
    )
    .unwrap();
    let options = ImportOptions::new()
        .public_name(public_name("acme-copy.test"))
        .schema(SchemaName::new("acme_copy").unwrap());
    let imported = import(&mut target, &app_migrations(), &bytes, &options).unwrap();
    assert_eq!(imported.tenant.schema_name.as_str(), "acme_copy");
    assert_eq!(
        query_strings(
            &mut target,
            "SELECT n.public_name AS value FROM public.appschema_public_names n
               JOIN public.appschema_tenants t ON t.id = n.tenant_id
              WHERE t.schema_name = 'acme_copy'"
        ),
        ["acme-copy.test"]
    );
    assert_eq!(
        catalog(&mut target, "acme_copy"),
        catalog(&mut source, "acme_test")
    );
    assert_eq!(
        rows(&mut target, "acme_copy"),
        rows(&mut source, "acme_test")
    );
    // A derived schema name moves on past taken ones.
    let options = ImportOptions::new().public_name(public_name("acme.test.x"));
    target.batch_execute("CREATE SCHEMA acme_test_x").unwrap();
    let imported = import(&mut target, &app_migrations(), &bytes, &options).unwrap();
    assert_eq!(imported.tenant.schema_name.as_str(), "acme_test_x_2");
}

/// The target every refusal test starts from: tenant `acme.test` exported
/// from a source database, and a target with tenants `b.test` (alias
/// `acme.example`) and `c.test` (dropped: its schema name `c_test` is
/// retired).
fn export_and_busy_target() -> (Vec<u8>, TestDb, PgConnection) {
    let (source_db, mut source) = source_with_acme();
    let bytes = export(&mut source, source_db.url(), "acme.test");
    let (target_db, mut target) = db_with_registry();
    let b = create_named(&mut target, &app_migrations(), "b.test");
    registry::add_alias(&mut target, &b.tenant, &public_name("acme.example")).unwrap();
    create_named(&mut target, &app_migrations(), "c.test");
    drop_tenant(&mut target, &public_name("c.test"), DropMode::Drop).unwrap();
    (bytes, target_db, target)
}

fn refused(conn: &mut PgConnection, bytes: &[u8], options: &ImportOptions) -> TransferError {
    leaving_the_catalog_unchanged(conn, |conn| {
        import(conn, &app_migrations(), bytes, options).unwrap_err()
    })
}

#[test]
fn a_taken_or_retired_name_refuses_the_import_and_leaves_the_target_unchanged() {
    let (bytes, _db, mut target) = export_and_busy_target();
    let as_name = |n: &str| ImportOptions::new().public_name(public_name(n));
    let schema = |s: &str| SchemaName::new(s).unwrap();
    // The exported alias belongs to b.test here.
    let e = refused(&mut target, &bytes, &ImportOptions::new());
    assert!(
        matches!(&e, TransferError::Provision(ProvisionError::TenantExists { public_name }) if public_name == "acme.example"),
        "{e}"
    );
    let e = refused(&mut target, &bytes, &as_name("b.test"));
    assert!(
        matches!(
            e,
            TransferError::Provision(ProvisionError::TenantExists { .. })
        ),
        "{e}"
    );
    let e = refused(
        &mut target,
        &bytes,
        &as_name("new.test").schema(schema("b_test")),
    );
    assert!(
        matches!(
            e,
            TransferError::Provision(ProvisionError::SchemaExists { .. })
        ),
        "{e}"
    );
    let e = refused(
        &mut target,
        &bytes,
        &as_name("new.test").schema(schema("c_test")),
    );
    assert!(
        matches!(
            e,
            TransferError::Provision(ProvisionError::SchemaRetired { .. })
        ),
        "{e}"
    );
    target.batch_execute("CREATE SCHEMA loose").unwrap();
    let e = refused(
        &mut target,
        &bytes,
        &as_name("new.test").schema(schema("loose")),
    );
    assert!(
        matches!(
            e,
            TransferError::Provision(ProvisionError::SchemaExists { .. })
        ),
        "{e}"
    );
    // The rows it would have loaded went nowhere either.
    assert!(
        query_strings(
            &mut target,
            "SELECT schema_name AS value FROM public.appschema_tenants ORDER BY 1"
        ) == ["b_test"]
    );
}

#[test]
fn a_truncated_export_refuses_the_import_and_leaves_the_target_unchanged() {
    let (bytes, _db, mut target) = export_and_busy_target();
    let options = ImportOptions::new().public_name(public_name("new.test"));
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let in_data = text.find("\ndata ").unwrap() + 40;
    let before_post_data = text.find("\npost_data ").unwrap() + 1;
    let before_end = text.rfind("\nend ").unwrap() + 1;
    for cut in [
        30,
        before_post_data,
        in_data,
        bytes.len() / 2,
        before_end,
        bytes.len() - 1,
    ] {
        let e = refused(&mut target, &bytes[..cut], &options);
        assert!(matches!(e, TransferError::Corrupt(_)), "cut at {cut}: {e}");
    }
    // The whole file imports: the cuts alone were the problem.
    import(&mut target, &app_migrations(), &bytes, &options).unwrap();
}

/// `bytes` (an export whose body was edited) with its `end` record
/// rewritten to the checksum of the edited body.
fn with_checksum_fixed(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - "end 8\n00000000\n".len();
    assert!(bytes[end..].starts_with(b"end 8\n"));
    bytes.truncate(end);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(format!("end 8\n{crc:08x}\n").as_bytes());
    bytes
}

#[test]
fn a_damaged_export_refuses_the_import_and_leaves_the_target_unchanged() {
    let (bytes, _db, mut target) = export_and_busy_target();
    let options = ImportOptions::new().public_name(public_name("new.test"));
    // One changed digit in an order's total: valid COPY text, valid DDL, so
    // only the checksum can tell.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = text.find("\t1500\n").unwrap() + 1;
    let mut damaged = bytes.clone();
    damaged[at] = b'9';
    let e = refused(&mut target, &damaged, &options);
    assert!(
        matches!(&e, TransferError::Corrupt(why) if why.contains("checksum")),
        "{e}"
    );
    // A row count that does not match the rows, the checksum made right:
    // the rows a file holds are the rows it says it holds.
    let miscounted = with_checksum_fixed(
        text.replacen("rows 3\n500\n", "rows 3\n499\n", 1)
            .into_bytes(),
    );
    assert_ne!(miscounted, bytes);
    let e = refused(&mut target, &miscounted, &options);
    assert!(
        matches!(&e, TransferError::Corrupt(why) if why.contains("should hold 499 rows but 500")),
        "{e}"
    );
    let e = refused(
        &mut target,
        &b"appschema tenant export\nformat 7\n"[..],
        &options,
    );
    assert!(
        matches!(&e, TransferError::UnsupportedFormat { found } if found == "7"),
        "{e}"
    );
    assert!(e.to_string().contains("format 7"), "{e}");
    let e = refused(&mut target, b"PGDMP\x01\x0e", &options);
    assert!(matches!(e, TransferError::NotAnExport), "{e}");
}

#[test]
fn an_export_at_another_migration_head_is_refused_naming_both_heads() {
    let (bytes, _db, mut target) = export_and_busy_target();
    let options = ImportOptions::new().public_name(public_name("new.test"));
    let e = leaving_the_catalog_unchanged(&mut target, |conn| {
        import(conn, &app_migrations_but_the_last(), &bytes, &options).unwrap_err()
    });
    match &e {
        TransferError::HeadMismatch { export, target } => {
            assert_eq!(
                (export.as_str(), target.as_str()),
                ("20240102000000", "20240101000000")
            )
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("appschema-cli migrate"), "{e}");
}

#[test]
fn exporting_an_unknown_tenant_names_it() {
    let (db, mut conn) = db_with_registry();
    let e = export_tenant(
        &mut conn,
        db.url(),
        &public_name("nobody.test"),
        Vec::new(),
        |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&e, TransferError::Provision(ProvisionError::UnknownTenant { public_name }) if public_name == "nobody.test"),
        "{e}"
    );
    let _ = new_tenant("x.test");
    let _ = PublicName::new("x.test");
}

#[test]
fn a_target_lacking_shared_migrations_is_refused_saying_to_migrate() {
    let (bytes, _db, mut target) = export_and_busy_target();
    // The same isolated history, after a shared migration the target has
    // not applied.
    let mut parts = vec![(
        "20231231000000".to_string(),
        appschema_core::Scope::Shared,
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY);".to_string(),
    )];
    parts.extend(
        provisioning::app_parts()
            .into_iter()
            .map(|(v, sql)| (v, appschema_core::Scope::Isolated, sql)),
    );
    let with_shared = MigrationSet::from_parts(parts);
    let options = ImportOptions::new().public_name(public_name("new.test"));
    let e = leaving_the_catalog_unchanged(&mut target, |conn| {
        import(conn, &with_shared, &bytes, &options).unwrap_err()
    });
    assert!(
        matches!(&e, TransferError::TargetBehind { pending: 1, first } if first == "20231231000000"),
        "{e}"
    );
    assert!(e.to_string().contains("run `appschema-cli migrate`"), "{e}");
}
