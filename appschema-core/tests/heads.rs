//! Recorded heads (`public.appschema_heads`): a run with nothing pending
//! reads no tenant's tracking table, and a record is trusted only while it
//! describes the very tracking table it was written for.

use appschema_core::migrate::{migrate_schema_in_transaction, Migrator, Report};
use appschema_core::{registry, Migration, MigrationSet, PublicName, SchemaName, Scope};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

fn versions(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    diesel::sql_query(format!(
        "SELECT version::text AS version FROM \"{schema}\".__diesel_schema_migrations ORDER BY version"
    ))
    .load::<Version>(conn)
    .unwrap()
    .into_iter()
    .map(|v| v.version)
    .collect()
}

/// Registers tenants `t0..tn` with empty schemas.
fn tenants(conn: &mut PgConnection, n: usize) {
    registry::install(conn).unwrap();
    for i in 0..n {
        let schema = format!("t{i}");
        conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        registry::insert(
            conn,
            &PublicName::new(&format!("t{i}.example.com")).unwrap(),
            &SchemaName::new(&schema).unwrap(),
        )
        .unwrap();
    }
}

fn base() -> Vec<Migration> {
    vec![
        Migration::new(
            "001",
            "001_plans",
            Scope::Shared,
            "CREATE TABLE plans (id bigserial PRIMARY KEY)",
        ),
        Migration::new(
            "002",
            "002_orders",
            Scope::Isolated,
            "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES plans (id))",
        ),
        Migration::new(
            "003",
            "003_note",
            Scope::Isolated,
            "ALTER TABLE orders ADD COLUMN note text",
        ),
    ]
}

fn with(extra: Migration) -> MigrationSet {
    let mut all = base();
    all.push(extra);
    MigrationSet::new(all)
}

fn migrate(db: &TestDb, set: &MigrationSet) -> Report {
    let report = Migrator::new(db.url())
        .jobs(2)
        .migrate(set, &|_| {})
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    report
}

/// The check every record must pass: its digest is the digest of what its
/// tracking table holds, and it names that table.
fn assert_records_describe_their_tables(conn: &mut PgConnection) {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        schema_name: String,
    }
    let names: Vec<String> =
        diesel::sql_query("SELECT schema_name FROM public.appschema_heads ORDER BY 1")
            .load::<Name>(conn)
            .unwrap()
            .into_iter()
            .map(|n| n.schema_name)
            .collect();
    for schema in names {
        let digest_matches = count(
            conn,
            &format!(
                "SELECT count(*) AS n FROM public.appschema_heads h
                  WHERE h.schema_name = '{schema}'
                    AND h.tracking_oid = '\"{schema}\".__diesel_schema_migrations'::regclass
                    AND h.digest = (SELECT md5(coalesce(string_agg(version, ',' ORDER BY version COLLATE \"C\"), ''))
                                      FROM \"{schema}\".__diesel_schema_migrations)"
            ),
        );
        assert_eq!(
            digest_matches, 1,
            "the record of {schema} describes its table"
        );
    }
}

#[test]
fn a_run_with_nothing_pending_reads_no_tracking_table_once_heads_are_recorded() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 12);
    let set = MigrationSet::new(base());
    let first = migrate(&db, &set);
    assert_eq!(first.migrations_applied, 1 + 12 * 2);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_heads"
        ),
        12,
        "each tenant's migration recorded its head"
    );
    assert_records_describe_their_tables(&mut conn);

    let again = migrate(&db, &set);
    assert_eq!(again.migrations_applied, 0);
    assert_eq!(
        again.tracking_tables_read, 0,
        "nothing pending: nothing read"
    );

    // `status` and `plan` answer from the records too, and right.
    let statuses = Migrator::new(db.url()).status(&set).unwrap();
    assert_eq!(statuses.len(), 13);
    for s in &statuses {
        assert!(s.pending.is_empty(), "{s:?}");
    }
    let tenant = statuses.iter().find(|s| s.schema == "t4").unwrap();
    assert_eq!(tenant.applied, ["002", "003"]);
    assert!(Migrator::new(db.url()).plan(&set).unwrap().is_empty());

    // A new isolated migration: every record is behind it, so every tenant
    // is read and migrated, and recorded at the new head.
    let next = with(Migration::new(
        "004",
        "004_due",
        Scope::Isolated,
        "ALTER TABLE orders ADD COLUMN due date",
    ));
    let plan = Migrator::new(db.url()).plan(&next).unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].schemas.len(), 12);
    let applied = migrate(&db, &next);
    assert_eq!(applied.migrations_applied, 12);
    assert_eq!(applied.tracking_tables_read, 12);
    assert_records_describe_their_tables(&mut conn);
    assert_eq!(migrate(&db, &next).tracking_tables_read, 0);
}

#[test]
fn a_schema_without_a_record_is_read_and_then_recorded() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 6);
    let set = MigrationSet::new(base());
    migrate(&db, &set);
    // As a schema migrated by an appschema that recorded nothing, or made
    // from a template: no record.
    conn.batch_execute("DELETE FROM public.appschema_heads WHERE schema_name IN ('t1', 't4')")
        .unwrap();
    let statuses = Migrator::new(db.url()).status(&set).unwrap();
    assert!(statuses.iter().all(|s| s.pending.is_empty()));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_heads"
        ),
        4,
        "status records nothing"
    );
    let report = migrate(&db, &set);
    assert_eq!(report.tracking_tables_read, 2);
    assert_eq!(report.migrations_applied, 0);
    assert_records_describe_their_tables(&mut conn);
    assert_eq!(migrate(&db, &set).tracking_tables_read, 0);
}

#[test]
fn a_record_is_never_trusted_for_another_tracking_table() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 4);
    let set = MigrationSet::new(base());
    migrate(&db, &set);
    // t2 is dropped and made again by hand, empty, under the same name; its
    // old record (same schema name, full digest) stays behind.
    conn.batch_execute(
        "DROP SCHEMA t2 CASCADE; CREATE SCHEMA t2;
         CREATE TABLE t2.__diesel_schema_migrations (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_heads WHERE schema_name = 't2'"
        ),
        1
    );
    let status = Migrator::new(db.url()).status(&set).unwrap();
    let t2 = status.iter().find(|s| s.schema == "t2").unwrap();
    assert_eq!(t2.pending, ["002_orders", "003_note"]);

    let report = migrate(&db, &set);
    assert_eq!(report.tracking_tables_read, 1);
    assert_eq!(report.migrations_applied, 2, "t2 is migrated from scratch");
    assert_eq!(versions(&mut conn, "t2"), ["002", "003"]);
    assert_records_describe_their_tables(&mut conn);
}

#[test]
fn a_failed_migration_leaves_the_record_as_it_was_and_the_fix_is_applied() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 4);
    migrate(&db, &MigrationSet::new(base()));
    // t3 already has the column the next migration adds: it fails there.
    conn.batch_execute("ALTER TABLE t3.orders ADD COLUMN due date")
        .unwrap();
    let next = with(Migration::new(
        "004",
        "004_due",
        Scope::Isolated,
        "ALTER TABLE orders ADD COLUMN due date",
    ));
    let report = Migrator::new(db.url()).migrate(&next, &|_| {}).unwrap();
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].schema, "t3");
    assert_eq!(versions(&mut conn, "t3"), ["002", "003"]);
    assert_records_describe_their_tables(&mut conn);

    conn.batch_execute("ALTER TABLE t3.orders DROP COLUMN due")
        .unwrap();
    let fixed = migrate(&db, &next);
    assert_eq!(fixed.migrations_applied, 1);
    assert_eq!(versions(&mut conn, "t3"), ["002", "003", "004"]);
    assert_eq!(migrate(&db, &next).tracking_tables_read, 0);
}

#[test]
fn recheck_finds_a_version_removed_behind_appschemas_back() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 3);
    let set = MigrationSet::new(base());
    migrate(&db, &set);
    // What diesel CLI's `migration revert` does to one tenant: the down
    // migration, then the tracking row deleted. Recorded heads cannot see
    // it (documented): the record still says 003.
    conn.batch_execute(
        "ALTER TABLE t1.orders DROP COLUMN note;
         DELETE FROM t1.__diesel_schema_migrations WHERE version = '003'",
    )
    .unwrap();
    let trusted = Migrator::new(db.url()).status(&set).unwrap();
    assert!(trusted.iter().all(|s| s.pending.is_empty()));

    let status = Migrator::new(db.url()).recheck(true).status(&set).unwrap();
    let t1 = status.iter().find(|s| s.schema == "t1").unwrap();
    assert_eq!(t1.pending, ["003_note"]);
    let report = Migrator::new(db.url())
        .recheck(true)
        .migrate(&set, &|_| {})
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(report.tracking_tables_read, 3);
    assert_eq!(report.migrations_applied, 1);
    assert_eq!(versions(&mut conn, "t1"), ["002", "003"]);
    assert_records_describe_their_tables(&mut conn);
    assert_eq!(migrate(&db, &set).tracking_tables_read, 0);
}

#[test]
fn migrations_outside_a_transaction_record_their_head_too() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 3);
    let mut all = base();
    all.push(
        Migration::new(
            "004",
            "004_idx",
            Scope::Isolated,
            "CREATE INDEX CONCURRENTLY orders_note ON orders (note);",
        )
        .outside_transaction(
            vec!["CREATE INDEX CONCURRENTLY orders_note ON orders (note)".into()],
            Some("CREATE INDEX orders_note ON orders (note)".into()),
        ),
    );
    let set = MigrationSet::new(all);
    migrate(&db, &set);
    assert_records_describe_their_tables(&mut conn);
    assert_eq!(migrate(&db, &set).tracking_tables_read, 0);
}

#[test]
fn a_schema_brought_to_head_in_the_callers_transaction_is_recorded_with_it() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 1);
    let set = MigrationSet::new(base());
    migrate(&db, &set);
    let schema = SchemaName::new("fresh").unwrap();
    let _ = conn.transaction::<(), diesel::result::Error, _>(|conn| {
        conn.batch_execute("CREATE SCHEMA fresh")?;
        migrate_schema_in_transaction(conn, &schema, &set).unwrap();
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_heads WHERE schema_name = 'fresh'"
        ),
        0,
        "rolled back with the schema"
    );
    conn.transaction::<(), diesel::result::Error, _>(|conn| {
        conn.batch_execute("CREATE SCHEMA fresh")?;
        migrate_schema_in_transaction(conn, &schema, &set).unwrap();
        registry::insert(
            conn,
            &PublicName::new("fresh.example.com").unwrap(),
            &schema,
        )?;
        Ok(())
    })
    .unwrap();
    assert_records_describe_their_tables(&mut conn);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_heads"
        ),
        2
    );
    assert_eq!(migrate(&db, &set).tracking_tables_read, 0);
}

#[test]
fn records_of_dropped_schemas_are_forgotten_when_migrate_next_reads() {
    let db = TestDb::new();
    let mut conn = db.conn();
    tenants(&mut conn, 3);
    let set = MigrationSet::new(base());
    migrate(&db, &set);
    conn.batch_execute(
        "DROP SCHEMA t0 CASCADE;
         DELETE FROM public.appschema_tenants WHERE schema_name = 't0';
         DELETE FROM public.appschema_heads WHERE schema_name = 't1'",
    )
    .unwrap();
    let report = migrate(&db, &set);
    assert_eq!(report.tracking_tables_read, 1, "t1 only");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.appschema_heads WHERE schema_name = 't0'"
        ),
        0
    );
    assert_records_describe_their_tables(&mut conn);
}
