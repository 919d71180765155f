//! What a pooled connection has served, and which idle connection a
//! checkout should take: the bound on tenants per backend and tenant
//! affinity, shared by the sync [`SharedPool`](super::SharedPool) and the
//! async pool (`appschema-async`).
//!
//! **The bound.** A backend keeps the catalog and relation cache entries of
//! every tenant schema it has touched (~50–70 KiB each) until it exits;
//! `max_lifetime` bounds that in time, not in tenants. Each connection
//! carries a [`TenantLog`] (inside its `PlanWatch`
//! instrumentation, so the log lives and dies with the connection, on both
//! clients): the distinct tenants it was checked out for. A connection that
//! has served the configured number of distinct tenants is closed when it
//! is returned, so no backend ever serves more than that many.
//!
//! **Affinity.** PostgreSQL re-plans every cached statement after the
//! `search_path` changes, so a checkout that lands on a connection already
//! on its tenant is markedly cheaper, even though it runs the very same
//! reset-and-switch message (hygiene is never skipped). Neither r2d2 nor
//! deadpool lets a checkout pick among idle connections, so [`Lot`] sits on
//! top of the pool: a returned connection is *parked* under the tenant it
//! served instead of going back to the pool, and a checkout for tenant T
//! takes, in this order,
//!
//! 1. a connection parked under T (warm: statements planned for T's path),
//! 2. an idle connection of the pool itself,
//! 3. the connection parked last under another tenant (stolen), so a
//!    checkout never waits while any connection sits parked (the latest,
//!    not the oldest: stealing the oldest cycled through every backend and
//!    cost more than the re-planning it saved, see BENCHMARKS.md),
//! 4. otherwise it waits on the pool (which may open a connection); while
//!    anyone waits there, returned connections go to the pool, not the lot,
//!    so a parked connection never starves a waiter.
//!
//! Why this and not partitioning tenants over connections: a fixed
//! partition starves a popular tenant (it gets its partition's connections
//! only) and needs a pool that can pick a connection by index, which
//! neither r2d2 nor deadpool is. Per-tenant idle lists keep every
//! connection usable by every tenant (step 3) and need only check-in and
//! check-out hooks.
//!
//! Every connection, parked or not, gets the full switch before it is
//! handed out: the lot decides only *which* connection, never whether the
//! checkout runs.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::name::SchemaName;

/// Default for the pools' `max_tenants_per_connection`. Measured
/// (BENCHMARKS.md, 4,000 tenants of 3 tables): a backend's memory contexts
/// stay under ~22 MiB and its private memory (`RssAnon`) under ~18 MB,
/// against 96 MiB / 101 MB unbounded.
pub const DEFAULT_MAX_TENANTS_PER_CONNECTION: usize = 500;

/// The distinct tenants one connection was checked out for, and whether it
/// is due to be closed. Kept inside the connection's
/// `PlanWatch`.
#[derive(Debug, Clone)]
pub struct TenantLog {
    limit: Option<usize>,
    /// Hashes of the schema names (a collision undercounts by one; at 64
    /// bits and a few hundred names, never in practice).
    served: HashSet<u64>,
    /// The hash of the tenant of the last checkout (0: none yet).
    last: u64,
    born: Instant,
    discard: bool,
}

impl Default for TenantLog {
    fn default() -> Self {
        TenantLog::new()
    }
}

impl TenantLog {
    /// An empty log with no limit.
    pub fn new() -> TenantLog {
        TenantLog {
            limit: None,
            served: HashSet::new(),
            last: 0,
            born: Instant::now(),
            discard: false,
        }
    }

    /// Sets how many distinct tenants the connection may serve (`None`:
    /// no limit).
    pub fn set_limit(&mut self, limit: Option<usize>) {
        self.limit = limit;
    }

    /// Records a checkout for `tenant`; whether the connection's last
    /// tenant checkout (if any) was for another tenant.
    pub fn record(&mut self, tenant: &SchemaName) -> bool {
        let mut hasher = DefaultHasher::new();
        tenant.as_str().hash(&mut hasher);
        let hash = hasher.finish();
        self.served.insert(hash);
        std::mem::replace(&mut self.last, hash) != hash
    }

    /// Counts `tenant` among the distinct tenants the connection has served
    /// without it being a checkout: a tenant *created* on the connection
    /// (its relations stay in the backend's caches as a served tenant's
    /// do, ~25 KiB each, measured in BENCHMARKS.md's *Scale*), so sign-ups
    /// on a pooled connection count towards its bound. The last
    /// checkout's tenant is unchanged.
    pub fn count(&mut self, tenant: &SchemaName) {
        let mut hasher = DefaultHasher::new();
        tenant.as_str().hash(&mut hasher);
        self.served.insert(hasher.finish());
    }

    /// How many distinct tenants the connection has served.
    pub fn served(&self) -> usize {
        self.served.len()
    }

    /// How long ago the connection was opened.
    pub fn age(&self) -> Duration {
        self.born.elapsed()
    }

    /// Marks the connection to be closed when it is returned.
    pub fn discard(&mut self) {
        self.discard = true;
    }

    /// Whether the connection was marked to be closed ([`TenantLog::discard`]).
    pub fn discarded(&self) -> bool {
        self.discard
    }

    /// Whether the connection must be closed rather than reused: it was
    /// marked, or it reached its limit of distinct tenants.
    pub fn retire_due(&self) -> bool {
        self.discard || self.limit.is_some_and(|limit| self.served.len() >= limit)
    }
}

/// Which connection a checkout takes (see the module docs).
#[derive(Debug)]
pub enum Pick<C> {
    /// A connection parked under the requested tenant.
    Warm(C),
    /// A connection parked under another tenant (or shared work).
    Stolen(C),
    /// Take an idle connection of the pool without waiting (none left by
    /// then: pick again).
    Idle,
    /// Go to the pool. Until the [`Waiting`] is dropped, returned
    /// connections go to the pool rather than the lot.
    Pool(Waiting<C>),
}

/// A checkout that is getting its connection from the pool; see
/// [`Pick::Pool`].
pub struct Waiting<C> {
    lot: Arc<Mutex<Parked<C>>>,
}

impl<C> std::fmt::Debug for Waiting<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

impl<C> Drop for Waiting<C> {
    fn drop(&mut self) {
        lock(&self.lot).waiting -= 1;
    }
}

/// Idle connections parked by the tenant they last served (see the module
/// docs). Cheap to clone: clones share the lot.
pub struct Lot<C> {
    inner: Arc<Mutex<Parked<C>>>,
}

impl<C> std::fmt::Debug for Lot<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lot = lock(&self.inner);
        f.debug_struct("Lot")
            .field("parked", &lot.order.len())
            .field("waiting", &lot.waiting)
            .finish()
    }
}

impl<C> Clone for Lot<C> {
    fn clone(&self) -> Self {
        Lot {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// `None` is the shared-only path.
type Key = Option<SchemaName>;

struct Parked<C> {
    /// Per key, oldest first; each with its sequence number.
    by_key: HashMap<Key, Vec<(u64, Instant, C)>>,
    /// Sequence number → key, oldest first: what step 3 steals.
    order: BTreeMap<u64, Key>,
    next: u64,
    waiting: usize,
}

fn lock<C>(m: &Mutex<Parked<C>>) -> MutexGuard<'_, Parked<C>> {
    // The lot's state is consistent between statements; a panic elsewhere
    // while holding it cannot leave it half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C> Default for Lot<C> {
    fn default() -> Self {
        Lot::new()
    }
}

impl<C> Lot<C> {
    /// An empty lot.
    pub fn new() -> Lot<C> {
        Lot {
            inner: Arc::new(Mutex::new(Parked {
                by_key: HashMap::new(),
                order: BTreeMap::new(),
                next: 0,
                waiting: 0,
            })),
        }
    }

    /// Picks the connection for a checkout for `tenant` (`None`: shared
    /// work). `pool_has_idle`: whether the pool itself holds an idle
    /// connection right now.
    pub fn pick(&self, tenant: Option<&SchemaName>, pool_has_idle: bool) -> Pick<C> {
        let mut lot = lock(&self.inner);
        let key = tenant.cloned();
        if let Some(list) = lot.by_key.get_mut(&key) {
            if let Some((seq, _, conn)) = list.pop() {
                if list.is_empty() {
                    lot.by_key.remove(&key);
                }
                lot.order.remove(&seq);
                return Pick::Warm(conn);
            }
        }
        if pool_has_idle {
            return Pick::Idle;
        }
        if let Some(conn) = lot.take_newest() {
            return Pick::Stolen(conn);
        }
        lot.waiting += 1;
        Pick::Pool(Waiting {
            lot: Arc::clone(&self.inner),
        })
    }

    /// Registers a checkout that goes to the pool whatever is parked (after
    /// parked connections kept failing their switch).
    pub fn wait(&self) -> Waiting<C> {
        lock(&self.inner).waiting += 1;
        Waiting {
            lot: Arc::clone(&self.inner),
        }
    }

    /// Parks `conn`, which last served `tenant`, unless a checkout is
    /// waiting on the pool: then hands it back for the pool.
    pub fn park(&self, tenant: Option<&SchemaName>, conn: C) -> Option<C> {
        let mut lot = lock(&self.inner);
        if lot.waiting > 0 {
            return Some(conn);
        }
        let seq = lot.next;
        lot.next += 1;
        let key = tenant.cloned();
        lot.order.insert(seq, key.clone());
        lot.by_key
            .entry(key)
            .or_default()
            .push((seq, Instant::now(), conn));
        None
    }

    /// Takes out every connection parked for `idle` or longer, for the pool
    /// (whose reaper then applies its idle timeout and maximum lifetime).
    pub fn release_idle(&self, idle: Duration) -> Vec<C> {
        let mut lot = lock(&self.inner);
        let mut out = Vec::new();
        while let Some((&seq, key)) = lot.order.first_key_value() {
            let key = key.clone();
            let parked_at = lot.by_key[&key][0].1;
            if parked_at.elapsed() < idle {
                // Oldest first: everything after was parked later. (The
                // oldest by sequence is also the oldest by time.)
                break;
            }
            debug_assert_eq!(lot.by_key[&key][0].0, seq);
            out.extend(lot.take_oldest());
        }
        out
    }

    /// How many connections are parked.
    pub fn parked(&self) -> usize {
        lock(&self.inner).order.len()
    }
}

impl<C> Parked<C> {
    fn take_newest(&mut self) -> Option<C> {
        let (_, key) = self.order.pop_last()?;
        let list = self.by_key.get_mut(&key)?;
        let (_, _, conn) = list.pop()?;
        if list.is_empty() {
            self.by_key.remove(&key);
        }
        Some(conn)
    }

    fn take_oldest(&mut self) -> Option<C> {
        let (_, key) = self.order.pop_first()?;
        let list = self.by_key.get_mut(&key)?;
        let (_, _, conn) = list.remove(0);
        if list.is_empty() {
            self.by_key.remove(&key);
        }
        Some(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> SchemaName {
        SchemaName::new(name).unwrap()
    }

    #[test]
    fn a_checkout_takes_its_own_tenants_parked_connection_first() {
        let lot = Lot::new();
        assert!(lot.park(Some(&t("a")), 1).is_none());
        assert!(lot.park(Some(&t("b")), 2).is_none());
        assert!(matches!(lot.pick(Some(&t("b")), true), Pick::Warm(2)));
        assert!(matches!(lot.pick(Some(&t("a")), true), Pick::Warm(1)));
    }

    #[test]
    fn a_checkout_with_nothing_idle_steals_the_latest_parked_connection() {
        let lot = Lot::new();
        lot.park(Some(&t("a")), 1);
        lot.park(None, 2);
        // The pool has an idle connection: take it, leave the lot warm.
        assert!(matches!(lot.pick(Some(&t("c")), true), Pick::Idle));
        assert!(matches!(lot.pick(Some(&t("c")), false), Pick::Stolen(2)));
        assert!(matches!(lot.pick(Some(&t("c")), false), Pick::Stolen(1)));
        assert_eq!(lot.parked(), 0);
    }

    #[test]
    fn while_a_checkout_waits_on_the_pool_returned_connections_go_to_it() {
        let lot = Lot::new();
        let waiting = lot.pick(Some(&t("a")), false);
        assert_eq!(lot.park(Some(&t("a")), 1), Some(1));
        drop(waiting);
        assert_eq!(lot.park(Some(&t("a")), 1), None);
    }

    #[test]
    fn the_log_retires_a_connection_at_its_limit_of_distinct_tenants() {
        let mut log = TenantLog::new();
        log.set_limit(Some(2));
        log.record(&t("a"));
        log.record(&t("a"));
        assert!(!log.retire_due());
        log.record(&t("b"));
        assert!(log.retire_due());
        assert_eq!(log.served(), 2);
    }

    #[test]
    fn release_idle_hands_back_only_connections_parked_long_enough() {
        let lot = Lot::new();
        lot.park(Some(&t("a")), 1);
        assert!(lot.release_idle(Duration::from_secs(60)).is_empty());
        assert_eq!(lot.release_idle(Duration::ZERO), vec![1]);
    }
}
