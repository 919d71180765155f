//! Sign-up from an async handler: `claim_spare` makes a tenant of a spare
//! schema on an `AsyncPgConnection`, atomically, with the sync path's
//! conflicts, and answers `None` (changing nothing) when the blocking path
//! must build the schema instead.

#[path = "../../appschema-core/tests/common/mod.rs"]
mod common;

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::{claim_spare, claim_spare_with, AsyncSharedPool};
use appschema_core::provision::{
    create_tenant, ensure_spares, spare_schemas, NewTenant, ProvisionError, Source,
};
use appschema_core::registry;
use common::{app_migrations, app_migrations_but_the_last, db_with_registry, new_tenant};
use diesel::connection::SimpleConnection;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

fn spare(request: NewTenant) -> NewTenant {
    request.source(Source::Spare)
}

#[tokio::test(flavor = "current_thread")]
async fn a_spare_at_the_head_becomes_the_tenant_in_one_transaction() {
    let (db, mut conn) = db_with_registry();
    ensure_spares(&mut conn, &app_migrations(), 2).unwrap();
    let spares = spare_schemas(&mut conn).unwrap();
    let mut async_conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let created = claim_spare(
        &mut async_conn,
        &app_migrations(),
        &spare(new_tenant("acme.test")),
    )
    .await
    .unwrap()
    .expect("a spare was free");
    assert_eq!(created.source, Source::Spare);
    assert_eq!(created.tenant.schema_name.as_str(), "acme_test");
    // The oldest spare was taken; the registry names the tenant; its
    // schema has the application's tables.
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares[1..]);
    let name = appschema_core::PublicName::new(&created.tenant.public_name).unwrap();
    let found = registry::find(&mut conn, &name).unwrap();
    assert_eq!(found, Some(created.tenant));
    conn.batch_execute("INSERT INTO acme_test.customers (name) VALUES ('a')")
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn through_the_async_pool_a_taken_derived_name_gets_a_suffix() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    ensure_spares(&mut conn, &m, 2).unwrap();
    conn.batch_execute("CREATE SCHEMA acme_test").unwrap();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let mut pooled = pool.get_shared().await.unwrap();
    let created = claim_spare(
        &mut pooled,
        &app_migrations(),
        &spare(new_tenant("acme.test")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(created.tenant.schema_name.as_str(), "acme_test_2");
}

/// `init`'s rows commit with the tenant; its error undoes the whole claim.
#[tokio::test(flavor = "current_thread")]
async fn claim_spare_with_writes_the_first_rows_in_the_claims_transaction() {
    let (db, mut conn) = db_with_registry();
    ensure_spares(&mut conn, &app_migrations(), 2).unwrap();
    let spares = spare_schemas(&mut conn).unwrap();
    let mut async_conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let created = claim_spare_with(
        &mut async_conn,
        &app_migrations(),
        &spare(new_tenant("acme.test")),
        |conn, created| {
            let sql = format!(
                "SET LOCAL search_path TO {}, public; \
                 INSERT INTO customers (name) VALUES ('first')",
                created.tenant.schema_name.quoted()
            );
            async move { conn.batch_execute(&sql).await }.scope_boxed()
        },
    )
    .await
    .unwrap()
    .expect("a spare was free");
    conn.batch_execute(
        "DO $$ BEGIN IF (SELECT count(*) FROM acme_test.customers WHERE name = 'first') <> 1 \
         THEN RAISE 'the first row is missing'; END IF; END $$",
    )
    .unwrap();
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares[1..]);

    // An init that fails: no tenant, no row, the spare still free.
    let err = claim_spare_with(
        &mut async_conn,
        &app_migrations(),
        &spare(new_tenant("globex.test")),
        |conn, _| {
            async move {
                conn.batch_execute("INSERT INTO no_such_table VALUES (1)")
                    .await
            }
            .scope_boxed()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProvisionError::Database(_)), "{err:?}");
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares[1..]);
    let name = appschema_core::PublicName::new("globex.test").unwrap();
    assert_eq!(registry::find(&mut conn, &name).unwrap(), None);
    // The connection is usable again (the transaction ended).
    async_conn.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(created.source, Source::Spare);
}

#[tokio::test(flavor = "current_thread")]
async fn no_free_spare_or_one_behind_the_head_changes_nothing_and_answers_none() {
    let (db, mut conn) = db_with_registry();
    let mut async_conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let none = claim_spare(
        &mut async_conn,
        &app_migrations(),
        &spare(new_tenant("a.test")),
    )
    .await
    .unwrap();
    assert!(none.is_none());
    ensure_spares(&mut conn, &app_migrations_but_the_last(), 1).unwrap();
    let behind = spare_schemas(&mut conn).unwrap();
    let none = claim_spare(
        &mut async_conn,
        &app_migrations(),
        &spare(new_tenant("a.test")),
    )
    .await
    .unwrap();
    assert!(none.is_none());
    // Rolled back: no registry row, the spare still free under its name.
    assert_eq!(spare_schemas(&mut conn).unwrap(), behind);
    let name = appschema_core::PublicName::new("a.test").unwrap();
    assert_eq!(registry::find(&mut conn, &name).unwrap(), None);
    // The blocking path then brings it to the head.
    let created =
        create_tenant(&mut conn, &app_migrations(), &spare(new_tenant("a.test"))).unwrap();
    assert_eq!(created.source, Source::Spare);
}

#[tokio::test(flavor = "current_thread")]
async fn a_name_already_taken_is_refused_and_the_spare_given_back() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    ensure_spares(&mut conn, &m, 1).unwrap();
    create_tenant(&mut conn, &m, &new_tenant("taken.test")).unwrap();
    let spares = spare_schemas(&mut conn).unwrap();
    let mut async_conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    let request = spare(new_tenant("taken.test").schema("x").unwrap());
    let err = claim_spare(&mut async_conn, &app_migrations(), &request)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisionError::TenantExists { .. }),
        "{err:?}"
    );
    assert_eq!(spare_schemas(&mut conn).unwrap(), spares);
}

/// Concurrent sign-ups on the request tasks of one runtime: each takes a
/// different spare, the ones left over answer `None`, and one public name
/// never yields two tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_take_different_spares() {
    let (db, mut conn) = db_with_registry();
    ensure_spares(&mut conn, &app_migrations(), 3).unwrap();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(6)
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let pool = pool.clone();
        // Two requests per name: one wins, the other is refused or finds
        // no spare left.
        let name = format!("c{}.test", i / 2);
        tasks.spawn(async move {
            let mut conn = pool.get_shared().await.unwrap();
            claim_spare(&mut conn, &app_migrations(), &spare(new_tenant(&name))).await
        });
    }
    let mut created = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(Some(c)) => created.push(c.tenant.public_name.to_string()),
            Ok(None) | Err(ProvisionError::TenantExists { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    created.sort();
    assert_eq!(created, ["c0.test", "c1.test", "c2.test"]);
    assert!(spare_schemas(&mut conn).unwrap().is_empty());
}
