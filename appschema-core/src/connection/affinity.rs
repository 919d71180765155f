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
//! deadpool lets a checkout pick among idle connections, nor lets a
//! returned connection pick among waiting checkouts, so [`Lot`] sits on
//! top of the pool and does both. A returned connection goes, in this
//! order,
//!
//! 1. to a checkout *queued* in the lot (all connections busy): the oldest
//!    queued checkout for the tenant it last served, else the oldest queued
//!    checkout of all (see *Fairness*);
//! 2. back to the pool, if a checkout waits on the pool itself (for a
//!    connection being opened);
//! 3. otherwise it is *parked* under the tenant it served.
//!
//! A checkout for tenant T takes, in this order,
//!
//! 1. a connection parked under T (warm: statements planned for T's path),
//! 2. an idle connection of the pool itself (unless checkouts are queued:
//!    no one overtakes the queue),
//! 3. the connection parked last under another tenant (stolen), so a
//!    checkout never waits while any connection sits parked (the latest,
//!    not the oldest: stealing the oldest cycled through every backend and
//!    cost more than the re-planning it saved, see BENCHMARKS.md),
//! 4. a connection the pool opens, when it is below its maximum size (it
//!    then waits on the pool),
//! 5. otherwise it queues in the lot, keyed by its tenant, until a returned
//!    connection is handed to it, or a connection was closed (retired,
//!    broken) and its replacement is due in the pool: the oldest queued
//!    checkout is then sent to the pool for it.
//!
//! Under saturation (more requests than connections) every connection is
//! handed from one checkout to the next without ever sitting idle, so
//! step 1 of the return is where affinity acts: an earlier version handed
//! every return to the pool whenever anyone waited, which switched
//! affinity off exactly under load (94 % of checkouts still switched).
//!
//! **Fairness.** A queued checkout is *passed over* when a returned
//! connection goes to a younger queued checkout (one for the tenant the
//! connection served). Once the oldest queued checkout has been passed
//! over [`MAX_PASSED_OVER`] times, the next returned connection goes to
//! it, whatever tenant it served. The oldest has been passed over at least
//! as often as any younger one (whatever passed a younger one over passed
//! the oldest too), so no queued checkout is ever passed over more than
//! [`MAX_PASSED_OVER`] times: it waits at most for the checkouts queued
//! before it plus that many, never starves. Only the [`MATCH_WINDOW`]
//! oldest queued checkouts are searched for the tenant, which bounds the
//! work per return under any overload.
//!
//! Why this and not partitioning tenants over connections: a fixed
//! partition starves a popular tenant (it gets its partition's connections
//! only) and needs a pool that can pick a connection by index, which
//! neither r2d2 nor deadpool is. Per-tenant idle lists and a tenant-keyed
//! queue keep every connection usable by every tenant and need only
//! check-in and check-out hooks.
//!
//! Every connection, parked, handed over or not, gets the full switch
//! before it is handed out: the lot decides only *which* connection, never
//! whether the checkout runs.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
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

/// How many times a checkout queued in a [`Lot`] may be passed over by
/// younger checkouts for the tenant a returned connection served before
/// the next returned connection goes to it (see the module docs).
pub const MAX_PASSED_OVER: u32 = 8;

/// How many of the oldest queued checkouts a returned connection searches
/// for one of the tenant it served (see the module docs).
pub const MATCH_WINDOW: usize = 64;

/// How long a queued checkout sleeps before it looks at the pool again by
/// itself: a safety net for a connection that reached the pool without
/// passing through the lot. Every path the pools take tells the lot
/// (returns, closes), so in practice a queued checkout is woken by a
/// hand-over, never by this.
const RECHECK: Duration = Duration::from_millis(100);

/// What a pool holds right now, as a [`Lot`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolView {
    /// Idle connections in the pool itself (not parked in the lot).
    pub idle: usize,
    /// Whether the pool may open another connection (below its maximum
    /// size).
    pub room: bool,
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
    /// connections nobody queued in the lot wants go to the pool rather
    /// than being parked.
    Pool(Waiting<C>),
    /// Every connection is busy: wait in the lot's queue
    /// ([`Ticket::wait_until`], or [`Ticket::poll_handed`] when async).
    Queued(Ticket<C>),
}

/// What a checkout queued in the lot receives.
#[derive(Debug)]
pub enum Handed<C> {
    /// A returned connection. `warm`: it last served the checkout's
    /// tenant.
    Conn {
        /// The connection.
        conn: C,
        /// Whether it last served the queued checkout's tenant.
        warm: bool,
    },
    /// A connection was closed (or reached the pool some other way): take
    /// the pool's next connection, registered as waiting on the pool.
    Pool(Waiting<C>),
}

/// A checkout that is getting its connection from the pool; see
/// [`Pick::Pool`].
pub struct Waiting<C> {
    lot: Arc<Shared<C>>,
}

impl<C> std::fmt::Debug for Waiting<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

impl<C> Drop for Waiting<C> {
    fn drop(&mut self) {
        lock(&self.lot.state).pool_waiting -= 1;
    }
}

/// A checkout queued in the lot; see [`Pick::Queued`]. Dropped before it
/// received its connection (a timeout, a cancelled request), it leaves the
/// queue, and a connection handed to it meanwhile goes to the next one.
pub struct Ticket<C> {
    lot: Arc<Shared<C>>,
    id: u64,
    key: Key,
    slot: Arc<Slot<C>>,
    done: bool,
}

impl<C> std::fmt::Debug for Ticket<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Where a queued checkout receives its hand-over.
struct Slot<C> {
    state: Mutex<SlotState<C>>,
    ready: Condvar,
}

struct SlotState<C> {
    handed: Option<Handed<C>>,
    waker: Option<Waker>,
}

impl<C> Slot<C> {
    fn lock(&self) -> MutexGuard<'_, SlotState<C>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C> Ticket<C> {
    /// Blocks until a connection (or the pool) is handed to this checkout,
    /// or `deadline` passes (`None`).
    pub fn wait_until(&mut self, deadline: Instant) -> Option<Handed<C>> {
        loop {
            {
                let mut slot = self.slot.lock();
                if let Some(handed) = slot.handed.take() {
                    self.done = true;
                    return Some(handed);
                }
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                let wait = (deadline - now).min(RECHECK);
                let (mut slot, timeout) = self
                    .slot
                    .ready
                    .wait_timeout(slot, wait)
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(handed) = slot.handed.take() {
                    self.done = true;
                    return Some(handed);
                }
                if !timeout.timed_out() {
                    continue;
                }
            }
            // Not holding the slot: the lot may hand over to this ticket.
            self.recheck();
        }
    }

    /// Polls for the hand-over (the async pools' wait); wakes `cx` when it
    /// comes. Call [`Ticket::recheck`] now and then while pending (see
    /// [`Ticket::recheck_interval`]).
    pub fn poll_handed(&mut self, cx: &mut Context<'_>) -> Poll<Handed<C>> {
        let mut slot = self.slot.lock();
        match slot.handed.take() {
            Some(handed) => {
                self.done = true;
                Poll::Ready(handed)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Looks at the pool again: an idle connection there, or room for a
    /// new one, that no checkout is on its way to, sends the oldest queued
    /// checkout to the pool (see [`RECHECK`]'s safety net).
    pub fn recheck(&self) {
        let view = (self.lot.view)();
        let mut handed = Vec::new();
        lock(&self.lot.state).send_to_pool(&self.lot, view, &mut handed);
        wake_all(handed);
    }

    /// How often a pending async wait should call [`Ticket::recheck`].
    pub fn recheck_interval() -> Duration {
        RECHECK
    }
}

impl<C> Drop for Ticket<C> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut lot = lock(&self.lot.state);
            if lot.waiters.remove(&self.id).is_some() {
                return;
            }
        }
        // Handed something after all (after the deadline, or as the future
        // waiting for it was dropped): pass it on.
        let handed = self.slot.lock().handed.take();
        let lot = Lot {
            inner: Arc::clone(&self.lot),
        };
        match handed {
            Some(Handed::Conn { conn, .. }) => {
                // It goes on as a return would (under this checkout's
                // tenant: a hint for the match only).
                if let Some(conn) = lot.park(self.key.as_ref(), conn) {
                    drop(conn);
                }
            }
            Some(Handed::Pool(waiting)) => {
                drop(waiting);
                lot.vacated();
            }
            None => {}
        }
    }
}

/// Idle connections parked by the tenant they last served, and checkouts
/// queued by tenant (see the module docs). Cheap to clone: clones share the
/// lot.
pub struct Lot<C> {
    inner: Arc<Shared<C>>,
}

struct Shared<C> {
    state: Mutex<Parked<C>>,
    /// The pool's idle connections and room, read under the lot's lock.
    view: Box<dyn Fn() -> PoolView + Send + Sync>,
    max_passed_over: u32,
}

impl<C> std::fmt::Debug for Lot<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lot = lock(&self.inner.state);
        f.debug_struct("Lot")
            .field("parked", &lot.order.len())
            .field("queued", &lot.waiters.len())
            .field("pool_waiting", &lot.pool_waiting)
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

struct Queued<C> {
    key: Key,
    /// How often a returned connection went to a younger queued checkout.
    passed: u32,
    slot: Arc<Slot<C>>,
}

struct Parked<C> {
    /// Per key, oldest first; each with its sequence number.
    by_key: HashMap<Key, Vec<(u64, Instant, C)>>,
    /// Sequence number → key, oldest first: what step 3 steals.
    order: BTreeMap<u64, Key>,
    next: u64,
    /// Checkouts waiting on the pool itself.
    pool_waiting: usize,
    /// Checkouts queued in the lot, oldest (lowest ticket) first.
    waiters: BTreeMap<u64, Queued<C>>,
    next_ticket: u64,
}

fn lock<C>(m: &Mutex<Parked<C>>) -> MutexGuard<'_, Parked<C>> {
    // The lot's state is consistent between statements; a panic elsewhere
    // while holding it cannot leave it half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes the async checkouts handed something (after the lot's lock is
/// released).
fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl<C> Lot<C> {
    /// An empty lot on top of a pool; `view` tells what the pool holds
    /// (called with the lot's lock held: it must not call into the lot).
    pub fn new(view: impl Fn() -> PoolView + Send + Sync + 'static) -> Lot<C> {
        Lot::with_max_passed_over(view, MAX_PASSED_OVER)
    }

    /// [`Lot::new`] with another fairness bound than [`MAX_PASSED_OVER`]
    /// (0: strictly first come, first served).
    pub fn with_max_passed_over(
        view: impl Fn() -> PoolView + Send + Sync + 'static,
        max_passed_over: u32,
    ) -> Lot<C> {
        Lot {
            inner: Arc::new(Shared {
                state: Mutex::new(Parked {
                    by_key: HashMap::new(),
                    order: BTreeMap::new(),
                    next: 0,
                    pool_waiting: 0,
                    waiters: BTreeMap::new(),
                    next_ticket: 0,
                }),
                view: Box::new(view),
                max_passed_over,
            }),
        }
    }

    /// Picks the connection for a checkout for `tenant` (`None`: shared
    /// work). `allow_idle: false` skips the pool's idle connections (after
    /// taking one kept failing: another checkout was faster).
    pub fn pick(&self, tenant: Option<&SchemaName>, allow_idle: bool) -> Pick<C> {
        let key = tenant.cloned();
        let mut handed = Vec::new();
        let pick = {
            let mut lot = lock(&self.inner.state);
            if let Some(conn) = lot.take_parked(&key) {
                return Pick::Warm(conn);
            }
            let view = (self.inner.view)();
            // Something in the pool nobody is on the way to goes to the
            // oldest queued checkout first: no one overtakes the queue.
            lot.send_to_pool(&self.inner, view, &mut handed);
            if !lot.waiters.is_empty() {
                Pick::Queued(lot.enqueue(&self.inner, key))
            } else if allow_idle && view.idle > lot.pool_waiting {
                Pick::Idle
            } else if let Some(conn) = lot.take_newest() {
                Pick::Stolen(conn)
            } else if view.room || view.idle > 0 {
                lot.pool_waiting += 1;
                Pick::Pool(Waiting {
                    lot: Arc::clone(&self.inner),
                })
            } else {
                Pick::Queued(lot.enqueue(&self.inner, key))
            }
        };
        wake_all(handed);
        pick
    }

    /// Registers a checkout that goes to the pool whatever is parked (after
    /// parked connections kept failing their switch).
    pub fn wait(&self) -> Waiting<C> {
        lock(&self.inner.state).pool_waiting += 1;
        Waiting {
            lot: Arc::clone(&self.inner),
        }
    }

    /// Takes back `conn`, which last served `tenant`: hands it to a queued
    /// checkout, else returns it for the pool when a checkout waits on the
    /// pool, else parks it.
    pub fn park(&self, tenant: Option<&SchemaName>, conn: C) -> Option<C> {
        let key = tenant.cloned();
        let mut handed = Vec::new();
        let back = {
            let mut lot = lock(&self.inner.state);
            if let Some(id) = lot.choose(&key, self.inner.max_passed_over) {
                let warm = lot.waiters[&id].key == key;
                lot.hand(id, Handed::Conn { conn, warm }, &mut handed);
                None
            } else if lot.pool_waiting > 0 {
                Some(conn)
            } else {
                let seq = lot.next;
                lot.next += 1;
                lot.order.insert(seq, key.clone());
                lot.by_key
                    .entry(key)
                    .or_default()
                    .push((seq, Instant::now(), conn));
                None
            }
        };
        wake_all(handed);
        back
    }

    /// Tells the lot that a connection it would have taken back was closed
    /// or went straight to the pool (retired, broken, too old): the oldest
    /// queued checkout, if any, goes to the pool for it (or its
    /// replacement).
    pub fn vacated(&self) {
        let mut handed = Vec::new();
        {
            let mut lot = lock(&self.inner.state);
            if let Some((&id, _)) = lot.waiters.first_key_value() {
                lot.pool_waiting += 1;
                let waiting = Waiting {
                    lot: Arc::clone(&self.inner),
                };
                lot.hand(id, Handed::Pool(waiting), &mut handed);
            }
        }
        wake_all(handed);
    }

    /// Takes out every connection parked for `idle` or longer, for the pool
    /// (whose reaper then applies its idle timeout and maximum lifetime).
    pub fn release_idle(&self, idle: Duration) -> Vec<C> {
        let mut lot = lock(&self.inner.state);
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
        lock(&self.inner.state).order.len()
    }

    /// How many checkouts are queued for a returned connection.
    pub fn queued(&self) -> usize {
        lock(&self.inner.state).waiters.len()
    }
}

impl<C> Parked<C> {
    fn take_parked(&mut self, key: &Key) -> Option<C> {
        let list = self.by_key.get_mut(key)?;
        let (seq, _, conn) = list.pop()?;
        if list.is_empty() {
            self.by_key.remove(key);
        }
        self.order.remove(&seq);
        Some(conn)
    }

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

    fn enqueue(&mut self, shared: &Arc<Shared<C>>, key: Key) -> Ticket<C> {
        let id = self.next_ticket;
        self.next_ticket += 1;
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                handed: None,
                waker: None,
            }),
            ready: Condvar::new(),
        });
        self.waiters.insert(
            id,
            Queued {
                key: key.clone(),
                passed: 0,
                slot: Arc::clone(&slot),
            },
        );
        Ticket {
            lot: Arc::clone(shared),
            id,
            key,
            slot,
            done: false,
        }
    }

    /// The queued checkout a connection that served `served` goes to (see
    /// *Fairness* in the module docs); counts the ones it passes over.
    fn choose(&mut self, served: &Key, max_passed_over: u32) -> Option<u64> {
        let (&oldest, first) = self.waiters.first_key_value()?;
        if first.passed >= max_passed_over {
            return Some(oldest);
        }
        let same = self
            .waiters
            .iter()
            .take(MATCH_WINDOW)
            .find(|(_, w)| w.key == *served)
            .map(|(&id, _)| id);
        match same {
            Some(id) if id != oldest => {
                for (_, w) in self.waiters.range_mut(..id) {
                    w.passed += 1;
                }
                Some(id)
            }
            _ => Some(oldest),
        }
    }

    /// Gives `what` to queued checkout `id`; its waker goes to `wakers`.
    fn hand(&mut self, id: u64, what: Handed<C>, wakers: &mut Vec<Waker>) {
        // `id` was read from `waiters` under the same lock.
        let queued = self.waiters.remove(&id).expect("a queued checkout");
        let mut slot = queued.slot.lock();
        slot.handed = Some(what);
        wakers.extend(slot.waker.take());
        drop(slot);
        queued.slot.ready.notify_one();
    }

    /// Sends the oldest queued checkouts to the pool while it holds idle
    /// connections, or room for a new one, that no checkout waiting on the
    /// pool is on its way to.
    fn send_to_pool(&mut self, shared: &Arc<Shared<C>>, view: PoolView, wakers: &mut Vec<Waker>) {
        while let Some((&id, _)) = self.waiters.first_key_value() {
            let unclaimed = view.idle > self.pool_waiting || (view.room && self.pool_waiting == 0);
            if !unclaimed {
                break;
            }
            self.pool_waiting += 1;
            let waiting = Waiting {
                lot: Arc::clone(shared),
            };
            self.hand(id, Handed::Pool(waiting), wakers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> SchemaName {
        SchemaName::new(name).unwrap()
    }

    /// A lot over a pool that is full (no idle connection, no room).
    fn full<C>() -> Lot<C> {
        Lot::new(|| PoolView {
            idle: 0,
            room: false,
        })
    }

    fn conn_of<C: std::fmt::Debug>(ticket: &mut Ticket<C>) -> C {
        match ticket.wait_until(Instant::now()) {
            Some(Handed::Conn { conn, .. }) => conn,
            other => panic!("no connection handed: {other:?}"),
        }
    }

    #[test]
    fn a_checkout_takes_its_own_tenants_parked_connection_first() {
        let lot = full();
        assert!(lot.park(Some(&t("a")), 1).is_none());
        assert!(lot.park(Some(&t("b")), 2).is_none());
        assert!(matches!(lot.pick(Some(&t("b")), true), Pick::Warm(2)));
        assert!(matches!(lot.pick(Some(&t("a")), true), Pick::Warm(1)));
    }

    #[test]
    fn a_checkout_with_nothing_idle_steals_the_latest_parked_connection() {
        let idle = Arc::new(Mutex::new(1));
        let lot = Lot::new({
            let idle = Arc::clone(&idle);
            move || PoolView {
                idle: *idle.lock().unwrap(),
                room: false,
            }
        });
        lot.park(Some(&t("a")), 1);
        lot.park(None, 2);
        // The pool has an idle connection: take it, leave the lot warm.
        assert!(matches!(lot.pick(Some(&t("c")), true), Pick::Idle));
        *idle.lock().unwrap() = 0;
        assert!(matches!(lot.pick(Some(&t("c")), true), Pick::Stolen(2)));
        assert!(matches!(lot.pick(Some(&t("c")), true), Pick::Stolen(1)));
        assert_eq!(lot.parked(), 0);
    }

    #[test]
    fn while_a_checkout_waits_on_the_pool_returned_connections_go_to_it() {
        let lot = Lot::new(|| PoolView {
            idle: 0,
            room: true,
        });
        let waiting = lot.pick(Some(&t("a")), true);
        assert!(matches!(waiting, Pick::Pool(_)));
        assert_eq!(lot.park(Some(&t("a")), 1), Some(1));
        drop(waiting);
        assert_eq!(lot.park(Some(&t("a")), 1), None);
    }

    #[test]
    fn a_returned_connection_goes_to_the_oldest_queued_checkout_for_its_tenant() {
        let lot = full();
        let Pick::Queued(mut for_b) = lot.pick(Some(&t("b")), true) else {
            panic!("not queued")
        };
        let Pick::Queued(mut for_a) = lot.pick(Some(&t("a")), true) else {
            panic!("not queued")
        };
        let Pick::Queued(mut for_a2) = lot.pick(Some(&t("a")), true) else {
            panic!("not queued")
        };
        assert_eq!(lot.queued(), 3);
        assert!(lot.park(Some(&t("a")), 1).is_none());
        assert_eq!(conn_of(&mut for_a), 1);
        // No queued checkout for c: first come, first served.
        assert!(lot.park(Some(&t("c")), 2).is_none());
        assert_eq!(conn_of(&mut for_b), 2);
        assert!(lot.park(Some(&t("b")), 3).is_none());
        assert_eq!(conn_of(&mut for_a2), 3);
        assert_eq!((lot.queued(), lot.parked()), (0, 0));
    }

    #[test]
    fn a_queued_checkout_is_passed_over_at_most_the_bound() {
        let lot = Lot::with_max_passed_over(
            || PoolView {
                idle: 0,
                room: false,
            },
            3,
        );
        let Pick::Queued(mut for_b) = lot.pick(Some(&t("b")), true) else {
            panic!("not queued")
        };
        for round in 0..3 {
            let Pick::Queued(mut for_a) = lot.pick(Some(&t("a")), true) else {
                panic!("not queued")
            };
            assert!(lot.park(Some(&t("a")), round).is_none());
            assert_eq!(conn_of(&mut for_a), round, "round {round}");
        }
        let Pick::Queued(_for_a) = lot.pick(Some(&t("a")), true) else {
            panic!("not queued")
        };
        assert!(lot.park(Some(&t("a")), 9).is_none());
        assert_eq!(conn_of(&mut for_b), 9, "passed over more than 3 times");
    }

    #[test]
    fn a_connection_handed_to_a_checkout_that_gave_up_goes_to_the_next() {
        let lot = full();
        let Pick::Queued(gave_up) = lot.pick(Some(&t("a")), true) else {
            panic!("not queued")
        };
        let Pick::Queued(mut next) = lot.pick(Some(&t("b")), true) else {
            panic!("not queued")
        };
        assert!(lot.park(Some(&t("a")), 1).is_none());
        drop(gave_up);
        assert_eq!(conn_of(&mut next), 1);
        drop(next);
        // Nobody queued any more: a dropped queued checkout leaves nothing.
        assert_eq!(lot.queued(), 0);
    }

    #[test]
    fn a_closed_connection_sends_the_oldest_queued_checkout_to_the_pool() {
        let lot: Lot<u32> = full();
        let Pick::Queued(mut first) = lot.pick(Some(&t("a")), true) else {
            panic!("not queued")
        };
        let Pick::Queued(_second) = lot.pick(Some(&t("b")), true) else {
            panic!("not queued")
        };
        lot.vacated();
        assert!(matches!(
            first.wait_until(Instant::now()),
            Some(Handed::Pool(_))
        ));
        assert_eq!(lot.queued(), 1);
    }

    #[test]
    fn a_blocked_checkout_is_woken_by_the_hand_over() {
        let lot = full();
        let Pick::Queued(mut ticket) = lot.pick(Some(&t("a")), true) else {
            panic!("not queued")
        };
        let waiter = std::thread::spawn(move || {
            conn_of_by(&mut ticket, Instant::now() + Duration::from_secs(60))
        });
        lot.park(Some(&t("a")), 7);
        assert_eq!(waiter.join().unwrap(), 7);
    }

    fn conn_of_by<C: std::fmt::Debug>(ticket: &mut Ticket<C>, deadline: Instant) -> C {
        match ticket.wait_until(deadline) {
            Some(Handed::Conn { conn, .. }) => conn,
            other => panic!("no connection handed: {other:?}"),
        }
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
        let lot = full();
        lot.park(Some(&t("a")), 1);
        assert!(lot.release_idle(Duration::from_secs(60)).is_empty());
        assert_eq!(lot.release_idle(Duration::ZERO), vec![1]);
    }
}
