//! Session state other than `search_path` never crosses checkouts: what user
//! A leaves on a connection (temporary tables and views, holdable cursors,
//! `LISTEN` and notifications, settings, roles, advisory locks, `lastval()`),
//! user B, the next one on the same backend, never sees.
//!
//! Every attack runs on every pool where it applies, each with a pool of one
//! connection (one server connection behind PgBouncer) so B always gets A's
//! backend:
//! - `shared_pool`: A on tenant `t0`, B on `t1`;
//! - `tenant_pool`: a [`TenantPool`] pinned to `t0`, A and B two users of
//!   the same tenant;
//! - `transaction_scoped_behind_pgbouncer`: A's and B's units of work on `t0`
//!   and `t1` through a real PgBouncer in transaction pooling;
//! - `control_tenant_customizer`: a plain r2d2 pool with a
//!   `TenantCustomizer`, which resets nothing on checkout. There every
//!   attack must leak: the proof that each probe detects its leak.
//!
//! The attacks themselves are in `appschema_testkit::attacks`, shared with
//! the async pools' tests (`appschema-async/tests/session_hygiene.rs`).

use std::time::Duration;

use appschema_core::connection::{
    ConnectionError, SearchPath, SharedPool, TenantCustomizer, TenantPool, TransactionScopedPool,
};
use appschema_tempdb::TestDb;
use appschema_testkit::attacks::{text, Session};
use appschema_testkit::tenants::{bounced, create_tenants, tenant, Bounced};
use appschema_testkit::{all_attacks, attacks};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shared,
    Tenant,
    Scoped,
    Customizer,
}

/// The database and the pool under attack.
struct Env {
    kind: Kind,
    admin_url: String,
    _db: Option<TestDb>,
    _bounced: Option<Bounced>,
    shared: Option<SharedPool>,
    tenant_pool: Option<TenantPool>,
    scoped: Option<TransactionScopedPool>,
    customized: Option<Pool<ConnectionManager<PgConnection>>>,
}

impl Env {
    fn new(kind: Kind) -> Env {
        let mut env = Env {
            kind,
            admin_url: String::new(),
            _db: None,
            _bounced: None,
            shared: None,
            tenant_pool: None,
            scoped: None,
            customized: None,
        };
        let timeout = Duration::from_secs(10);
        if kind == Kind::Scoped {
            let b = bounced(2);
            env.admin_url = b.direct_url();
            env.scoped = Some(
                TransactionScopedPool::builder(b.url())
                    .max_size(1)
                    .connection_timeout(timeout)
                    .build()
                    .unwrap(),
            );
            env._bounced = Some(b);
        } else {
            let db = TestDb::new();
            create_tenants(&mut db.conn(), 2);
            env.admin_url = db.url().to_string();
            let builder = SharedPool::builder(db.url())
                .max_size(1)
                .connection_timeout(timeout);
            match kind {
                Kind::Shared => env.shared = Some(builder.build().unwrap()),
                Kind::Tenant => env.tenant_pool = Some(builder.build_for(tenant(0)).unwrap()),
                _ => {
                    env.customized = Some(
                        Pool::builder()
                            .max_size(1)
                            .connection_timeout(timeout)
                            .connection_customizer(Box::new(TenantCustomizer::new(
                                tenant(0),
                                SearchPath::new(),
                            )))
                            .build(ConnectionManager::new(db.url()))
                            .unwrap(),
                    )
                }
            }
            env._db = Some(db);
        }
        attacks::Pool::admin(&env)
            .batch_execute(attacks::SETUP)
            .unwrap();
        env
    }
}

impl attacks::Pool for Env {
    fn admin(&self) -> PgConnection {
        PgConnection::establish(&self.admin_url).unwrap()
    }

    fn as_user(&self, who: usize, f: &mut dyn FnMut(&mut dyn Session)) -> Result<(), String> {
        let t = tenant(who);
        match self.kind {
            Kind::Shared => f(&mut *self.shared.as_ref().unwrap().get_for(&t).map_err(err)?),
            Kind::Tenant => f(&mut *self.tenant_pool.as_ref().unwrap().get().map_err(err)?),
            Kind::Customizer => f(&mut *self
                .customized
                .as_ref()
                .unwrap()
                .get()
                .map_err(|e| e.to_string())?),
            Kind::Scoped => self
                .scoped
                .as_ref()
                .unwrap()
                .transaction_for(&t, |c| {
                    f(c);
                    Ok::<_, ConnectionError>(())
                })
                .map_err(err)?,
        }
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let name = attacks::intruder_name(&mut admin);
            // Pools first: a pooled session may still be in the role.
            self.shared = None;
            self.tenant_pool = None;
            self.scoped = None;
            self.customized = None;
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {name}"));
        }
    }
}

fn err(e: ConnectionError) -> String {
    e.to_string()
}

fn current_database(conn: &mut PgConnection) -> String {
    text(conn, "SELECT current_database()::text AS v").unwrap()
}

all_attacks!(
    shared_pool,
    super::Env::new(super::Kind::Shared),
    false,
    reset_all_in_the_middle_of_a_checkout,
    a_per_tenant_enum_resolved_by_a
);
all_attacks!(
    tenant_pool,
    super::Env::new(super::Kind::Tenant),
    false,
    reset_all_in_the_middle_of_a_checkout
);
// Behind a transaction-pooling proxy the start-up options that make `RESET
// ALL` fall back to the shared path are dropped; there the registry's
// refusal of schema names equal to a role's is the guard (see the
// provisioning tests).
all_attacks!(
    transaction_scoped_behind_pgbouncer,
    super::Env::new(super::Kind::Scoped),
    false,
    a_per_tenant_enum_resolved_by_a
);
all_attacks!(
    control_tenant_customizer,
    super::Env::new(super::Kind::Customizer),
    true,
    reset_all_in_the_middle_of_a_checkout
);

/// `RESET ALL` returns to the connection's start-up values: diesel's
/// connect-time settings (the pool passes them as start-up options) and
/// whatever the application put in the URL's options.
#[test]
fn diesels_settings_and_the_urls_options_come_back_after_user_code_changes_them() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 1);
    let url = format!("{}&options=-c%20statement_timeout%3D4321", db.url());
    let pool = SharedPool::builder(url).max_size(1).build().unwrap();
    let settings = |c: &mut PgConnection| {
        text(
            c,
            "SELECT current_setting('TimeZone') || ' ' || current_setting('client_encoding') \
             || ' ' || current_setting('statement_timeout') AS v",
        )
        .unwrap()
    };
    let expected = "UTC UTF8 4321ms";
    {
        let mut c = pool.get_for(&tenant(0)).unwrap();
        assert_eq!(settings(&mut c), expected);
        c.batch_execute(
            "SET TIME ZONE 'Europe/Paris'; SET client_encoding = 'LATIN1'; SET statement_timeout = 0",
        )
        .unwrap();
    }
    let mut c = pool.get_for(&tenant(0)).unwrap();
    assert_eq!(settings(&mut c), expected);
    // And in the middle of a checkout, user code's own RESET ALL too.
    c.batch_execute("SET TIME ZONE 'Europe/Paris'; RESET ALL")
        .unwrap();
    assert_eq!(settings(&mut c), expected);
}

/// Behind a proxy that drops start-up options (PgBouncer with
/// `ignore_startup_parameters = options`, as the test PgBouncer is set up),
/// `RESET ALL` returns to the server's defaults, so the checkout re-applies
/// diesel's settings itself.
#[test]
fn behind_a_proxy_that_drops_start_up_options_diesels_settings_still_come_back() {
    let b = bounced(1);
    let pool = SharedPool::builder(b.url()).max_size(1).build().unwrap();
    let settings = |c: &mut PgConnection| {
        text(
            c,
            "SELECT current_setting('TimeZone') || ' ' || current_setting('client_encoding') AS v",
        )
        .unwrap()
    };
    // The server's default is not UTC, so a RESET ALL left alone would show.
    let mut admin = PgConnection::establish(&b.direct_url()).unwrap();
    let db = appschema_core::quote_ident(&current_database(&mut admin));
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET TimeZone = 'America/Lima'"
        ))
        .unwrap();
    {
        let mut c = pool.get_for(&tenant(0)).unwrap();
        assert_eq!(settings(&mut c), "UTC UTF8");
        c.batch_execute("SET TIME ZONE 'Europe/Paris'").unwrap();
    }
    let mut c = pool.get_for(&tenant(0)).unwrap();
    assert_eq!(settings(&mut c), "UTC UTF8");
}

/// The type cache is emptied only for another tenant: a checkout for the
/// same tenant binds the OID cached before, with no look-up (shown by
/// replacing the type behind the cache's back: the cached OID is then the
/// old type's, and the INSERT fails).
#[test]
fn a_checkout_for_the_same_tenant_keeps_the_custom_type_cache() {
    let env = Env::new(Kind::Shared);
    attacks::Pool::as_user(&env, 0, &mut |s| s.insert_mood().unwrap()).unwrap();
    attacks::Pool::admin(&env)
        .batch_execute(
            "ALTER TYPE t0.mood RENAME TO mood_before; \
             CREATE TYPE t0.mood AS ENUM ('happy', 'sad'); \
             ALTER TABLE t0.moods ALTER COLUMN m TYPE t0.mood USING m::text::t0.mood",
        )
        .unwrap();
    let mut same_tenant = None;
    attacks::Pool::as_user(&env, 0, &mut |s| same_tenant = Some(s.insert_mood())).unwrap();
    assert!(
        same_tenant.unwrap().is_err(),
        "the same tenant's checkout looked the type up again"
    );
    // Another tenant's checkout empties the cache, so the next checkout of
    // t0 looks the type up afresh.
    attacks::Pool::as_user(&env, 1, &mut |s| s.insert_mood().unwrap()).unwrap();
    attacks::Pool::as_user(&env, 0, &mut |s| s.insert_mood().unwrap()).unwrap();
}
