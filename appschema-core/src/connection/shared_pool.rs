//! One pool for every tenant: the switch to a tenant's `search_path` runs on
//! each connection the checkout takes, in place of r2d2's own checkout test,
//! so it costs no extra round trip. The checkout's rules are the protocol's
//! steps (`SessionSwitch`, `CheckoutAttempts`), the async pool's too.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::CacheSize;
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, PgConnection};

use super::affinity::{Handed, Lot, Pick, PoolView, DEFAULT_MAX_TENANTS_PER_CONNECTION};
use super::drive::run_session_switch;
use super::error::{describe_target, ConnectionError};
use super::hygiene::with_startup_options;
use super::lookup::PublicNameLookup;
use super::plan_watch::PlanWatch;
use super::protocol::{AfterRefusal, CheckoutAttempts};
use super::search_path::{prepare_session_switch, write_session_switch, SearchPath};
use super::state::PoolState;
use super::types::PerTenantTypes;
use crate::name::SchemaName;
use crate::observe::{self, PoolKind::Sync};
use crate::redact::{redact_connection_error, redact_url};

/// Why a pool could not open a connection
/// (the sync pools' r2d2 manager and the async pools' deadpool one).
#[derive(Debug)]
pub enum ManagerError {
    /// Opening a connection failed.
    Connect(diesel::ConnectionError),
    /// The switch query failed: the connection is dead or unusable.
    Switch(diesel::result::Error),
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::Connect(e) => write!(f, "cannot connect: {e}"),
            ManagerError::Switch(e) => write!(f, "connection discarded, switch failed: {e}"),
        }
    }
}

impl std::error::Error for ManagerError {}

/// The [`r2d2::ManageConnection`] behind [`SharedPool`]: opens connections
/// with the switch prepared, and closes on return the ones that must not be
/// reused.
pub struct TenantManager {
    /// The caller's URL with start-up options (see `with_startup_options`).
    url: String,
    /// The `search_path` those options set: the shared-only path.
    default_path: String,
    statement_cache: bool,
    /// Given to each connection's watch when the statement cache is on (see
    /// [`SharedPoolBuilder::per_tenant_types`]).
    per_tenant_types: Arc<PerTenantTypes>,
    /// See [`SharedPoolBuilder::max_tenants_per_connection`].
    max_tenants: Option<usize>,
}

impl fmt::Debug for TenantManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantManager")
            .field("url", &redact_url(&self.url))
            .field("default_path", &self.default_path)
            .field("statement_cache", &self.statement_cache)
            .finish_non_exhaustive()
    }
}

impl r2d2::ManageConnection for TenantManager {
    type Connection = PgConnection;
    type Error = ManagerError;

    fn connect(&self) -> Result<PgConnection, ManagerError> {
        let mut conn = PgConnection::establish(&self.url)
            .map_err(|e| ManagerError::Connect(redact_connection_error(e, &self.url)))?;
        if !self.statement_cache {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        prepare_session_switch(&mut conn, &self.default_path).map_err(ManagerError::Switch)?;
        if self.statement_cache {
            PlanWatch::install_with_types(&mut conn, Arc::clone(&self.per_tenant_types));
        } else {
            PlanWatch::install(&mut conn);
        }
        if let Some(log) = PlanWatch::log_in(conn.instrumentation()) {
            log.set_limit(self.max_tenants);
        }
        Ok(conn)
    }

    /// Never run: the manager lives only inside [`SharedPool`], whose r2d2
    /// pool has `test_on_check_out` off because its checkout switches
    /// (and so checks) each connection it takes itself.
    fn is_valid(&self, _conn: &mut PgConnection) -> Result<(), ManagerError> {
        Ok(())
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        // A connection that comes back during a panic, with a diesel
        // transaction still open, holding a cached statement PostgreSQL
        // now refuses, or after a query found it lost (see `PlanWatch`),
        // is closed rather than reused; so is one that served its limit of
        // tenants (see `affinity`).
        std::thread::panicking() || (must_close(conn) && observe::retiring(conn))
    }
}

/// Whether a returned connection must be closed rather than reused or
/// parked (see [`TenantManager::has_broken`]).
fn must_close(conn: &mut PgConnection) -> bool {
    R2D2Connection::is_broken(conn)
        || PlanWatch::saw_stale_plan(conn)
        || PlanWatch::saw_connection_lost_in(conn.instrumentation())
        || PlanWatch::log_in(conn.instrumentation()).is_some_and(|log| log.retire_due())
}

/// Builds a [`SharedPool`]. Every setter documents its default. Its
/// `Debug` shows the URL with the password replaced by `***`.
#[derive(Clone)]
pub struct SharedPoolBuilder {
    url: String,
    path: SearchPath,
    max_size: u32,
    min_idle: u32,
    connection_timeout: Duration,
    max_lifetime: Option<Duration>,
    idle_timeout: Option<Duration>,
    statement_cache: bool,
    per_tenant_types: Option<bool>,
    max_tenants: Option<usize>,
    affinity: bool,
}

impl fmt::Debug for SharedPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPoolBuilder")
            .field("url", &redact_url(&self.url))
            .field("path", &self.path)
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("connection_timeout", &self.connection_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("statement_cache", &self.statement_cache)
            .field("per_tenant_types", &self.per_tenant_types)
            .field("max_tenants", &self.max_tenants)
            .field("affinity", &self.affinity)
            .finish()
    }
}

impl SharedPoolBuilder {
    /// How many distinct tenants one connection may serve before it is
    /// closed (when returned) and replaced: a backend keeps catalog caches
    /// for every tenant schema it touched until it exits (~70 KiB each),
    /// so this bounds its memory whatever the number of tenants.
    /// Shared-only checkouts do not count; a tenant *created* on a checked
    /// out connection ([`crate::provision::create_tenant`] and the other
    /// creating calls) does. `None`: no bound (only
    /// `max_lifetime` limits growth). Default: 500
    /// ([`DEFAULT_MAX_TENANTS_PER_CONNECTION`](crate::connection::DEFAULT_MAX_TENANTS_PER_CONNECTION)).
    ///
    /// ```no_run
    /// use appschema::connection::SharedPool;
    ///
    /// // No backend ever serves more than 200 tenants.
    /// let pool = SharedPool::builder("postgres:///app")
    ///     .max_tenants_per_connection(Some(200))
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_tenants_per_connection(mut self, n: Option<usize>) -> Self {
        self.max_tenants = n;
        self
    }

    /// Whether a checkout for a tenant prefers a connection that last
    /// served that tenant (its statements already planned for the tenant's
    /// path, which PostgreSQL would otherwise re-plan). A *lot* on top of
    /// the r2d2 pool does it:
    ///
    /// - while every connection is busy, checkouts queue in the lot by
    ///   tenant, and a returned connection goes to the oldest queued
    ///   checkout for the tenant it served, else to the oldest queued
    ///   checkout; a queued checkout is passed over at most
    ///   [`MAX_PASSED_OVER`](crate::connection::MAX_PASSED_OVER) times, so
    ///   none starves;
    /// - while none is queued, a returned connection is parked under its
    ///   tenant, and a checkout takes its tenant's parked connection, else
    ///   an idle one of the pool, else the one parked last for another
    ///   tenant, so it never waits while a connection sits parked.
    ///
    /// Every checkout still runs the full reset and switch. Parked
    /// connections count as in use in [`SharedPool::state`]; one parked
    /// past `idle_timeout` goes back to the pool at the next checkout;
    /// [`SharedPool::queued`] counts queued checkouts.
    /// Default: `false` (measured in BENCHMARKS.md, *Tenant affinity*).
    pub fn tenant_affinity(mut self, on: bool) -> Self {
        self.affinity = on;
        self
    }

    /// The schemas after the tenant's. Default: [`SearchPath::new`] (`public`).
    pub fn search_path(mut self, path: SearchPath) -> Self {
        self.path = path;
        self
    }

    /// Most connections open at once. Default: 10.
    pub fn max_size(mut self, n: u32) -> Self {
        self.max_size = n;
        self
    }

    /// Idle connections kept open ahead of demand (at most `max_size`), so
    /// a burst of requests does not wait for connections to be opened: the
    /// pool opens them when built and keeps that many open, replacing
    /// those closed (broken, past `max_lifetime`).
    /// Default: 0, connections are opened by the checkouts that need them.
    /// The same setting, default and meaning as on the async pool; only
    /// [`build`](Self::build) differs: this one waits (up to the
    /// `connection_timeout`) until the first `n` are open, the async one
    /// cannot block and opens them in the background.
    ///
    /// ```no_run
    /// use appschema::connection::SharedPool;
    ///
    /// // Four connections are open when `build` returns, and kept open.
    /// let pool = SharedPool::builder("postgres:///app")
    ///     .max_size(16)
    ///     .min_idle(4)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn min_idle(mut self, n: u32) -> Self {
        self.min_idle = n;
        self
    }

    /// How long a checkout waits before failing with
    /// [`ConnectionError::PoolExhausted`] or [`ConnectionError::DatabaseDown`].
    /// Default: 30 s.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Age at which a connection is closed and replaced. A backend caches
    /// catalog entries for every tenant schema it has touched and never
    /// frees them; this bounds that growth (see BENCHMARKS.md). Default:
    /// 30 min.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Idle time after which a connection is closed. Default: 10 min.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Whether diesel keeps prepared statements per connection. Default:
    /// `true`. With it, a statement prepared while a connection was on one
    /// tenant and run on another whose table has a different shape fails with
    /// PostgreSQL's `cached plan must not change result type` (never another
    /// tenant's rows), as does a cached statement after a migration changed
    /// its result type; the connection is then closed when it is returned,
    /// so each connection fails such a query at most once. With `false`
    /// every query is planned afresh and such statements just work, at a
    /// planning cost per query.
    pub fn prepared_statement_cache(mut self, on: bool) -> Self {
        self.statement_cache = on;
        self
    }

    /// Whether the database has custom types (enums, domains, …) that exist
    /// once per tenant schema, declared without a schema so each tenant's
    /// path resolves its own. Default: found out from the database (one
    /// catalog query at the first change of tenant, repeated every 5 s
    /// until the answer is yes), as the async pools do.
    ///
    /// With such types, a statement diesel prepared for one tenant that
    /// returns one (`SELECT mood FROM …`) has another result type for the
    /// next tenant, which PostgreSQL refuses (`cached plan must not change
    /// result type`) on every change of tenant. So a checkout for another
    /// tenant than the connection's last one forgets the connection's
    /// prepared statements (diesel's cache emptied, its statements
    /// deallocated on the server, in one more round trip), and they are
    /// prepared again for the new tenant. `false` for types only in
    /// schemas no tenant path names; nothing changes with the
    /// [`prepared_statement_cache`](Self::prepared_statement_cache) off.
    ///
    /// ```no_run
    /// use appschema::connection::SharedPool;
    /// let pool = SharedPool::builder("postgres:///app")
    ///     .per_tenant_types(true)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn per_tenant_types(mut self, on: bool) -> Self {
        self.per_tenant_types = Some(on);
        self
    }

    /// Builds a pool that serves only `tenant`: a [`TenantPool`], with the
    /// same checkout (switch and session hygiene) as a [`SharedPool`].
    pub fn build_for(self, tenant: SchemaName) -> Result<TenantPool, ConnectionError> {
        Ok(TenantPool {
            pool: self.build()?,
            tenant,
        })
    }

    /// Builds the pool, opening `min_idle` connections (waiting up to the
    /// connection timeout for them; with the default `min_idle` of 0 it
    /// opens none and does not wait).
    pub fn build(self) -> Result<SharedPool, ConnectionError> {
        let default_path = self.path.shared_only();
        let manager = TenantManager {
            url: with_startup_options(&self.url, &default_path),
            default_path,
            statement_cache: self.statement_cache,
            per_tenant_types: Arc::new(PerTenantTypes::new(self.per_tenant_types, &self.path)),
            max_tenants: self.max_tenants,
        };
        let pool = r2d2::Pool::builder()
            .max_size(self.max_size)
            .min_idle(Some(self.min_idle.min(self.max_size)))
            .connection_timeout(self.connection_timeout)
            .max_lifetime(self.max_lifetime)
            .idle_timeout(self.idle_timeout)
            // The checkout switches each connection it takes itself (the
            // switch replaces r2d2's test): see `SharedPool::checkout`.
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| ConnectionError::DatabaseDown {
                target: "shared work".to_string(),
                timeout: self.connection_timeout,
                message: e.to_string(),
            })?;
        let lot = self.affinity.then(|| {
            let pool = pool.clone();
            Lot::new(move || {
                let state = pool.state();
                PoolView {
                    idle: state.idle_connections as usize,
                    room: state.connections < pool.max_size(),
                }
            })
        });
        Ok(SharedPool {
            pool,
            path: self.path,
            timeout: self.connection_timeout,
            lot,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
        })
    }
}

/// One r2d2 pool for all tenants. [`get_for`](SharedPool::get_for) hands out
/// a connection already on the tenant's `search_path`; the switch replaces
/// the `SELECT 1` a plain r2d2 pool sends on every checkout, so it costs no
/// extra round trip compared with one.
///
/// Every checkout returns the session to its connect-time state (settings,
/// temporary tables, cursors, `LISTEN`, roles, advisory locks, `lastval()`:
/// see the README's *Session hygiene*) and sets the path, whatever the
/// connection was on before: user code may have run `SET search_path`,
/// `RESET ALL` or `DISCARD ALL`, or rolled back a transaction, so the
/// library never trusts what it last set. The tenant's schema is checked to
/// exist (and be usable by the login role) first; a connection whose
/// checkout fails is closed and another tried (at most the pool's size plus
/// one, within `connection_timeout`; then the checkout fails with the last
/// refusal).
///
/// A transaction opened with a raw `BEGIN` (not through
/// `Connection::transaction`) and left open is invisible to diesel, so the
/// connection comes back to the pool inside it. The switch would run inside
/// that transaction, where a later `ROLLBACK` would undo it; so the switch
/// statement also checks, in the same round trip, that it started its own
/// transaction, and a connection found inside a transaction block is
/// closed and another tried.
///
/// The reset, the checks and the switch are one simple-protocol message
/// (the checks are prepared once per connection with SQL `PREPARE` and run
/// as an `EXECUTE`): the open-transaction check needs that protocol.
///
/// ```no_run
/// use appschema::{SchemaName, connection::SharedPool};
/// use diesel::prelude::*;
///
/// let pool = SharedPool::builder("postgres:///app").build()?;
/// let acme = SchemaName::new("acme").unwrap();
/// let mut conn = pool.get_for(&acme)?; // on "acme", "public"
/// diesel::sql_query("SELECT * FROM orders").execute(&mut *conn)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SharedPool {
    pool: r2d2::Pool<TenantManager>,
    path: SearchPath,
    timeout: Duration,
    /// Idle connections parked by tenant (see `affinity`); `None` without
    /// tenant affinity.
    lot: Option<Lot<Pooled>>,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
}

type Pooled = r2d2::PooledConnection<TenantManager>;

impl SharedPool {
    /// A builder for a pool connecting to `url`.
    pub fn builder(url: impl Into<String>) -> SharedPoolBuilder {
        SharedPoolBuilder {
            url: url.into(),
            path: SearchPath::new(),
            max_size: 10,
            min_idle: 0,
            connection_timeout: Duration::from_secs(30),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            statement_cache: true,
            per_tenant_types: None,
            max_tenants: Some(DEFAULT_MAX_TENANTS_PER_CONNECTION),
            affinity: false,
        }
    }

    /// A connection on `tenant`'s `search_path`.
    pub fn get_for(&self, tenant: &SchemaName) -> Result<TenantConnection, ConnectionError> {
        observe::checkout(&self.pool, Some(tenant), || {
            self.checkout(Some(tenant), None)
        })
    }

    /// A checkout for a unit of work (`run_retrying`, `read_retrying`…):
    /// the unit's `begin` travels in the checkout's message, so the
    /// connection comes back inside the unit's transaction, one round trip
    /// sooner (see `write_checkout_message`).
    pub(crate) fn get_for_unit(
        &self,
        tenant: Option<&SchemaName>,
        begin: &'static str,
    ) -> Result<TenantConnection, ConnectionError> {
        observe::checkout(&self.pool, tenant, || self.checkout(tenant, Some(begin)))
    }

    /// A connection on the shared-only `search_path` (shared schema and
    /// extras, no tenant), for work that belongs to no tenant.
    pub fn get_shared(&self) -> Result<TenantConnection, ConnectionError> {
        observe::checkout(&self.pool, None, || self.checkout(None, None))
    }

    /// Resolves `public_name` (a host name or alias) through the registry and
    /// returns a connection on that tenant's path. Costs a registry look-up
    /// on top of the checkout: cache the tenant's schema where possible.
    pub fn get_for_public_name(
        &self,
        public_name: &str,
    ) -> Result<TenantConnection, ConnectionError> {
        let lookup = PublicNameLookup::new(public_name)?;
        let _span = observe::tenant_span(public_name).entered();
        let tenant = lookup.run(&mut *self.get_shared()?)?;
        _span.record("schema", tenant.schema_name.as_str());
        self.get_for(&tenant.schema_name)
    }

    /// The search path configuration.
    pub fn search_path(&self) -> &SearchPath {
        &self.path
    }

    /// The pool's connections: open, idle, `max_size` (see [`PoolState`]).
    pub fn state(&self) -> PoolState {
        PoolState::of_r2d2(&self.pool)
    }

    /// How many checkouts are queued for a returned connection (with
    /// tenant affinity, while every connection is busy; see
    /// [`tenant_affinity`](SharedPoolBuilder::tenant_affinity)). Always 0
    /// without affinity.
    pub fn queued(&self) -> usize {
        self.lot.as_ref().map_or(0, Lot::queued)
    }

    /// Takes a connection ([`SharedPool::obtain`]) and runs the switch
    /// step on it; a connection whose switch is refused is closed and
    /// another taken, as [`CheckoutAttempts`] decides (the async pool's
    /// rule too). With a unit's `begin`, the message ends with it and the
    /// connection comes back inside the unit's transaction.
    fn checkout(
        &self,
        tenant: Option<&SchemaName>,
        begin: Option<&'static str>,
    ) -> Result<TenantConnection, ConnectionError> {
        let mut path = String::new();
        self.path.write(&mut path, tenant);
        let first = tenant.map_or(self.path.shared(), SchemaName::as_str);
        let mut sql = String::new();
        write_session_switch(&mut sql, &path, first);
        let deadline = Instant::now() + self.timeout;
        let max_size = usize::try_from(self.pool.max_size()).unwrap_or(usize::MAX);
        let mut attempts = CheckoutAttempts::new(max_size, tenant, first);
        loop {
            let mut conn = self.obtain(tenant, deadline, attempts.last())?;
            let refusal = match run_session_switch(&mut conn, &sql, begin) {
                Ok(()) => return Ok(self.handed_out(conn, tenant)),
                Err(refusal) => refusal,
            };
            match attempts.refused(refusal, Instant::now() >= deadline) {
                AfterRefusal::Fail(error) => {
                    self.give_back(tenant, conn);
                    return Err(error);
                }
                AfterRefusal::CloseAndFail(error) => {
                    close(conn);
                    self.vacated();
                    return Err(error);
                }
                AfterRefusal::CloseAndRetry => {
                    close(conn);
                    self.vacated();
                }
            }
        }
    }

    /// The connection a checkout runs its switch on: with tenant affinity,
    /// one parked under `tenant`, else an idle one of the pool, else one
    /// parked under another tenant, else the pool's next (waiting up to
    /// `deadline`); the `last` attempt goes to the pool whatever is parked.
    fn obtain(
        &self,
        tenant: Option<&SchemaName>,
        deadline: Instant,
        last: bool,
    ) -> Result<Pooled, ConnectionError> {
        let waiting = match &self.lot {
            Some(lot) if last => Some(lot.wait()),
            Some(lot) => {
                if let Some(idle) = self.idle_timeout {
                    // Back to the pool, whose reaper closes them when due.
                    drop(lot.release_idle(idle));
                }
                let mut tries = self.pool.max_size() + 1;
                loop {
                    tries -= 1;
                    match lot.pick(tenant, tries > 0) {
                        Pick::Warm(conn) | Pick::Stolen(conn) => return Ok(conn),
                        // Every connection busy: wait for one handed over.
                        Pick::Queued(mut ticket) => match ticket.wait_until(deadline) {
                            Some(Handed::Conn { conn, .. }) => return Ok(conn),
                            Some(Handed::Pool(waiting)) => break Some(waiting),
                            None => {
                                return Err(ConnectionError::PoolExhausted {
                                    target: describe_target(tenant),
                                    timeout: self.timeout,
                                    max_size: self.pool.max_size(),
                                })
                            }
                        },
                        // Not registered as waiting: returns keep being
                        // parked. Taken by another thread meanwhile: pick
                        // again.
                        Pick::Idle => match self.pool.try_get() {
                            Some(conn) => return Ok(conn),
                            None => continue,
                        },
                        Pick::Pool(waiting) => break Some(waiting),
                    }
                }
            }
            None => None,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let conn = self
            .pool
            .get_timeout(remaining)
            .map_err(|e| ConnectionError::checkout_failed(&self.pool, tenant, self.timeout, e));
        drop(waiting);
        conn
    }

    /// Returns a connection a checkout will not use (its switch was
    /// refused, the connection is fine): with tenant affinity through the
    /// lot, so a queued checkout gets it.
    fn give_back(&self, tenant: Option<&SchemaName>, conn: Pooled) {
        match &self.lot {
            Some(lot) => drop(lot.park(tenant, conn)),
            None => drop(conn),
        }
    }

    /// With tenant affinity, tells the lot a connection was closed (a
    /// queued checkout goes to the pool for its replacement).
    fn vacated(&self) {
        if let Some(lot) = &self.lot {
            lot.vacated();
        }
    }

    /// Records the checkout in the connection's log and wraps it.
    fn handed_out(&self, mut conn: Pooled, tenant: Option<&SchemaName>) -> TenantConnection {
        if let Some(tenant) = tenant {
            if let Some(log) = PlanWatch::log_in(conn.instrumentation()) {
                observe::tenant_recorded(Sync, tenant, log.record(tenant), log.served());
            }
        }
        TenantConnection {
            conn: Some(conn),
            tenant: tenant.cloned(),
            lot: self.lot.clone(),
            max_lifetime: self.max_lifetime,
        }
    }
}

/// Closes `conn` when it is dropped (see [`TenantManager::has_broken`]):
/// a connection whose switch was refused.
fn close(mut conn: Pooled) {
    if let Some(log) = PlanWatch::log_in(conn.instrumentation()) {
        log.discard();
    }
}

/// A per-tenant pool: a [`SharedPool`] pinned to one tenant, built with
/// [`SharedPoolBuilder::build_for`]. Every checkout runs the shared pool's
/// switch and session hygiene, which a plain r2d2 pool with a
/// [`TenantCustomizer`](super::TenantCustomizer) cannot do (r2d2 runs a
/// customizer only when it opens a connection): settings, temporary tables,
/// cursors, `LISTEN`, roles and advisory locks one user leaves on a
/// connection never reach the next user of the same tenant.
///
/// ```no_run
/// use appschema::{SchemaName, connection::SharedPool};
/// use diesel::prelude::*;
///
/// let acme = SchemaName::new("acme").unwrap();
/// let pool = SharedPool::builder("postgres:///app").max_size(4).build_for(acme)?;
/// let mut conn = pool.get()?; // on "acme", "public"
/// diesel::sql_query("SELECT * FROM orders").execute(&mut *conn)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TenantPool {
    pool: SharedPool,
    tenant: SchemaName,
}

impl TenantPool {
    /// A connection on the tenant's `search_path`, its session reset.
    pub fn get(&self) -> Result<TenantConnection, ConnectionError> {
        self.pool.get_for(&self.tenant)
    }

    /// The tenant this pool serves.
    pub fn tenant(&self) -> &SchemaName {
        &self.tenant
    }

    /// The pool's connections: open, idle, `max_size` (see [`PoolState`]).
    pub fn state(&self) -> PoolState {
        self.pool.state()
    }

    /// [`SharedPool::get_for_unit`] for this pool's tenant.
    pub(crate) fn get_for_unit(
        &self,
        begin: &'static str,
    ) -> Result<TenantConnection, ConnectionError> {
        self.pool.get_for_unit(Some(&self.tenant), begin)
    }
}

/// A pooled connection on a tenant's (or the shared-only) `search_path`.
/// Dereferences to [`PgConnection`]; returns to the pool when dropped
/// (parked by tenant, with tenant affinity).
pub struct TenantConnection {
    /// `None` only once dropped.
    conn: Option<Pooled>,
    tenant: Option<SchemaName>,
    lot: Option<Lot<Pooled>>,
    max_lifetime: Option<Duration>,
}

impl Drop for TenantConnection {
    fn drop(&mut self) {
        let (Some(lot), Some(mut conn)) = (self.lot.take(), self.conn.take()) else {
            return;
        };
        // What must be closed, or is due to be (`max_lifetime`: r2d2's
        // reaper closes it once idle), goes back to the pool, never to the
        // lot; dropping it here does that.
        let old = std::thread::panicking()
            || must_close(&mut conn)
            || self.max_lifetime.is_some_and(|max| {
                PlanWatch::log_in(conn.instrumentation()).is_some_and(|log| log.age() >= max)
            });
        if old {
            // Closed or idle in the pool now: a queued checkout goes there.
            drop(conn);
            lot.vacated();
        } else {
            drop(lot.park(self.tenant.as_ref(), conn));
        }
    }
}

const GONE: &str = "a TenantConnection holds its connection until dropped";

impl TenantConnection {
    /// The tenant this connection was checked out for (`None` for shared work).
    pub fn tenant(&self) -> Option<&SchemaName> {
        self.tenant.as_ref()
    }
}

impl fmt::Debug for TenantConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantConnection")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Deref for TenantConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect(GONE)
    }
}

impl DerefMut for TenantConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect(GONE)
    }
}
