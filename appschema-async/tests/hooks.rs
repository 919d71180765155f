//! Lifecycle hooks on the async sign-up: run in the claim's transaction, a
//! failing one leaves no tenant; blocking hooks are never silently skipped.

#[path = "../../appschema-core/tests/common/mod.rs"]
mod common;

use appschema_async::{
    claim_spare, claim_spare_with_hooks, AsyncHooks, AsyncTenantHook, HookFuture,
};
use appschema_core::provision::{
    ensure_spares, spare_schemas, Hooks, NewTenant, ProvisionError, Source,
};
use appschema_core::registry::{self, Tenant};
use common::{app_migrations, catalog_snapshot, db_with_registry, public_name, query_strings};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// Writes the tenant's first customer through the unqualified table name.
struct FirstCustomer;

impl AsyncTenantHook for FirstCustomer {
    fn name(&self) -> &str {
        "first-customer"
    }
    fn after_create<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        tenant: &'a Tenant,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            conn.batch_execute(&format!(
                "INSERT INTO customers (name) VALUES ('owner of {}')",
                tenant.public_name
            ))
            .await?;
            Ok(())
        })
    }
}

struct Refuses;

impl AsyncTenantHook for Refuses {
    fn name(&self) -> &str {
        "send-invoice"
    }
    fn after_create<'a>(&'a self, _: &'a mut AsyncPgConnection, _: &'a Tenant) -> HookFuture<'a> {
        Box::pin(async { Err("the invoice service said no".into()) })
    }
}

fn spare(name: &str) -> NewTenant {
    NewTenant::new(name).unwrap().source(Source::Spare)
}

#[tokio::test(flavor = "current_thread")]
async fn async_hooks_write_first_rows_and_a_failing_one_leaves_no_tenant() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    ensure_spares(&mut conn, &m, 1).unwrap();
    let mut async_conn = AsyncPgConnection::establish(db.url()).await.unwrap();

    let before = catalog_snapshot(&mut conn);
    let failing = AsyncHooks::new().with(FirstCustomer).with(Refuses);
    let err = claim_spare_with_hooks(&mut async_conn, &m, &spare("fail.test"), &failing)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, ProvisionError::Hook { hook, public_name, .. }
            if hook == "send-invoice" && public_name == "fail.test"),
        "{message}"
    );
    assert!(message.contains("said no"), "{message}");
    assert_eq!(
        catalog_snapshot(&mut conn),
        before,
        "nothing of it may remain"
    );
    assert_eq!(
        spare_schemas(&mut conn).unwrap().len(),
        1,
        "the spare is given back"
    );

    let hooks = AsyncHooks::new().with(FirstCustomer);
    let created = claim_spare_with_hooks(&mut async_conn, &m, &spare("acme.test"), &hooks)
        .await
        .unwrap()
        .expect("a spare was free");
    assert_eq!(
        query_strings(&mut conn, "SELECT name AS value FROM acme_test.customers"),
        ["owner of acme.test"]
    );
    assert_eq!(
        registry::find(&mut conn, &public_name("acme.test")).unwrap(),
        Some(created.tenant)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_hooks_are_refused_on_the_async_path_rather_than_skipped() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    ensure_spares(&mut conn, &m, 1).unwrap();
    let mut async_conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let request = spare("acme.test").hooks(Hooks::new().after_create("blocking", |_, _| Ok(())));
    let before = catalog_snapshot(&mut conn);
    let err = claim_spare(&mut async_conn, &m, &request)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisionError::BlockingHooksOnAsyncPath { .. }),
        "{err}"
    );
    assert_eq!(catalog_snapshot(&mut conn), before);
}
