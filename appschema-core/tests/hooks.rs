//! Lifecycle hooks run inside the creating / dropping transaction, for every
//! way a tenant is made, against a real PostgreSQL.

use appschema_core::provision::{
    clone_tenant, create_tenant, drop_tenant_with_hooks, ensure_spares, export_tenant,
    import_tenant, DropMode, Hooks, ImportOptions, NewTenant, ProvisionError, Source,
    TransferError,
};
use appschema_core::registry::{self, Tenant};
use appschema_core::MigrationSet;
use appschema_testkit::provisioning;
use appschema_testkit::provisioning::{
    app_migrations, catalog_snapshot, create_named, db_with_registry,
    leaving_the_catalog_unchanged, new_tenant, public_name, query_strings,
    store_generated_template,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// Writes the tenant's first customer (through the unqualified name: the
/// hook runs on the tenant's path) and enqueues a welcome job in a shared
/// table.
fn welcome_hooks() -> Hooks {
    Hooks::new().after_create("first-customer", |conn, tenant: &Tenant| {
        diesel::sql_query("INSERT INTO customers (name) VALUES ('owner of ' || $1)")
            .bind::<diesel::sql_types::Text, _>(&tenant.public_name)
            .execute(conn)?;
        diesel::sql_query("INSERT INTO public.welcome_jobs (tenant) VALUES ($1)")
            .bind::<diesel::sql_types::Text, _>(&tenant.public_name)
            .execute(conn)?;
        Ok(())
    })
}

/// [`welcome_hooks`], then a hook that always fails.
fn failing_hooks() -> Hooks {
    welcome_hooks().after_create("send-invoice", |_, _| {
        Err("the invoice service said no".into())
    })
}

fn setup() -> (appschema_tempdb::TestDb, PgConnection, MigrationSet) {
    let (db, mut conn) = db_with_registry();
    conn.batch_execute("CREATE TABLE public.welcome_jobs (tenant text NOT NULL)")
        .unwrap();
    let m = app_migrations();
    // The template and spare sources need their stored template and spares;
    // the clone and import sources, a tenant to copy.
    store_generated_template(&mut conn, db.url(), &m);
    create_named(&mut conn, &m, "origin.test");
    (db, conn, m)
}

fn exported(conn: &mut PgConnection, url: &str) -> Vec<u8> {
    let mut out = Vec::new();
    export_tenant(conn, url, &public_name("origin.test"), &mut out, |_| {}).unwrap();
    out
}

/// Creates `name` by `how` with `hooks`: the way every creation source is
/// reached from Rust.
fn create_by(
    conn: &mut PgConnection,
    url: &str,
    m: &MigrationSet,
    how: &str,
    name: &str,
    hooks: Hooks,
) -> Result<Tenant, ProvisionError> {
    let request = |source| new_tenant(name).source(source).hooks(hooks.clone());
    match how {
        "migrations" => create_tenant(conn, m, &request(Source::Migrations)).map(|c| c.tenant),
        "template" => create_tenant(conn, m, &request(Source::Template)).map(|c| c.tenant),
        "spare" => {
            ensure_spares(conn, m, 1).unwrap();
            let created = create_tenant(conn, m, &request(Source::Spare))?;
            assert_eq!(created.source, Source::Spare);
            Ok(created.tenant)
        }
        "clone" => clone_tenant(
            conn,
            m,
            &public_name("origin.test"),
            &request(Source::Migrations),
        )
        .map(|c| c.tenant),
        "import" => {
            let file = exported(conn, url);
            let options = ImportOptions::new()
                .public_name(public_name(name))
                .hooks(hooks.clone());
            import_tenant(conn, m, &file[..], &options, |_| {})
                .map(|i| i.tenant)
                .map_err(|e| match e {
                    TransferError::Provision(e) => e,
                    other => panic!("import failed otherwise: {other}"),
                })
        }
        other => unreachable!("{other}"),
    }
}

const SOURCES: [&str; 5] = ["migrations", "template", "spare", "clone", "import"];

fn search_path(conn: &mut PgConnection) -> String {
    query_strings(conn, "SELECT current_setting('search_path') AS value").remove(0)
}

#[test]
fn an_after_create_hook_writes_first_rows_whatever_builds_the_tenant() {
    let (db, mut conn, m) = setup();
    let path_before = search_path(&mut conn);
    for how in SOURCES {
        let name = format!("{how}.test");
        let tenant = create_by(&mut conn, db.url(), &m, how, &name, welcome_hooks())
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(
            query_strings(
                &mut conn,
                &format!(
                    "SELECT name AS value FROM {}.customers WHERE name LIKE 'owner of %'",
                    tenant.schema_name.quoted()
                )
            ),
            [format!("owner of {name}")],
            "{how}"
        );
        assert_eq!(search_path(&mut conn), path_before, "{how}: path restored");
    }
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT tenant AS value FROM public.welcome_jobs ORDER BY 1"
        ),
        [
            "clone.test",
            "import.test",
            "migrations.test",
            "spare.test",
            "template.test"
        ]
    );
}

#[test]
fn a_failing_after_create_hook_leaves_no_tenant_no_schema_and_no_registry_row() {
    let (db, mut conn, m) = setup();
    for how in SOURCES {
        if how == "spare" {
            ensure_spares(&mut conn, &m, 1).unwrap();
        }
        let before = catalog_snapshot(&mut conn);
        let name = format!("{how}.test");
        let err = leaving_the_catalog_unchanged(&mut conn, |conn| {
            create_by(conn, db.url(), &m, how, &name, failing_hooks()).unwrap_err()
        });
        assert_eq!(catalog_snapshot(&mut conn), before);
        match &err {
            ProvisionError::Hook {
                hook, public_name, ..
            } => {
                assert_eq!(
                    (hook.as_str(), public_name.as_str()),
                    ("send-invoice", name.as_str())
                );
            }
            other => panic!("{how}: {other}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("send-invoice")
                && message.contains(&name)
                && message.contains("said no"),
            "{message}"
        );
        assert!(registry::find(&mut conn, &public_name(&name))
            .unwrap()
            .is_none());
        // The first hook's rows went with it.
        assert!(
            query_strings(&mut conn, "SELECT tenant AS value FROM public.welcome_jobs").is_empty()
        );
    }
}

#[test]
fn a_before_drop_hook_sees_the_rows_and_a_failing_one_keeps_the_tenant() {
    let (_db, mut conn, m) = setup();
    conn.batch_execute("CREATE TABLE public.goodbyes (tenant text, customers bigint)")
        .unwrap();
    let goodbye = Hooks::new().before_drop("goodbye", |conn, tenant| {
        diesel::sql_query("INSERT INTO public.goodbyes SELECT $1, count(*) FROM customers")
            .bind::<diesel::sql_types::Text, _>(&tenant.public_name)
            .execute(conn)?;
        Ok(())
    });
    let refusing =
        goodbye.clone().before_drop(
            "legal-hold",
            |_, _| Err("tenant is under legal hold".into()),
        );
    for mode in [DropMode::Drop, DropMode::Archive] {
        let name = format!("{mode:?}.test").to_lowercase();
        let created = create_tenant(
            &mut conn,
            &m,
            &NewTenant::new(&name).unwrap().hooks(welcome_hooks()),
        )
        .unwrap();
        let err = leaving_the_catalog_unchanged(&mut conn, |conn| {
            drop_tenant_with_hooks(conn, &public_name(&name), mode, &refusing).unwrap_err()
        });
        assert!(
            matches!(&err, ProvisionError::Hook { hook, .. } if hook == "legal-hold"),
            "{err}"
        );
        assert_eq!(
            registry::find(&mut conn, &public_name(&name)).unwrap(),
            Some(created.tenant.clone())
        );
        assert!(query_strings(
            &mut conn,
            &format!("SELECT tenant AS value FROM public.goodbyes WHERE tenant = '{name}'")
        )
        .is_empty());
        drop_tenant_with_hooks(&mut conn, &public_name(&name), mode, &goodbye).unwrap();
        assert!(registry::find(&mut conn, &public_name(&name))
            .unwrap()
            .is_none());
    }
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT tenant || ' ' || customers AS value FROM public.goodbyes ORDER BY 1"
        ),
        ["archive.test 1", "drop.test 1"]
    );
}

#[test]
fn an_after_migrate_hook_runs_once_per_migrated_tenant_and_its_failure_is_reported() {
    let (db, mut conn) = db_with_registry();
    conn.batch_execute(
        "CREATE TABLE public.migrated_log (tenant text NOT NULL, orders_exist bool)",
    )
    .unwrap();
    let behind = provisioning::app_migrations_but_the_last();
    create_named(&mut conn, &behind, "a.test");
    create_named(&mut conn, &behind, "b.test");
    let hooks = Hooks::new()
        .after_migrate("log", |conn, tenant| {
            // On the tenant's path, after the new migration committed.
            diesel::sql_query(
                "INSERT INTO public.migrated_log SELECT $1, to_regclass('orders') IS NOT NULL",
            )
            .bind::<diesel::sql_types::Text, _>(&tenant.public_name)
            .execute(conn)?;
            Ok(())
        })
        .after_migrate("refuse-b", |_, tenant| match tenant.public_name.as_str() {
            "b.test" => Err("b is special".into()),
            _ => Ok(()),
        });
    let migrator = appschema_core::migrate::Migrator::new(db.url())
        .jobs(2)
        .hooks(hooks);
    let report = migrator.migrate(&app_migrations(), &|_| {}).unwrap();
    assert_eq!(report.migrations_applied, 2);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let failure = &report.failures[0];
    assert_eq!(
        (failure.schema.as_str(), failure.migration.as_str()),
        ("b_test", "hook refuse-b")
    );
    assert!(failure.message.contains("b is special"), "{failure}");
    // The migrations stay; only the failing tenant's hook rows went.
    assert_eq!(provisioning::applied_versions(&mut conn, "b_test").len(), 2);
    assert_eq!(
        query_strings(
            &mut conn,
            "SELECT tenant || ' ' || orders_exist AS value FROM public.migrated_log"
        ),
        ["a.test true"]
    );
    // Nothing pending: no hook runs.
    let again = migrator.migrate(&app_migrations(), &|_| {}).unwrap();
    assert!(again.is_success(), "{:?}", again.failures);
    assert_eq!(
        query_strings(&mut conn, "SELECT tenant AS value FROM public.migrated_log"),
        ["a.test"]
    );
}

#[test]
fn inside_the_callers_transaction_the_path_is_restored_after_the_hooks() {
    let (_db, mut conn) = db_with_registry();
    conn.batch_execute("CREATE TABLE public.welcome_jobs (tenant text NOT NULL)")
        .unwrap();
    let m = app_migrations();
    let before = search_path(&mut conn);
    conn.transaction(|conn| {
        create_tenant(conn, &m, &new_tenant("acme.test").hooks(welcome_hooks()))?;
        // Still in the caller's transaction: the hook's `SET LOCAL` must
        // not outlive it here, where the caller's next statement runs.
        assert_eq!(search_path(conn), before);
        Ok::<_, ProvisionError>(())
    })
    .unwrap();
}
