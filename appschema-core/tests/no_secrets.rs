//! No password reaches a `Debug` or `Display`: every public type built from
//! a connection string prints it with the password replaced, and errors
//! that quote the connection string (libpq does, for one it cannot parse)
//! have the password taken out.

use std::time::Duration;

use appschema_core::across::AcrossTenants;
use appschema_core::connection::{SharedPool, TransactionScopedPool};
use appschema_core::migrate::Migrator;
use appschema_core::{ConnectionError, MigrationSet, SchemaName};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;

const SECRET: &str = "Hunter2-not-for-logs";

/// The test database's URL (`postgres://postgres@/db?host=…&port=…`, trust
/// authentication: the server ignores the password) with the password
/// given three ways libpq takes one.
fn urls_with_password(db: &TestDb) -> Vec<String> {
    let url = db.url();
    let (head, query) = url.split_once('?').expect("the test URL has a query");
    let mut keywords = vec![
        format!("dbname={}", head.rsplit('/').next().unwrap()),
        "user=postgres".to_string(),
        format!("password='{SECRET}'"),
    ];
    keywords.extend(query.split('&').map(str::to_string));
    vec![
        url.replacen("postgres@", &format!("postgres:{SECRET}@"), 1),
        format!("{url}&password={SECRET}"),
        keywords.join(" "),
    ]
}

fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains("Hunter2"),
        "{what} shows the password: {text}"
    );
}

#[test]
fn debug_of_every_type_built_from_a_url_hides_the_password() {
    let db = TestDb::new();
    db.conn().batch_execute("CREATE SCHEMA acme").unwrap();
    let acme = SchemaName::new("acme").unwrap();
    for url in urls_with_password(&db) {
        let builder = SharedPool::builder(url.clone()).max_size(1);
        let shown = format!("{builder:?}");
        assert_hidden("SharedPoolBuilder", &shown);
        assert!(shown.contains("***"), "the URL is shown, redacted: {shown}");

        let pool = builder.clone().build().unwrap();
        drop(pool.get_for(&acme).unwrap());
        assert_hidden("SharedPool", &format!("{pool:?}"));
        assert!(format!("{pool:?}").contains("***"));
        let tenant_pool = builder.build_for(acme.clone()).unwrap();
        drop(tenant_pool.get().unwrap());
        assert_hidden("TenantPool", &format!("{tenant_pool:?}"));

        let builder = TransactionScopedPool::builder(url.clone()).max_size(1);
        assert_hidden("TransactionScopedPoolBuilder", &format!("{builder:?}"));
        let scoped = builder.build().unwrap();
        scoped
            .transaction_for(&acme, |_| Ok::<_, ConnectionError>(()))
            .unwrap();
        assert_hidden("TransactionScopedPool", &format!("{scoped:?}"));
        assert!(format!("{scoped:?}").contains("***"));

        let across = AcrossTenants::new(url.clone());
        assert_hidden("AcrossTenants", &format!("{across:?}"));
        assert!(format!("{across:?}").contains("***"));
        let migrator = Migrator::new(url.clone());
        assert_hidden("Migrator", &format!("{migrator:?}"));
        assert!(format!("{migrator:?}").contains("***"));
    }
}

#[test]
fn connection_errors_that_quote_the_url_hide_the_password() {
    let db = TestDb::new();
    // libpq refuses the bad escape and quotes the password it is in.
    let url = db
        .url()
        .replacen("postgres@", &format!("postgres:{SECRET}%zz@"), 1);
    let timeout = Duration::from_millis(300);

    // `min_idle(1)`: build opens a connection and waits for it.
    let error = SharedPool::builder(url.clone())
        .max_size(1)
        .min_idle(1)
        .connection_timeout(timeout)
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("invalid percent-encoded token"),
        "{error}"
    );
    assert_hidden("SharedPool's build error", &error.to_string());
    assert_hidden("SharedPool's build error", &format!("{error:?}"));

    // Without it (the default), the first checkout opens it.
    let pool = SharedPool::builder(url.clone())
        .max_size(1)
        .connection_timeout(timeout)
        .build()
        .unwrap();
    let error = pool.get_shared().unwrap_err();
    assert!(
        error.to_string().contains("invalid percent-encoded token"),
        "{error}"
    );
    assert_hidden("SharedPool's checkout error", &error.to_string());
    assert_hidden("SharedPool's checkout error", &format!("{error:?}"));

    let pool = TransactionScopedPool::builder(url.clone())
        .max_size(1)
        .connection_timeout(timeout)
        .build()
        .unwrap();
    let error = pool
        .transaction_for(&SchemaName::new("acme").unwrap(), |_| {
            Ok::<_, ConnectionError>(())
        })
        .unwrap_err();
    assert!(
        error.to_string().contains("invalid percent-encoded token"),
        "{error}"
    );
    assert_hidden("TransactionScopedPool's checkout error", &error.to_string());
    assert_hidden(
        "TransactionScopedPool's checkout error",
        &format!("{error:?}"),
    );

    let error = Migrator::new(url.clone())
        .migrate(&MigrationSet::default(), &|_| {})
        .unwrap_err();
    assert!(
        error.to_string().contains("invalid percent-encoded token"),
        "{error}"
    );
    assert_hidden("Migrator's error", &error.to_string());
    assert_hidden("Migrator's error", &format!("{error:?}"));

    let error = AcrossTenants::new(url.clone())
        .run_sql("SELECT 1", &|_| {})
        .unwrap_err();
    assert!(
        error.to_string().contains("invalid percent-encoded token"),
        "{error}"
    );
    assert_hidden("AcrossTenants' error", &error.to_string());
    assert_hidden("AcrossTenants' error", &format!("{error:?}"));
}
