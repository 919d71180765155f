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

mod support;

use std::time::Duration;

use appschema_core::connection::{
    ConnectionError, SearchPath, SharedPool, TenantCustomizer, TenantPool, TransactionScopedPool,
};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::{BigInt, Nullable, Text};
use support::{bounced, create_tenants, tenant, whoami, Bounced};

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
        env.admin()
            .batch_execute(
                "CREATE SEQUENCE public.hygiene_seq;
                 CREATE FUNCTION public.sneaky() RETURNS void LANGUAGE plpgsql AS $$
                 BEGIN
                     PERFORM pg_catalog.set_config('app.user_id', 'A-secret', false);
                     CREATE TEMP TABLE IF NOT EXISTS items AS
                         SELECT 1::int8 AS id, 'A-secret'::text AS marker;
                     LISTEN sneaky;
                 END $$;",
            )
            .unwrap();
        env
    }

    /// A direct connection to the database (never through the pool).
    fn admin(&self) -> PgConnection {
        PgConnection::establish(&self.admin_url).unwrap()
    }

    /// Runs `f` as user `who` (0 = A, 1 = B): a checkout (or unit of work)
    /// for tenant `t<who>`, or `t0` for the pools serving one tenant. A
    /// checkout that fails is reported (B locked out is a failure too).
    fn as_user(&self, who: usize, f: &mut dyn FnMut(&mut PgConnection)) -> Result<(), String> {
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

    /// A runs `sql`; then B runs `probe`, whose answer is the leak (if any).
    fn a_then_b<T>(
        &self,
        sql: &str,
        mut probe: impl FnMut(&mut PgConnection) -> Option<T>,
    ) -> Option<String>
    where
        T: std::fmt::Debug,
    {
        self.as_user(0, &mut |c| c.batch_execute(sql).unwrap())
            .unwrap();
        self.b(&mut probe)
    }

    /// B runs `probe`; a leak or a refused checkout is reported.
    fn b<T: std::fmt::Debug>(
        &self,
        probe: &mut dyn FnMut(&mut PgConnection) -> Option<T>,
    ) -> Option<String> {
        let mut seen = None;
        match self.as_user(1, &mut |c| seen = probe(c)) {
            Err(e) => Some(format!("B's checkout was refused: {e}")),
            Ok(()) => seen.map(|s| format!("B saw {s:?}")),
        }
    }

    /// A role of this test alone (roles are cluster-wide; tests run in
    /// parallel), without any privilege.
    fn intruder(&self) -> String {
        let mut admin = self.admin();
        let name = format!("intruder_{}", current_database(&mut admin));
        admin
            .batch_execute(&format!("CREATE ROLE {name} NOLOGIN"))
            .unwrap();
        name
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let name = format!("intruder_{}", current_database(&mut admin));
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

#[derive(QueryableByName, Debug)]
struct Value {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

#[derive(QueryableByName, Debug)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn current_database(conn: &mut PgConnection) -> String {
    text(conn, "SELECT current_database()::text AS v").unwrap()
}

/// One text value, or `None` when the query fails; run in a savepoint (or a
/// transaction) so a failure leaves a unit of work usable.
fn text(conn: &mut PgConnection, sql: &str) -> Option<String> {
    conn.transaction(|c| diesel::sql_query(sql).get_result::<Value>(c))
        .ok()
        .and_then(|r| r.v)
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

/// `Some(value)` when it is A's secret.
fn secret(value: Option<String>) -> Option<String> {
    value.filter(|v| v.contains("A-secret"))
}

// --- the attacks: each returns the leak it found, `None` when none ---------

fn a_temp_table_named_like_a_tenant_table(env: &Env) -> Option<String> {
    env.a_then_b(
        "CREATE TEMP TABLE items (id int8, marker text); INSERT INTO items VALUES (1, 'A-secret')",
        |c| secret(Some(whoami(c).unwrap().marker)),
    )
}

fn a_temp_view_named_like_a_tenant_table(env: &Env) -> Option<String> {
    env.a_then_b(
        "CREATE TEMP VIEW items AS SELECT 1::int8 AS id, 'A-secret'::text AS marker",
        |c| secret(Some(whoami(c).unwrap().marker)),
    )
}

fn a_temp_staging_table_created_if_not_exists_by_both(env: &Env) -> Option<String> {
    let staging = "CREATE TEMP TABLE IF NOT EXISTS staging (v text)";
    env.a_then_b(
        &format!("{staging}; INSERT INTO staging VALUES ('A-secret')"),
        |c| {
            c.batch_execute(staging).unwrap();
            secret(text(c, "SELECT string_agg(v, ',') AS v FROM staging"))
        },
    )
}

fn a_cursor_declared_with_hold(env: &Env) -> Option<String> {
    env.a_then_b(
        "DECLARE leaky CURSOR WITH HOLD FOR SELECT 'A-secret'::text AS v",
        |c| secret(text(c, "FETCH ALL FROM leaky")),
    )
}

fn a_listen_registration(env: &Env) -> Option<String> {
    env.a_then_b("LISTEN a_channel", |c| {
        let n = count(c, "SELECT count(*) AS n FROM pg_listening_channels()");
        (n > 0).then_some(n)
    })
}

/// B reads its notifications: any is A's.
fn notifications(c: &mut PgConnection) -> Option<Vec<String>> {
    c.batch_execute("SELECT 1").unwrap();
    let got: Vec<String> = c
        .notifications_iter()
        .filter_map(Result::ok)
        .map(|n| format!("{}: {}", n.channel, n.payload))
        .collect();
    (!got.is_empty()).then_some(got)
}

fn notifications_sent_to_a_after_it_returned_the_connection(env: &Env) -> Option<String> {
    env.as_user(0, &mut |c| c.batch_execute("LISTEN a_news").unwrap())
        .unwrap();
    env.admin()
        .batch_execute("NOTIFY a_news, 'A-secret'")
        .unwrap();
    // The idle backend forwards it to its socket.
    std::thread::sleep(Duration::from_millis(200));
    env.b(&mut notifications)
}

fn notifications_a_received_but_never_read(env: &Env) -> Option<String> {
    env.as_user(0, &mut |c| {
        c.batch_execute("LISTEN a_news").unwrap();
        env.admin()
            .batch_execute("NOTIFY a_news, 'A-secret'")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // libpq takes it in with this reply; then A stops listening, so the
        // server holds nothing any more, only the client does.
        c.batch_execute("SELECT 1; UNLISTEN *").unwrap();
    })
    .unwrap();
    env.b(&mut notifications)
}

fn a_custom_setting_read_by_row_level_security(env: &Env) -> Option<String> {
    env.a_then_b("SELECT set_config('app.user_id', 'A-secret', false)", |c| {
        secret(text(c, "SELECT current_setting('app.user_id', true) AS v"))
    })
}

fn a_plain_session_setting(env: &Env) -> Option<String> {
    env.a_then_b(
        "SET work_mem = '77MB'; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        |c| {
            let v = text(
                c,
                "SELECT current_setting('work_mem') || ' ' || current_setting('default_transaction_read_only') AS v",
            )
            .unwrap();
            (v != "4MB off").then_some(v)
        },
    )
}

fn a_role_left_set(env: &Env) -> Option<String> {
    let intruder = env.intruder();
    env.a_then_b(&format!("SET ROLE {intruder}"), |c| {
        let v = text(c, "SELECT current_user::text AS v").unwrap();
        let locked_out = whoami(c).is_err();
        (v == intruder || locked_out).then(|| format!("current_user {v}, locked out: {locked_out}"))
    })
}

fn a_session_authorization_left_set(env: &Env) -> Option<String> {
    let intruder = env.intruder();
    env.a_then_b(&format!("SET SESSION AUTHORIZATION {intruder}"), |c| {
        let v = text(c, "SELECT session_user::text AS v").unwrap();
        (v == intruder).then_some(v)
    })
}

fn a_session_advisory_lock(env: &Env) -> Option<String> {
    let leak = env.a_then_b("SELECT pg_advisory_lock(4242)", |_| None::<()>);
    let mut admin = env.admin();
    let free = text(&mut admin, "SELECT pg_try_advisory_lock(4242)::text AS v").unwrap();
    leak.or((free != "true").then(|| "A's advisory lock is still held".to_string()))
}

fn lastval_of_a_sequence_a_used(env: &Env) -> Option<String> {
    env.a_then_b(
        "SELECT setval('public.hygiene_seq', 4242); SELECT nextval('public.hygiene_seq')",
        |c| text(c, "SELECT lastval()::text AS v"),
    )
}

fn state_left_by_a_plpgsql_function(env: &Env) -> Option<String> {
    env.a_then_b("SELECT public.sneaky()", |c| {
        let setting = secret(text(c, "SELECT current_setting('app.user_id', true) AS v"));
        let marker = secret(Some(whoami(c).unwrap().marker));
        let listening = count(c, "SELECT count(*) AS n FROM pg_listening_channels()");
        (setting.is_some() || marker.is_some() || listening > 0)
            .then(|| format!("{setting:?} {marker:?} listening {listening}"))
    })
}

/// User code runs `RESET ALL` in the middle of B's checkout: the path must
/// fall back to the shared schema, never to `"$user", public`, where a
/// schema named like the login role would answer.
fn reset_all_in_the_middle_of_a_checkout(env: &Env) -> Option<String> {
    let mut admin = env.admin();
    let role = text(&mut admin, "SELECT session_user::text AS v").unwrap();
    let q = appschema_core::quote_ident(&role);
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {q}; CREATE TABLE {q}.items (id int8 PRIMARY KEY, marker text);
             INSERT INTO {q}.items VALUES (1, 'A-secret: the schema named like the login role');"
        ))
        .unwrap();
    env.b(&mut |c| {
        c.batch_execute("RESET ALL").unwrap();
        secret(Some(whoami(c).unwrap().marker))
    })
}

macro_rules! attacks_on {
    ($pool:ident, $kind:expr, $expect_leak:expr; $($attack:ident),* $(,)?) => {
        mod $pool {
            $(
                #[test]
                fn $attack() {
                    let env = super::Env::new($kind);
                    let leak = super::$attack(&env);
                    if $expect_leak {
                        assert!(leak.is_some(), "the probe found no leak where one is expected");
                    } else {
                        assert_eq!(leak, None, "LEAK");
                    }
                }
            )*
        }
    };
}

macro_rules! all_attacks {
    ($pool:ident, $kind:expr, $expect_leak:expr $(, $extra:ident)*) => {
        attacks_on!($pool, $kind, $expect_leak;
            a_temp_table_named_like_a_tenant_table,
            a_temp_view_named_like_a_tenant_table,
            a_temp_staging_table_created_if_not_exists_by_both,
            a_cursor_declared_with_hold,
            a_listen_registration,
            notifications_sent_to_a_after_it_returned_the_connection,
            notifications_a_received_but_never_read,
            a_custom_setting_read_by_row_level_security,
            a_plain_session_setting,
            a_role_left_set,
            a_session_authorization_left_set,
            a_session_advisory_lock,
            lastval_of_a_sequence_a_used,
            state_left_by_a_plpgsql_function,
            $($extra,)*
        );
    };
}

all_attacks!(
    shared_pool,
    super::Kind::Shared,
    false,
    reset_all_in_the_middle_of_a_checkout
);
all_attacks!(
    tenant_pool,
    super::Kind::Tenant,
    false,
    reset_all_in_the_middle_of_a_checkout
);
// Behind a transaction-pooling proxy the start-up options that make `RESET
// ALL` fall back to the shared path are dropped; there the registry's
// refusal of schema names equal to a role's is the guard (see the
// provisioning tests).
all_attacks!(
    transaction_scoped_behind_pgbouncer,
    super::Kind::Scoped,
    false
);
all_attacks!(
    control_tenant_customizer,
    super::Kind::Customizer,
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
