//! Test your own multi-tenant application against a real PostgreSQL.
//!
//! What django-tenants' `TenantTestCase` gives Django tests: every test gets
//! a database of its own, migrated (shared schema and tenants), with the
//! tenants it asked for already created and the pools an application needs
//! already built, so the test starts at the interesting part. Tests run in
//! parallel without seeing each other's rows.
//!
//! ```no_run
//! use appschema::MigrationSet;
//! use appschema_test::TestDatabase;
//! use diesel::prelude::*;
//!
//! static MIGRATIONS: std::sync::LazyLock<MigrationSet> = std::sync::LazyLock::new(|| {
//!     // In your application: appschema::include_migrations!()
//!     MigrationSet::from_parts([(
//!         "2024-01-01-000000_orders",
//!         appschema::Scope::Isolated,
//!         "CREATE TABLE orders (id bigserial PRIMARY KEY, total int8 NOT NULL)",
//!     )])
//! });
//!
//! // #[test]
//! fn each_tenant_sees_only_its_own_orders() -> QueryResult<()> {
//!     let db = TestDatabase::builder(&MIGRATIONS)
//!         .tenants(["acme.example.com", "globex.example.com"])
//!         .build();
//!     // A pooled connection on "acme_example_com", "public":
//!     let mut acme = db.conn_for("acme.example.com");
//!     diesel::sql_query("INSERT INTO orders (total) VALUES (10)").execute(&mut *acme)?;
//!     let mut globex = db.conn_for("globex.example.com");
//!     let count: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
//!         "(SELECT count(*) FROM orders)",
//!     ))
//!     .get_result(&mut *globex)?;
//!     assert_eq!(count, 0);
//!     // Hand db.pool() (a SharedPool), db.registry_pool() or db.resolver()
//!     // to the code under test, e.g. your axum router.
//!     Ok(())
//! }
//! # fn main() { each_tenant_sees_only_its_own_orders().unwrap() }
//! ```
//!
//! Where the server comes from: the PostgreSQL named by `DATABASE_URL`, or
//! else a throwaway cluster this process starts on first use (its server
//! binaries must be installed: Debian's `postgresql` package) and deletes
//! when it exits, however it exits (see `appschema-tempdb`).
//!
//! Why it is fast: the first test that asks for a given migration set,
//! tenant list and spare count builds a **template database** (migrates it,
//! creates the tenants, builds the spares); that test and every later one get
//! a copy of it (`CREATE DATABASE .. TEMPLATE ..`, a file copy), whatever the
//! number of migrations and tenants. A copy costs about what creating an
//! empty database does, so on a throwaway server two copies per template are
//! made ahead in background threads while tests run, and a set-up usually
//! just takes one (under a millisecond; BENCHMARKS.md). The template is named after a hash of
//! what it holds (`appschema_tpl_<hash>`), so a changed migration gets a new
//! one. It is reused by later test processes on a `DATABASE_URL` server, and
//! never connected to after it is built (`ALLOW_CONNECTIONS false`, so a
//! stray session cannot block the copies); drop old `appschema_tpl_*`
//! databases there at will. Each test's own database is dropped when its
//! [`TestDatabase`] is.
//!
//! Async applications (diesel-async): with the `async` feature,
//! [`TestDatabase::async_pool`] is an `AsyncSharedPool` on the same
//! database and [`TestDatabase::async_conn_for`] a connection from it on a
//! tenant's path, for `#[tokio::test]`s (the crate's `tests/async_http.rs`
//! is the README's async HTTP test recipe).
//!
//! Add it as a dev-dependency only: `appschema-test = "0.1"` under
//! `[dev-dependencies]` (`features = ["async"]` for the async pool).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod template;

use std::fmt;
use std::sync::Arc;
#[cfg(feature = "async")]
use std::sync::OnceLock;
use std::time::Duration;

use appschema_core::provision::{self, NewTenant, Source};
use appschema_core::registry::{self, Tenant};
use appschema_core::resolve::Resolver;
use appschema_core::{MigrationSet, PublicName, SharedPool, TenantConnection};
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{Connection, PgConnection};

pub use appschema_tempdb::{server, Server, TestDb};

/// A plain r2d2 pool on the shared schema: what [`Resolver`] reads the
/// tenant registry through.
pub type RegistryPool = Pool<ConnectionManager<PgConnection>>;

/// Why a test database could not be made ready.
#[derive(Debug, Clone)]
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// What a [`TestDatabase`] is to hold. Made by [`TestDatabase::builder`].
#[derive(Debug, Clone)]
pub struct TestDatabaseBuilder {
    migrations: Arc<MigrationSet>,
    tenants: Vec<String>,
    spares: usize,
    pool_size: u32,
}

impl TestDatabaseBuilder {
    /// Tenants to create, by public name (`acme.example.com`), each in the
    /// schema derived from its name (`acme_example_com`; see
    /// [`provision::derive_schema_name`]), built by the migrations. Default:
    /// none.
    pub fn tenants<I, S>(mut self, public_names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tenants = public_names.into_iter().map(Into::into).collect();
        self
    }

    /// Spare schemas to keep ready besides the tenants, for code under test
    /// that signs tenants up with [`Source::Spare`] (and for
    /// [`TestDatabase::create_tenant`]). Default: 0.
    pub fn spares(mut self, count: usize) -> Self {
        self.spares = count;
        self
    }

    /// The most connections [`TestDatabase::pool`] opens. Default: 4. Both
    /// pools open connections only when first asked for one.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }

    /// The database, ready. Panics with the reason when it cannot be had
    /// (no server, a migration failing): this is for tests.
    pub fn build(self) -> TestDatabase {
        self.try_build()
            .unwrap_or_else(|e| panic!("appschema-test: cannot set up a test database: {e}"))
    }

    /// Like [`TestDatabaseBuilder::build`], returning the error.
    pub fn try_build(self) -> Result<TestDatabase, Error> {
        let names = self
            .tenants
            .iter()
            .map(|name| {
                PublicName::new(name).map_err(|e| Error::new(format!("tenant `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // On a throwaway Citus cluster (APPSCHEMA_TEST_CITUS=1) each test's
        // database is built, not copied: a copy of a Citus database would
        // need its copies on every node made at once.
        let (db, template) = if appschema_tempdb::server().citus().is_some() {
            let db = TestDb::try_new().map_err(|e| Error::new(e.to_string()))?;
            template::fill(db.url(), &self.migrations, &names, self.spares)?;
            (db, None)
        } else {
            let template = template::ready(&self.migrations, &names, self.spares)?;
            (template.copy()?, Some(template))
        };
        let pool = SharedPool::builder(db.url())
            .max_size(self.pool_size)
            .min_idle(0)
            .connection_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::new(format!("cannot build the SharedPool: {e}")))?;
        let registry_pool = Pool::builder()
            .max_size(2)
            .min_idle(Some(0))
            .build(ConnectionManager::<PgConnection>::new(db.url()))
            .map_err(|e| Error::new(format!("cannot build the registry pool: {e}")))?;
        let tenants = match template.as_ref().and_then(|t| t.tenants.get()) {
            Some(tenants) => tenants.clone(),
            None => {
                let tenants = read_tenants(db.url(), &names)?;
                match &template {
                    Some(template) => template.tenants.get_or_init(|| tenants).clone(),
                    None => tenants,
                }
            }
        };
        Ok(TestDatabase {
            tenants,
            migrations: self.migrations,
            #[cfg(feature = "async")]
            pool_size: self.pool_size,
            #[cfg(feature = "async")]
            async_pool: OnceLock::new(),
            pool,
            registry_pool,
            db,
        })
    }
}

/// One test's database: a copy of the migrated template, with its tenants
/// and pools. Dropped (connections closed, database dropped) with this value.
pub struct TestDatabase {
    tenants: Vec<Tenant>,
    migrations: Arc<MigrationSet>,
    #[cfg(feature = "async")]
    pool_size: u32,
    // Fields drop in order: the pools close their connections before the
    // database goes (which is dropped `WITH (FORCE)`: an async connection
    // closes on its runtime, possibly after).
    #[cfg(feature = "async")]
    async_pool: OnceLock<appschema_async::AsyncSharedPool>,
    pool: SharedPool,
    registry_pool: RegistryPool,
    db: TestDb,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("db", &self.db)
            .field("tenants", &self.tenants)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A test database migrated with `migrations`, and with the tenants and
    /// spares the builder names.
    pub fn builder(migrations: &MigrationSet) -> TestDatabaseBuilder {
        TestDatabaseBuilder {
            migrations: Arc::new(migrations.clone()),
            tenants: Vec::new(),
            spares: 0,
            pool_size: 4,
        }
    }

    /// The database's connection URL (hand it to code that connects itself).
    pub fn url(&self) -> &str {
        self.db.url()
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        self.db.name()
    }

    /// The migrations it was built with (provisioning in the code under
    /// test needs them).
    pub fn migrations(&self) -> &Arc<MigrationSet> {
        &self.migrations
    }

    /// The pool tenant work runs on: every tenant, each checkout on the
    /// tenant's `search_path`. Clones share the connections.
    pub fn pool(&self) -> &SharedPool {
        &self.pool
    }

    /// The async pool (diesel-async) tenant work runs on: an
    /// `AsyncSharedPool` on this database, each checkout on the tenant's
    /// `search_path`, at most [`TestDatabaseBuilder::pool_size`]
    /// connections. Built on first call (no connection is opened until a
    /// checkout); clones share the connections. Feature `async`.
    ///
    /// ```no_run
    /// # static MIGRATIONS: std::sync::LazyLock<appschema::MigrationSet> =
    /// #     std::sync::LazyLock::new(|| appschema::MigrationSet::new(Vec::new()));
    /// # async fn t() {
    /// let db = appschema_test::TestDatabase::builder(&MIGRATIONS)
    ///     .tenants(["acme.localhost"])
    ///     .build();
    /// let pool = db.async_pool().clone(); // hand it to your async app
    /// # }
    /// ```
    #[cfg(feature = "async")]
    pub fn async_pool(&self) -> &appschema_async::AsyncSharedPool {
        self.async_pool.get_or_init(|| {
            appschema_async::AsyncSharedPool::builder(self.db.url())
                .max_size(self.pool_size)
                .connection_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_else(|e| panic!("appschema-test: cannot build the AsyncSharedPool: {e}"))
        })
    }

    /// A connection from [`TestDatabase::async_pool`] on `public_name`'s
    /// `search_path` (its schema, then `public`). Panics on failure.
    /// Feature `async`.
    #[cfg(feature = "async")]
    pub async fn async_conn_for(
        &self,
        public_name: &str,
    ) -> appschema_async::AsyncTenantConnection {
        let schema = &self.tenant(public_name).schema_name;
        self.async_pool()
            .get_for(schema)
            .await
            .unwrap_or_else(|e| panic!("appschema-test: no async connection for {schema}: {e}"))
    }

    /// A plain r2d2 pool on the shared schema, for the [`Resolver`] (see
    /// [`TestDatabase::resolver`]). Clones share the connections.
    pub fn registry_pool(&self) -> &RegistryPool {
        &self.registry_pool
    }

    /// A new resolver (host → tenant) reading this database's registry, with
    /// the default cache.
    pub fn resolver(&self) -> Resolver {
        Resolver::builder().build(self.registry_pool.clone())
    }

    /// The tenants the builder named, in that order.
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// The tenant answering to `public_name` among those the builder named.
    /// Panics when there is none.
    pub fn tenant(&self, public_name: &str) -> &Tenant {
        let wanted = PublicName::new(public_name)
            .unwrap_or_else(|e| panic!("appschema-test: `{public_name}`: {e}"));
        self.tenants
            .iter()
            .find(|t| t.public_name == wanted.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "appschema-test: no tenant `{public_name}` here; the builder named {:?}",
                    self.tenants
                        .iter()
                        .map(|t| &t.public_name)
                        .collect::<Vec<_>>()
                )
            })
    }

    /// A connection from [`TestDatabase::pool`] on `public_name`'s
    /// `search_path` (its schema, then `public`). Panics on failure.
    pub fn conn_for(&self, public_name: &str) -> TenantConnection {
        let schema = &self.tenant(public_name).schema_name;
        self.pool
            .get_for(schema)
            .unwrap_or_else(|e| panic!("appschema-test: no connection for {schema}: {e}"))
    }

    /// A new plain connection to the database (its `search_path` the
    /// server's default: shared tables, the registry).
    pub fn conn(&self) -> PgConnection {
        self.db.conn()
    }

    /// Creates one more tenant, as an application's sign-up would: from a
    /// spare schema if one is left ([`TestDatabaseBuilder::spares`]), else by
    /// the migrations. Panics on failure.
    pub fn create_tenant(&self, public_name: &str) -> Tenant {
        let mut conn = self.conn();
        let created = NewTenant::new(public_name)
            .map(|request| request.source(Source::Spare))
            .and_then(|request| provision::create_tenant(&mut conn, &*self.migrations, &request))
            .unwrap_or_else(|e| panic!("appschema-test: cannot create `{public_name}`: {e}"));
        created.tenant
    }
}

/// The registry rows of `names`, in that order.
fn read_tenants(url: &str, names: &[PublicName]) -> Result<Vec<Tenant>, Error> {
    let mut conn = connect(url)?;
    names
        .iter()
        .map(|name| {
            registry::find(&mut conn, name)
                .map_err(|e| Error::new(format!("cannot read the registry: {e}")))?
                .ok_or_else(|| Error::new(format!("tenant `{name}` missing from the copy")))
        })
        .collect()
}

pub(crate) fn connect(url: &str) -> Result<PgConnection, Error> {
    PgConnection::establish(url).map_err(|e| Error::new(format!("cannot connect to {url}: {e}")))
}
