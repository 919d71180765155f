//! Session state other than `search_path` never crosses checkouts of the
//! async pools: the sync pools' attacks (`appschema-core/tests/attacks`,
//! one body for both), each on a pool of one connection so user B always
//! gets user A's backend:
//! - `async_shared_pool`: A on tenant `t0`, B on `t1`;
//! - `async_tenant_pool`: an `AsyncTenantPool` pinned to `t0`;
//! - `async_shared_pool_opened_ahead`: as `async_shared_pool`, on a
//!   connection the pool's background task opened (`min_idle`) before any
//!   checkout, and looks at (its `idle_timeout` pass, every 10 ms) while it
//!   sits idle between users;
//! - `async_transaction_scoped_behind_pgbouncer`: units of work on `t0` and
//!   `t1` through a real PgBouncer in transaction pooling.
//!
//! The attacks are written once, as sequential steps: the test thread
//! drives each async call to completion itself ([`block_on`]), inside the
//! pool's tokio runtime, whose workers drive the connections.

#[path = "../../appschema-core/tests/attacks/mod.rs"]
mod attacks;
#[path = "../../appschema-core/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use appschema_async::scoped_futures::ScopedFutureExt;
use appschema_async::{AsyncSharedPool, AsyncTenantPool, AsyncTransactionScopedPool};
use appschema_core::connection::ConnectionError;
use appschema_tempdb::TestDb;
use attacks::{Session, Value};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::{FutureExt, StreamExt};
use support::{bounced, create_tenants, tenant, Bounced};
use tokio::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shared,
    /// `Shared`, its one connection opened ahead by `min_idle`.
    OpenedAhead,
    Tenant,
    Scoped,
}

struct Env {
    kind: Kind,
    rt: Runtime,
    admin_url: String,
    _db: Option<TestDb>,
    _bounced: Option<Bounced>,
    shared: Option<AsyncSharedPool>,
    tenant_pool: Option<AsyncTenantPool>,
    scoped: Option<AsyncTransactionScopedPool>,
}

impl Env {
    /// A pool built with `per_tenant_types(false)`, so user B always gets
    /// user A's backend whatever the tenants (the database has per-tenant
    /// types, [`attacks::SETUP`], which the default would keep apart).
    fn new(kind: Kind) -> Env {
        Env::build(kind, Some(false))
    }

    /// A pool built with the default `per_tenant_types`: found out from
    /// the database.
    fn with_defaults(kind: Kind) -> Env {
        Env::build(kind, None)
    }

    /// A pool built with `per_tenant_types(true)`.
    fn with_per_tenant_types(kind: Kind) -> Env {
        Env::build(kind, Some(true))
    }

    fn build(kind: Kind, per_tenant_types: Option<bool>) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut env = Env {
            kind,
            rt,
            admin_url: String::new(),
            _db: None,
            _bounced: None,
            shared: None,
            tenant_pool: None,
            scoped: None,
        };
        let timeout = Duration::from_secs(10);
        let _guard = env.rt.enter();
        if kind == Kind::Scoped {
            let b = bounced(2);
            env.admin_url = b.direct_url();
            env.scoped = Some(
                per_tenant_types
                    .into_iter()
                    .fold(AsyncTransactionScopedPool::builder(b.url()), |b, on| {
                        b.per_tenant_types(on)
                    })
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
            let builder = per_tenant_types
                .into_iter()
                .fold(AsyncSharedPool::builder(db.url()), |b, on| {
                    b.per_tenant_types(on)
                })
                .max_size(1)
                .connection_timeout(timeout);
            match kind {
                Kind::Shared => env.shared = Some(builder.build().unwrap()),
                Kind::OpenedAhead => {
                    // A short idle_timeout keeps the background task passing
                    // over this connection between users, without closing
                    // it (it is the `min_idle` one, younger than its lifetime).
                    let pool = builder
                        .min_idle(1)
                        .idle_timeout(Some(Duration::from_millis(40)))
                        .max_lifetime(Some(Duration::from_secs(600)))
                        .build()
                        .unwrap();
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while pool.state().connections < 1 {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "min_idle never opened a connection"
                        );
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    env.shared = Some(pool);
                }
                _ => env.tenant_pool = Some(builder.build_for(tenant(0)).unwrap()),
            }
            env._db = Some(db);
        }
        drop(_guard);
        attacks::Pool::admin(&env)
            .batch_execute(attacks::SETUP)
            .unwrap();
        env
    }
}

/// Polls `future` to completion on this thread, parking between polls.
/// Unlike a runtime's `block_on`, it nests: a unit of work (one future)
/// runs the attack's steps, each a future of its own.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// The attack's step closure, moved into the unit's future, which the
/// pool's API requires to be `Send`.
struct OnThisThread<'a>(&'a mut dyn FnMut(&mut dyn Session));

// SAFETY: the unit's future is polled only by `block_on`, on the thread
// that created it; the closure never leaves that thread.
unsafe impl Send for OnThisThread<'_> {}

/// A checked-out async connection, driven from the (sync) test thread.
struct AsyncSession<'a> {
    conn: &'a mut AsyncPgConnection,
}

impl Session for AsyncSession<'_> {
    fn exec(&mut self, sql: &str) {
        block_on(self.conn.batch_execute(sql)).unwrap();
    }

    fn text(&mut self, sql: &str) -> Option<String> {
        let sql = sql.to_string();
        block_on(
            self.conn
                .transaction(async |c| diesel::sql_query(sql).get_result::<Value>(c).await),
        )
        .ok()
        .and_then(|r| r.v)
    }

    fn whoami(&mut self) -> Result<(Option<String>, String), String> {
        block_on(
            diesel::sql_query(
                "SELECT current_schema() AS schema, \
                 (SELECT marker FROM items WHERE id = 1) AS marker",
            )
            .get_result::<support::WhoAmI>(self.conn),
        )
        .map(|me| (me.schema, me.marker))
        .map_err(|e| e.to_string())
    }

    fn notifications(&mut self) -> Vec<String> {
        self.exec("SELECT 1");
        let mut stream = std::pin::pin!(self.conn.notifications_stream());
        let mut got = Vec::new();
        while let Some(Some(n)) = stream.next().now_or_never() {
            let n = n.unwrap();
            got.push(format!("{}: {}", n.channel, n.payload));
        }
        got
    }

    fn insert_mood(&mut self) -> Result<(), String> {
        block_on(self.conn.transaction(async |c| {
            diesel::sql_query(attacks::INSERT_MOOD)
                .bind::<attacks::Mood, _>(attacks::MoodValue)
                .execute(c)
                .await
        }))
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

impl attacks::Pool for Env {
    fn admin(&self) -> PgConnection {
        PgConnection::establish(&self.admin_url).unwrap()
    }

    fn as_user(&self, who: usize, f: &mut dyn FnMut(&mut dyn Session)) -> Result<(), String> {
        let t = tenant(who);
        let _runtime = self.rt.enter();
        let err = |e: ConnectionError| e.to_string();
        let mut conn = match self.kind {
            Kind::Shared | Kind::OpenedAhead => block_on(self.shared.as_ref().unwrap().get_for(&t)),
            Kind::Tenant => block_on(self.tenant_pool.as_ref().unwrap().get()),
            Kind::Scoped => {
                let f = OnThisThread(f);
                return block_on(self.scoped.as_ref().unwrap().transaction_for(&t, |c| {
                    async move {
                        let f = f;
                        (f.0)(&mut AsyncSession { conn: c });
                        Ok::<_, ConnectionError>(())
                    }
                    .scope_boxed()
                }))
                .map_err(err);
            }
        }
        .map_err(err)?;
        f(&mut AsyncSession { conn: &mut conn });
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
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {name}"));
        }
    }
}

all_attacks!(
    async_shared_pool,
    super::Env::new(super::Kind::Shared),
    false,
    reset_all_in_the_middle_of_a_checkout
);
all_attacks!(
    async_shared_pool_opened_ahead,
    super::Env::new(super::Kind::OpenedAhead),
    false,
    reset_all_in_the_middle_of_a_checkout
);
all_attacks!(
    async_tenant_pool,
    super::Env::new(super::Kind::Tenant),
    false,
    reset_all_in_the_middle_of_a_checkout
);
all_attacks!(
    async_transaction_scoped_behind_pgbouncer,
    super::Env::new(super::Kind::Scoped),
    false
);
// diesel-async's type cache cannot be emptied: per-tenant custom types need
// `per_tenant_types(true)`, which keeps a connection from another tenant.
attacks_on!(
    async_shared_pool_per_tenant_types,
    super::Env::with_per_tenant_types(super::Kind::Shared),
    false;
    a_per_tenant_enum_resolved_by_a
);
attacks_on!(
    async_transaction_scoped_per_tenant_types_behind_pgbouncer,
    super::Env::with_per_tenant_types(super::Kind::Scoped),
    false;
    a_per_tenant_enum_resolved_by_a
);

// Without the setting, the pools find the per-tenant types themselves.
attacks_on!(
    async_shared_pool_per_tenant_types_found_out,
    super::Env::with_defaults(super::Kind::Shared),
    false;
    a_per_tenant_enum_resolved_by_a
);
attacks_on!(
    async_transaction_scoped_per_tenant_types_found_out_behind_pgbouncer,
    super::Env::with_defaults(super::Kind::Scoped),
    false;
    a_per_tenant_enum_resolved_by_a
);

/// A database without per-tenant types costs a pool with the default
/// setting nothing: its one connection serves one tenant after another.
#[test]
fn without_per_tenant_types_the_default_keeps_one_connection_for_every_tenant() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    // A type in the shared schema is one type for every tenant.
    db.conn()
        .batch_execute("CREATE TYPE public.shared_mood AS ENUM ('happy', 'sad')")
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let pool = AsyncSharedPool::builder(db.url())
        .max_size(1)
        .build()
        .unwrap();
    let pid = |who: usize| -> i32 {
        rt.block_on(async {
            let mut conn = pool.get_for(&tenant(who)).await.unwrap();
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
                "pg_backend_pid()",
            ))
            .get_result(&mut *conn)
            .await
            .unwrap()
        })
    };
    let first = pid(0);
    assert_eq!(pid(1), first, "another tenant got a new connection");
    assert_eq!(pid(0), first, "the first tenant got a new connection");
}

/// `per_tenant_types(true)` costs nothing for the same tenant: the
/// connection is kept; for another tenant it is replaced.
#[test]
fn per_tenant_types_keeps_the_connection_for_the_same_tenant_only() {
    let env = Env::with_per_tenant_types(Kind::Shared);
    let pid = |who: usize| {
        let mut pid = None;
        attacks::Pool::as_user(&env, who, &mut |s| {
            pid = s.text("SELECT pg_backend_pid()::text AS v")
        })
        .unwrap();
        pid.unwrap()
    };
    let first = pid(0);
    assert_eq!(pid(0), first, "the same tenant got another connection");
    assert_ne!(pid(1), first, "another tenant got the same connection");
}
